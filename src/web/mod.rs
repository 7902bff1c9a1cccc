//! The web UI: server-rendered pages (askama), for what an operator does by clicking.
//! Templates live in `web/templates/` (found through `askama.toml`), the one stylesheet
//! in `web/static/`, compiled into the binary. Every value is HTML-escaped by askama.
//!
//! Pages read the master's state under its read lock, as the API does, and share its
//! vocabulary through [`crate::master::summary`].
//!
//! - `/`: the dashboard (agents, resources, tasks, deployments, apps by status).
//! - `/apps`: the apps, filtered by id and status, sorted by id, paginated.
//! - `/apps/{id}`: one app: status, why it waits, its last task failure, tasks with
//!   their addresses and health, versions, and its definition.

use crate::api::AppState;
use crate::master::summary::{app_summary, cluster_resources, task_health, AppStatus};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::BTreeMap;

/// The UI's routes (merged into the API's router, behind the same middleware).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(dashboard))
        .route("/apps", get(apps))
        .route("/apps/{*id}", get(app))
        .route("/static/dromos.css", get(stylesheet))
}

/// A rendered page: 200 with the HTML, or 500 if a template failed (it never should:
/// templates are checked when dromos is compiled).
struct Page<T>(T);

impl<T: Template> IntoResponse for Page<T> {
    fn into_response(self) -> Response {
        match self.0.render() {
            Ok(html) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
            Err(e) => {
                (StatusCode::INTERNAL_SERVER_ERROR, format!("the page could not be rendered: {e}")).into_response()
            }
        }
    }
}

async fn stylesheet() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")],
        include_str!("../../web/static/dromos.css"),
    )
}

/// Used and total of one resource, formatted for display.
struct Usage {
    used: String,
    total: String,
    percent: String,
}

impl Usage {
    fn new(used: f64, total: f64, decimals: usize) -> Usage {
        let percent = if total > 0.0 { used / total * 100.0 } else { 0.0 };
        Usage {
            used: format!("{used:.decimals$}"),
            total: format!("{total:.decimals$}"),
            percent: format!("{percent:.0}"),
        }
    }
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Dashboard {
    nav: &'static str,
    agents: usize,
    unreachable: usize,
    cpus: Usage,
    mem: Usage,
    tasks_running: usize,
    deployments: usize,
    /// Status name and how many apps have it, most pressing first.
    by_status: Vec<(&'static str, usize)>,
}

async fn dashboard(State(st): State<AppState>) -> impl IntoResponse {
    let queue = st.master.queue();
    let now = crate::master::now();
    let state = st.master.read().await;
    let (used, total) = cluster_resources(&state);
    let tasks_running = state.tasks.values().filter(|t| t.state == crate::domain::TaskState::Running).count();
    let mut by_status: BTreeMap<AppStatus, usize> = BTreeMap::new();
    for rec in state.apps.values() {
        let s = app_summary(rec, &state, queue.get(&rec.current.spec.id), now);
        *by_status.entry(s.status).or_default() += 1;
    }
    Page(Dashboard {
        nav: "dashboard",
        agents: state.agents.len(),
        unreachable: state.agents.values().filter(|a| a.mark == crate::domain::AgentMark::Unreachable).count(),
        cpus: Usage::new(used.cpus, total.cpus, 1),
        mem: Usage::new(used.mem, total.mem, 0),
        tasks_running,
        deployments: state.deployments.len(),
        by_status: by_status.into_iter().map(|(s, n)| (s.name(), n)).collect(),
    })
}

/// Apps per page of the list.
const PAGE_SIZE: usize = 100;

#[derive(Debug, Default, serde::Deserialize)]
struct AppsQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    page: usize,
}

struct AppRow {
    id: String,
    status: &'static str,
    instances: u32,
    running: usize,
    healthy: usize,
    cpus: f64,
    mem: f64,
}

#[derive(Template)]
#[template(path = "apps.html")]
struct Apps {
    nav: &'static str,
    query: String,
    status: String,
    statuses: Vec<&'static str>,
    rows: Vec<AppRow>,
    total: usize,
    first: usize,
    last: usize,
    prev: Option<String>,
    next: Option<String>,
}

const STATUSES: [AppStatus; 6] = [
    AppStatus::Running,
    AppStatus::Deploying,
    AppStatus::Waiting,
    AppStatus::Delayed,
    AppStatus::Suspended,
    AppStatus::Unhealthy,
];

async fn apps(State(st): State<AppState>, Query(q): Query<AppsQuery>) -> impl IntoResponse {
    let queue = st.master.queue();
    let now = crate::master::now();
    let state = st.master.read().await;
    let matching: Vec<AppRow> = state
        .apps
        .values()
        .filter_map(|rec| {
            let spec = &rec.current.spec;
            let id = spec.id.to_string();
            if !id.contains(q.q.as_str()) {
                return None;
            }
            let s = app_summary(rec, &state, queue.get(&spec.id), now);
            (q.status.is_empty() || q.status == s.status.name()).then(|| AppRow {
                id,
                status: s.status.name(),
                instances: s.instances,
                running: s.running,
                healthy: s.healthy,
                cpus: spec.cpus,
                mem: spec.mem,
            })
        })
        .collect();
    let total = matching.len();
    let page = q.page.min(total.saturating_sub(1) / PAGE_SIZE);
    let rows: Vec<AppRow> = matching.into_iter().skip(page * PAGE_SIZE).take(PAGE_SIZE).collect();
    let link = |p: usize| {
        let mut url = form_urlencoded::Serializer::new(String::from("/apps?"));
        url.append_pair("q", &q.q).append_pair("status", &q.status).append_pair("page", &p.to_string());
        url.finish()
    };
    Page(Apps {
        nav: "apps",
        first: page * PAGE_SIZE + usize::from(!rows.is_empty()),
        last: page * PAGE_SIZE + rows.len(),
        prev: (page > 0).then(|| link(page - 1)),
        next: ((page + 1) * PAGE_SIZE < total).then(|| link(page + 1)),
        query: q.q,
        status: q.status,
        statuses: STATUSES.iter().map(|s| s.name()).collect(),
        rows,
        total,
    })
}

struct TaskRow {
    id: String,
    address: String,
    state: &'static str,
    health: &'static str,
    version: String,
}

struct FailureView {
    state: &'static str,
    host: String,
    at: String,
    message: String,
}

#[derive(Template)]
#[template(path = "app.html")]
struct AppPage {
    nav: &'static str,
    id: String,
    status: &'static str,
    instances: u32,
    staged: usize,
    running: usize,
    healthy: usize,
    checked: bool,
    version: String,
    waiting: Option<String>,
    last_failure: Option<FailureView>,
    tasks: Vec<TaskRow>,
    /// Newest first.
    versions: Vec<String>,
    definition: String,
}

async fn app(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    let Ok(id) = crate::domain::PathId::parse_app(&format!("/{}", id.trim_start_matches('/'))) else {
        return (StatusCode::NOT_FOUND, "no such app").into_response();
    };
    let queue = st.master.queue();
    let now = crate::master::now();
    let state = st.master.read().await;
    let Some(rec) = state.apps.get(&id) else {
        return (StatusCode::NOT_FOUND, format!("no app {id}")).into_response();
    };
    let spec = &rec.current.spec;
    let queued = queue.get(&id);
    let s = app_summary(rec, &state, queued, now);
    let checks = spec.health_checks.len();
    let tasks = state
        .tasks_of(&id)
        .map(|t| {
            use crate::domain::health::Verdict;
            let ports: Vec<String> = t.ports.iter().map(u16::to_string).collect();
            let health = match task_health(&state, t, checks) {
                None => "",
                Some(Verdict::Healthy) => "healthy",
                Some(Verdict::Unhealthy) => "failing",
                Some(Verdict::Unknown) => "not checked yet",
            };
            TaskRow {
                id: t.id.to_string(),
                address: if ports.is_empty() { t.host.clone() } else { format!("{}:{}", t.host, ports.join(",")) },
                state: t.state.name(),
                health,
                version: t.version.to_string(),
            }
        })
        .collect();
    let waiting = queued.filter(|q| q.count > 0).map(|q| {
        let mut why = format!("{} instance(s) waiting", q.count);
        if let Some(until) = q.delayed_until.filter(|d| *d > now) {
            why.push_str(&format!("; launches held back by the failure backoff until {until}"));
        }
        let declined: Vec<String> = q.rejections.iter().map(|(reason, n)| format!("{reason}: {n} agent(s)")).collect();
        if !declined.is_empty() {
            why.push_str(&format!("; declined by {}", declined.join(", ")));
        }
        why
    });
    Page(AppPage {
        nav: "apps",
        id: id.to_string(),
        status: s.status.name(),
        instances: s.instances,
        staged: s.staged,
        running: s.running,
        healthy: s.healthy,
        checked: checks > 0,
        version: rec.current.version.to_string(),
        waiting,
        last_failure: rec.last_failure.as_ref().map(|f| FailureView {
            state: f.state.name(),
            host: f.host.clone(),
            at: f.timestamp.to_string(),
            message: f.message.clone(),
        }),
        tasks,
        versions: rec.versions.iter().rev().map(|v| v.to_string()).collect(),
        definition: serde_json::to_string_pretty(spec).unwrap_or_default(),
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        let page = Apps {
            nav: "apps",
            query: "\"><script>alert(1)</script>".into(),
            status: String::new(),
            statuses: vec!["running"],
            rows: vec![AppRow {
                id: "/<b>x</b>".into(),
                status: "running",
                instances: 1,
                running: 1,
                healthy: 0,
                cpus: 0.5,
                mem: 64.0,
            }],
            total: 1,
            first: 1,
            last: 1,
            prev: None,
            next: Some("/apps?q=a&page=1".into()),
        };
        let html = page.render().expect("renders");
        assert!(!html.contains("<script>alert(1)") && !html.contains("<b>x"), "{html}");
        assert!(html.contains("value=\"&#34;&#62;&#60;script&#62;alert(1)&#60;/script&#62;\""), "{html}");
        assert!(html.contains(">/&#60;b&#62;x&#60;/b&#62;</a></td>"), "{html}");
        assert!(html.contains("href=\"/apps?q=a&#38;page=1\""), "{html}");
        assert!(html.contains("aria-current=\"page\">Apps"), "{html}");
    }
}
