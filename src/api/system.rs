//! `/ping`, `/metrics` (Prometheus text), `/v2/info`, `/v2/leader`.

use super::AppState;
use crate::domain::TaskState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use std::fmt::Write;

pub async fn ping() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "pong")
}

pub async fn leader(State(st): State<AppState>) -> Json<Value> {
    Json(json!({ "leader": &*st.leader }))
}

/// `DELETE /v2/leader`: this master stops leading. With etcd another master may win
/// the next election; a single master starts its next term at once, reloading its
/// state from the store.
pub async fn abdicate(State(st): State<AppState>) -> Json<Value> {
    tracing::warn!("abdicating on request");
    st.leadership.abdicate();
    Json(json!({ "message": "Leadership abdicated" }))
}

pub async fn info(State(st): State<AppState>) -> Json<Value> {
    let port = st.leader.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()).unwrap_or(0);
    Json(json!({
        "name": "dromos",
        "version": env!("CARGO_PKG_VERSION"),
        "buildref": "",
        "elected": true,
        "leader": &*st.leader,
        "frameworkId": "dromos",
        "marathon_config": {
            "hostname": st.leader.rsplit_once(':').map(|(h, _)| h).unwrap_or(""),
            "local_port_min": crate::master::SERVICE_PORTS.0,
            "local_port_max": crate::master::SERVICE_PORTS.1,
            "zk_max_versions": crate::store::MAX_VERSIONS,
            "store": st.store_backend,
        },
        "zookeeper_config": {},
        "http_config": { "http_port": port },
    }))
}

/// Prometheus text exposition of the cluster state.
pub async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    let state = st.master.read().await;
    let mut out = String::new();
    let _ = writeln!(out, "# HELP dromos_info Build information.\n# TYPE dromos_info gauge");
    let _ = writeln!(out, "dromos_info{{version=\"{}\",store=\"{}\"}} 1", env!("CARGO_PKG_VERSION"), st.store_backend);
    let _ =
        writeln!(out, "# HELP dromos_apps Apps defined.\n# TYPE dromos_apps gauge\ndromos_apps {}", state.apps.len());
    let _ = writeln!(
        out,
        "# HELP dromos_deployments Deployments in progress.\n# TYPE dromos_deployments gauge\ndromos_deployments {}",
        state.deployments.len()
    );
    let _ = writeln!(
        out,
        "# HELP dromos_agents Agents known.\n# TYPE dromos_agents gauge\ndromos_agents {}",
        state.agents.len()
    );
    let unreachable = state.agents.values().filter(|a| a.mark == crate::domain::AgentMark::Unreachable).count();
    let _ = writeln!(
        out,
        "# HELP dromos_agents_unreachable Agents marked unreachable.\n# TYPE dromos_agents_unreachable gauge\ndromos_agents_unreachable {unreachable}"
    );
    let _ = writeln!(
        out,
        "# HELP dromos_agents_removal_held_back Agents past their ping budget that the removal rate limit holds back (a partition?).\n# TYPE dromos_agents_removal_held_back gauge\ndromos_agents_removal_held_back {}",
        st.master.held_back_agents()
    );
    let _ = writeln!(out, "# HELP dromos_tasks Tasks by state.\n# TYPE dromos_tasks gauge");
    for s in [TaskState::Staging, TaskState::Starting, TaskState::Running, TaskState::Killing, TaskState::Unreachable] {
        let n = state.tasks.values().filter(|t| t.state == s).count();
        let _ = writeln!(out, "dromos_tasks{{state=\"{}\"}} {n}", s.name());
    }
    let wanted: u64 = state.apps.values().map(|r| r.current.spec.instances as u64).sum();
    let _ = writeln!(out, "# HELP dromos_instances_wanted Sum of instances over all apps.\n# TYPE dromos_instances_wanted gauge\ndromos_instances_wanted {wanted}");
    let queued: u64 = st.master.queue().values().map(|q| q.count as u64).sum();
    let _ = writeln!(out, "# HELP dromos_launch_queue Instances waiting to be launched.\n# TYPE dromos_launch_queue gauge\ndromos_launch_queue {queued}");
    let uptime = st.master.started_at().seconds_until(crate::master::now());
    let _ = writeln!(out, "# HELP dromos_uptime_seconds Seconds since start.\n# TYPE dromos_uptime_seconds gauge\ndromos_uptime_seconds {uptime}");
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out)
}

/// Chronos's `/leader` (also under `/scheduler` and `/v1/scheduler`).
pub async fn chronos_leader(State(st): State<AppState>) -> Json<Value> {
    Json(json!({ "leader": st.leader.as_ref() }))
}
