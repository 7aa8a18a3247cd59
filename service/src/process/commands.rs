//! `/preview` commands and fork approvals: who may give them, what they mean, and what
//! previewd answers on the pull request.
//!
//! Anyone can comment on a public pull request, so a comment costs previewd one read (the
//! author's permission) before anything is written: commands from people without write access
//! get no reaction, no help and at most one refusal per pull request every
//! [`REFUSAL_INTERVAL`], and no reply quotes what a commenter wrote.
//!
//! An approval is bound to the commit the approver saw, by one rule for both ways of approving
//! ([`approved_head`]): the approval label names the head of its own delivery; a
//! `/preview approve` comment the commit it names, or else the head the pull request had when
//! the comment was written, by GitHub's own clock. A commit pushed after that is not approved.

use super::{JobRunner, github_failed, report_failed, transient};
use crate::github::api::Permission;
use crate::github::commands::{self, Command, ShaPrefix};
use crate::github::report::GitHubSide;
use crate::worker::JobError;
use previewd_environments::actions::{self, Action, ActionError, Actor};
use previewd_environments::model::{Cause, CommitSha, EnvironmentState, PrNumber, PullRequest, Repo};
use previewd_environments::spec::Commands;
use previewd_environments::store::SeenHead;
use previewd_environments::time::now_ms;
use std::time::Duration;

/// At most one refusal is posted per pull request in this interval: a flood of commands from
/// someone without write access gets one answer, not one each.
pub const REFUSAL_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// Which commit an approver saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The head named by the delivery of the approval (the label's `pull_request.head.sha`).
    Commit(CommitSha),
    /// The commit `/preview approve <sha>` names.
    Named(ShaPrefix),
    /// The head at GitHub time `at` (milliseconds), when `/preview approve` was written; `None`
    /// when the delivery said no time.
    HeadAt(Option<i64>),
}

/// Why an approval does not approve the pull request's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// The head was pushed after the approval.
    PushedAfter,
    /// previewd cannot tell that the head was pushed before the approval.
    Unknown,
}

/// Whether an approval of what was `seen` approves `head`, the pull request's head now.
/// `recorded` is the head GitHub's deliveries last named, with the earliest GitHub time one did
/// (no earlier than its push). For a comment, the head counts as seen only if it was recorded
/// strictly before the comment's time: GitHub's times have whole seconds, and a push in the
/// same second as the comment may well have come after it.
pub fn approved_head(seen: &Seen, head: &CommitSha, recorded: Option<&SeenHead>) -> Result<(), Stale> {
    match seen {
        Seen::Commit(sha) if sha.0.eq_ignore_ascii_case(&head.0) => Ok(()),
        Seen::Commit(_) => Err(Stale::PushedAfter),
        Seen::Named(prefix) if prefix.names(&head.0) => Ok(()),
        // The approver named another commit: the head is one they did not name.
        Seen::Named(_) => Err(Stale::PushedAfter),
        Seen::HeadAt(at) => match (recorded, at) {
            (Some(known), Some(at)) if known.head_sha.eq_ignore_ascii_case(&head.0) => {
                if known.head_at < *at {
                    Ok(())
                } else {
                    Err(Stale::PushedAfter)
                }
            }
            // previewd has not yet heard of this head (its delivery is late or was missed), or
            // the comment had no time: nothing says it came before the comment.
            _ => Err(Stale::Unknown),
        },
    }
}

impl JobRunner {
    /// A `/preview` command: the author's permission first; then understood, carried out, and
    /// acknowledged with a reaction, its outcome shown in the sticky comment.
    pub(super) async fn command(
        &self,
        repo: &Repo,
        number: PrNumber,
        comment_id: i64,
        author: &str,
        body: &str,
        created_at: Option<i64>,
    ) -> Result<(), JobError> {
        let Some(side) = &self.github else {
            tracing::info!(repo = %repo.full_name(), pr = %number, "command ignored: no GitHub access is configured");
            return Ok(());
        };
        let Some(parsed) = commands::parse(body) else {
            return Ok(());
        };
        let who = side.installation_for(repo).await.map_err(report_failed)?;
        let permission = side.github.permission(who, repo, author).await.map_err(github_failed)?;
        if permission != Permission::Write {
            match &parsed {
                Ok(command) => {
                    tracing::info!(repo = %repo.full_name(), pr = %number, author, command = command.text(), "command refused: no write access");
                    self.refuse(side, repo, number, author, &command.text()).await?;
                }
                // No help for someone who may not give commands anyway: nothing is posted.
                Err(problem) => {
                    tracing::info!(repo = %repo.full_name(), pr = %number, author, %problem, "malformed command from someone without write access: not answered");
                }
            }
            return Ok(());
        }
        let command = match parsed {
            Ok(command) => command,
            Err(problem) => {
                tracing::info!(repo = %repo.full_name(), pr = %number, author, %problem, "malformed command");
                let reply = side.texts.help(&problem.to_string()).map_err(|e| JobError::Permanent(e.to_string()))?;
                side.github.react(who, repo, comment_id, "confused").await.map_err(github_failed)?;
                side.github.create_comment(who, repo, number, &reply).await.map_err(github_failed)?;
                return Ok(());
            }
        };
        tracing::info!(repo = %repo.full_name(), pr = %number, author, command = command.text(), "command accepted");
        let done = self.carry_out(side, repo, number, author, &command, created_at).await?;
        let reaction = if done { "+1" } else { "confused" };
        side.github.react(who, repo, comment_id, reaction).await.map_err(github_failed)?;
        Ok(())
    }

    /// Tells `login` that `what` needs write access, unless previewd told someone so on this
    /// pull request less than [`REFUSAL_INTERVAL`] ago.
    pub(super) async fn refuse(
        &self,
        side: &GitHubSide,
        repo: &Repo,
        number: PrNumber,
        login: &str,
        what: &str,
    ) -> Result<(), JobError> {
        let claimed = self.store.claim_reply(repo.id, number, now_ms(), REFUSAL_INTERVAL).await.map_err(transient)?;
        if !claimed {
            tracing::info!(repo = %repo.full_name(), pr = %number, login, "refusal not posted: one was posted on this pull request recently");
            return Ok(());
        }
        let reply = side.texts.refused(login, what).map_err(|e| JobError::Permanent(e.to_string()))?;
        let who = side.installation_for(repo).await.map_err(report_failed)?;
        side.github.create_comment(who, repo, number, &reply).await.map_err(github_failed)?;
        Ok(())
    }

    /// Carries out a writer's command; `false` if it could not be (an approval of a commit that
    /// is no longer the head, which the writer has been told about).
    async fn carry_out(
        &self,
        side: &GitHubSide,
        repo: &Repo,
        number: PrNumber,
        author: &str,
        command: &Command,
        created_at: Option<i64>,
    ) -> Result<bool, JobError> {
        let current = self.store.reconcile_record_for(repo.id, number).await.map_err(transient)?;
        let live = current.as_ref().and_then(|e| e.state().ok()).is_some_and(EnvironmentState::is_live);
        match command {
            Command::Deploy => {
                let who = side.installation_for(repo).await.map_err(report_failed)?;
                let pr = side.github.pull(who, repo, number).await.map_err(github_failed)?.to_model();
                let note = format!("@{author} asked for an environment");
                let cause = Cause::Command { login: author.to_owned() };
                self.grant(side, &pr, Commands { deploy: true, approve_fork: false }, &note, &cause).await?;
            }
            Command::Approve(named) => {
                let seen = named.clone().map_or(Seen::HeadAt(created_at), Seen::Named);
                return self.approve(side, repo, number, author, &seen, None).await;
            }
            Command::Redeploy | Command::Extend(_) | Command::Destroy | Command::ResetDatabase | Command::Wake => {
                let action = match command {
                    Command::Redeploy => Action::Redeploy,
                    Command::Extend(by) => Action::Extend(*by),
                    Command::ResetDatabase => Action::ResetDatabase,
                    Command::Wake => Action::Wake,
                    _ => Action::Destroy,
                };
                match (current.filter(|_| live), &self.engine) {
                    (Some(env), Some(engine)) => {
                        let actor = Actor::Command { login: author.to_owned() };
                        actions::act(&self.store, &engine.policy, &env, action, &actor, self.max_attempts)
                            .await
                            .map_err(action_failed)?;
                    }
                    _ => self.note_without_environment(repo, number, author, action.verb()).await?,
                }
            }
            Command::Status => {
                if let Some(env) = current {
                    self.store.queue_report(env.id).await.map_err(transient)?;
                }
            }
        }
        Ok(true)
    }

    /// The approval label was added to a fork's pull request: an approval of the head commit
    /// the delivery names, if whoever added it has write access; otherwise the label is taken
    /// off again, with a (throttled) refusal.
    pub(super) async fn label_approval(
        &self,
        pr: &PullRequest,
        label: &str,
        sender: Option<&str>,
    ) -> Result<(), JobError> {
        let (Some(side), Some(sender)) = (&self.github, sender) else {
            let cause = Cause::Event { event: "pull_request.labeled".to_owned(), sender: sender.map(str::to_owned) };
            return self.consider(pr, super::Activity::Revisit, &cause).await;
        };
        let who = side.installation_for(&pr.repo).await.map_err(report_failed)?;
        let permission = side.github.permission(who, &pr.repo, sender).await.map_err(github_failed)?;
        if permission != Permission::Write {
            tracing::info!(repo = %pr.repo.full_name(), pr = %pr.number, sender, label, "approval label refused: no write access");
            self.remove_label(pr, label).await?;
            return self.refuse(side, &pr.repo, pr.number, sender, label).await;
        }
        let seen = Seen::Commit(pr.head_sha.clone());
        self.approve(side, &pr.repo, pr.number, sender, &seen, Some(label)).await.map(drop)
    }

    /// A writer approved what they had `seen` of fork pull request `number` (with `label`, or
    /// a comment): granted if that is the head GitHub has now (`true`); otherwise not, and the
    /// approver is told to look again (a label is taken off, so that setting it again approves
    /// anew).
    async fn approve(
        &self,
        side: &GitHubSide,
        repo: &Repo,
        number: PrNumber,
        approver: &str,
        seen: &Seen,
        label: Option<&str>,
    ) -> Result<bool, JobError> {
        let who = side.installation_for(repo).await.map_err(report_failed)?;
        let pr = side.github.pull(who, repo, number).await.map_err(github_failed)?.to_model();
        let recorded = self.store.seen_head(repo.id, number).await.map_err(transient)?;
        let short = pr.head_sha.short();
        match approved_head(seen, &pr.head_sha, recorded.as_ref()) {
            Ok(()) => {
                tracing::info!(repo = %repo.full_name(), pr = %number, head_sha = %pr.head_sha, approver, label, "fork commit approved");
                let note = match label {
                    Some(label) => format!("@{approver} approved commit {short} with the label `{label}`"),
                    None => format!("@{approver} approved commit {short}"),
                };
                let cause = match label {
                    Some(_) => {
                        Cause::Event { event: "pull_request.labeled".to_owned(), sender: Some(approver.to_owned()) }
                    }
                    None => Cause::Command { login: approver.to_owned() },
                };
                self.grant(side, &pr, Commands { deploy: false, approve_fork: true }, &note, &cause).await?;
                Ok(true)
            }
            Err(stale) => {
                tracing::info!(
                    repo = %repo.full_name(),
                    pr = %number,
                    head_sha = %pr.head_sha,
                    approver,
                    ?seen,
                    ?recorded,
                    ?stale,
                    "approval not given: the head is not the commit the approver saw"
                );
                if let Some(label) = label {
                    self.remove_label(&pr, label).await?;
                }
                let after = stale == Stale::PushedAfter;
                let reply = side
                    .texts
                    .stale_approval(approver, short, after)
                    .map_err(|e| JobError::Permanent(e.to_string()))?;
                side.github.create_comment(who, repo, number, &reply).await.map_err(github_failed)?;
                Ok(false)
            }
        }
    }

    async fn note_without_environment(
        &self,
        repo: &Repo,
        number: PrNumber,
        author: &str,
        what: &str,
    ) -> Result<(), JobError> {
        if let Some(env) = self.store.environment(repo.id, number).await.map_err(transient)? {
            let note = format!("@{author}: there is no live environment to {what}");
            self.store.set_command_state(env.id, None, None, Some(&note)).await.map_err(transient)?;
        }
        Ok(())
    }
}

/// A refusal cannot happen here (the environment was live when read; a race with a teardown
/// is a store refusal): both are worth no retry. The store's own errors keep their class.
fn action_failed(error: ActionError) -> JobError {
    match error {
        ActionError::Store(error) => transient(error),
        refused => JobError::Permanent(refused.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(c: char) -> CommitSha {
        CommitSha(c.to_string().repeat(40))
    }

    fn recorded(c: char, at: i64) -> SeenHead {
        SeenHead { head_sha: sha(c).0, head_at: at }
    }

    #[test]
    fn a_comment_approves_the_head_it_was_written_after() {
        let seen = Seen::HeadAt(Some(2_000));
        assert_eq!(approved_head(&seen, &sha('a'), Some(&recorded('a', 1_000))), Ok(()));
    }

    #[test]
    fn a_head_pushed_after_the_comment_is_not_approved() {
        let seen = Seen::HeadAt(Some(2_000));
        assert_eq!(approved_head(&seen, &sha('b'), Some(&recorded('b', 3_000))), Err(Stale::PushedAfter));
        // The same second: it may have come after.
        assert_eq!(approved_head(&seen, &sha('b'), Some(&recorded('b', 2_000))), Err(Stale::PushedAfter));
    }

    #[test]
    fn a_head_previewd_has_not_heard_of_is_not_approved() {
        let seen = Seen::HeadAt(Some(2_000));
        assert_eq!(approved_head(&seen, &sha('b'), Some(&recorded('a', 1_000))), Err(Stale::Unknown));
        assert_eq!(approved_head(&seen, &sha('b'), None), Err(Stale::Unknown));
        assert_eq!(approved_head(&Seen::HeadAt(None), &sha('a'), Some(&recorded('a', 1_000))), Err(Stale::Unknown));
    }

    #[test]
    fn a_named_commit_or_a_labelled_head_must_be_the_head() {
        let named = Seen::Named(ShaPrefix::parse("aaaaaaa").unwrap());
        assert_eq!(approved_head(&named, &sha('a'), None), Ok(()));
        assert_eq!(approved_head(&named, &sha('b'), Some(&recorded('b', 1))), Err(Stale::PushedAfter));
        assert_eq!(approved_head(&Seen::Commit(sha('a')), &sha('a'), None), Ok(()));
        assert_eq!(approved_head(&Seen::Commit(sha('a')), &sha('b'), None), Err(Stale::PushedAfter));
    }
}
