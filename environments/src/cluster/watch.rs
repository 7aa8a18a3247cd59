//! Wake-ups from the cluster: what makes a waiting environment's next reconcile run when the
//! cluster changes, instead of when a timer fires.
//!
//! Two kinds of watch, shaped by what previewd may read (see the module above):
//!
//! - **Rollouts**, one watch per environment that is rolling out, on the metadata of the
//!   Deployments, StatefulSets, Jobs and pods in its namespace. previewd may not list workloads cluster-wide (a
//!   leaked token must not read another team's pods), so there is no single cluster-wide watch;
//!   instead a watch lives only while its environment rolls out (seconds to minutes), and their
//!   number is capped ([`RolloutWatches::new`]'s `max`). An environment over the cap is polled
//!   by its deadline-bounded requeue instead.
//! - **Namespaces**, one cluster-wide watch on the metadata of previewd's own namespaces (by
//!   label): a namespace that finishes terminating wakes its environment's teardown.
//!
//! Metadata is enough: any change to an object (its status too) is an event, and the reconcile
//! that the event wakes reads what it needs. Each watch also wakes once when its first listing
//! is complete, so a change between the reconcile's look and the watch's start is not missed.

use crate::render::{INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Something in the cluster changed that an environment waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// A workload or pod of environment `id` changed while it rolls out.
    Environment(i64),
    /// previewd's namespace of this name is gone.
    NamespaceGone(String),
}

/// The per-environment rollout watches of this process.
pub struct RolloutWatches {
    client: Client,
    wake: mpsc::Sender<Wake>,
    max: usize,
    active: Mutex<HashMap<i64, Active>>,
}

struct Active {
    namespace: String,
    until: tokio::sync::watch::Sender<Instant>,
    task: tokio::task::AbortHandle,
}

impl RolloutWatches {
    /// At most `max` watches at once; wake-ups go to `wake`.
    pub fn new(client: Client, wake: mpsc::Sender<Wake>, max: usize) -> Arc<Self> {
        Arc::new(RolloutWatches { client, wake, max, active: Mutex::new(HashMap::new()) })
    }

    /// Watches environment `id`'s namespace until `until` (its rollout deadline; a later call
    /// moves it). Returns false when the cap is reached: the caller then polls.
    pub fn watch(&self, id: i64, namespace: &str, until: Instant) -> bool {
        let Ok(mut active) = self.active.lock() else { return false };
        active.retain(|_, a| !a.task.is_finished());
        if let Some(current) = active.get(&id)
            && current.namespace == namespace
        {
            current.until.send_replace(until);
            return true;
        }
        if let Some(old) = active.remove(&id) {
            old.task.abort();
        }
        if active.len() >= self.max {
            return false;
        }
        let (until_tx, until_rx) = tokio::sync::watch::channel(until);
        let task =
            tokio::spawn(watch_rollout(self.client.clone(), id, namespace.to_owned(), until_rx, self.wake.clone()));
        active.insert(id, Active { namespace: namespace.to_owned(), until: until_tx, task: task.abort_handle() });
        true
    }

    /// Stops watching environment `id` (its rollout finished one way or another).
    pub fn forget(&self, id: i64) {
        if let Ok(mut active) = self.active.lock()
            && let Some(old) = active.remove(&id)
        {
            old.task.abort();
        }
    }

    /// How many watches are open.
    pub fn len(&self) -> usize {
        self.active
            .lock()
            .map(|mut a| {
                a.retain(|_, a| !a.task.is_finished());
                a.len()
            })
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for RolloutWatches {
    fn drop(&mut self) {
        if let Ok(active) = self.active.get_mut() {
            for a in active.values() {
                a.task.abort();
            }
        }
    }
}

/// Whether a watch event is news: a change, a deletion, or a (re)listing that completed.
fn is_news<K>(event: &Event<K>) -> bool {
    matches!(event, Event::Apply(_) | Event::Delete(_) | Event::InitDone)
}

async fn watch_rollout(
    client: Client,
    id: i64,
    namespace: String,
    mut until: tokio::sync::watch::Receiver<Instant>,
    wake: mpsc::Sender<Wake>,
) {
    let deployments = Api::<PartialObjectMeta<Deployment>>::namespaced(client.clone(), &namespace);
    let deployments = watcher(deployments, watcher::Config::default()).default_backoff().map_ok(|e| is_news(&e));
    let sets = Api::<PartialObjectMeta<StatefulSet>>::namespaced(client.clone(), &namespace);
    let sets = watcher(sets, watcher::Config::default()).default_backoff().map_ok(|e| is_news(&e));
    let jobs = Api::<PartialObjectMeta<Job>>::namespaced(client.clone(), &namespace);
    let jobs = watcher(jobs, watcher::Config::default()).default_backoff().map_ok(|e| is_news(&e));
    let pods = Api::<PartialObjectMeta<Pod>>::namespaced(client, &namespace);
    let pods = watcher(pods, watcher::Config::default()).default_backoff().map_ok(|e| is_news(&e));
    let mut events = stream::select_all([deployments.boxed(), sets.boxed(), jobs.boxed(), pods.boxed()]);
    loop {
        let deadline = *until.borrow_and_update();
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(true)) => {
                    if wake.send(Wake::Environment(id)).await.is_err() {
                        return;
                    }
                }
                Some(Ok(false)) => {}
                // The watcher retries with backoff; the deadline requeue is the safety net.
                Some(Err(error)) => {
                    tracing::debug!(environment = id, namespace, error = %error, "rollout watch interrupted; resuming");
                }
                None => return,
            },
            changed = until.changed() => if changed.is_err() { return },
            () = tokio::time::sleep_until(deadline) => {
                if *until.borrow() <= deadline {
                    return;
                }
            }
        }
    }
}

/// Watches the namespaces of previewd installation `instance` until `wake` closes, reporting
/// each one that is deleted. Runs for the life of the process.
pub async fn watch_namespaces(client: Client, instance: String, wake: mpsc::Sender<Wake>) {
    let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY},{INSTANCE_LABEL}={instance}");
    let namespaces = Api::<PartialObjectMeta<Namespace>>::all(client);
    let mut events = watcher(namespaces, watcher::Config::default().labels(&selector)).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Delete(namespace)) => {
                let Some(name) = namespace.metadata.name else { continue };
                if wake.send(Wake::NamespaceGone(name)).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(error = %error, "namespace watch interrupted; resuming with backoff"),
        }
    }
}
