//! The policy's tests: parsing, validation and the per-repository merge.

use super::*;

pub(crate) const FULL: &str = r#"
base_domain: preview.example.com
ttl: { default: 48h, max: 168h, warn_before: 2h }
limits: { global: 100, per_organization: 20, per_repository: 5, when_full: reject }
resources:
  quota:
    defaults: { cpu: "4", memory: 8Gi, pods: 20 }
    caps: { cpu: "8", memory: 16Gi, pods: 50 }
  container:
    default_request: { cpu: 100m, memory: 128Mi }
    default_limit: { cpu: 500m, memory: 512Mi }
    max: { cpu: "2", memory: 2Gi }
  max_replicas: 3
allowed_registries: [ghcr.io/acme/]
forks: deny
trigger: { mode: every_pull_request, label: preview }
drafts: false
keep_label: preview:keep
templates: { default: web, available: [web, worker] }
ingress: { class_name: nginx, controller_namespace: ingress-nginx, tls_secret_name: preview-wildcard-tls, annotations: {} }
network: { egress_cidrs: [10.0.0.0/8] }
secrets: { source_namespace: previewd-platform-secrets, allowed: [db-readonly] }
repositories:
  Acme/App:
    limits: { per_repository: 10, when_full: queue }
    ttl: { default: 24h }
    allowed_registries: [ghcr.io/acme/app]
    forks: approve
    trigger: { mode: label }
    drafts: true
    templates: { default: worker }
    secrets: { allowed: [] }
    resources: { max_replicas: 5, quota: { cpu: "6", memory: 12Gi, pods: 30 } }
"#;

fn parse(text: &str) -> Result<Policy, PolicyError> {
    Policy::from_yaml(text, "policy.yaml")
}

fn error(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

fn with(line: &str) -> String {
    format!("base_domain: preview.example.com\n{line}\n")
}

#[test]
fn the_documented_example_parses() {
    let policy = parse(FULL).unwrap();
    assert_eq!(policy.ttl.max, hours(168));
    assert_eq!(policy.limits.per_repository, 5);
    assert_eq!(policy.allowed_registries, ["ghcr.io/acme/"]);
    assert_eq!(policy.network.egress_cidrs, ["10.0.0.0/8"]);
}

#[test]
fn only_base_domain_is_required_and_the_defaults_are_valid() {
    let policy = parse("base_domain: preview.example.com").unwrap();
    assert_eq!(policy.ttl, TtlPolicy::default());
    assert_eq!(policy.limits, Limits::default());
    assert_eq!(policy.forks, ForkPolicy::Deny);
    assert!(!policy.drafts);
    assert_eq!(policy.trigger.mode, TriggerMode::EveryPullRequest);
    assert_eq!(policy.keep_label, "preview:keep");
    assert_eq!(policy.approve_label, "preview:approve");
    assert_eq!(policy.resources.quota.defaults.memory.as_str(), "8Gi");
    assert!(policy.allowed_registries.is_empty());
    assert!(error("ttl: { default: 1h }").contains("missing field `base_domain`"));
}

#[test]
fn unknown_fields_are_named_with_their_path() {
    assert_eq!(
        error(&with("ttl: { maximum: 1h }")),
        "policy.yaml: ttl.maximum: unknown field `maximum`, expected one of `default`, `max`, `warn_before` (line 2 column 8)"
    );
    assert!(error(&with("colour: blue")).contains("unknown field `colour`"));
    let nested = error(&with("repositories: { a/b: { resources: { quota: { cpus: 1 } } } }"));
    assert!(nested.contains("repositories.a/b.resources.quota"), "{nested}");
}

#[test]
fn wrong_values_name_the_field() {
    let e = error(&with("ttl: { max: 3x }"));
    assert!(e.starts_with("policy.yaml: ttl.max: ") && e.contains("invalid duration \"3x\""), "{e}");
    let e = error(&with("limits: { global: -1 }"));
    assert!(e.contains("limits.global: ") && e.contains("-1"), "{e}");
    let e = error(&with("resources: { container: { max: { cpu: lots, memory: 1Gi } } }"));
    assert!(e.contains("resources.container.max.cpu: ") && e.contains("\"lots\" is not a quantity"), "{e}");
    let e = error(&with("forks: maybe"));
    assert!(e.contains("forks: ") && e.contains("deny") && e.contains("approve"), "{e}");
    let e = error(&with("trigger: { mode: sometimes }"));
    assert!(e.contains("trigger.mode: ") && e.contains("every_pull_request"), "{e}");
}

#[test]
fn syntax_errors_give_the_line() {
    let e = error("base_domain: a\nttl: { default: 1h\n");
    assert_eq!(e, "policy.yaml: line 2 column 6: unclosed bracket '{'");
    let e = error("base_domain: [x]\n");
    assert_eq!(e, "policy.yaml: base_domain: expected a value, not a list or a mapping (line 1 column 14)");
}

#[test]
fn a_bomb_a_duplicate_or_an_oversized_policy_is_refused_quickly_naming_the_file() {
    let bomb = format!("x_leaf: &l [{}]\nx_bomb: [{}]\n", vec!["x"; 4000].join(", "), vec!["*l"; 4000].join(", "));
    let started = std::time::Instant::now();
    let e = error(&format!("base_domain: preview.example.com\n{bomb}"));
    assert!(e.starts_with("policy.yaml: line 3 column ") && e.contains("too large or too complex for previewd"), "{e}");
    // Generous: the refusal takes milliseconds; this machine is slow and shared.
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // Anchors within the budget are fine in the platform's own file.
    let shared = "base_domain: preview.example.com\nrepositories:\n  acme/a: &big { drafts: true }\n  acme/b: *big\n";
    assert!(parse(shared).unwrap().for_repository("acme", "b").drafts);
    let e = error(&with("drafts: true\ndrafts: false"));
    assert!(e.starts_with("policy.yaml: line 3 column 1: duplicate mapping key"), "{e}");
    let huge = with(&format!("#{}", " ".repeat(crate::yaml::MAX_PLATFORM_FILE_BYTES)));
    let e = error(&huge);
    assert_eq!(
        e,
        format!("policy.yaml: the file is {} bytes; previewd reads at most 1 MiB (1048576 bytes)", huge.len())
    );
    assert_eq!(error("# nothing yet\n"), format!("policy.yaml: {EMPTY}"));
}

fn problems(text: &str) -> Vec<String> {
    match parse(text) {
        Err(PolicyError::Invalid { problems, .. }) => problems.iter().map(ToString::to_string).collect(),
        other => panic!("expected validation problems, got {other:?}"),
    }
}

fn has(problems: &[String], field: &str, words: &str) {
    assert!(
        problems.iter().any(|p| p.starts_with(&format!("{field}: ")) && p.contains(words)),
        "no problem on {field} mentioning {words:?} in {problems:#?}"
    );
}

#[test]
fn forward_auth_needs_what_its_controller_reads_and_an_ingress_to_annotate() {
    let nginx = problems(&with("forward_auth: { controller: ingress_nginx, url: previewd:8080 }"));
    has(&nginx, "forward_auth.url", "as the controller reaches it");
    has(&nginx, "forward_auth.public_url", "as browsers reach it");
    has(&problems(&with("forward_auth: { controller: traefik }")), "forward_auth.traefik_middleware", "@kubernetescrd");
    let gateway = with(
        "routing: gateway\ngateway: { parent_refs: [{ namespace: gw, name: public }] }\nforward_auth: { controller: traefik, traefik_middleware: a-b@kubernetescrd }",
    );
    has(&problems(&gateway), "forward_auth.controller", "SecurityPolicy");
    has(&problems(&with("share_links: { max: 1h, default: 2h }")), "share_links.default", "at most share_links.max 1h");
    parse(&with("forward_auth: { controller: ingress_nginx, url: http://previewd:8080, public_url: https://previewd.preview.example.com }")).unwrap();
}

#[test]
fn semantic_rules_name_the_field() {
    has(&problems("base_domain: Preview_Example.com"), "base_domain", "not a DNS name");
    has(&problems(&format!("base_domain: {}com", "abcdefghij.".repeat(18))), "base_domain", "room");
    has(&problems(&with("ttl: { default: 200h }")), "ttl.default", "longer than ttl.max 7days");
    has(&problems(&with("ttl: { default: 0s }")), "ttl.default", "longer than 0s");
    has(&problems(&with("ttl: { warn_before: 48h }")), "ttl.warn_before", "not shorter");
    has(&problems(&with("limits: { per_repository: 0 }")), "limits.per_repository", "at least 1");
    has(
        &problems(&with("resources: { quota: { defaults: { cpu: '10', memory: 1Gi, pods: 60 } } }")),
        "resources.quota.defaults.cpu",
        "above resources.quota.caps.cpu (8)",
    );
    has(
        &problems(&with("resources: { quota: { defaults: { cpu: '1', memory: 1Gi, pods: 60 } } }")),
        "resources.quota.defaults.pods",
        "60 is above",
    );
    has(
        &problems(&with("resources: { container: { default_request: { cpu: '1', memory: 1Gi } } }")),
        "resources.container.default_request.cpu",
        "above resources.container.default_limit.cpu",
    );
    has(
        &problems(&with("resources: { container: { max: { cpu: '64', memory: 2Gi } } }")),
        "resources.container.max.cpu",
        "quota",
    );
    has(&problems(&with("resources: { max_replicas: 0 }")), "resources.max_replicas", "at least 1");
    has(&problems(&with("allowed_registries: ['']")), "allowed_registries[0]", "empty");
    has(&problems(&with("allowed_registries: ['https://ghcr.io/acme/']")), "allowed_registries[0]", "scheme");
    has(&problems(&with("trigger: { mode: label, label: '' }")), "trigger.label", "label");
    has(&problems(&with("templates: { default: fancy }")), "templates.default", "\"fancy\" is not in");
    has(&problems(&with("templates: { available: [] }")), "templates.available", "at least one");
    has(&problems(&with("templates: { default: Web, available: [Web] }")), "templates.available[0]", "not a template");
    has(&problems(&with("network: { egress_cidrs: [10.0.0.0] }")), "network.egress_cidrs[0]", "CIDR");
    has(&problems(&with("network: { egress_cidrs: [10.0.0.0/33] }")), "network.egress_cidrs[0]", "above 32");
    has(&problems(&with("secrets: { source_namespace: Platform }")), "secrets.source_namespace", "namespace");
    has(&problems(&with("secrets: { allowed: [DB] }")), "secrets.allowed[0]", "Secret name");
    has(&problems(&with("ingress: { controller_namespace: 'a b' }")), "ingress.controller_namespace", "namespace");
    has(&problems(&with("keep_label: ''")), "keep_label", "empty");
    has(&problems(&with("approve_label: ' '")), "approve_label", "empty");
}

#[test]
fn all_problems_are_reported_at_once() {
    let found = problems("base_domain: x_y\nttl: { default: 200h }\nlimits: { global: 0 }\n");
    assert_eq!(found.len(), 3, "{found:#?}");
    let message = error("base_domain: x_y\nttl: { default: 200h }\n");
    assert_eq!(message.lines().count(), 2);
    assert!(message.lines().all(|l| l.starts_with("policy.yaml: ")));
}

#[test]
fn override_problems_are_named_under_the_repository() {
    has(&problems(&with("repositories: { acme: {} }")), "repositories.acme", "owner/name");
    has(&problems(&with("repositories: { a/b: {}, A/B: {} }")), "repositories.a/b", "same repository");
    has(
        &problems(&with("repositories: { a/b: { ttl: { default: 300h } } }")),
        "repositories.a/b.ttl.default",
        "ttl.max",
    );
    has(
        &problems(&with("repositories: { a/b: { resources: { quota: { cpu: '99', memory: 1Gi, pods: 1 } } } }")),
        "repositories.a/b.resources.quota.cpu",
        "caps",
    );
    has(
        &problems(&with("repositories: { a/b: { templates: { default: nope } } }")),
        "repositories.a/b.templates.default",
        "nope",
    );
    has(
        &problems(&with("repositories: { a/b: { limits: { per_repository: 0 } } }")),
        "repositories.a/b.limits.per_repository",
        "at least 1",
    );
}

#[test]
fn overrides_merge_over_the_global_policy() {
    let policy = parse(FULL).unwrap();
    let app = policy.for_repository("acme", "app");
    assert_eq!((app.owner.as_str(), app.name.as_str()), ("acme", "app"));
    assert_eq!(app.limits.per_repository, 10);
    assert_eq!(app.limits.when_full, WhenFull::Queue);
    assert_eq!(app.limits.global, 100, "shared limits stay global");
    assert_eq!(app.ttl.default, hours(24));
    assert_eq!(app.ttl.max, hours(168), "unset override fields keep the global value");
    assert_eq!(app.allowed_registries, ["ghcr.io/acme/app"]);
    assert_eq!(app.forks, ForkPolicy::Approve);
    assert_eq!(app.trigger, Trigger { mode: TriggerMode::Label, label: "preview".into() });
    assert!(app.drafts);
    assert_eq!(app.templates.default, "worker");
    assert_eq!(app.templates.available, ["web", "worker"]);
    assert!(app.secrets.allowed.is_empty(), "an empty list replaces the global one");
    assert_eq!(app.max_replicas, 5);
    assert_eq!(app.quota.cpu.as_str(), "6");

    let other = policy.for_repository("acme", "site");
    assert_eq!(other.limits.per_repository, 5);
    assert_eq!(other.forks, ForkPolicy::Deny);
    assert_eq!(other.secrets.allowed, ["db-readonly"]);
    assert_eq!(other.quota, policy.resources.quota.defaults);
}

#[test]
fn registry_prefixes_match_at_boundaries() {
    let policy = parse(&with("allowed_registries: [ghcr.io/acme/, registry.test/team]")).unwrap();
    let e = policy.for_repository("a", "b");
    assert!(e.allows_image("ghcr.io/acme/app:1"));
    assert!(!e.allows_image("ghcr.io/acme-evil/app:1"));
    assert!(e.allows_image("registry.test/team/app"));
    assert!(e.allows_image("registry.test/team:1"));
    assert!(!e.allows_image("registry.test/teamevil/app"));
    assert!(!e.allows_image("docker.io/evil/x"));
    let open = parse("base_domain: preview.example.com").unwrap().for_repository("a", "b");
    assert!(open.allows_image("docker.io/anything"));
}

#[test]
fn template_names_include_overrides() {
    let policy = parse(FULL).unwrap();
    assert_eq!(policy.template_names().into_iter().collect::<Vec<_>>(), ["web", "worker"]);
}

#[test]
fn dns_defaults_to_a_wildcard_record_verified_within_a_minute() {
    let dns = parse("base_domain: preview.example.com").unwrap().dns;
    assert_eq!(dns, DnsPolicy::default());
    assert_eq!(dns.provider, DnsProvider::Wildcard);
    assert_eq!((dns.ttl, dns.verify_timeout, dns.target), (60, Duration::from_secs(60), None));
}

#[test]
fn dns_parses_every_provider() {
    let wildcard = parse(&with(
        "dns: { provider: wildcard, target: { a: 192.0.2.10 }, resolvers: [192.0.2.53, '[2001:db8::53]:5353'] }",
    ))
    .unwrap()
    .dns;
    assert_eq!(wildcard.target.unwrap().a, Some("192.0.2.10".parse().unwrap()));
    assert_eq!(parse_dns_server(&wildcard.resolvers[0]).unwrap().to_string(), "192.0.2.53:53");
    assert_eq!(parse_dns_server(&wildcard.resolvers[1]).unwrap().to_string(), "[2001:db8::53]:5353");

    let external = parse(&with(
        "dns: { provider: external-dns, target: { cname: ingress.example.com }, ttl: 120, verify_timeout: 5m }",
    ))
    .unwrap()
    .dns;
    assert_eq!(external.provider, DnsProvider::ExternalDns);
    assert_eq!(external.target.unwrap().cname.as_deref(), Some("ingress.example.com"));
    assert_eq!((external.ttl, external.verify_timeout), (120, Duration::from_secs(300)));

    let rfc = parse(
        "base_domain: preview.test\ndns:\n  provider: rfc2136\n  target: { aaaa: '2001:db8::10' }\n  rfc2136: { server: '127.0.0.1:5353', zone: preview.test, key_name: previewd }\n",
    )
    .unwrap()
    .dns;
    assert_eq!(rfc.provider, DnsProvider::Rfc2136);
    let r = rfc.rfc2136.unwrap();
    assert_eq!(
        (r.key_algorithm, r.key_secret_env.as_str()),
        (TsigAlgorithmName::HmacSha256, "PREVIEWD_DNS_TSIG_SECRET")
    );
    let sha512 = with(
        "dns: { provider: rfc2136, target: { a: 192.0.2.1 }, rfc2136: { server: 192.0.2.53, zone: example.com, key_name: k, key_algorithm: hmac-sha512, key_secret_env: MY_KEY } }",
    );
    let r = parse(&sha512).unwrap().dns.rfc2136.unwrap();
    assert_eq!((r.key_algorithm, r.key_secret_env.as_str()), (TsigAlgorithmName::HmacSha512, "MY_KEY"));
}

#[test]
fn dns_mistakes_name_the_field() {
    let e = error(&with("dns: { provider: route53 }"));
    assert!(e.contains("dns.provider: ") && e.contains("external-dns") && e.contains("rfc2136"), "{e}");
    let e = error(&with("dns: { target: { a: 300.1.1.1 } }"));
    assert!(e.contains("dns.target.a: "), "{e}");
    let e = error(&with("dns: { rfc2136: { server: 1.2.3.4, zone: z, key_name: k, secret: abc } }"));
    assert!(e.contains("dns.rfc2136: unknown field `secret`") || e.contains("dns.rfc2136.secret"), "{e}");
    has(
        &problems(&with("dns: { provider: external-dns }")),
        "dns.target",
        "required when dns.provider is external-dns",
    );
    has(&problems(&with("dns: { provider: rfc2136, target: { a: 192.0.2.1 } }")), "dns.rfc2136", "required");
    has(&problems(&with("dns: { target: { a: 192.0.2.1, cname: x.example.com } }")), "dns.target", "exactly one");
    has(&problems(&with("dns: { target: {} }")), "dns.target", "exactly one");
    has(&problems(&with("dns: { target: { cname: 'not a name' } }")), "dns.target.cname", "not a DNS name");
    has(&problems(&with("dns: { ttl: 0 }")), "dns.ttl", "between 1 and 86400");
    has(&problems(&with("dns: { resolvers: [localhost] }")), "dns.resolvers[0]", "not a server address");
    has(
        &problems(&with("dns: { rfc2136: { server: 192.0.2.53, zone: preview.example.com, key_name: k } }")),
        "dns.rfc2136",
        "only used when dns.provider is rfc2136, not wildcard",
    );
    let rfc = |fields: &str| {
        with(&format!("dns: {{ provider: rfc2136, target: {{ a: 192.0.2.1 }}, rfc2136: {{ {fields} }} }}"))
    };
    has(
        &problems(&rfc("server: 'dns:53', zone: example.com, key_name: k")),
        "dns.rfc2136.server",
        "not a server address",
    );
    has(&problems(&rfc("server: 192.0.2.53, zone: other.test, key_name: k")), "dns.rfc2136.zone", "not inside zone");
    has(&problems(&rfc("server: 192.0.2.53, zone: 'a b', key_name: k")), "dns.rfc2136.zone", "not a DNS name");
    has(&problems(&rfc("server: 192.0.2.53, zone: example.com, key_name: ''")), "dns.rfc2136.key_name", "key name");
    has(
        &problems(&rfc("server: 192.0.2.53, zone: example.com, key_name: k, key_secret_env: 'my-secret'")),
        "dns.rfc2136.key_secret_env",
        "environment variable",
    );
    has(
        &problems(&rfc("server: 192.0.2.53, zone: example.com, key_name: k, key_secret_env: PREVIEWD_TSIG")),
        "dns.rfc2136.key_secret_env",
        "PREVIEWD_TSIG would be read as a previewd setting",
    );
    for allowed in ["PREVIEWD_DNS_TSIG_SECRET", "PREVIEWD_TEST_DNS_TSIG_SECRET", "DNS_TSIG_SECRET"] {
        let fields = format!("server: 192.0.2.53, zone: example.com, key_name: k, key_secret_env: {allowed}");
        assert!(parse(&rfc(&fields)).is_ok(), "{allowed} must be allowed");
    }
    let e = error(&rfc("server: 192.0.2.53, zone: example.com, key_name: k, key_algorithm: hmac-md5"));
    assert!(e.contains("dns.rfc2136.key_algorithm: ") && e.contains("hmac-sha256"), "{e}");
}

#[test]
fn a_policy_round_trips_through_yaml() {
    let policy = parse(FULL).unwrap();
    let text = yaml::to_string(&policy).unwrap();
    assert_eq!(parse(&text).unwrap(), policy);
    let with_dns = parse(&with("dns: { provider: rfc2136, target: { cname: lb.example.com }, rfc2136: { server: 192.0.2.53, zone: example.com, key_name: k } }")).unwrap();
    let text = yaml::to_string(&with_dns).unwrap();
    assert_eq!(parse(&text).unwrap(), with_dns);
}
