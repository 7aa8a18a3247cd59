//! The kinds of Kubernetes objects previewd manages. Templates may render only these: the list
//! is what previewd's RBAC grants (see `e2e/controlplane/previewd-rbac.yaml` and the chart), so
//! a template can never ask previewd to touch anything else.

use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Kind {
    // Declared in apply order: the namespace first, then what admission needs before pods
    // (quota, limits), then what pods refer to, then workloads and their exposure.
    Namespace,
    ResourceQuota,
    LimitRange,
    NetworkPolicy,
    ServiceAccount,
    Secret,
    ConfigMap,
    Service,
    Deployment,
    Ingress,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Namespace,
        Kind::ResourceQuota,
        Kind::LimitRange,
        Kind::NetworkPolicy,
        Kind::ServiceAccount,
        Kind::Secret,
        Kind::ConfigMap,
        Kind::Service,
        Kind::Deployment,
        Kind::Ingress,
    ];

    /// (group, version, kind, plural)
    pub fn api(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Kind::Namespace => ("", "v1", "Namespace", "namespaces"),
            Kind::ResourceQuota => ("", "v1", "ResourceQuota", "resourcequotas"),
            Kind::LimitRange => ("", "v1", "LimitRange", "limitranges"),
            Kind::NetworkPolicy => ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies"),
            Kind::ServiceAccount => ("", "v1", "ServiceAccount", "serviceaccounts"),
            Kind::Secret => ("", "v1", "Secret", "secrets"),
            Kind::ConfigMap => ("", "v1", "ConfigMap", "configmaps"),
            Kind::Service => ("", "v1", "Service", "services"),
            Kind::Deployment => ("apps", "v1", "Deployment", "deployments"),
            Kind::Ingress => ("networking.k8s.io", "v1", "Ingress", "ingresses"),
        }
    }

    pub fn api_version(self) -> String {
        match self.api() {
            ("", version, ..) => version.to_owned(),
            (group, version, ..) => format!("{group}/{version}"),
        }
    }

    pub fn name(self) -> &'static str {
        self.api().2
    }

    /// The kind named by `apiVersion` and `kind`, if previewd manages it.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == kind && k.api_version() == api_version)
    }

    pub fn is_namespaced(self) -> bool {
        self != Kind::Namespace
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
