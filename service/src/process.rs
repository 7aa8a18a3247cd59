//! What queued jobs do: the handler behind every job kind.
//!
//! A `github_event` job runs pull request events through the engine's planner, which changes
//! the environment's desired state in the store, and then queues a reconcile of that
//! environment. Other events are accepted and logged; their handling (commands, installations,
//! waiting for CI) builds on this. A `reconcile_environment` job runs the reconciler.

use crate::github::events::{Event, PrAction};
use crate::lifecycle::{RECONCILE, reconcile_job, run_reconcile};
use crate::worker::{JobError, JobHandler};
use previewd_environments::model::CloseReason;
use previewd_environments::planner::{Plan, PrEvent, plan};
use previewd_environments::reconcile::Engine;
use previewd_environments::store::{ClaimedJob, Store, StoreError};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Job kind of a delivery previewd acts on; the payload is a serialized [`Event`].
pub const GITHUB_EVENT: &str = "github_event";

pub struct JobRunner {
    store: Store,
    /// `None` when no policy is configured: desired states are recorded, nothing is reconciled.
    engine: Option<Arc<Engine>>,
    max_attempts: i64,
}

fn transient(error: StoreError) -> JobError {
    JobError::Transient(error.to_string())
}

impl JobRunner {
    pub fn new(store: Store, engine: Option<Arc<Engine>>, max_attempts: i64) -> Self {
        JobRunner { store, engine, max_attempts }
    }

    async fn process(&self, event: Event) -> Result<(), JobError> {
        match event {
            Event::PullRequest { action, pull_request, merged, .. } => {
                let event = match action {
                    PrAction::Opened | PrAction::Reopened | PrAction::ReadyForReview => PrEvent::Opened(pull_request),
                    PrAction::Synchronize => PrEvent::Pushed(pull_request),
                    PrAction::Closed => {
                        PrEvent::Closed(pull_request, if merged { CloseReason::Merged } else { CloseReason::Closed })
                    }
                    PrAction::Labeled | PrAction::Unlabeled | PrAction::ConvertedToDraft | PrAction::Edited => {
                        tracing::info!(?action, "pull request change recorded; no environment change for it yet");
                        return Ok(());
                    }
                };
                self.apply(&event).await
            }
            other => {
                tracing::info!(event = ?other, "event recorded; no environment change for it yet");
                Ok(())
            }
        }
    }

    async fn apply(&self, event: &PrEvent) -> Result<(), JobError> {
        let pr = event.pull_request();
        let current = self.store.environment(pr.repo.id, pr.number).await.map_err(transient)?;
        let current_state =
            current.as_ref().map(|env| env.state()).transpose().map_err(|e| JobError::Permanent(e.to_string()))?;
        match plan(current_state, event) {
            Plan::Record { state, reason } => {
                let record = self.store.record_environment(pr, state, reason.as_deref()).await.map_err(transient)?;
                if matches!(event, PrEvent::Opened(_) | PrEvent::Pushed(_)) {
                    // Activity renews the TTL; the reconcile computes the new expiry.
                    self.store.touch_environment(record.id, None).await.map_err(transient)?;
                }
                tracing::info!(
                    repo = %pr.repo.full_name(),
                    pr = %pr.number,
                    head_sha = %pr.head_sha,
                    from = ?current_state,
                    to = %state,
                    environment = record.id,
                    "environment desired state changed"
                );
                if self.engine.is_some() {
                    self.store
                        .enqueue_unique_job(&reconcile_job(record.id, self.max_attempts, None))
                        .await
                        .map_err(transient)?;
                }
            }
            Plan::Nothing { why } => {
                tracing::info!(repo = %pr.repo.full_name(), pr = %pr.number, why, "environment unchanged");
            }
        }
        Ok(())
    }
}

impl JobHandler for JobRunner {
    fn handle<'a>(&'a self, job: &'a ClaimedJob) -> Pin<Box<dyn Future<Output = Result<(), JobError>> + Send + 'a>> {
        Box::pin(async move {
            match job.kind.as_str() {
                GITHUB_EVENT => {
                    let event: Event = serde_json::from_str(&job.payload)
                        .map_err(|e| JobError::Permanent(format!("job payload is not a previewd event: {e}")))?;
                    self.process(event).await
                }
                RECONCILE => match &self.engine {
                    Some(engine) => run_reconcile(engine, &job.payload, self.max_attempts).await,
                    None => {
                        Err(JobError::Permanent("no policy_file configured: environments are not reconciled".into()))
                    }
                },
                other => Err(JobError::Permanent(format!("no handler for job kind `{other}`"))),
            }
        })
    }
}
