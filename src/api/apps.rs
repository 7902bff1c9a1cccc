//! `/v2/apps`: list, create, read, update (PUT/PATCH, partial or full, rollback),
//! delete, restart, versions, and an app's tasks and task logs.
//!
//! App ids contain slashes, so everything below `/v2/apps/` arrives in one catch-all and
//! is split by [`AppRoute::parse`]: the reserved last segments (`restart`, `tasks`,
//! `versions`) cannot be app ids, which keeps this unambiguous.

use super::dto::app::{app_json, merge_update, parse_app, rollback_version, Embed};
use super::dto::task::{task_json, tasks_text};
use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, Origin, Params};
use super::{wants_text, AppState};
use crate::domain::{Deployment, PathId, TaskId, Timestamp};
use crate::master::{plans, MasterError};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// How often a concurrent change to the same app is retried before answering 409.
const WRITE_RETRIES: usize = 5;

enum AppRoute {
    App(PathId),
    GroupApps(PathId),
    Restart(PathId),
    Tasks(PathId),
    Task(PathId, String),
    TaskLogs(PathId, String),
    Versions(PathId),
    Version(PathId, String),
}

impl AppRoute {
    fn parse(rest: &str) -> ApiResult<AppRoute> {
        let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let app = |n: usize| -> Option<PathId> {
            if segs.len() <= n {
                return None;
            }
            PathId::parse_app(&segs[..segs.len() - n].join("/")).ok()
        };
        let last = |i: usize| segs.len().checked_sub(i + 1).map(|j| segs[j]);
        let route = match (last(0), last(1), last(2)) {
            (Some("*"), _, _) => {
                let g = PathId::parse_relative(&segs[..segs.len() - 1].join("/"), &PathId::root())
                    .map_err(|e| invalid_id(&e))?;
                return Ok(AppRoute::GroupApps(g));
            }
            (Some("restart"), _, _) => app(1).map(AppRoute::Restart),
            (Some("tasks"), _, _) => app(1).map(AppRoute::Tasks),
            (Some("logs"), Some(t), Some("tasks")) => app(3).map(|a| AppRoute::TaskLogs(a, t.to_string())),
            (Some(t), Some("tasks"), _) => app(2).map(|a| AppRoute::Task(a, t.to_string())),
            (Some("versions"), _, _) => app(1).map(AppRoute::Versions),
            (Some(v), Some("versions"), _) => app(2).map(|a| AppRoute::Version(a, v.to_string())),
            _ => None,
        };
        match route {
            Some(r) => Ok(r),
            None => PathId::parse_app(rest).map(AppRoute::App).map_err(|e| invalid_id(&e)),
        }
    }
}

fn invalid_id(e: &crate::domain::IdError) -> ApiError {
    ApiError::Invalid(vec![crate::domain::Violation::new("/id", e.to_string())])
}

fn not_allowed() -> ApiError {
    ApiError::BadRequest("this method is not supported on this path".into())
}

/// Marathon's answer to every change: `{deploymentId, version}` and the header.
pub(super) fn deployment_result(status: StatusCode, d: &Deployment) -> Response {
    let mut resp = (status, Json(json!({"deploymentId": d.id, "version": d.version}))).into_response();
    if let Ok(v) = HeaderValue::from_str(&d.id) {
        resp.headers_mut().insert("marathon-deployment-id", v);
    }
    resp
}

// ---------------------------------------------------------------- list and create

/// Label selector (reference 1.3): `key`, `key==v`, `key!=v`, `key in (a,b)`,
/// `key notin (a,b)`, comma-separated, all must hold.
fn label_matches(selector: &str, labels: &BTreeMap<String, String>) -> bool {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in selector.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()).all(|p| {
        let set = |s: &str| -> Vec<String> {
            s.trim().trim_start_matches('(').trim_end_matches(')').split(',').map(|x| x.trim().to_string()).collect()
        };
        if let Some((k, v)) = p.split_once("==") {
            labels.get(k.trim()).is_some_and(|x| x == v.trim())
        } else if let Some((k, v)) = p.split_once("!=") {
            labels.get(k.trim()).is_none_or(|x| x != v.trim())
        } else if let Some((k, v)) = p.split_once(" notin ") {
            labels.get(k.trim()).is_none_or(|x| !set(v).contains(x))
        } else if let Some((k, v)) = p.split_once(" in ") {
            labels.get(k.trim()).is_some_and(|x| set(v).contains(x))
        } else {
            labels.contains_key(p)
        }
    })
}

pub async fn list(State(st): State<AppState>, params: Params) -> ApiResult<Json<Value>> {
    let embed = Embed::parse(params.all("embed"), false);
    let id_filter = params.get("id").map(str::to_lowercase);
    let cmd_filter = params.get("cmd").map(str::to_lowercase);
    let label = params.get("label");
    let state = st.master.read().await;
    let apps: Vec<Value> = state
        .apps
        .values()
        .filter(|r| id_filter.as_ref().is_none_or(|f| r.current.spec.id.to_string().contains(f.as_str())))
        .filter(|r| {
            cmd_filter
                .as_ref()
                .is_none_or(|f| r.current.spec.cmd.as_deref().unwrap_or("").to_lowercase().contains(f.as_str()))
        })
        .filter(|r| label.is_none_or(|l| label_matches(l, &r.current.spec.labels)))
        .map(|r| app_json(r, &state, embed))
        .collect();
    Ok(Json(json!({ "apps": apps })))
}

pub async fn create(State(st): State<AppState>, origin: Origin, JsonBody(body): JsonBody) -> ApiResult<Response> {
    let (body, dep) = create_app(&st, body, origin).await?;
    let id = body["id"].as_str().unwrap_or_default().to_string();
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v2/apps{id}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&dep.id) {
        resp.headers_mut().insert("marathon-deployment-id", v);
    }
    Ok(resp)
}

/// Creates an app from its JSON definition (the API's POST and the UI's form): the
/// stored app as JSON, and its deployment.
pub async fn create_app(st: &AppState, body: Value, origin: Origin) -> ApiResult<(Value, Deployment)> {
    let spec = parse_app(body, None)?;
    st.master.admit(&spec)?;
    let id = spec.id.clone();
    let dep = st.master.write(move |state, now| plans::create_app(state, now, spec)).await?;
    st.master.wake();
    let state = st.master.read().await;
    let body = match state.apps.get(&id) {
        Some(rec) => app_json(rec, &state, Embed::default()),
        None => json!({"id": id}),
    };
    drop(state);
    posted(st, origin, body.clone());
    Ok((body, dep))
}

// ---------------------------------------------------------------- the catch-all

pub async fn get_route(
    State(st): State<AppState>,
    Path(rest): Path<String>,
    params: Params,
    headers: HeaderMap,
) -> ApiResult<Response> {
    match AppRoute::parse(&rest)? {
        AppRoute::App(id) => {
            let state = st.master.read().await;
            let rec = state.apps.get(&id).ok_or(MasterError::AppNotFound(id))?;
            Ok(Json(json!({"app": app_json(rec, &state, Embed::parse(params.all("embed"), true))})).into_response())
        }
        AppRoute::GroupApps(group) => {
            let state = st.master.read().await;
            let embed = Embed::parse(params.all("embed"), false);
            let apps: Vec<Value> = state
                .apps
                .values()
                .filter(|r| r.current.spec.id.is_within(&group))
                .map(|r| app_json(r, &state, embed))
                .collect();
            Ok(Json(json!({"*": apps})).into_response())
        }
        AppRoute::Tasks(id) => app_tasks(&st, id, &headers).await,
        AppRoute::TaskLogs(id, task) => task_logs(&st, id, &task, &params).await,
        AppRoute::Versions(id) => {
            let state = st.master.read().await;
            let rec = state.apps.get(&id).ok_or(MasterError::AppNotFound(id))?;
            let mut vs = rec.versions.clone();
            vs.reverse();
            Ok(Json(json!({"versions": vs})).into_response())
        }
        AppRoute::Version(id, v) => {
            let ts = Timestamp::parse(&v).ok_or_else(|| MasterError::VersionNotFound(id.clone(), v.clone()))?;
            let found = st.master.store().app_version(&id, ts).await.map_err(MasterError::from)?;
            let av = found.ok_or(MasterError::VersionNotFound(id, v))?;
            let mut out = serde_json::to_value(&av.spec).unwrap_or_default();
            out["version"] = json!(av.version);
            out["versionInfo"] = json!(av.version_info);
            Ok(Json(out).into_response())
        }
        AppRoute::Restart(_) | AppRoute::Task(..) => Err(not_allowed()),
    }
}

pub async fn put_route(
    State(st): State<AppState>,
    Path(rest): Path<String>,
    params: Params,
    origin: Origin,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    match AppRoute::parse(&rest)? {
        AppRoute::App(id) => {
            let how = Update {
                partial: params.flag("partialUpdate", true)?,
                must_exist: false,
                force: params.flag("force", false)?,
            };
            let (dep, created) = update(&st, id, body, how, origin).await?;
            Ok(deployment_result(if created { StatusCode::CREATED } else { StatusCode::OK }, &dep))
        }
        _ => Err(not_allowed()),
    }
}

pub async fn patch_route(
    State(st): State<AppState>,
    Path(rest): Path<String>,
    params: Params,
    origin: Origin,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    match AppRoute::parse(&rest)? {
        AppRoute::App(id) => {
            let how = Update { partial: true, must_exist: true, force: params.flag("force", false)? };
            let (dep, _) = update(&st, id, body, how, origin).await?;
            Ok(deployment_result(StatusCode::OK, &dep))
        }
        _ => Err(not_allowed()),
    }
}

pub async fn delete_route(State(st): State<AppState>, Path(rest): Path<String>, params: Params) -> ApiResult<Response> {
    match AppRoute::parse(&rest)? {
        AppRoute::App(id) => {
            let dep = delete_app(&st, id, params.flag("force", false)?).await?;
            Ok(deployment_result(StatusCode::OK, &dep))
        }
        AppRoute::Tasks(id) => {
            let host = params.get("host").map(str::to_string);
            let ids: Vec<TaskId> = {
                let state = st.master.read().await;
                if !state.apps.contains_key(&id) {
                    return Err(MasterError::AppNotFound(id).into());
                }
                state
                    .tasks_of(&id)
                    .filter(|t| t.is_active())
                    .filter(|t| host.as_deref().is_none_or(|h| h == "*" || h == t.host))
                    .map(|t| t.id.clone())
                    .collect()
            };
            kill_tasks(&st, ids, &params, false).await
        }
        AppRoute::Task(id, task) => {
            let task_id: TaskId =
                task.parse().map_err(|_| ApiError::NotFound(format!("Task '{task}' does not exist")))?;
            if !task_id.belongs_to(&id) {
                return Err(ApiError::NotFound(format!("Task '{task}' does not exist")));
            }
            kill_tasks(&st, vec![task_id], &params, true).await
        }
        _ => Err(not_allowed()),
    }
}

pub async fn post_route(State(st): State<AppState>, Path(rest): Path<String>, params: Params) -> ApiResult<Response> {
    match AppRoute::parse(&rest)? {
        AppRoute::Restart(id) => {
            let dep = restart_app(&st, id, params.flag("force", false)?).await?;
            Ok(deployment_result(StatusCode::OK, &dep))
        }
        _ => Err(not_allowed()),
    }
}

// ---------------------------------------------------------------- changes

/// Announces an app created or changed through the API (`api_post_event`).
fn posted(st: &AppState, origin: Origin, app_definition: Value) {
    let Origin { client_ip, uri } = origin;
    let event = crate::domain::event::EventKind::ApiPost { client_ip, uri, app_definition };
    st.master.events().publish(&event.at(crate::master::now()));
}

/// How a PUT or PATCH applies.
pub struct Update {
    /// Merge the body into the current definition (Marathon's `partialUpdate`).
    pub partial: bool,
    /// 404 instead of creating (PATCH).
    pub must_exist: bool,
    /// Override the lock of a running deployment (`force=true`).
    pub force: bool,
}

/// PUT (create or update, partial by default, or rollback) and PATCH (partial update of
/// an existing app), and the UI's scale, suspend, edit and rollback: the deployment, and
/// whether the app was created.
pub async fn update(
    st: &AppState,
    id: PathId,
    body: Value,
    how: Update,
    origin: Origin,
) -> ApiResult<(Deployment, bool)> {
    let Update { partial, must_exist, force } = how;
    let rollback = match rollback_version(&body) {
        Some(v) => {
            let ts = Timestamp::parse(v).ok_or_else(|| MasterError::VersionNotFound(id.clone(), v.to_string()))?;
            let found = st.master.store().app_version(&id, ts).await.map_err(MasterError::from)?;
            Some(found.ok_or_else(|| MasterError::VersionNotFound(id.clone(), v.to_string()))?.spec)
        }
        None => None,
    };
    for _ in 0..WRITE_RETRIES {
        let (base, spec) = {
            let state = st.master.read().await;
            let cur = state.apps.get(&id);
            if cur.is_none() && (must_exist || rollback.is_some()) {
                return Err(MasterError::AppNotFound(id).into());
            }
            let spec = match (&rollback, cur) {
                (Some(old), _) => old.clone(),
                (None, Some(rec)) if partial => parse_app(merge_update(&rec.current.spec, body.clone())?, Some(&id))?,
                (None, _) => parse_app(body.clone(), Some(&id))?,
            };
            (cur.map(|r| r.current.version), spec)
        };
        st.master.admit(&spec)?;
        let result = st.master.write(move |state, now| plans::put_app(state, now, spec, base, force)).await;
        match result {
            Err(MasterError::Retry) => continue,
            Err(e) => return Err(e.into()),
            Ok((dep, created)) => {
                st.master.wake();
                let definition = {
                    let state = st.master.read().await;
                    state.apps.get(&id).map(|rec| app_json(rec, &state, Embed::default()))
                };
                if let Some(definition) = definition {
                    posted(st, origin, definition);
                }
                return Ok((dep, created));
            }
        }
    }
    Err(MasterError::Retry.into())
}

pub async fn delete_app(st: &AppState, id: PathId, force: bool) -> ApiResult<Deployment> {
    let dep = st.master.write(move |state, now| plans::delete_app(state, now, id, force)).await?;
    st.master.wake();
    Ok(dep)
}

pub async fn restart_app(st: &AppState, id: PathId, force: bool) -> ApiResult<Deployment> {
    let dep = st.master.write(move |state, now| plans::restart_app(state, now, id, force)).await?;
    st.master.wake();
    Ok(dep)
}

/// Kills tasks. With `scale=true` the app's instance count drops by the number killed
/// (a new version and deployment); otherwise they are replaced. `wipe` forgets the
/// instances (no resident state yet, so it behaves like a plain kill).
pub async fn kill_tasks(st: &AppState, ids: Vec<TaskId>, params: &Params, single: bool) -> ApiResult<Response> {
    let scale = params.flag("scale", false)?;
    let wipe = params.flag("wipe", false)?;
    if scale && wipe {
        return Err(ApiError::BadRequest("scale and wipe cannot be used together".into()));
    }
    let force = params.flag("force", false)?;
    let (killed, dep) =
        st.master.write(move |state, now| plans::kill_tasks(state, now, &ids, scale, single, force)).await?;
    st.master.wake();
    if scale {
        return Ok(match &dep {
            Some(d) => deployment_result(StatusCode::OK, d),
            None => Json(json!({"deploymentId": null, "version": null})).into_response(),
        });
    }
    let tasks: Vec<Value> = killed.iter().map(|(t, sp)| task_json(t, sp, None)).collect();
    if single {
        if let Some(t) = tasks.into_iter().next() {
            return Ok(Json(json!({ "task": t })).into_response());
        }
        return Err(ApiError::NotFound("Task does not exist".into()));
    }
    Ok(Json(json!({ "tasks": tasks })).into_response())
}

// ---------------------------------------------------------------- reads

async fn app_tasks(st: &AppState, id: PathId, headers: &HeaderMap) -> ApiResult<Response> {
    let state = st.master.read().await;
    let apps: Vec<&crate::master::state::AppRecord> = if id.segments().last().map(String::as_str) == Some("*") {
        vec![]
    } else {
        vec![state.apps.get(&id).ok_or_else(|| MasterError::AppNotFound(id.clone()))?]
    };
    if wants_text(headers) {
        let text = tasks_text(apps.iter().map(|r| (&r.current.spec, state.tasks_of(&r.current.spec.id).collect())));
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response());
    }
    let tasks: Vec<Value> = apps
        .iter()
        .flat_map(|r| {
            let sp = r.current.spec.service_ports();
            state
                .tasks_of(&r.current.spec.id)
                .filter(|t| t.is_active())
                .map(|t| task_json(t, &sp, state.health.get(&t.id)))
                .collect::<Vec<_>>()
        })
        .collect();
    Ok(Json(json!({ "tasks": tasks })).into_response())
}

/// `GET /v2/apps/{id}/tasks/{taskId}/logs?stream=stdout|stderr&offset=&length=`: a byte
/// range of the task's output (at most 1 MiB), read from whichever agent ran the task.
/// `offset` may be negative (from the end); the total size is in `X-Dromos-Log-Size`
/// and the start of the range in `X-Dromos-Log-Offset`, so a client can follow the log.
async fn task_logs(st: &AppState, id: PathId, task: &str, params: &Params) -> ApiResult<Response> {
    use crate::agent::protocol::LogStream;
    use crate::master::logs::LogError;
    let task_id: TaskId = task.parse().map_err(|_| ApiError::NotFound(format!("Task '{task}' does not exist")))?;
    if !task_id.belongs_to(&id) {
        return Err(ApiError::NotFound(format!("Task '{task}' does not exist")));
    }
    let stream = match params.get("stream").unwrap_or("stdout") {
        "stdout" => LogStream::Stdout,
        "stderr" => LogStream::Stderr,
        other => return Err(ApiError::BadRequest(format!("stream must be stdout or stderr, not '{other}'"))),
    };
    let parse = |k: &str| -> ApiResult<Option<i64>> {
        params
            .get(k)
            .map(|v| v.parse::<i64>().map_err(|_| ApiError::BadRequest(format!("{k} must be an integer"))))
            .transpose()
    };
    let offset = parse("offset")?.unwrap_or(0);
    let length = parse("length")?.unwrap_or(64 * 1024).clamp(0, crate::agent::MAX_LOG_CHUNK as i64) as u64;
    let chunk = st.master.read_log(&id, &task_id, stream, offset, length).await.map_err(|e| match e {
        LogError::NotFound(m) => ApiError::NotFound(m),
        e @ (LogError::AgentUnavailable(_) | LogError::AgentSilent(_)) => ApiError::Unavailable(e.to_string()),
    })?;
    let mut resp = ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], chunk.data).into_response();
    for (k, v) in [("x-dromos-log-size", chunk.size), ("x-dromos-log-offset", chunk.offset)] {
        if let Ok(v) = HeaderValue::from_str(&v.to_string()) {
            resp.headers_mut().insert(k, v);
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors() {
        let l: BTreeMap<String, String> =
            [("env".to_string(), "prod".to_string()), ("tier".to_string(), "web".to_string())].into();
        assert!(label_matches("env", &l));
        assert!(label_matches("env==prod,tier!=db", &l));
        assert!(!label_matches("env==dev", &l));
        assert!(label_matches("env in (dev, prod)", &l));
        assert!(label_matches("tier notin (db,cache)", &l));
        assert!(!label_matches("missing", &l));
    }

    #[test]
    fn routes_split_on_reserved_words() {
        assert!(matches!(AppRoute::parse("shop/web").unwrap(), AppRoute::App(id) if id.to_string() == "/shop/web"));
        assert!(matches!(AppRoute::parse("shop/web/restart").unwrap(), AppRoute::Restart(_)));
        assert!(
            matches!(AppRoute::parse("web/tasks/web.instance-x._app.1").unwrap(), AppRoute::Task(_, t) if t == "web.instance-x._app.1")
        );
        assert!(matches!(AppRoute::parse("web/tasks/t.1/logs").unwrap(), AppRoute::TaskLogs(..)));
        assert!(matches!(AppRoute::parse("web/versions/2020-01-01T00:00:00.000Z").unwrap(), AppRoute::Version(..)));
        assert!(matches!(AppRoute::parse("shop/*").unwrap(), AppRoute::GroupApps(g) if g.to_string() == "/shop"));
        assert!(AppRoute::parse("../etc").is_err());
    }
}
