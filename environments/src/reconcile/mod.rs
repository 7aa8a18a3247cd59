//! The reconciler: makes the cluster match one environment's desired state, level-triggered.
//!
//! It reads the environment from the store, decides from its state what the cluster should
//! hold, and converges: it is safe to run again at any time (after a crash, on a resync, for a
//! repeated event) and always works from the newest head SHA in the store, so rapid pushes
//! coalesce and an older SHA never overwrites a newer one. One reconcile per environment runs at
//! a time across replicas, guarded by a lease in the store.

mod rendering;
mod retry;
mod seed;

pub use rendering::{Placement, Unrenderable, render_environment};

use crate::cluster::{Cluster, ClusterError, Rollout, RolloutFailure, Teardown};
use crate::dns::{Dns, DnsError};
use crate::forge::{Forge, ForgeError};
use crate::model::{EnvironmentState, PullRequest, short_sha};
use crate::naming;
use crate::policy::Policy;
use crate::render::{Ownership, Renderer};
use crate::repo_config::{RepoConfig, RepoFile};
use crate::spec::{self, EnvironmentSpec, LimitDecision};
use crate::store::{Lease, ReconcileRecord, Store, StoreError};
use crate::time::now_ms;
use std::sync::Arc;
use std::time::Duration;

/// A reconcile that could not finish; the caller retries it later.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("could not read the repository's configuration: {0}")]
    ConfigSource(ForgeError),
    #[error("could not read the checks of the head commit: {0}")]
    Checks(ForgeError),
    #[error("could not read the seed's SQL files: {0}")]
    SeedSource(ForgeError),
    #[error(transparent)]
    Dns(#[from] DnsError),
    #[error("another reconcile of this environment is running")]
    Busy,
    #[error("the environment changed under {0} reconcile passes in a row; trying again later")]
    Unsettled(u32),
}

impl ReconcileError {
    /// How long to wait before the next attempt, when the API server or the code host said (a
    /// 429's `Retry-After`, a rate limit's reset); otherwise the job queue's backoff applies.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ReconcileError::Cluster(error) => error.retry_after(),
            ReconcileError::ConfigSource(error) | ReconcileError::Checks(error) | ReconcileError::SeedSource(error) => {
                error.retry_after
            }
            _ => None,
        }
    }
}

/// What a reconcile ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The environment is in this state; nothing more to do until something changes.
    Settled(EnvironmentState),
    /// Run again after this long (waiting for checks or DNS, say).
    RequeueAfter(Duration),
    /// The workloads in `namespace` are rolling out: run again when they change (the rollout
    /// watch), and at `deadline` (milliseconds since the epoch) at the latest, when a rollout
    /// not complete by then fails.
    RollingOut { namespace: String, deadline: i64 },
}

/// Tunables of the reconciler.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub rollout_timeout: Duration,
    pub teardown_timeout: Duration,
    /// How long a reconcile holds an environment without renewing it (it renews every third of
    /// this): after a crash, another replica takes over this long later at most.
    pub lock_lease: Duration,
    /// This installation's name, on every object's labels.
    pub instance: String,
    /// Attempts of the reconcile jobs the engine queues itself (an admission waking a waiting
    /// environment): the service's `queue.max_attempts`.
    pub job_attempts: i64,
    /// Retries of a rollout that failed for a cause that can pass ([`RolloutFailure::can_pass`]),
    /// before the environment stays `Failed` until a push or a command. 0: none.
    pub failed_retries: u32,
    /// The wait before the first retry; it doubles with each one, up to `retry_max_delay`.
    pub retry_base: Duration,
    pub retry_max_delay: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            rollout_timeout: Duration::from_secs(300),
            teardown_timeout: Duration::from_secs(120),
            lock_lease: Duration::from_secs(15),
            instance: "previewd".to_owned(),
            job_attempts: 8,
            failed_retries: 5,
            retry_base: Duration::from_secs(30),
            retry_max_delay: Duration::from_secs(30 * 60),
        }
    }
}

/// Everything a reconcile needs.
pub struct Engine {
    pub store: Store,
    pub cluster: Cluster,
    pub renderer: Renderer,
    pub policy: Policy,
    pub forge: Arc<dyn Forge>,
    /// Publishes, verifies and releases the environments' hostnames (policy `dns`).
    pub dns: Dns,
    pub settings: EngineSettings,
    /// Identifies this process in environment leases.
    pub owner: String,
}

/// Passes one reconcile makes before giving up on an environment that keeps changing.
const MAX_PASSES: u32 = 20;

enum Step {
    Done(Outcome),
    /// The head SHA moved while reconciling: go again with the new one.
    Again,
}

impl Engine {
    /// Reconciles environment `id`.
    pub async fn reconcile(&self, id: i64) -> Result<Outcome, ReconcileError> {
        // Short and renewed, so a process killed mid-reconcile holds the environment briefly.
        let leased = self.store.while_leased(
            Lease::Reconcile,
            id,
            &self.owner,
            self.settings.lock_lease,
            self.reconcile_locked(id),
        );
        leased.await?.unwrap_or(Err(ReconcileError::Busy))
    }

    async fn reconcile_locked(&self, id: i64) -> Result<Outcome, ReconcileError> {
        for _ in 0..MAX_PASSES {
            let Some(env) = self.store.reconcile_record(id).await? else {
                return Ok(Outcome::Settled(EnvironmentState::Deleted));
            };
            let step = match env.state()? {
                EnvironmentState::Pending | EnvironmentState::Provisioning | EnvironmentState::Sleeping => {
                    self.provision(&env).await?
                }
                EnvironmentState::Ready => self.refresh(&env).await?,
                EnvironmentState::Deleting => self.tear_down(&env).await?,
                EnvironmentState::Failed => self.retry_when_due(&env).await?,
                state @ (EnvironmentState::Deleted | EnvironmentState::Rejected) => Step::Done(Outcome::Settled(state)),
            };
            match step {
                Step::Done(outcome) => return Ok(outcome),
                Step::Again => continue,
            }
        }
        Err(ReconcileError::Unsettled(MAX_PASSES))
    }

    /// Moves to `to` unless a newer push arrived; `Again` in that case.
    async fn settle(
        &self,
        env: &ReconcileRecord,
        to: EnvironmentState,
        reason: Option<&str>,
        spec: Option<&EnvironmentSpec>,
        expires_at: Option<i64>,
    ) -> Result<Step, ReconcileError> {
        let name = spec.map(|s| s.name.as_str());
        // A sleeping environment keeps its URL: a visit wakes it.
        let url =
            spec.filter(|_| matches!(to, EnvironmentState::Ready | EnvironmentState::Sleeping)).map(|s| s.url.as_str());
        let moved = self.store.transition(env.id, &env.head_sha, to, reason, name, url, expires_at).await?;
        if !moved {
            return Ok(Step::Again);
        }
        if env.state != to.as_str() || env.reason.as_deref() != reason {
            tracing::info!(environment = env.id, state = %to, reason, "environment state changed");
        }
        Ok(Step::Done(Outcome::Settled(to)))
    }

    /// Records why the environment is waiting in `state`, unless that is already what it says.
    async fn explain(
        &self,
        env: &ReconcileRecord,
        state: EnvironmentState,
        reason: &str,
        name: Option<&str>,
        url: Option<&str>,
    ) -> Result<(), ReconcileError> {
        if env.reason.as_deref() != Some(reason) {
            self.store.transition(env.id, &env.head_sha, state, Some(reason), name, url, None).await?;
        }
        Ok(())
    }

    async fn provision(&self, env: &ReconcileRecord) -> Result<Step, ReconcileError> {
        let pr = env.pull_request();
        let policy = self.policy.for_repository(&env.repo_owner, &env.repo_name);

        if env.state()? == EnvironmentState::Pending {
            match self.admit(Some(env.id)).await? {
                Some(LimitDecision::Allowed) => {}
                // No longer Pending: closed or destroyed meanwhile; read it again.
                None => return Ok(Step::Again),
                Some(LimitDecision::Rejected { reason }) => {
                    return self.settle(env, EnvironmentState::Rejected, Some(&reason), None, None).await;
                }
                Some(LimitDecision::Queued { reason }) => {
                    // Stays Pending, in the queue. The pass that frees a slot admits it and
                    // wakes it; this requeue is the safety net.
                    self.explain(env, EnvironmentState::Pending, &reason, None, None).await?;
                    return Ok(Step::Done(Outcome::RequeueAfter(Duration::from_secs(30))));
                }
            }
        }

        if !policy.required_checks.is_empty() && env.state()? == EnvironmentState::Pending {
            let short = short_sha(&env.head_sha);
            let checks = match self.forge.checks(&pr.repo, &pr.head_sha, &policy.required_checks).await {
                Ok(checks) => checks,
                Err(error) if error.permanent => {
                    let reason = format!("could not read the checks of {short}: {error}");
                    return self.settle(env, EnvironmentState::Failed, Some(&reason), None, None).await;
                }
                Err(error) => return Err(ReconcileError::Checks(error)),
            };
            if let Some((name, conclusion)) = checks.failed.first() {
                let reason = format!("check `{name}` ended `{conclusion}` on {short}");
                return match env.deployed_sha.as_deref() {
                    // The previous commit stays deployed until a push passes its checks.
                    Some(deployed) => {
                        let reason = format!("{reason}; {} stays deployed", short_sha(deployed));
                        self.explain(env, EnvironmentState::Pending, &reason, None, env.url.as_deref()).await?;
                        Ok(Step::Done(Outcome::Settled(EnvironmentState::Pending)))
                    }
                    None => self.settle(env, EnvironmentState::Failed, Some(&reason), None, None).await,
                };
            }
            if !checks.waiting.is_empty() {
                let reason = format!(
                    "waiting for {} on {short}: {}",
                    plural(checks.waiting.len(), "check"),
                    checks.waiting.join(", ")
                );
                self.explain(env, EnvironmentState::Pending, &reason, None, env.url.as_deref()).await?;
                // Check deliveries wake it sooner; this is the safety net for missed ones.
                return Ok(Step::Done(Outcome::RequeueAfter(Duration::from_secs(30))));
            }
        }

        let text = match self.repo_config(env, &pr).await {
            Ok(Some(RepoFile::Text(text))) => text,
            Ok(Some(RepoFile::Refused(error))) => {
                return self.settle(env, EnvironmentState::Failed, Some(&error.to_string()), None, None).await;
            }
            // No retry mends it (the App may not read the repository): say so now.
            Err(error @ ReconcileError::ConfigSource(ForgeError { permanent: true, .. })) => {
                return self.settle(env, EnvironmentState::Failed, Some(&error.to_string()), None, None).await;
            }
            Err(error) => return Err(error),
            Ok(None) => {
                let reason = crate::repo_config::RepoConfigError::Missing.to_string();
                return self.settle(env, EnvironmentState::Failed, Some(&reason), None, None).await;
            }
        };
        let last_activity = env.last_activity_at.unwrap_or_else(now_ms);
        // The keep label lets the environment live as long as the policy allows.
        let keep = pr.labels.iter().any(|l| l.eq_ignore_ascii_case(&policy.keep_label));
        let ttl = if keep {
            policy.ttl.max
        } else {
            RepoConfig::from_yaml(&text).ok().and_then(|c| c.ttl).unwrap_or(policy.ttl.default)
        };
        // An extension (a command, the admin API) may have moved the expiry past the TTL.
        let expires_at = spec::expires_at(last_activity, ttl, policy.ttl.max).max(env.expires_at.unwrap_or(0));
        let (spec, manifests) = match render_environment(
            &self.renderer,
            &self.policy,
            &pr,
            &text,
            &Placement {
                name: env.name.as_deref(),
                expires_at,
                instance: &self.settings.instance,
                dns: Some(&self.dns),
                database_generation: env.database_generation,
                asleep: env.state()? == EnvironmentState::Sleeping,
            },
        ) {
            Ok(rendered) => rendered,
            Err(error) => {
                return self.settle(env, EnvironmentState::Failed, Some(&error.to_string()), None, None).await;
            }
        };
        let name = spec.name.clone();

        // A reopened pull request whose previous namespace is still going away waits for it
        // (the namespace watch wakes it when the namespace is gone).
        if self.cluster.namespace_terminating(&name).await? == Some(true) {
            let reason = "waiting for the previous namespace of this pull request to finish terminating";
            self.explain(env, env.state()?, reason, Some(&name), None).await?;
            return Ok(Step::Done(Outcome::RequeueAfter(Duration::from_secs(2))));
        }

        // Every rollout starts from Pending (an opening, a push, a redeploy): its deadline is
        // set there, before the move, so a crash in between only sets it again.
        let deadline = match (env.state()?, env.rollout_deadline) {
            (EnvironmentState::Pending, _) | (_, None) => {
                let deadline = now_ms().saturating_add(crate::time::millis(self.settings.rollout_timeout));
                self.store.start_rollout(env.id, deadline).await?;
                deadline
            }
            (_, Some(deadline)) => deadline,
        };
        if env.state()? == EnvironmentState::Pending {
            let (cpu_millis, memory_bytes) = spec.requested();
            self.store.set_requests(env.id, cpu_millis, memory_bytes).await?;
            match self.settle(env, EnvironmentState::Provisioning, None, Some(&spec), Some(expires_at)).await? {
                Step::Again => return Ok(Step::Again),
                Step::Done(_) => {}
            }
        }
        let owner = Ownership {
            instance: self.settings.instance.clone(),
            environment: name.clone(),
            repo_id: env.repo_id,
            pr: env.pr_number,
        };
        if let Err(error) = self.apply(&owner, &spec, &policy.secrets.source_namespace, &manifests).await {
            if error.is_transient() {
                // Not failed: the job is retried, and a new environment says why it waits (a
                // ready one stays ready while its drift repair waits).
                if env.state()? != EnvironmentState::Ready {
                    self.explain(env, EnvironmentState::Provisioning, &error.to_string(), Some(&name), None).await?;
                }
                return Err(error.into());
            }
            return self.settle(env, EnvironmentState::Failed, Some(&error.to_string()), Some(&spec), None).await;
        }
        // Asleep: scaled to zero, nothing to wait for; a visit, a push or a command wakes it.
        if env.state()? == EnvironmentState::Sleeping {
            return self.settle(env, EnvironmentState::Sleeping, env.reason.as_deref(), Some(&spec), None).await;
        }
        if let Err(reason) = self.start_jobs(&pr, &owner, &spec, &manifests).await? {
            return self.settle(env, EnvironmentState::Failed, Some(&reason), Some(&spec), None).await;
        }
        // One look, never a wait: the rollout watch or the deadline brings the next reconcile.
        let ready = env.state()? == EnvironmentState::Ready;
        match self.cluster.rollout(&name).await? {
            Rollout::Complete => {}
            // A ready environment at its deployed commit stays ready while a pod is replaced;
            // a new commit or a redeploy goes through Pending and rolls out anew.
            Rollout::Progressing { .. } | Rollout::Failed(_) if ready => {
                return Ok(Step::Done(Outcome::Settled(EnvironmentState::Ready)));
            }
            Rollout::Failed(failed) => {
                return self.fail_rollout(env, &failed.to_string(), failed.failure.can_pass(), &spec).await;
            }
            Rollout::Progressing { workloads, detail } => {
                if now_ms() >= deadline {
                    let failure = RolloutFailure::Timeout { seconds: self.settings.rollout_timeout.as_secs(), detail };
                    return self.fail_rollout(env, &failure.to_string(), failure.can_pass(), &spec).await;
                }
                // Names only, not counts: the reason (and so the pull request comment) does not
                // change with every pod that starts.
                let reason = format!("rolling out: waiting for {}", workloads.join(", "));
                self.explain(env, EnvironmentState::Provisioning, &reason, Some(&name), None).await?;
                return Ok(Step::Done(Outcome::RollingOut { namespace: name, deadline }));
            }
        }
        self.store.set_services(env.id, &spec.service_urls(), spec.database.is_some()).await?;
        let sleep_after = spec.sleep_after.map(crate::time::millis);
        if env.sleep_after_ms != sleep_after {
            self.store.set_sleep_after(env.id, sleep_after).await?;
        }
        // Published once per set of hostnames: a resync of a ready environment sends no DNS
        // update.
        let hosts = public_hosts(&spec);
        let published = hosts.join(" ");
        if env.published_host.as_deref() == Some(published.as_str()) {
            return self.settle(env, EnvironmentState::Ready, None, Some(&spec), Some(expires_at)).await;
        }
        // The URLs are announced only once their names resolve to the ingress.
        match self.publish_all(&hosts).await {
            Ok(took) => {
                let took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
                tracing::info!(environment = env.id, host = published, dns_verify_ms = took_ms, "hostname resolves");
                self.store.set_published_host(env.id, Some(&published)).await?;
                self.settle(env, EnvironmentState::Ready, None, Some(&spec), Some(expires_at)).await
            }
            Err(error) if error.is_transient() => {
                // Stays Provisioning with the DNS reason; the retry comes back here.
                let reason = format!("{}: {error}", error.reason());
                tracing::warn!(environment = env.id, host = spec.host, reason, "DNS not ready; retrying");
                self.explain(env, EnvironmentState::Provisioning, &reason, Some(&name), None).await?;
                Ok(Step::Done(Outcome::RequeueAfter(Duration::from_secs(10))))
            }
            Err(error) => {
                let reason = format!("{}: {error}", error.reason());
                self.settle(env, EnvironmentState::Failed, Some(&reason), Some(&spec), None).await
            }
        }
    }

    /// Publishes and verifies each hostname in turn, stopping at the first that fails; the
    /// time the verifications took in all.
    async fn publish_all(&self, hosts: &[String]) -> Result<Duration, DnsError> {
        let mut took = Duration::ZERO;
        for host in hosts {
            self.dns.publish(host).await?;
            took += self.dns.verify(host).await?;
        }
        Ok(took)
    }

    /// The repository's `.preview.yaml` at the head commit: read from the code host once per
    /// commit and kept with the environment, since a commit's file cannot change. Resyncs of an
    /// unchanged head cost no request.
    async fn repo_config(&self, env: &ReconcileRecord, pr: &PullRequest) -> Result<Option<RepoFile>, ReconcileError> {
        if env.config_sha.as_deref() == Some(env.head_sha.as_str())
            && let Some(text) = &env.config_text
        {
            return Ok(Some(RepoFile::Text(text.clone())));
        }
        let file = self.forge.fetch(&pr.repo, &pr.head_sha).await.map_err(ReconcileError::ConfigSource)?;
        if let Some(RepoFile::Text(text)) = &file {
            self.store.keep_config(env.id, &env.head_sha, text).await?;
        }
        Ok(file)
    }

    async fn apply(
        &self,
        owner: &Ownership,
        spec: &EnvironmentSpec,
        source_namespace: &str,
        manifests: &[crate::render::Manifest],
    ) -> Result<(), ClusterError> {
        self.cluster.apply(owner, manifests).await?;
        let mut copied = Vec::new();
        // The wildcard certificate is copied on every reconcile, so a renewal reaches each
        // environment at its next one (the periodic pass at the latest).
        for name in spec.platform_secrets.iter().chain(&spec.tls_secret) {
            copied.push((name.clone(), self.cluster.read_platform_secret(source_namespace, name).await?));
        }
        self.cluster.sync_secrets(owner, &spec.generated_secrets, &copied).await
    }

    /// A ready environment: apply again, so drift (an object deleted or changed by hand)
    /// is repaired. Unchanged objects are not touched by the server-side apply.
    async fn refresh(&self, env: &ReconcileRecord) -> Result<Step, ReconcileError> {
        let step = self.provision(env).await?;
        Ok(step)
    }

    /// Runs an admission pass (see [`Store::admit`]) with the policy's limits: for `candidate`,
    /// and for every environment waiting for a slot, in arrival order.
    async fn admit(&self, candidate: Option<i64>) -> Result<Option<LimitDecision>, ReconcileError> {
        let limits =
            |owner: &str, repo: &str, counts| spec::check_limits(&self.policy.for_repository(owner, repo), counts);
        let pass = self.store.admit(candidate, &limits, self.settings.job_attempts).await?;
        if !pass.woken.is_empty() {
            tracing::info!(woken = ?pass.woken, "a slot freed: queued environments admitted in arrival order");
        }
        Ok(pass.decision)
    }

    async fn tear_down(&self, env: &ReconcileRecord) -> Result<Step, ReconcileError> {
        // Its slot was given back when it became Deleting: the oldest waiters that fit get it
        // now, not at the next periodic pass.
        self.admit(None).await?;
        let Some(name) = env.name.clone() else {
            // Never provisioned: nothing in the cluster.
            return self.settle(env, EnvironmentState::Deleted, env.reason.as_deref(), None, None).await;
        };
        match self.cluster.delete_namespace(&name).await? {
            Teardown::Gone => {
                let policy = self.policy.for_repository(&env.repo_owner, &env.repo_name);
                let own = naming::hostname(&name, &policy.base_domain);
                let published = env.published_host.clone().unwrap_or_default();
                let mut hosts: Vec<&str> = published.split(' ').filter(|h| !h.is_empty()).collect();
                if !hosts.contains(&own.as_str()) {
                    hosts.push(&own);
                }
                for host in hosts {
                    if let Err(error) = self.dns.release(host).await {
                        let reason = format!("{}: {error}", error.reason());
                        tracing::warn!(environment = env.id, host, reason, "DNS record not released yet; retrying");
                        if error.is_transient() {
                            return Ok(Step::Done(Outcome::RequeueAfter(Duration::from_secs(10))));
                        }
                        return Err(error.into());
                    }
                }
                self.store.set_published_host(env.id, None).await?;
                self.settle(env, EnvironmentState::Deleted, env.reason.as_deref(), None, None).await
            }
            Teardown::Terminating { since, .. }
                if since.map_or(i64::MAX, |since| {
                    since.saturating_add(crate::time::millis(self.settings.teardown_timeout))
                }) > now_ms() =>
            {
                // The namespace watch wakes the environment when the namespace is gone; the
                // requeue is the safety net for a watch that missed it.
                Ok(Step::Done(Outcome::RequeueAfter(Duration::from_secs(10))))
            }
            Teardown::Terminating { conditions, .. } => {
                let reason = format!("namespace {name} is stuck terminating: {conditions}");
                tracing::warn!(environment = env.id, reason, "teardown incomplete; will retry");
                self.store
                    .transition(env.id, &env.head_sha, EnvironmentState::Deleting, Some(&reason), None, None, None)
                    .await?;
                Ok(Step::Done(Outcome::RequeueAfter(Duration::from_secs(30))))
            }
        }
    }
}

/// The hostnames of the environment's public services (its own first), as published.
fn public_hosts(spec: &EnvironmentSpec) -> Vec<String> {
    let mut hosts: Vec<String> = spec.services.iter().filter_map(|s| s.host.clone()).collect();
    if hosts.is_empty() {
        hosts.push(spec.host.clone());
    }
    hosts
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(crate::time::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(crate::time::rfc3339(1_796_126_400_000), "2026-12-01T12:00:00Z");
        assert_eq!(crate::time::rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
