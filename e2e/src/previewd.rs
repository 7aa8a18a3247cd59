//! The `previewd` binary started as a user starts it (`previewd serve`, settings in `PREVIEWD_*`
//! variables), for end-to-end tests, the demo and benchmarks. It can be killed without warning
//! and started again on the same port and database.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

pub struct Previewd {
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Set by [`Previewd::start_exactly`]: the working directory, and nothing inherited from the
    /// test's environment.
    exactly: Option<PathBuf>,
    /// `http://127.0.0.1:<port>`
    pub base: String,
    log: PathBuf,
    child: Option<tokio::process::Child>,
}

/// Resident memory of the process, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_bytes: u64,
    /// `VmHWM`: the most it has been resident at once.
    pub peak_rss_bytes: u64,
}

/// A free loopback port.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Previewd {
    /// Starts `binary serve` with `env` (plus `PREVIEWD_LISTEN` on a free port), logging to
    /// `log`, and waits until it answers `/readyz`.
    pub async fn start(binary: &Path, env: &[(String, String)], log: &Path) -> anyhow::Result<Previewd> {
        Self::start_at(binary, env, log, &format!("http://127.0.0.1:{}", free_port()?)).await
    }

    /// [`Previewd::start`] listening at `base` (`http://127.0.0.1:PORT`), for settings that must
    /// name previewd's own address before it starts (the dashboard's `public_url`).
    pub async fn start_at(binary: &Path, env: &[(String, String)], log: &Path, base: &str) -> anyhow::Result<Previewd> {
        let base = base.to_owned();
        let mut previewd = Previewd {
            binary: binary.to_owned(),
            args: vec!["serve".to_owned()],
            env: env.to_vec(),
            exactly: None,
            base,
            log: log.to_owned(),
            child: None,
        };
        previewd.spawn().await?;
        Ok(previewd)
    }

    /// Starts `binary args` in `cwd` with `env` and no other variable of the test's (but
    /// `PREVIEWD_LISTEN`, on a free loopback port), and waits until it answers `/readyz`: previewd
    /// as an example or a pod runs it, with nothing the test process happens to have set.
    pub async fn start_exactly(
        binary: &Path,
        args: &[String],
        env: &[(String, String)],
        cwd: &Path,
        log: &Path,
    ) -> anyhow::Result<Previewd> {
        let base = format!("http://127.0.0.1:{}", free_port()?);
        let mut previewd = Previewd {
            binary: binary.to_owned(),
            args: args.to_vec(),
            env: env.to_vec(),
            exactly: Some(cwd.to_owned()),
            base,
            log: log.to_owned(),
            child: None,
        };
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
        let mut command = tokio::process::Command::new(&self.binary);
        if let Some(cwd) = &self.exactly {
            command.env_clear().current_dir(cwd);
        }
        let child = command
            .args(&self.args)
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
        self.terminate(Duration::from_secs(60)).await.map(drop)
    }

    /// SIGTERM, then waits up to `limit` for it to exit; its exit status, `None` if it was not
    /// running.
    pub async fn terminate(&mut self, limit: Duration) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let Some(mut child) = self.child.take() else { return Ok(None) };
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        }
        let status = tokio::time::timeout(limit, child.wait())
            .await
            .with_context(|| format!("previewd did not stop within {} s of SIGTERM", limit.as_secs_f64()))??;
        Ok(Some(status))
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    /// Its memory now and at its peak, from `/proc/<pid>/status` (Linux).
    pub fn memory(&self) -> anyhow::Result<Memory> {
        let pid = self.pid().context("previewd is not running")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/<pid>/status")?;
        let kib = |field: &str| -> anyhow::Result<u64> {
            let line = status.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field} line"))?;
            let value = line[field.len()..].trim().trim_end_matches("kB").trim();
            Ok(value.parse::<u64>().with_context(|| format!("reading {line}"))? * 1024)
        };
        Ok(Memory { rss_bytes: kib("VmRSS:")?, peak_rss_bytes: kib("VmHWM:")? })
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
