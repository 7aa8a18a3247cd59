//! The environment model: identifiers, states, and the events that change an environment's
//! desired state.
//!
//! Identifiers are newtypes so that a pull request number is never passed where a repository id
//! belongs. Events are previewd's own vocabulary; the service translates GitHub deliveries into
//! them at the edge.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A repository's GitHub id. Stable across renames and transfers, unlike `owner/name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RepoId(pub i64);

/// A pull request number within its repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PrNumber(pub i64);

/// A full 40-character commit SHA.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CommitSha(pub String);

/// A GitHub App installation id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstallationId(pub i64);

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
impl fmt::Display for PrNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
impl fmt::Display for CommitSha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
/// The first seven characters of a commit SHA, as GitHub shows commits to people.
pub fn short_sha(sha: &str) -> &str {
    sha.char_indices().nth(7).map_or(sha, |(end, _)| &sha[..end])
}

impl CommitSha {
    /// [`short_sha`] of this commit.
    pub fn short(&self) -> &str {
        short_sha(&self.0)
    }
}

impl fmt::Display for InstallationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A repository as previewd refers to it: the id is the key, owner and name are for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repo {
    pub id: RepoId,
    pub owner: String,
    pub name: String,
}

impl Repo {
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

/// The lifecycle of one environment. See DESIGN.md "Environment states".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EnvironmentState {
    Pending,
    Provisioning,
    Ready,
    /// Idle: its workloads scaled to zero until a visit, a push or a command wakes it.
    Sleeping,
    Failed,
    Deleting,
    Deleted,
    Rejected,
}

impl EnvironmentState {
    pub const ALL: [EnvironmentState; 8] = [
        Self::Pending,
        Self::Provisioning,
        Self::Ready,
        Self::Sleeping,
        Self::Failed,
        Self::Deleting,
        Self::Deleted,
        Self::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Provisioning => "Provisioning",
            Self::Ready => "Ready",
            Self::Sleeping => "Sleeping",
            Self::Failed => "Failed",
            Self::Deleting => "Deleting",
            Self::Deleted => "Deleted",
            Self::Rejected => "Rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// Live states hold (or are about to hold) cluster resources.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Pending | Self::Provisioning | Self::Ready | Self::Sleeping | Self::Failed)
    }

    /// Whether the state machine allows moving from `self` to `to`. Staying in the same state
    /// (a redeploy of a new head SHA, say) is always allowed.
    pub fn can_become(self, to: Self) -> bool {
        use EnvironmentState::*;
        if self == to {
            return true;
        }
        match (self, to) {
            // A reopened pull request, or a rejected one whose slot freed up, starts over.
            (Deleted | Rejected | Deleting, Pending) => true,
            (Pending, Provisioning) | (Pending | Deleted, Rejected) => true,
            // A configuration that cannot be rendered fails before provisioning starts; a
            // ready environment fails when repairing its drift fails.
            (Provisioning | Pending | Ready, Failed) | (Provisioning, Ready) => true,
            // A new head SHA makes a provisioned (or provisioning) environment wait for the
            // reconciler again; a reconcile may also retry a failed one directly.
            (Provisioning | Ready | Failed, Pending) | (Ready | Failed, Provisioning) => true,
            // Idle, it sleeps; a push or a wake starts it again from Pending.
            (Ready, Sleeping) | (Sleeping, Pending) => true,
            (Pending | Provisioning | Ready | Sleeping | Failed | Rejected, Deleting) => true,
            (Deleting, Deleted) => true,
            _ => false,
        }
    }
}

/// Who or what caused a transition of an environment, stored with it (its reason says why; this
/// says who): what a platform team asks first of an environment that went away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// A GitHub delivery: its event and action (`pull_request.closed`), and its sender.
    Event { event: String, sender: Option<String> },
    /// A `/preview` command, by its author.
    Command { login: String },
    /// The admin API, by the token's name.
    Api { token: String },
    /// The dashboard, by the signed-in person's GitHub login.
    Dashboard { login: String },
    /// previewd itself: a reconcile's step, a retry, an expiry.
    Previewd,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Event { event, sender: Some(sender) } => write!(f, "{event} by @{sender}"),
            Cause::Event { event, sender: None } => f.write_str(event),
            Cause::Command { login } => write!(f, "command by @{login}"),
            Cause::Api { token } => write!(f, "token {token} via the API"),
            Cause::Dashboard { login } => write!(f, "@{login} via the dashboard"),
            Cause::Previewd => f.write_str("previewd"),
        }
    }
}

impl fmt::Display for EnvironmentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pull request as the engine needs to know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    pub repo: Repo,
    pub number: PrNumber,
    pub head_sha: CommitSha,
    pub head_branch: String,
    pub author: String,
    /// The head lives in another repository than the base: the pull request's code is not
    /// trusted with the environment's secrets.
    pub from_fork: bool,
    pub draft: bool,
    pub labels: Vec<String>,
}

/// Why a pull request's environment should go away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloseReason {
    Merged,
    Closed,
    /// The GitHub App was uninstalled from (or suspended on) the repository's account:
    /// previewd can no longer read or report, so nothing it runs there is kept.
    Uninstalled,
    /// The repository was taken out of the App's installation.
    RepositoryRemoved,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Merged => "pull request merged",
            Self::Closed => "pull request closed without merge",
            Self::Uninstalled => "the GitHub App was uninstalled or suspended on this repository's account",
            Self::RepositoryRemoved => "the repository was removed from the GitHub App's installation",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_shas_are_seven_characters_or_what_there_is() {
        assert_eq!(short_sha("0123456789abcdef"), "0123456");
        assert_eq!(CommitSha("abc".into()).short(), "abc");
        assert_eq!(short_sha("ééééééééé"), "ééééééé");
    }
}
