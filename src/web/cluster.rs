//! The cluster's moving parts: `/deployments` (steps, progress, what each current
//! action waits for; roll back or stop), `/agents` (resources as bars, attributes,
//! state, tasks) and `/events` (the latest events from the bus's replay ring, then a
//! live tail by the page's script, filtered by type).

use super::session::{ui, CsrfForm, Session};
use super::{Message, Page, Pages, Ui, Usage};
use crate::api::AppState;
use crate::domain::resources::ports_text;
use crate::domain::AgentMark;
use crate::master::summary::agent_usage;
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use std::collections::BTreeMap;

type MaybeSession = Option<Extension<Session>>;

// ---------------------------------------------------------------- deployments

struct StepView {
    actions: Vec<String>,
    done: bool,
    current: bool,
}

struct DeploymentView {
    id: String,
    version: String,
    apps: Vec<String>,
    /// The step it is at (from 1), and how many are done.
    current: usize,
    done: usize,
    total: usize,
    /// What each action of the current step waits for.
    waiting: Vec<String>,
    steps: Vec<StepView>,
    reason: Option<String>,
}

#[derive(Template)]
#[template(path = "deployments.html")]
struct Deployments {
    ui: Ui,
    deployments: Vec<DeploymentView>,
    pages: Pages,
}

/// The `page` query parameter (from 0).
fn page_of(params: &crate::api::extract::Params) -> usize {
    params.get("page").and_then(|p| p.parse().ok()).unwrap_or(0)
}

pub async fn deployments(
    State(st): State<AppState>,
    session: MaybeSession,
    params: crate::api::extract::Params,
) -> impl IntoResponse {
    let state = st.master.read().await;
    let (rows, pages) = Pages::of(state.deployments.len(), page_of(&params), |p| format!("/deployments?page={p}"));
    let deployments = state
        .deployments
        .values()
        .skip(rows.start)
        .take(rows.len())
        .map(|d| {
            let done = state.deployment_progress(d);
            DeploymentView {
                id: d.id.clone(),
                version: d.version.to_string(),
                apps: d.affected_apps.iter().map(|a| a.to_string()).collect(),
                current: (done + 1).min(d.steps.len()),
                done: done.min(d.steps.len()),
                total: d.steps.len(),
                waiting: state.explain_step(d, done),
                steps: d
                    .steps
                    .iter()
                    .enumerate()
                    .map(|(i, s)| StepView {
                        actions: s.iter().map(|a| format!("{} {}", a.action.name(), a.app)).collect(),
                        done: i < done,
                        current: i == done,
                    })
                    .collect(),
                reason: d.reason.clone(),
            }
        })
        .collect();
    Page(Deployments { ui: ui("deployments", session.as_deref(), &st), deployments, pages })
}

/// `POST /deployments/{id}/{rollback,stop}`.
pub async fn deployment_action(
    State(st): State<AppState>,
    session: MaybeSession,
    Path((id, action)): Path<(String, String)>,
    CsrfForm(_): CsrfForm<BTreeMap<String, String>>,
) -> Response {
    let force = match action.as_str() {
        "rollback" => false,
        "stop" => true,
        _ => {
            return Message::page(
                StatusCode::NOT_FOUND,
                ui("deployments", session.as_deref(), &st),
                "Not found",
                "No such action.",
            )
        }
    };
    match st.master.cancel_deployment(id, force).await {
        Ok(_) => {
            st.master.wake();
            Redirect::to("/deployments").into_response()
        }
        Err(e) => {
            let e = crate::api::error::ApiError::from(e);
            let (message, _) = e.explain();
            Message::page(
                e.status(),
                ui("deployments", session.as_deref(), &st),
                "The deployment could not be changed",
                message,
            )
        }
    }
}

// ---------------------------------------------------------------- agents

struct AgentView {
    id: String,
    hostname: String,
    reachable: bool,
    since: String,
    cpus: Usage,
    mem: Usage,
    disk: Usage,
    ports: String,
    attributes: Vec<(String, String)>,
    tasks: usize,
}

#[derive(Template)]
#[template(path = "agents.html")]
struct Agents {
    ui: Ui,
    agents: Vec<AgentView>,
    unreachable: usize,
    pages: Pages,
}

pub async fn agents(
    State(st): State<AppState>,
    session: MaybeSession,
    params: crate::api::extract::Params,
) -> impl IntoResponse {
    let state = st.master.read().await;
    let (rows, pages) = Pages::of(state.agents.len(), page_of(&params), |p| format!("/agents?page={p}"));
    let unreachable = state.agents.values().filter(|a| a.mark == AgentMark::Unreachable).count();
    let shown: Vec<_> = state.agents.values().skip(rows.start).take(rows.len()).collect();
    let usage = agent_usage(&state, &shown.iter().map(|a| &a.info.id).collect::<Vec<_>>());
    let agents = shown
        .into_iter()
        .map(|a| {
            let total = a.info.resources.total();
            let (used, tasks) = usage.get(&a.info.id).cloned().unwrap_or_default();
            let ports: Vec<_> = a.info.resources.pools.values().flat_map(|p| p.ports.iter().cloned()).collect();
            AgentView {
                id: a.info.id.to_string(),
                hostname: a.info.hostname.clone(),
                reachable: a.mark == AgentMark::Active,
                since: a.unreachable_since.unwrap_or(a.registered_at).to_string(),
                cpus: Usage::new(used.cpus, total.cpus, 1),
                mem: Usage::new(used.mem, total.mem, 0),
                disk: Usage::new(used.disk, total.disk, 0),
                ports: ports_text(&ports),
                attributes: a.info.attributes.iter().map(|(k, v)| (k.clone(), v.to_string())).collect(),
                tasks,
            }
        })
        .collect();
    Page(Agents { ui: ui("agents", session.as_deref(), &st), agents, unreachable, pages })
}

// ---------------------------------------------------------------- events

/// Events shown when the page opens.
const RECENT: usize = 100;
/// Characters of an event's JSON shown on the page (an `api_post_event` carries a
/// whole app definition); the full event is in `/v2/events`.
const SHOWN_DATA: usize = 600;

struct EventView {
    event_type: &'static str,
    data: String,
}

#[derive(Template)]
#[template(path = "events.html")]
struct Events {
    ui: Ui,
    filter: String,
    types: Vec<&'static str>,
    events: Vec<EventView>,
}

/// The event types the filter offers (Marathon's, and the job runs').
const TYPES: &[&str] = &[
    "api_post_event",
    "status_update_event",
    "instance_changed_event",
    "health_status_changed_event",
    "instance_health_changed_event",
    "failed_health_check_event",
    "unhealthy_instance_kill_event",
    "deployment_info",
    "deployment_success",
    "deployment_failed",
    "deployment_step_success",
    "deployment_step_failure",
    "app_terminated_event",
    "load_balancer_rejected_app_event",
    "job_run_started",
    "job_run_succeeded",
    "job_run_failed",
    "job_run_retried",
    "job_run_missed",
    "job_run_skipped",
];

pub async fn events(
    State(st): State<AppState>,
    session: MaybeSession,
    params: crate::api::extract::Params,
) -> impl IntoResponse {
    let filter = params.get("type").filter(|t| TYPES.contains(t)).unwrap_or("").to_string();
    let events = st
        .master
        .events()
        .recent(crate::events::DEFAULT_REPLAY)
        .iter()
        .rev()
        .filter(|f| filter.is_empty() || f.event_type == filter)
        .take(RECENT)
        .map(|f| {
            let data = f.data();
            let shown = crate::domain::clip(data, SHOWN_DATA);
            let data = if shown.len() < data.len() { format!("{shown}…") } else { data.to_string() };
            EventView { event_type: f.event_type, data }
        })
        .collect();
    Page(Events { ui: ui("events", session.as_deref(), &st), filter, types: TYPES.to_vec(), events })
}
