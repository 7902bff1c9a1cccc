//! Events: what happened, in Marathon's event-bus vocabulary (reference section 6.2),
//! plus dromos's job-run events. The master derives most of them from the changes it
//! commits ([`crate::master::events`]); the API and the health-check handling add the
//! few that no stored change carries. The bus ([`crate::events`]) numbers them and fans
//! them out to `/v2/events` subscribers.
//!
//! Payloads stay small: deployment events carry the plan's steps (Marathon's "light"
//! plan format), never the whole app tree before and after.

use super::agent::AgentId;
use super::deployment::{Deployment, DeploymentAction};
use super::ids::{InstanceId, PathId, TaskId};
use super::job::JobEvent;
use super::task::{Task, TaskState};
use super::time::Timestamp;
use serde::Serialize;

/// One event with the time it happened. Serialized flat, as Marathon's
/// `{"eventType": ..., "timestamp": ..., <fields>}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub timestamp: Timestamp,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "eventType")]
pub enum EventKind {
    /// An app was created or changed through the REST API.
    #[serde(rename = "api_post_event", rename_all = "camelCase")]
    ApiPost { client_ip: String, uri: String, app_definition: serde_json::Value },
    #[serde(rename = "status_update_event", rename_all = "camelCase")]
    StatusUpdate {
        slave_id: AgentId,
        task_id: TaskId,
        task_status: TaskState,
        message: String,
        app_id: PathId,
        host: String,
        ip_addresses: Vec<IpAddress>,
        ports: Vec<u16>,
        version: Timestamp,
    },
    #[serde(rename = "instance_changed_event", rename_all = "camelCase")]
    InstanceChanged {
        instance_id: InstanceId,
        condition: &'static str,
        run_spec_id: PathId,
        agent_id: AgentId,
        host: String,
        run_spec_version: Timestamp,
    },
    #[serde(rename = "instance_health_changed_event", rename_all = "camelCase")]
    InstanceHealthChanged { instance_id: InstanceId, run_spec_id: PathId, run_spec_version: Timestamp, healthy: bool },
    #[serde(rename = "health_status_changed_event", rename_all = "camelCase")]
    HealthStatusChanged { app_id: PathId, instance_id: InstanceId, task_id: TaskId, version: Timestamp, alive: bool },
    /// A check failed (each counted failure, not only the one that kills).
    #[serde(rename = "failed_health_check_event", rename_all = "camelCase")]
    FailedHealthCheck {
        app_id: PathId,
        instance_id: InstanceId,
        task_id: TaskId,
        health_check: serde_json::Value,
        cause: Option<String>,
    },
    #[serde(rename = "unhealthy_instance_kill_event", rename_all = "camelCase")]
    UnhealthyInstanceKill {
        app_id: PathId,
        task_id: TaskId,
        instance_id: InstanceId,
        version: Timestamp,
        reason: String,
        host: String,
        slave_id: AgentId,
    },
    /// A deployment started a step (its first one when it was created).
    #[serde(rename = "deployment_info", rename_all = "camelCase")]
    DeploymentInfo { plan: PlanInfo, current_step: StepInfo },
    #[serde(rename = "deployment_step_success", rename_all = "camelCase")]
    DeploymentStepSuccess { plan: PlanInfo, current_step: StepInfo },
    #[serde(rename = "deployment_step_failure", rename_all = "camelCase")]
    DeploymentStepFailure { plan: PlanInfo, current_step: StepInfo },
    #[serde(rename = "deployment_success")]
    DeploymentSuccess { id: String, plan: PlanInfo },
    #[serde(rename = "deployment_failed")]
    DeploymentFailed { id: String, plan: PlanInfo, reason: String },
    #[serde(rename = "app_terminated_event", rename_all = "camelCase")]
    AppTerminated { app_id: PathId },
    /// A load balancer (`dromos haproxy`) left an app out of its config: invalid
    /// labels, a clash with another app, or config HAProxy refused.
    #[serde(rename = "load_balancer_rejected_app_event", rename_all = "camelCase")]
    LoadBalancerRejectedApp { load_balancer: String, app_id: String, label: String, message: String },
    /// A job run started, ended, was retried, missed or skipped (`job_run_*`).
    #[serde(untagged)]
    Job(JobEvent),
}

impl EventKind {
    /// The `eventType` (what `?event_type=` filters on).
    pub fn event_type(&self) -> &'static str {
        match self {
            EventKind::ApiPost { .. } => "api_post_event",
            EventKind::StatusUpdate { .. } => "status_update_event",
            EventKind::InstanceChanged { .. } => "instance_changed_event",
            EventKind::InstanceHealthChanged { .. } => "instance_health_changed_event",
            EventKind::HealthStatusChanged { .. } => "health_status_changed_event",
            EventKind::FailedHealthCheck { .. } => "failed_health_check_event",
            EventKind::UnhealthyInstanceKill { .. } => "unhealthy_instance_kill_event",
            EventKind::DeploymentInfo { .. } => "deployment_info",
            EventKind::DeploymentStepSuccess { .. } => "deployment_step_success",
            EventKind::DeploymentStepFailure { .. } => "deployment_step_failure",
            EventKind::DeploymentSuccess { .. } => "deployment_success",
            EventKind::DeploymentFailed { .. } => "deployment_failed",
            EventKind::AppTerminated { .. } => "app_terminated_event",
            EventKind::LoadBalancerRejectedApp { .. } => "load_balancer_rejected_app_event",
            EventKind::Job(j) => j.event_type(),
        }
    }

    pub fn at(self, timestamp: Timestamp) -> Event {
        Event { timestamp, kind: self }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IpAddress {
    pub ip_address: String,
    pub protocol: &'static str,
}

/// A deployment plan as events show it: id, version and steps, no app trees.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanInfo {
    pub id: String,
    pub version: Timestamp,
    pub steps: Vec<StepInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepInfo {
    pub actions: Vec<DeploymentAction>,
}

impl PlanInfo {
    pub fn of(d: &Deployment) -> PlanInfo {
        PlanInfo {
            id: d.id.clone(),
            version: d.version,
            steps: (0..d.steps.len()).map(|i| StepInfo::of(d, i)).collect(),
        }
    }
}

impl StepInfo {
    /// Step `i` of `d` (empty past the last).
    pub fn of(d: &Deployment, i: usize) -> StepInfo {
        StepInfo { actions: d.steps.get(i).cloned().unwrap_or_default() }
    }
}

/// Marathon's instance condition for a task state (`instance_changed_event`).
pub fn condition(state: TaskState) -> &'static str {
    match state {
        TaskState::Staging => "Staging",
        TaskState::Starting => "Starting",
        TaskState::Running => "Running",
        TaskState::Killing => "Killing",
        TaskState::Finished => "Finished",
        TaskState::Failed => "Failed",
        TaskState::Killed => "Killed",
        TaskState::Error => "Error",
        TaskState::Unreachable => "Unreachable",
        // A lost task is replaced and forgotten: to Marathon's clients it is gone.
        TaskState::Lost | TaskState::Gone => "Gone",
        TaskState::Dropped => "Dropped",
        TaskState::Unknown => "Unknown",
    }
}

/// The two events a task's new state makes (Marathon sends both).
pub fn task_changed(t: &Task, at: Timestamp) -> [Event; 2] {
    let status = EventKind::StatusUpdate {
        slave_id: t.agent_id.clone(),
        task_id: t.id.clone(),
        task_status: t.state,
        message: t.message.clone().unwrap_or_default(),
        app_id: t.app_id.clone(),
        host: t.host.clone(),
        ip_addresses: Vec::new(),
        ports: t.ports.clone(),
        version: t.version,
    };
    let instance = EventKind::InstanceChanged {
        instance_id: t.id.instance_id(),
        condition: condition(t.state),
        run_spec_id: t.app_id.clone(),
        agent_id: t.agent_id.clone(),
        host: t.host.clone(),
        run_spec_version: t.version,
    };
    [status.at(at), instance.at(at)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::JobName;
    use serde_json::json;

    #[test]
    fn events_serialize_flat_with_type_and_time() {
        let at = Timestamp::from_millis(1_700_000_000_000);
        let e = EventKind::AppTerminated { app_id: PathId::parse_app("/a/b").unwrap() }.at(at);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v, json!({"eventType": "app_terminated_event", "timestamp": at, "appId": "/a/b"}));
        assert_eq!(e.kind.event_type(), "app_terminated_event");

        // Job events keep their own type names, with the timestamp beside them.
        let job = JobEvent::Skipped { job: JobName::parse("nightly").unwrap(), due: at };
        let e = EventKind::Job(job).at(at);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["eventType"], "job_run_skipped");
        assert_eq!(v["timestamp"], json!(at));
        assert_eq!(v["job"], "nightly");
        assert_eq!(e.kind.event_type(), "job_run_skipped");
        // One eventType key, not two.
        assert_eq!(serde_json::to_string(&e).unwrap().matches("eventType").count(), 1);
    }
}
