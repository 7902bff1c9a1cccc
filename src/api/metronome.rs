//! Metronome's job API (`/v1/jobs`, reference chronos.md section 4), mapped onto the
//! same jobs as the Chronos API, so DC/OS users can move too: a Metronome job is turned
//! into a Chronos job document and goes through the same parser (errors are reported
//! with Metronome's field paths), and every job, however it was made, can be read in
//! Metronome's form.
//!
//! The mapping: `id` is the name; `run.cmd`/`args`, `cpus` (default 1), `mem` (128),
//! `disk`, `env`, `docker.image` and `placement.constraints` are the job's; the one
//! schedule (`schedules[0]`: `cron`, `timezone` (UTC), `startingDeadlineSeconds` (900,
//! the epsilon), `concurrencyPolicy` (ALLOW), `enabled`) is its schedule; a job without a
//! schedule runs only when started. `restart.policy` `ON_FAILURE` means up to 10 retries.
//! A run's id is its due time and attempt (`20260101020000000a0`).

use super::dto::job::parse_job;
use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, Params};
use super::AppState;
use crate::domain::job::{JobName, JobRecord, JobRun, RunKey, RunState};
use crate::domain::schedule::Schedule;
use crate::domain::{Timestamp, Violation};
use crate::master::jobs as plans;
use crate::master::state::State as MasterState;
use crate::master::{now, MasterError};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", get(list).post(create))
        .route("/v1/jobs/{id}", get(get_one).put(replace).delete(remove))
        .route("/v1/jobs/{id}/schedules", get(schedules).post(add_schedule))
        .route("/v1/jobs/{id}/schedules/{schedule_id}", get(schedule_one).put(replace_schedule).delete(remove_schedule))
        .route("/v1/jobs/{id}/runs", get(active_runs).post(start_run))
        .route("/v1/jobs/{id}/runs/{run_id}", get(run_one))
        .route("/v1/jobs/{id}/runs/{run_id}/actions/stop", post(stop_run))
}

/// Metronome's path of a field of the Chronos document it became.
fn metronome_path(chronos: &str) -> String {
    let map = [
        ("/name", "/id"),
        ("/command", "/run/cmd"),
        ("/arguments", "/run/args"),
        ("/cpus", "/run/cpus"),
        ("/mem", "/run/mem"),
        ("/disk", "/run/disk"),
        ("/environmentVariables", "/run/env"),
        ("/container", "/run/docker"),
        ("/constraints", "/run/placement/constraints"),
        ("/cron", "/schedules/0/cron"),
        ("/timezone", "/schedules/0/timezone"),
        ("/epsilon", "/schedules/0/startingDeadlineSeconds"),
        ("/concurrencyPolicy", "/schedules/0/concurrencyPolicy"),
        ("/parents", "/dependencies"),
    ];
    for (from, to) in map {
        if let Some(rest) = chronos.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    chronos.to_string()
}

/// A Metronome job document as a Chronos one (with the Metronome-only fields kept).
fn to_chronos(body: &Value) -> Result<Value, Vec<Violation>> {
    let Some(obj) = body.as_object() else {
        return Err(vec![Violation::new("/", "a job is a JSON object")]);
    };
    let mut errors = Vec::new();
    for k in obj.keys() {
        if !["id", "description", "labels", "run", "schedules", "dependencies"].contains(&k.as_str()) {
            errors.push(Violation::new(format!("/{k}"), "unknown field"));
        }
    }
    let run = obj.get("run").cloned().unwrap_or(json!({}));
    let mut doc = Map::new();
    doc.insert("name".into(), obj.get("id").cloned().unwrap_or(Value::Null));
    doc.insert("description".into(), obj.get("description").cloned().unwrap_or(json!("")));
    doc.insert("command".into(), run.get("cmd").cloned().unwrap_or(json!("")));
    if let Some(args) = run.get("args") {
        doc.insert("arguments".into(), args.clone());
    }
    doc.insert("cpus".into(), run.get("cpus").cloned().unwrap_or(json!(1.0)));
    doc.insert("mem".into(), run.get("mem").cloned().unwrap_or(json!(128)));
    if let Some(d) = run.get("disk") {
        doc.insert("disk".into(), d.clone());
    }
    if let Some(env) = run.get("env") {
        match env.as_object() {
            Some(m) => {
                let list: Vec<Value> = m
                    .iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => json!({"name": k, "value": s}),
                        _ => json!({"name": k}),
                    })
                    .collect();
                doc.insert("environmentVariables".into(), Value::Array(list));
            }
            None => errors.push(Violation::new("/run/env", "must be an object of names and values")),
        }
    }
    if let Some(d) = run.get("docker").filter(|d| !d.is_null()) {
        let mut c = json!({"type": "DOCKER", "image": d.get("image").cloned().unwrap_or(Value::Null)});
        if let Some(f) = d.get("forcePullImage") {
            c["forcePullImage"] = f.clone();
        }
        doc.insert("container".into(), c);
    }
    if let Some(cs) = run.pointer("/placement/constraints").and_then(Value::as_array) {
        let list: Vec<Value> = cs
            .iter()
            .map(|c| {
                let op = match c.get("operator").and_then(Value::as_str) {
                    Some("IS") | Some("EQ") => "EQUALS",
                    Some(other) => other,
                    None => "",
                };
                json!([
                    c.get("attribute").cloned().unwrap_or(json!("")),
                    op,
                    c.get("value").cloned().unwrap_or(json!(""))
                ])
            })
            .collect();
        doc.insert("constraints".into(), Value::Array(list));
    }
    let retries = match run.pointer("/restart/policy").and_then(Value::as_str) {
        None | Some("NEVER") => 0,
        Some("ON_FAILURE") => 10,
        Some(_) => {
            errors.push(Violation::new("/run/restart/policy", "must be NEVER or ON_FAILURE"));
            0
        }
    };
    doc.insert("retries".into(), json!(retries));
    if let Some(run_obj) = run.as_object() {
        let known = [
            "cmd",
            "args",
            "cpus",
            "mem",
            "disk",
            "gpus",
            "env",
            "docker",
            "placement",
            "restart",
            "user",
            "maxLaunchDelay",
            "taskKillGracePeriodSeconds",
            "artifacts",
            "volumes",
            "secrets",
            "networks",
            "ucr",
        ];
        for k in run_obj.keys().filter(|k| !known.contains(&k.as_str())) {
            errors.push(Violation::new(format!("/run/{k}"), "unknown field"));
        }
        for k in ["volumes", "secrets", "artifacts", "networks", "ucr"] {
            if run_obj.get(k).is_some_and(|v| !v.is_null() && v != &json!([]) && v != &json!({})) {
                errors.push(Violation::new(format!("/run/{k}"), "is not supported"));
            }
        }
        if let Some(u) = run_obj.get("user") {
            doc.insert("runAsUser".into(), u.clone());
        }
    }
    if let Some(deps) = obj.get("dependencies").and_then(Value::as_array).filter(|d| !d.is_empty()) {
        let ids: Vec<Value> = deps.iter().map(|d| d.get("id").cloned().unwrap_or(Value::Null)).collect();
        doc.insert("parents".into(), Value::Array(ids));
        if obj.get("schedules").and_then(Value::as_array).is_some_and(|s| !s.is_empty()) {
            errors.push(Violation::new("/dependencies", "a job has either dependencies or a schedule"));
        }
    }
    match obj.get("schedules").and_then(Value::as_array).map(Vec::as_slice) {
        None | Some([]) => {
            // No schedule: it runs when started (a far start that never comes is not
            // needed: the job is disabled for scheduling).
            doc.insert("schedule".into(), json!("R0//PT24H"));
        }
        Some([s]) => apply_schedule(&mut doc, s, &mut errors),
        Some(_) => errors.push(Violation::new("/schedules", "a job has at most one schedule")),
    }
    let mut extra = Map::new();
    if let Some(l) = obj.get("labels") {
        extra.insert("labels".into(), l.clone());
    }
    if let Some(id) = body.pointer("/schedules/0/id") {
        extra.insert("scheduleId".into(), id.clone());
    }
    doc.insert("metronome".into(), Value::Object(extra));
    match errors.is_empty() {
        true => Ok(Value::Object(doc)),
        false => Err(errors),
    }
}

fn apply_schedule(doc: &mut Map<String, Value>, s: &Value, errors: &mut Vec<Violation>) {
    let Some(cron) = s.get("cron").and_then(Value::as_str) else {
        errors.push(Violation::new("/schedules/0/cron", "a schedule needs a cron expression"));
        return;
    };
    doc.insert("cron".into(), json!(cron));
    doc.insert("timezone".into(), s.get("timezone").cloned().unwrap_or(json!("UTC")));
    let deadline = s.get("startingDeadlineSeconds").and_then(Value::as_u64).unwrap_or(900);
    doc.insert("epsilon".into(), json!(format!("PT{deadline}S")));
    doc.insert("concurrencyPolicy".into(), s.get("concurrencyPolicy").cloned().unwrap_or(json!("ALLOW")));
    if s.get("enabled").and_then(Value::as_bool) == Some(false) {
        doc.insert("disabled".into(), json!(true));
    }
}

/// Parses a Metronome job into what the Chronos parser makes of it.
fn parse(body: &Value) -> ApiResult<super::dto::job::ParsedJob> {
    let to_metronome = |v: Vec<Violation>| {
        ApiError::Invalid(v.into_iter().map(|x| Violation::new(metronome_path(&x.path), x.message)).collect())
    };
    let doc = to_chronos(body).map_err(ApiError::Invalid)?;
    parse_job(doc, now()).map_err(to_metronome)
}

fn job_name(id: &str) -> ApiResult<JobName> {
    JobName::parse(id).map_err(|_| ApiError::NotFound(format!("Job '{id}' does not exist")))
}

fn missing(name: &JobName) -> ApiError {
    MasterError::JobNotFound(name.to_string()).into()
}

/// Metronome's run id for a run: its due time and attempt.
fn run_id(r: &JobRun) -> String {
    let due = chrono::DateTime::from_timestamp_millis(r.due.millis()).unwrap_or_default();
    format!("{}a{}", due.format("%Y%m%d%H%M%S%3f"), r.attempt)
}

fn run_key(name: &JobName, id: &str) -> Option<RunKey> {
    let (due, attempt) = id.split_once('a')?;
    let t = chrono::NaiveDateTime::parse_from_str(due, "%Y%m%d%H%M%S%3f").ok()?;
    Some(RunKey {
        job: name.clone(),
        due: Timestamp::from_millis(t.and_utc().timestamp_millis()),
        attempt: attempt.parse().ok()?,
    })
}

fn run_json(r: &JobRun) -> Value {
    let status = match r.state {
        RunState::Queued => "STARTING",
        RunState::Running => "ACTIVE",
        RunState::Succeeded => "SUCCESS",
        RunState::Failed | RunState::Killed | RunState::TimedOut => "FAILED",
    };
    let tasks: Vec<Value> = r
        .task_id
        .iter()
        .map(|id| {
            json!({"id": id, "startedAt": r.started_at, "completedAt": r.finished_at,
                   "status": match r.state { RunState::Running => "TASK_RUNNING", RunState::Succeeded => "TASK_FINISHED", _ => "TASK_FAILED" }})
        })
        .collect();
    json!({"id": run_id(r), "jobId": r.job, "status": status, "createdAt": r.not_before,
           "completedAt": r.finished_at, "tasks": tasks})
}

/// The job's one schedule in Metronome's form (a Chronos interval shows as `schedule`).
fn schedule_json(rec: &JobRecord) -> Option<Value> {
    let s = rec.spec.schedule.as_ref()?;
    if s.remaining_after(now()) == Some(0) && rec.status.next_due.is_none() {
        return None;
    }
    let meta = rec.spec.extra.get("metronome");
    let id = meta.and_then(|m| m.get("scheduleId")).cloned().unwrap_or(json!("default"));
    let mut out = json!({
        "id": id,
        "timezone": s.zone().to_string(),
        "startingDeadlineSeconds": rec.spec.epsilon_ms / 1000,
        "concurrencyPolicy": rec.spec.concurrency,
        "enabled": !rec.spec.disabled,
        "nextRunAt": rec.status.next_due,
    });
    match s {
        Schedule::Cron(c, _) => out["cron"] = json!(c.source),
        Schedule::Repeating(..) => out["schedule"] = json!(s.display_after(now())),
    }
    Some(out)
}

fn job_json(state: &MasterState, rec: &JobRecord, params: &Params) -> Value {
    let spec = &rec.spec;
    let meta = spec.extra.get("metronome");
    let env: Map<String, Value> = spec.environment.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let mut run = json!({
        "cmd": spec.command, "args": spec.arguments, "cpus": spec.cpus, "mem": spec.mem, "disk": spec.disk,
        "env": env,
        "restart": {"policy": if spec.retries > 0 { "ON_FAILURE" } else { "NEVER" }},
        "placement": {"constraints": spec.constraints.iter().map(|[a, op, v]| {
            json!({"attribute": a, "operator": if op == "EQUALS" { "IS" } else { op.as_str() }, "value": v})
        }).collect::<Vec<_>>()},
    });
    if let Some(image) = &spec.container_image {
        run["docker"] = json!({"image": image});
    }
    if let Some(u) = &spec.run_as_user {
        run["user"] = json!(u);
    }
    let mut out = json!({
        "id": spec.name, "description": spec.description,
        "labels": meta.and_then(|m| m.get("labels")).cloned().unwrap_or(json!({})),
        "run": run,
        "schedules": schedule_json(rec).into_iter().collect::<Vec<_>>(),
        "dependencies": spec.parents.iter().map(|p| json!({"id": p})).collect::<Vec<_>>(),
    });
    let embeds: Vec<&str> = params.all("embed").collect();
    if embeds.contains(&"activeRuns") {
        out["activeRuns"] = json!(state.active_runs_of(&spec.name).map(run_json).collect::<Vec<_>>());
    }
    if embeds.contains(&"history") || embeds.contains(&"historySummary") {
        let finished: Vec<&JobRun> =
            state.runs.get(&spec.name).into_iter().flat_map(|r| r.values()).filter(|r| !r.state.is_active()).collect();
        let brief = |ok: bool| -> Vec<Value> {
            finished
                .iter()
                .filter(|r| (r.state == RunState::Succeeded) == ok)
                .map(|r| json!({"id": run_id(r), "createdAt": r.not_before, "finishedAt": r.finished_at}))
                .collect()
        };
        let mut h = json!({
            "successCount": rec.status.success_count, "failureCount": rec.status.error_count,
            "lastSuccessAt": rec.status.last_success, "lastFailureAt": rec.status.last_error,
        });
        if embeds.contains(&"history") {
            h["successfulFinishedRuns"] = json!(brief(true));
            h["failedFinishedRuns"] = json!(brief(false));
        }
        out["history"] = h;
    }
    out
}

async fn list(State(st): State<AppState>, params: Params) -> Json<Value> {
    let state = st.master.read().await;
    Json(Value::Array(state.jobs.values().map(|j| job_json(&state, j, &params)).collect()))
}

async fn get_one(State(st): State<AppState>, Path(id): Path<String>, params: Params) -> ApiResult<Json<Value>> {
    let name = job_name(&id)?;
    let state = st.master.read().await;
    let rec = state.jobs.get(&name).ok_or_else(|| missing(&name))?;
    Ok(Json(job_json(&state, rec, &params)))
}

/// Stores a parsed job; `create`: 409 if it exists, else 404 if it does not.
async fn store(st: &AppState, body: Value, create: bool, expect: Option<JobName>) -> ApiResult<Value> {
    let parsed = parse(&body)?;
    let name = parsed.spec.name.clone();
    if expect.as_ref().is_some_and(|e| *e != name) {
        return Err(ApiError::Invalid(vec![Violation::new("/id", "must be the job's id in the path")]));
    }
    let n = name.clone();
    st.master
        .write(move |state, now| {
            match (create, state.jobs.contains_key(&n)) {
                (true, true) => return Err(MasterError::JobExists(n.to_string())),
                (false, false) => return Err(MasterError::JobNotFound(n.to_string())),
                _ => {}
            }
            // Counters are the job's own, not reset as a Chronos upsert would.
            let kept = state.jobs.get(&n).map(|j| j.status.clone()).unwrap_or_default();
            plans::put_job(state, now, parsed.spec, kept)
        })
        .await?;
    st.master.wake();
    let state = st.master.read().await;
    let rec = state.jobs.get(&name).ok_or_else(|| missing(&name))?;
    Ok(job_json(&state, rec, &Params(vec![])))
}

async fn create(State(st): State<AppState>, JsonBody(body): JsonBody) -> ApiResult<Response> {
    let out = store(&st, body, true, None).await?;
    let location = format!("/v1/jobs/{}", out["id"].as_str().unwrap_or_default());
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(out)).into_response())
}

async fn replace(
    State(st): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let name = job_name(&id)?;
    Ok(Json(store(&st, body, false, Some(name)).await?))
}

/// `DELETE /v1/jobs/{id}`: 409 while runs are active, unless `stopCurrentJobRuns=true`.
async fn remove(State(st): State<AppState>, Path(id): Path<String>, params: Params) -> ApiResult<Json<Value>> {
    let name = job_name(&id)?;
    let stop = params.flag("stopCurrentJobRuns", false)?;
    let shown = {
        let state = st.master.read().await;
        let rec = state.jobs.get(&name).ok_or_else(|| missing(&name))?;
        job_json(&state, rec, &params)
    };
    st.master.write(move |state, now| plans::delete_job(state, now, &name, !stop)).await?;
    st.master.wake();
    Ok(Json(shown))
}

async fn schedules(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let name = job_name(&id)?;
    let state = st.master.read().await;
    let rec = state.jobs.get(&name).ok_or_else(|| missing(&name))?;
    Ok(Json(Value::Array(schedule_json(rec).into_iter().collect())))
}

async fn schedule_one(State(st): State<AppState>, Path((id, sid)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    let name = job_name(&id)?;
    let state = st.master.read().await;
    let rec = state.jobs.get(&name).ok_or_else(|| missing(&name))?;
    schedule_json(rec)
        .filter(|s| s["id"] == sid.as_str())
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("Schedule '{sid}' of job '{name}' does not exist")))
}

/// Changes the job's schedule. The job is edited in its Chronos form, so every field
/// Metronome's form does not show (retry delays, `softError`, ...) is kept.
async fn set_schedule(st: &AppState, name: JobName, schedule: Option<Value>) -> ApiResult<()> {
    let mut doc = {
        let state = st.master.read().await;
        let rec = state.jobs.get(&name).ok_or_else(|| missing(&name))?;
        super::dto::job::job_json(rec, now())
    };
    let Some(obj) = doc.as_object_mut() else { return Err(ApiError::Internal("a job renders as an object".into())) };
    for k in ["schedule", "cron", "scheduleTimeZone", "timezone", "nextRunAt"] {
        obj.remove(k);
    }
    let mut errors = Vec::new();
    match &schedule {
        Some(s) => {
            for k in ["parents", "epsilon", "concurrencyPolicy", "concurrent", "disabled"] {
                obj.remove(k);
            }
            apply_schedule(obj, s, &mut errors);
            let meta = obj.entry("metronome").or_insert(json!({}));
            meta["scheduleId"] = s.get("id").cloned().unwrap_or(json!("default"));
        }
        None => {
            obj.insert("schedule".into(), json!("R0//PT24H"));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let parsed = parse_job(doc, now()).map_err(|v| {
        ApiError::Invalid(v.into_iter().map(|x| Violation::new(metronome_path(&x.path), x.message)).collect())
    })?;
    st.master
        .write(move |state, now| {
            let kept =
                state.jobs.get(&name).map(|j| j.status.clone()).ok_or(MasterError::JobNotFound(name.to_string()))?;
            plans::put_job(state, now, parsed.spec, kept)
        })
        .await?;
    st.master.wake();
    Ok(())
}

async fn add_schedule(
    State(st): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let name = job_name(&id)?;
    let has = st.master.read().await.jobs.get(&name).and_then(schedule_json).is_some();
    if has {
        return Err(ApiError::Conflict(format!("Job '{name}' has a schedule already: a job has at most one")));
    }
    set_schedule(&st, name, Some(body.clone())).await?;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn replace_schedule(
    State(st): State<AppState>,
    Path((id, sid)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let name = job_name(&id)?;
    let mut body = body;
    body["id"] = json!(sid);
    set_schedule(&st, name, Some(body.clone())).await?;
    Ok(Json(body))
}

async fn remove_schedule(State(st): State<AppState>, Path((id, sid)): Path<(String, String)>) -> ApiResult<Response> {
    let name = job_name(&id)?;
    let has = st.master.read().await.jobs.get(&name).and_then(schedule_json).is_some_and(|s| s["id"] == sid.as_str());
    if !has {
        return Err(ApiError::NotFound(format!("Schedule '{sid}' of job '{name}' does not exist")));
    }
    set_schedule(&st, name, None).await?;
    Ok(StatusCode::OK.into_response())
}

async fn active_runs(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let name = job_name(&id)?;
    let state = st.master.read().await;
    if !state.jobs.contains_key(&name) {
        return Err(missing(&name));
    }
    Ok(Json(Value::Array(state.active_runs_of(&name).map(run_json).collect())))
}

async fn start_run(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let name = job_name(&id)?;
    let run = st.master.write(move |state, now| plans::run_now(state, now, &name, None)).await?;
    st.master.wake();
    Ok((StatusCode::CREATED, Json(run_json(&run))).into_response())
}

async fn run_one(State(st): State<AppState>, Path((id, rid)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    let name = job_name(&id)?;
    let state = st.master.read().await;
    let run = run_key(&name, &rid).and_then(|k| state.run(&k).cloned());
    run.map(|r| Json(run_json(&r)))
        .ok_or_else(|| ApiError::NotFound(format!("Run '{rid}' of job '{name}' does not exist")))
}

async fn stop_run(State(st): State<AppState>, Path((id, rid)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    let name = job_name(&id)?;
    let key = run_key(&name, &rid).ok_or_else(|| ApiError::NotFound(format!("Run '{rid}' does not exist")))?;
    let k = key.clone();
    st.master.stop_job_run(k).await?;
    let state = st.master.read().await;
    let run = state.run(&key).cloned().ok_or_else(|| ApiError::NotFound(format!("Run '{rid}' does not exist")))?;
    Ok(Json(run_json(&run)))
}
