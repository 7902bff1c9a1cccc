//! Plans for the write path: pure functions from the current state and `now` to the
//! changes that carry out one request, plus what the caller reports back. The API hands
//! them to [`super::Master::write`]; they hold what a change *means* (versions,
//! deployments, task goals, service ports), so handlers only parse and render.

use super::state::State;
use super::{MasterError, SERVICE_PORTS};
use crate::domain::deployment::ActionKind;
use crate::domain::task::Goal;
use crate::domain::{AppSpec, AppVersion, Deployment, PathId, Task, TaskId, Timestamp, Violation};
use crate::store::{Change, MAX_VERSIONS};
use std::collections::BTreeMap;

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

/// `POST /v2/apps`: a new app (409 if the id exists).
pub fn create_app(state: &State, now: Timestamp, mut spec: AppSpec) -> Planned<Deployment> {
    if state.apps.contains_key(&spec.id) {
        return Err(MasterError::AppExists(spec.id));
    }
    assign_service_ports(state, &mut spec)?;
    Ok(version_changes(state, AppVersion::next(None, spec, now), ActionKind::StartApplication))
}

/// `PUT`/`PATCH`: create or replace the definition. `base` is the version the caller
/// built `spec` from (`None`: the app did not exist); if the app has changed since, the
/// plan answers [`MasterError::Retry`]. Returns the deployment and whether it created.
pub fn put_app(
    state: &State,
    now: Timestamp,
    mut spec: AppSpec,
    base: Option<Timestamp>,
    force: bool,
) -> Planned<(Deployment, bool)> {
    let cur = state.apps.get(&spec.id);
    if cur.map(|r| r.current.version) != base {
        return Err(MasterError::Retry);
    }
    check_lock(state, &spec.id, force)?;
    assign_service_ports(state, &mut spec)?;
    let action = match cur {
        None => ActionKind::StartApplication,
        Some(r) if r.current.spec.is_upgrade(&spec) => ActionKind::RestartApplication,
        Some(_) => ActionKind::ScaleApplication,
    };
    let next = AppVersion::next(cur.map(|r| &r.current), spec, now);
    let (changes, dep) = version_changes(state, next, action);
    Ok((changes, (dep, cur.is_none())))
}

/// `DELETE /v2/deployments/{id}` of an update: back to the earlier version `target`,
/// which must still be built on `base` (else [`MasterError::Retry`]). Supersedes the
/// running deployment.
pub fn roll_back_app(state: &State, now: Timestamp, target: AppVersion, base: Timestamp) -> Planned<Deployment> {
    let rec = state.apps.get(&target.spec.id).ok_or_else(|| MasterError::AppNotFound(target.spec.id.clone()))?;
    if rec.current.version != base {
        return Err(MasterError::Retry);
    }
    let action = if rec.current.spec.is_upgrade(&target.spec) {
        ActionKind::RestartApplication
    } else {
        ActionKind::ScaleApplication
    };
    Ok(version_changes(state, AppVersion::rolled_back(&rec.current, &target, now), action))
}

/// `POST /v2/apps/{id}/restart`: a new version of the same definition.
pub fn restart_app(state: &State, now: Timestamp, id: PathId, force: bool) -> Planned<Deployment> {
    check_lock(state, &id, force)?;
    let rec = state.apps.get(&id).ok_or(MasterError::AppNotFound(id))?;
    Ok(version_changes(state, AppVersion::restarted(&rec.current, now), ActionKind::RestartApplication))
}

/// `DELETE /v2/apps/{id}`: remove the app; its tasks are to be stopped.
pub fn delete_app(state: &State, now: Timestamp, id: PathId, force: bool) -> Planned<Deployment> {
    if !state.apps.contains_key(&id) {
        return Err(MasterError::AppNotFound(id));
    }
    check_lock(state, &id, force)?;
    let mut changes: Vec<Change> = state.deployments_of(&id).map(|d| Change::DeleteDeployment(d.id.clone())).collect();
    changes.push(Change::DeleteApp(id.clone()));
    for t in state.tasks_of(&id).filter(|t| t.is_active()) {
        let mut t = t.clone();
        t.goal = Goal::Stopped;
        changes.push(Change::PutTask(Box::new(t)));
    }
    let dep = Deployment::single(new_deployment_id(), now, ActionKind::StopApplication, id);
    changes.push(Change::PutDeployment(Box::new(dep.clone())));
    Ok((changes, dep))
}

/// Tasks killed by a request, each with its app's service ports (for rendering).
pub type Killed = Vec<(Task, Vec<u16>)>;

/// Kills tasks (goal Stopped). With `scale` each app's `instances` drops by the number of
/// its tasks killed (a new version and deployment); otherwise they are replaced. With
/// `single`, an unknown task is an error; otherwise it is skipped.
pub fn kill_tasks(
    state: &State,
    now: Timestamp,
    ids: &[TaskId],
    scale: bool,
    single: bool,
    force: bool,
) -> Planned<(Killed, Vec<Deployment>)> {
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
    let mut deps = Vec::new();
    if scale {
        for app in per_app.keys() {
            check_lock(state, app, force)?;
        }
        for (app, n) in per_app {
            if let Some(rec) = state.apps.get(&app) {
                let mut spec = rec.current.spec.clone();
                spec.instances = spec.instances.saturating_sub(n);
                let next = AppVersion::next(Some(&rec.current), spec, now);
                let (cs, dep) = version_changes(state, next, ActionKind::ScaleApplication);
                changes.extend(cs);
                deps.push(dep);
            }
        }
    }
    Ok((changes, (killed, deps)))
}

/// Changes that make `next` the current version of its app: the version itself, a
/// deployment for it, and pruning of history beyond [`MAX_VERSIONS`].
pub fn version_changes(state: &State, next: AppVersion, action: ActionKind) -> (Vec<Change>, Deployment) {
    let id = next.spec.id.clone();
    let deployment = Deployment::single(new_deployment_id(), next.version, action, id.clone());
    let mut changes = Vec::new();
    // A newer change to the same app supersedes its running deployments.
    for d in state.deployments_of(&id) {
        changes.push(Change::DeleteDeployment(d.id.clone()));
    }
    if let Some(rec) = state.apps.get(&id) {
        if rec.versions.len() >= MAX_VERSIONS {
            let keep_from = rec.versions[rec.versions.len() + 1 - MAX_VERSIONS];
            changes.push(Change::PruneVersions(id.clone(), keep_from));
        }
    }
    changes.push(Change::PutApp(Box::new(next)));
    changes.push(Change::PutDeployment(Box::new(deployment.clone())));
    (changes, deployment)
}

/// Assigns cluster-unique service ports to port definitions / mappings that ask for
/// one (port 0), avoiding the ports of every other app.
pub fn assign_service_ports(state: &State, spec: &mut AppSpec) -> Result<(), MasterError> {
    let mut used: std::collections::BTreeSet<u16> = state
        .apps
        .values()
        .filter(|r| r.current.spec.id != spec.id)
        .flat_map(|r| r.current.spec.service_ports())
        .collect();
    used.extend(spec.service_ports().into_iter().filter(|p| *p != 0));
    let mut next = SERVICE_PORTS.0;
    let mut take = || -> Option<u16> {
        while next <= SERVICE_PORTS.1 {
            let p = next;
            next += 1;
            if !used.contains(&p) {
                used.insert(p);
                return Some(p);
            }
        }
        None
    };
    let exhausted =
        || MasterError::Invalid(vec![Violation::new("/portDefinitions", "no free service port left in 10000-20000")]);
    if spec.is_host_networking() {
        for pd in spec.port_definitions.iter_mut().filter(|p| p.port == 0) {
            pd.port = take().ok_or_else(exhausted)? as i64;
        }
    } else if let Some(pms) = spec.container.as_mut().and_then(|c| c.port_mappings.as_mut()) {
        for pm in pms.iter_mut().filter(|p| p.service_port == 0) {
            pm.service_port = take().ok_or_else(exhausted)? as i64;
        }
    }
    Ok(())
}
