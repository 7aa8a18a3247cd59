//! The intake benchmark (`e2e/bench/intake.sh`; see `e2e/bench/README.md`).
//!
//! Drives the real `POST /webhooks/github` endpoint of a release `previewd serve` over loopback
//! with signed 25 KB `pull_request` `opened` deliveries (GitHub's published example, its body
//! padded), each with its own `X-GitHub-Delivery` id so that every one is stored, first on SQLite,
//! then on Postgres; then drives the same load against a minimal `@octokit/webhooks` receiver
//! (`e2e/bench/octokit-receiver.mjs`). Prints deliveries/s and p50/p99 latency of each, and the
//! ratio previewd/octokit. After each previewd run it checks, while previewd still runs, that
//! the store holds exactly as many deliveries (and jobs) as previewd answered 202 to.
//!
//! The load: N keep-alive HTTP/1.1 connections (default 64), each sending its next delivery as
//! soon as the previous one is answered (closed loop). One precomputed body and signature serve
//! every delivery: the delivery id is a header, not part of the signed body.

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use previewd_e2e::cli::{flags, number};
use previewd_e2e::database::{Backend, POSTGRES_URL_ENV, fresh};
use previewd_e2e::fixtures::example;
use previewd_e2e::github::sign;
use previewd_e2e::measure::{cpu_seconds, load_average, machine_jiffies, percentile};
use sqlx::Connection;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod report;

use report::{Figures, millis, print_figures, print_table};

const SECRET: &str = "bench-webhook-secret";
const PATH: &str = "/webhooks/github";

const USAGE: &str = "\
usage: bench_intake [options]
  --previewd PATH      the previewd binary (default: target/release/previewd next to this binary)
  --node PATH          the node binary (default: node)
  --duration SECONDS   measured time per target (default 10)
  --warmup SECONDS     load before measuring, per target (default 2)
  --connections N      concurrent keep-alive connections (default 64)
  --body-bytes N       size of each delivery's body (default 25600)
  --client-threads N   threads of the load generator (default 1)
  --workers N          previewd's job workers (PREVIEWD_QUEUE__WORKERS; default: previewd's own, 4)
  --action ACTION      the deliveries' `action` (default opened; `assigned` is one previewd stores
                       without queueing a job: intake without the job workers' share of the store)
  --targets LIST       comma-separated: sqlite,postgres,octokit (default all three)
Postgres comes from PREVIEWD_TEST_POSTGRES_URL (`eval \"$(e2e/postgres.sh up)\"`).";

struct Options {
    previewd: PathBuf,
    node: String,
    duration: Duration,
    warmup: Duration,
    connections: usize,
    body_bytes: usize,
    client_threads: usize,
    workers: Option<u64>,
    action: String,
    targets: Vec<Target>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Sqlite,
    Postgres,
    Octokit,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Target::Sqlite => "previewd + SQLite",
            Target::Postgres => "previewd + Postgres",
            Target::Octokit => "@octokit/webhooks (Node)",
        }
    }
}

fn parse_options() -> anyhow::Result<Options> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let mut options = Options {
        previewd: exe.with_file_name("previewd"),
        node: "node".to_owned(),
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        connections: 64,
        body_bytes: 25 * 1024,
        client_threads: 1,
        workers: None,
        action: "opened".to_owned(),
        targets: vec![Target::Sqlite, Target::Postgres, Target::Octokit],
    };
    for (flag, value) in flags(USAGE)? {
        match flag.as_str() {
            "--previewd" => options.previewd = PathBuf::from(value),
            "--node" => options.node = value,
            "--duration" => options.duration = Duration::from_secs(number(&flag, &value)?),
            "--warmup" => options.warmup = Duration::from_secs(number(&flag, &value)?),
            "--connections" => options.connections = number::<usize>(&flag, &value)?.max(1),
            "--body-bytes" => options.body_bytes = number::<usize>(&flag, &value)?,
            "--client-threads" => options.client_threads = number::<usize>(&flag, &value)?.max(1),
            "--workers" => options.workers = Some(number(&flag, &value)?),
            "--action" => options.action = value,
            "--targets" => {
                options.targets = value
                    .split(',')
                    .map(|t| match t.trim() {
                        "sqlite" => Ok(Target::Sqlite),
                        "postgres" => Ok(Target::Postgres),
                        "octokit" => Ok(Target::Octokit),
                        other => bail!("unknown target `{other}`\n{USAGE}"),
                    })
                    .collect::<anyhow::Result<_>>()?
            }
            other => bail!("unknown option `{other}`\n{USAGE}"),
        }
    }
    if options.duration.is_zero() {
        bail!("--duration must be at least 1 second");
    }
    Ok(options)
}

fn main() -> anyhow::Result<()> {
    let options = parse_options()?;
    let runtime = if options.client_threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(options.client_threads).enable_all().build()?
    };
    runtime.block_on(run(options))
}

/// The delivery every request carries, and its signature.
struct Payload {
    body: Bytes,
    signature: HeaderValue,
}

/// GitHub's published `pull_request` `opened` example, its `action` set to `action`, with
/// `pull_request.body` padded so that the serialized document is exactly `size` bytes (or the
/// example's size if that is larger).
fn payload(size: usize, action: &str) -> anyhow::Result<Payload> {
    let mut document = example("pull_request", "opened")?;
    document["action"] = serde_json::Value::String(action.to_owned());
    let unpadded = serde_json::to_vec(&document)?.len();
    let original = document["pull_request"]["body"].as_str().unwrap_or_default().to_owned();
    let sentence = " The change keeps the old behaviour behind a flag until every caller has moved.";
    let mut text = original.clone();
    while unpadded - original.len() + text.len() < size {
        text.push_str(sentence);
    }
    text.truncate(size.saturating_sub(unpadded - original.len()).max(original.len()));
    document["pull_request"]["body"] = serde_json::Value::String(text);
    let body = serde_json::to_vec(&document)?;
    let signature = HeaderValue::from_str(&sign(SECRET, &body))?;
    Ok(Payload { body: Bytes::from(body), signature })
}

async fn run(options: Options) -> anyhow::Result<()> {
    let payload = Arc::new(payload(options.body_bytes, &options.action)?);
    println!(
        "intake benchmark: `pull_request` `{}` deliveries of {} bytes, {} connections, {} s warm-up + {} s \
         measured per target, previewd job workers: {}, load generator on {} thread(s), {} CPUs, load average {}",
        options.action,
        payload.body.len(),
        options.connections,
        options.warmup.as_secs(),
        options.duration.as_secs(),
        options.workers.map_or_else(|| "default (4)".to_owned(), |w| w.to_string()),
        options.client_threads,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
    );
    match fsync_latency() {
        Ok((p50, max)) => println!(
            "disk: a 4 KiB write + fsync in the temporary folder takes {} ms (p50), {} ms (max) of 50",
            millis(p50),
            millis(max)
        ),
        Err(error) => println!("disk: could not measure fsync latency: {error:#}"),
    }
    let mut results = Vec::new();
    for &target in &options.targets {
        println!("\n==> {}", target.label());
        let figures = match target {
            Target::Sqlite | Target::Postgres => bench_previewd(&options, target, &payload).await?,
            Target::Octokit => bench_octokit(&options, &payload).await?,
        };
        print_figures(&figures);
        results.push(figures);
    }
    print_table(&results);
    let failed: Vec<&Figures> =
        results.iter().filter(|f| f.errors > 0 || f.kept != i64::try_from(f.accepted).unwrap_or(-1)).collect();
    if !failed.is_empty() {
        bail!(
            "{} target(s) had errors or did not keep every accepted delivery",
            failed.iter().map(|f| f.target.label()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

/// A server process, stopped with SIGTERM (then killed) when dropped.
struct Server {
    child: Child,
    name: &'static str,
}

impl Server {
    fn stop(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("{} exited with {status} after SIGTERM", self.name);
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!("{} did not stop within 30 s of SIGTERM; killed", self.name)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn wait_ready(http: &reqwest::Client, url: &str, server: &mut Server) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(status) = server.child.try_wait()? {
            bail!("{} exited during start-up ({status}); its error is above", server.name);
        }
        if let Ok(response) = http.get(url).send().await
            && response.status() == 200
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{} did not answer {url} within 60 s", server.name)
}

/// Stored deliveries, and (stored jobs, finished jobs), on either backend.
macro_rules! count_stored {
    ($connect:expr) => {{
        let mut connection = $connect;
        let db = &mut connection;
        let deliveries: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deliveries").fetch_one(&mut *db).await?;
        let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs").fetch_one(&mut *db).await?;
        let done: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE state = 'done'").fetch_one(&mut *db).await?;
        connection.close().await.ok();
        (deliveries, (jobs, done))
    }};
}

async fn bench_previewd(options: &Options, target: Target, payload: &Arc<Payload>) -> anyhow::Result<Figures> {
    let backend = if target == Target::Sqlite { Backend::Sqlite } else { Backend::Postgres };
    if backend == Backend::Postgres && std::env::var(POSTGRES_URL_ENV).is_err() {
        bail!("{POSTGRES_URL_ENV} is not set: start Postgres with `eval \"$(e2e/postgres.sh up)\"` (intake.sh does)");
    }
    let database = fresh(backend).await?;
    let port = previewd_e2e::previewd::free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut command = Command::new(&options.previewd);
    if let Some(workers) = options.workers {
        command.env("PREVIEWD_QUEUE__WORKERS", workers.to_string());
    }
    let child = command
        .arg("serve")
        .env_remove("RUST_LOG")
        .env("PREVIEWD_LISTEN", addr.to_string())
        .env("PREVIEWD_DATABASE_URL", &database.url)
        .env("PREVIEWD_WEBHOOK_SECRETS", SECRET)
        .env("PREVIEWD_LOG_FILTER", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| {
            format!("starting {} (build it with `cargo build --release -p previewd`)", options.previewd.display())
        })?;
    let mut server = Server { child, name: "previewd" };
    let http = reqwest::Client::new();
    wait_ready(&http, &format!("http://{addr}/readyz"), &mut server).await?;
    let run = drive(options, addr, payload, StatusCode::ACCEPTED, server.child.id(), "pull_request").await?;

    // Counted while previewd still runs: every 202 must already be committed.
    let (kept, jobs) = match backend {
        Backend::Sqlite => count_stored!(sqlx::SqliteConnection::connect(&database.url).await?),
        Backend::Postgres => count_stored!(sqlx::PgConnection::connect(&database.url).await?),
    };
    server.stop()?;
    Ok(run.into_figures(target, kept, Some(jobs)))
}

async fn bench_octokit(options: &Options, payload: &Arc<Payload>) -> anyhow::Result<Figures> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/octokit-receiver.mjs");
    let port = previewd_e2e::previewd::free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let child = Command::new(&options.node)
        .arg(&script)
        .arg(port.to_string())
        .env("BENCH_WEBHOOK_SECRET", SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {} {}", options.node, script.display()))?;
    let mut server = Server { child, name: "octokit-receiver" };
    let http = reqwest::Client::new();
    let stats = format!("http://{addr}/stats");
    wait_ready(&http, &stats, &mut server).await?;
    let run = drive(options, addr, payload, StatusCode::OK, server.child.id(), "pull_request").await?;
    let counts: serde_json::Value = http.get(&stats).send().await?.json().await?;
    let kept = counts["pull_requests"].as_i64().context("the receiver's /stats has no `pull_requests`")?;
    server.stop()?;
    Ok(run.into_figures(Target::Octokit, kept, None))
}

/// What one connection saw.
#[derive(Default)]
struct ConnectionLog {
    /// Latencies of the requests sent in the measured window, in microseconds.
    latencies: Vec<u32>,
    /// When the last measured request was answered.
    last_answer: Option<Instant>,
    accepted: usize,
    errors: usize,
    first_error: Option<String>,
}

struct Run {
    latencies: Vec<u32>,
    window: Duration,
    accepted: usize,
    errors: usize,
    server_cpu: Option<f64>,
    client_cpu: Option<f64>,
    machine_busy: Option<f64>,
    load: String,
}

impl Run {
    fn into_figures(self, target: Target, kept: i64, jobs: Option<(i64, i64)>) -> Figures {
        let measured = self.latencies.len();
        let percentile = |p: f64| Duration::from_micros(u64::from(percentile(&self.latencies, p)));
        Figures {
            target,
            per_second: measured as f64 / self.window.as_secs_f64().max(f64::EPSILON),
            p50: percentile(0.50),
            p99: percentile(0.99),
            measured,
            errors: self.errors,
            accepted: self.accepted,
            kept,
            jobs,
            server_cpu: self.server_cpu,
            client_cpu: self.client_cpu,
            machine_busy: self.machine_busy,
            load: self.load,
        }
    }
}

/// Runs the load against `addr`: warm-up, then the measured window. A request counts as accepted
/// when answered with `expected`; anything else (another status, a connection error) is an error.
async fn drive(
    options: &Options,
    addr: SocketAddr,
    payload: &Arc<Payload>,
    expected: StatusCode,
    server_pid: u32,
    event: &'static str,
) -> anyhow::Result<Run> {
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let start = Instant::now();
    let measure_from = start + options.warmup;
    let stop_at = measure_from + options.duration;
    let mut connections = Vec::with_capacity(options.connections);
    for n in 0..options.connections {
        let payload = payload.clone();
        let prefix = format!("bench-{}-{n}", &run_id[..12]);
        connections.push(tokio::spawn(connection(addr, payload, prefix, expected, event, measure_from, stop_at)));
    }
    // CPU time of the server and of this process, sampled around the measured window.
    tokio::time::sleep_until(measure_from.into()).await;
    let (server_before, client_before, machine_before) =
        (cpu_seconds(server_pid), cpu_seconds_self(), machine_jiffies());
    tokio::time::sleep_until(stop_at.into()).await;
    let (server_after, client_after, machine_after) = (cpu_seconds(server_pid), cpu_seconds_self(), machine_jiffies());
    let load = load_average();
    let mut latencies = Vec::new();
    let (mut accepted, mut errors, mut last_answer, mut first_error) = (0, 0, measure_from, None);
    for handle in connections {
        let log = handle.await?;
        latencies.extend(log.latencies);
        accepted += log.accepted;
        errors += log.errors;
        last_answer = last_answer.max(log.last_answer.unwrap_or(measure_from));
        first_error = first_error.or(log.first_error);
    }
    if let Some(error) = first_error {
        println!("    first error: {error}");
    }
    latencies.sort_unstable();
    let window = last_answer.duration_since(measure_from);
    let per_core = |before: Option<f64>, after: Option<f64>| Some((after? - before?) / options.duration.as_secs_f64());
    Ok(Run {
        latencies,
        window,
        accepted,
        errors,
        server_cpu: per_core(server_before, server_after),
        client_cpu: per_core(client_before, client_after),
        machine_busy: machine_before
            .zip(machine_after)
            .and_then(|((b0, t0), (b1, t1))| (t1 > t0).then(|| (b1 - b0) / (t1 - t0))),
        load,
    })
}

/// One keep-alive connection sending deliveries back to back until `stop_at`; reconnects after
/// an error.
async fn connection(
    addr: SocketAddr,
    payload: Arc<Payload>,
    prefix: String,
    expected: StatusCode,
    event: &'static str,
    measure_from: Instant,
    stop_at: Instant,
) -> ConnectionLog {
    let mut log = ConnectionLog { latencies: Vec::with_capacity(16_384), ..ConnectionLog::default() };
    let host = HeaderValue::from_str(&addr.to_string()).unwrap_or(HeaderValue::from_static("127.0.0.1"));
    let json = HeaderValue::from_static("application/json");
    let event = HeaderValue::from_static(event);
    let hook = HeaderValue::from_static("1");
    let mut seq: u64 = 0;
    let mut sender = None;
    loop {
        let started = Instant::now();
        if started >= stop_at {
            break;
        }
        let result: anyhow::Result<StatusCode> = async {
            if sender.is_none() {
                let stream = tokio::net::TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(conn);
                sender = Some(s);
            }
            let Some(s) = sender.as_mut() else { bail!("no connection") };
            s.ready().await?;
            seq += 1;
            let request = Request::post(PATH)
                .header(HOST, host.clone())
                .header(CONTENT_TYPE, json.clone())
                .header("x-github-event", event.clone())
                .header("x-github-hook-id", hook.clone())
                .header("x-github-delivery", HeaderValue::from_str(&format!("{prefix}-{seq}"))?)
                .header("x-hub-signature-256", payload.signature.clone())
                .body(Full::new(payload.body.clone()))?;
            let response = s.send_request(request).await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok(status)
        }
        .await;
        let answered = Instant::now();
        match result {
            Ok(status) if status == expected => {
                log.accepted += 1;
                if started >= measure_from {
                    let micros = answered.duration_since(started).as_micros();
                    log.latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
                    log.last_answer = Some(answered);
                }
            }
            Ok(status) => {
                log.errors += 1;
                log.first_error.get_or_insert_with(|| format!("answer {status}"));
            }
            Err(error) => {
                log.errors += 1;
                log.first_error.get_or_insert_with(|| format!("{error:#}"));
                sender = None;
            }
        }
    }
    log
}

/// Median and maximum time of 50 rounds of (4 KiB write, fsync) to a file in the temporary
/// folder, where the SQLite file goes: the floor under every durable commit.
fn fsync_latency() -> anyhow::Result<(Duration, Duration)> {
    use std::io::{Seek, Write};
    let mut file = tempfile::tempfile()?;
    let block = [7u8; 4096];
    let mut times = Vec::with_capacity(50);
    for _ in 0..50 {
        let started = Instant::now();
        file.rewind()?;
        file.write_all(&block)?;
        file.sync_all()?;
        times.push(started.elapsed());
    }
    times.sort_unstable();
    Ok((times[times.len() / 2], times[times.len() - 1]))
}

fn cpu_seconds_self() -> Option<f64> {
    cpu_seconds(std::process::id())
}
