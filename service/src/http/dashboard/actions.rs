//! The environment page's buttons: extend, redeploy, wake, reset the database, destroy. They go
//! through the admin API's action path (`api::environments::take_action`: the same planner,
//! audit log and pull request note), for a signed-in person with write access to the
//! repository, with the session's CSRF token in the form. A refusal shows the environment's page
//! again with the reason. The share-link forms (`share.rs`) use the same checks.

use super::{PageViewer, Remote, Shown, Viewer, bad_csrf, environment_page};
use crate::http::AppState;
use crate::http::api::ApiError;
use crate::http::api::environments::{Acting, take_action};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use previewd_environments::actions::{Action, Actor};
use previewd_environments::store::{ReconcileRecord, SessionRecord};
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Deserialize)]
pub(super) struct ActionForm {
    #[serde(default)]
    csrf: String,
    duration: Option<String>,
    /// The destroy form's "I am sure" box.
    confirm: Option<String>,
}

pub(super) async fn extend(
    State(app): State<AppState>,
    viewer: PageViewer,
    remote: Remote,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<ActionForm>,
) -> Response {
    let text = form.duration.clone().unwrap_or_default();
    let action = match humantime::parse_duration(text.trim()) {
        Ok(by) if !by.is_zero() => Ok(Action::Extend(by)),
        _ => Err(ApiError::field(StatusCode::UNPROCESSABLE_ENTITY, "duration", "must be a duration like 2h or 30m")),
    };
    act(app, viewer.0, remote, &id, form, action, Some(format!("duration={}", text.trim()))).await
}

pub(super) async fn redeploy(
    State(app): State<AppState>,
    viewer: PageViewer,
    remote: Remote,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<ActionForm>,
) -> Response {
    act(app, viewer.0, remote, &id, form, Ok(Action::Redeploy), None).await
}

pub(super) async fn wake(
    State(app): State<AppState>,
    viewer: PageViewer,
    remote: Remote,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<ActionForm>,
) -> Response {
    act(app, viewer.0, remote, &id, form, Ok(Action::Wake), None).await
}

pub(super) async fn reset_database(
    State(app): State<AppState>,
    viewer: PageViewer,
    remote: Remote,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<ActionForm>,
) -> Response {
    act(app, viewer.0, remote, &id, form, Ok(Action::ResetDatabase), None).await
}

pub(super) async fn destroy(
    State(app): State<AppState>,
    viewer: PageViewer,
    remote: Remote,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<ActionForm>,
) -> Response {
    let action = if form.confirm.as_deref() == Some("yes") {
        Ok(Action::Destroy)
    } else {
        Err(ApiError::field(StatusCode::UNPROCESSABLE_ENTITY, "confirm", "tick the box to confirm the teardown"))
    };
    act(app, viewer.0, remote, &id, form, action, None).await
}

/// The signed-in person behind a form, once its CSRF token matches their session's; the
/// refusal otherwise.
pub(super) fn person<'a>(viewer: &'a Viewer, csrf: &str) -> Result<&'a SessionRecord, ApiError> {
    let Viewer::Person { session, .. } = viewer else {
        let why = "the dashboard's buttons are for people signed in with GitHub; scripts act through /api/v1";
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", why));
    };
    // Digests compared, so the comparison says nothing about where they differ.
    if Sha256::digest(session.csrf_token.as_bytes()) != Sha256::digest(csrf.as_bytes()) {
        return Err(bad_csrf());
    }
    Ok(session)
}

/// Whether `viewer` may act on an environment (`id`, as asked): write access to its
/// repository, as `/preview` commands need; someone who may not even read it is told there is
/// no such environment.
pub(super) fn may_act_on<'a>(
    viewer: &'a Viewer,
    id: &'a str,
) -> impl Fn(&ReconcileRecord) -> Result<(), ApiError> + Send + Sync + 'a {
    move |env: &ReconcileRecord| {
        if viewer.may_act(env.repo_id) {
            Ok(())
        } else if !viewer.may_read(env.repo_id) {
            Err(ApiError::not_found(format!("there is no environment {id} you may see")))
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "acting on this environment needs write access to {}/{}, as /preview commands do",
                    env.repo_owner, env.repo_name
                ),
            ))
        }
    }
}

/// What a person's form on environment `id` does, as the admin API does it.
pub(super) fn acting<'a>(
    session: &SessionRecord,
    remote: &'a Remote,
    may_act_on: &'a (dyn Fn(&ReconcileRecord) -> Result<(), ApiError> + Send + Sync),
) -> Acting<'a> {
    Acting {
        actor: Actor::Dashboard { login: session.login.clone() },
        audit_actor: format!("github:{}", session.login),
        remote: remote.0.as_deref(),
        allowed: Ok(()),
        may_act_on,
    }
}

/// The environment's page again with the reason `error`; a page that cannot be shown answers
/// the error itself.
pub(super) async fn refused(app: &AppState, viewer: &Viewer, id: &str, error: ApiError) -> Response {
    match environment_page(app, viewer, id, error.status, Shown::problem(error.message.clone())).await {
        Ok(page) => page,
        Err(_) => error.into_response(),
    }
}

async fn act(
    app: AppState,
    viewer: Viewer,
    remote: Remote,
    id: &str,
    form: ActionForm,
    action: Result<Action, ApiError>,
    detail: Option<String>,
) -> Response {
    let session = match person(&viewer, &form.csrf) {
        Ok(session) => session,
        Err(refusal) => return refusal.into_response(),
    };
    let outcome = match action {
        Ok(action) => {
            let may_act_on = may_act_on(&viewer, id);
            let verb = action.verb();
            take_action(&app, acting(session, &remote, &may_act_on), id, action, detail).await.map(|_| verb)
        }
        Err(error) => Err(error),
    };
    match outcome {
        Ok(verb) => Redirect::to(&format!("/environments/{id}?done={verb}")).into_response(),
        Err(error) => refused(&app, &viewer, id, error).await,
    }
}
