//! What previewd has said on GitHub about each environment: the sticky comment, the
//! deployment and check run of the head SHA, and the last warning before expiry. Reports
//! compare against it to edit instead of duplicating and to skip calls that would change
//! nothing.

use super::{Store, StoreError, with_pool};

#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct ReportRecord {
    pub comment_id: Option<i64>,
    /// SHA-256 of the comment's last text.
    pub comment_digest: Option<String>,
    pub deployment_id: Option<i64>,
    pub deployment_sha: Option<String>,
    pub deployment_state: Option<String>,
    pub check_run_id: Option<i64>,
    pub check_run_sha: Option<String>,
    pub check_run_state: Option<String>,
    /// The `warned_at` of the environment whose warning comment was posted.
    pub warning_for: Option<i64>,
}

/// A deployment or check run: its id, the head SHA it belongs to and the last state sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportedObject {
    Deployment,
    CheckRun,
}

impl Store {
    /// The report state of environment `id` (empty if nothing was reported yet).
    pub async fn report_record(&self, id: i64) -> Result<ReportRecord, StoreError> {
        let row: Option<ReportRecord> = with_pool!(self, pool => sqlx::query_as(
            "SELECT comment_id, comment_digest, deployment_id, deployment_sha, deployment_state, \
             check_run_id, check_run_sha, check_run_state, warning_for FROM github_reports WHERE environment_id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::query("reading a report"))?);
        Ok(row.unwrap_or_default())
    }

    /// Records that the warning given at `warned_at` was posted.
    pub async fn save_warning(&self, id: i64, warned_at: i64) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query("UPDATE github_reports SET warning_for = $1 WHERE environment_id = $2")
            .bind(warned_at)
            .bind(id)
            .execute(pool)
            .await
            .map(drop)
            .map_err(StoreError::query("recording a warning comment")))
    }

    pub async fn save_comment(&self, id: i64, comment_id: i64, digest: &str) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query(
            "UPDATE github_reports SET comment_id = $1, comment_digest = $2 WHERE environment_id = $3",
        )
        .bind(comment_id)
        .bind(digest)
        .bind(id)
        .execute(pool)
        .await
        .map(drop)
        .map_err(StoreError::query("recording a comment")))
    }

    /// Records the deployment or check run `object_id` of `sha` and the state last sent for it.
    pub async fn save_reported(
        &self,
        id: i64,
        what: ReportedObject,
        object_id: i64,
        sha: &str,
        state: Option<&str>,
    ) -> Result<(), StoreError> {
        let sql = match what {
            ReportedObject::Deployment => {
                "UPDATE github_reports SET deployment_id = $1, deployment_sha = $2, deployment_state = $3 \
                 WHERE environment_id = $4"
            }
            ReportedObject::CheckRun => {
                "UPDATE github_reports SET check_run_id = $1, check_run_sha = $2, check_run_state = $3 \
                 WHERE environment_id = $4"
            }
        };
        with_pool!(self, pool => sqlx::query(sql)
            .bind(object_id)
            .bind(sha)
            .bind(state)
            .bind(id)
            .execute(pool)
            .await
            .map(drop)
            .map_err(StoreError::query("recording a deployment or check run")))
    }
}
