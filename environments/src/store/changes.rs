//! The change feed: every change of what an environment shows, in order, written by the
//! database's own triggers (migration 0016) whichever code path wrote the environment, and read
//! by the admin API's event stream.
//!
//! On Postgres an id may become visible after a higher one (ids are taken when a transaction
//! inserts, rows are seen when it commits), so a reader that only asks for ids above the last
//! it saw could skip one. [`Store::changes_since`] therefore also returns the last few seconds'
//! changes, and the reader skips those it has seen.

use super::{Store, StoreError, with_pool};
use crate::time::Millis;

/// One change of one environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct ChangeRecord {
    pub id: i64,
    pub environment_id: i64,
    pub at: Millis,
}

impl Store {
    /// Up to `limit` changes with an id above `after`, oldest first: what a client resuming
    /// from event `after` missed.
    pub async fn changes_after(&self, after: i64, limit: u32) -> Result<Vec<ChangeRecord>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(
            "SELECT id, environment_id, at FROM environment_changes WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("reading environment changes")))
    }

    /// Up to `limit` changes with an id above `after` or made at or after `since`, oldest
    /// first (see the module's note on Postgres).
    pub async fn changes_since(&self, after: i64, since: Millis, limit: u32) -> Result<Vec<ChangeRecord>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(
            "SELECT id, environment_id, at FROM environment_changes WHERE id > $1 OR at >= $2 ORDER BY id LIMIT $3",
        )
        .bind(after)
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("reading environment changes")))
    }

    /// The newest change's id; 0 before the first.
    pub async fn last_change_id(&self) -> Result<i64, StoreError> {
        let id: Option<i64> = with_pool!(self, pool => sqlx::query_scalar("SELECT MAX(id) FROM environment_changes")
            .fetch_one(pool)
            .await
            .map_err(StoreError::query("reading the last environment change")))?;
        Ok(id.unwrap_or(0))
    }
}
