//! Health checks, run by the agent that runs the task (Marathon ran HTTP and TCP checks
//! from its leader, which did not scale past a few thousand tasks; Mesos ran its checks
//! on the agent, as here).
//!
//! Each check of a running task is one tokio task: it waits `delaySeconds`, then probes
//! every `intervalSeconds` with a `timeoutSeconds` deadline, and applies each result to
//! the check's state ([`crate::domain::health`]). It reports to the master only when the
//! state says so (alive changed, or a failure counted), plus the current state of every
//! check whenever the agent (re)registers. The master decides about kills.
//!
//! A task's readiness check runs the same way until its first ready answer, reporting
//! each answer that differs from the one before.
//!
//! Probes reach only the task itself: its host and one of its own ports (the master
//! resolves `port`/`portIndex` against the task's ports), or a command in its sandbox.
//! At most [`MAX_CONCURRENT`] probes run at once; a probe that hangs fails at its
//! timeout and its connection is dropped.

use super::protocol::{CheckKind, HealthCheckTask, ReadinessCheckTask};
use crate::domain::health::{Effect, Health, Outcome, Policy, Readiness, ReadinessResponse};
use crate::domain::{TaskId, Timestamp};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

/// Probes running at once on one agent.
pub const MAX_CONCURRENT: usize = 1024;

/// What a task's checks found out.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// The state of health check `index`.
    Health(u16, Health),
    Ready(Readiness),
}

/// Where the checks' findings go.
pub type Report = Arc<dyn Fn(&TaskId, Finding) + Send + Sync>;

/// What a task's checks need to know about it.
#[derive(Debug, Clone)]
pub struct Target {
    pub task_id: TaskId,
    pub host: String,
    pub started: Timestamp,
    pub sandbox: PathBuf,
    pub env: BTreeMap<String, String>,
}

/// The running checks of one task; dropping it stops them.
pub struct Checks {
    handles: Vec<AbortHandle>,
    /// The latest state of each check, re-sent when the agent registers.
    latest: Arc<std::sync::Mutex<BTreeMap<u16, Health>>>,
    ready: Arc<std::sync::Mutex<Option<Readiness>>>,
}

impl Drop for Checks {
    fn drop(&mut self) {
        for h in &self.handles {
            h.abort();
        }
    }
}

impl Checks {
    /// Starts every check of `target` (on the current tokio runtime).
    pub fn start(
        target: Target,
        checks: &[HealthCheckTask],
        readiness: Option<&ReadinessCheckTask>,
        limit: Arc<Semaphore>,
        report: Report,
    ) -> Checks {
        let latest: Arc<std::sync::Mutex<BTreeMap<u16, Health>>> = Arc::default();
        let ready: Arc<std::sync::Mutex<Option<Readiness>>> = Arc::default();
        let mut handles: Vec<AbortHandle> = checks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let run = run_check(target.clone(), i as u16, c.clone(), limit.clone(), report.clone(), latest.clone());
                tokio::spawn(run).abort_handle()
            })
            .collect();
        if let Some(rc) = readiness {
            let run = run_readiness(target, rc.clone(), limit, report, ready.clone());
            handles.push(tokio::spawn(run).abort_handle());
        }
        Checks { handles, latest, ready }
    }

    /// The latest finding of each check that has one.
    pub fn latest(&self) -> Vec<Finding> {
        let mut out: Vec<Finding> = self
            .latest
            .lock()
            .map(|m| m.iter().map(|(i, h)| Finding::Health(*i, h.clone())).collect())
            .unwrap_or_default();
        out.extend(self.ready.lock().ok().and_then(|r| r.clone()).map(Finding::Ready));
        out
    }
}

fn now() -> Timestamp {
    Timestamp::from_datetime(chrono::Utc::now())
}

async fn run_check(
    target: Target,
    index: u16,
    check: HealthCheckTask,
    limit: Arc<Semaphore>,
    report: Report,
    latest: Arc<std::sync::Mutex<BTreeMap<u16, Health>>>,
) {
    // The grace period counts from the task's start, or from now if checking restarts.
    let since = target.started.max(now());
    let policy = Policy { grace_ms: check.grace_ms as i64, max_consecutive_failures: check.max_consecutive_failures };
    // Checks of tasks started together would probe in bursts, every interval: spread
    // them by starting each at its own offset within the first interval.
    let interval = Duration::from_millis(check.interval_ms.max(100));
    let offset = spread(&target.task_id, index, interval);
    tokio::time::sleep(Duration::from_millis(check.delay_ms) + offset).await;
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut health = Health::default();
    loop {
        every.tick().await;
        let outcome = {
            // The semaphore is never closed, so acquiring only waits.
            let _permit = limit.acquire().await;
            let timeout = Duration::from_millis(check.timeout_ms.max(1));
            match tokio::time::timeout(timeout, probe(&target, &check)).await {
                Ok(o) => o,
                Err(_) => Outcome::Unhealthy(format!("no answer within {} ms", timeout.as_millis())),
            }
        };
        let effect: Effect = health.observe(outcome, now(), since, policy);
        if effect.worth_reporting() {
            if let Ok(mut m) = latest.lock() {
                m.insert(index, health.clone());
            }
            report(&target.task_id, Finding::Health(index, health.clone()));
        }
    }
}

/// Probes readiness every interval until the first ready answer, reporting each answer
/// that differs from the one before.
async fn run_readiness(
    target: Target,
    check: ReadinessCheckTask,
    limit: Arc<Semaphore>,
    report: Report,
    latest: Arc<std::sync::Mutex<Option<Readiness>>>,
) {
    let interval = Duration::from_millis(check.interval_ms.max(100));
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Readiness> = None;
    loop {
        every.tick().await;
        let answer = {
            let _permit = limit.acquire().await;
            let timeout = Duration::from_millis(check.timeout_ms.max(1));
            let asked = http_status(&target.host, check.port, &check.path, check.https);
            match tokio::time::timeout(timeout, asked).await {
                Ok(a) => a,
                Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
            }
        };
        let now = match answer {
            Ok(status) => Readiness {
                name: check.name.clone(),
                ready: check.ready_statuses.contains(&status),
                last_response: Some(ReadinessResponse { status }),
                cause: None,
            },
            Err(cause) => Readiness { name: check.name.clone(), ready: false, last_response: None, cause: Some(cause) },
        };
        if last.as_ref() != Some(&now) {
            if let Ok(mut l) = latest.lock() {
                *l = Some(now.clone());
            }
            report(&target.task_id, Finding::Ready(now.clone()));
        }
        if now.ready {
            return;
        }
        last = Some(now);
    }
}

/// A stable offset within `interval` for check `index` of `task`.
fn spread(task: &TaskId, index: u16, interval: Duration) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (task.as_str(), index).hash(&mut h);
    let ms = interval.as_millis().max(1) as u64;
    Duration::from_millis(h.finish() % ms)
}

/// Runs one check once.
pub async fn probe(target: &Target, check: &HealthCheckTask) -> Outcome {
    if let Some(e) = &check.error {
        return Outcome::Unhealthy(e.clone());
    }
    match &check.kind {
        CheckKind::Tcp => match check.port {
            Some(p) => match TcpStream::connect((target.host.as_str(), p)).await {
                Ok(_) => Outcome::Healthy,
                Err(e) => Outcome::Unhealthy(format!("TCP connection to {}:{p} failed: {e}", target.host)),
            },
            None => Outcome::Unhealthy("the check has no port".into()),
        },
        CheckKind::Http { path } => match check.port {
            Some(p) => http_probe(&target.host, p, path, false, check.ignore_http1xx).await,
            None => Outcome::Unhealthy("the check has no port".into()),
        },
        CheckKind::Https { path } => match check.port {
            Some(p) => http_probe(&target.host, p, path, true, check.ignore_http1xx).await,
            None => Outcome::Unhealthy("the check has no port".into()),
        },
        CheckKind::Command { command } => command_probe(target, command).await,
    }
}

/// HTTP GET `path` (over TLS with `https`): 200-399 passes; 1xx is ignored when asked to.
async fn http_probe(host: &str, port: u16, path: &str, https: bool, ignore_1xx: bool) -> Outcome {
    match http_status(host, port, path, https).await {
        Ok(s) if (200..400).contains(&s) => Outcome::Healthy,
        Ok(s) if (100..200).contains(&s) && ignore_1xx => Outcome::Ignored,
        Ok(s) => Outcome::Unhealthy(format!("HTTP status {s}")),
        Err(e) => Outcome::Unhealthy(e),
    }
}

/// The status of an HTTP GET of `path`, over TLS with `https`.
async fn http_status(host: &str, port: u16, path: &str, https: bool) -> Result<u16, String> {
    let scheme = if https { "HTTPS" } else { "HTTP" };
    let conn = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("{scheme} connection to {host}:{port} failed: {e}"))?;
    if !https {
        return status_of(conn, host, port, path).await;
    }
    let name = super::tls::server_name(host)?;
    let conn = super::tls::connector()?
        .connect(name, conn)
        .await
        .map_err(|e| format!("TLS handshake with {host}:{port} failed: {e}"))?;
    status_of(conn, host, port, path).await
}

/// Sends the GET on an open connection and reads only the status line of the answer.
async fn status_of<S>(mut conn: S, host: &str, port: u16, path: &str) -> Result<u16, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: dromos-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(req.as_bytes()).await.map_err(|e| format!("HTTP request to {host}:{port} failed: {e}"))?;
    // Only the status line matters: read until its end (bounded).
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 4096 {
        match conn.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("HTTP response from {host}:{port} failed: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&buf);
    line.strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| "not an HTTP response".to_string())
}

/// Kills a probe command's whole process group when dropped: after the command ended
/// (whatever it left running goes too) or when the check timed out and the probe's
/// future was dropped mid-way.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            super::process::signal_group(group, libc::SIGKILL);
        }
    }
}

/// `/bin/sh -c command` in the task's sandbox with its environment, in a process group
/// of its own: exit 0 passes.
async fn command_probe(target: &Target, command: &str) -> Outcome {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c").arg(command).current_dir(&target.sandbox).process_group(0);
    // The environment the task itself got: the agent's without its settings, plus the task's.
    for k in super::process::agent_settings() {
        cmd.env_remove(k);
    }
    cmd.envs(&target.env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::Unhealthy(format!("cannot run the command: {e}")),
    };
    let _group = GroupGuard(child.id().and_then(|p| i32::try_from(p).ok()));
    match child.wait().await {
        Ok(s) if s.success() => Outcome::Healthy,
        Ok(s) => Outcome::Unhealthy(match s.code() {
            Some(c) => format!("command exited with status {c}"),
            None => "command was killed by a signal".into(),
        }),
        Err(e) => Outcome::Unhealthy(format!("cannot run the command: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    fn check(kind: CheckKind, port: Option<u16>, timeout_ms: u64) -> HealthCheckTask {
        HealthCheckTask {
            kind,
            port,
            grace_ms: 0,
            interval_ms: 100,
            timeout_ms,
            delay_ms: 0,
            max_consecutive_failures: 0,
            ignore_http1xx: false,
            error: None,
        }
    }

    fn target(id: &str, sandbox: &std::path::Path) -> Target {
        Target {
            task_id: format!("hc.{id}").parse().unwrap(),
            host: "127.0.0.1".into(),
            started: now(),
            sandbox: sandbox.to_path_buf(),
            env: BTreeMap::new(),
        }
    }

    /// Collects every task's latest health finding.
    fn collector() -> (Report, Arc<Mutex<HashMap<TaskId, Health>>>) {
        let seen: Arc<Mutex<HashMap<TaskId, Health>>> = Arc::default();
        let into = seen.clone();
        let report: Report = Arc::new(move |id, finding| {
            if let Finding::Health(_, h) = finding {
                into.lock().unwrap().insert(id.clone(), h);
            }
        });
        (report, seen)
    }

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..600 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }

    /// Reliability case 28: endpoints that accept and never answer. Only as many probes
    /// as the limit allows are connected at once (the others wait for a permit), each
    /// fails at its timeout with the cause in words, and stopping the checks closes
    /// every connection.
    #[tokio::test]
    async fn hanging_endpoints_fail_at_the_timeout_with_bounded_probes_and_no_leak() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (accepted, open) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (a, o) = (accepted.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let o = o.clone();
                // Read the request and never answer; count the connection closed at EOF.
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        let sandbox = tempfile::tempdir().unwrap();
        let limit = Arc::new(Semaphore::new(2));
        let (report, seen) = collector();
        let http = check(CheckKind::Http { path: "/".into() }, Some(port), 2000);
        let checks: Vec<Checks> = (0..4)
            .map(|i| {
                let t = target(&format!("hang-{i}"), sandbox.path());
                Checks::start(t, std::slice::from_ref(&http), None, limit.clone(), report.clone())
            })
            .collect();
        until("two probes connected", || accepted.load(Ordering::SeqCst) >= 2).await;
        // Well inside the 2 s timeout: the other two checks still wait for a permit.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "more probes ran at once than the limit");
        until("every check to fail once", || seen.lock().unwrap().len() == 4).await;
        for (id, h) in seen.lock().unwrap().iter() {
            assert!(!h.alive, "{id}");
            assert_eq!(h.last_failure_cause.as_deref(), Some("no answer within 2000 ms"), "{id}");
        }
        drop(checks);
        until("every connection to be closed", || open.load(Ordering::SeqCst) == 0).await;
    }

    /// A COMMAND check that hangs: at its timeout the command (and what it started) is
    /// killed, and stopping the checks kills a probe in flight.
    #[tokio::test]
    async fn a_hanging_command_probe_is_killed_at_its_timeout() {
        let sandbox = tempfile::tempdir().unwrap();
        let (report, seen) = collector();
        let limit = Arc::new(Semaphore::new(MAX_CONCURRENT));
        let hang = check(CheckKind::Command { command: "echo $$ >> pids; exec sleep 600".into() }, None, 300);
        let checks = Checks::start(target("cmd", sandbox.path()), &[hang], None, limit, report);
        until("a failed probe", || !seen.lock().unwrap().is_empty()).await;
        let cause = seen.lock().unwrap().values().next().and_then(|h| h.last_failure_cause.clone());
        assert_eq!(cause.as_deref(), Some("no answer within 300 ms"));
        let pids = || -> Vec<i32> {
            let raw = std::fs::read_to_string(sandbox.path().join("pids")).unwrap_or_default();
            raw.lines().filter_map(|l| l.trim().parse().ok()).collect()
        };
        let running = |pid: &i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.rfind(')').is_some_and(|i| !s[i + 2..].starts_with('Z')))
                .unwrap_or(false)
        };
        let first = pids()[0];
        until("the timed-out probe to be killed", || !running(&first)).await;
        drop(checks);
        until("no probe left running", || !pids().iter().any(running)).await;
    }
}
