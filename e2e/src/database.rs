//! A fresh database per test, on either backend.
//!
//! Postgres comes from `PREVIEWD_TEST_POSTGRES_URL` (a server URL with a role allowed to create
//! databases), which `e2e/postgres.sh` prints and `e2e/test.sh` exports. Each test gets its own
//! database on that server, so tests run in parallel without seeing each other's rows.

use anyhow::{Context, bail};
use sqlx::Connection;

/// The two store backends previewd supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database that exists for one test. SQLite files are removed on drop; Postgres databases
/// are left for the server's cleanup (`e2e/postgres.sh down` drops the whole cluster), so a
/// failed test's data can be inspected.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// `e2e/postgres.sh`, whose `restart S` takes the test server away for S seconds.
pub fn postgres_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("postgres.sh")
}

/// The environment variable naming the test Postgres server.
pub const POSTGRES_URL_ENV: &str = "PREVIEWD_TEST_POSTGRES_URL";

/// Creates an empty database on `backend`.
pub async fn fresh(backend: Backend) -> anyhow::Result<TestDatabase> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().context("creating a directory for the SQLite file")?;
            let url = format!("sqlite://{}", dir.path().join("previewd.db").display());
            Ok(TestDatabase { url, _dir: Some(dir) })
        }
        Backend::Postgres => {
            let Ok(server) = std::env::var(POSTGRES_URL_ENV) else {
                bail!(
                    "{POSTGRES_URL_ENV} is not set. The Postgres tests need a real server: run them through \
                     `e2e/test.sh`, or start one with `eval \"$(e2e/postgres.sh up)\"`"
                );
            };
            let name = format!("previewd_test_{}", uuid::Uuid::new_v4().simple());
            let mut admin = sqlx::PgConnection::connect(&server)
                .await
                .with_context(|| format!("connecting to the test Postgres server named by {POSTGRES_URL_ENV}"))?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut admin)
                .await
                .with_context(|| format!("creating database {name}"))?;
            admin.close().await.ok();
            Ok(TestDatabase { url: with_database(&server, &name)?, _dir: None })
        }
    }
}

/// Drops the Postgres database of `url` (made by [`fresh`]), with its connections: for benchmarks,
/// whose databases are too large to leave until `e2e/postgres.sh down`.
pub async fn drop_postgres(url: &str) -> anyhow::Result<()> {
    let server = std::env::var(POSTGRES_URL_ENV).with_context(|| format!("{POSTGRES_URL_ENV} is not set"))?;
    let path = url.split('?').next().unwrap_or(url);
    let name = path.rsplit('/').next().unwrap_or_default();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("unexpected database name in the database URL");
    }
    let mut admin =
        sqlx::PgConnection::connect(&server).await.context("connecting to Postgres to drop the database")?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .execute(&mut admin)
        .await
        .with_context(|| format!("dropping database {name}"))?;
    admin.close().await.ok();
    Ok(())
}

/// `postgres://host:port/postgres?x` → `postgres://host:port/<name>?x`.
fn with_database(server: &str, name: &str) -> anyhow::Result<String> {
    let (base, query) = server.split_once('?').map_or((server, None), |(b, q)| (b, Some(q)));
    let Some(authority_end) = base.find("://").map(|i| i + 3) else {
        bail!("{POSTGRES_URL_ENV} is not a URL");
    };
    let host_part = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    Ok(match query {
        Some(q) => format!("{host_part}/{name}?{q}"),
        None => format!("{host_part}/{name}"),
    })
}

/// A Postgres database of its own, owned by a new role that logs in with `password` (over TCP
/// the test server asks every role but the test role for its password, see `e2e/postgres.sh`).
/// Returns the database and the role's URL, with the password percent-encoded as a URL needs.
pub async fn with_password(password: &str) -> anyhow::Result<(TestDatabase, String)> {
    let db = fresh(Backend::Postgres).await?;
    let server = std::env::var(POSTGRES_URL_ENV).with_context(|| format!("{POSTGRES_URL_ENV} is not set"))?;
    let name = db.url.rsplit('/').next().and_then(|tail| tail.split('?').next()).unwrap_or_default().to_owned();
    let role = format!("{name}_owner");
    let mut admin = sqlx::PgConnection::connect(&server).await.context("connecting to the test Postgres server")?;
    let literal = password.replace('\'', "''");
    for statement in
        [format!("CREATE ROLE {role} LOGIN PASSWORD '{literal}'"), format!("ALTER DATABASE {name} OWNER TO {role}")]
    {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut admin).await.context("creating the role")?;
    }
    admin.close().await.ok();
    let encoded: String = password
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") })
        .collect();
    let url = db.url.replacen("://previewd@", &format!("://{role}:{encoded}@"), 1);
    if url == db.url {
        bail!("{POSTGRES_URL_ENV} does not name the role `previewd`: cannot make a URL with a password from it");
    }
    Ok((db, url))
}

/// Defines each test once per backend: `mod sqlite { fn name }` and `mod postgres { fn name }`.
/// The body receives a fresh [`TestDatabase`] as `$db`.
#[macro_export]
macro_rules! each_backend {
    ($(async fn $name:ident($db:ident) $body:block)*) => {
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let $db = $crate::database::fresh($crate::database::Backend::Sqlite).await.expect("test database");
                    $body
                }
            )*
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let $db = $crate::database::fresh($crate::database::Backend::Postgres).await.expect("test database");
                    $body
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_name_replaces_the_path() {
        assert_eq!(
            super::with_database("postgres://u@127.0.0.1:5433/postgres?sslmode=disable", "t1").unwrap(),
            "postgres://u@127.0.0.1:5433/t1?sslmode=disable"
        );
        assert_eq!(super::with_database("postgres://h:1", "t2").unwrap(), "postgres://h:1/t2");
    }
}
