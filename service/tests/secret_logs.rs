//! No secret previewd holds reaches its log, at trace level (so every dependency's logging is
//! on too: hyper, rustls, sqlx, kube, hickory, octocrab), in both formats, through the success
//! path and the error paths: the `previewd` binary with GitHub (the stand-in, as an App and with
//! a token), DNS (the test BIND, `rfc2136` with TSIG), Postgres (a role with a password) and the
//! control plane, as a user runs it.
//!
//! Secrets searched for: the webhook secret and every signature sent, a bearer header of a
//! refused request, the App's private key and any JWT, installation tokens and the personal
//! access token, the Kubernetes token, the TSIG secret (the right one and a wrong one), the
//! database password (as typed and as encoded in the URL), the platform secret's value and the
//! value previewd generated, each also base64-encoded as Kubernetes carries them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use common::story::*;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use previewd_e2e::cluster::{SOURCE_NAMESPACE, admin_client, kubeconfig_paths};
use previewd_e2e::github::sign;
use previewd_e2e::previewd::Previewd;
use previewd_environments::yaml::{self, Origin};
use serde_json::json;
use std::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_previewd");

fn random(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// How previewd authenticates to GitHub in a run.
#[derive(Debug, Clone, Copy, PartialEq)]
enum GitHubAuth {
    App,
    Token,
}

/// One run of the binary with everything configured, in `format`; returns its whole log and
/// the secrets it held.
async fn run(format: &str, auth: GitHubAuth) -> (String, Vec<(String, String)>) {
    let mut secrets: Vec<(String, String)> = Vec::new();
    let mut hold = |what: &str, value: &str| secrets.push((what.to_owned(), value.to_owned()));

    // Postgres with a password that has every character a URL gives a meaning to.
    let password = format!("pw/{}@:?#%&=+ {}", random(""), random(""));
    let (db, url) = previewd_e2e::database::with_password(&password).await.unwrap();
    hold("the database password", &password);
    hold("the database password, encoded", url.split(':').nth(2).unwrap().split('@').next().unwrap());

    // A platform secret of this run only, which the policy allows and the repository asks for.
    let platform = random("platform-");
    let platform_value = random("platform-value-");
    let admin = admin_client().await.unwrap();
    let source: Api<Secret> = Api::namespaced(admin.clone(), SOURCE_NAMESPACE);
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some(platform.clone()), ..Default::default() },
        string_data: Some([("API_TOKEN".to_owned(), platform_value.clone())].into()),
        ..Default::default()
    };
    source.create(&PostParams::default(), &secret).await.unwrap();
    hold("the platform secret's value", &platform_value);
    hold("the platform secret's value, base64", &b64(&platform_value));

    let allowed = platform.clone();
    let mut s = story_with(
        &db,
        move |p| p.replace("allowed: [db-readonly]", &format!("allowed: [db-readonly, {allowed}]")),
        &[
            ("PREVIEWD_DATABASE_URL", url.clone()),
            ("PREVIEWD_LOG_FILTER", "trace".to_owned()),
            ("PREVIEWD_LOG_FORMAT", format.to_owned()),
        ],
    )
    .await;
    s.preview = preview_yaml().replace("secrets: []", &format!("secrets: [{platform}]"));
    hold("the webhook secret", SECRET);
    hold("the TSIG secret", &s.dns.tsig_secret);
    let app = s.github.app().await.unwrap();
    for line in app.private_key_pem.lines().filter(|l| l.len() >= 32 && !l.starts_with("-----")) {
        hold("a line of the App's private key", line);
    }
    let (_, kubeconfig) = kubeconfig_paths().await.unwrap();
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let kubeconfig: serde_json::Value = yaml::parse(&text, Origin::Platform).unwrap().unwrap();
    let kube_token = kubeconfig["users"][0]["user"]["token"].as_str().unwrap().to_owned();
    hold("the Kubernetes token", &kube_token);
    if auth == GitHubAuth::Token {
        let pat = random("ghp_logtest");
        hold("the personal access token", &pat);
        s.github.configure(json!({"pats": [{"token": pat, "login": "preview-bot"}]})).await.unwrap();
        restart_with(&mut s, |env| {
            // Without an App there is no dashboard sign-in (it is the App's user authorization).
            env.retain(|(k, _)| {
                !k.starts_with("PREVIEWD_GITHUB__APP_ID")
                    && !k.starts_with("PREVIEWD_GITHUB__PRIVATE_KEY")
                    && !k.starts_with("PREVIEWD_GITHUB__CLIENT_")
                    && !k.starts_with("PREVIEWD_DASHBOARD__")
            });
            env.push(("PREVIEWD_GITHUB__TOKEN".to_owned(), pat.clone()));
        })
        .await;
    }

    // Success: a preview, its record published with TSIG, the pull request told.
    s.open(1, &sha('a')).await;
    let ready = s.wait_state(1, "Ready").await;
    s.comment_says(1, &[ready.url.as_deref().unwrap()]).await;
    let name = ready.name.clone().unwrap();
    let secrets_api: Api<Secret> = Api::namespaced(admin.clone(), &name);
    let generated = secrets_api.get("generated-session-key").await.unwrap();
    let generated = String::from_utf8(generated.data.unwrap()["value"].0.clone()).unwrap();
    hold("the generated secret's value", &generated);
    hold("the generated secret's value, base64", &b64(&generated));
    assert!(secrets_api.get_opt(&platform).await.unwrap().is_some(), "the platform secret was copied");

    // A bad signature, and a request carrying a bearer token: refused.
    let body = serde_json::to_vec(&s.pull_request("opened", 9, &sha('9'))).unwrap();
    let http = reqwest::Client::new();
    let good = sign(SECRET, &body);
    let bad = sign("not-the-webhook-secret", &body);
    let bearer = random("header-token-");
    for signature in [&bad, &good] {
        let answer = http
            .post(format!("{}/webhooks/github", s.previewd.base))
            .header("X-GitHub-Event", "pull_request")
            .header("X-GitHub-Delivery", uuid::Uuid::new_v4().to_string())
            .header("X-GitHub-Hook-ID", "4242")
            .header("X-Hub-Signature-256", signature.as_str())
            .header("Authorization", format!("Bearer {bearer}"))
            .header("Content-Type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert!(answer.status() == 401 || answer.status() == 202, "{}", answer.status());
    }
    for (what, value) in [("a signature", &good), ("a wrong signature", &bad)] {
        hold(what, value);
        hold(what, &value["sha256=".len()..]);
    }
    hold("a bearer token sent to previewd", &bearer);

    // The dashboard's sign-in: the App's client secret, the code exchanged for the person's
    // token, and the session cookie.
    if auth == GitHubAuth::App {
        hold("the App's client secret", STANDIN_CLIENT_SECRET);
        s.github.configure(json!({"oauth_user": "writer"})).await.unwrap();
        let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let cookie_of = |r: &reqwest::Response, name: &str| {
            r.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
                v.split(';').next().filter(|pair| pair.starts_with(&format!("{name}="))).map(str::to_owned)
            })
        };
        let login = browser.get(format!("{}/auth/login", s.previewd.base)).send().await.unwrap();
        let state = cookie_of(&login, "previewd_oauth").expect("the sign-in's state cookie");
        let authorize = login.headers()["location"].to_str().unwrap().to_owned();
        let back = browser.get(authorize).send().await.unwrap();
        let callback = back.headers()["location"].to_str().unwrap().to_owned();
        let code = callback.split("code=").nth(1).unwrap().split('&').next().unwrap().to_owned();
        hold("the sign-in's code", &code);
        let signed_in = browser.get(callback).header("cookie", state).send().await.unwrap();
        assert_eq!(signed_in.status(), 303, "signed in");
        let session = cookie_of(&signed_in, "previewd_session").expect("the session cookie");
        hold("the dashboard session's cookie", &session["previewd_session=".len()..]);
    }

    // GitHub answering errors: a push whose reports meet 500s and a 403 rate limit first.
    s.github
        .fault(json!({"path_regex": "^/repos/.*/(comments|deployments|check-runs)", "status": 500, "count": 3}))
        .await
        .unwrap();
    s.github
        .fault(json!({"path_regex": "^/repos/.*/contents/", "status": 403, "count": 1, "retry_after_seconds": 1}))
        .await
        .unwrap();
    s.push(1, &sha('b')).await;
    s.wait(1, "b deployed", |e| e.state == "Ready" && e.deployed_sha.as_deref() == Some(sha('b').as_str())).await;
    s.comment_says(1, &["bbbbbbb"]).await;

    // A failed reconcile: a `.preview.yaml` previewd refuses.
    s.preview = "image: registry.preview.test/acme/app:{sha}\nport: 99999\n".to_owned();
    s.open(2, &sha('c')).await;
    s.wait_state(2, "Failed").await;

    // DNS refusing: previewd restarted with a wrong TSIG secret; the update is refused (BADSIG).
    let wrong_tsig = b64(&random("wrong-tsig-"));
    hold("a wrong TSIG secret", &wrong_tsig);
    restart_with(&mut s, |env| {
        env.retain(|(k, _)| k != "STORY_TSIG_SECRET");
        env.push(("STORY_TSIG_SECRET".to_owned(), wrong_tsig.clone()));
    })
    .await;
    s.preview = preview_yaml();
    s.open(3, &sha('d')).await;
    let refused = s.wait_state(3, "Failed").await;
    assert!(refused.reason.as_deref().is_some_and(|r| r.contains("DnsUpdateRefused")), "{:?}", refused.reason);

    if let Err(error) = s.github.assert_no_violations().await {
        panic!("{error}");
    }
    s.previewd.stop().await.unwrap();
    let log = s.previewd.log();
    source.delete(&platform, &DeleteParams::default()).await.unwrap();
    drop(s);
    (log, secrets)
}

/// Stops previewd, changes its variables, starts it again (on a new port, so the stand-in is
/// told where deliveries go now).
async fn restart_with(s: &mut Story, change: impl FnOnce(&mut Vec<(String, String)>)) {
    s.previewd.stop().await.unwrap();
    change(&mut s.env);
    s.previewd = Previewd::start(Path::new(BIN), &s.env, &s.dir.path().join("previewd.log")).await.unwrap();
    s.github
        .configure(json!({"webhook_url": format!("{}/webhooks/github", s.previewd.base), "webhook_secret": SECRET}))
        .await
        .unwrap();
}

fn check(format: &str, auth: GitHubAuth, log: &str, secrets: &[(String, String)]) {
    let level = if format == "json" { "\"level\":\"TRACE\"" } else { "TRACE" };
    assert!(log.contains(level), "{format}: trace logging is on");
    // The dependencies that see secrets (HTTP clients and server, TLS, the database driver,
    // the Kubernetes and GitHub clients, the DNS client) were logging too. The webhook server is
    // hyper's connection (service/src/http/serve.rs), and hyper 1 logs nothing without the
    // unstable `hyper_unstable_tracing` cfg: the server's lines are previewd's own.
    for target in ["hyper_util::", "rustls::", "sqlx::", "kube_client::", "octocrab", "hickory_"] {
        assert!(log.contains(target), "{format}/{auth:?}: the log has {target} lines");
    }
    for expected in
        ["delivery stored", "webhook refused: signature", "hostname resolves", "DNS update refused", "previewd stopped"]
    {
        assert!(log.contains(expected), "{format}/{auth:?}: the log shows `{expected}`");
    }
    for (what, value) in secrets {
        assert!(!value.is_empty());
        if let Some(at) = log.find(value.as_str()) {
            let line_start = log[..at].rfind('\n').map_or(0, |i| i + 1);
            let line_end = log[at..].find('\n').map_or(log.len(), |i| at + i);
            panic!("{format}/{auth:?}: {what} appears in previewd's log:\n{}", &log[line_start..line_end]);
        }
    }
    // Whatever was not named above: no signature header value, JWT or installation token.
    for pattern in ["sha256=", "eyJhbGciOi", "eyJ0eXAiOi", "ghs_"] {
        if let Some(at) = log.find(pattern) {
            let line_start = log[..at].rfind('\n').map_or(0, |i| i + 1);
            let line_end = log[at..].find('\n').map_or(log.len(), |i| at + i);
            panic!("{format}/{auth:?}: `{pattern}` appears in previewd's log:\n{}", &log[line_start..line_end]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log_at_trace_level_in_either_format() {
    for (format, auth) in
        [("text", GitHubAuth::App), ("json", GitHubAuth::App), ("json", GitHubAuth::Token), ("text", GitHubAuth::Token)]
    {
        let (log, secrets) = run(format, auth).await;
        check(format, auth, &log, &secrets);
    }
}

/// Connecting to the database fails: a wrong password, a server that is not there, a URL that
/// cannot be parsed. The error previewd prints names the problem and never the password.
#[tokio::test]
async fn database_errors_never_show_the_password() {
    let password = format!("right/{}@:?#%", random(""));
    let (_db, url) = previewd_e2e::database::with_password(&password).await.unwrap();
    let encoded = url.split(':').nth(2).unwrap().split('@').next().unwrap().to_owned();
    let wrong = "wr0ng-pa55word-%2F-%40";
    let cases = [
        ("a wrong password", url.replacen(&encoded, wrong, 1), "password authentication failed"),
        ("no server", with_port(&url, previewd_e2e::dns::closed_port().unwrap().port()), "cannot open database"),
        ("an unparseable URL (the password not encoded)", url.replacen(&encoded, &password, 1), "cannot open database"),
        ("a password parameter sqlx does not know", format!("{url}?sslpassword={password}"), "sslpassword"),
    ];
    for (what, url, expected) in cases {
        let out = std::process::Command::new(BIN)
            .arg("migrate")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PREVIEWD_DATABASE_URL", &url)
            .env("PREVIEWD_WEBHOOK_SECRETS", "s")
            .env("PREVIEWD_LOG_FILTER", "trace")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{what}: refused");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(text.contains(expected), "{what}: the error says why:\n{text}");
        for secret in [password.as_str(), encoded.as_str(), wrong, "wr0ng-pa55word"] {
            assert!(!text.contains(secret), "{what}: `{secret}` appears in:\n{text}");
        }
    }
    // The right password, encoded, works: the URL is parsed as the driver parses it.
    let out = std::process::Command::new(BIN)
        .arg("migrate")
        .env_clear()
        .env("PREVIEWD_DATABASE_URL", &url)
        .env("PREVIEWD_WEBHOOK_SECRETS", "s")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `url` with its port replaced.
fn with_port(url: &str, port: u16) -> String {
    let host_end = url.rfind("127.0.0.1:").unwrap() + "127.0.0.1:".len();
    let port_end = host_end + url[host_end..].find('/').unwrap();
    format!("{}{port}{}", &url[..host_end], &url[port_end..])
}
