//! Wiring for `dromos serve` (open the store, start the master and the embedded agent,
//! bind the API) and `dromos agent` (start the agent runtime and its link to the
//! master); both run until SIGINT/SIGTERM. Tasks keep running when dromos stops; the
//! next start adopts them.

use crate::agent::link::{self, LinkConfig};
use crate::agent::protocol::{FromAgent, ToAgent};
use crate::agent::{self, AgentConfig};
use crate::api::forward::Node;
use crate::api::{self, AppState};
use crate::config::{AgentSettings, Config};
use crate::domain::AgentId;
use crate::master::leadership::{Leadership, Role};
use crate::master::warm::WarmCopy;
use crate::master::Master;
use crate::store::Store;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Holds an exclusive lock on the data dir: two dromos on one data dir would adopt and
/// kill each other's tasks.
fn lock_data_dir(dir: &Path) -> boxed::Result<File> {
    let f = File::create(dir.join("dromos.lock"))?;
    // SAFETY: flock on an fd we own; no memory involved.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!("another dromos is already running on data dir {}", dir.display()).into());
    }
    Ok(f)
}

/// A boxed error for the top level, where every failure ends the process with a message.
pub mod boxed {
    pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;
}

/// Raises the soft limit on open files to the hard limit: every event stream
/// subscriber, agent link and API client is a descriptor, and distributions often start
/// services with a soft limit of 1,024.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit fill and read a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!("cannot raise the open file limit to {}", lim.rlim_max);
            }
        }
    }
}

pub async fn run(mut config: Config) -> boxed::Result<()> {
    raise_fd_limit();
    std::fs::create_dir_all(&config.data_dir)?;
    // Supervisors run with their sandbox as working directory: paths must be absolute.
    config.data_dir = std::fs::canonicalize(&config.data_dir)?;
    let _lock = lock_data_dir(&config.data_dir)?;
    let store = Store::open(&config.store, &config.data_dir).await?;
    tracing::info!(backend = store.backend_name(), "store open");
    // Several masters on one database only with etcd deciding who writes.
    let _masters = store.lock_masters(config.election.is_none()).await?;

    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    if config.advertise.ends_with(":0") {
        config.advertise = format!("http://{addr}");
    }
    let leadership = match config.election.clone() {
        Some(mut election) => {
            election.advertise = config.advertise.clone();
            tracing::info!(etcd = ?election.endpoints, advertise = %election.advertise, "joining the leader election");
            Leadership::etcd(election).await.map_err(|e| format!("cannot reach etcd: {e}"))?
        }
        None => Leadership::single(&config.advertise),
    };
    let node = Node::new(leadership.clone());

    // The embedded agent: with etcd it reaches the leader like any remote agent (over
    // its WebSocket, following the leader); otherwise its messages go straight to the
    // master of the current term.
    let mut local = None;
    if let Some((resources, attributes)) = config.agent.clone() {
        let agent_cfg = AgentConfig {
            dir: config.data_dir.join("agent"),
            supervisor_exe: std::env::current_exe()?,
            hostname: config.hostname.clone(),
            resources,
            attributes,
            docker: connect_docker().await,
            cgroups: if config.cgroups { detect_cgroups() } else { None },
        };
        let (out_tx, out_rx) = tokio::sync::mpsc::unbounded_channel();
        let (id, commands) = agent::start(agent_cfg, out_tx).await?;
        if leadership.is_elected() {
            let link_cfg = LinkConfig {
                masters: vec![config.advertise.clone()],
                token: config.auth_token.clone(),
                epoch_file: Some(config.data_dir.join("agent").join("leader-epoch")),
            };
            tokio::spawn(link::run(link_cfg, id, out_rx, commands));
        } else {
            local = Some(LocalAgent::start(id, commands, out_rx));
        }
    }

    // One key for the UI's sessions across terms (derived from the token, so shared by
    // every master that has it).
    let sessions = Arc::new(crate::web::session::Sessions::new(config.auth_token.as_deref()));
    let terms = Terms { node: node.clone(), store, config: config.clone(), local, sessions };
    tokio::spawn(terms.run());
    // A single master takes requests once its first term serves, so the embedded
    // agent's tasks are reconciled before the first write (bounded).
    if !leadership.is_elected() {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !node.is_serving() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    // Tests and scripts read this line to learn the port when listening on port 0.
    println!("dromos listening on http://{addr}");
    // On SIGTERM/SIGINT: end the term first (resigning, so another master takes over
    // now rather than after the lease; its event streams and agent sessions close),
    // then let requests in flight finish, for a bounded time (forwarded streams never
    // finish on their own).
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let serve = axum::serve(listener, node.router().into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|s| *s).await;
        });
    let stop = async {
        shutdown_signal().await;
        leadership.stop();
        let ended = async {
            let mut role = leadership.watch();
            let _ = role.wait_for(|r| !matches!(r, Role::Leader { .. })).await;
            while node.is_serving() {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), ended).await;
        let _ = stopping.send(true);
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    };
    tokio::select! {
        served = serve => served?,
        _ = stop => tracing::warn!("requests still open after 3 s are cut off"),
    }
    tracing::info!("stopped; running tasks keep running and are adopted on the next start");
    Ok(())
}

/// The embedded agent of a single master: its messages go to the current term's
/// master, and each new term gets its command channel and a fresh registration.
struct LocalAgent {
    id: AgentId,
    commands: tokio::sync::mpsc::UnboundedSender<ToAgent>,
    master: tokio::sync::watch::Sender<Option<Arc<Master>>>,
}

impl LocalAgent {
    fn start(
        id: AgentId,
        commands: tokio::sync::mpsc::UnboundedSender<ToAgent>,
        mut out: tokio::sync::mpsc::UnboundedReceiver<(AgentId, FromAgent)>,
    ) -> LocalAgent {
        let (master, current) = tokio::sync::watch::channel(None::<Arc<Master>>);
        tokio::spawn(async move {
            while let Some(msg) = out.recv().await {
                let inbox = current.borrow().as_ref().map(|m| m.inbox());
                // Between terms messages are dropped: the next term asks for a register.
                if let Some(inbox) = inbox {
                    let _ = inbox.send(msg);
                }
            }
        });
        LocalAgent { id, commands, master }
    }

    fn attach(&self, master: &Arc<Master>) {
        self.master.send_replace(Some(master.clone()));
        master.attach_local_agent(self.id.clone(), self.commands.clone());
        // A new term knows nothing the agent said before: register again.
        let _ = self.commands.send(ToAgent::Reconcile);
    }

    fn detach(&self) {
        self.master.send_replace(None);
    }
}

/// Starts a master for each term this process leads and stops it when the term ends.
struct Terms {
    node: Arc<Node>,
    store: Store,
    config: Config,
    local: Option<LocalAgent>,
    sessions: Arc<crate::web::session::Sessions>,
}

impl Terms {
    async fn run(self) {
        let leadership = self.node.leadership().clone();
        let mut role = leadership.watch();
        // The term being served (its number and master), and the last one that failed
        // to start (not tried again).
        let mut term: Option<(u64, Arc<Master>)> = None;
        let mut failed: Option<u64> = None;
        // A follower in an election keeps the store loaded (see `WarmCopy`).
        let mut warm: Option<WarmCopy> = None;
        loop {
            let now = role.borrow_and_update().clone();
            if leadership.is_elected() && term.is_none() && warm.is_none() {
                let node = self.node.clone();
                warm = Some(WarmCopy::start(self.store.clone(), move || {
                    let node = node.clone();
                    async move { node.leader_answers().await }
                }));
            }
            let current = match now {
                Role::Leader { term, .. } => Some(term),
                Role::Follower { .. } => None,
            };
            // A term ends when another role or another term is current, also when the
            // changes in between were not seen one by one.
            if term.as_ref().is_some_and(|(n, _)| Some(*n) != current) {
                tracing::warn!("no longer leading");
                self.end(term.take().map(|(_, m)| m));
            }
            if let (Role::Leader { epoch, term: n }, None) = (&now, &term) {
                if failed != Some(*n) {
                    match self.start(*epoch, warm.take()).await {
                        Ok(master) => term = Some((*n, master)),
                        Err(e) => {
                            tracing::error!("cannot take over as leader: {e}");
                            failed = Some(*n);
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                            leadership.abdicate();
                        }
                    }
                    // The role may have moved on while the term was starting.
                    continue;
                }
            }
            let deposed = async {
                match &term {
                    Some((_, m)) => m.deposed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = role.changed() => if changed.is_err() { return },
                _ = deposed => {
                    self.end(term.take().map(|(_, m)| m));
                    leadership.abdicate();
                }
            }
        }
    }

    /// A term begins: claim the store with the term's epoch (fencing older leaders
    /// out), load the state (or take the follower's copy if it is current), start the
    /// loops, serve the API.
    async fn start(&self, epoch: Option<i64>, warm: Option<WarmCopy>) -> boxed::Result<Arc<Master>> {
        let advertise = &self.config.advertise;
        let claimed = match epoch {
            Some(e) => self.store.claim(e, advertise).await,
            None => self.store.claim_next(advertise).await,
        };
        let store = match claimed {
            Err(crate::store::StoreError::Fenced { ours, current, holder }) => {
                return Err(format!(
                    "the store was claimed with epoch {current} ({holder}), newer than this term's {ours}: \
                     another master took over since; if this repeats, etcd's revisions started over (an etcd \
                     cluster replaced, or restored without --bump-revision past {current})"
                )
                .into())
            }
            r => r?,
        };
        tracing::info!(epoch = store.epoch(), "leading: loading the state");
        let loading = std::time::Instant::now();
        // Nobody else writes once claimed: a copy at the current revision is current.
        let copy = match warm {
            Some(w) => w.take(store.leadership().await?.revision).await,
            None => None,
        };
        let warm = copy.is_some();
        let master = match copy {
            Some((state, published)) => Master::start_from(store, self.config.master.clone(), state, published),
            None => Master::start(store, self.config.master.clone()).await?,
        };
        let tasks = master.read().await.tasks.len();
        tracing::info!(tasks, warm, took = ?loading.elapsed(), "state loaded");
        if let Some(local) = &self.local {
            local.attach(&master);
        }
        master.run();
        if let Some(local) = &self.local {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !master.has_registered(&local.id) && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        let leader = advertise.split_once("://").map_or(advertise.as_str(), |(_, rest)| rest);
        let state = AppState {
            master: master.clone(),
            sessions: self.sessions.clone(),
            token: self.config.auth_token.as_deref().map(Arc::from),
            leader: Arc::from(leader.trim_end_matches('/')),
            leadership: self.node.leadership().clone(),
            store_backend: self.store.backend_name(),
        };
        self.node.serve(Some(api::router(state)));
        Ok(master)
    }

    fn end(&self, term: Option<Arc<Master>>) {
        self.node.serve(None);
        if let Some(local) = &self.local {
            local.detach();
        }
        if let Some(master) = term {
            master.stop();
        }
    }
}

/// `dromos agent`: runs tasks for a remote master.
pub async fn run_agent(settings: AgentSettings) -> boxed::Result<()> {
    std::fs::create_dir_all(&settings.work_dir)?;
    let dir = std::fs::canonicalize(&settings.work_dir)?;
    let epoch_file = dir.join("leader-epoch");
    let _lock = lock_data_dir(&dir)?;
    let cfg = AgentConfig {
        dir,
        supervisor_exe: std::env::current_exe()?,
        hostname: settings.hostname.clone(),
        resources: settings.resources.clone(),
        attributes: settings.attributes.clone(),
        docker: connect_docker().await,
        cgroups: if settings.cgroups { detect_cgroups() } else { None },
    };
    let (out_tx, out_rx) = tokio::sync::mpsc::unbounded_channel();
    let (id, commands) = agent::start(cfg, out_tx).await?;
    // Tests and scripts read this line to learn the agent's id.
    println!("dromos agent {id} running");
    let link_cfg =
        LinkConfig { masters: settings.masters.clone(), token: settings.token.clone(), epoch_file: Some(epoch_file) };
    tokio::select! {
        _ = link::run(link_cfg, id, out_rx, commands) => {}
        _ = shutdown_signal() => {}
    }
    tracing::info!("agent stopped; running tasks keep running and are adopted on the next start");
    Ok(())
}

/// The local Docker engine, if one answers: then this agent also runs Docker apps.
async fn connect_docker() -> Option<crate::agent::docker::DockerExecutor> {
    match crate::agent::docker::DockerExecutor::connect().await {
        Ok(d) => {
            tracing::info!("Docker engine found: Docker apps can run here");
            Some(d)
        }
        Err(e) => {
            tracing::info!("no Docker engine ({e}): this agent runs process tasks only");
            None
        }
    }
}

/// A cgroup hierarchy for the limits of process tasks, if this machine lets us use one.
fn detect_cgroups() -> Option<crate::agent::cgroups::Cgroups> {
    match crate::agent::cgroups::Cgroups::detect() {
        Ok(cg) => {
            tracing::info!("process tasks get cpu and memory limits through {}", cg.describe());
            Some(cg)
        }
        Err(e) => {
            tracing::warn!("process tasks run WITHOUT cpu and memory limits: {e}");
            None
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
