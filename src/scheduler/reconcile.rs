//! Reconciliation of one app: compare the wanted instance count and config with the
//! tasks that exist, and decide how many to launch and which to kill.
//!
//! Upgrades follow the app's `upgradeStrategy` ([`super::rolling`]): old-config tasks go
//! and new ones start as far as `minimumHealthCapacity` and `maximumOverCapacity` allow,
//! a new task counting once it runs and passes its health checks.

use super::backoff::Backoff;
use super::constraints::{group_by_victims, AgentFields};
use super::rolling;
use crate::domain::app::{ConstraintOperator, KillSelection, UnreachableStrategy};
use crate::domain::health::{verdict, Health, Readiness, Verdict};
use crate::domain::task::Goal;
use crate::domain::{AgentId, AppVersion, Task, TaskId, TaskState, Timestamp};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppPlan {
    /// New tasks to start (placement decides where).
    pub launch: u32,
    /// Tasks to stop for good (goal Stopped).
    pub kill: Vec<TaskId>,
    /// Set when missing tasks wait for launch backoff.
    pub delayed_until: Option<Timestamp>,
}

/// Order of preference for killing: tasks that are not yet useful go first
/// (Marathon: unreachable < staging < starting < running).
fn kill_rank(t: &Task) -> u8 {
    match t.state {
        TaskState::Unreachable | TaskState::Unknown => 0,
        TaskState::Staging => 1,
        TaskState::Starting => 2,
        _ => 3,
    }
}

/// Orders tasks for killing: by state (least useful first), then `killSelection`.
fn sort_for_killing(tasks: &mut [&Task], sel: KillSelection) {
    tasks.sort_by(|a, b| {
        kill_rank(a).cmp(&kill_rank(b)).then_with(|| match sel {
            KillSelection::YoungestFirst => b.staged_at.cmp(&a.staged_at),
            KillSelection::OldestFirst => a.staged_at.cmp(&b.staged_at),
        })
    });
}

/// The surplus to kill on scale-down: with GROUP_BY constraints, from the most used
/// values of their fields first (Marathon keeps the spread even this way); otherwise, and
/// within a value, by state and `killSelection`.
fn scale_down_victims<'a>(
    app: &AppVersion,
    mut tasks: Vec<&'a Task>,
    n: usize,
    agents: &HashMap<AgentId, AgentFields>,
) -> Vec<&'a Task> {
    sort_for_killing(&mut tasks, app.spec.kill_selection);
    let group_by: Vec<&str> = app
        .spec
        .constraints
        .iter()
        .filter(|c| c.operator == ConstraintOperator::GroupBy)
        .map(|c| c.field.as_str())
        .collect();
    if group_by.is_empty() {
        return tasks.into_iter().take(n).collect();
    }
    let value = |i: usize, f: usize| agents.get(&tasks[i].agent_id).and_then(|a| a.get(group_by[f])).map(String::from);
    group_by_victims(tasks.len(), n, group_by.len(), value).into_iter().map(|i| tasks[i]).collect()
}

/// An unreachable task that its app's `unreachableStrategy` no longer counts: it is
/// replaced (it may still run; if it comes back, the surplus is killed).
pub fn is_inactive(t: &Task, strategy: &UnreachableStrategy, now: Timestamp) -> bool {
    match (t.state, t.unreachable_since, strategy) {
        (TaskState::Unreachable, Some(since), UnreachableStrategy::Enabled { inactive_after_seconds, .. }) => {
            since.seconds_until(now) >= *inactive_after_seconds as f64
        }
        _ => false,
    }
}

/// What the agents' checks reported about tasks.
#[derive(Debug, Clone, Copy)]
pub struct Probes<'a> {
    /// Health check states, by check index.
    pub health: &'a HashMap<TaskId, BTreeMap<u16, Health>>,
    /// Readiness check answers.
    pub readiness: &'a HashMap<TaskId, Readiness>,
}

impl Probes<'_> {
    fn healthy(&self, t: &Task, checks: usize) -> bool {
        task_healthy(t, self.health, checks)
    }

    /// Whether a new task of `spec` counts for a deployment: running, healthy by every
    /// health check, and ready (when the app has a readiness check), as in Marathon.
    pub fn counts(&self, t: &Task, spec: &crate::domain::AppSpec) -> bool {
        self.healthy(t, spec.health_checks.len())
            && (spec.readiness_checks.is_empty() || self.readiness.get(&t.id).is_some_and(|r| r.ready))
    }
}

/// What reconciliation reads besides the app and its tasks.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Constraint fields of the agents tasks run on (used for GROUP_BY scale-down).
    pub agents: &'a HashMap<AgentId, AgentFields>,
    /// What checks said about tasks (used for rolling upgrades).
    pub probes: Probes<'a>,
}

/// A running task whose `checks` health checks all reported it alive (with no checks:
/// one that none reported dead).
pub fn task_healthy(t: &Task, health: &HashMap<TaskId, BTreeMap<u16, Health>>, checks: usize) -> bool {
    t.state == TaskState::Running && verdict(health.get(&t.id), checks) == Verdict::Healthy
}

/// Decides launches and kills for one app. `tasks` are all known tasks of the app.
pub fn reconcile_app(
    app: &AppVersion,
    tasks: &[&Task],
    backoff: Option<&Backoff>,
    now: Timestamp,
    ctx: Context,
) -> AppPlan {
    let spec = &app.spec;
    let wanted = spec.instances as usize;
    let config = app.version_info.last_config_change_at;
    let live: Vec<&Task> = tasks
        .iter()
        .copied()
        .filter(|t| t.is_active() && t.goal == Goal::Running && !is_inactive(t, &spec.unreachable_strategy, now))
        .collect();
    let (current, old): (Vec<&Task>, Vec<&Task>) = live.into_iter().partition(|t| t.config_version == config);

    let mut plan = AppPlan::default();
    let surplus = current.len().saturating_sub(wanted);
    plan.kill.extend(scale_down_victims(app, current.clone(), surplus, ctx.agents).into_iter().map(|t| t.id.clone()));
    let kept_current: Vec<&Task> = current.iter().copied().filter(|t| !plan.kill.contains(&t.id)).collect();

    // Old-config tasks are replaced as the upgrade strategy allows.
    let step = rolling::step(
        rolling::Counts {
            wanted,
            old: old.len(),
            old_healthy: old.iter().filter(|t| ctx.probes.healthy(t, 0)).count(),
            stopping: tasks
                .iter()
                .filter(|t| t.is_active() && t.goal == Goal::Stopped && t.config_version != config)
                .count(),
            new: kept_current.len(),
            new_healthy: kept_current.iter().filter(|t| ctx.probes.counts(t, spec)).count(),
        },
        &spec.upgrade_strategy,
    );
    let missing = wanted.saturating_sub(kept_current.len()).min(step.launch_new) as u32;
    if missing > 0 {
        match backoff.and_then(|b| b.blocks_until(config, now)) {
            Some(until) => plan.delayed_until = Some(until),
            None => plan.launch = missing,
        }
    }
    // The unhealthy old tasks go first, then the oldest.
    let mut old = old;
    old.sort_by_key(|t| (ctx.probes.healthy(t, 0), t.staged_at));
    plan.kill.extend(old.into_iter().take(step.kill_old).map(|t| t.id.clone()));
    plan
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::{AgentId, AppSpec, InstanceId};

    /// A minimal valid spec with Marathon's defaults (as the API would store it).
    pub(crate) fn spec(id: &str, instances: u32) -> AppSpec {
        let v = serde_json::json!({
            "id": id, "cmd": "sleep 1000", "instances": instances, "cpus": 1.0, "mem": 128.0, "disk": 0.0, "gpus": 0,
            "networks": [{"mode": "host"}], "portDefinitions": [{"port": 10000, "protocol": "tcp", "name": "default"}],
            "upgradeStrategy": {"minimumHealthCapacity": 1.0, "maximumOverCapacity": 1.0},
            "backoffSeconds": 1, "backoffFactor": 1.15, "maxLaunchDelaySeconds": 300
        });
        serde_json::from_value(v).expect("valid test spec")
    }

    pub(crate) fn version(s: AppSpec, config_ms: i64) -> AppVersion {
        let t = Timestamp::from_millis(config_ms);
        AppVersion {
            spec: s,
            version: t,
            version_info: crate::domain::VersionInfo { last_scaling_at: t, last_config_change_at: t },
        }
    }

    pub(crate) fn task(app: &AppVersion, n: u32, state: TaskState, config_ms: i64) -> Task {
        let inst = InstanceId::new(&app.spec.id, &format!("u{n}"));
        Task {
            id: inst.task_id(1),
            app_id: app.spec.id.clone(),
            agent_id: AgentId("a".into()),
            host: "h".into(),
            state,
            goal: Goal::Running,
            ports: vec![],
            version: Timestamp::from_millis(config_ms),
            config_version: Timestamp::from_millis(config_ms),
            staged_at: Timestamp::from_millis(n as i64),
            started_at: None,
            message: None,
            unreachable_since: None,
            job: None,
        }
    }

    /// Reconciles with no agent fields (no app here has a GROUP_BY constraint) and no
    /// health reports.
    fn plan_of(app: &AppVersion, tasks: &[&Task], backoff: Option<&Backoff>, now: Timestamp) -> AppPlan {
        let (agents, health) = (HashMap::new(), HashMap::new());
        reconcile_app(
            app,
            tasks,
            backoff,
            now,
            Context { agents: &agents, probes: Probes { health: &health, readiness: &HashMap::new() } },
        )
    }

    fn refs(v: &[Task]) -> Vec<&Task> {
        v.iter().collect()
    }

    #[test]
    fn unreachable_tasks_are_replaced_after_inactive_after_seconds() {
        let mut s = spec("/a", 2);
        s.unreachable_strategy =
            UnreachableStrategy::Enabled { inactive_after_seconds: 60, expunge_after_seconds: 120 };
        let app = version(s, 0);
        let mut lost = task(&app, 1, TaskState::Unreachable, 0);
        lost.unreachable_since = Some(Timestamp::from_millis(1_000));
        let tasks = vec![lost, task(&app, 2, TaskState::Running, 0)];
        let at = |secs: i64| Timestamp::from_millis(1_000 + secs * 1000);
        assert_eq!(plan_of(&app, &refs(&tasks), None, at(59)).launch, 0, "still counted");
        assert_eq!(plan_of(&app, &refs(&tasks), None, at(60)).launch, 1, "replaced");
        let mut disabled = app.clone();
        disabled.spec.unreachable_strategy = UnreachableStrategy::Disabled;
        assert_eq!(plan_of(&disabled, &refs(&tasks), None, at(10_000)).launch, 0, "never replaced");
    }

    #[test]
    fn a_returning_task_makes_a_surplus_that_is_killed() {
        let app = version(spec("/a", 2), 0);
        let back = task(&app, 1, TaskState::Running, 0);
        let replacement = task(&app, 3, TaskState::Running, 0);
        let tasks = vec![back, task(&app, 2, TaskState::Running, 0), replacement.clone()];
        let p = plan_of(&app, &refs(&tasks), None, Timestamp::from_millis(10));
        assert_eq!(p.kill, vec![replacement.id], "youngest first: the replacement goes");
    }

    #[test]
    fn launches_missing_instances() {
        let app = version(spec("/a", 3), 0);
        let tasks = vec![task(&app, 1, TaskState::Running, 0)];
        let p = plan_of(&app, &refs(&tasks), None, Timestamp::from_millis(10));
        assert_eq!(p.launch, 2);
        assert!(p.kill.is_empty());
    }

    #[test]
    fn ignores_terminal_and_stopping_tasks() {
        let app = version(spec("/a", 2), 0);
        let mut stopping = task(&app, 2, TaskState::Running, 0);
        stopping.goal = Goal::Stopped;
        let tasks = vec![task(&app, 1, TaskState::Failed, 0), stopping];
        assert_eq!(plan_of(&app, &refs(&tasks), None, Timestamp::from_millis(10)).launch, 2);
    }

    #[test]
    fn scales_down_youngest_and_least_useful_first() {
        let app = version(spec("/a", 2), 0);
        let tasks = vec![
            task(&app, 1, TaskState::Running, 0),
            task(&app, 2, TaskState::Running, 0),
            task(&app, 3, TaskState::Running, 0),
            task(&app, 4, TaskState::Staging, 0),
        ];
        let p = plan_of(&app, &refs(&tasks), None, Timestamp::from_millis(10));
        assert_eq!(p.kill, vec![tasks[3].id.clone(), tasks[2].id.clone()]);
        let mut oldest = app.clone();
        oldest.spec.kill_selection = KillSelection::OldestFirst;
        let p = plan_of(&oldest, &refs(&tasks), None, Timestamp::from_millis(10));
        assert_eq!(p.kill, vec![tasks[3].id.clone(), tasks[0].id.clone()]);
    }

    #[test]
    fn group_by_steers_scale_down_to_the_most_used_values() {
        let mut spec = spec("/a", 3);
        spec.constraints = vec![crate::domain::app::Constraint::parse(&["rack".into(), "GROUP_BY".into()]).unwrap()];
        let app = version(spec, 0);
        // Agents: a1 and a2 in r1, a3 in r2, a4 in r3. Tasks 1, 2 on r1; 3 on r2; 4 (the
        // youngest, which killSelection alone would pick) on r3.
        let mut agents = HashMap::new();
        for (a, rack) in [("a1", "r1"), ("a2", "r1"), ("a3", "r2"), ("a4", "r3")] {
            let f = AgentFields {
                hostname: a.into(),
                attributes: [("rack".to_string(), rack.to_string())].into_iter().collect(),
            };
            agents.insert(AgentId(a.into()), f);
        }
        let tasks: Vec<Task> = ["a1", "a2", "a3", "a4"]
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let mut t = task(&app, i as u32 + 1, TaskState::Running, 0);
                t.agent_id = AgentId(a.to_string());
                t
            })
            .collect();
        let health = HashMap::new();
        let ctx = Context { agents: &agents, probes: Probes { health: &health, readiness: &HashMap::new() } };
        let p = reconcile_app(&app, &refs(&tasks), None, Timestamp::from_millis(10), ctx);
        assert_eq!(p.kill, vec![tasks[1].id.clone()], "the younger of r1's two, not r3's only one");
        let p = plan_of(&app, &refs(&tasks), None, Timestamp::from_millis(10));
        assert_eq!(p.kill, vec![tasks[3].id.clone()], "without agent fields: youngest first");
    }

    #[test]
    fn backoff_delays_launches() {
        let app = version(spec("/a", 1), 0);
        let b = Backoff::after_failure(None, &app.spec, Timestamp::from_millis(0), Timestamp::from_millis(1_000));
        let p = plan_of(&app, &[], Some(&b), Timestamp::from_millis(1_500));
        assert_eq!((p.launch, p.delayed_until), (0, Some(Timestamp::from_millis(2_000))));
        let p = plan_of(&app, &[], Some(&b), Timestamp::from_millis(2_000));
        assert_eq!(p.launch, 1);
    }

    #[test]
    fn upgrade_starts_new_before_killing_old() {
        let app = version(spec("/a", 2), 100);
        let old = vec![task(&app, 1, TaskState::Running, 0), task(&app, 2, TaskState::Running, 0)];
        let p = plan_of(&app, &refs(&old), None, Timestamp::from_millis(200));
        assert_eq!((p.launch, p.kill.len()), (2, 0));

        let mut all = old.clone();
        all.push(task(&app, 3, TaskState::Running, 100));
        all.push(task(&app, 4, TaskState::Staging, 100));
        let p = plan_of(&app, &refs(&all), None, Timestamp::from_millis(200));
        assert_eq!(p.launch, 0);
        assert_eq!(p.kill, vec![old[0].id.clone()], "one new task runs: one old task goes");

        all[3].state = TaskState::Running;
        let p = plan_of(&app, &refs(&all), None, Timestamp::from_millis(200));
        assert_eq!(p.kill.len(), 2);
    }

    #[test]
    fn upgrade_follows_the_strategy_and_counts_new_tasks_once_healthy() {
        // (1, 0) with health checks: one extra new task; it runs but no check has
        // reported yet, so no old task goes; once its check reports alive, one does.
        let mut s = spec("/a", 2);
        s.upgrade_strategy.minimum_health_capacity = 1.0;
        s.upgrade_strategy.maximum_over_capacity = 0.0;
        s.health_checks = serde_json::from_value(serde_json::json!([{"protocol": "TCP"}])).unwrap();
        let app = version(s, 100);
        let mut all = vec![task(&app, 1, TaskState::Running, 0), task(&app, 2, TaskState::Running, 0)];
        let p = plan_of(&app, &refs(&all), None, Timestamp::from_millis(200));
        assert_eq!((p.launch, p.kill.len()), (1, 0), "one extra, nothing killed");
        all.push(task(&app, 3, TaskState::Running, 100));
        let p = plan_of(&app, &refs(&all), None, Timestamp::from_millis(200));
        assert_eq!((p.launch, p.kill.len()), (0, 0), "the new task is not healthy yet");
        let alive = Health { alive: true, ..Default::default() };
        let health = HashMap::from([(all[2].id.clone(), BTreeMap::from([(0u16, alive)]))]);
        let agents = HashMap::new();
        let ctx = Context { agents: &agents, probes: Probes { health: &health, readiness: &HashMap::new() } };
        let p = reconcile_app(&app, &refs(&all), None, Timestamp::from_millis(200), ctx);
        assert_eq!(p.kill, vec![all[0].id.clone()], "healthy: the oldest old task goes");
        // An old task reported dead goes first.
        let dead = Health { alive: false, ..Default::default() };
        let health = HashMap::from([
            (all[2].id.clone(), BTreeMap::from([(0u16, Health { alive: true, ..Default::default() })])),
            (all[1].id.clone(), BTreeMap::from([(0u16, dead)])),
        ]);
        let ctx = Context { agents: &agents, probes: Probes { health: &health, readiness: &HashMap::new() } };
        let p = reconcile_app(&app, &refs(&all), None, Timestamp::from_millis(200), ctx);
        assert_eq!(p.kill.first(), Some(&all[1].id));
    }

    #[test]
    fn a_new_task_counts_only_once_ready() {
        // (1, 0) with a readiness check: the new task runs (healthy: no health checks)
        // but no old task goes until its readiness check answered ready.
        let mut s = spec("/a", 1);
        s.upgrade_strategy.minimum_health_capacity = 1.0;
        s.upgrade_strategy.maximum_over_capacity = 0.0;
        s.port_definitions[0].name = Some("http-api".into());
        s.readiness_checks = serde_json::from_value(serde_json::json!([{"path": "/ready"}])).unwrap();
        let app = version(s, 100);
        let all = vec![task(&app, 1, TaskState::Running, 0), task(&app, 2, TaskState::Running, 100)];
        let (agents, health) = (HashMap::new(), HashMap::new());
        let not_yet = Readiness { name: "readinessCheck".into(), ready: false, ..Default::default() };
        let readiness = HashMap::from([(all[1].id.clone(), not_yet)]);
        let ctx = Context { agents: &agents, probes: Probes { health: &health, readiness: &readiness } };
        let p = reconcile_app(&app, &refs(&all), None, Timestamp::from_millis(200), ctx);
        assert!(p.kill.is_empty(), "not ready: the old task stays");
        use crate::domain::deployment::ActionKind::RestartApplication;
        assert!(!action_done(RestartApplication, Some(&app), &refs(&all[1..]), ctx.probes));
        let ready = Readiness { name: "readinessCheck".into(), ready: true, ..Default::default() };
        let readiness = HashMap::from([(all[1].id.clone(), ready)]);
        let ctx = Context { agents: &agents, probes: Probes { health: &health, readiness: &readiness } };
        let p = reconcile_app(&app, &refs(&all), None, Timestamp::from_millis(200), ctx);
        assert_eq!(p.kill, vec![all[0].id.clone()], "ready: the old task goes");
        assert!(action_done(RestartApplication, Some(&app), &refs(&all[1..]), ctx.probes));
    }

    #[test]
    fn scale_to_zero_kills_everything() {
        let app = version(spec("/a", 0), 100);
        let tasks = vec![task(&app, 1, TaskState::Running, 100), task(&app, 2, TaskState::Running, 0)];
        let p = plan_of(&app, &refs(&tasks), None, Timestamp::from_millis(200));
        assert_eq!(p.kill.len(), 2);
        assert_eq!(p.launch, 0);
    }
}

/// Whether one deployment action has been carried out: a start, once the app exists; a
/// scale or restart, once the app runs exactly the wanted number of current-config
/// tasks, each healthy by all its health checks and ready, and nothing else; a stop,
/// once nothing of the app runs.
pub fn action_done(
    action: crate::domain::deployment::ActionKind,
    app: Option<&AppVersion>,
    tasks: &[&Task],
    probes: Probes,
) -> bool {
    use crate::domain::deployment::ActionKind;
    let active: Vec<&&Task> = tasks.iter().filter(|t| t.is_active()).collect();
    match (action, app) {
        (ActionKind::StopApplication, _) | (_, None) => active.is_empty(),
        (ActionKind::StartApplication, Some(_)) => true,
        (_, Some(app)) => {
            let config = app.version_info.last_config_change_at;
            let ok = active
                .iter()
                .filter(|t| t.goal == Goal::Running && t.config_version == config && probes.counts(t, &app.spec))
                .count();
            ok == app.spec.instances as usize && active.len() == ok
        }
    }
}

/// Where one deployment action stands, in words (shown with the deployment): what
/// counts already and what it still waits for.
pub fn explain_action(
    action: crate::domain::deployment::ActionKind,
    app: Option<&AppVersion>,
    tasks: &[&Task],
    probes: Probes,
) -> String {
    use crate::domain::deployment::ActionKind;
    let active: Vec<&Task> = tasks.iter().copied().filter(|t| t.is_active()).collect();
    if action_done(action, app, tasks, probes) {
        return "done".into();
    }
    let app = match (action, app) {
        (ActionKind::StopApplication, _) | (_, None) => {
            return format!("waiting for {} instance(s) to stop", active.len());
        }
        (_, Some(app)) => app,
    };
    let config = app.version_info.last_config_change_at;
    let (new, old): (Vec<&Task>, Vec<&Task>) =
        active.iter().partition(|t| t.goal == Goal::Running && t.config_version == config);
    let counted = new.iter().filter(|t| probes.counts(t, &app.spec)).count();
    let mut parts = vec![format!("{counted} of {} new instance(s) running, healthy and ready", app.spec.instances)];
    let missing = (app.spec.instances as usize).saturating_sub(new.len());
    if missing > 0 {
        parts.push(format!("{missing} not launched yet (see /v2/queue)"));
    }
    let starting = new.iter().filter(|t| t.state != TaskState::Running).count();
    if starting > 0 {
        parts.push(format!("{starting} starting"));
    }
    let checks = app.spec.health_checks.len();
    let running: Vec<&&Task> = new.iter().filter(|t| t.state == TaskState::Running).collect();
    let unhealthy: Vec<&&Task> = running.iter().copied().filter(|t| !probes.healthy(t, checks)).collect();
    if !unhealthy.is_empty() {
        let cause = unhealthy
            .iter()
            .filter_map(|t| probes.health.get(&t.id))
            .flat_map(|m| m.values())
            .find_map(|h| h.last_failure_cause.clone());
        let cause = cause.map(|c| format!(": {c}")).unwrap_or_else(|| ": no health result yet".into());
        parts.push(format!("{} not healthy{cause}", unhealthy.len()));
    }
    if !app.spec.readiness_checks.is_empty() {
        let unready: Vec<&&Task> =
            running.iter().copied().filter(|t| !probes.readiness.get(&t.id).is_some_and(|r| r.ready)).collect();
        if !unready.is_empty() {
            let why = unready.iter().filter_map(|t| probes.readiness.get(&t.id)).find_map(|r| {
                r.last_response.as_ref().map(|l| format!("HTTP status {}", l.status)).or_else(|| r.cause.clone())
            });
            let why = why.map(|c| format!(": {c}")).unwrap_or_else(|| ": no answer yet".into());
            parts.push(format!("{} not ready{why}", unready.len()));
        }
    }
    if !old.is_empty() {
        parts.push(format!("{} old or surplus instance(s) still to go", old.len()));
    }
    parts.join("; ")
}

#[cfg(test)]
mod done_tests {
    use super::tests::{spec, task, version};
    use super::*;
    use crate::domain::deployment::ActionKind;

    fn action_done(action: ActionKind, app: Option<&AppVersion>, tasks: &[&Task]) -> bool {
        super::action_done(action, app, tasks, Probes { health: &HashMap::new(), readiness: &HashMap::new() })
    }

    #[test]
    fn scale_is_done_when_exactly_the_wanted_tasks_run() {
        let app = version(spec("/a", 2), 0);
        let mut ts = vec![task(&app, 1, TaskState::Running, 0), task(&app, 2, TaskState::Staging, 0)];
        assert!(!action_done(ActionKind::ScaleApplication, Some(&app), &ts.iter().collect::<Vec<_>>()));
        ts[1].state = TaskState::Running;
        assert!(action_done(ActionKind::ScaleApplication, Some(&app), &ts.iter().collect::<Vec<_>>()));
        ts.push(task(&app, 3, TaskState::Running, -5));
        assert!(
            !action_done(ActionKind::RestartApplication, Some(&app), &ts.iter().collect::<Vec<_>>()),
            "old task still there"
        );
    }

    #[test]
    fn stop_is_done_when_nothing_runs() {
        let app = version(spec("/a", 1), 0);
        let ts = [task(&app, 1, TaskState::Killed, 0)];
        assert!(action_done(ActionKind::StopApplication, None, &ts.iter().collect::<Vec<_>>()));
        let ts = [task(&app, 1, TaskState::Running, 0)];
        assert!(!action_done(ActionKind::StopApplication, None, &ts.iter().collect::<Vec<_>>()));
    }
}
