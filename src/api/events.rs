//! `GET /v2/events`: the event bus as Server-Sent Events, the way Marathon serves it.
//!
//! - Only for `Accept: text/event-stream` (Marathon answers anything else with 405).
//! - `?event_type=a&event_type=b` keeps only those types (unknown types never match).
//! - The first frame is `event_stream_attached` for this subscriber alone; then, on a
//!   reconnect with `Last-Event-ID`, the events it missed (or `event_stream_resync`);
//!   then the live events. A bare CRLF every [`KEEPALIVE`] keeps proxies and clients
//!   from timing the stream out (Jetty's heartbeat, which Marathon kept).
//! - A subscriber that cannot keep up is sent `event_stream_error` and disconnected:
//!   it reconnects with its `Last-Event-ID`.
//!
//! `POST /v2/events` takes one kind of report from clients: a load balancer naming an
//! app it left out of its config (`load_balancer_rejected_app_event`).
//!
//! Frames queued together go out in one write, and a busy stream is written at most
//! every [`MIN_WRITE_GAP`] (an event after a quiet spell goes at once): the cost is one
//! syscall per batch, not per event.

use super::dto::from_value;
use super::error::ApiError;
use super::extract::{JsonBody, Origin, Params};
use super::AppState;
use crate::domain::event::EventKind;
use crate::domain::Violation;
use crate::events::{frame, Frame, CUT_OFF};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::Receiver;

/// How often an idle stream gets a keep-alive line.
pub const KEEPALIVE: Duration = Duration::from_secs(10);
/// At most this many bytes of frames go out in one write.
const BATCH_BYTES: usize = 64 * 1024;
/// Least time between two writes to one subscriber while events keep coming: an event
/// after a quiet spell goes out at once, a busy stream goes out in batches. With 1,000
/// subscribers and 200 events/s this turns 200,000 writes a second into 50,000, which
/// is most of the CPU the bus costs, for at most this much extra delay.
const MIN_WRITE_GAP: Duration = Duration::from_millis(20);

pub async fn stream(State(st): State<AppState>, headers: HeaderMap, params: Params, origin: Origin) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()).unwrap_or("");
    if !accept.contains("text/event-stream") {
        let body = serde_json::json!({
            "message": "the event stream needs the header 'Accept: text/event-stream'"
        });
        return (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response();
    }
    let filter: Vec<String> = params.all("event_type").map(str::to_string).collect();
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let sub = st.master.events().subscribe(last);

    let mut first = VecDeque::new();
    let attached = serde_json::json!({
        "remoteAddress": origin.client_ip,
        "eventType": "event_stream_attached",
        "timestamp": crate::master::now(),
    });
    if wanted(&filter, "event_stream_attached") {
        first.push_back(frame(None, "event_stream_attached", &attached.to_string()));
    }
    first.extend(sub.resync);
    first.extend(sub.backlog.iter().filter(|f| wanted(&filter, f.event_type)).map(|f| f.bytes.clone()));

    let outstanding = st.master.events().outstanding();
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let subscriber =
        Subscriber { filter, live: sub.live, first, keepalive, last_write: None, done: false, outstanding };
    let body = futures_util::stream::unfold(subscriber, |mut s| async move {
        let chunk = s.next().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), s))
    });
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream;charset=UTF-8"));
    // The stream is the connection (Marathon's `Connection: close`): when it ends, so
    // does the connection, and the client knows to reconnect.
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    // Proxies such as nginx must pass the stream on as it comes.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// What a client may publish on the bus: a load balancer's report of an app it left out.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Report {
    event_type: String,
    load_balancer: String,
    app_id: String,
    label: String,
    message: String,
}

/// Longest text accepted in a report's fields.
const REPORT_FIELD_MAX: usize = 4096;

/// `POST /v2/events`: publishes a client's report (only `load_balancer_rejected_app_event`,
/// sent by `dromos haproxy`) to every subscriber. Answers 202.
pub async fn report(State(st): State<AppState>, JsonBody(body): JsonBody) -> Result<StatusCode, ApiError> {
    let r: Report = from_value(body)?;
    if r.event_type != "load_balancer_rejected_app_event" {
        return Err(ApiError::Invalid(vec![Violation::new(
            "/eventType",
            "only load_balancer_rejected_app_event can be posted",
        )]));
    }
    let fields =
        [("/loadBalancer", &r.load_balancer), ("/appId", &r.app_id), ("/label", &r.label), ("/message", &r.message)];
    let bad: Vec<Violation> = fields
        .iter()
        .filter(|(_, v)| v.is_empty() || v.len() > REPORT_FIELD_MAX)
        .map(|(path, _)| Violation::new(*path, format!("must be 1 to {REPORT_FIELD_MAX} bytes long")))
        .collect();
    if !bad.is_empty() {
        return Err(ApiError::Invalid(bad));
    }
    let Report { load_balancer, app_id, label, message, .. } = r;
    let event = EventKind::LoadBalancerRejectedApp { load_balancer, app_id, label, message };
    st.master.events().publish(&event.at(crate::master::now()));
    Ok(StatusCode::ACCEPTED)
}

fn wanted(filter: &[String], event_type: &str) -> bool {
    filter.is_empty() || filter.iter().any(|f| f == event_type)
}

struct Subscriber {
    filter: Vec<String>,
    live: Receiver<Arc<Frame>>,
    /// Frames to send before the live ones.
    first: VecDeque<Bytes>,
    keepalive: tokio::time::Interval,
    /// When the last batch of events went out.
    last_write: Option<tokio::time::Instant>,
    /// Cut off: the error frame went out, the stream ends.
    done: bool,
    outstanding: usize,
}

impl Subscriber {
    /// The next chunk to write; `None` ends the stream.
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(b) = self.first.pop_front() {
            return Some(b);
        }
        if self.done {
            return None;
        }
        loop {
            let first = tokio::select! {
                r = self.live.recv() => r,
                _ = self.keepalive.tick() => return Some(Bytes::from_static(b"\r\n")),
            };
            if let Some(at) = self.last_write {
                // Busy: let more events gather for one write.
                tokio::time::sleep_until(at + MIN_WRITE_GAP).await;
            }
            let mut buf = BytesMut::new();
            let mut next = first;
            loop {
                match next {
                    Ok(f) => {
                        if wanted(&self.filter, f.event_type) {
                            buf.extend_from_slice(&f.bytes);
                        }
                    }
                    Err(RecvError::Lagged(n)) => return Some(self.cut_off(buf, n)),
                    Err(RecvError::Closed) => {
                        self.done = true;
                        return (!buf.is_empty()).then(|| buf.freeze());
                    }
                }
                if buf.len() >= BATCH_BYTES {
                    break;
                }
                next = match self.live.try_recv() {
                    Ok(f) => Ok(f),
                    Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                    Err(TryRecvError::Closed) => Err(RecvError::Closed),
                    Err(TryRecvError::Empty) => break,
                };
            }
            if !buf.is_empty() {
                self.last_write = Some(tokio::time::Instant::now());
                return Some(buf.freeze());
            }
        }
    }

    /// The subscriber fell more than the bus holds behind: tell it, and end.
    fn cut_off(&mut self, mut buf: BytesMut, missed: u64) -> Bytes {
        self.done = true;
        let data = serde_json::json!({
            "eventType": CUT_OFF,
            "timestamp": crate::master::now(),
            "message": format!(
                "this subscriber fell more than {} events behind and missed {missed}: \
                 disconnected; reconnect with Last-Event-ID to catch up",
                self.outstanding
            ),
        });
        buf.extend_from_slice(&frame(None, CUT_OFF, &data.to_string()));
        buf.freeze()
    }
}
