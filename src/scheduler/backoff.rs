//! Launch backoff (Marathon's RateLimiter, reference section 5.7).
//!
//! Keyed by the app's `lastConfigChangeAt`: deploying a new config starts from zero.
//! The first failure waits `backoffSeconds`; each further failure multiplies the delay by
//! `backoffFactor`, capped at `maxLaunchDelaySeconds`. A quiet period of delay +
//! maxLaunchDelay forgets the history.

use crate::domain::{AppSpec, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The config the failures belong to.
    pub config_version: Timestamp,
    pub delay_seconds: f64,
    /// No launch before this instant.
    pub launch_at: Timestamp,
    pub last_failure_at: Timestamp,
}

impl Backoff {
    /// The backoff after a task of `spec` (config `config_version`) failed at `now`.
    pub fn after_failure(prev: Option<&Backoff>, spec: &AppSpec, config_version: Timestamp, now: Timestamp) -> Backoff {
        let max = spec.max_launch_delay_seconds as f64;
        let first = (spec.backoff_seconds as f64).min(max);
        let delay = match prev {
            Some(p) if p.config_version == config_version && !p.expired(spec, now) => {
                (p.delay_seconds * spec.backoff_factor).min(max)
            }
            _ => first,
        };
        Backoff {
            config_version,
            delay_seconds: delay,
            launch_at: now.plus_millis((delay * 1000.0) as i64),
            last_failure_at: now,
        }
    }

    /// History is forgotten after delay + maxLaunchDelay without a failure.
    fn expired(&self, spec: &AppSpec, now: Timestamp) -> bool {
        let quiet = self.delay_seconds + spec.max_launch_delay_seconds as f64;
        self.last_failure_at.seconds_until(now) > quiet
    }

    /// `Some(t)` while launches of `config_version` must wait until `t`.
    pub fn blocks_until(&self, config_version: Timestamp, now: Timestamp) -> Option<Timestamp> {
        (self.config_version == config_version && now < self.launch_at).then_some(self.launch_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::reconcile::tests::spec;

    #[test]
    fn grows_by_factor_and_caps() {
        let mut s = spec("/a", 1);
        s.backoff_seconds = 1;
        s.backoff_factor = 2.0;
        s.max_launch_delay_seconds = 5;
        let cv = Timestamp::from_millis(0);
        let t = Timestamp::from_millis(10_000);
        let b1 = Backoff::after_failure(None, &s, cv, t);
        assert_eq!(b1.delay_seconds, 1.0);
        assert_eq!(b1.launch_at, Timestamp::from_millis(11_000));
        let b2 = Backoff::after_failure(Some(&b1), &s, cv, t.plus_millis(1));
        assert_eq!(b2.delay_seconds, 2.0);
        let b3 = Backoff::after_failure(Some(&b2), &s, cv, t.plus_millis(2));
        let b4 = Backoff::after_failure(Some(&b3), &s, cv, t.plus_millis(3));
        assert_eq!((b3.delay_seconds, b4.delay_seconds), (4.0, 5.0));
    }

    #[test]
    fn new_config_and_quiet_period_reset() {
        let s = spec("/a", 1); // defaults: 1 s, x1.15, max 300 s
        let cv = Timestamp::from_millis(0);
        let b1 = Backoff::after_failure(None, &s, cv, Timestamp::from_millis(1_000));
        let b2 = Backoff::after_failure(Some(&b1), &s, cv, Timestamp::from_millis(2_000));
        assert!((b2.delay_seconds - 1.15).abs() < 1e-9);
        let other = Backoff::after_failure(Some(&b2), &s, Timestamp::from_millis(5), Timestamp::from_millis(3_000));
        assert_eq!(other.delay_seconds, 1.0);
        let later = Backoff::after_failure(Some(&b2), &s, cv, Timestamp::from_millis(2_000 + 302_000));
        assert_eq!(later.delay_seconds, 1.0);
    }

    #[test]
    fn blocks_only_its_config_until_launch_at() {
        let s = spec("/a", 1);
        let cv = Timestamp::from_millis(0);
        let b = Backoff::after_failure(None, &s, cv, Timestamp::from_millis(1_000));
        assert_eq!(b.blocks_until(cv, Timestamp::from_millis(1_500)), Some(Timestamp::from_millis(2_000)));
        assert_eq!(b.blocks_until(cv, Timestamp::from_millis(2_000)), None);
        assert_eq!(b.blocks_until(Timestamp::from_millis(7), Timestamp::from_millis(1_500)), None);
    }
}
