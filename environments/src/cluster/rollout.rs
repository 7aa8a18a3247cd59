//! Where the rollout of an environment's workloads stands, from one look at the cluster.
//!
//! The reconciler never waits here: it asks once, records what it learnt, and is woken by the
//! rollout watch (see [`super::watch`]) or its deadline. Every Deployment and StatefulSet the
//! environment's namespace holds counts, and every Job must have completed; a failure names the
//! workload it belongs to.

use super::{Cluster, ClusterError};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use std::fmt;

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
    /// A run-once Job (the database's seed) failed; it is not run again for the same database.
    #[error("the job failed: {0}; fix it, push, and ask for `/preview reset-db` to run it on a new database")]
    JobFailed(String),
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
            RolloutFailure::AdmissionRefused(_) | RolloutFailure::JobFailed(_) => false,
        }
    }
}

/// A rollout that failed, and the workload it failed in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} `{workload}`: {failure}")]
pub struct WorkloadFailure {
    pub kind: WorkloadKind,
    pub workload: String,
    pub failure: RolloutFailure,
}

/// The kinds of workload a rollout waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    Job,
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkloadKind::Deployment => "deployment",
            WorkloadKind::StatefulSet => "statefulset",
            WorkloadKind::Job => "job",
        })
    }
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
    /// Looks once at every Deployment, StatefulSet and Job in `namespace`: complete, still
    /// progressing, or failed with a reason that names the workload. Replica sets and pods are
    /// read only when something is not complete.
    pub async fn rollout(&self, namespace: &str) -> Result<Rollout, ClusterError> {
        let list = ListParams::default();
        let action = |what: &str| ClusterError::from_kube(format!("list {what} in {namespace}"));
        let deployments = Api::<Deployment>::namespaced(self.client.clone(), namespace);
        let deployments = deployments.list(&list).await.map_err(action("deployments"))?.items;
        let sets = Api::<StatefulSet>::namespaced(self.client.clone(), namespace);
        let sets = sets.list(&list).await.map_err(action("statefulsets"))?.items;
        let jobs = Api::<Job>::namespaced(self.client.clone(), namespace);
        let jobs = jobs.list(&list).await.map_err(action("jobs"))?.items;
        let pending = Pending {
            deployments: deployments.iter().filter(|d| !rolled_out(d)).collect(),
            sets: sets.iter().filter(|s| !set_rolled_out(s)).collect(),
            jobs: jobs.iter().filter(|j| !job_complete(j)).collect(),
        };
        if pending.is_empty() {
            return Ok(Rollout::Complete);
        }
        let replica_sets = if pending.deployments.is_empty() {
            Vec::new()
        } else {
            let api = Api::<ReplicaSet>::namespaced(self.client.clone(), namespace);
            api.list(&list).await.map_err(action("replica sets"))?.items
        };
        let pods = Api::<Pod>::namespaced(self.client.clone(), namespace);
        let pods = pods.list(&list).await.map_err(action("pods"))?.items;
        Ok(assess(&pending, &replica_sets, &pods))
    }
}

/// The workloads that have not rolled out (or, for Jobs, completed).
#[derive(Default)]
struct Pending<'a> {
    deployments: Vec<&'a Deployment>,
    sets: Vec<&'a StatefulSet>,
    jobs: Vec<&'a Job>,
}

impl Pending<'_> {
    fn is_empty(&self) -> bool {
        self.deployments.is_empty() && self.sets.is_empty() && self.jobs.is_empty()
    }
}

/// The verdict on the workloads that have not rolled out.
fn assess(pending: &Pending<'_>, replica_sets: &[ReplicaSet], pods: &[Pod]) -> Rollout {
    let failed = |kind, workload: Option<&String>, failure| {
        Rollout::Failed(WorkloadFailure { kind, workload: workload.cloned().unwrap_or_default(), failure })
    };
    for deployment in &pending.deployments {
        if let Some(failure) = diagnose(deployment, replica_sets, pods) {
            return failed(WorkloadKind::Deployment, deployment.metadata.name.as_ref(), failure);
        }
    }
    for set in &pending.sets {
        let owners = set.metadata.uid.iter().map(String::as_str).collect::<Vec<_>>();
        if let Some(failure) = diagnose_pods(&owners, pods) {
            return failed(WorkloadKind::StatefulSet, set.metadata.name.as_ref(), failure);
        }
    }
    for job in &pending.jobs {
        if let Some(message) = job_failure(job) {
            return failed(WorkloadKind::Job, job.metadata.name.as_ref(), RolloutFailure::JobFailed(message));
        }
        let owners = job.metadata.uid.iter().map(String::as_str).collect::<Vec<_>>();
        if let Some(failure) = diagnose_pods(&owners, pods) {
            return failed(WorkloadKind::Job, job.metadata.name.as_ref(), failure);
        }
    }
    let mut workloads = Vec::new();
    let mut detail = Vec::new();
    for d in &pending.deployments {
        let name = format!("deployment `{}`", name_of(&d.metadata));
        detail.push(format!("{name}: {}", deployment_summary(d)));
        workloads.push(name);
    }
    for set in &pending.sets {
        let name = format!("statefulset `{}`", name_of(&set.metadata));
        let status = set.status.clone().unwrap_or_default();
        let wanted = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let owners = set.metadata.uid.iter().map(String::as_str).collect::<Vec<_>>();
        let unscheduled = unscheduled(&owners, pods).map(|m| format!("; not scheduled: {m}")).unwrap_or_default();
        detail.push(format!("{name}: {} of {wanted} replicas ready{unscheduled}", status.ready_replicas.unwrap_or(0)));
        workloads.push(name);
    }
    for job in &pending.jobs {
        let name = format!("job `{}`", name_of(&job.metadata));
        let status = job.status.clone().unwrap_or_default();
        detail.push(format!(
            "{name}: {} running, {} succeeded",
            status.active.unwrap_or(0),
            status.succeeded.unwrap_or(0)
        ));
        workloads.push(name);
    }
    Rollout::Progressing { workloads, detail: detail.join("; ") }
}

fn name_of(metadata: &kube::api::ObjectMeta) -> String {
    metadata.name.clone().unwrap_or_default()
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
    diagnose_pods(&owned_uids, pods)
}

/// An image that cannot be pulled or a crash loop in the pods owned by one of `owners` (uids).
fn diagnose_pods(owners: &[&str], pods: &[Pod]) -> Option<RolloutFailure> {
    let its_pods = pods
        .iter()
        .filter(|pod| pod.metadata.owner_references.iter().flatten().any(|o| owners.contains(&o.uid.as_str())));
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

/// Why a pod owned by one of `owners` is not scheduled (an unbound claim, no node with room),
/// as the scheduler said.
fn unscheduled(owners: &[&str], pods: &[Pod]) -> Option<String> {
    pods.iter()
        .filter(|pod| pod.metadata.owner_references.iter().flatten().any(|o| owners.contains(&o.uid.as_str())))
        .flat_map(|pod| pod.status.iter().flat_map(|s| s.conditions.iter().flatten()))
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .map(|c| c.message.clone().unwrap_or_default())
}

/// A StatefulSet whose every replica is ready at its current revision.
pub(super) fn set_rolled_out(set: &StatefulSet) -> bool {
    let wanted = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let generation = set.metadata.generation.unwrap_or(0);
    let Some(status) = &set.status else { return false };
    status.observed_generation.unwrap_or(0) >= generation
        && status.replicas == wanted
        && status.ready_replicas.unwrap_or(0) == wanted
        && status.updated_replicas.unwrap_or(0) == wanted
        && status.current_revision.is_some()
        && status.current_revision == status.update_revision
}

fn job_condition<'a>(job: &'a Job, kind: &str) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status.iter().flat_map(|s| s.conditions.iter().flatten()).find(|c| c.type_ == kind && c.status == "True")
}

fn job_complete(job: &Job) -> bool {
    job_condition(job, "Complete").is_some()
}

/// The Job's `Failed` condition, as reason and message.
fn job_failure(job: &Job) -> Option<String> {
    job_condition(job, "Failed")
        .map(|c| format!("{}: {}", c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default()))
}

/// Whether `deployment` has rolled out: its controller saw the current generation and every
/// wanted replica is updated and available, none unavailable (what the rollout wait checks).
pub fn rolled_out(deployment: &Deployment) -> bool {
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
        let d = deployment();
        let pending = Pending { deployments: vec![&other, &d], ..Pending::default() };
        let verdict = assess(&pending, &[replica_set()], &crashing);
        match verdict {
            Rollout::Failed(WorkloadFailure { workload, failure: RolloutFailure::CrashLoop(_), .. }) => {
                assert_eq!(workload, "app");
            }
            other => panic!("expected app's crash loop, got {other:?}"),
        }
    }

    #[test]
    fn progress_names_every_deployment_still_starting() {
        let other: Deployment = serde_json::from_value(json!({"metadata": {"name": "worker", "uid": "d-2"}})).unwrap();
        let d = deployment();
        match assess(&Pending { deployments: vec![&d, &other], ..Pending::default() }, &[], &[]) {
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

    #[test]
    fn a_failed_job_is_named_and_a_running_one_waits() {
        let failed: Job = serde_json::from_value(json!({
            "metadata": {"name": "seed-1", "uid": "j-1"},
            "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}
        }))
        .unwrap();
        match assess(&Pending { jobs: vec![&failed], ..Pending::default() }, &[], &[]) {
            Rollout::Failed(failure) => {
                assert_eq!(failure.kind, WorkloadKind::Job);
                assert!(!failure.failure.can_pass());
                let text = failure.to_string();
                assert!(
                    text.starts_with("job `seed-1`: the job failed: BackoffLimitExceeded: Job has reached"),
                    "{text}"
                );
                assert!(text.contains("/preview reset-db"), "{text}");
            }
            other => panic!("expected the job's failure, got {other:?}"),
        }
        let running: Job =
            serde_json::from_value(json!({"metadata": {"name": "seed-1"}, "status": {"active": 1}})).unwrap();
        assert!(!job_complete(&running));
        match assess(&Pending { jobs: vec![&running], ..Pending::default() }, &[], &[]) {
            Rollout::Progressing { workloads, detail } => {
                assert_eq!(workloads, ["job `seed-1`"]);
                assert_eq!(detail, "job `seed-1`: 1 running, 0 succeeded");
            }
            other => panic!("expected progress, got {other:?}"),
        }
    }

    #[test]
    fn a_statefulset_counts_when_every_replica_is_ready_at_its_current_revision() {
        let set = |status: serde_json::Value| -> StatefulSet {
            serde_json::from_value(json!({"metadata": {"name": "database-1", "generation": 1}, "spec": {"replicas": 1, "selector": {}, "serviceName": "database", "template": {}}, "status": status})).unwrap()
        };
        assert!(set_rolled_out(&set(
            json!({"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1, "currentRevision": "a", "updateRevision": "a"})
        )));
        assert!(!set_rolled_out(&set(
            json!({"observedGeneration": 1, "replicas": 1, "readyReplicas": 0, "updatedReplicas": 1, "currentRevision": "a", "updateRevision": "a"})
        )));
        assert!(!set_rolled_out(&set(
            json!({"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1, "currentRevision": "a", "updateRevision": "b"})
        )));
        assert!(!set_rolled_out(&set(
            json!({"observedGeneration": 0, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1, "currentRevision": "a", "updateRevision": "a"})
        )));
    }
}
