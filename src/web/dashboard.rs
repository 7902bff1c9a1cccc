//! `/`: the cluster at a glance: agents, resources used and total, running tasks,
//! deployments, apps by status, running deployments, failing health checks, failing
//! jobs.

use super::session::{ui, Session};
use super::{Page, Ui, Usage};
use crate::api::jobs::last_state;
use crate::api::AppState;
use crate::domain::AgentMark;
use crate::master::summary::{app_summaries, cluster_total, AppStatus};
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
    /// Running deployments: (apps, step, of steps).
    running: Vec<(Vec<String>, usize, usize)>,
    /// Apps with tasks failing health checks: (app, failing tasks).
    unhealthy: Vec<(String, usize)>,
    /// Jobs whose last run failed.
    failing_jobs: Vec<String>,
}

/// Rows of a dashboard list shown at most (the full lists are a click away).
const SHOWN: usize = 10;

pub async fn page(State(st): State<AppState>, session: Option<Extension<Session>>) -> impl IntoResponse {
    let queue = st.master.queue();
    let now = crate::master::now();
    let state = st.master.read().await;
    let (summaries, used) = app_summaries(&state, &queue, now);
    let total = cluster_total(&state);
    let tasks_running = state.task_counts.values().map(|c| c.running).sum();
    let mut by_status: BTreeMap<AppStatus, usize> = BTreeMap::new();
    let mut unhealthy = vec![];
    for (rec, s) in summaries {
        *by_status.entry(s.status).or_default() += 1;
        if s.unhealthy > 0 && unhealthy.len() < SHOWN {
            unhealthy.push((rec.current.spec.id.to_string(), s.unhealthy));
        }
    }
    let running = state
        .deployments
        .values()
        .take(SHOWN)
        .map(|d| {
            let apps = d.affected_apps.iter().map(|a| a.to_string()).collect();
            (apps, (state.deployment_progress(d) + 1).min(d.steps.len()), d.steps.len())
        })
        .collect();
    let failing_jobs = state
        .jobs
        .values()
        .filter(|j| last_state(j) == "failure")
        .take(SHOWN)
        .map(|j| j.spec.name.to_string())
        .collect();
    Page(Dashboard {
        ui: ui("dashboard", session.as_deref(), &st),
        agents: state.agents.len(),
        unreachable: state.agents.values().filter(|a| a.mark == AgentMark::Unreachable).count(),
        cpus: Usage::new(used.cpus, total.cpus, 1),
        mem: Usage::new(used.mem, total.mem, 0),
        tasks_running,
        deployments: state.deployments.len(),
        by_status: by_status.into_iter().map(|(s, n)| (s.name(), n)).collect(),
        running,
        unhealthy,
        failing_jobs,
    })
}
