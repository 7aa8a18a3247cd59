//! Retention: deletes what previewd no longer needs, so that the database stops growing with
//! uptime (one reconcile job per live environment per minute is 1,440 rows a day each).
//!
//! Every delete takes at most [`Retention::batch`] rows per statement, each statement its own
//! short write, so that a large backlog never holds SQLite's write lock for long: deliveries and
//! workers get the lock between batches. On SQLite the freed pages are then given back to the
//! file system (incremental auto-vacuum, see [`Store::reclaim_space`]).

use super::{Backend, Store, StoreError, begin_write, with_pool};
use crate::time::{Millis, millis};
use std::time::Duration;

/// How long each kind of row is kept. Ages count from a row's last change: a job's
/// `updated_at` (when it finished), a delivery's `received_at`, a transition's `at`, an
/// environment's `updated_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Jobs that finished (`done`).
    pub done_jobs: Duration,
    /// Jobs in the dead-letter state, kept longer for an operator to look at.
    pub dead_jobs: Duration,
    /// Deliveries. Replay protection needs them (the delivery id and the body digest) for the
    /// redelivery window, so this must not be shorter than that window.
    pub deliveries: Duration,
    /// The history of environments, except each environment's state at the cut-off.
    pub transitions: Duration,
    /// Environments that are `Deleted` or `Rejected`, with their history and GitHub report.
    pub finished_environments: Duration,
    /// Entries of the admin API's audit log.
    pub audit: Duration,
    /// Rows per delete statement.
    pub batch: u32,
}

/// Rows deleted by one sweep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub done_jobs: u64,
    pub dead_jobs: u64,
    pub deliveries: u64,
    pub transitions: u64,
    pub environments: u64,
    pub audit: u64,
    /// Rows of the change feed ([`CHANGES_KEPT`]).
    pub changes: u64,
    /// Dashboard sessions past their expiry.
    pub sessions: u64,
    /// Share links a day past their expiry ([`SHARE_LINKS_KEPT`]).
    pub share_links: u64,
}

impl Swept {
    pub fn total(&self) -> u64 {
        self.done_jobs
            + self.dead_jobs
            + self.deliveries
            + self.transitions
            + self.environments
            + self.audit
            + self.changes
            + self.sessions
            + self.share_links
    }
}

/// How long the change feed behind the event stream keeps a change: a client that reconnects
/// within a day resumes where it was; one away longer reloads the list (the stream tells it).
pub const CHANGES_KEPT: Duration = Duration::from_secs(24 * 3600);

/// How long a share link is kept after it expires: for that long, a visit with it is told it
/// expired (and when) rather than that previewd does not know it.
pub const SHARE_LINKS_KEPT: Duration = Duration::from_secs(24 * 3600);

/// Pause between two batches, so that writers waiting for SQLite's lock (which is not fair) get it.
const BETWEEN_BATCHES: Duration = Duration::from_millis(5);

/// Free pages given back per `incremental_vacuum` step (16 MiB of 4 KiB pages).
const VACUUM_PAGES: i64 = 4096;

/// `now - age`, saturating.
fn cutoff(now: Millis, age: Duration) -> Millis {
    now.saturating_sub(millis(age))
}

impl Store {
    /// Deletes, in batches, what is older than `retention` allows at time `now`:
    ///
    /// - `done` jobs and `dead` jobs (queued and running jobs are never deleted);
    /// - deliveries, unless a job still references one;
    /// - `Deleted` and `Rejected` environments, with their transitions and GitHub report, unless
    ///   an environment is locked or a queued or running job names it;
    /// - transitions, except the last of each environment before the cut-off: the state it was
    ///   in then, so usage over the kept period (`usage.rs`) is the same after the sweep;
    /// - audit log entries;
    /// - the change feed's rows older than [`CHANGES_KEPT`];
    /// - dashboard sessions that have expired (with their repositories);
    /// - share links expired longer than [`SHARE_LINKS_KEPT`] ago.
    ///
    /// On SQLite the space is then reclaimed ([`Store::reclaim_space`]).
    pub async fn sweep(&self, retention: &Retention, now: Millis) -> Result<Swept, StoreError> {
        let batch = i64::from(retention.batch.max(1));
        let mut swept = Swept {
            done_jobs: self
                .delete_batches(
                    "deleting finished jobs",
                    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state = 'done' \
                     AND run_at < $1 AND updated_at < $1 ORDER BY id LIMIT $2)",
                    cutoff(now, retention.done_jobs),
                    batch,
                )
                .await?,
            dead_jobs: self
                .delete_batches(
                    "deleting dead jobs",
                    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state = 'dead' \
                     AND run_at < $1 AND updated_at < $1 ORDER BY id LIMIT $2)",
                    cutoff(now, retention.dead_jobs),
                    batch,
                )
                .await?,
            ..Swept::default()
        };
        // After the jobs: a delivery whose job is still kept stays with it.
        swept.deliveries = self
            .delete_batches(
                "deleting old deliveries",
                "DELETE FROM deliveries WHERE id IN (SELECT d.id FROM deliveries d WHERE d.received_at < $1 \
                 AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.delivery_id = d.id) ORDER BY d.received_at LIMIT $2)",
                cutoff(now, retention.deliveries),
                batch,
            )
            .await?;
        swept.environments =
            self.delete_finished_environments(cutoff(now, retention.finished_environments), now, batch).await?;
        swept.transitions = self
            .delete_batches(
                "deleting old transitions",
                "DELETE FROM environment_transitions WHERE id IN (SELECT t.id FROM environment_transitions t \
                 WHERE t.at < $1 AND t.id < (SELECT MAX(l.id) FROM environment_transitions l \
                 WHERE l.environment_id = t.environment_id AND l.at < $1) ORDER BY t.id LIMIT $2)",
                cutoff(now, retention.transitions),
                batch,
            )
            .await?;
        swept.audit = self
            .delete_batches(
                "deleting old audit entries",
                "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at < $1 ORDER BY id LIMIT $2)",
                cutoff(now, retention.audit),
                batch,
            )
            .await?;
        swept.changes = self
            .delete_batches(
                "deleting old environment changes",
                "DELETE FROM environment_changes WHERE id IN (SELECT id FROM environment_changes WHERE at < $1 \
                 ORDER BY id LIMIT $2)",
                cutoff(now, CHANGES_KEPT),
                batch,
            )
            .await?;
        swept.sessions = self
            .delete_batches(
                "deleting expired sessions",
                "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE expires_at < $1 ORDER BY id LIMIT $2)",
                now,
                batch,
            )
            .await?;
        swept.share_links = self
            .delete_batches(
                "deleting expired share links",
                "DELETE FROM share_links WHERE id IN (SELECT id FROM share_links WHERE expires_at < $1 \
                 ORDER BY id LIMIT $2)",
                cutoff(now, SHARE_LINKS_KEPT),
                batch,
            )
            .await?;
        if swept.total() > 0 {
            self.reclaim_space().await?;
        }
        Ok(swept)
    }

    /// Runs `sql` (a delete of at most `$2` rows older than `$1`) until it deletes fewer than
    /// `batch` rows; returns how many it deleted.
    async fn delete_batches(
        &self,
        op: &'static str,
        sql: &'static str,
        before: Millis,
        batch: i64,
    ) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let deleted = with_pool!(self, pool => sqlx::query(sql)
                .bind(before)
                .bind(batch)
                .execute(pool)
                .await
                .map_err(StoreError::query(op))?
                .rows_affected());
            total += deleted;
            if deleted < batch.unsigned_abs() {
                return Ok(total);
            }
            tokio::time::sleep(BETWEEN_BATCHES).await;
        }
    }

    /// Deletes `Deleted` and `Rejected` environments last changed before `before`, a batch per
    /// transaction, with the rows that reference them (transitions, GitHub report, share links). Skipped: an
    /// environment whose lease is held, or that a queued or running job names (a report that
    /// still has to say on the pull request that it was deleted). The pull request's own row
    /// (`pull_requests`) stays: it belongs to the pull request, which may come back.
    async fn delete_finished_environments(&self, before: Millis, now: Millis, batch: i64) -> Result<u64, StoreError> {
        // A job names an environment by the payload `{"environment":<id>}` (report and reconcile
        // jobs alike, see `report_payload`).
        macro_rules! finished {
            () => {
                "SELECT e.id FROM environments e WHERE e.state IN ('Deleted', 'Rejected') \
             AND e.updated_at < $1 AND (e.lock_until IS NULL OR e.lock_until < $2) \
             AND NOT EXISTS (SELECT 1 FROM github_reports r WHERE r.environment_id = e.id AND r.lock_until >= $2) \
             AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.state IN ('queued', 'running') \
                 AND j.payload = '{\"environment\":' || e.id || '}') \
             ORDER BY e.id LIMIT $3"
            };
        }
        const SELECT: &str = finished!();
        // On Postgres the rows are locked as they are found, so that an environment brought
        // back (a pull request reopened) between this read and the delete is re-checked and
        // kept; SQLite's `BEGIN IMMEDIATE` already keeps every other writer out.
        const SELECT_POSTGRES: &str = concat!(finished!(), " FOR UPDATE OF e SKIP LOCKED");
        let mut total = 0;
        macro_rules! sweep {
            ($kind:tt $pool:expr, $select:expr) => {{
                loop {
                    let mut tx = begin_write!($kind $pool, "deleting finished environments")?;
                    let ids: Vec<i64> = sqlx::query_scalar($select)
                        .bind(before)
                        .bind(now)
                        .bind(batch)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(StoreError::query("finding finished environments"))?;
                    for table in ["DELETE FROM environment_transitions WHERE environment_id = $1",
                                  "DELETE FROM github_reports WHERE environment_id = $1",
                                  "DELETE FROM share_links WHERE environment_id = $1",
                                  "DELETE FROM environments WHERE id = $1"] {
                        for id in &ids {
                            sqlx::query(table)
                                .bind(id)
                                .execute(&mut *tx)
                                .await
                                .map_err(StoreError::query("deleting a finished environment"))?;
                        }
                    }
                    tx.commit().await.map_err(StoreError::query("committing deleted environments"))?;
                    total += ids.len() as u64;
                    if (ids.len() as i64) < batch {
                        break Ok(total);
                    }
                    tokio::time::sleep(BETWEEN_BATCHES).await;
                }
            }};
        }
        match &self.backend {
            Backend::Sqlite(pool) => sweep!(sqlite pool, SELECT),
            Backend::Postgres(pool) => sweep!(postgres pool, SELECT_POSTGRES),
        }
    }

    /// Gives the pages freed by deletes back to the file system. SQLite: the file is opened
    /// with incremental auto-vacuum (see [`Store::connect`]); `incremental_vacuum(N)` moves up
    /// to N free pages to the end and truncates them, in steps of [`VACUUM_PAGES`] so that no
    /// step holds the write lock for long, and a checkpoint then shrinks the file itself.
    /// Postgres: nothing to do, its autovacuum makes the space reusable.
    pub async fn reclaim_space(&self) -> Result<(), StoreError> {
        if let Backend::Sqlite(pool) = &self.backend {
            let mut conn = pool.acquire().await.map_err(StoreError::query("reclaiming space"))?;
            loop {
                let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(StoreError::query("reclaiming space (freelist_count)"))?;
                if free == 0 {
                    break;
                }
                // Returns a row per step; fetching them all runs it to the end.
                sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA incremental_vacuum({VACUUM_PAGES})")))
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(StoreError::query("reclaiming space (incremental_vacuum)"))?;
                if free <= VACUUM_PAGES {
                    break;
                }
                tokio::time::sleep(BETWEEN_BATCHES).await;
            }
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_all(&mut *conn)
                .await
                .map_err(StoreError::query("reclaiming space (wal_checkpoint)"))?;
        }
        Ok(())
    }

    /// The database's size in bytes: SQLite's pages in use and free (`page_count` × `page_size`,
    /// the main file after a checkpoint), Postgres's `pg_database_size`. For the benchmark and
    /// operators.
    pub async fn database_size(&self) -> Result<i64, StoreError> {
        match &self.backend {
            Backend::Sqlite(pool) => {
                sqlx::query_scalar("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")
                    .fetch_one(pool)
                    .await
                    .map_err(StoreError::query("reading the database size"))
            }
            Backend::Postgres(pool) => sqlx::query_scalar("SELECT pg_database_size(current_database())")
                .fetch_one(pool)
                .await
                .map_err(StoreError::query("reading the database size")),
        }
    }
}
