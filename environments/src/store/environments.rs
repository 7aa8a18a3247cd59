//! Environments and their history. Every change of state is written together with a transition
//! row (time, head SHA, reason) in the same transaction.

use super::{Backend, Store, StoreError, begin_write, with_pool};
use crate::model::{EnvironmentState, PrNumber, PullRequest, RepoId};
use crate::time::{Millis, now_ms};

/// A stored environment.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EnvironmentRecord {
    pub id: i64,
    pub repo_id: i64,
    pub repo_owner: String,
    pub repo_name: String,
    pub pr_number: i64,
    pub head_sha: String,
    pub head_branch: String,
    pub author: String,
    pub state: String,
    pub reason: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub expires_at: Option<Millis>,
}

impl EnvironmentRecord {
    /// The state column as the model's type. Only previewd writes it, so anything else means
    /// the database was edited by hand.
    pub fn state(&self) -> Result<EnvironmentState, StoreError> {
        EnvironmentState::parse(&self.state)
            .ok_or_else(|| StoreError::Corrupt(format!("environment {} has unknown state `{}`", self.id, self.state)))
    }
}

/// One change of an environment's state.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TransitionRecord {
    pub from_state: Option<String>,
    pub to_state: String,
    pub head_sha: String,
    pub reason: Option<String>,
    pub at: Millis,
}

const ENVIRONMENT_COLUMNS: &str = "id, repo_id, repo_owner, repo_name, pr_number, head_sha, head_branch, author, \
     state, reason, created_at, updated_at, expires_at";

impl Store {
    /// The environment of a pull request, if one was ever recorded.
    pub async fn environment(&self, repo: RepoId, pr: PrNumber) -> Result<Option<EnvironmentRecord>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ENVIRONMENT_COLUMNS} FROM environments WHERE repo_id = $1 AND pr_number = $2"
        )))
        .bind(repo.0)
        .bind(pr.0)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::query("reading an environment")))
    }

    /// All environments, newest first.
    pub async fn environments(&self) -> Result<Vec<EnvironmentRecord>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ENVIRONMENT_COLUMNS} FROM environments ORDER BY updated_at DESC, id DESC"
        )))
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("listing environments")))
    }

    /// The transitions of an environment, oldest first.
    pub async fn transitions(&self, environment: i64) -> Result<Vec<TransitionRecord>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(
            "SELECT from_state, to_state, head_sha, reason, at FROM environment_transitions \
             WHERE environment_id = $1 ORDER BY id",
        )
        .bind(environment)
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("reading environment history")))
    }

    /// Writes the pull request's details and moves its environment to `to` (creating it if
    /// new), recording the transition. The pull request's head SHA replaces the stored one.
    pub async fn record_environment(
        &self,
        pr: &PullRequest,
        to: EnvironmentState,
        reason: Option<&str>,
    ) -> Result<EnvironmentRecord, StoreError> {
        let now = now_ms();
        macro_rules! record {
            ($kind:tt $pool:expr) => {{
                let mut tx = begin_write!($kind $pool, "recording an environment")?;
                let before: Option<(i64, String)> = sqlx::query_as(
                    "SELECT id, state FROM environments WHERE repo_id = $1 AND pr_number = $2",
                )
                .bind(pr.repo.id.0)
                .bind(pr.number.0)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::query("reading an environment"))?;
                let record: EnvironmentRecord = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO environments (repo_id, repo_owner, repo_name, pr_number, head_sha, head_branch, author, \
                        state, reason, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
                     ON CONFLICT (repo_id, pr_number) DO UPDATE SET repo_owner = excluded.repo_owner, \
                        repo_name = excluded.repo_name, head_sha = excluded.head_sha, head_branch = excluded.head_branch, \
                        author = excluded.author, state = excluded.state, reason = excluded.reason, \
                        updated_at = excluded.updated_at \
                     RETURNING {ENVIRONMENT_COLUMNS}"
                )))
                .bind(pr.repo.id.0)
                .bind(&pr.repo.owner)
                .bind(&pr.repo.name)
                .bind(pr.number.0)
                .bind(&pr.head_sha.0)
                .bind(&pr.head_branch)
                .bind(&pr.author)
                .bind(to.as_str())
                .bind(reason)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::query("writing an environment"))?;
                sqlx::query(
                    "INSERT INTO environment_transitions (environment_id, from_state, to_state, head_sha, reason, at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(record.id)
                .bind(before.map(|(_, state)| state))
                .bind(to.as_str())
                .bind(&pr.head_sha.0)
                .bind(reason)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::query("recording an environment transition"))?;
                tx.commit().await.map_err(StoreError::query("committing an environment"))?;
                Ok(record)
            }};
        }
        match &self.backend {
            Backend::Sqlite(pool) => record!(sqlite pool),
            Backend::Postgres(pool) => record!(postgres pool),
        }
    }
}
