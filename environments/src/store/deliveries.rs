//! Webhook deliveries: recorded once per (hook, delivery id) and once per body within the
//! redelivery window, together with the job they cause, in one transaction per batch so that
//! many deliveries share one durable commit.

use super::{NewJob, Store, StoreError, begin_write};
use crate::time::Millis;
use sqlx::QueryBuilder;
use std::collections::HashMap;

/// What previewd made of a verified delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// GitHub's `ping` when a hook is created.
    Ping,
    /// An event previewd does not act on; recorded so operators can see it arrived.
    Ignored,
    /// An event previewd acts on; a job was queued for it.
    Queued,
    /// An event for a repository outside the policy's `allow` list; nothing was queued.
    NotAllowed,
}

impl DeliveryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Ignored => "ignored",
            Self::Queued => "queued",
            Self::NotAllowed => "not_allowed",
        }
    }
}

/// A delivery to record, with the job it causes, if any.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// `X-GitHub-Hook-ID`: GitHub shares delivery ids between hooks subscribed to the same event.
    pub hook_id: String,
    /// `X-GitHub-Delivery`: reused by GitHub when a delivery is redelivered.
    pub delivery_id: String,
    /// SHA-256 of the body as received, in hexadecimal. The signature covers the body only, so
    /// this, not the unsigned delivery id, is what tells a replayed body from a new event.
    pub body_sha256: Option<String>,
    pub event: String,
    pub action: Option<String>,
    pub outcome: DeliveryOutcome,
    pub received_at: Millis,
    pub job: Option<NewJob>,
}

/// Whether a delivery was new or seen before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    New {
        delivery: i64,
    },
    /// The same (hook, delivery id) was stored before, or the same body under the same
    /// delivery id from another hook (GitHub shares delivery ids between hooks): a redelivery.
    Duplicate,
    /// The same body was stored within the redelivery window under another delivery id `of`:
    /// a captured delivery sent again. Nothing is stored or queued for it.
    Replay {
        of: String,
    },
}

/// A stored delivery.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeliveryRecord {
    pub id: i64,
    pub hook_id: String,
    pub delivery_id: String,
    pub event: String,
    pub action: Option<String>,
    pub outcome: String,
    pub received_at: Millis,
    /// `None` once the redelivery window has passed, and for rows older than the digest.
    pub body_sha256: Option<String>,
}

/// Rows per statement: keeps the bind count far below SQLite's and Postgres's limits.
const ROWS_PER_STATEMENT: usize = 500;

impl Store {
    /// Records a batch of deliveries and their jobs in one transaction. A delivery whose
    /// (hook id, delivery id) is already stored, or appears earlier in the same batch, is a
    /// duplicate and gets no second job; so is one whose body was stored since `window_start`
    /// (a replay, or the same delivery from another hook). Digests of deliveries received
    /// before `window_start` are forgotten. Returns one answer per input, in order.
    pub async fn record_deliveries(
        &self,
        batch: &[NewDelivery],
        window_start: Millis,
    ) -> Result<Vec<Recorded>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut inserted: HashMap<(String, String), i64> = HashMap::with_capacity(batch.len());
        macro_rules! record {
            ($kind:tt $pool:expr) => {{
                let mut tx = begin_write!($kind $pool, "recording deliveries")?;
                // The unique index on the digest then spans the window only.
                sqlx::query(
                    "UPDATE deliveries SET body_sha256 = NULL WHERE body_sha256 IS NOT NULL AND received_at < $1",
                )
                .bind(window_start)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::query("forgetting body digests past the redelivery window"))?;
                for chunk in batch.chunks(ROWS_PER_STATEMENT) {
                    let mut insert = QueryBuilder::new(
                        "INSERT INTO deliveries (hook_id, delivery_id, body_sha256, event, action, outcome, received_at) ",
                    );
                    insert.push_values(chunk, |mut row, d| {
                        row.push_bind(d.hook_id.clone())
                            .push_bind(d.delivery_id.clone())
                            .push_bind(d.body_sha256.clone())
                            .push_bind(d.event.clone())
                            .push_bind(d.action.clone())
                            .push_bind(d.outcome.as_str())
                            .push_bind(d.received_at);
                    });
                    // No conflict target: a row is skipped on either unique index, the
                    // (hook, delivery id) one or the body digest's.
                    insert.push(" ON CONFLICT DO NOTHING RETURNING id, hook_id, delivery_id");
                    let rows: Vec<(i64, String, String)> = insert
                        .build_query_as()
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(StoreError::query("recording deliveries"))?;
                    inserted.extend(rows.into_iter().map(|(id, hook, delivery)| ((hook, delivery), id)));
                }
                // Which delivery holds the digest of each one skipped, to tell a replay from a
                // duplicate.
                let skipped: Vec<&str> = batch
                    .iter()
                    .filter(|d| !inserted.contains_key(&(d.hook_id.clone(), d.delivery_id.clone())))
                    .filter_map(|d| d.body_sha256.as_deref())
                    .collect();
                let mut holders: HashMap<String, String> = HashMap::new();
                for chunk in skipped.chunks(ROWS_PER_STATEMENT) {
                    let mut select =
                        QueryBuilder::new("SELECT body_sha256, delivery_id FROM deliveries WHERE body_sha256 IN (");
                    {
                        let mut list = select.separated(", ");
                        for digest in chunk {
                            list.push_bind(*digest);
                        }
                    }
                    select.push(")");
                    let rows: Vec<(String, String)> = select
                        .build_query_as()
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(StoreError::query("looking up body digests"))?;
                    holders.extend(rows);
                }
                let answers = answers(batch, &mut inserted, &holders);
                let jobs: Vec<(i64, &NewJob)> = batch
                    .iter()
                    .zip(&answers)
                    .filter_map(|(d, answer)| match (answer, &d.job) {
                        (Recorded::New { delivery }, Some(job)) => Some((*delivery, job)),
                        _ => None,
                    })
                    .collect();
                for chunk in jobs.chunks(ROWS_PER_STATEMENT) {
                    let mut insert = QueryBuilder::new(
                        "INSERT INTO jobs (kind, payload, delivery_id, state, attempts, max_attempts, run_at, created_at, updated_at) ",
                    );
                    insert.push_values(chunk, |mut row, (delivery, job)| {
                        let now = crate::time::now_ms();
                        // A delivery's job is its own work, so a plain insert rather than
                        // `insert_job!`'s rule-by-rule statement (one row per delivery, batched).
                        debug_assert_eq!(job.kind().dedup(), super::Dedup::Never, "{:?}", job.kind());
                        row.push_bind(job.kind().name())
                            .push_bind(job.payload().to_owned())
                            .push_bind(*delivery)
                            .push_bind("queued")
                            .push_bind(0_i64)
                            .push_bind(job.max_attempts)
                            .push_bind(job.run_at.unwrap_or(now))
                            .push_bind(now)
                            .push_bind(now);
                    });
                    insert
                        .build()
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::query("queueing jobs for deliveries"))?;
                }
                tx.commit().await.map_err(StoreError::query("committing deliveries"))?;
                Ok(answers)
            }};
        }
        match &self.backend {
            super::Backend::Sqlite(pool) => record!(sqlite pool),
            super::Backend::Postgres(pool) => record!(postgres pool),
        }
    }

    /// The delivery stored under (hook id, delivery id), if any.
    pub async fn find_delivery(&self, hook_id: &str, delivery_id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
        super::with_pool!(self, pool => sqlx::query_as(
            "SELECT id, hook_id, delivery_id, event, action, outcome, received_at, body_sha256 FROM deliveries \
             WHERE hook_id = $1 AND delivery_id = $2",
        )
        .bind(hook_id)
        .bind(delivery_id)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::query("reading a delivery")))
    }

    /// Whether a delivery with GitHub's delivery id (`X-GitHub-Delivery`, the `guid` of the
    /// App's delivery log) was stored, from any hook.
    pub async fn delivery_seen(&self, delivery_id: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = super::with_pool!(self, pool => sqlx::query_scalar(
            "SELECT id FROM deliveries WHERE delivery_id = $1 LIMIT 1",
        )
        .bind(delivery_id)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::query("looking up a delivery"))?);
        Ok(found.is_some())
    }

    /// Number of stored deliveries, for tests and the demo.
    pub async fn count_deliveries(&self) -> Result<i64, StoreError> {
        super::with_pool!(self, pool => sqlx::query_scalar("SELECT COUNT(*) FROM deliveries")
            .fetch_one(pool)
            .await
            .map_err(StoreError::query("counting deliveries")))
    }
}

/// The first occurrence of a key that the database inserted is new. Of the rest, one whose body
/// is held by a delivery with another delivery id is a replay; everything else is a duplicate
/// (stored before, repeated inside this batch, or the same delivery from another hook).
fn answers(
    batch: &[NewDelivery],
    inserted: &mut HashMap<(String, String), i64>,
    holders: &HashMap<String, String>,
) -> Vec<Recorded> {
    batch
        .iter()
        .map(|d| {
            if let Some(delivery) = inserted.remove(&(d.hook_id.clone(), d.delivery_id.clone())) {
                return Recorded::New { delivery };
            }
            match d.body_sha256.as_ref().and_then(|digest| holders.get(digest)) {
                Some(of) if *of != d.delivery_id => Recorded::Replay { of: of.clone() },
                _ => Recorded::Duplicate,
            }
        })
        .collect()
}
