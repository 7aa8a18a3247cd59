//! Who is looking at a dashboard page: a person with a session (the `previewd_session` cookie),
//! or a script with an admin API token (`Authorization: Bearer`). Nobody else: there is no
//! anonymous access.

use crate::http::AppState;
use crate::http::api::{ApiError, Caller};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use previewd_environments::store::{SessionRecord, SessionRepository, TokenRecord, TokenScope};
use previewd_environments::time::now_ms;
use secrecy::SecretString;
use std::collections::HashSet;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "previewd_session";

#[derive(Debug, Clone)]
pub enum Viewer {
    /// Signed in with GitHub: sees the repositories GitHub said they may read.
    Person { session: SessionRecord, repositories: Vec<SessionRepository> },
    /// An API token (read or admin scope): sees the whole fleet, as the API does. It does not
    /// act from the dashboard (its forms are for people); the API is there for that.
    Token(TokenRecord),
}

impl Viewer {
    pub fn session_id(&self) -> Option<i64> {
        match self {
            Viewer::Person { session, .. } => Some(session.id),
            Viewer::Token(_) => None,
        }
    }

    pub fn login(&self) -> Option<&str> {
        match self {
            Viewer::Person { session, .. } => Some(&session.login),
            Viewer::Token(_) => None,
        }
    }

    /// The repositories this viewer may read; `None`: all.
    pub fn readable(&self) -> Option<HashSet<i64>> {
        match self {
            Viewer::Person { repositories, .. } => Some(repositories.iter().map(|r| r.repo_id).collect()),
            Viewer::Token(_) => None,
        }
    }

    pub fn may_read(&self, repo_id: i64) -> bool {
        self.readable().is_none_or(|r| r.contains(&repo_id))
    }

    /// Whether this viewer may act on the environments of `repo_id` from the dashboard: a
    /// person with write access to it.
    pub fn may_act(&self, repo_id: i64) -> bool {
        match self {
            Viewer::Person { repositories, .. } => repositories.iter().any(|r| r.repo_id == repo_id && r.can_write),
            Viewer::Token(_) => false,
        }
    }

    /// Sees the platform page: `dashboard.admins`, or an admin token.
    pub fn is_admin(&self) -> bool {
        match self {
            Viewer::Person { session, .. } => session.is_admin,
            Viewer::Token(token) => token.scope.allows(TokenScope::Admin),
        }
    }

    /// Whether what GitHub said this person may see is older than `max_age_ms`.
    pub fn is_stale(&self, max_age_ms: i64) -> bool {
        match self {
            Viewer::Person { session, .. } => now_ms() - session.repositories_checked_at > max_age_ms,
            Viewer::Token(_) => false,
        }
    }
}

/// The value of cookie `name` among `headers`' `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            let caller = Caller::from_request_parts(parts, app).await?;
            caller.require(TokenScope::Read)?;
            return Ok(Viewer::Token(caller.token));
        }
        if let Some(secret) = cookie(&parts.headers, SESSION_COOKIE)
            && let Some(session) = app.store.session(&SecretString::from(secret)).await?
        {
            let repositories = app.store.session_repositories(session.id).await?;
            return Ok(Viewer::Person { session, repositories });
        }
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "sign in with GitHub (/auth/login), or send an API token: `Authorization: Bearer <token>`",
        ))
    }
}

/// The viewer of a page a browser navigates to: someone not signed in, or whose permissions
/// are due to be asked of GitHub again, is sent through `/auth/login` and back.
pub struct PageViewer(pub Viewer);

impl FromRequestParts<AppState> for PageViewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Response> {
        let signs_in = app.dashboard.as_ref().and_then(|d| d.auth.as_ref());
        // After signing in the browser comes back here: for a form's POST, the page it was on
        // (`/environments/12/extend` → `/environments/12`), where it may send the form again.
        let here = match parts.method {
            axum::http::Method::GET => parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            _ => parts.uri.path().rsplit_once('/').map_or("/", |(page, _)| if page.is_empty() { "/" } else { page }),
        };
        let next: String = form_urlencoded::byte_serialize(here.as_bytes()).collect();
        let login = || Redirect::to(&format!("/auth/login?next={next}")).into_response();
        let scripted = parts.headers.contains_key(header::AUTHORIZATION);
        match Viewer::from_request_parts(parts, app).await {
            Ok(viewer) => match signs_in {
                Some(auth) if viewer.is_stale(auth.permissions_cache_ms()) => Err(login()),
                _ => Ok(PageViewer(viewer)),
            },
            // A script's bad token is answered 401, not sent to GitHub.
            Err(error) if error.status == StatusCode::UNAUTHORIZED && signs_in.is_some() && !scripted => Err(login()),
            Err(error) => Err(error.into_response()),
        }
    }
}
