//! Driving a real HAProxy 2.6: the config file, validation, the master-worker process
//! and its two sockets (reference haproxy.md sections 5.3-5.5).
//!
//! - The **master** (`haproxy -W -S master.sock -f cfg`) is started by the sidecar, or
//!   adopted when one already answers on the master socket (the sidecar restarted while
//!   HAProxy kept serving). A reload is the master CLI's `reload`: the master re-executes
//!   itself and hands the listening sockets to the new worker, so no connection is
//!   refused. It is confirmed with `show proc` (the reload counter moves, the failure
//!   counter does not) and by the runtime socket answering from the new worker.
//! - The **runtime API** (`stats socket ... level admin`) takes one command per
//!   connection: write it, half-close, read the answer to the end.
//! - **Files** are replaced atomically (write a sibling, fsync, rename): the config,
//!   its last-known-good copy (`<cfg>.lkg`) and the server state file dumped before each
//!   reload (`load-server-state-from-file global` restores health and maintenance).

use crate::files;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Time one socket command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a start or a reload may take until the new worker answers.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Sends one command over a CLI socket and returns the answer.
pub async fn command(socket: &Path, cmd: &str) -> Result<String, String> {
    let exchange = async {
        let mut s = UnixStream::connect(socket).await.map_err(|e| format!("{}: {e}", socket.display()))?;
        s.write_all(format!("{cmd}\n").as_bytes()).await.map_err(|e| e.to_string())?;
        s.shutdown().await.map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    };
    tokio::time::timeout(COMMAND_TIMEOUT, exchange).await.map_err(|_| format!("'{cmd}': no answer in time"))?
}

/// The master's `show proc`, the parts that matter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Proc {
    pub master: u32,
    pub reloads: u64,
    pub failed: u64,
    /// Current workers as (pid, reloads survived): the newest has 0.
    pub workers: Vec<(u32, u64)>,
}

impl Proc {
    pub fn parse(text: &str) -> Option<Proc> {
        let mut p = Proc::default();
        let mut section = "";
        let mut seen_master = false;
        for line in text.lines() {
            if let Some(s) = line.strip_prefix('#') {
                section = s.trim();
                continue;
            }
            let cols: Vec<&str> = line.split_whitespace().collect();
            match cols.as_slice() {
                [pid, "master", reloads, failed, ..] if failed.starts_with('[') => {
                    p.master = pid.parse().ok()?;
                    p.reloads = reloads.parse().ok()?;
                    p.failed = cols.get(4)?.trim_end_matches(']').parse().ok()?;
                    seen_master = true;
                }
                [pid, "worker", reloads, ..] if section == "workers" => {
                    p.workers.push((pid.parse().ok()?, reloads.parse().ok()?));
                }
                _ => {}
            }
        }
        seen_master.then_some(p)
    }

    /// The worker started by the latest (re)load.
    pub fn newest(&self) -> Option<u32> {
        self.workers.iter().find(|w| w.1 == 0).map(|w| w.0)
    }
}

/// Writes `text` to `path` atomically and durably ([`crate::files::write_atomic`], off
/// the async threads), creating the directory if need be.
pub async fn write_atomic(path: &Path, text: &[u8]) -> Result<(), String> {
    make_parent(path).await?;
    let (path, text) = (path.to_path_buf(), text.to_vec());
    tokio::task::spawn_blocking(move || {
        files::write_atomic(&path, &text).map_err(|e| format!("{}: {e}", path.display()))
    })
    .await
    .map_err(|e| format!("the file write did not finish: {e}"))?
}

/// Creates the directory `path` goes in, if it is missing.
async fn make_parent(path: &Path) -> Result<(), String> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            tokio::fs::create_dir_all(dir).await.map_err(|e| format!("{}: {e}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// Where HAProxy and its files are.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The `haproxy` executable.
    pub bin: PathBuf,
    pub config: PathBuf,
    /// The master CLI socket (`-S`).
    pub master_socket: PathBuf,
    /// The runtime API socket (`stats socket` in the config).
    pub socket: PathBuf,
    pub state_file: PathBuf,
}

/// Runs `haproxy -c` on a config file; the error is what HAProxy said.
pub async fn check(bin: &Path, config: &Path) -> Result<(), String> {
    let out = Command::new(bin)
        .arg("-c")
        .arg("-f")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    // `[ALERT]    (pid) : config : parsing [file:52] : unknown option ...`: keep what follows the pid.
    let alerts: Vec<&str> = said
        .lines()
        .filter(|l| l.starts_with("[ALERT]") && !l.contains("rror(s) found") && !l.contains("atal errors found"))
        .map(|l| l.split_once(") : ").map_or(l, |(_, rest)| rest))
        .take(3)
        .collect();
    Err(match (alerts.is_empty(), said.trim()) {
        (false, _) => alerts.join("; "),
        (true, "") => format!("haproxy -c failed ({})", out.status),
        (true, other) => other.to_string(),
    })
}

/// A running HAProxy master and its worker.
pub struct Haproxy {
    pub paths: Paths,
    /// The master, when this process started it.
    child: Option<Child>,
}

impl Haproxy {
    /// Adopts the master answering on the master socket, or starts one on the config
    /// file (which must be in place and valid); returns once a worker answers.
    pub async fn start_or_adopt(paths: Paths) -> Result<Haproxy, String> {
        ensure_state_file(&paths.state_file).await?;
        // HAProxy creates its sockets, not their directories (/run/haproxy, say).
        make_parent(&paths.master_socket).await?;
        make_parent(&paths.socket).await?;
        let mut h = Haproxy { paths, child: None };
        if let Ok(p) = h.proc().await {
            tracing::info!(master = p.master, "adopted the running HAProxy");
            h.wait_ready(&p, Instant::now() + READY_TIMEOUT).await?;
            return Ok(h);
        }
        let _ = tokio::fs::remove_file(&h.paths.master_socket).await;
        let child = Command::new(&h.paths.bin)
            .arg("-W")
            .arg("-S")
            .arg(&h.paths.master_socket)
            .arg("-f")
            .arg(&h.paths.config)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", h.paths.bin.display()))?;
        tracing::info!(pid = child.id(), config = %h.paths.config.display(), "started HAProxy");
        h.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        let p = loop {
            if let Some(status) = h.exited() {
                return Err(format!("HAProxy exited at start ({status})"));
            }
            if let Ok(p) = h.proc().await {
                if p.newest().is_some() {
                    break p;
                }
            }
            if Instant::now() > deadline {
                return Err("HAProxy did not come up".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        h.wait_ready(&p, deadline).await?;
        Ok(h)
    }

    /// Whether this process started HAProxy (rather than adopting a running one).
    pub fn started(&self) -> bool {
        self.child.is_some()
    }

    /// The master's process list.
    /// (The master CLI now and then closes a connection without answering: a few
    /// attempts are made.)
    pub async fn proc(&self) -> Result<Proc, String> {
        let mut last = String::new();
        for _ in 0..5 {
            let text = command(&self.paths.master_socket, "show proc").await?;
            if let Some(p) = Proc::parse(&text) {
                return Ok(p);
            }
            last = text;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!("unexpected 'show proc' answer: {}", last.trim()))
    }

    /// A runtime API command.
    pub async fn runtime(&self, cmd: &str) -> Result<String, String> {
        command(&self.paths.socket, cmd).await
    }

    /// The exit status, if the master this process started has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Reloads the config file (already validated and in place): saves the server
    /// state, asks the master, and waits for the new worker. Fails when the master
    /// reports a failed load or no new worker answers in time.
    pub async fn reload(&self) -> Result<(), String> {
        self.save_state().await?;
        let before = self.proc().await?;
        // The master re-executes itself: the answer is the connection closing.
        let _ = command(&self.paths.master_socket, "reload").await;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(p) = self.proc().await {
                if p.failed > before.failed {
                    return Err("HAProxy could not load the new config (see its log)".into());
                }
                if p.reloads > before.reloads && p.newest().is_some() {
                    return self.wait_ready(&p, deadline).await;
                }
            }
            if Instant::now() > deadline {
                return Err("the reload did not finish in time".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the runtime socket answers from the newest worker (after a reload,
    /// the old worker may hold the socket for a moment).
    async fn wait_ready(&self, p: &Proc, deadline: Instant) -> Result<(), String> {
        let want = p.newest();
        loop {
            if let Ok(info) = self.runtime("show info").await {
                let pid = info.lines().find_map(|l| l.strip_prefix("Pid: ")).and_then(|x| x.trim().parse().ok());
                if want.is_none() || pid == want {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err("the HAProxy worker does not answer on its runtime socket".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Dumps `show servers state` to the state file (loaded by the next worker).
    pub async fn save_state(&self) -> Result<(), String> {
        let state = self.runtime("show servers state").await?;
        if !state.starts_with('1') {
            return Err(format!("unexpected 'show servers state' answer: {}", state.lines().next().unwrap_or("")));
        }
        write_atomic(&self.paths.state_file, state.as_bytes()).await
    }

    /// Stops HAProxy, started or adopted (the sidecar is going away, and the load
    /// balancer with it).
    pub async fn stop(&mut self) {
        match self.child.take() {
            Some(mut c) => {
                if let Some(pid) = c.id() {
                    // SAFETY: kill(2) on our own child's pid.
                    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                }
                if tokio::time::timeout(Duration::from_secs(5), c.wait()).await.is_err() {
                    let _ = c.kill().await;
                }
            }
            None => {
                if let Ok(p) = self.proc().await {
                    // SAFETY: kill(2) on the HAProxy master this sidecar adopted.
                    unsafe { libc::kill(p.master as i32, libc::SIGTERM) };
                }
            }
        }
    }
}

/// Creates an empty (version-only) server state file if there is none, so HAProxy
/// does not warn about it.
async fn ensure_state_file(path: &Path) -> Result<(), String> {
    if tokio::fs::metadata(path).await.is_ok() {
        return Ok(());
    }
    write_atomic(path, b"1\n").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_proc() {
        let text = "#<PID>          <type>          <reloads>       <uptime>        <version>      \n\
            3496            master          1 [failed: 0]   0d00h10m15s     2.6.12-1+deb12u4\n\
            # workers\n\
            4001            worker          0               0d00h10m08s     2.6.12-1+deb12u4\n\
            3500            worker          1               0d00h11m08s     2.6.12-1+deb12u4\n\
            # programs\n\n";
        let p = Proc::parse(text).unwrap();
        assert_eq!(p, Proc { master: 3496, reloads: 1, failed: 0, workers: vec![(4001, 0), (3500, 1)] });
        assert_eq!(p.newest(), Some(4001));
        assert_eq!(Proc::parse("Unknown command.\n"), None);
        let failed = "3496 master 3 [failed: 2] 0d 2.6\n# workers\n";
        assert_eq!(Proc::parse(failed).map(|p| (p.reloads, p.failed, p.newest())), Some((3, 2, None)));
    }
}
