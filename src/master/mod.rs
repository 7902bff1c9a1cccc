//! The master: the imperative shell around the scheduler core.
//!
//! - [`Master::write`] is the single write path. Callers hand it a *plan*: a function
//!   from the current state to changes. A writer task runs queued plans one after
//!   another against the authoritative in-memory state, commits all their changes in
//!   one store transaction (group commit), applies them to memory, and only then
//!   answers each caller. So a plan always sees the effects of the plans before it,
//!   and a 2xx always means "on disk".
//! - [`Master::tick`] is one step of the app scheduler loop: reconcile every app,
//!   place launches, persist the new tasks (STAGING) and kill intents, then send the
//!   commands to the agents. Persist first, act second: a crash in between loses nothing.
//! - Agent messages (registration, status updates) become plans too; terminal statuses
//!   are acknowledged to the agent after they are committed.

pub mod plans;
pub mod state;

use crate::agent::protocol::{FromAgent, LaunchTask, TaskCommand, TaskStatus, ToAgent};
use crate::domain::task::{task_environment, Goal, TaskFailure};
use crate::domain::{AgentId, InstanceId, PathId, Task, TaskId, TaskState, Timestamp, Violation};
use crate::scheduler::placement::Rejection;
use crate::scheduler::{place, reconcile_app, AgentCapacity, Backoff, LaunchRequest, PortPool};
use crate::store::{Change, Store, StoreError};
use state::State;
use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, Notify, RwLock};

#[derive(Debug, Error)]
pub enum MasterError {
    #[error("App '{0}' does not exist")]
    AppNotFound(PathId),
    #[error("An app with id [{0}] already exists.")]
    AppExists(PathId),
    #[error("Task '{0}' does not exist")]
    TaskNotFound(String),
    #[error("Version '{1}' of app '{0}' does not exist")]
    VersionNotFound(PathId, String),
    #[error("Object is not valid")]
    Invalid(Vec<Violation>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("dromos is shutting down")]
    ShuttingDown,
    /// The state changed between reading it and writing: the caller re-reads and retries.
    #[error("the app was changed concurrently; please retry")]
    Retry,
}

type PlanResult = Result<(Vec<Change>, Box<dyn Any + Send>), MasterError>;
type Plan = Box<dyn FnOnce(&State, Timestamp) -> PlanResult + Send>;

struct WriteJob {
    plan: Plan,
    reply: oneshot::Sender<Result<Box<dyn Any + Send>, MasterError>>,
}

/// Most plans committed in one transaction.
const MAX_BATCH: usize = 4096;
/// A kill that got no answer is sent again after this long.
const KILL_RETRY: Duration = Duration::from_secs(10);
/// Service ports are assigned from this range (Marathon's local_port_min/max).
pub const SERVICE_PORTS: (u16, u16) = (10000, 20000);

/// Why an app waits for launches (shown in the queue and the UI).
#[derive(Debug, Clone, Default)]
pub struct QueueInfo {
    pub count: u32,
    pub delayed_until: Option<Timestamp>,
    pub rejections: BTreeMap<&'static str, u32>,
    pub since: Option<Timestamp>,
}

pub struct Master {
    state: RwLock<State>,
    store: Store,
    writes: mpsc::Sender<WriteJob>,
    agents: Mutex<HashMap<AgentId, mpsc::UnboundedSender<ToAgent>>>,
    backoffs: Mutex<HashMap<PathId, Backoff>>,
    kills_sent: Mutex<HashMap<TaskId, Instant>>,
    queue: Mutex<BTreeMap<PathId, QueueInfo>>,
    cursor: Mutex<usize>,
    wake: Notify,
    started_at: Timestamp,
}

pub fn now() -> Timestamp {
    Timestamp::from_datetime(chrono::Utc::now())
}

fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// What one scheduler tick decided to send, after its changes were committed.
#[derive(Default)]
struct TickOutcome {
    launches: Vec<(AgentId, LaunchTask)>,
    kills: Vec<(AgentId, TaskId)>,
    queue: BTreeMap<PathId, QueueInfo>,
}

impl Master {
    /// Loads the state from the store and starts the writer. Call [`Master::run`] to
    /// start the loops.
    pub async fn start(store: Store) -> Result<Arc<Master>, MasterError> {
        let snapshot = store.load().await?;
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        let master = Arc::new(Master {
            state: RwLock::new(State::from_snapshot(snapshot)),
            store,
            writes: tx,
            agents: Mutex::new(HashMap::new()),
            backoffs: Mutex::new(HashMap::new()),
            kills_sent: Mutex::new(HashMap::new()),
            queue: Mutex::new(BTreeMap::new()),
            cursor: Mutex::new(0),
            wake: Notify::new(),
            started_at: now(),
        });
        tokio::spawn(writer(master.clone(), rx));
        Ok(master)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn started_at(&self) -> Timestamp {
        self.started_at
    }

    /// Read access to the committed state.
    pub async fn read(&self) -> tokio::sync::RwLockReadGuard<'_, State> {
        self.state.read().await
    }

    /// Runs `plan` on the write path and returns its result once its changes are durable.
    pub async fn write<R, F>(&self, plan: F) -> Result<R, MasterError>
    where
        R: Send + 'static,
        F: FnOnce(&State, Timestamp) -> Result<(Vec<Change>, R), MasterError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let plan: Plan = Box::new(move |s, now| plan(s, now).map(|(c, r)| (c, Box::new(r) as Box<dyn Any + Send>)));
        self.writes.send(WriteJob { plan, reply }).await.map_err(|_| MasterError::ShuttingDown)?;
        let out = rx.await.map_err(|_| MasterError::ShuttingDown)??;
        // The boxed value was created from an `R` just above.
        Ok(*out.downcast::<R>().expect("plan result has the plan's type"))
    }

    /// Asks the scheduler loop to run soon.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn queue(&self) -> BTreeMap<PathId, QueueInfo> {
        self.queue.lock().map(|q| q.clone()).unwrap_or_default()
    }

    /// Forgets an app's launch backoff (`DELETE /v2/queue/{app}/delay`).
    pub fn reset_backoff(&self, app: &PathId) {
        if let Ok(mut b) = self.backoffs.lock() {
            b.remove(app);
        }
        self.wake();
    }

    /// Connects an agent's command channel (the in-process link of the embedded agent).
    pub fn attach_agent(&self, id: AgentId, tx: mpsc::UnboundedSender<ToAgent>) {
        if let Ok(mut a) = self.agents.lock() {
            a.insert(id, tx);
        }
    }

    fn send_to(&self, agent: &AgentId, msg: ToAgent) {
        let sent = self.agents.lock().ok().and_then(|a| a.get(agent).map(|tx| tx.send(msg).is_ok()));
        if sent != Some(true) {
            tracing::debug!(%agent, "agent not connected; command dropped (reconciliation repairs it)");
        }
    }

    /// Runs the scheduler loop and the agent inbox until the process ends.
    pub fn run(self: &Arc<Self>, mut inbox: mpsc::UnboundedReceiver<(AgentId, FromAgent)>) {
        let m = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = m.tick().await {
                    tracing::error!("scheduler tick failed: {e}");
                }
                // Level-triggered: woken by changes, and a periodic full pass repairs
                // anything a missed wake-up left behind.
                let _ = tokio::time::timeout(Duration::from_secs(1), m.wake.notified()).await;
            }
        });
        let m = self.clone();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            // Waits for one message, then takes whatever else is queued: one write per burst.
            while inbox.recv_many(&mut batch, MAX_BATCH).await > 0 {
                if let Err(e) = m.on_agent_messages(std::mem::take(&mut batch)).await {
                    tracing::error!("handling agent messages failed: {e}");
                }
            }
        });
    }

    /// Applies a burst of agent messages in one write, then acknowledges terminal
    /// statuses and kills tasks the master does not know.
    async fn on_agent_messages(&self, msgs: Vec<(AgentId, FromAgent)>) -> Result<(), MasterError> {
        let out = self
            .write(move |state, now| {
                let mut changes = Vec::new();
                let mut acks = Vec::new();
                let mut orphans = Vec::new();
                let mut failures = Vec::new();
                // Tasks changed earlier in this same burst (a STARTING then RUNNING pair).
                let mut seen: HashMap<TaskId, Task> = HashMap::new();
                for (agent, msg) in msgs {
                    let statuses = match msg {
                        FromAgent::Register { info, tasks, .. } => {
                            if state.agents.get(&info.id) != Some(&info) {
                                changes.push(Change::PutAgent(Box::new(info)));
                            }
                            let reported: std::collections::HashSet<&TaskId> =
                                tasks.iter().map(|t| &t.task_id).collect();
                            // Tasks we placed on this agent that it does not know never started.
                            for t in state
                                .tasks
                                .values()
                                .filter(|t| t.agent_id == agent && t.is_active() && !reported.contains(&t.id))
                            {
                                let lost = TaskStatus {
                                    task_id: t.id.clone(),
                                    state: TaskState::Lost,
                                    message: Some("task unknown to its agent after re-registration".into()),
                                    timestamp: now,
                                };
                                apply_status(
                                    state,
                                    &mut seen,
                                    &agent,
                                    lost,
                                    now,
                                    &mut changes,
                                    &mut acks,
                                    &mut orphans,
                                    &mut failures,
                                );
                            }
                            tasks
                        }
                        FromAgent::Status(s) => vec![s],
                    };
                    for s in statuses {
                        apply_status(
                            state,
                            &mut seen,
                            &agent,
                            s,
                            now,
                            &mut changes,
                            &mut acks,
                            &mut orphans,
                            &mut failures,
                        );
                    }
                }
                Ok((changes, (acks, orphans, failures)))
            })
            .await?;
        let (acks, orphans, failures) = out;
        for (agent, task_id, state) in acks {
            self.send_to(&agent, ToAgent::Ack { task_id, state });
        }
        for (agent, task_id) in orphans {
            tracing::info!(task = %task_id, "killing a task the master does not know");
            self.send_to(&agent, ToAgent::Kill { task_id });
        }
        if !failures.is_empty() {
            let st = self.state.read().await;
            if let Ok(mut b) = self.backoffs.lock() {
                for (app, config, at) in failures {
                    if let Some(rec) = st.apps.get(&app) {
                        let next = Backoff::after_failure(b.get(&app), &rec.current.spec, config, at);
                        b.insert(app, next);
                    }
                }
            }
        }
        self.wake();
        Ok(())
    }

    /// One pass of the app scheduler. Public so tests and benchmarks drive it directly.
    pub async fn tick(&self) -> Result<(), MasterError> {
        let backoffs = self.backoffs.lock().map(|b| b.clone()).unwrap_or_default();
        let mut cursor = self.cursor.lock().map(|c| *c).unwrap_or(0);
        let connected: Vec<AgentId> = self.agents.lock().map(|a| a.keys().cloned().collect()).unwrap_or_default();
        let kills_sent = self.kills_sent.lock().map(|k| k.clone()).unwrap_or_default();
        let (outcome, cur) = self
            .write(move |state, now| {
                let mut out = TickOutcome::default();
                let changes = plan_tick(state, now, &backoffs, &connected, &mut cursor, &kills_sent, &mut out);
                Ok((changes, (out, cursor)))
            })
            .await?;
        if let Ok(mut c) = self.cursor.lock() {
            *c = cur;
        }
        if let Ok(mut q) = self.queue.lock() {
            let prev = std::mem::take(&mut *q);
            *q = outcome.queue;
            for (app, info) in q.iter_mut() {
                info.since = prev.get(app).and_then(|p| p.since).or(Some(now()));
            }
        }
        for (agent, launch) in outcome.launches {
            self.send_to(&agent, ToAgent::Launch(launch));
        }
        let live: std::collections::HashSet<TaskId> = self.state.read().await.tasks.keys().cloned().collect();
        if let Ok(mut ks) = self.kills_sent.lock() {
            ks.retain(|id, _| live.contains(id));
            for (_, id) in &outcome.kills {
                ks.insert(id.clone(), Instant::now());
            }
        }
        for (agent, task_id) in outcome.kills {
            self.send_to(&agent, ToAgent::Kill { task_id });
        }
        Ok(())
    }
}

/// Applies one status report to the state being planned. Collects the acknowledgements
/// to send, tasks to kill as orphans, and failures that feed launch backoff.
#[allow(clippy::too_many_arguments)]
fn apply_status(
    state: &State,
    seen: &mut HashMap<TaskId, Task>,
    agent: &AgentId,
    s: TaskStatus,
    now: Timestamp,
    changes: &mut Vec<Change>,
    acks: &mut Vec<(AgentId, TaskId, TaskState)>,
    orphans: &mut Vec<(AgentId, TaskId)>,
    failures: &mut Vec<(PathId, Timestamp, Timestamp)>,
) {
    let known = seen.get(&s.task_id).or_else(|| state.tasks.get(&s.task_id)).cloned();
    let Some(mut task) = known else {
        if s.state.is_terminal() {
            acks.push((agent.clone(), s.task_id, s.state));
        } else {
            orphans.push((agent.clone(), s.task_id));
        }
        return;
    };
    if task.agent_id != *agent || !task.state.accepts(s.state) {
        if s.state.is_terminal() {
            acks.push((agent.clone(), s.task_id, s.state));
        }
        return;
    }
    task.state = s.state;
    task.message = s.message.clone();
    if s.state == TaskState::Running && task.started_at.is_none() {
        task.started_at = Some(s.timestamp.min(now));
    }
    if s.state.is_terminal() {
        // Marathon expunges terminal tasks; the app keeps its last failure.
        if s.state.counts_as_failure() {
            changes.push(Change::SetLastFailure(Box::new(TaskFailure {
                app_id: task.app_id.clone(),
                host: task.host.clone(),
                message: s.message.clone().unwrap_or_default(),
                state: s.state,
                task_id: task.id.clone(),
                timestamp: s.timestamp,
                version: task.version,
                slave_id: task.agent_id.clone(),
            })));
        }
        if s.state.counts_as_failure() && task.goal == Goal::Running {
            failures.push((task.app_id.clone(), task.config_version, now));
        }
        changes.push(Change::DeleteTask(task.id.clone()));
        acks.push((agent.clone(), task.id.clone(), s.state));
    } else {
        changes.push(Change::PutTask(Box::new(task.clone())));
    }
    seen.insert(task.id.clone(), task);
}

/// The planning half of a tick, pure over the state: which tasks to create, which to
/// stop, which deployments are finished.
fn plan_tick(
    state: &State,
    now: Timestamp,
    backoffs: &HashMap<PathId, Backoff>,
    connected: &[AgentId],
    cursor: &mut usize,
    kills_sent: &HashMap<TaskId, Instant>,
    out: &mut TickOutcome,
) -> Vec<Change> {
    let mut changes = Vec::new();

    // Capacity of connected agents after what their active tasks use.
    let mut agents: Vec<AgentCapacity> = connected
        .iter()
        .filter_map(|id| state.agents.get(id))
        .map(|a| AgentCapacity {
            id: a.id.clone(),
            hostname: a.hostname.clone(),
            free: a.resources,
            ports: PortPool::new(&a.ports),
            containerizers: a.containerizers.clone(),
        })
        .collect();
    let index: HashMap<AgentId, usize> = agents.iter().enumerate().map(|(i, a)| (a.id.clone(), i)).collect();
    for t in state.tasks.values().filter(|t| t.is_active()) {
        if let (Some(&i), Some(app)) = (index.get(&t.agent_id), state.apps.get(&t.app_id)) {
            agents[i].free.sub(&app.current.spec.task_resources());
            for p in &t.ports {
                agents[i].ports.mark_used(*p);
            }
        }
    }

    // Reconcile every app.
    let mut requests = Vec::new();
    let mut stop = Vec::new();
    for (id, rec) in &state.apps {
        let tasks: Vec<&Task> = state.tasks_of(id).collect();
        let plan = reconcile_app(&rec.current, &tasks, backoffs.get(id), now);
        stop.extend(plan.kill);
        if plan.launch > 0 {
            requests.push(LaunchRequest { app: &rec.current.spec, count: plan.launch });
        } else if plan.delayed_until.is_some() {
            let missing = rec
                .current
                .spec
                .instances
                .saturating_sub(tasks.iter().filter(|t| t.is_active() && t.goal == Goal::Running).count() as u32);
            out.queue.insert(
                id.clone(),
                QueueInfo { count: missing, delayed_until: plan.delayed_until, ..Default::default() },
            );
        }
    }
    // Tasks of apps that no longer exist stop too.
    for t in state.tasks.values() {
        if t.is_active() && t.goal == Goal::Running && !state.apps.contains_key(&t.app_id) {
            stop.push(t.id.clone());
        }
    }
    for id in stop {
        if let Some(t) = state.tasks.get(&id) {
            let mut t = t.clone();
            t.goal = Goal::Stopped;
            out.kills.push((t.agent_id.clone(), t.id.clone()));
            changes.push(Change::PutTask(Box::new(t)));
        }
    }
    // Kill intents that have not been answered are sent again.
    for t in state.tasks.values() {
        if t.is_active() && t.goal == Goal::Stopped && !out.kills.iter().any(|(_, k)| *k == t.id) {
            let due = kills_sent.get(&t.id).is_none_or(|at| at.elapsed() >= KILL_RETRY);
            if due {
                out.kills.push((t.agent_id.clone(), t.id.clone()));
            }
        }
    }

    let result = place(&mut agents, &requests, cursor);
    for p in &result.placed {
        let spec = requests[p.request].app;
        let Some(rec) = state.apps.get(&spec.id) else {
            continue;
        };
        let agent = &agents[p.agent];
        let task_id = InstanceId::new(&spec.id, &new_uuid()).task_id(1);
        let task = Task {
            id: task_id.clone(),
            app_id: spec.id.clone(),
            agent_id: agent.id.clone(),
            host: agent.hostname.clone(),
            state: TaskState::Staging,
            goal: Goal::Running,
            ports: p.ports.clone(),
            version: rec.current.version,
            config_version: rec.current.version_info.last_config_change_at,
            staged_at: now,
            started_at: None,
            message: None,
        };
        let command = match (&spec.cmd, spec.args.is_empty()) {
            (Some(cmd), _) => TaskCommand::Shell(cmd.clone()),
            (None, false) => TaskCommand::Argv(spec.args.clone()),
            (None, true) => TaskCommand::Argv(vec![]),
        };
        out.launches.push((
            agent.id.clone(),
            LaunchTask {
                task_id: task_id.clone(),
                app_id: spec.id.clone(),
                command,
                env: task_environment(&rec.current, &task_id, &agent.hostname, &p.ports),
                ports: p.ports.clone(),
                kill_grace_ms: spec.task_kill_grace_period_seconds.unwrap_or(3) * 1000,
            },
        ));
        changes.push(Change::PutTask(Box::new(task)));
    }
    for (ri, (left, why)) in &result.unplaced {
        let app = requests[*ri].app;
        let rejections = why.iter().map(|(r, n): (&Rejection, &u32)| (r.name(), *n)).collect();
        out.queue.insert(app.id.clone(), QueueInfo { count: *left, delayed_until: None, rejections, since: None });
    }

    // Deployments whose every action is carried out are finished.
    for d in state.deployments.values() {
        let done = d.steps.iter().flatten().all(|a| {
            let app = state.apps.get(&a.app).map(|r| &r.current);
            let tasks: Vec<&Task> = state.tasks_of(&a.app).collect();
            crate::scheduler::reconcile::action_done(a.action, app, &tasks)
        });
        if done {
            changes.push(Change::DeleteDeployment(d.id.clone()));
        }
    }
    changes
}

/// The writer task: runs queued plans in batches, one transaction per batch.
async fn writer(master: Arc<Master>, mut rx: mpsc::Receiver<WriteJob>) {
    let mut jobs = Vec::new();
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let mut state = master.state.write().await;
        let now = now();
        let mut changes = Vec::new();
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs.drain(..) {
            match (job.plan)(&state, now) {
                Ok((cs, r)) => {
                    for c in &cs {
                        state.apply(c);
                    }
                    changes.extend(cs);
                    replies.push((job.reply, Ok(r)));
                }
                Err(e) => replies.push((job.reply, Err(e))),
            }
        }
        match master.store.apply(&changes).await {
            Ok(()) => {
                drop(state);
                for (reply, r) in replies {
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                tracing::error!("commit failed, reloading state from the store: {e}");
                match master.store.load().await {
                    Ok(snap) => *state = State::from_snapshot(snap),
                    Err(e2) => tracing::error!("reload failed: {e2}"),
                }
                drop(state);
                let msg = e.to_string();
                for (reply, r) in replies {
                    let _ =
                        reply.send(r.and(Err(MasterError::Store(StoreError::Db(sqlx::Error::Protocol(msg.clone()))))));
                }
            }
        }
    }
}
