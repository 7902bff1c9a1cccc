//! The web UI against a real dromos: pages render from live state, filters work, values
//! are escaped. (Browser tests come with the rest of the UI.)

use crate::support::browser::Browser;
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
    assert!(html.contains("<title>Dashboard · dromos</title>") && html.contains("<h1>Cluster</h1>"), "{html}");
    assert_eq!(html.matches("id=\"attention\"").count(), 1, "{html}");
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
            "<td><a href=\"/apps/web/shop/-/tasks/{id}\">{id}</a></td><td>{}:{}</td><td>TASK_RUNNING</td>",
            t["host"].as_str().unwrap(),
            t["ports"][0],
            id = t["id"].as_str().unwrap(),
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

/// A client that behaves like a browser without JavaScript: keeps the session cookie,
/// does not follow redirects (the tests look at them), posts url-encoded forms.
struct Visitor {
    base: String,
    agent: ureq::Agent,
    cookie: Option<String>,
}

struct Page {
    status: u16,
    location: Option<String>,
    set_cookie: Option<String>,
    html: String,
}

impl Visitor {
    fn new(base: &str) -> Visitor {
        let agent = ureq::AgentBuilder::new().redirects(0).timeout(Duration::from_secs(30)).build();
        Visitor { base: base.to_string(), agent, cookie: None }
    }

    fn send(&mut self, method: &str, path: &str, form: Option<&[(&str, &str)]>) -> Page {
        let mut req = self.agent.request(method, &format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.set("Cookie", c);
        }
        let r = match form {
            Some(f) => req.send_form(f),
            None => req.call(),
        };
        let r = match r {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let set_cookie = r.header("set-cookie").map(str::to_string);
        if let Some(c) = &set_cookie {
            self.cookie = c.split(';').next().map(str::to_string).filter(|c| c != "dromos_session=");
        }
        let (status, location) = (r.status(), r.header("location").map(str::to_string));
        Page { status, location, set_cookie, html: r.into_string().unwrap_or_default() }
    }

    fn get(&mut self, path: &str) -> Page {
        self.send("GET", path, None)
    }

    /// Posts a form the way the page at `from` would: with that page's CSRF token.
    fn post(&mut self, from: &str, action: &str, fields: &[(&str, &str)]) -> Page {
        let page = self.get(from);
        assert_eq!(page.status, 200, "GET {from}: {}", page.html);
        let csrf = csrf_of(&page.html);
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.send("POST", action, Some(&all))
    }
}

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("the page has a form with a CSRF token") + 19;
    html[at..].split('"').next().unwrap().to_string()
}

#[test]
fn a_token_protected_ui_asks_to_sign_in_and_checks_csrf() {
    let dir = tempfile::tempdir().unwrap();
    let token = "s3cret-token";
    let d = Dromos::start(dir.path(), &["--auth-token", token]).with_token(token);
    let mut v = Visitor::new(&d.url);

    // Not signed in: pages send the browser to the sign-in form, the API says 401.
    let home = v.get("/apps?q=x");
    assert_eq!((home.status, home.location.as_deref()), (303, Some("/login?next=%2Fapps%3Fq%3Dx")));
    assert_eq!(v.get("/v2/apps").status, 401);
    assert_eq!(v.get("/static/dromos.css").status, 200, "the stylesheet is public");
    let login = v.get("/login?next=%2Fapps%3Fq%3Dx");
    assert!(login.html.contains("type=\"password\"") && login.html.contains("value=\"/apps?q=x\""), "{}", login.html);

    let wrong = v.send("POST", "/login", Some(&[("token", "nope"), ("next", "/apps")]));
    assert_eq!(wrong.status, 401);
    assert!(wrong.html.contains("aria-invalid=\"true\"") && v.cookie.is_none(), "{}", wrong.html);
    // Only a path on this site may follow a sign-in.
    let signed = v.send("POST", "/login", Some(&[("token", token), ("next", "//evil.example/")]));
    assert_eq!((signed.status, signed.location.as_deref()), (303, Some("/")));
    let cookie = signed.set_cookie.expect("a session cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");

    // Signed in: pages, and reads of the API (the live updates and logs need them).
    assert_eq!(v.get("/").status, 200);
    assert_eq!(v.get("/v2/apps").status, 200);
    // Changes through the API still need the token itself; the cookie is not enough.
    let api_write = v.send("POST", "/v2/apps", None);
    assert_eq!(api_write.status, 401);

    // Forms need their CSRF token: without it, or with another session's, nothing happens.
    let fields = [("mode", "form"), ("id", "/a"), ("cmd", "sleep 600"), ("instances", "0")];
    assert_eq!(v.send("POST", "/apps/-/new", Some(&fields)).status, 403);
    let mut other = Visitor::new(&d.url);
    other.send("POST", "/login", Some(&[("token", token), ("next", "/")]));
    let foreign = csrf_of(&other.get("/apps/-/new").html);
    let mut forged = vec![("csrf", foreign.as_str())];
    forged.extend_from_slice(&fields);
    assert_eq!(v.send("POST", "/apps/-/new", Some(&forged)).status, 403);
    assert_eq!(d.get("/v2/apps")["apps"].as_array().unwrap().len(), 0);
    let made = v.post("/apps/-/new", "/apps/-/new", &fields);
    assert_eq!((made.status, made.location.as_deref()), (303, Some("/apps/a")), "{}", made.html);
    assert_eq!(d.get("/v2/apps")["apps"].as_array().unwrap().len(), 1);

    // A forged cookie is no session.
    let mut forger = Visitor::new(&d.url);
    forger.cookie = Some("dromos_session=v1.00.99999999999.00".into());
    assert_eq!(forger.get("/").status, 303);

    // Signing out forgets the session in this browser.
    let out = v.post("/", "/logout", &[]);
    assert_eq!((out.status, out.location.as_deref()), (303, Some("/login")));
    assert!(out.set_cookie.unwrap().contains("Max-Age=0"));
    assert_eq!(v.get("/").status, 303);
}

#[test]
fn apps_are_created_changed_and_destroyed_through_forms() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    let mut v = Visitor::new(&d.url);
    let idle = || d.get("/v2/deployments").as_array().unwrap().is_empty().then_some(());

    // Bad fields come back next to the field, with what was typed.
    let bad = v.post(
        "/apps/-/new",
        "/apps/-/new",
        &[
            ("mode", "form"),
            ("id", "/Shop"),
            ("cmd", "sleep 600"),
            ("instances", "two"),
            ("cpus", "0.1"),
            ("mem", "32"),
        ],
    );
    assert_eq!(bad.status, 422, "{}", bad.html);
    let html = &bad.html;
    assert!(html.contains("id=\"f-instances\" name=\"instances\" type=\"number\" value=\"two\""), "{html}");
    assert!(html.contains("<p class=\"error\" id=\"e-instances\">must be a whole number, 0 or more</p>"), "{html}");
    assert!(html.contains("aria-describedby=\"e-id\"") && html.contains("id=\"e-id\""), "the id is wrong too: {html}");
    // The JSON half names the path of what is wrong.
    let bad_json = v.post("/apps/-/new", "/apps/-/new", &[("mode", "json"), ("json", r#"{"id": "/x", "cpus": -1}"#)]);
    assert_eq!(bad_json.status, 422);
    assert!(bad_json.html.contains("<li>/cpus: got -1, expected 0.0 or more</li>"), "{}", bad_json.html);
    let broken = v.post("/apps/-/new", "/apps/-/new", &[("mode", "json"), ("json", "{\"id\": ")]);
    assert_eq!(broken.status, 400);
    assert!(broken.html.contains("unexpected end of input at line 1 column 7"), "{}", broken.html);
    assert_eq!(d.get("/v2/apps")["apps"].as_array().unwrap().len(), 0, "nothing was created");

    // Create, then the app page shows it running.
    let cmd = "echo \"started-<b>$MARATHON_APP_ID</b>\"; sleep 600";
    let made = v.post(
        "/apps/-/new",
        "/apps/-/new",
        &[("mode", "form"), ("id", "/shop/web"), ("cmd", cmd), ("instances", "1"), ("cpus", "0.1"), ("mem", "32")],
    );
    assert_eq!((made.status, made.location.as_deref()), (303, Some("/apps/shop/web")), "{}", made.html);
    wait_for("the app to run", T, || (d.app("/shop/web")["tasksRunning"] == 1).then_some(()));
    wait_for("the deployment to end", T, idle);
    let page = v.get("/apps/shop/web").html;
    assert!(page.contains("1 of 1 running"), "{page}");

    // The task page shows its output, escaped.
    let task = d.app("/shop/web")["tasks"][0]["id"].as_str().unwrap().to_string();
    let task_page = format!("/apps/shop/web/-/tasks/{task}");
    assert!(page.contains(&format!("href=\"{task_page}\"")), "{page}");
    let log = wait_for("the task's output", T, || {
        let p = v.get(&task_page);
        p.html.contains("started-&#60;b&#62;/shop/web&#60;/b&#62;").then_some(p)
    });
    assert!(log.html.contains("TASK_RUNNING") && !log.html.contains("<b>/shop/web"), "{}", log.html);
    let history = &log.html[log.html.find("<ol class=\"history\">").expect("a state history")..];
    assert!(history.contains("TASK_RUNNING"), "{history}");
    assert_eq!(v.get("/apps/shop/web/-/tasks/other.instance-1._app.1").status, 404);

    // Scale, through the form; a bad count is refused with the API's words.
    let scaled = v.post("/apps/shop/web", "/apps/shop/web/-/scale", &[("instances", "2")]);
    assert_eq!((scaled.status, scaled.location.as_deref()), (303, Some("/apps/shop/web")));
    wait_for("two tasks", T, || (d.app("/shop/web")["tasksRunning"] == 2).then_some(()));
    wait_for("the deployment to end", T, idle);
    let refused = v.post("/apps/shop/web", "/apps/shop/web/-/scale", &[("instances", "-1")]);
    assert_eq!(refused.status, 422);
    assert!(refused.html.contains("must be a whole number"), "{}", refused.html);

    // Edit the command (a new version), then compare and roll back.
    let edited = v.post(
        "/apps/shop/web/-/edit",
        "/apps/shop/web/-/edit",
        &[("mode", "form"), ("cmd", "sleep 700"), ("instances", "2"), ("cpus", "0.1"), ("mem", "32")],
    );
    assert_eq!(edited.status, 303, "{}", edited.html);
    wait_for("the upgrade", T, idle);
    let versions: Vec<String> = d.get("/v2/apps/shop/web/versions")["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(versions.len(), 3, "create, scale, edit: {versions:?}");
    let diff = v.get(&format!("/apps/shop/web/-/diff?from={}&to={}", versions[2], versions[0])).html;
    assert!(diff.contains("<span class=\"removed\">-   &#34;cmd&#34;: &#34;echo \\&#34;started-&#60;b&#62;"), "{diff}");
    assert!(diff.contains("<span class=\"added\">+   &#34;cmd&#34;: &#34;sleep 700&#34;,</span>"), "{diff}");
    assert!(diff.contains("<span class=\"removed\">-   &#34;instances&#34;: 1,</span>"), "{diff}");
    let back = v.post("/apps/shop/web", "/apps/shop/web/-/rollback", &[("version", &versions[1])]);
    assert_eq!(back.status, 303, "{}", back.html);
    wait_for("the rollback", T, idle);
    let app = d.app("/shop/web");
    assert!(app["cmd"].as_str().unwrap().starts_with("echo \"started-"), "{app}");
    assert_eq!(app["instances"], 2);

    // While a deployment holds the app, a change is refused with a button to force it.
    let slow = json!({"cmd": "sleep 600", "healthChecks": [{"protocol": "COMMAND", "command": {"value": "false"}}]});
    assert_eq!(d.call("PUT", "/v2/apps/shop/web", Some(&slow)).status, 200);
    let locked = v.post("/apps/shop/web", "/apps/shop/web/-/suspend", &[]);
    assert_eq!(locked.status, 409, "{}", locked.html);
    assert!(locked.html.contains("<input type=\"hidden\" name=\"force\" value=\"true\">"), "{}", locked.html);
    let forced = v.post("/apps/shop/web", "/apps/shop/web/-/suspend", &[("force", "true")]);
    assert_eq!(forced.status, 303, "{}", forced.html);
    wait_for("the app to be suspended", T, || {
        let a = d.app("/shop/web");
        (a["instances"] == 0 && a["tasksRunning"] == 0).then_some(())
    });
    wait_for("the deployments to end", T, idle);
    assert!(v.get("/apps").html.contains("status-suspended"));

    // Destroy asks first, then removes the app.
    let confirm = v.get("/apps/shop/web/-/destroy");
    assert!(confirm.html.contains("action=\"/apps/shop/web/-/destroy\""), "{}", confirm.html);
    let gone = v.post("/apps/shop/web/-/destroy", "/apps/shop/web/-/destroy", &[]);
    assert_eq!((gone.status, gone.location.as_deref()), (303, Some("/apps")));
    wait_for("the app to go", T, || (d.call("GET", "/v2/apps/shop/web", None).status == 404).then_some(()));
    assert_eq!(v.get("/apps/shop/web").status, 404);
}

/// The page has not been loaded again since `mark` was called (live updates came by
/// the event stream, not by a reload).
fn mark(b: &Browser) {
    b.execute("window.dromosTestMark = 1", vec![]);
}

fn still_marked(b: &Browser) -> bool {
    b.execute("return window.dromosTestMark === 1", vec![]) == json!(true)
}

#[test]
fn an_operator_runs_an_app_from_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    let b = Browser::start();
    let idle = || d.get("/v2/deployments").as_array().unwrap().is_empty().then_some(());

    // A validation error appears next to its field.
    b.goto(&format!("{}/apps", d.url));
    b.click("a[href='/apps/-/new']");
    b.wait_for_text("h1", "New app", T);
    b.find("#f-id").clear();
    b.find("#f-id").send_keys("/UI/Echo");
    b.find("#f-cmd").send_keys("echo first line; sleep 2; echo second line; sleep 600");
    b.click("form[aria-labelledby='by-form'] button[type='submit']");
    let error = b.wait_for_text("#e-id", "lowercase", T);
    assert!(error.text().contains("lowercase"), "{}", error.text());
    assert_eq!(b.find("#f-id").attr("aria-invalid").as_deref(), Some("true"));
    assert_eq!(b.find("#f-cmd").prop("value"), json!("echo first line; sleep 2; echo second line; sleep 600"));

    // Fixed, it is created; the app page follows it to running without a reload.
    b.find("#f-id").clear();
    b.find("#f-id").send_keys("/ui/echo");
    b.click("form[aria-labelledby='by-form'] button[type='submit']");
    b.wait_for_text("h1", "/ui/echo", T);
    assert!(b.url().ends_with("/apps/ui/echo"), "{}", b.url());
    mark(&b);
    b.wait_for_text("#summary", "1 of 1 running", T);
    wait_for("the deployment to end", T, idle);

    // Scale to two from the page; the new task shows up live.
    b.find("#instances").clear();
    b.find("#instances").send_keys("2");
    b.click("form[action='/apps/ui/echo/-/scale'] button");
    b.wait_for_text("#summary", "of 2", T);
    mark(&b);
    b.wait_for_text("#summary", "2 of 2 running", T);
    wait_for("the scale deployment to end", T, idle);
    assert_eq!(b.find_all("#task-list tbody tr").len(), 2);

    // A change made elsewhere (the API) arrives on the open page by the event stream.
    mark(&b);
    let kill = d.get("/v2/apps/ui/echo/tasks")["tasks"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(d.call("DELETE", &format!("/v2/apps/ui/echo/tasks/{kill}?scale=true"), None).status, 200);
    b.wait_for_text("#summary", "1 of 1 running", T);
    wait_for("the kill to be over", T, || (b.find_all("#task-list tbody tr").len() == 1).then_some(()));
    assert!(still_marked(&b), "the page was updated in place, not reloaded");
    wait_for("the deployment to end", T, idle);

    // A task's output, followed as it grows.
    b.click("#task-list tbody a");
    b.wait_for_text("h1", "Task ui_echo.instance-", T);
    mark(&b);
    b.wait_for_text("#log", "first line", T);
    b.wait_for_text("#log", "second line", T);
    assert!(still_marked(&b));

    // Compare versions and roll back to the first one (one instance -> the definition
    // as created, with one instance); the page shows the new version live.
    b.goto(&format!("{}/apps/ui/echo", d.url));
    let versions = d.get("/v2/apps/ui/echo/versions")["versions"].clone();
    let first = versions.as_array().unwrap().last().unwrap().as_str().unwrap().to_string();
    b.click("#version-list a");
    b.wait_for_text("h1", "changes", T);
    assert!(b.find("pre.diff").text().contains("\"instances\": 2"), "{}", b.find("pre.diff").text());
    b.goto(&format!("{}/apps/ui/echo/-/diff?from={first}", d.url));
    b.click("form[action='/apps/ui/echo/-/rollback'] button");
    b.wait_for_text("h1", "/ui/echo", T);
    wait_for("the rollback", T, idle);
    let app = d.app("/ui/echo");
    assert_eq!(
        (app["instances"].as_u64(), app["cmd"].as_str()),
        (Some(1), Some("echo first line; sleep 2; echo second line; sleep 600"))
    );
    assert_eq!(
        d.get("/v2/apps/ui/echo/versions")["versions"].as_array().unwrap().len(),
        versions.as_array().unwrap().len() + 1
    );

    // At 320 px the app page still fits: nothing but tables scrolls sideways.
    b.set_window_size(320, 800);
    let too_wide = b.execute(
        "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > \
         document.documentElement.clientWidth + 1 && !(e.parentElement && e.parentElement.closest('table, pre'))).map(e => e.tagName + '#' + e.id + '.' + \
         e.className + ' ' + Math.round(e.getBoundingClientRect().right))",
        vec![],
    );
    assert_eq!(too_wide, json!([]), "wider than a 320 px screen (only tables and code may scroll)");
}

#[test]
fn jobs_are_created_run_and_deleted_through_forms() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    let mut v = Visitor::new(&d.url);

    // A wrong schedule is named next to its field.
    let bad = v.post(
        "/jobs/-/new",
        "/jobs/-/new",
        &[("mode", "form"), ("name", "nightly"), ("command", "echo hi"), ("schedule", "61 * * * *")],
    );
    assert_eq!(bad.status, 422, "{}", bad.html);
    assert!(
        bad.html.contains("aria-describedby=\"e-schedule\"") && bad.html.contains("id=\"e-schedule\""),
        "{}",
        bad.html
    );
    let orphan = v.post("/jobs/-/new", "/jobs/-/new", &[("mode", "form"), ("name", "lost"), ("command", "true")]);
    assert!(
        orphan.html.contains("<p class=\"error\" id=\"e-parents\">a dependent job needs at least one parent</p>"),
        "{}",
        orphan.html
    );

    // A daily job in Berlin time, and one that runs after it.
    let made = v.post(
        "/jobs/-/new",
        "/jobs/-/new",
        &[
            ("mode", "form"),
            ("name", "nightly"),
            ("command", "echo \"<i>run</i> $1\""),
            ("schedule", "30 2 * * *"),
            ("scheduleTimeZone", "Europe/Berlin"),
        ],
    );
    assert_eq!((made.status, made.location.as_deref()), (303, Some("/jobs/nightly")), "{}", made.html);
    let child = v.post(
        "/jobs/-/new",
        "/jobs/-/new",
        &[
            ("mode", "json"),
            ("json", r#"{"name": "report", "command": "exit 3", "parents": ["nightly"], "retries": 0}"#),
        ],
    );
    assert_eq!(child.status, 303, "{}", child.html);

    let list = v.get("/jobs").html;
    assert!(list.contains("every day, at 02:30 (Europe/Berlin)") && list.contains("<code>30 2 * * *</code>"), "{list}");
    assert!(list.contains("after nightly succeeds"), "{list}");
    let page = v.get("/jobs/nightly").html;
    assert!(page.contains("02:30:00 (Europe/Berlin)"), "the next run in the job's zone: {page}");
    assert!(page.contains("<code>echo &#34;&#60;i&#62;run&#60;/i&#62; $1&#34;</code>"), "escaped: {page}");
    assert!(page.contains("<a href=\"/jobs/report\">"), "its child in the graph: {page}");
    assert!(v.get("/jobs/report").html.contains("<a href=\"/jobs/nightly\">"), "its parent in the graph");

    // Run now, with arguments; the run and the child's failure show in the history.
    let ran = v.post("/jobs/nightly", "/jobs/nightly/run", &[("arguments", "now")]);
    assert_eq!((ran.status, ran.location.as_deref()), (303, Some("/jobs/nightly")));
    let page = wait_for("the run to finish", T, || {
        let p = v.get("/jobs/nightly").html;
        p.contains("<td>manual</td><td>success</td>").then_some(p)
    });
    assert!(page.contains("<svg class=\"chart\"") && page.contains("<rect class=\"ok\""), "{page}");
    let report = wait_for("the child to fail", T, || {
        let p = v.get("/jobs/report").html;
        p.contains("<td>dependency</td><td>failure</td>").then_some(p)
    });
    assert!(report.contains("<td>3</td>"), "its exit code: {report}");
    assert!(v.get("/").html.contains("<a href=\"/jobs/report\">report</a>"), "the dashboard lists failing jobs");
    let log = d.get("/v1/scheduler/job/stat/nightly");
    assert_eq!(log["taskStatHistory"][0]["status"], "success");

    // Edit keeps the name; a changed schedule shows at once.
    let edit = v.get("/jobs/nightly/edit").html;
    assert!(edit.contains("value=\"30 2 * * *\""), "{edit}");
    let saved = v.post(
        "/jobs/nightly/edit",
        "/jobs/nightly/edit",
        &[
            ("mode", "form"),
            ("command", "true"),
            ("schedule", "*/15 * * * *"),
            ("scheduleTimeZone", ""),
            ("parents", ""),
        ],
    );
    assert_eq!(saved.status, 303, "{}", saved.html);
    assert!(v.get("/jobs/nightly").html.contains("every day, every 15 minutes (UTC)"));
    let renamed = v.post(
        "/jobs/nightly/edit",
        "/jobs/nightly/edit",
        &[
            ("mode", "json"),
            ("json", r#"{"name": "other", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/P1D"}"#),
        ],
    );
    assert_eq!(renamed.status, 422);

    // Delete asks first; the child takes over the schedule.
    assert!(v.get("/jobs/nightly/delete").html.contains("action=\"/jobs/nightly/delete\""));
    let gone = v.post("/jobs/nightly/delete", "/jobs/nightly/delete", &[]);
    assert_eq!((gone.status, gone.location.as_deref()), (303, Some("/jobs")));
    assert_eq!(v.get("/jobs/nightly").status, 404);
    assert!(v.get("/jobs/report").html.contains("every 15 minutes"), "the child inherits the schedule");
}

#[test]
fn deployments_agents_and_events_pages() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &["--agent-attributes", "rack:r<1>"]);
    let mut v = Visitor::new(&d.url);

    // A deployment that cannot finish (its health check never passes) is shown with
    // what it waits for, and rolled back from the page.
    let app = json!({"id": "/stuck", "cmd": "sleep 600", "instances": 1, "cpus": 0.1, "mem": 16,
                     "healthChecks": [{"protocol": "COMMAND", "command": {"value": "false"}, "gracePeriodSeconds": 600}]});
    assert_eq!(d.call("POST", "/v2/apps", Some(&app)).status, 201);
    let page = wait_for("the deployment to wait for health", T, || {
        let p = v.get("/deployments").html;
        p.contains("new instance(s) running, healthy and ready").then_some(p)
    });
    assert!(page.contains("<a href=\"/apps/stuck\">/stuck</a>") && page.contains("Step 2 of 2"), "{page}");
    assert!(page.contains("<li class=\"done\">StartApplication /stuck (done)</li>"), "{page}");
    let id = d.get("/v2/deployments")[0]["id"].as_str().unwrap().to_string();
    assert!(v.get("/").html.contains("step 2 of 2"), "the dashboard lists running deployments");
    let rolled = v.post("/deployments", &format!("/deployments/{id}/rollback"), &[]);
    assert_eq!((rolled.status, rolled.location.as_deref()), (303, Some("/deployments")), "{}", rolled.html);
    wait_for("the created app to be rolled back (removed)", T, || {
        (d.call("GET", "/v2/apps/stuck", None).status == 404 && d.get("/v2/deployments").as_array().unwrap().is_empty())
            .then_some(())
    });
    assert!(v.get("/deployments").html.contains("No deployment is running."));
    assert_eq!(v.post("/apps/-/new", "/deployments/nope/stop", &[]).status, 404);

    // Agents: resources as bars, attributes (escaped), tasks.
    let agents = v.get("/agents").html;
    assert!(agents.contains("<h2 id=\"a-") && agents.contains(">127.0.0.1</h2>"), "{agents}");
    assert!(agents.contains("<dt>rack</dt><dd>r&#60;1&#62;</dd>") && agents.contains("<meter"), "{agents}");
    assert!(agents.contains("status-running\">active</span>"), "{agents}");

    // Events: the newest first, filtered by type.
    let events = v.get("/events").html;
    assert!(events.contains("<span class=\"event-type\">deployment_info</span>"), "{events}");
    let only = v.get("/events?type=api_post_event").html;
    assert!(
        only.contains("event-type\">api_post_event</span>") && !only.contains("event-type\">deployment_info"),
        "{only}"
    );
    assert!(only.contains("data-tail=\"api_post_event\""), "{only}");
}

#[test]
fn jobs_and_the_event_tail_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let d = Dromos::start(dir.path(), &[]);
    let b = Browser::start();

    // Create a cron job through the form, then run it now with an argument.
    b.goto(&format!("{}/jobs", d.url));
    b.click("a[href='/jobs/-/new']");
    b.wait_for_text("h1", "New job", T);
    b.find("#f-name").send_keys("hello");
    b.find("#f-command").send_keys("echo hello $1");
    b.find("#f-schedule").send_keys("0 3 * * 1-5");
    b.find("#f-scheduleTimeZone").send_keys("America/New_York");
    b.click("form[aria-labelledby='by-form'] button[type='submit']");
    b.wait_for_text("h1", "hello", T);
    assert!(b.find("#job-summary").text().contains("on Monday to Friday, at 03:00 (America/New_York)"));
    mark(&b);
    b.find("#arguments").send_keys("world");
    b.click("form[action='/jobs/hello/run'] button");
    // The run shows up in the history (on the page the form redirected to, or live).
    b.wait_for_text("#history-section", "success", T);
    let runs = d.get("/v1/scheduler/job/stat/hello")["taskStatHistory"].clone();
    assert_eq!(runs[0]["trigger"], "MANUAL", "{runs}");

    // The events page tails the bus: an event from elsewhere arrives without a reload.
    b.goto(&format!("{}/events?type=job_run_started", d.url));
    b.find("#event-list");
    mark(&b);
    assert_eq!(d.call("PUT", "/scheduler/job/hello", None).status, 204);
    let newest = b.wait_for_text("#event-list li:first-child", "job_run_started", T);
    assert!(newest.text().contains("\"job\":\"hello\""), "{}", newest.text());
    assert!(still_marked(&b), "the event arrived on the open page");
    wait_for("two started runs listed", T, || (b.find_all("#event-list li").len() == 2).then_some(()));
}
