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
        let app = json!({"id": id, "instances": instances, "cpus": 0.1, "mem": 32, "cmd": "sleep 600"});
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
    assert!(list.contains("<td>/web/idle</td>") && list.contains("<td>/web/shop</td>"), "{list}");
    let running = d.call("GET", "/apps?status=running", None).text;
    assert!(running.contains("<td>/web/shop</td>") && !running.contains("<td>/web/idle</td>"), "{running}");
    let search = d.call("GET", "/apps?q=idle&status=", None).text;
    assert!(search.contains("<td>/web/idle</td>") && !search.contains("<td>/web/shop</td>"), "{search}");
    // What the user typed comes back escaped.
    let hostile = d.call("GET", "/apps?q=%22%3E%3Cscript%3E", None).text;
    assert!(hostile.contains("value=\"&#34;&#62;&#60;script&#62;\"") && !hostile.contains("\"><script>"), "{hostile}");
    assert_eq!(d.call("GET", "/apps?page=x", None).status, 400);

    let css = d.call("GET", "/static/dromos.css", None);
    assert_eq!((css.status, css.header("content-type")), (200, Some("text/css; charset=utf-8")));
    assert!(css.text.contains("prefers-color-scheme: dark"));
}
