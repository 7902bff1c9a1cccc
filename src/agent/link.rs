//! The remote agent's link to the master: one WebSocket session at a time, opened by
//! the agent (so it works through NAT), re-opened with backoff whenever it ends.
//!
//! The agent runtime neither knows nor cares whether a session is up: it sends its
//! messages into a channel and takes commands from another. Messages sent while no
//! session is up are dropped; that is safe because every new session starts with a full
//! `register` (the runtime is asked for one with a local `Reconcile`), which carries
//! every task's state, including ended tasks whose status was not acknowledged.

use super::protocol::{FromAgent, ToAgent};
use crate::domain::AgentId;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// Where and how to reach the master.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Master base URLs (`http://host:port`); tried in turn. A master that does not
    /// lead names the leader, which is tried next.
    pub masters: Vec<String>,
    pub token: Option<String>,
    /// Where the newest leader epoch seen is kept (fencing across agent restarts):
    /// a master with an older epoch is refused.
    pub epoch_file: Option<std::path::PathBuf>,
}

/// The newest leader epoch this agent has seen, kept in a file.
struct Epochs {
    file: Option<std::path::PathBuf>,
    newest: i64,
}

impl Epochs {
    fn load(file: Option<std::path::PathBuf>) -> Epochs {
        let newest = file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        Epochs { file, newest }
    }

    /// Admits a master with `epoch` (none: a master that is the only one), recording it
    /// when newer; refuses one older than the newest seen.
    fn admit(&mut self, epoch: Option<i64>) -> Result<(), String> {
        let Some(e) = epoch else { return Ok(()) };
        if e < self.newest {
            return Err(format!(
                "the master's leader epoch {e} is older than {} seen already: it no longer leads",
                self.newest
            ));
        }
        if e > self.newest {
            self.newest = e;
            if let Some(f) = &self.file {
                let tmp = f.with_extension("tmp");
                let written = std::fs::write(&tmp, e.to_string()).and_then(|_| std::fs::rename(&tmp, f));
                if let Err(err) = written {
                    tracing::warn!("cannot record the leader epoch in {}: {err}", f.display());
                }
            }
        }
        Ok(())
    }
}

/// Largest message accepted from the master.
const MAX_MESSAGE: usize = 16 << 20;
/// Silence allowed before the master's `registered` tells us its heartbeat settings.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);

/// The WebSocket URL of a master's agent endpoint.
pub fn stream_url(master: &str) -> String {
    let base = master.trim_end_matches('/');
    let ws = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        format!("ws://{base}")
    };
    format!("{ws}/v1/agent/stream")
}

/// Runs the link until the process ends: connect, run a session, back off, repeat.
pub async fn run(
    cfg: LinkConfig,
    id: AgentId,
    mut outbox: mpsc::UnboundedReceiver<(AgentId, FromAgent)>,
    commands: mpsc::UnboundedSender<ToAgent>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut next = 0usize;
    let mut hint: Option<String> = None;
    let mut epochs = Epochs::load(cfg.epoch_file.clone());
    loop {
        let master = match hint.take() {
            Some(leader) => leader,
            None => {
                next += 1;
                cfg.masters[(next - 1) % cfg.masters.len().max(1)].clone()
            }
        };
        match connect(&master, cfg.token.as_deref()).await {
            Ok(ws) => {
                tracing::info!(agent = %id, %master, "connected to the master");
                // Whatever queued up while disconnected is superseded by a fresh register.
                while outbox.try_recv().is_ok() {}
                if commands.send(ToAgent::Reconcile).is_err() {
                    return; // the runtime is gone
                }
                let lasted = session(ws, &mut outbox, &commands, &mut epochs).await;
                tracing::warn!(agent = %id, %master, "session with the master ended: {lasted}");
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                tracing::warn!(agent = %id, %master, "cannot connect to the master: {}", e.message);
                // A follower names the leader: go there next, without waiting long.
                if let Some(leader) = e.leader.filter(|l| *l != master) {
                    hint = Some(leader);
                    backoff = Duration::from_millis(100);
                }
                // A master that answers but cannot take agents yet (an election, a
                // takeover) will soon: a new leader gives the agents it knows only
                // their ping budget to come back.
                if e.busy {
                    backoff = backoff.min(Duration::from_millis(250));
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Why a connection failed, and the leader a follower named, if any.
struct ConnectError {
    message: String,
    leader: Option<String>,
    /// The master answered 503: it runs, but takes no agents right now.
    busy: bool,
}

impl From<String> for ConnectError {
    fn from(message: String) -> Self {
        ConnectError { message, leader: None, busy: false }
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(master: &str, token: Option<&str>) -> Result<Ws, ConnectError> {
    let mut req = stream_url(master).into_client_request().map_err(|e| e.to_string())?;
    if let Some(t) = token {
        let v = HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|_| "the token is not a valid header value".to_string())?;
        req.headers_mut().insert("authorization", v);
    }
    let mut config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
    config.max_message_size = Some(MAX_MESSAGE);
    let connecting = tokio_tungstenite::connect_async_with_config(req, Some(config), true);
    let connected = tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .map_err(|_| "timed out connecting".to_string())?;
    match connected {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let leader = resp.headers().get("x-marathon-leader").and_then(|v| v.to_str().ok()).map(str::to_string);
            let busy = resp.status() == 503;
            Err(ConnectError { message: format!("the master answered {}", resp.status()), leader, busy })
        }
        Err(e) => Err(e.to_string().into()),
    }
}

/// One session; returns why it ended.
async fn session(
    ws: Ws,
    outbox: &mut mpsc::UnboundedReceiver<(AgentId, FromAgent)>,
    commands: &mpsc::UnboundedSender<ToAgent>,
    epochs: &mut Epochs,
) -> String {
    let (mut tx, mut rx) = ws.split();
    let mut silence = REGISTER_TIMEOUT;
    let mut deadline = Instant::now() + silence;
    loop {
        tokio::select! {
            msg = outbox.recv() => {
                let Some((_, msg)) = msg else { return "agent stopped".into() };
                let text = match serde_json::to_string(&msg) {
                    Ok(t) => t,
                    Err(e) => return format!("cannot encode a message: {e}"),
                };
                if let Err(e) = tx.send(Message::text(text)).await {
                    return format!("send failed: {e}");
                }
            }
            frame = rx.next() => {
                deadline = Instant::now() + silence;
                match frame {
                    Some(Ok(Message::Text(t))) => match serde_json::from_str::<ToAgent>(&t) {
                        Ok(ToAgent::Registered { ping_interval_ms, ping_timeouts, epoch, .. }) => {
                            if let Err(why) = epochs.admit(epoch) {
                                let _ = tx.send(Message::Close(None)).await;
                                return why;
                            }
                            silence = Duration::from_millis(ping_interval_ms.max(1)) * ping_timeouts.max(1);
                            deadline = Instant::now() + silence;
                        }
                        Ok(cmd) => {
                            if commands.send(cmd).is_err() {
                                return "agent stopped".into();
                            }
                        }
                        Err(e) => tracing::warn!("ignoring a message the agent does not understand: {e}"),
                    },
                    Some(Ok(Message::Close(c))) => {
                        return format!("closed by the master{}", c.map(|c| format!(": {}", c.reason)).unwrap_or_default())
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return format!("receive failed: {e}"),
                    None => return "connection closed".into(),
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                return format!("no message from the master for {silence:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stream_urls() {
        assert_eq!(super::stream_url("http://10.0.0.1:8080"), "ws://10.0.0.1:8080/v1/agent/stream");
        assert_eq!(super::stream_url("https://m/"), "wss://m/v1/agent/stream");
        assert_eq!(super::stream_url("m:1"), "ws://m:1/v1/agent/stream");
    }
}
