//! The Docker executor against the real Docker engine: ports, logs into the sandbox, exit
//! codes and OOM kills, stop with a grace period, recovery by label, binds and limits.
//! Every test uses its own agent id and task ids, and removes its containers by label
//! even when it fails. The image is built locally (no registry is reachable).

use crate::support::docker::{self as dk, Cleanup};
use dromos::agent::docker::{DockerError, DockerExecutor, DockerNetwork, DockerPortMapping, DockerTask, DockerVolume};
use dromos::domain::app::DockerParameter;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

/// One test's executor, agent id, sandbox and cleanup guard (the test fails when there
/// is no Docker daemon).
struct Ctx {
    exec: DockerExecutor,
    agent_id: String,
    dir: tempfile::TempDir,
    _cleanup: Cleanup,
}

impl Ctx {
    async fn new() -> Ctx {
        dk::require();
        tokio::task::spawn_blocking(dk::image).await.unwrap();
        let agent_id = format!("it-agent-{}", uuid::Uuid::new_v4());
        let cleanup = Cleanup { agent_id: agent_id.clone() };
        let exec = DockerExecutor::connect().await.expect("connect to the local Docker daemon");
        Ctx { exec, agent_id, dir: tempfile::tempdir().unwrap(), _cleanup: cleanup }
    }

    /// A fresh task id and its sandbox directory.
    fn task(&self, app: &str) -> (String, PathBuf) {
        let task_id = format!("{app}.instance-{}._app.1", uuid::Uuid::new_v4());
        let sandbox = self.dir.path().join(&task_id);
        std::fs::create_dir_all(&sandbox).unwrap();
        (task_id, sandbox)
    }

    async fn launch(&self, task_id: &str, sandbox: &Path, task: &DockerTask) -> String {
        self.exec.launch(&self.agent_id, task_id, "/it/app", sandbox, task).await.expect("launch")
    }
}

fn shell(cmd: &str) -> DockerTask {
    DockerTask { image: dk::IMAGE.into(), cmd: Some(cmd.into()), cpus: 0.5, mem_mb: 32.0, ..Default::default() }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Polls `f` every 50 ms without blocking the runtime, panicking after `timeout`.
async fn eventually<R>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<R>) -> R {
    let start = Instant::now();
    loop {
        if let Some(r) = f() {
            return r;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_httpd_serves_through_the_host_port_and_logs_reach_the_sandbox() {
    let ctx = Ctx::new().await;
    let (task_id, sandbox) = ctx.task("it_http");
    let port = dk::free_port();
    let task = DockerTask {
        network: DockerNetwork::Bridge,
        port_mappings: vec![DockerPortMapping { host_port: port, container_port: 8080, protocol: "tcp".into() }],
        ..shell(
            "mkdir -p /tmp/w && echo hello > /tmp/w/index.html && echo serving on $PORT0 && echo note >&2 \
             && exec httpd -f -p 8080 -h /tmp/w",
        )
    };
    let task = DockerTask { env: [("PORT0".to_string(), port.to_string())].into(), ..task };
    let id = ctx.launch(&task_id, &sandbox, &task).await;

    let body = tokio::task::spawn_blocking(move || {
        let url = format!("http://127.0.0.1:{port}/");
        let start = Instant::now();
        loop {
            let got = ureq::get(&url).timeout(Duration::from_secs(2)).call().ok().and_then(|r| r.into_string().ok());
            if let Some(body) = got {
                return body;
            }
            assert!(start.elapsed() < T, "httpd did not answer on host port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    assert_eq!(body, "hello\n");

    let out = sandbox.join("stdout");
    eventually("stdout in the sandbox", T, || read(&out).contains(&format!("serving on {port}")).then_some(())).await;
    eventually("stderr in the sandbox", T, || (read(&sandbox.join("stderr")) == "note\n").then_some(())).await;

    ctx.exec.stop(&id, Duration::from_secs(2)).await.unwrap();
    let exit = ctx.exec.wait(&id).await.unwrap();
    assert!(!exit.oom_killed);
    assert!(exit.finished_at.is_some());
    // The copier ends with the container, having copied everything exactly once.
    tokio::time::timeout(T, ctx.exec.follow_logs(&id, &sandbox).finished()).await.unwrap();
    assert_eq!(read(&out), format!("serving on {port}\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_log_copy_resumes_after_a_restart_without_duplicates() {
    let ctx = Ctx::new().await;
    let (task_id, sandbox) = ctx.task("it_logs");
    let id = ctx.launch(&task_id, &sandbox, &shell("for i in $(seq 1 20); do echo out$i; echo err$i >&2; done")).await;
    ctx.exec.wait(&id).await.unwrap();
    tokio::time::timeout(T, ctx.exec.follow_logs(&id, &sandbox).finished()).await.unwrap();
    let want_out: String = (1..=20).map(|i| format!("out{i}\n")).collect();
    let want_err: String = (1..=20).map(|i| format!("err{i}\n")).collect();
    assert_eq!(read(&sandbox.join("stdout")), want_out);
    assert_eq!(read(&sandbox.join("stderr")), want_err);

    // A copier that died after writing but before recording: the unrecorded tail is cut
    // and copied again, exactly once.
    let mut partial: serde_json::Value = serde_json::from_str(&read(&sandbox.join("docker-logs.json"))).unwrap();
    let cut = want_out.find("out15").unwrap();
    let out_nanos = timestamp_of_line(&id, "out14");
    partial["stdoutLen"] = serde_json::json!(cut);
    partial["stdoutNanos"] = serde_json::json!(out_nanos);
    std::fs::write(sandbox.join("docker-logs.json"), partial.to_string()).unwrap();
    std::fs::write(sandbox.join("stdout"), format!("{}garbage-after-the-cursor", &want_out[..cut])).unwrap();
    tokio::time::timeout(T, ctx.exec.follow_logs(&id, &sandbox).finished()).await.unwrap();
    assert_eq!(read(&sandbox.join("stdout")), want_out);
    assert_eq!(read(&sandbox.join("stderr")), want_err);

    // Without a cursor (or with files that do not match it) the copy starts afresh.
    std::fs::remove_file(sandbox.join("docker-logs.json")).unwrap();
    tokio::time::timeout(T, ctx.exec.follow_logs(&id, &sandbox).finished()).await.unwrap();
    assert_eq!(read(&sandbox.join("stdout")), want_out);
    assert_eq!(read(&sandbox.join("stderr")), want_err);
}

/// Docker's nanosecond timestamp of the stdout line `line`, from `docker logs -t`.
fn timestamp_of_line(id: &str, line: &str) -> i64 {
    let out = std::process::Command::new("docker").args(["logs", "-t", id]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let ts = text.lines().find(|l| l.ends_with(&format!(" {line}"))).and_then(|l| l.split(' ').next()).unwrap();
    chrono::DateTime::parse_from_rfc3339(ts).unwrap().timestamp_nanos_opt().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_exit_code_is_reported_also_after_the_end() {
    let ctx = Ctx::new().await;
    let (task_id, sandbox) = ctx.task("it_exit");
    let id = ctx.launch(&task_id, &sandbox, &shell("echo bye; exit 3")).await;
    let exit = ctx.exec.wait(&id).await.unwrap();
    assert_eq!(exit.exit_code, Some(3));
    assert!(!exit.oom_killed);
    assert_eq!(exit.error, None);
    assert!(exit.finished_at.is_some());
    // Waiting on a container that has long ended answers at once, the same way.
    assert_eq!(ctx.exec.wait(&id).await.unwrap(), exit);
    assert!(matches!(ctx.exec.wait("dromos-no-such-container").await, Err(DockerError::NoSuchContainer(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_memory_hog_is_oom_killed() {
    let ctx = Ctx::new().await;
    let (task_id, sandbox) = ctx.task("it_oom");
    // The shell keeps the 64 MB command output in memory: far beyond 16 MB. (A whole CPU:
    // throttled, reading that much takes long; `| tail` as the hog thrashes before the kill.)
    let task =
        DockerTask { mem_mb: 16.0, cpus: 1.0, ..shell("x=$(head -c 64000000 /dev/zero | tr '\\0' a); echo survived") };
    let id = ctx.launch(&task_id, &sandbox, &task).await;
    let exit = tokio::time::timeout(T, ctx.exec.wait(&id)).await.unwrap().unwrap();
    assert!(exit.oom_killed, "{exit:?}");
    assert_eq!(exit.exit_code, Some(137));
    assert!(!read(&sandbox.join("stdout")).contains("survived"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_stop_honours_the_grace_period() {
    let ctx = Ctx::new().await;
    let (polite_id, polite_box) = ctx.task("it_stop_polite");
    let (stubborn_id, stubborn_box) = ctx.task("it_stop_stubborn");
    let loop_ = "echo ready; while true; do sleep 0.1; done";
    let polite = ctx.launch(&polite_id, &polite_box, &shell(&format!("trap 'exit 0' TERM; {loop_}"))).await;
    let stubborn = ctx.launch(&stubborn_id, &stubborn_box, &shell(&format!("trap '' TERM; {loop_}"))).await;
    for sandbox in [&polite_box, &stubborn_box] {
        let out = sandbox.join("stdout");
        eventually("the trap to be set", T, || read(&out).contains("ready").then_some(())).await;
    }

    let start = Instant::now();
    ctx.exec.stop(&polite, Duration::from_secs(5)).await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(3), "a task that exits on SIGTERM took {:?}", start.elapsed());
    assert_eq!(ctx.exec.wait(&polite).await.unwrap().exit_code, Some(0));

    let start = Instant::now();
    ctx.exec.stop(&stubborn, Duration::from_secs(1)).await.unwrap();
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(6), "stop took {took:?}");
    assert_eq!(ctx.exec.wait(&stubborn).await.unwrap().exit_code, Some(137), "SIGKILL after the grace");

    // Idempotent: stopping a stopped or unknown container is fine.
    ctx.exec.stop(&stubborn, Duration::from_secs(1)).await.unwrap();
    ctx.exec.stop("dromos-no-such-container", Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_recovery_lists_by_agent_and_relaunch_reuses_the_container() {
    let ctx = Ctx::new().await;
    let (task_id, sandbox) = ctx.task("it_recover");
    let task = shell("echo once; exec sleep 300");
    let id = ctx.launch(&task_id, &sandbox, &task).await;

    // An agent restart: a fresh executor finds the container by its agent label.
    let fresh = DockerExecutor::connect().await.unwrap();
    let found = fresh.list(&ctx.agent_id).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].task_id, task_id);
    assert_eq!(found[0].container_id, id);
    assert!(found[0].running);
    assert!(fresh.list("it-agent-nobody").await.unwrap().is_empty());

    // Launching the same task again reuses the container.
    let again = fresh.launch(&ctx.agent_id, &task_id, "/it/app", &sandbox, &task).await.unwrap();
    assert_eq!(again, id);
    assert_eq!(dk::count(&ctx.agent_id), 1);
    eventually("stdout", T, || read(&sandbox.join("stdout")).contains("once").then_some(())).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read(&sandbox.join("stdout")), "once\n", "the output is copied once");

    // Another agent's launch of a task with that name does not take the container over.
    let other = fresh.launch("it-agent-other", &task_id, "/it/app", &sandbox, &task).await;
    assert!(matches!(other, Err(DockerError::NameConflict { .. })), "{other:?}");

    fresh.stop(&id, Duration::ZERO).await.unwrap();
    // A repeated launch of a task that has ended does not run it a second time.
    assert_eq!(fresh.launch(&ctx.agent_id, &task_id, "/it/app", &sandbox, &task).await.unwrap(), id);
    let found = fresh.list(&ctx.agent_id).await.unwrap();
    assert!(!found[0].running);
    fresh.remove(&id).await.unwrap();
    fresh.remove(&id).await.unwrap();
    assert!(fresh.list(&ctx.agent_id).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_read_only_bind_and_resource_limits() {
    let ctx = Ctx::new().await;
    let (task_id, sandbox) = ctx.task("it_bind");
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("greeting.txt"), "from the host\n").unwrap();
    let task = DockerTask {
        volumes: vec![DockerVolume {
            container_path: "/data".into(),
            host_path: host.path().to_string_lossy().into_owned(),
            read_only: true,
        }],
        cpus: 0.25,
        mem_mb: 48.0,
        parameters: vec![DockerParameter { key: "label".into(), value: "team=it".into() }],
        ..shell("cat /data/greeting.txt; if touch /data/new 2>/dev/null; then echo writable; else echo read-only; fi")
    };
    let id = ctx.launch(&task_id, &sandbox, &task).await;
    assert_eq!(ctx.exec.wait(&id).await.unwrap().exit_code, Some(0));
    tokio::time::timeout(T, ctx.exec.follow_logs(&id, &sandbox).finished()).await.unwrap();
    assert_eq!(read(&sandbox.join("stdout")), "from the host\nread-only\n");
    assert!(!host.path().join("new").exists());

    assert_eq!(dk::inspect(&id, "{{.HostConfig.NanoCpus}}"), "250000000");
    assert_eq!(dk::inspect(&id, "{{.HostConfig.Memory}}"), (48u64 << 20).to_string());
    assert_eq!(dk::inspect(&id, "{{.HostConfig.MemorySwap}}"), (48u64 << 20).to_string());
    assert_eq!(dk::inspect(&id, "{{index .Config.Labels \"team\"}}"), "it");
    assert_eq!(dk::inspect(&id, "{{index .Config.Labels \"dromos.task-id\"}}"), task_id);
    assert_eq!(dk::inspect(&id, "{{.Name}}"), format!("/dromos-{task_id}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_refuses_absent_images_and_unsafe_specs() {
    let ctx = Ctx::new().await;
    let (task_id, sandbox) = ctx.task("it_refuse");
    let absent = DockerTask { image: "dromos-absent-image:1".into(), ..shell("true") };
    let err = ctx.exec.launch(&ctx.agent_id, &task_id, "/it/app", &sandbox, &absent).await.unwrap_err();
    assert!(matches!(err, DockerError::ImageUnavailable { .. }), "{err}");
    assert!(err.to_string().contains("dromos-absent-image:1"), "{err}");

    let socket = DockerTask {
        volumes: vec![DockerVolume {
            container_path: "/s".into(),
            host_path: "/var/run/docker.sock".into(),
            read_only: true,
        }],
        ..shell("true")
    };
    let cap_add = DockerTask {
        parameters: vec![DockerParameter { key: "cap-add".into(), value: "ALL".into() }],
        ..shell("true")
    };
    for bad in [socket, cap_add] {
        let err = ctx.exec.launch(&ctx.agent_id, &task_id, "/it/app", &sandbox, &bad).await.unwrap_err();
        assert!(matches!(err, DockerError::InvalidTask(_)), "{err}");
    }
    // A symlink to a directory holding the socket is refused too.
    let link = ctx.dir.path().join("run-link");
    std::os::unix::fs::symlink("/run", &link).unwrap();
    let via_link = DockerTask {
        volumes: vec![DockerVolume {
            container_path: "/r".into(),
            host_path: link.to_string_lossy().into_owned(),
            read_only: true,
        }],
        ..shell("true")
    };
    let err = ctx.exec.launch(&ctx.agent_id, &task_id, "/it/app", &sandbox, &via_link).await.unwrap_err();
    assert!(matches!(err, DockerError::InvalidTask(_)), "{err}");
    assert_eq!(dk::count(&ctx.agent_id), 0);
}

/// The whole path through dromos: a Docker app POSTed to the API runs as a container on
/// the embedded agent, is reachable through its assigned host port, shows its output in
/// the task logs, survives `kill -9` of dromos (adopted, not relaunched), reports a
/// failing container's exit, and is stopped and removed when the app is deleted.
#[test]
fn docker_apps_run_through_the_api_and_are_adopted_after_a_crash() {
    use crate::support::dromos::Dromos;
    use crate::support::wait_for;
    use serde_json::json;
    dk::require();
    let image = dk::image();
    let dir = tempfile::tempdir().unwrap();
    let mut d = Dromos::start(dir.path(), &[]);
    let agents = d.get("/v1/agents");
    let agent_id = agents["agents"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(agents["agents"][0]["containerizers"], json!(["process", "docker"]));
    let _cleanup = Cleanup { agent_id: agent_id.clone() };
    let t = Duration::from_secs(60);

    let app = json!({
        "id": "/dweb", "instances": 1, "cpus": 0.2, "mem": 32,
        "cmd": "echo serving; echo hello-from-docker > /tmp/index.html && exec httpd -f -p 8080 -h /tmp",
        "container": {"type": "DOCKER", "docker": {"image": image},
                      "portMappings": [{"containerPort": 8080, "hostPort": 0}]},
        "networks": [{"mode": "container/bridge"}]
    });
    let r = d.call("POST", "/v2/apps", Some(&app));
    assert_eq!(r.status, 201, "{}", r.text);
    let task = wait_for("the container to run", t, || {
        let tasks = d.get("/v2/apps/dweb/tasks")["tasks"].as_array().cloned().unwrap_or_default();
        tasks.into_iter().find(|t| t["state"] == "TASK_RUNNING")
    });
    let port = task["ports"][0].as_u64().unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    let body = wait_for("the container to answer on its host port", t, || {
        ureq::get(&url).call().ok().and_then(|r| r.into_string().ok())
    });
    assert_eq!(body.trim(), "hello-from-docker");
    let task_id = task["id"].as_str().unwrap().to_string();
    let name = format!("dromos-{task_id}");
    assert_eq!(dk::inspect(&name, "{{.HostConfig.NanoCpus}}"), "200000000");
    let logs_path = format!("/v2/apps/dweb/tasks/{task_id}/logs?stream=stdout");
    wait_for("stdout in the task logs", t, || d.call("GET", &logs_path, None).text.contains("serving").then_some(()));
    let container_id = dk::inspect(&name, "{{.Id}}");

    // Crash dromos: the container keeps running and is adopted, not started again.
    d.restart();
    wait_for("the same task running after restart", t, || {
        let tasks = d.get("/v2/apps/dweb/tasks")["tasks"].as_array().cloned().unwrap_or_default();
        (tasks.len() == 1 && tasks[0]["id"] == task_id.as_str() && tasks[0]["state"] == "TASK_RUNNING").then_some(())
    });
    assert_eq!(dk::inspect(&name, "{{.Id}}"), container_id);
    assert_eq!(dk::inspect(&name, "{{.RestartCount}}"), "0");
    assert_eq!(dk::count(&agent_id), 1);

    // Privileged containers need --allow-privileged; bad parameters are named by path.
    let mut privileged = app.clone();
    privileged["id"] = json!("/priv");
    privileged["container"]["docker"]["privileged"] = json!(true);
    let r = d.call("POST", "/v2/apps", Some(&privileged));
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("/container/docker/privileged"), "{}", r.text);
    let mut bad = app.clone();
    bad["id"] = json!("/bad");
    bad["container"]["docker"]["parameters"] = json!([{"key": "cap-add", "value": "SYS_ADMIN"}]);
    let r = d.call("POST", "/v2/apps", Some(&bad));
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("/container/docker/parameters/0"), "{}", r.text);

    // A failing container reports its exit status as the app's last task failure.
    let failing = json!({"id": "/dfail", "cmd": "exit 3", "cpus": 0.1, "mem": 16,
        "container": {"type": "DOCKER", "docker": {"image": image}}});
    assert_eq!(d.call("POST", "/v2/apps", Some(&failing)).status, 201);
    let failure = wait_for("the failure to be recorded", t, || {
        let f = d.app("/dfail")["lastTaskFailure"].clone();
        (!f.is_null()).then_some(f)
    });
    assert_eq!(failure["state"], "TASK_FAILED");
    assert!(failure["message"].as_str().unwrap().contains("status 3"), "{failure}");
    assert_eq!(d.call("DELETE", "/v2/apps/dfail", None).status, 200);

    // Wipe the agent's directory while dromos is down (reliability case 5): the agent
    // comes back under a new id, stops the container it can no longer vouch for, and
    // the task is replaced by a new one.
    d.kill9();
    std::fs::remove_dir_all(dir.path().join("agent")).unwrap();
    d.restart();
    let new_agent = wait_for("the new agent alone", t, || {
        let agents = d.get("/v1/agents")["agents"].as_array().cloned().unwrap_or_default();
        (agents.len() == 1 && agents[0]["id"] != agent_id.as_str())
            .then(|| agents[0]["id"].as_str().unwrap().to_string())
    });
    let _cleanup_new = Cleanup { agent_id: new_agent.clone() };
    assert_eq!(dk::count(&agent_id), 0, "the old container is stopped and removed");
    let replacement = wait_for("a new container to run", t, || {
        let tasks = d.get("/v2/apps/dweb/tasks")["tasks"].as_array().cloned().unwrap_or_default();
        tasks.into_iter().find(|t| t["state"] == "TASK_RUNNING" && t["id"] != task_id.as_str())
    });
    assert_eq!(replacement["slaveId"], new_agent.as_str());
    assert_eq!(d.app("/dweb")["lastTaskFailure"]["state"], "TASK_GONE");
    assert_eq!(dk::count(&new_agent), 1);

    // Deleting the app stops the container; once acknowledged, it is removed.
    assert_eq!(d.call("DELETE", "/v2/apps/dweb", None).status, 200);
    wait_for("no containers left", t, || (dk::count(&new_agent) == 0).then_some(()));
}

/// Reliability case 6: dockerd restarts under a running Docker app. The agent does not
/// crash; the container's end is reported as TASK_FAILED with the reason; the agent
/// carries on with the restarted daemon and the app's task is replaced there.
#[test]
fn a_dockerd_restart_fails_running_containers_with_a_reason_and_the_agent_carries_on() {
    use crate::support::dromos::Dromos;
    use crate::support::wait_for;
    use serde_json::json;
    let mut daemon = dk::PrivateDockerd::start();
    let host = daemon.host();
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start_with_env(dir.path(), &[], &[("DOCKER_HOST", &host)]);
    let t = Duration::from_secs(60);
    let app = json!({"id": "/dd", "cmd": "exec sleep 1000", "cpus": 0.1, "mem": 16,
        "container": {"type": "DOCKER", "docker": {"image": dk::IMAGE}}});
    let r = d.call("POST", "/v2/apps", Some(&app));
    assert_eq!(r.status, 201, "{}", r.text);
    let running = |d: &Dromos| -> Option<String> {
        let tasks = d.get("/v2/apps/dd/tasks")["tasks"].as_array().cloned().unwrap_or_default();
        tasks.iter().find(|t| t["state"] == "TASK_RUNNING").map(|t| t["id"].as_str().unwrap().to_string())
    };
    let first = wait_for("the container to run", t, || running(&d));

    daemon.restart();
    let failure = wait_for("the container's end to be reported", t, || {
        let f = d.app("/dd")["lastTaskFailure"].clone();
        (f["taskId"] == first.as_str()).then_some(f)
    });
    assert_eq!(failure["state"], "TASK_FAILED");
    let message = failure["message"].as_str().unwrap();
    assert!(message.starts_with("Container exited with status"), "{message}");
    let second = wait_for("a new container on the restarted daemon", t, || running(&d).filter(|id| *id != first));
    let name = format!("dromos-{second}");
    let out =
        Command::new("docker").args(["-H", &host, "inspect", "-f", "{{.State.Running}}", &name]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "true");
    assert_eq!(d.call("DELETE", "/v2/apps/dd", None).status, 200);
}

/// Reliability case 3 for containers: dromos crashes after the container started but
/// before its agent reported TASK_RUNNING. The restarted agent finds the container by its
/// labels and adopts it: the same task and container, none started again.
#[test]
fn a_crash_after_a_container_started_but_before_it_was_reported_adopts_it() {
    use crate::support::dromos::Dromos;
    use crate::support::wait_for;
    use serde_json::json;
    dk::require();
    let image = dk::image();
    let dir = tempfile::tempdir().unwrap();
    let mut d = Dromos::start_with_env(dir.path(), &[], &[("DROMOS_FAILPOINT", "agent-after-start")]);
    let agent_id = d.get("/v1/agents")["agents"][0]["id"].as_str().unwrap().to_string();
    let _cleanup = Cleanup { agent_id: agent_id.clone() };
    let app = json!({"id": "/dstart", "cmd": "exec sleep 1000", "cpus": 0.1, "mem": 16,
        "container": {"type": "DOCKER", "docker": {"image": image}}});
    let _ = ureq::post(&format!("{}/v2/apps", d.url)).send_json(&app); // may race the crash
    d.wait_crash();
    let filter = format!("label=dromos.agent-id={agent_id}");
    let ps = Command::new("docker").args(["ps", "-q", "--no-trunc", "--filter", &filter]).output().unwrap();
    let running: Vec<String> = String::from_utf8_lossy(&ps.stdout).split_whitespace().map(String::from).collect();
    assert_eq!(running.len(), 1, "the container runs on without dromos");

    d.set_env(&[]);
    d.restart();
    let t = Duration::from_secs(60);
    let task = wait_for("the container adopted as running", t, || {
        let app = d.app("/dstart");
        (app["tasksRunning"] == 1).then(|| app["tasks"][0]["id"].as_str().unwrap().to_string())
    });
    let name = format!("dromos-{task}");
    assert_eq!(dk::inspect(&name, "{{.Id}}"), running[0], "the same container");
    assert_eq!(dk::count(&agent_id), 1, "none started again");
    assert_eq!(d.call("DELETE", "/v2/apps/dstart", None).status, 200);
    wait_for("no containers left", t, || (dk::count(&agent_id) == 0).then_some(()));
}

/// A job whose runs are containers: the container sees Chronos's environment, a run that
/// exits 0 counts as a success, one that exits 4 fails with that exit code (no retries).
#[test]
fn job_runs_in_docker_containers() {
    use crate::support::dromos::Dromos;
    use crate::support::wait_for;
    use serde_json::json;
    dk::require();
    let image = dk::image();
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    let agent_id = d.get("/v1/agents")["agents"][0]["id"].as_str().unwrap().to_string();
    let _cleanup = Cleanup { agent_id: agent_id.clone() };
    let t = Duration::from_secs(60);
    let job = |name: &str, command: &str| {
        json!({"name": name, "command": command, "schedule": "R1//PT1H", "retries": 0, "mem": 32,
               "container": {"type": "DOCKER", "image": image, "network": "HOST"}})
    };
    let ok = job("boxed", "test \"$CHRONOS_JOB_NAME\" = boxed && test -n \"$MESOS_TASK_ID\"");
    let r = d.call("POST", "/scheduler/iso8601", Some(&ok));
    assert_eq!(r.status, 204, "{}", r.text);
    let r = d.call("POST", "/scheduler/iso8601", Some(&job("boxed-fail", "exit 4")));
    assert_eq!(r.status, 204, "{}", r.text);
    let stat = |name: &str| d.get(&format!("/scheduler/job/stat/{name}"))["taskStatHistory"][0].clone();
    wait_for("the container job to succeed", t, || (stat("boxed")["status"] == "success").then_some(()));
    let failed = wait_for("the failing container job", t, || {
        let s = stat("boxed-fail");
        (s["status"] == "failure").then_some(s)
    });
    assert_eq!(failed["exitCode"], 4, "{failed}");
    assert!(failed["message"].as_str().unwrap().contains("Container exited with status 4"), "{failed}");
    let r = d.call(
        "POST",
        "/scheduler/iso8601",
        Some(&json!({"name": "boxed-vol", "command": "true",
        "container": {"type": "DOCKER", "image": image, "volumes": [{"containerPath": "/x", "hostPath": "/"}]}})),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("/container/volumes"), "{}", r.text);
}
