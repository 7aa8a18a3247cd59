//! The README's first command (`e2e/demo.sh`): previewd as a user runs it, on the embedded
//! SQLite store, against a Kubernetes cluster (the local control plane, or the one the user's
//! `KUBECONFIG` names). It sends a signed `pull_request` `opened` delivery built from GitHub's
//! published example, shows the environment being provisioned, put to sleep when nobody visits
//! it and woken by a visit, closes the pull request and shows the teardown.

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::{Api, ListParams};
use previewd_e2e::fixtures::example;
use previewd_e2e::standin::GitHubStandIn;
use sqlx::Connection;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "demo-webhook-secret";

/// Stops previewd when the demo ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        // SIGTERM for a graceful stop; kill if it does not go within a few seconds.
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn say(text: &str) {
    println!("\n==> {text}");
}

fn env_path(name: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os(name).map(PathBuf::from).with_context(|| format!("{name} must be set (e2e/demo.sh sets it)"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let binary = env_path("DEMO_PREVIEWD_BIN")?;
    // previewd's own credentials (least privilege on the local cluster) and the viewer's.
    let previewd_kubeconfig = env_path("DEMO_PREVIEWD_KUBECONFIG")?;
    let viewer_kubeconfig = env_path("DEMO_VIEWER_KUBECONFIG")?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir()?;
    let database = dir.path().join("previewd.db");
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    // DEMO_KEEP=1: wait at the Ready environment, so a person can click through the dashboard.
    let keep = std::env::var_os("DEMO_KEEP").is_some_and(|v| !v.is_empty());

    // GitHub is played by the stand-in the tests use: previewd reads `.preview.yaml` from it and
    // reports there, exactly as it would on github.com.
    let github = GitHubStandIn::start().await?;
    let app = github.app().await?;
    let key = dir.path().join("app.pem");
    std::fs::write(&key, &app.private_key_pem)?;

    say(&format!("starting `previewd serve` on {base}, embedded SQLite store {}", database.display()));
    let mut command = Command::new(&binary);
    // Every PREVIEWD_* variable is a setting of previewd's: the demo's own (PREVIEWD_DEMO_LOCAL)
    // and whatever the shell has would be refused or change what the demo shows.
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("PREVIEWD_")) {
        command.env_remove(name);
    }
    let child = command
        .arg("serve")
        .env("PREVIEWD_LISTEN", format!("127.0.0.1:{port}"))
        .env("PREVIEWD_DATABASE_URL", format!("sqlite://{}", database.display()))
        .env("PREVIEWD_WEBHOOK_SECRETS", SECRET)
        .env("PREVIEWD_POLICY_FILE", root.join("e2e/demo/policy.yaml"))
        .env("PREVIEWD_TEMPLATES_DIR", root.join("templates"))
        .env("PREVIEWD_KUBECONFIG", &previewd_kubeconfig)
        .env("PREVIEWD_INSTANCE", "demo")
        .env("PREVIEWD_LOG_FILTER", "warn")
        // The periodic pass (which puts idle environments to sleep) every 2 s, not every minute,
        // so the demo's environment sleeps soon after the policy's `sleep.after`.
        .env("PREVIEWD_ENGINE__RESYNC_INTERVAL_SECONDS", "2")
        .env("PREVIEWD_GITHUB__API_URL", github.url())
        .env("PREVIEWD_GITHUB__APP_ID", app.app_id.to_string())
        .env("PREVIEWD_GITHUB__PRIVATE_KEY_FILE", &key)
        // The dashboard signs people in through the stand-in's OAuth web flow.
        .env("PREVIEWD_DASHBOARD__PUBLIC_URL", &base)
        .env("PREVIEWD_GITHUB__WEB_URL", github.url())
        .env("PREVIEWD_GITHUB__CLIENT_ID", previewd_e2e::standin::CLIENT_ID)
        .env("PREVIEWD_GITHUB__CLIENT_SECRET", previewd_e2e::standin::CLIENT_SECRET)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let mut previewd = Running(child);
    let http = reqwest::Client::new();
    wait_ready(&http, &base, &mut previewd.0).await?;

    let mut opened = example("pull_request", "opened")?;
    opened["installation"] = serde_json::json!({"id": 1});
    let repo = opened["repository"]["full_name"].as_str().unwrap_or("?").to_owned();
    let (repo_owner, repo_name) = repo.split_once('/').context("owner/name")?;
    let number = opened["number"].as_i64().unwrap_or(0);
    let head = opened["pull_request"]["head"]["sha"].as_str().unwrap_or_default().to_owned();
    github
        .configure(serde_json::json!({"webhook_url": format!("{base}/webhooks/github"), "webhook_secret": SECRET}))
        .await?;
    github.add_repo(opened["repository"]["id"].as_i64().unwrap_or(1), repo_owner, repo_name, Some(1)).await?;
    // The pull request's author may write to the repository, and the stand-in's browser is
    // signed in to GitHub as them: the dashboard shows them their environment and its buttons.
    let author = opened["pull_request"]["user"]["login"].as_str().unwrap_or("dev").to_owned();
    github.set_permission(repo_owner, repo_name, &author, "write").await?;
    github.configure(serde_json::json!({"oauth_user": author})).await?;
    let preview = std::fs::read_to_string(root.join("e2e/demo/preview.yaml"))?;
    github.put_file(repo_owner, repo_name, &head, ".preview.yaml", Some(&preview)).await?;
    github
        .open_pull(serde_json::json!({"owner": repo_owner, "repo": repo_name, "number": number, "head_sha": head}))
        .await?;
    say(&format!("GitHub: pull request {repo}#{number} opened (signed delivery from GitHub's published example)"));
    deliver(&github, "pull_request", &opened).await?;

    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", database.display())).await?;
    say("previewd provisions the environment");
    let mut shown = 0;
    let (id, name, url) = follow(&mut db, number, &["Ready", "Failed", "Rejected"], &mut shown).await?;
    let Some(name) = name else { bail!("the environment has no namespace; see the states above") };

    say(&format!("the environment's objects in namespace {name}"));
    let client = viewer(&viewer_kubeconfig).await?;
    show_objects(&client, &name).await?;
    let url = url.unwrap_or_default();
    say(&format!("preview URL: {url}"));
    let services: Option<String> =
        sqlx::query_scalar("SELECT service_urls FROM environments WHERE id = ?").bind(id).fetch_one(&mut db).await?;
    for (service, url) in previewd_environments::store::service_urls(services.as_deref()) {
        println!("    {service}: {url}");
    }
    show_github(&github, number, "Ready").await?;
    say(&format!(
        "the dashboard: {base}/ (sign-in goes through the GitHub stand-in, as @{author}); this environment: {base}/environments/{id}"
    ));
    if keep {
        say("DEMO_KEEP is set: the dashboard stays open; press Enter to go on (merge and teardown)");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
    }

    sleep_and_wake(&mut db, &github, &http, &base, &client, &name, &url, number, &mut shown).await?;

    say(&format!("GitHub: pull request {repo}#{number} merged"));
    let mut closed = opened.clone();
    closed["action"] = "closed".into();
    closed["pull_request"]["state"] = "closed".into();
    closed["pull_request"]["merged"] = true.into();
    github.update_pull(repo_owner, repo_name, number, serde_json::json!({"state": "closed", "merged": true})).await?;
    deliver(&github, "pull_request", &closed).await?;
    say("previewd tears the environment down");
    follow(&mut db, number, &["Deleted"], &mut shown).await?;
    show_github(&github, number, "torn down").await?;
    let namespaces: Api<Namespace> = Api::all(client);
    let gone = namespaces.get_opt(&name).await?.is_none();
    println!("    namespace {name}: {}", if gone { "gone" } else { "still there" });
    if !gone {
        bail!("namespace {name} is still there after teardown");
    }
    let history: Vec<(Option<String>, String, Option<String>)> = sqlx::query_as(
        "SELECT from_state, to_state, reason FROM environment_transitions WHERE environment_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(&mut db)
    .await?;
    say("the environment's recorded history");
    for (from, to, reason) in history {
        println!(
            "    {:>12} -> {to}{}",
            from.unwrap_or_default(),
            reason.map(|r| format!(" ({r})")).unwrap_or_default()
        );
    }
    if keep {
        say(&format!("the dashboard still shows the story at {base}/; press Enter to stop"));
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
    }
    say("stopping previewd (SIGTERM)");
    Ok(())
}

/// The browser a reviewer opens the preview with, and a Kubernetes probe.
const BROWSER: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36";
const PROBE: &str = "kube-probe/1.34";

/// Nobody visits: the environment sleeps (Deployments at zero). A probe's request wakes
/// nothing; a reviewer's visit, as the proxy in front of previews asks previewd about it
/// (`/_previewd/auth`), gets the waking page and wakes it; once Ready the next is let through.
#[allow(clippy::too_many_arguments)]
async fn sleep_and_wake(
    db: &mut sqlx::SqliteConnection,
    github: &GitHubStandIn,
    http: &reqwest::Client,
    base: &str,
    client: &kube::Client,
    namespace: &str,
    url: &str,
    number: i64,
    shown: &mut usize,
) -> anyhow::Result<()> {
    say("nobody visits the preview for 15 s (policy `sleep.after`): previewd puts it to sleep");
    follow(db, number, &["Sleeping"], shown).await?;
    show_replicas(client, namespace, true).await?;
    show_github(github, number, "asleep").await?;
    let visit = |agent: &'static str| {
        http.get(format!("{base}/_previewd/auth"))
            .header("x-original-url", url)
            .header("user-agent", agent)
            .header("accept", "text/html")
            .send()
    };
    say(&format!("a Kubernetes probe asks for {url}: the waking page, and it stays asleep"));
    let probe = visit(PROBE).await?;
    println!("    previewd answered {} (Retry-After: {})", probe.status(), retry_after(&probe));
    let state: String = sqlx::query_scalar("SELECT state FROM environments WHERE pr_number = $1")
        .bind(number)
        .fetch_one(&mut *db)
        .await?;
    println!("    state: {state}");
    if state != "Sleeping" {
        bail!("a probe woke the environment (it is {state})");
    }
    say(&format!("a reviewer opens {url}: the proxy asks previewd, which shows the waking page and wakes it"));
    let waking = visit(BROWSER).await?;
    let status = waking.status();
    let page = waking.text().await?;
    let title = page.split("<h1>").nth(1).and_then(|t| t.split("</h1>").next()).unwrap_or("?");
    println!("    previewd answered {status}: \"{title}\", the page reloads itself every few seconds");
    follow(db, number, &["Ready", "Failed"], shown).await?;
    show_replicas(client, namespace, false).await?;
    let through = visit(BROWSER).await?;
    println!(
        "    the reviewer's next request: previewd answered {} (let through to the application)",
        through.status()
    );
    if through.status() != reqwest::StatusCode::OK {
        bail!("the woken environment's visit was not let through");
    }
    Ok(())
}

fn retry_after(response: &reqwest::Response) -> String {
    response.headers().get("retry-after").and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned()
}

/// Each Deployment's replicas, and those it had awake, once all of them are scaled to zero
/// (`asleep`) or none is: the state changes first, then the reconcile scales.
async fn show_replicas(client: &kube::Client, namespace: &str, asleep: bool) -> anyhow::Result<()> {
    let api = Api::<Deployment>::namespaced(client.clone(), namespace);
    let replicas = |d: &Deployment| d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let deadline = Instant::now() + Duration::from_secs(60);
    let deployments = loop {
        let deployments = api.list(&ListParams::default()).await?.items;
        if deployments.iter().all(|d| (replicas(d) == 0) == asleep) {
            break deployments;
        }
        if Instant::now() > deadline {
            bail!("the Deployments were not {} within 60 s", if asleep { "scaled to zero" } else { "scaled back" });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for deployment in deployments {
        let awake =
            deployment.metadata.annotations.as_ref().and_then(|a| a.get("previewd.dev/awake-replicas")).cloned();
        println!(
            "    Deployment {}: replicas {}{}",
            deployment.metadata.name.as_deref().unwrap_or_default(),
            replicas(&deployment),
            awake.map(|n| format!(" (previewd.dev/awake-replicas: {n})")).unwrap_or_default()
        );
    }
    Ok(())
}

async fn deliver(github: &GitHubStandIn, event: &str, payload: &serde_json::Value) -> anyhow::Result<()> {
    let delivered = github.deliver(event, payload).await?;
    println!("    previewd answered {}", delivered.status_code);
    if delivered.status_code != 202 {
        bail!("previewd refused the delivery");
    }
    Ok(())
}

/// Waits until previewd's comment on the pull request mentions `until`, then prints it and the
/// deployment statuses as GitHub would show them.
async fn show_github(github: &GitHubStandIn, number: i64, until: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        let comments = github.comments(number).await?;
        let sticky = comments.iter().filter_map(|c| c["body"].as_str()).find(|b| b.contains("<!-- previewd:"));
        if let Some(body) = sticky.filter(|b| b.contains(until) || (until == "Ready" && b.contains("ready"))) {
            break body.to_owned();
        }
        if Instant::now() > deadline {
            bail!("previewd's pull request comment did not say {until:?} within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    say("the pull request comment, as GitHub shows it");
    for line in body.lines().filter(|l| !l.starts_with("<!--")) {
        println!("    | {line}");
    }
    for deployment in github.deployments().await? {
        let states: Vec<String> = deployment["statuses"]
            .as_array()
            .map(|s| s.iter().map(|s| s["state"].as_str().unwrap_or("?").to_owned()).collect())
            .unwrap_or_default();
        println!(
            "    GitHub deployment to {} of {}: {}",
            deployment["environment"].as_str().unwrap_or("?"),
            &deployment["sha"].as_str().unwrap_or("?")[..7],
            states.join(" → ")
        );
    }
    github.assert_no_violations().await
}

/// id, state, reason, name, url
type EnvironmentRow = (i64, String, Option<String>, Option<String>, Option<String>);

/// Prints the environment's transitions as they happen (after the `shown` already printed),
/// until it reaches one of `until`.
async fn follow(
    db: &mut sqlx::SqliteConnection,
    number: i64,
    until: &[&str],
    shown: &mut usize,
) -> anyhow::Result<(i64, Option<String>, Option<String>)> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let env: Option<EnvironmentRow> =
            sqlx::query_as("SELECT id, state, reason, name, url FROM environments WHERE pr_number = $1")
                .bind(number)
                .fetch_optional(&mut *db)
                .await?;
        if let Some((id, state, reason, name, url)) = env {
            let transitions: Vec<(String, i64)> = sqlx::query_as(
                "SELECT to_state, at FROM environment_transitions WHERE environment_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(&mut *db)
            .await?;
            for (to, _) in transitions.iter().skip(*shown) {
                println!("    state: {to}");
            }
            *shown = transitions.len();
            if until.contains(&state.as_str()) {
                if let Some(reason) = &reason {
                    println!("    reason: {reason}");
                }
                return Ok((id, name, url));
            }
        }
        if Instant::now() > deadline {
            bail!("the environment did not reach {until:?} within 180 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn viewer(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let config = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(config, &kube::config::KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

async fn show_objects(client: &kube::Client, namespace: &str) -> anyhow::Result<()> {
    let ns = Api::<Namespace>::all(client.clone()).get(namespace).await?;
    let labels = ns.metadata.labels.unwrap_or_default();
    println!(
        "    Namespace {namespace}: pod-security={}, expires-at={}",
        labels.get("pod-security.kubernetes.io/enforce").map_or("-", String::as_str),
        ns.metadata.annotations.unwrap_or_default().get("previewd.dev/expires-at").map_or("-", String::as_str)
    );
    for quota in Api::<ResourceQuota>::namespaced(client.clone(), namespace).list(&ListParams::default()).await? {
        let used = quota.status.and_then(|s| s.used).unwrap_or_default();
        let used: Vec<String> = used.iter().map(|(k, v)| format!("{k}={}", v.0)).collect();
        println!("    ResourceQuota {}: used {}", quota.metadata.name.unwrap_or_default(), used.join(", "));
    }
    for policy in Api::<NetworkPolicy>::namespaced(client.clone(), namespace).list(&ListParams::default()).await? {
        println!("    NetworkPolicy {}", policy.metadata.name.unwrap_or_default());
    }
    for deployment in Api::<Deployment>::namespaced(client.clone(), namespace).list(&ListParams::default()).await? {
        let status = deployment.status.unwrap_or_default();
        let image = deployment
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|s| s.containers.first().and_then(|c| c.image.clone()))
            .unwrap_or_default();
        println!(
            "    Deployment {}: {}/{} available, image {image}",
            deployment.metadata.name.unwrap_or_default(),
            status.available_replicas.unwrap_or(0),
            status.replicas.unwrap_or(0)
        );
    }
    for set in Api::<StatefulSet>::namespaced(client.clone(), namespace).list(&ListParams::default()).await? {
        let status = set.status.unwrap_or_default();
        println!(
            "    StatefulSet {} (the database): {}/{} ready",
            set.metadata.name.unwrap_or_default(),
            status.ready_replicas.unwrap_or(0),
            status.replicas
        );
    }
    for job in Api::<Job>::namespaced(client.clone(), namespace).list(&ListParams::default()).await? {
        let done = job.status.and_then(|s| s.succeeded).unwrap_or(0) > 0;
        println!(
            "    Job {} (the seed): {}",
            job.metadata.name.unwrap_or_default(),
            if done { "complete" } else { "not complete" }
        );
    }
    for service in Api::<Service>::namespaced(client.clone(), namespace).list(&ListParams::default()).await? {
        println!("    Service {}", service.metadata.name.unwrap_or_default());
    }
    for ingress in Api::<Ingress>::namespaced(client.clone(), namespace).list(&ListParams::default()).await? {
        let hosts: Vec<String> =
            ingress.spec.and_then(|s| s.rules).unwrap_or_default().into_iter().filter_map(|r| r.host).collect();
        println!("    Ingress {}: {}", ingress.metadata.name.unwrap_or_default(), hosts.join(", "));
    }
    // Names only: secret values never leave the cluster.
    for secret in Api::<Secret>::namespaced(client.clone(), namespace).list_metadata(&ListParams::default()).await? {
        println!("    Secret {} (value not shown)", secret.metadata.name.unwrap_or_default());
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_ready(http: &reqwest::Client, base: &str, previewd: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = previewd.try_wait()? {
            bail!("previewd exited during start-up ({status}); its error is above");
        }
        if let Ok(response) = http.get(format!("{base}/readyz")).send().await
            && response.status() == 200
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("previewd did not become ready within 30 s")
}
