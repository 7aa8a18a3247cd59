//! Signing in to the dashboard with GitHub: the OAuth web flow of the App's user authorization.
//!
//! `/auth/login` sends the browser to GitHub with a random `state`, also kept in a short-lived
//! cookie; `/auth/callback` checks that GitHub sent the same `state` back (a page of another
//! site cannot start a sign-in in the person's name), exchanges the code for a user access
//! token, asks GitHub who the person is and which repositories they may read and write, starts
//! a session, and drops the token: it is never stored. What the person may see is asked of
//! GitHub again by signing in again: a page whose session's answer is older than
//! `dashboard.permissions_cache_seconds` goes through `/auth/login` (GitHub sends an
//! authorised person straight back, without a prompt).

use super::viewer::{SESSION_COOKIE, cookie};
use super::{DashboardAuth, Remote, dashboard};
use crate::github::user::{PersonRepository, UserClient, UserError};
use crate::http::AppState;
use crate::http::api::ApiError;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use oauth2::{AuthorizationCode, CsrfToken, TokenResponse};
use previewd_environments::store::{NewAuditEntry, SessionRepository};
use previewd_environments::time::now_ms;
use secrecy::SecretString;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// The cookie that carries a sign-in's `state` (and where to go after) to the callback.
const STATE_COOKIE: &str = "previewd_oauth";
/// How long a sign-in at GitHub may take.
const STATE_LIFETIME: Duration = Duration::from_secs(600);
/// The longest `next` path kept.
const MAX_NEXT: usize = 2_000;

/// A cookie previewd sets: HttpOnly, SameSite=Lax (sent on the navigation back from GitHub,
/// not on another site's forms), Secure when the dashboard is served over https.
fn set_cookie(auth: &DashboardAuth, name: &str, value: &str, path: &str, max_age: Duration) -> String {
    cookie::Cookie::build((name, value))
        .path(path)
        .http_only(true)
        .secure(auth.secure_cookies())
        .same_site(cookie::SameSite::Lax)
        .max_age(cookie::time::Duration::seconds(i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX)))
        .build()
        .to_string()
}

/// Where to go after signing in: a path of this dashboard, never another site.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') && path.len() <= MAX_NEXT =>
        {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

#[derive(Deserialize)]
pub(super) struct LoginQuery {
    next: Option<String>,
}

/// `GET /auth/login`: off to GitHub.
pub(super) async fn login(State(app): State<AppState>, Query(query): Query<LoginQuery>) -> Result<Response, ApiError> {
    let auth = auth(&app)?;
    let state = CsrfToken::new_random();
    let next = local_path(query.next.as_deref());
    let (url, _) = auth.client().authorize_url(|| state.clone()).url();
    // Percent-encoded: a `;` or `,` in the path must not end the cookie's value.
    let encoded: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
    let value = format!("{}~{encoded}", state.secret());
    let cookie = set_cookie(auth, STATE_COOKIE, &value, "/auth", STATE_LIFETIME);
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(url.as_str())).into_response())
}

#[derive(Deserialize)]
pub(super) struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn refused(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

/// Equal, compared without leaking where they differ: as digests.
fn same_secret(a: &str, b: &str) -> bool {
    Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes())
}

/// `GET /auth/callback`: GitHub sends the person back with a code.
pub(super) async fn callback(
    State(app): State<AppState>,
    Query(query): Query<CallbackQuery>,
    remote: Remote,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let auth = auth(&app)?;
    let Remote(remote) = remote;
    if let Some(error) = &query.error {
        let why = query.error_description.as_deref().unwrap_or(error);
        return Err(refused(StatusCode::FORBIDDEN, "sign_in_refused", format!("GitHub did not sign you in: {why}")));
    }
    let (Some(code), Some(state)) = (&query.code, &query.state) else {
        return Err(ApiError::field(StatusCode::BAD_REQUEST, "code", "is missing: start at /auth/login"));
    };
    let kept = cookie(&headers, STATE_COOKIE).unwrap_or_default();
    let (kept_state, next) = kept.split_once('~').unwrap_or(("", "/"));
    let next: String = form_urlencoded::parse(format!("next={next}").as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    if kept_state.is_empty() || !same_secret(kept_state, state) {
        return Err(refused(
            StatusCode::BAD_REQUEST,
            "bad_state",
            "state: this sign-in was not started here, or took longer than 10 minutes: start again at /auth/login",
        ));
    }
    let token = auth.exchange(code).await?;
    let person = auth.person(&token).await.map_err(|error| {
        tracing::warn!(%error, "GitHub could not say who is signing in to the dashboard");
        let status = if error.is_transient() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::BAD_GATEWAY };
        refused(status, "github", error.to_string())
    })?;
    drop(token);
    if let Some(why) = &person.refused {
        audit_sign_in(&app, &person.login, remote.as_deref(), &format!("refused (403): {why}")).await;
        return Err(refused(StatusCode::FORBIDDEN, "not_allowed", why.clone()));
    }
    // A sign-in replaces the session it refreshes.
    if let Some(old) = cookie(&headers, SESSION_COOKIE) {
        app.store.end_session(&SecretString::from(old)).await?;
    }
    let repositories: Vec<SessionRepository> =
        person.repositories.iter().map(|r| SessionRepository { repo_id: r.id, can_write: r.can_write }).collect();
    let lifetime = auth.session_lifetime;
    let expires_at = now_ms() + i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX);
    let (_, secret) = app.store.create_session(&person.login, person.is_admin, expires_at, &repositories).await?;
    audit_sign_in(&app, &person.login, remote.as_deref(), "done").await;
    tracing::info!(
        login = person.login,
        repositories = repositories.len(),
        admin = person.is_admin,
        "signed in to the dashboard"
    );
    let session = set_cookie(auth, SESSION_COOKIE, secrecy::ExposeSecret::expose_secret(&secret), "/", lifetime);
    let clear = set_cookie(auth, STATE_COOKIE, "", "/auth", Duration::ZERO);
    let mut response = Redirect::to(&local_path(Some(&next))).into_response();
    for value in [session, clear] {
        if let Ok(value) = value.parse() {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    Ok(response)
}

/// Records a sign-in (or its refusal) in the audit log; one that cannot be written goes to the
/// log instead, and the sign-in goes on.
async fn audit_sign_in(app: &AppState, login: &str, remote: Option<&str>, outcome: &str) {
    let entry = NewAuditEntry {
        actor: &format!("github:{login}"),
        action: "dashboard.sign_in",
        environment_id: None,
        target: login,
        detail: None,
        outcome,
        remote,
    };
    if let Err(error) = app.store.audit(&entry).await {
        tracing::error!(%error, login, outcome, "the audit log could not be written");
    }
}

#[derive(Deserialize)]
pub(super) struct LogoutForm {
    csrf: String,
}

/// `POST /auth/logout`: ends the session (the form carries its CSRF token).
pub(super) async fn logout(
    State(app): State<AppState>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LogoutForm>,
) -> Result<Response, ApiError> {
    let auth = auth(&app)?;
    if let Some(secret) = cookie(&headers, SESSION_COOKIE).map(SecretString::from)
        && let Some(session) = app.store.session(&secret).await?
    {
        if !same_secret(&session.csrf_token, &form.csrf) {
            return Err(super::bad_csrf());
        }
        app.store.end_session(&secret).await?;
    }
    let clear = set_cookie(auth, SESSION_COOKIE, "", "/", Duration::ZERO);
    Ok(([(header::SET_COOKIE, clear)], Redirect::to("/auth/signed-out")).into_response())
}

#[derive(Deserialize)]
pub(super) struct PreviewQuery {
    next: Option<String>,
}

/// `GET /auth/preview?next=<preview URL>`: a signed-in person gets the preview cookie
/// ([`crate::access::PREVIEW_COOKIE`], on the base domain, so every preview's host receives
/// it) and goes back to the preview. Someone not signed in signs in first and comes back here.
pub(super) async fn preview(
    State(app): State<AppState>,
    Query(query): Query<PreviewQuery>,
    viewer: super::viewer::PageViewer,
) -> Result<Response, ApiError> {
    let auth = auth(&app)?;
    let Some(gate) = &app.access else {
        return Err(refused(
            StatusCode::NOT_FOUND,
            "no_previews",
            "previewd serves no previews here (it runs without a policy)",
        ));
    };
    let super::viewer::Viewer::Person { session, .. } = viewer.0 else {
        return Err(refused(
            StatusCode::FORBIDDEN,
            "not_a_person",
            "previews are opened by people signed in with GitHub; automation uses a bypass token",
        ));
    };
    let base = gate.base_domain();
    let next = query.next.unwrap_or_default();
    let target: Option<axum::http::Uri> = next.parse().ok().filter(|_| next.len() <= MAX_NEXT);
    let host = target.as_ref().and_then(|t| t.host()).map(str::to_ascii_lowercase);
    let scheme_ok = target.as_ref().and_then(|t| t.scheme_str()).is_some_and(|s| s == "https" || s == "http");
    if !scheme_ok || !host.as_deref().is_some_and(|h| h.ends_with(&format!(".{base}"))) {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "next",
            format!("must be the URL of a preview under {base}"),
        ));
    }
    let dashboard_host =
        auth.public_url.parse::<axum::http::Uri>().ok().and_then(|u| u.host().map(str::to_ascii_lowercase));
    if !dashboard_host.is_some_and(|h| h == base || h.ends_with(&format!(".{base}"))) {
        return Err(refused(
            StatusCode::CONFLICT,
            "dashboard_outside_base_domain",
            format!(
                "the dashboard (dashboard.public_url {}) must be served under {base} for browsers to accept its cookie for previews",
                auth.public_url
            ),
        ));
    }
    let secret = app.store.issue_preview_secret(session.id).await?;
    let remaining = Duration::from_millis(u64::try_from(session.expires_at - now_ms()).unwrap_or(0));
    let cookie = cookie::Cookie::build((
        crate::access::PREVIEW_COOKIE,
        secrecy::ExposeSecret::expose_secret(&secret).to_owned(),
    ))
    .domain(base.to_owned())
    .path("/")
    .http_only(true)
    .secure(auth.secure_cookies())
    .same_site(cookie::SameSite::Lax)
    .max_age(cookie::time::Duration::seconds(i64::try_from(remaining.as_secs()).unwrap_or(i64::MAX)))
    .build()
    .to_string();
    tracing::info!(login = session.login, host = host.as_deref(), "signed in to previews");
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(&next)).into_response())
}

/// `GET /auth/signed-out`.
pub(super) async fn signed_out(State(app): State<AppState>) -> Result<Response, ApiError> {
    Ok(dashboard(&app)?.render("signed-out.html", serde_json::json!({}))?.into_response())
}

fn auth(app: &AppState) -> Result<&DashboardAuth, ApiError> {
    dashboard(app)?.auth.as_ref().ok_or_else(|| {
        refused(
            StatusCode::NOT_FOUND,
            "no_sign_in",
            "this dashboard has no GitHub sign-in (settings dashboard.public_url, github.client_id, github.client_secret_file): use an API token",
        )
    })
}

/// The person GitHub says is signing in.
pub(super) struct Person {
    pub login: String,
    pub repositories: Vec<PersonRepository>,
    pub is_admin: bool,
    /// Why they may not sign in (`dashboard.allowed_orgs`).
    pub refused: Option<String>,
}

impl DashboardAuth {
    /// Exchanges GitHub's code for the person's token.
    async fn exchange(&self, code: &str) -> Result<SecretString, ApiError> {
        let (http, timeout) = (self.http.clone(), self.timeout);
        let send = move |request: oauth2::HttpRequest| {
            let http = http.clone();
            async move {
                let (parts, body) = request.into_parts();
                let request =
                    axum::http::Request::from_parts(parts, http_body_util::Full::new(bytes::Bytes::from(body)));
                let answer = tokio::time::timeout(timeout, http.request(request))
                    .await
                    .map_err(|_| ExchangeError("GitHub did not answer in time".to_owned()))?
                    .map_err(|e| ExchangeError(crate::outbound::error_chain(&e)))?;
                let (parts, body) = answer.into_parts();
                let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(body, 64 * 1024))
                    .await
                    .map_err(|e| ExchangeError(e.to_string()))?
                    .to_bytes();
                Ok::<_, ExchangeError>(axum::http::Response::from_parts(parts, body.to_vec()))
            }
        };
        let answer = self
            .client()
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .request_async(&send)
            .await
            .map_err(|error| {
                tracing::warn!(error = %crate::outbound::error_chain(&error), "GitHub did not exchange a sign-in code");
                refused(
                    StatusCode::BAD_GATEWAY,
                    "github",
                    "GitHub did not accept the sign-in code (it may have been used already, or expired): sign in again at /auth/login",
                )
            })?;
        Ok(SecretString::from(answer.access_token().secret().clone()))
    }

    /// Who holds `token`, what they may read and write, and whether they may sign in.
    async fn person(&self, token: &SecretString) -> Result<Person, UserError> {
        let user = UserClient::new(&self.api_url, token, self.timeout)?;
        let login = user.login().await?;
        let mut refused = None;
        if !self.allowed_orgs.is_empty() {
            let mut member = false;
            for org in &self.allowed_orgs {
                if user.in_org(org).await? {
                    member = true;
                    break;
                }
            }
            if !member {
                refused = Some(format!(
                    "@{login} is not a member of an organisation allowed to sign in ({})",
                    self.allowed_orgs.join(", ")
                ));
            }
        }
        let mut is_admin = false;
        for admin in &self.admins {
            is_admin = match admin.split_once('/') {
                Some((org, team)) => user.in_team(org, team, &login).await?,
                None => admin.eq_ignore_ascii_case(&login),
            };
            if is_admin {
                break;
            }
        }
        let repositories = if refused.is_none() { user.repositories(&login).await? } else { Vec::new() };
        Ok(Person { login, repositories, is_admin, refused })
    }
}

/// What the code exchange's HTTP call failed with.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ExchangeError(String);
