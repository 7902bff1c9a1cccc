//! What an app looks like at a glance: its task counts and one status word. Pure over
//! the state (and the launch queue), shared by the API (`tasksRunning`, ...) and the web
//! UI, so both say the same thing.

use super::state::{AppRecord, State, TaskCounts};
use super::QueueInfo;
use crate::domain::health::{verdict, Verdict};
use crate::domain::{AgentId, PathId, Resources, Task, TaskState, Timestamp};
use std::collections::{BTreeMap, HashMap};

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

/// Task counts of one app with the health verdicts of its running tasks.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    counts: TaskCounts,
    healthy: usize,
    unhealthy: usize,
}

impl Tally {
    fn add(&mut self, state: &State, t: &Task, checks: usize) {
        self.counts.add(TaskCounts::of(t));
        match task_health(state, t, checks) {
            Some(Verdict::Healthy) => self.healthy += 1,
            Some(Verdict::Unhealthy) => self.unhealthy += 1,
            _ => {}
        }
    }

    fn summary(self, rec: &AppRecord, state: &State, queued: Option<&QueueInfo>, now: Timestamp) -> AppSummary {
        let spec = &rec.current.spec;
        let waiting = queued.filter(|q| q.count > 0);
        let status = if waiting.is_some_and(|q| q.delayed_until.is_some_and(|d| d > now)) {
            AppStatus::Delayed
        } else if waiting.is_some() {
            AppStatus::Waiting
        } else if state.deployments_of(&spec.id).next().is_some() {
            AppStatus::Deploying
        } else if self.unhealthy > 0 {
            AppStatus::Unhealthy
        } else if spec.instances == 0 {
            AppStatus::Suspended
        } else {
            AppStatus::Running
        };
        let Tally { counts: TaskCounts { staged, running, .. }, healthy, unhealthy } = self;
        AppSummary { instances: spec.instances, staged, running, healthy, unhealthy, status }
    }
}

/// Summarizes `rec` from `state`; `queued` is its launch queue entry, if any.
pub fn app_summary(rec: &AppRecord, state: &State, queued: Option<&QueueInfo>, now: Timestamp) -> AppSummary {
    let checks = rec.current.spec.health_checks.len();
    let mut tally = Tally::default();
    for t in state.tasks_of(&rec.current.spec.id) {
        tally.add(state, t, checks);
    }
    tally.summary(rec, state, queued, now)
}

/// Every app's summary, in id order, and what the active tasks take of the agents (by
/// their app's definition): the dashboard and the app list filtered by status. The
/// counts come from [`State::task_counts`]; only apps with health checks look at their
/// tasks (for the health verdicts).
pub fn app_summaries<'a>(
    state: &'a State,
    queue: &BTreeMap<PathId, QueueInfo>,
    now: Timestamp,
) -> (Vec<(&'a AppRecord, AppSummary)>, Resources) {
    let mut used = Resources::default();
    let summaries = state
        .apps
        .iter()
        .map(|(id, rec)| {
            let spec = &rec.current.spec;
            let tally = match spec.health_checks.len() {
                0 => Tally { counts: state.task_counts.get(id).copied().unwrap_or_default(), ..Tally::default() },
                checks => {
                    let mut tally = Tally::default();
                    for t in state.tasks_of(id) {
                        tally.add(state, t, checks);
                    }
                    tally
                }
            };
            let need = spec.task_resources();
            for _ in 0..tally.counts.active {
                used.add(&need);
            }
            (rec, tally.summary(rec, state, queue.get(id), now))
        })
        .collect();
    (summaries, used)
}

/// What the active tasks on each of `agents` take (by their app's current definition)
/// and how many there are: the agents page's bars, for the agents it shows.
pub fn agent_usage<'a>(state: &State, agents: &[&'a AgentId]) -> HashMap<&'a AgentId, (Resources, usize)> {
    let mut out: HashMap<&AgentId, (Resources, usize)> = HashMap::with_capacity(agents.len());
    for agent in agents {
        let (used, n) = out.entry(*agent).or_default();
        for t in state.tasks_on(agent) {
            *n += 1;
            if let Some(app) = state.apps.get(&t.app_id) {
                used.add(&app.current.spec.task_resources());
            }
        }
    }
    out
}

/// The agents' resources in all.
pub fn cluster_total(state: &State) -> Resources {
    let mut total = Resources::default();
    for a in state.agents.values() {
        total.add(&a.info.resources.total());
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::reconcile::tests::{spec, task, version};
    use crate::store::Change;

    #[test]
    fn summaries_of_every_app_match_the_per_app_ones() {
        let mut state = State::default();
        let apps = [version(spec("/a", 3), 1), version(spec("/a.b", 2), 1), version(spec("/c/d", 0), 1)];
        for v in &apps {
            state.apply(&Change::PutApp(Box::new(v.clone())));
        }
        let states = [TaskState::Running, TaskState::Staging, TaskState::Running, TaskState::Killed];
        for (i, v) in apps.iter().take(2).enumerate() {
            for (n, s) in states.iter().enumerate().skip(i) {
                state.apply(&Change::PutTask(Box::new(task(v, n as u32, *s, 1))));
            }
        }
        let now = Timestamp::from_millis(10);
        let (all, used) = app_summaries(&state, &BTreeMap::new(), now);
        assert_eq!(all.len(), 3);
        for (rec, s) in &all {
            assert_eq!(*s, app_summary(rec, &state, None, now), "{}", rec.current.spec.id);
        }
        let counts: Vec<(usize, usize)> = all.iter().map(|(_, s)| (s.running, s.staged)).collect();
        assert_eq!(counts, [(2, 1), (1, 1), (0, 0)]);
        assert_eq!(all[2].1.status, AppStatus::Suspended);
        // Five active tasks of 1 cpu and 128 MB each (the killed ones take nothing).
        assert_eq!((used.cpus, used.mem), (5.0, 640.0));
    }
}
