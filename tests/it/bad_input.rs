//! Bad input gets a clear 4xx with the field's path, never a 500, and never touches
//! stored state.

use crate::support::dromos::Dromos;
use serde_json::{json, Value};

fn details(body: &Value) -> Vec<String> {
    body["details"]
        .as_array()
        .map(|d| d.iter().map(|x| x["path"].as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn bad_app_definitions_are_rejected_with_paths() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    let good = json!({"id": "/keep", "cmd": "exec sleep 1000", "instances": 0, "labels": {"v": "1"}});
    assert_eq!(d.call("POST", "/v2/apps", Some(&good)).status, 201);

    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"id": "/neg", "cmd": "x", "instances": -1}), 422, "/instances"),
        (json!({"id": "../x", "cmd": "x"}), 422, "/id"),
        (json!({"id": "/ünïcödé", "cmd": "x"}), 422, "/id"),
        (json!({"id": "/UPPER", "cmd": "x"}), 422, "/id"),
        (json!({"id": "/a/tasks", "cmd": "x"}), 422, "/id"),
        (json!({"id": "/typo", "cmd": "x", "intances": 3}), 422, "/intances"),
        (json!({"id": "/both", "cmd": "x", "args": ["y"]}), 422, "/"),
        (json!({"id": "/none"}), 422, "/"),
        (json!({"id": "/cpu", "cmd": "x", "cpus": -0.5}), 422, "/cpus"),
        (json!({"id": "/hc", "cmd": "x", "healthChecks": [{"protocol": "COMMAND"}]}), 422, "/healthChecks/0/command"),
        (json!({"id": "/c", "cmd": "x", "constraints": [["hostname"]]}), 422, "/constraints/0"),
        (
            json!({"id": "/u", "cmd": "x", "upgradeStrategy": {"maximumOverCapacity": 1.5}}),
            422,
            "/upgradeStrategy/maximumOverCapacity",
        ),
        (json!({"id": "/p", "cmd": "x", "portDefinitions": [{"port": 70000}]}), 422, "/portDefinitions/0/port"),
        (json!({"id": "/pp", "cmd": "x", "ports": [1], "portDefinitions": []}), 422, "/ports"),
        (json!({"id": "/t", "cmd": 5}), 400, "/cmd"),
        (
            json!({"id": "/t2", "cmd": "x", "healthChecks": [{"intervalSeconds": "often"}]}),
            400,
            "/healthChecks/0/intervalSeconds",
        ),
        (json!(["not", "an", "object"]), 400, "/"),
    ];
    for (body, status, path) in cases {
        let r = d.call("POST", "/v2/apps", Some(&body));
        assert_eq!(r.status, status, "{body}: {}", r.text);
        let b = r.json();
        assert!(b["message"].is_string(), "{}", r.text);
        assert!(details(&b).contains(&path.to_string()), "{body}: expected path {path} in {}", r.text);
    }

    // Malformed JSON: 400 with line and column.
    let r = d.raw("POST", "/v2/apps", &[], Some(b"{\"id\": \"/x\",\n  \"cmd\": }"));
    assert_eq!(r.status, 400);
    assert!(r.text.contains("line 2 column"), "{}", r.text);

    // A 2 MB body: 413.
    let big = format!("{{\"id\":\"/big\",\"cmd\":\"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let r = d.raw("POST", "/v2/apps", &[], Some(big.as_bytes()));
    assert_eq!(r.status, 413, "{}", r.text);

    // Unknown things: 404 in our format.
    for path in ["/v2/apps/nope", "/v2/apps/nope/versions", "/v2/apps/nope/tasks", "/v2/nothing-here"] {
        let r = d.call("GET", path, None);
        assert_eq!(r.status, 404, "{path}");
        assert!(r.json()["message"].is_string());
    }
    assert_eq!(d.call("DELETE", "/v2/apps/nope", None).status, 404);
    assert_eq!(d.call("POST", "/v2/apps/nope/restart", None).status, 404);
    assert_eq!(d.call("GET", "/v2/apps/keep/tasks/..%2F..%2Fetc%2Fpasswd/logs", None).status, 404);
    assert_eq!(d.call("GET", "/v2/apps/keep/tasks/keep.x/logs?stream=../../x", None).status, 400);
    assert_eq!(d.call("DELETE", "/v2/apps/keep/tasks?scale=true&wipe=true", None).status, 400);
    assert_eq!(d.call("POST", "/v2/tasks/delete", Some(&json!({"ids": ["../../x"]}))).status, 400);
    assert_eq!(d.call("GET", "/v2/tasks?status=bogus", None).status, 400);

    // A bad update leaves the stored app exactly as it was.
    let before = d.app("/keep");
    for bad in [json!({"instances": -3}), json!({"cmd": ""}), json!({"labels": "x"}), json!({"bogus": 1})] {
        let r = d.call("PUT", "/v2/apps/keep", Some(&bad));
        assert!(r.status == 400 || r.status == 422, "{bad}: {} {}", r.status, r.text);
    }
    let after = d.app("/keep");
    assert_eq!(before["version"], after["version"]);
    assert_eq!(before["labels"], after["labels"]);
    assert_eq!(d.get("/v2/apps")["apps"].as_array().unwrap().len(), 1, "nothing invalid was stored");
}
