//! How previewd connects to the Kubernetes API server: one place that reads the kubeconfig (or
//! the in-cluster ServiceAccount) and sets what previewd needs of every call.
//!
//! - No retries inside a call: kube's default layer retries a throttled call up to 15 times with
//!   delays growing to minutes, holding a worker (and its environment lease) the whole time.
//!   previewd retries through its durable job queue instead, with backoff, and the environment
//!   says why it waits (as with GitHub, whose client's retry layer is off too).
//! - A read timeout, so an API server that stops answering becomes an error worth a retry
//!   instead of a reconcile that hangs. previewd makes no watch or exec calls, which the
//!   timeout would cut.
//! - The `Retry-After` of a throttled answer kept: the API server's Priority and Fairness
//!   filter answers 429 with a plain-text body and the wait in a `Retry-After` header; kube
//!   builds its error from the body alone and drops the header. [`keep_retry_after`] writes it
//!   into the error's `details.retryAfterSeconds`, where the API server puts it in the answers
//!   it sends as JSON, so [`crate::cluster::ClusterError`] can carry it to the job queue.

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use kube::client::{ClientBuilder, DynBody};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::Status;
use kube::core::response::StatusDetails;
use kube::{Client, Config};
use std::path::Path;
use std::time::Duration;
use tower::BoxError;
use tower::util::AndThenLayer;

/// How long previewd waits for the API server's answer to one call.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Why no client could be built. Messages name the setting; they never hold a credential.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("reading the kubeconfig {path} (setting kubeconfig): {source}")]
    Kubeconfig { path: String, source: kube::config::KubeconfigError },
    #[error("cannot find a Kubernetes configuration (setting kubeconfig, KUBECONFIG, ~/.kube/config, in-cluster): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("building the Kubernetes client: {0}")]
    Build(#[from] kube::Error),
}

/// A client for the cluster of `kubeconfig` (unset: `KUBECONFIG`, `~/.kube/config`, then the
/// in-cluster ServiceAccount), set up as the module documentation says.
pub async fn connect(kubeconfig: Option<&Path>) -> Result<Client, ConnectError> {
    let mut config = match kubeconfig {
        Some(path) => {
            let error = |source| ConnectError::Kubeconfig { path: path.display().to_string(), source };
            let kubeconfig = Kubeconfig::read_from(path).map_err(error)?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.map_err(error)?
        }
        None => Config::infer().await?,
    };
    config.default_retry = false;
    config.read_timeout = Some(READ_TIMEOUT);
    // Counted from each request, not from when its pooled connection went idle.
    config.reset_reader_on_write = true;
    let client = ClientBuilder::try_from(config)?.with_layer(&AndThenLayer::new(keep_retry_after)).build();
    Ok(client)
}

type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Writes the `Retry-After` header of a 429 or 5xx answer into the body kube makes its error
/// from: a JSON `Status` (the API server's own, or one made from its plain text) with
/// `details.retryAfterSeconds`. Other answers pass untouched.
async fn keep_retry_after(response: Response<Box<DynBody>>) -> Result<Response<Body>, BoxError> {
    let status = response.status();
    let retry_after = retry_after_seconds(response.headers());
    let Some(seconds) = retry_after.filter(|_| status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error())
    else {
        return Ok(response.map(BodyExt::boxed_unsync));
    };
    let (mut parts, body) = response.into_parts();
    let bytes = body.collect().await?.to_bytes();
    let mut error: Status = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        let text = String::from_utf8_lossy(&bytes);
        let reason = status.canonical_reason().unwrap_or_default().replace(' ', "");
        Status::failure(text.trim(), &reason).with_code(status.as_u16())
    });
    let details = error.details.get_or_insert_with(|| StatusDetails {
        name: String::new(),
        group: String::new(),
        kind: String::new(),
        uid: String::new(),
        causes: Vec::new(),
        retry_after_seconds: 0,
    });
    if details.retry_after_seconds == 0 {
        details.retry_after_seconds = seconds;
    }
    let json = serde_json::to_vec(&error)?;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    let body = Full::new(Bytes::from(json)).map_err(|never| -> BoxError { match never {} }).boxed_unsync();
    Ok(Response::from_parts(parts, body))
}

/// `Retry-After` in whole seconds, as the API server sends it (an HTTP date is not used there).
fn retry_after_seconds(headers: &HeaderMap) -> Option<u32> {
    headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Response<Box<DynBody>> {
        let mut builder = Response::builder().status(status);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let body: Box<DynBody> =
            Box::new(Full::new(Bytes::from(body.to_owned())).map_err(|never| -> BoxError { match never {} }));
        builder.body(body).unwrap()
    }

    async fn status_of(response: Response<Body>) -> Status {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_plain_text_429_becomes_a_status_with_its_retry_after() {
        // The answer of the Priority and Fairness filter, as the API server sends it.
        let response = answer(429, &[("retry-after", "4")], "Too many requests, please try again later.\n");
        let status = status_of(keep_retry_after(response).await.unwrap()).await;
        assert_eq!(status.code, 429);
        assert_eq!(status.message, "Too many requests, please try again later.");
        assert_eq!(status.reason, "TooManyRequests");
        assert_eq!(status.details.unwrap().retry_after_seconds, 4);
    }

    #[tokio::test]
    async fn a_json_status_keeps_its_fields_and_gains_the_header() {
        let json = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"etcd is busy","reason":"ServiceUnavailable","code":503}"#;
        let status = status_of(keep_retry_after(answer(503, &[("Retry-After", "7")], json)).await.unwrap()).await;
        assert_eq!((status.code, status.message.as_str()), (503, "etcd is busy"));
        assert_eq!(status.details.unwrap().retry_after_seconds, 7);
    }

    #[tokio::test]
    async fn other_answers_pass_untouched() {
        for (code, headers) in [(404, vec![("retry-after", "3")]), (429, vec![]), (200, vec![])] {
            let response = keep_retry_after(answer(code, &headers, "as sent")).await.unwrap();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(bytes, "as sent", "{code}");
        }
    }
}
