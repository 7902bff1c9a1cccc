//! The agent runtime: runs tasks as supervised processes in sandboxes, reports their
//! status to the master, and recovers what it was running after a crash or restart.
//!
//! Layout of an agent's directory:
//!
//! ```text
//! <agent dir>/agent_id                   stable id, created on first start
//! <agent dir>/sandboxes/<task id>/       one per task (a validated TaskId: path-safe)
//!     task.json        the launch, written (atomically) before the supervisor starts
//!     supervisor.json  supervisor pid + start time, written by the supervisor
//!     stdout, stderr   the task's output
//!     exit.json        how the task ended, written by the supervisor
//!     acked            present once the master acknowledged the terminal status
//! ```
//!
//! The supervisor ([`supervisor`]) outlives the agent; the agent follows each supervisor
//! through a pidfd, so it needs no polling and works for adopted processes that are not
//! its children.
//!
//! Docker tasks ([`docker`]) use the same sandbox for task.json, stdout and stderr; the
//! container itself lives under dockerd, labelled with the agent and task ids, so a
//! restarted agent finds it again by label. Their `exit.json` is Docker's own record.

pub mod cgroups;
pub mod docker;
pub mod health;
pub mod leftovers;
pub mod link;
pub mod process;
pub mod protocol;
pub mod supervisor;
pub mod tls;

use crate::domain::agent::Containerizer;
use crate::domain::resources::Value;
use crate::domain::{AgentId, AgentInfo, AgentResources, TaskId, TaskState, Timestamp};
use crate::files::write_atomic;
use docker::DockerExecutor;
use process::{is_same_process, reap, replace_file, PidFd};
use protocol::{FromAgent, LaunchTask, LogChunk, LogStream, TaskCommand, TaskStatus, ToAgent, PROTOCOL_VERSION};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use supervisor::{ExitRecord, SupervisorRecord, EXIT_FILE, SUPERVISOR_FILE};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

/// How to start an agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub dir: PathBuf,
    /// The `dromos` binary, re-executed as `dromos supervise` for each task.
    pub supervisor_exe: PathBuf,
    pub hostname: String,
    pub resources: AgentResources,
    pub attributes: BTreeMap<String, Value>,
    /// The local Docker engine, when there is one: Docker apps can run here.
    pub docker: Option<DockerExecutor>,
    /// Where process tasks get their cpu and memory limits; `None`: they run without.
    pub cgroups: Option<cgroups::Cgroups>,
}

/// How long the sandbox (logs) of an ended, acknowledged task is kept.
pub const SANDBOX_RETENTION: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// How long recovery waits for a just-started supervisor to record itself.
const RECORD_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Channel on which agents report to the master.
pub type MasterInbox = mpsc::UnboundedSender<(AgentId, FromAgent)>;

enum Internal {
    Started { task_id: TaskId, pidfd: Arc<PidFd> },
    ContainerStarted { task_id: TaskId, container_id: String },
    Exited { task_id: TaskId, state: TaskState, message: Option<String> },
}

struct Tracked {
    sandbox: PathBuf,
    state: TaskState,
    pidfd: Option<Arc<PidFd>>,
    /// The Docker container, for Docker tasks.
    container: Option<String>,
    kill_grace: std::time::Duration,
    kill_requested: bool,
    /// Set once the task ended; resent until acknowledged.
    terminal: Option<TaskStatus>,
    /// The task's health checks and environment (from its launch), and, while it runs,
    /// the running checks.
    health_checks: Vec<protocol::HealthCheckTask>,
    readiness: Option<Box<protocol::ReadinessCheckTask>>,
    env: BTreeMap<String, String>,
    checks: Option<health::Checks>,
}

fn now() -> Timestamp {
    Timestamp::from_datetime(chrono::Utc::now())
}

pub fn sandboxes_dir(agent_dir: &Path) -> PathBuf {
    agent_dir.join("sandboxes")
}

/// The sandbox of `task` under `agent_dir`. TaskIds are validated to be path-safe.
pub fn sandbox_of(agent_dir: &Path, task: &TaskId) -> PathBuf {
    sandboxes_dir(agent_dir).join(task.as_str())
}

/// The agent id stored in its directory, if there is one.
fn stored_id(dir: &Path) -> Option<AgentId> {
    let s = std::fs::read_to_string(dir.join("agent_id")).ok()?;
    let id = s.trim();
    (!id.is_empty()).then(|| AgentId(id.to_string()))
}

/// Removes the sandboxes of tasks whose end was acknowledged more than `keep` ago, so
/// crash-looping apps cannot fill the disk. Returns how many were removed.
pub fn gc_sandboxes(agent_dir: &Path, keep: std::time::Duration) -> usize {
    let mut removed = 0;
    for entry in std::fs::read_dir(sandboxes_dir(agent_dir)).into_iter().flatten().flatten() {
        let acked_at = std::fs::metadata(entry.path().join("acked")).and_then(|m| m.modified());
        let expired = acked_at.ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age > keep);
        if expired && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Maps the supervisor's exit record to a terminal task state and message.
pub fn exit_state(rec: &ExitRecord) -> (TaskState, String) {
    if let Some(e) = &rec.error {
        return (TaskState::Failed, e.clone());
    }
    // An OOM kill explains a failure; a task killed on request, or one that exited 0
    // while a child of it was OOM-killed, ended as it says.
    if rec.oom_killed && !rec.killed && rec.exit_code != Some(0) {
        return (TaskState::Failed, "Command was OOM-killed: it went over its memory limit".into());
    }
    let how = match (rec.exit_code, rec.signal) {
        (Some(c), _) => format!("Command exited with status {c}"),
        (None, Some(s)) => format!("Command terminated with signal {s}"),
        (None, None) => "Command ended".to_string(),
    };
    let state = if rec.killed {
        TaskState::Killed
    } else if rec.exit_code == Some(0) {
        TaskState::Finished
    } else {
        TaskState::Failed
    };
    (state, how)
}

/// Largest log chunk one `readLog` returns.
pub const MAX_LOG_CHUNK: u64 = 1024 * 1024;

/// Reads up to `length` bytes (at most [`MAX_LOG_CHUNK`]) of a task's output from
/// `offset` (negative: from the end). Blocking.
pub fn read_log(
    agent_dir: &Path,
    task: &TaskId,
    stream: LogStream,
    offset: i64,
    length: u64,
) -> std::io::Result<LogChunk> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(sandbox_of(agent_dir, task).join(stream.file_name()))?;
    let size = f.metadata()?.len();
    let start = if offset < 0 { size.saturating_sub(offset.unsigned_abs()) } else { (offset as u64).min(size) };
    f.seek(SeekFrom::Start(start))?;
    let mut data = Vec::new();
    f.take(length.min(MAX_LOG_CHUNK)).read_to_end(&mut data)?;
    Ok(LogChunk { size, offset: start, data })
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok())
}

/// Starts the agent runtime on the current tokio runtime. Returns its id and the
/// sender for master commands. The agent registers with the master straight away,
/// reporting every task it recovered from its directory. A new agent (no id in its
/// directory) first stops what an earlier agent there left running ([`leftovers`]).
pub async fn start(
    cfg: AgentConfig,
    master: MasterInbox,
) -> std::io::Result<(AgentId, mpsc::UnboundedSender<ToAgent>)> {
    std::fs::create_dir_all(sandboxes_dir(&cfg.dir))?;
    let stored = stored_id(&cfg.dir);
    let id = stored.clone().unwrap_or_else(|| AgentId(format!("agent-{}", uuid::Uuid::new_v4())));
    let mut replaces = Vec::new();
    if stored.is_none() {
        let sweep = leftovers::sweep(&sandboxes_dir(&cfg.dir), cfg.docker.as_ref()).await;
        if sweep.processes + sweep.containers > 0 {
            tracing::warn!(
                processes = sweep.processes,
                containers = sweep.containers,
                earlier_agents = ?sweep.agents,
                "this agent has no id but its directory's earlier tasks still ran (was it wiped?): \
                 stopped them; the master replaces them"
            );
        }
        replaces = sweep.agents.into_iter().filter(|a| *a != id).collect();
        // Only now: a crash during the sweep must lead to another sweep on the next start.
        write_atomic(&cfg.dir.join("agent_id"), id.0.as_bytes())?;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let (itx, irx) = mpsc::unbounded_channel();
    let probes = Arc::new(tokio::sync::Semaphore::new(health::MAX_CONCURRENT));
    let mut agent = Agent { id: id.clone(), cfg, master, internal: itx, tasks: HashMap::new(), replaces, probes };
    let docker_sandboxes = tokio::task::block_in_place(|| agent.recover());
    agent.recover_containers(docker_sandboxes).await;
    let running: Vec<TaskId> = agent
        .tasks
        .iter()
        .filter(|(_, t)| t.terminal.is_none() && t.state == TaskState::Running)
        .map(|(id, _)| id.clone())
        .collect();
    for id in running {
        agent.start_checks(&id);
    }
    agent.register();
    tokio::spawn(agent.run(rx, irx));
    Ok((id, tx))
}

struct Agent {
    id: AgentId,
    cfg: AgentConfig,
    master: MasterInbox,
    internal: mpsc::UnboundedSender<Internal>,
    tasks: HashMap<TaskId, Tracked>,
    /// Earlier agents of this directory whose tasks were stopped at start.
    replaces: Vec<AgentId>,
    /// Bounds the health probes running at once.
    probes: Arc<tokio::sync::Semaphore>,
}

impl Agent {
    fn info(&self) -> AgentInfo {
        AgentInfo {
            id: self.id.clone(),
            hostname: self.cfg.hostname.clone(),
            resources: self.cfg.resources.clone(),
            attributes: self.cfg.attributes.clone(),
            containerizers: if self.cfg.docker.is_some() {
                vec![Containerizer::Process, Containerizer::Docker]
            } else {
                vec![Containerizer::Process]
            },
        }
    }

    fn send(&self, msg: FromAgent) {
        // The master going away means the process is shutting down; nothing to do.
        let _ = self.master.send((self.id.clone(), msg));
    }

    fn report(&self, task_id: &TaskId, state: TaskState, message: Option<String>) {
        self.send(FromAgent::Status(TaskStatus { task_id: task_id.clone(), state, message, timestamp: now() }));
    }

    /// Rebuilds the task table from the sandboxes: adopt live supervisors, collect the
    /// endings of the others. Returns the sandboxes of Docker tasks, which
    /// [`Agent::recover_containers`] handles.
    fn recover(&mut self) -> Vec<(TaskId, PathBuf, LaunchTask)> {
        let Ok(entries) = std::fs::read_dir(sandboxes_dir(&self.cfg.dir)) else {
            return Vec::new();
        };
        let mut containers = Vec::new();
        // Process tasks, with their launch (None if task.json cannot be read).
        let sandboxes: Vec<(TaskId, PathBuf, Option<LaunchTask>)> = entries
            .flatten()
            .filter_map(|e| Some((e.file_name().to_str()?.parse::<TaskId>().ok()?, e.path())))
            .filter(|(_, sb)| sb.join("task.json").exists() && !sb.join("acked").exists())
            .filter_map(|(id, sb)| match read_json::<LaunchTask>(&sb.join("task.json")) {
                Some(l) if l.docker.is_some() => {
                    containers.push((id, sb, l));
                    None
                }
                l => Some((id, sb, l)),
            })
            .collect();
        // A crash can fall between a supervisor's start and its first record: give such
        // supervisors a moment to write it, so they are adopted rather than duplicated.
        let deadline = std::time::Instant::now() + RECORD_GRACE;
        while sandboxes.iter().any(|(_, sb, _)| !sb.join(SUPERVISOR_FILE).exists() && !sb.join(EXIT_FILE).exists())
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        for (task_id, sandbox, launch) in sandboxes {
            let sup: Option<SupervisorRecord> = read_json(&sandbox.join(SUPERVISOR_FILE));
            let exit: Option<ExitRecord> = read_json(&sandbox.join(EXIT_FILE));
            let mut tracked = Tracked::new(sandbox.clone(), launch.as_ref());
            tracked.state = TaskState::Running;
            match (sup, exit) {
                (_, Some(rec)) => {
                    let (state, msg) = exit_state(&rec);
                    tracked.state = state;
                    tracked.terminal =
                        Some(TaskStatus { task_id: task_id.clone(), state, message: Some(msg), timestamp: now() });
                }
                (Some(s), None) if is_same_process(s.pid, s.start_time) => match PidFd::open(s.pid) {
                    // Re-check after opening: the pidfd now pins exactly this process.
                    Ok(fd) if is_same_process(s.pid, s.start_time) => {
                        let fd = Arc::new(fd);
                        tracked.pidfd = Some(fd.clone());
                        self.watch(task_id.clone(), s.pid, fd, sandbox.clone());
                    }
                    _ => tracked.terminal = Some(lost(&task_id, "supervisor vanished during recovery")),
                },
                (Some(s), None) => {
                    // The supervisor died without recording an ending (killed by hand):
                    // make sure the task's process group does not linger.
                    process::signal_group(s.task_pid, libc::SIGKILL);
                    tracked.terminal = Some(TaskStatus {
                        task_id: task_id.clone(),
                        state: TaskState::Failed,
                        message: Some("task supervisor died".into()),
                        timestamp: now(),
                    });
                }
                (None, None) => {
                    tracked.terminal = Some(lost(&task_id, "task never started (agent stopped during launch)"))
                }
            }
            if let Some(t) = &tracked.terminal {
                tracked.state = t.state;
            }
            self.tasks.insert(task_id, tracked);
        }
        containers
    }

    /// Finds the containers of Docker tasks again by their labels: running ones are
    /// adopted (logs and exit followed again), ended ones report how they ended, and a
    /// task whose container never got created is lost. Containers of this agent that no
    /// unacknowledged task owns are stopped and removed.
    async fn recover_containers(&mut self, sandboxes: Vec<(TaskId, PathBuf, LaunchTask)>) {
        let Some(docker) = self.cfg.docker.clone() else {
            for (task_id, sandbox, l) in sandboxes {
                let mut t = Tracked::new(sandbox, Some(&l));
                t.terminal = Some(lost(&task_id, "Docker is not available on this agent any more"));
                t.state = TaskState::Lost;
                self.tasks.insert(task_id, t);
            }
            return;
        };
        let found = match docker.list(&self.id.0).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("cannot list containers for recovery: {e}");
                Vec::new()
            }
        };
        let by_task: HashMap<&str, &docker::FoundContainer> = found.iter().map(|c| (c.task_id.as_str(), c)).collect();
        for (task_id, sandbox, l) in &sandboxes {
            let mut t = Tracked::new(sandbox.clone(), Some(l));
            match by_task.get(task_id.as_str()) {
                Some(c) => {
                    t.container = Some(c.container_id.clone());
                    t.state = if c.running { TaskState::Running } else { TaskState::Starting };
                    docker.follow_logs(&c.container_id, sandbox);
                    tokio::spawn(watch_container(
                        docker.clone(),
                        self.internal.clone(),
                        task_id.clone(),
                        c.container_id.clone(),
                    ));
                }
                None => {
                    t.terminal = Some(lost(task_id, "container never created (agent stopped during launch)"));
                    t.state = TaskState::Lost;
                }
            }
            self.tasks.insert(task_id.clone(), t);
        }
        let owned: std::collections::HashSet<&str> = sandboxes.iter().map(|(id, _, _)| id.as_str()).collect();
        for c in found.iter().filter(|c| !owned.contains(c.task_id.as_str())) {
            let (docker, id) = (docker.clone(), c.container_id.clone());
            tokio::spawn(async move {
                let _ = docker.stop(&id, std::time::Duration::from_secs(3)).await;
                let _ = docker.remove(&id).await;
            });
        }
    }

    fn register(&self) {
        let tasks = self
            .tasks
            .iter()
            .map(|(id, t)| match &t.terminal {
                Some(s) => s.clone(),
                None => TaskStatus { task_id: id.clone(), state: t.state, message: None, timestamp: now() },
            })
            .collect();
        let replaces = self.replaces.clone();
        self.send(FromAgent::Register { protocol: PROTOCOL_VERSION, info: self.info(), tasks, replaces });
        for (task_id, t) in &self.tasks {
            for finding in t.checks.iter().flat_map(|c| c.latest()) {
                self.send(finding_message(task_id, finding));
            }
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<ToAgent>, mut irx: mpsc::UnboundedReceiver<Internal>) {
        // The first tick fires at once: old sandboxes go at start, then hourly.
        let mut gc = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = gc.tick() => {
                    let dir = self.cfg.dir.clone();
                    tokio::task::spawn_blocking(move || gc_sandboxes(&dir, SANDBOX_RETENTION));
                }
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd),
                    None => return,
                },
                Some(ev) = irx.recv() => self.internal_event(ev),
            }
        }
    }

    fn handle(&mut self, cmd: ToAgent) {
        match cmd {
            ToAgent::Registered { .. } => {}
            ToAgent::Ping => self.send(FromAgent::Pong),
            ToAgent::ReadLog { request, task_id, stream, offset, length } => {
                let (dir, master, id) = (self.cfg.dir.clone(), self.master.clone(), self.id.clone());
                tokio::task::spawn_blocking(move || {
                    let (chunk, error) = match read_log(&dir, &task_id, stream, offset, length) {
                        Ok(c) => (Some(c), None),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            (None, Some(format!("no {} log for task '{task_id}' on this agent", stream.file_name())))
                        }
                        Err(e) => (None, Some(format!("cannot read the log: {e}"))),
                    };
                    let _ = master.send((id, FromAgent::Log { request, chunk, error }));
                });
            }
            ToAgent::Reconcile => self.register(),
            ToAgent::Launch(l) => self.launch(l),
            ToAgent::Kill { task_id } => match self.tasks.get_mut(&task_id) {
                None => self.report(&task_id, TaskState::Lost, Some("task is unknown to the agent".into())),
                Some(t) => {
                    if let Some(s) = t.terminal.clone() {
                        self.send(FromAgent::Status(s));
                    } else {
                        t.kill_requested = true;
                        t.checks = None; // a task on its way out is not checked any more
                        if let Some(fd) = &t.pidfd {
                            if let Err(e) = fd.signal(libc::SIGTERM) {
                                tracing::warn!(task = %task_id, "kill failed: {e}");
                            }
                        }
                        if let (Some(c), Some(d)) = (t.container.clone(), self.cfg.docker.clone()) {
                            let grace = t.kill_grace;
                            tokio::spawn(async move {
                                if let Err(e) = d.stop(&c, grace).await {
                                    tracing::warn!(container = %c, "stop failed: {e}");
                                }
                            });
                        }
                    }
                }
            },
            ToAgent::Ack { task_id, state } => {
                if let Some(t) = self.tasks.get(&task_id) {
                    if t.terminal.as_ref().is_some_and(|s| s.state == state) {
                        let _ = std::fs::write(t.sandbox.join("acked"), b"");
                        if let Some(cg) = &self.cfg.cgroups {
                            // Normally gone with its supervisor; not so if that was killed.
                            let dirs = cg.task_dirs(task_id.as_str());
                            tokio::task::spawn_blocking(move || cgroups::remove(&dirs));
                        }
                        if let (Some(c), Some(d)) = (t.container.clone(), self.cfg.docker.clone()) {
                            tokio::spawn(async move { d.remove(&c).await });
                        }
                        self.tasks.remove(&task_id);
                    }
                }
            }
        }
    }

    fn internal_event(&mut self, ev: Internal) {
        match ev {
            Internal::Started { task_id, pidfd } => {
                crate::failpoint::hit("agent-after-start");
                if let Some(t) = self.tasks.get_mut(&task_id) {
                    if t.terminal.is_none() {
                        t.state = TaskState::Running;
                        if t.kill_requested {
                            let _ = pidfd.signal(libc::SIGTERM);
                        }
                        t.pidfd = Some(pidfd);
                        self.report(&task_id, TaskState::Running, None);
                        self.start_checks(&task_id);
                    }
                }
            }
            Internal::ContainerStarted { task_id, container_id } => {
                crate::failpoint::hit("agent-after-start");
                if let Some(t) = self.tasks.get_mut(&task_id) {
                    t.container = Some(container_id.clone());
                    if t.terminal.is_none() {
                        t.state = TaskState::Running;
                        if t.kill_requested {
                            if let Some(d) = self.cfg.docker.clone() {
                                let grace = t.kill_grace;
                                tokio::spawn(async move { d.stop(&container_id, grace).await });
                            }
                        }
                        self.report(&task_id, TaskState::Running, None);
                        self.start_checks(&task_id);
                    }
                }
            }
            Internal::Exited { task_id, mut state, message } => {
                if let Some(t) = self.tasks.get_mut(&task_id) {
                    if t.kill_requested && t.container.is_some() && state == TaskState::Failed {
                        state = TaskState::Killed; // stopped on request, not failed
                    }
                    let status = TaskStatus { task_id: task_id.clone(), state, message, timestamp: now() };
                    t.state = state;
                    t.pidfd = None;
                    t.checks = None;
                    t.terminal = Some(status.clone());
                    self.send(FromAgent::Status(status));
                }
            }
        }
    }

    /// Starts the health checks of a task that now runs (if it has any).
    fn start_checks(&mut self, task_id: &TaskId) {
        let (master, agent) = (self.master.clone(), self.id.clone());
        let report: health::Report = Arc::new(move |task, finding| {
            let _ = master.send((agent.clone(), finding_message(task, finding)));
        });
        let host = self.cfg.hostname.clone();
        let probes = self.probes.clone();
        if let Some(t) = self.tasks.get_mut(task_id) {
            if (t.health_checks.is_empty() && t.readiness.is_none()) || t.checks.is_some() {
                return;
            }
            let target = health::Target {
                task_id: task_id.clone(),
                host,
                started: now(),
                sandbox: t.sandbox.clone(),
                env: t.env.clone(),
            };
            t.checks = Some(health::Checks::start(target, &t.health_checks, t.readiness.as_deref(), probes, report));
        }
    }

    fn launch(&mut self, l: LaunchTask) {
        if self.tasks.contains_key(&l.task_id) {
            return; // a repeated launch is a no-op: the task already exists here
        }
        let sandbox = sandbox_of(&self.cfg.dir, &l.task_id);
        self.tasks.insert(l.task_id.clone(), Tracked::new(sandbox.clone(), Some(&l)));
        self.report(&l.task_id, TaskState::Starting, None);
        if l.docker.is_some() {
            return self.launch_container(l, sandbox);
        }
        let how = SupervisorLaunch {
            exe: self.cfg.supervisor_exe.clone(),
            agent_id: self.id.clone(),
            cgroups: self.cfg.cgroups.clone(),
        };
        let internal = self.internal.clone();
        tokio::spawn(async move {
            let task_id = l.task_id.clone();
            let sb = sandbox.clone();
            let started = tokio::task::spawn_blocking(move || spawn_supervisor(&how, &sb, &l)).await;
            match started {
                Ok(Ok((pid, fd, running))) => {
                    let fd = Arc::new(fd);
                    if running {
                        let _ = internal.send(Internal::Started { task_id: task_id.clone(), pidfd: fd.clone() });
                    }
                    watch_exit(internal, task_id, pid, fd, sandbox).await;
                }
                Ok(Err(e)) => {
                    let _ = internal.send(Internal::Exited {
                        task_id,
                        state: TaskState::Failed,
                        message: Some(format!("launch failed: {e}")),
                    });
                }
                Err(e) => {
                    let _ = internal.send(Internal::Exited {
                        task_id,
                        state: TaskState::Failed,
                        message: Some(format!("launch failed: {e}")),
                    });
                }
            }
        });
    }

    /// Starts a Docker task: checkpoint the launch, create and start the container, then
    /// follow it until it ends.
    fn launch_container(&mut self, l: LaunchTask, sandbox: PathBuf) {
        let internal = self.internal.clone();
        let Some(docker) = self.cfg.docker.clone() else {
            let _ = internal.send(Internal::Exited {
                task_id: l.task_id,
                state: TaskState::Failed,
                message: Some("Docker is not available on this agent".into()),
            });
            return;
        };
        let agent_id = self.id.0.clone();
        tokio::spawn(async move {
            let task_id = l.task_id.clone();
            let checkpoint = serde_json::to_vec(&l).map_err(std::io::Error::other).and_then(|json| {
                std::fs::create_dir_all(&sandbox)?;
                replace_file(&sandbox.join("task.json"), &json)
            });
            if let Err(e) = checkpoint {
                let msg = format!("cannot write the sandbox: {e}");
                let _ = internal.send(Internal::Exited { task_id, state: TaskState::Failed, message: Some(msg) });
                return;
            }
            let Some(spec) = &l.docker else { return };
            match docker.launch(&agent_id, task_id.as_str(), &l.app_id.to_string(), &sandbox, spec).await {
                Ok(container_id) => {
                    let started =
                        Internal::ContainerStarted { task_id: task_id.clone(), container_id: container_id.clone() };
                    let _ = internal.send(started);
                    watch_container(docker, internal, task_id, container_id).await;
                }
                Err(e) => {
                    let msg = format!("container launch failed: {e}");
                    let _ = internal.send(Internal::Exited { task_id, state: TaskState::Failed, message: Some(msg) });
                }
            }
        });
    }

    fn watch(&self, task_id: TaskId, pid: i32, fd: Arc<PidFd>, sandbox: PathBuf) {
        tokio::spawn(watch_exit(self.internal.clone(), task_id, pid, fd, sandbox));
    }
}

impl Tracked {
    /// A task known from its launch (`None`: its checkpoint cannot be read; then the
    /// default kill grace and no health checks).
    fn new(sandbox: PathBuf, launch: Option<&LaunchTask>) -> Tracked {
        Tracked {
            sandbox,
            state: TaskState::Staging,
            pidfd: None,
            container: None,
            kill_grace: std::time::Duration::from_millis(launch.map_or(3000, |l| l.kill_grace_ms)),
            kill_requested: false,
            terminal: None,
            health_checks: launch.map(|l| l.health_checks.clone()).unwrap_or_default(),
            readiness: launch.and_then(|l| l.readiness.clone()),
            env: launch.map(|l| l.env.clone()).unwrap_or_default(),
            checks: None,
        }
    }
}

/// The message that tells the master what a task's checks found.
fn finding_message(task_id: &TaskId, finding: health::Finding) -> FromAgent {
    match finding {
        health::Finding::Health(index, health) => FromAgent::Health { task_id: task_id.clone(), index, health },
        health::Finding::Ready(readiness) => FromAgent::Ready { task_id: task_id.clone(), readiness },
    }
}

/// Waits until a container ends and reports how. Survives a dockerd restart: waiting
/// is retried for a while before the task is given up as failed.
async fn watch_container(
    docker: DockerExecutor,
    internal: mpsc::UnboundedSender<Internal>,
    task_id: TaskId,
    id: String,
) {
    let mut delay = std::time::Duration::from_millis(200);
    let mut last_error = String::new();
    for _ in 0..12 {
        match docker.wait(&id).await {
            Ok(exit) => {
                let (state, message) = container_exit_state(&exit);
                let _ = internal.send(Internal::Exited { task_id, state, message: Some(message) });
                return;
            }
            Err(docker::DockerError::NoSuchContainer { .. }) => {
                last_error = "the container disappeared".into();
                break;
            }
            Err(e) => {
                tracing::warn!(container = %id, "waiting for the container failed (retrying): {e}");
                last_error = e.to_string();
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(10));
            }
        }
    }
    let _ = internal.send(Internal::Exited { task_id, state: TaskState::Failed, message: Some(last_error) });
}

/// Maps how a container ended to a task state and message (Marathon-style wording).
pub fn container_exit_state(exit: &docker::ExitInfo) -> (TaskState, String) {
    if exit.oom_killed {
        return (TaskState::Failed, "Container was OOM-killed: it went over its memory limit".into());
    }
    match (exit.exit_code, &exit.error) {
        (_, Some(e)) if !e.is_empty() => (TaskState::Failed, format!("Container failed: {e}")),
        (Some(0), _) => (TaskState::Finished, "Container exited with status 0".into()),
        (Some(c), _) => (TaskState::Failed, format!("Container exited with status {c}")),
        (None, _) => (TaskState::Failed, "Container never started".into()),
    }
}

fn lost(task_id: &TaskId, why: &str) -> TaskStatus {
    TaskStatus { task_id: task_id.clone(), state: TaskState::Lost, message: Some(why.into()), timestamp: now() }
}

/// Waits until the supervisor exits, then reports how the task ended.
async fn watch_exit(
    internal: mpsc::UnboundedSender<Internal>,
    task_id: TaskId,
    pid: i32,
    fd: Arc<PidFd>,
    sandbox: PathBuf,
) {
    // SAFETY: the pidfd is owned by `fd` (an Arc we keep alive here) and is neither closed
    // nor replaced while the AsyncFd is registered.
    if let Ok(afd) = unsafe { AsyncFd::register_with_interest(fd.clone(), tokio::io::Interest::READABLE) } {
        let _ = afd.readable().await;
    }
    reap(pid);
    let (state, message) = match read_json::<ExitRecord>(&sandbox.join(EXIT_FILE)) {
        Some(rec) => exit_state(&rec),
        None => (TaskState::Failed, "task supervisor died".to_string()),
    };
    let _ = internal.send(Internal::Exited { task_id, state, message: Some(message) });
}

/// What every supervisor this agent starts has in common.
struct SupervisorLaunch {
    exe: PathBuf,
    agent_id: AgentId,
    cgroups: Option<cgroups::Cgroups>,
}

/// Writes the launch checkpoint, makes the task's cgroup, and starts the supervisor;
/// waits until it reports that the task process exists (true) or could not be started
/// (false). Blocking: runs on the blocking pool.
fn spawn_supervisor(how: &SupervisorLaunch, sandbox: &Path, l: &LaunchTask) -> std::io::Result<(i32, PidFd, bool)> {
    std::fs::create_dir_all(sandbox)?;
    replace_file(&sandbox.join("task.json"), &serde_json::to_vec(l).map_err(std::io::Error::other)?)?;
    let argv: Vec<String> = match &l.command {
        TaskCommand::Shell(cmd) => vec!["/bin/sh".into(), "-c".into(), cmd.clone()],
        TaskCommand::Argv(a) => a.clone(),
    };
    let limits = cgroups::Limits { cpus: l.cpus, mem_mb: l.mem_mb };
    let cgroup_dirs = match &how.cgroups {
        Some(cg) => cg
            .create_task(l.task_id.as_str(), limits)
            .map_err(|e| std::io::Error::other(format!("cannot create the task's cgroup ({}): {e}", cg.describe())))?,
        None => Vec::new(),
    };
    let mut cmd = Command::new(&how.exe);
    cmd.arg("supervise")
        .arg("--sandbox")
        .arg(sandbox)
        .arg("--grace-ms")
        .arg(l.kill_grace_ms.to_string())
        .arg("--agent-id")
        .arg(&how.agent_id.0);
    for d in &cgroup_dirs {
        cmd.arg("--cgroup").arg(d);
    }
    cmd.arg("--").args(&argv);
    for k in process::agent_settings() {
        cmd.env_remove(k);
    }
    cmd.envs(&l.env).env("MESOS_SANDBOX", sandbox).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn()?;
    let pid = child.id() as i32;
    // Our child: its pid cannot be reused before we reap it, so this pidfd is exact.
    let fd = PidFd::open(pid)?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out).read_line(&mut line)?;
    }
    // The std Child handle is dropped without waiting: the pidfd watcher reaps it.
    Ok((pid, fd, line.starts_with("running ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn gc_removes_only_long_acknowledged_sandboxes() {
        let dir = tempfile::tempdir().unwrap();
        let sb = sandboxes_dir(dir.path());
        for name in ["old.x", "fresh.x", "running.x"] {
            std::fs::create_dir_all(sb.join(name)).unwrap();
            std::fs::write(sb.join(name).join("stdout"), b"log").unwrap();
        }
        for name in ["old.x", "fresh.x"] {
            std::fs::write(sb.join(name).join("acked"), b"").unwrap();
        }
        let two_days_ago = SystemTime::now() - Duration::from_secs(48 * 3600);
        std::fs::File::options()
            .write(true)
            .open(sb.join("old.x").join("acked"))
            .unwrap()
            .set_modified(two_days_ago)
            .unwrap();
        assert_eq!(gc_sandboxes(dir.path(), SANDBOX_RETENTION), 1);
        assert!(!sb.join("old.x").exists());
        assert!(sb.join("fresh.x").exists() && sb.join("running.x").exists());
    }
}
