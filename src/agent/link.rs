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
    /// Master base URLs (`http://host:port`); tried in turn.
    pub masters: Vec<String>,
    pub token: Option<String>,
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
    loop {
        let master = &cfg.masters[next % cfg.masters.len().max(1)];
        next += 1;
        match connect(master, cfg.token.as_deref()).await {
            Ok(ws) => {
                tracing::info!(agent = %id, %master, "connected to the master");
                // Whatever queued up while disconnected is superseded by a fresh register.
                while outbox.try_recv().is_ok() {}
                if commands.send(ToAgent::Reconcile).is_err() {
                    return; // the runtime is gone
                }
                let lasted = session(ws, &mut outbox, &commands).await;
                tracing::warn!(agent = %id, %master, "session with the master ended: {lasted}");
                backoff = Duration::from_millis(100);
            }
            Err(e) => tracing::warn!(agent = %id, %master, "cannot connect to the master: {e}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(master: &str, token: Option<&str>) -> Result<Ws, String> {
    let mut req = stream_url(master).into_client_request().map_err(|e| e.to_string())?;
    if let Some(t) = token {
        let v = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| "the token is not a valid header value")?;
        req.headers_mut().insert("authorization", v);
    }
    let mut config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
    config.max_message_size = Some(MAX_MESSAGE);
    let connecting = tokio_tungstenite::connect_async_with_config(req, Some(config), true);
    let (ws, _) = tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .map_err(|_| "timed out connecting".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// One session; returns why it ended.
async fn session(
    ws: Ws,
    outbox: &mut mpsc::UnboundedReceiver<(AgentId, FromAgent)>,
    commands: &mpsc::UnboundedSender<ToAgent>,
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
                        Ok(ToAgent::Registered { ping_interval_ms, ping_timeouts, .. }) => {
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
