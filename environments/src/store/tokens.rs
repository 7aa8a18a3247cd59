//! Admin API bearer tokens. A token is `pvd_` and 43 base64url characters (256 random bits);
//! the store keeps only its SHA-256, so a copy of the database grants nothing. Lookups are by
//! the digest (an index probe), so no comparison of secret bytes happens in code at all.

use super::{Store, StoreError, with_pool};
use crate::time::{Millis, now_ms};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::fmt;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenScope {
    /// Read environments, usage and limits.
    Read,
    /// Also act (extend, redeploy, destroy) and read the audit log.
    Admin,
}

impl TokenScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Read, Self::Admin].into_iter().find(|s| s.as_str() == text)
    }

    /// Whether a token of this scope may do what `needed` asks for.
    pub fn allows(self, needed: TokenScope) -> bool {
        self == Self::Admin || needed == Self::Read
    }
}

impl fmt::Display for TokenScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: i64,
    pub name: String,
    pub scope: TokenScope,
    pub created_at: Millis,
    pub last_used_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: i64,
    name: String,
    scope: String,
    created_at: Millis,
    last_used_at: Option<Millis>,
    revoked_at: Option<Millis>,
}

impl TryFrom<TokenRow> for TokenRecord {
    type Error = StoreError;

    fn try_from(row: TokenRow) -> Result<Self, StoreError> {
        let scope = TokenScope::parse(&row.scope)
            .ok_or_else(|| StoreError::Corrupt(format!("token {} has unknown scope `{}`", row.id, row.scope)))?;
        Ok(TokenRecord {
            id: row.id,
            name: row.name,
            scope,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            revoked_at: row.revoked_at,
        })
    }
}

/// Why a token could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("a token named `{0}` exists; revoke it first or choose another name")]
    NameTaken(String),
    #[error("token names are 1 to 64 characters of letters, digits, `-`, `_` and `.`")]
    BadName,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The prefix every token starts with, so that secret scanners (and people) recognise one.
pub const TOKEN_PREFIX: &str = "pvd_";

/// How often a token's `last_used_at` is written at most: a write per request would cost every
/// read a transaction.
const LAST_USED_GRANULARITY: Millis = 60_000;

fn digest(token: &str) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(token.as_bytes()))
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

const TOKEN_COLUMNS: &str = "id, name, scope, created_at, last_used_at, revoked_at";

impl Store {
    /// Creates a token: the secret is returned once and never stored.
    pub async fn create_token(&self, name: &str, scope: TokenScope) -> Result<(TokenRecord, SecretString), TokenError> {
        if !valid_name(name) {
            return Err(TokenError::BadName);
        }
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        let token = format!("{TOKEN_PREFIX}{}", data_encoding::BASE64URL_NOPAD.encode(&bytes));
        let row: Result<TokenRow, sqlx::Error> = with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO api_tokens (name, scope, token_hash, created_at) VALUES ($1, $2, $3, $4) \
             RETURNING {TOKEN_COLUMNS}"
        )))
        .bind(name)
        .bind(scope.as_str())
        .bind(digest(&token))
        .bind(now_ms())
        .fetch_one(pool)
        .await);
        match row {
            Ok(row) => Ok((row.try_into()?, SecretString::from(token))),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(TokenError::NameTaken(name.to_owned())),
            Err(e) => Err(StoreError::Query { op: "creating a token", source: e }.into()),
        }
    }

    /// The live (not revoked) token whose secret is `token`, marking it used.
    pub async fn authenticate(&self, token: &SecretString) -> Result<Option<TokenRecord>, StoreError> {
        let token = token.expose_secret();
        if !token.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let row: Option<TokenRow> = with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL"
        )))
        .bind(digest(token))
        .fetch_optional(pool)
        .await
        .map_err(StoreError::query("checking a token"))?);
        let Some(record) = row.map(TokenRecord::try_from).transpose()? else {
            return Ok(None);
        };
        let now = now_ms();
        if record.last_used_at.is_none_or(|at| now - at >= LAST_USED_GRANULARITY) {
            with_pool!(self, pool => sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(record.id)
                .execute(pool)
                .await
                .map(drop)
                .map_err(StoreError::query("recording a token's use"))?);
        }
        Ok(Some(record))
    }

    /// Every token, live and revoked, oldest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows: Vec<TokenRow> = with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY id"
        )))
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("listing tokens"))?);
        rows.into_iter().map(TokenRecord::try_from).collect()
    }

    /// Revokes the live token named `name`; `false` if there is none.
    pub async fn revoke_token(&self, name: &str) -> Result<bool, StoreError> {
        let done = with_pool!(self, pool => sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(name)
        .execute(pool)
        .await
        .map_err(StoreError::query("revoking a token"))?
        .rows_affected());
        Ok(done > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_allow_what_they_say() {
        assert!(TokenScope::Admin.allows(TokenScope::Admin));
        assert!(TokenScope::Admin.allows(TokenScope::Read));
        assert!(TokenScope::Read.allows(TokenScope::Read));
        assert!(!TokenScope::Read.allows(TokenScope::Admin));
    }

    #[test]
    fn names_are_short_and_plain() {
        assert!(valid_name("ci-bot_1.prod"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"a".repeat(65)));
        assert!(!valid_name("a b"));
        assert!(!valid_name("ä"));
    }
}
