//! Deliveries through the real endpoint drive environments in the real cluster: the service,
//! its job queue and the engine together, on both stores.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestServer, config, eventually};
use previewd_e2e::cluster::{SOURCE_NAMESPACE, TestNamespace, kubeconfig_paths};
use previewd_e2e::fixtures::example;
use previewd_environments::model::{PrNumber, RepoId};
use std::path::Path;

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/fixtures").join(name).display().to_string()
}

previewd_e2e::each_backend! {
    async fn an_opened_pull_request_gets_an_environment_and_closing_it_removes_it(db) {
        let (_, least_privilege) = kubeconfig_paths().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let policy = std::fs::read_to_string(fixture("policy.yaml")).unwrap().replace("previewd-platform-secrets", SOURCE_NAMESPACE);
        let policy_file = dir.path().join("policy.yaml");
        std::fs::write(&policy_file, policy).unwrap();
        // Keep the test self-contained: no platform secret needed.
        let repo_config = std::fs::read_to_string(fixture("preview.yaml")).unwrap().replace("secrets: [db-readonly]", "secrets: []");
        let repo_config_file = dir.path().join("preview.yaml");
        std::fs::write(&repo_config_file, repo_config).unwrap();
        let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates").display().to_string();
        let server = TestServer::start_with(config(&db, &[
            ("PREVIEWD_POLICY_FILE", policy_file.to_str().unwrap()),
            ("PREVIEWD_REPO_CONFIG_FILE", repo_config_file.to_str().unwrap()),
            ("PREVIEWD_TEMPLATES_DIR", &templates),
            ("PREVIEWD_KUBECONFIG", least_privilege.to_str().unwrap()),
            ("PREVIEWD_INSTANCE", &format!("test-{}", uuid::Uuid::new_v4().simple())),
        ])).await;

        let mut opened = example("pull_request", "opened").unwrap();
        // A repository id of its own, so parallel runs never share a namespace.
        let repo_id = 2_000_000 + i64::from(uuid::Uuid::new_v4().as_bytes()[0]) * 256 + i64::from(uuid::Uuid::new_v4().as_bytes()[1]);
        opened["repository"]["id"] = repo_id.into();
        opened["repository"]["owner"]["login"] = "acme".into();
        opened["repository"]["name"] = "app".into();
        opened["pull_request"]["head"]["repo"]["id"] = repo_id.into();
        let number = PrNumber(opened["number"].as_i64().unwrap());
        assert_eq!(server.deliver("pull_request", &format!("open-{repo_id}"), &opened).await.status(), 202);
        let ready = eventually("the environment is Ready", || async {
            let env = server.store.environment(RepoId(repo_id), number).await.ok()??;
            assert_ne!(env.state, "Failed", "{:?}", env.reason);
            (env.state == "Ready").then_some(env)
        })
        .await;
        let record = server.store.reconcile_record(ready.id).await.unwrap().unwrap();
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
        server.stop().await;
    }
}
