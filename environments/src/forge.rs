//! The code host, as the engine sees it: the repository's `.preview.yaml` (and the files it
//! names, such as SQL seeds) at a commit, and the results of the checks that must pass before
//! a commit is deployed. The service
//! implements [`Forge`] over GitHub; [`FixedRepoConfig`] serves demos and tests. Errors are
//! typed so that a reconcile can honour a rate limit's wait and fail at once on what no retry
//! mends.

use crate::model::{CommitSha, Repo};
use crate::repo_config::RepoFile;
use std::collections::BTreeMap;
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

    /// The file at `path` (relative to the repository's root) at commit `sha`, read up to
    /// `max_bytes`; `None` if there is no such file. A commit's file cannot change, so callers
    /// read it once and keep what they need.
    fn fetch_file<'a>(
        &'a self,
        repo: &'a Repo,
        sha: &'a CommitSha,
        path: &'a str,
        max_bytes: usize,
    ) -> Pin<Box<dyn Future<Output = Result<Option<FileBytes>, ForgeError>> + Send + 'a>>;

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

/// A file of the repository, as far as previewd reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileBytes {
    /// Within the bound the caller gave.
    Within(Vec<u8>),
    /// Over it; `size` when the code host said (the content was then not read at all).
    TooLarge { size: Option<u64> },
}

impl FileBytes {
    /// `bytes` held to `max_bytes`.
    pub fn bounded(bytes: Vec<u8>, max_bytes: usize) -> FileBytes {
        if bytes.len() > max_bytes {
            return FileBytes::TooLarge { size: Some(bytes.len() as u64) };
        }
        FileBytes::Within(bytes)
    }
}

/// The same `.preview.yaml` (and other files) for every pull request and commit, and no
/// checks to wait for: the demo and the engine's tests.
pub struct FixedRepoConfig {
    config: String,
    files: BTreeMap<String, Vec<u8>>,
}

impl FixedRepoConfig {
    pub fn new(config: impl Into<String>) -> Self {
        FixedRepoConfig { config: config.into(), files: BTreeMap::new() }
    }

    /// Serves `bytes` at `path` too.
    pub fn with_file(mut self, path: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        self.files.insert(path.into(), bytes.into());
        self
    }
}

impl Forge for FixedRepoConfig {
    fn fetch<'a>(
        &'a self,
        _repo: &'a Repo,
        _sha: &'a CommitSha,
    ) -> Pin<Box<dyn Future<Output = Result<Option<RepoFile>, ForgeError>> + Send + 'a>> {
        Box::pin(async move { Ok(Some(RepoFile::from_bytes(self.config.clone().into_bytes()))) })
    }

    fn fetch_file<'a>(
        &'a self,
        _repo: &'a Repo,
        _sha: &'a CommitSha,
        path: &'a str,
        max_bytes: usize,
    ) -> Pin<Box<dyn Future<Output = Result<Option<FileBytes>, ForgeError>> + Send + 'a>> {
        Box::pin(async move { Ok(self.files.get(path).map(|bytes| FileBytes::bounded(bytes.clone(), max_bytes))) })
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
