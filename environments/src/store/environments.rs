//! Environments and their history. Every change of state is written together with a transition
//! row (time, head SHA, reason) in the same transaction.

use super::{Backend, Store, StoreError, begin_write, with_pool};
use crate::model::{Cause, CommitSha, EnvironmentState, InstallationId, PrNumber, PullRequest, RepoId};
use crate::time::{Millis, now_ms};

/// Queues a report of environment `$environment` inside transaction `$tx`, unless one is already
/// waiting: the outbox through which every change reaches the pull request. Written in the same
/// transaction as the change, so no change goes unreported after a crash.
macro_rules! queue_report {
    ($tx:ident, $environment:expr, $at:expr) => {
        super::kinds::insert_job!(&mut *$tx, &super::NewJob::report($environment), $at)
            .map_err(StoreError::query("queueing a report"))?
    };
}
pub(super) use queue_report;

/// Appends one row to an environment's history inside transaction `$tx` (either backend), and
/// queues a report of the change.
macro_rules! insert_transition {
    ($tx:ident, $environment:expr, $from:expr, $to:expr, $head_sha:expr, $reason:expr, $at:expr, $cause:expr) => {
        queue_report!($tx, $environment, $at);
        // The environment's requests at this moment travel with the row (usage is computed
        // from the history alone).
        sqlx::query(
            "INSERT INTO environment_transitions (environment_id, from_state, to_state, head_sha, reason, at, \
                requests_cpu_millis, requests_memory_bytes, actor) \
             SELECT $1, $2, $3, $4, $5, $6, requests_cpu_millis, requests_memory_bytes, $7 FROM environments WHERE id = $1",
        )
        .bind($environment)
        .bind($from)
        .bind($to.as_str())
        .bind($head_sha)
        .bind($reason)
        .bind($at)
        .bind($cause.to_string())
        .execute(&mut *$tx)
        .await
        .map_err(StoreError::query("recording an environment transition"))?
    };
}

/// The live states ([`EnvironmentState::is_live`]) as an SQL list: an environment in one of them
/// keeps its admission slot; every write of another state gives it back.
pub(super) const LIVE_STATES: &str = "('Pending', 'Provisioning', 'Ready', 'Sleeping', 'Failed')";

/// A stored environment.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EnvironmentRecord {
    pub id: i64,
    pub repo_id: i64,
    pub repo_owner: String,
    pub repo_name: String,
    pub pr_number: i64,
    pub head_sha: String,
    pub head_branch: String,
    pub author: String,
    pub state: String,
    pub reason: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub expires_at: Option<Millis>,
}

impl EnvironmentRecord {
    /// The state column as the model's type. Only previewd writes it, so anything else means
    /// the database was edited by hand.
    pub fn state(&self) -> Result<EnvironmentState, StoreError> {
        EnvironmentState::parse(&self.state)
            .ok_or_else(|| StoreError::Corrupt(format!("environment {} has unknown state `{}`", self.id, self.state)))
    }
}

/// One change of an environment's state.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TransitionRecord {
    pub from_state: Option<String>,
    pub to_state: String,
    pub head_sha: String,
    pub reason: Option<String>,
    pub at: Millis,
    /// Who or what caused it ([`Cause`]'s text); `None` for rows from before it was recorded.
    pub actor: Option<String>,
}

const ENVIRONMENT_COLUMNS: &str = "id, repo_id, repo_owner, repo_name, pr_number, head_sha, head_branch, author, \
     state, reason, created_at, updated_at, expires_at";

impl Store {
    /// The environment of a pull request, if one was ever recorded.
    pub async fn environment(&self, repo: RepoId, pr: PrNumber) -> Result<Option<EnvironmentRecord>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ENVIRONMENT_COLUMNS} FROM environments WHERE repo_id = $1 AND pr_number = $2"
        )))
        .bind(repo.0)
        .bind(pr.0)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::query("reading an environment")))
    }

    /// All environments, newest first.
    pub async fn environments(&self) -> Result<Vec<EnvironmentRecord>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ENVIRONMENT_COLUMNS} FROM environments ORDER BY updated_at DESC, id DESC"
        )))
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("listing environments")))
    }

    /// The transitions of an environment, oldest first.
    pub async fn transitions(&self, environment: i64) -> Result<Vec<TransitionRecord>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(
            "SELECT from_state, to_state, head_sha, reason, at, actor FROM environment_transitions \
             WHERE environment_id = $1 ORDER BY id",
        )
        .bind(environment)
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("reading environment history")))
    }

    /// Writes the pull request's details and moves its environment to `to` (creating it if
    /// new), recording the transition as caused by `cause`. The pull request's head SHA
    /// replaces the stored one.
    pub async fn record_environment(
        &self,
        pr: &PullRequest,
        to: EnvironmentState,
        reason: Option<&str>,
        cause: &Cause,
    ) -> Result<EnvironmentRecord, StoreError> {
        let now = now_ms();
        macro_rules! record {
            ($kind:tt $pool:expr) => {{
                let mut tx = begin_write!($kind $pool, "recording an environment")?;
                let before: Option<(i64, String)> = sqlx::query_as(
                    "SELECT id, state FROM environments WHERE repo_id = $1 AND pr_number = $2",
                )
                .bind(pr.repo.id.0)
                .bind(pr.number.0)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::query("reading an environment"))?;
                // Every writer of desired state comes through here or `transition`: both hold
                // to the state machine. A new environment starts as the planner creates one.
                let allowed = match &before {
                    Some((_, from)) => EnvironmentState::parse(from).is_some_and(|from| from.can_become(to)),
                    None => matches!(to, EnvironmentState::Pending | EnvironmentState::Rejected),
                };
                if !allowed {
                    return Err(StoreError::ForbiddenTransition {
                        pull_request: format!("{}#{}", pr.repo.full_name(), pr.number),
                        from: before.map_or_else(|| "nothing".to_owned(), |(_, from)| from),
                        to: to.as_str().to_owned(),
                    });
                }
                // An event that changes neither the state nor the commit (a label, an edit)
                // keeps a failed environment's scheduled retry; any other starts the count anew.
                const UNCHANGED: &str = "excluded.state = environments.state AND excluded.head_sha = environments.head_sha";
                let record: EnvironmentRecord = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO environments (repo_id, repo_owner, repo_name, pr_number, head_sha, head_branch, author, \
                        state, reason, created_at, updated_at, from_fork, labels, draft) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12, $13) \
                     ON CONFLICT (repo_id, pr_number) DO UPDATE SET repo_owner = excluded.repo_owner, \
                        repo_name = excluded.repo_name, head_sha = excluded.head_sha, head_branch = excluded.head_branch, \
                        author = excluded.author, state = excluded.state, reason = excluded.reason, \
                        updated_at = excluded.updated_at, from_fork = excluded.from_fork, \
                        labels = excluded.labels, draft = excluded.draft, \
                        admitted_at = CASE WHEN excluded.state IN {LIVE_STATES} THEN environments.admitted_at END, \
                        waiting_since = CASE WHEN excluded.state IN {LIVE_STATES} THEN environments.waiting_since END, \
                        retries = CASE WHEN {UNCHANGED} THEN environments.retries ELSE 0 END, \
                        retry_at = CASE WHEN {UNCHANGED} THEN environments.retry_at END \
                     RETURNING {ENVIRONMENT_COLUMNS}"
                )))
                .bind(pr.repo.id.0)
                .bind(&pr.repo.owner)
                .bind(&pr.repo.name)
                .bind(pr.number.0)
                .bind(&pr.head_sha.0)
                .bind(&pr.head_branch)
                .bind(&pr.author)
                .bind(to.as_str())
                .bind(reason)
                .bind(now)
                .bind(pr.from_fork)
                .bind(serde_json::to_string(&pr.labels).unwrap_or_else(|_| "[]".to_owned()))
                .bind(pr.draft)
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::query("writing an environment"))?;
                insert_transition!(tx, record.id, before.map(|(_, state)| state), to, &pr.head_sha.0, reason, now, cause);
                tx.commit().await.map_err(StoreError::query("committing an environment"))?;
                Ok(record)
            }};
        }
        match &self.backend {
            Backend::Sqlite(pool) => record!(sqlite pool),
            Backend::Postgres(pool) => record!(postgres pool),
        }
    }
}

/// Repositories whose environments are looked up together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Repository(RepoId),
    /// Every repository previewd knows of that installation.
    Installation(InstallationId),
}

/// The columns the reconciler works with.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReconcileRecord {
    pub id: i64,
    pub repo_id: i64,
    pub repo_owner: String,
    pub repo_name: String,
    pub pr_number: i64,
    pub head_sha: String,
    pub head_branch: String,
    pub author: String,
    pub state: String,
    pub reason: Option<String>,
    pub name: Option<String>,
    pub url: Option<String>,
    pub expires_at: Option<Millis>,
    pub last_activity_at: Option<Millis>,
    /// When the warning before the current expiry was given.
    pub warned_at: Option<Millis>,
    pub from_fork: bool,
    /// The pull request's labels as a JSON array of names.
    pub labels: String,
    pub draft: bool,
    /// The head SHA the environment last became Ready with.
    pub deployed_sha: Option<String>,
    /// A fork's head SHA approved by someone with write access.
    pub approved_sha: Option<String>,
    /// Someone asked for the environment with `/preview deploy`.
    pub requested: bool,
    /// The outcome of the last command, for the pull request comment.
    pub note: Option<String>,
    /// When the rollout in progress fails if not complete (milliseconds since the epoch).
    pub rollout_deadline: Option<Millis>,
    /// The commit whose `.preview.yaml` is `config_text`.
    pub config_sha: Option<String>,
    pub config_text: Option<String>,
    /// The hostname whose DNS record previewd published.
    pub published_host: Option<String>,
    /// When it was given its admission slot; `None` while it holds none (see `store::admission`).
    pub admitted_at: Option<Millis>,
    /// When it joined the queue for a slot, while it waits.
    pub waiting_since: Option<Millis>,
    /// Retries of a failed rollout since the last Ready or event (see `Engine::retry_later`).
    pub retries: i64,
    /// When the next retry of this Failed environment is due, if one is scheduled.
    pub retry_at: Option<Millis>,
    /// Counts `/preview reset-db`: each generation is a new database, seeded once.
    pub database_generation: i64,
    /// The public services' URLs as JSON (see [`service_urls`]).
    pub service_urls: Option<String>,
    /// Its workloads are scaled to zero: Sleeping, or waking from it (see `store::sleep`).
    pub asleep: bool,
    /// How long it may go without a visit or a push before it sleeps; `None`: never.
    pub sleep_after_ms: Option<i64>,
    /// The last visit let through the forward-authentication endpoint.
    pub last_visit_at: Option<Millis>,
}

/// The public services' (name, URL) from their stored JSON object, in name order; empty before
/// the environment was Ready.
pub fn service_urls(stored: Option<&str>) -> Vec<(String, String)> {
    let map: std::collections::BTreeMap<String, String> =
        stored.and_then(|text| serde_json::from_str(text).ok()).unwrap_or_default();
    map.into_iter().collect()
}

impl ReconcileRecord {
    /// The pull request as last recorded.
    pub fn pull_request(&self) -> PullRequest {
        PullRequest {
            repo: crate::model::Repo {
                id: RepoId(self.repo_id),
                owner: self.repo_owner.clone(),
                name: self.repo_name.clone(),
            },
            number: PrNumber(self.pr_number),
            head_sha: crate::model::CommitSha(self.head_sha.clone()),
            head_branch: self.head_branch.clone(),
            author: self.author.clone(),
            from_fork: self.from_fork,
            draft: self.draft,
            labels: serde_json::from_str(&self.labels).unwrap_or_default(),
        }
    }

    /// Whether the fork's current head SHA was approved.
    pub fn approved(&self) -> bool {
        self.approved_sha.as_deref() == Some(self.head_sha.as_str())
    }

    pub fn state(&self) -> Result<EnvironmentState, StoreError> {
        EnvironmentState::parse(&self.state)
            .ok_or_else(|| StoreError::Corrupt(format!("environment {} has unknown state `{}`", self.id, self.state)))
    }
}

pub(super) const RECONCILE_COLUMNS: &str = "id, repo_id, repo_owner, repo_name, pr_number, head_sha, head_branch, author, state, \
     reason, name, url, expires_at, last_activity_at, warned_at, from_fork, labels, draft, deployed_sha, approved_sha, requested, \
     note, rollout_deadline, config_sha, config_text, published_host, admitted_at, waiting_since, retries, retry_at, database_generation, \
     service_urls, asleep, sleep_after_ms, last_visit_at";

impl Store {
    /// The environment as the reconciler sees it.
    pub async fn reconcile_record(&self, id: i64) -> Result<Option<ReconcileRecord>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RECONCILE_COLUMNS} FROM environments WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::query("reading an environment")))
    }

    /// Environments in `states`, oldest first.
    pub async fn environments_in(&self, states: &[EnvironmentState]) -> Result<Vec<ReconcileRecord>, StoreError> {
        let list: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
        with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RECONCILE_COLUMNS} FROM environments WHERE state IN ({}) ORDER BY id",
            list.join(", ")
        )))
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("listing environments by state")))
    }

    /// The live environments (`Pending` to `Failed`) of the repositories `of` names: what an
    /// uninstalled App or a removed repository leaves behind.
    pub async fn live_environments_of(&self, of: Scope) -> Result<Vec<ReconcileRecord>, StoreError> {
        let (repo, installation) = match of {
            Scope::Repository(repo) => (Some(repo.0), None),
            Scope::Installation(installation) => (None, Some(installation.0)),
        };
        with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RECONCILE_COLUMNS} FROM environments WHERE state IN {LIVE_STATES} \
             AND (repo_id = $1 OR repo_id IN (SELECT repo_id FROM repositories WHERE installation_id = $2)) ORDER BY id"
        )))
        .bind(repo)
        .bind(installation)
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("listing the environments of an installation")))
    }

    /// The environment of a pull request as the reconciler sees it.
    pub async fn reconcile_record_for(
        &self,
        repo: RepoId,
        pr: PrNumber,
    ) -> Result<Option<ReconcileRecord>, StoreError> {
        with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RECONCILE_COLUMNS} FROM environments WHERE repo_id = $1 AND pr_number = $2"
        )))
        .bind(repo.0)
        .bind(pr.0)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::query("reading an environment")))
    }

    /// Sets what commands decided about an environment (`None` leaves a field as it is) and
    /// reports it on the pull request.
    pub async fn set_command_state(
        &self,
        id: i64,
        requested: Option<bool>,
        approved_sha: Option<&CommitSha>,
        note: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        macro_rules! run {
            ($kind:tt $pool:expr) => {{
                let mut tx = begin_write!($kind $pool, "recording a command")?;
                sqlx::query(
                    "UPDATE environments SET requested = COALESCE($1, requested), \
                     approved_sha = COALESCE($2, approved_sha), note = COALESCE($3, note) WHERE id = $4",
                )
                .bind(requested)
                .bind(approved_sha.map(|s| s.0.as_str()))
                .bind(note)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::query("recording a command"))?;
                queue_report!(tx, id, now);
                tx.commit().await.map_err(StoreError::query("committing a command"))?;
                Ok(())
            }};
        }
        match &self.backend {
            Backend::Sqlite(pool) => run!(sqlite pool),
            Backend::Postgres(pool) => run!(postgres pool),
        }
    }

    /// Queues a report of environment `id` (a status request, a resync).
    pub async fn queue_report(&self, id: i64) -> Result<(), StoreError> {
        let now = now_ms();
        macro_rules! run {
            ($kind:tt $pool:expr) => {{
                let mut tx = begin_write!($kind $pool, "queueing a report")?;
                queue_report!(tx, id, now);
                tx.commit().await.map_err(StoreError::query("queueing a report"))?;
                Ok(())
            }};
        }
        match &self.backend {
            Backend::Sqlite(pool) => run!(sqlite pool),
            Backend::Postgres(pool) => run!(postgres pool),
        }
    }

    /// `expires_at` only ever moves the expiry later: a reconcile that read the environment
    /// before an extension was written must not undo it (activity resets it explicitly with
    /// [`Store::touch_environment`]).
    ///
    /// Moves environment `id` to `to` if its head SHA is still `head_sha` (a newer push since
    /// the reconcile began wins, and the reconciler runs again for it) and the state machine
    /// allows the move from its current state, recording the transition (caused by previewd:
    /// the engine is its only caller). Returns whether it moved.
    #[allow(clippy::too_many_arguments)]
    pub async fn transition(
        &self,
        id: i64,
        head_sha: &str,
        to: EnvironmentState,
        reason: Option<&str>,
        name: Option<&str>,
        url: Option<&str>,
        expires_at: Option<Millis>,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        macro_rules! run {
            ($kind:tt $pool:expr) => {{
                let mut tx = begin_write!($kind $pool, "changing an environment's state")?;
                let before: Option<(String, Option<String>, Option<String>, Option<Millis>)> = sqlx::query_as(
                    "SELECT state, reason, url, expires_at FROM environments WHERE id = $1 AND head_sha = $2",
                )
                .bind(id)
                .bind(head_sha)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::query("reading an environment"))?;
                let Some((from, old_reason, old_url, old_expiry)) = before else { return Ok(false) };
                // What the pull request shows changes only with these.
                let visible = old_reason.as_deref() != reason
                    || old_url.as_deref() != url
                    || expires_at.is_some_and(|at| old_expiry != Some(at));
                // An event may have changed the state since the reconcile read it (a `closed`
                // or `/preview destroy` while provisioning, a reopening while tearing down): a
                // move the state machine does not allow from there is not made, and the
                // reconciler reads the environment again.
                let current = EnvironmentState::parse(&from)
                    .ok_or_else(|| StoreError::Corrupt(format!("environment {id} has unknown state `{from}`")))?;
                if !current.can_become(to) {
                    return Ok(false);
                }
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE environments SET state = $1, reason = $2, name = COALESCE($3, name), url = $4, \
                     expires_at = CASE WHEN expires_at IS NULL OR $5 > expires_at THEN COALESCE($5, expires_at) \
                        ELSE expires_at END, updated_at = $6, \
                     deployed_sha = CASE WHEN $1 = 'Ready' THEN head_sha ELSE deployed_sha END, \
                     admitted_at = CASE WHEN $1 IN {LIVE_STATES} THEN admitted_at END, \
                     waiting_since = CASE WHEN $1 IN {LIVE_STATES} THEN waiting_since END, \
                     retries = CASE WHEN $1 = 'Ready' THEN 0 ELSE retries END, \
                     asleep = CASE WHEN $1 = 'Sleeping' THEN TRUE WHEN $1 IN ('Ready', 'Deleting', 'Deleted') THEN FALSE \
                        ELSE asleep END, \
                     retry_at = CASE WHEN $1 = 'Failed' THEN retry_at END WHERE id = $7"
                )))
                .bind(to.as_str())
                .bind(reason)
                .bind(name)
                .bind(url)
                .bind(expires_at)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::query("changing an environment's state"))?;
                if from != to.as_str() || old_reason.as_deref() != reason {
                    insert_transition!(tx, id, Some(&from), to, head_sha, reason, now, Cause::Previewd);
                } else if visible {
                    queue_report!(tx, id, now);
                }
                tx.commit().await.map_err(StoreError::query("committing an environment transition"))?;
                Ok(true)
            }};
        }
        match &self.backend {
            Backend::Sqlite(pool) => run!(sqlite pool),
            Backend::Postgres(pool) => run!(postgres pool),
        }
    }

    /// Marks activity (open, push, command): TTL counts from now, and a new warning is due.
    ///
    /// The reconcile computes the new expiry (the later of activity plus TTL and the current
    /// one); a current expiry still ahead is kept, so a push never shortens an extension
    /// (`/preview extend`), and one already past is cleared, so that the periodic pass does not
    /// tear down an environment that has just been pushed to before its reconcile runs.
    pub async fn touch_environment(&self, id: i64) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query(
            "UPDATE environments SET last_activity_at = $1, \
             expires_at = CASE WHEN expires_at > $1 THEN expires_at END, warned_at = NULL WHERE id = $2",
        )
        .bind(now_ms())
        .bind(id)
        .execute(pool)
        .await
        .map(drop)
        .map_err(StoreError::query("recording activity")))
    }

    /// Records what the environment asks of the cluster from now on (its rollout starts with
    /// these requests); the next transition carries them into the history.
    pub async fn set_requests(&self, id: i64, cpu_millis: i64, memory_bytes: i64) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query(
            "UPDATE environments SET requests_cpu_millis = $1, requests_memory_bytes = $2 WHERE id = $3",
        )
        .bind(cpu_millis)
        .bind(memory_bytes)
        .bind(id)
        .execute(pool)
        .await
        .map(drop)
        .map_err(StoreError::query("recording an environment's requests")))
    }
}

#[cfg(test)]
mod tests {
    use super::LIVE_STATES;
    use crate::model::EnvironmentState;

    /// The SQL that keeps or gives back admission slots names exactly the live states.
    #[test]
    fn the_sql_list_of_live_states_is_the_models() {
        let live: Vec<String> =
            EnvironmentState::ALL.into_iter().filter(|s| s.is_live()).map(|s| format!("'{}'", s.as_str())).collect();
        assert_eq!(LIVE_STATES, format!("({})", live.join(", ")));
    }
}
