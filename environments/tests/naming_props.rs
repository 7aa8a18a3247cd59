//! Properties of environment names over arbitrary repository names (unicode, punctuation, 500
//! characters) and pull request numbers up to `i64::MAX`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use previewd_environments::model::{PrNumber, Repo, RepoId};
use previewd_environments::naming::{
    MAX_LABEL_LEN, environment_name, hostname, is_dns1123_label, is_dns1123_subdomain,
};
use proptest::prelude::*;
use std::collections::HashMap;

fn repo(id: i64, owner: &str, name: &str) -> Repo {
    Repo { id: RepoId(id), owner: owner.to_owned(), name: name.to_owned() }
}

/// Repository and owner names: GitHub-like ones, arbitrary unicode, and punctuation-only ones.
fn names() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9._-]{1,100}",
        "\\PC{0,500}",
        ".{0,500}",
        "[-._ ]{0,20}",
        "[a-z]{60,500}",
        "([a-z]{1,5}[-_.]{1,3}){1,40}",
    ]
}

/// The slug as the naming rules describe it, computed independently.
fn expected_slug(name: &str) -> String {
    let mapped: String =
        name.chars().map(|c| c.to_ascii_lowercase()).map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    mapped.split('-').filter(|part| !part.is_empty()).collect::<Vec<_>>().join("-")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn always_a_valid_label(id in 1..i64::MAX, owner in names(), name in names(), pr in 1..=i64::MAX) {
        let label = environment_name(&repo(id, &owner, &name), PrNumber(pr));
        prop_assert!(label.len() <= MAX_LABEL_LEN, "{} is {} characters", label, label.len());
        prop_assert!(is_dns1123_label(&label), "{:?} is not a DNS-1123 label", label);
        prop_assert!(is_dns1123_subdomain(&hostname(&label, "preview.example.com")));
    }

    #[test]
    fn deterministic_and_independent_of_the_owner(id in 1..i64::MAX, owner in names(), other_owner in names(), name in names(), pr in 1..=i64::MAX) {
        let first = environment_name(&repo(id, &owner, &name), PrNumber(pr));
        prop_assert_eq!(&first, &environment_name(&repo(id, &owner, &name), PrNumber(pr)));
        // A transfer to another owner keeps the id, and so the name.
        prop_assert_eq!(&first, &environment_name(&repo(id, &other_owner, &name), PrNumber(pr)));
    }

    #[test]
    fn distinct_pull_requests_get_distinct_names(id in 1..i64::MAX, name in names(), a in 1..=i64::MAX, b in 1..=i64::MAX) {
        prop_assume!(a != b);
        let r = repo(id, "o", &name);
        prop_assert_ne!(environment_name(&r, PrNumber(a)), environment_name(&r, PrNumber(b)));
    }

    #[test]
    fn readable(id in 1..i64::MAX, name in names(), pr in 1..1_000_000i64) {
        let label = environment_name(&repo(id, "o", &name), PrNumber(pr));
        let marker = format!("-pr-{pr}-");
        prop_assert!(label.contains(&marker), "{:?} lacks {:?}", label, marker);
        let slug = expected_slug(&name);
        if slug.is_empty() {
            prop_assert!(label.starts_with("repo-pr-"), "{:?}", label);
        } else {
            // With a pull request number below a million the suffix is at most 17 characters, so
            // at least 46 of the slug survive.
            let kept = slug[..slug.len().min(MAX_LABEL_LEN - marker.len() - 6)].trim_end_matches('-');
            prop_assert!(label.starts_with(&format!("{kept}-pr-")), "{:?} should start with {:?}", label, kept);
        }
    }
}

#[test]
fn distinct_for_thousands_of_repositories_with_the_same_name() {
    let mut seen: HashMap<String, i64> = HashMap::new();
    for id in 1..=5000 {
        let name = environment_name(&repo(id, &format!("org{id}"), "app"), PrNumber(1));
        if let Some(other) = seen.insert(name.clone(), id) {
            panic!("repositories {other} and {id} both get {name}");
        }
    }
}

/// The hash is 24 bits, so collisions exist (ids 4163 and 8864 are one); the store's unique
/// index on the environment name turns one into a refused insert rather than a shared namespace.
#[test]
fn the_short_hash_can_collide_which_is_why_the_store_enforces_uniqueness() {
    assert_eq!(
        environment_name(&repo(4163, "a", "app"), PrNumber(1)),
        environment_name(&repo(8864, "b", "app"), PrNumber(1))
    );
}

#[test]
fn extreme_inputs() {
    for (name, pr) in [("", 1), ("-", i64::MAX), ("🦀".repeat(500).as_str(), 1), ("a".repeat(500).as_str(), i64::MAX)]
    {
        let label = environment_name(&repo(i64::MAX, "o", name), PrNumber(pr));
        assert!(is_dns1123_label(&label), "{label}");
    }
}
