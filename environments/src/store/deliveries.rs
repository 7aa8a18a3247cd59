//! Webhook deliveries: recorded once per (hook, delivery id), together with the job they cause,
//! in one transaction per batch so that many deliveries share one durable commit.

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
    pub event: String,
    pub action: Option<String>,
    pub outcome: DeliveryOutcome,
    pub received_at: Millis,
    pub job: Option<NewJob>,
}

/// Whether a delivery was new or seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    New { delivery: i64 },
    Duplicate,
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
}

/// Rows per statement: keeps the bind count far below SQLite's and Postgres's limits.
const ROWS_PER_STATEMENT: usize = 500;

impl Store {
    /// Records a batch of deliveries and their jobs in one transaction. A delivery whose
    /// (hook id, delivery id) is already stored, or appears earlier in the same batch, is a
    /// duplicate and gets no second job. Returns one answer per input, in order.
    pub async fn record_deliveries(&self, batch: &[NewDelivery]) -> Result<Vec<Recorded>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut inserted: HashMap<(String, String), i64> = HashMap::with_capacity(batch.len());
        macro_rules! record {
            ($kind:tt $pool:expr) => {{
                let mut tx = begin_write!($kind $pool, "recording deliveries")?;
                for chunk in batch.chunks(ROWS_PER_STATEMENT) {
                    let mut insert = QueryBuilder::new(
                        "INSERT INTO deliveries (hook_id, delivery_id, event, action, outcome, received_at) ",
                    );
                    insert.push_values(chunk, |mut row, d| {
                        row.push_bind(d.hook_id.clone())
                            .push_bind(d.delivery_id.clone())
                            .push_bind(d.event.clone())
                            .push_bind(d.action.clone())
                            .push_bind(d.outcome.as_str())
                            .push_bind(d.received_at);
                    });
                    insert.push(" ON CONFLICT (hook_id, delivery_id) DO NOTHING RETURNING id, hook_id, delivery_id");
                    let rows: Vec<(i64, String, String)> = insert
                        .build_query_as()
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(StoreError::query("recording deliveries"))?;
                    inserted.extend(rows.into_iter().map(|(id, hook, delivery)| ((hook, delivery), id)));
                }
                let answers = answers(batch, &mut inserted);
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
                        row.push_bind(job.kind.clone())
                            .push_bind(job.payload.clone())
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
            "SELECT id, hook_id, delivery_id, event, action, outcome, received_at FROM deliveries \
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

/// The first occurrence of a key that the database inserted is new; everything else is a
/// duplicate (stored before, or repeated inside this batch).
fn answers(batch: &[NewDelivery], inserted: &mut HashMap<(String, String), i64>) -> Vec<Recorded> {
    batch
        .iter()
        .map(|d| match inserted.remove(&(d.hook_id.clone(), d.delivery_id.clone())) {
            Some(delivery) => Recorded::New { delivery },
            None => Recorded::Duplicate,
        })
        .collect()
}
