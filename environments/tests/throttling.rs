//! Transient answers of the real API server stay transient: a 429 from API Priority and
//! Fairness (and a server that cannot be reached) is retried later, with the wait the server
//! asked for, and never leaves an environment `Failed`.
//!
//! The 429s are the API server's own: a FlowSchema sends the PATCH calls (server-side apply) of
//! an identity made for the test to a priority level with no seats that rejects
//! ([`ThrottledIdentity`]); everyone else sharing the test cluster is served as usual.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use previewd_e2e::cluster::{READ_CLUSTER_ROLE, SOURCE_NAMESPACE, TestNamespace};
use previewd_e2e::database::{Backend, fresh};
use previewd_e2e::throttle::ThrottledIdentity;
use previewd_environments::cluster::{Cluster, ClusterError};
use previewd_environments::forge::FixedRepoConfig;
use previewd_environments::kube_client;
use previewd_environments::model::{EnvironmentState, PullRequest};
use previewd_environments::policy::Policy;
use previewd_environments::reconcile::{Engine, EngineSettings, Outcome, ReconcileError};
use previewd_environments::render::Renderer;
use previewd_environments::store::Store;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn policy() -> Policy {
    let text = include_str!("../../e2e/fixtures/policy.yaml").replace("previewd-platform-secrets", SOURCE_NAMESPACE);
    Policy::from_yaml(&text, "policy.yaml").unwrap()
}

/// The `.preview.yaml` of the fixtures without the platform secret (this identity's source
/// namespace may not hold it).
fn preview_yaml() -> String {
    include_str!("../../e2e/fixtures/preview.yaml").replace("secrets: [db-readonly]", "secrets: []")
}

async fn engine(url: &str, client: kube::Client) -> Engine {
    let store = Store::connect(&url.into()).await.unwrap();
    store.migrate().await.unwrap();
    let policy = policy();
    Engine {
        store,
        cluster: Cluster::new(client, READ_CLUSTER_ROLE),
        renderer: Renderer::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates")).unwrap(),
        dns: previewd_environments::dns::Dns::from_policy(&policy.dns, None).unwrap(),
        policy,
        forge: Arc::new(FixedRepoConfig::new(preview_yaml())),
        settings: EngineSettings {
            rollout_timeout: Duration::from_secs(60),
            teardown_timeout: Duration::from_secs(60),
            instance: format!("throttled-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            ..Default::default()
        },
        owner: "test".into(),
    }
}

fn pr() -> PullRequest {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    let id = 3_000_000 + i64::from(u16::from_le_bytes([bytes[0], bytes[1]]));
    previewd_e2e::fixtures::pull_request(id, "acme", "busy", 4)
}

/// The apply of a new environment is throttled: before, that 429 was a "rejection" and the
/// environment `Failed`. Now the reconcile ends with a transient error carrying the server's
/// Retry-After, the environment stays `Provisioning` and says why, and once the server serves
/// previewd again the next attempt makes it `Ready`.
#[tokio::test]
async fn a_throttled_apply_is_retried_later_and_the_environment_is_not_failed() {
    let identity = ThrottledIdentity::create("throttled", SOURCE_NAMESPACE).await.unwrap();
    let client = kube_client::connect(Some(identity.kubeconfig())).await.unwrap();
    let db = fresh(Backend::Sqlite).await.unwrap();
    let engine = engine(&db.url, client).await;
    let id = engine
        .store
        .record_environment(&pr(), EnvironmentState::Pending, None, &previewd_environments::model::Cause::Previewd)
        .await
        .unwrap()
        .id;

    identity.throttle(&["patch"]).await.unwrap();
    let error = engine.reconcile(id).await.unwrap_err();
    let ReconcileError::Cluster(cluster) = &error else { panic!("expected a cluster error, got {error:?}") };
    assert!(
        matches!(cluster, ClusterError::Unavailable { code: 429, .. }),
        "the API server's 429 is classed as unavailable, not rejected: {cluster:?}"
    );
    assert!(cluster.is_transient(), "{cluster}");
    let after = error.retry_after().expect("the Retry-After of the API server's answer");
    assert!(after >= Duration::from_secs(1), "{after:?}");
    let env = engine.store.reconcile_record(id).await.unwrap().unwrap();
    let name = env.name.clone().expect("the environment's name is recorded before the apply");
    let _cleanup = TestNamespace::adopt(&name).await.unwrap();
    assert_eq!(env.state, "Provisioning", "not Failed: {:?}", env.reason);
    let reason = env.reason.unwrap_or_default();
    assert!(reason.contains("429") && reason.contains("trying again later"), "{reason}");

    identity.release().await.unwrap();
    assert_eq!(previewd_e2e::cluster::converge(&engine, id).await, Outcome::Settled(EnvironmentState::Ready));
}

/// A real 429 of the API server, classified: every call kind previewd makes through the
/// cluster module gets the same answer (here a server-side apply and a delete).
#[tokio::test]
async fn the_api_servers_429_carries_its_retry_after() {
    let identity = ThrottledIdentity::create("throttled", SOURCE_NAMESPACE).await.unwrap();
    let client = kube_client::connect(Some(identity.kubeconfig())).await.unwrap();
    identity.throttle(&["patch", "delete"]).await.unwrap();
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    let patch = kube::api::Patch::Apply(serde_json::json!({"apiVersion": "v1", "kind": "Namespace"}));
    let applied = namespaces.patch("never-created", &kube::api::PatchParams::apply("previewd"), &patch).await;
    let deleted = namespaces.delete("never-created", &kube::api::DeleteParams::default()).await;
    for (call, result) in [("apply", applied.map(drop)), ("delete", deleted.map(drop))] {
        let error = ClusterError::classify(call, result.unwrap_err());
        match &error {
            ClusterError::Unavailable { code: 429, message, retry_after: Some(after), .. } => {
                assert!(message.contains("Too many requests"), "{message}");
                assert!(*after >= Duration::from_secs(1), "{after:?}");
            }
            other => panic!("{call}: expected the 429 with its Retry-After, got {other:?}"),
        }
        assert!(error.is_transient());
    }
    // The rest of what the identity does is served: only the throttled verbs were affected.
    Cluster::new(client, READ_CLUSTER_ROLE).namespace_terminating("never-created").await.unwrap();
}

/// No API server at the address: a transport error, transient too.
#[tokio::test]
async fn an_api_server_that_cannot_be_reached_is_transient() {
    let closed = previewd_e2e::dns::closed_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nowhere.kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'https://{closed}', insecure-skip-tls-verify: true}}}}]\n\
             users: [{{name: u, user: {{token: not-a-real-token}}}}]\n\
             contexts: [{{name: c, context: {{cluster: c, user: u}}}}]\ncurrent-context: c\n"
        ),
    )
    .unwrap();
    let cluster = Cluster::new(kube_client::connect(Some(&path)).await.unwrap(), READ_CLUSTER_ROLE);
    let error = cluster.namespace_terminating("anything").await.unwrap_err();
    assert!(matches!(error, ClusterError::Unreachable { .. }), "{error:?}");
    assert!(error.is_transient() && error.retry_after().is_none(), "{error}");
    assert!(!error.to_string().contains("not-a-real-token"), "{error}");
}
