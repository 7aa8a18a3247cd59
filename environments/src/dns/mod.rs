//! Each preview's hostname: publishing its record, checking that it resolves, removing it.
//!
//! The platform policy's `dns` section picks a provider:
//! - `wildcard`: a `*.<base_domain>` record already points at the ingress. Nothing is published;
//!   [`Dns::verify`] still checks that the name resolves to the target.
//! - `external-dns`: [`Dns::ingress_annotations`] asks external-dns for the record; previewd
//!   verifies it.
//! - `rfc2136` (`update.rs`): previewd adds and deletes the record itself with DNS UPDATE messages (RFC 2136)
//!   signed with TSIG (RFC 8945), built with hickory's protocol crate and sent over TCP to the
//!   zone's primary server.
//!
//! Verification resolves the name with hickory-resolver until the expected target appears, with
//! exponential backoff from 100 ms, bounded by `dns.verify_timeout`, and reports the time it
//! took. The resolver's cache is cleared before every attempt, and with `rfc2136` (and no
//! `dns.resolvers`) the primary server itself is asked, so no negative cache can hide a record
//! that was just added.
//!
//! The TSIG secret comes from an environment variable at start ([`SecretBytes::from_env`]); it is
//! never in the policy, the store, a log line or an error message.

use crate::policy::{DnsPolicy, DnsProvider, TsigAlgorithmName, parse_dns_server};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{Name, RData, RecordType, TSigner};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as LookupError, NetError};
use hickory_resolver::{Resolver, TokioResolver};
use secrecy::{ExposeSecret, SecretSlice};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

mod update;
use update::{Updater, rcode_name};

/// The annotation that tells external-dns which name to publish for an Ingress.
pub const EXTERNAL_DNS_HOSTNAME: &str = "external-dns.alpha.kubernetes.io/hostname";
/// The annotation with the TTL external-dns gives the record.
pub const EXTERNAL_DNS_TTL: &str = "external-dns.alpha.kubernetes.io/ttl";
/// The annotation that overrides the address external-dns would take from the Ingress status.
pub const EXTERNAL_DNS_TARGET: &str = "external-dns.alpha.kubernetes.io/target";

/// The first pause between two verification attempts; it doubles up to [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// The longest pause between two verification attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long one verification query may take at most, and at least when little time is left.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
const MIN_QUERY_TIME: Duration = Duration::from_millis(500);
/// How long one UPDATE exchange (connect, send, answer) may take.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(10);
/// Allowed clock difference between previewd and the DNS server for TSIG (RFC 8945 recommends 300 s).
const TSIG_FUDGE: u16 = 300;

/// Why a name could not be published, verified or released. Every message is fit for a pull
/// request comment and never contains the TSIG secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The server answered the UPDATE with an error: `rcode` is its mnemonic, with the TSIG
    /// error after a slash when there is one (`NOTAUTH/BADSIG`).
    #[error("the DNS server {server} refused the update: {} ({rcode})", refusal_reason(rcode))]
    Refused { server: String, rcode: String },
    /// No answer from the server (connection refused, timeout).
    #[error("the DNS server {server} could not be reached: {detail}")]
    Unreachable { server: String, detail: String },
    /// The server answered, but not with something previewd can trust (wrong id, bad signature).
    #[error("the DNS server {server} sent an unusable answer: {detail}")]
    BadResponse { server: String, detail: String },
    /// The name did not resolve to the target within `dns.verify_timeout`.
    #[error(
        "{host} does not resolve to {expected} after {}: {last_seen}",
        humantime::format_duration(*waited)
    )]
    NotResolving { host: String, expected: String, waited: Duration, last_seen: String },
    /// The DNS settings, the secret or the host name cannot be used.
    #[error("DNS configuration: {0}")]
    Config(String),
}

impl DnsError {
    /// Whether trying again later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::NotResolving { .. } | Self::BadResponse { .. } => true,
            Self::Refused { rcode, .. } => rcode == "SERVFAIL",
            Self::Config(_) => false,
        }
    }

    /// A short, stable reason for the environment's status.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Refused { .. } => "DnsUpdateRefused",
            Self::Unreachable { .. } => "DnsUnreachable",
            Self::BadResponse { .. } => "DnsBadResponse",
            Self::NotResolving { .. } => "DnsNotResolving",
            Self::Config(_) => "DnsConfig",
        }
    }
}

fn refusal_reason(rcode: &str) -> &'static str {
    let tsig = rcode.split('/').nth(1).unwrap_or(rcode);
    match tsig {
        "BADSIG" | "BADKEY" => "TSIG key not accepted; check the key name, algorithm and secret",
        "BADTIME" => "TSIG signature time outside the server's window; check both clocks",
        _ => match rcode {
            "NOTAUTH" => "the server is not authoritative for the zone, or the key may not update it",
            "REFUSED" => "the server's policy does not allow this key to update the zone",
            "NOTZONE" => "the name is not inside the zone",
            "SERVFAIL" => "the server failed to apply it",
            _ => "the server rejected it",
        },
    }
}

/// A secret held in memory only, redacted from `Debug`.
pub struct SecretBytes(SecretSlice<u8>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes.into())
    }

    /// Decodes base64 (as `tsig-keygen` prints secrets). The error never repeats the text.
    pub fn from_base64(text: &str) -> Result<Self, DnsError> {
        let bytes = data_encoding::BASE64
            .decode(text.trim().as_bytes())
            .map_err(|_| DnsError::Config("the TSIG secret is not valid base64".to_owned()))?;
        if bytes.is_empty() {
            return Err(DnsError::Config("the TSIG secret is empty".to_owned()));
        }
        Ok(Self::new(bytes))
    }

    /// Reads a base64 secret from environment variable `var`.
    pub fn from_env(var: &str) -> Result<Self, DnsError> {
        let text = std::env::var(var).map_err(|_| {
            DnsError::Config(format!("environment variable {var} (dns.rfc2136.key_secret_env) is not set"))
        })?;
        Self::from_base64(&text).map_err(|e| match e {
            DnsError::Config(problem) => DnsError::Config(format!("{var}: {problem}")),
            other => other,
        })
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBytes([redacted])")
    }
}

/// What a preview's name must point to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// A host name, lowercase, without the trailing dot.
    Cname(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::A(ip) => write!(f, "A {ip}"),
            Self::Aaaa(ip) => write!(f, "AAAA {ip}"),
            Self::Cname(name) => write!(f, "CNAME {name}"),
        }
    }
}

/// previewd's DNS handling, built once from the policy.
pub struct Dns {
    provider: DnsProvider,
    target: Option<Target>,
    ttl: u32,
    verify_timeout: Duration,
    /// Asked when verifying; empty: the system's resolvers.
    verify_servers: Vec<SocketAddr>,
    /// Whether `verify_servers` are authoritative (no recursion wanted).
    verify_authoritative: bool,
    updater: Option<Updater>,
}

impl fmt::Debug for Dns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dns")
            .field("provider", &self.provider)
            .field("target", &self.target)
            .field("ttl", &self.ttl)
            .field("verify_timeout", &self.verify_timeout)
            .field("verify_servers", &self.verify_servers)
            .field("rfc2136_server", &self.updater.as_ref().map(|u| u.server))
            .finish_non_exhaustive()
    }
}

impl Dns {
    /// Builds the DNS handling of a validated policy. `secret` is the TSIG secret, required with
    /// `rfc2136` (read it with [`SecretBytes::from_env`] from `dns.rfc2136.key_secret_env`).
    pub fn from_policy(policy: &DnsPolicy, secret: Option<SecretBytes>) -> Result<Self, DnsError> {
        let config = |field: &str, problem: String| DnsError::Config(format!("dns.{field}: {problem}"));
        let target = match &policy.target {
            None => None,
            Some(t) => Some(match (t.a, t.aaaa, &t.cname) {
                (Some(ip), None, None) => Target::A(ip),
                (None, Some(ip), None) => Target::Aaaa(ip),
                (None, None, Some(name)) => {
                    let name = name.trim_end_matches('.').to_ascii_lowercase();
                    fqdn(&name).map_err(|e| config("target.cname", e))?;
                    Target::Cname(name)
                }
                _ => return Err(config("target", "set exactly one of a, aaaa or cname".to_owned())),
            }),
        };
        if target.is_none() && policy.provider != DnsProvider::Wildcard {
            return Err(config("target", format!("is required when dns.provider is {}", policy.provider.as_str())));
        }
        let mut verify_servers = policy
            .resolvers
            .iter()
            .enumerate()
            .map(|(i, text)| parse_dns_server(text).map_err(|e| config(&format!("resolvers[{i}]"), e)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut verify_authoritative = false;
        let updater = match (policy.provider, &policy.rfc2136) {
            (DnsProvider::Rfc2136, None) => {
                return Err(config("rfc2136", "is required when dns.provider is rfc2136".to_owned()));
            }
            (DnsProvider::Rfc2136, Some(r)) => {
                let server = parse_dns_server(&r.server).map_err(|e| config("rfc2136.server", e))?;
                let zone = fqdn(r.zone.trim_end_matches('.')).map_err(|e| config("rfc2136.zone", e))?;
                let key_name = fqdn(r.key_name.trim_end_matches('.')).map_err(|e| config("rfc2136.key_name", e))?;
                let Some(secret) = secret else {
                    return Err(DnsError::Config(format!(
                        "dns.provider rfc2136 needs the TSIG secret in environment variable {}",
                        r.key_secret_env
                    )));
                };
                let algorithm = match r.key_algorithm {
                    TsigAlgorithmName::HmacSha256 => TsigAlgorithm::HmacSha256,
                    TsigAlgorithmName::HmacSha384 => TsigAlgorithm::HmacSha384,
                    TsigAlgorithmName::HmacSha512 => TsigAlgorithm::HmacSha512,
                };
                let signer = TSigner::new(secret.0.expose_secret().to_vec(), algorithm, key_name, TSIG_FUDGE)
                    .map_err(|e| config("rfc2136.key_algorithm", e.to_string()))?;
                if verify_servers.is_empty() {
                    verify_servers.push(server);
                    verify_authoritative = true;
                }
                Some(Updater { server, zone, signer })
            }
            _ => None,
        };
        Ok(Self {
            provider: policy.provider,
            target,
            ttl: policy.ttl,
            verify_timeout: policy.verify_timeout,
            verify_servers,
            verify_authoritative,
            updater,
        })
    }

    /// [`Dns::from_policy`] with the TSIG secret read from the variable the policy names.
    pub fn from_policy_and_env(policy: &DnsPolicy) -> Result<Self, DnsError> {
        let secret = match (&policy.provider, &policy.rfc2136) {
            (DnsProvider::Rfc2136, Some(r)) => Some(SecretBytes::from_env(&r.key_secret_env)?),
            _ => None,
        };
        Self::from_policy(policy, secret)
    }

    pub fn provider(&self) -> DnsProvider {
        self.provider
    }

    /// What names must point to; `None` (wildcard without a target): any address.
    pub fn target(&self) -> Option<&Target> {
        self.target.as_ref()
    }

    /// Makes `host` point to the target. `rfc2136`: one signed UPDATE that deletes the name's
    /// A, AAAA and CNAME records and adds the target's record, so it is idempotent and replaces
    /// a record of another type. Other providers: nothing to do.
    pub async fn publish(&self, host: &str) -> Result<(), DnsError> {
        match &self.updater {
            Some(updater) => self.update(updater, host, true).await,
            None => Ok(()),
        }
    }

    /// Removes `host`'s A, AAAA and CNAME records (`rfc2136`); a name without them is fine.
    /// Other providers: nothing to do (external-dns removes the record with the Ingress).
    pub async fn release(&self, host: &str) -> Result<(), DnsError> {
        match &self.updater {
            Some(updater) => self.update(updater, host, false).await,
            None => Ok(()),
        }
    }

    /// Annotations for the environment's Ingress: external-dns's hostname, TTL and (with a
    /// target) target. Empty for the other providers.
    pub fn ingress_annotations(&self, host: &str) -> BTreeMap<String, String> {
        let mut annotations = BTreeMap::new();
        if self.provider == DnsProvider::ExternalDns {
            annotations.insert(EXTERNAL_DNS_HOSTNAME.to_owned(), host.to_owned());
            annotations.insert(EXTERNAL_DNS_TTL.to_owned(), self.ttl.to_string());
            if let Some(target) = &self.target {
                let value = match target {
                    Target::A(ip) => ip.to_string(),
                    Target::Aaaa(ip) => ip.to_string(),
                    Target::Cname(name) => name.clone(),
                };
                annotations.insert(EXTERNAL_DNS_TARGET.to_owned(), value);
            }
        }
        annotations
    }

    /// Resolves `host` until it points to the target, and returns how long that took. Waits
    /// with exponential backoff (100 ms doubling to 5 s) for at most `dns.verify_timeout` (a last
    /// query may run 500 ms past it); `0s` skips the check. Queries the configured
    /// resolvers, else the `rfc2136` server, else the system's resolvers, with the cache
    /// cleared before each attempt.
    pub async fn verify(&self, host: &str) -> Result<Duration, DnsError> {
        let start = Instant::now();
        if self.verify_timeout.is_zero() {
            return Ok(Duration::ZERO);
        }
        let name = fqdn(host).map_err(DnsError::Config)?;
        let resolver = self.resolver()?;
        let deadline = start + self.verify_timeout;
        let mut delay = INITIAL_BACKOFF;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            resolver.clear_cache();
            // Each query gets what is left of the wait, between 500 ms and 3 s.
            let budget = deadline.saturating_duration_since(Instant::now()).clamp(MIN_QUERY_TIME, QUERY_TIMEOUT);
            let seen = match tokio::time::timeout(budget, self.look(&resolver, &name)).await {
                Ok(seen) => seen,
                Err(_) => Seen::NoAnswer(format!("no answer within {}", humantime::format_duration(round(budget)))),
            };
            let now = Instant::now();
            let last = match seen {
                Seen::Target => {
                    let took = start.elapsed();
                    tracing::debug!(host, attempts, took_ms = took.as_millis() as u64, "DNS name resolves");
                    return Ok(took);
                }
                other if now >= deadline => other,
                other => {
                    tracing::debug!(host, attempts, seen = %other.describe(), "DNS name does not resolve yet");
                    tokio::time::sleep(delay.min(deadline - now)).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            let waited = start.elapsed();
            return Err(match last {
                Seen::NoAnswer(detail) => DnsError::Unreachable {
                    server: self.verify_servers_text(),
                    detail: format!(
                        "{detail} ({attempts} {} in {})",
                        if attempts == 1 { "attempt" } else { "attempts" },
                        humantime::format_duration(round(waited))
                    ),
                },
                other => DnsError::NotResolving {
                    host: host.to_owned(),
                    expected: self.expected_text(),
                    waited: round(waited),
                    last_seen: other.describe(),
                },
            });
        }
    }

    fn expected_text(&self) -> String {
        match &self.target {
            Some(target) => target.to_string(),
            None => "any address".to_owned(),
        }
    }

    fn verify_servers_text(&self) -> String {
        if self.verify_servers.is_empty() {
            "(the system's resolvers)".to_owned()
        } else {
            self.verify_servers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        }
    }

    fn resolver(&self) -> Result<TokioResolver, DnsError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if self.verify_servers.is_empty() {
            Resolver::builder(provider)
                .map_err(|e| DnsError::Config(format!("reading the system's resolver configuration: {e}")))?
        } else {
            let servers = self
                .verify_servers
                .iter()
                .map(|address| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = address.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = address.port();
                    NameServerConfig::new(address.ip(), true, vec![udp, tcp])
                })
                .collect();
            Resolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        };
        let options = builder.options_mut();
        options.use_hosts_file = ResolveHosts::Never;
        options.timeout = QUERY_TIMEOUT;
        options.attempts = 1;
        options.ndots = 0;
        options.recursion_desired = !self.verify_authoritative;
        builder.build().map_err(|e| DnsError::Config(format!("building the resolver: {e}")))
    }

    /// One look at `name`.
    async fn look(&self, resolver: &TokioResolver, name: &Name) -> Seen {
        let types: &[RecordType] = match &self.target {
            Some(Target::A(_)) => &[RecordType::A],
            Some(Target::Aaaa(_)) => &[RecordType::AAAA],
            Some(Target::Cname(_)) => &[RecordType::CNAME],
            None => &[RecordType::A, RecordType::AAAA],
        };
        let mut seen = Seen::NoAnswer("no query made".to_owned());
        for &record_type in types {
            seen = match resolver.lookup(name.clone(), record_type).await {
                Ok(lookup) => {
                    let found: Vec<&RData> = lookup.answers().iter().map(|r| &r.data).collect();
                    if found.iter().any(|data| self.matches(data)) {
                        return Seen::Target;
                    }
                    Seen::Other(found.iter().map(|d| describe_rdata(d)).collect::<Vec<_>>().join(", "))
                }
                Err(NetError::Dns(LookupError::NoRecordsFound(none)))
                    if none.response_code == ResponseCode::NXDomain =>
                {
                    Seen::NxDomain
                }
                Err(NetError::Dns(LookupError::NoRecordsFound(_))) => Seen::NoRecord(record_type),
                Err(NetError::Dns(LookupError::ResponseCode(code))) => Seen::Error(rcode_name(code).to_owned()),
                Err(NetError::Dns(other)) => Seen::Error(other.to_string()),
                Err(other) => Seen::NoAnswer(other.to_string()),
            };
        }
        seen
    }

    fn matches(&self, data: &RData) -> bool {
        match (&self.target, data) {
            (None, RData::A(_) | RData::AAAA(_) | RData::CNAME(_)) => true,
            (Some(Target::A(ip)), RData::A(A(found))) => found == ip,
            (Some(Target::Aaaa(ip)), RData::AAAA(AAAA(found))) => found == ip,
            (Some(Target::Cname(target)), RData::CNAME(CNAME(found))) => {
                found.to_ascii().trim_end_matches('.').eq_ignore_ascii_case(target)
            }
            _ => false,
        }
    }
}

/// What one look at a name found.
enum Seen {
    Target,
    NxDomain,
    NoRecord(RecordType),
    Other(String),
    Error(String),
    NoAnswer(String),
}

impl Seen {
    fn describe(&self) -> String {
        match self {
            Self::Target => "the target".to_owned(),
            Self::NxDomain => "NXDOMAIN: the name does not exist".to_owned(),
            Self::NoRecord(t) => format!("no {t} record (the name exists with other records)"),
            Self::Other(found) => format!("it points to {found}"),
            Self::Error(e) => format!("the server answered {e}"),
            Self::NoAnswer(e) => format!("no answer: {e}"),
        }
    }
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

fn describe_rdata(data: &RData) -> String {
    match data {
        RData::A(A(ip)) => format!("A {ip}"),
        RData::AAAA(AAAA(ip)) => format!("AAAA {ip}"),
        RData::CNAME(CNAME(name)) => format!("CNAME {}", name.to_ascii().trim_end_matches('.')),
        other => format!("{} {other}", other.record_type()),
    }
}

/// A duration to the millisecond, for messages.
fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().try_into().unwrap_or(u64::MAX))
}

/// `host` as an absolute name (so no search domain is appended).
fn fqdn(host: &str) -> Result<Name, String> {
    let mut name = Name::from_ascii(host).map_err(|e| format!("{host:?} is not a DNS name: {e}"))?;
    name.set_fqdn(true);
    Ok(name)
}

#[cfg(test)]
mod tests;
