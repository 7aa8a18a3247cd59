//! `GET /api/v1/usage` and `GET /api/v1/limits`: what the fleet costs, and how full it is.

use super::{ApiError, Caller};
use crate::http::AppState;
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use previewd_environments::store::{JobState, TokenScope};
use previewd_environments::time::{now_ms, parse_rfc3339, rfc3339};
use previewd_environments::usage::{self, GroupBy};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The longest period one usage answer covers.
const MAX_PERIOD_DAYS: i64 = 400;
pub(crate) const DAY_MS: i64 = 86_400_000;

/// Usage of one repository or owner.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageGroup {
    /// `owner/name` or `owner`.
    pub key: String,
    /// Environments that held resources at some time in the period.
    pub environments: u64,
    pub environment_hours: f64,
    /// Requested CPU (cores) times hours.
    pub cpu_hours: f64,
    /// Requested memory (GiB) times hours.
    pub memory_gib_hours: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageAnswer {
    pub from: String,
    pub to: String,
    /// `repository` or `owner`.
    pub group_by: String,
    /// Largest environment-hours first.
    pub groups: Vec<UsageGroup>,
    pub limits: LimitsAnswer,
}

/// Environment-hours and requested CPU- and memory-hours per repository or owner.
#[utoipa::path(get, path = "/api/v1/usage", operation_id = "getUsage", tag = "fleet", security(("bearer" = [])),
    params(
        ("from" = Option<String>, Query, description = "RFC 3339 UTC; default 30 days before `to`"),
        ("to" = Option<String>, Query, description = "RFC 3339 UTC; default now"),
        ("group_by" = Option<String>, Query, description = "`repository` (default) or `owner`"),
    ),
    responses(
        (status = 200, description = "Usage and the limits now", body = UsageAnswer),
        (status = 422, description = "`from` is not before `to`, or the period is too long", body = ApiError),
        (status = 400, description = "A parameter cannot be used; the message names it", body = ApiError),
        (status = 401, description = "No token, or an unknown or revoked one", body = ApiError),
        (status = 403, description = "The token's scope does not allow this", body = ApiError),
        (status = 503, description = "The database is not answering", body = ApiError)
    ))]
pub async fn usage(
    State(app): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<UsageAnswer>, ApiError> {
    caller.require(TokenScope::Read)?;
    let now = now_ms();
    let (mut from, mut to, mut group_by) = (None, None, GroupBy::Repository);
    for (key, value) in form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes()) {
        let bad = |problem: &str| ApiError::field(StatusCode::BAD_REQUEST, &key, problem);
        let time = || parse_rfc3339(&value).map_err(|_| bad("must be an RFC 3339 UTC time like 2026-12-07T05:30:00Z"));
        match &*key {
            "from" => from = Some(time()?),
            "to" => to = Some(time()?),
            "group_by" => {
                group_by = match &*value {
                    "repository" => GroupBy::Repository,
                    "owner" => GroupBy::Owner,
                    _ => return Err(bad("must be `repository` or `owner`")),
                }
            }
            _ => return Err(bad("is not a parameter of this endpoint")),
        }
    }
    let to = to.unwrap_or(now);
    let from = from.unwrap_or(to - 30 * DAY_MS);
    if from >= to {
        return Err(ApiError::field(StatusCode::UNPROCESSABLE_ENTITY, "from", "must be before `to`"));
    }
    if to - from > MAX_PERIOD_DAYS * DAY_MS {
        return Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "from",
            format!("the period may be at most {MAX_PERIOD_DAYS} days"),
        ));
    }
    Ok(Json(report(&app, from, to, group_by).await?))
}

/// Usage over `[from, to)` per group, and the limits now: the API's answer, and the dashboard's
/// platform page.
pub(crate) async fn report(app: &AppState, from: i64, to: i64, group_by: GroupBy) -> Result<UsageAnswer, ApiError> {
    let rows = app.store.usage_rows(from, to).await?;
    let mut groups: Vec<UsageGroup> = usage::totals(&rows, from, to, group_by)
        .into_iter()
        .map(|(key, t)| UsageGroup {
            key,
            environments: t.environments,
            environment_hours: t.environment_hours,
            cpu_hours: t.cpu_hours,
            memory_gib_hours: t.memory_gib_hours,
        })
        .collect();
    groups.sort_by(|a, b| b.environment_hours.total_cmp(&a.environment_hours).then_with(|| a.key.cmp(&b.key)));
    Ok(UsageAnswer {
        from: rfc3339(from),
        to: rfc3339(to),
        group_by: match group_by {
            GroupBy::Repository => "repository".into(),
            GroupBy::Owner => "owner".into(),
        },
        groups,
        limits: limits_now(app).await?,
    })
}

/// A count against its limit (`null` without a policy).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Count {
    /// `owner/name`, `owner`, or `global`.
    pub scope: String,
    /// Environments holding an admission slot.
    pub live: i64,
    pub limit: Option<u32>,
    /// Environments waiting for a slot (`when_full: queue`).
    pub waiting: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LimitsAnswer {
    pub global: Count,
    pub owners: Vec<Count>,
    pub repositories: Vec<Count>,
    /// `reject` or `queue` (`null` without a policy).
    pub when_full: Option<String>,
    /// Jobs queued and not yet run.
    pub queued_jobs: i64,
}

/// Live environments against each limit, waiters, and the job queue.
#[utoipa::path(get, path = "/api/v1/limits", operation_id = "getLimits", tag = "fleet", security(("bearer" = [])),
    responses(
        (status = 200, description = "The counts", body = LimitsAnswer),
        (status = 400, description = "A parameter cannot be used; the message names it", body = ApiError),
        (status = 401, description = "No token, or an unknown or revoked one", body = ApiError),
        (status = 403, description = "The token's scope does not allow this", body = ApiError),
        (status = 503, description = "The database is not answering", body = ApiError)
    ))]
pub async fn limits(State(app): State<AppState>, caller: Caller) -> Result<Json<LimitsAnswer>, ApiError> {
    caller.require(TokenScope::Read)?;
    Ok(Json(limits_now(&app).await?))
}

pub(crate) async fn limits_now(app: &AppState) -> Result<LimitsAnswer, ApiError> {
    let slots = app.store.slots().await?;
    let policy = app.engine.as_ref().map(|engine| &engine.policy);
    let mut owners: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut repositories = Vec::new();
    for s in &slots {
        let owner = owners.entry(s.repo_owner.to_lowercase()).or_default();
        owner.0 += s.held;
        owner.1 += s.waiting;
        repositories.push(Count {
            scope: format!("{}/{}", s.repo_owner, s.repo_name),
            live: s.held,
            limit: policy.map(|p| p.for_repository(&s.repo_owner, &s.repo_name).limits.per_repository),
            waiting: s.waiting,
        });
    }
    let queued_jobs =
        app.store.job_counts().await?.into_iter().find(|(state, _)| *state == JobState::Queued).map_or(0, |(_, n)| n);
    Ok(LimitsAnswer {
        global: Count {
            scope: "global".into(),
            live: slots.iter().map(|s| s.held).sum(),
            limit: policy.map(|p| p.limits.global),
            waiting: slots.iter().map(|s| s.waiting).sum(),
        },
        owners: owners
            .into_iter()
            .map(|(owner, (live, waiting))| Count {
                scope: owner,
                live,
                limit: policy.map(|p| p.limits.per_organization),
                waiting,
            })
            .collect(),
        repositories,
        when_full: policy.map(|p| {
            serde_json::to_value(p.limits.when_full)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        }),
        queued_jobs,
    })
}
