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
