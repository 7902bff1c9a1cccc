//! A blocking `/v2/events` subscriber: a reader thread parses the stream (with dromos's
//! own SSE parser) and hands events over a channel.

use ::dromos::events::sse::{Parser, SseEvent};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The header a stream needs.
pub const SSE: (&str, &str) = ("Accept", "text/event-stream");

pub struct EventStream {
    pub status: u16,
    /// The raw response head.
    pub head: String,
    events: Receiver<SseEvent>,
    /// Shut down on drop, which ends the reader thread.
    stream: TcpStream,
}

impl EventStream {
    /// `GET <path>` on the server at `base` (`http://host:port`) with extra headers.
    pub fn open(base: &str, path: &str, headers: &[(&str, &str)]) -> EventStream {
        let addr = base.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).expect("connect");
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        // Read the head byte by byte up to the blank line.
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut b).unwrap_or(0) == 0 {
                break;
            }
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
        let (tx, events) = channel();
        let mut reader = s.try_clone().unwrap();
        reader.set_read_timeout(None).unwrap();
        std::thread::spawn(move || {
            let mut parser = Parser::new();
            let mut dechunk = Dechunker::default();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let body = if chunked { dechunk.feed(&buf[..n]) } else { buf[..n].to_vec() };
                for e in parser.feed(&body) {
                    if tx.send(e).is_err() {
                        return;
                    }
                }
            }
        });
        EventStream { status, head, events, stream: s }
    }

    /// The next event of type `kind` whose data matches `pred`, within `timeout`.
    pub fn wait(&self, kind: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> (SseEvent, Value) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) if e.event == kind => {
                    let v: Value = serde_json::from_str(&e.data).expect("event data is JSON");
                    if pred(&v) {
                        return (e, v);
                    }
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!("no {kind} event within {timeout:?}"),
                Err(RecvTimeoutError::Disconnected) => panic!("the stream ended before a {kind} event"),
            }
        }
    }

    /// Every event that arrives within `for_`.
    pub fn drain(&self, for_: Duration) -> Vec<SseEvent> {
        let deadline = Instant::now() + for_;
        let mut out = Vec::new();
        while let Ok(e) = self.events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            out.push(e);
        }
        out
    }

    /// Waits until the server closes the stream; returns what came before.
    pub fn until_closed(&self, timeout: Duration) -> Vec<SseEvent> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            match self.events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(e) => out.push(e),
                Err(RecvTimeoutError::Disconnected) => return out,
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "the stream stayed open for {timeout:?}; got {:?}",
                        out.iter().map(|e| &e.event).collect::<Vec<_>>()
                    )
                }
            }
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Undoes HTTP/1.1 chunked transfer coding incrementally.
#[derive(Default)]
struct Dechunker {
    left: usize,
    size_line: Vec<u8>,
    /// Bytes of the CRLF after a chunk still to skip.
    skip: usize,
}

impl Dechunker {
    fn feed(&mut self, mut input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while !input.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(input.len());
                self.skip -= n;
                input = &input[n..];
            } else if self.left > 0 {
                let n = self.left.min(input.len());
                out.extend_from_slice(&input[..n]);
                self.left -= n;
                input = &input[n..];
                if self.left == 0 {
                    self.skip = 2;
                }
            } else {
                let b = input[0];
                input = &input[1..];
                if b == b'\n' {
                    let line = String::from_utf8_lossy(&self.size_line).trim().to_string();
                    self.size_line.clear();
                    let hex = line.split(';').next().unwrap_or("");
                    self.left = usize::from_str_radix(hex, 16).unwrap_or(0);
                } else {
                    self.size_line.push(b);
                }
            }
        }
        out
    }
}
