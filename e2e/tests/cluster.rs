//! Proof that the test control plane (`e2e/controlplane/`) behaves like a real cluster in
//! the ways previewd depends on: scheduling and rollouts on kwok nodes, quota accounting,
//! Pod Security admission, namespace finalisation and least-privilege RBAC; and what
//! multi-service environments add: Gateway API validation, Jobs that take time or fail,
//! volumes that bind and are reclaimed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, Node, Pod, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use previewd_e2e::cluster::{
    self, GATEWAY_NAME, GATEWAY_NAMESPACE, MANAGED_BY_LABEL, READ_CLUSTER_ROLE, SOURCE_NAMESPACE, STORAGE_CLASS,
    TestNamespace, environment_name, unique_name, wait_until,
};
use previewd_e2e::fixtures::{POD_COMPLETE_DELAY_ANNOTATION, POD_FAIL_ANNOTATION};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Pod template that satisfies Pod Security `restricted`, as previewd's workloads must.
fn restricted_pod_spec() -> Value {
    json!({
        "securityContext": {"runAsNonRoot": true, "runAsUser": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "app",
            "image": "registry.invalid/previewd/app:1",
            "securityContext": {"allowPrivilegeEscalation": false,
                                "capabilities": {"drop": ["ALL"]}},
        }],
    })
}

fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": restricted_pod_spec()},
        },
    })
}

async fn apply<K>(api: &Api<K>, name: &str, object: Value) -> kube::Result<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &PatchParams::apply("previewd-e2e").force(), &Patch::Apply(object)).await
}

fn is_forbidden<T: std::fmt::Debug>(result: &kube::Result<T>) -> bool {
    matches!(result, Err(kube::Error::Api(status)) if status.code == 403)
}

#[track_caller]
fn assert_forbidden<T: std::fmt::Debug>(what: &str, result: kube::Result<T>) {
    assert!(is_forbidden(&result), "{what}: expected 403 Forbidden, got {result:?}");
}

async fn wait_deployment_available(client: &Client, ns: &str, name: &str) -> Deployment {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    // A list, as previewd's rollout look (`Cluster::rollout`) makes: its read role has no `get`.
    wait_until(TIMEOUT, &format!("deployment {ns}/{name} to be available"), || async {
        let listed = api.list(&kube::api::ListParams::default().fields(&format!("metadata.name={name}"))).await?;
        let Some(d) = listed.items.into_iter().next() else { return Ok(None) };
        let status = d.status.clone().unwrap_or_default();
        let available =
            status.conditions.unwrap_or_default().iter().any(|c| c.type_ == "Available" && c.status == "True");
        Ok((available && status.available_replicas == Some(1)).then_some(d))
    })
    .await
    .unwrap()
}

/// Asks the API server whether `client` may do something, without trying it.
async fn can_i(client: &Client, verb: &str, group: &str, resource: &str, subresource: &str, ns: &str) -> bool {
    let review: SelfSubjectAccessReview = serde_json::from_value(json!({
        "spec": {"resourceAttributes": {"verb": verb, "group": group, "resource": resource,
                                        "subresource": subresource, "namespace": ns}}
    }))
    .unwrap();
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap()
        .allowed
}

#[tokio::test]
async fn deployment_is_scheduled_on_kwok_and_quota_usage_is_recorded() {
    let admin = cluster::admin_client().await.unwrap();
    let ns = TestNamespace::create("quota", &[]).await.unwrap();
    let ns = ns.name();

    // Quota on compute resources requires requests on every pod; the LimitRange supplies
    // them, which proves LimitRanger admission runs before ResourceQuota.
    apply(
        &Api::<LimitRange>::namespaced(admin.clone(), ns),
        "defaults",
        json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "defaults"},
               "spec": {"limits": [{"type": "Container",
                                     "defaultRequest": {"cpu": "100m", "memory": "64Mi"},
                                     "default": {"cpu": "200m", "memory": "128Mi"}}]}}),
    )
    .await
    .unwrap();
    let quotas: Api<ResourceQuota> = Api::namespaced(admin.clone(), ns);
    apply(
        &quotas,
        "env",
        json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "env"},
               "spec": {"hard": {"pods": "5", "requests.cpu": "1", "requests.memory": "1Gi"}}}),
    )
    .await
    .unwrap();
    // Until the resourcequota controller has computed status, admission refuses pods.
    wait_until(TIMEOUT, "the quota's status to be computed", || async {
        Ok(quotas.get("env").await?.status.and_then(|s| s.used))
    })
    .await
    .unwrap();

    apply(&Api::<Deployment>::namespaced(admin.clone(), ns), "web", deployment("web")).await.unwrap();
    wait_deployment_available(&admin, ns, "web").await;

    let pods = Api::<Pod>::namespaced(admin.clone(), ns).list(&ListParams::default().labels("app=web")).await.unwrap();
    assert_eq!(pods.items.len(), 1);
    let pod = &pods.items[0];
    let node_name = pod.spec.as_ref().unwrap().node_name.clone().unwrap();
    let node = Api::<Node>::all(admin.clone()).get(&node_name).await.unwrap();
    assert_eq!(
        node.metadata.annotations.unwrap().get("kwok.x-k8s.io/node").map(String::as_str),
        Some("fake"),
        "pod was scheduled on {node_name}, which is not a kwok node"
    );
    assert_eq!(pod.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
    let requests =
        pod.spec.as_ref().unwrap().containers[0].resources.as_ref().and_then(|r| r.requests.clone()).unwrap();
    assert_eq!(requests["cpu"].0, "100m", "LimitRange default was not applied");

    let used = wait_until(TIMEOUT, "quota usage to count the pod", || async {
        let used = quotas.get("env").await?.status.and_then(|s| s.used).unwrap_or_default();
        Ok((used.get("pods").map(|q| q.0.as_str()) == Some("1")).then_some(used))
    })
    .await
    .unwrap();
    assert_eq!(used["requests.cpu"].0, "100m");
    assert_eq!(used["requests.memory"].0, "64Mi");
}

#[tokio::test]
async fn pod_breaking_restricted_pod_security_is_refused() {
    let admin = cluster::admin_client().await.unwrap();
    let ns = TestNamespace::create("psa", &[("pod-security.kubernetes.io/enforce", "restricted")]).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), ns.name());

    let privileged: Pod = serde_json::from_value(json!({
        "metadata": {"name": "privileged"},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1",
                                 "securityContext": {"privileged": true}}]},
    }))
    .unwrap();
    let refused = pods.create(&PostParams::default(), &privileged).await;
    match &refused {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status.message.contains("violates PodSecurity \"restricted:latest\""),
                "unexpected refusal: {}",
                status.message
            );
        }
        other => panic!("privileged pod was not refused: {other:?}"),
    }

    // The same namespace admits a pod that meets the level, so the refusal above is
    // Pod Security's and not a blanket one.
    let compliant: Pod = serde_json::from_value(json!({
        "metadata": {"name": "compliant"},
        "spec": restricted_pod_spec(),
    }))
    .unwrap();
    pods.create(&PostParams::default(), &compliant).await.unwrap();
}

#[tokio::test]
async fn deleting_a_namespace_with_a_running_deployment_completes() {
    let admin = cluster::admin_client().await.unwrap();
    let ns = TestNamespace::create("teardown", &[]).await.unwrap();
    let name = ns.name().to_owned();

    apply(&Api::<Deployment>::namespaced(admin.clone(), &name), "web", deployment("web")).await.unwrap();
    apply(
        &Api::<ConfigMap>::namespaced(admin.clone(), &name),
        "settings",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
               "data": {"a": "b"}}),
    )
    .await
    .unwrap();
    wait_deployment_available(&admin, &name, "web").await;

    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let started = Instant::now();
    namespaces.delete(&name, &DeleteParams::default()).await.unwrap();
    // The namespace controller starts 5 s after the delete and, while pods are still
    // terminating, looks again after half their grace period (30 s by default); kwok
    // removes deleted pods at once. Measured here: 5-11 s.
    wait_until(Duration::from_secs(60), &format!("namespace {name} to be gone"), || async {
        match namespaces.get_opt(&name).await? {
            None => Ok(Some(())),
            Some(_) => Ok(None),
        }
    })
    .await
    .unwrap();
    eprintln!("namespace {name} was deleted in {:?}", started.elapsed());
}

#[tokio::test]
async fn least_privilege_identity_can_do_previewd_work_and_nothing_more() {
    let admin = cluster::admin_client().await.unwrap();
    let previewd = cluster::previewd_client().await.unwrap();

    // --- what previewd needs ---
    let env_ns = environment_name("env");
    let _cleanup = TestNamespace::adopt(&env_ns).await.unwrap();
    let namespaces: Api<Namespace> = Api::all(previewd.clone());
    apply(
        &namespaces,
        &env_ns,
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": env_ns, "labels": {
                   MANAGED_BY_LABEL.0: MANAGED_BY_LABEL.1,
                   "pod-security.kubernetes.io/enforce": "restricted"}}}),
    )
    .await
    .unwrap();
    // Its reads there, bound by previewd to itself (Cluster::grant_reads).
    let me = Api::<k8s_openapi::api::authentication::v1::SelfSubjectReview>::all(previewd.clone())
        .create(&PostParams::default(), &Default::default())
        .await
        .unwrap()
        .status
        .unwrap()
        .user_info
        .unwrap()
        .username
        .unwrap();
    assert!(me.starts_with("system:serviceaccount:"), "{me}");
    apply(
        &Api::<RoleBinding>::namespaced(previewd.clone(), &env_ns),
        "previewd-read",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "previewd-read"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": READ_CLUSTER_ROLE},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": me}]}),
    )
    .await
    .unwrap();
    namespaces
        .list(&ListParams::default().labels(&format!("{}={}", MANAGED_BY_LABEL.0, MANAGED_BY_LABEL.1)))
        .await
        .unwrap();

    let objects: Vec<(&str, Value)> = vec![
        (
            "quota",
            json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "env"},
                          "spec": {"hard": {"pods": "10"}}}),
        ),
        (
            "limits",
            json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "env"},
                           "spec": {"limits": [{"type": "Container",
                                                 "defaultRequest": {"cpu": "50m"}}]}}),
        ),
        (
            "netpol",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                           "metadata": {"name": "isolate"},
                           "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}),
        ),
        ("sa", json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app"}})),
        (
            "secret",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db",
                           "labels": {"previewd.dev/prune": "yes"}},
                           "stringData": {"url": "postgres://example"}}),
        ),
        (
            "configmap",
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": "settings"}, "data": {"a": "b"}}),
        ),
        (
            "service",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                            "spec": {"selector": {"app": "web"},
                                     "ports": [{"port": 80, "targetPort": 8080}]}}),
        ),
        (
            "ingress",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                            "metadata": {"name": "web"},
                            "spec": {"rules": [{"host": format!("{env_ns}.preview.test"), "http": {"paths": [{
                                "path": "/", "pathType": "Prefix",
                                "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
        ),
    ];
    for (what, object) in objects {
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        let result = match what {
            "quota" => {
                apply(&Api::<ResourceQuota>::namespaced(previewd.clone(), &env_ns), &name, object).await.map(drop)
            }
            "limits" => apply(&Api::<LimitRange>::namespaced(previewd.clone(), &env_ns), &name, object).await.map(drop),
            "netpol" => {
                apply(&Api::<NetworkPolicy>::namespaced(previewd.clone(), &env_ns), &name, object).await.map(drop)
            }
            "sa" => apply(&Api::<ServiceAccount>::namespaced(previewd.clone(), &env_ns), &name, object).await.map(drop),
            "secret" => apply(&Api::<Secret>::namespaced(previewd.clone(), &env_ns), &name, object).await.map(drop),
            "configmap" => {
                apply(&Api::<ConfigMap>::namespaced(previewd.clone(), &env_ns), &name, object).await.map(drop)
            }
            "service" => apply(&Api::<Service>::namespaced(previewd.clone(), &env_ns), &name, object).await.map(drop),
            "ingress" => apply(&Api::<Ingress>::namespaced(previewd.clone(), &env_ns), &name, object).await.map(drop),
            _ => unreachable!(),
        };
        result.unwrap_or_else(|e| panic!("previewd could not apply its {what}: {e}"));
    }
    apply(&Api::<Deployment>::namespaced(previewd.clone(), &env_ns), "web", deployment("web")).await.unwrap();
    // The read binding reaches the authorizer a moment after its creation.
    wait_deployment_available(&previewd, &env_ns, "web").await;
    // Pruning: list by label in its namespace.
    Api::<ConfigMap>::namespaced(previewd.clone(), &env_ns).list_metadata(&ListParams::default()).await.unwrap();
    // Diagnostics of a rollout.
    Api::<Pod>::namespaced(previewd.clone(), &env_ns).list(&ListParams::default()).await.unwrap();
    Api::<ReplicaSet>::namespaced(previewd.clone(), &env_ns).list(&ListParams::default()).await.unwrap();
    // Pruning secrets without reading them: by label, through deletecollection.
    Api::<Secret>::namespaced(previewd.clone(), &env_ns)
        .delete_collection(&DeleteParams::default(), &ListParams::default().labels("previewd.dev/prune=yes"))
        .await
        .unwrap();
    assert!(Api::<Secret>::namespaced(admin.clone(), &env_ns).get_opt("db").await.unwrap().is_none());

    // Reading the secrets it copies, in the source namespace.
    let source_secret = unique_name("copied");
    let source: Api<Secret> = Api::namespaced(admin.clone(), SOURCE_NAMESPACE);
    apply(
        &source,
        &source_secret,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": source_secret},
                 "stringData": {"token": "s3cret"}}),
    )
    .await
    .unwrap();
    let read = Api::<Secret>::namespaced(previewd.clone(), SOURCE_NAMESPACE).get(&source_secret).await;
    source.delete(&source_secret, &DeleteParams::default()).await.unwrap();
    read.unwrap();

    // --- what previewd must not do ---
    let other = TestNamespace::create("unrelated", &[]).await.unwrap();
    let other = other.name();
    apply(
        &Api::<Secret>::namespaced(admin.clone(), other),
        "private",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "private"},
                 "stringData": {"password": "hunter2"}}),
    )
    .await
    .unwrap();
    let their_secrets: Api<Secret> = Api::namespaced(previewd.clone(), other);
    assert_forbidden("get a secret in an unrelated namespace", their_secrets.get("private").await);
    assert_forbidden("list secrets in an unrelated namespace", their_secrets.list(&ListParams::default()).await);
    assert_forbidden(
        "get a secret in kube-system",
        Api::<Secret>::namespaced(previewd.clone(), "kube-system").get("any").await,
    );
    assert_forbidden(
        "list secrets in default",
        Api::<Secret>::namespaced(previewd.clone(), "default").list(&ListParams::default()).await,
    );
    assert_forbidden(
        "list secrets cluster-wide",
        Api::<Secret>::all(previewd.clone()).list(&ListParams::default()).await,
    );
    // A patch returns the object, so it must not work outside previewd's namespaces either.
    assert_forbidden(
        "apply a secret in an unrelated namespace",
        apply(
            &their_secrets,
            "private",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "private"}}),
        )
        .await,
    );
    assert_forbidden(
        "delete a secret in an unrelated namespace",
        their_secrets.delete("private", &DeleteParams::default()).await,
    );
    let _ = their_secrets.delete_collection(&DeleteParams::default(), &ListParams::default()).await;
    assert!(
        Api::<Secret>::namespaced(admin.clone(), other).get_opt("private").await.unwrap().is_some(),
        "previewd deleted a secret outside its namespaces"
    );
    assert_forbidden(
        "delete a config map in kube-system",
        Api::<ConfigMap>::namespaced(previewd.clone(), "kube-system")
            .delete("kube-root-ca.crt", &DeleteParams::default())
            .await,
    );
    let unlabelled = environment_name("unlabelled");
    assert_forbidden(
        "create a namespace without previewd's label",
        apply(
            &namespaces,
            &unlabelled,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": unlabelled}}),
        )
        .await,
    );
    assert_forbidden(
        "adopt kube-system by labelling it",
        apply(
            &namespaces,
            "kube-system",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system",
                     "labels": {MANAGED_BY_LABEL.0: MANAGED_BY_LABEL.1}}}),
        )
        .await,
    );
    assert_forbidden("delete an unrelated namespace", namespaces.delete(other, &DeleteParams::default()).await);
    assert_forbidden("list nodes", Api::<Node>::all(previewd.clone()).list(&ListParams::default()).await);
    assert_forbidden(
        "bind itself cluster-admin",
        Api::<ClusterRoleBinding>::all(previewd.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                "metadata": {"name": unique_name("escalate")},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "cluster-admin"},
                "subjects": [{"kind": "ServiceAccount", "name": "previewd",
                              "namespace": "previewd-system"}]}))
                .unwrap(),
            )
            .await,
    );
    for (verb, group, resource, subresource) in [
        ("create", "", "pods", "exec"),
        ("create", "", "pods", ""),
        ("create", "rbac.authorization.k8s.io", "roles", ""),
        ("create", "rbac.authorization.k8s.io", "clusterrolebindings", ""),
        ("escalate", "rbac.authorization.k8s.io", "clusterroles", ""),
        ("list", "", "secrets", ""),
        ("watch", "", "secrets", ""),
        ("create", "apiextensions.k8s.io", "customresourcedefinitions", ""),
        ("update", "", "namespaces", "finalize"),
    ] {
        assert!(
            !can_i(&previewd, verb, group, resource, subresource, &env_ns).await,
            "previewd may {verb} {resource}/{subresource} in its own namespace"
        );
    }

    // The rollout watch: Deployments and pods (metadata) in previewd's own namespace, through
    // its read binding there; nowhere else, and not cluster-wide.
    for (group, resource) in [("apps", "deployments"), ("", "pods")] {
        assert!(
            can_i(&previewd, "watch", group, resource, "", &env_ns).await,
            "previewd may watch {resource} in its namespace"
        );
        for elsewhere in ["kube-system", ""] {
            assert!(
                !can_i(&previewd, "watch", group, resource, "", elsewhere).await,
                "previewd may watch {resource} in `{elsewhere}` (empty: cluster-wide)"
            );
        }
    }

    // Teardown of an environment: previewd deletes its own namespace.
    namespaces.delete(&env_ns, &DeleteParams::default()).await.unwrap();
}

/// kwok's pod-ready stage takes its delay from the pod annotation
/// `pod-ready.stage.kwok.x-k8s.io/delay`: an annotated pod is Ready only after it, one without
/// the annotation at once. Readiness is observed through a watch, not by sleeping.
#[tokio::test]
async fn pod_ready_delay_comes_from_the_pod_annotation() {
    use kube::runtime::wait::await_condition;
    use previewd_e2e::fixtures::POD_READY_DELAY_ANNOTATION;

    let admin = cluster::admin_client().await.unwrap();
    let ns = TestNamespace::create("ready-delay", &[]).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), ns.name());
    let delay = Duration::from_secs(3);
    let pod = |name: &str, annotations: Value| {
        serde_json::from_value::<Pod>(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": annotations},
            "spec": restricted_pod_spec(),
        }))
        .unwrap()
    };
    let started = Instant::now();
    pods.create(&PostParams::default(), &pod("slow", json!({POD_READY_DELAY_ANNOTATION: "3s"}))).await.unwrap();
    pods.create(&PostParams::default(), &pod("fast", json!({}))).await.unwrap();

    let ready_after = |name: &'static str| {
        let pods = pods.clone();
        async move {
            let ready = |p: Option<&Pod>| {
                p.and_then(|p| p.status.as_ref())
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            };
            tokio::time::timeout(TIMEOUT, await_condition(pods, name, ready))
                .await
                .unwrap_or_else(|_| panic!("pod {name} was not Ready within {TIMEOUT:?}"))
                .unwrap();
            started.elapsed()
        }
    };
    let (slow, fast) = tokio::join!(ready_after("slow"), ready_after("fast"));
    println!("pod without the annotation Ready after {fast:?}; annotated {delay:?}, Ready after {slow:?}");
    assert!(slow >= delay, "the annotated pod was Ready after {slow:?}, before its delay of {delay:?}");
    assert!(slow < delay + Duration::from_secs(20), "the annotated pod took {slow:?}");
    assert!(fast < delay, "the pod without the annotation took {fast:?}");
}

// --- Multi-service environments: Gateway API, Jobs, volumes -------------------------------

/// A Job whose pod runs the restricted pod spec once, with `annotations` on its pod.
fn job(name: &str, annotations: Value) -> Job {
    let mut spec = restricted_pod_spec();
    spec["restartPolicy"] = json!("Never");
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {"metadata": {"annotations": annotations}, "spec": spec},
        },
    }))
    .unwrap()
}

/// The phases the first pod of Job `job` goes through, in order (watched, so none is missed
/// while the pod spends time in it), until it is Succeeded or Failed; with the pod then.
async fn job_pod_phases(pods: &Api<Pod>, job: &str) -> (Vec<String>, Pod) {
    use futures::{StreamExt, TryStreamExt};
    use kube::runtime::{WatchStreamExt, watcher};

    let config = watcher::Config::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
    let mut stream = watcher(pods.clone(), config).applied_objects().boxed();
    let mut phases: Vec<String> = Vec::new();
    let watched = tokio::time::timeout(TIMEOUT, async {
        while let Some(pod) = stream.try_next().await.unwrap() {
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
            if phases.last() != Some(&phase) {
                phases.push(phase.clone());
            }
            if phase == "Succeeded" || phase == "Failed" {
                return pod;
            }
        }
        panic!("the watch of Job {job}'s pods ended");
    })
    .await;
    let pod = watched.unwrap_or_else(|_| panic!("Job {job}'s pod did not end within {TIMEOUT:?}; phases: {phases:?}"));
    (phases, pod)
}

fn pod_start_time(pod: &Pod) -> Time {
    pod.status.as_ref().and_then(|s| s.start_time.clone()).expect("the pod has no startTime")
}

/// The Gateway API CRDs are installed: the API server checks HTTPRoutes against their schema and
/// CEL rules, refusing a wildcard inside a hostname and a path that does not start with `/`,
/// and accepts a route attached to the platform's Gateway, which exists as previewd expects it.
#[tokio::test]
async fn api_server_validates_http_routes_for_the_platform_gateway() {
    let admin = cluster::admin_client().await.unwrap();

    let gateway =
        cluster::gateway_api(&admin, GATEWAY_NAMESPACE, "Gateway", "gateways").get(GATEWAY_NAME).await.unwrap_or_else(
            |e| panic!("the Gateway {GATEWAY_NAMESPACE}/{GATEWAY_NAME} is missing (cluster.sh up installs it): {e}"),
        );
    let listeners = gateway.data["spec"]["listeners"].as_array().unwrap();
    let listener =
        |name: &str| listeners.iter().find(|l| l["name"] == name).unwrap_or_else(|| panic!("no {name} listener"));
    assert_eq!(listener("https")["protocol"], "HTTPS");
    assert_eq!(listener("https")["hostname"], "*.preview.test");
    assert_eq!(listener("http")["protocol"], "HTTP");
    for l in listeners {
        assert_eq!(l["allowedRoutes"]["namespaces"]["from"], "All", "{l}");
    }
    // No Gateway controller runs: the Gateway keeps the conditions the API server defaults.
    let programmed = gateway.data["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Programmed"))
        .map(|c| c["status"].clone());
    assert_ne!(programmed, Some(json!("True")), "a Gateway controller programmed the Gateway");

    let ns = TestNamespace::create("httproute", &[]).await.unwrap();
    let routes = cluster::gateway_api(&admin, ns.name(), "HTTPRoute", "httproutes");
    let route = |name: &str, hostname: &str, path: &str| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name},
            "spec": {
                "parentRefs": [{"namespace": GATEWAY_NAMESPACE, "name": GATEWAY_NAME, "sectionName": "https"}],
                "hostnames": [hostname],
                "rules": [{
                    "matches": [{"path": {"type": "PathPrefix", "value": path}}],
                    "backendRefs": [{"name": "web", "port": 80}],
                }],
            },
        }))
        .unwrap()
    };
    let host = format!("{}.preview.test", ns.name());
    for (what, object) in [
        ("a wildcard inside the hostname", route("bad-host", "api.*.preview.test", "/")),
        ("a path that does not start with /", route("bad-path", &host, "api")),
    ] {
        match routes.create(&PostParams::default(), &object).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{what}: {status:?}");
                assert_eq!(status.reason, "Invalid", "{what}: {status:?}");
                println!("refused, {what}: {}", status.message);
            }
            other => panic!("an HTTPRoute with {what} was not refused: {other:?}"),
        }
    }
    let created = routes.create(&PostParams::default(), &route("web", &host, "/")).await.unwrap();
    assert_eq!(created.data["spec"]["parentRefs"][0]["name"], GATEWAY_NAME);
    assert_eq!(created.data["spec"]["hostnames"][0], json!(host));
}

/// kwok's pod-complete stage takes its delay from the pod annotation
/// `pod-complete.stage.kwok.x-k8s.io/delay`: a Job pod first becomes Running (pod-ready), and
/// Succeeded only that long after, when the Job controller marks the Job Complete.
#[tokio::test]
async fn job_completes_after_the_delay_in_its_pod_annotation() {
    let admin = cluster::admin_client().await.unwrap();
    let ns = TestNamespace::create("job-delay", &[]).await.unwrap();
    let jobs: Api<Job> = Api::namespaced(admin.clone(), ns.name());
    let pods: Api<Pod> = Api::namespaced(admin.clone(), ns.name());
    let delay = Duration::from_secs(2);

    let started = Instant::now();
    jobs.create(&PostParams::default(), &job("seed", json!({POD_COMPLETE_DELAY_ANNOTATION: "2s"}))).await.unwrap();
    let (phases, pod) = job_pod_phases(&pods, "seed").await;
    let job = cluster::wait_for_job_condition(&jobs, "seed", "Complete", TIMEOUT).await.unwrap();
    println!("phases {phases:?}; Job Complete after {:?}", started.elapsed());

    assert_eq!(phases.iter().filter(|p| *p == "Running").count(), 1, "{phases:?}");
    assert_eq!(phases.last().map(String::as_str), Some("Succeeded"), "{phases:?}");
    assert!(!phases.contains(&"Failed".to_owned()), "{phases:?}");
    // Server-side times (whole seconds, so a difference of 2 s or more is one of at least 2 s):
    // the pod's start is pod-ready's, the condition the Job controller's.
    let running = pod_start_time(&pod).0;
    let complete = cluster::job_condition(&job, "Complete").unwrap().last_transition_time.clone().unwrap().0;
    let took = Duration::try_from(complete.duration_since(running)).unwrap_or_default();
    println!("the pod started at {running}, the Job was Complete at {complete}: {took:?}");
    assert!(took >= delay, "the Job was Complete {took:?} after its pod started, before the delay of {delay:?}");
    assert!(took < delay + Duration::from_secs(20), "the Job took {took:?} after its pod started");
    let terminated = pod.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0]
        .state
        .as_ref()
        .and_then(|s| s.terminated.clone())
        .unwrap();
    assert_eq!((terminated.exit_code, terminated.reason.as_deref()), (0, Some("Completed")));
}

/// A Job pod annotated `pod-complete.stage.kwok.x-k8s.io/fail: "true"` fails as a container
/// exiting with status 1 would; with `backoffLimit: 0` the Job gets its Failed condition.
#[tokio::test]
async fn job_pod_annotated_to_fail_fails_its_job() {
    let admin = cluster::admin_client().await.unwrap();
    let ns = TestNamespace::create("job-fail", &[]).await.unwrap();
    let jobs: Api<Job> = Api::namespaced(admin.clone(), ns.name());
    let pods: Api<Pod> = Api::namespaced(admin.clone(), ns.name());

    let annotations = json!({POD_FAIL_ANNOTATION: "true", POD_COMPLETE_DELAY_ANNOTATION: "500ms"});
    jobs.create(&PostParams::default(), &job("seed", annotations)).await.unwrap();
    let (phases, pod) = job_pod_phases(&pods, "seed").await;
    let job = cluster::wait_for_job_condition(&jobs, "seed", "Failed", TIMEOUT).await.unwrap();

    assert_eq!(phases.last().map(String::as_str), Some("Failed"), "{phases:?}");
    assert!(phases.contains(&"Running".to_owned()), "the pod was never Running: {phases:?}");
    let status = pod.status.as_ref().unwrap();
    let terminated = status.container_statuses.as_ref().unwrap()[0].state.as_ref().unwrap().terminated.clone().unwrap();
    assert_eq!((terminated.exit_code, terminated.reason.as_deref()), (1, Some("Error")));
    let ready = status.conditions.as_ref().unwrap().iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "False");
    let failed = cluster::job_condition(&job, "Failed").unwrap();
    assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"), "{failed:?}");
    assert!(cluster::job_condition(&job, "Complete").is_none());
}

/// A database's StatefulSet with a claim of the StorageClass `preview-standard`: the
/// PersistentVolume controller binds the claim to a pre-provisioned volume, the scheduler places
/// the pod on a kwok node and kwok makes it Ready; deleting the namespace completes (the
/// protection controllers release the claim), and the volume is reclaimed for later tests.
#[tokio::test]
async fn statefulset_claim_binds_and_its_namespace_is_deleted() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    use kube::runtime::wait::await_condition;

    let admin = cluster::admin_client().await.unwrap();
    let ns = TestNamespace::create("volume", &[]).await.unwrap();
    let name = ns.name().to_owned();
    let mut spec = restricted_pod_spec();
    spec["containers"][0]["volumeMounts"] = json!([{"name": "data", "mountPath": "/var/lib/postgresql/data"}]);
    apply(
        &Api::<StatefulSet>::namespaced(admin.clone(), &name),
        "database",
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "database"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "database"}},
                "template": {"metadata": {"labels": {"app": "database"}}, "spec": spec},
                "volumeClaimTemplates": [{
                    "metadata": {"name": "data"},
                    "spec": {"storageClassName": STORAGE_CLASS, "accessModes": ["ReadWriteOnce"],
                             "resources": {"requests": {"storage": "1Gi"}}},
                }],
            },
        }),
    )
    .await
    .unwrap();

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), &name);
    let claim = wait_until(TIMEOUT, "the claim data-database-0 to be Bound", || async {
        let claim = claims.get_opt("data-database-0").await?;
        Ok(claim.filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")))
    })
    .await
    .unwrap();
    let claim_uid = claim.metadata.uid.clone().unwrap();
    let volume_name = claim.spec.as_ref().unwrap().volume_name.clone().unwrap();
    let volumes: Api<PersistentVolume> = Api::all(admin.clone());
    let volume = volumes.get(&volume_name).await.unwrap();
    assert_eq!(volume.spec.as_ref().unwrap().storage_class_name.as_deref(), Some(STORAGE_CLASS));

    let pods: Api<Pod> = Api::namespaced(admin.clone(), &name);
    let ready = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let pod = tokio::time::timeout(TIMEOUT, await_condition(pods, "database-0", ready))
        .await
        .unwrap_or_else(|_| panic!("pod database-0 was not Ready within {TIMEOUT:?}"))
        .unwrap()
        .unwrap();
    let node = pod.spec.as_ref().unwrap().node_name.clone().unwrap();
    assert!(node.starts_with("kwok-node-"), "database-0 was scheduled on {node}");

    // The namespace controller deletes the pod and the claim; the claim's finalizer
    // (kubernetes.io/pvc-protection) goes once no pod uses it.
    let took = cluster::delete_namespace_and_wait(&admin, &name, Duration::from_secs(90)).await.unwrap();
    println!("claim bound to {volume_name}, pod on {node}; namespace {name} deleted in {took:?}");

    // Released, then reclaimed by kwok's pv-reclaim stage: Available, or already bound by
    // another test's claim.
    wait_until(TIMEOUT, &format!("volume {volume_name} to be reclaimed"), || async {
        let volume = volumes.get(&volume_name).await?;
        let phase = volume.status.and_then(|s| s.phase).unwrap_or_default();
        let ours = volume.spec.and_then(|s| s.claim_ref).and_then(|r| r.uid).as_deref() == Some(claim_uid.as_str());
        Ok((!ours && (phase == "Available" || phase == "Bound")).then_some(()))
    })
    .await
    .unwrap();
}
