//! DNS tests that need no server: configuration, annotations, names.

use super::*;
use crate::policy::{DnsTarget, Rfc2136Policy};

fn policy(provider: DnsProvider) -> DnsPolicy {
    DnsPolicy {
        provider,
        target: Some(DnsTarget { cname: Some("Ingress.Example.com.".into()), ..Default::default() }),
        ..Default::default()
    }
}

#[test]
fn external_dns_annotates_the_ingress_and_others_do_not() {
    let dns = Dns::from_policy(&policy(DnsProvider::ExternalDns), None).unwrap();
    let annotations = dns.ingress_annotations("app-pr-1-abcdef.preview.example.com");
    assert_eq!(annotations[EXTERNAL_DNS_HOSTNAME], "app-pr-1-abcdef.preview.example.com");
    assert_eq!(annotations[EXTERNAL_DNS_TTL], "60");
    assert_eq!(annotations[EXTERNAL_DNS_TARGET], "ingress.example.com");
    let wildcard = Dns::from_policy(&policy(DnsProvider::Wildcard), None).unwrap();
    assert!(wildcard.ingress_annotations("a.preview.example.com").is_empty());
}

#[test]
fn rfc2136_needs_its_secret_and_never_shows_it() {
    let mut p = policy(DnsProvider::Rfc2136);
    p.rfc2136 = Some(Rfc2136Policy {
        server: "127.0.0.1:53".into(),
        zone: "preview.example.com".into(),
        key_name: "previewd".into(),
        key_algorithm: TsigAlgorithmName::HmacSha256,
        key_secret_env: "SOME_VAR".into(),
    });
    let e = Dns::from_policy(&p, None).unwrap_err();
    assert!(e.to_string().contains("SOME_VAR"), "{e}");
    let secret = SecretBytes::from_base64("c2VjcmV0LXNlY3JldA==").unwrap();
    assert_eq!(format!("{secret:?}"), "SecretBytes([redacted])");
    let dns = Dns::from_policy(&p, Some(secret)).unwrap();
    let shown = format!("{dns:?}");
    assert!(!shown.contains("c2VjcmV0") && !shown.contains("secret-secret"), "{shown}");
    let bad = SecretBytes::from_base64("not base64!!").unwrap_err().to_string();
    assert!(!bad.contains("not base64!!"), "{bad}");
}

#[test]
fn refusals_explain_themselves() {
    let e = DnsError::Refused { server: "192.0.2.53:53".into(), rcode: "NOTAUTH/BADSIG".into() };
    assert_eq!(
        e.to_string(),
        "the DNS server 192.0.2.53:53 refused the update: TSIG key not accepted; check the key name, algorithm and secret (NOTAUTH/BADSIG)"
    );
    assert!(!e.is_transient());
    assert!(DnsError::Refused { server: String::new(), rcode: "SERVFAIL".into() }.is_transient());
}
