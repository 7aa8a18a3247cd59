//! The reverse proxy of the forward-authentication tests (`previewd_e2e::proxy`), tried on its
//! own: a real nginx between a client and two small servers started here, an application and a
//! stand-in previewd whose `/_previewd/auth` lets through only URLs containing `let-me-in`.
//!
//! These tests need nginx: without `PREVIEWD_TEST_NGINX` (`eval "$(e2e/proxy.sh up)"`) they fail
//! saying so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use previewd_e2e::proxy::{Nginx, ProxyConfig, nginx_conf};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// The preview's hostname the client asks for (nginx listens on 127.0.0.1, so only the `Host`
/// header carries it).
const HOST: &str = "web-42.preview.test";

/// A request one of the servers received.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    uri: String,
    headers: HeaderMap,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }
}

#[derive(Default)]
struct Seen {
    app: Vec<Received>,
    auth: Vec<Received>,
    page: Vec<Received>,
    /// Anything else previewd was sent: there should be nothing.
    other: Vec<Received>,
}

type Shared = Arc<Mutex<Seen>>;

fn received(request: &Request) -> Received {
    Received {
        method: request.method().to_string(),
        uri: request.uri().to_string(),
        headers: request.headers().clone(),
    }
}

/// The application: `200 app saw <path> user=<X-Previewd-User>`, or its own 401 and 404 at paths
/// ending in `/app-401` and `/app-404`.
async fn app(State(seen): State<Shared>, request: Request) -> Response {
    let entry = received(&request);
    seen.lock().unwrap().app.push(entry.clone());
    let path = request.uri().path();
    if path.ends_with("/app-401") {
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Basic realm=\"app\"")], "app's own 401")
            .into_response();
    }
    if path.ends_with("/app-404") {
        return (StatusCode::NOT_FOUND, "app's own 404").into_response();
    }
    let user = entry.header("x-previewd-user").unwrap_or_default();
    format!("app saw {path} user={user}").into_response()
}

/// previewd's decision: 200 as alice with a share cookie when the original URL contains
/// `let-me-in`, else 401.
async fn auth(State(seen): State<Shared>, request: Request) -> Response {
    let entry = received(&request);
    seen.lock().unwrap().auth.push(entry.clone());
    if entry.header("x-original-url").unwrap_or_default().contains("let-me-in") {
        (StatusCode::OK, [("x-previewd-user", "alice"), ("set-cookie", "previewd_share=x; Path=/")]).into_response()
    } else {
        StatusCode::UNAUTHORIZED.into_response()
    }
}

/// previewd's page for what it does not let through: here the sign-in redirect.
async fn page(State(seen): State<Shared>, request: Request) -> Response {
    let entry = received(&request);
    seen.lock().unwrap().page.push(entry.clone());
    let original = entry.header("x-original-url").unwrap_or_default();
    let location = format!("https://dashboard.test/auth/login?next={}", percent_encode(original));
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

async fn previewd_other(State(seen): State<Shared>, request: Request) -> Response {
    seen.lock().unwrap().other.push(received(&request));
    (StatusCode::INTERNAL_SERVER_ERROR, "not a previewd path").into_response()
}

/// Every byte but RFC 3986's unreserved characters as `%XX`.
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    address
}

struct Setup {
    nginx: Nginx,
    seen: Shared,
    client: reqwest::Client,
}

async fn setup() -> Setup {
    let seen = Shared::default();
    let app = serve(Router::new().fallback(app).with_state(seen.clone())).await;
    let previewd = serve(
        Router::new()
            .route("/_previewd/auth", get(auth))
            .route("/_previewd/page", any(page))
            .fallback(previewd_other)
            .with_state(seen.clone()),
    )
    .await;
    let nginx = Nginx::start(&ProxyConfig { app, previewd }).unwrap();
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    Setup { nginx, seen, client }
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Setup {
    /// GET `path` on [`HOST`] through nginx, as a browser with a session cookie would.
    async fn get(&self, path: &str, extra: &[(&str, &str)]) -> Answer {
        let mut request = self
            .client
            .get(format!("{}{path}", self.nginx.url()))
            .header("host", HOST)
            .header("cookie", "session=abc; theme=dark")
            .header("user-agent", "previewd-proxy-test/1");
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap();
        Answer { status, headers, body }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap()
    }
}

fn set_cookies(answer: &Answer) -> Vec<&str> {
    answer.headers.get_all("set-cookie").iter().map(|value| value.to_str().unwrap()).collect()
}

/// What every auth subrequest must look like: the original request's URL, host, cookie and
/// user agent, previewd's own path and mode, and no body.
fn assert_auth_subrequest(auth: &Received, original_url: &str) {
    assert_eq!(auth.method, "GET");
    assert_eq!(auth.uri, "/_previewd/auth?mode=nginx");
    assert_eq!(auth.header("x-original-url"), Some(original_url));
    assert_eq!(auth.header("host"), Some(HOST));
    assert_eq!(auth.header("cookie"), Some("session=abc; theme=dark"));
    assert_eq!(auth.header("user-agent"), Some("previewd-proxy-test/1"));
    assert_eq!(auth.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(auth.header("content-length"), None);
}

#[tokio::test]
async fn what_previewd_lets_through_reaches_the_app_as_the_user_with_previewds_cookie() {
    let setup = setup().await;
    let answer = setup.get("/docs/let-me-in/intro?lang=en&x=%2F", &[]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}\n{}", answer.body, setup.nginx.logs());
    assert_eq!(answer.body, "app saw /docs/let-me-in/intro user=alice");
    assert_eq!(set_cookies(&answer), ["previewd_share=x; Path=/"]);

    let seen = setup.seen();
    assert_eq!(seen.auth.len(), 1);
    assert_auth_subrequest(&seen.auth[0], &format!("http://{HOST}/docs/let-me-in/intro?lang=en&x=%2F"));
    assert_eq!(seen.app.len(), 1);
    let app = &seen.app[0];
    assert_eq!(app.uri, "/docs/let-me-in/intro?lang=en&x=%2F", "the app gets the URI as the client sent it");
    assert_eq!(app.header("host"), Some(HOST));
    assert_eq!(app.header("cookie"), Some("session=abc; theme=dark"));
    assert!(seen.page.is_empty() && seen.other.is_empty());
}

#[tokio::test]
async fn what_previewd_does_not_let_through_gets_previewds_page_for_the_original_url() {
    let setup = setup().await;
    let answer = setup.get("/private/page?tab=2", &[]).await;
    let original = format!("http://{HOST}/private/page?tab=2");
    assert_eq!(answer.status, StatusCode::FOUND, "{}\n{}", answer.body, setup.nginx.logs());
    assert_eq!(
        answer.headers.get("location").unwrap(),
        &format!("https://dashboard.test/auth/login?next={}", percent_encode(&original))
    );
    assert!(set_cookies(&answer).is_empty(), "no cookie when previewd set none: {:?}", set_cookies(&answer));

    let seen = setup.seen();
    assert!(seen.app.is_empty(), "the app got a request previewd refused: {:?}", seen.app);
    assert_eq!(seen.auth.len(), 1);
    assert_auth_subrequest(&seen.auth[0], &original);
    assert_eq!(seen.page.len(), 1);
    let page = &seen.page[0];
    assert_eq!(page.method, "GET");
    assert_eq!(page.uri, "/_previewd/page", "the original query belongs in X-Original-URL only");
    assert_eq!(page.header("x-original-url"), Some(original.as_str()));
    assert_eq!(page.header("host"), Some(HOST));
    assert_eq!(page.header("cookie"), Some("session=abc; theme=dark"));
    assert!(seen.other.is_empty());
}

#[tokio::test]
async fn a_user_header_from_the_client_never_reaches_the_app() {
    let setup = setup().await;
    let forged = [("x-previewd-user", "mallory")];
    let refused = setup.get("/admin", &forged).await;
    assert_eq!(refused.status, StatusCode::FOUND);
    let let_through = setup.get("/let-me-in/admin", &forged).await;
    assert_eq!(let_through.status, StatusCode::OK);
    assert_eq!(let_through.body, "app saw /let-me-in/admin user=alice");
    let seen = setup.seen();
    assert_eq!(seen.app.len(), 1);
    assert_eq!(seen.app[0].headers.get_all("x-previewd-user").iter().count(), 1);
}

#[tokio::test]
async fn the_applications_own_errors_pass_unchanged_with_previewds_cookie() {
    let setup = setup().await;
    let unauthorized = setup.get("/let-me-in/app-401", &[]).await;
    assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unauthorized.body, "app's own 401", "the app's 401 is not previewd's page");
    assert_eq!(unauthorized.headers.get("www-authenticate").unwrap(), "Basic realm=\"app\"");
    assert_eq!(set_cookies(&unauthorized), ["previewd_share=x; Path=/"]);
    let not_found = setup.get("/let-me-in/app-404", &[]).await;
    assert_eq!(not_found.status, StatusCode::NOT_FOUND);
    assert_eq!(not_found.body, "app's own 404");
    assert_eq!(set_cookies(&not_found), ["previewd_share=x; Path=/"]);
    let seen = setup.seen();
    assert_eq!((seen.app.len(), seen.auth.len()), (2, 2));
    assert!(seen.page.is_empty());
}

#[tokio::test]
async fn the_auth_location_cannot_be_asked_from_outside() {
    let setup = setup().await;
    let answer = setup.get("/_previewd/auth?let-me-in", &[]).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let seen = setup.seen();
    assert!(seen.auth.is_empty() && seen.app.is_empty() && seen.page.is_empty() && seen.other.is_empty());
}

#[test]
fn the_configuration_names_its_upstreams_and_port_and_no_absolute_path() {
    let config = ProxyConfig { app: "127.0.0.1:3000".parse().unwrap(), previewd: "127.0.0.1:8080".parse().unwrap() };
    let conf = nginx_conf(&config, 8443);
    assert!(conf.contains("upstream app { server 127.0.0.1:3000; }"), "{conf}");
    assert!(conf.contains("upstream previewd { server 127.0.0.1:8080; }"), "{conf}");
    assert!(conf.contains("listen 127.0.0.1:8443;"), "{conf}");
    // Relative paths only: nginx resolves them against the directory given with -p.
    for line in conf.lines() {
        let directive = line.trim_start();
        let is_path = ["pid ", "error_log ", "access_log ", "client_body_temp_path ", "proxy_temp_path "]
            .iter()
            .any(|name| directive.starts_with(name));
        assert!(!is_path || !directive.contains(" /"), "{line}");
    }
}

/// `nginx -t` on the configuration as [`Nginx::start`] writes it: every directive is valid.
#[test]
fn nginx_accepts_the_configuration() {
    let config = ProxyConfig { app: "127.0.0.1:3000".parse().unwrap(), previewd: "127.0.0.1:8080".parse().unwrap() };
    let conf = nginx_conf(&config, 8443);
    println!("{conf}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nginx.conf"), &conf).unwrap();
    let output = std::process::Command::new(previewd_e2e::proxy::binary().unwrap())
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("syntax is ok") && stderr.contains("test is successful"), "{stderr}");
}
