//! The jobs: the list (`/jobs`), one job's page (`/jobs/{name}`: schedule in words and
//! raw, next run in the job's time zone, counts, run history with a duration chart,
//! parents and children as a graph, actions), the new and edit forms
//! (`/jobs/-/new`, `/jobs/{name}/edit`) and the delete confirmation.
//!
//! Actions are forms posted to `/jobs/{name}/{run,kill,delete,edit}` and `/jobs/-/new`;
//! they call the Chronos API's operations ([`crate::api::jobs`]). Job names have no
//! slashes, so the action is simply the next segment.

use super::session::{ui, CsrfForm, Session};
use super::{link, words, Field, Message, Page, Pages, Ui};
use crate::api::dto::job::job_json;
use crate::api::error::ApiError;
use crate::api::jobs::{last_state, remove_job, run_state, run_status, save_job, start_run};
use crate::api::AppState;
use crate::domain::job::{JobName, JobRecord, JobRun, RunState};
use crate::domain::Timestamp;
use crate::master::state::State as MasterState;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

type MaybeSession = Option<Extension<Session>>;

/// Runs shown in a job's history (and its chart).
const HISTORY: usize = 50;

/// When a scheduled job runs next, on its zone's wall clock.
fn next_run(rec: &JobRecord) -> String {
    match (&rec.spec.schedule, rec.status.next_due) {
        (Some(s), Some(due)) if !rec.spec.disabled => {
            format!("{} ({})", s.zone().local(due).format("%Y-%m-%d %H:%M:%S"), s.zone())
        }
        (Some(_), _) if rec.spec.disabled => "disabled".into(),
        (Some(_), _) => "the schedule has ended".into(),
        (None, _) => "after its parents".into(),
    }
}

/// When it runs, in words: its schedule, or its parents.
fn when(rec: &JobRecord) -> String {
    match &rec.spec.schedule {
        Some(s) => words::schedule(s),
        None => {
            let parents: Vec<&str> = rec.spec.parents.iter().map(JobName::as_str).collect();
            format!("after {} succeed{}", parents.join(", "), if parents.len() == 1 { "s" } else { "" })
        }
    }
}

fn raw_schedule(rec: &JobRecord) -> String {
    rec.spec.schedule.as_ref().map(|s| s.source()).unwrap_or_default()
}

// ---------------------------------------------------------------- the list

#[derive(Debug, Default, serde::Deserialize)]
pub struct JobsQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: usize,
}

/// What the list and the job's page say about a job.
struct JobRow {
    name: String,
    /// When it runs, in words.
    when: String,
    /// Its schedule as written (empty for a dependent job).
    raw: String,
    next: String,
    /// Chronos's `lastState`.
    last: &'static str,
    /// Chronos's `state`: idle, queued, N running.
    state: String,
    successes: u64,
    errors: u64,
}

impl JobRow {
    fn of(state: &MasterState, j: &JobRecord) -> JobRow {
        JobRow {
            name: j.spec.name.to_string(),
            when: when(j),
            raw: raw_schedule(j),
            next: next_run(j),
            last: last_state(j),
            state: run_state(state, &j.spec.name),
            successes: j.status.success_count,
            errors: j.status.error_count,
        }
    }
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct Jobs {
    ui: Ui,
    query: String,
    rows: Vec<JobRow>,
    failing: usize,
    pages: Pages,
}

pub async fn list(State(st): State<AppState>, session: MaybeSession, Query(q): Query<JobsQuery>) -> impl IntoResponse {
    let state = st.master.read().await;
    let matching: Vec<&JobRecord> = state.jobs.values().filter(|j| j.spec.name.as_str().contains(&q.q)).collect();
    let failing = matching.iter().filter(|j| last_state(j) == "failure").count();
    let (rows, pages) = Pages::of(matching.len(), q.page, |p| link("/jobs", &[("q", &q.q), ("page", &p.to_string())]));
    let rows = matching.into_iter().skip(rows.start).take(rows.len()).map(|j| JobRow::of(&state, j)).collect();
    Page(Jobs { ui: ui("jobs", session.as_deref(), &st), query: q.q, rows, failing, pages })
}

// ---------------------------------------------------------------- one job

struct RunRow {
    due: String,
    attempt: u32,
    trigger: String,
    status: &'static str,
    started: String,
    duration: String,
    exit_code: String,
    message: String,
}

/// One bar of the duration chart (SVG user units).
struct Bar {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    class: &'static str,
    title: String,
}

/// A box of the dependency graph.
struct Node {
    x: f64,
    y: f64,
    label: String,
    /// The job's page (none for the "+N more" box).
    href: Option<String>,
    current: bool,
}

struct Edge {
    x1: f64,
    y1: f64,
    x2: f64,
    y2: f64,
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    ui: Ui,
    job: JobRow,
    command: String,
    disabled: bool,
    active: bool,
    runs: Vec<RunRow>,
    bars: Vec<Bar>,
    longest: String,
    graph_width: f64,
    graph_height: f64,
    nodes: Vec<Node>,
    edges: Vec<Edge>,
    definition: String,
}

const CHART_W: f64 = 600.0;
const CHART_H: f64 = 120.0;

/// The duration chart of finished runs, oldest left; (bars, longest duration).
fn chart(runs: &[&JobRun]) -> (Vec<Bar>, f64) {
    let finished: Vec<(&JobRun, f64)> =
        runs.iter().filter_map(|r| Some((*r, r.started_at?.seconds_until(r.finished_at?)))).collect();
    let longest = finished.iter().map(|(_, d)| *d).fold(0.0, f64::max);
    // At least 20 slots, so a few runs do not make slabs.
    let w = CHART_W / finished.len().max(20) as f64;
    let bars = finished
        .iter()
        .enumerate()
        .map(|(i, (r, d))| {
            // Every run gets a visible bar, however short.
            let h = if longest > 0.0 { (d / longest * (CHART_H - 4.0)).max(2.0) } else { 2.0 };
            Bar {
                x: i as f64 * w + w * 0.1,
                y: CHART_H - h,
                w: w * 0.8,
                h,
                class: if r.state == RunState::Succeeded { "ok" } else { "failed" },
                title: format!("{}: {:.1} s, {}", r.due, d, run_status(r.state)),
            }
        })
        .collect();
    (bars, longest)
}

const NODE_W: f64 = 150.0;
const ROW_H: f64 = 70.0;
/// Parents or children drawn in one row at most (the rest are counted).
const MAX_ROW: usize = 8;

/// Parents above the job, children below; (width, height, nodes, edges).
fn graph(state: &MasterState, rec: &JobRecord) -> (f64, f64, Vec<Node>, Vec<Edge>) {
    let name = &rec.spec.name;
    let row = |names: Vec<String>| -> Vec<String> {
        let n = names.len();
        let mut shown: Vec<String> = names.into_iter().take(MAX_ROW).collect();
        if n > MAX_ROW {
            shown.push(format!("+{} more", n - MAX_ROW));
        }
        shown
    };
    let parents = row(rec.spec.parents.iter().map(JobName::to_string).collect());
    let children = row(state.children.get(name).into_iter().flatten().map(JobName::to_string).collect());
    let width = (parents.len().max(children.len()).max(1) as f64) * (NODE_W + 20.0);
    let place = |i: usize, n: usize| width / n as f64 * (i as f64 + 0.5) - NODE_W / 2.0;
    let mut nodes = vec![];
    let mut edges = vec![];
    // The job's row is the first when it has no parents.
    let y = if parents.is_empty() { 0.0 } else { ROW_H };
    let node = |x: f64, y: f64, label: &String, current: bool| Node {
        x,
        y,
        href: JobName::parse(label).ok().map(|n| format!("/jobs/{n}")),
        label: label.clone(),
        current,
    };
    let me = node(place(0, 1), y, &name.to_string(), true);
    for (i, p) in parents.iter().enumerate() {
        let x = place(i, parents.len());
        edges.push(Edge { x1: x + NODE_W / 2.0, y1: 30.0, x2: me.x + NODE_W / 2.0, y2: y });
        nodes.push(node(x, 0.0, p, false));
    }
    for (i, c) in children.iter().enumerate() {
        let x = place(i, children.len());
        edges.push(Edge { x1: me.x + NODE_W / 2.0, y1: y + 30.0, x2: x + NODE_W / 2.0, y2: y + ROW_H });
        nodes.push(node(x, y + ROW_H, c, false));
    }
    nodes.push(me);
    let height = nodes.iter().map(|n| n.y).fold(0.0, f64::max) + 32.0;
    (width, height, nodes, edges)
}

fn show(t: Option<Timestamp>) -> String {
    t.map(|t| t.to_string()).unwrap_or_default()
}

async fn job_page(st: &AppState, session: Option<&Session>, name: JobName) -> Response {
    let state = st.master.read().await;
    let Some(rec) = state.jobs.get(&name) else {
        return not_found(st, session, &format!("There is no job {name}."));
    };
    let recent: Vec<&JobRun> = {
        let mut r: Vec<&JobRun> =
            state.runs.get(&name).into_iter().flat_map(|r| r.values().rev()).take(HISTORY).collect();
        r.reverse();
        r
    };
    let (bars, longest) = chart(&recent);
    let (graph_width, graph_height, nodes, edges) = graph(&state, rec);
    let active = state.active_runs_of(&name).next().is_some();
    let runs = recent
        .iter()
        .rev()
        .map(|r| RunRow {
            due: r.due.to_string(),
            attempt: r.attempt,
            trigger: format!("{:?}", r.trigger).to_lowercase(),
            status: run_status(r.state),
            started: show(r.started_at),
            duration: match (r.started_at, r.finished_at) {
                (Some(s), Some(f)) => format!("{:.1} s", s.seconds_until(f)),
                _ => String::new(),
            },
            exit_code: r.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            message: r.message.clone().unwrap_or_default(),
        })
        .collect();
    Page(JobPage {
        ui: ui("jobs", session, st),
        job: JobRow::of(&state, rec),
        command: rec.spec.command.clone(),
        disabled: rec.spec.disabled,
        active,
        runs,
        bars,
        longest: format!("{longest:.1} s"),
        graph_width,
        graph_height,
        nodes,
        edges,
        definition: serde_json::to_string_pretty(&job_json(rec, crate::master::now())).unwrap_or_default(),
    })
    .into_response()
}

fn not_found(st: &AppState, session: Option<&Session>, text: &str) -> Response {
    Message::page(StatusCode::NOT_FOUND, ui("jobs", session, st), "Not found", text)
}

pub async fn page(State(st): State<AppState>, session: MaybeSession, Path(name): Path<String>) -> Response {
    match JobName::parse(&name) {
        Ok(name) => job_page(&st, session.as_deref(), name).await,
        Err(_) => not_found(&st, session.as_deref(), "No such job."),
    }
}

/// `GET /jobs/{name}/{edit,delete}` and `/jobs/-/new`.
pub async fn sub_page(
    State(st): State<AppState>,
    session: MaybeSession,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    let session = session.as_deref();
    if name == "-" && action == "new" {
        return Page(JobForm::blank(ui("jobs", session, &st))).into_response();
    }
    let Ok(name) = JobName::parse(&name) else { return not_found(&st, session, "No such job.") };
    let state = st.master.read().await;
    let Some(rec) = state.jobs.get(&name) else {
        return not_found(&st, session, &format!("There is no job {name}."));
    };
    match action.as_str() {
        "edit" => Page(JobForm::of(ui("jobs", session, &st), rec)).into_response(),
        "delete" => Message::confirm(
            ui("jobs", session, &st),
            &format!("Delete {name}"),
            "Its runs stop being scheduled; jobs that depend on it take over its schedule or its parents.",
            format!("/jobs/{name}"),
            format!("/jobs/{name}/delete"),
        ),
        _ => not_found(&st, session, "No such page."),
    }
}

/// `POST /jobs/{name}/{run,kill,delete,edit}` and `/jobs/-/new`.
pub async fn action(
    State(st): State<AppState>,
    session: MaybeSession,
    Path((name, action)): Path<(String, String)>,
    CsrfForm(form): CsrfForm<BTreeMap<String, String>>,
) -> Response {
    let session = session.as_deref();
    if name == "-" && action == "new" {
        return submit_form(&st, session, None, &form).await;
    }
    let Ok(job) = JobName::parse(&name) else { return not_found(&st, session, "No such job.") };
    let back = Redirect::to(&format!("/jobs/{job}")).into_response();
    let result = match action.as_str() {
        "run" => {
            let args = form.get("arguments").map(|a| a.trim().to_string()).filter(|a| !a.is_empty());
            start_run(&st, job, args).await.map(|_| back)
        }
        "kill" => st.master.kill_job_runs(job).await.map_err(ApiError::from).map(|_| back),
        "delete" => remove_job(&st, job).await.map(|_| Redirect::to("/jobs").into_response()),
        "edit" => return submit_form(&st, session, Some(job), &form).await,
        _ => return not_found(&st, session, "No such action."),
    };
    result.unwrap_or_else(|e| {
        let (message, details) = e.explain();
        let text = details.iter().fold(message, |t, (p, m)| format!("{t} {p}: {m}."));
        let m = Message {
            ui: ui("jobs", session, &st),
            title: "The change was refused".into(),
            text,
            back: Some((format!("/jobs/{name}"), format!("Back to {name}"))),
            form: None,
        };
        (e.status(), Page(m)).into_response()
    })
}

// ---------------------------------------------------------------- new and edit

#[derive(Template)]
#[template(path = "job_form.html")]
struct JobForm {
    ui: Ui,
    editing: Option<String>,
    action: String,
    fields: Vec<Field>,
    form_errors: Vec<String>,
    json: String,
    json_errors: Vec<String>,
    mode: String,
}

/// (name, label, hint) of the form's fields; they are the Chronos JSON's keys.
const FIELDS: [(&str, &str, &str); 5] = [
    ("name", "Name", "Letters, digits, '_', '.' and '-'."),
    ("command", "Command", "Run by sh -c."),
    ("schedule", "Schedule", "A crontab line (30 2 * * *) or R/2026-01-01T02:00:00Z/P1D; empty for a dependent job."),
    ("scheduleTimeZone", "Time zone", "An IANA name such as Europe/Berlin; UTC if empty."),
    ("parents", "Parents", "For a dependent job: the jobs it runs after, comma-separated."),
];

impl JobForm {
    fn with(ui: Ui, editing: Option<&JobName>, value: impl Fn(&str) -> String, json: String) -> JobForm {
        JobForm {
            ui,
            action: match editing {
                Some(n) => format!("/jobs/{n}/edit"),
                None => "/jobs/-/new".into(),
            },
            editing: editing.map(JobName::to_string),
            fields: FIELDS
                .iter()
                .filter(|(name, ..)| editing.is_none() || *name != "name")
                .map(|&(name, label, hint)| Field {
                    name,
                    label,
                    kind: "text",
                    value: value(name),
                    hint,
                    errors: vec![],
                })
                .collect(),
            form_errors: vec![],
            json,
            json_errors: vec![],
            mode: "form".into(),
        }
    }

    fn blank(ui: Ui) -> JobForm {
        let example = json!({"name": "", "command": "", "schedule": "R/2026-01-01T00:00:00Z/P1D", "epsilon": "PT60S"});
        JobForm::with(ui, None, |_| String::new(), serde_json::to_string_pretty(&example).unwrap_or_default())
    }

    fn of(ui: Ui, rec: &JobRecord) -> JobForm {
        let v = job_json(rec, crate::master::now());
        let value = |k: &str| match &v[k] {
            Value::String(s) => s.clone(),
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "),
            _ if k == "schedule" => v["cron"].as_str().unwrap_or_default().to_string(),
            _ => String::new(),
        };
        JobForm::with(ui, Some(&rec.spec.name), value, serde_json::to_string_pretty(&v).unwrap_or_default())
    }
}

/// The Chronos JSON the form stands for: the fields over `base` (the job as it is, when
/// editing). A schedule that is not `R/...` is a crontab line (our `cron` field).
fn form_json(form: &BTreeMap<String, String>, base: Option<Value>) -> Value {
    let mut m = match base {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let text = |k: &str| form.get(k).map(|v| v.trim()).unwrap_or("");
    for k in ["name", "command", "scheduleTimeZone"] {
        if form.contains_key(k) {
            m.insert(k.into(), json!(text(k)));
        }
    }
    m.remove("schedule");
    m.remove("cron");
    match text("schedule") {
        "" => {}
        s if s.starts_with('R') => drop(m.insert("schedule".into(), json!(s))),
        s => drop(m.insert("cron".into(), json!(s))),
    }
    let parents: Vec<&str> = text("parents").split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
    m.insert("parents".into(), json!(parents));
    Value::Object(m)
}

async fn submit_form(
    st: &AppState,
    session: Option<&Session>,
    editing: Option<JobName>,
    form: &BTreeMap<String, String>,
) -> Response {
    let by_json = form.get("mode").map(String::as_str) == Some("json");
    let json_text = form.get("json").cloned().unwrap_or_default();
    let base = match &editing {
        Some(name) => {
            let state = st.master.read().await;
            match state.jobs.get(name) {
                Some(rec) => Some(job_json(rec, crate::master::now())),
                None => return not_found(st, session, &format!("There is no job {name}.")),
            }
        }
        None => None,
    };
    let body = if by_json {
        crate::api::extract::parse_json(&axum::body::Bytes::from(json_text.clone()))
    } else {
        Ok(form_json(form, base.clone()))
    };
    // An edit keeps the job's name (a different name would be another job).
    let body = body.and_then(|mut b| match &editing {
        Some(n) if b.get("name").and_then(Value::as_str) != Some(n.as_str()) => {
            Err(ApiError::Invalid(vec![crate::domain::Violation::new(
                "/name",
                format!("is {n}: a job is renamed by creating a new one"),
            )]))
        }
        _ => {
            if let (None, Value::Object(m)) = (&editing, &mut b) {
                m.entry("name").or_insert(json!(""));
            }
            Ok(b)
        }
    });
    let result = match body {
        Ok(b) => {
            let dependent = b.get("schedule").is_none() && b.get("cron").is_none();
            save_job(st, b, dependent).await
        }
        Err(e) => Err(e),
    };
    let e = match result {
        Ok(name) => return Redirect::to(&format!("/jobs/{name}")).into_response(),
        Err(e) => e,
    };
    let (message, details) = e.explain();
    let mut page = JobForm::with(
        ui("jobs", session, st),
        editing.as_ref(),
        |k| form.get(k).cloned().unwrap_or_default(),
        if by_json { json_text } else { serde_json::to_string_pretty(&form_json(form, base)).unwrap_or_default() },
    );
    page.mode = if by_json { "json" } else { "form" }.into();
    for (path, err) in details {
        let key = path.trim_start_matches('/').split('/').next().unwrap_or("");
        let key = if key == "cron" { "schedule" } else { key };
        match page.fields.iter_mut().find(|f| f.name == key).filter(|_| !by_json) {
            Some(f) => f.errors.push(err),
            None if by_json => page.json_errors.push(format!("{path}: {err}")),
            None => page.form_errors.push(format!("{path}: {err}")),
        }
    }
    let errors = if by_json { &mut page.json_errors } else { &mut page.form_errors };
    if errors.is_empty() && page.fields.iter().all(|f| f.errors.is_empty()) {
        errors.push(message);
    }
    (e.status(), Page(page)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_become_chronos_json() {
        let form: BTreeMap<String, String> =
            [("name", " nightly "), ("command", "echo hi"), ("schedule", "30 2 * * *"), ("parents", "a, b,,")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        assert_eq!(
            form_json(&form, None),
            json!({"name": "nightly", "command": "echo hi", "cron": "30 2 * * *", "parents": ["a", "b"]})
        );
        let base = json!({"name": "nightly", "command": "x", "schedule": "R/2026-01-01T00:00:00Z/P1D", "retries": 5});
        let iso: BTreeMap<String, String> = [("command", "y"), ("schedule", "R/2026-01-02T00:00:00Z/PT1H")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            form_json(&iso, Some(base)),
            json!({"name": "nightly", "command": "y", "schedule": "R/2026-01-02T00:00:00Z/PT1H", "retries": 5, "parents": []})
        );
    }
}
