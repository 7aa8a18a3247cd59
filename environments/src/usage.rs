//! Usage: environment-hours and requested CPU- and memory-hours per repository or owner over
//! a period, computed from the stored transitions alone (each row carries the requests in
//! effect from that moment), so the same period always gives the same figures.
//!
//! An environment counts while it is `Provisioning`, `Ready`, `Failed` or `Deleting`: its
//! namespace exists then (or is being made or removed). `Pending` does not count: a new
//! environment waits there (for a slot, for checks) before anything runs, and a redeploy passes
//! through it for moments.

use crate::model::EnvironmentState;
use crate::time::Millis;
use std::collections::{BTreeMap, BTreeSet};

/// How usage is grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Repository,
    Owner,
}

/// One stored transition, as usage reads it (rows of one environment in order).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UsageRow {
    pub environment_id: i64,
    pub repo_owner: String,
    pub repo_name: String,
    pub to_state: String,
    pub at: Millis,
    pub requests_cpu_millis: Option<i64>,
    pub requests_memory_bytes: Option<i64>,
}

/// The figures of one group.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub environments: u64,
    pub environment_hours: f64,
    pub cpu_hours: f64,
    pub memory_gib_hours: f64,
}

const HOUR_MS: f64 = 3_600_000.0;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Whether an environment in `state` holds cluster resources, for usage.
pub fn counts(state: &str) -> bool {
    matches!(
        EnvironmentState::parse(state),
        Some(
            EnvironmentState::Provisioning
                | EnvironmentState::Ready
                | EnvironmentState::Failed
                | EnvironmentState::Deleting
        )
    )
}

/// Sums usage over `[from, to)` from `rows`, ordered by environment then time. The last row of
/// an environment lasts until `to`.
pub fn totals(rows: &[UsageRow], from: Millis, to: Millis, group_by: GroupBy) -> BTreeMap<String, Totals> {
    let mut groups: BTreeMap<String, (Totals, BTreeSet<i64>)> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        let next = rows.get(i + 1).filter(|next| next.environment_id == row.environment_id);
        let (start, end) = (row.at.max(from), next.map_or(to, |next| next.at).min(to));
        if !counts(&row.to_state) || end <= start {
            continue;
        }
        let key = match group_by {
            GroupBy::Repository => format!("{}/{}", row.repo_owner, row.repo_name),
            GroupBy::Owner => row.repo_owner.clone(),
        };
        let hours = (end - start) as f64 / HOUR_MS;
        let (group, environments) = groups.entry(key).or_default();
        group.environment_hours += hours;
        group.cpu_hours += hours * row.requests_cpu_millis.unwrap_or(0) as f64 / 1000.0;
        group.memory_gib_hours += hours * row.requests_memory_bytes.unwrap_or(0) as f64 / GIB;
        environments.insert(row.environment_id);
    }
    groups
        .into_iter()
        .map(|(key, (totals, environments))| (key, Totals { environments: environments.len() as u64, ..totals }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Millis = 3_600_000;
    const GI: i64 = 1 << 30;

    fn row(env: i64, repo: &str, state: &str, at: Millis, cpu: i64, memory: i64) -> UsageRow {
        UsageRow {
            environment_id: env,
            repo_owner: "acme".into(),
            repo_name: repo.into(),
            to_state: state.into(),
            at,
            requests_cpu_millis: Some(cpu),
            requests_memory_bytes: Some(memory),
        }
    }

    #[test]
    fn hours_in_resource_holding_states_times_the_requests_in_effect() {
        let rows = [
            // Env 1: waits 1 h, provisions 1 h, ready 2 h at 500m / 1 GiB, then 2 h at 1000m / 2 GiB, deleted.
            row(1, "web", "Pending", 0, 0, 0),
            row(1, "web", "Provisioning", H, 500, GI),
            row(1, "web", "Ready", 2 * H, 500, GI),
            row(1, "web", "Ready", 4 * H, 1000, 2 * GI),
            row(1, "web", "Deleted", 6 * H, 1000, 2 * GI),
            // Env 2: ready from 5 h on, still ready at the end.
            row(2, "api", "Ready", 5 * H, 250, GI / 2),
        ];
        let by_repo = totals(&rows, 0, 10 * H, GroupBy::Repository);
        let web = by_repo["acme/web"];
        assert_eq!(web.environments, 1);
        assert!((web.environment_hours - 5.0).abs() < 1e-9, "{web:?}");
        assert!((web.cpu_hours - (3.0 * 0.5 + 2.0 * 1.0)).abs() < 1e-9, "{web:?}");
        assert!((web.memory_gib_hours - (3.0 + 4.0)).abs() < 1e-9, "{web:?}");
        let api = by_repo["acme/api"];
        assert!((api.environment_hours - 5.0).abs() < 1e-9 && (api.cpu_hours - 1.25).abs() < 1e-9, "{api:?}");
        let by_owner = totals(&rows, 0, 10 * H, GroupBy::Owner);
        assert_eq!(by_owner["acme"].environments, 2);
        assert!((by_owner["acme"].environment_hours - 10.0).abs() < 1e-9);
    }

    #[test]
    fn the_period_clips_the_intervals() {
        let rows = [row(1, "web", "Ready", 0, 1000, GI), row(1, "web", "Deleted", 10 * H, 0, 0)];
        let t = totals(&rows, 4 * H, 6 * H, GroupBy::Repository)["acme/web"];
        assert!((t.environment_hours - 2.0).abs() < 1e-9 && (t.cpu_hours - 2.0).abs() < 1e-9, "{t:?}");
        assert!(totals(&rows, 11 * H, 12 * H, GroupBy::Repository).is_empty(), "nothing after the deletion");
    }
}
