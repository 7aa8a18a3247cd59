//! `previewd serve`: wires the store, intake, workers and HTTP server together and shuts them
//! down in order.

use crate::config::Config;
use crate::github::signature::WebhookSecrets;
use crate::http::{AppState, router};
use crate::intake::Intake;
use crate::metrics::Metrics;
use crate::process::JobRunner;
use crate::worker::{Shutdown, WorkerSettings, spawn_workers};
use anyhow::Context;
use previewd_environments::store::{Store, redact_url};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

/// Serves until SIGTERM or SIGINT.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    let shutdown = Shutdown::default();
    let signal = shutdown.stop.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signal.cancel();
    });
    run(config, listener, shutdown).await
}

/// Runs previewd on `listener` until `shutdown.stop` is cancelled: stop accepting requests,
/// record what was received, let running jobs finish within the grace period, then hand back
/// the rest.
pub async fn run(config: Config, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let store = Store::connect(&config.database_url).await?;
    store.migrate().await.context("migrating the database")?;
    let metrics = Arc::new(Metrics::default());
    let jobs_queued = Arc::new(Notify::new());
    let (intake, intake_writer) = Intake::start(store.clone(), jobs_queued.clone());
    let process = uuid::Uuid::new_v4().to_string();
    let max_attempts = i64::from(config.queue.max_attempts);
    let engine = crate::lifecycle::engine(&config, store.clone(), process.clone()).await?;
    let workers = TaskTracker::new();
    if let Some(engine) = &engine {
        workers.spawn(crate::lifecycle::run_periodic(
            engine.clone(),
            Duration::from_secs(config.engine.resync_interval_seconds),
            max_attempts,
            shutdown.stop.clone(),
        ));
    }
    spawn_workers(
        &workers,
        process,
        store.clone(),
        Arc::new(JobRunner::new(store.clone(), engine, max_attempts)),
        WorkerSettings {
            workers: config.queue.workers,
            lease: config.lease(),
            poll_interval: Duration::from_millis(config.queue.poll_interval_ms),
            backoff_initial: Duration::from_millis(config.queue.backoff_initial_ms),
            backoff_max: Duration::from_secs(config.queue.backoff_max_seconds),
        },
        jobs_queued,
        metrics.clone(),
        shutdown.clone(),
    );
    workers.close();
    let state = AppState {
        store: store.clone(),
        intake,
        secrets: Arc::new(WebhookSecrets::new(config.webhook_secrets.clone())),
        metrics,
        job_max_attempts: max_attempts,
    };
    let address = listener.local_addr().context("reading the listening address")?;
    tracing::info!(
        %address,
        store = store.backend_name(),
        database = %redact_url(&config.database_url),
        workers = config.queue.workers,
        "previewd is serving"
    );
    let stop = shutdown.stop.clone();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .context("HTTP server failed")?;
    tracing::info!("no longer accepting requests; finishing work in progress");
    // Every Intake handle lived in the router, which is gone now: the writer records what it
    // was handed and stops.
    if let Err(error) = intake_writer.await {
        tracing::error!(error = %error, "the delivery writer stopped abnormally");
    }
    let grace = config.shutdown_grace();
    if tokio::time::timeout(grace, workers.wait()).await.is_err() {
        tracing::warn!(grace_seconds = grace.as_secs(), "jobs still running after the grace period; handing them back");
        shutdown.abandon.cancel();
        workers.wait().await;
    }
    store.close().await;
    tracing::info!("previewd stopped");
    Ok(())
}

async fn wait_for_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(error = %error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received; shutting down"),
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
}
