//! What previewd knows of a pull request apart from its environment, for commands: which head
//! commit GitHub last named and since when (so `/preview approve` approves the commit the
//! approver saw, not one pushed after the comment), and when previewd last answered a refused
//! command on it (so a flood of comments gets one answer, whichever replica reads them).

use super::{Store, StoreError, with_pool};
use crate::model::{CommitSha, PrNumber, RepoId};
use crate::time::Millis;
use std::time::Duration;

/// A pull request's head commit as GitHub's deliveries named it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SeenHead {
    pub head_sha: String,
    /// GitHub's time (milliseconds) of the earliest delivery that named this head: the commit
    /// was pushed no later than this.
    pub head_at: Millis,
}

impl Store {
    /// Records that GitHub named `sha` as the head of pull request `number` at GitHub time `at`
    /// (the pull request's `updated_at` in the delivery). The same head keeps its earliest time;
    /// another head replaces it only if it was named at the same time or later, so a delivery
    /// that arrives late cannot bring back an older head.
    pub async fn observe_head(
        &self,
        repo: RepoId,
        number: PrNumber,
        sha: &CommitSha,
        at: Millis,
    ) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query(
            "INSERT INTO pull_requests (repo_id, pr_number, head_sha, head_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (repo_id, pr_number) DO UPDATE SET \
                head_at = CASE WHEN pull_requests.head_sha = excluded.head_sha \
                               AND pull_requests.head_at < excluded.head_at \
                          THEN pull_requests.head_at ELSE excluded.head_at END, \
                head_sha = excluded.head_sha \
             WHERE pull_requests.head_sha IS NULL OR pull_requests.head_at IS NULL \
                OR pull_requests.head_sha = excluded.head_sha OR pull_requests.head_at <= excluded.head_at",
        )
        .bind(repo.0)
        .bind(number.0)
        .bind(&sha.0)
        .bind(at)
        .execute(pool)
        .await
        .map(drop)
        .map_err(StoreError::query("recording a pull request's head")))
    }

    /// Records that GitHub named `title` as the title of pull request `number` at GitHub time
    /// `at`; a title named earlier than the one recorded is ignored (a late delivery).
    pub async fn observe_title(
        &self,
        repo: RepoId,
        number: PrNumber,
        title: &str,
        at: Millis,
    ) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query(
            "INSERT INTO pull_requests (repo_id, pr_number, title, title_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (repo_id, pr_number) DO UPDATE SET title = excluded.title, title_at = excluded.title_at \
             WHERE pull_requests.title_at IS NULL OR pull_requests.title_at <= excluded.title_at",
        )
        .bind(repo.0)
        .bind(number.0)
        .bind(title)
        .bind(at)
        .execute(pool)
        .await
        .map(drop)
        .map_err(StoreError::query("recording a pull request's title")))
    }

    /// The head recorded by [`Store::observe_head`], if any.
    pub async fn seen_head(&self, repo: RepoId, number: PrNumber) -> Result<Option<SeenHead>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(
            "SELECT head_sha, head_at FROM pull_requests \
             WHERE repo_id = $1 AND pr_number = $2 AND head_sha IS NOT NULL AND head_at IS NOT NULL",
        )
        .bind(repo.0)
        .bind(number.0)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::query("reading a pull request's head")))
    }

    /// Takes the right to answer a refused command on pull request `number` at `now`: `true` for
    /// one caller at most per `interval`, across every worker and replica sharing the database.
    pub async fn claim_reply(
        &self,
        repo: RepoId,
        number: PrNumber,
        now: Millis,
        interval: Duration,
    ) -> Result<bool, StoreError> {
        let before = now.saturating_sub(crate::time::millis(interval));
        let claimed = with_pool!(self, pool => sqlx::query(
            "INSERT INTO pull_requests (repo_id, pr_number, replied_at) VALUES ($1, $2, $3) \
             ON CONFLICT (repo_id, pr_number) DO UPDATE SET replied_at = excluded.replied_at \
             WHERE pull_requests.replied_at IS NULL OR pull_requests.replied_at <= $4",
        )
        .bind(repo.0)
        .bind(number.0)
        .bind(now)
        .bind(before)
        .execute(pool)
        .await
        .map_err(StoreError::query("claiming a reply"))?
        .rows_affected());
        Ok(claimed == 1)
    }
}
