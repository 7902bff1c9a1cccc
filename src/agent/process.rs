//! Small, safe wrappers around the Linux process calls the agent and the supervisor
//! need: process start times (to tell a live process from a reused pid), pidfds (to wait
//! for and signal processes that are not our children), and atomic file writes.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// The start time of `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`),
/// or `None` if there is no such process. Together with the pid it names one process.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: skip past it.
    let rest = &stat[stat.rfind(')')? + 2..];
    // `rest` starts at field 3 (state); start time is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// True if `pid` is alive, is not a zombie, and started at `start`.
pub fn is_same_process(pid: i32, start: u64) -> bool {
    let zombie = fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(true);
    !zombie && start_time(pid) == Some(start)
}

/// A pidfd: a handle on one process that stays valid even if its pid is reused.
pub struct PidFd(OwnedFd);

impl PidFd {
    pub fn open(pid: i32) -> io::Result<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the syscall returned a fresh fd that nothing else owns.
        Ok(PidFd(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
    }

    pub fn signal(&self, sig: i32) -> io::Result<()> {
        // SAFETY: pidfd_send_signal with a valid pidfd, a signal number, no siginfo, no flags.
        let r = unsafe {
            libc::syscall(libc::SYS_pidfd_send_signal, self.0.as_raw_fd(), sig, std::ptr::null::<libc::siginfo_t>(), 0)
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            // ESRCH: the process has already exited, which is what a kill wants anyway.
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Ok(());
            }
            return Err(e);
        }
        Ok(())
    }
}

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// The names of the agent's own settings in its environment (`DROMOS_*`, above all
/// DROMOS_AUTH_TOKEN): not the business of tasks or of commands run for them.
pub fn agent_settings() -> impl Iterator<Item = std::ffi::OsString> {
    std::env::vars_os().map(|(k, _)| k).filter(|k| k.to_string_lossy().starts_with("DROMOS_"))
}

/// Reaps `pid` if it is an exited child of ours; harmless for other processes.
pub fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on a specific pid only reads into `status`.
    unsafe {
        libc::waitpid(pid, &mut status, libc::WNOHANG);
    }
}

/// Sends `sig` to the process group `pgid` (ignoring a group that is already gone).
pub fn signal_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill with a negative pid signals that process group; no memory involved.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Writes `data` to `path` atomically, not durably: temp file, rename. A process crash
/// leaves the old or the new content, never a mix; a power cut may lose the write.
///
/// Enough for a task's checkpoints (launch, supervisor, exit records): they serve to
/// adopt tasks after the *agent* crashed, while the machine and so the tasks live on. A
/// power cut ends the tasks too, and then the master's reconciliation finds them lost,
/// whatever the sandbox says. Skipping the fsyncs takes four disk flushes off every
/// task start.
pub fn replace_file(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, data)?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_its_own_start_time() {
        let me = std::process::id() as i32;
        let st = start_time(me).expect("own process has a start time");
        assert!(is_same_process(me, st));
        assert!(!is_same_process(me, st + 1));
        assert_eq!(start_time(i32::MAX), None);
    }
}
