//! Admission under the policy's limits, decided so that it holds when several workers or
//! replicas decide at once.
//!
//! An environment holds a slot from the moment it is admitted (`admitted_at`) until it leaves
//! the live states; the store clears the slot whenever it writes a state that is not live, so
//! "holds a slot" is one column, not a guess from the state. Counting the states was the old
//! rule and could not hold: a `Pending` environment that had passed the check (waiting for its
//! checks, say) was not counted, and two reconciles counting at once both saw room.
//!
//! A decision is one transaction that takes the admission lock (Postgres: a transaction-scoped
//! advisory lock shared by every replica; SQLite: the write lock, which `BEGIN IMMEDIATE` takes
//! up front), counts the slots held, and walks every waiting environment in arrival order
//! (`waiting_since`), admitting each that fits. So `when_full: queue` is first come, first
//! served: a slot that frees goes to the oldest waiter it fits, whichever reconcile runs the
//! pass, and a later waiter goes first only when the earlier one is held back by a limit the
//! later one is not under (its own repository is full, say). The waiters a pass admits other
//! than the one asking are woken by a reconcile job queued in the same transaction.

use super::environments::LIVE_STATES;
use super::{Backend, NewJob, Store, StoreError, begin_write};
use crate::spec::{LimitDecision, LiveCounts};
use crate::time::now_ms;
use std::collections::HashMap;

/// The key of the advisory lock that serialises admissions on Postgres (any constant that no
/// other code takes; "previewd admission" in hex-ish).
const ADMISSION_LOCK: i64 = 0x7072_6576_6164;

/// What the policy says about an environment of `owner/repository` given the slots held:
/// [`crate::spec::check_limits`] with the repository's effective policy, in the engine.
pub type Limits<'a> = dyn Fn(&str, &str, LiveCounts) -> LimitDecision + Sync + 'a;

/// The outcome of one admission pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionPass {
    /// For the environment that asked: `Allowed` when it holds a slot (now or from before),
    /// else why not. `None` when the pass was run for nobody in particular, or the environment
    /// is no longer waiting to be admitted (not `Pending`: closed meanwhile).
    pub decision: Option<LimitDecision>,
    /// Other waiters this pass admitted, woken by a queued reconcile job.
    pub woken: Vec<i64>,
}

#[derive(sqlx::FromRow)]
struct Waiter {
    id: i64,
    repo_id: i64,
    repo_owner: String,
    repo_name: String,
}

/// Slots held, by scope.
#[derive(Default)]
struct Held {
    global: u64,
    organization: HashMap<String, u64>,
    repository: HashMap<i64, u64>,
}

impl Held {
    fn counts(&self, w: &Waiter) -> LiveCounts {
        LiveCounts {
            global: self.global,
            organization: self.organization.get(&w.repo_owner.to_lowercase()).copied().unwrap_or(0),
            repository: self.repository.get(&w.repo_id).copied().unwrap_or(0),
        }
    }

    fn take(&mut self, w: &Waiter) {
        self.global += 1;
        *self.organization.entry(w.repo_owner.to_lowercase()).or_default() += 1;
        *self.repository.entry(w.repo_id).or_default() += 1;
    }
}

impl Store {
    /// Decides admissions: `candidate` (if any) joins the queue if it is `Pending` without a
    /// slot, then every waiter, oldest first, is admitted if `limits` allows it. Run by the
    /// reconcile of a `Pending` environment, and after a slot is given back (teardown) with no
    /// candidate, so that the queue moves without waiting for the periodic pass. Woken waiters
    /// get a reconcile job with `max_attempts` attempts.
    pub async fn admit(
        &self,
        candidate: Option<i64>,
        limits: &Limits<'_>,
        max_attempts: i64,
    ) -> Result<AdmissionPass, StoreError> {
        let now = now_ms();
        macro_rules! run {
            ($kind:tt $pool:expr, $lock:expr) => {{
                let mut tx = begin_write!($kind $pool, "deciding admissions")?;
                if let Some(sql) = $lock {
                    sqlx::query(sql)
                        .bind(ADMISSION_LOCK)
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::query("taking the admission lock"))?;
                }
                let mut held = Held::default();
                let mut already = false;
                if let Some(id) = candidate {
                    let row: Option<(String, Option<i64>)> =
                        sqlx::query_as("SELECT state, admitted_at FROM environments WHERE id = $1")
                            .bind(id)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(StoreError::query("reading an environment"))?;
                    already = matches!(&row, Some((_, Some(_))));
                    sqlx::query(
                        "UPDATE environments SET waiting_since = COALESCE(waiting_since, $1) \
                         WHERE id = $2 AND state = 'Pending' AND admitted_at IS NULL",
                    )
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::query("queueing for admission"))?;
                }
                let rows: Vec<(String, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT lower(repo_owner), repo_id, COUNT(*) FROM environments \
                     WHERE admitted_at IS NOT NULL AND state IN {LIVE_STATES} GROUP BY lower(repo_owner), repo_id"
                )))
                .fetch_all(&mut *tx)
                .await
                .map_err(StoreError::query("counting the slots held"))?;
                for (owner, repo, count) in rows {
                    let count = u64::try_from(count).unwrap_or(0);
                    held.global += count;
                    *held.organization.entry(owner).or_default() += count;
                    *held.repository.entry(repo).or_default() += count;
                }
                let waiters: Vec<Waiter> = sqlx::query_as(
                    "SELECT id, repo_id, repo_owner, repo_name FROM environments \
                     WHERE waiting_since IS NOT NULL AND admitted_at IS NULL AND state = 'Pending' \
                     ORDER BY waiting_since, id",
                )
                .fetch_all(&mut *tx)
                .await
                .map_err(StoreError::query("listing the environments waiting for a slot"))?;
                let mut decision = already.then_some(LimitDecision::Allowed);
                let mut woken = Vec::new();
                for waiter in &waiters {
                    let verdict = limits(&waiter.repo_owner, &waiter.repo_name, held.counts(waiter));
                    let admitted = verdict == LimitDecision::Allowed;
                    if admitted {
                        held.take(waiter);
                        sqlx::query(
                            "UPDATE environments SET admitted_at = $1, waiting_since = NULL WHERE id = $2",
                        )
                        .bind(now)
                        .bind(waiter.id)
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::query("admitting an environment"))?;
                    }
                    if Some(waiter.id) == candidate {
                        decision = Some(verdict);
                    } else if admitted {
                        woken.push(waiter.id);
                        super::kinds::insert_job!(&mut *tx, &NewJob::reconcile(waiter.id, max_attempts), now)
                        .map_err(StoreError::query("waking an admitted environment"))?;
                    }
                }
                tx.commit().await.map_err(StoreError::query("committing admissions"))?;
                Ok(AdmissionPass { decision, woken })
            }};
        }
        match &self.backend {
            Backend::Sqlite(pool) => run!(sqlite pool, None::<&str>),
            Backend::Postgres(pool) => run!(postgres pool, Some("SELECT pg_advisory_xact_lock($1)")),
        }
    }
}
