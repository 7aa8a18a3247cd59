//! Jobs, which run once: created (never applied) when their database is ready, and the
//! ConfigMap of a seed's SQL files, created with its Job and owned by it.

use super::{Cluster, ClusterError, FIELD_MANAGER, rollout};
use crate::kinds::Kind;
use crate::render::{Manifest, Ownership};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use std::collections::{BTreeMap, BTreeSet};

/// Labels the ConfigMap of a seed's SQL files with its Job. It carries no ownership labels:
/// it is not a template object, so pruning leaves it; the garbage collector deletes it with its
/// Job.
pub const SEED_JOB_LABEL: &str = "previewd.dev/seed-job";

/// What a Job needs besides its manifest: the ConfigMap it mounts, with its data.
pub struct JobFiles {
    pub config_map: String,
    pub data: BTreeMap<String, String>,
}

impl Cluster {
    /// The rendered Jobs that do not exist yet, to create with [`Cluster::start_job`]; `None`
    /// while a StatefulSet of the namespace has not rolled out (the seed needs its database).
    /// A Job that exists is left as it is, whatever it renders to now: it ran (or runs) once,
    /// and a Job's pod template cannot change. A new run is a new name (the database's next
    /// generation).
    pub async fn jobs_to_start<'m>(
        &self,
        owner: &Ownership,
        jobs: &[&'m Manifest],
    ) -> Result<Option<Vec<&'m Manifest>>, ClusterError> {
        if jobs.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let namespace = &owner.environment;
        let sets: Api<StatefulSet> = Api::namespaced(self.client.clone(), namespace);
        let sets = sets
            .list(&ListParams::default())
            .await
            .map_err(ClusterError::from_kube(format!("list statefulsets in {namespace}")))?;
        if !sets.items.iter().all(rollout::set_rolled_out) {
            return Ok(None);
        }
        let existing: BTreeSet<String> = self
            .api(Kind::Job, namespace)
            .list_metadata(&ListParams::default().labels(&owner.selector()))
            .await
            .map_err(ClusterError::from_kube(format!("list jobs in {namespace}")))?
            .items
            .into_iter()
            .filter_map(|j| j.metadata.name)
            .collect();
        Ok(Some(jobs.iter().copied().filter(|j| !existing.contains(&j.name)).collect()))
    }

    /// Creates `job`, and first the ConfigMap of its `files`, which is then made the Job's
    /// dependent. The ConfigMap comes first so the Job's pod never waits for its volume; if
    /// previewd stops between the two, the ConfigMap stays (ownerless, until the namespace goes)
    /// and the next reconcile writes it again. A Job created meanwhile (409) is left as it is.
    pub async fn start_job(
        &self,
        owner: &Ownership,
        job: &Manifest,
        files: Option<JobFiles>,
    ) -> Result<(), ClusterError> {
        let namespace = &owner.environment;
        let action = format!("create job {namespace}/{}", job.name);
        if let Some(files) = &files {
            self.apply_job_files(namespace, &job.name, files, None).await?;
        }
        let object: DynamicObject = serde_json::from_value(job.object.clone())
            .map_err(|e| ClusterError::Rejected { action: action.clone(), message: e.to_string() })?;
        let params = PostParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..Default::default() };
        let created = match self.api(Kind::Job, namespace).create(&params, &object).await {
            Ok(created) => created,
            Err(kube::Error::Api(status)) if status.code == 409 => return Ok(()),
            Err(error) => return Err(ClusterError::from_kube(action)(error)),
        };
        tracing::info!(namespace, job = job.name, "started a job");
        if let (Some(files), Some(uid)) = (&files, created.metadata.uid) {
            let owner = OwnerReference {
                api_version: "batch/v1".to_owned(),
                kind: "Job".to_owned(),
                name: job.name.clone(),
                uid,
                ..Default::default()
            };
            self.apply_job_files(namespace, &job.name, files, Some(owner)).await?;
        }
        Ok(())
    }

    async fn apply_job_files(
        &self,
        namespace: &str,
        job: &str,
        files: &JobFiles,
        owner: Option<OwnerReference>,
    ) -> Result<(), ClusterError> {
        let config_map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(files.config_map.clone()),
                namespace: Some(namespace.to_owned()),
                labels: Some(BTreeMap::from([(SEED_JOB_LABEL.to_owned(), job.to_owned())])),
                owner_references: owner.map(|o| vec![o]),
                ..Default::default()
            },
            data: Some(files.data.clone()),
            ..Default::default()
        };
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        api.patch(&files.config_map, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&config_map))
            .await
            .map_err(ClusterError::from_kube(format!("apply configmap {namespace}/{}", files.config_map)))?;
        Ok(())
    }
}
