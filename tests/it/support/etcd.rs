//! A real etcd for one test: Debian's etcd-server binary, one member or three, each in
//! a temp dir on free loopback ports. Members can be stopped and started again on
//! their data (quorum loss and recovery). Stopped when dropped. A missing etcd fails
//! the test: `make test` installs it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

pub struct Etcd {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    cluster: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Etcd {
    /// Starts a cluster of `n` members and waits until it answers.
    pub fn start(n: usize) -> Etcd {
        let dir = tempfile::Builder::new().prefix("dromos-etcd").tempdir().unwrap();
        let members: Vec<Member> = (0..n)
            .map(|i| Member { name: format!("m{i}"), client: free_port(), peer: free_port(), child: None })
            .collect();
        let cluster =
            members.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer)).collect::<Vec<_>>().join(",");
        let mut etcd = Etcd { dir, members, cluster };
        for i in 0..n {
            etcd.start_member(i, "new");
        }
        etcd.wait_healthy();
        etcd
    }

    fn start_member(&mut self, i: usize, state: &str) {
        let m = &self.members[i];
        let data = self.dir.path().join(&m.name);
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", m.name))).unwrap();
        let child = Command::new("etcd")
            .args(["--name", &m.name, "--data-dir"])
            .arg(&data)
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", m.client),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{}", m.client),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
                "--initial-cluster",
                &self.cluster,
                "--initial-cluster-state",
                state,
                "--initial-cluster-token",
                "dromos-test",
                // Short Raft timers: an election in well under a second.
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd is not installed: run `make deps` (scripts/install-deps.sh)");
        self.members[i].child = Some(child);
    }

    /// The client URLs, comma-separated (dromos's `--etcd`).
    pub fn endpoints(&self) -> String {
        self.members.iter().map(|m| format!("http://127.0.0.1:{}", m.client)).collect::<Vec<_>>().join(",")
    }

    /// Waits until a member reports itself healthy (a leader and quorum).
    pub fn wait_healthy(&self) {
        super::wait_for("etcd to be healthy", Duration::from_secs(30), || {
            self.members.iter().filter(|m| m.child.is_some()).find_map(|m| {
                let url = format!("http://127.0.0.1:{}/health", m.client);
                let r = ureq::get(&url).timeout(Duration::from_secs(2)).call().ok()?;
                r.into_string().ok().filter(|t| t.contains("true")).map(|_| ())
            })
        });
    }

    /// Stops member `i` (`kill -9`); its data stays.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data.
    pub fn restart(&mut self, i: usize) {
        self.stop(i);
        self.start_member(i, "existing");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop(i);
        }
    }
}
