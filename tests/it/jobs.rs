//! Jobs end to end through the Chronos API: real processes run each due time, write to a
//! file the test reads, and the API shows their history; dependencies, retries, run now
//! with arguments, the graph, bad input, and exactly-once runs across `kill -9`.

use crate::support::dromos::Dromos;
use crate::support::wait_for;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// Lines the jobs appended to `file`.
fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file).unwrap_or_default().lines().map(str::to_string).collect()
}

fn job(d: &Dromos, name: &str) -> Value {
    let r = d.call("GET", &format!("/scheduler/job/{name}"), None);
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()
}

fn post(d: &Dromos, path: &str, body: &Value) {
    let r = d.call("POST", path, Some(body));
    assert_eq!(r.status, 204, "{path}: {}", r.text);
}

/// `(attempt, status, exitCode)` of a job's runs, newest first.
fn history(d: &Dromos, name: &str) -> Vec<(u64, String, Option<i64>)> {
    let stat = d.get(&format!("/scheduler/job/stat/{name}"));
    stat["taskStatHistory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["attempt"].as_u64().unwrap(), h["status"].as_str().unwrap().to_string(), h["exitCode"].as_i64()))
        .collect()
}

#[test]
fn scheduled_and_dependent_jobs_run_with_history_retries_and_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    let out = dir.path().join("out");
    let o = out.display();

    // Three runs, two seconds apart, starting now; `report` runs after each success.
    post(
        &d,
        "/scheduler/iso8601",
        &json!({"name": "backup", "command": format!("echo backup >> {o}"),
        "schedule": "R3//PT2S", "owner": "ops@example.com", "cpus": "0.1", "mem": 32}),
    );
    post(
        &d,
        "/v1/scheduler/dependency",
        &json!({"name": "report", "command": format!("echo report >> {o}"),
        "parents": ["backup"], "mem": 32}),
    );
    wait_for("three backups, each followed by its report", T, || {
        let l = lines(&out);
        (l.len() == 6 && job(&d, "report")["successCount"] == 3).then_some(())
    });
    let l = lines(&out);
    for pair in l.chunks(2) {
        assert_eq!(pair, ["backup", "report"], "{l:?}");
    }
    let backup = job(&d, "backup");
    assert_eq!(backup["successCount"], 3);
    assert_eq!(backup["errorCount"], 0);
    assert!(backup["lastSuccess"].as_str().unwrap().ends_with('Z'));
    assert!(backup["schedule"].as_str().unwrap().starts_with("R0/"), "{backup}");
    assert_eq!(backup["nextRunAt"], Value::Null);
    assert_eq!(backup["owner"], "ops@example.com");
    assert_eq!(job(&d, "report")["parents"], json!(["backup"]));
    let h = history(&d, "backup");
    assert_eq!(h.len(), 3);
    assert!(h.iter().all(|(a, s, e)| *a == 0 && s == "success" && *e == Some(0)), "{h:?}");
    let stat = d.get("/scheduler/job/stat/backup");
    assert_eq!(stat["histogram"]["count"], 3);
    assert!(stat["taskStatHistory"][0]["taskId"].as_str().unwrap().starts_with("ct:"));

    // Run now, with arguments appended to the command (Chronos).
    // The arguments become the positional parameters of the inner shell.
    post(
        &d,
        "/scheduler/iso8601",
        &json!({"name": "echo", "command": format!("sh -c 'echo \"$@\" >> {o}.args' x"),
        "schedule": "R/2030-01-01T00:00:00Z/P1D", "scheduleTimeZone": "Europe/Berlin"}),
    );
    // The zone replaces the start's offset and keeps its wall clock: midnight in Berlin.
    assert_eq!(job(&d, "echo")["nextRunAt"], "2029-12-31T23:00:00.000Z");
    let r = d.call("PUT", "/scheduler/job/echo?arguments=--full%20--fast", None);
    assert_eq!(r.status, 204, "{}", r.text);
    let args = wait_for("the manual run", T, || std::fs::read_to_string(format!("{o}.args")).ok());
    assert_eq!(args, "--full --fast\n");

    // A failing job: one retry, then counted as an error; exit codes in the history.
    post(
        &d,
        "/scheduler/iso8601",
        &json!({"name": "flaky", "command": "exit 3",
        "schedule": "R1//PT1H", "retries": 1, "retryDelaySeconds": 0}),
    );
    wait_for("the failed job", T, || (job(&d, "flaky")["errorCount"] == 1).then_some(()));
    assert_eq!(history(&d, "flaky"), vec![(1, "failure".into(), Some(3)), (0, "failure".into(), Some(3))]);
    let flaky = job(&d, "flaky");
    assert_eq!((flaky["successCount"].as_u64(), flaky["errorsSinceLastSuccess"].as_u64()), (Some(0), Some(1)));
    assert_ne!(flaky["lastError"], "");

    // The graph and the search.
    let csv = d.call("GET", "/scheduler/graph/csv", None).text;
    assert!(csv.contains("node,backup,success,idle") && csv.contains("node,flaky,failure,idle"), "{csv}");
    assert!(csv.contains("link,backup,report"), "{csv}");
    let dot = d.call("GET", "/scheduler/graph/dot", None).text;
    assert!(dot.starts_with("digraph") && dot.contains("label = \"report\""), "{dot}");
    let found = d.get("/scheduler/jobs/search?name=BACK");
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(d.get("/scheduler/jobs/search?command=echo&limit=1").as_array().unwrap().len(), 1);
    assert_eq!(d.get("/scheduler/jobs").as_array().unwrap().len(), 4);
    assert!(d.get("/scheduler/leader")["leader"].is_string());

    // Deleting a parent keeps its child, which takes over the parent's schedule.
    let r = d.call("DELETE", "/scheduler/job/backup", None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["children"][0]["name"], "report");
    assert!(r.json()["children"][0]["now"].as_str().unwrap().contains("schedule of 'backup'"), "{}", r.text);
    let report = job(&d, "report");
    assert!(report["schedule"].as_str().unwrap().starts_with("R0/"), "{report}");
    assert_eq!(report["command"], format!("echo report >> {o}"), "the child keeps its fields");
    assert_eq!(d.call("GET", "/scheduler/job/backup", None).status, 404);
}

#[test]
fn bad_jobs_get_errors_that_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    let bad = |body: Value, path: &str| {
        let r = d.call("POST", "/scheduler/iso8601", Some(&body));
        assert_eq!(r.status, 422, "{body}: {}", r.text);
        assert!(r.text.contains(path), "{body} should name {path}: {}", r.text);
    };
    bad(json!({"name": "a b", "command": "x"}), "/name");
    bad(json!({"name": "x", "command": "x", "schedule": "R/nope/P1D"}), "/schedule");
    bad(json!({"name": "x", "command": "x", "cron": "0 0 31 2 *"}), "/cron");
    bad(json!({"name": "x", "command": "x", "cron": "* * *"}), "/cron");
    bad(json!({"name": "x", "command": "x", "scheduleTimeZone": "PST"}), "/scheduleTimeZone");
    bad(json!({"name": "x", "command": "x", "cpus": -1}), "/cpus");
    bad(json!({"name": "x", "command": "x", "retries": "many"}), "/retries");
    bad(json!({"name": "x", "command": "x", "concurrencyPolicy": "SOMETIMES"}), "/concurrencyPolicy");
    bad(json!({"name": "x", "command": "x", "constraints": [["rack", "NEAR", "x"]]}), "/constraints/0");
    bad(json!({"name": "x", "command": "x", "colour": "red"}), "/colour");
    bad(json!({"name": "x"}), "/command");
    bad(json!({"name": "x", "command": "x", "uris": ["http://a/b"], "fetch": [{"uri": "http://a/c"}]}), "/fetch");
    // Kept fields come back, `uris` filling `fetch` as in Chronos.
    post(
        &d,
        "/scheduler/iso8601",
        &json!({"name": "fetcher", "command": "true", "uris": ["http://a/b.tgz"],
        "schedule": "R/2030-01-01T00:00:00Z/P1D", "executor": ""}),
    );
    let f = job(&d, "fetcher");
    assert_eq!(f["uris"], json!(["http://a/b.tgz"]));
    assert_eq!(f["fetch"][0]["uri"], "http://a/b.tgz");
    // What a GET gives can be sent back.
    post(&d, "/scheduler/iso8601", &f);
    let r = d.call(
        "POST",
        "/scheduler/dependency",
        Some(&json!({"name": "orphan", "command": "x", "parents": ["nobody"]})),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("/parents/0") && r.text.contains("nobody"), "{}", r.text);
    let r = d.call("POST", "/scheduler/dependency", Some(&json!({"name": "lonely", "command": "x"})));
    assert_eq!(r.status, 422, "{}", r.text);

    // A cycle: a -> b -> a.
    post(&d, "/scheduler/iso8601", &json!({"name": "a", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/P1D"}));
    post(&d, "/scheduler/dependency", &json!({"name": "b", "command": "true", "parents": ["a"]}));
    let r = d.call("POST", "/scheduler/dependency", Some(&json!({"name": "a", "command": "true", "parents": ["b"]})));
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("cycle"), "{}", r.text);
    // Nothing of it was stored: a is still scheduled.
    assert!(job(&d, "a")["schedule"].is_string());
    assert_eq!(d.call("PUT", "/scheduler/job/nobody", None).status, 404);
    assert_eq!(d.call("DELETE", "/scheduler/job/nobody", None).status, 404);
    let r = d.call("POST", "/scheduler/iso8601", Some(&json!("not an object")));
    assert_eq!(r.status, 422, "{}", r.text);
}

/// Reliability case 25 (on one master): dromos killed with `kill -9` around the instant
/// jobs are due, again and again, runs every due time exactly once: each run appends its
/// due time, and every due time in the schedule appears once, none twice.
#[test]
fn kill_9_around_due_times_runs_each_due_time_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Dromos::start(dir.path(), &[]);
    let out = dir.path().join("runs");
    // A run every second for 8 s, each appending the due time Chronos passes it; epsilon
    // is long enough that a restart never drops a due time.
    post(
        &d,
        "/scheduler/iso8601",
        &json!({"name": "tick", "command": format!("echo $CHRONOS_JOB_RUN_TIME >> {}", out.display()),
        "schedule": "R8//PT1S", "epsilon": "PT60S", "concurrent": true, "mem": 16}),
    );
    let schedule_end = std::time::Instant::now() + Duration::from_secs(9);
    let mut kills = 0;
    while std::time::Instant::now() < schedule_end {
        std::thread::sleep(Duration::from_millis(700));
        d.kill9();
        kills += 1;
        d.restart();
    }
    wait_for("all eight runs", T, || (job(&d, "tick")["successCount"] == 8).then_some(()));
    std::thread::sleep(Duration::from_secs(2));
    let mut seen = lines(&out);
    let total = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!((total, seen.len()), (8, 8), "each due time once, none twice, after {kills} kills: {:?}", lines(&out));
    assert_eq!(job(&d, "tick")["successCount"], 8);
}

/// A whole second `secs` seconds from now, as a schedule start and as dromos shows a
/// time `later` seconds after it.
fn from_now(secs: i64, later: i64) -> (String, String) {
    let t = chrono::Utc::now() + chrono::Duration::seconds(secs);
    let shown = t + chrono::Duration::seconds(later);
    (t.format("%Y-%m-%dT%H:%M:%SZ").to_string(), shown.format("%Y-%m-%dT%H:%M:%S.000Z").to_string())
}

/// Reliability case 24: dromos down across due times. Back within a job's epsilon, the
/// latest missed due time runs once; beyond it, it is recorded as missed and not run;
/// five missed due times lead to one run, not five.
#[test]
fn after_downtime_at_most_one_catch_up_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Dromos::start(dir.path(), &[]);
    let out = |n: &str| dir.path().join(n);
    let append = |n: &str| format!("echo $CHRONOS_JOB_RUN_TIME >> {}", out(n).display());
    // Due 5 s from now; dromos is down from right after the jobs are stored until 16 s.
    let (start, storm_last) = from_now(5, 4);
    post(
        &d,
        "/scheduler/iso8601",
        &json!({"name": "catchup", "command": append("catchup"),
        "schedule": format!("R1/{start}/PT1H"), "epsilon": "PT60S"}),
    );
    post(
        &d,
        "/scheduler/iso8601",
        &json!({"name": "late", "command": append("late"),
        "schedule": format!("R1/{start}/PT1H"), "epsilon": "PT1S"}),
    );
    post(
        &d,
        "/scheduler/iso8601",
        &json!({"name": "storm", "command": append("storm"),
        "schedule": format!("R5/{start}/PT1S"), "epsilon": "PT60S"}),
    );
    d.kill9();
    std::thread::sleep(Duration::from_secs(16));
    d.restart();
    wait_for("the catch-up runs", T, || {
        (job(&d, "catchup")["successCount"] == 1 && job(&d, "storm")["successCount"] == 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lines(&out("catchup")).len(), 1);
    assert_eq!(lines(&out("storm")).len(), 1, "one run for five missed due times");
    assert_eq!(lines(&out("storm")), [storm_last], "the latest due time ran");
    assert_eq!(job(&d, "storm")["missedCount"], 4);
    assert!(lines(&out("late")).is_empty(), "beyond epsilon: not run");
    assert_eq!(job(&d, "late")["missedCount"], 1);
    assert_eq!(job(&d, "late")["successCount"], 0);
}

/// Reliability case 26: a FORBID job whose run outlives a `kill -9` of dromos: the run is
/// adopted, the due times during it are skipped, and no second run ever overlaps it.
#[test]
fn forbid_holds_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Dromos::start(dir.path(), &[]);
    let log = dir.path().join("log");
    let l = log.display();
    post(
        &d,
        "/scheduler/iso8601",
        &json!({"name": "long", "concurrencyPolicy": "FORBID",
        "command": format!("echo start >> {l}; sleep 4; echo end >> {l}"), "schedule": "R3//PT1S"}),
    );
    wait_for("the first run to start", T, || (!lines(&log).is_empty()).then_some(()));
    d.kill9();
    d.restart();
    wait_for("the run to end", T, || (job(&d, "long")["successCount"] == 1).then_some(()));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lines(&log), ["start", "end"], "one run, never two at once");
    assert_eq!(job(&d, "long")["skippedCount"], 2);
}

/// Metronome's API on the same jobs: create with a schedule (201, Location), read back in
/// Metronome's form, start a run (201) and see it finish in the history, manage the one
/// schedule, bad documents with Metronome's paths, and the Chronos view of the same job.
#[test]
fn metronome_jobs_map_onto_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    let out = dir.path().join("m");
    let body = json!({
        "id": "prod.report", "description": "nightly", "labels": {"team": "data"},
        "run": {"cmd": format!("echo $GREETING >> {}", out.display()), "cpus": 0.1, "mem": 32, "disk": 0,
                "env": {"GREETING": "hello"}, "restart": {"policy": "NEVER"}},
        "schedules": [{"id": "nightly", "cron": "0 3 * * *", "timezone": "Europe/Berlin",
                       "startingDeadlineSeconds": 120, "concurrencyPolicy": "FORBID", "enabled": true}]
    });
    let r = d.call("POST", "/v1/jobs", Some(&body));
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("location"), Some("/v1/jobs/prod.report"));
    assert_eq!(d.call("POST", "/v1/jobs", Some(&body)).status, 409);
    let report = d.get("/v1/jobs/prod.report");
    assert_eq!(report["labels"]["team"], "data");
    assert_eq!(report["run"]["env"]["GREETING"], "hello");
    let s = &report["schedules"][0];
    assert_eq!(
        (s["id"].as_str(), s["cron"].as_str(), s["timezone"].as_str()),
        (Some("nightly"), Some("0 3 * * *"), Some("Europe/Berlin"))
    );
    assert_eq!(s["startingDeadlineSeconds"], 120);
    assert!(s["nextRunAt"].as_str().unwrap().ends_with(":00:00.000Z"), "{s}");

    // A run now: 201 with the run, then it shows in the history.
    let r = d.call("POST", "/v1/jobs/prod.report/runs", None);
    assert_eq!(r.status, 201, "{}", r.text);
    let run_id = r.json()["id"].as_str().unwrap().to_string();
    wait_for("the run to finish", T, || {
        let j = d.get("/v1/jobs/prod.report?embed=history");
        (j["history"]["successCount"] == 1).then_some(())
    });
    assert_eq!(lines(&out), ["hello"]);
    assert_eq!(d.get(&format!("/v1/jobs/prod.report/runs/{run_id}"))["status"], "SUCCESS");
    assert_eq!(d.get("/v1/jobs/prod.report/runs"), json!([]), "only active runs are listed");
    let h = d.get("/v1/jobs/prod.report?embed=history")["history"].clone();
    assert_eq!(h["successfulFinishedRuns"][0]["id"], run_id.as_str());

    // The one schedule: a second is refused; replace it; remove it.
    assert_eq!(
        d.call("POST", "/v1/jobs/prod.report/schedules", Some(&json!({"id": "x", "cron": "* * * * *"}))).status,
        409
    );
    let r = d.call(
        "PUT",
        "/v1/jobs/prod.report/schedules/nightly",
        Some(&json!({"cron": "30 4 * * 1-5", "timezone": "UTC"})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(d.get("/v1/jobs/prod.report/schedules/nightly")["cron"], "30 4 * * 1-5");
    assert_eq!(d.call("DELETE", "/v1/jobs/prod.report/schedules/nightly", None).status, 200);
    assert_eq!(d.get("/v1/jobs/prod.report/schedules"), json!([]));

    // The Chronos API sees the same job.
    let chronos = d.get("/scheduler/job/prod.report");
    assert_eq!(chronos["environmentVariables"][0]["name"], "GREETING");
    assert_eq!(chronos["successCount"], 1);

    // Bad documents name Metronome's fields.
    let bad = |body: Value, path: &str| {
        let r = d.call("POST", "/v1/jobs", Some(&body));
        assert_eq!(r.status, 422, "{body}: {}", r.text);
        assert!(r.text.contains(path), "{body} should name {path}: {}", r.text);
    };
    bad(json!({"id": "x", "run": {"cmd": "true", "cpus": -1}}), "/run/cpus");
    bad(
        json!({"id": "x", "run": {"cmd": "true"}, "schedules": [{"id": "s", "cron": "61 * * * *"}]}),
        "/schedules/0/cron",
    );
    bad(
        json!({"id": "x", "run": {"cmd": "true"}, "schedules": [{"id": "s", "cron": "* * * * *", "timezone": "Moon/Base"}]}),
        "/schedules/0/timezone",
    );
    bad(json!({"id": "x", "run": {"cmd": "true", "secrets": {"a": {"source": "b"}}}}), "/run/secrets");
    bad(json!({"id": "bad id", "run": {"cmd": "true"}}), "/id");

    // Dependencies are parents; a schedule set through Metronome keeps the fields only
    // Chronos shows.
    let child = json!({"id": "prod.child", "run": {"cmd": "true"}, "dependencies": [{"id": "prod.report"}]});
    assert_eq!(d.call("POST", "/v1/jobs", Some(&child)).status, 201);
    assert_eq!(d.get("/scheduler/job/prod.child")["parents"], json!(["prod.report"]));
    post(
        &d,
        "/scheduler/iso8601",
        &json!({"name": "chronos-made", "command": "true", "retryDelaySeconds": 7,
        "softError": true, "schedule": "R/2030-01-01T00:00:00Z/P1D"}),
    );
    let r = d.call("PUT", "/v1/jobs/chronos-made/schedules/default", Some(&json!({"cron": "0 5 * * *"})));
    assert_eq!(r.status, 200, "{}", r.text);
    let kept = job(&d, "chronos-made");
    assert_eq!(
        (kept["cron"].as_str(), kept["retryDelaySeconds"].as_u64(), kept["softError"].as_bool()),
        (Some("0 5 * * *"), Some(7), Some(true))
    );

    // A job with an active run is not deleted unless its runs may be stopped.
    let slow = json!({"id": "prod.slow", "run": {"cmd": "exec sleep 300", "cpus": 0.1, "mem": 16}});
    assert_eq!(d.call("POST", "/v1/jobs", Some(&slow)).status, 201);
    assert_eq!(d.call("POST", "/v1/jobs/prod.slow/runs", None).status, 201);
    wait_for("the slow run to be active", T, || {
        (d.get("/v1/jobs/prod.slow/runs")[0]["status"] == "ACTIVE").then_some(())
    });
    assert_eq!(d.call("DELETE", "/v1/jobs/prod.slow", None).status, 409);
    assert_eq!(d.call("DELETE", "/v1/jobs/prod.slow?stopCurrentJobRuns=true", None).status, 200);
    wait_for("the slow run's process to end", T, || d.live_sandboxes().is_empty().then_some(()));

    assert_eq!(d.call("DELETE", "/v1/jobs/prod.report", None).status, 200);
    assert_eq!(d.call("GET", "/v1/jobs/prod.report", None).status, 404);
}

/// `maxCompletionTime` really kills: a run of `sleep 300` with a 1 s limit ends "timed
/// out" (a failure), and its process is gone.
#[test]
fn a_run_past_its_max_completion_time_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    post(
        &d,
        "/scheduler/iso8601",
        &json!({"name": "stuck", "command": "exec sleep 300",
        "schedule": "R1//PT1H", "maxCompletionTime": 1, "retries": 0}),
    );
    let run = wait_for("the run to time out", T, || {
        let h = d.get("/scheduler/job/stat/stuck")["taskStatHistory"][0].clone();
        (h["status"] == "timed out").then_some(h)
    });
    assert!(run["message"].as_str().unwrap().contains("maxCompletionTime"), "{run}");
    assert!(run["duration"].as_f64().unwrap() >= 1.0, "{run}");
    assert_eq!(job(&d, "stuck")["errorCount"], 1);
    wait_for("no process left", T, || d.live_sandboxes().is_empty().then_some(()));
}
