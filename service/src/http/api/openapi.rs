//! The admin API's OpenAPI 3.1 description, generated from the handlers' annotations and the
//! answers' own types, so it cannot describe an API other than the one served.
//! `service/openapi.json` is its committed copy; `tests/openapi.rs` fails when they differ.

use super::{ApiError, Caller, audit, bypass, environments, events, share, usage};
use axum::Json;
use previewd_environments::store::TokenScope;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "previewd admin API",
        description = "The fleet of preview environments: list, inspect and act on them, usage and limits, \
                       and the audit log. Every request needs a bearer token (`previewd token create`).",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        environments::list,
        environments::show,
        environments::extend,
        environments::redeploy,
        environments::reset_database,
        environments::wake,
        environments::destroy,
        events::stream,
        usage::usage,
        usage::limits,
        audit::list,
        bypass::list,
        bypass::create,
        bypass::revoke,
        share::list,
        share::create_by_token,
        share::revoke_by_token,
        serve,
    ),
    components(schemas(ApiError)),
    modifiers(&BearerTokens),
    tags(
        (name = "environments", description = "Environments and their history"),
        (name = "actions", description = "What an admin token may do to a live environment"),
        (name = "fleet", description = "Usage and limits"),
        (name = "audit", description = "Who did what"),
        (name = "access", description = "Bypass tokens that open a repository's protected previews"),
    )
)]
pub struct ApiDoc;

struct BearerTokens;

impl Modify for BearerTokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some("A token from `previewd token create` (`pvd_...`)".to_owned());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The description as JSON, pretty-printed with a final newline (the committed file's form).
pub fn document() -> String {
    let mut text = ApiDoc::openapi().to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}

/// This description.
#[utoipa::path(get, path = "/api/v1/openapi.json", operation_id = "getOpenApi", tag = "fleet", security(("bearer" = [])),
    responses(
        (status = 200, description = "The OpenAPI 3.1 description of this API", content_type = "application/json"),
        (status = 401, description = "No token, or an unknown or revoked one", body = ApiError),
    ))]
pub async fn serve(caller: Caller) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(TokenScope::Read)?;
    Ok(Json(serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()))
}
