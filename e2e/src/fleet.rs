//! A fleet's worth of environments and their history for the benchmarks (`bench_api`,
//! `bench_dashboard`): rows written directly into a migrated store, with the timestamps they would
//! have, as previewd would have written them over the period.
//!
//! `environments` environments over 20 repositories of 4 owners, each opened on the first of
//! `days` days and pushed to about `pushes_per_day` times a day since: every push is `Pending` →
//! `Provisioning` → `Ready` (one in ten `Failed`), each transition with the requests previewd
//! records on it. One in eight environments is closed during the last half of the period
//! (`Deleting` → `Deleted`). The same fleet on every run.

use crate::database::Backend;
use anyhow::Context;
use previewd_environments::store::Store;
use previewd_environments::time::now_ms;
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

/// The fleet's size and history.
#[derive(Debug, Clone, Copy)]
pub struct FleetShape {
    pub environments: u64,
    pub days: i64,
    pub pushes_per_day: u64,
}

const SECOND: i64 = 1_000;
const HOUR: i64 = 3_600 * SECOND;
const DAY: i64 = 24 * HOUR;
const MIB: i64 = 1024 * 1024;

pub const OWNERS: [&str; 4] = ["acme", "globex", "initech", "umbrella"];
/// Environments per owner, in percent: a few teams open most pull requests.
const OWNER_SHARE: [u64; 4] = [40, 30, 20, 10];
pub const REPOSITORIES: [&str; 5] = ["web", "api", "billing", "search", "mobile-backend"];
const FAILURES: [&str; 3] = [
    "deployment web: container web: ImagePullBackOff (image ghcr.io/acme/web:pr not found)",
    "deployment web: container web: CrashLoopBackOff (exit code 1)",
    "rollout did not finish within 600 s: 0 of 1 replicas ready",
];

/// splitmix64: the same fleet on every run, without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn draw(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high)`.
    pub fn range(&mut self, low: i64, high: i64) -> i64 {
        low + (self.draw() % (high - low).max(1) as u64) as i64
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.draw() % 100 < percent
    }

    pub fn sha(&mut self) -> String {
        format!("{:016x}{:016x}{:08x}", self.draw(), self.draw(), self.draw() as u32)
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

    /// Its repository's id, as seeded.
    fn repo_id(&self) -> i64 {
        1000 + (self.repo.0 * 10 + self.repo.1) as i64
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
fn plan(options: &FleetShape, now: i64) -> Vec<Planned> {
    let mut rng = Rng(14);
    let start = now - options.days * DAY;
    let gap = DAY / options.pushes_per_day as i64;
    let mut next_pr: HashMap<(usize, usize), i64> = HashMap::new();
    let mut fleet = Vec::new();
    for _ in 0..options.environments {
        let pick = rng.draw() % 100;
        let owner = (0..OWNERS.len()).find(|o| pick < OWNER_SHARE[..=*o].iter().sum()).unwrap_or(0);
        let repo = (owner, (rng.draw() % REPOSITORIES.len() as u64) as usize);
        let pr_number = next_pr.entry(repo).or_insert(100);
        *pr_number += 1;
        let created_at = start + rng.range(0, DAY);
        let mut env = Planned {
            repo,
            pr_number: *pr_number,
            author: format!("dev-{:02}", rng.draw() % 60),
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
                let reason = FAILURES[(rng.draw() % FAILURES.len() as u64) as usize];
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
                        env.repo_id(),
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
pub struct Seeded {
    pub environments: usize,
    /// Ids of the environments, newest first.
    pub ids: Vec<i64>,
    /// Environments of the filtered listing.
    pub ready_of_first_owner: usize,
    /// Repositories with an environment.
    pub repositories: usize,
    /// Their ids, as `environments.repo_id` has them.
    pub repo_ids: Vec<i64>,
}

/// Writes the fleet `options` describes into the migrated store at `url`, as previewd would
/// have written it over the period.
pub async fn seed(options: &FleetShape, backend: Backend, url: &str) -> anyhow::Result<Seeded> {
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
        repo_ids: fleet.iter().map(|e| e.repo_id()).collect::<BTreeSet<_>>().into_iter().collect(),
    })
}

/// `previewd token create --name bench --scope admin` on the store: the token it prints.
pub async fn admin_token(previewd: &std::path::Path, url: &str) -> anyhow::Result<String> {
    let output = tokio::process::Command::new(previewd)
        .args(["token", "create", "--name", "bench", "--scope", "admin"])
        .env("PREVIEWD_DATABASE_URL", url)
        .env("PREVIEWD_LOG_FILTER", "warn")
        .output()
        .await
        .with_context(|| format!("running {} token create", previewd.display()))?;
    if !output.status.success() {
        anyhow::bail!("previewd token create: {}: {}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    let token = String::from_utf8(output.stdout)?.trim().to_owned();
    if token.is_empty() || token.contains(char::is_whitespace) {
        anyhow::bail!("previewd token create printed no single token");
    }
    Ok(token)
}
