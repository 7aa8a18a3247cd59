//! Share links: a URL that opens one environment's previews for someone outside GitHub until
//! it expires (policy `share_links.max`, default a week) or is revoked. Made by an admin token
//! here, or on the dashboard by a person who may write to the repository; audited; the secret is
//! in the URL, shown once.

use super::environments::{Acting, managed};
use super::{ApiError, Caller};
use crate::access::SHARE_PARAMETER;
use crate::http::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use previewd_environments::model::EnvironmentState;
use previewd_environments::naming;
use previewd_environments::store::{NewAuditEntry, ShareLinkRecord, TokenScope};
use previewd_environments::time::{millis, now_ms, rfc3339};
use serde::{Deserialize, Serialize};

/// A share link, without its secret.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShareLinkView {
    pub id: i64,
    pub environment_id: i64,
    /// `token:<name>` or `github:<login>`.
    pub created_by: String,
    pub created_at: String,
    pub expires_at: String,
    /// The last visit it opened, to a few seconds (visits are written in batches).
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
    /// Whether it opens the preview now: neither expired nor revoked.
    pub live: bool,
}

impl From<ShareLinkRecord> for ShareLinkView {
    fn from(l: ShareLinkRecord) -> Self {
        ShareLinkView {
            live: l.is_live(now_ms()),
            id: l.id,
            environment_id: l.environment_id,
            created_by: l.created_by,
            created_at: rfc3339(l.created_at),
            expires_at: rfc3339(l.expires_at),
            last_used_at: l.last_used_at.map(rfc3339),
            revoked_at: l.revoked_at.map(rfc3339),
        }
    }
}

/// A new share link: its URL (which holds the secret) is shown here once.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedShareLink {
    #[serde(flatten)]
    pub link: ShareLinkView,
    /// The preview's URL with `previewd_share=pvs_…`: whoever opens it gets in until
    /// `expires_at`.
    pub url: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    expires_in: Option<String>,
}

/// Makes a share link to environment `id` for `acting`, open for `expires_in` (the policy's
/// `share_links.default` when `None`), and audits it, refusals included.
pub(crate) async fn create_link(
    app: &AppState,
    acting: &Acting<'_>,
    id: &str,
    expires_in: Option<&str>,
) -> Result<CreatedShareLink, ApiError> {
    let mut target = None;
    let created = create(app, acting, id, expires_in, &mut target).await;
    let detail = expires_in.map(|e| format!("expires_in={e}"));
    let target = target.unwrap_or_else(|| format!("environment {id}"));
    audit(app, acting, "share_link.create", id, &target, detail.as_deref(), &created).await;
    created
}

async fn create(
    app: &AppState,
    acting: &Acting<'_>,
    id: &str,
    expires_in: Option<&str>,
    target: &mut Option<String>,
) -> Result<CreatedShareLink, ApiError> {
    acting.allowed.clone()?;
    let (env, engine) = managed(app, id).await?;
    *target = Some(format!("{}/{}#{}", env.repo_owner, env.repo_name, env.pr_number));
    (acting.may_act_on)(&env)?;
    if !EnvironmentState::parse(&env.state).is_some_and(EnvironmentState::is_live) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_live",
            format!("environment {} is {}: there is no preview to share", env.id, env.state),
        ));
    }
    let policy = &engine.policy.share_links;
    let lasting = match expires_in.map(str::trim) {
        None | Some("") => policy.default,
        Some(text) => {
            let bad = |problem: String| ApiError::field(StatusCode::UNPROCESSABLE_ENTITY, "expires_in", problem);
            let lasting = humantime::parse_duration(text)
                .map_err(|e| bad(format!("{text:?} is not a duration like 24h or 30m ({e})")))?;
            if lasting.is_zero() || lasting > policy.max {
                return Err(bad(format!(
                    "must be longer than 0s and at most the policy's share_links.max ({})",
                    humantime::format_duration(policy.max)
                )));
            }
            lasting
        }
    };
    let expires_at = now_ms().saturating_add(millis(lasting));
    let (link, secret) = app.store.create_share_link(env.id, &acting.audit_actor, expires_at).await?;
    let base = env.url.clone().or_else(|| {
        env.name.as_deref().map(|name| format!("https://{}", naming::hostname(name, &engine.policy.base_domain)))
    });
    let url = base
        .and_then(|base| url::Url::parse(&base).ok())
        .map(|mut url| {
            url.query_pairs_mut().append_pair(SHARE_PARAMETER, secrecy::ExposeSecret::expose_secret(&secret));
            url.to_string()
        })
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "no_url",
                "the environment has no preview URL yet; try once it is named",
            )
        })?;
    tracing::info!(
        environment = env.id,
        by = acting.audit_actor,
        expires_at = rfc3339(expires_at),
        "share link created"
    );
    Ok(CreatedShareLink { link: link.into(), url })
}

fn token_acting(caller: &Caller) -> Acting<'_> {
    Acting {
        actor: previewd_environments::actions::Actor::Api { token: caller.token.name.clone() },
        audit_actor: caller.actor(),
        remote: caller.remote.as_deref(),
        allowed: caller.require(TokenScope::Admin),
        may_act_on: &|_| Ok(()),
    }
}

/// List an environment's share links, newest first (live, expired and revoked).
#[utoipa::path(get, path = "/api/v1/environments/{id}/share-links", operation_id = "listShareLinks", tag = "access", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The environment's id")),
    responses(
        (status = 200, description = "The links, newest first, without their secrets", body = [ShareLinkView]),
        (status = 404, description = "No such environment", body = ApiError),
        (status = 401, description = "No token, or an unknown or revoked one", body = ApiError),
        (status = 403, description = "The token's scope does not allow this", body = ApiError)
    ))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<ShareLinkView>>, ApiError> {
    caller.require(TokenScope::Admin)?;
    let (env, _) = managed(&app, &id).await?;
    Ok(Json(app.store.share_links(env.id).await?.into_iter().map(Into::into).collect()))
}

/// Create a share link to an environment's preview.
#[utoipa::path(post, path = "/api/v1/environments/{id}/share-links", operation_id = "createShareLink", tag = "access", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The environment's id")),
    request_body(content = inline(serde_json::Value), description = "`{\"expires_in\": \"24h\"}`; empty or `{}`: the policy's `share_links.default`"),
    responses(
        (status = 201, description = "Created; the URL (with the secret) is shown only here", body = CreatedShareLink),
        (status = 400, description = "The body is not JSON of that shape", body = ApiError),
        (status = 404, description = "No such environment", body = ApiError),
        (status = 409, description = "The environment is not live, or has no URL yet", body = ApiError),
        (status = 422, description = "`expires_in` is not a duration, or longer than `share_links.max`", body = ApiError),
        (status = 401, description = "No token, or an unknown or revoked one", body = ApiError),
        (status = 403, description = "The token's scope does not allow this", body = ApiError)
    ))]
pub async fn create_by_token(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: CreateBody = if body.iter().all(u8::is_ascii_whitespace) {
        CreateBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::field(
                StatusCode::BAD_REQUEST,
                "body",
                format!("must be JSON like {{\"expires_in\": \"24h\"}} ({e})"),
            )
        })?
    };
    let created = create_link(&app, &token_acting(&caller), &id, body.expires_in.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Revoke a share link: visits with it are refused from now on.
#[utoipa::path(delete, path = "/api/v1/environments/{id}/share-links/{link}", operation_id = "revokeShareLink", tag = "access", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The environment's id"), ("link" = i64, Path, description = "The link's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such environment, or no unrevoked link of that id", body = ApiError),
        (status = 401, description = "No token, or an unknown or revoked one", body = ApiError),
        (status = 403, description = "The token's scope does not allow this", body = ApiError)
    ))]
pub async fn revoke_by_token(
    State(app): State<AppState>,
    caller: Caller,
    Path((id, link)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    revoke_link(&app, &token_acting(&caller), &id, &link).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Revokes environment `id`'s share link `link` for `acting`, and audits it.
pub(crate) async fn revoke_link(app: &AppState, acting: &Acting<'_>, id: &str, link: &str) -> Result<(), ApiError> {
    let mut target = format!("environment {id}");
    let revoked = async {
        acting.allowed.clone()?;
        let (env, _) = managed(app, id).await?;
        target = format!("{}/{}#{}", env.repo_owner, env.repo_name, env.pr_number);
        (acting.may_act_on)(&env)?;
        let missing = || ApiError::not_found(format!("environment {id} has no unrevoked share link {link}"));
        let link: i64 = link.parse().map_err(|_| missing())?;
        if app.store.revoke_share_link(env.id, link).await? { Ok(()) } else { Err(missing()) }
    }
    .await;
    audit(app, acting, "share_link.revoke", id, &target, Some(&format!("link={link}")), &revoked).await;
    revoked
}

/// Audits `action` on environment `id` (as asked) for `acting`, and its result.
async fn audit<T>(
    app: &AppState,
    acting: &Acting<'_>,
    action: &str,
    id: &str,
    target: &str,
    detail: Option<&str>,
    result: &Result<T, ApiError>,
) {
    let outcome = super::audit::outcome(result);
    let entry = NewAuditEntry {
        actor: &acting.audit_actor,
        action,
        environment_id: id.parse().ok(),
        target,
        detail,
        outcome: &outcome,
        remote: acting.remote,
    };
    super::audit::write(app, &entry).await;
}
