//! previewd's settings: defaults, overridden by a TOML or YAML file (`--config`), overridden by
//! `PREVIEWD_*` environment variables (nested settings use `__`: `PREVIEWD_QUEUE__WORKERS`).
//! Every setting is listed in the README's configuration reference.

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use previewd_environments::policy::DEFAULT_TSIG_SECRET_ENV;
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
    pub dashboard: DashboardConfig,
}

mod dashboard;
mod validate;

pub use dashboard::{DashboardConfig, OAuthClient};

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
    /// GitHub's web root, where people sign in to the dashboard: `https://github.com`, or
    /// `https://HOST` for GitHub Enterprise Server.
    pub web_url: String,
    /// The App's "Client ID" (its settings page), for signing people in to the dashboard.
    pub client_id: Option<String>,
    /// A file holding one of the App's client secrets.
    pub client_secret_file: Option<PathBuf>,
    /// The client secret as text (environment variable only).
    #[serde(default, skip_serializing)]
    pub client_secret: Option<SecretString>,
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
            web_url: "https://github.com".to_owned(),
            client_id: None,
            client_secret_file: None,
            client_secret: None,
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
    /// Audit log entries (admin API actions, token commands) older than this are deleted.
    pub audit_hours: u64,
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
            transitions_hours: 24 * 32,
            finished_environments_hours: 24 * 30,
            audit_hours: 24 * 365,
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
            audit: hours(self.audit_hours),
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
            dashboard: DashboardConfig::default(),
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
        let mut client_secret_from_env = None;
        let mut settings = Vec::new();
        for (key, value) in env {
            let key = &key["PREVIEWD_".len()..];
            // PREVIEWD_CONFIG names the file itself; PREVIEWD_TEST_* belong to the test suite;
            // PREVIEWD_DNS_TSIG_SECRET is the default variable of the policy's TSIG key
            // (`dns.rfc2136.key_secret_env`), read by the DNS provider and never a setting (the
            // policy refuses any other PREVIEWD_* name there).
            if key == "CONFIG" || key.starts_with("TEST_") || key == &DEFAULT_TSIG_SECRET_ENV["PREVIEWD_".len()..] {
                continue;
            }
            if key == &WEBHOOK_SECRETS_ENV["PREVIEWD_".len()..] {
                secrets_from_env = Some(value);
            } else if key == &GITHUB_PRIVATE_KEY_ENV["PREVIEWD_".len()..] {
                private_key_from_env = Some(SecretString::from(value));
            } else if key == &GITHUB_TOKEN_ENV["PREVIEWD_".len()..] {
                token_from_env = Some(SecretString::from(value));
            } else if key == &dashboard::CLIENT_SECRET_ENV["PREVIEWD_".len()..] {
                client_secret_from_env = Some(SecretString::from(value));
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
        if client_secret_from_env.is_some() {
            config.github.client_secret = client_secret_from_env;
        }
        config.validate()?;
        Ok(config)
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
mod tests;
