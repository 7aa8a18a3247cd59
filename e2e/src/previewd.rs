//! The `previewd` binary started as a user starts it (`previewd serve`, settings in `PREVIEWD_*`
//! variables), for end-to-end tests, the demo and benchmarks. It can be killed without warning
//! and started again on the same port and database.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

pub struct Previewd {
    binary: PathBuf,
    env: Vec<(String, String)>,
    /// `http://127.0.0.1:<port>`
    pub base: String,
    log: PathBuf,
    child: Option<tokio::process::Child>,
}

/// A free loopback port.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Previewd {
    /// Starts `binary serve` with `env` (plus `PREVIEWD_LISTEN` on a free port), logging to
    /// `log`, and waits until it answers `/readyz`.
    pub async fn start(binary: &Path, env: &[(String, String)], log: &Path) -> anyhow::Result<Previewd> {
        let base = format!("http://127.0.0.1:{}", free_port()?);
        let mut previewd =
            Previewd { binary: binary.to_owned(), env: env.to_vec(), base, log: log.to_owned(), child: None };
        previewd.spawn().await?;
        Ok(previewd)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let listen = self.base.trim_start_matches("http://").to_owned();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = tokio::process::Command::new(&self.binary)
            .arg("serve")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("PREVIEWD_LISTEN", &listen)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("previewd exited with {status} before it was ready; its log:\n{}", self.log_tail(40));
            }
            if http.get(format!("{}/readyz", self.base)).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("previewd was not ready within 60 s; its log:\n{}", self.log_tail(40));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no shutdown, no hand-back of running jobs.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("killing previewd")?;
        }
        Ok(())
    }

    /// Starts it again with the same settings, port and log.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        self.spawn().await
    }

    /// SIGTERM, then waits for it to exit.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
            }
            tokio::time::timeout(Duration::from_secs(60), child.wait())
                .await
                .context("previewd did not stop within 60 s of SIGTERM")??;
        }
        Ok(())
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Its whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
