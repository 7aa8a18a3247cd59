//! The end-to-end benchmark (`e2e/bench/story.sh`): the `previewd` binary on the embedded
//! SQLite store, the local control plane and the GitHub stand-in. It measures, from a signed
//! `pull_request` delivery accepted (previewd's 202) to the `success` deployment status
//! arriving at the stand-in:
//!   - p50/p99/max over environments opened one after another (`--sequential`, 20);
//!   - the same for pull requests opened all at once (`--burst`, 50);
//!
//! and from a `closed` delivery accepted to the namespace gone, for the burst. With
//! `--fleet N` it then keeps N environments live (opened in batches of `--batch`, 50) and
//! measures the steady state over `--steady-seconds` (130): GitHub requests per hour per live
//! environment, API-server requests per second (all clients; the same window with previewd
//! stopped gives the control plane's own share), previewd's resident memory, the periodic
//! passes' durations (from previewd's log), and how long one more pull request takes to become
//! Ready and reported while the N are live.
//! Times are observed by polling every 25 ms, so they carry up to 25 ms of granularity.
//! With `--app` each pull request is the demo's application (`e2e/demo/preview.yaml`: three
//! services and a database seeded by a Job, whose pod runs `--seed-seconds`).
//! DNS is the wildcard provider (no verification): this measures previewd, GitHub reporting and
//! the cluster; `e2e/bench/engine.sh` breaks the cluster's share down.

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Namespace;
use previewd_e2e::fixtures::TestRepo;
use previewd_e2e::measure::percentile;
use previewd_e2e::previewd::Previewd;
use previewd_e2e::standin::GitHubStandIn;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SECRET: &str = "bench-secret";
const OWNER: &str = "bench";
const REPO: &str = "web";
const REPO_ID: i64 = 9_100_001;
const INSTALLATION: i64 = 5;
/// How often the stand-in's deployments are looked at while timing: the figures' granularity.
const FAST_POLL: Duration = Duration::from_millis(25);

fn arg(name: &str, default: usize) -> anyhow::Result<usize> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args.get(i + 1).context("a number after the flag")?.parse().context(name.to_owned()),
        None => Ok(default),
    }
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    println!(
        "{what:<48} n={:<3} p50 {:>6.2}s  p99 {:>6.2}s  max {:>6.2}s",
        times.len(),
        percentile(&times, 0.50).as_secs_f64(),
        percentile(&times, 0.99).as_secs_f64(),
        times.last().copied().unwrap_or_default().as_secs_f64()
    );
}

fn sha(n: usize) -> String {
    format!("{n:0>40x}")
}

fn payload(action: &str, number: usize) -> anyhow::Result<Value> {
    let repo = TestRepo { id: REPO_ID, owner: OWNER.to_owned(), name: REPO.to_owned(), installation: INSTALLATION };
    repo.pull_request(action, i64::try_from(number)?, &sha(number))
}

/// The numbers of the pull requests whose deployment of their head has a `success` status.
async fn successful(github: &GitHubStandIn) -> anyhow::Result<Vec<usize>> {
    let deployments = github.deployments().await?;
    Ok(deployments
        .iter()
        .filter(|d| d["statuses"].as_array().is_some_and(|s| s.iter().any(|s| s["state"] == "success")))
        .filter_map(|d| d["environment"].as_str()?.strip_prefix("preview/pr-")?.parse().ok())
        .collect())
}

/// Opens `numbers` at once; the time from each delivery's 202 to its success status, looked
/// for every `poll`.
async fn open(github: &GitHubStandIn, numbers: &[usize], poll: Duration) -> anyhow::Result<Vec<Duration>> {
    // `--app`: the demo's three services and seeded database; else one service.
    let preview = if std::env::args().any(|a| a == "--app") {
        std::fs::read_to_string(root().join("e2e/demo/preview.yaml"))?
    } else {
        std::fs::read_to_string(root().join("e2e/fixtures/preview.yaml"))?
            .replace("secrets: [db-readonly]", "secrets: []")
    };
    for &n in numbers {
        github.put_file(OWNER, REPO, &sha(n), ".preview.yaml", Some(&preview)).await?;
        github.open_pull(json!({"owner": OWNER, "repo": REPO, "number": n, "head_sha": sha(n)})).await?;
    }
    let sends = numbers.iter().map(|&n| async move {
        let delivered = github.deliver("pull_request", &payload("opened", n)?).await?;
        if delivered.status_code != 202 {
            bail!("delivery answered {}", delivered.status_code);
        }
        Ok::<_, anyhow::Error>((n, Instant::now()))
    });
    let accepted: Vec<(usize, Instant)> = futures::future::try_join_all(sends).await?;
    let mut times = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while times.len() < numbers.len() {
        let done = successful(github).await?;
        let now = Instant::now();
        for (n, at) in &accepted {
            if done.contains(n) && times.iter().all(|(m, _)| m != n) {
                times.push((*n, now - *at));
            }
        }
        if now > deadline {
            bail!("only {} of {} environments succeeded within 10 minutes", times.len(), numbers.len());
        }
        tokio::time::sleep(poll).await;
    }
    Ok(times.into_iter().map(|(_, t)| t).collect())
}

/// Closes `numbers` at once; the time from each delivery's 202 until its namespace is gone.
async fn close(
    github: &GitHubStandIn,
    namespaces: &kube::Api<Namespace>,
    numbers: &[usize],
) -> anyhow::Result<Vec<Duration>> {
    let before: Vec<(usize, String)> = {
        let list = namespaces.list(&kube::api::ListParams::default().labels("previewd.dev/instance=bench")).await?;
        list.items
            .into_iter()
            .filter_map(|ns| {
                let pr: usize = ns.metadata.labels.as_ref()?.get("previewd.dev/pull-request")?.parse().ok()?;
                Some((pr, ns.metadata.name?))
            })
            .filter(|(pr, _)| numbers.contains(pr))
            .collect()
    };
    let sends = numbers.iter().map(|&n| async move {
        let mut closed = payload("closed", n)?;
        closed["pull_request"]["state"] = "closed".into();
        github.update_pull(OWNER, REPO, n as i64, json!({"state": "closed"})).await?;
        let delivered = github.deliver("pull_request", &closed).await?;
        if delivered.status_code != 202 {
            bail!("delivery answered {}", delivered.status_code);
        }
        Ok::<_, anyhow::Error>((n, Instant::now()))
    });
    let accepted: Vec<(usize, Instant)> = futures::future::try_join_all(sends).await?;
    let mut times: Vec<(usize, Duration)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while times.len() < before.len() {
        for (n, name) in &before {
            if times.iter().any(|(m, _)| m == n) {
                continue;
            }
            if namespaces.get_opt(name).await?.is_none() {
                let at = accepted.iter().find(|(m, _)| m == n).map(|(_, at)| *at).context("accepted")?;
                times.push((*n, at.elapsed()));
            }
        }
        if Instant::now() > deadline {
            bail!("only {} of {} namespaces were gone within 10 minutes", times.len(), before.len());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(times.into_iter().map(|(_, t)| t).collect())
}

/// Every request the API server has answered since it started, from any client: the sum of
/// its `apiserver_request_total` counters.
async fn apiserver_requests(admin: &kube::Client) -> anyhow::Result<f64> {
    let text = admin.request_text(http::Request::get("/metrics").body(Vec::new())?).await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// The durations (ms) of the periodic passes previewd has logged (JSON log with flattened
/// fields, target `previewd::periodic`).
fn pass_durations(log: &Path) -> anyhow::Result<Vec<u64>> {
    let text = std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "periodic pass done")
        .filter_map(|l| l["duration_ms"].as_u64())
        .collect())
}

/// The fleet phase (`--fleet`): see the module's documentation.
async fn fleet(
    github: &GitHubStandIn,
    previewd: &mut Previewd,
    admin: &kube::Client,
    log: &Path,
    live: usize,
    batch: usize,
    steady: Duration,
) -> anyhow::Result<()> {
    let slow = Duration::from_millis(500);
    let numbers: Vec<usize> = (100_000..100_000 + live).collect();
    let started = Instant::now();
    for chunk in numbers.chunks(batch.max(1)) {
        open(github, chunk, slow).await?;
    }
    println!(
        "{:<48} {:.1}s",
        format!("fleet: {live} opened in batches of {batch}, all ready"),
        started.elapsed().as_secs_f64()
    );

    let passes_before = pass_durations(log)?.len();
    let (github_before, api_before, began) =
        (github.requests().await?.len(), apiserver_requests(admin).await?, Instant::now());
    tokio::time::sleep(steady).await;
    let (github_after, api_after, window) =
        (github.requests().await?.len(), apiserver_requests(admin).await?, began.elapsed());
    let memory = previewd.memory()?;
    let passes: Vec<u64> = pass_durations(log)?.into_iter().skip(passes_before).collect();
    let hours = window.as_secs_f64() / 3600.0;
    let github_calls = github_after.saturating_sub(github_before);
    println!("steady state with {live} live, over {:.0}s:", window.as_secs_f64());
    #[allow(clippy::cast_precision_loss)]
    let per_environment = github_calls as f64 / hours / live as f64;
    println!("  GitHub requests: {github_calls} ({per_environment:.2} per hour per live environment)");
    println!("  API server: {:.1} requests/s (all clients)", (api_after - api_before) / window.as_secs_f64());
    println!(
        "  previewd resident memory: {:.0} MiB (peak {:.0} MiB)",
        memory.rss_bytes as f64 / 1_048_576.0,
        memory.peak_rss_bytes as f64 / 1_048_576.0
    );
    println!("  periodic passes (ms): {passes:?}");

    let one_more = open(github, &[100_000 + live], FAST_POLL).await?;
    report(&format!("one more pull request with {live} live"), one_more);

    // The control plane's own share: the same window with previewd stopped.
    previewd.stop().await?;
    let (api_before, began) = (apiserver_requests(admin).await?, Instant::now());
    tokio::time::sleep(steady).await;
    println!(
        "  API server with previewd stopped: {:.1} requests/s",
        (apiserver_requests(admin).await? - api_before) / began.elapsed().as_secs_f64()
    );
    previewd.restart().await?;
    Ok(())
}

/// Closes every pull request in `numbers` (deliveries 100 at a time) and waits until no
/// namespace of the benchmark's instance is left; the time that took.
async fn close_all(
    github: &GitHubStandIn,
    namespaces: &kube::Api<Namespace>,
    numbers: &[usize],
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for chunk in numbers.chunks(100) {
        let sends = chunk.iter().map(|&n| async move {
            let mut closed = payload("closed", n)?;
            closed["pull_request"]["state"] = "closed".into();
            github.update_pull(OWNER, REPO, i64::try_from(n)?, json!({"state": "closed"})).await?;
            github.deliver("pull_request", &closed).await.map(drop)
        });
        futures::future::try_join_all(sends).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let left = namespaces.list(&kube::api::ListParams::default().labels("previewd.dev/instance=bench")).await?;
        if left.items.is_empty() {
            return Ok(started.elapsed());
        }
        if Instant::now() > deadline {
            bail!("{} namespaces still there after an hour", left.items.len());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sequential = arg("--sequential", 20)?;
    let burst = arg("--burst", 50)?;
    // How long the test cluster's pods take to become Ready (kwok, from a pod annotation): real
    // pods take 20-60 s to pull and start. 0: at once.
    let pod_ready_seconds = arg("--pod-ready-seconds", 0)?;
    // With `--app`: how long the seed's pod runs before it completes.
    let seed_seconds = arg("--seed-seconds", 0)?;
    let whole_app = std::env::args().any(|a| a == "--app");
    // previewd's default (4) unless given: the benchmark measures what a user gets.
    let workers = arg("--workers", 0)?;
    let live = arg("--fleet", 0)?;
    let batch = arg("--batch", 50)?;
    let steady = Duration::from_secs(u64::try_from(arg("--steady-seconds", 130)?)?);
    let limit = (live + 1).max(200);
    // Requests per hour per installation token the stand-in allows: GitHub's 5,000 unless given.
    // Opening an environment costs about 11 requests, so 5,000 an hour opens about 450.
    let github_rate_limit = arg("--github-rate-limit", 5000)?;
    let binary = PathBuf::from(std::env::var("BENCH_PREVIEWD_BIN").context("BENCH_PREVIEWD_BIN")?);
    let kubeconfig = PathBuf::from(
        std::env::var("PREVIEWD_TEST_KUBECONFIG")
            .context("PREVIEWD_TEST_KUBECONFIG (eval e2e/controlplane/cluster.sh env)")?,
    );
    let admin = previewd_e2e::cluster::admin_client().await?;
    let namespaces: kube::Api<Namespace> = kube::Api::all(admin.clone());
    // Environments left by an earlier run would be measured with this one's (their pods, the
    // API server's load, the periodic pass of a previewd that still watches them): refuse.
    let leftovers = namespaces
        .list_metadata(&kube::api::ListParams::default().labels("app.kubernetes.io/managed-by=previewd"))
        .await?;
    if !leftovers.items.is_empty() {
        bail!(
            "the cluster holds {} namespaces of earlier previewd runs; start from a fresh cluster \
             (e2e/controlplane/cluster.sh down) so that they are not measured too",
            leftovers.items.len()
        );
    }

    // `BENCH_KEEP=1` keeps previewd's store and log for a look after the run.
    let tmp = tempfile::tempdir()?;
    let (dir, _tmp) = if std::env::var_os("BENCH_KEEP").is_some() {
        let kept = tmp.keep();
        println!("previewd's store and log stay in {}", kept.display());
        (kept, None)
    } else {
        (tmp.path().to_owned(), Some(tmp))
    };
    let github = GitHubStandIn::start().await?;
    let app = github.app().await?;
    std::fs::write(dir.join("app.pem"), &app.private_key_pem)?;
    let policy = std::fs::read_to_string(root().join("e2e/fixtures/policy.yaml"))?
        .replace("previewd-platform-secrets", previewd_e2e::cluster::SOURCE_NAMESPACE)
        .replace("global: 50", &format!("global: {limit}"))
        .replace("per_organization: 20", &format!("per_organization: {limit}"))
        .replace("per_repository: 5", &format!("per_repository: {limit}"))
        // Three services, a database and its seed at the default limits need more than 2 cpu.
        .replace("defaults: { cpu: \"2\", memory: 4Gi, pods: 10 }", "defaults: { cpu: \"4\", memory: 8Gi, pods: 20 }");
    std::fs::write(dir.join("policy.yaml"), policy)?;
    let seconds = |n: usize| Duration::from_secs(u64::try_from(n).unwrap_or(u64::MAX));
    let templates = match (pod_ready_seconds, seed_seconds) {
        (0, 0) => None,
        (ready, seed) => Some(previewd_e2e::fixtures::templates_with_delays(previewd_e2e::fixtures::PodDelays {
            ready: seconds(ready),
            seed: seconds(seed),
            seed_fails: false,
        })?),
    };
    let s = |p: PathBuf| p.display().to_string();
    let env: Vec<(String, String)> = [
        ("PREVIEWD_DATABASE_URL", format!("sqlite://{}", dir.join("previewd.db").display())),
        ("PREVIEWD_WEBHOOK_SECRETS", SECRET.to_owned()),
        ("PREVIEWD_POLICY_FILE", s(dir.join("policy.yaml"))),
        (
            "PREVIEWD_TEMPLATES_DIR",
            s(templates.as_ref().map_or_else(|| root().join("templates"), |t| t.path().to_owned())),
        ),
        ("PREVIEWD_KUBECONFIG", s(kubeconfig)),
        ("PREVIEWD_INSTANCE", "bench".to_owned()),
        ("PREVIEWD_GITHUB__API_URL", github.url().to_owned()),
        ("PREVIEWD_GITHUB__APP_ID", app.app_id.to_string()),
        ("PREVIEWD_GITHUB__PRIVATE_KEY_FILE", s(dir.join("app.pem"))),
        // JSON, with the periodic passes logged (their durations are a fleet figure).
        ("PREVIEWD_LOG_FORMAT", "json".to_owned()),
        ("PREVIEWD_LOG_FILTER", "warn,previewd::periodic=info".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .chain((workers > 0).then(|| ("PREVIEWD_QUEUE__WORKERS".to_owned(), workers.to_string())))
    .collect();
    let log = dir.join("previewd.log");
    let mut previewd = Previewd::start(&binary, &env, &log).await?;
    github
        .configure(json!({
            "webhook_url": format!("{}/webhooks/github", previewd.base),
            "webhook_secret": SECRET,
            "rate_limit": github_rate_limit,
        }))
        .await?;
    github.add_repo(REPO_ID, OWNER, REPO, Some(INSTALLATION)).await?;

    println!("previewd end to end: delivery accepted → `success` deployment status; closed → namespace gone");
    if whole_app {
        println!(
            "the app: e2e/demo/preview.yaml (web, api, worker; postgres seeded by the api), seed runs {seed_seconds} s"
        );
    }
    println!(
        "pods Ready after {pod_ready_seconds} s; workers: {}",
        if workers == 0 { "previewd's default (4)".to_owned() } else { workers.to_string() }
    );
    let mut one_by_one = Vec::new();
    for n in 1..=sequential {
        one_by_one.extend(open(&github, &[n], FAST_POLL).await?);
    }
    report(&format!("opened one after another ({sequential})"), one_by_one);
    let numbers: Vec<usize> = (1000..1000 + burst).collect();
    let started = Instant::now();
    let at_once = open(&github, &numbers, FAST_POLL).await?;
    let total = started.elapsed();
    report(&format!("opened all at once ({burst})"), at_once);
    println!("{:<48} {:.2}s", "  all of them ready and reported", total.as_secs_f64());
    let started = Instant::now();
    let closed = close(&github, &namespaces, &numbers).await?;
    report(&format!("closed all at once ({burst}): namespace gone"), closed);
    println!("{:<48} {:.2}s", "  all namespaces gone", started.elapsed().as_secs_f64());
    let sequential_numbers: Vec<usize> = (1..=sequential).collect();
    close(&github, &namespaces, &sequential_numbers).await?;
    if live > 0 {
        fleet(&github, &mut previewd, &admin, &log, live, batch, steady).await?;
        let all: Vec<usize> = (100_000..=100_000 + live).collect();
        let took = close_all(&github, &namespaces, &all).await?;
        println!("{:<48} {:.1}s", format!("fleet: {} closed, all namespaces gone", live + 1), took.as_secs_f64());
    }
    github.assert_no_violations().await?;
    previewd.stop().await?;
    Ok(())
}
