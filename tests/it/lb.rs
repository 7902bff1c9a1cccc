//! `dromos haproxy` end to end: a real dromos runs an HTTP app, the sidecar drives a
//! real HAProxy (Debian's 2.6), and a client sends traffic through it while the app
//! scales up, loses a task to `kill -9`, goes through a rolling upgrade, and the sidecar
//! itself is killed and restarted: no request fails, and server changes go through the
//! runtime API (one reload: the start). Apps with bad labels or config HAProxy refuses
//! are left out and reported; `--once --stdout` prints the config.

use crate::haproxy::require_haproxy;
use crate::support::docker::free_port;
use crate::support::dromos::{exe, Dromos};
use crate::support::sse::{EventStream, SSE};
use crate::support::wait_for;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

/// A `dromos haproxy` process with its files in a temp dir.
struct Sidecar {
    child: Option<Child>,
    dir: PathBuf,
    args: Vec<String>,
    /// HAProxy's shared HTTP frontend port.
    http_port: u16,
    /// The sidecar's own `/metrics`.
    metrics: String,
}

impl Sidecar {
    fn start(master: &str, dir: &Path) -> Sidecar {
        Sidecar::start_with(master, dir, &[])
    }

    /// A sidecar with more flags (a token, say).
    fn start_with(master: &str, dir: &Path, more: &[&str]) -> Sidecar {
        let http_port = free_port();
        let stats = free_port();
        let listen = format!("127.0.0.1:{}", free_port());
        let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
        let args: Vec<String> = [
            "haproxy",
            "--master",
            master,
            "--config",
            &p("haproxy.cfg"),
            "--socket",
            &p("admin.sock"),
            "--master-socket",
            &p("master.sock"),
            "--state-file",
            &p("server-state"),
            "--http-port",
            &http_port.to_string(),
            "--stats-bind",
            &format!("127.0.0.1:{stats}"),
            "--listen",
            &listen,
            "--min-reload-interval",
            "200ms",
            "--name",
            "lb-test",
        ]
        .iter()
        .chain(more)
        .map(|s| s.to_string())
        .collect();
        let mut s = Sidecar {
            child: None,
            dir: dir.to_path_buf(),
            args,
            http_port,
            metrics: format!("http://{listen}/metrics"),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new(exe())
            .args(&self.args)
            .env("DROMOS_LOG", std::env::var("LB_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .spawn()
            .expect("start dromos haproxy");
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// One runtime API (or master CLI) command.
    fn cli(&self, socket: &str, cmd: &str) -> String {
        let Ok(mut s) = UnixStream::connect(self.dir.join(socket)) else { return String::new() };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.write_all(format!("{cmd}\n").as_bytes());
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// HAProxy's master pid, when it runs. (Its CLI now and then closes a connection
    /// without answering: a few attempts are made.)
    fn haproxy_master(&self) -> Option<i32> {
        (0..10).find_map(|_| {
            let proc = self.cli("master.sock", "show proc");
            let pid =
                proc.lines().find(|l| l.contains(" master ")).and_then(|l| l.split_whitespace().next()?.parse().ok());
            if pid.is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            pid
        })
    }

    /// Enabled servers of a backend, by address, from HAProxy itself.
    fn servers(&self, backend: &str) -> Vec<String> {
        let state = self.cli("admin.sock", &format!("show servers state {backend}"));
        // Columns: be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ... srv_port (19th)
        let mut out: Vec<String> = state
            .lines()
            .filter(|l| !l.starts_with('#') && l.split_whitespace().count() > 18)
            .filter_map(|l| {
                let c: Vec<&str> = l.split_whitespace().collect();
                (c[6] == "0").then(|| format!("{}:{}", c[4], c[18]))
            })
            .collect();
        out.sort();
        out
    }

    fn metric(&self, name: &str) -> u64 {
        let text = ureq::get(&self.metrics).call().ok().and_then(|r| r.into_string().ok()).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let master = self.haproxy_master();
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid: SIGTERM stops the sidecar and its HAProxy.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        if let Some(mut c) = self.child.take() {
            let _ = wait_for("the sidecar to stop", Duration::from_secs(10), || c.try_wait().ok().flatten());
        }
        // The sidecar stops its HAProxy; should it have failed to, stop it here.
        if let Some(pid) = master.filter(|p| crate::support::alive(*p)) {
            // SAFETY: kill(2) on the HAProxy this test started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

/// The tasks' running addresses (`host:port`), sorted.
fn task_addrs(d: &Dromos, app: &str) -> Vec<String> {
    let tasks = d.get(&format!("/v2/apps{app}/tasks"))["tasks"].as_array().cloned().unwrap_or_default();
    let mut out: Vec<String> = tasks
        .iter()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .filter(|t| {
            t["healthCheckResults"].as_array().is_some_and(|r| !r.is_empty() && r.iter().all(|r| r["alive"] == true))
        })
        .map(|t| format!("{}:{}", t["host"].as_str().unwrap_or(""), t["ports"][0]))
        .collect();
    out.sort();
    out
}

fn no_deployments(d: &Dromos) {
    wait_for("deployments to finish", T, || d.get("/v2/deployments").as_array().unwrap().is_empty().then_some(()));
}

/// Clients sending GETs through HAProxy until stopped, counting answers by body.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    bodies: Arc<Mutex<std::collections::BTreeMap<String, u64>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, host: &'static str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let bodies = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, failures, bodies) = (stop.clone(), ok.clone(), failures.clone(), bodies.clone());
                std::thread::spawn(move || {
                    // A fresh connection per request: every request is routed anew.
                    let agent = ureq::AgentBuilder::new().max_idle_connections(0).timeout(T).build();
                    let url = format!("http://127.0.0.1:{port}/");
                    while !stop.load(Ordering::Relaxed) {
                        match agent.get(&url).set("Host", host).call() {
                            Ok(r) => match r.into_string() {
                                Ok(body) => {
                                    ok.fetch_add(1, Ordering::Relaxed);
                                    *bodies.lock().unwrap().entry(body.trim().to_string()).or_default() += 1;
                                }
                                Err(e) => failures.lock().unwrap().push(format!("reading the body: {e}")),
                            },
                            Err(e) => failures.lock().unwrap().push(e.to_string()),
                        }
                    }
                })
            })
            .collect();
        Load { stop, ok, failures, bodies, threads }
    }

    fn finish(self) -> (u64, Vec<String>, std::collections::BTreeMap<String, u64>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let failures = self.failures.lock().unwrap().clone();
        let bodies = self.bodies.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures, bodies)
    }
}

/// The test app: answers every GET with its version in a single write (so a `kill -9`
/// cannot cut a response in half), and drains on SIGTERM as a well-behaved service does:
/// it ignores it, keeps answering what it is sent, and dies by the SIGKILL that follows
/// the kill grace period (by which time the load balancer has taken it out).
const APP: &str = r#"
import os, signal, sys, http.server as h
signal.signal(signal.SIGTERM, signal.SIG_IGN)
body = (sys.argv[1] + "\n").encode()
class Handler(h.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    def log_message(self, *args):
        pass
h.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT0"])), Handler).serve_forever()
"#;

fn web(script: &Path, version: &str, instances: u32) -> Value {
    json!({
        "id": "/lb/web", "instances": instances, "cpus": 0.1, "mem": 32,
        "cmd": format!("exec python3 {} {version}", script.display()),
        "taskKillGracePeriodSeconds": 2,
        "portDefinitions": [{"port": 0}],
        // Its own loopback address, so tests running side by side never bind the same port.
        "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "shop.example.com",
                   "HAPROXY_0_BIND_ADDR": "127.0.0.11"},
        "healthChecks": [{"protocol": "HTTP", "path": "/", "portIndex": 0, "gracePeriodSeconds": 30,
                          "intervalSeconds": 1, "timeoutSeconds": 2, "maxConsecutiveFailures": 2}],
        "upgradeStrategy": {"minimumHealthCapacity": 1.0, "maximumOverCapacity": 0.5}
    })
}

#[test]
fn traffic_through_haproxy_survives_scaling_a_lost_task_an_upgrade_and_a_sidecar_restart() {
    require_haproxy();
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(&dir.path().join("dromos"), &[]);
    let script = dir.path().join("app.py");
    std::fs::write(&script, APP).unwrap();
    assert_eq!(d.call("POST", "/v2/apps", Some(&web(&script, "v1", 2))).status, 201);
    no_deployments(&d);
    let service_port = d.app("/lb/web")["portDefinitions"][0]["port"].as_u64().unwrap();
    assert!((10000..=20000).contains(&service_port), "a service port is assigned: {service_port}");
    let backend = format!("lb_web_{service_port}");

    let lb_dir = dir.path().join("lb");
    std::fs::create_dir_all(&lb_dir).unwrap();
    let mut lb = Sidecar::start(&d.url, &lb_dir);
    let in_step = |lb: &Sidecar, what: &str| {
        wait_for(what, T, || {
            let want = task_addrs(&d, "/lb/web");
            (lb.servers(&backend) == want).then_some(want)
        })
    };
    assert_eq!(in_step(&lb, "HAProxy to route to the two tasks").len(), 2);
    // Both the vhost and the service port route to the app.
    let url = format!("http://127.0.0.1:{}/", lb.http_port);
    let r = ureq::get(&url).set("Host", "shop.example.com").call().unwrap();
    assert_eq!(r.into_string().unwrap().trim(), "v1");
    let by_port = ureq::get(&format!("http://127.0.0.11:{service_port}/")).call().unwrap();
    assert_eq!(by_port.into_string().unwrap().trim(), "v1");
    let unknown = ureq::get(&url).set("Host", "nobody.example.com").call();
    assert!(matches!(unknown, Err(ureq::Error::Status(503, _))), "an unknown vhost gets 503");
    wait_for("the start to be counted", T, || (lb.metric("dromos_lb_reloads_total") > 0).then_some(()));
    assert_eq!(lb.metric("dromos_lb_reloads_total"), 1, "the start is the only load so far");

    let load = Load::start(lb.http_port, "shop.example.com", 4);

    // Scale up: two servers join through the runtime API.
    assert_eq!(d.call("PUT", "/v2/apps/lb/web", Some(&json!({"instances": 4}))).status, 200);
    no_deployments(&d);
    assert_eq!(in_step(&lb, "HAProxy to route to four tasks").len(), 4);

    // A task dies (kill -9): HAProxy retries its requests elsewhere, the sidecar takes
    // it out, and its replacement joins.
    let victim = d.live_sandboxes().first().cloned().expect("a running task");
    // SAFETY: kill(2) on a task process this test started.
    unsafe { libc::kill(victim.2, libc::SIGKILL) };
    wait_for("the task to be replaced", T, || {
        let tasks = d.get("/v2/apps/lb/web/tasks")["tasks"].as_array().cloned().unwrap_or_default();
        let ids: Vec<&str> = tasks.iter().filter_map(|t| t["id"].as_str()).collect();
        (!ids.contains(&victim.0.as_str()) && task_addrs(&d, "/lb/web").len() == 4).then_some(())
    });
    in_step(&lb, "HAProxy to route to the replacement");

    // A rolling upgrade to v2.
    assert_eq!(d.call("PUT", "/v2/apps/lb/web", Some(&web(&script, "v2", 4))).status, 200);
    no_deployments(&d);
    in_step(&lb, "HAProxy to route to the upgraded tasks");
    wait_for("v2 to answer", T, || {
        let r = ureq::get(&url).set("Host", "shop.example.com").call().ok()?;
        (r.into_string().ok()?.trim() == "v2").then_some(())
    });

    // The sidecar crashes; HAProxy keeps serving, and the restarted sidecar adopts it.
    let master = lb.haproxy_master().expect("HAProxy runs");
    let reloads = lb.metric("dromos_lb_reloads_total");
    let (added, parked) =
        (lb.metric("dromos_lb_runtime_ops_total{op=\"add\"}"), lb.metric("dromos_lb_runtime_ops_total{op=\"park\"}"));
    assert_eq!(reloads, 1, "scaling, a lost task and an upgrade need no reload");
    assert!(
        added >= 7 && parked >= 5, // 2 on scale-up, 1 replacement, 4 upgraded; 1 lost, 4 replaced
        "servers went through the runtime API: {added} added, {parked} parked"
    );
    lb.kill9();
    assert_eq!(d.call("PUT", "/v2/apps/lb/web", Some(&json!({"instances": 3}))).status, 200);
    no_deployments(&d);
    lb.spawn();
    assert_eq!(in_step(&lb, "the restarted sidecar to catch up").len(), 3);
    let after = wait_for("HAProxy's master CLI to answer", T, || lb.haproxy_master());
    assert_eq!(after, master, "the running HAProxy was adopted, not replaced");

    let (ok, failures, bodies) = load.finish();
    wait_for("the restarted sidecar's load to be counted", T, || {
        (lb.metric("dromos_lb_reloads_total") > 0).then_some(())
    });
    let reloads_after = lb.metric("dromos_lb_reloads_total");
    println!(
        "load balancer: {ok} requests, {} failed, answers {bodies:?}; reloads: {reloads} (the start) while {added} servers \
         were added and {parked} parked at runtime, then {reloads_after} by the restarted sidecar (loading its config \
         into the adopted HAProxy)",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        ok,
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 100, "the load ran: {ok} requests");
    assert!(bodies.contains_key("v1") && bodies.contains_key("v2"), "{bodies:?}");
    assert!(bodies.keys().all(|b| b == "v1" || b == "v2"), "{bodies:?}");
    assert_eq!(reloads_after, 1);
}

/// The sidecar given every master of an HA cluster: when the leader is killed, HAProxy
/// goes on serving what it has, the sidecar follows the new leader (its event stream
/// through a follower is cut when the leader changes), and a scale-up made through the
/// new leader reaches HAProxy. No request fails meanwhile.
#[test]
fn the_sidecar_follows_a_new_leader() {
    require_haproxy();
    let mut c = crate::ha::cluster(2, 1);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("app.py");
    std::fs::write(&script, APP).unwrap();
    let leader = c.leader(&[]);
    // Its own loopback address (the other tests bind theirs).
    let mut app = web(&script, "v1", 2);
    app["labels"]["HAPROXY_0_BIND_ADDR"] = json!("127.0.0.13");
    assert_eq!(c.write(leader, "POST", "/v2/apps", &app).status, 201);
    no_deployments(&c.masters[leader]);
    let service_port = c.masters[leader].app("/lb/web")["portDefinitions"][0]["port"].as_u64().unwrap();
    let backend = format!("lb_web_{service_port}");
    let urls: Vec<String> = c.masters.iter().map(|m| m.url.clone()).collect();
    let lb = Sidecar::start_with(&urls.join(","), dir.path(), &["--auth-token", crate::ha::TOKEN]);
    let in_step = |through: &Dromos, what: &str| {
        wait_for(what, T, || {
            let want = task_addrs(through, "/lb/web");
            (lb.servers(&backend) == want).then_some(want)
        })
    };
    assert_eq!(in_step(&c.masters[leader], "HAProxy to route to the two tasks").len(), 2);
    let load = Load::start(lb.http_port, "shop.example.com", 2);

    c.masters[leader].kill9();
    let next = c.leader(&[leader]);
    assert_ne!(next, leader);
    assert_eq!(c.write(next, "PUT", "/v2/apps/lb/web", &json!({"instances": 3})).status, 200);
    no_deployments(&c.masters[next]);
    assert_eq!(in_step(&c.masters[next], "HAProxy to route to the third task").len(), 3);

    let (ok, failures, bodies) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {ok} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 10, "the load ran: {ok} requests");
    assert_eq!(bodies.keys().collect::<Vec<_>>(), ["v1"]);
}

#[test]
fn bad_apps_are_left_out_named_and_reported_while_the_rest_is_served() {
    require_haproxy();
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(&dir.path().join("dromos"), &[]);
    let events = EventStream::open(&d.url, "/v2/events?event_type=load_balancer_rejected_app_event", &[SSE]);
    let good = json!({"id": "/good", "instances": 1, "cpus": 0.1, "mem": 32,
        "cmd": "echo good > index.html && exec python3 -m http.server $PORT0 --bind 127.0.0.1",
        "portDefinitions": [{"port": 0}], "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "good.example.com",
                                                 "HAPROXY_0_BIND_ADDR": "127.0.0.12"}});
    // Labels the generator refuses: a vhost with a quote in it.
    let bad_label = json!({"id": "/bad/label", "instances": 0, "cmd": "sleep 1", "portDefinitions": [{"port": 0}],
        "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "evil.example.com\" bind :1"}});
    // Labels that pass the generator's checks but make config HAProxy refuses.
    let bad_config = json!({"id": "/bad/config", "instances": 0, "cmd": "sleep 1", "portDefinitions": [{"port": 0}],
        "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_BIND_ADDR": "127.0.0.12", "HAPROXY_0_MODE": "http",
                   "HAPROXY_0_BACKEND_HTTP_OPTIONS": "  option no-such-option\n"}});
    for app in [&good, &bad_label, &bad_config] {
        assert_eq!(d.call("POST", "/v2/apps", Some(app)).status, 201);
    }
    no_deployments(&d);

    // --once --stdout prints the config (the bad-label app left out, named on stderr).
    let once = Command::new(exe()).args(["haproxy", "--once", "--stdout", "--master", &d.url]).output().unwrap();
    assert!(once.status.success(), "{}", String::from_utf8_lossy(&once.stderr));
    let printed = String::from_utf8_lossy(&once.stdout);
    assert!(printed.starts_with("global\n") && printed.contains("\nbackend good_"), "{printed}");
    assert!(!printed.contains("evil.example.com"), "{printed}");
    assert!(String::from_utf8_lossy(&once.stderr).contains("/bad/label"));

    let lb_dir = dir.path().join("lb");
    std::fs::create_dir_all(&lb_dir).unwrap();
    let lb = Sidecar::start(&d.url, &lb_dir);
    let url = format!("http://127.0.0.1:{}/", lb.http_port);
    wait_for("the good app to be served", T, || {
        let r = ureq::get(&url).set("Host", "good.example.com").call().ok()?;
        (r.into_string().ok()?.trim() == "good").then_some(())
    });
    let mut reported = std::collections::BTreeMap::new();
    while reported.len() < 2 {
        let (_, v) = events.wait("load_balancer_rejected_app_event", T, |_| true);
        assert_eq!(v["loadBalancer"], "lb-test");
        reported.insert(v["appId"].as_str().unwrap().to_string(), v["label"].as_str().unwrap().to_string());
    }
    assert_eq!(reported.get("/bad/label").map(String::as_str), Some("HAPROXY_0_VHOST"), "{reported:?}");
    assert_eq!(reported.get("/bad/config").map(String::as_str), Some("config"), "{reported:?}");
    assert_eq!(lb.metric("dromos_lb_rejected_apps"), 2);
    let config = std::fs::read_to_string(lb_dir.join("haproxy.cfg")).unwrap();
    assert!(config.contains("backend good_") && !config.contains("bad_config_") && !config.contains("bad_label_"));
    assert!(lb_dir.join("haproxy.cfg.lkg").exists(), "the loaded config is kept as last known good");

    // Reports need the one event type and its fields.
    let other = d.call(
        "POST",
        "/v2/events",
        Some(&json!({"eventType": "deployment_success", "loadBalancer": "x",
        "appId": "/a", "label": "l", "message": "m"})),
    );
    assert_eq!(other.status, 422, "{}", other.text);
    assert!(other.text.contains("/eventType"), "{}", other.text);
    let empty = d.call(
        "POST",
        "/v2/events",
        Some(&json!({"eventType": "load_balancer_rejected_app_event",
        "loadBalancer": "", "appId": "/a", "label": "l", "message": "m"})),
    );
    assert_eq!(empty.status, 422, "{}", empty.text);
    assert!(empty.text.contains("/loadBalancer"), "{}", empty.text);
}
