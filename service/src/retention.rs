//! The retention sweep's schedule: once at start, then every `retention.interval_seconds`, in a
//! task of its own beside the workers. Each replica runs it; the deletes are idempotent, so two
//! replicas sweeping at once only share the work.

use previewd_environments::store::{Retention, Store};
use previewd_environments::time::now_ms;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Sweeps every `interval` until `stop`. A sweep that fails is logged and tried again at the
/// next interval; what it deleted before the failure stays deleted.
pub async fn run(store: Store, retention: Retention, interval: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = sweep_once(&store, &retention) => {}
            // Shutdown does not wait for a sweep: each batch is its own transaction.
            () = stop.cancelled() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// One sweep with its log line: what was deleted, per kind, and how long it took.
pub async fn sweep_once(store: &Store, retention: &Retention) {
    let started = Instant::now();
    match store.sweep(retention, now_ms()).await {
        Ok(swept) => tracing::info!(
            done_jobs = swept.done_jobs,
            dead_jobs = swept.dead_jobs,
            deliveries = swept.deliveries,
            transitions = swept.transitions,
            environments = swept.environments,
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "retention sweep deleted {} rows",
            swept.total()
        ),
        Err(error) => tracing::warn!(error = %error, "retention sweep failed; trying again next interval"),
    }
}
