//! The HAProxy generator against the real HAProxy (Debian's 2.6): golden files for the
//! kinds of cases marathon-lb's suite covered, each one also checked with `haproxy -c`
//! (no errors, no warnings). `UPDATE_GOLDEN=1` rewrites the files after a deliberate
//! change; review the diff.

use ::dromos::proxy::labels::Selection;
use ::dromos::proxy::model::{from_marathon, LbApp};
use ::dromos::proxy::render::{render, Settings};
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/haproxy")
}

pub fn require_haproxy() {
    let ok = Command::new("haproxy").arg("-v").output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "haproxy is not installed (make test installs Debian's haproxy package)");
}

fn settings(groups: &[&str]) -> Settings {
    Settings {
        selection: Selection { groups: groups.iter().map(|g| g.to_string()).collect(), strict: false },
        http_port: 80,
        https_port: 443,
        ssl_certs: Vec::new(),
        stats_bind: "127.0.0.1:9090".into(),
        socket: "/run/dromos-haproxy/admin.sock".into(),
        state_file: "/var/lib/dromos-haproxy/server-state".into(),
        templates: Default::default(),
    }
}

fn apps(doc: Value) -> Vec<LbApp> {
    let mut resolve = |h: &str| match h {
        "agent1" => Some(Ipv4Addr::new(1, 1, 1, 1)),
        "agent2" => Some(Ipv4Addr::new(1, 1, 1, 2)),
        other => other.parse().ok(),
    };
    from_marathon(&json!({ "apps": doc }), &mut resolve)
}

/// `haproxy -c` on `text` (certificate paths `/CERT` replaced by a real self-signed
/// one, the state file by one that exists): passes with no warning.
fn check_with_haproxy(name: &str, text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    if text.contains("/CERT") {
        let key = dir.path().join("key.pem");
        let st = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(st.status.success());
        let mut pem = std::fs::read(&cert).unwrap();
        pem.extend(std::fs::read(&key).unwrap());
        std::fs::write(&cert, pem).unwrap();
    }
    // The sidecar creates the state file (version line first) before HAProxy starts.
    let state = dir.path().join("server-state");
    std::fs::write(&state, "1\n").unwrap();
    let cfg = dir.path().join("haproxy.cfg");
    let text_here = text
        .replace("/CERT", cert.to_str().unwrap())
        .replace("/var/lib/dromos-haproxy/server-state", state.to_str().unwrap());
    std::fs::write(&cfg, text_here).unwrap();
    let out = Command::new("haproxy").arg("-c").arg("-f").arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{name}: haproxy -c failed:\n{err}\n{text}");
    assert!(!err.contains("[WARNING]") && !err.contains("[ALERT]"), "{name}: haproxy -c warns:\n{err}");
}

fn golden(name: &str, text: &str) {
    let path = golden_dir().join(format!("{name}.cfg"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, text).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert!(want == text, "{name}: the render differs from {}:\n{text}", path.display());
    check_with_haproxy(name, text);
}

fn nginx(labels: Value) -> Value {
    json!({
        "id": "/nginx", "labels": labels, "portDefinitions": [{"port": 10000}],
        "healthChecks": [{"protocol": "HTTP", "path": "/", "portIndex": 0, "intervalSeconds": 2,
                          "timeoutSeconds": 10, "maxConsecutiveFailures": 10}],
        "tasks": [{"host": "agent1", "ports": [1024], "state": "TASK_RUNNING",
                   "healthCheckResults": [{"alive": true}]}]
    })
}

#[test]
fn golden_configs_pass_haproxy_check() {
    require_haproxy();
    let s = settings(&["external"]);
    let ext = json!({"HAPROXY_GROUP": "external"});

    golden("no_apps", &render(&[], &s).text);

    // marathon-lb's vector: /nginx on 10000, agent1 1.1.1.1:1024, HTTP check every 2 s,
    // 10 failures, timeout 10 s.
    let simple = render(&apps(json!([nginx(ext.clone())])), &s);
    assert!(simple.text.contains("  server agent1_1_1_1_1_1024 1.1.1.1:1024 id 28363 check inter 2s fall 11\n"));
    assert!(simple.text.contains("  option  httpchk GET /\n  timeout check 10s\n"));
    golden("simple_app", &simple.text);

    // A COMMAND check on a TCP service: a plain connect check; leastconn.
    let tcp = json!({"id": "/db", "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_BALANCE": "leastconn"},
        "portDefinitions": [{"port": 10001}],
        "healthChecks": [{"protocol": "COMMAND", "command": {"value": "true"}, "intervalSeconds": 5,
                          "maxConsecutiveFailures": 2}],
        "tasks": [{"host": "agent2", "ports": [31002], "state": "TASK_RUNNING", "healthCheckResults": [{"alive": true}]},
                  {"host": "agent1", "ports": [31001], "state": "TASK_RUNNING", "healthCheckResults": [{"alive": true}]}]});
    golden("tcp_command_check", &render(&apps(json!([tcp])), &s).text);

    // Vhosts with paths, weights, redirects, auth, sticky sessions and HSTS.
    let vhosts = json!([
        nginx(json!({"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "shop.example.com,www.shop.example.com",
                     "HAPROXY_0_REDIRECT_TO_HTTPS": "true", "HAPROXY_0_USE_HSTS": "true"})),
        {"id": "/api", "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "shop.example.com",
                                  "HAPROXY_0_PATH": "/api", "HAPROXY_0_BACKEND_WEIGHT": "3", "HAPROXY_0_STICKY": "true"},
         "portDefinitions": [{"port": 10002}],
         "tasks": [{"host": "10.0.0.7", "ports": [31007], "state": "TASK_RUNNING"}]},
        {"id": "/admin", "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "admin.example.com",
                                    "HAPROXY_0_AUTH": "staff:alice:$6$salt$Gk1Pdq0iT3rJbH2S",
                                    "HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL": "10.0.0.0/8 192.168.0.0/16"},
         "portDefinitions": [{"port": 10003}],
         "tasks": [{"host": "agent2", "ports": [31003], "state": "TASK_RUNNING"}]}
    ]);
    let mut https = s.clone();
    https.ssl_certs = vec!["/CERT".into()];
    golden("vhosts_paths_auth_sticky", &render(&apps(vhosts), &https).text);

    // Rewrites, a health check port from another port index, bind options, and a
    // template override by label.
    let rewrites = json!([{
        "id": "/grp/legacy", "labels": {
            "HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "legacy.example.com",
            "HAPROXY_0_HTTP_BACKEND_PROXYPASS_PATH": "/legacy", "HAPROXY_0_HTTP_BACKEND_REVPROXY_PATH": "/legacy",
            "HAPROXY_0_HTTP_BACKEND_REDIR": "/start", "HAPROXY_0_BACKEND_HEALTHCHECK_PORT_INDEX": "1",
            "HAPROXY_0_BIND_ADDR": "127.0.0.1", "HAPROXY_0_BIND_OPTIONS": "maxconn 200",
            "HAPROXY_0_BACKEND_HTTP_OPTIONS": "  option forwardfor\n  timeout server 5s\n",
            "HAPROXY_1_GROUP": "internal"},
        "portDefinitions": [{"port": 10004}, {"port": 10005}],
        "healthChecks": [{"protocol": "HTTP", "path": "/health", "portIndex": 0, "intervalSeconds": 3,
                          "timeoutSeconds": 2, "maxConsecutiveFailures": 2}],
        "tasks": [{"host": "agent1", "ports": [31010, 31011], "state": "TASK_RUNNING",
                   "healthCheckResults": [{"alive": true}]}]}]);
    let out = render(&apps(rewrites), &s);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    golden("rewrites_and_overrides", &out.text);

    // Everything, for a `*` load balancer.
    golden("all_groups", &render(&apps(json!([nginx(json!({}))])), &settings(&["*"])).text);
}

#[test]
fn a_bad_app_is_left_out_and_the_rest_rendered() {
    require_haproxy();
    let s = settings(&["*"]);
    let doc = json!([
        nginx(json!({})),
        {"id": "/evil", "labels": {"HAPROXY_0_VHOST": "x.com\n  use_backend nginx_10000"},
         "portDefinitions": [{"port": 10010}], "tasks": []},
        {"id": "/override", "labels": {"HAPROXY_0_BACKEND_HEAD": "\nbackend {backend}\nlisten evil\n  bind :1\n"},
         "portDefinitions": [{"port": 10011}], "tasks": []},
        {"id": "/same-port", "portDefinitions": [{"port": 10000}], "tasks": []},
        {"id": "/vhost-thief", "labels": {"HAPROXY_0_VHOST": "shop.example.com"}, "portDefinitions": [{"port": 10012}], "tasks": []},
        {"id": "/shop", "labels": {"HAPROXY_0_VHOST": "shop.example.com"}, "portDefinitions": [{"port": 10013}], "tasks": []}
    ]);
    let out = render(&apps(doc), &s);
    let rejected: Vec<(&str, &str)> = out.rejected.iter().map(|e| (e.app_id.as_str(), e.label.as_str())).collect();
    assert_eq!(
        rejected,
        [
            ("/evil", "HAPROXY_0_VHOST"),
            ("/override", "HAPROXY_0_BACKEND_HEAD"),
            ("/same-port", "HAPROXY_0_PORT"),
            ("/vhost-thief", "HAPROXY_0_VHOST"),
        ]
    );
    assert!(!out.text.contains("evil") && !out.text.contains("same-port") && !out.text.contains("vhost-thief"));
    assert!(out.text.contains("backend nginx_10000") && out.text.contains("backend shop_10013"));
    check_with_haproxy("with rejected apps", &out.text);
}

#[test]
fn rendering_is_deterministic_and_servers_are_apart_from_the_skeleton() {
    let s = settings(&["*"]);
    let mut doc = nginx(json!({}));
    let one = render(&apps(json!([doc.clone()])), &s);
    assert_eq!(one.text, render(&apps(json!([doc.clone()])), &s).text);
    doc["tasks"].as_array_mut().unwrap().push(
        json!({"host": "agent2", "ports": [1025], "state": "TASK_RUNNING", "healthCheckResults": [{"alive": true}]}),
    );
    let two = render(&apps(json!([doc])), &s);
    assert_eq!(one.skeleton, two.skeleton, "a new task changes only server lines");
    assert_ne!(one.text, two.text);
    let b = &two.backends["nginx_10000"];
    assert!(b.dynamic);
    assert_eq!(b.servers.len(), 2);
    assert_eq!(b.servers["agent2_1_1_1_2_1025"].addr.to_string(), "1.1.1.2:1025");
}
