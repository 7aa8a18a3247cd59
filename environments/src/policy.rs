//! The platform team's policy: where previews live, how long, how many, how big, from which
//! registries, for which pull requests, and per-repository exceptions.
//!
//! The policy is read once at start. Every mistake in it stops start-up with a message naming the
//! file and the field, because a policy that is silently half-applied is worse than none: a typo in
//! a cap would otherwise leave the cap at its default. Parsing rejects unknown fields and wrong
//! types; [`Policy::validate`] then checks the rules between fields and reports all of them at once.

use crate::naming::{self, MAX_DNS_NAME_LEN, MAX_LABEL_LEN};
use crate::quantity::{Quantity, QuantityError};
use crate::yaml::{self, Origin};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

const EMPTY: &str = "the file is empty; it needs at least `base_domain: preview.example.com`";

/// A policy that cannot be used, with the file and field to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The text is not YAML, or a field is unknown, missing or of the wrong type.
    #[error("{source_name}: {}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
    Parse { source_name: String, path: String, message: String },
    /// The fields parse but break a rule between them; every broken rule is listed.
    #[error("{}", problems.iter().map(|p| format!("{source_name}: {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { source_name: String, problems: Vec<PolicyProblem> },
}

/// One broken rule: the field (a dotted path, as in the file) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblem {
    pub field: String,
    pub problem: String,
}

impl fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The field may hold a key of the file (a repository's name), which may hold anything.
        write!(f, "{}: {}", yaml::escape_control(&self.field), yaml::escape_control(&self.problem))
    }
}

/// The platform policy file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Every preview is served at `<environment name>.<base_domain>`; one wildcard DNS record and
    /// one wildcard certificate for `*.<base_domain>` cover them all. Required.
    pub base_domain: String,
    /// How long an environment lives after its last activity.
    #[serde(default)]
    pub ttl: TtlPolicy,
    /// How many environments may be live at once.
    #[serde(default)]
    pub limits: Limits,
    /// Quota, LimitRange and replica bounds of every environment.
    #[serde(default)]
    pub resources: ResourcePolicy,
    /// Image prefixes a repository's image must start with, such as `ghcr.io/acme/`. A prefix
    /// without a trailing `/` matches only at a `/`, `:` or `@` boundary, so `ghcr.io/acme` allows
    /// `ghcr.io/acme/app` but not `ghcr.io/acme-evil/app`. An empty list allows any image.
    #[serde(default)]
    pub allowed_registries: Vec<String>,
    /// Whether pull requests from forks get environments.
    #[serde(default)]
    pub forks: ForkPolicy,
    /// Which pull requests get an environment without being asked.
    #[serde(default)]
    pub trigger: Trigger,
    /// Whether draft pull requests get environments.
    #[serde(default)]
    pub drafts: bool,
    /// A pull request carrying this label keeps its environment past the TTL.
    #[serde(default = "default_keep_label")]
    pub keep_label: String,
    /// With `forks: approve`, a writer who adds this label approves the fork's head commit, as
    /// `/preview approve` does. GitHub lets people with triage access set labels too, so
    /// previewd checks the permission of whoever added it.
    #[serde(default = "default_approve_label")]
    pub approve_label: String,
    /// The template sets environments may be rendered from.
    #[serde(default)]
    pub templates: Templates,
    /// How previews are exposed.
    #[serde(default)]
    pub ingress: IngressPolicy,
    /// What an environment's pods may reach.
    #[serde(default)]
    pub network: NetworkPolicy,
    /// Platform-provided secrets environments may receive.
    #[serde(default)]
    pub secrets: SecretsPolicy,
    /// Exceptions by repository, keyed by `owner/name` (matched without regard to case).
    #[serde(default)]
    pub repositories: BTreeMap<String, Override>,
    /// How each preview's hostname comes to resolve, and how previewd checks that it does.
    #[serde(default)]
    pub dns: DnsPolicy,
    /// The repositories previewd serves: owners (`acme`) and repositories (`acme/web`), matched
    /// without regard to case. Deliveries from others are recorded and ignored. Empty serves
    /// every repository the App is installed on (or the token can see).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Checks (check run names or commit status contexts) that must succeed on a head commit
    /// before it is deployed: usually the CI job that builds the pull request's image. While
    /// they run the environment waits; if one fails, the previous commit stays deployed.
    #[serde(default)]
    pub required_checks: Vec<String>,
}

/// Environment lifetimes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TtlPolicy {
    /// Lifetime after the last activity (push, reopen, command) when the repository asks for none.
    #[serde(with = "duration_text")]
    pub default: Duration,
    /// The longest lifetime a repository may ask for; longer requests are shortened to this.
    #[serde(with = "duration_text")]
    pub max: Duration,
    /// How long before expiry the pull request is warned. `0s` sends no warning.
    #[serde(with = "duration_text")]
    pub warn_before: Duration,
}

impl Default for TtlPolicy {
    fn default() -> Self {
        Self { default: hours(48), max: hours(168), warn_before: hours(2) }
    }
}

const fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}

/// Concurrent-environment limits. Counted over live environments (those holding or about to hold
/// cluster resources).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Across every repository previewd serves.
    pub global: u32,
    /// Across the repositories of one owner (organisation or user).
    pub per_organization: u32,
    /// Within one repository.
    pub per_repository: u32,
    /// What happens to a new environment over a limit.
    pub when_full: WhenFull,
}

impl Default for Limits {
    fn default() -> Self {
        Self { global: 100, per_organization: 20, per_repository: 5, when_full: WhenFull::Reject }
    }
}

/// What happens to a new environment over a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// The environment is `Rejected`, with the limit and the count in the pull request comment.
    #[default]
    Reject,
    /// The environment waits, and starts when a slot frees up.
    Queue,
}

/// Bounds on an environment's resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResourcePolicy {
    /// The namespace's ResourceQuota.
    pub quota: QuotaPolicy,
    /// The namespace's LimitRange: defaults and maximum of one container.
    pub container: ContainerPolicy,
    /// The most replicas a repository may ask for.
    pub max_replicas: u32,
}

impl Default for ResourcePolicy {
    fn default() -> Self {
        Self { quota: QuotaPolicy::default(), container: ContainerPolicy::default(), max_replicas: 3 }
    }
}

/// The namespace ResourceQuota: what environments get, and the most a per-repository override
/// may grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaPolicy {
    /// The quota of every environment unless its repository's override says otherwise.
    #[serde(default = "default_quota")]
    pub defaults: QuotaValues,
    /// The ceiling of any quota, overrides included.
    #[serde(default = "default_quota_caps")]
    pub caps: QuotaValues,
}

impl Default for QuotaPolicy {
    fn default() -> Self {
        Self { defaults: default_quota(), caps: default_quota_caps() }
    }
}

/// Totals for one namespace: CPU and memory (requests and limits alike) and a pod count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaValues {
    pub cpu: Quantity,
    pub memory: Quantity,
    pub pods: u32,
}

/// CPU and memory of one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceValues {
    pub cpu: Quantity,
    pub memory: Quantity,
}

/// The LimitRange of every environment: what a container gets when it asks for nothing, and the
/// most it may ask for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerPolicy {
    #[serde(default = "default_request")]
    pub default_request: ResourceValues,
    #[serde(default = "default_limit")]
    pub default_limit: ResourceValues,
    #[serde(default = "default_container_max")]
    pub max: ResourceValues,
}

impl Default for ContainerPolicy {
    fn default() -> Self {
        Self { default_request: default_request(), default_limit: default_limit(), max: default_container_max() }
    }
}

/// The defaults below are literals; `only_base_domain_is_required_and_the_defaults_are_valid`
/// checks that they parse (validation compares them, which converts them).
fn quantity(text: &'static str) -> Quantity {
    Quantity::literal(text)
}
fn default_quota() -> QuotaValues {
    QuotaValues { cpu: quantity("4"), memory: quantity("8Gi"), pods: 20 }
}
fn default_quota_caps() -> QuotaValues {
    QuotaValues { cpu: quantity("8"), memory: quantity("16Gi"), pods: 50 }
}
fn default_request() -> ResourceValues {
    ResourceValues { cpu: quantity("100m"), memory: quantity("128Mi") }
}
fn default_limit() -> ResourceValues {
    ResourceValues { cpu: quantity("500m"), memory: quantity("512Mi") }
}
fn default_container_max() -> ResourceValues {
    ResourceValues { cpu: quantity("2"), memory: quantity("2Gi") }
}
fn default_keep_label() -> String {
    "preview:keep".to_owned()
}
fn default_approve_label() -> String {
    "preview:approve".to_owned()
}

/// Whether pull requests from forks get environments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForkPolicy {
    /// Never: a fork's code would run with the environment's secrets and network access.
    #[default]
    Deny,
    /// After someone with write access comments `/preview approve` on the pull request or adds
    /// the `approve_label`, for that head commit only. Fork
    /// environments still never receive platform-provided secrets.
    Approve,
}

/// Which pull requests get an environment without being asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Trigger {
    pub mode: TriggerMode,
    /// The label that asks for an environment in `label` mode.
    pub label: String,
}

impl Default for Trigger {
    fn default() -> Self {
        Self { mode: TriggerMode::EveryPullRequest, label: "preview".to_owned() }
    }
}

/// When a pull request gets an environment. A `/preview deploy` command works in every mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerMode {
    /// Every (non-draft, unless `drafts`) pull request.
    #[default]
    EveryPullRequest,
    /// Pull requests carrying `trigger.label`.
    Label,
    /// Only when asked with `/preview deploy`.
    Command,
}

/// The template sets environments may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Templates {
    /// The set used when the repository names none.
    pub default: String,
    /// Every set a repository may name in `.preview.yaml`.
    pub available: Vec<String>,
}

impl Default for Templates {
    fn default() -> Self {
        Self { default: "web".to_owned(), available: vec!["web".to_owned()] }
    }
}

/// How previews are exposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngressPolicy {
    /// `ingressClassName` of every Ingress; empty leaves it to the cluster's default class.
    pub class_name: String,
    /// Namespace of the ingress controller, the only source of traffic into an environment.
    pub controller_namespace: String,
    /// The wildcard certificate's Secret; empty relies on the controller's default certificate.
    pub tls_secret_name: String,
    /// Extra annotations on every Ingress.
    pub annotations: BTreeMap<String, String>,
}

impl Default for IngressPolicy {
    fn default() -> Self {
        Self {
            class_name: "nginx".to_owned(),
            controller_namespace: "ingress-nginx".to_owned(),
            tls_secret_name: "preview-wildcard-tls".to_owned(),
            annotations: BTreeMap::new(),
        }
    }
}

/// What an environment's pods may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkPolicy {
    /// Egress allowed beyond cluster DNS, as CIDRs (`10.0.0.0/8`, `2001:db8::/32`).
    pub egress_cidrs: Vec<String>,
}

/// Platform-provided secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsPolicy {
    /// Namespace holding the Secrets that environments may receive copies of.
    pub source_namespace: String,
    /// Names of the Secrets in `source_namespace` a repository may list in `.preview.yaml`.
    pub allowed: Vec<String>,
}

impl Default for SecretsPolicy {
    fn default() -> Self {
        Self { source_namespace: "previewd-platform-secrets".to_owned(), allowed: Vec::new() }
    }
}

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

fn default_tsig_secret_env() -> String {
    "PREVIEWD_DNS_TSIG_SECRET".to_owned()
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
    fn check(&self, base_domain: &str, p: &mut Problems) {
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
    fn check(&self, base_domain: &str, p: &mut Problems) {
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
        }
    }
}

/// One repository's exceptions. Every field is optional; a present one replaces the global
/// value (lists are replaced, not merged).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Override {
    pub ttl: TtlOverride,
    pub limits: LimitsOverride,
    pub resources: ResourcesOverride,
    pub allowed_registries: Option<Vec<String>>,
    pub forks: Option<ForkPolicy>,
    pub trigger: TriggerOverride,
    pub drafts: Option<bool>,
    pub templates: TemplatesOverride,
    pub secrets: SecretsOverride,
    pub required_checks: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TtlOverride {
    #[serde(with = "duration_text::option", skip_serializing_if = "Option::is_none")]
    pub default: Option<Duration>,
    #[serde(with = "duration_text::option", skip_serializing_if = "Option::is_none")]
    pub max: Option<Duration>,
    #[serde(with = "duration_text::option", skip_serializing_if = "Option::is_none")]
    pub warn_before: Option<Duration>,
}

/// Only the repository's own limit and the full behaviour can differ per repository: the global
/// and organisation limits are shared by definition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsOverride {
    pub per_repository: Option<u32>,
    pub when_full: Option<WhenFull>,
}

/// A repository's quota (at most `resources.quota.caps`), container bounds and replica maximum.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResourcesOverride {
    pub quota: Option<QuotaValues>,
    pub container: Option<ContainerPolicy>,
    pub max_replicas: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TriggerOverride {
    pub mode: Option<TriggerMode>,
    pub label: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemplatesOverride {
    pub default: Option<String>,
    pub available: Option<Vec<String>>,
}

/// The source namespace is the platform's; which of its secrets a repository may use can differ.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsOverride {
    pub allowed: Option<Vec<String>>,
}

/// The policy as it applies to one repository: the global policy with that repository's override
/// merged in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EffectivePolicy {
    pub owner: String,
    pub name: String,
    pub base_domain: String,
    pub ttl: TtlPolicy,
    pub limits: Limits,
    pub quota: QuotaValues,
    pub container: ContainerPolicy,
    pub max_replicas: u32,
    pub allowed_registries: Vec<String>,
    pub forks: ForkPolicy,
    pub trigger: Trigger,
    pub drafts: bool,
    pub keep_label: String,
    pub approve_label: String,
    pub templates: Templates,
    pub ingress: IngressPolicy,
    pub egress_cidrs: Vec<String>,
    pub secrets: SecretsPolicy,
    pub required_checks: Vec<String>,
}

impl EffectivePolicy {
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// Whether `image` starts with one of the allowed registry prefixes (any image when the list
    /// is empty).
    pub fn allows_image(&self, image: &str) -> bool {
        self.allowed_registries.is_empty() || self.allowed_registries.iter().any(|p| registry_matches(p, image))
    }
}

fn registry_matches(prefix: &str, image: &str) -> bool {
    match image.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.starts_with(['/', ':', '@']),
    }
}

impl Policy {
    /// Parses and validates a policy. `source_name` (the file name) starts every error message.
    pub fn from_yaml(text: &str, source_name: &str) -> Result<Self, PolicyError> {
        let parse_error = |path, message| PolicyError::Parse { source_name: source_name.to_owned(), path, message };
        let policy: Policy = yaml::parse(text, Origin::Platform)
            .map_err(|e| parse_error(e.path, e.message))?
            .ok_or_else(|| parse_error(String::new(), EMPTY.to_owned()))?;
        policy.validate().map_err(|problems| PolicyError::Invalid { source_name: source_name.to_owned(), problems })?;
        Ok(policy)
    }

    /// The rules between fields, all of them checked, for the global policy and for every
    /// repository's policy after its override is merged.
    pub fn validate(&self) -> Result<(), Vec<PolicyProblem>> {
        let mut p = Problems::default();
        if !naming::is_dns1123_subdomain(&self.base_domain) {
            p.push(
                "base_domain",
                format!(
                    "{:?} is not a DNS name: lowercase labels of letters, digits and `-` separated by dots, without a trailing dot",
                    self.base_domain
                ),
            );
        } else if self.base_domain.len() > MAX_DNS_NAME_LEN - MAX_LABEL_LEN - 1 {
            p.push(
                "base_domain",
                format!(
                    "is {} characters; at most {} leave room for a 63-character environment label",
                    self.base_domain.len(),
                    MAX_DNS_NAME_LEN - MAX_LABEL_LEN - 1
                ),
            );
        }
        for (field, value) in [
            ("limits.global", self.limits.global),
            ("limits.per_organization", self.limits.per_organization),
            ("limits.per_repository", self.limits.per_repository),
        ] {
            if value == 0 {
                p.push(field, "must be at least 1");
            }
        }
        check_quota_within(
            "resources.quota.defaults",
            &self.resources.quota.defaults,
            &self.resources.quota.caps,
            &mut p,
        );
        for (i, entry) in self.allow.iter().enumerate() {
            let parts: Vec<&str> = entry.split('/').collect();
            if parts.len() > 2 || parts.iter().any(|part| part.trim().is_empty() || part.contains(' ')) {
                p.push(format!("allow[{i}]"), format!("{entry:?} is neither `owner` nor `owner/name`"));
            }
        }
        for (i, check) in self.required_checks.iter().enumerate() {
            if check.trim().is_empty() {
                p.push(format!("required_checks[{i}]"), "must not be empty");
            }
        }
        if self.keep_label.trim().is_empty() {
            p.push("keep_label", "must not be empty");
        }
        if self.approve_label.trim().is_empty() {
            p.push("approve_label", "must not be empty");
        }
        if !self.ingress.controller_namespace.is_empty()
            && !naming::is_dns1123_label(&self.ingress.controller_namespace)
        {
            p.push(
                "ingress.controller_namespace",
                format!("{:?} is not a namespace name", self.ingress.controller_namespace),
            );
        }
        if !self.ingress.tls_secret_name.is_empty() && !naming::is_dns1123_subdomain(&self.ingress.tls_secret_name) {
            p.push("ingress.tls_secret_name", format!("{:?} is not a Secret name", self.ingress.tls_secret_name));
        }
        if self.ingress.annotations.keys().any(|k| k.trim().is_empty()) {
            p.push("ingress.annotations", "an annotation name is empty");
        }
        for (i, cidr) in self.network.egress_cidrs.iter().enumerate() {
            if let Err(problem) = check_cidr(cidr) {
                p.push(format!("network.egress_cidrs[{i}]"), problem);
            }
        }
        if !naming::is_dns1123_label(&self.secrets.source_namespace) {
            p.push("secrets.source_namespace", format!("{:?} is not a namespace name", self.secrets.source_namespace));
        }

        self.dns.check(&self.base_domain, &mut p);

        self.check_effective("", &self.effective(None, "", ""), &mut p);

        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        for (key, over) in &self.repositories {
            let field = format!("repositories.{key}");
            let Some((owner, name)) =
                key.split_once('/').filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
            else {
                p.push(field, "must be `owner/name`");
                continue;
            };
            if let Some(other) = seen.insert(key.to_ascii_lowercase(), key) {
                p.push(
                    field.clone(),
                    format!("names the same repository as `{other}` (names are matched without regard to case)"),
                );
            }
            if over.limits.per_repository == Some(0) {
                p.push(format!("{field}.limits.per_repository"), "must be at least 1");
            }
            if let Some(quota) = &over.resources.quota {
                check_quota_within(&format!("{field}.resources.quota"), quota, &self.resources.quota.caps, &mut p);
            }
            self.check_effective(&format!("{field}."), &self.effective(Some(over), owner, name), &mut p);
        }
        p.finish()
    }

    /// Rules that hold for the global policy and for each repository's merged policy. `prefix`
    /// places the field under `repositories.<owner/name>.` for an override.
    fn check_effective(&self, prefix: &str, e: &EffectivePolicy, p: &mut Problems) {
        let f = |field: &str| format!("{prefix}{field}");
        let t = &e.ttl;
        if t.default.is_zero() {
            p.push(f("ttl.default"), "must be longer than 0s");
        }
        if t.default > t.max {
            p.push(f("ttl.default"), format!("{} is longer than ttl.max {}", show(t.default), show(t.max)));
        }
        if !t.warn_before.is_zero() && t.warn_before >= t.default {
            p.push(
                f("ttl.warn_before"),
                format!(
                    "{} is not shorter than ttl.default {}: every environment would be warned as soon as it starts (0s turns warnings off)",
                    show(t.warn_before),
                    show(t.default)
                ),
            );
        }
        let c = &e.container;
        for (field, small, big, what) in [
            (
                "resources.container.default_request",
                &c.default_request,
                &c.default_limit,
                "resources.container.default_limit",
            ),
            ("resources.container.default_limit", &c.default_limit, &c.max, "resources.container.max"),
        ] {
            check_le(&f(&format!("{field}.cpu")), &small.cpu, &big.cpu, &format!("{what}.cpu"), Unit::Cpu, p);
            check_le(
                &f(&format!("{field}.memory")),
                &small.memory,
                &big.memory,
                &format!("{what}.memory"),
                Unit::Bytes,
                p,
            );
        }
        check_le(&f("resources.container.max.cpu"), &c.max.cpu, &e.quota.cpu, "the quota's cpu", Unit::Cpu, p);
        check_le(
            &f("resources.container.max.memory"),
            &c.max.memory,
            &e.quota.memory,
            "the quota's memory",
            Unit::Bytes,
            p,
        );
        if e.max_replicas == 0 {
            p.push(f("resources.max_replicas"), "must be at least 1");
        }
        for (i, registry) in e.allowed_registries.iter().enumerate() {
            if registry.trim().is_empty() || registry.contains(char::is_whitespace) {
                p.push(f(&format!("allowed_registries[{i}]")), format!("{registry:?} is empty or contains spaces"));
            } else if registry.contains("://") {
                p.push(
                    f(&format!("allowed_registries[{i}]")),
                    format!("{registry:?}: write the registry as images name it, without a scheme, like ghcr.io/acme/"),
                );
            }
        }
        if e.trigger.mode == TriggerMode::Label && e.trigger.label.trim().is_empty() {
            p.push(f("trigger.label"), "must name a label when trigger.mode is `label`");
        }
        if e.templates.available.is_empty() {
            p.push(f("templates.available"), "must list at least one template set");
        }
        for (i, template) in e.templates.available.iter().enumerate() {
            if !naming::is_dns1123_label(template) {
                p.push(
                    f(&format!("templates.available[{i}]")),
                    format!("{template:?} is not a template set name (lowercase letters, digits and `-`)"),
                );
            }
        }
        if !e.templates.available.contains(&e.templates.default) {
            p.push(
                f("templates.default"),
                format!(
                    "{:?} is not in templates.available ({})",
                    e.templates.default,
                    e.templates.available.join(", ")
                ),
            );
        }
        for (i, secret) in e.secrets.allowed.iter().enumerate() {
            if !naming::is_dns1123_subdomain(secret) {
                p.push(f(&format!("secrets.allowed[{i}]")), format!("{secret:?} is not a Secret name"));
            }
        }
    }

    /// The policy for repository `owner/name`: the global policy with the repository's override
    /// (matched without regard to case) merged in.
    pub fn for_repository(&self, owner: &str, name: &str) -> EffectivePolicy {
        let full = format!("{owner}/{name}");
        let over = self.repositories.iter().find(|(key, _)| key.eq_ignore_ascii_case(&full)).map(|(_, o)| o);
        self.effective(over, owner, name)
    }

    /// The longest `ttl.warn_before` of any repository (the global one or an override): how far
    /// ahead the periodic pass looks for environments to warn, before it applies each one's own.
    pub fn longest_warn_before(&self) -> Duration {
        self.repositories.values().filter_map(|o| o.ttl.warn_before).fold(self.ttl.warn_before, Duration::max)
    }

    /// Whether previewd serves repository `owner/name` (policy `allow`).
    pub fn allows_repository(&self, owner: &str, name: &str) -> bool {
        let full = format!("{owner}/{name}");
        self.allow.is_empty()
            || self.allow.iter().any(|entry| entry.eq_ignore_ascii_case(owner) || entry.eq_ignore_ascii_case(&full))
    }

    /// Every template set the policy names, overrides included, to check against the templates
    /// that exist.
    pub fn template_names(&self) -> BTreeSet<&str> {
        let mut names: BTreeSet<&str> = self.templates.available.iter().map(String::as_str).collect();
        names.insert(&self.templates.default);
        for over in self.repositories.values() {
            names.extend(over.templates.available.iter().flatten().map(String::as_str));
            names.extend(over.templates.default.as_deref());
        }
        names
    }

    fn effective(&self, over: Option<&Override>, owner: &str, name: &str) -> EffectivePolicy {
        let none = Override::default();
        let o = over.unwrap_or(&none);
        EffectivePolicy {
            owner: owner.to_owned(),
            name: name.to_owned(),
            base_domain: self.base_domain.clone(),
            ttl: TtlPolicy {
                default: o.ttl.default.unwrap_or(self.ttl.default),
                max: o.ttl.max.unwrap_or(self.ttl.max),
                warn_before: o.ttl.warn_before.unwrap_or(self.ttl.warn_before),
            },
            limits: Limits {
                per_repository: o.limits.per_repository.unwrap_or(self.limits.per_repository),
                when_full: o.limits.when_full.unwrap_or(self.limits.when_full),
                ..self.limits.clone()
            },
            quota: o.resources.quota.clone().unwrap_or_else(|| self.resources.quota.defaults.clone()),
            container: o.resources.container.clone().unwrap_or_else(|| self.resources.container.clone()),
            max_replicas: o.resources.max_replicas.unwrap_or(self.resources.max_replicas),
            allowed_registries: o.allowed_registries.clone().unwrap_or_else(|| self.allowed_registries.clone()),
            forks: o.forks.unwrap_or(self.forks),
            trigger: Trigger {
                mode: o.trigger.mode.unwrap_or(self.trigger.mode),
                label: o.trigger.label.clone().unwrap_or_else(|| self.trigger.label.clone()),
            },
            drafts: o.drafts.unwrap_or(self.drafts),
            keep_label: self.keep_label.clone(),
            approve_label: self.approve_label.clone(),
            required_checks: o.required_checks.clone().unwrap_or_else(|| self.required_checks.clone()),
            templates: Templates {
                default: o.templates.default.clone().unwrap_or_else(|| self.templates.default.clone()),
                available: o.templates.available.clone().unwrap_or_else(|| self.templates.available.clone()),
            },
            ingress: self.ingress.clone(),
            egress_cidrs: self.network.egress_cidrs.clone(),
            secrets: SecretsPolicy {
                source_namespace: self.secrets.source_namespace.clone(),
                allowed: o.secrets.allowed.clone().unwrap_or_else(|| self.secrets.allowed.clone()),
            },
        }
    }
}

#[derive(Default)]
struct Problems(Vec<PolicyProblem>);

impl Problems {
    fn push(&mut self, field: impl Into<String>, problem: impl Into<String>) {
        self.0.push(PolicyProblem { field: field.into(), problem: problem.into() });
    }
    fn finish(self) -> Result<(), Vec<PolicyProblem>> {
        if self.0.is_empty() { Ok(()) } else { Err(self.0) }
    }
}

/// How a quantity is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Cpu,
    Bytes,
}

impl Unit {
    pub(crate) fn value(self, q: &Quantity) -> Result<i64, QuantityError> {
        match self {
            Self::Cpu => q.cpu_millis(),
            Self::Bytes => q.bytes(),
        }
    }
}

/// Reports `field` unless `small` ≤ `big`.
fn check_le(field: &str, small: &Quantity, big: &Quantity, big_name: &str, unit: Unit, p: &mut Problems) {
    match (unit.value(small), unit.value(big)) {
        (Ok(s), Ok(b)) if s > b => p.push(field, format!("{small} is above {big_name} ({big})")),
        (Ok(_), Ok(_)) => {}
        (Err(e), _) => p.push(field, e.to_string()),
        (_, Err(e)) => p.push(big_name, e.to_string()),
    }
}

fn check_quota_within(field: &str, quota: &QuotaValues, caps: &QuotaValues, p: &mut Problems) {
    check_le(&format!("{field}.cpu"), &quota.cpu, &caps.cpu, "resources.quota.caps.cpu", Unit::Cpu, p);
    check_le(&format!("{field}.memory"), &quota.memory, &caps.memory, "resources.quota.caps.memory", Unit::Bytes, p);
    if quota.pods > caps.pods {
        p.push(format!("{field}.pods"), format!("{} is above resources.quota.caps.pods ({})", quota.pods, caps.pods));
    }
    if quota.pods == 0 {
        p.push(format!("{field}.pods"), "must be at least 1");
    }
}

fn check_cidr(cidr: &str) -> Result<(), String> {
    let invalid = || format!("{cidr:?} is not a CIDR such as 10.0.0.0/8 or 2001:db8::/32");
    let (address, prefix) = cidr.split_once('/').ok_or_else(invalid)?;
    let address: std::net::IpAddr = address.parse().map_err(|_| invalid())?;
    let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(format!("{cidr:?}: the prefix length is above {max}"));
    }
    Ok(())
}

/// A duration as people write it in the policy (`48h`, `7d`).
pub(crate) fn show(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Durations written as humantime text: `30m`, `48h`, `7d`, `1h 30m`.
pub(crate) mod duration_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn parse(text: &str) -> Result<Duration, String> {
        humantime::parse_duration(text)
            .map_err(|e| format!("invalid duration {text:?}: {e}; write a number and a unit, like 30m, 48h or 7d"))
    }

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    pub(crate) mod option {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            match Option::<String>::deserialize(d)? {
                Some(text) => parse(&text).map(Some).map_err(serde::de::Error::custom),
                None => Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const FULL: &str = r#"
base_domain: preview.example.com
ttl: { default: 48h, max: 168h, warn_before: 2h }
limits: { global: 100, per_organization: 20, per_repository: 5, when_full: reject }
resources:
  quota:
    defaults: { cpu: "4", memory: 8Gi, pods: 20 }
    caps: { cpu: "8", memory: 16Gi, pods: 50 }
  container:
    default_request: { cpu: 100m, memory: 128Mi }
    default_limit: { cpu: 500m, memory: 512Mi }
    max: { cpu: "2", memory: 2Gi }
  max_replicas: 3
allowed_registries: [ghcr.io/acme/]
forks: deny
trigger: { mode: every_pull_request, label: preview }
drafts: false
keep_label: preview:keep
templates: { default: web, available: [web, worker] }
ingress: { class_name: nginx, controller_namespace: ingress-nginx, tls_secret_name: preview-wildcard-tls, annotations: {} }
network: { egress_cidrs: [10.0.0.0/8] }
secrets: { source_namespace: previewd-platform-secrets, allowed: [db-readonly] }
repositories:
  Acme/App:
    limits: { per_repository: 10, when_full: queue }
    ttl: { default: 24h }
    allowed_registries: [ghcr.io/acme/app]
    forks: approve
    trigger: { mode: label }
    drafts: true
    templates: { default: worker }
    secrets: { allowed: [] }
    resources: { max_replicas: 5, quota: { cpu: "6", memory: 12Gi, pods: 30 } }
"#;

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::from_yaml(text, "policy.yaml")
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    fn with(line: &str) -> String {
        format!("base_domain: preview.example.com\n{line}\n")
    }

    #[test]
    fn the_documented_example_parses() {
        let policy = parse(FULL).unwrap();
        assert_eq!(policy.ttl.max, hours(168));
        assert_eq!(policy.limits.per_repository, 5);
        assert_eq!(policy.allowed_registries, ["ghcr.io/acme/"]);
        assert_eq!(policy.network.egress_cidrs, ["10.0.0.0/8"]);
    }

    #[test]
    fn only_base_domain_is_required_and_the_defaults_are_valid() {
        let policy = parse("base_domain: preview.example.com").unwrap();
        assert_eq!(policy.ttl, TtlPolicy::default());
        assert_eq!(policy.limits, Limits::default());
        assert_eq!(policy.forks, ForkPolicy::Deny);
        assert!(!policy.drafts);
        assert_eq!(policy.trigger.mode, TriggerMode::EveryPullRequest);
        assert_eq!(policy.keep_label, "preview:keep");
        assert_eq!(policy.approve_label, "preview:approve");
        assert_eq!(policy.resources.quota.defaults.memory.as_str(), "8Gi");
        assert!(policy.allowed_registries.is_empty());
        assert!(error("ttl: { default: 1h }").contains("missing field `base_domain`"));
    }

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        assert_eq!(
            error(&with("ttl: { maximum: 1h }")),
            "policy.yaml: ttl.maximum: unknown field `maximum`, expected one of `default`, `max`, `warn_before` (line 2 column 8)"
        );
        assert!(error(&with("colour: blue")).contains("unknown field `colour`"));
        let nested = error(&with("repositories: { a/b: { resources: { quota: { cpus: 1 } } } }"));
        assert!(nested.contains("repositories.a/b.resources.quota"), "{nested}");
    }

    #[test]
    fn wrong_values_name_the_field() {
        let e = error(&with("ttl: { max: 3x }"));
        assert!(e.starts_with("policy.yaml: ttl.max: ") && e.contains("invalid duration \"3x\""), "{e}");
        let e = error(&with("limits: { global: -1 }"));
        assert!(e.contains("limits.global: ") && e.contains("-1"), "{e}");
        let e = error(&with("resources: { container: { max: { cpu: lots, memory: 1Gi } } }"));
        assert!(e.contains("resources.container.max.cpu: ") && e.contains("\"lots\" is not a quantity"), "{e}");
        let e = error(&with("forks: maybe"));
        assert!(e.contains("forks: ") && e.contains("deny") && e.contains("approve"), "{e}");
        let e = error(&with("trigger: { mode: sometimes }"));
        assert!(e.contains("trigger.mode: ") && e.contains("every_pull_request"), "{e}");
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let e = error("base_domain: a\nttl: { default: 1h\n");
        assert_eq!(e, "policy.yaml: line 2 column 6: unclosed bracket '{'");
        let e = error("base_domain: [x]\n");
        assert_eq!(e, "policy.yaml: base_domain: expected a value, not a list or a mapping (line 1 column 14)");
    }

    #[test]
    fn a_bomb_a_duplicate_or_an_oversized_policy_is_refused_quickly_naming_the_file() {
        let bomb = format!("x_leaf: &l [{}]\nx_bomb: [{}]\n", vec!["x"; 4000].join(", "), vec!["*l"; 4000].join(", "));
        let started = std::time::Instant::now();
        let e = error(&format!("base_domain: preview.example.com\n{bomb}"));
        assert!(
            e.starts_with("policy.yaml: line 3 column ") && e.contains("too large or too complex for previewd"),
            "{e}"
        );
        // Generous: the refusal takes milliseconds; this machine is slow and shared.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Anchors within the budget are fine in the platform's own file.
        let shared =
            "base_domain: preview.example.com\nrepositories:\n  acme/a: &big { drafts: true }\n  acme/b: *big\n";
        assert!(parse(shared).unwrap().for_repository("acme", "b").drafts);
        let e = error(&with("drafts: true\ndrafts: false"));
        assert!(e.starts_with("policy.yaml: line 3 column 1: duplicate mapping key"), "{e}");
        let huge = with(&format!("#{}", " ".repeat(crate::yaml::MAX_PLATFORM_FILE_BYTES)));
        let e = error(&huge);
        assert_eq!(
            e,
            format!("policy.yaml: the file is {} bytes; previewd reads at most 1 MiB (1048576 bytes)", huge.len())
        );
        assert_eq!(error("# nothing yet\n"), format!("policy.yaml: {EMPTY}"));
    }

    fn problems(text: &str) -> Vec<String> {
        match parse(text) {
            Err(PolicyError::Invalid { problems, .. }) => problems.iter().map(ToString::to_string).collect(),
            other => panic!("expected validation problems, got {other:?}"),
        }
    }

    fn has(problems: &[String], field: &str, words: &str) {
        assert!(
            problems.iter().any(|p| p.starts_with(&format!("{field}: ")) && p.contains(words)),
            "no problem on {field} mentioning {words:?} in {problems:#?}"
        );
    }

    #[test]
    fn semantic_rules_name_the_field() {
        has(&problems("base_domain: Preview_Example.com"), "base_domain", "not a DNS name");
        has(&problems(&format!("base_domain: {}com", "abcdefghij.".repeat(18))), "base_domain", "room");
        has(&problems(&with("ttl: { default: 200h }")), "ttl.default", "longer than ttl.max 7days");
        has(&problems(&with("ttl: { default: 0s }")), "ttl.default", "longer than 0s");
        has(&problems(&with("ttl: { warn_before: 48h }")), "ttl.warn_before", "not shorter");
        has(&problems(&with("limits: { per_repository: 0 }")), "limits.per_repository", "at least 1");
        has(
            &problems(&with("resources: { quota: { defaults: { cpu: '10', memory: 1Gi, pods: 60 } } }")),
            "resources.quota.defaults.cpu",
            "above resources.quota.caps.cpu (8)",
        );
        has(
            &problems(&with("resources: { quota: { defaults: { cpu: '1', memory: 1Gi, pods: 60 } } }")),
            "resources.quota.defaults.pods",
            "60 is above",
        );
        has(
            &problems(&with("resources: { container: { default_request: { cpu: '1', memory: 1Gi } } }")),
            "resources.container.default_request.cpu",
            "above resources.container.default_limit.cpu",
        );
        has(
            &problems(&with("resources: { container: { max: { cpu: '64', memory: 2Gi } } }")),
            "resources.container.max.cpu",
            "quota",
        );
        has(&problems(&with("resources: { max_replicas: 0 }")), "resources.max_replicas", "at least 1");
        has(&problems(&with("allowed_registries: ['']")), "allowed_registries[0]", "empty");
        has(&problems(&with("allowed_registries: ['https://ghcr.io/acme/']")), "allowed_registries[0]", "scheme");
        has(&problems(&with("trigger: { mode: label, label: '' }")), "trigger.label", "label");
        has(&problems(&with("templates: { default: fancy }")), "templates.default", "\"fancy\" is not in");
        has(&problems(&with("templates: { available: [] }")), "templates.available", "at least one");
        has(
            &problems(&with("templates: { default: Web, available: [Web] }")),
            "templates.available[0]",
            "not a template",
        );
        has(&problems(&with("network: { egress_cidrs: [10.0.0.0] }")), "network.egress_cidrs[0]", "CIDR");
        has(&problems(&with("network: { egress_cidrs: [10.0.0.0/33] }")), "network.egress_cidrs[0]", "above 32");
        has(&problems(&with("secrets: { source_namespace: Platform }")), "secrets.source_namespace", "namespace");
        has(&problems(&with("secrets: { allowed: [DB] }")), "secrets.allowed[0]", "Secret name");
        has(&problems(&with("ingress: { controller_namespace: 'a b' }")), "ingress.controller_namespace", "namespace");
        has(&problems(&with("keep_label: ''")), "keep_label", "empty");
        has(&problems(&with("approve_label: ' '")), "approve_label", "empty");
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let found = problems("base_domain: x_y\nttl: { default: 200h }\nlimits: { global: 0 }\n");
        assert_eq!(found.len(), 3, "{found:#?}");
        let message = error("base_domain: x_y\nttl: { default: 200h }\n");
        assert_eq!(message.lines().count(), 2);
        assert!(message.lines().all(|l| l.starts_with("policy.yaml: ")));
    }

    #[test]
    fn override_problems_are_named_under_the_repository() {
        has(&problems(&with("repositories: { acme: {} }")), "repositories.acme", "owner/name");
        has(&problems(&with("repositories: { a/b: {}, A/B: {} }")), "repositories.a/b", "same repository");
        has(
            &problems(&with("repositories: { a/b: { ttl: { default: 300h } } }")),
            "repositories.a/b.ttl.default",
            "ttl.max",
        );
        has(
            &problems(&with("repositories: { a/b: { resources: { quota: { cpu: '99', memory: 1Gi, pods: 1 } } } }")),
            "repositories.a/b.resources.quota.cpu",
            "caps",
        );
        has(
            &problems(&with("repositories: { a/b: { templates: { default: nope } } }")),
            "repositories.a/b.templates.default",
            "nope",
        );
        has(
            &problems(&with("repositories: { a/b: { limits: { per_repository: 0 } } }")),
            "repositories.a/b.limits.per_repository",
            "at least 1",
        );
    }

    #[test]
    fn overrides_merge_over_the_global_policy() {
        let policy = parse(FULL).unwrap();
        let app = policy.for_repository("acme", "app");
        assert_eq!((app.owner.as_str(), app.name.as_str()), ("acme", "app"));
        assert_eq!(app.limits.per_repository, 10);
        assert_eq!(app.limits.when_full, WhenFull::Queue);
        assert_eq!(app.limits.global, 100, "shared limits stay global");
        assert_eq!(app.ttl.default, hours(24));
        assert_eq!(app.ttl.max, hours(168), "unset override fields keep the global value");
        assert_eq!(app.allowed_registries, ["ghcr.io/acme/app"]);
        assert_eq!(app.forks, ForkPolicy::Approve);
        assert_eq!(app.trigger, Trigger { mode: TriggerMode::Label, label: "preview".into() });
        assert!(app.drafts);
        assert_eq!(app.templates.default, "worker");
        assert_eq!(app.templates.available, ["web", "worker"]);
        assert!(app.secrets.allowed.is_empty(), "an empty list replaces the global one");
        assert_eq!(app.max_replicas, 5);
        assert_eq!(app.quota.cpu.as_str(), "6");

        let other = policy.for_repository("acme", "site");
        assert_eq!(other.limits.per_repository, 5);
        assert_eq!(other.forks, ForkPolicy::Deny);
        assert_eq!(other.secrets.allowed, ["db-readonly"]);
        assert_eq!(other.quota, policy.resources.quota.defaults);
    }

    #[test]
    fn registry_prefixes_match_at_boundaries() {
        let policy = parse(&with("allowed_registries: [ghcr.io/acme/, registry.test/team]")).unwrap();
        let e = policy.for_repository("a", "b");
        assert!(e.allows_image("ghcr.io/acme/app:1"));
        assert!(!e.allows_image("ghcr.io/acme-evil/app:1"));
        assert!(e.allows_image("registry.test/team/app"));
        assert!(e.allows_image("registry.test/team:1"));
        assert!(!e.allows_image("registry.test/teamevil/app"));
        assert!(!e.allows_image("docker.io/evil/x"));
        let open = parse("base_domain: preview.example.com").unwrap().for_repository("a", "b");
        assert!(open.allows_image("docker.io/anything"));
    }

    #[test]
    fn template_names_include_overrides() {
        let policy = parse(FULL).unwrap();
        assert_eq!(policy.template_names().into_iter().collect::<Vec<_>>(), ["web", "worker"]);
    }

    #[test]
    fn dns_defaults_to_a_wildcard_record_verified_within_a_minute() {
        let dns = parse("base_domain: preview.example.com").unwrap().dns;
        assert_eq!(dns, DnsPolicy::default());
        assert_eq!(dns.provider, DnsProvider::Wildcard);
        assert_eq!((dns.ttl, dns.verify_timeout, dns.target), (60, Duration::from_secs(60), None));
    }

    #[test]
    fn dns_parses_every_provider() {
        let wildcard = parse(&with(
            "dns: { provider: wildcard, target: { a: 192.0.2.10 }, resolvers: [192.0.2.53, '[2001:db8::53]:5353'] }",
        ))
        .unwrap()
        .dns;
        assert_eq!(wildcard.target.unwrap().a, Some("192.0.2.10".parse().unwrap()));
        assert_eq!(parse_dns_server(&wildcard.resolvers[0]).unwrap().to_string(), "192.0.2.53:53");
        assert_eq!(parse_dns_server(&wildcard.resolvers[1]).unwrap().to_string(), "[2001:db8::53]:5353");

        let external = parse(&with(
            "dns: { provider: external-dns, target: { cname: ingress.example.com }, ttl: 120, verify_timeout: 5m }",
        ))
        .unwrap()
        .dns;
        assert_eq!(external.provider, DnsProvider::ExternalDns);
        assert_eq!(external.target.unwrap().cname.as_deref(), Some("ingress.example.com"));
        assert_eq!((external.ttl, external.verify_timeout), (120, Duration::from_secs(300)));

        let rfc = parse(
            "base_domain: preview.test\ndns:\n  provider: rfc2136\n  target: { aaaa: '2001:db8::10' }\n  rfc2136: { server: '127.0.0.1:5353', zone: preview.test, key_name: previewd }\n",
        )
        .unwrap()
        .dns;
        assert_eq!(rfc.provider, DnsProvider::Rfc2136);
        let r = rfc.rfc2136.unwrap();
        assert_eq!(
            (r.key_algorithm, r.key_secret_env.as_str()),
            (TsigAlgorithmName::HmacSha256, "PREVIEWD_DNS_TSIG_SECRET")
        );
        let sha512 = with(
            "dns: { provider: rfc2136, target: { a: 192.0.2.1 }, rfc2136: { server: 192.0.2.53, zone: example.com, key_name: k, key_algorithm: hmac-sha512, key_secret_env: MY_KEY } }",
        );
        let r = parse(&sha512).unwrap().dns.rfc2136.unwrap();
        assert_eq!((r.key_algorithm, r.key_secret_env.as_str()), (TsigAlgorithmName::HmacSha512, "MY_KEY"));
    }

    #[test]
    fn dns_mistakes_name_the_field() {
        let e = error(&with("dns: { provider: route53 }"));
        assert!(e.contains("dns.provider: ") && e.contains("external-dns") && e.contains("rfc2136"), "{e}");
        let e = error(&with("dns: { target: { a: 300.1.1.1 } }"));
        assert!(e.contains("dns.target.a: "), "{e}");
        let e = error(&with("dns: { rfc2136: { server: 1.2.3.4, zone: z, key_name: k, secret: abc } }"));
        assert!(e.contains("dns.rfc2136: unknown field `secret`") || e.contains("dns.rfc2136.secret"), "{e}");
        has(
            &problems(&with("dns: { provider: external-dns }")),
            "dns.target",
            "required when dns.provider is external-dns",
        );
        has(&problems(&with("dns: { provider: rfc2136, target: { a: 192.0.2.1 } }")), "dns.rfc2136", "required");
        has(&problems(&with("dns: { target: { a: 192.0.2.1, cname: x.example.com } }")), "dns.target", "exactly one");
        has(&problems(&with("dns: { target: {} }")), "dns.target", "exactly one");
        has(&problems(&with("dns: { target: { cname: 'not a name' } }")), "dns.target.cname", "not a DNS name");
        has(&problems(&with("dns: { ttl: 0 }")), "dns.ttl", "between 1 and 86400");
        has(&problems(&with("dns: { resolvers: [localhost] }")), "dns.resolvers[0]", "not a server address");
        has(
            &problems(&with("dns: { rfc2136: { server: 192.0.2.53, zone: preview.example.com, key_name: k } }")),
            "dns.rfc2136",
            "only used when dns.provider is rfc2136, not wildcard",
        );
        let rfc = |fields: &str| {
            with(&format!("dns: {{ provider: rfc2136, target: {{ a: 192.0.2.1 }}, rfc2136: {{ {fields} }} }}"))
        };
        has(
            &problems(&rfc("server: 'dns:53', zone: example.com, key_name: k")),
            "dns.rfc2136.server",
            "not a server address",
        );
        has(
            &problems(&rfc("server: 192.0.2.53, zone: other.test, key_name: k")),
            "dns.rfc2136.zone",
            "not inside zone",
        );
        has(&problems(&rfc("server: 192.0.2.53, zone: 'a b', key_name: k")), "dns.rfc2136.zone", "not a DNS name");
        has(&problems(&rfc("server: 192.0.2.53, zone: example.com, key_name: ''")), "dns.rfc2136.key_name", "key name");
        has(
            &problems(&rfc("server: 192.0.2.53, zone: example.com, key_name: k, key_secret_env: 'my-secret'")),
            "dns.rfc2136.key_secret_env",
            "environment variable",
        );
        let e = error(&rfc("server: 192.0.2.53, zone: example.com, key_name: k, key_algorithm: hmac-md5"));
        assert!(e.contains("dns.rfc2136.key_algorithm: ") && e.contains("hmac-sha256"), "{e}");
    }

    #[test]
    fn a_policy_round_trips_through_yaml() {
        let policy = parse(FULL).unwrap();
        let text = yaml::to_string(&policy).unwrap();
        assert_eq!(parse(&text).unwrap(), policy);
        let with_dns = parse(&with("dns: { provider: rfc2136, target: { cname: lb.example.com }, rfc2136: { server: 192.0.2.53, zone: example.com, key_name: k } }")).unwrap();
        let text = yaml::to_string(&with_dns).unwrap();
        assert_eq!(parse(&text).unwrap(), with_dns);
    }
}
