//! The rules between the policy's fields, all checked at once so that one start-up names every
//! mistake.

use super::*;

impl Policy {
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
        let share = &self.share_links;
        if share.default.is_zero() || share.default > share.max {
            p.push(
                "share_links.default",
                format!(
                    "{} must be longer than 0s and at most share_links.max {}",
                    show(share.default),
                    show(share.max)
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
        self.database.check(&mut p);
        self.gateway.check(self.routing, &mut p);
        self.forward_auth.check(self.routing, &mut p);
        if self.ingress.tls == TlsMode::CertManager && self.ingress.cert_manager_issuer.trim().is_empty() {
            p.push("ingress.cert_manager_issuer", "must name the ClusterIssuer when ingress.tls is `cert_manager`");
        }
        for (i, secret) in self.secrets.image_pull.iter().enumerate() {
            if !naming::is_dns1123_subdomain(secret) {
                p.push(format!("secrets.image_pull[{i}]"), format!("{secret:?} is not a Secret name"));
            }
        }

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
        if e.max_services == 0 {
            p.push(f("resources.max_services"), "must be at least 1");
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
}

#[derive(Default)]
pub(super) struct Problems(Vec<PolicyProblem>);

impl Problems {
    pub(super) fn push(&mut self, field: impl Into<String>, problem: impl Into<String>) {
        self.0.push(PolicyProblem { field: field.into(), problem: problem.into() });
    }
    pub(super) fn finish(self) -> Result<(), Vec<PolicyProblem>> {
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
