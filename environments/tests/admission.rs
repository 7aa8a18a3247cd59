//! Admission under the policy's limits against real databases (a fresh SQLite file and a fresh
//! Postgres database per test): decisions made at once by two store handles (two replicas'
//! connection pools) never exceed a limit, and the queue serves in arrival order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use previewd_environments::model::{EnvironmentState, PullRequest};
use previewd_environments::policy::Policy;
use previewd_environments::spec::{LimitDecision, LiveCounts, check_limits};
use previewd_environments::store::{JobKind, ReconcileRecord, Store};
use std::time::Duration;

async fn store(url: &str) -> Store {
    let store = Store::connect(&url.into()).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

fn pr(repo: i64, name: &str, number: i64) -> PullRequest {
    previewd_e2e::fixtures::pull_request(repo, "acme", name, number)
}

/// The fixture policy with `limits` for repository acme/app.
fn policy(limits: &str) -> Policy {
    let text = include_str!("../../e2e/fixtures/policy.yaml");
    Policy::from_yaml(&format!("{text}\n  acme/app:\n    limits: {limits}\n"), "policy.yaml").unwrap()
}

fn limits(policy: &Policy) -> impl Fn(&str, &str, LiveCounts) -> LimitDecision + Sync + '_ {
    |owner, repo, counts| check_limits(&policy.for_repository(owner, repo), counts)
}

async fn record(store: &Store, id: i64) -> ReconcileRecord {
    store.reconcile_record(id).await.unwrap().unwrap()
}

async fn admitted(store: &Store, ids: &[i64]) -> Vec<i64> {
    let mut out = Vec::new();
    for &id in ids {
        if record(store, id).await.admitted_at.is_some() {
            out.push(id);
        }
    }
    out
}

async fn pending(store: &Store, pr: &PullRequest) -> i64 {
    store
        .record_environment(pr, EnvironmentState::Pending, None, &previewd_environments::model::Cause::Previewd)
        .await
        .unwrap()
        .id
}

previewd_e2e::each_backend! {
    async fn twenty_admissions_at_once_on_two_replicas_admit_exactly_the_limit(db) {
        let (a, b) = (store(&db.url).await, store(&db.url).await);
        let policy = policy("{ per_repository: 5, when_full: queue }");
        let mut ids = Vec::new();
        for number in 1..=20 {
            ids.push(pending(&a, &pr(1, "app", number)).await);
        }
        let decisions = futures::future::join_all(ids.iter().enumerate().map(|(i, &id)| {
            let (replica, policy) = (if i % 2 == 0 { a.clone() } else { b.clone() }, &policy);
            async move { replica.admit(Some(id), &limits(policy), 3).await.unwrap().decision.unwrap() }
        }))
        .await;
        let allowed = decisions.iter().filter(|d| **d == LimitDecision::Allowed).count();
        assert_eq!(allowed, 5, "{decisions:?}");
        assert_eq!(admitted(&a, &ids).await.len(), 5, "exactly five hold a slot");
        for decision in decisions.iter().filter(|d| **d != LimitDecision::Allowed) {
            let LimitDecision::Queued { reason } = decision else { panic!("{decision:?}") };
            assert!(reason.contains("acme/app already has 5 live environments (limit 5)"), "{reason}");
        }

        // Asking again changes nothing: a slot is held once, and the queue stays as it is.
        let again = a.admit(Some(ids[0]), &limits(&policy), 3).await.unwrap();
        assert!(again.woken.is_empty());
        assert_eq!(admitted(&a, &ids).await.len(), 5);
    }

    async fn a_freed_slot_goes_to_the_oldest_waiter_and_wakes_it(db) {
        let store = store(&db.url).await;
        let policy = policy("{ per_repository: 1, when_full: queue }");
        let holder = pr(1, "app", 1);
        let first = pending(&store, &holder).await;
        assert_eq!(store.admit(Some(first), &limits(&policy), 3).await.unwrap().decision, Some(LimitDecision::Allowed));
        let mut waiters = Vec::new();
        for number in 2..=4 {
            let id = pending(&store, &pr(1, "app", number)).await;
            let decision = store.admit(Some(id), &limits(&policy), 3).await.unwrap().decision.unwrap();
            assert!(matches!(decision, LimitDecision::Queued { .. }), "{decision:?}");
            waiters.push(id);
            // Arrival times a millisecond apart at least, so that the order is the arrival's.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }

        // The holder closes: its slot is given back at once, and the pass run after a
        // teardown admits the oldest waiter and queues a reconcile of it.
        store.record_environment(&holder, EnvironmentState::Deleting, Some("pull request merged"), &previewd_environments::model::Cause::Previewd).await.unwrap();
        assert_eq!(record(&store, first).await.admitted_at, None, "the closed one holds no slot");
        let pass = store.admit(None, &limits(&policy), 3).await.unwrap();
        assert_eq!(pass.woken, [waiters[0]]);
        assert_eq!(admitted(&store, &waiters).await, [waiters[0]]);
        let jobs = store.claim_jobs("test", Duration::from_secs(60), 10).await.unwrap();
        let woken: Vec<_> = jobs.iter().filter(|j| j.kind == JobKind::Reconcile).collect();
        assert_eq!(woken.len(), 1, "one reconcile job for the admitted waiter");
        let payload: serde_json::Value = serde_json::from_str(&woken[0].payload).unwrap();
        assert_eq!(payload, serde_json::json!({ "environment": waiters[0] }));

        // A waiter asking again before its turn stays queued behind the older one.
        let later = store.admit(Some(waiters[2]), &limits(&policy), 3).await.unwrap();
        assert!(matches!(later.decision, Some(LimitDecision::Queued { .. })));
    }

    async fn a_waiter_held_back_by_its_own_repository_does_not_hold_back_others(db) {
        let store = store(&db.url).await;
        // acme/app: one at most; everything else: the fixture's limits (room to spare).
        let policy = policy("{ per_repository: 1, when_full: queue }");
        let held = pending(&store, &pr(1, "app", 1)).await;
        store.admit(Some(held), &limits(&policy), 3).await.unwrap();
        let blocked = pending(&store, &pr(1, "app", 2)).await;
        let first = store.admit(Some(blocked), &limits(&policy), 3).await.unwrap().decision.unwrap();
        assert!(matches!(first, LimitDecision::Queued { .. }), "{first:?}");
        let other = pending(&store, &pr(2, "web", 1)).await;
        let decision = store.admit(Some(other), &limits(&policy), 3).await.unwrap().decision;
        assert_eq!(decision, Some(LimitDecision::Allowed), "acme/web is not under acme/app's limit");
        assert_eq!(record(&store, blocked).await.admitted_at, None);
    }

    async fn a_reopened_environment_asks_for_a_slot_again(db) {
        let store = store(&db.url).await;
        let policy = policy("{ per_repository: 1, when_full: queue }");
        let a = pr(1, "app", 1);
        let id_a = pending(&store, &a).await;
        store.admit(Some(id_a), &limits(&policy), 3).await.unwrap();
        store.transition(id_a, &a.head_sha.0, EnvironmentState::Provisioning, None, None, None, None).await.unwrap();
        // A push moves it back to Pending: it keeps its slot.
        store.record_environment(&a, EnvironmentState::Pending, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
        assert!(record(&store, id_a).await.admitted_at.is_some(), "a push keeps the slot");
        let b = pending(&store, &pr(1, "app", 2)).await;
        assert!(matches!(store.admit(Some(b), &limits(&policy), 3).await.unwrap().decision, Some(LimitDecision::Queued { .. })));

        // Closed, then reopened: the slot went with the close, and B, waiting longer, has it.
        store.record_environment(&a, EnvironmentState::Deleting, Some("pull request closed without merge"), &previewd_environments::model::Cause::Previewd).await.unwrap();
        store.transition(id_a, &a.head_sha.0, EnvironmentState::Deleted, None, None, None, None).await.unwrap();
        store.record_environment(&a, EnvironmentState::Pending, None, &previewd_environments::model::Cause::Previewd).await.unwrap();
        let reopened = record(&store, id_a).await;
        assert_eq!((reopened.admitted_at, reopened.waiting_since), (None, None));
        let pass = store.admit(Some(id_a), &limits(&policy), 3).await.unwrap();
        assert!(matches!(pass.decision, Some(LimitDecision::Queued { .. })), "{pass:?}");
        assert_eq!(pass.woken, [b], "the older waiter goes first");
    }

    async fn when_full_reject_admits_up_to_the_limit_and_rejects_the_rest(db) {
        let store = store(&db.url).await;
        let policy = policy("{ per_repository: 2, when_full: reject }");
        let mut decisions = Vec::new();
        for number in 1..=3 {
            let id = pending(&store, &pr(1, "app", number)).await;
            decisions.push(store.admit(Some(id), &limits(&policy), 3).await.unwrap().decision.unwrap());
        }
        assert_eq!(decisions[..2], [LimitDecision::Allowed, LimitDecision::Allowed]);
        let LimitDecision::Rejected { reason } = &decisions[2] else { panic!("{:?}", decisions[2]) };
        assert!(reason.contains("limit 2"), "{reason}");
    }

    async fn an_environment_that_is_not_pending_is_not_admitted(db) {
        let store = store(&db.url).await;
        let policy = policy("{ per_repository: 1 }");
        let closed = pr(1, "app", 1);
        let id = pending(&store, &closed).await;
        store.record_environment(&closed, EnvironmentState::Deleting, Some("pull request merged"), &previewd_environments::model::Cause::Previewd).await.unwrap();
        let pass = store.admit(Some(id), &limits(&policy), 3).await.unwrap();
        assert_eq!(pass.decision, None);
        assert_eq!(record(&store, id).await.admitted_at, None);
    }
}
