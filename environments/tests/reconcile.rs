//! The reconciler end to end inside the engine: a real store (SQLite and Postgres) and the
//! real control plane, as previewd's least-privilege ServiceAccount.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use previewd_e2e::cluster::{SOURCE_NAMESPACE, TestNamespace, admin_client, converge, previewd_client, torn_down};
use previewd_environments::actions;
use previewd_environments::cluster::Cluster;
use previewd_environments::cluster::watch::{RolloutWatches, Wake};
use previewd_environments::forge::{Checks, FixedRepoConfig, ForgeError};
use previewd_environments::model::{CommitSha, EnvironmentState, PrNumber, PullRequest, Repo, RepoId};
use previewd_environments::policy::Policy;
use previewd_environments::reconcile::{Engine, EngineSettings, Outcome, ReconcileError};
use previewd_environments::render::Renderer;
use previewd_environments::repo_config::RepoFile;
use previewd_environments::store::{Lease, Store};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const PREVIEW_YAML: &str = include_str!("../../e2e/fixtures/preview.yaml");

fn policy(extra: &str) -> Policy {
    let text = include_str!("../../e2e/fixtures/policy.yaml").replace("previewd-platform-secrets", SOURCE_NAMESPACE);
    Policy::from_yaml(&format!("{text}\n{extra}"), "policy.yaml").unwrap()
}

async fn platform_secret() {
    let source: Api<Secret> = Api::namespaced(admin_client().await.unwrap(), SOURCE_NAMESPACE);
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some("db-readonly".into()), ..Default::default() },
        string_data: Some([("DATABASE_URL".to_owned(), "postgres://readonly@db/app".to_owned())].into()),
        ..Default::default()
    };
    match source.create(&PostParams::default(), &secret).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating the platform secret: {e}"),
    }
}

async fn engine(url: &str, repo_config: &str, policy: Policy, templates: &Path) -> Engine {
    let store = Store::connect(&url.into()).await.unwrap();
    store.migrate().await.unwrap();
    platform_secret().await;
    let dns = previewd_environments::dns::Dns::from_policy(&policy.dns, None).unwrap();
    Engine {
        store,
        cluster: Cluster::new(previewd_client().await.unwrap(), previewd_e2e::cluster::READ_CLUSTER_ROLE),
        renderer: Renderer::load(templates).unwrap(),
        dns,
        policy,
        forge: Arc::new(FixedRepoConfig::new(repo_config.to_owned())),
        settings: EngineSettings {
            rollout_timeout: Duration::from_secs(60),
            teardown_timeout: Duration::from_secs(60),
            ..Default::default()
        },
        owner: "test".into(),
    }
}

fn templates() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates")
}

/// A pull request of a repository no other test uses (random id), so names never collide.
fn pr(sha: char) -> PullRequest {
    let id: i64 = 1_000_000 + i64::from(rand_u16());
    PullRequest {
        repo: Repo { id: RepoId(id), owner: "acme".into(), name: "app".into() },
        number: PrNumber(7),
        head_sha: CommitSha(sha.to_string().repeat(40)),
        head_branch: "feature".into(),
        author: "dev".into(),
        from_fork: false,
        draft: false,
        labels: vec![],
    }
}

fn rand_u16() -> u16 {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    u16::from_le_bytes([bytes[0], bytes[1]])
}

/// Reconciles until a pass returns something other than `RollingOut` (pods on the test
/// cluster become Ready at once unless a template delays them), at most 60 s.
async fn past_rollout(engine: &Engine, id: i64) -> Outcome {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let outcome = engine.reconcile(id).await.unwrap();
        if !matches!(outcome, Outcome::RollingOut { .. }) || tokio::time::Instant::now() >= deadline {
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

type Answer<'a, T> = std::pin::Pin<Box<dyn Future<Output = Result<T, ForgeError>> + Send + 'a>>;

/// Serves one `.preview.yaml` and counts the reads, as GitHub's rate limit would; answers
/// `failure` instead while one is set (GitHub refusing or rate limiting).
struct CountingForge {
    text: String,
    reads: std::sync::atomic::AtomicUsize,
    failure: std::sync::Mutex<Option<ForgeError>>,
}

impl CountingForge {
    fn new(text: &str) -> Self {
        CountingForge { text: text.to_owned(), reads: Default::default(), failure: Default::default() }
    }
}

impl previewd_environments::forge::Forge for CountingForge {
    fn fetch<'a>(&'a self, _repo: &'a Repo, _sha: &'a CommitSha) -> Answer<'a, Option<RepoFile>> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let answer = match self.failure.lock().unwrap().clone() {
            Some(failure) => Err(failure),
            None => Ok(Some(RepoFile::from_bytes(self.text.clone().into_bytes()))),
        };
        Box::pin(async move { answer })
    }

    fn fetch_file<'a>(
        &'a self,
        _repo: &'a Repo,
        _sha: &'a CommitSha,
        _path: &'a str,
        _max_bytes: usize,
    ) -> Answer<'a, Option<previewd_environments::forge::FileBytes>> {
        Box::pin(async { Ok(None) })
    }

    fn checks<'a>(&'a self, _repo: &'a Repo, _sha: &'a CommitSha, _required: &'a [String]) -> Answer<'a, Checks> {
        Box::pin(async { Ok(Default::default()) })
    }
}

async fn pending(engine: &Engine, pr: &PullRequest) -> i64 {
    engine
        .store
        .record_environment(pr, EnvironmentState::Pending, None, &previewd_environments::model::Cause::Previewd)
        .await
        .unwrap()
        .id
}

async fn state(engine: &Engine, id: i64) -> (String, Option<String>) {
    let env = engine.store.reconcile_record(id).await.unwrap().unwrap();
    (env.state, env.reason)
}

previewd_e2e::each_backend! {
    async fn a_pending_environment_becomes_ready_and_a_closed_one_goes_away(db) {
        let engine = engine(&db.url, PREVIEW_YAML, policy(""), &templates()).await;
        let pr = pr('a');
        let id = pending(&engine, &pr).await;
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Ready));
        let env = engine.store.reconcile_record(id).await.unwrap().unwrap();
        let name = env.name.clone().unwrap();
        let _cleanup = TestNamespace::adopt(&name).await.unwrap();
        assert!(name.starts_with("app-pr-7-"), "{name}");
        assert_eq!(env.url.as_deref(), Some(format!("https://{name}.preview.test").as_str()));
        assert!(env.expires_at.is_some());
        let admin = admin_client().await.unwrap();
        let deployment = Api::<Deployment>::namespaced(admin.clone(), &name).get("app").await.unwrap();
        let image = deployment.spec.unwrap().template.spec.unwrap().containers[0].image.clone().unwrap();
        assert_eq!(image, format!("registry.preview.test/acme/app:{}", "a".repeat(40)));
        let secrets: Api<Secret> = Api::namespaced(admin.clone(), &name);
        assert!(secrets.get_opt("db-readonly").await.unwrap().is_some(), "platform secret copied");
        assert!(secrets.get_opt("generated-session-key").await.unwrap().is_some(), "secret generated");
        let mut history: Vec<String> = engine.store.transitions(id).await.unwrap().into_iter().map(|t| t.to_state).collect();
        // Provisioning may be recorded twice: moved to, then why it waits ("rolling out: ...").
        history.dedup();
        assert_eq!(history, ["Pending", "Provisioning", "Ready"]);

        // Reconciling a ready environment again is harmless (drift repair).
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Ready));

        engine.store.record_environment(&pr, EnvironmentState::Deleting, Some("pull request merged"), &previewd_environments::model::Cause::Previewd).await.unwrap();
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Deleted));
        assert!(Api::<Namespace>::all(admin).get_opt(&name).await.unwrap().is_none(), "namespace gone");
        assert_eq!(state(&engine, id).await, ("Deleted".into(), Some("pull request merged".into())));
    }

    async fn an_invalid_repo_config_fails_with_a_message_for_the_author(db) {
        let engine = engine(&db.url, "image: registry.preview.test/acme/app:{sha}\nreplicas: two\n", policy(""), &templates()).await;
        let id = pending(&engine, &pr('b')).await;
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Failed));
        let (_, reason) = state(&engine, id).await;
        let reason = reason.unwrap();
        assert!(reason.contains(".preview.yaml") && reason.contains("replicas"), "{reason}");
    }

    async fn a_config_over_the_policy_caps_fails_naming_the_cap(db) {
        let config = PREVIEW_YAML.replace("replicas: 1", "replicas: 9");
        let engine = engine(&db.url, &config, policy(""), &templates()).await;
        let id = pending(&engine, &pr('c')).await;
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Failed));
        let reason = state(&engine, id).await.1.unwrap();
        assert!(reason.contains("replicas") && reason.contains('3'), "{reason}");
    }

    async fn a_broken_template_fails_and_blames_the_template(db) {
        let dir = tempfile::tempdir().unwrap();
        let set = dir.path().join("environments/web");
        std::fs::create_dir_all(&set).unwrap();
        std::fs::write(set.join("a.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {{ name }}\n  labels: {{ no_such_thing.x }}\n").unwrap();
        let engine = engine(&db.url, PREVIEW_YAML, policy(""), dir.path()).await;
        let id = pending(&engine, &pr('d')).await;
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Failed));
        let reason = state(&engine, id).await.1.unwrap();
        assert!(reason.contains("environments/web/a.yaml line 5") && reason.contains("platform"), "{reason}");
    }

    async fn over_the_repository_limit_a_new_environment_is_rejected_naming_it(db) {
        let engine = engine(&db.url, PREVIEW_YAML, policy(""), &templates()).await;
        let first = pr('e');
        let mut second = first.clone();
        second.number = PrNumber(8);
        // Make the repository limit 1 through a per-repository override for this repo only.
        let text = "  acme/app:\n    limits: { per_repository: 1 }\n";
        let engine = Engine { policy: policy(text), ..engine };
        let a = pending(&engine, &first).await;
        assert_eq!(converge(&engine, a).await, Outcome::Settled(EnvironmentState::Ready));
        let name = engine.store.reconcile_record(a).await.unwrap().unwrap().name.unwrap();
        let _cleanup = TestNamespace::adopt(&name).await.unwrap();
        let b = pending(&engine, &second).await;
        assert_eq!(converge(&engine, b).await, Outcome::Settled(EnvironmentState::Rejected));
        let reason = state(&engine, b).await.1.unwrap();
        assert!(reason.contains("repository limit reached") && reason.contains("1 live environments (limit 1)"), "{reason}");
        engine.store.record_environment(&first, EnvironmentState::Deleting, Some("pull request closed without merge"), &previewd_environments::model::Cause::Previewd).await.unwrap();
        converge(&engine, a).await;
    }

    async fn a_provision_interrupted_by_a_crash_converges_on_the_next_reconcile(db) {
        let engine = engine(&db.url, PREVIEW_YAML, policy(""), &templates()).await;
        let pr = pr('f');
        let id = pending(&engine, &pr).await;
        // The crashed process had moved it to Provisioning and held its lease.
        engine.store.transition(id, &pr.head_sha.0, EnvironmentState::Provisioning, None, None, None, None).await.unwrap();
        assert!(engine.store.take_lease(Lease::Reconcile, id, "crashed", Duration::ZERO).await.unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Ready));
        let name = engine.store.reconcile_record(id).await.unwrap().unwrap().name.unwrap();
        let _cleanup = TestNamespace::adopt(&name).await.unwrap();
        engine.store.record_environment(&pr, EnvironmentState::Deleting, Some("pull request merged"), &previewd_environments::model::Cause::Previewd).await.unwrap();
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Deleted));
    }

    async fn one_reconcile_per_environment_at_a_time(db) {
        let engine = engine(&db.url, PREVIEW_YAML, policy(""), &templates()).await;
        let id = pending(&engine, &pr('g')).await;
        assert!(engine.store.take_lease(Lease::Reconcile, id, "other-replica", Duration::from_secs(60)).await.unwrap());
        assert!(matches!(engine.reconcile(id).await, Err(ReconcileError::Busy)));
        assert_eq!(state(&engine, id).await.0, "Pending", "nothing happened");
    }

    async fn a_newer_push_wins_over_an_older_sha(db) {
        let engine = engine(&db.url, PREVIEW_YAML, policy(""), &templates()).await;
        let old = pr('h');
        let mut new = old.clone();
        new.head_sha = CommitSha("9".repeat(40));
        let id = pending(&engine, &old).await;
        engine.store.record_environment(&new, EnvironmentState::Pending, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
        // A reconcile that started with the old SHA cannot record its result.
        let moved = engine.store.transition(id, &old.head_sha.0, EnvironmentState::Ready, None, None, None, None).await.unwrap();
        assert!(!moved);
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Ready));
        let env = engine.store.reconcile_record(id).await.unwrap().unwrap();
        assert_eq!(env.head_sha, "9".repeat(40));
        let name = env.name.unwrap();
        let _cleanup = TestNamespace::adopt(&name).await.unwrap();
        let deployment = Api::<Deployment>::namespaced(admin_client().await.unwrap(), &name).get("app").await.unwrap();
        let image = deployment.spec.unwrap().template.spec.unwrap().containers[0].image.clone().unwrap();
        assert!(image.ends_with(&"9".repeat(40)), "{image}");
        engine.store.record_environment(&new, EnvironmentState::Deleting, Some("pull request merged"), &previewd_environments::model::Cause::Previewd).await.unwrap();
        converge(&engine, id).await;
    }

    async fn an_environment_whose_namespace_is_already_gone_is_simply_deleted(db) {
        let engine = engine(&db.url, PREVIEW_YAML, policy(""), &templates()).await;
        let pr = pr('i');
        let id = pending(&engine, &pr).await;
        converge(&engine, id).await;
        let name = engine.store.reconcile_record(id).await.unwrap().unwrap().name.unwrap();
        // Someone deleted the namespace by hand and it is gone.
        torn_down(&engine.cluster, &name, Duration::from_secs(60)).await.unwrap();
        engine.store.record_environment(&pr, EnvironmentState::Deleting, Some("pull request closed without merge"), &previewd_environments::model::Cause::Previewd).await.unwrap();
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Deleted));
    }

    async fn a_queued_environment_gets_its_turn_when_a_slot_frees(db) {
        let engine = engine(&db.url, PREVIEW_YAML, policy("  acme/app:\n    limits: { per_repository: 1, when_full: queue }\n"), &templates()).await;
        let first = pr('j');
        let mut second = first.clone();
        second.number = PrNumber(9);
        let a = pending(&engine, &first).await;
        assert_eq!(converge(&engine, a).await, Outcome::Settled(EnvironmentState::Ready));
        let name_a = engine.store.reconcile_record(a).await.unwrap().unwrap().name.unwrap();
        let _cleanup_a = TestNamespace::adopt(&name_a).await.unwrap();
        let b = pending(&engine, &second).await;
        assert!(matches!(engine.reconcile(b).await.unwrap(), Outcome::RequeueAfter(_)));
        let (state_b, reason) = state(&engine, b).await;
        assert_eq!(state_b, "Pending", "queued, not rejected");
        assert!(reason.unwrap().contains("repository limit reached"));
        engine.store.record_environment(&first, EnvironmentState::Deleting, Some("pull request merged"), &previewd_environments::model::Cause::Previewd).await.unwrap();
        assert_eq!(converge(&engine, a).await, Outcome::Settled(EnvironmentState::Deleted));
        assert_eq!(converge(&engine, b).await, Outcome::Settled(EnvironmentState::Ready));
        let name_b = engine.store.reconcile_record(b).await.unwrap().unwrap().name.unwrap();
        let _cleanup_b = TestNamespace::adopt(&name_b).await.unwrap();
        engine.store.record_environment(&second, EnvironmentState::Deleting, Some("pull request merged"), &previewd_environments::model::Cause::Previewd).await.unwrap();
        converge(&engine, b).await;
    }

    async fn reopened_while_the_old_namespace_terminates_it_waits_then_provisions(db) {
        let engine = engine(&db.url, PREVIEW_YAML, policy(""), &templates()).await;
        let engine = Engine { settings: EngineSettings { teardown_timeout: Duration::from_secs(1), ..engine.settings.clone() }, ..engine };
        let pr = pr('k');
        let id = pending(&engine, &pr).await;
        converge(&engine, id).await;
        let name = engine.store.reconcile_record(id).await.unwrap().unwrap().name.unwrap();
        let _cleanup = TestNamespace::adopt(&name).await.unwrap();
        // Something in the namespace holds its deletion.
        let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(admin_client().await.unwrap(), &name);
        let held = k8s_openapi::api::core::v1::ConfigMap {
            metadata: kube::api::ObjectMeta { name: Some("held".into()), finalizers: Some(vec!["previewd.dev/test-hold".into()]), ..Default::default() },
            ..Default::default()
        };
        config_maps.create(&PostParams::default(), &held).await.unwrap();
        engine.store.record_environment(&pr, EnvironmentState::Deleting, Some("pull request closed without merge"), &previewd_environments::model::Cause::Previewd).await.unwrap();
        assert!(matches!(engine.reconcile(id).await.unwrap(), Outcome::RequeueAfter(_)), "teardown cannot finish yet");
        // The pull request is reopened: it waits for the name, without failing.
        engine.store.record_environment(&pr, EnvironmentState::Pending, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
        assert!(matches!(engine.reconcile(id).await.unwrap(), Outcome::RequeueAfter(_)));
        let (state_now, reason) = state(&engine, id).await;
        assert_eq!(state_now, "Pending");
        assert!(reason.unwrap().contains("finish terminating"));
        let patch = serde_json::json!({"metadata": {"finalizers": null}});
        config_maps.patch("held", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Ready), "never provisioned");
        engine.store.record_environment(&pr, EnvironmentState::Deleting, Some("pull request merged"), &previewd_environments::model::Cause::Previewd).await.unwrap();
        let engine = Engine { settings: EngineSettings { teardown_timeout: Duration::from_secs(60), ..engine.settings.clone() }, ..engine };
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Deleted));
    }

    async fn extending_moves_the_expiry_within_the_maximum(db) {
        let engine = engine(&db.url, PREVIEW_YAML, policy(""), &templates()).await;
        let pr = pr('l');
        let id = pending(&engine, &pr).await;
        converge(&engine, id).await;
        let name = engine.store.reconcile_record(id).await.unwrap().unwrap().name.unwrap();
        let _cleanup = TestNamespace::adopt(&name).await.unwrap();
        let before = engine.store.reconcile_record(id).await.unwrap().unwrap().expires_at.unwrap();
        let acting = &engine;
        let extend = |by: Duration| async move {
            let env = acting.store.reconcile_record(id).await.unwrap().unwrap();
            let actor = actions::Actor::Api { token: "test".into() };
            match actions::act(&acting.store, &acting.policy, &env, actions::Action::Extend(by), &actor, 3).await.unwrap() {
                actions::Done::Extended { until, .. } => until,
                other => panic!("{other:?}"),
            }
        };
        let extended = extend(Duration::from_secs(2 * 3600)).await;
        assert_eq!(extended, before + 2 * 3600 * 1000);
        // Far beyond the policy's 7-day maximum: clamped to now + 7 days.
        let clamped = extend(Duration::from_secs(365 * 86_400)).await;
        let max = previewd_environments::time::now_ms() + 7 * 86_400 * 1000;
        assert!(clamped <= max && clamped > max - 60_000, "{clamped} vs {max}");
        // The next reconcile writes the new expiry on the namespace.
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Ready));
        let namespace = Api::<Namespace>::all(admin_client().await.unwrap()).get(&name).await.unwrap();
        let annotation = namespace.metadata.annotations.unwrap()["previewd.dev/expires-at"].clone();
        assert_eq!(engine.store.reconcile_record(id).await.unwrap().unwrap().expires_at, Some(clamped));
        assert!(annotation.ends_with('Z'), "{annotation}");

        // A push renews the TTL (24 h in the fixture's policy): that is shorter than the
        // extension, which stays.
        let mut pushed = pr.clone();
        pushed.head_sha = CommitSha("7".repeat(40));
        engine.store.record_environment(&pushed, EnvironmentState::Pending, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
        engine.store.touch_environment(id).await.unwrap();
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Ready));
        assert_eq!(engine.store.reconcile_record(id).await.unwrap().unwrap().expires_at, Some(clamped), "a push never shortens an extension");
        let pr = pushed;
        engine.store.record_environment(&pr, EnvironmentState::Deleting, Some("pull request merged"), &previewd_environments::model::Cause::Previewd).await.unwrap();
        converge(&engine, id).await;
    }

    async fn environments_due_for_a_warning_are_found_once(db) {
        let engine = engine(&db.url, PREVIEW_YAML, policy(""), &templates()).await;
        let pr = pr('m');
        let id = pending(&engine, &pr).await;
        engine.store.transition(id, &pr.head_sha.0, EnvironmentState::Provisioning, None, None, None, Some(previewd_environments::time::now_ms() + 3_600_000)).await.unwrap();
        let soon = previewd_environments::time::now_ms() + 2 * 3_600_000;
        let due: Vec<i64> = engine.store.due_for_warning(soon).await.unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(due, [id]);
        engine.store.mark_warned(id).await.unwrap();
        assert!(engine.store.due_for_warning(soon).await.unwrap().is_empty(), "warned once");
        engine.store.set_expiry(id, previewd_environments::time::now_ms() + 3_600_000, None).await.unwrap();
        assert_eq!(engine.store.due_for_warning(soon).await.unwrap().len(), 1, "an extension makes a new warning due");
    }

    async fn a_namespace_deleted_by_hand_is_recreated_by_the_next_reconcile(db) {
        let engine = engine(&db.url, PREVIEW_YAML, policy(""), &templates()).await;
        let pr = pr('n');
        let id = pending(&engine, &pr).await;
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Ready));
        let name = engine.store.reconcile_record(id).await.unwrap().unwrap().name.unwrap();
        let _cleanup = TestNamespace::adopt(&name).await.unwrap();
        // Someone deletes the whole namespace; wait until it is really gone.
        torn_down(&engine.cluster, &name, Duration::from_secs(60)).await.unwrap();
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Ready));
        let deployment = Api::<Deployment>::namespaced(admin_client().await.unwrap(), &name).get_opt("app").await.unwrap();
        assert!(deployment.is_some(), "the environment was rebuilt");
        engine.store.record_environment(&pr, EnvironmentState::Deleting, Some("pull request merged"), &previewd_environments::model::Cause::Previewd).await.unwrap();
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Deleted));
    }

    async fn an_approved_fork_environment_never_receives_platform_secrets(db) {
        let engine = engine(&db.url, PREVIEW_YAML, policy(""), &templates()).await;
        let mut fork = pr('o');
        fork.from_fork = true;
        // As if a writer approved it: the planner let it through as Pending.
        let id = pending(&engine, &fork).await;
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Ready));
        let name = engine.store.reconcile_record(id).await.unwrap().unwrap().name.unwrap();
        let _cleanup = TestNamespace::adopt(&name).await.unwrap();
        let secrets: Api<Secret> = Api::namespaced(admin_client().await.unwrap(), &name);
        assert!(secrets.get_opt("db-readonly").await.unwrap().is_none(), "a fork got a platform secret");
        assert!(secrets.get_opt("generated-session-key").await.unwrap().is_some(), "its own generated secret it keeps");
        engine.store.record_environment(&fork, EnvironmentState::Deleting, Some("pull request merged"), &previewd_environments::model::Cause::Previewd).await.unwrap();
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Deleted));
    }

    async fn the_url_is_announced_only_once_its_name_resolves_and_the_record_goes_with_it(db) {
        let base = engine(&db.url, PREVIEW_YAML, policy(""), &templates()).await;
        let dns_server = previewd_e2e::dns::server().unwrap();
        let dns_policy = |server: String, verify: Duration| previewd_environments::policy::DnsPolicy {
            provider: previewd_environments::policy::DnsProvider::Rfc2136,
            target: Some(previewd_environments::policy::DnsTarget { a: Some("192.0.2.10".parse().unwrap()), ..Default::default() }),
            ttl: 30,
            resolvers: Vec::new(),
            verify_timeout: verify,
            rfc2136: Some(previewd_environments::policy::Rfc2136Policy {
                server,
                zone: dns_server.zone.clone(),
                key_name: dns_server.tsig_name.clone(),
                key_algorithm: previewd_environments::policy::TsigAlgorithmName::HmacSha256,
                key_secret_env: "PREVIEWD_DNS_TSIG_SECRET".to_owned(),
            }),
        };
        let secret = || previewd_environments::dns::SecretBytes::from_base64(&dns_server.tsig_secret).unwrap();
        let mut with_dns = policy("");
        with_dns.dns = dns_policy(dns_server.server.to_string(), Duration::from_secs(10));
        let dns = previewd_environments::dns::Dns::from_policy(&with_dns.dns, Some(secret())).unwrap();
        let engine = Engine { policy: with_dns.clone(), dns, ..base };
        let pr = pr('p');
        let id = pending(&engine, &pr).await;
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Ready));
        let env = engine.store.reconcile_record(id).await.unwrap().unwrap();
        let name = env.name.unwrap();
        let _cleanup = TestNamespace::adopt(&name).await.unwrap();
        let host = format!("{name}.preview.test");
        assert!(engine.dns.verify(&host).await.is_ok(), "the record is published");
        engine.store.record_environment(&pr, EnvironmentState::Deleting, Some("pull request merged"), &previewd_environments::model::Cause::Previewd).await.unwrap();
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Deleted));
        let short = previewd_environments::dns::Dns::from_policy(&dns_policy(dns_server.server.to_string(), Duration::from_millis(300)), Some(secret())).unwrap();
        assert!(matches!(short.verify(&host).await, Err(previewd_environments::dns::DnsError::NotResolving { .. })), "the record is gone");

        // With the DNS server unreachable the environment waits with a DNS reason and a retry.
        let closed = previewd_e2e::dns::closed_port().unwrap();
        let mut unreachable = with_dns.clone();
        unreachable.dns = dns_policy(closed.to_string(), Duration::from_secs(1));
        let dns = previewd_environments::dns::Dns::from_policy(&unreachable.dns, Some(secret())).unwrap();
        let engine = Engine { policy: unreachable, dns, ..engine };
        let mut other = pr.clone();
        other.number = PrNumber(77);
        let id = pending(&engine, &other).await;
        assert!(matches!(past_rollout(&engine, id).await, Outcome::RequeueAfter(_)));
        let (state_now, reason) = state(&engine, id).await;
        assert_eq!(state_now, "Provisioning");
        let reason = reason.unwrap();
        assert!(reason.starts_with("DnsUnreachable"), "{reason}");
        let name = engine.store.reconcile_record(id).await.unwrap().unwrap().name.unwrap();
        let _cleanup = TestNamespace::adopt(&name).await.unwrap();
    }
    async fn a_finished_rollout_is_seen_by_the_watch_not_a_timer(db) {
        let delay = Duration::from_secs(3);
        let templates = previewd_e2e::fixtures::templates_with_pod_ready_delay(delay).unwrap();
        let engine = engine(&db.url, PREVIEW_YAML, policy(""), templates.path()).await;
        let pr = pr('w');
        let id = pending(&engine, &pr).await;
        let started = tokio::time::Instant::now();
        let Outcome::RollingOut { namespace, deadline } = engine.reconcile(id).await.unwrap() else {
            panic!("pods that take {delay:?} cannot be ready at the first look");
        };
        let _cleanup = TestNamespace::adopt(&namespace).await.unwrap();
        assert!(deadline > previewd_environments::time::now_ms() + 50_000, "the rollout deadline is 60 s away");
        let (wake, mut wakes) = tokio::sync::mpsc::channel(64);
        let watches = RolloutWatches::new(engine.cluster.client(), wake, 4);
        assert!(watches.watch(id, &namespace, tokio::time::Instant::now() + Duration::from_secs(60)));
        // Reconcile only when the watch says something changed, as the service does: Ready is
        // reached long before the deadline, so it was the watch.
        let mut passes = 0;
        loop {
            let woken = tokio::time::timeout(Duration::from_secs(30), wakes.recv()).await;
            let Ok(Some(Wake::Environment(woken))) = woken else { panic!("no wake-up within 30 s: {woken:?}") };
            assert_eq!(woken, id);
            passes += 1;
            match engine.reconcile(id).await.unwrap() {
                Outcome::Settled(EnvironmentState::Ready) => break,
                Outcome::RollingOut { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        let took = started.elapsed();
        watches.forget(id);
        println!("ready {took:?} after the first look, in {passes} woken passes (pods take {delay:?})");
        assert!(took >= delay, "the pods' delay is real: {took:?}");
        assert!(took < Duration::from_secs(20), "seen long before the 60 s deadline: {took:?}");
        let (_, reason) = state(&engine, id).await;
        assert_eq!(reason, None);
        engine.store.record_environment(&pr, EnvironmentState::Deleting, Some("pull request merged"), &previewd_environments::model::Cause::Previewd).await.unwrap();
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Deleted));
    }

    async fn a_push_during_a_rollout_starts_the_new_commit_at_once(db) {
        let templates = previewd_e2e::fixtures::templates_with_pod_ready_delay(Duration::from_secs(40)).unwrap();
        let engine = engine(&db.url, PREVIEW_YAML, policy(""), templates.path()).await;
        let first = pr('p');
        let id = pending(&engine, &first).await;
        let Outcome::RollingOut { namespace, .. } = engine.reconcile(id).await.unwrap() else { panic!("not rolling out") };
        let _cleanup = TestNamespace::adopt(&namespace).await.unwrap();
        let (_, reason) = state(&engine, id).await;
        assert_eq!(reason.as_deref(), Some("rolling out: waiting for deployment `app`"));
        // A push while the first commit's pods take 40 s to start.
        let mut pushed = first.clone();
        pushed.head_sha = CommitSha("q".repeat(40));
        engine.store.record_environment(&pushed, EnvironmentState::Pending, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
        let began = tokio::time::Instant::now();
        let outcome = engine.reconcile(id).await.unwrap();
        let took = began.elapsed();
        assert!(matches!(outcome, Outcome::RollingOut { .. }), "{outcome:?}");
        assert!(took < Duration::from_secs(20), "the push did not wait for the first rollout: {took:?}");
        let deployment = Api::<Deployment>::namespaced(admin_client().await.unwrap(), &namespace).get("app").await.unwrap();
        let image = deployment.spec.unwrap().template.spec.unwrap().containers[0].image.clone().unwrap();
        assert_eq!(image, format!("registry.preview.test/acme/app:{}", "q".repeat(40)), "the new commit is applied");
        let env = engine.store.reconcile_record(id).await.unwrap().unwrap();
        assert_eq!((env.state.as_str(), env.head_sha.as_str()), ("Provisioning", "q".repeat(40).as_str()));
        engine.store.record_environment(&pushed, EnvironmentState::Deleting, Some("pull request merged"), &previewd_environments::model::Cause::Previewd).await.unwrap();
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Deleted));
    }

    async fn an_unchanged_head_is_not_read_again(db) {
        let counting = Arc::new(CountingForge::new(PREVIEW_YAML));
        let mut engine = engine(&db.url, PREVIEW_YAML, policy(""), &templates()).await;
        engine.forge = counting.clone();
        let pr = pr('r');
        let id = pending(&engine, &pr).await;
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Ready));
        let name = engine.store.reconcile_record(id).await.unwrap().unwrap().name.unwrap();
        let _cleanup = TestNamespace::adopt(&name).await.unwrap();
        let after_provision = counting.reads.load(std::sync::atomic::Ordering::SeqCst);
        for _ in 0..5 {
            assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Ready));
        }
        assert_eq!(counting.reads.load(std::sync::atomic::Ordering::SeqCst), after_provision, "resyncs read nothing");
        assert_eq!(after_provision, 1, "one read for the commit");
        engine.store.record_environment(&pr, EnvironmentState::Deleting, Some("pull request merged"), &previewd_environments::model::Cause::Previewd).await.unwrap();
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Deleted));
    }

    async fn twenty_openings_at_once_on_two_replicas_leave_exactly_five_live(db) {
        // Two engines with their own connection pools: two replicas of previewd on one store.
        let limited = || policy("  acme/app:\n    limits: { per_repository: 5, when_full: reject }\n");
        let one = engine(&db.url, PREVIEW_YAML, limited(), &templates()).await;
        let two = engine(&db.url, PREVIEW_YAML, limited(), &templates()).await;
        let base = pr('s');
        let mut ids = Vec::new();
        for number in 1..=20 {
            ids.push(pending(&one, &PullRequest { number: PrNumber(number), ..base.clone() }).await);
        }
        let outcomes = futures::future::join_all(
            ids.iter().enumerate().map(|(i, &id)| converge(if i % 2 == 0 { &one } else { &two }, id)),
        )
        .await;
        let mut live = Vec::new();
        for (&id, outcome) in ids.iter().zip(&outcomes) {
            let env = one.store.reconcile_record(id).await.unwrap().unwrap();
            if *outcome == Outcome::Settled(EnvironmentState::Ready) {
                live.push((id, TestNamespace::adopt(env.name.as_deref().unwrap()).await.unwrap()));
            } else {
                assert_eq!(*outcome, Outcome::Settled(EnvironmentState::Rejected), "environment {id}");
                assert!(env.reason.unwrap().contains("(limit 5)"));
            }
        }
        assert_eq!(live.len(), 5, "{outcomes:?}");
        let namespaces = Api::<Namespace>::all(admin_client().await.unwrap())
            .list(&kube::api::ListParams::default().labels(&format!("{}={}", previewd_environments::render::REPO_ID_LABEL, base.repo.id)))
            .await
            .unwrap();
        assert_eq!(namespaces.items.len(), 5, "five namespaces in the cluster");
        for (id, _cleanup) in &live {
            let env = one.store.reconcile_record(*id).await.unwrap().unwrap();
            one.store.record_environment(&env.pull_request(), EnvironmentState::Deleting, Some("pull request merged"), &previewd_environments::model::Cause::Previewd).await.unwrap();
            assert_eq!(converge(&one, *id).await, Outcome::Settled(EnvironmentState::Deleted));
        }
    }

    async fn a_failed_rollout_whose_cause_can_pass_is_retried_and_recovers(db) {
        // Pods take 4 s; a rollout may take 1 s: the first rollouts time out, and the retries
        // (after 1 s, then 2 s) find the same pods ready.
        let templates = previewd_e2e::fixtures::templates_with_pod_ready_delay(Duration::from_secs(4)).unwrap();
        let mut engine = engine(&db.url, PREVIEW_YAML, policy(""), templates.path()).await;
        engine.settings.rollout_timeout = Duration::from_secs(1);
        engine.settings.retry_base = Duration::from_secs(1);
        engine.settings.retry_max_delay = Duration::from_secs(2);
        let pr = pr('f');
        let id = pending(&engine, &pr).await;
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Ready));
        let env = engine.store.reconcile_record(id).await.unwrap().unwrap();
        let _cleanup = TestNamespace::adopt(env.name.as_deref().unwrap()).await.unwrap();
        assert_eq!((env.retries, env.retry_at), (0, None), "Ready starts the count anew");
        let history = engine.store.transitions(id).await.unwrap();
        let failed = history.iter().find(|t| t.to_state == "Failed").expect("the first rollout failed");
        let reason = failed.reason.as_deref().unwrap();
        assert!(reason.contains("not ready after 1 s"), "{reason}");
        assert!(reason.ends_with("; trying again in 1s (retry 1 of 5)"), "{reason}");
        let retried = history.iter().skip_while(|t| t.to_state != "Failed").find(|t| t.to_state == "Pending").unwrap();
        assert_eq!(retried.reason.as_deref(), Some("retry 1 of 5 of the rollout that failed"));
        assert_eq!(history.last().unwrap().to_state, "Ready");
        engine.store.record_environment(&pr, EnvironmentState::Deleting, Some("pull request merged"), &previewd_environments::model::Cause::Previewd).await.unwrap();
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Deleted));
    }

    async fn retries_stop_at_the_limit_and_a_push_starts_them_anew(db) {
        let templates = previewd_e2e::fixtures::templates_with_pod_ready_delay(Duration::from_secs(120)).unwrap();
        let mut engine = engine(&db.url, PREVIEW_YAML, policy(""), templates.path()).await;
        engine.settings.rollout_timeout = Duration::from_secs(1);
        engine.settings.retry_base = Duration::from_secs(1);
        engine.settings.failed_retries = 1;
        let pr = pr('g');
        let id = pending(&engine, &pr).await;
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Failed));
        let env = engine.store.reconcile_record(id).await.unwrap().unwrap();
        let _cleanup = TestNamespace::adopt(env.name.as_deref().unwrap()).await.unwrap();
        let reason = env.reason.unwrap();
        assert!(reason.contains("not ready after 1 s"), "{reason}");
        assert!(reason.ends_with("gave up after 1 retry: push a fix or comment `/preview redeploy`"), "{reason}");
        assert_eq!((env.retries, env.retry_at), (1, None));
        let tried: Vec<String> = engine.store.transitions(id).await.unwrap().into_iter().map(|t| t.to_state).collect();
        assert_eq!(tried.iter().filter(|s| *s == "Failed").count(), 2, "{tried:?}");
        // A push starts the count anew.
        let mut pushed = pr.clone();
        pushed.head_sha = CommitSha("h".repeat(40));
        engine.store.record_environment(&pushed, EnvironmentState::Pending, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
        let env = engine.store.reconcile_record(id).await.unwrap().unwrap();
        assert_eq!((env.retries, env.retry_at), (0, None));
        let outcome = past_rollout(&engine, id).await;
        assert!(matches!(outcome, Outcome::RequeueAfter(_)), "the new commit's timeout is retried: {outcome:?}");
        let env = engine.store.reconcile_record(id).await.unwrap().unwrap();
        assert_eq!(env.state, "Failed");
        assert!(env.reason.unwrap().ends_with("(retry 1 of 1)"));
        assert_eq!(env.retries, 1);
        // The periodic pass's safety net finds it once it is due, not before.
        let at = env.retry_at.expect("a retry is scheduled");
        assert!(!engine.store.due_retries(at - 1).await.unwrap().contains(&id));
        assert!(engine.store.due_retries(at).await.unwrap().contains(&id));
        engine.store.record_environment(&pushed, EnvironmentState::Deleting, Some("pull request merged"), &previewd_environments::model::Cause::Previewd).await.unwrap();
        assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Deleted));
    }

    async fn the_code_hosts_wait_is_kept_and_a_refusal_fails_at_once(db) {
        let forge = Arc::new(CountingForge::new(PREVIEW_YAML));
        let mut engine = engine(&db.url, PREVIEW_YAML, policy(""), &templates()).await;
        engine.forge = forge.clone();
        let pr = pr('k');
        let id = pending(&engine, &pr).await;
        // A rate limit: the reconcile fails with the wait GitHub gave, for the job queue.
        *forge.failure.lock().unwrap() = Some(ForgeError::retry_after("API rate limit exceeded", Duration::from_secs(42)));
        let error = engine.reconcile(id).await.unwrap_err();
        assert!(matches!(error, ReconcileError::ConfigSource(_)), "{error}");
        assert_eq!(error.retry_after(), Some(Duration::from_secs(42)));
        assert_eq!(state(&engine, id).await.0, "Pending", "waiting, not failed");
        // A refusal no retry mends (the App may not read the repository): Failed, saying why.
        *forge.failure.lock().unwrap() = Some(ForgeError::permanent("Resource not accessible by integration (403)"));
        assert_eq!(engine.reconcile(id).await.unwrap(), Outcome::Settled(EnvironmentState::Failed));
        let (_, reason) = state(&engine, id).await;
        assert_eq!(
            reason.as_deref(),
            Some("could not read the repository's configuration: Resource not accessible by integration (403)")
        );
    }
}
