//! Property test of the webhook classifier: whatever a signed delivery holds, `classify` answers
//! in bounded time with a typed result, never a panic. Inputs are arbitrary event names with
//! arbitrary bytes, arbitrary JSON documents, and GitHub's published examples of the events
//! previewd follows with fields deleted, retyped or replaced (the inputs closest to what could
//! slip past a shape check).
//!
//! Cases: proptest's default (256), or `PROPTEST_CASES`; the README gives the longer run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use previewd::github::events::{Classified, Event, PayloadError, classify};
use previewd_e2e::fixtures::examples_of;
use proptest::prelude::*;
use serde_json::{Map, Value};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The event types `classify` reads a shape for, plus ones it ignores.
const EVENTS: &[&str] = &[
    "ping",
    "pull_request",
    "issue_comment",
    "installation",
    "installation_repositories",
    "check_suite",
    "check_run",
    "workflow_run",
    "status",
    "push",
    "star",
];

/// One input may take this long at most. A parse of the largest input here takes well under a
/// millisecond; the bound is generous for a loaded 2-core machine and still catches a blow-up.
const PER_INPUT: Duration = Duration::from_secs(2);

/// GitHub's published examples of the followed events, with their event names.
fn examples() -> &'static [(String, Value)] {
    static EXAMPLES: OnceLock<Vec<(String, Value)>> = OnceLock::new();
    EXAMPLES.get_or_init(|| {
        EVENTS
            .iter()
            .filter(|e| !matches!(**e, "push" | "star"))
            .flat_map(|event| {
                examples_of(event).expect("GitHub's published examples").into_iter().map(|v| (event.to_string(), v))
            })
            .collect()
    })
}

fn event_names() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(EVENTS).prop_map(str::to_owned),
        1 => "\\PC{0,40}",
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "\\PC{0,30}".prop_map(Value::String),
        // Values the classifier compares against.
        proptest::sample::select(
            &["opened", "closed", "created", "completed", "pending", "/preview up", "synchronize"][..]
        )
        .prop_map(Value::from),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

/// The keys `classify` reads somewhere in the payloads it parses: changing them is what could
/// slip past a shape check, so they are mutated most often.
const READ_KEYS: &[&str] = &[
    "action",
    "number",
    "pull_request",
    "head",
    "repo",
    "sha",
    "ref",
    "id",
    "name",
    "owner",
    "login",
    "user",
    "draft",
    "merged",
    "labels",
    "label",
    "sender",
    "installation",
    "issue",
    "comment",
    "body",
    "repositories",
    "repositories_added",
    "repositories_removed",
    "full_name",
    "account",
    "check_suite",
    "check_run",
    "workflow_run",
    "head_sha",
    "conclusion",
    "app",
    "state",
    "context",
    "repository",
];

/// What a mutation does to the value it reaches.
#[derive(Debug, Clone)]
enum Change {
    Delete,
    Replace(Value),
    /// The same value as a string (`"number": "7"`).
    Stringify,
}

/// Where a mutation applies: the `n`-th object member in depth-first order, or the `n`-th
/// member named `key`.
#[derive(Debug, Clone)]
enum Target {
    Node(usize),
    Key(&'static str, usize),
}

/// Values a hostile or broken sender would try where GitHub puts ids, names and flags.
fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        json(),
        proptest::sample::select(&[i64::MIN, -1, 0, i64::MAX][..]).prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        Just(Value::from(1e300)),
        "[a-z/]{0,8}".prop_map(Value::String),
        proptest::collection::vec(any::<char>(), 1000..4000).prop_map(|c| Value::String(c.into_iter().collect())),
    ]
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![Just(Change::Delete), hostile_value().prop_map(Change::Replace), Just(Change::Stringify)]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        1 => (0..400usize).prop_map(Target::Node),
        3 => (proptest::sample::select(READ_KEYS), 0..4usize).prop_map(|(key, n)| Target::Key(key, n)),
    ]
}

/// Applies `change` to the member `target` names, counting down `*left`; true once done.
fn mutate(value: &mut Value, target: &Target, left: &mut usize, change: &Change) -> bool {
    let keys: Vec<String> = match value {
        Value::Object(map) => map.keys().cloned().collect(),
        _ => Vec::new(),
    };
    for key in keys {
        let Value::Object(map) = value else { return false };
        let counts = match target {
            Target::Node(_) => true,
            Target::Key(name, _) => key == *name,
        };
        if counts && *left == 0 {
            match change {
                Change::Delete => {
                    map.remove(&key);
                }
                Change::Replace(new) => {
                    map.insert(key, new.clone());
                }
                Change::Stringify => {
                    let text = map[&key].to_string();
                    map.insert(key, Value::String(text));
                }
            }
            return true;
        }
        if counts {
            *left -= 1;
        }
        if let Some(child) = map.get_mut(&key)
            && mutate(child, target, left, change)
        {
            return true;
        }
    }
    if let Value::Array(items) = value {
        for item in items {
            if mutate(item, target, left, change) {
                return true;
            }
        }
    }
    false
}

fn near_github() -> impl Strategy<Value = (String, Vec<u8>)> {
    let count = examples().len();
    (0..count, proptest::collection::vec((target(), change()), 1..4), 0..8u8).prop_map(
        move |(index, mutations, rename)| {
            let (event, example) = &examples()[index];
            let mut payload = example.clone();
            for (target, change) in &mutations {
                let mut left = match target {
                    Target::Node(n) | Target::Key(_, n) => *n,
                };
                mutate(&mut payload, target, &mut left, change);
            }
            // Mostly under its own event name, sometimes under another one's.
            let event = if rename == 0 { EVENTS[index % EVENTS.len()].to_owned() } else { event.clone() };
            (event, serde_json::to_vec(&payload).unwrap())
        },
    )
}

fn deliveries() -> impl Strategy<Value = (String, Vec<u8>)> {
    prop_oneof![
        2 => (event_names(), proptest::collection::vec(any::<u8>(), 0..512)),
        3 => (event_names(), json().prop_map(|v| serde_json::to_vec(&v).unwrap())),
        5 => near_github(),
        // Truncated JSON: a body cut anywhere.
        1 => (near_github(), any::<proptest::sample::Index>()).prop_map(|((event, body), cut)| {
            let at = cut.index(body.len().max(1));
            (event, body[..at.min(body.len())].to_vec())
        }),
    ]
}

proptest! {
    #[test]
    fn fuzz_classify((event, body) in deliveries()) {
        let started = Instant::now();
        let result = classify(&event, &body);
        let took = started.elapsed();
        prop_assert!(took < PER_INPUT, "classify took {took:?} on a {}-byte `{event}` body", body.len());
        match result {
            Ok(Classified::Act { event: acted, .. }) => {
                // What the handler stores in the job must encode and decode again unchanged.
                let stored = serde_json::to_string(&acted).unwrap();
                let back: Event = serde_json::from_str(&stored).unwrap();
                prop_assert_eq!(&back, acted.as_ref());
            }
            Ok(Classified::Ping | Classified::Ignored { .. }) => {}
            Err(PayloadError::Json(error)) => {
                prop_assert!(!error.is_data(), "a JSON error is a syntax or EOF error: {error}");
            }
            Err(PayloadError::Shape { event: named, source }) => {
                prop_assert_eq!(&named, &event, "the shape error names the delivery's event");
                prop_assert!(source.is_data(), "a shape error is a data error: {source}");
            }
        }
    }
}
