//! Chronos's REST API (reference chronos.md section 1), served under both `/scheduler`
//! (2.x) and `/v1/scheduler` (3.x): jobs, search, create or replace (iso8601 and
//! dependency), run now, delete, kill, mark successful, the job graph, statistics and
//! the leader. Writes answer 204 as Chronos did; errors are our JSON error body.

use super::dto::job::{job_json, parse_job};
use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, Params};
use super::AppState;
use crate::domain::job::{JobName, JobRecord, JobRun, RunState};
use crate::master::jobs as plans;
use crate::master::now;
use crate::master::state::State as MasterState;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};

/// The routes below one prefix (`/scheduler` or `/v1/scheduler`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/jobs", get(list))
        .route("/jobs/search", get(search))
        .route("/jobs/summary", get(summary))
        .route("/iso8601", post(put_scheduled).put(put_scheduled))
        .route("/dependency", post(put_dependent).put(put_dependent))
        .route("/job/{name}", get(get_one).put(run_now).delete(delete_job))
        .route("/job/success/{name}", put(mark_success))
        .route("/job/stat/{name}", get(job_stat))
        .route("/task/kill/{name}", delete(kill))
        .route("/graph/dot", get(graph_dot))
        .route("/graph/csv", get(graph_csv))
        .route("/stats/{percentile}", get(stats))
        .route("/leader", get(super::system::chronos_leader))
}

fn job_name(name: &str) -> ApiResult<JobName> {
    JobName::parse(name).map_err(|e| ApiError::NotFound(format!("Job '{name}' does not exist ({e})")))
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn list(State(st): State<AppState>) -> Json<Value> {
    let state = st.master.read().await;
    let now = now();
    Json(Value::Array(state.jobs.values().map(|j| job_json(j, now)).collect()))
}

/// Case-insensitive substring search on `name` and/or `command` (`any`: either), with
/// Chronos's defaults `limit=10`, `offset=0`.
async fn search(State(st): State<AppState>, params: Params) -> ApiResult<Json<Value>> {
    let number = |key: &str, default: usize| -> ApiResult<usize> {
        match params.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| ApiError::BadRequest(format!("'{key}' must be a whole number"))),
        }
    };
    let (limit, offset) = (number("limit", 10)?, number("offset", 0)?);
    let lower = |k: &str| params.get(k).map(str::to_lowercase);
    let (name, command, any) = (lower("name"), lower("command"), lower("any"));
    let state = st.master.read().await;
    let now = now();
    let has = |text: &str, q: &Option<String>| q.as_deref().is_none_or(|q| contains_ignoring_case(text, q));
    let hits: Vec<Value> = state
        .jobs
        .values()
        .filter(|j| {
            let (n, c) = (j.spec.name.as_str(), j.spec.command.as_str());
            has(n, &name) && has(c, &command) && (any.is_none() || has(n, &any) || has(c, &any))
        })
        .skip(offset)
        .take(limit)
        .map(|j| job_json(j, now))
        .collect();
    Ok(Json(Value::Array(hits)))
}

/// Whether `text` contains `lower` (already lowercase), ignoring case, without
/// allocating (search scans every job).
fn contains_ignoring_case(text: &str, lower: &str) -> bool {
    if lower.is_ascii() {
        let (t, q) = (text.as_bytes(), lower.as_bytes());
        return q.is_empty() || t.windows(q.len()).any(|w| w.iter().zip(q).all(|(a, b)| a.to_ascii_lowercase() == *b));
    }
    text.to_lowercase().contains(lower)
}

/// Chronos's `lastState` of a job: `success`, `failure` or `fresh`.
pub fn last_state(j: &JobRecord) -> &'static str {
    match (j.status.last_success, j.status.last_error) {
        (None, None) => "fresh",
        (Some(s), Some(e)) if e > s => "failure",
        (None, Some(_)) => "failure",
        _ => "success",
    }
}

/// Chronos's `state`: `idle`, `queued` or `N running`.
pub fn run_state(state: &MasterState, name: &JobName) -> String {
    let active: Vec<&JobRun> = state.active_runs_of(name).collect();
    let running = active.iter().filter(|r| r.state == RunState::Running).count();
    match (running, active.len()) {
        (0, 0) => "idle".into(),
        (0, _) => "queued".into(),
        (n, _) => format!("{n} running"),
    }
}

async fn summary(State(st): State<AppState>) -> Json<Value> {
    let state = st.master.read().await;
    let now = now();
    let jobs: Vec<Value> = state
        .jobs
        .values()
        .map(|j| {
            let full = job_json(j, now);
            json!({
                "name": j.spec.name,
                "status": last_state(j),
                "state": run_state(&state, &j.spec.name),
                "schedule": full.get("schedule").or(full.get("cron")).cloned().unwrap_or(json!("")),
                "parents": j.spec.parents,
                "disabled": j.spec.disabled,
            })
        })
        .collect();
    Json(json!({ "jobs": jobs }))
}

async fn get_one(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let name = job_name(&name)?;
    let state = st.master.read().await;
    let j = state.jobs.get(&name).ok_or_else(|| crate::master::MasterError::JobNotFound(name.to_string()))?;
    Ok(Json(job_json(j, now())))
}

/// Creates or replaces a job from its Chronos JSON (the API's iso8601 and dependency
/// endpoints, and the UI's form). `dependent`: it must name parents.
pub async fn save_job(st: &AppState, body: Value, dependent: bool) -> ApiResult<JobName> {
    let parsed = parse_job(body, now()).map_err(ApiError::Invalid)?;
    if dependent && parsed.spec.parents.is_empty() {
        return Err(ApiError::Invalid(vec![crate::domain::Violation::new(
            "/parents",
            "a dependent job needs at least one parent",
        )]));
    }
    let name = parsed.spec.name.clone();
    st.master.write(move |state, now| plans::put_job(state, now, parsed.spec, parsed.status)).await?;
    st.master.wake();
    Ok(name)
}

async fn put_scheduled(State(st): State<AppState>, JsonBody(body): JsonBody) -> ApiResult<Response> {
    save_job(&st, body, false).await.map(|_| no_content())
}

async fn put_dependent(State(st): State<AppState>, JsonBody(body): JsonBody) -> ApiResult<Response> {
    save_job(&st, body, true).await.map(|_| no_content())
}

/// `PUT /job/{name}?arguments=...`: run now.
async fn run_now(State(st): State<AppState>, Path(name): Path<String>, params: Params) -> ApiResult<Response> {
    let name = job_name(&name)?;
    start_run(&st, name, params.get("arguments").map(str::to_string)).await?;
    Ok(no_content())
}

/// Starts a run of a job now, with extra `arguments` for its command.
pub async fn start_run(st: &AppState, name: JobName, arguments: Option<String>) -> ApiResult<()> {
    st.master.write(move |state, now| plans::run_now(state, now, &name, arguments)).await?;
    st.master.wake();
    Ok(())
}

/// Deletes a job: what became of its children (they keep their fields and take the
/// deleted job's schedule or parents).
pub async fn remove_job(st: &AppState, name: JobName) -> ApiResult<Vec<Value>> {
    let children = st.master.write(move |state, now| plans::delete_job(state, now, &name, false)).await?;
    st.master.wake();
    Ok(children.into_iter().map(|c| json!(c)).collect())
}

/// `DELETE /job/{name}`: 204, or 200 with what became of the job's children.
async fn delete_job(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult<Response> {
    let children = remove_job(&st, job_name(&name)?).await?;
    if children.is_empty() {
        return Ok(no_content());
    }
    Ok(Json(json!({ "children": children })).into_response())
}

async fn mark_success(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult<Response> {
    let name = job_name(&name)?;
    let shown = name.to_string();
    st.master.write(move |state, now| plans::mark_success(state, now, &name)).await?;
    st.master.wake();
    Ok(text(format!("marked job {shown} as successful: true")))
}

async fn kill(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult<Response> {
    let name = job_name(&name)?;
    st.master.kill_job_runs(name).await?;
    Ok(no_content())
}

/// Edges parent -> child, in name order.
fn edges(state: &MasterState) -> Vec<(&JobName, &JobName)> {
    state.jobs.values().flat_map(|c| c.spec.parents.iter().map(move |p| (p, &c.spec.name))).collect()
}

async fn graph_dot(State(st): State<AppState>) -> Response {
    let state = st.master.read().await;
    let ids: std::collections::BTreeMap<&JobName, usize> = state.jobs.keys().enumerate().map(|(i, n)| (n, i)).collect();
    let mut out = String::from("digraph G {\n");
    for (n, i) in &ids {
        out.push_str(&format!("  {i} [ label = \"{n}\" ];\n"));
    }
    for (p, c) in edges(&state) {
        if let (Some(a), Some(b)) = (ids.get(p), ids.get(c)) {
            out.push_str(&format!("  {a} -> {b};\n"));
        }
    }
    out.push_str("}\n");
    text(out)
}

async fn graph_csv(State(st): State<AppState>) -> Response {
    let state = st.master.read().await;
    let mut out = String::new();
    for j in state.jobs.values() {
        out.push_str(&format!("node,{},{},{}\n", j.spec.name, last_state(j), run_state(&state, &j.spec.name)));
    }
    for (p, c) in edges(&state) {
        out.push_str(&format!("link,{p},{c}\n"));
    }
    text(out)
}

/// Durations (s) of a job's finished runs, oldest first.
fn durations(state: &MasterState, name: &JobName) -> Vec<f64> {
    state
        .runs
        .get(name)
        .into_iter()
        .flat_map(|r| r.values())
        .filter_map(|r| Some(r.started_at?.seconds_until(r.finished_at?)))
        .collect()
}

/// The value at percentile `p` (0-100) of sorted `v` (nearest rank).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn histogram(mut d: Vec<f64>) -> Value {
    d.sort_by(f64::total_cmp);
    let mean = if d.is_empty() { 0.0 } else { d.iter().sum::<f64>() / d.len() as f64 };
    json!({
        "75thPercentile": percentile(&d, 75.0),
        "95thPercentile": percentile(&d, 95.0),
        "98thPercentile": percentile(&d, 98.0),
        "99thPercentile": percentile(&d, 99.0),
        "median": percentile(&d, 50.0),
        "mean": mean,
        "count": d.len(),
    })
}

/// `GET /job/stat/{name}`: run-time histogram and the recent runs.
async fn job_stat(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let name = job_name(&name)?;
    let state = st.master.read().await;
    if !state.jobs.contains_key(&name) {
        return Err(crate::master::MasterError::JobNotFound(name.to_string()).into());
    }
    let history: Vec<Value> = state
        .runs
        .get(&name)
        .into_iter()
        .flat_map(|r| r.values().rev())
        .map(|r| {
            let duration = match (r.started_at, r.finished_at) {
                (Some(s), Some(f)) => json!(s.seconds_until(f)),
                _ => Value::Null,
            };
            json!({
                "taskId": r.chronos_task_id(),
                "jobName": r.job,
                "slaveId": r.host,
                "startTime": r.started_at,
                "endTime": r.finished_at,
                "duration": duration,
                "status": run_status(r.state),
                "numElementsProcessed": Value::Null,
                "due": r.due,
                "attempt": r.attempt,
                "trigger": r.trigger,
                "exitCode": r.exit_code,
                "message": r.message,
            })
        })
        .collect();
    Ok(Json(json!({ "histogram": histogram(durations(&state, &name)), "taskStatHistory": history })))
}

pub fn run_status(s: RunState) -> &'static str {
    match s {
        RunState::Queued => "queued",
        RunState::Running => "running",
        RunState::Succeeded => "success",
        RunState::Failed => "failure",
        RunState::Killed => "killed",
        RunState::TimedOut => "timed out",
    }
}

/// `GET /stats/{percentile}`: per job, that percentile of its run times, slowest first.
async fn stats(State(st): State<AppState>, Path(which): Path<String>) -> ApiResult<Json<Value>> {
    let p =
        match which.as_str() {
            "99thPercentile" => 99.0,
            "98thPercentile" => 98.0,
            "95thPercentile" => 95.0,
            "75thPercentile" => 75.0,
            "median" => 50.0,
            "mean" => -1.0,
            _ => return Err(ApiError::BadRequest(
                "the statistic is one of 99thPercentile, 98thPercentile, 95thPercentile, 75thPercentile, median, mean"
                    .into(),
            )),
        };
    let state = st.master.read().await;
    let mut rows: Vec<(f64, &JobName)> = state
        .jobs
        .keys()
        .filter_map(|n| {
            let mut d = durations(&state, n);
            if d.is_empty() {
                return None;
            }
            d.sort_by(f64::total_cmp);
            let v = if p < 0.0 { d.iter().sum::<f64>() / d.len() as f64 } else { percentile(&d, p) };
            Some((v, n))
        })
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    Ok(Json(Value::Array(rows.into_iter().map(|(t, n)| json!({"jobNameLabel": n, "time": t})).collect())))
}
