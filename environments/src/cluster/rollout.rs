//! Where the rollout of an environment's workloads stands, from one look at the cluster.
//!
//! The reconciler never waits here: it asks once, records what it learnt, and is woken by the
//! rollout watch (see [`super::watch`]) or its deadline. Every Deployment the environment's
//! namespace holds counts, and a failure names the workload it belongs to.

use super::{Cluster, ClusterError};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

/// Why a workload's rollout cannot become ready: specific enough for the pull request's author.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutFailure {
    #[error("image cannot be pulled: {0}")]
    ImagePull(String),
    #[error("namespace quota exceeded: {0}")]
    QuotaExceeded(String),
    #[error("admission refused the pods: {0}")]
    AdmissionRefused(String),
    #[error("the container keeps crashing: {0}")]
    CrashLoop(String),
    #[error("not ready after {seconds} s: {detail}")]
    Timeout { seconds: u64, detail: String },
}

impl RolloutFailure {
    /// Whether the same commit may succeed later without anyone changing anything: an image
    /// that CI has not pushed yet, a dependency the container waits for, a quota that other
    /// pods free, a slow start. An admission refusal is the cluster's policy, and stays.
    pub fn can_pass(&self) -> bool {
        match self {
            RolloutFailure::ImagePull(_)
            | RolloutFailure::QuotaExceeded(_)
            | RolloutFailure::CrashLoop(_)
            | RolloutFailure::Timeout { .. } => true,
            RolloutFailure::AdmissionRefused(_) => false,
        }
    }
}

/// A rollout that failed, and the workload it failed in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("deployment `{workload}`: {failure}")]
pub struct WorkloadFailure {
    pub workload: String,
    pub failure: RolloutFailure,
}

/// Where the rollout of every workload in a namespace stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// Every workload has rolled out completely (or there is none).
    Complete,
    /// Some are still starting: which (as `deployment `name``), and how far each is.
    Progressing { workloads: Vec<String>, detail: String },
    /// One cannot succeed.
    Failed(WorkloadFailure),
}

impl Cluster {
    /// Looks once at every Deployment in `namespace`: complete, still progressing, or failed
    /// with a reason that names the Deployment. Replica sets and pods are read only when a
    /// Deployment is not complete.
    pub async fn rollout(&self, namespace: &str) -> Result<Rollout, ClusterError> {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let deployments = deployments
            .list(&ListParams::default())
            .await
            .map_err(ClusterError::from_kube(format!("list deployments in {namespace}")))?;
        let pending: Vec<&Deployment> = deployments.items.iter().filter(|d| !rolled_out(d)).collect();
        if pending.is_empty() {
            return Ok(Rollout::Complete);
        }
        let replica_sets: Api<ReplicaSet> = Api::namespaced(self.client.clone(), namespace);
        let replica_sets = replica_sets
            .list(&ListParams::default())
            .await
            .map_err(ClusterError::from_kube(format!("list replica sets in {namespace}")))?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pods = pods
            .list(&ListParams::default())
            .await
            .map_err(ClusterError::from_kube(format!("list pods in {namespace}")))?;
        Ok(assess(&pending, &replica_sets.items, &pods.items))
    }
}

/// The verdict on the Deployments that have not rolled out.
fn assess(pending: &[&Deployment], replica_sets: &[ReplicaSet], pods: &[Pod]) -> Rollout {
    for deployment in pending {
        if let Some(failure) = diagnose(deployment, replica_sets, pods) {
            return Rollout::Failed(WorkloadFailure { workload: name_of(deployment), failure });
        }
    }
    let workloads: Vec<String> = pending.iter().map(|d| format!("deployment `{}`", name_of(d))).collect();
    let detail: Vec<String> =
        pending.iter().zip(&workloads).map(|(d, name)| format!("{name}: {}", deployment_summary(d))).collect();
    Rollout::Progressing { workloads, detail: detail.join("; ") }
}

fn name_of(deployment: &Deployment) -> String {
    deployment.metadata.name.clone().unwrap_or_default()
}

/// Why a rollout cannot succeed, judged from what the controllers and the kubelet reported:
/// replica set creation refused (quota, admission), or pods that cannot pull their image or keep
/// crashing. `None` while it may still succeed.
fn diagnose(deployment: &Deployment, replica_sets: &[ReplicaSet], pods: &[Pod]) -> Option<RolloutFailure> {
    let deployment_uid = deployment.metadata.uid.as_deref();
    let owned: Vec<&ReplicaSet> = replica_sets
        .iter()
        .filter(|rs| rs.metadata.owner_references.iter().flatten().any(|o| Some(o.uid.as_str()) == deployment_uid))
        .collect();
    for rs in &owned {
        for condition in rs.status.iter().flat_map(|s| s.conditions.iter().flatten()) {
            if condition.type_ == "ReplicaFailure" && condition.status == "True" {
                let message = condition.message.clone().unwrap_or_default();
                return Some(if message.contains("exceeded quota") || message.contains("must specify limits") {
                    RolloutFailure::QuotaExceeded(message)
                } else {
                    RolloutFailure::AdmissionRefused(message)
                });
            }
        }
    }
    // Only this Deployment's pods: another one's crash loop is named under its own name.
    let owned_uids: Vec<&str> = owned.iter().filter_map(|rs| rs.metadata.uid.as_deref()).collect();
    let its_pods = pods
        .iter()
        .filter(|pod| pod.metadata.owner_references.iter().flatten().any(|o| owned_uids.contains(&o.uid.as_str())));
    for status in its_pods.flat_map(|pod| pod.status.iter().flat_map(|s| s.container_statuses.iter().flatten())) {
        let Some(waiting) = status.state.as_ref().and_then(|s| s.waiting.as_ref()) else { continue };
        let reason = waiting.reason.clone().unwrap_or_default();
        let message = format!("{}: {}", reason, waiting.message.clone().unwrap_or_default());
        match reason.as_str() {
            "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" => {
                return Some(RolloutFailure::ImagePull(message));
            }
            "CrashLoopBackOff" => return Some(RolloutFailure::CrashLoop(message)),
            _ => {}
        }
    }
    None
}

pub(super) fn rolled_out(deployment: &Deployment) -> bool {
    let wanted = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let generation = deployment.metadata.generation.unwrap_or(0);
    let Some(status) = &deployment.status else { return false };
    status.observed_generation.unwrap_or(0) >= generation
        && status.updated_replicas.unwrap_or(0) == wanted
        && status.available_replicas.unwrap_or(0) == wanted
        && status.replicas.unwrap_or(0) == wanted
        && status.unavailable_replicas.unwrap_or(0) == 0
}

pub(super) fn deployment_summary(deployment: &Deployment) -> String {
    let wanted = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let conditions: Vec<String> = status
        .conditions
        .iter()
        .flatten()
        .filter(|c| c.status != "True" || c.type_ == "Progressing")
        .map(|c| format!("{} {}: {}", c.type_, c.status, c.message.clone().unwrap_or_default()))
        .collect();
    format!(
        "{} of {wanted} replicas available, {} updated{}",
        status.available_replicas.unwrap_or(0),
        status.updated_replicas.unwrap_or(0),
        if conditions.is_empty() { String::new() } else { format!("; {}", conditions.join("; ")) }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // kwok simulates pods without a kubelet, so image pulls and crash loops never happen in the
    // test cluster; these cases are checked here on the statuses a kubelet reports.
    fn pod(reason: &str, message: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "app-1", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "app-1", "uid": "rs-1"}]},
            "status": {"containerStatuses": [{
                "name": "app", "image": "x", "imageID": "", "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": reason, "message": message}}
            }]}
        }))
        .unwrap()
    }

    fn deployment() -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": "app", "uid": "d-1"}})).unwrap()
    }

    /// The replica set of [`deployment`] that owns the pods of [`pod`].
    fn replica_set() -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "app-1", "uid": "rs-1", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "app", "uid": "d-1"}]}
        }))
        .unwrap()
    }

    #[test]
    fn an_image_that_cannot_be_pulled_is_named() {
        let failure =
            diagnose(&deployment(), &[replica_set()], &[pod("ImagePullBackOff", "Back-off pulling image \"x\"")]);
        assert_eq!(failure, Some(RolloutFailure::ImagePull("ImagePullBackOff: Back-off pulling image \"x\"".into())));
    }

    #[test]
    fn a_crash_loop_is_named() {
        let failure = diagnose(&deployment(), &[replica_set()], &[pod("CrashLoopBackOff", "back-off 40s restarting")]);
        assert!(matches!(failure, Some(RolloutFailure::CrashLoop(m)) if m.contains("back-off 40s")));
    }

    #[test]
    fn a_container_still_creating_is_not_a_failure() {
        assert_eq!(diagnose(&deployment(), &[replica_set()], &[pod("ContainerCreating", "")]), None);
    }

    #[test]
    fn replica_failures_of_other_deployments_are_ignored() {
        let rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": "other", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "x", "uid": "other"}]},
            "status": {"replicas": 0, "conditions": [{"type": "ReplicaFailure", "status": "True", "message": "exceeded quota"}]}
        }))
        .unwrap();
        assert_eq!(diagnose(&deployment(), &[rs], &[]), None);
    }

    #[test]
    fn a_crash_loop_is_named_under_the_deployment_whose_pod_crashes() {
        let other: Deployment = serde_json::from_value(json!({"metadata": {"name": "worker", "uid": "d-2"}})).unwrap();
        let crashing = [pod("CrashLoopBackOff", "back-off 40s restarting")];
        let verdict = assess(&[&other, &deployment()], &[replica_set()], &crashing);
        match verdict {
            Rollout::Failed(WorkloadFailure { workload, failure: RolloutFailure::CrashLoop(_) }) => {
                assert_eq!(workload, "app");
            }
            other => panic!("expected app's crash loop, got {other:?}"),
        }
    }

    #[test]
    fn progress_names_every_deployment_still_starting() {
        let other: Deployment = serde_json::from_value(json!({"metadata": {"name": "worker", "uid": "d-2"}})).unwrap();
        match assess(&[&deployment(), &other], &[], &[]) {
            Rollout::Progressing { workloads, detail } => {
                assert_eq!(workloads, ["deployment `app`", "deployment `worker`"]);
                assert!(
                    detail.contains("deployment `app`: 0 of 1") && detail.contains("deployment `worker`: 0 of 1"),
                    "{detail}"
                );
            }
            other => panic!("expected progress, got {other:?}"),
        }
    }
}
