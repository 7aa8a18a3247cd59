//! previewd's settings: defaults, overridden by a TOML or YAML file (`--config`), overridden by
//! `PREVIEWD_*` environment variables (nested settings use `__`: `PREVIEWD_QUEUE__WORKERS`).
//! Every setting is listed in the README's configuration reference.

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_saphyr::figment::Yaml;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The environment variable that holds the webhook secrets, comma-separated.
pub const WEBHOOK_SECRETS_ENV: &str = "PREVIEWD_WEBHOOK_SECRETS";

/// A setting that is missing or wrong; the message names the setting and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    File { path: String, source: std::io::Error },
    #[error("config file {path} must end in .toml, .yaml or .yml")]
    FileFormat { path: String },
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid setting `{setting}` (environment variable {env}): {problem}")]
    Invalid { setting: &'static str, env: &'static str, problem: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// All settings. See the README for each one's meaning and default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// `sqlite://<file>` (embedded, the default) or `postgres://...`. A secret: it may hold the
    /// database password, so it is shown only through `redact_url`.
    #[serde(default = "default_database_url", skip_serializing)]
    pub database_url: SecretString,
    pub log_format: LogFormat,
    /// A `tracing` filter such as `info` or `previewd=debug,info`.
    pub log_filter: String,
    /// Secrets that webhook deliveries may be signed with (more than one during rotation).
    #[serde(default, skip_serializing, deserialize_with = "secrets::deserialize")]
    pub webhook_secrets: Vec<SecretString>,
    pub queue: QueueConfig,
    /// The platform team's policy (YAML). Without it previewd records deliveries and desired
    /// states but creates no environments.
    pub policy_file: Option<PathBuf>,
    /// Folder holding `environments/<set>/*.yaml` templates.
    pub templates_dir: PathBuf,
    /// A `.preview.yaml` used for every pull request, until previewd reads it from the
    /// repository at the head commit.
    pub repo_config_file: Option<PathBuf>,
    /// Kubeconfig file of the cluster environments go to. Unset: `KUBECONFIG`, then
    /// `~/.kube/config`, then the in-cluster ServiceAccount.
    pub kubeconfig: Option<PathBuf>,
    /// The ClusterRole of previewd's reads (list for pruning, rollout state), which previewd
    /// binds to itself in each environment namespace instead of holding them cluster-wide.
    /// The chart creates it as `<release namespace>-<release>-read`.
    pub read_cluster_role: String,
    /// This installation's name, a DNS label put on every object it creates. Installations
    /// sharing a cluster need different names; each only ever deletes its own namespaces.
    pub instance: String,
    pub engine: EngineConfig,
    /// How long previewd takes at most to stop after SIGTERM/SIGINT: requests in flight get
    /// the first half of it, running jobs all of it before they are handed back to the queue.
    pub shutdown_grace_seconds: u64,
    pub github: GitHubConfig,
    pub http: HttpConfig,
    pub retention: RetentionConfig,
}

/// Environment variables whose values are secrets, taken verbatim (not parsed as numbers or
/// lists) and never echoed.
const GITHUB_PRIVATE_KEY_ENV: &str = "PREVIEWD_GITHUB__PRIVATE_KEY";
const GITHUB_TOKEN_ENV: &str = "PREVIEWD_GITHUB__TOKEN";
const DATABASE_URL_ENV: &str = "PREVIEWD_DATABASE_URL";

fn default_database_url() -> SecretString {
    SecretString::from("sqlite://previewd.db")
}

/// Access to GitHub. Without credentials previewd reports nothing on pull requests and reads
/// `.preview.yaml` from `repo_config_file` instead of the repositories.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitHubConfig {
    /// The REST API root: `https://api.github.com`, or `https://HOST/api/v3` for GitHub
    /// Enterprise Server.
    pub api_url: String,
    /// The GitHub App's id. With `private_key_file` (or `PREVIEWD_GITHUB__PRIVATE_KEY`),
    /// previewd acts as the App through per-installation tokens.
    pub app_id: Option<u64>,
    /// The App's private key (PEM file).
    pub private_key_file: Option<PathBuf>,
    /// The App's private key as PEM text (environment variable only).
    #[serde(default, skip_serializing)]
    pub private_key: Option<SecretString>,
    /// A personal access token file, instead of an App: for small setups (no check runs, no
    /// redelivery of deliveries missed while previewd was down).
    pub token_file: Option<PathBuf>,
    /// The token as text (environment variable only).
    #[serde(default, skip_serializing)]
    pub token: Option<SecretString>,
    /// The file in each repository that configures its previews, read at the head commit.
    pub repo_config_path: String,
    /// How often open pull requests are listed to catch missed deliveries, and failed
    /// deliveries redelivered (App only).
    pub resync_interval_seconds: u64,
    /// Failed deliveries younger than this are redelivered. GitHub keeps deliveries for
    /// redelivery for 3 days.
    pub redelivery_window_hours: u64,
    /// Timeout of each call to GitHub.
    pub request_timeout_seconds: u64,
}

impl Default for GitHubConfig {
    fn default() -> Self {
        GitHubConfig {
            api_url: "https://api.github.com".to_owned(),
            app_id: None,
            private_key_file: None,
            private_key: None,
            token_file: None,
            token: None,
            repo_config_path: ".preview.yaml".to_owned(),
            resync_interval_seconds: 300,
            redelivery_window_hours: 72,
            request_timeout_seconds: 30,
        }
    }
}

impl GitHubConfig {
    /// Whether credentials are configured.
    pub fn enabled(&self) -> bool {
        self.app_id.is_some() || self.token.is_some() || self.token_file.is_some()
    }

    /// The credentials, read from their files. `None` when GitHub access is off.
    pub fn credentials(&self) -> Result<Option<crate::github::client::Credentials>, ConfigError> {
        use crate::github::client::Credentials;
        let read = |path: &PathBuf, setting: &'static str, env: &'static str| {
            std::fs::read_to_string(path).map(|text| SecretString::from(text.trim().to_owned())).map_err(|e| {
                ConfigError::Invalid { setting, env, problem: format!("cannot read {}: {e}", path.display()) }
            })
        };
        if let Some(id) = self.app_id {
            let key = match (&self.private_key, &self.private_key_file) {
                (Some(key), _) => key.clone(),
                (None, Some(path)) => read(path, "github.private_key_file", "PREVIEWD_GITHUB__PRIVATE_KEY_FILE")?,
                (None, None) => {
                    return Err(ConfigError::Invalid {
                        setting: "github.private_key_file",
                        env: GITHUB_PRIVATE_KEY_ENV,
                        problem: "github.app_id is set, so the App's private key is required".to_owned(),
                    });
                }
            };
            return Ok(Some(Credentials::App { id, private_key: key }));
        }
        match (&self.token, &self.token_file) {
            (Some(token), _) => Ok(Some(Credentials::Token(token.clone()))),
            (None, Some(path)) => {
                Ok(Some(Credentials::Token(read(path, "github.token_file", "PREVIEWD_GITHUB__TOKEN_FILE")?)))
            }
            (None, None) => Ok(None),
        }
    }
}

/// What the HTTP server, which faces the internet, lets one client hold: a stranger can open
/// connections and send bytes without knowing the webhook secret, so every connection and every
/// body is bounded in time and all bodies together in memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// How long a client may take to send a request's headers. The same timer runs while a
    /// keep-alive connection waits for its next request, so it is also the idle timeout.
    pub header_timeout_seconds: u64,
    /// How long a client may take to send a webhook body once its headers are in. GitHub gives
    /// up on a delivery after 10 seconds, so a slower body is not GitHub's.
    pub body_timeout_seconds: u64,
    /// Webhook body bytes held in memory at once, over all requests. A body that does not fit
    /// is refused with 503 and `Retry-After`, before it is read when its declared length does
    /// not fit. The default holds five deliveries of the largest size (25 MiB) in the chart's
    /// 512 MiB memory limit, with room for the rest of previewd.
    pub max_inflight_body_bytes: u64,
    /// Connections open at once; further ones wait in the listen backlog until one closes.
    pub max_connections: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_timeout_seconds: 10,
            body_timeout_seconds: 10,
            max_inflight_body_bytes: 128 * 1024 * 1024,
            max_connections: 256,
        }
    }
}

/// The job queue's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Jobs run at once by this process.
    pub workers: u32,
    /// Attempts before a job moves to the dead-letter state.
    pub max_attempts: u32,
    /// How long a claimed job is reserved for its worker without a renewal. A crashed worker's
    /// jobs are picked up again after this long.
    pub lease_seconds: u64,
    /// Delay before the first retry; it doubles with every further attempt.
    pub backoff_initial_ms: u64,
    /// Upper bound of the retry delay.
    pub backoff_max_seconds: u64,
    /// How often idle workers look for jobs queued by other replicas or due for retry.
    pub poll_interval_ms: u64,
}

/// What the retention sweep deletes, and how often it runs. Every age counts from a row's last
/// change.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// How often the sweep runs (also once at start).
    pub interval_seconds: u64,
    /// Finished jobs (`done`) older than this are deleted.
    pub done_jobs_hours: u64,
    /// Jobs in the dead-letter state older than this are deleted.
    pub dead_jobs_hours: u64,
    /// Deliveries older than this are deleted. Replay protection needs them for
    /// `github.redelivery_window_hours`, so this may not be shorter than that window.
    pub deliveries_hours: u64,
    /// Transitions of an environment older than this are deleted, except its latest.
    pub transitions_hours: u64,
    /// `Deleted` and `Rejected` environments not changed for this long are deleted, with
    /// their history.
    pub finished_environments_hours: u64,
    /// Rows per delete statement: a smaller batch holds SQLite's write lock for less time.
    pub batch_rows: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            interval_seconds: 600,
            done_jobs_hours: 6,
            dead_jobs_hours: 24 * 7,
            deliveries_hours: 24 * 7,
            transitions_hours: 24 * 7,
            finished_environments_hours: 24 * 30,
            batch_rows: 1_000,
        }
    }
}

impl RetentionConfig {
    /// The store's view of these settings.
    pub fn retention(&self) -> previewd_environments::store::Retention {
        let hours = |h: u64| Duration::from_secs(h.saturating_mul(3600));
        previewd_environments::store::Retention {
            done_jobs: hours(self.done_jobs_hours),
            dead_jobs: hours(self.dead_jobs_hours),
            deliveries: hours(self.deliveries_hours),
            transitions: hours(self.transitions_hours),
            finished_environments: hours(self.finished_environments_hours),
            batch: self.batch_rows,
        }
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_seconds)
    }
}

/// The lifecycle engine's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// How long a rollout may take before the environment is `Failed` with a timeout.
    pub rollout_timeout_seconds: u64,
    /// How long teardown waits for the namespace to disappear before reporting it stuck.
    pub teardown_timeout_seconds: u64,
    /// How often environments in flight are re-reconciled, expired ones torn down, warnings
    /// given and orphaned namespaces removed.
    pub resync_interval_seconds: u64,
    /// How often each ready environment is applied again (drift repair), spread over the
    /// passes; re-applying the whole fleet every pass saturated the workers at about 900.
    pub drift_repair_interval_seconds: u64,
    /// Rollouts watched at once by this replica (one watch per environment rolling out, on its
    /// namespace's Deployments and pods). Past it, a rollout is looked at every 2 s instead.
    pub max_rollout_watches: u32,
    /// Retries of a rollout that failed for a cause that can pass (an image not pushed yet, a
    /// crash loop, a full quota, a timeout) before the environment stays `Failed`. 0: none.
    pub failed_retries: u32,
    /// Wait before the first of those retries; it doubles each time, up to the maximum.
    pub retry_base_seconds: u64,
    pub retry_max_delay_seconds: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            rollout_timeout_seconds: 300,
            teardown_timeout_seconds: 120,
            resync_interval_seconds: 60,
            drift_repair_interval_seconds: 600,
            max_rollout_watches: 256,
            failed_retries: 5,
            retry_base_seconds: 30,
            retry_max_delay_seconds: 30 * 60,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: default_database_url(),
            log_format: LogFormat::Text,
            log_filter: "info".to_owned(),
            webhook_secrets: Vec::new(),
            queue: QueueConfig::default(),
            policy_file: None,
            templates_dir: PathBuf::from("templates"),
            repo_config_file: None,
            kubeconfig: None,
            read_cluster_role: "previewd-read".to_owned(),
            instance: "previewd".to_owned(),
            engine: EngineConfig::default(),
            shutdown_grace_seconds: 30,
            github: GitHubConfig::default(),
            http: HttpConfig::default(),
            retention: RetentionConfig::default(),
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            workers: 4,
            max_attempts: 8,
            lease_seconds: 60,
            backoff_initial_ms: 1_000,
            backoff_max_seconds: 600,
            poll_interval_ms: 1_000,
        }
    }
}

impl Config {
    /// Loads the settings from the defaults, the optional file and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// Like [`Config::load`], with the environment given explicitly (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            let shown = path.display().to_string();
            if !path.is_file() {
                let source =
                    std::fs::metadata(path).err().unwrap_or_else(|| std::io::Error::other("not a regular file"));
                return Err(ConfigError::File { path: shown, source });
            }
            figment = match path.extension().and_then(|e| e.to_str()) {
                Some("toml") => figment.merge(Toml::file_exact(path)),
                Some("yaml" | "yml") => figment.merge(Yaml::file_exact(path)),
                _ => return Err(ConfigError::FileFormat { path: shown }),
            };
        }
        let env: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with("PREVIEWD_")).collect();
        let mut secrets_from_env = None;
        let (mut private_key_from_env, mut token_from_env, mut database_url_from_env) = (None, None, None);
        let mut settings = Vec::new();
        for (key, value) in env {
            let key = &key["PREVIEWD_".len()..];
            // PREVIEWD_CONFIG names the file itself; PREVIEWD_TEST_* belong to the test suite.
            if key == "CONFIG" || key.starts_with("TEST_") {
                continue;
            }
            if key == &WEBHOOK_SECRETS_ENV["PREVIEWD_".len()..] {
                secrets_from_env = Some(value);
            } else if key == &GITHUB_PRIVATE_KEY_ENV["PREVIEWD_".len()..] {
                private_key_from_env = Some(SecretString::from(value));
            } else if key == &GITHUB_TOKEN_ENV["PREVIEWD_".len()..] {
                token_from_env = Some(SecretString::from(value));
            } else if key == &DATABASE_URL_ENV["PREVIEWD_".len()..] {
                database_url_from_env = Some(SecretString::from(value));
            } else {
                settings.push((key.to_owned(), value));
            }
        }
        // Values are parsed like figment's own environment provider does ("8" is a number);
        // secrets are taken verbatim instead, so that a secret like `0123` stays as it is.
        for (key, value) in settings {
            let path = key.to_lowercase().replace("__", ".");
            let value: figment::value::Value = value.parse().unwrap_or_else(|never| match never {});
            figment = figment.merge(Serialized::global(&path, value));
        }
        let mut config: Config = figment.extract().map_err(|e| ConfigError::Parse(describe(e)))?;
        if let Some(value) = secrets_from_env {
            config.webhook_secrets = value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| SecretString::from(s.to_owned()))
                .collect();
        }
        if private_key_from_env.is_some() {
            config.github.private_key = private_key_from_env;
        }
        if token_from_env.is_some() {
            config.github.token = token_from_env;
        }
        if let Some(url) = database_url_from_env {
            config.database_url = url;
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        use secrecy::ExposeSecret;
        let invalid =
            |setting, env, problem: &str| Err(ConfigError::Invalid { setting, env, problem: problem.to_owned() });
        if self.webhook_secrets.is_empty() {
            return invalid(
                "webhook_secrets",
                WEBHOOK_SECRETS_ENV,
                "at least one webhook secret is required: deliveries cannot be verified without one",
            );
        }
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
        self.validate_retention()
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
        if [r.done_jobs_hours, r.dead_jobs_hours, r.transitions_hours, r.finished_environments_hours].contains(&0) {
            return invalid(
                "retention",
                "PREVIEWD_RETENTION__*",
                "done_jobs_hours, dead_jobs_hours, transitions_hours and finished_environments_hours must be at least 1",
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

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.queue.lease_seconds)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.http.header_timeout_seconds)
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.http.body_timeout_seconds)
    }
}

/// Names the setting, its environment variable and where the bad value came from, for each
/// error figment found.
fn describe(errors: figment::Error) -> String {
    errors
        .into_iter()
        .map(|e| {
            let path = e.path.join(".");
            let env = format!("PREVIEWD_{}", e.path.join("__").to_uppercase());
            // Only files are worth naming; values from the environment are named by their variable.
            let source = e
                .metadata
                .as_ref()
                .and_then(|m| m.source.as_ref())
                .and_then(|s| s.file_path())
                .map(|p| p.display().to_string());
            let mut message = if path.is_empty() {
                e.kind.to_string()
            } else {
                format!("setting `{path}` (environment variable {env}): {}", e.kind)
            };
            if let Some(source) = source {
                message.push_str(&format!(" (from {source})"));
            }
            message
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Webhook secrets may be written as one string or a list of strings in the config file.
mod secrets {
    use secrecy::SecretString;
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SecretString>, D::Error> {
        let values = match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        };
        Ok(values.into_iter().map(SecretString::from).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn error(file: Option<&Path>, pairs: &[(&str, &str)]) -> String {
        match Config::load_from(file, env(pairs)) {
            Ok(_) => panic!("expected the configuration to be refused"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_need_only_a_secret() {
        let config = Config::load_from(None, env(&[("PREVIEWD_WEBHOOK_SECRETS", "s3cret")])).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.database_url.expose_secret(), "sqlite://previewd.db");
        assert_eq!(config.queue.workers, 4);
        assert_eq!(config.read_cluster_role, "previewd-read", "the test cluster's and the README's");
        assert_eq!(config.webhook_secrets.len(), 1);
    }

    #[test]
    fn missing_secret_names_the_setting() {
        let message = error(None, &[]);
        assert!(message.contains("webhook_secrets") && message.contains("PREVIEWD_WEBHOOK_SECRETS"), "{message}");
    }

    #[test]
    fn env_overrides_file_and_secrets_are_verbatim() {
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        writeln!(file, "listen = \"0.0.0.0:9000\"\nwebhook_secrets = [\"from-file\"]\n[queue]\nworkers = 2").unwrap();
        let config = Config::load_from(
            Some(file.path()),
            env(&[
                ("PREVIEWD_QUEUE__WORKERS", "8"),
                ("PREVIEWD_WEBHOOK_SECRETS", "0123, new"),
                ("PREVIEWD_CONFIG", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(config.queue.workers, 8);
        let secrets: Vec<&str> = config.webhook_secrets.iter().map(|s| s.expose_secret()).collect();
        assert_eq!(secrets, ["0123", "new"]);
    }

    #[test]
    fn yaml_files_work_too() {
        let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        writeln!(file, "webhook_secrets: only-one\nlog_format: json\nqueue:\n  max_attempts: 3").unwrap();
        let config = Config::load_from(Some(file.path()), env(&[])).unwrap();
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.queue.max_attempts, 3);
    }

    #[test]
    fn wrong_values_name_setting_and_variable() {
        let message = error(None, &[("PREVIEWD_WEBHOOK_SECRETS", "s"), ("PREVIEWD_QUEUE__WORKERS", "many")]);
        assert!(message.contains("queue.workers") && message.contains("PREVIEWD_QUEUE__WORKERS"), "{message}");
        let message = error(None, &[("PREVIEWD_WEBHOOK_SECRETS", "s"), ("PREVIEWD_QUEUE__WORKERS", "0")]);
        assert!(message.contains("queue.workers") && message.contains("between 1 and 256"), "{message}");
        let message = error(None, &[("PREVIEWD_WEBHOOK_SECRETS", "s"), ("PREVIEWD_DATABASE_URL", "mysql://x")]);
        assert!(message.contains("database_url"), "{message}");
        let message = error(None, &[("PREVIEWD_WEBHOOK_SECRETS", "s"), ("PREVIEWD_READ_CLUSTER_ROLE", "a/b")]);
        assert!(message.contains("read_cluster_role") && message.contains("PREVIEWD_READ_CLUSTER_ROLE"), "{message}");
    }

    #[test]
    fn retention_keeps_deliveries_for_the_redelivery_window() {
        let config = Config::load_from(None, env(&[("PREVIEWD_WEBHOOK_SECRETS", "s")])).unwrap();
        assert!(config.retention.deliveries_hours >= config.github.redelivery_window_hours);
        let message = error(None, &[("PREVIEWD_WEBHOOK_SECRETS", "s"), ("PREVIEWD_RETENTION__DELIVERIES_HOURS", "24")]);
        assert!(
            message.contains("retention.deliveries_hours") && message.contains("github.redelivery_window_hours"),
            "{message}"
        );
        let config = Config::load_from(
            None,
            env(&[
                ("PREVIEWD_WEBHOOK_SECRETS", "s"),
                ("PREVIEWD_RETENTION__DELIVERIES_HOURS", "24"),
                ("PREVIEWD_GITHUB__REDELIVERY_WINDOW_HOURS", "12"),
                ("PREVIEWD_RETENTION__DONE_JOBS_HOURS", "2"),
            ]),
        )
        .unwrap();
        assert_eq!(config.retention.retention().done_jobs, Duration::from_secs(7200));
        let message = error(None, &[("PREVIEWD_WEBHOOK_SECRETS", "s"), ("PREVIEWD_RETENTION__INTERVAL_SECONDS", "1")]);
        assert!(message.contains("retention.interval_seconds"), "{message}");
    }

    #[test]
    fn unknown_settings_are_refused() {
        let message = error(None, &[("PREVIEWD_WEBHOOK_SECRETS", "s"), ("PREVIEWD_LISTN", "x")]);
        assert!(message.contains("listn"), "{message}");
    }

    #[test]
    fn missing_file_is_named() {
        let message = error(Some(Path::new("does/not/exist.toml")), &[("PREVIEWD_WEBHOOK_SECRETS", "s")]);
        assert!(message.contains("does/not/exist.toml"), "{message}");
    }

    #[test]
    fn github_secrets_are_verbatim_and_exclusive() {
        let config = Config::load_from(
            None,
            env(&[
                ("PREVIEWD_WEBHOOK_SECRETS", "s"),
                ("PREVIEWD_GITHUB__APP_ID", "42"),
                ("PREVIEWD_GITHUB__PRIVATE_KEY", "-----BEGIN KEY-----\n123\n-----END KEY-----"),
            ]),
        )
        .unwrap();
        assert_eq!(config.github.app_id, Some(42));
        assert!(config.github.private_key.as_ref().unwrap().expose_secret().starts_with("-----BEGIN KEY-----"));
        assert!(!format!("{config:?}").contains("123"));
        let message = error(
            None,
            &[("PREVIEWD_WEBHOOK_SECRETS", "s"), ("PREVIEWD_GITHUB__APP_ID", "42"), ("PREVIEWD_GITHUB__TOKEN", "t")],
        );
        assert!(message.contains("not both"), "{message}");
        let config =
            Config::load_from(None, env(&[("PREVIEWD_WEBHOOK_SECRETS", "s"), ("PREVIEWD_GITHUB__APP_ID", "42")]))
                .unwrap();
        let problem = config.github.credentials().err().unwrap().to_string();
        assert!(
            problem.contains("private key is required") && problem.contains("PREVIEWD_GITHUB__PRIVATE_KEY"),
            "{problem}"
        );
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let config = Config::load_from(None, env(&[("PREVIEWD_WEBHOOK_SECRETS", "hunter2")])).unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn http_limits_have_defaults_and_bounds() {
        let config = Config::load_from(None, env(&[("PREVIEWD_WEBHOOK_SECRETS", "s")])).unwrap();
        assert_eq!((config.http.header_timeout_seconds, config.http.body_timeout_seconds), (10, 10));
        assert_eq!(config.http.max_inflight_body_bytes, 128 * 1024 * 1024);
        let message =
            error(None, &[("PREVIEWD_WEBHOOK_SECRETS", "s"), ("PREVIEWD_HTTP__MAX_INFLIGHT_BODY_BYTES", "1000")]);
        assert!(message.contains("http.max_inflight_body_bytes") && message.contains("one delivery"), "{message}");
        let message = error(None, &[("PREVIEWD_WEBHOOK_SECRETS", "s"), ("PREVIEWD_HTTP__HEADER_TIMEOUT_SECONDS", "0")]);
        assert!(message.contains("PREVIEWD_HTTP__HEADER_TIMEOUT_SECONDS"), "{message}");
    }

    /// The database URL is a secret: verbatim from the variable (a password like `0123` or with
    /// `,` stays as it is), from a file too, and absent from `Debug` output and errors.
    #[test]
    fn the_database_url_is_a_secret() {
        let url = "postgres://previewd:0123,[x]@db.internal/previewd";
        let config =
            Config::load_from(None, env(&[("PREVIEWD_WEBHOOK_SECRETS", "s"), ("PREVIEWD_DATABASE_URL", url)])).unwrap();
        assert_eq!(config.database_url.expose_secret(), url);
        assert!(!format!("{config:?}").contains("0123"), "{config:?}");
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        writeln!(file, "webhook_secrets = \"s\"\ndatabase_url = \"postgres://u:from-file-pw@h/db\"").unwrap();
        let config = Config::load_from(Some(file.path()), env(&[])).unwrap();
        assert_eq!(config.database_url.expose_secret(), "postgres://u:from-file-pw@h/db");
        assert!(!format!("{config:?}").contains("from-file-pw"));
        let message = error(None, &[("PREVIEWD_WEBHOOK_SECRETS", "s"), ("PREVIEWD_DATABASE_URL", "mysql://u:my-pw@h")]);
        assert!(message.contains("database_url") && !message.contains("my-pw"), "{message}");
    }
}
