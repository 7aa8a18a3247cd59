//! The DNS section of the policy: how each preview's hostname comes to resolve, and its checks.

use super::duration_text;
use super::validate::Problems;
use crate::naming::{self, MAX_LABEL_LEN};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How each preview's hostname `<environment name>.<base_domain>` comes to resolve, and how
/// previewd checks that it does before it reports the URL. Global: repositories cannot override
/// it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsPolicy {
    /// Who creates the record: `wildcard` (an existing `*.<base_domain>` record; previewd
    /// publishes nothing), `external-dns` (annotations on the Ingress) or `rfc2136` (previewd
    /// sends signed DNS UPDATEs to the zone's primary server).
    pub provider: DnsProvider,
    /// What every preview's name must point to: the ingress, as exactly one of `a`, `aaaa` or
    /// `cname`. Required for `external-dns` and `rfc2136`; with `wildcard` and no target, any
    /// address or alias counts as resolving.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<DnsTarget>,
    /// TTL in seconds of the records previewd publishes (`rfc2136`) or asks for (`external-dns`).
    pub ttl: u32,
    /// The servers (`ip` or `ip:port`, port 53 by default) previewd asks when it verifies a
    /// name. Empty: the `rfc2136` server when that provider is used (so no resolver's negative
    /// cache can hide a new record), else the system's resolvers.
    pub resolvers: Vec<String>,
    /// How long previewd waits for a name to resolve to the target before the environment
    /// reports that its name does not resolve (and is retried). `0s` turns verification off.
    #[serde(with = "duration_text")]
    pub verify_timeout: Duration,
    /// The zone's primary server and TSIG key; required with (and only used by) `rfc2136`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rfc2136: Option<Rfc2136Policy>,
}

impl Default for DnsPolicy {
    fn default() -> Self {
        Self {
            provider: DnsProvider::Wildcard,
            target: None,
            ttl: 60,
            resolvers: Vec::new(),
            verify_timeout: Duration::from_secs(60),
            rfc2136: None,
        }
    }
}

/// Who creates each preview's DNS record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DnsProvider {
    /// A wildcard record already points at the ingress; previewd only verifies.
    #[default]
    Wildcard,
    /// previewd annotates the Ingress and external-dns creates the record; previewd verifies.
    ExternalDns,
    /// previewd adds and deletes the record itself with TSIG-signed RFC 2136 UPDATEs.
    Rfc2136,
}

impl DnsProvider {
    /// The name as written in the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wildcard => "wildcard",
            Self::ExternalDns => "external-dns",
            Self::Rfc2136 => "rfc2136",
        }
    }
}

/// What a preview's name points to. Exactly one field is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsTarget {
    /// An IPv4 address: an A record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a: Option<std::net::Ipv4Addr>,
    /// An IPv6 address: an AAAA record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aaaa: Option<std::net::Ipv6Addr>,
    /// A host name (the ingress's load balancer, say): a CNAME record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cname: Option<String>,
}

/// The authoritative server previewd updates with RFC 2136, and the TSIG key it signs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rfc2136Policy {
    /// The zone's primary server, `ip` or `ip:port` (port 53 by default). Updates go over TCP;
    /// with no `dns.resolvers`, verification asks this server too.
    pub server: String,
    /// The zone updated, such as `preview.example.com`; `base_domain` must be this zone or
    /// inside it.
    pub zone: String,
    /// The TSIG key's name, as the server knows it.
    pub key_name: String,
    /// The TSIG algorithm: `hmac-sha256` (default), `hmac-sha384` or `hmac-sha512`.
    #[serde(default)]
    pub key_algorithm: TsigAlgorithmName,
    /// The environment variable holding the TSIG secret, base64 as `tsig-keygen` prints it. The
    /// secret itself is never written in the policy.
    #[serde(default = "default_tsig_secret_env")]
    pub key_secret_env: String,
}

/// The default of `dns.rfc2136.key_secret_env`. previewd's settings loader reads every other
/// `PREVIEWD_*` variable (but `PREVIEWD_CONFIG` and `PREVIEWD_TEST_*`) as a setting and stops at
/// one it does not know, so it reserves this name: the README's own example must start.
pub const DEFAULT_TSIG_SECRET_ENV: &str = "PREVIEWD_DNS_TSIG_SECRET";

fn default_tsig_secret_env() -> String {
    DEFAULT_TSIG_SECRET_ENV.to_owned()
}

/// TSIG algorithms previewd signs with (RFC 8945).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TsigAlgorithmName {
    #[default]
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

/// A DNS server address as the policy writes it: `ip` or `ip:port` (`[v6]:port` for IPv6), the
/// port 53 by default.
pub fn parse_dns_server(text: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(address) = text.parse::<std::net::SocketAddr>() {
        return Ok(address);
    }
    text.parse::<std::net::IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 53)).map_err(|_| {
        format!("{text:?} is not a server address: write an IP address with an optional port, like 192.0.2.53 or 192.0.2.53:5353")
    })
}

impl DnsPolicy {
    pub(super) fn check(&self, base_domain: &str, p: &mut Problems) {
        let needs_target = matches!(self.provider, DnsProvider::ExternalDns | DnsProvider::Rfc2136);
        match &self.target {
            None if needs_target => {
                p.push("dns.target", format!("is required when dns.provider is {}", self.provider.as_str()));
            }
            None => {}
            Some(target) => {
                let set = [target.a.is_some(), target.aaaa.is_some(), target.cname.is_some()];
                if set.iter().filter(|s| **s).count() != 1 {
                    p.push("dns.target", "set exactly one of a, aaaa or cname");
                }
                if let Some(cname) = &target.cname
                    && !naming::is_dns1123_subdomain(cname.trim_end_matches('.'))
                {
                    p.push("dns.target.cname", format!("{cname:?} is not a DNS name"));
                }
            }
        }
        if self.ttl == 0 || self.ttl > 86_400 {
            p.push("dns.ttl", format!("{} is not between 1 and 86400 seconds", self.ttl));
        }
        for (i, resolver) in self.resolvers.iter().enumerate() {
            if let Err(problem) = parse_dns_server(resolver) {
                p.push(format!("dns.resolvers[{i}]"), problem);
            }
        }
        match (&self.rfc2136, self.provider) {
            (None, DnsProvider::Rfc2136) => p.push("dns.rfc2136", "is required when dns.provider is rfc2136"),
            (Some(_), provider) if provider != DnsProvider::Rfc2136 => {
                p.push("dns.rfc2136", format!("is only used when dns.provider is rfc2136, not {}", provider.as_str()))
            }
            (Some(r), _) => r.check(base_domain, p),
            (None, _) => {}
        }
    }
}

impl Rfc2136Policy {
    pub(super) fn check(&self, base_domain: &str, p: &mut Problems) {
        if let Err(problem) = parse_dns_server(&self.server) {
            p.push("dns.rfc2136.server", problem);
        }
        let zone = self.zone.trim_end_matches('.');
        if !naming::is_dns1123_subdomain(zone) {
            p.push("dns.rfc2136.zone", format!("{:?} is not a DNS name", self.zone));
        } else if base_domain != zone && !base_domain.ends_with(&format!(".{zone}")) {
            p.push(
                "dns.rfc2136.zone",
                format!("base_domain {base_domain:?} is not inside zone {zone:?}: previews could not be added to it"),
            );
        }
        let key = self.key_name.trim_end_matches('.');
        if key.is_empty() || key.split('.').any(|label| label.is_empty() || label.len() > MAX_LABEL_LEN) {
            p.push(
                "dns.rfc2136.key_name",
                format!("{:?} is not a key name (a DNS name, like previewd)", self.key_name),
            );
        }
        let env = &self.key_secret_env;
        let valid_env = env.chars().next().is_some_and(|c| c.is_ascii_uppercase() || c == '_')
            && env.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !valid_env {
            p.push(
                "dns.rfc2136.key_secret_env",
                format!("{env:?} is not an environment variable name (capitals, digits and `_`)"),
            );
        } else if env.starts_with("PREVIEWD_") && env != DEFAULT_TSIG_SECRET_ENV && !env.starts_with("PREVIEWD_TEST_") {
            // Said here, at the policy, rather than left to the settings loader, whose answer
            // ("unknown setting") would not say that the policy asked for the name.
            p.push(
                "dns.rfc2136.key_secret_env",
                format!(
                    "{env} would be read as a previewd setting (every PREVIEWD_* variable is one, except \
                     {DEFAULT_TSIG_SECRET_ENV}); use {DEFAULT_TSIG_SECRET_ENV} or a name outside PREVIEWD_"
                ),
            );
        }
    }
}
