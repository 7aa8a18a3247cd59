//! The Kubernetes adapter against the real control plane, as previewd's least-privilege
//! ServiceAccount (the rules the Helm chart grants).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use previewd_e2e::cluster::{
    READ_CLUSTER_ROLE, SOURCE_NAMESPACE, TestNamespace, admin_client, environment_name, previewd_client,
    settled_rollout, torn_down, unique_name,
};
use previewd_environments::cluster::{Cluster, READ_BINDING, Rollout, RolloutFailure, Teardown, WorkloadFailure};
use previewd_environments::kinds::Kind;
use previewd_environments::render::{Manifest, Ownership, Renderer};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

fn renderer() -> Renderer {
    Renderer::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates")).unwrap()
}

fn context(name: &str, replicas: u32, quota_cpu: &str) -> Value {
    previewd_e2e::fixtures::one_service_context(json!({
        "name": name, "host": format!("{name}.preview.test"), "url": format!("https://{name}.preview.test"),
        "repo": {"id": 42, "owner": "octo", "name": "app"}, "pr": 7,
        "head_sha": "0123456789abcdef0123456789abcdef01234567",
        "image": "registry.preview.test/octo/app:0123456789ab", "port": 8080, "replicas": replicas,
        "env": {"GREETING": "hello"}, "platform_secrets": [], "generated_secrets": ["session-key"],
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}},
        "quota": {"cpu": quota_cpu, "memory": "1Gi", "pods": 10},
        "limit_range": {"default_request": {"cpu": "50m", "memory": "32Mi"}, "default_limit": {"cpu": "100m", "memory": "64Mi"}, "max": {"cpu": "1", "memory": "512Mi"}},
        "health_check_path": "/healthz", "template": "web",
        "ingress": {"class_name": "nginx", "controller_namespace": "ingress-nginx", "tls_secret_name": null, "annotations": {}},
        "egress_cidrs": [], "from_fork": false, "expires_at": "2026-12-01T12:00:00Z"
    }))
}

struct Env {
    cluster: Cluster,
    owner: Ownership,
    _cleanup: TestNamespace,
}

async fn environment(prefix: &str) -> Env {
    let name = environment_name(prefix);
    let cluster = Cluster::new(previewd_client().await.unwrap(), READ_CLUSTER_ROLE);
    let cleanup = TestNamespace::adopt(&name).await.unwrap();
    Env {
        cluster,
        owner: Ownership { instance: "test".into(), environment: name, repo_id: 42, pr: 7 },
        _cleanup: cleanup,
    }
}

fn render(env: &Env, replicas: u32, quota_cpu: &str) -> Vec<Manifest> {
    renderer().render("web", &context(&env.owner.environment, replicas, quota_cpu), &env.owner).unwrap()
}

/// What a write would change: generations of objects with a status (status updates by
/// controllers do not count), resource versions of the others.
async fn versions(env: &Env) -> Vec<String> {
    let admin = admin_client().await.unwrap();
    let ns = &env.owner.environment;
    let deployment = Api::<Deployment>::namespaced(admin.clone(), ns).get("app").await.unwrap();
    let account =
        Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(admin.clone(), ns).get("app").await.unwrap();
    let limits =
        Api::<k8s_openapi::api::core::v1::LimitRange>::namespaced(admin.clone(), ns).get("environment").await.unwrap();
    let policy = Api::<k8s_openapi::api::networking::v1::NetworkPolicy>::namespaced(admin, ns)
        .get("default-deny")
        .await
        .unwrap();
    vec![
        format!("deployment generation {:?}", deployment.metadata.generation),
        format!("service account {:?}", account.metadata.resource_version),
        format!("limit range {:?}", limits.metadata.resource_version),
        format!("network policy {:?}", policy.metadata.resource_version),
    ]
}

#[tokio::test]
async fn an_environment_is_applied_rolls_out_and_reapplying_changes_nothing() {
    let env = environment("apply").await;
    let manifests = render(&env, 1, "2");
    env.cluster.apply(&env.owner, &manifests).await.unwrap();
    let rollout = settled_rollout(&env.cluster, &env.owner.environment, Duration::from_secs(60)).await.unwrap();
    assert_eq!(rollout, Rollout::Complete);
    let admin = admin_client().await.unwrap();
    let namespace = Api::<Namespace>::all(admin.clone()).get(&env.owner.environment).await.unwrap();
    let labels = namespace.metadata.labels.unwrap();
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "previewd");

    let before = versions(&env).await;
    env.cluster.apply(&env.owner, &manifests).await.unwrap();
    assert_eq!(versions(&env).await, before, "re-applying an unchanged environment changed it");

    // The field manager is previewd's.
    let deployment = Api::<Deployment>::namespaced(admin, &env.owner.environment).get("app").await.unwrap();
    let managers: Vec<String> =
        deployment.metadata.managed_fields.unwrap().into_iter().filter_map(|f| f.manager).collect();
    assert!(managers.contains(&"previewd".to_owned()), "{managers:?}");
    torn_down(&env.cluster, &env.owner.environment, Duration::from_secs(60)).await.unwrap();
}

#[tokio::test]
async fn previewd_grants_itself_reads_in_the_environment_namespace_only() {
    let env = environment("reads").await;
    env.cluster.apply(&env.owner, &render(&env, 1, "2")).await.unwrap();
    let admin = admin_client().await.unwrap();
    let binding = Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(admin.clone(), &env.owner.environment)
        .get(READ_BINDING)
        .await
        .unwrap();
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(binding.role_ref.name, READ_CLUSTER_ROLE);
    let subjects = binding.subjects.unwrap();
    assert_eq!(subjects.len(), 1);
    let me: k8s_openapi::api::authentication::v1::SelfSubjectReview =
        Api::all(previewd_client().await.unwrap()).create(&PostParams::default(), &Default::default()).await.unwrap();
    let me = me.status.unwrap().user_info.unwrap().username.unwrap();
    assert!(me.starts_with("system:serviceaccount:"), "{me}");
    assert_eq!((subjects[0].kind.as_str(), subjects[0].name.as_str()), ("User", me.as_str()));
    assert_eq!(binding.metadata.labels.unwrap()["previewd.dev/environment"], env.owner.environment);
    // Reapplying leaves the binding as it is.
    env.cluster.apply(&env.owner, &render(&env, 1, "2")).await.unwrap();
    let again = Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(admin, &env.owner.environment)
        .get(READ_BINDING)
        .await
        .unwrap();
    assert_eq!(again.metadata.resource_version, binding.metadata.resource_version);
    // previewd reads in its namespace, and nowhere else.
    let previewd = previewd_client().await.unwrap();
    let params = kube::api::ListParams::default();
    Api::<ConfigMap>::namespaced(previewd.clone(), &env.owner.environment).list(&params).await.unwrap();
    for (what, result) in [
        ("cluster-wide", Api::<ConfigMap>::all(previewd.clone()).list(&params).await),
        ("in kube-system", Api::<ConfigMap>::namespaced(previewd.clone(), "kube-system").list(&params).await),
        ("in default", Api::<ConfigMap>::namespaced(previewd.clone(), "default").list(&params).await),
    ] {
        assert!(matches!(&result, Err(kube::Error::Api(s)) if s.code == 403), "list configmaps {what}: {result:?}");
    }
    torn_down(&env.cluster, &env.owner.environment, Duration::from_secs(60)).await.unwrap();
}

#[tokio::test]
async fn a_missing_read_cluster_role_fails_with_a_message_naming_it() {
    let mut env = environment("noread").await;
    env.cluster = Cluster::new(previewd_client().await.unwrap(), "previewd-no-such-role");
    let error = env.cluster.apply(&env.owner, &render(&env, 1, "2")).await.unwrap_err();
    assert!(!error.is_transient(), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("ClusterRole previewd-no-such-role (setting read_cluster_role) does not exist"),
        "{message}"
    );
}

#[tokio::test]
async fn objects_no_longer_rendered_are_pruned_and_deleted_ones_come_back() {
    let env = environment("prune").await;
    let manifests = render(&env, 1, "2");
    env.cluster.apply(&env.owner, &manifests).await.unwrap();
    let admin = admin_client().await.unwrap();
    let ingresses: Api<k8s_openapi::api::networking::v1::Ingress> =
        Api::namespaced(admin.clone(), &env.owner.environment);
    assert!(ingresses.get_opt("app").await.unwrap().is_some());

    let without_ingress: Vec<Manifest> = manifests.iter().filter(|m| m.kind != Kind::Ingress).cloned().collect();
    env.cluster.apply(&env.owner, &without_ingress).await.unwrap();
    assert!(ingresses.get_opt("app").await.unwrap().is_none(), "the ingress was pruned");

    // An object that is not ours in the same namespace is left alone.
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), &env.owner.environment);
    let foreign = ConfigMap {
        metadata: kube::api::ObjectMeta { name: Some("foreign".into()), ..Default::default() },
        ..Default::default()
    };
    config_maps.create(&PostParams::default(), &foreign).await.unwrap();

    // Drift: a deployment deleted by hand comes back with the next apply.
    let deployments: Api<Deployment> = Api::namespaced(admin, &env.owner.environment);
    deployments.delete("app", &DeleteParams::default()).await.unwrap();
    env.cluster.apply(&env.owner, &manifests).await.unwrap();
    assert!(deployments.get_opt("app").await.unwrap().is_some());
    assert!(ingresses.get_opt("app").await.unwrap().is_some());
    assert!(config_maps.get_opt("foreign").await.unwrap().is_some(), "foreign objects are not pruned");
    torn_down(&env.cluster, &env.owner.environment, Duration::from_secs(60)).await.unwrap();
}

#[tokio::test]
async fn a_quota_too_small_for_the_pods_is_reported_as_quota_exceeded() {
    let env = environment("quota").await;
    // The pod asks for 100m of CPU; the namespace may use 50m.
    env.cluster.apply(&env.owner, &render(&env, 1, "50m")).await.unwrap();
    let rollout = settled_rollout(&env.cluster, &env.owner.environment, Duration::from_secs(60)).await.unwrap();
    match rollout {
        Rollout::Failed(WorkloadFailure { workload, failure: RolloutFailure::QuotaExceeded(message), .. }) => {
            assert_eq!(workload, "app");
            assert!(message.contains("exceeded quota"), "{message}");
        }
        other => panic!("expected a quota failure, got {other:?}"),
    }
    torn_down(&env.cluster, &env.owner.environment, Duration::from_secs(60)).await.unwrap();
}

#[tokio::test]
async fn pods_that_break_pod_security_are_reported_as_refused_by_admission() {
    let env = environment("psa").await;
    let mut manifests = render(&env, 1, "2");
    let deployment = manifests.iter_mut().find(|m| m.kind == Kind::Deployment).unwrap();
    deployment.object["spec"]["template"]["spec"]["containers"][0]["securityContext"] = json!({"privileged": true});
    env.cluster.apply(&env.owner, &manifests).await.unwrap();
    let rollout = settled_rollout(&env.cluster, &env.owner.environment, Duration::from_secs(60)).await.unwrap();
    match rollout {
        Rollout::Failed(WorkloadFailure { failure: RolloutFailure::AdmissionRefused(message), .. }) => {
            assert!(message.contains("PodSecurity"), "{message}");
        }
        other => panic!("expected an admission failure, got {other:?}"),
    }
    torn_down(&env.cluster, &env.owner.environment, Duration::from_secs(60)).await.unwrap();
}

#[tokio::test]
async fn a_rollout_that_cannot_become_ready_stays_progressing_and_says_where_it_stands() {
    let env = environment("never").await;
    let mut manifests = render(&env, 1, "2");
    let deployment = manifests.iter_mut().find(|m| m.kind == Kind::Deployment).unwrap();
    // No node matches: the pod is never scheduled.
    deployment.object["spec"]["template"]["spec"]["nodeSelector"] = json!({"previewd.dev/no-such-node": "true"});
    env.cluster.apply(&env.owner, &manifests).await.unwrap();
    let rollout = settled_rollout(&env.cluster, &env.owner.environment, Duration::from_secs(3)).await.unwrap();
    // The deadline is the reconciler's (see `reconcile.rs`); the cluster only says how it stands.
    match rollout {
        Rollout::Progressing { workloads, detail } => {
            assert_eq!(workloads, ["deployment `app`"]);
            assert!(detail.contains("deployment `app`: 0 of 1 replicas available"), "{detail}");
        }
        other => panic!("expected it to be still progressing, got {other:?}"),
    }
    torn_down(&env.cluster, &env.owner.environment, Duration::from_secs(60)).await.unwrap();
}

#[tokio::test]
async fn generated_secrets_are_stable_and_platform_secrets_are_copied() {
    let env = environment("secrets").await;
    env.cluster.apply(&env.owner, &render(&env, 1, "2")).await.unwrap();
    let admin = admin_client().await.unwrap();
    let source: Api<Secret> = Api::namespaced(admin.clone(), SOURCE_NAMESPACE);
    let source_name = unique_name("db");
    let platform = Secret {
        metadata: kube::api::ObjectMeta { name: Some(source_name.clone()), ..Default::default() },
        string_data: Some([("PASSWORD".to_owned(), "from-the-platform".to_owned())].into()),
        ..Default::default()
    };
    source.create(&PostParams::default(), &platform).await.unwrap();
    let copied = env.cluster.read_platform_secret(SOURCE_NAMESPACE, &source_name).await.unwrap();

    let generated = vec!["session-key".to_owned()];
    env.cluster.sync_secrets(&env.owner, &generated, &[(source_name.clone(), copied.clone())]).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(admin, &env.owner.environment);
    let first = secrets.get("generated-session-key").await.unwrap().data.unwrap()["value"].clone();
    assert_eq!(first.0.len(), 64, "32 random bytes, hex");
    env.cluster.sync_secrets(&env.owner, &generated, &[(source_name.clone(), copied)]).await.unwrap();
    let second = secrets.get("generated-session-key").await.unwrap().data.unwrap()["value"].clone();
    assert_eq!(first, second, "a generated secret keeps its value across redeploys");
    let copy = secrets.get(&source_name).await.unwrap();
    assert_eq!(copy.data.unwrap()["PASSWORD"].0, b"from-the-platform");

    // Dropping both from the config prunes them.
    env.cluster.sync_secrets(&env.owner, &[], &[]).await.unwrap();
    assert!(secrets.get_opt("generated-session-key").await.unwrap().is_none());
    assert!(secrets.get_opt(&source_name).await.unwrap().is_none());
    source.delete(&source_name, &DeleteParams::default()).await.unwrap();
    torn_down(&env.cluster, &env.owner.environment, Duration::from_secs(60)).await.unwrap();
}

#[tokio::test]
async fn teardown_waits_until_the_namespace_is_gone_and_is_idempotent() {
    let env = environment("teardown").await;
    env.cluster.apply(&env.owner, &render(&env, 1, "2")).await.unwrap();
    assert!(env.cluster.owned_namespaces("test").await.unwrap().contains(&env.owner.environment));
    assert!(!env.cluster.owned_namespaces("another-installation").await.unwrap().contains(&env.owner.environment));
    assert_eq!(torn_down(&env.cluster, &env.owner.environment, Duration::from_secs(60)).await.unwrap(), Teardown::Gone);
    assert_eq!(env.cluster.namespace_terminating(&env.owner.environment).await.unwrap(), None);
    assert_eq!(torn_down(&env.cluster, &env.owner.environment, Duration::from_secs(60)).await.unwrap(), Teardown::Gone);
}

#[tokio::test]
async fn a_namespace_held_by_a_finalizer_is_reported_with_its_conditions() {
    let env = environment("stuck").await;
    env.cluster.apply(&env.owner, &render(&env, 1, "2")).await.unwrap();
    let admin = admin_client().await.unwrap();
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), &env.owner.environment);
    let held = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("held".into()),
            finalizers: Some(vec!["previewd.dev/test-hold".into()]),
            ..Default::default()
        },
        ..Default::default()
    };
    config_maps.create(&PostParams::default(), &held).await.unwrap();
    let outcome = torn_down(&env.cluster, &env.owner.environment, Duration::from_secs(15)).await.unwrap();
    match outcome {
        Teardown::Terminating { conditions, since } => {
            assert!(conditions.contains("previewd.dev/test-hold"), "{conditions}");
            assert!(since.is_some(), "a terminating namespace has a deletion timestamp");
        }
        Teardown::Gone => panic!("the namespace cannot be gone while the finalizer holds"),
    }
    assert_eq!(env.cluster.namespace_terminating(&env.owner.environment).await.unwrap(), Some(true));
    // Release it: the namespace then goes.
    let patch = json!({"metadata": {"finalizers": null}});
    config_maps.patch("held", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();
    assert_eq!(torn_down(&env.cluster, &env.owner.environment, Duration::from_secs(60)).await.unwrap(), Teardown::Gone);
}
