//! The durable store: webhook deliveries, the job queue and environments, in an embedded SQLite
//! file (the default: nothing to install) or in Postgres (several replicas).
//!
//! Queries are checked at run time, not by sqlx's compile-time macros: those are bound to one
//! database, and nearly every statement here is the same text on both backends. Times are
//! integer milliseconds and ids are `i64` on both, so one row type decodes from either. Where the
//! dialects differ (row locking when claiming jobs) the backend is matched explicitly. Every
//! query runs against both backends in the test suite.

mod deliveries;
mod environments;
mod jobs;
mod leases;
mod pulls;
mod reports;
mod repositories;

pub use deliveries::{DeliveryOutcome, DeliveryRecord, NewDelivery, Recorded};
pub use environments::{EnvironmentRecord, ReconcileRecord, TransitionRecord};
pub use jobs::{ClaimedJob, JobFate, JobRecord, JobState, NewJob};
pub use leases::Lease;
pub use pulls::SeenHead;
pub use reports::{ReportRecord, ReportedObject};
pub use repositories::RepositoryRecord;

/// Job kind queued, in the same transaction, with every change of an environment: the outbox
/// through which changes reach the pull request. The service reports the environment's state
/// when it runs one (or completes it at once when no GitHub access is configured).
pub const REPORT_JOB: &str = "report_environment";

/// Attempts of a report job. Reports wait out GitHub outages: with the queue's backoff capped
/// at ten minutes, this covers most of a day.
pub const REPORT_MAX_ATTEMPTS: i64 = 150;

/// The payload of the report job of environment `id`. The same text for the same environment,
/// so that a waiting report absorbs the next change instead of adding a job.
pub fn report_payload(id: i64) -> String {
    format!("{{\"environment\":{id}}}")
}

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::time::Duration;

/// Errors from the store. Database URLs in messages have their password removed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database URL `{url}` is not supported: use `sqlite://<file>` or `postgres://...`")]
    UnsupportedUrl { url: String },
    #[error("cannot open database `{url}`: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("applying database migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error while {op}: {source}")]
    Query { op: &'static str, source: sqlx::Error },
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

impl StoreError {
    fn query(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Query { op, source }
    }
}

#[derive(Clone, Debug)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same code against whichever pool the store holds. The body is compiled once per
/// backend, so query and row types are inferred for each database separately.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite($pool) => $body,
            $crate::store::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// Opens a write transaction. On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`), so
/// two writers wait for each other under the busy timeout instead of failing when one upgrades
/// a read lock.
macro_rules! begin_write {
    (sqlite $pool:expr, $op:literal) => {
        $pool.begin_with("BEGIN IMMEDIATE").await.map_err($crate::store::StoreError::query($op))
    };
    (postgres $pool:expr, $op:literal) => {
        $pool.begin().await.map_err($crate::store::StoreError::query($op))
    };
}
pub(crate) use begin_write;

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
}

impl Store {
    /// Connects to `url`: `sqlite://path` (created if missing) or `postgres://...`.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let shown = redact_url(url);
        let connect_err = |source| StoreError::Connect { url: shown.clone(), source };
        let backend = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(connect_err)?
                .create_if_missing(true)
                // WAL lets readers (readiness checks, metrics) run beside the writer; FULL
                // synchronous makes every commit survive power loss, which is what "durably
                // stored before answering GitHub" means.
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await.map_err(connect_err)?;
            Backend::Sqlite(pool)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .map_err(connect_err)?;
            Backend::Postgres(pool)
        } else {
            return Err(StoreError::UnsupportedUrl { url: shown });
        };
        Ok(Store { backend })
    }

    /// Applies the migrations of this backend (`migrations/sqlite` or `migrations/postgres`).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(pool) => sqlx::migrate!("../migrations/sqlite").run(pool).await?,
            Backend::Postgres(pool) => sqlx::migrate!("../migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    /// `sqlite` or `postgres`, for logs and metrics.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// A round trip to the database, for the readiness probe.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await.map_err(StoreError::query("checking the database"))?;
        });
        Ok(())
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`, so that a URL can appear in
/// an error message or a log line without its password.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let path = redact_query_password(path);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return format!("{scheme}://{authority}{path}");
    };
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    let password_hidden = if userinfo.contains(':') { ":***" } else { "" };
    format!("{scheme}://{user}{password_hidden}@{host}{path}")
}

/// Hides a `password=` query parameter (libpq accepts the password there too).
fn redact_query_password(path: &str) -> String {
    let Some((before, query)) = path.split_once('?') else {
        return path.to_owned();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => param.to_owned(),
        })
        .collect();
    format!("{before}?{}", params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_password_only() {
        assert_eq!(redact_url("postgres://u:pw@h:5432/db?x=1"), "postgres://u:***@h:5432/db?x=1");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://previewd.db"), "sqlite://previewd.db");
        assert_eq!(redact_url("postgres://u:p@ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("postgres://h/db?user=u&password=pw"), "postgres://h/db?user=u&password=***");
    }
}
