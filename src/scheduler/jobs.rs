//! The job scheduler's decisions, pure, with time passed in: what a due schedule does
//! (run, catch up once, or record misses), what a run does while another is active
//! (the concurrency policy), when a failed run is retried, and when a dependent job's
//! parents let it run. The master applies them in one transaction each, so a decision is
//! made and recorded exactly once.

use crate::domain::job::{ConcurrencyPolicy, JobSpec, JobStatus, MissedRunPolicy};
use crate::domain::schedule::Schedule;
use crate::domain::Timestamp;

/// At most this many missed due times are counted one by one for one catch-up (crontab
/// lines are walked one match at a time; a job due every minute after a week's downtime
/// would otherwise hold up the write path). Repeating intervals are counted exactly.
pub const MISSED_COUNT_CAP: u64 = 1_000;

/// What a scheduled job's due time(s) lead to at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The due time to run now, if any.
    pub run: Option<Timestamp>,
    /// Due times that passed without a run (capped at [`MISSED_COUNT_CAP`]).
    pub missed: u64,
    /// The latest of those, for the record.
    pub last_missed: Option<Timestamp>,
    /// The next due time after `now` (None: the schedule has ended).
    pub next: Option<Timestamp>,
}

/// Works out a scheduled job whose next due time `next_due` has come (`next_due <= now`).
/// Every due time from `next_due` to `now` is either the one run or missed: the latest
/// runs (within `epsilon` of being due, or at any delay with [`MissedRunPolicy::AnyDelay`]),
/// all earlier ones are missed, so downtime leads to at most one catch-up run.
pub fn due(schedule: &Schedule, next_due: Timestamp, now: Timestamp, epsilon_ms: u64, policy: MissedRunPolicy) -> Due {
    let next = schedule.next_after(now);
    if next_due > now {
        return Due { run: None, missed: 0, last_missed: None, next: Some(next_due) };
    }
    // The latest due time by now (at least next_due itself, which is due).
    let latest = schedule.last_at_or_before(now).filter(|l| *l >= next_due).unwrap_or(next_due);
    let before = schedule.count_between(next_due.plus_millis(-1), latest.plus_millis(-1), MISSED_COUNT_CAP);
    let in_time = latest.millis() >= now.millis().saturating_sub(epsilon_ms as i64);
    if in_time || policy == MissedRunPolicy::AnyDelay {
        let last_missed = (before > 0).then(|| schedule.last_at_or_before(latest.plus_millis(-1))).flatten();
        Due { run: Some(latest), missed: before, last_missed, next }
    } else {
        Due { run: None, missed: (before + 1).min(MISSED_COUNT_CAP), last_missed: Some(latest), next }
    }
}

/// What a run that is due does, given how many runs of its job are active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Start,
    /// Skipped and recorded (FORBID).
    Skip,
    /// The active runs are killed first (REPLACE).
    ReplaceActive,
}

pub fn admit(policy: ConcurrencyPolicy, active_runs: usize) -> Admission {
    match (policy, active_runs) {
        (_, 0) | (ConcurrencyPolicy::Allow, _) => Admission::Start,
        (ConcurrencyPolicy::Forbid, _) => Admission::Skip,
        (ConcurrencyPolicy::Replace, _) => Admission::ReplaceActive,
    }
}

/// When attempt `attempt` (0 = the first run) has failed: the time of the next attempt,
/// or None when the retries are used up. Exponential: `retry_delay`, then twice that, and
/// so on up to `max_retry_delay`. Unlike Chronos, a retry does not depend on how the
/// previous run of the job ended.
pub fn retry_at(spec: &JobSpec, attempt: u32, failed_at: Timestamp) -> Option<Timestamp> {
    if attempt >= spec.retries {
        return None;
    }
    let factor = 1u64.checked_shl(attempt.min(63)).unwrap_or(u64::MAX);
    let delay = spec.retry_delay_ms.saturating_mul(factor).min(spec.max_retry_delay_ms);
    Some(failed_at.plus_millis(i64::try_from(delay).unwrap_or(i64::MAX)))
}

/// Whether a dependent job may run: every parent is done (succeeded, or failed with
/// `softError`) since the job last started (`parents`: each parent's status; a missing
/// parent is never done).
pub fn parents_done(job: &JobStatus, parents: &[Option<&JobStatus>]) -> bool {
    !parents.is_empty()
        && parents.iter().all(|p| {
            let success = p.and_then(|p| p.last_done);
            match (success, job.last_start) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(s), Some(started)) => s > started,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::schedule::Zone;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn sched(s: &str) -> Schedule {
        Schedule::parse(s, None, t("2026-01-01T00:00:00Z")).unwrap()
    }

    const HOURLY: &str = "R/2026-01-01T00:00:00Z/PT1H";

    #[test]
    fn a_due_time_on_time_runs() {
        let s = sched(HOURLY);
        let d =
            due(&s, t("2026-01-01T05:00:00Z"), t("2026-01-01T05:00:00.020Z"), 60_000, MissedRunPolicy::WithinEpsilon);
        assert_eq!(
            d,
            Due {
                run: Some(t("2026-01-01T05:00:00Z")),
                missed: 0,
                last_missed: None,
                next: Some(t("2026-01-01T06:00:00Z"))
            }
        );
        // Not due yet: nothing.
        let early =
            due(&s, t("2026-01-01T05:00:00Z"), t("2026-01-01T04:59:59Z"), 60_000, MissedRunPolicy::WithinEpsilon);
        assert_eq!(early.run, None);
        assert_eq!(early.next, Some(t("2026-01-01T05:00:00Z")));
    }

    #[test]
    fn after_downtime_one_catch_up_within_epsilon_and_no_storm() {
        let s = sched(HOURLY);
        // Down from 05:00 to 08:00:30: 05:00, 06:00, 07:00 missed; 08:00 is 30 s late.
        let d = due(&s, t("2026-01-01T05:00:00Z"), t("2026-01-01T08:00:30Z"), 60_000, MissedRunPolicy::WithinEpsilon);
        assert_eq!(d.run, Some(t("2026-01-01T08:00:00Z")));
        assert_eq!((d.missed, d.last_missed), (3, Some(t("2026-01-01T07:00:00Z"))));
        assert_eq!(d.next, Some(t("2026-01-01T09:00:00Z")));
        // Back at 08:05: 08:00 is 5 min late, beyond the 60 s epsilon: all four missed.
        let late =
            due(&s, t("2026-01-01T05:00:00Z"), t("2026-01-01T08:05:00Z"), 60_000, MissedRunPolicy::WithinEpsilon);
        assert_eq!((late.run, late.missed, late.last_missed), (None, 4, Some(t("2026-01-01T08:00:00Z"))));
        // Chronos 3.x's policy: one catch-up however late.
        let any = due(&s, t("2026-01-01T05:00:00Z"), t("2026-01-01T08:05:00Z"), 60_000, MissedRunPolicy::AnyDelay);
        assert_eq!((any.run, any.missed), (Some(t("2026-01-01T08:00:00Z")), 3));
        // Down for 100 periods: still at most one run.
        let long =
            due(&s, t("2026-01-01T05:00:00Z"), t("2026-01-05T09:00:10Z"), 60_000, MissedRunPolicy::WithinEpsilon);
        assert_eq!((long.run, long.missed), (Some(t("2026-01-05T09:00:00Z")), 100));
    }

    #[test]
    fn an_ending_schedule_stops_and_cron_catches_up_the_same_way() {
        let s = sched("R2/2026-01-01T00:00:00Z/PT1H");
        let d = due(&s, t("2026-01-01T01:00:00Z"), t("2026-01-01T01:00:01Z"), 60_000, MissedRunPolicy::WithinEpsilon);
        assert_eq!((d.run, d.next), (Some(t("2026-01-01T01:00:00Z")), None));
        let cron = Schedule::parse("*/10 * * * *", Some(Zone::UTC), t("2026-01-01T00:00:00Z")).unwrap();
        let d =
            due(&cron, t("2026-01-01T00:10:00Z"), t("2026-01-01T00:40:05Z"), 30_000, MissedRunPolicy::WithinEpsilon);
        assert_eq!((d.run, d.missed, d.next), (Some(t("2026-01-01T00:40:00Z")), 3, Some(t("2026-01-01T00:50:00Z"))));
    }

    #[test]
    fn concurrency_policies() {
        use Admission::*;
        use ConcurrencyPolicy::*;
        let table = [
            (Allow, 0, Start),
            (Allow, 3, Start),
            (Forbid, 0, Start),
            (Forbid, 1, Skip),
            (Replace, 0, Start),
            (Replace, 2, ReplaceActive),
        ];
        for (policy, active, want) in table {
            assert_eq!(admit(policy, active), want, "{policy:?} with {active} active");
        }
    }

    fn spec(retries: u32) -> JobSpec {
        let name = crate::domain::job::JobName::parse("j").unwrap();
        JobSpec { retries, retry_delay_ms: 10_000, max_retry_delay_ms: 35_000, ..JobSpec::new(name, "true") }
    }

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap() {
        let s = spec(3);
        let at = t("2026-01-01T00:00:00Z");
        let delays: Vec<Option<i64>> = (0..4).map(|a| retry_at(&s, a, at).map(|r| r.millis() - at.millis())).collect();
        assert_eq!(delays, [Some(10_000), Some(20_000), Some(35_000), None]);
        assert_eq!(retry_at(&spec(0), 0, at), None, "no retries");
    }

    #[test]
    fn a_child_runs_once_every_parent_succeeded_since_its_last_start() {
        let status = |done: Option<&str>, start: Option<&str>| JobStatus {
            last_done: done.map(t),
            last_start: start.map(t),
            ..Default::default()
        };
        let a = status(Some("2026-01-01T02:00:00Z"), None);
        let b = status(Some("2026-01-01T03:00:00Z"), None);
        let never = status(None, None);
        let fresh_child = status(None, None);
        assert!(parents_done(&fresh_child, &[Some(&a), Some(&b)]));
        assert!(!parents_done(&fresh_child, &[Some(&a), Some(&never)]));
        assert!(!parents_done(&fresh_child, &[Some(&a), None]), "a missing parent never succeeds");
        assert!(!parents_done(&fresh_child, &[]), "no parents: not a dependent job");
        // The child started at 02:30: b succeeded since, a did not.
        let child = status(None, Some("2026-01-01T02:30:00Z"));
        assert!(!parents_done(&child, &[Some(&a), Some(&b)]));
        let a_again = status(Some("2026-01-01T04:00:00Z"), None);
        assert!(parents_done(&child, &[Some(&a_again), Some(&b)]));
    }
}
