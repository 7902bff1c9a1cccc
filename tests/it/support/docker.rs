//! The real Docker engine for the Docker executor tests: checks that the daemon answers,
//! builds the tiny local test image once per run, hands out free host ports, and removes a
//! test's containers (by agent label) even when the test fails.
//!
//! No registry is reachable, so the image is a `docker import` of a rootfs holding
//! Debian's static busybox (package busybox-static, installed by `make deps`) with one
//! symlink per applet the tests use.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::OnceLock;

/// The test image: busybox only, no entrypoint.
pub const IMAGE: &str = "dromos-test-busybox:1";

const APPLETS: &[&str] = &[
    "sh", "httpd", "sleep", "echo", "cat", "head", "tail", "tr", "ls", "mkdir", "touch", "seq", "true", "false", "wc",
];

/// Fails the test unless the Docker daemon answers: Docker is a real component of
/// dromos, so a missing engine is a failure, never a skip.
pub fn require() {
    static UP: OnceLock<bool> = OnceLock::new();
    let up = *UP.get_or_init(|| {
        Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(up, "the Docker daemon does not answer (`docker version` failed): the Docker tests need it");
}

/// The test image, built on first use in this process (other threads wait for it) and
/// only if `docker image inspect` does not find it already.
pub fn image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(build_image);
    IMAGE
}

fn docker_ok(args: &[&str]) -> bool {
    Command::new("docker").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn build_image() {
    if docker_ok(&["image", "inspect", IMAGE]) {
        return;
    }
    import_busybox(None);
}

/// Imports the busybox rootfs as [`IMAGE`] into the daemon at `host` (the machine's
/// daemon when `None`).
fn import_busybox(host: Option<&str>) {
    let busybox = Path::new("/bin/busybox");
    assert!(
        is_static_elf(busybox),
        "/bin/busybox is missing or not statically linked: install busybox-static (`make deps`)"
    );
    let root = tempfile::Builder::new().prefix("dromos-busybox-root").tempdir().unwrap();
    let bin = root.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(root.path().join("tmp")).unwrap();
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.path().join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();

    let mut tar = Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(root.path())
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .expect("cannot run tar");
    let tar_out = tar.stdout.take().unwrap();
    let mut docker = Command::new("docker");
    if let Some(h) = host {
        docker.args(["-H", h]);
    }
    let import = docker.args(["import", "-", IMAGE]).stdin(tar_out).output().unwrap();
    assert!(tar.wait().unwrap().success(), "tar of the busybox rootfs failed");
    assert!(import.status.success(), "docker import failed: {}", String::from_utf8_lossy(&import.stderr));
}

/// A Docker daemon of the test's own: its own socket, data root, exec root and network
/// namespace, no bridge or iptables changes, vfs storage. A test may stop and start it (a "dockerd
/// restart") without disturbing the machine's daemon or other tests. Stopped when
/// dropped.
pub struct PrivateDockerd {
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl PrivateDockerd {
    /// Starts the daemon and imports the test image into it.
    pub fn start() -> PrivateDockerd {
        require();
        // Short paths: containerd's sockets live under the exec root (108-byte limit).
        let dir = tempfile::Builder::new().prefix("dd").tempdir_in("/tmp").unwrap();
        std::fs::write(dir.path().join("daemon.json"), "{}").unwrap();
        let mut d = PrivateDockerd { dir, child: None };
        d.spawn();
        import_busybox(Some(&d.host()));
        d
    }

    /// `unix://<socket>`: for `DOCKER_HOST` and `docker -H`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("d.sock").display())
    }

    fn spawn(&mut self) {
        let p = |name: &str| self.dir.path().join(name).to_string_lossy().into_owned();
        let log = std::fs::File::options().create(true).append(true).open(self.dir.path().join("log")).unwrap();
        // In a network namespace of its own: a daemon without a bridge removes the
        // `docker0` interface it finds, which is the machine daemon's.
        let child = Command::new("unshare")
            .args(["--net", "--", "dockerd"])
            .args(["--config-file", &p("daemon.json"), "--data-root", &p("root"), "--exec-root", &p("x")])
            .args(["--cgroup-parent", "dromos-test-dockerd"])
            .args(["--pidfile", &p("pid"), "--host", &self.host(), "--storage-driver", "vfs"])
            .args(["--bridge", "none", "--iptables=false", "--ip6tables=false", "--shutdown-timeout", "1"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        self.child = Some(child);
        let started = std::time::Instant::now();
        while !docker_ok(&["-H", &self.host(), "version"]) {
            let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
            assert!(started.elapsed() < std::time::Duration::from_secs(60), "private dockerd did not start:\n{log}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Stops the daemon the way a service manager does (SIGTERM, wait) and starts it
    /// again on the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: a plain signal to a process this test started.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        // Without live-restore the daemon stops its containers as it shuts down.
        self.stop();
        // What it leaves mounted (its network namespace) would keep the dir from going.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut inside: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| Path::new(m).starts_with(self.dir.path()))
            .collect();
        inside.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in inside {
            if let Ok(c) = std::ffi::CString::new(m) {
                // SAFETY: umount2 with a NUL-terminated path; a lazy detach of a test mount.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

/// True for an ELF file without a program interpreter (PT_INTERP), i.e. static.
fn is_static_elf(path: &Path) -> bool {
    let Ok(b) = std::fs::read(path) else { return false };
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= b.len() && u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) != 3
    })
}

/// A host port that is free now. Taken from 31000-31999: below the kernel's ephemeral
/// range (so no outgoing connection holds it) and above the blocks `Dromos::start` uses.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() % 1000) as u16;
    for _ in 0..1000 {
        let port = 31000 + (start + NEXT.fetch_add(1, Ordering::SeqCst)) % 1000;
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 31000-31999");
}

/// Force-removes every container labelled with this agent id when dropped.
pub struct Cleanup {
    pub agent_id: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label=dromos.agent-id={}", self.agent_id);
        let Ok(out) = Command::new("docker").args(["ps", "-aq", "--filter", &filter]).output() else { return };
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect();
        if !ids.is_empty() {
            let _ = Command::new("docker").args(["rm", "-f", "-v"]).args(&ids).output();
        }
    }
}

/// `docker inspect -f <format> <id>`, trimmed.
pub fn inspect(id: &str, format: &str) -> String {
    let out = Command::new("docker").args(["inspect", "-f", format, id]).output().unwrap();
    assert!(out.status.success(), "docker inspect failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// How many containers carry this agent's label.
pub fn count(agent_id: &str) -> usize {
    let filter = format!("label=dromos.agent-id={agent_id}");
    let out = Command::new("docker").args(["ps", "-aq", "--filter", &filter]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().count()
}
