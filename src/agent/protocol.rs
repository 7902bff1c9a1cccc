//! The master/agent protocol (version 1): plain serde types, carried over in-process
//! channels to the embedded agent and as JSON text frames over a WebSocket to remote
//! agents (`GET /v1/agent/stream`, opened by the agent so it works through NAT;
//! documented in api-spec/agent-protocol.md).
//!
//! A session: the agent connects with the cluster token and sends `register` first; the
//! master answers `registered` with its heartbeat settings; from then on the master
//! sends commands and pings and the agent sends status updates and pongs. Either side
//! that hears nothing for the ping budget drops the connection; the agent reconnects
//! and registers again, which reconciles both sides.
//!
//! Delivery model (Mesos): commands are at-most-once and repaired by reconciliation on
//! every (re-)registration; task status updates are at-least-once: the agent keeps a
//! terminal update until the master acknowledges it, and the master handles repeats
//! idempotently ([`crate::domain::TaskState::accepts`]).

use crate::domain::{AgentId, AgentInfo, PathId, TaskId, TaskState, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const PROTOCOL_VERSION: u32 = 1;

/// What to run and how: everything an agent needs, resolved by the master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchTask {
    pub task_id: TaskId,
    pub app_id: PathId,
    /// `Shell(cmd)` runs `/bin/sh -c cmd`; `Argv` runs the program directly.
    pub command: TaskCommand,
    /// The task's environment (Marathon's PORT0.., HOST, MARATHON_APP_ID, ...).
    pub env: BTreeMap<String, String>,
    pub ports: Vec<u16>,
    /// SIGTERM -> SIGKILL delay when the task is killed.
    pub kill_grace_ms: u64,
    /// The task's cpu and memory limits (0: none), applied through cgroups to process
    /// tasks (Docker tasks carry theirs in `docker`).
    #[serde(default)]
    pub cpus: f64,
    #[serde(default)]
    pub mem_mb: f64,
    /// The app's health checks, resolved for this task; the agent runs them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<HealthCheckTask>,
    /// The app's readiness check, resolved for this task; the agent runs it until ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Box<ReadinessCheckTask>>,
    /// Set for tasks that run as Docker containers (`container.type: DOCKER`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<Box<super::docker::DockerTask>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TaskCommand {
    Shell(String),
    Argv(Vec<String>),
}

/// Master -> agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ToAgent {
    /// The answer to `register`: the agent is admitted; it expects a message at least
    /// every `ping_interval_ms` and gives up on the connection after `ping_timeouts`
    /// intervals of silence.
    #[serde(rename_all = "camelCase")]
    Registered {
        protocol: u32,
        agent_id: crate::domain::AgentId,
        ping_interval_ms: u64,
        ping_timeouts: u32,
        /// The leader's epoch (fencing): an agent refuses a master whose epoch is older
        /// than one it has seen, so a deposed leader that wakes up commands nothing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<i64>,
    },
    /// Heartbeat; answered with `pong`.
    Ping,
    /// Send `register` again with every task (periodic reconciliation).
    Reconcile,
    Launch(LaunchTask),
    /// Kill a task. Idempotent; a task the agent does not know is answered with
    /// TASK_LOST, so the master learns it is not running here.
    #[serde(rename_all = "camelCase")]
    Kill {
        task_id: TaskId,
    },
    /// The master has seen this terminal status; the agent may forget it.
    #[serde(rename_all = "camelCase")]
    Ack {
        task_id: TaskId,
        state: TaskState,
    },
    /// Read a byte range of a task's output (for the task logs endpoint); answered with
    /// `log` carrying the same `request`. A negative `offset` counts from the end.
    #[serde(rename_all = "camelCase")]
    ReadLog {
        request: u64,
        task_id: TaskId,
        stream: LogStream,
        offset: i64,
        length: u64,
    },
}

/// One health check of one task, resolved by the master: what to probe and how often.
/// Checks probe only the task itself: its host (the agent's hostname) and one of its
/// own ports, or a command in its sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckTask {
    pub kind: CheckKind,
    /// The task's host port to probe (HTTP, HTTPS, TCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub grace_ms: u64,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub delay_ms: u64,
    /// 0: never kill.
    pub max_consecutive_failures: u32,
    #[serde(default)]
    pub ignore_http1xx: bool,
    /// Why the check cannot run as defined (it then fails with this cause).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A readiness check of one task: HTTP(S) GET `path` on one of its own ports until the
/// answer's status is one of `ready_statuses`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessCheckTask {
    pub name: String,
    /// Ask over TLS (the task's certificate is not verified, see [`super::tls`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub https: bool,
    pub port: u16,
    pub path: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub ready_statuses: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum CheckKind {
    Http {
        path: String,
    },
    Https {
        path: String,
    },
    Tcp,
    /// `/bin/sh -c command` in the task's sandbox with its environment; exit 0 passes.
    Command {
        command: String,
    },
}

/// Which output of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    /// The file in the sandbox.
    pub fn file_name(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// A byte range of a task's output: `data` starts at `offset`; the whole log has `size`
/// bytes so far. Logs are bytes, not always UTF-8: base64 on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogChunk {
    pub size: u64,
    pub offset: u64,
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
}

mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(data))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(text.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// One task's state as the agent sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    pub task_id: TaskId,
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub timestamp: Timestamp,
}

/// Agent -> master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum FromAgent {
    /// Sent on every (re-)connect: who the agent is and every task it knows, including
    /// ended tasks whose terminal status was not yet acknowledged.
    Register {
        protocol: u32,
        info: AgentInfo,
        tasks: Vec<TaskStatus>,
        /// Earlier agents of the same directory (wiped, so the id was lost) whose tasks
        /// this agent found still running and stopped: they are gone.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        replaces: Vec<AgentId>,
    },
    Status(TaskStatus),
    Pong,
    /// A health check's state changed (alive, or a counted failure), or the agent
    /// (re)registered: `index` is the check's place in the app's `healthChecks`.
    #[serde(rename_all = "camelCase")]
    Health {
        task_id: TaskId,
        index: u16,
        health: crate::domain::health::Health,
    },
    /// A task's readiness check answered differently than before (also re-sent when
    /// the agent (re)registered).
    #[serde(rename_all = "camelCase")]
    Ready {
        task_id: TaskId,
        readiness: crate::domain::health::Readiness,
    },
    /// The answer to `readLog`: the chunk, or why there is none.
    Log {
        request: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chunk: Option<LogChunk>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_chunks_carry_any_bytes() {
        let chunk = LogChunk { size: 10, offset: 4, data: vec![0xff, 0, b'\n', 0xc3] };
        let msg = FromAgent::Log { request: 7, chunk: Some(chunk.clone()), error: None };
        let text = serde_json::to_string(&msg).unwrap();
        assert_eq!(text, r#"{"type":"log","request":7,"chunk":{"size":10,"offset":4,"data":"/wAKww=="}}"#);
        assert_eq!(serde_json::from_str::<FromAgent>(&text).unwrap(), msg);
        assert!(serde_json::from_str::<FromAgent>(
            r#"{"type":"log","request":1,"chunk":{"size":1,"offset":0,"data":"%%"}}"#
        )
        .is_err());
    }
}
