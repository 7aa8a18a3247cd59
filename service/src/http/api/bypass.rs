//! Bypass tokens: per repository, for automation (end-to-end tests, screenshot tools) that
//! opens protected previews without signing in. Sent as the header `x-previewd-bypass` or the
//! query parameter `previewd_bypass`; several per repository, each named, shown once, stored
//! hashed, revoked by name.

use super::{ApiError, Caller};
use crate::http::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use previewd_environments::store::{BypassTokenError, BypassTokenRecord, NewAuditEntry, TokenScope};
use previewd_environments::time::rfc3339;
use serde::{Deserialize, Serialize};

/// A bypass token, without its secret.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BypassTokenView {
    pub name: String,
    /// Who created it (`token:<name>` of the admin token).
    pub created_by: String,
    pub created_at: String,
    /// The last visit it opened, to the minute or so (visits are written in batches).
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl From<BypassTokenRecord> for BypassTokenView {
    fn from(t: BypassTokenRecord) -> Self {
        BypassTokenView {
            name: t.name,
            created_by: t.created_by,
            created_at: rfc3339(t.created_at),
            last_used_at: t.last_used_at.map(rfc3339),
            revoked_at: t.revoked_at.map(rfc3339),
        }
    }
}

/// A new bypass token: its secret is shown here once.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedBypassToken {
    #[serde(flatten)]
    pub token: BypassTokenView,
    /// `pvb_…`: send it as `x-previewd-bypass`.
    pub secret: String,
}

#[derive(Deserialize)]
struct CreateBody {
    name: String,
}

async fn repository(app: &AppState, owner: &str, name: &str) -> Result<i64, ApiError> {
    app.store
        .repository_by_name(owner, name)
        .await?
        .map(|r| r.repo_id)
        .ok_or_else(|| ApiError::not_found(format!("previewd serves no repository {owner}/{name}")))
}

/// List a repository's bypass tokens, live and revoked.
#[utoipa::path(get, path = "/api/v1/repositories/{owner}/{name}/bypass-tokens", operation_id = "listBypassTokens", tag = "access", security(("bearer" = [])),
    params(("owner" = String, Path), ("name" = String, Path)),
    responses(
        (status = 200, description = "The tokens, oldest first", body = [BypassTokenView]),
        (status = 404, description = "No such repository", body = ApiError),
        (status = 401, description = "No token, or an unknown or revoked one", body = ApiError),
        (status = 403, description = "The token's scope does not allow this", body = ApiError)
    ))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Json<Vec<BypassTokenView>>, ApiError> {
    caller.require(TokenScope::Admin)?;
    let repo = repository(&app, &owner, &name).await?;
    Ok(Json(app.store.bypass_tokens(repo).await?.into_iter().map(Into::into).collect()))
}

/// Create a bypass token for a repository's previews.
#[utoipa::path(post, path = "/api/v1/repositories/{owner}/{name}/bypass-tokens", operation_id = "createBypassToken", tag = "access", security(("bearer" = [])),
    params(("owner" = String, Path), ("name" = String, Path)),
    request_body(content = inline(serde_json::Value), description = "`{\"name\": \"e2e\"}`"),
    responses(
        (status = 201, description = "Created; the secret is shown only here", body = CreatedBypassToken),
        (status = 400, description = "The body or the name cannot be used; the message says why", body = ApiError),
        (status = 404, description = "No such repository", body = ApiError),
        (status = 409, description = "The repository has a live token of that name", body = ApiError),
        (status = 401, description = "No token, or an unknown or revoked one", body = ApiError),
        (status = 403, description = "The token's scope does not allow this", body = ApiError)
    ))]
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    Path((owner, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(TokenScope::Admin)?;
    let body: CreateBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::field(StatusCode::BAD_REQUEST, "body", format!("must be JSON like {{\"name\": \"e2e\"}} ({e})"))
    })?;
    let repo = repository(&app, &owner, &name).await?;
    let created = app.store.create_bypass_token(repo, &body.name, &caller.actor()).await;
    let outcome = match &created {
        Ok(_) => "done".to_owned(),
        Err(error) => format!("refused: {error}"),
    };
    audit(&app, &caller, "bypass_token.create", &format!("{owner}/{name}:{}", body.name), &outcome).await;
    match created {
        Ok((token, secret)) => {
            let secret = secrecy::ExposeSecret::expose_secret(&secret).to_owned();
            Ok((StatusCode::CREATED, Json(CreatedBypassToken { token: token.into(), secret })).into_response())
        }
        Err(error @ BypassTokenError::BadName) => {
            Err(ApiError::field(StatusCode::BAD_REQUEST, "name", error.to_string()))
        }
        Err(error @ BypassTokenError::NameTaken(_)) => {
            Err(ApiError::new(StatusCode::CONFLICT, "name_taken", error.to_string()))
        }
        Err(BypassTokenError::Store(error)) => Err(error.into()),
    }
}

/// Revoke a repository's bypass token by name; visits with it are refused from now on.
#[utoipa::path(delete, path = "/api/v1/repositories/{owner}/{name}/bypass-tokens/{token}", operation_id = "revokeBypassToken", tag = "access", security(("bearer" = [])),
    params(("owner" = String, Path), ("name" = String, Path), ("token" = String, Path, description = "The token's name")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such repository, or no live token of that name", body = ApiError),
        (status = 401, description = "No token, or an unknown or revoked one", body = ApiError),
        (status = 403, description = "The token's scope does not allow this", body = ApiError)
    ))]
pub async fn revoke(
    State(app): State<AppState>,
    caller: Caller,
    Path((owner, name, token)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    caller.require(TokenScope::Admin)?;
    let repo = repository(&app, &owner, &name).await?;
    let revoked = app.store.revoke_bypass_token(repo, &token).await?;
    let outcome = if revoked { "done" } else { "refused (404): no live token of that name" };
    audit(&app, &caller, "bypass_token.revoke", &format!("{owner}/{name}:{token}"), outcome).await;
    if !revoked {
        return Err(ApiError::not_found(format!("{owner}/{name} has no live bypass token named `{token}`")));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn audit(app: &AppState, caller: &Caller, action: &str, target: &str, outcome: &str) {
    let entry = NewAuditEntry {
        actor: &caller.actor(),
        action,
        environment_id: None,
        target,
        detail: None,
        outcome,
        remote: caller.remote.as_deref(),
    };
    super::audit::write(app, &entry).await;
}
