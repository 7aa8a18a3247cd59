//! GitHub deliveries translated into previewd's own events, at the edge: only the fields
//! previewd uses are read, nothing of GitHub's wire format travels further in.
//!
//! [`classify`] decides for each verified delivery whether previewd acts on it (and builds the
//! [`Event`] that its job carries), ignores it, or answers a `ping`.

use previewd_environments::model::{CommitSha, InstallationId, PrNumber, PullRequest, Repo, RepoId};
use serde::{Deserialize, Serialize};

/// A delivery previewd acts on, as stored in its job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    PullRequest {
        action: PrAction,
        pull_request: PullRequest,
        /// Merged (rather than closed without merge), for `closed`.
        merged: bool,
        /// The label added or removed, for `labeled`/`unlabeled`.
        label: Option<String>,
        /// Who caused the delivery (for a label, who set it). Absent in jobs queued by older
        /// versions and in events previewd synthesises itself.
        #[serde(default)]
        sender: Option<String>,
        /// GitHub's `updated_at` of the pull request in milliseconds: when GitHub last changed
        /// it, so no earlier than its head commit was pushed. Absent in jobs queued by older
        /// versions and in events previewd synthesises from a listing without it.
        #[serde(default)]
        updated_at: Option<i64>,
        installation: Option<InstallationId>,
        /// The pull request's title, for the dashboard (at most [`MAX_TITLE`] characters).
        /// Absent in jobs queued by older versions and in events previewd synthesises.
        #[serde(default)]
        title: Option<String>,
        /// Whether the repository is private, as the delivery says: what protection `auto`
        /// decides by. Absent in jobs queued by older versions and in synthesised events.
        #[serde(default)]
        private: Option<bool>,
    },
    /// A comment on a pull request that contains a `/preview` command.
    Command {
        repo: Repo,
        number: PrNumber,
        comment_id: i64,
        author: String,
        body: String,
        /// GitHub's `created_at` of the comment in milliseconds: what `/preview approve`
        /// approves is the head the pull request had then. Absent in jobs queued by older
        /// versions.
        #[serde(default)]
        created_at: Option<i64>,
        installation: Option<InstallationId>,
    },
    Installation {
        action: String,
        installation: InstallationId,
        account: String,
        /// The repositories the delivery lists, if any.
        repositories: Vec<Repo>,
    },
    InstallationRepositories {
        action: String,
        installation: InstallationId,
        added: Vec<Repo>,
        removed: Vec<Repo>,
    },
    /// A finished CI signal for a commit (`check_suite`, `check_run`, `workflow_run`, `status`),
    /// used to wait until the pull request's image is built.
    Ci {
        repo: Repo,
        head_sha: CommitSha,
        source: CiSource,
        name: String,
        /// `success`, `failure`, `neutral`, `cancelled`, `error`, ...
        conclusion: String,
        installation: Option<InstallationId>,
    },
}

impl Event {
    /// The one repository the event is about; installation events list several, or none.
    pub fn repo(&self) -> Option<&Repo> {
        match self {
            Event::PullRequest { pull_request, .. } => Some(&pull_request.repo),
            Event::Command { repo, .. } | Event::Ci { repo, .. } => Some(repo),
            Event::Installation { .. } | Event::InstallationRepositories { .. } => None,
        }
    }
}

/// The `pull_request` actions previewd follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrAction {
    Opened,
    Reopened,
    Synchronize,
    Closed,
    Labeled,
    Unlabeled,
    ReadyForReview,
    ConvertedToDraft,
    Edited,
}

impl PrAction {
    const ALL: [PrAction; 9] = [
        Self::Opened,
        Self::Reopened,
        Self::Synchronize,
        Self::Closed,
        Self::Labeled,
        Self::Unlabeled,
        Self::ReadyForReview,
        Self::ConvertedToDraft,
        Self::Edited,
    ];

    fn parse(action: &str) -> Option<PrAction> {
        Self::ALL.into_iter().find(|a| a.name() == action)
    }

    /// GitHub's name of the action (`ready_for_review`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::Reopened => "reopened",
            Self::Synchronize => "synchronize",
            Self::Closed => "closed",
            Self::Labeled => "labeled",
            Self::Unlabeled => "unlabeled",
            Self::ReadyForReview => "ready_for_review",
            Self::ConvertedToDraft => "converted_to_draft",
            Self::Edited => "edited",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CiSource {
    CheckSuite,
    CheckRun,
    WorkflowRun,
    Status,
}

/// What previewd makes of a verified delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    Ping,
    Ignored { action: Option<String>, why: &'static str },
    Act { action: Option<String>, event: Box<Event> },
}

/// A payload that is not the JSON GitHub sends for its event type.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("body is not valid JSON: {0}")]
    Json(serde_json::Error),
    #[error("`{event}` payload does not have the shape GitHub documents: {source}")]
    Shape { event: String, source: serde_json::Error },
}

fn parse<'a, T: Deserialize<'a>>(event: &str, body: &'a [u8]) -> Result<T, PayloadError> {
    serde_json::from_slice(body).map_err(|source| {
        if source.is_data() {
            PayloadError::Shape { event: event.to_owned(), source }
        } else {
            PayloadError::Json(source)
        }
    })
}

/// Classifies a delivery of type `event` (the `X-GitHub-Event` header) with JSON `body`.
pub fn classify(event: &str, body: &[u8]) -> Result<Classified, PayloadError> {
    match event {
        "ping" => {
            parse::<serde::de::IgnoredAny>(event, body)?;
            Ok(Classified::Ping)
        }
        "pull_request" => pull_request(parse(event, body)?),
        "issue_comment" => Ok(issue_comment(parse(event, body)?)),
        "installation" => {
            let p: wire::InstallationEvent = parse(event, body)?;
            let repositories =
                p.repositories.unwrap_or_default().into_iter().filter_map(wire::RepoName::repo).collect();
            Ok(Classified::Act {
                action: Some(p.action.clone()),
                event: Box::new(Event::Installation {
                    action: p.action,
                    installation: InstallationId(p.installation.id),
                    account: p.installation.account.map(|a| a.login).unwrap_or_default(),
                    repositories,
                }),
            })
        }
        "installation_repositories" => {
            let p: wire::InstallationRepositoriesEvent = parse(event, body)?;
            let names = |repos: Vec<wire::RepoName>| repos.into_iter().filter_map(wire::RepoName::repo).collect();
            Ok(Classified::Act {
                action: Some(p.action.clone()),
                event: Box::new(Event::InstallationRepositories {
                    action: p.action,
                    installation: InstallationId(p.installation.id),
                    added: names(p.repositories_added),
                    removed: names(p.repositories_removed),
                }),
            })
        }
        "check_suite" => {
            let p: wire::CheckSuiteEvent = parse(event, body)?;
            let name = p.check_suite.app.map(|a| a.name).unwrap_or_else(|| "check suite".to_owned());
            Ok(ci(
                p.action,
                p.repository,
                p.check_suite.head_sha,
                CiSource::CheckSuite,
                name,
                p.check_suite.conclusion,
                p.installation,
            ))
        }
        "check_run" => {
            let p: wire::CheckRunEvent = parse(event, body)?;
            Ok(ci(
                p.action,
                p.repository,
                p.check_run.head_sha,
                CiSource::CheckRun,
                p.check_run.name,
                p.check_run.conclusion,
                p.installation,
            ))
        }
        "workflow_run" => {
            let p: wire::WorkflowRunEvent = parse(event, body)?;
            let name = p.workflow_run.name.unwrap_or_else(|| "workflow".to_owned());
            Ok(ci(
                p.action,
                p.repository,
                p.workflow_run.head_sha,
                CiSource::WorkflowRun,
                name,
                p.workflow_run.conclusion,
                p.installation,
            ))
        }
        "status" => {
            let p: wire::StatusEvent = parse(event, body)?;
            if p.state == "pending" {
                return Ok(Classified::Ignored { action: Some(p.state), why: "a pending status says nothing yet" });
            }
            Ok(Classified::Act {
                action: Some(p.state.clone()),
                event: Box::new(Event::Ci {
                    repo: p.repository.into_repo(),
                    head_sha: CommitSha(p.sha),
                    source: CiSource::Status,
                    name: p.context,
                    conclusion: p.state,
                    installation: p.installation.map(|i| InstallationId(i.id)),
                }),
            })
        }
        _ => {
            // Still has to be JSON: a signed delivery with a broken body is an error whatever
            // its type.
            let action = parse::<wire::AnyEvent>(event, body)?.action;
            Ok(Classified::Ignored { action, why: "previewd does not act on this event type" })
        }
    }
}

fn pull_request(p: wire::PullRequestEvent) -> Result<Classified, PayloadError> {
    let Some(action) = PrAction::parse(&p.action) else {
        return Ok(Classified::Ignored {
            action: Some(p.action),
            why: "previewd does not act on this pull request action",
        });
    };
    let private = p.repository.private;
    let base_repo = p.repository.into_repo();
    let pr = p.pull_request;
    // A head repository that is gone (deleted fork) is treated as a fork: its code is not ours.
    let from_fork = pr.head.repo.as_ref().is_none_or(|head| head.id != base_repo.id.0);
    let pull_request = PullRequest {
        repo: base_repo,
        number: PrNumber(p.number),
        head_sha: CommitSha(pr.head.sha),
        head_branch: pr.head.ref_,
        author: pr.user.map(|u| u.login).unwrap_or_default(),
        from_fork,
        draft: pr.draft.unwrap_or(false),
        labels: pr.labels.into_iter().map(|l| l.name).collect(),
    };
    Ok(Classified::Act {
        action: Some(p.action),
        event: Box::new(Event::PullRequest {
            action,
            pull_request,
            merged: pr.merged.unwrap_or(false),
            label: p.label.map(|l| l.name),
            sender: p.sender.map(|u| u.login),
            updated_at: pr.updated_at.as_deref().and_then(github_time),
            installation: p.installation.map(|i| InstallationId(i.id)),
            title: pr.title.map(|t| bounded_title(&t)),
            private,
        }),
    })
}

/// The most of a title kept: GitHub allows 256 characters; anything longer is not GitHub's.
pub const MAX_TITLE: usize = 256;

/// `title` cut to [`MAX_TITLE`] characters.
pub fn bounded_title(title: &str) -> String {
    title.chars().take(MAX_TITLE).collect()
}

fn issue_comment(p: wire::IssueCommentEvent) -> Classified {
    if p.action != "created" {
        return Classified::Ignored { action: Some(p.action), why: "only new comments can hold commands" };
    }
    if p.issue.pull_request.is_none() {
        return Classified::Ignored { action: Some(p.action), why: "comment on an issue, not a pull request" };
    }
    let body = p.comment.body.unwrap_or_default();
    if !body.lines().any(|line| line.trim_start().starts_with("/preview")) {
        return Classified::Ignored { action: Some(p.action), why: "comment holds no /preview command" };
    }
    Classified::Act {
        action: Some(p.action),
        event: Box::new(Event::Command {
            repo: p.repository.into_repo(),
            number: PrNumber(p.issue.number),
            comment_id: p.comment.id,
            author: p.comment.user.map(|u| u.login).unwrap_or_default(),
            body,
            created_at: p.comment.created_at.as_deref().and_then(github_time),
            installation: p.installation.map(|i| InstallationId(i.id)),
        }),
    }
}

/// A GitHub timestamp (`2019-05-15T15:20:33Z`) in milliseconds since the epoch; `None` if it is
/// not one, which callers treat as "not known".
pub fn github_time(text: &str) -> Option<i64> {
    let at = humantime::parse_rfc3339(text).ok()?;
    let since = at.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(since.as_millis()).ok()
}

fn ci(
    action: String,
    repository: wire::Repository,
    head_sha: String,
    source: CiSource,
    name: String,
    conclusion: Option<String>,
    installation: Option<wire::InstallationRef>,
) -> Classified {
    if action != "completed" {
        return Classified::Ignored { action: Some(action), why: "only completed CI runs decide whether to deploy" };
    }
    Classified::Act {
        action: Some(action),
        event: Box::new(Event::Ci {
            repo: repository.into_repo(),
            head_sha: CommitSha(head_sha),
            source,
            name,
            conclusion: conclusion.unwrap_or_else(|| "unknown".to_owned()),
            installation: installation.map(|i| InstallationId(i.id)),
        }),
    }
}

/// The parts of GitHub's payloads that previewd reads. Everything else is skipped by serde.
mod wire {
    use super::{Repo, RepoId};
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct AnyEvent {
        pub action: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct User {
        pub login: String,
    }

    #[derive(Deserialize)]
    pub struct Repository {
        pub id: i64,
        pub name: String,
        pub owner: User,
        #[serde(default)]
        pub private: Option<bool>,
    }

    impl Repository {
        pub fn into_repo(self) -> Repo {
            Repo { id: RepoId(self.id), owner: self.owner.login, name: self.name }
        }
    }

    #[derive(Deserialize)]
    pub struct RepoName {
        pub id: i64,
        pub full_name: String,
    }

    impl RepoName {
        /// `None` for a malformed `full_name` (GitHub always sends `owner/name`).
        pub fn repo(self) -> Option<super::Repo> {
            let (owner, name) = self.full_name.split_once('/')?;
            Some(super::Repo { id: super::RepoId(self.id), owner: owner.to_owned(), name: name.to_owned() })
        }
    }

    #[derive(Deserialize)]
    pub struct InstallationRef {
        pub id: i64,
    }

    #[derive(Deserialize)]
    pub struct Label {
        pub name: String,
    }

    #[derive(Deserialize)]
    pub struct PullRequestEvent {
        pub action: String,
        pub number: i64,
        pub pull_request: PullRequest,
        pub repository: Repository,
        pub label: Option<Label>,
        pub sender: Option<User>,
        pub installation: Option<InstallationRef>,
    }

    #[derive(Deserialize)]
    pub struct PullRequest {
        #[serde(default)]
        pub title: Option<String>,
        pub user: Option<User>,
        pub head: Branch,
        pub draft: Option<bool>,
        pub merged: Option<bool>,
        #[serde(default)]
        pub labels: Vec<Label>,
        pub updated_at: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct Branch {
        #[serde(rename = "ref")]
        pub ref_: String,
        pub sha: String,
        pub repo: Option<HeadRepo>,
    }

    #[derive(Deserialize)]
    pub struct HeadRepo {
        pub id: i64,
    }

    #[derive(Deserialize)]
    pub struct IssueCommentEvent {
        pub action: String,
        pub issue: Issue,
        pub comment: Comment,
        pub repository: Repository,
        pub installation: Option<InstallationRef>,
    }

    #[derive(Deserialize)]
    pub struct Issue {
        pub number: i64,
        pub pull_request: Option<serde::de::IgnoredAny>,
    }

    #[derive(Deserialize)]
    pub struct Comment {
        pub id: i64,
        pub body: Option<String>,
        pub user: Option<User>,
        pub created_at: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct InstallationEvent {
        pub action: String,
        pub installation: Installation,
        pub repositories: Option<Vec<RepoName>>,
    }

    #[derive(Deserialize)]
    pub struct Installation {
        pub id: i64,
        pub account: Option<User>,
    }

    #[derive(Deserialize)]
    pub struct InstallationRepositoriesEvent {
        pub action: String,
        pub installation: InstallationRef,
        #[serde(default)]
        pub repositories_added: Vec<RepoName>,
        #[serde(default)]
        pub repositories_removed: Vec<RepoName>,
    }

    #[derive(Deserialize)]
    pub struct App {
        pub name: String,
    }

    #[derive(Deserialize)]
    pub struct CheckSuiteEvent {
        pub action: String,
        pub check_suite: CheckSuite,
        pub repository: Repository,
        pub installation: Option<InstallationRef>,
    }

    #[derive(Deserialize)]
    pub struct CheckSuite {
        pub head_sha: String,
        pub conclusion: Option<String>,
        pub app: Option<App>,
    }

    #[derive(Deserialize)]
    pub struct CheckRunEvent {
        pub action: String,
        pub check_run: CheckRun,
        pub repository: Repository,
        pub installation: Option<InstallationRef>,
    }

    #[derive(Deserialize)]
    pub struct CheckRun {
        pub name: String,
        pub head_sha: String,
        pub conclusion: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct WorkflowRunEvent {
        pub action: String,
        pub workflow_run: WorkflowRun,
        pub repository: Repository,
        pub installation: Option<InstallationRef>,
    }

    #[derive(Deserialize)]
    pub struct WorkflowRun {
        pub name: Option<String>,
        pub head_sha: String,
        pub conclusion: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct StatusEvent {
        pub sha: String,
        pub state: String,
        pub context: String,
        pub repository: Repository,
        pub installation: Option<InstallationRef>,
    }
}
