//! `GET /v2/deployments`: the running deployments, with their steps and the step each
//! one is at (Marathon's shape: `steps`, `currentActions`, `currentStep`, `totalSteps`);
//! `DELETE /v2/deployments/{id}`: stop one, or roll it back.

use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::domain::deployment::ActionKind;
use crate::domain::Deployment;
use crate::master::state::State as MasterState;
use crate::master::{plans, MasterError};
use crate::scheduler::reconcile::{action_done, Context};
use crate::store::Change;
use axum::extract::Path;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
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

/// `DELETE /v2/deployments/{id}`: with `force=true`, just stop it (202; the app keeps
/// whatever mix of tasks it has); otherwise roll it back (200 with the new deployment):
/// a created app is removed, a scale or restart goes back to the app's previous version.
/// A deletion cannot be rolled back (its versions are gone): 409, use `force=true`.
pub async fn delete(
    State(st): State<AppState>,
    Path(id): Path<String>,
    params: crate::api::extract::Params,
) -> ApiResult<Response> {
    let force = params.flag("force", false)?;
    let dep = st.master.read().await.deployments.get(&id).cloned();
    let Some(dep) = dep else {
        return Err(ApiError::NotFound(format!("DeploymentPlan {id} does not exist")));
    };
    if force {
        st.master
            .write(move |state, _| {
                let stop = state.deployments.contains_key(&id).then_some(Change::DeleteDeployment(id));
                Ok((stop.into_iter().collect(), ()))
            })
            .await?;
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    let Some(action) = dep.steps.iter().flatten().next().cloned() else {
        return Err(ApiError::Conflict("the deployment has no actions to roll back".into()));
    };
    let app = action.app.clone();
    let rollback = match action.action {
        ActionKind::StartApplication => {
            st.master.write(move |state, now| plans::delete_app(state, now, app, true)).await?
        }
        ActionKind::StopApplication => {
            return Err(ApiError::Conflict(
                "a deleted app cannot be brought back by a rollback; stop the deployment with force=true".into(),
            ))
        }
        ActionKind::ScaleApplication | ActionKind::RestartApplication => {
            let (current, previous) = {
                let state = st.master.read().await;
                let rec = state.apps.get(&app).ok_or_else(|| MasterError::AppNotFound(app.clone()))?;
                let at = rec.versions.iter().position(|v| *v == dep.version);
                let previous = at.and_then(|i| i.checked_sub(1)).and_then(|i| rec.versions.get(i)).copied();
                (rec.current.version, previous)
            };
            let Some(previous) = previous else {
                return Err(ApiError::Conflict(format!("no version of {app} before {} to roll back to", dep.version)));
            };
            let old = st.master.store().app_version(&app, previous).await.map_err(MasterError::from)?;
            let old = old.ok_or_else(|| MasterError::VersionNotFound(app.clone(), previous.to_string()))?;
            st.master.write(move |state, now| plans::roll_back_app(state, now, old, current)).await?
        }
    };
    st.master.wake();
    Ok(super::apps::deployment_result(StatusCode::OK, &rollback))
}
