//! The store against real databases: a fresh SQLite file and a fresh Postgres database per test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use previewd_environments::model::{CommitSha, EnvironmentState, PrNumber, PullRequest, Repo, RepoId};
use previewd_environments::store::{
    DeliveryOutcome, JobFate, JobKind, JobState, Lease, NewDelivery, NewJob, Recorded, Store,
};
use previewd_environments::time::now_ms;
use std::collections::HashSet;
use std::time::Duration;

async fn store(url: &str) -> Store {
    let store = Store::connect(&url.into()).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

fn delivery(hook: &str, id: &str, job: bool) -> NewDelivery {
    NewDelivery {
        hook_id: hook.into(),
        delivery_id: id.into(),
        body_sha256: None,
        event: "pull_request".into(),
        action: Some("opened".into()),
        outcome: if job { DeliveryOutcome::Queued } else { DeliveryOutcome::Ignored },
        received_at: now_ms(),
        job: job.then(|| job_of("{}", 3)),
    }
}

/// A job whose payload is `payload` (JSON). A GitHub event: its kind absorbs nothing, so each
/// call is a job of its own.
fn job_of(payload: &str, max_attempts: i64) -> NewJob {
    let payload: serde_json::Value = serde_json::from_str(payload).expect("test payloads are JSON");
    NewJob::github_event(&payload, max_attempts).unwrap()
}

async fn enqueue(store: &Store, job: &NewJob) -> i64 {
    store.enqueue(job).await.unwrap().expect("a job of its own")
}

fn pr(sha: char) -> PullRequest {
    PullRequest {
        repo: Repo { id: RepoId(42), owner: "octo".into(), name: "app".into() },
        number: PrNumber(7),
        head_sha: CommitSha(sha.to_string().repeat(40)),
        head_branch: "feature".into(),
        author: "dev".into(),
        from_fork: false,
        draft: false,
        labels: vec![],
    }
}

async fn counts(store: &Store) -> Vec<(JobState, i64)> {
    store.job_counts().await.unwrap()
}

previewd_e2e::each_backend! {
    async fn migrations_apply_twice_without_change(db) {
        let store = store(&db.url).await;
        store.migrate().await.expect("second migrate is a no-op");
        store.ping().await.unwrap();
        assert_eq!(store.count_deliveries().await.unwrap(), 0);
    }

    async fn a_delivery_is_recorded_once_per_hook(db) {
        let store = store(&db.url).await;
        let first = store
            .record_deliveries(&[delivery("1", "guid-a", true), delivery("2", "guid-a", true), delivery("1", "guid-a", true)], 0)
            .await
            .unwrap();
        assert!(matches!(first[0], Recorded::New { .. }));
        assert!(matches!(first[1], Recorded::New { .. }), "another hook may share the delivery id");
        assert_eq!(first[2], Recorded::Duplicate, "repeated inside the batch");
        let again = store.record_deliveries(&[delivery("1", "guid-a", true)], 0).await.unwrap();
        assert_eq!(again, vec![Recorded::Duplicate]);
        assert_eq!(store.count_deliveries().await.unwrap(), 2);
        let Recorded::New { delivery: row } = first[0] else { unreachable!() };
        assert_eq!(store.jobs_for_delivery(row).await.unwrap().len(), 1);
        assert_eq!(counts(&store).await[0], (JobState::Queued, 2));
        let stored = store.find_delivery("1", "guid-a").await.unwrap().unwrap();
        assert_eq!((stored.event.as_str(), stored.outcome.as_str()), ("pull_request", "queued"));
    }

    async fn a_body_is_recorded_once_within_the_window_whatever_its_delivery_id(db) {
        let store = store(&db.url).await;
        let with_body = |hook: &str, id: &str, body: &str| NewDelivery {
            body_sha256: Some(format!("{body:0>64}")),
            ..delivery(hook, id, true)
        };
        let first = store
            .record_deliveries(
                &[with_body("1", "guid-a", "a"), with_body("1", "guid-b", "a"), with_body("1", "guid-c", "c")],
                0,
            )
            .await
            .unwrap();
        assert!(matches!(first[0], Recorded::New { .. }));
        assert_eq!(first[1], Recorded::Replay { of: "guid-a".into() }, "replayed inside the batch");
        assert!(matches!(first[2], Recorded::New { .. }));
        let again = store
            .record_deliveries(
                &[
                    with_body("1", "guid-a", "a"),
                    with_body("2", "guid-a", "a"),
                    with_body("7", "guid-z", "a"),
                    with_body("1", "guid-d", "c"),
                ],
                0,
            )
            .await
            .unwrap();
        assert_eq!(again[0], Recorded::Duplicate, "GitHub's redelivery");
        assert_eq!(again[1], Recorded::Duplicate, "the same delivery to another hook");
        assert_eq!(again[2], Recorded::Replay { of: "guid-a".into() }, "new delivery id and hook id");
        assert_eq!(again[3], Recorded::Replay { of: "guid-c".into() });
        assert_eq!(store.count_deliveries().await.unwrap(), 2);
        assert_eq!(counts(&store).await[0], (JobState::Queued, 2));
        // Rows without a digest (stored before it existed) stop nothing.
        let old = store.record_deliveries(&[delivery("1", "guid-old", true)], 0).await.unwrap();
        assert!(matches!(old[0], Recorded::New { .. }));
        // Past the window the digest is forgotten: the body counts as new again.
        let later = store.record_deliveries(&[with_body("1", "guid-e", "a")], now_ms() + 1).await.unwrap();
        assert!(matches!(later[0], Recorded::New { .. }), "{later:?}");
        let forgotten = store.find_delivery("1", "guid-a").await.unwrap().unwrap();
        assert_eq!(forgotten.body_sha256, None);
        assert_eq!(store.find_delivery("1", "guid-e").await.unwrap().unwrap().body_sha256, Some(format!("{:0>64}", "a")));
    }

    async fn ignored_deliveries_queue_no_job(db) {
        let store = store(&db.url).await;
        store.record_deliveries(&[delivery("1", "x", false)], 0).await.unwrap();
        assert_eq!(counts(&store).await[0], (JobState::Queued, 0));
        assert_eq!(store.count_deliveries().await.unwrap(), 1);
    }

    async fn a_claimed_job_is_not_claimed_again_until_its_lease_runs_out(db) {
        let store = store(&db.url).await;
        let id = enqueue(&store, &job_of("{\"n\":1}", 3)).await;
        let claimed = store.claim_jobs("w1", Duration::from_secs(60), 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!((claimed[0].id, claimed[0].attempts, claimed[0].payload.as_str()), (id, 1, "{\"n\":1}"));
        assert!(store.claim_jobs("w2", Duration::from_secs(60), 10).await.unwrap().is_empty());
        assert!(store.renew_lease(id, "w1", Duration::from_secs(60)).await.unwrap());
        assert!(!store.renew_lease(id, "w2", Duration::from_secs(60)).await.unwrap(), "only the owner renews");
        assert!(store.complete_job(id, "w1").await.unwrap());
        assert_eq!(store.job(id).await.unwrap().unwrap().state, "done");
        assert!(store.claim_jobs("w2", Duration::from_secs(60), 10).await.unwrap().is_empty());
    }

    async fn an_expired_lease_lets_another_worker_take_the_job(db) {
        let store = store(&db.url).await;
        let id = enqueue(&store, &job_of("{}", 3)).await;
        // A lease of zero has run out as soon as it is taken: the worker "crashed".
        let crashed = store.claim_jobs("dead-worker", Duration::ZERO, 1).await.unwrap();
        assert_eq!(crashed.len(), 1);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let retaken = store.claim_jobs("w2", Duration::from_secs(60), 1).await.unwrap();
        assert_eq!(retaken.len(), 1);
        assert_eq!((retaken[0].id, retaken[0].attempts), (id, 2));
        assert!(!store.complete_job(id, "dead-worker").await.unwrap(), "the old owner lost the job");
        assert!(store.complete_job(id, "w2").await.unwrap());
    }

    async fn failures_retry_later_then_go_to_the_dead_letter_state(db) {
        let store = store(&db.url).await;
        let id = enqueue(&store, &job_of("{}", 2)).await;
        let job = store.claim_jobs("w", Duration::from_secs(60), 1).await.unwrap().remove(0);
        let later = now_ms() + 60_000;
        assert_eq!(store.fail_job(&job, "w", "boom 1", Some(later)).await.unwrap(), JobFate::Retry { at: later });
        let record = store.job(id).await.unwrap().unwrap();
        assert_eq!((record.state.as_str(), record.last_error.as_deref(), record.run_at), ("queued", Some("boom 1"), later));
        assert!(store.claim_jobs("w", Duration::from_secs(60), 1).await.unwrap().is_empty(), "not before run_at");

        let id2 = enqueue(&store, &job_of("{}", 2)).await;
        let job = store.claim_jobs("w", Duration::from_secs(60), 1).await.unwrap().remove(0);
        assert_eq!(job.id, id2);
        assert_eq!(store.fail_job(&job, "w", "boom 1", Some(now_ms())).await.unwrap(), JobFate::Retry { at: job_retry_at(&store, id2).await });
        let job = store.claim_jobs("w", Duration::from_secs(60), 1).await.unwrap().remove(0);
        assert_eq!(job.attempts, 2);
        assert_eq!(store.fail_job(&job, "w", "boom 2", Some(now_ms())).await.unwrap(), JobFate::Dead);
        let record = store.job(id2).await.unwrap().unwrap();
        assert_eq!((record.state.as_str(), record.last_error.as_deref()), ("dead", Some("boom 2")));
    }

    async fn a_permanent_failure_is_dead_at_once(db) {
        let store = store(&db.url).await;
        let id = enqueue(&store, &job_of("{}", 5)).await;
        let job = store.claim_jobs("w", Duration::from_secs(60), 1).await.unwrap().remove(0);
        assert_eq!(store.fail_job(&job, "w", "bad payload", None).await.unwrap(), JobFate::Dead);
        assert_eq!(store.job(id).await.unwrap().unwrap().state, "dead");
    }

    async fn a_job_abandoned_on_its_last_attempt_is_dead_not_rerun(db) {
        let store = store(&db.url).await;
        let id = enqueue(&store, &job_of("{}", 1)).await;
        assert_eq!(store.claim_jobs("crashed", Duration::ZERO, 1).await.unwrap().len(), 1);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(store.claim_jobs("w", Duration::from_secs(60), 1).await.unwrap().is_empty());
        let record = store.job(id).await.unwrap().unwrap();
        assert_eq!(record.state, "dead");
        assert!(record.last_error.unwrap().contains("lease expired"));
    }

    async fn a_released_job_runs_again_without_losing_an_attempt(db) {
        let store = store(&db.url).await;
        let id = enqueue(&store, &job_of("{}", 1)).await;
        store.claim_jobs("w", Duration::from_secs(60), 1).await.unwrap();
        store.release_job(id, "w").await.unwrap();
        let job = store.claim_jobs("w2", Duration::from_secs(60), 1).await.unwrap().remove(0);
        assert_eq!((job.id, job.attempts), (id, 1));
    }

    async fn each_kind_absorbs_repeated_requests_by_its_own_rule(db) {
        let store = store(&db.url).await;
        let now = now_ms();
        let queued = |job: NewJob| {
            let store = store.clone();
            async move { store.enqueue(&job).await.unwrap().is_some() }
        };
        // Reconciles: absorbed by one queued to run no later, never by a later one.
        assert!(queued(NewJob::reconcile(1, 3).not_before(now + 60_000)).await);
        assert!(!queued(NewJob::reconcile(1, 3).not_before(now + 60_000)).await, "the same deadline again");
        assert!(queued(NewJob::reconcile(1, 3)).await, "a wake-up now is not absorbed by a deadline in a minute");
        assert!(!queued(NewJob::reconcile(1, 3).not_before(now + 30_000)).await, "covered by the one due now");
        assert!(queued(NewJob::reconcile(2, 3)).await, "another environment");
        // Reports: absorbed by any queued one, even one waiting for later.
        assert!(queued(NewJob::report(1).not_before(now + 60_000)).await);
        assert!(!queued(NewJob::report(1)).await);
        // The resync's events as reconciles; deliveries' events never.
        let event = serde_json::json!({ "type": "installation" });
        assert!(queued(NewJob::resync_event(&event, 3).unwrap()).await);
        assert!(!queued(NewJob::resync_event(&event, 3).unwrap()).await);
        assert!(queued(NewJob::github_event(&event, 3).unwrap()).await);
        assert!(queued(NewJob::github_event(&event, 3).unwrap()).await, "each delivery is its own work");
        // A running job absorbs nothing: it may have read its environment before the change.
        let mut running = store.claim_jobs("w", Duration::from_secs(60), 100).await.unwrap();
        running.sort_by_key(|j| j.id);
        let kinds: Vec<JobKind> = running.iter().map(|j| j.kind).collect();
        use JobKind::*;
        assert_eq!(kinds, [Reconcile, Reconcile, ResyncEvent, GitHubEvent, GitHubEvent], "the jobs due now");
        assert!(queued(NewJob::reconcile(2, 3)).await);
    }

    async fn a_job_of_a_kind_this_build_does_not_know_is_left_for_a_build_that_does(db) {
        // A newer replica queued it during a rolling upgrade: failing it as unhandleable would
        // lose its work.
        let store = store(&db.url).await;
        let sql = "INSERT INTO jobs (kind, payload, state, attempts, max_attempts, run_at, created_at, updated_at) \
                   VALUES ('from_a_newer_version', '{}', 'queued', 0, 3, 0, 0, 0) RETURNING id";
        let unknown: i64 = if db.url.starts_with("sqlite:") {
            let options: sqlx::sqlite::SqliteConnectOptions = db.url.parse().unwrap();
            let mut conn = sqlx::ConnectOptions::connect(&options).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
        } else {
            let options: sqlx::postgres::PgConnectOptions = db.url.parse().unwrap();
            let mut conn = sqlx::ConnectOptions::connect(&options).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
        };
        let known = enqueue(&store, &job_of("{}", 3)).await;
        let claimed = store.claim_jobs("w", Duration::from_secs(60), 10).await.unwrap();
        assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), [known]);
        let left = store.job(unknown).await.unwrap().unwrap();
        assert_eq!((left.kind.as_str(), left.state.as_str(), left.attempts), ("from_a_newer_version", "queued", 0));
    }

    async fn concurrent_claims_never_hand_out_a_job_twice(db) {
        let store = store(&db.url).await;
        for n in 0..200 {
            enqueue(&store, &job_of(&format!("{{\"n\":{n}}}"), 3)).await;
        }
        let mut workers = Vec::new();
        for w in 0..8 {
            let store = store.clone();
            workers.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let jobs = store.claim_jobs(&format!("w{w}"), Duration::from_secs(60), 3).await.unwrap();
                    if jobs.is_empty() {
                        return mine;
                    }
                    mine.extend(jobs.into_iter().map(|j| j.id));
                }
            }));
        }
        let mut seen = HashSet::new();
        let mut total = 0;
        for worker in workers {
            for id in worker.await.unwrap() {
                total += 1;
                assert!(seen.insert(id), "job {id} was claimed twice");
            }
        }
        assert_eq!(total, 200);
    }

    async fn environment_changes_are_recorded_with_their_history(db) {
        let store = store(&db.url).await;
        let created = store.record_environment(&pr('a'), EnvironmentState::Pending, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
        assert_eq!((created.state.as_str(), created.head_sha.as_str()), ("Pending", "a".repeat(40).as_str()));
        let pushed = store.record_environment(&pr('b'), EnvironmentState::Pending, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
        assert_eq!(pushed.id, created.id, "keyed by repository id and pull request number");
        assert_eq!(pushed.head_sha, "b".repeat(40));
        store.record_environment(&pr('b'), EnvironmentState::Deleting, Some("pull request merged"), &previewd_environments::model::Cause::Previewd).await.unwrap();
        let current = store.environment(RepoId(42), PrNumber(7)).await.unwrap().unwrap();
        assert_eq!(current.state().unwrap(), EnvironmentState::Deleting);
        assert_eq!(current.reason.as_deref(), Some("pull request merged"));
        let history = store.transitions(current.id).await.unwrap();
        let steps: Vec<(Option<&str>, &str)> = history.iter().map(|t| (t.from_state.as_deref(), t.to_state.as_str())).collect();
        assert_eq!(steps, [(None, "Pending"), (Some("Pending"), "Pending"), (Some("Pending"), "Deleting")]);
        assert_eq!(history[2].reason.as_deref(), Some("pull request merged"));
        assert_eq!(store.environments().await.unwrap().len(), 1);
    }

    async fn every_writer_is_held_to_the_state_machine(db) {
        use EnvironmentState::*;
        let store = store(&db.url).await;
        // Each state, reached by allowed moves, on a pull request of its own.
        let paths: [&[EnvironmentState]; 7] = [
            &[Pending],
            &[Pending, Provisioning],
            &[Pending, Provisioning, Ready],
            &[Pending, Failed],
            &[Pending, Deleting],
            &[Pending, Deleting, Deleted],
            &[Rejected],
        ];
        let (mut refused, mut number) = (0, 0);
        for path in paths {
            let from = *path.last().unwrap();
            for to in EnvironmentState::ALL {
                number += 1;
                let pr = PullRequest { number: PrNumber(number), ..pr('a') };
                let mut id = 0;
                for step in path {
                    id = store.record_environment(&pr, *step, None, &previewd_environments::model::Cause::Previewd).await.unwrap().id;
                }
                let before = store.transitions(id).await.unwrap().len();
                // The planner's writer, and the reconciler's.
                let recorded = store.record_environment(&pr, to, Some("test"), &previewd_environments::model::Cause::Previewd).await;
                let moved = store.transition(id, &pr.head_sha.0, to, Some("test"), None, None, None).await.unwrap();
                let state = store.environment(pr.repo.id, pr.number).await.unwrap().unwrap().state;
                if from.can_become(to) {
                    recorded.unwrap();
                    assert!(moved, "{from} -> {to}");
                    assert_eq!(state, to.as_str());
                } else {
                    refused += 1;
                    let error = recorded.unwrap_err();
                    assert!(!error.is_retryable(), "{error}");
                    assert_eq!(error.to_string(), format!("environment of octo/app#{} cannot go from {from} to {to}", pr.number));
                    assert!(!moved, "{from} -> {to}");
                    assert_eq!(state, from.as_str(), "unchanged");
                    assert_eq!(store.transitions(id).await.unwrap().len(), before, "no history written");
                }
            }
        }
        assert!(refused >= 15, "the state machine forbids most moves: {refused}");
        // A new environment starts as the planner creates one.
        let new = PullRequest { number: PrNumber(9_999), ..pr('a') };
        for to in [Provisioning, Ready, Failed, Deleting, Deleted] {
            assert!(store.record_environment(&new, to, None, &previewd_environments::model::Cause::Previewd).await.is_err(), "new -> {to}");
        }
        assert!(store.environment(new.repo.id, new.number).await.unwrap().is_none());
    }

    async fn every_change_queues_one_report_in_the_same_transaction(db) {
        let store = store(&db.url).await;
        let env = store.record_environment(&pr('a'), EnvironmentState::Pending, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
        // Further changes while a report waits are absorbed by it.
        store.transition(env.id, &"a".repeat(40), EnvironmentState::Provisioning, None, Some("n"), None, None).await.unwrap();
        store.mark_warned(env.id).await.unwrap();
        store.set_expiry(env.id, now_ms() + 1000, None).await.unwrap();
        let reports = |jobs: Vec<previewd_environments::store::ClaimedJob>| {
            jobs.into_iter().filter(|j| j.kind == JobKind::Report).collect::<Vec<_>>()
        };
        let claimed = reports(store.claim_jobs("w", Duration::from_secs(60), 10).await.unwrap());
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].payload, format!(r#"{{"environment":{}}}"#, env.id));
        // A change while the report runs queues the next one.
        store.transition(env.id, &"a".repeat(40), EnvironmentState::Ready, None, None, Some("https://x"), None).await.unwrap();
        let next = reports(store.claim_jobs("w", Duration::from_secs(60), 10).await.unwrap());
        assert_eq!(next.len(), 1);
    }

    async fn labels_draft_and_command_state_round_trip(db) {
        let store = store(&db.url).await;
        let mut labelled = pr('a');
        labelled.labels = vec!["preview:keep".into(), "bug".into()];
        labelled.draft = true;
        let env = store.record_environment(&labelled, EnvironmentState::Pending, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
        let sha = CommitSha("a".repeat(40));
        store.set_command_state(env.id, Some(true), Some(&sha), Some("@dev approved")).await.unwrap();
        let record = store.reconcile_record(env.id).await.unwrap().unwrap();
        assert_eq!(record.pull_request(), labelled);
        assert!(record.requested && record.approved());
        assert_eq!(record.note.as_deref(), Some("@dev approved"));
        // A later push is not approved; the deployed SHA is the one that became Ready.
        store.transition(env.id, &sha.0, EnvironmentState::Provisioning, None, None, None, None).await.unwrap();
        store.transition(env.id, &sha.0, EnvironmentState::Ready, None, None, Some("https://x"), None).await.unwrap();
        store.record_environment(&pr('b'), EnvironmentState::Pending, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
        let record = store.reconcile_record_for(RepoId(42), PrNumber(7)).await.unwrap().unwrap();
        assert!(!record.approved());
        assert_eq!(record.deployed_sha.as_deref(), Some(sha.0.as_str()));
    }

    async fn repositories_follow_their_installation(db) {
        use previewd_environments::model::InstallationId;
        let store = store(&db.url).await;
        let repo = Repo { id: RepoId(42), owner: "octo".into(), name: "app".into() };
        let other = Repo { id: RepoId(43), owner: "octo".into(), name: "site".into() };
        store.upsert_repository(&repo, Some(InstallationId(9)), true).await.unwrap();
        store.upsert_repository(&other, Some(InstallationId(9)), true).await.unwrap();
        // A delivery without an installation keeps the one recorded; a rename keeps the row.
        let renamed = Repo { name: "app2".into(), ..repo.clone() };
        store.upsert_repository(&renamed, None, true).await.unwrap();
        let row = store.repository(RepoId(42)).await.unwrap().unwrap();
        assert_eq!((row.name.as_str(), row.installation()), ("app2", Some(InstallationId(9))));
        store.set_pulls_etag(RepoId(42), Some("W/\"1\"")).await.unwrap();
        assert_eq!(store.repository(RepoId(42)).await.unwrap().unwrap().pulls_etag.as_deref(), Some("W/\"1\""));
        assert_eq!(store.active_repositories().await.unwrap().len(), 2);
        assert_eq!(store.deactivate_installation(InstallationId(9)).await.unwrap(), 2);
        assert!(store.active_repositories().await.unwrap().is_empty());
    }

    async fn one_report_of_an_environment_runs_at_a_time(db) {
        use previewd_environments::store::ReportedObject;
        let store = store(&db.url).await;
        let env = store.record_environment(&pr('a'), EnvironmentState::Pending, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
        assert!(store.take_lease(Lease::Report, env.id, "one", Duration::from_secs(60)).await.unwrap());
        assert!(!store.take_lease(Lease::Report, env.id, "two", Duration::from_secs(60)).await.unwrap());
        store.save_comment(env.id, 5, "digest").await.unwrap();
        store.save_reported(env.id, ReportedObject::Deployment, 6, &"a".repeat(40), Some("queued")).await.unwrap();
        store.save_reported(env.id, ReportedObject::CheckRun, 7, &"a".repeat(40), None).await.unwrap();
        store.release_lease(Lease::Report, env.id, "one").await.unwrap();
        assert!(store.take_lease(Lease::Report, env.id, "two", Duration::from_secs(60)).await.unwrap());
        let record = store.report_record(env.id).await.unwrap();
        assert_eq!((record.comment_id, record.comment_digest.as_deref()), (Some(5), Some("digest")));
        assert_eq!((record.deployment_id, record.deployment_state.as_deref()), (Some(6), Some("queued")));
        assert_eq!((record.check_run_id, record.check_run_state), (Some(7), None));
        assert!(store.delivery_seen("nope").await.is_ok_and(|seen| !seen));
    }

    async fn a_pull_requests_head_keeps_the_earliest_time_github_named_it(db) {
        let store = store(&db.url).await;
        let (repo, number) = (RepoId(42), PrNumber(7));
        let a = CommitSha("a".repeat(40));
        let b = CommitSha("b".repeat(40));
        assert_eq!(store.seen_head(repo, number).await.unwrap(), None);
        store.observe_head(repo, number, &a, 2_000).await.unwrap();
        // A later delivery naming the same head (a label, say) does not move its time.
        store.observe_head(repo, number, &a, 5_000).await.unwrap();
        // An earlier one that arrives late does.
        store.observe_head(repo, number, &a, 1_000).await.unwrap();
        let seen = store.seen_head(repo, number).await.unwrap().unwrap();
        assert_eq!((seen.head_sha.as_str(), seen.head_at), (a.0.as_str(), 1_000));
        // A push: the new head, from its own time.
        store.observe_head(repo, number, &b, 6_000).await.unwrap();
        // The push's delivery overtook an older one about the previous head: that one is stale.
        store.observe_head(repo, number, &a, 3_000).await.unwrap();
        let seen = store.seen_head(repo, number).await.unwrap().unwrap();
        assert_eq!((seen.head_sha.as_str(), seen.head_at), (b.0.as_str(), 6_000));
        // Other pull requests are apart.
        assert_eq!(store.seen_head(repo, PrNumber(8)).await.unwrap(), None);
    }

    async fn one_reply_per_pull_request_per_interval_whoever_asks(db) {
        let store = store(&db.url).await;
        let (repo, number, minute) = (RepoId(42), PrNumber(7), Duration::from_secs(60));
        let now = now_ms();
        // Ten workers at once: one gets it.
        let claims = futures_claims(&store, repo, number, now, minute).await;
        assert_eq!(claims.iter().filter(|c| **c).count(), 1, "{claims:?}");
        assert!(!store.claim_reply(repo, number, now + 30_000, minute).await.unwrap());
        assert!(store.claim_reply(repo, PrNumber(8), now, minute).await.unwrap(), "another pull request");
        assert!(store.claim_reply(repo, number, now + 60_000, minute).await.unwrap(), "the interval is over");
        // The head recorded for the pull request is kept.
        store.observe_head(repo, PrNumber(9), &CommitSha("c".repeat(40)), 1).await.unwrap();
        assert!(store.claim_reply(repo, PrNumber(9), now, minute).await.unwrap());
        assert!(store.seen_head(repo, PrNumber(9)).await.unwrap().is_some());
    }
}

async fn futures_claims(store: &Store, repo: RepoId, number: PrNumber, now: i64, interval: Duration) -> Vec<bool> {
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.claim_reply(repo, number, now, interval).await.unwrap() })
        })
        .collect();
    let mut claims = Vec::new();
    for task in tasks {
        claims.push(task.await.unwrap());
    }
    claims
}

async fn job_retry_at(store: &Store, id: i64) -> i64 {
    store.job(id).await.unwrap().unwrap().run_at
}

#[tokio::test]
async fn an_unsupported_url_is_refused_by_name() {
    let error = Store::connect(&"mysql://u:pw@h/db".into()).await.unwrap_err().to_string();
    assert!(error.contains("mysql://u:***@h/db") && !error.contains("pw"), "{error}");
}

/// Sets the `at` of environment `id`'s transitions, oldest first, to `times`, with plain SQL on
/// the test's database: the history as it would be after those hours had passed.
async fn backdate(url: &str, id: i64, times: &[i64]) {
    let sql = "UPDATE environment_transitions SET at = $1 WHERE id = (SELECT id FROM environment_transitions \
               WHERE environment_id = $2 ORDER BY id LIMIT 1 OFFSET $3)";
    for (i, at) in times.iter().enumerate() {
        let offset = i64::try_from(i).unwrap();
        if url.starts_with("sqlite") {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::query(sql).bind(at).bind(id).bind(offset).execute(&pool).await.unwrap();
            pool.close().await;
        } else {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query(sql).bind(at).bind(id).bind(offset).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

mod usage {
    use super::*;

    previewd_e2e::each_backend! {
        async fn usage_is_summed_from_the_history_with_the_requests_of_each_moment(db) {
            use previewd_environments::usage::{GroupBy, totals};
            use EnvironmentState::*;
            const H: i64 = 3_600_000;
            let store = store(&db.url).await;
            let base = 1_000 * H;
            // Waits an hour, provisions for one, Ready for four at 200m and 256 MiB (two replicas of
            // 100m/128Mi), deleted after an hour of teardown.
            let env = store.record_environment(&pr('a'), Pending, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
            store.set_requests(env.id, 200, 256 << 20).await.unwrap();
            for state in [Provisioning, Ready, Deleting, Deleted] {
                store.record_environment(&pr('a'), state, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
            }
            backdate(&db.url, env.id, &[base, base + H, base + 2 * H, base + 6 * H, base + 7 * H]).await;
            // Another repository's environment, Ready since before the period and still Ready.
            let other = PullRequest { repo: Repo { id: RepoId(43), owner: "octo".into(), name: "api".into() }, ..pr('b') };
            let ready = store.record_environment(&other, Pending, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
            store.set_requests(ready.id, 1000, 1 << 30).await.unwrap();
            store.record_environment(&other, Provisioning, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
            store.record_environment(&other, Ready, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
            backdate(&db.url, ready.id, &[base - 3 * H, base - 2 * H, base - H]).await;

            let (from, to) = (base, base + 10 * H);
            let rows = store.usage_rows(from, to).await.unwrap();
            let usage = totals(&rows, from, to, GroupBy::Repository);
            let app = usage["octo/app"];
            assert_eq!(app.environments, 1);
            assert!((app.environment_hours - 6.0).abs() < 1e-9, "Provisioning, Ready and Deleting: {app:?}");
            assert!((app.cpu_hours - 6.0 * 0.2).abs() < 1e-9, "{app:?}");
            assert!((app.memory_gib_hours - 6.0 * 0.25).abs() < 1e-9, "{app:?}");
            let api = usage["octo/api"];
            assert!((api.environment_hours - 10.0).abs() < 1e-9 && (api.cpu_hours - 10.0).abs() < 1e-9, "the whole period: {api:?}");
            // A period after the first was deleted: only the second counts.
            let later = store.usage_rows(base + 8 * H, base + 9 * H).await.unwrap();
            let later = totals(&later, base + 8 * H, base + 9 * H, GroupBy::Owner);
            assert_eq!(later["octo"].environments, 1);
            assert!((later["octo"].environment_hours - 1.0).abs() < 1e-9, "{later:?}");
        }

        async fn the_retention_sweep_keeps_the_usage_of_the_period_it_keeps(db) {
            use previewd_environments::store::Retention;
            use previewd_environments::usage::{GroupBy, totals};
            use EnvironmentState::*;
            use std::time::Duration;
            const H: i64 = 3_600_000;
            let store = store(&db.url).await;
            let base = 1_000 * H;
            // Ready from 3 h before the cut-off (`base`), a push redeploys it 2 h after.
            let env = store.record_environment(&pr('a'), Pending, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
            store.set_requests(env.id, 500, 1 << 30).await.unwrap();
            for state in [Provisioning, Ready, Pending, Provisioning, Ready] {
                store.record_environment(&pr('a'), state, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
            }
            backdate(&db.url, env.id, &[base - 5 * H, base - 4 * H, base - 3 * H, base + 2 * H, base + 2 * H, base + 3 * H]).await;
            let (from, to) = (base, base + 10 * H);
            let before = totals(&store.usage_rows(from, to).await.unwrap(), from, to, GroupBy::Repository);
            assert!((before["octo/app"].environment_hours - 10.0).abs() < 1e-9, "Ready at `from`, waiting 0 h: {before:?}");

            let hours = |h: u64| Duration::from_secs(h * 3600);
            let retention = Retention { done_jobs: hours(1), dead_jobs: hours(1), deliveries: hours(1), transitions: hours(24), finished_environments: hours(1), audit: hours(1), batch: 100 };
            let swept = store.sweep(&retention, base + 24 * H).await.unwrap();
            assert_eq!(swept.transitions, 2, "Pending and Provisioning before the cut-off; Ready was its state then: {swept:?}");
            let after = totals(&store.usage_rows(from, to).await.unwrap(), from, to, GroupBy::Repository);
            assert_eq!(format!("{after:?}"), format!("{before:?}"), "the kept period's usage is unchanged");
        }
    }
}

mod changes {
    use super::*;
    use previewd_environments::model::Cause;

    previewd_e2e::each_backend! {
        async fn the_change_feed_records_every_visible_change_and_nothing_else(db) {
            use EnvironmentState::*;
            let store = store(&db.url).await;
            let start = store.last_change_id().await.unwrap();
            let env = store.record_environment(&pr('a'), Pending, None, &Cause::Previewd).await.unwrap();
            store.transition(env.id, &"a".repeat(40), Provisioning, None, Some("app-pr-7"), None, None).await.unwrap();
            store.set_expiry(env.id, 9_000_000_000_000, Some("extended")).await.unwrap();
            // Not shown by the API: no change.
            store.set_requests(env.id, 100, 1 << 20).await.unwrap();
            store.touch_environment(env.id).await.unwrap();
            let changes = store.changes_after(start, 100).await.unwrap();
            assert_eq!(changes.len(), 3, "created, moved, extended: {changes:?}");
            assert!(changes.iter().all(|c| c.environment_id == env.id));
            assert!(changes.windows(2).all(|w| w[0].id < w[1].id), "{changes:?}");
            assert_eq!(store.last_change_id().await.unwrap(), changes[2].id);
            assert_eq!(store.changes_after(changes[0].id, 100).await.unwrap(), changes[1..].to_vec());
            assert_eq!(store.changes_after(changes[0].id, 1).await.unwrap(), changes[1..2].to_vec(), "at most the limit");
            // The last seconds' changes come back with the new ones, for Postgres' late commits.
            let since = store.changes_since(changes[2].id, changes[0].at, 100).await.unwrap();
            assert_eq!(since, changes, "{since:?}");
            // A day later the sweep deletes them.
            let retention = previewd_environments::store::Retention {
                done_jobs: Duration::from_secs(3600),
                dead_jobs: Duration::from_secs(3600),
                deliveries: Duration::from_secs(3600),
                transitions: Duration::from_secs(24 * 3600 * 365),
                finished_environments: Duration::from_secs(3600),
                audit: Duration::from_secs(3600),
                batch: 100,
            };
            let day = i64::try_from(previewd_environments::store::CHANGES_KEPT.as_millis()).unwrap();
            let swept = store.sweep(&retention, changes[2].at + day + 1).await.unwrap();
            assert!(swept.changes >= 3, "{swept:?}");
            assert!(store.changes_after(start, 100).await.unwrap().is_empty());
        }

        async fn a_title_that_changes_is_a_change_of_its_environment(db) {
            use EnvironmentState::*;
            let store = store(&db.url).await;
            // A title named before the environment exists changes nothing.
            let start = store.last_change_id().await.unwrap();
            store.observe_title(RepoId(42), PrNumber(7), "First", 1_000).await.unwrap();
            assert!(store.changes_after(start, 100).await.unwrap().is_empty());
            let env = store.record_environment(&pr('a'), Pending, None, &Cause::Previewd).await.unwrap();
            let created = store.last_change_id().await.unwrap();
            // Edited: a change; the same title again, or an older one arriving late: none.
            store.observe_title(RepoId(42), PrNumber(7), "Second", 2_000).await.unwrap();
            let changes = store.changes_after(created, 100).await.unwrap();
            assert_eq!(changes.iter().map(|c| c.environment_id).collect::<Vec<_>>(), [env.id], "{changes:?}");
            let edited = store.last_change_id().await.unwrap();
            store.observe_title(RepoId(42), PrNumber(7), "Second", 3_000).await.unwrap();
            store.observe_title(RepoId(42), PrNumber(7), "Zeroth", 500).await.unwrap();
            // Another pull request's title is not this environment's.
            store.observe_title(RepoId(42), PrNumber(8), "Other", 2_000).await.unwrap();
            assert!(store.changes_after(edited, 100).await.unwrap().is_empty());
            assert_eq!(store.environment_summary(env.id).await.unwrap().unwrap().title.as_deref(), Some("Second"));
        }
    }
}

mod sessions {
    use super::*;
    use previewd_environments::model::Cause;
    use previewd_environments::store::{EnvironmentFilter, SessionRepository};
    use secrecy::{ExposeSecret, SecretString};

    previewd_e2e::each_backend! {
        async fn a_session_is_found_by_its_secret_until_it_expires_and_limits_what_is_listed(db) {
            let store = store(&db.url).await;
            let now = previewd_environments::time::now_ms();
            let mine = store.record_environment(&pr('a'), EnvironmentState::Pending, None, &Cause::Previewd).await.unwrap();
            let other = PullRequest { repo: Repo { id: RepoId(43), owner: "octo".into(), name: "secret".into() }, ..pr('b') };
            let theirs = store.record_environment(&other, EnvironmentState::Pending, None, &Cause::Previewd).await.unwrap();

            let readable = [SessionRepository { repo_id: 42, can_write: true }];
            let (session, secret) = store.create_session("dev", false, now + 3_600_000, &readable).await.unwrap();
            assert_eq!(secret.expose_secret().len(), 43, "256 bits in base64url");
            assert_eq!(store.session(&secret).await.unwrap().as_ref(), Some(&session));
            assert_eq!(store.session(&SecretString::from("not-it")).await.unwrap(), None);
            assert_eq!(store.session_repositories(session.id).await.unwrap(), readable);
            assert_eq!(session.csrf_token.len(), 43);

            let visible = EnvironmentFilter { visible_to_session: Some(session.id), ..EnvironmentFilter::default() };
            let listed: Vec<i64> = store.list_environments(&visible, None, 100).await.unwrap().iter().map(|e| e.id).collect();
            assert_eq!(listed, [mine.id], "only the repositories GitHub said they may read");
            let everyone: Vec<i64> = store.list_environments(&EnvironmentFilter::default(), None, 100).await.unwrap().iter().map(|e| e.id).collect();
            assert_eq!(everyone, [theirs.id, mine.id]);

            // GitHub says otherwise now.
            store.refresh_session_repositories(session.id, &[SessionRepository { repo_id: 43, can_write: false }]).await.unwrap();
            let listed: Vec<i64> = store.list_environments(&visible, None, 100).await.unwrap().iter().map(|e| e.id).collect();
            assert_eq!(listed, [theirs.id]);
            assert!(store.session(&secret).await.unwrap().unwrap().repositories_checked_at >= session.repositories_checked_at);

            // Signing out ends it; an expired one is not found, and the sweep deletes it.
            assert!(store.end_session(&secret).await.unwrap());
            assert_eq!(store.session(&secret).await.unwrap(), None);
            assert!(!store.end_session(&secret).await.unwrap());
            let (expired, old) = store.create_session("dev", false, now - 1, &readable).await.unwrap();
            assert_eq!(store.session(&old).await.unwrap(), None, "expired");
            let retention = previewd_environments::store::Retention {
                done_jobs: Duration::from_secs(3600),
                dead_jobs: Duration::from_secs(3600),
                deliveries: Duration::from_secs(3600),
                transitions: Duration::from_secs(3600),
                finished_environments: Duration::from_secs(3600),
                audit: Duration::from_secs(3600),
                batch: 100,
            };
            assert_eq!(store.sweep(&retention, now).await.unwrap().sessions, 1);
            assert!(store.session_repositories(expired.id).await.unwrap().is_empty(), "its repositories went with it");
        }

        async fn the_dashboard_search_finds_text_in_the_repository_branch_author_or_title_and_nothing_else(db) {
            let store = store(&db.url).await;
            let mut a = pr('a');
            a.head_branch = "feature/Checkout_50%".into();
            a.author = "Alice".into();
            let a = store.record_environment(&a, EnvironmentState::Pending, None, &Cause::Previewd).await.unwrap();
            let mut b = PullRequest { repo: Repo { id: RepoId(43), owner: "octo".into(), name: "Billing".into() }, ..pr('b') };
            b.head_branch = "fix-invoices".into();
            b.author = "bob".into();
            let b = store.record_environment(&b, EnvironmentState::Pending, None, &Cause::Previewd).await.unwrap();
            let found = |text: &str| {
                let store = store.clone();
                let filter = EnvironmentFilter { search: Some(text.to_owned()), ..EnvironmentFilter::default() };
                async move { store.list_environments(&filter, None, 100).await.unwrap().iter().map(|e| e.id).collect::<Vec<_>>() }
            };
            assert_eq!(found("octo/bill").await, [b.id], "the repository, case-insensitively");
            assert_eq!(found("CHECKOUT").await, [a.id], "the branch");
            assert_eq!(found("alice").await, [a.id], "the author");
            assert_eq!(found("50%").await, [a.id], "a literal %");
            assert_eq!(found("%").await, [a.id], "% is no wildcard");
            assert_eq!(found("t_5").await, [a.id], "_ is literal: it matches `t_5`, and only that");
            assert_eq!(found("x_i").await, Vec::<i64>::new(), "_ is no wildcard: `fix-invoices` has no `x_i`");
            assert_eq!(found("nowhere").await, Vec::<i64>::new());
            // The title, once a delivery named it; a late delivery's older title does not return.
            store.observe_title(RepoId(43), PrNumber(7), "Faster Invoices", 2_000).await.unwrap();
            store.observe_title(RepoId(43), PrNumber(7), "Old title", 1_000).await.unwrap();
            assert_eq!(found("faster inv").await, [b.id]);
            assert_eq!(found("old title").await, Vec::<i64>::new());
            assert_eq!(store.environment_summary(b.id).await.unwrap().unwrap().title.as_deref(), Some("Faster Invoices"));
        }
    }
}
