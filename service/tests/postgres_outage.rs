//! previewd through a Postgres restart in the middle of a burst of deliveries: nothing is lost,
//! the work resumes, and nothing is done twice on the pull requests. In a test binary of its
//! own: cargo runs test binaries one after another, so no other test sees the outage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::story::*;
use previewd_e2e::database::{Backend, fresh, postgres_script};
use serde_json::json;

#[tokio::test]
async fn deliveries_during_a_postgres_restart_are_not_lost() {
    let db = fresh(Backend::Postgres).await.unwrap();
    // Deliveries GitHub could not hand over are asked for again at each GitHub resync.
    let overrides = [("PREVIEWD_GITHUB__RESYNC_INTERVAL_SECONDS", "5".to_owned())];
    let mut s = story_with(&db, |p| p.replace("  per_repository: 5\n", "  per_repository: 20\n"), &overrides).await;
    let heads: Vec<(i64, String)> = (90..102).zip("0123456789ab".chars()).map(|(n, c)| (n, sha(c))).collect();

    for (number, head) in &heads {
        s.github.put_file(OWNER, &s.repo, head, ".preview.yaml", Some(&s.preview)).await.unwrap();
        s.github.open_pull(json!({"owner": OWNER, "repo": s.repo, "number": number, "head_sha": head})).await.unwrap();
    }
    // The server goes away for 5 s; once it is down, twelve openings are delivered at once.
    let restart = tokio::process::Command::new("bash").arg(postgres_script()).args(["restart", "5"]).status();
    let restart = tokio::spawn(restart);
    common::eventually("the Postgres server is down", || async {
        let up = tokio::process::Command::new("bash").arg(postgres_script()).arg("status").status().await.ok()?;
        (!up.success()).then_some(())
    })
    .await;
    let deliveries = heads.iter().map(|(number, head)| {
        let payload = s.pull_request("opened", *number, head);
        let github = &s.github;
        async move {
            let began = std::time::Instant::now();
            let delivered = github.deliver("pull_request", &payload).await.unwrap();
            (delivered.status_code, began.elapsed().as_millis())
        }
    });
    let answers = futures::future::join_all(deliveries).await;
    let status = restart.await.unwrap().unwrap();
    assert!(status.success(), "e2e/postgres.sh restart failed");
    println!("intake answers (status, ms) during the restart: {answers:?}");
    // The outage was met: a delivery refused (503) or held until the store was back.
    assert!(answers.iter().any(|&(status, ms)| status != 202 || ms > 1000), "{answers:?}");
    assert!(answers.iter().all(|&(status, _)| status == 202 || status == 503), "{answers:?}");

    s.all_ready_and_reported_once(&heads).await;
    s.finish().await;
}
