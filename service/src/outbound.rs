//! previewd's plain outbound HTTP client: hyper-util's client with hyper-rustls (ring, the
//! system's roots), exactly as kube already builds them, so no second HTTP or TLS stack is
//! linked. The CLI calls the admin API with it and the dashboard's sign-in exchanges GitHub's
//! OAuth codes with it; GitHub's REST API goes through octocrab.

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;

/// The client type.
pub type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Why the client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("reading the system's trusted certificates (needed for https): {0}")]
    Roots(std::io::Error),
    #[error("setting up TLS: {0}")]
    Tls(rustls::Error),
}

/// A client for `http` and `https` URLs. Without readable system roots it still serves plain
/// HTTP when `https_needed` is false (a loopback previewd, a test's stand-in).
pub fn https_client(https_needed: bool) -> Result<HttpsClient, OutboundError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_native_roots(provider.clone()) {
        Ok(builder) => builder,
        Err(error) if https_needed => return Err(OutboundError::Roots(error)),
        Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(OutboundError::Tls)?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        ),
    };
    let https = builder.https_or_http().enable_http1().build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// An error with its causes (`connection refused` is a cause of hyper's "client error").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
