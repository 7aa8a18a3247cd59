//! previewd resumes its work after the Kubernetes API server was away, on each store. In a test
//! binary of its own: cargo runs test binaries one after another, so no other test sees the
//! outage; and the stores take their turns inside the one test, so the two outages never overlap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::story::*;
use previewd_e2e::database::{Backend, fresh};

#[tokio::test]
async fn work_resumes_after_the_api_server_comes_back() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        resumes_on(backend).await;
    }
}

async fn resumes_on(backend: Backend) {
    let db = fresh(backend).await.unwrap();
    let mut s = story(&db, |p| p).await;
    s.open(30, &sha('a')).await;
    s.wait_state(30, "Ready").await;

    // The API server goes away for 8 seconds; a pull request opened meanwhile waits for it.
    let restart = tokio::process::Command::new("bash")
        .arg(previewd_e2e::cluster::cluster_script())
        .args(["restart-apiserver", "8"])
        .status();
    let restart = tokio::spawn(restart);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    s.open(31, &sha('b')).await;
    let status = restart.await.unwrap().unwrap();
    assert!(status.success(), "cluster.sh restart-apiserver failed");

    let ready = s.wait_state(31, "Ready").await;
    s.wait_deployment(&sha('b'), "success").await;
    s.comment_says(31, &[ready.url.as_deref().unwrap()]).await;
    // The one that was Ready before the outage is still Ready.
    assert_eq!(s.environment(30).await.unwrap().state, "Ready");
    s.finish().await;
}
