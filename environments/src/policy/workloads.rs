//! The policy's sections for what runs in an environment beyond its services: the database a
//! repository may ask for, how traffic reaches public services (an Ingress each, or an
//! HTTPRoute each on the platform's Gateway), and how their TLS works.

use super::validate::Problems;
use super::{Unit, duration_text};
use crate::naming;
use crate::quantity::Quantity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Per-environment databases (`.preview.yaml` `database:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabasePolicy {
    /// The engines repositories may ask for, each with the versions offered. An engine left out
    /// is refused. By default: `postgres` 17 and 16 (Docker Hub's official images).
    pub engines: BTreeMap<String, EnginePolicy>,
    /// Where the data lives. `empty_dir` (the default): in the pod, gone when the pod is replaced;
    /// previews are disposable, and nothing binds to a node. `volume`: a PersistentVolumeClaim
    /// of `storage_class`, deleted with the environment.
    pub storage: Storage,
    /// The StorageClass of `volume` storage; empty uses the cluster's default class.
    pub storage_class: String,
    /// The size of each database's storage: the PersistentVolumeClaim's request, or the
    /// `emptyDir`'s size limit.
    pub size: Quantity,
    /// How long seeding may take before the environment fails.
    #[serde(with = "duration_text")]
    pub seed_timeout: Duration,
}

impl Default for DatabasePolicy {
    fn default() -> Self {
        let postgres = EnginePolicy {
            versions: BTreeMap::from([
                ("16".to_owned(), "docker.io/library/postgres:16".to_owned()),
                ("17".to_owned(), "docker.io/library/postgres:17".to_owned()),
            ]),
            default_version: "17".to_owned(),
        };
        DatabasePolicy {
            engines: BTreeMap::from([("postgres".to_owned(), postgres)]),
            storage: Storage::EmptyDir,
            storage_class: String::new(),
            size: Quantity::literal("1Gi"),
            seed_timeout: Duration::from_secs(600),
        }
    }
}

/// One engine's versions: the image that runs each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnginePolicy {
    /// Version (as repositories write it) to image. The images are the platform's choice, not
    /// held to `allowed_registries`. The template runs them as user 999 (the official
    /// Debian-based images' `postgres`).
    pub versions: BTreeMap<String, String>,
    /// The version of a repository that names none.
    pub default_version: String,
}

/// Where a database's data lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    #[default]
    EmptyDir,
    Volume,
}

/// How traffic reaches an environment's public services.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Routing {
    /// An Ingress per public service (`ingress`).
    #[default]
    Ingress,
    /// An HTTPRoute per public service, attached to the platform's Gateway (`gateway`).
    Gateway,
}

/// The platform's Gateway that environments' HTTPRoutes attach to (routing `gateway`). Its
/// listener for `*.<base_domain>` holds the wildcard certificate, so environments need none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayPolicy {
    /// The Gateway (or its listeners) every route names as its parent. Required with routing
    /// `gateway`; the Gateway must allow routes from previewd's namespaces.
    pub parent_refs: Vec<ParentRef>,
}

/// A Gateway, and optionally one of its listeners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParentRef {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub section_name: Option<String>,
}

/// How an Ingress gets its certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// previewd copies the wildcard certificate's Secret (`ingress.tls_secret_name`, in
    /// `secrets.source_namespace`) into each environment, where the Ingress finds it; every
    /// reconcile copies it again, so a renewal reaches the environments at the next periodic pass.
    #[default]
    Copy,
    /// cert-manager issues a certificate per environment host (annotation
    /// `cert-manager.io/cluster-issuer: <ingress.cert_manager_issuer>`).
    CertManager,
    /// The Ingress names no Secret: the controller's default certificate (which must be the
    /// wildcard) serves every preview.
    ControllerDefault,
}

impl DatabasePolicy {
    pub(super) fn check(&self, p: &mut Problems) {
        for (engine, policy) in &self.engines {
            let field = format!("database.engines.{engine}");
            if engine != "postgres" {
                p.push(&field, "is not an engine previewd knows; known: postgres");
            }
            if policy.versions.is_empty() {
                p.push(format!("{field}.versions"), "must list at least one version");
            }
            for (version, image) in &policy.versions {
                if image.trim().is_empty() || image.contains(char::is_whitespace) {
                    p.push(format!("{field}.versions.{version}"), format!("{image:?} is not an image"));
                }
            }
            if !policy.versions.contains_key(&policy.default_version) {
                p.push(
                    format!("{field}.default_version"),
                    format!("{:?} is not one of the versions ({})", policy.default_version, keys(&policy.versions)),
                );
            }
        }
        if !self.storage_class.is_empty() && !naming::is_dns1123_subdomain(&self.storage_class) {
            p.push("database.storage_class", format!("{:?} is not a StorageClass name", self.storage_class));
        }
        match Unit::Bytes.value(&self.size) {
            Ok(bytes) if bytes > 0 => {}
            Ok(_) => p.push("database.size", "must be more than 0"),
            Err(e) => p.push("database.size", e.to_string()),
        }
        if self.seed_timeout.is_zero() {
            p.push("database.seed_timeout", "must be longer than 0s");
        }
    }
}

impl GatewayPolicy {
    pub(super) fn check(&self, routing: Routing, p: &mut Problems) {
        if routing == Routing::Gateway && self.parent_refs.is_empty() {
            p.push("gateway.parent_refs", "must name the platform's Gateway when routing is `gateway`");
        }
        for (i, parent) in self.parent_refs.iter().enumerate() {
            if !naming::is_dns1123_label(&parent.namespace) {
                p.push(
                    format!("gateway.parent_refs[{i}].namespace"),
                    format!("{:?} is not a namespace name", parent.namespace),
                );
            }
            if !naming::is_dns1123_subdomain(&parent.name) {
                p.push(format!("gateway.parent_refs[{i}].name"), format!("{:?} is not a Gateway name", parent.name));
            }
            if parent.section_name.as_deref().is_some_and(|s| !naming::is_dns1123_subdomain(s)) {
                p.push(format!("gateway.parent_refs[{i}].section_name"), "is not a listener name");
            }
        }
    }
}

pub fn keys(map: &BTreeMap<String, String>) -> String {
    map.keys().cloned().collect::<Vec<_>>().join(", ")
}
