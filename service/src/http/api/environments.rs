//! `/api/v1/environments`: list, show, and act on environments.

use super::{ApiError, Caller, Page};
use crate::http::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use previewd_environments::actions::{self, Action, ActionError, Actor, Done};
use previewd_environments::hints;
use previewd_environments::model::EnvironmentState;
use previewd_environments::reconcile::Engine;
use previewd_environments::render::Ownership;
use previewd_environments::store::{
    EnvironmentFilter, EnvironmentSummary, NewAuditEntry, ReconcileRecord, TokenScope, TransitionRecord,
};
use previewd_environments::time::{parse_rfc3339, rfc3339};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// An environment as the API shows it. Times are RFC 3339 UTC.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnvironmentView {
    pub id: i64,
    /// `owner/name`
    pub repository: String,
    pub repository_id: i64,
    pub pull_request: PullRequestView,
    /// `Pending`, `Provisioning`, `Ready`, `Failed`, `Deleting`, `Deleted` or `Rejected`.
    #[schema(value_type = String, example = "Ready")]
    pub state: EnvironmentState,
    /// Why it is in that state (a failure, a refusal, what a rollout waits for).
    pub reason: Option<String>,
    /// The namespace.
    pub name: Option<String>,
    /// The first public service's URL, the environment's own.
    pub url: Option<String>,
    /// Every public service and its URL, by name (empty until the
    /// environment was Ready).
    pub services: Vec<ServiceUrl>,
    /// Whether it has a database (`reset-db` replaces it).
    pub has_database: bool,
    /// The head commit previewd is asked to deploy.
    pub head_sha: String,
    /// The commit the environment last became Ready with.
    pub deployed_sha: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub expires_at: Option<String>,
    /// When the warning before the current expiry was posted.
    pub expiry_warned_at: Option<String>,
    /// The outcome of the last command or API action, as the pull request shows it.
    pub note: Option<String>,
}

/// A public service of an environment.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceUrl {
    pub name: String,
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PullRequestView {
    pub number: i64,
    /// As GitHub last named it; `null` until a delivery did.
    pub title: Option<String>,
    pub author: String,
    pub head_branch: String,
    pub from_fork: bool,
}

impl From<EnvironmentSummary> for EnvironmentView {
    fn from(e: EnvironmentSummary) -> Self {
        let state = EnvironmentState::parse(&e.state).unwrap_or(EnvironmentState::Failed);
        let services = e.urls().into_iter().map(|(name, url)| ServiceUrl { name, url }).collect();
        EnvironmentView {
            services,
            has_database: e.has_database,
            id: e.id,
            repository: format!("{}/{}", e.repo_owner, e.repo_name),
            repository_id: e.repo_id,
            pull_request: PullRequestView {
                number: e.pr_number,
                title: e.title,
                author: e.author,
                head_branch: e.head_branch,
                from_fork: e.from_fork,
            },
            state,
            reason: e.reason,
            name: e.name,
            url: e.url,
            head_sha: e.head_sha,
            deployed_sha: e.deployed_sha,
            created_at: rfc3339(e.created_at),
            updated_at: rfc3339(e.updated_at),
            expires_at: e.expires_at.map(rfc3339),
            expiry_warned_at: e.warned_at.map(rfc3339),
            note: e.note,
        }
    }
}

/// One page of environments.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnvironmentPage {
    pub environments: Vec<EnvironmentView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// Reads `key` into `filter` if it is one of the filters the list and the event stream share
/// (`repository`, `owner`, `state`, `author`); `false` for another key.
pub(crate) fn filter_param(filter: &mut EnvironmentFilter, key: &str, value: &str) -> Result<bool, ApiError> {
    let bad = |problem: &str| ApiError::field(StatusCode::BAD_REQUEST, key, problem);
    match key {
        "repository" => {
            let (owner, name) = value
                .split_once('/')
                .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
                .ok_or_else(|| bad("must be `owner/name`"))?;
            filter.repository = Some((owner.to_owned(), name.to_owned()));
        }
        "owner" => filter.owner = Some(value.to_owned()),
        "author" => filter.author = Some(value.to_owned()),
        "state" => {
            let names: Vec<&str> = EnvironmentState::ALL.iter().map(|s| s.as_str()).collect();
            filter.state = Some(
                EnvironmentState::parse(value).ok_or_else(|| bad(&format!("must be one of {}", names.join(", "))))?,
            );
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// List environments, newest first.
#[utoipa::path(get, path = "/api/v1/environments", operation_id = "listEnvironments", tag = "environments", security(("bearer" = [])),
    params(
        ("repository" = Option<String>, Query, description = "`owner/name`"),
        ("owner" = Option<String>, Query, description = "The repositories' owner"),
        ("state" = Option<String>, Query, description = "`Pending`, `Provisioning`, `Ready`, `Failed`, `Deleting`, `Deleted` or `Rejected`"),
        ("author" = Option<String>, Query, description = "The pull request's author"),
        ("updated_since" = Option<String>, Query, description = "Changed at or after this RFC 3339 UTC time"),
        ("limit" = Option<u32>, Query, description = "1 to 100 (default 100)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "One page", body = EnvironmentPage),
        (status = 400, description = "A parameter cannot be used; the message names it", body = ApiError),
        (status = 401, description = "No token, or an unknown or revoked one", body = ApiError),
        (status = 403, description = "The token's scope does not allow this", body = ApiError),
        (status = 503, description = "The database is not answering", body = ApiError)
    ))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<EnvironmentPage>, ApiError> {
    caller.require(TokenScope::Read)?;
    let mut filter = EnvironmentFilter::default();
    let mut page = Page::default();
    for (key, value) in form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes()) {
        if key == "updated_since" {
            filter.updated_since = Some(parse_rfc3339(&value).map_err(|_| {
                ApiError::field(StatusCode::BAD_REQUEST, &key, "must be an RFC 3339 UTC time like 2026-12-07T05:30:00Z")
            })?);
        } else if !filter_param(&mut filter, &key, &value)? {
            page.take(&key, &value)?;
        }
    }
    let rows = app.store.list_environments(&filter, page.before, page.limit + 1).await?;
    let (environments, next_cursor) = page.split(rows, |e| e.id);
    Ok(Json(EnvironmentPage {
        environments: environments.into_iter().map(EnvironmentView::from).collect(),
        next_cursor,
    }))
}

/// One change of state.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransitionView {
    pub from: Option<String>,
    pub to: String,
    pub head_sha: String,
    pub reason: Option<String>,
    pub at: String,
    /// Who or what caused it: `pull_request.synchronize by @dev`, `command by @dev`,
    /// `token ops via the API`, `previewd` (its own step: a rollout, a retry, an expiry). Absent
    /// for transitions recorded before previewd kept it.
    pub actor: Option<String>,
}

impl From<TransitionRecord> for TransitionView {
    fn from(t: TransitionRecord) -> Self {
        TransitionView {
            from: t.from_state,
            to: t.to_state,
            head_sha: t.head_sha,
            reason: t.reason,
            at: rfc3339(t.at),
            actor: t.actor,
        }
    }
}

/// The last time the environment failed, with what to do about it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FailureView {
    pub reason: String,
    pub head_sha: String,
    pub at: String,
    /// What kind of failure it is (`image_pull`, `quota`, `admission`, `crash_loop`, `timeout`,
    /// `dns`, `config`, `template`), when previewd recognises it.
    pub cause: Option<String>,
    /// What the pull request's author or the platform team can do about it.
    pub hint: Option<String>,
}

/// An environment with its history.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnvironmentDetail {
    #[serde(flatten)]
    pub environment: EnvironmentView,
    /// Oldest first, as far back as retention keeps them.
    pub transitions: Vec<TransitionView>,
    pub last_failure: Option<FailureView>,
    /// The objects previewd applied in the environment's namespace, as the cluster has them
    /// now (the namespace first; Secrets are not read, by design). Empty when the namespace
    /// does not exist, or when they could not be read (`objects_error` then says why).
    pub objects: Vec<ObjectView>,
    /// Why the objects could not be read now (the cluster refused or did not answer).
    pub objects_error: Option<String>,
}

/// One object of an environment, as the cluster has it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ObjectView {
    /// `Namespace`, `Deployment`, `Service`, …
    pub kind: String,
    pub name: String,
    /// The namespace's phase; a Deployment's replicas and conditions; else `present`.
    pub status: String,
    /// For the namespace and Deployments: `Active`; rolled out completely. Absent for kinds
    /// without such a state.
    pub ready: Option<bool>,
}

/// How long `GET /environments/{id}` waits for the cluster before answering without objects.
const INVENTORY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The environment's objects, or why they could not be read. Finished environments have none
/// (their namespace is gone), and neither has a previewd without a policy (no cluster).
async fn objects(app: &AppState, env: &EnvironmentSummary) -> (Vec<ObjectView>, Option<String>) {
    let finished = [EnvironmentState::Deleted.as_str(), EnvironmentState::Rejected.as_str()];
    let (Some(engine), Some(namespace)) = (&app.engine, &env.name) else { return (Vec::new(), None) };
    if finished.contains(&env.state.as_str()) {
        return (Vec::new(), None);
    }
    let owner = Ownership {
        instance: engine.settings.instance.clone(),
        environment: namespace.clone(),
        repo_id: env.repo_id,
        pr: env.pr_number,
    };
    match tokio::time::timeout(INVENTORY_TIMEOUT, engine.cluster.inventory(&owner)).await {
        Ok(Ok(objects)) => (
            objects
                .into_iter()
                .map(|o| ObjectView { kind: o.kind.name().to_owned(), name: o.name, status: o.status, ready: o.ready })
                .collect(),
            None,
        ),
        Ok(Err(error)) => {
            tracing::warn!(environment = env.id, error = %error, "cannot read an environment's objects");
            (Vec::new(), Some(error.to_string()))
        }
        Err(_) => (Vec::new(), Some(format!("the cluster did not answer within {} s", INVENTORY_TIMEOUT.as_secs()))),
    }
}

pub(crate) fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        ApiError::field(StatusCode::BAD_REQUEST, "id", "must be a positive integer (an environment's `id`)")
    })
}

async fn summary(app: &AppState, id: i64) -> Result<EnvironmentSummary, ApiError> {
    app.store.environment_summary(id).await?.ok_or_else(|| ApiError::not_found(format!("there is no environment {id}")))
}

/// One environment with its history and last failure.
#[utoipa::path(get, path = "/api/v1/environments/{id}", operation_id = "getEnvironment", tag = "environments", security(("bearer" = [])), params(("id" = i64, Path, description = "The environment's id")),
    responses(
        (status = 200, description = "The environment", body = EnvironmentDetail),
        (status = 404, description = "No such environment", body = ApiError),
        (status = 400, description = "A parameter cannot be used; the message names it", body = ApiError),
        (status = 401, description = "No token, or an unknown or revoked one", body = ApiError),
        (status = 403, description = "The token's scope does not allow this", body = ApiError),
        (status = 503, description = "The database is not answering", body = ApiError)
    ))]
pub async fn show(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<EnvironmentDetail>, ApiError> {
    caller.require(TokenScope::Read)?;
    Ok(Json(detail(&app, parse_id(&id)?).await?))
}

/// Environment `id` with its history, last failure and objects (the API's and the
/// dashboard's view).
pub(crate) async fn detail(app: &AppState, id: i64) -> Result<EnvironmentDetail, ApiError> {
    let environment = summary(app, id).await?;
    let transitions = app.store.transitions(id).await?;
    let last_failure = transitions.iter().rev().find(|t| t.to_state == EnvironmentState::Failed.as_str()).map(|t| {
        let reason = t.reason.clone().unwrap_or_default();
        let hint = hints::hint(&reason);
        FailureView {
            cause: hint.map(|h| h.cause.to_owned()),
            hint: hint.map(|h| h.what_to_do.to_owned()),
            reason,
            head_sha: t.head_sha.clone(),
            at: rfc3339(t.at),
        }
    });
    let (objects, objects_error) = objects(app, &environment).await;
    Ok(EnvironmentDetail {
        environment: environment.into(),
        transitions: transitions.into_iter().map(TransitionView::from).collect(),
        last_failure,
        objects,
        objects_error,
    })
}

/// The body of `POST .../extend`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendBody {
    /// How much later, like `2h`, `90m` or `1d`.
    duration: String,
}

/// Move an environment's expiry later, within the policy's `ttl.max`.
#[utoipa::path(post, path = "/api/v1/environments/{id}/extend", operation_id = "extendEnvironment", tag = "actions", security(("bearer" = [])), params(("id" = i64, Path, description = "The environment's id")),
    request_body = ExtendBody,
    responses(
        (status = 200, description = "Extended", body = ActionAnswer),
        (status = 422, description = "The duration does not read, or is longer than `ttl.max`", body = ApiError),
        (status = 404, description = "No such environment", body = ApiError),
        (status = 409, description = "The environment is not live, or this previewd has no policy", body = ApiError),
        (status = 400, description = "A parameter cannot be used; the message names it", body = ApiError),
        (status = 401, description = "No token, or an unknown or revoked one", body = ApiError),
        (status = 403, description = "The token's scope does not allow this", body = ApiError),
        (status = 503, description = "The database is not answering", body = ApiError)
    ))]
pub async fn extend(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: ExtendBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::field(StatusCode::BAD_REQUEST, "body", format!("must be JSON like {{\"duration\": \"2h\"}} ({e})"))
    })?;
    let by = humantime::parse_duration(body.duration.trim()).ok().filter(|d| !d.is_zero()).ok_or_else(|| {
        ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "duration",
            "must be a duration longer than zero, like `2h`, `90m` or `1d`",
        )
    })?;
    token_action(app, caller, &id, Action::Extend(by), Some(format!("duration={}", body.duration.trim()))).await
}

/// Deploy an environment's head commit again.
#[utoipa::path(post, path = "/api/v1/environments/{id}/redeploy", operation_id = "redeployEnvironment", tag = "actions", security(("bearer" = [])), params(("id" = i64, Path, description = "The environment's id")),
    responses(
        (status = 202, description = "The redeploy is under way", body = ActionAnswer),
        (status = 404, description = "No such environment", body = ApiError),
        (status = 409, description = "The environment is not live, or this previewd has no policy", body = ApiError),
        (status = 400, description = "A parameter cannot be used; the message names it", body = ApiError),
        (status = 401, description = "No token, or an unknown or revoked one", body = ApiError),
        (status = 403, description = "The token's scope does not allow this", body = ApiError),
        (status = 503, description = "The database is not answering", body = ApiError)
    ))]
pub async fn redeploy(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    token_action(app, caller, &id, Action::Redeploy, None).await
}

/// Replace an environment's database with a new, empty one, seed it again, and deploy.
#[utoipa::path(post, path = "/api/v1/environments/{id}/reset-db", operation_id = "resetEnvironmentDatabase", tag = "actions", security(("bearer" = [])), params(("id" = i64, Path, description = "The environment's id")),
    responses(
        (status = 202, description = "The new database is being created and seeded", body = ActionAnswer),
        (status = 404, description = "No such environment", body = ApiError),
        (status = 409, description = "The environment is not live, or this previewd has no policy", body = ApiError),
        (status = 400, description = "A parameter cannot be used; the message names it", body = ApiError),
        (status = 401, description = "No token, or an unknown or revoked one", body = ApiError),
        (status = 403, description = "The token's scope does not allow this", body = ApiError),
        (status = 503, description = "The database is not answering", body = ApiError)
    ))]
pub async fn reset_database(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    token_action(app, caller, &id, Action::ResetDatabase, None).await
}

/// Wake a sleeping environment: its workloads scale back up.
#[utoipa::path(post, path = "/api/v1/environments/{id}/wake", operation_id = "wakeEnvironment", tag = "actions", security(("bearer" = [])), params(("id" = i64, Path, description = "The environment's id")),
    responses(
        (status = 202, description = "It is waking up", body = ActionAnswer),
        (status = 404, description = "No such environment", body = ApiError),
        (status = 409, description = "The environment is not Sleeping, or this previewd has no policy", body = ApiError),
        (status = 400, description = "A parameter cannot be used; the message names it", body = ApiError),
        (status = 401, description = "No token, or an unknown or revoked one", body = ApiError),
        (status = 403, description = "The token's scope does not allow this", body = ApiError),
        (status = 503, description = "The database is not answering", body = ApiError)
    ))]
pub async fn wake(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Response, ApiError> {
    token_action(app, caller, &id, Action::Wake, None).await
}

/// Tear an environment down now.
#[utoipa::path(delete, path = "/api/v1/environments/{id}", operation_id = "destroyEnvironment", tag = "actions", security(("bearer" = [])), params(("id" = i64, Path, description = "The environment's id")),
    responses(
        (status = 202, description = "The teardown is under way", body = ActionAnswer),
        (status = 404, description = "No such environment", body = ApiError),
        (status = 409, description = "The environment is not live, or this previewd has no policy", body = ApiError),
        (status = 400, description = "A parameter cannot be used; the message names it", body = ApiError),
        (status = 401, description = "No token, or an unknown or revoked one", body = ApiError),
        (status = 403, description = "The token's scope does not allow this", body = ApiError),
        (status = 503, description = "The database is not answering", body = ApiError)
    ))]
pub async fn destroy(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    token_action(app, caller, &id, Action::Destroy, None).await
}

/// Who takes an action: what the planner, the audit log and the pull request call them, and
/// what they may do.
pub(crate) struct Acting<'a> {
    pub actor: Actor,
    /// The audit log's actor (`token:ci`, `github:octocat`).
    pub audit_actor: String,
    pub remote: Option<&'a str>,
    /// Refuses (403) before the environment is read: an API token's scope.
    pub allowed: Result<(), ApiError>,
    /// Refuses (403) once the environment is read: a person's access to its repository.
    pub may_act_on: &'a (dyn Fn(&ReconcileRecord) -> Result<(), ApiError> + Send + Sync),
}

/// Carries out `action` through the same code as the pull request's commands, and audits it,
/// refusals included. The answer's status: 200 for an extension, 202 for what a reconcile
/// carries out.
pub(crate) async fn take_action(
    app: &AppState,
    acting: Acting<'_>,
    id: &str,
    action: Action,
    detail: Option<String>,
) -> Result<(StatusCode, ActionAnswer), ApiError> {
    let outcome = act(app, &acting, id, action).await;
    let id = id.parse::<i64>().ok();
    // Read once, after the action: it names the target in the audit log and is the answer.
    let after = match id {
        Some(id) => app.store.environment_summary(id).await,
        None => Ok(None),
    };
    let target = match (&after, id) {
        (Ok(Some(e)), _) => format!("{}/{}#{}", e.repo_owner, e.repo_name, e.pr_number),
        (_, Some(id)) => format!("environment {id}"),
        (_, None) => "(no such environment)".to_owned(),
    };
    let written = super::audit::outcome(&outcome);
    let entry = NewAuditEntry {
        actor: &acting.audit_actor,
        action: action.name(),
        environment_id: id,
        target: &target,
        detail: detail.as_deref(),
        outcome: &written,
        remote: acting.remote,
    };
    // The action is done (or refused) whatever happens to its entry: answering 503 now would
    // invite a retry that extends twice.
    super::audit::write(app, &entry).await;
    let (status, done) = outcome?;
    let missing = || ApiError::not_found(format!("there is no environment {}", id.unwrap_or_default()));
    let environment: EnvironmentView = after?.ok_or_else(missing)?.into();
    Ok((status, ActionAnswer { environment, capped: matches!(done, Done::Extended { capped: true, .. }) }))
}

/// An API token's action.
async fn token_action(
    app: AppState,
    caller: Caller,
    id: &str,
    action: Action,
    detail: Option<String>,
) -> Result<Response, ApiError> {
    let acting = Acting {
        actor: Actor::Api { token: caller.token.name.clone() },
        audit_actor: caller.actor(),
        remote: caller.remote.as_deref(),
        allowed: caller.require(TokenScope::Admin),
        may_act_on: &|_| Ok(()),
    };
    let (status, answer) = take_action(&app, acting, id, action, detail).await?;
    Ok((status, Json(answer)).into_response())
}

/// What an action answers.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActionAnswer {
    /// The environment after the action (the reconcile that carries it out runs next).
    pub environment: EnvironmentView,
    /// For an extension: whether the policy's `ttl.max` cut it short.
    pub capped: bool,
}

/// Environment `id` (as asked) with the engine that manages it: `404` when there is none,
/// `409` when this previewd manages no environments (no policy).
pub(crate) async fn managed(app: &AppState, id: &str) -> Result<(ReconcileRecord, Arc<Engine>), ApiError> {
    let id = parse_id(id)?;
    let Some(engine) = app.engine.clone() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_engine",
            "this previewd has no policy_file: it manages no environments",
        ));
    };
    let env = app
        .store
        .reconcile_record(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("there is no environment {id}")))?;
    Ok((env, engine))
}

async fn act(app: &AppState, acting: &Acting<'_>, id: &str, action: Action) -> Result<(StatusCode, Done), ApiError> {
    acting.allowed.clone()?;
    let (env, engine) = managed(app, id).await?;
    (acting.may_act_on)(&env)?;
    if let Action::Extend(by) = action {
        let max = engine.policy.for_repository(&env.repo_owner, &env.repo_name).ttl.max;
        if by > max {
            return Err(ApiError::field(
                StatusCode::UNPROCESSABLE_ENTITY,
                "duration",
                format!(
                    "{} is longer than the policy's ttl.max for {}/{} ({})",
                    humantime::format_duration(by),
                    env.repo_owner,
                    env.repo_name,
                    humantime::format_duration(max)
                ),
            ));
        }
    }
    let done = actions::act(&app.store, &engine.policy, &env, action, &acting.actor, app.job_max_attempts)
        .await
        .map_err(|error| match error {
            ActionError::NotLive(..) => ApiError::new(StatusCode::CONFLICT, "not_live", error.to_string()),
            ActionError::NotAsleep(..) => ApiError::new(StatusCode::CONFLICT, "not_asleep", error.to_string()),
            ActionError::Store(error) if !error.is_retryable() => {
                ApiError::new(StatusCode::CONFLICT, "conflict", "the environment changed meanwhile; read it again")
            }
            ActionError::Store(error) => error.into(),
        })?;
    let status = if matches!(done, Done::Extended { .. }) { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, done))
}
