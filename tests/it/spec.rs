//! api-spec/openapi.yaml and the router describe the same API: every route in the
//! router's table is in the spec and the reverse, and every route is really served.

use crate::support::dromos::Dromos;
use crate::support::wait_for;
use dromos::api::ROUTES;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

/// (METHOD, path) pairs from the spec's `paths` section (a small indentation-based
/// reader: path keys at two spaces, method keys at four).
fn spec_routes() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/api-spec/openapi.yaml"))
        .expect("api-spec/openapi.yaml");
    let mut in_paths = false;
    let mut current: Option<String> = None;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            in_paths = line.trim_end() == "paths:";
            current = None;
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(rest) = line.strip_prefix("  ") {
            if !rest.starts_with(' ') && rest.trim_end().ends_with(':') {
                current =
                    Some(rest.trim_end().trim_end_matches(':').trim_matches(|c| c == '"' || c == '\'').to_string());
                continue;
            }
        }
        if let (Some(p), Some(rest)) = (&current, line.strip_prefix("    ")) {
            let key = rest.trim_end().trim_end_matches(':');
            if !rest.starts_with(' ') && ["get", "put", "post", "patch", "delete"].contains(&key) {
                out.insert((key.to_uppercase(), p.clone()));
            }
        }
    }
    out
}

#[test]
fn openapi_spec_matches_the_router() {
    let routed: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    let spec = spec_routes();
    let missing: Vec<_> = routed.difference(&spec).collect();
    let extra: Vec<_> = spec.difference(&routed).collect();
    assert!(missing.is_empty(), "routed but not in api-spec/openapi.yaml: {missing:?}");
    assert!(extra.is_empty(), "in api-spec/openapi.yaml but not routed: {extra:?}");
}

#[test]
fn every_listed_route_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    let app = json!({"id": "/g/spec", "cmd": "exec sleep 1000", "instances": 1, "cpus": 0.01, "mem": 4});
    assert_eq!(d.call("POST", "/v2/apps", Some(&app)).status, 201);
    let a = wait_for("a task", Duration::from_secs(30), || {
        let a = d.app("/g/spec");
        (a["tasksRunning"] == 1).then_some(a)
    });
    let task = a["tasks"][0]["id"].as_str().unwrap().to_string();
    let version = a["version"].as_str().unwrap().to_string();
    for (method, path) in ROUTES.iter().rev() {
        // A stream that never ends (and answers 405 without its Accept header, as
        // Marathon does): tests/it/events.rs covers it.
        if *path == "/v2/events" {
            continue;
        }
        let concrete = path
            .replace("{appId}", "g/spec")
            .replace("{groupId}", "g")
            .replace("{taskId}", &task)
            .replace("{version}", &version)
            .replace("{name}", "spec-job")
            .replace("{jobId}", "spec-job")
            .replace("{scheduleId}", "default")
            .replace("{runId}", "20260101000000000a0")
            .replace("{percentile}", "median");
        let body = match *method {
            "POST" if concrete == "/v2/apps" => Some(json!({"id": "/g/other", "cmd": "exec sleep 1", "instances": 0})),
            "POST" if concrete == "/v2/tasks/delete" => Some(json!({"ids": []})),
            "PUT" | "PATCH" => Some(json!({"instances": 1})),
            _ => None,
        };
        let r = d.call(method, &concrete, body.as_ref());
        assert!(
            r.status != 405 && !r.text.starts_with("{\"message\":\"No route"),
            "{method} {concrete}: {} {}",
            r.status,
            r.text
        );
        assert!(r.status < 500, "{method} {concrete}: {} {}", r.status, r.text);
        if (*method, *path) == ("DELETE", "/v2/leader") {
            // The master abdicated: its next term starts from the store.
            wait_for("the next term", Duration::from_secs(30), || {
                (d.call("GET", "/v2/info", None).status == 200).then_some(())
            });
        }
    }
}
