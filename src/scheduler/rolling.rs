//! Rolling replacement: how many old instances may go and how many new ones may start
//! right now, given the app's `upgradeStrategy` (Marathon's TaskReplaceActor arithmetic,
//! reference section 5.2), evaluated level-triggered from counts.
//!
//! With `N` instances wanted:
//!
//! - `minHealthy  = ceil(N × minimumHealthCapacity)`: healthy instances (old ones, and new
//!   ones once healthy) never drop below this by our kills;
//! - `maxCapacity = floor(N × (1 + maximumOverCapacity))`: old + new instances never
//!   exceed this by our launches (an old instance being stopped counts until it ended); when both are equal and already reached, one extra
//!   instance is allowed, or no progress would be possible;
//! - old instances go while more than `minHealthy` are healthy (all at once with a
//!   minimum of 0), and at least as many as exceed `N`; old instances that are not
//!   healthy may always go, as they hold no healthy capacity;
//! - new instances start as capacity allows, up to `N`.
//!
//! So (1, 1) starts all N new ones, then kills the old ones as new ones turn healthy;
//! (1, 0) starts one extra, waits until it is healthy, kills one old one, waits until it
//! has ended, and repeats;
//! (0.9, 0) replaces a tenth at a time; (0, x) kills all old instances at once.

use crate::domain::app::UpgradeStrategy;

/// The app's instances during a replacement, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Instances wanted (`N`).
    pub wanted: usize,
    /// Old-version instances still active (not asked to stop).
    pub old: usize,
    /// Of those, the healthy ones (running, and alive by all health checks).
    pub old_healthy: usize,
    /// Old-version instances asked to stop that have not ended yet: they still take
    /// capacity (Marathon launches more only once an old instance is terminal).
    pub stopping: usize,
    /// New-version instances started (active).
    pub new: usize,
    /// Of those, the healthy (and ready) ones.
    pub new_healthy: usize,
}

/// What may be done now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Step {
    pub kill_old: usize,
    pub launch_new: usize,
}

/// `(minHealthy, maxCapacity)` for `wanted` instances, before the +1 rule.
pub fn bounds(wanted: usize, s: &UpgradeStrategy) -> (usize, usize) {
    let n = wanted as f64;
    // A tiny tolerance keeps 3 × 0.7 = 2.0999... from rounding up past what was meant
    // (Marathon: ceil(3 × 0.7) = 3; the float product is 2.0999999999999996).
    let min_healthy = (n * s.minimum_health_capacity - 1e-9).ceil().max(0.0) as usize;
    let max_capacity = (n * (1.0 + s.maximum_over_capacity) + 1e-9).floor() as usize;
    (min_healthy, max_capacity)
}

/// How many old instances to kill and new ones to launch now.
pub fn step(c: Counts, s: &UpgradeStrategy) -> Step {
    let (min_healthy, mut max_capacity) = bounds(c.wanted, s);
    let healthy = c.old_healthy + c.new_healthy;
    if min_healthy == max_capacity && max_capacity <= healthy {
        max_capacity += 1;
    }
    // Old instances that are not healthy cost no healthy capacity: they may always go
    // (Marathon only preferred them within its kill count).
    let unhealthy_old = c.old - c.old_healthy.min(c.old);
    let kill_old = (healthy.saturating_sub(min_healthy) + unhealthy_old).max(c.old.saturating_sub(c.wanted)).min(c.old);
    // Instances killed now keep their capacity until they have ended (Marathon launches
    // more only once an old instance is terminal).
    let launch_new = c.wanted.saturating_sub(c.new).min(max_capacity.saturating_sub(c.old + c.stopping + c.new));
    Step { kill_old, launch_new }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strategy(min: f64, over: f64) -> UpgradeStrategy {
        UpgradeStrategy { minimum_health_capacity: min, maximum_over_capacity: over, ..Default::default() }
    }

    /// Runs a whole replacement of `n` healthy old instances, one event at a time
    /// (every launched instance turns healthy before the next step), checking the
    /// capacity bounds after every step. Returns the steps taken.
    fn replace_all(n: usize, s: &UpgradeStrategy) -> Vec<Step> {
        let (min_healthy, max_capacity) = bounds(n, s);
        let mut c = Counts { wanted: n, old: n, old_healthy: n, ..Default::default() };
        let mut steps = Vec::new();
        for _ in 0..10 * n + 10 {
            let st = step(c, s);
            if st == Step::default() {
                break;
            }
            steps.push(st);
            c.old -= st.kill_old;
            c.old_healthy -= st.kill_old;
            c.stopping += st.kill_old;
            c.new += st.launch_new;
            assert!(c.old_healthy + c.new_healthy >= min_healthy.min(n), "{c:?} below {min_healthy}");
            assert!(c.old + c.stopping + c.new <= max_capacity.max(n + 1), "{c:?} above {max_capacity}");
            c.new_healthy = c.new; // they all pass their health checks
            c.stopping = 0; // and the killed ones end
        }
        assert_eq!((c.old, c.new, c.new_healthy), (0, n, n), "finished: {c:?} after {steps:?}");
        steps
    }

    #[test]
    fn old_instances_still_stopping_take_capacity() {
        // (1, 0) with 2: one new is healthy, one old was killed but has not ended: no
        // launch until it has (else 3 would run where at most 2 + 1 may).
        let c = Counts { wanted: 2, old: 1, old_healthy: 1, stopping: 1, new: 1, new_healthy: 1 };
        assert_eq!(step(c, &strategy(1.0, 0.0)).launch_new, 0);
        let ended = Counts { stopping: 0, ..c };
        assert_eq!(step(ended, &strategy(1.0, 0.0)).launch_new, 1);
    }

    #[test]
    fn bounds_follow_marathon_rounding() {
        assert_eq!(bounds(3, &strategy(0.7, 0.0)), (3, 3), "ceil(3 × 0.7) = 3");
        assert_eq!(bounds(10, &strategy(0.9, 0.1)), (9, 11));
        assert_eq!(bounds(10, &strategy(0.0, 0.0)), (0, 10));
        assert_eq!(bounds(4, &strategy(0.5, 0.5)), (2, 6));
        assert_eq!(bounds(0, &strategy(1.0, 1.0)), (0, 0));
    }

    #[test]
    fn default_strategy_starts_all_new_then_kills_all_old() {
        let steps = replace_all(3, &strategy(1.0, 1.0));
        assert_eq!(steps[0], Step { kill_old: 0, launch_new: 3 });
        assert_eq!(steps[1], Step { kill_old: 3, launch_new: 0 });
        assert_eq!(steps.len(), 2);
    }

    #[test]
    fn one_extra_at_a_time_when_both_bounds_are_n() {
        // (1, 0): +1 new, wait until healthy, -1 old, wait until it ended, repeat.
        let steps = replace_all(3, &strategy(1.0, 0.0));
        let (launch, kill) = (Step { kill_old: 0, launch_new: 1 }, Step { kill_old: 1, launch_new: 0 });
        assert_eq!(steps, vec![launch, kill, launch, kill, launch, kill]);
    }

    #[test]
    fn ninety_percent_replaces_a_tenth_at_a_time() {
        let steps = replace_all(10, &strategy(0.9, 0.0));
        assert_eq!(steps[0], Step { kill_old: 1, launch_new: 0 });
        assert_eq!(steps[1], Step { kill_old: 0, launch_new: 1 }, "once the killed one has ended");
        assert!(steps.iter().all(|s| s.kill_old <= 1 && s.launch_new <= 1), "{steps:?}");
    }

    #[test]
    fn zero_minimum_kills_all_old_at_once() {
        let st = step(Counts { wanted: 4, old: 4, old_healthy: 4, ..Default::default() }, &strategy(0.0, 0.0));
        assert_eq!(st, Step { kill_old: 4, launch_new: 0 }, "new ones start as the old ones end");
    }

    #[test]
    fn never_kills_below_the_minimum_when_new_ones_are_unhealthy() {
        // (0.5, 0) with 4: two old may go, and two new start once they ended; the new
        // ones never turn healthy, so no further old one is killed: the upgrade stalls
        // above the minimum.
        let s = strategy(0.5, 0.0);
        let c = Counts { wanted: 4, old: 4, old_healthy: 4, ..Default::default() };
        assert_eq!(step(c, &s), Step { kill_old: 2, launch_new: 0 });
        let ended = Counts { wanted: 4, old: 2, old_healthy: 2, ..Default::default() };
        assert_eq!(step(ended, &s), Step { kill_old: 0, launch_new: 2 });
        let stalled = Counts { wanted: 4, old: 2, old_healthy: 2, new: 2, ..Default::default() };
        assert_eq!(step(stalled, &s), Step::default());
    }

    #[test]
    fn unhealthy_old_instances_may_always_go() {
        let c = Counts { wanted: 3, old: 3, old_healthy: 2, new: 1, new_healthy: 1, stopping: 0 };
        assert_eq!(step(c, &strategy(1.0, 0.0)).kill_old, 1);
    }

    #[test]
    fn scaling_down_during_a_restart_kills_the_excess_old_ones() {
        let st = step(Counts { wanted: 2, old: 5, old_healthy: 5, ..Default::default() }, &strategy(1.0, 0.0));
        assert_eq!(st.kill_old, 3, "at least the five old minus the two wanted");
    }

    #[test]
    fn several_strategies_finish_within_their_bounds() {
        for (n, min, over) in
            [(1, 1.0, 1.0), (1, 1.0, 0.0), (5, 0.6, 0.2), (7, 0.3, 0.0), (10, 0.9, 0.1), (3, 0.7, 0.0)]
        {
            replace_all(n, &strategy(min, over));
        }
    }
}
