//! The kinds of Kubernetes objects previewd manages. Templates may render only these: the list
//! is what previewd's RBAC grants (see `e2e/controlplane/previewd-rbac.yaml` and the chart), so
//! a template can never ask previewd to touch anything else.

use k8s_openapi::Resource;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use serde::Serialize;
use std::fmt;

/// A kind's place in the Kubernetes API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiType {
    pub group: &'static str,
    pub version: &'static str,
    pub api_version: &'static str,
    pub kind: &'static str,
    /// The URL path segment (`deployments`).
    pub plural: &'static str,
}

impl ApiType {
    const fn of<T: Resource>() -> ApiType {
        ApiType {
            group: T::GROUP,
            version: T::VERSION,
            api_version: T::API_VERSION,
            kind: T::KIND,
            plural: T::URL_PATH_SEGMENT,
        }
    }

    /// The same, as kube's dynamic API takes it.
    pub fn resource(self) -> kube::api::ApiResource {
        kube::api::ApiResource {
            group: self.group.to_owned(),
            version: self.version.to_owned(),
            api_version: self.api_version.to_owned(),
            kind: self.kind.to_owned(),
            plural: self.plural.to_owned(),
        }
    }
}

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
    PersistentVolumeClaim,
    Service,
    StatefulSet,
    Deployment,
    /// Run once: created when the StatefulSets are ready, never updated (see
    /// `Cluster::start_jobs`).
    Job,
    Ingress,
    /// Gateway API; a custom resource, so not every cluster serves it.
    HttpRoute,
}

/// Gateway API's HTTPRoute, which k8s-openapi (built-in types only) does not describe: the one
/// kind whose place in the API is written here.
const HTTP_ROUTE: ApiType = ApiType {
    group: "gateway.networking.k8s.io",
    version: "v1",
    api_version: "gateway.networking.k8s.io/v1",
    kind: "HTTPRoute",
    plural: "httproutes",
};

impl Kind {
    pub const ALL: [Kind; 14] = [
        Kind::Namespace,
        Kind::ResourceQuota,
        Kind::LimitRange,
        Kind::NetworkPolicy,
        Kind::ServiceAccount,
        Kind::Secret,
        Kind::ConfigMap,
        Kind::PersistentVolumeClaim,
        Kind::Service,
        Kind::StatefulSet,
        Kind::Deployment,
        Kind::Job,
        Kind::Ingress,
        Kind::HttpRoute,
    ];

    /// Its API type, as k8s-openapi describes it: no table of groups and plurals to keep in
    /// step with Kubernetes by hand.
    pub fn api(self) -> ApiType {
        match self {
            Kind::Namespace => ApiType::of::<Namespace>(),
            Kind::ResourceQuota => ApiType::of::<ResourceQuota>(),
            Kind::LimitRange => ApiType::of::<LimitRange>(),
            Kind::NetworkPolicy => ApiType::of::<NetworkPolicy>(),
            Kind::ServiceAccount => ApiType::of::<ServiceAccount>(),
            Kind::Secret => ApiType::of::<Secret>(),
            Kind::ConfigMap => ApiType::of::<ConfigMap>(),
            Kind::Service => ApiType::of::<Service>(),
            Kind::PersistentVolumeClaim => ApiType::of::<PersistentVolumeClaim>(),
            Kind::StatefulSet => ApiType::of::<StatefulSet>(),
            Kind::Deployment => ApiType::of::<Deployment>(),
            Kind::Job => ApiType::of::<Job>(),
            Kind::Ingress => ApiType::of::<Ingress>(),
            Kind::HttpRoute => HTTP_ROUTE,
        }
    }

    pub fn api_version(self) -> &'static str {
        self.api().api_version
    }

    pub fn name(self) -> &'static str {
        self.api().kind
    }

    /// The kind named by `apiVersion` and `kind`, if previewd manages it.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == kind && k.api_version() == api_version)
    }

    pub fn is_namespaced(self) -> bool {
        self != Kind::Namespace
    }

    /// Served only where its CRD is installed: a cluster without it has none to list or prune.
    pub fn is_custom(self) -> bool {
        self == Kind::HttpRoute
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
