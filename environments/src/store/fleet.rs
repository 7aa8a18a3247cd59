//! The fleet as the platform team reads it (the admin API, the CLI): environments by filter,
//! one page at a time.
//!
//! Pages are keyed by id, newest first (`id < cursor`). Ids never change, so a listing that runs
//! while environments change state is neither skipped nor repeated: ordering by `updated_at`
//! would move an environment that changes during the walk from a page not yet read to one
//! already read.

use super::environments::LIVE_STATES;
use super::{Store, StoreError, with_pool};
use crate::model::EnvironmentState;
use crate::time::Millis;

/// Which environments to list. Every field narrows; matching is exact, owner and repository
/// names case-insensitive (as GitHub treats them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvironmentFilter {
    /// `owner/name`
    pub repository: Option<(String, String)>,
    pub owner: Option<String>,
    pub state: Option<EnvironmentState>,
    pub author: Option<String>,
    /// Changed at or after this time.
    pub updated_since: Option<Millis>,
    /// Only repositories the dashboard session with this id may read.
    pub visible_to_session: Option<i64>,
    /// Text found (case-insensitively) in `owner/name`, the head branch, the author or the
    /// pull request's title.
    pub search: Option<String>,
}

/// An environment as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EnvironmentSummary {
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
    pub name: Option<String>,
    pub url: Option<String>,
    pub deployed_sha: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub expires_at: Option<Millis>,
    pub warned_at: Option<Millis>,
    pub note: Option<String>,
    pub from_fork: bool,
    /// The pull request's title, as GitHub last named it (`None` until a delivery did).
    pub title: Option<String>,
    /// The public services' URLs, a JSON object of name to URL (see [`EnvironmentSummary::urls`]).
    pub service_urls: Option<String>,
    /// Its `.preview.yaml` asks for a database (known once it was Ready).
    pub has_database: bool,
}

impl EnvironmentSummary {
    /// The public services' (name, URL), in name order; empty before the environment was Ready.
    pub fn urls(&self) -> Vec<(String, String)> {
        super::environments::service_urls(self.service_urls.as_deref())
    }
}

pub(super) const SUMMARY_COLUMNS: &str = "id, repo_id, repo_owner, repo_name, pr_number, head_sha, head_branch, \
     author, state, reason, name, url, deployed_sha, created_at, updated_at, expires_at, warned_at, note, from_fork, \
     service_urls, has_database, \
     (SELECT p.title FROM pull_requests p WHERE p.repo_id = environments.repo_id \
        AND p.pr_number = environments.pr_number) AS title";

/// `text` lowercased, with LIKE's wildcards escaped (`\\` is the escape character).
fn like_pattern(text: &str) -> String {
    text.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

impl Store {
    /// Up to `limit` environments matching `filter` with an id below `before` (all when `None`),
    /// newest first.
    pub async fn list_environments(
        &self,
        filter: &EnvironmentFilter,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<EnvironmentSummary>, StoreError> {
        let (repo_owner, repo_name) = filter.repository.clone().unzip();
        with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SUMMARY_COLUMNS} FROM environments WHERE ($1 IS NULL OR id < $1) \
             AND ($2 IS NULL OR (LOWER(repo_owner) = LOWER($2) AND LOWER(repo_name) = LOWER($3))) \
             AND ($4 IS NULL OR LOWER(repo_owner) = LOWER($4)) AND ($5 IS NULL OR state = $5) \
             AND ($6 IS NULL OR LOWER(author) = LOWER($6)) AND ($7 IS NULL OR updated_at >= $7) \
             AND ($9 IS NULL OR repo_id IN (SELECT repo_id FROM session_repositories WHERE session_id = $9)) \
             AND ($10 IS NULL OR LOWER(repo_owner || '/' || repo_name || ' ' || head_branch || ' ' || author || ' ' || \
                COALESCE((SELECT p.title FROM pull_requests p WHERE p.repo_id = environments.repo_id \
                    AND p.pr_number = environments.pr_number), '')) LIKE '%' || $10 || '%' ESCAPE '\\') \
             ORDER BY id DESC LIMIT $8"
        )))
        .bind(before)
        .bind(repo_owner)
        .bind(repo_name)
        .bind(filter.owner.as_deref())
        .bind(filter.state.map(EnvironmentState::as_str))
        .bind(filter.author.as_deref())
        .bind(filter.updated_since)
        .bind(i64::from(limit))
        .bind(filter.visible_to_session)
        .bind(filter.search.as_deref().map(like_pattern))
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("listing environments")))
    }

    /// Live environments whose expiry is before `before`, soonest first, at most `limit`: the
    /// platform page's "about to expire".
    pub async fn expiring_environments(
        &self,
        before: Millis,
        limit: u32,
    ) -> Result<Vec<EnvironmentSummary>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SUMMARY_COLUMNS} FROM environments WHERE state IN {LIVE_STATES} AND expires_at IS NOT NULL \
             AND expires_at < $1 ORDER BY expires_at, id LIMIT $2"
        )))
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("listing expiring environments")))
    }

    /// The reasons environments turned `Failed` with since `since`, with how often, most
    /// frequent first (at most `limit`): the platform page's failures of the last day.
    pub async fn failure_reasons(&self, since: Millis, limit: u32) -> Result<Vec<(String, i64)>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(
            "SELECT COALESCE(reason, '') AS reason, COUNT(*) AS n FROM environment_transitions \
             WHERE to_state = 'Failed' AND at >= $1 GROUP BY COALESCE(reason, '') ORDER BY n DESC, reason LIMIT $2",
        )
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("counting failure reasons")))
    }

    /// One environment by id.
    pub async fn environment_summary(&self, id: i64) -> Result<Option<EnvironmentSummary>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SUMMARY_COLUMNS} FROM environments WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::query("reading an environment")))
    }
}

/// Live slots and waiters of one repository, for the limits view.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RepositorySlots {
    pub repo_id: i64,
    pub repo_owner: String,
    pub repo_name: String,
    /// Environments holding an admission slot (counted against the limits).
    pub held: i64,
    /// Environments waiting for one.
    pub waiting: i64,
}

impl Store {
    /// Transitions that usage over `[from, to)` needs, by environment then time: every row
    /// before `to` of each environment that changed during the period or holds resources now.
    pub async fn usage_rows(&self, from: Millis, to: Millis) -> Result<Vec<crate::usage::UsageRow>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(
            "SELECT t.environment_id, e.repo_owner, e.repo_name, t.to_state, t.at, t.requests_cpu_millis, \
                t.requests_memory_bytes FROM environment_transitions t JOIN environments e ON e.id = t.environment_id \
             WHERE t.at < $2 AND (e.state IN ('Provisioning', 'Ready', 'Failed', 'Deleting') \
                OR EXISTS (SELECT 1 FROM environment_transitions w WHERE w.environment_id = t.environment_id AND w.at >= $1)) \
             ORDER BY t.environment_id, t.at, t.id",
        )
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("reading usage")))
    }

    /// Slots held and waiters, per repository that has either.
    pub async fn slots(&self) -> Result<Vec<RepositorySlots>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(
            "SELECT repo_id, MIN(repo_owner) AS repo_owner, MIN(repo_name) AS repo_name, \
                SUM(CASE WHEN admitted_at IS NOT NULL THEN 1 ELSE 0 END) AS held, \
                SUM(CASE WHEN waiting_since IS NOT NULL AND admitted_at IS NULL THEN 1 ELSE 0 END) AS waiting \
             FROM environments WHERE admitted_at IS NOT NULL OR waiting_since IS NOT NULL \
             GROUP BY repo_id ORDER BY MIN(repo_owner), MIN(repo_name)",
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("counting admission slots")))
    }
}
