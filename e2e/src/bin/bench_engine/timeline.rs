//! The control plane's side of the engine benchmark, timestamped by watches: when each step of
//! an environment's namespace happened (namespace, Deployment, Pod created, scheduled, Ready,
//! available; and for teardown terminating, the Pod gone, the namespace gone), and the phases
//! the figures split into between those marks.

use super::Sample;
use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use previewd_environments::cluster::rollout::rolled_out;
use previewd_environments::render::INSTANCE_LABEL;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// When this process saw each step of one environment's namespace happen.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Marks {
    namespace: Option<Instant>,
    deployment: Option<Instant>,
    pod: Option<Instant>,
    scheduled: Option<Instant>,
    pod_ready: Option<Instant>,
    available: Option<Instant>,
    terminating: Option<Instant>,
    pod_terminating: Option<Instant>,
    pod_gone: Option<Instant>,
    namespace_gone: Option<Instant>,
}

fn mark(slot: &mut Option<Instant>, now: Instant) {
    if slot.is_none() {
        *slot = Some(now);
    }
}

type MarksByNamespace = Arc<Mutex<HashMap<String, Marks>>>;

/// Watches namespaces and deployments of this instance and the environments' pods.
pub(super) struct Timeline {
    marks: MarksByNamespace,
    /// The watches; dropping the set stops them.
    _watches: JoinSet<()>,
}

impl Timeline {
    pub(super) async fn start(admin: &Client, instance: &str) -> anyhow::Result<Self> {
        let marks = MarksByNamespace::default();
        let mut tasks = JoinSet::new();
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(3);
        let instance_selector = format!("{INSTANCE_LABEL}={instance}");
        tasks.spawn(follow(
            Api::<Namespace>::all(admin.clone()),
            watcher::Config::default().labels(&instance_selector),
            marks.clone(),
            ready_tx.clone(),
            record_namespace,
        ));
        tasks.spawn(follow(
            Api::<Deployment>::all(admin.clone()),
            watcher::Config::default().labels(&instance_selector),
            marks.clone(),
            ready_tx.clone(),
            record_deployment,
        ));
        // The pod template carries no ownership labels; the app's label narrows it down, and only
        // the run's namespaces are read from the map.
        tasks.spawn(follow(
            Api::<Pod>::all(admin.clone()),
            watcher::Config::default().labels("app.kubernetes.io/name=app"),
            marks.clone(),
            ready_tx,
            record_pod,
        ));
        for _ in 0..3 {
            tokio::time::timeout(Duration::from_secs(30), ready_rx.recv())
                .await
                .context("the namespace, deployment and pod watches did not start within 30 s")?
                .context("a watch stopped while starting")?;
        }
        Ok(Timeline { marks, _watches: tasks })
    }

    pub(super) fn snapshot(&self) -> HashMap<String, Marks> {
        self.marks.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

async fn follow<K>(
    api: Api<K>,
    config: watcher::Config,
    marks: MarksByNamespace,
    ready: tokio::sync::mpsc::Sender<()>,
    record: fn(&mut HashMap<String, Marks>, &K, bool, Instant),
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut stream = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    let mut ready = Some(ready);
    while let Some(event) = stream.next().await {
        let now = Instant::now();
        let (object, deleted) = match event {
            Ok(Event::Apply(object) | Event::InitApply(object)) => (object, false),
            Ok(Event::Delete(object)) => (object, true),
            Ok(Event::InitDone) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(()).await;
                }
                continue;
            }
            // Init, and errors the backoff retries after.
            Ok(Event::Init) | Err(_) => continue,
        };
        record(&mut marks.lock().unwrap_or_else(PoisonError::into_inner), &object, deleted, now);
    }
}

fn record_namespace(marks: &mut HashMap<String, Marks>, namespace: &Namespace, deleted: bool, now: Instant) {
    let Some(name) = &namespace.metadata.name else { return };
    let m = marks.entry(name.clone()).or_default();
    mark(&mut m.namespace, now);
    if deleted {
        mark(&mut m.namespace_gone, now);
    } else if namespace.metadata.deletion_timestamp.is_some() {
        mark(&mut m.terminating, now);
    }
}

fn record_deployment(marks: &mut HashMap<String, Marks>, deployment: &Deployment, deleted: bool, now: Instant) {
    let Some(namespace) = &deployment.metadata.namespace else { return };
    let m = marks.entry(namespace.clone()).or_default();
    mark(&mut m.deployment, now);
    if !deleted && rolled_out(deployment) {
        mark(&mut m.available, now);
    }
}

fn record_pod(marks: &mut HashMap<String, Marks>, pod: &Pod, deleted: bool, now: Instant) {
    let Some(namespace) = &pod.metadata.namespace else { return };
    let m = marks.entry(namespace.clone()).or_default();
    mark(&mut m.pod, now);
    if deleted {
        mark(&mut m.pod_gone, now);
        return;
    }
    if pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
        mark(&mut m.scheduled, now);
    }
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if ready {
        mark(&mut m.pod_ready, now);
    }
    if pod.metadata.deletion_timestamp.is_some() {
        mark(&mut m.pod_terminating, now);
    }
}

/// A phase: its description, and the marks it runs between (`None`: the sample's start or end).
pub(super) type Phase = (&'static str, Option<fn(&Marks) -> Option<Instant>>, Option<fn(&Marks) -> Option<Instant>>);

pub(super) const PROVISION_PHASES: &[Phase] = &[
    ("previewd: Provisioning recorded, rendered, namespace applied", None, Some(|m| m.namespace)),
    (
        "previewd: quota, limits, network policies, service account, deployment applied",
        Some(|m| m.namespace),
        Some(|m| m.deployment),
    ),
    ("controller-manager: ReplicaSet and Pod created", Some(|m| m.deployment), Some(|m| m.pod)),
    ("scheduler: Pod bound to a node", Some(|m| m.pod), Some(|m| m.scheduled)),
    ("kwok: Pod Running and Ready", Some(|m| m.scheduled), Some(|m| m.pod_ready)),
    ("controller-manager: Deployment status available", Some(|m| m.pod_ready), Some(|m| m.available)),
    ("previewd: notices the rollout (250 ms poll), records Ready", Some(|m| m.available), None),
];

pub(super) const TEARDOWN_PHASES: &[Phase] = &[
    ("previewd: namespace deleted", None, Some(|m| m.terminating)),
    ("namespace controller: starts deleting the content", Some(|m| m.terminating), Some(|m| m.pod_terminating)),
    ("kwok: Pod deleted", Some(|m| m.pod_terminating), Some(|m| m.pod_gone)),
    ("namespace controller: the rest deleted, namespace removed", Some(|m| m.pod_gone), Some(|m| m.namespace_gone)),
    ("previewd: notices (250 ms poll), records Deleted", Some(|m| m.namespace_gone), None),
];

pub(super) fn phase_durations(phase: &Phase, samples: &[Sample], marks: &HashMap<String, Marks>) -> Vec<Duration> {
    let (_, from, to) = phase;
    let mut durations: Vec<Duration> = samples
        .iter()
        .filter_map(|s| {
            let m = marks.get(&s.name)?;
            let from = match from {
                Some(f) => f(m)?,
                None => s.start,
            };
            let to = match to {
                Some(t) => t(m)?,
                None => s.end,
            };
            Some(to.saturating_duration_since(from))
        })
        .collect();
    durations.sort_unstable();
    durations
}
