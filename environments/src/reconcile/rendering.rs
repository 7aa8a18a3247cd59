//! Resolving and rendering one environment: pure, shared by the reconciler and `previewd
//! render`, so a dry run shows exactly what would be applied.

use crate::dns::Dns;
use crate::model::PullRequest;
use crate::naming;
use crate::policy::Policy;
use crate::render::{Ownership, RenderError, Renderer};
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
    /// Adds external-dns annotations to the Ingress when that provider is configured.
    pub dns: Option<&'a Dns>,
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
) -> Result<(EnvironmentSpec, Vec<crate::render::Manifest>), Unrenderable> {
    let effective = policy.for_repository(&pr.repo.owner, &pr.repo.name);
    let config = RepoConfig::from_yaml(config_text).map_err(|e| Unrenderable::Config(e.to_string()))?;
    let spec = spec::resolve(&effective, pr, &config).map_err(|p| Unrenderable::Config(spec::describe_problems(&p)))?;
    let name = placement.name.map_or_else(|| naming::environment_name(&pr.repo, pr.number), str::to_owned);
    let host = naming::hostname(&name, &effective.base_domain);
    let mut spec = EnvironmentSpec { url: format!("https://{host}"), host, name: name.clone(), ..spec };
    // external-dns reads its record from the Ingress.
    if let Some(dns) = placement.dns {
        spec.ingress.annotations.extend(dns.ingress_annotations(&spec.host));
    }
    let owner = Ownership {
        instance: placement.instance.to_owned(),
        environment: name,
        repo_id: pr.repo.id.0,
        pr: pr.number.0,
    };
    let context = Context { spec: &spec, expires_at: rfc3339(placement.expires_at) };
    let manifests =
        renderer.render(&spec.template, &context, &owner).map_err(|e| Unrenderable::Template(template_reason(&e)))?;
    Ok((spec, manifests))
}

/// A template error is the platform team's to fix, not the pull request author's.
fn template_reason(error: &RenderError) -> String {
    format!(
        "the platform's environment template failed, so this is not a problem in your pull request ({error}); tell the platform team"
    )
}
