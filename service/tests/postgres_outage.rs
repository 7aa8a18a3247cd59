//! previewd through Postgres restarts in the middle of bursts of deliveries, one shorter and one
//! longer than GitHub waits for an answer: nothing is lost, the work resumes, and nothing is done
//! twice on the pull requests. In a test binary of its
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
    let answers = deliver_during_outage(&s, &heads, 5).await;
    // The outage was met: a delivery refused (503) or held until the store was back.
    assert!(answers.iter().any(|&(status, ms)| status != 202 || ms > 1000), "{answers:?}");
    assert!(answers.iter().all(|&(status, _)| status == 202 || status == 503), "{answers:?}");

    // Away longer than GitHub waits for an answer (10 s): every delivery is refused with 503
    // before GitHub gives up on it, so GitHub records a failure it redelivers, not a timeout.
    let later: Vec<(i64, String)> = (102..106).zip("cdef".chars()).map(|(n, c)| (n, sha(c))).collect();
    for (number, head) in &later {
        s.github.put_file(OWNER, &s.repo, head, ".preview.yaml", Some(&s.preview)).await.unwrap();
        s.github.open_pull(json!({"owner": OWNER, "repo": s.repo, "number": number, "head_sha": head})).await.unwrap();
    }
    let answers = deliver_during_outage(&s, &later, 14).await;
    assert!(
        answers.iter().all(|&(status, ms)| status == 503 && ms < 9_500),
        "refused within GitHub's 10 s: {answers:?}"
    );

    // The resync redelivers the refused ones: nothing lost, nothing done twice.
    let heads: Vec<(i64, String)> = heads.into_iter().chain(later).collect();
    s.all_ready_and_reported_once(&heads).await;
    s.finish().await;
}

/// Restarts the Postgres server with `seconds` of downtime and, once it is down, delivers the
/// opening of each of `heads` at once: each answer's status (0: the stand-in gave up after 10 s,
/// as GitHub does) and how long it took.
async fn deliver_during_outage(s: &Story, heads: &[(i64, String)], seconds: u32) -> Vec<(u16, u128)> {
    let restart =
        tokio::process::Command::new("bash").arg(postgres_script()).args(["restart", &seconds.to_string()]).status();
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
    println!("intake answers (status, ms) during a {seconds} s restart: {answers:?}");
    answers
}
