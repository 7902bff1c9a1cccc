//! What an app looks like at a glance: its task counts and one status word. Pure over
//! the state (and the launch queue), shared by the API (`tasksRunning`, ...) and the web
//! UI, so both say the same thing.

use super::state::{AppRecord, State};
use super::QueueInfo;
use crate::domain::health::{verdict, Verdict};
use crate::domain::{TaskState, Timestamp};

/// An app's status, most pressing first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AppStatus {
    /// Instances wanted and launches held back by the backoff after failures.
    Delayed,
    /// Instances waiting for an agent with room (or matching constraints).
    Waiting,
    /// A deployment is changing it.
    Deploying,
    /// Some running task failed a health check.
    Unhealthy,
    /// Scaled to 0.
    Suspended,
    Running,
}

impl AppStatus {
    pub fn name(self) -> &'static str {
        match self {
            AppStatus::Delayed => "delayed",
            AppStatus::Waiting => "waiting",
            AppStatus::Deploying => "deploying",
            AppStatus::Unhealthy => "unhealthy",
            AppStatus::Suspended => "suspended",
            AppStatus::Running => "running",
        }
    }
}

/// Task counts and status of one app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppSummary {
    pub instances: u32,
    pub staged: usize,
    pub running: usize,
    /// Running tasks every health check reported alive (0 without health checks, as in
    /// Marathon).
    pub healthy: usize,
    /// Running tasks some health check reported not alive.
    pub unhealthy: usize,
    pub status: AppStatus,
}

/// Summarizes `rec` from `state`; `queued` is its launch queue entry, if any.
pub fn app_summary(rec: &AppRecord, state: &State, queued: Option<&QueueInfo>, now: Timestamp) -> AppSummary {
    let spec = &rec.current.spec;
    let (mut staged, mut running, mut healthy, mut unhealthy) = (0, 0, 0, 0);
    let checks = spec.health_checks.len();
    for t in state.tasks_of(&spec.id) {
        match t.state {
            TaskState::Staging | TaskState::Starting => staged += 1,
            TaskState::Running => {
                running += 1;
                if checks > 0 {
                    match verdict(state.health.get(&t.id), checks) {
                        Verdict::Healthy => healthy += 1,
                        Verdict::Unhealthy => unhealthy += 1,
                        Verdict::Unknown => {}
                    }
                }
            }
            _ => {}
        }
    }
    let waiting = queued.filter(|q| q.count > 0);
    let status = if waiting.is_some_and(|q| q.delayed_until.is_some_and(|d| d > now)) {
        AppStatus::Delayed
    } else if waiting.is_some() {
        AppStatus::Waiting
    } else if state.deployments_of(&spec.id).next().is_some() {
        AppStatus::Deploying
    } else if unhealthy > 0 {
        AppStatus::Unhealthy
    } else if spec.instances == 0 {
        AppStatus::Suspended
    } else {
        AppStatus::Running
    };
    AppSummary { instances: spec.instances, staged, running, healthy, unhealthy, status }
}
