//! Durable intake of deliveries with group commit.
//!
//! Request handlers hand their delivery to one writer task and wait for its answer. The writer
//! takes everything queued at that moment and records it in one transaction, so a burst of
//! deliveries shares one durable commit (one fsync on SQLite) instead of paying one each. A
//! handler answers GitHub only after its delivery's transaction committed.

use previewd_environments::store::{NewDelivery, Recorded, Store};
use previewd_environments::time::{millis, now_ms};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

/// Deliveries committed together at most.
const MAX_BATCH: usize = 1_000;
/// Deliveries waiting for the writer at most; further handlers wait (back-pressure).
const QUEUE_CAPACITY: usize = 8_192;
/// The longest a delivery waits for its commit, from its hand-over, and the longest one batch
/// waits for the store. GitHub gives up on a delivery after 10 s and counts it failed, whatever
/// previewd answers later; a store that is away longer (a database restarting, a failover) is
/// answered 503 within that, so GitHub records a refusal it redelivers rather than a timeout.
/// (The pool's own acquire timeout, 10 s, is as long as GitHub's.) A delivery committed just as
/// its wait ended is answered 503 too; its redelivery is then recognised by its delivery id and
/// answered as a duplicate.
const STORE_WAIT: Duration = Duration::from_secs(7);

/// Why a delivery could not be recorded. The store's message is kept for the log; GitHub is
/// told only that the delivery was not stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IntakeError {
    #[error("the delivery could not be stored: {0}")]
    Store(String),
    #[error("previewd is shutting down")]
    ShuttingDown,
}

struct Pending {
    delivery: NewDelivery,
    reply: oneshot::Sender<Result<Recorded, IntakeError>>,
}

/// Handle used by request handlers; cheap to clone.
#[derive(Clone)]
pub struct Intake {
    tx: mpsc::Sender<Pending>,
}

impl Intake {
    /// Starts the writer task. It ends once every `Intake` handle is dropped and the deliveries
    /// already handed over are recorded. `jobs_queued` is notified after a commit that queued
    /// jobs, so idle workers start at once instead of at their next poll. A body received
    /// again within `replay_window` is not recorded twice (`github.redelivery_window_hours`:
    /// GitHub redelivers within it, so a legitimate copy cannot come later).
    pub fn start(store: Store, jobs_queued: Arc<Notify>, replay_window: Duration) -> (Intake, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let writer = tokio::spawn(write_batches(store, rx, jobs_queued, replay_window));
        (Intake { tx }, writer)
    }

    /// Records a delivery (and its job) durably.
    /// Refused within [`STORE_WAIT`] of the call when the store has not committed it by then
    /// (it may still be stored: its redelivery is then answered as a duplicate).
    pub async fn record(&self, delivery: NewDelivery) -> Result<Recorded, IntakeError> {
        let deadline = tokio::time::Instant::now() + STORE_WAIT;
        let late = || IntakeError::Store(format!("the store did not answer within {} s", STORE_WAIT.as_secs()));
        let (reply, answer) = oneshot::channel();
        tokio::time::timeout_at(deadline, self.tx.send(Pending { delivery, reply }))
            .await
            .map_err(|_| late())?
            .map_err(|_| IntakeError::ShuttingDown)?;
        tokio::time::timeout_at(deadline, answer).await.map_err(|_| late())?.map_err(|_| IntakeError::ShuttingDown)?
    }
}

async fn write_batches(
    store: Store,
    mut rx: mpsc::Receiver<Pending>,
    jobs_queued: Arc<Notify>,
    replay_window: Duration,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (deliveries, replies): (Vec<NewDelivery>, Vec<_>) = batch.drain(..).map(|p| (p.delivery, p.reply)).unzip();
        let window_start = now_ms().saturating_sub(millis(replay_window));
        let recorded = match tokio::time::timeout(STORE_WAIT, store.record_deliveries(&deliveries, window_start)).await
        {
            Ok(recorded) => recorded.map_err(|error| error.to_string()),
            Err(_) => Err(format!("the store did not answer within {} s", STORE_WAIT.as_secs())),
        };
        match recorded {
            Ok(answers) => {
                let queued =
                    deliveries.iter().zip(&answers).any(|(d, a)| d.job.is_some() && matches!(a, Recorded::New { .. }));
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // The handler may have gone (client hung up); the delivery is stored anyway.
                    let _ = reply.send(Ok(answer));
                }
                if queued {
                    jobs_queued.notify_waiters();
                }
            }
            Err(error) => {
                tracing::error!(error = %error, deliveries = replies.len(), "could not store deliveries; they were refused with 503");
                let error = IntakeError::Store(error);
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}
