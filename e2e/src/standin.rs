//! The GitHub stand-in (`e2e/github-standin/server.mjs`): a stateful fake of the parts of
//! GitHub's REST API previewd uses, checking every request against GitHub's OpenAPI
//! description. Each test starts its own on a free port; it stops when the handle is dropped.

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The App the stand-in plays: previewd authenticates as it with this key.
#[derive(Debug, Clone, Deserialize)]
pub struct App {
    pub app_id: u64,
    pub slug: String,
    pub private_key_pem: String,
}

/// What a delivery sent by the stand-in ended with.
#[derive(Debug, Clone, Deserialize)]
pub struct Delivered {
    pub id: i64,
    pub guid: String,
    pub status_code: u16,
    pub status: String,
}

pub struct GitHubStandIn {
    url: String,
    http: reqwest::Client,
    _process: tokio::process::Child,
}

fn server_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("github-standin/server.mjs")
}

impl GitHubStandIn {
    /// Starts a stand-in on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let modules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node_modules/@octokit/openapi");
        if !modules.is_dir() {
            bail!(
                "the GitHub stand-in needs e2e/node_modules (GitHub's OpenAPI description and ajv): \
                 run `npm ci --prefix e2e`; e2e/test.sh does"
            );
        }
        let mut process = tokio::process::Command::new("node")
            .arg(server_path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the GitHub stand-in with `node` (is Node.js installed?)")?;
        let stdout = process.stdout.take().context("the stand-in's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(std::time::Duration::from_secs(60), lines.next_line())
            .await
            .context("the GitHub stand-in did not print its URL within 60 s")?
            .context("reading the stand-in's URL")?
            .context("the GitHub stand-in exited before listening")?;
        // Keep draining stdout so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(GitHubStandIn { url, http: reqwest::Client::new(), _process: process })
    }

    /// The API base URL previewd is configured with (`github.api_url`).
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .request(method.clone(), format!("{}/_standin/{path}", self.url))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("{method} /_standin/{path}"))?;
        let status = response.status();
        let value: Value = response.json().await.with_context(|| format!("{method} /_standin/{path}: body"))?;
        if !status.is_success() {
            bail!("{method} /_standin/{path} answered {status}: {value}");
        }
        Ok(value)
    }

    pub async fn app(&self) -> anyhow::Result<App> {
        Ok(serde_json::from_value(self.control(reqwest::Method::GET, "app", json!({})).await?)?)
    }

    /// Sets `webhook_url`, `webhook_secret`, `pats` ([{token, login}]), `token_ttl_seconds`.
    pub async fn configure(&self, settings: Value) -> anyhow::Result<()> {
        self.control(reqwest::Method::PUT, "config", settings).await.map(drop)
    }

    /// A repository, installed on `installation` (or on none).
    pub async fn add_repo(&self, id: i64, owner: &str, name: &str, installation: Option<i64>) -> anyhow::Result<()> {
        let body = json!({"id": id, "owner": owner, "name": name, "installation_id": installation});
        self.control(reqwest::Method::POST, "repos", body).await.map(drop)
    }

    /// Puts `content` at `path` in the repository at commit `sha` (`None` removes it).
    pub async fn put_file(
        &self,
        owner: &str,
        repo: &str,
        sha: &str,
        path: &str,
        content: Option<&str>,
    ) -> anyhow::Result<()> {
        let body = json!({"owner": owner, "repo": repo, "ref": sha, "path": path, "content": content});
        self.control(reqwest::Method::PUT, "files", body).await.map(drop)
    }

    pub async fn set_permission(&self, owner: &str, repo: &str, login: &str, permission: &str) -> anyhow::Result<()> {
        let body = json!({"owner": owner, "repo": repo, "login": login, "permission": permission});
        self.control(reqwest::Method::PUT, "permissions", body).await.map(drop)
    }

    /// Opens a pull request: `pull` holds owner, repo, number, head_sha and optionally user,
    /// head_ref, draft, labels, fork.
    pub async fn open_pull(&self, pull: Value) -> anyhow::Result<Value> {
        self.control(reqwest::Method::POST, "pulls", pull).await
    }

    /// Changes a pull request (state, merged, head_sha, labels, draft).
    pub async fn update_pull(&self, owner: &str, repo: &str, number: i64, change: Value) -> anyhow::Result<Value> {
        self.control(reqwest::Method::PATCH, &format!("pulls/{owner}/{repo}/{number}"), change).await
    }

    /// A comment written by `login` (not by previewd); returns its id.
    pub async fn comment_as(
        &self,
        owner: &str,
        repo: &str,
        number: i64,
        login: &str,
        body: &str,
    ) -> anyhow::Result<i64> {
        let body = json!({"owner": owner, "repo": repo, "issue_number": number, "user": login, "body": body});
        let comment = self.control(reqwest::Method::POST, "comments", body).await?;
        comment["id"].as_i64().context("comment id")
    }

    /// A check run of the repository's CI on `sha` (`conclusion` None: still running).
    pub async fn add_check_run(
        &self,
        owner: &str,
        repo: &str,
        sha: &str,
        name: &str,
        conclusion: Option<&str>,
    ) -> anyhow::Result<()> {
        let status = if conclusion.is_some() { "completed" } else { "in_progress" };
        let body = json!({"owner": owner, "repo": repo, "head_sha": sha, "name": name, "status": status, "conclusion": conclusion});
        self.control(reqwest::Method::POST, "check-runs", body).await.map(drop)
    }

    /// Signs `payload` and sends it to the configured webhook URL as a delivery of `event`.
    pub async fn deliver(&self, event: &str, payload: &Value) -> anyhow::Result<Delivered> {
        let body = json!({"event": event, "payload": payload});
        Ok(serde_json::from_value(self.control(reqwest::Method::POST, "deliver", body).await?)?)
    }

    /// The next `count` API requests matching `method` and `path_regex` get `status` instead
    /// (`rate_limited`: a 403 with an exhausted rate limit resetting in `retry_after_seconds`).
    pub async fn fault(&self, fault: Value) -> anyhow::Result<()> {
        self.control(reqwest::Method::POST, "faults", fault).await.map(drop)
    }

    pub async fn clear_faults(&self) -> anyhow::Result<()> {
        self.control(reqwest::Method::DELETE, "faults", json!({})).await.map(drop)
    }

    /// Everything the stand-in holds: repos, pulls, comments (with `edits`), reactions,
    /// deployments (with `statuses` in order), check_runs (with `history`), deliveries,
    /// tokens_issued per installation.
    pub async fn state(&self) -> anyhow::Result<Value> {
        self.control(reqwest::Method::GET, "state", json!({})).await
    }

    /// Every API request received: method, path, query, status, auth, if_none_match.
    pub async fn requests(&self) -> anyhow::Result<Vec<Value>> {
        Ok(serde_json::from_value(self.control(reqwest::Method::GET, "requests", json!({})).await?)?)
    }

    /// Requests that did not fit GitHub's OpenAPI description.
    pub async fn violations(&self) -> anyhow::Result<Vec<Value>> {
        Ok(serde_json::from_value(self.control(reqwest::Method::GET, "violations", json!({})).await?)?)
    }

    /// Fails, listing them, if any request did not fit GitHub's OpenAPI description.
    pub async fn assert_no_violations(&self) -> anyhow::Result<()> {
        let violations = self.violations().await?;
        if !violations.is_empty() {
            bail!(
                "{} request(s) to the GitHub stand-in do not fit GitHub's OpenAPI description:\n{}",
                violations.len(),
                violations.iter().map(Value::to_string).collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }

    /// The comments on pull request `number` of repository `repo_id`.
    pub async fn comments(&self, number: i64) -> anyhow::Result<Vec<Value>> {
        let state = self.state().await?;
        Ok(state["comments"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["issue_number"] == number)
            .collect())
    }

    /// The deployments (newest last) with their statuses.
    pub async fn deployments(&self) -> anyhow::Result<Vec<Value>> {
        Ok(self.state().await?["deployments"].as_array().cloned().unwrap_or_default())
    }
}
