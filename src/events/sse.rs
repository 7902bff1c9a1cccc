//! An incremental Server-Sent Events parser, for the clients of the bus: the HAProxy
//! sidecar follows `/v2/events` with it (and the tests read the stream with it).
//! Accepts LF, CR and CRLF line ends; `data` lines of one event are joined with LF.

/// One received event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    /// The previous byte was CR (a following LF belongs to the same line end).
    after_cr: bool,
    current: SseEvent,
    has_data: bool,
    /// The last id seen (what to send as `Last-Event-ID` on a reconnect).
    pub last_id: Option<String>,
}

impl Parser {
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Feeds bytes as they arrive; returns the events they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    self.on_line(&line, &mut out);
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(b);
                }
            }
        }
        out
    }

    fn on_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            // Dispatch (an event without data is dropped, as browsers do).
            let ev = std::mem::take(&mut self.current);
            if std::mem::take(&mut self.has_data) {
                out.push(ev);
            }
            return;
        }
        if line[0] == b':' {
            return; // a comment
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.current.event = value.to_string(),
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "id" => {
                self.current.id = Some(value.to_string());
                self.last_id = Some(value.to_string());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_frames_split_anywhere() {
        let input =
            b"id: s-1\r\nevent: a\r\ndata: {\"x\":1}\r\n\r\n\r\n: note\nevent: b\ndata: one\ndata: two\n\nevent: c\r\r";
        // Every split point gives the same events.
        for cut in 0..input.len() {
            let mut p = Parser::new();
            let mut got = p.feed(&input[..cut]);
            got.extend(p.feed(&input[cut..]));
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(got[0], SseEvent { id: Some("s-1".into()), event: "a".into(), data: "{\"x\":1}".into() });
            assert_eq!((got[1].event.as_str(), got[1].data.as_str(), got[1].id.as_deref()), ("b", "one\ntwo", None));
            assert_eq!(p.last_id.as_deref(), Some("s-1"));
        }
    }
}
