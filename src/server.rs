//! Wiring for `dromos serve` (open the store, start the master and the embedded agent,
//! bind the API) and `dromos agent` (start the agent runtime and its link to the
//! master); both run until SIGINT/SIGTERM. Tasks keep running when dromos stops; the
//! next start adopts them.

use crate::agent::link::{self, LinkConfig};
use crate::agent::{self, AgentConfig};
use crate::api::{self, AppState};
use crate::config::{AgentSettings, Config};
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
    let backend = store.backend_name();
    let master = Master::start(store, config.master.clone()).await?;

    let agent_dir = config.data_dir.join("agent");
    let mut local_agent = None;
    if let Some((resources, attributes)) = config.agent.clone() {
        let agent_cfg = AgentConfig {
            dir: agent_dir.clone(),
            supervisor_exe: std::env::current_exe()?,
            hostname: config.hostname.clone(),
            resources,
            attributes,
            docker: connect_docker().await,
            cgroups: if config.cgroups { detect_cgroups() } else { None },
        };
        let (agent_id, agent_tx) = agent::start(agent_cfg, master.inbox()).await?;
        master.attach_local_agent(agent_id.clone(), agent_tx);
        local_agent = Some(agent_id);
    }
    master.run();
    // The embedded agent registers at once; take requests after that, so its tasks are
    // reconciled before the first write (bounded, in case the store is slow).
    if let Some(id) = &local_agent {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !master.has_registered(id) && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let state = AppState {
        master,
        sessions: Arc::new(crate::web::session::Sessions::new(config.auth_token.as_deref())),
        token: config.auth_token.as_deref().map(Arc::from),
        leader: Arc::from(addr.to_string()),
        store_backend: backend,
    };
    // Tests and scripts read this line to learn the port when listening on port 0.
    println!("dromos listening on http://{addr}");
    axum::serve(listener, api::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("stopped; running tasks keep running and are adopted on the next start");
    Ok(())
}

/// `dromos agent`: runs tasks for a remote master.
pub async fn run_agent(settings: AgentSettings) -> boxed::Result<()> {
    std::fs::create_dir_all(&settings.work_dir)?;
    let dir = std::fs::canonicalize(&settings.work_dir)?;
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
    let link_cfg = LinkConfig { masters: settings.masters.clone(), token: settings.token.clone() };
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
