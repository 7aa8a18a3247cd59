//! The admin API benchmark (`e2e/bench/api.sh`; see `e2e/bench/README.md`).
//!
//! How fast the release `previewd serve` answers the platform team's reads with a fleet's worth
//! of history in its store: `GET /api/v1/environments` (the first page of 100, every page through
//! `next_cursor`, filtered), `GET /api/v1/environments/{id}` and `GET /api/v1/usage` over its
//! default 30 days. First on a fresh SQLite file, then on a fresh Postgres database.
//!
//! The store is seeded with rows written directly, with the timestamps they would have (as
//! `bench_retention` does): `--environments` environments (default 1,000) over 20 repositories
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
use previewd_e2e::cli::{flags, number};
use previewd_e2e::database::{Backend, POSTGRES_URL_ENV, drop_postgres, fresh};
use previewd_e2e::measure::{cpu_seconds, load_average, machine_jiffies, percentile};
use previewd_e2e::previewd::Previewd;
use previewd_environments::store::Store;
use previewd_environments::time::now_ms;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const SECOND: i64 = 1_000;
const HOUR: i64 = 3_600 * SECOND;
const DAY: i64 = 24 * HOUR;
const MIB: i64 = 1024 * 1024;

const OWNERS: [&str; 4] = ["acme", "globex", "initech", "umbrella"];
/// Environments per owner, in percent: a few teams open most pull requests.
const OWNER_SHARE: [u64; 4] = [40, 30, 20, 10];
const REPOSITORIES: [&str; 5] = ["web", "api", "billing", "search", "mobile-backend"];
const FAILURES: [&str; 3] = [
    "deployment web: container web: ImagePullBackOff (image ghcr.io/acme/web:pr not found)",
    "deployment web: container web: CrashLoopBackOff (exit code 1)",
    "rollout did not finish within 600 s: 0 of 1 replicas ready",
];

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
            "--store" => {
                options.stores = match value.as_str() {
                    "sqlite" => vec![Backend::Sqlite],
                    "postgres" => vec![Backend::Postgres],
                    "both" => vec![Backend::Sqlite, Backend::Postgres],
                    other => bail!("--store {other}: sqlite, postgres or both"),
                }
            }
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
// Seeding

/// splitmix64: the same fleet on every run, without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high)`.
    fn range(&mut self, low: i64, high: i64) -> i64 {
        low + (self.next() % (high - low).max(1) as u64) as i64
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn sha(&mut self) -> String {
        format!("{:016x}{:016x}{:08x}", self.next(), self.next(), self.next() as u32)
    }
}

struct Transition {
    from: Option<&'static str>,
    to: &'static str,
    head_sha: String,
    reason: Option<&'static str>,
    at: i64,
    /// Copied from the environment when written: none before its first rollout.
    requests: Option<(i64, i64)>,
    actor: String,
}

/// One environment and its history, as previewd would have written them.
struct Planned {
    repo: (usize, usize),
    pr_number: i64,
    author: String,
    created_at: i64,
    requests: (i64, i64),
    /// As the last transition left it.
    state: &'static str,
    head_sha: String,
    reason: Option<&'static str>,
    updated_at: i64,
    last_push: i64,
    deployed_sha: Option<String>,
    transitions: Vec<Transition>,
}

impl Planned {
    fn owner(&self) -> &'static str {
        OWNERS[self.repo.0]
    }

    fn repository(&self) -> &'static str {
        REPOSITORIES[self.repo.1]
    }

    fn namespace(&self) -> String {
        format!("pr-{}-{}-{}", self.pr_number, self.repository(), self.owner())
    }

    /// Moves it to `to` at `at`, as previewd writes a transition.
    fn record(&mut self, to: &'static str, reason: Option<&'static str>, at: i64, actor: String) {
        let rolled_out = self.transitions.iter().any(|t| t.to == "Provisioning") || to == "Provisioning";
        self.transitions.push(Transition {
            from: (!self.transitions.is_empty()).then_some(self.state),
            to,
            head_sha: self.head_sha.clone(),
            reason,
            at,
            requests: rolled_out.then_some(self.requests),
            actor,
        });
        (self.state, self.reason, self.updated_at) = (to, reason, at);
        match to {
            "Pending" => self.last_push = at,
            "Ready" => self.deployed_sha = Some(self.head_sha.clone()),
            _ => {}
        }
    }
}

/// The fleet: environments opened on the first day, pushed to since, some closed.
fn plan(options: &Options, now: i64) -> Vec<Planned> {
    let mut rng = Rng(14);
    let start = now - options.days * DAY;
    let gap = DAY / options.pushes_per_day as i64;
    let mut next_pr: HashMap<(usize, usize), i64> = HashMap::new();
    let mut fleet = Vec::new();
    for _ in 0..options.environments {
        let pick = rng.next() % 100;
        let owner = (0..OWNERS.len()).find(|o| pick < OWNER_SHARE[..=*o].iter().sum()).unwrap_or(0);
        let repo = (owner, (rng.next() % REPOSITORIES.len() as u64) as usize);
        let pr_number = next_pr.entry(repo).or_insert(100);
        *pr_number += 1;
        let created_at = start + rng.range(0, DAY);
        let mut env = Planned {
            repo,
            pr_number: *pr_number,
            author: format!("dev-{:02}", rng.next() % 60),
            created_at,
            requests: (250 * rng.range(1, 9), 256 * MIB * rng.range(1, 9)),
            state: "Pending",
            head_sha: String::new(),
            reason: None,
            updated_at: created_at,
            last_push: created_at,
            deployed_sha: None,
            transitions: Vec::new(),
        };
        let closed_at = rng.chance(12).then(|| now - rng.range(HOUR, options.days * DAY / 2));
        let end = closed_at.unwrap_or(now - 10 * 60 * SECOND);
        let (mut at, mut event) = (created_at, "pull_request.opened");
        // Each push: Pending, Provisioning a few seconds later, Ready (or Failed) when the
        // rollout ends; the next push a few times a day, irregularly.
        while at < end {
            env.head_sha = rng.sha();
            env.record("Pending", None, at, format!("{event} by @{}", env.author));
            let provisioning = at + rng.range(SECOND, 5 * SECOND);
            env.record("Provisioning", None, provisioning, "previewd".to_owned());
            let done = provisioning + rng.range(20 * SECOND, 120 * SECOND);
            if rng.chance(10) {
                let reason = FAILURES[(rng.next() % FAILURES.len() as u64) as usize];
                env.record("Failed", Some(reason), done, "previewd".to_owned());
            } else {
                env.record("Ready", None, done, "previewd".to_owned());
            }
            at += rng.range(gap / 5, 9 * gap / 5);
            event = "pull_request.synchronize";
        }
        if let Some(closed_at) = closed_at {
            // After the last rollout, which may have ended after the planned close.
            let closed_at = closed_at.max(env.updated_at + 60 * SECOND);
            env.record("Deleting", None, closed_at, format!("pull_request.closed by @{}", env.author));
            let deleted = closed_at + rng.range(6 * SECOND, 40 * SECOND);
            env.record("Deleted", None, deleted, "previewd".to_owned());
        }
        fleet.push(env);
    }
    fleet
}

/// An SQL string literal.
fn text(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn or_null<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "NULL".to_owned(), |v| v.to_string())
}

/// The `INSERT`s of the environments, `batch` rows each.
fn environment_inserts(fleet: &[Planned], now: i64, batch: usize) -> Vec<String> {
    fleet
        .chunks(batch)
        .map(|chunk| {
            let rows: Vec<String> = chunk
                .iter()
                .map(|env| {
                    let live = env.state != "Deleted";
                    let url = format!("https://{}.preview.example.com", env.namespace());
                    format!(
                        "({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
                        1000 + env.repo.0 * 10 + env.repo.1,
                        text(env.owner()),
                        text(env.repository()),
                        env.pr_number,
                        text(&env.head_sha),
                        text(&format!("feature/{}-{}", env.author, env.pr_number)),
                        text(&env.author),
                        text(env.state),
                        or_null(env.reason.map(text)),
                        env.created_at,
                        env.updated_at,
                        or_null(live.then(|| (env.last_push + 3 * DAY).max(now + HOUR))),
                        text(&env.namespace()),
                        or_null((live && env.deployed_sha.is_some()).then(|| text(&url))),
                        env.last_push,
                        or_null(env.deployed_sha.as_deref().map(text)),
                        env.requests.0,
                        env.requests.1,
                        or_null(live.then_some(env.created_at)),
                    )
                })
                .collect();
            format!(
                "INSERT INTO environments (repo_id, repo_owner, repo_name, pr_number, head_sha, head_branch, author, \
                 state, reason, created_at, updated_at, expires_at, name, url, last_activity_at, deployed_sha, \
                 requests_cpu_millis, requests_memory_bytes, admitted_at) VALUES {}",
                rows.join(", ")
            )
        })
        .collect()
}

/// The `INSERT`s of every transition, `batch` rows each; `ids` by namespace.
fn transition_inserts(fleet: &[Planned], ids: &HashMap<String, i64>, batch: usize) -> anyhow::Result<Vec<String>> {
    let mut rows = Vec::new();
    for env in fleet {
        let id = ids.get(&env.namespace()).with_context(|| format!("no id for {}", env.namespace()))?;
        for t in &env.transitions {
            rows.push(format!(
                "({id}, {}, {}, {}, {}, {}, {}, {}, {})",
                or_null(t.from.map(text)),
                text(t.to),
                text(&t.head_sha),
                or_null(t.reason.map(text)),
                t.at,
                or_null(t.requests.map(|r| r.0)),
                or_null(t.requests.map(|r| r.1)),
                text(&t.actor),
            ));
        }
    }
    Ok(rows
        .chunks(batch)
        .map(|chunk| {
            format!(
                "INSERT INTO environment_transitions (environment_id, from_state, to_state, head_sha, reason, at, \
                 requests_cpu_millis, requests_memory_bytes, actor) VALUES {}",
                chunk.join(", ")
            )
        })
        .collect())
}

/// The benchmark's own connection to the store, for writing the seeded rows.
enum Db {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Db {
    async fn connect(backend: Backend, url: &str) -> anyhow::Result<Db> {
        Ok(match backend {
            Backend::Sqlite => {
                Db::Sqlite(sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect(url).await?)
            }
            Backend::Postgres => {
                Db::Postgres(sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(url).await?)
            }
        })
    }

    /// Runs `statements` in one transaction.
    async fn execute(&self, statements: &[String]) -> anyhow::Result<()> {
        macro_rules! all {
            ($pool:expr) => {{
                let mut tx = $pool.begin().await?;
                for statement in statements {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.as_str())).execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }};
        }
        match self {
            Db::Sqlite(pool) => all!(pool),
            Db::Postgres(pool) => all!(pool),
        }
        Ok(())
    }

    /// `(name, id)` of every environment.
    async fn environment_ids(&self) -> anyhow::Result<HashMap<String, i64>> {
        let query = "SELECT name, id FROM environments";
        let rows: Vec<(String, i64)> = match self {
            Db::Sqlite(pool) => sqlx::query_as(query).fetch_all(pool).await?,
            Db::Postgres(pool) => sqlx::query_as(query).fetch_all(pool).await?,
        };
        Ok(rows.into_iter().collect())
    }

    async fn count(&self, table: &str) -> anyhow::Result<i64> {
        let query = format!("SELECT COUNT(*) FROM {table}");
        let query = sqlx::AssertSqlSafe(query.as_str());
        Ok(match self {
            Db::Sqlite(pool) => sqlx::query_scalar(query).fetch_one(pool).await?,
            Db::Postgres(pool) => sqlx::query_scalar(query).fetch_one(pool).await?,
        })
    }

    async fn close(&self) {
        match self {
            Db::Sqlite(pool) => pool.close().await,
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

/// What the seeded store holds, for checking the answers.
struct Seeded {
    environments: usize,
    /// Ids of the environments, newest first.
    ids: Vec<i64>,
    /// Environments of the filtered listing.
    ready_of_first_owner: usize,
    /// Repositories with an environment.
    repositories: usize,
}

async fn seed(options: &Options, backend: Backend, url: &str) -> anyhow::Result<Seeded> {
    let store = Store::connect(&url.into()).await.context("connecting to the store")?;
    store.migrate().await.context("migrating the store")?;
    store.close().await;
    let started = Instant::now();
    let now = now_ms();
    let fleet = plan(options, now);
    let db = Db::connect(backend, url).await?;
    db.execute(&environment_inserts(&fleet, now, 500)).await.context("writing the environments")?;
    let ids = db.environment_ids().await?;
    db.execute(&transition_inserts(&fleet, &ids, 1_000)?).await.context("writing the transitions")?;
    if backend == Backend::Postgres {
        // Autovacuum analyses a table this size within a minute of the load; do it now.
        db.execute(&["ANALYZE".to_owned()]).await?;
    }
    let mut states: HashMap<&str, usize> = HashMap::new();
    for env in &fleet {
        *states.entry(env.state).or_default() += 1;
    }
    let mut states: Vec<String> = states.into_iter().map(|(s, n)| format!("{s} {n}")).collect();
    states.sort();
    let repositories = fleet.iter().map(|e| e.repo).collect::<BTreeSet<_>>().len();
    println!(
        "{backend:?}: seeded {} environments ({}) in {} repositories of {} owners, {} transitions, in {:.1} s",
        db.count("environments").await?,
        states.join(", "),
        repositories,
        OWNERS.len(),
        db.count("environment_transitions").await?,
        started.elapsed().as_secs_f64(),
    );
    db.close().await;
    let mut ids: Vec<i64> = ids.into_values().collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    Ok(Seeded {
        environments: fleet.len(),
        ids,
        ready_of_first_owner: fleet.iter().filter(|e| e.repo.0 == 0 && e.state == "Ready").count(),
        repositories,
    })
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

/// One kind of request, measured.
struct Phase {
    label: String,
    times: Vec<Duration>,
    bytes: usize,
    server_cpu: Option<f64>,
    machine_busy: Option<f64>,
}

/// Times requests while sampling previewd's CPU and the machine's.
struct Clock {
    pid: Option<u32>,
    cpu: Option<f64>,
    machine: Option<(f64, f64)>,
    times: Vec<Duration>,
    bytes: usize,
}

impl Clock {
    fn start(pid: Option<u32>) -> Clock {
        Clock { pid, cpu: pid.and_then(cpu_seconds), machine: machine_jiffies(), times: Vec::new(), bytes: 0 }
    }

    fn record(&mut self, took: Duration, body: &[u8]) {
        self.times.push(took);
        self.bytes += body.len();
    }

    fn stop(mut self, label: impl Into<String>) -> Phase {
        let cpu = self.pid.and_then(cpu_seconds);
        let machine = machine_jiffies();
        self.times.sort_unstable();
        let n = self.times.len().max(1);
        Phase {
            label: label.into(),
            bytes: self.bytes / n,
            server_cpu: self.cpu.zip(cpu).map(|(a, b)| (b - a) / n as f64),
            machine_busy: self
                .machine
                .zip(machine)
                .and_then(|((b0, t0), (b1, t1))| (t1 > t0).then(|| (b1 - b0) / (t1 - t0))),
            times: self.times,
        }
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
    let seeded = seed(options, backend, &database.url).await?;

    let dir = tempfile::tempdir()?;
    let env = [
        ("PREVIEWD_DATABASE_URL".to_owned(), database.url.clone()),
        ("PREVIEWD_WEBHOOK_SECRETS".to_owned(), "bench-webhook-secret".to_owned()),
        ("PREVIEWD_LOG_FILTER".to_owned(), "warn".to_owned()),
    ];
    let token = create_token(options, &database.url).await?;
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
    while clock.times.len() < count {
        for (took, bytes) in walk(&api, "limit=100").await?.1 {
            clock.times.push(took);
            clock.bytes += bytes;
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
        api.get(&format!("/api/v1/environments/{}", seeded.ids[rng.next() as usize % seeded.ids.len()])).await?;
    }
    let mut clock = Clock::start(pid);
    for _ in 0..count {
        let id = seeded.ids[rng.next() as usize % seeded.ids.len()];
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

/// `previewd token create --name bench --scope admin` on the store: the token it prints.
async fn create_token(options: &Options, url: &str) -> anyhow::Result<String> {
    let output = tokio::process::Command::new(&options.previewd)
        .args(["token", "create", "--name", "bench", "--scope", "admin"])
        .env("PREVIEWD_DATABASE_URL", url)
        .env("PREVIEWD_LOG_FILTER", "warn")
        .output()
        .await
        .with_context(|| format!("running {} token create", options.previewd.display()))?;
    if !output.status.success() {
        bail!("previewd token create: {}: {}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    let token = String::from_utf8(output.stdout)?.trim().to_owned();
    if token.is_empty() || token.contains(char::is_whitespace) {
        bail!("previewd token create printed no single token");
    }
    Ok(token)
}

fn print_table(phases: &[Phase]) {
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
    println!("| request | n | p50 | p99 | max | answer | previewd CPU / request | machine busy |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for phase in phases {
        println!(
            "| {} | {} | {} | {} | {} | {:.1} KiB | {} | {} |",
            phase.label,
            phase.times.len(),
            ms(percentile(&phase.times, 0.50)),
            ms(percentile(&phase.times, 0.99)),
            ms(phase.times.last().copied().unwrap_or_default()),
            phase.bytes as f64 / 1024.0,
            phase.server_cpu.map_or_else(|| "?".to_owned(), |c| format!("{:.2} ms", c * 1000.0)),
            phase.machine_busy.map_or_else(|| "?".to_owned(), |b| format!("{:.0} %", b * 100.0)),
        );
    }
}
