//! A previewd server started in-process on a loopback port, with a fresh database, and a client
//! that signs deliveries the way GitHub does.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod openapi;
pub mod story;

use previewd::config::Config;
use previewd::server;
use previewd::worker::Shutdown;
use previewd_e2e::database::TestDatabase;
use previewd_e2e::github::sign;
use previewd_environments::store::{JobRecord, Store};
use std::time::Duration;
use tokio::task::JoinHandle;

pub const SECRET: &str = "test-webhook-secret";
pub const ROTATED_SECRET: &str = "previous-webhook-secret";

pub struct TestServer {
    pub base: String,
    pub store: Store,
    pub client: reqwest::Client,
    shutdown: Shutdown,
    task: JoinHandle<anyhow::Result<()>>,
}

pub fn config(db: &TestDatabase, extra: &[(&str, &str)]) -> Config {
    let mut env: Vec<(String, String)> = vec![
        ("PREVIEWD_DATABASE_URL".into(), db.url.clone()),
        ("PREVIEWD_WEBHOOK_SECRETS".into(), format!("{SECRET},{ROTATED_SECRET}")),
        ("PREVIEWD_QUEUE__POLL_INTERVAL_MS".into(), "50".into()),
        ("PREVIEWD_QUEUE__BACKOFF_INITIAL_MS".into(), "20".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::load_from(None, env).expect("test configuration")
}

impl TestServer {
    pub async fn start(db: &TestDatabase) -> TestServer {
        Self::start_with(config(db, &[])).await
    }

    pub async fn start_with(config: Config) -> TestServer {
        let store = Store::connect(&config.database_url).await.expect("connect");
        store.migrate().await.expect("migrate");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let shutdown = Shutdown::default();
        let task = tokio::spawn(server::run(config, listener, shutdown.clone()));
        let client = reqwest::Client::new();
        let mut server = TestServer { base, store, client, shutdown, task };
        server.wait_ready().await;
        server
    }

    /// Waits for `/readyz`; a server that stopped at start fails the test with its error.
    async fn wait_ready(&mut self) {
        let (client, url) = (self.client.clone(), format!("{}/readyz", self.base));
        let ready = eventually("the server answers /readyz", || async {
            let ready = client.get(&url).send().await;
            ready.is_ok_and(|r| r.status() == 200).then_some(())
        });
        tokio::select! {
            () = ready => {}
            ended = &mut self.task => panic!("the server stopped at start: {ended:?}"),
        }
    }

    /// Sends `body` as a `event` delivery signed with `secret` (or unsigned).
    pub async fn send(
        &self,
        event: &str,
        delivery: &str,
        hook: &str,
        body: Vec<u8>,
        signature: Option<String>,
        content_type: &str,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/webhooks/github", self.base))
            .header("X-GitHub-Event", event)
            .header("X-GitHub-Delivery", delivery)
            .header("X-GitHub-Hook-ID", hook)
            .header("Content-Type", content_type)
            .body(body);
        if let Some(signature) = signature {
            request = request.header("X-Hub-Signature-256", signature);
        }
        request.send().await.expect("request")
    }

    /// A JSON delivery signed with the current secret, as GitHub sends it.
    pub async fn deliver(&self, event: &str, delivery: &str, payload: &serde_json::Value) -> reqwest::Response {
        let body = serde_json::to_vec(payload).expect("json");
        let signature = sign(SECRET, &body);
        self.send(event, delivery, "1", body, Some(signature), "application/json").await
    }

    /// Waits until every job of the delivery stored under (hook 1, `delivery`) is done or dead.
    pub async fn finished_jobs(&self, delivery: &str) -> Vec<JobRecord> {
        eventually("the delivery's jobs finish", || async {
            let stored = self.store.find_delivery("1", delivery).await.ok()??;
            let jobs = self.store.jobs_for_delivery(stored.id).await.ok()?;
            jobs.iter().all(|j| j.state == "done" || j.state == "dead").then_some(jobs)
        })
        .await
    }

    pub async fn stop(self) {
        self.shutdown.stop.cancel();
        self.task.await.expect("server task").expect("server shut down cleanly");
    }
}

/// Polls `check` every 20 ms until it returns `Some`, failing the test after 20 seconds.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(Duration::from_secs(20), what, check).await
}

/// [`eventually`] with a deadline of its own (teardown waits for the namespace controller).
pub async fn eventually_within<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
