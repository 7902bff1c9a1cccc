//! Deployments: every change to the app tree is a deployment that exists until the
//! cluster matches the change (Marathon's contract: the change is done when its id
//! disappears from `GET /v2/deployments`). The steps come from the planner
//! ([`crate::scheduler::deploy`]); what the apps were before is kept for a rollback.

use super::ids::PathId;
use super::time::Timestamp;
use super::AppVersion;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionKind {
    StartApplication,
    StopApplication,
    ScaleApplication,
    RestartApplication,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentAction {
    pub action: ActionKind,
    pub app: PathId,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub id: String,
    pub version: Timestamp,
    pub affected_apps: Vec<PathId>,
    pub steps: Vec<Vec<DeploymentAction>>,
    /// The version each affected app had before, for apps that existed (a rollback goes
    /// back to them; apps missing here were created and are removed again).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub original: BTreeMap<PathId, Timestamp>,
    /// The definitions of the apps this deployment removed (their versions go with them),
    /// so a rollback can bring them back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<AppVersion>,
}
