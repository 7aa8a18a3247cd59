//! The dashboard's sessions: who signed in with GitHub, until when, and which repositories they
//! may see and act on, as GitHub said when they signed in (or at the last refresh).
//!
//! A session's secret is the cookie; like an API token's, only its SHA-256 is stored, and it is
//! found by an index probe on that digest, so no secret bytes are compared in code. The person's
//! GitHub token is never stored.

use super::{Store, StoreError, begin_write, with_pool};
use crate::time::{Millis, now_ms};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// A signed-in person.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionRecord {
    pub id: i64,
    pub login: String,
    /// Sees the platform page (setting `dashboard.admins`).
    pub is_admin: bool,
    /// Sent back with every form: a page of another site cannot know it.
    pub csrf_token: String,
    pub created_at: Millis,
    pub expires_at: Millis,
    /// When [`SessionRepository`]s were last asked of GitHub.
    pub repositories_checked_at: Millis,
}

/// A repository a signed-in person may read, and whether they may write to it (act on its
/// environments, as `/preview` commands need).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionRepository {
    pub repo_id: i64,
    pub can_write: bool,
}

pub(super) fn digest(secret: &str) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(secret.as_bytes()))
}

/// 256 random bits, base64url.
pub(super) fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    data_encoding::BASE64URL_NOPAD.encode(&bytes)
}

/// Records `$repositories` for session `$session` inside transaction `$tx` (either backend).
macro_rules! insert_repositories {
    ($tx:ident, $session:expr, $repositories:expr) => {
        for repository in $repositories {
            sqlx::query("INSERT INTO session_repositories (session_id, repo_id, can_write) VALUES ($1, $2, $3)")
                .bind($session)
                .bind(repository.repo_id)
                .bind(repository.can_write)
                .execute(&mut *$tx)
                .await
                .map_err(StoreError::query("recording a session's repositories"))?;
        }
    };
}

const SESSION_COLUMNS: &str = "id, login, is_admin, csrf_token, created_at, expires_at, repositories_checked_at";

impl Store {
    /// Starts a session for `login` until `expires_at` with what GitHub said they may see; the
    /// cookie's secret is returned once and never stored.
    pub async fn create_session(
        &self,
        login: &str,
        is_admin: bool,
        expires_at: Millis,
        repositories: &[SessionRepository],
    ) -> Result<(SessionRecord, SecretString), StoreError> {
        let secret = random_secret();
        let now = now_ms();
        macro_rules! create {
            ($kind:tt $pool:expr) => {{
                let mut tx = begin_write!($kind $pool, "starting a session")?;
                let record: SessionRecord = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO sessions (secret_hash, login, is_admin, csrf_token, created_at, expires_at, \
                        repositories_checked_at) VALUES ($1, $2, $3, $4, $5, $6, $5) RETURNING {SESSION_COLUMNS}"
                )))
                .bind(digest(&secret))
                .bind(login)
                .bind(is_admin)
                .bind(random_secret())
                .bind(now)
                .bind(expires_at)
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::query("starting a session"))?;
                insert_repositories!(tx, record.id, repositories);
                tx.commit().await.map_err(StoreError::query("starting a session"))?;
                Ok((record, SecretString::from(secret)))
            }};
        }
        match &self.backend {
            super::Backend::Sqlite(pool) => create!(sqlite pool),
            super::Backend::Postgres(pool) => create!(postgres pool),
        }
    }

    /// The unexpired session whose cookie is `secret`.
    pub async fn session(&self, secret: &SecretString) -> Result<Option<SessionRecord>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE secret_hash = $1 AND expires_at > $2"
        )))
        .bind(digest(secret.expose_secret()))
        .bind(now_ms())
        .fetch_optional(pool)
        .await
        .map_err(StoreError::query("reading a session")))
    }

    /// Whether session `id` still holds (not ended, not expired).
    pub async fn session_is_live(&self, id: i64) -> Result<bool, StoreError> {
        let found: Option<i64> = with_pool!(self, pool => sqlx::query_scalar(
            "SELECT id FROM sessions WHERE id = $1 AND expires_at > $2",
        )
        .bind(id)
        .bind(now_ms())
        .fetch_optional(pool)
        .await
        .map_err(StoreError::query("reading a session")))?;
        Ok(found.is_some())
    }

    /// The repositories of session `id`.
    pub async fn session_repositories(&self, id: i64) -> Result<Vec<SessionRepository>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(
            "SELECT repo_id, can_write FROM session_repositories WHERE session_id = $1 ORDER BY repo_id",
        )
        .bind(id)
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("reading a session's repositories")))
    }

    /// Replaces session `id`'s repositories with what GitHub says now.
    pub async fn refresh_session_repositories(
        &self,
        id: i64,
        repositories: &[SessionRepository],
    ) -> Result<(), StoreError> {
        macro_rules! refresh {
            ($kind:tt $pool:expr) => {{
                let mut tx = begin_write!($kind $pool, "refreshing a session")?;
                sqlx::query("DELETE FROM session_repositories WHERE session_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::query("refreshing a session's repositories"))?;
                insert_repositories!(tx, id, repositories);
                sqlx::query("UPDATE sessions SET repositories_checked_at = $1 WHERE id = $2")
                    .bind(now_ms())
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::query("refreshing a session"))?;
                tx.commit().await.map_err(StoreError::query("refreshing a session"))?;
                Ok(())
            }};
        }
        match &self.backend {
            super::Backend::Sqlite(pool) => refresh!(sqlite pool),
            super::Backend::Postgres(pool) => refresh!(postgres pool),
        }
    }

    /// Ends the session whose cookie is `secret` (signing out); `false` if there was none.
    pub async fn end_session(&self, secret: &SecretString) -> Result<bool, StoreError> {
        let deleted = with_pool!(self, pool => sqlx::query("DELETE FROM sessions WHERE secret_hash = $1")
            .bind(digest(secret.expose_secret()))
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
            .map_err(StoreError::query("ending a session")))?;
        Ok(deleted > 0)
    }
}
