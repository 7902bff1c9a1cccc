//! Agents: the WebSocket endpoint remote agents connect to (`GET /v1/agent/stream`)
//! and the agent list operators read (`GET /v1/agents`, `GET /v1/agents/{agentId}`).
//!
//! A stream session validates what the agent sends like any other input (API10 of the
//! OWASP list: agent-reported data is untrusted), forwards its messages to the master's
//! inbox and writes the master's commands back. The protocol itself is described in
//! `agent::protocol` and api-spec/agent-protocol.md.

use super::error::ApiError;
use super::AppState;
use crate::agent::protocol::{FromAgent, PROTOCOL_VERSION};
use crate::domain::resources::{ports_text, Pool, Resources, UNRESERVED};
use crate::domain::{AgentId, AgentMark, AgentRecord};
use crate::master::state::State as MasterState;
use crate::master::{Connection, Master};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Largest message an agent may send (a register with many tasks).
const MAX_MESSAGE: usize = 16 << 20;
/// An agent must register this soon after connecting.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest task status message kept (agents are not trusted to be brief).
const MAX_STATUS_MESSAGE: usize = 4096;

pub async fn stream(State(st): State<AppState>, ws: WebSocketUpgrade) -> Response {
    let master = st.master.clone();
    ws.max_message_size(MAX_MESSAGE).on_upgrade(move |socket| session(master, socket))
}

async fn close(mut tx: futures_util::stream::SplitSink<WebSocket, Message>, code: u16, why: String) {
    tracing::warn!("refusing an agent session: {why}");
    let _ = tx.send(Message::Close(Some(CloseFrame { code, reason: why.into() }))).await;
}

/// Reads one agent message; `Ok(None)` for frames that carry none (ping/pong).
fn decode(frame: Message) -> Result<Option<FromAgent>, String> {
    match frame {
        Message::Text(t) => {
            let mut msg: FromAgent = serde_json::from_str(&t).map_err(|e| format!("malformed message: {e}"))?;
            match &mut msg {
                FromAgent::Register { info, tasks, replaces, .. } => {
                    info.validate()?;
                    if replaces.len() > 64 {
                        return Err("register names more than 64 earlier agents".into());
                    }
                    tasks.iter_mut().for_each(|s| truncate(&mut s.message));
                }
                FromAgent::Status(s) => truncate(&mut s.message),
                FromAgent::Pong => {}
                FromAgent::Log { error, .. } => truncate(error),
                FromAgent::Health { health, .. } => truncate(&mut health.last_failure_cause),
                FromAgent::Ready { readiness, .. } => {
                    truncate(&mut readiness.cause);
                    let mut name = Some(std::mem::take(&mut readiness.name));
                    truncate(&mut name);
                    readiness.name = name.unwrap_or_default();
                }
            }
            Ok(Some(msg))
        }
        Message::Close(_) => Err("closed".into()),
        Message::Binary(_) => Err("binary frames are not part of the protocol".into()),
        _ => Ok(None),
    }
}

fn truncate(m: &mut Option<String>) {
    if let Some(s) = m {
        let keep = crate::domain::clip(s, MAX_STATUS_MESSAGE).len();
        s.truncate(keep);
    }
}

async fn session(master: Arc<Master>, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    // 1. The agent says who it is.
    let first = match tokio::time::timeout(REGISTER_TIMEOUT, rx.next()).await {
        Ok(Some(Ok(frame))) => decode(frame),
        Ok(_) => return,
        Err(_) => Err("no register message in time".into()),
    };
    let register = match first {
        Ok(Some(m @ FromAgent::Register { .. })) => m,
        Ok(_) => return close(tx, 1008, "the first message must be 'register'".into()).await,
        Err(e) => return close(tx, 1008, e).await,
    };
    let FromAgent::Register { protocol, info, .. } = &register else { return };
    if *protocol != PROTOCOL_VERSION {
        let why = format!("protocol version {protocol} is not supported; this master speaks {PROTOCOL_VERSION}");
        return close(tx, 1002, why).await;
    }
    let id = info.id.clone();
    // 2. Admit it: its commands now go to this session.
    let (conn, mut commands) = master.connect_agent(&id);
    let inbox = master.inbox();
    let _ = inbox.send((id.clone(), register));
    let hello = master.registered_message(&id);
    if send(&mut tx, &hello).await.is_err() {
        master.disconnect_agent(&id, conn);
        return;
    }
    tracing::info!(agent = %id, "agent session started");
    // 3. Relay both ways until either side ends it.
    let reason = loop {
        tokio::select! {
            cmd = commands.recv() => match cmd {
                Some(cmd) => {
                    if let Err(e) = send(&mut tx, &cmd).await {
                        break format!("send failed: {e}");
                    }
                }
                // Replaced by a newer session, or the agent was marked unreachable.
                None => {
                    let _ = tx.send(Message::Close(Some(CloseFrame { code: 1001, reason: "session ended by the master".into() }))).await;
                    break "ended by the master".into();
                }
            },
            frame = rx.next() => match frame {
                Some(Ok(frame)) => {
                    master.heard_from(&id);
                    match decode(frame) {
                        Ok(Some(FromAgent::Register { info, .. })) if info.id != id => {
                            break "an agent may not change its id within a session".into();
                        }
                        Ok(Some(FromAgent::Pong)) | Ok(None) => {}
                        Ok(Some(msg)) => {
                            let _ = inbox.send((id.clone(), msg));
                        }
                        Err(e) => break e,
                    }
                }
                Some(Err(e)) => break e.to_string(),
                None => break "connection closed".into(),
            },
        }
    };
    master.disconnect_agent(&id, conn);
    tracing::info!(agent = %id, "agent session ended: {reason}");
}

async fn send<T: serde::Serialize>(
    tx: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    msg: &T,
) -> Result<(), String> {
    let text = serde_json::to_string(msg).map_err(|e| e.to_string())?;
    tx.send(Message::text(text)).await.map_err(|e| e.to_string())
}

fn scalars_json(r: &Resources) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("cpus".into(), json!(r.cpus));
    m.insert("mem".into(), json!(r.mem));
    m.insert("disk".into(), json!(r.disk));
    m.insert("gpus".into(), json!(r.gpus));
    m
}

fn pool_json(p: &Pool) -> Value {
    let mut m = scalars_json(&p.scalars);
    m.insert("ports".into(), json!(ports_text(&p.ports)));
    for (k, v) in &p.other {
        m.insert(k.clone(), json!(v.to_string()));
    }
    Value::Object(m)
}

/// One agent as `GET /v1/agents` shows it.
pub fn agent_json(state: &MasterState, master: &Master, rec: &AgentRecord) -> Value {
    let info = &rec.info;
    let mut used = Resources::default();
    let mut tasks = 0;
    for t in state.tasks_on(&info.id) {
        tasks += 1;
        if let Some(app) = state.apps.get(&t.app_id) {
            used.add(&app.current.spec.task_resources());
        }
    }
    let state_word = match (rec.mark, master.connection(&info.id)) {
        (AgentMark::Unreachable, _) => "unreachable",
        (AgentMark::Active, Connection::Connected) => "active",
        (AgentMark::Active, Connection::Disconnected) => "disconnected",
    };
    let total = info.resources.total();
    let mut total_json = scalars_json(&total);
    total_json.insert("ports".into(), json!(ports_text(&info.resources.all_ports())));
    let reserved: serde_json::Map<String, Value> = info
        .resources
        .pools
        .iter()
        .filter(|(r, _)| r.as_str() != UNRESERVED)
        .map(|(r, p)| (r.clone(), pool_json(p)))
        .collect();
    let attributes: serde_json::Map<String, Value> =
        info.attributes.iter().map(|(k, v)| (k.clone(), json!(v.to_string()))).collect();
    json!({
        "id": info.id,
        "hostname": info.hostname,
        "state": state_word,
        "registeredAt": rec.registered_at,
        "unreachableSince": rec.unreachable_since,
        "attributes": attributes,
        "resources": total_json,
        "usedResources": scalars_json(&used),
        "reservedResources": reserved,
        "unreservedResources": info.resources.pools.get(UNRESERVED).map(pool_json).unwrap_or(json!({})),
        "containerizers": info.containerizers,
        "tasks": tasks,
    })
}

pub async fn list(State(st): State<AppState>) -> Json<Value> {
    let state = st.master.read().await;
    let agents: Vec<Value> = state.agents.values().map(|r| agent_json(&state, &st.master, r)).collect();
    Json(json!({ "agents": agents }))
}

pub async fn get_one(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let state = st.master.read().await;
    let rec = state
        .agents
        .get(&AgentId(id.clone()))
        .ok_or_else(|| ApiError::NotFound(format!("Agent '{id}' does not exist")))?;
    Ok(Json(agent_json(&state, &st.master, rec)))
}
