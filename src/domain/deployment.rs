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

impl ActionKind {
    /// Marathon's name of the action.
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::StartApplication => "StartApplication",
            ActionKind::StopApplication => "StopApplication",
            ActionKind::ScaleApplication => "ScaleApplication",
            ActionKind::RestartApplication => "RestartApplication",
        }
    }
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
    /// When the deployment fails for lack of progress (from the apps'
    /// `upgradeStrategy.progressDeadlineSeconds`); `None`: it waits as long as it takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Deadline>,
    /// How far it had got when it last moved forward, and when that was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<Mark>,
    #[serde(default)]
    pub last_progress_at: Timestamp,
    /// Why dromos started it, when no user did (a rollback after a failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why a deployment ended (its events say so; the store only forgets it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeploymentEnd {
    /// Every action was carried out.
    Finished,
    /// It missed its progress deadline.
    Failed(String),
    /// Stopped through `DELETE /v2/deployments/{id}?force=true`.
    Cancelled,
    /// A forced change of the same apps took over (or a rollback of it started).
    Superseded,
}

impl Deployment {
    /// When the deployment last moved forward (its start, for one that has not yet, or
    /// a record written before progress was tracked).
    pub fn progress_since(&self) -> Timestamp {
        self.last_progress_at.max(self.version)
    }
}

/// A deployment's progress deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deadline {
    pub seconds: u64,
    /// Roll back when it is missed (else the deployment just ends, leaving the apps at
    /// their new definitions).
    pub rollback: bool,
}

/// How far a deployment has got: steps done; in the current step, the new tasks that
/// count (running, healthy, ready) and the tasks still to go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mark {
    pub steps: u32,
    pub counted: u32,
    pub remaining: u32,
}

impl Mark {
    /// Whether `self` is further than `before`: a step more, or within the same step
    /// more tasks that count or fewer to go (and neither gone backwards).
    pub fn beyond(&self, before: &Mark) -> bool {
        if self.steps != before.steps {
            return self.steps > before.steps;
        }
        let no_worse = self.counted >= before.counted && self.remaining <= before.remaining;
        no_worse && (self.counted > before.counted || self.remaining < before.remaining)
    }
}
