//! Crash points for fault tests: with `DROMOS_FAILPOINT=<name>` in its environment, the
//! process kills itself with SIGKILL when it reaches the point called `name`, exactly as
//! a `kill -9` or a power cut at that instant would. The integration tests use them to
//! crash between two steps that no signal sent from outside could reliably fall between
//! (reliability cases 2 and 3). Unset, a point costs one comparison.
//!
//! Points:
//! - `master-after-launch-commit`: new tasks are stored (STAGING) but no launch was sent.
//! - `agent-after-start`: a task's process or container runs but its agent has not yet
//!   reported TASK_RUNNING.

use std::sync::OnceLock;

fn configured() -> Option<&'static str> {
    static NAME: OnceLock<Option<String>> = OnceLock::new();
    NAME.get_or_init(|| std::env::var("DROMOS_FAILPOINT").ok().filter(|n| !n.is_empty())).as_deref()
}

/// Crashes the process here if this is the configured fail point.
pub fn hit(name: &str) {
    if configured() == Some(name) {
        eprintln!("dromos: fail point '{name}' reached: crashing");
        // SAFETY: kill(2) on our own pid; SIGKILL ends the process at once.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
