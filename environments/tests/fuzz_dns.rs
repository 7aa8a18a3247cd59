//! Fuzz targets for DNS name handling, on stable Rust (proptest): environment names from
//! arbitrary repositories and pull request numbers, host names under arbitrary base domains, the
//! names previewd puts in DNS UPDATE messages and verification queries, and the names of the
//! policy's `dns` section. For any input: no panic, a bounded time, and either a valid DNS name
//! or a typed error.
//!
//! Each target runs proptest's default number of cases (256) in the test suite; `PROPTEST_CASES`
//! sets another, as in the longer run the README documents:
//!
//! ```text
//! PROPTEST_CASES=20000 cargo test --release -p previewd-environments --test fuzz_dns
//! ```
//!
//! The UPDATE target sends to a closed local port (the message is built and signed, then the
//! connection is refused); the verification target asks the test BIND server (`e2e/dns.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hickory_proto::rr::Name;
use previewd_environments::dns::{Dns, DnsError, SecretBytes};
use previewd_environments::model::{PrNumber, Repo, RepoId};
use previewd_environments::naming::{
    MAX_DNS_NAME_LEN, environment_name, hostname, is_dns1123_label, is_dns1123_subdomain,
};
use previewd_environments::policy::{DnsPolicy, DnsProvider, DnsTarget, Policy, Rfc2136Policy, TsigAlgorithmName};
use proptest::prelude::*;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// The bound on one case. Each takes microseconds to a few milliseconds; the limit is generous
/// for this slow, shared machine, and still catches a name that makes previewd wait or loop.
const CASE_LIMIT: Duration = Duration::from_secs(5);

const SECRET: &str = "ZnV6ei10c2lnLXNlY3JldC1mb3ItZG5zLW5hbWVzLTAx";
const ZONE: &str = "test";

static RUNTIME: LazyLock<tokio::runtime::Runtime> =
    LazyLock::new(|| tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap());

/// A local port nothing listens on, taken once.
static CLOSED: LazyLock<SocketAddr> = LazyLock::new(|| previewd_e2e::dns::closed_port().unwrap());

/// Text as repositories, owners, domains and hosts may come: GitHub-like, DNS-like, punctuation,
/// unicode (including look-alikes and control characters), and very long.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9._-]{0,100}",
        "[a-z0-9.-]{0,300}",
        "[-._*\\\\ @:/]{0,20}",
        "\\PC{0,200}",
        ".{0,300}",
        "[a-z]{60,70}(\\.[a-z]{1,70}){0,5}",
        Just(String::new()),
    ]
}

/// Host names: previews' names under the zone, near misses, and anything at all.
fn hosts() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => ("[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", prop_oneof![Just("preview.test"), Just("test"), Just("Preview.TEST.")])
            .prop_map(|(label, base)| format!("{label}.{base}")),
        1 => "[a-z0-9]{60,70}\\.preview\\.test",
        1 => "([a-z0-9-]{1,63}\\.){4,6}test",
        1 => prop_oneof![Just("test".to_owned()), Just("test.".to_owned()), Just(".test".to_owned()), Just("a..test".to_owned())],
        1 => "[a-z0-9]{1,10}\\.(example|tset|test\\.evil)",
        2 => text(),
        1 => (text(), Just(".preview.test")).prop_map(|(a, b)| format!("{a}{b}")),
    ]
}

/// What a well-formed preview host name looks like: a DNS-1123 label directly or deeper under the zone.
fn is_preview_host(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    host.strip_suffix(&format!(".{ZONE}"))
        .is_some_and(|rest| !rest.is_empty() && host.len() <= MAX_DNS_NAME_LEN && rest.split('.').all(is_dns1123_label))
}

/// Whether `host` is plainly not inside the zone.
fn is_outside_zone(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    host != ZONE && !host.ends_with(&format!(".{ZONE}"))
}

fn rfc2136_policy(zone: &str, key_name: &str, target: Option<DnsTarget>, resolvers: Vec<String>) -> DnsPolicy {
    DnsPolicy {
        provider: DnsProvider::Rfc2136,
        target,
        ttl: 60,
        resolvers,
        verify_timeout: Duration::from_millis(1),
        rfc2136: Some(Rfc2136Policy {
            server: CLOSED.to_string(),
            zone: zone.to_owned(),
            key_name: key_name.to_owned(),
            key_algorithm: TsigAlgorithmName::HmacSha256,
            key_secret_env: "UNUSED".to_owned(),
        }),
    }
}

fn a_target() -> Option<DnsTarget> {
    Some(DnsTarget { a: Some(Ipv4Addr::new(192, 0, 2, 10)), ..Default::default() })
}

static UPDATER: LazyLock<Dns> = LazyLock::new(|| {
    Dns::from_policy(
        &rfc2136_policy(ZONE, "previewd", a_target(), Vec::new()),
        Some(SecretBytes::from_base64(SECRET).unwrap()),
    )
    .unwrap()
});

fn no_secret(error: &DnsError) -> Result<(), TestCaseError> {
    let message = error.to_string();
    prop_assert!(!message.contains(SECRET) && !message.contains("fuzz-tsig-secret"), "{}", message);
    Ok(())
}

proptest! {
    /// Any repository (id, owner, name) and any pull request number give a DNS-1123 label that
    /// hickory accepts as a name.
    #[test]
    fn fuzz_environment_name(id in any::<i64>(), owner in text(), name in text(), pr in any::<i64>()) {
        let started = Instant::now();
        let label = environment_name(&Repo { id: RepoId(id), owner, name }, PrNumber(pr));
        prop_assert!(is_dns1123_label(&label), "{:?}", label);
        prop_assert!(Name::from_ascii(&label).is_ok(), "{:?}", label);
        prop_assert!(started.elapsed() < CASE_LIMIT);
    }

    /// Any base domain is either accepted by the policy, and then every preview's host name
    /// under it is a valid DNS name of at most 253 characters, or refused with a message that
    /// names `base_domain`.
    #[test]
    fn fuzz_hostname(base in text(), name in text(), pr in any::<i64>()) {
        let started = Instant::now();
        let yaml = format!("base_domain: {}\n", serde_json::to_string(&base).unwrap());
        match Policy::from_yaml(&yaml, "policy.yaml") {
            Ok(policy) => {
                let label = environment_name(&Repo { id: RepoId(1), owner: "o".into(), name }, PrNumber(pr));
                let host = hostname(&label, &policy.base_domain);
                prop_assert!(is_dns1123_subdomain(&host), "{:?} under {:?}", host, base);
                prop_assert!(host.len() <= MAX_DNS_NAME_LEN, "{} characters", host.len());
                let parsed = Name::from_ascii(&host);
                prop_assert!(parsed.is_ok(), "{:?}", host);
            }
            // A typed error: the YAML refused where it stands (control characters), or the
            // base domain refused by name.
            Err(error) => {
                let message = error.to_string();
                prop_assert!(
                    message.starts_with("policy.yaml: line ") || message.contains("base_domain"),
                    "{}", message
                );
            }
        }
        prop_assert!(started.elapsed() < CASE_LIMIT);
    }

    /// The name of a DNS UPDATE: a preview's host under the zone is built into a signed message
    /// and sent (here the connection is refused: `Unreachable`); a name outside the zone, or no
    /// valid name at all, is refused before anything is sent (`Config`). Nothing else, for any
    /// text, and never the secret in a message.
    #[test]
    fn fuzz_dns_update_name(host in hosts()) {
        let started = Instant::now();
        for result in [RUNTIME.block_on(UPDATER.publish(&host)), RUNTIME.block_on(UPDATER.release(&host))] {
            let error = result.expect_err("nothing listens at the server");
            no_secret(&error)?;
            match &error {
                DnsError::Config(_) => prop_assert!(!is_preview_host(&host), "{:?} refused: {}", host, error),
                DnsError::Unreachable { .. } => prop_assert!(!is_outside_zone(&host), "{:?} sent: {}", host, error),
                other => prop_assert!(false, "{:?}: unexpected {:?}", host, other),
            }
        }
        prop_assert!(started.elapsed() < CASE_LIMIT, "{:?} took {:?}", host, started.elapsed());
    }

    /// The name of a verification query, asked of the test BIND server with no time to wait: a
    /// typed answer (refused before asking, or what the server said), never a panic or a hang.
    #[test]
    fn fuzz_dns_verify_name(host in hosts()) {
        let started = Instant::now();
        match RUNTIME.block_on(verifier().verify(&host)) {
            Ok(_) => prop_assert!(is_preview_host(&host), "{:?} resolved", host),
            Err(error) => {
                no_secret(&error)?;
                match &error {
                    DnsError::Config(_) => prop_assert!(!is_preview_host(&host), "{:?} refused: {}", host, error),
                    DnsError::NotResolving { .. } | DnsError::Unreachable { .. } => {}
                    other => prop_assert!(false, "{:?}: unexpected {:?}", host, other),
                }
            }
        }
        prop_assert!(started.elapsed() < CASE_LIMIT, "{:?} took {:?}", host, started.elapsed());
    }

    /// The names of the `dns` section (zone, key name, CNAME target, resolvers): a working
    /// handler or a `Config` error naming the field, never a panic and never the secret.
    #[test]
    fn fuzz_dns_policy_names(zone in text(), key_name in text(), cname in text(), resolver in text()) {
        let started = Instant::now();
        for (target, resolvers) in [
            (Some(DnsTarget { cname: Some(cname.clone()), ..Default::default() }), Vec::new()),
            (a_target(), vec![resolver.clone()]),
        ] {
            let policy = rfc2136_policy(&zone, &key_name, target, resolvers);
            match Dns::from_policy(&policy, Some(SecretBytes::from_base64(SECRET).unwrap())) {
                Ok(dns) => {
                    // It works on a preview's name (the connection is refused, nothing more).
                    let host = format!("app-pr-1-abcdef.{}", zone.trim_end_matches('.'));
                    let outcome = RUNTIME.block_on(dns.publish(&host));
                    prop_assert!(matches!(outcome, Err(DnsError::Unreachable { .. } | DnsError::Config(_))), "{:?}", outcome);
                }
                Err(error) => {
                    no_secret(&error)?;
                    prop_assert!(matches!(&error, DnsError::Config(m) if m.starts_with("dns.")), "{:?}", error);
                }
            }
        }
        prop_assert!(started.elapsed() < CASE_LIMIT);
    }
}

/// Verification against the test BIND server, with a 1 ms budget: one query per case.
fn verifier() -> &'static Dns {
    static VERIFIER: LazyLock<Dns> = LazyLock::new(|| {
        let server = previewd_e2e::dns::server().expect("the test DNS server");
        let policy = DnsPolicy {
            provider: DnsProvider::Wildcard,
            target: a_target(),
            resolvers: vec![server.server.to_string()],
            verify_timeout: Duration::from_millis(1),
            ..Default::default()
        };
        Dns::from_policy(&policy, None).unwrap()
    });
    &VERIFIER
}
