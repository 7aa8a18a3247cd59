//! The registry of job kinds: for each kind, the name stored in the `kind` column, the type of
//! its payload, and whether a second request for the same work is absorbed by a waiting job.
//! Everything that queues a job builds it here ([`NewJob`]'s constructors), and the worker's
//! dispatch is a `match` over [`JobKind`], so a new kind does not compile until it has a
//! payload, a rule and a handler.

use crate::time::Millis;
use serde::{Deserialize, Serialize};

/// Every kind of work the queue holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobKind {
    /// A webhook delivery previewd acts on. Payload: the service's event type (it lives with
    /// the handlers, in the service, which this crate does not depend on).
    GitHubEvent,
    /// An event previewd synthesised from what GitHub lists (the resync), same payload type.
    ResyncEvent,
    /// Reconcile one environment. Payload: [`EnvironmentJob`].
    Reconcile,
    /// Report one environment's state on its pull request. Payload: [`EnvironmentJob`].
    Report,
}

/// When a request for work that is already waiting adds nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dedup {
    /// Every request is a job. Deliveries are applied in order: `labeled`, `unlabeled`,
    /// `labeled` must not become `labeled`, `unlabeled`.
    Never,
    /// Absorbed by an identical job (same kind and payload) queued to run no later: a wake-up
    /// now must not be absorbed by a deadline in an hour. A running job does not count: it may
    /// have read what it works on before the change that asks for the work again.
    QueuedNoLater,
    /// Absorbed by any identical queued job, even one waiting out a retry's backoff: a report
    /// reads the environment's state when it runs, so one waiting report covers every change.
    AnyQueued,
}

impl JobKind {
    pub const ALL: [JobKind; 4] = [Self::GitHubEvent, Self::ResyncEvent, Self::Reconcile, Self::Report];

    /// The name in the `kind` column and in metrics and logs. Never changed once released:
    /// jobs queued by an older version must still be found.
    pub const fn name(self) -> &'static str {
        match self {
            Self::GitHubEvent => "github_event",
            Self::ResyncEvent => "resync_event",
            Self::Reconcile => "reconcile_environment",
            Self::Report => "report_environment",
        }
    }

    pub const fn dedup(self) -> Dedup {
        match self {
            Self::GitHubEvent => Dedup::Never,
            Self::ResyncEvent | Self::Reconcile => Dedup::QueuedNoLater,
            Self::Report => Dedup::AnyQueued,
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// `'github_event', 'resync_event', …`: the kinds this build claims. A job of a kind it does
    /// not know (queued by a newer replica during a rolling upgrade) is left for one that does,
    /// instead of being failed as unhandleable.
    pub(crate) fn sql_list() -> String {
        Self::ALL.map(|kind| format!("'{}'", kind.name())).join(", ")
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl TryFrom<String> for JobKind {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        Self::from_name(&name).ok_or_else(|| format!("unknown job kind `{name}`"))
    }
}

/// The payload of the jobs about one environment: `{"environment":<id>}`. The same text for the
/// same environment, which is what lets a waiting job absorb the next request, and what the
/// retention's "does a job still name this environment" check matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentJob {
    pub environment: i64,
}

/// Attempts of a report job. Reports wait out GitHub outages: with the queue's backoff capped
/// at ten minutes, this covers most of a day.
pub const REPORT_MAX_ATTEMPTS: i64 = 150;

/// A job to queue, built by one constructor per kind, so that kind and payload always agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    kind: JobKind,
    payload: String,
    /// Attempts before the job is moved to the dead-letter state.
    pub max_attempts: i64,
    /// Not before this time (default: now).
    pub run_at: Option<Millis>,
}

impl NewJob {
    /// A webhook delivery's event.
    pub fn github_event(event: &impl Serialize, max_attempts: i64) -> Result<Self, serde_json::Error> {
        Ok(Self::new(JobKind::GitHubEvent, serde_json::to_string(event)?, max_attempts))
    }

    /// An event the resync synthesised.
    pub fn resync_event(event: &impl Serialize, max_attempts: i64) -> Result<Self, serde_json::Error> {
        Ok(Self::new(JobKind::ResyncEvent, serde_json::to_string(event)?, max_attempts))
    }

    pub fn reconcile(environment: i64, max_attempts: i64) -> Self {
        Self::new(JobKind::Reconcile, environment_payload(environment), max_attempts)
    }

    pub fn report(environment: i64) -> Self {
        Self::new(JobKind::Report, environment_payload(environment), REPORT_MAX_ATTEMPTS)
    }

    /// The same job, not to run before `at`.
    pub fn not_before(self, at: Millis) -> Self {
        Self { run_at: Some(at), ..self }
    }

    fn new(kind: JobKind, payload: String, max_attempts: i64) -> Self {
        Self { kind, payload, max_attempts, run_at: None }
    }

    pub fn kind(&self) -> JobKind {
        self.kind
    }

    pub fn payload(&self) -> &str {
        &self.payload
    }
}

fn environment_payload(environment: i64) -> String {
    // A struct of one integer field always serializes.
    serde_json::to_string(&EnvironmentJob { environment }).unwrap_or_default()
}

/// The statement that queues a job of `kind`, by its dedup rule. Binds: `$1` kind, `$2` payload,
/// `$3` max attempts, `$4` run at, `$5` now. Returns the new job's id, or no row when a waiting
/// job absorbed it. The same text on both backends.
pub(crate) const fn insert_sql(dedup: Dedup) -> &'static str {
    match dedup {
        Dedup::Never => {
            "INSERT INTO jobs (kind, payload, state, attempts, max_attempts, run_at, created_at, updated_at) \
             VALUES ($1, $2, 'queued', 0, $3, $4, $5, $5) RETURNING id"
        }
        Dedup::QueuedNoLater => {
            "INSERT INTO jobs (kind, payload, state, attempts, max_attempts, run_at, created_at, updated_at) \
             SELECT $1, $2, 'queued', 0, $3, $4, $5, $5 \
             WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE kind = $1 AND payload = $2 AND state = 'queued' AND run_at <= $4) \
             RETURNING id"
        }
        Dedup::AnyQueued => {
            "INSERT INTO jobs (kind, payload, state, attempts, max_attempts, run_at, created_at, updated_at) \
             SELECT $1, $2, 'queued', 0, $3, $4, $5, $5 \
             WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE kind = $1 AND payload = $2 AND state = 'queued') \
             RETURNING id"
        }
    }
}

/// Queues `$job` (a `&NewJob`) through `$executor` (a pool or `&mut *tx`, either backend) by its
/// kind's dedup rule; evaluates to `Result<Option<i64>, sqlx::Error>`: the new id, or `None`
/// when a waiting job absorbed it.
macro_rules! insert_job {
    ($executor:expr, $job:expr, $now:expr) => {{
        let job: &$crate::store::NewJob = $job;
        let now: $crate::time::Millis = $now;
        sqlx::query_scalar::<_, i64>($crate::store::kinds::insert_sql(job.kind().dedup()))
            .bind(job.kind().name())
            .bind(job.payload())
            .bind(job.max_attempts)
            .bind(job.run_at.unwrap_or(now))
            .bind(now)
            .fetch_optional($executor)
            .await
    }};
}
pub(crate) use insert_job;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_distinct_name_that_parses_back() {
        let names: std::collections::BTreeSet<_> = JobKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), JobKind::ALL.len());
        for kind in JobKind::ALL {
            assert_eq!(JobKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(JobKind::from_name("unknown"), None);
    }

    #[test]
    fn environment_jobs_carry_the_payload_retention_matches() {
        // The retention query matches this exact text (`'{"environment":' || e.id || '}'`).
        assert_eq!(NewJob::reconcile(7, 3).payload(), r#"{"environment":7}"#);
        assert_eq!(NewJob::report(7).payload(), r#"{"environment":7}"#);
        assert_eq!(NewJob::report(7).max_attempts, REPORT_MAX_ATTEMPTS);
    }
}
