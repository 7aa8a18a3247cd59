//! The resolved environment: a repository's `.preview.yaml` and the platform policy combined into
//! exactly what the templates render, plus the rules that decide whether a pull request gets an
//! environment at all (trigger, forks, drafts, limits) and when it expires.
//!
//! The platform's caps always win. A request above a cap is an error the pull request's author
//! sees, never silently clamped, because a quietly smaller environment fails in ways nobody can
//! explain. The one exception is the TTL: asking for more time than allowed is not a mistake worth
//! failing a deploy for, so it is shortened to the maximum and the shortening is noted.
//!
//! Secret values never pass through here: the spec names secrets, the reconciler copies or
//! generates their values in the cluster.

use crate::model::{CommitSha, PrNumber, PullRequest, Repo};
use crate::naming;
use crate::policy::{
    ContainerPolicy, EffectivePolicy, ForkPolicy, IngressPolicy, QuotaValues, ResourceValues, TriggerMode, Unit,
    WhenFull, duration_text, show,
};
use crate::quantity::Quantity;
use crate::repo_config::{REPO_CONFIG_FILE, RepoConfig};
use crate::time::{Millis, millis};
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

/// When an environment whose last activity was at `last_activity_ms` expires: `ttl` later, but
/// never more than `max` later.
pub fn expires_at(last_activity_ms: Millis, ttl: Duration, max: Duration) -> Millis {
    last_activity_ms.saturating_add(millis(ttl.min(max)))
}

/// When to warn that an environment expiring at `expires_at_ms` is about to go, or `None` when the
/// policy sends no warnings (`warn_before: 0s`).
pub fn warn_at(expires_at_ms: Millis, warn_before: Duration) -> Option<Millis> {
    (!warn_before.is_zero()).then(|| expires_at_ms.saturating_sub(millis(warn_before)))
}

/// Live environments, not counting the one being decided on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveCounts {
    /// Across every repository.
    pub global: u64,
    /// Across the repositories of the pull request's owner.
    pub organization: u64,
    /// In the pull request's repository.
    pub repository: u64,
}

/// Whether a new environment fits the concurrent-environment limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitDecision {
    Allowed,
    /// Over a limit; the reason names the limit and the current count.
    Rejected {
        reason: String,
    },
    /// Over a limit, and the policy queues: the environment waits for a slot.
    Queued {
        reason: String,
    },
}

/// Checks a new environment against the limits, the repository's first: that is the one its
/// author can do something about (close an old pull request).
pub fn check_limits(policy: &EffectivePolicy, counts: LiveCounts) -> LimitDecision {
    let l = &policy.limits;
    let reason = if counts.repository >= u64::from(l.per_repository) {
        format!(
            "repository limit reached: {} already has {} live environments (limit {})",
            policy.full_name(),
            counts.repository,
            l.per_repository
        )
    } else if counts.organization >= u64::from(l.per_organization) {
        format!(
            "organization limit reached: {} already has {} live environments (limit {})",
            policy.owner, counts.organization, l.per_organization
        )
    } else if counts.global >= u64::from(l.global) {
        format!("global limit reached: {} environments are live (limit {})", counts.global, l.global)
    } else {
        return LimitDecision::Allowed;
    };
    match l.when_full {
        WhenFull::Reject => LimitDecision::Rejected { reason },
        WhenFull::Queue => LimitDecision::Queued { reason },
    }
}

/// Commands given on the pull request by someone allowed to give them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Commands {
    /// `/preview deploy`: asks for an environment whatever the trigger mode or draft state.
    pub deploy: bool,
    /// `/preview approve` on a fork's pull request, by someone with write access.
    pub approve_fork: bool,
}

/// The reason fork pull requests get nothing under `forks: deny`.
pub const FORK_DENIED: &str =
    "pull requests from forks get no environment by default: their code would see the environment's secrets";

/// Whether the pull request should have an environment, or why not (for the pull request
/// comment). A `/preview deploy` command overrides the trigger mode and the draft rule, because a
/// person asked; it never overrides the fork rule, which protects the platform from the code.
pub fn trigger_allows(policy: &EffectivePolicy, pr: &PullRequest, commands: Commands) -> Result<(), String> {
    if pr.from_fork {
        match policy.forks {
            ForkPolicy::Deny => return Err(FORK_DENIED.to_owned()),
            ForkPolicy::Approve if !commands.approve_fork => {
                return Err(format!(
                    "pull requests from forks get an environment once someone with write access comments \
                     `/preview approve` or adds the label `{}`, for each new commit: their code runs in the environment",
                    policy.approve_label
                ));
            }
            ForkPolicy::Approve => {}
        }
    }
    if commands.deploy {
        return Ok(());
    }
    if pr.draft && !policy.drafts {
        return Err("draft pull requests get no environment until they are ready for review; \
                    comment `/preview deploy` to get one now"
            .to_owned());
    }
    match policy.trigger.mode {
        TriggerMode::EveryPullRequest => Ok(()),
        TriggerMode::Label => {
            if pr.labels.iter().any(|l| l.eq_ignore_ascii_case(&policy.trigger.label)) {
                Ok(())
            } else {
                Err(format!(
                    "this repository gives environments to pull requests labelled `{}`; add the label or comment `/preview deploy`",
                    policy.trigger.label
                ))
            }
        }
        TriggerMode::Command => {
            Err("this repository gives environments on request: comment `/preview deploy`".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RepoId;
    use crate::policy::Policy;

    const POLICY: &str = r#"
base_domain: preview.example.com
ttl: { default: 48h, max: 168h, warn_before: 2h }
resources:
  quota: { defaults: { cpu: "4", memory: 8Gi, pods: 20 }, caps: { cpu: "8", memory: 16Gi, pods: 50 } }
  container:
    default_request: { cpu: 100m, memory: 128Mi }
    default_limit: { cpu: 500m, memory: 512Mi }
    max: { cpu: "2", memory: 2Gi }
  max_replicas: 3
allowed_registries: [ghcr.io/acme/]
templates: { default: web, available: [web] }
secrets: { allowed: [db-readonly] }
network: { egress_cidrs: [10.0.0.0/8] }
repositories:
  acme/queued: { limits: { when_full: queue } }
  acme/forkable: { forks: approve }
  acme/labelled: { trigger: { mode: label, label: Preview } }
  acme/asked: { trigger: { mode: command } }
  acme/drafty: { drafts: true }
"#;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn policy(repo: &str) -> EffectivePolicy {
        Policy::from_yaml(POLICY, "policy.yaml").unwrap().for_repository("acme", repo)
    }

    fn pr() -> PullRequest {
        PullRequest {
            repo: Repo { id: RepoId(42), owner: "acme".into(), name: "app".into() },
            number: PrNumber(7),
            head_sha: CommitSha(SHA.into()),
            head_branch: "feature".into(),
            author: "dev".into(),
            from_fork: false,
            draft: false,
            labels: vec![],
        }
    }

    fn config(extra: &str) -> RepoConfig {
        RepoConfig::from_yaml(&format!("image: ghcr.io/acme/app:{{sha}}\n{extra}")).unwrap()
    }

    fn problems(extra: &str) -> Vec<String> {
        resolve(&policy("app"), &pr(), &config(extra)).unwrap_err().iter().map(ToString::to_string).collect()
    }

    fn has(problems: &[String], expected: &str) {
        assert!(problems.iter().any(|p| p == expected), "no {expected:?} in {problems:#?}");
    }

    #[test]
    fn a_minimal_config_resolves_with_the_policy_defaults() {
        let spec = resolve(&policy("app"), &pr(), &config("")).unwrap();
        assert!(spec.name.starts_with("app-pr-7-") && naming::is_dns1123_label(&spec.name));
        assert_eq!(spec.host, format!("{}.preview.example.com", spec.name));
        assert_eq!(spec.url, format!("https://{}", spec.host));
        assert_eq!(spec.image, format!("ghcr.io/acme/app:{SHA}"));
        assert_eq!((spec.port, spec.replicas), (8080, 1));
        assert_eq!(spec.resources.requests.cpu.as_str(), "100m");
        assert_eq!(spec.resources.limits.memory.as_str(), "512Mi");
        assert_eq!(spec.quota.memory.as_str(), "8Gi");
        assert_eq!(spec.limit_range.max.cpu.as_str(), "2");
        assert_eq!(spec.health_check_path, "/");
        assert_eq!(spec.template, "web");
        assert_eq!(spec.ttl, Duration::from_secs(48 * 3600));
        assert_eq!(spec.ingress.controller_namespace, "ingress-nginx");
        assert_eq!(spec.egress_cidrs, ["10.0.0.0/8"]);
        assert!(spec.notes.is_empty() && !spec.from_fork);
    }

    #[test]
    fn a_full_config_resolves() {
        let spec = resolve(
            &policy("app"),
            &pr(),
            &config(
                "port: 3000\nreplicas: 2\nenv: { MODE: preview }\nsecrets: [db-readonly, db-readonly]\n\
                 generated_secrets: [session-key]\nresources: { requests: { cpu: 250m }, limits: { cpu: '1', memory: 1Gi } }\n\
                 health_check: { path: /healthz }\ntemplate: web\nttl: 3d\n",
            ),
        )
        .unwrap();
        assert_eq!((spec.port, spec.replicas), (3000, 2));
        assert_eq!(spec.platform_secrets, ["db-readonly"]);
        assert_eq!(spec.generated_secrets, ["session-key"]);
        assert_eq!(spec.resources.requests.cpu.as_str(), "250m");
        assert_eq!(spec.resources.limits.cpu.as_str(), "1");
        assert_eq!(spec.resources.requests.memory.as_str(), "128Mi");
        assert_eq!(spec.health_check_path, "/healthz");
        assert_eq!(spec.ttl, Duration::from_secs(3 * 86400));
    }

    #[test]
    fn placeholders_are_substituted() {
        let spec =
            resolve(&policy("app"), &pr(), &config("").clone_with_image("ghcr.io/acme/app:{short_sha}-x")).unwrap();
        assert_eq!(spec.image, "ghcr.io/acme/app:0123456789ab-x");
        let e = resolve(&policy("app"), &pr(), &config("").clone_with_image("ghcr.io/acme/app:{branch}")).unwrap_err();
        assert_eq!(e[0].to_string(), "image: unknown placeholder {branch}; available: {sha}, {short_sha}");
        let e = resolve(&policy("app"), &pr(), &config("").clone_with_image("ghcr.io/acme/app:{sha")).unwrap_err();
        assert!(e[0].to_string().contains("without a closing"), "{e:?}");
    }

    trait WithImage {
        fn clone_with_image(&self, image: &str) -> RepoConfig;
    }
    impl WithImage for RepoConfig {
        fn clone_with_image(&self, image: &str) -> RepoConfig {
            RepoConfig { image: image.into(), ..self.clone() }
        }
    }

    #[test]
    fn images_outside_the_allowed_registries_are_refused() {
        let e = resolve(&policy("app"), &pr(), &config("").clone_with_image("docker.io/evil/x")).unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "image: \"docker.io/evil/x\" is not from an allowed registry; allowed: ghcr.io/acme/"
        );
        for sneaky in ["ghcr.io/acme/../evil/x", "ghcr.io/acme//x", "ghcr.io/acme/x y", "ghcr.io/acme/x\n"] {
            let e = resolve(&policy("app"), &pr(), &config("").clone_with_image(sneaky)).unwrap_err();
            assert!(e[0].field == "image" && e[0].problem.contains("not an image reference"), "{sneaky:?}: {e:?}");
        }
    }

    #[test]
    fn caps_are_errors_naming_the_field_and_the_cap() {
        has(&problems("replicas: 5\n"), "replicas: 5 is above the platform maximum of 3");
        has(&problems("replicas: 0\n"), "replicas: must be at least 1");
        has(&problems("port: 0\n"), "port: must be between 1 and 65535");
        has(
            &problems("resources: { limits: { memory: 4Gi } }\n"),
            "resources.limits.memory: 4Gi is above the platform maximum of 2Gi",
        );
        has(
            &problems("resources: { requests: { cpu: '3' } }\n"),
            "resources.requests.cpu: 3 is above the platform maximum of 2",
        );
        has(
            &problems("resources: { requests: { cpu: '1' }, limits: { cpu: 500m } }\n"),
            "resources.requests.cpu: 1 is above resources.limits.cpu (500m)",
        );
        has(
            &problems("replicas: 3\nresources: { limits: { cpu: '2' } }\n"),
            "resources.limits.cpu: 3 replicas × 2 is above the environment's quota of 4 cpu",
        );
        has(
            &problems("secrets: [prod-db]\n"),
            "secrets: \"prod-db\" is not a platform secret this repository may use; allowed: db-readonly",
        );
        has(&problems("template: fancy\n"), "template: \"fancy\" does not exist; available: web");
        has(&problems("ttl: 0s\n"), "ttl: must be longer than 0s");
        has(
            &problems("health_check: { path: healthz }\n"),
            "health_check.path: \"healthz\" must be a URL path starting with `/`, without spaces",
        );
    }

    #[test]
    fn a_request_alone_raises_the_default_limit_and_a_limit_alone_lowers_the_default_request() {
        let spec = resolve(&policy("app"), &pr(), &config("resources: { requests: { cpu: '1' } }\n")).unwrap();
        assert_eq!((spec.resources.requests.cpu.as_str(), spec.resources.limits.cpu.as_str()), ("1", "1"));
        let spec = resolve(&policy("app"), &pr(), &config("resources: { limits: { memory: 64Mi } }\n")).unwrap();
        assert_eq!((spec.resources.requests.memory.as_str(), spec.resources.limits.memory.as_str()), ("64Mi", "64Mi"));
    }

    #[test]
    fn env_and_generated_secret_names_are_checked() {
        let found = problems(
            "env: { 1BAD: x, GOOD_1: y, SESSION_KEY: z }\ngenerated_secrets: [session-key, Bad_Name, 9lives]\n",
        );
        has(
            &found,
            "env.1BAD: is not a valid environment variable name: letters, digits and `_`, not starting with a digit",
        );
        has(&found, "env.SESSION_KEY: is also the variable of generated secret \"session-key\"; rename one of them");
        assert!(found.iter().any(|p| p.starts_with("generated_secrets: \"Bad_Name\" is not a valid name")));
        assert!(found.iter().any(|p| p.starts_with("generated_secrets: \"9lives\" is not a valid name")));
        assert_eq!(found.len(), 4, "{found:#?}");
        assert_eq!(generated_env_name("session-key"), "SESSION_KEY");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let found = problems("replicas: 9\ntemplate: fancy\nsecrets: [prod-db]\n");
        assert_eq!(found.len(), 3, "{found:#?}");
        let text = describe_problems(&resolve(&policy("app"), &pr(), &config("replicas: 9\n")).unwrap_err());
        assert_eq!(text, ".preview.yaml: replicas: 9 is above the platform maximum of 3");
    }

    #[test]
    fn a_long_ttl_is_clamped_and_noted() {
        let spec = resolve(&policy("app"), &pr(), &config("ttl: 30d\n")).unwrap();
        assert_eq!(spec.ttl, Duration::from_secs(168 * 3600));
        assert_eq!(spec.notes, ["ttl: 30days is longer than the platform maximum of 7days; using 7days"]);
    }

    #[test]
    fn forks_keep_generated_secrets_but_not_platform_ones() {
        let fork = PullRequest { from_fork: true, ..pr() };
        let spec =
            resolve(&policy("app"), &fork, &config("secrets: [db-readonly]\ngenerated_secrets: [session-key]\n"))
                .unwrap();
        assert!(spec.from_fork);
        assert!(spec.platform_secrets.is_empty());
        assert_eq!(spec.generated_secrets, ["session-key"]);
        assert_eq!(spec.notes.len(), 1);
        assert!(spec.notes[0].contains("fork") && spec.notes[0].contains("db-readonly"));
        // A secret the repository may not use is still an error on a fork.
        assert!(resolve(&policy("app"), &fork, &config("secrets: [prod-db]\n")).is_err());
    }

    #[test]
    fn the_spec_serializes_as_the_template_context() {
        let spec = resolve(&policy("app"), &pr(), &config("")).unwrap();
        let value = serde_json::to_value(&spec).unwrap();
        assert_eq!(value["pr"], 7);
        assert_eq!(value["repo"]["owner"], "acme");
        assert_eq!(value["head_sha"], SHA);
        assert_eq!(value["quota"]["pods"], 20);
        assert_eq!(value["limit_range"]["default_request"]["cpu"], "100m");
        assert_eq!(value["resources"]["limits"]["memory"], "512Mi");
        assert_eq!(value["ingress"]["tls_secret_name"], "preview-wildcard-tls");
        assert_eq!(value["ttl"], "2days");
    }

    #[test]
    fn expiry_is_clamped_to_the_maximum() {
        let hour = Duration::from_secs(3600);
        assert_eq!(expires_at(1_000, hour, 2 * hour), 1_000 + 3_600_000);
        assert_eq!(expires_at(1_000, 5 * hour, 2 * hour), 1_000 + 7_200_000);
        assert_eq!(expires_at(i64::MAX - 1, hour, hour), i64::MAX);
        assert_eq!(warn_at(10_000_000, hour), Some(10_000_000 - 3_600_000));
        assert_eq!(warn_at(10_000_000, Duration::ZERO), None);
    }

    #[test]
    fn limits_name_the_limit_and_the_count() {
        let p = policy("app");
        assert_eq!(
            check_limits(&p, LiveCounts { global: 99, organization: 19, repository: 4 }),
            LimitDecision::Allowed
        );
        assert_eq!(
            check_limits(&p, LiveCounts { global: 10, organization: 10, repository: 5 }),
            LimitDecision::Rejected {
                reason: "repository limit reached: acme/app already has 5 live environments (limit 5)".into()
            }
        );
        assert_eq!(
            check_limits(&p, LiveCounts { global: 10, organization: 20, repository: 1 }),
            LimitDecision::Rejected {
                reason: "organization limit reached: acme already has 20 live environments (limit 20)".into()
            }
        );
        assert_eq!(
            check_limits(&p, LiveCounts { global: 100, organization: 1, repository: 1 }),
            LimitDecision::Rejected { reason: "global limit reached: 100 environments are live (limit 100)".into() }
        );
        assert!(matches!(
            check_limits(&policy("queued"), LiveCounts { global: 0, organization: 0, repository: 5 }),
            LimitDecision::Queued { reason } if reason.contains("acme/queued already has 5")
        ));
    }

    #[test]
    fn trigger_rules() {
        let none = Commands::default();
        let deploy = Commands { deploy: true, ..none };
        assert_eq!(trigger_allows(&policy("app"), &pr(), none), Ok(()));

        let fork = PullRequest { from_fork: true, ..pr() };
        assert_eq!(trigger_allows(&policy("app"), &fork, deploy), Err(FORK_DENIED.to_owned()));
        let waiting = trigger_allows(&policy("forkable"), &fork, deploy).unwrap_err();
        assert!(waiting.contains("/preview approve") && waiting.contains("`preview:approve`"), "{waiting}");
        assert_eq!(trigger_allows(&policy("forkable"), &fork, Commands { approve_fork: true, ..none }), Ok(()));

        let draft = PullRequest { draft: true, ..pr() };
        assert!(trigger_allows(&policy("app"), &draft, none).unwrap_err().contains("draft"));
        assert_eq!(trigger_allows(&policy("app"), &draft, deploy), Ok(()));
        assert_eq!(trigger_allows(&policy("drafty"), &draft, none), Ok(()));

        assert!(trigger_allows(&policy("labelled"), &pr(), none).unwrap_err().contains("labelled `Preview`"));
        let labelled = PullRequest { labels: vec!["bug".into(), "preview".into()], ..pr() };
        assert_eq!(trigger_allows(&policy("labelled"), &labelled, none), Ok(()));
        assert_eq!(trigger_allows(&policy("labelled"), &pr(), deploy), Ok(()));

        assert!(trigger_allows(&policy("asked"), &labelled, none).unwrap_err().contains("/preview deploy"));
        assert_eq!(trigger_allows(&policy("asked"), &pr(), deploy), Ok(()));
    }

    #[test]
    fn the_e2e_fixtures_parse_and_resolve() {
        let policy = Policy::from_yaml(include_str!("../../e2e/fixtures/policy.yaml"), "policy.yaml").unwrap();
        let config = RepoConfig::from_yaml(include_str!("../../e2e/fixtures/preview.yaml")).unwrap();
        let effective = policy.for_repository("acme", "app");
        let spec = resolve(&effective, &pr(), &config).unwrap();
        assert!(spec.host.ends_with(".preview.test"));
        assert!(spec.image.starts_with("registry.preview.test/"));
        assert!(spec.image.contains(SHA));
        assert_eq!(spec.ingress.controller_namespace, "ingress-nginx");
        assert_eq!(policy.secrets.source_namespace, "previewd-platform-secrets");
        assert_eq!(spec.platform_secrets.len(), config.secrets.len());
        assert!(spec.notes.is_empty(), "{:?}", spec.notes);
    }
}
