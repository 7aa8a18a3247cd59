//! The dashboard over HTTP, as a browser uses it: sign-in through the GitHub stand-in's OAuth web
//! flow (redirects and cookies followed by hand, so each step is checked), the pages each person
//! may see, the live event stream, and the buttons, on both stores, against the real previewd
//! binary, control plane and DNS server (the story harness).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::story::*;
use futures::StreamExt;
use previewd_environments::model::{Cause, CommitSha, EnvironmentState, PrNumber, PullRequest, Repo, RepoId};
use previewd_environments::store::TokenScope;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// A browser: its cookies, no automatic redirects.
struct Browser {
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

/// What a request answered.
struct Answer {
    status: u16,
    location: Option<String>,
    body: String,
}

impl Browser {
    fn new() -> Browser {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Browser { http, cookies: BTreeMap::new() }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    /// Keeps the answer's cookies (a `Max-Age=0` one is deleted), and returns the raw
    /// `Set-Cookie` values for the test to check.
    fn keep_cookies(&mut self, response: &reqwest::Response) -> Vec<String> {
        let mut raw = Vec::new();
        for value in response.headers().get_all(SET_COOKIE) {
            let value = value.to_str().unwrap().to_owned();
            let (pair, _) = value.split_once(';').unwrap_or((&value, ""));
            let (name, content) = pair.split_once('=').unwrap();
            if value.contains("Max-Age=0") || content.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), content.to_owned());
            }
            raw.push(value);
        }
        raw
    }

    async fn answer(&mut self, request: reqwest::RequestBuilder) -> (Answer, Vec<String>) {
        let response = request.header(COOKIE, self.cookie_header()).send().await.unwrap();
        let set = self.keep_cookies(&response);
        let status = response.status().as_u16();
        let location = response.headers().get(LOCATION).map(|l| l.to_str().unwrap().to_owned());
        let body = unescape(&response.text().await.unwrap());
        (Answer { status, location, body }, set)
    }

    async fn get(&mut self, url: &str) -> Answer {
        self.answer(self.http.get(url)).await.0
    }

    async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Answer {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let request = self.http.post(url).header("content-type", "application/x-www-form-urlencoded").body(body);
        self.answer(request).await.0
    }
}

/// The page's text as a browser reads it: minijinja's HTML escapes (`& < > " ' /`) undone.
fn unescape(html: &str) -> String {
    html.replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// A location relative to `base`, made absolute.
fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http") { location.to_owned() } else { format!("{base}{location}") }
}

/// Signs `login` in (the stand-in's browser is signed in to GitHub as them) by opening `start`
/// and following every redirect: previewd, GitHub's authorize page, previewd's callback, back
/// to `start`. Checks the cookies on the way; returns the browser and the page finally shown.
async fn sign_in(s: &Story, login: &str, start: &str) -> (Browser, Answer) {
    s.github.configure(json!({"oauth_user": login})).await.unwrap();
    let base = s.previewd.base.clone();
    let mut browser = Browser::new();
    let first = browser.get(&format!("{base}{start}")).await;
    assert_eq!(first.status, 303, "a page without a session sends the browser to sign in: {}", first.body);
    let login_url = absolute(&base, first.location.as_deref().unwrap());
    assert!(login_url.starts_with(&format!("{base}/auth/login?next=")), "{login_url}");
    let (to_github, set) = browser.answer(browser.http.get(&login_url)).await;
    assert_eq!(to_github.status, 303);
    let authorize = to_github.location.unwrap();
    assert!(authorize.starts_with(&format!("{}/login/oauth/authorize?", s.github.url())), "{authorize}");
    assert!(authorize.contains(&format!("client_id={STANDIN_CLIENT_ID}")), "{authorize}");
    let state_cookie = set.iter().find(|c| c.starts_with("previewd_oauth=")).expect("the sign-in's state cookie");
    assert!(state_cookie.contains("HttpOnly") && state_cookie.contains("SameSite=Lax"), "{state_cookie}");
    let back = browser.get(&authorize).await;
    assert_eq!(back.status, 302, "GitHub sends a signed-in person straight back: {}", back.body);
    let callback = back.location.unwrap();
    assert!(callback.starts_with(&format!("{base}/auth/callback?")), "{callback}");
    let (signed_in, set) = browser.answer(browser.http.get(&callback)).await;
    assert_eq!(signed_in.status, 303, "the callback: {}", signed_in.body);
    assert_eq!(signed_in.location.as_deref(), Some(start));
    let session = set.iter().find(|c| c.starts_with("previewd_session=")).expect("the session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax") && session.contains("Path=/"),
        "{session}"
    );
    assert!(!session.contains("Secure"), "no Secure cookie over plain http: {session}");
    let page = browser.get(&format!("{base}{start}")).await;
    (browser, page)
}

/// The session's CSRF token, from a page's forms.
fn csrf(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a form with the CSRF token") + 19;
    page[at..].split('"').next().unwrap().to_owned()
}

/// An environment of another repository of the same installation, which `writer` and `reader`
/// have no access to.
fn elsewhere(n: i64) -> PullRequest {
    PullRequest {
        repo: Repo { id: RepoId(4_242_424), owner: OWNER.into(), name: "secret-project".into() },
        number: PrNumber(n),
        head_sha: CommitSha("c".repeat(40)),
        head_branch: "hidden-branch".into(),
        author: "someone".into(),
        from_fork: false,
        draft: false,
        labels: vec![],
    }
}

previewd_e2e::each_backend! {
    async fn people_sign_in_with_github_see_their_repositories_and_act_with_write_access(db) {
        let mut s = story(&db, |p| p).await;
        let base = s.previewd.base.clone();
        s.github.add_repo(4_242_424, OWNER, "secret-project", Some(INSTALLATION)).await.unwrap();
        s.github.set_permission(OWNER, "secret-project", "boss", "admin").await.unwrap();
        let hidden = s.store.record_environment(&elsewhere(7), EnvironmentState::Pending, None, &Cause::Previewd).await.unwrap();
        s.open(1, &sha('a')).await;
        let ready = s.wait_state(1, "Ready").await;
        let mine = format!("{OWNER}/{}#1", s.repo);

        // Someone GitHub does not sign in is refused, and gets no session.
        s.github.configure(json!({"oauth_user": null})).await.unwrap();
        let mut stranger = Browser::new();
        let to_github = stranger.get(&format!("{base}/auth/login")).await;
        let back = stranger.get(to_github.location.as_deref().unwrap()).await;
        let refused = stranger.get(back.location.as_deref().unwrap()).await;
        assert_eq!(refused.status, 403, "{}", refused.body);
        assert!(refused.body.contains("GitHub did not sign you in"), "{}", refused.body);
        assert!(!stranger.cookies.contains_key("previewd_session"));
        // A callback whose state was not started here is refused.
        let forged = Browser::new().get(&format!("{base}/auth/callback?code=abc&state=forged")).await;
        assert_eq!(forged.status, 400, "{}", forged.body);
        assert!(forged.body.contains("state:"), "{}", forged.body);

        // The writer sees their repository's environment, not the other one.
        let (mut writer, page) = sign_in(&s, "writer", "/").await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains(&mine) && page.body.contains("Signed in as <strong>writer</strong>"), "{}", page.body);
        assert!(!page.body.contains("secret-project"), "another repository's environment is not shown");
        let not_theirs = writer.get(&format!("{base}/environments/{}", hidden.id)).await;
        assert_eq!(not_theirs.status, 404, "{}", not_theirs.body);
        assert!(!not_theirs.body.contains("secret-project"));
        // A browser's navigation gets the same refusal as a page (scripts keep the JSON).
        let request = writer.http.get(format!("{base}/environments/{}", hidden.id)).header("accept", "text/html,*/*;q=0.8");
        let (page, _) = writer.answer(request).await;
        assert_eq!(page.status, 404);
        assert!(page.body.starts_with("<!doctype html>") && page.body.contains("<h1>Not Found</h1>"), "{}", page.body);
        assert!(page.body.contains(&format!("there is no environment {} you may see", hidden.id)), "{}", page.body);
        assert!(not_theirs.body.starts_with('{'), "without text/html: JSON {}", not_theirs.body);

        // Its page: the history, the objects, and the buttons (the writer may act).
        let page = writer.get(&format!("{base}/environments/{}", ready.id)).await;
        assert_eq!(page.status, 200, "{}", page.body);
        for part in ["History", "Objects in its namespace", "Deployment", "Extend", "Redeploy", "Destroy",
            "/pull/1\"", "/deployments/preview%2Fpr-1\"", "pull_request.opened by @"] {
            assert!(page.body.contains(part), "the environment page shows {part}: {}", page.body);
        }
        let token = csrf(&page.body);
        // The pull request's title, as the delivery named it.
        let title = s.store.environment_summary(ready.id).await.unwrap().unwrap().title.expect("the delivery's title");
        assert!(!title.is_empty() && page.body.contains(&title), "the page shows the title {title:?}");

        // Acting needs the session's CSRF token: another site's form cannot act.
        let url = format!("{base}/environments/{}", ready.id);
        let forged = writer.post(&format!("{url}/extend"), &[("csrf", "guess"), ("duration", "2h")]).await;
        assert_eq!(forged.status, 403, "{}", forged.body);
        assert_eq!(s.environment(1).await.unwrap().expires_at, ready.expires_at, "a refused action changes nothing");
        let bad = writer.post(&format!("{url}/extend"), &[("csrf", &token), ("duration", "soon")]).await;
        assert_eq!(bad.status, 422);
        assert!(bad.body.contains("duration: must be a duration like 2h"), "the page says why: {}", bad.body);

        let extended = writer.post(&format!("{url}/extend"), &[("csrf", &token), ("duration", "3h")]).await;
        assert_eq!(extended.status, 303, "{}", extended.body);
        assert_eq!(extended.location.as_deref(), Some(format!("/environments/{}?done=extend", ready.id).as_str()));
        let after = s.environment(1).await.unwrap();
        assert!(after.expires_at.unwrap() > ready.expires_at.unwrap(), "the expiry moved: {after:?}");
        s.comment_says(1, &["extended to", "by @writer via the dashboard"]).await;
        let shown = writer.get(&absolute(&base, extended.location.as_deref().unwrap())).await;
        assert!(shown.body.contains("Extended."), "{}", shown.body);

        // A share link, made on the page: its URL shown that once, then listed without it, and
        // revoked from the page.
        let made = writer.post(&format!("{url}/share"), &[("csrf", &token), ("expires_in", "2h")]).await;
        assert_eq!(made.status, 200, "{}", made.body);
        let body = unescape(&made.body);
        let shared = body.split("value=\"").find_map(|v| v.split('"').next().filter(|v| v.contains("previewd_share=")));
        let shared = shared.unwrap_or_else(|| panic!("the page shows the new link: {body}"));
        assert!(shared.starts_with(ready.url.as_deref().unwrap()) && shared.contains("/?previewd_share=pvs_"), "{shared}");
        let links = s.store.share_links(ready.id).await.unwrap();
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].created_by, "github:writer");
        assert_eq!((links[0].expires_at - links[0].created_at) / 1000, 7200);
        let listed = writer.get(&url).await;
        assert!(!listed.body.contains("previewd_share=") && listed.body.contains(&format!("#{}", links[0].id)), "{}", listed.body);
        let revoked = writer.post(&format!("{url}/share-links/{}/revoke", links[0].id), &[("csrf", &token)]).await;
        assert_eq!(revoked.status, 303, "{}", revoked.body);
        assert!(s.store.share_links(ready.id).await.unwrap()[0].revoked_at.is_some());
        let too_long = writer.post(&format!("{url}/share"), &[("csrf", &token), ("expires_in", "30d")]).await;
        assert_eq!(too_long.status, 422);
        assert!(unescape(&too_long.body).contains("expires_in: must be longer than 0s and at most the policy's share_links.max (7days)"), "{}", too_long.body);

        // A reader sees the environment but no buttons, and is refused if they post anyway.
        let (mut reader, page) = sign_in(&s, "reader", &format!("/environments/{}", ready.id)).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains(&mine) && !page.body.contains(">Destroy</button>"), "{}", page.body);
        let reader_csrf = csrf(&page.body);
        let refused = reader.post(&format!("{url}/destroy"), &[("csrf", &reader_csrf), ("confirm", "yes")]).await;
        assert_eq!(refused.status, 403, "{}", refused.body);
        assert!(refused.body.contains("needs write access"), "{}", refused.body);
        assert_eq!(s.environment(1).await.unwrap().state, "Ready");
        let refused = reader.post(&format!("{url}/share"), &[("csrf", &reader_csrf)]).await;
        assert_eq!(refused.status, 403, "a reader makes no share link: {}", refused.body);

        // The live stream: a pull request opened after the page loaded arrives and turns Ready;
        // the other repository's changes, made first, never reach the writer.
        let stream = writer.http.get(format!("{base}/events")).header(COOKIE, writer.cookie_header()).send().await.unwrap();
        assert_eq!(stream.status(), 200);
        assert_eq!(stream.headers()["content-type"], "text/event-stream");
        s.store.record_environment(&elsewhere(7), EnvironmentState::Provisioning, None, &Cause::Previewd).await.unwrap();
        s.open(2, &sha('b')).await;
        let bytes = futures::stream::unfold(stream, |mut r| async move {
            r.chunk().await.transpose().map(|chunk| (chunk, r))
        });
        let mut events = std::pin::pin!(eventsource_stream::Eventsource::eventsource(bytes));
        // (repository#number state, event id) of each change, until #2 is Ready.
        let mut seen: Vec<(String, String)> = Vec::new();
        let mut until_ready = async |number: i64, seen: &mut Vec<(String, String)>| {
            let found = tokio::time::timeout(Duration::from_secs(120), async {
                while let Some(event) = events.next().await {
                    let event = event.unwrap();
                    if event.event != "change" {
                        continue;
                    }
                    let change: Value = serde_json::from_str(&event.data).unwrap();
                    let e = &change["environment"];
                    let what = format!("{}#{} {}", e["repository"].as_str().unwrap(), e["pull_request"]["number"], e["state"]);
                    seen.push((what, event.id.clone()));
                    if e["pull_request"]["number"] == number && e["state"] == "Ready" {
                        return;
                    }
                }
            }).await;
            assert!(found.is_ok(), "pull request {number} turns Ready on the stream; seen: {seen:?}");
        };
        until_ready(2, &mut seen).await;
        // A second environment's changes come after the first event whatever the feed's timing
        // (one environment's quick changes may reach the stream as one), so there is something
        // to resume.
        s.open(3, &sha('c')).await;
        until_ready(3, &mut seen).await;
        assert!(seen.iter().all(|(e, _)| !e.contains("secret-project")), "{seen:?}");
        // A browser that reconnects with the first event's id is sent what came after it.
        assert!(seen.len() >= 2, "{seen:?}");
        let resumed = writer.http.get(format!("{base}/events")).header(COOKIE, writer.cookie_header())
            .header("last-event-id", &seen[0].1).send().await.unwrap();
        let bytes = futures::stream::unfold(resumed, |mut r| async move {
            r.chunk().await.transpose().map(|chunk| (chunk, r))
        });
        let mut replay = std::pin::pin!(eventsource_stream::Eventsource::eventsource(bytes));
        // Several changes of one environment are sent as its last one.
        let expected: Vec<&str> = seen[1..].iter().map(|(_, id)| id.as_str()).collect();
        let last = seen.last().unwrap().1.clone();
        let mut replayed: Vec<String> = Vec::new();
        while replayed.last() != Some(&last) {
            let event = tokio::time::timeout(Duration::from_secs(10), replay.next()).await
                .unwrap_or_else(|_| panic!("the missed events are sent at once; got {replayed:?} of {expected:?}")).unwrap().unwrap();
            if event.event == "change" {
                assert!(expected.contains(&event.id.as_str()), "{} was not missed: {expected:?}", event.id);
                replayed.push(event.id);
            }
        }
        let numbers: Vec<i64> = replayed.iter().map(|id| id.parse().unwrap()).collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "in order: {numbers:?}");

        // Destroying asks for confirmation, then tears down, said on the pull request.
        let unconfirmed = writer.post(&format!("{url}/destroy"), &[("csrf", &token)]).await;
        assert_eq!(unconfirmed.status, 422);
        assert!(unconfirmed.body.contains("confirm: tick the box"), "{}", unconfirmed.body);
        let destroyed = writer.post(&format!("{url}/destroy"), &[("csrf", &token), ("confirm", "yes")]).await;
        assert_eq!(destroyed.status, 303, "{}", destroyed.body);
        let gone = s.wait_state(1, "Deleted").await;
        assert_eq!(gone.reason.as_deref(), Some("destroyed by @writer via the dashboard"));
        s.comment_says(1, &["destroyed by @writer via the dashboard"]).await;

        // The audit log has the person, each action and each refusal.
        let (_, admin) = s.store.create_token("audit", TokenScope::Admin).await.unwrap();
        let audit: Value = reqwest::Client::new().get(format!("{base}/api/v1/audit")).bearer_auth(admin.expose_secret())
            .send().await.unwrap().json().await.unwrap();
        let entries: Vec<String> = audit["entries"].as_array().unwrap().iter()
            .map(|e| format!("{} {} {}", e["actor"].as_str().unwrap(), e["action"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
            .collect();
        for wanted in ["github:writer dashboard.sign_in done", "github:writer environment.extend done",
            "github:writer environment.destroy done", "github:reader environment.destroy refused (403)",
            "github:writer share_link.create done", "github:writer share_link.revoke done",
            "github:reader share_link.create refused (403)"] {
            assert!(entries.iter().any(|e| e.starts_with(wanted)), "{wanted} in {entries:?}");
        }

        // An API token sees every environment (scripts), the other repository's too.
        let page = reqwest::Client::new().get(format!("{base}/")).bearer_auth(admin.expose_secret()).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.text().await.unwrap().contains("secret-project#7"));

        // Signing out ends the session: its cookie opens nothing any more.
        let old = writer.cookies.clone();
        let out = writer.post(&format!("{base}/auth/logout"), &[("csrf", &token)]).await;
        assert_eq!(out.status, 303);
        assert!(!writer.cookies.contains_key("previewd_session"), "the cookie is cleared");
        writer.cookies = old;
        let after = writer.get(&format!("{base}/")).await;
        assert_eq!(after.status, 303, "the ended session is sent to sign in again");
        s.github.assert_no_violations().await.unwrap();
        s.finish().await;
    }

    async fn sign_in_can_be_limited_to_organisations_and_admins_come_from_a_team(db) {
        let s = story_with(&db, |p| p, &[
            ("PREVIEWD_DASHBOARD__ALLOWED_ORGS", "[acme]".to_owned()),
            ("PREVIEWD_DASHBOARD__ADMINS", "[acme/platform, root]".to_owned()),
        ]).await;
        let base = s.previewd.base.clone();
        // Not a member of acme: refused at the callback, with the reason.
        s.github.configure(json!({"oauth_user": "writer"})).await.unwrap();
        let mut outsider = Browser::new();
        let to_github = outsider.get(&format!("{base}/auth/login")).await;
        let back = outsider.get(to_github.location.as_deref().unwrap()).await;
        let refused = outsider.get(back.location.as_deref().unwrap()).await;
        assert_eq!(refused.status, 403, "{}", refused.body);
        assert!(refused.body.contains("@writer is not a member of an organisation allowed to sign in (acme)"), "{}", refused.body);

        // A member signs in; a member of acme/platform is an admin and sees the Platform link.
        s.github.put_control("org_members", json!({"org": "acme", "logins": ["writer", "ops"]})).await.unwrap();
        s.github.put_control("team_members", json!({"org": "acme", "team": "platform", "logins": ["ops"]})).await.unwrap();
        let (_, page) = sign_in(&s, "writer", "/").await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(!page.body.contains("href=\"/platform\""), "writer is no admin");
        // Where the browser goes back to survives the trip whatever it holds (`;` ends a cookie).
        let (mut writer, page) = sign_in(&s, "writer", "/?q=a;b,c").await;
        assert_eq!(page.status, 200, "{}", page.body);
        let (mut ops, page) = sign_in(&s, "ops", "/").await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains("href=\"/platform\""), "ops is an admin through acme/platform: {}", page.body);

        // The platform page: limits and the queue, usage, what expires soon, the day's failures.
        s.store.record_environment(&elsewhere(7), EnvironmentState::Pending, None, &Cause::Previewd).await.unwrap();
        let e = s.store.record_environment(&elsewhere(7), EnvironmentState::Provisioning, None, &Cause::Previewd).await.unwrap();
        let reason = "rollout failed: the image cannot be pulled: registry.test/app:abc (ErrImagePull)";
        s.store.record_environment(&elsewhere(7), EnvironmentState::Failed, Some(reason), &Cause::Previewd).await.unwrap();
        s.store.set_expiry(e.id, previewd_environments::time::now_ms() + 1_800_000, None).await.unwrap();
        assert_eq!(writer.get(&format!("{base}/platform")).await.status, 403, "writer is no admin");
        let platform = ops.get(&format!("{base}/platform?days=1&group_by=repository")).await;
        assert_eq!(platform.status, 200, "{}", platform.body);
        for part in ["Limits now", "jobs queued", "Environment-hours per repository, last 1 day<",
            "acme/secret-project", &format!("href=\"/environments/{}\"", e.id), "image_pull", reason,
            "check that CI pushed the image"] {
            assert!(platform.body.contains(part), "the platform page shows {part}: {}", platform.body);
        }
        assert_eq!(ops.get(&format!("{base}/platform?days=2")).await.status, 400);
        s.github.assert_no_violations().await.unwrap();
        s.finish().await;
    }
}

/// The Chromium the browser tests drive: `PREVIEWD_TEST_CHROMIUM`, set by `e2e/browser.sh`
/// (which installs Debian's package); the test fails, saying so, without it.
fn chromium() -> String {
    let path = std::env::var("PREVIEWD_TEST_CHROMIUM").unwrap_or_default();
    assert!(
        !path.is_empty() && std::path::Path::new(&path).exists(),
        "PREVIEWD_TEST_CHROMIUM does not name a Chromium ({path:?}): run `eval \"$(e2e/browser.sh up)\"` (e2e/test.sh does)"
    );
    path
}

/// A reviewer's walk through the dashboard in headless Chromium (`e2e/browser/dashboard.mjs`,
/// Playwright): signing in through the stand-in's OAuth flow, the table, a pull request opened
/// after the page loaded arriving live and turning Ready, extend and destroy from the page (seen
/// on the pull request), a failure's cause, the platform page, a reader refused, axe-core on
/// every page, and screenshots at desktop and phone widths (their folder is listed by
/// `e2e/test.sh` at the end). One store: the HTTP tests above cover both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reviewer_uses_the_dashboard_in_a_real_browser() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let chromium = chromium();
    let db = previewd_e2e::database::fresh(previewd_e2e::database::Backend::Sqlite).await.unwrap();
    // A failure stays Failed: the page shows its cause whatever the retries would do.
    // The writer is an admin too, so the walk covers the platform page.
    let overrides =
        [("PREVIEWD_ENGINE__FAILED_RETRIES", "0".to_owned()), ("PREVIEWD_DASHBOARD__ADMINS", "[writer]".to_owned())];
    let mut s = story_with(&db, |p| p, &overrides).await;
    s.github.add_repo(4_242_424, OWNER, "secret-project", Some(INSTALLATION)).await.unwrap();
    s.store.record_environment(&elsewhere(7), EnvironmentState::Pending, None, &Cause::Previewd).await.unwrap();
    s.open(1, &sha('a')).await;
    let ready = s.wait_state(1, "Ready").await;
    let broken = PullRequest {
        repo: Repo { id: RepoId(s.repo_id), owner: OWNER.into(), name: s.repo.clone() },
        number: PrNumber(99),
        ..elsewhere(99)
    };
    s.store.record_environment(&broken, EnvironmentState::Pending, None, &Cause::Previewd).await.unwrap();
    let reason = "rollout failed: the image cannot be pulled: registry.test/app:abc (ErrImagePull)";
    let broken =
        s.store.record_environment(&broken, EnvironmentState::Failed, Some(reason), &Cause::Previewd).await.unwrap();

    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&out).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/browser/dashboard.mjs");
    let mut driver = tokio::process::Command::new("node")
        .arg(&script)
        .env("BASE", &s.previewd.base)
        .env("STANDIN", s.github.url())
        .env("CHROMIUM", &chromium)
        .env("OUT", &out)
        .env("PR1", format!("{OWNER}/{}#1", s.repo))
        .env("PR2", format!("{OWNER}/{}#2", s.repo))
        .env("ENV1", ready.id.to_string())
        .env("BROKEN", broken.id.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs e2e/browser/dashboard.mjs");
    let mut stdin = driver.stdin.take().unwrap();
    let mut lines = tokio::io::BufReader::new(driver.stdout.take().unwrap()).lines();
    let mut steps = Vec::new();
    let last = loop {
        let line = tokio::time::timeout(Duration::from_secs(300), lines.next_line())
            .await
            .expect("the browser driver says something within 300 s")
            .unwrap()
            .unwrap_or_else(|| panic!("the browser driver ended after {steps:?}"));
        let said: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        if said.get("ok").is_some() {
            break said;
        }
        let step = said["step"].as_str().unwrap().to_owned();
        if step == "watching" {
            // The page is loaded and its event stream open: now the pull request is opened.
            s.open(2, &sha('b')).await;
            stdin.write_all(b"go\n").await.unwrap();
        }
        steps.push(step);
    };
    assert_eq!(
        last["ok"],
        true,
        "the browser walk failed after {steps:?}: {}",
        last["error"].as_str().unwrap_or_default()
    );
    assert_eq!(steps, ["watching", "live", "extended", "destroyed", "platform", "refused"]);
    assert!(driver.wait().await.unwrap().success());
    for shot in last["screenshots"].as_array().unwrap() {
        let path = shot.as_str().unwrap();
        assert!(std::fs::metadata(path).unwrap().len() > 1000, "{path} is a picture");
        println!("screenshot: {path}");
    }
    // What the browser did is on the pull request, said as the dashboard's.
    s.comment_says(1, &["extended to", "by @writer via the dashboard"]).await;
    let gone = s.wait_state(1, "Deleted").await;
    assert_eq!(gone.reason.as_deref(), Some("destroyed by @writer via the dashboard"));
    s.github.assert_no_violations().await.unwrap();
    s.finish().await;
}
