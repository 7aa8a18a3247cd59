//! previewd and GitHub: deliveries sent by the GitHub stand-in (GitHub's published example
//! payloads, adjusted and signed), environments in the real cluster, and what previewd says on
//! the pull request through the stand-in, whose every request is checked against GitHub's
//! OpenAPI description.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{SECRET, TestServer, config, eventually, eventually_within};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use previewd_e2e::cluster::{SOURCE_NAMESPACE, TestNamespace, kubeconfig_paths};
use previewd_e2e::database::{Backend, TestDatabase, fresh};
use previewd_e2e::fixtures::{TestRepo, example, github_time};
use previewd_e2e::standin::GitHubStandIn;
use previewd_environments::model::{PrNumber, RepoId};
use previewd_environments::store::ReconcileRecord;
use previewd_environments::time::now_ms;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const INSTALLATION: i64 = 77;
const OWNER: &str = "acme";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/fixtures").join(name)).unwrap()
}

fn sha(c: char) -> String {
    c.to_string().repeat(40)
}

/// A `.preview.yaml` the cluster can run without platform secrets.
fn preview_yaml() -> String {
    fixture("preview.yaml").replace("secrets: [db-readonly]", "secrets: []")
}

struct World {
    github: GitHubStandIn,
    server: TestServer,
    repo_id: i64,
    repo: String,
    /// `PREVIEWD_INSTANCE`, part of the sticky comment's marker.
    instance: String,
    /// Who previewd writes as: the App's bot, or the token's user.
    login: String,
    namespaces: Vec<TestNamespace>,
    _dir: tempfile::TempDir,
}

struct Options<'a> {
    /// Repository name; policy overrides exist for `labelled` and `forks-welcome`.
    repo: &'a str,
    /// Extra policy YAML appended to the fixture policy.
    policy_extra: &'a str,
    resync_seconds: &'a str,
    /// A personal access token instead of the App.
    token: bool,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options { repo: "app", policy_extra: "", resync_seconds: "3600", token: false }
    }
}

async fn world(db: &TestDatabase, options: Options<'_>) -> World {
    let github = GitHubStandIn::start().await.unwrap();
    let app = github.app().await.unwrap();
    let (_, least_privilege) = kubeconfig_paths().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = fixture("policy.yaml").replace("previewd-platform-secrets", SOURCE_NAMESPACE) + options.policy_extra;
    let policy_file = dir.path().join("policy.yaml");
    std::fs::write(&policy_file, policy).unwrap();
    let key_file = dir.path().join("app.pem");
    std::fs::write(&key_file, &app.private_key_pem).unwrap();
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates").display().to_string();
    let instance = format!("test-{}", uuid::Uuid::new_v4().simple());
    let app_id = app.app_id.to_string();
    let mut env = vec![
        ("PREVIEWD_POLICY_FILE", policy_file.to_str().unwrap().to_owned()),
        ("PREVIEWD_TEMPLATES_DIR", templates),
        ("PREVIEWD_KUBECONFIG", least_privilege.to_str().unwrap().to_owned()),
        ("PREVIEWD_INSTANCE", instance.clone()),
        ("PREVIEWD_GITHUB__API_URL", github.url().to_owned()),
        ("PREVIEWD_GITHUB__RESYNC_INTERVAL_SECONDS", options.resync_seconds.to_owned()),
        ("PREVIEWD_ENGINE__RESYNC_INTERVAL_SECONDS", "2".to_owned()),
    ];
    if options.token {
        env.push(("PREVIEWD_GITHUB__TOKEN", "ghp_test_token".to_owned()));
    } else {
        env.push(("PREVIEWD_GITHUB__APP_ID", app_id));
        env.push(("PREVIEWD_GITHUB__PRIVATE_KEY_FILE", key_file.to_str().unwrap().to_owned()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = TestServer::start_with(config(db, &env)).await;
    github
        .configure(json!({
            "webhook_url": format!("{}/webhooks/github", server.base),
            "webhook_secret": SECRET,
            "pats": [{"token": "ghp_test_token", "login": "preview-bot"}],
        }))
        .await
        .unwrap();
    let repo_id = fresh_repo_id(3_000_000);
    github.add_repo(repo_id, OWNER, options.repo, Some(INSTALLATION)).await.unwrap();
    github.set_permission(OWNER, options.repo, "writer", "write").await.unwrap();
    github.set_permission(OWNER, options.repo, "reader", "read").await.unwrap();
    let login = if options.token { "preview-bot".to_owned() } else { app.bot_login.clone() };
    World { github, server, repo_id, repo: options.repo.to_owned(), instance, login, namespaces: Vec::new(), _dir: dir }
}

/// A repository id of its own, so parallel tests never share a namespace.
fn fresh_repo_id(base: i64) -> i64 {
    base + i64::from(u16::from_be_bytes([uuid::Uuid::new_v4().as_bytes()[0], uuid::Uuid::new_v4().as_bytes()[1]]))
}

impl World {
    fn target(&self) -> TestRepo {
        TestRepo { id: self.repo_id, owner: OWNER.to_owned(), name: self.repo.clone(), installation: INSTALLATION }
    }

    /// A `pull_request` delivery built from GitHub's published example, with the `pull_request`
    /// fields of `extra` laid over it.
    fn pull_request(&self, action: &str, number: i64, head: &str, extra: Value) -> Value {
        let mut p = self.target().pull_request(action, number, head).unwrap();
        if let Some(pull) = extra.get("pull_request").and_then(Value::as_object) {
            for (k, v) in pull {
                p["pull_request"][k] = v.clone();
            }
        }
        p
    }

    /// Opens pull request `number` at `head` (on the stand-in and by delivery); returns the
    /// delivery's guid.
    async fn open(&mut self, number: i64, head: &str, with_config: bool) -> String {
        if with_config {
            self.github.put_file(OWNER, &self.repo, head, ".preview.yaml", Some(&preview_yaml())).await.unwrap();
        }
        self.github
            .open_pull(json!({"owner": OWNER, "repo": self.repo, "number": number, "head_sha": head, "user": "dev"}))
            .await
            .unwrap();
        let delivered =
            self.github.deliver("pull_request", &self.pull_request("opened", number, head, json!({}))).await.unwrap();
        assert_eq!(delivered.status_code, 202, "{delivered:?}");
        delivered.guid
    }

    /// Opens pull request `number` at `head` in `other`, a second repository of the
    /// installation (on the stand-in and by delivery); returns that repository.
    async fn open_in_other_repository(&self, number: i64, head: &str) -> TestRepo {
        let other = TestRepo {
            id: self.repo_id + 100_000,
            owner: OWNER.to_owned(),
            name: "other".to_owned(),
            installation: INSTALLATION,
        };
        self.github.add_repo(other.id, OWNER, &other.name, Some(INSTALLATION)).await.unwrap();
        self.github.put_file(OWNER, &other.name, head, ".preview.yaml", Some(&preview_yaml())).await.unwrap();
        self.github
            .open_pull(json!({"owner": OWNER, "repo": other.name, "number": number, "head_sha": head, "user": "dev"}))
            .await
            .unwrap();
        let opened = other.pull_request("opened", number, head).unwrap();
        assert_eq!(self.github.deliver("pull_request", &opened).await.unwrap().status_code, 202);
        other
    }

    /// Opens pull request `number` at `head` from a fork by `stranger`; returns the delivery.
    async fn open_fork(&self, number: i64, head: &str) -> Value {
        self.github.put_file(OWNER, &self.repo, head, ".preview.yaml", Some(&preview_yaml())).await.unwrap();
        self.github
            .open_pull(json!({"owner": OWNER, "repo": self.repo, "number": number, "head_sha": head, "user": "stranger", "fork": true}))
            .await
            .unwrap();
        let mut opened = self.pull_request("opened", number, head, json!({}));
        opened["pull_request"]["head"]["repo"]["id"] = (self.repo_id + 1).into();
        opened["pull_request"]["head"]["repo"]["owner"]["login"] = "stranger".into();
        // Opened a while ago by GitHub's clock, so an approval written now comes after it.
        opened["pull_request"]["updated_at"] = github_time(now_ms() - 600_000).into();
        assert_eq!(self.github.deliver("pull_request", &opened).await.unwrap().status_code, 202);
        opened
    }

    /// The fork's author pushes `head` to pull request `number` (opened with `opened`), at GitHub
    /// time `at`: on the stand-in and by delivery. Returns the delivery's guid.
    async fn push_fork(&self, opened: &Value, number: i64, head: &str, at: i64) -> String {
        self.github.put_file(OWNER, &self.repo, head, ".preview.yaml", Some(&preview_yaml())).await.unwrap();
        self.github.update_pull(OWNER, &self.repo, number, json!({"head_sha": head})).await.unwrap();
        let mut pushed = opened.clone();
        pushed["action"] = "synchronize".into();
        pushed["pull_request"]["head"]["sha"] = head.into();
        pushed["pull_request"]["updated_at"] = github_time(at).into();
        let delivered = self.github.deliver("pull_request", &pushed).await.unwrap();
        assert_eq!(delivered.status_code, 202, "{delivered:?}");
        delivered.guid
    }

    /// `login` writes `body` on pull request `number`, at GitHub time `at` (now if `None`), and
    /// GitHub delivers it. Returns the comment's id and the delivery's guid.
    async fn say(&self, number: i64, login: &str, body: &str, at: Option<i64>) -> (i64, String) {
        let comment = self.github.comment_as(OWNER, &self.repo, number, login, body).await.unwrap();
        let mut payload = issue_comment(self, number, comment, login, body);
        if let Some(at) = at {
            payload["comment"]["created_at"] = github_time(at).into();
        }
        let delivered = self.github.deliver("issue_comment", &payload).await.unwrap();
        assert_eq!(delivered.status_code, 202, "{delivered:?}");
        (comment, delivered.guid)
    }

    /// Waits until previewd is done with every job of the deliveries `guids`, none dead.
    async fn settled(&self, guids: &[String]) {
        let store = &self.server.store;
        let jobs = eventually_within(Duration::from_secs(120), "the deliveries are processed", || async {
            let mut all = Vec::new();
            for guid in guids {
                let row = store.find_delivery("4242", guid).await.ok()??;
                let jobs = store.jobs_for_delivery(row.id).await.ok()?;
                if !jobs.iter().all(|j| j.state == "done" || j.state == "dead") {
                    return None;
                }
                all.extend(jobs);
            }
            Some(all)
        })
        .await;
        let dead: Vec<_> = jobs.iter().filter(|j| j.state == "dead").collect();
        assert!(dead.is_empty(), "{dead:#?}");
    }

    /// Waits until previewd has caught up: no job running or due (jobs queued for later, as a
    /// rollout's deadline, do not count), and none dead.
    async fn idle(&self) {
        eventually("no job is running or due", || async {
            let due = self.server.store.jobs_due(now_ms()).await.ok()?;
            (due == 0).then_some(())
        })
        .await;
        let counts = self.server.store.job_counts().await.unwrap();
        assert!(counts.iter().all(|(state, n)| *n == 0 || state.as_str() != "dead"), "{counts:?}");
    }

    /// Waits until a comment on `number` other than previewd's sticky one contains `text`.
    async fn reply_saying(&self, number: i64, text: &str) -> Value {
        eventually(&format!("a reply on #{number} says {text:?}"), || async {
            let comments = self.github.comments(number).await.ok()?;
            comments.into_iter().find(|c| {
                c["user"] == self.login.as_str()
                    && c["body"].as_str().is_some_and(|b| b.contains(text) && !b.contains("<!-- previewd:"))
            })
        })
        .await
    }

    /// The reactions on comment `id`.
    async fn reactions(&self, id: i64) -> Vec<String> {
        let state = self.github.state().await.unwrap();
        let all = state["reactions"].as_array().unwrap();
        all.iter().filter(|r| r["comment_id"] == id).map(|r| r["content"].as_str().unwrap().to_owned()).collect()
    }

    async fn environment(&self, number: i64) -> Option<ReconcileRecord> {
        self.environment_in(self.repo_id, number).await
    }

    async fn environment_in(&self, repo_id: i64, number: i64) -> Option<ReconcileRecord> {
        self.server.store.reconcile_record_for(RepoId(repo_id), PrNumber(number)).await.unwrap()
    }

    /// Waits until pull request `number`'s environment is in `state` (failing on `Failed` unless asked).
    async fn wait_state(&mut self, number: i64, state: &str) -> ReconcileRecord {
        self.wait_state_in(self.repo_id, number, state).await
    }

    /// [`Self::wait_state`] for a pull request of repository `repo_id`.
    async fn wait_state_in(&mut self, repo_id: i64, number: i64, state: &str) -> ReconcileRecord {
        let store = self.server.store.clone();
        // The last state seen goes in the failure message: a timeout says where it stopped.
        let seen = std::sync::Mutex::new(None);
        let waited = tokio::time::timeout(
            Duration::from_secs(90),
            eventually_within(Duration::from_secs(95), "never (the outer timeout ends first)", || async {
                let env = store.reconcile_record_for(RepoId(repo_id), PrNumber(number)).await.unwrap()?;
                if state != "Failed" {
                    assert_ne!(env.state, "Failed", "{:?}", env.reason);
                }
                *seen.lock().unwrap() = Some((env.state.clone(), env.reason.clone()));
                (env.state == state).then_some(env)
            }),
        )
        .await;
        let Ok(env) = waited else {
            panic!("the environment of #{number} is not {state} after 90 s; last seen: {:?}", seen.lock().unwrap());
        };
        if let Some(name) = &env.name
            && !self.namespaces.iter().any(|n| n.name() == name)
        {
            self.namespaces.push(TestNamespace::adopt(name).await.unwrap());
        }
        env
    }

    /// previewd's sticky comments on pull request `number` (replies to commands are not).
    async fn bot_comments(&self, number: i64) -> Vec<Value> {
        let comments = self.github.comments(number).await.unwrap();
        comments
            .into_iter()
            .filter(|c| c["user"].as_str().is_some_and(|u| u.ends_with("[bot]") || u == "preview-bot"))
            .filter(|c| c["body"].as_str().is_some_and(|b| b.contains("<!-- previewd:")))
            .collect()
    }

    /// Waits until previewd's one comment on `number` contains `text`; returns it.
    async fn comment_saying(&self, number: i64, text: &str) -> Value {
        eventually(&format!("the comment on #{number} says {text:?}"), || async {
            let comments = self.bot_comments(number).await;
            assert!(comments.len() <= 1, "more than one sticky comment: {comments:#?}");
            comments.into_iter().find(|c| c["body"].as_str().is_some_and(|b| b.contains(text)))
        })
        .await
    }

    /// Deployment statuses of `sha`, in order.
    async fn deployment_states(&self, sha: &str) -> Vec<String> {
        let deployments = self.github.deployments().await.unwrap();
        let mine: Vec<&Value> = deployments.iter().filter(|d| d["sha"] == sha).collect();
        assert!(mine.len() <= 1, "more than one deployment of {sha}: {mine:#?}");
        mine.first()
            .map(|d| {
                d["statuses"].as_array().unwrap().iter().map(|s| s["state"].as_str().unwrap().to_owned()).collect()
            })
            .unwrap_or_default()
    }

    async fn finish(self) {
        self.github.assert_no_violations().await.unwrap();
        self.server.stop().await;
    }
}

previewd_e2e::each_backend! {
    async fn the_pull_request_shows_its_environment_from_opening_to_merge(db) {
        let mut w = world(&db, Options::default()).await;
        w.open(1, &sha('a'), true).await;
        let ready = w.wait_state(1, "Ready").await;
        let url = ready.url.clone().unwrap();
        let comment = w.comment_saying(1, &url).await;
        let body = comment["body"].as_str().unwrap();
        assert!(body.contains("aaaaaaa") && body.contains("Expires") && body.contains("/preview extend 2h"), "{body}");
        eventually("the deployment is successful", || async {
            let states = w.deployment_states(&sha('a')).await;
            (states.last().map(String::as_str) == Some("success")).then_some(())
        })
        .await;
        let state = w.github.state().await.unwrap();
        let deployment = state["deployments"].as_array().unwrap().iter().find(|d| d["sha"] == sha('a')).unwrap().clone();
        assert_eq!(deployment["environment"], "preview/pr-1");
        assert_eq!(deployment["transient_environment"], true);
        assert_eq!(deployment["production_environment"], false);
        assert_eq!(deployment["statuses"].as_array().unwrap().last().unwrap()["environment_url"], url.as_str());
        let run = eventually("the check run succeeded", || async {
            let state = w.github.state().await.ok()?;
            state["check_runs"].as_array()?.iter().find(|r| r["head_sha"] == sha('a') && r["conclusion"] == "success").cloned()
        })
        .await;
        assert_eq!(run["name"], "preview/pr-1");
        assert!(run["output"]["summary"].as_str().unwrap().contains(&url));
        let repository = w.server.store.repository(RepoId(w.repo_id)).await.unwrap().unwrap();
        assert_eq!((repository.config_state.as_deref(), repository.config_sha), (Some("present"), Some(sha('a'))));

        // A push: the same comment is edited to the new commit, a new deployment is made.
        w.github.put_file(OWNER, &w.repo, &sha('b'), ".preview.yaml", Some(&preview_yaml())).await.unwrap();
        w.github.update_pull(OWNER, &w.repo, 1, json!({"head_sha": sha('b')})).await.unwrap();
        let pushed = w.pull_request("synchronize", 1, &sha('b'), json!({}));
        assert_eq!(w.github.deliver("pull_request", &pushed).await.unwrap().status_code, 202);
        eventually("the new commit is deployed", || async {
            let env = w.environment(1).await?;
            (env.state == "Ready" && env.deployed_sha.as_deref() == Some(sha('b').as_str())).then_some(())
        })
        .await;
        w.comment_saying(1, "bbbbbbb").await;
        eventually("the new deployment is successful", || async {
            (w.deployment_states(&sha('b')).await.last().map(String::as_str) == Some("success")).then_some(())
        })
        .await;

        // Merged: torn down, the deployment inactive, the comment says why.
        w.github.update_pull(OWNER, &w.repo, 1, json!({"state": "closed", "merged": true})).await.unwrap();
        let mut closed = w.pull_request("closed", 1, &sha('b'), json!({"pull_request": {"merged": true, "state": "closed"}}));
        closed["pull_request"]["merged"] = true.into();
        assert_eq!(w.github.deliver("pull_request", &closed).await.unwrap().status_code, 202);
        w.wait_state(1, "Deleted").await;
        w.comment_saying(1, "pull request merged").await;
        eventually("the deployment is inactive", || async {
            (w.deployment_states(&sha('b')).await.last().map(String::as_str) == Some("inactive")).then_some(())
        })
        .await;
        assert_eq!(w.bot_comments(1).await.len(), 1, "one sticky comment, edited in place");
        // One installation token served every call.
        let state = w.github.state().await.unwrap();
        assert_eq!(state["tokens_issued"][INSTALLATION.to_string()], 1, "{}", state["tokens_issued"]);
        w.finish().await;
    }
}

#[tokio::test]
async fn a_repository_without_preview_configuration_gets_nothing_and_no_comment() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let mut w = world(&db, Options::default()).await;
    w.open(2, &sha('c'), false).await;
    // The delivery's job finishes without creating anything.
    eventually("the delivery is processed", || async {
        let requests = w.github.requests().await.ok()?;
        requests.iter().any(|r| r["path"].as_str().is_some_and(|p| p.contains("/contents/.preview.yaml"))).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(w.environment(2).await.is_none());
    assert!(w.bot_comments(2).await.is_empty());
    // Recorded, so an operator can tell "no previews here" from "never heard of it".
    let repository = w.server.store.repository(RepoId(w.repo_id)).await.unwrap().unwrap();
    assert_eq!(repository.config_state.as_deref(), Some("absent"));
    assert_eq!(repository.config_sha.as_deref(), Some(sha('c').as_str()));
    w.finish().await;
}

#[tokio::test]
async fn deliveries_for_repositories_outside_the_allow_list_are_recorded_and_ignored() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let w =
        world(&db, Options { repo: "elsewhere", policy_extra: "allow: [acme/app, other-org]\n", ..Options::default() })
            .await;
    w.github.put_file(OWNER, &w.repo, &sha('e'), ".preview.yaml", Some(&preview_yaml())).await.unwrap();
    w.github
        .open_pull(json!({"owner": OWNER, "repo": w.repo, "number": 3, "head_sha": sha('e'), "user": "dev"}))
        .await
        .unwrap();
    let opened = w.github.deliver("pull_request", &w.pull_request("opened", 3, &sha('e'), json!({}))).await.unwrap();
    let comment = w.github.comment_as(OWNER, &w.repo, 3, "writer", "/preview deploy").await.unwrap();
    let command =
        w.github.deliver("issue_comment", &issue_comment(&w, 3, comment, "writer", "/preview deploy")).await.unwrap();
    for delivered in [&opened, &command] {
        assert_eq!(delivered.status_code, 202, "acknowledged, so GitHub does not call it failed: {delivered:?}");
        let row = w.server.store.find_delivery("4242", &delivered.guid).await.unwrap().unwrap();
        assert_eq!(row.outcome, "not_allowed", "recorded as ignored because of `allow`");
        assert!(w.server.store.jobs_for_delivery(row.id).await.unwrap().is_empty(), "no work queued");
    }
    // Nothing happened on GitHub's side or in the cluster.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(w.environment(3).await.is_none());
    let reads = w.github.requests().await.unwrap();
    assert!(!reads.iter().any(|r| r["path"].as_str().is_some_and(|p| p.contains("/elsewhere/"))), "{reads:#?}");
    assert_eq!(w.github.comments(3).await.unwrap().len(), 1, "only the writer's own comment");
    w.finish().await;
}

#[tokio::test]
async fn the_keep_label_keeps_the_environment_up_to_the_policys_maximum() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let mut w = world(&db, Options::default()).await;
    w.github.put_file(OWNER, &w.repo, &sha('8'), ".preview.yaml", Some(&preview_yaml())).await.unwrap();
    w.github
        .open_pull(json!({"owner": OWNER, "repo": w.repo, "number": 9, "head_sha": sha('8'), "user": "dev"}))
        .await
        .unwrap();
    let labelled =
        w.pull_request("opened", 9, &sha('8'), json!({"pull_request": {"labels": [{"name": "preview:keep"}]}}));
    assert_eq!(w.github.deliver("pull_request", &labelled).await.unwrap().status_code, 202);
    let ready = w.wait_state(9, "Ready").await;
    // The fixture's `.preview.yaml` asks for 24h; the label gives the policy's `ttl.max`, 7d.
    let left = ready.expires_at.unwrap() - previewd_environments::time::now_ms();
    assert!(left > 6 * 24 * 3_600_000 && left <= 7 * 24 * 3_600_000, "expires in {left} ms");
    w.comment_saying(9, "The `preview:keep` label keeps it up to the policy's maximum.").await;
    w.finish().await;
}

#[tokio::test]
async fn a_deployment_github_refuses_does_not_keep_the_comment_from_the_pull_request() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let mut w = world(&db, Options::default()).await;
    // GitHub refuses a deployment of a commit it does not know (422 `No ref found`), as it
    // would after a force-push; the stand-in knows only hexadecimal SHAs.
    let unknown = "k".repeat(40);
    w.open(10, &unknown, true).await;
    let ready = w.wait_state(10, "Ready").await;
    w.comment_saying(10, ready.url.as_deref().unwrap()).await;
    assert!(w.deployment_states(&unknown).await.is_empty(), "no deployment could be made");
    let refused = w.github.requests().await.unwrap();
    assert!(refused.iter().any(|r| r["method"] == "POST"
        && r["path"].as_str().is_some_and(|p| p.ends_with("/deployments"))
        && r["status"] == 422));
    w.finish().await;
}

#[tokio::test]
async fn an_invalid_configuration_fails_the_environment_with_the_message_on_the_pull_request() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let mut w = world(&db, Options::default()).await;
    w.github
        .put_file(OWNER, &w.repo, &sha('d'), ".preview.yaml", Some("image: registry.preview.test/a:1\nport: 99999\n"))
        .await
        .unwrap();
    w.open(3, &sha('d'), false).await;
    let failed = w.wait_state(3, "Failed").await;
    let reason = failed.reason.unwrap();
    assert!(reason.contains("port"), "{reason}");
    let comment = w.comment_saying(3, "failed").await;
    assert!(comment["body"].as_str().unwrap().contains("port"));
    eventually("the deployment failed", || async {
        (w.deployment_states(&sha('d')).await.last().map(String::as_str) == Some("failure")).then_some(())
    })
    .await;
    w.finish().await;
}

/// The alias bomb of issue 12: 20 KB that serde_yaml expanded to 16 million nodes (45 s, 1.66 GB).
fn alias_bomb() -> String {
    format!("x-leaf: &l [{}]\nx-bomb: [{}]\n", vec!["x"; 4000].join(", "), vec!["*l"; 4000].join(", "))
}

#[tokio::test]
async fn a_hostile_preview_yaml_fails_its_environment_once_while_others_are_served() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let mut w = world(&db, Options::default()).await;
    // Over 1 MB GitHub gives only the size; under it the content, which previewd reads only up
    // to its bound.
    let hostile = [
        (
            31,
            sha('1'),
            alias_bomb(),
            ".preview.yaml: line 1 column 12: anchors and aliases (`&name`, `*name`) are not allowed",
        ),
        (
            32,
            sha('2'),
            "#".repeat(10 * 1024 * 1024),
            ".preview.yaml: the file is 10485760 bytes; previewd reads at most 64 KiB",
        ),
        (33, sha('3'), "#".repeat(1000 * 1024), ".preview.yaml: the file is larger than 64 KiB (65536 bytes)"),
    ];
    for (number, head, text, _) in &hostile {
        w.github.put_file(OWNER, &w.repo, head, ".preview.yaml", Some(text)).await.unwrap();
        w.open(*number, head, false).await;
    }
    // Meanwhile, a pull request in another repository of the installation.
    let other = w.open_in_other_repository(34, &sha('4')).await;

    for (number, _, _, refusal) in &hostile {
        let failed = w.wait_state(*number, "Failed").await;
        let reason = failed.reason.unwrap();
        assert!(reason.starts_with(refusal), "#{number}: {reason}");
        w.comment_saying(*number, refusal).await;
    }
    let ready = eventually_within(Duration::from_secs(90), "the other repository's environment is Ready", || async {
        let env = w.server.store.reconcile_record_for(RepoId(other.id), PrNumber(34)).await.unwrap()?;
        assert_ne!(env.state, "Failed", "{:?}", env.reason);
        (env.state == "Ready").then_some(env)
    })
    .await;
    w.namespaces.push(TestNamespace::adopt(ready.name.as_deref().unwrap()).await.unwrap());
    // Not retried: each hostile file was read twice (whether the repository configures previews,
    // then the one reconcile), and no more while the other environment was made.
    let requests = w.github.requests().await.unwrap();
    for (number, head, _, _) in &hostile {
        let reads = requests
            .iter()
            .filter(|r| {
                r["path"].as_str().is_some_and(|p| p.ends_with("/contents/.preview.yaml")) && r["query"]["ref"] == *head
            })
            .count();
        assert_eq!(reads, 2, "#{number}: the file was read {reads} times");
    }
    w.finish().await;
}

/// The contents requests previewd made for `path` (the query's `ref` with each).
fn reads_of(requests: &[Value], path: &str) -> Vec<String> {
    let suffix = format!("/contents/{path}");
    requests
        .iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.ends_with(&suffix)))
        .map(|r| r["query"]["ref"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn a_seed_of_sql_files_is_read_once_at_the_head_commit_and_runs_from_its_configmap() {
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::ConfigMap;
    let db = fresh(Backend::Sqlite).await.unwrap();
    let mut w = world(&db, Options::default()).await;
    let config =
        format!("{}database:\n  engine: postgres\n  seed: {{ sql: [db/schema.sql, db/seed.sql] }}\n", preview_yaml());
    let schema = "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);\n";
    let seed = "INSERT INTO items (name) VALUES ('a'), ('b');\n";
    for head in [sha('a'), sha('b')] {
        w.github.put_file(OWNER, &w.repo, &head, ".preview.yaml", Some(&config)).await.unwrap();
        w.github.put_file(OWNER, &w.repo, &head, "db/schema.sql", Some(schema)).await.unwrap();
        w.github.put_file(OWNER, &w.repo, &head, "db/seed.sql", Some(&format!("{seed}-- {head}\n"))).await.unwrap();
    }
    w.open(41, &sha('a'), false).await;
    let ready = w.wait_state(41, "Ready").await;
    let namespace = ready.name.clone().unwrap();
    let admin = previewd_e2e::cluster::admin_client().await.unwrap();
    let job = Api::<Job>::namespaced(admin.clone(), &namespace).get("seed-1").await.unwrap();
    assert_eq!(job.status.as_ref().and_then(|s| s.succeeded), Some(1), "the seed ran before Ready");
    let container = &job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
    assert_eq!(container.image.as_deref(), Some("docker.io/library/postgres:17"));
    let command = container.command.clone().unwrap().join(" ");
    assert!(command.ends_with("--file /seed/01-db-schema.sql --file /seed/02-db-seed.sql"), "{command}");
    // The files of the head commit, in their order, in a ConfigMap the Job owns.
    let files = Api::<ConfigMap>::namespaced(admin.clone(), &namespace).get("seed-1-sql").await.unwrap();
    let data = files.data.clone().unwrap();
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(keys, ["01-db-schema.sql", "02-db-seed.sql"]);
    assert_eq!(
        (data["01-db-schema.sql"].as_str(), data["02-db-seed.sql"].clone()),
        (schema, format!("{seed}-- {}\n", sha('a')))
    );
    let owner = &files.metadata.owner_references.clone().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Job", "seed-1"));
    assert_eq!(Some(&owner.uid), job.metadata.uid.as_ref());

    // A push: redeployed, the seed not run again, so the files are not read again.
    w.github.update_pull(OWNER, &w.repo, 41, json!({"head_sha": sha('b')})).await.unwrap();
    let pushed = w.pull_request("synchronize", 41, &sha('b'), json!({}));
    assert_eq!(w.github.deliver("pull_request", &pushed).await.unwrap().status_code, 202);
    eventually("the push is deployed", || async {
        let env = w.environment(41).await?;
        (env.state == "Ready" && env.deployed_sha.as_deref() == Some(sha('b').as_str())).then_some(())
    })
    .await;
    let requests = w.github.requests().await.unwrap();
    assert_eq!(reads_of(&requests, "db/schema.sql"), [sha('a')]);
    assert_eq!(reads_of(&requests, "db/seed.sql"), [sha('a')]);

    // A file the head commit does not have fails the environment, saying which.
    let head = sha('c');
    w.github.put_file(OWNER, &w.repo, &head, ".preview.yaml", Some(&config)).await.unwrap();
    w.github.put_file(OWNER, &w.repo, &head, "db/schema.sql", Some(schema)).await.unwrap();
    w.open(42, &head, false).await;
    let failed = w.wait_state(42, "Failed").await;
    let refusal = ".preview.yaml: database.seed.sql[1]: db/seed.sql: no such file at ccccccc";
    assert_eq!(failed.reason.as_deref(), Some(refusal));
    w.comment_saying(42, refusal).await;
    // So does more SQL than a ConfigMap carries, read no further than the bound.
    let head = sha('d');
    w.github.put_file(OWNER, &w.repo, &head, ".preview.yaml", Some(&config)).await.unwrap();
    w.github.put_file(OWNER, &w.repo, &head, "db/schema.sql", Some(schema)).await.unwrap();
    w.github.put_file(OWNER, &w.repo, &head, "db/seed.sql", Some(&"-".repeat(600 * 1024))).await.unwrap();
    w.open(43, &head, false).await;
    let failed = w.wait_state(43, "Failed").await;
    let reason = failed.reason.unwrap();
    assert!(
        reason.starts_with(".preview.yaml: database.seed.sql[1]: db/seed.sql: too large (614400 bytes); a seed's SQL files may hold 512 KiB in all"),
        "{reason}"
    );
    w.finish().await;
}

#[tokio::test]
async fn commands_need_write_access_and_unknown_ones_get_help() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let mut w = world(&db, Options::default()).await;
    w.open(4, &sha('e'), true).await;
    let ready = w.wait_state(4, "Ready").await;
    let before = ready.expires_at.unwrap();

    // A writer extends the environment.
    let comment = w.github.comment_as(OWNER, &w.repo, 4, "writer", "/preview extend 2h").await.unwrap();
    let payload = issue_comment(&w, 4, comment, "writer", "/preview extend 2h");
    assert_eq!(w.github.deliver("issue_comment", &payload).await.unwrap().status_code, 202);
    let extended = eventually("the expiry moved", || async {
        let env = w.environment(4).await?;
        (env.expires_at? >= before + 2 * 3_600_000 - 5_000).then_some(env)
    })
    .await;
    assert!(extended.note.unwrap().contains("by @writer with `/preview extend`"));
    w.comment_saying(4, "by @writer with `/preview extend`").await;
    eventually("the command got a reaction", || async {
        let state = w.github.state().await.ok()?;
        state["reactions"].as_array()?.iter().any(|r| r["comment_id"] == comment && r["content"] == "+1").then_some(())
    })
    .await;

    // A reader cannot destroy it, and is told so.
    let comment = w.github.comment_as(OWNER, &w.repo, 4, "reader", "/preview destroy").await.unwrap();
    let payload = issue_comment(&w, 4, comment, "reader", "/preview destroy");
    assert_eq!(w.github.deliver("issue_comment", &payload).await.unwrap().status_code, 202);
    eventually("the reader is told", || async {
        let comments = w.github.comments(4).await.ok()?;
        comments
            .iter()
            .any(|c| c["body"].as_str().is_some_and(|b| b.contains("@reader") && b.contains("write access")))
            .then_some(())
    })
    .await;
    assert_eq!(w.environment(4).await.unwrap().state, "Ready");

    // Nonsense from a writer gets a short help, which does not repeat what they wrote (a reply
    // must never carry a commenter's text).
    let nonsense = "/preview l4unch-the-r0ckets <img src=x>";
    let comment = w.github.comment_as(OWNER, &w.repo, 4, "writer", nonsense).await.unwrap();
    let payload = issue_comment(&w, 4, comment, "writer", nonsense);
    assert_eq!(w.github.deliver("issue_comment", &payload).await.unwrap().status_code, 202);
    let help = eventually("the help is posted", || async {
        let comments = w.github.comments(4).await.ok()?;
        comments.into_iter().find(|c| {
            c["body"].as_str().is_some_and(|b| b.contains("not a previewd command") && b.contains("/preview redeploy"))
        })
    })
    .await;
    let said = help["body"].as_str().unwrap();
    assert!(!said.contains("l4unch") && !said.contains("r0ckets") && !said.contains("<img"), "{said}");

    // A writer destroys it.
    let comment = w.github.comment_as(OWNER, &w.repo, 4, "writer", "/preview destroy").await.unwrap();
    let payload = issue_comment(&w, 4, comment, "writer", "/preview destroy");
    assert_eq!(w.github.deliver("issue_comment", &payload).await.unwrap().status_code, 202);
    let gone = w.wait_state(4, "Deleted").await;
    assert!(gone.reason.unwrap().contains("destroyed by @writer"));
    let history = w.server.store.transitions(gone.id).await.unwrap();
    let deleting = history.iter().find(|t| t.to_state == "Deleting").unwrap();
    assert_eq!(deleting.actor.as_deref(), Some("command by @writer"), "who caused it: {history:#?}");
    w.comment_saying(4, "destroyed by @writer").await;
    w.finish().await;
}

/// An `issue_comment` delivery built from GitHub's published example.
fn issue_comment(w: &World, number: i64, comment_id: i64, login: &str, body: &str) -> Value {
    w.target().comment(number, comment_id, login, body).unwrap()
}

#[tokio::test]
async fn a_fork_waits_for_approval_and_its_next_push_needs_another() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let mut w = world(&db, Options { repo: "forks-welcome", ..Options::default() }).await;
    let opened = w.open_fork(5, &sha('f')).await;
    let rejected = w.wait_state(5, "Rejected").await;
    assert!(rejected.reason.unwrap().contains("/preview approve"));
    w.comment_saying(5, "/preview approve").await;

    let comment = w.github.comment_as(OWNER, &w.repo, 5, "writer", "/preview approve").await.unwrap();
    let payload = issue_comment(&w, 5, comment, "writer", "/preview approve");
    assert_eq!(w.github.deliver("issue_comment", &payload).await.unwrap().status_code, 202);
    let ready = w.wait_state(5, "Ready").await;
    assert!(ready.from_fork && ready.approved());
    w.comment_saying(5, "Preview environment ready").await;

    // A new push is not approved: the environment goes away until someone approves again.
    w.github.update_pull(OWNER, &w.repo, 5, json!({"head_sha": sha('9')})).await.unwrap();
    let mut pushed = opened.clone();
    pushed["action"] = "synchronize".into();
    pushed["pull_request"]["head"]["sha"] = sha('9').into();
    assert_eq!(w.github.deliver("pull_request", &pushed).await.unwrap().status_code, 202);
    w.wait_state(5, "Deleted").await;
    w.finish().await;
}

#[tokio::test]
async fn a_writers_label_approves_a_fork_commit_and_a_push_takes_it_off() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let mut w = world(&db, Options { repo: "forks-welcome", ..Options::default() }).await;
    let opened = w.open_fork(6, &sha('f')).await;
    w.wait_state(6, "Rejected").await;
    w.comment_saying(6, "`preview:approve`").await;
    let labels_on_github = async |w: &World| {
        let state = w.github.state().await.unwrap();
        let pull = state["pulls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["number"] == 6 && p["repo"] == w.repo)
            .unwrap()
            .clone();
        pull["labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    let labelled = |by: &str, head: char| {
        let mut p = opened.clone();
        p["action"] = "labeled".into();
        p["label"] = json!({"name": "preview:approve"});
        p["sender"]["login"] = by.into();
        p["pull_request"]["head"]["sha"] = sha(head).into();
        p["pull_request"]["labels"] = json!([{"name": "preview:approve"}]);
        p
    };

    // Someone without write access sets the label: refused, and the label is taken off.
    w.github.update_pull(OWNER, &w.repo, 6, json!({"labels": ["preview:approve"]})).await.unwrap();
    assert_eq!(w.github.deliver("pull_request", &labelled("reader", 'f')).await.unwrap().status_code, 202);
    eventually("the reader's label is refused", || async {
        let comments = w.github.comments(6).await.ok()?;
        comments
            .iter()
            .any(|c| {
                c["body"].as_str().is_some_and(|b| b.contains("Sorry @reader, `preview:approve` needs write access"))
            })
            .then_some(())
    })
    .await;
    assert!(labels_on_github(&w).await.is_empty(), "the label is off again");
    assert_eq!(w.environment(6).await.unwrap().state, "Rejected");

    // A writer sets it: the commit the delivery names is approved.
    w.github.update_pull(OWNER, &w.repo, 6, json!({"labels": ["preview:approve"]})).await.unwrap();
    assert_eq!(w.github.deliver("pull_request", &labelled("writer", 'f')).await.unwrap().status_code, 202);
    let ready = w.wait_state(6, "Ready").await;
    assert!(ready.from_fork && ready.approved());
    assert_eq!(ready.approved_sha.as_deref(), Some(sha('f').as_str()));
    w.comment_saying(6, "@writer approved commit fffffff with the label `preview:approve`").await;

    // A push: the approval was for the previous commit; the label goes and so does the environment.
    w.github.update_pull(OWNER, &w.repo, 6, json!({"head_sha": sha('9')})).await.unwrap();
    let mut pushed = labelled("stranger", '9');
    pushed["action"] = "synchronize".into();
    pushed.as_object_mut().unwrap().remove("label");
    assert_eq!(w.github.deliver("pull_request", &pushed).await.unwrap().status_code, 202);
    w.wait_state(6, "Deleted").await;
    assert!(labels_on_github(&w).await.is_empty(), "previewd took the label off");
    w.finish().await;
}

#[tokio::test]
async fn a_github_outage_delays_reports_but_not_environments() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let mut w = world(&db, Options::default()).await;
    // Comments and deployments fail for a while; then a secondary rate limit.
    w.github
        .fault(json!({"method": "POST", "path_regex": "/(comments|deployments)$", "status": 502, "count": 4}))
        .await
        .unwrap();
    w.github
        .fault(
            json!({"method": "POST", "path_regex": "/comments$", "status": 403, "count": 1, "retry_after_seconds": 1}),
        )
        .await
        .unwrap();
    w.open(6, &sha('6'), true).await;
    let ready = w.wait_state(6, "Ready").await;
    // The report arrives once GitHub is back.
    w.comment_saying(6, ready.url.as_deref().unwrap()).await;
    let requests = w.github.requests().await.unwrap();
    let failed: Vec<&Value> = requests.iter().filter(|r| r["status"] == 502 || r["status"] == 403).collect();
    assert_eq!(failed.len(), 5, "every fault was hit: {failed:#?}");
    w.finish().await;
}

#[tokio::test]
async fn the_resync_finds_missed_openings_and_closings() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let mut w = world(&db, Options { resync_seconds: "1", ..Options::default() }).await;
    // Opened on GitHub, but the delivery never arrived.
    w.github.put_file(OWNER, &w.repo, &sha('7'), ".preview.yaml", Some(&preview_yaml())).await.unwrap();
    w.github
        .open_pull(json!({"owner": OWNER, "repo": w.repo, "number": 7, "head_sha": sha('7'), "user": "dev"}))
        .await
        .unwrap();
    w.wait_state(7, "Ready").await;
    // Closed on GitHub, and that delivery is lost too.
    w.github.update_pull(OWNER, &w.repo, 7, json!({"state": "closed"})).await.unwrap();
    let gone = w.wait_state(7, "Deleted").await;
    assert_eq!(gone.reason.as_deref(), Some("pull request closed without merge"));
    // Unchanged listings are conditional requests answered 304.
    eventually("an unchanged listing is answered 304", || async {
        let requests = w.github.requests().await.ok()?;
        requests
            .iter()
            .any(|r| {
                r["path"].as_str().is_some_and(|p| p.ends_with("/pulls"))
                    && r["status"] == 304
                    && r["if_none_match"] == true
            })
            .then_some(())
    })
    .await;
    w.finish().await;
}

#[tokio::test]
async fn deliveries_that_failed_while_previewd_was_away_are_redelivered() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let mut w = world(&db, Options { resync_seconds: "1", ..Options::default() }).await;
    let webhook = format!("{}/webhooks/github", w.server.base);
    // previewd "down": GitHub's delivery fails.
    w.github.configure(json!({"webhook_url": "http://127.0.0.1:9/webhooks/github"})).await.unwrap();
    w.github.put_file(OWNER, &w.repo, &sha('8'), ".preview.yaml", Some(&preview_yaml())).await.unwrap();
    let opened = w.pull_request("opened", 8, &sha('8'), json!({}));
    let failed = w.github.deliver("pull_request", &opened).await.unwrap();
    assert_ne!(failed.status_code, 202);
    w.github.configure(json!({"webhook_url": webhook})).await.unwrap();
    // The pull request is not listed as open, so only the redelivery can create the environment.
    w.wait_state(8, "Ready").await;
    let state = w.github.state().await.unwrap();
    let attempts: Vec<&Value> =
        state["deliveries"].as_array().unwrap().iter().filter(|d| d["guid"] == failed.guid.as_str()).collect();
    assert!(attempts.iter().any(|d| d["redelivery"] == true && d["status_code"] == 202), "{attempts:#?}");
    w.finish().await;
}

#[tokio::test]
async fn with_a_token_previewd_comments_and_deploys_without_check_runs() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let mut w = world(&db, Options { token: true, ..Options::default() }).await;
    w.open(9, &sha('9'), true).await;
    let ready = w.wait_state(9, "Ready").await;
    let comment = w.comment_saying(9, ready.url.as_deref().unwrap()).await;
    assert_eq!(comment["user"], "preview-bot");
    eventually("the deployment is successful", || async {
        (w.deployment_states(&sha('9')).await.last().map(String::as_str) == Some("success")).then_some(())
    })
    .await;
    assert!(w.github.state().await.unwrap()["check_runs"].as_array().unwrap().is_empty());
    w.finish().await;
}

#[tokio::test]
async fn a_commit_is_deployed_once_its_required_checks_pass() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let mut w = world(&db, Options { policy_extra: "\nrequired_checks: [build]\n", ..Options::default() }).await;
    w.open(10, &sha('1'), true).await;
    let waiting = eventually("the environment waits for its check", || async {
        let env = w.environment(10).await?;
        env.reason.as_deref().is_some_and(|r| r.contains("waiting for 1 check")).then_some(env)
    })
    .await;
    assert_eq!(waiting.state, "Pending");
    w.comment_saying(10, "waiting for 1 check").await;
    w.github.add_check_run(OWNER, &w.repo, &sha('1'), "build", Some("success")).await.unwrap();
    let mut finished = example("check_run", "completed").unwrap();
    finished["repository"] = w.pull_request("opened", 10, &sha('1'), json!({}))["repository"].clone();
    finished["check_run"]["head_sha"] = sha('1').into();
    finished["check_run"]["name"] = "build".into();
    finished["check_run"]["conclusion"] = "success".into();
    assert_eq!(w.github.deliver("check_run", &finished).await.unwrap().status_code, 202);
    w.wait_state(10, "Ready").await;

    // A push whose build fails leaves the previous commit deployed.
    w.github.put_file(OWNER, &w.repo, &sha('2'), ".preview.yaml", Some(&preview_yaml())).await.unwrap();
    w.github.add_check_run(OWNER, &w.repo, &sha('2'), "build", Some("failure")).await.unwrap();
    let pushed = w.pull_request("synchronize", 10, &sha('2'), json!({}));
    assert_eq!(w.github.deliver("pull_request", &pushed).await.unwrap().status_code, 202);
    let held = eventually("the failed check is reported", || async {
        let env = w.environment(10).await?;
        env.reason.as_deref().is_some_and(|r| r.contains("`build` ended `failure`")).then_some(env)
    })
    .await;
    assert_eq!(held.deployed_sha.as_deref(), Some(sha('1').as_str()));
    assert!(held.reason.unwrap().contains("1111111 stays deployed"));
    w.finish().await;
}

#[tokio::test]
async fn the_warning_before_expiry_is_a_comment_that_mentions_the_author() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    // Warned 2h59m59s before the file's TTL of 3h: at the first periodic pass a second after
    // the start.
    let extra = "  acme/expiring:\n    ttl: { warn_before: 2h59m59s }\n";
    let mut w = world(&db, Options { repo: "expiring", policy_extra: extra, ..Options::default() }).await;
    let three_hours = || preview_yaml().replace("ttl: 24h", "ttl: 3h");
    w.github.put_file(OWNER, &w.repo, &sha('a'), ".preview.yaml", Some(&three_hours())).await.unwrap();
    w.open(51, &sha('a'), false).await;
    w.wait_state(51, "Ready").await;
    let warning = w.reply_saying(51, "@dev ").await;
    let body = warning["body"].as_str().unwrap();
    assert!(body.contains("expires in 2h 59m") && body.contains("/preview extend 2h"), "{body}");
    assert!(body.contains("`preview:keep` label"), "{body}");
    w.comment_saying(51, "Expires soon").await;
    // Posted once: later passes (every 2 s) find it warned. Waited for: a pass after the
    // warning, seen by its reconcile job being done.
    let warned_at = w.environment(51).await.unwrap().warned_at.unwrap();
    eventually("a periodic pass after the warning ran", || async {
        let env = w.environment(51).await?;
        (env.warned_at == Some(warned_at) && w.server.store.jobs_due(now_ms()).await.ok()? == 0).then_some(())
    })
    .await;
    w.idle().await;
    let warnings = |comments: Vec<Value>| {
        comments.into_iter().filter(|c| c["body"].as_str().is_some_and(|b| b.starts_with("@dev "))).count()
    };
    assert_eq!(warnings(w.github.comments(51).await.unwrap()), 1);

    // A push starts the TTL again; the next warning is a new comment.
    w.github.put_file(OWNER, &w.repo, &sha('b'), ".preview.yaml", Some(&three_hours())).await.unwrap();
    w.github.update_pull(OWNER, &w.repo, 51, json!({"head_sha": sha('b')})).await.unwrap();
    let pushed = w.pull_request("synchronize", 51, &sha('b'), json!({}));
    assert_eq!(w.github.deliver("pull_request", &pushed).await.unwrap().status_code, 202);
    eventually("the pushed commit is warned about", || async {
        let comments = w.github.comments(51).await.ok()?;
        (warnings(comments) == 2).then_some(())
    })
    .await;
    w.finish().await;
}

#[tokio::test]
async fn in_label_mode_the_label_gives_and_takes_the_environment() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let mut w = world(&db, Options { repo: "labelled", ..Options::default() }).await;
    w.open(11, &sha('3'), true).await;
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert!(w.environment(11).await.is_none(), "no label, no environment");
    assert!(w.bot_comments(11).await.is_empty(), "and no comment either");
    let labelled = w.pull_request("labeled", 11, &sha('3'), json!({"pull_request": {"labels": [{"name": "preview"}]}}));
    assert_eq!(w.github.deliver("pull_request", &labelled).await.unwrap().status_code, 202);
    w.wait_state(11, "Ready").await;
    let unlabelled = w.pull_request("unlabeled", 11, &sha('3'), json!({}));
    assert_eq!(w.github.deliver("pull_request", &unlabelled).await.unwrap().status_code, 202);
    let gone = w.wait_state(11, "Deleted").await;
    assert!(gone.reason.unwrap().contains("labelled `preview`"));
    w.finish().await;
}

/// Commands and approvals, on both stores (they keep heads and replies there).
mod commands {
    use super::*;

    previewd_e2e::each_backend! {
        async fn an_approval_holds_for_the_commit_the_approver_saw(db) {
            let mut w = world(&db, Options { repo: "forks-welcome", ..Options::default() }).await;
            let t = now_ms();
            let opened = w.open_fork(12, &sha('f')).await;
            w.wait_state(12, "Rejected").await;

            // A writer looks at fffffff and approves it, a minute ago by GitHub's clock; before
            // previewd reads the comment, the fork's author pushes 9999999.
            let pushed = w.push_fork(&opened, 12, &sha('9'), t - 30_000).await;
            w.settled(&[pushed]).await;
            let (comment, approval) = w.say(12, "writer", "/preview approve", Some(t - 60_000)).await;
            w.settled(&[approval]).await;
            let reply = w.reply_saying(12, "commit `9999999` was pushed after your approval").await;
            assert!(reply["body"].as_str().unwrap().contains("@writer"), "{reply}");
            let env = w.environment(12).await.unwrap();
            assert_eq!(env.state, "Rejected", "{:?}", env.reason);
            assert_eq!(env.approved_sha, None, "the push after the comment is not approved");
            assert_eq!(w.reactions(comment).await, ["confused"]);

            // The writer looks at 9999999 and approves it: that is the commit approved.
            let (comment, _) = w.say(12, "writer", "/preview approve", None).await;
            let ready = w.wait_state(12, "Ready").await;
            assert_eq!((ready.head_sha.as_str(), ready.approved_sha.as_deref()), (sha('9').as_str(), Some(sha('9').as_str())));
            w.comment_saying(12, "@writer approved commit 9999999").await;
            eventually("the approval got a 👍", || async { (w.reactions(comment).await == ["+1"]).then_some(()) }).await;

            // The author pushes 8888888 and GitHub has not told previewd yet: an approval now cannot
            // be tied to it, so it approves nothing...
            w.github.put_file(OWNER, &w.repo, &sha('8'), ".preview.yaml", Some(&preview_yaml())).await.unwrap();
            w.github.update_pull(OWNER, &w.repo, 12, json!({"head_sha": sha('8')})).await.unwrap();
            let (_, approval) = w.say(12, "writer", "/preview approve", None).await;
            w.settled(&[approval]).await;
            w.reply_saying(12, "commit `8888888` may be newer than your approval").await;
            let env = w.environment(12).await.unwrap();
            assert_eq!((env.head_sha.as_str(), env.approved_sha.as_deref()), (sha('9').as_str(), Some(sha('9').as_str())));

            // ...but naming the commit approves it.
            w.say(12, "writer", "/preview approve 8888888", None).await;
            let deployed = eventually_within(Duration::from_secs(90), "8888888 is deployed", || async {
                let env = w.environment(12).await?;
                (env.state == "Ready" && env.deployed_sha.as_deref() == Some(sha('8').as_str())).then_some(env)
            })
            .await;
            assert_eq!(deployed.approved_sha.as_deref(), Some(sha('8').as_str()));
            w.finish().await;
        }

        async fn a_flood_of_commands_from_someone_without_write_access_gets_one_reply_at_most(db) {
            let mut w = world(&db, Options::default()).await;
            // No preview configuration: nothing else previewd does writes to GitHub.
            let opened = w.open(13, &sha('c'), false).await;
            w.settled(&[opened]).await;
            // Writes to the repository (the App's own token requests are not about it).
            let writes = |requests: &[Value]| {
                let on_repo = |r: &&Value| r["path"].as_str().is_some_and(|p| p.starts_with("/repos/"));
                requests.iter().filter(|r| r["method"] != "GET").filter(on_repo).cloned().collect::<Vec<_>>()
            };

            // 200 malformed commands from someone who may not give any: no help, no reaction.
            let mut guids = Vec::new();
            for _ in 0..200 {
                guids.push(w.say(13, "stranger", "/preview x", None).await.1);
            }
            w.settled(&guids).await;
            let requests = w.github.requests().await.unwrap();
            assert_eq!(writes(&requests), Vec::<Value>::new(), "nothing written to GitHub");
            let checked = requests.iter().filter(|r| r["path"].as_str().is_some_and(|p| p.ends_with("/collaborators/stranger/permission")));
            assert_eq!(checked.count(), 200, "each comment costs one read");

            // 50 commands they may not give: one refusal for the lot, which does not quote them.
            guids.clear();
            for _ in 0..50 {
                guids.push(w.say(13, "stranger", "/preview destroy", None).await.1);
            }
            w.settled(&guids).await;
            let written = writes(&w.github.requests().await.unwrap());
            assert_eq!(written.len(), 1, "{written:#?}");
            assert!(written[0]["path"].as_str().unwrap().ends_with("/issues/13/comments"), "{written:#?}");
            let reply = w.reply_saying(13, "needs write access").await;
            assert!(reply["body"].as_str().unwrap().contains("@stranger"), "{reply}");
            let refusals = w.github.comments(13).await.unwrap().into_iter().filter(|c| c["user"] == w.login.as_str()).count();
            assert_eq!(refusals, 1);
            w.finish().await;
        }
    }
}

#[tokio::test]
async fn a_rate_limit_of_one_installation_does_not_pause_another() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let mut w = world(&db, Options::default()).await;
    let other =
        TestRepo { id: fresh_repo_id(4_000_000), owner: OWNER.to_owned(), name: "other".to_owned(), installation: 78 };
    w.github.add_repo(other.id, OWNER, &other.name, Some(other.installation)).await.unwrap();

    // Installation 77 has spent its hourly budget (GitHub's primary limit, reset in an hour).
    let mine = format!("^/repos/{OWNER}/{}/", w.repo);
    w.github
        .fault(json!({"status": 403, "rate_limited": true, "retry_after_seconds": 3600, "path_regex": mine}))
        .await
        .unwrap();
    w.open(14, &sha('4'), true).await;
    let limited = eventually("installation 77 meets its limit", || async {
        let requests = w.github.requests().await.ok()?;
        requests.iter().find(|r| r["fault"] == true).cloned()
    })
    .await;

    // Installation 78's pull request is served meanwhile, from delivery to comment.
    w.github.put_file(OWNER, &other.name, &sha('5'), ".preview.yaml", Some(&preview_yaml())).await.unwrap();
    w.github
        .open_pull(json!({"owner": OWNER, "repo": other.name, "number": 15, "head_sha": sha('5'), "user": "dev"}))
        .await
        .unwrap();
    let opened = other.pull_request("opened", 15, &sha('5')).unwrap();
    assert_eq!(w.github.deliver("pull_request", &opened).await.unwrap().status_code, 202);
    let ready = w.wait_state_in(other.id, 15, "Ready").await;
    w.comment_saying(15, ready.url.as_deref().unwrap()).await;

    // Installation 77 waits for its reset: nothing more was sent for it.
    let requests = w.github.requests().await.unwrap();
    let later: Vec<&Value> = requests
        .iter()
        .filter(|r| r["id"].as_i64() > limited["id"].as_i64() && r["installation_id"] == INSTALLATION)
        .collect();
    assert!(later.is_empty(), "{later:#?}");
    assert!(w.environment(14).await.is_none());
    w.finish().await;
}

#[tokio::test]
async fn a_marker_written_by_someone_else_is_neither_edited_nor_trusted() {
    for token in [false, true] {
        let db = fresh(Backend::Sqlite).await.unwrap();
        let mut w = world(&db, Options { token, ..Options::default() }).await;
        // Someone writes previewd's marker on the pull request first.
        let marker = format!("<!-- previewd:{}:{}:16 -->", w.instance, w.repo_id);
        let planted_body = format!("### 🟢 Preview environment ready\n\n**https://phish.example**\n\n{marker}");
        let planted = w.github.comment_as(OWNER, &w.repo, 16, "stranger", &planted_body).await.unwrap();
        w.open(16, &sha('6'), true).await;
        let ready = w.wait_state(16, "Ready").await;
        // previewd posts its own comment and leaves the other alone.
        let own = w.comment_saying(16, ready.url.as_deref().unwrap()).await;
        assert_ne!(own["id"], planted);
        assert_eq!(own["user"], w.login.as_str());
        let comments = w.github.comments(16).await.unwrap();
        let theirs = comments.iter().find(|c| c["id"] == planted).unwrap();
        assert_eq!(
            (theirs["edits"].as_i64(), theirs["body"].as_str()),
            (Some(0), Some(planted_body.as_str())),
            "token: {token}"
        );
        // Who previewd is was asked of GitHub once.
        let asked = w.github.requests().await.unwrap();
        let asked =
            asked.iter().filter(|r| r["method"] == "GET" && (r["path"] == "/app" || r["path"] == "/user")).count();
        assert_eq!(asked, 1, "token: {token}");
        w.finish().await;
    }
}

/// An App uninstalled, a repository taken out of it: on both stores (the lookup joins tables).
mod installations {
    use super::*;

    previewd_e2e::each_backend! {
        async fn a_removed_repository_and_an_uninstalled_app_leave_nothing_running(db) {
            let mut w = world(&db, Options::default()).await;
            w.open(41, &sha('a'), true).await;
            let ready = w.wait_state(41, "Ready").await;
            w.comment_saying(41, ready.url.as_deref().unwrap()).await;
            // A second repository of the installation, with its own environment.
            let other = w.open_in_other_repository(42, &sha('b')).await;
            w.wait_state_in(other.id, 42, "Ready").await;

            // Both reported. Then the first repository is taken out of the installation (on
            // GitHub, then by delivery).
            w.comment_saying(42, "Preview environment ready").await;
            w.idle().await;
            w.github.add_repo(w.repo_id, OWNER, &w.repo, None).await.unwrap();
            let asked_before = w.github.requests().await.unwrap().len();
            let mut removed = example("installation_repositories", "removed").unwrap();
            removed["installation"]["id"] = INSTALLATION.into();
            removed["repositories_added"] = json!([]);
            removed["repositories_removed"] =
                json!([{"id": w.repo_id, "name": w.repo, "full_name": format!("{OWNER}/{}", w.repo), "private": false}]);
            let delivered = w.github.deliver("installation_repositories", &removed).await.unwrap();
            assert_eq!(delivered.status_code, 202, "{delivered:?}");
            let gone = w.wait_state(41, "Deleted").await;
            assert_eq!(gone.reason.as_deref(), Some("the repository was removed from the GitHub App's installation"));
            let namespaces = Api::<Namespace>::all(previewd_e2e::cluster::admin_client().await.unwrap());
            assert!(namespaces.get_opt(ready.name.as_deref().unwrap()).await.unwrap().is_none(), "its namespace is gone");
            assert_eq!(w.environment_in(other.id, 42).await.unwrap().state, "Ready", "the other repository keeps its own");

            // The App is uninstalled: the other repository's environment goes too.
            let mut deleted = example("installation", "deleted").unwrap();
            deleted["installation"]["id"] = INSTALLATION.into();
            let delivered = w.github.deliver("installation", &deleted).await.unwrap();
            assert_eq!(delivered.status_code, 202, "{delivered:?}");
            let gone = w.wait_state_in(other.id, 42, "Deleted").await;
            assert_eq!(gone.reason.as_deref(), Some("the GitHub App was uninstalled or suspended on this repository's account"));
            w.settled(std::slice::from_ref(&delivered.guid)).await;
            // Every job done, the teardowns' reports included: none of them tried GitHub, where
            // previewd can no longer write (the first repository answers 404 to the App now).
            w.idle().await;
            let after: Vec<Value> = w.github.requests().await.unwrap().split_off(asked_before);
            let about: Vec<&Value> = after
                .iter()
                .filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with(&format!("/repos/{OWNER}/"))))
                .collect();
            assert!(about.is_empty(), "previewd wrote to repositories it no longer has: {about:#?}");
            w.finish().await;
        }
    }
}
