//! The `previewd` binary as a user runs it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use previewd_e2e::database::{Backend, fresh};
use previewd_e2e::fixtures::example;
use previewd_e2e::github::sign;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_previewd");

fn previewd(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(BIN);
    command.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

#[test]
fn help_documents_every_command_and_option() {
    let out = previewd(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for expected in ["serve", "migrate", "--config", "PREVIEWD_CONFIG", "--version"] {
        assert!(help.contains(expected), "`{expected}` missing from --help:\n{help}");
    }
    let version = String::from_utf8(previewd(&["--version"], &[]).stdout).unwrap();
    assert_eq!(version.trim(), format!("previewd {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn a_missing_secret_stops_start_up_with_a_message_naming_it() {
    let out = previewd(&["serve"], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("webhook_secrets") && stderr.contains("PREVIEWD_WEBHOOK_SECRETS"), "{stderr}");
}

#[test]
fn an_invalid_config_file_is_named_with_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("previewd.toml");
    std::fs::write(&file, "webhook_secrets = \"s\"\n[queue]\nworkers = \"lots\"\n").unwrap();
    let out = previewd(&["--config", file.to_str().unwrap(), "migrate"], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("queue.workers") && stderr.contains("previewd.toml"), "{stderr}");
}

#[tokio::test]
async fn migrate_creates_the_schema_on_both_backends() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = fresh(backend).await.unwrap();
        let out = previewd(&["migrate"], &[("PREVIEWD_DATABASE_URL", &db.url), ("PREVIEWD_WEBHOOK_SECRETS", "s")]);
        assert!(out.status.success(), "{backend:?}: {}", String::from_utf8_lossy(&out.stderr));
        let store = previewd_environments::store::Store::connect(&db.url.as_str().into()).await.unwrap();
        assert_eq!(store.count_deliveries().await.unwrap(), 0, "{backend:?}: tables exist");
    }
}

/// Secrets, signatures and raw headers never reach the log, in either format.
#[tokio::test]
async fn logs_hold_no_secret_signature_or_header() {
    for format in ["text", "json"] {
        let db = fresh(Backend::Sqlite).await.unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let secret = "super-secret-value-123";
        let mut child = Command::new(BIN)
            .arg("serve")
            .env_clear()
            .env("PREVIEWD_LISTEN", format!("127.0.0.1:{port}"))
            .env("PREVIEWD_DATABASE_URL", &db.url)
            .env("PREVIEWD_WEBHOOK_SECRETS", secret)
            .env("PREVIEWD_LOG_FORMAT", format)
            .env("PREVIEWD_LOG_FILTER", "trace")
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
            assert!(Instant::now() < deadline, "previewd did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let body = serde_json::to_vec(&example("pull_request", "opened").unwrap()).unwrap();
        let good = sign(secret, &body);
        let bad = sign("wrong", &body);
        for (delivery, signature) in [("d1", &good), ("d2", &bad)] {
            http.post(format!("{base}/webhooks/github"))
                .header("X-GitHub-Event", "pull_request")
                .header("X-GitHub-Delivery", delivery)
                .header("X-Hub-Signature-256", signature.as_str())
                .header("Authorization", "Bearer header-token-456")
                .body(body.clone())
                .send()
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "graceful shutdown on SIGTERM exits 0");
        let mut log = String::new();
        child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
        assert!(log.contains("delivery stored"), "{format}: the log is not empty:\n{log}");
        assert!(log.contains("previewd stopped"), "{format}: shut down gracefully:\n{log}");
        for forbidden in [secret, good.as_str(), &good[7..], bad.as_str(), &bad[7..], "header-token-456"] {
            assert!(!log.contains(forbidden), "{format}: `{forbidden}` appears in the log:\n{log}");
        }
    }
}
