//! The web UI against a real dromos: pages render from live state, filters work, values
//! are escaped. (Browser tests come with the rest of the UI.)

use crate::support::dromos::Dromos;
use crate::support::wait_for;
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

#[test]
fn dashboard_and_app_list_show_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    for (id, instances) in [("/web/shop", 2), ("/web/idle", 0)] {
        let app = json!({"id": id, "instances": instances, "cpus": 0.1, "mem": 32, "cmd": "sleep 600",
                         "labels": {"note": "<script>alert(1)</script>"}});
        assert_eq!(d.call("POST", "/v2/apps", Some(&app)).status, 201);
    }
    wait_for("the deployments to finish", T, || d.get("/v2/deployments").as_array().unwrap().is_empty().then_some(()));

    let home = d.call("GET", "/", None);
    assert_eq!(home.status, 200);
    assert_eq!(home.header("content-type"), Some("text/html; charset=utf-8"));
    let html = &home.text;
    assert!(html.contains("<h1>Cluster</h1>") && html.contains("href=\"/apps\""), "{html}");
    assert!(html.contains("<p class=\"figure\">2</p>\n    <p>running</p>"), "two tasks running: {html}");
    assert!(
        html.contains("status-running\">running</span> 1") && html.contains("status-suspended\">suspended</span> 1"),
        "{html}"
    );

    let list = d.call("GET", "/apps", None).text;
    assert!(list.contains(">/web/idle</a></td>") && list.contains(">/web/shop</a></td>"), "{list}");
    let running = d.call("GET", "/apps?status=running", None).text;
    assert!(running.contains(">/web/shop</a></td>") && !running.contains(">/web/idle</a></td>"), "{running}");
    let search = d.call("GET", "/apps?q=idle&status=", None).text;
    assert!(search.contains(">/web/idle</a></td>") && !search.contains(">/web/shop</a></td>"), "{search}");
    // What the user typed comes back escaped.
    let hostile = d.call("GET", "/apps?q=%22%3E%3Cscript%3E", None).text;
    assert!(hostile.contains("value=\"&#34;&#62;&#60;script&#62;\"") && !hostile.contains("\"><script>"), "{hostile}");
    assert_eq!(d.call("GET", "/apps?page=x", None).status, 400);

    assert!(list.contains("<a href=\"/apps/web/shop\">/web/shop</a>"), "{list}");

    // The app page: status, tasks with their addresses, versions, the definition (its
    // label escaped).
    let page = d.call("GET", "/apps/web/shop", None);
    assert_eq!(page.status, 200, "{}", page.text);
    let html = &page.text;
    assert!(html.contains("<h1>/web/shop <span class=\"status status-running\">running</span></h1>"), "{html}");
    assert!(html.contains("2 of 2 running"), "{html}");
    let tasks = d.get("/v2/apps/web/shop/tasks")["tasks"].as_array().cloned().unwrap();
    for t in &tasks {
        let row = format!(
            "<td>{}</td><td>{}:{}</td><td>TASK_RUNNING</td>",
            t["id"].as_str().unwrap(),
            t["host"].as_str().unwrap(),
            t["ports"][0]
        );
        assert!(html.contains(&row), "{row} in {html}");
    }
    assert!(html.contains("sleep 600") && html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "{html}");
    assert!(!html.contains("<script>"), "{html}");
    assert_eq!(d.call("GET", "/apps/web/nope", None).status, 404);
    assert_eq!(d.call("GET", "/apps/Not..An..Id", None).status, 404);

    let css = d.call("GET", "/static/dromos.css", None);
    assert_eq!((css.status, css.header("content-type")), (200, Some("text/css; charset=utf-8")));
    assert!(css.text.contains("prefers-color-scheme: dark"));
}
