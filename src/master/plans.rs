//! Plans for the write path: pure functions from the current state and `now` to the
//! changes that carry out one request, plus what the caller reports back. The API hands
//! them to [`super::Master::write`]; they hold what a change *means* (versions,
//! deployments, task goals, service ports), so handlers only parse and render.

use super::state::State;
use super::{MasterError, SERVICE_PORTS};
use crate::domain::deployment::{Deadline, DeploymentEnd};
use crate::domain::group::{validate_tree, MAX_GROUP_VERSIONS};
use crate::domain::task::Goal;
use crate::domain::{
    AppSpec, AppVersion, Deployment, GroupSpec, GroupVersion, PathId, Task, TaskId, Timestamp, Violation,
};
use crate::scheduler::deploy::plan_steps;
use crate::store::{Change, MAX_VERSIONS};
use std::collections::{BTreeMap, BTreeSet};

/// What a plan returns: the changes to commit and the caller's result.
pub type Planned<R> = Result<(Vec<Change>, R), MasterError>;

fn new_deployment_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Marathon's app lock: while a deployment of `id` runs, a change needs `force`, which
/// then supersedes that deployment (without rolling it back).
fn check_lock(state: &State, id: &PathId, force: bool) -> Result<(), MasterError> {
    let running: Vec<String> = state.deployments_of(id).map(|d| d.id.clone()).collect();
    match force || running.is_empty() {
        true => Ok(()),
        false => Err(MasterError::AppLocked(running)),
    }
}

/// What one app becomes in a change of the tree.
#[derive(Debug, Clone)]
pub enum AppChange {
    /// A new definition: created, or replacing the current one.
    Put(AppSpec),
    /// The same definition in a new version, every task replaced.
    Restart,
    /// Back to an earlier version (tasks still running it count as current again), or
    /// brought back after a removal.
    RollBack(AppVersion),
    Remove,
}

/// A change of the app tree, carried out as one deployment by [`deploy`].
#[derive(Debug, Clone, Default)]
pub struct TreeChange {
    pub apps: BTreeMap<PathId, AppChange>,
    /// Explicit groups to create or change (`Some`; the version is set to now) or to
    /// remove (`None`).
    pub groups: BTreeMap<PathId, Option<GroupSpec>>,
    /// The version each app had when the caller built the change (`None`: it did not
    /// exist). If one has moved on since, the plan answers [`MasterError::Retry`].
    pub base: BTreeMap<PathId, Option<Timestamp>>,
    /// Record a version of this group afterwards (changes made through the group API).
    pub record: Option<PathId>,
    /// Override Marathon's app lock: running deployments of the changed apps are
    /// superseded (not rolled back).
    pub force: bool,
    /// Why dromos makes this change itself (shown with the deployment).
    pub reason: Option<String>,
}

impl TreeChange {
    /// A change of one app, built on `base`.
    pub fn app(id: PathId, change: AppChange, base: Option<Timestamp>, force: bool) -> TreeChange {
        let mut c = TreeChange { force, ..Default::default() };
        c.base.insert(id.clone(), base);
        c.apps.insert(id, change);
        c
    }
}

/// The one way the app tree changes: new app versions, removed apps, groups, and the
/// deployment the planner makes of it (also for a dry run, whose changes are dropped).
pub fn deploy(state: &State, now: Timestamp, change: TreeChange) -> Planned<Deployment> {
    let TreeChange { apps, groups, base, record, force, reason } = change;
    for (id, b) in &base {
        if state.apps.get(id).map(|r| r.current.version) != *b {
            return Err(MasterError::Retry);
        }
    }
    let mut changes = Vec::new();
    // The new versions. Service ports stay unique across the cluster: those of apps
    // outside the change, the fixed ones inside it, then each assigned one.
    let mut used: BTreeSet<u16> = state
        .apps
        .values()
        .filter(|r| !apps.contains_key(&r.current.spec.id))
        .flat_map(|r| r.current.spec.service_ports())
        .collect();
    for c in apps.values() {
        if let AppChange::Put(spec) = c {
            used.extend(spec.service_ports().into_iter().filter(|p| *p != 0));
        }
    }
    let mut next: BTreeMap<PathId, Option<AppVersion>> = BTreeMap::new();
    for (id, c) in apps {
        let cur = state.apps.get(&id).map(|r| &r.current);
        let v = match (c, cur) {
            (AppChange::Remove, _) => None,
            (AppChange::Put(mut spec), cur) => {
                if let Some(cur) = cur {
                    keep_service_ports(&cur.spec, &mut spec, &mut used);
                }
                assign_service_ports(&mut used, &mut spec)?;
                Some(AppVersion::next(cur, spec, now))
            }
            (AppChange::Restart, Some(cur)) => Some(AppVersion::restarted(cur, now)),
            (AppChange::Restart, None) => return Err(MasterError::AppNotFound(id)),
            (AppChange::RollBack(old), Some(cur)) => Some(AppVersion::rolled_back(cur, &old, now)),
            (AppChange::RollBack(old), None) => Some(AppVersion::next(None, old.spec, now)),
        };
        if v.is_none() && cur.is_none() {
            return Err(MasterError::AppNotFound(id));
        }
        next.insert(id, v);
    }
    let groups: BTreeMap<PathId, Option<GroupSpec>> =
        groups.into_iter().map(|(id, g)| (id, g.map(|g| GroupSpec { version: now, ..g }))).collect();

    // Plan from the tree as it is to the tree as it will be.
    let original = state.tree();
    let mut target = state.tree();
    for (id, v) in &next {
        match v {
            Some(v) => target.apps.insert(id.clone(), v),
            None => target.apps.remove(id),
        };
    }
    for (id, g) in &groups {
        match g {
            Some(g) => target.groups.insert(id.clone(), g),
            None => target.groups.remove(id),
        };
    }
    let violations = validate_tree(&target);
    if !violations.is_empty() {
        return Err(MasterError::Invalid(violations));
    }
    let steps = plan_steps(&original, &target);
    let mut affected: Vec<PathId> = Vec::new();
    for a in steps.iter().flatten() {
        if !affected.contains(&a.app) {
            affected.push(a.app.clone());
        }
    }
    // Marathon's lock holds for the apps the plan acts on; with `force` their running
    // deployments are superseded.
    let mut superseded = BTreeSet::new();
    for id in &affected {
        check_lock(state, id, force)?;
        superseded.extend(state.deployments_of(id).map(|d| d.id.clone()));
    }
    changes.extend(superseded.into_iter().map(|id| Change::DeleteDeployment(id, DeploymentEnd::Superseded)));
    // The tightest progress deadline among the apps it deploys.
    let deadline = affected
        .iter()
        .filter_map(|id| target.apps.get(id))
        .filter_map(|a| {
            let us = &a.spec.upgrade_strategy;
            us.progress_deadline_seconds.map(|seconds| Deadline { seconds, rollback: us.rollback_on_failure })
        })
        .min_by_key(|d| d.seconds);
    let deployment = Deployment {
        id: new_deployment_id(),
        version: now,
        deadline,
        mark: None,
        last_progress_at: now,
        reason,
        original: affected
            .iter()
            .filter_map(|id| state.apps.get(id).map(|r| (id.clone(), r.current.version)))
            .collect(),
        removed: next
            .iter()
            .filter(|(_, v)| v.is_none())
            .filter_map(|(id, _)| state.apps.get(id).map(|r| r.current.clone()))
            .collect(),
        affected_apps: affected,
        steps,
    };
    let recorded = record.map(|gid| GroupVersion {
        version: now,
        groups: target.groups.values().filter(|g| g.id.is_within(&gid)).map(|g| (*g).clone()).collect(),
        apps: target.apps.values().filter(|a| a.spec.id.is_within(&gid)).map(|a| (*a).clone()).collect(),
        id: gid,
    });

    for (id, v) in next {
        match v {
            Some(v) => {
                if let Some(rec) = state.apps.get(&id) {
                    if rec.versions.len() >= MAX_VERSIONS {
                        let keep_from = rec.versions[rec.versions.len() + 1 - MAX_VERSIONS];
                        changes.push(Change::PruneVersions(id.clone(), keep_from));
                    }
                }
                changes.push(Change::PutApp(Box::new(v)));
            }
            None => {
                changes.push(Change::DeleteApp(id.clone()));
                for t in state.tasks_of(&id).filter(|t| t.is_active()) {
                    let mut t = t.clone();
                    t.goal = Goal::Stopped;
                    changes.push(Change::PutTask(Box::new(t)));
                }
            }
        }
    }
    for (id, g) in groups {
        match g {
            Some(g) => changes.push(Change::PutGroup(Box::new(g))),
            None if state.groups.contains_key(&id) => changes.push(Change::DeleteGroup(id)),
            None => {}
        }
    }
    if let Some(gv) = recorded {
        if let Some(list) = state.group_versions.get(&gv.id) {
            if list.len() >= MAX_GROUP_VERSIONS {
                changes.push(Change::PruneGroupVersions(gv.id.clone(), list[list.len() + 1 - MAX_GROUP_VERSIONS]));
            }
        }
        changes.push(Change::PutGroupVersion(Box::new(gv)));
    }
    changes.push(Change::PutDeployment(Box::new(deployment.clone())));
    Ok((changes, deployment))
}

/// `POST /v2/apps`: a new app (409 if the id exists).
pub fn create_app(state: &State, now: Timestamp, spec: AppSpec) -> Planned<Deployment> {
    if state.apps.contains_key(&spec.id) {
        return Err(MasterError::AppExists(spec.id));
    }
    deploy(state, now, TreeChange::app(spec.id.clone(), AppChange::Put(spec), None, false))
}

/// `PUT`/`PATCH`: create or replace the definition. `base` is the version the caller
/// built `spec` from (`None`: the app did not exist); if the app has changed since, the
/// plan answers [`MasterError::Retry`]. Returns the deployment and whether it created.
pub fn put_app(
    state: &State,
    now: Timestamp,
    spec: AppSpec,
    base: Option<Timestamp>,
    force: bool,
) -> Planned<(Deployment, bool)> {
    let created = base.is_none();
    let (changes, dep) = deploy(state, now, TreeChange::app(spec.id.clone(), AppChange::Put(spec), base, force))?;
    Ok((changes, (dep, created)))
}

/// `POST /v2/apps/{id}/restart`: a new version of the same definition.
pub fn restart_app(state: &State, now: Timestamp, id: PathId, force: bool) -> Planned<Deployment> {
    let base = state.apps.get(&id).map(|r| r.current.version).ok_or_else(|| MasterError::AppNotFound(id.clone()))?;
    deploy(state, now, TreeChange::app(id, AppChange::Restart, Some(base), force))
}

/// `DELETE /v2/apps/{id}`: remove the app; its tasks are to be stopped.
pub fn delete_app(state: &State, now: Timestamp, id: PathId, force: bool) -> Planned<Deployment> {
    let base = state.apps.get(&id).map(|r| r.current.version).ok_or_else(|| MasterError::AppNotFound(id.clone()))?;
    deploy(state, now, TreeChange::app(id, AppChange::Remove, Some(base), force))
}

/// Tasks killed by a request, each with its app's service ports (for rendering).
pub type Killed = Vec<(Task, Vec<u16>)>;

/// Kills tasks (goal Stopped). With `scale` each app's `instances` drops by the number of
/// its tasks killed (one deployment); otherwise they are replaced. With `single`, an
/// unknown task is an error; otherwise it is skipped.
pub fn kill_tasks(
    state: &State,
    now: Timestamp,
    ids: &[TaskId],
    scale: bool,
    single: bool,
    force: bool,
) -> Planned<(Killed, Option<Deployment>)> {
    let mut changes = Vec::new();
    let mut killed: Killed = Vec::new();
    let mut per_app: BTreeMap<PathId, u32> = BTreeMap::new();
    for id in ids {
        match state.tasks.get(id) {
            Some(t) if t.is_active() => {
                let mut stopped = t.clone();
                stopped.goal = Goal::Stopped;
                changes.push(Change::PutTask(Box::new(stopped)));
                if t.goal == Goal::Running {
                    *per_app.entry(t.app_id.clone()).or_default() += 1;
                }
                let sp = state.apps.get(&t.app_id).map(|r| r.current.spec.service_ports()).unwrap_or_default();
                killed.push((t.clone(), sp));
            }
            _ if single => return Err(MasterError::TaskNotFound(id.to_string())),
            _ => {}
        }
    }
    if !scale || per_app.is_empty() {
        return Ok((changes, (killed, None)));
    }
    let mut change = TreeChange { force, ..Default::default() };
    for (app, n) in per_app {
        if let Some(rec) = state.apps.get(&app) {
            let mut spec = rec.current.spec.clone();
            spec.instances = spec.instances.saturating_sub(n);
            change.base.insert(app.clone(), Some(rec.current.version));
            change.apps.insert(app, AppChange::Put(spec));
        }
    }
    let (cs, dep) = deploy(state, now, change)?;
    changes.extend(cs);
    Ok((changes, (killed, Some(dep))))
}

/// The service port slots of `spec` in port-index order: port definitions with host
/// networking, else port mappings.
fn service_port_slots(spec: &mut AppSpec) -> Vec<&mut i64> {
    if spec.is_host_networking() {
        spec.port_definitions.iter_mut().map(|p| &mut p.port).collect()
    } else {
        spec.container
            .as_mut()
            .and_then(|c| c.port_mappings.as_mut())
            .map(|pms| pms.iter_mut().map(|p| &mut p.service_port).collect())
            .unwrap_or_default()
    }
}

/// Gives port slots that ask for one (0) the service port the app had at that index
/// before, when no other app took it since: an unchanged definition keeps its ports (and
/// is not restarted for a new one).
fn keep_service_ports(before: &AppSpec, spec: &mut AppSpec, used: &mut BTreeSet<u16>) {
    let had = before.service_ports();
    for (i, slot) in service_port_slots(spec).into_iter().enumerate() {
        if let Some(&p) = had.get(i) {
            if *slot == 0 && p != 0 && used.insert(p) {
                *slot = p as i64;
            }
        }
    }
}

/// Assigns service ports to port slots that ask for one (port 0), avoiding `used` (the
/// ports of every other app) and adding what it takes.
fn assign_service_ports(used: &mut BTreeSet<u16>, spec: &mut AppSpec) -> Result<(), MasterError> {
    let mut next = SERVICE_PORTS.0;
    for slot in service_port_slots(spec).into_iter().filter(|p| **p == 0) {
        while next <= SERVICE_PORTS.1 && !used.insert(next) {
            next += 1;
        }
        if next > SERVICE_PORTS.1 {
            return Err(MasterError::Invalid(vec![Violation::new(
                "/portDefinitions",
                "no free service port left in 10000-20000",
            )]));
        }
        *slot = next as i64;
    }
    Ok(())
}
