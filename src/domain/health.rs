//! Health check results and how one check's state moves with each result (Marathon's
//! rules). Pure: the agent that runs the checks applies results here and tells the
//! master when something a user or the scheduler cares about changed.
//!
//! - A success makes the check alive, resets its consecutive failures, and records the
//!   first and last success.
//! - A failure before the first success and within the grace period is ignored (the
//!   task is still starting). Otherwise it counts: the check is not alive, its
//!   consecutive failures grow, and at `maxConsecutiveFailures` (when above 0) the task
//!   is due to be killed.
//! - An HTTP 1xx answer with `ignoreHttp1xx` leaves everything as it was.
//!
//! The grace period runs from the task's start, or from when checking (re)started if
//! that is later: a restarted agent or master has lost the history, so it gives the task
//! the grace again rather than killing on stale assumptions (reliability case 29).

use super::Timestamp;
use serde::{Deserialize, Serialize};

/// One health check's state for one task, as Marathon shows it in `healthCheckResults`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub alive: bool,
    pub consecutive_failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_success: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_cause: Option<String>,
}

/// A readiness check's latest answer for one task (Marathon's `readinessCheckResults`).
/// Readiness is probed from a task's start until the first ready answer; during a
/// deployment a new task counts only once it is ready (and healthy).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    pub name: String,
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_response: Option<ReadinessResponse>,
    /// Why there was no answer (connection refused, timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessResponse {
    pub status: u16,
}

/// What a task's health check reports say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every one of the app's checks has reported it alive.
    Healthy,
    /// Some check reported it not alive.
    Unhealthy,
    /// Not every check has reported yet.
    Unknown,
}

/// The verdict on a task from its checks' `reports` (by check index), for an app with
/// `checks` health checks. Without checks there is nothing to wait for: healthy.
pub fn verdict(reports: Option<&std::collections::BTreeMap<u16, Health>>, checks: usize) -> Verdict {
    match reports {
        Some(r) if r.values().any(|h| !h.alive) => Verdict::Unhealthy,
        Some(r) if r.len() >= checks => Verdict::Healthy,
        None if checks == 0 => Verdict::Healthy,
        _ => Verdict::Unknown,
    }
}

/// The result of running a check once.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Healthy,
    Unhealthy(String),
    /// An answer that does not count either way (HTTP 1xx with `ignoreHttp1xx`).
    Ignored,
}

/// What a check's settings say about counting results.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub grace_ms: i64,
    /// 0: never kill.
    pub max_consecutive_failures: u32,
}

/// What one result changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Effect {
    /// `alive` changed (or the check has its first counted result).
    pub alive_changed: bool,
    /// A failure was counted.
    pub failure_counted: bool,
    /// The task has failed `maxConsecutiveFailures` checks in a row.
    pub kill: bool,
}

impl Effect {
    /// Whether the master should hear about it.
    pub fn worth_reporting(self) -> bool {
        self.alive_changed || self.failure_counted
    }
}

impl Health {
    /// Applies one result at `now` for a check that counts its grace from `since` (the
    /// later of the task's start and the checker's start).
    pub fn observe(&mut self, outcome: Outcome, now: Timestamp, since: Timestamp, policy: Policy) -> Effect {
        let had_result = self.last_success.is_some() || self.last_failure.is_some();
        let was_alive = self.alive;
        let mut effect = Effect::default();
        match outcome {
            Outcome::Ignored => return effect,
            Outcome::Healthy => {
                self.first_success.get_or_insert(now);
                self.last_success = Some(now);
                self.consecutive_failures = 0;
                self.alive = true;
            }
            Outcome::Unhealthy(cause) => {
                let in_grace =
                    self.first_success.is_none() && since.seconds_until(now) * 1000.0 < policy.grace_ms as f64;
                if in_grace {
                    return effect;
                }
                self.consecutive_failures += 1;
                self.last_failure = Some(now);
                self.last_failure_cause = Some(cause);
                self.alive = false;
                effect.failure_counted = true;
                effect.kill =
                    policy.max_consecutive_failures > 0 && self.consecutive_failures >= policy.max_consecutive_failures;
            }
        }
        effect.alive_changed = !had_result || was_alive != self.alive;
        effect
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_millis(s * 1000)
    }

    const P: Policy = Policy { grace_ms: 10_000, max_consecutive_failures: 3 };

    #[test]
    fn failures_in_the_grace_period_before_the_first_success_are_ignored() {
        let mut h = Health::default();
        assert_eq!(h.observe(Outcome::Unhealthy("refused".into()), t(5), t(0), P), Effect::default());
        assert_eq!(h, Health::default());
        // After the grace period they count.
        let e = h.observe(Outcome::Unhealthy("refused".into()), t(11), t(0), P);
        assert_eq!(e, Effect { alive_changed: true, failure_counted: true, kill: false });
        assert_eq!((h.alive, h.consecutive_failures), (false, 1));
        assert_eq!(h.last_failure_cause.as_deref(), Some("refused"));
    }

    #[test]
    fn after_a_first_success_the_grace_period_is_over() {
        let mut h = Health::default();
        let e = h.observe(Outcome::Healthy, t(2), t(0), P);
        assert_eq!(e, Effect { alive_changed: true, failure_counted: false, kill: false });
        assert_eq!((h.first_success, h.last_success), (Some(t(2)), Some(t(2))));
        let e = h.observe(Outcome::Unhealthy("HTTP 500".into()), t(3), t(0), P);
        assert!(e.alive_changed && e.failure_counted && !e.kill);
        assert!(!h.alive);
    }

    #[test]
    fn the_task_is_due_for_a_kill_at_max_consecutive_failures() {
        let mut h = Health::default();
        h.observe(Outcome::Healthy, t(1), t(0), P);
        let fail = |h: &mut Health, s| h.observe(Outcome::Unhealthy("x".into()), t(s), t(0), P);
        assert!(!fail(&mut h, 2).kill);
        assert!(!fail(&mut h, 3).kill);
        let e = fail(&mut h, 4);
        assert!(e.kill && e.failure_counted && !e.alive_changed, "{e:?}");
        // A success in between starts the count again.
        let mut h = Health::default();
        fail(&mut h, 20);
        fail(&mut h, 21);
        h.observe(Outcome::Healthy, t(22), t(0), P);
        assert_eq!(h.consecutive_failures, 0);
        assert!(!fail(&mut h, 23).kill);
        // 0 means never.
        let never = Policy { max_consecutive_failures: 0, ..P };
        let mut h = Health::default();
        for s in 20..30 {
            assert!(!h.observe(Outcome::Unhealthy("x".into()), t(s), t(0), never).kill);
        }
    }

    #[test]
    fn ignored_answers_change_nothing_and_repeats_are_not_worth_reporting() {
        let mut h = Health::default();
        h.observe(Outcome::Healthy, t(1), t(0), P);
        let before = h.clone();
        assert_eq!(h.observe(Outcome::Ignored, t(2), t(0), P), Effect::default());
        assert_eq!(h, before);
        assert!(!h.observe(Outcome::Healthy, t(3), t(0), P).worth_reporting());
    }

    #[test]
    fn a_task_is_healthy_once_every_check_reported_it_alive() {
        use std::collections::BTreeMap;
        let alive = Health { alive: true, ..Default::default() };
        let dead = Health::default();
        assert_eq!(verdict(None, 0), Verdict::Healthy);
        assert_eq!(verdict(None, 2), Verdict::Unknown);
        let one = BTreeMap::from([(0, alive.clone())]);
        assert_eq!(verdict(Some(&one), 2), Verdict::Unknown);
        let both = BTreeMap::from([(0, alive.clone()), (1, alive)]);
        assert_eq!(verdict(Some(&both), 2), Verdict::Healthy);
        let bad = BTreeMap::from([(1, dead)]);
        assert_eq!(verdict(Some(&bad), 2), Verdict::Unhealthy);
    }

    #[test]
    fn the_grace_period_counts_from_a_restarted_checker() {
        // The task started long ago, but checking restarted at t=100: grace again.
        let mut h = Health::default();
        assert_eq!(h.observe(Outcome::Unhealthy("x".into()), t(105), t(100), P), Effect::default());
    }
}
