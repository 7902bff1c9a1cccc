//! The HTTP API (axum): Marathon's `/v2` surface (apps, groups, tasks, deployments, queue,
//! the `/v2/events` stream),
//! Chronos's job API (`/scheduler`, `/v1/scheduler`) and Metronome's (`/v1/jobs`), the
//! agents (`/v1/agents`, and the agent protocol's `/v1/agent/stream`), `/ping` and
//! `/metrics`.
//!
//! `router(state)` builds the routes; serving is `server`'s job. Middleware adds
//! authentication (bearer token or Basic with the token as password), Marathon's
//! response headers, and answers unknown routes in our error format.

pub mod agents;
pub mod apps;
pub mod deployments;
pub mod dto;
pub mod error;
pub mod events;
pub mod extract;
pub mod forward;
pub mod groups;
pub mod jobs;
pub mod metronome;
pub mod queue;
pub mod system;
pub mod tasks;

use crate::master::Master;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use error::ApiError;
use std::sync::Arc;

/// Shared by all handlers.
#[derive(Clone)]
pub struct AppState {
    pub master: Arc<Master>,
    /// Bearer token every request must carry, if configured.
    pub token: Option<Arc<str>>,
    /// `host:port` this instance answers on (reported as the leader).
    pub leader: Arc<str>,
    /// The leadership signal (`DELETE /v2/leader` abdicates).
    pub leadership: crate::master::leadership::Leadership,
    pub store_backend: &'static str,
    /// The web UI's signed sessions and CSRF tokens (keyed by `token`).
    pub sessions: Arc<crate::web::session::Sessions>,
}

/// Every public route, as documented in api-spec/openapi.yaml. A test keeps this list,
/// the spec and the router equal.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/ping"),
    ("GET", "/metrics"),
    ("GET", "/v2/info"),
    ("GET", "/v2/leader"),
    ("DELETE", "/v2/leader"),
    ("GET", "/v2/apps"),
    ("POST", "/v2/apps"),
    ("GET", "/v2/apps/{appId}"),
    ("PUT", "/v2/apps/{appId}"),
    ("PATCH", "/v2/apps/{appId}"),
    ("DELETE", "/v2/apps/{appId}"),
    ("GET", "/v2/apps/{groupId}/*"),
    ("POST", "/v2/apps/{appId}/restart"),
    ("GET", "/v2/apps/{appId}/tasks"),
    ("DELETE", "/v2/apps/{appId}/tasks"),
    ("DELETE", "/v2/apps/{appId}/tasks/{taskId}"),
    ("GET", "/v2/apps/{appId}/tasks/{taskId}/logs"),
    ("GET", "/v2/apps/{appId}/versions"),
    ("GET", "/v2/apps/{appId}/versions/{version}"),
    ("GET", "/v2/tasks"),
    ("POST", "/v2/tasks/delete"),
    ("GET", "/v2/groups"),
    ("POST", "/v2/groups"),
    ("PUT", "/v2/groups"),
    ("DELETE", "/v2/groups"),
    ("GET", "/v2/groups/{groupId}"),
    ("POST", "/v2/groups/{groupId}"),
    ("PUT", "/v2/groups/{groupId}"),
    ("PATCH", "/v2/groups/{groupId}"),
    ("DELETE", "/v2/groups/{groupId}"),
    ("GET", "/v2/groups/{groupId}/apps"),
    ("GET", "/v2/groups/{groupId}/versions"),
    ("GET", "/v2/groups/{groupId}/versions/{version}"),
    ("GET", "/v2/deployments"),
    ("DELETE", "/v2/deployments/{deploymentId}"),
    ("GET", "/v2/events"),
    ("POST", "/v2/events"),
    ("GET", "/v2/queue"),
    ("DELETE", "/v2/queue/{appId}/delay"),
    ("GET", "/v1/agents"),
    ("GET", "/v1/agents/{agentId}"),
    ("GET", "/v1/agent/stream"),
    ("GET", "/scheduler/jobs"),
    ("GET", "/scheduler/jobs/search"),
    ("GET", "/scheduler/jobs/summary"),
    ("POST", "/scheduler/iso8601"),
    ("PUT", "/scheduler/iso8601"),
    ("POST", "/scheduler/dependency"),
    ("PUT", "/scheduler/dependency"),
    ("GET", "/scheduler/job/{name}"),
    ("PUT", "/scheduler/job/{name}"),
    ("DELETE", "/scheduler/job/{name}"),
    ("PUT", "/scheduler/job/success/{name}"),
    ("GET", "/scheduler/job/stat/{name}"),
    ("DELETE", "/scheduler/task/kill/{name}"),
    ("GET", "/scheduler/graph/dot"),
    ("GET", "/scheduler/graph/csv"),
    ("GET", "/scheduler/stats/{percentile}"),
    ("GET", "/scheduler/leader"),
    ("GET", "/v1/scheduler/jobs"),
    ("GET", "/v1/scheduler/jobs/search"),
    ("GET", "/v1/scheduler/jobs/summary"),
    ("POST", "/v1/scheduler/iso8601"),
    ("PUT", "/v1/scheduler/iso8601"),
    ("POST", "/v1/scheduler/dependency"),
    ("PUT", "/v1/scheduler/dependency"),
    ("GET", "/v1/scheduler/job/{name}"),
    ("PUT", "/v1/scheduler/job/{name}"),
    ("DELETE", "/v1/scheduler/job/{name}"),
    ("PUT", "/v1/scheduler/job/success/{name}"),
    ("GET", "/v1/scheduler/job/stat/{name}"),
    ("DELETE", "/v1/scheduler/task/kill/{name}"),
    ("GET", "/v1/scheduler/graph/dot"),
    ("GET", "/v1/scheduler/graph/csv"),
    ("GET", "/v1/scheduler/stats/{percentile}"),
    ("GET", "/v1/scheduler/leader"),
    ("GET", "/leader"),
    ("GET", "/v1/jobs"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs/{jobId}"),
    ("PUT", "/v1/jobs/{jobId}"),
    ("DELETE", "/v1/jobs/{jobId}"),
    ("GET", "/v1/jobs/{jobId}/schedules"),
    ("POST", "/v1/jobs/{jobId}/schedules"),
    ("GET", "/v1/jobs/{jobId}/schedules/{scheduleId}"),
    ("PUT", "/v1/jobs/{jobId}/schedules/{scheduleId}"),
    ("DELETE", "/v1/jobs/{jobId}/schedules/{scheduleId}"),
    ("GET", "/v1/jobs/{jobId}/runs"),
    ("POST", "/v1/jobs/{jobId}/runs"),
    ("GET", "/v1/jobs/{jobId}/runs/{runId}"),
    ("POST", "/v1/jobs/{jobId}/runs/{runId}/actions/stop"),
];

pub fn router(state: AppState) -> Router {
    // The root group and the groups below it share handlers (the root has no path).
    let groups_routes =
        get(groups::get).post(groups::post).put(groups::put).patch(groups::patch).delete(groups::delete);
    Router::new()
        .route("/ping", get(system::ping))
        .route("/metrics", get(system::metrics))
        .route("/v2/info", get(system::info))
        .route("/v2/leader", get(system::leader).delete(system::abdicate))
        .route("/v2/apps", get(apps::list).post(apps::create))
        .route(
            "/v2/apps/{*rest}",
            get(apps::get_route)
                .put(apps::put_route)
                .patch(apps::patch_route)
                .delete(apps::delete_route)
                .post(apps::post_route),
        )
        .route("/v2/tasks", get(tasks::list))
        .route("/v2/tasks/delete", post(tasks::delete_many))
        .route("/v2/groups", groups_routes.clone())
        .route("/v2/groups/{*rest}", groups_routes)
        .route("/v2/deployments", get(deployments::list))
        .route("/v2/deployments/{deployment_id}", delete(deployments::delete))
        .route("/v2/events", get(events::stream).post(events::report))
        .route("/v2/queue", get(queue::list))
        .route("/v2/queue/{*rest}", delete(queue::delete_delay))
        .route("/v1/agents", get(agents::list))
        .route("/v1/agents/{agent_id}", get(agents::get_one))
        .route("/v1/agent/stream", get(agents::stream))
        .nest("/scheduler", jobs::routes())
        .nest("/v1/scheduler", jobs::routes())
        .route("/leader", get(system::chronos_leader))
        .merge(metronome::routes())
        .merge(crate::web::router(&state))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), hold_writes_while_recovering))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), marathon_headers))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::NotFound(format!("No route for {} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed(req: Request) -> Response {
    let body =
        serde_json::json!({"message": format!("Method {} is not allowed on {}", req.method(), req.uri().path())});
    (axum::http::StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timing.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Does the `Authorization` header carry `token`?
pub fn authorized(header: Option<&HeaderValue>, token: &str) -> bool {
    use base64::Engine;
    let Some(h) = header.and_then(|h| h.to_str().ok()) else {
        return false;
    };
    if let Some(b) = h.strip_prefix("Bearer ") {
        return same(b.trim().as_bytes(), token.as_bytes());
    }
    if let Some(b) = h.strip_prefix("Basic ") {
        if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(b.trim()) {
            // user:password, with the token as the password (older Marathon clients).
            if let Some(i) = decoded.iter().position(|c| *c == b':') {
                return same(&decoded[i + 1..], token.as_bytes());
            }
        }
    }
    false
}

async fn authenticate(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &st.token {
        let path = req.uri().path();
        // /ping stays open: load balancers and supervisors probe it without credentials.
        // The web pages have their own guard (sign-in page, session cookie, CSRF).
        let open = path == "/ping" || crate::web::is_page(path);
        // A browser signed in to the UI may read the API too (its event stream, logs),
        // but changes through the API need the token itself.
        let reads_with_session = matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD)
            && crate::web::session::from_headers(req.headers())
                .is_some_and(|v| st.sessions.verify(v, crate::web::session::unix_now()).is_some());
        if !open && !reads_with_session && !authorized(req.headers().get(header::AUTHORIZATION), token) {
            let mut resp = ApiError::Unauthorized.into_response();
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"dromos\""));
            return resp;
        }
    }
    next.run(req).await
}

/// After a start, writes wait until the known agents have registered again (bounded),
/// so no decision is made on a half-known cluster: 503 with `Retry-After` (reliability
/// case 7). Reads are served at once.
async fn hold_writes_while_recovering(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let write = !matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    let path = req.uri().path();
    let api = path.starts_with("/v2/") || path.starts_with("/scheduler/") || path.starts_with("/v1/scheduler/");
    // The UI's forms change the same things (signing in and out changes nothing).
    let form = crate::web::is_page(path) && !matches!(path, "/login" | "/logout");
    if write && (api || form) {
        if let Some(r) = st.master.recovering().await {
            let retry = r.left.as_secs().clamp(1, 5);
            let message = format!(
                "dromos is recovering after a start: waiting for {} agent(s) to register again \
                 (at most {} s more); retry shortly",
                r.waiting_for,
                r.left.as_secs() + 1
            );
            let mut resp = if api {
                ApiError::Unavailable(message).into_response()
            } else {
                (axum::http::StatusCode::SERVICE_UNAVAILABLE, message).into_response()
            };
            if let Ok(v) = HeaderValue::from_str(&retry.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return resp;
        }
    }
    next.run(req).await
}

async fn marathon_headers(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store, must-revalidate"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(header::EXPIRES, HeaderValue::from_static("0"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    if let Ok(v) = HeaderValue::from_str(&format!("http://{}", st.leader)) {
        h.insert("x-marathon-leader", v);
    }
    resp
}

/// Marathon's content negotiation for task lists: JSON unless the client accepts
/// text/plain and not JSON.
pub fn wants_text(headers: &axum::http::HeaderMap) -> bool {
    let accept = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()).unwrap_or("");
    accept.contains("text/plain") && !accept.contains("application/json") && !accept.contains("*/*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic() {
        let ok = HeaderValue::from_static("Bearer s3cret");
        assert!(authorized(Some(&ok), "s3cret"));
        assert!(!authorized(Some(&HeaderValue::from_static("Bearer s3cre")), "s3cret"));
        // "marathon:s3cret"
        assert!(authorized(Some(&HeaderValue::from_static("Basic bWFyYXRob246czNjcmV0")), "s3cret"));
        assert!(!authorized(Some(&HeaderValue::from_static("Basic bWFyYXRob246d3Jvbmc=")), "s3cret"));
        assert!(!authorized(None, "s3cret"));
    }
}
