//! The apps API end to end, with real processes.

use crate::support::dromos::Dromos;
use crate::support::{alive, wait_for};
use serde_json::{json, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn wait_running(d: &Dromos, id: &str, n: i64) -> Value {
    wait_for(&format!("{id} to run {n} tasks with no deployment left"), T, || {
        let app = d.app(id);
        (app["tasksRunning"] == n
            && app["tasks"].as_array().unwrap().len() as i64 == n
            && app["deployments"] == json!([]))
        .then_some(app)
    })
}

#[test]
fn python_servers_run_scale_get_replaced_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    let r = d.call(
        "POST",
        "/v2/apps",
        Some(&json!({"id": "/web", "cmd": "python3 -m http.server $PORT0", "instances": 3, "cpus": 0.1, "mem": 64})),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("location"), Some("/v2/apps/web"));
    let dep = r.header("marathon-deployment-id").expect("deployment header").to_string();
    assert_eq!(r.json()["deployments"][0]["id"], dep.as_str());

    let app = wait_running(&d, "/web", 3);
    let service_port = app["portDefinitions"][0]["port"].as_i64().unwrap();
    assert!((10000..=20000).contains(&service_port));
    // Each task really serves HTTP on the port dromos assigned.
    let tasks = d.get("/v2/tasks")["tasks"].as_array().unwrap().clone();
    assert_eq!(tasks.len(), 3);
    for t in &tasks {
        let port = t["ports"][0].as_i64().unwrap();
        assert_eq!(t["servicePorts"], json!([service_port]));
        wait_for("task to answer HTTP", T, || {
            let r = ureq::get(&format!("http://127.0.0.1:{port}/")).call().ok()?;
            (r.status() == 200).then_some(())
        });
    }
    // Marathon's text/plain list: app, service port, then host:port per running task.
    let text = d.raw("GET", "/v2/tasks", &[("Accept", "text/plain")], None).text;
    let line = text.lines().find(|l| l.starts_with("web\t")).expect("a line for /web");
    assert_eq!(line.split('\t').count(), 2 + 3, "{line}");

    // Scale to 5.
    let r = d.call("PUT", "/v2/apps/web", Some(&json!({"instances": 5})));
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json()["deploymentId"].is_string());
    wait_running(&d, "/web", 5);
    assert_eq!(d.get("/v2/apps/web/versions")["versions"].as_array().unwrap().len(), 2);

    // Kill one task's process by hand: dromos notices and replaces it.
    let victims = d.live_sandboxes();
    assert_eq!(victims.len(), 5);
    let (victim_id, _, victim_pid) = victims[0].clone();
    // SAFETY: a signal to the task's process group, which this test started.
    unsafe { libc::kill(-victim_pid, libc::SIGKILL) };
    let app = wait_for("the killed task to be replaced", T, || {
        let app = d.app("/web");
        let ids: Vec<String> =
            app["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_string()).collect();
        (app["tasksRunning"] == 5 && !ids.contains(&victim_id)).then_some(app)
    });
    assert_eq!(app["lastTaskFailure"]["taskId"], victim_id.as_str());
    assert_eq!(app["lastTaskFailure"]["state"], "TASK_FAILED");

    // Delete: every process stops.
    let pids: Vec<i32> = d.live_sandboxes().iter().map(|s| s.2).collect();
    let r = d.call("DELETE", "/v2/apps/web", None);
    assert_eq!(r.status, 200, "{}", r.text);
    wait_for("all task processes to stop", T, || pids.iter().all(|p| !alive(*p)).then_some(()));
    wait_for("no tasks left", T, || (d.get("/v2/tasks")["tasks"] == json!([])).then_some(()));
    assert_eq!(d.call("GET", "/v2/apps/web", None).status, 404);
}

#[test]
fn environment_logs_kill_with_scale_and_bulk_delete() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &["--auth-token", "s3cret"]).with_token("s3cret");
    let app = json!({
        "id": "/tools/envcheck", "cmd": "env; echo to-stderr >&2; exec sleep 1000", "instances": 2, "cpus": 0.01, "mem": 8,
        "labels": {"team": "ops"}, "env": {"GREETING": "hello"}, "portDefinitions": [{"port": 0, "name": "http"}, {"port": 0}]
    });
    assert_eq!(d.call("POST", "/v2/apps", Some(&app)).status, 201);
    let app = wait_running(&d, "/tools/envcheck", 2);
    let task = app["tasks"][0].clone();
    let tid = task["id"].as_str().unwrap();
    let logs_url = format!("/v2/apps/tools/envcheck/tasks/{tid}/logs");
    let out = wait_for("stdout to be written", T, || {
        let r = d.call("GET", &logs_url, None);
        (r.status == 200 && r.text.contains("MESOS_TASK_ID")).then_some(r.text)
    });
    let ports = task["ports"].as_array().unwrap();
    for expect in [
        format!("PORT0={}", ports[0]),
        format!("PORT1={}", ports[1]),
        format!("PORT_HTTP={}", ports[0]),
        format!("PORTS={},{}", ports[0], ports[1]),
        "MARATHON_APP_ID=/tools/envcheck".to_string(),
        format!("MARATHON_APP_VERSION={}", app["version"].as_str().unwrap()),
        format!("MESOS_TASK_ID={tid}"),
        "MARATHON_APP_LABEL_TEAM=ops".to_string(),
        "HOST=127.0.0.1".to_string(),
        "GREETING=hello".to_string(),
    ] {
        assert!(out.lines().any(|l| l == expect), "missing {expect} in:\n{out}");
    }
    assert!(!out.contains("s3cret"), "the API token must not leak into tasks");
    // The task runs on 1% of a core (its CFS quota): stderr may come a moment later.
    let err = wait_for("stderr to be written", T, || {
        let r = d.call("GET", &format!("{logs_url}?stream=stderr"), None);
        (!r.text.is_empty()).then_some(r.text)
    });
    assert_eq!(err, "to-stderr\n");
    let part = d.call("GET", &format!("{logs_url}?stream=stderr&offset=3&length=6"), None);
    assert_eq!((part.text.as_str(), part.header("x-dromos-log-size")), ("stderr", Some("10")));

    // Kill one task and scale down with it.
    let r = d.call("DELETE", &format!("/v2/apps/tools/envcheck/tasks/{tid}?scale=true"), None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.header("marathon-deployment-id").is_some());
    assert_eq!(d.app("/tools/envcheck")["instances"], 1);
    wait_running(&d, "/tools/envcheck", 1);

    // Kill the other through /v2/tasks/delete: it is replaced (no scale).
    let other = d.app("/tools/envcheck")["tasks"][0]["id"].as_str().unwrap().to_string();
    let r = d.call("POST", "/v2/tasks/delete", Some(&json!({"ids": [other]})));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["tasks"][0]["id"], other.as_str());
    wait_for("a replacement", T, || {
        let app = d.app("/tools/envcheck");
        (app["tasksRunning"] == 1 && app["tasks"][0]["id"] != other.as_str()).then_some(())
    });
    assert_eq!(d.call("DELETE", "/v2/apps/tools/envcheck/tasks/nope.x?scale=true", None).status, 404);
    assert_eq!(d.call("DELETE", "/v2/apps/tools/envcheck", None).status, 200);
}

#[test]
fn versions_rollback_restart_and_group_listing() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    let v1 = json!({"id": "/shop/api", "cmd": "exec sleep 1000", "instances": 1, "cpus": 0.01, "mem": 8, "labels": {"tier": "api"}});
    assert_eq!(d.call("POST", "/v2/apps", Some(&v1)).status, 201);
    let first = wait_running(&d, "/shop/api", 1);
    let first_version = first["version"].as_str().unwrap().to_string();
    let first_task = first["tasks"][0]["id"].as_str().unwrap().to_string();

    // A config change replaces the task (new before old).
    let r = d.call("PATCH", "/v2/apps/shop/api", Some(&json!({"cmd": "exec sleep 2000"})));
    assert_eq!(r.status, 200, "{}", r.text);
    let second = wait_for("the upgrade", T, || {
        let app = d.app("/shop/api");
        (app["deployments"] == json!([])
            && app["tasks"].as_array().unwrap().len() == 1
            && app["tasks"][0]["id"] != first_task.as_str())
        .then_some(app)
    });
    assert_eq!(second["cmd"], "exec sleep 2000");
    assert_ne!(second["versionInfo"]["lastConfigChangeAt"], first["versionInfo"]["lastConfigChangeAt"]);

    let versions = d.get("/v2/apps/shop/api/versions")["versions"].as_array().unwrap().clone();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[1], first_version.as_str(), "newest first");
    let old = d.get(&format!("/v2/apps/shop/api/versions/{first_version}"));
    assert_eq!(old["cmd"], "exec sleep 1000");
    assert_eq!(d.call("GET", "/v2/apps/shop/api/versions/2001-01-01T00:00:00.000Z", None).status, 404);

    // Roll back to the first version.
    let r = d.call("PUT", "/v2/apps/shop/api", Some(&json!({"version": first_version})));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(d.app("/shop/api")["cmd"], "exec sleep 1000");

    // Restart: same config, every task replaced.
    let before = wait_running(&d, "/shop/api", 1)["tasks"][0]["id"].clone();
    let r = d.call("POST", "/v2/apps/shop/api/restart", None);
    assert_eq!(r.status, 200, "{}", r.text);
    wait_for("the restart", T, || {
        let app = d.app("/shop/api");
        (app["deployments"] == json!([]) && app["tasksRunning"] == 1 && app["tasks"][0]["id"] != before).then_some(())
    });

    // Listing and filters.
    let other = json!({"id": "/other", "cmd": "exec sleep 1000", "instances": 0, "labels": {"tier": "db"}});
    assert_eq!(d.call("POST", "/v2/apps", Some(&other)).status, 201);
    assert_eq!(d.call("POST", "/v2/apps", Some(&other)).status, 409);
    let ids = |path: &str, key: &str| -> Vec<String> {
        d.get(path)[key].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(ids("/v2/apps", "apps"), vec!["/other", "/shop/api"]);
    assert_eq!(ids("/v2/apps?label=tier==db", "apps"), vec!["/other"]);
    assert_eq!(ids("/v2/apps?id=shop", "apps"), vec!["/shop/api"]);
    assert_eq!(ids("/v2/apps?cmd=SLEEP", "apps").len(), 2);
    assert_eq!(ids("/v2/apps/shop/*", "*"), vec!["/shop/api"]);
    let embedded = d.get("/v2/apps?embed=apps.tasks");
    assert!(embedded["apps"][1]["tasks"].is_array());
    assert!(d.get("/v2/apps")["apps"][1].get("tasks").is_none());

    // PUT creates when missing; partialUpdate=false replaces the whole definition.
    let r =
        d.call("PUT", "/v2/apps/fresh", Some(&json!({"cmd": "exec sleep 1000", "instances": 0, "labels": {"a": "b"}})));
    assert_eq!(r.status, 201, "{}", r.text);
    wait_for("the creation to finish", T, || (d.app("/fresh")["deployments"] == json!([])).then_some(()));
    let r = d.call("PUT", "/v2/apps/fresh?partialUpdate=false", Some(&json!({"cmd": "exec sleep 5", "instances": 0})));
    assert_eq!(r.status, 200);
    assert_eq!(d.app("/fresh")["labels"], json!({}));
    assert_eq!(d.call("PATCH", "/v2/apps/missing", Some(&json!({"instances": 1}))).status, 404);
}

#[test]
fn system_endpoints_and_auth() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "tok-123\n").unwrap();
    let d = Dromos::start(&dir.path().join("data"), &["--auth-token-file", token_file.to_str().unwrap()]);
    assert_eq!(d.call("GET", "/ping", None).text, "pong", "/ping needs no token");
    let r = d.call("GET", "/v2/apps", None);
    assert_eq!(r.status, 401);
    assert!(r.json()["message"].is_string());
    assert_eq!(d.raw("GET", "/v2/apps", &[("Authorization", "Bearer wrong")], None).status, 401);
    assert_eq!(d.raw("GET", "/v2/apps", &[("Authorization", "Bearer tok-123")], None).status, 200);
    // HTTP Basic with the token as password ("marathon:tok-123").
    assert_eq!(d.raw("GET", "/v2/apps", &[("Authorization", "Basic bWFyYXRob246dG9rLTEyMw==")], None).status, 200);

    let d = d.with_token("tok-123");
    let info = d.get("/v2/info");
    assert_eq!(info["name"], "dromos");
    assert_eq!(info["elected"], true);
    let leader = d.get("/v2/leader")["leader"].as_str().unwrap().to_string();
    assert_eq!(format!("http://{leader}"), d.url);
    let r = d.call("GET", "/v2/apps", None);
    assert_eq!(r.header("x-marathon-leader"), Some(d.url.as_str()));
    assert_eq!(r.header("cache-control"), Some("no-cache, no-store, must-revalidate"));
    let metrics = d.call("GET", "/metrics", None);
    assert!(metrics.text.contains("dromos_apps 0"), "{}", metrics.text);
    assert!(metrics.text.contains("dromos_tasks{state=\"TASK_RUNNING\"} 0"));
}

#[test]
fn refuses_a_public_bind_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::support::dromos::exe())
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("DROMOS_AUTH_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--auth-token-file"));
}

/// Reads a task's cgroup limit file, on a v2 or a v1 machine: (memory bytes, cpu quota).
fn cgroup_limits(tid: &str) -> (String, String) {
    let read = |p: String| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}")).trim().to_string();
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let d = format!("/sys/fs/cgroup/dromos/{tid}");
        (read(format!("{d}/memory.max")), read(format!("{d}/cpu.max")))
    } else {
        (
            read(format!("/sys/fs/cgroup/memory/dromos/{tid}/memory.limit_in_bytes")),
            read(format!("/sys/fs/cgroup/cpu/dromos/{tid}/cpu.cfs_quota_us")),
        )
    }
}

#[test]
fn process_tasks_run_in_cgroups_with_their_limits_and_oom_kills_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    let capped =
        json!({"id": "/limits/capped", "cmd": "cat /proc/self/cgroup; exec sleep 1000", "cpus": 0.25, "mem": 48});
    assert_eq!(d.call("POST", "/v2/apps", Some(&capped)).status, 201);
    let app = wait_running(&d, "/limits/capped", 1);
    let tid = app["tasks"][0]["id"].as_str().unwrap().to_string();
    let out = wait_for("the task to print its cgroups", T, || {
        let r = d.call("GET", &format!("/v2/apps/limits/capped/tasks/{tid}/logs"), None);
        (r.status == 200 && r.text.contains("memory")).then_some(r.text)
    });
    // cgroup v1 names the memory hierarchy; v2 has the one unified line.
    let memory_line =
        out.lines().find(|l| l.contains(":memory:")).or_else(|| out.lines().find(|l| l.starts_with("0::"))).unwrap();
    assert!(memory_line.ends_with(&format!("/dromos/{tid}")), "task is not in its cgroup: {out}");
    let (mem, cpu) = cgroup_limits(&tid);
    assert_eq!(mem, (48u64 << 20).to_string());
    assert!(cpu == "25000" || cpu == "25000 100000", "cpu quota {cpu}");

    // Going over the memory limit is an OOM kill, reported as such.
    let hog = json!({"id": "/limits/hog", "cmd": "x=$(head -c 200000000 /dev/zero | tr '\\0' a); exec sleep 1000",
        "cpus": 0.5, "mem": 32});
    assert_eq!(d.call("POST", "/v2/apps", Some(&hog)).status, 201);
    let failure = wait_for("the hog's OOM kill", T, || {
        let f = d.app("/limits/hog")["lastTaskFailure"].clone();
        f.is_object().then_some(f)
    });
    assert_eq!(failure["state"], "TASK_FAILED");
    assert!(failure["message"].as_str().unwrap().contains("OOM-killed"), "{failure}");

    // The cgroup goes with the task.
    assert_eq!(d.call("DELETE", "/v2/apps/limits/capped", None).status, 200);
    let cg = std::path::Path::new("/sys/fs/cgroup/memory/dromos").join(&tid);
    let v2 = std::path::Path::new("/sys/fs/cgroup/dromos").join(&tid);
    wait_for("the task's cgroup to be removed", T, || (!cg.exists() && !v2.exists()).then_some(()));
    assert_eq!(d.call("DELETE", "/v2/apps/limits/hog", None).status, 200);
}

/// A killed task gets SIGTERM first (Marathon's `taskKillGracePeriodSeconds`): a task that
/// traps it cleans up and exits on its own, long before the grace period would end in
/// SIGKILL. (The supervisor once passed its blocked signal mask on to tasks, so SIGTERM
/// never arrived.)
#[test]
fn a_killed_task_gets_sigterm_and_may_exit_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    let app = json!({"id": "/graceful", "instances": 1, "cpus": 0.01, "mem": 8, "taskKillGracePeriodSeconds": 120,
        "cmd": "trap 'echo term > got-term; exit 0' TERM; touch trapping; while :; do sleep 0.1; done"});
    assert_eq!(d.call("POST", "/v2/apps", Some(&app)).status, 201);
    let app = wait_running(&d, "/graceful", 1);
    let task = app["tasks"][0]["id"].as_str().unwrap().to_string();
    let sandbox = d.data_dir.join("agent/sandboxes").join(&task);
    // The shell must have set its trap before the kill (running is reported at spawn).
    wait_for("the trap to be set", T, || sandbox.join("trapping").exists().then_some(()));
    let started = std::time::Instant::now();
    assert_eq!(d.call("DELETE", &format!("/v2/apps/graceful/tasks/{task}?scale=true"), None).status, 200);
    let marker = sandbox.join("got-term");
    wait_for("the task to see SIGTERM", T, || marker.exists().then_some(()));
    wait_for("the task to exit", T, || d.live_sandboxes().is_empty().then_some(()));
    assert!(started.elapsed() < Duration::from_secs(100), "the task ended only at SIGKILL");
}
