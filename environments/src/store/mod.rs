//! The durable store: webhook deliveries, the job queue and environments, in an embedded SQLite
//! file (the default: nothing to install) or in Postgres (several replicas).
//!
//! Queries are checked at run time, not by sqlx's compile-time macros: those are bound to one
//! database, and nearly every statement here is the same text on both backends. Times are
//! integer milliseconds and ids are `i64` on both, so one row type decodes from either. Where the
//! dialects differ (row locking when claiming jobs) the backend is matched explicitly. Every
//! query runs against both backends in the test suite.

mod access;
mod admission;
mod audit;
mod changes;
mod deliveries;
mod environments;
mod expiry;
mod fleet;
mod jobs;
pub(crate) mod kinds;
mod leases;
mod progress;
mod pulls;
mod reports;
mod repositories;
mod retention;
mod sessions;
mod share;
mod sleep;
mod tokens;

pub use access::{BYPASS_PREFIX, BypassTokenError, BypassTokenRecord, GateRecord, Visited};
pub use admission::{AdmissionPass, Limits};
pub use audit::{AuditRecord, NewAuditEntry};
pub use changes::ChangeRecord;
pub use deliveries::{DeliveryOutcome, DeliveryRecord, NewDelivery, Recorded};
pub use environments::{EnvironmentRecord, ReconcileRecord, Scope, TransitionRecord, service_urls};
pub use fleet::{EnvironmentFilter, EnvironmentSummary, RepositorySlots};
pub use jobs::{ClaimedJob, JobFate, JobRecord, JobState};
pub use kinds::{Dedup, EnvironmentJob, JobKind, NewJob, REPORT_MAX_ATTEMPTS};
pub use leases::Lease;
pub use pulls::SeenHead;
pub use reports::{ReportRecord, ReportedObject};
pub use repositories::RepositoryRecord;
pub use retention::{CHANGES_KEPT, Retention, SHARE_LINKS_KEPT, Swept};
pub use sessions::{SessionRecord, SessionRepository};
pub use share::{SHARE_PREFIX, ShareLinkRecord};
pub use tokens::{TOKEN_PREFIX, TokenError, TokenRecord, TokenScope};

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;

/// Errors from the store. Database URLs in messages are shown by [`redact_url`]: without their
/// password, or not at all when they cannot be parsed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database URL `{url}` is not supported: use `sqlite://<file>` or `postgres://...`")]
    UnsupportedUrl { url: String },
    #[error(
        "database URL `{url}`: parameter `{key}` is not one the Postgres driver knows (it would ignore it and \
         log its value); put the password in the URL's user part or in `password`"
    )]
    PasswordLikeParameter { url: String, key: String },
    #[error("cannot open database `{url}`: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("applying database migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error while {op}: {source}")]
    Query { op: &'static str, source: sqlx::Error },
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// A move the state machine forbids (`EnvironmentState::can_become`), refused by the store
    /// whichever writer asked: a bug in that writer, so not worth a retry.
    #[error("environment of {pull_request} cannot go from {from} to {to}")]
    ForbiddenTransition { pull_request: String, from: String, to: String },
}

impl StoreError {
    /// Whether trying again later may succeed (the database was unreachable, say); a refused
    /// transition or inconsistent data will not.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, StoreError::ForbiddenTransition { .. } | StoreError::Corrupt(_))
    }

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
    /// Connects to `url`: `sqlite://path` (created if missing) or `postgres://...`. The URL is a
    /// secret (it may hold the password): it is exposed to the driver only, and errors show it
    /// through [`redact_url`].
    pub async fn connect(url: &SecretString) -> Result<Store, StoreError> {
        let url = url.expose_secret();
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
                .foreign_keys(true)
                // Lets the retention sweep give freed pages back (`PRAGMA incremental_vacuum`).
                // Takes effect when the file is created; an older file is converted once by
                // `migrate`.
                .auto_vacuum(SqliteAutoVacuum::Incremental);
            let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await.map_err(connect_err)?;
            Backend::Sqlite(pool)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            if let Some(key) = password_like_parameter(url) {
                return Err(StoreError::PasswordLikeParameter { url: shown, key });
            }
            let options = PgConnectOptions::from_str(url).map_err(connect_err)?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .map_err(connect_err)?;
            Backend::Postgres(pool)
        } else {
            return Err(StoreError::UnsupportedUrl { url: shown });
        };
        Ok(Store { backend })
    }

    /// Applies the migrations of this backend (`migrations/sqlite` or `migrations/postgres`).
    ///
    /// A SQLite file created before previewd enabled incremental auto-vacuum (its
    /// `auto_vacuum` is NONE) is rewritten once with `VACUUM`, which is the only way to change
    /// that mode: it takes time in proportion to the file and needs free disk space as large as
    /// the file, once.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(pool) => {
                sqlx::migrate!("../migrations/sqlite").run(pool).await?;
                let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
                    .fetch_one(pool)
                    .await
                    .map_err(StoreError::query("reading auto_vacuum"))?;
                // 0 NONE, 1 FULL, 2 INCREMENTAL.
                if mode == 0 {
                    tracing::info!("converting the SQLite file to incremental auto-vacuum (a one-time VACUUM)");
                    let mut conn = pool.acquire().await.map_err(StoreError::query("converting to auto-vacuum"))?;
                    sqlx::query("PRAGMA auto_vacuum = INCREMENTAL")
                        .execute(&mut *conn)
                        .await
                        .map_err(StoreError::query("setting auto_vacuum"))?;
                    sqlx::query("VACUUM").execute(&mut *conn).await.map_err(StoreError::query("VACUUM"))?;
                }
            }
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

/// What [`redact_url`] shows instead of a URL it cannot take apart safely.
pub const HIDDEN_URL: &str = "(hidden: it cannot be taken apart safely)";

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`, so that a URL can appear in
/// an error message or a log line without its password.
///
/// The URL is parsed as sqlx parses it (the WHATWG parser of the `url` crate), so the password
/// hidden is the one the driver would send. A password must be percent-encoded where it holds
/// `/`, `?`, `#` or `@`; unencoded, the first three end the authority early and push the rest of
/// the password into the path, query or fragment, where nothing would be hidden. So a URL that
/// does not parse, has a fragment, or has an `@` after its authority is hidden whole.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return HIDDEN_URL.to_owned();
    };
    if parsed.fragment().is_some() || parsed[url::Position::BeforePath..].contains('@') {
        return HIDDEN_URL.to_owned();
    }
    if parsed.password().is_some() && parsed.set_password(Some("***")).is_err() {
        return HIDDEN_URL.to_owned();
    }
    // libpq takes the password as a query parameter too. Its value ends at the next `&`, which an
    // unencoded password may contain: what follows the first parameter named like a password is
    // hidden with it.
    if let Some(query) = parsed.query().map(str::to_owned) {
        let mut kept = Vec::new();
        let mut segments = query.split('&');
        for segment in segments.by_ref() {
            let key = segment.split('=').next().unwrap_or_default();
            let key: String = url::form_urlencoded::parse(key.as_bytes()).map(|(k, _)| k.into_owned()).collect();
            if is_password_key(&key) {
                kept.push(format!("{}=***", segment.split('=').next().unwrap_or_default()));
                if segments.next().is_some() {
                    kept.push("***".to_owned());
                }
                break;
            }
            kept.push(segment.to_owned());
        }
        parsed.set_query(Some(&kept.join("&")));
    }
    parsed.to_string()
}

/// Whether a query parameter is, or may be, a password (`password`, `sslpassword`, `PassWord`).
fn is_password_key(key: &str) -> bool {
    key.to_ascii_lowercase().contains("pass")
}

/// A query parameter named like a password that sqlx does not know (`sslpassword`, `PASSWORD`):
/// sqlx ignores unknown parameters with a warning that carries their value.
fn password_like_parameter(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    parsed.query_pairs().map(|(key, _)| key.into_owned()).find(|key| key != "password" && is_password_key(key))
}

#[cfg(test)]
mod tests {
    use super::{HIDDEN_URL, password_like_parameter, redact_url};
    use proptest::prelude::*;

    #[test]
    fn redacts_password_only() {
        assert_eq!(redact_url("postgres://u:pw@h:5432/db?x=1"), "postgres://u:***@h:5432/db?x=1");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://previewd.db"), "sqlite://previewd.db");
        assert_eq!(redact_url("sqlite:previewd.db"), "sqlite:previewd.db");
        assert_eq!(redact_url("postgres://h/db?user=u&password=pw"), "postgres://h/db?user=u&password=***");
        assert_eq!(
            redact_url("postgres://h/db?sslmode=disable&sslpassword=pw"),
            "postgres://h/db?sslmode=disable&sslpassword=***"
        );
        // An unencoded `&` may be part of the password: what follows it is hidden too.
        assert_eq!(redact_url("postgres://h/db?password=p&w&sslmode=disable"), "postgres://h/db?password=***&***");
    }

    /// Each character that has a meaning in a URL, in a password, unencoded and encoded.
    #[test]
    fn passwords_with_url_characters_never_show() {
        let cases = [
            // `@` in the password: the last `@` ends the user part, as in sqlx.
            ("postgres://u:p@ss@h/db", "postgres://u:***@h/db"),
            ("postgres://u:p:ss@h/db", "postgres://u:***@h/db"),
            // Percent-encoded, every special character is fine.
            ("postgres://u:p%2Fs%40s%3A%3F%23%25@h/db", "postgres://u:***@h/db"),
            ("postgres://u%40corp:p%2F1@h:5432/db", "postgres://u%40corp:***@h:5432/db"),
            // Unencoded `/`, `?` or `#` end the authority early: a password that then reads as a
            // port pushes its rest into the path, query or fragment. All of it is hidden.
            ("postgres://u:12/34@h/db", HIDDEN_URL),
            ("postgres://u:12?34@h/db", HIDDEN_URL),
            ("postgres://u:12#34@h/db", HIDDEN_URL),
            ("postgres://u:s3/cret@h/db", HIDDEN_URL),
            ("postgres://u:s3?cret@h/db", HIDDEN_URL),
            ("postgres://u:s3#cret@h/db", HIDDEN_URL),
            // Not URLs at all.
            ("postgres://u:pw@[::1/db", HIDDEN_URL),
            ("postgres://u:pw@h:99999/db", HIDDEN_URL),
            ("u:pw@h/db", HIDDEN_URL),
            ("", HIDDEN_URL),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn password_like_parameters_sqlx_does_not_know_are_found() {
        assert_eq!(password_like_parameter("postgres://h/db?sslpassword=x").as_deref(), Some("sslpassword"));
        assert_eq!(password_like_parameter("postgres://h/db?PASSWORD=x").as_deref(), Some("PASSWORD"));
        assert_eq!(password_like_parameter("postgres://h/db?password=x&sslmode=disable"), None);
        assert_eq!(password_like_parameter("postgres://u:x@h/db"), None);
    }

    /// Password characters: upper-case letters and digits that occur nowhere else in the URL,
    /// and every character with a meaning in a URL.
    fn password() -> impl Strategy<Value = String> {
        r"[XYZ0-9/@:?#%&=+ ;,\\\[\]!$'()*~^|-]{1,24}"
    }

    /// Whether `shown` holds any letter or digit of a password (none occur in the rest).
    fn shows_password(shown: &str) -> bool {
        shown.chars().any(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    }

    proptest! {
        #[test]
        fn no_password_character_survives_raw_or_encoded(password in password()) {
            let encoded: String = url::form_urlencoded::byte_serialize(password.as_bytes()).collect();
            for url in [
                format!("postgres://user:{password}@db.example/previewd"),
                format!("postgres://user:{encoded}@db.example/previewd"),
                format!("postgres://db.example/previewd?user=user&password={password}"),
                format!("postgres://db.example/previewd?user=user&password={encoded}"),
            ] {
                let shown = redact_url(&url);
                prop_assert!(!shows_password(&shown), "{} shown as {}", url, shown);
            }
        }
    }
}
