//! One service of `.preview.yaml` under the policy: its image, port, replicas, variables,
//! secrets, resources and readiness check. Problems are named under the service's field
//! (`services.api.port`, or `port` in the one-service form).

use super::{ContainerResources, Problems, ServiceSpec, list_or_none};
use crate::model::CommitSha;
use crate::naming;
use crate::policy::{EffectivePolicy, ResourceValues, Unit};
use crate::quantity::Quantity;
use crate::repo_config::{Expose, RepoConfig, ServiceConfig};
use std::collections::BTreeMap;

/// The longest generated secret name: `generated-<name>` must still be a 63-character label.
pub(super) const MAX_GENERATED_SECRET_LEN: usize = naming::MAX_LABEL_LEN - "generated-".len();
/// The longest service name: short enough that `<service>--` leaves most of a hostname label
/// to the environment's name.
pub(super) const MAX_SERVICE_NAME_LEN: usize = 20;
/// Names the platform's templates use for the environment's own objects.
pub(super) const RESERVED_SERVICE_NAMES: [&str; 2] = ["database", "seed"];

/// A service resolved, or `None` with its problems pushed.
pub(super) fn resolve_service(
    policy: &EffectivePolicy,
    sha: &CommitSha,
    config: &RepoConfig,
    name: &str,
    service: &ServiceConfig,
    p: &mut Problems,
) -> ServiceSpec {
    let f = |field: &str| config.field(name, field);
    if !config.single {
        if !is_service_name(name) {
            p.push(
                format!("services.{name}"),
                format!(
                    "{name:?} is not a service name: lowercase letters, digits and single `-`, starting with a letter, at most {MAX_SERVICE_NAME_LEN} characters"
                ),
            );
        } else if RESERVED_SERVICE_NAMES.contains(&name) {
            p.push(
                format!("services.{name}"),
                format!("{name:?} is the name of the environment's own {name}; pick another"),
            );
        }
    }
    let image = resolve_image(policy, sha, &service.image, &f("image"), p);
    if service.port == Some(0) {
        p.push(f("port"), "must be between 1 and 65535");
    }
    let public = service.expose == Expose::Public;
    if public && service.port.is_none() {
        p.push(f("expose"), "a public service needs a `port` to serve");
    }
    if service.replicas == 0 {
        p.push(f("replicas"), "must be at least 1");
    } else if service.replicas > policy.max_replicas {
        p.push(f("replicas"), format!("{} is above the platform maximum of {}", service.replicas, policy.max_replicas));
    }

    let mut generated_env_names = BTreeMap::new();
    let mut generated_secrets = Vec::new();
    for secret in &service.generated_secrets {
        if generated_secrets.contains(secret) {
            continue;
        }
        if !is_generated_secret_name(secret) {
            p.push(
                f("generated_secrets"),
                format!(
                    "{secret:?} is not a valid name: lowercase letters, digits and `-`, starting with a letter, at most {MAX_GENERATED_SECRET_LEN} characters"
                ),
            );
            continue;
        }
        if secret == super::database::PASSWORD_SECRET {
            p.push(f("generated_secrets"), format!("{secret:?} is the database's own; its variable is PGPASSWORD"));
            continue;
        }
        generated_env_names.insert(generated_env_name(secret), secret.clone());
        generated_secrets.push(secret.clone());
    }
    for variable in service.env.keys() {
        if !is_env_name(variable) {
            p.push(
                f(&format!("env.{variable}")),
                "is not a valid environment variable name: letters, digits and `_`, not starting with a digit",
            );
        } else if let Some(secret) = generated_env_names.get(variable) {
            p.push(
                f(&format!("env.{variable}")),
                format!("is also the variable of generated secret {secret:?}; rename one of them"),
            );
        }
    }

    let mut platform_secrets: Vec<String> = Vec::new();
    for secret in &service.secrets {
        if !policy.secrets.allowed.contains(secret) {
            p.push(
                f("secrets"),
                format!(
                    "{secret:?} is not a platform secret this repository may use; allowed: {}",
                    list_or_none(&policy.secrets.allowed)
                ),
            );
        } else if !platform_secrets.contains(secret) {
            platform_secrets.push(secret.clone());
        }
    }

    let resources = resolve_resources(policy, &service.resources, &f, p);

    let health_check_path = service.port.map(|_| service.health_check.clone().unwrap_or_default().path);
    if service.port.is_none() && service.health_check.is_some() {
        p.push(f("health_check"), "is an HTTP check on the service's `port`, and the service has none");
    }
    if let Some(path) = &health_check_path
        && (!path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        p.push(f("health_check.path"), format!("{path:?} must be a URL path starting with `/`, without spaces"));
    }

    ServiceSpec {
        name: name.to_owned(),
        image,
        port: service.port,
        replicas: service.replicas,
        command: service.command.clone(),
        args: service.args.clone(),
        env: service.env.clone(),
        platform_secrets,
        generated_secrets,
        resources,
        health_check_path,
        public,
        host: None,
        url: None,
        route_annotations: policy.ingress.annotations.clone(),
    }
}

fn resolve_image(policy: &EffectivePolicy, sha: &CommitSha, template: &str, field: &str, p: &mut Problems) -> String {
    let short: String = sha.0.chars().take(12).collect();
    let mut image = String::with_capacity(template.len() + sha.0.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        image.push_str(&rest[..start]);
        let after = &rest[start..];
        let Some(end) = after.find('}') else {
            p.push(field, format!("{template:?} has a `{{` without a closing `}}`"));
            return template.to_owned();
        };
        match &after[1..end] {
            "sha" => image.push_str(&sha.0),
            "short_sha" => image.push_str(&short),
            other => {
                p.push(field, format!("unknown placeholder {{{other}}}; available: {{sha}}, {{short_sha}}"));
                return template.to_owned();
            }
        }
        rest = &after[end + 1..];
    }
    image.push_str(rest);

    if let Some(problem) = image_reference_problem(&image) {
        p.push(field, format!("{image:?} {problem}"));
    } else if !policy.allows_image(&image) {
        p.push(
            field,
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

/// The request and limit of one resource (`kind`), checked against the bounds. What the author
/// set wins; a default gives way to it, so that asking only for a large request (or only a small
/// limit) does not pair it with a default that contradicts it.
fn resolve_resource(
    kind: &str,
    unit: Unit,
    (request, limit): (Option<&Quantity>, Option<&Quantity>),
    bounds: Bounds<'_>,
    f: &dyn Fn(&str) -> String,
    p: &mut Problems,
) -> (Quantity, Quantity) {
    let greater = |a: &Quantity, b: &Quantity| matches!((unit.value(a), unit.value(b)), (Ok(a), Ok(b)) if a > b);
    let (request, limit) = match (request, limit) {
        (Some(r), Some(l)) => (r.clone(), l.clone()),
        (Some(r), None) => (r.clone(), if greater(r, bounds.default_limit) { r } else { bounds.default_limit }.clone()),
        (None, Some(l)) => {
            (if greater(bounds.default_request, l) { l } else { bounds.default_request }.clone(), l.clone())
        }
        (None, None) => (bounds.default_request.clone(), bounds.default_limit.clone()),
    };
    let (request_field, limit_field) =
        (f(&format!("resources.requests.{kind}")), f(&format!("resources.limits.{kind}")));
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
        p.push(request_field, format!("{request} is above {} ({limit})", f(&format!("resources.limits.{kind}"))));
    }
    (request, limit)
}

fn resolve_resources(
    policy: &EffectivePolicy,
    asked: &crate::repo_config::RequestedResources,
    f: &dyn Fn(&str) -> String,
    p: &mut Problems,
) -> ContainerResources {
    let c = &policy.container;
    let (cpu_request, cpu_limit) = resolve_resource(
        "cpu",
        Unit::Cpu,
        (asked.requests.cpu.as_ref(), asked.limits.cpu.as_ref()),
        Bounds { default_request: &c.default_request.cpu, default_limit: &c.default_limit.cpu, max: &c.max.cpu },
        f,
        p,
    );
    let (memory_request, memory_limit) = resolve_resource(
        "memory",
        Unit::Bytes,
        (asked.requests.memory.as_ref(), asked.limits.memory.as_ref()),
        Bounds {
            default_request: &c.default_request.memory,
            default_limit: &c.default_limit.memory,
            max: &c.max.memory,
        },
        f,
        p,
    );
    ContainerResources {
        requests: ResourceValues { cpu: cpu_request, memory: memory_request },
        limits: ResourceValues { cpu: cpu_limit, memory: memory_limit },
    }
}

/// `[a-z]([-a-z0-9]*[a-z0-9])?`, short enough for `generated-<name>` to be a Secret name, and so
/// its variable (upper case, `-` as `_`) is a valid environment variable name.
fn is_generated_secret_name(name: &str) -> bool {
    name.len() <= MAX_GENERATED_SECRET_LEN
        && naming::is_dns1123_label(name)
        && name.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
}

/// A DNS label starting with a letter, without `--` (which separates the service from the
/// environment in its hostname).
fn is_service_name(name: &str) -> bool {
    name.len() <= MAX_SERVICE_NAME_LEN
        && naming::is_dns1123_label(name)
        && name.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
        && !name.contains("--")
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
