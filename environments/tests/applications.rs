//! Real applications on the real control plane, through the engine as previewd's
//! least-privilege identity: three services and a seeded database, Gateway API routes, the
//! seed's once-only run and its reset, a failing seed, and teardown of volumes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use previewd_e2e::cluster::{TestNamespace, admin_client, converge, previewd_client};
use previewd_e2e::database::{Backend, fresh};
use previewd_e2e::fixtures::{PodDelays, templates_with_delays};
use previewd_environments::actions::{self, Action, Actor};
use previewd_environments::cluster::Cluster;
use previewd_environments::forge::FixedRepoConfig;
use previewd_environments::model::{Cause, CommitSha, EnvironmentState, PrNumber, PullRequest, Repo, RepoId};
use previewd_environments::policy::Policy;
use previewd_environments::reconcile::{Engine, EngineSettings, Outcome};
use previewd_environments::render::Renderer;
use previewd_environments::store::Store;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const APP: &str = r#"
services:
  web: { image: "registry.preview.test/acme/web:{sha}", port: 3000, expose: public, resources: { limits: { cpu: 200m } } }
  api:
    image: registry.preview.test/acme/api:{sha}
    port: 8080
    expose: public
    generated_secrets: [session-key]
    resources: { limits: { cpu: 200m } }
  worker: { image: "registry.preview.test/acme/api:{sha}", command: [/api, work], resources: { limits: { cpu: 200m } } }
database:
  engine: postgres
  seed: { command: [/api, seed], service: api }
"#;

fn policy(extra: &str) -> Policy {
    let text = include_str!("../../e2e/fixtures/policy.yaml")
        .replace("previewd-platform-secrets", previewd_e2e::cluster::SOURCE_NAMESPACE);
    Policy::from_yaml(&format!("{text}\n{extra}"), "policy.yaml").unwrap()
}

async fn engine(store: Store, config: &str, policy: Policy, templates: &Path) -> Engine {
    store.migrate().await.unwrap();
    Engine {
        store,
        cluster: Cluster::new(previewd_client().await.unwrap(), previewd_e2e::cluster::READ_CLUSTER_ROLE),
        renderer: Renderer::load(templates).unwrap(),
        dns: previewd_environments::dns::Dns::from_policy(&policy.dns, None).unwrap(),
        policy,
        forge: Arc::new(FixedRepoConfig::new(config.to_owned())),
        settings: EngineSettings {
            rollout_timeout: Duration::from_secs(60),
            teardown_timeout: Duration::from_secs(60),
            ..Default::default()
        },
        owner: "test".into(),
    }
}

fn pr(sha: char) -> PullRequest {
    let id = 2_000_000 + i64::from(u16::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..2].try_into().unwrap()));
    PullRequest {
        repo: Repo { id: RepoId(id), owner: "acme".into(), name: "shop".into() },
        number: PrNumber(3),
        head_sha: CommitSha(sha.to_string().repeat(40)),
        head_branch: "feature".into(),
        author: "dev".into(),
        from_fork: false,
        draft: false,
        labels: vec![],
    }
}

async fn open(engine: &Engine, pr: &PullRequest) -> (i64, String, TestNamespace) {
    let id = engine.store.record_environment(pr, EnvironmentState::Pending, None, &Cause::Previewd).await.unwrap().id;
    let outcome = converge(engine, id).await;
    let env = engine.store.reconcile_record(id).await.unwrap().unwrap();
    assert_eq!(outcome, Outcome::Settled(EnvironmentState::Ready), "{:?}", env.reason);
    let name = env.name.unwrap();
    let cleanup = TestNamespace::adopt(&name).await.unwrap();
    (id, name, cleanup)
}

fn names<K: kube::Resource>(list: &[K]) -> Vec<String> {
    let mut names: Vec<String> = list.iter().filter_map(|o| o.meta().name.clone()).collect();
    names.sort();
    names
}

fn complete(job: &Job) -> bool {
    job.status.iter().flat_map(|s| s.conditions.iter().flatten()).any(|c| c.type_ == "Complete" && c.status == "True")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_services_and_a_seeded_database_roll_out_seed_once_and_reset() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let store = Store::connect(&db.url.as_str().into()).await.unwrap();
    // The seed's pod runs 2 s: long enough for a reconcile to find it running.
    let templates = templates_with_delays(PodDelays { seed: Duration::from_secs(2), ..PodDelays::default() }).unwrap();
    let engine = engine(store, APP, policy(""), templates.path()).await;
    let pr = pr('a');
    let (id, name, _cleanup) = open(&engine, &pr).await;
    let admin = admin_client().await.unwrap();
    let list = ListParams::default();

    // Every object applied, in the namespace, owned.
    let deployments = Api::<Deployment>::namespaced(admin.clone(), &name).list(&list).await.unwrap().items;
    assert_eq!(names(&deployments), ["api", "web", "worker"]);
    let sets = Api::<StatefulSet>::namespaced(admin.clone(), &name).list(&list).await.unwrap().items;
    assert_eq!(names(&sets), ["database-1"]);
    let services = Api::<Service>::namespaced(admin.clone(), &name).list(&list).await.unwrap().items;
    assert_eq!(names(&services), ["api", "database", "web"]);
    // Each Service selects running pods: the endpoint slice controller found them.
    let slices: Api<EndpointSlice> = Api::namespaced(admin.clone(), &name);
    for service in ["api", "database", "web"] {
        let found =
            slices.list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}"))).await.unwrap();
        let endpoints: usize = found.items.iter().map(|s| s.endpoints.as_ref().map_or(0, Vec::len)).sum();
        assert!(endpoints >= 1, "Service {service} selects no pod");
    }
    let jobs: Api<Job> = Api::namespaced(admin.clone(), &name);
    let seed = jobs.get("seed-1").await.unwrap();
    assert!(complete(&seed), "Ready only once the seed completed: {:?}", seed.status);
    let owned = |meta: &kube::api::ObjectMeta| {
        meta.labels.as_ref().and_then(|l| l.get("previewd.dev/environment")) == Some(&name)
    };
    assert!(owned(&seed.metadata), "the seed Job is owned");
    assert!(deployments.iter().all(|d| owned(&d.metadata)) && sets.iter().all(|s| owned(&s.metadata)));
    assert!(services.iter().all(|s| owned(&s.metadata)), "every Service is owned");
    // While the seed ran, the environment said it waited for it.
    let reasons: Vec<String> =
        engine.store.transitions(id).await.unwrap().into_iter().filter_map(|t| t.reason).collect();
    assert!(reasons.iter().any(|r| r.contains("job `seed-1`")), "{reasons:#?}");
    // The URLs of both public services.
    let env = engine.store.reconcile_record(id).await.unwrap().unwrap();
    let urls = previewd_environments::store::service_urls(env.service_urls.as_deref());
    assert_eq!(
        urls,
        [
            ("api".to_owned(), format!("https://api--{name}.preview.test")),
            ("web".to_owned(), format!("https://{name}.preview.test")),
        ]
    );

    // A push redeploys the services; the seed is not run again.
    let pushed = PullRequest { head_sha: CommitSha("b".repeat(40)), ..pr.clone() };
    engine.store.record_environment(&pushed, EnvironmentState::Pending, None, &Cause::Previewd).await.unwrap();
    assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Ready));
    let image = |d: &Deployment| d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].image.clone();
    let api = Api::<Deployment>::namespaced(admin.clone(), &name).get("api").await.unwrap();
    assert!(image(&api).unwrap().ends_with(&"b".repeat(40)));
    let after_push = jobs.list(&list).await.unwrap().items;
    assert_eq!(names(&after_push), ["seed-1"]);
    assert_eq!(after_push[0].metadata.uid, seed.metadata.uid, "the same Job: not run again");

    // reset-db: a new database and a new seed; the old ones go.
    let record = engine.store.reconcile_record(id).await.unwrap().unwrap();
    let actor = Actor::Command { login: "dev".into() };
    actions::act(&engine.store, &engine.policy, &record, Action::ResetDatabase, &actor, 3).await.unwrap();
    assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Ready));
    let after_reset = jobs.list(&list).await.unwrap().items;
    assert_eq!(names(&after_reset), ["seed-2"]);
    assert!(complete(&after_reset[0]));
    let sets = Api::<StatefulSet>::namespaced(admin.clone(), &name).list(&list).await.unwrap().items;
    assert_eq!(names(&sets), ["database-2"]);
    let note = engine.store.reconcile_record(id).await.unwrap().unwrap().note.unwrap();
    assert!(note.contains("database reset (generation 2) by @dev"), "{note}");

    engine
        .store
        .record_environment(&pushed, EnvironmentState::Deleting, Some("closed"), &Cause::Previewd)
        .await
        .unwrap();
    assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Deleted));
    assert!(Api::<Namespace>::all(admin).get_opt(&name).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_seed_fails_the_environment_naming_the_job() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let store = Store::connect(&db.url.as_str().into()).await.unwrap();
    let delays = PodDelays { seed: Duration::from_millis(500), seed_fails: true, ..PodDelays::default() };
    let templates = templates_with_delays(delays).unwrap();
    let engine = engine(store, APP, policy(""), templates.path()).await;
    let pr = pr('c');
    let id = engine.store.record_environment(&pr, EnvironmentState::Pending, None, &Cause::Previewd).await.unwrap().id;
    assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Failed));
    let env = engine.store.reconcile_record(id).await.unwrap().unwrap();
    let _cleanup = TestNamespace::adopt(env.name.as_deref().unwrap()).await.unwrap();
    let reason = env.reason.unwrap();
    assert!(reason.starts_with("job `seed-1`: the job failed: BackoffLimitExceeded"), "{reason}");
    assert!(reason.contains("/preview reset-db"), "{reason}");
    assert_eq!(previewd_environments::hints::hint(&reason).map(|h| h.cause), Some("job"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_on_a_volume_binds_and_teardown_removes_the_volume() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let store = Store::connect(&db.url.as_str().into()).await.unwrap();
    let admin = admin_client().await.unwrap();
    // Registry credentials in the platform's namespace, given to every environment.
    let source: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(admin.clone(), previewd_e2e::cluster::SOURCE_NAMESPACE);
    let credentials = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "regcred"},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": "{\"auths\": {\"registry.preview.test\": {\"auth\": \"dGVzdDp0ZXN0\"}}}"}});
    source
        .patch("regcred", &kube::api::PatchParams::apply("test").force(), &kube::api::Patch::Apply(credentials))
        .await
        .unwrap();
    let mut policy = policy("database: { storage: volume, storage_class: preview-standard, size: 1Gi }\n");
    policy.secrets.image_pull = vec!["regcred".to_owned()];
    let engine = engine(store, APP, policy, &Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates")).await;
    let pr = pr('d');
    let (id, name, _cleanup) = open(&engine, &pr).await;
    let account =
        Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(admin.clone(), &name).get("app").await.unwrap();
    assert_eq!(account.image_pull_secrets.unwrap()[0].name, "regcred");
    let copied =
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(admin.clone(), &name).get_metadata("regcred").await;
    assert!(copied.is_ok(), "the registry credentials are copied into the environment");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), &name);
    let claim = claims.get("data-database-1-0").await.unwrap();
    assert_eq!(claim.status.and_then(|s| s.phase).as_deref(), Some("Bound"));
    let volume = claim.spec.and_then(|s| s.volume_name).unwrap();
    engine.store.record_environment(&pr, EnvironmentState::Deleting, Some("closed"), &Cause::Previewd).await.unwrap();
    assert_eq!(converge(&engine, id).await, Outcome::Settled(EnvironmentState::Deleted));
    assert!(Api::<Namespace>::all(admin.clone()).get_opt(&name).await.unwrap().is_none(), "namespace gone");
    // The claim went with the namespace; the volume is no longer bound to it.
    let pv = Api::<k8s_openapi::api::core::v1::PersistentVolume>::all(admin).get(&volume).await.unwrap();
    let bound_to = pv.spec.and_then(|s| s.claim_ref).and_then(|c| c.namespace);
    assert_ne!(bound_to.as_deref(), Some(name.as_str()), "volume {volume} still claimed by the environment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_routes_are_accepted_by_the_real_api_server() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let store = Store::connect(&db.url.as_str().into()).await.unwrap();
    let policy =
        policy("routing: gateway\ngateway: { parent_refs: [{ namespace: previewd-gateway, name: previews }] }\n");
    let engine = engine(store, APP, policy, &Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates")).await;
    let (_, name, _cleanup) = open(&engine, &pr('e')).await;
    let admin = admin_client().await.unwrap();
    let resource = previewd_environments::kinds::Kind::HttpRoute.api().resource();
    let routes: Api<kube::api::DynamicObject> = Api::namespaced_with(admin, &name, &resource);
    let listed = routes.list(&ListParams::default()).await.unwrap().items;
    let mut hosts: Vec<String> =
        listed.iter().map(|r| r.data["spec"]["hostnames"][0].as_str().unwrap().to_owned()).collect();
    hosts.sort();
    assert_eq!(hosts, [format!("api--{name}.preview.test"), format!("{name}.preview.test")]);
}
