//! An identity with previewd's rights that the real API server throttles on demand, through
//! API Priority and Fairness: a FlowSchema matching only this identity's calls of some verbs
//! sends them to a priority level with no seats (and none to borrow) whose limit response is
//! `Reject`. Such a level still runs one request at a time when none is running (the queue set
//! lets a request wider than the limit through alone), so one request of the identity is kept in
//! flight: a PATCH whose body never ends, which holds its seat while the API server waits for
//! the rest. Every other such call then gets the API server's own 429 with a `Retry-After`,
//! deterministically. No other client of the shared test cluster is slowed: the FlowSchema
//! matches one ServiceAccount that exists for one test, and everything is removed when the
//! handle is dropped.

use crate::cluster::{TestNamespace, admin_client, kubeconfig_paths};
use anyhow::{Context, anyhow, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::flowcontrol::v1::{FlowSchema, PriorityLevelConfiguration};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, Resource};
use previewd_environments::yaml::{self, Origin};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// The ServiceAccount's name inside its namespace.
const ACCOUNT: &str = "throttled";

pub struct ThrottledIdentity {
    /// Holds the ServiceAccount; deleted with the handle.
    _namespace: TestNamespace,
    /// Cluster-scoped objects made for this identity: ClusterRoleBinding, FlowSchema, priority level.
    name: String,
    source_binding_namespace: String,
    admin: Client,
    kubeconfig: PathBuf,
    token: String,
    /// The request kept in flight while throttled (see the module documentation).
    holder: Mutex<Option<JoinHandle<()>>>,
    _dir: tempfile::TempDir,
}

impl ThrottledIdentity {
    /// A ServiceAccount bound to previewd's ClusterRole and source-secrets Role (as
    /// `e2e/controlplane/test-identity.yaml` binds previewd's), and a kubeconfig with a token
    /// for it. Not throttled yet.
    pub async fn create(prefix: &str, source_namespace: &str) -> anyhow::Result<Self> {
        let admin = admin_client().await?;
        let namespace = TestNamespace::create(prefix, &[]).await?;
        let name = namespace.name().to_owned();
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("throttled.kubeconfig");
        let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": ACCOUNT}}))?;
        let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), &name);
        accounts.create(&PostParams::default(), &account).await.context("creating the ServiceAccount")?;
        let subject = json!([{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": name}]);
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "previewd"},
            "subjects": subject,
        }))?;
        Api::<ClusterRoleBinding>::all(admin.clone())
            .create(&PostParams::default(), &binding)
            .await
            .context("binding previewd's ClusterRole")?;
        let source: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "previewd-secrets-source"},
            "subjects": subject,
        }))?;
        Api::<RoleBinding>::namespaced(admin.clone(), source_namespace)
            .create(&PostParams::default(), &source)
            .await
            .context("binding previewd's source-secrets Role")?;
        let request = TokenRequest {
            spec: Some(TokenRequestSpec { expiration_seconds: Some(3600), ..TokenRequestSpec::default() }),
            ..TokenRequest::default()
        };
        let token = accounts
            .create_token_request(ACCOUNT, &PostParams::default(), &request)
            .await
            .context("requesting a token")?
            .status
            .and_then(|s| s.token)
            .context("the token request has no token")?;
        write_kubeconfig(&kubeconfig, &token).await?;
        Ok(ThrottledIdentity {
            _namespace: namespace,
            name,
            source_binding_namespace: source_namespace.to_owned(),
            admin,
            kubeconfig,
            token,
            holder: Mutex::new(None),
            _dir: dir,
        })
    }

    /// Its kubeconfig (a token of the ServiceAccount, the test cluster's server and CA).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// From now on every call of this identity with one of `verbs` (`patch` among them:
    /// server-side apply is a PATCH) is answered 429 by the API server; its other calls are
    /// served as before. Returns once a PATCH is refused (the API server picks up a new
    /// FlowSchema within about a second).
    pub async fn throttle(&self, verbs: &[&str]) -> anyhow::Result<()> {
        if !verbs.iter().any(|v| *v == "patch" || *v == "*") {
            bail!("throttle: the verbs must include `patch`, which is how the throttling is observed");
        }
        let level: PriorityLevelConfiguration = serde_json::from_value(json!({
            "metadata": {"name": self.name},
            "spec": {"type": "Limited", "limited": {
                "nominalConcurrencyShares": 0, "lendablePercent": 0, "borrowingLimitPercent": 0,
                "limitResponse": {"type": "Reject"},
            }},
        }))?;
        create_or_keep(Api::<PriorityLevelConfiguration>::all(self.admin.clone()), &level).await?;
        let schema: FlowSchema = serde_json::from_value(json!({
            "metadata": {"name": self.name},
            "spec": {
                "priorityLevelConfiguration": {"name": self.name},
                // Before the default FlowSchemas but `exempt` and `probes`, which match no ServiceAccount.
                "matchingPrecedence": 50,
                "distinguisherMethod": {"type": "ByUser"},
                "rules": [{
                    "subjects": [{"kind": "ServiceAccount", "serviceAccount": {"name": ACCOUNT, "namespace": self.name}}],
                    "resourceRules": [{"verbs": verbs, "apiGroups": ["*"], "resources": ["*"], "clusterScope": true, "namespaces": ["*"]}],
                }],
            },
        }))?;
        create_or_keep(Api::<FlowSchema>::all(self.admin.clone()), &schema).await?;
        // A holder sent before the API server applied the FlowSchema sits in another priority
        // level: until a PATCH is refused, it is sent again.
        self.wait_for(|code| code == 429, || async { self.hold_a_seat().await }, "its PATCH calls to be answered 429")
            .await
    }

    /// (Re)starts the request that holds the priority level's one seat, and gives it a moment
    /// to reach the API server's handler.
    async fn hold_a_seat(&self) -> anyhow::Result<()> {
        use futures::StreamExt as _;
        use kube::client::ConfigExt as _;
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await?;
        let connector = config.rustls_https_connector()?;
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        let uri = format!("{}api/v1/namespaces/{}-probe", with_slash(&config.cluster_url.to_string()), self.name);
        let bearer = format!("Bearer {}", self.token);
        let task = tokio::spawn(async move {
            loop {
                // `{` and then nothing: the API server reads on until its request timeout.
                let body = http_body_util::StreamBody::new(
                    futures::stream::iter([Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                        bytes::Bytes::from_static(b"{"),
                    ))])
                    .chain(futures::stream::pending()),
                );
                let Ok(request) = hyper::Request::patch(uri.as_str())
                    .header("authorization", bearer.as_str())
                    .header("content-type", "application/merge-patch+json")
                    .body(body)
                else {
                    return;
                };
                let _ = client.request(request).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let previous = self.holder.lock().map_err(|_| anyhow!("holder lock poisoned"))?.replace(task);
        if let Some(previous) = previous {
            previous.abort();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(())
    }

    /// Lifts the throttling; returns once a PATCH of this identity is no longer refused 429.
    pub async fn release(&self) -> anyhow::Result<()> {
        delete_ignoring_missing(&Api::<FlowSchema>::all(self.admin.clone()), &self.name).await?;
        self.stop_holding();
        self.wait_for(|code| code != 429, || async { Ok(()) }, "its PATCH calls to pass Priority and Fairness again")
            .await
    }

    fn stop_holding(&self) {
        if let Ok(mut holder) = self.holder.lock()
            && let Some(task) = holder.take()
        {
            task.abort();
        }
    }

    /// Sends a PATCH of a namespace that does not exist as this identity until the HTTP status
    /// of the answer satisfies `done` (30 s at most). Priority and Fairness judge a call before
    /// authorization, so a throttled PATCH is answered 429 and any other one 403 or 404.
    async fn wait_for<F, Fut>(&self, done: impl Fn(u16) -> bool, mut again: F, what: &str) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        // previewd's own client: kube's default one would retry the 429s for minutes.
        let client = previewd_environments::kube_client::connect(Some(&self.kubeconfig)).await?;
        let namespaces: Api<Namespace> = Api::all(client);
        let probe = format!("{}-probe", self.name);
        let patch = kube::api::Patch::Merge(json!({}));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let code = match namespaces.patch(&probe, &kube::api::PatchParams::default(), &patch).await {
                Ok(_) => 200,
                Err(kube::Error::Api(status)) => status.code,
                Err(other) => return Err(anyhow!(other).context("calling the API server as the throttled identity")),
            };
            if done(code) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("waited 30 s for {what}; the last PATCH was answered {code}");
            }
            again().await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ThrottledIdentity {
    fn drop(&mut self) {
        self.stop_holding();
        // As `TestNamespace`: a runtime of its own, since Drop cannot await.
        let name = self.name.clone();
        let source = self.source_binding_namespace.clone();
        let removed = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let admin = admin_client().await?;
                delete_ignoring_missing(&Api::<FlowSchema>::all(admin.clone()), &name).await?;
                delete_ignoring_missing(&Api::<PriorityLevelConfiguration>::all(admin.clone()), &name).await?;
                delete_ignoring_missing(&Api::<ClusterRoleBinding>::all(admin.clone()), &name).await?;
                delete_ignoring_missing(&Api::<RoleBinding>::namespaced(admin, &source), &name).await
            })
        })
        .join();
        if let Ok(Err(e)) = removed {
            eprintln!("warning: removing the throttled identity's objects failed: {e:#}");
        }
    }
}

async fn create_or_keep<K>(api: Api<K>, object: &K) -> anyhow::Result<()>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(anyhow!(e).context("creating an API Priority and Fairness object")),
    }
}

async fn delete_ignoring_missing<K>(api: &Api<K>, name: &str) -> anyhow::Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(anyhow!(e).context(format!("deleting {name}"))),
    }
}

fn with_slash(url: &str) -> String {
    if url.ends_with('/') { url.to_owned() } else { format!("{url}/") }
}

/// The admin kubeconfig with its user replaced by `token`.
async fn write_kubeconfig(path: &Path, token: &str) -> anyhow::Result<()> {
    let (admin, _) = kubeconfig_paths().await?;
    let text = std::fs::read_to_string(&admin).with_context(|| format!("reading {}", admin.display()))?;
    let mut config: serde_json::Value = yaml::parse(&text, Origin::Platform)
        .map_err(|e| anyhow!("{}: {}", e.path, e.message))?
        .context("an empty kubeconfig")?;
    let users = config.get_mut("users").and_then(serde_json::Value::as_array_mut).context("no users")?;
    let user = users.first_mut().context("no user")?;
    user["user"] = json!({"token": token});
    std::fs::write(path, yaml::to_string(&config).map_err(anyhow::Error::msg)?)?;
    Ok(())
}
