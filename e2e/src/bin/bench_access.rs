//! The forward-authentication benchmark (`e2e/bench/access.sh`; see `e2e/bench/README.md`).
//!
//! How long the release `previewd serve` takes to decide on a visit to a preview
//! (`GET /_previewd/auth?mode=nginx`, as nginx's `auth_request` asks it before every request)
//! with `--environments` environments (default 1,000) in its store: the fleet of the admin API
//! benchmark (`previewd_e2e::fleet`, 30 days of history), with `protection: github` and one
//! repository overridden to `none`. First on a fresh SQLite file, then on a fresh Postgres
//! database.
//!
//! Each kind of visit goes to hosts drawn at random from the live environments it applies to:
//! a person signed in who may read the repository (the host index in memory, then three indexed
//! reads: the environment, the preview cookie's session, the session's repository), one who may
//! not, someone not signed in, a bypass token, a share link's cookie, a public repository's
//! preview, and a host that is no preview's. Requests are sent one at a time over one keep-alive
//! loopback connection (the server's time plus loopback), then by 8 clients at once. Visits let
//! through are written in the background as in production (at most every 2 s per environment).
//!
//! previewd runs with its engine against the local control plane (the gate is served only with
//! a policy, and a policy starts the engine); the drift repair is spread over a week so that the
//! periodic pass reconciles next to nothing while the visits are measured.
//!
//! It prints p50, p99 and max per kind with previewd's CPU per request and the load average, and
//! fails only when an answer is not the one the seeded store calls for.

use anyhow::{Context, bail};
use previewd_e2e::cli::{flags, number, stores};
use previewd_e2e::database::{Backend, POSTGRES_URL_ENV, drop_postgres, fresh};
use previewd_e2e::fleet::{FleetShape, OWNERS, REPOSITORIES, Rng, seed};
use previewd_e2e::measure::{Clock, Phase, load_average, print_table};
use previewd_e2e::previewd::Previewd;
use previewd_environments::store::{SessionRepository, Store};
use previewd_environments::time::now_ms;
use secrecy::ExposeSecret;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: bench_access [options]
  --store sqlite|postgres|both  the stores to measure (default both)
  --environments N     environments seeded (default 1000)
  --requests N         measured requests per kind (default 2000)
  --warmup N           requests before measuring, per kind (default 200)
  --previewd PATH      the previewd binary (default: target/release/previewd next to this binary)
Postgres comes from PREVIEWD_TEST_POSTGRES_URL (`eval \"$(e2e/postgres.sh up)\"`), the cluster
from PREVIEWD_TEST_KUBECONFIG (`eval \"$(e2e/controlplane/cluster.sh env)\"`).";

const BASE_DOMAIN: &str = "preview.example.com";
const BROWSER: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36";
/// Clients at once in the concurrent phase.
const CLIENTS: usize = 8;

struct Options {
    stores: Vec<Backend>,
    environments: u64,
    requests: usize,
    warmup: usize,
    previewd: PathBuf,
}

fn parse_options() -> anyhow::Result<Options> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let mut options = Options {
        stores: vec![Backend::Sqlite, Backend::Postgres],
        environments: 1_000,
        requests: 2_000,
        warmup: 200,
        previewd: exe.with_file_name("previewd"),
    };
    for (flag, value) in flags(USAGE)? {
        match flag.as_str() {
            "--store" => options.stores = stores(&value)?,
            "--environments" => options.environments = number::<u64>(&flag, &value)?.max(1),
            "--requests" => options.requests = number::<usize>(&flag, &value)?.max(1),
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
        bail!("{POSTGRES_URL_ENV} is not set: start Postgres with `eval \"$(e2e/postgres.sh up)\"` (access.sh does)");
    }
    let kubeconfig = std::env::var("PREVIEWD_TEST_KUBECONFIG")
        .context("PREVIEWD_TEST_KUBECONFIG is not set: start the cluster with `eval \"$(e2e/controlplane/cluster.sh env)\"` (access.sh does)")?;
    println!(
        "forward-authentication benchmark: {} environments; {} CPUs; load average before: {}",
        options.environments,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
    );
    let mut results = Vec::new();
    for &backend in &options.stores {
        results.push((backend, run(&options, backend, Path::new(&kubeconfig)).await?));
    }
    println!("\nload average after: {}", load_average());
    for (backend, phases) in &results {
        println!("\n{backend:?}, ms (`GET /_previewd/auth?mode=nginx` over keep-alive loopback connections):");
        print_table(phases);
    }
    Ok(())
}

/// A kind of visit: who, where, and the status the store calls for.
struct Visit {
    label: String,
    hosts: Vec<String>,
    headers: Vec<(&'static str, String)>,
    expect: u16,
}

/// The endpoint, as nginx asks it.
struct Gate {
    http: reqwest::Client,
    url: String,
}

impl Gate {
    async fn ask(&self, visit: &Visit, host: &str) -> anyhow::Result<Duration> {
        let mut request = self
            .http
            .get(&self.url)
            .header("x-original-url", format!("https://{host}/products?page=2"))
            .header("user-agent", BROWSER);
        for (name, value) in &visit.headers {
            request = request.header(*name, value);
        }
        let started = Instant::now();
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = response.bytes().await?;
        let took = started.elapsed();
        if status != visit.expect {
            bail!("{}: {host}: {status}, not {}: {}", visit.label, visit.expect, String::from_utf8_lossy(&body));
        }
        Ok(took)
    }
}

/// `visit` `warmup` times, then `count` times measured, one at a time.
async fn one_at_a_time(
    gate: &Gate,
    pid: Option<u32>,
    visit: &Visit,
    warmup: usize,
    count: usize,
) -> anyhow::Result<Phase> {
    let mut rng = Rng(11);
    let mut pick = || visit.hosts[rng.draw() as usize % visit.hosts.len()].clone();
    for _ in 0..warmup {
        gate.ask(visit, &pick()).await?;
    }
    let mut clock = Clock::start(pid);
    for _ in 0..count {
        let took = gate.ask(visit, &pick()).await?;
        clock.record_size(took, 0);
    }
    Ok(clock.stop(format!("{} (n={}, one at a time)", visit.label, visit.hosts.len())))
}

/// `visit` `count` times in all from [`CLIENTS`] clients at once, each on its own connection.
async fn at_once(base: &str, pid: Option<u32>, visit: &Visit, count: usize) -> anyhow::Result<Phase> {
    let mut clock = Clock::start(pid);
    let started = Instant::now();
    let per_client = count.div_ceil(CLIENTS);
    let clients = (0..CLIENTS).map(|c| async move {
        let gate = Gate { http: reqwest::Client::new(), url: format!("{base}/_previewd/auth?mode=nginx") };
        let mut rng = Rng(100 + c as u64);
        let mut times = Vec::with_capacity(per_client);
        for _ in 0..per_client {
            let host = &visit.hosts[rng.draw() as usize % visit.hosts.len()];
            times.push(gate.ask(visit, host).await?);
        }
        anyhow::Ok(times)
    });
    for times in futures::future::try_join_all(clients).await? {
        for took in times {
            clock.record_size(took, 0);
        }
    }
    let per_second = clock.count() as f64 / started.elapsed().as_secs_f64();
    Ok(clock.stop(format!("{} ({CLIENTS} clients at once: {per_second:.0} decisions/s)", visit.label)))
}

async fn run(options: &Options, backend: Backend, kubeconfig: &Path) -> anyhow::Result<Vec<Phase>> {
    println!("\n{backend:?}: load average {}", load_average());
    let database = fresh(backend).await?;
    let shape = FleetShape { environments: options.environments, days: 30, pushes_per_day: 3 };
    let seeded = seed(&shape, backend, &database.url).await?;
    let store = Store::connect(&database.url.clone().into()).await.context("connecting to the store")?;

    // Who visits: a reviewer who may read every repository, a stranger who may read none.
    let repositories: Vec<SessionRepository> =
        seeded.repo_ids.iter().map(|&repo_id| SessionRepository { repo_id, can_write: false }).collect();
    let day_on = now_ms() + 24 * 3_600_000;
    let reviewer = store.create_session("reviewer", false, day_on, &repositories).await?.0;
    let reviewer = store.issue_preview_secret(reviewer.id).await?;
    let stranger = store.create_session("stranger", false, day_on, &[]).await?.0;
    let stranger = store.issue_preview_secret(stranger.id).await?;

    // Where: every live environment's host, by repository.
    let live: Vec<_> = store.gate_records().await?.into_iter().filter(|e| e.state != "Deleted").collect();
    let host = |name: &Option<String>| format!("{}.{BASE_DOMAIN}", name.as_deref().unwrap_or_default());
    let (public_owner, public_name) = (OWNERS[1], REPOSITORIES[1]);
    let public =
        |e: &&previewd_environments::store::GateRecord| e.repo_owner == public_owner && e.repo_name == public_name;
    let protected: Vec<String> = live.iter().filter(|e| !public(e)).map(|e| host(&e.name)).collect();
    let open: Vec<String> = live.iter().filter(public).map(|e| host(&e.name)).collect();
    let token_repo = live.iter().find(|e| !public(e)).context("no protected environment was seeded")?;
    let of_token_repo: Vec<String> =
        live.iter().filter(|e| e.repo_id == token_repo.repo_id).map(|e| host(&e.name)).collect();
    let token = store.create_bypass_token(token_repo.repo_id, "bench", "token:bench").await?.1;
    let shared = live.iter().find(|e| !public(e)).context("no protected environment was seeded")?;
    let share = store.create_share_link(shared.id, "token:bench", day_on).await?.1;
    store.close().await;
    println!(
        "{backend:?}: {} live environments ({} protected, {} of the public {public_owner}/{public_name})",
        live.len(),
        protected.len(),
        open.len()
    );
    if open.is_empty() || protected.is_empty() {
        bail!("the seeded fleet has no environment of {public_owner}/{public_name}, or only those");
    }
    let cookie = |name: &str, secret: &str| ("cookie", format!("theme=dark; {name}={secret}"));
    let visits = [
        Visit {
            label: "signed in, may read (`github`): 200".to_owned(),
            hosts: protected.clone(),
            headers: vec![cookie("previewd_preview", reviewer.expose_secret())],
            expect: 200,
        },
        Visit {
            label: "signed in, may not read: 401".to_owned(),
            hosts: protected.clone(),
            headers: vec![cookie("previewd_preview", stranger.expose_secret())],
            expect: 401,
        },
        Visit { label: "not signed in: 401".to_owned(), hosts: protected.clone(), headers: Vec::new(), expect: 401 },
        Visit {
            label: "bypass token (header): 200".to_owned(),
            hosts: of_token_repo,
            headers: vec![("x-previewd-bypass", token.expose_secret().to_owned())],
            expect: 200,
        },
        Visit {
            label: "share link (its cookie): 200".to_owned(),
            hosts: vec![host(&shared.name)],
            headers: vec![cookie("previewd_share", share.expose_secret())],
            expect: 200,
        },
        Visit { label: "public repository (`none`): 200".to_owned(), hosts: open, headers: Vec::new(), expect: 200 },
        Visit {
            label: "a host that is no preview: 401".to_owned(),
            hosts: (0..100).map(|i| format!("nothing-{i}.{BASE_DOMAIN}")).collect(),
            headers: Vec::new(),
            expect: 401,
        },
    ];

    let dir = tempfile::tempdir()?;
    let policy = format!(
        "base_domain: {BASE_DOMAIN}\nprotection: github\nrepositories:\n  {public_owner}/{public_name}:\n    protection: none\n"
    );
    std::fs::write(dir.path().join("policy.yaml"), policy)?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let s = |p: PathBuf| p.display().to_string();
    let env: Vec<(String, String)> = [
        ("PREVIEWD_DATABASE_URL", database.url.clone()),
        ("PREVIEWD_WEBHOOK_SECRETS", "bench-webhook-secret".to_owned()),
        ("PREVIEWD_POLICY_FILE", s(dir.path().join("policy.yaml"))),
        ("PREVIEWD_TEMPLATES_DIR", s(root.join("templates"))),
        ("PREVIEWD_REPO_CONFIG_FILE", s(root.join("e2e/fixtures/preview.yaml"))),
        ("PREVIEWD_KUBECONFIG", kubeconfig.display().to_string()),
        ("PREVIEWD_INSTANCE", "bench-access".to_owned()),
        // A week: one environment in about 10,000 per periodic pass, next to nothing here.
        ("PREVIEWD_ENGINE__DRIFT_REPAIR_INTERVAL_SECONDS", "604800".to_owned()),
        ("PREVIEWD_LOG_FILTER", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut previewd = Previewd::start(&options.previewd, &env, &dir.path().join("previewd.log"))
        .await
        .with_context(|| format!("starting {} (`cargo build --release -p previewd`)", options.previewd.display()))?;
    let pid = previewd.pid();
    let gate = Gate { http: reqwest::Client::new(), url: format!("{}/_previewd/auth?mode=nginx", previewd.base) };

    // The first decision builds the host index from the store.
    let first = gate.ask(&visits[0], &visits[0].hosts[0]).await?;
    println!("{backend:?}: the first decision (building the host index): {:.2} ms", first.as_secs_f64() * 1000.0);
    let mut phases = Vec::new();
    for visit in &visits {
        phases.push(one_at_a_time(&gate, pid, visit, options.warmup, options.requests).await?);
    }
    phases.push(at_once(&previewd.base, pid, &visits[0], options.requests).await?);

    previewd.stop().await?;
    if backend == Backend::Postgres {
        drop_postgres(&database.url).await?;
    }
    println!("{backend:?}: load average after {}", load_average());
    Ok(phases)
}
