//! The apps: the list (`/apps`), one app's page (`/apps/{id}`) with its actions, the
//! new and edit forms, version comparison and the destroy confirmation.
//!
//! Actions are forms posted to `/apps/{id}/-/{scale,suspend,restart,destroy,rollback,
//! kill,edit}` and `/apps/-/new`; they call the API's operations ([`crate::api::apps`]),
//! so a change from the UI is the same change as from curl (same validation, same
//! deployment, same `api_post_event`), then redirect to the app's page. A refused change
//! is shown with the API's message; one refused because a deployment holds the app can
//! be forced from there.

use super::session::{ui, CsrfForm, Session};
use super::{diff, link, ButtonForm, Field, Message, Page, Pages, Ui};
use crate::api::apps::{create_app, delete_app, kill_tasks, restart_app, update, Update};
use crate::api::error::ApiError;
use crate::api::extract::{Origin, Params};
use crate::api::AppState;
use crate::domain::health::Verdict;
use crate::domain::{PathId, TaskId, Timestamp, Violation};
use crate::master::state::AppRecord;
use crate::master::summary::{app_summaries, app_summary, task_health, AppStatus, AppSummary};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

type MaybeSession = Option<Extension<Session>>;

/// The statuses the list filters by, most pressing first.
const STATUSES: [AppStatus; 6] = [
    AppStatus::Running,
    AppStatus::Deploying,
    AppStatus::Waiting,
    AppStatus::Delayed,
    AppStatus::Suspended,
    AppStatus::Unhealthy,
];

// ---------------------------------------------------------------- the list

#[derive(Debug, Default, serde::Deserialize)]
pub struct AppsQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    page: usize,
}

struct AppRow {
    id: String,
    status: &'static str,
    instances: u32,
    running: usize,
    healthy: usize,
    cpus: f64,
    mem: f64,
}

#[derive(Template)]
#[template(path = "apps.html")]
struct Apps {
    ui: Ui,
    query: String,
    status: String,
    statuses: Vec<&'static str>,
    rows: Vec<AppRow>,
    pages: Pages,
}

pub async fn list(
    State(st): State<AppState>,
    session: MaybeSession,
    axum::extract::Query(q): axum::extract::Query<AppsQuery>,
) -> impl IntoResponse {
    let queue = st.master.queue();
    let now = crate::master::now();
    let state = st.master.read().await;
    let row = |rec: &AppRecord, s: AppSummary| AppRow {
        id: rec.current.spec.id.to_string(),
        status: s.status.name(),
        instances: s.instances,
        running: s.running,
        healthy: s.healthy,
        cpus: rec.current.spec.cpus,
        mem: rec.current.spec.mem,
    };
    let by_id = |rec: &&AppRecord| q.q.is_empty() || rec.current.spec.id.to_string().contains(q.q.as_str());
    // Filtering by status needs every app's summary (one pass over the tasks); without
    // it, only the page's apps are summarized.
    let page_link = |p: usize| link("/apps", &[("q", &q.q), ("status", &q.status), ("page", &p.to_string())]);
    let (rows, pages) = if q.status.is_empty() {
        let ids: Vec<&AppRecord> = state.apps.values().filter(by_id).collect();
        let (shown, pages) = Pages::of(ids.len(), q.page, page_link);
        let summary = |rec: &AppRecord| app_summary(rec, &state, queue.get(&rec.current.spec.id), now);
        (ids[shown].iter().map(|rec| row(rec, summary(rec))).collect(), pages)
    } else {
        let matching: Vec<AppRow> = app_summaries(&state, &queue, now)
            .0
            .into_iter()
            .filter(|(rec, s)| by_id(rec) && s.status.name() == q.status)
            .map(|(rec, s)| row(rec, s))
            .collect();
        let (shown, pages) = Pages::of(matching.len(), q.page, page_link);
        (matching.into_iter().skip(shown.start).take(shown.len()).collect(), pages)
    };
    Page(Apps {
        ui: ui("apps", session.as_deref(), &st),
        query: q.q,
        status: q.status,
        statuses: STATUSES.iter().map(|s| s.name()).collect(),
        rows,
        pages,
    })
}

// ---------------------------------------------------------------- routes below /apps/

/// What a path below `/apps/` names: an app's page, or a sub-page or action after the
/// `-` separator (of an app, or of none for `/apps/-/new`).
#[derive(Debug, PartialEq)]
enum Route {
    App(PathId),
    Sub(Option<PathId>, Vec<String>),
}

impl Route {
    fn parse(rest: &str) -> Option<Route> {
        let (app, sub) = match rest.split_once("/-/") {
            Some((app, sub)) => (Some(app), Some(sub)),
            None => match rest.strip_prefix("-/") {
                Some(sub) => (None, Some(sub)),
                None => (Some(rest), None),
            },
        };
        let app = match app {
            Some(a) => Some(PathId::parse_app(&format!("/{}", a.trim_matches('/'))).ok()?),
            None => None,
        };
        match (app, sub) {
            (Some(app), None) => Some(Route::App(app)),
            (app, Some(sub)) => Some(Route::Sub(app, sub.split('/').map(str::to_string).collect())),
            (None, None) => None,
        }
    }
}

pub async fn get_route(
    State(st): State<AppState>,
    session: MaybeSession,
    Path(rest): Path<String>,
    params: Params,
) -> Response {
    let session = session.as_deref();
    match Route::parse(&rest) {
        Some(Route::App(id)) => {
            let page = params.get("tasks").and_then(|p| p.parse().ok()).unwrap_or(0);
            app_page(&st, session, id, page).await
        }
        Some(Route::Sub(None, sub)) if words(&sub)[..] == ["new"] => {
            let form = AppForm::new_app(ui("apps", session, &st));
            Page(form).into_response()
        }
        Some(Route::Sub(Some(id), sub)) => match words(&sub)[..] {
            ["edit"] => edit_page(&st, session, id).await,
            ["diff"] => diff_page(&st, session, id, &params).await,
            ["destroy"] => Message::confirm(
                ui("apps", session, &st),
                &format!("Destroy {id}"),
                "Every task of the app is killed, and the app and its versions are removed.",
                format!("/apps{id}"),
                format!("/apps{id}/-/destroy"),
            ),
            ["tasks", task] => super::tasks::page(&st, session, id, task, &params).await,
            _ => not_found(&st, session, "No such page."),
        },
        _ => not_found(&st, session, "No such app."),
    }
}

fn words(sub: &[String]) -> Vec<&str> {
    sub.iter().map(String::as_str).collect()
}

fn not_found(st: &AppState, session: Option<&Session>, text: &str) -> Response {
    Message::page(StatusCode::NOT_FOUND, ui("apps", session, st), "Not found", text)
}

pub async fn post_route(
    State(st): State<AppState>,
    session: MaybeSession,
    Path(rest): Path<String>,
    origin: Origin,
    CsrfForm(form): CsrfForm<BTreeMap<String, String>>,
) -> Response {
    let session = session.as_deref();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let force = field("force") == "true";
    let Some(Route::Sub(app, sub)) = Route::parse(&rest) else {
        return not_found(&st, session, "No such action.");
    };
    let sub = words(&sub);
    let Some(id) = app else {
        return match sub[..] {
            ["new"] => submit_form(&st, session, None, &form, origin).await,
            _ => not_found(&st, session, "No such action."),
        };
    };
    let back = Redirect::to(&format!("/apps{id}")).into_response();
    let partial = Update { partial: true, must_exist: true, force };
    let result = match sub[..] {
        ["scale"] => match field("instances").trim().parse::<u32>() {
            Ok(n) => update(&st, id.clone(), json!({ "instances": n }), partial, origin).await.map(|_| back),
            Err(_) => Err(ApiError::Invalid(vec![Violation::new("/instances", "must be a whole number, 0 or more")])),
        },
        ["suspend"] => update(&st, id.clone(), json!({"instances": 0}), partial, origin).await.map(|_| back),
        ["rollback"] => {
            update(&st, id.clone(), json!({ "version": field("version") }), partial, origin).await.map(|_| back)
        }
        ["restart"] => restart_app(&st, id.clone(), force).await.map(|_| back),
        ["destroy"] => delete_app(&st, id.clone(), force).await.map(|_| Redirect::to("/apps").into_response()),
        ["kill"] => match field("task").parse::<TaskId>() {
            Ok(task) if task.belongs_to(&id) => {
                let params = Params(vec![("force".into(), force.to_string())]);
                kill_tasks(&st, vec![task], &params, true).await.map(|_| back)
            }
            _ => Err(ApiError::NotFound(format!("The app {id} has no task '{}'", field("task")))),
        },
        ["edit"] => return submit_form(&st, session, Some(id), &form, origin).await,
        _ => return not_found(&st, session, "No such action."),
    };
    result.unwrap_or_else(|e| refused(&st, session, &id, &rest, &form, e))
}

/// A refused action: the API's message and field errors; when a deployment holds the
/// app, a button that sends the same form again with `force`.
fn refused(
    st: &AppState,
    session: Option<&Session>,
    id: &PathId,
    rest: &str,
    form: &BTreeMap<String, String>,
    e: ApiError,
) -> Response {
    let status = e.status();
    let locked = matches!(e, ApiError::Locked { .. });
    let (message, details) = e.explain();
    let mut text = message;
    for (path, err) in details {
        text.push_str(&format!(" {path}: {err}."));
    }
    let page = Message {
        ui: ui("apps", session, st),
        title: "The change was refused".into(),
        text,
        back: Some((format!("/apps{id}"), format!("Back to {id}"))),
        form: locked.then(|| {
            let mut fields: Vec<(String, String)> =
                form.iter().filter(|(k, _)| *k != "force").map(|(k, v)| (k.clone(), v.clone())).collect();
            fields.push(("force".into(), "true".into()));
            ButtonForm { action: format!("/apps/{rest}"), fields, button: "Do it anyway (force)".into(), danger: true }
        }),
    };
    (status, Page(page)).into_response()
}

// ---------------------------------------------------------------- the app page

struct TaskRow {
    id: String,
    address: String,
    state: &'static str,
    health: &'static str,
    version: String,
    active: bool,
}

struct FailureView {
    task: String,
    state: &'static str,
    host: String,
    at: String,
    message: String,
}

struct VersionRow {
    version: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "app.html")]
struct AppPage {
    ui: Ui,
    id: String,
    status: &'static str,
    instances: u32,
    staged: usize,
    running: usize,
    healthy: usize,
    checked: bool,
    version: String,
    waiting: Option<String>,
    deployments: Vec<String>,
    last_failure: Option<FailureView>,
    tasks: Vec<TaskRow>,
    task_pages: Pages,
    /// Newest first.
    versions: Vec<VersionRow>,
    definition: String,
}

/// One app; `page`: which page of its tasks.
async fn app_page(st: &AppState, session: Option<&Session>, id: PathId, page: usize) -> Response {
    let queue = st.master.queue();
    let now = crate::master::now();
    let state = st.master.read().await;
    let Some(rec) = state.apps.get(&id) else {
        return not_found(st, session, &format!("There is no app {id}."));
    };
    let spec = &rec.current.spec;
    let queued = queue.get(&id);
    let s = app_summary(rec, &state, queued, now);
    let checks = spec.health_checks.len();
    let (rows, task_pages) =
        Pages::of(state.tasks_by_app.get(&id).map_or(0, |t| t.len()), page, |p| format!("/apps{id}?tasks={p}"));
    let tasks = state
        .tasks_of(&id)
        .skip(rows.start)
        .take(rows.len())
        .map(|t| {
            let ports: Vec<String> = t.ports.iter().map(u16::to_string).collect();
            let health = match task_health(&state, t, checks) {
                None => "",
                Some(Verdict::Healthy) => "healthy",
                Some(Verdict::Unhealthy) => "failing",
                Some(Verdict::Unknown) => "not checked yet",
            };
            TaskRow {
                id: t.id.to_string(),
                address: if ports.is_empty() { t.host.clone() } else { format!("{}:{}", t.host, ports.join(",")) },
                state: t.state.name(),
                health,
                version: t.version.to_string(),
                active: t.is_active(),
            }
        })
        .collect();
    let waiting = queued.filter(|q| q.count > 0).map(|q| {
        let mut why = format!("{} instance(s) waiting", q.count);
        if let Some(until) = q.delayed_until.filter(|d| *d > now) {
            why.push_str(&format!("; launches held back by the failure backoff until {until}"));
        }
        let declined: Vec<String> = q.rejections.iter().map(|(reason, n)| format!("{reason}: {n} agent(s)")).collect();
        if !declined.is_empty() {
            why.push_str(&format!("; declined by {}", declined.join(", ")));
        }
        why
    });
    let current = rec.current.version;
    Page(AppPage {
        ui: ui("apps", session, st),
        id: id.to_string(),
        status: s.status.name(),
        instances: s.instances,
        staged: s.staged,
        running: s.running,
        healthy: s.healthy,
        checked: checks > 0,
        version: current.to_string(),
        waiting,
        deployments: state.deployments_of(&id).map(|d| d.id.clone()).collect(),
        last_failure: rec.last_failure.as_ref().map(|f| FailureView {
            task: f.task_id.to_string(),
            state: f.state.name(),
            host: f.host.clone(),
            at: f.timestamp.to_string(),
            message: f.message.clone(),
        }),
        tasks,
        task_pages,
        versions: rec
            .versions
            .iter()
            .rev()
            .map(|v| VersionRow { version: v.to_string(), current: *v == current })
            .collect(),
        definition: serde_json::to_string_pretty(spec).unwrap_or_default(),
    })
    .into_response()
}

// ---------------------------------------------------------------- versions

struct DiffLine<'a> {
    sign: &'static str,
    class: &'static str,
    text: &'a str,
}

#[derive(Template)]
#[template(path = "diff.html")]
struct DiffPage<'a> {
    ui: Ui,
    id: String,
    from: String,
    to: String,
    versions: Vec<String>,
    changed: bool,
    lines: Vec<DiffLine<'a>>,
}

/// A stored version's definition as the page shows it.
async fn definition(st: &AppState, id: &PathId, version: &str) -> Option<String> {
    let ts = Timestamp::parse(version)?;
    let av = st.master.store().app_version(id, ts).await.ok()??;
    serde_json::to_string_pretty(&av.spec).ok()
}

async fn diff_page(st: &AppState, session: Option<&Session>, id: PathId, params: &Params) -> Response {
    let versions: Vec<String> = {
        let state = st.master.read().await;
        let Some(rec) = state.apps.get(&id) else {
            return not_found(st, session, &format!("There is no app {id}."));
        };
        rec.versions.iter().rev().map(Timestamp::to_string).collect()
    };
    let newest = versions.first().cloned().unwrap_or_default();
    let to = params.get("to").unwrap_or(&newest).to_string();
    let from = params.get("from").map(str::to_string).unwrap_or_else(|| versions.get(1).unwrap_or(&newest).clone());
    let (Some(a), Some(b)) = (definition(st, &id, &from).await, definition(st, &id, &to).await) else {
        return not_found(st, session, &format!("The app {id} has no such version."));
    };
    let d = diff::lines(&a, &b);
    let lines = d
        .iter()
        .map(|l| match l {
            diff::Line::Same(t) => DiffLine { sign: " ", class: "same", text: t },
            diff::Line::Removed(t) => DiffLine { sign: "-", class: "removed", text: t },
            diff::Line::Added(t) => DiffLine { sign: "+", class: "added", text: t },
        })
        .collect();
    Page(DiffPage { ui: ui("apps", session, st), id: id.to_string(), changed: a != b, from, to, versions, lines })
        .into_response()
}

// ---------------------------------------------------------------- new and edit

#[derive(Template)]
#[template(path = "app_form.html")]
struct AppForm {
    ui: Ui,
    /// The app being edited (none for a new one).
    editing: Option<String>,
    action: String,
    fields: Vec<Field>,
    /// Errors of the form that belong to no field of it.
    form_errors: Vec<String>,
    json: String,
    json_errors: Vec<String>,
    /// Which half was sent: "form" or "json".
    mode: String,
    /// A deployment holds the app: offer `force`.
    locked: bool,
}

/// (name, label, type, hint) of the form's fields; `id` and `image` only for new apps.
const FIELDS: [(&str, &str, &str, &str); 6] = [
    ("id", "Id", "text", "Like /shop/web: lowercase letters, digits, dashes and dots, in groups."),
    ("cmd", "Command", "text", "Run by sh -c; $PORT0 is the first port."),
    ("image", "Docker image", "text", "Optional: run the command in this image."),
    ("instances", "Instances", "number", ""),
    ("cpus", "CPUs", "text", "Like 0.1"),
    ("mem", "Memory (MiB)", "text", ""),
];

impl AppForm {
    fn new_app(ui: Ui) -> AppForm {
        let example = json!({"id": "/", "cmd": "", "instances": 1, "cpus": 0.1, "mem": 64});
        let defaults: BTreeMap<&str, String> =
            [("instances", "1"), ("cpus", "0.1"), ("mem", "64")].into_iter().map(|(k, v)| (k, v.to_string())).collect();
        AppForm {
            ui,
            editing: None,
            action: "/apps/-/new".into(),
            fields: fields(true, |name| defaults.get(name).cloned().unwrap_or_default()),
            form_errors: vec![],
            json: serde_json::to_string_pretty(&example).unwrap_or_default(),
            json_errors: vec![],
            mode: "form".into(),
            locked: false,
        }
    }
}

fn fields(new: bool, value: impl Fn(&str) -> String) -> Vec<Field> {
    FIELDS
        .iter()
        .filter(|(name, ..)| new || !matches!(*name, "id" | "image"))
        .map(|&(name, label, kind, hint)| Field { name, label, kind, value: value(name), hint, errors: vec![] })
        .collect()
}

async fn edit_page(st: &AppState, session: Option<&Session>, id: PathId) -> Response {
    let state = st.master.read().await;
    let Some(rec) = state.apps.get(&id) else {
        return not_found(st, session, &format!("There is no app {id}."));
    };
    let spec = &rec.current.spec;
    let value = |name: &str| match name {
        "cmd" => spec.cmd.clone().unwrap_or_default(),
        "instances" => spec.instances.to_string(),
        "cpus" => spec.cpus.to_string(),
        "mem" => spec.mem.to_string(),
        _ => String::new(),
    };
    Page(AppForm {
        ui: ui("apps", session, st),
        editing: Some(id.to_string()),
        action: format!("/apps{id}/-/edit"),
        fields: fields(false, value),
        form_errors: vec![],
        json: serde_json::to_string_pretty(spec).unwrap_or_default(),
        json_errors: vec![],
        mode: "form".into(),
        locked: false,
    })
    .into_response()
}

/// The JSON the form's fields stand for, and what is wrong with the numbers typed (the
/// rest is the API's to judge, so the errors are the same as through the API).
fn form_json(form: &BTreeMap<String, String>, new: bool) -> (Value, Vec<(String, String)>) {
    let mut m = Map::new();
    let mut wrong = vec![];
    let text = |k: &str| form.get(k).map(|v| v.trim()).unwrap_or("");
    if new {
        m.insert("id".into(), json!(text("id")));
        if !text("image").is_empty() {
            m.insert("container".into(), json!({"type": "DOCKER", "docker": {"image": text("image")}}));
        }
    }
    if !text("cmd").is_empty() {
        m.insert("cmd".into(), json!(text("cmd")));
    }
    for k in ["instances", "cpus", "mem"] {
        let v = text(k);
        if v.is_empty() {
            continue;
        }
        let n = if k == "instances" {
            v.parse::<u64>().ok().map(|n| json!(n))
        } else {
            v.parse::<f64>().ok().filter(|f| f.is_finite()).map(|f| json!(f))
        };
        match n {
            Some(n) => drop(m.insert(k.into(), n)),
            None if k == "instances" => wrong.push((format!("/{k}"), "must be a whole number, 0 or more".into())),
            None => wrong.push((format!("/{k}"), "must be a number, like 0.5".into())),
        }
    }
    (Value::Object(m), wrong)
}

/// A new or edited app from either half of the form: the fields (a partial update when
/// editing) or the JSON (the whole definition). Errors go back next to their field.
async fn submit_form(
    st: &AppState,
    session: Option<&Session>,
    editing: Option<PathId>,
    form: &BTreeMap<String, String>,
    origin: Origin,
) -> Response {
    let new = editing.is_none();
    let by_json = form.get("mode").map(String::as_str) == Some("json");
    let force = form.get("force").map(String::as_str) == Some("true");
    let json_text = form.get("json").cloned().unwrap_or_default();
    let (body, wrong) = if by_json {
        (crate::api::extract::parse_json(&axum::body::Bytes::from(json_text.clone())), vec![])
    } else {
        let (body, wrong) = form_json(form, new);
        (Ok(body), wrong)
    };
    let result = match (body, &editing) {
        (Err(e), _) => Err(e),
        // Numbers that are not numbers, with whatever else the API finds wrong.
        (Ok(body), _) if !wrong.is_empty() => {
            let mut v: Vec<Violation> = wrong.iter().map(|(p, m)| Violation::new(p.clone(), m.clone())).collect();
            let check = match &editing {
                None => crate::api::dto::app::parse_app(body, None).err(),
                Some(_) => None,
            };
            if let Some(ApiError::Invalid(more)) = check {
                v.extend(more.into_iter().filter(|x| !wrong.iter().any(|(p, _)| *p == x.path)));
            }
            Err(ApiError::Invalid(v))
        }
        (Ok(body), None) => {
            create_app(st, body, origin).await.map(|(v, _)| v["id"].as_str().unwrap_or("/").to_string())
        }
        (Ok(body), Some(id)) => {
            let how = Update { partial: !by_json, must_exist: true, force };
            update(st, id.clone(), body, how, origin).await.map(|_| id.to_string())
        }
    };
    let e = match result {
        Ok(id) => return Redirect::to(&format!("/apps{id}")).into_response(),
        Err(e) => e,
    };
    let status = e.status();
    let locked = matches!(e, ApiError::Locked { .. });
    let (message, details) = e.explain();
    let mut fields = fields(new, |name| form.get(name).cloned().unwrap_or_default());
    let (mut form_errors, mut json_errors) = (vec![], vec![]);
    for (path, err) in details {
        if by_json {
            json_errors.push(format!("{path}: {err}"));
        } else if let Some(f) = fields.iter_mut().find(|f| path.strip_prefix('/') == Some(f.name)) {
            f.errors.push(err);
        } else if path.starts_with("/container") && new {
            // The image field is the only part of the container the form sets.
            if let Some(f) = fields.iter_mut().find(|f| f.name == "image") {
                f.errors.push(format!("{path}: {err}"));
            }
        } else {
            form_errors.push(format!("{path}: {err}"));
        }
    }
    let errors = if by_json { &mut json_errors } else { &mut form_errors };
    if errors.is_empty() && fields.iter().all(|f| f.errors.is_empty()) {
        errors.push(message);
    }
    let page = AppForm {
        ui: ui("apps", session, st),
        action: match &editing {
            Some(id) => format!("/apps{id}/-/edit"),
            None => "/apps/-/new".into(),
        },
        editing: editing.map(|id| id.to_string()),
        fields,
        form_errors,
        json: if by_json {
            json_text
        } else {
            serde_json::to_string_pretty(&form_json(form, new).0).unwrap_or_default()
        },
        json_errors,
        mode: if by_json { "json" } else { "form" }.into(),
        locked,
    };
    (status, Page(page)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_split_at_the_separator() {
        let id = |s: &str| PathId::parse_app(s).unwrap();
        assert_eq!(Route::parse("shop/web"), Some(Route::App(id("/shop/web"))));
        assert_eq!(Route::parse("shop/web/-/edit"), Some(Route::Sub(Some(id("/shop/web")), vec!["edit".into()])));
        assert_eq!(
            Route::parse("web/-/tasks/web.instance-1._app.1"),
            Some(Route::Sub(Some(id("/web")), vec!["tasks".into(), "web.instance-1._app.1".into()]))
        );
        assert_eq!(Route::parse("-/new"), Some(Route::Sub(None, vec!["new".into()])));
        assert_eq!(Route::parse("Bad..Id"), None);
        assert_eq!(Route::parse("../etc/-/edit"), None);
    }

    #[test]
    fn form_fields_become_the_api_json() {
        let form: BTreeMap<String, String> =
            [("id", "/a"), ("cmd", " sleep 1 "), ("instances", "2"), ("cpus", "0.5"), ("mem", "lots"), ("image", "")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let wrong = vec![("/mem".to_string(), "must be a number, like 0.5".to_string())];
        assert_eq!(
            form_json(&form, true),
            (json!({"id": "/a", "cmd": "sleep 1", "instances": 2, "cpus": 0.5}), wrong.clone())
        );
        assert_eq!(form_json(&form, false), (json!({"cmd": "sleep 1", "instances": 2, "cpus": 0.5}), wrong));
    }

    #[test]
    fn values_are_escaped() {
        let page = Apps {
            ui: Ui { nav: "apps", csrf: "t".into(), signed_in: false },
            query: "\"><script>alert(1)</script>".into(),
            status: String::new(),
            statuses: vec!["running"],
            rows: vec![AppRow {
                id: "/<b>x</b>".into(),
                status: "running",
                instances: 1,
                running: 1,
                healthy: 0,
                cpus: 0.5,
                mem: 64.0,
            }],
            pages: Pages { first: 1, last: 1, total: 2, prev: None, next: Some("/apps?q=a&page=1".into()) },
        };
        let html = page.render().expect("renders");
        assert!(!html.contains("<script>alert(1)") && !html.contains("<b>x"), "{html}");
        assert!(html.contains("value=\"&#34;&#62;&#60;script&#62;alert(1)&#60;/script&#62;\""), "{html}");
        assert!(html.contains(">/&#60;b&#62;x&#60;/b&#62;</a></td>"), "{html}");
        assert!(html.contains("href=\"/apps?q=a&#38;page=1\""), "{html}");
        assert!(html.contains("aria-current=\"page\">Apps"), "{html}");
    }
}
