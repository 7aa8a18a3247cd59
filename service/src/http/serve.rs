//! The HTTP/1.1 server loop, with the timers `axum::serve` lacks.
//!
//! `axum::serve` has no header timeout, no cap on connections and a graceful shutdown that
//! waits for every request however long its client stalls. previewd faces the internet, so it
//! accepts connections itself and serves each with hyper's HTTP/1 connection: headers must
//! arrive within the header timeout (which also closes idle keep-alive connections), at most
//! `max_connections` are open, and on shutdown requests in flight get a bounded drain period
//! before their connections are dropped. Bodies are bounded in time and memory by the webhook
//! handler itself ([`super::body`]). GitHub delivers over HTTP/1.1, so HTTP/2 is not offered
//! (neither did `axum::serve` with axum's default features).

use crate::metrics::Metrics;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// hyper's read and write buffers per connection at most (its default is ~400 KB). A request's
/// headers must fit; GitHub's are a few KB. Keeps `max_connections` idle clients to a few MiB.
const MAX_BUF_BYTES: usize = 64 * 1024;

/// What the loop needs besides the router.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub header_timeout: Duration,
    pub max_connections: usize,
    /// How long requests in flight may take to finish once `stop` is cancelled.
    pub drain: Duration,
}

/// Serves `router` on `listener` until `stop` is cancelled, then stops accepting, lets requests
/// in flight finish within `settings.drain` and closes every connection. When this returns,
/// every clone of the router (and of what its state holds) has been dropped.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ServeSettings,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let mut connections = JoinSet::new();
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(settings.header_timeout).max_buf_size(MAX_BUF_BYTES);
    loop {
        // Finished connections are reaped here, so the set holds only open ones.
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // never closed
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait instead of spinning on the error.
                    tracing::warn!(error = %error, "cannot accept a connection");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        let connection = builder.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(tower::Layer::layer(
                &axum::Extension(axum::extract::ConnectInfo(peer)),
                router.clone(),
            )),
        );
        let open = Open::new(metrics.clone(), slot);
        let stop = stop.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = stop.cancelled() => {
                    // Finish the request in flight (if any), then close.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = ended {
                if error.is_timeout() {
                    open.metrics.http_header_timeouts.inc();
                    tracing::debug!(%peer, "connection closed: its request headers did not arrive in time");
                } else {
                    tracing::debug!(%peer, error = %error, "connection ended with an error");
                }
            }
            drop(open);
        });
    }
    drop(listener);
    drop(router);
    let open = connections.len();
    let drained =
        tokio::time::timeout(settings.drain, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            of = open,
            drain_seconds = settings.drain.as_secs_f64(),
            "requests still in flight after the drain period; closing their connections"
        );
    }
    // Drops every connection still open (and its request, if any), and waits until they are.
    connections.shutdown().await;
}

/// An open connection: its slot under `max_connections` and its count in the metrics, both
/// given back however the connection ends (also when it is dropped at shutdown).
struct Open {
    metrics: Arc<Metrics>,
    _slot: OwnedSemaphorePermit,
}

impl Open {
    fn new(metrics: Arc<Metrics>, slot: OwnedSemaphorePermit) -> Open {
        metrics.http_connections.inc();
        Open { metrics, _slot: slot }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.metrics.http_connections.dec();
    }
}
