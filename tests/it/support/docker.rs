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
    let import = Command::new("docker").args(["import", "-", IMAGE]).stdin(tar_out).output().unwrap();
    assert!(tar.wait().unwrap().success(), "tar of the busybox rootfs failed");
    assert!(import.status.success(), "docker import failed: {}", String::from_utf8_lossy(&import.stderr));
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
