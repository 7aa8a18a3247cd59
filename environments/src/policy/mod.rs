//! The platform team's policy: where previews live, how long, how many, how big, from which
//! registries, for which pull requests, and per-repository exceptions.
//!
//! The policy is read once at start. Every mistake in it stops start-up with a message naming the
//! file and the field, because a policy that is silently half-applied is worse than none: a typo in
//! a cap would otherwise leave the cap at its default. Parsing rejects unknown fields and wrong
//! types; [`Policy::validate`] then checks the rules between fields and reports all of them at once.
//!
//! The schema (the sections and their defaults) lives here; DNS has its own file, as do the
//! per-repository overrides with the merge that makes an [`EffectivePolicy`], and the rules
//! between fields.

mod access;
mod dns;
mod overrides;
#[cfg(test)]
mod tests;
mod validate;
mod workloads;

pub use access::{
    ForwardAuthController, ForwardAuthPolicy, Protection, SharePolicy, SleepAfter, SleepOverride, SleepPolicy,
};
pub use dns::{
    DEFAULT_TSIG_SECRET_ENV, DnsPolicy, DnsProvider, DnsTarget, Rfc2136Policy, TsigAlgorithmName, parse_dns_server,
};
pub use overrides::{
    EffectivePolicy, LimitsOverride, Override, ResourcesOverride, SecretsOverride, TemplatesOverride, TriggerOverride,
    TtlOverride,
};
pub(crate) use validate::Unit;
pub use workloads::{DatabasePolicy, EnginePolicy, GatewayPolicy, ParentRef, Routing, Storage, TlsMode, keys};

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
    /// How traffic reaches public services: an Ingress each (`ingress`, the default) or an
    /// HTTPRoute each on the platform's Gateway (`gateway`).
    #[serde(default)]
    pub routing: Routing,
    /// How previews are exposed with routing `ingress`.
    #[serde(default)]
    pub ingress: IngressPolicy,
    /// The platform's Gateway, with routing `gateway`.
    #[serde(default)]
    pub gateway: GatewayPolicy,
    /// The databases repositories may ask for.
    #[serde(default)]
    pub database: DatabasePolicy,
    /// What an environment's pods may reach.
    #[serde(default)]
    pub network: NetworkPolicy,
    /// Platform-provided secrets environments may receive.
    #[serde(default)]
    pub secrets: SecretsPolicy,
    /// Who may open previews: `auto` (the default: `github` for private repositories, `none`
    /// for public ones), `none`, `github` (people who may read the repository) or `github_org`
    /// (anyone who may sign in to previewd).
    #[serde(default)]
    pub protection: Protection,
    /// When idle environments sleep.
    #[serde(default)]
    pub sleep: SleepPolicy,
    /// How long share links may stay open.
    #[serde(default)]
    pub share_links: SharePolicy,
    /// How the rendered Ingresses ask previewd's forward-authentication endpoint before each
    /// request (ingress-nginx or Traefik); `none` when the platform wires it itself.
    #[serde(default)]
    pub forward_auth: ForwardAuthPolicy,
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
    /// The most replicas a repository may ask for, per service.
    pub max_replicas: u32,
    /// The most services an environment may have (its database not counted).
    pub max_services: u32,
}

impl Default for ResourcePolicy {
    fn default() -> Self {
        Self { quota: QuotaPolicy::default(), container: ContainerPolicy::default(), max_replicas: 3, max_services: 5 }
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
    /// How each Ingress gets its certificate: `copy` (the default), `cert_manager` or
    /// `controller_default` (see [`TlsMode`]).
    pub tls: TlsMode,
    /// The wildcard certificate's Secret in `secrets.source_namespace`, which `tls: copy` copies
    /// into each environment under the same name. Empty is the same as `tls:
    /// controller_default`.
    pub tls_secret_name: String,
    /// The cert-manager ClusterIssuer, with `tls: cert_manager`.
    pub cert_manager_issuer: String,
    /// Extra annotations on every Ingress.
    pub annotations: BTreeMap<String, String>,
}

impl Default for IngressPolicy {
    fn default() -> Self {
        Self {
            class_name: "nginx".to_owned(),
            controller_namespace: "ingress-nginx".to_owned(),
            tls: TlsMode::Copy,
            tls_secret_name: "preview-wildcard-tls".to_owned(),
            cert_manager_issuer: String::new(),
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
    /// Registry credentials (`kubernetes.io/dockerconfigjson` Secrets in `source_namespace`)
    /// copied into every environment and named as the workloads' `imagePullSecrets`. Never
    /// given to a pull request from a fork.
    pub image_pull: Vec<String>,
}

impl Default for SecretsPolicy {
    fn default() -> Self {
        Self { source_namespace: "previewd-platform-secrets".to_owned(), allowed: Vec::new(), image_pull: Vec::new() }
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
