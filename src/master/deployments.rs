//! Cancelling a deployment (`DELETE /v2/deployments/{id}`): stop it, or roll it back
//! with a new deployment through the same planner. The rollback takes every affected
//! app back to what the deployment found: a created app is removed, a removed app comes
//! back from the definition the deployment kept, a scaled or changed app returns to its
//! earlier version, whose tasks that still run count as current again (so only the new
//! tasks go).

use super::plans::{self, AppChange, TreeChange};
use super::state::{DeploymentFailure, Soft};
use super::{Master, MasterError};
use crate::domain::deployment::{ActionKind, DeploymentEnd};
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
                let stop = state
                    .deployments
                    .contains_key(&id)
                    .then_some(Change::DeleteDeployment(id, DeploymentEnd::Cancelled));
                Ok((stop.into_iter().collect(), ()))
            })
            .await?;
            return Ok(None);
        }
        let change = self.rollback_of(&dep).await?;
        let rollback = self.write(move |state, now| plans::deploy(state, now, change)).await?;
        self.wake();
        Ok(Some(rollback))
    }

    /// A deployment missed its progress deadline (it is gone already): remember why for
    /// its apps, and roll it back if its apps ask for that.
    pub(super) async fn deployment_failed(&self, dep: Deployment, reason: String) {
        tracing::warn!(deployment = %dep.id, "deployment failed: {reason}");
        // A rollback dromos started itself is not rolled back again (no flip-flop).
        let rollback = dep.deadline.is_some_and(|d| d.rollback) && dep.reason.is_none();
        let (at, failed) = (super::now(), reason.clone());
        let apps = dep.affected_apps.clone();
        let id = dep.id.clone();
        let noted = self
            .note(move |_, _| {
                let failure = DeploymentFailure { id, at, reason: failed, rolled_back: rollback };
                (apps.into_iter().map(|app| Soft::DeploymentFailed(app, failure.clone())).collect(), ())
            })
            .await;
        if let Err(e) = noted {
            tracing::error!("recording a failed deployment: {e}");
        }
        if !rollback {
            return;
        }
        let result = async {
            let mut change = self.rollback_of(&dep).await?;
            change.reason = Some(format!("rollback of deployment {} after {reason}", dep.id));
            self.write(move |state, now| plans::deploy(state, now, change)).await
        }
        .await;
        match result {
            Ok(d) => tracing::info!(deployment = %d.id, "rolling back failed deployment {}", dep.id),
            Err(e) => tracing::error!("rolling back failed deployment {}: {e}", dep.id),
        }
        self.wake();
    }

    /// The change that undoes `dep`, built on the apps as they are now.
    pub(super) async fn rollback_of(&self, dep: &Deployment) -> Result<TreeChange, MasterError> {
        // Superseding the deployment being undone is the point.
        let mut change = TreeChange { force: true, ..Default::default() };
        let created = |app: &crate::domain::PathId| {
            dep.steps.iter().flatten().any(|a| a.action == ActionKind::StartApplication && a.app == *app)
        };
        let current: Vec<_> = {
            let state = self.state.read().await;
            dep.affected_apps.iter().map(|id| (id.clone(), state.apps.get(id).map(|r| r.current.version))).collect()
        };
        for (id, now_at) in current {
            let what = if let Some(gone) = dep.removed.iter().find(|v| v.spec.id == id) {
                AppChange::RollBack(gone.clone())
            } else if created(&id) {
                AppChange::Remove
            } else {
                let before = dep.original.get(&id).copied().ok_or_else(|| {
                    MasterError::CannotRollBack(format!("the deployment did not record what {id} was before"))
                })?;
                let old = self.store.app_version(&id, before).await?.ok_or_else(|| {
                    MasterError::CannotRollBack(format!("version {before} of {id} is no longer stored"))
                })?;
                AppChange::RollBack(old)
            };
            // An app that is gone already needs no removal.
            if now_at.is_none() && matches!(what, AppChange::Remove) {
                continue;
            }
            change.base.insert(id.clone(), now_at);
            change.apps.insert(id, what);
        }
        Ok(change)
    }
}
