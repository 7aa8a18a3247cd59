//! The code host, as the engine sees it: the repository's `.preview.yaml` at a commit and
//! the results of the checks that must pass before a commit is deployed. The service
//! implements [`Forge`] over GitHub; [`FixedRepoConfig`] serves demos and tests. Errors are
//! typed so that a reconcile can honour a rate limit's wait and fail at once on what no retry
//! mends.

use crate::model::{CommitSha, Repo};
use crate::repo_config::RepoFile;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// The code host could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ForgeError {
    pub message: String,
    /// How long the code host asked to wait (a rate limit's reset or `Retry-After`).
    pub retry_after: Option<Duration>,
    /// Trying again will not help (the App may not read the repository, say): the environment
    /// fails with the message instead of being retried.
    pub permanent: bool,
}

impl ForgeError {
    /// Worth another attempt after the job queue's backoff.
    pub fn transient(message: impl Into<String>) -> Self {
        ForgeError { message: message.into(), retry_after: None, permanent: false }
    }

    /// Worth another attempt after `after`, as the code host said.
    pub fn retry_after(message: impl Into<String>, after: Duration) -> Self {
        ForgeError { message: message.into(), retry_after: Some(after), permanent: false }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        ForgeError { message: message.into(), retry_after: None, permanent: true }
    }
}

/// The code host, as the reconciler needs it: the repository's `.preview.yaml` at the head
/// commit, and the results of the checks that must pass before a commit is deployed. The
/// service implements it over GitHub; [`FixedRepoConfig`] serves demos and tests.
pub trait Forge: Send + Sync + 'static {
    /// The file, or `None` if the repository has no such file at that commit. A file previewd
    /// will not read (too large, not text) is [`RepoFile::Refused`], not an error: the
    /// environment fails with the reason rather than being retried.
    fn fetch<'a>(
        &'a self,
        repo: &'a Repo,
        sha: &'a CommitSha,
    ) -> Pin<Box<dyn Future<Output = Result<Option<RepoFile>, ForgeError>> + Send + 'a>>;

    /// Where the checks named `required` stand on commit `sha`.
    fn checks<'a>(
        &'a self,
        repo: &'a Repo,
        sha: &'a CommitSha,
        required: &'a [String],
    ) -> Pin<Box<dyn Future<Output = Result<Checks, ForgeError>> + Send + 'a>>;
}

/// Required checks that have not passed on a commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checks {
    /// Not reported yet, or still running.
    pub waiting: Vec<String>,
    /// Finished without success: (name, conclusion).
    pub failed: Vec<(String, String)>,
}

/// The same `.preview.yaml` for every pull request, and no checks to wait for.
pub struct FixedRepoConfig(pub String);

impl Forge for FixedRepoConfig {
    fn fetch<'a>(
        &'a self,
        _repo: &'a Repo,
        _sha: &'a CommitSha,
    ) -> Pin<Box<dyn Future<Output = Result<Option<RepoFile>, ForgeError>> + Send + 'a>> {
        Box::pin(async move { Ok(Some(RepoFile::from_bytes(self.0.clone().into_bytes()))) })
    }

    fn checks<'a>(
        &'a self,
        _repo: &'a Repo,
        _sha: &'a CommitSha,
        _required: &'a [String],
    ) -> Pin<Box<dyn Future<Output = Result<Checks, ForgeError>> + Send + 'a>> {
        Box::pin(async { Ok(Checks::default()) })
    }
}
