//! helm for the tests: `PREVIEWD_TEST_HELM`, else the one `e2e/controlplane/cluster.sh` builds
//! into its cache (`cluster.sh env` names it; `cluster.sh build` makes it when missing). Without
//! it the tests that need it fail, saying so.
#![allow(clippy::expect_used)]

use crate::cluster;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The helm binary. Panics (a test failure) when there is none.
pub fn helm_binary() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        if let Some(path) = std::env::var_os("PREVIEWD_TEST_HELM") {
            let path = PathBuf::from(path);
            assert!(path.is_file(), "PREVIEWD_TEST_HELM={} is not a file", path.display());
            return path;
        }
        let script = cluster::cluster_script();
        let find = || {
            let out = Command::new("bash").arg(&script).arg("env").output().expect("running cluster.sh env");
            let env = String::from_utf8_lossy(&out.stdout).into_owned();
            env.lines()
                .find_map(|l| l.strip_prefix("export PREVIEWD_TEST_HELM="))
                .map(|v| PathBuf::from(v.replace('\\', "")))
                .unwrap_or_else(|| panic!("`cluster.sh env` printed no PREVIEWD_TEST_HELM:\n{env}"))
        };
        let path = find();
        if !path.is_file() {
            let out = Command::new("bash").arg(&script).arg("build").output().expect("running cluster.sh build");
            assert!(
                out.status.success() && path.is_file(),
                "helm is missing and `{} build` could not build it (set PREVIEWD_TEST_HELM to a helm v3 binary):\n{}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        path
    })
}

/// Runs helm with its own config and cache folders, so tests leave nothing in `$HOME`.
pub fn helm(args: &[&str]) -> Output {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    let home = HOME.get_or_init(|| tempfile::tempdir().expect("a folder for helm's config")).path();
    Command::new(helm_binary())
        .args(args)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("running helm")
}
