//! The event bus: numbers each event, keeps the latest ones in a bounded replay ring,
//! and fans them out to subscribers (`/v2/events`).
//!
//! - Publishing never waits: an event is serialized once into its SSE frame and sent on
//!   a broadcast channel whose slots are shared by all subscribers. A subscriber that
//!   falls more than the channel's capacity behind is *lagged*: it is cut off with an
//!   explicit `event_stream_error` frame, never silently skipped (DESIGN principle 7).
//! - Every event has an id `<stream>-<n>`: `<stream>` names this process's numbering,
//!   `n` counts up from 1. A subscriber reconnecting with `Last-Event-ID` gets what it
//!   missed from the ring; when the ring no longer reaches back that far, or the id is
//!   from another stream (dromos restarted), it gets an `event_stream_resync` frame
//!   first: re-read the state through the REST API.
//! - Subscribing and publishing take one short lock, so the replay and the live
//!   stream meet without a gap or a duplicate.

pub mod sse;

use crate::domain::event::Event;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Events kept for replay by default.
pub const DEFAULT_REPLAY: usize = 8192;
/// Events a subscriber may fall behind before it is cut off (Marathon's
/// `event_stream_max_outstanding_messages`).
pub const DEFAULT_OUTSTANDING: usize = 1024;

/// One published event, ready to write: `id`, `event` and `data` lines.
#[derive(Debug)]
pub struct Frame {
    pub seq: u64,
    pub event_type: &'static str,
    pub bytes: Bytes,
}

impl Frame {
    /// The event's JSON (its `data:` line).
    pub fn data(&self) -> &str {
        let text = std::str::from_utf8(&self.bytes).unwrap_or("");
        text.lines().find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:"))).unwrap_or("")
    }
}

struct Ring {
    next: u64,
    frames: VecDeque<Arc<Frame>>,
}

pub struct Bus {
    stream: String,
    capacity: usize,
    outstanding: usize,
    ring: Mutex<Ring>,
    /// `None` once closed: subscribers' streams end, and new ones end at once.
    tx: Mutex<Option<broadcast::Sender<Arc<Frame>>>>,
}

/// What a new subscriber gets: the frames to send first, then the live receiver.
pub struct Subscription {
    /// A resync frame, when the events after `Last-Event-ID` are gone.
    pub resync: Option<Bytes>,
    /// The events after `Last-Event-ID`, when they are all still kept.
    pub backlog: Vec<Arc<Frame>>,
    pub live: broadcast::Receiver<Arc<Frame>>,
}

impl Bus {
    /// A bus that replays up to `replay` events and cuts off subscribers more than
    /// `outstanding` events behind.
    pub fn new(replay: usize, outstanding: usize) -> Bus {
        let stream = format!("{:08x}", uuid::Uuid::new_v4().as_u128() as u32);
        Bus {
            stream,
            capacity: replay.max(1),
            outstanding: outstanding.max(1),
            ring: Mutex::new(Ring { next: 1, frames: VecDeque::new() }),
            tx: Mutex::new(Some(broadcast::channel(outstanding.max(1)).0)),
        }
    }

    /// How far a subscriber may fall behind before it is cut off.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// This process's event numbering (the part of event ids before the dash).
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Numbers `event`, keeps it for replay and hands it to every subscriber.
    pub fn publish(&self, event: &Event) {
        let data = match serde_json::to_string(event) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("an event could not be serialized: {e}");
                return;
            }
        };
        let event_type = event.kind.event_type();
        let Ok(mut ring) = self.ring.lock() else { return };
        let seq = ring.next;
        ring.next += 1;
        let bytes = frame(Some(&format!("{}-{seq}", self.stream)), event_type, &data);
        let f = Arc::new(Frame { seq, event_type, bytes });
        if ring.frames.len() == self.capacity {
            ring.frames.pop_front();
        }
        ring.frames.push_back(f.clone());
        // No subscriber is fine.
        if let Some(tx) = self.sender() {
            let _ = tx.send(f);
        }
    }

    pub fn publish_all(&self, events: impl IntoIterator<Item = Event>) {
        for e in events {
            self.publish(&e);
        }
    }

    /// Subscribes; `last_event_id` is the `Last-Event-ID` of a reconnecting client.
    pub fn subscribe(&self, last_event_id: Option<&str>) -> Subscription {
        let ring = match self.ring.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        let live = match self.sender() {
            Some(tx) => tx.subscribe(),
            None => broadcast::channel(1).1, // its sender is gone: the stream ends
        };
        let mut backlog = Vec::new();
        let mut resync = None;
        if let Some(last) = last_event_id.map(str::trim).filter(|s| !s.is_empty()) {
            let newest = ring.next - 1;
            let oldest = ring.frames.front().map_or(ring.next, |f| f.seq);
            match self.parse_id(last) {
                // Everything after `n` is still in the ring (or nothing was missed).
                Some(n) if n <= newest && n + 1 >= oldest => {
                    backlog.extend(ring.frames.iter().filter(|f| f.seq > n).cloned());
                }
                _ => {
                    let data = serde_json::json!({
                        "eventType": RESYNC,
                        "timestamp": crate::domain::Timestamp::from_datetime(chrono::Utc::now()),
                        "lastEventId": last,
                        "reason": "the events after this id are no longer kept (or dromos restarted): \
                                   re-read the state through the REST API",
                    });
                    resync = Some(frame(None, RESYNC, &data.to_string()));
                }
            }
        }
        Subscription { resync, backlog, live }
    }

    /// The number in an id of this stream.
    fn parse_id(&self, id: &str) -> Option<u64> {
        let (stream, n) = id.rsplit_once('-')?;
        (stream == self.stream).then_some(())?;
        n.parse().ok()
    }

    /// The newest `n` events still kept, oldest first (the events page's first screen).
    pub fn recent(&self, n: usize) -> Vec<Arc<Frame>> {
        let ring = match self.ring.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        ring.frames.iter().skip(ring.frames.len().saturating_sub(n)).cloned().collect()
    }

    /// How many subscribers are connected.
    pub fn subscribers(&self) -> usize {
        self.sender().map_or(0, |t| t.receiver_count())
    }

    /// The live sender, unless the bus was closed.
    fn sender(&self) -> Option<broadcast::Sender<Arc<Frame>>> {
        self.tx.lock().ok().and_then(|t| t.clone())
    }

    /// Ends every subscriber's stream (the master's term is over: clients reconnect,
    /// to the next leader).
    pub fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
    }
}

/// The event a reconnecting subscriber gets when the events it missed are gone.
pub const RESYNC: &str = "event_stream_resync";
/// The last event a subscriber gets before it is cut off.
pub const CUT_OFF: &str = "event_stream_error";

/// One SSE frame (Marathon writes CRLF line ends; `data` is one line of JSON).
pub fn frame(id: Option<&str>, event_type: &str, data: &str) -> Bytes {
    let mut s = String::with_capacity(data.len() + event_type.len() + 40);
    if let Some(id) = id {
        s.push_str("id: ");
        s.push_str(id);
        s.push_str("\r\n");
    }
    s.push_str("event: ");
    s.push_str(event_type);
    s.push_str("\r\ndata: ");
    s.push_str(data);
    s.push_str("\r\n\r\n");
    Bytes::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::EventKind;
    use crate::domain::{PathId, Timestamp};

    fn event(n: i64) -> Event {
        EventKind::AppTerminated { app_id: PathId::parse_app(&format!("/app{n}")).unwrap() }
            .at(Timestamp::from_millis(n))
    }

    fn text(b: &Bytes) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn frames_have_an_id_a_type_and_one_data_line() {
        let bus = Bus::new(4, 4);
        let mut sub = bus.subscribe(None);
        bus.publish(&event(1));
        let f = sub.live.try_recv().unwrap();
        let want = format!("id: {}-1\r\nevent: app_terminated_event\r\ndata: ", bus.stream());
        assert!(text(&f.bytes).starts_with(&want), "{}", text(&f.bytes));
        assert!(text(&f.bytes).ends_with("}\r\n\r\n"));
        assert_eq!(text(&f.bytes).matches("\r\n").count(), 4);
    }

    #[test]
    fn reconnect_replays_what_was_missed_or_asks_for_a_resync() {
        let bus = Bus::new(3, 16);
        for n in 1..=5 {
            bus.publish(&event(n));
        }
        // The ring holds 3..=5: after 3 come 4 and 5.
        let s = bus.subscribe(Some(&format!("{}-3", bus.stream())));
        let got: Vec<String> = s.backlog.iter().map(|f| text(&f.bytes)).collect();
        assert_eq!(got.len(), 2);
        assert!(got[0].contains("-4\r\n") && got[0].contains("/app4"));
        assert!(got[1].contains("/app5"));
        // Up to date: nothing to replay. Just after the oldest kept: all of it.
        assert!(bus.subscribe(Some(&format!("{}-5", bus.stream()))).backlog.is_empty());
        assert_eq!(bus.subscribe(Some(&format!("{}-2", bus.stream()))).backlog.len(), 3);
        // Too old, from another stream, from the future or garbage: resync.
        for id in [format!("{}-1", bus.stream()), "0badbeef-4".into(), format!("{}-9", bus.stream()), "x".into()] {
            let s = bus.subscribe(Some(&id));
            assert!(s.backlog.is_empty(), "{id}");
            assert!(text(s.resync.as_ref().unwrap()).starts_with("event: event_stream_resync\r\n"), "{id}");
        }
        // The live stream continues right after the replay.
        let mut s = bus.subscribe(Some(&format!("{}-5", bus.stream())));
        bus.publish(&event(6));
        assert_eq!(s.live.try_recv().unwrap().seq, 6);
    }

    #[test]
    fn a_subscriber_too_far_behind_is_told_it_lagged() {
        let bus = Bus::new(8, 2);
        let mut slow = bus.subscribe(None);
        for n in 1..=5 {
            bus.publish(&event(n));
        }
        assert!(matches!(slow.live.try_recv(), Err(broadcast::error::TryRecvError::Lagged(3))));
    }
}
