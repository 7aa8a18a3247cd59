//! The GitHub REST calls previewd makes, each reading only the fields it uses.

use super::client::{As, GitHub, GitHubError};
use base64::Engine as _;
use previewd_environments::forge::FileBytes;
use previewd_environments::model::{CommitSha, InstallationId, PrNumber, PullRequest, Repo, RepoId};
use previewd_environments::repo_config::{RepoConfigError, RepoFile};
use previewd_environments::yaml::MAX_REPOSITORY_FILE_BYTES;
use serde::Deserialize;
use serde_json::json;

/// A collaborator's permission on a repository, as far as commands care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// write, maintain or admin: may give commands.
    Write,
    /// read, triage or none.
    Read,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Login {
    pub login: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Comment {
    pub id: i64,
    #[serde(default)]
    pub body: Option<String>,
    pub user: Option<Login>,
}

#[derive(Debug, Clone, Deserialize)]
struct Created {
    id: i64,
}

#[derive(Debug, Clone, Deserialize)]
struct Label {
    name: String,
}

#[derive(Debug, Clone, Deserialize)]
struct RepoRef {
    id: i64,
    name: String,
    owner: Login,
}

#[derive(Debug, Clone, Deserialize)]
struct Head {
    sha: String,
    #[serde(rename = "ref")]
    branch: String,
    repo: Option<RepoRef>,
}

#[derive(Debug, Clone, Deserialize)]
struct Base {
    repo: RepoRef,
}

/// A pull request as the pulls API returns it.
#[derive(Debug, Clone, Deserialize)]
pub struct Pull {
    pub number: i64,
    #[serde(default)]
    pub title: Option<String>,
    pub state: String,
    #[serde(default)]
    pub draft: Option<bool>,
    #[serde(default)]
    pub merged: Option<bool>,
    #[serde(default)]
    pub merged_at: Option<String>,
    /// When GitHub last changed the pull request: no earlier than its head commit was pushed.
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default)]
    labels: Vec<Label>,
    user: Option<Login>,
    head: Head,
    base: Base,
}

impl Pull {
    /// The pull request in previewd's terms. A head in another repository (or in a deleted
    /// fork) is a fork.
    pub fn to_model(&self) -> PullRequest {
        let base = &self.base.repo;
        PullRequest {
            repo: Repo { id: RepoId(base.id), owner: base.owner.login.clone(), name: base.name.clone() },
            number: PrNumber(self.number),
            head_sha: CommitSha(self.head.sha.clone()),
            head_branch: self.head.branch.clone(),
            author: self.user.as_ref().map(|u| u.login.clone()).unwrap_or_default(),
            from_fork: self.head.repo.as_ref().is_none_or(|r| r.id != base.id),
            draft: self.draft.unwrap_or(false),
            labels: self.labels.iter().map(|l| l.name.clone()).collect(),
        }
    }
}

/// One delivery of the App's webhook, as `GET /app/hook/deliveries` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct HookDelivery {
    pub id: i64,
    pub guid: String,
    pub delivered_at: String,
    #[serde(default)]
    pub redelivery: bool,
    pub status_code: i64,
    pub event: String,
}

/// The result of a check or commit status on a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub name: String,
    /// `None` while it runs; `success`, `failure`, `neutral`, `skipped`, ... when done.
    pub conclusion: Option<String>,
}

#[derive(Deserialize)]
struct CheckRunItem {
    name: String,
    status: String,
    conclusion: Option<String>,
}

#[derive(Deserialize)]
struct StatusItem {
    context: String,
    state: String,
}

/// The most previewd reads of an answer of the contents API for a file of at most `max_bytes`:
/// the file is 4/3 larger in base64, GitHub breaks the base64 into lines (each break two bytes
/// escaped in JSON), and the metadata (name, SHA, links) is a few hundred bytes; twice the file
/// plus 16 KiB is ample.
fn contents_reply_bound(max_bytes: usize) -> usize {
    2 * max_bytes + 16 * 1024
}

fn repo_path(repo: &Repo) -> String {
    format!("/repos/{}/{}", repo.owner, repo.name)
}

impl GitHub {
    /// The file at `path` in `repo` at commit `sha`; `None` if it does not exist there. A file
    /// over [`MAX_REPOSITORY_FILE_BYTES`] is refused by the `size` GitHub reports, before its
    /// content is decoded, and the answer itself is read only up to a bound, so neither a large
    /// file nor a misbehaving server makes previewd buffer more.
    pub async fn repo_file(
        &self,
        who: As,
        repo: &Repo,
        path: &str,
        sha: &CommitSha,
    ) -> Result<Option<RepoFile>, GitHubError> {
        Ok(self.repo_file_bytes(who, repo, path, sha, MAX_REPOSITORY_FILE_BYTES).await?.map(|file| match file {
            FileBytes::Within(bytes) => RepoFile::from_bytes(bytes),
            FileBytes::TooLarge { size } => RepoFile::Refused(RepoConfigError::TooLarge { size }),
        }))
    }

    /// The bytes of the file at `path` at commit `sha`, up to `max_bytes` (at most the 1 MB
    /// GitHub returns inline); `None` if it does not exist there. Bounded as [`Self::repo_file`].
    pub async fn repo_file_bytes(
        &self,
        who: As,
        repo: &Repo,
        path: &str,
        sha: &CommitSha,
        max_bytes: usize,
    ) -> Result<Option<FileBytes>, GitHubError> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            size: Option<u64>,
            #[serde(default)]
            content: String,
            #[serde(default)]
            encoding: String,
        }
        let call = format!("{}/contents/{path}?ref={sha}", repo_path(repo));
        let reply = match self.get_bounded(who, &call, contents_reply_bound(max_bytes)).await {
            Ok(reply) => reply,
            Err(GitHubError::NotFound { .. }) => return Ok(None),
            Err(GitHubError::TooLarge { .. }) => return Ok(Some(FileBytes::TooLarge { size: None })),
            Err(error) => return Err(error),
        };
        let file: File = reply.json(&call)?;
        if let Some(size) = file.size.filter(|&s| s > max_bytes as u64) {
            return Ok(Some(FileBytes::TooLarge { size: Some(size) }));
        }
        if file.encoding != "base64" {
            return Err(GitHubError::Decode {
                call,
                message: format!("file is not returned inline (encoding `{}`; larger than 1 MB?)", file.encoding),
            });
        }
        let packed: String = file.content.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(packed)
            .map_err(|e| GitHubError::Decode { call: call.clone(), message: e.to_string() })?;
        // Checked again on the bytes: `size` is GitHub's word.
        Ok(Some(FileBytes::bounded(bytes, max_bytes)))
    }

    /// The login on what previewd writes: `<slug>[bot]` for a GitHub App (its slug from
    /// `GET /app`), the token's user (`GET /user`) for a personal access token. Comments by
    /// anyone else are never taken for previewd's, whatever they hold.
    pub async fn own_login(&self) -> Result<String, GitHubError> {
        if self.is_app() {
            #[derive(Deserialize)]
            struct App {
                slug: String,
            }
            let app: App = self.get(As::App, "/app").await?.json("/app")?;
            Ok(format!("{}[bot]", app.slug))
        } else {
            let user: Login = self.get(As::Installation(None), "/user").await?.json("/user")?;
            Ok(user.login)
        }
    }

    /// `login`'s permission on `repo`.
    pub async fn permission(&self, who: As, repo: &Repo, login: &str) -> Result<Permission, GitHubError> {
        #[derive(Deserialize)]
        struct Answer {
            permission: String,
        }
        let call = format!("{}/collaborators/{login}/permission", repo_path(repo));
        match self.get(who, &call).await {
            Ok(reply) => {
                let answer: Answer = reply.json(&call)?;
                Ok(match answer.permission.as_str() {
                    "admin" | "maintain" | "write" => Permission::Write,
                    _ => Permission::Read,
                })
            }
            Err(GitHubError::NotFound { .. }) => Ok(Permission::Read),
            Err(error) => Err(error),
        }
    }

    /// The open pull requests of `repo`, or `None` if unchanged since the listing tagged `etag`.
    pub async fn open_pulls(
        &self,
        who: As,
        repo: &Repo,
        etag: Option<&str>,
    ) -> Result<Option<(Vec<Pull>, Option<String>)>, GitHubError> {
        let first = format!("{}/pulls?state=open&per_page=100", repo_path(repo));
        let Some(reply) = self.get_if_changed(who, &first, etag).await? else {
            return Ok(None);
        };
        let new_etag = reply.etag();
        let mut pulls: Vec<Pull> = reply.json(&first)?;
        if let Some(next) = reply.next_page() {
            pulls.extend(self.list::<Pull>(who, &next, None).await?);
        }
        Ok(Some((pulls, new_etag)))
    }

    pub async fn pull(&self, who: As, repo: &Repo, number: PrNumber) -> Result<Pull, GitHubError> {
        let call = format!("{}/pulls/{number}", repo_path(repo));
        self.get(who, &call).await?.json(&call)
    }

    pub async fn comments(&self, who: As, repo: &Repo, number: PrNumber) -> Result<Vec<Comment>, GitHubError> {
        self.list(who, &format!("{}/issues/{number}/comments?per_page=100", repo_path(repo)), None).await
    }

    pub async fn create_comment(&self, who: As, repo: &Repo, number: PrNumber, body: &str) -> Result<i64, GitHubError> {
        let call = format!("{}/issues/{number}/comments", repo_path(repo));
        let created: Created = self.post(who, &call, &json!({ "body": body })).await?.json(&call)?;
        Ok(created.id)
    }

    pub async fn update_comment(&self, who: As, repo: &Repo, id: i64, body: &str) -> Result<(), GitHubError> {
        let call = format!("{}/issues/comments/{id}", repo_path(repo));
        self.patch(who, &call, &json!({ "body": body })).await.map(drop)
    }

    /// Adds reaction `content` (`+1`, `eyes`, `confused`, ...) to a comment.
    pub async fn react(&self, who: As, repo: &Repo, comment: i64, content: &str) -> Result<(), GitHubError> {
        let call = format!("{}/issues/comments/{comment}/reactions", repo_path(repo));
        self.post(who, &call, &json!({ "content": content })).await.map(drop)
    }

    /// Removes `label` from pull request `number`; a label already gone is no error.
    pub async fn remove_label(&self, who: As, repo: &Repo, number: PrNumber, label: &str) -> Result<(), GitHubError> {
        let call = format!("{}/issues/{number}/labels/{}", repo_path(repo), encode_segment(label));
        match self.delete(who, &call).await {
            Ok(_) | Err(GitHubError::NotFound { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Deployments of `sha` to `environment`, newest first.
    pub async fn deployments(
        &self,
        who: As,
        repo: &Repo,
        sha: &str,
        environment: &str,
    ) -> Result<Vec<i64>, GitHubError> {
        let call =
            format!("{}/deployments?sha={sha}&environment={}&per_page=100", repo_path(repo), encode(environment));
        let found: Vec<Created> = self.list(who, &call, None).await?;
        Ok(found.into_iter().map(|d| d.id).collect())
    }

    /// A deployment of `sha` to the transient `environment`. previewd deploys what it is given:
    /// no auto-merge, no required contexts (GitHub would otherwise refuse a head behind its base
    /// or with failing checks).
    pub async fn create_deployment(
        &self,
        who: As,
        repo: &Repo,
        sha: &str,
        environment: &str,
        description: &str,
    ) -> Result<i64, GitHubError> {
        let call = format!("{}/deployments", repo_path(repo));
        let body = json!({
            "ref": sha,
            "environment": environment,
            "description": description,
            "transient_environment": true,
            "production_environment": false,
            "auto_merge": false,
            "required_contexts": [],
        });
        let created: Created = self.post(who, &call, &body).await?.json(&call)?;
        Ok(created.id)
    }

    pub async fn deployment_status(
        &self,
        who: As,
        repo: &Repo,
        deployment: i64,
        state: &str,
        environment_url: Option<&str>,
        description: &str,
    ) -> Result<(), GitHubError> {
        let call = format!("{}/deployments/{deployment}/statuses", repo_path(repo));
        let mut body = json!({ "state": state, "description": truncate(description, 140) });
        if let Some(url) = environment_url {
            body["environment_url"] = json!(url);
        }
        self.post(who, &call, &body).await.map(drop)
    }

    /// Check runs named `name` on `sha`.
    pub async fn check_runs_named(&self, who: As, repo: &Repo, sha: &str, name: &str) -> Result<Vec<i64>, GitHubError> {
        let call = format!("{}/commits/{sha}/check-runs?check_name={}&per_page=100", repo_path(repo), encode(name));
        let runs: Vec<Created> = self.list(who, &call, Some("check_runs")).await?;
        Ok(runs.into_iter().map(|r| r.id).collect())
    }

    /// Creates (`id` None) or updates a check run. `conclusion` completes it.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_check_run(
        &self,
        who: As,
        repo: &Repo,
        id: Option<i64>,
        name: &str,
        sha: &str,
        status: &str,
        conclusion: Option<&str>,
        title: &str,
        summary: &str,
        details_url: Option<&str>,
    ) -> Result<i64, GitHubError> {
        let mut body = json!({
            "name": name,
            "status": status,
            "output": { "title": truncate(title, 255), "summary": truncate(summary, 60_000) },
        });
        if let Some(conclusion) = conclusion {
            body["conclusion"] = json!(conclusion);
        }
        if let Some(url) = details_url {
            body["details_url"] = json!(url);
        }
        match id {
            Some(id) => {
                let call = format!("{}/check-runs/{id}", repo_path(repo));
                self.patch(who, &call, &body).await?;
                Ok(id)
            }
            None => {
                body["head_sha"] = json!(sha);
                let call = format!("{}/check-runs", repo_path(repo));
                let created: Created = self.post(who, &call, &body).await?.json(&call)?;
                Ok(created.id)
            }
        }
    }

    /// Every check run and commit status on `sha` (the repository's CI), by name.
    pub async fn commit_checks(&self, who: As, repo: &Repo, sha: &str) -> Result<Vec<CheckResult>, GitHubError> {
        let runs: Vec<CheckRunItem> = self
            .list(who, &format!("{}/commits/{sha}/check-runs?per_page=100", repo_path(repo)), Some("check_runs"))
            .await?;
        let call = format!("{}/commits/{sha}/status", repo_path(repo));
        let statuses: Vec<StatusItem> = {
            let mut value: serde_json::Value = self.get(who, &call).await?.json(&call)?;
            serde_json::from_value(value.get_mut("statuses").map(serde_json::Value::take).unwrap_or_default())
                .map_err(|e| GitHubError::Decode { call, message: e.to_string() })?
        };
        let mut results: Vec<CheckResult> = runs
            .into_iter()
            .map(|r| CheckResult {
                name: r.name,
                conclusion: if r.status == "completed" { r.conclusion } else { None },
            })
            .collect();
        results.extend(statuses.into_iter().map(|s| CheckResult {
            name: s.context,
            conclusion: match s.state.as_str() {
                "pending" => None,
                other => Some(other.to_owned()),
            },
        }));
        Ok(results)
    }

    /// The App installation that has access to `repo`.
    pub async fn repo_installation(&self, repo: &Repo) -> Result<InstallationId, GitHubError> {
        let call = format!("{}/installation", repo_path(repo));
        let found: Created = self.get(As::App, &call).await?.json(&call)?;
        Ok(InstallationId(found.id))
    }

    /// The App's installations.
    pub async fn installations(&self) -> Result<Vec<InstallationId>, GitHubError> {
        let found: Vec<Created> = self.list(As::App, "/app/installations?per_page=100", None).await?;
        Ok(found.into_iter().map(|i| InstallationId(i.id)).collect())
    }

    /// The repositories an installation can access.
    pub async fn installation_repositories(&self, installation: InstallationId) -> Result<Vec<Repo>, GitHubError> {
        let repos: Vec<RepoRef> = self
            .list(As::Installation(Some(installation)), "/installation/repositories?per_page=100", Some("repositories"))
            .await?;
        Ok(repos.into_iter().map(|r| Repo { id: RepoId(r.id), owner: r.owner.login, name: r.name }).collect())
    }

    /// The App's most recent webhook deliveries, newest first, up to `limit`.
    pub async fn hook_deliveries(&self, limit: usize) -> Result<Vec<HookDelivery>, GitHubError> {
        let mut all = Vec::new();
        let mut next = Some("/app/hook/deliveries?per_page=100".to_owned());
        while let Some(path) = next.take() {
            let reply = self.get(As::App, &path).await?;
            let mut page: Vec<HookDelivery> = reply.json(&path)?;
            let empty = page.is_empty();
            all.append(&mut page);
            if all.len() < limit && !empty {
                next = reply.next_page();
            }
        }
        all.truncate(limit);
        Ok(all)
    }

    /// Asks GitHub to send delivery `id` again.
    pub async fn redeliver(&self, id: i64) -> Result<(), GitHubError> {
        self.post_empty(As::App, &format!("/app/hook/deliveries/{id}/attempts")).await.map(drop)
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// One path segment: a label may hold spaces, `/` or `:`, and `+` means no space in a path.
fn encode_segment(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_encoded_as_one_path_segment() {
        assert_eq!(encode_segment("preview:approve"), "preview%3Aapprove");
        assert_eq!(encode_segment("needs review/ok+1"), "needs%20review%2Fok%2B1");
    }

    #[test]
    fn descriptions_are_cut_to_githubs_limit() {
        let cut = truncate(&"x".repeat(300), 140);
        assert_eq!(cut.chars().count(), 140);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short", 140), "short");
    }

    #[test]
    fn a_head_in_another_repository_is_a_fork() {
        let pull: Pull = serde_json::from_value(json!({
            "number": 3, "state": "open", "draft": false, "labels": [{"name": "preview"}],
            "user": {"login": "dev"},
            "head": {"sha": "a".repeat(40), "ref": "feature", "repo": {"id": 2, "name": "r", "owner": {"login": "fork"}}},
            "base": {"ref": "main", "repo": {"id": 1, "name": "r", "owner": {"login": "o"}}}
        }))
        .unwrap();
        let pr = pull.to_model();
        assert!(pr.from_fork);
        assert_eq!(pr.labels, vec!["preview".to_owned()]);
        assert_eq!(pr.repo.full_name(), "o/r");
    }
}
