//! What an app looks like at a glance: its task counts and one status word. Pure over
//! the state (and the launch queue), shared by the API (`tasksRunning`, ...) and the web
//! UI, so both say the same thing.

use super::state::{AppRecord, State};
use super::QueueInfo;
use crate::domain::health::{verdict, Verdict};
use crate::domain::{Resources, Task, TaskState, Timestamp};

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

/// What the health checks say of a running task of an app with `checks` checks; `None`
/// when there is nothing to say (no checks, or the task is not running).
pub fn task_health(state: &State, t: &Task, checks: usize) -> Option<Verdict> {
    (checks > 0 && t.state == TaskState::Running).then(|| verdict(state.health.get(&t.id), checks))
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
                match task_health(state, t, checks) {
                    Some(Verdict::Healthy) => healthy += 1,
                    Some(Verdict::Unhealthy) => unhealthy += 1,
                    _ => {}
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

/// What the active tasks on each agent take (by their app's current definition) and how
/// many there are: the agents page's bars.
pub fn agent_usage(state: &State) -> std::collections::BTreeMap<&crate::domain::AgentId, (Resources, usize)> {
    let mut out: std::collections::BTreeMap<&crate::domain::AgentId, (Resources, usize)> = Default::default();
    for t in state.tasks.values().filter(|t| t.is_active()) {
        let e = out.entry(&t.agent_id).or_default();
        e.1 += 1;
        if let Some(app) = state.apps.get(&t.app_id) {
            let spec = &app.current.spec;
            e.0.cpus += spec.cpus;
            e.0.mem += spec.mem;
            e.0.disk += spec.disk;
            e.0.gpus += f64::from(spec.gpus);
        }
    }
    out
}

/// The agents' resources in all, and what the active tasks take of them (by their app's
/// current definition): (used, total).
pub fn cluster_resources(state: &State) -> (Resources, Resources) {
    let mut total = Resources::default();
    for a in state.agents.values() {
        let r = a.info.resources.total();
        total.cpus += r.cpus;
        total.mem += r.mem;
        total.disk += r.disk;
        total.gpus += r.gpus;
    }
    let mut used = Resources::default();
    for t in state.tasks.values().filter(|t| t.is_active()) {
        if let Some(app) = state.apps.get(&t.app_id) {
            let spec = &app.current.spec;
            used.cpus += spec.cpus;
            used.mem += spec.mem;
            used.disk += spec.disk;
            used.gpus += f64::from(spec.gpus);
        }
    }
    (used, total)
}
