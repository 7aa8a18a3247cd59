//! Prometheus metrics, served at `/metrics` in the text exposition format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// `X-GitHub-Event`, or `unknown` before the delivery is authenticated.
    pub event: String,
    /// queued, ignored, ping, duplicate, replay, unauthorized, too_large, busy, body_timeout,
    /// malformed, unavailable
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub kind: &'static str,
    /// ok, retry, dead, lease_lost, interrupted
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

/// Every metric previewd exports.
pub struct Metrics {
    registry: Registry,
    pub deliveries: Family<DeliveryLabels, Counter>,
    pub intake_seconds: Histogram,
    pub job_attempts: Family<JobLabels, Counter>,
    pub job_seconds: Family<KindLabels, Histogram>,
    pub jobs: Family<StateLabels, Gauge>,
    pub http_connections: Gauge,
    pub http_header_timeouts: Counter,
    /// Set at scrape time from the body budget.
    pub webhook_body_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("previewd");
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries received, by event and outcome",
            deliveries.clone(),
        );
        let intake_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "webhook_intake_seconds",
            "Time from request to answer for webhook deliveries, storage included",
            intake_seconds.clone(),
        );
        let job_attempts = Family::<JobLabels, Counter>::default();
        registry.register("job_attempts", "Job attempts, by kind and outcome", job_attempts.clone());
        let job_seconds = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register("job_duration_seconds", "Time a job attempt took, by kind", job_seconds.clone());
        let jobs = Family::<StateLabels, Gauge>::default();
        registry.register("jobs", "Jobs in the queue by state (queue depth is state=\"queued\")", jobs.clone());
        let http_connections = Gauge::default();
        registry.register("http_connections", "HTTP connections open", http_connections.clone());
        let http_header_timeouts = Counter::default();
        registry.register(
            "http_header_timeouts",
            "HTTP connections closed because request headers did not arrive within http.header_timeout_seconds",
            http_header_timeouts.clone(),
        );
        let webhook_body_bytes = Gauge::default();
        registry.register(
            "webhook_body_bytes",
            "Webhook body bytes held in memory now (bounded by http.max_inflight_body_bytes)",
            webhook_body_bytes.clone(),
        );
        Metrics {
            registry,
            deliveries,
            intake_seconds,
            job_attempts,
            job_seconds,
            jobs,
            http_connections,
            http_header_timeouts,
            webhook_body_bytes,
        }
    }
}

impl Metrics {
    pub fn delivery(&self, event: &str, outcome: &'static str) {
        self.deliveries.get_or_create(&DeliveryLabels { event: event.to_owned(), outcome }).inc();
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
