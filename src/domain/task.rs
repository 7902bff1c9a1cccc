//! Tasks: one running incarnation of an app instance on an agent, and the Mesos task
//! state machine they move through.

use super::agent::AgentId;
use super::ids::{PathId, TaskId};
use super::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Mesos task states as Marathon reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskState {
    #[serde(rename = "TASK_STAGING")]
    Staging,
    #[serde(rename = "TASK_STARTING")]
    Starting,
    #[serde(rename = "TASK_RUNNING")]
    Running,
    #[serde(rename = "TASK_KILLING")]
    Killing,
    #[serde(rename = "TASK_FINISHED")]
    Finished,
    #[serde(rename = "TASK_FAILED")]
    Failed,
    #[serde(rename = "TASK_KILLED")]
    Killed,
    #[serde(rename = "TASK_ERROR")]
    Error,
    #[serde(rename = "TASK_LOST")]
    Lost,
    #[serde(rename = "TASK_UNREACHABLE")]
    Unreachable,
    #[serde(rename = "TASK_GONE")]
    Gone,
    #[serde(rename = "TASK_DROPPED")]
    Dropped,
    #[serde(rename = "TASK_UNKNOWN")]
    Unknown,
}

impl TaskState {
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Staging => "TASK_STAGING",
            TaskState::Starting => "TASK_STARTING",
            TaskState::Running => "TASK_RUNNING",
            TaskState::Killing => "TASK_KILLING",
            TaskState::Finished => "TASK_FINISHED",
            TaskState::Failed => "TASK_FAILED",
            TaskState::Killed => "TASK_KILLED",
            TaskState::Error => "TASK_ERROR",
            TaskState::Lost => "TASK_LOST",
            TaskState::Unreachable => "TASK_UNREACHABLE",
            TaskState::Gone => "TASK_GONE",
            TaskState::Dropped => "TASK_DROPPED",
            TaskState::Unknown => "TASK_UNKNOWN",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }

    /// The task has ended and will never run again: its slot is free.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Error
                | TaskState::Lost
                | TaskState::Gone
                | TaskState::Dropped
        )
    }

    /// Terminal states that count as a launch failure for backoff (Marathon: failed and
    /// finished tasks back off, killed ones do not).
    pub fn counts_as_failure(self) -> bool {
        matches!(
            self,
            TaskState::Failed
                | TaskState::Finished
                | TaskState::Error
                | TaskState::Lost
                | TaskState::Dropped
                | TaskState::Gone
        )
    }

    fn rank(self) -> u8 {
        match self {
            TaskState::Staging => 0,
            TaskState::Starting => 1,
            TaskState::Running | TaskState::Unreachable | TaskState::Unknown => 2,
            TaskState::Killing => 3,
            _ => 4,
        }
    }

    /// Whether a status update from `self` to `next` is accepted. Updates are delivered
    /// at least once and may be duplicated or reordered, so a stale or repeated update
    /// is simply ignored: states only move forward, terminal states are final.
    pub fn accepts(self, next: TaskState) -> bool {
        if self.is_terminal() {
            return false;
        }
        if next.is_terminal() {
            return true;
        }
        match (self, next) {
            // An unreachable task that reports again is running again.
            (TaskState::Unreachable | TaskState::Unknown, TaskState::Running) => true,
            (TaskState::Running, TaskState::Unreachable | TaskState::Unknown) => true,
            _ => next.rank() > self.rank(),
        }
    }
}

/// What the scheduler wants of a task. Persisted before any kill is sent, so a crash
/// between the decision and the kill does not forget the kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Goal {
    Running,
    /// Kill it; the instance is not to be replaced (scale down, app removal, wipe).
    Stopped,
}

/// One task: an incarnation of an app instance placed on an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: TaskId,
    pub app_id: PathId,
    pub agent_id: AgentId,
    pub host: String,
    pub state: TaskState,
    pub goal: Goal,
    /// Host ports assigned on the agent, in port-index order.
    pub ports: Vec<u16>,
    /// The app version the task was launched with.
    pub version: Timestamp,
    /// The app's `lastConfigChangeAt` at launch: tasks with an older one are replaced on
    /// upgrade, scaling-only versions leave them alone.
    pub config_version: Timestamp,
    pub staged_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the task's agent was marked unreachable (the app's `unreachableStrategy`
    /// counts from here). Cleared when the task reports again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_since: Option<Timestamp>,
    /// The job run this task carries out (job tasks have no app: `app_id` is the root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<crate::domain::job::RunKey>,
}

impl Task {
    pub fn is_active(&self) -> bool {
        !self.state.is_terminal()
    }
}

/// The last task failure of an app (`lastTaskFailure` in app JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskFailure {
    pub app_id: PathId,
    pub host: String,
    pub message: String,
    pub state: TaskState,
    pub task_id: TaskId,
    pub timestamp: Timestamp,
    pub version: Timestamp,
    pub slave_id: AgentId,
}

#[cfg(test)]
mod tests {
    use super::TaskState::*;

    #[test]
    fn states_only_move_forward() {
        assert!(Staging.accepts(Starting));
        assert!(Staging.accepts(Running));
        assert!(Starting.accepts(Running));
        assert!(!Running.accepts(Starting));
        assert!(!Running.accepts(Running));
        assert!(Running.accepts(Killing));
        assert!(Killing.accepts(Killed));
        assert!(!Killing.accepts(Running));
    }

    #[test]
    fn terminal_states_are_final() {
        for t in [Finished, Failed, Killed, Error, Lost, Gone, Dropped] {
            assert!(t.is_terminal());
            for n in [Staging, Running, Killed, Failed] {
                assert!(!t.accepts(n), "{t:?} -> {n:?}");
            }
        }
    }

    #[test]
    fn unreachable_can_return() {
        assert!(Running.accepts(Unreachable));
        assert!(Unreachable.accepts(Running));
        assert!(Unreachable.accepts(Gone));
    }

    #[test]
    fn wire_names() {
        assert_eq!(super::TaskState::parse("TASK_RUNNING"), Some(Running));
        assert_eq!(Running.name(), "TASK_RUNNING");
        assert_eq!(serde_json::to_string(&Killed).unwrap(), "\"TASK_KILLED\"");
        assert!(Failed.counts_as_failure() && !Killed.counts_as_failure());
    }
}

/// Marathon's task environment (reference section 2): ports, host, app identity,
/// resources and labels, on top of the app's own `env` (plain values; secret references
/// are resolved by the secrets support, not here).
pub fn task_environment(
    app: &super::AppVersion,
    task: &TaskId,
    host: &str,
    ports: &[u16],
) -> std::collections::BTreeMap<String, String> {
    use super::app::EnvValue;
    let spec = &app.spec;
    let mut env = std::collections::BTreeMap::new();
    for (k, v) in &spec.env {
        if let EnvValue::Plain(s) = v {
            env.insert(k.clone(), s.clone());
        }
    }
    let names = spec.port_names();
    for (i, p) in ports.iter().enumerate() {
        env.insert(format!("PORT{i}"), p.to_string());
        if let Some(Some(name)) = names.get(i) {
            env.insert(format!("PORT_{}", env_key(name)), p.to_string());
        }
    }
    if let Some(p) = ports.first() {
        env.insert("PORT".into(), p.to_string());
    }
    env.insert("PORTS".into(), ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(","));
    env.insert("HOST".into(), host.to_string());
    env.insert("MARATHON_APP_ID".into(), spec.id.to_string());
    env.insert("MARATHON_APP_VERSION".into(), app.version.to_string());
    if let Some(img) = spec.docker_image() {
        env.insert("MARATHON_APP_DOCKER_IMAGE".into(), img.to_string());
    }
    env.insert("MARATHON_APP_RESOURCE_CPUS".into(), spec.cpus.to_string());
    env.insert("MARATHON_APP_RESOURCE_MEM".into(), spec.mem.to_string());
    env.insert("MARATHON_APP_RESOURCE_DISK".into(), spec.disk.to_string());
    env.insert("MARATHON_APP_RESOURCE_GPUS".into(), spec.gpus.to_string());
    let mut label_names = Vec::new();
    for (k, v) in &spec.labels {
        let key = env_key(k);
        // Marathon skips labels that cannot be variable names or are very long.
        if key.is_empty() || v.len() > 512 {
            continue;
        }
        env.insert(format!("MARATHON_APP_LABEL_{key}"), v.clone());
        label_names.push(key);
    }
    env.insert("MARATHON_APP_LABELS".into(), label_names.join(" "));
    env.insert("MESOS_TASK_ID".into(), task.to_string());
    env
}

/// Upper-cases a name and turns anything but letters, digits and `_` into `_`.
fn env_key(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

#[cfg(test)]
mod env_tests {
    use super::*;
    use crate::scheduler::reconcile::tests::{spec, version};

    #[test]
    fn marathon_variables() {
        let mut s = spec("/shop/web", 1);
        s.labels.insert("tier".into(), "front".into());
        s.env.insert("FOO".into(), crate::domain::app::EnvValue::Plain("bar".into()));
        s.port_definitions[0].name = Some("http".into());
        let mut second = s.port_definitions[0].clone();
        second.name = None;
        s.port_definitions.push(second);
        let app = version(s, 5);
        let task = crate::domain::InstanceId::new(&app.spec.id, "u1").task_id(1);
        let env = task_environment(&app, &task, "node1", &[31000, 31001]);
        assert_eq!(env["PORT0"], "31000");
        assert_eq!(env["PORT1"], "31001");
        assert_eq!(env["PORT"], "31000");
        assert_eq!(env["PORT_HTTP"], "31000");
        assert_eq!(env["PORTS"], "31000,31001");
        assert_eq!(env["HOST"], "node1");
        assert_eq!(env["MARATHON_APP_ID"], "/shop/web");
        assert_eq!(env["MARATHON_APP_VERSION"], app.version.to_string());
        assert_eq!(env["MARATHON_APP_LABEL_TIER"], "front");
        assert_eq!(env["MARATHON_APP_LABELS"], "TIER");
        assert_eq!(env["MESOS_TASK_ID"], task.to_string());
        assert_eq!(env["FOO"], "bar");
    }
}
