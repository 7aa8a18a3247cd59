//! An environment's expiry as the store keeps it: extensions, and the warnings before it.

use super::environments::{RECONCILE_COLUMNS, queue_report};
use super::{Backend, ReconcileRecord, Store, StoreError, begin_write, with_pool};
use crate::time::{Millis, now_ms};

impl Store {
    /// Sets a new expiry (an extension) with the note the pull request shows for it (`None`
    /// keeps the note), in one write; a new warning is due before it.
    pub async fn set_expiry(&self, id: i64, expires_at: Millis, note: Option<&str>) -> Result<(), StoreError> {
        let now = now_ms();
        macro_rules! run {
            ($kind:tt $pool:expr) => {{
                let mut tx = begin_write!($kind $pool, "extending an environment")?;
                sqlx::query(
                    "UPDATE environments SET expires_at = $1, warned_at = NULL, note = COALESCE($2, note) WHERE id = $3",
                )
                .bind(expires_at)
                .bind(note)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::query("extending an environment"))?;
                queue_report!(tx, id, now);
                tx.commit().await.map_err(StoreError::query("extending an environment"))?;
                Ok(())
            }};
        }
        match &self.backend {
            Backend::Sqlite(pool) => run!(sqlite pool),
            Backend::Postgres(pool) => run!(postgres pool),
        }
    }

    /// Records that the expiry warning for the current expiry was given.
    pub async fn mark_warned(&self, id: i64) -> Result<(), StoreError> {
        self.update_and_report(id, "UPDATE environments SET warned_at = $1 WHERE id = $2", now_ms()).await
    }

    /// Runs `sql` (binding `value` as `$1` and the id as `$2`) and queues a report of the
    /// environment in the same transaction.
    async fn update_and_report(&self, id: i64, sql: &'static str, value: i64) -> Result<(), StoreError> {
        let now = now_ms();
        macro_rules! run {
            ($kind:tt $pool:expr) => {{
                let mut tx = begin_write!($kind $pool, "updating an environment")?;
                sqlx::query(sql)
                    .bind(value)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::query("updating an environment"))?;
                queue_report!(tx, id, now);
                tx.commit().await.map_err(StoreError::query("updating an environment"))?;
                Ok(())
            }};
        }
        match &self.backend {
            Backend::Sqlite(pool) => run!(sqlite pool),
            Backend::Postgres(pool) => run!(postgres pool),
        }
    }

    /// Live environments whose expiry is before `at` and that were not warned yet.
    pub async fn due_for_warning(&self, at: Millis) -> Result<Vec<ReconcileRecord>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RECONCILE_COLUMNS} FROM environments WHERE state IN ('Provisioning', 'Ready', 'Sleeping', 'Failed') \
             AND expires_at IS NOT NULL AND expires_at <= $1 AND warned_at IS NULL ORDER BY id"
        )))
        .bind(at)
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("finding environments to warn")))
    }
}
