//! `/v2/tasks`: every task (JSON or Marathon's text/plain list) and bulk kills.

use super::apps::kill_tasks;
use super::dto::from_value;
use super::dto::task::{task_json, tasks_text};
use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, Params};
use super::{wants_text, AppState};
use crate::domain::{TaskId, TaskState};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

pub async fn list(State(st): State<AppState>, params: Params, headers: HeaderMap) -> ApiResult<Response> {
    let mut wanted = Vec::new();
    for s in params.all("status").chain(params.all("status[]")) {
        match s {
            "running" => wanted.push(TaskState::Running),
            "staging" => wanted.push(TaskState::Staging),
            other => return Err(ApiError::BadRequest(format!("status must be running or staging, not '{other}'"))),
        }
    }
    let state = st.master.read().await;
    if wants_text(&headers) {
        let text =
            tasks_text(state.apps.values().map(|r| (&r.current.spec, state.tasks_of(&r.current.spec.id).collect())));
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response());
    }
    let tasks: Vec<Value> = state
        .tasks
        .values()
        .filter(|t| t.is_active())
        .filter(|t| {
            wanted.is_empty()
                || wanted.contains(&t.state)
                || (wanted.contains(&TaskState::Staging) && t.state == TaskState::Starting)
        })
        .map(|t| {
            let sp = state.apps.get(&t.app_id).map(|r| r.current.spec.service_ports()).unwrap_or_default();
            task_json(t, &sp, state.health.get(&t.id))
        })
        .collect();
    Ok(Json(json!({ "tasks": tasks })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteBody {
    ids: Vec<String>,
}

pub async fn delete_many(State(st): State<AppState>, params: Params, JsonBody(body): JsonBody) -> ApiResult<Response> {
    let body: DeleteBody = from_value(body)?;
    let mut ids = Vec::new();
    for (i, raw) in body.ids.iter().enumerate() {
        let id: TaskId =
            raw.parse().map_err(|_| ApiError::BadRequest(format!("/ids/{i}: '{raw}' is not a valid task id")))?;
        ids.push(id);
    }
    kill_tasks(&st, ids, &params, false).await
}
