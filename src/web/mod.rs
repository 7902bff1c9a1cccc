//! The web UI: server-rendered pages (askama), for what an operator does by clicking.
//! Templates live in `web/templates/` (found through `askama.toml`), the stylesheet and
//! the one small script in `web/static/`, compiled into the binary. Every value is
//! HTML-escaped by askama.
//!
//! Pages read the master's state under its read lock, as the API does, and share its
//! vocabulary through [`crate::master::summary`]. Changes are forms posted to the page
//! they came from (`.../-/<action>`) and go through the same operations as the API
//! ([`crate::api::apps`]), then redirect back (post/redirect/get): every basic action
//! works without JavaScript.
//!
//! - [`session`]: sign-in when dromos has a token, signed session cookies, CSRF tokens.
//! - [`dashboard`]: `/`, the cluster at a glance.
//! - [`apps`]: `/apps` (filtered, paginated), `/apps/{id}` (status, tasks, versions,
//!   actions), `/apps/{id}/-/{edit,diff,destroy}`, `/apps/-/new`.
//! - [`tasks`]: `/apps/{id}/-/tasks/{taskId}`, a task with its stdout/stderr.
//! - [`cluster`]: `/deployments` (roll back, stop), `/agents`, `/events` (live tail).
//! - [`jobs`]: `/jobs`, `/jobs/{name}` (schedule, history chart, dependency graph,
//!   run now), `/jobs/{name}/{edit,delete}`, `/jobs/-/new`.
//! - [`diff`]: the line diff behind version comparison (pure); [`words`]: schedules in
//!   words (pure).
//!
//! `-` separates an app id from what follows: it is not a valid id segment, so
//! `/apps/shop/-/edit` cannot be mistaken for an app called `/shop/-/edit`.

pub mod apps;
pub mod cluster;
pub mod dashboard;
pub mod diff;
pub mod jobs;
pub mod session;
pub mod tasks;
pub mod words;

use crate::api::AppState;
use askama::Template;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// What every page's frame needs: which navigation entry is current, the CSRF token
/// for its forms, and whether there is a session to sign out of.
pub struct Ui {
    pub nav: &'static str,
    pub csrf: String,
    pub signed_in: bool,
}

/// The first path segments of the UI's pages (everything else is the API).
const PAGES: &[&str] = &["", "apps", "jobs", "deployments", "agents", "events", "login", "logout", "static"];

/// Is `path` one of the UI's pages (guarded by [`session::guard`], not the API token)?
pub fn is_page(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    path.starts_with('/') && PAGES.contains(&first)
}

/// The UI's routes (merged into the API's router, behind the session guard).
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(dashboard::page))
        .route("/apps", get(apps::list))
        .route("/apps/{*rest}", get(apps::get_route).post(apps::post_route))
        .route("/deployments", get(cluster::deployments))
        .route("/deployments/{id}/{action}", axum::routing::post(cluster::deployment_action))
        .route("/agents", get(cluster::agents))
        .route("/events", get(cluster::events))
        .route("/jobs", get(jobs::list))
        .route("/jobs/{name}", get(jobs::page))
        .route("/jobs/{name}/{action}", get(jobs::sub_page).post(jobs::action))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", axum::routing::post(session::logout))
        .route("/static/dromos.css", get(stylesheet))
        .route("/static/dromos.js", get(script))
        .layer(axum::middleware::from_fn_with_state(state.clone(), session::guard))
}

/// A rendered page: 200 with the HTML, or 500 if a template failed (it never should:
/// templates are checked when dromos is compiled).
pub struct Page<T>(pub T);

impl<T: Template> IntoResponse for Page<T> {
    fn into_response(self) -> Response {
        match self.0.render() {
            Ok(html) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
            Err(e) => {
                (StatusCode::INTERNAL_SERVER_ERROR, format!("the page could not be rendered: {e}")).into_response()
            }
        }
    }
}

/// A page that only says something went wrong (or was not found), with a way back.
#[derive(Template)]
#[template(path = "message.html")]
pub struct Message {
    pub ui: Ui,
    pub title: String,
    pub text: String,
    /// Where to go from here: (link, label).
    pub back: Option<(String, String)>,
    /// A button that posts a form (a confirmation, or the same change forced).
    pub form: Option<ButtonForm>,
}

/// A form that is only a button: where it posts, its hidden fields, its label.
pub struct ButtonForm {
    pub action: String,
    pub fields: Vec<(String, String)>,
    pub button: String,
    /// Styled as destructive.
    pub danger: bool,
}

impl Message {
    pub fn page(status: StatusCode, ui: Ui, title: &str, text: impl Into<String>) -> Response {
        let m = Message { ui, title: title.to_string(), text: text.into(), back: None, form: None };
        (status, Page(m)).into_response()
    }

    /// "Really?": what will happen, a destructive button posting to `action`, and a way
    /// back to `back`.
    pub fn confirm(ui: Ui, what: &str, text: &str, back: String, action: String) -> Response {
        let form = ButtonForm { action, fields: vec![], button: what.to_string(), danger: true };
        let m = Message {
            ui,
            title: format!("{what}?"),
            text: text.to_string(),
            back: Some((back, "Keep it".into())),
            form: Some(form),
        };
        Page(m).into_response()
    }
}

/// One input of a form (the app and job forms), with what the user typed and what was
/// wrong with it. Rendered by `fields.html`.
pub struct Field {
    /// The input's name, which is also the JSON field it sets.
    pub name: &'static str,
    pub label: &'static str,
    /// The input's `type`.
    pub kind: &'static str,
    pub value: String,
    pub hint: &'static str,
    pub errors: Vec<String>,
}

async fn stylesheet() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")],
        include_str!("../../web/static/dromos.css"),
    )
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")],
        include_str!("../../web/static/dromos.js"),
    )
}

/// Rows per page of every list that can grow with the cluster (apps, tasks, jobs,
/// agents, deployments): pages stay small however large the cluster is.
pub const PAGE_SIZE: usize = 100;

/// Where a page of a long list is: rows `first..=last` of `total`, and the links to
/// the pages before and after.
pub struct Pages {
    pub first: usize,
    pub last: usize,
    pub total: usize,
    pub prev: Option<String>,
    pub next: Option<String>,
}

impl Pages {
    /// Page `page` (from 0, clamped to the last) of `total` rows; `link(p)` is page
    /// `p`'s address. Returns the rows to show and the pager.
    pub fn of(total: usize, page: usize, link: impl Fn(usize) -> String) -> (std::ops::Range<usize>, Pages) {
        let page = page.min(total.saturating_sub(1) / PAGE_SIZE);
        let rows = page * PAGE_SIZE..((page + 1) * PAGE_SIZE).min(total);
        let pages = Pages {
            first: rows.start + usize::from(!rows.is_empty()),
            last: rows.end,
            total,
            prev: (page > 0).then(|| link(page - 1)),
            next: (rows.end < total).then(|| link(page + 1)),
        };
        (rows, pages)
    }

    /// Whether there is more than one page.
    pub fn split(&self) -> bool {
        self.prev.is_some() || self.next.is_some()
    }
}

/// `base` with `pairs` as its query string (every value URL-encoded).
pub fn link(base: &str, pairs: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        query.append_pair(k, v);
    }
    format!("{base}?{}", query.finish())
}

/// Used and total of one resource, formatted for display.
pub struct Usage {
    pub used: String,
    pub total: String,
    pub percent: String,
}

impl Usage {
    pub fn new(used: f64, total: f64, decimals: usize) -> Usage {
        let percent = if total > 0.0 { used / total * 100.0 } else { 0.0 };
        Usage {
            used: format!("{used:.decimals$}"),
            total: format!("{total:.decimals$}"),
            percent: format!("{percent:.0}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lists_are_split_into_pages() {
        let l = |p: usize| format!("/x?page={p}");
        let (rows, p) = Pages::of(250, 1, l);
        assert_eq!(
            (rows, p.first, p.last, p.prev.as_deref(), p.next.as_deref()),
            (100..200, 101, 200, Some("/x?page=0"), Some("/x?page=2"))
        );
        let (rows, p) = Pages::of(250, 9, l);
        assert_eq!((rows, p.first, p.last, p.next), (200..250, 201, 250, None));
        let (rows, p) = Pages::of(0, 3, l);
        assert_eq!((rows, p.first, p.last, p.split()), (0..0, 0, 0, false));
        assert_eq!(link("/apps", &[("q", "a b&c"), ("page", "2")]), "/apps?q=a+b%26c&page=2");
    }

    #[test]
    fn pages_and_api_paths_are_told_apart() {
        for p in ["/", "/apps", "/apps/x/-/edit", "/login", "/static/dromos.css"] {
            assert!(is_page(p), "{p}");
        }
        for p in ["/v2/apps", "/ping", "/metrics", "/scheduler/jobs", "/v1/jobs", "/leader", "/appsx", ""] {
            assert!(!is_page(p), "{p}");
        }
    }
}
