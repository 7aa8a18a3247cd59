//! The retention sweep against real databases (a fresh SQLite file and a fresh Postgres database
//! per test): what is past retention goes, what is still needed stays, and SQLite's file shrinks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use previewd_environments::model::{EnvironmentState, PrNumber, PullRequest, RepoId};
use previewd_environments::store::{
    DeliveryOutcome, JobState, NewAuditEntry, NewDelivery, NewJob, Recorded, Retention, Store,
};
use previewd_environments::time::now_ms;
use std::time::Duration;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

async fn store(url: &str) -> Store {
    let store = Store::connect(&url.into()).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

fn pr(number: i64) -> PullRequest {
    previewd_e2e::fixtures::pull_request(42, "octo", "app", number)
}

fn delivery(id: &str, digest: &str, received_at: i64) -> NewDelivery {
    NewDelivery {
        hook_id: "1".into(),
        delivery_id: id.into(),
        body_sha256: Some(digest.repeat(64)),
        event: "pull_request".into(),
        action: Some("synchronize".into()),
        outcome: DeliveryOutcome::Ignored,
        received_at,
        job: None,
    }
}

/// A job named `name` in its payload (a GitHub event: each is a job of its own).
fn job(name: &str) -> NewJob {
    NewJob::github_event(&serde_json::json!({ "name": name }), 3).unwrap()
}

/// The defaults' shape, with short ages so one test can step over each.
fn retention() -> Retention {
    let days = |d: u64| Duration::from_secs(d * 24 * 3600);
    Retention {
        done_jobs: days(1),
        dead_jobs: days(7),
        deliveries: days(7),
        transitions: days(1),
        finished_environments: days(1),
        audit: days(1),
        // Small, so that every kind is deleted over several batches.
        batch: 2,
    }
}

async fn count(store: &Store, state: JobState) -> i64 {
    store.job_counts().await.unwrap().into_iter().find(|(s, _)| *s == state).unwrap().1
}

previewd_e2e::each_backend! {
    async fn the_sweep_deletes_what_is_past_retention_and_keeps_what_is_needed(db) {
        use EnvironmentState::*;
        let store = store(&db.url).await;
        let now = now_ms();
        // A live environment with a history of three transitions, and a deleted one.
        let live = store.record_environment(&pr(7), Pending, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
        store.record_environment(&pr(7), Provisioning, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
        store.record_environment(&pr(7), Ready, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
        let gone = store.record_environment(&pr(8), Pending, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
        store.record_environment(&pr(8), Deleting, Some("closed"), &previewd_environments::model::Cause::Previewd).await.unwrap();
        store.record_environment(&pr(8), Deleted, Some("closed"), &previewd_environments::model::Cause::Previewd).await.unwrap();
        // Their reports, and three more jobs, run to the end: five done.
        for name in ["a", "b", "c"] {
            store.enqueue(&job(name)).await.unwrap();
        }
        for claimed in store.claim_jobs("w", Duration::from_secs(60), 100).await.unwrap() {
            assert!(store.complete_job(claimed.id, "w").await.unwrap());
        }
        assert_eq!(count(&store, JobState::Done).await, 5);
        // One dead, one running, one queued.
        store.enqueue(&job("dead")).await.unwrap();
        let claimed = store.claim_jobs("w", Duration::from_secs(60), 1).await.unwrap();
        store.fail_job(&claimed[0], "w", "cannot", None).await.unwrap();
        store.enqueue(&job("running")).await.unwrap();
        assert_eq!(store.claim_jobs("w", Duration::from_secs(3600), 1).await.unwrap().len(), 1);
        store.enqueue(&job("queued")).await.unwrap();
        // Deliveries received 10 days ago and now; the redelivery window is 3 days.
        let window_start = |at: i64| at - 3 * DAY;
        let recorded = store
            .record_deliveries(&[delivery("old-1", "a", now - 10 * DAY), delivery("old-2", "b", now - 10 * DAY),
                                 delivery("old-3", "c", now - 10 * DAY), delivery("recent", "d", now)], window_start(now))
            .await
            .unwrap();
        assert!(recorded.iter().all(|r| matches!(r, Recorded::New { .. })), "{recorded:?}");
        // Two audit entries, written now.
        for action in ["environment.extend", "environment.destroy"] {
            let entry = NewAuditEntry { actor: "token:ops", action, environment_id: Some(live.id), target: "o/r#7", detail: None, outcome: "done", remote: None };
            store.audit(&entry).await.unwrap();
        }
        assert_eq!(store.audit_entries(None, 10).await.unwrap().len(), 2);

        // Two days later: done jobs (1 day), the old deliveries, the deleted environment and the
        // live one's older transitions are past retention.
        let later = now + 2 * DAY;
        let swept = store.sweep(&retention(), later).await.unwrap();
        assert_eq!(
            (swept.done_jobs, swept.dead_jobs, swept.deliveries, swept.environments),
            (5, 0, 3, 1),
            "{swept:?}"
        );
        assert_eq!(swept.transitions, 2, "the live environment's two older transitions: {swept:?}");
        assert_eq!(swept.audit, 2, "audit entries past their day: {swept:?}");
        assert!(store.audit_entries(None, 10).await.unwrap().is_empty());
        assert_eq!(count(&store, JobState::Done).await, 0);
        assert_eq!(count(&store, JobState::Dead).await, 1, "dead jobs are kept for 7 days");
        assert_eq!(count(&store, JobState::Running).await, 1);
        assert_eq!(count(&store, JobState::Queued).await, 1);
        let environments = store.environments().await.unwrap();
        assert_eq!(environments.iter().map(|e| e.pr_number).collect::<Vec<_>>(), [7]);
        let history = store.transitions(live.id).await.unwrap();
        assert_eq!(history.len(), 1, "the latest transition stays: {history:?}");
        assert_eq!(history[0].to_state, "Ready");
        assert!(store.transitions(gone.id).await.unwrap().is_empty());
        assert!(store.find_delivery("1", "old-1").await.unwrap().is_none());
        let recent = store.find_delivery("1", "recent").await.unwrap().expect("recent delivery kept");
        assert!(recent.body_sha256.is_some());
        // Replay protection within the window still holds: the same body under another
        // delivery id, and the same delivery id again.
        let again = store
            .record_deliveries(&[delivery("fresh-id", "d", later), delivery("recent", "e", later)], window_start(later))
            .await
            .unwrap();
        assert_eq!(again, vec![Recorded::Replay { of: "recent".into() }, Recorded::Duplicate]);
        // Nothing more to do at the same time.
        let swept = store.sweep(&retention(), later).await.unwrap();
        assert_eq!(swept.total(), 0, "{swept:?}");
        // A pull request whose environment was deleted can have one again (with a report queued).
        let back = store.record_environment(&pr(8), Pending, Some("reopened"), &previewd_environments::model::Cause::Previewd).await.unwrap();
        assert_eq!(store.transitions(back.id).await.unwrap().len(), 1);

        // Eight days later: the dead job and the recent delivery go too; queued and running
        // jobs, the live environment and its latest transition never do.
        let swept = store.sweep(&retention(), now + 8 * DAY + HOUR).await.unwrap();
        assert_eq!((swept.dead_jobs, swept.deliveries), (1, 1), "{swept:?}");
        assert_eq!(count(&store, JobState::Dead).await, 0);
        assert_eq!(count(&store, JobState::Running).await, 1);
        assert_eq!(count(&store, JobState::Queued).await, 2, "the queued job and the reopened one's report");
        assert_eq!(store.transitions(live.id).await.unwrap().len(), 1);
        assert_eq!(store.environments().await.unwrap().len(), 2);
        assert!(store.environment(RepoId(42), PrNumber(7)).await.unwrap().is_some());
    }

    async fn a_finished_environment_is_kept_while_a_job_still_needs_it(db) {
        use EnvironmentState::*;
        let store = store(&db.url).await;
        store.record_environment(&pr(9), Pending, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
        store.record_environment(&pr(9), Deleting, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
        store.record_environment(&pr(9), Deleted, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
        // Its report (saying on the pull request that it was deleted) has not run yet.
        assert_eq!(count(&store, JobState::Queued).await, 1);
        let swept = store.sweep(&retention(), now_ms() + 30 * DAY).await.unwrap();
        assert_eq!(swept.environments, 0, "{swept:?}");
        assert!(store.environment(RepoId(42), PrNumber(9)).await.unwrap().is_some());
        for claimed in store.claim_jobs("w", Duration::from_secs(60), 10).await.unwrap() {
            store.complete_job(claimed.id, "w").await.unwrap();
        }
        let swept = store.sweep(&retention(), now_ms() + 30 * DAY).await.unwrap();
        assert_eq!((swept.environments, swept.done_jobs), (1, 1), "{swept:?}");
        assert!(store.environment(RepoId(42), PrNumber(9)).await.unwrap().is_none());
    }

    async fn share_links_open_until_they_expire_or_are_revoked_and_go_a_day_after_or_with_their_environment(db) {
        use EnvironmentState::*;
        use previewd_environments::model::Cause;
        use secrecy::{ExposeSecret, SecretString};
        let store = store(&db.url).await;
        let live = store.record_environment(&pr(1), Pending, None, &Cause::Previewd).await.unwrap();
        let gone = store.record_environment(&pr(2), Pending, None, &Cause::Previewd).await.unwrap();
        let now = now_ms();
        let (open, secret) = store.create_share_link(live.id, "github:writer", now + HOUR).await.unwrap();
        assert!(secret.expose_secret().starts_with("pvs_") && secret.expose_secret().len() > 40);
        assert_eq!(store.share_link(&secret).await.unwrap().as_ref(), Some(&open));
        assert!(open.is_live(now) && !open.is_live(now + HOUR));
        // Found by its digest only: another secret, or one without the prefix, finds nothing.
        let wrong = SecretString::from(format!("{}x", secret.expose_secret()));
        assert_eq!(store.share_link(&wrong).await.unwrap(), None);
        let unprefixed = SecretString::from(secret.expose_secret().trim_start_matches("pvs_").to_owned());
        assert_eq!(store.share_link(&unprefixed).await.unwrap(), None);
        // Revoked by its environment's id only, once.
        assert!(!store.revoke_share_link(gone.id, open.id).await.unwrap());
        assert!(store.revoke_share_link(live.id, open.id).await.unwrap());
        assert!(!store.revoke_share_link(live.id, open.id).await.unwrap());
        let revoked = store.share_link(&secret).await.unwrap().unwrap();
        assert!(revoked.revoked_at.is_some() && !revoked.is_live(now));
        let (expired, _) = store.create_share_link(live.id, "token:ops", now - 2 * HOUR).await.unwrap();
        let (of_gone, _) = store.create_share_link(gone.id, "token:ops", now + 30 * DAY).await.unwrap();
        for state in [Deleting, Deleted] {
            store.record_environment(&pr(2), state, None, &Cause::Previewd).await.unwrap();
        }
        for claimed in store.claim_jobs("w", Duration::from_secs(60), 10).await.unwrap() {
            store.complete_job(claimed.id, "w").await.unwrap();
        }
        // Within a day of expiring, an expired link is kept (its visitors are told when).
        let swept = store.sweep(&retention(), now).await.unwrap();
        assert_eq!(swept.share_links, 0, "{swept:?}");
        let listed: Vec<i64> = store.share_links(live.id).await.unwrap().iter().map(|l| l.id).collect();
        assert_eq!(listed, [expired.id, open.id], "newest first");
        // A day (and a minute) on: the expired one goes, the open one (an hour left then) stays;
        // the environment gone, its links go with it.
        let swept = store.sweep(&retention(), now + DAY + 60_000).await.unwrap();
        assert_eq!((swept.share_links, swept.environments), (1, 1), "{swept:?}");
        let listed: Vec<i64> = store.share_links(live.id).await.unwrap().iter().map(|l| l.id).collect();
        assert_eq!(listed, [open.id]);
        assert!(store.share_links(gone.id).await.unwrap().is_empty(), "link {} went with its environment", of_gone.id);
    }

    async fn a_delivery_is_kept_while_its_job_is(db) {
        let store = store(&db.url).await;
        let old = now_ms() - 30 * DAY;
        let mut with_job = delivery("with-job", "f", old);
        with_job.outcome = DeliveryOutcome::Queued;
        with_job.job = Some(job("event"));
        store.record_deliveries(&[with_job], 0).await.unwrap();
        let swept = store.sweep(&retention(), now_ms()).await.unwrap();
        assert_eq!(swept.deliveries, 0, "its job is queued: {swept:?}");
        assert!(store.find_delivery("1", "with-job").await.unwrap().is_some());
    }
}

fn file_size(url: &str) -> u64 {
    let path = url.strip_prefix("sqlite://").unwrap();
    std::fs::metadata(path).unwrap().len() + std::fs::metadata(format!("{path}-wal")).map_or(0, |m| m.len())
}

/// SQLite gives the space of deleted rows back to the file system after a sweep.
#[tokio::test]
async fn the_sqlite_file_shrinks_after_a_sweep() {
    let db = previewd_e2e::database::fresh(previewd_e2e::database::Backend::Sqlite).await.unwrap();
    let store = store(&db.url).await;
    let old = now_ms() - 30 * DAY;
    let batch: Vec<NewDelivery> = (0..20_000)
        .map(|i| NewDelivery { body_sha256: None, ..delivery(&format!("d-{i}-{}", "x".repeat(100)), "a", old) })
        .collect();
    store.record_deliveries(&batch, 0).await.unwrap();
    store.reclaim_space().await.unwrap();
    let before = file_size(&db.url);
    let swept = store.sweep(&Retention { batch: 1_000, ..retention() }, now_ms()).await.unwrap();
    assert_eq!(swept.deliveries, 20_000);
    let after = file_size(&db.url);
    println!("SQLite file: {before} bytes before the sweep, {after} after");
    assert!(before > 2_000_000, "{before}");
    assert!(after * 5 < before, "the file did not shrink: {before} -> {after} bytes");
}

/// A file made before incremental auto-vacuum (mode NONE) is converted once by `migrate`.
#[tokio::test]
async fn an_older_sqlite_file_is_converted_to_incremental_auto_vacuum() {
    use sqlx::Connection;
    let db = previewd_e2e::database::fresh(previewd_e2e::database::Backend::Sqlite).await.unwrap();
    {
        let options: sqlx::sqlite::SqliteConnectOptions = db.url.parse().unwrap();
        let mut conn = sqlx::SqliteConnection::connect_with(&options.create_if_missing(true)).await.unwrap();
        sqlx::query("CREATE TABLE before_upgrade (x INTEGER)").execute(&mut conn).await.unwrap();
        let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum").fetch_one(&mut conn).await.unwrap();
        assert_eq!(mode, 0);
        conn.close().await.unwrap();
    }
    let store = store(&db.url).await;
    store.close().await;
    let options: sqlx::sqlite::SqliteConnectOptions = db.url.parse().unwrap();
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
    let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum").fetch_one(&mut conn).await.unwrap();
    assert_eq!(mode, 2, "INCREMENTAL");
}
