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
            audit = swept.audit,
            changes = swept.changes,
            sessions = swept.sessions,
            share_links = swept.share_links,
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "retention sweep deleted {} rows",
            swept.total()
        ),
        Err(error) => tracing::warn!(error = %error, "retention sweep failed; trying again next interval"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Log output kept in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Each sweep tells the operator what it deleted, per kind.
    #[tokio::test(flavor = "current_thread")]
    async fn a_sweep_logs_its_counts() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("previewd.db").display());
        let store = Store::connect(&url.into()).await.unwrap();
        store.migrate().await.unwrap();
        let retention = crate::config::RetentionConfig::default().retention();
        sweep_once(&store, &retention).await;
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let line =
            text.lines().find(|l| l.contains("retention sweep deleted 0 rows")).unwrap_or_else(|| panic!("{text}"));
        for field in [
            "done_jobs=0",
            "dead_jobs=0",
            "deliveries=0",
            "transitions=0",
            "environments=0",
            "audit=0",
            "changes=0",
            "elapsed_ms=",
        ] {
            assert!(line.contains(field), "{field} missing in {line}");
        }
    }
}
