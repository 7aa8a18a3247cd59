//! `previewd serve`: wires the store, intake, workers and HTTP server together and shuts them
//! down in order.

use crate::config::Config;
use crate::github::client::GitHub;
use crate::github::report::GitHubSide;
use crate::github::resync::Resync;
use crate::github::signature::WebhookSecrets;
use crate::github::texts::Texts;
use crate::http::api::events::ChangeFeed;
use crate::http::{AppState, BodyBudget, ServeSettings, router};
use crate::intake::Intake;
use crate::metrics::Metrics;
use crate::process::JobRunner;
use crate::worker::{Shutdown, WorkerSettings, spawn_workers};
use anyhow::Context;
use previewd_environments::policy::Policy;
use previewd_environments::store::{Store, redact_url};
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

/// Serves until SIGTERM or SIGINT.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    config.require_serving()?;
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

/// Runs previewd on `listener` until `shutdown.stop` is cancelled, then ends within the grace
/// period whatever clients do: stop accepting connections, give requests in flight the first
/// half of the grace period and close their connections, record what was received, let running
/// jobs finish within the rest, then hand back what still runs.
pub async fn run(config: Config, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let store = Store::connect(&config.database_url).await?;
    store.migrate().await.context("migrating the database")?;
    let metrics = Arc::new(Metrics::default());
    let jobs_queued = Arc::new(Notify::new());
    let redelivery_window = Duration::from_secs(config.github.redelivery_window_hours.saturating_mul(3600));
    let (intake, intake_writer) = Intake::start(store.clone(), jobs_queued.clone(), redelivery_window);
    let process = uuid::Uuid::new_v4().to_string();
    let max_attempts = i64::from(config.queue.max_attempts);
    let policy = crate::lifecycle::load_policy(&config)?;
    let github = github_side(&config, &store, &process, policy.as_ref())?;
    let intake_policy = policy.clone().map(Arc::new);
    let engine = crate::lifecycle::engine(&config, store.clone(), process.clone(), policy, github.clone()).await?;
    let workers = TaskTracker::new();
    if let Some(side) = &github {
        let resync = Resync {
            side: side.clone(),
            policy: side.policy.clone(),
            interval: Duration::from_secs(config.github.resync_interval_seconds),
            redelivery_window,
            max_attempts,
        };
        workers.spawn(resync.run(shutdown.stop.clone()));
    }
    let watches = engine.as_ref().map(|engine| {
        crate::lifecycle::start_watches(
            engine,
            &config,
            jobs_queued.clone(),
            max_attempts,
            &workers,
            shutdown.stop.clone(),
        )
    });
    if let Some(engine) = &engine {
        let periodic = crate::lifecycle::Periodic {
            interval: Duration::from_secs(config.engine.resync_interval_seconds),
            drift_repair: Duration::from_secs(config.engine.drift_repair_interval_seconds),
            max_attempts,
        };
        workers.spawn(crate::lifecycle::run_periodic(engine.clone(), periodic, shutdown.stop.clone()));
    }
    workers.spawn(crate::retention::run(
        store.clone(),
        config.retention.retention(),
        config.retention.interval(),
        shutdown.stop.clone(),
    ));
    spawn_workers(
        &workers,
        process,
        store.clone(),
        Arc::new(JobRunner::new(store.clone(), engine.clone(), github, watches, max_attempts)),
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
    let access = intake_policy.clone().map(|policy| {
        let signs_in = config.dashboard.oauth(&config.github).ok().flatten().map(|o| o.public_url);
        crate::access::Gate::new(store.clone(), policy, signs_in.as_deref(), max_attempts)
    });
    let state = AppState {
        store: store.clone(),
        intake,
        secrets: Arc::new(WebhookSecrets::new(config.webhook_secrets.clone())),
        metrics: metrics.clone(),
        job_max_attempts: max_attempts,
        policy: intake_policy,
        bodies: BodyBudget::new(
            usize::try_from(config.http.max_inflight_body_bytes).unwrap_or(usize::MAX),
            config.body_timeout(),
        ),
        engine: engine.clone(),
        changes: ChangeFeed::start(store.clone(), shutdown.stop.clone()),
        dashboard: load_dashboard(&config)?,
        access,
    };
    let address = listener.local_addr().context("reading the listening address")?;
    tracing::info!(
        %address,
        store = store.backend_name(),
        database = %redact_url(config.database_url.expose_secret()),
        workers = config.queue.workers,
        "previewd is serving"
    );
    let grace = config.shutdown_grace();
    let stop = shutdown.stop.clone();
    // The grace period counts from the signal.
    let stopped_at = tokio::spawn({
        let stop = stop.clone();
        async move {
            stop.cancelled().await;
            Instant::now()
        }
    });
    let settings = ServeSettings {
        header_timeout: config.header_timeout(),
        max_connections: usize::try_from(config.http.max_connections).unwrap_or(usize::MAX),
        drain: grace / 2,
    };
    crate::http::serve(listener, router(state), settings, metrics, stop).await;
    let deadline = stopped_at.await.unwrap_or_else(|_| Instant::now()) + grace;
    tracing::info!("no longer accepting requests; finishing work in progress");
    // Every Intake handle lived in the router, which is gone now: the writer records what it
    // was handed and stops. A delivery is answered 2xx only after its commit, so one that is
    // not committed in time was not acknowledged and GitHub shows it as failed.
    match tokio::time::timeout_at(deadline, intake_writer).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(error = %error, "the delivery writer stopped abnormally"),
        Err(_) => tracing::error!(
            "deliveries were still being stored at the end of the grace period; they were not acknowledged"
        ),
    }
    if tokio::time::timeout_at(deadline, workers.wait()).await.is_err() {
        tracing::warn!(grace_seconds = grace.as_secs(), "jobs still running after the grace period; handing them back");
        shutdown.abandon.cancel();
        workers.wait().await;
    }
    store.close().await;
    tracing::info!("previewd stopped");
    Ok(())
}

/// The dashboard, from `<templates_dir>/dashboard/`. Without a sign-in configured, templates that
/// are not there only leave the dashboard out (a warning says so); with one, or when a template
/// is there but broken, previewd does not start.
fn load_dashboard(config: &Config) -> anyhow::Result<Option<Arc<crate::http::dashboard::Dashboard>>> {
    use crate::http::dashboard::{Dashboard, DashboardError, DashboardSettings};
    let oauth = config.dashboard.oauth(&config.github)?;
    let signs_in = oauth.is_some();
    let settings = DashboardSettings {
        github_web_url: config.github.web_url.clone(),
        github_api_url: config.github.api_url.clone(),
        github_timeout: Duration::from_secs(config.github.request_timeout_seconds),
        oauth,
        session_lifetime: Duration::from_secs(config.dashboard.session_hours * 3600),
        permissions_cache: Duration::from_secs(config.dashboard.permissions_cache_seconds),
        admins: config.dashboard.admins.clone(),
        allowed_orgs: config.dashboard.allowed_orgs.clone(),
    };
    match Dashboard::load(&config.templates_dir, &settings) {
        Ok(dashboard) => {
            tracing::info!(sign_in = signs_in, "the dashboard is served at /");
            Ok(Some(Arc::new(dashboard)))
        }
        Err(DashboardError::Read { path, source }) if !signs_in && source.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(path, "no dashboard: its templates are not there (setting templates_dir)");
            Ok(None)
        }
        Err(error) => Err(error).context("loading the dashboard (setting templates_dir)"),
    }
}

/// previewd's GitHub side, or `None` without credentials (nothing is reported on pull
/// requests; `repo_config_file` stands in for the repositories' own configuration).
fn github_side(
    config: &Config,
    store: &Store,
    process: &str,
    policy: Option<&Policy>,
) -> anyhow::Result<Option<Arc<GitHubSide>>> {
    let Some(credentials) = config.github.credentials()? else {
        tracing::warn!("no GitHub credentials configured: nothing is reported on pull requests");
        return Ok(None);
    };
    let texts_dir = config.templates_dir.join("github");
    let texts = Texts::load(&texts_dir)
        .with_context(|| format!("loading pull request texts from {} (setting templates_dir)", texts_dir.display()))?;
    let timeout = Duration::from_secs(config.github.request_timeout_seconds);
    let github = GitHub::new(&config.github.api_url, credentials, timeout).context("setting up GitHub access")?;
    tracing::info!(
        api_url = config.github.api_url,
        mode = if github.is_app() { "app" } else { "token" },
        "GitHub access configured"
    );
    Ok(Some(Arc::new(GitHubSide {
        github: Arc::new(github),
        texts,
        store: store.clone(),
        policy: policy.cloned().map(Arc::new),
        instance: config.instance.clone(),
        owner: process.to_owned(),
        repo_config_path: config.github.repo_config_path.clone(),
        own_login: tokio::sync::OnceCell::new(),
    })))
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
