//! Starting an environment's Jobs, and reading a seed's SQL files for its ConfigMap: from the
//! head commit, only when the Job is about to be created (a commit's files cannot change, and
//! a seed runs once per database), each held to the seed's bound.

use super::{Engine, ReconcileError};
use crate::cluster::jobs::JobFiles;
use crate::forge::FileBytes;
use crate::kinds::Kind;
use crate::model::{PullRequest, short_sha};
use crate::render::{Manifest, Ownership};
use crate::spec::{EnvironmentSpec, MAX_SEED_SQL_BYTES, SeedSpec};
use std::collections::BTreeMap;

impl Engine {
    /// Creates the rendered Jobs that are not there yet, once their database is ready (the
    /// watch brings the reconcile that starts them). `Err(reason)` inside: the seed's files
    /// cannot be used, and no retry mends that; the environment fails with the reason.
    pub(super) async fn start_jobs(
        &self,
        pr: &PullRequest,
        owner: &Ownership,
        spec: &EnvironmentSpec,
        manifests: &[Manifest],
    ) -> Result<Result<(), String>, ReconcileError> {
        let jobs: Vec<&Manifest> = manifests.iter().filter(|m| m.kind == Kind::Job).collect();
        let Some(to_start) = self.cluster.jobs_to_start(owner, &jobs).await? else {
            return Ok(Ok(()));
        };
        let seed = spec.database.as_ref().and_then(|d| d.seed.as_ref());
        for job in to_start {
            let files = match seed.filter(|s| s.job == job.name) {
                Some(seed) if seed.config_map.is_some() => match self.seed_files(pr, seed).await? {
                    Ok(files) => Some(files),
                    Err(reason) => return Ok(Err(reason)),
                },
                _ => None,
            };
            self.cluster.start_job(owner, job, files).await?;
        }
        Ok(Ok(()))
    }

    /// The seed's SQL files at the head commit, for its ConfigMap, or why they cannot be used,
    /// addressed to the pull request's author.
    async fn seed_files(&self, pr: &PullRequest, seed: &SeedSpec) -> Result<Result<JobFiles, String>, ReconcileError> {
        let short = short_sha(&pr.head_sha.0);
        let mut data = BTreeMap::new();
        let mut total = 0usize;
        for (i, file) in seed.sql.iter().enumerate() {
            let field = format!(".preview.yaml: database.seed.sql[{i}]: {}", file.path);
            let left = MAX_SEED_SQL_BYTES - total;
            let fetched = self.forge.fetch_file(&pr.repo, &pr.head_sha, &file.path, left).await;
            let bytes = match fetched {
                Ok(Some(FileBytes::Within(bytes))) => bytes,
                Ok(Some(FileBytes::TooLarge { size })) => {
                    let size = size.map(|s| format!(" ({s} bytes)")).unwrap_or_default();
                    return Ok(Err(format!(
                        "{field}: too large{size}; a seed's SQL files may hold {} KiB in all, the rest being {left} bytes",
                        MAX_SEED_SQL_BYTES / 1024
                    )));
                }
                Ok(None) => return Ok(Err(format!("{field}: no such file at {short}"))),
                Err(error) if error.permanent => return Ok(Err(format!("{field}: could not be read: {error}"))),
                Err(error) => return Err(ReconcileError::SeedSource(error)),
            };
            total += bytes.len();
            let Ok(text) = String::from_utf8(bytes) else {
                return Ok(Err(format!("{field}: is not UTF-8 text")));
            };
            data.insert(file.key.clone(), text);
        }
        let config_map = seed.config_map.clone().unwrap_or_default();
        tracing::info!(repo = %pr.repo.full_name(), head_sha = %pr.head_sha, files = data.len(), bytes = total, "read the seed's SQL files");
        Ok(Ok(JobFiles { config_map, data }))
    }
}
