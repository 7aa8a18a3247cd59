//! The GitHub stand-in itself: requests that fit GitHub's OpenAPI description are served and
//! change its state; requests that do not are refused and recorded, so tests of previewd can
//! fail on them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use previewd_e2e::standin::GitHubStandIn;
use serde_json::json;

async fn standin_with_repo() -> (GitHubStandIn, reqwest::Client) {
    let standin = GitHubStandIn::start().await.unwrap();
    standin.add_repo(1, "acme", "web", Some(5)).await.unwrap();
    standin.configure(json!({"pats": [{"token": "pat", "login": "bot"}]})).await.unwrap();
    (standin, reqwest::Client::new())
}

#[tokio::test]
async fn requests_that_fit_the_description_are_served() {
    let (standin, http) = standin_with_repo().await;
    let base = standin.url().to_owned();
    let deployment = http
        .post(format!("{base}/repos/acme/web/deployments"))
        .header("Authorization", "token pat")
        .json(&json!({"ref": "a".repeat(40), "environment": "preview/pr-1", "required_contexts": [], "auto_merge": false, "transient_environment": true, "production_environment": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(deployment.status(), 201);
    assert!(deployment.headers().contains_key("x-ratelimit-remaining"));
    let body: serde_json::Value = deployment.json().await.unwrap();
    // Shaped like GitHub's own example answer, with the stand-in's values.
    assert_eq!(body["environment"], "preview/pr-1");
    assert!(body.get("creator").is_some() && body.get("statuses_url").is_some(), "{body}");
    let comment = http
        .post(format!("{base}/repos/acme/web/issues/1/comments"))
        .header("Authorization", "token pat")
        .json(&json!({"body": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(comment.status(), 201);
    let id = comment.json::<serde_json::Value>().await.unwrap()["id"].as_i64().unwrap();
    let edited = http
        .patch(format!("{base}/repos/acme/web/issues/comments/{id}"))
        .header("Authorization", "token pat")
        .json(&json!({"body": "hello again"}))
        .send()
        .await
        .unwrap();
    assert_eq!(edited.status(), 200);
    let comments = standin.comments(1).await.unwrap();
    assert_eq!((comments[0]["body"].as_str(), comments[0]["edits"].as_i64()), (Some("hello again"), Some(1)));
    standin.assert_no_violations().await.unwrap();
}

#[tokio::test]
async fn requests_that_do_not_fit_are_refused_and_recorded() {
    let (standin, http) = standin_with_repo().await;
    let base = standin.url().to_owned();
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{base}{path}")).header("Authorization", "token pat").json(&body).send()
    };
    // A required field missing, a value outside its enum, a body where none is defined.
    assert_eq!(post("/repos/acme/web/deployments", json!({"environment": "x"})).await.unwrap().status(), 422);
    assert_eq!(post("/repos/acme/web/deployments/1/statuses", json!({"state": "bogus"})).await.unwrap().status(), 422);
    assert_eq!(post("/app/hook/deliveries/1/attempts", json!({})).await.unwrap().status(), 422);
    // An undocumented query parameter, and a path GitHub does not have.
    let listed = http
        .get(format!("{base}/repos/acme/web/deployments?check_name=x"))
        .header("Authorization", "token pat")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 422);
    let unknown = http.get(format!("{base}/repos/acme/web/previews")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    let violations = standin.violations().await.unwrap();
    assert_eq!(violations.len(), 5, "{violations:#?}");
    assert!(violations[0]["reason"].as_str().unwrap().contains("ref"));
    assert!(standin.assert_no_violations().await.is_err());
}

#[tokio::test]
async fn app_tokens_are_checked_and_counted() {
    let (standin, http) = standin_with_repo().await;
    let base = standin.url().to_owned();
    // No or a wrong token: 401.
    let anonymous = http.get(format!("{base}/repos/acme/web/pulls")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let forged = http
        .post(format!("{base}/app/installations/5/access_tokens"))
        .header("Authorization", "Bearer aaa.bbb.ccc")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    // A fault answers exactly `count` times.
    standin.fault(json!({"method": "GET", "path_regex": "/pulls$", "status": 500, "count": 2})).await.unwrap();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let answer =
            http.get(format!("{base}/repos/acme/web/pulls")).header("Authorization", "token pat").send().await.unwrap();
        statuses.push(answer.status().as_u16());
    }
    assert_eq!(statuses, [500, 500, 200]);
    // An unchanged listing is answered 304 to its ETag.
    let first =
        http.get(format!("{base}/repos/acme/web/pulls")).header("Authorization", "token pat").send().await.unwrap();
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let again = http
        .get(format!("{base}/repos/acme/web/pulls"))
        .header("Authorization", "token pat")
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    standin.open_pull(json!({"owner": "acme", "repo": "web", "number": 3, "head_sha": "b".repeat(40)})).await.unwrap();
    let changed = http
        .get(format!("{base}/repos/acme/web/pulls"))
        .header("Authorization", "token pat")
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    standin.assert_no_violations().await.unwrap();
}

#[tokio::test]
async fn deliveries_are_signed_like_githubs() {
    let standin = GitHubStandIn::start().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    standin
        .configure(json!({"webhook_url": format!("http://{address}/hook"), "webhook_secret": "s3cret"}))
        .await
        .unwrap();
    let received = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = socket.read(&mut chunk).await.unwrap();
            buffer.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buffer).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    socket.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n").await.unwrap();
                    return (head.to_owned(), body.to_owned());
                }
            }
        }
    });
    let delivered = standin.deliver("ping", &json!({"zen": "Keep it logically awesome."})).await.unwrap();
    assert_eq!(delivered.status_code, 202);
    let (head, body) = received.await.unwrap();
    let signature = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("x-hub-signature-256:").map(|v| v.trim().to_owned()))
        .unwrap();
    assert_eq!(signature, previewd_e2e::github::sign("s3cret", body.as_bytes()));
    assert!(head.to_ascii_lowercase().contains(&format!("x-github-delivery: {}", delivered.guid)));
}
