//! The Helm chart (`charts/previewd`): lint and render with the default and a production-like
//! values file, the values schema, its RBAC against the rules the test cluster binds to the
//! `previewd` ServiceAccount (`e2e/controlplane/previewd-rbac.yaml`, which previewd's
//! Kubernetes-facing tests run as), every granted rule against the code that uses it, and a
//! real `helm install` / `helm uninstall` on the test control plane.
//!
//! helm comes from `PREVIEWD_TEST_HELM`, else from the control plane's build cache
//! (`cluster.sh env`, built by `cluster.sh build` when missing). Without it the tests fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use previewd_e2e::cluster::{
    self, MANAGED_BY_LABEL, READ_CLUSTER_ROLE, TestNamespace, environment_name, unique_name, wait_until,
};
use previewd_e2e::helm::helm;
use previewd_environments::yaml::{self, Origin};
use serde_json::{Value, json};

// ------------------------------------------------------------------------------------------
// helpers
// ------------------------------------------------------------------------------------------

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn chart_dir() -> PathBuf {
    repo_root().join("charts/previewd")
}

fn production_values() -> PathBuf {
    chart_dir().join("ci/production-values.yaml")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// helm must succeed; returns its standard output.
fn helm_ok(args: &[&str]) -> String {
    let out = helm(args);
    assert!(out.status.success(), "helm {} failed:\n{}", args.join(" "), text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// The documents of a multi-document YAML stream, as JSON values (empty documents dropped).
fn documents(text: &str) -> Vec<Value> {
    yaml::documents(text, Origin::Platform).unwrap()
}

/// One YAML document as a JSON value.
fn parse(text: &str) -> Value {
    yaml::parse(text, Origin::Platform).unwrap().unwrap()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = of_kind(docs, kind).into_iter().filter(|d| d["metadata"]["name"] == name).collect();
    assert_eq!(found.len(), 1, "expected one {kind} {name}, found {}", found.len());
    found[0]
}

fn env_of(deployment: &Value) -> BTreeMap<String, Value> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e.get("value").or(e.get("valueFrom")).cloned().unwrap()))
        .collect()
}

// ------------------------------------------------------------------------------------------
// lint, template, schema
// ------------------------------------------------------------------------------------------

#[test]
fn lint_passes_with_default_and_every_ci_values_file() {
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    helm_ok(&["lint", "--strict", chart]);
    // Every values file of ci/ (service/tests/install.rs starts previewd on each).
    for entry in std::fs::read_dir(chart_dir().join("ci")).unwrap() {
        let path = entry.unwrap().path();
        helm_ok(&["lint", "--strict", chart, "-f", path.to_str().unwrap()]);
    }
}

#[test]
fn default_values_render_a_hardened_single_replica_on_sqlite() {
    let chart = chart_dir();
    let docs = documents(&helm_ok(&["template", "preview", chart.to_str().unwrap(), "-n", "platform"]));
    let kinds: BTreeSet<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    let expected = [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "PersistentVolumeClaim",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ];
    assert_eq!(kinds, expected.into_iter().collect(), "kinds rendered with the default values");
    // The chart never holds a secret value unless asked to.
    assert!(of_kind(&docs, "Secret").is_empty());

    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate", "one SQLite writer at a time");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let mounts: BTreeSet<&str> =
        container["volumeMounts"].as_array().unwrap().iter().map(|m| m["mountPath"].as_str().unwrap()).collect();
    assert!(mounts.contains("/tmp") && mounts.contains("/var/lib/previewd"), "{mounts:?}");

    let env = env_of(deployment);
    assert_eq!(env["PREVIEWD_LISTEN"], "0.0.0.0:8080");
    assert_eq!(env["PREVIEWD_LOG_FORMAT"], "json");
    assert_eq!(env["PREVIEWD_INSTANCE"], "preview");
    assert_eq!(env["PREVIEWD_DATABASE_URL"], "sqlite:///var/lib/previewd/previewd.db");
    assert_eq!(
        env["PREVIEWD_WEBHOOK_SECRETS"]["secretKeyRef"],
        json!({"name": "previewd-webhook", "key": "webhook-secrets"})
    );
    assert_eq!(env["PREVIEWD_TEMPLATES_DIR"], "/app/templates");
    assert!(!env.contains_key("PREVIEWD_POLICY_FILE"), "no policy by default");
    // Every PREVIEWD_* variable the chart sets is a setting previewd knows (README reference).
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    for name in env.keys() {
        assert!(readme.contains(&format!("`{name}`")), "{name} is not in README.md's configuration reference");
    }
}

#[test]
fn production_values_render_postgres_replicas_ingress_pdb_and_service_monitor() {
    let chart = chart_dir();
    let docs = documents(&helm_ok(&[
        "template",
        "previewd",
        chart.to_str().unwrap(),
        "-n",
        "previewd",
        "-f",
        production_values().to_str().unwrap(),
    ]));
    for kind in ["PodDisruptionBudget", "ServiceMonitor", "Ingress"] {
        one(&docs, kind);
    }
    assert!(of_kind(&docs, "PersistentVolumeClaim").is_empty(), "no SQLite volume with Postgres");
    assert!(of_kind(&docs, "Secret").is_empty());
    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert!(deployment["spec"]["strategy"].is_null(), "rolling updates with Postgres");
    assert!(deployment["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap().contains("@sha256:"));
    let env = env_of(deployment);
    assert_eq!(env["PREVIEWD_DATABASE_URL"]["secretKeyRef"], json!({"name": "previewd-database", "key": "url"}));
    assert_eq!(env["PREVIEWD_INSTANCE"], "previewd-prod");
    assert_eq!(env["PREVIEWD_POLICY_FILE"], "/etc/previewd/policy.yaml");
    // A GitHub App: each repository's own .preview.yaml, so no fixed one (previewd refuses both).
    assert_eq!(env["PREVIEWD_GITHUB__APP_ID"], "123456");
    assert_eq!(env["PREVIEWD_GITHUB__PRIVATE_KEY_FILE"], "/var/run/secrets/previewd/github-app/private-key.pem");
    assert!(!env.contains_key("PREVIEWD_REPO_CONFIG_FILE"));

    // The dashboard signs people in with the App's client, its secret mounted as a file.
    assert_eq!(env["PREVIEWD_DASHBOARD__PUBLIC_URL"], "https://previewd.example.com");
    assert_eq!(env["PREVIEWD_GITHUB__CLIENT_ID"], "Iv1.0123456789abcdef");
    assert_eq!(env["PREVIEWD_GITHUB__CLIENT_SECRET_FILE"], "/var/run/secrets/previewd/github-client/client-secret");
    assert_eq!(env["PREVIEWD_DASHBOARD__ADMINS"], "[platform-lead, acme/platform]");
    assert_eq!(env["PREVIEWD_DASHBOARD__ALLOWED_ORGS"], "[acme]");

    let ingress = one(&docs, "Ingress");
    let paths = &ingress["spec"]["rules"][0]["http"]["paths"];
    let exposed: Vec<(&str, &str)> = paths
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["path"].as_str().unwrap(), p["pathType"].as_str().unwrap()))
        .collect();
    // The webhook, the dashboard, the admin API and the page ingress-nginx's `auth-signin` sends
    // visitors to; never /metrics, /healthz, /readyz or the forward-authentication decision.
    assert_eq!(
        exposed,
        [
            ("/webhooks/github", "Exact"),
            ("/", "Exact"),
            ("/environments", "Prefix"),
            ("/events", "Exact"),
            ("/platform", "Exact"),
            ("/auth", "Prefix"),
            ("/static", "Prefix"),
            ("/api/v1", "Prefix"),
            ("/_previewd/page", "Exact")
        ]
    );
    // The edge refuses what previewd would refuse (25 MiB), beside the values' own annotations.
    let annotations = &ingress["metadata"]["annotations"];
    assert_eq!(annotations["nginx.ingress.kubernetes.io/proxy-body-size"], "25m");
    assert_eq!(annotations["cert-manager.io/cluster-issuer"], "letsencrypt");
    // A byte count as an integer, not in the float notation Helm gives large numbers.
    assert_eq!(env["PREVIEWD_HTTP__MAX_INFLIGHT_BODY_BYTES"], "134217728");

    // The policy's source namespace is the one the Role is in.
    let config = named(&docs, "ConfigMap", "previewd");
    let policy = parse(config["data"]["policy.yaml"].as_str().unwrap());
    assert_eq!(policy["secrets"]["source_namespace"], "platform-preview-secrets");
    assert_eq!(policy["secrets"]["allowed"], json!(["db-readonly"]));
    assert_eq!(one(&docs, "Role")["metadata"]["namespace"], "platform-preview-secrets");
}

/// helm template with `--set` values that must be refused; returns the error text.
fn refused(sets: &[&str]) -> String {
    let chart = chart_dir();
    let mut args = vec!["template", "r", chart.to_str().unwrap()];
    for set in sets {
        args.extend(["--set", set]);
    }
    let out = helm(&args);
    assert!(!out.status.success(), "helm accepted {sets:?}");
    text(&out)
}

#[test]
fn wrong_values_are_refused_with_a_message_naming_them() {
    let message = refused(&["replicas=two"]);
    assert!(message.contains("at '/replicas': got string, want integer"), "{message}");
    let message = refused(&["replicas=2"]);
    assert!(message.contains("at '/replicas': maximum: got 2, want 1"), "sqlite with 2 replicas: {message}");
    let message = refused(&["database.type=mysql"]);
    assert!(message.contains("at '/database/type': value must be one of 'sqlite', 'postgres'"), "{message}");
    let message = refused(&["replica=1"]);
    assert!(message.contains("additional properties 'replica' not allowed"), "{message}");
    let message = refused(&["config.queue.workers=0"]);
    assert!(message.contains("at '/config/queue/workers'"), "{message}");
    let message = refused(&["database.type=postgres"]);
    assert!(message.contains("database.existingSecret.name is required"), "{message}");
    let message = refused(&["webhook.existingSecret.name="]);
    assert!(message.contains("webhook.existingSecret.name is required"), "{message}");
    // previewd refuses a fixed .preview.yaml with an App, and a policy with neither.
    let message = refused(&["githubApp.appId=1,githubApp.existingSecret.name=k,repoConfig.image=x"]);
    assert!(message.contains("repoConfig is for running without a GitHub App"), "{message}");
    let message = refused(&["policy.base_domain=preview.example.com"]);
    assert!(message.contains("policy needs a source of .preview.yaml"), "{message}");
    let message = refused(&["ingress.enabled=true"]);
    assert!(message.contains("ingress"), "{message}");
    // The dashboard's sign-in needs the App, its client id and a client secret, as previewd does.
    let message = refused(&["dashboard.publicUrl=https://p.example.com"]);
    assert!(message.contains("signs people in through the GitHub App: set githubApp.appId"), "{message}");
    let message =
        refused(&["dashboard.publicUrl=https://p.example.com,githubApp.appId=1,githubApp.existingSecret.name=k"]);
    assert!(message.contains("set githubApp.clientId"), "{message}");
    let with_client = "dashboard.publicUrl=https://p.example.com,githubApp.appId=1,githubApp.existingSecret.name=k,githubApp.clientId=c";
    let message = refused(&[with_client]);
    assert!(message.contains("set githubApp.clientSecret.existingSecret.name"), "{message}");
    let message = refused(&["dashboard.sessionHours=0"]);
    assert!(message.contains("at '/dashboard/sessionHours'"), "{message}");
    // Values that become CEL string literals in the admission policies must be plain names.
    let message = refused(&["policy.base_domain=x' || true || '", "repoConfig.port=8080"]);
    assert!(message.contains("is not a DNS name"), "{message}");
    let message = refused(&["rbac.readClusterRole=a' || true || 'b"]);
    assert!(message.contains("at '/rbac/readClusterRole'"), "{message}");
    // Two replicas are fine on Postgres.
    let chart = chart_dir();
    helm_ok(&[
        "template",
        "r",
        chart.to_str().unwrap(),
        "--set",
        "replicas=2,database.type=postgres,database.existingSecret.name=db",
    ]);
}

/// Leaf paths of a values tree (`a.b.c`); empty maps and lists are leaves.
fn value_paths(prefix: &str, value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                let path = if prefix.is_empty() { key.to_owned() } else { format!("{prefix}.{key}") };
                value_paths(&path, child, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

#[test]
fn every_value_is_documented_in_the_chart_readme_and_the_schema() {
    let values = parse(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap());
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).unwrap();
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap()).unwrap();
    let mut paths = Vec::new();
    value_paths("", &values, &mut paths);
    let mut undocumented = Vec::new();
    for path in &paths {
        // Documented as itself or as a whole parent (`resources`).
        let parts: Vec<&str> = path.split('.').collect();
        let documented = (1..=parts.len()).any(|n| readme.contains(&format!("`{}`", parts[..n].join("."))));
        if !documented {
            undocumented.push(path.clone());
        }
        let mut node = &schema;
        for part in &parts {
            node = &node["properties"][part];
            if node.is_null() || node.get("properties").is_none() {
                break;
            }
        }
        assert!(!node.is_null(), "{path} is not in values.schema.json");
    }
    assert!(undocumented.is_empty(), "values missing from charts/previewd/README.md: {undocumented:?}");
}

// ------------------------------------------------------------------------------------------
// RBAC
// ------------------------------------------------------------------------------------------

/// The chart's RBAC and admission policies, rendered as the test cluster's identity is set up:
/// ServiceAccount `previewd-system/previewd`, source namespace `previewd-source`.
fn chart_rbac() -> Vec<Value> {
    let chart = chart_dir();
    documents(&helm_ok(&[
        "template",
        "previewd",
        chart.to_str().unwrap(),
        "-n",
        "previewd-system",
        "--set",
        "serviceAccount.name=previewd,secretsSourceNamespace=previewd-source",
        "--set",
        // A policy needs a source of `.preview.yaml`; the fixed one is the shortest to give.
        &format!("rbac.readClusterRole={READ_CLUSTER_ROLE},policy.base_domain=preview.test,repoConfig.port=8080"),
        "--set",
        // The test cluster's Gateway (e2e/controlplane/cluster.sh), named in the routes policy.
        "policy.gateway.parent_refs[0].namespace=previewd-gateway,policy.gateway.parent_refs[0].name=previews",
        "--show-only",
        "templates/rbac.yaml",
        "--show-only",
        "templates/admission-policies.yaml",
    ]))
}

fn test_cluster_rbac() -> Vec<Value> {
    let dir = repo_root().join("e2e/controlplane");
    let mut docs = documents(&std::fs::read_to_string(dir.join("previewd-rbac.yaml")).unwrap());
    docs.extend(documents(&std::fs::read_to_string(dir.join("test-identity.yaml")).unwrap()));
    docs
}

/// The ClusterRole of previewd's writes and the one of its reads, told apart by the read one's
/// name (`READ_CLUSTER_ROLE` in both renderings).
fn cluster_roles(docs: &[Value]) -> (&Value, &Value) {
    let (read, write): (Vec<&Value>, Vec<&Value>) =
        of_kind(docs, "ClusterRole").into_iter().partition(|r| r["metadata"]["name"] == READ_CLUSTER_ROLE);
    assert_eq!((write.len(), read.len()), (1, 1), "expected one write and one read ClusterRole");
    (write[0], read[0])
}

/// The suffixes of the admission policies' names (the chart's carry the release before them).
const POLICIES: [&str; 6] =
    ["managed-namespaces", "namespaced-writes", "services", "ingress-hosts", "routes", "read-bindings"];

#[test]
fn chart_rbac_is_the_rbac_the_test_cluster_binds() {
    let chart = chart_rbac();
    let cluster = test_cluster_rbac();

    let ((chart_write, chart_read), (cluster_write, cluster_read)) = (cluster_roles(&chart), cluster_roles(&cluster));
    assert_eq!(
        chart_write["rules"], cluster_write["rules"],
        "the chart's ClusterRole differs from e2e/controlplane/previewd-rbac.yaml"
    );
    assert_eq!(chart_read["rules"], cluster_read["rules"], "the chart's read ClusterRole differs");
    let (role, cluster_role) = (one(&chart, "Role"), one(&cluster, "Role"));
    assert_eq!(role["rules"], cluster_role["rules"], "source-namespace Role rules differ");
    assert_eq!(role["metadata"]["namespace"], cluster_role["metadata"]["namespace"]);

    // Bound to the same ServiceAccount; the read ClusterRole is bound by nobody but previewd.
    let subjects = |docs: &[Value], kind: &str| one(docs, kind)["subjects"].clone();
    assert_eq!(subjects(&chart, "ClusterRoleBinding"), subjects(&cluster, "ClusterRoleBinding"));
    assert_eq!(subjects(&chart, "RoleBinding"), subjects(&cluster, "RoleBinding"));
    assert_eq!(one(&chart, "RoleBinding")["metadata"]["namespace"], "previewd-source");
    assert_eq!(one(&chart, "ClusterRoleBinding")["roleRef"]["name"], chart_write["metadata"]["name"]);

    // The admission policies: the same specs, names aside (the chart's carry the release).
    let policies = |docs: &[Value]| -> BTreeMap<String, (Value, Value)> {
        of_kind(docs, "ValidatingAdmissionPolicy")
            .into_iter()
            .map(|policy| {
                let name = policy["metadata"]["name"].as_str().unwrap();
                let binding = of_kind(docs, "ValidatingAdmissionPolicyBinding")
                    .into_iter()
                    .find(|b| b["spec"]["policyName"] == name)
                    .unwrap_or_else(|| panic!("no binding for policy {name}"));
                let mut binding_spec = binding["spec"].clone();
                binding_spec["policyName"] = Value::Null;
                let key = POLICIES
                    .into_iter()
                    .find(|suffix| name.ends_with(suffix))
                    .unwrap_or_else(|| panic!("unexpected policy {name}"));
                (key.to_owned(), (policy["spec"].clone(), binding_spec))
            })
            .collect()
    };
    let (chart_policies, cluster_policies) = (policies(&chart), policies(&cluster));
    assert_eq!(chart_policies.len(), POLICIES.len());
    assert_eq!(cluster_policies.len(), POLICIES.len());
    for (key, expected) in &cluster_policies {
        assert_eq!(chart_policies.get(key), Some(expected), "admission policy {key} differs");
    }
    // No parameters: the API server stops a built-in paramKind's informer for good once no
    // binding uses it (see previewd-rbac.yaml).
    for (key, (policy, binding)) in &chart_policies {
        assert!(policy["paramKind"].is_null() && binding["paramRef"].is_null(), "{key} uses parameters");
    }
}

/// Where a rule is granted: the write ClusterRole (cluster-wide), the read ClusterRole (bound
/// by previewd in each environment namespace) or the Role in the source namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    Cluster,
    Environment,
    Source,
}

/// (scope, API group, resource, verb)
type Rule = (Scope, String, String, String);

/// Every (API group, resource, verb) previewd's code uses, and where. Derived from
/// `environments/src/cluster.rs`, the only code that talks to Kubernetes; the managed kinds
/// are `environments/src/kinds.rs`.
const MANAGED: [(&str, &str); 11] = [
    ("", "resourcequotas"),
    ("", "limitranges"),
    ("networking.k8s.io", "networkpolicies"),
    ("", "serviceaccounts"),
    ("", "configmaps"),
    ("", "services"),
    ("", "persistentvolumeclaims"),
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("networking.k8s.io", "ingresses"),
    ("gateway.networking.k8s.io", "httproutes"),
];

fn used_rules() -> BTreeMap<Rule, &'static str> {
    use Scope::{Cluster, Environment, Source};
    let mut used = BTreeMap::new();
    let mut add = |scope: Scope, group: &str, resource: &str, verb: &str, why: &'static str| {
        used.insert((scope, group.to_owned(), resource.to_owned(), verb.to_owned()), why);
    };
    add(Cluster, "", "namespaces", "patch", "Cluster::apply: server-side apply of the Namespace");
    add(Cluster, "", "namespaces", "create", "Cluster::apply: server-side apply of a missing Namespace");
    add(Cluster, "", "namespaces", "get", "Cluster::delete_namespace and namespace_terminating: get_opt");
    add(Cluster, "", "namespaces", "watch", "cluster::watch::watch_namespaces: metadata watch by ownership labels");
    add(Cluster, "", "namespaces", "list", "Cluster::owned_namespaces: list_metadata by ownership labels");
    add(Cluster, "", "namespaces", "delete", "Cluster::delete_namespace");
    for (group, resource) in MANAGED {
        add(Cluster, group, resource, "patch", "Cluster::apply: server-side apply");
        add(Cluster, group, resource, "create", "Cluster::apply: server-side apply of a missing object");
        add(Cluster, group, resource, "delete", "Cluster::prune: delete_ignoring_missing");
        add(Environment, group, resource, "list", "Cluster::prune: list_metadata by ownership labels");
    }
    add(Cluster, "rbac.authorization.k8s.io", "rolebindings", "create", "Cluster::grant_reads: server-side apply");
    add(Cluster, "rbac.authorization.k8s.io", "rolebindings", "patch", "Cluster::grant_reads: server-side apply");
    add(Cluster, "rbac.authorization.k8s.io", "clusterroles", "bind", "Cluster::grant_reads: the read ClusterRole");
    add(Environment, "apps", "deployments", "watch", "cluster::watch::RolloutWatches: metadata watch");
    add(Environment, "apps", "statefulsets", "watch", "cluster::watch::RolloutWatches: metadata watch");
    add(Environment, "batch", "jobs", "watch", "cluster::watch::RolloutWatches: metadata watch");
    add(Cluster, "batch", "jobs", "create", "Cluster::start_jobs: created once, never patched");
    add(Cluster, "batch", "jobs", "delete", "Cluster::prune: delete_ignoring_missing");
    add(Environment, "batch", "jobs", "list", "Cluster::prune; Cluster::start_jobs; Cluster::rollout");
    add(Environment, "", "pods", "watch", "cluster::watch::RolloutWatches: metadata watch");
    add(Cluster, "", "secrets", "create", "Cluster::sync_secrets: generated secrets (create once)");
    add(
        Cluster,
        "",
        "secrets",
        "patch",
        "Cluster::sync_secrets: copies (server-side apply); Cluster::apply of rendered Secrets",
    );
    add(Cluster, "", "secrets", "deletecollection", "Cluster::delete_unwanted_secrets");
    add(Environment, "", "pods", "list", "Cluster::rollout; Cluster::wait_for_reads; the rollout watch's listing");
    add(Environment, "apps", "replicasets", "list", "Cluster::rollout");
    add(Source, "", "secrets", "get", "Cluster::read_platform_secret (Role in the source namespace)");
    used
}

/// Granted by previewd-rbac.yaml (and so by the chart, which must equal it) although no code
/// of previewd uses them today. Listed so that the check below names them; removing one means
/// changing previewd-rbac.yaml, the chart and `least_privilege_identity_can_do_previewd_work_and_nothing_more`
/// (e2e/tests/cluster.rs) together.
const GRANTED_BUT_UNUSED: &[(Scope, &str, &str, &str, &str)] = &[];

/// Every rule of the write and read ClusterRoles and the source-namespace Role. A rule limited
/// to `resourceNames` must name exactly the read ClusterRole (the only one is `bind`).
fn granted(docs: &[Value]) -> BTreeSet<Rule> {
    let (write, read) = cluster_roles(docs);
    let mut granted = BTreeSet::new();
    for (role, scope) in [(write, Scope::Cluster), (read, Scope::Environment), (one(docs, "Role"), Scope::Source)] {
        for rule in role["rules"].as_array().unwrap() {
            let strings = |field: &str| -> Vec<String> {
                rule[field].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
            };
            if !rule["resourceNames"].is_null() {
                assert_eq!(rule["resourceNames"], json!([READ_CLUSTER_ROLE]), "resourceNames of {rule}");
            }
            for group in strings("apiGroups") {
                for resource in strings("resources") {
                    for verb in strings("verbs") {
                        assert!(group != "*" && resource != "*" && verb != "*", "wildcard in {role}: {rule}");
                        if verb == "bind" || verb == "escalate" || verb == "impersonate" {
                            assert!(!rule["resourceNames"].is_null(), "{verb} without resourceNames: {rule}");
                        }
                        granted.insert((scope, group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    granted
}

#[test]
fn every_granted_rule_is_accounted_for_and_every_used_one_granted() {
    let granted = granted(&chart_rbac());
    let used = used_rules();
    let unused: BTreeMap<Rule, &str> = GRANTED_BUT_UNUSED
        .iter()
        .map(|(s, g, r, v, why)| ((*s, (*g).to_owned(), (*r).to_owned(), (*v).to_owned()), *why))
        .collect();
    let show =
        |(s, g, r, v): &Rule| format!("{s:?}: {v} {r}{}", if g.is_empty() { String::new() } else { format!(".{g}") });

    let missing: Vec<String> =
        used.iter().filter(|(k, _)| !granted.contains(*k)).map(|(k, why)| format!("{} ({why})", show(k))).collect();
    assert!(missing.is_empty(), "previewd uses rules the chart does not grant: {missing:#?}");

    let unexplained: Vec<String> =
        granted.iter().filter(|k| !used.contains_key(*k) && !unused.contains_key(*k)).map(show).collect();
    assert!(unexplained.is_empty(), "the chart grants rules no previewd code uses: {unexplained:#?}");

    let stale: Vec<String> =
        unused.keys().filter(|k| used.contains_key(*k) || !granted.contains(*k)).map(show).collect();
    assert!(stale.is_empty(), "GRANTED_BUT_UNUSED is out of date for: {stale:#?}");

    // Cluster-wide, previewd reads nothing but namespaces.
    let reads: Vec<String> = granted
        .iter()
        .filter(|(s, _, r, v)| {
            *s == Scope::Cluster && ["get", "list", "watch"].contains(&v.as_str()) && r != "namespaces"
        })
        .map(show)
        .collect();
    assert!(reads.is_empty(), "cluster-wide reads beyond namespaces: {reads:?}");

    eprintln!("rules the chart grants that previewd never uses ({}):", unused.len());
    for (k, why) in &unused {
        eprintln!("  {:<40} {why}", show(k));
    }
}

// ------------------------------------------------------------------------------------------
// install on the test control plane
// ------------------------------------------------------------------------------------------

/// A client acting as `system:serviceaccount:<namespace>:<name>`, with a short-lived token.
async fn service_account_client(admin_kubeconfig: &Path, namespace: &str, name: &str) -> Client {
    let admin = cluster::admin_client().await.unwrap();
    let api: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(admin, namespace);
    let request: k8s_openapi::api::authentication::v1::TokenRequest = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": [], "expirationSeconds": 600}
    }))
    .unwrap();
    let token: k8s_openapi::api::authentication::v1::TokenRequest =
        api.create_subresource("token", name, &PostParams::default(), &request).await.unwrap();
    let token = token.status.unwrap().token;
    let mut config = parse(&std::fs::read_to_string(admin_kubeconfig).unwrap());
    config["users"][0]["user"] = json!({ "token": token });
    let kubeconfig = Kubeconfig::from_yaml(&yaml::to_string(&config).unwrap()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    Client::try_from(config).unwrap()
}

/// The objects of a release's manifest, found through discovery: (resource, namespace, name).
async fn release_objects(client: &Client, manifest: &str) -> Vec<(ApiResource, Option<String>, String)> {
    let mut objects = Vec::new();
    for doc in documents(manifest) {
        let (group, version) = match doc["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g.to_owned(), v.to_owned()),
            None => (String::new(), doc["apiVersion"].as_str().unwrap().to_owned()),
        };
        let gvk = GroupVersionKind::gvk(&group, &version, doc["kind"].as_str().unwrap());
        let (resource, _) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
        let namespace = doc["metadata"]["namespace"].as_str().map(str::to_owned);
        objects.push((resource, namespace, doc["metadata"]["name"].as_str().unwrap().to_owned()));
    }
    objects
}

fn api_for(
    client: &Client,
    resource: &ApiResource,
    namespace: Option<&str>,
    release_ns: &str,
    namespaced: bool,
) -> Api<DynamicObject> {
    if namespaced {
        Api::namespaced_with(client.clone(), namespace.unwrap_or(release_ns), resource)
    } else {
        Api::all_with(client.clone(), resource)
    }
}

#[tokio::test]
async fn installs_on_the_control_plane_becomes_available_and_uninstalls_cleanly() {
    let (admin_kubeconfig, _) = cluster::kubeconfig_paths().await.unwrap();
    let admin = cluster::admin_client().await.unwrap();
    // The pod spec must pass Pod Security `restricted`, as a hardened cluster enforces it.
    let ns = TestNamespace::create("chart", &[("pod-security.kubernetes.io/enforce", "restricted")]).await.unwrap();
    let source = TestNamespace::create("chart-source", &[]).await.unwrap();
    let webhook: Secret = serde_json::from_value(json!({
        "metadata": {"name": "previewd-webhook"},
        "stringData": {"webhook-secrets": "not-a-real-secret"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), ns.name()).create(&PostParams::default(), &webhook).await.unwrap();

    let release = unique_name("pd");
    let chart = chart_dir();
    let kubeconfig = admin_kubeconfig.to_str().unwrap();
    let source_set = format!("secretsSourceNamespace={}", source.name());
    let started = Instant::now();
    // kwok runs no container: the pod is scheduled on a fake node and reported Ready, so this
    // checks that every object is accepted (schema, admission, Pod Security) and the
    // Deployment becomes available, not that the image works.
    let install = helm(&[
        "install",
        &release,
        chart.to_str().unwrap(),
        "--kubeconfig",
        kubeconfig,
        "-n",
        ns.name(),
        "--set",
        &source_set,
        "--set",
        "persistence.enabled=false",
        "--wait",
        "--timeout",
        "120s",
    ]);
    let install_time = started.elapsed();
    assert!(install.status.success(), "helm install failed:\n{}", text(&install));
    eprintln!("helm install --wait took {install_time:?}");

    let manifest = helm_ok(&["get", "manifest", &release, "--kubeconfig", kubeconfig, "-n", ns.name()]);
    let objects = release_objects(&admin, &manifest).await;
    let kinds: BTreeSet<String> = objects.iter().map(|(r, ..)| r.kind.clone()).collect();
    for kind in ["Deployment", "ClusterRole", "ClusterRoleBinding", "Role", "ValidatingAdmissionPolicy"] {
        assert!(kinds.contains(kind), "{kind} missing from the release: {kinds:?}");
    }
    let discovery = kube::Discovery::new(admin.clone()).run().await.unwrap();
    let scoped = |resource: &ApiResource| {
        discovery
            .resolve_gvk(&GroupVersionKind::gvk(&resource.group, &resource.version, &resource.kind))
            .map(|(_, caps)| caps.scope == kube::discovery::Scope::Namespaced)
            .unwrap()
    };
    for (resource, namespace, name) in &objects {
        let api = api_for(&admin, resource, namespace.as_deref(), ns.name(), scoped(resource));
        let object = api.get_opt(name).await.unwrap();
        assert!(object.is_some(), "{} {name} of the release does not exist", resource.kind);
        if !scoped(resource) {
            assert!(name.contains(&release), "cluster-scoped {} {name} does not carry the release name", resource.kind);
        }
    }
    let deployment =
        Api::<Deployment>::namespaced(admin.clone(), ns.name()).get(&format!("{release}-previewd")).await.unwrap();
    assert_eq!(deployment.status.unwrap().available_replicas, Some(1));

    // The admission policies match the installed ServiceAccount: it may create a namespace
    // labelled as previewd's, and not an unlabelled one.
    let account = format!("{release}-previewd");
    let previewd = service_account_client(&admin_kubeconfig, ns.name(), &account).await;
    let namespaces: Api<Namespace> = Api::all(previewd.clone());
    let namespace = |name: &str, labels: &[(&str, &str)]| Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    const RESTRICTED: (&str, &str) = ("pod-security.kubernetes.io/enforce", "restricted");
    let labelled = environment_name("chart");
    let _labelled_cleanup = TestNamespace::adopt(&labelled).await.unwrap();
    namespaces.create(&PostParams::default(), &namespace(&labelled, &[MANAGED_BY_LABEL, RESTRICTED])).await.unwrap();
    // Admission policies take effect a moment after they are created: try until refused.
    let mut attempts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let refusal = loop {
        let plain = environment_name("chart");
        attempts.push(TestNamespace::adopt(&plain).await.unwrap());
        match namespaces.create(&PostParams::default(), &namespace(&plain, &[RESTRICTED])).await {
            Err(kube::Error::Api(status)) if status.code == 403 => break status.message,
            Err(e) => panic!("creating an unlabelled namespace as previewd: {e}"),
            Ok(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(500)).await,
            Ok(_) => panic!("the chart's admission policy let previewd create an unlabelled namespace"),
        }
    };
    assert!(refusal.contains("labelled app.kubernetes.io/managed-by=previewd"), "{refusal}");
    drop(attempts);

    // The chart's read ClusterRole, its `bind` rule and the policies' role name agree: the
    // installed ServiceAccount may bind the read role to itself in its namespace, and then
    // read there; not another role.
    let read_role = format!("{}-{release}-previewd-read", ns.name());
    let username = format!("system:serviceaccount:{}:{account}", ns.name());
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> = Api::namespaced(previewd.clone(), &labelled);
    let binding = |name: &str, role: &str| -> k8s_openapi::api::rbac::v1::RoleBinding {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": username}],
        }))
        .unwrap()
    };
    bindings.create(&PostParams::default(), &binding("previewd-read", &read_role)).await.unwrap();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(previewd.clone(), &labelled);
    wait_until(Duration::from_secs(10), "the read RoleBinding to take effect", || async {
        Ok(pods.list(&kube::api::ListParams::default()).await.ok().map(drop))
    })
    .await
    .unwrap();
    match bindings.create(&PostParams::default(), &binding("other", &format!("{}-{release}-previewd", ns.name()))).await
    {
        // RBAC lets it bind a role whose rules it holds; the policy does not.
        Err(kube::Error::Api(status)) if status.code == 403 => {
            assert!(status.message.contains(&format!("may only bind ClusterRole {read_role}")), "{}", status.message);
        }
        other => panic!("the installed ServiceAccount bound its write ClusterRole: {other:?}"),
    }

    let started = Instant::now();
    helm_ok(&["uninstall", &release, "--kubeconfig", kubeconfig, "-n", ns.name(), "--wait", "--timeout", "120s"]);
    eprintln!("helm uninstall --wait took {:?}", started.elapsed());
    wait_until(Duration::from_secs(60), "the release's objects to be gone", || async {
        let mut left = Vec::new();
        for (resource, namespace, name) in &objects {
            let api = api_for(&admin, resource, namespace.as_deref(), ns.name(), scoped(resource));
            if api.get_opt(name).await?.is_some() {
                left.push(format!("{} {name}", resource.kind));
            }
        }
        if left.is_empty() { Ok(Some(())) } else { Err(anyhow::anyhow!("still there: {left:?}")) }
    })
    .await
    .unwrap();
}
