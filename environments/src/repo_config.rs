//! A repository's `.preview.yaml`, read at the pull request's head commit: what to run in the
//! environment.
//!
//! The file is written by the pull request's author, so every error is addressed to them: the
//! file, the field, and what is wrong, in words they can act on without reading previewd's source.
//! An invalid file leaves the environment `Failed` with that message; it never fails anything else.
//! This module checks only what the file says on its own (syntax, types, unknown fields, a missing
//! image); what the platform policy allows is checked when the environment is resolved
//! ([`crate::spec::resolve`]), so that all of those problems are reported together.

use crate::policy::duration_text;
use crate::quantity::Quantity;
use crate::yaml::{self, MAX_REPOSITORY_FILE_BYTES, Origin};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// The file previewd reads from the pull request's head commit.
pub const REPO_CONFIG_FILE: &str = ".preview.yaml";

const EXAMPLE: &str = "image: ghcr.io/acme/app:{sha}";

/// Why a repository's `.preview.yaml` cannot be used, addressed to the pull request's author.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoConfigError {
    #[error("{REPO_CONFIG_FILE} was not found at the pull request's head commit; add one with at least `{EXAMPLE}`")]
    Missing,
    #[error("{REPO_CONFIG_FILE} is empty; it needs at least `{EXAMPLE}`")]
    Empty,
    #[error(
        "{REPO_CONFIG_FILE}: image: missing; name the container image to run, e.g. `{EXAMPLE}` ({{sha}} is replaced by the head commit), or list several under `services:`"
    )]
    MissingImage,
    /// Larger than previewd reads (its size when known): refused before it is read or parsed.
    #[error("{REPO_CONFIG_FILE}: {}; it only needs to say what to run", yaml::too_large(*size, MAX_REPOSITORY_FILE_BYTES))]
    TooLarge { size: Option<u64> },
    #[error("{REPO_CONFIG_FILE}: the file is not UTF-8 text")]
    NotText,
    /// Not YAML, or a field that is unknown or of the wrong type.
    #[error("{REPO_CONFIG_FILE}: {}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
    Parse { path: String, message: String },
}

/// A repository's file as the code host returned it, before it is parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoFile {
    Text(String),
    /// There, but previewd does not read it (too large, not text). The environment fails with
    /// this: asking again gets the same file.
    Refused(RepoConfigError),
}

impl RepoFile {
    /// The file's bytes, as text if they are within the cap and UTF-8.
    pub fn from_bytes(bytes: Vec<u8>) -> RepoFile {
        if bytes.len() > MAX_REPOSITORY_FILE_BYTES {
            return RepoFile::Refused(RepoConfigError::TooLarge { size: Some(bytes.len() as u64) });
        }
        String::from_utf8(bytes).map_or(RepoFile::Refused(RepoConfigError::NotText), RepoFile::Text)
    }
}

/// A repository's `.preview.yaml`: the services to run, an optional database, and the template
/// set and lifetime.
///
/// Two forms are read. The one-service form (`image:`, `port:` and so on at the top) is one
/// public service named `app`, as previewd has always read it; its problems are named without a
/// prefix (`port: …`). The `services:` form names each service, and its problems are named
/// under it (`services.api.port: …`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepoConfig {
    /// In the order the file lists them; never empty.
    pub services: Vec<(String, ServiceConfig)>,
    pub database: Option<DatabaseConfig>,
    /// The template set to render; the platform's default when left out.
    pub template: Option<String>,
    /// How long the environment lives after its last activity; the platform's default when left
    /// out, and at most the platform's maximum.
    #[serde(with = "duration_text::option", skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// How long without a visit or a push before the environment sleeps (`30m`, or `never`);
    /// the platform's `sleep.after` when left out, and at most that.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sleep: Option<crate::policy::SleepAfter>,
    /// Written in the one-service form: its fields are named without `services.app.`.
    pub single: bool,
}

/// The name of the service of the one-service form.
pub const SINGLE_SERVICE: &str = "app";

/// One service: a Deployment, and a Service in front of it when it has a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The container image. `{sha}` is replaced by the head commit's full SHA, `{short_sha}` by
    /// its first 12 characters, so CI can push `ghcr.io/acme/app:<sha>` and previewd finds it.
    #[serde(default)]
    pub image: String,
    /// The port the container serves HTTP on. A service without one (a worker) gets no
    /// Service and no readiness probe, and cannot be public.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Replaces the image's entrypoint.
    #[serde(default)]
    pub command: Vec<String>,
    /// Replaces the image's arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Plain environment variables. Numbers and booleans are taken as their text, so
    /// `DEBUG: true` means the string `true` (Kubernetes wants strings; YAML makes that a trap).
    #[serde(default, deserialize_with = "env_map")]
    pub env: BTreeMap<String, String>,
    /// Platform-provided secrets (by name, from the platform's allow-list) whose keys become
    /// environment variables.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Secrets previewd generates for this environment: random, kept across redeploys, and
    /// exposed as an environment variable named after the secret in upper case with `-` as `_`
    /// (`session-key` becomes `SESSION_KEY`). Services naming the same one share its value.
    #[serde(default)]
    pub generated_secrets: Vec<String>,
    /// Requests and limits of the container; the platform's defaults fill what is left out.
    #[serde(default)]
    pub resources: RequestedResources,
    /// The readiness check, on a service with a port; `/` when left out.
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Whether the service gets a URL. Internal services are reached by the others at
    /// `http://<name>`.
    #[serde(default)]
    pub expose: Expose,
}

/// Whether a service gets a URL of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expose {
    /// Reached only by the environment's other services.
    #[default]
    Internal,
    /// Its own hostname under the platform's base domain, shown on the pull request.
    Public,
}

/// A database for the environment, from the platform's template set and images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub engine: DatabaseEngine,
    /// One of the versions the platform offers for the engine; its default when left out.
    #[serde(default, deserialize_with = "optional_text")]
    pub version: Option<String>,
    /// How the new database gets its data, once per environment (again on `/preview reset-db`).
    #[serde(default)]
    pub seed: Option<SeedConfig>,
}

/// The database engines previewd knows how to wire to services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatabaseEngine {
    Postgres,
}

impl DatabaseEngine {
    pub fn name(self) -> &'static str {
        match self {
            DatabaseEngine::Postgres => "postgres",
        }
    }
}

/// Seeding: a command run in a service's image, or SQL files of the repository at the head
/// commit (run in order with `psql`). Exactly one of `command` and `sql`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeedConfig {
    pub command: Vec<String>,
    /// The service whose image (and environment) runs `command`; the first service when left out.
    pub service: Option<String>,
    /// Paths in the repository, run in this order.
    pub sql: Vec<String>,
}

/// The file as written, before the two forms are told apart.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    image: Option<String>,
    port: Option<u16>,
    replicas: Option<u32>,
    command: Option<Vec<String>>,
    args: Option<Vec<String>>,
    #[serde(default, deserialize_with = "optional_env_map")]
    env: Option<BTreeMap<String, String>>,
    secrets: Option<Vec<String>>,
    generated_secrets: Option<Vec<String>>,
    resources: Option<RequestedResources>,
    health_check: Option<HealthCheck>,
    services: Option<Services>,
    database: Option<DatabaseConfig>,
    template: Option<String>,
    #[serde(default, with = "duration_text::option")]
    ttl: Option<Duration>,
    sleep: Option<crate::policy::SleepAfter>,
}

/// `services:`, in the file's order.
struct Services(Vec<(String, ServiceConfig)>);

impl<'de> Deserialize<'de> for Services {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Services;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of service names to services")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Services, A::Error> {
                let mut services = Vec::new();
                while let Some((name, service)) = map.next_entry::<String, ServiceConfig>()? {
                    services.push((name, service));
                }
                Ok(Services(services))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

fn default_replicas() -> u32 {
    1
}

/// Container requests and limits, each part optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestedResources {
    pub requests: PartialResources,
    pub limits: PartialResources,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PartialResources {
    pub cpu: Option<Quantity>,
    pub memory: Option<Quantity>,
}

/// The readiness check: an HTTP GET on the container's port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheck {
    pub path: String,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self { path: "/".to_owned() }
    }
}

impl RepoConfig {
    /// Parses a `.preview.yaml`. Errors name the file and the field, for the pull request's author.
    pub fn from_yaml(text: &str) -> Result<Self, RepoConfigError> {
        if text.len() > MAX_REPOSITORY_FILE_BYTES {
            return Err(RepoConfigError::TooLarge { size: Some(text.len() as u64) });
        }
        // A file of only comments is YAML's null; say "empty" rather than "invalid type: unit".
        let raw: RawConfig = yaml::parse(text, Origin::Repository)
            .map_err(|e| RepoConfigError::Parse { path: e.path, message: e.message })?
            .ok_or(RepoConfigError::Empty)?;
        let parse = |path: &str, message: String| RepoConfigError::Parse { path: path.to_owned(), message };
        let single_fields = [
            ("image", raw.image.is_some()),
            ("port", raw.port.is_some()),
            ("replicas", raw.replicas.is_some()),
            ("command", raw.command.is_some()),
            ("args", raw.args.is_some()),
            ("env", raw.env.is_some()),
            ("secrets", raw.secrets.is_some()),
            ("generated_secrets", raw.generated_secrets.is_some()),
            ("resources", raw.resources.is_some()),
            ("health_check", raw.health_check.is_some()),
        ];
        let (services, single) = match raw.services {
            Some(Services(services)) => {
                if let Some((field, _)) = single_fields.iter().find(|(_, given)| *given) {
                    return Err(parse(
                        field,
                        "belongs under a service when the file lists `services:`; move it into the service it is for"
                            .to_owned(),
                    ));
                }
                if services.is_empty() {
                    return Err(parse("services", "lists no service; name at least one, with its `image`".to_owned()));
                }
                for (name, service) in &services {
                    if service.image.trim().is_empty() {
                        return Err(parse(
                            &format!("services.{name}.image"),
                            format!("missing; name the container image to run, e.g. `{EXAMPLE}`"),
                        ));
                    }
                }
                (services, false)
            }
            None => {
                let image = raw.image.filter(|i| !i.trim().is_empty()).ok_or(RepoConfigError::MissingImage)?;
                let service = ServiceConfig {
                    image,
                    port: Some(raw.port.unwrap_or(8080)),
                    replicas: raw.replicas.unwrap_or(1),
                    command: raw.command.unwrap_or_default(),
                    args: raw.args.unwrap_or_default(),
                    env: raw.env.unwrap_or_default(),
                    secrets: raw.secrets.unwrap_or_default(),
                    generated_secrets: raw.generated_secrets.unwrap_or_default(),
                    resources: raw.resources.unwrap_or_default(),
                    health_check: raw.health_check,
                    expose: Expose::Public,
                };
                (vec![(SINGLE_SERVICE.to_owned(), service)], true)
            }
        };
        Ok(RepoConfig {
            services,
            database: raw.database,
            template: raw.template,
            ttl: raw.ttl,
            sleep: raw.sleep,
            single,
        })
    }

    /// Where a service's field is named in problems: `port` in the one-service form,
    /// `services.api.port` otherwise.
    pub fn field(&self, service: &str, field: &str) -> String {
        if self.single { field.to_owned() } else { format!("services.{service}.{field}") }
    }
}

fn optional_env_map<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    env_map(deserializer).map(Some)
}

/// A text that YAML may have read as a number (`version: 16`).
fn optional_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(Some(Text::deserialize(deserializer)?.0))
}

/// A string, or a number or boolean taken as its text.
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean (quote it to be sure: \"...\")")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Environment variable values: strings, or numbers and booleans taken as their text.
fn env_map<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error> {
    let map = BTreeMap::<String, Text>::deserialize(deserializer)?;
    Ok(map.into_iter().map(|(k, v)| (k, v.0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        RepoConfig::from_yaml(text).unwrap_err().to_string()
    }

    fn only_service(config: &RepoConfig) -> &ServiceConfig {
        assert_eq!(config.services.len(), 1);
        &config.services[0].1
    }

    #[test]
    fn a_minimal_file_gets_the_defaults() {
        let config = RepoConfig::from_yaml("image: ghcr.io/acme/app:{sha}\n").unwrap();
        assert!(config.single);
        assert_eq!(config.services[0].0, "app");
        let app = only_service(&config);
        assert_eq!(app.image, "ghcr.io/acme/app:{sha}");
        assert_eq!(app.port, Some(8080));
        assert_eq!(app.replicas, 1);
        assert_eq!(app.expose, Expose::Public);
        assert_eq!(app.health_check, None);
        assert!(app.env.is_empty() && app.secrets.is_empty() && app.generated_secrets.is_empty());
        assert_eq!(app.resources, RequestedResources::default());
        assert_eq!((config.template, config.ttl, config.database), (None, None, None));
    }

    #[test]
    fn a_full_file_parses() {
        let config = RepoConfig::from_yaml(
            r#"
image: ghcr.io/acme/app:{short_sha}
port: 3000
replicas: 2
env: { LOG_LEVEL: debug, WORKERS: 4, DEBUG: true, RATIO: 0.5 }
secrets: [db-readonly]
generated_secrets: [session-key]
resources:
  requests: { cpu: 250m, memory: 256Mi }
  limits: { memory: 1Gi }
health_check: { path: /healthz }
template: web
ttl: 3d
"#,
        )
        .unwrap();
        let app = only_service(&config);
        assert_eq!(app.port, Some(3000));
        assert_eq!(app.env["WORKERS"], "4");
        assert_eq!(app.env["DEBUG"], "true");
        assert_eq!(app.env["RATIO"], "0.5");
        assert_eq!(app.resources.requests.cpu.as_ref().map(Quantity::as_str), Some("250m"));
        assert_eq!(app.resources.limits.cpu, None);
        assert_eq!(app.health_check.as_ref().map(|h| h.path.as_str()), Some("/healthz"));
        assert_eq!(config.ttl, Some(Duration::from_secs(3 * 86400)));
    }

    #[test]
    fn several_services_and_a_database_parse_in_the_files_order() {
        let config = RepoConfig::from_yaml(
            r#"
services:
  web: { image: "ghcr.io/acme/web:{sha}", port: 3000, expose: public }
  api:
    image: ghcr.io/acme/api:{sha}
    port: 8080
    command: [/api, serve]
    args: [--verbose]
    health_check: { path: /healthz }
  worker: { image: "ghcr.io/acme/api:{sha}", command: [/api, work], replicas: 2 }
database:
  engine: postgres
  version: 16
  seed: { command: [/api, seed], service: api }
"#,
        )
        .unwrap();
        assert!(!config.single);
        let names: Vec<&str> = config.services.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["web", "api", "worker"]);
        assert_eq!(config.services[0].1.expose, Expose::Public);
        assert_eq!(config.services[1].1.expose, Expose::Internal);
        assert_eq!(config.services[1].1.command, ["/api", "serve"]);
        assert_eq!(config.services[2].1.port, None);
        let database = config.database.as_ref().unwrap();
        assert_eq!((database.engine, database.version.as_deref()), (DatabaseEngine::Postgres, Some("16")));
        let seed = database.seed.as_ref().unwrap();
        assert_eq!((seed.command.len(), seed.service.as_deref()), (2, Some("api")));
        assert_eq!(config.field("api", "port"), "services.api.port");
    }

    #[test]
    fn the_two_forms_are_not_mixed() {
        let e = error("image: x\nservices: { web: { image: y } }\n");
        assert!(e.starts_with(".preview.yaml: image: belongs under a service"), "{e}");
        let e = error("port: 80\nservices: { web: { image: y } }\n");
        assert!(e.starts_with(".preview.yaml: port: belongs under a service"), "{e}");
        assert!(error("services: {}\n").starts_with(".preview.yaml: services: lists no service"));
        let e = error("services: { web: { port: 80 } }\n");
        assert!(e.starts_with(".preview.yaml: services.web.image: missing"), "{e}");
        let e = error("services: { web: { image: y, expose: everyone } }\n");
        assert!(e.starts_with(".preview.yaml: services.web.expose: "), "{e}");
        let e = error("image: x\ndatabase: { engine: mysql }\n");
        assert!(e.starts_with(".preview.yaml: database.engine: "), "{e}");
        let e = error("image: x\ndatabase: { engine: postgres, seed: { script: x } }\n");
        assert!(e.starts_with(".preview.yaml: database.seed.script: unknown field"), "{e}");
    }

    #[test]
    fn wrong_types_name_the_field_and_the_line() {
        assert_eq!(
            error("image: x\nreplicas: two\n"),
            ".preview.yaml: replicas: invalid value \"two\", expected u32 (line 2 column 11)"
        );
        let e = error("image: x\nport: 70000\n");
        assert!(e.starts_with(".preview.yaml: port: ") && e.contains("70000"), "{e}");
        let e = error("image: x\nresources: { limits: { memory: 1GB } }\n");
        assert!(e.starts_with(".preview.yaml: resources.limits.memory: \"1GB\" is not a quantity"), "{e}");
        let e = error("image: x\nttl: forever\n");
        assert!(e.starts_with(".preview.yaml: ttl: invalid duration \"forever\""), "{e}");
        let e = error("image: x\nenv: { A: [1] }\n");
        assert!(e.starts_with(".preview.yaml: env.A: ") && e.contains("string, number or boolean"), "{e}");
        let e = error("image: x\nenv: { A: null }\n");
        assert!(e.starts_with(".preview.yaml: env.A: "), "{e}");
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = error("image: x\nreplica: 2\n");
        assert!(e.starts_with(".preview.yaml: replica: unknown field `replica`, expected one of"), "{e}");
        let e = error("image: x\nhealth_check: { url: /x }\n");
        assert!(e.starts_with(".preview.yaml: health_check.url: unknown field `url`"), "{e}");
    }

    #[test]
    fn syntax_errors_give_the_line_and_column() {
        // The bracket left open, where serde_yaml named the end of the file.
        let e = error("image: x\nenv: { A: b\n");
        assert_eq!(e, ".preview.yaml: line 2 column 6: unclosed bracket '{'");
        let e = error("image: x\n  port: 1\n");
        assert!(e.starts_with(".preview.yaml: line 2 column "), "{e}");
    }

    #[test]
    fn empty_files_and_missing_images_say_what_to_write() {
        for empty in ["", "\n", "# nothing yet\n", "~"] {
            assert_eq!(RepoConfig::from_yaml(empty), Err(RepoConfigError::Empty), "{empty:?}");
        }
        assert!(error("").contains("image: ghcr.io/acme/app:{sha}"));
        assert_eq!(RepoConfig::from_yaml("port: 80\n"), Err(RepoConfigError::MissingImage));
        assert_eq!(RepoConfig::from_yaml("image: ''\n"), Err(RepoConfigError::MissingImage));
        assert!(error("port: 80").starts_with(".preview.yaml: image: missing;"));
        assert!(RepoConfigError::Missing.to_string().starts_with(".preview.yaml was not found"));
    }

    #[test]
    fn anchors_duplicates_and_oversized_files_are_refused_before_anything_is_built() {
        let bomb = format!("x-leaf: &l [{}]\nx-bomb: [{}]\n", vec!["x"; 4000].join(", "), vec!["*l"; 4000].join(", "));
        let started = std::time::Instant::now();
        assert_eq!(
            error(&bomb),
            ".preview.yaml: line 1 column 12: anchors and aliases (`&name`, `*name`) are not allowed in a repository's file; write each value out"
        );
        // Generous: the refusal takes well under a millisecond; this machine is slow and shared.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let e = error("image: x\nenv: { A: &a 1, B: *a }\n");
        assert!(e.contains("anchors and aliases"), "{e}");
        let e = error("image: x\nport: 80\nport: 81\n");
        assert!(e.starts_with(".preview.yaml: line 3 column 1: duplicate mapping key"), "{e}");
        let e = error("image: x\n<<: { port: 80 }\n");
        assert!(e.contains("merge keys (`<<`) are not allowed"), "{e}");
        let huge = format!("image: x\n#{}\n", "-".repeat(MAX_REPOSITORY_FILE_BYTES));
        assert_eq!(RepoConfig::from_yaml(&huge), Err(RepoConfigError::TooLarge { size: Some(huge.len() as u64) }));
        assert_eq!(
            error(&huge),
            format!(
                ".preview.yaml: the file is {} bytes; previewd reads at most 64 KiB (65536 bytes); it only needs to say what to run",
                huge.len()
            )
        );
    }

    #[test]
    fn files_from_the_code_host_are_checked_before_they_are_text() {
        assert_eq!(RepoFile::from_bytes(b"image: x\n".to_vec()), RepoFile::Text("image: x\n".to_owned()));
        assert_eq!(
            RepoFile::from_bytes(vec![b'#'; MAX_REPOSITORY_FILE_BYTES + 1]),
            RepoFile::Refused(RepoConfigError::TooLarge { size: Some(MAX_REPOSITORY_FILE_BYTES as u64 + 1) })
        );
        assert_eq!(RepoFile::from_bytes(vec![0xff, 0xfe]), RepoFile::Refused(RepoConfigError::NotText));
        assert_eq!(
            RepoConfigError::TooLarge { size: None }.to_string(),
            ".preview.yaml: the file is larger than 64 KiB (65536 bytes), the most previewd reads; it only needs to say what to run"
        );
    }

    #[test]
    fn a_list_instead_of_a_mapping_is_explained() {
        let e = error("- image: x\n");
        assert_eq!(e, ".preview.yaml: line 1 column 1: expected a mapping (`key: value`)");
    }
}
