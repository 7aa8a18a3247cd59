//! One repository's exceptions to the policy, and the merge that gives the policy a repository
//! is served under ([`EffectivePolicy`]): the one place a per-repository value is decided.

use super::*;

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
    pub protection: Option<Protection>,
    pub sleep: SleepOverride,
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
    pub max_services: Option<u32>,
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
    pub max_services: u32,
    pub allowed_registries: Vec<String>,
    pub forks: ForkPolicy,
    pub trigger: Trigger,
    pub drafts: bool,
    pub keep_label: String,
    pub approve_label: String,
    pub templates: Templates,
    pub routing: Routing,
    pub ingress: IngressPolicy,
    pub gateway: GatewayPolicy,
    pub database: DatabasePolicy,
    pub egress_cidrs: Vec<String>,
    pub secrets: SecretsPolicy,
    pub required_checks: Vec<String>,
    /// As configured; [`Protection::resolve`] with the repository's visibility gives the mode.
    pub protection: Protection,
    pub sleep: SleepPolicy,
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
    /// The policy for repository `owner/name`: the global policy with the repository's override
    /// (matched without regard to case) merged in.
    pub fn for_repository(&self, owner: &str, name: &str) -> EffectivePolicy {
        let full = format!("{owner}/{name}");
        let over = self.repositories.iter().find(|(key, _)| key.eq_ignore_ascii_case(&full)).map(|(_, o)| o);
        self.effective(over, owner, name)
    }

    pub(super) fn effective(&self, over: Option<&Override>, owner: &str, name: &str) -> EffectivePolicy {
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
            max_services: o.resources.max_services.unwrap_or(self.resources.max_services),
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
            protection: o.protection.unwrap_or(self.protection),
            sleep: SleepPolicy {
                after: o.sleep.after.unwrap_or(self.sleep.after),
                allow_never: o.sleep.allow_never.unwrap_or(self.sleep.allow_never),
            },
            templates: Templates {
                default: o.templates.default.clone().unwrap_or_else(|| self.templates.default.clone()),
                available: o.templates.available.clone().unwrap_or_else(|| self.templates.available.clone()),
            },
            routing: self.routing,
            ingress: self.ingress.clone(),
            gateway: self.gateway.clone(),
            database: self.database.clone(),
            egress_cidrs: self.network.egress_cidrs.clone(),
            secrets: SecretsPolicy {
                source_namespace: self.secrets.source_namespace.clone(),
                allowed: o.secrets.allowed.clone().unwrap_or_else(|| self.secrets.allowed.clone()),
                image_pull: self.secrets.image_pull.clone(),
            },
        }
    }
}
