//! The GitHub stand-in itself: requests that fit GitHub's OpenAPI description are served and
//! change its state, with answers that fit the description too; requests that do not fit are
//! refused and recorded, so tests of previewd can fail on them. Authentication, faults, rate
//! limits, conditional requests and webhook deliveries behave like GitHub's.
//!
//! These tests need Node.js and `npm ci --prefix e2e`; without them they fail saying so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use previewd_e2e::standin::GitHubStandIn;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const INSTALLATION: i64 = 5;
const PAT: &str = "ghp_standin_test";

fn sha(c: char) -> String {
    c.to_string().repeat(40)
}

/// A stand-in with `acme/web` installed on [`INSTALLATION`], `acme/other` on another one, and a
/// personal access token of `preview-bot`; its own answers are checked against the
/// description too.
async fn standin() -> (GitHubStandIn, Client) {
    let standin = GitHubStandIn::start().await.unwrap();
    standin.add_repo(1, "acme", "web", Some(INSTALLATION)).await.unwrap();
    standin.add_repo(2, "acme", "other", Some(6)).await.unwrap();
    standin
        .configure(json!({"pats": [{"token": PAT, "login": "preview-bot"}], "check_responses": true}))
        .await
        .unwrap();
    let client = Client { base: standin.url().to_owned(), http: reqwest::Client::new() };
    (standin, client)
}

struct Client {
    base: String,
    http: reqwest::Client,
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Client {
    async fn call(&self, method: Method, path: &str, auth: Option<&str>, body: Option<Value>) -> Answer {
        self.call_with(method, path, auth, body, &[]).await
    }

    async fn call_with(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
        Answer { status, headers, body }
    }

    /// An installation token for [`INSTALLATION`], as previewd gets one.
    async fn installation_token(&self, standin: &GitHubStandIn) -> String {
        let jwt = standin.app().await.unwrap().jwt(-30, 540).unwrap();
        let path = format!("/app/installations/{INSTALLATION}/access_tokens");
        let answer = self.call(Method::POST, &path, Some(&format!("Bearer {jwt}")), None).await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        format!("token {}", answer.body["token"].as_str().unwrap())
    }
}

fn header<'a>(answer: &'a Answer, name: &str) -> &'a str {
    answer.headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or_default()
}

#[tokio::test]
async fn requests_that_fit_the_description_are_served_and_change_the_state() {
    let (standin, gh) = standin().await;
    let token = gh.installation_token(&standin).await;
    let auth = Some(token.as_str());
    // A deployment with every field previewd sends, then its statuses.
    let deployment = gh
        .call(
            Method::POST,
            "/repos/acme/web/deployments",
            auth,
            Some(json!({
                "ref": sha('a'), "environment": "preview/pr-1", "description": "Preview of #1",
                "transient_environment": true, "production_environment": false, "auto_merge": false,
                "required_contexts": [], "payload": {"pr": 1}, "task": "deploy"
            })),
        )
        .await;
    assert_eq!(deployment.status, 201, "{}", deployment.body);
    for name in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-used",
        "x-ratelimit-reset",
        "x-ratelimit-resource",
        "x-github-request-id",
    ] {
        assert!(deployment.headers.contains_key(name), "no {name} header");
    }
    // GitHub's shape (fields from the description's example) with the stand-in's values.
    assert_eq!(deployment.body["sha"], sha('a'));
    assert_eq!(deployment.body["environment"], "preview/pr-1");
    assert_eq!(deployment.body["creator"]["login"], "previewd-test[bot]");
    assert!(deployment.body["statuses_url"].as_str().unwrap().starts_with(gh.base.as_str()));
    let id = deployment.body["id"].as_i64().unwrap();
    for state in ["in_progress", "success"] {
        let status = gh
            .call(
                Method::POST,
                &format!("/repos/acme/web/deployments/{id}/statuses"),
                auth,
                Some(json!({"state": state, "environment_url": "https://pr-1.preview.test", "log_url": "https://previewd.test/pr-1", "description": "Ready"})),
            )
            .await;
        assert_eq!(status.status, 201, "{}", status.body);
    }
    // A comment, edited, with a reaction; the same reaction again answers 200 like GitHub.
    let comment =
        gh.call(Method::POST, "/repos/acme/web/issues/1/comments", auth, Some(json!({"body": "Deploying"}))).await;
    assert_eq!(comment.status, 201, "{}", comment.body);
    assert_eq!(comment.body["user"]["login"], "previewd-test[bot]");
    assert_eq!(comment.body["user"]["type"], "Bot");
    let comment_id = comment.body["id"].as_i64().unwrap();
    let edited = gh
        .call(
            Method::PATCH,
            &format!("/repos/acme/web/issues/comments/{comment_id}"),
            auth,
            Some(json!({"body": "Ready"})),
        )
        .await;
    assert_eq!(edited.status, 200, "{}", edited.body);
    let reactions = format!("/repos/acme/web/issues/comments/{comment_id}/reactions");
    let first = gh.call(Method::POST, &reactions, auth, Some(json!({"content": "eyes"}))).await;
    let again = gh.call(Method::POST, &reactions, auth, Some(json!({"content": "eyes"}))).await;
    assert_eq!((first.status.as_u16(), again.status.as_u16()), (201, 200));
    // A check run, created and completed (App only).
    let run = gh
        .call(
            Method::POST,
            "/repos/acme/web/check-runs",
            auth,
            Some(json!({"name": "preview/pr-1", "head_sha": sha('a'), "status": "in_progress", "output": {"title": "Deploying", "summary": "..."}})),
        )
        .await;
    assert_eq!(run.status, 201, "{}", run.body);
    let run_id = run.body["id"].as_i64().unwrap();
    let done = gh
        .call(
            Method::PATCH,
            &format!("/repos/acme/web/check-runs/{run_id}"),
            auth,
            Some(json!({"status": "completed", "conclusion": "success", "output": {"title": "Ready", "summary": "https://pr-1.preview.test"}})),
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);

    // The state shows all of it.
    let comments = standin.comments(1).await.unwrap();
    assert_eq!(comments.len(), 1);
    assert_eq!((comments[0]["body"].as_str(), comments[0]["edits"].as_i64()), (Some("Ready"), Some(1)));
    assert_eq!(comments[0]["history"][0]["body"], "Deploying");
    let deployments = standin.deployments().await.unwrap();
    let states: Vec<&str> =
        deployments[0]["statuses"].as_array().unwrap().iter().map(|s| s["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["in_progress", "success"]);
    assert_eq!(deployments[0]["statuses"][1]["environment_url"], "https://pr-1.preview.test");
    let runs = standin.check_runs().await.unwrap();
    let history: Vec<&str> =
        runs[0]["history"].as_array().unwrap().iter().map(|h| h["status"].as_str().unwrap()).collect();
    assert_eq!(history, ["in_progress", "completed"]);
    let state = standin.state().await.unwrap();
    assert_eq!(state["reactions"].as_array().unwrap().len(), 1);
    assert_eq!(standin.tokens_issued(INSTALLATION).await.unwrap(), 1);
    // The listings read back what was written.
    let listed = gh
        .call(
            Method::GET,
            &format!("/repos/acme/web/deployments?sha={}&environment=preview%2Fpr-1&per_page=100", sha('a')),
            auth,
            None,
        )
        .await;
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
    let statuses = gh.call(Method::GET, &format!("/repos/acme/web/deployments/{id}/statuses"), auth, None).await;
    assert_eq!(statuses.body[0]["state"], "success", "newest first");
    let checks = gh
        .call(
            Method::GET,
            &format!("/repos/acme/web/commits/{}/check-runs?check_name=preview%2Fpr-1&per_page=100", sha('a')),
            auth,
            None,
        )
        .await;
    assert_eq!(checks.body["total_count"], 1);
    assert_eq!(checks.body["check_runs"][0]["app"]["slug"], "previewd-test");
    // Neither the requests nor the stand-in's answers (check_responses) strayed from GitHub's description.
    standin.assert_no_violations().await.unwrap();
}

#[tokio::test]
async fn requests_that_do_not_fit_are_refused_and_recorded() {
    let (standin, gh) = standin().await;
    let auth = Some(format!("token {PAT}"));
    let auth = auth.as_deref();
    let cases: Vec<(Method, &str, Option<Value>, &str)> = vec![
        // A required field missing, a value outside its enum, a wrong type.
        (Method::POST, "/repos/acme/web/deployments", Some(json!({"environment": "x"})), "ref"),
        (Method::POST, "/repos/acme/web/deployments/1/statuses", Some(json!({"state": "bogus"})), "allowed values"),
        (
            Method::POST,
            "/repos/acme/web/deployments",
            Some(json!({"ref": sha('a'), "transient_environment": "yes"})),
            "boolean",
        ),
        // A body where the operation takes none; no body where one is required.
        (Method::POST, "/app/hook/deliveries/1/attempts", Some(json!({"again": true})), "takes no request body"),
        (Method::POST, "/repos/acme/web/issues/1/comments", None, "body is required"),
        // A query parameter of the wrong type, one the operation does not document, a path
        // parameter of the wrong type.
        (Method::GET, "/repos/acme/web/pulls?state=open&per_page=many", None, "per_page"),
        (Method::GET, "/repos/acme/web/deployments?check_name=x", None, "not documented"),
        (Method::GET, "/repos/acme/web/pulls/first", None, "pull_number"),
        // A path GitHub does not have, and a method it does not have there.
        (Method::GET, "/repos/acme/web/previews", None, "no operation"),
        (Method::PUT, "/repos/acme/web/issues/comments/1", Some(json!({"body": "x"})), "not documented"),
    ];
    for (method, path, body, why) in &cases {
        let answer = gh.call(method.clone(), path, auth, body.clone()).await;
        assert_eq!(answer.status, 422, "{method} {path}: {}", answer.body);
        // GitHub's "Validation Failed" shape.
        assert_eq!(answer.body["message"], "Validation Failed");
        assert!(answer.body["documentation_url"].is_string());
        let errors = answer.body["errors"].to_string();
        assert!(errors.contains(why), "{method} {path}: {errors} does not say {why:?}");
    }
    let violations = standin.violations().await.unwrap();
    assert_eq!(violations.len(), cases.len(), "{violations:#?}");
    for (violation, (method, path, _, why)) in violations.iter().zip(&cases) {
        assert_eq!(violation["method"], method.as_str());
        assert_eq!(violation["path"], path.split('?').next().unwrap());
        assert!(violation["reason"].as_str().unwrap().contains(why), "{violation}");
    }
    let error = standin.assert_no_violations().await.unwrap_err().to_string();
    assert!(error.contains("10 request(s)") && error.contains("/repos/acme/web/previews"), "{error}");
    // The request log has them all, answered 422, and nothing changed.
    let requests = standin.requests().await.unwrap();
    assert!(requests.iter().all(|r| r["status"] == 422 && r["violation"] == true));
    assert!(standin.deployments().await.unwrap().is_empty());
}

#[tokio::test]
async fn app_jwts_and_installation_tokens_are_checked_and_counted() {
    let (standin, gh) = standin().await;
    let app = standin.app().await.unwrap();
    assert!(app.private_key_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let bearer = |jwt: String| format!("Bearer {jwt}");
    let tokens = format!("/app/installations/{INSTALLATION}/access_tokens");
    // A JWT that is expired, issued in the future, too long-lived, or tampered with: 401.
    let valid = app.jwt(-30, 540).unwrap();
    let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"iss":"1","iat":1,"exp":9999999999}"#);
    for (jwt, why) in [
        (app.jwt(-700, 600).unwrap(), "'exp'"),
        (app.jwt(120, 300).unwrap(), "'iat'"),
        (app.jwt(-30, 3600).unwrap(), "too far in the future"),
        (parts.join("."), "could not be decoded"),
    ] {
        let refused = gh.call(Method::POST, &tokens, Some(&bearer(jwt)), None).await;
        assert_eq!(refused.status, 401, "{}", refused.body);
        assert!(refused.body["message"].as_str().unwrap().contains(why), "{}", refused.body);
    }
    // A valid one: a token per call, counted per installation.
    let issued = gh.call(Method::POST, &tokens, Some(&bearer(valid.clone())), None).await;
    assert_eq!(issued.status, 201, "{}", issued.body);
    assert!(issued.body["expires_at"].is_string() && issued.body["permissions"]["checks"] == "write");
    let token = issued.body["token"].as_str().unwrap().to_owned();
    gh.call(Method::POST, &tokens, Some(&bearer(valid.clone())), None).await;
    assert_eq!(standin.tokens_issued(INSTALLATION).await.unwrap(), 2);
    // The installation of a repository (JWT only); none for an uninstalled one.
    standin.add_repo(3, "acme", "lonely", None).await.unwrap();
    let found = gh.call(Method::GET, "/repos/acme/web/installation", Some(&bearer(valid.clone())), None).await;
    assert_eq!((found.status.as_u16(), found.body["id"].as_i64()), (200, Some(INSTALLATION)));
    let missing = gh.call(Method::GET, "/repos/acme/lonely/installation", Some(&bearer(valid.clone())), None).await;
    assert_eq!(missing.status, 404);
    let with_token = gh.call(Method::GET, "/repos/acme/web/installation", Some(&format!("token {token}")), None).await;
    assert_eq!(with_token.status, 401);
    // The token works in both header forms, on its installation's repositories only.
    for form in [format!("token {token}"), format!("Bearer {token}")] {
        let pulls = gh.call(Method::GET, "/repos/acme/web/pulls", Some(&form), None).await;
        assert_eq!(pulls.status, 200, "{form}: {}", pulls.body);
    }
    let elsewhere = gh.call(Method::GET, "/repos/acme/other/pulls", Some(&format!("token {token}")), None).await;
    assert_eq!(elsewhere.status, 404);
    let repos =
        gh.call(Method::GET, "/installation/repositories?per_page=100", Some(&format!("token {token}")), None).await;
    assert_eq!(repos.body["total_count"], 1);
    assert_eq!(repos.body["repositories"][0]["full_name"], "acme/web");
    // No token, an unknown one: 401 Bad credentials.
    for auth in [None, Some("token ghs_unknown")] {
        let refused = gh.call(Method::GET, "/repos/acme/web/pulls", auth, None).await;
        assert_eq!(refused.status, 401);
        assert_eq!(refused.body["message"], "Bad credentials");
    }
    // A PAT reads and comments as its user, but may not make check runs (GitHub: App only).
    let pat = format!("token {PAT}");
    let comment =
        gh.call(Method::POST, "/repos/acme/web/issues/2/comments", Some(&pat), Some(json!({"body": "hi"}))).await;
    assert_eq!(comment.body["user"]["login"], "preview-bot");
    let run = gh
        .call(Method::POST, "/repos/acme/web/check-runs", Some(&pat), Some(json!({"name": "x", "head_sha": sha('a')})))
        .await;
    assert_eq!(run.status, 403);
    assert_eq!(run.body["message"], "You must authenticate via a GitHub App.");
    // Tokens expire after token_ttl_seconds.
    standin.configure(json!({"token_ttl_seconds": 1})).await.unwrap();
    let short = gh.call(Method::POST, &tokens, Some(&bearer(valid)), None).await;
    let short = format!("token {}", short.body["token"].as_str().unwrap());
    assert_eq!(gh.call(Method::GET, "/repos/acme/web/pulls", Some(&short), None).await.status, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(gh.call(Method::GET, "/repos/acme/web/pulls", Some(&short), None).await.status, 401);
    let kinds: Vec<String> =
        standin.requests().await.unwrap().iter().map(|r| r["auth"].as_str().unwrap().to_owned()).collect();
    assert!(["jwt", "installation", "pat", "none"].iter().all(|k| kinds.iter().any(|x| x == k)), "{kinds:?}");
    standin.assert_no_violations().await.unwrap();
}

#[tokio::test]
async fn files_are_served_at_their_commit_and_missing_ones_are_404() {
    let (standin, gh) = standin().await;
    let token = gh.installation_token(&standin).await;
    let text = "image: registry.preview.test/web:1\nport: 8080\n";
    standin.put_file("acme", "web", &sha('a'), ".github/preview.yaml", Some(text)).await.unwrap();
    let found = gh
        .call(
            Method::GET,
            &format!("/repos/acme/web/contents/.github/preview.yaml?ref={}", sha('a')),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(found.status, 200, "{}", found.body);
    assert_eq!((found.body["type"].as_str(), found.body["encoding"].as_str()), (Some("file"), Some("base64")));
    assert_eq!(found.body["path"], ".github/preview.yaml");
    assert_eq!(found.body["name"], "preview.yaml");
    let packed: String = found.body["content"].as_str().unwrap().chars().filter(|c| !c.is_whitespace()).collect();
    let decoded = base64::engine::general_purpose::STANDARD.decode(packed).unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), text);
    // Another commit, another file, a removed file: 404.
    let other = gh
        .call(
            Method::GET,
            &format!("/repos/acme/web/contents/.github/preview.yaml?ref={}", sha('b')),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(other.status, 404);
    let absent =
        gh.call(Method::GET, &format!("/repos/acme/web/contents/README.md?ref={}", sha('a')), Some(&token), None).await;
    assert_eq!((absent.status.as_u16(), absent.body["message"].as_str()), (404, Some("Not Found")));
    standin.put_file("acme", "web", &sha('a'), ".github/preview.yaml", None).await.unwrap();
    let removed = gh
        .call(
            Method::GET,
            &format!("/repos/acme/web/contents/.github/preview.yaml?ref={}", sha('a')),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(removed.status, 404);
    // Over 1 MB, GitHub gives the size but not the content.
    let large = "#".repeat(1024 * 1024 + 1);
    standin.put_file("acme", "web", &sha('a'), "large.yaml", Some(&large)).await.unwrap();
    let found = gh
        .call(Method::GET, &format!("/repos/acme/web/contents/large.yaml?ref={}", sha('a')), Some(&token), None)
        .await;
    assert_eq!(found.status, 200, "{}", found.body);
    let fields = (found.body["encoding"].as_str(), found.body["content"].as_str(), found.body["size"].as_u64());
    assert_eq!(fields, (Some("none"), Some(""), Some(1024 * 1024 + 1)));
    // Who may do what: given roles, a stranger reads a public repository, a non-user is 404.
    standin.set_permission("acme", "web", "writer", "write").await.unwrap();
    standin.set_permission("acme", "web", "ghost", "not-a-user").await.unwrap();
    for (login, status, permission) in [("writer", 200, "write"), ("stranger", 200, "read"), ("ghost", 404, "")] {
        let answer = gh
            .call(Method::GET, &format!("/repos/acme/web/collaborators/{login}/permission"), Some(&token), None)
            .await;
        assert_eq!(answer.status.as_u16(), status, "{login}: {}", answer.body);
        if status == 200 {
            assert_eq!(answer.body["permission"], permission);
            assert_eq!(answer.body["user"]["login"], login);
        }
    }
    standin.assert_no_violations().await.unwrap();
}

#[tokio::test]
async fn a_fault_answers_exactly_count_times_then_github_is_back() {
    let (standin, gh) = standin().await;
    let token = gh.installation_token(&standin).await;
    standin.fault(json!({"method": "GET", "path_regex": "/pulls$", "status": 500, "count": 2})).await.unwrap();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(gh.call(Method::GET, "/repos/acme/web/pulls", Some(&token), None).await.status.as_u16());
    }
    assert_eq!(statuses, [500, 500, 200]);
    // A secondary rate limit with retry-after; a primary one with an exhausted budget.
    standin
        .fault(
            json!({"method": "POST", "path_regex": "/comments$", "status": 403, "count": 1, "retry_after_seconds": 7}),
        )
        .await
        .unwrap();
    let path = "/repos/acme/web/issues/1/comments";
    let secondary = gh.call(Method::POST, path, Some(&token), Some(json!({"body": "x"}))).await;
    assert_eq!((secondary.status.as_u16(), header(&secondary, "retry-after")), (403, "7"));
    assert!(secondary.body["message"].as_str().unwrap().contains("secondary rate limit"));
    standin.fault(json!({"status": 403, "count": 1, "rate_limited": true, "retry_after_seconds": 30})).await.unwrap();
    let primary = gh.call(Method::GET, "/repos/acme/web/pulls", Some(&token), None).await;
    assert_eq!((primary.status.as_u16(), header(&primary, "x-ratelimit-remaining")), (403, "0"));
    assert_eq!(primary.body["message"], format!("API rate limit exceeded for installation ID {INSTALLATION}."));
    let reset: u64 = header(&primary, "x-ratelimit-reset").parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(reset > now + 20 && reset <= now + 31, "reset {reset}, now {now}");
    // Cleared faults answer nothing; the log marks the faulted requests.
    standin.fault(json!({"status": 503, "count": 5})).await.unwrap();
    standin.clear_faults().await.unwrap();
    let created = gh.call(Method::POST, path, Some(&token), Some(json!({"body": "x"}))).await;
    assert_eq!(created.status, 201);
    let faulted = standin.requests().await.unwrap().into_iter().filter(|r| r["fault"] == true).count();
    assert_eq!(faulted, 4);
    standin.assert_no_violations().await.unwrap();
}

#[tokio::test]
async fn each_token_has_its_own_rate_limit_budget() {
    let (standin, gh) = standin().await;
    let token = gh.installation_token(&standin).await;
    standin.configure(json!({"rate_limit": 3})).await.unwrap();
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let answer = gh.call(Method::GET, "/repos/acme/web/pulls", Some(&token), None).await;
        assert_eq!(answer.status, 200);
        assert_eq!(header(&answer, "x-ratelimit-limit"), "3");
        remaining.push(header(&answer, "x-ratelimit-remaining").to_owned());
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let exhausted = gh.call(Method::GET, "/repos/acme/web/pulls", Some(&token), None).await;
    assert_eq!(exhausted.status, 403);
    assert!(exhausted.body["message"].as_str().unwrap().starts_with("API rate limit exceeded for installation ID"));
    // The PAT's budget is its own.
    let pat = gh.call(Method::GET, "/repos/acme/web/pulls", Some(&format!("token {PAT}")), None).await;
    assert_eq!((pat.status.as_u16(), header(&pat, "x-ratelimit-used")), (200, "1"));
    standin.assert_no_violations().await.unwrap();
}

#[tokio::test]
async fn an_unchanged_listing_is_answered_304_to_its_etag_for_free() {
    let (standin, gh) = standin().await;
    let token = gh.installation_token(&standin).await;
    let pull = json!({"owner": "acme", "repo": "web", "number": 3, "head_sha": sha('b'), "labels": ["preview"]});
    standin.open_pull(pull).await.unwrap();
    let path = "/repos/acme/web/pulls?state=open&per_page=100";
    let first = gh.call(Method::GET, path, Some(&token), None).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body[0]["head"]["sha"], sha('b'));
    assert_eq!(first.body[0]["labels"][0]["name"], "preview");
    let etag = header(&first, "etag").to_owned();
    assert!(etag.starts_with("W/\""), "{etag}");
    let used: u32 = header(&first, "x-ratelimit-used").parse().unwrap();
    let again = gh.call_with(Method::GET, path, Some(&token), None, &[("If-None-Match", &etag)]).await;
    assert_eq!(again.status, 304);
    assert_eq!(again.body, Value::Null, "a 304 has no body");
    assert_eq!(header(&again, "x-ratelimit-used"), used.to_string(), "a 304 costs nothing");
    standin.update_pull("acme", "web", 3, json!({"head_sha": sha('c')})).await.unwrap();
    let changed = gh.call_with(Method::GET, path, Some(&token), None, &[("If-None-Match", &etag)]).await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.body[0]["head"]["sha"], sha('c'));
    // Closed and merged: gone from the open listing, merged on its own page.
    standin.update_pull("acme", "web", 3, json!({"merged": true})).await.unwrap();
    assert_eq!(gh.call(Method::GET, path, Some(&token), None).await.body, json!([]));
    let merged = gh.call(Method::GET, "/repos/acme/web/pulls/3", Some(&token), None).await;
    assert_eq!((merged.body["state"].as_str(), merged.body["merged"].as_bool()), (Some("closed"), Some(true)));
    let requests = standin.requests().await.unwrap();
    assert!(requests.iter().any(|r| r["status"] == 304 && r["if_none_match"] == true));
    standin.assert_no_violations().await.unwrap();
}

#[tokio::test]
async fn comments_are_listed_page_by_page() {
    let (standin, gh) = standin().await;
    let token = gh.installation_token(&standin).await;
    for n in 0..5 {
        standin.comment_as("acme", "web", 4, "writer", &format!("comment {n}")).await.unwrap();
    }
    let mut bodies = Vec::new();
    let mut next = Some(format!("{}/repos/acme/web/issues/4/comments?per_page=2", gh.base));
    while let Some(url) = next.take() {
        let page = gh.call(Method::GET, url.strip_prefix(&gh.base).unwrap(), Some(&token), None).await;
        bodies.extend(page.body.as_array().unwrap().iter().map(|c| c["body"].as_str().unwrap().to_owned()));
        next = header(&page, "link")
            .split(", ")
            .find(|l| l.ends_with("rel=\"next\""))
            .map(|l| l.trim_start_matches('<').split('>').next().unwrap().to_owned());
    }
    assert_eq!(bodies, (0..5).map(|n| format!("comment {n}")).collect::<Vec<_>>());
    standin.assert_no_violations().await.unwrap();
}

#[tokio::test]
async fn a_deployment_waits_for_the_commits_checks_unless_told_otherwise() {
    let (standin, gh) = standin().await;
    let token = gh.installation_token(&standin).await;
    standin.add_check_run("acme", "web", &sha('d'), "build", Some("failure")).await.unwrap();
    standin.add_status("acme", "web", &sha('d'), "ci/lint", "success").await.unwrap();
    // Without required_contexts GitHub verifies every context: 409.
    let refused = gh
        .call(
            Method::POST,
            "/repos/acme/web/deployments",
            Some(&token),
            Some(json!({"ref": sha('d'), "environment": "qa"})),
        )
        .await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(refused.body["message"].as_str().unwrap().starts_with("Conflict: Commit status checks failed"));
    let bypassed = gh
        .call(
            Method::POST,
            "/repos/acme/web/deployments",
            Some(&token),
            Some(json!({"ref": sha('d'), "environment": "qa", "required_contexts": []})),
        )
        .await;
    assert_eq!(bypassed.status, 201, "{}", bypassed.body);
    // The commit's checks as previewd reads them.
    let status =
        gh.call(Method::GET, &format!("/repos/acme/web/commits/{}/status", sha('d')), Some(&token), None).await;
    assert_eq!((status.body["state"].as_str(), status.body["total_count"].as_i64()), (Some("success"), Some(1)));
    let runs = gh
        .call(Method::GET, &format!("/repos/acme/web/commits/{}/check-runs?per_page=100", sha('d')), Some(&token), None)
        .await;
    assert_eq!(runs.body["check_runs"][0]["conclusion"], "failure");
    assert_eq!(runs.body["check_runs"][0]["app"]["slug"], "github-actions");
    // A ref that names no commit.
    let unknown = gh
        .call(
            Method::POST,
            "/repos/acme/web/deployments",
            Some(&token),
            Some(json!({"ref": "no-such-branch", "required_contexts": []})),
        )
        .await;
    assert_eq!(unknown.status, 422);
    standin.assert_no_violations().await.unwrap();
}

/// A webhook receiver on a loopback port answering `status`; it passes on each request's
/// header block and body.
async fn receiver(status: u16) -> (String, mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/github", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let n = socket.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                    let head = String::from_utf8_lossy(&buffer[..end]).to_string();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if buffer.len() >= end + 4 + length {
                        let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                        socket.write_all(reply.as_bytes()).await.unwrap();
                        tx.send((head, buffer[end + 4..end + 4 + length].to_vec())).unwrap();
                        return;
                    }
                }
            });
        }
    });
    (url, rx)
}

fn header_of(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
    })
}

#[tokio::test]
async fn deliveries_are_signed_like_githubs_and_listed_for_the_app() {
    let (standin, gh) = standin().await;
    let (url, mut received) = receiver(202).await;
    standin.configure(json!({"webhook_url": url, "webhook_secret": "s3cret"})).await.unwrap();
    let payload =
        json!({"action": "opened", "number": 1, "installation": {"id": INSTALLATION}, "repository": {"id": 1}});
    let delivered = standin.deliver("pull_request", &payload).await.unwrap();
    assert_eq!((delivered.status_code, delivered.status.as_str()), (202, "OK"));
    let (head, body) = received.recv().await.unwrap();
    assert_eq!(header_of(&head, "x-hub-signature-256").unwrap(), previewd_e2e::github::sign("s3cret", &body));
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), payload);
    assert_eq!(header_of(&head, "x-github-event").as_deref(), Some("pull_request"));
    assert_eq!(header_of(&head, "x-github-delivery").as_deref(), Some(delivered.guid.as_str()));
    assert_eq!(header_of(&head, "content-type").as_deref(), Some("application/json"));
    assert!(header_of(&head, "user-agent").unwrap().starts_with("GitHub-Hookshot/"));
    assert_eq!(header_of(&head, "x-github-hook-installation-target-type").as_deref(), Some("integration"));
    uuid::Uuid::parse_str(&delivered.guid).unwrap();

    // A receiver that fails, one that is not there: recorded like GitHub, the stand-in lives on.
    let (failing, _rx) = receiver(503).await;
    standin.configure(json!({"webhook_url": failing})).await.unwrap();
    let refused = standin.deliver("ping", &json!({"zen": "Design for failure."})).await.unwrap();
    assert_eq!((refused.status_code, refused.status.as_str()), (503, "Invalid HTTP Response: 503"));
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nobody = format!("http://{}/webhooks/github", closed.local_addr().unwrap());
    drop(closed);
    standin.configure(json!({"webhook_url": nobody})).await.unwrap();
    let lost = standin.deliver_for("pull_request", &payload, INSTALLATION).await.unwrap();
    assert_eq!((lost.status_code, lost.status.as_str()), (0, "failed to connect to host"));

    // The App lists them newest first, page by page with a cursor, like GitHub.
    let jwt = format!("Bearer {}", standin.app().await.unwrap().jwt(-30, 540).unwrap());
    let page = gh.call(Method::GET, "/app/hook/deliveries?per_page=2", Some(&jwt), None).await;
    let ids: Vec<i64> = page.body.as_array().unwrap().iter().map(|d| d["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [lost.id, refused.id]);
    assert_eq!(page.body[0]["installation_id"], INSTALLATION);
    assert_eq!(page.body[0]["status"], "failed to connect to host");
    let next = header(&page, "link").trim_start_matches('<').split('>').next().unwrap().to_owned();
    let rest = gh.call(Method::GET, next.strip_prefix(&gh.base).unwrap(), Some(&jwt), None).await;
    assert_eq!(rest.body[0]["id"].as_i64(), Some(delivered.id));
    assert_eq!(header(&rest, "link"), "");
    let one = gh.call(Method::GET, &format!("/app/hook/deliveries/{}", lost.id), Some(&jwt), None).await;
    assert_eq!(one.body["request"]["payload"], payload);

    // Redelivered when the App asks: a new delivery with the same guid.
    let (url, mut received) = receiver(200).await;
    standin.configure(json!({"webhook_url": url})).await.unwrap();
    let attempt = gh.call(Method::POST, &format!("/app/hook/deliveries/{}/attempts", lost.id), Some(&jwt), None).await;
    assert_eq!(attempt.status, 202);
    let (head, _) = tokio::time::timeout(Duration::from_secs(10), received.recv()).await.unwrap().unwrap();
    assert_eq!(header_of(&head, "x-github-delivery").as_deref(), Some(lost.guid.as_str()));
    let again = loop {
        let state = standin.state().await.unwrap();
        let found = state["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["guid"] == lost.guid.as_str() && d["redelivery"] == true)
            .cloned();
        if let Some(found) = found {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((again["status_code"].as_u64(), again["status"].as_str()), (Some(200), Some("OK")));
    assert!(again["id"].as_i64().unwrap() > lost.id);
    standin.assert_no_violations().await.unwrap();
}

#[tokio::test]
async fn every_operation_the_stand_in_implements_answers_in_githubs_shape() {
    let (standin, gh) = standin().await;
    let token = gh.installation_token(&standin).await;
    let t = Some(token.as_str());
    let jwt = format!("Bearer {}", standin.app().await.unwrap().jwt(-30, 540).unwrap());
    let j = Some(jwt.as_str());
    let pat = format!("token {PAT}");
    standin.put_file("acme", "web", &sha('e'), "deploy/values.yaml", Some("a: 1\n")).await.unwrap();
    standin.open_pull(json!({"owner": "acme", "repo": "web", "number": 9, "head_sha": sha('e'), "fork": true, "user": "stranger"})).await.unwrap();
    standin.add_status("acme", "web", &sha('e'), "ci/test", "pending").await.unwrap();
    let comment = standin.comment_as("acme", "web", 9, "stranger", "/preview").await.unwrap();
    let (url, _rx) = receiver(200).await;
    standin.configure(json!({"webhook_url": url})).await.unwrap();
    let delivery = standin.deliver("ping", &json!({"zen": "Practicality beats purity."})).await.unwrap();
    let run = gh
        .call(
            Method::POST,
            "/repos/acme/web/check-runs",
            t,
            Some(json!({"name": "p", "head_sha": sha('e'), "status": "queued"})),
        )
        .await;
    let run = run.body["id"].as_i64().unwrap();
    let deployment = gh
        .call(
            Method::POST,
            "/repos/acme/web/deployments",
            t,
            Some(json!({"ref": sha('e'), "environment": "pr-9", "required_contexts": []})),
        )
        .await;
    let deployment = deployment.body["id"].as_i64().unwrap();
    let status = gh
        .call(
            Method::POST,
            &format!("/repos/acme/web/deployments/{deployment}/statuses"),
            t,
            Some(json!({"state": "queued"})),
        )
        .await;
    let status = status.body["id"].as_i64().unwrap();
    // (method, path, authorization, body, expected status)
    type Call<'a> = (Method, String, Option<&'a str>, Option<Value>, u16);
    let calls: Vec<Call> = vec![
        (Method::GET, "/app".into(), j, None, 200),
        (Method::GET, "/user".into(), Some(pat.as_str()), None, 200),
        (Method::GET, "/app/installations".into(), j, None, 200),
        (Method::GET, format!("/app/installations/{INSTALLATION}"), j, None, 200),
        (Method::GET, "/app/hook/deliveries".into(), j, None, 200),
        (Method::GET, format!("/app/hook/deliveries/{}", delivery.id), j, None, 200),
        (Method::GET, "/repos/acme/web/contents/deploy?ref=".to_owned() + &sha('e'), t, None, 200),
        (Method::GET, "/repos/acme/web/pulls/9".into(), t, None, 200),
        (Method::GET, "/repos/acme/web/pulls?state=all".into(), t, None, 200),
        (Method::GET, format!("/repos/acme/web/issues/comments/{comment}"), t, None, 200),
        (
            Method::POST,
            format!("/repos/acme/web/issues/comments/{comment}/reactions"),
            t,
            Some(json!({"content": "+1"})),
            201,
        ),
        (Method::GET, format!("/repos/acme/web/issues/comments/{comment}/reactions"), t, None, 200),
        (Method::GET, format!("/repos/acme/web/check-runs/{run}"), t, None, 200),
        (Method::GET, format!("/repos/acme/web/commits/{}/check-runs", sha('e')), t, None, 200),
        (Method::GET, format!("/repos/acme/web/commits/{}/status", sha('e')), t, None, 200),
        (Method::GET, format!("/repos/acme/web/commits/{}/statuses", sha('e')), t, None, 200),
        (
            Method::POST,
            format!("/repos/acme/web/statuses/{}", sha('e')),
            t,
            Some(json!({"state": "success", "context": "previewd"})),
            201,
        ),
        (Method::GET, format!("/repos/acme/web/deployments/{deployment}"), t, None, 200),
        (Method::GET, format!("/repos/acme/web/deployments/{deployment}/statuses/{status}"), t, None, 200),
        (
            Method::POST,
            format!("/repos/acme/web/deployments/{deployment}/statuses"),
            t,
            Some(json!({"state": "inactive"})),
            201,
        ),
        (Method::DELETE, format!("/repos/acme/web/deployments/{deployment}"), t, None, 204),
        (Method::DELETE, format!("/repos/acme/web/issues/comments/{comment}"), t, None, 204),
    ];
    for (method, path, auth, body, status) in calls {
        let answer = gh.call(method.clone(), &path, auth, body).await;
        assert_eq!(answer.status.as_u16(), status, "{method} {path}: {}", answer.body);
    }
    // check_responses is on: every answer above was checked against its response schema.
    standin.assert_no_violations().await.unwrap();
}

/// How previewd knows its own comments: an App's are by `<slug>[bot]` (the slug from `GET /app`),
/// a token's by its user (`GET /user`), which an App's credentials are not.
#[tokio::test]
async fn the_app_s_slug_and_a_token_s_user_name_who_writes() {
    let (standin, gh) = standin().await;
    let app = standin.app().await.unwrap();
    let jwt = format!("Bearer {}", app.jwt(-30, 540).unwrap());
    let answer = gh.call(Method::GET, "/app", Some(&jwt), None).await;
    assert_eq!(answer.body["slug"], app.slug.as_str());
    assert_eq!(app.bot_login, format!("{}[bot]", app.slug));
    let answer = gh.call(Method::GET, "/user", Some(&format!("token {PAT}")), None).await;
    assert_eq!((answer.status.as_u16(), answer.body["login"].as_str()), (200, Some("preview-bot")), "{}", answer.body);
    assert_eq!(answer.body["type"], "User");
    let token = gh.installation_token(&standin).await;
    let answer = gh.call(Method::GET, "/user", Some(&token), None).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(answer.body["message"], "Resource not accessible by integration");
    assert_eq!(gh.call(Method::GET, "/user", None, None).await.status, 401);
    // What each writes shows as that login.
    standin.open_pull(json!({"owner": "acme", "repo": "web", "number": 3, "head_sha": sha('3')})).await.unwrap();
    for (auth, login) in [(token.clone(), app.bot_login.clone()), (format!("token {PAT}"), "preview-bot".to_owned())] {
        let body = json!({"body": "hello"});
        let answer = gh.call(Method::POST, "/repos/acme/web/issues/3/comments", Some(&auth), Some(body)).await;
        assert_eq!(answer.body["user"]["login"], login.as_str(), "{}", answer.body);
    }
    standin.assert_no_violations().await.unwrap();
}

#[tokio::test]
async fn a_documented_operation_the_stand_in_lacks_is_recorded_too() {
    let (standin, gh) = standin().await;
    let answer = gh.call(Method::GET, "/repos/acme/web/branches", Some(&format!("token {PAT}")), None).await;
    assert_eq!(answer.status, 501);
    let violations = standin.violations().await.unwrap();
    assert_eq!(violations[0]["kind"], "unimplemented", "{violations:#?}");
    assert_eq!(violations[0]["operation"], "repos/list-branches");
}

/// The web flow of the App's user authorization (outside the REST API: checked against GitHub's
/// documentation of it), then what the user's token sees, each answer in GitHub's shape.
#[tokio::test]
async fn the_oauth_web_flow_gives_a_user_token_that_sees_its_installations_and_memberships() {
    let (standin, gh) = standin().await;
    standin.set_permission("acme", "web", "dev", "write").await.unwrap();
    standin.set_permission("acme", "other", "dev", "read").await.unwrap();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let authorize = |state: &str| {
        format!(
            "{}/login/oauth/authorize?client_id={}&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&state={state}",
            standin.url(),
            previewd_e2e::standin::CLIENT_ID
        )
    };
    // Nobody signed in to GitHub: sent back with access_denied.
    let denied = http.get(authorize("s1")).send().await.unwrap();
    assert_eq!(denied.status(), 302);
    let location = denied.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with("http://127.0.0.1:9/cb?")
            && location.contains("error=access_denied")
            && location.contains("state=s1"),
        "{location}"
    );

    standin.configure(json!({"oauth_user": "dev"})).await.unwrap();
    let back = http.get(authorize("s2")).send().await.unwrap();
    let location = reqwest::Url::parse(back.headers()["location"].to_str().unwrap()).unwrap();
    let query: std::collections::HashMap<String, String> = location.query_pairs().into_owned().collect();
    assert_eq!(query["state"], "s2");
    let exchange = |code: String, secret: &'static str| {
        let http = http.clone();
        let url = format!("{}/login/oauth/access_token", standin.url());
        async move {
            let form = [
                ("client_id", previewd_e2e::standin::CLIENT_ID),
                ("client_secret", secret),
                ("code", &code),
                ("redirect_uri", "http://127.0.0.1:9/cb"),
                ("grant_type", "authorization_code"),
            ];
            // Form-encoded as a browser would (the URL crate's encoder, reqwest's own).
            let mut encoder = reqwest::Url::parse("http://form.invalid/").unwrap();
            encoder.query_pairs_mut().extend_pairs(form);
            let body = encoder.query().unwrap().to_owned();
            let answer = http
                .post(url)
                .header("accept", "application/json")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200, "GitHub answers the exchange 200, errors included");
            answer.json::<Value>().await.unwrap()
        }
    };
    let wrong = exchange(query["code"].clone(), "not-the-secret").await;
    assert_eq!(wrong["error"], "incorrect_client_credentials");
    // Wrong client credentials are refused before the code is looked at: it still works.
    let token = exchange(query["code"].clone(), previewd_e2e::standin::CLIENT_SECRET).await;
    assert_eq!(token["token_type"], "bearer", "{token}");
    let used = exchange(query["code"].clone(), previewd_e2e::standin::CLIENT_SECRET).await;
    assert_eq!(used["error"], "bad_verification_code", "a code is used once");
    let user = format!("Bearer {}", token["access_token"].as_str().unwrap());
    let u = Some(user.as_str());

    standin.put_control("org_members", json!({"org": "acme", "logins": ["dev"]})).await.unwrap();
    standin.put_control("team_members", json!({"org": "acme", "team": "platform", "logins": ["dev"]})).await.unwrap();
    let me = gh.call(Method::GET, "/user", u, None).await;
    assert_eq!((me.status.as_u16(), me.body["login"].as_str()), (200, Some("dev")), "{}", me.body);
    let installations = gh.call(Method::GET, "/user/installations", u, None).await;
    assert_eq!(installations.status, 200, "{}", installations.body);
    let ids: Vec<i64> =
        installations.body["installations"].as_array().unwrap().iter().map(|i| i["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [INSTALLATION, 6], "both installations hold a repository dev may read, by id");
    let repos = gh.call(Method::GET, &format!("/user/installations/{INSTALLATION}/repositories"), u, None).await;
    assert_eq!(repos.status, 200, "{}", repos.body);
    assert_eq!(repos.body["repositories"][0]["full_name"], "acme/web");
    assert_eq!(repos.body["repositories"][0]["permissions"]["push"], true);
    let read_only = gh.call(Method::GET, "/user/installations/6/repositories", u, None).await;
    assert_eq!(read_only.body["repositories"][0]["permissions"]["push"], false);
    let member = gh.call(Method::GET, "/user/memberships/orgs/acme", u, None).await;
    assert_eq!((member.status.as_u16(), member.body["state"].as_str()), (200, Some("active")), "{}", member.body);
    assert_eq!(gh.call(Method::GET, "/user/memberships/orgs/elsewhere", u, None).await.status, 404);
    let team = gh.call(Method::GET, "/orgs/acme/teams/platform/memberships/dev", u, None).await;
    assert_eq!((team.status.as_u16(), team.body["state"].as_str()), (200, Some("active")), "{}", team.body);
    assert_eq!(gh.call(Method::GET, "/orgs/acme/teams/platform/memberships/other", u, None).await.status, 404);
    // An installation token is no user.
    let installation = gh.installation_token(&standin).await;
    assert_eq!(gh.call(Method::GET, "/user/installations", Some(&installation), None).await.status, 403);
    // check_responses is on: every answer above was checked against its response schema.
    standin.assert_no_violations().await.unwrap();
}
