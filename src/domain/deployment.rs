//! Deployments: every change to an app is a deployment that exists until the cluster
//! matches the change (Marathon's contract: the change is done when its id disappears
//! from `GET /v2/deployments`).

use super::ids::PathId;
use super::time::Timestamp;
use serde::{Deserialize, Serialize};

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub id: String,
    pub version: Timestamp,
    pub affected_apps: Vec<PathId>,
    pub steps: Vec<Vec<DeploymentAction>>,
}

impl Deployment {
    /// A one-step deployment of a single action on one app.
    pub fn single(id: String, version: Timestamp, action: ActionKind, app: PathId) -> Deployment {
        Deployment {
            id,
            version,
            affected_apps: vec![app.clone()],
            steps: vec![vec![DeploymentAction { action, app }]],
        }
    }
}
