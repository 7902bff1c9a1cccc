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
}
