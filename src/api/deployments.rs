//! `GET /v2/deployments`: the running deployments, with their steps and the step each
//! one is at (Marathon's shape: `steps`, `currentActions`, `currentStep`, `totalSteps`).

use super::AppState;
use crate::domain::Deployment;
use crate::master::state::State as MasterState;
use crate::scheduler::reconcile::{action_done, Context};
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashMap;

/// The index of the first step not carried out yet (all steps: `steps.len()`).
fn current_step(d: &Deployment, state: &MasterState) -> usize {
    let agents = HashMap::new();
    let ctx = Context { agents: &agents, health: &state.health };
    d.steps
        .iter()
        .position(|step| {
            !step.iter().all(|a| {
                let app = state.apps.get(&a.app).map(|r| &r.current);
                let tasks: Vec<&crate::domain::Task> = state.tasks_of(&a.app).collect();
                action_done(a.action, app, &tasks, ctx)
            })
        })
        .unwrap_or(d.steps.len())
}

pub fn deployment_json(d: &Deployment, state: &MasterState) -> Value {
    let action = |a: &crate::domain::DeploymentAction| json!({"action": a.action, "app": a.app});
    let current = current_step(d, state);
    let current_actions: Vec<Value> = d
        .steps
        .get(current.min(d.steps.len().saturating_sub(1)))
        .into_iter()
        .flatten()
        .map(|a| {
            let mut v = action(a);
            v["readinessCheckResults"] = json!([]);
            v
        })
        .collect();
    json!({
        "id": d.id,
        "version": d.version,
        "affectedApps": d.affected_apps,
        "affectedPods": [],
        "steps": d.steps.iter().map(|s| json!({"actions": s.iter().map(action).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        "currentActions": current_actions,
        "currentStep": (current + 1).min(d.steps.len()),
        "totalSteps": d.steps.len(),
    })
}

pub async fn list(State(st): State<AppState>) -> Json<Value> {
    let state = st.master.read().await;
    Json(Value::Array(state.deployments.values().map(|d| deployment_json(d, &state)).collect()))
}
