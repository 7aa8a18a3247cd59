//! `POST /webhooks/github` through real HTTP, on SQLite and on Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ROTATED_SECRET, SECRET, TestServer, eventually};
use previewd::http::MAX_BODY_BYTES;
use previewd_e2e::fixtures::{example, examples_of};
use previewd_e2e::github::sign;
use previewd_environments::model::{PrNumber, RepoId};
use previewd_environments::store::{JobState, NewJob};
use serde_json::{Value, json};
use std::time::Duration;

fn signed(body: &[u8]) -> Option<String> {
    Some(sign(SECRET, body))
}

async fn nothing_stored(server: &TestServer) {
    assert_eq!(server.store.count_deliveries().await.unwrap(), 0, "no delivery may be stored");
    let jobs: i64 = server.store.job_counts().await.unwrap().iter().map(|(_, n)| n).sum();
    assert_eq!(jobs, 0, "no job may be queued");
}

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON error body"))
}

/// Writes `head` then `body` on a plain TCP connection while reading the answer; a server that
/// answers early and closes may make the rest of the write fail, which is fine.
async fn raw_exchange(server: &TestServer, head: Vec<u8>, body: Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = server.base.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        write.write_all(&head).await.ok();
        write.write_all(&body).await.ok();
        write
    });
    let mut answer = vec![0u8; 4096];
    let mut len = 0;
    let read_answer = async {
        loop {
            let n = read.read(&mut answer[len..]).await.unwrap_or(0);
            len += n;
            if n == 0 || String::from_utf8_lossy(&answer[..len]).contains("}") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read_answer).await.expect("an answer before the body is sent");
    writer.abort();
    String::from_utf8_lossy(&answer[..len]).into_owned()
}

fn hex_sha256(body: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(body))
}

fn repo_and_number(payload: &Value) -> (RepoId, PrNumber) {
    (RepoId(payload["repository"]["id"].as_i64().unwrap()), PrNumber(payload["number"].as_i64().unwrap()))
}

previewd_e2e::each_backend! {
    async fn an_opened_pull_request_is_stored_queued_and_processed(db) {
        let server = TestServer::start(&db).await;
        let payload = example("pull_request", "opened").unwrap();
        let response = server.deliver("pull_request", "d-opened", &payload).await;
        assert_eq!(response.status(), 202);
        assert_eq!(response.json::<Value>().await.unwrap(), json!({"delivery": "d-opened", "status": "queued"}));
        let jobs = server.finished_jobs("d-opened").await;
        assert_eq!(jobs.len(), 1);
        assert_eq!((jobs[0].kind.as_str(), jobs[0].state.as_str(), jobs[0].attempts), ("github_event", "done", 1));
        let (repo, number) = repo_and_number(&payload);
        let environment = server.store.environment(repo, number).await.unwrap().expect("environment recorded");
        assert_eq!(environment.state, "Pending");
        assert_eq!(environment.head_sha, payload["pull_request"]["head"]["sha"].as_str().unwrap());
        server.stop().await;
    }

    async fn a_closed_pull_request_marks_its_environment_for_teardown(db) {
        let server = TestServer::start(&db).await;
        let mut opened = example("pull_request", "opened").unwrap();
        let mut closed = example("pull_request", "closed").unwrap();
        // The same pull request in both deliveries.
        closed["repository"] = opened["repository"].clone();
        closed["number"] = opened["number"].clone();
        closed["pull_request"]["head"]["repo"] = opened["repository"].clone();
        opened["pull_request"]["head"]["repo"] = opened["repository"].clone();
        server.deliver("pull_request", "d-1", &opened).await;
        server.finished_jobs("d-1").await;
        server.deliver("pull_request", "d-2", &closed).await;
        server.finished_jobs("d-2").await;
        let (repo, number) = repo_and_number(&opened);
        let environment = server.store.environment(repo, number).await.unwrap().unwrap();
        assert_eq!(environment.state, "Deleting");
        let merged = closed["pull_request"]["merged"].as_bool().unwrap_or(false);
        let reason = if merged { "pull request merged" } else { "pull request closed without merge" };
        assert_eq!(environment.reason.as_deref(), Some(reason));
        server.stop().await;
    }

    async fn unsigned_and_wrongly_signed_deliveries_are_refused_and_leave_no_trace(db) {
        let server = TestServer::start(&db).await;
        let body = serde_json::to_vec(&example("pull_request", "opened").unwrap()).unwrap();
        let unsigned = server.send("pull_request", "d", "1", body.clone(), None, "application/json").await;
        let (status, error) = error_of(unsigned).await;
        assert_eq!((status, error["error"].as_str()), (401, Some("unauthorized")));
        assert!(error["message"].as_str().unwrap().contains("missing X-Hub-Signature-256"));

        let wrong = sign("not the secret", &body);
        let (status, error) = error_of(server.send("pull_request", "d", "1", body.clone(), Some(wrong), "application/json").await).await;
        assert_eq!(status, 401);
        assert!(error["message"].as_str().unwrap().contains("does not match"));

        let other_body = sign(SECRET, b"{}");
        let (status, _) = error_of(server.send("pull_request", "d", "1", body.clone(), Some(other_body), "application/json").await).await;
        assert_eq!(status, 401, "a signature of another body");

        let (status, _) = error_of(server.send("pull_request", "d", "1", body, Some("sha256=xyz".into()), "application/json").await).await;
        assert_eq!(status, 401);
        nothing_stored(&server).await;
        server.stop().await;
    }

    async fn a_delivery_signed_with_a_previous_secret_is_accepted_during_rotation(db) {
        let server = TestServer::start(&db).await;
        let body = serde_json::to_vec(&example("pull_request", "opened").unwrap()).unwrap();
        let signature = sign(ROTATED_SECRET, &body);
        let response = server.send("pull_request", "d-rot", "1", body, Some(signature), "application/json").await;
        assert_eq!(response.status(), 202);
        server.stop().await;
    }

    async fn an_oversized_body_is_refused_with_413_before_it_is_read(db) {
        let server = TestServer::start(&db).await;
        // Announce one byte over the limit and send only a little: the answer comes without
        // waiting for the rest.
        let head = format!(
            "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: pull_request\r\nX-GitHub-Delivery: big\r\n\
             X-Hub-Signature-256: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{",
            sign(SECRET, b"{}"),
            MAX_BODY_BYTES + 1
        );
        let response = raw_exchange(&server, head.into_bytes(), Vec::new()).await;
        assert!(response.starts_with("HTTP/1.1 413"), "{response}");
        assert!(response.contains("\"too_large\""), "{response}");

        // Without a length announced (chunked), reading stops at the limit.
        let head = format!(
            "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: pull_request\r\nX-GitHub-Delivery: big2\r\n\
             X-Hub-Signature-256: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            sign(SECRET, b"{}"),
        );
        let chunk = vec![b' '; 1024 * 1024];
        let mut body = Vec::new();
        for _ in 0..26 {
            body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            body.extend_from_slice(&chunk);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        let response = raw_exchange(&server, head.into_bytes(), body).await;
        assert!(response.starts_with("HTTP/1.1 413"), "{response}");
        nothing_stored(&server).await;
        server.stop().await;
    }

    async fn a_body_of_exactly_the_limit_is_read(db) {
        let server = TestServer::start(&db).await;
        // Valid JSON padded with whitespace to the limit: accepted (ignored event type).
        let mut body = b"{\"zen\":\"x\"}".to_vec();
        body.resize(MAX_BODY_BYTES, b' ');
        let signature = signed(&body);
        let response = server.send("star", "d-limit", "1", body, signature, "application/json").await;
        assert_eq!(response.status(), 202);
        server.stop().await;
    }

    async fn malformed_json_with_a_valid_signature_is_a_400_with_the_parse_error(db) {
        let server = TestServer::start(&db).await;
        let body = b"{\"action\": \"opened\", ".to_vec();
        let signature = signed(&body);
        let (status, error) = error_of(server.send("pull_request", "d-bad", "1", body, signature, "application/json").await).await;
        assert_eq!((status, error["error"].as_str()), (400, Some("malformed")));
        assert!(error["message"].as_str().unwrap().contains("not valid JSON"), "{error}");
        assert!(error["message"].as_str().unwrap().contains("line 1"), "the parse error is given: {error}");

        let body = br#"{"action": "opened", "number": "seven"}"#.to_vec();
        let signature = signed(&body);
        let (status, error) = error_of(server.send("pull_request", "d-shape", "1", body, signature, "application/json").await).await;
        assert_eq!(status, 400);
        assert!(error["message"].as_str().unwrap().contains("pull_request"), "{error}");

        let body = b"not json".to_vec();
        let signature = signed(&body);
        let (status, _) = error_of(server.send("star", "d-star", "1", body, signature, "application/json").await).await;
        assert_eq!(status, 400, "even an event previewd ignores must be JSON");
        nothing_stored(&server).await;
        server.stop().await;
    }

    async fn a_form_encoded_delivery_is_read_from_its_payload_field(db) {
        let server = TestServer::start(&db).await;
        let payload = example("pull_request", "opened").unwrap();
        let body: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload.to_string())
            .finish();
        let signature = signed(body.as_bytes());
        let response = server
            .send("pull_request", "d-form", "1", body.into_bytes(), signature, "application/x-www-form-urlencoded")
            .await;
        assert_eq!(response.status(), 202);
        let jobs = server.finished_jobs("d-form").await;
        assert_eq!(jobs[0].state, "done");
        let (repo, number) = repo_and_number(&payload);
        assert!(server.store.environment(repo, number).await.unwrap().is_some());

        let body = b"other=1".to_vec();
        let signature = signed(&body);
        let response = server.send("pull_request", "d-form2", "1", body, signature, "application/x-www-form-urlencoded").await;
        assert_eq!(response.status(), 400);
        server.stop().await;
    }

    async fn ping_is_answered_200_and_other_events_202_ignored(db) {
        let server = TestServer::start(&db).await;
        for (n, ping) in examples_of("ping").unwrap().iter().enumerate() {
            let response = server.deliver("ping", &format!("ping-{n}"), ping).await;
            assert_eq!(response.status(), 200);
            assert_eq!(response.json::<Value>().await.unwrap()["status"], "ping");
        }
        let star = examples_of("star").unwrap().remove(0);
        let response = server.deliver("star", "d-star", &star).await;
        assert_eq!(response.status(), 202);
        assert_eq!(response.json::<Value>().await.unwrap()["status"], "ignored");
        let stored = server.store.find_delivery("1", "d-star").await.unwrap().unwrap();
        assert_eq!(stored.outcome, "ignored");
        assert!(server.store.jobs_for_delivery(stored.id).await.unwrap().is_empty());
        // A pull request action previewd does not follow is ignored too.
        let assigned = example("pull_request", "assigned").unwrap();
        let response = server.deliver("pull_request", "d-assigned", &assigned).await;
        assert_eq!(response.json::<Value>().await.unwrap()["status"], "ignored");
        server.stop().await;
    }

    async fn a_redelivery_is_acknowledged_and_not_processed_twice(db) {
        let server = TestServer::start(&db).await;
        let payload = example("pull_request", "opened").unwrap();
        assert_eq!(server.deliver("pull_request", "d-re", &payload).await.status(), 202);
        let again = server.deliver("pull_request", "d-re", &payload).await;
        assert_eq!(again.status(), 200);
        assert_eq!(again.json::<Value>().await.unwrap()["status"], "duplicate");
        assert_eq!(server.finished_jobs("d-re").await.len(), 1);
        // Another hook subscribed to the same event shares the delivery id. With the same body
        // it is the same event: acknowledged, not processed again. With another body it is new.
        let body = serde_json::to_vec(&payload).unwrap();
        let other_hook = server.send("pull_request", "d-re", "2", body.clone(), signed(&body), "application/json").await;
        assert_eq!(other_hook.status(), 200);
        assert_eq!(other_hook.json::<Value>().await.unwrap()["status"], "duplicate");
        let mut other = payload.clone();
        other["pull_request"]["title"] = json!("seen by the organisation's hook");
        let body = serde_json::to_vec(&other).unwrap();
        let other_hook = server.send("pull_request", "d-re", "2", body.clone(), signed(&body), "application/json").await;
        assert_eq!(other_hook.status(), 202);
        assert_eq!(server.store.count_deliveries().await.unwrap(), 2);
        server.stop().await;
    }

    async fn a_body_replayed_under_new_delivery_ids_is_a_duplicate_and_queues_no_second_job(db) {
        let server = TestServer::start(&db).await;
        let payload = example("pull_request", "opened").unwrap();
        let body = serde_json::to_vec(&payload).unwrap();
        let original = server.send("pull_request", "d-orig", "1", body.clone(), signed(&body), "application/json").await;
        assert_eq!(original.status(), 202);
        server.finished_jobs("d-orig").await;
        // The captured body, signed as GitHub signed it, under fresh delivery ids and hook ids:
        // neither header is covered by the signature.
        for (delivery, hook) in [("d-replay-1", "1"), ("d-replay-2", "1"), ("d-replay-3", "99")] {
            let replay = server.send("pull_request", delivery, hook, body.clone(), signed(&body), "application/json").await;
            assert_eq!(replay.status(), 200, "{delivery}");
            assert_eq!(replay.json::<Value>().await.unwrap(), json!({"delivery": delivery, "status": "duplicate"}));
            assert!(server.store.find_delivery(hook, delivery).await.unwrap().is_none(), "a replay is not stored");
        }
        // GitHub's own redelivery (same hook, same delivery id) is answered as before.
        let redelivery = server.send("pull_request", "d-orig", "1", body.clone(), signed(&body), "application/json").await;
        assert_eq!((redelivery.status().as_u16(), redelivery.json::<Value>().await.unwrap()["status"].clone()), (200, json!("duplicate")));
        assert_eq!(server.store.count_deliveries().await.unwrap(), 1);
        let jobs: i64 = server.store.job_counts().await.unwrap().iter().map(|(_, n)| n).sum();
        assert_eq!(jobs, 2, "one job for the delivery and the report it caused, none for the replays");
        let stored = server.store.find_delivery("1", "d-orig").await.unwrap().unwrap();
        assert_eq!(stored.body_sha256.as_deref(), Some(hex_sha256(&body).as_str()));
        let metrics = server.client.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
        let replays = "previewd_webhook_deliveries_total{event=\"pull_request\",outcome=\"replay\"} 3";
        assert!(metrics.contains(replays), "missing `{replays}` in:\n{metrics}");
        server.stop().await;
    }

    async fn concurrent_copies_of_one_delivery_yield_one_job(db) {
        let server = std::sync::Arc::new(TestServer::start(&db).await);
        let payload = example("pull_request", "opened").unwrap();
        let mut sends = Vec::new();
        for _ in 0..20 {
            let server = server.clone();
            let payload = payload.clone();
            sends.push(tokio::spawn(async move { server.deliver("pull_request", "d-race", &payload).await.status().as_u16() }));
        }
        let mut statuses = Vec::new();
        for send in sends {
            statuses.push(send.await.unwrap());
        }
        statuses.sort();
        assert_eq!(statuses.iter().filter(|s| **s == 202).count(), 1, "{statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 19, "{statuses:?}");
        assert_eq!(server.finished_jobs("d-race").await.len(), 1);
        std::sync::Arc::into_inner(server).unwrap().stop().await;
    }

    async fn missing_github_headers_are_a_400(db) {
        let server = TestServer::start(&db).await;
        let body = b"{}".to_vec();
        let response = server
            .client
            .post(format!("{}/webhooks/github", server.base))
            .header("X-Hub-Signature-256", sign(SECRET, &body))
            .header("X-GitHub-Event", "pull_request")
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, error) = error_of(response).await;
        assert_eq!(status, 400);
        assert!(error["message"].as_str().unwrap().contains("X-GitHub-Delivery"));
        nothing_stored(&server).await;
        server.stop().await;
    }

    async fn every_published_example_of_the_followed_events_is_accepted(db) {
        let server = TestServer::start(&db).await;
        let events = [
            "pull_request", "issue_comment", "installation", "installation_repositories",
            "check_suite", "check_run", "workflow_run", "status",
        ];
        let mut queued = 0;
        for event in events {
            for (n, payload) in examples_of(event).unwrap().iter().enumerate() {
                let response = server.deliver(event, &format!("{event}-{n}"), payload).await;
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                assert_eq!(status, 202, "{event} example {n} ({}) refused: {body}", payload["action"]);
                if body["status"] == "queued" {
                    queued += 1;
                }
            }
        }
        assert!(queued > 40, "most examples are acted on, {queued} were");
        // Every queued example's job runs through the worker without failing.
        eventually("all jobs finish", || async {
            let counts = server.store.job_counts().await.ok()?;
            let open = counts.iter().filter(|(s, _)| matches!(s, JobState::Queued | JobState::Running)).map(|(_, n)| n).sum::<i64>();
            (open == 0).then_some(())
        })
        .await;
        let counts = server.store.job_counts().await.unwrap();
        assert_eq!(counts.iter().find(|(s, _)| *s == JobState::Dead).unwrap().1, 0, "no job failed: {counts:?}");
        server.stop().await;
    }

    async fn operations_endpoints_report_health_and_metrics(db) {
        let server = TestServer::start(&db).await;
        let health = server.client.get(format!("{}/healthz", server.base)).send().await.unwrap();
        assert_eq!(health.status(), 200);
        let ready = server.client.get(format!("{}/readyz", server.base)).send().await.unwrap();
        assert_eq!(ready.status(), 200);
        server.deliver("pull_request", "d-m", &example("pull_request", "opened").unwrap()).await;
        server.send("pull_request", "d-u", "1", b"{}".to_vec(), None, "application/json").await;
        server.finished_jobs("d-m").await;
        // The delivery's job, and the report of the environment it recorded (the outbox). A
        // worker counts an attempt after the job's completion is committed, so a scrape can see
        // a job done before its attempt is counted: wait for both.
        let settled = [
            "previewd_jobs{state=\"done\"} 2",
            "previewd_job_attempts_total{kind=\"github_event\",outcome=\"ok\"} 1",
            "previewd_job_attempts_total{kind=\"report_environment\",outcome=\"ok\"} 1",
        ];
        let metrics = eventually("both jobs are done and counted", || async {
            let text = server.client.get(format!("{}/metrics", server.base)).send().await.ok()?.text().await.ok()?;
            settled.iter().all(|line| text.contains(line)).then_some(text)
        })
        .await;
        for expected in [
            "previewd_webhook_deliveries_total{event=\"pull_request\",outcome=\"queued\"} 1",
            "previewd_webhook_deliveries_total{event=\"unknown\",outcome=\"unauthorized\"} 1",
            "previewd_jobs{state=\"queued\"} 0",
            "previewd_job_duration_seconds_count{kind=\"github_event\"} 1",
            "previewd_job_duration_seconds_count{kind=\"report_environment\"} 1",
            "previewd_webhook_intake_seconds_count 2",
        ] {
            assert!(metrics.contains(expected), "missing `{expected}` in:\n{metrics}");
        }
        server.stop().await;
    }

    async fn a_job_whose_payload_cannot_be_read_goes_to_the_dead_letter_state_with_its_error(db) {
        let server = TestServer::start(&db).await;
        let unreadable = NewJob::github_event(&json!({ "type": "no_such_event" }), 5).unwrap();
        let id = server.store.enqueue(&unreadable).await.unwrap().unwrap();
        let job = eventually("the job is dead", || async {
            server.store.job(id).await.ok()?.filter(|j| j.state == "dead")
        })
        .await;
        assert_eq!(job.attempts, 1, "a permanent error is not retried");
        let error = job.last_error.unwrap();
        assert!(error.starts_with("bad github_event job payload: unknown variant `no_such_event`"), "{error}");
        server.stop().await;
    }

    async fn a_job_left_by_a_crashed_process_is_run_after_restart(db) {
        let payload = json!({"type": "installation", "action": "created", "installation": 1, "account": "o", "repositories": []});
        let store = previewd_environments::store::Store::connect(&db.url.as_str().into()).await.unwrap();
        store.migrate().await.unwrap();
        let id = store
            .enqueue(&NewJob::github_event(&payload, 3).unwrap())
            .await
            .unwrap()
            .unwrap();
        // The "previous process" claimed it and died: its lease has run out.
        store.claim_jobs("crashed-process", Duration::ZERO, 1).await.unwrap();
        let server = TestServer::start(&db).await;
        let job = eventually("the abandoned job is done", || async {
            server.store.job(id).await.ok()?.filter(|j| j.state == "done")
        })
        .await;
        assert_eq!(job.attempts, 2);
        server.stop().await;
    }
}
