//! The retention benchmark (`e2e/bench/retention.sh`; see `e2e/bench/README.md`).
//!
//! How large the database is after simulated days of live environments, with the retention sweep
//! running at its defaults and without it. Time is simulated: rows are written directly with the
//! timestamps they would have, at the rates previewd produces them, and the sweep is called with
//! the simulated time every `retention.interval_seconds`. Per environment and simulated hour:
//!
//! - 60 reconcile jobs, done (the periodic pass queues one per live environment per minute);
//! - `--deliveries-per-hour` webhook deliveries (default 10: a push and the check suites, check
//!   runs and statuses of its CI), each with its job, done, and a body digest;
//! - `--pushes-per-hour` pushes (default 1), each two transitions (Provisioning, Ready) and two
//!   report jobs, done.
//!
//! Printed per store and simulated day: rows per table and the database's size (SQLite: pages
//! × page size, which is the file after the sweep's checkpoint; Postgres: `pg_database_size`),
//! with and without retention, and how long `/metrics`'s queue count query takes on the result.
//! On Postgres a plain `VACUUM` follows each sweep, standing in for the autovacuum that the
//! real ten minutes between sweeps would allow (a simulated day passes in seconds).
//! A benchmark prints figures; it never fails on them.

use anyhow::{Context, bail};
use previewd_e2e::database::{Backend, fresh};
use previewd_e2e::measure::load_average;
use previewd_environments::store::{Retention, Store};
use sqlx::QueryBuilder;
use std::time::{Duration, Instant};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

/// The service's defaults (`RetentionConfig::default` in service/src/config/mod.rs).
fn default_retention() -> Retention {
    let hours = |h: u64| Duration::from_secs(h * 3600);
    Retention {
        done_jobs: hours(6),
        dead_jobs: hours(24 * 7),
        deliveries: hours(24 * 7),
        transitions: hours(24 * 32),
        finished_environments: hours(24 * 30),
        audit: hours(24 * 365),
        batch: 1_000,
    }
}
const SWEEP_INTERVAL: i64 = 10 * MINUTE;

fn arg<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args.get(i + 1).and_then(|v| v.parse().ok()).with_context(|| format!("{name} needs a value")),
        None => Ok(default),
    }
}

struct Load {
    environments: i64,
    days: i64,
    deliveries_per_hour: i64,
    pushes_per_hour: i64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--help") {
        println!(
            "bench_retention [--store sqlite|postgres|both] [--environments 100] [--days 2] \
             [--deliveries-per-hour 10] [--pushes-per-hour 1]"
        );
        return Ok(());
    }
    let load = Load {
        environments: arg("--environments", 100)?,
        days: arg("--days", 2)?,
        deliveries_per_hour: arg("--deliveries-per-hour", 10)?,
        pushes_per_hour: arg("--pushes-per-hour", 1)?,
    };
    let stores: Vec<Backend> = match arg("--store", "both".to_owned())?.as_str() {
        "sqlite" => vec![Backend::Sqlite],
        "postgres" => vec![Backend::Postgres],
        "both" => vec![Backend::Sqlite, Backend::Postgres],
        other => bail!("--store {other}: sqlite, postgres or both"),
    };
    println!(
        "{} live environments, {} simulated days; per environment and hour: 60 reconcile jobs, {} deliveries \
         with their jobs, {} pushes (2 transitions, 2 reports each). Load before: {}",
        load.environments,
        load.days,
        load.deliveries_per_hour,
        load.pushes_per_hour,
        load_average()
    );
    let retention = default_retention();
    println!("retention: {retention:?}, sweep every {} min", SWEEP_INTERVAL / MINUTE);
    for backend in stores {
        for sweep in [false, true] {
            run(backend, sweep.then_some(&retention), &load).await?;
        }
    }
    println!("load after: {}", load_average());
    Ok(())
}

async fn run(backend: Backend, retention: Option<&Retention>, load: &Load) -> anyhow::Result<()> {
    let db = fresh(backend).await?;
    let store = Store::connect(&db.url.clone().into()).await?;
    store.migrate().await?;
    let label = format!("{backend:?}, {}", if retention.is_some() { "with retention" } else { "without retention" });
    // A second pool of the same database for the writes with simulated times.
    let start = previewd_environments::time::now_ms() - load.days * 24 * HOUR;
    macro_rules! simulate {
        ($pool:expr) => {{
            let pool = $pool;
            let mut env_ids = Vec::new();
            for pr in 1..=load.environments {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO environments (repo_id, repo_owner, repo_name, pr_number, head_sha, head_branch, author, \
                     state, created_at, updated_at, name) \
                     VALUES (42, 'octo', 'app', $1, $2, 'feature', 'dev', 'Ready', $3, $3, $4) RETURNING id",
                )
                .bind(pr)
                .bind("a".repeat(40))
                .bind(start)
                .bind(format!("pr-{pr}-app-bench"))
                .fetch_one(&pool)
                .await?;
                env_ids.push(id);
            }
            let started = Instant::now();
            let mut sweep_time = Duration::ZERO;
            let mut delivery_seq = 0_i64;
            for minute in 0..load.days * 24 * 60 {
                let t = start + minute * MINUTE;
                let mut tx = pool.begin().await?;
                // The periodic pass: one reconcile job per live environment, done a moment later.
                let mut insert = QueryBuilder::new(
                    "INSERT INTO jobs (kind, payload, state, attempts, max_attempts, run_at, created_at, updated_at) ",
                );
                insert.push_values(&env_ids, |mut row, id| {
                    row.push_bind("reconcile")
                        .push_bind(format!("{{\"environment\":{id}}}"))
                        .push_bind("done")
                        .push_bind(1_i64)
                        .push_bind(8_i64)
                        .push_bind(t)
                        .push_bind(t)
                        .push_bind(t + 200);
                });
                insert.build().execute(&mut *tx).await?;
                // Deliveries and pushes spread over the hour: environment i's at minute
                // (i * k) mod 60.
                for (i, id) in env_ids.iter().enumerate() {
                    let i = i as i64;
                    for k in 0..load.deliveries_per_hour {
                        if (i + k * 60 / load.deliveries_per_hour.max(1)) % 60 != minute % 60 {
                            continue;
                        }
                        delivery_seq += 1;
                        let delivery: i64 = sqlx::query_scalar(
                            "INSERT INTO deliveries (hook_id, delivery_id, body_sha256, event, action, outcome, received_at) \
                             VALUES ('1', $1, $2, 'check_run', 'completed', 'queued', $3) RETURNING id",
                        )
                        .bind(uuid::Uuid::new_v4().to_string())
                        .bind(format!("{delivery_seq:064x}"))
                        .bind(t)
                        .fetch_one(&mut *tx)
                        .await?;
                        sqlx::query(
                            "INSERT INTO jobs (kind, payload, delivery_id, state, attempts, max_attempts, run_at, created_at, updated_at) \
                             VALUES ('github_event', '{\"event\":\"check_run\",\"action\":\"completed\",\"repository\":42}', $1, 'done', 1, 8, $2, $2, $3)",
                        )
                        .bind(delivery)
                        .bind(t)
                        .bind(t + 50)
                        .execute(&mut *tx)
                        .await?;
                    }
                    for k in 0..load.pushes_per_hour {
                        if (i + 7 + k * 60 / load.pushes_per_hour.max(1)) % 60 != minute % 60 {
                            continue;
                        }
                        for (from, to) in [("Ready", "Provisioning"), ("Provisioning", "Ready")] {
                            sqlx::query(
                                "INSERT INTO environment_transitions (environment_id, from_state, to_state, head_sha, reason, at) \
                                 VALUES ($1, $2, $3, $4, NULL, $5)",
                            )
                            .bind(id)
                            .bind(from)
                            .bind(to)
                            .bind(format!("{:040x}", minute * 1000 + i))
                            .bind(t)
                            .execute(&mut *tx)
                            .await?;
                            sqlx::query(
                                "INSERT INTO jobs (kind, payload, state, attempts, max_attempts, run_at, created_at, updated_at) \
                                 VALUES ('report_environment', $1, 'done', 1, 150, $2, $2, $3)",
                            )
                            .bind(format!("{{\"environment\":{id}}}"))
                            .bind(t)
                            .bind(t + 300)
                            .execute(&mut *tx)
                            .await?;
                        }
                    }
                }
                tx.commit().await?;
                if let Some(retention) = retention
                    && (minute * MINUTE) % SWEEP_INTERVAL == 0
                {
                    let at = Instant::now();
                    store.sweep(retention, t).await?;
                    sweep_time += at.elapsed();
                    // Postgres's autovacuum would have had the real ten minutes to make the
                    // deleted rows' space reusable; a simulated day passes in seconds.
                    if backend == Backend::Postgres {
                        sqlx::query("VACUUM").execute(&pool).await?;
                    }
                }
                if (minute + 1) % (24 * 60) == 0 {
                    store.reclaim_space().await?;
                    let mut rows = Vec::new();
                    for table in ["jobs", "deliveries", "environment_transitions"] {
                        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                            .fetch_one(&pool)
                            .await?;
                        rows.push(format!("{table} {n}"));
                    }
                    let at = Instant::now();
                    let counts = store.job_counts().await?;
                    let scrape = at.elapsed();
                    let size = store.database_size().await?;
                    println!(
                        "{label}, day {}: {:.1} MiB; rows: {}; /metrics job count query {:.1} ms ({counts:?}); \
                         simulated in {:.1} s, of which sweeps {:.2} s",
                        (minute + 1) / (24 * 60),
                        size as f64 / (1024.0 * 1024.0),
                        rows.join(", "),
                        scrape.as_secs_f64() * 1000.0,
                        started.elapsed().as_secs_f64(),
                        sweep_time.as_secs_f64(),
                    );
                }
            }
            pool.close().await;
        }};
    }
    match backend {
        Backend::Sqlite => {
            let options: sqlx::sqlite::SqliteConnectOptions = db.url.parse()?;
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options.busy_timeout(Duration::from_secs(10)))
                .await?;
            simulate!(pool)
        }
        Backend::Postgres => {
            let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&db.url).await?;
            simulate!(pool)
        }
    }
    store.close().await;
    Ok(())
}
