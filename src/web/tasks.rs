//! `/apps/{id}/-/tasks/{taskId}`: one task: where and how it runs, its state history (its
//! status updates among the events the bus still keeps), its health checks, and its
//! stdout or stderr (the last 64 KiB, read from the task's agent as the API's log
//! endpoint does). The page's script follows new output through that endpoint; without
//! JavaScript a reload shows the latest.

use super::session::{ui, Session};
use super::{Message, Page, Ui};
use crate::agent::protocol::LogStream;
use crate::api::extract::Params;
use crate::api::AppState;
use crate::domain::{PathId, TaskId};
use askama::Template;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// How much of the log the page shows at first.
const TAIL: i64 = 64 * 1024;

/// One status update of the task: (when, state, message).
type HistoryRow = (String, String, String);

/// The task's status updates still in the event bus's replay ring, oldest first.
fn history(bus: &crate::events::Bus, task: &TaskId) -> Vec<HistoryRow> {
    let needle = format!("\"taskId\":\"{task}\"");
    bus.recent(crate::events::DEFAULT_REPLAY)
        .iter()
        .filter(|f| f.event_type == "status_update_event" && f.data().contains(&needle))
        .filter_map(|f| {
            let v: serde_json::Value = serde_json::from_str(f.data()).ok()?;
            let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            Some((text("timestamp"), text("taskStatus"), text("message")))
        })
        .collect()
}

struct CheckRow {
    index: u16,
    alive: bool,
    failures: u32,
    last_success: String,
    last_failure: String,
    cause: String,
}

#[derive(Template)]
#[template(path = "task.html")]
struct TaskPage {
    ui: Ui,
    app: String,
    id: String,
    /// None when the task has ended and left the master's state (its log stays a day).
    state: Option<&'static str>,
    address: String,
    agent: String,
    version: String,
    staged_at: String,
    started_at: String,
    message: String,
    checks: Vec<CheckRow>,
    history: Vec<HistoryRow>,
    stream: &'static str,
    log: String,
    /// Where the log was cut (the page follows it from `log_end`).
    log_start: u64,
    log_end: u64,
    log_error: Option<String>,
    logs_url: String,
}

pub async fn page(st: &AppState, session: Option<&Session>, app: PathId, task: &str, params: &Params) -> Response {
    let not_found = || {
        Message::page(StatusCode::NOT_FOUND, ui("apps", session, st), "Not found", format!("{app} has no task {task}."))
    };
    let Ok(task_id) = task.parse::<TaskId>() else { return not_found() };
    if !task_id.belongs_to(&app) {
        return not_found();
    }
    let (stream, stream_name) = match params.get("stream") {
        Some("stderr") => (LogStream::Stderr, "stderr"),
        _ => (LogStream::Stdout, "stdout"),
    };
    let mut page = TaskPage {
        ui: ui("apps", session, st),
        app: app.to_string(),
        id: task_id.to_string(),
        state: None,
        address: String::new(),
        agent: String::new(),
        version: String::new(),
        staged_at: String::new(),
        started_at: String::new(),
        message: String::new(),
        checks: vec![],
        history: history(st.master.events(), &task_id),
        stream: stream_name,
        log: String::new(),
        log_start: 0,
        log_end: 0,
        log_error: None,
        logs_url: format!("/v2/apps{app}/tasks/{task_id}/logs?stream={stream_name}"),
    };
    {
        let state = st.master.read().await;
        if let Some(t) = state.tasks.get(&task_id) {
            let ports: Vec<String> = t.ports.iter().map(u16::to_string).collect();
            page.state = Some(t.state.name());
            page.address = if ports.is_empty() { t.host.clone() } else { format!("{}:{}", t.host, ports.join(",")) };
            page.agent = t.agent_id.to_string();
            page.version = t.version.to_string();
            page.staged_at = t.staged_at.to_string();
            page.started_at = t.started_at.map(|s| s.to_string()).unwrap_or_default();
            page.message = t.message.clone().unwrap_or_default();
            let show = |ts: Option<crate::domain::Timestamp>| ts.map(|t| t.to_string()).unwrap_or_default();
            for (index, h) in state.health.get(&task_id).into_iter().flatten() {
                page.checks.push(CheckRow {
                    index: *index,
                    alive: h.alive,
                    failures: h.consecutive_failures,
                    last_success: show(h.last_success),
                    last_failure: show(h.last_failure),
                    cause: h.last_failure_cause.clone().unwrap_or_default(),
                });
            }
        } else if !state.apps.contains_key(&app) {
            return not_found();
        }
    }
    match st.master.read_log(&app, &task_id, stream, -TAIL, TAIL as u64).await {
        Ok(chunk) => {
            page.log = String::from_utf8_lossy(&chunk.data).into_owned();
            page.log_start = chunk.offset;
            page.log_end = chunk.offset + chunk.data.len() as u64;
        }
        Err(e) => page.log_error = Some(e.to_string()),
    }
    Page(page).into_response()
}
