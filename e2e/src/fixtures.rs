//! GitHub's published example webhook payloads (npm `@octokit/webhooks-examples`, MIT licence,
//! pinned in `e2e/package.json` and installed by `e2e/test.sh` with `npm ci`).

use anyhow::Context;
use serde::Deserialize;
use std::path::PathBuf;

/// All examples of one event type.
#[derive(Debug, Deserialize)]
pub struct EventExamples {
    pub name: String,
    pub examples: Vec<serde_json::Value>,
}

fn index_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node_modules/@octokit/webhooks-examples/api.github.com/index.json")
}

/// Every published example, by event type.
pub fn webhook_examples() -> anyhow::Result<Vec<EventExamples>> {
    let path = index_path();
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("reading {} (install the pinned examples with `npm ci --prefix e2e`; e2e/test.sh does)", path.display())
    })?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The examples of event type `event`; an error if there are none.
pub fn examples_of(event: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    webhook_examples()?
        .into_iter()
        .find(|e| e.name == event)
        .map(|e| e.examples)
        .filter(|examples| !examples.is_empty())
        .with_context(|| format!("no published example for `{event}`"))
}

/// The first example of `event` whose `action` is `action`.
pub fn example(event: &str, action: &str) -> anyhow::Result<serde_json::Value> {
    examples_of(event)?
        .into_iter()
        .find(|e| e.get("action").and_then(|a| a.as_str()) == Some(action))
        .with_context(|| format!("no published `{event}` example with action `{action}`"))
}

/// Now as GitHub writes times in payloads (`2019-05-15T15:20:33Z`: UTC, whole seconds).
pub fn github_now() -> String {
    github_time(previewd_environments::time::now_ms())
}

/// `ms` (milliseconds since the epoch) as GitHub writes times in payloads.
pub fn github_time(ms: i64) -> String {
    previewd_environments::time::rfc3339(ms)
}

/// The repository a scenario's deliveries are about: the fields of GitHub's examples a scenario
/// adjusts, so every test, benchmark and the demo build deliveries the same way.
#[derive(Debug, Clone)]
pub struct TestRepo {
    pub id: i64,
    pub owner: String,
    pub name: String,
    pub installation: i64,
}

impl TestRepo {
    /// A `pull_request` delivery from GitHub's published `opened` example: `action` on pull
    /// request `number` of this repository at commit `head`, from branch `feature-<number>` of
    /// the same repository, by `dev`, not a draft, without labels, not merged.
    pub fn pull_request(&self, action: &str, number: i64, head: &str) -> anyhow::Result<serde_json::Value> {
        let mut p = example("pull_request", "opened")?;
        p["action"] = action.into();
        p["number"] = number.into();
        for path in [&["repository"][..], &["pull_request", "base", "repo"], &["pull_request", "head", "repo"]] {
            let target = path.iter().fold(&mut p, |v, k| &mut v[*k]);
            self.describe(target);
        }
        let pull = &mut p["pull_request"];
        pull["number"] = number.into();
        pull["head"]["sha"] = head.into();
        pull["head"]["ref"] = format!("feature-{number}").into();
        pull["user"]["login"] = "dev".into();
        pull["draft"] = false.into();
        pull["labels"] = serde_json::json!([]);
        pull["merged"] = false.into();
        // GitHub's time of the change is the time of the delivery: a test that orders events
        // in GitHub's time (a push after a comment) sets it itself.
        pull["updated_at"] = github_now().into();
        p["installation"]["id"] = self.installation.into();
        Ok(p)
    }

    /// An `issue_comment` `created` delivery from GitHub's published example: `login` commented
    /// `body` (comment `comment_id`) on pull request `number`.
    pub fn comment(&self, number: i64, comment_id: i64, login: &str, body: &str) -> anyhow::Result<serde_json::Value> {
        let mut p = example("issue_comment", "created")?;
        self.describe(&mut p["repository"]);
        p["issue"]["number"] = number.into();
        p["issue"]["pull_request"] = serde_json::json!({
            "url": format!("https://api.github.com/repos/{}/{}/pulls/{number}", self.owner, self.name)
        });
        p["comment"]["id"] = comment_id.into();
        p["comment"]["body"] = body.into();
        p["comment"]["user"]["login"] = login.into();
        p["comment"]["created_at"] = github_now().into();
        p["comment"]["updated_at"] = github_now().into();
        p["installation"]["id"] = self.installation.into();
        Ok(p)
    }

    fn describe(&self, repository: &mut serde_json::Value) {
        repository["id"] = self.id.into();
        repository["name"] = self.name.clone().into();
        repository["full_name"] = format!("{}/{}", self.owner, self.name).into();
        repository["owner"]["login"] = self.owner.clone().into();
    }
}
