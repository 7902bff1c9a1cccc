//! Wire types: Marathon's JSON as clients send and expect it, converted into and out of
//! the domain types. Legacy inputs (`ports`, `uris`, `container.docker.network`,
//! `container.docker.portMappings`, `ipAddress`) are accepted and normalised here; the
//! current forms are what we emit.

pub mod app;
pub mod group;
pub mod job;
pub mod task;

use super::error::ApiError;

/// Converts a serde error location into a JSON pointer (`/healthChecks/0/protocol`).
pub fn pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key } => out.push_str(&format!("/{}", crate::domain::app::pointer_escape(key))),
            Segment::Enum { variant } => out.push_str(&format!("/{variant}")),
            Segment::Unknown => out.push_str("/?"),
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Deserialises a JSON value into `T`, reporting shape errors with their path (400).
pub fn from_value<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v)
        .map_err(|e| ApiError::WrongShape { path: pointer(e.path()), message: e.inner().to_string() })
}
