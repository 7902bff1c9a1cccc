//! `/`: the cluster at a glance: agents, resources used and total, running tasks,
//! deployments, apps by status.

use super::session::{ui, Session};
use super::{Page, Ui, Usage};
use crate::api::AppState;
use crate::domain::{AgentMark, TaskState};
use crate::master::summary::{app_summary, cluster_resources, AppStatus};
use askama::Template;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::Extension;
use std::collections::BTreeMap;

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Dashboard {
    ui: Ui,
    agents: usize,
    unreachable: usize,
    cpus: Usage,
    mem: Usage,
    tasks_running: usize,
    deployments: usize,
    /// Status name and how many apps have it, most pressing first.
    by_status: Vec<(&'static str, usize)>,
}

pub async fn page(State(st): State<AppState>, session: Option<Extension<Session>>) -> impl IntoResponse {
    let queue = st.master.queue();
    let now = crate::master::now();
    let state = st.master.read().await;
    let (used, total) = cluster_resources(&state);
    let tasks_running = state.tasks.values().filter(|t| t.state == TaskState::Running).count();
    let mut by_status: BTreeMap<AppStatus, usize> = BTreeMap::new();
    for rec in state.apps.values() {
        let s = app_summary(rec, &state, queue.get(&rec.current.spec.id), now);
        *by_status.entry(s.status).or_default() += 1;
    }
    Page(Dashboard {
        ui: ui("dashboard", session.as_deref(), &st),
        agents: state.agents.len(),
        unreachable: state.agents.values().filter(|a| a.mark == AgentMark::Unreachable).count(),
        cpus: Usage::new(used.cpus, total.cpus, 1),
        mem: Usage::new(used.mem, total.mem, 0),
        tasks_running,
        deployments: state.deployments.len(),
        by_status: by_status.into_iter().map(|(s, n)| (s.name(), n)).collect(),
    })
}
