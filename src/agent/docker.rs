//! The Docker executor: runs one task as one Docker container on the local Docker Engine
//! (unix socket only, never TCP) through bollard, and copies its output into the
//! sandbox.
//!
//! Where it sits: the master resolves an app's container definition into a
//! [`DockerTask`] (image, ports, volumes, validated parameters, resources, command); the
//! agent calls [`DockerExecutor::launch`], follows the task with [`DockerExecutor::wait`]
//! and kills it with [`DockerExecutor::stop`]. Containers carry the labels
//! `dromos.agent-id`, `dromos.task-id` and `dromos.app-id` and are named
//! `dromos-<task id>`, so after an agent restart [`DockerExecutor::list`] finds them
//! again and a repeated launch reuses the container instead of starting a second one.
//!
//! Logs: a spawned task copies the container's stdout and stderr into `<sandbox>/stdout`
//! and `<sandbox>/stderr` (what the logs endpoint serves). It asks Docker for timestamped
//! log entries and records in `<sandbox>/docker-logs.json` how far it got: per stream, the
//! timestamp of the last entry copied and the file's length after it. A restarted agent
//! calls [`DockerExecutor::follow_logs`] again: the files are cut back to the recorded
//! lengths (anything written after the last record will come again), and the copy
//! resumes from the recorded timestamps, so nothing is duplicated or lost. Docker
//! timestamps within one stream are strictly increasing; the resume point starts one
//! second early to allow for the small skew between the stdout and stderr readers.

use crate::domain::app::DockerParameter;
use crate::domain::docker::{self as rules, DockerOption};
use crate::domain::Timestamp;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, ContainerSummaryStateEnum, HostConfig, HostConfigLogConfig,
    PortBinding, ResourcesUlimits,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StopContainerOptions, WaitContainerOptions,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

/// The Docker Engine's usual unix socket.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// Label with the id of the agent that launched the container.
pub const LABEL_AGENT_ID: &str = "dromos.agent-id";
/// Label with the task id; [`DockerExecutor::list`] reads it back.
pub const LABEL_TASK_ID: &str = "dromos.task-id";
/// Label with the app id, for people looking at `docker ps`.
pub const LABEL_APP_ID: &str = "dromos.app-id";
/// Label with the task's sandbox (its logs): lets an agent whose directory was wiped,
/// and so lost its id, find the containers started from that directory.
pub const LABEL_SANDBOX: &str = "dromos.sandbox";
/// Prefix of container names: `dromos-<task id>`.
pub const NAME_PREFIX: &str = "dromos-";
/// The log copier's record of how far it got, in the sandbox.
pub const LOG_CURSOR_FILE: &str = "docker-logs.json";

/// Timeout of one Docker API request until its response headers arrive. Streaming
/// answers (wait, logs, pull) send headers at once, so it does not limit them.
const REQUEST_TIMEOUT_SECS: u64 = 120;
/// How often the log copier records its position while output keeps coming.
const CURSOR_SAVE_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Error)]
pub enum DockerError {
    #[error("cannot reach the local Docker daemon: {0}")]
    Connect(#[source] BollardError),
    #[error("invalid Docker task: {0}")]
    InvalidTask(String),
    #[error("image '{image}' is not on this agent and could not be pulled: {reason}")]
    ImageUnavailable { image: String, reason: String },
    #[error("container name '{name}' is taken by a container that is not this task's")]
    NameConflict { name: String },
    #[error("no such container: {0}")]
    NoSuchContainer(String),
    #[error("Docker {op} failed: {source}")]
    Api {
        op: &'static str,
        #[source]
        source: BollardError,
    },
    #[error("lost track of container {0}: Docker ended the wait without a result")]
    WaitInterrupted(String),
    #[error("sandbox file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn api(op: &'static str) -> impl FnOnce(BollardError) -> DockerError {
    move |source| DockerError::Api { op, source }
}

/// The HTTP status of a Docker error answer, if it was one.
fn status_of(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// How the container is networked (Marathon's `networks` mode, resolved by the master).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DockerNetwork {
    /// Docker's bridge network; `port_mappings` publish container ports on the host.
    Bridge,
    /// The host's network namespace; the task binds its host ports itself.
    #[default]
    Host,
    /// No network at all.
    None,
}

/// One published port. `container_port` is already resolved (Marathon's 0 = "same as the
/// host port" was replaced by the master). A `host_port` of 0 exposes the container port
/// without publishing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerPortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp`, `udp`, or both as `udp,tcp`.
    pub protocol: String,
}

/// A host directory bound into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerVolume {
    pub container_path: String,
    pub host_path: String,
    pub read_only: bool,
}

/// Everything the agent needs to run a task in Docker, resolved by the master.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerTask {
    pub image: String,
    #[serde(default)]
    pub force_pull_image: bool,
    #[serde(default)]
    pub network: DockerNetwork,
    #[serde(default)]
    pub port_mappings: Vec<DockerPortMapping>,
    #[serde(default)]
    pub volumes: Vec<DockerVolume>,
    /// `container.docker.parameters`, checked against the allow-list of
    /// [`crate::domain::docker`] (and checked again here).
    #[serde(default)]
    pub parameters: Vec<DockerParameter>,
    #[serde(default)]
    pub privileged: bool,
    /// CPU shares of the app: becomes the container's CPU limit (NanoCpus).
    pub cpus: f64,
    /// Memory of the app in MiB: the container's memory limit, swap included, so going
    /// over it gets the task OOM-killed instead of swapping.
    pub mem_mb: f64,
    /// Marathon's `cmd`: run as `/bin/sh -c cmd` (replaces the image's entrypoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// Marathon's `args`: appended to the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// The task's environment (PORT0.., HOST, MARATHON_APP_ID, ...). Wins over `env`
    /// parameters with the same name.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitInfo {
    /// The main process's exit status (137 after SIGKILL, e.g. from the OOM killer);
    /// `None` if it never started.
    pub exit_code: Option<i64>,
    /// The kernel killed it for going over its memory limit.
    pub oom_killed: bool,
    /// Docker's own error, e.g. the command could not be started.
    pub error: Option<String>,
    pub finished_at: Option<Timestamp>,
}

/// A container of this agent found by its labels (recovery after an agent restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundContainer {
    pub task_id: String,
    /// The agent that launched it.
    pub agent_id: String,
    pub container_id: String,
    pub running: bool,
}

/// The log copiers running in this process, by container id: at most one per container,
/// so a repeated launch or a second `follow_logs` never writes the output twice.
static LOG_COPIERS: Mutex<BTreeMap<String, watch::Receiver<bool>>> = Mutex::new(BTreeMap::new());

/// A handle on a container's log copier.
#[derive(Debug, Clone)]
pub struct LogFollow {
    done: watch::Receiver<bool>,
}

impl LogFollow {
    /// Resolves once the copier has stopped: the container ended and all its output is
    /// in the sandbox, or the copier failed (it logs why).
    pub async fn finished(mut self) {
        // An error means the copier is gone, which is what we wait for too.
        let _ = self.done.wait_for(|done| *done).await;
    }
}

/// Runs tasks as Docker containers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DockerExecutor {
    docker: Docker,
}

impl DockerExecutor {
    /// Connects to the local Docker Engine: the unix socket `DOCKER_HOST` names if it is a
    /// `unix://` address (a TCP address is ignored), else [`DEFAULT_SOCKET`].
    pub async fn connect() -> Result<Self, DockerError> {
        let from_env = std::env::var("DOCKER_HOST").ok().and_then(|h| h.strip_prefix("unix://").map(PathBuf::from));
        Self::connect_to(&from_env.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))).await
    }

    /// Connects to the Docker Engine on the unix socket `socket`, agrees on the API
    /// version (Docker 20.10 speaks 1.41, older than bollard's default) and checks that
    /// the daemon answers.
    pub async fn connect_to(socket: &Path) -> Result<Self, DockerError> {
        let docker = Docker::connect_with_socket(&socket.to_string_lossy(), REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
            .map_err(DockerError::Connect)?;
        let docker = docker.negotiate_version().await.map_err(DockerError::Connect)?;
        docker.ping().await.map_err(DockerError::Connect)?;
        Ok(DockerExecutor { docker })
    }

    /// Starts `task` as the container `dromos-<task_id>` and starts copying its output
    /// into `sandbox`. Returns the container id. Idempotent: if this task's container
    /// already exists it is reused: started if it never was, left alone if it runs or
    /// ended (never run twice).
    pub async fn launch(
        &self,
        agent_id: &str,
        task_id: &str,
        app_id: &str,
        sandbox: &Path,
        task: &DockerTask,
    ) -> Result<String, DockerError> {
        let name = container_name(task_id)?;
        let options = check_task(task)?;
        for v in &task.volumes {
            // The same rules on the real target, so a symlink cannot lead to the socket.
            if let Ok(real) = tokio::fs::canonicalize(&v.host_path).await {
                let real = real.to_string_lossy();
                rules::check_host_bind(&v.container_path, &real).map_err(DockerError::InvalidTask)?;
            }
        }
        let (id, needs_start) = match self.existing(&name, agent_id, task_id).await? {
            // Never restart a container that already ran: its end is the task's end.
            Some((id, status)) => (id, status == Some(ContainerStateStatusEnum::CREATED)),
            None => {
                self.ensure_image(&task.image, task.force_pull_image).await?;
                let mut body = container_body(agent_id, task_id, app_id, task, &options)?;
                if let Some(labels) = body.labels.as_mut() {
                    labels.insert(LABEL_SANDBOX.to_string(), sandbox.to_string_lossy().into_owned());
                }
                let create = CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
                match self.docker.create_container(Some(create), body).await {
                    Ok(created) => (created.id, true),
                    // Lost a race with another launch of the same task: use its container.
                    Err(e) if status_of(&e) == Some(409) => match self.existing(&name, agent_id, task_id).await? {
                        Some((id, status)) => (id, status == Some(ContainerStateStatusEnum::CREATED)),
                        None => return Err(DockerError::NameConflict { name }),
                    },
                    Err(e) => return Err(api("create")(e)),
                }
            }
        };
        if needs_start {
            match self.docker.start_container(&id, None).await {
                // 304: a concurrent launch started it first.
                Ok(()) => {}
                Err(e) if status_of(&e) == Some(304) => {}
                Err(e) => return Err(api("start")(e)),
            }
        }
        self.follow_logs(&id, sandbox);
        Ok(id)
    }

    /// The id and state of this task's container if it exists; an error if the name is
    /// taken by a container with other labels.
    async fn existing(
        &self,
        name: &str,
        agent_id: &str,
        task_id: &str,
    ) -> Result<Option<(String, Option<ContainerStateStatusEnum>)>, DockerError> {
        let found = match self.docker.inspect_container(name, None::<InspectContainerOptions>).await {
            Ok(c) => c,
            Err(e) if status_of(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(api("inspect")(e)),
        };
        let labels = found.config.and_then(|c| c.labels).unwrap_or_default();
        let ours = labels.get(LABEL_TASK_ID).map(String::as_str) == Some(task_id)
            && labels.get(LABEL_AGENT_ID).map(String::as_str) == Some(agent_id);
        match found.id {
            Some(id) if ours => Ok(Some((id, found.state.and_then(|s| s.status)))),
            _ => Err(DockerError::NameConflict { name: name.to_string() }),
        }
    }

    /// Makes sure `image` is present: a local image is used unless `force_pull`; else it
    /// is pulled. A failed forced pull falls back to a local copy if there is one.
    async fn ensure_image(&self, image: &str, force_pull: bool) -> Result<(), DockerError> {
        let local = match self.docker.inspect_image(image).await {
            Ok(_) => true,
            Err(e) if status_of(&e) == Some(404) => false,
            Err(e) => return Err(api("image inspect")(e)),
        };
        if local && !force_pull {
            return Ok(());
        }
        let pull = CreateImageOptions { from_image: Some(rules::pull_reference(image)), ..Default::default() };
        let mut progress = self.docker.create_image(Some(pull), None, None);
        let mut failure = None;
        while let Some(step) = progress.next().await {
            if let Err(e) = step {
                failure = Some(e.to_string());
                break;
            }
        }
        match failure {
            None => Ok(()),
            Some(reason) if local => {
                tracing::warn!(image, %reason, "forced pull failed; using the local image");
                Ok(())
            }
            Some(reason) => Err(DockerError::ImageUnavailable { image: image.to_string(), reason }),
        }
    }

    /// Starts copying the container's output into `<sandbox>/stdout` and `stderr`,
    /// resuming where an earlier copier (of this or a previous agent process) stopped.
    /// At most one copier runs per container in this process; a second call returns a
    /// handle on the running one.
    pub fn follow_logs(&self, container_id: &str, sandbox: &Path) -> LogFollow {
        let mut copiers = LOG_COPIERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(done) = copiers.get(container_id) {
            return LogFollow { done: done.clone() };
        }
        let (tx, rx) = watch::channel(false);
        copiers.insert(container_id.to_string(), rx.clone());
        let docker = self.docker.clone();
        let id = container_id.to_string();
        let sandbox = sandbox.to_path_buf();
        tokio::spawn(async move {
            if let Err(e) = copy_logs(&docker, &id, &sandbox).await {
                tracing::warn!(container = %id, error = %e, "log copy stopped");
            }
            LOG_COPIERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&id);
            let _ = tx.send(true);
        });
        LogFollow { done: rx }
    }

    /// Resolves when the container is not running any more (at once if it already ended)
    /// and tells how it ended. An error if the container is gone or the daemon went away
    /// (e.g. restarted) while waiting: the caller decides whether to wait again.
    pub async fn wait(&self, container_id: &str) -> Result<ExitInfo, DockerError> {
        let opts = WaitContainerOptions { condition: "not-running".to_string() };
        let mut waiting = self.docker.wait_container(container_id, Some(opts));
        match waiting.next().await {
            // bollard reports a non-zero exit as an error; inspect tells the details.
            Some(Ok(_)) | Some(Err(BollardError::DockerContainerWaitError { .. })) => {}
            Some(Err(e)) if status_of(&e) == Some(404) => {
                return Err(DockerError::NoSuchContainer(container_id.to_string()))
            }
            Some(Err(e)) => return Err(api("wait")(e)),
            None => return Err(DockerError::WaitInterrupted(container_id.to_string())),
        }
        let inspected = match self.docker.inspect_container(container_id, None::<InspectContainerOptions>).await {
            Ok(c) => c,
            Err(e) if status_of(&e) == Some(404) => return Err(DockerError::NoSuchContainer(container_id.to_string())),
            Err(e) => return Err(api("inspect")(e)),
        };
        let state = inspected.state.unwrap_or_default();
        let error = state.error.filter(|e| !e.is_empty());
        if state.status == Some(ContainerStateStatusEnum::CREATED) {
            let error = error.or_else(|| Some("the container was never started".to_string()));
            return Ok(ExitInfo { exit_code: None, oom_killed: false, error, finished_at: None });
        }
        let finished_at = state.finished_at.as_deref().and_then(Timestamp::parse).filter(|t| t.millis() > 0);
        Ok(ExitInfo { exit_code: state.exit_code, oom_killed: state.oom_killed.unwrap_or(false), error, finished_at })
    }

    /// Stops the container: its stop signal (SIGTERM unless the image or a `stop-signal`
    /// parameter says otherwise), then SIGKILL after `grace` (rounded up to whole
    /// seconds, Docker's unit). Idempotent: a stopped or unknown container is fine.
    pub async fn stop(&self, container_id: &str, grace: Duration) -> Result<(), DockerError> {
        let secs = grace.as_millis().div_ceil(1000).min(i32::MAX as u128) as i32;
        // The answer comes after the grace period: allow for it on top of the usual timeout.
        let docker = self.docker.clone().with_timeout(Duration::from_secs(secs as u64 + REQUEST_TIMEOUT_SECS));
        let opts = StopContainerOptions { t: Some(secs), signal: None };
        match docker.stop_container(container_id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(status_of(&e), Some(304 | 404)) => Ok(()),
            Err(e) => Err(api("stop")(e)),
        }
    }

    /// Every container (running or not) launched by agent `agent_id`, by label.
    pub async fn list(&self, agent_id: &str) -> Result<Vec<FoundContainer>, DockerError> {
        self.list_labelled(format!("{LABEL_AGENT_ID}={agent_id}"), |_| true).await
    }

    /// Every container (running or not) whose sandbox lies under `dir`, whichever agent
    /// launched it.
    pub async fn list_under(&self, dir: &Path) -> Result<Vec<FoundContainer>, DockerError> {
        self.list_labelled(LABEL_SANDBOX.to_string(), |labels| {
            labels.get(LABEL_SANDBOX).is_some_and(|s| Path::new(s).starts_with(dir))
        })
        .await
    }

    async fn list_labelled(
        &self,
        filter: String,
        keep: impl Fn(&HashMap<String, String>) -> bool,
    ) -> Result<Vec<FoundContainer>, DockerError> {
        let filters = HashMap::from([("label".to_string(), vec![filter])]);
        let opts = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let containers = self.docker.list_containers(Some(opts)).await.map_err(api("list"))?;
        let mut found: Vec<FoundContainer> = containers
            .into_iter()
            .filter_map(|c| {
                let running = c.state == Some(ContainerSummaryStateEnum::RUNNING);
                let mut labels = c.labels?;
                if !keep(&labels) {
                    return None;
                }
                let task_id = labels.remove(LABEL_TASK_ID)?;
                let agent_id = labels.remove(LABEL_AGENT_ID)?;
                Some(FoundContainer { task_id, agent_id, container_id: c.id?, running })
            })
            .collect();
        found.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        Ok(found)
    }

    /// Removes the container (killing it if it still runs) and its anonymous volumes.
    /// Idempotent: an unknown container, or one already being removed, is fine.
    pub async fn remove(&self, container_id: &str) -> Result<(), DockerError> {
        let opts = RemoveContainerOptions { force: true, v: true, link: false };
        match self.docker.remove_container(container_id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(status_of(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(api("remove")(e)),
        }
    }
}

/// `dromos-<task_id>`, after checking that the task id makes a valid Docker name.
pub fn container_name(task_id: &str) -> Result<String, DockerError> {
    let ok = !task_id.is_empty()
        && task_id.len() <= 200
        && task_id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && task_id.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !ok {
        return Err(DockerError::InvalidTask(format!("task id '{task_id}' cannot name a container")));
    }
    Ok(format!("{NAME_PREFIX}{task_id}"))
}

/// Re-checks what the master resolved (defence in depth) and parses the parameters.
fn check_task(task: &DockerTask) -> Result<Vec<DockerOption>, DockerError> {
    let invalid = DockerError::InvalidTask;
    rules::check_image(&task.image).map_err(invalid)?;
    let options = rules::parse_parameters(&task.parameters).map_err(|errs| {
        let msgs: Vec<String> = errs.into_iter().map(|(i, m)| format!("parameters[{i}]: {m}")).collect();
        invalid(msgs.join("; "))
    })?;
    for (i, v) in task.volumes.iter().enumerate() {
        rules::check_host_bind(&v.container_path, &v.host_path).map_err(|e| invalid(format!("volumes[{i}]: {e}")))?;
    }
    for (i, pm) in task.port_mappings.iter().enumerate() {
        protocols(&pm.protocol).map_err(|e| invalid(format!("portMappings[{i}]: {e}")))?;
        if pm.container_port == 0 {
            return Err(invalid(format!("portMappings[{i}]: containerPort must be resolved (not 0)")));
        }
    }
    if task.cmd.is_some() && !task.args.is_empty() {
        return Err(invalid("a task has either cmd or args, not both".into()));
    }
    if !(task.cpus.is_finite() && task.cpus >= 0.0 && task.mem_mb.is_finite() && task.mem_mb >= 0.0) {
        return Err(invalid("cpus and mem must be non-negative numbers".into()));
    }
    Ok(options)
}

fn protocols(protocol: &str) -> Result<Vec<&str>, String> {
    let list: Vec<&str> = protocol.split(',').collect();
    if list.iter().all(|p| *p == "tcp" || *p == "udp") {
        Ok(list)
    } else {
        Err(format!("protocol '{protocol}' must be tcp, udp or udp,tcp"))
    }
}

/// The container definition for `task`: labels, command, environment, ports, binds,
/// resources and the allow-listed options. Pure, so it is unit-tested without Docker.
fn container_body(
    agent_id: &str,
    task_id: &str,
    app_id: &str,
    task: &DockerTask,
    options: &[DockerOption],
) -> Result<ContainerCreateBody, DockerError> {
    let mut body = ContainerCreateBody { image: Some(task.image.clone()), ..Default::default() };
    let mut host = HostConfig { privileged: Some(task.privileged), ..Default::default() };
    let mut labels: HashMap<String, String> = HashMap::new();
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut entrypoint = None;
    let mut log_config: Option<HostConfigLogConfig> = None;

    for o in options {
        match o {
            DockerOption::Label { key, value } => {
                labels.insert(key.clone(), value.clone());
            }
            DockerOption::Env { name, value } => {
                env.insert(name.clone(), value.clone());
            }
            DockerOption::Workdir(d) => body.working_dir = Some(d.clone()),
            DockerOption::Hostname(h) => body.hostname = Some(h.clone()),
            DockerOption::User(u) => body.user = Some(u.clone()),
            DockerOption::Entrypoint(e) => entrypoint = Some(vec![e.clone()]),
            DockerOption::MemorySwap(b) => host.memory_swap = Some(*b),
            DockerOption::MemoryReservation(b) => host.memory_reservation = Some(*b),
            DockerOption::ShmSize(b) => host.shm_size = Some(*b),
            DockerOption::PidsLimit(n) => host.pids_limit = Some(*n),
            DockerOption::CpuShares(n) => host.cpu_shares = Some(*n),
            DockerOption::Ulimit { name, soft, hard } => host
                .ulimits
                .get_or_insert_with(Vec::new)
                .push(ResourcesUlimits { name: Some(name.clone()), soft: Some(*soft), hard: Some(*hard) }),
            DockerOption::LogDriver(d) => log_config.get_or_insert_with(Default::default).typ = Some(d.clone()),
            DockerOption::LogOpt { key, value } => {
                let config = log_config.get_or_insert_with(Default::default).config.get_or_insert_with(HashMap::new);
                config.insert(key.clone(), value.clone());
            }
            DockerOption::ReadOnly(b) => host.readonly_rootfs = Some(*b),
            DockerOption::Init(b) => host.init = Some(*b),
            DockerOption::StopSignal(s) => body.stop_signal = Some(s.clone()),
            DockerOption::AddHost { host: name, ip } => {
                host.extra_hosts.get_or_insert_with(Vec::new).push(format!("{name}:{ip}"))
            }
            DockerOption::Dns(ip) => host.dns.get_or_insert_with(Vec::new).push(ip.to_string()),
            DockerOption::DnsSearch(d) => host.dns_search.get_or_insert_with(Vec::new).push(d.clone()),
            DockerOption::DnsOption(o) => host.dns_options.get_or_insert_with(Vec::new).push(o.clone()),
            DockerOption::Tmpfs { path, options } => {
                host.tmpfs.get_or_insert_with(HashMap::new).insert(path.clone(), options.clone());
            }
        }
    }
    if let Some(lc) = log_config {
        // Options without a driver go with json-file, a driver `docker logs` can read back.
        host.log_config = Some(HostConfigLogConfig { typ: lc.typ.or_else(|| Some("json-file".to_string())), ..lc });
    }

    labels.insert(LABEL_AGENT_ID.to_string(), agent_id.to_string());
    labels.insert(LABEL_TASK_ID.to_string(), task_id.to_string());
    labels.insert(LABEL_APP_ID.to_string(), app_id.to_string());
    body.labels = Some(labels);

    env.extend(task.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    body.env = Some(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect());

    match (&task.cmd, task.args.is_empty()) {
        (Some(cmd), _) => {
            body.entrypoint = Some(vec!["/bin/sh".to_string(), "-c".to_string()]);
            body.cmd = Some(vec![cmd.clone()]);
        }
        (None, false) => {
            body.entrypoint = entrypoint;
            body.cmd = Some(task.args.clone());
        }
        (None, true) => body.entrypoint = entrypoint,
    }

    host.network_mode = Some(
        match task.network {
            DockerNetwork::Bridge => "bridge",
            DockerNetwork::Host => "host",
            DockerNetwork::None => "none",
        }
        .to_string(),
    );
    if task.network == DockerNetwork::Bridge && !task.port_mappings.is_empty() {
        let mut exposed = Vec::new();
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for pm in &task.port_mappings {
            for proto in protocols(&pm.protocol).map_err(DockerError::InvalidTask)? {
                let key = format!("{}/{proto}", pm.container_port);
                if !exposed.contains(&key) {
                    exposed.push(key.clone());
                }
                if pm.host_port != 0 {
                    let binding = PortBinding { host_ip: None, host_port: Some(pm.host_port.to_string()) };
                    bindings.entry(key).or_insert_with(|| Some(Vec::new())).get_or_insert_with(Vec::new).push(binding);
                }
            }
        }
        body.exposed_ports = Some(exposed);
        host.port_bindings = Some(bindings);
    }

    if !task.volumes.is_empty() {
        host.binds = Some(
            task.volumes
                .iter()
                .map(|v| format!("{}:{}:{}", v.host_path, v.container_path, if v.read_only { "ro" } else { "rw" }))
                .collect(),
        );
    }

    if task.cpus > 0.0 {
        // Docker's smallest CPU limit is 0.01 CPU.
        host.nano_cpus = Some(((task.cpus * 1e9).round() as i64).max(10_000_000));
    }
    if task.mem_mb > 0.0 {
        let bytes = (task.mem_mb * 1024.0 * 1024.0).round() as i64;
        host.memory = Some(bytes);
        // Memory + swap = memory: no swap, so going over the limit is an OOM kill.
        host.memory_swap.get_or_insert(bytes);
    }
    body.host_config = Some(host);
    Ok(body)
}

/// How far the log copy got: per stream, the Docker timestamp (ns since the epoch) of
/// the last entry copied, and the sandbox file's length right after it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogCursor {
    stdout_nanos: i64,
    stderr_nanos: i64,
    stdout_len: u64,
    stderr_len: u64,
}

impl LogCursor {
    /// The `since` (whole seconds) to ask Docker for: one second before the earlier
    /// stream's position, for the skew between the two streams' readers; 0 = from the start.
    /// (bollard types `since` as i32 seconds, so this saturates in 2038.)
    fn since_secs(&self) -> i32 {
        let seen = [self.stdout_nanos, self.stderr_nanos].into_iter().filter(|n| *n > 0).min();
        match seen {
            Some(n) => i32::try_from(n / 1_000_000_000 - 1).unwrap_or(i32::MAX).max(0),
            None => 0,
        }
    }
}

/// An append-only sandbox log file that knows its length.
struct LogFile {
    path: PathBuf,
    file: tokio::fs::File,
    len: u64,
}

impl LogFile {
    /// Opens (creating) the file without following a symlink at its name.
    fn open(path: PathBuf) -> Result<LogFile, DockerError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| DockerError::Io { path: path.clone(), source };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        Ok(LogFile { file: tokio::fs::File::from_std(file), len, path })
    }

    async fn truncate(&mut self, len: u64) -> Result<(), DockerError> {
        self.file.set_len(len).await.map_err(|source| DockerError::Io { path: self.path.clone(), source })?;
        self.len = len;
        Ok(())
    }

    async fn append(&mut self, data: &[u8]) -> Result<(), DockerError> {
        let io = |source| DockerError::Io { path: self.path.clone(), source };
        self.file.write_all(data).await.map_err(io)?;
        // Visible to the logs endpoint at once, and in the file before the cursor says so.
        // (No fsync: after a machine crash a file shorter than its cursor is copied afresh.)
        self.file.flush().await.map_err(io)?;
        self.len += data.len() as u64;
        Ok(())
    }
}

async fn load_cursor(path: &Path) -> Option<LogCursor> {
    let bytes = tokio::fs::read(path).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

async fn save_cursor(path: &Path, cursor: &LogCursor) -> Result<(), DockerError> {
    let io = |source| DockerError::Io { path: path.to_path_buf(), source };
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec(cursor).map_err(|e| io(std::io::Error::other(e)))?;
    tokio::fs::write(&tmp, json).await.map_err(io)?;
    tokio::fs::rename(&tmp, path).await.map_err(io)
}

/// Splits Docker's `<RFC 3339 nanosecond timestamp> ` prefix off a log entry.
fn split_timestamp(entry: &[u8]) -> (Option<i64>, &[u8]) {
    let Some(space) = entry.iter().take(64).position(|b| *b == b' ') else { return (None, entry) };
    let nanos = std::str::from_utf8(&entry[..space])
        .ok()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .and_then(|t| t.timestamp_nanos_opt());
    match nanos {
        Some(n) => (Some(n), &entry[space + 1..]),
        None => (None, entry),
    }
}

/// Copies the container's output into the sandbox until the container ends (see the
/// module doc for how it resumes).
async fn copy_logs(docker: &Docker, container_id: &str, sandbox: &Path) -> Result<(), DockerError> {
    let cursor_path = sandbox.join(LOG_CURSOR_FILE);
    let mut cursor = load_cursor(&cursor_path).await.unwrap_or_default();
    let mut out = LogFile::open(sandbox.join("stdout"))?;
    let mut err = LogFile::open(sandbox.join("stderr"))?;
    if out.len < cursor.stdout_len || err.len < cursor.stderr_len {
        // The files are not what the cursor describes (replaced or cut): copy afresh.
        cursor = LogCursor::default();
    }
    // Anything after the recorded lengths was written but not recorded: it comes again.
    out.truncate(cursor.stdout_len).await?;
    err.truncate(cursor.stderr_len).await?;
    let resume = cursor;

    let opts = LogsOptions {
        follow: true,
        stdout: true,
        stderr: true,
        timestamps: true,
        since: resume.since_secs(),
        ..Default::default()
    };
    let mut entries = docker.logs(container_id, Some(opts));
    let mut saved_at = Instant::now();
    let mut unsaved = false;
    let result = loop {
        let entry = match entries.next().await {
            None => break Ok(()),
            Some(Err(e)) => break Err(api("logs")(e)),
            Some(Ok(entry)) => entry,
        };
        let (is_stderr, message) = match entry {
            bollard::container::LogOutput::StdErr { message } => (true, message),
            bollard::container::LogOutput::StdOut { message } | bollard::container::LogOutput::Console { message } => {
                (false, message)
            }
            bollard::container::LogOutput::StdIn { .. } => continue,
        };
        let (nanos, data) = split_timestamp(&message);
        let (file, copied_until, pos, len) = if is_stderr {
            (&mut err, resume.stderr_nanos, &mut cursor.stderr_nanos, &mut cursor.stderr_len)
        } else {
            (&mut out, resume.stdout_nanos, &mut cursor.stdout_nanos, &mut cursor.stdout_len)
        };
        if nanos.is_some_and(|n| n <= copied_until) {
            continue; // copied before the restart
        }
        if let Err(e) = file.append(data).await {
            break Err(e);
        }
        *len = file.len;
        if let Some(n) = nanos {
            *pos = (*pos).max(n);
        }
        unsaved = true;
        if saved_at.elapsed() >= CURSOR_SAVE_EVERY {
            save_cursor(&cursor_path, &cursor).await?;
            saved_at = Instant::now();
            unsaved = false;
        }
    };
    if unsaved {
        save_cursor(&cursor_path, &cursor).await?;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> DockerTask {
        DockerTask { image: "img:1".into(), cpus: 0.5, mem_mb: 64.0, ..Default::default() }
    }

    fn body(t: &DockerTask) -> ContainerCreateBody {
        let opts = check_task(t).unwrap();
        container_body("agent-1", "app.instance-1._app.1", "/shop/web", t, &opts).unwrap()
    }

    #[test]
    fn names_come_from_safe_task_ids() {
        assert_eq!(container_name("shop_web.instance-0b1e._app.1").unwrap(), "dromos-shop_web.instance-0b1e._app.1");
        for bad in ["", ".x", "-x", "a/b", "a b", "a:b", "é"] {
            assert!(container_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resources_labels_and_defaults() {
        let b = body(&task());
        let h = b.host_config.unwrap();
        assert_eq!(h.nano_cpus, Some(500_000_000));
        assert_eq!(h.memory, Some(64 << 20));
        assert_eq!(h.memory_swap, Some(64 << 20));
        assert_eq!(h.network_mode.as_deref(), Some("host"));
        assert_eq!(h.privileged, Some(false));
        assert!(h.port_bindings.is_none());
        let labels = b.labels.unwrap();
        assert_eq!(labels[LABEL_AGENT_ID], "agent-1");
        assert_eq!(labels[LABEL_TASK_ID], "app.instance-1._app.1");
        assert_eq!(labels[LABEL_APP_ID], "/shop/web");
        assert_eq!(b.entrypoint, None);
        assert_eq!(b.cmd, None);
        let tiny = body(&DockerTask { cpus: 0.001, ..task() });
        assert_eq!(tiny.host_config.unwrap().nano_cpus, Some(10_000_000));
    }

    #[test]
    fn cmd_runs_in_a_shell_and_args_follow_the_entrypoint() {
        let b = body(&DockerTask { cmd: Some("echo hi && sleep 1".into()), ..task() });
        assert_eq!(b.entrypoint, Some(vec!["/bin/sh".to_string(), "-c".to_string()]));
        assert_eq!(b.cmd, Some(vec!["echo hi && sleep 1".to_string()]));
        let b = body(&DockerTask { args: vec!["--port".into(), "80".into()], ..task() });
        assert_eq!(b.entrypoint, None);
        assert_eq!(b.cmd, Some(vec!["--port".to_string(), "80".to_string()]));
        let with_ep = DockerTask {
            args: vec!["x".into()],
            parameters: vec![DockerParameter { key: "entrypoint".into(), value: "/bin/app".into() }],
            ..task()
        };
        assert_eq!(body(&with_ep).entrypoint, Some(vec!["/bin/app".to_string()]));
        let both = DockerTask { cmd: Some("a".into()), args: vec!["b".into()], ..task() };
        assert!(check_task(&both).is_err());
    }

    #[test]
    fn ports_in_bridge_mode() {
        let t = DockerTask {
            network: DockerNetwork::Bridge,
            port_mappings: vec![
                DockerPortMapping { host_port: 31001, container_port: 8080, protocol: "tcp".into() },
                DockerPortMapping { host_port: 31002, container_port: 53, protocol: "udp,tcp".into() },
                DockerPortMapping { host_port: 0, container_port: 9000, protocol: "tcp".into() },
            ],
            ..task()
        };
        let b = body(&t);
        let mut exposed = b.exposed_ports.unwrap();
        exposed.sort();
        assert_eq!(exposed, ["53/tcp", "53/udp", "8080/tcp", "9000/tcp"]);
        let h = b.host_config.unwrap();
        assert_eq!(h.network_mode.as_deref(), Some("bridge"));
        let pb = h.port_bindings.unwrap();
        let port = |k: &str| pb[k].as_ref().unwrap()[0].host_port.clone().unwrap();
        assert_eq!(port("8080/tcp"), "31001");
        assert_eq!(port("53/udp"), "31002");
        assert_eq!(port("53/tcp"), "31002");
        assert!(!pb.contains_key("9000/tcp"));
        let bad = DockerTask {
            port_mappings: vec![DockerPortMapping { host_port: 1, container_port: 2, protocol: "sctp".into() }],
            ..t.clone()
        };
        assert!(check_task(&bad).is_err());
        let unresolved = DockerTask {
            port_mappings: vec![DockerPortMapping { host_port: 1, container_port: 0, protocol: "tcp".into() }],
            ..t
        };
        assert!(check_task(&unresolved).is_err());
    }

    #[test]
    fn binds_and_their_checks() {
        let t = DockerTask {
            volumes: vec![
                DockerVolume { container_path: "/data".into(), host_path: "/srv/data".into(), read_only: true },
                DockerVolume { container_path: "/w".into(), host_path: "/srv/w".into(), read_only: false },
            ],
            ..task()
        };
        let binds = body(&t).host_config.unwrap().binds.unwrap();
        assert_eq!(binds, ["/srv/data:/data:ro", "/srv/w:/w:rw"]);
        let sock = DockerTask {
            volumes: vec![DockerVolume {
                container_path: "/s".into(),
                host_path: "/var/run/docker.sock".into(),
                read_only: true,
            }],
            ..task()
        };
        assert!(matches!(check_task(&sock), Err(DockerError::InvalidTask(_))));
    }

    #[test]
    fn parameters_map_onto_the_container() {
        let params = [
            ("label", "team=shop"),
            ("env", "MODE=param"),
            ("env", "ONLY_PARAM=1"),
            ("workdir", "/srv"),
            ("hostname", "web"),
            ("user", "1000:1000"),
            ("memory-swap", "1g"),
            ("shm-size", "64m"),
            ("ulimit", "nofile=1024:2048"),
            ("log-opt", "max-size=10m"),
            ("read-only", "true"),
            ("init", "true"),
            ("stop-signal", "SIGQUIT"),
            ("add-host", "db:10.0.0.5"),
            ("dns", "10.0.0.2"),
            ("tmpfs", "/run:size=16m"),
            ("pids-limit", "64"),
        ];
        let mut env = BTreeMap::new();
        env.insert("MODE".to_string(), "task".to_string());
        let t = DockerTask {
            parameters: params
                .iter()
                .map(|(k, v)| DockerParameter { key: k.to_string(), value: v.to_string() })
                .collect(),
            env,
            ..task()
        };
        let b = body(&t);
        assert_eq!(b.labels.as_ref().unwrap()["team"], "shop");
        assert_eq!(b.env.clone().unwrap(), ["MODE=task", "ONLY_PARAM=1"]);
        assert_eq!(b.working_dir.as_deref(), Some("/srv"));
        assert_eq!(b.hostname.as_deref(), Some("web"));
        assert_eq!(b.user.as_deref(), Some("1000:1000"));
        assert_eq!(b.stop_signal.as_deref(), Some("SIGQUIT"));
        let h = b.host_config.unwrap();
        assert_eq!(h.memory_swap, Some(1 << 30), "an explicit memory-swap wins");
        assert_eq!(h.shm_size, Some(64 << 20));
        let u = &h.ulimits.unwrap()[0];
        assert_eq!((u.name.as_deref(), u.soft, u.hard), (Some("nofile"), Some(1024), Some(2048)));
        let lc = h.log_config.unwrap();
        assert_eq!(lc.typ.as_deref(), Some("json-file"));
        assert_eq!(lc.config.unwrap()["max-size"], "10m");
        assert_eq!(h.readonly_rootfs, Some(true));
        assert_eq!(h.init, Some(true));
        assert_eq!(h.extra_hosts.unwrap(), ["db:10.0.0.5"]);
        assert_eq!(h.dns.unwrap(), ["10.0.0.2"]);
        assert_eq!(h.tmpfs.unwrap()["/run"], "size=16m");
        assert_eq!(h.pids_limit, Some(64));

        let denied =
            DockerTask { parameters: vec![DockerParameter { key: "cap-add".into(), value: "ALL".into() }], ..task() };
        let err = check_task(&denied).unwrap_err().to_string();
        assert!(err.contains("parameters[0]") && err.contains("not allowed"), "{err}");
    }

    #[test]
    fn task_wire_form_is_camel_case() {
        let t = DockerTask {
            network: DockerNetwork::Bridge,
            port_mappings: vec![DockerPortMapping { host_port: 1, container_port: 2, protocol: "tcp".into() }],
            ..task()
        };
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["forcePullImage"], false);
        assert_eq!(v["memMb"], 64.0);
        assert_eq!(v["network"], "bridge");
        assert_eq!(v["portMappings"][0]["hostPort"], 1);
        let back: DockerTask = serde_json::from_value(v).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn log_timestamps_and_resume_point() {
        let (n, rest) = split_timestamp(b"2024-05-01T10:00:00.123456789Z hello\n");
        assert_eq!(n, Some(1_714_557_600_123_456_789));
        assert_eq!(rest, b"hello\n");
        assert_eq!(split_timestamp(b"no timestamp here"), (None, &b"no timestamp here"[..]));
        assert_eq!(LogCursor::default().since_secs(), 0);
        let c = LogCursor { stdout_nanos: 1_714_557_600_123_456_789, ..Default::default() };
        assert_eq!(c.since_secs(), 1_714_557_599);
        let c = LogCursor { stderr_nanos: 1_714_557_500_000_000_000, ..c };
        assert_eq!(c.since_secs(), 1_714_557_499);
    }
    /// A stand-in daemon on a unix socket: answers the version handshake and ping, and
    /// hangs up in the middle of the answer to a wait, as a restarting dockerd does.
    async fn daemon_that_dies_mid_wait(listener: tokio::net::UnixListener) {
        use tokio::io::AsyncReadExt;
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end + 4);
                        let json = |body: &str| {
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            )
                        };
                        let answer = if head.contains("/version") {
                            json(r#"{"ApiVersion":"1.41","Version":"20.10.0"}"#)
                        } else if head.contains("/_ping") {
                            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK".to_string()
                        } else if head.contains("/wait") {
                            let headers = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                                           Transfer-Encoding: chunked\r\n\r\n";
                            let _ = conn.write_all(headers.as_bytes()).await;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            return; // the daemon goes away
                        } else {
                            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string()
                        };
                        if conn.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    }

    #[tokio::test]
    async fn wait_fails_instead_of_hanging_when_the_daemon_goes_away() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let server = tokio::spawn(daemon_that_dies_mid_wait(listener));
        let exec = DockerExecutor::connect_to(&socket).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_secs(10), exec.wait("abc")).await;
        let err = waited.expect("wait must not hang").unwrap_err();
        assert!(matches!(err, DockerError::Api { op: "wait", .. } | DockerError::WaitInterrupted(_)), "{err}");
        server.abort();
    }

    #[tokio::test]
    async fn connect_needs_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let err = DockerExecutor::connect_to(&dir.path().join("none.sock")).await.unwrap_err();
        assert!(matches!(err, DockerError::Connect(_)), "{err}");
    }
}
