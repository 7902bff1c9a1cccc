//! The node: what answers HTTP on every master, leader or not.
//!
//! While this master leads, requests go to the API router of its current term
//! ([`Node::serve`] installs it when a term starts and takes it away when the term
//! ends). Otherwise they are forwarded to the leader, as Marathon's standbys did:
//! writes, reads, the web UI and the `/v2/events` stream alike (the response streams
//! back as it comes), with `X-Marathon-Leader` from the leader's answer. Only these are
//! answered here:
//!
//! - `/ping`, for probes of this process;
//! - the agents' `/v1/agent/stream`: agents talk to the leader directly, so a follower
//!   turns them away with 503 and the leader's URL in `X-Marathon-Leader`;
//! - anything while no leader is known (an election, or this master's etcd session is
//!   unconfirmed): 503 with `Retry-After`, never an answer from stale state;
//! - a request another master forwarded already (`X-Dromos-Forwarded-By`): masters that
//!   disagree about the leader for a moment must not bounce it between them.

use crate::master::leadership::{Leadership, Role};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::ServiceExt;

/// Marks a request a master forwarded (its value: that master's URL).
pub const FORWARDED_BY: HeaderName = HeaderName::from_static("x-dromos-forwarded-by");
/// How long the leader may take to connect and to answer with a response head.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest an agent's session request waits at a master for a leader to be up.
const AGENT_HOLD: Duration = Duration::from_secs(5);
/// How long the leader may take to answer a follower's `/ping`.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Headers that belong to one connection, not to the request (RFC 9110, 7.6.1).
const HOP_BY_HOP: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host"];

pub struct Node {
    leadership: Leadership,
    /// The API of this master's current term, while it leads.
    serving: tokio::sync::watch::Sender<Option<Router>>,
    /// The leader that last failed to answer [`Node::leader_answers`], if it did.
    silent: Mutex<Option<String>>,
    client: Client<HttpConnector, Body>,
}

impl Node {
    pub fn new(leadership: Leadership) -> Arc<Node> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(connector);
        let serving = tokio::sync::watch::channel(None).0;
        Arc::new(Node { leadership, serving, silent: Mutex::new(None), client })
    }

    /// Starts (`Some`) or ends (`None`) serving a term's API.
    pub fn serve(&self, api: Option<Router>) {
        self.serving.send_replace(api);
    }

    /// Whether a term's API is being served.
    pub fn is_serving(&self) -> bool {
        self.serving.borrow().is_some()
    }

    /// Whether another master leads and answers its `/ping` within [`PROBE_TIMEOUT`]
    /// (a follower's warm copy loads only when it does not).
    pub async fn leader_answers(&self) -> bool {
        let Role::Follower { leader: Some(leader) } = self.leadership.role() else { return false };
        let Ok(uri) = format!("{}/ping", leader.trim_end_matches('/')).parse::<Uri>() else { return false };
        let Ok(req) = Request::get(uri).body(Body::empty()) else { return false };
        let answer = tokio::time::timeout(PROBE_TIMEOUT, self.client.request(req)).await;
        let answered = matches!(answer, Ok(Ok(r)) if r.status().is_success());
        if let Ok(mut silent) = self.silent.lock() {
            *silent = (!answered).then_some(leader);
        }
        answered
    }

    /// Whether `leader` is the one that last failed to answer the probe.
    fn is_silent(&self, leader: &str) -> bool {
        self.silent.lock().is_ok_and(|s| s.as_deref() == Some(leader))
    }

    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    /// The router to serve: every request goes through [`dispatch`].
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new().fallback(dispatch).with_state(self.clone())
    }
}

async fn dispatch(State(node): State<Arc<Node>>, req: Request) -> Response {
    let api = node.serving.borrow().clone();
    if let Some(api) = api {
        return serve(api, req).await;
    }
    let path = req.uri().path();
    if path == "/ping" {
        return super::system::ping().await.into_response();
    }
    if path == "/v1/agent/stream" {
        return agent_stream(&node, req).await;
    }
    let leader = match node.leadership.role() {
        Role::Leader { .. } => {
            return unavailable("this master is taking over as leader (loading the state); retry shortly", None)
        }
        Role::Follower { leader } => leader,
    };
    let Some(leader) = leader else {
        return unavailable("no leader is known right now (an election is under way); retry shortly", None);
    };
    if req.headers().contains_key(FORWARDED_BY) {
        return unavailable("the masters do not agree on the leader yet; retry shortly", Some(&leader));
    }
    forward(&node, &leader, req).await
}

async fn serve(api: Router, req: Request) -> Response {
    match api.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// An agent's session request to a master that does not serve. Agents talk to the
/// leader itself: while the known leader answers, the agent is turned away with its
/// URL. While no leader is known, or the known one stopped answering (killed, frozen,
/// cut off), the request is held until a leader is up (at most [`AGENT_HOLD`]): this
/// master's own next term takes it, or the 503 names the new leader. So thousands of
/// agents wait for the next leader rather than retry in a storm, and register the
/// moment it serves.
async fn agent_stream(node: &Node, req: Request) -> Response {
    let known = match node.leadership.role() {
        Role::Leader { .. } => None, // taking over: wait for the term to serve
        Role::Follower { leader } => leader,
    };
    if let Some(leader) = known.as_deref().filter(|l| !node.is_silent(l)) {
        return unavailable("this master does not lead: connect to the leader", Some(leader));
    }
    let mut role = node.leadership.watch();
    let mut serving = node.serving.subscribe();
    let up = tokio::time::timeout(AGENT_HOLD, async {
        loop {
            if let Some(api) = serving.borrow_and_update().clone() {
                return Some(api);
            }
            if matches!(&*role.borrow_and_update(), Role::Follower { leader: Some(l) } if known.as_ref() != Some(l)) {
                return None;
            }
            tokio::select! {
                r = role.changed() => if r.is_err() { return None },
                s = serving.changed() => if s.is_err() { return None },
            }
        }
    })
    .await;
    if let Ok(Some(api)) = up {
        return serve(api, req).await;
    }
    match node.leadership.role() {
        Role::Follower { leader: Some(leader) } => {
            unavailable("this master does not lead: connect to the leader", Some(&leader))
        }
        _ => unavailable("no leader is serving yet (an election or a takeover is under way); retry shortly", None),
    }
}

/// 503 in the API's error format (which carries `Retry-After`), with the leader if
/// known.
fn unavailable(message: &str, leader: Option<&str>) -> Response {
    let mut resp = super::error::ApiError::Unavailable(message.to_string()).into_response();
    if let Some(v) = leader.and_then(|l| HeaderValue::from_str(l).ok()) {
        resp.headers_mut().insert("x-marathon-leader", v);
    }
    resp
}

/// Sends `req` to the leader and streams its answer back.
async fn forward(node: &Node, leader: &str, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let target = format!("{leader}{}", parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    let Ok(uri) = target.parse::<Uri>() else {
        return unavailable("the leader's advertised URL is not usable", Some(leader));
    };
    parts.uri = uri;
    for h in HOP_BY_HOP {
        parts.headers.remove(*h);
    }
    if let Ok(v) = HeaderValue::from_str(node.leadership.advertise()) {
        parts.headers.insert(FORWARDED_BY, v);
    }
    // The leader sees the client's address, not this master's.
    let client = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    if let Some(ip) = client {
        let chain = match parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(earlier) => format!("{earlier}, {ip}"),
            None => ip.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&chain) {
            parts.headers.insert("x-forwarded-for", v);
        }
    }
    // A leader that froze still accepts connections (the kernel does): give up on it
    // as soon as another master leads, for the response head and for a streaming body.
    let sent = tokio::select! {
        sent = tokio::time::timeout(LEADER_TIMEOUT, node.client.request(Request::from_parts(parts, body))) => sent,
        _ = leader_changes(node, leader) => return unavailable("the leader changed; retry", None),
    };
    match sent {
        Ok(Ok(resp)) => {
            let (mut parts, body) = resp.into_parts();
            for h in HOP_BY_HOP {
                parts.headers.remove(*h);
            }
            let stream = body.into_data_stream().take_until(Box::pin(leader_changes(node, leader)));
            Response::from_parts(parts, Body::from_stream(stream))
        }
        Ok(Err(e)) => {
            tracing::warn!(%leader, "forwarding to the leader failed: {e}");
            let mut resp = unavailable("the leader cannot be reached; retry shortly", Some(leader));
            *resp.status_mut() = StatusCode::BAD_GATEWAY;
            resp
        }
        Err(_) => unavailable("the leader did not answer in time; retry shortly", Some(leader)),
    }
}

/// Resolves once `leader` is no longer the leader this master forwards to.
fn leader_changes(node: &Node, leader: &str) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut role = node.leadership.watch();
    let leader = leader.to_string();
    async move {
        let _ = role.wait_for(|r| !matches!(r, Role::Follower { leader: Some(l) } if *l == leader)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    fn agent_request() -> Request {
        Request::get("/v1/agent/stream").body(Body::empty()).expect("a valid request")
    }

    async fn text(resp: Response) -> String {
        let bytes = resp.into_body().collect().await.expect("a body").to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// A term's API that answers agents' session requests.
    fn term_api() -> Router {
        Router::new().route("/v1/agent/stream", get(|| async { "taken by the new term" }))
    }

    /// While no leader serves, an agent's session request waits, and the term that
    /// starts serving takes it.
    #[tokio::test]
    async fn agents_wait_for_the_next_term() {
        let leadership = Leadership::single("http://127.0.0.1:1");
        let node = Node::new(leadership.clone());
        node.serve(Some(term_api()));
        // The term ends: no leader for a moment, then a term that does not serve yet.
        node.serve(None);
        leadership.abdicate();
        let pending = tokio::spawn(node.router().oneshot(agent_request()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(matches!(leadership.role(), Role::Leader { .. }), "the next term leads");
        assert!(!pending.is_finished(), "held while no term serves");
        node.serve(Some(term_api()));
        let resp = pending.await.expect("the request task").expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(text(resp).await, "taken by the new term");
    }

    /// A follower whose leader answers turns agents away at once with the leader's URL;
    /// once the leader fails the probe, agents are held instead.
    #[tokio::test]
    async fn agents_are_sent_to_a_live_leader_and_held_while_it_is_silent() {
        // Nothing listens on port 1: the probe fails.
        let leader = "http://127.0.0.1:1";
        let node = Node::new(Leadership::following(leader, "http://127.0.0.1:2"));
        let resp = node.router().oneshot(agent_request()).await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers().get("x-marathon-leader").and_then(|v| v.to_str().ok()), Some(leader));
        assert!(!node.leader_answers().await);
        let pending = tokio::spawn(node.router().oneshot(agent_request()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!pending.is_finished(), "held while the leader is silent");
        pending.abort();
    }
}
