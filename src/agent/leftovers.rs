//! Leftovers of a wiped agent directory (reliability case 5).
//!
//! Supervisors and containers outlive the agent on purpose. If an operator wipes the
//! agent's directory, the restarted agent has lost its id, the launch checkpoints, the
//! logs and the exit records of whatever still runs: it cannot tell the master how those
//! tasks were launched or report reliably how they end.
//!
//! The policy, the same as Mesos's cleanup of orphaned executors and containers: an agent
//! that starts without an id in its directory first looks for what an earlier agent in
//! this directory left running — supervisors whose sandbox lies under the directory
//! (found in /proc by their command line) and containers whose `dromos.sandbox` label
//! does — stops them (SIGTERM, SIGKILL after the task's grace period; `docker stop`) and
//! waits until they are gone. Only then does it register, under a new id, naming the ids
//! of the agents whose tasks it stopped (`replaces`). The master marks those tasks
//! TASK_GONE (confirmed dead) and replaces them at once rather than after the ping
//! budget. Because the old copies are dead before the master hears of the new agent,
//! there are never two copies of a task, not even of an at-most-one app.

use super::cgroups;
use super::docker::DockerExecutor;
use super::process::{is_same_process, signal_group, start_time};
use crate::domain::{AgentId, TaskId};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a leftover container gets to stop (its task's grace period was in the wiped
/// launch checkpoint): Docker's own default.
const CONTAINER_GRACE: Duration = Duration::from_secs(10);

/// A supervisor whose sandbox lies under the directory being swept.
#[derive(Debug, Clone, PartialEq)]
pub struct LeftoverProcess {
    pub pid: i32,
    pub start_time: u64,
    pub task_id: TaskId,
    /// The agent that started it (absent for supervisors of older versions).
    pub agent_id: Option<AgentId>,
    pub grace: Duration,
    pub cgroups: Vec<PathBuf>,
}

/// What a sweep found and stopped.
#[derive(Debug, Default, PartialEq)]
pub struct Sweep {
    /// Agents whose tasks were stopped.
    pub agents: BTreeSet<AgentId>,
    pub processes: usize,
    pub containers: usize,
}

/// Reads a `dromos supervise` command line (its arguments, program first); returns the
/// supervisor's settings if its sandbox is a direct child of `sandboxes`.
pub fn parse_supervisor(args: &[String], sandboxes: &Path) -> Option<LeftoverProcess> {
    if args.get(1).map(String::as_str) != Some("supervise") {
        return None;
    }
    let (mut sandbox, mut agent_id, mut grace, mut cgroups) = (None, None, Duration::from_millis(3000), Vec::new());
    let mut it = args[2..].iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--" => break,
            "--sandbox" => sandbox = it.next().map(PathBuf::from),
            "--grace-ms" => grace = Duration::from_millis(it.next()?.parse().ok()?),
            "--agent-id" => agent_id = it.next().map(|a| AgentId(a.clone())),
            "--cgroup" => cgroups.push(PathBuf::from(it.next()?)),
            _ => return None,
        }
    }
    let sandbox: PathBuf = sandbox?;
    if sandbox.parent()? != sandboxes {
        return None;
    }
    let task_id: TaskId = sandbox.file_name()?.to_str()?.parse().ok()?;
    // Only the task's own cgroups (`.../dromos/<task id>`) are ever removed.
    let own = |d: &PathBuf| {
        d.file_name().is_some_and(|n| n == task_id.as_str())
            && d.parent().and_then(|p| p.file_name()).is_some_and(|n| n == "dromos")
    };
    if !cgroups.iter().all(own) {
        return None;
    }
    Some(LeftoverProcess { pid: 0, start_time: 0, task_id, agent_id, grace, cgroups })
}

/// Every live supervisor whose sandbox lies in `sandboxes`.
pub fn find_supervisors(sandboxes: &Path) -> Vec<LeftoverProcess> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> =
                raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into()).collect();
            let mut p = parse_supervisor(&args, sandboxes)?;
            if !is_our_program(pid) {
                tracing::warn!(pid, "a process poses as a dromos supervisor of this directory: ignored");
                return None;
            }
            p.pid = pid;
            p.start_time = start_time(pid)?;
            Some(p)
        })
        .collect()
}

/// Whether `pid` runs this very program (also after it was replaced on disk by an
/// upgrade: then its link ends in " (deleted)") as this very user: only then is it a
/// supervisor this agent's predecessors started, and not a look-alike.
fn is_our_program(pid: i32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(theirs), Ok(ours)) = (std::fs::read_link(format!("/proc/{pid}/exe")), std::env::current_exe()) else {
        return false;
    };
    let theirs = theirs.to_string_lossy();
    let same_exe = theirs.strip_suffix(" (deleted)").unwrap_or(&theirs) == ours.to_string_lossy();
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    let same_user = std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == me);
    same_exe && same_user
}

/// The direct children of `pid` (the supervisor's task, which leads its own group).
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| s.split_whitespace().filter_map(|c| c.parse().ok()).collect())
        .unwrap_or_default()
}

/// Stops supervisors and their tasks: SIGTERM to each supervisor (which passes it on to
/// its task's group and kills the group when the task ends), SIGKILL after the longest
/// grace period to supervisors still there, and then to their tasks' groups (read
/// before, while the supervisor held them). Returns once all are gone. Blocking.
pub fn stop_processes(procs: &[LeftoverProcess]) {
    // Each supervisor's task (its child, leading the task's group), as (pid, start time).
    let groups: Vec<Vec<(i32, u64)>> =
        procs.iter().map(|p| children(p.pid).into_iter().filter_map(|c| Some((c, start_time(c)?))).collect()).collect();
    for p in procs {
        if is_same_process(p.pid, p.start_time) {
            // SAFETY: kill on a pid we just checked names the same process.
            unsafe { libc::kill(p.pid, libc::SIGTERM) };
        }
    }
    let grace = procs.iter().map(|p| p.grace).max().unwrap_or_default();
    let deadline = Instant::now() + grace + Duration::from_secs(1);
    while procs.iter().any(|p| is_same_process(p.pid, p.start_time)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for (p, group) in procs.iter().zip(groups) {
        if !is_same_process(p.pid, p.start_time) {
            continue; // it ended on its own, and took its task's group with it
        }
        // SAFETY: as above.
        unsafe { libc::kill(p.pid, libc::SIGKILL) };
        // Its task's group is left behind: kill it, but only while its leader is the
        // process we saw (a group id can be reused once its leader is gone).
        for (leader, started) in group {
            if is_same_process(leader, started) {
                signal_group(leader, libc::SIGKILL);
            }
        }
    }
    for p in procs {
        cgroups::remove(&p.cgroups);
    }
}

/// Finds and stops everything earlier agents left running under `agent_dir`'s sandboxes.
pub async fn sweep(sandboxes: &Path, docker: Option<&DockerExecutor>) -> Sweep {
    let mut out = Sweep::default();
    let dir = sandboxes.to_path_buf();
    let procs = tokio::task::spawn_blocking(move || {
        let procs = find_supervisors(&dir);
        stop_processes(&procs);
        procs
    })
    .await
    .unwrap_or_default();
    out.processes = procs.len();
    out.agents.extend(procs.into_iter().filter_map(|p| p.agent_id));
    if let Some(docker) = docker {
        match docker.list_under(sandboxes).await {
            Ok(found) => {
                out.containers = found.len();
                // All at once: each may take docker's default grace (10 s) to stop.
                let stopped = futures_util::future::join_all(found.iter().map(|c| async move {
                    if let Err(e) = docker.stop(&c.container_id, CONTAINER_GRACE).await {
                        tracing::warn!(container = %c.container_id, "cannot stop a leftover container: {e}");
                        return false;
                    }
                    let _ = docker.remove(&c.container_id).await;
                    true
                }))
                .await;
                // An agent whose container may still run is not reported as replaced: the
                // master then finds its tasks the slow way (ping budget), never doubled.
                let mut failed = BTreeSet::new();
                for (c, ok) in found.iter().zip(stopped) {
                    if ok {
                        out.agents.insert(AgentId(c.agent_id.clone()));
                    } else {
                        failed.insert(AgentId(c.agent_id.clone()));
                    }
                }
                out.agents.retain(|a| !failed.contains(a));
            }
            Err(e) => tracing::warn!("cannot look for leftover containers: {e}"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn supervisor_command_lines_are_recognised_by_their_sandbox() {
        let sb = Path::new("/var/lib/dromos/sandboxes");
        let p = parse_supervisor(
            &args(
                "/usr/bin/dromos supervise --sandbox /var/lib/dromos/sandboxes/web.instance-1._app.1 \
                 --grace-ms 5000 --agent-id agent-7 --cgroup /sys/fs/cgroup/dromos/web.instance-1._app.1 \
                 -- /bin/sh -c sleep",
            ),
            sb,
        )
        .unwrap();
        assert_eq!(p.task_id.as_str(), "web.instance-1._app.1");
        assert_eq!(p.agent_id, Some(AgentId("agent-7".into())));
        assert_eq!(p.grace, Duration::from_secs(5));
        assert_eq!(p.cgroups, vec![PathBuf::from("/sys/fs/cgroup/dromos/web.instance-1._app.1")]);
        // Older supervisors have no agent id; they are still found.
        let old = parse_supervisor(&args("dromos supervise --sandbox /var/lib/dromos/sandboxes/a.b -- x"), sb);
        assert_eq!(old.unwrap().agent_id, None);
        // Other directories, other programs and odd arguments are not ours.
        for other in [
            "dromos supervise --sandbox /other/sandboxes/a.b -- x",
            "dromos supervise --sandbox /var/lib/dromos/sandboxes/a.b/deeper -- x",
            "dromos serve --sandbox /var/lib/dromos/sandboxes/a.b",
            "dromos supervise --sandbox /var/lib/dromos/sandboxes/a.b --grace-ms soon -- x",
            "dromos supervise --sandbox /var/lib/dromos/sandboxes/../x -- x",
            "dromos supervise --sandbox /var/lib/dromos/sandboxes/a.b --cgroup /etc -- x",
            "dromos supervise --sandbox /var/lib/dromos/sandboxes/a.b --cgroup /sys/fs/cgroup/dromos/c.d -- x",
            "dromos",
        ] {
            assert_eq!(parse_supervisor(&args(other), sb), None, "{other}");
        }
    }
}
