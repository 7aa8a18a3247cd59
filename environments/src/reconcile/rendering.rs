//! Resolving and rendering one environment: pure, shared by the reconciler and `previewd
//! render`, so a dry run shows exactly what would be applied.

use crate::dns::Dns;
use crate::kinds::Kind;
use crate::model::PullRequest;
use crate::naming;
use crate::policy::Policy;
use crate::policy::{DatabasePolicy, Unit};
use crate::quantity::Quantity;
use crate::render::{Manifest, Ownership, Renderer};
use crate::repo_config::RepoConfig;
use crate::spec::{self, EnvironmentSpec};
use crate::time::rfc3339;
use serde::Serialize;

/// The template context: the resolved environment plus what only the reconciler knows.
#[derive(Serialize)]
struct Context<'a> {
    #[serde(flatten)]
    spec: &'a EnvironmentSpec,
    expires_at: String,
}

/// Why an environment could not be rendered: the author's configuration, or the platform's
/// template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unrenderable {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Template(String),
}

/// Where and how long an environment lives, beyond what its pull request and config say.
pub struct Placement<'a> {
    /// The stored name; derived from the pull request when the environment is new.
    pub name: Option<&'a str>,
    pub expires_at: i64,
    /// The previewd installation (ownership label).
    pub instance: &'a str,
    /// Adds external-dns annotations to the Ingresses when that provider is configured.
    pub dns: Option<&'a Dns>,
    /// The database's generation (stored; 1 until the first `reset-db`).
    pub database_generation: i64,
    /// The environment is Sleeping: its workloads are rendered at zero replicas.
    pub asleep: bool,
}

/// Resolves `config` under the policy for `pr`'s repository and renders the environment named
/// `name` (the stored name; derived from the pull request when new). Pure: the reconciler and
/// `previewd render` share it, so a dry run shows exactly what would be applied.
pub fn render_environment(
    renderer: &Renderer,
    policy: &Policy,
    pr: &PullRequest,
    config_text: &str,
    placement: &Placement<'_>,
) -> Result<(EnvironmentSpec, Vec<Manifest>), Unrenderable> {
    let effective = policy.for_repository(&pr.repo.owner, &pr.repo.name);
    let config = RepoConfig::from_yaml(config_text).map_err(|e| Unrenderable::Config(e.to_string()))?;
    let spec = spec::resolve(&effective, pr, &config).map_err(|p| Unrenderable::Config(spec::describe_problems(&p)))?;
    let name = placement.name.map_or_else(|| naming::environment_name(&pr.repo, pr.number), str::to_owned);
    let mut spec: EnvironmentSpec = spec;
    spec.place(&name, &effective.base_domain, placement.database_generation);
    // Forward authentication on every route (after the policy's own annotations, which it
    // overrides); external-dns reads its record from each Ingress: its own host.
    let forward_auth = policy.forward_auth.ingress_annotations();
    for service in &mut spec.services {
        let mut annotations = spec.ingress.annotations.clone();
        annotations.extend(forward_auth.clone());
        if let (Some(dns), Some(host)) = (placement.dns, &service.host) {
            annotations.extend(dns.ingress_annotations(host));
        }
        service.route_annotations = annotations;
    }
    let owner = Ownership {
        instance: placement.instance.to_owned(),
        environment: name,
        repo_id: pr.repo.id.0,
        pr: pr.number.0,
    };
    spec.asleep = placement.asleep;
    let context = Context { spec: &spec, expires_at: rfc3339(placement.expires_at) };
    let manifests =
        renderer.render(&spec.template, &context, &owner).map_err(|e| Unrenderable::Template(template_reason(&e)))?;
    check_storage(&effective.database, &manifests)
        .map_err(|problem| Unrenderable::Template(template_reason(&problem)))?;
    Ok((spec, manifests))
}

/// Storage a template asks for (PersistentVolumeClaims, and StatefulSets' claim templates) is
/// held to the policy's `database.size` and `database.storage_class`: a template cannot give an
/// environment more disk, or a costlier class, than the platform set.
fn check_storage(policy: &DatabasePolicy, manifests: &[Manifest]) -> Result<(), String> {
    let cap = Unit::Bytes.value(&policy.size).map_err(|e| e.to_string())?;
    for manifest in manifests {
        let claims: Vec<&serde_json::Value> = match manifest.kind {
            Kind::PersistentVolumeClaim => vec![&manifest.object["spec"]],
            Kind::StatefulSet => manifest.object["spec"]["volumeClaimTemplates"]
                .as_array()
                .map(|templates| templates.iter().map(|t| &t["spec"]).collect())
                .unwrap_or_default(),
            _ => continue,
        };
        for claim in claims {
            let what = format!("{} `{}`", manifest.kind, manifest.name);
            let size = claim["resources"]["requests"]["storage"]
                .as_str()
                .ok_or_else(|| format!("{what} asks for storage without `resources.requests.storage`"))?;
            let bytes =
                size.parse::<Quantity>().and_then(|q| Unit::Bytes.value(&q)).map_err(|e| format!("{what}: {e}"))?;
            if bytes > cap {
                return Err(format!(
                    "{what} asks for {size} of storage, above the policy's database.size {}",
                    policy.size
                ));
            }
            let class = claim["storageClassName"].as_str().unwrap_or("");
            if class != policy.storage_class {
                return Err(format!(
                    "{what} asks for storage class {class:?}; the policy allows {:?} (database.storage_class)",
                    policy.storage_class
                ));
            }
        }
    }
    Ok(())
}

/// A template error is the platform team's to fix, not the pull request author's.
fn template_reason(error: &impl std::fmt::Display) -> String {
    format!(
        "the platform's environment template failed, so this is not a problem in your pull request ({error}); tell the platform team"
    )
}
