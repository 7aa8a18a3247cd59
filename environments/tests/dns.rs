//! previewd's DNS handling against a real BIND 9 server (`e2e/dns.sh`): RFC 2136 updates signed
//! with TSIG, verification through hickory-resolver, and the failures a pull request comment
//! has to explain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hickory_proto::op::{Message, OpCode, Query, UpdateMessage};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::rdata::{A, MX, TXT};
use hickory_proto::rr::{DNSClass, Name, Record, TSigner};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as LookupError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use previewd_e2e::dns::{TestDnsServer, closed_port, server, unique_label};
use previewd_environments::dns::{Dns, DnsError, EXTERNAL_DNS_HOSTNAME, EXTERNAL_DNS_TTL, SecretBytes};
use previewd_environments::policy::{DnsPolicy, DnsProvider, DnsTarget, Rfc2136Policy, TsigAlgorithmName};
use std::net::Ipv4Addr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const INGRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

fn test_server() -> TestDnsServer {
    server().expect("the test DNS server")
}

fn a_target(ip: Ipv4Addr) -> Option<DnsTarget> {
    Some(DnsTarget { a: Some(ip), ..Default::default() })
}

fn rfc2136_policy(s: &TestDnsServer, server: String) -> DnsPolicy {
    DnsPolicy {
        provider: DnsProvider::Rfc2136,
        target: a_target(INGRESS),
        ttl: 30,
        resolvers: Vec::new(),
        verify_timeout: Duration::from_secs(10),
        rfc2136: Some(Rfc2136Policy {
            server,
            zone: s.zone.clone(),
            key_name: s.tsig_name.clone(),
            key_algorithm: TsigAlgorithmName::HmacSha256,
            key_secret_env: "PREVIEWD_DNS_TSIG_SECRET".to_owned(),
        }),
    }
}

fn rfc2136(s: &TestDnsServer) -> Dns {
    let policy = rfc2136_policy(s, s.server.to_string());
    Dns::from_policy(&policy, Some(SecretBytes::from_base64(&s.tsig_secret).unwrap())).unwrap()
}

fn host(s: &TestDnsServer, label: &str) -> String {
    format!("{label}.{}", s.base_domain)
}

/// An independent resolver asking the test server, not previewd's code: what the world sees.
fn resolver(s: &TestDnsServer) -> TokioResolver {
    let mut udp = ConnectionConfig::udp();
    udp.port = s.server.port();
    let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(s.server.ip(), true, vec![udp])]);
    let mut builder = Resolver::builder_with_config(config, TokioRuntimeProvider::default());
    builder.options_mut().cache_size = 0;
    builder.build().unwrap()
}

/// The A records of `host` on the test server, or `None` for NXDOMAIN.
async fn a_records(s: &TestDnsServer, host: &str) -> Option<Vec<Ipv4Addr>> {
    match resolver(s).lookup(format!("{host}."), RecordType::A).await {
        Ok(lookup) => Some(
            lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
                .collect(),
        ),
        Err(NetError::Dns(LookupError::NoRecordsFound(none))) => {
            assert_eq!(none.response_code, ResponseCode::NXDomain, "the name exists without A records");
            None
        }
        Err(e) => panic!("looking up {host}: {e}"),
    }
}

#[tokio::test]
async fn a_published_record_resolves_and_is_gone_after_release() {
    let s = test_server();
    let dns = rfc2136(&s);
    let host = host(&s, &unique_label("app-pr-1"));
    assert_eq!(a_records(&s, &host).await, None, "a fresh name does not exist yet");

    dns.publish(&host).await.unwrap();
    assert_eq!(a_records(&s, &host).await, Some(vec![INGRESS]));
    let took = dns.verify(&host).await.unwrap();
    assert!(took < Duration::from_secs(10));
    println!("verify after publish took {took:?}");

    // Publishing again replaces the record instead of adding a second one.
    dns.publish(&host).await.unwrap();
    assert_eq!(a_records(&s, &host).await, Some(vec![INGRESS]));

    dns.release(&host).await.unwrap();
    assert_eq!(a_records(&s, &host).await, None, "released names are NXDOMAIN");
    dns.release(&host).await.expect("releasing a name that is already gone is fine");
}

#[tokio::test]
async fn publish_replaces_a_record_pointing_elsewhere() {
    let s = test_server();
    let host = host(&s, &unique_label("moved"));
    let mut old = rfc2136_policy(&s, s.server.to_string());
    old.target = a_target(Ipv4Addr::new(192, 0, 2, 99));
    let old = Dns::from_policy(&old, Some(SecretBytes::from_base64(&s.tsig_secret).unwrap())).unwrap();
    old.publish(&host).await.unwrap();

    let dns = rfc2136(&s);
    dns.publish(&host).await.unwrap();
    assert_eq!(a_records(&s, &host).await, Some(vec![INGRESS]));
    dns.release(&host).await.unwrap();
}

#[tokio::test]
async fn a_wrong_tsig_secret_is_refused_and_says_so() {
    let s = test_server();
    let policy = rfc2136_policy(&s, s.server.to_string());
    let wrong = SecretBytes::from_base64("d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZyE=").unwrap();
    let dns = Dns::from_policy(&policy, Some(wrong)).unwrap();
    let host = host(&s, &unique_label("badkey"));
    let e = dns.publish(&host).await.unwrap_err();
    match &e {
        DnsError::Refused { server, rcode } => {
            assert_eq!(server, &s.server.to_string());
            assert_eq!(rcode, "NOTAUTH/BADSIG");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    let message = e.to_string();
    assert!(message.contains("refused the update: TSIG key not accepted"), "{message}");
    assert!(!message.contains(&s.tsig_secret) && !message.contains("d3Jvbmc"), "{message}");
    assert!(!e.is_transient(), "a wrong key needs a person, not a retry");
    assert_eq!(e.reason(), "DnsUpdateRefused");
    assert_eq!(a_records(&s, &host).await, None, "nothing was added");

    let mut unknown = policy.clone();
    unknown.rfc2136.as_mut().unwrap().key_name = "no-such-key".to_owned();
    let dns = Dns::from_policy(&unknown, Some(SecretBytes::from_base64(&s.tsig_secret).unwrap())).unwrap();
    let e = dns.publish(&host).await.unwrap_err();
    assert!(matches!(&e, DnsError::Refused { rcode, .. } if rcode == "NOTAUTH/BADKEY"), "{e:?}");
    assert!(e.to_string().contains("TSIG key not accepted"), "{e}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_transient_dns_failure_and_nothing_else_breaks() {
    let s = test_server();
    let closed = closed_port().unwrap();
    let mut policy = rfc2136_policy(&s, closed.to_string());
    policy.verify_timeout = Duration::from_secs(1);
    let dns = Dns::from_policy(&policy, Some(SecretBytes::from_base64(&s.tsig_secret).unwrap())).unwrap();
    let host = host(&s, &unique_label("down"));

    for e in [dns.publish(&host).await.unwrap_err(), dns.release(&host).await.unwrap_err()] {
        assert!(matches!(&e, DnsError::Unreachable { server, .. } if *server == closed.to_string()), "{e:?}");
        assert!(e.is_transient(), "{e}");
        assert_eq!(e.reason(), "DnsUnreachable");
        assert!(e.to_string().starts_with(&format!("the DNS server {closed} could not be reached: ")), "{e}");
    }
    let started = std::time::Instant::now();
    let e = dns.verify(&host).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "bounded by verify_timeout: {:?}", started.elapsed());
    assert!(matches!(&e, DnsError::Unreachable { .. }), "{e:?}");
    assert!(e.is_transient());
    println!("verify against a closed port: {e}");

    // The working server is unaffected: the same name can be published and verified there.
    let working = rfc2136(&s);
    working.publish(&host).await.unwrap();
    working.verify(&host).await.unwrap();
    working.release(&host).await.unwrap();
}

#[tokio::test]
async fn a_63_character_label_works() {
    let s = test_server();
    let label = unique_label("a".repeat(63 - 13).as_str());
    assert_eq!(label.len(), 63);
    let host = host(&s, &label);
    let dns = rfc2136(&s);
    dns.publish(&host).await.unwrap();
    assert_eq!(a_records(&s, &host).await, Some(vec![INGRESS]));
    dns.verify(&host).await.unwrap();
    dns.release(&host).await.unwrap();
    assert_eq!(a_records(&s, &host).await, None);

    let too_long = host.replacen(&label, &format!("{label}x"), 1);
    let e = dns.publish(&too_long).await.unwrap_err();
    assert!(matches!(e, DnsError::Config(_)), "{e:?}");
}

#[tokio::test]
async fn names_outside_the_zone_are_refused_before_sending() {
    let s = test_server();
    let e = rfc2136(&s).publish("app.elsewhere.example").await.unwrap_err();
    assert!(matches!(&e, DnsError::Config(m) if m.contains("not a name inside zone")), "{e:?}");
}

fn wildcard(s: &TestDnsServer, target: Option<DnsTarget>, verify_timeout: Duration) -> Dns {
    let policy = DnsPolicy {
        provider: DnsProvider::Wildcard,
        target,
        resolvers: vec![s.server.to_string()],
        verify_timeout,
        ..Default::default()
    };
    Dns::from_policy(&policy, None).unwrap()
}

#[tokio::test]
async fn wildcard_verifies_an_existing_record_and_publishes_nothing() {
    let s = test_server();
    let host = host(&s, &unique_label("wild"));
    let dns = wildcard(&s, a_target(INGRESS), Duration::from_secs(10));
    dns.publish(&host).await.unwrap();
    assert_eq!(a_records(&s, &host).await, None, "the wildcard provider publishes nothing");

    // The record an operator's wildcard would provide, added with the right key.
    rfc2136(&s).publish(&host).await.unwrap();
    let took = dns.verify(&host).await.unwrap();
    println!("wildcard verify of an existing record took {took:?}");
    wildcard(&s, None, Duration::from_secs(10)).verify(&host).await.expect("with no target any address counts");
    dns.release(&host).await.unwrap();
    assert_eq!(a_records(&s, &host).await, Some(vec![INGRESS]), "the wildcard provider releases nothing");
    rfc2136(&s).release(&host).await.unwrap();
}

#[tokio::test]
async fn a_name_that_does_not_resolve_in_time_says_what_was_seen() {
    let s = test_server();
    let host = host(&s, &unique_label("missing"));
    let dns = wildcard(&s, a_target(INGRESS), Duration::from_millis(800));
    let started = std::time::Instant::now();
    let e = dns.verify(&host).await.unwrap_err();
    let elapsed = started.elapsed();
    match &e {
        DnsError::NotResolving { host: h, expected, waited, last_seen } => {
            assert_eq!(h, &host);
            assert_eq!(expected, "A 192.0.2.10");
            assert!(*waited >= Duration::from_millis(800), "{waited:?}");
            assert!(last_seen.contains("NXDOMAIN"), "{last_seen}");
        }
        other => panic!("expected NotResolving, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(5), "the wait is bounded: {elapsed:?}");
    assert!(e.is_transient());
    assert_eq!(e.reason(), "DnsNotResolving");
    println!("{e}");

    // A record pointing elsewhere is reported as such.
    let mut elsewhere = rfc2136_policy(&s, s.server.to_string());
    elsewhere.target = a_target(Ipv4Addr::new(192, 0, 2, 77));
    let elsewhere = Dns::from_policy(&elsewhere, Some(SecretBytes::from_base64(&s.tsig_secret).unwrap())).unwrap();
    elsewhere.publish(&host).await.unwrap();
    let e = dns.verify(&host).await.unwrap_err();
    assert!(
        matches!(&e, DnsError::NotResolving { last_seen, .. } if last_seen == "it points to A 192.0.2.77"),
        "{e:?}"
    );
    elsewhere.release(&host).await.unwrap();
}

#[tokio::test]
async fn verify_waits_for_a_record_that_appears_later() {
    let s = test_server();
    let dns = rfc2136(&s);
    let host = host(&s, &unique_label("late"));
    // A negative answer first: a caching resolver would now hold NXDOMAIN for the SOA minimum.
    assert_eq!(a_records(&s, &host).await, None);
    let publisher = {
        let host = host.clone();
        let s = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            rfc2136(&s).publish(&host).await.unwrap();
        })
    };
    let took = dns.verify(&host).await.unwrap();
    publisher.await.unwrap();
    assert!(took >= Duration::from_millis(700), "{took:?}");
    println!("verify of a record published after 700 ms took {took:?}");
    dns.release(&host).await.unwrap();
}

#[tokio::test]
async fn cname_and_aaaa_targets_publish_and_verify() {
    let s = test_server();
    for target in [
        DnsTarget { cname: Some("ingress.example.com".to_owned()), ..Default::default() },
        DnsTarget { aaaa: Some("2001:db8::10".parse().unwrap()), ..Default::default() },
    ] {
        let mut policy = rfc2136_policy(&s, s.server.to_string());
        policy.target = Some(target.clone());
        let dns = Dns::from_policy(&policy, Some(SecretBytes::from_base64(&s.tsig_secret).unwrap())).unwrap();
        let host = host(&s, &unique_label("typed"));
        dns.publish(&host).await.unwrap();
        dns.verify(&host).await.unwrap_or_else(|e| panic!("{target:?}: {e}"));
        dns.release(&host).await.unwrap();
        assert_eq!(a_records(&s, &host).await, None);
    }
}

#[tokio::test]
async fn external_dns_annotates_and_verifies() {
    let s = test_server();
    let policy = DnsPolicy {
        provider: DnsProvider::ExternalDns,
        target: a_target(INGRESS),
        ttl: 120,
        resolvers: vec![s.server.to_string()],
        verify_timeout: Duration::from_secs(10),
        rfc2136: None,
    };
    let dns = Dns::from_policy(&policy, None).unwrap();
    let host = host(&s, &unique_label("extdns"));
    let annotations = dns.ingress_annotations(&host);
    assert_eq!(annotations[EXTERNAL_DNS_HOSTNAME], host);
    assert_eq!(annotations[EXTERNAL_DNS_TTL], "120");
    dns.publish(&host).await.unwrap();
    assert_eq!(a_records(&s, &host).await, None, "external-dns, not previewd, creates the record");
    // Stand in for external-dns: the record appears, and previewd sees it.
    rfc2136(&s).publish(&host).await.unwrap();
    dns.verify(&host).await.unwrap();
    rfc2136(&s).release(&host).await.unwrap();
}

#[test]
fn the_secret_comes_from_the_named_environment_variable() {
    let s = test_server();
    let mut policy = rfc2136_policy(&s, s.server.to_string());
    policy.rfc2136.as_mut().unwrap().key_secret_env = "PREVIEWD_TEST_DNS_NO_SUCH_VARIABLE".to_owned();
    let e = Dns::from_policy_and_env(&policy).unwrap_err();
    assert_eq!(
        e.to_string(),
        "DNS configuration: environment variable PREVIEWD_TEST_DNS_NO_SUCH_VARIABLE (dns.rfc2136.key_secret_env) is not set"
    );
    policy.rfc2136.as_mut().unwrap().key_secret_env = previewd_e2e::dns::TSIG_SECRET_ENV.to_owned();
    Dns::from_policy_and_env(&policy).expect("the test server's secret, read from its variable");
}

/// Sends one UPDATE of the test zone, signed with the test key, that adds `record`: what any
/// holder of previewd's key could send. Returns the server's answer code.
async fn send_signed_update(s: &TestDnsServer, record: Record) -> ResponseCode {
    let zone_name = Name::from_ascii(format!("{}.", s.zone)).unwrap();
    let mut message = Message::query();
    message.metadata.op_code = OpCode::Update;
    message.metadata.recursion_desired = false;
    let mut zone = Query::new();
    zone.set_name(zone_name).set_query_class(DNSClass::IN).set_query_type(RecordType::SOA);
    message.add_zone(zone);
    message.add_update(record);
    let key = data_encoding::BASE64.decode(s.tsig_secret.as_bytes()).unwrap();
    let signer =
        TSigner::new(key, TsigAlgorithm::HmacSha256, Name::from_ascii(format!("{}.", s.tsig_name)).unwrap(), 300)
            .unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    message.finalize(&signer, now).unwrap();
    let request = message.to_vec().unwrap();
    let mut stream = tokio::net::TcpStream::connect(s.server).await.unwrap();
    stream.write_all(&u16::try_from(request.len()).unwrap().to_be_bytes()).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let length = stream.read_u16().await.unwrap();
    let mut answer = vec![0; usize::from(length)];
    stream.read_exact(&mut answer).await.unwrap();
    Message::from_vec(&answer).unwrap().response_code
}

/// The README's BIND policy (`update-policy { grant previewd subdomain <base_domain> A AAAA
/// CNAME; }`) lets previewd do its work (every other test here runs under it) and nothing
/// more: the same key cannot change a name of the zone outside the base domain, nor write
/// another record type under it.
#[tokio::test]
async fn the_key_may_change_only_previews_records_under_the_base_domain() {
    let s = test_server();
    let dns = rfc2136(&s);
    // previewd's own update of a name in the zone but outside the base domain.
    let outside = format!("www.{}", s.zone);
    assert!(!outside.ends_with(&format!(".{}", s.base_domain)));
    let e = dns.publish(&outside).await.unwrap_err();
    assert!(matches!(&e, DnsError::Refused { rcode, .. } if rcode == "REFUSED"), "{e:?}");
    assert!(e.to_string().contains("the server's policy does not allow this key"), "{e}");
    assert!(!e.is_transient(), "a refusal by policy needs a person");
    let e = dns.release(&outside).await.unwrap_err();
    assert!(matches!(&e, DnsError::Refused { rcode, .. } if rcode == "REFUSED"), "{e:?}");
    assert_eq!(a_records(&s, &outside).await, Some(vec![Ipv4Addr::new(192, 0, 2, 80)]), "www is untouched");

    // The key's other powers, tried directly: another type under the base domain, and the
    // zone's own records.
    let inside = Name::from_ascii(format!("{}.", host(&s, &unique_label("txt")))).unwrap();
    let txt = Record::from_rdata(inside.clone(), 60, RData::TXT(TXT::new(vec!["owned".to_owned()])));
    assert_eq!(send_signed_update(&s, txt).await, ResponseCode::Refused, "TXT under the base domain");
    let apex = Name::from_ascii(format!("{}.", s.zone)).unwrap();
    let mx = Record::from_rdata(apex, 60, RData::MX(MX::new(10, Name::from_ascii("mail.example.").unwrap())));
    assert_eq!(send_signed_update(&s, mx).await, ResponseCode::Refused, "MX at the zone apex");
    let a = Record::from_rdata(Name::from_ascii(format!("{outside}.")).unwrap(), 60, RData::A(A(INGRESS)));
    assert_eq!(send_signed_update(&s, a).await, ResponseCode::Refused, "A outside the base domain");
    // And what previewd does is allowed, sent the same way (so the refusals above are the policy's).
    let a = Record::from_rdata(inside, 60, RData::A(A(INGRESS)));
    assert_eq!(send_signed_update(&s, a).await, ResponseCode::NoError, "A under the base domain");
}

/// The test server runs with the policy the README documents, word for word.
#[test]
fn the_test_server_uses_the_update_policy_the_readme_documents() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let script = std::fs::read_to_string(root.join("e2e/dns.sh")).unwrap();
    let documented = "update-policy { grant previewd subdomain preview.example.com. A AAAA CNAME; };";
    assert!(readme.contains(documented), "the README's DNS section documents `{documented}`");
    let used = documented.replace("previewd", "$key_name").replace("preview.example.com.", "$base_domain.");
    assert!(script.contains(&used), "e2e/dns.sh configures `{used}`");
}
