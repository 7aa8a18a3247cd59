//! The dashboard: server-rendered pages of the fleet for reviewers and the platform team, from
//! the platform team's minijinja templates in `<templates_dir>/dashboard/` (restyle them
//! there), with a little plain JavaScript (`static/dashboard.js`) that follows the event stream.
//!
//! The pages read through the same code as the admin API (`api::environments`): the same
//! queries and views, so the dashboard cannot show what the API would not. Who is looking is a
//! [`Viewer`]: a person signed in with GitHub (a session, seeing the repositories GitHub says
//! they may read) or an admin API token (scripts; it sees the whole fleet, as in the API).

mod actions;
mod auth;
mod platform;
mod share;
pub(crate) mod viewer;

use super::AppState;
use super::api::environments::{EnvironmentView, detail, filter_param};
use super::api::events::{ChangeEvent, Holder, last_event_id, matches};
use super::api::{ApiError, Page};
use axum::Router;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use previewd_environments::model::EnvironmentState;
use previewd_environments::store::{EnvironmentFilter, EnvironmentSummary};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path as FsPath;
use std::time::Duration;
pub use viewer::{PageViewer, Viewer};

/// The templates the pages need, by file name; `static/dashboard.js` is served as it is.
const TEMPLATES: [&str; 7] = [
    "base.html",
    "environments.html",
    "environment-row.html",
    "environment.html",
    "platform.html",
    "signed-out.html",
    "error.html",
];
/// Environments per page.
const PAGE_SIZE: u32 = 50;

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("cannot read the dashboard template {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("dashboard template {name}: {message}")]
    Template { name: String, message: String },
    #[error("the dashboard's sign-in: {0}")]
    Setting(String),
}

fn template_error(name: &str, error: &minijinja::Error) -> DashboardError {
    let mut message = error.to_string();
    if let Some(line) = error.line() {
        message = format!("line {line}: {message}");
    }
    DashboardError::Template { name: name.to_owned(), message }
}

/// The loaded templates and script, and the sign-in.
pub struct Dashboard {
    templates: minijinja::Environment<'static>,
    script: String,
    /// GitHub's web root, for links to pull requests.
    github_web_url: String,
    /// `None`: no GitHub sign-in configured; only API tokens see the pages.
    auth: Option<DashboardAuth>,
}

/// The GitHub OAuth client of the App's user authorization, as [`oauth2`] builds it.
type OAuth = oauth2::basic::BasicClient<
    oauth2::EndpointSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointSet,
>;

/// What signing people in needs.
pub struct DashboardAuth {
    client: OAuth,
    http: crate::outbound::HttpsClient,
    /// GitHub's REST API, asked with the person's token.
    api_url: String,
    /// `dashboard.public_url`.
    public_url: String,
    secure: bool,
    timeout: Duration,
    session_lifetime: Duration,
    permissions_cache: Duration,
    admins: Vec<String>,
    allowed_orgs: Vec<String>,
}

/// The settings [`Dashboard::load`] takes.
pub struct DashboardSettings {
    pub github_web_url: String,
    pub github_api_url: String,
    pub github_timeout: Duration,
    pub oauth: Option<crate::config::OAuthClient>,
    pub session_lifetime: Duration,
    pub permissions_cache: Duration,
    pub admins: Vec<String>,
    pub allowed_orgs: Vec<String>,
}

impl DashboardAuth {
    fn client(&self) -> &OAuth {
        &self.client
    }

    fn secure_cookies(&self) -> bool {
        self.secure
    }

    fn permissions_cache_ms(&self) -> i64 {
        i64::try_from(self.permissions_cache.as_millis()).unwrap_or(i64::MAX)
    }

    fn new(settings: &DashboardSettings, oauth: &crate::config::OAuthClient) -> Result<DashboardAuth, DashboardError> {
        use secrecy::ExposeSecret;
        let url = |what: &str, url: String| {
            oauth2::url::Url::parse(&url).map_err(|e| DashboardError::Setting(format!("{what} {url}: {e}")))
        };
        let client = oauth2::basic::BasicClient::new(oauth2::ClientId::new(oauth.client_id.clone()))
            .set_client_secret(oauth2::ClientSecret::new(oauth.client_secret.expose_secret().to_owned()))
            .set_auth_uri(oauth2::AuthUrl::from_url(url(
                "github.web_url",
                format!("{}/login/oauth/authorize", oauth.web_url),
            )?))
            .set_token_uri(oauth2::TokenUrl::from_url(url(
                "github.web_url",
                format!("{}/login/oauth/access_token", oauth.web_url),
            )?))
            .set_redirect_uri(oauth2::RedirectUrl::from_url(url(
                "dashboard.public_url",
                format!("{}/auth/callback", oauth.public_url),
            )?))
            // GitHub documents the client's credentials as parameters of the request.
            .set_auth_type(oauth2::AuthType::RequestBody);
        let http = crate::outbound::https_client(oauth.web_url.starts_with("https://"))
            .map_err(|e| DashboardError::Setting(e.to_string()))?;
        Ok(DashboardAuth {
            client,
            http,
            api_url: settings.github_api_url.clone(),
            secure: oauth.public_url.starts_with("https://"),
            public_url: oauth.public_url.clone(),
            timeout: settings.github_timeout,
            session_lifetime: settings.session_lifetime,
            permissions_cache: settings.permissions_cache,
            admins: settings.admins.clone(),
            allowed_orgs: settings.allowed_orgs.clone(),
        })
    }
}

impl Dashboard {
    /// Loads `<dir>/dashboard/`: each template, and the script. A template that does not parse
    /// stops previewd with its name and line, rather than failing a page later.
    pub fn load(dir: &FsPath, settings: &DashboardSettings) -> Result<Dashboard, DashboardError> {
        let dir = dir.join("dashboard");
        let read = |path: std::path::PathBuf| {
            std::fs::read_to_string(&path)
                .map_err(|source| DashboardError::Read { path: path.display().to_string(), source })
        };
        let mut templates = minijinja::Environment::new();
        for name in TEMPLATES {
            templates.add_template_owned(name, read(dir.join(name))?).map_err(|e| template_error(name, &e))?;
        }
        let auth = match &settings.oauth {
            Some(oauth) => Some(DashboardAuth::new(settings, oauth)?),
            None => None,
        };
        Ok(Dashboard {
            templates,
            script: read(dir.join("static/dashboard.js"))?,
            github_web_url: settings.github_web_url.trim_end_matches('/').to_owned(),
            auth,
        })
    }

    fn render(&self, name: &str, context: impl Serialize) -> Result<Html<String>, ApiError> {
        let rendered = self
            .templates
            .get_template(name)
            .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(&context))))
            .map_err(|e| {
                let error = template_error(name, &e);
                tracing::error!(%error, "a dashboard page cannot be rendered");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "template", error.to_string())
            })?;
        Ok(Html(rendered))
    }
}

pub fn router(app: AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(environments))
        .route("/environments/{id}", get(environment))
        .route("/events", get(events))
        .route("/platform", get(platform::page))
        .route("/environments/{id}/extend", post(actions::extend))
        .route("/environments/{id}/redeploy", post(actions::redeploy))
        .route("/environments/{id}/reset-db", post(actions::reset_database))
        .route("/environments/{id}/wake", post(actions::wake))
        .route("/environments/{id}/destroy", post(actions::destroy))
        .route("/environments/{id}/share", post(share::create))
        .route("/environments/{id}/share-links/{link}/revoke", post(share::revoke))
        .route("/auth/login", get(auth::login))
        .route("/auth/callback", get(auth::callback))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/signed-out", get(auth::signed_out))
        .route("/auth/preview", get(auth::preview))
        .route("/static/dashboard.js", get(script))
        .layer(axum::middleware::from_fn_with_state(app, html_errors))
}

/// The peer's address, for the audit log.
pub(crate) struct Remote(Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Remote {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        let info = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
        Ok(Remote(info.map(|info| info.0.to_string())))
    }
}

/// An error answered to a browser's navigation (`Accept: text/html`) as a page, from
/// `error.html`: the same status and message as the JSON `{error, message}` scripts get.
async fn html_errors(
    State(app): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let wants_html = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    let is_error = status.is_client_error() || status.is_server_error();
    let Some(dashboard) = app.dashboard.as_deref().filter(|_| wants_html && is_json && is_error) else {
        return response;
    };
    #[derive(Deserialize)]
    struct Body {
        message: String,
    }
    let (parts, body) = response.into_parts();
    // previewd's own error answers are a few hundred bytes.
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return (status, "the error answer could not be read").into_response();
    };
    let message = serde_json::from_slice::<Body>(&bytes).map(|b| b.message).unwrap_or_default();
    #[derive(Serialize)]
    struct Context<'a> {
        status: u16,
        title: &'a str,
        message: String,
        sign_in: bool,
    }
    let context = Context {
        status: status.as_u16(),
        title: status.canonical_reason().unwrap_or("Error"),
        message,
        sign_in: status == StatusCode::UNAUTHORIZED && dashboard.auth.is_some(),
    };
    match dashboard.render("error.html", context) {
        Ok(page) => (status, page).into_response(),
        // The JSON answer as it was.
        Err(_) => Response::from_parts(parts, axum::body::Body::from(bytes)),
    }
}

/// A form that did not carry the session's CSRF token.
fn bad_csrf() -> ApiError {
    ApiError::field(StatusCode::FORBIDDEN, "csrf", "does not match this session: reload the page and try again")
}

fn dashboard(app: &AppState) -> Result<&Dashboard, ApiError> {
    app.dashboard.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_dashboard",
            "this previewd serves no dashboard (its templates did not load)",
        )
    })
}

async fn script(State(app): State<AppState>) -> Result<Response, ApiError> {
    let dashboard = dashboard(&app)?;
    Ok(([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], dashboard.script.clone()).into_response())
}

/// The filters of the environments page, as its form sends them back.
#[derive(Debug, Default, Serialize)]
struct PageFilters {
    q: String,
    repository: String,
    owner: String,
    state: String,
    mine: bool,
}

#[derive(Serialize)]
struct ViewerContext<'a> {
    login: Option<&'a str>,
    token: Option<&'a str>,
    csrf: Option<&'a str>,
    is_admin: bool,
}

impl Viewer {
    fn context(&self) -> ViewerContext<'_> {
        match self {
            Viewer::Person { session, .. } => ViewerContext {
                login: Some(&session.login),
                token: None,
                csrf: Some(&session.csrf_token),
                is_admin: session.is_admin,
            },
            Viewer::Token(token) => {
                ViewerContext { login: None, token: Some(&token.name), csrf: None, is_admin: self.is_admin() }
            }
        }
    }
}

/// Reads the page's query into the store's filter and the form's values.
fn read_query(query: Option<&str>, viewer: &Viewer) -> Result<(EnvironmentFilter, PageFilters, Page), ApiError> {
    let mut filter = EnvironmentFilter { visible_to_session: viewer.session_id(), ..EnvironmentFilter::default() };
    let mut form = PageFilters::default();
    let mut page = Page { limit: PAGE_SIZE, ..Page::default() };
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        // An empty field of the form is no filter.
        if value.is_empty() {
            continue;
        }
        match &*key {
            "q" => {
                form.q = value.chars().take(100).collect();
                filter.search = Some(form.q.clone());
            }
            "mine" => {
                form.mine = true;
                filter.author = viewer.login().map(str::to_owned);
            }
            "repository" | "owner" | "state" | "author" => {
                filter_param(&mut filter, &key, &value)?;
                match &*key {
                    "repository" => form.repository = value.into_owned(),
                    "owner" => form.owner = value.into_owned(),
                    "state" => form.state = value.into_owned(),
                    _ => {}
                }
            }
            _ => page.take(&key, &value)?,
        }
    }
    Ok((filter, form, page))
}

/// The page's query without its cursor, for the event stream and the pager.
fn query_without_cursor(query: Option<&str>) -> String {
    let mut kept = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if key != "cursor" && key != "limit" && !value.is_empty() {
            kept.append_pair(&key, &value);
        }
    }
    kept.finish()
}

/// `/`: the environments the viewer may see, newest first, filtered and paged.
async fn environments(
    State(app): State<AppState>,
    PageViewer(viewer): PageViewer,
    RawQuery(query): RawQuery,
) -> Result<Html<String>, ApiError> {
    let dashboard = dashboard(&app)?;
    let (filter, form, page) = read_query(query.as_deref(), &viewer)?;
    let rows = app.store.list_environments(&filter, page.before, page.limit + 1).await?;
    let (rows, next_cursor) = page.split(rows, |e: &EnvironmentSummary| e.id);
    let environments: Vec<EnvironmentView> = rows.into_iter().map(EnvironmentView::from).collect();
    let base = query_without_cursor(query.as_deref());
    let with = |extra: String| if base.is_empty() { format!("/?{extra}") } else { format!("/?{base}&{extra}") };
    #[derive(Serialize)]
    struct Context<'a> {
        viewer: ViewerContext<'a>,
        environments: Vec<EnvironmentView>,
        filters: PageFilters,
        states: Vec<&'static str>,
        events_url: String,
        next_page: Option<String>,
        first_page: Option<String>,
    }
    dashboard.render(
        "environments.html",
        Context {
            viewer: viewer.context(),
            environments,
            filters: form,
            states: EnvironmentState::ALL.iter().map(|s| s.as_str()).collect(),
            events_url: if base.is_empty() { "/events".to_owned() } else { format!("/events?{base}") },
            next_page: next_cursor.map(|c| with(format!("cursor={c}"))),
            first_page: page.before.map(|_| if base.is_empty() { "/".to_owned() } else { format!("/?{base}") }),
        },
    )
}

/// `/environments/{id}`: one environment, if the viewer may see it.
async fn environment(
    State(app): State<AppState>,
    PageViewer(viewer): PageViewer,
    Path(id): Path<String>,
    Query(notice): Query<Notice>,
) -> Result<Response, ApiError> {
    let done = notice.done.as_deref().and_then(|d| match d {
        "extend" => Some("Extended."),
        "redeploy" => Some("A redeploy is under way."),
        "reset-db" => Some("A new database is being created and seeded."),
        "wake" => Some("It is waking up."),
        "destroy" => Some("The teardown is under way."),
        "unshare" => Some("The share link is revoked: it opens nothing from now on."),
        _ => None,
    });
    let shown = Shown { notice: done.map(str::to_owned), ..Shown::default() };
    environment_page(&app, &viewer, &id, StatusCode::OK, shown).await
}

/// What an environment's page shows besides the environment: a notice after an action, a
/// problem (why an action was refused), a share link just made (its URL, shown only then).
#[derive(Debug, Default)]
pub(super) struct Shown {
    pub notice: Option<String>,
    pub problem: Option<String>,
    pub shared: Option<super::api::share::CreatedShareLink>,
}

impl Shown {
    pub fn problem(message: String) -> Shown {
        Shown { problem: Some(message), ..Shown::default() }
    }
}

/// What a redirect after an action says, from a fixed list (never text from the query).
#[derive(Debug, Deserialize)]
struct Notice {
    done: Option<String>,
}

/// One environment's page, answered with `status`, with what else it shows.
async fn environment_page(
    app: &AppState,
    viewer: &Viewer,
    id: &str,
    status: StatusCode,
    shown: Shown,
) -> Result<Response, ApiError> {
    let dashboard = dashboard(app)?;
    let not_found = || ApiError::not_found(format!("there is no environment {id} you may see"));
    let id = id.parse::<i64>().map_err(|_| not_found())?;
    let detail = detail(app, id).await?;
    if !viewer.may_read(detail.environment.repository_id) {
        return Err(not_found());
    }
    #[derive(Serialize)]
    struct Context<'a> {
        viewer: ViewerContext<'a>,
        e: &'a EnvironmentView,
        pull_request_url: String,
        /// The pull request's GitHub deployments (previewd's deployment environment).
        deployments_url: String,
        transitions: &'a [super::api::environments::TransitionView],
        last_failure: Option<&'a super::api::environments::FailureView>,
        objects: &'a [super::api::environments::ObjectView],
        objects_error: Option<&'a str>,
        can_act: bool,
        notice: Option<String>,
        problem: Option<String>,
        /// A share link just made.
        shared: Option<super::api::share::CreatedShareLink>,
        /// The share links that open the preview now (for people who may act).
        share_links: Vec<super::api::share::ShareLinkView>,
    }
    let e = &detail.environment;
    let can_act = viewer.may_act(e.repository_id) && e.state.is_live();
    let share_links = if can_act {
        app.store
            .share_links(id)
            .await?
            .into_iter()
            .map(super::api::share::ShareLinkView::from)
            .filter(|l| l.live)
            .collect()
    } else {
        Vec::new()
    };
    let page = dashboard.render(
        "environment.html",
        Context {
            viewer: viewer.context(),
            e,
            pull_request_url: format!("{}/{}/pull/{}", dashboard.github_web_url, e.repository, e.pull_request.number),
            deployments_url: format!(
                "{}/{}/deployments/{}",
                dashboard.github_web_url,
                e.repository,
                form_urlencoded::byte_serialize(
                    crate::github::report::environment_name(previewd_environments::model::PrNumber(
                        e.pull_request.number
                    ))
                    .as_bytes()
                )
                .collect::<String>()
            ),
            transitions: &detail.transitions,
            last_failure: detail.last_failure.as_ref(),
            objects: &detail.objects,
            objects_error: detail.objects_error.as_deref(),
            can_act,
            notice: shown.notice,
            problem: shown.problem,
            shared: shown.shared,
            share_links,
        },
    )?;
    Ok((status, page).into_response())
}

/// `/events`: the admin API's event stream, narrowed to what the viewer may see and to the
/// page's filters. The browser's EventSource resumes with `Last-Event-ID` by itself.
async fn events(
    State(app): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<impl IntoResponse, ApiError> {
    let (filter, _, _) = read_query(query.as_deref(), &viewer)?;
    // The session's repositories as read now (the list asks the store for them instead).
    let readable: Option<HashSet<i64>> = viewer.readable();
    let keep = move |event: &ChangeEvent| {
        let e = &event.environment;
        matches(&filter, e) && readable.as_ref().is_none_or(|r| r.contains(&e.repository_id))
    };
    let resume = last_event_id(&headers)?;
    let holder = match &viewer {
        Viewer::Person { session, .. } => Holder::Session(session.id),
        Viewer::Token(token) => Holder::Token(token.id),
    };
    let stream = app.changes.stream(&app.store, resume, holder, keep).await?;
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
