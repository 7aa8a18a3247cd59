//! The engine benchmark (`e2e/bench/engine.sh`; see `e2e/bench/README.md`).
//!
//! Measures previewd's reconciler against the local control plane, from "desired state stored"
//! (the environment's row written by `Store::record_environment`) to the state the reconcile
//! returns:
//!
//! 1. one environment at a time: `Pending` → `Ready`, then `Deleting` → `Deleted`, N runs
//!    (default 5), p50 and max;
//! 2. 50 environments at once: 50 `Pending` rows stored, then 50 reconciles started together
//!    (`--concurrency`, default all of them), the time until all are `Ready` and each one's;
//! 3. tearing those 50 down at once: all marked `Deleting`, reconciled together until every
//!    namespace is gone.
//!
//! The engine is the one `previewd serve` runs: the least-privilege client of the Helm chart's
//! RBAC, the repository's `templates/`, the fixture policy (`e2e/fixtures/policy.yaml`, its
//! limits raised so that 50 fit and its secret source set to the test cluster's) and the fixture
//! `.preview.yaml` (whose `db-readonly` platform secret is created in the source namespace when
//! missing, as the reconcile tests do, and left there). The store is an embedded SQLite file in a
//! temporary folder, or with `--store postgres` a fresh database on `PREVIEWD_TEST_POSTGRES_URL`
//! (dropped at the end).
//!
//! While it runs, watches (as admin) on the run's namespaces, deployments and pods timestamp what
//! the control plane does, so that each figure splits into phases: previewd applying objects,
//! the controller-manager creating the ReplicaSet and Pod, the scheduler binding it, kwok making
//! it Ready, the Deployment status, previewd noticing; and for teardown the namespace
//! controller's work. It also samples CPU time of the control plane's processes and of itself.
//!
//! Every run uses its own `previewd.dev/instance` label and a random repository id, so names
//! never collide with other runs or tests; at the end, on error and on SIGINT/SIGTERM too, it
//! deletes (as admin) every namespace carrying its instance label and waits until they are gone.

use anyhow::{Context, anyhow, bail};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use previewd_e2e::cli::{flags, number};
use previewd_e2e::cluster::{SOURCE_NAMESPACE, admin_client, previewd_client};
use previewd_e2e::database::{Backend, POSTGRES_URL_ENV, drop_postgres, fresh};
use previewd_e2e::measure::{load_average, percentile};
use previewd_environments::cluster::Cluster;
use previewd_environments::forge::FixedRepoConfig;
use previewd_environments::model::{CommitSha, EnvironmentState, PrNumber, PullRequest, Repo, RepoId};
use previewd_environments::policy::Policy;
use previewd_environments::reconcile::{Engine, EngineSettings, Outcome};
use previewd_environments::render::{INSTANCE_LABEL, Renderer};
use previewd_environments::store::Store;
use previewd_environments::yaml::{self, Origin};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

mod cpu;
mod timeline;

use cpu::{CpuSample, print_cpu};

use timeline::{Marks, PROVISION_PHASES, Phase, TEARDOWN_PHASES, Timeline, phase_durations};

const POLICY: &str = include_str!("../../../fixtures/policy.yaml");
const PREVIEW_YAML: &str = include_str!("../../../fixtures/preview.yaml");
/// The platform secret the fixture `.preview.yaml` asks for.
const PLATFORM_SECRET: &str = "db-readonly";

const USAGE: &str = "\
usage: bench_engine [options]
  --store BACKEND      sqlite (default: a file in a temporary folder) or postgres (a fresh
                       database on PREVIEWD_TEST_POSTGRES_URL, dropped at the end)
  --runs N             one-environment runs (default 5)
  --count N            environments provisioned and torn down at once (default 50)
  --concurrency N      reconciles running at once in the batch (default: --count)
  --timeout SECONDS    the engine's rollout and teardown timeouts (default 300)
The cluster comes from PREVIEWD_TEST_KUBECONFIG_ADMIN and PREVIEWD_TEST_KUBECONFIG
(`eval \"$(e2e/controlplane/cluster.sh env)\"`), else `cluster.sh up` is run.";

struct Options {
    store: Backend,
    runs: usize,
    count: usize,
    concurrency: usize,
    timeout: Duration,
}

fn parse_options() -> anyhow::Result<Options> {
    let mut options =
        Options { store: Backend::Sqlite, runs: 5, count: 50, concurrency: 0, timeout: Duration::from_secs(300) };
    for (flag, value) in flags(USAGE)? {
        match flag.as_str() {
            "--store" => {
                options.store = match value.as_str() {
                    "sqlite" => Backend::Sqlite,
                    "postgres" => Backend::Postgres,
                    other => bail!("--store: `{other}` is neither sqlite nor postgres\n{USAGE}"),
                }
            }
            "--runs" => options.runs = number(&flag, &value)?,
            "--count" => options.count = number(&flag, &value)?,
            "--concurrency" => options.concurrency = number(&flag, &value)?,
            "--timeout" => options.timeout = Duration::from_secs(number(&flag, &value)?),
            other => bail!("unknown option `{other}`\n{USAGE}"),
        }
    }
    if options.runs == 0 || options.count == 0 {
        bail!("--runs and --count must be at least 1");
    }
    if options.concurrency == 0 {
        options.concurrency = options.count;
    }
    if options.store == Backend::Postgres && std::env::var(POSTGRES_URL_ENV).is_err() {
        bail!("{POSTGRES_URL_ENV} is not set: start Postgres with `eval \"$(e2e/postgres.sh up)\"` (engine.sh does)");
    }
    Ok(options)
}

fn main() -> anyhow::Result<()> {
    let options = parse_options()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(main_async(options))
}

async fn main_async(options: Options) -> anyhow::Result<()> {
    let instance = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let admin = admin_client().await?;
    let database = fresh(options.store).await?;
    let outcome = tokio::select! {
        outcome = run(&options, &instance, &database.url, &admin) => outcome,
        signal = interrupted() => Err(anyhow!("interrupted by {signal}")),
    };
    // Everything this run created, whatever happened.
    let mut cleanup = delete_namespaces(&admin, &instance).await;
    if options.store == Backend::Postgres {
        cleanup = cleanup.and(drop_postgres(&database.url).await);
    }
    drop(database);
    match (outcome, cleanup) {
        (Err(error), Err(cleanup)) => {
            eprintln!("cleanup failed too: {cleanup:#}");
            Err(error)
        }
        (Err(error), Ok(())) => Err(error),
        (Ok(()), cleanup) => cleanup,
    }
}

async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return match tokio::signal::ctrl_c().await {
            Ok(()) => "SIGINT",
            Err(_) => std::future::pending().await,
        };
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

async fn run(options: &Options, instance: &str, url: &str, admin: &Client) -> anyhow::Result<()> {
    let store_name = match options.store {
        Backend::Sqlite => "SQLite (embedded, temporary folder)",
        Backend::Postgres => "Postgres (fresh database)",
    };
    println!(
        "engine benchmark: store {store_name}, instance label {instance}, {} one-environment runs, {} environments at \
         once (concurrency {}), {} CPUs, load average {}",
        options.runs,
        options.count,
        options.concurrency,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
    );
    platform_secret(admin).await?;
    let store = Store::connect(&url.into()).await.with_context(|| format!("connecting to the {store_name} store"))?;
    store.migrate().await.context("migrating the store")?;
    let templates = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../templates");
    let policy = policy(options.count + options.runs)?;
    let dns = previewd_environments::dns::Dns::from_policy(&policy.dns, None).context("the policy's dns section")?;
    let engine = Arc::new(Engine {
        store,
        cluster: Cluster::new(previewd_client().await?, previewd_e2e::cluster::READ_CLUSTER_ROLE),
        renderer: Renderer::load(&templates).with_context(|| format!("loading {}", templates.display()))?,
        policy,
        forge: Arc::new(FixedRepoConfig::new(PREVIEW_YAML.to_owned())),
        dns,
        settings: EngineSettings {
            rollout_timeout: options.timeout,
            teardown_timeout: options.timeout,
            instance: instance.to_owned(),
            ..EngineSettings::default()
        },
        owner: format!("bench_engine-{}", std::process::id()),
    });
    let timeline = Timeline::start(admin, instance).await?;
    let repo = Repo { id: RepoId(random_repo_id()), owner: "acme".into(), name: "bench".into() };
    let sha =
        CommitSha(format!("{}{}", uuid::Uuid::new_v4().simple(), &uuid::Uuid::new_v4().simple().to_string()[..8]));
    let pull_request = |number: usize| -> anyhow::Result<PullRequest> {
        Ok(PullRequest {
            repo: repo.clone(),
            number: PrNumber(i64::try_from(number)?),
            head_sha: sha.clone(),
            head_branch: "bench".into(),
            author: "bench".into(),
            from_fork: false,
            draft: false,
            labels: vec![],
        })
    };
    let deadline = |n: usize| options.timeout * 2 + Duration::from_secs(10) * u32::try_from(n).unwrap_or(u32::MAX);

    // 1. One environment at a time.
    println!("\n==> one environment at a time ({} runs)", options.runs);
    let mut single_up = Vec::new();
    let mut single_down = Vec::new();
    let cpu = CpuSample::take();
    for run in 1..=options.runs {
        let pr = pull_request(run)?;
        let id = engine
            .store
            .record_environment(&pr, EnvironmentState::Pending, None, &previewd_environments::model::Cause::Previewd)
            .await?
            .id;
        let start = Instant::now();
        let end = converge(&engine, id, EnvironmentState::Ready, start + deadline(1)).await?;
        let name = environment_name(&engine, id).await?;
        single_up.push(Sample { name: name.clone(), start, end });
        engine
            .store
            .record_environment(
                &pr,
                EnvironmentState::Deleting,
                Some("benchmark"),
                &previewd_environments::model::Cause::Previewd,
            )
            .await?;
        let start = Instant::now();
        let end = converge(&engine, id, EnvironmentState::Deleted, start + deadline(1)).await?;
        single_down.push(Sample { name, start, end });
        println!(
            "    run {run}: Ready after {}, Deleted after {}",
            seconds(end_of(&single_up)),
            seconds(end_of(&single_down))
        );
    }
    let single_cpu = cpu.until_now();

    // 2. Many at once.
    println!("\n==> {} environments at once", options.count);
    let mut ids = Vec::with_capacity(options.count);
    let prs: Vec<PullRequest> = (1..=options.count).map(|n| pull_request(1000 + n)).collect::<anyhow::Result<_>>()?;
    for pr in &prs {
        ids.push(
            engine
                .store
                .record_environment(pr, EnvironmentState::Pending, None, &previewd_environments::model::Cause::Previewd)
                .await?
                .id,
        );
    }
    let cpu = CpuSample::take();
    let batch_up = batch(&engine, &ids, EnvironmentState::Ready, options.concurrency, deadline(options.count)).await?;
    let batch_up_cpu = cpu.until_now();
    let figures = Figures::of(&batch_up);
    println!(
        "    all Ready after {}; each: p50 {}, p99 {}",
        seconds(figures.total),
        seconds(figures.p50),
        seconds(figures.p99)
    );

    // 3. Tearing them down at once.
    println!("\n==> tearing {} environments down at once", options.count);
    for pr in &prs {
        engine
            .store
            .record_environment(
                pr,
                EnvironmentState::Deleting,
                Some("benchmark"),
                &previewd_environments::model::Cause::Previewd,
            )
            .await?;
    }
    let cpu = CpuSample::take();
    let batch_down =
        batch(&engine, &ids, EnvironmentState::Deleted, options.concurrency, deadline(options.count)).await?;
    let batch_down_cpu = cpu.until_now();
    let figures = Figures::of(&batch_down);
    println!(
        "    all Deleted after {}; each: p50 {}, p99 {}",
        seconds(figures.total),
        seconds(figures.p50),
        seconds(figures.p99)
    );

    // Let the watches catch up with the last events before reading the timeline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let marks = timeline.snapshot();
    print_summary(options, &[&single_up, &single_down, &batch_up, &batch_down]);
    print_phases(
        "provisioning",
        PROVISION_PHASES,
        &[("1 env", &single_up), (&format!("{} at once", options.count), &batch_up)],
        &marks,
    );
    print_phases(
        "teardown",
        TEARDOWN_PHASES,
        &[("1 env", &single_down), (&format!("{} at once", options.count), &batch_down)],
        &marks,
    );
    print_cpu(&[
        (format!("{} × (1 up + 1 down)", options.runs), single_cpu),
        (format!("{} up at once", options.count), batch_up_cpu),
        (format!("{} down at once", options.count), batch_down_cpu),
    ]);
    engine.store.close().await;
    Ok(())
}

/// When one environment's reconcile started (its desired state stored) and returned.
#[derive(Clone)]
struct Sample {
    name: String,
    start: Instant,
    end: Instant,
}

fn end_of(samples: &[Sample]) -> Duration {
    samples.last().map_or(Duration::ZERO, |s| s.end.duration_since(s.start))
}

/// Reconciles `ids` with at most `concurrency` at once, all started from one instant (the
/// desired states are already stored); each sample runs from that instant to its own end.
async fn batch(
    engine: &Arc<Engine>,
    ids: &[i64],
    want: EnvironmentState,
    concurrency: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Sample>> {
    let slots = Arc::new(Semaphore::new(concurrency));
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for &id in ids {
        let (engine, slots) = (engine.clone(), slots.clone());
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await?;
            let end = converge(&engine, id, want, start + timeout).await?;
            let name = environment_name(&engine, id).await?;
            anyhow::Ok(Sample { name, start, end })
        });
    }
    let mut samples = Vec::with_capacity(ids.len());
    while let Some(joined) = tasks.join_next().await {
        samples.push(joined.context("a reconcile task panicked")??);
    }
    Ok(samples)
}

/// Reconciles environment `id` until it settles in `want` (following requeues), and returns when.
async fn converge(engine: &Engine, id: i64, want: EnvironmentState, deadline: Instant) -> anyhow::Result<Instant> {
    loop {
        let outcome = engine.reconcile(id).await.with_context(|| format!("reconciling environment {id}"))?;
        match outcome {
            Outcome::Settled(state) if state == want => return Ok(Instant::now()),
            Outcome::Settled(state) => {
                let reason = engine.store.reconcile_record(id).await?.and_then(|e| e.reason).unwrap_or_default();
                bail!("environment {id} settled {state}, not {want}: {reason}");
            }
            Outcome::RequeueAfter(after) => {
                if Instant::now() + after > deadline {
                    let reason = engine.store.reconcile_record(id).await?.and_then(|e| e.reason).unwrap_or_default();
                    bail!("environment {id} did not reach {want} in time: {reason}");
                }
                tokio::time::sleep(after).await;
            }
            // previewd is woken by its rollout watch; this harness drives the engine alone and
            // looks again shortly (kwok makes pods ready at once).
            Outcome::RollingOut { deadline, .. } => {
                if previewd_environments::time::now_ms() >= deadline {
                    bail!("environment {id} passed its rollout deadline without settling");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn environment_name(engine: &Engine, id: i64) -> anyhow::Result<String> {
    engine
        .store
        .reconcile_record(id)
        .await?
        .and_then(|e| e.name)
        .with_context(|| format!("environment {id} has no name after reconciling"))
}

/// The fixture policy with room for `environments` live environments and the test cluster's
/// secret source namespace.
fn policy(environments: usize) -> anyhow::Result<Policy> {
    let mut document: serde_json::Value = yaml::parse(POLICY, Origin::Platform)
        .map_err(|e| anyhow::anyhow!("parsing the fixture policy: {}", e.message))?
        .context("the fixture policy is empty")?;
    let limit = serde_json::Value::from(u64::try_from(environments)?);
    let limits = document
        .get_mut("limits")
        .and_then(serde_json::Value::as_object_mut)
        .context("the fixture policy has no `limits` mapping")?;
    for key in ["global", "per_organization", "per_repository"] {
        limits.insert(key.into(), limit.clone());
    }
    let secrets = document
        .get_mut("secrets")
        .and_then(serde_json::Value::as_object_mut)
        .context("the fixture policy has no `secrets` mapping")?;
    secrets.insert("source_namespace".into(), SOURCE_NAMESPACE.into());
    let text = yaml::to_string(&document).map_err(anyhow::Error::msg)?;
    Ok(Policy::from_yaml(&text, "e2e/fixtures/policy.yaml (limits raised)")?)
}

/// The platform secret the fixture `.preview.yaml` lists, as the reconcile tests create it.
async fn platform_secret(admin: &Client) -> anyhow::Result<()> {
    let source: Api<Secret> = Api::namespaced(admin.clone(), SOURCE_NAMESPACE);
    let secret = Secret {
        metadata: ObjectMeta { name: Some(PLATFORM_SECRET.into()), ..ObjectMeta::default() },
        string_data: Some([("DATABASE_URL".to_owned(), "postgres://readonly@db/app".to_owned())].into()),
        ..Secret::default()
    };
    match source.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error).with_context(|| format!("creating secret {SOURCE_NAMESPACE}/{PLATFORM_SECRET}")),
    }
}

/// A repository id no other run or test uses.
fn random_repo_id() -> i64 {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    2_000_000_000 + i64::from(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) >> 1)
}

/// Deletes every namespace carrying this run's instance label and waits until they are gone.
async fn delete_namespaces(admin: &Client, instance: &str) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(admin.clone());
    let selector = ListParams::default().labels(&format!("{INSTANCE_LABEL}={instance}"));
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let left = api.list_metadata(&selector).await.context("listing the run's namespaces")?;
        if left.items.is_empty() {
            if !seen.is_empty() {
                println!("cleanup: {} leftover namespace(s) of instance {instance} deleted", seen.len());
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{} namespace(s) of instance {instance} still exist after 300 s", left.items.len());
        }
        for namespace in left.items {
            let Some(name) = namespace.metadata.name else { continue };
            seen.insert(name.clone());
            if namespace.metadata.deletion_timestamp.is_some() {
                continue;
            }
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error).with_context(|| format!("deleting namespace {name}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Figures.

struct Figures {
    total: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Figures {
    fn of(samples: &[Sample]) -> Figures {
        let mut each: Vec<Duration> = samples.iter().map(|s| s.end.duration_since(s.start)).collect();
        each.sort_unstable();
        let first = samples.iter().map(|s| s.start).min();
        let last = samples.iter().map(|s| s.end).max();
        Figures {
            total: first.zip(last).map_or(Duration::ZERO, |(a, b)| b.duration_since(a)),
            p50: percentile(&each, 0.50),
            p99: percentile(&each, 0.99),
            max: each.last().copied().unwrap_or_default(),
        }
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn print_summary(options: &Options, scenarios: &[&[Sample]; 4]) {
    let [single_up, single_down, batch_up, batch_down] = scenarios.map(Figures::of);
    let runs = options.runs;
    let count = options.count;
    println!("\n| scenario | environments | all done (s) | p50 (s) | p99 (s) | max (s) |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| stored → Ready, one at a time | 1 × {runs} runs | – | {} | – | {} |",
        secs(single_up.p50),
        secs(single_up.max)
    );
    println!(
        "| Deleting → Deleted, one at a time | 1 × {runs} runs | – | {} | – | {} |",
        secs(single_down.p50),
        secs(single_down.max)
    );
    println!(
        "| stored → Ready, at once | {count} | {} | {} | {} | {} |",
        secs(batch_up.total),
        secs(batch_up.p50),
        secs(batch_up.p99),
        secs(batch_up.max)
    );
    println!(
        "| Deleting → Deleted, at once | {count} | {} | {} | {} | {} |",
        secs(batch_down.total),
        secs(batch_down.p50),
        secs(batch_down.p99),
        secs(batch_down.max)
    );
    if count < 100 {
        println!("(with fewer than 100 environments, p99 is the slowest one)");
    }
}

fn print_phases(what: &str, phases: &[Phase], scenarios: &[(&str, &[Sample])], marks: &HashMap<String, Marks>) {
    println!("\nwhere the {what} time goes (per environment, from the watches; p50 / p99 in seconds):");
    let header: Vec<String> = scenarios.iter().map(|(label, _)| format!("{label} p50 | {label} p99")).collect();
    println!("| phase | {} |", header.join(" | "));
    println!("|---|{}", "---:|---:|".repeat(scenarios.len()));
    for phase in phases {
        let cells: Vec<String> = scenarios
            .iter()
            .map(|(_, samples)| {
                let durations = phase_durations(phase, samples, marks);
                if durations.is_empty() {
                    return "– | –".to_owned();
                }
                let missing = samples.len() - durations.len();
                let note = if missing > 0 { format!(" ({missing} unseen)") } else { String::new() };
                format!("{}{note} | {}", secs(percentile(&durations, 0.5)), secs(percentile(&durations, 0.99)))
            })
            .collect();
        println!("| {} | {} |", phase.0, cells.join(" | "));
    }
}
