//! What the forward-authentication endpoint reads and writes: the environments behind preview
//! hosts, repositories' visibility, the preview cookie of a session, bypass tokens, and visits.
//!
//! Every secret here is kept as its SHA-256 only and found by an index probe on the digest, as
//! API tokens and sessions are: no secret bytes are compared in code.

use super::sessions::{digest, random_secret};
use super::{Store, StoreError, with_pool};
use crate::model::RepoId;
use crate::time::{Millis, now_ms};
use secrecy::{ExposeSecret, SecretString};

/// The prefix of every bypass token, so secret scanners (and people) recognise one.
pub const BYPASS_PREFIX: &str = "pvb_";

/// A live environment as the forward-authentication endpoint decides on it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct GateRecord {
    pub id: i64,
    pub repo_id: i64,
    pub repo_owner: String,
    pub repo_name: String,
    pub state: String,
    /// The namespace, which is also its first host's label.
    pub name: Option<String>,
    pub url: Option<String>,
    /// JSON, as [`super::service_urls`] reads it.
    pub service_urls: Option<String>,
    /// The repository's visibility; `None` until a delivery said.
    pub private: Option<bool>,
    /// Scaled to zero: Sleeping, or waking.
    pub asleep: bool,
}

const GATE_COLUMNS: &str =
    "e.id, e.repo_id, e.repo_owner, e.repo_name, e.state, e.name, e.url, e.service_urls, r.private, e.asleep";

/// What visits used, by id, for [`Store::record_visits`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Visited {
    pub environments: Vec<i64>,
    pub bypass_tokens: Vec<i64>,
    pub share_links: Vec<i64>,
}

impl Visited {
    pub fn is_empty(&self) -> bool {
        self.environments.is_empty() && self.bypass_tokens.is_empty() && self.share_links.is_empty()
    }
}

/// A bypass token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BypassTokenRecord {
    pub id: i64,
    pub repo_id: i64,
    pub name: String,
    pub created_by: String,
    pub created_at: Millis,
    pub last_used_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
}

const BYPASS_COLUMNS: &str = "id, repo_id, name, created_by, created_at, last_used_at, revoked_at";

/// Why a bypass token could not be created.
#[derive(Debug, thiserror::Error)]
pub enum BypassTokenError {
    #[error("the repository has a bypass token named `{0}`; revoke it first or choose another name")]
    NameTaken(String),
    #[error("bypass token names are 1 to 64 characters of letters, digits, `-`, `_` and `.`")]
    BadName,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Records the repository's visibility, as a delivery says.
    pub async fn set_repository_private(&self, repo: RepoId, private: bool) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query("UPDATE repositories SET private = $1 WHERE repo_id = $2")
            .bind(private)
            .bind(repo.0)
            .execute(pool)
            .await
            .map(drop)
            .map_err(StoreError::query("recording a repository's visibility")))
    }

    /// Every environment with a name (its first host) that is not gone: what the host index is
    /// built from.
    pub async fn gate_records(&self) -> Result<Vec<GateRecord>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {GATE_COLUMNS} FROM environments e LEFT JOIN repositories r ON r.repo_id = e.repo_id \
             WHERE e.name IS NOT NULL AND e.state NOT IN ('Deleted', 'Rejected')"
        )))
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("listing the environments behind preview hosts")))
    }

    /// Environment `id` as it stands now.
    pub async fn gate_record(&self, id: i64) -> Result<Option<GateRecord>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {GATE_COLUMNS} FROM environments e LEFT JOIN repositories r ON r.repo_id = e.repo_id \
             WHERE e.id = $1"
        )))
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::query("reading the environment behind a preview host")))
    }

    /// Gives session `id` a new preview secret (the preview cookie), replacing any before; it is
    /// returned once and never stored.
    pub async fn issue_preview_secret(&self, id: i64) -> Result<SecretString, StoreError> {
        let secret = random_secret();
        with_pool!(self, pool => sqlx::query("UPDATE sessions SET preview_secret_hash = $1 WHERE id = $2")
            .bind(digest(&secret))
            .bind(id)
            .execute(pool)
            .await
            .map(drop)
            .map_err(StoreError::query("issuing a preview cookie"))?);
        Ok(SecretString::from(secret))
    }

    /// The unexpired session whose preview cookie is `secret`: its id and login.
    pub async fn preview_session(&self, secret: &SecretString) -> Result<Option<(i64, String)>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(
            "SELECT id, login FROM sessions WHERE preview_secret_hash = $1 AND expires_at > $2",
        )
        .bind(digest(secret.expose_secret()))
        .bind(now_ms())
        .fetch_optional(pool)
        .await
        .map_err(StoreError::query("reading a preview cookie's session")))
    }

    /// Whether session `id` may read repository `repo`, as GitHub said.
    pub async fn session_may_read(&self, id: i64, repo: i64) -> Result<bool, StoreError> {
        let found: Option<i64> = with_pool!(self, pool => sqlx::query_scalar(
            "SELECT repo_id FROM session_repositories WHERE session_id = $1 AND repo_id = $2",
        )
        .bind(id)
        .bind(repo)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::query("reading a session's repositories")))?;
        Ok(found.is_some())
    }

    /// Creates a bypass token for repository `repo`: the secret is returned once and never
    /// stored.
    pub async fn create_bypass_token(
        &self,
        repo: i64,
        name: &str,
        created_by: &str,
    ) -> Result<(BypassTokenRecord, SecretString), BypassTokenError> {
        if !((1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))) {
            return Err(BypassTokenError::BadName);
        }
        let token = format!("{BYPASS_PREFIX}{}", random_secret());
        let row: Result<BypassTokenRecord, sqlx::Error> = with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO bypass_tokens (repo_id, name, token_hash, created_by, created_at) VALUES ($1, $2, $3, $4, $5) \
             RETURNING {BYPASS_COLUMNS}"
        )))
        .bind(repo)
        .bind(name)
        .bind(digest(&token))
        .bind(created_by)
        .bind(now_ms())
        .fetch_one(pool)
        .await);
        match row {
            Ok(row) => Ok((row, SecretString::from(token))),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(BypassTokenError::NameTaken(name.to_owned()))
            }
            Err(e) => Err(StoreError::Query { op: "creating a bypass token", source: e }.into()),
        }
    }

    /// Repository `repo`'s bypass tokens, live and revoked, oldest first.
    pub async fn bypass_tokens(&self, repo: i64) -> Result<Vec<BypassTokenRecord>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {BYPASS_COLUMNS} FROM bypass_tokens WHERE repo_id = $1 ORDER BY id"
        )))
        .bind(repo)
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("listing bypass tokens")))
    }

    /// Revokes repository `repo`'s live bypass token `name`; `false` if there is none.
    pub async fn revoke_bypass_token(&self, repo: i64, name: &str) -> Result<bool, StoreError> {
        let done = with_pool!(self, pool => sqlx::query(
            "UPDATE bypass_tokens SET revoked_at = $1 WHERE repo_id = $2 AND name = $3 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(repo)
        .bind(name)
        .execute(pool)
        .await
        .map_err(StoreError::query("revoking a bypass token"))?
        .rows_affected());
        Ok(done > 0)
    }

    /// The live bypass token whose secret is `token`: (its id, its repository).
    pub async fn bypass_token(&self, token: &SecretString) -> Result<Option<(i64, i64)>, StoreError> {
        let token = token.expose_secret();
        if !token.starts_with(BYPASS_PREFIX) {
            return Ok(None);
        }
        with_pool!(self, pool => sqlx::query_as(
            "SELECT id, repo_id FROM bypass_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(digest(token))
        .fetch_optional(pool)
        .await
        .map_err(StoreError::query("checking a bypass token")))
    }

    /// Records visits let through at `at`: to the environments, with the bypass tokens and the
    /// share links of `visited`. One statement each, however many visits there were.
    pub async fn record_visits(&self, visited: &Visited, at: Millis) -> Result<(), StoreError> {
        for (table, column, ids) in [
            ("environments", "last_visit_at", &visited.environments),
            ("bypass_tokens", "last_used_at", &visited.bypass_tokens),
            ("share_links", "last_used_at", &visited.share_links),
        ] {
            if ids.is_empty() {
                continue;
            }
            let list: Vec<String> = ids.iter().map(i64::to_string).collect();
            // Integers only, formatted here: nothing from outside reaches the statement's text.
            let sql = format!("UPDATE {table} SET {column} = $1 WHERE id IN ({})", list.join(", "));
            with_pool!(self, pool => sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(at)
                .execute(pool)
                .await
                .map(drop)
                .map_err(StoreError::query("recording visits")))?;
        }
        Ok(())
    }
}
