//! The audit log: every action taken through the admin API (and the token commands), with who
//! took it, from where, and how it ended. Written after the action's own transaction: an entry
//! says what happened, including refusals.

use super::{Store, StoreError, with_pool};
use crate::time::{Millis, now_ms};

/// One entry to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEntry<'a> {
    /// `token:<name>`, `cli`, ...
    pub actor: &'a str,
    /// `environment.extend`, `token.create`, ...
    pub action: &'a str,
    pub environment_id: Option<i64>,
    /// What was acted on, for people: `acme/web#12`, a token's name.
    pub target: &'a str,
    /// The action's arguments (`duration=2h`).
    pub detail: Option<&'a str>,
    /// `done`, or what refused it (`refused: the environment is not live`).
    pub outcome: &'a str,
    /// The peer address of the request, if it came over HTTP.
    pub remote: Option<&'a str>,
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at: Millis,
    pub actor: String,
    pub action: String,
    pub environment_id: Option<i64>,
    pub target: String,
    pub detail: Option<String>,
    pub outcome: String,
    pub remote: Option<String>,
}

impl Store {
    pub async fn audit(&self, entry: &NewAuditEntry<'_>) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query(
            "INSERT INTO audit_log (at, actor, action, environment_id, target, detail, outcome, remote) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(now_ms())
        .bind(entry.actor)
        .bind(entry.action)
        .bind(entry.environment_id)
        .bind(entry.target)
        .bind(entry.detail)
        .bind(entry.outcome)
        .bind(entry.remote)
        .execute(pool)
        .await
        .map(drop)
        .map_err(StoreError::query("writing the audit log")))
    }

    /// Entries newest first, `limit` of them, older than entry `before` when given.
    pub async fn audit_entries(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(
            "SELECT id, at, actor, action, environment_id, target, detail, outcome, remote FROM audit_log \
             WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("reading the audit log")))
    }
}
