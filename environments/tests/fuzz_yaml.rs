//! Fuzz targets, as property tests on stable Rust, for the YAML previewd reads from people it
//! does not control: a repository's `.preview.yaml` ([`RepoConfig::from_yaml`]) and the platform
//! policy ([`Policy::from_yaml`]). Inputs are arbitrary bytes and text, and YAML-like trees with
//! nesting, anchors and aliases, long scalars and previewd's own field names. Whatever the
//! input: no panic, an answer within a bound of time, and either a value or one of the typed
//! errors, whose message names the file. Anchors and aliases never get through a repository's
//! file.
//!
//! The configuration is proptest's default, so `PROPTEST_CASES` sets the number of inputs per
//! target (256 when unset: the short run of the test command).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use previewd_environments::policy::{Policy, PolicyError};
use previewd_environments::repo_config::{RepoConfig, RepoConfigError};
use previewd_environments::yaml::MAX_REPOSITORY_FILE_BYTES;
use proptest::prelude::*;
use std::time::{Duration, Instant};

/// The most one input may take. Generous: inputs parse in micro- to milliseconds, but this
/// machine is slow and shared, and a debug build is several times slower than a release one.
const BOUND: Duration = Duration::from_secs(5);

/// A YAML-like tree, written out as text by [`Node::write`].
#[derive(Debug, Clone)]
enum Node {
    Scalar(String),
    /// `n` repetitions of `unit`: a long scalar without a long strategy.
    Long(String, usize),
    Anchored(String, Box<Node>),
    Alias(String),
    Seq(Vec<Node>, bool),
    Map(Vec<(String, Node)>, bool),
}

impl Node {
    fn has_anchor_or_alias(&self) -> bool {
        match self {
            Node::Anchored(..) | Node::Alias(_) => true,
            Node::Seq(items, _) => items.iter().any(Node::has_anchor_or_alias),
            Node::Map(entries, _) => entries.iter().any(|(_, v)| v.has_anchor_or_alias()),
            Node::Scalar(_) | Node::Long(..) => false,
        }
    }

    /// Writes the node at `indent`, in flow style (`[..]`, `{..}`) or block style.
    fn write(&self, out: &mut String, indent: usize, flow: bool) {
        match self {
            Node::Scalar(s) => out.push_str(s),
            Node::Long(unit, n) => out.push_str(&unit.repeat(*n)),
            Node::Anchored(name, node) => {
                out.push('&');
                out.push_str(name);
                out.push(' ');
                node.write(out, indent, flow);
            }
            Node::Alias(name) => {
                out.push('*');
                out.push_str(name);
            }
            Node::Seq(items, block) if *block && !flow && !items.is_empty() => {
                for item in items {
                    out.push('\n');
                    out.push_str(&" ".repeat(indent));
                    out.push_str("- ");
                    item.write(out, indent + 2, false);
                }
            }
            Node::Map(entries, block) if *block && !flow && !entries.is_empty() => {
                for (key, value) in entries {
                    out.push('\n');
                    out.push_str(&" ".repeat(indent));
                    out.push_str(key);
                    out.push_str(": ");
                    value.write(out, indent + 2, false);
                }
            }
            Node::Seq(items, _) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write(out, indent, true);
                }
                out.push(']');
            }
            Node::Map(entries, _) => {
                out.push('{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(key);
                    out.push_str(": ");
                    value.write(out, indent, true);
                }
                out.push('}');
            }
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0, false);
        out.push('\n');
        out
    }
}

/// Keys: previewd's own field names (so inputs reach past the top level), and others.
fn keys(names: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(names).prop_map(str::to_owned),
        1 => "[a-z_]{1,12}",
        1 => "\"[^\"\\\\]{0,12}\"",
        1 => Just("<<".to_owned()),
    ]
}

fn scalars() -> impl Strategy<Value = Node> {
    prop_oneof![
        "[a-zA-Z0-9_./:{}-]{0,24}".prop_map(Node::Scalar),
        "[0-9]{1,25}".prop_map(Node::Scalar),
        proptest::sample::select(&[
            "~",
            "null",
            "true",
            "yes",
            "on",
            "0755",
            "1_000",
            "1e999",
            ".nan",
            "-.inf",
            "''",
            "\"\"",
            "!!str 1",
            "!!binary aGk=",
            "!custom x",
            "|\n  text",
            ">-\n  folded",
            "\"\\u0000\"",
            "'it''s'",
            "250m",
            "1Gi",
            "ghcr.io/acme/app:{sha}",
            "48h",
            "0s",
            "-1",
            "99999999999999999999999",
        ])
        .prop_map(|s| Node::Scalar(s.to_owned())),
        ("[a-z\"'\\\\ #:]{1,3}", 1..40_000usize).prop_map(|(unit, n)| Node::Long(unit, n)),
    ]
}

/// Trees up to 8 levels deep and a few hundred nodes, with anchors and aliases among them.
fn trees(names: &'static [&'static str]) -> impl Strategy<Value = Node> {
    let anchors = proptest::sample::select(&["a", "b", "leaf"][..]).prop_map(str::to_owned);
    let leaf = prop_oneof![
        6 => scalars(),
        1 => anchors.clone().prop_map(Node::Alias),
    ];
    leaf.prop_recursive(8, 256, 8, move |inner| {
        prop_oneof![
            (prop::collection::vec(inner.clone(), 0..8), any::<bool>())
                .prop_map(|(items, block)| Node::Seq(items, block)),
            (prop::collection::vec((keys(names), inner.clone()), 0..8), any::<bool>())
                .prop_map(|(entries, block)| Node::Map(entries, block)),
            (anchors.clone(), inner).prop_map(|(name, node)| Node::Anchored(name, Box::new(node))),
        ]
    })
}

/// The top level: a mapping of previewd's fields, as the files are.
fn documents(names: &'static [&'static str]) -> impl Strategy<Value = Node> {
    (prop::collection::vec((keys(names), trees(names)), 0..10), any::<bool>())
        .prop_map(|(entries, block)| Node::Map(entries, block))
}

/// Texts that are nearly YAML: a tree's text cut, spliced or with a character changed.
fn mangled(names: &'static [&'static str]) -> impl Strategy<Value = String> {
    (documents(names), any::<prop::sample::Index>(), any::<prop::sample::Index>(), "\\PC{0,3}").prop_map(
        |(node, at, to, insert)| {
            let text = node.text();
            let chars: Vec<char> = text.chars().collect();
            let (a, b) = (at.index(chars.len() + 1), to.index(chars.len() + 1));
            let (start, end) = (a.min(b), a.max(b));
            let mut out: String = chars[..start].iter().collect();
            out.push_str(&insert);
            out.extend(&chars[end..]);
            out
        },
    )
}

/// Alias bombs and their relatives: an anchored collection and many aliases of it, nested.
fn bombs() -> impl Strategy<Value = String> {
    // Mostly small, so that a short run is short: every large one costs the parser its whole
    // budget before it is refused.
    let size = || prop_oneof![4 => 1..50usize, 1 => 50..5000usize];
    (size(), size(), 1..4usize).prop_map(|(width, fanout, levels)| {
        let mut text = format!("x0: &l0 [{}]\n", vec!["x"; width].join(", "));
        for level in 1..=levels {
            let aliases = vec![format!("*l{}", level - 1); fanout].join(", ");
            text.push_str(&format!("x{level}: &l{level} [{aliases}]\n"));
        }
        text
    })
}

const REPO_FIELDS: &[&str] = &[
    "image",
    "port",
    "replicas",
    "env",
    "secrets",
    "generated_secrets",
    "resources",
    "requests",
    "limits",
    "cpu",
    "memory",
    "health_check",
    "path",
    "template",
    "ttl",
];

const POLICY_FIELDS: &[&str] = &[
    "base_domain",
    "ttl",
    "default",
    "max",
    "warn_before",
    "limits",
    "global",
    "per_organization",
    "per_repository",
    "when_full",
    "resources",
    "quota",
    "defaults",
    "caps",
    "cpu",
    "memory",
    "pods",
    "container",
    "max_replicas",
    "allowed_registries",
    "forks",
    "trigger",
    "mode",
    "label",
    "drafts",
    "keep_label",
    "approve_label",
    "templates",
    "ingress",
    "network",
    "egress_cidrs",
    "secrets",
    "allowed",
    "source_namespace",
    "repositories",
    "dns",
    "provider",
    "allow",
    "required_checks",
];

/// Parses `text` as a `.preview.yaml` within the bound; checks the answer is typed and worded.
fn repo_config(text: &str) -> Result<RepoConfig, RepoConfigError> {
    let started = Instant::now();
    let result = RepoConfig::from_yaml(text);
    assert!(started.elapsed() < BOUND, "took {:?} on {} bytes", started.elapsed(), text.len());
    if let Err(error) = &result {
        let message = error.to_string();
        assert!(message.starts_with(".preview.yaml"), "{message}");
        if text.len() > MAX_REPOSITORY_FILE_BYTES {
            assert!(matches!(error, RepoConfigError::TooLarge { .. }), "{error:?}");
        }
    }
    result
}

/// Parses `text` as the policy within the bound; checks the answer is typed and worded.
fn policy(text: &str) -> Result<Policy, PolicyError> {
    let started = Instant::now();
    let result = Policy::from_yaml(text, "policy.yaml");
    assert!(started.elapsed() < BOUND, "took {:?} on {} bytes", started.elapsed(), text.len());
    match &result {
        Err(error @ (PolicyError::Parse { .. } | PolicyError::Invalid { .. })) => {
            let message = error.to_string();
            assert!(message.lines().all(|line| line.starts_with("policy.yaml: ")), "{message}");
        }
        Ok(_) => {}
    }
    result
}

proptest! {
    #[test]
    fn fuzz_repo_config_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        repo_config(&String::from_utf8_lossy(&bytes)).ok();
    }

    #[test]
    fn fuzz_repo_config_text(text in "\\PC{0,2000}") {
        repo_config(&text).ok();
    }

    #[test]
    fn fuzz_repo_config_structured(document in documents(REPO_FIELDS)) {
        let text = document.text();
        let result = repo_config(&text);
        if document.has_anchor_or_alias() {
            prop_assert!(result.is_err(), "anchors or aliases got through: {text}");
        }
    }

    #[test]
    fn fuzz_repo_config_mangled(text in mangled(REPO_FIELDS)) {
        repo_config(&text).ok();
    }

    #[test]
    fn fuzz_repo_config_alias_bombs(text in bombs()) {
        let error = repo_config(&text).unwrap_err();
        let refused = matches!(error, RepoConfigError::TooLarge { .. })
            || error.to_string().contains("anchors and aliases (`&name`, `*name`) are not allowed");
        prop_assert!(refused, "{:?}", error);
    }

    #[test]
    fn fuzz_policy_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        policy(&String::from_utf8_lossy(&bytes)).ok();
    }

    #[test]
    fn fuzz_policy_text(text in "\\PC{0,2000}") {
        policy(&text).ok();
    }

    #[test]
    fn fuzz_policy_structured(document in documents(POLICY_FIELDS)) {
        policy(&document.text()).ok();
    }

    #[test]
    fn fuzz_policy_mangled(text in mangled(POLICY_FIELDS)) {
        policy(&text).ok();
    }

    #[test]
    fn fuzz_policy_alias_bombs(text in bombs()) {
        // Anchors are allowed in the policy, within the budget: a small expansion parses (and
        // fails as a policy), a large one is refused by the budget; either way, in bounded time.
        prop_assert!(policy(&text).is_err());
    }
}
