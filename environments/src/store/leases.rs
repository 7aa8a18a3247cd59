//! Short, renewed leases that keep one worker, of any replica, on an environment's reconcile or on
//! its GitHub report at a time. They are rows in the database rather than locks in memory, so
//! replicas sharing a Postgres respect them, and they expire, so a process killed while holding
//! one blocks the next worker for one lease at most.

use super::{Store, StoreError, with_pool};
use crate::time::{millis, now_ms};
use std::future::Future;
use std::time::Duration;

/// What a lease guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Reconciling the environment (its row in `environments`).
    Reconcile,
    /// Reporting the environment on GitHub (its row in `github_reports`).
    Report,
}

impl Lease {
    /// The table and key column holding the lease columns `lock_owner` and `lock_until`.
    fn row(self) -> (&'static str, &'static str) {
        match self {
            Lease::Reconcile => ("environments", "id"),
            Lease::Report => ("github_reports", "environment_id"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Lease::Reconcile => "environment lease",
            Lease::Report => "report lease",
        }
    }
}

impl Store {
    /// Takes `lease` of environment `id` for `holder` for `duration`, unless another holder's
    /// lease is still live. Taking it again as the same holder renews it.
    pub async fn take_lease(
        &self,
        lease: Lease,
        id: i64,
        holder: &str,
        duration: Duration,
    ) -> Result<bool, StoreError> {
        if lease == Lease::Report {
            with_pool!(self, pool => sqlx::query(
                "INSERT INTO github_reports (environment_id) VALUES ($1) ON CONFLICT (environment_id) DO NOTHING",
            )
            .bind(id)
            .execute(pool)
            .await
            .map(drop)
            .map_err(StoreError::query("preparing a report"))?);
        }
        let (table, key) = lease.row();
        let now = now_ms();
        let until = now.saturating_add(millis(duration));
        let taken = with_pool!(self, pool => sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET lock_owner = $1, lock_until = $2 \
             WHERE {key} = $3 AND (lock_owner IS NULL OR lock_owner = $1 OR lock_until < $4)"
        )))
        .bind(holder)
        .bind(until)
        .bind(id)
        .bind(now)
        .execute(pool)
        .await
        .map_err(StoreError::query("taking a lease"))?
        .rows_affected());
        Ok(taken == 1)
    }

    /// Gives `lease` back, if `holder` still has it.
    pub async fn release_lease(&self, lease: Lease, id: i64, holder: &str) -> Result<(), StoreError> {
        let (table, key) = lease.row();
        with_pool!(self, pool => sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET lock_owner = NULL, lock_until = NULL WHERE {key} = $1 AND lock_owner = $2"
        )))
        .bind(id)
        .bind(holder)
        .execute(pool)
        .await
        .map(drop)
        .map_err(StoreError::query("releasing a lease")))
    }

    /// Runs `work` holding `lease` of environment `id`, renewed every third of `duration` while
    /// it runs and released after; `None` (and `work` not run) when another holder has it.
    ///
    /// The holder is this call, named after `owner` (the process), not the process itself: two
    /// workers of one process must not work on one environment at once either.
    pub async fn while_leased<T>(
        &self,
        lease: Lease,
        id: i64,
        owner: &str,
        duration: Duration,
        work: impl Future<Output = T>,
    ) -> Result<Option<T>, StoreError> {
        let holder = format!("{owner}/{}", uuid::Uuid::new_v4().simple());
        if !self.take_lease(lease, id, &holder, duration).await? {
            return Ok(None);
        }
        let renew = async {
            loop {
                tokio::time::sleep(duration / 3).await;
                if let Err(error) = self.take_lease(lease, id, &holder, duration).await {
                    tracing::warn!(error = %error, environment = id, "could not renew the {}", lease.name());
                }
            }
        };
        let result = tokio::select! {
            result = work => result,
            () = renew => unreachable!("the renewal loop never ends"),
        };
        if let Err(error) = self.release_lease(lease, id, &holder).await {
            tracing::warn!(error = %error, environment = id, "could not release the {}; it expires by itself", lease.name());
        }
        Ok(Some(result))
    }
}
