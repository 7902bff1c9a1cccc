//! Agents: the machines that run tasks. An agent describes itself when it registers;
//! the master keeps what it is using.

use super::resources::{PortRange, Resources};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Stable agent id, chosen by the agent on first start and kept in its data dir, so a
/// restarted agent is recognised and its tasks are adopted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AgentId(pub String);

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How tasks can be run on an agent. Placement only sends a task to an agent that has
/// the containerizer it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Containerizer {
    /// Plain processes under a supervisor (`cmd` / `args` without a container image).
    Process,
    /// Docker containers (issue "Agents across machines").
    Docker,
}

/// What an agent offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentInfo {
    pub id: AgentId,
    pub hostname: String,
    pub resources: Resources,
    pub ports: Vec<PortRange>,
    pub containerizers: Vec<Containerizer>,
}
