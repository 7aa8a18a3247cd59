//! Access to the local Kubernetes control plane (see `e2e/controlplane/`).
//!
//! Tests talk to a real API server because server-side apply, admission, RBAC and namespace
//! finalisation only behave truthfully there. The cluster is shared by every test of a run
//! (and kept between runs), so tests isolate themselves with [`unique_name`] and
//! [`TestNamespace`] instead of owning the cluster.
//!
//! Two identities are offered: [`admin_client`] for arranging and inspecting, and
//! [`previewd_client`] for exercising previewd's own code with exactly the rights the Helm
//! chart grants (`e2e/controlplane/previewd-rbac.yaml`), so a missing permission fails a test
//! instead of surfacing in production.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use tokio::sync::OnceCell;

/// Kubeconfig of the cluster administrator; set it to use a cluster started elsewhere
/// (e.g. by `.ci/run` via `cluster.sh up` and `cluster.sh env`).
pub const ADMIN_KUBECONFIG_ENV: &str = "PREVIEWD_TEST_KUBECONFIG_ADMIN";
/// Kubeconfig of the least-privilege `previewd` ServiceAccount; set together with
/// [`ADMIN_KUBECONFIG_ENV`].
pub const PREVIEWD_KUBECONFIG_ENV: &str = "PREVIEWD_TEST_KUBECONFIG";
/// Set to keep the namespaces of [`TestNamespace`] for inspection after a test.
pub const KEEP_NAMESPACES_ENV: &str = "PREVIEWD_TEST_KEEP_NAMESPACES";

/// Namespace whose Secrets previewd may read (and copy into environments).
pub const SOURCE_NAMESPACE: &str = "previewd-source";
/// Label that previewd puts on the namespaces it manages; the admission policies of
/// `previewd-rbac.yaml` refuse previewd's writes in any namespace without it.
pub const MANAGED_BY_LABEL: (&str, &str) = ("app.kubernetes.io/managed-by", "previewd");
/// Label on namespaces created by [`TestNamespace`], to find leftovers of crashed runs.
pub const TEST_NAMESPACE_LABEL: &str = "previewd.dev/test";
/// The ClusterRole of previewd's reads in the test cluster (`previewd-rbac.yaml`), which
/// previewd binds to itself in each namespace it creates; the default of the setting
/// `read_cluster_role`.
pub const READ_CLUSTER_ROLE: &str = "previewd-read";
/// Namespace of the platform's Gateway in the test cluster (`e2e/controlplane/gateway.yaml`).
pub const GATEWAY_NAMESPACE: &str = "previewd-gateway";
/// The platform's Gateway: listeners `https` (for `*.preview.test`) and `http`, routes from
/// every namespace. No controller runs, so it is never Programmed.
pub const GATEWAY_NAME: &str = "previews";
/// The test cluster's StorageClass (the default one, `e2e/controlplane/storage.yaml`), with
/// pre-provisioned 1Gi volumes that are reclaimed when their claim is deleted.
pub const STORAGE_CLASS: &str = "preview-standard";

#[derive(Clone, Debug)]
struct Kubeconfigs {
    admin: PathBuf,
    previewd: PathBuf,
}

/// One `cluster.sh up` per test process; the outcome, failure included, is remembered so a
/// broken cluster fails every test quickly with the same explanation.
static KUBECONFIGS: OnceCell<Result<Kubeconfigs, String>> = OnceCell::const_new();

/// The script that builds and runs the control plane, found relative to this crate.
pub fn cluster_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("controlplane/cluster.sh")
}

/// Client with cluster-admin rights.
pub async fn admin_client() -> anyhow::Result<Client> {
    client_from(&kubeconfigs().await?.admin).await
}

/// Client with previewd's least-privilege rights (the `previewd` ServiceAccount).
pub async fn previewd_client() -> anyhow::Result<Client> {
    client_from(&kubeconfigs().await?.previewd).await
}

/// Paths of the admin and previewd kubeconfigs, starting the cluster if needed.
pub async fn kubeconfig_paths() -> anyhow::Result<(PathBuf, PathBuf)> {
    let k = kubeconfigs().await?;
    Ok((k.admin, k.previewd))
}

async fn kubeconfigs() -> anyhow::Result<Kubeconfigs> {
    KUBECONFIGS
        .get_or_init(|| async { find_or_start().await.map_err(|e| format!("{e:#}")) })
        .await
        .clone()
        .map_err(|e| anyhow!("the test Kubernetes cluster is not available: {e}"))
}

async fn find_or_start() -> anyhow::Result<Kubeconfigs> {
    match (std::env::var_os(ADMIN_KUBECONFIG_ENV), std::env::var_os(PREVIEWD_KUBECONFIG_ENV)) {
        (Some(admin), Some(previewd)) => Ok(Kubeconfigs { admin: admin.into(), previewd: previewd.into() }),
        (None, None) => {
            // `up` reuses a healthy cluster and serialises concurrent callers (flock), so
            // parallel test binaries can all call it.
            run_script("up").await?;
            let env = run_script("env").await?;
            let var = |name: &str| {
                env.lines()
                    .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                    .map(|v| PathBuf::from(unquote(v)))
                    .with_context(|| format!("`cluster.sh env` did not print {name}"))
            };
            Ok(Kubeconfigs { admin: var(ADMIN_KUBECONFIG_ENV)?, previewd: var(PREVIEWD_KUBECONFIG_ENV)? })
        }
        _ => bail!("set both {ADMIN_KUBECONFIG_ENV} and {PREVIEWD_KUBECONFIG_ENV}, or neither"),
    }
}

/// Undoes the backslash quoting of bash's `printf %q`, which `cluster.sh env` uses so that
/// its output can be `eval`ed even for paths with spaces.
fn unquote(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next().unwrap_or('\\') } else { c });
    }
    out
}

/// Runs a `cluster.sh` subcommand; on failure the error carries the script's output, which
/// ends with the log tail of the component that failed.
async fn run_script(command: &str) -> anyhow::Result<String> {
    let script = cluster_script();
    let out = tokio::process::Command::new("bash")
        .arg(&script)
        .arg(command)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {} {command}", script.display()))?;
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(80)..].join("\n");
        bail!("`{} {command}` failed ({}):\n{tail}", script.display(), out.status);
    }
    String::from_utf8(out.stdout).context("cluster.sh printed non-UTF-8 output")
}

async fn client_from(path: &Path) -> anyhow::Result<Client> {
    let kubeconfig = Kubeconfig::read_from(path).with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading kubeconfig {}", path.display()))?;
    Client::try_from(config).context("building a Kubernetes client")
}

/// A DNS-label name `<prefix>-<random>` that no other test (of this or a concurrent run)
/// uses; `prefix` should be short (at most 50 characters) and name the test.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded randomly per process; the counter separates calls within one.
    let mut n = RandomState::new().hash_one((COUNTER.fetch_add(1, Ordering::Relaxed), std::process::id()));
    let mut suffix = String::with_capacity(8);
    for _ in 0..8 {
        let digit = u32::try_from(n % 36).unwrap_or(0);
        suffix.push(char::from_digit(digit, 36).unwrap_or('0'));
        n /= 36;
    }
    format!("{prefix}-{suffix}")
}

/// A namespace name previewd could have generated (`<slug>-pr-<number>-<6 hex digits>`, see
/// `environments/src/naming.rs`), unique like [`unique_name`]: the admission policies refuse
/// previewd's identity any other namespace name.
pub fn environment_name(prefix: &str) -> String {
    let hash = RandomState::new().hash_one(unique_name(prefix)) & 0xff_ffff;
    format!("{}-pr-1-{hash:06x}", unique_name(prefix))
}

/// A namespace owned by one test, deleted (without waiting) when dropped, panics
/// included, so parallel tests never share objects and crashed tests leave little behind.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    admin_kubeconfig: PathBuf,
    keep: bool,
}

impl TestNamespace {
    /// Creates `<prefix>-<random>` as admin, with `labels` (e.g. Pod Security levels or
    /// [`MANAGED_BY_LABEL`]).
    pub async fn create(prefix: &str, labels: &[(&str, &str)]) -> anyhow::Result<Self> {
        let admin_kubeconfig = kubeconfigs().await?.admin;
        let client = client_from(&admin_kubeconfig).await?;
        let name = unique_name(prefix);
        let mut all_labels: BTreeMap<String, String> =
            labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        all_labels.insert(TEST_NAMESPACE_LABEL.to_owned(), "true".to_owned());
        let ns = Namespace {
            metadata: ObjectMeta { name: Some(name.clone()), labels: Some(all_labels), ..ObjectMeta::default() },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client)
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating test namespace {name}"))?;
        Ok(Self { name, admin_kubeconfig, keep: std::env::var_os(KEEP_NAMESPACES_ENV).is_some() })
    }

    /// Takes over the deletion of a namespace that the code under test created (e.g. one
    /// previewd made for an environment), so it is removed even when the test fails.
    pub async fn adopt(name: &str) -> anyhow::Result<Self> {
        Ok(Self {
            name: name.to_owned(),
            admin_kubeconfig: kubeconfigs().await?.admin,
            keep: std::env::var_os(KEEP_NAMESPACES_ENV).is_some(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Creates a [`TestNamespace`] named after `prefix`, without extra labels.
pub async fn temp_namespace(prefix: &str) -> anyhow::Result<TestNamespace> {
    TestNamespace::create(prefix, &[]).await
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        // Drop cannot await, and the test's runtime may be the one being dropped from, so
        // the delete runs on a runtime of its own, with a client of its own.
        let name = std::mem::take(&mut self.name);
        let kubeconfig = self.admin_kubeconfig.clone();
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let client = client_from(&kubeconfig).await?;
                match Api::<Namespace>::all(client).delete(&name, &DeleteParams::default()).await {
                    Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
                    Err(e) => Err(anyhow::Error::from(e)),
                    Ok(_) => Ok(()),
                }
            })
        })
        .join();
        if let Ok(Err(e)) = deleted {
            eprintln!("warning: deleting a test namespace failed: {e:#}");
        }
    }
}

/// Polls `check` every 200 ms until it returns `Some`, failing after `timeout` with
/// `what` and the last error, so tests synchronise on state rather than on sleeps.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            return Err(match last_error {
                Some(e) => e.context(format!("timed out after {timeout:?} waiting for {what}")),
                None => anyhow!("timed out after {timeout:?} waiting for {what}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the rollout in `namespace` is complete or has failed, and returns that; after
/// `timeout`, returns how it stands (still progressing). For tests: previewd itself never
/// waits, it looks once and is woken by its watches.
pub async fn settled_rollout(
    cluster: &previewd_environments::cluster::Cluster,
    namespace: &str,
    timeout: Duration,
) -> anyhow::Result<previewd_environments::cluster::Rollout> {
    use previewd_environments::cluster::Rollout;
    let deadline = Instant::now() + timeout;
    loop {
        let rollout = cluster.rollout(namespace).await?;
        if !matches!(rollout, Rollout::Progressing { .. }) || Instant::now() >= deadline {
            return Ok(rollout);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deletes `namespace` and waits until it is gone; after `timeout`, returns how it stands
/// (still terminating). For tests, as [`settled_rollout`].
pub async fn torn_down(
    cluster: &previewd_environments::cluster::Cluster,
    namespace: &str,
    timeout: Duration,
) -> anyhow::Result<previewd_environments::cluster::Teardown> {
    use previewd_environments::cluster::Teardown;
    let deadline = Instant::now() + timeout;
    loop {
        let teardown = cluster.delete_namespace(namespace).await?;
        if teardown == Teardown::Gone || Instant::now() >= deadline {
            return Ok(teardown);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Gateway API objects of `kind` (e.g. `HTTPRoute`, plural `httproutes`) in `namespace`, which
/// k8s-openapi (built-in types only) does not describe.
pub fn gateway_api(client: &Client, namespace: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", kind);
    Api::namespaced_with(client.clone(), namespace, &ApiResource::from_gvk_with_plural(&gvk, plural))
}

/// The condition `type_` of `job` when its status is `True`.
pub fn job_condition<'a>(job: &'a Job, type_: &str) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_ && c.status == "True")
}

/// Watches Job `name` until it has the condition `type_` (`Complete`, `Failed`) with status
/// `True`, and returns it; fails after `timeout`, or when the Job gets the other one of
/// `Complete` and `Failed`.
pub async fn wait_for_job_condition(
    jobs: &Api<Job>,
    name: &str,
    type_: &str,
    timeout: Duration,
) -> anyhow::Result<Job> {
    let done = |job: Option<&Job>| {
        job.is_some_and(|j| job_condition(j, "Complete").is_some() || job_condition(j, "Failed").is_some())
    };
    let job = tokio::time::timeout(timeout, kube::runtime::wait::await_condition(jobs.clone(), name, done))
        .await
        .map_err(|_| anyhow!("Job {name} had neither Complete nor Failed after {timeout:?}"))?
        .with_context(|| format!("watching Job {name}"))?
        .with_context(|| format!("Job {name} was deleted"))?;
    if job_condition(&job, type_).is_none() {
        bail!("Job {name} ended without the condition {type_}: {:?}", job.status);
    }
    Ok(job)
}

/// Deletes namespace `name` as admin and waits until it is gone; returns how long that took,
/// or fails after `timeout` with the conditions of the namespace still terminating.
pub async fn delete_namespace_and_wait(client: &Client, name: &str, timeout: Duration) -> anyhow::Result<Duration> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let started = Instant::now();
    match namespaces.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.is_not_found() => return Ok(started.elapsed()),
        Err(e) => return Err(anyhow::Error::from(e).context(format!("deleting namespace {name}"))),
    }
    let gone = wait_until(timeout, &format!("namespace {name} to be gone"), || async {
        Ok(namespaces.get_opt(name).await?.is_none().then_some(()))
    })
    .await;
    if let Err(e) = gone {
        let conditions =
            namespaces.get_opt(name).await.ok().flatten().and_then(|n| n.status).and_then(|s| s.conditions);
        return Err(e.context(format!("namespace {name} still terminating: {conditions:?}")));
    }
    Ok(started.elapsed())
}

/// Reconciles environment `id` as the job queue would, running again when a pass asks to
/// (without waiting a requeue's full delay: tests run no watches), until it settles or 60 s
/// pass; returns the last outcome. Provisioning and teardown take several short passes, since
/// a pass never waits for the cluster. Errors fail the test.
pub async fn converge(
    engine: &previewd_environments::reconcile::Engine,
    id: i64,
) -> previewd_environments::reconcile::Outcome {
    use previewd_environments::reconcile::Outcome;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let outcome = match engine.reconcile(id).await {
            Ok(outcome) => outcome,
            Err(error) => panic!("reconciling environment {id}: {error}"),
        };
        if matches!(outcome, Outcome::Settled(_)) || Instant::now() >= deadline {
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn unquote_undoes_printf_q() {
        assert_eq!(unquote(r"/home/a\ b/cluster/admin.kubeconfig"), "/home/a b/cluster/admin.kubeconfig");
        assert_eq!(unquote("/plain/path"), "/plain/path");
    }

    #[test]
    fn unique_names_are_distinct_dns_labels() {
        let a = unique_name("env");
        let b = unique_name("env");
        assert_ne!(a, b);
        for name in [a, b] {
            assert_eq!(name.len(), "env-".len() + 8);
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        }
    }

    #[test]
    fn environment_names_look_generated_by_previewd() {
        let name = environment_name("env");
        let (slug, hash) = name.rsplit_once('-').unwrap();
        assert_eq!(hash.len(), 6, "{name}");
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{name}");
        assert!(slug.starts_with("env-") && slug.ends_with("-pr-1"), "{name}");
        assert_ne!(environment_name("env"), name);
    }
}
