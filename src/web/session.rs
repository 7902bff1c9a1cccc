//! Browser sessions and CSRF protection for the web UI.
//!
//! A session is a signed cookie, not a server-side record: `v1.<nonce>.<expiry>.<mac>`,
//! where the MAC is HMAC-SHA256 under a key derived from the API token. So sessions
//! survive a restart and work on every dromos that shares the token, and changing the
//! token signs everyone out. Without a token the key is random per process: every
//! browser gets a session on its first page (it is what the CSRF tokens hang on), and a
//! restart only means reloading a form.
//!
//! Every form carries a CSRF token, the HMAC of the session's nonce; [`CsrfForm`] is the
//! only way a web handler reads a form, so no form can skip the check. The cookie is
//! `HttpOnly` and `SameSite=Strict` on top of that.
//!
//! [`guard`] is the web routes' middleware: it finds or issues the session, sends
//! browsers without one to `/login` when dromos has a token, and hands the session to the
//! handlers as a request extension.

use super::Ui;
use crate::api::AppState;
use crate::domain::hex;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use ring::hmac;

/// The cookie's name.
pub const COOKIE: &str = "dromos_session";
/// How long a session lasts (seconds).
pub const LIFETIME: u64 = 12 * 3600;

/// Signs and checks sessions and CSRF tokens.
pub struct Sessions {
    key: hmac::Key,
    /// dromos has an API token: a session is given only to who shows it.
    pub login_required: bool,
}

/// A browser's valid session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    nonce: String,
    /// The token every form of this session carries.
    pub csrf: String,
}

impl Sessions {
    /// Keys derived from the API token (stable across restarts and masters), or random
    /// ones without a token.
    pub fn new(token: Option<&str>) -> Sessions {
        let secret: Vec<u8> = match token {
            Some(t) => {
                hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, t.as_bytes()), b"dromos web sessions").as_ref().to_vec()
            }
            None => random_bytes::<32>().to_vec(),
        };
        Sessions { key: hmac::Key::new(hmac::HMAC_SHA256, &secret), login_required: token.is_some() }
    }

    /// A new session expiring [`LIFETIME`] after `now` (unix seconds), and its cookie value.
    pub fn issue(&self, now: u64) -> (Session, String) {
        self.issue_with(&hex(&random_bytes::<16>()), now + LIFETIME)
    }

    fn issue_with(&self, nonce: &str, expires: u64) -> (Session, String) {
        let body = format!("v1.{nonce}.{expires}");
        let mac = hex(hmac::sign(&self.key, body.as_bytes()).as_ref());
        (self.session(nonce), format!("{body}.{mac}"))
    }

    fn session(&self, nonce: &str) -> Session {
        let csrf = hex(hmac::sign(&self.key, format!("csrf.{nonce}").as_bytes()).as_ref());
        Session { nonce: nonce.to_string(), csrf }
    }

    /// The session a cookie value stands for, if it is ours and has not expired.
    pub fn verify(&self, value: &str, now: u64) -> Option<Session> {
        let (body, mac) = value.rsplit_once('.')?;
        let mut parts = body.split('.');
        let (Some("v1"), Some(nonce), Some(expires), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        hmac::verify(&self.key, body.as_bytes(), &unhex(mac)?).ok()?;
        (expires.parse::<u64>().ok()? > now).then(|| self.session(nonce))
    }

    /// Does a form's token belong to this session? (Constant time.)
    pub fn csrf_ok(&self, session: &Session, token: &str) -> bool {
        unhex(token).is_some_and(|t| hmac::verify(&self.key, format!("csrf.{}", session.nonce).as_bytes(), &t).is_ok())
    }
}

/// The `Set-Cookie` value for a session (an empty value with `max_age` 0 signs out).
pub fn cookie(value: &str, max_age: u64) -> String {
    format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}")
}

/// Our session cookie's value in a request, if any.
pub fn from_headers(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The web routes' middleware (see the module map).
pub async fn guard(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path.starts_with("/static/") {
        return next.run(req).await;
    }
    let now = unix_now();
    let sessions = &st.sessions;
    if let Some(s) = from_headers(req.headers()).and_then(|v| sessions.verify(v, now)) {
        req.extensions_mut().insert(s);
        return next.run(req).await;
    }
    let has_token =
        st.token.as_deref().is_some_and(|t| crate::api::authorized(req.headers().get(header::AUTHORIZATION), t));
    if sessions.login_required && !has_token && path != "/login" {
        if req.method() == Method::GET || req.method() == Method::HEAD {
            let next_page = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let query = form_urlencoded::Serializer::new(String::new()).append_pair("next", next_page).finish();
            return Redirect::to(&format!("/login?{query}")).into_response();
        }
        return (StatusCode::UNAUTHORIZED, "sign in first").into_response();
    }
    // No token needed (or shown in the header): a fresh session, for the CSRF tokens.
    // The login page issues its own after checking the token.
    if path == "/login" && sessions.login_required {
        return next.run(req).await;
    }
    let (s, value) = sessions.issue(now);
    req.extensions_mut().insert(s);
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&cookie(&value, LIFETIME)) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// A form posted from one of our pages: its fields, after the CSRF token was checked
/// against the session. A missing or wrong token answers 403.
pub struct CsrfForm<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send> FromRequest<AppState> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, st: &AppState) -> Result<Self, Response> {
        let session = req.extensions().get::<Session>().cloned();
        let bytes = axum::body::to_bytes(req.into_body(), crate::api::extract::BODY_LIMIT)
            .await
            .map_err(|_| (StatusCode::PAYLOAD_TOO_LARGE, "the form is too large").into_response())?;
        let fields: Vec<(String, String)> = form_urlencoded::parse(&bytes).into_owned().collect();
        let token = fields.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str()).unwrap_or("");
        if !session.is_some_and(|s| st.sessions.csrf_ok(&s, token)) {
            let msg = "This form has expired or did not come from this dromos. Go back, reload the page and try again.";
            return Err((StatusCode::FORBIDDEN, msg).into_response());
        }
        // Every field arrives as text; handlers parse numbers with their own messages.
        let map: serde_json::Map<String, serde_json::Value> =
            fields.into_iter().filter(|(k, _)| k != "csrf").map(|(k, v)| (k, serde_json::Value::String(v))).collect();
        serde_json::from_value(serde_json::Value::Object(map))
            .map(CsrfForm)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("the form is not valid: {e}")).into_response())
    }
}

/// The page chrome for a request: navigation entry and this session's CSRF token.
pub fn ui(nav: &'static str, session: Option<&Session>, st: &AppState) -> Ui {
    Ui { nav, csrf: session.map(|s| s.csrf.clone()).unwrap_or_default(), signed_in: st.sessions.login_required }
}

#[derive(askama::Template)]
#[template(path = "login.html")]
struct Login {
    ui: Ui,
    next: String,
    error: Option<&'static str>,
}

/// Only a path on this site may follow a sign-in (no open redirects).
fn local(next: &str) -> String {
    // Browsers drop tabs and newlines from a Location and read `\` as `/`: only printable
    // ASCII without a backslash, so `/<TAB>/evil.example` cannot become `//evil.example`.
    let printable = next.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    if printable && next.starts_with('/') && !next.starts_with("//") {
        next.to_string()
    } else {
        "/".to_string()
    }
}

/// `GET /login`: the sign-in form (dromos asks for its API token once).
pub async fn login_page(st: State<AppState>, params: crate::api::extract::Params) -> Response {
    let next = local(params.get("next").unwrap_or("/"));
    if !st.sessions.login_required {
        return Redirect::to(&next).into_response();
    }
    super::Page(Login { ui: ui("", None, &st), next, error: None }).into_response()
}

/// `POST /login`: checks the token and starts a session.
pub async fn login(State(st): State<AppState>, body: axum::body::Bytes) -> Response {
    let fields: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let field = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or("");
    let next = local(field("next"));
    let ok = st.token.as_deref().is_some_and(|t| same_text(field("token").trim(), t));
    if !ok {
        let page = Login { ui: ui("", None, &st), next, error: Some("That is not this dromos's token.") };
        return (StatusCode::UNAUTHORIZED, super::Page(page)).into_response();
    }
    let (_, value) = st.sessions.issue(unix_now());
    let mut resp = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie(&value, LIFETIME)) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// `POST /logout`: forgets the session in this browser.
pub async fn logout(CsrfForm(_): CsrfForm<serde_json::Value>) -> Response {
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("dromos_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    resp
}

/// Constant-time comparison of a typed token with the real one.
fn same_text(a: &str, b: &str) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"dromos token comparison");
    hmac::verify(&key, a.as_bytes(), hmac::sign(&key, b.as_bytes()).as_ref()).is_ok()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut b = [0u8; N];
    // The system's random source failing is not recoverable; uuid's v4 is the fallback.
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        for (i, x) in uuid::Uuid::new_v4().as_bytes().iter().cycle().take(N).enumerate() {
            b[i] = *x;
        }
    }
    b
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_verify_only_their_own_unexpired_cookies() {
        let s = Sessions::new(Some("s3cret"));
        let (session, value) = s.issue_with("abcd", 1000);
        assert_eq!(s.verify(&value, 999), Some(session.clone()));
        assert_eq!(s.verify(&value, 1000), None, "expired");
        // The same token signs the same way (another master, or after a restart).
        assert_eq!(Sessions::new(Some("s3cret")).verify(&value, 10), Some(session));
        assert_eq!(Sessions::new(Some("other")).verify(&value, 10), None);
        assert_eq!(Sessions::new(None).verify(&value, 10), None);
        // Tampering with any part breaks the MAC.
        assert_eq!(s.verify(&value.replace(".1000.", ".9999."), 10), None);
        assert_eq!(s.verify(&value.replace("abcd", "abce"), 10), None);
        for junk in ["", "v1", "v1.a.b", "v1.a.1.zz", "v2.abcd.1000.00", "v1.abcd.1000.ab.cd"] {
            assert_eq!(s.verify(junk, 10), None, "{junk}");
        }
    }

    #[test]
    fn csrf_tokens_belong_to_one_session() {
        let s = Sessions::new(None);
        let (a, _) = s.issue(0);
        let (b, _) = s.issue(0);
        assert!(s.csrf_ok(&a, &a.csrf));
        assert!(!s.csrf_ok(&a, &b.csrf));
        assert!(!s.csrf_ok(&a, ""));
        assert!(!s.csrf_ok(&a, "é"));
        assert!(!Sessions::new(None).csrf_ok(&a, &a.csrf), "another key");
    }

    #[test]
    fn only_paths_of_this_site_follow_a_sign_in() {
        assert_eq!(local("/apps?q=a%20b"), "/apps?q=a%20b");
        for bad in
            ["//evil.example", "/\\evil.example", "/\t/evil.example", "/\n/x", "https://evil.example", "", "apps"]
        {
            assert_eq!(local(bad), "/", "{bad:?}");
        }
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = axum::http::HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; dromos_session=v1.x.2.ff; b=2"));
        assert_eq!(from_headers(&h), Some("v1.x.2.ff"));
        assert!(cookie("v", 5).contains("HttpOnly; SameSite=Strict; Max-Age=5"));
    }
}
