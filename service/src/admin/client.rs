//! The admin API's client, for the CLI: one base URL, one bearer token, and the server's own
//! words when it refuses.

use crate::cli::ServerArgs;
use crate::outbound::{HttpsClient, error_chain};
use anyhow::Context;
use bytes::Bytes;
use eventsource_stream::{Event, Eventsource};
use futures::StreamExt;
use futures::stream::BoxStream;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// How long one call may take, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The most of an answer the CLI reads.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// previewd answered with an error: shown as previewd worded it.
    #[error("previewd refused ({status}): {message}")]
    Refused { status: StatusCode, message: String },
    #[error("cannot reach previewd at {server}: {detail}")]
    Unreachable { server: String, detail: String },
    #[error("previewd's answer cannot be read ({0}); is --server a previewd?")]
    Unreadable(String),
}

/// The events of an open stream, as [`ApiClient::events`] reads them.
pub type EventStream = BoxStream<'static, Result<Event, ClientError>>;

pub struct ApiClient {
    http: HttpsClient,
    /// Without a trailing slash.
    base: String,
    token: SecretString,
}

/// `{error, message}`, as every error answer is.
#[derive(serde::Deserialize)]
struct ErrorBody {
    message: String,
}

impl ApiClient {
    /// The token comes from `--token-file`, else `PREVIEWD_TOKEN`.
    pub fn new(args: &ServerArgs) -> anyhow::Result<ApiClient> {
        let token = match &args.token_file {
            Some(file) => std::fs::read_to_string(file)
                .with_context(|| format!("reading the token file {}", file.display()))?
                .trim()
                .to_owned(),
            None => std::env::var("PREVIEWD_TOKEN").context(
                "no token: set PREVIEWD_TOKEN or pass --token-file (create one with `previewd token create`)",
            )?,
        };
        let base = args.server.trim_end_matches('/').to_owned();
        let uri: Uri = base
            .parse()
            .with_context(|| format!("--server {}: not a URL like https://previewd.example.com", args.server))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            anyhow::bail!("--server {}: not a URL like https://previewd.example.com", args.server);
        }
        let http = crate::outbound::https_client(uri.scheme_str() == Some("https"))
            .with_context(|| format!("--server {}", args.server))?;
        Ok(ApiClient { http, base, token: SecretString::from(token) })
    }

    fn request(&self, method: Method, path: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(format!("{}/{}", self.base, path.trim_start_matches('/')))
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token.expose_secret()))
            .header(header::USER_AGENT, concat!("previewd-cli/", env!("CARGO_PKG_VERSION")))
    }

    fn unreachable(&self, detail: String) -> ClientError {
        ClientError::Unreachable { server: self.base.clone(), detail }
    }

    /// Sends `request`; the answer's status and head, within [`CALL_TIMEOUT`].
    async fn send(&self, request: Request<Full<Bytes>>) -> Result<http::Response<hyper::body::Incoming>, ClientError> {
        tokio::time::timeout(CALL_TIMEOUT, self.http.request(request))
            .await
            .map_err(|_| self.unreachable(format!("no answer within {} s", CALL_TIMEOUT.as_secs())))?
            .map_err(|e| self.unreachable(error_chain(&e)))
    }

    /// The server's words for a refusal.
    fn refused(status: StatusCode, bytes: &[u8]) -> ClientError {
        let message = serde_json::from_slice::<ErrorBody>(bytes)
            .map(|e| e.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(bytes).chars().take(200).collect());
        ClientError::Refused { status, message }
    }

    /// Calls `path` (with its query, from `/api/...`) and reads the JSON answer.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, ClientError> {
        let mut request = self.request(method, path);
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(body.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request.body(body).map_err(|e| ClientError::Unreadable(e.to_string()))?;
        let read = async {
            let response = self.send(request).await?;
            let status = response.status();
            let limited = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES);
            let bytes = limited.collect().await.map_err(|e| self.unreachable(e.to_string()))?.to_bytes();
            Ok::<_, ClientError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(CALL_TIMEOUT, read)
            .await
            .map_err(|_| self.unreachable(format!("no answer within {} s", CALL_TIMEOUT.as_secs())))??;
        if !status.is_success() {
            return Err(Self::refused(status, &bytes));
        }
        // No content (204) reads as `null`, which `()` takes.
        let bytes = if bytes.is_empty() { Bytes::from_static(b"null") } else { bytes };
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Unreadable(e.to_string()))
    }

    /// Opens `path` (from `/api/...`) as an event stream, starting after event `last_event_id`
    /// when given. The stream has no time limit; it ends when the server closes it.
    pub async fn events(&self, path: &str, last_event_id: Option<&str>) -> Result<EventStream, ClientError> {
        let mut request = self.request(Method::GET, path).header(header::ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let request = request.body(Full::new(Bytes::new())).map_err(|e| ClientError::Unreadable(e.to_string()))?;
        let response = self.send(request).await?;
        let status = response.status();
        if !status.is_success() {
            let limited = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES);
            let bytes = limited.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            return Err(Self::refused(status, &bytes));
        }
        let server = self.base.clone();
        Ok(response
            .into_body()
            .into_data_stream()
            .eventsource()
            .map(move |event| {
                event.map_err(|e| ClientError::Unreachable { server: server.clone(), detail: e.to_string() })
            })
            .boxed())
    }
}
