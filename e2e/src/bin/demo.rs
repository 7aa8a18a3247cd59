//! The README's first command (`e2e/demo.sh`): starts `previewd serve` on the embedded SQLite
//! store, as a user would, sends it a signed `pull_request` `opened` delivery built from
//! GitHub's published example, and prints what previewd recorded.

use anyhow::{Context, bail};
use previewd_e2e::fixtures::example;
use previewd_e2e::github::sign;
use sqlx::Connection;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "demo-webhook-secret";

/// Stops previewd when the demo ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        // SIGTERM for a graceful stop; kill if it does not go within a few seconds.
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn say(text: &str) {
    println!("\n==> {text}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let binary =
        std::env::var("PREVIEWD_BIN").context("PREVIEWD_BIN must name the previewd binary (e2e/demo.sh sets it)")?;
    let dir = tempfile::tempdir()?;
    let database = dir.path().join("previewd.db");
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");

    say(&format!("starting `previewd serve` on {base} with the embedded SQLite store {}", database.display()));
    let child = Command::new(&binary)
        .arg("serve")
        .env_remove("PREVIEWD_BIN")
        .env("PREVIEWD_LISTEN", format!("127.0.0.1:{port}"))
        .env("PREVIEWD_DATABASE_URL", format!("sqlite://{}", database.display()))
        .env("PREVIEWD_WEBHOOK_SECRETS", SECRET)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {binary}"))?;
    let mut previewd = Running(child);
    let http = reqwest::Client::new();
    wait_ready(&http, &base, &mut previewd.0).await?;

    let payload = example("pull_request", "opened")?;
    let body = serde_json::to_vec(&payload)?;
    let delivery = uuid::Uuid::new_v4().to_string();
    say(&format!(
        "sending a signed `pull_request` `opened` delivery ({} bytes) for {} #{}",
        body.len(),
        payload["repository"]["full_name"].as_str().unwrap_or("?"),
        payload["number"]
    ));
    let started = Instant::now();
    let response = http
        .post(format!("{base}/webhooks/github"))
        .header("X-GitHub-Event", "pull_request")
        .header("X-GitHub-Delivery", &delivery)
        .header("X-GitHub-Hook-ID", "1")
        .header("X-Hub-Signature-256", sign(SECRET, &body))
        .header("Content-Type", "application/json")
        .body(body.clone())
        .send()
        .await?;
    let status = response.status();
    println!("    answer after {:?}: {} {}", started.elapsed(), status, response.text().await?);
    if status != 202 {
        bail!("previewd refused the delivery");
    }

    say("sending the same delivery again (GitHub redelivers with the same id)");
    let again = http
        .post(format!("{base}/webhooks/github"))
        .header("X-GitHub-Event", "pull_request")
        .header("X-GitHub-Delivery", &delivery)
        .header("X-GitHub-Hook-ID", "1")
        .header("X-Hub-Signature-256", sign(SECRET, &body))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await?;
    println!("    answer: {} {}", again.status(), again.text().await?);

    say("sending a delivery with a wrong signature");
    let forged = http
        .post(format!("{base}/webhooks/github"))
        .header("X-GitHub-Event", "pull_request")
        .header("X-GitHub-Delivery", "forged")
        .header("X-Hub-Signature-256", sign("not the secret", b"{}"))
        .body("{}")
        .send()
        .await?;
    println!("    answer: {} {}", forged.status(), forged.text().await?);

    say("what previewd recorded");
    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", database.display())).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let open: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')")
            .fetch_one(&mut db)
            .await?;
        if open == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the delivery's job did not finish within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deliveries: Vec<(String, String, Option<String>, String)> =
        sqlx::query_as("SELECT delivery_id, event, action, outcome FROM deliveries ORDER BY id")
            .fetch_all(&mut db)
            .await?;
    for (id, event, action, outcome) in deliveries {
        println!("    delivery {id}: {event}/{} -> {outcome}", action.unwrap_or_default());
    }
    let jobs: Vec<(i64, String, String, i64)> =
        sqlx::query_as("SELECT id, kind, state, attempts FROM jobs ORDER BY id").fetch_all(&mut db).await?;
    for (id, kind, state, attempts) in jobs {
        println!("    job {id}: {kind} {state} after {attempts} attempt(s)");
    }
    let environments: Vec<(String, String, i64, String, String)> =
        sqlx::query_as("SELECT repo_owner, repo_name, pr_number, head_sha, state FROM environments")
            .fetch_all(&mut db)
            .await?;
    for (owner, name, number, sha, state) in environments {
        println!("    environment {owner}/{name}#{number} at {}: {state}", &sha[..sha.len().min(12)]);
    }
    let metrics = http.get(format!("{base}/metrics")).send().await?.text().await?;
    say("metrics (excerpt)");
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("previewd_webhook_deliveries_total") || l.starts_with("previewd_jobs{"))
    {
        println!("    {line}");
    }
    say("stopping previewd (SIGTERM)");
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_ready(http: &reqwest::Client, base: &str, previewd: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = previewd.try_wait()? {
            bail!("previewd exited during start-up ({status}); its error is above");
        }
        if let Ok(response) = http.get(format!("{base}/readyz")).send().await
            && response.status() == 200
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("previewd did not become ready within 30 s")
}
