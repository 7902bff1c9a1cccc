//! The job scheduler on the master: job writes (create or replace, delete, run now,
//! kill, mark successful) and the job tick, all as plans over the state that the single
//! write path commits.
//!
//! A run's life: it is recorded `Queued` (by its due time, a retry, a manual start or its
//! parents' success) in the same transaction that moves the job's timer on; the
//! scheduler tick places it like an app task and records it `Running` with its task in
//! one transaction; the task's terminal status is kept (not expunged as app tasks are)
//! until the job tick records how the run ended, queues its retry or its dependents, and
//! drops the task, again in one transaction. Each step is recorded once, so a crash at
//! any point neither loses a due run nor runs one twice: (job, due, attempt) is a run's
//! key in the store.

use super::plans::Planned;
use super::state::State;
use super::MasterError;
use crate::agent::docker::{DockerNetwork, DockerTask};
use crate::agent::protocol::{LaunchTask, TaskCommand};
use crate::domain::group::find_cycle;
use crate::domain::job::{JobEvent, JobName, JobRecord, JobRun, JobSpec, JobStatus, RunKey, RunState, RunTrigger};
use crate::domain::task::Goal;
use crate::domain::{AgentId, Resources, Task, TaskId, TaskState, Timestamp, Violation};
use crate::scheduler::jobs::{admit, due, parents_done, retry_at, Admission};
use crate::store::Change;
use std::collections::{BTreeMap, BTreeSet};

/// Finished runs kept per job (in memory and in the store).
pub const RUN_HISTORY: usize = 20;

/// What a job tick leads to besides its changes.
#[derive(Debug, Default)]
pub struct JobOutcome {
    pub events: Vec<JobEvent>,
    /// Tasks to kill (timed out, killed on request, replaced).
    pub kills: Vec<(AgentId, TaskId)>,
}

/// The resources a run of `job` takes on an agent.
pub fn run_resources(job: &JobSpec) -> Resources {
    Resources::new(job.cpus, job.mem, job.disk, 0.0)
}

/// Works on copies of the jobs a plan touches, so several decisions about one job in one
/// plan build on each other; `changes` turns them into one `PutJob` each.
struct Touched<'a> {
    state: &'a State,
    jobs: BTreeMap<JobName, JobRecord>,
    /// Runs changed or created by this plan, by key.
    runs: BTreeMap<RunKey, JobRun>,
    /// Runs that became active in this plan, per job (for concurrency decisions).
    out: JobOutcome,
    changes: Vec<Change>,
}

impl<'a> Touched<'a> {
    fn new(state: &'a State) -> Self {
        Touched { state, jobs: BTreeMap::new(), runs: BTreeMap::new(), out: JobOutcome::default(), changes: vec![] }
    }

    fn job(&mut self, name: &JobName) -> Option<&mut JobRecord> {
        if !self.jobs.contains_key(name) {
            let rec = self.state.jobs.get(name)?.clone();
            self.jobs.insert(name.clone(), rec);
        }
        self.jobs.get_mut(name)
    }

    fn status(&self, name: &JobName) -> Option<&JobStatus> {
        self.jobs.get(name).or_else(|| self.state.jobs.get(name)).map(|r| &r.status)
    }

    fn put_run(&mut self, run: JobRun) {
        self.runs.insert(run.key(), run);
    }

    /// The active runs of a job as this plan leaves them.
    fn active(&self, name: &JobName) -> Vec<JobRun> {
        let mut all: BTreeMap<RunKey, JobRun> = self.state.active_runs_of(name).map(|r| (r.key(), r.clone())).collect();
        for (k, r) in self.runs.iter().filter(|(k, _)| k.job == *name) {
            all.insert(k.clone(), r.clone());
        }
        all.into_values().filter(|r| r.state.is_active()).collect()
    }

    /// A due time not yet used by a run of the job with attempt 0 (manual and dependency
    /// runs are due "now"; two in the same millisecond move one on).
    fn free_due(&self, name: &JobName, mut at: Timestamp) -> Timestamp {
        let taken = |t: Timestamp| {
            let key = RunKey { job: name.clone(), due: t, attempt: 0 };
            self.runs.contains_key(&key) || self.state.run(&key).is_some()
        };
        while taken(at) {
            at = at.plus_millis(1);
        }
        at
    }

    /// Starts a run of `name` if its concurrency policy lets it (manual runs always
    /// start). Records when the job last started.
    fn start_run(&mut self, name: &JobName, due: Timestamp, trigger: RunTrigger, now: Timestamp) -> Option<JobRun> {
        // A due time is run once: a run already recorded under this key (it may have
        // ended, or still run) is never started again.
        let key = RunKey { job: name.clone(), due, attempt: 0 };
        if self.runs.contains_key(&key) || self.state.run(&key).is_some() {
            return None;
        }
        let active = self.active(name);
        let policy = self.state.jobs.get(name).or_else(|| self.jobs.get(name)).map(|r| r.spec.concurrency)?;
        let admission = match trigger {
            RunTrigger::Manual => Admission::Start,
            _ => admit(policy, active.len()),
        };
        match admission {
            Admission::Skip => {
                if let Some(j) = self.job(name) {
                    j.status.skipped_count += 1;
                }
                self.out.events.push(JobEvent::Skipped { job: name.clone(), due });
                return None;
            }
            Admission::ReplaceActive => {
                for r in active {
                    self.stop_run(r, RunState::Killed, now);
                }
            }
            Admission::Start => {}
        }
        let run = JobRun::queued(name.clone(), due, 0, trigger, now);
        if let Some(j) = self.job(name) {
            j.status.last_start = Some(now);
        }
        self.put_run(run.clone());
        Some(run)
    }

    /// Stops a run: a queued one ends at once, a running one when its task has ended.
    fn stop_run(&mut self, mut run: JobRun, end: RunState, now: Timestamp) {
        match run.state {
            RunState::Queued => {
                run.state = end;
                run.finished_at = Some(now);
                self.put_run(run);
            }
            RunState::Running if run.stopping.is_none() => {
                run.stopping = Some(end);
                if let Some(task) = run.task_id.as_deref().and_then(|id| id.parse::<TaskId>().ok()) {
                    if let Some(t) = self.state.tasks.get(&task).filter(|t| t.is_active()) {
                        let mut t = t.clone();
                        t.goal = Goal::Stopped;
                        self.out.kills.push((t.agent_id.clone(), t.id.clone()));
                        self.changes.push(Change::PutTask(Box::new(t)));
                    }
                }
                self.put_run(run);
            }
            _ => {}
        }
    }

    /// Records how a run ended and what follows: a retry, or the job's counters and its
    /// dependents.
    fn finish(&mut self, mut run: JobRun, ended: RunState, message: Option<String>, now: Timestamp) {
        run.state = ended;
        run.finished_at = Some(now);
        run.exit_code = message.as_deref().and_then(exit_code);
        // Why it was stopped (a timeout), then how its task ended.
        run.message = match (run.message.take(), &message) {
            (Some(reason), Some(m)) => Some(format!("{reason}: {m}")),
            (reason, m) => m.clone().or(reason),
        };
        let message = run.message.clone();
        let name = run.job.clone();
        let (due, attempt) = (run.due, run.attempt);
        self.put_run(run.clone());
        let Some(spec) = self.state.jobs.get(&name).map(|r| r.spec.clone()) else { return };
        match ended {
            RunState::Succeeded => {
                if let Some(j) = self.job(&name) {
                    j.status.success_count += 1;
                    j.status.last_success = Some(now);
                    j.status.errors_since_last_success = 0;
                }
                self.out.events.push(JobEvent::Succeeded { job: name.clone(), due, attempt });
                self.trigger_children(&name, now);
            }
            _ => {
                self.out.events.push(JobEvent::Failed {
                    job: name.clone(),
                    due,
                    attempt,
                    state: ended,
                    message: message.unwrap_or_default(),
                });
                // Killed on request: no retry (as Chronos).
                let retry = (ended != RunState::Killed).then(|| retry_at(&spec, attempt, now)).flatten();
                match retry {
                    Some(at) => {
                        let mut next = JobRun::queued(name.clone(), due, attempt + 1, run.trigger, at);
                        next.arguments = run.arguments.clone();
                        self.put_run(next);
                        self.out.events.push(JobEvent::Retried { job: name.clone(), due, attempt: attempt + 1, at });
                    }
                    None => {
                        if let Some(j) = self.job(&name) {
                            j.status.error_count += 1;
                            j.status.errors_since_last_success += 1;
                            j.status.last_error = Some(now);
                        }
                        if spec.soft_error {
                            self.trigger_children(&name, now);
                        }
                    }
                }
            }
        }
    }

    /// Marks `parent` done for its children (a success, or a final failure with
    /// `softError`) and queues a run of every child whose parents are all done since it
    /// last started.
    fn trigger_children(&mut self, parent: &JobName, now: Timestamp) {
        if let Some(j) = self.job(parent) {
            j.status.last_done = Some(now);
        }
        let children: Vec<JobName> = self.state.children.get(parent).into_iter().flatten().cloned().collect();
        for child in children {
            let Some(rec) = self.state.jobs.get(&child) else { continue };
            if rec.spec.disabled {
                continue;
            }
            let own = self.status(&child).cloned().unwrap_or_default();
            let parents: Vec<Option<JobStatus>> = rec.spec.parents.iter().map(|p| self.status(p).cloned()).collect();
            let refs: Vec<Option<&JobStatus>> = parents.iter().map(Option::as_ref).collect();
            if parents_done(&own, &refs) {
                let due = self.free_due(&child, now);
                self.start_run(&child, due, RunTrigger::Dependency, now);
            }
        }
    }

    fn into_changes(mut self) -> (Vec<Change>, JobOutcome) {
        // History: finished runs beyond the cap go, oldest first.
        for name in self.runs.keys().map(|k| k.job.clone()).collect::<BTreeSet<_>>() {
            let mut finished: Vec<(Timestamp, u32)> = self
                .state
                .runs
                .get(&name)
                .into_iter()
                .flat_map(|r| r.values())
                .filter(|r| !r.state.is_active())
                .map(|r| (r.due, r.attempt))
                .collect();
            for (k, r) in self.runs.iter().filter(|(k, _)| k.job == name) {
                finished.retain(|f| *f != (k.due, k.attempt));
                if !r.state.is_active() {
                    finished.push((k.due, k.attempt));
                }
            }
            finished.sort();
            let extra = finished.len().saturating_sub(RUN_HISTORY);
            for (due, attempt) in finished.into_iter().take(extra) {
                let key = RunKey { job: name.clone(), due, attempt };
                self.runs.remove(&key);
                self.changes.push(Change::DeleteRun(name.clone(), due, attempt));
            }
        }
        let mut changes = std::mem::take(&mut self.changes);
        changes.extend(self.runs.into_values().map(|r| Change::PutRun(Box::new(r))));
        changes.extend(self.jobs.into_values().map(|j| Change::PutJob(Box::new(j))));
        (changes, self.out)
    }
}

/// The exit status an agent's message reports (`... exited with status 3`).
fn exit_code(message: &str) -> Option<i32> {
    let rest = &message[message.find("status ")? + 7..];
    rest.split(|c: char| !c.is_ascii_digit() && c != '-').next()?.parse().ok()
}

/// How a job task's terminal state ends its run.
fn run_end(task: &Task, run: &JobRun) -> RunState {
    // A task that exited 0 succeeded, even if a stop (a timeout, a kill) raced it.
    match (task.state, run.stopping) {
        (TaskState::Finished, _) => RunState::Succeeded,
        (_, Some(end)) => end,
        _ => RunState::Failed,
    }
}

/// One pass of the job scheduler: ends runs whose tasks have ended (or vanished), stops
/// runs past their `maxCompletionTime`, and turns due timers into runs.
pub fn plan_jobs(state: &State, now: Timestamp) -> (Vec<Change>, JobOutcome) {
    let mut p = Touched::new(state);
    // Runs whose task has ended: recorded, and the task dropped, in one transaction.
    for id in &state.job_tasks {
        let Some(task) = state.tasks.get(id) else { continue };
        if task.is_active() {
            continue;
        }
        p.changes.push(Change::DeleteTask(task.id.clone()));
        let Some(key) = &task.job else { continue };
        // Only the run's own task ends it.
        let own = |r: &&JobRun| r.state == RunState::Running && r.task_id.as_deref() == Some(task.id.as_str());
        let Some(run) = state.run(key).filter(own).cloned() else { continue };
        let end = run_end(task, &run);
        p.finish(run, end, task.message.clone(), now);
    }
    for key in &state.active_runs {
        let Some(run) = state.run(key) else { continue };
        if run.state != RunState::Running || p.runs.contains_key(key) {
            continue;
        }
        let task = run.task_id.as_deref().and_then(|id| id.parse::<TaskId>().ok()).and_then(|id| state.tasks.get(&id));
        match task {
            // The task is gone without a word (expunged as unreachable): the run is lost.
            None => p.finish(run.clone(), RunState::Failed, Some("the run's task was lost".into()), now),
            Some(_) => {
                let limit = state.jobs.get(&key.job).map_or(0, |j| j.spec.max_completion_time_ms);
                let started = run.started_at.unwrap_or(now);
                if limit > 0 && run.stopping.is_none() && started.plus_millis(limit as i64) <= now {
                    let mut r = run.clone();
                    r.message = Some(format!("killed after maxCompletionTime ({} s)", limit / 1000));
                    p.stop_run(r, RunState::TimedOut, now);
                }
            }
        }
    }
    // Due timers, earliest first.
    let due_now: Vec<(Timestamp, JobName)> = state.timers.iter().take_while(|(t, _)| *t <= now).cloned().collect();
    for (next_due, name) in due_now {
        let Some(rec) = state.jobs.get(&name) else { continue };
        let Some(schedule) = rec.spec.schedule.clone() else { continue };
        let d = due(&schedule, next_due, now, rec.spec.epsilon_ms, rec.spec.missed_runs);
        if let Some(j) = p.job(&name) {
            j.status.next_due = d.next;
            j.status.missed_count += d.missed;
        }
        if let (true, Some(last)) = (d.missed > 0, d.last_missed) {
            p.out.events.push(JobEvent::Missed { job: name.clone(), count: d.missed, last });
        }
        if let Some(at) = d.run {
            p.start_run(&name, at, RunTrigger::Schedule, now);
        }
    }
    p.into_changes()
}

/// What placement needs to know about a run of `job`: an app-like spec of one instance
/// with the job's resources and constraints (Chronos's `EQUALS` is Marathon's `CLUSTER`).
pub fn run_spec(job: &JobSpec) -> Option<crate::domain::AppSpec> {
    let constraints: Vec<[&str; 3]> = job
        .constraints
        .iter()
        .map(|[field, op, value]| {
            [field.as_str(), if op == "EQUALS" { "CLUSTER" } else { op.as_str() }, value.as_str()]
        })
        .collect();
    let v = serde_json::json!({
        "id": "/dromos-job", "cmd": job.command, "instances": 1, "cpus": job.cpus, "mem": job.mem, "disk": job.disk,
        "gpus": 0, "networks": [{"mode": "host"}], "portDefinitions": [],
        "upgradeStrategy": {"minimumHealthCapacity": 1.0, "maximumOverCapacity": 1.0},
        "backoffSeconds": 1, "backoffFactor": 1.15, "maxLaunchDelaySeconds": 300,
        "constraints": constraints,
    });
    let mut v = v;
    if let Some(image) = &job.container_image {
        // Placement then picks an agent that runs Docker containers.
        v["container"] = serde_json::json!({"type": "DOCKER", "docker": {"image": image}});
    }
    let mut spec: crate::domain::AppSpec = serde_json::from_value(v).ok()?;
    let parsed: Option<Vec<_>> = job
        .constraints
        .iter()
        .map(|[f, op, value]| {
            let op = if op == "EQUALS" { "CLUSTER" } else { op.as_str() };
            crate::domain::app::Constraint::parse(&[f.clone(), op.to_string(), value.clone()]).ok()
        })
        .collect();
    spec.constraints = parsed?;
    spec.id = crate::domain::PathId::root();
    Some(spec)
}

/// When the job scheduler next has something to do: the earliest timer, or the earliest
/// retry still waiting for its time. (Runs already due but not yet placed wait for a
/// change, such as an agent with room, or for the periodic pass: counting them would
/// make the loop spin.)
pub fn next_wake(state: &State, now: Timestamp) -> Option<Timestamp> {
    let timer = state.timers.first().map(|(t, _)| *t);
    let retry = state
        .active_runs
        .iter()
        .filter_map(|k| state.run(k))
        .filter(|r| r.state == RunState::Queued && r.not_before > now)
        .map(|r| r.not_before)
        .min();
    timer.into_iter().chain(retry).min()
}

/// The queued runs ready to launch at `now`, high priority first, then by due time.
pub fn ready_runs(state: &State, now: Timestamp) -> Vec<(&JobRun, &JobSpec)> {
    let mut out: Vec<(&JobRun, &JobSpec)> = state
        .active_runs
        .iter()
        .filter_map(|k| state.run(k))
        .filter(|r| r.state == RunState::Queued && r.not_before <= now)
        // A disabled job runs only when started by hand.
        .filter_map(|r| {
            state.jobs.get(&r.job).filter(|j| !j.spec.disabled || r.trigger == RunTrigger::Manual).map(|j| (r, &j.spec))
        })
        // REPLACE: the new run waits until the one it replaces has ended.
        .filter(|(r, _)| !state.active_runs_of(&r.job).any(|a| a.state == RunState::Running && a.stopping.is_some()))
        .collect();
    out.sort_by_key(|(r, j)| (!j.high_priority, r.not_before, r.due));
    out
}

/// A new task for a run placed on `agent` with `host`: the task record (linked to the
/// run), the launch command, and the run as running.
pub fn launch_run(
    run: &JobRun,
    spec: &JobSpec,
    agent: &AgentId,
    host: &str,
    uuid: &str,
    now: Timestamp,
) -> (Task, LaunchTask, JobRun) {
    // At most 64 characters of the name: with the uuid the id stays well within the
    // task id length limit for every valid name.
    let safe: String =
        spec.name.as_str().to_ascii_lowercase().chars().take(64).map(|c| if c == '.' { '-' } else { c }).collect();
    // Lowercase letters, digits, '-', '_' and a uuid: always a valid task id.
    let id: TaskId = format!("job-{safe}.{uuid}._app.{}", run.attempt + 1)
        .parse()
        .unwrap_or_else(|_| unreachable!("job task ids use only safe characters"));
    let task = Task {
        id: id.clone(),
        app_id: crate::domain::PathId::root(),
        agent_id: agent.clone(),
        host: host.to_string(),
        state: TaskState::Staging,
        goal: Goal::Running,
        ports: vec![],
        version: now,
        config_version: now,
        staged_at: now,
        started_at: None,
        message: None,
        unreachable_since: None,
        job: Some(run.key()),
    };
    let mut env: BTreeMap<String, String> = spec.environment.iter().cloned().collect();
    let chronos_id = run.chronos_task_id();
    for (k, v) in [
        ("mesos_task_id", chronos_id.clone()),
        ("MESOS_TASK_ID", chronos_id),
        ("CHRONOS_JOB_NAME", spec.name.to_string()),
        ("CHRONOS_JOB_OWNER", spec.owner.clone()),
        ("CHRONOS_RESOURCE_CPU", spec.cpus.to_string()),
        ("CHRONOS_RESOURCE_MEM", spec.mem.to_string()),
        ("CHRONOS_RESOURCE_DISK", spec.disk.to_string()),
        ("CHRONOS_JOB_RUN_TIME", run.due.to_string()),
        ("CHRONOS_JOB_RUN_ATTEMPT", run.attempt.to_string()),
        ("HOST", host.to_string()),
    ] {
        env.insert(k.to_string(), v);
    }
    // Chronos appends a run's arguments to the command, without `;`.
    let extra: Option<String> = run.arguments.as_deref().map(|a| a.replace(';', ""));
    let command = match spec.shell {
        true => TaskCommand::Shell(match &extra {
            Some(a) if !a.trim().is_empty() => format!("{} {a}", spec.command),
            _ => spec.command.clone(),
        }),
        false => {
            let mut argv = vec![spec.command.clone()];
            argv.extend(spec.arguments.iter().cloned());
            argv.extend(extra.iter().flat_map(|a| a.split_whitespace().map(str::to_string)));
            TaskCommand::Argv(argv)
        }
    };
    let docker = spec.container_image.as_ref().map(|image| {
        let container = spec.extra.get("container");
        let setting = |k: &str| container.and_then(|c| c.get(k));
        let network = match setting("network").and_then(|n| n.as_str()) {
            Some("BRIDGE") => DockerNetwork::Bridge,
            _ => DockerNetwork::Host,
        };
        let (cmd, args) = match &command {
            TaskCommand::Shell(c) => (Some(c.clone()), vec![]),
            TaskCommand::Argv(a) => (None, a.clone()),
        };
        Box::new(DockerTask {
            image: image.clone(),
            force_pull_image: setting("forcePullImage").and_then(|f| f.as_bool()).unwrap_or(false),
            network,
            port_mappings: vec![],
            volumes: vec![],
            parameters: vec![],
            privileged: false,
            cpus: spec.cpus,
            mem_mb: spec.mem,
            cmd,
            args,
            env: env.clone(),
        })
    });
    let launch = LaunchTask {
        task_id: id.clone(),
        app_id: crate::domain::PathId::root(),
        command,
        docker,
        env,
        ports: vec![],
        kill_grace_ms: 3000,
        cpus: spec.cpus,
        mem_mb: spec.mem,
        health_checks: vec![],
        readiness: None,
    };
    let mut running = run.clone();
    running.state = RunState::Running;
    running.task_id = Some(id.as_str().to_string());
    running.host = Some(host.to_string());
    running.started_at = Some(now);
    (task, launch, running)
}

/// The started-event of a launched run.
pub fn started_event(run: &JobRun) -> JobEvent {
    JobEvent::Started {
        job: run.job.clone(),
        due: run.due,
        attempt: run.attempt,
        task_id: run.task_id.clone().unwrap_or_default(),
    }
}

fn not_found(name: &JobName) -> MasterError {
    MasterError::JobNotFound(name.to_string())
}

/// `POST /scheduler/iso8601` and `/dependency`: creates or replaces a job. The counters
/// are those sent (Chronos); when it last started and its runs are kept; an unchanged
/// schedule keeps its next due time, a new one starts from `now`.
pub fn put_job(state: &State, now: Timestamp, spec: JobSpec, sent: JobStatus) -> Planned<()> {
    let mut v = Vec::new();
    for (i, p) in spec.parents.iter().enumerate() {
        if *p == spec.name {
            v.push(Violation::new(format!("/parents/{i}"), "a job cannot depend on itself"));
        } else if !state.jobs.contains_key(p) {
            v.push(Violation::new(format!("/parents/{i}"), format!("there is no job named '{p}'")));
        }
    }
    if v.is_empty() && !spec.parents.is_empty() {
        // A cycle would run through this job: search its ancestors only.
        let mut edges: BTreeMap<JobName, BTreeSet<JobName>> = BTreeMap::new();
        let mut todo: Vec<JobName> = spec.parents.iter().cloned().collect();
        edges.insert(spec.name.clone(), spec.parents.clone());
        while let Some(j) = todo.pop() {
            if edges.contains_key(&j) {
                continue;
            }
            let parents = state.jobs.get(&j).map(|r| r.spec.parents.clone()).unwrap_or_default();
            todo.extend(parents.iter().cloned());
            edges.insert(j, parents);
        }
        if let Some(cycle) = find_cycle(&edges) {
            let names: Vec<String> = cycle.iter().rev().map(|n| n.to_string()).collect();
            v.push(Violation::new("/parents", format!("a dependency cycle: {}", names.join(" -> "))));
        }
    }
    if !v.is_empty() {
        return Err(MasterError::Invalid(v));
    }
    let old = state.jobs.get(&spec.name);
    let mut status = JobStatus {
        last_start: old.and_then(|o| o.status.last_start),
        last_done: old.and_then(|o| o.status.last_done),
        missed_count: old.map_or(0, |o| o.status.missed_count),
        skipped_count: old.map_or(0, |o| o.status.skipped_count),
        ..sent
    };
    status.next_due = match (&spec.schedule, spec.disabled) {
        (Some(s), false) => {
            let unchanged = old.filter(|o| !o.spec.disabled && o.spec.schedule.as_ref() == Some(s));
            // A new schedule's latest due time still runs if it is at most epsilon old
            // (an empty start is "now" by the time the job is stored); older ones were
            // never this job's to miss.
            let ran = |t: &Timestamp| state.run(&RunKey { job: spec.name.clone(), due: *t, attempt: 0 }).is_some();
            let recent =
                s.last_at_or_before(now).filter(|t| t.millis() >= now.millis() - spec.epsilon_ms as i64 && !ran(t));
            match unchanged.and_then(|o| o.status.next_due) {
                Some(kept) => Some(kept),
                None => recent.or_else(|| s.next_after(now)),
            }
        }
        _ => None,
    };
    Ok((vec![Change::PutJob(Box::new(JobRecord { spec, status }))], ()))
}

/// What deleting a job did to one of its children.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChildChange {
    pub name: JobName,
    pub now: String,
}

/// `DELETE /scheduler/job/{name}`: the job goes with its runs (running ones are killed;
/// with `keep_active`, Metronome's default, a job with active runs is refused instead).
/// Its children stay, with all their fields (Chronos rebuilt them and lost most): a child
/// left without parents takes the deleted job's schedule, or its parents.
pub fn delete_job(state: &State, now: Timestamp, name: &JobName, keep_active: bool) -> Planned<Vec<ChildChange>> {
    let rec = state.jobs.get(name).ok_or_else(|| not_found(name))?;
    if keep_active && state.active_runs_of(name).next().is_some() {
        return Err(MasterError::JobBusy(name.to_string()));
    }
    let mut changes = Vec::new();
    let mut kills = Touched::new(state);
    for r in state.active_runs_of(name).cloned().collect::<Vec<_>>() {
        kills.stop_run(r, RunState::Killed, now);
    }
    // Only the task kills survive: the runs go with the job.
    changes.extend(kills.changes);
    changes.push(Change::DeleteJob(name.clone()));
    let mut told = Vec::new();
    for child in state.children.get(name).into_iter().flatten().filter_map(|c| state.jobs.get(c)) {
        let mut c = child.clone();
        c.spec.parents.remove(name);
        let what = if !c.spec.parents.is_empty() {
            format!("depends on {}", names(&c.spec.parents))
        } else if !rec.spec.parents.is_empty() {
            c.spec.parents = rec.spec.parents.clone();
            format!("depends on {} (the parents of '{name}')", names(&c.spec.parents))
        } else {
            c.spec.schedule = rec.spec.schedule.clone();
            c.spec.schedule_time_zone = rec.spec.schedule_time_zone.clone();
            c.status.next_due = rec.status.next_due;
            match &c.spec.schedule {
                Some(s) => format!("runs on the schedule of '{name}': {}", s.display_after(now)),
                None => "has neither parents nor a schedule".into(),
            }
        };
        told.push(ChildChange { name: c.spec.name.clone(), now: what });
        changes.push(Change::PutJob(Box::new(c)));
    }
    Ok((changes, told))
}

fn names(set: &BTreeSet<JobName>) -> String {
    set.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(", ")
}

/// `PUT /scheduler/job/{name}`: a run now, whatever the concurrency policy (a manual
/// run is what the user asked for), with `arguments` appended to the command.
pub fn run_now(state: &State, now: Timestamp, name: &JobName, arguments: Option<String>) -> Planned<JobRun> {
    if !state.jobs.contains_key(name) {
        return Err(not_found(name));
    }
    let mut p = Touched::new(state);
    let due = p.free_due(name, now);
    let mut run = p.start_run(name, due, RunTrigger::Manual, now).ok_or_else(|| not_found(name))?;
    run.arguments = arguments.filter(|a| !a.is_empty());
    p.put_run(run.clone());
    let (changes, _) = p.into_changes();
    Ok((changes, run))
}

/// `DELETE /scheduler/task/kill/{name}`: stops every active run of the job.
pub fn kill_runs(state: &State, now: Timestamp, name: &JobName) -> Planned<Vec<(AgentId, TaskId)>> {
    if !state.jobs.contains_key(name) {
        return Err(not_found(name));
    }
    let mut p = Touched::new(state);
    for r in state.active_runs_of(name).cloned().collect::<Vec<_>>() {
        p.stop_run(r, RunState::Killed, now);
    }
    let (changes, out) = p.into_changes();
    Ok((changes, out.kills))
}

/// `PUT /scheduler/job/success/{name}`: counts a success now and runs the dependents.
pub fn mark_success(state: &State, now: Timestamp, name: &JobName) -> Planned<()> {
    let mut p = Touched::new(state);
    let j = p.job(name).ok_or_else(|| not_found(name))?;
    j.status.success_count += 1;
    j.status.last_success = Some(now);
    j.status.errors_since_last_success = 0;
    p.trigger_children(name, now);
    let (changes, _) = p.into_changes();
    Ok((changes, ()))
}

/// Stops one run (Metronome's `actions/stop`).
pub fn stop_one(state: &State, now: Timestamp, key: &RunKey) -> Planned<Vec<(AgentId, TaskId)>> {
    let run = state.run(key).cloned().ok_or_else(|| MasterError::JobNotFound(key.job.to_string()))?;
    let mut p = Touched::new(state);
    p.stop_run(run, RunState::Killed, now);
    let (changes, out) = p.into_changes();
    Ok((changes, out.kills))
}

impl super::Master {
    /// Stops one run of a job.
    pub async fn stop_job_run(&self, key: RunKey) -> Result<(), MasterError> {
        let kills = self.write(move |state, now| stop_one(state, now, &key)).await?;
        self.send_kills(kills).await;
        Ok(())
    }

    /// Stops every active run of a job: queued ones at once, running ones by killing
    /// their tasks.
    pub async fn kill_job_runs(&self, name: JobName) -> Result<(), MasterError> {
        let kills = self.write(move |state, now| kill_runs(state, now, &name)).await?;
        self.send_kills(kills).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::domain::schedule::Schedule;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn name(s: &str) -> JobName {
        JobName::parse(s).unwrap()
    }

    fn spec(n: &str, schedule: Option<&str>, parents: &[&str]) -> JobSpec {
        JobSpec {
            schedule: schedule.map(|s| Schedule::parse(s, None, t("2026-01-01T00:00:00Z")).unwrap()),
            parents: parents.iter().map(|p| name(p)).collect(),
            retries: 0,
            retry_delay_ms: 0,
            max_retry_delay_ms: 0,
            mem: 32.0,
            disk: 0.0,
            ..JobSpec::new(name(n), "true")
        }
    }

    fn apply<R>(st: &mut State, plan: impl FnOnce(&State) -> Planned<R>) {
        let (changes, _) = plan(st).unwrap_or_else(|e| panic!("{e}"));
        for c in &changes {
            st.apply(c);
        }
    }

    fn tick(st: &mut State, now: &str) -> JobOutcome {
        let (changes, out) = plan_jobs(st, t(now));
        for c in &changes {
            st.apply(c);
        }
        out
    }

    fn runs(st: &State, job: &str) -> Vec<(String, RunState)> {
        st.runs.get(&name(job)).into_iter().flatten().map(|((d, _), r)| (d.to_string(), r.state)).collect()
    }

    /// The run's task ends as `end`, as the agent would report it.
    fn end_task(st: &mut State, job: &str, end: TaskState, now: &str) {
        let key = st.active_runs.iter().find(|k| k.job == name(job)).cloned().expect("an active run");
        let run = st.run(&key).unwrap().clone();
        let (mut task, _, running) =
            launch_run(&run, &st.jobs[&name(job)].spec.clone(), &AgentId("a".into()), "h", "u1", t(now));
        task.state = end;
        st.apply(&Change::PutTask(Box::new(task)));
        st.apply(&Change::PutRun(Box::new(running)));
    }

    #[test]
    fn a_due_timer_queues_one_run_and_moves_on() {
        let mut st = State::default();
        let now = t("2026-01-01T00:00:00Z");
        apply(&mut st, |st| {
            put_job(st, now, spec("hourly", Some("R/2026-01-01T01:00:00Z/PT1H"), &[]), JobStatus::default())
        });
        assert_eq!(st.jobs[&name("hourly")].status.next_due, Some(t("2026-01-01T01:00:00Z")));
        assert!(tick(&mut st, "2026-01-01T00:59:59Z").events.is_empty());
        tick(&mut st, "2026-01-01T01:00:00.010Z");
        assert_eq!(runs(&st, "hourly"), vec![("2026-01-01T01:00:00.000Z".into(), RunState::Queued)]);
        assert_eq!(st.jobs[&name("hourly")].status.next_due, Some(t("2026-01-01T02:00:00Z")));
        tick(&mut st, "2026-01-01T01:00:00.020Z");
        assert_eq!(runs(&st, "hourly").len(), 1, "the same due time is not run twice");
        // FORBID: the next due time finds the first run still active and is skipped.
        let out = tick(&mut st, "2026-01-01T02:00:00.010Z");
        assert_eq!(runs(&st, "hourly").len(), 1);
        assert_eq!(st.jobs[&name("hourly")].status.skipped_count, 1);
        assert!(matches!(out.events[..], [JobEvent::Skipped { .. }]), "{:?}", out.events);
    }

    #[test]
    fn a_finished_run_counts_and_starts_its_children_once() {
        let mut st = State::default();
        let now = t("2026-01-01T00:00:00Z");
        apply(&mut st, |st| put_job(st, now, spec("parent", Some("R1//PT1H"), &[]), JobStatus::default()));
        apply(&mut st, |st| put_job(st, now, spec("child", None, &["parent"]), JobStatus::default()));
        tick(&mut st, "2026-01-01T00:00:00.005Z");
        end_task(&mut st, "parent", TaskState::Finished, "2026-01-01T00:00:01Z");
        let out = tick(&mut st, "2026-01-01T00:00:02Z");
        assert!(matches!(out.events[0], JobEvent::Succeeded { .. }), "{:?}", out.events);
        assert_eq!(st.jobs[&name("parent")].status.success_count, 1);
        assert!(st.job_tasks.is_empty(), "the finished task is dropped with the run's end");
        assert_eq!(runs(&st, "child"), vec![("2026-01-01T00:00:02.000Z".into(), RunState::Queued)]);
        // The child ran; the parent's old success does not start it again.
        end_task(&mut st, "child", TaskState::Finished, "2026-01-01T00:00:03Z");
        tick(&mut st, "2026-01-01T00:00:04Z");
        apply(&mut st, |st| mark_success(st, t("2026-01-01T00:00:05Z"), &name("child")));
        assert_eq!(runs(&st, "child").len(), 1);
        // A failure with no retries counts an error and starts no child.
        apply(&mut st, |st| run_now(st, t("2026-01-01T00:00:06Z"), &name("parent"), None));
        end_task(&mut st, "parent", TaskState::Failed, "2026-01-01T00:00:07Z");
        tick(&mut st, "2026-01-01T00:00:08Z");
        assert_eq!(st.jobs[&name("parent")].status.error_count, 1);
        assert_eq!(runs(&st, "child").len(), 1);
    }

    #[test]
    fn a_due_time_that_ran_is_not_run_again_and_only_its_own_task_ends_a_run() {
        let mut st = State::default();
        let now = t("2026-01-01T00:59:00Z");
        let hourly = || spec("hourly", Some("R/2026-01-01T01:00:00Z/PT1H"), &[]);
        apply(&mut st, |st| put_job(st, now, hourly(), JobStatus::default()));
        tick(&mut st, "2026-01-01T01:00:00.010Z");
        // Disabled and enabled again within epsilon: the 01:00 run is not recorded twice.
        let mut off = hourly();
        off.disabled = true;
        apply(&mut st, |st| put_job(st, t("2026-01-01T01:00:10Z"), off, JobStatus::default()));
        apply(&mut st, |st| put_job(st, t("2026-01-01T01:00:20Z"), hourly(), JobStatus::default()));
        assert_eq!(st.jobs[&name("hourly")].status.next_due, Some(t("2026-01-01T02:00:00Z")));
        tick(&mut st, "2026-01-01T01:00:30Z");
        assert_eq!(runs(&st, "hourly").len(), 1);
        // A stray task that claims the run (not the run's own) does not end it.
        end_task(&mut st, "hourly", TaskState::Running, "2026-01-01T01:00:31Z");
        let key = st.active_runs.iter().next().cloned().unwrap();
        let mut stray = st.tasks.values().next().unwrap().clone();
        stray.id = "job-hourly.other._app.1".parse().unwrap();
        stray.state = TaskState::Failed;
        st.apply(&Change::PutTask(Box::new(stray)));
        tick(&mut st, "2026-01-01T01:00:32Z");
        assert_eq!(st.run(&key).unwrap().state, RunState::Running);
        // A task that finished as it was being stopped succeeded.
        let mut stopping = st.run(&key).unwrap().clone();
        stopping.stopping = Some(RunState::TimedOut);
        let own = st.tasks.values().find(|t| t.is_active()).unwrap().clone();
        assert_eq!(run_end(&Task { state: TaskState::Finished, ..own }, &stopping), RunState::Succeeded);
    }

    #[test]
    fn a_run_is_placed_as_one_instance_with_the_jobs_resources_and_constraints() {
        let mut job = spec("boxed", None, &[]);
        job.constraints =
            vec![["rack".into(), "EQUALS".into(), "r1".into()], ["zone".into(), "LIKE".into(), "a.*".into()]];
        job.container_image = Some("busybox:1".into());
        let rs = run_spec(&job).expect("a run spec");
        assert_eq!((rs.instances, rs.cpus, rs.mem), (1, 0.1, 32.0));
        let ops: Vec<String> = rs.constraints.iter().map(|c| format!("{:?}", c.operator)).collect();
        assert_eq!(ops, ["Cluster", "Like"], "EQUALS is CLUSTER");
        assert_eq!(rs.docker_image(), Some("busybox:1"));
        assert!(rs.id.is_root());
        assert!(run_spec(&spec("plain", None, &[])).expect("a run spec").docker_image().is_none());
    }

    #[test]
    fn cycles_and_missing_parents_are_refused() {
        let mut st = State::default();
        let now = t("2026-01-01T00:00:00Z");
        apply(&mut st, |st| put_job(st, now, spec("a", Some("R/2030-01-01T00:00:00Z/P1D"), &[]), JobStatus::default()));
        apply(&mut st, |st| put_job(st, now, spec("b", None, &["a"]), JobStatus::default()));
        apply(&mut st, |st| put_job(st, now, spec("c", None, &["b"]), JobStatus::default()));
        let err = put_job(&st, now, spec("a", None, &["c"]), JobStatus::default()).unwrap_err();
        assert!(matches!(&err, MasterError::Invalid(v) if v[0].message.contains("a -> b -> c -> a")), "{err:?}");
        let err = put_job(&st, now, spec("d", None, &["zz"]), JobStatus::default()).unwrap_err();
        assert!(matches!(&err, MasterError::Invalid(v) if v[0].path == "/parents/0"), "{err:?}");
        // Deleting b re-parents c onto a, keeping c's fields.
        let (changes, told) = delete_job(&st, now, &name("b"), false).unwrap();
        for c in &changes {
            st.apply(c);
        }
        assert_eq!(told[0].name, name("c"));
        assert_eq!(st.jobs[&name("c")].spec.parents, [name("a")].into_iter().collect());
        assert_eq!(st.children[&name("a")], [name("c")].into_iter().collect());
    }
}
