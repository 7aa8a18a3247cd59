//! Protected previews and sleep, through a real reverse proxy: Debian's nginx (its
//! `auth_request`, what ingress-nginx is built on) in front of previewd's forward-authentication
//! endpoints and of a small HTTP server standing in for the application (kwok's pods serve no
//! traffic), wired as the README tells platform teams to. The `previewd` binary runs against the
//! real control plane, the local BIND server and the GitHub stand-in, whose OAuth web flow signs
//! people in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::HeaderMap;
use common::story::*;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use previewd_e2e::database::{Backend, fresh};
use previewd_e2e::proxy::{Nginx, ProxyConfig};
use previewd_environments::store::TokenScope;
use reqwest::header::{COOKIE, HOST, LOCATION, SET_COOKIE, USER_AGENT};
use secrecy::ExposeSecret;
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;

const BROWSER: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36";

/// The application: says which host and path it was asked for, and who previewd said the
/// visitor is.
async fn application() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|headers: HeaderMap, uri: axum::http::Uri| async move {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let cookie = text("cookie");
        assert!(!cookie.contains("previewd_preview"), "the application was sent the preview cookie: {cookie}");
        format!("app {}{} user={}", text("host"), uri, text("x-previewd-user"))
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

/// An answer through the proxy.
struct Seen {
    status: u16,
    location: Option<String>,
    retry_after: Option<String>,
    set_cookie: Vec<String>,
    body: String,
}

struct Visitor {
    http: reqwest::Client,
    proxy: String,
    host: String,
}

impl Visitor {
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Seen {
        let mut request = self.http.get(format!("{}{path}", self.proxy)).header(HOST, &self.host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let header =
            |name| response.headers().get(name).map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_owned());
        let (location, retry_after) = (header(LOCATION), header(reqwest::header::RETRY_AFTER));
        let set_cookie =
            response.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        Seen {
            status: response.status().as_u16(),
            location,
            retry_after,
            set_cookie,
            body: response.text().await.unwrap(),
        }
    }
}

/// The value of cookie `name` among `Set-Cookie` headers, with the whole header.
fn cookie<'a>(set: &'a [String], name: &str) -> Option<(String, &'a str)> {
    set.iter().find_map(|c| {
        let value = c.strip_prefix(&format!("{name}="))?.split(';').next()?;
        Some((value.to_owned(), c.as_str()))
    })
}

/// Signs `login` in to previews the way a browser does from the sign-in redirect at
/// `sign_in`: previewd's `/auth/preview`, its sign-in, the stand-in's OAuth page, the callback,
/// `/auth/preview` again. Returns the preview cookie and its `Set-Cookie` header.
async fn sign_in(s: &Story, browser: &reqwest::Client, login: &str, sign_in: &str) -> (String, String) {
    s.github.configure(json!({"oauth_user": login})).await.unwrap();
    let mut cookies: Vec<(String, String)> = Vec::new();
    let mut url = sign_in.to_owned();
    for _ in 0..8 {
        let header: String = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let response = browser.get(&url).header(COOKIE, header).send().await.unwrap();
        let set: Vec<String> =
            response.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        if let Some((value, whole)) = cookie(&set, "previewd_preview") {
            return (value, whole.to_owned());
        }
        for c in &set {
            let (pair, _) = c.split_once(';').unwrap_or((c, ""));
            let (name, value) = pair.split_once('=').unwrap();
            cookies.retain(|(k, _)| k != name);
            cookies.push((name.to_owned(), value.to_owned()));
        }
        let status = response.status();
        let location = response.headers().get(LOCATION).map(|l| l.to_str().unwrap().to_owned());
        let Some(location) = location.filter(|_| status.is_redirection()) else {
            panic!("signing in stopped at {url}: {status} {}", response.text().await.unwrap());
        };
        url = if location.starts_with("http") {
            location
        } else {
            let origin = url.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
            format!("{origin}{location}")
        };
    }
    panic!("signing in took more than 8 redirects");
}

/// Pull request 1's environment once Ready, and a browser that finds the dashboard (served
/// under the base domain) at the loopback, as DNS would send it there.
struct Opened {
    ready: previewd_environments::store::ReconcileRecord,
    /// The preview's host.
    host: String,
    /// `previewd.<base domain>`.
    dashboard: String,
    /// previewd's address.
    previewd: SocketAddr,
    browser: reqwest::Client,
}

async fn open_first(s: &mut Story) -> Opened {
    let previewd: SocketAddr = s.previewd.base.trim_start_matches("http://").parse().unwrap();
    s.open(1, &sha('a')).await;
    let ready = s.wait_state(1, "Ready").await;
    let host = ready.url.clone().unwrap().trim_start_matches("https://").to_owned();
    let dashboard = format!("previewd.{}", host.split_once('.').unwrap().1);
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(&dashboard, previewd)
        .build()
        .unwrap();
    Opened { ready, host, dashboard, previewd, browser }
}

#[tokio::test]
async fn previews_open_to_readers_and_tokens_sleep_when_idle_and_wake_on_a_visit() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let policy = |p: String| format!("{p}\nprotection: github\nsleep: {{ after: 8s }}\n");
    let mut s = story_at(&db, policy, &[], true).await;
    let Opened { ready, host, dashboard, previewd, browser } = open_first(&mut s).await;
    let base_domain = host.split_once('.').unwrap().1.to_owned();
    let nginx = Nginx::start(&ProxyConfig { app: application().await, previewd }).unwrap();
    let visitor = Visitor { http: browser.clone(), proxy: nginx.url(), host: host.clone() };

    // Not signed in: off to sign in, and back here after.
    let first = visitor.get("/cart?item=7", &[(USER_AGENT.as_str(), BROWSER)]).await;
    assert_eq!(first.status, 302, "{}", first.body);
    let location = first.location.unwrap();
    let expected = format!("http://{dashboard}:{}/auth/preview?next=", previewd.port());
    assert!(location.starts_with(&expected), "{location}");
    let next: String = form_urlencoded::parse(location.split_once('?').unwrap().1.as_bytes())
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert_eq!(next, format!("http://{host}/cart?item=7"));

    // Someone who may read the repository: the application's answer, with their login.
    let (reader, whole) = sign_in(&s, &browser, "reader", &location).await;
    assert!(whole.contains(&format!("Domain={base_domain}")) && whole.contains("HttpOnly"), "{whole}");
    let preview_cookie = format!("previewd_preview={reader}");
    let both = format!("theme=dark; {preview_cookie}; lang=en");
    let seen = visitor.get("/cart?item=7", &[(COOKIE.as_str(), &both), (USER_AGENT.as_str(), BROWSER)]).await;
    assert_eq!((seen.status, seen.body.as_str()), (200, format!("app {host}/cart?item=7 user=reader").as_str()));
    // The dashboard's own session does not open previews.
    let session = s.store.create_session("reader", false, i64::MAX / 2, &[]).await.unwrap().1;
    let dashboard_cookie = format!("previewd_session={}", session.expose_secret());
    assert_eq!(visitor.get("/", &[(COOKIE.as_str(), &dashboard_cookie)]).await.status, 302);

    // Someone signed in who may not read it: refused, and told why.
    let (stranger, _) = sign_in(&s, &browser, "stranger", &location).await;
    let refused =
        visitor.get("/", &[(COOKIE.as_str(), &format!("previewd_preview={stranger}")), ("accept", "text/html")]).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("@stranger may not read") && refused.body.contains(&s.repo), "{}", refused.body);

    // A bypass token of the repository opens it for automation, until it is revoked.
    let admin = s.store.create_token("platform", TokenScope::Admin).await.unwrap().1;
    let api = format!("{}/api/v1/repositories/acme/{}/bypass-tokens", s.previewd.base, s.repo);
    let created: serde_json::Value = browser
        .post(&api)
        .bearer_auth(admin.expose_secret())
        .json(&json!({"name": "e2e"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = created["secret"].as_str().unwrap().to_owned();
    assert!(token.starts_with("pvb_"), "{created}");
    let seen = visitor.get("/", &[("x-previewd-bypass", &token)]).await;
    assert_eq!(
        (seen.status, seen.body.as_str()),
        (200, format!("app {host}/ user=bypass-token@acme/{}", s.repo).as_str())
    );
    let by_query = visitor.get(&format!("/?previewd_bypass={token}"), &[]).await;
    assert_eq!(by_query.status, 200, "{}", by_query.body);
    let revoked = browser.delete(format!("{api}/e2e")).bearer_auth(admin.expose_secret()).send().await.unwrap();
    assert_eq!(revoked.status(), 204);
    let seen = visitor.get("/", &[("x-previewd-bypass", &token)]).await;
    assert_eq!(seen.status, 403, "{}", seen.body);
    assert!(seen.body.contains("not one of"), "{}", seen.body);

    // Idle for `sleep.after`: asleep, its workloads at zero with their replicas kept.
    let asleep = s.wait(1, "asleep", |e| e.state == "Sleeping").await;
    assert!(asleep.reason.as_deref().unwrap().starts_with("asleep: no visit or push for 8s"), "{:?}", asleep.reason);
    let admin_client = previewd_e2e::cluster::admin_client().await.unwrap();
    let deployments = Api::<Deployment>::namespaced(admin_client, ready.name.as_deref().unwrap());
    let scaled = common::eventually_within(Duration::from_secs(30), "the Deployment is scaled to zero", || async {
        let d = deployments.get("app").await.ok()?;
        (d.spec.as_ref()?.replicas == Some(0)).then_some(d)
    })
    .await;
    let annotations = scaled.metadata.annotations.unwrap();
    assert_eq!(annotations.get("previewd.dev/awake-replicas").map(String::as_str), Some("1"));
    s.comment_says(1, &["asleep", &host]).await;

    // A probe, even signed in, and someone not signed in, wake nothing.
    let probe =
        visitor.get("/healthz", &[(COOKIE.as_str(), &preview_cookie), (USER_AGENT.as_str(), "kube-probe/1.34")]).await;
    assert_eq!((probe.status, probe.retry_after.as_deref()), (503, Some("5")), "{}", probe.body);
    assert_eq!(visitor.get("/", &[(USER_AGENT.as_str(), BROWSER)]).await.status, 302);
    assert_eq!(s.environment(1).await.unwrap().state, "Sleeping", "a probe or a stranger woke it");

    // A reader's visit: the waking page, the environment scaled back, then the application.
    let waking = visitor
        .get("/", &[(COOKIE.as_str(), &preview_cookie), (USER_AGENT.as_str(), BROWSER), ("accept", "text/html")])
        .await;
    assert_eq!(waking.status, 503);
    assert!(
        waking.body.contains("Waking this preview") && waking.body.contains("http-equiv=\"refresh\""),
        "{}",
        waking.body
    );
    assert_ne!(s.environment(1).await.unwrap().state, "Sleeping", "the visit woke it");
    let awake = s.wait_state(1, "Ready").await;
    assert!(!awake.asleep);
    let restored = deployments.get("app").await.unwrap();
    assert_eq!(restored.spec.unwrap().replicas, Some(1));
    let seen = visitor.get("/", &[(COOKIE.as_str(), &preview_cookie), (USER_AGENT.as_str(), BROWSER)]).await;
    assert_eq!((seen.status, seen.body.as_str()), (200, format!("app {host}/ user=reader").as_str()));
    assert!(seen.set_cookie.is_empty(), "{:?}", seen.set_cookie);
    s.finish().await;
}

#[tokio::test]
async fn a_share_link_opens_one_preview_for_someone_outside_github_until_it_expires_or_is_revoked() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let policy = |p: String| format!("{p}\nprotection: github\nshare_links: {{ max: 2h, default: 1h }}\n");
    let mut s = story_at(&db, policy, &[], true).await;
    let app = application().await;
    let previewd: SocketAddr = s.previewd.base.trim_start_matches("http://").parse().unwrap();
    let nginx = Nginx::start(&ProxyConfig { app, previewd }).unwrap();
    s.open(1, &sha('a')).await;
    s.open(2, &sha('b')).await;
    let ready = s.wait_state(1, "Ready").await;
    let other = s.wait_state(2, "Ready").await;
    let host = ready.url.clone().unwrap().trim_start_matches("https://").to_owned();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let visitor = Visitor { http: http.clone(), proxy: nginx.url(), host: host.clone() };
    let admin = s.store.create_token("platform", TokenScope::Admin).await.unwrap().1;
    let reader = s.store.create_token("grafana", TokenScope::Read).await.unwrap().1;
    let links = |id: i64| format!("{}/api/v1/environments/{id}/share-links", s.previewd.base);
    let share = |body: serde_json::Value, token: &str| {
        http.post(links(ready.id)).bearer_auth(token.to_owned()).json(&body).send()
    };

    // Only an admin token makes one, and not for longer than the policy allows.
    assert_eq!(share(json!({}), reader.expose_secret()).await.unwrap().status(), 403);
    let too_long = share(json!({"expires_in": "30d"}), admin.expose_secret()).await.unwrap();
    assert_eq!(too_long.status(), 422);
    let body: serde_json::Value = too_long.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("share_links.max (2h)"), "{body}");

    // Made with the policy's default: the preview's URL with the secret.
    let made = share(json!({}), admin.expose_secret()).await.unwrap();
    assert_eq!(made.status(), 201);
    let made: serde_json::Value = made.json().await.unwrap();
    let url = made["url"].as_str().unwrap().to_owned();
    let prefix = format!("https://{host}/?previewd_share=pvs_");
    assert!(url.starts_with(&prefix), "{made}");
    let secret = url.split_once("previewd_share=").unwrap().1.to_owned();
    let at = |field: &str| humantime::parse_rfc3339(made[field].as_str().unwrap()).unwrap();
    let lasts = at("expires_at").duration_since(at("created_at")).unwrap();
    // Both to the second: a few seconds either way of an hour.
    assert!((3590..=3600).contains(&lasts.as_secs()), "{made}");
    assert_eq!((made["created_by"].as_str(), made["live"].as_bool()), (Some("token:platform"), Some(true)));

    // Someone with the link and nothing else: the application's answer, and a cookie of this
    // preview's host alone that opens its other pages.
    let first = visitor.get(&format!("/?previewd_share={secret}"), &[(USER_AGENT.as_str(), BROWSER)]).await;
    let user = format!("user=share-link@acme/{}", s.repo);
    assert_eq!(
        (first.status, first.body.as_str()),
        (200, format!("app {host}/?previewd_share={secret} {user}").as_str())
    );
    let (value, whole) = cookie(&first.set_cookie, "previewd_share").expect("the share cookie is set");
    assert_eq!(value, secret);
    assert!(!whole.contains("Domain") && whole.contains("HttpOnly") && whole.contains("Path=/"), "{whole}");
    let max_age: i64 = whole.split("Max-Age=").nth(1).unwrap().split(';').next().unwrap().parse().unwrap();
    assert!((3500..=3600).contains(&max_age), "{whole}");
    let share_cookie = format!("previewd_share={secret}");
    let later = visitor.get("/cart", &[(COOKIE.as_str(), &share_cookie), (USER_AGENT.as_str(), BROWSER)]).await;
    assert_eq!((later.status, later.body.as_str()), (200, format!("app {host}/cart {user}").as_str()));
    assert!(later.set_cookie.is_empty(), "only the link's first use sets the cookie: {:?}", later.set_cookie);

    // It opens this environment only.
    let neighbour_host = other.url.clone().unwrap().trim_start_matches("https://").to_owned();
    let neighbour = Visitor { http: http.clone(), proxy: nginx.url(), host: neighbour_host };
    let refused = neighbour.get(&format!("/?previewd_share={secret}"), &[("accept", "text/html")]).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("does not open this preview"), "{}", refused.body);

    // The API lists it with its last use, and revokes it: refused from then on, saying so.
    let listed: serde_json::Value =
        common::eventually_within(Duration::from_secs(10), "the visit is recorded", || async {
            let listed: serde_json::Value =
                http.get(links(ready.id)).bearer_auth(admin.expose_secret()).send().await.ok()?.json().await.ok()?;
            listed[0]["last_used_at"].is_string().then_some(listed)
        })
        .await;
    let id = listed[0]["id"].as_i64().unwrap();
    let revoked = http.delete(format!("{}/{id}", links(ready.id))).bearer_auth(admin.expose_secret()).send().await;
    assert_eq!(revoked.unwrap().status(), 204);
    let after = visitor.get("/", &[(COOKIE.as_str(), &share_cookie), ("accept", "text/html")]).await;
    assert_eq!(after.status, 403, "{}", after.body);
    assert!(after.body.contains("this share link was revoked at"), "{}", after.body);
    let again = http.delete(format!("{}/{id}", links(ready.id))).bearer_auth(admin.expose_secret()).send().await;
    assert_eq!(again.unwrap().status(), 404);

    // A link that expires: it opens the preview until then, and is refused after, saying when.
    let brief: serde_json::Value =
        share(json!({"expires_in": "2s"}), admin.expose_secret()).await.unwrap().json().await.unwrap();
    let brief_secret = brief["url"].as_str().unwrap().split_once("previewd_share=").unwrap().1.to_owned();
    let expires_at = humantime::parse_rfc3339(brief["expires_at"].as_str().unwrap()).unwrap();
    let open = visitor.get(&format!("/?previewd_share={brief_secret}"), &[]).await;
    assert_eq!(open.status, 200, "{}", open.body);
    // Expiry is a time: the wait is until then, not for something to happen.
    let until = expires_at.duration_since(std::time::SystemTime::now()).unwrap_or_default();
    // `expires_at` is to the second, the expiry itself to the millisecond after it.
    tokio::time::sleep(until + Duration::from_millis(1050)).await;
    let expired = visitor.get(&format!("/?previewd_share={brief_secret}"), &[]).await;
    assert_eq!(expired.status, 403, "{}", expired.body);
    assert!(expired.body.contains(&format!("this share link expired at {}", brief["expires_at"].as_str().unwrap())));

    // Each making and revoking is in the audit log, the refusal too.
    let audit: serde_json::Value = http
        .get(format!("{}/api/v1/audit", s.previewd.base))
        .bearer_auth(admin.expose_secret())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("share_link."))
        .map(|e| (e["action"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(actions.len(), 6, "{actions:?}");
    let refusal = format!("refused (404): environment {} has no unrevoked share link {id}", ready.id);
    assert_eq!(actions[1], ("share_link.revoke", refusal.as_str()));
    assert_eq!(actions[2], ("share_link.revoke", "done"));
    assert_eq!(actions[5].0, "share_link.create");
    assert!(actions[5].1.starts_with("refused (403)"), "{actions:?}");
    s.finish().await;
}

/// Asks previewd's endpoint about a visit to `host` as Traefik would (the full answer), with
/// `cookie`: the status and `X-Previewd-User`.
async fn ask(s: &Story, host: &str, cookie: Option<&str>) -> (u16, Option<String>) {
    let mut request = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/_previewd/auth", s.previewd.base))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", host)
        .header("x-forwarded-uri", "/")
        .header(USER_AGENT, BROWSER);
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    let response = request.send().await.unwrap();
    let user = response.headers().get("x-previewd-user").map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), user)
}

#[tokio::test]
async fn auto_protects_a_repository_once_a_delivery_says_it_is_private() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let mut s = story_at(&db, |p| p, &[], true).await;
    // GitHub's example delivery is of a public repository: its previews are open.
    let Opened { ready, host, .. } = open_first(&mut s).await;
    assert_eq!(s.store.gate_record(ready.id).await.unwrap().unwrap().private, Some(false));
    assert_eq!(ask(&s, &host, None).await, (200, None));

    // The repository is made private; the next delivery says so, and its previews are protected.
    let mut edited = s.pull_request("edited", 1, &sha('a'));
    edited["repository"]["private"] = true.into();
    s.deliver("pull_request", &edited).await;
    common::eventually_within(Duration::from_secs(30), "the delivery is processed", || async {
        let env = s.store.gate_record(ready.id).await.ok()??;
        (env.private == Some(true)).then_some(())
    })
    .await;
    assert_eq!(ask(&s, &host, None).await.0, 302, "a private repository's preview asks for a sign-in");
    s.finish().await;
}

#[tokio::test]
async fn github_org_opens_previews_to_anyone_signed_in_whether_or_not_they_may_read_the_repository() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let mut s = story_at(&db, |p| format!("{p}\nprotection: github_org\n"), &[], true).await;
    let Opened { host, dashboard, previewd, browser, .. } = open_first(&mut s).await;
    assert_eq!(ask(&s, &host, None).await.0, 302, "not signed in: off to sign in");
    let sign_in_at = format!("http://{dashboard}:{}/auth/preview?next=https%3A%2F%2F{host}%2F", previewd.port());
    let (stranger, _) = sign_in(&s, &browser, "stranger", &sign_in_at).await;
    // The story gives `stranger` no access to the repository (only `reader` and `writer`).
    let cookie = format!("previewd_preview={stranger}");
    assert_eq!(ask(&s, &host, Some(&cookie)).await, (200, Some("stranger".to_owned())));
    s.finish().await;
}

#[tokio::test]
async fn sleeping_does_not_extend_the_ttl_and_an_expired_sleeping_environment_is_torn_down() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    // A time to live short enough to run out during the test (the repository's 24h is cut to
    // the policy's max; the fixture's override of 12h is made shorter than it), and sleep sooner.
    let policy = |p: String| {
        [("default: 48h", "default: 15s"), ("max: 7d", "max: 15s"), ("warn_before: 2h", "warn_before: 0s")]
            .into_iter()
            .chain([("ttl: { default: 12h }", "ttl: { default: 10s }")])
            .fold(p, |p, (from, to)| p.replace(from, to))
            + "\nsleep: { after: 3s }\n"
    };
    let mut s = story_at(&db, policy, &[], true).await;
    let Opened { ready, .. } = open_first(&mut s).await;
    let asleep = s.wait(1, "asleep", |e| e.state == "Sleeping").await;
    assert_eq!(asleep.expires_at, ready.expires_at, "going to sleep does not move the expiry");
    let deleted = s.wait(1, "torn down", |e| e.state == "Deleted").await;
    assert_eq!(deleted.reason.as_deref(), Some("expired: its time to live ran out"));
    let states: Vec<String> = s.store.transitions(deleted.id).await.unwrap().into_iter().map(|t| t.to_state).collect();
    let expired_from = states.iter().rposition(|t| t == "Deleting").map(|i| states[i - 1].clone());
    assert_eq!(expired_from.as_deref(), Some("Sleeping"), "it expired while asleep: {states:?}");
    s.finish().await;
}
