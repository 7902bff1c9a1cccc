//! The task supervisor: `dromos supervise`, a hidden mode of the binary (what Mesos
//! called the command executor). One runs per task. It
//!
//! 1. leaves the agent's session (`setsid`), so it outlives an agent crash or restart;
//! 2. records itself in `supervisor.json` in the sandbox (pid + start time);
//! 3. starts the task in its own process group with stdout/stderr in the sandbox, inside
//!    the task's cgroup when the agent made one ([`super::cgroups`]);
//! 4. on SIGTERM (a kill), sends SIGTERM to the task's group and SIGKILL after the grace
//!    period; when the task ends, kills whatever is left of its group;
//! 5. records how the task ended in `exit.json` (OOM kills included), tries to remove
//!    the task's cgroup (the agent finishes that), then exits.
//!
//! It uses blocking calls only (sigtimedwait), so a thousand idle supervisors cost no CPU.

use super::cgroups;
use super::process::{replace_file, signal_group, start_time};
use serde::{Deserialize, Serialize};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const SUPERVISOR_FILE: &str = "supervisor.json";
pub const EXIT_FILE: &str = "exit.json";

/// Who supervises the task: written by the supervisor as soon as it has started the task.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupervisorRecord {
    pub pid: i32,
    pub start_time: u64,
    pub task_pid: i32,
}

/// How the task ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The task ended after a kill request.
    #[serde(default)]
    pub killed: bool,
    /// The task could not be started at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The kernel killed the task for going over its cgroup's memory limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom_killed: bool,
}

impl ExitRecord {
    fn failed_to_start(error: String) -> ExitRecord {
        ExitRecord { exit_code: None, signal: None, killed: false, error: Some(error), oom_killed: false }
    }
}

/// What the agent asks of a supervisor (the arguments of `dromos supervise`).
#[derive(Debug, Clone)]
pub struct Supervise {
    pub sandbox: PathBuf,
    pub grace: Duration,
    /// The task's cgroup directories, already made with their limits by the agent.
    pub cgroups: Vec<PathBuf>,
    /// The task's program and arguments.
    pub argv: Vec<String>,
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT, libc::SIGCHLD] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

fn finish(sandbox: &Path, cgroup: &[PathBuf], rec: &ExitRecord) -> ! {
    let data = serde_json::to_vec(rec).unwrap_or_default();
    let code = match replace_file(&sandbox.join(EXIT_FILE), &data) {
        Ok(()) => 0,
        Err(_) => 1,
    };
    // One try: a cgroup whose last process is still on its way out cannot go yet, and
    // the agent removes it when the end is acknowledged.
    for d in cgroup {
        let _ = std::fs::remove_dir(d);
    }
    std::process::exit(code)
}

/// Runs the supervisor; never returns.
pub fn run(spec: Supervise) -> ! {
    let Supervise { sandbox, grace, cgroups: cgroup, argv } = spec;
    // SAFETY: setsid has no memory effects; it fails harmlessly if we already lead a group.
    unsafe {
        libc::setsid();
    }
    let set = signal_set();
    // SAFETY: blocks the signals we then wait for synchronously with sigtimedwait; the
    // child's mask is reset before it execs (see the pre_exec below).
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let open = |name: &str| OpenOptions::new().create(true).append(true).open(sandbox.join(name));
    let (out, err) = match (open("stdout"), open("stderr")) {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => {
            finish(&sandbox, &cgroup, &ExitRecord::failed_to_start(format!("cannot open sandbox logs: {e}")))
        }
    };
    let Some((program, args)) = argv.split_first() else {
        finish(&sandbox, &cgroup, &ExitRecord::failed_to_start("empty command".into()));
    };
    // Prepared before the fork: the child may only make system calls.
    let procs: Vec<std::ffi::CString> = cgroup
        .iter()
        .filter_map(|d| std::ffi::CString::new(d.join("cgroup.procs").as_os_str().as_bytes()).ok())
        .collect();
    let mut command = Command::new(program);
    command.args(args).current_dir(&sandbox).stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
    // SAFETY: the closure runs in the child between fork and exec and only calls
    // open/write/close on paths prepared above, sigemptyset, pthread_sigmask and signal
    // (async-signal-safe; no allocation).
    unsafe {
        command.pre_exec(move || {
            for p in &procs {
                join_cgroup(p)?;
            }
            // The task must get the signals this supervisor waits for (a blocked mask
            // and ignored signals survive exec): else SIGTERM never reaches it and every
            // kill takes the whole grace period and ends in SIGKILL.
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT, libc::SIGCHLD, libc::SIGPIPE] {
                libc::signal(s, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    let child = command.spawn();
    let task_pid = match child {
        Ok(c) => c.id() as i32,
        Err(e) => {
            let _ = writeln!(std::io::stdout(), "error {e}");
            finish(&sandbox, &cgroup, &ExitRecord::failed_to_start(format!("failed to start '{program}': {e}")));
        }
    };
    let me = std::process::id() as i32;
    let record = SupervisorRecord { pid: me, start_time: start_time(me).unwrap_or(0), task_pid };
    let _ = replace_file(&sandbox.join(SUPERVISOR_FILE), &serde_json::to_vec(&record).unwrap_or_default());
    // Tell the agent the task runs, then let go of the pipe: the agent may be gone later.
    let _ = writeln!(std::io::stdout(), "running {task_pid}");
    let _ = std::io::stdout().flush();
    if let Ok(null) = fs::File::open("/dev/null") {
        // SAFETY: dup2 onto fd 1 replaces our stdout with /dev/null; both fds are valid.
        unsafe {
            libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1);
        }
    }

    let mut killed = false;
    let mut kill_deadline: Option<Instant> = None;
    loop {
        let wait =
            kill_deadline.map(|d| d.saturating_duration_since(Instant::now())).unwrap_or(Duration::from_secs(3600));
        let ts =
            libc::timespec { tv_sec: wait.as_secs() as libc::time_t, tv_nsec: wait.subsec_nanos() as libc::c_long };
        // SAFETY: sigtimedwait on our blocked set; no siginfo requested.
        let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
        match sig {
            libc::SIGCHLD => {
                let mut status = 0;
                // SAFETY: non-blocking wait for our one child.
                let r = unsafe { libc::waitpid(task_pid, &mut status, libc::WNOHANG) };
                if r == task_pid {
                    // Whatever the task left behind goes with it: its group, and anything
                    // that left the group but not the task's cgroup.
                    signal_group(task_pid, libc::SIGKILL);
                    cgroups::kill_all(&cgroup);
                    let (exit_code, signal) = if libc::WIFEXITED(status) {
                        (Some(libc::WEXITSTATUS(status)), None)
                    } else {
                        (None, Some(libc::WTERMSIG(status)))
                    };
                    let oom_killed = cgroups::oom_killed(&cgroup);
                    finish(&sandbox, &cgroup, &ExitRecord { exit_code, signal, killed, error: None, oom_killed });
                }
            }
            s if s > 0 => {
                if !killed {
                    killed = true;
                    signal_group(task_pid, libc::SIGTERM);
                    kill_deadline = Some(Instant::now() + grace);
                }
            }
            _ => {
                // Timeout (EAGAIN) or EINTR: escalate if the grace period is over.
                if let Some(d) = kill_deadline {
                    if Instant::now() >= d {
                        signal_group(task_pid, libc::SIGKILL);
                        kill_deadline = None;
                    }
                }
            }
        }
    }
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is `procs` (writing
/// "0" means "me"). Called between fork and exec: system calls only.
fn join_cgroup(procs: &std::ffi::CStr) -> std::io::Result<()> {
    // SAFETY: open/write/close on a NUL-terminated path and a static buffer.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = libc::write(fd, b"0".as_ptr().cast(), 1);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if n != 1 {
            return Err(err);
        }
    }
    Ok(())
}
