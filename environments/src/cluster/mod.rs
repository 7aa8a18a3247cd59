//! The Kubernetes side of an environment: server-side apply with one field manager, pruning by
//! ownership labels, where the rollout stands ([`rollout`], with a specific reason when it
//! fails), deleting the namespace, and the watches that wake a waiting environment
//! ([`watch`]). Nothing here waits for the cluster to do its work.
//!
//! Only the kinds in [`Kind`] are touched, with exactly the verbs previewd's RBAC grants (see
//! `e2e/controlplane/previewd-rbac.yaml`): Secrets are written and deleted but never read, so
//! generated secrets are created once (and kept) instead of being read back.
//!
//! previewd may read nothing cluster-wide but namespaces. Its reads (prune, rollout) are
//! granted per environment: each namespace it creates gets a RoleBinding ([`READ_BINDING`]) of
//! the ClusterRole named by the setting `read_cluster_role` to previewd's own identity, which
//! it learns from the API server (SelfSubjectReview). The admission policies let previewd
//! create that RoleBinding only in its own namespaces, only for that role and only for
//! itself, so a leaked token cannot read ConfigMaps, pods or env vars anywhere else.

pub mod inventory;
pub mod jobs;
pub mod rollout;
pub mod watch;

pub use inventory::InventoryObject;
pub use rollout::{Rollout, RolloutFailure, WorkloadFailure, WorkloadKind};

use crate::kinds::Kind;
use crate::render::{ENVIRONMENT_LABEL, INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL, Manifest, Ownership};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// The field manager of every object previewd applies.
pub const FIELD_MANAGER: &str = "previewd";
/// Marks a Secret previewd generated (random value, created once and kept).
pub const GENERATED_SECRET_LABEL: &str = "previewd.dev/generated-secret";
/// The RoleBinding in each environment namespace that grants previewd its reads there.
pub const READ_BINDING: &str = "previewd-read";
/// How long a new [`READ_BINDING`] may take to reach the API server's authorizer (its RBAC
/// cache follows RoleBindings through a watch; milliseconds on one server, more on a busy
/// one). Longer means the ClusterRole is missing or grants too little.
const READ_ACCESS_TIMEOUT: Duration = Duration::from_secs(10);

/// A failure talking to the cluster. Callers branch on [`ClusterError::is_transient`] (try again
/// later, the environment is not failed) and [`ClusterError::retry_after`] (not before this).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("Kubernetes refused to {action}: {message} (previewd's RBAC may lack a permission)")]
    Forbidden { action: String, message: String },
    #[error("Kubernetes rejected {action}: {message}")]
    Rejected { action: String, message: String },
    /// The API server asked previewd to slow down (429, from its Priority and Fairness limits),
    /// or could not serve the call right now (5xx, 408): the same call may well succeed later.
    #[error("Kubernetes could not {action} now ({code}: {message}); trying again later")]
    Unavailable { action: String, code: u16, message: String, retry_after: Option<Duration> },
    #[error("cannot reach Kubernetes while trying to {action}: {source}")]
    Unreachable { action: String, source: kube::Error },
}

impl ClusterError {
    pub(crate) fn from_kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> ClusterError {
        let action = action.into();
        move |error| match &error {
            kube::Error::Api(status) if status.code == 403 => {
                ClusterError::Forbidden { action, message: status.message.clone() }
            }
            kube::Error::Api(status) if status.code == 429 || status.code == 408 || status.code >= 500 => {
                // `details.retryAfterSeconds`: from the API server's JSON, or its `Retry-After`
                // header (see `kube_client`).
                let retry_after = status
                    .details
                    .as_ref()
                    .map(|d| d.retry_after_seconds)
                    .filter(|seconds| *seconds > 0)
                    .map(|seconds| Duration::from_secs(u64::from(seconds)));
                ClusterError::Unavailable { action, code: status.code, message: status.message.clone(), retry_after }
            }
            kube::Error::Api(status) if (400..500).contains(&status.code) => {
                ClusterError::Rejected { action, message: status.message.clone() }
            }
            _ => ClusterError::Unreachable { action, source: error },
        }
    }

    /// Worth trying again later (the cluster is busy or may come back), as opposed to a refusal
    /// that needs a person.
    pub fn is_transient(&self) -> bool {
        matches!(self, ClusterError::Unavailable { .. } | ClusterError::Unreachable { .. })
    }

    /// How long the API server asked previewd to wait before trying again, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClusterError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Classifies an error of a call previewd made with its own [`kube::Client`] (for callers
    /// outside this module, and tests that check the classification of real answers).
    pub fn classify(action: &str, error: kube::Error) -> ClusterError {
        ClusterError::from_kube(action)(error)
    }
}

/// What deleting a namespace found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Teardown {
    /// The namespace is gone (or never existed).
    Gone,
    /// Still terminating: since when (milliseconds since the epoch, from its deletion
    /// timestamp), and what its own conditions say.
    Terminating { since: Option<i64>, conditions: String },
}

/// Handle on the cluster; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    /// The ClusterRole bound in each environment namespace for previewd's reads.
    read_cluster_role: String,
    /// previewd's username as the API server sees it, asked once.
    username: Arc<OnceCell<String>>,
}

impl Cluster {
    /// `read_cluster_role` is the ClusterRole previewd binds to itself in each environment
    /// namespace (setting `read_cluster_role`; the chart creates it).
    pub fn new(client: Client, read_cluster_role: impl Into<String>) -> Self {
        Cluster { client, read_cluster_role: read_cluster_role.into(), username: Arc::new(OnceCell::new()) }
    }

    /// The client, for the watches that wake environments ([`watch`]).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    fn api(&self, kind: Kind, namespace: &str) -> Api<DynamicObject> {
        let resource = kind.api().resource();
        if kind.is_namespaced() {
            Api::namespaced_with(self.client.clone(), namespace, &resource)
        } else {
            Api::all_with(self.client.clone(), &resource)
        }
    }

    /// Applies `manifests` (in order) with server-side apply, then deletes what this
    /// environment owns but was not rendered this time. Re-applying an unchanged environment
    /// changes nothing in the cluster. Jobs are not applied here but kept from pruning: they run
    /// once, started by [`Cluster::start_jobs`].
    ///
    /// Right after the Namespace (always first), previewd grants itself its reads there
    /// ([`Cluster::grant_reads`]); pruning waits until they are in effect.
    pub async fn apply(&self, owner: &Ownership, manifests: &[Manifest]) -> Result<(), ClusterError> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut granted = false;
        for manifest in manifests.iter().filter(|m| m.kind != Kind::Job) {
            if !granted && manifest.kind != Kind::Namespace {
                self.grant_reads(owner).await?;
                granted = true;
            }
            let api = self.api(manifest.kind, &owner.environment);
            let action = format!("apply {} {}/{}", manifest.kind, owner.environment, manifest.name);
            match api.patch(&manifest.name, &params, &Patch::Apply(&manifest.object)).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 && manifest.kind.is_custom() => {
                    let api = manifest.kind.api();
                    return Err(ClusterError::Rejected {
                        action,
                        message: format!(
                            "the cluster does not serve {} ({}): install its CRDs (the Gateway API's standard channel), or route with an Ingress (policy `routing: ingress`)",
                            api.kind, api.api_version
                        ),
                    });
                }
                Err(error) => return Err(ClusterError::from_kube(action)(error)),
            }
        }
        if !granted {
            self.grant_reads(owner).await?;
        }
        self.wait_for_reads(&owner.environment).await?;
        self.prune(owner, manifests).await
    }

    /// previewd's username, from a SelfSubjectReview (allowed to every authenticated user by
    /// the default `system:basic-user` role): the subject of its read RoleBindings is exactly
    /// the identity the API server and the admission policies see, with nothing to configure.
    async fn username(&self) -> Result<&str, ClusterError> {
        let name = self
            .username
            .get_or_try_init(|| async {
                let api: Api<SelfSubjectReview> = Api::all(self.client.clone());
                let review = api
                    .create(&PostParams::default(), &SelfSubjectReview::default())
                    .await
                    .map_err(ClusterError::from_kube("ask the API server who previewd is (SelfSubjectReview)"))?;
                review.status.and_then(|s| s.user_info).and_then(|u| u.username).ok_or_else(|| ClusterError::Rejected {
                    action: "ask the API server who previewd is (SelfSubjectReview)".to_owned(),
                    message: "the answer names no user".to_owned(),
                })
            })
            .await?;
        Ok(name)
    }

    /// Binds the read ClusterRole to previewd in the environment's namespace (server-side
    /// apply: unchanged, it changes nothing). Not a template object, so never pruned; it goes
    /// with the namespace.
    async fn grant_reads(&self, owner: &Ownership) -> Result<(), ClusterError> {
        let namespace = &owner.environment;
        let binding = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": READ_BINDING, "namespace": namespace, "labels": owner.labels()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": self.read_cluster_role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": self.username().await?}],
        });
        let api: Api<RoleBinding> = Api::namespaced(self.client.clone(), namespace);
        let action = format!("apply rolebinding {namespace}/{READ_BINDING}");
        match api.patch(READ_BINDING, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&binding)).await {
            Ok(_) => Ok(()),
            // RBAC looks the role up to check the binding does not escalate.
            Err(kube::Error::Api(status)) if status.code == 404 => Err(ClusterError::Rejected {
                action,
                message: format!(
                    "ClusterRole {} (setting read_cluster_role) does not exist: {}",
                    self.read_cluster_role, status.message
                ),
            }),
            Err(error) => Err(ClusterError::from_kube(action)(error)),
        }
    }

    /// Waits until the API server authorises previewd's reads in `namespace`, trying one of
    /// them: a RoleBinding just created reaches the authorizer a moment later.
    async fn wait_for_reads(&self, namespace: &str) -> Result<(), ClusterError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let deadline = tokio::time::Instant::now() + READ_ACCESS_TIMEOUT;
        loop {
            match pods.list_metadata(&ListParams::default().limit(1)).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 403 && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(kube::Error::Api(status)) if status.code == 403 => {
                    return Err(ClusterError::Forbidden {
                        action: format!("read in {namespace}"),
                        message: format!(
                            "still refused {} s after binding ClusterRole {} there ({}); does that ClusterRole exist \
                             with the chart's read rules (setting read_cluster_role)?",
                            READ_ACCESS_TIMEOUT.as_secs(),
                            self.read_cluster_role,
                            status.message
                        ),
                    });
                }
                Err(error) => return Err(ClusterError::from_kube(format!("list pods in {namespace}"))(error)),
            }
        }
    }

    async fn prune(&self, owner: &Ownership, manifests: &[Manifest]) -> Result<(), ClusterError> {
        let wanted: BTreeSet<(Kind, &str)> = manifests.iter().map(|m| (m.kind, m.name.as_str())).collect();
        for kind in Kind::ALL {
            if kind == Kind::Namespace || kind == Kind::Secret {
                continue; // the namespace is the environment; secrets are pruned by `sync_secrets`
            }
            let api = self.api(kind, &owner.environment);
            let listed = match api.list_metadata(&ListParams::default().labels(&owner.selector())).await {
                Ok(listed) => listed,
                // No CRD, so nothing of that kind to prune (a template asking for one fails
                // at apply, with the API server's message).
                Err(kube::Error::Api(status)) if status.code == 404 && kind.is_custom() => continue,
                Err(error) => {
                    return Err(ClusterError::from_kube(format!("list {kind}s in {}", owner.environment))(error));
                }
            };
            for object in listed.items {
                let Some(name) = object.metadata.name else { continue };
                if !wanted.contains(&(kind, name.as_str())) {
                    tracing::info!(kind = %kind, name, namespace = owner.environment, "pruning an object no longer rendered");
                    delete_ignoring_missing(&api, &name, &format!("prune {kind} {}/{name}", owner.environment)).await?;
                }
            }
        }
        Ok(())
    }

    /// Makes the environment's Secrets what they should be: each generated secret exists
    /// (created once with a random value, never overwritten, so it is stable across
    /// redeploys), each platform secret is a copy of its source, and other secrets this
    /// environment owns are deleted.
    pub async fn sync_secrets(
        &self,
        owner: &Ownership,
        generated: &[String],
        copied: &[(String, Secret)],
    ) -> Result<(), ClusterError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &owner.environment);
        let mut keep = Vec::new();
        for name in generated {
            let secret_name = format!("generated-{name}");
            let mut labels = owner.labels();
            labels.insert(GENERATED_SECRET_LABEL.to_owned(), "true".to_owned());
            let secret = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(secret_name.clone()),
                    namespace: Some(owner.environment.clone()),
                    labels: Some(labels),
                    ..Default::default()
                },
                string_data: Some(BTreeMap::from([("value".to_owned(), random_secret())])),
                ..Default::default()
            };
            match api
                .create(&PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..Default::default() }, &secret)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {} // exists: keep its value
                Err(error) => {
                    return Err(ClusterError::from_kube(format!("create secret {}/{secret_name}", owner.environment))(
                        error,
                    ));
                }
            }
            keep.push(secret_name);
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        for (name, source) in copied {
            let copy = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(owner.environment.clone()),
                    labels: Some(owner.labels()),
                    ..Default::default()
                },
                data: source.data.clone(),
                type_: source.type_.clone(),
                ..Default::default()
            };
            let mut object = serde_json::to_value(&copy).map_err(|e| ClusterError::Rejected {
                action: format!("encode secret {name}"),
                message: e.to_string(),
            })?;
            object["apiVersion"] = "v1".into();
            object["kind"] = "Secret".into();
            api.patch(name, &params, &Patch::Apply(&object))
                .await
                .map_err(ClusterError::from_kube(format!("apply secret {}/{name}", owner.environment)))?;
            keep.push(name.clone());
        }
        self.delete_unwanted_secrets(owner, &keep).await
    }

    /// `deletecollection` with label and field selectors needs neither `get` nor `list` on
    /// secrets.
    async fn delete_unwanted_secrets(&self, owner: &Ownership, keep: &[String]) -> Result<(), ClusterError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &owner.environment);
        let mut params = ListParams::default().labels(&owner.selector());
        if !keep.is_empty() {
            let fields: Vec<String> = keep.iter().map(|name| format!("metadata.name!={name}")).collect();
            params = params.fields(&fields.join(","));
        }
        api.delete_collection(&DeleteParams::default(), &params)
            .await
            .map_err(ClusterError::from_kube(format!("prune secrets in {}", owner.environment)))?;
        Ok(())
    }

    /// Reads a platform secret from the source namespace.
    pub async fn read_platform_secret(&self, source_namespace: &str, name: &str) -> Result<Secret, ClusterError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), source_namespace);
        let action = format!("read platform secret {source_namespace}/{name}");
        match api.get(name).await {
            Ok(secret) => Ok(secret),
            Err(kube::Error::Api(status)) if status.code == 404 => Err(ClusterError::Rejected {
                action,
                message: format!(
                    "Secret {name} does not exist in {source_namespace}; the platform team creates it there (policy \
                     `secrets` for the secrets repositories ask for, `ingress.tls_secret_name` for the wildcard certificate)"
                ),
            }),
            Err(error) => Err(ClusterError::from_kube(action)(error)),
        }
    }

    /// Deletes the namespace (once; a namespace already terminating is left to finish) and
    /// reports whether it is gone. Does not wait: the namespace watch wakes the environment
    /// when it disappears.
    pub async fn delete_namespace(&self, namespace: &str) -> Result<Teardown, ClusterError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let current =
            api.get_opt(namespace).await.map_err(ClusterError::from_kube(format!("read namespace {namespace}")))?;
        let Some(current) = current else { return Ok(Teardown::Gone) };
        let current = if current.metadata.deletion_timestamp.is_some() {
            current
        } else {
            match api.delete(namespace, &DeleteParams::background()).await {
                Ok(either) => match either.left() {
                    Some(ns) => ns,
                    None => return Ok(Teardown::Gone),
                },
                Err(kube::Error::Api(status)) if status.code == 404 => return Ok(Teardown::Gone),
                Err(error) => return Err(ClusterError::from_kube(format!("delete namespace {namespace}"))(error)),
            }
        };
        let since = current.metadata.deletion_timestamp.as_ref().map(|t| t.0.as_millisecond());
        Ok(Teardown::Terminating { since, conditions: namespace_conditions(&current) })
    }

    /// Whether namespace `name` exists and is terminating (`Some(true)`), exists (`Some(false)`),
    /// or does not exist (`None`).
    pub async fn namespace_terminating(&self, name: &str) -> Result<Option<bool>, ClusterError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let namespace = api.get_opt(name).await.map_err(ClusterError::from_kube(format!("read namespace {name}")))?;
        Ok(namespace.map(|ns| ns.metadata.deletion_timestamp.is_some()))
    }

    /// Namespaces carrying the ownership labels of previewd installation `instance`, by name.
    pub async fn owned_namespaces(&self, instance: &str) -> Result<Vec<String>, ClusterError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY},{INSTANCE_LABEL}={instance},{ENVIRONMENT_LABEL}");
        let listed = api
            .list_metadata(&ListParams::default().labels(&selector))
            .await
            .map_err(ClusterError::from_kube("list previewd's namespaces"))?;
        Ok(listed.items.into_iter().filter_map(|ns| ns.metadata.name).collect())
    }
}

async fn delete_ignoring_missing(api: &Api<DynamicObject>, name: &str, action: &str) -> Result<(), ClusterError> {
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(ClusterError::from_kube(action)(error)),
    }
}

fn namespace_conditions(namespace: &Namespace) -> String {
    let conditions: Vec<String> = namespace
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .filter(|c| c.status == "True")
        .map(|c| format!("{}: {}", c.type_, c.message.clone().unwrap_or_default()))
        .collect();
    if conditions.is_empty() {
        let finalizers = namespace.spec.as_ref().and_then(|s| s.finalizers.clone()).unwrap_or_default();
        format!("still terminating; finalizers: {}", finalizers.join(", "))
    } else {
        conditions.join("; ")
    }
}

/// 32 random bytes, hex-encoded.
fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
