//! Liveness, readiness and metrics.

use super::AppState;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use previewd_environments::store::JobState;

/// The process is alive and serving requests.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready to take deliveries: the store answers.
pub async fn readyz(State(app): State<AppState>) -> Response {
    match app.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(error) => {
            tracing::warn!(error = %error, "readiness check failed: the store does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response()
        }
    }
}

/// Prometheus text format. Queue depth is read from the store at scrape time, so it is right
/// across replicas.
pub async fn metrics(State(app): State<AppState>) -> Response {
    match app.store.job_counts().await {
        Ok(counts) => {
            for (state, count) in counts {
                app.metrics.jobs.get_or_create(&crate::metrics::StateLabels { state: state.as_str() }).set(count);
            }
        }
        Err(error) => {
            tracing::warn!(error = %error, "could not read queue depth for /metrics");
            for state in JobState::ALL {
                app.metrics.jobs.remove(&crate::metrics::StateLabels { state: state.as_str() });
            }
        }
    }
    app.metrics.webhook_body_bytes.set(i64::try_from(app.bodies.held()).unwrap_or(i64::MAX));
    match app.metrics.encode() {
        Ok(body) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
