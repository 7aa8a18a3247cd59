//! Idle environments: when each may sleep, which are due, and the moves in and out of
//! `Sleeping`. The decision of how long an environment stays awake is the spec's
//! (`spec::sleep_after`); the store keeps it with the environment when it becomes Ready, so the
//! periodic pass finds the idle ones with one query.

use super::{ReconcileRecord, Store, StoreError, with_pool};
use crate::time::Millis;

impl Store {
    /// Records how long environment `id` may stay awake without a visit or a push (`None`:
    /// it never sleeps).
    pub async fn set_sleep_after(&self, id: i64, after_ms: Option<i64>) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query("UPDATE environments SET sleep_after_ms = $1 WHERE id = $2")
            .bind(after_ms)
            .bind(id)
            .execute(pool)
            .await
            .map(drop)
            .map_err(StoreError::query("recording when an environment sleeps")))
    }

    /// Ready environments with neither a visit nor activity (a push, a command) for their
    /// `sleep_after_ms` by `now`, oldest first.
    pub async fn idle_environments(&self, now: Millis) -> Result<Vec<ReconcileRecord>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM environments WHERE state = 'Ready' AND sleep_after_ms IS NOT NULL \
             AND COALESCE(CASE WHEN last_visit_at > last_activity_at THEN last_visit_at ELSE last_activity_at END, \
                 last_visit_at, last_activity_at, updated_at) + sleep_after_ms <= $1 ORDER BY id",
            super::environments::RECONCILE_COLUMNS
        )))
        .bind(now)
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("finding idle environments")))
    }
}
