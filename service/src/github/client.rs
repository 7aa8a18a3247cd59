//! previewd's GitHub REST client: authentication through octocrab (App JWT and cached
//! installation tokens, or a personal access token; any API base URL for GitHub Enterprise
//! Server), and around it what a well-behaved integration owes GitHub: rate limits honoured,
//! mutating calls serial per installation, 5xx and network errors classified as worth a retry.
//!
//! Calls go through octocrab's untyped `_get`/`_post`/`_patch`, because previewd needs the
//! response headers (rate limits, `ETag`, `Link`) and reads only the few fields it uses.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use octocrab::Octocrab;
use previewd_environments::model::InstallationId;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How previewd authenticates to GitHub.
pub enum Credentials {
    /// A GitHub App: its id and private key (PEM).
    App { id: u64, private_key: SecretString },
    /// A personal access token (small setups: no check runs, no redelivery of missed deliveries).
    Token(SecretString),
}

/// Why a GitHub call failed. Messages name the call and GitHub's own message, never a token.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("GitHub rate limit reached ({what}); retrying in {}s", retry_after.as_secs())]
    RateLimited { what: String, retry_after: Duration },
    #[error("GitHub answered {status} to {call}: {message}")]
    Unavailable { call: String, status: u16, message: String },
    #[error("cannot reach GitHub for {call}: {message}")]
    Transport { call: String, message: String },
    #[error("GitHub refused {call} ({status}): {message}")]
    Refused { call: String, status: u16, message: String },
    #[error("not found on GitHub: {call}")]
    NotFound { call: String },
    #[error("GitHub's answer to {call} is not what its API documents: {message}")]
    Decode { call: String, message: String },
    /// The answer is larger than previewd reads of it; it was not read further.
    #[error("GitHub's answer to {call} is larger than the {limit} bytes previewd reads of it")]
    TooLarge { call: String, limit: usize },
    #[error("GitHub App private key is not a valid RSA PEM key: {0}")]
    Key(String),
    #[error("invalid GitHub API URL `{url}`: {message}")]
    BaseUrl { url: String, message: String },
    #[error("previewd has no GitHub App installation for {0}; install the App on it")]
    NoInstallation(String),
    #[error("{0} needs a GitHub App; previewd runs with a personal access token")]
    AppOnly(&'static str),
}

impl GitHubError {
    /// Whether trying again later can succeed (GitHub or the network was down, a limit hit).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Unavailable { .. } | Self::Transport { .. } => true,
            // An expired or revoked credential is fixed by an operator while reports wait.
            Self::Refused { status, .. } => *status == 401,
            _ => false,
        }
    }

    /// How long to wait before the next call, when GitHub said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// A successful answer.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json<T: DeserializeOwned>(&self, call: &str) -> Result<T, GitHubError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| GitHubError::Decode { call: call.to_owned(), message: e.to_string() })
    }

    /// The `rel="next"` page of a paginated listing, as a path relative to the API base.
    pub fn next_page(&self) -> Option<String> {
        let link = self.headers.get(http::header::LINK)?.to_str().ok()?;
        link.split(',').find(|part| part.contains("rel=\"next\"")).and_then(|part| {
            let url = part.trim().strip_prefix('<')?.split('>').next()?;
            let uri: http::Uri = url.parse().ok()?;
            uri.path_and_query().map(|pq| pq.as_str().to_owned())
        })
    }

    pub fn etag(&self) -> Option<String> {
        self.headers.get(http::header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }
}

/// Who a call is made as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum As {
    /// The App itself (JWT): installations, hook deliveries.
    App,
    /// An installation (its token), or the personal access token.
    Installation(Option<InstallationId>),
}

/// The GitHub client. Cheap to share behind an `Arc`.
pub struct GitHub {
    root: Arc<Octocrab>,
    app: bool,
    /// One client per installation: each caches its own installation token. Shared, never
    /// cloned: a cloned octocrab client copies the token cache instead of sharing it.
    installations: Mutex<HashMap<i64, Arc<Octocrab>>>,
    /// Content-creating calls of one installation go one at a time (GitHub's secondary limits
    /// punish concurrent mutations).
    serial: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    /// After a rate-limit answer, the calls that limit covers wait: per caller and per limit,
    /// so one installation's limit never holds up another's calls.
    pauses: Mutex<Pauses>,
}

/// Whose budget a call spends: GitHub counts rate limits per App (its JWTs), per installation
/// (its tokens) and per user (a personal access token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Caller {
    App,
    Installation(i64),
    Token,
}

/// Which of GitHub's limits an answer reported. They are counted and reset apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// The caller's hourly budget is spent (`x-ratelimit-remaining: 0`): every call of the
    /// caller waits for `x-ratelimit-reset`.
    Primary,
    /// A secondary limit hit by a read (too many requests at once or per minute): every call of
    /// the caller waits `retry-after`, or a minute.
    Secondary,
    /// A secondary limit hit by a call that creates content (GitHub counts those apart, and
    /// comment floods trip it): the caller's writes wait; its reads go on.
    Writes,
}

impl Limit {
    fn covers(self, method: &Method) -> bool {
        match self {
            Limit::Primary | Limit::Secondary => true,
            Limit::Writes => *method != Method::GET,
        }
    }
}

/// The rate-limit pauses in force, by caller and limit.
#[derive(Debug, Default)]
struct Pauses(HashMap<(Caller, Limit), Instant>);

impl Pauses {
    /// How long a `method` call of `caller` must still wait, if at all.
    fn wait(&self, caller: Caller, method: &Method, now: Instant) -> Option<Duration> {
        self.0
            .iter()
            .filter(|((who, limit), until)| *who == caller && limit.covers(method) && **until > now)
            .map(|(_, until)| *until - now)
            .max()
    }

    /// Pauses what `limit` covers for `caller` until `until` (a later pause already in force
    /// stays); pauses that are over are forgotten.
    fn pause(&mut self, caller: Caller, limit: Limit, until: Instant, now: Instant) {
        self.0.retain(|_, at| *at > now);
        let at = self.0.entry((caller, limit)).or_insert(until);
        *at = (*at).max(until);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl GitHub {
    pub fn new(api_url: &str, credentials: Credentials, timeout: Duration) -> Result<GitHub, GitHubError> {
        let bad_url = |message: String| GitHubError::BaseUrl { url: api_url.to_owned(), message };
        let builder = Octocrab::builder()
            .base_uri(api_url)
            .map_err(|e| bad_url(e.to_string()))?
            .set_connect_timeout(Some(timeout))
            .set_read_timeout(Some(timeout))
            .set_write_timeout(Some(timeout));
        let (builder, app) = match credentials {
            Credentials::App { id, private_key } => {
                let key = jsonwebtoken::EncodingKey::from_rsa_pem(private_key.expose_secret().as_bytes())
                    .map_err(|e| GitHubError::Key(e.to_string()))?;
                (builder.app(octocrab::models::AppId(id), key), true)
            }
            Credentials::Token(token) => (builder.personal_token(token.expose_secret().to_owned()), false),
        };
        let root = builder.build().map_err(|e| bad_url(e.to_string()))?;
        Ok(GitHub {
            root: Arc::new(root),
            app,
            installations: Mutex::new(HashMap::new()),
            serial: Mutex::new(HashMap::new()),
            pauses: Mutex::new(Pauses::default()),
        })
    }

    /// Whether previewd runs as a GitHub App (check runs and redelivery need one).
    pub fn is_app(&self) -> bool {
        self.app
    }

    fn caller(&self, who: As) -> Caller {
        match (who, self.app) {
            (_, false) => Caller::Token,
            (As::App, true) => Caller::App,
            (As::Installation(id), true) => Caller::Installation(id.map_or(0, |id| id.0)),
        }
    }

    fn client(&self, who: As) -> Result<Arc<Octocrab>, GitHubError> {
        match (who, self.app) {
            (_, false) | (As::App, true) => Ok(self.root.clone()),
            (As::Installation(None), true) => Err(GitHubError::NoInstallation("this repository".to_owned())),
            (As::Installation(Some(id)), true) => {
                let mut clients = lock(&self.installations);
                if let Some(client) = clients.get(&id.0) {
                    return Ok(client.clone());
                }
                let client =
                    self.root.installation(octocrab::models::InstallationId(id.0.unsigned_abs())).map_err(|e| {
                        GitHubError::Transport { call: format!("installation {id}"), message: e.to_string() }
                    })?;
                let client = Arc::new(client);
                clients.insert(id.0, client.clone());
                Ok(client)
            }
        }
    }

    pub async fn get(&self, who: As, path: &str) -> Result<Reply, GitHubError> {
        self.send(who, Method::GET, path, None, None).await
    }

    /// A GET whose answer is read up to `limit` bytes: [`GitHubError::TooLarge`] beyond, without
    /// buffering the rest (for content a repository controls).
    pub async fn get_bounded(&self, who: As, path: &str, limit: usize) -> Result<Reply, GitHubError> {
        self.send_bounded(who, Method::GET, path, None, None, Some(limit)).await
    }

    /// A conditional GET: `Ok(None)` when GitHub answers 304 Not Modified to `etag`.
    pub async fn get_if_changed(&self, who: As, path: &str, etag: Option<&str>) -> Result<Option<Reply>, GitHubError> {
        let reply = self.send(who, Method::GET, path, None, etag).await?;
        Ok((reply.status != StatusCode::NOT_MODIFIED).then_some(reply))
    }

    pub async fn post(&self, who: As, path: &str, body: &serde_json::Value) -> Result<Reply, GitHubError> {
        self.send(who, Method::POST, path, Some(body), None).await
    }

    /// A POST without a body (GitHub refuses bodies where its API defines none).
    pub async fn post_empty(&self, who: As, path: &str) -> Result<Reply, GitHubError> {
        self.send(who, Method::POST, path, None, None).await
    }

    pub async fn patch(&self, who: As, path: &str, body: &serde_json::Value) -> Result<Reply, GitHubError> {
        self.send(who, Method::PATCH, path, Some(body), None).await
    }

    pub async fn delete(&self, who: As, path: &str) -> Result<Reply, GitHubError> {
        self.send(who, Method::DELETE, path, None, None).await
    }

    /// Every page of a listing whose items are the answer itself (`[...]`) or its `items_key`.
    pub async fn list<T: DeserializeOwned>(
        &self,
        who: As,
        first: &str,
        items_key: Option<&str>,
    ) -> Result<Vec<T>, GitHubError> {
        let mut all = Vec::new();
        let mut next = Some(first.to_owned());
        while let Some(path) = next.take() {
            let reply = self.get(who, &path).await?;
            let mut items: Vec<T> = match items_key {
                None => reply.json(&path)?,
                Some(key) => {
                    let mut value: serde_json::Value = reply.json(&path)?;
                    serde_json::from_value(value.get_mut(key).map(serde_json::Value::take).unwrap_or_default())
                        .map_err(|e| GitHubError::Decode { call: path.clone(), message: e.to_string() })?
                }
            };
            all.append(&mut items);
            next = reply.next_page();
        }
        Ok(all)
    }

    async fn send(
        &self,
        who: As,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        etag: Option<&str>,
    ) -> Result<Reply, GitHubError> {
        self.send_bounded(who, method, path, body, etag, None).await
    }

    async fn send_bounded(
        &self,
        who: As,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        etag: Option<&str>,
        max_body: Option<usize>,
    ) -> Result<Reply, GitHubError> {
        let call = format!("{method} {}", path.split('?').next().unwrap_or(path));
        let caller = self.caller(who);
        if let Some(retry_after) = lock(&self.pauses).wait(caller, &method, Instant::now()) {
            return Err(GitHubError::RateLimited {
                what: "waiting for an earlier limit to reset".to_owned(),
                retry_after,
            });
        }
        let client = self.client(who)?;
        // Content-creating calls of one installation wait for each other.
        let _serial = if method == Method::GET {
            None
        } else {
            let key = match who {
                As::Installation(Some(id)) => id.0,
                _ => 0,
            };
            let gate = lock(&self.serial).entry(key).or_default().clone();
            Some(gate.lock_owned().await)
        };
        let transport = |e: octocrab::Error| GitHubError::Transport { call: call.clone(), message: describe(&e) };
        let response = match method {
            Method::GET => {
                let mut headers = HeaderMap::new();
                if let Some(tag) = etag.and_then(|t| HeaderValue::from_str(t).ok()) {
                    headers.insert(http::header::IF_NONE_MATCH, tag);
                }
                client._get_with_headers(path, Some(headers)).await.map_err(transport)?
            }
            Method::POST => client._post(path, body).await.map_err(transport)?,
            Method::PATCH => client._patch(path, body).await.map_err(transport)?,
            Method::DELETE => client._delete(path, body).await.map_err(transport)?,
            _ => client._put(path, body).await.map_err(transport)?,
        };
        let (parts, body) = response.into_parts();
        let body = match max_body {
            None => body.collect().await.map_err(transport)?.to_bytes(),
            Some(limit) => {
                let too_large = || GitHubError::TooLarge { call: call.clone(), limit };
                let declared = parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
                if declared.and_then(|v| v.parse::<u64>().ok()).is_some_and(|length| length > limit as u64) {
                    return Err(too_large());
                }
                match http_body_util::Limited::new(body, limit).collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(error) if error.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
                    Err(error) => return Err(GitHubError::Transport { call, message: error.to_string() }),
                }
            }
        };
        let status = parts.status;
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            return Ok(Reply { status, headers: parts.headers, body });
        }
        let message = error_message(&body);
        if let Some((retry_after, limit)) = rate_limited(status, &parts.headers, &message) {
            // A secondary limit met by a write is the content-creation limit: reads go on.
            let limit = if limit == Limit::Secondary && method != Method::GET { Limit::Writes } else { limit };
            let now = Instant::now();
            lock(&self.pauses).pause(caller, limit, now + retry_after, now);
            tracing::warn!(
                call,
                caller = ?caller,
                limit = ?limit,
                retry_after_s = retry_after.as_secs(),
                message,
                "GitHub rate limit reached; pausing the calls it covers"
            );
            return Err(GitHubError::RateLimited { what: message, retry_after });
        }
        Err(match status.as_u16() {
            404 => GitHubError::NotFound { call },
            code @ 500..=599 => GitHubError::Unavailable { call, status: code, message },
            code => GitHubError::Refused { call, status: code, message },
        })
    }
}

/// octocrab's error with its sources, so a connection failure says why.
fn describe(error: &octocrab::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// GitHub's `message` from an error body, or the start of the body.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
}

/// Whether an answer is a rate limit, which one, and how long to wait, following GitHub's
/// guidance: `x-ratelimit-remaining: 0` is the primary limit, anything else a secondary one;
/// the wait is `retry-after` if present, else until `x-ratelimit-reset` for the primary limit,
/// else (a secondary limit without headers) a minute.
pub fn rate_limited(status: StatusCode, headers: &HeaderMap, message: &str) -> Option<(Duration, Limit)> {
    if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let limit = if header("x-ratelimit-remaining") == Some("0") { Limit::Primary } else { Limit::Secondary };
    if let Some(seconds) = header("retry-after").and_then(|v| v.parse::<u64>().ok()) {
        return Some((Duration::from_secs(seconds.max(1)), limit));
    }
    if limit == Limit::Primary {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let reset = header("x-ratelimit-reset").and_then(|v| v.parse::<u64>().ok()).unwrap_or(now + 60);
        return Some((Duration::from_secs(reset.saturating_sub(now).max(1)), limit));
    }
    if status == StatusCode::TOO_MANY_REQUESTS || message.to_ascii_lowercase().contains("rate limit") {
        return Some((Duration::from_secs(60), limit));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn retry_after_wins() {
        let h = headers(&[("retry-after", "30"), ("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1")]);
        assert_eq!(rate_limited(StatusCode::FORBIDDEN, &h, ""), Some((Duration::from_secs(30), Limit::Primary)));
        let h = headers(&[("retry-after", "30")]);
        assert_eq!(rate_limited(StatusCode::FORBIDDEN, &h, ""), Some((Duration::from_secs(30), Limit::Secondary)));
    }

    #[test]
    fn exhausted_primary_limit_waits_for_the_reset() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let h = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &(now + 120).to_string())]);
        let (wait, limit) = rate_limited(StatusCode::FORBIDDEN, &h, "API rate limit exceeded").unwrap();
        assert!((118..=120).contains(&wait.as_secs()), "{wait:?}");
        assert_eq!(limit, Limit::Primary);
    }

    #[test]
    fn secondary_limit_without_headers_waits_a_minute() {
        let h = headers(&[("x-ratelimit-remaining", "4000")]);
        assert_eq!(
            rate_limited(StatusCode::FORBIDDEN, &h, "You have exceeded a secondary rate limit"),
            Some((Duration::from_secs(60), Limit::Secondary))
        );
        assert_eq!(
            rate_limited(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), ""),
            Some((Duration::from_secs(60), Limit::Secondary))
        );
    }

    #[test]
    fn a_plain_forbidden_is_not_a_rate_limit() {
        let h = headers(&[("x-ratelimit-remaining", "4000")]);
        assert_eq!(rate_limited(StatusCode::FORBIDDEN, &h, "Resource not accessible by integration"), None);
        assert_eq!(rate_limited(StatusCode::INTERNAL_SERVER_ERROR, &h, "rate limit"), None);
    }

    #[test]
    fn a_pause_holds_only_its_caller() {
        let now = Instant::now();
        let mut pauses = Pauses::default();
        pauses.pause(Caller::Installation(1), Limit::Primary, now + Duration::from_secs(60), now);
        assert_eq!(pauses.wait(Caller::Installation(1), &Method::GET, now), Some(Duration::from_secs(60)));
        assert_eq!(pauses.wait(Caller::Installation(1), &Method::POST, now), Some(Duration::from_secs(60)));
        assert_eq!(pauses.wait(Caller::Installation(2), &Method::POST, now), None);
        assert_eq!(pauses.wait(Caller::App, &Method::GET, now), None);
        assert_eq!(pauses.wait(Caller::Installation(1), &Method::GET, now + Duration::from_secs(61)), None);
    }

    #[test]
    fn a_content_creation_limit_holds_writes_but_not_reads() {
        let now = Instant::now();
        let mut pauses = Pauses::default();
        pauses.pause(Caller::Installation(1), Limit::Writes, now + Duration::from_secs(60), now);
        assert_eq!(pauses.wait(Caller::Installation(1), &Method::GET, now), None);
        assert_eq!(pauses.wait(Caller::Installation(1), &Method::PATCH, now), Some(Duration::from_secs(60)));
        // A primary limit on top covers the reads too, until its own reset.
        pauses.pause(Caller::Installation(1), Limit::Primary, now + Duration::from_secs(10), now);
        assert_eq!(pauses.wait(Caller::Installation(1), &Method::GET, now), Some(Duration::from_secs(10)));
        assert_eq!(pauses.wait(Caller::Installation(1), &Method::POST, now), Some(Duration::from_secs(60)));
    }

    #[test]
    fn a_shorter_pause_does_not_cut_a_longer_one() {
        let now = Instant::now();
        let mut pauses = Pauses::default();
        pauses.pause(Caller::Token, Limit::Secondary, now + Duration::from_secs(60), now);
        pauses.pause(Caller::Token, Limit::Secondary, now + Duration::from_secs(5), now);
        assert_eq!(pauses.wait(Caller::Token, &Method::GET, now), Some(Duration::from_secs(60)));
    }

    #[test]
    fn next_page_is_relative_to_the_base() {
        let reply = Reply {
            status: StatusCode::OK,
            headers: headers(&[(
                "link",
                "<https://ghe.example.com/api/v3/repos/o/r/pulls?page=2>; rel=\"next\", <https://ghe.example.com/api/v3/repos/o/r/pulls?page=5>; rel=\"last\"",
            )]),
            body: Bytes::new(),
        };
        assert_eq!(reply.next_page().as_deref(), Some("/api/v3/repos/o/r/pulls?page=2"));
    }
}
