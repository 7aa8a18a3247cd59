//! The resolved environment: a repository's `.preview.yaml` and the platform policy combined into
//! exactly what the templates render. Beside it: the rules that decide whether a pull request gets
//! an environment at all (trigger, forks, drafts, limits: `admission.rs`) and when it expires
//! (`expiry.rs`).
//!
//! The platform's caps always win. A request above a cap is an error the pull request's author
//! sees, never silently clamped, because a quietly smaller environment fails in ways nobody can
//! explain. The one exception is the TTL: asking for more time than allowed is not a mistake worth
//! failing a deploy for, so it is shortened to the maximum and the shortening is noted.
//!
//! Secret values never pass through here: the spec names secrets, the reconciler copies or
//! generates their values in the cluster.

mod admission;
mod expiry;

pub use admission::{Commands, FORK_DENIED, LimitDecision, LiveCounts, check_limits, trigger_allows};
pub use expiry::{expires_at, warn_at};

use crate::model::{CommitSha, PrNumber, PullRequest, Repo};
use crate::naming;
use crate::policy::{
    ContainerPolicy, EffectivePolicy, IngressPolicy, QuotaValues, ResourceValues, Unit, duration_text, show,
};
use crate::quantity::Quantity;
use crate::repo_config::{REPO_CONFIG_FILE, RepoConfig};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// The namespace's ResourceQuota.
pub type QuotaSpec = QuotaValues;
/// The namespace's LimitRange.
pub type LimitRangeSpec = ContainerPolicy;
/// How the environment is exposed.
pub type IngressSpec = IngressPolicy;

/// The longest generated secret name: `generated-<name>` must still be a 63-character label.
const MAX_GENERATED_SECRET_LEN: usize = naming::MAX_LABEL_LEN - "generated-".len();

/// Everything needed to render one environment; the template context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvironmentSpec {
    /// The namespace, and the host's first label.
    pub name: String,
    pub host: String,
    /// `https://<host>`
    pub url: String,
    pub repo: Repo,
    pub pr: PrNumber,
    pub head_sha: CommitSha,
    /// The image with `{sha}` and `{short_sha}` replaced.
    pub image: String,
    pub port: u16,
    pub replicas: u32,
    pub env: BTreeMap<String, String>,
    /// Platform Secrets to copy from the policy's source namespace and expose with `envFrom`.
    /// Always empty for a fork.
    pub platform_secrets: Vec<String>,
    /// Secrets previewd generates once per environment and keeps across redeploys.
    pub generated_secrets: Vec<String>,
    /// The container's requests and limits, the policy's defaults filling what the repository
    /// left out.
    pub resources: ContainerResources,
    pub quota: QuotaSpec,
    pub limit_range: LimitRangeSpec,
    pub health_check_path: String,
    /// The template set.
    pub template: String,
    /// Lifetime after the last activity, already within the policy's maximum.
    #[serde(with = "duration_text")]
    pub ttl: Duration,
    pub ingress: IngressSpec,
    /// Egress allowed beyond cluster DNS.
    pub egress_cidrs: Vec<String>,
    pub from_fork: bool,
    /// What previewd changed from the request, for the pull request comment (a shortened TTL,
    /// secrets withheld from a fork).
    pub notes: Vec<String>,
}

impl EnvironmentSpec {
    /// What the environment asks of the cluster: its container's requests times its replicas,
    /// as (CPU millicores, memory bytes). Usage reports count these.
    pub fn requested(&self) -> (i64, i64) {
        let replicas = i64::from(self.replicas);
        let cpu = self.resources.requests.cpu.cpu_millis().unwrap_or(0);
        let memory = self.resources.requests.memory.bytes().unwrap_or(0);
        (cpu.saturating_mul(replicas), memory.saturating_mul(replicas))
    }
}

/// Requests and limits of the application container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerResources {
    pub requests: ResourceValues,
    pub limits: ResourceValues,
}

/// One thing wrong with the repository's configuration under the policy, for the pull request's
/// author: the `.preview.yaml` field, and the problem in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    pub field: String,
    pub problem: String,
}

impl fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// The problems as lines of `.preview.yaml: field: problem`, for the environment's `Failed`
/// message and the pull request comment.
pub fn describe_problems(problems: &[SpecProblem]) -> String {
    problems.iter().map(|p| format!("{REPO_CONFIG_FILE}: {p}")).collect::<Vec<_>>().join("\n")
}

#[derive(Default)]
struct Problems(Vec<SpecProblem>);

impl Problems {
    fn push(&mut self, field: impl Into<String>, problem: impl Into<String>) {
        self.0.push(SpecProblem { field: field.into(), problem: problem.into() });
    }
}

/// Combines the policy for the pull request's repository and the repository's configuration at
/// the head commit into the environment to render, or every problem found.
///
/// A pull request from a fork reaches this point only if the policy allowed it (forks `approve`,
/// and approved). Its environment still gets no platform-provided secrets: approval says the code
/// may run, not that it may read the platform's credentials. Generated secrets are the
/// environment's own, so it keeps those. The withheld secrets are listed in `notes`.
pub fn resolve(
    policy: &EffectivePolicy,
    pr: &PullRequest,
    config: &RepoConfig,
) -> Result<EnvironmentSpec, Vec<SpecProblem>> {
    let mut p = Problems::default();
    let mut notes = Vec::new();

    let image = resolve_image(policy, &pr.head_sha, &config.image, &mut p);

    if config.port == 0 {
        p.push("port", "must be between 1 and 65535");
    }
    if config.replicas == 0 {
        p.push("replicas", "must be at least 1");
    } else if config.replicas > policy.max_replicas {
        p.push("replicas", format!("{} is above the platform maximum of {}", config.replicas, policy.max_replicas));
    }

    let mut generated_env_names = BTreeMap::new();
    let mut generated_secrets = Vec::new();
    for name in &config.generated_secrets {
        if generated_secrets.contains(name) {
            continue;
        }
        if !is_generated_secret_name(name) {
            p.push(
                "generated_secrets",
                format!(
                    "{name:?} is not a valid name: lowercase letters, digits and `-`, starting with a letter, at most {MAX_GENERATED_SECRET_LEN} characters"
                ),
            );
            continue;
        }
        generated_env_names.insert(generated_env_name(name), name.clone());
        generated_secrets.push(name.clone());
    }

    for name in config.env.keys() {
        if !is_env_name(name) {
            p.push(
                format!("env.{name}"),
                "is not a valid environment variable name: letters, digits and `_`, not starting with a digit",
            );
        } else if let Some(secret) = generated_env_names.get(name) {
            p.push(
                format!("env.{name}"),
                format!("is also the variable of generated secret {secret:?}; rename one of them"),
            );
        }
    }

    let mut platform_secrets: Vec<String> = Vec::new();
    for name in &config.secrets {
        if !policy.secrets.allowed.contains(name) {
            p.push(
                "secrets",
                format!(
                    "{name:?} is not a platform secret this repository may use; allowed: {}",
                    list_or_none(&policy.secrets.allowed)
                ),
            );
        } else if !platform_secrets.contains(name) {
            platform_secrets.push(name.clone());
        }
    }
    if pr.from_fork && !platform_secrets.is_empty() {
        notes.push(format!(
            "secrets: not given to a pull request from a fork, whose code could read them: {}",
            platform_secrets.join(", ")
        ));
        platform_secrets.clear();
    }

    let resources = resolve_resources(policy, config, &mut p);

    let health_check_path = config.health_check.path.clone();
    if !health_check_path.starts_with('/') || health_check_path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        p.push(
            "health_check.path",
            format!("{health_check_path:?} must be a URL path starting with `/`, without spaces"),
        );
    }

    let template = config.template.clone().unwrap_or_else(|| policy.templates.default.clone());
    if !policy.templates.available.contains(&template) {
        p.push(
            "template",
            format!("{template:?} does not exist; available: {}", list_or_none(&policy.templates.available)),
        );
    }

    let mut ttl = config.ttl.unwrap_or(policy.ttl.default);
    if ttl.is_zero() {
        p.push("ttl", "must be longer than 0s");
    } else if ttl > policy.ttl.max {
        notes.push(format!(
            "ttl: {} is longer than the platform maximum of {}; using {}",
            show(ttl),
            show(policy.ttl.max),
            show(policy.ttl.max)
        ));
        ttl = policy.ttl.max;
    }

    if !p.0.is_empty() {
        return Err(p.0);
    }
    let name = naming::environment_name(&pr.repo, pr.number);
    let host = naming::hostname(&name, &policy.base_domain);
    Ok(EnvironmentSpec {
        url: format!("https://{host}"),
        name,
        host,
        repo: pr.repo.clone(),
        pr: pr.number,
        head_sha: pr.head_sha.clone(),
        image,
        port: config.port,
        replicas: config.replicas,
        env: config.env.clone(),
        platform_secrets,
        generated_secrets,
        resources,
        quota: policy.quota.clone(),
        limit_range: policy.container.clone(),
        health_check_path,
        template,
        ttl,
        ingress: policy.ingress.clone(),
        egress_cidrs: policy.egress_cidrs.clone(),
        from_fork: pr.from_fork,
        notes,
    })
}

fn resolve_image(policy: &EffectivePolicy, sha: &CommitSha, template: &str, p: &mut Problems) -> String {
    let short: String = sha.0.chars().take(12).collect();
    let mut image = String::with_capacity(template.len() + sha.0.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        image.push_str(&rest[..start]);
        let after = &rest[start..];
        let Some(end) = after.find('}') else {
            p.push("image", format!("{template:?} has a `{{` without a closing `}}`"));
            return template.to_owned();
        };
        match &after[1..end] {
            "sha" => image.push_str(&sha.0),
            "short_sha" => image.push_str(&short),
            other => {
                p.push("image", format!("unknown placeholder {{{other}}}; available: {{sha}}, {{short_sha}}"));
                return template.to_owned();
            }
        }
        rest = &after[end + 1..];
    }
    image.push_str(rest);

    if let Some(problem) = image_reference_problem(&image) {
        p.push("image", format!("{image:?} {problem}"));
    } else if !policy.allows_image(&image) {
        p.push(
            "image",
            format!("{image:?} is not from an allowed registry; allowed: {}", list_or_none(&policy.allowed_registries)),
        );
    }
    image
}

/// A light check of an image reference: enough to refuse what would smuggle something past the
/// registry prefix (`..`, empty path segments, spaces), not a full reference grammar. The
/// container runtime refuses anything else malformed, visibly, in the environment's status.
fn image_reference_problem(image: &str) -> Option<&'static str> {
    if image.is_empty() {
        return Some("is empty");
    }
    if !image.chars().all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c)) {
        return Some("is not an image reference: use letters, digits and . _ - / : @ only");
    }
    if image.starts_with(['/', '.', '-', ':', '@']) || image.contains("..") || image.contains("//") {
        return Some("is not an image reference");
    }
    None
}

/// The policy's bounds for one resource of the container.
struct Bounds<'a> {
    default_request: &'a Quantity,
    default_limit: &'a Quantity,
    max: &'a Quantity,
}

/// The request and limit of one resource (`kind`), and the limit's value, checked against the
/// bounds. What the author set wins; a default gives way to it, so that asking only for a large
/// request (or only a small limit) does not pair it with a default that contradicts it.
fn resolve_resource(
    kind: &str,
    unit: Unit,
    request: Option<&Quantity>,
    limit: Option<&Quantity>,
    bounds: Bounds<'_>,
    p: &mut Problems,
) -> (Quantity, Quantity, Option<i64>) {
    let greater = |a: &Quantity, b: &Quantity| matches!((unit.value(a), unit.value(b)), (Ok(a), Ok(b)) if a > b);
    let (request, limit) = match (request, limit) {
        (Some(r), Some(l)) => (r.clone(), l.clone()),
        (Some(r), None) => (r.clone(), if greater(r, bounds.default_limit) { r } else { bounds.default_limit }.clone()),
        (None, Some(l)) => {
            (if greater(bounds.default_request, l) { l } else { bounds.default_request }.clone(), l.clone())
        }
        (None, None) => (bounds.default_request.clone(), bounds.default_limit.clone()),
    };
    let (request_field, limit_field) = (format!("resources.requests.{kind}"), format!("resources.limits.{kind}"));
    let mut value = |q: &Quantity, field: &str| match unit.value(q) {
        Ok(v) => Some(v),
        Err(e) => {
            p.push(field, e.to_string());
            None
        }
    };
    let max = bounds.max;
    let max_value = value(max, &format!("resources (the platform's maximum {kind})"));
    let request_value = value(&request, &request_field);
    let limit_value = value(&limit, &limit_field);
    if let (Some(l), Some(m)) = (limit_value, max_value)
        && l > m
    {
        p.push(limit_field, format!("{limit} is above the platform maximum of {max}"));
    }
    if let (Some(r), Some(m)) = (request_value, max_value)
        && r > m
    {
        p.push(request_field, format!("{request} is above the platform maximum of {max}"));
    } else if let (Some(r), Some(l)) = (request_value, limit_value)
        && r > l
    {
        p.push(request_field, format!("{request} is above resources.limits.{kind} ({limit})"));
    }
    (request, limit, limit_value)
}

fn resolve_resources(policy: &EffectivePolicy, config: &RepoConfig, p: &mut Problems) -> ContainerResources {
    let c = &policy.container;
    let asked = &config.resources;
    let (cpu_request, cpu_limit, cpu_millis) = resolve_resource(
        "cpu",
        Unit::Cpu,
        asked.requests.cpu.as_ref(),
        asked.limits.cpu.as_ref(),
        Bounds { default_request: &c.default_request.cpu, default_limit: &c.default_limit.cpu, max: &c.max.cpu },
        p,
    );
    let (memory_request, memory_limit, memory_bytes) = resolve_resource(
        "memory",
        Unit::Bytes,
        asked.requests.memory.as_ref(),
        asked.limits.memory.as_ref(),
        Bounds {
            default_request: &c.default_request.memory,
            default_limit: &c.default_limit.memory,
            max: &c.max.memory,
        },
        p,
    );

    let resources = ContainerResources {
        requests: ResourceValues { cpu: cpu_request, memory: memory_request },
        limits: ResourceValues { cpu: cpu_limit, memory: memory_limit },
    };
    // All replicas at their limits must fit the namespace's quota, or some would never start.
    // Skipped when the replica count is itself wrong: that problem is the one to fix first.
    if config.replicas == 0 || config.replicas > policy.max_replicas {
        return resources;
    }
    if config.replicas > policy.quota.pods {
        p.push(
            "replicas",
            format!("{} is above the environment's quota of {} pods", config.replicas, policy.quota.pods),
        );
    }
    let replicas = i64::from(config.replicas);
    for (kind, unit, limit, each, quota) in [
        ("cpu", Unit::Cpu, &resources.limits.cpu, cpu_millis, &policy.quota.cpu),
        ("memory", Unit::Bytes, &resources.limits.memory, memory_bytes, &policy.quota.memory),
    ] {
        if let (Some(each), Ok(quota_value)) = (each, unit.value(quota))
            && each.saturating_mul(replicas) > quota_value
        {
            p.push(
                format!("resources.limits.{kind}"),
                format!("{replicas} replicas × {limit} is above the environment's quota of {quota} {kind}"),
            );
        }
    }
    resources
}

/// `[a-z]([-a-z0-9]*[a-z0-9])?`, short enough for `generated-<name>` to be a Secret name, and so
/// its variable (upper case, `-` as `_`) is a valid environment variable name.
fn is_generated_secret_name(name: &str) -> bool {
    name.len() <= MAX_GENERATED_SECRET_LEN
        && naming::is_dns1123_label(name)
        && name.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
}

/// The environment variable a generated secret is exposed as.
pub fn generated_env_name(secret: &str) -> String {
    secret.to_ascii_uppercase().replace('-', "_")
}

/// A C identifier, the portable environment variable name.
fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() { "none".to_owned() } else { items.join(", ") }
}

#[cfg(test)]
mod tests;
