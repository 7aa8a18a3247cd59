//! `GET /api/v1/audit`: who did what, newest first (admin tokens only).

use super::{ApiError, Caller, Page};
use crate::http::AppState;
use axum::Json;
use axum::extract::{RawQuery, State};
use previewd_environments::store::{AuditRecord, TokenScope};
use previewd_environments::time::rfc3339;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntryView {
    pub id: i64,
    pub at: String,
    /// `token:<name>` for the API, `cli` for the token commands.
    pub actor: String,
    pub action: String,
    pub environment_id: Option<i64>,
    pub target: String,
    pub detail: Option<String>,
    /// `done`, or `refused (<status>): <message>`.
    pub outcome: String,
    /// The peer address of the request.
    pub remote: Option<String>,
}

impl From<AuditRecord> for AuditEntryView {
    fn from(r: AuditRecord) -> Self {
        AuditEntryView {
            id: r.id,
            at: rfc3339(r.at),
            actor: r.actor,
            action: r.action,
            environment_id: r.environment_id,
            target: r.target,
            detail: r.detail,
            outcome: r.outcome,
            remote: r.remote,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntryView>,
    pub next_cursor: Option<String>,
}

/// The audit log, newest first.
#[utoipa::path(get, path = "/api/v1/audit", operation_id = "listAudit", tag = "audit", security(("bearer" = [])),
    params(
        ("limit" = Option<u32>, Query, description = "1 to 100 (default 100)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "One page", body = AuditPage),
        (status = 400, description = "A parameter cannot be used; the message names it", body = ApiError),
        (status = 401, description = "No token, or an unknown or revoked one", body = ApiError),
        (status = 403, description = "The token's scope does not allow this", body = ApiError),
        (status = 503, description = "The database is not answering", body = ApiError)
    ))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<AuditPage>, ApiError> {
    caller.require(TokenScope::Admin)?;
    let mut page = Page::default();
    for (key, value) in form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes()) {
        page.take(&key, &value)?;
    }
    let rows = app.store.audit_entries(page.before, page.limit + 1).await?;
    let (entries, next_cursor) = page.split(rows, |r| r.id);
    Ok(Json(AuditPage { entries: entries.into_iter().map(AuditEntryView::from).collect(), next_cursor }))
}

/// What the audit log says of `result`: `done`, or `refused (<status>): <message>`.
pub(crate) fn outcome<T>(result: &Result<T, ApiError>) -> String {
    match result {
        Ok(_) => "done".to_owned(),
        Err(error) => format!("refused ({}): {}", error.status.as_u16(), error.message),
    }
}

/// Writes `entry` to the audit log. What it records is done (or refused) whatever happens to the
/// entry, so a failure is not the caller's answer; it goes to the log with the entry, so the
/// record is not lost from sight.
pub(crate) async fn write(app: &AppState, entry: &previewd_environments::store::NewAuditEntry<'_>) {
    if let Err(error) = app.store.audit(entry).await {
        tracing::error!(%error, actor = entry.actor, action = entry.action, target = entry.target,
            outcome = entry.outcome, remote = entry.remote, "the audit log could not be written");
    }
}
