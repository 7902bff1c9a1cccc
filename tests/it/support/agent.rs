//! A real `dromos agent` process with its own work dir, host address and port range,
//! connected to a test's master. Stop it with SIGSTOP to simulate a partition.

use std::path::{Path, PathBuf};
use std::process::Child;

pub struct Agent {
    child: Option<Child>,
    pub id: String,
    pub dir: PathBuf,
    pub ports: (u16, u16),
    args: Vec<String>,
}

impl Agent {
    /// Starts an agent for `master` reporting `hostname` (e.g. 127.0.0.2), with
    /// `resources` (Mesos syntax, without ports: a free port block is added) and
    /// `attributes`.
    pub fn start(master: &str, token: &str, dir: &Path, hostname: &str, resources: &str, attributes: &str) -> Agent {
        let base = super::port_block();
        let ports = (base, base + 99);
        let res = format!("{resources};ports:[{}-{}]", ports.0, ports.1);
        let args = vec![
            "agent".into(),
            "--master".into(),
            master.into(),
            "--auth-token".into(),
            token.into(),
            "--hostname".into(),
            hostname.into(),
            "--resources".into(),
            res,
            "--attributes".into(),
            attributes.into(),
            "--work-dir".into(),
            dir.to_string_lossy().to_string(),
        ];
        let mut a = Agent { child: None, id: String::new(), dir: dir.to_path_buf(), ports, args };
        a.spawn();
        a
    }

    fn spawn(&mut self) {
        let (child, line) = super::spawn_dromos(&self.args, &[]);
        let id = line.strip_prefix("dromos agent ").and_then(|r| r.strip_suffix(" running"));
        self.id = id.unwrap_or_else(|| panic!("unexpected first line: {line:?}")).to_string();
        self.child = Some(child);
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: a plain signal to a process this test started.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Freezes the agent process (its tasks keep running): a partition, as the master sees it.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// kill -9, wipe the work dir (id, sandboxes, checkpoints), start again.
    pub fn restart_wiped(&mut self) {
        self.kill9();
        std::fs::remove_dir_all(&self.dir).expect("wipe the agent's directory");
        self.spawn();
    }

    /// Live task sandboxes: (task id, supervisor pid, task pid).
    pub fn live_sandboxes(&self) -> Vec<(String, i32, i32)> {
        super::live_sandboxes(&self.dir)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.resume();
        self.kill9();
        super::kill_tasks(&self.dir);
    }
}
