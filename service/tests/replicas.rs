//! Two replicas of previewd on one Postgres: one is killed (SIGKILL, no shutdown) while its
//! environments roll out, and the other finishes its work with nothing lost and nothing done
//! twice on the pull requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::story::*;
use previewd_e2e::database::{Backend, fresh};
use previewd_e2e::previewd::Previewd;
use std::path::Path;
use std::time::Duration;

#[tokio::test]
async fn a_replica_killed_mid_provision_leaves_its_work_to_the_other() {
    let db = fresh(Backend::Postgres).await.unwrap();
    // Pods take 15 s to become Ready, so the kill lands while the rollouts are in progress.
    let delayed = previewd_e2e::fixtures::templates_with_pod_ready_delay(Duration::from_secs(15)).unwrap();
    let templates = ("PREVIEWD_TEMPLATES_DIR", delayed.path().display().to_string());
    let mut s = story_with(&db, |p| p, &[templates]).await;
    let binary = Path::new(env!("CARGO_BIN_EXE_previewd"));
    let mut second = Previewd::start(binary, &s.env, &s.dir.path().join("second.log")).await.unwrap();

    // The deliveries reach the first replica; both share the queue.
    let heads: Vec<(i64, String)> = (80..84).zip(['c', 'd', 'e', 'f']).map(|(n, c)| (n, sha(c))).collect();
    for (number, head) in &heads {
        s.open(*number, head).await;
    }
    let rolling = |e: &previewd_environments::store::ReconcileRecord| {
        e.state == "Provisioning" && e.reason.as_deref().is_some_and(|r| r.starts_with("rolling out"))
    };
    for (number, _) in &heads {
        s.wait(*number, "rolling out", rolling).await;
    }
    s.previewd.kill().await.unwrap();

    // The second replica takes over: its periodic pass queues the rollouts again, and the
    // leases the first held run out (reconcile 15 s, jobs 5 s here).
    s.all_ready_and_reported_once(&heads).await;
    for (number, _) in &heads {
        let env = s.environment(*number).await.unwrap();
        let readied = s.store.transitions(env.id).await.unwrap().into_iter().filter(|t| t.to_state == "Ready").count();
        assert_eq!(readied, 1, "#{number} became Ready once");
    }
    second.stop().await.unwrap();
    assert!(second.log().contains("reconciled"), "the second replica did the work");
    s.finish().await;
}
