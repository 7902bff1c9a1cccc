//! Deployment planning: the steps that take the cluster from one app tree to another
//! (Marathon's `DeploymentPlan`). Pure: the same two trees always give the same plan.
//!
//! 1. `StopApplication` for every app the target no longer has;
//! 2. `StartApplication` for every app it adds (the app exists, with no instances yet);
//! 3. then, layer by layer along the dependencies (apps that depend on nothing first),
//!    `ScaleApplication` for new apps and apps whose instance count alone changed, and
//!    `RestartApplication` for apps whose configuration changed (or that were restarted).
//!
//! Steps run one after another, the actions of a step together; empty steps are
//! dropped. An app whose action lies in a step not yet reached is *held*: the
//! scheduler leaves its tasks alone until the steps before are done ([`held_apps`]).

use crate::domain::deployment::{ActionKind, Deployment, DeploymentAction, Mark};
use crate::domain::group::{dependency_depths, dependency_edges, Tree};
use crate::domain::PathId;
use crate::domain::Timestamp;
use std::collections::{BTreeMap, BTreeSet};

/// What an app needs to get from `original` to `target`, if anything.
fn app_action(original: Option<&crate::domain::AppVersion>, target: &crate::domain::AppVersion) -> Option<ActionKind> {
    match original {
        None => Some(ActionKind::ScaleApplication),
        Some(o) if o.version_info.last_config_change_at != target.version_info.last_config_change_at => {
            Some(ActionKind::RestartApplication)
        }
        Some(o) if o.spec.instances != target.spec.instances => Some(ActionKind::ScaleApplication),
        Some(_) => None,
    }
}

/// The steps from `original` to `target`.
pub fn plan_steps(original: &Tree, target: &Tree) -> Vec<Vec<DeploymentAction>> {
    let action = |action, app: &PathId| DeploymentAction { action, app: app.clone() };
    let stops: Vec<DeploymentAction> = original
        .apps
        .keys()
        .filter(|id| !target.apps.contains_key(*id))
        .map(|id| action(ActionKind::StopApplication, id))
        .collect();
    let starts: Vec<DeploymentAction> = target
        .apps
        .keys()
        .filter(|id| !original.apps.contains_key(*id))
        .map(|id| action(ActionKind::StartApplication, id))
        .collect();
    let changed: Vec<(&PathId, ActionKind)> = target
        .apps
        .iter()
        .filter_map(|(id, t)| app_action(original.apps.get(id).copied(), t).map(|a| (id, a)))
        .collect();
    let depths = match changed.is_empty() {
        true => BTreeMap::new(),
        false => dependency_depths(&dependency_edges(target)),
    };
    let mut layers: BTreeMap<usize, Vec<DeploymentAction>> = BTreeMap::new();
    for (id, kind) in changed {
        layers.entry(depths.get(id).copied().unwrap_or(0)).or_default().push(action(kind, id));
    }
    std::iter::once(stops)
        .chain(std::iter::once(starts))
        .chain(layers.into_values())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Apps with an action in a step their deployment has not reached yet: they keep what
/// they run until then. `progress` tells how many steps of a deployment are done.
pub fn held_apps<'a>(
    deployments: impl Iterator<Item = &'a Deployment>,
    progress: impl Fn(&Deployment) -> usize,
) -> BTreeSet<PathId> {
    let mut held = BTreeSet::new();
    for d in deployments {
        let done = progress(d);
        for step in d.steps.iter().skip(done + 1) {
            for a in step {
                if matches!(a.action, ActionKind::ScaleApplication | ActionKind::RestartApplication) {
                    held.insert(a.app.clone());
                }
            }
        }
    }
    held
}

/// What the deployment watcher makes of a deployment's mark at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Moved forward (or first looked at): remember the mark and the time.
    Progressed(Mark),
    /// No progress, and the deadline (if any) not reached.
    Waiting,
    /// No progress for its whole progress deadline.
    Failed,
}

/// Compares a deployment's current `mark` with the one it last progressed at.
pub fn watch(d: &Deployment, mark: Mark, now: Timestamp) -> Watch {
    match d.mark {
        None => Watch::Progressed(mark),
        Some(before) if mark.beyond(&before) => Watch::Progressed(mark),
        Some(_) => {
            let since = d.progress_since();
            match d.deadline {
                Some(dl) if since.seconds_until(now) >= dl.seconds as f64 => Watch::Failed,
                _ => Watch::Waiting,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::group::GroupSpec;
    use crate::domain::{AppVersion, Timestamp};
    use crate::scheduler::reconcile::tests::{spec, version};

    fn p(s: &str) -> PathId {
        PathId::parse_app(s).expect("test id")
    }

    fn app(id: &str, instances: u32, config_ms: i64, deps: &[&str]) -> AppVersion {
        let mut s = spec(id, instances);
        s.dependencies = deps.iter().map(|d| p(d)).collect();
        version(s, config_ms)
    }

    fn tree(apps: &[AppVersion]) -> Tree<'_> {
        Tree { apps: apps.iter().map(|a| (a.spec.id.clone(), a)).collect(), groups: BTreeMap::new() }
    }

    /// Steps as `Action /app` strings, for readable expectations.
    fn show(steps: &[Vec<DeploymentAction>]) -> Vec<Vec<String>> {
        steps.iter().map(|s| s.iter().map(|a| format!("{:?} {}", a.action, a.app)).collect()).collect()
    }

    #[test]
    fn a_new_app_starts_then_scales() {
        let target = [app("/a", 3, 0, &[])];
        assert_eq!(
            show(&plan_steps(&tree(&[]), &tree(&target))),
            vec![vec!["StartApplication /a"], vec!["ScaleApplication /a"]]
        );
    }

    #[test]
    fn removed_apps_stop_first_and_unchanged_apps_do_nothing() {
        let original = [app("/a", 1, 0, &[]), app("/b", 1, 0, &[])];
        let target = [app("/b", 1, 0, &[])];
        assert_eq!(show(&plan_steps(&tree(&original), &tree(&target))), vec![vec!["StopApplication /a"]]);
        assert!(plan_steps(&tree(&target), &tree(&target)).is_empty());
    }

    #[test]
    fn a_config_change_restarts_and_a_count_change_scales() {
        let original = [app("/a", 1, 0, &[]), app("/b", 1, 0, &[])];
        let target = [app("/a", 1, 5, &[]), app("/b", 4, 0, &[])];
        assert_eq!(
            show(&plan_steps(&tree(&original), &tree(&target))),
            vec![vec!["RestartApplication /a", "ScaleApplication /b"]]
        );
        // Scaling to zero is a scale, too.
        let zero = [app("/a", 1, 0, &[]), app("/b", 0, 0, &[])];
        assert_eq!(show(&plan_steps(&tree(&original), &tree(&zero))), vec![vec!["ScaleApplication /b"]]);
    }

    #[test]
    fn dependencies_order_the_layers() {
        // The example of the issue: /shop/web depends on /shop/db; a cache depends on nothing.
        let target = [app("/shop/db", 1, 0, &[]), app("/shop/web", 2, 0, &["/shop/db"]), app("/shop/cache", 1, 0, &[])];
        assert_eq!(
            show(&plan_steps(&tree(&[]), &tree(&target))),
            vec![
                vec!["StartApplication /shop/cache", "StartApplication /shop/db", "StartApplication /shop/web"],
                vec!["ScaleApplication /shop/cache", "ScaleApplication /shop/db"],
                vec!["ScaleApplication /shop/web"],
            ]
        );
        // Only what changed is in the plan, but the layer still follows the whole graph.
        let upgraded =
            [app("/shop/db", 1, 0, &[]), app("/shop/web", 2, 9, &["/shop/db"]), app("/shop/cache", 1, 0, &[])];
        assert_eq!(show(&plan_steps(&tree(&target), &tree(&upgraded))), vec![vec!["RestartApplication /shop/web"]]);
    }

    #[test]
    fn group_dependencies_reach_every_app_inside() {
        let target = [app("/db/pg", 1, 0, &[]), app("/web/a", 1, 0, &[]), app("/web/b", 1, 0, &[])];
        let g = GroupSpec {
            id: p("/web"),
            dependencies: vec![p("/db")],
            enforce_role: false,
            version: Timestamp::from_millis(0),
        };
        let mut t = tree(&target);
        t.groups.insert(g.id.clone(), &g);
        let steps = show(&plan_steps(&tree(&[]), &t));
        assert_eq!(steps[1], vec!["ScaleApplication /db/pg"]);
        assert_eq!(steps[2], vec!["ScaleApplication /web/a", "ScaleApplication /web/b"]);
    }

    #[test]
    fn stops_starts_and_layers_together() {
        let original = [app("/old", 1, 0, &[]), app("/db", 1, 0, &[]), app("/web", 1, 0, &["/db"])];
        let target = [app("/db", 1, 3, &[]), app("/web", 1, 3, &["/db"]), app("/new", 2, 3, &["/web"])];
        assert_eq!(
            show(&plan_steps(&tree(&original), &tree(&target))),
            vec![
                vec!["StopApplication /old"],
                vec!["StartApplication /new"],
                vec!["RestartApplication /db"],
                vec!["RestartApplication /web"],
                vec!["ScaleApplication /new"],
            ]
        );
    }

    #[test]
    fn the_watcher_fails_only_after_a_deadline_without_progress() {
        use crate::domain::deployment::Deadline;
        let m = |steps, counted, remaining| Mark { steps, counted, remaining };
        let mut d = Deployment {
            version: Timestamp::from_millis(0),
            deadline: Some(Deadline { seconds: 10, rollback: false }),
            ..Default::default()
        };
        let t = Timestamp::from_millis;
        assert_eq!(watch(&d, m(0, 0, 3), t(1_000)), Watch::Progressed(m(0, 0, 3)), "first look");
        d.mark = Some(m(0, 0, 3));
        d.last_progress_at = t(1_000);
        assert_eq!(watch(&d, m(0, 0, 3), t(10_999)), Watch::Waiting);
        assert_eq!(watch(&d, m(0, 0, 3), t(11_000)), Watch::Failed);
        // Any move forward resets the clock; flapping back and forth does not.
        assert_eq!(watch(&d, m(0, 1, 3), t(11_000)), Watch::Progressed(m(0, 1, 3)));
        assert_eq!(watch(&d, m(0, 0, 2), t(11_000)), Watch::Progressed(m(0, 0, 2)));
        assert_eq!(watch(&d, m(0, 1, 4), t(11_000)), Watch::Failed, "one more counts but one more to go");
        assert_eq!(watch(&d, m(1, 0, 5), t(11_000)), Watch::Progressed(m(1, 0, 5)), "a step done");
        // Without a deadline it waits for ever (Marathon's behaviour).
        d.deadline = None;
        assert_eq!(watch(&d, m(0, 0, 3), t(1_000_000)), Watch::Waiting);
    }

    #[test]
    fn apps_in_later_steps_are_held() {
        let target = [app("/db", 1, 0, &[]), app("/web", 1, 0, &["/db"])];
        let steps = plan_steps(&tree(&[]), &tree(&target));
        let d = Deployment {
            id: "d".into(),
            version: Timestamp::from_millis(0),
            affected_apps: vec![p("/db"), p("/web")],
            steps,
            ..Default::default()
        };
        // Nothing done: the start step is current; both scales wait.
        assert_eq!(held_apps([&d].into_iter(), |_| 0), [p("/db"), p("/web")].into_iter().collect());
        // The start is done: /db scales, /web waits for it.
        assert_eq!(held_apps([&d].into_iter(), |_| 1), [p("/web")].into_iter().collect());
        assert!(held_apps([&d].into_iter(), |_| 2).is_empty());
    }
}
