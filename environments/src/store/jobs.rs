//! The durable job queue. A worker claims jobs by taking a lease; it renews the lease while the
//! job runs and completes or fails the job when done. A job whose lease ran out (its worker
//! crashed or was killed) becomes claimable again, so a restart loses nothing. On Postgres the
//! claim uses `FOR UPDATE SKIP LOCKED` so several replicas share the queue without waiting on
//! each other; SQLite has a single writer, so its plain `UPDATE` is already exclusive.

use super::kinds::insert_job;
use super::{Backend, JobKind, NewJob, Store, StoreError, with_pool};
use crate::time::{Millis, millis, now_ms};
use std::sync::LazyLock;
use std::time::Duration;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Done,
    /// Gave up after `max_attempts`; `last_error` says why.
    Dead,
}

impl JobState {
    pub const ALL: [JobState; 4] = [Self::Queued, Self::Running, Self::Done, Self::Dead];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Dead => "dead",
        }
    }
}

/// A job this worker holds the lease on.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimedJob {
    pub id: i64,
    /// Always a kind this build knows: the claim takes no others.
    #[sqlx(try_from = "String")]
    pub kind: JobKind,
    pub payload: String,
    /// Including the current one.
    pub attempts: i64,
    pub max_attempts: i64,
}

impl ClaimedJob {
    /// The payload as the type its kind carries (see [`JobKind`]).
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.payload)
    }
}

/// A stored job, as operators and tests see it. `kind` is the stored name, which may be one a
/// newer version queued.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct JobRecord {
    pub id: i64,
    pub kind: String,
    pub payload: String,
    pub delivery_id: Option<i64>,
    pub state: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub run_at: Millis,
    pub last_error: Option<String>,
}

/// What became of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobFate {
    /// Queued again, to run at this time.
    Retry { at: Millis },
    /// Out of attempts: in the dead-letter state.
    Dead,
    /// The lease was lost (it expired and another worker took the job); nothing was changed.
    LeaseLost,
}

/// Only queued jobs are claimed, so the sub-select walks the `(state, run_at)` index instead of
/// scanning the queue; jobs whose lease ran out are put back in the queue first. Only kinds
/// this build knows ([`JobKind::sql_list`]); `{lock}` is the backend's row-locking clause.
fn claim_sql(lock: &str) -> String {
    format!(
        "UPDATE jobs SET state = 'running', attempts = attempts + 1, \
         lease_owner = $1, lease_until = $2, updated_at = $3 \
         WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' AND run_at <= $3 AND kind IN ({kinds}) \
         ORDER BY run_at, id LIMIT $4{lock}) RETURNING id, kind, payload, attempts, max_attempts",
        kinds = JobKind::sql_list(),
    )
}

/// Built once: workers claim at every poll.
static CLAIM_SQLITE: LazyLock<String> = LazyLock::new(|| claim_sql(""));
static CLAIM_POSTGRES: LazyLock<String> = LazyLock::new(|| claim_sql(" FOR UPDATE SKIP LOCKED"));

impl Store {
    /// Queues a job by its kind's dedup rule ([`super::Dedup`]): its id, or `None` when a
    /// waiting job absorbed it (periodic passes and watches may ask for the same work many
    /// times without piling it up).
    pub async fn enqueue(&self, job: &NewJob) -> Result<Option<i64>, StoreError> {
        with_pool!(self, pool => insert_job!(pool, job, now_ms()).map_err(StoreError::query("queueing a job")))
    }

    /// Claims up to `limit` runnable jobs for `owner`, leasing each for `lease`. Jobs whose
    /// lease ran out count as runnable; those already out of attempts are moved to the
    /// dead-letter state instead of being run again.
    pub async fn claim_jobs(&self, owner: &str, lease: Duration, limit: i64) -> Result<Vec<ClaimedJob>, StoreError> {
        let now = now_ms();
        let lease_until = now.saturating_add(millis(lease));
        with_pool!(self, pool => sqlx::query(
            "UPDATE jobs SET state = 'dead', lease_owner = NULL, lease_until = NULL, updated_at = $1, \
             last_error = 'the worker running the last attempt stopped before finishing it (lease expired); ' || COALESCE(last_error, '') \
             WHERE state = 'running' AND lease_until < $1 AND attempts >= max_attempts",
        )
        .bind(now)
        .execute(pool)
        .await
        .map(drop)
        .map_err(StoreError::query("expiring abandoned jobs"))?);
        with_pool!(self, pool => sqlx::query(
            "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_until = NULL, updated_at = $1 \
             WHERE state = 'running' AND lease_until < $1",
        )
        .bind(now)
        .execute(pool)
        .await
        .map(drop)
        .map_err(StoreError::query("requeueing jobs whose lease ran out"))?);
        match &self.backend {
            Backend::Sqlite(pool) => {
                sqlx::query_as(sqlx::AssertSqlSafe(CLAIM_SQLITE.as_str()))
                    .bind(owner)
                    .bind(lease_until)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(pool)
                    .await
            }
            Backend::Postgres(pool) => {
                sqlx::query_as(sqlx::AssertSqlSafe(CLAIM_POSTGRES.as_str()))
                    .bind(owner)
                    .bind(lease_until)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(pool)
                    .await
            }
        }
        .map_err(StoreError::query("claiming jobs"))
    }

    /// Renews the lease of a running job. `false` means the lease was lost and the worker must
    /// stop treating the job as its own.
    pub async fn renew_lease(&self, job: i64, owner: &str, lease: Duration) -> Result<bool, StoreError> {
        let now = now_ms();
        let updated = with_pool!(self, pool => sqlx::query(
            "UPDATE jobs SET lease_until = $1, updated_at = $2 WHERE id = $3 AND lease_owner = $4 AND state = 'running'",
        )
        .bind(now.saturating_add(millis(lease)))
        .bind(now)
        .bind(job)
        .bind(owner)
        .execute(pool)
        .await
        .map_err(StoreError::query("renewing a job lease"))?
        .rows_affected());
        Ok(updated == 1)
    }

    /// Marks a job done. `false` means the lease had been lost.
    pub async fn complete_job(&self, job: i64, owner: &str) -> Result<bool, StoreError> {
        let updated = with_pool!(self, pool => sqlx::query(
            "UPDATE jobs SET state = 'done', lease_owner = NULL, lease_until = NULL, updated_at = $1 \
             WHERE id = $2 AND lease_owner = $3 AND state = 'running'",
        )
        .bind(now_ms())
        .bind(job)
        .bind(owner)
        .execute(pool)
        .await
        .map_err(StoreError::query("completing a job"))?
        .rows_affected());
        Ok(updated == 1)
    }

    /// Records a failed attempt: queued again at `retry_at`, or dead when out of attempts or
    /// when `retry_at` is `None` (retrying cannot help). The error is kept either way.
    pub async fn fail_job(
        &self,
        job: &ClaimedJob,
        owner: &str,
        error: &str,
        retry_at: Option<Millis>,
    ) -> Result<JobFate, StoreError> {
        let now = now_ms();
        let (state, fate, run_at) = match retry_at {
            Some(at) if job.attempts < job.max_attempts => ("queued", JobFate::Retry { at }, at),
            _ => ("dead", JobFate::Dead, now),
        };
        let updated = with_pool!(self, pool => sqlx::query(
            "UPDATE jobs SET state = $1, run_at = $2, last_error = $3, lease_owner = NULL, lease_until = NULL, updated_at = $4 \
             WHERE id = $5 AND lease_owner = $6 AND state = 'running'",
        )
        .bind(state)
        .bind(run_at)
        .bind(error)
        .bind(now)
        .bind(job.id)
        .bind(owner)
        .execute(pool)
        .await
        .map_err(StoreError::query("recording a failed job attempt"))?
        .rows_affected());
        Ok(if updated == 1 { fate } else { JobFate::LeaseLost })
    }

    /// Hands a job back unfinished (shutdown before it could run to the end): queued at once,
    /// and the interrupted attempt does not count.
    pub async fn release_job(&self, job: i64, owner: &str) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query(
            "UPDATE jobs SET state = 'queued', attempts = attempts - 1, lease_owner = NULL, lease_until = NULL, \
             run_at = $1, updated_at = $1 WHERE id = $2 AND lease_owner = $3 AND state = 'running'",
        )
        .bind(now_ms())
        .bind(job)
        .bind(owner)
        .execute(pool)
        .await
        .map(drop)
        .map_err(StoreError::query("releasing a job"))?);
        Ok(())
    }

    /// Jobs running, or queued to run by `at`: the backlog, without the jobs waiting for a
    /// later time (a rollout's deadline, a retry). Zero when previewd has caught up.
    pub async fn jobs_due(&self, at: Millis) -> Result<i64, StoreError> {
        with_pool!(self, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE state = 'running' OR (state = 'queued' AND run_at <= $1)",
        )
        .bind(at)
        .fetch_one(pool)
        .await
        .map_err(StoreError::query("counting the jobs due")))
    }

    /// Number of jobs in each state (states without jobs included, as zero).
    pub async fn job_counts(&self) -> Result<Vec<(JobState, i64)>, StoreError> {
        let rows: Vec<(String, i64)> = with_pool!(self, pool => sqlx::query_as(
            "SELECT state, COUNT(*) FROM jobs GROUP BY state",
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("counting jobs"))?);
        Ok(JobState::ALL
            .into_iter()
            .map(|state| {
                let count = rows.iter().find(|(s, _)| s == state.as_str()).map_or(0, |(_, n)| *n);
                (state, count)
            })
            .collect())
    }

    /// Jobs caused by a delivery (its stored row id).
    pub async fn jobs_for_delivery(&self, delivery: i64) -> Result<Vec<JobRecord>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(
            "SELECT id, kind, payload, delivery_id, state, attempts, max_attempts, run_at, last_error \
             FROM jobs WHERE delivery_id = $1 ORDER BY id",
        )
        .bind(delivery)
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("reading the jobs of a delivery")))
    }

    /// One job by id.
    pub async fn job(&self, id: i64) -> Result<Option<JobRecord>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(
            "SELECT id, kind, payload, delivery_id, state, attempts, max_attempts, run_at, last_error \
             FROM jobs WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::query("reading a job")))
    }
}
