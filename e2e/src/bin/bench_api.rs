//! The admin API benchmark (`e2e/bench/api.sh`; see `e2e/bench/README.md`).
//!
//! How fast the release `previewd serve` answers the platform team's reads with a fleet's worth
//! of history in its store: `GET /api/v1/environments` (the first page of 100, every page through
//! `next_cursor`, filtered), `GET /api/v1/environments/{id}` and `GET /api/v1/usage` over its
//! default 30 days. First on a fresh SQLite file, then on a fresh Postgres database.
//!
//! The store is seeded by `previewd_e2e::fleet` with rows written directly, with the timestamps
//! they would have (as `bench_retention` does): `--environments` environments (default 1,000) over 20 repositories
//! of 4 owners, each opened on the first of `--days` days (default 30) and pushed to about
//! `--pushes-per-day` times a day (default 3) since: every push is `Pending` → `Provisioning` →
//! `Ready` (one in ten `Failed`), each transition with the requests previewd records on it. One
//! in eight environments is closed during the last half of the period (`Deleting` → `Deleted`).
//! That is the most history the default retention keeps (32 days of transitions).
//!
//! Requests are sent one at a time over one keep-alive loopback connection, each timed from
//! sending it to having read the whole answer: the server's time plus loopback. Printed per
//! store and request: p50, p99, max, answer size and previewd's CPU per request, with the load
//! average. A benchmark prints figures; it fails only when a request is not answered 200 or an
//! answer is not what the seeded store holds.

use anyhow::{Context, bail};
use previewd_e2e::cli::{flags, number, stores};
use previewd_e2e::database::{Backend, POSTGRES_URL_ENV, drop_postgres, fresh};
use previewd_e2e::fleet::{FleetShape, OWNERS, REPOSITORIES, Rng, admin_token, seed};
use previewd_e2e::measure::{Clock, Phase, load_average, print_table};
use previewd_e2e::previewd::Previewd;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: bench_api [options]
  --store sqlite|postgres|both  the stores to measure (default both)
  --environments N     environments seeded (default 1000)
  --days N             days of history (default 30)
  --pushes-per-day N   pushes per environment and day, on average (default 3)
  --requests N         measured requests per listing and detail kind (default 500)
  --usage-requests N   measured usage requests (default 50)
  --warmup N           requests before measuring, per kind (default 50; usage: a tenth)
  --previewd PATH      the previewd binary (default: target/release/previewd next to this binary)
Postgres comes from PREVIEWD_TEST_POSTGRES_URL (`eval \"$(e2e/postgres.sh up)\"`).";

struct Options {
    stores: Vec<Backend>,
    environments: u64,
    days: i64,
    pushes_per_day: u64,
    requests: usize,
    usage_requests: usize,
    warmup: usize,
    previewd: PathBuf,
}

impl Options {
    fn shape(&self) -> FleetShape {
        FleetShape { environments: self.environments, days: self.days, pushes_per_day: self.pushes_per_day }
    }
}

fn parse_options() -> anyhow::Result<Options> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let mut options = Options {
        stores: vec![Backend::Sqlite, Backend::Postgres],
        environments: 1_000,
        days: 30,
        pushes_per_day: 3,
        requests: 500,
        usage_requests: 50,
        warmup: 50,
        previewd: exe.with_file_name("previewd"),
    };
    for (flag, value) in flags(USAGE)? {
        match flag.as_str() {
            "--store" => options.stores = stores(&value)?,
            "--environments" => options.environments = number::<u64>(&flag, &value)?.max(1),
            "--days" => options.days = number::<i64>(&flag, &value)?.max(1),
            "--pushes-per-day" => options.pushes_per_day = number::<u64>(&flag, &value)?.max(1),
            "--requests" => options.requests = number::<usize>(&flag, &value)?.max(1),
            "--usage-requests" => options.usage_requests = number::<usize>(&flag, &value)?.max(1),
            "--warmup" => options.warmup = number(&flag, &value)?,
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
        bail!("{POSTGRES_URL_ENV} is not set: start Postgres with `eval \"$(e2e/postgres.sh up)\"` (api.sh does)");
    }
    println!(
        "admin API benchmark: {} environments, {} days of history, about {} pushes per environment and day; \
         {} CPUs; load average before: {}",
        options.environments,
        options.days,
        options.pushes_per_day,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
    );
    let mut results = Vec::new();
    for &backend in &options.stores {
        results.push((backend, run(&options, backend).await?));
    }
    println!("\nload average after: {}", load_average());
    for (backend, phases) in &results {
        println!("\n{backend:?}, ms (requests one at a time over one keep-alive loopback connection):");
        print_table(phases);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Measuring

/// The API over one keep-alive connection.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// `GET path`: how long until the whole answer was read, and the answer. Anything but 200
    /// is an error.
    async fn get(&self, path: &str) -> anyhow::Result<(Duration, bytes::Bytes)> {
        let started = Instant::now();
        let response = self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        let took = started.elapsed();
        if status != reqwest::StatusCode::OK {
            bail!("GET {path}: {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok((took, body))
    }
}

/// `GET path` `warmup` times, then `count` times measured.
async fn repeat(
    api: &Api,
    pid: Option<u32>,
    label: &str,
    path: &str,
    warmup: usize,
    count: usize,
) -> anyhow::Result<Phase> {
    for _ in 0..warmup {
        api.get(path).await?;
    }
    let mut clock = Clock::start(pid);
    for _ in 0..count {
        let (took, body) = api.get(path).await?;
        clock.record(took, &body);
    }
    Ok(clock.stop(label))
}

#[derive(serde::Deserialize)]
struct Page {
    environments: Vec<serde_json::Value>,
    next_cursor: Option<String>,
}

fn page(body: &[u8]) -> anyhow::Result<Page> {
    serde_json::from_slice(body).context("reading a page of environments")
}

/// Every page of `query`, following `next_cursor`: the ids, in order, and each page's time.
async fn walk(api: &Api, query: &str) -> anyhow::Result<(Vec<i64>, Vec<(Duration, usize)>)> {
    let (mut ids, mut pages) = (Vec::new(), Vec::new());
    let mut path = format!("/api/v1/environments?{query}");
    loop {
        let (took, body) = api.get(&path).await?;
        pages.push((took, body.len()));
        let page = page(&body)?;
        ids.extend(page.environments.iter().filter_map(|e| e["id"].as_i64()));
        match page.next_cursor {
            Some(cursor) => path = format!("/api/v1/environments?{query}&cursor={cursor}"),
            None => return Ok((ids, pages)),
        }
    }
}

async fn run(options: &Options, backend: Backend) -> anyhow::Result<Vec<Phase>> {
    println!("\n{backend:?}: load average {}", load_average());
    let database = fresh(backend).await?;
    let seeded = seed(&options.shape(), backend, &database.url).await?;

    let dir = tempfile::tempdir()?;
    let env = [
        ("PREVIEWD_DATABASE_URL".to_owned(), database.url.clone()),
        ("PREVIEWD_WEBHOOK_SECRETS".to_owned(), "bench-webhook-secret".to_owned()),
        ("PREVIEWD_LOG_FILTER".to_owned(), "warn".to_owned()),
    ];
    let token = admin_token(&options.previewd, &database.url).await?;
    let mut previewd = Previewd::start(&options.previewd, &env, &dir.path().join("previewd.log"))
        .await
        .with_context(|| format!("starting {} (`cargo build --release -p previewd`)", options.previewd.display()))?;
    let pid = previewd.pid();
    let api = Api { http: reqwest::Client::new(), base: previewd.base.clone(), token };
    let (warmup, count) = (options.warmup, options.requests);
    let mut phases = Vec::new();

    let first = "/api/v1/environments?limit=100";
    phases.push(repeat(&api, pid, "list, first page (`?limit=100`)", first, warmup, count).await?);

    // Every page, as often as it takes to send `count` requests (whole walks).
    let (ids, _) = walk(&api, "limit=100").await?;
    if ids != seeded.ids {
        bail!(
            "walking the pages gave {} environments, not the {} seeded, newest first",
            ids.len(),
            seeded.environments
        );
    }
    let mut clock = Clock::start(pid);
    while clock.count() < count {
        for (took, bytes) in walk(&api, "limit=100").await?.1 {
            clock.record_size(took, bytes);
        }
    }
    let pages = seeded.environments.div_ceil(100);
    phases.push(clock.stop(format!("list, every page through `next_cursor` ({pages} pages a walk)")));

    let owner = OWNERS[0];
    let filtered = format!("state=Ready&owner={owner}&limit=100");
    let (ready, _) = walk(&api, &filtered).await?;
    if ready.len() != seeded.ready_of_first_owner || ready.iter().collect::<BTreeSet<_>>().len() != ready.len() {
        bail!("`?{filtered}` walked to {} environments, not the {} seeded", ready.len(), seeded.ready_of_first_owner);
    }
    let label = format!("list, filtered first page (`?{filtered}`, {} match)", ready.len());
    phases.push(repeat(&api, pid, &label, &format!("/api/v1/environments?{filtered}"), warmup, count).await?);

    let repository = format!("repository={owner}/{}&limit=100", REPOSITORIES[0]);
    let label = format!("list, one repository (`?{repository}`)");
    phases.push(repeat(&api, pid, &label, &format!("/api/v1/environments?{repository}"), warmup, count).await?);

    // Detail: environments spread over the ids, each with its whole history.
    let mut rng = Rng(7);
    for _ in 0..warmup {
        api.get(&format!("/api/v1/environments/{}", seeded.ids[rng.draw() as usize % seeded.ids.len()])).await?;
    }
    let mut clock = Clock::start(pid);
    for _ in 0..count {
        let id = seeded.ids[rng.draw() as usize % seeded.ids.len()];
        let (took, body) = api.get(&format!("/api/v1/environments/{id}")).await?;
        clock.record(took, &body);
    }
    phases.push(clock.stop("one environment with its history (`/environments/{id}`)"));

    let usage_warmup = (options.warmup / 10).max(1);
    let usage =
        repeat(&api, pid, "usage, the last 30 days (`/usage`)", "/api/v1/usage", usage_warmup, options.usage_requests)
            .await?;
    let (_, body) = api.get("/api/v1/usage").await?;
    let answer: serde_json::Value = serde_json::from_slice(&body).context("reading the usage answer")?;
    let groups = answer["groups"].as_array().context("the usage answer has no `groups`")?;
    let sum = |field: &str| groups.iter().filter_map(|g| g[field].as_f64()).sum::<f64>();
    println!(
        "{backend:?}: usage: {} repositories, {} environments, {:.0} environment-hours, {:.0} CPU-hours, \
         {:.0} GiB-hours",
        groups.len(),
        sum("environments"),
        sum("environment_hours"),
        sum("cpu_hours"),
        sum("memory_gib_hours"),
    );
    if groups.len() != seeded.repositories {
        bail!("usage has {} repositories, not the {} seeded", groups.len(), seeded.repositories);
    }
    phases.push(usage);

    previewd.stop().await?;
    if backend == Backend::Postgres {
        drop_postgres(&database.url).await?;
    }
    println!("{backend:?}: load average after {}", load_average());
    Ok(phases)
}
