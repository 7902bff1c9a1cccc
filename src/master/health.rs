//! Health checks on the master's side: resolving an app's checks for one task (which of
//! the task's own ports each probes), keeping the states agents report, and killing a
//! task whose checks failed `maxConsecutiveFailures` times in a row (it is then replaced,
//! after the app's launch backoff, as Marathon does).

use super::state::Soft;
use super::{Master, MasterError};
use crate::agent::health::Finding;
use crate::agent::protocol::{CheckKind, HealthCheckTask, ReadinessCheckTask, ToAgent};
use crate::domain::app::{HealthCheck, HealthProtocol};
use crate::domain::event::{Event, EventKind};
use crate::domain::health::Health;
use crate::domain::task::{Goal, TaskFailure};
use crate::domain::{AgentId, AppSpec, Task, TaskId, TaskState, Timestamp};
use crate::store::Change;

/// The app's health checks for a task with host ports `ports` (in port-index order).
/// A check may only probe one of the task's own ports: `port` must be one of them and
/// `portIndex` must name one; otherwise the check carries an error and fails.
pub fn health_check_tasks(spec: &AppSpec, ports: &[u16]) -> Vec<HealthCheckTask> {
    let docker = spec.docker_image().is_some();
    spec.health_checks
        .iter()
        .map(|hc| {
            let mut check = resolve(hc, ports);
            if docker && matches!(check.kind, CheckKind::Command { .. }) {
                // It would have to run inside the container (docker exec).
                check.error = Some("COMMAND health checks of Docker containers are not supported yet".into());
            }
            check
        })
        .collect()
}

fn resolve(hc: &HealthCheck, ports: &[u16]) -> HealthCheckTask {
    let path = || hc.path.clone().unwrap_or_else(|| "/".into());
    let kind = match hc.protocol {
        HealthProtocol::Http | HealthProtocol::MesosHttp => CheckKind::Http { path: path() },
        HealthProtocol::Https | HealthProtocol::MesosHttps => CheckKind::Https { path: path() },
        HealthProtocol::Tcp | HealthProtocol::MesosTcp => CheckKind::Tcp,
        HealthProtocol::Command => {
            CheckKind::Command { command: hc.command.as_ref().map(|c| c.value.clone()).unwrap_or_default() }
        }
    };
    let (port, error) = match (&kind, hc.port, hc.port_index) {
        (CheckKind::Command { .. }, _, _) => (None, None),
        (_, Some(p), _) => match u16::try_from(p).ok().filter(|p| ports.contains(p)) {
            Some(p) => (Some(p), None),
            None => (None, Some(format!("port {p} is not one of the task's ports {ports:?}"))),
        },
        (_, None, index) => {
            let i = index.unwrap_or(0);
            match usize::try_from(i).ok().and_then(|i| ports.get(i)) {
                Some(p) => (Some(*p), None),
                None => (None, Some(format!("the task has no host port at index {i}"))),
            }
        }
    };
    let ms = |s: i64| (s.max(0) as u64).saturating_mul(1000);
    // delaySeconds belongs to Mesos-level checks (MESOS_*, COMMAND); Marathon ran its
    // own HTTP, HTTPS and TCP checks without it.
    let mesos_level = hc.is_mesos_level();
    HealthCheckTask {
        kind,
        port,
        grace_ms: ms(hc.grace_period_seconds),
        interval_ms: ms(hc.interval_seconds),
        timeout_ms: ms(hc.timeout_seconds),
        delay_ms: if mesos_level { ms(hc.delay_seconds) } else { 0 },
        max_consecutive_failures: hc.kill_after().unwrap_or(0),
        ignore_http1xx: hc.ignore_http1xx,
        error,
    }
}

/// The app's readiness check for a task with host ports `ports`: it probes the port
/// named by `portName` (validation made sure there is one).
pub fn readiness_task(spec: &AppSpec, ports: &[u16]) -> Option<ReadinessCheckTask> {
    let rc = spec.readiness_checks.first()?;
    let index = spec.port_names().iter().position(|n| n.as_deref() == Some(rc.port_name.as_str()))?;
    Some(ReadinessCheckTask {
        name: rc.name.clone(),
        https: rc.protocol == crate::domain::app::ReadinessProtocol::Https,
        port: *ports.get(index)?,
        path: rc.path.clone(),
        interval_ms: rc.interval_seconds.max(0) as u64 * 1000,
        timeout_ms: rc.timeout_seconds.max(0) as u64 * 1000,
        ready_statuses: rc.http_status_codes_for_ready.iter().filter_map(|c| u16::try_from(*c).ok()).collect(),
    })
}

/// The events one health report makes: a check that turned (or first reported) alive
/// or dead changes the task's health; a counted failure is a failed check.
fn health_events(
    task: &Task,
    check: Option<&HealthCheck>,
    before: Option<&Health>,
    after: &Health,
    all_alive: bool,
    at: Timestamp,
) -> Vec<Event> {
    let mut out = Vec::new();
    if before.map(|b| b.alive) != Some(after.alive) {
        out.push(
            EventKind::HealthStatusChanged {
                app_id: task.app_id.clone(),
                instance_id: task.id.instance_id(),
                task_id: task.id.clone(),
                version: task.version,
                alive: after.alive,
            }
            .at(at),
        );
        out.push(
            EventKind::InstanceHealthChanged {
                instance_id: task.id.instance_id(),
                run_spec_id: task.app_id.clone(),
                run_spec_version: task.version,
                healthy: all_alive,
            }
            .at(at),
        );
    }
    if !after.alive && after.consecutive_failures > before.map_or(0, |b| b.consecutive_failures) {
        out.push(
            EventKind::FailedHealthCheck {
                app_id: task.app_id.clone(),
                instance_id: task.id.instance_id(),
                task_id: task.id.clone(),
                health_check: check.map(|c| serde_json::to_value(c).unwrap_or_default()).unwrap_or_default(),
                cause: after.last_failure_cause.clone(),
            }
            .at(at),
        );
    }
    out
}

impl Master {
    /// Records what a task's checks found: a readiness answer is kept (soft state, for
    /// deployments); a health state may lead to a kill ([`Master::on_health`]).
    pub(super) async fn on_finding(
        &self,
        agent: AgentId,
        task_id: TaskId,
        finding: Finding,
    ) -> Result<(), MasterError> {
        match finding {
            Finding::Health(index, health) => self.on_health(agent, task_id, index, health).await,
            Finding::Ready(readiness) => {
                let noted = self
                    .note(move |st, _| {
                        match st.tasks.get(&task_id).is_some_and(|t| t.agent_id == agent && t.is_active()) {
                            true => (vec![Soft::Readiness(task_id, readiness)], true),
                            false => (Vec::new(), false),
                        }
                    })
                    .await?;
                if noted {
                    // A ready task may let a deployment go on.
                    self.wake();
                }
                Ok(())
            }
        }
    }

    /// Records a health state an agent reported; kills the task when its check failed
    /// too often in a row (only a running task of that agent, still wanted).
    async fn on_health(&self, agent: AgentId, task_id: TaskId, index: u16, health: Health) -> Result<(), MasterError> {
        let (id, reported) = (task_id.clone(), health.clone());
        let noted = self
            .note(move |st, now| {
                let Some(task) = st.tasks.get(&id).filter(|t| t.agent_id == agent && t.is_active()).cloned() else {
                    return (Vec::new(), None);
                };
                let check =
                    st.apps.get(&task.app_id).and_then(|a| a.current.spec.health_checks.get(index as usize)).cloned();
                let kill_after = check.as_ref().and_then(HealthCheck::kill_after);
                let due = kill_after.is_some_and(|n| reported.consecutive_failures >= n)
                    && task.state == TaskState::Running
                    && task.goal == Goal::Running;
                let mut checks = st.health.get(&id).cloned().unwrap_or_default();
                let before = checks.insert(index, reported.clone());
                let all_alive = checks.values().all(|h| h.alive);
                let events = health_events(&task, check.as_ref(), before.as_ref(), &reported, all_alive, now);
                (vec![Soft::Health(id, index, reported)], Some((due, task, events, agent)))
            })
            .await?;
        let Some((due, task, events, agent)) = noted else {
            return Ok(());
        };
        self.events.publish_all(events);
        if !due {
            return Ok(());
        }
        let cause = health.last_failure_cause.clone().unwrap_or_default();
        let message = format!("killed after {} consecutive failed health checks: {cause}", health.consecutive_failures);
        tracing::warn!(task = %task_id, "{message}");
        let id = task_id.clone();
        let failed = self
            .write(move |state, now| {
                let Some(t) = state.tasks.get(&id).filter(|t| t.goal == Goal::Running) else {
                    return Ok((Vec::new(), None));
                };
                let mut t = t.clone();
                t.goal = Goal::Stopped;
                t.message = Some(message.clone());
                let failure = TaskFailure {
                    app_id: t.app_id.clone(),
                    host: t.host.clone(),
                    message,
                    state: TaskState::Killed,
                    task_id: t.id.clone(),
                    timestamp: now,
                    version: t.version,
                    slave_id: t.agent_id.clone(),
                };
                let backoff = (t.app_id.clone(), t.config_version, now);
                Ok((vec![Change::SetLastFailure(Box::new(failure)), Change::PutTask(Box::new(t))], Some(backoff)))
            })
            .await?;
        if let Some(failure) = failed {
            let kill = EventKind::UnhealthyInstanceKill {
                app_id: task.app_id.clone(),
                task_id: task.id.clone(),
                instance_id: task.id.instance_id(),
                version: task.version,
                reason: health.last_failure_cause.clone().unwrap_or_default(),
                host: task.host.clone(),
                slave_id: task.agent_id.clone(),
            };
            self.events.publish(&kill.at(super::now()));
            // Health-check kills count toward the launch backoff (Marathon's rule).
            self.count_failures(vec![failure]).await;
            self.send_to(&agent, ToAgent::Kill { task_id });
            self.wake();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::dto::app::parse_app;
    use serde_json::json;

    #[test]
    fn checks_probe_only_the_tasks_own_ports() {
        let spec = parse_app(
            json!({"id": "/a", "cmd": "x", "portDefinitions": [{"port": 0}, {"port": 0}], "healthChecks": [
                {"protocol": "HTTP", "path": "/health", "portIndex": 1, "gracePeriodSeconds": 5},
                {"protocol": "MESOS_TCP"},
                {"protocol": "COMMAND", "command": {"value": "true"}, "maxConsecutiveFailures": 0}
            ]}),
            None,
        )
        .unwrap();
        let checks = health_check_tasks(&spec, &[31000, 31001]);
        assert_eq!(checks[0].kind, CheckKind::Http { path: "/health".into() });
        assert_eq!((checks[0].port, checks[0].grace_ms, checks[0].interval_ms), (Some(31001), 5000, 60_000));
        assert_eq!((checks[1].kind.clone(), checks[1].port), (CheckKind::Tcp, Some(31000)));
        assert_eq!(checks[2].kind, CheckKind::Command { command: "true".into() });
        assert_eq!(checks[2].max_consecutive_failures, 1, "Mesos-level: 0 kills on the first failure");
        assert_eq!(checks[0].max_consecutive_failures, 3);
        assert_eq!((checks[0].delay_ms, checks[1].delay_ms, checks[2].delay_ms), (0, 15_000, 15_000));
        // An explicit port that is not the task's (validation stops it at the API; a
        // stored definition could still carry it) fails with the reason.
        let mut odd = spec.health_checks[1].clone();
        odd.port = Some(8080);
        odd.port_index = None;
        let r = resolve(&odd, &[31000]);
        assert_eq!(r.port, None);
        assert!(r.error.as_deref().unwrap().contains("not one of the task's ports"));
        // A task that got fewer ports than the index needs fails its check with a reason.
        assert!(health_check_tasks(&spec, &[31000])[0].error.is_some());
    }
}
