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

/// A pull request of repository `id` (`owner/name`) as the store and engine tests build them:
/// head `a…a` on branch `feature`, by `dev`, not a fork, not a draft, no labels.
pub fn pull_request(id: i64, owner: &str, name: &str, number: i64) -> previewd_environments::model::PullRequest {
    use previewd_environments::model::{CommitSha, PrNumber, PullRequest, Repo, RepoId};
    PullRequest {
        repo: Repo { id: RepoId(id), owner: owner.to_owned(), name: name.to_owned() },
        number: PrNumber(number),
        head_sha: CommitSha("a".repeat(40)),
        head_branch: "feature".into(),
        author: "dev".into(),
        from_fork: false,
        draft: false,
        labels: vec![],
    }
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

/// The template context of a one-service environment, written as tests write it (the service's
/// fields at the top, as `.preview.yaml`'s one-service form has them), in the shape the templates
/// take: the fields moved into `services[0]` (named `app`, public, at the environment's host),
/// and the routing, TLS and database fields at their defaults.
pub fn one_service_context(mut context: serde_json::Value) -> serde_json::Value {
    let Some(object) = context.as_object_mut() else { return context };
    let take = |object: &mut serde_json::Map<String, serde_json::Value>, key: &str| {
        object.remove(key).unwrap_or(serde_json::Value::Null)
    };
    let annotations = object["ingress"]["annotations"].clone();
    let service = serde_json::json!({
        "name": "app",
        "image": take(object, "image"),
        "port": take(object, "port"),
        "replicas": take(object, "replicas"),
        "command": [], "args": [],
        "env": take(object, "env"),
        "platform_secrets": object["platform_secrets"].clone(),
        "generated_secrets": object["generated_secrets"].clone(),
        "resources": take(object, "resources"),
        "health_check_path": take(object, "health_check_path"),
        "public": true,
        "host": object["host"].clone(),
        "url": object["url"].clone(),
        "route_annotations": annotations,
    });
    object.insert("services".into(), serde_json::json!([service]));
    object.insert("database".into(), serde_json::Value::Null);
    object.insert("image_pull_secrets".into(), serde_json::json!([]));
    object.insert("tls_secret".into(), object["ingress"]["tls_secret_name"].clone());
    object.insert("routing".into(), "ingress".into());
    object.insert("gateway".into(), serde_json::json!({"parent_refs": []}));
    object.insert("asleep".into(), false.into());
    object["ingress"]["tls"] = "copy".into();
    context
}

/// The pod annotation from which the test cluster's kwok takes how long a pod needs to become
/// Ready (`e2e/controlplane/kwok-stages.yaml`); without it a pod is Ready at once.
pub const POD_READY_DELAY_ANNOTATION: &str = "pod-ready.stage.kwok.x-k8s.io/delay";

/// The pod annotation from which kwok takes how long a Job's pod runs before it completes.
pub const POD_COMPLETE_DELAY_ANNOTATION: &str = "pod-complete.stage.kwok.x-k8s.io/delay";
/// The pod annotation that makes kwok end a Job's pod as failed (exit status 1).
pub const POD_FAIL_ANNOTATION: &str = "pod-complete.stage.kwok.x-k8s.io/fail";

/// How long the test cluster's simulated pods take, as real ones would.
#[derive(Debug, Clone, Copy, Default)]
pub struct PodDelays {
    /// Every pod of the `web` set (services, database, seed) until Ready.
    pub ready: std::time::Duration,
    /// The seed's pod, after it runs, until it completes.
    pub seed: std::time::Duration,
    /// The seed fails instead of completing.
    pub seed_fails: bool,
}

/// A copy of the repository's templates (`templates/`, usable as previewd's `--templates`) in a
/// temporary folder, in which the `web` set's Deployment gives its pods
/// [`POD_READY_DELAY_ANNOTATION`] = `delay`: on the test cluster its pods then take `delay` to
/// become Ready, as pulled images and readiness probes make real pods take. The folder is
/// removed when the returned value is dropped.
pub fn templates_with_pod_ready_delay(delay: std::time::Duration) -> anyhow::Result<tempfile::TempDir> {
    templates_with_delays(PodDelays { ready: delay, ..PodDelays::default() })
}

/// As [`templates_with_pod_ready_delay`], for every pod of the `web` set: the services', the
/// database's and the seed's, whose pod also runs for `delays.seed` (and fails if asked).
pub fn templates_with_delays(delays: PodDelays) -> anyhow::Result<tempfile::TempDir> {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../templates");
    let dir = tempfile::tempdir().context("creating a folder for the templates")?;
    copy_tree(&source, dir.path())?;
    // Milliseconds: a Go duration kwok parses, and nothing a template could misread.
    let line =
        |annotation: &str, delay: std::time::Duration| format!("        {annotation}: \"{}ms\"\n", delay.as_millis());
    let ready = line(POD_READY_DELAY_ANNOTATION, delays.ready);
    let edit = |file: &str, anchor: &str, insert: &str, after: bool| -> anyhow::Result<()> {
        let path = dir.path().join("environments/web").join(file);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        anyhow::ensure!(text.contains(anchor), "{file} has no {anchor:?} to extend");
        let replaced = if after { format!("{anchor}{insert}") } else { format!("{insert}{anchor}") };
        std::fs::write(&path, text.replacen(anchor, &replaced, 1))
            .with_context(|| format!("writing {}", path.display()))
    };
    // The pod templates' annotations: the services' Deployments, then the seed Job's.
    edit(
        "30-app.yaml",
        "  template:\n    metadata:\n      labels:\n        app.kubernetes.io/name: {{ s.name | tojson }}\n      annotations:\n",
        &ready,
        true,
    )?;
    let mut seed = format!("{ready}{}", line(POD_COMPLETE_DELAY_ANNOTATION, delays.seed));
    if delays.seed_fails {
        seed.push_str(&format!("        {POD_FAIL_ANNOTATION}: \"true\"\n"));
    }
    edit("30-app.yaml", "        app.kubernetes.io/name: seed\n      annotations:\n", &seed, true)?;
    edit(
        "40-database.yaml",
        "    spec:\n      serviceAccountName: app\n",
        &format!("      annotations:\n{ready}"),
        false,
    )?;
    Ok(dir)
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {} to {}", entry.path().display(), target.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use previewd_environments::render::{Ownership, Renderer};
    use serde_json::json;

    #[test]
    fn delayed_templates_annotate_the_pods_of_the_web_deployment() {
        let dir = templates_with_pod_ready_delay(std::time::Duration::from_secs(20)).unwrap();
        let renderer = Renderer::load(dir.path()).unwrap();
        let context = one_service_context(json!({
            "name": "pr-7-app-0a1b2c3d", "host": "pr-7.preview.test", "url": "https://pr-7.preview.test",
            "repo": {"id": 42, "owner": "octo", "name": "app"}, "pr": 7,
            "head_sha": "0123456789abcdef0123456789abcdef01234567",
            "image": "registry.preview.test/octo/app:1", "port": 8080, "replicas": 1,
            "env": {}, "platform_secrets": [], "generated_secrets": [],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}},
            "quota": {"cpu": "1", "memory": "1Gi", "pods": 10},
            "limit_range": {"default_request": {"cpu": "50m", "memory": "32Mi"}, "default_limit": {"cpu": "100m", "memory": "64Mi"}, "max": {"cpu": "1", "memory": "512Mi"}},
            "health_check_path": "/healthz", "template": "web",
            "ingress": {"class_name": null, "controller_namespace": "ingress-nginx", "tls_secret_name": null, "annotations": {}},
            "egress_cidrs": [], "from_fork": false, "expires_at": "2026-12-01T12:00:00Z"
        }));
        let owner = Ownership { instance: "test".into(), environment: "pr-7-app-0a1b2c3d".into(), repo_id: 42, pr: 7 };
        let manifests = renderer.render("web", &context, &owner).unwrap();
        let deployment = manifests.iter().find(|m| m.name == "app" && m.object["kind"] == "Deployment").unwrap();
        let annotations = &deployment.object["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations[POD_READY_DELAY_ANNOTATION], "20000ms", "{annotations}");
        // Nothing else of the set changed.
        for file in ["00-namespace.yaml", "10-quota.yaml", "20-network.yaml"] {
            let copy = std::fs::read(dir.path().join("environments/web").join(file)).unwrap();
            let original = std::fs::read(
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../templates/environments/web").join(file),
            )
            .unwrap();
            assert_eq!(copy, original, "{file}");
        }
        assert!(dir.path().join("github/comment.md").is_file());
    }
}
