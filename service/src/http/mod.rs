//! previewd's HTTP surface: the GitHub webhook endpoint, the admin API, the dashboard and the
//! operations endpoints.

mod access;
pub mod api;
mod body;
pub mod dashboard;
mod ops;
mod serve;
mod webhook;

use crate::github::signature::WebhookSecrets;
use crate::intake::Intake;
use crate::metrics::Metrics;
use axum::Router;
use axum::routing::{get, post};
use previewd_environments::policy::Policy;
use previewd_environments::reconcile::Engine;
use previewd_environments::store::Store;
use std::sync::Arc;

pub use body::{BodyBudget, MAX_BODY_BYTES};
pub use serve::{ServeSettings, serve};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub intake: Intake,
    pub secrets: Arc<WebhookSecrets>,
    pub metrics: Arc<Metrics>,
    /// Attempts a delivery's job gets before the dead-letter state (`queue.max_attempts`).
    pub job_max_attempts: i64,
    /// The policy, for its `allow` list: a delivery for a repository outside it is recorded as
    /// `not_allowed` and queues no work. `None` without a policy (intake-only mode).
    pub policy: Option<Arc<Policy>>,
    /// Memory and time allowed for webhook bodies (`http.*` settings).
    pub bodies: BodyBudget,
    /// The engine, for the admin API's actions (its policy) ; `None` without a policy.
    pub engine: Option<Arc<Engine>>,
    /// The store's change feed, read once for every open event stream.
    pub changes: Arc<api::events::ChangeFeed>,
    /// The dashboard's templates and sign-in; `None` when its templates did not load.
    pub dashboard: Option<Arc<dashboard::Dashboard>>,
    /// The forward-authentication decision; `None` without a policy.
    pub access: Option<Arc<crate::access::Gate>>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/webhooks/github", post(webhook::receive))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/_previewd/auth", get(access::auth))
        .route("/_previewd/page", get(access::page))
        .merge(api::router().layer(axum::extract::DefaultBodyLimit::max(api::MAX_BODY)))
        .merge(dashboard::router(state.clone()).layer(axum::extract::DefaultBodyLimit::max(api::MAX_BODY)))
        .with_state(state)
}
