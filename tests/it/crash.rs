//! Crash safety: `kill -9` of dromos in the middle of a scale-up loses nothing that was
//! acknowledged, and the restarted dromos adopts the running processes instead of
//! starting them twice.

use crate::support::dromos::Dromos;
use crate::support::wait_for;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// Deploys `n` tiny `sleep` tasks as app `id` and waits until they all run.
fn run_sleepers(d: &Dromos, id: &str, n: u32) {
    let app = json!({"id": id, "cmd": "exec sleep 1000", "instances": n, "cpus": 0.01, "mem": 4});
    assert_eq!(d.call("POST", "/v2/apps", Some(&app)).status, 201);
    wait_for(&format!("{n} running"), T, || (d.app(id)["tasksRunning"] == n).then_some(()));
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
