//! What GitHub says of a person signing in to the dashboard, asked with their user access token
//! (the App's user authorization): who they are, which repositories of the App's installations
//! they may read and write, and whether they belong to the organisations and teams the
//! settings name. The token is used for these calls only and then dropped: it is never stored.

use octocrab::Octocrab;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::time::Duration;

/// Repositories read at most per person (100 pages of 100): enough for any real organisation,
/// and a bound on the time a sign-in takes.
pub const MAX_REPOSITORIES: usize = 10_000;

/// A repository the person may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonRepository {
    pub id: i64,
    pub full_name: String,
    /// Push, maintain or admin: what `/preview` commands need too.
    pub can_write: bool,
}

/// Why GitHub could not tell who is signing in.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// GitHub answered with an error status.
    #[error("GitHub refused {call} ({status}): {message}")]
    Refused { call: String, status: u16, message: String },
    /// GitHub could not be reached, or did not answer in time.
    #[error("cannot reach GitHub for {call}: {message}")]
    Transport { call: String, message: String },
    #[error("GitHub's answer to {call} cannot be read: {message}")]
    Decode { call: String, message: String },
}

impl UserError {
    /// Worth trying again in a moment (GitHub unreachable or failing, or rate limiting).
    pub fn is_transient(&self) -> bool {
        match self {
            UserError::Refused { status, .. } => *status == 429 || *status == 403 || *status >= 500,
            UserError::Transport { .. } => true,
            UserError::Decode { .. } => false,
        }
    }
}

/// A person's view of GitHub, through their token.
pub struct UserClient {
    client: Octocrab,
}

#[derive(Deserialize)]
struct User {
    login: String,
}

#[derive(Deserialize)]
struct Installations {
    installations: Vec<Installation>,
}

#[derive(Deserialize)]
struct Installation {
    id: i64,
}

#[derive(Deserialize)]
struct Repositories {
    repositories: Vec<Repository>,
}

#[derive(Deserialize)]
struct Repository {
    id: i64,
    full_name: String,
    #[serde(default)]
    permissions: Permissions,
}

#[derive(Deserialize, Default)]
struct Permissions {
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    maintain: bool,
    #[serde(default)]
    push: bool,
}

#[derive(Deserialize)]
struct Membership {
    state: String,
}

impl UserClient {
    /// A client of `api_url` acting as the holder of `token`.
    pub fn new(api_url: &str, token: &SecretString, timeout: Duration) -> Result<UserClient, UserError> {
        let transport = |message: String| UserError::Transport { call: "setting up".to_owned(), message };
        let client = Octocrab::builder()
            .base_uri(api_url)
            .map_err(|e| transport(e.to_string()))?
            .set_connect_timeout(Some(timeout))
            .set_read_timeout(Some(timeout))
            .user_access_token(token.expose_secret().to_owned())
            .build()
            .map_err(|e| transport(e.to_string()))?;
        Ok(UserClient { client })
    }

    async fn get<T: for<'de> Deserialize<'de>>(&self, call: &str) -> Result<T, UserError> {
        self.client.get(call, None::<&()>).await.map_err(|error| match error {
            octocrab::Error::GitHub { source, .. } => UserError::Refused {
                call: call.to_owned(),
                status: source.status_code.as_u16(),
                message: source.message,
            },
            octocrab::Error::Serde { source, .. } => {
                UserError::Decode { call: call.to_owned(), message: source.to_string() }
            }
            octocrab::Error::Json { source, .. } => {
                UserError::Decode { call: call.to_owned(), message: source.to_string() }
            }
            other => UserError::Transport { call: call.to_owned(), message: crate::outbound::error_chain(&other) },
        })
    }

    /// The person's login.
    pub async fn login(&self) -> Result<String, UserError> {
        Ok(self.get::<User>("/user").await?.login)
    }

    /// The repositories of the App's installations the person may read, up to
    /// [`MAX_REPOSITORIES`] (a warning names the person when there are more).
    pub async fn repositories(&self, login: &str) -> Result<Vec<PersonRepository>, UserError> {
        let mut all = Vec::new();
        let mut installations = Vec::new();
        for page in 1.. {
            let batch: Installations = self.get(&format!("/user/installations?per_page=100&page={page}")).await?;
            let full = batch.installations.len() == 100;
            installations.extend(batch.installations.into_iter().map(|i| i.id));
            if !full || page >= 100 {
                break;
            }
        }
        for installation in installations {
            for page in 1.. {
                let call = format!("/user/installations/{installation}/repositories?per_page=100&page={page}");
                let batch: Repositories = self.get(&call).await?;
                let full = batch.repositories.len() == 100;
                all.extend(batch.repositories.into_iter().map(|r| PersonRepository {
                    id: r.id,
                    full_name: r.full_name,
                    can_write: r.permissions.push || r.permissions.maintain || r.permissions.admin,
                }));
                if all.len() >= MAX_REPOSITORIES {
                    tracing::warn!(
                        login,
                        limit = MAX_REPOSITORIES,
                        "a person may read more repositories than the dashboard reads; the rest are not shown to them"
                    );
                    all.truncate(MAX_REPOSITORIES);
                    return Ok(all);
                }
                if !full {
                    break;
                }
            }
        }
        Ok(all)
    }

    /// Whether the person is an active member of organisation `org`.
    pub async fn in_org(&self, org: &str) -> Result<bool, UserError> {
        self.active(&format!("/user/memberships/orgs/{org}")).await
    }

    /// Whether `login` is an active member of team `org/team`.
    pub async fn in_team(&self, org: &str, team: &str, login: &str) -> Result<bool, UserError> {
        self.active(&format!("/orgs/{org}/teams/{team}/memberships/{login}")).await
    }

    /// A membership's answer: active, or not a member (GitHub answers 404, or 403 when the
    /// person may not see the organisation's members).
    async fn active(&self, call: &str) -> Result<bool, UserError> {
        match self.get::<Membership>(call).await {
            Ok(membership) => Ok(membership.state == "active"),
            Err(UserError::Refused { status: 403 | 404, .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }
}
