//! The settings' tests: layering of defaults, file and environment, and every validation rule.

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
fn the_tsig_secrets_default_variable_is_not_a_setting() {
    // The README's RFC 2136 example names it; read as a setting it stopped previewd at start.
    let config = Config::load_from(
        None,
        env(&[("PREVIEWD_WEBHOOK_SECRETS", "s"), ("PREVIEWD_DNS_TSIG_SECRET", "c2VjcmV0IG9mIHRoZSBrZXk=")]),
    )
    .unwrap();
    assert!(!format!("{config:?}").contains("c2VjcmV0IG9mIHRoZSBrZXk="), "the key's secret is no setting");
    // Another PREVIEWD_* name is still a setting previewd does not know.
    let message = error(None, &[("PREVIEWD_WEBHOOK_SECRETS", "s"), ("PREVIEWD_DNS_TSIG", "x")]);
    assert!(message.contains("PREVIEWD_DNS_TSIG") && message.contains("unknown field"), "{message}");
}

#[test]
fn missing_secret_names_the_setting_when_serving_only() {
    let config = Config::load_from(None, Vec::new()).unwrap();
    let message = config.require_serving().unwrap_err().to_string();
    assert!(message.contains("webhook_secrets") && message.contains("PREVIEWD_WEBHOOK_SECRETS"), "{message}");
}

#[test]
fn env_overrides_file_and_secrets_are_verbatim() {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    writeln!(file, "listen = \"0.0.0.0:9000\"\nwebhook_secrets = [\"from-file\"]\n[queue]\nworkers = 2").unwrap();
    let config = Config::load_from(
        Some(file.path()),
        env(&[("PREVIEWD_QUEUE__WORKERS", "8"), ("PREVIEWD_WEBHOOK_SECRETS", "0123, new"), ("PREVIEWD_CONFIG", "x")]),
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
        Config::load_from(None, env(&[("PREVIEWD_WEBHOOK_SECRETS", "s"), ("PREVIEWD_GITHUB__APP_ID", "42")])).unwrap();
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
    let message = error(None, &[("PREVIEWD_WEBHOOK_SECRETS", "s"), ("PREVIEWD_HTTP__MAX_INFLIGHT_BODY_BYTES", "1000")]);
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

#[test]
fn the_dashboard_needs_the_apps_client_and_says_which_setting_is_missing() {
    let off = Config::load_from(None, Vec::new()).unwrap();
    assert!(off.dashboard.oauth(&off.github).unwrap().is_none(), "no public_url: no dashboard");
    let base = [("PREVIEWD_DASHBOARD__PUBLIC_URL", "https://previewd.example.com/")];
    let message = error(None, &base);
    assert!(message.contains("github.client_id") && message.contains("PREVIEWD_GITHUB__CLIENT_ID"), "{message}");
    let message = error(None, &[base[0], ("PREVIEWD_GITHUB__CLIENT_ID", "Iv1.abc")]);
    assert!(message.contains("PREVIEWD_GITHUB__CLIENT_SECRET"), "{message}");
    let client = [base[0], ("PREVIEWD_GITHUB__CLIENT_ID", "Iv1.abc"), ("PREVIEWD_GITHUB__CLIENT_SECRET", "0123")];
    let message = error(None, &client);
    assert!(message.contains("github.app_id"), "the dashboard signs in through the App: {message}");
    let message = error(None, &[base[0], ("PREVIEWD_DASHBOARD__PUBLIC_URL", "previewd.example.com")]);
    assert!(message.contains("dashboard.public_url"), "{message}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.pem"), "unused").unwrap();
    let key = dir.path().join("key.pem").display().to_string();
    let mut full = client.to_vec();
    full.extend([("PREVIEWD_GITHUB__APP_ID", "7"), ("PREVIEWD_GITHUB__PRIVATE_KEY_FILE", key.as_str())]);
    let config = Config::load_from(None, env(&full)).unwrap();
    let oauth = config.dashboard.oauth(&config.github).unwrap().unwrap();
    assert_eq!(oauth.client_secret.expose_secret(), "0123", "a secret is taken verbatim");
    assert_eq!(
        (oauth.public_url.as_str(), oauth.web_url.as_str()),
        ("https://previewd.example.com", "https://github.com")
    );
    assert!(!format!("{config:?}{oauth:?}").contains("0123"), "never shown");
    let message = error(None, &[full.as_slice(), &[("PREVIEWD_DASHBOARD__SESSION_HOURS", "0")]].concat());
    assert!(message.contains("dashboard.session_hours"), "{message}");
}
