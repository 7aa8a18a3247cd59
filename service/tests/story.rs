//! The whole pull-request story end to end: the `previewd` binary started as a user starts it,
//! against the real control plane, the local BIND server, Postgres or the embedded SQLite, and
//! the GitHub stand-in (GitHub's published example payloads, adjusted and signed; every request
//! previewd makes checked against GitHub's OpenAPI description).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use previewd_e2e::cluster::{SOURCE_NAMESPACE, TestNamespace, admin_client, kubeconfig_paths};
use previewd_e2e::database::TestDatabase;
use previewd_e2e::fixtures::example;
use previewd_e2e::previewd::Previewd;
use previewd_e2e::standin::GitHubStandIn;
use previewd_environments::model::{PrNumber, RepoId};
use previewd_environments::store::{ReconcileRecord, Store};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const SECRET: &str = "story-webhook-secret";
const INSTALLATION: i64 = 91;
const OWNER: &str = "acme";

fn sha(c: char) -> String {
    c.to_string().repeat(40)
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/fixtures").join(name)).unwrap()
}

fn preview_yaml() -> String {
    fixture("preview.yaml").replace("secrets: [db-readonly]", "secrets: []")
}

/// Polls `check` every 50 ms until it returns `Some`; fails after `limit` with `what`.
async fn until<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Story {
    github: GitHubStandIn,
    previewd: Previewd,
    store: Store,
    repo_id: i64,
    repo: String,
    dns: previewd_e2e::dns::TestDnsServer,
    namespaces: Vec<TestNamespace>,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
    /// The `.preview.yaml` pull requests get.
    preview: String,
}

/// The policy of the fixtures with DNS published to the local BIND server, and `change` applied.
fn policy(dns: &previewd_e2e::dns::TestDnsServer, change: impl Fn(String) -> String) -> String {
    let dns_block = format!(
        "dns:\n  provider: rfc2136\n  target: {{ a: 192.0.2.10 }}\n  ttl: 30\n  verify_timeout: 20s\n  \
         resolvers: [\"{server}\"]\n  rfc2136:\n    server: \"{server}\"\n    zone: {zone}\n    key_name: {key}\n    \
         key_secret_env: STORY_TSIG_SECRET\n",
        server = dns.server,
        zone = dns.zone,
        key = dns.tsig_name
    );
    let base = fixture("policy.yaml").replace("previewd-platform-secrets", SOURCE_NAMESPACE);
    let start = base.find("dns:\n").unwrap();
    let end = base[start..].find("\n\n").map_or(base.len(), |e| start + e + 1);
    change(format!("{}{}{}", &base[..start], dns_block, &base[end..]))
}

async fn story(db: &TestDatabase, change_policy: impl Fn(String) -> String) -> Story {
    let github = GitHubStandIn::start().await.unwrap();
    let app = github.app().await.unwrap();
    let dns = previewd_e2e::dns::server().unwrap();
    let (_, least_privilege) = kubeconfig_paths().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), policy(&dns, change_policy)).unwrap();
    std::fs::write(dir.path().join("app.pem"), &app.private_key_pem).unwrap();
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates");
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
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let previewd = Previewd::start(Path::new(env!("CARGO_BIN_EXE_previewd")), &env, &dir.path().join("previewd.log"))
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
    let store = Store::connect(&db.url).await.unwrap();
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
    fn pull_request(&self, action: &str, number: i64, head: &str) -> Value {
        let mut p = example("pull_request", "opened").unwrap();
        p["action"] = action.into();
        p["number"] = number.into();
        for path in [&["repository"][..], &["pull_request", "base", "repo"], &["pull_request", "head", "repo"]] {
            let target = path.iter().fold(&mut p, |v, k| &mut v[*k]);
            target["id"] = self.repo_id.into();
            target["name"] = self.repo.clone().into();
            target["full_name"] = format!("{OWNER}/{}", self.repo).into();
            target["owner"]["login"] = OWNER.into();
        }
        p["pull_request"]["number"] = number.into();
        p["pull_request"]["head"]["sha"] = head.into();
        p["pull_request"]["head"]["ref"] = format!("feature-{number}").into();
        p["pull_request"]["user"]["login"] = "dev".into();
        p["pull_request"]["draft"] = false.into();
        p["pull_request"]["labels"] = json!([]);
        p["installation"] = json!({"id": INSTALLATION, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uOTE="});
        p
    }

    fn comment_payload(&self, number: i64, comment_id: i64, login: &str, body: &str) -> Value {
        let mut p = example("issue_comment", "created").unwrap();
        p["repository"]["id"] = self.repo_id.into();
        p["repository"]["name"] = self.repo.clone().into();
        p["repository"]["full_name"] = format!("{OWNER}/{}", self.repo).into();
        p["repository"]["owner"]["login"] = OWNER.into();
        p["issue"]["number"] = number.into();
        p["issue"]["pull_request"] =
            json!({"url": format!("https://api.github.com/repos/{OWNER}/{}/pulls/{number}", self.repo)});
        p["comment"]["id"] = comment_id.into();
        p["comment"]["body"] = body.into();
        p["comment"]["user"]["login"] = login.into();
        p["installation"] = json!({"id": INSTALLATION});
        p
    }

    async fn deliver(&self, event: &str, payload: &Value) -> previewd_e2e::standin::Delivered {
        let delivered = self.github.deliver(event, payload).await.unwrap();
        assert_eq!(delivered.status_code, 202, "{delivered:?}");
        delivered
    }

    /// A pull request on GitHub with a `.preview.yaml` at its head, opened by delivery.
    async fn open(&self, number: i64, head: &str) {
        self.github.put_file(OWNER, &self.repo, head, ".preview.yaml", Some(&self.preview)).await.unwrap();
        self.github
            .open_pull(json!({"owner": OWNER, "repo": self.repo, "number": number, "head_sha": head}))
            .await
            .unwrap();
        self.deliver("pull_request", &self.pull_request("opened", number, head)).await;
    }

    async fn push(&self, number: i64, head: &str) {
        self.github.put_file(OWNER, &self.repo, head, ".preview.yaml", Some(&preview_yaml())).await.unwrap();
        self.github.update_pull(OWNER, &self.repo, number, json!({"head_sha": head})).await.unwrap();
        self.deliver("pull_request", &self.pull_request("synchronize", number, head)).await;
    }

    async fn close(&self, number: i64, head: &str) {
        self.github.update_pull(OWNER, &self.repo, number, json!({"state": "closed"})).await.unwrap();
        let mut closed = self.pull_request("closed", number, head);
        closed["pull_request"]["state"] = "closed".into();
        closed["pull_request"]["merged"] = false.into();
        self.deliver("pull_request", &closed).await;
    }

    async fn environment(&self, number: i64) -> Option<ReconcileRecord> {
        self.store.reconcile_record_for(RepoId(self.repo_id), PrNumber(number)).await.unwrap()
    }

    async fn wait(&mut self, number: i64, what: &str, check: impl Fn(&ReconcileRecord) -> bool) -> ReconcileRecord {
        let env = until(Duration::from_secs(120), &format!("#{number}: {what}"), || async {
            let env = self.environment(number).await?;
            check(&env).then_some(env)
        })
        .await;
        if let Some(name) = &env.name
            && !self.namespaces.iter().any(|n| n.name() == name)
        {
            self.namespaces.push(TestNamespace::adopt(name).await.unwrap());
        }
        env
    }

    async fn wait_state(&mut self, number: i64, state: &str) -> ReconcileRecord {
        self.wait(number, &format!("state {state}"), |e| e.state == state).await
    }

    /// previewd's sticky comments on `number`.
    async fn sticky(&self, number: i64) -> Vec<Value> {
        let comments = self.github.comments(number).await.unwrap();
        comments.into_iter().filter(|c| c["body"].as_str().is_some_and(|b| b.contains("<!-- previewd:"))).collect()
    }

    /// Waits until the one sticky comment on `number` contains every one of `texts`.
    async fn comment_says(&self, number: i64, texts: &[&str]) -> String {
        until(Duration::from_secs(60), &format!("the comment on #{number} says {texts:?}"), || async {
            let comments = self.sticky(number).await;
            assert!(comments.len() <= 1, "more than one sticky comment: {comments:#?}");
            let body = comments.first()?["body"].as_str()?.to_owned();
            texts.iter().all(|t| body.contains(t)).then_some(body)
        })
        .await
    }

    /// The deployments of `sha` and their statuses in order.
    async fn deployment_states(&self, sha: &str) -> Vec<Vec<String>> {
        let deployments = self.github.deployments().await.unwrap();
        deployments
            .iter()
            .filter(|d| d["sha"] == sha)
            .map(|d| {
                d["statuses"].as_array().unwrap().iter().map(|s| s["state"].as_str().unwrap().to_owned()).collect()
            })
            .collect()
    }

    async fn wait_deployment(&self, sha: &str, state: &str) {
        until(Duration::from_secs(60), &format!("the deployment of {sha} is {state}"), || async {
            let all = self.deployment_states(sha).await;
            assert!(all.len() <= 1, "more than one deployment of {sha}: {all:?}");
            (all.first()?.last()? == state).then_some(())
        })
        .await;
    }

    async fn resolves(&self, host: &str, timeout: Duration) -> bool {
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

    async fn finish(mut self) {
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

previewd_e2e::each_backend! {
    async fn opened_pushed_and_closed(db) {
        let mut s = story(&db, |p| p).await;
        // 1. Opened: namespace, pod Ready, DNS resolves, deployment success, comment with URL and expiry.
        s.open(1, &sha('a')).await;
        let ready = s.wait_state(1, "Ready").await;
        let name = ready.name.clone().unwrap();
        let host = format!("{name}.{}", s.dns.zone);
        assert!(s.resolves(&host, Duration::from_secs(5)).await, "{host} resolves");
        let admin = admin_client().await.unwrap();
        let deployment: kube::Api<k8s_openapi::api::apps::v1::Deployment> = kube::Api::namespaced(admin.clone(), &name);
        let app = deployment.get("app").await.unwrap();
        assert_eq!(app.status.as_ref().unwrap().ready_replicas, Some(1));
        let image = |d: &k8s_openapi::api::apps::v1::Deployment| d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].image.clone().unwrap();
        assert!(image(&app).ends_with(&sha('a')));
        s.wait_deployment(&sha('a'), "success").await;
        s.comment_says(1, &[ready.url.as_deref().unwrap(), "Expires", "aaaaaaa"]).await;

        // 2. Pushed: same namespace, new image, new deployment; three quick pushes end on the newest.
        s.push(1, &sha('b')).await;
        s.wait(1, "b deployed", |e| e.state == "Ready" && e.deployed_sha.as_deref() == Some(sha('b').as_str())).await;
        s.wait_deployment(&sha('b'), "success").await;
        s.comment_says(1, &["bbbbbbb"]).await;
        for c in ['c', 'd', 'e'] {
            s.push(1, &sha(c)).await;
        }
        let newest = s.wait(1, "e deployed", |e| e.state == "Ready" && e.deployed_sha.as_deref() == Some(sha('e').as_str())).await;
        assert_eq!(newest.name.as_deref(), Some(name.as_str()), "the same namespace");
        assert!(image(&deployment.get("app").await.unwrap()).ends_with(&sha('e')));
        s.wait_deployment(&sha('e'), "success").await;
        s.comment_says(1, &["eeeeeee"]).await;

        // 3. Closed without merge: namespace and record gone, deployment inactive, comment says why.
        s.close(1, &sha('e')).await;
        let gone = s.wait_state(1, "Deleted").await;
        assert_eq!(gone.reason.as_deref(), Some("pull request closed without merge"));
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(admin);
        assert!(namespaces.get_opt(&name).await.unwrap().is_none(), "the namespace is gone");
        assert!(!s.resolves(&host, Duration::from_millis(500)).await, "the record is gone");
        s.wait_deployment(&sha('e'), "inactive").await;
        s.comment_says(1, &["torn down", "closed without merge"]).await;
        s.finish().await;
    }

    async fn killed_mid_provisioning_and_redelivered(db) {
        // 8. SIGKILL while provisioning: after a restart the environment converges, with one
        // comment and one deployment.
        let mut s = story(&db, |p| p).await;
        s.open(2, &sha('f')).await;
        s.wait(2, "provisioning started", |e| e.state == "Provisioning" || e.state == "Ready").await;
        s.previewd.kill().await.unwrap();
        s.previewd.restart().await.unwrap();
        s.wait_state(2, "Ready").await;
        s.wait_deployment(&sha('f'), "success").await;
        s.comment_says(2, &["Preview environment ready"]).await;
        assert_eq!(s.sticky(2).await.len(), 1);

        // The same delivery sent again is processed once.
        let opened = s.pull_request("reopened", 3, &sha('1'));
        s.github.put_file(OWNER, &s.repo, &sha('1'), ".preview.yaml", Some(&preview_yaml())).await.unwrap();
        let first = s.deliver("pull_request", &opened).await;
        let again = s.github.deliver_as(&first.guid, "pull_request", &opened).await.unwrap();
        assert_eq!(again.status_code, 200, "acknowledged as a duplicate");
        s.wait_state(3, "Ready").await;
        let delivery = s.store.find_delivery("4242", &first.guid).await.unwrap().unwrap();
        assert_eq!(s.store.jobs_for_delivery(delivery.id).await.unwrap().len(), 1, "one job for the delivery");
        assert_eq!(s.store.transitions(s.environment(3).await.unwrap().id).await.unwrap().iter().filter(|t| t.to_state == "Pending").count(), 1);
        s.finish().await;
    }

    async fn quota_queue_and_forks(db) {
        // 5. With one environment per repository and `queue`, the second waits, naming the limit,
        // and gets its environment when the first closes. 6. A fork gets none, and is told why.
        let mut s = story(&db, |p| p.replace("  per_repository: 5\n  when_full: reject", "  per_repository: 1\n  when_full: queue")).await;
        s.open(4, &sha('4')).await;
        s.wait_state(4, "Ready").await;
        s.open(5, &sha('5')).await;
        let waiting = s.wait(5, "waiting for a slot", |e| e.reason.as_deref().is_some_and(|r| r.contains("repository limit reached"))).await;
        assert_eq!(waiting.state, "Pending");
        s.comment_says(5, &["repository limit reached", "(limit 1)"]).await;

        let mut fork = s.pull_request("opened", 6, &sha('6'));
        fork["pull_request"]["head"]["repo"]["id"] = (s.repo_id + 1).into();
        fork["pull_request"]["head"]["repo"]["owner"]["login"] = "stranger".into();
        s.deliver("pull_request", &fork).await;
        let rejected = s.wait_state(6, "Rejected").await;
        assert!(rejected.reason.unwrap().contains("forks"));
        s.comment_says(6, &["No preview environment", "forks"]).await;

        s.close(4, &sha('4')).await;
        s.wait_state(4, "Deleted").await;
        s.wait_state(5, "Ready").await;
        s.comment_says(5, &["Preview environment ready"]).await;
        s.finish().await;
    }

    async fn expiry_warning_extension_and_teardown(db) {
        // 4. A warning in the comment before expiry; a writer's extension moves it, a reader's is
        // refused; an environment left alone is torn down at expiry.
        let mut s = story(&db, |p| p.replace("ttl:\n  default: 48h\n  max: 7d\n  warn_before: 2h", "ttl:\n  default: 20s\n  max: 7d\n  warn_before: 15s")).await;
        // The fixture's `.preview.yaml` asks for 24h; this one for the policy's default.
        s.preview = preview_yaml().replace("ttl: 24h\n", "");
        s.open(7, &sha('7')).await;
        let ready = s.wait_state(7, "Ready").await;
        s.comment_says(7, &["Expires soon"]).await;
        let before = ready.expires_at.unwrap();
        let id = s.github.comment_as(OWNER, &s.repo, 7, "reader", "/preview extend 2h").await.unwrap();
        s.deliver("issue_comment", &s.comment_payload(7, id, "reader", "/preview extend 2h")).await;
        let id = s.github.comment_as(OWNER, &s.repo, 7, "writer", "/preview extend 2h").await.unwrap();
        s.deliver("issue_comment", &s.comment_payload(7, id, "writer", "/preview extend 2h")).await;
        let extended = s.wait(7, "extended", |e| e.expires_at.is_some_and(|at| at > before + 3_600_000)).await;
        assert_eq!(extended.state, "Ready");
        s.comment_says(7, &["@writer extended"]).await;
        let comments = s.github.comments(7).await.unwrap();
        assert!(comments.iter().any(|c| c["body"].as_str().unwrap().contains("Sorry @reader")), "the reader is refused");

        s.open(8, &sha('8')).await;
        let expired = s.wait_state(8, "Deleted").await;
        assert_eq!(expired.reason.as_deref(), Some("expired: its time to live ran out"));
        s.comment_says(8, &["expired"]).await;
        assert_eq!(s.environment(7).await.unwrap().state, "Ready", "the extended one lives on");
        s.finish().await;
    }
}

#[tokio::test]
async fn two_replicas_on_postgres_provision_each_environment_once() {
    // 9. Two previewd processes on one Postgres take the same deliveries at the same time.
    let db = previewd_e2e::database::fresh(previewd_e2e::database::Backend::Postgres).await.unwrap();
    let mut s = story(&db, |p| p).await;
    let mut second =
        Previewd::start(Path::new(env!("CARGO_BIN_EXE_previewd")), &s.env, &s.dir.path().join("second.log"))
            .await
            .unwrap();
    let http = reqwest::Client::new();
    // The fixture policy allows five live environments per repository.
    let numbers: Vec<i64> = (20..25).collect();
    for &n in &numbers {
        let head = format!("{n:0>40}");
        s.github.put_file(OWNER, &s.repo, &head, ".preview.yaml", Some(&preview_yaml())).await.unwrap();
        s.github.open_pull(json!({"owner": OWNER, "repo": s.repo, "number": n, "head_sha": head})).await.unwrap();
        let body = serde_json::to_vec(&s.pull_request("opened", n, &head)).unwrap();
        let signature = previewd_e2e::github::sign(SECRET, &body);
        let guid = uuid::Uuid::new_v4().to_string();
        // Each delivery reaches both replicas at once (a retried or duplicated delivery).
        let send = |base: String| {
            http.post(format!("{base}/webhooks/github"))
                .header("X-GitHub-Event", "pull_request")
                .header("X-GitHub-Delivery", &guid)
                .header("X-GitHub-Hook-ID", "4242")
                .header("X-Hub-Signature-256", &signature)
                .header("Content-Type", "application/json")
                .body(body.clone())
                .send()
        };
        let (a, b) = tokio::join!(send(s.previewd.base.clone()), send(second.base.clone()));
        let mut statuses = [a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
        statuses.sort_unstable();
        // One replica stores it (202), the other recognises the duplicate (200).
        assert_eq!(statuses, [200, 202]);
    }
    for &n in &numbers {
        let head = format!("{n:0>40}");
        let env = s.wait_state(n, "Ready").await;
        s.wait_deployment(&head, "success").await;
        s.comment_says(n, &[env.url.as_deref().unwrap()]).await;
        let history = s.store.transitions(env.id).await.unwrap();
        let provisioned = history.iter().filter(|t| t.to_state == "Provisioning").count();
        assert_eq!(provisioned, 1, "provisioned once: {history:?}");
    }
    second.stop().await.unwrap();
    s.finish().await;
}
