//! The GitHub stand-in (`e2e/github-standin/server.mjs`): a stateful fake of the parts of
//! GitHub's REST API previewd uses, which checks every request against GitHub's OpenAPI
//! description (`@octokit/openapi`) and records the ones that do not fit. Each test starts its
//! own, on a free loopback port; it stops when the handle is dropped.
//!
//! The control calls take and return JSON (`serde_json::Value`) on purpose: their shapes are
//! documented once, in `e2e/github-standin/README.md`, and a test states only the fields it
//! cares about.

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The OAuth client of the stand-in's App, as it starts (`configure` with `client_id` and
/// `client_secret` changes them): what previewd's dashboard signs people in with.
pub const CLIENT_ID: &str = "Iv1.previewd-test";
pub const CLIENT_SECRET: &str = "standin-client-secret";

/// The App the stand-in plays: previewd authenticates as it with this id and key.
#[derive(Debug, Clone, Deserialize)]
pub struct App {
    pub app_id: u64,
    pub slug: String,
    /// The login of what the App writes with an installation token (`<slug>[bot]`).
    pub bot_login: String,
    /// PKCS#1 PEM, as GitHub hands out an App's private key.
    pub private_key_pem: String,
}

impl App {
    /// An App JWT (RS256) issued `iat_offset` seconds from now and expiring `ttl` seconds after
    /// that, for tests that call the App endpoints themselves (or check that a bad one is
    /// refused).
    pub fn jwt(&self, iat_offset: i64, ttl: i64) -> anyhow::Result<String> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        let iat = i64::try_from(now)? + iat_offset;
        let claims = json!({"iss": self.app_id.to_string(), "iat": iat, "exp": iat + ttl});
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(self.private_key_pem.as_bytes())?;
        Ok(jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &claims, &key)?)
    }
}

/// What a delivery sent by the stand-in ended with.
#[derive(Debug, Clone, Deserialize)]
pub struct Delivered {
    /// The delivery's id in `GET /app/hook/deliveries`.
    pub id: i64,
    /// `X-GitHub-Delivery`: the same for a delivery and its redeliveries.
    pub guid: String,
    /// The receiver's HTTP status; 0 when it could not be reached.
    pub status_code: u16,
    /// GitHub's words: `OK`, `Invalid HTTP Response: 503`, `failed to connect to host`,
    /// `timed out`.
    pub status: String,
}

/// Another name of [`Delivered`], for callers that read "the result of a delivery".
pub type DeliveryResult = Delivered;

/// A running stand-in. Tests end with [`GitHubStandIn::assert_no_violations`]: a request that
/// GitHub would not accept is answered 422 and only shows up there or in previewd's retries.
pub struct GitHubStandIn {
    url: String,
    http: reqwest::Client,
    process: tokio::process::Child,
    /// Held open: the stand-in (started with `--exit-with-stdin`) ends when it closes, so a test
    /// process killed outright leaves no node process behind.
    _stdin: Option<tokio::process::ChildStdin>,
}

fn e2e_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

impl GitHubStandIn {
    /// Starts a stand-in on a free loopback port (about a second: it loads GitHub's API
    /// description).
    pub async fn start() -> anyhow::Result<Self> {
        let modules = e2e_dir().join("node_modules");
        for package in ["@octokit/openapi", "ajv", "ajv-formats"] {
            if !modules.join(package).join("package.json").is_file() {
                bail!(
                    "the GitHub stand-in needs e2e/node_modules/{package} (GitHub's OpenAPI \
                     description and its validator): run `npm ci --prefix e2e`; e2e/test.sh does"
                );
            }
        }
        let mut process = tokio::process::Command::new("node")
            .arg(e2e_dir().join("github-standin/server.mjs"))
            .arg("--exit-with-stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the GitHub stand-in with `node`: is Node.js (20 or later) installed and on PATH?")?;
        let stdin = process.stdin.take();
        let stdout = process.stdout.take().context("the stand-in's stdout")?;
        let stderr = process.stderr.take().context("the stand-in's stderr")?;
        // Its error output goes to the test's (shown when a test fails) and is kept for the
        // error below if it dies while starting.
        let said = Arc::new(Mutex::new(Vec::<String>::new()));
        let kept = Arc::clone(&said);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("{line}");
                if let Ok(mut kept) = kept.lock()
                    && kept.len() < 50
                {
                    kept.push(line);
                }
            }
        });
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
        let url = match first {
            Ok(Ok(Some(line))) if line.starts_with("http://") => line,
            other => {
                // Let the error output arrive before quoting it.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let output = said.lock().map(|l| l.join("\n")).unwrap_or_default();
                let what = match other {
                    Err(_) => "did not print its URL within 60 s".to_owned(),
                    Ok(Ok(Some(line))) => format!("printed {line:?} instead of its URL"),
                    Ok(Ok(None)) => "exited before listening".to_owned(),
                    Ok(Err(e)) => format!("could not be read: {e}"),
                };
                bail!("the GitHub stand-in {what}; its output:\n{output}");
            }
        };
        // Keep draining stdout so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(GitHubStandIn { url, http: reqwest::Client::new(), process, _stdin: stdin })
    }

    /// The API base URL previewd is configured with (`github.api_url`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The stand-in's process id (to measure it, or to see it in `ps`).
    pub fn pid(&self) -> Option<u32> {
        self.process.id()
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

    /// Changes settings (the others stay): `webhook_url`, `webhook_secret`, `pats`
    /// (`[{token, login}]`), `token_ttl_seconds`, `rate_limit` (per token and hour),
    /// `check_responses` (also check the stand-in's own answers against the description),
    /// `client_id`, `client_secret`, `oauth_user` (who the browser is signed in to GitHub as).
    pub async fn configure(&self, settings: Value) -> anyhow::Result<()> {
        self.control(reqwest::Method::PUT, "config", settings).await.map(drop)
    }

    /// `PUT /_standin/<what>` with `body`, for the control routes without a method of their own
    /// (`org_members`, `team_members`: see the stand-in's README).
    pub async fn put_control(&self, what: &str, body: Value) -> anyhow::Result<()> {
        self.control(reqwest::Method::PUT, what, body).await.map(drop)
    }

    /// Forgets everything but the App's key: repositories, pulls, comments, tokens, deliveries,
    /// the request log, violations, faults and settings.
    pub async fn reset(&self) -> anyhow::Result<()> {
        self.control(reqwest::Method::POST, "reset", json!({})).await.map(drop)
    }

    /// A public repository, installed on `installation` (or on none). Installations exist by
    /// having repositories.
    pub async fn add_repo(&self, id: i64, owner: &str, name: &str, installation: Option<i64>) -> anyhow::Result<()> {
        self.add_repo_with(json!({"id": id, "owner": owner, "name": name, "installation_id": installation})).await
    }

    /// A repository with every field of `POST /_standin/repos`: `id`, `owner`, `name`,
    /// `installation_id`, `private`, `default_branch`.
    pub async fn add_repo_with(&self, repo: Value) -> anyhow::Result<()> {
        self.control(reqwest::Method::POST, "repos", repo).await.map(drop)
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

    /// `login`'s role on the repository: `admin`, `maintain`, `write`, `triage`, `read`, `none`,
    /// or `not-a-user` (GitHub answers 404). Without one, a user has `read` on a public
    /// repository and `none` on a private one.
    pub async fn set_permission(&self, owner: &str, repo: &str, login: &str, permission: &str) -> anyhow::Result<()> {
        let body = json!({"owner": owner, "repo": repo, "login": login, "permission": permission});
        self.control(reqwest::Method::PUT, "permissions", body).await.map(drop)
    }

    /// Opens a pull request: `pull` holds owner, repo, number, head_sha and optionally user,
    /// head_ref, base_ref, title, body, draft, labels (names), fork (the head is in a fork
    /// owned by `user`, or by `fork_owner`).
    pub async fn open_pull(&self, pull: Value) -> anyhow::Result<Value> {
        self.control(reqwest::Method::POST, "pulls", pull).await
    }

    /// Changes a pull request (state, merged, head_sha, labels, draft, title...).
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

    /// A check run of the repository's CI (the GitHub Actions App) on `sha`; `conclusion`
    /// None: still running.
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

    /// A commit status of the repository's CI on `sha`: `state` is `error`, `failure`,
    /// `pending` or `success`.
    pub async fn add_status(
        &self,
        owner: &str,
        repo: &str,
        sha: &str,
        context: &str,
        state: &str,
    ) -> anyhow::Result<()> {
        let body = json!({"owner": owner, "repo": repo, "sha": sha, "context": context, "state": state});
        self.control(reqwest::Method::POST, "statuses", body).await.map(drop)
    }

    /// Signs `payload` and sends it to the configured webhook URL as a delivery of `event`; the
    /// installation is the payload's `installation.id`.
    pub async fn deliver(&self, event: &str, payload: &Value) -> anyhow::Result<Delivered> {
        self.deliver_with(json!({"event": event, "payload": payload})).await
    }

    /// As [`Self::deliver`], recorded for `installation` whatever the payload says.
    pub async fn deliver_for(&self, event: &str, payload: &Value, installation: i64) -> anyhow::Result<Delivered> {
        self.deliver_with(json!({"event": event, "payload": payload, "installation_id": installation})).await
    }

    /// Sends `payload` again under an earlier delivery's `guid`, as GitHub does when a delivery
    /// is redelivered.
    pub async fn deliver_as(&self, guid: &str, event: &str, payload: &Value) -> anyhow::Result<Delivered> {
        self.deliver_with(json!({"event": event, "payload": payload, "guid": guid, "redelivery": true})).await
    }

    async fn deliver_with(&self, body: Value) -> anyhow::Result<Delivered> {
        Ok(serde_json::from_value(self.control(reqwest::Method::POST, "deliver", body).await?)?)
    }

    /// The next `count` API requests matching `method` and `path_regex` get `status` (500, 502,
    /// 503, 403, 429) instead, with `retry-after: retry_after_seconds` if given; `rate_limited`
    /// makes it a primary rate limit (403, `x-ratelimit-remaining: 0`, reset in
    /// `retry_after_seconds`).
    pub async fn fault(&self, fault: Value) -> anyhow::Result<()> {
        self.control(reqwest::Method::POST, "faults", fault).await.map(drop)
    }

    pub async fn clear_faults(&self) -> anyhow::Result<()> {
        self.control(reqwest::Method::DELETE, "faults", json!({})).await.map(drop)
    }

    /// Everything the stand-in holds: repos, files, permissions, pulls, comments (with `edits`
    /// and `history`), reactions, deployments (with `statuses` in order), check_runs (with
    /// `history`), statuses, deliveries (newest first), tokens_issued per installation,
    /// rate_limits.
    pub async fn state(&self) -> anyhow::Result<Value> {
        self.control(reqwest::Method::GET, "state", json!({})).await
    }

    /// Every API request received, in order: method, path, query, status, auth (`jwt`,
    /// `installation`, `pat`, `none`), installation_id, operation, if_none_match, fault,
    /// violation, ms.
    pub async fn requests(&self) -> anyhow::Result<Vec<Value>> {
        Ok(serde_json::from_value(self.control(reqwest::Method::GET, "requests", json!({})).await?)?)
    }

    /// Requests that did not fit GitHub's OpenAPI description (`kind: request`), documented
    /// operations the stand-in lacks (`unimplemented`), its own errors (`stand-in`), and with
    /// `check_responses`, answers that do not fit (`response`).
    pub async fn violations(&self) -> anyhow::Result<Vec<Value>> {
        Ok(serde_json::from_value(self.control(reqwest::Method::GET, "violations", json!({})).await?)?)
    }

    /// Fails, listing them, if any request did not fit GitHub's OpenAPI description.
    pub async fn assert_no_violations(&self) -> anyhow::Result<()> {
        let violations = self.violations().await?;
        if !violations.is_empty() {
            let list: Vec<String> = violations
                .iter()
                .map(|v| {
                    let kind = v["kind"].as_str().unwrap_or("?");
                    let method = v["method"].as_str().unwrap_or("?");
                    let path = v["path"].as_str().unwrap_or("?");
                    let reason = v["reason"].as_str().unwrap_or("?");
                    format!("  [{kind}] {method} {path}: {reason}")
                })
                .collect();
            bail!(
                "{} request(s) to the GitHub stand-in do not fit GitHub's OpenAPI description:\n{}",
                violations.len(),
                list.join("\n")
            );
        }
        Ok(())
    }

    /// The comments on issue or pull request `number` (of any repository), oldest first.
    pub async fn comments(&self, number: i64) -> anyhow::Result<Vec<Value>> {
        Ok(self.listed("comments").await?.into_iter().filter(|c| c["issue_number"] == number).collect())
    }

    /// The deployments (oldest first) with their statuses in order.
    pub async fn deployments(&self) -> anyhow::Result<Vec<Value>> {
        self.listed("deployments").await
    }

    /// Every check run, the CI's and the App's (oldest first), each with its `history`.
    pub async fn check_runs(&self) -> anyhow::Result<Vec<Value>> {
        self.listed("check_runs").await
    }

    /// How many installation tokens were issued for `installation`.
    pub async fn tokens_issued(&self, installation: i64) -> anyhow::Result<u64> {
        Ok(self.state().await?["tokens_issued"][installation.to_string()].as_u64().unwrap_or(0))
    }

    async fn listed(&self, key: &str) -> anyhow::Result<Vec<Value>> {
        let mut state = self.state().await?;
        serde_json::from_value(state[key].take()).with_context(|| format!("state.{key}"))
    }
}
