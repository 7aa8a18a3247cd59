//! Every example of `README.md` and `charts/previewd/README.md`, run as written: the commands,
//! the files and the variables each names, read from the READMEs' own text, so a README change
//! that no longer works fails here.
//!
//! Conventions (see `previewd_e2e::markdown`): a fenced block whose info string names a file
//! after the language is that file (```` ```toml previewd.toml ````); `<NAME>` is a value of the
//! reader's, filled in here (`<POSTGRES_URL>`: a fresh database on the test server,
//! `<APP_ID>` and `<APP_PRIVATE_KEY_FILE>`: the stand-in App's id and key). A block this test
//! does not know how to run fails it, so a new example cannot go untested.
//!
//! As everywhere in these tests, `PREVIEWD_LISTEN` is a free loopback port (the examples'
//! `0.0.0.0:8080` and the default `127.0.0.1:8080` may be taken on a test machine), and the
//! test cluster's previewd identity comes through `KUBECONFIG` where an example needs a cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use previewd_e2e::database::{self, Backend};
use previewd_e2e::helm::helm_binary;
use previewd_e2e::markdown::{Block, fenced_blocks, fill};
use previewd_e2e::pod::{self, Consumer};
use previewd_e2e::previewd::Previewd;
use previewd_e2e::standin::GitHubStandIn;
mod common;

use anyhow::Context as _;
use common::story::{sha, story};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_previewd"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// A folder to run an example in, as a user's: the files it names, and `templates/` (the
/// default `templates_dir`, the folder the image ships in its working directory `/app`).
fn workdir(files: &[(&str, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo_root().join("templates"), &dir.path().join("templates"));
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// Runs `previewd serve` (with `args`) in `cwd` until `/readyz` answers 200, then SIGTERM: it
/// must stop cleanly.
async fn serve(args: &[String], env: &[(String, String)], cwd: &Path) -> anyhow::Result<()> {
    let logs = tempfile::tempdir()?;
    let log = logs.path().join("previewd.log");
    let mut previewd = Previewd::start_exactly(binary(), args, env, cwd, &log).await?;
    let status = previewd.terminate(Duration::from_secs(60)).await?;
    anyhow::ensure!(status.is_some_and(|s| s.success()), "exited with {status:?}:\n{}", previewd.log_tail(40));
    Ok(())
}

/// Runs a command that ends by itself; it must succeed. Its stdout.
fn run_to_exit(args: &[String], env: &[(String, String)], cwd: &Path) -> anyhow::Result<Vec<u8>> {
    let out =
        std::process::Command::new(binary()).args(args).env_clear().envs(env.to_vec()).current_dir(cwd).output()?;
    anyhow::ensure!(out.status.success(), "exited with {}:\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    Ok(out.stdout)
}

/// One line of a shell example: its words, without the comment.
fn words(line: &str) -> Vec<String> {
    line.split(" #").next().unwrap_or("").split_whitespace().map(str::to_owned).collect()
}

/// The webhook secret, which the README's configuration reference has come from the
/// environment (`PREVIEWD_WEBHOOK_SECRETS=...`): the one setting without a default.
fn base_env() -> Vec<(String, String)> {
    vec![("PREVIEWD_WEBHOOK_SECRETS".to_owned(), uuid::Uuid::new_v4().simple().to_string())]
}

/// What a shell example runs against, beyond its own folder: a previewd already running
/// (`<PREVIEWD_URL>`) and the values it needs filled in (`<ADMIN_TOKEN>`, `<ID>`).
struct Given {
    values: BTreeMap<&'static str, String>,
    /// The state an environment of the example's ends in: `--watch` must have printed it.
    watched_to: Option<&'static str>,
}

/// A shell example, run line by line in one folder as a reader types them there: `previewd`
/// commands (`> FILE` writes stdout to FILE; a trailing `&` runs it in the background, as
/// `env list --watch` runs), and `export NAME=VALUE ...`. The folder holds the files the
/// example names: `previewd.toml` (the configuration reference's), and for `render` the
/// README's full examples of the policy and `.preview.yaml` (`e2e/fixtures/`), as `policy.yaml`
/// and `.preview.yaml`. A `<PREVIEWD_URL>` not given is a `previewd serve` started in that
/// folder (its embedded store is the one the folder's `token create` wrote to).
async fn run_commands(block: &Block, files: &BTreeMap<String, String>, mut given: Given) -> Vec<String> {
    let mut failures = Vec::new();
    let mut named: Vec<(&str, String)> =
        vec![("policy.yaml", read("e2e/fixtures/policy.yaml")), (".preview.yaml", read("e2e/fixtures/preview.yaml"))];
    let postgres = database::fresh(Backend::Postgres).await.unwrap();
    given.values.insert("POSTGRES_URL", postgres.url.clone());
    for (name, text) in files {
        named.push((name.as_str(), fill(text, &given.values).unwrap()));
    }
    let dir = workdir(&named);
    let logs = tempfile::tempdir().unwrap();
    let mut env = base_env();
    let mut server = None;
    let mut background = Vec::new();
    for (offset, line) in block.text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = format!("README.md line {} `{line}`", block.line + 1 + offset);
        if line.contains("<PREVIEWD_URL>") && !given.values.contains_key("PREVIEWD_URL") {
            let log = logs.path().join("server.log");
            match Previewd::start_exactly(binary(), &["serve".to_owned()], &env, dir.path(), &log).await {
                Ok(previewd) => {
                    given.values.insert("PREVIEWD_URL", previewd.base.clone());
                    server = Some(previewd);
                }
                Err(e) => failures.push(format!("{at}: the previewd it talks to did not start: {e:#}")),
            }
        }
        let mut words = match fill(line, &given.values) {
            Ok(filled) => words(&filled),
            Err(e) => {
                failures.push(format!("{at}: {e:#}"));
                continue;
            }
        };
        if words.first().map(String::as_str) == Some("export") {
            for assignment in &words[1..] {
                let (name, value) = assignment.split_once('=').unwrap_or((assignment, ""));
                env.push((name.to_owned(), value.to_owned()));
            }
            continue;
        }
        if words.first().map(String::as_str) != Some("previewd") {
            failures.push(format!("{at}: not a previewd command: teach this test"));
            continue;
        }
        let in_background = words.last().is_some_and(|w| w == "&");
        if in_background {
            words.pop();
        }
        let stdout_to = match words.iter().position(|w| w == ">") {
            Some(i) => {
                let file = words.get(i + 1).cloned();
                words.truncate(i);
                file
            }
            None => None,
        };
        let args = words[1..].to_vec();
        let result = if in_background {
            spawn_in_background(&args, &env, dir.path()).map(|child| background.push((at.clone(), child)))
        } else if args.iter().any(|a| a == "serve") {
            serve(&args, &env, dir.path()).await
        } else if ["migrate", "render", "--help", "token", "env", "usage", "limits", "bypass", "share"]
            .iter()
            .any(|c| args.first().is_some_and(|a| a == c))
        {
            run_to_exit(&args, &env, dir.path()).and_then(|stdout| match &stdout_to {
                Some(file) => Ok(std::fs::write(dir.path().join(file), stdout)?),
                None => Ok(()),
            })
        } else {
            Err(anyhow::anyhow!("this test does not know how to run it: teach service/tests/readme.rs"))
        };
        if let Err(e) = result {
            failures.push(format!("{at}: {e:#}"));
        }
    }
    for (at, child) in background {
        if let Err(e) = follow(child, given.watched_to).await {
            failures.push(format!("{at}: {e:#}"));
        }
    }
    if let Some(mut server) = server {
        server.stop().await.unwrap();
    }
    failures
}

/// A command of an example run with `&`: its stdout is read by [`follow`].
fn spawn_in_background(args: &[String], env: &[(String, String)], cwd: &Path) -> anyhow::Result<tokio::process::Child> {
    Ok(tokio::process::Command::new(binary())
        .args(args)
        .env_clear()
        .envs(env.to_vec())
        .current_dir(cwd)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?)
}

/// A background `env list --watch`, once the example's other lines ran: it printed the list,
/// then a line per change, up to the state the example's environment ends in.
async fn follow(mut child: tokio::process::Child, watched_to: Option<&str>) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt as _;
    let to = watched_to.context("a command in the background, but no environment whose changes it shows")?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let waited = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await? {
            let ended = line.split_whitespace().nth(2) == Some(to);
            seen.push(line);
            if ended {
                return Ok(());
            }
        }
        anyhow::bail!("it ended")
    })
    .await;
    child.kill().await.ok();
    let out = child.wait_with_output().await?;
    match waited {
        Ok(Ok(())) => {
            anyhow::ensure!(seen.iter().any(|l| l.contains("ID") && l.contains("STATE")), "no list first: {seen:#?}");
            Ok(())
        }
        Ok(Err(e)) => {
            Err(e.context(format!("before a line of state {to}: {seen:#?}\n{}", String::from_utf8_lossy(&out.stderr))))
        }
        Err(_) => anyhow::bail!("no line of state {to} within 120 s: {seen:#?}"),
    }
}

/// A DNS policy example: `previewd serve` on it, with the `.preview.yaml` for every pull
/// request (without GitHub credentials previewd needs one) and the variable its TSIG key
/// names (`dns.rfc2136.key_secret_env`, else its default) holding a generated secret.
async fn run_policy(block: &Block) -> anyhow::Result<()> {
    let policy: Value = previewd_environments::yaml::parse(&block.text, previewd_environments::yaml::Origin::Platform)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .unwrap_or(Value::Null);
    let dir = workdir(&[("policy.yaml", block.text.clone()), (".preview.yaml", read("e2e/fixtures/preview.yaml"))]);
    let (_, kubeconfig) = previewd_e2e::cluster::kubeconfig_paths().await?;
    let mut env = base_env();
    env.push(("PREVIEWD_POLICY_FILE".to_owned(), "policy.yaml".to_owned()));
    env.push(("PREVIEWD_REPO_CONFIG_FILE".to_owned(), ".preview.yaml".to_owned()));
    env.push(("KUBECONFIG".to_owned(), kubeconfig.display().to_string()));
    if policy["dns"]["provider"] == "rfc2136" {
        let var = policy["dns"]["rfc2136"]["key_secret_env"].as_str().unwrap_or("PREVIEWD_DNS_TSIG_SECRET");
        // 32 random bytes in base64, as `tsig-keygen` prints a key.
        use base64::Engine as _;
        let secret = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
        env.push((var.to_owned(), secret));
    }
    serve(&["serve".to_owned()], &env, dir.path()).await
}

/// A `.preview.yaml` example: `previewd render` of it under the policy's defaults (any registry)
/// succeeds, and renders a Deployment for each service it names.
fn run_repo_config(block: &Block) -> anyhow::Result<()> {
    let dir = workdir(&[
        ("policy.yaml", "base_domain: preview.example.com\n".to_owned()),
        (".preview.yaml", block.text.clone()),
    ]);
    let templates = repo_root().join("templates");
    let args =
        ["render", "--policy", "policy.yaml", "--repo-config", ".preview.yaml", "--repo", "acme/shop", "--pr", "1"]
            .map(str::to_owned);
    let mut args = args.to_vec();
    args.extend(["--templates".to_owned(), templates.display().to_string()]);
    let rendered = String::from_utf8(run_to_exit(&args, &base_env(), dir.path())?)?;
    let config = previewd_environments::repo_config::RepoConfig::from_yaml(&block.text).map_err(anyhow::Error::msg)?;
    for (name, _) in &config.services {
        anyhow::ensure!(
            rendered.contains("kind: Deployment\n") && rendered.contains(&format!("  name: {name}\n")),
            "the rendering has no Deployment {name}:\n{rendered}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn every_example_of_the_readme_runs_as_written() {
    let readme = read("README.md");
    let blocks = fenced_blocks(&readme);
    let files: BTreeMap<String, String> = blocks
        .iter()
        .filter(|b| b.lang != "yaml")
        .filter_map(|b| b.file.clone().map(|f| (f, b.text.clone())))
        .collect();
    let mut failures = Vec::new();
    let mut ran = 0;
    for block in &blocks {
        let at = format!("README.md line {}", block.line);
        match (block.lang.as_str(), block.file.as_deref()) {
            // Not run here: `e2e/test.sh` is the whole suite, this test included, and CI runs
            // it; `e2e/demo.sh` is the demo (the control plane and about a minute), whose
            // story the story tests (`service/tests/story.rs`) run on the same parts.
            ("sh", None) if block.text.contains("./e2e/demo.sh") => {
                let commands: Vec<String> = block.text.lines().map(|l| words(l).join(" ")).collect();
                assert_eq!(commands, ["./e2e/demo.sh", "./e2e/test.sh"], "{at}: a command this test does not run");
            }
            // The CLI's tour: against a previewd with an environment of a pull request (the
            // story harness: the control plane, BIND, the stand-in as GitHub), which it shows,
            // extends, redeploys and destroys while `--watch` follows.
            ("sh", None) if block.text.contains("<ADMIN_TOKEN>") => {
                let db = database::fresh(Backend::Sqlite).await.unwrap();
                let mut s = story(&db, |p| p).await;
                s.open(12, &sha('a')).await;
                let id = s.wait_state(12, "Ready").await.id;
                let token = run_to_exit(
                    &["token", "create", "--name", "readme", "--scope", "admin"].map(str::to_owned),
                    &[("PREVIEWD_DATABASE_URL".to_owned(), db.url.clone())],
                    s.dir.path(),
                )
                .unwrap();
                let values = BTreeMap::from([
                    ("PREVIEWD_URL", s.previewd.base.clone()),
                    ("ADMIN_TOKEN", String::from_utf8(token).unwrap().trim().to_owned()),
                    ("ID", id.to_string()),
                    ("REPOSITORY", format!("acme/{}", s.repo)),
                    // The tour's `share create` makes the database's first link.
                    ("LINK", "1".to_owned()),
                ]);
                failures.extend(run_commands(block, &files, Given { values, watched_to: Some("Deleted") }).await);
                ran += 1;
            }
            ("sh", None) => {
                failures.extend(run_commands(block, &files, Given { values: BTreeMap::new(), watched_to: None }).await);
                ran += 1;
            }
            ("toml", Some("previewd.toml")) => {} // run by the commands that name it
            ("yaml", Some(".preview.yaml")) => {
                if let Err(e) = run_repo_config(block) {
                    failures.push(format!("{at} (.preview.yaml): {e:#}"));
                }
                ran += 1;
            }
            ("yaml", Some("policy.yaml")) => {
                if let Err(e) = run_policy(block).await {
                    failures.push(format!("{at} (policy.yaml): {e:#}"));
                }
                ran += 1;
            }
            // BIND's configuration, not previewd's: the test DNS server (`e2e/dns.sh`) runs
            // exactly this update-policy, with its own key name and base domain.
            ("", None) if block.text.contains("update-policy") => {
                let grant = block.text.lines().find(|l| l.contains("update-policy")).unwrap().trim();
                let as_dns_sh = grant.replace("previewd", "$key_name").replace("preview.example.com", "$base_domain");
                assert!(read("e2e/dns.sh").contains(&as_dns_sh), "{at}: e2e/dns.sh does not run `{grant}`");
            }
            // The diagram of "How it works".
            ("", None) if block.text.contains("──webhook──▶") => {}
            _ => failures.push(format!("{at}: an example this test does not know how to run")),
        }
    }
    assert!(ran >= 6, "the commands, the tokens, the CLI and the three DNS policies");
    assert!(failures.is_empty(), "README examples that do not work as written:\n\n{}", failures.join("\n\n"));
}

/// The chart README's install: its shell block runs in bash as written, with `kubectl` run with
/// `--dry-run=client -o json` (the Secrets it makes are collected, not sent) and `helm install`
/// run as `helm template` with the same arguments; installing on a real cluster is
/// `e2e/tests/chart.rs`'s test. previewd then starts on the rendered pod, whose Secrets are
/// exactly those the README's commands made.
#[tokio::test]
async fn the_chart_readmes_install_runs_as_written() {
    let standin = GitHubStandIn::start().await.unwrap();
    let app = standin.app().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("app.private-key.pem");
    std::fs::write(&key_file, &app.private_key_pem).unwrap();
    let placeholders =
        BTreeMap::from([("APP_ID", app.app_id.to_string()), ("APP_PRIVATE_KEY_FILE", key_file.display().to_string())]);
    let blocks = fenced_blocks(&read("charts/previewd/README.md"));
    for block in blocks.iter().filter(|b| b.file.is_some()) {
        std::fs::write(dir.path().join(block.file.as_ref().unwrap()), fill(&block.text, &placeholders).unwrap())
            .unwrap();
    }
    std::os::unix::fs::symlink(repo_root().join("charts"), dir.path().join("charts")).unwrap();
    let shell: Vec<&Block> = blocks.iter().filter(|b| b.lang == "sh").collect();
    let (install, exec): (Vec<&Block>, Vec<&Block>) = shell.iter().partition(|b| !b.text.contains(" exec "));
    assert_eq!((install.len(), exec.len()), (1, 1), "one install example, one `kubectl exec` (the first token)");
    let prelude = r#"set -euo pipefail
kubectl() { "$TEST_KUBECTL" "$@" --dry-run=client -o json >> objects.json; }
helm() {
  [ "$1" = install ] || { echo "helm $1 is not run by this test" >&2; return 1; }
  shift
  "$TEST_HELM" template "$@" --set "githubApp.apiUrl=$TEST_API_URL" > rendered.yaml
}
"#;
    let script = format!("{prelude}{}", fill(&install[0].text, &placeholders).unwrap());
    let kubectl = std::env::var("PREVIEWD_TEST_KUBECTL")
        .expect("PREVIEWD_TEST_KUBECTL names kubectl: eval \"$(e2e/controlplane/cluster.sh env)\"");
    let (admin_kubeconfig, kubeconfig) = previewd_e2e::cluster::kubeconfig_paths().await.unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("TEST_KUBECTL", kubectl)
        .env("TEST_HELM", helm_binary())
        .env("TEST_API_URL", standin.url())
        .env("KUBECONFIG", &admin_kubeconfig)
        .env("HELM_CONFIG_HOME", dir.path().join(".helm/config"))
        .env("HELM_CACHE_HOME", dir.path().join(".helm/cache"))
        .env("HELM_DATA_HOME", dir.path().join(".helm/data"))
        .output()
        .unwrap();
    assert!(out.status.success(), "the chart README's install failed:\n{}", String::from_utf8_lossy(&out.stderr));

    let objects = std::fs::read_to_string(dir.path().join("objects.json")).unwrap();
    let mut docs: Vec<Value> =
        serde_json::Deserializer::from_str(&objects).into_iter::<Value>().map(Result::unwrap).collect();
    let rendered = std::fs::read_to_string(dir.path().join("rendered.yaml")).unwrap();
    docs.extend(
        previewd_environments::yaml::documents(&rendered, previewd_environments::yaml::Origin::Platform).unwrap(),
    );
    let root = dir.path().join("pod");
    std::fs::create_dir(&root).unwrap();
    let mut none = |name: &str, key: &str, consumer: &Consumer| -> anyhow::Result<String> {
        anyhow::bail!("Secret {name} key {key} (read by {consumer:?}) is not made by the README's commands")
    };
    let pod = pod::materialise(&docs, &repo_root(), &root, &mut none).unwrap();
    let mut env = pod.env.clone();
    env.push(("KUBECONFIG".to_owned(), kubeconfig.display().to_string()));
    let logs = tempfile::tempdir().unwrap();
    let mut previewd =
        Previewd::start_exactly(binary(), &pod.args, &env, &pod.workdir, &logs.path().join("previewd.log"))
            .await
            .unwrap();

    // `kubectl exec` runs the command in the running container: the same files and variables,
    // so here a second process with exactly the pod's.
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let helm_install =
        install[0].text.lines().map(words).find(|w| w.starts_with(&["helm".into(), "install".into()])).unwrap();
    let namespace = &helm_install[helm_install.iter().position(|w| w == "-n").unwrap() + 1];
    let line = exec[0].text.trim();
    let (target, command) = line.split_once(" -- ").unwrap();
    assert_eq!(
        words(target),
        ["kubectl", "-n", namespace, "exec"]
            .into_iter()
            .map(str::to_owned)
            .chain([format!("deploy/{}", deployment["metadata"]["name"].as_str().unwrap())])
            .collect::<Vec<_>>(),
        "`{line}` names the chart's Deployment"
    );
    let command = words(command);
    assert_eq!(command[0], "previewd", "{line}: the image's previewd is on PATH");
    let token = run_to_exit(&command[1..], &env, &pod.workdir)
        .unwrap_or_else(|e| panic!("`{line}` in the pod: {e:#}\n{}", previewd.log_tail(40)));
    let token = String::from_utf8(token).unwrap().trim().to_owned();
    let answer = reqwest::Client::new()
        .get(format!("{}/api/v1/environments", previewd.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "the token `{line}` printed is an API token of the running previewd");
    let status = previewd.terminate(Duration::from_secs(60)).await.unwrap();
    assert!(status.is_some_and(|s| s.success()), "exited with {status:?}:\n{}", previewd.log_tail(40));
    let written = pod.written_where_read_only().unwrap();
    assert!(written.is_empty(), "previewd wrote where the pod's filesystem is read-only: {written:?}");
    standin.assert_no_violations().await.unwrap();
}
