//! The lifecycle engine inside the service: reconcile jobs, and the periodic pass that
//! re-reconciles live environments (drift), tears down expired ones (TTL), warns before expiry,
//! and removes namespaces previewd owns that no environment claims (orphans).

use crate::config::Config;
use crate::github::forge::GitHubForge;
use crate::github::report::GitHubSide;
use crate::worker::JobError;
use anyhow::Context as _;
use previewd_environments::cluster::Cluster;
use previewd_environments::cluster::watch::{RolloutWatches, Wake};
use previewd_environments::forge::{FixedRepoConfig, Forge};
use previewd_environments::model::{Cause, EnvironmentState};
use previewd_environments::planner::{Gate, Plan, PrEvent, plan};
use previewd_environments::policy::Policy;
use previewd_environments::reconcile::{Engine, EngineSettings, Outcome, ReconcileError};
use previewd_environments::render::Renderer;
use previewd_environments::store::{NewJob, Store};
use previewd_environments::time::{Millis, millis, now_ms};
use previewd_environments::yaml::{self, Origin};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// Reads and checks the policy file, or `None` when none is configured (previewd then records
/// deliveries and desired states but creates no environments).
pub fn load_policy(config: &Config) -> anyhow::Result<Option<Policy>> {
    let Some(policy_file) = &config.policy_file else {
        tracing::warn!("no policy_file configured: deliveries are recorded, but no environments are created");
        return Ok(None);
    };
    let text = yaml::read_file(policy_file, Origin::Platform).context("the policy file (setting policy_file)")?;
    Ok(Some(Policy::from_yaml(&text, &policy_file.display().to_string())?))
}

/// Builds the engine from the settings and the policy. `.preview.yaml` and check results come
/// from GitHub when `github` is given, else from the `repo_config_file` setting.
pub async fn engine(
    config: &Config,
    store: Store,
    owner: String,
    policy: Option<Policy>,
    github: Option<Arc<GitHubSide>>,
) -> anyhow::Result<Option<Arc<Engine>>> {
    let Some(policy) = policy else {
        return Ok(None);
    };
    let name = config.policy_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    let renderer = Renderer::load(&config.templates_dir).with_context(|| {
        format!("loading templates from {} (setting templates_dir)", config.templates_dir.display())
    })?;
    let sets: Vec<&str> = renderer.sets().collect();
    if let Some(missing) = policy.template_names().into_iter().find(|t| !sets.contains(t)) {
        anyhow::bail!(
            "policy file {name}: template set `{missing}` does not exist in {} (available: {})",
            config.templates_dir.display(),
            sets.join(", ")
        );
    }
    let forge: Arc<dyn Forge> = match (github, &config.repo_config_file) {
        (Some(side), _) => Arc::new(GitHubForge(side)),
        (None, Some(repo_config_file)) => {
            let text = yaml::read_file(repo_config_file, Origin::Repository).context("setting repo_config_file")?;
            Arc::new(FixedRepoConfig::new(text))
        }
        (None, None) => anyhow::bail!(
            "with policy_file, previewd needs GitHub access (github.app_id or github.token_file) to read each \
             repository's configuration, or repo_config_file to use one file for every pull request"
        ),
    };
    let dns = previewd_environments::dns::Dns::from_policy_and_env(&policy.dns)
        .with_context(|| format!("policy file {name}: dns"))?;
    let client = previewd_environments::kube_client::connect(config.kubeconfig.as_deref()).await?;
    Ok(Some(Arc::new(Engine {
        store,
        cluster: Cluster::new(client, config.read_cluster_role.clone()),
        renderer,
        policy,
        forge,
        dns,
        settings: EngineSettings {
            rollout_timeout: Duration::from_secs(config.engine.rollout_timeout_seconds),
            teardown_timeout: Duration::from_secs(config.engine.teardown_timeout_seconds),
            instance: config.instance.clone(),
            job_attempts: i64::from(config.queue.max_attempts),
            failed_retries: config.engine.failed_retries,
            retry_base: Duration::from_secs(config.engine.retry_base_seconds),
            retry_max_delay: Duration::from_secs(config.engine.retry_max_delay_seconds),
            ..EngineSettings::default()
        },
        owner,
    })))
}

/// How often a rollout that cannot be watched (over `engine.max_rollout_watches`) is looked at.
const UNWATCHED_ROLLOUT_POLL: Duration = Duration::from_secs(2);
/// When a reconcile finds another one running on its environment: that one is short.
const BUSY_RETRY: Duration = Duration::from_millis(500);

/// Runs one reconcile job and schedules what it asked for: nothing (settled), a later run, or
/// a watch on its rollout with a run at the rollout's deadline.
pub async fn run_reconcile(
    engine: &Engine,
    watches: Option<&RolloutWatches>,
    id: i64,
    max_attempts: i64,
) -> Result<(), JobError> {
    let again_at = |at: i64| async move {
        engine
            .store
            .enqueue(&NewJob::reconcile(id, max_attempts).not_before(at))
            .await
            .map(drop)
            .map_err(|e| JobError::Transient(e.to_string()))
    };
    match engine.reconcile(id).await {
        Ok(Outcome::Settled(state)) => {
            if let Some(watches) = watches {
                watches.forget(id);
            }
            tracing::info!(environment = id, %state, "reconciled");
            Ok(())
        }
        Ok(Outcome::RequeueAfter(after)) => again_at(now_ms().saturating_add(millis(after))).await,
        Ok(Outcome::RollingOut { namespace, deadline }) => {
            let now = now_ms();
            let left = Duration::from_millis(u64::try_from(deadline.saturating_sub(now)).unwrap_or(0));
            let watched = watches.is_some_and(|w| w.watch(id, &namespace, tokio::time::Instant::now() + left));
            let at = if watched { deadline } else { deadline.min(now.saturating_add(millis(UNWATCHED_ROLLOUT_POLL))) };
            again_at(at).await
        }
        // Another reconcile holds the environment (reconciles are short), or a crashed one's
        // lease has not run out: run again soon, without spending an attempt.
        Err(ReconcileError::Busy) => again_at(now_ms().saturating_add(millis(BUSY_RETRY))).await,
        // The API server's Retry-After (a 429) is honoured; the queue's backoff applies if longer.
        Err(error) => Err(match error.retry_after() {
            Some(after) => JobError::RetryAfter(error.to_string(), after),
            None => JobError::Transient(error.to_string()),
        }),
    }
}

/// Turns wake-ups from the cluster's watches into reconcile jobs, until `stop`.
pub async fn run_wakeups(
    engine: Arc<Engine>,
    mut wakes: mpsc::Receiver<Wake>,
    jobs_queued: Arc<Notify>,
    max_attempts: i64,
    stop: CancellationToken,
) {
    loop {
        let wake = tokio::select! {
            wake = wakes.recv() => wake,
            () = stop.cancelled() => return,
        };
        let id = match wake {
            None => return,
            Some(Wake::Environment(id)) => Some(id),
            Some(Wake::NamespaceGone(name)) => match engine.store.environment_named(&name).await {
                Ok(id) => id,
                Err(error) => {
                    tracing::warn!(namespace = name, error = %error, "could not look up the environment of a namespace that is gone; the periodic pass will");
                    None
                }
            },
        };
        let Some(id) = id else { continue };
        match engine.store.enqueue(&NewJob::reconcile(id, max_attempts)).await {
            Ok(Some(_)) => jobs_queued.notify_waiters(),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(environment = id, error = %error, "could not queue the reconcile a watch asked for; the deadline or the periodic pass will run it");
            }
        }
    }
}

/// Starts the watches that wake environments: the namespace watch, and the rollout watches
/// (returned, for the job runner to open and close).
pub fn start_watches(
    engine: &Arc<Engine>,
    config: &Config,
    jobs_queued: Arc<Notify>,
    max_attempts: i64,
    tracker: &tokio_util::task::TaskTracker,
    stop: CancellationToken,
) -> Arc<RolloutWatches> {
    // Wake-ups are small and consumed at once; a full channel holds the watch streams back.
    let (wake, wakes) = mpsc::channel(1024);
    let client = engine.cluster.client();
    let watches = RolloutWatches::new(client.clone(), wake.clone(), config.engine.max_rollout_watches as usize);
    let namespaces = previewd_environments::cluster::watch::watch_namespaces(client, config.instance.clone(), wake);
    let stop_namespaces = stop.clone();
    tracker.spawn(async move {
        tokio::select! {
            () = namespaces => {}
            () = stop_namespaces.cancelled() => {}
        }
    });
    tracker.spawn(run_wakeups(engine.clone(), wakes, jobs_queued, max_attempts, stop));
    watches
}

/// How often the periodic pass runs, and how often it re-applies each ready environment.
#[derive(Debug, Clone, Copy)]
pub struct Periodic {
    pub interval: Duration,
    /// A ready environment is re-applied (drift repaired) once per this period, the fleet
    /// spread evenly over the passes in it.
    pub drift_repair: Duration,
    pub max_attempts: i64,
}

impl Periodic {
    /// Whether the pass starting at `now` re-applies ready environment `id`.
    ///
    /// The ready ones are by far the most (1,000 live are 1,000 re-applies a minute at a 60 s
    /// pass, more than 4 workers do, so wake-ups of rollouts and new pull requests waited
    /// behind them). Each pass takes one slice of them, chosen by the id and the pass's
    /// position in the drift-repair period; the slice depends on the clock, not on this
    /// replica's history, so replicas agree and a restart skips nothing for long.
    pub fn repairs_drift_of(&self, id: i64, now: Millis) -> bool {
        let pass_ms = millis(self.interval).max(1);
        let slices = (millis(self.drift_repair) / pass_ms).max(1);
        id.rem_euclid(slices) == (now / pass_ms).rem_euclid(slices)
    }
}

/// The periodic pass, every `interval`, until `stop`.
pub async fn run_periodic(engine: Arc<Engine>, periodic: Periodic, stop: CancellationToken) {
    loop {
        let began = std::time::Instant::now();
        match pass(&engine, &periodic).await {
            // Its own target, so that a benchmark (or an operator) can log the passes alone.
            Ok(queued) => tracing::info!(
                target: "previewd::periodic",
                duration_ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX),
                queued,
                "periodic pass done"
            ),
            Err(error) => tracing::warn!(error = %error, "periodic pass failed; trying again next interval"),
        }
        tokio::select! {
            () = tokio::time::sleep(periodic.interval) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// One periodic pass; returns how many reconciles it queued.
async fn pass(engine: &Engine, periodic: &Periodic) -> anyhow::Result<usize> {
    use EnvironmentState::*;
    let now = now_ms();
    // TTL: expired environments are torn down, as the planner decides.
    for env in engine.store.environments_in(&[Provisioning, Ready, Sleeping, Failed]).await? {
        if env.expires_at.is_some_and(|at| at <= now) {
            let pr = env.pull_request();
            if let Plan::Record { state, reason } =
                plan(Some(env.state()?), &PrEvent::Expired(pr.clone()), &Gate::Allowed)
            {
                engine.store.record_environment(&pr, state, reason.as_deref(), &Cause::Previewd).await?;
                tracing::info!(environment = env.id, "environment expired; tearing it down");
            }
        }
    }
    // Warnings each repository's `ttl.warn_before` ahead of expiry (0: none).
    let longest = engine.policy.longest_warn_before();
    if !longest.is_zero() {
        for env in engine.store.due_for_warning(now.saturating_add(millis(longest))).await? {
            let warn_before = engine.policy.for_repository(&env.repo_owner, &env.repo_name).ttl.warn_before;
            let due = env.expires_at.is_some_and(|at| at <= now.saturating_add(millis(warn_before)));
            if !warn_before.is_zero() && due {
                tracing::warn!(environment = env.id, expires_at = env.expires_at, "environment expires soon");
                engine.store.mark_warned(env.id).await?;
            }
        }
    }
    // Idle ones sleep (each stays awake as long as its spec said when it became Ready).
    for env in engine.store.idle_environments(now).await? {
        let after = humantime::format_duration(Duration::from_millis(env.sleep_after_ms.unwrap_or(0).unsigned_abs()));
        let reason = format!("asleep: no visit or push for {after}; a visit, a push or `/preview wake` wakes it");
        if engine
            .store
            .transition(env.id, &env.head_sha, Sleeping, Some(&reason), None, env.url.as_deref(), None)
            .await?
        {
            tracing::info!(environment = env.id, after = %after, "environment idle; putting it to sleep");
            engine.store.enqueue(&NewJob::reconcile(env.id, periodic.max_attempts)).await?;
        }
    }
    // Level-triggered: everything in flight is reconciled again (a lost job, a missed watch
    // event, a queue), every ready one once per drift-repair period.
    let max_attempts = periodic.max_attempts;
    let mut queued = 0;
    for env in engine.store.environments_in(&[Pending, Provisioning, Ready, Sleeping, Deleting]).await? {
        if (env.state == Ready.as_str() || env.state == Sleeping.as_str()) && !periodic.repairs_drift_of(env.id, now) {
            continue;
        }
        queued += usize::from(engine.store.enqueue(&NewJob::reconcile(env.id, max_attempts)).await?.is_some());
    }
    // Failed ones only when a retry is due (its own job brings it; this is the safety net).
    for id in engine.store.due_retries(now).await? {
        queued += usize::from(engine.store.enqueue(&NewJob::reconcile(id, max_attempts)).await?.is_some());
    }
    // Orphans: namespaces labelled as previewd's that no environment holds. The namespaces are
    // listed before the environments are read: a reconcile records the name before it creates
    // the namespace, so every namespace listed here that is being created has its holder in the
    // read that follows. The other order deleted namespaces a worker (of this or another
    // replica) had just created.
    let owned = engine.cluster.owned_namespaces(&engine.settings.instance).await?;
    let held: Vec<String> = engine
        .store
        .environments_in(&[Pending, Provisioning, Ready, Sleeping, Failed, Deleting])
        .await?
        .into_iter()
        .filter_map(|env| env.name)
        .collect();
    for namespace in owned {
        if !held.contains(&namespace) && engine.cluster.namespace_terminating(&namespace).await? == Some(false) {
            tracing::warn!(namespace, "deleting a namespace previewd owns but no live environment holds");
            engine.cluster.delete_namespace(&namespace).await?;
        }
    }
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn periodic(interval: u64, drift: u64) -> Periodic {
        Periodic { interval: Duration::from_secs(interval), drift_repair: Duration::from_secs(drift), max_attempts: 1 }
    }

    #[test]
    fn each_ready_environment_is_repaired_once_per_period_the_fleet_spread_evenly() {
        let p = periodic(60, 600);
        let start = 1_800_000_000_000;
        let mut repairs = vec![0; 1000];
        for pass in 0..10 {
            let now = start + pass * 60_000;
            let slice: Vec<i64> = (1..=1000).filter(|&id| p.repairs_drift_of(id, now)).collect();
            assert_eq!(slice.len(), 100, "pass {pass} takes a tenth of the fleet");
            for id in slice {
                repairs[usize::try_from(id - 1).unwrap()] += 1;
            }
        }
        assert!(repairs.iter().all(|&n| n == 1), "every environment once in the period");
    }

    #[test]
    fn a_period_no_longer_than_the_pass_repairs_every_ready_environment_each_pass() {
        for p in [periodic(60, 60), periodic(60, 1), periodic(1, 1)] {
            assert!((1..=50).all(|id| p.repairs_drift_of(id, 1_800_000_000_123)));
        }
    }
}
