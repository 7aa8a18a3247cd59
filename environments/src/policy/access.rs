//! Who may open a preview, and when an idle one sleeps: the policy's `protection` and `sleep`
//! sections, both overridable per repository.

use super::duration_text;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Who may open a preview's URLs, as previewd's forward-authentication endpoint decides. Bypass
/// tokens and share links open a protected preview whatever the mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protection {
    /// `github` for a private repository, or one whose visibility previewd has not learnt yet
    /// (from a delivery); `none` for a public one, whose code anyone can read anyway.
    #[default]
    Auto,
    /// Anyone with the URL.
    None,
    /// People signed in with GitHub who may read the repository.
    Github,
    /// Anyone who may sign in to previewd (the members of `dashboard.allowed_orgs`), whether or
    /// not they may read the repository: for previews a whole organisation reviews.
    GithubOrg,
}

impl Protection {
    /// The mode for a repository whose visibility is `private` (`None`: not known yet).
    pub fn resolve(self, private: Option<bool>) -> Protection {
        match self {
            Protection::Auto if private == Some(false) => Protection::None,
            Protection::Auto => Protection::Github,
            other => other,
        }
    }
}

/// How long without a visit or a push before an environment sleeps: a duration (`1h`), or
/// `never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SleepAfter {
    Never,
    After(Duration),
}

impl SleepAfter {
    pub fn parse(text: &str) -> Result<SleepAfter, String> {
        if text.trim() == "never" {
            return Ok(SleepAfter::Never);
        }
        duration_text::parse(text).map(SleepAfter::After)
    }

    pub fn duration(self) -> Option<Duration> {
        match self {
            SleepAfter::Never => None,
            SleepAfter::After(d) => Some(d),
        }
    }
}

impl Serialize for SleepAfter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SleepAfter::Never => s.serialize_str("never"),
            SleepAfter::After(d) => s.collect_str(&humantime::format_duration(*d)),
        }
    }
}

impl<'de> Deserialize<'de> for SleepAfter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SleepAfter::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// When an environment nobody visits sleeps: its workloads scale to zero until a visit, a push
/// or a command wakes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SleepPolicy {
    /// Without a visit (through the forward-authentication endpoint) or a push for this long, an
    /// environment sleeps; `never` keeps every environment awake. A repository may ask for less
    /// in `.preview.yaml` (`sleep: 15m`), or for `never` when `allow_never` is set.
    pub after: SleepAfter,
    /// Whether a repository may ask never to sleep.
    pub allow_never: bool,
}

impl Default for SleepPolicy {
    fn default() -> Self {
        SleepPolicy { after: SleepAfter::After(Duration::from_secs(3600)), allow_never: false }
    }
}

/// One repository's `sleep` exceptions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SleepOverride {
    pub after: Option<SleepAfter>,
    pub allow_never: Option<bool>,
}

/// Share links: URLs that open one environment's previews for someone outside GitHub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SharePolicy {
    /// The longest a share link may stay open; a longer request is refused (the message says
    /// this limit). A link also stops opening anything once its environment is gone.
    #[serde(with = "duration_text")]
    pub max: Duration,
    /// How long a link stays open when its creator says nothing.
    #[serde(with = "duration_text")]
    pub default: Duration,
}

impl Default for SharePolicy {
    fn default() -> Self {
        SharePolicy { max: Duration::from_secs(7 * 24 * 3600), default: Duration::from_secs(24 * 3600) }
    }
}

/// Which ingress controller the rendered Ingresses wire to previewd's forward authentication.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardAuthController {
    /// The platform wires it itself (a SecurityPolicy on the Gateway, a controller's global
    /// setting); nothing is added to the routes.
    #[default]
    None,
    /// ingress-nginx: its `auth-url` / `auth-signin` annotations on every Ingress.
    IngressNginx,
    /// Traefik: a ForwardAuth Middleware the platform created, named on every Ingress.
    Traefik,
}

/// How the routes previewd renders ask its forward-authentication endpoint before each request
/// (`forward_auth`). Every preview is wired, whatever its protection: the endpoint is also where
/// previewd sees visits, without which an environment with traffic would be put to sleep.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardAuthPolicy {
    pub controller: ForwardAuthController,
    /// previewd as the controller reaches it, like `http://previewd.previewd-system.svc:8080`
    /// (ingress-nginx's `auth-url`).
    pub url: String,
    /// previewd as browsers reach it, like `https://previewd.preview.example.com`:
    /// ingress-nginx sends a visitor it does not let through there (`auth-signin`), for the
    /// sign-in redirect, the refusal or the waking page.
    pub public_url: String,
    /// Traefik's ForwardAuth Middleware, as its routers name one:
    /// `<namespace>-<name>@kubernetescrd`.
    pub traefik_middleware: String,
}

impl ForwardAuthPolicy {
    /// The annotations that wire an Ingress to the endpoint.
    pub fn ingress_annotations(&self) -> BTreeMap<String, String> {
        let trim = |url: &str| url.trim_end_matches('/').to_owned();
        let pairs: Vec<(&str, String)> = match self.controller {
            ForwardAuthController::None => Vec::new(),
            ForwardAuthController::IngressNginx => vec![
                ("nginx.ingress.kubernetes.io/auth-url", format!("{}/_previewd/auth?mode=nginx", trim(&self.url))),
                ("nginx.ingress.kubernetes.io/auth-signin", format!("{}/_previewd/page", trim(&self.public_url))),
                ("nginx.ingress.kubernetes.io/auth-response-headers", "X-Previewd-User".to_owned()),
                // A share link's cookie reaches the browser whatever the application answers.
                ("nginx.ingress.kubernetes.io/auth-always-set-cookie", "true".to_owned()),
            ],
            ForwardAuthController::Traefik => {
                vec![("traefik.ingress.kubernetes.io/router.middlewares", self.traefik_middleware.clone())]
            }
        };
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }
}

impl ForwardAuthPolicy {
    pub(super) fn check(&self, routing: super::Routing, p: &mut super::validate::Problems) {
        let http_url = |text: &str| {
            url::Url::parse(text).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        };
        match self.controller {
            ForwardAuthController::None => {}
            _ if routing == super::Routing::Gateway => p.push(
                "forward_auth.controller",
                "wires Ingresses, and routing `gateway` renders HTTPRoutes: attach the forward authentication to the Gateway (Envoy Gateway: a SecurityPolicy) and set `none`",
            ),
            ForwardAuthController::IngressNginx => {
                if !http_url(&self.url) {
                    p.push("forward_auth.url", "must be previewd's address as the controller reaches it, like http://previewd.previewd-system.svc:8080");
                }
                if !http_url(&self.public_url) {
                    p.push("forward_auth.public_url", "must be previewd's address as browsers reach it, like https://previewd.preview.example.com");
                }
            }
            ForwardAuthController::Traefik => {
                let name = &self.traefik_middleware;
                let valid = name.split_once('@').is_some_and(|(m, provider)| !m.is_empty() && !provider.is_empty())
                    && !name.contains(char::is_whitespace);
                if !valid {
                    p.push("forward_auth.traefik_middleware", "must name the ForwardAuth Middleware as `<namespace>-<name>@kubernetescrd`");
                }
            }
        }
    }
}
