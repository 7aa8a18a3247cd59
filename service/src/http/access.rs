//! The forward-authentication endpoints that proxies ask before forwarding a request to a
//! preview (see [`crate::access`]):
//!
//! - `GET /_previewd/auth`: the decision as a whole answer: `200` (let through, the visitor in
//!   `X-Previewd-User`), `302` to sign in, `403` with why, `404` for a host that is no preview.
//!   Traefik's ForwardAuth and Envoy's `ext_authz` send a non-2xx answer to the visitor as it
//!   is. With `?mode=nginx` every answer but `200` is `401`: nginx's `auth_request` accepts
//!   only 2xx, 401 and 403, and its `error_page 401` then fetches `/_previewd/page`.
//! - `GET /_previewd/page`: the same decision for nginx's error page (or, with `?rd=<URL>`, for
//!   ingress-nginx's `auth-signin`); a request that is let through by now is sent back to its
//!   URL (`307`).

use crate::access::request::{self, Original};
use crate::access::{Decision, USER_HEADER};
use crate::http::AppState;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

#[derive(Deserialize)]
pub(super) struct AuthQuery {
    mode: Option<String>,
}

/// `GET /_previewd/auth`.
pub(super) async fn auth(
    State(app): State<AppState>,
    Query(query): Query<AuthQuery>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let nginx = query.mode.as_deref() == Some("nginx");
    match decide(&app, &headers, &uri).await {
        Ok((_, Decision::Pass { user, cookie })) => pass(user, cookie),
        Ok(_) if nginx => StatusCode::UNAUTHORIZED.into_response(),
        Ok((original, decision)) => answer(&original, decision, &headers),
        Err(response) if nginx => {
            // nginx answers 500 to anything but 2xx, 401 and 403: the page tells the visitor.
            drop(response);
            StatusCode::UNAUTHORIZED.into_response()
        }
        Err(response) => response,
    }
}

#[derive(Deserialize)]
pub(super) struct PageQuery {
    rd: Option<String>,
}

/// `GET /_previewd/page`. Also a sign-in page of its own host: ingress-nginx's `auth-signin`
/// sends the browser to it with the original URL in `rd`.
pub(super) async fn page(
    State(app): State<AppState>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let mut headers = headers;
    if !headers.contains_key("x-original-url")
        && let Some(value) = query.rd.as_deref().and_then(|rd| HeaderValue::from_str(rd).ok())
    {
        headers.insert("x-original-url", value);
    }
    match decide(&app, &headers, &uri).await {
        Ok((original, Decision::Pass { cookie, .. })) => {
            let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
            if let Ok(location) = HeaderValue::from_str(&original.url()) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            with_cookie(response, cookie)
        }
        Ok((original, decision)) => answer(&original, decision, &headers),
        Err(response) => response,
    }
}

async fn decide(app: &AppState, headers: &HeaderMap, uri: &Uri) -> Result<(Original, Decision), Response> {
    let Some(gate) = &app.access else {
        return Err(plain(StatusCode::NOT_FOUND, "previewd serves no previews here (it runs without a policy)"));
    };
    let Some(original) = request::original(headers, uri) else {
        return Err(plain(
            StatusCode::BAD_REQUEST,
            "which request is this about? send X-Original-URL, or X-Forwarded-Host and X-Forwarded-Uri, or the original Host and path",
        ));
    };
    match gate.decide(&original, headers).await {
        Ok(decision) => Ok((original, decision)),
        Err(error) => {
            // Closed, not open: a visitor waits rather than getting in unchecked.
            tracing::error!(%error, host = original.host, "could not decide on a visit to a preview");
            let mut response =
                plain(StatusCode::SERVICE_UNAVAILABLE, "previewd cannot check access right now; try again shortly");
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            Err(response)
        }
    }
}

fn pass(user: Option<String>, cookie: Option<String>) -> Response {
    let mut response = StatusCode::OK.into_response();
    if let Some(value) = user.and_then(|u| HeaderValue::from_str(&u).ok()) {
        response.headers_mut().insert(USER_HEADER, value);
    }
    with_cookie(response, cookie)
}

/// `response` with `Set-Cookie: cookie`, when there is one (a share link's first use).
fn with_cookie(mut response: Response, cookie: Option<String>) -> Response {
    if let Some(value) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// A decision other than a pass, as the visitor sees it.
fn answer(original: &Original, decision: Decision, headers: &HeaderMap) -> Response {
    match decision {
        Decision::Pass { user, cookie } => pass(user, cookie),
        Decision::SignIn { location } => {
            let mut response = plain(StatusCode::FOUND, "sign in to open this preview");
            if let Ok(location) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
        Decision::Forbidden { message } => page_or_text(StatusCode::FORBIDDEN, "Not for you, yet", &message, headers),
        Decision::Waking { retry_after_seconds, cookie } => with_cookie(waking(retry_after_seconds, headers), cookie),
        Decision::NotFound { message } => {
            tracing::debug!(host = original.host, "a visit to a host that is no preview");
            page_or_text(StatusCode::NOT_FOUND, "No such preview", &message, headers)
        }
    }
}

/// The waking page: for a browser, a page that says what is happening and asks again by itself;
/// for others `503` with `Retry-After`. Both are `503`, so nothing caches them as the preview.
fn waking(retry_after_seconds: u64, headers: &HeaderMap) -> Response {
    let retry = retry_after_seconds.to_string();
    let mut response = if request::wants_html(headers) {
        let body = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
             <meta http-equiv=\"refresh\" content=\"{retry}\"><title>Waking this preview</title></head>\
             <body style=\"font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem\">\
             <h1>Waking this preview</h1><p>Nobody had visited it for a while, so it was asleep to save resources. \
             It is starting again; this page reloads every {retry} seconds and shows the preview once it is up.</p>\
             <p><small>previewd</small></p></body></html>"
        );
        (StatusCode::SERVICE_UNAVAILABLE, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "the preview is asleep and waking up; try again shortly\n").into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(value) = HeaderValue::from_str(&retry) {
        headers.insert(header::RETRY_AFTER, value);
    }
    response
}

fn plain(status: StatusCode, message: &str) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], format!("{message}\n")).into_response()
}

/// A small page for browsers, the message alone for others.
pub(crate) fn page_or_text(status: StatusCode, title: &str, message: &str, headers: &HeaderMap) -> Response {
    if !request::wants_html(headers) {
        return plain(status, message);
    }
    let (title, message) = (minijinja::HtmlEscape(title), minijinja::HtmlEscape(message));
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title></head><body style=\"font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem\">\
         <h1>{title}</h1><p>{message}</p><p><small>previewd</small></p></body></html>"
    );
    (status, [(header::CACHE_CONTROL, "no-store"), (header::CONTENT_TYPE, "text/html; charset=utf-8")], body)
        .into_response()
}
