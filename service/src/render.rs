//! `previewd render`: a dry run of the templates for one pull request.

use crate::cli::RenderArgs;
use anyhow::bail;
use previewd_environments::model::{CommitSha, PrNumber, PullRequest, Repo, RepoId};
use previewd_environments::policy::Policy;
use previewd_environments::reconcile::{Placement, render_environment};
use previewd_environments::render::Renderer;
use previewd_environments::time::now_ms;
use previewd_environments::yaml::{self, Origin};

pub fn run(args: &RenderArgs) -> anyhow::Result<()> {
    let policy_text = yaml::read_file(&args.policy, Origin::Platform)?;
    let policy = Policy::from_yaml(&policy_text, &args.policy.display().to_string())?;
    // Capped as a repository's file is: it is one.
    let config = yaml::read_file(&args.repo_config, Origin::Repository)?;
    let renderer = Renderer::load(&args.templates)?;
    // Only for the annotations it adds to the Ingress; a dry run needs no TSIG secret.
    let dns = previewd_environments::dns::Dns::from_policy(&policy.dns, None).ok();
    let Some((owner, name)) = args.repo.split_once('/') else {
        bail!("--repo must be `owner/name`, got `{}`", args.repo);
    };
    let pr = PullRequest {
        repo: Repo { id: RepoId(args.repo_id), owner: owner.to_owned(), name: name.to_owned() },
        number: PrNumber(args.pr),
        head_sha: CommitSha(args.sha.clone()),
        head_branch: "preview".to_owned(),
        author: "previewd-render".to_owned(),
        from_fork: false,
        draft: false,
        labels: vec![],
    };
    let effective = policy.for_repository(owner, name);
    let ttl = previewd_environments::repo_config::RepoConfig::from_yaml(&config)
        .ok()
        .and_then(|c| c.ttl)
        .unwrap_or(effective.ttl.default);
    let expires_at = previewd_environments::spec::expires_at(now_ms(), ttl, effective.ttl.max);
    let (spec, manifests) = render_environment(
        &renderer,
        &policy,
        &pr,
        &config,
        &Placement {
            name: None,
            expires_at,
            instance: "previewd",
            dns: dns.as_ref(),
            database_generation: 1,
            asleep: false,
        },
    )?;
    use std::fmt::Write as _;
    let mut out = String::new();
    writeln!(out, "# environment {} at {}", spec.name, spec.url)?;
    for (service, url) in spec.service_urls() {
        writeln!(out, "# service {service}: {url}")?;
    }
    if let Some(seed) = spec.database.as_ref().and_then(|d| d.seed.as_ref()) {
        writeln!(out, "# Job {}: runs once, after the database is ready", seed.job)?;
        if let Some(config_map) = &seed.config_map {
            let paths: Vec<&str> = seed.sql.iter().map(|f| f.path.as_str()).collect();
            writeln!(
                out,
                "# ConfigMap {config_map}: {}, read at the head commit when the seed starts",
                paths.join(", ")
            )?;
        }
    }
    for note in &spec.notes {
        writeln!(out, "# note: {note}")?;
    }
    for secret in &spec.generated_secrets {
        writeln!(out, "# Secret generated-{secret}: random value, created once in the cluster (not shown)")?;
    }
    for secret in spec.platform_secrets.iter().chain(&spec.tls_secret) {
        writeln!(out, "# Secret {secret}: copied from {} (not shown)", effective.secrets.source_namespace)?;
    }
    for manifest in manifests {
        writeln!(out, "---\n{}", yaml::to_string(&manifest.object).map_err(anyhow::Error::msg)?.trim_end())?;
    }
    // A reader that stops early (`| head`) is not an error.
    match std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
        _ => Ok(()),
    }
}
