//! Plans for the group API (`/v2/groups`): each turns a request into a [`TreeChange`]
//! over the whole subtree and hands it to [`plans::deploy`], so groups get the same
//! locks, versions and dependency-ordered deployments as single apps.
//!
//! A group update follows Marathon: fields left out keep what is there; `apps`, when
//! given, is the group's complete list of its own apps (the others are removed);
//! `groups`, when given, is the complete list of its subgroups (a subgroup left out is
//! removed with everything beneath it), each applied as an update in turn.

use super::plans::{self, AppChange, Planned, TreeChange};
use super::state::State;
use super::MasterError;
use crate::domain::group::scaled;
use crate::domain::{AppSpec, Deployment, GroupSpec, GroupVersion, PathId, Timestamp};

/// A group definition as sent to `POST`/`PUT /v2/groups`, with absolute ids. `None`
/// keeps what the group has.
#[derive(Debug, Clone, Default)]
pub struct GroupUpdate {
    pub id: PathId,
    pub dependencies: Option<Vec<PathId>>,
    pub enforce_role: Option<bool>,
    pub apps: Option<Vec<AppSpec>>,
    pub groups: Option<Vec<GroupUpdate>>,
}

/// The groups directly beneath `id` (explicit ones and those implied by app ids).
fn subgroups(state: &State, id: &PathId) -> Vec<PathId> {
    state.tree().all_groups().into_iter().filter(|g| !g.is_root() && g.parent() == *id).collect()
}

fn exists(state: &State, id: &PathId) -> bool {
    state.tree().has_group(id)
}

/// Adds the removal of group `id` and everything beneath it to `change`.
fn remove_subtree(state: &State, id: &PathId, change: &mut TreeChange) {
    for (app, rec) in state.apps.iter().filter(|(a, _)| a.is_within(id)) {
        change.base.insert(app.clone(), Some(rec.current.version));
        change.apps.insert(app.clone(), AppChange::Remove);
    }
    for g in state.groups.keys().filter(|g| g.is_within(id)) {
        change.groups.insert(g.clone(), None);
    }
}

/// Adds what `update` asks of its group (and, recursively, its subgroups) to `change`.
fn apply(state: &State, update: GroupUpdate, change: &mut TreeChange) {
    let id = update.id.clone();
    if !id.is_root() {
        let cur = state.groups.get(&id);
        change.groups.insert(
            id.clone(),
            Some(GroupSpec {
                id: id.clone(),
                dependencies: update.dependencies.or_else(|| cur.map(|g| g.dependencies.clone())).unwrap_or_default(),
                enforce_role: update.enforce_role.or(cur.map(|g| g.enforce_role)).unwrap_or(false),
                version: Timestamp::default(),
            }),
        );
    }
    if let Some(apps) = update.apps {
        for (app, rec) in state.apps.iter().filter(|(a, _)| a.parent() == id) {
            if !apps.iter().any(|s| s.id == *app) {
                change.base.insert(app.clone(), Some(rec.current.version));
                change.apps.insert(app.clone(), AppChange::Remove);
            }
        }
        for spec in apps {
            change.base.insert(spec.id.clone(), state.apps.get(&spec.id).map(|r| r.current.version));
            change.apps.insert(spec.id.clone(), AppChange::Put(spec));
        }
    }
    if let Some(groups) = update.groups {
        for g in subgroups(state, &id) {
            if !groups.iter().any(|u| u.id == g) {
                remove_subtree(state, &g, change);
            }
        }
        for g in groups {
            apply(state, g, change);
        }
    }
}

/// `POST /v2/groups`: a new group (409 if it or an app of that id exists).
pub fn create_group(state: &State, now: Timestamp, update: GroupUpdate, force: bool) -> Planned<Deployment> {
    if exists(state, &update.id) || state.apps.contains_key(&update.id) {
        return Err(MasterError::GroupExists(update.id));
    }
    let mut change = TreeChange { force, record: Some(update.id.clone()), ..Default::default() };
    apply(state, update, &mut change);
    plans::deploy(state, now, change)
}

/// `PUT /v2/groups/{id}`: create or change a group (missing groups are created).
pub fn update_group(state: &State, now: Timestamp, update: GroupUpdate, force: bool) -> Planned<Deployment> {
    let mut change = TreeChange { force, record: Some(update.id.clone()), ..Default::default() };
    apply(state, update, &mut change);
    plans::deploy(state, now, change)
}

/// What a `PUT /v2/groups/{id}` asks for.
#[derive(Debug, Clone)]
pub enum GroupChange {
    Update(GroupUpdate),
    /// `{"scaleBy": f}` on the group.
    ScaleBy(PathId, f64),
    /// `{"version": v}`: the group as it was then.
    RollBack(GroupVersion),
}

/// `PUT /v2/groups/{id}`: any of the three forms.
pub fn change_group(state: &State, now: Timestamp, change: GroupChange, force: bool) -> Planned<Deployment> {
    match change {
        GroupChange::Update(u) => update_group(state, now, u, force),
        GroupChange::ScaleBy(id, f) => scale_group(state, now, id, f, force),
        GroupChange::RollBack(old) => roll_back_group(state, now, old, force),
    }
}

/// `PUT /v2/groups/{id}` with `{"scaleBy": f}`: every app beneath scales by `factor`.
pub fn scale_group(state: &State, now: Timestamp, id: PathId, factor: f64, force: bool) -> Planned<Deployment> {
    if !exists(state, &id) {
        return Err(MasterError::GroupNotFound(id));
    }
    let mut change = TreeChange { force, record: Some(id.clone()), ..Default::default() };
    for (app, rec) in state.apps.iter().filter(|(a, _)| a.is_within(&id)) {
        let mut spec = rec.current.spec.clone();
        spec.instances = scaled(&spec, factor);
        change.base.insert(app.clone(), Some(rec.current.version));
        change.apps.insert(app.clone(), AppChange::Put(spec));
    }
    plans::deploy(state, now, change)
}

/// `PUT /v2/groups/{id}` with `{"version": v}`: the group's subtree as it was at `old`:
/// apps added since are removed, removed ones come back, the others return to their
/// definitions of then.
pub fn roll_back_group(state: &State, now: Timestamp, old: GroupVersion, force: bool) -> Planned<Deployment> {
    let id = old.id.clone();
    let mut change = TreeChange { force, record: Some(id.clone()), ..Default::default() };
    remove_subtree(state, &id, &mut change);
    for g in old.groups {
        change.groups.insert(g.id.clone(), Some(g));
    }
    for v in old.apps {
        let app = v.spec.id.clone();
        change.base.insert(app.clone(), state.apps.get(&app).map(|r| r.current.version));
        change.apps.insert(app, AppChange::RollBack(v));
    }
    plans::deploy(state, now, change)
}

/// `DELETE /v2/groups/{id}`: the group goes with everything beneath it.
pub fn delete_group(state: &State, now: Timestamp, id: PathId, force: bool) -> Planned<Deployment> {
    if !exists(state, &id) {
        return Err(MasterError::GroupNotFound(id));
    }
    let mut change = TreeChange { force, ..Default::default() };
    remove_subtree(state, &id, &mut change);
    plans::deploy(state, now, change)
}

/// `PATCH /v2/groups/{id}` with `{"enforceRole": b}`: top-level groups only; no
/// deployment (Marathon 1.9: the role applies to apps created from now on).
pub fn set_enforce_role(state: &State, now: Timestamp, id: PathId, enforce: bool) -> Planned<GroupSpec> {
    if id.segments().len() != 1 {
        return Err(MasterError::Invalid(vec![crate::domain::Violation::new(
            "/enforceRole",
            "only top-level groups have enforceRole",
        )]));
    }
    if !exists(state, &id) {
        return Err(MasterError::GroupNotFound(id));
    }
    let mut g = state.groups.get(&id).cloned().unwrap_or(GroupSpec {
        id: id.clone(),
        dependencies: vec![],
        enforce_role: false,
        version: now,
    });
    g.enforce_role = enforce;
    g.version = now;
    Ok((vec![crate::store::Change::PutGroup(Box::new(g.clone()))], g))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::deployment::ActionKind;
    use crate::domain::AppVersion;
    use crate::scheduler::reconcile::tests::spec;

    fn p(s: &str) -> PathId {
        PathId::parse_app(s).expect("test id")
    }

    /// Applies a plan's changes to `state`, as the write path does.
    fn commit<R>(state: &mut State, plan: impl FnOnce(&State) -> Planned<R>) -> R {
        let (changes, r) = plan(state).expect("plan succeeds");
        for c in &changes {
            state.apply(c);
        }
        r
    }

    fn actions(d: &Deployment) -> Vec<Vec<(ActionKind, String)>> {
        d.steps.iter().map(|s| s.iter().map(|a| (a.action, a.app.to_string())).collect()).collect()
    }

    fn shop(web_cmd: &str) -> GroupUpdate {
        let db = spec("/shop/db", 1);
        let mut web = spec("/shop/web", 2);
        web.cmd = Some(web_cmd.into());
        web.dependencies = vec![p("/shop/db")];
        GroupUpdate { id: p("/shop"), apps: Some(vec![db, web]), ..Default::default() }
    }

    #[test]
    fn a_group_deploys_in_dependency_order_and_records_a_version() {
        let mut st = State::default();
        let d = commit(&mut st, |s| create_group(s, Timestamp::from_millis(1), shop("a"), false));
        use ActionKind::*;
        assert_eq!(
            actions(&d),
            vec![
                vec![(StartApplication, "/shop/db".into()), (StartApplication, "/shop/web".into())],
                vec![(ScaleApplication, "/shop/db".into())],
                vec![(ScaleApplication, "/shop/web".into())],
            ]
        );
        assert!(st.groups.contains_key(&p("/shop")));
        assert_eq!(st.group_versions[&p("/shop")].len(), 1);
        // Creating it again is a conflict.
        assert!(matches!(
            create_group(&st, Timestamp::from_millis(2), shop("a"), true),
            Err(MasterError::GroupExists(_))
        ));
        // A changed cmd restarts only web; the running deployment locks both apps.
        assert!(matches!(
            update_group(&st, Timestamp::from_millis(3), shop("b"), false),
            Err(MasterError::AppLocked(_))
        ));
        let d2 = commit(&mut st, |s| update_group(s, Timestamp::from_millis(3), shop("b"), true));
        assert_eq!(actions(&d2), vec![vec![(RestartApplication, "/shop/web".into())]]);
        assert_eq!(st.deployments.len(), 1, "the forced change superseded the first deployment");
    }

    #[test]
    fn an_unchanged_app_keeps_its_service_port_and_lock() {
        let mut st = State::default();
        let mut u = shop("a");
        if let Some(apps) = u.apps.as_mut() {
            apps[0].port_definitions[0].port = 0; // db asks for a service port
        }
        commit(&mut st, |s| create_group(s, Timestamp::from_millis(1), u.clone(), false));
        let port = st.apps[&p("/shop/db")].current.spec.service_ports()[0];
        assert!(port >= 10000);
        // Sent again with port 0 and a changed web: db keeps its port, is not restarted,
        // and its part of the running deployment is not what the lock is about.
        if let Some(apps) = u.apps.as_mut() {
            apps[1].cmd = Some("b".into());
        }
        let d = commit(&mut st, |s| update_group(s, Timestamp::from_millis(2), u, true));
        assert_eq!(st.apps[&p("/shop/db")].current.spec.service_ports()[0], port);
        assert_eq!(actions(&d), vec![vec![(ActionKind::RestartApplication, "/shop/web".into())]]);
    }

    #[test]
    fn leaving_out_apps_or_groups_removes_them() {
        let mut st = State::default();
        let mut u = shop("a");
        u.groups = Some(vec![GroupUpdate {
            id: p("/shop/tools"),
            apps: Some(vec![spec("/shop/tools/x", 1)]),
            ..Default::default()
        }]);
        commit(&mut st, |s| create_group(s, Timestamp::from_millis(1), u, false));
        assert!(st.apps.contains_key(&p("/shop/tools/x")));
        // Only apps given: subgroups stay.
        let only_db = GroupUpdate { id: p("/shop"), apps: Some(vec![spec("/shop/db", 1)]), ..Default::default() };
        let d = commit(&mut st, |s| update_group(s, Timestamp::from_millis(2), only_db, true));
        assert_eq!(actions(&d), vec![vec![(ActionKind::StopApplication, "/shop/web".into())]]);
        assert!(st.apps.contains_key(&p("/shop/tools/x")));
        // An empty subgroup list removes the subgroups with their apps.
        let no_groups = GroupUpdate { id: p("/shop"), groups: Some(vec![]), ..Default::default() };
        commit(&mut st, |s| update_group(s, Timestamp::from_millis(3), no_groups, true));
        assert!(!st.apps.contains_key(&p("/shop/tools/x")));
        assert!(!st.groups.contains_key(&p("/shop/tools")));
        assert!(st.apps.contains_key(&p("/shop/db")));
    }

    #[test]
    fn scale_by_rollback_and_delete() {
        let mut st = State::default();
        commit(&mut st, |s| create_group(s, Timestamp::from_millis(1), shop("a"), false));
        let v1 = GroupVersion {
            id: p("/shop"),
            version: Timestamp::from_millis(1),
            groups: st.groups.values().cloned().collect(),
            apps: st.apps.values().map(|r| r.current.clone()).collect::<Vec<AppVersion>>(),
        };
        let d = commit(&mut st, |s| scale_group(s, Timestamp::from_millis(2), p("/shop"), 1.5, true));
        assert_eq!(st.apps[&p("/shop/web")].current.spec.instances, 3);
        assert_eq!(st.apps[&p("/shop/db")].current.spec.instances, 2);
        assert!(d.steps.iter().flatten().all(|a| a.action == ActionKind::ScaleApplication));
        // Remove db, then roll back to v1: db returns, web scales back.
        let only_web = GroupUpdate { id: p("/shop"), apps: Some(vec![spec("/shop/web", 3)]), ..Default::default() };
        commit(&mut st, |s| update_group(s, Timestamp::from_millis(3), only_web, true));
        assert!(!st.apps.contains_key(&p("/shop/db")));
        commit(&mut st, |s| roll_back_group(s, Timestamp::from_millis(4), v1, true));
        assert_eq!(st.apps[&p("/shop/db")].current.spec.instances, 1);
        assert_eq!(st.apps[&p("/shop/web")].current.spec.cmd.as_deref(), Some("a"));
        // Deleting the group stops everything beneath.
        let d = commit(&mut st, |s| delete_group(s, Timestamp::from_millis(5), p("/shop"), true));
        assert!(st.apps.is_empty() && st.groups.is_empty());
        assert_eq!(d.removed.len(), 2, "the definitions are kept for a rollback");
        assert!(matches!(
            delete_group(&st, Timestamp::from_millis(6), p("/shop"), true),
            Err(MasterError::GroupNotFound(_))
        ));
    }

    #[test]
    fn cycles_and_app_group_clashes_are_refused() {
        let st = State::default();
        let mut u = shop("a");
        if let Some(apps) = u.apps.as_mut() {
            apps[0].dependencies = vec![p("/shop/web")];
        }
        let e = create_group(&st, Timestamp::from_millis(1), u, false).map(|_| ()).unwrap_err();
        assert!(matches!(e, MasterError::Invalid(ref v) if v[0].message.contains("cycle")), "{e:?}");
        let mut st = State::default();
        let (cs, _) = plans::create_app(&st, Timestamp::from_millis(1), spec("/shop", 1)).expect("created");
        cs.iter().for_each(|c| st.apply(c));
        assert!(matches!(
            create_group(&st, Timestamp::from_millis(2), shop("a"), false),
            Err(MasterError::GroupExists(_))
        ));
        let clash = plans::create_app(&st, Timestamp::from_millis(3), spec("/shop/x", 1)).map(|_| ());
        assert!(matches!(clash, Err(MasterError::Invalid(_))));
    }
}
