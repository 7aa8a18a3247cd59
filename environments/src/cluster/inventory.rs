//! What previewd applied in an environment's namespace, and how each object stands, for the
//! admin API: the namespace, then one list per kind of the objects carrying the environment's
//! ownership labels (as pruning lists them), read when asked. The truth of the cluster, not of
//! the store: an object deleted by hand shows as missing from the list, and drift is visible
//! before the next reconcile repairs it.
//!
//! Secrets are left out: previewd's RBAC grants no read of them (see [`super`]), by design.

use super::rollout::{deployment_summary, rolled_out};
use super::{Cluster, ClusterError};
use crate::kinds::Kind;
use crate::render::Ownership;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use serde::Serialize;

/// One object of an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InventoryObject {
    pub kind: Kind,
    pub name: String,
    /// For the namespace its phase; for a Deployment its replicas and conditions; else
    /// `present`.
    pub status: String,
    /// For the namespace and Deployments: whether it is what the environment needs (`Active`;
    /// rolled out completely). `None` for kinds that have no such state.
    pub ready: Option<bool>,
}

impl Cluster {
    /// The environment's objects, in apply order (the namespace first); empty when its
    /// namespace does not exist.
    pub async fn inventory(&self, owner: &Ownership) -> Result<Vec<InventoryObject>, ClusterError> {
        let namespace = &owner.environment;
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let Some(found) = namespaces
            .get_opt(namespace)
            .await
            .map_err(ClusterError::from_kube(format!("get namespace {namespace}")))?
        else {
            return Ok(Vec::new());
        };
        let phase = found.status.and_then(|s| s.phase).unwrap_or_else(|| "Unknown".to_owned());
        let mut objects = vec![InventoryObject {
            kind: Kind::Namespace,
            name: namespace.clone(),
            ready: Some(phase == "Active"),
            status: phase,
        }];
        let selector = ListParams::default().labels(&owner.selector());
        for kind in Kind::ALL {
            match kind {
                Kind::Namespace | Kind::Secret => {}
                Kind::Deployment => {
                    let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
                    let listed = api
                        .list(&selector)
                        .await
                        .map_err(ClusterError::from_kube(format!("list deployments in {namespace}")))?;
                    objects.extend(listed.items.iter().map(|d| InventoryObject {
                        kind,
                        name: d.metadata.name.clone().unwrap_or_default(),
                        status: deployment_summary(d),
                        ready: Some(rolled_out(d)),
                    }));
                }
                _ => {
                    let listed = self
                        .api(kind, namespace)
                        .list_metadata(&selector)
                        .await
                        .map_err(ClusterError::from_kube(format!("list {kind}s in {namespace}")))?;
                    objects.extend(listed.items.into_iter().map(|o| InventoryObject {
                        kind,
                        name: o.metadata.name.unwrap_or_default(),
                        status: "present".to_owned(),
                        ready: None,
                    }));
                }
            }
        }
        Ok(objects)
    }
}
