//! The repositories previewd serves, and through which App installation. Installation events
//! add and remove them; every pull request delivery refreshes them; the resync of open pull
//! requests walks them.

use super::{Store, StoreError, with_pool};
use crate::model::{InstallationId, Repo, RepoId};
use crate::time::now_ms;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RepositoryRecord {
    pub repo_id: i64,
    pub owner: String,
    pub name: String,
    pub installation_id: Option<i64>,
    pub active: bool,
    /// The `ETag` of the last listing of its open pull requests.
    pub pulls_etag: Option<String>,
    /// `present` or `absent`: whether the preview file was at `config_sha`, the head commit of
    /// the last pull request previewd considered.
    pub config_state: Option<String>,
    pub config_sha: Option<String>,
}

impl RepositoryRecord {
    pub fn repo(&self) -> Repo {
        Repo { id: RepoId(self.repo_id), owner: self.owner.clone(), name: self.name.clone() }
    }

    pub fn installation(&self) -> Option<InstallationId> {
        self.installation_id.map(InstallationId)
    }
}

const COLUMNS: &str = "repo_id, owner, name, installation_id, active, pulls_etag, config_state, config_sha";

impl Store {
    /// Records that previewd serves `repo` (through `installation`, when a GitHub App); a
    /// renamed repository keeps its row, since the id is the key.
    pub async fn upsert_repository(
        &self,
        repo: &Repo,
        installation: Option<InstallationId>,
        active: bool,
    ) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query(
            "INSERT INTO repositories (repo_id, owner, name, installation_id, active, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (repo_id) DO UPDATE SET owner = excluded.owner, name = excluded.name, \
                installation_id = COALESCE(excluded.installation_id, repositories.installation_id), \
                active = excluded.active, updated_at = excluded.updated_at",
        )
        .bind(repo.id.0)
        .bind(&repo.owner)
        .bind(&repo.name)
        .bind(installation.map(|i| i.0))
        .bind(active)
        .bind(now_ms())
        .execute(pool)
        .await
        .map(drop)
        .map_err(StoreError::query("recording a repository")))
    }

    /// Stops serving every repository of an uninstalled (or suspended) installation.
    pub async fn deactivate_installation(&self, installation: InstallationId) -> Result<u64, StoreError> {
        with_pool!(self, pool => sqlx::query(
            "UPDATE repositories SET active = FALSE, updated_at = $1 WHERE installation_id = $2 AND active",
        )
        .bind(now_ms())
        .bind(installation.0)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
        .map_err(StoreError::query("removing an installation's repositories")))
    }

    pub async fn repository(&self, repo: RepoId) -> Result<Option<RepositoryRecord>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM repositories WHERE repo_id = $1"
        )))
        .bind(repo.0)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::query("reading a repository")))
    }

    /// The repositories previewd currently serves, by id.
    /// The repository named `owner/name` (without regard to case).
    pub async fn repository_by_name(&self, owner: &str, name: &str) -> Result<Option<RepositoryRecord>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM repositories WHERE lower(owner) = lower($1) AND lower(name) = lower($2) \
             ORDER BY active DESC, repo_id LIMIT 1"
        )))
        .bind(owner)
        .bind(name)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::query("reading a repository")))
    }

    pub async fn active_repositories(&self) -> Result<Vec<RepositoryRecord>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM repositories WHERE active ORDER BY repo_id"
        )))
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("listing repositories")))
    }

    /// Records whether `repo` has its preview file at commit `sha`.
    pub async fn record_repo_config(&self, repo: RepoId, sha: &str, present: bool) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query(
            "UPDATE repositories SET config_state = $1, config_sha = $2, config_checked_at = $3 WHERE repo_id = $4",
        )
        .bind(if present { "present" } else { "absent" })
        .bind(sha)
        .bind(now_ms())
        .bind(repo.0)
        .execute(pool)
        .await
        .map(drop)
        .map_err(StoreError::query("recording a repository's preview configuration")))
    }

    pub async fn set_pulls_etag(&self, repo: RepoId, etag: Option<&str>) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query("UPDATE repositories SET pulls_etag = $1 WHERE repo_id = $2")
            .bind(etag)
            .bind(repo.0)
            .execute(pool)
            .await
            .map(drop)
            .map_err(StoreError::query("recording a listing's ETag")))
    }
}
