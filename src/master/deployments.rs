//! Cancelling a deployment (`DELETE /v2/deployments/{id}`): stop it, or roll it back
//! with a new deployment. Deployments touch one app each so far: a created app is
//! removed; a scale or update goes back to the app's previous version, whose tasks that
//! still run count as current again (so only the new tasks go); a deletion cannot be
//! rolled back, as the app's versions went with it.

use super::{plans, Master, MasterError};
use crate::domain::deployment::ActionKind;
use crate::domain::Deployment;
use crate::store::Change;

impl Master {
    /// Stops deployment `id` (`force`: nothing else happens; returns `None`) or rolls it
    /// back (returns the rollback deployment).
    pub async fn cancel_deployment(&self, id: String, force: bool) -> Result<Option<Deployment>, MasterError> {
        let dep = self.state.read().await.deployments.get(&id).cloned();
        let dep = dep.ok_or_else(|| MasterError::DeploymentNotFound(id.clone()))?;
        if force {
            self.write(move |state, _| {
                let stop = state.deployments.contains_key(&id).then_some(Change::DeleteDeployment(id));
                Ok((stop.into_iter().collect(), ()))
            })
            .await?;
            return Ok(None);
        }
        let action = dep.steps.iter().flatten().next().cloned();
        let action = action.ok_or_else(|| MasterError::CannotRollBack("the deployment has no actions".into()))?;
        let app = action.app;
        let rollback = match action.action {
            ActionKind::StartApplication => {
                self.write(move |state, now| plans::delete_app(state, now, app, true)).await?
            }
            ActionKind::StopApplication => {
                return Err(MasterError::CannotRollBack(
                    "a deleted app cannot be brought back by a rollback; stop the deployment with force=true".into(),
                ))
            }
            ActionKind::ScaleApplication | ActionKind::RestartApplication => {
                let (current, previous) = {
                    let state = self.state.read().await;
                    let rec = state.apps.get(&app).ok_or_else(|| MasterError::AppNotFound(app.clone()))?;
                    let at = rec.versions.iter().position(|v| *v == dep.version);
                    let previous = at.and_then(|i| i.checked_sub(1)).and_then(|i| rec.versions.get(i)).copied();
                    (rec.current.version, previous)
                };
                let previous = previous.ok_or_else(|| {
                    MasterError::CannotRollBack(format!("no version of {app} before {} to roll back to", dep.version))
                })?;
                let old = self.store.app_version(&app, previous).await?;
                let old = old.ok_or_else(|| MasterError::VersionNotFound(app.clone(), previous.to_string()))?;
                self.write(move |state, now| plans::roll_back_app(state, now, old, current)).await?
            }
        };
        self.wake();
        Ok(Some(rollback))
    }
}
