//! `/platform`: the platform team's page (`dashboard.admins`, or an admin token): live counts
//! against each limit and the queue, usage per repository or owner over a chosen period as a
//! server-drawn bar chart, environments about to expire, and the failures of the last day by
//! cause. The figures are the admin API's (`api::usage`), so the two never disagree.

use super::{PageViewer, ViewerContext, dashboard};
use crate::http::AppState;
use crate::http::api::ApiError;
use crate::http::api::environments::EnvironmentView;
use crate::http::api::usage::{DAY_MS, LimitsAnswer, UsageGroup, report};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use previewd_environments::hints;
use previewd_environments::time::now_ms;
use previewd_environments::usage::GroupBy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The periods the page offers, in days.
const PERIODS: [i64; 4] = [1, 7, 30, 90];
/// "About to expire": within this.
const EXPIRING_MS: i64 = 2 * 3_600_000;
/// Rows of each list at most.
const ROWS: u32 = 50;

#[derive(Debug, Deserialize)]
pub(super) struct PlatformQuery {
    days: Option<i64>,
    group_by: Option<String>,
}

/// One bar of the usage chart: its group, figures and width (0–100, of the largest).
#[derive(Serialize)]
struct Bar {
    group: UsageGroup,
    width: f64,
    /// Its row's top in the SVG.
    y: u32,
}

/// Failures of one cause, with the most frequent reason as an example.
#[derive(Serialize)]
struct Failures {
    cause: String,
    count: i64,
    example: String,
    what_to_do: Option<&'static str>,
}

pub(super) async fn page(
    State(app): State<AppState>,
    PageViewer(viewer): PageViewer,
    Query(query): Query<PlatformQuery>,
) -> Result<Response, ApiError> {
    let dashboard = dashboard(&app)?;
    if !viewer.is_admin() {
        let why = "the platform page is for the platform team (setting dashboard.admins) and admin tokens";
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", why));
    }
    let days = query.days.unwrap_or(7);
    if !PERIODS.contains(&days) {
        return Err(ApiError::field(StatusCode::BAD_REQUEST, "days", "must be 1, 7, 30 or 90"));
    }
    let group_by = match query.group_by.as_deref().unwrap_or("repository") {
        "repository" => GroupBy::Repository,
        "owner" => GroupBy::Owner,
        _ => return Err(ApiError::field(StatusCode::BAD_REQUEST, "group_by", "must be `repository` or `owner`")),
    };
    let now = now_ms();
    let usage = report(&app, now - days * DAY_MS, now, group_by).await?;
    let largest = usage.groups.iter().map(|g| g.environment_hours).fold(0.0_f64, f64::max);
    let bars: Vec<Bar> = usage
        .groups
        .iter()
        .take(ROWS as usize)
        .zip(0_u32..)
        .map(|(g, i)| Bar {
            group: g.clone(),
            width: if largest > 0.0 { (g.environment_hours / largest * 100.0).max(0.5) } else { 0.0 },
            y: i * 28,
        })
        .collect();
    let expiring: Vec<EnvironmentView> =
        app.store.expiring_environments(now + EXPIRING_MS, ROWS).await?.into_iter().map(Into::into).collect();
    let mut by_cause: BTreeMap<String, Failures> = BTreeMap::new();
    for (reason, count) in app.store.failure_reasons(now - DAY_MS, 500).await? {
        let hint = hints::hint(&reason);
        let cause = hint.map_or("other", |h| h.cause).to_owned();
        let entry = by_cause.entry(cause.clone()).or_insert_with(|| Failures {
            cause,
            count: 0,
            example: reason.clone(),
            what_to_do: hint.map(|h| h.what_to_do),
        });
        entry.count += count;
    }
    let mut failures: Vec<Failures> = by_cause.into_values().collect();
    failures.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.cause.cmp(&b.cause)));
    #[derive(Serialize)]
    struct Context<'a> {
        viewer: ViewerContext<'a>,
        days: i64,
        periods: [i64; 4],
        group_by: &'a str,
        limits: &'a LimitsAnswer,
        bars: Vec<Bar>,
        chart_height: u32,
        more_groups: usize,
        expiring: Vec<EnvironmentView>,
        failures: Vec<Failures>,
    }
    let page = dashboard.render(
        "platform.html",
        Context {
            viewer: viewer.context(),
            days,
            periods: PERIODS,
            group_by: &usage.group_by,
            limits: &usage.limits,
            chart_height: u32::try_from(bars.len()).unwrap_or(0) * 28,
            more_groups: usage.groups.len().saturating_sub(bars.len()),
            bars,
            expiring,
            failures,
        },
    )?;
    Ok(page.into_response())
}
