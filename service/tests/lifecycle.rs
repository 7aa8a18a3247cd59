//! Deliveries through the real endpoint drive environments in the real cluster: the service,
//! its job queue and the engine together, on both stores.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestServer, config, eventually, eventually_within};
use previewd_e2e::cluster::{SOURCE_NAMESPACE, TestNamespace, kubeconfig_paths};
use previewd_e2e::fixtures::example;
use previewd_environments::model::{PrNumber, RepoId};
use std::path::Path;
use std::time::Duration;

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/fixtures").join(name).display().to_string()
}

struct Setup {
    server: TestServer,
    instance: String,
    _dir: tempfile::TempDir,
}

async fn start(db: &previewd_e2e::database::TestDatabase, resync_seconds: &str) -> Setup {
    start_with(db, resync_seconds, "", "ttl: 24h").await
}

/// [`start`] with `repositories` entries appended to the fixture's policy and the repository's
/// `ttl` line (the fixture's is `ttl: 24h`) replaced by `ttl`.
async fn start_with(
    db: &previewd_e2e::database::TestDatabase,
    resync_seconds: &str,
    repositories: &str,
    ttl: &str,
) -> Setup {
    let (_, least_privilege) = kubeconfig_paths().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy =
        std::fs::read_to_string(fixture("policy.yaml")).unwrap().replace("previewd-platform-secrets", SOURCE_NAMESPACE)
            + repositories;
    let policy_file = dir.path().join("policy.yaml");
    std::fs::write(&policy_file, policy).unwrap();
    // Keep the test self-contained: no platform secret needed.
    let repo_config = std::fs::read_to_string(fixture("preview.yaml"))
        .unwrap()
        .replace("secrets: [db-readonly]", "secrets: []")
        .replace("ttl: 24h", ttl);
    let repo_config_file = dir.path().join("preview.yaml");
    std::fs::write(&repo_config_file, repo_config).unwrap();
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates").display().to_string();
    let instance = format!("test-{}", uuid::Uuid::new_v4().simple());
    let server = TestServer::start_with(config(
        db,
        &[
            ("PREVIEWD_POLICY_FILE", policy_file.to_str().unwrap()),
            ("PREVIEWD_REPO_CONFIG_FILE", repo_config_file.to_str().unwrap()),
            ("PREVIEWD_TEMPLATES_DIR", &templates),
            ("PREVIEWD_KUBECONFIG", least_privilege.to_str().unwrap()),
            ("PREVIEWD_INSTANCE", &instance),
            ("PREVIEWD_ENGINE__RESYNC_INTERVAL_SECONDS", resync_seconds),
            // Two passes of 1 s share the ready environments (the drift-repair test).
            ("PREVIEWD_ENGINE__DRIFT_REPAIR_INTERVAL_SECONDS", "2"),
        ],
    ))
    .await;
    Setup { server, instance, _dir: dir }
}

/// Opens a pull request of a repository of its own and waits until its environment is Ready.
async fn open_ready(
    server: &TestServer,
) -> (serde_json::Value, i64, PrNumber, previewd_environments::store::ReconcileRecord) {
    let (opened, repo_id, number) = open(server).await;
    let ready = eventually("the environment is Ready", || async {
        let env = server.store.environment(RepoId(repo_id), number).await.ok()??;
        assert_ne!(env.state, "Failed", "{:?}", env.reason);
        (env.state == "Ready").then_some(env)
    })
    .await;
    let record = server.store.reconcile_record(ready.id).await.unwrap().unwrap();
    (opened, repo_id, number, record)
}

/// Opens a pull request of a repository of its own (the delivery is accepted).
async fn open(server: &TestServer) -> (serde_json::Value, i64, PrNumber) {
    let mut opened = example("pull_request", "opened").unwrap();
    // A repository id of its own, so parallel runs never share a namespace.
    let repo_id =
        2_000_000 + i64::from(uuid::Uuid::new_v4().as_bytes()[0]) * 256 + i64::from(uuid::Uuid::new_v4().as_bytes()[1]);
    opened["repository"]["id"] = repo_id.into();
    opened["repository"]["owner"]["login"] = "acme".into();
    opened["repository"]["name"] = "app".into();
    opened["pull_request"]["head"]["repo"]["id"] = repo_id.into();
    let number = PrNumber(opened["number"].as_i64().unwrap());
    assert_eq!(server.deliver("pull_request", &format!("open-{repo_id}"), &opened).await.status(), 202);
    (opened, repo_id, number)
}

previewd_e2e::each_backend! {
    async fn a_repositorys_own_warn_before_applies(db) {
        // The global policy warns 2 h ahead; acme/app's override, 30 h ahead. The environment
        // lives 24 h (the fixture's `.preview.yaml`), so only the override makes it due.
        let setup = start_with(&db, "1", "  acme/app:\n    ttl: { warn_before: 30h }\n", "ttl: 24h").await;
        let server = &setup.server;
        let (_, _, _, record) = open_ready(server).await;
        let _cleanup = TestNamespace::adopt(record.name.as_deref().unwrap()).await.unwrap();
        let warned = eventually("the environment is warned", || async {
            server.store.reconcile_record(record.id).await.ok()??.warned_at
        })
        .await;
        assert!(warned <= previewd_environments::time::now_ms());
        setup.server.stop().await;
    }

    async fn an_opened_pull_request_gets_an_environment_and_closing_it_removes_it(db) {
        let setup = start(&db, "60").await;
        let server = &setup.server;
        let (opened, repo_id, number, record) = open_ready(server).await;
        let name = record.name.clone().unwrap();
        let _cleanup = TestNamespace::adopt(&name).await.unwrap();
        assert_eq!(record.url.as_deref(), Some(format!("https://{name}.preview.test").as_str()));

        let mut closed = opened.clone();
        closed["action"] = "closed".into();
        closed["pull_request"]["merged"] = true.into();
        assert_eq!(server.deliver("pull_request", &format!("close-{repo_id}"), &closed).await.status(), 202);
        let deleted = eventually("the environment is Deleted", || async {
            let env = server.store.environment(RepoId(repo_id), number).await.ok()??;
            (env.state == "Deleted").then_some(env)
        })
        .await;
        assert_eq!(deleted.reason.as_deref(), Some("pull request merged"));
        setup.server.stop().await;
    }

    async fn a_deployment_deleted_by_hand_comes_back_with_the_drift_repair(db) {
        let setup = start(&db, "1").await;
        let server = &setup.server;
        let (_, _, _, record) = open_ready(server).await;
        let name = record.name.clone().unwrap();
        let _cleanup = TestNamespace::adopt(&name).await.unwrap();
        let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
            kube::Api::namespaced(previewd_e2e::cluster::admin_client().await.unwrap(), &name);
        let before = deployments.get("app").await.unwrap().metadata.uid.unwrap();
        deployments.delete("app", &kube::api::DeleteParams::default()).await.unwrap();
        // A new object (a new uid), made by the periodic pass's re-apply: no event names it.
        let after = eventually("the deployment is back", || async {
            deployments.get_opt("app").await.ok()??.metadata.uid.filter(|uid| *uid != before)
        })
        .await;
        assert_ne!(after, before);
        let env = server.store.reconcile_record(record.id).await.unwrap().unwrap();
        assert_eq!(env.state, "Ready", "a repaired environment stays ready");
        setup.server.stop().await;
    }

    async fn an_expired_environment_is_torn_down_and_orphaned_namespaces_are_removed(db) {
        // A real time to live, short enough to run out during the test: the engine decides
        // expiry from the last activity and the TTL alone, so no stored field is backdated.
        let setup = start_with(&db, "1", "", "ttl: 6s").await;
        let server = &setup.server;
        let (_, repo_id, number) = open(server).await;
        let named = eventually("the environment's namespace is named", || async {
            let env = server.store.environment(RepoId(repo_id), number).await.ok()??;
            server.store.reconcile_record(env.id).await.ok()??.name
        })
        .await;
        let _cleanup = TestNamespace::adopt(&named).await.unwrap();
        let deleted = eventually_within(Duration::from_secs(60), "the expired environment is Deleted", || async {
            let env = server.store.environment(RepoId(repo_id), number).await.ok()??;
            (env.state == "Deleted").then_some(env)
        })
        .await;
        assert_eq!(deleted.reason.as_deref(), Some("expired: its time to live ran out"));
        let states: Vec<String> =
            server.store.transitions(deleted.id).await.unwrap().into_iter().map(|t| t.to_state).collect();
        assert!(states.iter().any(|s| s == "Ready"), "it was Ready before it expired: {states:?}");
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
            kube::Api::all(previewd_e2e::cluster::admin_client().await.unwrap());
        assert!(namespaces.get_opt(&named).await.unwrap().is_none(), "the namespace is gone once Deleted");

        // A namespace labelled as this installation's, that no environment holds, is removed;
        // one of another installation is left alone.
        let mut orphans = Vec::new();
        for instance in [setup.instance.as_str(), "another-installation"] {
            let orphan_name = previewd_e2e::cluster::unique_name("orphan");
            let labels = [
                ("app.kubernetes.io/managed-by", "previewd"),
                ("previewd.dev/instance", instance),
                ("previewd.dev/environment", orphan_name.as_str()),
            ];
            let orphan = k8s_openapi::api::core::v1::Namespace {
                metadata: kube::api::ObjectMeta {
                    name: Some(orphan_name.clone()),
                    labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                    ..Default::default()
                },
                ..Default::default()
            };
            namespaces.create(&kube::api::PostParams::default(), &orphan).await.unwrap();
            orphans.push((TestNamespace::adopt(&orphan_name).await.unwrap(), orphan_name));
        }
        let ours = orphans[0].1.clone();
        eventually("the orphaned namespace is deleted", || async {
            let ns = namespaces.get_opt(&ours).await.ok()?;
            ns.is_none_or(|ns| ns.metadata.deletion_timestamp.is_some()).then_some(())
        })
        .await;
        let theirs = namespaces.get_opt(&orphans[1].1).await.unwrap().unwrap();
        assert!(theirs.metadata.deletion_timestamp.is_none(), "another installation's namespace was touched");
        setup.server.stop().await;
    }
}
