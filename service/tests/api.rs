//! The admin API and the CLI that drives it, through the real HTTP server on both stores: the
//! `previewd` binary, the control plane, BIND and the GitHub stand-in (the story harness), and
//! tokens made with `previewd token create` as a platform team makes them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::story::*;
use common::{TestServer, config};
use previewd_environments::model::{CommitSha, EnvironmentState, PrNumber, PullRequest, Repo, RepoId};
use previewd_environments::store::TokenScope;
use secrecy::ExposeSecret;
use serde_json::Value;
use std::collections::HashMap;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_previewd");

/// Runs the CLI with exactly `env` (and `PATH`).
fn cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = Command::new(BIN);
    command.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A request with `token` (or none); the status and the JSON answer.
/// Every answer is checked against the committed OpenAPI description.
async fn call(method: reqwest::Method, url: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method.clone(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: not JSON: {text}"));
    if status >= 400 {
        assert!(
            value["error"].is_string() && value["message"].is_string(),
            "{status}: error answers are {{error, message}}: {value}"
        );
    }
    common::openapi::check(method.as_str(), url, status, &value);
    (status, value)
}

async fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    call(reqwest::Method::GET, url, token, None).await
}

previewd_e2e::each_backend! {
    async fn a_platform_team_lists_inspects_extends_redeploys_and_destroys(db) {
        let mut s = story(&db, |p| p).await;
        let db_env = [("PREVIEWD_DATABASE_URL", db.url.as_str()), ("PREVIEWD_WEBHOOK_SECRETS", "unused")];
        let (ok, admin, err) = cli(&["token", "create", "--name", "ops", "--scope", "admin"], &db_env);
        assert!(ok, "{err}");
        let admin = admin.trim().to_owned();
        assert!(admin.starts_with("pvd_") && err.contains("shown only this once"), "{admin} / {err}");
        let (ok, reader, err) = cli(&["token", "create", "--name", "viewer", "--scope", "read"], &db_env);
        assert!(ok, "{err}");
        let reader = reader.trim().to_owned();
        let (ok, _, err) = cli(&["token", "create", "--name", "ops", "--scope", "read"], &db_env);
        assert!(!ok && err.contains("a token named `ops` exists"), "{err}");
        let api = format!("{}/api/v1", s.previewd.base);

        s.open(1, &sha('a')).await;
        let ready = s.wait_state(1, "Ready").await;

        // No anonymous access; an unknown token is refused alike.
        let (status, body) = get(&format!("{api}/environments"), None).await;
        assert_eq!((status, body["error"].as_str()), (401, Some("unauthorized")));
        assert_eq!(get(&format!("{api}/environments"), Some("pvd_nonsense")).await.0, 401);

        // Listing and each filter.
        let list = |query: &str| format!("{api}/environments?{query}");
        let ids = |body: &Value| -> Vec<i64> { body["environments"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect() };
        let repository = format!("{OWNER}/{}", s.repo);
        for query in [String::new(), format!("repository={repository}"), format!("owner={OWNER}"), "state=Ready".into(), "author=dev".into(), "updated_since=2020-01-01T00:00:00Z".into()] {
            let (status, body) = get(&list(&query), Some(&reader)).await;
            assert_eq!(status, 200, "{query}: {body}");
            assert!(ids(&body).contains(&ready.id), "{query}: {body}");
        }
        for query in [format!("repository={OWNER}/other"), "owner=someone-else".into(), "state=Deleted".into(), "author=nobody".into(), "updated_since=2999-01-01T00:00:00Z".into()] {
            let (status, body) = get(&list(&query), Some(&reader)).await;
            assert_eq!(status, 200, "{query}: {body}");
            assert!(!ids(&body).contains(&ready.id), "{query} excludes it: {body}");
        }
        for (query, field) in [("state=Sleepy", "state"), ("limit=0", "limit"), ("limit=101", "limit"), ("cursor=xyz", "cursor"), ("colour=red", "colour"), ("updated_since=yesterday", "updated_since"), ("repository=acme", "repository")] {
            let (status, body) = get(&list(query), Some(&reader)).await;
            assert_eq!(status, 400, "{query}: {body}");
            assert!(body["message"].as_str().unwrap().starts_with(&format!("{field}:")), "{query} names the field: {body}");
        }

        // One environment, with its history.
        let (status, shown) = get(&format!("{api}/environments/{}", ready.id), Some(&reader)).await;
        assert_eq!(status, 200, "{shown}");
        assert_eq!(shown["state"], "Ready");
        assert_eq!(shown["url"].as_str(), ready.url.as_deref());
        assert_eq!(shown["deployed_sha"], sha('a'));
        // Its objects, as the cluster has them: the namespace first, the workload rolled out,
        // no Secret (previewd may not read them).
        let objects: Vec<(String, String, Option<bool>)> = shown["objects"].as_array().unwrap().iter()
            .map(|o| (o["kind"].as_str().unwrap().to_owned(), o["name"].as_str().unwrap().to_owned(), o["ready"].as_bool())).collect();
        let namespace = ready.name.clone().unwrap();
        assert_eq!(objects[0], ("Namespace".to_owned(), namespace.clone(), Some(true)), "{shown}");
        assert!(objects.contains(&("Deployment".to_owned(), "app".to_owned(), Some(true))), "{shown}");
        assert!(objects.contains(&("Service".to_owned(), "app".to_owned(), None)), "{shown}");
        assert!(!objects.iter().any(|(kind, ..)| kind == "Secret"), "{shown}");
        assert!(shown["objects_error"].is_null(), "{shown}");
        let in_cluster = kube::Api::<k8s_openapi::api::networking::v1::NetworkPolicy>::namespaced(previewd_e2e::cluster::admin_client().await.unwrap(), &namespace)
            .list(&kube::api::ListParams::default()).await.unwrap();
        let mut policies: Vec<&str> = objects.iter().filter(|(kind, ..)| kind == "NetworkPolicy").map(|(_, name, _)| name.as_str()).collect();
        let mut expected: Vec<String> = in_cluster.items.into_iter().filter_map(|c| c.metadata.name).collect();
        policies.sort_unstable();
        expected.sort();
        assert_eq!(policies.len(), 3, "the template's three: {shown}");
        assert_eq!(policies, expected, "the NetworkPolicies as the cluster's admin sees them");
        let states: Vec<&str> = shown["transitions"].as_array().unwrap().iter().map(|t| t["to"].as_str().unwrap()).collect();
        assert!(states.starts_with(&["Pending", "Provisioning"]) && states.ends_with(&["Ready"]), "{states:?}");
        assert_eq!(get(&format!("{api}/environments/999999"), Some(&reader)).await.0, 404);
        assert_eq!(get(&format!("{api}/environments/abc"), Some(&reader)).await.0, 400);

        // A read token cannot act; nothing changes.
        let extend = format!("{api}/environments/{}/extend", ready.id);
        let (status, body) = call(reqwest::Method::POST, &extend, Some(&reader), Some(r#"{"duration": "2h"}"#)).await;
        assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")), "{body}");
        // Bad bodies and durations are refused by field.
        for (body, status, field) in [("not json", 400, "body"), (r#"{"duration": "soon"}"#, 422, "duration"), (r#"{"duration": "30d"}"#, 422, "duration"), (r#"{"duration": "2h", "x": 1}"#, 400, "body")] {
            let (got, answer) = call(reqwest::Method::POST, &extend, Some(&admin), Some(body)).await;
            assert_eq!(got, status, "{body}: {answer}");
            assert!(answer["message"].as_str().unwrap().starts_with(&format!("{field}:")), "{body}: {answer}");
        }
        assert_eq!(s.environment(1).await.unwrap().expires_at, ready.expires_at, "refusals change nothing");

        // Extend: later expiry, reported on the pull request as done through the API.
        let (status, body) = call(reqwest::Method::POST, &extend, Some(&admin), Some(r#"{"duration": "2h"}"#)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["capped"], false);
        let extended = s.environment(1).await.unwrap();
        assert!(extended.expires_at.unwrap() >= ready.expires_at.unwrap() + 2 * 3_600_000 - 1_000, "{extended:?}");
        s.comment_says(1, &["extended to", "by token `ops` via the API"]).await;

        // Limits: the live environment holds a slot against the fixture policy's limits.
        let (status, limits) = get(&format!("{api}/limits"), Some(&reader)).await;
        assert_eq!(status, 200, "{limits}");
        assert_eq!((limits["global"]["live"].as_i64(), limits["global"]["limit"].as_i64()), (Some(1), Some(50)), "{limits}");
        let repo_count = limits["repositories"].as_array().unwrap().iter().find(|c| c["scope"] == repository.as_str()).unwrap();
        assert_eq!((repo_count["live"].as_i64(), repo_count["limit"].as_i64()), (Some(1), Some(5)), "{limits}");
        assert_eq!(limits["when_full"], "reject");

        // Usage: hours so far, at the requests of the Deployment in the cluster.
        let (status, usage) = get(&format!("{api}/usage?group_by=repository"), Some(&reader)).await;
        assert_eq!(status, 200, "{usage}");
        let group = usage["groups"].as_array().unwrap().iter().find(|g| g["key"] == repository.as_str()).unwrap().clone();
        assert_eq!(group["environments"], 1);
        let hours = group["environment_hours"].as_f64().unwrap();
        assert!(hours > 0.0 && hours < 0.5, "{group}");
        let admin_client = previewd_e2e::cluster::admin_client().await.unwrap();
        let deployment = kube::Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(admin_client, ready.name.as_deref().unwrap()).get("app").await.unwrap();
        let spec = deployment.spec.unwrap();
        let replicas = f64::from(spec.replicas.unwrap_or(1));
        let requests = spec.template.spec.unwrap().containers[0].resources.clone().unwrap().requests.unwrap();
        let cores = previewd_environments::quantity::Quantity::new(requests["cpu"].0.clone()).unwrap().cpu_millis().unwrap() as f64 / 1000.0;
        let cpu_hours = group["cpu_hours"].as_f64().unwrap();
        assert!((cpu_hours - hours * cores * replicas).abs() < 1e-9, "{cores} cores x {replicas}: {group}");
        for (query, field, status) in [("group_by=team", "group_by", 400), ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "from", 422), ("from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from", 422)] {
            let (got, body) = get(&format!("{api}/usage?{query}"), Some(&reader)).await;
            assert_eq!(got, status, "{query}: {body}");
            assert!(body["message"].as_str().unwrap().starts_with(&format!("{field}:")), "{query}: {body}");
        }
        let (ok, out, err) = cli(&["usage", "--server", &s.previewd.base], &[("PREVIEWD_TOKEN", reader.as_str())]);
        assert!(ok, "{err}");
        assert!(out.contains(&repository) && out.contains("ENV-HOURS"), "{out}");
        let (ok, out, err) = cli(&["limits", "-o", "json", "--server", &s.previewd.base], &[("PREVIEWD_TOKEN", reader.as_str())]);
        assert!(ok, "{err}");
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["global"]["live"], 1);

        // The CLI, as people and scripts use it.
        let server = [("PREVIEWD_SERVER", s.previewd.base.as_str()), ("PREVIEWD_TOKEN", reader.as_str())];
        let (ok, out, err) = cli(&["env", "list"], &server);
        assert!(ok, "{err}");
        assert!(out.contains(&format!("{repository}#1")) && out.contains("Ready"), "{out}");
        let (ok, out, err) = cli(&["env", "show", &ready.id.to_string(), "-o", "json"], &server);
        assert!(ok, "{err}");
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["id"], ready.id);
        let (ok, out, err) = cli(&["env", "show", &ready.id.to_string()], &server);
        assert!(ok, "{err}");
        let deployment_row = out.lines().find(|l| l.split_whitespace().take(2).eq(["Deployment", "app"])).unwrap_or_else(|| panic!("{out}"));
        assert!(deployment_row.contains("1 of 1 replicas available"), "{out}");
        let (ok, _, err) = cli(&["env", "show", "999999"], &server);
        assert!(!ok && err.contains("there is no environment 999999"), "the server's words: {err}");
        let (ok, _, err) = cli(&["env", "destroy", &ready.id.to_string()], &server);
        assert!(!ok && err.contains("has scope `read`"), "{err}");

        // Redeploy: through Pending again to Ready.
        let before = s.store.transitions(ready.id).await.unwrap().len();
        let (status, body) = call(reqwest::Method::POST, &format!("{api}/environments/{}/redeploy", ready.id), Some(&admin), None).await;
        assert_eq!(status, 202, "{body}");
        s.wait(1, "redeployed", |e| e.state == "Ready").await;
        let after = s.store.transitions(ready.id).await.unwrap();
        assert!(after[before..].iter().any(|t| t.to_state == "Pending"), "a redeploy goes through Pending: {after:#?}");
        s.comment_says(1, &["redeploy asked by token `ops` via the API"]).await;

        // Destroy with the CLI.
        let admin_server = [("PREVIEWD_SERVER", s.previewd.base.as_str()), ("PREVIEWD_TOKEN", admin.as_str())];
        let (ok, out, err) = cli(&["env", "destroy", &ready.id.to_string()], &admin_server);
        assert!(ok, "{err}");
        assert!(out.contains("destroying"), "{out}");
        let gone = s.wait_state(1, "Deleted").await;
        assert_eq!(gone.reason.as_deref(), Some("destroyed by token `ops` via the API"));
        s.comment_says(1, &["destroyed by token `ops` via the API"]).await;
        // Who caused each step, as the history shows it.
        let (_, shown) = get(&format!("{api}/environments/{}", ready.id), Some(&reader)).await;
        let steps: Vec<(&str, &str)> = shown["transitions"].as_array().unwrap().iter().map(|t| (t["to"].as_str().unwrap(), t["actor"].as_str().unwrap())).collect();
        assert_eq!(steps[0].0, "Pending", "{steps:?}");
        assert!(steps[0].1.starts_with("pull_request.opened by @"), "the delivery and its sender: {steps:?}");
        assert_eq!(steps[1], ("Provisioning", "previewd"), "{steps:?}");
        assert!(steps.contains(&("Pending", "token ops via the API")), "the redeploy: {steps:?}");
        assert!(steps.contains(&("Deleting", "token ops via the API")), "the destroy: {steps:?}");
        assert_eq!(steps.last(), Some(&("Deleted", "previewd")), "{steps:?}");
        let (status, body) = call(reqwest::Method::DELETE, &format!("{api}/environments/{}", ready.id), Some(&admin), None).await;
        assert_eq!((status, body["error"].as_str()), (409, Some("not_live")), "{body}");

        // The audit log: every action, refusals included, newest first; admins only.
        assert_eq!(get(&format!("{api}/audit"), Some(&reader)).await.0, 403);
        let (status, audit) = get(&format!("{api}/audit"), Some(&admin)).await;
        assert_eq!(status, 200);
        let entries: Vec<(String, String, String)> = audit["entries"].as_array().unwrap().iter()
            .map(|e| (e["actor"].as_str().unwrap().to_owned(), e["action"].as_str().unwrap().to_owned(), e["outcome"].as_str().unwrap().to_owned()))
            .collect();
        let has = |actor: &str, action: &str, outcome: &str| entries.iter().any(|(a, b, c)| a == actor && b == action && c.starts_with(outcome));
        assert!(has("token:ops", "environment.destroy", "refused (409)"), "{entries:#?}");
        assert!(has("token:ops", "environment.destroy", "done"), "{entries:#?}");
        assert!(has("token:ops", "environment.redeploy", "done"), "{entries:#?}");
        assert!(has("token:ops", "environment.extend", "done"), "{entries:#?}");
        assert!(has("token:ops", "environment.extend", "refused (422)"), "{entries:#?}");
        assert!(has("token:viewer", "environment.extend", "refused (403)"), "{entries:#?}");
        assert!(has("cli", "token.create", "done"), "{entries:#?}");
        let first = &audit["entries"][0];
        assert_eq!(first["action"], "environment.destroy");
        assert!(first["remote"].as_str().unwrap().starts_with("127.0.0.1:"), "{first}");
        assert!(first["target"].as_str().unwrap().ends_with("#1"), "{first}");

        // A revoked token is refused from then on.
        let (ok, _, err) = cli(&["token", "revoke", "viewer"], &db_env);
        assert!(ok, "{err}");
        assert_eq!(get(&format!("{api}/environments"), Some(&reader)).await.0, 401);
        let (ok, out, _) = cli(&["token", "list", "-o", "json"], &db_env);
        assert!(ok);
        let tokens: Value = serde_json::from_str(&out).unwrap();
        assert!(!out.contains("pvd_"), "no secret is ever listed: {out}");
        assert!(tokens.as_array().unwrap().iter().any(|t| t["name"] == "viewer" && t["revoked_at"].is_string()), "{tokens}");
        s.finish().await;
    }

    async fn pages_skip_and_repeat_nothing_while_environments_change(db) {
        let server = TestServer::start_with(config(&db, &[])).await;
        let store = server.store.clone();
        let pr = |n: i64| PullRequest {
            repo: Repo { id: RepoId(77), owner: "acme".into(), name: "fleet".into() },
            number: PrNumber(n),
            head_sha: CommitSha("a".repeat(40)),
            head_branch: "b".into(),
            author: "dev".into(),
            from_fork: false,
            draft: false,
            labels: vec![],
        };
        let mut existing = Vec::new();
        for n in 1..=250 {
            existing.push(store.record_environment(&pr(n), EnvironmentState::Pending, None, &previewd_environments::model::Cause::Previewd).await.unwrap().id);
        }
        let (_, token) = store.create_token("pager", TokenScope::Read).await.unwrap();
        let token = token.expose_secret().to_owned();
        // While the pages are read: environments change state and new ones arrive.
        let churn = tokio::spawn({
            let store = store.clone();
            async move {
                for round in 0..400_i64 {
                    let n = 1 + (round * 37) % 250;
                    let to = if round % 2 == 0 { EnvironmentState::Deleting } else { EnvironmentState::Pending };
                    let _ = store.record_environment(&pr(n), to, None, &previewd_environments::model::Cause::Previewd).await;
                    if round % 10 == 0 {
                        store.record_environment(&pr(1000 + round), EnvironmentState::Pending, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
                    }
                    tokio::task::yield_now().await;
                }
            }
        });
        let mut seen: HashMap<i64, usize> = HashMap::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut url = format!("{}/api/v1/environments?limit=7", server.base);
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let (status, body) = get(&url, Some(&token)).await;
            assert_eq!(status, 200, "{body}");
            pages += 1;
            for e in body["environments"].as_array().unwrap() {
                *seen.entry(e["id"].as_i64().unwrap()).or_default() += 1;
            }
            match body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        churn.await.unwrap();
        assert!(pages >= 250 / 7, "{pages} pages");
        for id in &existing {
            assert_eq!(seen.get(id), Some(&1), "environment {id} seen exactly once");
        }
        assert!(seen.values().all(|n| *n == 1), "nothing repeated");
        server.stop().await;
    }

    async fn the_event_stream_follows_changes_and_resumes_after_a_reconnect(db) {
        use previewd_environments::model::Cause;
        let server = TestServer::start_with(config(&db, &[])).await;
        let store = server.store.clone();
        let pr = |repo: &str, n: i64| PullRequest {
            repo: Repo { id: RepoId(if repo == "shop" { 78 } else { 79 }), owner: "acme".into(), name: repo.into() },
            number: PrNumber(n),
            head_sha: CommitSha("a".repeat(40)),
            head_branch: "b".into(),
            author: "dev".into(),
            from_fork: false,
            draft: false,
            labels: vec![],
        };
        let (_, token) = store.create_token("watcher", TokenScope::Read).await.unwrap();
        let token = token.expose_secret().to_owned();
        let url = format!("{}/api/v1/events?repository=acme/shop", server.base);

        let mut stream = EventStream::open(&url, &token, None).await;
        let first = store.record_environment(&pr("shop", 1), EnvironmentState::Pending, None, &Cause::Previewd).await.unwrap();
        store.record_environment(&pr("other", 1), EnvironmentState::Pending, None, &Cause::Previewd).await.unwrap();
        store.transition(first.id, &"a".repeat(40), EnvironmentState::Provisioning, None, Some("shop-pr-1"), None, None).await.unwrap();
        store.transition(first.id, &"a".repeat(40), EnvironmentState::Ready, None, Some("shop-pr-1"), Some("https://shop-pr-1.example"), None).await.unwrap();
        // Written by previewd without a visible change: no event.
        store.set_requests(first.id, 100, 1 << 20).await.unwrap();
        let mut states = Vec::new();
        let mut last = 0;
        while states.last().map(String::as_str) != Some("Ready") {
            let (kind, id, data) = stream.next().await;
            assert_eq!(kind, "change", "{data}");
            assert!(id > last, "ids increase: {id} after {last}");
            last = id;
            assert_eq!(data["environment"]["repository"], "acme/shop", "the filter holds: {data}");
            states.push(data["environment"]["state"].as_str().unwrap().to_owned());
        }
        // Changes of one environment within one read of the feed (200 ms) arrive as one event
        // with the latest view, so intermediate states may be skipped, never reordered.
        let order = ["Pending", "Provisioning", "Ready"];
        let positions: Vec<usize> = states.iter().map(|s| order.iter().position(|o| o == s).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] <= w[1]), "{states:?}");
        drop(stream);

        // Missed while away: an extension (no transition), a new pull request; then resumed.
        store.set_expiry(first.id, 4_102_444_800_000, Some("extended")).await.unwrap();
        let second = store.record_environment(&pr("shop", 2), EnvironmentState::Pending, None, &Cause::Previewd).await.unwrap();
        let mut resumed = EventStream::open(&url, &token, Some(last)).await;
        let (_, id, data) = resumed.next().await;
        assert!(id > last, "{id} after {last}");
        assert_eq!((data["environment"]["id"].as_i64(), data["environment"]["expires_at"].as_str()), (Some(first.id), Some("2100-01-01T00:00:00Z")), "{data}");
        let (_, next, data) = resumed.next().await;
        assert!(next > id, "{next} after {id}");
        assert_eq!(data["environment"]["id"].as_i64(), Some(second.id), "{data}");
        // Then live again.
        store.transition(second.id, &"a".repeat(40), EnvironmentState::Provisioning, None, None, None, None).await.unwrap();
        let (_, live, data) = resumed.next().await;
        assert!(live > next && data["environment"]["state"] == "Provisioning", "{data}");

        // Refusals name the field.
        for (query, header, field) in [("", Some("abc"), "Last-Event-ID"), ("?colour=red", None, "colour"), ("?state=Sleepy", None, "state")] {
            let mut request = reqwest::Client::new().get(format!("{}/api/v1/events{query}", server.base)).bearer_auth(&token);
            if let Some(header) = header {
                request = request.header("last-event-id", header);
            }
            let answer = request.send().await.unwrap();
            assert_eq!(answer.status(), 400, "{query}");
            let body: Value = answer.json().await.unwrap();
            assert!(body["message"].as_str().unwrap().starts_with(&format!("{field}:")), "{body}");
        }
        assert_eq!(reqwest::get(format!("{}/api/v1/events", server.base)).await.unwrap().status(), 401);
        server.stop().await;
    }
}

#[tokio::test]
async fn the_cli_names_a_missing_token_and_an_unreachable_server() {
    let (ok, _, err) = cli(&["env", "list"], &[("PREVIEWD_SERVER", "http://127.0.0.1:9")]);
    assert!(!ok && err.contains("PREVIEWD_TOKEN"), "{err}");
    let (ok, _, err) = cli(&["env", "list"], &[("PREVIEWD_SERVER", "http://127.0.0.1:9"), ("PREVIEWD_TOKEN", "pvd_x")]);
    assert!(!ok && err.contains("cannot reach previewd at http://127.0.0.1:9"), "{err}");
}

/// A `text/event-stream` answer, read event by event.
struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    async fn open(url: &str, token: &str, last_event_id: Option<i64>) -> EventStream {
        let mut request = reqwest::Client::new().get(url).bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        EventStream { response, buffer: String::new() }
    }

    /// The next event (keep-alive comments skipped): its type, id and JSON data.
    async fn next(&mut self) -> (String, i64, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field =
                    |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim_start().to_owned());
                let Some(data) = field("data:") else { continue };
                let kind = field("event:").unwrap_or_else(|| "message".into());
                let id = field("id:").map_or(0, |v| v.parse().unwrap());
                return (kind, id, serde_json::from_str(&data).unwrap_or(Value::String(data)));
            }
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(30), self.response.chunk())
                .await
                .expect("an event within 30 s")
                .unwrap()
                .expect("the stream stays open");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}
