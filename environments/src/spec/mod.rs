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
mod database;
mod expiry;
mod services;

pub use admission::{Commands, FORK_DENIED, LimitDecision, LiveCounts, check_limits, trigger_allows};
pub use database::{DATABASE_USER, MAX_SEED_SQL_BYTES, MAX_SEED_SQL_FILES, PASSWORD_SECRET, SEED_SQL_DIR};
pub use expiry::{expires_at, sleep_after, warn_at};
pub use services::generated_env_name;

use crate::model::{CommitSha, PrNumber, PullRequest, Repo};
use crate::naming;
use crate::policy::{
    ContainerPolicy, EffectivePolicy, GatewayPolicy, IngressPolicy, QuotaValues, ResourceValues, Routing, Storage,
    TlsMode, Unit, duration_text, show,
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

/// Everything needed to render one environment; the template context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvironmentSpec {
    /// The namespace, and the host's first label.
    pub name: String,
    /// The first public service's host (the environment's own name under the base domain).
    pub host: String,
    /// `https://<host>`
    pub url: String,
    pub repo: Repo,
    pub pr: PrNumber,
    pub head_sha: CommitSha,
    /// In the order `.preview.yaml` lists them.
    pub services: Vec<ServiceSpec>,
    pub database: Option<DatabaseSpec>,
    /// Every platform Secret to copy from the policy's source namespace (the services' `secrets`
    /// and the registry credentials). Always empty for a fork.
    pub platform_secrets: Vec<String>,
    /// Every secret previewd generates once per environment and keeps across redeploys.
    pub generated_secrets: Vec<String>,
    /// Registry credentials named as the workloads' `imagePullSecrets`. Empty for a fork.
    pub image_pull_secrets: Vec<String>,
    /// The wildcard certificate's Secret the Ingresses name (copied into the environment with
    /// `ingress.tls: copy`); `None` when they name none.
    pub tls_secret: Option<String>,
    pub quota: QuotaSpec,
    pub limit_range: LimitRangeSpec,
    /// The template set.
    pub template: String,
    /// Lifetime after the last activity, already within the policy's maximum.
    #[serde(with = "duration_text")]
    pub ttl: Duration,
    /// How long without a visit or a push before it sleeps; `None`: never.
    #[serde(with = "crate::policy::duration_text::option")]
    pub sleep_after: Option<Duration>,
    pub routing: Routing,
    pub ingress: IngressSpec,
    pub gateway: GatewayPolicy,
    /// Egress allowed beyond cluster DNS.
    pub egress_cidrs: Vec<String>,
    pub from_fork: bool,
    /// What previewd changed from the request, for the pull request comment (a shortened TTL,
    /// secrets withheld from a fork).
    pub notes: Vec<String>,
    /// Sleeping: the templates scale every workload to zero (and keep the replicas it had in
    /// the annotation `previewd.dev/awake-replicas`). Set when placed for a reconcile.
    pub asleep: bool,
}

/// One service: a Deployment, with a Service when it has a port, and a route when public.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceSpec {
    pub name: String,
    /// The image with `{sha}` and `{short_sha}` replaced.
    pub image: String,
    pub port: Option<u16>,
    pub replicas: u32,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Platform Secrets exposed with `envFrom`.
    pub platform_secrets: Vec<String>,
    /// Generated secrets exposed as variables.
    pub generated_secrets: Vec<String>,
    /// The container's requests and limits, the policy's defaults filling what the repository
    /// left out.
    pub resources: ContainerResources,
    /// The readiness check's path, on a service with a port.
    pub health_check_path: Option<String>,
    pub public: bool,
    /// A public service's hostname and URL ([`naming::service_hostname`]).
    pub host: Option<String>,
    pub url: Option<String>,
    /// The annotations of its Ingress: the policy's, and external-dns's for its host.
    pub route_annotations: BTreeMap<String, String>,
}

/// The environment's database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatabaseSpec {
    pub engine: String,
    pub version: String,
    pub image: String,
    /// Counts resets (`/preview reset-db`): a new generation is a new, empty database, seeded
    /// again.
    pub generation: i64,
    /// The StatefulSet of this generation, `database-<generation>`.
    pub statefulset: String,
    pub storage: Storage,
    /// `storage` is `volume`.
    pub volume: bool,
    pub storage_class: String,
    pub size: Quantity,
    /// The user and database name.
    pub user: String,
    /// The generated Secret holding the password (key `value`).
    pub password_secret: String,
    pub resources: ContainerResources,
    pub seed: Option<SeedSpec>,
}

/// The Job that seeds a new database: once per database generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeedSpec {
    /// `seed-<generation>`.
    pub job: String,
    /// The service whose image and variables it runs with; `None` for SQL files, run with
    /// `psql` in the database's image.
    pub service: Option<String>,
    pub image: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub platform_secrets: Vec<String>,
    pub generated_secrets: Vec<String>,
    pub resources: ContainerResources,
    pub timeout_seconds: u64,
    /// The repository's SQL files, in the order they run; empty for a `command`.
    pub sql: Vec<SqlFile>,
    /// `seed-<generation>-sql`, the ConfigMap holding `sql`, mounted at `/seed` (with `sql`).
    pub config_map: Option<String>,
}

/// One SQL file of a seed: read from the repository at the head commit when the seed starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SqlFile {
    /// Relative to the repository's root.
    pub path: String,
    /// Its key in the ConfigMap and file name under `/seed`: `01-db-schema.sql`.
    pub key: String,
}

impl EnvironmentSpec {
    /// What the environment asks of the cluster: its containers' requests times their replicas,
    /// the database's included, as (CPU millicores, memory bytes). Usage reports count these.
    pub fn requested(&self) -> (i64, i64) {
        let containers = self.services.iter().map(|s| (&s.resources, i64::from(s.replicas)));
        let database = self.database.iter().map(|d| (&d.resources, 1));
        containers.chain(database).fold((0i64, 0i64), |(cpu, memory), (resources, replicas)| {
            let c = resources.requests.cpu.cpu_millis().unwrap_or(0).saturating_mul(replicas);
            let m = resources.requests.memory.bytes().unwrap_or(0).saturating_mul(replicas);
            (cpu.saturating_add(c), memory.saturating_add(m))
        })
    }

    /// Names the environment `name` under `base_domain`: its host and URL, and each public
    /// service's (the first gets the environment's own host). Sets the database generation's
    /// object names.
    pub fn place(&mut self, name: &str, base_domain: &str, database_generation: i64) {
        self.name = name.to_owned();
        self.host = naming::hostname(name, base_domain);
        self.url = format!("https://{}", self.host);
        let mut first = true;
        for service in self.services.iter_mut().filter(|s| s.public) {
            let host = if first {
                self.host.clone()
            } else {
                naming::hostname(&naming::service_label(name, &service.name), base_domain)
            };
            first = false;
            service.url = Some(format!("https://{host}"));
            service.host = Some(host);
        }
        if let Some(database) = &mut self.database {
            database.generation = database_generation.max(1);
            database.statefulset = format!("database-{}", database.generation);
            if let Some(seed) = &mut database.seed {
                seed.job = format!("seed-{}", database.generation);
                if !seed.sql.is_empty() {
                    seed.config_map = Some(format!("{}-sql", seed.job));
                }
            }
        }
    }

    /// The public services' (name, URL), for the pull request and the API.
    pub fn service_urls(&self) -> Vec<(String, String)> {
        self.services.iter().filter_map(|s| s.url.clone().map(|url| (s.name.clone(), url))).collect()
    }
}

/// Requests and limits of one container.
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
/// and approved). Its environment still gets no platform-provided secrets (registry credentials
/// included): approval says the code may run, not that it may read the platform's credentials.
/// Generated secrets are the environment's own, so it keeps those. The withheld secrets are
/// listed in `notes`.
pub fn resolve(
    policy: &EffectivePolicy,
    pr: &PullRequest,
    config: &RepoConfig,
) -> Result<EnvironmentSpec, Vec<SpecProblem>> {
    let mut p = Problems::default();
    let mut notes = Vec::new();

    if config.services.len() > policy.max_services as usize {
        p.push(
            "services",
            format!("{} services are more than the platform maximum of {}", config.services.len(), policy.max_services),
        );
    }
    let mut services: Vec<ServiceSpec> = config
        .services
        .iter()
        .map(|(name, service)| services::resolve_service(policy, &pr.head_sha, config, name, service, &mut p))
        .collect();
    if !services.iter().any(|s| s.public) {
        p.push("services", "none is `expose: public`: mark the one reviewers open (it gets the environment's URL)");
    }
    let database = config.database.as_ref().and_then(|d| database::resolve_database(policy, d, &services, &mut p));

    let mut platform_secrets: Vec<String> = Vec::new();
    let mut generated_secrets: Vec<String> = Vec::new();
    for service in &services {
        for name in &service.platform_secrets {
            if !platform_secrets.contains(name) {
                platform_secrets.push(name.clone());
            }
        }
        for name in &service.generated_secrets {
            if !generated_secrets.contains(name) {
                generated_secrets.push(name.clone());
            }
        }
    }
    if database.is_some() {
        generated_secrets.push(database::PASSWORD_SECRET.to_owned());
    }
    let mut image_pull_secrets = policy.secrets.image_pull.clone();
    if pr.from_fork && !(platform_secrets.is_empty() && image_pull_secrets.is_empty()) {
        let withheld: Vec<String> = platform_secrets.iter().chain(&image_pull_secrets).cloned().collect();
        notes.push(format!(
            "secrets: not given to a pull request from a fork, whose code could read them: {}",
            withheld.join(", ")
        ));
        platform_secrets.clear();
        image_pull_secrets.clear();
        for service in &mut services {
            service.platform_secrets.clear();
        }
    }
    let tls_secret = match (policy.routing, policy.ingress.tls) {
        (Routing::Ingress, TlsMode::Copy) if !policy.ingress.tls_secret_name.is_empty() => {
            Some(policy.ingress.tls_secret_name.clone())
        }
        _ => None,
    };
    let mut database = database;
    if let Some(seed) = database.as_mut().and_then(|d| d.seed.as_mut())
        && pr.from_fork
    {
        seed.platform_secrets.clear();
    }

    check_quota(policy, config, &services, database.as_ref(), &mut p);

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

    let (sleep_after, sleep_note) = expiry::sleep_after(&policy.sleep, config.sleep);
    notes.extend(sleep_note);

    if !p.0.is_empty() {
        return Err(p.0);
    }
    let mut spec = EnvironmentSpec {
        name: String::new(),
        host: String::new(),
        url: String::new(),
        repo: pr.repo.clone(),
        pr: pr.number,
        head_sha: pr.head_sha.clone(),
        services,
        database,
        platform_secrets: platform_secrets.iter().chain(&image_pull_secrets).cloned().collect(),
        generated_secrets,
        image_pull_secrets,
        tls_secret,
        quota: policy.quota.clone(),
        limit_range: policy.container.clone(),
        template,
        ttl,
        sleep_after,
        routing: policy.routing,
        ingress: policy.ingress.clone(),
        gateway: policy.gateway.clone(),
        egress_cidrs: policy.egress_cidrs.clone(),
        from_fork: pr.from_fork,
        notes,
        asleep: false,
    };
    spec.place(&naming::environment_name(&pr.repo, pr.number), &policy.base_domain, 1);
    Ok(spec)
}

/// Every container of the environment at its limits, and every pod, must fit the namespace's
/// quota, or some would never start. Skipped when a replica count is itself wrong: that problem
/// is the one to fix first. The one-service form without a database keeps its messages on
/// `replicas` and `resources.limits.*`.
fn check_quota(
    policy: &EffectivePolicy,
    config: &RepoConfig,
    services: &[ServiceSpec],
    database: Option<&DatabaseSpec>,
    p: &mut Problems,
) {
    if services.iter().any(|s| s.replicas == 0 || s.replicas > policy.max_replicas) {
        return;
    }
    let mut containers: Vec<(&ContainerResources, u32)> = services.iter().map(|s| (&s.resources, s.replicas)).collect();
    if let Some(database) = database {
        containers.push((&database.resources, 1));
        if let Some(seed) = &database.seed {
            containers.push((&seed.resources, 1));
        }
    }
    let pods: u32 = containers.iter().map(|(_, replicas)| replicas).sum();
    let alone = config.single && database.is_none();
    if pods > policy.quota.pods {
        let (field, what) = if alone {
            ("replicas".to_owned(), pods.to_string())
        } else {
            ("services".to_owned(), format!("{pods} pods (the services' replicas, the database and its seed)"))
        };
        p.push(field, format!("{what} is above the environment's quota of {} pods", policy.quota.pods));
    }
    for (kind, unit, quota) in [("cpu", Unit::Cpu, &policy.quota.cpu), ("memory", Unit::Bytes, &policy.quota.memory)] {
        let Ok(quota_value) = unit.value(quota) else { continue };
        let limit = |r: &ContainerResources| if kind == "cpu" { r.limits.cpu.clone() } else { r.limits.memory.clone() };
        let total = containers.iter().try_fold(0i64, |sum, (resources, replicas)| {
            unit.value(&limit(resources)).ok().map(|v| sum.saturating_add(v.saturating_mul(i64::from(*replicas))))
        });
        let Some(total) = total else { continue };
        if total <= quota_value {
            continue;
        }
        if alone {
            let (resources, replicas) = containers[0];
            p.push(
                format!("resources.limits.{kind}"),
                format!(
                    "{replicas} replicas × {} is above the environment's quota of {quota} {kind}",
                    limit(resources)
                ),
            );
        } else {
            let shown = if kind == "cpu" { format!("{total}m") } else { format!("{} Mi", total / (1024 * 1024)) };
            p.push(
                "services",
                format!(
                    "all containers together (the services' replicas, the database and its seed) are limited to {shown} {kind}, above the environment's quota of {quota} {kind}"
                ),
            );
        }
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() { "none".to_owned() } else { items.join(", ") }
}

#[cfg(test)]
mod tests;
