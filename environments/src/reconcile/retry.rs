//! Retrying a failed rollout whose cause can pass (an image CI has not pushed yet, a crash
//! loop, a full quota, a timeout): the environment is `Failed` with a retry scheduled, and
//! starts over from `Pending` when it is due, with a doubling wait, up to
//! `EngineSettings::failed_retries` times. A push or a command starts the count anew (the
//! store resets it with the event).

use super::{Engine, Outcome, ReconcileError, Step};
use crate::model::EnvironmentState;
use crate::spec::EnvironmentSpec;
use crate::store::ReconcileRecord;
use crate::time::now_ms;
use std::time::Duration;

impl Engine {
    /// Fails a rollout for `failure`. One whose cause can pass is tried again later, with a
    /// doubling wait, up to `failed_retries` times; the reason says when, or that previewd gave
    /// up, so the author knows whether to wait or act.
    pub(super) async fn fail_rollout(
        &self,
        env: &ReconcileRecord,
        failure: &str,
        can_pass: bool,
        spec: &EnvironmentSpec,
    ) -> Result<Step, ReconcileError> {
        let limit = self.settings.failed_retries;
        let done = u32::try_from(env.retries).unwrap_or(u32::MAX);
        let retry = can_pass && done < limit;
        let delay = self.retry_delay(done);
        let reason = if retry {
            let wait = humantime::format_duration(delay);
            format!("{failure}; trying again in {wait} (retry {} of {limit})", done + 1)
        } else if can_pass && limit > 0 {
            let retries = if limit == 1 { "1 retry".to_owned() } else { format!("{limit} retries") };
            format!("{failure}; gave up after {retries}: push a fix or comment `/preview redeploy`")
        } else {
            failure.to_owned()
        };
        let step = self.settle(env, EnvironmentState::Failed, Some(&reason), Some(spec), None).await?;
        if retry && matches!(step, Step::Done(_)) {
            let at = now_ms().saturating_add(crate::time::millis(delay));
            if self.store.schedule_retry(env.id, &env.head_sha, at).await? {
                tracing::info!(
                    environment = env.id,
                    retry = done + 1,
                    delay_ms = at - now_ms(),
                    "rollout failed; retry scheduled"
                );
                return Ok(Step::Done(Outcome::RequeueAfter(delay)));
            }
        }
        Ok(step)
    }

    /// The wait before retry `done + 1`: `retry_base` doubled `done` times, at most
    /// `retry_max_delay`.
    fn retry_delay(&self, done: u32) -> Duration {
        let factor = 2u32.saturating_pow(done.min(31));
        self.settings.retry_base.saturating_mul(factor).min(self.settings.retry_max_delay)
    }

    /// A Failed environment: settled, unless a retry is scheduled. When that is due it starts
    /// over from Pending (a new rollout with its own deadline, at the same commit).
    pub(super) async fn retry_when_due(&self, env: &ReconcileRecord) -> Result<Step, ReconcileError> {
        let Some(at) = env.retry_at else {
            return Ok(Step::Done(Outcome::Settled(EnvironmentState::Failed)));
        };
        let now = now_ms();
        if at > now {
            let left = Duration::from_millis(u64::try_from(at - now).unwrap_or(0));
            return Ok(Step::Done(Outcome::RequeueAfter(left)));
        }
        let reason = format!("retry {} of {} of the rollout that failed", env.retries, self.settings.failed_retries);
        // Not moved: a push or a command changed it meanwhile; read it again either way.
        self.store
            .transition(env.id, &env.head_sha, EnvironmentState::Pending, Some(&reason), None, None, None)
            .await?;
        Ok(Step::Again)
    }
}
