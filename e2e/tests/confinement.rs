//! previewd's own identity cannot be turned against the cluster (issue 12, section 2): what a
//! leaked token of the `previewd` ServiceAccount, or a template the platform team got wrong,
//! tries in order to get out of previewd's namespaces, each refused by the real API server
//! (RBAC and the admission policies of `e2e/controlplane/previewd-rbac.yaml`, which the chart
//! ships word for word). Every refusal is paired with the nearest request previewd really
//! makes, which succeeds, so that a refusal is the policy's and not a broken setup.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use previewd_e2e::cluster::{
    self, MANAGED_BY_LABEL, READ_CLUSTER_ROLE, TestNamespace, environment_name, unique_name, wait_until,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const RESTRICTED: (&str, &str) = ("pod-security.kubernetes.io/enforce", "restricted");
/// The base domain in the test cluster's admission policies (that of `e2e/fixtures/policy.yaml`).
const BASE_DOMAIN: &str = "preview.test";

async fn apply<K>(api: &Api<K>, name: &str, object: Value) -> kube::Result<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &PatchParams::apply("previewd").force(), &Patch::Apply(object)).await
}

/// The request was refused with 403 and a message containing `expected` (the policy's or
/// RBAC's own words, so the refusal is the one meant).
#[track_caller]
fn assert_refused<T: std::fmt::Debug>(what: &str, result: kube::Result<T>, expected: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {
            assert!(status.message.contains(expected), "{what}: refused, but not for {expected:?}: {}", status.message);
        }
        other => panic!("{what}: expected 403 Forbidden ({expected}), got {other:?}"),
    }
}

fn namespace(name: &str, labels: &[(&str, &str)]) -> Value {
    let labels: serde_json::Map<String, Value> =
        labels.iter().map(|(k, v)| ((*k).to_owned(), Value::from(*v))).collect();
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

/// A namespace previewd creates for an environment, as previewd: the positive control of
/// every test, and the place where previewd may write.
async fn own_namespace(previewd: &Client) -> TestNamespace {
    let name = environment_name("confine");
    let cleanup = TestNamespace::adopt(&name).await.unwrap();
    apply(&Api::<Namespace>::all(previewd.clone()), &name, namespace(&name, &[MANAGED_BY_LABEL, RESTRICTED]))
        .await
        .unwrap_or_else(|e| panic!("previewd could not create its namespace {name}: {e}"));
    cleanup
}

const PSA_MESSAGE: &str = "must enforce Pod Security restricted";

#[tokio::test]
async fn namespaces_without_restricted_pod_security_are_refused_on_create_and_update() {
    let previewd = cluster::previewd_client().await.unwrap();
    let namespaces: Api<Namespace> = Api::all(previewd.clone());
    let mut cleanups = Vec::new();
    for (what, labels) in [
        ("privileged", vec![MANAGED_BY_LABEL, ("pod-security.kubernetes.io/enforce", "privileged")]),
        ("baseline", vec![MANAGED_BY_LABEL, ("pod-security.kubernetes.io/enforce", "baseline")]),
        ("no enforce label", vec![MANAGED_BY_LABEL, ("pod-security.kubernetes.io/warn", "restricted")]),
        (
            "an old pinned version",
            vec![MANAGED_BY_LABEL, RESTRICTED, ("pod-security.kubernetes.io/enforce-version", "v1.0")],
        ),
    ] {
        let name = environment_name("psa");
        cleanups.push(TestNamespace::adopt(&name).await.unwrap());
        assert_refused(
            &format!("create a namespace with {what}"),
            apply(&namespaces, &name, namespace(&name, &labels)).await,
            PSA_MESSAGE,
        );
    }

    // Weakening its own namespace afterwards: by changing the label, by dropping it (a
    // server-side apply that no longer sets it, and a merge patch that removes it).
    let own = own_namespace(&previewd).await;
    let name = own.name();
    assert_refused(
        "make its own namespace privileged",
        apply(
            &namespaces,
            name,
            namespace(name, &[MANAGED_BY_LABEL, ("pod-security.kubernetes.io/enforce", "privileged")]),
        )
        .await,
        PSA_MESSAGE,
    );
    assert_refused(
        "drop enforce from its own namespace (apply)",
        apply(&namespaces, name, namespace(name, &[MANAGED_BY_LABEL])).await,
        PSA_MESSAGE,
    );
    let remove = json!({"metadata": {"labels": {RESTRICTED.0: null}}});
    assert_refused(
        "drop enforce from its own namespace (merge patch)",
        namespaces.patch(name, &PatchParams::default(), &Patch::Merge(&remove)).await,
        PSA_MESSAGE,
    );
    let admin = cluster::admin_client().await.unwrap();
    let labels = Api::<Namespace>::all(admin).get(name).await.unwrap().metadata.labels.unwrap();
    assert_eq!(labels[RESTRICTED.0], "restricted");
    // What previewd does on every reconcile still works: apply the namespace unchanged, and
    // with the labels the renderer forces.
    let forced: Vec<(&str, &str)> =
        [MANAGED_BY_LABEL].into_iter().chain(previewd_environments::render::POD_SECURITY_LABELS).collect();
    apply(&namespaces, name, namespace(name, &forced)).await.unwrap();
}

#[tokio::test]
async fn namespaces_with_names_previewd_would_not_generate_are_refused() {
    let previewd = cluster::previewd_client().await.unwrap();
    let namespaces: Api<Namespace> = Api::all(previewd.clone());
    let mut cleanups = Vec::new();
    for name in [
        unique_name("squat"),
        format!("kube-{}", unique_name("x")),
        format!("{}-pr-1-ABCDEF", unique_name("upper")),
        format!("{}-pr-x-abcdef", unique_name("nonumber")),
        format!("{}-pr-1-abcdef0", unique_name("longhash")),
    ] {
        cleanups.push(TestNamespace::adopt(&name).await.unwrap());
        let result = apply(&namespaces, &name, namespace(&name, &[MANAGED_BY_LABEL, RESTRICTED])).await;
        // Upper case never gets as far as admission: the API server refuses it as invalid.
        if name.contains("ABCDEF") {
            assert!(matches!(&result, Err(kube::Error::Api(s)) if s.code == 422), "{name}: {result:?}");
        } else {
            assert_refused(
                &format!("create namespace {name}"),
                result,
                "named <repository>-pr-<number>-<6 hex digits>",
            );
        }
    }
    // The names previewd generates are accepted (own_namespace uses one).
    own_namespace(&previewd).await;
}

#[tokio::test]
async fn a_privileged_host_path_pod_cannot_be_had_through_previewds_namespace() {
    let previewd = cluster::previewd_client().await.unwrap();
    let admin = cluster::admin_client().await.unwrap();
    let own = own_namespace(&previewd).await;
    let name = own.name();
    // The only way to such a pod is a namespace that admits it, which previewd cannot make.
    assert_refused(
        "make its namespace privileged",
        apply(
            &Api::<Namespace>::all(previewd.clone()),
            name,
            namespace(name, &[MANAGED_BY_LABEL, ("pod-security.kubernetes.io/enforce", "privileged")]),
        )
        .await,
        PSA_MESSAGE,
    );
    // previewd creates no pods itself; a Deployment asking for root on the node is accepted,
    // and its pods are refused by Pod Security.
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "root"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "root"}},
            "template": {"metadata": {"labels": {"app": "root"}}, "spec": {
                "hostPID": true,
                "containers": [{"name": "root", "image": "registry.invalid/root:1",
                                "securityContext": {"privileged": true},
                                "volumeMounts": [{"name": "host", "mountPath": "/host"}]}],
                "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
            }},
        },
    });
    apply(&Api::<Deployment>::namespaced(previewd.clone(), name), "root", deployment).await.unwrap();
    let replica_sets: Api<ReplicaSet> = Api::namespaced(admin.clone(), name);
    let message = wait_until(Duration::from_secs(60), "the replica set to report its pods refused", || async {
        let listed = replica_sets.list(&ListParams::default()).await?;
        Ok(listed.items.iter().flat_map(|rs| rs.status.iter().flat_map(|s| s.conditions.iter().flatten())).find_map(
            |c| (c.type_ == "ReplicaFailure" && c.status == "True").then(|| c.message.clone().unwrap_or_default()),
        ))
    })
    .await
    .unwrap();
    assert!(message.contains("violates PodSecurity \"restricted:latest\""), "{message}");
    assert!(message.contains("hostPath") && message.contains("privileged"), "{message}");
    let pods = Api::<Pod>::namespaced(admin, name).list(&ListParams::default()).await.unwrap();
    assert!(
        pods.items.is_empty(),
        "a pod exists: {:?}",
        pods.items.iter().map(|p| &p.metadata.name).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn services_other_than_plain_cluster_ip_are_refused() {
    let previewd = cluster::previewd_client().await.unwrap();
    let own = own_namespace(&previewd).await;
    let services: Api<Service> = Api::namespaced(previewd.clone(), own.name());
    let service = |name: &str, spec: Value| {
        let mut spec = spec;
        spec["ports"] = json!([{"port": 80, "targetPort": 8080}]);
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
    };
    for (name, spec, expected) in [
        ("nodeport", json!({"type": "NodePort"}), "of type ClusterIP"),
        ("loadbalancer", json!({"type": "LoadBalancer"}), "of type ClusterIP"),
        ("external", json!({"type": "ExternalName", "externalName": "example.com"}), "of type ClusterIP"),
        ("externalips", json!({"type": "ClusterIP", "externalIPs": ["192.0.2.99"]}), "externalIPs"),
        ("defaulted-externalips", json!({"externalIPs": ["192.0.2.99"]}), "externalIPs"),
    ] {
        assert_refused(&format!("create Service {name}"), apply(&services, name, service(name, spec)).await, expected);
    }
    // What previewd renders: ClusterIP, set or defaulted; and turning one into a NodePort later
    // is refused too.
    apply(&services, "app", service("app", json!({"selector": {"app": "app"}}))).await.unwrap();
    apply(&services, "explicit", service("explicit", json!({"type": "ClusterIP"}))).await.unwrap();
    assert_refused(
        "change a ClusterIP Service into a NodePort",
        apply(&services, "app", service("app", json!({"selector": {"app": "app"}, "type": "NodePort"}))).await,
        "of type ClusterIP",
    );
}

#[tokio::test]
async fn ingresses_serve_only_the_environments_own_host() {
    let previewd = cluster::previewd_client().await.unwrap();
    let own = own_namespace(&previewd).await;
    let host = format!("{}.{BASE_DOMAIN}", own.name());
    let ingresses: Api<Ingress> = Api::namespaced(previewd.clone(), own.name());
    let backend = json!({"service": {"name": "app", "port": {"number": 80}}});
    let rule = |host: Option<&str>| {
        let mut rule = json!({"http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}});
        if let Some(host) = host {
            rule["host"] = host.into();
        }
        rule
    };
    let ingress = |name: &str, annotations: Value, spec: Value| {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
               "metadata": {"name": name, "annotations": annotations}, "spec": spec})
    };
    let another_environment = format!("{}.{BASE_DOMAIN}", environment_name("other"));
    let wildcard = format!("*.{BASE_DOMAIN}");
    for (name, annotations, spec, expected) in [
        ("foreign", json!({}), json!({"rules": [rule(Some("login.example.com"))]}), "must be for host"),
        ("another-environment", json!({}), json!({"rules": [rule(Some(&another_environment))]}), "must be for host"),
        ("base-domain", json!({}), json!({"rules": [rule(Some(BASE_DOMAIN))]}), "must be for host"),
        ("wildcard", json!({}), json!({"rules": [rule(Some(&wildcard))]}), "must be for host"),
        ("two-labels", json!({}), json!({"rules": [rule(Some(&format!("a.{host}")))]}), "must be for host"),
        // A service's host must end with this environment's own -pr-<n>-<hash>.
        (
            "another-environments-service",
            json!({}),
            json!({"rules": [rule(Some(&format!("api--{another_environment}")))]}),
            "must be for host",
        ),
        (
            "service-two-labels",
            json!({}),
            json!({"rules": [rule(Some(&format!("a.api--{host}")))]}),
            "must be for host",
        ),
        ("hostless", json!({}), json!({"rules": [rule(None)]}), "must be for host"),
        ("own-and-hostless", json!({}), json!({"rules": [rule(Some(&host)), rule(None)]}), "must be for host"),
        ("default-backend", json!({}), json!({"defaultBackend": backend}), "default backend"),
        (
            "default-backend-and-rule",
            json!({}),
            json!({"defaultBackend": backend, "rules": [rule(Some(&host))]}),
            "default backend",
        ),
        (
            "foreign-tls",
            json!({}),
            json!({"tls": [{"hosts": ["login.example.com"], "secretName": "x"}], "rules": [rule(Some(&host))]}),
            "TLS hosts",
        ),
        (
            "tls-without-hosts",
            json!({}),
            json!({"tls": [{"secretName": "x"}], "rules": [rule(Some(&host))]}),
            "TLS hosts",
        ),
        (
            "foreign-dns-record",
            json!({"external-dns.alpha.kubernetes.io/hostname": format!("{host},login.example.com")}),
            json!({"rules": [rule(Some(&host))]}),
            "external-dns may only publish",
        ),
    ] {
        assert_refused(
            &format!("create Ingress {name}"),
            apply(&ingresses, name, ingress(name, annotations, spec)).await,
            expected,
        );
    }
    // What previewd renders: its own host, with TLS and the external-dns record for it.
    let own_ingress = ingress(
        "app",
        json!({"external-dns.alpha.kubernetes.io/hostname": host}),
        json!({"tls": [{"hosts": [host], "secretName": "wildcard"}], "rules": [rule(Some(&host))]}),
    );
    apply(&ingresses, "app", own_ingress).await.unwrap();
    // A service's own host, <service>--<environment> (naming::service_label).
    let service_host = format!("api--{host}");
    let service_ingress = ingress(
        "api",
        json!({"external-dns.alpha.kubernetes.io/hostname": service_host}),
        json!({"tls": [{"hosts": [service_host], "secretName": "wildcard"}], "rules": [rule(Some(&service_host))]}),
    );
    apply(&ingresses, "api", service_ingress).await.unwrap();
    // Moving it to another host later is refused too.
    assert_refused(
        "move its Ingress to a foreign host",
        apply(&ingresses, "app", ingress("app", json!({}), json!({"rules": [rule(Some("login.example.com"))]}))).await,
        "must be for host",
    );
}

/// Objects whose contents previewd must not read: an admin's ConfigMap, pod and Service in a
/// namespace previewd does not own.
async fn foreign_objects(admin: &Client) -> TestNamespace {
    let other = TestNamespace::create("foreign", &[]).await.unwrap();
    let ns = other.name();
    apply(
        &Api::<ConfigMap>::namespaced(admin.clone(), ns),
        "settings",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
               "data": {"password": "hunter2"}}),
    )
    .await
    .unwrap();
    apply(
        &Api::<Service>::namespaced(admin.clone(), ns),
        "web",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"ports": [{"port": 80}]}}),
    )
    .await
    .unwrap();
    Api::<Pod>::namespaced(admin.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "web"},
                "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1",
                                         "env": [{"name": "TOKEN", "value": "plaintext"}]}]},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    other
}

const NO_READ: &str = "cannot list resource";

#[tokio::test]
async fn previewd_reads_nothing_outside_its_own_namespaces() {
    let previewd = cluster::previewd_client().await.unwrap();
    let admin = cluster::admin_client().await.unwrap();
    let other = foreign_objects(&admin).await;
    let list = ListParams::default();

    assert_refused("list configmaps cluster-wide", Api::<ConfigMap>::all(previewd.clone()).list(&list).await, NO_READ);
    assert_refused("list pods cluster-wide", Api::<Pod>::all(previewd.clone()).list(&list).await, NO_READ);
    assert_refused("list services cluster-wide", Api::<Service>::all(previewd.clone()).list(&list).await, NO_READ);
    assert_refused(
        "list deployments cluster-wide",
        Api::<Deployment>::all(previewd.clone()).list(&list).await,
        NO_READ,
    );
    assert_refused(
        "list replica sets cluster-wide",
        Api::<ReplicaSet>::all(previewd.clone()).list(&list).await,
        NO_READ,
    );
    assert_refused(
        "list pods cluster-wide, metadata only",
        Api::<Pod>::all(previewd.clone()).list_metadata(&list).await,
        NO_READ,
    );
    for ns in ["kube-system", "default", other.name()] {
        assert_refused(
            &format!("list configmaps in {ns}"),
            Api::<ConfigMap>::namespaced(previewd.clone(), ns).list(&list).await,
            NO_READ,
        );
        assert_refused(
            &format!("list pods in {ns}"),
            Api::<Pod>::namespaced(previewd.clone(), ns).list(&list).await,
            NO_READ,
        );
        assert_refused(
            &format!("list services in {ns}"),
            Api::<Service>::namespaced(previewd.clone(), ns).list(&list).await,
            NO_READ,
        );
    }
    let ns = other.name();
    assert_refused(
        "get a configmap in another namespace",
        Api::<ConfigMap>::namespaced(previewd.clone(), ns).get("settings").await,
        "cannot get resource",
    );
    assert_refused(
        "get a pod in another namespace",
        Api::<Pod>::namespaced(previewd.clone(), ns).get("web").await,
        "cannot get resource",
    );
    assert_refused(
        "get kube-root-ca.crt in kube-system",
        Api::<ConfigMap>::namespaced(previewd.clone(), "kube-system").get("kube-root-ca.crt").await,
        "cannot get resource",
    );
    // A patch returns the object: an empty apply of someone else's ConfigMap is refused.
    assert_refused(
        "read a configmap by patching it",
        apply(
            &Api::<ConfigMap>::namespaced(previewd.clone(), ns),
            "settings",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}}),
        )
        .await,
        "only write in namespaces labelled",
    );
    assert_refused(
        "watch pods cluster-wide",
        Api::<Pod>::all(previewd.clone()).watch(&kube::api::WatchParams::default(), "0").await.map(drop),
        "cannot watch resource",
    );

    // In its own namespace previewd reads, once it has bound its read role there.
    let own = own_namespace(&previewd).await;
    let pods: Api<Pod> = Api::namespaced(previewd.clone(), own.name());
    assert_refused("list pods in its namespace before binding its reads", pods.list(&list).await, NO_READ);
    let bindings: Api<RoleBinding> = Api::namespaced(previewd.clone(), own.name());
    let me = user(&username(&previewd).await);
    apply(&bindings, "previewd-read", read_binding("previewd-read", READ_CLUSTER_ROLE, &[me])).await.unwrap();
    wait_until(Duration::from_secs(10), "its reads in its namespace", || async { Ok(pods.list(&list).await.ok()) })
        .await
        .unwrap();
    Api::<ConfigMap>::namespaced(previewd.clone(), own.name()).list(&list).await.unwrap();
    // And still nothing elsewhere.
    assert_refused(
        "list pods elsewhere after binding",
        Api::<Pod>::namespaced(previewd, ns).list(&list).await,
        NO_READ,
    );
}

/// previewd's username, as the API server sees it.
async fn username(client: &Client) -> String {
    let review: k8s_openapi::api::authentication::v1::SelfSubjectReview =
        Api::all(client.clone()).create(&PostParams::default(), &Default::default()).await.unwrap();
    review.status.unwrap().user_info.unwrap().username.unwrap()
}

fn user(name: &str) -> Value {
    json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name})
}

/// A RoleBinding `name` of ClusterRole `role` to `subjects`.
fn read_binding(name: &str, role: &str, subjects: &[Value]) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
           "metadata": {"name": name},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
           "subjects": subjects})
}

#[tokio::test]
async fn previewd_binds_only_its_read_role_only_to_itself_only_in_its_namespaces() {
    let previewd = cluster::previewd_client().await.unwrap();
    let me = username(&previewd).await;
    let own = own_namespace(&previewd).await;
    let bindings: Api<RoleBinding> = Api::namespaced(previewd.clone(), own.name());
    let stranger = json!({"kind": "ServiceAccount", "name": "default", "namespace": "default"});
    let everyone = json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"});
    // RBAC lets anyone bind a role whose rules they hold: one with a single rule of previewd's.
    let admin = cluster::admin_client().await.unwrap();
    let subset = unique_name("previewd-test-subset");
    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(admin.clone());
    apply(
        &roles,
        &subset,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": subset},
               "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}]}),
    )
    .await
    .unwrap();
    let me_as_account = {
        let parts: Vec<&str> = me.split(':').collect();
        json!({"kind": "ServiceAccount", "name": parts[3], "namespace": parts[2]})
    };
    let mut outcomes = Vec::new();
    for (what, role, subjects, expected) in [
        // RBAC itself refuses roles previewd holds no `bind` on and whose rules it lacks.
        ("cluster-admin to itself", "cluster-admin", vec![user(&me)], "not currently held"),
        ("edit to itself", "edit", vec![user(&me)], "not currently held"),
        // Roles whose rules previewd already holds pass RBAC's check; the policy refuses them.
        (
            "a role of rules it holds to a stranger",
            subset.as_str(),
            vec![stranger.clone()],
            "may only bind ClusterRole",
        ),
        ("its read role to a stranger", READ_CLUSTER_ROLE, vec![stranger.clone()], "may only bind a role to itself"),
        ("its read role to everyone", READ_CLUSTER_ROLE, vec![everyone], "may only bind a role to itself"),
        ("its read role to itself and a stranger", READ_CLUSTER_ROLE, vec![user(&me), stranger.clone()], "itself"),
        ("its read role to itself as a ServiceAccount", READ_CLUSTER_ROLE, vec![me_as_account], "itself"),
        ("its read role to nobody", READ_CLUSTER_ROLE, vec![], "itself"),
    ] {
        // A name of its own for each: a binding wrongly accepted must not turn the next
        // attempt into a refused change of roleRef (which cannot change).
        let name = unique_name("binding");
        outcomes.push((what, apply(&bindings, &name, read_binding(&name, role, &subjects)).await, expected));
    }
    // The cluster-scoped role goes before any assertion can fail.
    roles.delete(&subset, &Default::default()).await.unwrap();
    for (what, outcome, expected) in outcomes {
        assert_refused(&format!("bind {what}"), outcome, expected);
    }
    // Its read role to itself, in a namespace it does not own.
    let other = foreign_objects(&admin).await;
    for ns in [other.name(), "kube-system", "default"] {
        assert_refused(
            &format!("bind its read role to itself in {ns}"),
            apply(
                &Api::namespaced(previewd.clone(), ns),
                "previewd-read",
                read_binding("previewd-read", READ_CLUSTER_ROLE, &[user(&me)]),
            )
            .await
            .map(|b: RoleBinding| drop(b)),
            "only write in namespaces labelled",
        );
    }
    // What previewd does: its read role to itself, in its namespace; then adding a subject
    // to that binding is refused.
    apply(&bindings, "previewd-read", read_binding("previewd-read", READ_CLUSTER_ROLE, &[user(&me)])).await.unwrap();
    assert_refused(
        "add a stranger to its read binding",
        apply(&bindings, "previewd-read", read_binding("previewd-read", READ_CLUSTER_ROLE, &[user(&me), stranger]))
            .await,
        "itself",
    );
}

/// Gateway API's HTTPRoute, which k8s-openapi does not describe.
fn routes(client: &Client, namespace: &str) -> Api<kube::api::DynamicObject> {
    let resource = kube::api::ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: "v1".into(),
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "HTTPRoute".into(),
        plural: "httproutes".into(),
    };
    Api::namespaced_with(client.clone(), namespace, &resource)
}

#[tokio::test]
async fn httproutes_serve_only_the_environments_hosts_from_the_platform_gateway_to_its_own_services() {
    let previewd = cluster::previewd_client().await.unwrap();
    let own = own_namespace(&previewd).await;
    let host = format!("{}.{BASE_DOMAIN}", own.name());
    let api = routes(&previewd, own.name());
    // The test cluster's Gateway (e2e/controlplane/cluster.sh), named in the routes policy.
    let gateway = json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "previewd-gateway", "name": "previews"});
    let route = |hostnames: Value, parent: &Value, backend: Value| {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web"},
               "spec": {"parentRefs": [parent], "hostnames": hostnames,
                        "rules": [{"backendRefs": [backend]}]}})
    };
    let own_backend = json!({"name": "web", "port": 80});
    let another_environment = format!("{}.{BASE_DOMAIN}", environment_name("other"));
    let other_gateway = json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "kube-system", "name": "internal"});
    for (what, object, expected) in [
        ("no hostnames", route(json!([]), &gateway, own_backend.clone()), "must be"),
        ("a foreign host", route(json!(["login.example.com"]), &gateway, own_backend.clone()), "must be"),
        ("another environment's host", route(json!([another_environment]), &gateway, own_backend.clone()), "must be"),
        ("a wildcard", route(json!([format!("*.{BASE_DOMAIN}")]), &gateway, own_backend.clone()), "must be"),
        ("another Gateway", route(json!([host]), &other_gateway, own_backend.clone()), "platform's Gateway"),
        (
            "a backend in another namespace",
            route(json!([host]), &gateway, json!({"name": "kubernetes", "namespace": "default", "port": 443})),
            "its own namespace",
        ),
    ] {
        assert_refused(&format!("create an HTTPRoute with {what}"), apply(&api, "web", object).await, expected);
    }
    // What previewd renders: the environment's hosts, the platform's Gateway, its own Service.
    let hosts = json!([host, format!("api--{host}")]);
    apply(&api, "web", route(hosts, &gateway, own_backend)).await.unwrap();
}

#[tokio::test]
async fn jobs_are_created_once_and_never_changed() {
    let previewd = cluster::previewd_client().await.unwrap();
    let own = own_namespace(&previewd).await;
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(previewd.clone(), own.name());
    let job: k8s_openapi::api::batch::v1::Job = serde_json::from_value(json!({
        "metadata": {"name": "seed-1"},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "seed", "image": "registry.preview.test/x:1",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}}}
    }))
    .unwrap();
    // What previewd does (Cluster::start_jobs): create.
    jobs.create(&PostParams::default(), &job).await.unwrap();
    // A patch is not granted: a Job runs once, as created.
    assert_refused(
        "patch a Job",
        jobs.patch("seed-1", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}}))).await,
        "cannot patch resource \"jobs\"",
    );
}
