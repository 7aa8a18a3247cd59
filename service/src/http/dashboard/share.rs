//! The environment page's share links, for people who may write to the repository: make one
//! (its URL is shown on the page that answers, once; a reload does not show it again) and
//! revoke one. They go through the admin API's share-link code (`api::share`): the same policy
//! limits and the audit log (actor `github:<login>`).

use super::actions::{acting, may_act_on, person, refused};
use super::{PageViewer, Remote, Shown, environment_page};
use crate::http::AppState;
use crate::http::api::share::{create_link, revoke_link};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

#[derive(Deserialize)]
pub(super) struct ShareForm {
    #[serde(default)]
    csrf: String,
    expires_in: Option<String>,
}

pub(super) async fn create(
    State(app): State<AppState>,
    PageViewer(viewer): PageViewer,
    remote: Remote,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<ShareForm>,
) -> Response {
    let session = match person(&viewer, &form.csrf) {
        Ok(session) => session,
        Err(refusal) => return refusal.into_response(),
    };
    let may_act_on = may_act_on(&viewer, &id);
    let created = create_link(&app, &acting(session, &remote, &may_act_on), &id, form.expires_in.as_deref()).await;
    match created {
        // The page itself, not a redirect: the URL holds the secret and goes in no other URL.
        Ok(shared) => {
            let notice = Some("Share link made: copy it now, it is not shown again.".to_owned());
            let shown = Shown { notice, shared: Some(shared), ..Shown::default() };
            match environment_page(&app, &viewer, &id, StatusCode::OK, shown).await {
                Ok(page) => page,
                Err(error) => error.into_response(),
            }
        }
        Err(error) => refused(&app, &viewer, &id, error).await,
    }
}

#[derive(Deserialize)]
pub(super) struct RevokeForm {
    #[serde(default)]
    csrf: String,
}

pub(super) async fn revoke(
    State(app): State<AppState>,
    PageViewer(viewer): PageViewer,
    remote: Remote,
    Path((id, link)): Path<(String, String)>,
    axum::Form(form): axum::Form<RevokeForm>,
) -> Response {
    let session = match person(&viewer, &form.csrf) {
        Ok(session) => session,
        Err(refusal) => return refusal.into_response(),
    };
    let may_act_on = may_act_on(&viewer, &id);
    match revoke_link(&app, &acting(session, &remote, &may_act_on), &id, &link).await {
        Ok(()) => Redirect::to(&format!("/environments/{id}?done=unshare")).into_response(),
        Err(error) => refused(&app, &viewer, &id, error).await,
    }
}
