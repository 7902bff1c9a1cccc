//! The master: the imperative shell around the scheduler core.
//!
//! - [`Master::write`] is the single write path. Callers hand it a *plan*: a function
//!   from the current state to changes. A writer task runs queued plans one after
//!   another against its own copy of the state, applying each plan's changes to it as
//!   it goes, commits all their changes in one store transaction (group commit), then
//!   applies them to the published copy readers lock ([`Master::read`]), and only
//!   then answers each caller. So a plan always sees the effects of the plans before
//!   it, a 2xx always means "on disk", a caller reads its own writes, and readers
//!   wait neither for planning nor for the store: only for the copy of changes.
//! - [`Master::note`] changes the soft state (health, readiness) on the same path,
//!   without the store.
//! - [`Master::tick`] is one step of the scheduler loop: first the job tick
//!   ([`jobs::plan_jobs`]: how runs ended, timeouts, due timers), then reconcile every
//!   app, place app launches and queued job runs, persist the new tasks (STAGING) and
//!   kill intents, then send the commands to the agents. Persist first, act second: a
//!   crash in between loses nothing. The loop wakes on changes, at the next job due
//!   time, and once a second.
//! - Agent messages (registration, status updates) become plans too; terminal statuses
//!   are acknowledged to the agent after they are committed.

pub mod agents;
pub mod deployments;
pub mod events;
pub mod groups;
pub mod health;
pub mod jobs;
pub mod leadership;
pub mod logs;
pub mod plans;
pub mod state;
pub mod summary;
pub mod warm;

pub use agents::{Connection, Liveness, Recovering, RemovalLimit};

use crate::agent::docker::{DockerNetwork, DockerPortMapping, DockerTask, DockerVolume};
use crate::agent::health::Finding;
use crate::agent::protocol::{FromAgent, LaunchTask, TaskCommand, ToAgent};
use crate::domain::app::{UnreachableStrategy, VolumeMode};
use crate::domain::deployment::DeploymentEnd;
use crate::domain::task::{task_environment, Goal};
use crate::domain::AppSpec;
use crate::domain::Deployment;
use crate::domain::{AgentId, AgentMark, InstanceId, PathId, Resources, Task, TaskId, TaskState, Timestamp, Violation};
use crate::scheduler::deploy::{watch, Watch};
use crate::scheduler::placement::Rejection;
use crate::scheduler::reconcile::Context as ReconcileContext;
use crate::scheduler::{
    place, reconcile_app, AgentCapacity, AgentFields, Backoff, ConstraintTracker, Fairness, LaunchRequest, RolePolicy,
};
use crate::store::{Change, Store, StoreError};
use state::{Soft, State};
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
    #[error("Group '{0}' does not exist")]
    GroupNotFound(PathId),
    #[error("Group {0} is already created. Use PUT to change this group.")]
    GroupExists(PathId),
    #[error("Version '{1}' of app '{0}' does not exist")]
    VersionNotFound(PathId, String),
    #[error("Object is not valid")]
    Invalid(Vec<Violation>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("dromos is shutting down")]
    ShuttingDown,
    /// A newer leader claimed the store: this master's term is over.
    #[error("this master no longer leads: {0}")]
    NotLeader(String),
    /// The state changed between reading it and writing: the caller re-reads and retries.
    #[error("the app was changed concurrently; please retry")]
    Retry,
    #[error("DeploymentPlan {0} does not exist")]
    DeploymentNotFound(String),
    /// `DELETE /v2/deployments/{id}` without `force` for a deployment that cannot be undone.
    #[error("{0}")]
    CannotRollBack(String),
    /// A deployment of the app is running; a change needs `force=true` (Marathon's lock).
    #[error("App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments'.")]
    AppLocked(Vec<String>),
    #[error("Job '{0}' does not exist")]
    JobNotFound(String),
    #[error("A job with id '{0}' already exists")]
    JobExists(String),
    #[error("Job '{0}' has active runs; stop them first or use stopCurrentJobRuns=true")]
    JobBusy(String),
}

/// What a plan decided: durable changes, soft ones, and the value for its caller.
struct Effects {
    changes: Vec<Change>,
    soft: Vec<Soft>,
    value: Box<dyn Any + Send>,
}

type Plan = Box<dyn FnOnce(&State, Timestamp) -> Result<Effects, MasterError> + Send>;

/// A plan's answer to its caller.
type Reply = Result<Box<dyn Any + Send>, MasterError>;

struct WriteJob {
    plan: Plan,
    reply: oneshot::Sender<Reply>,
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
    /// How many agents turned the app down in the last pass, by Marathon's reason names
    /// (its processedOffersSummary).
    pub rejections: BTreeMap<&'static str, u32>,
    /// The same for each constraint that turned agents down (a dromos detail: Marathon
    /// only said "UnfulfilledConstraint").
    pub constraints: Vec<(crate::domain::app::Constraint, u32)>,
    pub since: Option<Timestamp>,
}

/// Operator settings of the master.
#[derive(Debug, Clone, Default)]
pub struct MasterConfig {
    pub liveness: Liveness,
    pub roles: RolePolicy,
    /// Whether apps may ask for privileged Docker containers (`--allow-privileged`).
    pub allow_privileged: bool,
    /// Events an event-stream subscriber may fall behind before it is cut off
    /// (0: [`crate::events::DEFAULT_OUTSTANDING`]).
    pub event_outstanding: usize,
}

pub struct Master {
    /// The published state: what is committed (and the soft state), for readers. Only
    /// the writer task changes it, briefly, after each commit.
    state: RwLock<State>,
    store: Store,
    writes: mpsc::Sender<WriteJob>,
    links: Mutex<agents::Links>,
    /// Set once the start-up recovery is over ([`Master::recovering`]).
    recovered: std::sync::atomic::AtomicBool,
    /// The agents that were active when the master started: recovery waits for these
    /// (agents that register for the first time have nothing to recover).
    known_at_start: Vec<AgentId>,
    logs: Mutex<logs::PendingLogs>,
    inbox: mpsc::UnboundedSender<(AgentId, FromAgent)>,
    inbox_rx: Mutex<Option<mpsc::UnboundedReceiver<(AgentId, FromAgent)>>>,
    liveness: Liveness,
    roles: RolePolicy,
    allow_privileged: bool,
    /// Monotonic start: agents in the registry get the full ping budget from here to
    /// re-register after a master (re)start.
    started: Instant,
    backoffs: Mutex<HashMap<PathId, Backoff>>,
    /// The event bus: what the master commits, as Marathon events (`/v2/events`).
    events: Arc<crate::events::Bus>,
    kills_sent: Mutex<HashMap<TaskId, Instant>>,
    queue: Mutex<BTreeMap<PathId, QueueInfo>>,
    cursor: Mutex<usize>,
    wake: Notify,
    started_at: Timestamp,
    /// The tasks this master spawned: [`Master::stop`] ends them.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Set when the store refused a commit because a newer leader claimed it.
    deposed: tokio::sync::watch::Sender<bool>,
    /// Set by [`Master::stop`]: agent sessions that arrive late are closed at once.
    stopped: std::sync::atomic::AtomicBool,
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
    /// Deployments that missed their progress deadline, with why.
    failed: Vec<(Deployment, String)>,
    /// Job runs launched.
    job_events: Vec<crate::domain::job::JobEvent>,
}

impl Master {
    /// Loads the state from the store and starts the writer. Call [`Master::run`] to
    /// start the loops.
    pub async fn start(store: Store, config: MasterConfig) -> Result<Arc<Master>, MasterError> {
        let snapshot = store.load().await?;
        let state = State::from_snapshot(snapshot);
        Ok(Master::start_from(store, config, state.clone(), state))
    }

    /// Starts a master from a state already loaded from `store` (a follower's
    /// [`warm::WarmCopy`]), which must be what the store holds: the writer's copy and
    /// the published one, equal.
    pub fn start_from(store: Store, config: MasterConfig, state: State, published: State) -> Arc<Master> {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        let (inbox, inbox_rx) = mpsc::unbounded_channel();
        let known_at_start =
            state.agents.values().filter(|r| r.mark == AgentMark::Active).map(|r| r.info.id.clone()).collect();
        let master = Arc::new(Master {
            state: RwLock::new(published),
            known_at_start,
            store,
            writes: tx,
            links: Mutex::new(agents::Links::default()),
            recovered: std::sync::atomic::AtomicBool::new(false),
            logs: Mutex::new(logs::PendingLogs::default()),
            inbox,
            inbox_rx: Mutex::new(Some(inbox_rx)),
            liveness: config.liveness,
            roles: config.roles,
            allow_privileged: config.allow_privileged,
            started: Instant::now(),
            backoffs: Mutex::new(HashMap::new()),
            events: Arc::new(crate::events::Bus::new(
                crate::events::DEFAULT_REPLAY,
                match config.event_outstanding {
                    0 => crate::events::DEFAULT_OUTSTANDING,
                    n => n,
                },
            )),
            kills_sent: Mutex::new(HashMap::new()),
            queue: Mutex::new(BTreeMap::new()),
            cursor: Mutex::new(0),
            wake: Notify::new(),
            started_at: now(),
            tasks: Mutex::new(Vec::new()),
            deposed: tokio::sync::watch::channel(false).0,
            stopped: Default::default(),
        });
        master.spawn(writer(master.clone(), rx, state));
        master
    }

    /// Spawns a task of this master's, which [`Master::stop`] ends.
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task).abort_handle();
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(handle);
        }
    }

    /// Ends this master's term: its loops and writer stop (pending writes fail with
    /// [`MasterError::ShuttingDown`]), agent sessions and event streams close. What was
    /// committed stays in the store for the next leader; nothing is undone.
    pub fn stop(&self) {
        self.stopped.store(true, std::sync::atomic::Ordering::SeqCst);
        for t in self.tasks.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default() {
            t.abort();
        }
        self.disconnect_all_agents();
        self.events.close();
    }

    /// The store refused this master (`e`: a newer leader claimed it): its term ends.
    fn depose(&self, e: &StoreError) {
        tracing::error!("{e}");
        self.deposed.send_replace(true);
    }

    /// Resolves once the store refused this master's writes because a newer leader
    /// claimed it: the term must end.
    pub async fn deposed(&self) {
        let mut rx = self.deposed.subscribe();
        let _ = rx.wait_for(|d| *d).await;
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
        self.submit(Box::new(move |s, now| {
            let (changes, value) = plan(s, now)?;
            Ok(Effects { changes, soft: Vec::new(), value: Box::new(value) })
        }))
        .await
    }

    /// Runs `plan` on the write path for changes to the soft state only (nothing is
    /// stored); readers see them once it returns.
    pub async fn note<R, F>(&self, plan: F) -> Result<R, MasterError>
    where
        R: Send + 'static,
        F: FnOnce(&State, Timestamp) -> (Vec<Soft>, R) + Send + 'static,
    {
        self.submit(Box::new(move |s, now| {
            let (soft, value) = plan(s, now);
            Ok(Effects { changes: Vec::new(), soft, value: Box::new(value) })
        }))
        .await
    }

    async fn submit<R: 'static>(&self, plan: Plan) -> Result<R, MasterError> {
        let (reply, rx) = oneshot::channel();
        self.writes.send(WriteJob { plan, reply }).await.map_err(|_| MasterError::ShuttingDown)?;
        let out = rx.await.map_err(|_| MasterError::ShuttingDown)??;
        // `write` and `note` box a value of the plan's result type `R`.
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

    /// Admission policy beyond the definition's own validity: what this cluster allows.
    pub fn admit(&self, spec: &AppSpec) -> Result<(), MasterError> {
        let privileged = spec.container.as_ref().and_then(|c| c.docker.as_ref()).is_some_and(|d| d.privileged);
        if privileged && !self.allow_privileged {
            return Err(MasterError::Invalid(vec![Violation::new(
                "/container/docker/privileged",
                "privileged containers are not allowed: start dromos with --allow-privileged to permit them",
            )]));
        }
        Ok(())
    }

    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    /// Runs the scheduler loop, the agent inbox, liveness and periodic reconciliation
    /// until the process ends. Call once.
    pub fn run(self: &Arc<Self>) {
        let Some(mut inbox) = self.inbox_rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let m = self.clone();
        self.spawn(async move {
            let mut every = tokio::time::interval(m.liveness.ping_interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Err(e) = m.check_liveness().await {
                    tracing::error!("liveness check failed: {e}");
                }
            }
        });
        let m = self.clone();
        self.spawn(async move {
            let mut every = tokio::time::interval(m.liveness.reconcile_interval);
            every.tick().await; // registration just reconciled everything
            loop {
                every.tick().await;
                m.request_reconciliation();
            }
        });
        let m = self.clone();
        self.spawn(async move {
            loop {
                let started = Instant::now();
                if let Err(e) = m.tick().await {
                    tracing::error!("scheduler tick failed: {e}");
                }
                let took = started.elapsed();
                if took > Duration::from_millis(100) {
                    tracing::debug!(?took, "slow scheduler tick");
                }
                // Level-triggered: woken by changes, at the next job due time, and by a
                // periodic full pass that repairs anything a missed wake-up left behind.
                let until_due = m.until_next_job_due().await;
                let _ = tokio::time::timeout(until_due.min(Duration::from_secs(1)), m.wake.notified()).await;
                // A tick costs time proportional to the cluster: under a storm of
                // wake-ups (thousands of status updates) keep ticks at most as frequent
                // as they are long, so the write path stays free half the time (but
                // never past a job's due time).
                let until_due = m.until_next_job_due().await;
                tokio::time::sleep(took.min(Duration::from_millis(500)).min(until_due)).await;
            }
        });
        let m = self.clone();
        self.spawn(async move {
            let mut batch = Vec::new();
            // Waits for one message, then takes whatever else is queued: one write per burst.
            while inbox.recv_many(&mut batch, MAX_BATCH).await > 0 {
                // Log answers go straight to their waiting request, not the write path.
                let mut health = Vec::new();
                batch.retain_mut(|(agent, msg)| match msg {
                    FromAgent::Log { request, chunk, error } => {
                        let answer = chunk.take().ok_or_else(|| error.take().unwrap_or_default());
                        m.deliver_log(agent, *request, answer);
                        false
                    }
                    FromAgent::Health { task_id, index, health: h } => {
                        health.push((agent.clone(), task_id.clone(), Finding::Health(*index, std::mem::take(h))));
                        false
                    }
                    FromAgent::Ready { task_id, readiness } => {
                        health.push((agent.clone(), task_id.clone(), Finding::Ready(std::mem::take(readiness))));
                        false
                    }
                    _ => true,
                });
                // Status updates first: a health report may be about a task that has
                // just been reported running in the same burst.
                let result = match batch.is_empty() {
                    true => Ok(()),
                    false => m.on_agent_messages(std::mem::take(&mut batch)).await,
                };
                for (agent, task, finding) in health {
                    if let Err(e) = m.on_finding(agent, task, finding).await {
                        tracing::error!("handling a health report failed: {e}");
                    }
                }
                if let Err(e) = result {
                    tracing::error!("handling agent messages failed: {e}");
                }
            }
        });
    }

    /// How long until the next job timer or retry is due (zero: one is due now).
    async fn until_next_job_due(&self) -> Duration {
        let now = now();
        match jobs::next_wake(&*self.state.read().await, now) {
            Some(at) => Duration::from_millis(at.millis().saturating_sub(now.millis()).max(0) as u64),
            None => Duration::from_secs(3600),
        }
    }

    /// The event bus (`/v2/events`).
    pub fn events(&self) -> &Arc<crate::events::Bus> {
        &self.events
    }

    fn publish_job_events(&self, events: Vec<crate::domain::job::JobEvent>) {
        let at = now();
        for e in events {
            tracing::info!(event = %serde_json::to_string(&e).unwrap_or_default(), "job run");
            self.events.publish(&crate::domain::event::EventKind::Job(e).at(at));
        }
    }

    /// One pass of the job scheduler: how runs ended, timeouts, due timers. Its own
    /// transaction, before the placement pass that launches what it queued.
    pub async fn job_tick(&self) -> Result<(), MasterError> {
        let out = self
            .write(move |state, now| {
                let (changes, out) = jobs::plan_jobs(state, now);
                Ok((changes, out))
            })
            .await?;
        self.send_kills(out.kills).await;
        self.publish_job_events(out.events);
        Ok(())
    }

    /// Whether commands that follow no write of their own (kill retries, acks) may go
    /// out: only while the store still holds this master's epoch. A deposed master
    /// learns it here (and its term ends); a store it cannot reach sends nothing.
    pub(crate) async fn may_command(&self) -> bool {
        match self.store.check_fence().await {
            Ok(()) => true,
            Err(e @ StoreError::Fenced { .. }) => {
                self.depose(&e);
                false
            }
            Err(e) => {
                tracing::warn!("commands held back: cannot check the leadership in the store: {e}");
                false
            }
        }
    }

    /// Sends kills and notes when, so the tick does not send them again at once.
    async fn send_kills(&self, kills: Vec<(AgentId, TaskId)>) {
        if kills.is_empty() || !self.may_command().await {
            return;
        }
        if let Ok(mut ks) = self.kills_sent.lock() {
            for (_, id) in &kills {
                ks.insert(id.clone(), Instant::now());
            }
        }
        for (agent, task_id) in kills {
            self.send_to(&agent, ToAgent::Kill { task_id });
        }
    }

    /// One pass of the app scheduler. Public so tests and benchmarks drive it directly.
    pub async fn tick(&self) -> Result<(), MasterError> {
        self.job_tick().await?;
        let backoffs = self.backoffs.lock().map(|b| b.clone()).unwrap_or_default();
        let mut cursor = self.cursor.lock().map(|c| *c).unwrap_or(0);
        let connected = self.connected_agents();
        let kills_sent = self.kills_sent.lock().map(|k| k.clone()).unwrap_or_default();
        let roles = self.roles.clone();
        let (outcome, cur) = self
            .write(move |state, now| {
                let mut out = TickOutcome::default();
                let input =
                    TickInput { backoffs: &backoffs, connected: &connected, kills_sent: &kills_sent, roles: &roles };
                let changes = plan_tick(state, now, &input, &mut cursor, &mut out);
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
        if !outcome.launches.is_empty() {
            crate::failpoint::hit("master-after-launch-commit");
        }
        for (agent, launch) in outcome.launches {
            self.send_to(&agent, ToAgent::Launch(launch));
        }
        {
            // Kills of tasks that are gone need no retry. (The read lock is let go
            // before anything below waits for the writer.)
            let state = self.state.read().await;
            if let Ok(mut ks) = self.kills_sent.lock() {
                ks.retain(|id, _| state.tasks.contains_key(id));
            }
        }
        self.send_kills(outcome.kills).await;
        for (dep, reason) in outcome.failed {
            self.deployment_failed(dep, reason).await;
        }
        self.publish_job_events(outcome.job_events);
        Ok(())
    }
}

/// What a tick plans with, besides the state.
struct TickInput<'a> {
    backoffs: &'a HashMap<PathId, Backoff>,
    /// Agents with a command link.
    connected: &'a [AgentId],
    kills_sent: &'a HashMap<TaskId, Instant>,
    roles: &'a RolePolicy,
}

/// The planning half of a tick, pure over the state: which tasks to create, which to
/// stop or expunge, which deployments are finished.
fn plan_tick(
    state: &State,
    now: Timestamp,
    input: &TickInput,
    cursor: &mut usize,
    out: &mut TickOutcome,
) -> Vec<Change> {
    let TickInput { backoffs, connected, kills_sent, roles } = *input;
    let mut changes = Vec::new();

    // Capacity of connected, reachable agents after what their active tasks use, and
    // what each role uses in the cluster (for fairness between roles).
    let mut agents: Vec<AgentCapacity> = connected
        .iter()
        .filter_map(|id| state.agents.get(id))
        .filter(|r| r.mark == AgentMark::Active)
        .map(|r| AgentCapacity::new(&r.info))
        .collect();
    let mut total = Resources::default();
    for id in connected {
        if let Some(r) = state.agents.get(id).filter(|r| r.mark == AgentMark::Active) {
            total.add(&r.info.resources.total());
        }
    }
    let index: HashMap<AgentId, usize> = agents.iter().enumerate().map(|(i, a)| (a.id.clone(), i)).collect();
    let by_app = state.tasks_grouped_by_app();
    let mut usage: HashMap<&str, Resources> = HashMap::new();
    for t in state.tasks.values().filter(|t| t.is_active() && t.job.is_some()) {
        if let Some(job) = t.job.as_ref().and_then(|k| state.jobs.get(&k.job)) {
            let need = jobs::run_resources(&job.spec);
            usage.entry(crate::domain::UNRESERVED).or_default().add(&need);
            if let Some(&i) = index.get(&t.agent_id) {
                agents[i].consume(&need, &[crate::domain::UNRESERVED], &t.ports);
            }
        }
    }
    for (id, tasks) in &by_app {
        let Some(app) = state.apps.get(*id) else { continue };
        let spec = &app.current.spec;
        let (need, roles) = (spec.task_resources(), spec.accepted_roles());
        for t in tasks.iter().filter(|t| t.is_active() && t.job.is_none()) {
            usage.entry(spec.role()).or_default().add(&need);
            if let Some(&i) = index.get(&t.agent_id) {
                agents[i].consume(&need, &roles, &t.ports);
            }
        }
    }
    let usage: HashMap<String, Resources> = usage.into_iter().map(|(role, r)| (role.to_string(), r)).collect();

    // Unreachable tasks are expunged after the app's expungeAfterSeconds (at once when
    // they are no longer wanted): if their agent comes back, they are unknown and killed.
    for t in state.tasks.values().filter(|t| t.state == TaskState::Unreachable) {
        let since = t.unreachable_since.unwrap_or(now);
        let strategy = state.apps.get(&t.app_id).map(|a| &a.current.spec.unreachable_strategy);
        let expunge_after = match (strategy, t.goal) {
            // A job run's task may still be running behind a partition: its run waits
            // until the task reports or its agent is gone (never run twice).
            _ if t.job.is_some() => None,
            (None, _) | (_, Goal::Stopped) => Some(0),
            (Some(UnreachableStrategy::Disabled), _) => None,
            (Some(UnreachableStrategy::Enabled { expunge_after_seconds, .. }), _) => Some(*expunge_after_seconds),
        };
        if expunge_after.is_some_and(|s| since.seconds_until(now) >= s as f64) {
            changes.push(Change::DeleteTask(t.id.clone()));
        }
    }

    // Constraints read agents' hostnames and attributes, also of agents that are not
    // connected right now (their instances still count).
    let fields: HashMap<AgentId, AgentFields> = if state.apps.values().any(|a| !a.current.spec.constraints.is_empty()) {
        state.agents.values().map(|r| (r.info.id.clone(), AgentFields::new(&r.info))).collect()
    } else {
        HashMap::new()
    };

    // Reconcile every app, except those whose deployment step has not come yet.
    // Steps done of each deployment, worked out once per tick.
    let progress: HashMap<&str, usize> =
        state.deployments.values().map(|d| (d.id.as_str(), state.deployment_progress(d))).collect();
    let steps_done = |d: &Deployment| progress.get(d.id.as_str()).copied().unwrap_or(0);
    let held = crate::scheduler::deploy::held_apps(state.deployments.values(), steps_done);
    // Queued job runs, each placed like one app instance (their run specs must outlive
    // the requests that point at them).
    let ready_runs: Vec<_> = jobs::ready_runs(state, now)
        .into_iter()
        .filter_map(|(run, job)| match jobs::run_spec(job) {
            Some(spec) => Some((run, job, spec)),
            None => {
                tracing::error!(job = %job.name, "cannot build the run spec of a job; its run waits");
                None
            }
        })
        .collect();
    let mut requests = Vec::new();
    let mut stop = Vec::new();
    for (id, rec) in state.apps.iter().filter(|(id, _)| !held.contains(*id)) {
        let tasks: &[&Task] = by_app.get(id).map_or(&[], Vec::as_slice);
        let ctx = ReconcileContext { agents: &fields, probes: state.probes() };
        let plan = reconcile_app(&rec.current, tasks, backoffs.get(id), now, ctx);
        stop.extend(plan.kill);
        if plan.launch > 0 {
            let spec = &rec.current.spec;
            // Every active instance counts for the constraints, also those on their way out.
            let placed = tasks.iter().filter(|t| t.is_active()).filter_map(|t| fields.get(&t.agent_id));
            let constraints = ConstraintTracker::new(&spec.constraints, placed);
            requests.push(LaunchRequest { app: spec, count: plan.launch, constraints });
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
    // Tasks of apps that no longer exist stop too (job tasks are the job scheduler's).
    for (_, tasks) in by_app.iter().filter(|(id, _)| !state.apps.contains_key(**id)) {
        for t in tasks.iter().filter(|t| t.is_active() && t.goal == Goal::Running && t.job.is_none()) {
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

    let first_job_request = requests.len();
    for (_, _, spec) in &ready_runs {
        requests.push(LaunchRequest::new(spec, 1));
    }

    let mut fairness = Fairness::new(total, usage, roles);
    let result = place(&mut agents, &requests, cursor, &mut fairness);
    for p in &result.placed {
        if let Some((run, job, _)) = p.request.checked_sub(first_job_request).and_then(|i| ready_runs.get(i)) {
            let agent = &agents[p.agent];
            let (task, launch, running) = jobs::launch_run(run, job, &agent.id, agent.hostname(), &new_uuid(), now);
            out.launches.push((agent.id.clone(), launch));
            out.job_events.push(jobs::started_event(&running));
            changes.push(Change::PutTask(Box::new(task)));
            changes.push(Change::PutRun(Box::new(running)));
            continue;
        }
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
            host: agent.hostname().to_string(),
            state: TaskState::Staging,
            goal: Goal::Running,
            ports: p.ports.clone(),
            version: rec.current.version,
            config_version: rec.current.version_info.last_config_change_at,
            staged_at: now,
            started_at: None,
            message: None,
            unreachable_since: None,
            job: None,
        };
        let command = match (&spec.cmd, spec.args.is_empty()) {
            (Some(cmd), _) => TaskCommand::Shell(cmd.clone()),
            (None, false) => TaskCommand::Argv(spec.args.clone()),
            (None, true) => TaskCommand::Argv(vec![]),
        };
        let env = task_environment(&rec.current, &task_id, agent.hostname(), &p.ports);
        out.launches.push((
            agent.id.clone(),
            LaunchTask {
                task_id: task_id.clone(),
                app_id: spec.id.clone(),
                command,
                docker: docker_task(spec, &env, &p.ports).map(Box::new),
                env,
                ports: p.ports.clone(),
                kill_grace_ms: spec.task_kill_grace_period_seconds.unwrap_or(3) * 1000,
                cpus: spec.limits().0,
                mem_mb: spec.limits().1,
                health_checks: health::health_check_tasks(spec, &p.ports),
                readiness: health::readiness_task(spec, &p.ports).map(Box::new),
            },
        ));
        changes.push(Change::PutTask(Box::new(task)));
    }
    for (ri, (left, why)) in result.unplaced.iter().filter(|(ri, _)| **ri < first_job_request) {
        let app = requests[*ri].app;
        let mut info = QueueInfo { count: *left, ..Default::default() };
        for (r, n) in why {
            *info.rejections.entry(r.name()).or_default() += n;
            if let Rejection::Constraint(i) = r {
                if let Some(c) = app.constraints.get(*i as usize) {
                    info.constraints.push((c.clone(), *n));
                }
            }
        }
        out.queue.insert(app.id.clone(), info);
    }

    // Deployments whose every action is carried out are finished; the others are
    // watched for progress against their deadline.
    for d in state.deployments.values() {
        let done = steps_done(d);
        if done == d.steps.len() {
            changes.push(Change::DeleteDeployment(d.id.clone(), DeploymentEnd::Finished));
            continue;
        }
        match watch(d, state.deployment_mark(d, done), now) {
            Watch::Waiting => {}
            Watch::Progressed(mark) => {
                let d = Deployment { mark: Some(mark), last_progress_at: now, ..d.clone() };
                changes.push(Change::PutDeployment(Box::new(d)));
            }
            Watch::Failed => {
                let seconds = d.deadline.map_or(0, |dl| dl.seconds);
                let reason = format!("no progress for {seconds} s: {}", state.explain_step(d, done).join("; "));
                changes.push(Change::DeleteDeployment(d.id.clone(), DeploymentEnd::Failed(reason.clone())));
                out.failed.push((d.clone(), reason));
            }
        }
    }
    changes
}

/// What the agent needs to run a task of a Docker app: the app's container settings
/// with the host ports placement assigned (in port-mapping order) and the task's
/// environment.
fn docker_task(spec: &AppSpec, env: &BTreeMap<String, String>, ports: &[u16]) -> Option<DockerTask> {
    let c = spec.container.as_ref()?;
    let d = c.docker.as_ref()?;
    let network = if spec.is_host_networking() { DockerNetwork::Host } else { DockerNetwork::Bridge };
    let mut assigned = ports.iter();
    let port_mappings = match network {
        DockerNetwork::Bridge => spec
            .port_mappings()
            .iter()
            .filter(|m| m.host_port.is_some())
            .filter_map(|m| {
                let host = *assigned.next()?;
                let container = if m.container_port > 0 { m.container_port as u16 } else { host };
                Some(DockerPortMapping { host_port: host, container_port: container, protocol: m.protocol.clone() })
            })
            .collect(),
        _ => Vec::new(),
    };
    let volumes = c
        .volumes
        .iter()
        .filter_map(|v| {
            Some(DockerVolume {
                container_path: v.container_path.clone(),
                host_path: v.host_path.clone()?,
                read_only: v.mode == Some(VolumeMode::RO),
            })
        })
        .collect();
    Some(DockerTask {
        image: d.image.clone(),
        force_pull_image: d.force_pull_image,
        network,
        port_mappings,
        volumes,
        parameters: d.parameters.clone(),
        privileged: d.privileged,
        cpus: spec.limits().0,
        mem_mb: spec.limits().1,
        cmd: spec.cmd.clone(),
        args: spec.args.clone(),
        env: env.clone(),
    })
}

/// What one batch of plans decided, with the answers that wait for its commit.
#[derive(Default)]
struct Planned {
    changes: Vec<Change>,
    soft: Vec<Soft>,
    /// Where each plan's changes and soft changes end, so that the published copy gets
    /// them in the order the working copy did.
    ends: Vec<(usize, usize)>,
    events: Vec<crate::domain::event::Event>,
    replies: Vec<(oneshot::Sender<Reply>, Reply)>,
}

/// Runs a batch of plans one after another against `state`, applying each plan's
/// changes before the next plan runs.
fn plan_batch(state: &mut State, jobs: Vec<WriteJob>) -> Planned {
    let now = now();
    let mut out = Planned { replies: Vec::with_capacity(jobs.len()), ..Default::default() };
    for job in jobs {
        match (job.plan)(state, now) {
            Ok(effects) => {
                for c in &effects.changes {
                    events::derive(state, c, now, &mut out.events);
                    state.apply(c);
                }
                for s in &effects.soft {
                    state.note(s);
                }
                out.changes.extend(effects.changes);
                out.soft.extend(effects.soft);
                out.ends.push((out.changes.len(), out.soft.len()));
                out.replies.push((job.reply, Ok(effects.value)));
            }
            Err(e) => out.replies.push((job.reply, Err(e))),
        }
    }
    out
}

/// The writer's copy after a commit failed with `e`. With no connection to begin with
/// nothing can have been committed, so the published copy is the store's state and the
/// next batch starts from it (`None`; a reload would only wait for the unreachable
/// store once more, holding up the writes queued behind). Otherwise the commit may or
/// may not have happened: the state is reloaded, keeping what agents reported for the
/// tasks still there, and agents are asked to register again, which refreshes it.
async fn after_failed_commit(master: &Master, e: &StoreError) -> Option<State> {
    if matches!(e, StoreError::Db(sqlx::Error::PoolTimedOut)) {
        tracing::error!("commit failed, the store cannot be reached: {e}");
        return None;
    }
    tracing::error!("commit failed, reloading state from the store: {e}");
    match master.store.load().await {
        Ok(snap) => {
            let mut loaded = State::from_snapshot(snap);
            let mut published = master.state.write().await;
            loaded.keep_soft(&published);
            *published = loaded.clone();
            drop(published);
            master.request_reconciliation();
            Some(loaded)
        }
        // The published copy holds what was committed before this batch.
        Err(e2) => {
            tracing::error!("reload failed: {e2}");
            None
        }
    }
}

/// The writer task: runs queued plans in batches against its own copy of the state,
/// one transaction per batch, then hands the batch's changes to the published copy.
/// Planning runs on a blocking thread: a pass over a large cluster takes long enough
/// that it must not hold up the runtime's workers (and the requests they serve).
async fn writer(master: Arc<Master>, mut rx: mpsc::Receiver<WriteJob>, state: State) {
    let mut jobs = Vec::new();
    let mut state = Some(state);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let batch = std::mem::take(&mut jobs);
        let mut working = match state.take() {
            Some(s) => s,
            None => master.state.read().await.clone(),
        };
        let planned = tokio::task::spawn_blocking(move || {
            let planned = plan_batch(&mut working, batch);
            (working, planned)
        })
        .await;
        let Planned { changes, soft, ends, mut events, replies } = match planned {
            Ok((working, planned)) => {
                state = Some(working);
                planned
            }
            // A plan panicked: its batch is lost (its callers see the write path gone)
            // and the working copy with it; the next batch starts from the published one.
            Err(e) => {
                tracing::error!("a write plan failed: {e}");
                continue;
            }
        };
        let publish = |published: &mut State| {
            let (mut c0, mut s0) = (0, 0);
            for &(c1, s1) in &ends {
                changes[c0..c1].iter().for_each(|c| published.apply(c));
                soft[s0..s1].iter().for_each(|s| published.note(s));
                (c0, s0) = (c1, s1);
            }
        };
        match master.store.apply(&changes).await {
            Ok(()) => {
                publish(&mut *master.state.write().await);
                for (reply, r) in replies {
                    let _ = reply.send(r);
                }
                master.events.publish_all(events.drain(..));
            }
            Err(e @ StoreError::Fenced { .. }) => {
                master.depose(&e);
                for (reply, _) in replies {
                    let _ = reply.send(Err(MasterError::NotLeader(e.to_string())));
                }
                return;
            }
            Err(e) => {
                state = after_failed_commit(&master, &e).await;
                let msg = e.to_string();
                for (reply, r) in replies {
                    let _ =
                        reply.send(r.and(Err(MasterError::Store(StoreError::Db(sqlx::Error::Protocol(msg.clone()))))));
                }
            }
        }
    }
}
