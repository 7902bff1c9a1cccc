//! `GET /v2/deployments`: the running deployments, with their steps and the step each
//! one is at (Marathon's shape: `steps`, `currentActions`, `currentStep`, `totalSteps`);
//! `DELETE /v2/deployments/{id}`: stop one, or roll it back.

use super::error::ApiResult;
use super::AppState;
use crate::domain::Deployment;
use crate::master::state::State as MasterState;
use axum::extract::Path;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

fn action_json(a: &crate::domain::DeploymentAction) -> Value {
    json!({"action": a.action, "app": a.app})
}

/// A deployment's steps: `[{"actions": [{"action", "app"}]}]`.
pub fn steps_json(d: &Deployment) -> Vec<Value> {
    d.steps.iter().map(|s| json!({"actions": s.iter().map(action_json).collect::<Vec<_>>()})).collect()
}

pub fn deployment_json(d: &Deployment, state: &MasterState) -> Value {
    let current = state.deployment_progress(d);
    let current_actions: Vec<Value> = d
        .steps
        .get(current.min(d.steps.len().saturating_sub(1)))
        .into_iter()
        .flatten()
        .map(|a| {
            let mut v = action_json(a);
            v["readinessCheckResults"] = json!(super::dto::app::readiness_results(state, &a.app));
            v["reason"] = json!(state.explain(a));
            v
        })
        .collect();
    let mut out = json!({
        "id": d.id,
        "version": d.version,
        "affectedApps": d.affected_apps,
        "affectedPods": [],
        "steps": steps_json(d),
        "currentActions": current_actions,
        "currentStep": (current + 1).min(d.steps.len()),
        "totalSteps": d.steps.len(),
        "lastProgressAt": d.progress_since(),
    });
    if let Some(dl) = d.deadline {
        out["progressDeadlineSeconds"] = json!(dl.seconds);
        out["rollbackOnFailure"] = json!(dl.rollback && d.reason.is_none());
    }
    if let Some(r) = &d.reason {
        out["reason"] = json!(r);
    }
    out
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
    Ok(match st.master.cancel_deployment(id, force).await? {
        None => StatusCode::ACCEPTED.into_response(),
        Some(rollback) => super::apps::deployment_result(StatusCode::OK, &rollback),
    })
}
