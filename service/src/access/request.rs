//! The request a proxy asks previewd about, as each kind of proxy describes it, and which
//! clients are machines that must never wake anything.

use axum::http::{HeaderMap, Uri, header};

/// The longest original URL considered; a longer one is refused (400).
pub const MAX_URL: usize = 8 * 1024;

/// The request the visitor made, as the proxy forwards its description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    /// `http` or `https`.
    pub scheme: String,
    /// Lower case, without a port.
    pub host: String,
    /// Path and query, as sent.
    pub path_and_query: String,
}

impl Original {
    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.host, self.path_and_query)
    }

    /// The value of query parameter `name`.
    pub fn query(&self, name: &str) -> Option<String> {
        let (_, query) = self.path_and_query.split_once('?')?;
        form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }
}

/// Reads the original request from what the proxy sent: `X-Original-URL` (nginx
/// `auth_request`, ingress-nginx), or `X-Forwarded-Proto`/`-Host`/`-Uri` (Traefik
/// ForwardAuth), or else the request itself (Envoy's `ext_authz` in HTTP mode sends the
/// original path and `Host`). `None` when none of them names a host and path.
pub fn original(headers: &HeaderMap, uri: &Uri) -> Option<Original> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    if let Some(url) = text("x-original-url") {
        if url.len() > MAX_URL {
            return None;
        }
        let url: Uri = url.parse().ok()?;
        let scheme = url.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let host = url.host()?.to_ascii_lowercase();
        let path_and_query = url.path_and_query().map_or("/".to_owned(), |p| p.as_str().to_owned());
        return Some(Original { scheme, host, path_and_query });
    }
    let host = text("x-forwarded-host").or_else(|| text(header::HOST.as_str()))?;
    let host = host.split(',').next()?.trim();
    let host =
        host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    let path_and_query = match text("x-forwarded-uri") {
        Some(path) => path.to_owned(),
        None => uri.path_and_query().map_or("/".to_owned(), |p| p.as_str().to_owned()),
    };
    if path_and_query.len() > MAX_URL || !path_and_query.starts_with('/') || host.is_empty() {
        return None;
    }
    let scheme = text("x-forwarded-proto").unwrap_or("https").to_ascii_lowercase();
    Some(Original { scheme, host: host.to_ascii_lowercase(), path_and_query })
}

/// Parts of user agents that are machines: health checks of load balancers and Kubernetes,
/// uptime monitors, crawlers and the link previews of chat tools. None of them counts as a
/// visit or wakes a sleeping environment.
const MACHINES: &[&str] = &[
    "kube-probe",
    "googlehc",
    "elb-healthchecker",
    "health",
    "uptime",
    "pingdom",
    "statuscake",
    "monitor",
    "bot",
    "crawler",
    "spider",
    "slurp",
    "facebookexternalhit",
    "embedly",
    "preview",
    "prometheus",
];

/// Whether `user_agent` is a machine's (see [`MACHINES`]); no user agent at all counts as one.
pub fn is_machine(user_agent: Option<&str>) -> bool {
    let Some(agent) = user_agent.filter(|a| !a.trim().is_empty()) else {
        return true;
    };
    let agent = agent.to_ascii_lowercase();
    MACHINES.iter().any(|m| agent.contains(m))
}

/// Whether the client is a browser, which gets pages; others get plain answers.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        map
    }

    #[test]
    fn each_proxy_describes_the_original_request_its_way() {
        let uri: Uri = "/_previewd/auth?mode=nginx".parse().unwrap();
        let nginx = original(&headers(&[("x-original-url", "https://App-PR-1.Preview.Test:443/a?b=c")]), &uri);
        let expected =
            Original { scheme: "https".into(), host: "app-pr-1.preview.test".into(), path_and_query: "/a?b=c".into() };
        assert_eq!(nginx.as_ref(), Some(&expected));
        assert_eq!(nginx.unwrap().query("b").as_deref(), Some("c"));
        let traefik = headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app-pr-1.preview.test"),
            ("x-forwarded-uri", "/a?b=c"),
            ("host", "previewd:8080"),
        ]);
        assert_eq!(original(&traefik, &uri), Some(expected.clone()));
        let envoy = original(&headers(&[("host", "app-pr-1.preview.test:8443")]), &"/a?b=c".parse().unwrap());
        assert_eq!(envoy, Some(expected));
        assert_eq!(original(&HeaderMap::new(), &uri), None);
        let long = format!("https://a.preview.test/{}", "x".repeat(MAX_URL));
        assert_eq!(original(&headers(&[("x-original-url", &long)]), &uri), None);
        assert_eq!(original(&headers(&[("x-forwarded-host", "a.preview.test"), ("x-forwarded-uri", "x")]), &uri), None);
    }

    #[test]
    fn probes_bots_and_link_previews_are_machines_and_browsers_are_not() {
        for agent in [
            "kube-probe/1.34",
            "GoogleHC/1.0",
            "ELB-HealthChecker/2.0",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
            "facebookexternalhit/1.1",
            "Prometheus/2.53.0",
            "",
        ] {
            assert!(is_machine(Some(agent)), "{agent}");
        }
        assert!(is_machine(None));
        for agent in [
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "curl/8.11.1",
        ] {
            assert!(!is_machine(Some(agent)), "{agent}");
        }
    }
}
