//! Rendering several services, a database and its seed, and Gateway API routes with the shipped
//! templates, from a `.preview.yaml` resolved under a policy exactly as the reconciler does it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use previewd_environments::kinds::Kind;
use previewd_environments::model::{CommitSha, PrNumber, PullRequest, Repo, RepoId};
use previewd_environments::policy::Policy;
use previewd_environments::reconcile::{Placement, render_environment};
use previewd_environments::render::{Manifest, Renderer};
use serde_json::Value;
use std::path::Path;

const POLICY: &str = r#"
base_domain: preview.test
allowed_registries: [registry.preview.test/]
secrets: { allowed: [db-readonly], image_pull: [regcred] }
resources: { quota: { defaults: { cpu: "8", memory: 16Gi, pods: 20 }, caps: { cpu: "8", memory: 16Gi, pods: 20 } } }
"#;

const APP: &str = r#"
services:
  web: { image: "registry.preview.test/acme/web:{sha}", port: 3000, expose: public, health_check: { path: /healthz } }
  api: { image: "registry.preview.test/acme/api:{sha}", port: 8080, expose: public, secrets: [db-readonly], generated_secrets: [session-key] }
  worker: { image: "registry.preview.test/acme/api:{sha}", command: [/api], args: [work], replicas: 2 }
database:
  engine: postgres
  version: "16"
  seed: { command: [/api, seed], service: api }
"#;

fn pr() -> PullRequest {
    PullRequest {
        repo: Repo { id: RepoId(42), owner: "acme".into(), name: "shop".into() },
        number: PrNumber(7),
        head_sha: CommitSha("0123456789abcdef0123456789abcdef01234567".into()),
        head_branch: "feature".into(),
        author: "dev".into(),
        from_fork: false,
        draft: false,
        labels: vec![],
    }
}

fn render(policy: &str, config: &str, generation: i64) -> Vec<Manifest> {
    let renderer = Renderer::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates")).unwrap();
    let policy = Policy::from_yaml(policy, "policy.yaml").unwrap();
    let placement = Placement {
        name: None,
        expires_at: 1_796_126_400_000,
        instance: "previewd",
        dns: None,
        database_generation: generation,
        asleep: false,
    };
    render_environment(&renderer, &policy, &pr(), config, &placement).unwrap().1
}

fn find<'a>(manifests: &'a [Manifest], kind: Kind, name: &str) -> &'a Value {
    &manifests.iter().find(|m| m.kind == kind && m.name == name).unwrap_or_else(|| panic!("no {kind} {name}")).object
}

fn names(manifests: &[Manifest], kind: Kind) -> Vec<&str> {
    manifests.iter().filter(|m| m.kind == kind).map(|m| m.name.as_str()).collect()
}

fn env_names(container: &Value) -> Vec<&str> {
    container["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect()
}

#[test]
fn three_services_and_a_seeded_database_render_as_snapshotted() {
    let manifests = render(POLICY, APP, 1);
    let text: Vec<String> =
        manifests.iter().map(|m| previewd_environments::yaml::to_string(&m.object).unwrap()).collect();
    insta::assert_snapshot!("three_services_with_a_database", text.join("---\n"));
}

#[test]
fn every_service_gets_its_objects_and_every_reference_resolves() {
    let manifests = render(POLICY, APP, 1);
    assert_eq!(names(&manifests, Kind::Deployment), ["web", "api", "worker"]);
    // A worker has no port: no Service, no route.
    assert_eq!(names(&manifests, Kind::Service), ["web", "api", "database"]);
    assert_eq!(names(&manifests, Kind::Ingress), ["web", "api"]);
    assert_eq!(names(&manifests, Kind::StatefulSet), ["database-1"]);
    assert_eq!(names(&manifests, Kind::Job), ["seed-1"]);
    // Every Service selects the pods of a workload, on a port that workload names.
    let workloads: Vec<&Value> = manifests
        .iter()
        .filter(|m| matches!(m.kind, Kind::Deployment | Kind::StatefulSet))
        .map(|m| &m.object["spec"]["template"])
        .collect();
    for service in manifests.iter().filter(|m| m.kind == Kind::Service) {
        let selector = service.object["spec"]["selector"].as_object().unwrap();
        let pods: Vec<&&Value> =
            workloads.iter().filter(|t| selector.iter().all(|(k, v)| &t["metadata"]["labels"][k] == v)).collect();
        assert_eq!(pods.len(), 1, "Service {} selects exactly one workload's pods", service.name);
        let target = service.object["spec"]["ports"][0]["targetPort"].as_str().unwrap();
        let ports = &pods[0]["spec"]["containers"][0]["ports"];
        assert!(ports.as_array().unwrap().iter().any(|p| p["name"] == target), "{} targets {target}", service.name);
    }
    // Every route's backend is a Service and port that exist.
    for ingress in manifests.iter().filter(|m| m.kind == Kind::Ingress) {
        let backend = &ingress.object["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"];
        let service = find(&manifests, Kind::Service, backend["name"].as_str().unwrap());
        assert!(service["spec"]["ports"].as_array().unwrap().iter().any(|p| p["name"] == backend["port"]["name"]));
    }
    // Hosts: the first public service has the environment's; the next its own single label.
    let host = |name| find(&manifests, Kind::Ingress, name)["spec"]["rules"][0]["host"].as_str().unwrap().to_owned();
    let namespace = manifests[0].name.clone();
    assert_eq!(host("web"), format!("{namespace}.preview.test"));
    assert_eq!(host("api"), format!("api--{namespace}.preview.test"));
    // The services and the seed get the database; the seed runs in the api's image and variables.
    let api = &find(&manifests, Kind::Deployment, "api")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        env_names(api),
        ["PREVIEW_URL", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD", "DATABASE_URL", "SESSION_KEY"]
    );
    assert_eq!(api["env"][6]["value"], "postgresql://preview:$(PGPASSWORD)@database:5432/preview");
    assert_eq!(api["envFrom"][0]["secretRef"]["name"], "db-readonly");
    let seed = &find(&manifests, Kind::Job, "seed-1")["spec"];
    assert_eq!(seed["backoffLimit"], 0);
    let container = &seed["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], api["image"]);
    assert_eq!(container["command"], serde_json::json!(["/api", "seed"]));
    assert_eq!(env_names(container), env_names(api));
    let worker = &find(&manifests, Kind::Deployment, "worker")["spec"];
    assert_eq!(worker["replicas"], 2);
    assert_eq!(worker["template"]["spec"]["containers"][0]["args"], serde_json::json!(["work"]));
    assert!(worker["template"]["spec"]["containers"][0].get("readinessProbe").is_none());
    // Registry credentials on the workloads' ServiceAccount.
    assert_eq!(find(&manifests, Kind::ServiceAccount, "app")["imagePullSecrets"][0]["name"], "regcred");
    let database = &find(&manifests, Kind::StatefulSet, "database-1")["spec"];
    assert_eq!(database["template"]["spec"]["containers"][0]["image"], "docker.io/library/postgres:16");
    assert!(database.get("volumeClaimTemplates").is_none(), "emptyDir by default");
}

#[test]
fn a_reset_database_is_a_new_statefulset_and_a_new_seed() {
    let manifests = render(POLICY, APP, 2);
    assert_eq!(names(&manifests, Kind::StatefulSet), ["database-2"]);
    assert_eq!(names(&manifests, Kind::Job), ["seed-2"]);
    let selector = &find(&manifests, Kind::Service, "database")["spec"]["selector"];
    assert_eq!(selector["previewd.dev/database-generation"], "2");
}

#[test]
fn volume_storage_is_a_claim_of_the_policys_class_and_size() {
    let policy = format!("{POLICY}database: {{ storage: volume, storage_class: preview-standard, size: 2Gi }}\n");
    let manifests = render(&policy, APP, 1);
    let spec = &find(&manifests, Kind::StatefulSet, "database-1")["spec"];
    let claim = &spec["volumeClaimTemplates"][0]["spec"];
    assert_eq!(claim["storageClassName"], "preview-standard");
    assert_eq!(claim["resources"]["requests"]["storage"], "2Gi");
    assert_eq!(spec["persistentVolumeClaimRetentionPolicy"]["whenDeleted"], "Delete");
    let volumes = spec["template"]["spec"]["volumes"].as_array().unwrap();
    assert!(volumes.iter().all(|v| v["name"] != "data"), "the claim is the data volume");
}

#[test]
fn gateway_routing_renders_an_httproute_per_public_service_and_no_ingress() {
    let policy = format!(
        "{POLICY}routing: gateway\ngateway: {{ parent_refs: [{{ namespace: previewd-gateway, name: previews, section_name: https }}] }}\n"
    );
    let manifests = render(&policy, APP, 1);
    assert!(names(&manifests, Kind::Ingress).is_empty());
    assert_eq!(names(&manifests, Kind::HttpRoute), ["web", "api"]);
    let route = find(&manifests, Kind::HttpRoute, "api");
    assert_eq!(route["apiVersion"], "gateway.networking.k8s.io/v1");
    let parent = &route["spec"]["parentRefs"][0];
    assert_eq!((parent["namespace"].as_str(), parent["name"].as_str()), (Some("previewd-gateway"), Some("previews")));
    assert_eq!(parent["sectionName"], "https");
    assert!(route["spec"]["hostnames"][0].as_str().unwrap().starts_with("api--"));
    assert_eq!(route["spec"]["rules"][0]["backendRefs"][0], serde_json::json!({"name": "api", "port": 80}));
}

#[test]
fn tls_follows_the_policy() {
    let single = "image: registry.preview.test/acme/app:{sha}\n";
    let tls = |manifests: &[Manifest]| find(manifests, Kind::Ingress, "app")["spec"]["tls"][0].clone();
    assert_eq!(tls(&render(POLICY, single, 1))["secretName"], "preview-wildcard-tls");
    let none = render(&format!("{POLICY}ingress: {{ tls: controller_default }}\n"), single, 1);
    assert!(tls(&none).get("secretName").is_none());
    let issued =
        render(&format!("{POLICY}ingress: {{ tls: cert_manager, cert_manager_issuer: letsencrypt }}\n"), single, 1);
    assert_eq!(tls(&issued)["secretName"], "app-tls");
    let ingress = find(&issued, Kind::Ingress, "app");
    assert_eq!(ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"], "letsencrypt");
}

#[test]
fn forward_auth_wires_every_ingress_to_previewd_for_the_chosen_controller() {
    let annotations = |policy: &str, service: &str| {
        let manifests = render(&format!("{POLICY}ingress: {{ annotations: {{ team: shop }} }}\n{policy}"), APP, 1);
        find(&manifests, Kind::Ingress, service)["metadata"]["annotations"].clone()
    };
    let nginx = "forward_auth: { controller: ingress_nginx, url: http://previewd.previewd-system.svc:8080/, public_url: https://previewd.preview.test }\n";
    for service in ["web", "api"] {
        let a = annotations(nginx, service);
        assert_eq!(
            a["nginx.ingress.kubernetes.io/auth-url"],
            "http://previewd.previewd-system.svc:8080/_previewd/auth?mode=nginx"
        );
        assert_eq!(a["nginx.ingress.kubernetes.io/auth-signin"], "https://previewd.preview.test/_previewd/page");
        assert_eq!(a["nginx.ingress.kubernetes.io/auth-response-headers"], "X-Previewd-User");
        assert_eq!(a["nginx.ingress.kubernetes.io/auth-always-set-cookie"], "true");
        assert_eq!(a["team"], "shop", "the policy's own annotations stay");
    }
    let traefik =
        "forward_auth: { controller: traefik, traefik_middleware: previewd-system-previewd-auth@kubernetescrd }\n";
    let a = annotations(traefik, "web");
    assert_eq!(a["traefik.ingress.kubernetes.io/router.middlewares"], "previewd-system-previewd-auth@kubernetescrd");
    assert!(a.get("nginx.ingress.kubernetes.io/auth-url").is_none());
    // `none` (the default): only the policy's own.
    let a = annotations("", "web");
    assert_eq!(a.as_object().unwrap().keys().collect::<Vec<_>>(), ["team"]);
}

#[test]
fn a_template_cannot_ask_for_more_storage_or_another_class_than_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("environments/web");
    std::fs::create_dir_all(&set).unwrap();
    std::fs::write(set.join("00-namespace.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata: {}\n").unwrap();
    let claim = |size: &str, class: &str| {
        format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{ name: data }}\nspec: {{ accessModes: [ReadWriteOnce], storageClassName: {class}, resources: {{ requests: {{ storage: {size} }} }} }}\n"
        )
    };
    let policy = Policy::from_yaml(
        "base_domain: preview.test\ndatabase: { storage: volume, storage_class: preview-standard, size: 1Gi }\n",
        "policy.yaml",
    )
    .unwrap();
    let placement =
        Placement { name: None, expires_at: 0, instance: "previewd", dns: None, database_generation: 1, asleep: false };
    let outcome = |size: &str, class: &str| {
        std::fs::write(set.join("10-claim.yaml"), claim(size, class)).unwrap();
        let renderer = Renderer::load(dir.path()).unwrap();
        render_environment(&renderer, &policy, &pr(), "image: registry.preview.test/y:1\n", &placement)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert_eq!(outcome("1Gi", "preview-standard"), Ok(()));
    let e = outcome("5Gi", "preview-standard").unwrap_err();
    assert!(
        e.contains("PersistentVolumeClaim `data` asks for 5Gi of storage, above the policy's database.size 1Gi"),
        "{e}"
    );
    let e = outcome("1Gi", "premium-ssd").unwrap_err();
    assert!(e.contains("asks for storage class \"premium-ssd\""), "{e}");
    assert!(e.contains("the platform's environment template failed"), "{e}");
}

#[test]
fn a_seed_of_sql_files_runs_psql_as_the_database_user_on_the_files_configmap() {
    let config =
        APP.replace("seed: { command: [/api, seed], service: api }", "seed: { sql: [db/schema.sql, db/data.sql] }");
    let manifests = render(POLICY, &config, 2);
    let pod = &find(&manifests, Kind::Job, "seed-2")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "docker.io/library/postgres:16");
    let command: Vec<&str> = container["command"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(command[..5], ["psql", "--no-psqlrc", "--set", "ON_ERROR_STOP=1", "--single-transaction"]);
    assert_eq!(command[5..], ["--file", "/seed/01-db-schema.sql", "--file", "/seed/02-db-data.sql"]);
    // psql connects with the PG* variables alone; no service's variables or secrets.
    assert_eq!(
        env_names(container),
        ["PREVIEW_URL", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD", "DATABASE_URL"]
    );
    assert!(container.get("envFrom").is_none(), "{container}");
    assert_eq!(
        (pod["securityContext"]["runAsUser"].as_i64(), pod["securityContext"]["runAsNonRoot"].as_bool()),
        (Some(999), Some(true))
    );
    assert_eq!(pod["volumes"][0]["configMap"]["name"], "seed-2-sql");
    assert_eq!(container["volumeMounts"][0]["mountPath"], "/seed");
    assert_eq!(container["volumeMounts"][0]["readOnly"], true);
    // The ConfigMap is not a template object: previewd creates it with the Job.
    assert!(names(&manifests, Kind::ConfigMap).iter().all(|n| !n.starts_with("seed")));
}
