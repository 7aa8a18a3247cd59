//! The spec's tests: resolving `.preview.yaml` under the policy, the trigger rules, limits and expiry.

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
    assert_eq!(spec.services[0].image, format!("ghcr.io/acme/app:{SHA}"));
    assert_eq!((spec.services[0].port, spec.services[0].replicas), (Some(8080), 1));
    assert_eq!(spec.services[0].resources.requests.cpu.as_str(), "100m");
    assert_eq!(spec.services[0].resources.limits.memory.as_str(), "512Mi");
    assert_eq!(spec.quota.memory.as_str(), "8Gi");
    assert_eq!(spec.limit_range.max.cpu.as_str(), "2");
    assert_eq!(spec.services[0].health_check_path.as_deref(), Some("/"));
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
    assert_eq!((spec.services[0].port, spec.services[0].replicas), (Some(3000), 2));
    assert_eq!(spec.platform_secrets, ["db-readonly"]);
    assert_eq!(spec.generated_secrets, ["session-key"]);
    assert_eq!(spec.services[0].resources.requests.cpu.as_str(), "250m");
    assert_eq!(spec.services[0].resources.limits.cpu.as_str(), "1");
    assert_eq!(spec.services[0].resources.requests.memory.as_str(), "128Mi");
    assert_eq!(spec.services[0].health_check_path.as_deref(), Some("/healthz"));
    assert_eq!(spec.ttl, Duration::from_secs(3 * 86400));
}

#[test]
fn placeholders_are_substituted() {
    let spec = resolve(&policy("app"), &pr(), &config("").clone_with_image("ghcr.io/acme/app:{short_sha}-x")).unwrap();
    assert_eq!(spec.services[0].image, "ghcr.io/acme/app:0123456789ab-x");
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
        let mut config = self.clone();
        config.services[0].1.image = image.into();
        config
    }
}

#[test]
fn images_outside_the_allowed_registries_are_refused() {
    let e = resolve(&policy("app"), &pr(), &config("").clone_with_image("docker.io/evil/x")).unwrap_err();
    assert_eq!(e[0].to_string(), "image: \"docker.io/evil/x\" is not from an allowed registry; allowed: ghcr.io/acme/");
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
    assert_eq!(
        (spec.services[0].resources.requests.cpu.as_str(), spec.services[0].resources.limits.cpu.as_str()),
        ("1", "1")
    );
    let spec = resolve(&policy("app"), &pr(), &config("resources: { limits: { memory: 64Mi } }\n")).unwrap();
    assert_eq!(
        (spec.services[0].resources.requests.memory.as_str(), spec.services[0].resources.limits.memory.as_str()),
        ("64Mi", "64Mi")
    );
}

#[test]
fn env_and_generated_secret_names_are_checked() {
    let found =
        problems("env: { 1BAD: x, GOOD_1: y, SESSION_KEY: z }\ngenerated_secrets: [session-key, Bad_Name, 9lives]\n");
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
        resolve(&policy("app"), &fork, &config("secrets: [db-readonly]\ngenerated_secrets: [session-key]\n")).unwrap();
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
    assert_eq!(value["services"][0]["name"], "app");
    assert_eq!(value["services"][0]["resources"]["limits"]["memory"], "512Mi");
    assert_eq!(value["services"][0]["host"], value["host"], "the only service has the environment's own host");
    assert_eq!(value["tls_secret"], "preview-wildcard-tls");
    assert_eq!((value["routing"].as_str(), value["ingress"]["tls"].as_str()), (Some("ingress"), Some("copy")));
    assert_eq!(value["database"], serde_json::Value::Null);
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
    assert_eq!(check_limits(&p, LiveCounts { global: 99, organization: 19, repository: 4 }), LimitDecision::Allowed);
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
    let policy = Policy::from_yaml(include_str!("../../../e2e/fixtures/policy.yaml"), "policy.yaml").unwrap();
    let config = RepoConfig::from_yaml(include_str!("../../../e2e/fixtures/preview.yaml")).unwrap();
    let effective = policy.for_repository("acme", "app");
    let spec = resolve(&effective, &pr(), &config).unwrap();
    assert!(spec.host.ends_with(".preview.test"));
    assert!(spec.services[0].image.starts_with("registry.preview.test/"));
    assert!(spec.services[0].image.contains(SHA));
    assert_eq!(spec.ingress.controller_namespace, "ingress-nginx");
    assert_eq!(policy.secrets.source_namespace, "previewd-platform-secrets");
    assert_eq!(spec.platform_secrets.len(), config.services[0].1.secrets.len());
    assert!(spec.notes.is_empty(), "{:?}", spec.notes);
}

const SERVICES: &str = r#"
services:
  web: { image: "ghcr.io/acme/web:{sha}", port: 3000, expose: public }
  admin: { image: "ghcr.io/acme/web:{sha}", port: 3001, expose: public }
  api: { image: "ghcr.io/acme/api:{sha}", port: 8080, generated_secrets: [session-key], secrets: [db-readonly] }
  worker: { image: "ghcr.io/acme/api:{sha}", command: [/api, work] }
database:
  engine: postgres
  seed: { command: [/api, seed], service: api }
"#;

fn services(text: &str) -> Result<EnvironmentSpec, Vec<String>> {
    let config = RepoConfig::from_yaml(text).unwrap();
    resolve(&policy("app"), &pr(), &config).map_err(|p| p.iter().map(ToString::to_string).collect())
}

#[test]
fn several_services_get_their_hosts_variables_and_a_seeded_database() {
    let spec = services(SERVICES).unwrap();
    let names: Vec<&str> = spec.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["web", "admin", "api", "worker"]);
    // The first public service has the environment's own host; the next its own label.
    assert_eq!(spec.services[0].host.as_deref(), Some(spec.host.as_str()));
    let admin = spec.services[1].host.clone().unwrap();
    assert_eq!(admin, format!("admin--{}.preview.example.com", spec.name));
    assert_eq!((spec.services[2].host.as_ref(), spec.services[3].host.as_ref()), (None, None));
    assert_eq!(spec.service_urls().len(), 2);
    // A worker has no port, so no probe.
    assert_eq!((spec.services[3].port, spec.services[3].health_check_path.as_ref()), (None, None));
    assert_eq!(spec.services[2].health_check_path.as_deref(), Some("/"));
    let database = spec.database.as_ref().unwrap();
    assert_eq!((database.version.as_str(), database.image.as_str()), ("17", "docker.io/library/postgres:17"));
    assert_eq!((database.statefulset.as_str(), database.generation), ("database-1", 1));
    let seed = database.seed.as_ref().unwrap();
    assert_eq!((seed.job.as_str(), seed.service.as_deref()), ("seed-1", Some("api")));
    assert_eq!(seed.generated_secrets, ["session-key"]);
    assert_eq!(spec.generated_secrets, ["session-key", "database-password"]);
    assert_eq!(spec.platform_secrets, ["db-readonly"]);
    // Requests: three services with a port or not, one replica each at 100m, and the database's.
    assert_eq!(spec.requested().0, 5 * 100);
    let mut placed = spec.clone();
    placed.place(&spec.name, "preview.example.com", 3);
    assert_eq!(placed.database.as_ref().unwrap().seed.as_ref().unwrap().job, "seed-3");
}

#[test]
fn problems_of_services_and_the_database_are_named_under_their_fields() {
    let found = services(
        "services:\n  Web: { image: 'ghcr.io/acme/web:{sha}', port: 0, expose: public }\n  database: { image: 'ghcr.io/acme/x:1' }\n  worker: { image: 'docker.io/evil:1', expose: public, replicas: 9, health_check: { path: /x } }\ndatabase: { engine: postgres, version: 9, seed: { command: [x], service: nope } }\n",
    )
    .unwrap_err();
    for expected in [
        "services.Web: \"Web\" is not a service name",
        "services.Web.port: must be between 1 and 65535",
        "services.database: \"database\" is the name of the environment's own database; pick another",
        "services.worker.image: \"docker.io/evil:1\" is not from an allowed registry",
        "services.worker.expose: a public service needs a `port` to serve",
        "services.worker.replicas: 9 is above the platform maximum of 3",
        "services.worker.health_check: is an HTTP check on the service's `port`, and the service has none",
        "database.version: postgres 9 is not offered by the platform; offered: 16, 17",
    ] {
        assert!(found.iter().any(|p| p.starts_with(expected)), "no {expected:?} in {found:#?}");
    }
    let found = services("services:\n  api: { image: 'ghcr.io/acme/api:1', port: 80 }\n").unwrap_err();
    assert_eq!(
        found,
        ["services: none is `expose: public`: mark the one reviewers open (it gets the environment's URL)"]
    );
    let found = services(
        "services:\n  web: { image: 'ghcr.io/acme/web:1', port: 80, expose: public }\ndatabase: { engine: postgres, seed: { command: [x], service: nope } }\n",
    )
    .unwrap_err();
    assert_eq!(found, ["database.seed.service: \"nope\" is not one of the services: web"]);
    let found = services(
        "services:\n  web: { image: 'ghcr.io/acme/web:1', port: 80, expose: public }\ndatabase: { engine: postgres, seed: {} }\n",
    )
    .unwrap_err();
    assert!(found[0].starts_with("database.seed: needs `command`"), "{found:?}");
}

#[test]
fn the_whole_environment_must_fit_the_quota() {
    // Quota 4 cpu; 3 services × 3 replicas × 500m (the default limit) + database + seed = 5.5.
    let text = "services:\n  a: { image: 'ghcr.io/acme/a:1', port: 80, expose: public, replicas: 3 }\n  b: { image: 'ghcr.io/acme/a:1', replicas: 3 }\n  c: { image: 'ghcr.io/acme/a:1', replicas: 3 }\ndatabase: { engine: postgres, seed: { command: [x] } }\n";
    let found = services(text).unwrap_err();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].starts_with("services: all containers together (the services' replicas, the database and its seed) are limited to 5500m cpu, above the environment's quota of 4 cpu"), "{found:#?}");
    let found = services(&format!("{}\n", "services:\n  a: { image: 'ghcr.io/acme/a:1', port: 80, expose: public }\n  b: { image: 'ghcr.io/acme/a:1' }\n  c: { image: 'ghcr.io/acme/a:1' }\n  d: { image: 'ghcr.io/acme/a:1' }\n  e: { image: 'ghcr.io/acme/a:1' }\n  f: { image: 'ghcr.io/acme/a:1' }")).unwrap_err();
    assert!(found.iter().any(|p| p == "services: 6 services are more than the platform maximum of 5"), "{found:#?}");
}

#[test]
fn forks_get_no_registry_credentials_either() {
    let policy = Policy::from_yaml(
        &format!("{POLICY}\n").replace(
            "secrets: { allowed: [db-readonly] }",
            "secrets: { allowed: [db-readonly], image_pull: [regcred] }",
        ),
        "policy.yaml",
    )
    .unwrap()
    .for_repository("acme", "app");
    let spec = resolve(&policy, &pr(), &config("")).unwrap();
    assert_eq!(
        (spec.image_pull_secrets.clone(), spec.platform_secrets.clone()),
        (vec!["regcred".to_owned()], vec!["regcred".to_owned()])
    );
    let fork = PullRequest { from_fork: true, ..pr() };
    let spec = resolve(&policy, &fork, &config("")).unwrap();
    assert!(spec.image_pull_secrets.is_empty() && spec.platform_secrets.is_empty());
    assert!(spec.notes[0].contains("regcred"), "{:?}", spec.notes);
}

#[test]
fn a_seed_of_sql_files_runs_them_in_order_with_psql_in_the_database_image() {
    let web = "services:\n  web: { image: 'ghcr.io/acme/web:1', port: 80, expose: public, env: { A: b } }\n";
    let spec = services(&format!(
        "{web}database: {{ engine: postgres, version: '16', seed: {{ sql: [db/schema.sql, 'db/seed data.sql'] }} }}\n"
    ))
    .unwrap();
    let seed = spec.database.as_ref().unwrap().seed.clone().unwrap();
    assert_eq!((seed.service.as_deref(), seed.image.as_str()), (None, "docker.io/library/postgres:16"));
    let keys: Vec<(&str, &str)> = seed.sql.iter().map(|f| (f.path.as_str(), f.key.as_str())).collect();
    assert_eq!(keys, [("db/schema.sql", "01-db-schema.sql"), ("db/seed data.sql", "02-db-seed-data.sql")]);
    assert_eq!(
        seed.command.join(" "),
        "psql --no-psqlrc --set ON_ERROR_STOP=1 --single-transaction --file /seed/01-db-schema.sql --file /seed/02-db-seed-data.sql"
    );
    // Nothing of a service's: no variables, no secrets.
    assert!(seed.env.is_empty() && seed.platform_secrets.is_empty() && seed.generated_secrets.is_empty());
    let mut placed = spec.clone();
    placed.place(&spec.name, "preview.example.com", 2);
    let seed = placed.database.unwrap().seed.unwrap();
    assert_eq!((seed.job.as_str(), seed.config_map.as_deref()), ("seed-2", Some("seed-2-sql")));

    for (sql, expected) in [
        ("[/etc/passwd.sql]", "database.seed.sql[0]: \"/etc/passwd.sql\" must be relative to the repository's root"),
        ("[db/../../x.sql]", "database.seed.sql[0]: \"db/../../x.sql\" must not have empty, `.` or `..` parts"),
        ("[db//x.sql]", "database.seed.sql[0]: \"db//x.sql\" must not have empty"),
        ("[a.sql, db/x.sh]", "database.seed.sql[1]: \"db/x.sh\" must name a `.sql` file"),
        ("[a.sql, a.sql]", "database.seed.sql[1]: \"a.sql\" is listed twice"),
        ("[\"a\\tb.sql\"]", "database.seed.sql[0]: \"a\\tb.sql\" must not hold control characters"),
    ] {
        let found = services(&format!("{web}database: {{ engine: postgres, seed: {{ sql: {sql} }} }}\n")).unwrap_err();
        assert!(found.len() == 1 && found[0].starts_with(expected), "{sql}: {found:?}");
    }
    let many: Vec<String> = (0..21).map(|i| format!("f{i}.sql")).collect();
    let found = services(&format!("{web}database: {{ engine: postgres, seed: {{ sql: [{}] }} }}\n", many.join(", ")))
        .unwrap_err();
    assert_eq!(found, ["database.seed.sql: lists 21 files; at most 20 are run"]);
    let found = services(&format!("{web}database: {{ engine: postgres, seed: {{ sql: [a.sql], service: web }} }}\n"))
        .unwrap_err();
    assert!(found[0].starts_with("database.seed.service: is for a `command`"), "{found:?}");
}
