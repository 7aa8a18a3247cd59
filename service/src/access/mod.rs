//! Who may open a preview: the decision behind previewd's forward-authentication endpoint,
//! which ingress controllers and gateways ask before they forward a request to a preview.
//!
//! A request is let through with a bypass token of the environment's repository (header
//! `x-previewd-bypass` or query parameter `previewd_bypass`), or when the repository's
//! protection (policy `protection`) allows the visitor: anyone (`none`); anyone with a live
//! share link of the environment (query parameter `previewd_share` once, then the cookie it
//! sets on the preview's host); anyone signed in to previewd (`github_org`); or someone signed
//! in who may read the repository (`github`). The
//! sign-in is the dashboard's, carried to previews by a cookie of its own on the base domain
//! (`previewd_preview`), which opens previews and nothing else: every preview's application
//! receives the cookies of its domain, and a pull request's code must not get a dashboard
//! session out of a reviewer.
//!
//! It is also where previewd sees traffic: visits let through are written (at most every few
//! seconds per environment), which is what idle detection reads, without proxying a byte.

pub mod request;

use axum::http::HeaderMap;
use previewd_environments::actions::{self, Action, ActionError, Actor};
use previewd_environments::model::EnvironmentState;
use previewd_environments::naming;
use previewd_environments::policy::{Policy, Protection};
use previewd_environments::store::{GateRecord, Store, StoreError, Visited, service_urls};
use previewd_environments::time::{now_ms, rfc3339};
use request::Original;
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The cookie that carries a sign-in to previews.
pub const PREVIEW_COOKIE: &str = "previewd_preview";
/// The header automation sends a bypass token in.
pub const BYPASS_HEADER: &str = "x-previewd-bypass";
/// The query parameter a bypass token may come in instead (for tools that cannot set headers).
pub const BYPASS_QUERY: &str = "previewd_bypass";
/// The query parameter a share link carries its secret in, and the cookie (of the preview's
/// host alone) that carries it after the first visit.
pub const SHARE_PARAMETER: &str = "previewd_share";
/// The header previewd names the visitor in, for the proxy to pass on to the application.
pub const USER_HEADER: &str = "x-previewd-user";

/// How often the host index may be rebuilt for a host it does not know: a flood of requests
/// for unknown hosts costs one listing a second, not one each.
const REBUILD_AT_MOST: Duration = Duration::from_secs(1);
/// How often one environment's visits are written at most.
const VISIT_WRITE_EVERY: Duration = Duration::from_secs(2);
/// Entries of [`Visits`] beyond which the expired ones are dropped.
const MAX_REMEMBERED: usize = 10_000;

/// What the proxy should do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Forward it; `user` is who (a login, or a bypass token's or share link's repository), if
    /// anyone; `cookie`, a `Set-Cookie` for the visitor (a share link's, on its first use).
    Pass { user: Option<String>, cookie: Option<String> },
    /// Not signed in: off to sign in, and back to the original URL.
    SignIn { location: String },
    /// Signed in (or with a token) but not allowed; the message says why.
    Forbidden { message: String },
    /// No preview has this host.
    NotFound { message: String },
    /// Let through, but the environment is asleep (or waking): the waking page, and a retry in
    /// `retry_after_seconds`. Nothing reaches the application, which has no pods.
    Waking { retry_after_seconds: u64, cookie: Option<String> },
}

/// How soon the waking page asks again.
pub const WAKING_RETRY_SECONDS: u64 = 5;

/// The forward-authentication decision, with what it keeps in memory: which environment each
/// preview host belongs to, and the visits not yet written.
pub struct Gate {
    store: Store,
    policy: Arc<Policy>,
    /// The dashboard's `/auth/preview`, where a visitor signs in; `None` without a sign-in.
    sign_in: Option<String>,
    hosts: RwLock<HostIndex>,
    visits: Mutex<Visits>,
    /// Attempts of the reconcile a wake queues (`queue.max_attempts`).
    job_attempts: i64,
}

struct HostIndex {
    by_host: HashMap<String, i64>,
    built_at: Option<Instant>,
}

/// When each environment's, token's and share link's last visit was written.
#[derive(Default)]
struct Visits {
    environments: HashMap<i64, Instant>,
    tokens: HashMap<i64, Instant>,
    shares: HashMap<i64, Instant>,
}

/// Who a visitor let through is, and what let them in.
#[derive(Debug, Default)]
struct Admitted {
    /// For `X-Previewd-User`.
    user: Option<String>,
    bypass_token: Option<i64>,
    share_link: Option<i64>,
    /// A `Set-Cookie` to send back.
    cookie: Option<String>,
}

impl Gate {
    /// `dashboard_url`: the dashboard's public URL when it signs people in with GitHub.
    pub fn new(store: Store, policy: Arc<Policy>, dashboard_url: Option<&str>, job_attempts: i64) -> Arc<Gate> {
        Arc::new(Gate {
            store,
            policy,
            sign_in: dashboard_url.map(|url| format!("{}/auth/preview", url.trim_end_matches('/'))),
            hosts: RwLock::new(HostIndex { by_host: HashMap::new(), built_at: None }),
            visits: Mutex::new(Visits::default()),
            job_attempts,
        })
    }

    pub fn base_domain(&self) -> &str {
        &self.policy.base_domain
    }

    /// Decides on `original`, sent with `headers` (the visitor's, as the proxy passed them on).
    pub async fn decide(&self, original: &Original, headers: &HeaderMap) -> Result<Decision, StoreError> {
        let Some(env) = self.environment(&original.host).await? else {
            return Ok(Decision::NotFound { message: format!("{} is not a preview previewd knows", original.host) });
        };
        let machine = request::is_machine(headers.get("user-agent").and_then(|v| v.to_str().ok()));
        if let Some(token) = bypass_token(original, headers) {
            return Ok(match self.store.bypass_token(&token).await? {
                Some((id, repo)) if repo == env.repo_id => {
                    let user = Some(format!("bypass-token@{}/{}", env.repo_owner, env.repo_name));
                    self.let_through(&env, machine, Admitted { user, bypass_token: Some(id), ..Admitted::default() })
                        .await?
                }
                _ => Decision::Forbidden {
                    message: format!(
                        "the bypass token is not one of {}/{}'s live tokens (revoked, or of another repository)",
                        env.repo_owner, env.repo_name
                    ),
                },
            });
        }
        let effective = self.policy.for_repository(&env.repo_owner, &env.repo_name);
        let protection = effective.protection.resolve(env.private);
        if protection == Protection::None {
            return self.let_through(&env, machine, Admitted::default()).await;
        }
        // A share link that opens nothing is remembered: it is the answer unless a sign-in
        // lets the visitor in anyway.
        let mut refused_share = None;
        if let Some((secret, from_query)) = share_secret(original, headers) {
            match self.share(&env, original, &secret, from_query).await? {
                Ok(admitted) => return self.let_through(&env, machine, admitted).await,
                Err(message) => refused_share = Some(message),
            }
        }
        let session = match crate::http::dashboard::viewer::cookie(headers, PREVIEW_COOKIE) {
            Some(secret) => self.store.preview_session(&SecretString::from(secret)).await?,
            None => None,
        };
        let Some((session, login)) = session else {
            return Ok(match (refused_share, &self.sign_in) {
                (Some(message), _) => Decision::Forbidden { message },
                (None, Some(sign_in)) => {
                    let next: String = form_urlencoded::byte_serialize(original.url().as_bytes()).collect();
                    Decision::SignIn { location: format!("{sign_in}?next={next}") }
                }
                (None, None) => Decision::Forbidden {
                    message: "this preview is protected, and previewd has no GitHub sign-in configured (dashboard.public_url, github.client_id): use a bypass token or a share link".to_owned(),
                },
            });
        };
        if protection == Protection::Github && !self.store.session_may_read(session, env.repo_id).await? {
            return Ok(Decision::Forbidden {
                message: format!(
                    "@{login} may not read {}/{} on GitHub, whose previews are for the people who may (protection `github`); if that changed, sign in again",
                    env.repo_owner, env.repo_name
                ),
            });
        }
        self.let_through(&env, machine, Admitted { user: Some(login), ..Admitted::default() }).await
    }

    /// The share link whose secret is `secret`: who it admits (with the cookie that carries it
    /// on, when it came in the query), or why it admits no one.
    async fn share(
        &self,
        env: &GateRecord,
        original: &Original,
        secret: &SecretString,
        from_query: bool,
    ) -> Result<Result<Admitted, String>, StoreError> {
        let now = now_ms();
        let link = self.store.share_link(secret).await?.filter(|link| link.environment_id == env.id);
        let Some(link) = link else {
            return Ok(Err("this share link does not open this preview (it is of another environment, or was removed with its environment): ask for a new one".to_owned()));
        };
        if let Some(at) = link.revoked_at {
            return Ok(Err(format!("this share link was revoked at {}: ask for a new one", rfc3339(at))));
        }
        if !link.is_live(now) {
            return Ok(Err(format!("this share link expired at {}: ask for a new one", rfc3339(link.expires_at))));
        }
        // Host-only (no Domain): the link opens this preview, not its neighbours.
        let cookie = from_query.then(|| {
            cookie::Cookie::build((SHARE_PARAMETER, secret.expose_secret().to_owned()))
                .path("/")
                .http_only(true)
                .secure(original.scheme == "https")
                .same_site(cookie::SameSite::Lax)
                .max_age(cookie::time::Duration::milliseconds(link.expires_at - now))
                .build()
                .to_string()
        });
        Ok(Ok(Admitted {
            user: Some(format!("share-link@{}/{}", env.repo_owner, env.repo_name)),
            share_link: Some(link.id),
            cookie,
            ..Admitted::default()
        }))
    }

    /// A visitor who may open the preview: through to the application, or, while it is asleep,
    /// to the waking page, and a person's (not a machine's) visit wakes it.
    async fn let_through(&self, env: &GateRecord, machine: bool, admitted: Admitted) -> Result<Decision, StoreError> {
        self.visited(env.id, &admitted, machine);
        let Admitted { user, cookie, .. } = admitted;
        if !env.asleep {
            return Ok(Decision::Pass { user, cookie });
        }
        if !machine && env.state == EnvironmentState::Sleeping.as_str() {
            self.wake(env, user.as_deref()).await?;
        }
        Ok(Decision::Waking { retry_after_seconds: WAKING_RETRY_SECONDS, cookie })
    }

    /// Wakes a sleeping environment for a visit, as `/preview wake` would.
    async fn wake(&self, env: &GateRecord, by: Option<&str>) -> Result<(), StoreError> {
        let Some(record) = self.store.reconcile_record(env.id).await? else { return Ok(()) };
        // A login gets its `@`; a token's or share link's name (`share-link@owner/name`) is
        // shown as it is.
        let by = match by {
            None => "someone with the URL".to_owned(),
            Some(name) if name.contains('@') => name.to_owned(),
            Some(login) => format!("@{login}"),
        };
        let actor = Actor::Visit { by };
        match actions::act(&self.store, &self.policy, &record, Action::Wake, &actor, self.job_attempts).await {
            Ok(_) => {
                tracing::info!(environment = env.id, "a visit wakes a sleeping environment");
                Ok(())
            }
            // Woken meanwhile (another visit, another replica): the page is the same.
            Err(ActionError::NotAsleep(_)) => Ok(()),
            Err(ActionError::NotLive(..)) => Ok(()),
            Err(ActionError::Store(error)) if !error.is_retryable() => Ok(()),
            Err(ActionError::Store(error)) => Err(error),
        }
    }

    /// The live environment serving `host`, from the index; an unknown host (or one whose
    /// environment is gone) rebuilds the index, at most once a second.
    async fn environment(&self, host: &str) -> Result<Option<GateRecord>, StoreError> {
        if !host.ends_with(&format!(".{}", self.policy.base_domain)) {
            return Ok(None);
        }
        let known = self.hosts.read().unwrap_or_else(|e| e.into_inner()).by_host.get(host).copied();
        if let Some(id) = known
            && let Some(env) = self.store.gate_record(id).await?
            && serves(&env, host, &self.policy.base_domain)
        {
            return Ok(Some(env));
        }
        let due = self
            .hosts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .built_at
            .is_none_or(|at| at.elapsed() >= REBUILD_AT_MOST);
        if !due {
            return Ok(None);
        }
        let records = self.store.gate_records().await?;
        let mut by_host = HashMap::with_capacity(records.len() * 2);
        let mut found = None;
        for env in records {
            for h in hosts(&env, &self.policy.base_domain) {
                if h == host {
                    found = Some(env.clone());
                }
                by_host.insert(h, env.id);
            }
        }
        *self.hosts.write().unwrap_or_else(|e| e.into_inner()) = HostIndex { by_host, built_at: Some(Instant::now()) };
        Ok(found)
    }

    /// Counts a visit let through (unless a machine made it): written at once, in the
    /// background, unless this environment's (or token's) last visit was written less than
    /// [`VISIT_WRITE_EVERY`] ago. Idle detection needs no finer time than that, and a busy
    /// preview costs one write every few seconds, not one per request.
    fn visited(&self, environment: i64, admitted: &Admitted, machine: bool) {
        let now = Instant::now();
        let mut guard = self.visits.lock().unwrap_or_else(|e| e.into_inner());
        let visits = &mut *guard;
        let due = |seen: &mut HashMap<i64, Instant>, id: Option<i64>| -> Vec<i64> {
            let Some(id) = id else { return Vec::new() };
            let stale = seen.get(&id).is_none_or(|at| now.duration_since(*at) >= VISIT_WRITE_EVERY);
            if stale {
                seen.insert(id, now);
            }
            if stale { vec![id] } else { Vec::new() }
        };
        let visited = Visited {
            environments: due(&mut visits.environments, (!machine).then_some(environment)),
            bypass_tokens: due(&mut visits.tokens, admitted.bypass_token),
            share_links: due(&mut visits.shares, admitted.share_link),
        };
        let remembered = visits.environments.len() + visits.tokens.len() + visits.shares.len();
        if remembered > MAX_REMEMBERED {
            for seen in [&mut visits.environments, &mut visits.tokens, &mut visits.shares] {
                seen.retain(|_, at| now.duration_since(*at) < VISIT_WRITE_EVERY);
            }
        }
        drop(guard);
        if visited.is_empty() {
            return;
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(error) = store.record_visits(&visited, now_ms()).await {
                tracing::warn!(%error, environments = ?visited.environments, "a visit to a preview could not be written; the next one is");
            }
        });
    }
}

/// Every host of `env`: its own (from its name, known before its first Ready) and its public
/// services' (known since its last Ready).
fn hosts(env: &GateRecord, base_domain: &str) -> Vec<String> {
    let mut hosts: Vec<String> = env.name.iter().map(|name| naming::hostname(name, base_domain)).collect();
    let services = service_urls(env.service_urls.as_deref()).into_iter().filter_map(|(_, url)| url_host(&url));
    hosts.extend(services);
    hosts
}

fn serves(env: &GateRecord, host: &str, base_domain: &str) -> bool {
    let state = EnvironmentState::parse(&env.state);
    !matches!(state, Some(EnvironmentState::Deleted | EnvironmentState::Rejected) | None)
        && hosts(env, base_domain).iter().any(|h| h == host)
}

fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host = rest.split(['/', ':']).next()?;
    Some(host.to_ascii_lowercase())
}

/// The share link's secret the request carries: in the query (its first use; `true`), or
/// in the cookie that use set.
fn share_secret(original: &Original, headers: &HeaderMap) -> Option<(SecretString, bool)> {
    let from_query = original.query(SHARE_PARAMETER).filter(|s| !s.is_empty());
    let found = match from_query {
        Some(secret) => Some((secret, true)),
        None => crate::http::dashboard::viewer::cookie(headers, SHARE_PARAMETER).map(|s| (s, false)),
    };
    found.filter(|(s, _)| !s.is_empty()).map(|(s, q)| (SecretString::from(s), q))
}

/// The bypass token the request carries: the header, or the query parameter.
fn bypass_token(original: &Original, headers: &HeaderMap) -> Option<SecretString> {
    let header = headers.get(BYPASS_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    header.or_else(|| original.query(BYPASS_QUERY)).filter(|t| !t.is_empty()).map(SecretString::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn original(path_and_query: &str) -> Original {
        Original { scheme: "https".into(), host: "app-pr-1.preview.test".into(), path_and_query: path_and_query.into() }
    }

    fn cookies(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(axum::http::header::COOKIE, value.parse().unwrap());
        headers
    }

    #[test]
    fn a_share_link_in_the_query_wins_over_its_cookie_and_empty_ones_count_for_nothing() {
        let secret = |found: Option<(SecretString, bool)>| found.map(|(s, q)| (s.expose_secret().to_owned(), q));
        let both = share_secret(&original("/a?previewd_share=pvs_new"), &cookies("previewd_share=pvs_old"));
        assert_eq!(secret(both), Some(("pvs_new".to_owned(), true)));
        let cookie = share_secret(&original("/a?x=1"), &cookies("theme=dark; previewd_share=pvs_old"));
        assert_eq!(secret(cookie), Some(("pvs_old".to_owned(), false)));
        let empty = share_secret(&original("/a?previewd_share="), &cookies("previewd_share="));
        assert_eq!(secret(empty), None);
        assert_eq!(secret(share_secret(&original("/"), &HeaderMap::new())), None);
    }

    #[test]
    fn a_bypass_token_comes_from_the_header_before_the_query() {
        let mut headers = HeaderMap::new();
        headers.insert(BYPASS_HEADER, "pvb_header".parse().unwrap());
        let token = |o: &Original, h: &HeaderMap| bypass_token(o, h).map(|t| t.expose_secret().to_owned());
        assert_eq!(token(&original("/?previewd_bypass=pvb_query"), &headers).as_deref(), Some("pvb_header"));
        assert_eq!(token(&original("/?previewd_bypass=pvb_query"), &HeaderMap::new()).as_deref(), Some("pvb_query"));
        assert_eq!(token(&original("/?previewd_bypass="), &HeaderMap::new()), None);
    }

    #[test]
    fn an_environment_serves_its_own_host_and_its_public_services_until_it_is_gone() {
        let env = GateRecord {
            id: 1,
            repo_id: 2,
            repo_owner: "acme".into(),
            repo_name: "web".into(),
            state: "Ready".into(),
            name: Some("web-pr-1-abc123".into()),
            url: Some("https://web-pr-1-abc123.preview.test".into()),
            service_urls: Some(r#"{"api":"https://api--web-pr-1-abc123.preview.test:8443/"}"#.into()),
            private: Some(true),
            asleep: false,
        };
        assert_eq!(hosts(&env, "preview.test"), ["web-pr-1-abc123.preview.test", "api--web-pr-1-abc123.preview.test"]);
        assert!(serves(&env, "api--web-pr-1-abc123.preview.test", "preview.test"));
        assert!(!serves(&env, "other.preview.test", "preview.test"));
        let gone = GateRecord { state: "Deleted".into(), ..env };
        assert!(!serves(&gone, "web-pr-1-abc123.preview.test", "preview.test"));
    }
}
