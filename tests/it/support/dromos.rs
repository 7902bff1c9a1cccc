//! A real `dromos serve` process on port 0 with its own data dir and host port range.

use super::http::{request, Resp};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Child;

pub struct Dromos {
    child: Option<Child>,
    pub url: String,
    pub data_dir: PathBuf,
    pub ports: String,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    token: Option<String>,
}

pub fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_dromos")
}

impl Dromos {
    /// Starts dromos in `data_dir` with extra flags.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Dromos {
        Dromos::start_with_env(data_dir, extra, &[])
    }

    /// Starts dromos in `data_dir` with extra flags and environment variables.
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Dromos {
        let base = super::port_block();
        let mut d = Dromos {
            child: None,
            url: String::new(),
            data_dir: data_dir.to_path_buf(),
            ports: format!("{base}-{}", base + 99),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            token: None,
        };
        d.spawn();
        d
    }

    pub fn with_token(mut self, token: &str) -> Dromos {
        self.token = Some(token.to_string());
        self
    }

    fn spawn(&mut self) {
        // A restart listens where the last run did, as a real restart would (agents and
        // clients keep their master URL); the first start takes a free port.
        let listen = self.url.strip_prefix("http://").unwrap_or("127.0.0.1:0").to_string();
        let mut args: Vec<String> =
            ["serve", "--listen", &listen, "--agent-ports", &self.ports, "--hostname", "127.0.0.1", "--data-dir"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        args.push(self.data_dir.to_string_lossy().to_string());
        args.extend(self.extra.iter().cloned());
        let (child, line) = super::spawn_dromos(&args, &self.env);
        let url =
            line.strip_prefix("dromos listening on ").unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        self.url = url.to_string();
        self.child = Some(child);
    }

    /// Sends `sig` (SIGSTOP freezes the process, as a long pause would).
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: a plain signal to a process this test started.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// `kill -9`, as a crash would.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGCONT);
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until the process ends by itself (at a fail point), then forgets it.
    pub fn wait_crash(&mut self) {
        let mut c = self.child.take().expect("dromos is running");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while c.try_wait().expect("wait for dromos").is_none() {
            assert!(std::time::Instant::now() < deadline, "dromos did not crash at its fail point");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The environment of the next (re)start.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    }

    /// Starts again on the same data dir (after `kill9`).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Resp {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
        self.raw(method, path, &[], bytes.as_deref())
    }

    pub fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Resp {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut h: Vec<(&str, &str)> = headers.to_vec();
        if let Some(a) = &auth {
            h.push(("Authorization", a));
        }
        request(method, &format!("{}{}", self.url, path), &h, body)
    }

    pub fn get(&self, path: &str) -> Value {
        let r = self.call("GET", path, None);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text);
        r.json()
    }

    pub fn app(&self, id: &str) -> Value {
        self.get(&format!("/v2/apps{id}"))["app"].clone()
    }

    /// Sandboxes of the embedded agent's tasks whose supervisor is alive.
    pub fn live_sandboxes(&self) -> Vec<(String, i32, i32)> {
        super::live_sandboxes(&self.data_dir.join("agent"))
    }
}

impl Drop for Dromos {
    fn drop(&mut self) {
        self.kill9();
        // Tasks outlive dromos by design: stop the ones this test started.
        super::kill_tasks(&self.data_dir.join("agent"));
    }
}
