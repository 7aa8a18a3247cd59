//! The dashboard's settings (`dashboard.*`), and the GitHub App's OAuth client it signs people
//! in with. Without `public_url` and the client there is no dashboard: its paths answer 404.

use super::{ConfigError, GitHubConfig};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

pub(super) const CLIENT_SECRET_ENV: &str = "PREVIEWD_GITHUB__CLIENT_SECRET";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardConfig {
    /// The address people open the dashboard at, like `https://previewd.example.com`: GitHub
    /// sends them back to `<public_url>/auth/callback` after sign-in (the App's "Callback URL"),
    /// and the session cookie is `Secure` when it is `https`.
    pub public_url: Option<String>,
    /// GitHub logins, or `org/team` slugs, who see the platform page.
    pub admins: Vec<String>,
    /// When not empty, only members of these organisations may sign in.
    pub allowed_orgs: Vec<String>,
    /// How long a sign-in lasts; GitHub's user tokens last 8 hours.
    pub session_hours: u64,
    /// How long what GitHub said a person may read and write is trusted before it is asked
    /// again.
    pub permissions_cache_seconds: u64,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            public_url: None,
            admins: Vec::new(),
            allowed_orgs: Vec::new(),
            session_hours: 8,
            permissions_cache_seconds: 300,
        }
    }
}

/// Everything the sign-in needs, once [`DashboardConfig::oauth`] found it complete.
#[derive(Debug, Clone)]
pub struct OAuthClient {
    pub client_id: String,
    pub client_secret: SecretString,
    /// GitHub's web root (where people sign in), without a trailing slash.
    pub web_url: String,
    /// The dashboard's root, without a trailing slash.
    pub public_url: String,
}

impl DashboardConfig {
    /// The sign-in's settings; `None` without a dashboard (no `public_url`); an error naming the
    /// setting when the dashboard is asked for but the App's client is incomplete.
    pub fn oauth(&self, github: &GitHubConfig) -> Result<Option<OAuthClient>, ConfigError> {
        let Some(public_url) = &self.public_url else { return Ok(None) };
        let invalid = |setting, env, problem: &str| ConfigError::Invalid { setting, env, problem: problem.to_owned() };
        let uri: http::Uri = public_url.parse().map_err(|_| {
            invalid(
                "dashboard.public_url",
                "PREVIEWD_DASHBOARD__PUBLIC_URL",
                "must be a URL like https://previewd.example.com",
            )
        })?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(invalid(
                "dashboard.public_url",
                "PREVIEWD_DASHBOARD__PUBLIC_URL",
                "must be a URL like https://previewd.example.com",
            ));
        }
        let client_id = github.client_id.clone().ok_or_else(|| {
            invalid(
                "github.client_id",
                "PREVIEWD_GITHUB__CLIENT_ID",
                "the dashboard (dashboard.public_url) signs people in with the GitHub App's client id",
            )
        })?;
        let client_secret = match (&github.client_secret, &github.client_secret_file) {
            (Some(secret), _) => secret.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|text| SecretString::from(text.trim().to_owned()))
                .map_err(|e| ConfigError::Invalid {
                    setting: "github.client_secret_file",
                    env: "PREVIEWD_GITHUB__CLIENT_SECRET_FILE",
                    problem: format!("cannot read {}: {e}", path.display()),
                })?,
            (None, None) => {
                return Err(invalid(
                    "github.client_secret_file",
                    CLIENT_SECRET_ENV,
                    "the dashboard (dashboard.public_url) needs one of the GitHub App's client secrets",
                ));
            }
        };
        Ok(Some(OAuthClient {
            client_id,
            client_secret,
            web_url: github.web_url.trim_end_matches('/').to_owned(),
            public_url: public_url.trim_end_matches('/').to_owned(),
        }))
    }
}
