//! Task logs, wherever the task ran: the master asks the task's agent over its link
//! (`readLog`) and waits briefly for the answer (`log`). Logs stay on the agents' disks;
//! the master only relays one bounded chunk per request, the same way for the embedded
//! agent and for remote ones.

use super::Master;
use crate::agent::protocol::{LogChunk, LogStream, ToAgent};
use crate::domain::{AgentId, PathId, TaskId};
use std::collections::HashMap;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::oneshot;

/// How long the master waits for an agent's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum LogError {
    /// Neither a known task nor one the agent still has.
    #[error("{0}")]
    NotFound(String),
    #[error("the agent of task '{0}' is not connected")]
    AgentUnavailable(TaskId),
    #[error("the agent of task '{0}' did not answer in time")]
    AgentSilent(TaskId),
}

/// Log requests waiting for their agent's answer.
#[derive(Default)]
pub(super) struct PendingLogs {
    next: u64,
    waiting: HashMap<u64, (AgentId, oneshot::Sender<Result<LogChunk, String>>)>,
}

impl Master {
    fn pending_logs(&self) -> std::sync::MutexGuard<'_, PendingLogs> {
        // A poisoned lock means a panic while holding it; the map is still usable.
        self.logs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads a chunk of task `task`'s output from the agent that ran it: the agent of an
    /// active task, else the agent named in the app's last failure, else the embedded
    /// agent (ended tasks are no longer in the state, but their sandboxes stay a day).
    pub async fn read_log(
        &self,
        app: &PathId,
        task: &TaskId,
        stream: LogStream,
        offset: i64,
        length: u64,
    ) -> Result<LogChunk, LogError> {
        let agent = {
            let st = self.state.read().await;
            let failed_on = st
                .apps
                .get(app)
                .and_then(|r| r.last_failure.as_ref())
                .filter(|f| f.task_id == *task)
                .map(|f| f.slave_id.clone());
            st.tasks.get(task).map(|t| t.agent_id.clone()).or(failed_on).or_else(|| self.local_agent())
        };
        let Some(agent) = agent else {
            return Err(LogError::NotFound(format!("Task '{task}' does not exist")));
        };
        let (tx, rx) = oneshot::channel();
        let request = {
            let mut p = self.pending_logs();
            p.next += 1;
            let request = p.next;
            p.waiting.insert(request, (agent.clone(), tx));
            request
        };
        let cmd = ToAgent::ReadLog { request, task_id: task.clone(), stream, offset, length };
        if !self.try_send_to(&agent, cmd) {
            self.pending_logs().waiting.remove(&request);
            return Err(LogError::AgentUnavailable(task.clone()));
        }
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, rx).await;
        self.pending_logs().waiting.remove(&request);
        match answer {
            Ok(Ok(Ok(chunk))) => Ok(chunk),
            Ok(Ok(Err(why))) => Err(LogError::NotFound(why)),
            // The session ended (sender dropped) or the time is up.
            Ok(Err(_)) | Err(_) => Err(LogError::AgentSilent(task.clone())),
        }
    }

    /// Hands an agent's `log` answer to the request waiting for it (only if that agent
    /// was the one asked).
    pub(super) fn deliver_log(&self, agent: &AgentId, request: u64, answer: Result<LogChunk, String>) {
        let mut p = self.pending_logs();
        if p.waiting.get(&request).is_some_and(|(asked, _)| asked == agent) {
            if let Some((_, tx)) = p.waiting.remove(&request) {
                let _ = tx.send(answer);
            }
        }
    }
}
