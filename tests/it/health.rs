//! Health checks end to end: real HTTP servers as tasks, checked by the agent that runs
//! them; a task whose checks fail too often in a row is killed and replaced.
//!
//! Each task serves its own sandbox (`python3 -m http.server`), so the test makes a task
//! healthy or not by creating or removing the file its check asks for.

use crate::support::dromos::Dromos;
use crate::support::sse::{EventStream, SSE};
use crate::support::wait_for;
use serde_json::{json, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// A python server app checked over HTTP on `/ok`; `healthy`: it creates that file at
/// start (a version that does not stays unhealthy). `tag` makes versions differ.
fn upgradable(id: &str, instances: u32, healthy: bool, tag: &str, strategy: &Value) -> Value {
    let serve = "exec python3 -m http.server $PORT0 --bind $HOST";
    let cmd = if healthy { format!("touch ok; {serve}") } else { serve.to_string() };
    json!({
        "id": id, "instances": instances, "cpus": 0.1, "mem": 64, "cmd": cmd, "env": {"TAG": tag},
        "upgradeStrategy": strategy,
        "healthChecks": [{"protocol": "HTTP", "path": "/ok", "gracePeriodSeconds": 0, "intervalSeconds": 1,
                          "timeoutSeconds": 1, "maxConsecutiveFailures": 0}]
    })
}

fn first_task(d: &Dromos, app: &str) -> Value {
    d.app(app)["tasks"][0].clone()
}

#[test]
fn http_checks_mark_tasks_healthy_and_unhealthy_and_failing_tasks_are_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    let app = json!({
        "id": "/hc/web", "instances": 1, "cpus": 0.1, "mem": 64,
        "cmd": "touch ok; exec python3 -m http.server $PORT0 --bind $HOST",
        "healthChecks": [{"protocol": "HTTP", "path": "/ok", "portIndex": 0, "gracePeriodSeconds": 30,
                          "intervalSeconds": 1, "timeoutSeconds": 1, "maxConsecutiveFailures": 3}]
    });
    assert_eq!(d.call("POST", "/v2/apps", Some(&app)).status, 201);
    let task = wait_for("a healthy task", T, || {
        let a = d.app("/hc/web");
        (a["tasksHealthy"] == 1).then(|| a["tasks"][0].clone())
    });
    let tid = task["id"].as_str().unwrap().to_string();
    let result = &task["healthCheckResults"][0];
    assert_eq!(result["alive"], true);
    assert_eq!(result["consecutiveFailures"], 0);
    assert!(result["firstSuccess"].is_string() && result["lastSuccess"].is_string());
    assert!(tid.starts_with(result["instanceId"].as_str().unwrap()));

    // The endpoint starts failing (404): unhealthy, then killed after three failures in
    // a row and replaced by a new, healthy task.
    std::fs::remove_file(d.data_dir.join("agent/sandboxes").join(&tid).join("ok")).unwrap();
    let bad = wait_for("the task to turn unhealthy", T, || {
        let a = d.app("/hc/web");
        (a["tasksUnhealthy"] == 1).then(|| a["tasks"][0]["healthCheckResults"][0].clone())
    });
    assert_eq!(bad["alive"], false);
    assert_eq!(bad["lastFailureCause"], "HTTP status 404");
    let replacement = wait_for("a healthy replacement", T, || {
        let a = d.app("/hc/web");
        let t = a["tasks"][0].clone();
        (a["tasksHealthy"] == 1 && t["id"] != tid.as_str()).then_some(t)
    });
    assert_ne!(replacement["id"], tid.as_str());
    let failure = d.app("/hc/web")["lastTaskFailure"].clone();
    assert_eq!(failure["taskId"], tid.as_str(), "{failure} {}", d.get("/v2/apps/hc/web/tasks"));
    assert!(failure["message"].as_str().unwrap().contains("3 consecutive failed health checks"), "{failure}");
}

#[test]
fn tcp_and_command_checks_and_checks_that_point_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    let app = json!({
        "id": "/hc/mixed", "instances": 1, "cpus": 0.1, "mem": 64,
        "cmd": "touch ready; exec python3 -m http.server $PORT0 --bind $HOST",
        "healthChecks": [
            {"protocol": "TCP", "portIndex": 0, "intervalSeconds": 1, "timeoutSeconds": 1},
            {"protocol": "COMMAND", "command": {"value": "test -f ready && test -n \"$MESOS_TASK_ID\""},
             "intervalSeconds": 1, "timeoutSeconds": 2, "delaySeconds": 0}
        ]
    });
    assert_eq!(d.call("POST", "/v2/apps", Some(&app)).status, 201);
    wait_for("both checks alive", T, || (d.app("/hc/mixed")["tasksHealthy"] == 1).then_some(()));
    let results = first_task(&d, "/hc/mixed")["healthCheckResults"].as_array().unwrap().clone();
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|r| r["alive"] == true), "{results:?}");

    // A check may not point anywhere but at the task itself.
    let elsewhere = json!({"id": "/hc/elsewhere", "cmd": "x", "healthChecks": [{"protocol": "HTTP", "port": 22}]});
    let r = d.call("POST", "/v2/apps", Some(&elsewhere));
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("/healthChecks/0/port"), "{}", r.text);
    let in_container = json!({"id": "/hc/box", "cmd": "x", "container": {"type": "DOCKER", "docker": {"image": "busybox"}},
        "healthChecks": [{"protocol": "COMMAND", "command": {"value": "true"}}]});
    assert!(d.call("POST", "/v2/apps", Some(&in_container)).text.contains("/healthChecks/0/protocol"));

    // maxConsecutiveFailures 0 on an HTTP check: unhealthy, but never killed, however
    // many failures in a row.
    let failing = json!({
        "id": "/hc/failing", "instances": 1, "cpus": 0.1, "mem": 64,
        "cmd": "exec python3 -m http.server $PORT0 --bind $HOST",
        "healthChecks": [{"protocol": "HTTP", "path": "/missing", "gracePeriodSeconds": 0, "intervalSeconds": 1,
                          "maxConsecutiveFailures": 0}]
    });
    assert_eq!(d.call("POST", "/v2/apps", Some(&failing)).status, 201);
    let id = wait_for("the task to turn unhealthy", T, || {
        let a = d.app("/hc/failing");
        (a["tasksUnhealthy"] == 1).then(|| a["tasks"][0]["id"].clone())
    });
    wait_for("more than three failures in a row", T, || {
        let t = first_task(&d, "/hc/failing");
        (t["healthCheckResults"][0]["consecutiveFailures"].as_u64() > Some(3)).then_some(())
    });
    assert_eq!(first_task(&d, "/hc/failing")["id"], id);
    assert!(d.app("/hc/failing")["lastTaskFailure"].is_null());
}

/// A rolling upgrade (`upgradeStrategy` 1 / 0: one extra task at a time) waits for each
/// new task to pass its health check before an old one goes; a new version whose checks
/// fail stalls with every old task still serving; a fixed version then finishes it.
#[test]
fn rolling_upgrades_wait_for_healthy_new_tasks_and_stall_on_broken_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    let strategy = json!({"minimumHealthCapacity": 1.0, "maximumOverCapacity": 0.0});
    let version = |touch: bool, tag: &str| upgradable("/roll", 3, touch, tag, &strategy);
    let tasks = |d: &Dromos| d.get("/v2/apps/roll/tasks")["tasks"].as_array().unwrap().clone();
    assert_eq!(d.call("POST", "/v2/apps", Some(&version(true, "v1"))).status, 201);
    wait_for("three healthy tasks, deployed", T, || {
        let app = d.app("/roll");
        (app["tasksHealthy"] == 3 && app["deployments"] == json!([])).then_some(())
    });
    let v1: Vec<String> = tasks(&d).iter().map(|t| t["id"].as_str().unwrap().to_string()).collect();

    // A broken version: one new task starts and fails its check; no old task goes.
    assert_eq!(d.call("PUT", "/v2/apps/roll", Some(&version(false, "v2"))).status, 200);
    wait_for("the new task to fail its check twice", T, || {
        tasks(&d)
            .iter()
            .find(|t| !v1.contains(&t["id"].as_str().unwrap().to_string()))
            .filter(|t| t["healthCheckResults"][0]["consecutiveFailures"].as_u64() >= Some(2))
            .map(|_| ())
    });
    let now: Vec<String> = tasks(&d).iter().map(|t| t["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(now.len(), 4, "one extra task at most: {now:?}");
    assert!(v1.iter().all(|id| now.contains(id)), "every old task still serves");
    assert_eq!(d.app("/roll")["tasksHealthy"], 3);
    let deployments = d.get("/v2/deployments");
    assert_eq!(deployments.as_array().unwrap().len(), 1, "{deployments}");
    let dep = &deployments[0];
    assert_eq!(dep["affectedApps"], json!(["/roll"]));
    assert_eq!(dep["currentActions"][0]["action"], "RestartApplication");
    assert_eq!((dep["currentStep"].as_u64(), dep["totalSteps"].as_u64()), (Some(1), Some(1)));

    // The stalled deployment locks the app. Cancelling it rolls back: the new task goes,
    // the old tasks are the app's current tasks again (not replaced).
    assert_eq!(d.call("PUT", "/v2/apps/roll", Some(&version(true, "v3"))).status, 409);
    assert_eq!(d.call("DELETE", "/v2/deployments/nope", None).status, 404);
    let r = d.call("DELETE", &format!("/v2/deployments/{}", dep["id"].as_str().unwrap()), None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json()["deploymentId"].is_string());
    wait_for("the rollback to finish", T, || {
        let mut ids: Vec<String> = tasks(&d).iter().map(|t| t["id"].as_str().unwrap().to_string()).collect();
        ids.sort();
        let mut old = v1.clone();
        old.sort();
        (ids == old && d.get("/v2/deployments") == json!([])).then_some(())
    });
    assert_eq!(d.app("/roll")["env"]["TAG"], "v1");

    // A fixed version replaces everything, never below three healthy tasks.
    assert_eq!(d.call("PUT", "/v2/apps/roll", Some(&version(true, "v3"))).status, 200);
    wait_for("three healthy v3 tasks and nothing else", T, || {
        let app = d.app("/roll");
        assert!(app["tasksHealthy"].as_u64() >= Some(2), "healthy capacity dropped: {app}");
        let ts = tasks(&d);
        (ts.len() == 3
            && app["tasksHealthy"] == 3
            && ts.iter().all(|t| !v1.contains(&t["id"].as_str().unwrap().to_string())))
        .then_some(())
    });
}

/// A readiness check gates a deployment: the new task runs and is healthy, but the old
/// one stays and the deployment waits (showing the check's answers) until the new task
/// answers ready.
#[test]
fn readiness_checks_gate_deployments() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    let version = |cmd: &str, tag: &str| {
        json!({
            "id": "/ready", "instances": 1, "cpus": 0.1, "mem": 64, "cmd": cmd, "env": {"TAG": tag},
            "portDefinitions": [{"port": 0, "name": "http-api"}],
            "upgradeStrategy": {"minimumHealthCapacity": 1.0, "maximumOverCapacity": 0.0},
            "readinessChecks": [{"path": "/ready", "portName": "http-api", "intervalSeconds": 1, "timeoutSeconds": 0}]
        })
    };
    let serve = "exec python3 -m http.server $PORT0 --bind $HOST";
    let r = d.call("POST", "/v2/apps", Some(&version(&format!("touch ready; {serve}"), "v1")));
    assert_eq!(r.status, 201, "{}", r.text);
    let old = wait_for("the first task, ready and deployed", T, || {
        let app = d.app("/ready");
        (app["tasksRunning"] == 1 && app["deployments"] == json!([])).then(|| app["tasks"][0]["id"].clone())
    });

    assert_eq!(d.call("PUT", "/v2/apps/ready", Some(&version(serve, "v2"))).status, 200);
    let (new, result) = wait_for("the new task's readiness answer", T, || {
        let deps = d.get("/v2/deployments");
        let results = deps[0]["currentActions"][0]["readinessCheckResults"].clone();
        (results[0]["lastResponse"]["status"] == 404).then(|| (results[0]["taskId"].clone(), results[0].clone()))
    });
    assert_eq!(result["ready"], false);
    assert_eq!(result["name"], "readinessCheck");
    let ids: Vec<Value> = d.app("/ready")["tasks"].as_array().unwrap().iter().map(|t| t["id"].clone()).collect();
    assert!(ids.contains(&old) && ids.contains(&new), "the old task serves while the new one is not ready: {ids:?}");
    let embedded = d.get("/v2/apps/ready?embed=app.readiness");
    assert_eq!(embedded["app"]["readinessCheckResults"][0]["taskId"], new);

    std::fs::write(d.data_dir.join("agent/sandboxes").join(new.as_str().unwrap()).join("ready"), b"").unwrap();
    wait_for("the upgrade to finish with only the new task", T, || {
        let app = d.app("/ready");
        (app["deployments"] == json!([]) && app["tasks"].as_array().unwrap().len() == 1 && app["tasks"][0]["id"] == new)
            .then_some(())
    });
}

/// dromos's progress deadline: an upgrade whose new task never turns healthy fails
/// after `progressDeadlineSeconds` without progress and, with `rollbackOnFailure`, rolls
/// back on its own, keeping the very same old task; the app says why.
#[test]
fn a_stuck_deployment_fails_at_its_deadline_and_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    let strategy = json!({"minimumHealthCapacity": 1.0, "maximumOverCapacity": 0.0,
                          "progressDeadlineSeconds": 3, "rollbackOnFailure": true});
    let version = |touch: bool, tag: &str| upgradable("/deadline", 1, touch, tag, &strategy);
    // The first version has no deadline: a slow machine must not fail its creation.
    let first =
        upgradable("/deadline", 1, true, "v1", &json!({"minimumHealthCapacity": 1.0, "maximumOverCapacity": 0.0}));
    assert_eq!(d.call("POST", "/v2/apps", Some(&first)).status, 201);
    let old = wait_for("a healthy first task, deployed", T, || {
        let app = d.app("/deadline");
        (app["tasksHealthy"] == 1 && app["deployments"] == json!([])).then(|| app["tasks"][0]["id"].clone())
    });

    let r = d.call("PUT", "/v2/apps/deadline", Some(&version(false, "v2")));
    assert_eq!(r.status, 200, "{}", r.text);
    let failed_id = r.json()["deploymentId"].clone();
    let dep = wait_for("the stuck step to say why", T, || {
        let deps = d.get("/v2/deployments");
        let dep = deps.as_array().unwrap().iter().find(|x| x["id"] == failed_id).cloned()?;
        dep["currentActions"][0]["reason"].as_str()?.contains("not healthy: HTTP status 404").then_some(dep)
    });
    assert_eq!(dep["progressDeadlineSeconds"], 3);
    assert_eq!(dep["rollbackOnFailure"], true);
    assert!(dep["currentActions"][0]["reason"].as_str().unwrap().contains("0 of 1 new instance(s)"), "{dep}");

    let failure = wait_for("the deployment to fail", T, || {
        let f = d.app("/deadline")["lastDeploymentFailure"].clone();
        (!f.is_null()).then_some(f)
    });
    assert_eq!(failure["id"], failed_id);
    assert_eq!(failure["rolledBack"], true);
    assert!(failure["reason"].as_str().unwrap().starts_with("no progress for 3 s"), "{failure}");
    wait_for("the rollback to finish on the old task", T, || {
        let app = d.app("/deadline");
        let tasks = app["tasks"].as_array().unwrap().clone();
        (app["deployments"] == json!([]) && tasks.len() == 1 && tasks[0]["id"] == old).then_some(())
    });
    assert_eq!(d.app("/deadline")["env"]["TAG"], "v1");
}

/// Reliability case 28: a task whose HTTP endpoint accepts connections and never answers.
/// Each probe fails at its timeout (the cause says so); after two in a row the task is
/// killed and replaced, again and again, and no task is left behind: at most the
/// replacement and the task being killed exist at any look, and deleting the app stops
/// every process.
#[test]
fn a_hanging_health_endpoint_fails_at_the_timeout_and_leaks_no_task() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    let hang = "import os, socket, time; s = socket.socket(); \
                s.bind((os.environ['HOST'], int(os.environ['PORT0']))); s.listen(64); time.sleep(3600)";
    let app = json!({
        "id": "/hc/hang", "instances": 1, "cpus": 0.1, "mem": 64,
        "cmd": format!("exec python3 -c \"{hang}\""),
        "healthChecks": [{"protocol": "HTTP", "path": "/", "gracePeriodSeconds": 0, "intervalSeconds": 1,
                          "timeoutSeconds": 1, "maxConsecutiveFailures": 2}]
    });
    // Every failed probe is an event, however briefly its task lives.
    let events = EventStream::open(&d.url, "/v2/events?event_type=failed_health_check_event", &[SSE]);
    assert_eq!(d.call("POST", "/v2/apps", Some(&app)).status, 201, "{app}");
    // (Until python listens, a probe may be refused instead.)
    let (_, first) = events.wait("failed_health_check_event", T, |v| v["cause"] == "no answer within 1000 ms");
    let first_id = first["taskId"].as_str().unwrap().to_string();

    // Replaced twice over (the replacements hang too), never more than two tasks at once.
    let mut seen = std::collections::BTreeSet::new();
    wait_for("two replacements of hanging tasks", Duration::from_secs(90), || {
        let live = d.live_sandboxes();
        assert!(live.len() <= 2, "tasks leak: {live:?}");
        let tasks = d.get("/v2/apps/hc/hang/tasks")["tasks"].as_array().unwrap().clone();
        assert!(tasks.len() <= 2, "more tasks than the replacement and the one being killed: {tasks:?}");
        seen.extend(tasks.iter().map(|t| t["id"].as_str().unwrap().to_string()));
        (seen.len() >= 3).then_some(())
    });
    assert!(d.live_sandboxes().iter().all(|(id, _, _)| *id != first_id), "the first task still runs");
    let failure = d.app("/hc/hang")["lastTaskFailure"].clone();
    assert!(failure["message"].as_str().unwrap().contains("2 consecutive failed health checks"), "{failure}");

    // Its first deployment still waits for a healthy task, so deleting needs force.
    assert_eq!(d.call("DELETE", "/v2/apps/hc/hang", None).status, 409);
    assert_eq!(d.call("DELETE", "/v2/apps/hc/hang?force=true", None).status, 200);
    wait_for("every process of the app to end", T, || d.live_sandboxes().is_empty().then_some(()));
}

/// Reliability case 29 (a master restart standing in for a leader failover): check
/// history is lost, so the grace period starts again and nothing is killed for failures
/// the new checker sees before a first success. Three healthy tasks whose endpoints all
/// fail while dromos is down (one failure kills, here) are still the same three tasks
/// after the restart, and turn healthy when their endpoints answer again.
#[test]
fn a_restart_applies_the_grace_period_again_instead_of_killing() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Dromos::start(dir.path(), &[]);
    let app = json!({
        "id": "/hc/failover", "instances": 3, "cpus": 0.1, "mem": 64,
        "cmd": "touch ok; exec python3 -m http.server $PORT0 --bind $HOST",
        "healthChecks": [{"protocol": "HTTP", "path": "/ok", "gracePeriodSeconds": 300, "intervalSeconds": 1,
                          "timeoutSeconds": 1, "maxConsecutiveFailures": 1}]
    });
    let r = d.call("POST", "/v2/apps", Some(&app));
    assert_eq!(r.status, 201, "{}", r.text);
    wait_for("three healthy tasks", T, || (d.app("/hc/failover")["tasksHealthy"] == 3).then_some(()));
    let ids = |d: &Dromos| {
        let mut v: Vec<String> = d.get("/v2/apps/hc/failover/tasks")["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let before = ids(&d);

    d.kill9();
    let sandboxes = d.data_dir.join("agent/sandboxes");
    for t in &before {
        std::fs::remove_file(sandboxes.join(t).join("ok")).unwrap();
    }
    d.restart();
    // Several probe intervals of 404s: with the old history (first success long ago,
    // grace over) each would have killed its task at once.
    wait_for("the tasks to be adopted", T, || (ids(&d) == before).then_some(()));
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(ids(&d), before, "a task was killed or replaced after the restart");
    assert!(d.app("/hc/failover")["lastTaskFailure"].is_null(), "{}", d.app("/hc/failover"));

    for t in &before {
        std::fs::write(sandboxes.join(t).join("ok"), b"").unwrap();
    }
    wait_for("the same three tasks healthy again", T, || (d.app("/hc/failover")["tasksHealthy"] == 3).then_some(()));
    assert_eq!(ids(&d), before);
}

/// HTTPS health and readiness checks against a task that serves TLS with a self-signed
/// certificate (not verified, as in Marathon): the task turns healthy and ready, so its
/// deployment finishes; a plain-HTTP server behind an HTTPS check fails its handshake.
#[test]
fn https_checks_talk_tls_to_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    let serve_tls = "import http.server, os, ssl; \
        s = http.server.HTTPServer((os.environ['HOST'], int(os.environ['PORT0'])), http.server.SimpleHTTPRequestHandler); \
        c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain('cert.pem', 'key.pem'); \
        s.socket = c.wrap_socket(s.socket, server_side=True); s.serve_forever()";
    let cmd = format!(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout key.pem -out cert.pem \
         -days 1 -subj /CN=task 2>/dev/null && touch ok && exec python3 -c \"{serve_tls}\""
    );
    let checks = |id: &str, cmd: &str| {
        json!({
            "id": id, "instances": 1, "cpus": 0.1, "mem": 64, "cmd": cmd,
            "portDefinitions": [{"port": 0, "name": "https"}],
            "healthChecks": [{"protocol": "HTTPS", "path": "/ok", "gracePeriodSeconds": 0, "intervalSeconds": 1,
                              "timeoutSeconds": 2, "maxConsecutiveFailures": 0}],
            "readinessChecks": [{"name": "tls", "protocol": "HTTPS", "path": "/ok", "portName": "https",
                                 "intervalSeconds": 2, "timeoutSeconds": 1}]
        })
    };
    let r = d.call("POST", "/v2/apps", Some(&checks("/hc/tls", &cmd)));
    assert_eq!(r.status, 201, "{}", r.text);
    wait_for("a healthy, ready task and the deployment done", T, || {
        let a = d.app("/hc/tls");
        (a["tasksHealthy"] == 1 && a["deployments"] == json!([])).then_some(())
    });
    let result = &first_task(&d, "/hc/tls")["healthCheckResults"][0];
    assert_eq!(result["alive"], true, "{result}");

    let plain = "touch ok; exec python3 -m http.server $PORT0 --bind $HOST";
    assert_eq!(d.call("POST", "/v2/apps", Some(&checks("/hc/plain", plain))).status, 201);
    let failed = wait_for("the plain server to fail its HTTPS check", T, || {
        let t = first_task(&d, "/hc/plain");
        let cause = t["healthCheckResults"][0]["lastFailureCause"].as_str()?.to_string();
        cause.starts_with("TLS handshake").then_some(cause)
    });
    assert!(failed.contains("failed"), "{failed}");
}
