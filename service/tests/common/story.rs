//! The end-to-end harness: the `previewd` binary, the GitHub stand-in, the cluster, BIND and a
//! store, for `story.rs` and `apiserver.rs`.

use previewd_e2e::cluster::{SOURCE_NAMESPACE, TestNamespace, kubeconfig_paths};
use previewd_e2e::database::TestDatabase;
use previewd_e2e::fixtures::TestRepo;
use previewd_e2e::previewd::Previewd;
use previewd_e2e::standin::GitHubStandIn;
use previewd_environments::model::{PrNumber, RepoId};
use previewd_environments::store::{ReconcileRecord, Store};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

pub const SECRET: &str = "story-webhook-secret";
pub const INSTALLATION: i64 = 91;
pub const OWNER: &str = "acme";

pub fn sha(c: char) -> String {
    c.to_string().repeat(40)
}

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/fixtures").join(name)).unwrap()
}

pub fn preview_yaml() -> String {
    fixture("preview.yaml").replace("secrets: [db-readonly]", "secrets: []")
}

pub struct Story {
    pub github: GitHubStandIn,
    pub previewd: Previewd,
    pub store: Store,
    pub repo_id: i64,
    pub repo: String,
    pub dns: previewd_e2e::dns::TestDnsServer,
    pub namespaces: Vec<TestNamespace>,
    pub env: Vec<(String, String)>,
    pub dir: tempfile::TempDir,
    /// The `.preview.yaml` pull requests get.
    pub preview: String,
}

/// The policy of the fixtures with DNS published to the local BIND server, and `change` applied.
pub fn policy(dns: &previewd_e2e::dns::TestDnsServer, change: impl Fn(String) -> String) -> String {
    let dns_block = format!(
        "dns:\n  provider: rfc2136\n  target: {{ a: 192.0.2.10 }}\n  ttl: 30\n  verify_timeout: 20s\n  \
         resolvers: [\"{server}\"]\n  rfc2136:\n    server: \"{server}\"\n    zone: {zone}\n    key_name: {key}\n    \
         key_secret_env: STORY_TSIG_SECRET\n",
        server = dns.server,
        zone = dns.zone,
        key = dns.tsig_name
    );
    let base = fixture("policy.yaml")
        .replace("previewd-platform-secrets", SOURCE_NAMESPACE)
        .replace("base_domain: preview.test", &format!("base_domain: {}", dns.base_domain));
    let start = base.find("dns:\n").unwrap();
    let end = base[start..].find("\n\n").map_or(base.len(), |e| start + e + 1);
    change(format!("{}{}{}", &base[..start], dns_block, &base[end..]))
}

pub use previewd_e2e::standin::{CLIENT_ID as STANDIN_CLIENT_ID, CLIENT_SECRET as STANDIN_CLIENT_SECRET};

pub async fn story(db: &TestDatabase, change_policy: impl Fn(String) -> String) -> Story {
    story_with(db, change_policy, &[]).await
}

/// [`story`] with some of previewd's variables set to other values (or added).
pub async fn story_with(
    db: &TestDatabase,
    change_policy: impl Fn(String) -> String,
    overrides: &[(&str, String)],
) -> Story {
    story_at(db, change_policy, overrides, false).await
}

/// [`story_with`]; with `under_base_domain`, the dashboard's public URL is
/// `http://previewd.<base domain>:<port>` (clients resolve it to the loopback themselves), as
/// signing in to protected previews needs.
pub async fn story_at(
    db: &TestDatabase,
    change_policy: impl Fn(String) -> String,
    overrides: &[(&str, String)],
    under_base_domain: bool,
) -> Story {
    let github = GitHubStandIn::start().await.unwrap();
    let app = github.app().await.unwrap();
    let dns = previewd_e2e::dns::server().unwrap();
    let (_, least_privilege) = kubeconfig_paths().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), policy(&dns, change_policy)).unwrap();
    std::fs::write(dir.path().join("app.pem"), &app.private_key_pem).unwrap();
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates");
    let port = previewd_e2e::previewd::free_port().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let public_url =
        if under_base_domain { format!("http://previewd.{}:{port}", dns.base_domain) } else { base.clone() };
    let path = |p: &Path| p.display().to_string();
    let env: Vec<(String, String)> = [
        ("PREVIEWD_DATABASE_URL", db.url.clone()),
        ("PREVIEWD_WEBHOOK_SECRETS", SECRET.to_owned()),
        ("PREVIEWD_POLICY_FILE", path(&dir.path().join("policy.yaml"))),
        ("PREVIEWD_TEMPLATES_DIR", path(&templates)),
        ("PREVIEWD_KUBECONFIG", path(&least_privilege)),
        ("PREVIEWD_INSTANCE", format!("story-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])),
        ("PREVIEWD_GITHUB__API_URL", github.url().to_owned()),
        ("PREVIEWD_GITHUB__APP_ID", app.app_id.to_string()),
        ("PREVIEWD_GITHUB__PRIVATE_KEY_FILE", path(&dir.path().join("app.pem"))),
        ("PREVIEWD_GITHUB__RESYNC_INTERVAL_SECONDS", "3600".to_owned()),
        ("PREVIEWD_ENGINE__RESYNC_INTERVAL_SECONDS", "1".to_owned()),
        ("PREVIEWD_QUEUE__POLL_INTERVAL_MS", "100".to_owned()),
        ("PREVIEWD_QUEUE__BACKOFF_INITIAL_MS", "100".to_owned()),
        ("PREVIEWD_QUEUE__BACKOFF_MAX_SECONDS", "2".to_owned()),
        ("PREVIEWD_QUEUE__LEASE_SECONDS", "5".to_owned()),
        ("PREVIEWD_LOG_FILTER", "info".to_owned()),
        ("STORY_TSIG_SECRET", dns.tsig_secret.clone()),
        // The dashboard signs people in through the stand-in's OAuth web flow.
        ("PREVIEWD_DASHBOARD__PUBLIC_URL", public_url),
        ("PREVIEWD_GITHUB__WEB_URL", github.url().to_owned()),
        ("PREVIEWD_GITHUB__CLIENT_ID", STANDIN_CLIENT_ID.to_owned()),
        ("PREVIEWD_GITHUB__CLIENT_SECRET", STANDIN_CLIENT_SECRET.to_owned()),
    ]
    .into_iter()
    .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
    .chain(overrides.iter().cloned())
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let previewd =
        Previewd::start_at(Path::new(env!("CARGO_BIN_EXE_previewd")), &env, &dir.path().join("previewd.log"), &base)
            .await
            .unwrap();
    github
        .configure(json!({"webhook_url": format!("{}/webhooks/github", previewd.base), "webhook_secret": SECRET}))
        .await
        .unwrap();
    let repo_id = 5_000_000
        + i64::from(u16::from_be_bytes([uuid::Uuid::new_v4().as_bytes()[0], uuid::Uuid::new_v4().as_bytes()[1]]));
    let repo = format!("shop{}", repo_id % 1000);
    github.add_repo(repo_id, OWNER, &repo, Some(INSTALLATION)).await.unwrap();
    github.set_permission(OWNER, &repo, "writer", "write").await.unwrap();
    github.set_permission(OWNER, &repo, "reader", "read").await.unwrap();
    let store = Store::connect(&db.url.as_str().into()).await.unwrap();
    Story { github, previewd, store, repo_id, repo, dns, namespaces: Vec::new(), env, dir, preview: preview_yaml() }
}

impl Drop for Story {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("previewd's log (last lines):\n{}", self.previewd.log_tail(80));
        }
    }
}

impl Story {
    fn target(&self) -> TestRepo {
        TestRepo { id: self.repo_id, owner: OWNER.to_owned(), name: self.repo.clone(), installation: INSTALLATION }
    }

    pub fn pull_request(&self, action: &str, number: i64, head: &str) -> Value {
        self.target().pull_request(action, number, head).unwrap()
    }

    pub fn comment_payload(&self, number: i64, comment_id: i64, login: &str, body: &str) -> Value {
        self.target().comment(number, comment_id, login, body).unwrap()
    }

    pub async fn deliver(&self, event: &str, payload: &Value) -> previewd_e2e::standin::Delivered {
        let delivered = self.github.deliver(event, payload).await.unwrap();
        assert_eq!(delivered.status_code, 202, "{delivered:?}");
        delivered
    }

    /// A pull request on GitHub with a `.preview.yaml` at its head, opened by delivery.
    pub async fn open(&self, number: i64, head: &str) {
        self.github.put_file(OWNER, &self.repo, head, ".preview.yaml", Some(&self.preview)).await.unwrap();
        self.github
            .open_pull(json!({"owner": OWNER, "repo": self.repo, "number": number, "head_sha": head}))
            .await
            .unwrap();
        self.deliver("pull_request", &self.pull_request("opened", number, head)).await;
    }

    pub async fn push(&self, number: i64, head: &str) {
        self.github.put_file(OWNER, &self.repo, head, ".preview.yaml", Some(&preview_yaml())).await.unwrap();
        self.github.update_pull(OWNER, &self.repo, number, json!({"head_sha": head})).await.unwrap();
        self.deliver("pull_request", &self.pull_request("synchronize", number, head)).await;
    }

    /// Closed without merge, on GitHub and by delivery.
    pub async fn close(&self, number: i64, head: &str) {
        self.github.update_pull(OWNER, &self.repo, number, json!({"state": "closed"})).await.unwrap();
        self.deliver("pull_request", &self.closed(number, head, false)).await;
    }

    /// Merged, on GitHub and by delivery.
    pub async fn merge(&self, number: i64, head: &str) {
        self.github.update_pull(OWNER, &self.repo, number, json!({"merged": true})).await.unwrap();
        self.deliver("pull_request", &self.closed(number, head, true)).await;
    }

    fn closed(&self, number: i64, head: &str, merged: bool) -> Value {
        let mut closed = self.pull_request("closed", number, head);
        closed["pull_request"]["state"] = "closed".into();
        closed["pull_request"]["merged"] = merged.into();
        closed
    }

    pub async fn environment(&self, number: i64) -> Option<ReconcileRecord> {
        self.store.reconcile_record_for(RepoId(self.repo_id), PrNumber(number)).await.unwrap()
    }

    /// Waits up to two minutes until `number`'s environment passes `check`; a timeout names
    /// the state and reason it was last seen in, and the transitions it went through.
    pub async fn wait(&mut self, number: i64, what: &str, check: impl Fn(&ReconcileRecord) -> bool) -> ReconcileRecord {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let env = loop {
            let env = self.environment(number).await;
            if let Some(env) = env.as_ref().filter(|e| check(e)) {
                break env.clone();
            }
            if tokio::time::Instant::now() >= deadline {
                let history = match &env {
                    Some(e) => format!("{:#?}", self.store.transitions(e.id).await.unwrap()),
                    None => String::new(),
                };
                panic!(
                    "timed out waiting until #{number}: {what}; last seen: {}\n{history}",
                    env.map_or("no environment".to_owned(), |e| format!(
                        "state {} reason {:?} head {} deployed {:?}",
                        e.state, e.reason, e.head_sha, e.deployed_sha
                    ))
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if let Some(name) = &env.name
            && !self.namespaces.iter().any(|n| n.name() == name)
        {
            self.namespaces.push(TestNamespace::adopt(name).await.unwrap());
        }
        env
    }

    pub async fn wait_state(&mut self, number: i64, state: &str) -> ReconcileRecord {
        self.wait(number, &format!("state {state}"), |e| e.state == state).await
    }

    /// previewd's sticky comments on `number`.
    pub async fn sticky(&self, number: i64) -> Vec<Value> {
        let comments = self.github.comments(number).await.unwrap();
        comments.into_iter().filter(|c| c["body"].as_str().is_some_and(|b| b.contains("<!-- previewd:"))).collect()
    }

    /// Waits until the one sticky comment on `number` contains every one of `texts`.
    pub async fn comment_says(&self, number: i64, texts: &[&str]) -> String {
        super::eventually_within(
            Duration::from_secs(60),
            &format!("the comment on #{number} says {texts:?}"),
            || async {
                let comments = self.sticky(number).await;
                assert!(comments.len() <= 1, "more than one sticky comment: {comments:#?}");
                let body = comments.first()?["body"].as_str()?.to_owned();
                texts.iter().all(|t| body.contains(t)).then_some(body)
            },
        )
        .await
    }

    /// The deployments of `sha` and their statuses in order.
    pub async fn deployment_states(&self, sha: &str) -> Vec<Vec<String>> {
        let deployments = self.github.deployments().await.unwrap();
        deployments
            .iter()
            .filter(|d| d["sha"] == sha)
            .map(|d| {
                d["statuses"].as_array().unwrap().iter().map(|s| s["state"].as_str().unwrap().to_owned()).collect()
            })
            .collect()
    }

    pub async fn wait_deployment(&self, sha: &str, state: &str) {
        super::eventually_within(Duration::from_secs(60), &format!("the deployment of {sha} is {state}"), || async {
            let all = self.deployment_states(sha).await;
            assert!(all.len() <= 1, "more than one deployment of {sha}: {all:?}");
            (all.first()?.last()? == state).then_some(())
        })
        .await;
    }

    /// Waits until each of `heads` (pull request number, head SHA) is Ready and reported (its
    /// deployment `success`, the comment showing its URL), then checks that nothing was done
    /// twice: one sticky comment each, one deployment of each head.
    pub async fn all_ready_and_reported_once(&mut self, heads: &[(i64, String)]) {
        for (number, head) in heads {
            let ready = self.wait_state(*number, "Ready").await;
            self.wait_deployment(head, "success").await;
            self.comment_says(*number, &[ready.url.as_deref().unwrap()]).await;
        }
        for (number, head) in heads {
            assert_eq!(self.sticky(*number).await.len(), 1, "one comment on #{number}");
            assert_eq!(self.deployment_states(head).await.len(), 1, "one deployment of #{number}'s head");
        }
    }

    pub async fn resolves(&self, host: &str, timeout: Duration) -> bool {
        let policy: previewd_environments::policy::Policy = previewd_environments::policy::Policy::from_yaml(
            &std::fs::read_to_string(self.dir.path().join("policy.yaml")).unwrap(),
            "policy",
        )
        .unwrap();
        let mut dns = policy.dns.clone();
        dns.verify_timeout = timeout;
        let secret = previewd_environments::dns::SecretBytes::from_base64(&self.dns.tsig_secret).unwrap();
        previewd_environments::dns::Dns::from_policy(&dns, Some(secret)).unwrap().verify(host).await.is_ok()
    }

    pub async fn finish(mut self) {
        if let Err(error) = self.github.assert_no_violations().await {
            panic!("{error}");
        }
        self.previewd.stop().await.unwrap();
        let log = self.previewd.log();
        for secret in [SECRET, self.dns.tsig_secret.as_str()] {
            assert!(!log.contains(secret), "a secret appears in previewd's log");
        }
    }
}
