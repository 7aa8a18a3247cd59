//! Share links: a URL that opens one environment's previews for someone outside GitHub until it
//! expires or is revoked. The secret is random (as API and bypass tokens are) and only its
//! SHA-256 is kept, found by an index probe on the digest.
//!
//! Why stored rather than signed with a key: a signed URL can only be withdrawn by rotating the
//! key, which withdraws every link at once; a stored one is revoked alone, lists who made it and
//! when it was last used, and needs no key distributed to every replica.

use super::sessions::{digest, random_secret};
use super::{Store, StoreError, with_pool};
use crate::time::{Millis, now_ms};
use secrecy::{ExposeSecret, SecretString};

/// The prefix of every share link's secret, so secret scanners (and people) recognise one.
pub const SHARE_PREFIX: &str = "pvs_";

/// A share link, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ShareLinkRecord {
    pub id: i64,
    pub environment_id: i64,
    /// `github:<login>` or `token:<name>`.
    pub created_by: String,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub last_used_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
}

impl ShareLinkRecord {
    /// Whether it opens its environment at `now`.
    pub fn is_live(&self, now: Millis) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

const SHARE_COLUMNS: &str = "id, environment_id, created_by, created_at, expires_at, last_used_at, revoked_at";

impl Store {
    /// Creates a share link to environment `environment`, open until `expires_at`: the secret is
    /// returned once and never stored.
    pub async fn create_share_link(
        &self,
        environment: i64,
        created_by: &str,
        expires_at: Millis,
    ) -> Result<(ShareLinkRecord, SecretString), StoreError> {
        let secret = format!("{SHARE_PREFIX}{}", random_secret());
        let row = with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO share_links (environment_id, secret_hash, created_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {SHARE_COLUMNS}"
        )))
        .bind(environment)
        .bind(digest(&secret))
        .bind(created_by)
        .bind(now_ms())
        .bind(expires_at)
        .fetch_one(pool)
        .await
        .map_err(StoreError::query("creating a share link"))?);
        Ok((row, SecretString::from(secret)))
    }

    /// Environment `environment`'s share links, newest first: live, expired and revoked (until
    /// retention removes them).
    pub async fn share_links(&self, environment: i64) -> Result<Vec<ShareLinkRecord>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SHARE_COLUMNS} FROM share_links WHERE environment_id = $1 ORDER BY id DESC"
        )))
        .bind(environment)
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("listing share links")))
    }

    /// Revokes environment `environment`'s share link `id`; `false` when it has no such link
    /// that is not revoked already.
    pub async fn revoke_share_link(&self, environment: i64, id: i64) -> Result<bool, StoreError> {
        let done = with_pool!(self, pool => sqlx::query(
            "UPDATE share_links SET revoked_at = $1 WHERE id = $2 AND environment_id = $3 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(id)
        .bind(environment)
        .execute(pool)
        .await
        .map_err(StoreError::query("revoking a share link"))?
        .rows_affected());
        Ok(done > 0)
    }

    /// The share link whose secret is `secret`, live or not (the caller says why one that is
    /// not opens nothing).
    pub async fn share_link(&self, secret: &SecretString) -> Result<Option<ShareLinkRecord>, StoreError> {
        let secret = secret.expose_secret();
        if !secret.starts_with(SHARE_PREFIX) {
            return Ok(None);
        }
        with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SHARE_COLUMNS} FROM share_links WHERE secret_hash = $1"
        )))
        .bind(digest(secret))
        .fetch_optional(pool)
        .await
        .map_err(StoreError::query("checking a share link")))
    }
}
