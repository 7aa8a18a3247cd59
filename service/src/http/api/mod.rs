//! The admin API (`/api/v1`, JSON): the fleet for the platform team and its scripts.
//!
//! Every request carries a bearer token (`previewd token create`); there is no anonymous access.
//! A `read` token reads; an `admin` token also acts and reads the audit log. Every answer that is
//! not a success is `{"error": <code>, "message": <text>}` with the HTTP status that says what
//! went wrong, and a message that names the field at fault.

pub mod audit;
pub mod bypass;
pub mod environments;
pub mod events;
pub mod openapi;
pub mod share;
pub mod usage;

use super::AppState;
use axum::Json;
use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use previewd_environments::store::{StoreError, TokenRecord, TokenScope};
use secrecy::SecretString;
use serde::Serialize;
use std::net::SocketAddr;

/// The largest request body the API reads: its bodies are a few fields.
pub const MAX_BODY: usize = 16 * 1024;

/// The most items one page holds, and the default.
pub const MAX_PAGE: u32 = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/environments", get(environments::list))
        .route("/api/v1/environments/{id}", get(environments::show).delete(environments::destroy))
        .route("/api/v1/environments/{id}/extend", post(environments::extend))
        .route("/api/v1/environments/{id}/redeploy", post(environments::redeploy))
        .route("/api/v1/environments/{id}/reset-db", post(environments::reset_database))
        .route("/api/v1/environments/{id}/wake", post(environments::wake))
        .route("/api/v1/environments/{id}/share-links", get(share::list).post(share::create_by_token))
        .route("/api/v1/environments/{id}/share-links/{link}", axum::routing::delete(share::revoke_by_token))
        .route("/api/v1/repositories/{owner}/{name}/bypass-tokens", get(bypass::list).post(bypass::create))
        .route("/api/v1/repositories/{owner}/{name}/bypass-tokens/{token}", axum::routing::delete(bypass::revoke))
        .route("/api/v1/events", get(events::stream))
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/usage", get(usage::usage))
        .route("/api/v1/limits", get(usage::limits))
        .route("/api/v1/openapi.json", get(openapi::serve))
        .fallback(not_found)
}

/// Paging parameters (`limit`, `cursor`) shared by every listing. Cursors are opaque to
/// clients: the base64url of `id:<last id seen>`, checked when read back.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: u32,
    /// Items with an id below this one.
    pub before: Option<i64>,
}

impl Default for Page {
    fn default() -> Self {
        Page { limit: MAX_PAGE, before: None }
    }
}

impl Page {
    /// Takes `limit` or `cursor`; any other parameter is refused by name.
    pub fn take(&mut self, key: &str, value: &str) -> Result<(), ApiError> {
        let bad = |problem: &str| ApiError::field(StatusCode::BAD_REQUEST, key, problem);
        match key {
            "limit" => {
                self.limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=MAX_PAGE).contains(l))
                    .ok_or_else(|| bad(&format!("must be a whole number from 1 to {MAX_PAGE}")))?;
            }
            "cursor" => {
                let id = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, value)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .and_then(|text| text.strip_prefix("id:").and_then(|id| id.parse::<i64>().ok()))
                    .ok_or_else(|| bad("is not a cursor this API gave out (pass `next_cursor` back unchanged)"))?;
                self.before = Some(id);
            }
            _ => return Err(bad("is not a parameter of this endpoint")),
        }
        Ok(())
    }

    /// Splits `rows` (fetched with `limit + 1`, newest first) into this page and the cursor of
    /// the next, if there is one.
    pub fn split<T>(&self, mut rows: Vec<T>, id: impl Fn(&T) -> i64) -> (Vec<T>, Option<String>) {
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        if rows.len() <= limit {
            return (rows, None);
        }
        rows.truncate(limit);
        let cursor = rows.last().map(|last| {
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, format!("id:{}", id(last)))
        });
        (rows, cursor)
    }
}

/// An error answer: `{"error", "message"}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    /// A stable code to branch on (`not_found`, `invalid_field`, ...).
    pub error: &'static str,
    /// What went wrong, for people, naming the field at fault.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self { status, error, message: message.into() }
    }

    /// A query parameter or body field that cannot be used (400 when it cannot be read at all,
    /// 422 when it reads but is not allowed).
    pub fn field(status: StatusCode, field: &str, problem: impl std::fmt::Display) -> Self {
        Self::new(status, "invalid_field", format!("{field}: {problem}"))
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        tracing::error!(error = %error, "admin API: the store failed");
        if error.is_retryable() {
            Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the database is not answering; try again")
        } else {
            Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "previewd's data is inconsistent; see its log")
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut response = (status, Json(self)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such API endpoint; see /api/v1/openapi.json")
}

/// The token a request was made with.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: TokenRecord,
    /// The peer address, for the audit log.
    pub remote: Option<String>,
}

impl Caller {
    /// Refuses with 403 unless the token's scope allows `needed`.
    pub fn require(&self, needed: TokenScope) -> Result<(), ApiError> {
        if self.token.scope.allows(needed) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("token `{}` has scope `{}`; this needs `{needed}`", self.token.name, self.token.scope),
            ))
        }
    }

    /// The audit log's actor.
    pub fn actor(&self) -> String {
        format!("token:{}", self.token.name)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let unauthorized = |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(unauthorized("send a token: `Authorization: Bearer <token>` (see `previewd token create`)"));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(|t| SecretString::from(t.trim().to_owned()))
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
        let Some(token) = app.store.authenticate(&token).await? else {
            return Err(unauthorized("the token is not valid (unknown, or revoked)"));
        };
        let remote = parts.extensions.get::<axum::extract::ConnectInfo<SocketAddr>>().map(|info| info.0.to_string());
        Ok(Caller { token, remote })
    }
}
