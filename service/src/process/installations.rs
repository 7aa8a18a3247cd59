//! Installation events: which repositories previewd serves, and the teardown of the
//! environments of an installation or repository that is gone.

use super::*;

impl JobRunner {
    pub(super) async fn installation(
        &self,
        action: &str,
        installation: InstallationId,
        account: &str,
        added: &[Repo],
        removed: &[Repo],
    ) -> Result<(), JobError> {
        // Not served any more: deactivated first, so the reports of the teardowns below do not
        // try to reach GitHub through an installation that is gone.
        if matches!(action, "deleted" | "suspend") {
            let count = self.store.deactivate_installation(installation).await.map_err(transient)?;
            tracing::info!(%installation, account, action, repositories = count, "installation gone: its repositories are no longer served");
            let cause = Cause::Event { event: format!("installation.{action}"), sender: None };
            return self.tear_down_all(Scope::Installation(installation), CloseReason::Uninstalled, &cause).await;
        }
        for repo in added.iter().filter(|r| self.serves(r)) {
            self.store.upsert_repository(repo, Some(installation), true).await.map_err(transient)?;
        }
        for repo in removed {
            self.store.upsert_repository(repo, Some(installation), false).await.map_err(transient)?;
            let cause = Cause::Event { event: format!("installation_repositories.{action}"), sender: None };
            self.tear_down_all(Scope::Repository(repo.id), CloseReason::RepositoryRemoved, &cause).await?;
        }
        tracing::info!(%installation, account, action, added = added.len(), removed = removed.len(), "installation repositories updated");
        Ok(())
    }

    /// Tears down every live environment in `scope`, through the planner as a close would.
    pub(super) async fn tear_down_all(&self, scope: Scope, reason: CloseReason, cause: &Cause) -> Result<(), JobError> {
        for env in self.store.live_environments_of(scope).await.map_err(transient)? {
            self.closed(&env.pull_request(), reason, cause).await?;
        }
        Ok(())
    }
}
