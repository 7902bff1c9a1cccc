//! `/v2/groups`: read the app tree by group, and create, change, scale, roll back and
//! delete whole groups. Every change is one deployment made by the same planner as app
//! changes; `dryRun=true` answers with its steps and changes nothing.
//!
//! Group ids contain slashes, so everything below `/v2/groups/` arrives in one
//! catch-all; a last segment `versions` (or `versions/{v}`) names the group's history,
//! and a last segment `apps` the apps anywhere beneath the group (as in Marathon, this
//! shadows an app or group named `apps`).

use super::apps::deployment_result;
use super::deployments::steps_json;
use super::dto::group::{apps_within_json, group_json, parse_group, parse_group_request, GroupEmbed, GroupRequest};
use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, Params};
use super::AppState;
use crate::domain::{PathId, Timestamp};
use crate::master::groups::{self as plans, GroupChange, GroupUpdate};
use crate::master::state::State as MasterState;
use crate::master::MasterError;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

enum GroupRoute {
    Group(PathId),
    Versions(PathId),
    Version(PathId, String),
    Apps(PathId),
}

impl GroupRoute {
    /// The route below `/v2/groups` (none: the root group).
    fn of(rest: Option<Path<String>>) -> ApiResult<GroupRoute> {
        GroupRoute::parse(rest.as_ref().map_or("", |p| p.0.as_str()))
    }

    fn parse(rest: &str) -> ApiResult<GroupRoute> {
        let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let group = |n: usize| -> ApiResult<PathId> {
            PathId::parse_relative(&segs[..segs.len() - n].join("/"), &PathId::root())
                .map_err(|e| ApiError::Invalid(vec![crate::domain::Violation::new("/id", e.to_string())]))
        };
        match segs.as_slice() {
            [] => Ok(GroupRoute::Group(PathId::root())),
            [.., "versions"] => Ok(GroupRoute::Versions(group(1)?)),
            [.., "versions", v] => Ok(GroupRoute::Version(group(2)?, v.to_string())),
            [.., "apps"] => Ok(GroupRoute::Apps(group(1)?)),
            _ => Ok(GroupRoute::Group(group(0)?)),
        }
    }

    fn group_only(self) -> ApiResult<PathId> {
        match self {
            GroupRoute::Group(id) => Ok(id),
            _ => Err(ApiError::BadRequest("this method is not supported on this path".into())),
        }
    }
}

fn not_found(id: &PathId) -> ApiError {
    MasterError::GroupNotFound(id.clone()).into()
}

fn render(st: &AppState, state: &MasterState, id: &PathId, params: &Params) -> ApiResult<Json<Value>> {
    if !state.tree().has_group(id) {
        return Err(not_found(id));
    }
    Ok(Json(group_json(state, id, GroupEmbed::parse(params.all("embed")), st.master.started_at())))
}

pub async fn get(State(st): State<AppState>, rest: Option<Path<String>>, params: Params) -> ApiResult<Response> {
    match GroupRoute::of(rest)? {
        GroupRoute::Group(id) => {
            let state = st.master.read().await;
            Ok(render(&st, &state, &id, &params)?.into_response())
        }
        GroupRoute::Versions(id) => {
            let state = st.master.read().await;
            if !state.tree().has_group(&id) {
                return Err(not_found(&id));
            }
            let mut vs = state.group_versions.get(&id).cloned().unwrap_or_default();
            vs.reverse();
            Ok(Json(json!(vs)).into_response())
        }
        GroupRoute::Apps(id) => {
            let state = st.master.read().await;
            if !state.tree().has_group(&id) {
                return Err(not_found(&id));
            }
            Ok(Json(apps_within_json(&state, &id, GroupEmbed::parse(params.all("embed")))).into_response())
        }
        GroupRoute::Version(id, v) => {
            let old = stored_version(&st, &id, &v).await?;
            let version = old.version;
            let state = MasterState::of_group_version(old);
            let mut out = group_json(&state, &id, GroupEmbed::parse(params.all("embed")), version);
            out["version"] = json!(version);
            Ok(Json(out).into_response())
        }
    }
}

async fn stored_version(st: &AppState, id: &PathId, v: &str) -> ApiResult<crate::domain::GroupVersion> {
    let missing = || ApiError::NotFound(format!("Version '{v}' of group '{id}' does not exist"));
    let ts = Timestamp::parse(v).ok_or_else(missing)?;
    st.master.store().group_version(id, ts).await.map_err(MasterError::from)?.ok_or_else(missing)
}

pub async fn post(
    State(st): State<AppState>,
    rest: Option<Path<String>>,
    params: Params,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let base = GroupRoute::of(rest)?.group_only()?;
    let force = params.flag("force", false)?;
    let update = parse_group(body, &base)?;
    if update.id.is_root() {
        return Err(ApiError::Invalid(vec![crate::domain::Violation::new(
            "/id",
            "the root group always exists; use PUT",
        )]));
    }
    admit_all(&st, &update)?;
    let id = update.id.clone();
    let dep = st.master.write(move |state, now| plans::create_group(state, now, update, force)).await?;
    st.master.wake();
    let mut resp = deployment_result(StatusCode::CREATED, &dep);
    if let Ok(v) = HeaderValue::from_str(&format!("/v2/groups{id}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

fn admit_all(st: &AppState, u: &GroupUpdate) -> ApiResult<()> {
    for spec in u.apps.iter().flatten() {
        st.master.admit(spec)?;
    }
    u.groups.iter().flatten().try_for_each(|g| admit_all(st, g))
}

pub async fn put(
    State(st): State<AppState>,
    rest: Option<Path<String>>,
    params: Params,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let base = GroupRoute::of(rest)?.group_only()?;
    let force = params.flag("force", false)?;
    let dry_run = params.flag("dryRun", false)?;
    let request = parse_group_request(body, &base)?;
    let change = match request {
        GroupRequest::Version(v) => GroupChange::RollBack(stored_version(&st, &base, &v).await?),
        GroupRequest::ScaleBy(f) => GroupChange::ScaleBy(base, f),
        GroupRequest::Update(u) => {
            admit_all(&st, &u)?;
            GroupChange::Update(u)
        }
    };
    let plan = move |state: &MasterState, now| plans::change_group(state, now, change, force);
    if dry_run {
        // The same plan against the same state, with its changes dropped.
        let dep = st.master.write(move |state, now| plan(state, now).map(|(_, d)| (vec![], d))).await?;
        return Ok(Json(json!({ "steps": steps_json(&dep) })).into_response());
    }
    let dep = st.master.write(plan).await?;
    st.master.wake();
    Ok(deployment_result(StatusCode::OK, &dep))
}

pub async fn patch(
    State(st): State<AppState>,
    rest: Option<Path<String>>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let id = GroupRoute::of(rest)?.group_only()?;
    let enforce = match body.get("enforceRole") {
        Some(Value::Bool(b)) => *b,
        _ => {
            return Err(ApiError::Invalid(vec![crate::domain::Violation::new(
                "/enforceRole",
                "expected {\"enforceRole\": true|false}",
            )]))
        }
    };
    let target = id.clone();
    st.master.write(move |state, now| plans::set_enforce_role(state, now, target, enforce)).await?;
    let state = st.master.read().await;
    Ok(render(&st, &state, &id, &Params::default())?.into_response())
}

pub async fn delete(State(st): State<AppState>, rest: Option<Path<String>>, params: Params) -> ApiResult<Response> {
    let id = GroupRoute::of(rest)?.group_only()?;
    let force = params.flag("force", false)?;
    let dep = st.master.write(move |state, now| plans::delete_group(state, now, id, force)).await?;
    st.master.wake();
    Ok(deployment_result(StatusCode::OK, &dep))
}
