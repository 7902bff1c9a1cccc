//! Agents: the machines that run tasks. An agent describes itself when it registers
//! ([`AgentInfo`]); the master keeps a registry entry for it ([`AgentRecord`]) whose
//! marks (active, unreachable) survive master restarts, as in the Mesos registry.

use super::resources::{AgentResources, Value};
use super::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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

impl AgentId {
    /// Agent ids come from the network: they must be short and safe to print and log.
    pub fn is_valid(&self) -> bool {
        !self.0.is_empty()
            && self.0.len() <= 128
            && self.0.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    }
}

/// How tasks can be run on an agent. Placement only sends a task to an agent that has
/// the containerizer it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Containerizer {
    /// Plain processes under a supervisor (`cmd` / `args` without a container image).
    Process,
    /// Docker containers through the local Docker engine.
    Docker,
}

/// What an agent offers, as it reports itself on registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentInfo {
    pub id: AgentId,
    pub hostname: String,
    pub resources: AgentResources,
    #[serde(default)]
    pub attributes: BTreeMap<String, Value>,
    pub containerizers: Vec<Containerizer>,
}

impl AgentInfo {
    /// Checks what an agent reports about itself: it comes from the network and ends up
    /// in task environments, the API and the UI.
    pub fn validate(&self) -> Result<(), String> {
        if !self.id.is_valid() {
            return Err("agent id: 1-128 characters out of letters, digits, '-', '_', '.'".into());
        }
        let h = &self.hostname;
        if h.is_empty()
            || h.len() > 253
            || !h.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'))
        {
            return Err(format!("hostname '{}' is not a valid host name or address", h.escape_debug()));
        }
        for (role, pool) in &self.resources.pools {
            if !super::resources::valid_role(role) {
                return Err(format!("role '{}' is not valid", role.escape_debug()));
            }
            let s = &pool.scalars;
            if [s.cpus, s.mem, s.disk, s.gpus].iter().any(|x| !x.is_finite() || *x < 0.0) {
                return Err(format!("resources of role '{role}' must be finite and not negative"));
            }
            if pool.ports.iter().any(|r| r.begin == 0 || r.end < r.begin) {
                return Err(format!("port ranges of role '{role}' are invalid"));
            }
        }
        for (name, v) in &self.attributes {
            if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(format!("attribute name '{}' is not valid", name.escape_debug()));
            }
            if v.to_string().chars().any(|c| c.is_control()) || v.to_string().len() > 1024 {
                return Err(format!("attribute '{name}' has an invalid value"));
            }
        }
        Ok(())
    }
}

/// The registry's mark for an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentMark {
    /// Registered and heard from within the ping budget (or not yet timed out after a
    /// master restart).
    Active,
    /// Missed its ping budget: its tasks are TASK_UNREACHABLE until it comes back.
    Unreachable,
}

/// The master's registry entry for one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRecord {
    pub info: AgentInfo,
    pub mark: AgentMark,
    pub registered_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_since: Option<Timestamp>,
}
