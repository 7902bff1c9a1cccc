//! Test harness: real `dromos` processes on port 0 in temp dirs, a real PostgreSQL, and
//! a small HTTP client.

pub mod docker;
pub mod dromos;
pub mod http;
pub mod postgres;

use std::time::{Duration, Instant};

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
