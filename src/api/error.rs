//! The API error table: every error the API returns, its HTTP status, and Marathon's
//! body shape `{"message": ..., "details": [{"path": ..., "errors": [...]}]}`.

use crate::domain::Violation;
use crate::master::MasterError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::collections::BTreeMap;

#[derive(Debug)]
pub enum ApiError {
    /// The body is not JSON at all.
    MalformedJson {
        message: String,
        line: usize,
        column: usize,
    },
    /// JSON of the wrong shape (a string where a number belongs...).
    WrongShape {
        path: String,
        message: String,
    },
    /// Well-formed but invalid (Marathon's 422).
    Invalid(Vec<Violation>),
    BadRequest(String),
    Unauthorized,
    NotFound(String),
    Conflict(String),
    /// The app is locked by running deployments (409 with their ids, as Marathon).
    Locked {
        message: String,
        deployments: Vec<String>,
    },
    NotAcceptable(String),
    PayloadTooLarge(usize),
    Unavailable(String),
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson { .. } | ApiError::WrongShape { .. } | ApiError::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::Locked { .. } => StatusCode::CONFLICT,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the API would answer, as the UI shows it: the message and each field's
    /// errors by JSON pointer (`/instances`, `/healthChecks/0/portIndex`, ...).
    pub fn explain(&self) -> (String, Vec<(String, String)>) {
        let body = self.body();
        let message = body["message"].as_str().unwrap_or_default().to_string();
        let mut details = Vec::new();
        for d in body["details"].as_array().into_iter().flatten() {
            let path = d["path"].as_str().unwrap_or("/").to_string();
            for e in d["errors"].as_array().into_iter().flatten() {
                details.push((path.clone(), e.as_str().unwrap_or_default().to_string()));
            }
        }
        (message, details)
    }

    fn body(&self) -> serde_json::Value {
        match self {
            ApiError::Locked { message, deployments } => json!({
                "message": message,
                "deployments": deployments.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
            }),
            ApiError::MalformedJson { message, line, column } => json!({
                "message": "Invalid JSON",
                "details": [{"path": "/", "errors": [format!("{message} at line {line} column {column}")]}],
            }),
            ApiError::WrongShape { path, message } => json!({
                "message": "Invalid JSON",
                "details": [{"path": path, "errors": [message]}],
            }),
            ApiError::Invalid(v) => {
                let mut by_path: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
                for x in v {
                    by_path.entry(&x.path).or_default().push(&x.message);
                }
                let details: Vec<_> = by_path.into_iter().map(|(p, e)| json!({"path": p, "errors": e})).collect();
                json!({"message": "Object is not valid", "details": details})
            }
            ApiError::Unauthorized => {
                json!({"message": "Unauthorized: send 'Authorization: Bearer <token>' (or HTTP Basic with the token as password)"})
            }
            ApiError::PayloadTooLarge(limit) => {
                json!({"message": format!("Request body is larger than the limit of {limit} bytes")})
            }
            ApiError::BadRequest(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::NotAcceptable(m)
            | ApiError::Unavailable(m)
            | ApiError::Internal(m) => json!({"message": m}),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(m) = &self {
            tracing::error!("internal error: {m}");
        }
        let mut resp = (self.status(), Json(self.body())).into_response();
        if let ApiError::Unavailable(_) = self {
            // Every 503 is a moment's condition (a takeover, the store away): retry.
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        resp
    }
}

impl From<MasterError> for ApiError {
    fn from(e: MasterError) -> Self {
        match e {
            MasterError::AppNotFound(_)
            | MasterError::TaskNotFound(_)
            | MasterError::VersionNotFound(..)
            | MasterError::GroupNotFound(_)
            | MasterError::DeploymentNotFound(_)
            | MasterError::JobNotFound(_) => ApiError::NotFound(e.to_string()),
            MasterError::AppExists(_)
            | MasterError::GroupExists(_)
            | MasterError::JobExists(_)
            | MasterError::JobBusy(_) => ApiError::Conflict(e.to_string()),
            MasterError::Invalid(v) => ApiError::Invalid(v),
            MasterError::Retry | MasterError::CannotRollBack(_) => ApiError::Conflict(e.to_string()),
            MasterError::AppLocked(ref ids) => ApiError::Locked { message: e.to_string(), deployments: ids.clone() },
            MasterError::ShuttingDown | MasterError::NotLeader(_) => ApiError::Unavailable(e.to_string()),
            // The database is away or refused the transaction: nothing was changed
            // (reliability case 19), and the client may retry.
            MasterError::Store(s @ crate::store::StoreError::Db(_)) => {
                ApiError::Unavailable(format!("the store did not take the write, so nothing changed; retry: {s}"))
            }
            MasterError::Store(s) => ApiError::Internal(s.to_string()),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
