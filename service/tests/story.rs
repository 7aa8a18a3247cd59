//! The whole pull-request story end to end: the `previewd` binary started as a user starts it,
//! against the real control plane, the local BIND server, Postgres or the embedded SQLite, and
//! the GitHub stand-in (GitHub's published example payloads, adjusted and signed; every request
//! previewd makes checked against GitHub's OpenAPI description).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::story::*;
use previewd_e2e::cluster::admin_client;
use previewd_e2e::previewd::Previewd;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

previewd_e2e::each_backend! {
    async fn opened_pushed_and_closed(db) {
        let mut s = story(&db, |p| p).await;
        // 1. Opened: namespace, pod Ready, DNS resolves, deployment success, comment with URL and expiry.
        s.open(1, &sha('a')).await;
        let ready = s.wait_state(1, "Ready").await;
        let name = ready.name.clone().unwrap();
        let host = format!("{name}.{}", s.dns.base_domain);
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

        // 3, merged: the first is merged; its namespace and record go, the deployment turns
        // inactive, the comment says why, and the waiting one takes the slot.
        let first = s.environment(4).await.unwrap();
        let name = first.name.clone().unwrap();
        let host = format!("{name}.{}", s.dns.base_domain);
        assert!(s.resolves(&host, Duration::from_secs(5)).await, "{host} resolves");
        s.merge(4, &sha('4')).await;
        let gone = s.wait_state(4, "Deleted").await;
        assert_eq!(gone.reason.as_deref(), Some("pull request merged"));
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(admin_client().await.unwrap());
        assert!(namespaces.get_opt(&name).await.unwrap().is_none(), "the namespace is gone");
        assert!(!s.resolves(&host, Duration::from_millis(500)).await, "the record is gone");
        s.wait_deployment(&sha('4'), "inactive").await;
        s.comment_says(4, &["torn down", "merged"]).await;
        s.wait_state(5, "Ready").await;
        s.comment_says(5, &["Preview environment ready"]).await;
        s.finish().await;
    }

    async fn expiry_warning_extension_and_teardown(db) {
        // 4. A warning in the comment before expiry; a writer's extension moves it, a reader's is
        // refused; an environment left alone is torn down at expiry.
        let mut s = story(&db, |p| p.replace("ttl:\n  default: 48h\n  max: 7d\n  warn_before: 2h", "ttl:\n  default: 45s\n  max: 7d\n  warn_before: 40s")).await;
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
        s.comment_says(7, &["by @writer with `/preview extend`"]).await;
        let comments = s.github.comments(7).await.unwrap();
        assert!(comments.iter().any(|c| c["body"].as_str().unwrap().contains("Sorry @reader")), "the reader is refused");

        s.open(8, &sha('8')).await;
        let expired = s.wait_state(8, "Deleted").await;
        assert_eq!(expired.reason.as_deref(), Some("expired: its time to live ran out"));
        s.comment_says(8, &["expired"]).await;
        assert_eq!(s.environment(7).await.unwrap().state, "Ready", "the extended one lives on");
        s.finish().await;
    }

    async fn bad_inputs_are_refused_and_change_nothing(db) {
        // 7. Unsigned, wrongly signed, oversized and malformed deliveries get their status and
        // leave no trace; an invalid `.preview.yaml` fails its own environment, with the message
        // on the pull request, and nothing else.
        let mut s = story(&db, |p| p).await;
        let http = reqwest::Client::new();
        let body = serde_json::to_vec(&s.pull_request("opened", 40, &sha('4'))).unwrap();
        let send = |body: Vec<u8>, signature: Option<String>| {
            let mut request = http
                .post(format!("{}/webhooks/github", s.previewd.base))
                .header("X-GitHub-Event", "pull_request")
                .header("X-GitHub-Delivery", uuid::Uuid::new_v4().to_string())
                .header("X-GitHub-Hook-ID", "4242")
                .header("Content-Type", "application/json")
                .body(body);
            if let Some(signature) = signature {
                request = request.header("X-Hub-Signature-256", signature);
            }
            request.send()
        };
        assert_eq!(send(body.clone(), None).await.unwrap().status(), 401);
        assert_eq!(send(body.clone(), Some(previewd_e2e::github::sign("wrong", &body))).await.unwrap().status(), 401);
        let huge = vec![b' '; 26 * 1024 * 1024];
        // previewd answers 413 from Content-Length before reading the body and closes the
        // connection, so the client may see the close before it has finished sending.
        match send(huge.clone(), Some(previewd_e2e::github::sign(SECRET, &huge))).await {
            Ok(answer) => assert_eq!(answer.status(), 413),
            Err(error) => assert!(error.is_request() || error.is_body(), "{error}"),
        }
        let broken = b"{\"action\": \"opened\",".to_vec();
        assert_eq!(send(broken.clone(), Some(previewd_e2e::github::sign(SECRET, &broken))).await.unwrap().status(), 400);
        assert_eq!(s.store.count_deliveries().await.unwrap(), 0, "refused deliveries leave no trace");

        s.preview = "image: registry.preview.test/acme/app:{sha}\nport: 99999\n".to_owned();
        s.open(41, &sha('5')).await;
        let failed = s.wait_state(41, "Failed").await;
        assert!(failed.reason.as_deref().is_some_and(|r| r.contains("port")), "{:?}", failed.reason);
        s.comment_says(41, &["failed", "port"]).await;
        s.wait_deployment(&sha('5'), "failure").await;
        s.preview = preview_yaml();
        s.open(42, &sha('6')).await;
        s.wait_state(42, "Ready").await;
        s.finish().await;
    }

    async fn github_failing_then_a_missed_closing(db) {
        // 8. GitHub answers 500 for a while: the environment is provisioned anyway and the
        // reports arrive afterwards. A `closed` delivery that never arrives: the resync finds
        // the pull request closed and tears the environment down.
        let mut s = story(&db, |p| p).await;
        s.github.fault(json!({"path_regex": "^/repos/.*/(comments|deployments|check-runs)", "status": 500, "count": 6})).await.unwrap();
        s.open(50, &sha('5')).await;
        let ready = s.wait_state(50, "Ready").await;
        s.comment_says(50, &[ready.url.as_deref().unwrap()]).await;
        s.wait_deployment(&sha('5'), "success").await;
        let failed = s.github.requests().await.unwrap().iter().filter(|r| r["status"] == 500).count();
        assert_eq!(failed, 6, "every injected failure was met");

        // The closing happens on GitHub only; previewd's resync (every second here) notices.
        s.previewd.stop().await.unwrap();
        s.env.retain(|(k, _)| k != "PREVIEWD_GITHUB__RESYNC_INTERVAL_SECONDS");
        s.env.push(("PREVIEWD_GITHUB__RESYNC_INTERVAL_SECONDS".to_owned(), "1".to_owned()));
        s.github.update_pull(OWNER, &s.repo, 50, json!({"state": "closed"})).await.unwrap();
        s.previewd = Previewd::start(Path::new(env!("CARGO_BIN_EXE_previewd")), &s.env, &s.dir.path().join("restarted.log")).await.unwrap();
        let gone = s.wait_state(50, "Deleted").await;
        assert_eq!(gone.reason.as_deref(), Some("pull request closed without merge"));
        s.wait_deployment(&sha('5'), "inactive").await;
        s.comment_says(50, &["torn down"]).await;
        s.finish().await;
    }

    async fn dns_unreachable_then_back(db) {
        // The DNS server cannot be reached: the environment stays Provisioning, and the pull
        // request says why (deployment `in_progress`, the reason in the comment). Once DNS is
        // back (here: previewd restarted with a reachable server), it becomes Ready.
        let real = std::env::var("PREVIEWD_TEST_DNS_SERVER").unwrap();
        let mut s = story(&db, |p| p.replace(&real, "127.0.0.1:9")).await;
        s.open(70, &sha('7')).await;
        let waiting = s.wait(70, "waiting for DNS", |e| e.reason.as_deref().is_some_and(|r| r.contains("DnsUnreachable"))).await;
        assert_eq!(waiting.state, "Provisioning");
        s.wait_deployment(&sha('7'), "in_progress").await;
        s.comment_says(70, &["being provisioned", "could not be reached"]).await;

        s.previewd.stop().await.unwrap();
        let policy = s.dir.path().join("policy.yaml");
        std::fs::write(&policy, std::fs::read_to_string(&policy).unwrap().replace("127.0.0.1:9", &real)).unwrap();
        s.previewd = Previewd::start(Path::new(env!("CARGO_BIN_EXE_previewd")), &s.env, &s.dir.path().join("restarted.log")).await.unwrap();
        let ready = s.wait_state(70, "Ready").await;
        s.wait_deployment(&sha('7'), "success").await;
        s.comment_says(70, &[ready.url.as_deref().unwrap()]).await;
        s.finish().await;
    }

    async fn over_the_limit_with_reject(db) {
        // 5, with `reject`: the second environment is Rejected with a comment naming the limit.
        let mut s = story(&db, |p| p.replace("  per_repository: 5\n", "  per_repository: 1\n")).await;
        s.open(60, &sha('6')).await;
        s.wait_state(60, "Ready").await;
        s.open(61, &sha('7')).await;
        let rejected = s.wait_state(61, "Rejected").await;
        assert!(rejected.reason.unwrap().contains("repository limit reached"));
        s.comment_says(61, &["No preview environment", "repository limit reached", "(limit 1)"]).await;
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
        // Entering Provisioning; a Provisioning -> Provisioning row only records why the
        // rollout waits (a look that found the deployment not yet available).
        let provisioned = history
            .iter()
            .filter(|t| t.to_state == "Provisioning" && t.from_state.as_deref() != Some("Provisioning"))
            .count();
        assert_eq!(provisioned, 1, "provisioned once: {history:?}");
    }
    second.stop().await.unwrap();
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_by_the_api_server_then_served() {
    // The API server answers previewd's server-side applies 429 (API Priority and Fairness, for
    // an identity of this test only): the environment stays Provisioning with the reason, the
    // reconcile job is retried with backoff, and once previewd is served again it is Ready.
    let identity =
        previewd_e2e::throttle::ThrottledIdentity::create("throttled", previewd_e2e::cluster::SOURCE_NAMESPACE)
            .await
            .unwrap();
    identity.throttle(&["patch"]).await.unwrap();
    let db = previewd_e2e::database::fresh(previewd_e2e::database::Backend::Sqlite).await.unwrap();
    let kubeconfig = identity.kubeconfig().display().to_string();
    let mut s = story_with(&db, |p| p, &[("PREVIEWD_KUBECONFIG", kubeconfig)]).await;
    s.open(80, &sha('8')).await;
    let throttled = s.wait(80, "throttled", |e| e.reason.as_deref().is_some_and(|r| r.contains("429"))).await;
    assert_eq!(throttled.state, "Provisioning", "not Failed: {:?}", throttled.reason);
    s.wait_deployment(&sha('8'), "in_progress").await;
    // Retried: the worker logged a failed attempt with its next try, more than once.
    common::eventually_within(Duration::from_secs(60), "two retried attempts", || async {
        (s.previewd.log().matches("job attempt failed; retrying later").count() >= 2).then_some(())
    })
    .await;

    identity.release().await.unwrap();
    let ready = s.wait_state(80, "Ready").await;
    s.wait_deployment(&sha('8'), "success").await;
    s.comment_says(80, &[ready.url.as_deref().unwrap()]).await;
    let history = s.store.transitions(ready.id).await.unwrap();
    assert!(history.iter().all(|t| t.to_state != "Failed"), "never Failed: {history:?}");
    s.finish().await;
}
