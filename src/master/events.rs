//! Which events a committed change makes. Pure: the writer calls [`derive`] with the
//! state just before each change is applied, and publishes what it returns once the
//! batch is on disk (events never announce what a crash could take back).
//!
//! - A task whose state changed: `status_update_event` and `instance_changed_event`
//!   (job tasks report through their `job_run_*` events instead).
//! - A new deployment: `deployment_info` for its first step; a deployment further by
//!   steps: `deployment_step_success` for each step done and `deployment_info` for the
//!   next; its end: `deployment_success`, or `deployment_step_failure` and
//!   `deployment_failed` with the reason.
//! - A removed app: `app_terminated_event`.
//!
//! What no stored change carries (API posts, health results, kills for failed checks)
//! is published where it happens.

use super::state::State;
use crate::domain::deployment::DeploymentEnd;
use crate::domain::event::{task_changed, Event, EventKind, PlanInfo, StepInfo};
use crate::domain::{Deployment, Timestamp};
use crate::store::Change;

/// The events `change` makes, applied to `before`.
pub fn derive(before: &State, change: &Change, now: Timestamp, out: &mut Vec<Event>) {
    match change {
        Change::PutTask(t) if t.job.is_none() && before.tasks.get(&t.id).map(|old| old.state) != Some(t.state) => {
            out.extend(task_changed(t, now));
        }
        Change::PutDeployment(d) => {
            let done = |d: &Deployment| d.mark.map_or(0, |m| m.steps as usize);
            match before.deployments.get(&d.id) {
                None => out.push(info(d, done(d)).at(now)),
                Some(old) if done(d) > done(old) => {
                    let plan = PlanInfo::of(d);
                    for step in done(old)..done(d) {
                        out.push(step_success(&plan, d, step).at(now));
                    }
                    if done(d) < d.steps.len() {
                        out.push(info(d, done(d)).at(now));
                    }
                }
                Some(_) => {}
            }
        }
        Change::DeleteDeployment(id, end) => {
            let Some(d) = before.deployments.get(id) else { return };
            let plan = PlanInfo::of(d);
            let step = d.mark.map_or(0, |m| m.steps as usize);
            let failed = |reason: &str| EventKind::DeploymentFailed {
                id: d.id.clone(),
                plan: plan.clone(),
                reason: reason.to_string(),
            };
            match end {
                DeploymentEnd::Finished => {
                    for s in step..d.steps.len() {
                        out.push(step_success(&plan, d, s).at(now));
                    }
                    out.push(EventKind::DeploymentSuccess { id: d.id.clone(), plan: plan.clone() }.at(now));
                }
                DeploymentEnd::Failed(reason) => {
                    let current_step = StepInfo::of(d, step);
                    out.push(EventKind::DeploymentStepFailure { plan: plan.clone(), current_step }.at(now));
                    out.push(failed(reason).at(now));
                }
                DeploymentEnd::Cancelled => out.push(failed("cancelled").at(now)),
                DeploymentEnd::Superseded => out.push(failed("superseded by a forced change of the same apps").at(now)),
            }
        }
        Change::DeleteApp(id) if before.apps.contains_key(id) => {
            out.push(EventKind::AppTerminated { app_id: id.clone() }.at(now));
        }
        _ => {}
    }
}

fn info(d: &Deployment, step: usize) -> EventKind {
    EventKind::DeploymentInfo { plan: PlanInfo::of(d), current_step: StepInfo::of(d, step) }
}

fn step_success(plan: &PlanInfo, d: &Deployment, step: usize) -> EventKind {
    EventKind::DeploymentStepSuccess { plan: plan.clone(), current_step: StepInfo::of(d, step) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::deployment::{ActionKind, DeploymentAction, Mark};
    use crate::domain::{PathId, TaskState};
    use crate::scheduler::reconcile::tests::{spec, task, version};

    fn types(events: &[Event]) -> Vec<&'static str> {
        events.iter().map(|e| e.kind.event_type()).collect()
    }

    fn deployment(steps: usize, done: Option<u32>) -> Deployment {
        let app = PathId::parse_app("/web").unwrap();
        Deployment {
            id: "d1".into(),
            steps: (0..steps)
                .map(|_| vec![DeploymentAction { action: ActionKind::RestartApplication, app: app.clone() }])
                .collect(),
            mark: done.map(|steps| Mark { steps, ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn task_state_changes_make_status_and_instance_events() {
        let mut state = State::default();
        let now = Timestamp::from_millis(5);
        let t = task(&version(spec("/web", 1), 1), 1, TaskState::Staging, 1);
        let mut out = Vec::new();
        derive(&state, &Change::PutTask(Box::new(t.clone())), now, &mut out);
        assert_eq!(types(&out), ["status_update_event", "instance_changed_event"]);
        state.apply(&Change::PutTask(Box::new(t.clone())));
        // Same state again (a goal change, say): nothing.
        out.clear();
        derive(&state, &Change::PutTask(Box::new(t.clone())), now, &mut out);
        assert!(out.is_empty());
        let mut killed = t.clone();
        killed.state = TaskState::Killed;
        derive(&state, &Change::PutTask(Box::new(killed)), now, &mut out);
        let v = serde_json::to_value(&out[0]).unwrap();
        assert_eq!((v["taskStatus"].as_str(), v["appId"].as_str()), (Some("TASK_KILLED"), Some("/web")));
        assert_eq!(serde_json::to_value(&out[1]).unwrap()["condition"], "Killed");
    }

    #[test]
    fn deployments_report_each_step_and_how_they_ended() {
        let now = Timestamp::from_millis(5);
        let mut state = State::default();
        let mut out = Vec::new();
        let d = deployment(3, None);
        derive(&state, &Change::PutDeployment(Box::new(d.clone())), now, &mut out);
        assert_eq!(types(&out), ["deployment_info"]);
        state.apply(&Change::PutDeployment(Box::new(d.clone())));

        // Two steps at once: two successes and the info of the third.
        out.clear();
        let further = deployment(3, Some(2));
        derive(&state, &Change::PutDeployment(Box::new(further.clone())), now, &mut out);
        assert_eq!(types(&out), ["deployment_step_success", "deployment_step_success", "deployment_info"]);
        // Progress within a step is no event.
        state.apply(&Change::PutDeployment(Box::new(further)));
        out.clear();
        derive(&state, &Change::PutDeployment(Box::new(deployment(3, Some(2)))), now, &mut out);
        assert!(out.is_empty());

        let end = |e: DeploymentEnd| {
            let mut out = Vec::new();
            derive(&state, &Change::DeleteDeployment("d1".into(), e), now, &mut out);
            out
        };
        assert_eq!(types(&end(DeploymentEnd::Finished)), ["deployment_step_success", "deployment_success"]);
        let failed = end(DeploymentEnd::Failed("no progress".into()));
        assert_eq!(types(&failed), ["deployment_step_failure", "deployment_failed"]);
        assert_eq!(serde_json::to_value(&failed[1]).unwrap()["reason"], "no progress");
        assert_eq!(types(&end(DeploymentEnd::Cancelled)), ["deployment_failed"]);
        // Events are small: the plan's steps, no app definitions.
        let v = serde_json::to_value(&failed[1]).unwrap();
        assert_eq!(
            v["plan"]["steps"][0]["actions"][0],
            serde_json::json!({"action": "RestartApplication", "app": "/web"})
        );
        assert!(v["plan"].get("original").is_none() && v["plan"].get("target").is_none());
    }

    #[test]
    fn removing_an_app_terminates_it_once() {
        let mut state = State::default();
        let v = version(spec("/web", 1), 1);
        state.apply(&Change::PutApp(Box::new(v)));
        let mut out = Vec::new();
        let id = PathId::parse_app("/web").unwrap();
        derive(&state, &Change::DeleteApp(id.clone()), Timestamp::from_millis(1), &mut out);
        assert_eq!(types(&out), ["app_terminated_event"]);
        state.apply(&Change::DeleteApp(id.clone()));
        out.clear();
        derive(&state, &Change::DeleteApp(id), Timestamp::from_millis(1), &mut out);
        assert!(out.is_empty());
    }
}
