//! The `previewd` binary as a user runs it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use previewd_e2e::database::{Backend, fresh};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_previewd");

fn previewd(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(BIN);
    command.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

#[test]
fn help_documents_every_command_and_option() {
    let out = previewd(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for expected in ["serve", "migrate", "--config", "PREVIEWD_CONFIG", "--version"] {
        assert!(help.contains(expected), "`{expected}` missing from --help:\n{help}");
    }
    let version = String::from_utf8(previewd(&["--version"], &[]).stdout).unwrap();
    assert_eq!(version.trim(), format!("previewd {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn a_missing_secret_stops_start_up_with_a_message_naming_it() {
    let out = previewd(&["serve"], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("webhook_secrets") && stderr.contains("PREVIEWD_WEBHOOK_SECRETS"), "{stderr}");
}

#[test]
fn an_invalid_config_file_is_named_with_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("previewd.toml");
    std::fs::write(&file, "webhook_secrets = \"s\"\n[queue]\nworkers = \"lots\"\n").unwrap();
    let out = previewd(&["--config", file.to_str().unwrap(), "migrate"], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("queue.workers") && stderr.contains("previewd.toml"), "{stderr}");
}

#[tokio::test]
async fn migrate_creates_the_schema_on_both_backends() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = fresh(backend).await.unwrap();
        let out = previewd(&["migrate"], &[("PREVIEWD_DATABASE_URL", &db.url), ("PREVIEWD_WEBHOOK_SECRETS", "s")]);
        assert!(out.status.success(), "{backend:?}: {}", String::from_utf8_lossy(&out.stderr));
        let store = previewd_environments::store::Store::connect(&db.url.as_str().into()).await.unwrap();
        assert_eq!(store.count_deliveries().await.unwrap(), 0, "{backend:?}: tables exist");
    }
}

/// The alias bomb of issue 12: 20 KB that serde_yaml expanded to 16 million nodes (45 s, 1.66 GB).
fn alias_bomb() -> String {
    format!("x-leaf: &l [{}]\nx-bomb: [{}]\n", vec!["x"; 4000].join(", "), vec!["*l"; 4000].join(", "))
}

/// What `previewd render` needs besides the file under test, written into `dir`.
fn render_inputs(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let policy = dir.join("policy.yaml");
    std::fs::copy(root.join("e2e/fixtures/policy.yaml"), &policy).unwrap();
    let config = dir.join("preview.yaml");
    std::fs::copy(root.join("e2e/fixtures/preview.yaml"), &config).unwrap();
    (policy, config, root.join("templates"))
}

/// The shipped templates in `dir/templates`, with `extra` as one more template of the set `web`.
fn templates_with(dir: &std::path::Path, shipped: &std::path::Path, extra: String) -> std::path::PathBuf {
    let templates = dir.join("templates");
    let set = templates.join("environments/web");
    std::fs::create_dir_all(&set).unwrap();
    for entry in std::fs::read_dir(shipped.join("environments/web")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), set.join(entry.file_name())).unwrap();
    }
    std::fs::write(set.join("99-huge.yaml"), extra).unwrap();
    templates
}

/// Address space `previewd render` may use in these tests: the run with valid files fits in it
/// (and must), and a file that makes previewd build what it describes does not.
const RENDER_ADDRESS_SPACE: &str = "--as=268435456"; // 256 MiB

/// `previewd render` under [`RENDER_ADDRESS_SPACE`]: (succeeded, stderr, how long it took).
fn render(policy: &std::path::Path, config: &std::path::Path, templates: &std::path::Path) -> (bool, String, Duration) {
    let started = Instant::now();
    let out = Command::new("prlimit")
        .args([RENDER_ADDRESS_SPACE, "--", BIN, "render", "--repo", "acme/app", "--pr", "7", "--policy"])
        .arg(policy)
        .arg("--repo-config")
        .arg(config)
        .arg("--templates")
        .arg(templates)
        .env_clear()
        .output()
        .expect("prlimit (util-linux) runs previewd with a memory bound");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned(), started.elapsed())
}

/// "Well under a second" for a refusal that takes milliseconds; 5 s because this machine is slow
/// and shared (the old parser took 45 s on the bomb).
const REFUSED_WITHIN: Duration = Duration::from_secs(5);

#[test]
fn render_refuses_an_alias_bomb_and_a_huge_preview_yaml_quickly_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (policy, config, templates) = render_inputs(dir.path());
    let (ok, stderr, _) = render(&policy, &config, &templates);
    assert!(ok, "the valid files render within the same memory bound:\n{stderr}");

    std::fs::write(&config, alias_bomb()).unwrap();
    let (ok, stderr, took) = render(&policy, &config, &templates);
    assert!(!ok);
    assert!(
        stderr.contains(".preview.yaml: line 1 column 12: anchors and aliases (`&name`, `*name`) are not allowed"),
        "{stderr}"
    );
    assert!(took < REFUSED_WITHIN, "took {took:?}");

    let huge = "image: x\n".repeat(10 * 1024 * 1024 / 9 + 1);
    std::fs::write(&config, &huge).unwrap();
    let (ok, stderr, took) = render(&policy, &config, &templates);
    assert!(!ok);
    let refusal = format!("preview.yaml: the file is {} bytes; previewd reads at most 64 KiB", huge.len());
    assert!(stderr.contains(&refusal), "{stderr}");
    assert!(took < REFUSED_WITHIN, "took {took:?}");
}

#[test]
fn a_hostile_policy_or_template_stops_render_quickly_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (policy, config, shipped) = render_inputs(dir.path());
    let fixture = std::fs::read_to_string(&policy).unwrap();

    // The bomb as part of an otherwise valid policy: anchors are allowed there, within a budget.
    std::fs::write(&policy, format!("{fixture}\n{}", alias_bomb().replace("x-", "x_"))).unwrap();
    let (ok, stderr, took) = render(&policy, &config, &shipped);
    assert!(!ok);
    assert!(stderr.contains("policy.yaml: ") && stderr.contains("too large or too complex"), "{stderr}");
    assert!(took < REFUSED_WITHIN, "took {took:?}");

    std::fs::write(&policy, format!("{fixture}\n# padding\n{}", "#".repeat(10 * 1024 * 1024))).unwrap();
    let (ok, stderr, took) = render(&policy, &config, &shipped);
    assert!(!ok);
    assert!(
        stderr.contains("policy.yaml: the file is ") && stderr.contains("bytes; previewd reads at most 1 MiB"),
        "{stderr}"
    );
    assert!(took < REFUSED_WITHIN, "took {took:?}");

    // A template set with one huge template.
    std::fs::write(&policy, &fixture).unwrap();
    let templates = templates_with(dir.path(), &shipped, "#".repeat(10 * 1024 * 1024));
    let (ok, stderr, took) = render(&policy, &config, &templates);
    assert!(!ok);
    assert!(stderr.contains("99-huge.yaml: the file is 10485760 bytes; previewd reads at most 1 MiB"), "{stderr}");
    assert!(took < REFUSED_WITHIN, "took {took:?}");

    // A template that renders an alias bomb.
    let templates = templates_with(dir.path(), &shipped, format!("{{# a bomb #}}\n{}", alias_bomb()));
    let (ok, stderr, took) = render(&policy, &config, &templates);
    assert!(!ok);
    assert!(
        stderr.contains("environments/web/99-huge.yaml") && stderr.contains("too large or too complex"),
        "{stderr}"
    );
    assert!(took < REFUSED_WITHIN, "took {took:?}");
}

/// `previewd serve` ending at start-up: includes migrating a fresh database, so more than a
/// refusal, but far from the minutes a hang would take on this slow, shared machine.
const START_UP_REFUSED_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_hostile_policy_or_template_stops_serve_at_start_up_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (policy, config, shipped) = render_inputs(dir.path());
    let fixture = std::fs::read_to_string(&policy).unwrap();
    let db = fresh(Backend::Sqlite).await.unwrap();
    let serve = |policy: &std::path::Path, templates: &std::path::Path| {
        let started = Instant::now();
        let out = previewd(
            &["serve"],
            &[
                ("PREVIEWD_LISTEN", "127.0.0.1:0"),
                ("PREVIEWD_DATABASE_URL", &db.url),
                ("PREVIEWD_WEBHOOK_SECRETS", "s"),
                ("PREVIEWD_POLICY_FILE", policy.to_str().unwrap()),
                ("PREVIEWD_TEMPLATES_DIR", templates.to_str().unwrap()),
                ("PREVIEWD_REPO_CONFIG_FILE", config.to_str().unwrap()),
            ],
        );
        assert!(!out.status.success(), "previewd started");
        (String::from_utf8_lossy(&out.stderr).into_owned(), started.elapsed())
    };

    std::fs::write(&policy, format!("{fixture}\n{}", alias_bomb().replace("x-", "x_"))).unwrap();
    let (stderr, took) = serve(&policy, &shipped);
    assert!(stderr.contains("policy.yaml: ") && stderr.contains("too large or too complex"), "{stderr}");
    assert!(took < START_UP_REFUSED_WITHIN, "took {took:?}");

    std::fs::write(&policy, format!("{fixture}\n{}", "#".repeat(10 * 1024 * 1024))).unwrap();
    let (stderr, took) = serve(&policy, &shipped);
    assert!(
        stderr.contains("policy.yaml: the file is ") && stderr.contains("bytes; previewd reads at most 1 MiB"),
        "{stderr}"
    );
    assert!(took < START_UP_REFUSED_WITHIN, "took {took:?}");

    std::fs::write(&policy, &fixture).unwrap();
    let templates = templates_with(dir.path(), &shipped, "#".repeat(10 * 1024 * 1024));
    let (stderr, took) = serve(&policy, &templates);
    assert!(stderr.contains("99-huge.yaml: the file is 10485760 bytes; previewd reads at most 1 MiB"), "{stderr}");
    assert!(took < START_UP_REFUSED_WITHIN, "took {took:?}");
}
