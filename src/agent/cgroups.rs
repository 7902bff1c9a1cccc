//! CPU and memory limits for process tasks through Linux control groups, where the
//! machine allows it (Docker tasks get the same limits from dockerd).
//!
//! At start the agent probes for a writable hierarchy: cgroup v2 (the unified hierarchy
//! with the `cpu` and `memory` controllers available), else cgroup v1 (separate `cpu`
//! and `memory` hierarchies). It keeps its tasks under a `dromos` cgroup there. For each
//! task the agent creates `dromos/<task id>` and writes the limits; the supervisor moves
//! the task into it between fork and exec (so the task never runs unlimited), reads
//! whether the kernel OOM-killed it, and removes the cgroup when the task has ended.
//!
//! Limits, the same as the Docker executor's: memory is a hard limit with no swap on top
//! (going over it is an OOM kill, reported as TASK_FAILED); cpus is a CFS quota of
//! `cpus` cores per 100 ms period, plus a proportional weight.
//!
//! Without a usable hierarchy (no root, a read-only /sys/fs/cgroup, controllers not
//! delegated) tasks run without limits and the agent says so once at start.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const MOUNT: &str = "/sys/fs/cgroup";
/// The cgroup, under each hierarchy's root, that holds one child per task.
const PARENT: &str = "dromos";
const CFS_PERIOD_US: u64 = 100_000;

/// A writable cgroup hierarchy with the cpu and memory controllers.
#[derive(Debug, Clone, PartialEq)]
pub enum Cgroups {
    /// The unified hierarchy: `dir` is the `dromos` parent cgroup.
    V2 { dir: PathBuf },
    /// Legacy hierarchies: the `dromos` parents under the memory and cpu mounts.
    V1 { memory: PathBuf, cpu: PathBuf },
}

/// The limits of one task. Zero means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    pub cpus: f64,
    pub mem_mb: f64,
}

impl Cgroups {
    /// Finds and prepares a usable hierarchy under the standard mount point.
    pub fn detect() -> Result<Cgroups, String> {
        Cgroups::detect_at(Path::new(MOUNT))
    }

    fn detect_at(mount: &Path) -> Result<Cgroups, String> {
        let v2 = mount.join("cgroup.controllers");
        if v2.exists() {
            return prepare_v2(mount).map_err(|e| format!("cgroup v2 at {}: {e}", mount.display()));
        }
        let (memory, cpu) = (mount.join("memory"), mount.join("cpu"));
        if memory.join("memory.limit_in_bytes").exists() && cpu.join("cpu.cfs_quota_us").exists() {
            let (memory, cpu) = (memory.join(PARENT), cpu.join(PARENT));
            for dir in [&memory, &cpu] {
                fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            return Ok(Cgroups::V1 { memory, cpu });
        }
        Err(format!("no cgroup v2 or v1 cpu and memory hierarchy under {}", mount.display()))
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Cgroups::V2 { .. } => "cgroup v2",
            Cgroups::V1 { .. } => "cgroup v1",
        }
    }

    /// The directories of task `name`'s cgroup (one per hierarchy).
    pub fn task_dirs(&self, name: &str) -> Vec<PathBuf> {
        match self {
            Cgroups::V2 { dir } => vec![dir.join(name)],
            Cgroups::V1 { memory, cpu } => vec![memory.join(name), cpu.join(name)],
        }
    }

    /// Creates task `name`'s cgroup with `limits`; returns its directories, which the
    /// supervisor joins. `name` is a validated task id (path-safe).
    pub fn create_task(&self, name: &str, limits: Limits) -> io::Result<Vec<PathBuf>> {
        let mem = (limits.mem_mb > 0.0).then(|| ((limits.mem_mb * 1024.0 * 1024.0) as u64).max(4 << 20));
        let quota = (limits.cpus > 0.0).then(|| ((limits.cpus * CFS_PERIOD_US as f64) as u64).max(1000));
        // (directory, file, value, whether the file may be absent), in writing order.
        const OPTIONAL: bool = true;
        const REQUIRED: bool = false;
        let mut writes: Vec<(PathBuf, &str, String, bool)> = Vec::new();
        let dirs = match self {
            Cgroups::V2 { dir } => {
                let d = dir.join(name);
                if let Some(bytes) = mem {
                    writes.push((d.clone(), "memory.max", bytes.to_string(), REQUIRED));
                    // No swap beyond the limit (the file is absent without swap accounting).
                    writes.push((d.clone(), "memory.swap.max", "0".into(), OPTIONAL));
                }
                if let Some(q) = quota {
                    writes.push((d.clone(), "cpu.max", format!("{q} {CFS_PERIOD_US}"), REQUIRED));
                    // cpu.weight is 1..=10000, 100 for one share of 1024: 100 per core.
                    let weight = ((limits.cpus * 100.0) as u64).clamp(1, 10_000);
                    writes.push((d.clone(), "cpu.weight", weight.to_string(), REQUIRED));
                }
                vec![d]
            }
            Cgroups::V1 { memory, cpu } => {
                let (m, c) = (memory.join(name), cpu.join(name));
                if let Some(bytes) = mem {
                    writes.push((m.clone(), "memory.limit_in_bytes", bytes.to_string(), REQUIRED));
                    // memory + swap = memory: no swap (absent without swap accounting).
                    writes.push((m.clone(), "memory.memsw.limit_in_bytes", bytes.to_string(), OPTIONAL));
                }
                if let Some(q) = quota {
                    // The period is the kernel's default (100 ms) in a new cgroup.
                    writes.push((c.clone(), "cpu.cfs_quota_us", q.to_string(), REQUIRED));
                    writes.push((
                        c.clone(),
                        "cpu.shares",
                        ((limits.cpus * 1024.0) as u64).max(2).to_string(),
                        REQUIRED,
                    ));
                }
                vec![m, c]
            }
        };
        let made = (|| {
            for d in &dirs {
                match fs::create_dir(d) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                    _ => {}
                }
            }
            for (dir, file, value, optional) in &writes {
                let path = dir.join(file);
                if *optional && !path.exists() {
                    continue;
                }
                fs::write(path, value)?;
            }
            Ok(())
        })();
        match made {
            Ok(()) => Ok(dirs),
            Err(e) => {
                remove(&dirs);
                Err(e)
            }
        }
    }
}

/// Enables the cpu and memory controllers for the `dromos` parent of a v2 hierarchy.
fn prepare_v2(mount: &Path) -> io::Result<Cgroups> {
    let available = fs::read_to_string(mount.join("cgroup.controllers"))?;
    for c in ["cpu", "memory"] {
        if !available.split_whitespace().any(|x| x == c) {
            return Err(io::Error::other(format!("the {c} controller is not available")));
        }
    }
    // The root may hold processes and still delegate controllers to its children.
    fs::write(mount.join("cgroup.subtree_control"), "+cpu +memory")?;
    let dir = mount.join(PARENT);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("cgroup.subtree_control"), "+cpu +memory")?;
    Ok(Cgroups::V2 { dir })
}

/// Whether the kernel's OOM killer killed a process of the cgroup whose directories
/// are `dirs` (the `oom_kill` counter of memory.events or memory.oom_control).
pub fn oom_killed(dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|d| {
        ["memory.events", "memory.oom_control"].iter().any(|f| {
            fs::read_to_string(d.join(f)).ok().is_some_and(|text| {
                text.lines().any(|l| {
                    l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse::<u64>().ok()).is_some_and(|n| n > 0)
                })
            })
        })
    })
}

/// Kills every process still in a task's cgroup: those that left the task's process
/// group (with `setsid`, say) are in it all the same.
pub fn kill_all(dirs: &[PathBuf]) {
    for d in dirs {
        // cgroup v2 (5.14+) kills the whole cgroup in one write.
        if fs::write(d.join("cgroup.kill"), "1").is_ok() {
            continue;
        }
        for pid in fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default().lines() {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                if pid > 1 {
                    // SAFETY: kill(2) with a pid and a signal; no memory involved.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }
}

/// Removes a task's cgroup directories. A cgroup is removable once its processes are
/// gone, which takes the kernel a moment after the last one was killed: retried
/// briefly. Missing directories are fine.
pub fn remove(dirs: &[PathBuf]) {
    for d in dirs {
        for _ in 0..50 {
            match fs::remove_dir(d) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_needs_a_hierarchy_with_both_controllers() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Cgroups::detect_at(dir.path()).is_err());
        // A v1 layout: memory and cpu hierarchies with their control files.
        fs::create_dir_all(dir.path().join("memory")).unwrap();
        fs::write(dir.path().join("memory/memory.limit_in_bytes"), "").unwrap();
        assert!(Cgroups::detect_at(dir.path()).is_err(), "cpu is missing");
        fs::create_dir_all(dir.path().join("cpu")).unwrap();
        fs::write(dir.path().join("cpu/cpu.cfs_quota_us"), "").unwrap();
        let cg = Cgroups::detect_at(dir.path()).unwrap();
        assert_eq!(cg, Cgroups::V1 { memory: dir.path().join("memory/dromos"), cpu: dir.path().join("cpu/dromos") });
        // A v2 layout without the memory controller is refused with the reason.
        let v2 = tempfile::tempdir().unwrap();
        fs::write(v2.path().join("cgroup.controllers"), "cpu io pids").unwrap();
        let err = Cgroups::detect_at(v2.path()).unwrap_err();
        assert!(err.contains("memory controller"), "{err}");
    }

    #[test]
    fn limits_are_written_in_each_hierarchys_units() {
        // Plain directories stand in for cgroupfs: the files the kernel would offer are
        // created first, and what the agent writes into them is checked.
        let dir = tempfile::tempdir().unwrap();
        let v1 = Cgroups::V1 { memory: dir.path().join("m"), cpu: dir.path().join("c") };
        for d in [dir.path().join("m/t1"), dir.path().join("c/t1")] {
            fs::create_dir_all(&d).unwrap();
        }
        fs::write(dir.path().join("m/t1/memory.memsw.limit_in_bytes"), "").unwrap();
        let dirs = v1.create_task("t1", Limits { cpus: 0.5, mem_mb: 64.0 }).unwrap();
        let read = |p: &str| fs::read_to_string(dir.path().join(p)).unwrap();
        assert_eq!(read("m/t1/memory.limit_in_bytes"), (64u64 << 20).to_string());
        assert_eq!(read("m/t1/memory.memsw.limit_in_bytes"), (64u64 << 20).to_string());
        assert_eq!(read("c/t1/cpu.cfs_quota_us"), "50000");
        assert_eq!(read("c/t1/cpu.shares"), "512");
        assert_eq!(dirs.len(), 2);

        let v2 = Cgroups::V2 { dir: dir.path().join("u") };
        fs::create_dir_all(dir.path().join("u/t2")).unwrap();
        v2.create_task("t2", Limits { cpus: 2.0, mem_mb: 0.0 }).unwrap();
        assert_eq!(read("u/t2/cpu.max"), "200000 100000");
        assert_eq!(read("u/t2/cpu.weight"), "200");
        assert!(!dir.path().join("u/t2/memory.max").exists(), "no memory limit asked for");
    }

    #[test]
    fn oom_kills_are_read_from_either_version() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        assert!(!oom_killed(std::slice::from_ref(&d)));
        fs::write(d.join("memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n").unwrap();
        assert!(!oom_killed(std::slice::from_ref(&d)));
        fs::write(d.join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
        assert!(oom_killed(&[d]));
    }
}
