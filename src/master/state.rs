//! The master's in-memory view of the store. Only the write path changes it.
//!
//! The write path keeps two copies (see [`crate::master`]): its own, which plans read
//! and which changes as they run, and the published one readers lock, which gets the
//! same changes once they are committed. So readers never see anything that is not
//! durable, and never wait for planning or for the store.

use crate::domain::deployment::Mark;
use crate::domain::group::Tree;
use crate::domain::health::{Health, Readiness};
use crate::domain::job::{JobName, JobRecord, JobRun, RunKey};
use crate::domain::task::Goal;
use crate::domain::task::TaskFailure;
use crate::domain::{
    AgentId, AgentRecord, AppVersion, Deployment, DeploymentAction, GroupSpec, GroupVersion, PathId, Task, TaskId,
    Timestamp,
};
use crate::scheduler::reconcile::explain_action;
use crate::store::{Change, Snapshot};
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Debug, Clone)]
pub struct AppRecord {
    pub current: AppVersion,
    /// Stored versions, oldest first (the definitions stay in the store).
    pub versions: Vec<Timestamp>,
    pub last_failure: Option<TaskFailure>,
}

#[derive(Debug, Default, Clone)]
pub struct State {
    pub apps: BTreeMap<PathId, AppRecord>,
    pub tasks: BTreeMap<TaskId, Task>,
    pub tasks_by_app: BTreeMap<PathId, BTreeSet<TaskId>>,
    /// The tasks on each agent (an index into `tasks`): a registration reconciles the
    /// agent's own tasks without a pass over all of them.
    pub tasks_by_agent: HashMap<AgentId, BTreeSet<TaskId>>,
    /// How many tasks of each app are staged, running and active, kept as tasks change:
    /// summaries of every app (the dashboard, the app list by status) cost per app,
    /// not per task.
    pub task_counts: HashMap<PathId, TaskCounts>,
    pub deployments: BTreeMap<String, Deployment>,
    pub agents: BTreeMap<AgentId, AgentRecord>,
    /// Explicit groups (created or changed through the group API).
    pub groups: BTreeMap<PathId, GroupSpec>,
    /// Stored group versions, oldest first (the contents stay in the store).
    pub group_versions: BTreeMap<PathId, Vec<Timestamp>>,
    /// Health check states of running tasks, by check index, as their agents report
    /// them. Soft state: never stored; agents send it again when they register.
    pub health: HashMap<TaskId, BTreeMap<u16, Health>>,
    /// Readiness check answers of tasks, as their agents report them (soft state too).
    pub readiness: HashMap<TaskId, Readiness>,
    /// The last deployment of each app that failed its progress deadline (since this
    /// master started).
    pub deployment_failures: BTreeMap<PathId, DeploymentFailure>,
    pub jobs: BTreeMap<JobName, JobRecord>,
    /// Each job's runs by (due, attempt): the active ones and the recent history.
    pub runs: BTreeMap<JobName, BTreeMap<(Timestamp, u32), JobRun>>,
    /// Scheduled jobs by next due time: the job timer reads the front, never all jobs.
    pub timers: BTreeSet<(Timestamp, JobName)>,
    /// Each job's dependent jobs (an index of `parents`).
    pub children: BTreeMap<JobName, BTreeSet<JobName>>,
    /// Runs that are queued or running (an index into `runs`).
    pub active_runs: BTreeSet<RunKey>,
    /// Tasks that carry out job runs (an index into `tasks`).
    pub job_tasks: BTreeSet<TaskId>,
}

/// Task counts of one app ([`State::task_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskCounts {
    /// Staging or starting.
    pub staged: usize,
    pub running: usize,
    /// Not terminal: what takes resources on an agent.
    pub active: usize,
}

impl TaskCounts {
    /// What one task adds.
    pub fn of(t: &Task) -> TaskCounts {
        use crate::domain::TaskState;
        TaskCounts {
            staged: usize::from(matches!(t.state, TaskState::Staging | TaskState::Starting)),
            running: usize::from(t.state == TaskState::Running),
            active: usize::from(t.is_active()),
        }
    }

    pub fn add(&mut self, o: TaskCounts) {
        self.staged += o.staged;
        self.running += o.running;
        self.active += o.active;
    }

    fn sub(&mut self, o: TaskCounts) {
        self.staged = self.staged.saturating_sub(o.staged);
        self.running = self.running.saturating_sub(o.running);
        self.active = self.active.saturating_sub(o.active);
    }
}

/// A deployment that missed its progress deadline.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentFailure {
    pub id: String,
    pub at: Timestamp,
    pub reason: String,
    pub rolled_back: bool,
}

/// A change to the soft state: what agents report and the master notices, kept in
/// memory only (agents report it again after a restart).
#[derive(Debug, Clone)]
pub enum Soft {
    /// The state of a task's health check, by check index.
    Health(TaskId, u16, Health),
    Readiness(TaskId, Readiness),
    DeploymentFailed(PathId, DeploymentFailure),
}

impl State {
    /// Applies one change to the soft state.
    pub fn note(&mut self, s: &Soft) {
        match s {
            Soft::Health(task, index, h) => {
                self.health.entry(task.clone()).or_default().insert(*index, h.clone());
            }
            Soft::Readiness(task, r) => {
                self.readiness.insert(task.clone(), r.clone());
            }
            Soft::DeploymentFailed(app, f) => {
                self.deployment_failures.insert(app.clone(), f.clone());
            }
        }
    }

    /// Takes over `from`'s soft state for the tasks this state has (after a reload).
    pub fn keep_soft(&mut self, from: &State) {
        let tasks = &self.tasks;
        self.health =
            from.health.iter().filter(|(t, _)| tasks.contains_key(*t)).map(|(t, h)| (t.clone(), h.clone())).collect();
        self.readiness = from
            .readiness
            .iter()
            .filter(|(t, _)| tasks.contains_key(*t))
            .map(|(t, r)| (t.clone(), r.clone()))
            .collect();
        self.deployment_failures = from.deployment_failures.clone();
    }

    pub fn from_snapshot(s: Snapshot) -> State {
        let mut st = State::default();
        let mut versions: BTreeMap<PathId, Vec<Timestamp>> = s.versions.into_iter().collect();
        for (app, failure) in s.apps {
            let id = app.spec.id.clone();
            let vs = versions.remove(&id).unwrap_or_else(|| vec![app.version]);
            st.apps.insert(id, AppRecord { current: app, versions: vs, last_failure: failure });
        }
        for t in s.tasks {
            st.insert_task(t);
        }
        st.deployments = s.deployments.into_iter().map(|d| (d.id.clone(), d)).collect();
        st.agents = s.agents.into_iter().map(|a| (a.info.id.clone(), a)).collect();
        st.groups = s.groups.into_iter().map(|g| (g.id.clone(), g)).collect();
        st.group_versions = s.group_versions.into_iter().collect();
        for j in s.jobs {
            st.apply(&Change::PutJob(Box::new(j)));
        }
        for r in s.job_runs {
            st.apply(&Change::PutRun(Box::new(r)));
        }
        st
    }

    /// The tree a stored group version holds, as a state of its own (no tasks), so it
    /// renders like the live one.
    pub fn of_group_version(gv: GroupVersion) -> State {
        let mut st = State::default();
        for a in gv.apps {
            st.apply(&Change::PutApp(Box::new(a)));
        }
        st.groups = gv.groups.into_iter().map(|g| (g.id.clone(), g)).collect();
        st
    }

    fn insert_task(&mut self, t: Task) {
        if t.job.is_some() {
            self.job_tasks.insert(t.id.clone());
        }
        self.tasks_by_app.entry(t.app_id.clone()).or_default().insert(t.id.clone());
        self.tasks_by_agent.entry(t.agent_id.clone()).or_default().insert(t.id.clone());
        self.task_counts.entry(t.app_id.clone()).or_default().add(TaskCounts::of(&t));
        if let Some(old) = self.tasks.insert(t.id.clone(), t) {
            self.uncount(&old);
            let moved = self.tasks.get(&old.id).is_some_and(|t| t.agent_id != old.agent_id);
            if moved {
                self.unindex_agent(&old.agent_id, &old.id);
            }
        }
    }

    /// Takes `t` out of its app's counts.
    fn uncount(&mut self, t: &Task) {
        if let Some(c) = self.task_counts.get_mut(&t.app_id) {
            c.sub(TaskCounts::of(t));
            if *c == TaskCounts::default() {
                self.task_counts.remove(&t.app_id);
            }
        }
    }

    fn unindex_agent(&mut self, agent: &AgentId, task: &TaskId) {
        if let Some(set) = self.tasks_by_agent.get_mut(agent) {
            set.remove(task);
            if set.is_empty() {
                self.tasks_by_agent.remove(agent);
            }
        }
    }

    /// Applies one committed change.
    pub fn apply(&mut self, c: &Change) {
        match c {
            Change::PutApp(v) => {
                let id = v.spec.id.clone();
                match self.apps.get_mut(&id) {
                    Some(rec) => {
                        if rec.versions.last() != Some(&v.version) {
                            rec.versions.push(v.version);
                        }
                        rec.current = (**v).clone();
                    }
                    None => {
                        self.apps.insert(
                            id,
                            AppRecord { current: (**v).clone(), versions: vec![v.version], last_failure: None },
                        );
                    }
                }
            }
            Change::DeleteApp(id) => {
                self.apps.remove(id);
            }
            Change::PruneVersions(id, keep_from) => {
                if let Some(rec) = self.apps.get_mut(id) {
                    rec.versions.retain(|v| v >= keep_from);
                }
            }
            Change::SetLastFailure(f) => {
                if let Some(rec) = self.apps.get_mut(&f.app_id) {
                    rec.last_failure = Some((**f).clone());
                }
            }
            Change::PutTask(t) => self.insert_task((**t).clone()),
            Change::DeleteTask(id) => {
                self.job_tasks.remove(id);
                self.health.remove(id);
                self.readiness.remove(id);
                if let Some(t) = self.tasks.remove(id) {
                    if let Some(set) = self.tasks_by_app.get_mut(&t.app_id) {
                        set.remove(id);
                        if set.is_empty() {
                            self.tasks_by_app.remove(&t.app_id);
                        }
                    }
                    self.unindex_agent(&t.agent_id, id);
                    self.uncount(&t);
                }
            }
            Change::PutDeployment(d) => {
                self.deployments.insert(d.id.clone(), (**d).clone());
            }
            Change::DeleteDeployment(id, _) => {
                self.deployments.remove(id);
            }
            Change::PutAgent(a) => {
                self.agents.insert(a.info.id.clone(), (**a).clone());
            }
            Change::DeleteAgent(id) => {
                self.agents.remove(id);
            }
            Change::PutGroup(g) => {
                self.groups.insert(g.id.clone(), (**g).clone());
            }
            Change::DeleteGroup(id) => {
                self.groups.remove(id);
                self.group_versions.remove(id);
            }
            Change::PutGroupVersion(g) => {
                let list = self.group_versions.entry(g.id.clone()).or_default();
                if list.last() != Some(&g.version) {
                    list.push(g.version);
                }
            }
            Change::PruneGroupVersions(id, keep_from) => {
                if let Some(list) = self.group_versions.get_mut(id) {
                    list.retain(|v| v >= keep_from);
                }
            }
            Change::PutJob(j) => {
                let name = j.spec.name.clone();
                self.unlink_parents(&name);
                for p in &j.spec.parents {
                    self.children.entry(p.clone()).or_default().insert(name.clone());
                }
                if let Some(old) = self.jobs.get(&name).and_then(|o| o.status.next_due) {
                    self.timers.remove(&(old, name.clone()));
                }
                if let Some(next) = j.status.next_due {
                    self.timers.insert((next, name.clone()));
                }
                self.jobs.insert(name, (**j).clone());
            }
            Change::DeleteJob(name) => {
                self.unlink_parents(name);
                if let Some(old) = self.jobs.remove(name).and_then(|o| o.status.next_due) {
                    self.timers.remove(&(old, name.clone()));
                }
                for r in self.runs.remove(name).into_iter().flat_map(|r| r.into_values()) {
                    self.active_runs.remove(&r.key());
                }
            }
            Change::PutRun(r) => {
                match r.state.is_active() {
                    true => self.active_runs.insert(r.key()),
                    false => self.active_runs.remove(&r.key()),
                };
                self.runs.entry(r.job.clone()).or_default().insert((r.due, r.attempt), (**r).clone());
            }
            Change::DeleteRun(job, due, attempt) => {
                self.active_runs.remove(&RunKey { job: job.clone(), due: *due, attempt: *attempt });
                if let Some(runs) = self.runs.get_mut(job) {
                    runs.remove(&(*due, *attempt));
                    if runs.is_empty() {
                        self.runs.remove(job);
                    }
                }
            }
        }
    }

    /// Removes `job` from the children of its current parents.
    fn unlink_parents(&mut self, job: &JobName) {
        let parents = self.jobs.get(job).map(|j| j.spec.parents.clone()).unwrap_or_default();
        for p in parents {
            if let Some(set) = self.children.get_mut(&p) {
                set.remove(job);
                if set.is_empty() {
                    self.children.remove(&p);
                }
            }
        }
    }

    /// The active runs of a job (queued or running).
    pub fn active_runs_of<'a>(&'a self, job: &JobName) -> impl Iterator<Item = &'a JobRun> + 'a {
        self.runs.get(job).into_iter().flat_map(|r| r.values()).filter(|r| r.state.is_active())
    }

    pub fn run(&self, key: &RunKey) -> Option<&JobRun> {
        self.runs.get(&key.job)?.get(&(key.due, key.attempt))
    }

    /// What the agents' checks reported about tasks.
    pub fn probes(&self) -> crate::scheduler::reconcile::Probes<'_> {
        crate::scheduler::reconcile::Probes { health: &self.health, readiness: &self.readiness }
    }

    /// The app tree as it is: current app versions and explicit groups.
    pub fn tree(&self) -> Tree<'_> {
        Tree {
            apps: self.apps.iter().map(|(id, r)| (id.clone(), &r.current)).collect(),
            groups: self.groups.iter().map(|(id, g)| (id.clone(), g)).collect(),
        }
    }

    /// Active tasks placed on `agent` (a scan: used for agent views and liveness, not
    /// on the placement path).
    /// The active tasks on `agent`, in task id order.
    pub fn tasks_on<'a>(&'a self, agent: &'a AgentId) -> impl Iterator<Item = &'a Task> + 'a {
        let ids = self.tasks_by_agent.get(agent).into_iter().flatten();
        ids.filter_map(|id| self.tasks.get(id)).filter(|t| t.is_active())
    }

    /// Every task grouped by its app, each app's in task id order (as [`State::tasks_of`]
    /// gives them), from one pass over the tasks: task ids begin with their app's id, so
    /// an app's tasks mostly come one after another and each run of them costs one map
    /// operation instead of a lookup per task (the scheduler's pass over 100,000 tasks).
    pub fn tasks_grouped_by_app(&self) -> HashMap<&PathId, Vec<&Task>> {
        let mut out: HashMap<&PathId, Vec<&Task>> = HashMap::with_capacity(self.apps.len());
        let mut run: Option<(&PathId, Vec<&Task>)> = None;
        for t in self.tasks.values() {
            match run.as_mut() {
                Some((id, tasks)) if **id == t.app_id => tasks.push(t),
                _ => {
                    if let Some((id, tasks)) = run.replace((&t.app_id, vec![t])) {
                        out.entry(id).or_default().extend(tasks);
                    }
                }
            }
        }
        if let Some((id, tasks)) = run {
            out.entry(id).or_default().extend(tasks);
        }
        out
    }

    pub fn tasks_of<'a>(&'a self, app: &PathId) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks_by_app.get(app).into_iter().flatten().filter_map(|id| self.tasks.get(id))
    }

    /// How many of a deployment's steps are carried out (all of them: it is finished).
    pub fn deployment_progress(&self, d: &Deployment) -> usize {
        d.steps
            .iter()
            .position(|step| {
                !step.iter().all(|a| {
                    let app = self.apps.get(&a.app).map(|r| &r.current);
                    let tasks: Vec<&Task> = self.tasks_of(&a.app).collect();
                    crate::scheduler::reconcile::action_done(a.action, app, &tasks, self.probes())
                })
            })
            .unwrap_or(d.steps.len())
    }

    /// How far deployment `d` has got (for its progress deadline), with `steps` of its
    /// steps done ([`State::deployment_progress`]).
    pub fn deployment_mark(&self, d: &Deployment, steps: usize) -> Mark {
        let mut mark = Mark { steps: steps as u32, ..Default::default() };
        for a in d.steps.get(steps).into_iter().flatten() {
            let app = self.apps.get(&a.app).map(|r| &r.current);
            for t in self.tasks_of(&a.app).filter(|t| t.is_active()) {
                match app {
                    Some(app)
                        if t.goal == Goal::Running && t.config_version == app.version_info.last_config_change_at =>
                    {
                        mark.counted += self.probes().counts(t, &app.spec) as u32;
                    }
                    _ => mark.remaining += 1,
                }
            }
        }
        mark
    }

    /// Where one deployment action stands, in words.
    pub fn explain(&self, a: &DeploymentAction) -> String {
        let tasks: Vec<&Task> = self.tasks_of(&a.app).collect();
        let app = self.apps.get(&a.app).map(|r| &r.current);
        explain_action(a.action, app, &tasks, self.probes())
    }

    /// Where each action of deployment `d`'s current step (after `steps` done) stands.
    pub fn explain_step(&self, d: &Deployment, steps: usize) -> Vec<String> {
        let current = d.steps.get(steps).into_iter().flatten();
        current.map(|a| format!("{} {}: {}", a.action.name(), a.app, self.explain(a))).collect()
    }

    /// Deployments that involve `app`.
    pub fn deployments_of<'a>(&'a self, app: &'a PathId) -> impl Iterator<Item = &'a Deployment> + 'a {
        self.deployments.values().filter(move |d| d.affected_apps.contains(app))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TaskState;
    use crate::scheduler::reconcile::tests::{spec, task, version};
    use crate::store::Change;

    #[test]
    fn tasks_grouped_in_one_pass_are_each_apps_tasks_in_order() {
        let mut state = State::default();
        let apps = [version(spec("/a", 3), 1), version(spec("/a.b", 2), 1), version(spec("/c", 1), 1)];
        for v in &apps {
            state.apply(&Change::PutApp(Box::new(v.clone())));
        }
        for (i, v) in apps.iter().enumerate() {
            for n in 0..(4 - i as u32) {
                state.apply(&Change::PutTask(Box::new(task(v, n, TaskState::Running, 1))));
            }
        }
        // A task whose app is gone still shows up, under its app's id.
        let gone = version(spec("/gone", 1), 1);
        state.apply(&Change::PutTask(Box::new(task(&gone, 0, TaskState::Running, 1))));
        let grouped = state.tasks_grouped_by_app();
        assert_eq!(grouped.len(), 4);
        for v in apps.iter().chain([&gone]) {
            let id = &v.spec.id;
            let ids = |ts: Vec<&Task>| ts.into_iter().map(|t| t.id.clone()).collect::<Vec<_>>();
            assert_eq!(ids(grouped[id].clone()), ids(state.tasks_of(id).collect()), "{id}");
        }
    }

    #[test]
    fn the_tasks_on_an_agent_follow_puts_moves_ends_and_deletes() {
        let mut state = State::default();
        let v = version(spec("/a", 3), 1);
        let on = |state: &State, agent: &str| -> Vec<TaskId> {
            let agent = AgentId(agent.into());
            let scanned: Vec<TaskId> =
                state.tasks.values().filter(|t| t.agent_id == agent && t.is_active()).map(|t| t.id.clone()).collect();
            let indexed: Vec<TaskId> = state.tasks_on(&agent).map(|t| t.id.clone()).collect();
            assert_eq!(indexed, scanned, "the index and a scan agree");
            indexed
        };
        let put = |state: &mut State, n: u32, agent: &str, st: TaskState| {
            let mut t = task(&v, n, st, 1);
            t.agent_id = AgentId(agent.into());
            state.apply(&Change::PutTask(Box::new(t)));
        };
        put(&mut state, 0, "a1", TaskState::Running);
        put(&mut state, 1, "a1", TaskState::Staging);
        put(&mut state, 2, "a2", TaskState::Running);
        assert_eq!((on(&state, "a1").len(), on(&state, "a2").len()), (2, 1));
        put(&mut state, 1, "a2", TaskState::Running); // the same task, now on a2
        assert_eq!((on(&state, "a1").len(), on(&state, "a2").len()), (1, 2));
        put(&mut state, 0, "a1", TaskState::Finished); // ended: no longer active
        assert!(on(&state, "a1").is_empty());
        let t2 = task(&v, 2, TaskState::Running, 1).id;
        state.apply(&Change::DeleteTask(t2));
        assert_eq!(on(&state, "a2").len(), 1);
        state.apply(&Change::DeleteTask(task(&v, 0, TaskState::Running, 1).id));
        assert!(!state.tasks_by_agent.contains_key(&AgentId("a1".into())), "empty sets are dropped");
    }

    #[test]
    fn task_counts_follow_every_change() {
        let mut state = State::default();
        let (a, b) = (version(spec("/a", 3), 1), version(spec("/b", 3), 1));
        let recount = |state: &State| {
            let mut counts: HashMap<PathId, TaskCounts> = HashMap::new();
            for t in state.tasks.values() {
                counts.entry(t.app_id.clone()).or_default().add(TaskCounts::of(t));
            }
            counts.retain(|_, c| *c != TaskCounts::default());
            assert_eq!(state.task_counts, counts);
        };
        let steps = [
            (&a, 0, Some(TaskState::Staging)),
            (&a, 0, Some(TaskState::Running)),
            (&a, 1, Some(TaskState::Starting)),
            (&b, 0, Some(TaskState::Running)),
            (&a, 1, Some(TaskState::Failed)),
            (&a, 0, Some(TaskState::Unreachable)),
            (&a, 1, None),
            (&b, 0, Some(TaskState::Killed)),
            (&b, 0, None),
            (&a, 0, None),
        ];
        for (v, n, st) in steps {
            match st {
                Some(st) => state.apply(&Change::PutTask(Box::new(task(v, n, st, 1)))),
                None => state.apply(&Change::DeleteTask(task(v, n, TaskState::Running, 1).id)),
            }
            recount(&state);
        }
        assert!(state.task_counts.is_empty());
    }
}
