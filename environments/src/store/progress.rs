//! What a reconcile keeps on its environment between passes, so that a pass never waits and
//! never asks again for what cannot have changed: the current rollout's deadline, the
//! repository file read at a commit, the hostname whose DNS record was published, and when a
//! failed rollout is tried again. None of
//! these is desired state (the planner's) or shown on the pull request, so no report is queued.

use super::{Store, StoreError, with_pool};
use crate::time::Millis;

impl Store {
    /// Starts a rollout: a reconcile that finds it incomplete after `deadline` fails it.
    pub async fn start_rollout(&self, id: i64, deadline: Millis) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query("UPDATE environments SET rollout_deadline = $1 WHERE id = $2")
            .bind(deadline)
            .bind(id)
            .execute(pool)
            .await
            .map(drop)
            .map_err(StoreError::query("starting a rollout")))
    }

    /// Keeps `text`, the repository's `.preview.yaml` at commit `sha` (the file is bounded by
    /// `yaml::Origin::Repository`'s limit, 64 KiB). Replaces the file of an earlier commit.
    pub async fn keep_config(&self, id: i64, sha: &str, text: &str) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query("UPDATE environments SET config_sha = $1, config_text = $2 WHERE id = $3")
            .bind(sha)
            .bind(text)
            .bind(id)
            .execute(pool)
            .await
            .map(drop)
            .map_err(StoreError::query("keeping a repository file")))
    }

    /// Starts the environment's next database generation (`/preview reset-db`) and returns it.
    pub async fn reset_database(&self, id: i64) -> Result<i64, StoreError> {
        with_pool!(self, pool => sqlx::query_scalar(
            "UPDATE environments SET database_generation = database_generation + 1 WHERE id = $1 \
             RETURNING database_generation",
        )
            .bind(id)
            .fetch_one(pool)
            .await
            .map_err(StoreError::query("resetting an environment's database")))
    }

    /// Records the public services' URLs (name, URL), shown with the environment's own, and
    /// whether it has a database.
    pub async fn set_services(&self, id: i64, urls: &[(String, String)], has_database: bool) -> Result<(), StoreError> {
        let map: serde_json::Map<String, serde_json::Value> =
            urls.iter().map(|(name, url)| (name.clone(), serde_json::Value::String(url.clone()))).collect();
        let text = serde_json::Value::Object(map).to_string();
        with_pool!(self, pool => sqlx::query(
            "UPDATE environments SET service_urls = $1, has_database = $2 \
             WHERE id = $3 AND (service_urls IS DISTINCT FROM $1 OR has_database <> $2)",
        )
            .bind(text)
            .bind(has_database)
            .bind(id)
            .execute(pool)
            .await
            .map(drop)
            .map_err(StoreError::query("recording an environment's service URLs")))
    }

    /// Records the hostname whose DNS record is published (`None`: released).
    pub async fn set_published_host(&self, id: i64, host: Option<&str>) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query("UPDATE environments SET published_host = $1 WHERE id = $2")
            .bind(host)
            .bind(id)
            .execute(pool)
            .await
            .map(drop)
            .map_err(StoreError::query("recording a published hostname")))
    }

    /// The environment whose namespace is `name`, if any.
    pub async fn environment_named(&self, name: &str) -> Result<Option<i64>, StoreError> {
        with_pool!(self, pool => sqlx::query_scalar("SELECT id FROM environments WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await
            .map_err(StoreError::query("finding an environment by name")))
    }

    /// Schedules the next retry of Failed environment `id` at `at` and counts it, if the
    /// environment is still Failed at `head_sha` (a push or a command since then starts over).
    /// Returns whether it was scheduled.
    pub async fn schedule_retry(&self, id: i64, head_sha: &str, at: Millis) -> Result<bool, StoreError> {
        with_pool!(self, pool => sqlx::query(
            "UPDATE environments SET retry_at = $1, retries = retries + 1 \
             WHERE id = $2 AND head_sha = $3 AND state = 'Failed'",
        )
        .bind(at)
        .bind(id)
        .bind(head_sha)
        .execute(pool)
        .await
        .map(|done| done.rows_affected() == 1)
        .map_err(StoreError::query("scheduling a retry")))
    }

    /// Failed environments whose retry is due by `now`: the periodic pass queues them, in case
    /// the job that was to run the retry is lost.
    pub async fn due_retries(&self, now: Millis) -> Result<Vec<i64>, StoreError> {
        with_pool!(self, pool => sqlx::query_scalar(
            "SELECT id FROM environments WHERE state = 'Failed' AND retry_at <= $1 ORDER BY retry_at",
        )
        .bind(now)
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("listing the retries due")))
    }
}
