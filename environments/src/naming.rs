//! The name of a pull request's environment: its namespace, and the single DNS label of its
//! hostname under the platform's base domain.
//!
//! One label serves both so that a person who sees `shop-pr-42-3f9a1c` in a URL finds the same
//! string in `kubectl get ns`. Keeping the host a single label directly under the base domain
//! (`shop-pr-42-3f9a1c.preview.example.com`) lets one wildcard certificate and one wildcard DNS
//! record cover every preview.
//!
//! The name is `<slug>-pr-<number>-<hash>`:
//! - `slug` is the repository *name* made DNS-safe, for people. The owner is left out: it rarely
//!   tells environments apart within one platform and would eat the 63 characters.
//! - `hash` is the first 6 hex digits of SHA-256 of the repository's GitHub id, the environment's
//!   key. Two repositories with the same name in different organisations (or a fork with the same
//!   name) get different names, and a renamed repository keeps its hash. Because a rename changes
//!   the slug, callers must look environments up by (repository id, pull request number) and use
//!   the stored name, never recompute it to find an existing environment.
//! - The hash is 24 bits: two repositories with the same name and the same pull request number
//!   collide with probability about 1 in 16 million. The store keeps environment names unique,
//!   so such a collision becomes a refused insert, never two pull requests sharing a namespace.

use crate::model::{PrNumber, Repo};
use sha2::{Digest, Sha256};

/// The longest DNS-1123 label, and so the longest namespace name and hostname label.
pub const MAX_LABEL_LEN: usize = 63;

/// The longest DNS name (RFC 1123 §2.1, as Kubernetes checks it).
pub const MAX_DNS_NAME_LEN: usize = 253;

const HASH_HEX_LEN: usize = 6;

/// The environment's namespace and host label for pull request `pr` of `repo`. Deterministic,
/// always a valid DNS-1123 label, readable, and distinct across repositories by their ids.
pub fn environment_name(repo: &Repo, pr: PrNumber) -> String {
    let suffix = format!("-pr-{}-{}", pr.0, repo_hash(repo));
    let mut slug = slug(&repo.name);
    // The suffix is at most 4 + 20 + 1 + 6 characters, so at least 32 are left for the slug.
    slug.truncate(MAX_LABEL_LEN.saturating_sub(suffix.len()));
    let slug = slug.trim_end_matches('-');
    let slug = if slug.is_empty() { "repo" } else { slug };
    format!("{slug}{suffix}")
}

/// The environment's hostname: its name as one label directly under the base domain.
pub fn hostname(name: &str, base_domain: &str) -> String {
    format!("{name}.{}", base_domain.trim_end_matches('.').to_ascii_lowercase())
}

/// The host label of public service `service` of environment `name` (other than the first,
/// which gets `name` itself): `<service>--<name>`, still one label, so the wildcard record and
/// certificate cover it. When that is longer than a label, the environment name's slug is cut
/// (never its `-pr-<number>-<hash>` end, which keeps environments apart), and the label still
/// ends with the environment's suffix, which the admission policies check.
pub fn service_label(name: &str, service: &str) -> String {
    let label = format!("{service}--{name}");
    if label.len() <= MAX_LABEL_LEN {
        return label;
    }
    let suffix_at = name.rfind("-pr-").unwrap_or(0);
    let (slug, suffix) = name.split_at(suffix_at);
    let room = MAX_LABEL_LEN.saturating_sub(service.len() + 2 + suffix.len());
    let slug = slug[..room.min(slug.len())].trim_end_matches('-');
    let label = format!("{service}--{slug}{suffix}");
    label.chars().take(MAX_LABEL_LEN).collect::<String>().trim_end_matches('-').to_owned()
}

/// Whether `s` is a DNS-1123 label as Kubernetes checks namespace names: 1 to 63 characters of
/// lowercase letters, digits and `-`, starting and ending with a letter or digit.
pub fn is_dns1123_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LABEL_LEN
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// Whether `s` is a DNS-1123 subdomain (as Kubernetes checks Secret names, and as a base domain
/// must be): dot-separated DNS-1123 labels, at most 253 characters in all.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_DNS_NAME_LEN && s.split('.').all(is_dns1123_label)
}

/// The repository name lowercased, every character outside `[a-z0-9]` turned into `-`, runs of
/// `-` collapsed and the ends trimmed. May be empty (a name of only punctuation or non-ASCII).
fn slug(name: &str) -> String {
    let mut out = String::with_capacity(name.len().min(MAX_LABEL_LEN));
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(out.trim_end_matches('-').len());
    out
}

/// The first 6 hex digits of SHA-256 of the decimal repository id.
fn repo_hash(repo: &Repo) -> String {
    let digest = Sha256::digest(repo.id.0.to_string().as_bytes());
    digest.iter().take(HASH_HEX_LEN / 2).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod service_label_tests {
    use super::*;

    #[test]
    fn service_labels_stay_one_label_and_keep_the_environments_suffix() {
        assert_eq!(service_label("shop-pr-42-3f9a1c", "api"), "api--shop-pr-42-3f9a1c");
        let long = format!("{}-pr-12345-3f9a1c", "a".repeat(63 - "-pr-12345-3f9a1c".len()));
        assert_eq!(long.len(), 63);
        let label = service_label(&long, "admin-console");
        assert_eq!(label.len(), 63);
        assert!(is_dns1123_label(&label), "{label}");
        assert!(label.starts_with("admin-console--a") && label.ends_with("-pr-12345-3f9a1c"), "{label}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RepoId;

    fn repo(id: i64, owner: &str, name: &str) -> Repo {
        Repo { id: RepoId(id), owner: owner.into(), name: name.into() }
    }

    #[test]
    fn readable_name_with_the_repository_hash() {
        let name = environment_name(&repo(1296269, "octocat", "Hello-World"), PrNumber(42));
        assert!(name.starts_with("hello-world-pr-42-"), "{name}");
        assert_eq!(name.len(), "hello-world-pr-42-".len() + 6);
        assert!(is_dns1123_label(&name));
    }

    #[test]
    fn the_hash_is_sha256_of_the_decimal_id() {
        // sha256("1") = 6b86b273ff34fce1...
        assert_eq!(environment_name(&repo(1, "o", "app"), PrNumber(7)), "app-pr-7-6b86b2");
    }

    #[test]
    fn punctuation_and_case_become_single_dashes() {
        let name = environment_name(&repo(1, "o", "--My__Repo..v2--"), PrNumber(1));
        assert!(name.starts_with("my-repo-v2-pr-1-"), "{name}");
    }

    #[test]
    fn unicode_and_empty_slugs_fall_back_to_repo() {
        assert!(environment_name(&repo(1, "o", "日本語"), PrNumber(3)).starts_with("repo-pr-3-"));
        assert!(environment_name(&repo(1, "o", "..."), PrNumber(3)).starts_with("repo-pr-3-"));
        assert!(environment_name(&repo(1, "o", "café"), PrNumber(3)).starts_with("caf-pr-3-"));
    }

    #[test]
    fn long_names_are_truncated_without_a_trailing_dash() {
        let long = format!("{}-{}", "a".repeat(40), "b".repeat(40));
        let name = environment_name(&repo(1, "o", &long), PrNumber(123456));
        assert!(name.len() <= MAX_LABEL_LEN, "{name}");
        assert!(is_dns1123_label(&name), "{name}");
        assert!(name.contains("-pr-123456-"));
        // A cut that lands right after a dash must not leave `--pr-`.
        let dashy = format!("{}-b", "a".repeat(40));
        let name = environment_name(&repo(1, "o", &dashy), PrNumber(i64::MAX));
        assert!(is_dns1123_label(&name) && !name.contains("--"), "{name}");
    }

    #[test]
    fn same_name_in_two_organisations_differs() {
        let a = environment_name(&repo(10, "acme", "app"), PrNumber(1));
        let b = environment_name(&repo(11, "other", "app"), PrNumber(1));
        assert_ne!(a, b);
    }

    #[test]
    fn renaming_the_owner_keeps_the_name() {
        assert_eq!(
            environment_name(&repo(10, "acme", "app"), PrNumber(1)),
            environment_name(&repo(10, "acme-corp", "app"), PrNumber(1))
        );
    }

    #[test]
    fn hostname_is_one_label_under_the_base_domain() {
        assert_eq!(hostname("app-pr-7-6b86b2", "Preview.Example.com."), "app-pr-7-6b86b2.preview.example.com");
    }

    #[test]
    fn label_and_subdomain_rules() {
        for good in ["a", "a-b", "0", "a--b", &"a".repeat(63)] {
            assert!(is_dns1123_label(good), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", "é", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
        assert!(is_dns1123_subdomain("preview.example.com"));
        for bad in ["", ".example.com", "example..com", "example.com.", "Example.com", "*.example.com"] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
    }
}
