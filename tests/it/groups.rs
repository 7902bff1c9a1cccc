//! Groups end to end: a group deployed in dependency order (the dependent app waits
//! until its dependency is healthy), dry runs, scaleBy, group versions and rollback,
//! and deletion, against real processes with real HTTP health endpoints.

use crate::support::dromos::Dromos;
use crate::support::wait_for;
use serde_json::{json, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// An app of the shop serving its sandbox; healthy once the file `ok` exists there.
fn app(id: &str, instances: u32, deps: &[&str], tag: &str) -> Value {
    json!({
        "id": id, "instances": instances, "cpus": 0.05, "mem": 32, "dependencies": deps, "env": {"TAG": tag},
        "cmd": "exec python3 -m http.server $PORT0 --bind $HOST",
        "healthChecks": [{"protocol": "HTTP", "path": "/ok", "gracePeriodSeconds": 0, "intervalSeconds": 1,
                          "timeoutSeconds": 1, "maxConsecutiveFailures": 0}]
    })
}

fn task_ids(d: &Dromos, app: &str) -> Vec<String> {
    d.get(&format!("/v2/apps{app}/tasks"))["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

fn make_healthy(d: &Dromos, task: &str) {
    std::fs::write(d.data_dir.join("agent/sandboxes").join(task).join("ok"), b"ok").unwrap();
}

fn actions(steps: &Value) -> Vec<Vec<String>> {
    steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["actions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| format!("{} {}", a["action"].as_str().unwrap(), a["app"].as_str().unwrap()))
                .collect()
        })
        .collect()
}

#[test]
fn a_group_deploys_in_dependency_order_and_rolls_back_by_version() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    let shop =
        |web_tag: &str| json!({"id": "/shop", "apps": [app("db", 1, &[], "v1"), app("web", 2, &["../db"], web_tag)]});

    // A dry run plans without deploying.
    let dry = d.call("PUT", "/v2/groups/shop?dryRun=true", Some(&shop("v1")));
    assert_eq!(dry.status, 200, "{}", dry.text);
    assert_eq!(
        actions(&dry.json()["steps"]),
        vec![
            vec!["StartApplication /shop/db", "StartApplication /shop/web"],
            vec!["ScaleApplication /shop/db"],
            vec!["ScaleApplication /shop/web"],
        ]
    );
    assert_eq!(d.get("/v2/apps")["apps"], json!([]));
    assert_eq!(d.call("GET", "/v2/groups/shop", None).status, 404);

    let r = d.call("POST", "/v2/groups", Some(&shop("v1")));
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("location"), Some("/v2/groups/shop"));
    let dep_id = r.json()["deploymentId"].as_str().unwrap().to_string();
    assert_eq!(d.call("POST", "/v2/groups", Some(&shop("v1"))).status, 409);

    // db runs but is not healthy yet: the deployment waits at its step, web starts nothing.
    let db_task = wait_for("db's task to fail its check", T, || {
        let t = d.app("/shop/db")["tasks"][0].clone();
        (t["healthCheckResults"][0]["consecutiveFailures"].as_u64() >= Some(2))
            .then(|| t["id"].as_str().unwrap().to_string())
    });
    let deps = d.get("/v2/deployments");
    let dep = deps.as_array().unwrap().iter().find(|x| x["id"] == dep_id.as_str()).expect("running").clone();
    assert_eq!((dep["currentStep"].as_u64(), dep["totalSteps"].as_u64()), (Some(2), Some(3)), "{dep}");
    assert_eq!(dep["currentActions"][0]["app"], "/shop/db");
    assert_eq!(d.app("/shop/web")["tasks"], json!([]), "web waits for db");
    assert_eq!(d.app("/shop/web")["deployments"][0]["id"], dep_id.as_str());

    // db turns healthy: web's step comes, its tasks start; healthy web finishes the deployment.
    make_healthy(&d, &db_task);
    let web = wait_for("web's two tasks", T, || {
        let ids = task_ids(&d, "/shop/web");
        (ids.len() == 2).then_some(ids)
    });
    for t in &web {
        wait_for("web's task to be able to serve", T, || {
            d.data_dir.join("agent/sandboxes").join(t).exists().then_some(())
        });
        make_healthy(&d, t);
    }
    wait_for("the deployment to finish", T, || (d.get("/v2/deployments") == json!([])).then_some(()));

    let g = d.get("/v2/groups/shop");
    assert_eq!(g["id"], "/shop");
    let ids: Vec<&str> = g["apps"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["/shop/db", "/shop/web"]);
    assert_eq!(g["apps"][1]["dependencies"], json!(["/shop/db"]));
    let root = d.get("/v2/groups");
    assert_eq!(root["groups"][0]["id"], "/shop");
    // Every app beneath a group, as an array (the root's: all of them).
    let within = |path: &str| -> Vec<String> {
        d.get(path).as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(within("/v2/groups/shop/apps"), vec!["/shop/db", "/shop/web"]);
    assert_eq!(within("/v2/groups/apps"), vec!["/shop/db", "/shop/web"]);
    let with_tasks = d.get("/v2/groups/shop/apps?embed=group.apps.tasks");
    assert_eq!(with_tasks[1]["tasks"].as_array().unwrap().len(), 2, "{with_tasks}");
    assert_eq!(d.call("GET", "/v2/groups/nope/apps", None).status, 404);
    let only_groups = d.get("/v2/groups?embed=group.groups");
    assert_eq!(only_groups["groups"][0]["apps"], json!([]));
    let versions = d.get("/v2/groups/shop/versions");
    assert_eq!(versions.as_array().unwrap().len(), 1);
    let v1 = versions[0].as_str().unwrap().to_string();

    // scaleBy: every app of the group, rounded up; records a second version.
    let r = d.call("PUT", "/v2/groups/shop", Some(&json!({"scaleBy": 1.5})));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(d.app("/shop/db")["instances"], 2);
    assert_eq!(d.app("/shop/web")["instances"], 3);
    assert_eq!(d.get("/v2/groups/shop/versions").as_array().unwrap().len(), 2);
    let old = d.get(&format!("/v2/groups/shop/versions/{v1}"));
    assert_eq!(old["apps"][1]["instances"], 2, "{old}");

    // Back to the first version (force: the scale deployment still runs).
    let r = d.call("PUT", "/v2/groups/shop?force=true", Some(&json!({"version": v1})));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(d.app("/shop/db")["instances"], 1);
    assert_eq!(d.app("/shop/web")["instances"], 2);
    assert_eq!(d.call("PUT", "/v2/groups/shop", Some(&json!({"version": "2001-01-01T00:00:00.000Z"}))).status, 404);

    // Deleting the group stops everything beneath it.
    let r = d.call("DELETE", "/v2/groups/shop?force=true", None);
    assert_eq!(r.status, 200, "{}", r.text);
    wait_for("every task of the shop to be gone", T, || (d.get("/v2/tasks")["tasks"] == json!([])).then_some(()));
    assert_eq!(d.call("GET", "/v2/groups/shop", None).status, 404);
    assert_eq!(d.call("DELETE", "/v2/groups/shop", None).status, 404);
}

#[test]
fn bad_group_bodies_get_errors_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    let cycle = json!({"id": "c", "apps": [
        {"id": "a", "cmd": "sleep 1", "dependencies": ["/c/b"]},
        {"id": "b", "cmd": "sleep 1", "dependencies": ["/c/a"]}]});
    let r = d.call("POST", "/v2/groups", Some(&cycle));
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("dependency cycle"), "{}", r.text);
    let bad = json!({"id": "x", "apps": [{"id": "a", "cmd": "sleep 1", "mem": -5}], "groups": [{"id": "/elsewhere"}]});
    let r = d.call("POST", "/v2/groups", Some(&bad));
    assert_eq!(r.status, 422, "{}", r.text);
    let body = r.json();
    let paths: Vec<&str> = body["details"].as_array().unwrap().iter().map(|x| x["path"].as_str().unwrap()).collect();
    assert_eq!(paths, vec!["/apps/0/mem", "/groups/0/id"], "{}", r.text);
    assert_eq!(d.call("PUT", "/v2/groups/x", Some(&json!({"scaleBy": "lots"}))).status, 422);
    assert_eq!(d.call("PATCH", "/v2/groups/x/y", Some(&json!({"enforceRole": true}))).status, 422);
    // Nothing was stored by any of these.
    assert_eq!(d.get("/v2/groups")["groups"], json!([]));
}
