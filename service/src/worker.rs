//! Job queue workers: claim a job, run it under a renewed lease, then complete it, retry it
//! with exponential backoff, or move it to the dead-letter state.

use crate::metrics::{JobLabels, KindLabels, Metrics};
use previewd_environments::store::{ClaimedJob, JobFate, Store};
use previewd_environments::time::{millis, now_ms};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Why a job attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt (a service was unreachable, say).
    #[error("{0}")]
    Transient(String),
    /// Worth another attempt, but not before this long (a rate limit's reset time): the usual
    /// backoff applies if it is longer.
    #[error("{0}")]
    RetryAfter(String, Duration),
    /// Retrying cannot help (the payload cannot be understood); the job goes straight to the
    /// dead-letter state.
    #[error("{0}")]
    Permanent(String),
}

/// Runs one job. Implementations must be idempotent: a job may run again after a crash.
pub trait JobHandler: Send + Sync + 'static {
    fn handle<'a>(&'a self, job: &'a ClaimedJob) -> Pin<Box<dyn Future<Output = Result<(), JobError>> + Send + 'a>>;
}

/// How workers behave; from the `queue` settings.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub workers: u32,
    pub lease: Duration,
    pub poll_interval: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

/// Stop signals: `stop` ends claiming; `abandon` (after the grace period) interrupts jobs that
/// are still running and hands them back to the queue.
#[derive(Clone, Default)]
pub struct Shutdown {
    pub stop: CancellationToken,
    pub abandon: CancellationToken,
}

/// Starts `settings.workers` workers on `tracker`.
#[allow(clippy::too_many_arguments)]
pub fn spawn_workers(
    tracker: &TaskTracker,
    process: String,
    store: Store,
    handler: Arc<dyn JobHandler>,
    settings: WorkerSettings,
    jobs_queued: Arc<Notify>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) {
    for n in 0..settings.workers {
        let worker = Worker {
            owner: format!("{process}/{n}"),
            store: store.clone(),
            handler: handler.clone(),
            settings: settings.clone(),
            jobs_queued: jobs_queued.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
        };
        tracker.spawn(worker.run());
    }
}

struct Worker {
    owner: String,
    store: Store,
    handler: Arc<dyn JobHandler>,
    settings: WorkerSettings,
    jobs_queued: Arc<Notify>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
}

impl Worker {
    async fn run(self) {
        while !self.shutdown.stop.is_cancelled() {
            // Registered before claiming, so a notification during the claim is not missed.
            let notified = self.jobs_queued.notified();
            match self.store.claim_jobs(&self.owner, self.settings.lease, 1).await {
                Ok(jobs) if !jobs.is_empty() => {
                    for job in jobs {
                        self.run_job(job).await;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(error = %error, "could not claim jobs; retrying at the next poll"),
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(self.settings.poll_interval) => {}
                () = self.shutdown.stop.cancelled() => {}
            }
        }
    }

    async fn run_job(&self, job: ClaimedJob) {
        let span = tracing::info_span!("job", job.id = job.id, job.kind = %job.kind, job.attempt = job.attempts);
        async {
            let started = Instant::now();
            let outcome = tokio::select! {
                result = self.handler.handle(&job) => Some(result),
                () = self.keep_lease(job.id) => None,
                () = self.shutdown.abandon.cancelled() => None,
            };
            self.metrics.job_seconds.get_or_create(&KindLabels { kind: job.kind.name() }).observe(started.elapsed().as_secs_f64());
            let label = match outcome {
                None if self.shutdown.abandon.is_cancelled() => {
                    tracing::warn!("shutdown grace period over; job handed back to the queue");
                    if let Err(error) = self.store.release_job(job.id, &self.owner).await {
                        tracing::error!(error = %error, "could not hand the job back; it is retried when its lease expires");
                    }
                    "interrupted"
                }
                None => {
                    tracing::warn!("lease lost while the job ran; another worker may run it again");
                    "lease_lost"
                }
                Some(Ok(())) => match self.store.complete_job(job.id, &self.owner).await {
                    Ok(true) => "ok",
                    Ok(false) => {
                        tracing::warn!("job finished after its lease was lost; it may run again");
                        "lease_lost"
                    }
                    Err(error) => {
                        tracing::error!(error = %error, "could not mark the job done; it is retried when its lease expires");
                        "lease_lost"
                    }
                },
                Some(Err(error)) => self.fail(&job, &error).await,
            };
            self.metrics.job_attempts.get_or_create(&JobLabels { kind: job.kind.name(), outcome: label }).inc();
        }
        .instrument(span)
        .await
    }

    async fn fail(&self, job: &ClaimedJob, error: &JobError) -> &'static str {
        let retry_at = match error {
            JobError::Transient(_) => Some(now_ms().saturating_add(millis(self.backoff(job.attempts)))),
            JobError::RetryAfter(_, after) => {
                Some(now_ms().saturating_add(millis(self.backoff(job.attempts).max(*after))))
            }
            JobError::Permanent(_) => None,
        };
        match self.store.fail_job(job, &self.owner, &error.to_string(), retry_at).await {
            Ok(JobFate::Retry { at }) => {
                tracing::warn!(error = %error, retry_in_ms = at - now_ms(), "job attempt failed; retrying later");
                "retry"
            }
            Ok(JobFate::Dead) => {
                tracing::error!(error = %error, attempts = job.attempts, "job failed for good; moved to the dead-letter state");
                "dead"
            }
            Ok(JobFate::LeaseLost) => "lease_lost",
            Err(store_error) => {
                tracing::error!(error = %error, store_error = %store_error, "job failed and the failure could not be recorded; retried when its lease expires");
                "lease_lost"
            }
        }
    }

    /// Exponential backoff with jitter: initial × 2^(attempt-1), capped, then up to 25% less so
    /// that jobs failing together do not retry together.
    fn backoff(&self, attempt: i64) -> Duration {
        let exponent = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let delay =
            self.settings.backoff_initial.saturating_mul(2u32.saturating_pow(exponent)).min(self.settings.backoff_max);
        delay.mul_f64(1.0 - rand::random::<f64>() * 0.25)
    }

    /// Renews the lease every third of its length; returns only if the lease is lost.
    async fn keep_lease(&self, job: i64) {
        let every = self.settings.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            match self.store.renew_lease(job, &self.owner, self.settings.lease).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(error) => tracing::warn!(error = %error, "could not renew the job lease; trying again"),
            }
        }
    }
}
