//! `/v2/events` end to end: Marathon's event types from real deployments, tasks and
//! health checks; filters and the Accept rule; replay with `Last-Event-ID`; a resync
//! when the replay is gone; a subscriber that falls behind is cut off with an error.

use crate::support::dromos::Dromos;
use crate::support::sse::{EventStream, SSE};
use crate::support::wait_for;
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn no_deployments(d: &Dromos) {
    wait_for("deployments to finish", T, || d.get("/v2/deployments").as_array().unwrap().is_empty().then_some(()));
}

#[test]
fn marathon_events_flow_filter_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);

    // Marathon's Accept rule: the stream is only for text/event-stream.
    let plain = d.raw("GET", "/v2/events", &[], None);
    assert_eq!(plain.status, 405, "{}", plain.text);

    let all = EventStream::open(&d.url, "/v2/events", &[SSE]);
    assert_eq!(all.status, 200, "{}", all.head);
    assert!(all.head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{}", all.head);
    all.wait("event_stream_attached", T, |v| v["remoteAddress"] == "127.0.0.1");
    let filtered =
        EventStream::open(&d.url, "/v2/events?event_type=deployment_success&event_type=status_update_event", &[SSE]);

    let app = json!({"id": "/ev/web", "instances": 1, "cpus": 0.1, "mem": 32, "cmd": "sleep 600",
        "healthChecks": [{"protocol": "COMMAND", "command": {"value": "true"}, "gracePeriodSeconds": 30,
                          "intervalSeconds": 1, "timeoutSeconds": 5, "maxConsecutiveFailures": 3}]});
    assert_eq!(d.call("POST", "/v2/apps", Some(&app)).status, 201);

    let (posted, v) = all.wait("api_post_event", T, |v| v["appDefinition"]["id"] == "/ev/web");
    assert_eq!(v["uri"], "/v2/apps");
    assert_eq!(v["clientIp"], "127.0.0.1");
    assert!(v["timestamp"].is_string());
    let posted_id = posted.id.clone().expect("events have ids");
    // (The deployment's first step may be announced before or after the post.)
    let (_, info) = all.wait("deployment_info", T, |v| v["currentStep"]["actions"][0]["action"] == "ScaleApplication");
    assert_eq!(info["plan"]["steps"][0]["actions"][0], json!({"action": "StartApplication", "app": "/ev/web"}));
    let (_, running) = all.wait("status_update_event", T, |v| v["taskStatus"] == "TASK_RUNNING");
    assert_eq!((running["appId"].as_str(), running["host"].as_str()), (Some("/ev/web"), Some("127.0.0.1")));
    all.wait("instance_changed_event", T, |v| v["condition"] == "Running" && v["runSpecId"] == "/ev/web");
    all.wait("health_status_changed_event", T, |v| v["alive"] == true && v["appId"] == "/ev/web");
    let (_, success) = all.wait("deployment_success", T, |_| true);
    assert_eq!(success["id"], info["plan"]["id"]);

    // The filtered stream saw only the two types it asked for.
    filtered.wait("deployment_success", T, |_| true);
    let types: std::collections::BTreeSet<String> =
        filtered.drain(Duration::from_millis(300)).into_iter().map(|e| e.event).collect();
    assert!(types.iter().all(|t| t == "status_update_event" || t == "deployment_success"), "{types:?}");

    // A reconnect with Last-Event-ID gets what followed that event, in order, then
    // the live stream.
    let again = EventStream::open(&d.url, "/v2/events", &[SSE, ("Last-Event-ID", &posted_id)]);
    let (stream, n) = posted_id.rsplit_once('-').unwrap();
    let n: u64 = n.parse().unwrap();
    let replayed = again.drain(Duration::from_millis(500));
    let ids: Vec<u64> = replayed
        .iter()
        .filter_map(|e| e.id.as_deref())
        .map(|id| {
            let (s, k) = id.rsplit_once('-').unwrap();
            assert_eq!(s, stream);
            k.parse().unwrap()
        })
        .collect();
    assert_eq!(ids.first(), Some(&(n + 1)), "replay starts right after the given id");
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "no gap, no duplicate: {ids:?}");
    assert!(replayed.iter().any(|e| e.event == "deployment_success"));

    // An id this dromos never gave out (or one whose events are gone): resync.
    let stale = EventStream::open(&d.url, "/v2/events", &[SSE, ("Last-Event-ID", "00000000-5")]);
    let (_, r) = stale.wait("event_stream_resync", T, |_| true);
    assert_eq!(r["lastEventId"], "00000000-5");

    // Deleting the app ends with app_terminated_event.
    no_deployments(&d);
    assert_eq!(d.call("DELETE", "/v2/apps/ev/web", None).status, 200);
    again.wait("app_terminated_event", T, |v| v["appId"] == "/ev/web");
    again.wait("status_update_event", T, |v| v["taskStatus"] == "TASK_KILLED");
}

#[test]
fn failing_checks_and_job_runs_are_events() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    let all = EventStream::open(&d.url, "/v2/events", &[SSE]);
    let app = json!({"id": "/ev/sick", "instances": 1, "cpus": 0.1, "mem": 32, "cmd": "sleep 600",
        "healthChecks": [{"protocol": "COMMAND", "command": {"value": "false"}, "gracePeriodSeconds": 0,
                          "intervalSeconds": 1, "timeoutSeconds": 5, "maxConsecutiveFailures": 2}]});
    assert_eq!(d.call("POST", "/v2/apps", Some(&app)).status, 201);
    let (_, failed) = all.wait("failed_health_check_event", T, |v| v["appId"] == "/ev/sick");
    assert_eq!(failed["healthCheck"]["protocol"], "COMMAND");
    let (_, kill) = all.wait("unhealthy_instance_kill_event", T, |v| v["appId"] == "/ev/sick");
    assert!(kill["taskId"].as_str().unwrap().starts_with(kill["instanceId"].as_str().unwrap()));

    let job = json!({"name": "evjob", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/PT1H",
                     "cpus": 0.1, "mem": 32});
    assert_eq!(d.call("POST", "/scheduler/iso8601", Some(&job)).status, 204);
    assert_eq!(d.call("PUT", "/scheduler/job/evjob", None).status, 204);
    all.wait("job_run_started", T, |v| v["job"] == "evjob");
    let (_, ok) = all.wait("job_run_succeeded", T, |v| v["job"] == "evjob");
    assert!(ok["timestamp"].is_string());
}

#[test]
fn a_subscriber_that_falls_behind_is_cut_off_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &["--event-stream-max-outstanding-messages", "2"]);
    let slow = EventStream::open(&d.url, "/v2/events", &[SSE]);
    // Thirty tasks start in one pass: sixty events in one burst, far more than two.
    let app = json!({"id": "/ev/many", "instances": 30, "cpus": 0.01, "mem": 8, "cmd": "sleep 600",
                     "portDefinitions": []});
    assert_eq!(d.call("POST", "/v2/apps", Some(&app)).status, 201);
    let got = slow.until_closed(Duration::from_secs(20));
    let last = got.last().expect("events before the cut");
    assert_eq!(last.event, "event_stream_error");
    assert!(last.data.contains("reconnect with Last-Event-ID"), "{}", last.data);
    // The API is unaffected, and a new subscriber is welcome.
    wait_for("all 30 running", T, || (d.app("/ev/many")["tasksRunning"] == 30).then_some(()));
    let fresh = EventStream::open(&d.url, "/v2/events", &[SSE]);
    fresh.wait("event_stream_attached", T, |_| true);
}
