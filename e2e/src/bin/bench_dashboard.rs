//! The dashboard benchmark (`e2e/bench/dashboard.sh`; see `e2e/bench/README.md`).
//!
//! The release `previewd serve` with a fleet's worth of history in its store
//! (`previewd_e2e::fleet`: 1,000 environments, 30 days of transitions), on SQLite then Postgres:
//!
//! 1. **Pages**: p50/p99/max of the environments page (`/`, 50 rows) for an API token and for a
//!    signed-in person whose session may read every repository (the listing then joins the
//!    session's repositories), searched and filtered, and of one environment's page. Requests go
//!    one at a time over one keep-alive loopback connection, each timed from sending it to having
//!    read the whole page: the server's time plus loopback.
//! 2. **Live updates**: the time from a change committed to the store (an expiry moved, with a
//!    note, through previewd's own store code) to its event arriving on a person's `/events`
//!    stream, with one stream open and then with `--streams` open (every one read, each must
//!    receive every change). Changes are written one at a time, each after a random pause of up
//!    to 250 ms, so they fall anywhere in the feed's 200 ms reading cycle.
//! 3. **Open streams**: previewd's resident memory before and with `--streams` streams open, and
//!    its CPU while they are idle for 10 s.
//!
//! The stream's reader parses Server-Sent Events as a browser does but runs no page script: the
//! browser's own share (parsing the JSON, updating one row) is not in the figure. A benchmark
//! prints figures; it fails only when a request is not answered 200 or a stream misses a change.

use anyhow::{Context, bail};
use futures::StreamExt;
use previewd_e2e::cli::{flags, number, stores};
use previewd_e2e::database::{Backend, POSTGRES_URL_ENV, drop_postgres, fresh};
use previewd_e2e::fleet::{FleetShape, OWNERS, Rng, admin_token, seed};
use previewd_e2e::measure::{cpu_seconds, load_average, percentile};
use previewd_e2e::previewd::Previewd;
use previewd_environments::store::{SessionRepository, Store};
use previewd_environments::time::now_ms;
use secrecy::ExposeSecret;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const USAGE: &str = "\
usage: bench_dashboard [options]
  --store sqlite|postgres|both  the stores to measure (default both)
  --environments N     environments seeded (default 1000)
  --requests N         measured requests per page kind (default 500)
  --warmup N           requests before measuring, per kind (default 50)
  --changes N          changes timed from the store to the stream, per round (default 200)
  --streams N          event streams held open (default 200)
  --previewd PATH      the previewd binary (default: target/release/previewd next to this binary)
Postgres comes from PREVIEWD_TEST_POSTGRES_URL (`eval \"$(e2e/postgres.sh up)\"`).";

struct Options {
    stores: Vec<Backend>,
    environments: u64,
    requests: usize,
    warmup: usize,
    changes: usize,
    streams: usize,
    previewd: PathBuf,
}

fn parse_options() -> anyhow::Result<Options> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let mut options = Options {
        stores: vec![Backend::Sqlite, Backend::Postgres],
        environments: 1_000,
        requests: 500,
        warmup: 50,
        changes: 200,
        streams: 200,
        previewd: exe.with_file_name("previewd"),
    };
    for (flag, value) in flags(USAGE)? {
        match flag.as_str() {
            "--store" => options.stores = stores(&value)?,
            "--environments" => options.environments = number::<u64>(&flag, &value)?.max(1),
            "--requests" => options.requests = number::<usize>(&flag, &value)?.max(1),
            "--warmup" => options.warmup = number(&flag, &value)?,
            "--changes" => options.changes = number::<usize>(&flag, &value)?.max(1),
            "--streams" => options.streams = number::<usize>(&flag, &value)?.max(1),
            "--previewd" => options.previewd = PathBuf::from(value),
            other => bail!("unknown option `{other}`\n{USAGE}"),
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = parse_options()?;
    if options.stores.contains(&Backend::Postgres) && std::env::var(POSTGRES_URL_ENV).is_err() {
        bail!(
            "{POSTGRES_URL_ENV} is not set: start Postgres with `eval \"$(e2e/postgres.sh up)\"` (dashboard.sh does)"
        );
    }
    println!(
        "dashboard benchmark: {} environments, 30 days of history; {} CPUs; load average before: {}",
        options.environments,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
    );
    let mut reports = Vec::new();
    for &backend in &options.stores {
        reports.push((backend, run(&options, backend).await?));
    }
    println!("\nload average after: {}", load_average());
    for (backend, report) in &reports {
        println!("\n{backend:?}:\n{report}");
    }
    Ok(())
}

/// How a request says who it is.
#[derive(Clone)]
enum Who {
    Token(String),
    Cookie(String),
}

impl Who {
    fn on(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Who::Token(token) => request.bearer_auth(token),
            Who::Cookie(cookie) => request.header("cookie", cookie),
        }
    }
}

/// `GET path` as `who`: the time to the whole answer, and its size; anything but 200 is an error.
async fn get(http: &reqwest::Client, base: &str, path: &str, who: &Who) -> anyhow::Result<(Duration, usize)> {
    let started = Instant::now();
    let response = who.on(http.get(format!("{base}{path}"))).send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    let took = started.elapsed();
    if status != reqwest::StatusCode::OK {
        bail!("GET {path}: {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok((took, body.len()))
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// A markdown row: label, n, p50, p99, max (ms), then `extra`.
fn row(label: &str, times: &mut [Duration], extra: &str) -> String {
    times.sort_unstable();
    let max = times.last().copied().unwrap_or_default();
    format!(
        "| {label} | {} | {} | {} | {} | {extra} |\n",
        times.len(),
        ms(percentile(times, 0.5)),
        ms(percentile(times, 0.99)),
        ms(max)
    )
}

/// Opens `/events` as `who`; each change event's environment is sent on the channel with the
/// time it arrived.
async fn open_stream(
    base: &str,
    who: &Who,
    events: mpsc::UnboundedSender<(Instant, serde_json::Value)>,
) -> anyhow::Result<()> {
    let response = who.on(reqwest::Client::new().get(format!("{base}/events"))).send().await?;
    if response.status() != reqwest::StatusCode::OK {
        bail!("GET /events: {}", response.status());
    }
    let bytes = futures::stream::unfold(response, |mut r| async move { r.chunk().await.transpose().map(|c| (c, r)) });
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(eventsource_stream::Eventsource::eventsource(bytes));
        while let Some(Ok(event)) = stream.next().await {
            if event.event == "change"
                && let Ok(change) = serde_json::from_str::<serde_json::Value>(&event.data)
                && events.send((Instant::now(), change["environment"].clone())).is_err()
            {
                return;
            }
        }
    });
    Ok(())
}

/// `changes` changes written to the store one after another, each timed until every stream has
/// sent it (the first stream's time is the latency; all must see each).
async fn time_changes(
    store: &Store,
    ids: &[i64],
    changes: usize,
    round: &str,
    streams: &mut [mpsc::UnboundedReceiver<(Instant, serde_json::Value)>],
) -> anyhow::Result<Vec<Duration>> {
    let mut rng = Rng(99);
    let mut times = Vec::with_capacity(changes);
    for i in 0..changes {
        let id = ids[rng.draw() as usize % ids.len()];
        let note = format!("bench {round} {i}");
        // Changes come at any moment of the feed's 200 ms reading cycle, not just after a read.
        tokio::time::sleep(Duration::from_millis(rng.draw() % 250)).await;
        let written = Instant::now();
        store.set_expiry(id, now_ms() + 3_600_000 + i as i64, Some(&note)).await?;
        for (n, stream) in streams.iter_mut().enumerate() {
            loop {
                let (at, environment) = tokio::time::timeout(Duration::from_secs(30), stream.recv())
                    .await
                    .with_context(|| format!("stream {n} did not send change {i} within 30 s"))?
                    .context("a stream ended")?;
                if environment["note"].as_str() == Some(note.as_str()) {
                    if n == 0 {
                        times.push(at - written);
                    }
                    break;
                }
            }
        }
    }
    Ok(times)
}

async fn run(options: &Options, backend: Backend) -> anyhow::Result<String> {
    println!("\n{backend:?}: load average {}", load_average());
    let database = fresh(backend).await?;
    let shape = FleetShape { environments: options.environments, days: 30, pushes_per_day: 3 };
    let seeded = seed(&shape, backend, &database.url).await?;
    let token = Who::Token(admin_token(&options.previewd, &database.url).await?);
    let store = Store::connect(&database.url.as_str().into()).await?;
    let readable: Vec<SessionRepository> =
        seeded.repo_ids.iter().map(|&repo_id| SessionRepository { repo_id, can_write: true }).collect();
    let (_, secret) = store.create_session("bench", false, now_ms() + 8 * 3_600_000, &readable).await?;
    let person = Who::Cookie(format!("previewd_session={}", secret.expose_secret()));

    let dir = tempfile::tempdir()?;
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates");
    let env = [
        ("PREVIEWD_DATABASE_URL".to_owned(), database.url.clone()),
        ("PREVIEWD_WEBHOOK_SECRETS".to_owned(), "bench-webhook-secret".to_owned()),
        ("PREVIEWD_TEMPLATES_DIR".to_owned(), templates.display().to_string()),
        ("PREVIEWD_LOG_FILTER".to_owned(), "warn".to_owned()),
    ];
    let mut previewd = Previewd::start(&options.previewd, &env, &dir.path().join("previewd.log"))
        .await
        .with_context(|| format!("starting {} (`cargo build --release -p previewd`)", options.previewd.display()))?;
    let (base, pid) = (previewd.base.clone(), previewd.pid());
    let http = reqwest::Client::new();
    let mut report = String::from("| what | n | p50 ms | p99 ms | max ms | |\n|---|---:|---:|---:|---:|---|\n");

    let owner = OWNERS[0];
    let pages = [
        ("environments page, API token (`/`)", "/".to_owned(), &token),
        ("environments page, signed-in person (`/`, 20 repositories)", "/".to_owned(), &person),
        ("search (`/?q=billing`)", "/?q=billing".to_owned(), &person),
        ("filtered (`/?state=Ready&owner=…`)", format!("/?state=Ready&owner={owner}"), &person),
    ];
    for (label, path, who) in pages {
        for _ in 0..options.warmup {
            get(&http, &base, &path, who).await?;
        }
        let cpu = pid.and_then(cpu_seconds);
        let (mut times, mut bytes) = (Vec::new(), 0);
        for _ in 0..options.requests {
            let (took, size) = get(&http, &base, &path, who).await?;
            times.push(took);
            bytes += size;
        }
        let per_request = cpu.zip(pid.and_then(cpu_seconds)).map(|(a, b)| (b - a) / options.requests as f64);
        let extra = format!(
            "{:.1} KiB, previewd CPU {} ms / request",
            bytes as f64 / options.requests as f64 / 1024.0,
            per_request.map_or_else(|| "?".to_owned(), |c| format!("{:.2}", c * 1000.0))
        );
        report.push_str(&row(label, &mut times, &extra));
    }
    let mut rng = Rng(7);
    let mut times = Vec::new();
    for i in 0..options.warmup + options.requests {
        let id = seeded.ids[rng.draw() as usize % seeded.ids.len()];
        let (took, _) = get(&http, &base, &format!("/environments/{id}"), &person).await?;
        if i >= options.warmup {
            times.push(took);
        }
    }
    report.push_str(&row("one environment's page (`/environments/{id}`, its whole history)", &mut times, ""));

    // Live updates with one stream, then with many.
    let (tx, rx) = mpsc::unbounded_channel();
    open_stream(&base, &person, tx).await?;
    let mut one = vec![rx];
    // The stream is open once a change arrives on it.
    time_changes(&store, &seeded.ids, 3, "warmup", &mut one).await?;
    let mut times = time_changes(&store, &seeded.ids, options.changes, "one", &mut one).await?;
    report.push_str(&row("a change in the store → its event on the stream, 1 stream open", &mut times, ""));

    let before = previewd.memory()?;
    let mut streams = one;
    for _ in 1..options.streams {
        let (tx, rx) = mpsc::unbounded_channel();
        open_stream(&base, &person, tx).await?;
        streams.push(rx);
    }
    time_changes(&store, &seeded.ids, 3, "warmup-many", &mut streams).await?;
    let with = previewd.memory()?;
    let idle_cpu = pid.and_then(cpu_seconds);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle = idle_cpu.zip(pid.and_then(cpu_seconds)).map(|(a, b)| (b - a) / 10.0);
    let cpu = pid.and_then(cpu_seconds);
    let mut times = time_changes(&store, &seeded.ids, options.changes, "many", &mut streams).await?;
    let busy = cpu.zip(pid.and_then(cpu_seconds)).map(|(a, b)| (b - a) / options.changes as f64);
    let label = format!("a change in the store → its event on every stream, {} streams open", options.streams);
    let extra =
        format!("previewd CPU {} ms / change", busy.map_or_else(|| "?".to_owned(), |c| format!("{:.2}", c * 1000.0)));
    report.push_str(&row(&label, &mut times, &extra));
    let mib = |b: u64| b as f64 / 1024.0 / 1024.0;
    report.push_str(&format!(
        "\npreviewd resident memory: {:.1} MiB with 1 stream open, {:.1} MiB with {} ({:.1} KiB a stream); \
         CPU while they are idle: {}\n",
        mib(before.rss_bytes),
        mib(with.rss_bytes),
        options.streams,
        (with.rss_bytes.saturating_sub(before.rss_bytes)) as f64 / 1024.0 / (options.streams - 1).max(1) as f64,
        idle.map_or_else(|| "?".to_owned(), |c| format!("{:.1} % of a core", c * 100.0)),
    ));
    drop(streams);
    store.close().await;
    previewd.stop().await?;
    if backend == Backend::Postgres {
        drop_postgres(&database.url).await?;
    }
    println!("{backend:?}: load average after {}", load_average());
    Ok(report)
}
