//! Pure domain types and their invariants: ids, app definitions, tasks, agents and
//! resources, groups, deployments, events, health check state, jobs and their schedules,
//! timestamps.
//!
//! Nothing here does I/O or knows about tokio, sqlx or axum (DESIGN.md's dependency rule):
//! the scheduler core computes over these types, the master persists them, the API converts
//! its wire types into them. Validation that needs no outside state lives here, so every
//! entry point (REST, store reload, agent protocol) gets the same rules.

pub mod agent;
pub mod app;
pub mod deployment;
pub mod docker;
pub mod event;
pub mod group;
pub mod health;
pub mod ids;
pub mod job;
pub mod resources;
pub mod schedule;
pub mod task;
pub mod time;

pub use agent::{AgentId, AgentInfo, AgentMark, AgentRecord};
pub use app::{AppSpec, AppVersion, VersionInfo};
pub use deployment::{Deployment, DeploymentAction};
pub use group::{GroupSpec, GroupVersion};
pub use ids::{IdError, InstanceId, PathId, TaskId};
pub use resources::{AgentResources, PortRange, Quota, Resources, UNRESERVED};
pub use task::{Task, TaskState};
pub use time::Timestamp;

/// At most `max` bytes of `s`, cut at a character boundary (for messages from the
/// network that end up in state and events).
pub fn clip(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Lowercase hex of `b` (digests in HAProxy server options, session MACs).
pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter().fold(String::with_capacity(b.len() * 2), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

/// One validation failure: a JSON pointer into the offending document and what is wrong there.
/// The API renders a list of these as Marathon's `details: [{path, errors}]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    pub message: String,
}

impl Violation {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Violation { path: path.into(), message: message.into() }
    }
}
