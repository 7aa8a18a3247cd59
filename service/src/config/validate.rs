//! The rules every setting must meet, checked once at start so that a bad value stops previewd
//! with the setting's name and its environment variable, not later with a confusing failure.

use super::*;

impl Config {
    /// What `serve` needs beyond a valid configuration: a webhook secret. `migrate` and `token`
    /// touch only the database, so an operator can make a token without the webhook's secret.
    pub fn require_serving(&self) -> Result<(), ConfigError> {
        if self.webhook_secrets.is_empty() {
            return Err(ConfigError::Invalid {
                setting: "webhook_secrets",
                env: WEBHOOK_SECRETS_ENV,
                problem: "at least one webhook secret is required: deliveries cannot be verified without one"
                    .to_owned(),
            });
        }
        Ok(())
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        use secrecy::ExposeSecret;
        let invalid =
            |setting, env, problem: &str| Err(ConfigError::Invalid { setting, env, problem: problem.to_owned() });
        if self.webhook_secrets.iter().any(|s| s.expose_secret().trim().is_empty()) {
            return invalid("webhook_secrets", WEBHOOK_SECRETS_ENV, "a webhook secret is empty");
        }
        let url = self.database_url.expose_secret();
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return invalid(
                "database_url",
                DATABASE_URL_ENV,
                "must start with `sqlite:` (embedded file) or `postgres://`",
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_filter).is_err() {
            return invalid(
                "log_filter",
                "PREVIEWD_LOG_FILTER",
                "is not a valid filter (example: `info,previewd=debug`)",
            );
        }
        let q = &self.queue;
        if !(1..=256).contains(&q.workers) {
            return invalid("queue.workers", "PREVIEWD_QUEUE__WORKERS", "must be between 1 and 256");
        }
        if !(1..=100).contains(&q.max_attempts) {
            return invalid("queue.max_attempts", "PREVIEWD_QUEUE__MAX_ATTEMPTS", "must be between 1 and 100");
        }
        if q.lease_seconds < 5 {
            return invalid("queue.lease_seconds", "PREVIEWD_QUEUE__LEASE_SECONDS", "must be at least 5");
        }
        if q.backoff_initial_ms == 0 || q.backoff_initial_ms > q.backoff_max_seconds.saturating_mul(1000) {
            return invalid(
                "queue.backoff_initial_ms",
                "PREVIEWD_QUEUE__BACKOFF_INITIAL_MS",
                "must be at least 1 and not above queue.backoff_max_seconds",
            );
        }
        if !previewd_environments::naming::is_dns1123_label(&self.instance) {
            return invalid("instance", "PREVIEWD_INSTANCE", "must be a lowercase DNS label (a-z, 0-9, -; at most 63)");
        }
        if self.read_cluster_role.is_empty() || self.read_cluster_role.contains(['/', '%']) {
            return invalid(
                "read_cluster_role",
                "PREVIEWD_READ_CLUSTER_ROLE",
                "must be the name of a ClusterRole (not empty, no `/` or `%`)",
            );
        }
        let e = &self.engine;
        if [
            e.rollout_timeout_seconds,
            e.teardown_timeout_seconds,
            e.resync_interval_seconds,
            e.drift_repair_interval_seconds,
        ]
        .contains(&0)
        {
            return invalid(
                "engine",
                "PREVIEWD_ENGINE__*",
                "rollout_timeout_seconds, teardown_timeout_seconds, resync_interval_seconds and \
                 drift_repair_interval_seconds must be at least 1",
            );
        }
        if e.retry_base_seconds == 0 || e.retry_max_delay_seconds < e.retry_base_seconds {
            return invalid(
                "engine.retry_base_seconds",
                "PREVIEWD_ENGINE__RETRY_BASE_SECONDS",
                "must be at least 1, and engine.retry_max_delay_seconds at least as long",
            );
        }
        let g = &self.github;
        if g.app_id.is_some() && (g.token.is_some() || g.token_file.is_some()) {
            return invalid(
                "github.app_id",
                "PREVIEWD_GITHUB__APP_ID",
                "set either a GitHub App (github.app_id) or a token (github.token_file), not both",
            );
        }
        if g.app_id.is_none() && (g.private_key.is_some() || g.private_key_file.is_some()) {
            return invalid("github.app_id", "PREVIEWD_GITHUB__APP_ID", "a private key is set but no App id");
        }
        if !(g.api_url.starts_with("https://") || g.api_url.starts_with("http://")) {
            return invalid("github.api_url", "PREVIEWD_GITHUB__API_URL", "must be an http(s) URL");
        }
        if g.enabled() && self.repo_config_file.is_some() {
            return invalid(
                "repo_config_file",
                "PREVIEWD_REPO_CONFIG_FILE",
                "is for running without GitHub access; with it, each repository's github.repo_config_path is read",
            );
        }
        if g.resync_interval_seconds == 0 || g.request_timeout_seconds == 0 || g.repo_config_path.trim().is_empty() {
            return invalid(
                "github",
                "PREVIEWD_GITHUB__*",
                "resync_interval_seconds and request_timeout_seconds must be at least 1, repo_config_path not empty",
            );
        }
        if q.poll_interval_ms < 10 {
            return invalid("queue.poll_interval_ms", "PREVIEWD_QUEUE__POLL_INTERVAL_MS", "must be at least 10");
        }
        self.validate_http()?;
        self.validate_dashboard()?;
        self.validate_retention()
    }

    fn validate_dashboard(&self) -> Result<(), ConfigError> {
        let invalid =
            |setting, env, problem: &str| Err(ConfigError::Invalid { setting, env, problem: problem.to_owned() });
        if self.dashboard.oauth(&self.github)?.is_none() {
            return Ok(());
        }
        if self.github.app_id.is_none() {
            return invalid(
                "github.app_id",
                "PREVIEWD_GITHUB__APP_ID",
                "the dashboard (dashboard.public_url) signs people in through the GitHub App",
            );
        }
        let d = &self.dashboard;
        if !(1..=24 * 30).contains(&d.session_hours) {
            return invalid("dashboard.session_hours", "PREVIEWD_DASHBOARD__SESSION_HOURS", "must be 1 to 720");
        }
        if !(10..=3600).contains(&d.permissions_cache_seconds) {
            return invalid(
                "dashboard.permissions_cache_seconds",
                "PREVIEWD_DASHBOARD__PERMISSIONS_CACHE_SECONDS",
                "must be 10 to 3600",
            );
        }
        Ok(())
    }

    fn validate_retention(&self) -> Result<(), ConfigError> {
        let invalid =
            |setting, env, problem: &str| Err(ConfigError::Invalid { setting, env, problem: problem.to_owned() });
        let r = &self.retention;
        if !(60..=7 * 24 * 3600).contains(&r.interval_seconds) {
            return invalid(
                "retention.interval_seconds",
                "PREVIEWD_RETENTION__INTERVAL_SECONDS",
                "must be between 60 and 604800 (a week)",
            );
        }
        if [r.done_jobs_hours, r.dead_jobs_hours, r.transitions_hours, r.finished_environments_hours, r.audit_hours]
            .contains(&0)
        {
            return invalid(
                "retention",
                "PREVIEWD_RETENTION__*",
                "done_jobs_hours, dead_jobs_hours, transitions_hours, finished_environments_hours and audit_hours must be at least 1",
            );
        }
        if r.deliveries_hours < self.github.redelivery_window_hours.max(1) {
            return invalid(
                "retention.deliveries_hours",
                "PREVIEWD_RETENTION__DELIVERIES_HOURS",
                "may not be shorter than github.redelivery_window_hours: replay protection needs the deliveries of that window",
            );
        }
        if !(1..=100_000).contains(&r.batch_rows) {
            return invalid("retention.batch_rows", "PREVIEWD_RETENTION__BATCH_ROWS", "must be between 1 and 100000");
        }
        Ok(())
    }

    fn validate_http(&self) -> Result<(), ConfigError> {
        let invalid =
            |setting, env, problem: &str| Err(ConfigError::Invalid { setting, env, problem: problem.to_owned() });
        let h = &self.http;
        if !(1..=3600).contains(&h.header_timeout_seconds) {
            return invalid(
                "http.header_timeout_seconds",
                "PREVIEWD_HTTP__HEADER_TIMEOUT_SECONDS",
                "must be between 1 and 3600",
            );
        }
        if !(1..=3600).contains(&h.body_timeout_seconds) {
            return invalid(
                "http.body_timeout_seconds",
                "PREVIEWD_HTTP__BODY_TIMEOUT_SECONDS",
                "must be between 1 and 3600",
            );
        }
        let max_body = crate::http::MAX_BODY_BYTES as u64;
        if !(max_body..=1 << 40).contains(&h.max_inflight_body_bytes) {
            return invalid(
                "http.max_inflight_body_bytes",
                "PREVIEWD_HTTP__MAX_INFLIGHT_BODY_BYTES",
                &format!("must be between {max_body} (one delivery of the largest size) and 1 TiB"),
            );
        }
        if !(1..=65_536).contains(&h.max_connections) {
            return invalid("http.max_connections", "PREVIEWD_HTTP__MAX_CONNECTIONS", "must be between 1 and 65536");
        }
        Ok(())
    }
}
