//! Test harness: real `dromos` processes on port 0 in temp dirs, a real PostgreSQL, and
//! a small HTTP client.

pub mod agent;
#[allow(dead_code)] // not every test uses every WebDriver command
pub mod browser;
pub mod docker;
pub mod dromos;
pub mod etcd;
pub mod http;
pub mod postgres;
pub mod sse;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// Each dromos or agent gets its own block of 100 host ports, so parallel tests never
/// hand out the same port. Below the kernel's ephemeral range (32768+), so no outgoing
/// socket holds them.
pub fn port_block() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    21000 + (NEXT.fetch_add(1, Ordering::SeqCst) % 110) * 100
}

/// Starts `dromos <args>` (logging warnings to the test's stderr) and returns the
/// process with the first line it printed on stdout (its address, or its agent id).
pub fn spawn_dromos(args: &[String], env: &[(String, String)]) -> (Child, String) {
    let mut child = Command::new(dromos::exe())
        .args(args)
        .env("DROMOS_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start dromos");
    let out = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("dromos {args:?} did not start"));
    (child, line.trim().to_string())
}

/// Sandboxes under an agent dir whose supervisor is alive: (task id, supervisor pid,
/// task pid).
pub fn live_sandboxes(agent_dir: &Path) -> Vec<(String, i32, i32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(agent_dir.join("sandboxes")).into_iter().flatten().flatten() {
        let Ok(s) = std::fs::read(e.path().join("supervisor.json")) else { continue };
        let Ok(v) = serde_json::from_slice::<Value>(&s) else { continue };
        let (pid, task) = (v["pid"].as_i64().unwrap_or(0) as i32, v["taskPid"].as_i64().unwrap_or(0) as i32);
        if alive(pid) {
            out.push((e.file_name().to_string_lossy().to_string(), pid, task));
        }
    }
    out.sort();
    out
}

/// Kills the tasks (and supervisors) of an agent dir: tasks outlive dromos by design.
/// Supervisors that had not recorded themselves yet (dromos was stopped mid-launch) are
/// found by their command line and told to stop their task.
pub fn kill_tasks(agent_dir: &Path) {
    for (_, sup, task) in live_sandboxes(agent_dir) {
        // SAFETY: plain signals to processes this test started.
        unsafe {
            libc::kill(-task, libc::SIGKILL);
            libc::kill(sup, libc::SIGKILL);
        }
    }
    let sandboxes = agent_dir.join("sandboxes");
    for pid in std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
    {
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let args: Vec<String> =
            raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into()).collect();
        if ::dromos::agent::leftovers::parse_supervisor(&args, &sandboxes).is_some() {
            // SAFETY: as above; SIGTERM makes the supervisor stop its task's group.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a process with this pid exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rfind(')').map(|i| !s[i + 2..].starts_with('Z')).unwrap_or(false),
        Err(_) => false,
    }
}

/// The app of the rolling-upgrade tests: 4 HTTP servers with a health check, upgraded
/// one extra task at a time within (0.75, 0.25); `tag` tells versions apart.
pub fn rolling_app(tag: &str) -> Value {
    serde_json::json!({
        "id": "/rolling", "instances": 4, "cpus": 0.05, "mem": 32, "env": {"TAG": tag},
        "cmd": "touch ok; exec python3 -m http.server $PORT0 --bind $HOST",
        "upgradeStrategy": {"minimumHealthCapacity": 0.75, "maximumOverCapacity": 0.25},
        "healthChecks": [{"protocol": "HTTP", "path": "/ok", "gracePeriodSeconds": 0, "intervalSeconds": 1,
                          "timeoutSeconds": 1, "maxConsecutiveFailures": 0}]
    })
}
