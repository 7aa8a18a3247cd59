//! The HTTP server against clients that do not play along: headers and bodies that stall,
//! uploads that would fill memory, more connections than it serves, and a shutdown while
//! strangers hold connections open. Raw TCP clients, so the tests control every byte and pause.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{SECRET, TestServer, config, eventually, eventually_within};
use previewd::http::MAX_BODY_BYTES;
use previewd_e2e::database::{Backend, fresh};
use previewd_e2e::fixtures::example;
use previewd_e2e::github::sign;
use previewd_e2e::previewd::Previewd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const MIB: usize = 1024 * 1024;

/// The head of a webhook POST announcing `length` body bytes (`None`: chunked).
fn head(delivery: &str, length: Option<usize>) -> Vec<u8> {
    let framing = match length {
        Some(length) => format!("Content-Length: {length}"),
        None => "Transfer-Encoding: chunked".to_owned(),
    };
    format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: previewd\r\nX-GitHub-Event: pull_request\r\nX-GitHub-Delivery: {delivery}\r\n\
         X-Hub-Signature-256: {}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n",
        sign(SECRET, b"{}"),
    )
    .into_bytes()
}

async fn connect(base: &str) -> (OwnedReadHalf, OwnedWriteHalf) {
    TcpStream::connect(base.trim_start_matches("http://")).await.unwrap().into_split()
}

/// Reads until the peer closes (or resets) the connection or `limit` passes; what was read.
async fn read_to_close(read: &mut OwnedReadHalf, limit: Duration) -> Option<String> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let reading = async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, reading).await.ok()?;
    Some(String::from_utf8_lossy(&answer).into_owned())
}

/// Reads one answer whose body is a JSON object (the webhook's answers are).
async fn read_answer(read: &mut OwnedReadHalf, limit: Duration) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let reading = async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            if String::from_utf8_lossy(&answer).contains('}') {
                break;
            }
        }
    };
    tokio::time::timeout(limit, reading).await.expect("an answer in time");
    String::from_utf8_lossy(&answer).into_owned()
}

/// `name`'s value in a Prometheus text scrape.
async fn metric(server_base: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{server_base}/metrics")).await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// An upload of a declared 25 MiB body that sends all but its last MiB as fast as previewd
/// reads, then stalls with the connection open: the memory attack of issue 12.
struct Upload {
    /// previewd answered or closed the connection (refused it).
    refused: Arc<AtomicBool>,
    /// What previewd answered, if anything was read before the connection closed.
    answer: Arc<tokio::sync::Mutex<String>>,
    /// Held until the end of the test: the upload stays open.
    _write: tokio::task::JoinHandle<OwnedWriteHalf>,
}

const SENT_PER_UPLOAD: usize = MAX_BODY_BYTES - MIB;

fn start_upload(base: String, n: usize, written: Arc<AtomicUsize>) -> Upload {
    let refused = Arc::new(AtomicBool::new(false));
    let answer = Arc::new(tokio::sync::Mutex::new(String::new()));
    let (refused_flag, answer_slot) = (refused.clone(), answer.clone());
    let write = tokio::spawn(async move {
        let (mut read, mut write) = connect(&base).await;
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer_slot.lock().await.push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
            refused_flag.store(true, Ordering::SeqCst);
        });
        let _ = write.write_all(&head(&format!("stalled-{n}"), Some(MAX_BODY_BYTES))).await;
        let chunk = vec![b' '; 256 * 1024];
        let mut sent = 0;
        while sent < SENT_PER_UPLOAD {
            if write.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        written.fetch_add(1, Ordering::SeqCst);
        write
    });
    Upload { refused, answer, _write: write }
}

/// Issue 12, section 3: 40 uploads of 25 MiB that stall near their end, against the real
/// binary. Before the HTTP limits previewd held every byte of every upload (about 1 GiB here;
/// 25 such uploads OOM a pod with the chart's 512 MiB limit) and SIGTERM waited for them for
/// ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_stalled_uploads_neither_exhaust_memory_nor_block_a_delivery_nor_hold_up_shutdown() {
    const UPLOADS: usize = 40;
    const GRACE_SECONDS: u64 = 6;
    let db = fresh(Backend::Sqlite).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env: Vec<(String, String)> = [
        ("PREVIEWD_DATABASE_URL", db.url.as_str()),
        ("PREVIEWD_WEBHOOK_SECRETS", SECRET),
        // The uploads must still be open at SIGTERM, not closed by the body timeout first.
        ("PREVIEWD_HTTP__BODY_TIMEOUT_SECONDS", "600"),
        ("PREVIEWD_SHUTDOWN_GRACE_SECONDS", "6"),
        ("PREVIEWD_QUEUE__POLL_INTERVAL_MS", "50"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut previewd =
        Previewd::start(Path::new(env!("CARGO_BIN_EXE_previewd")), &env, &dir.path().join("previewd.log"))
            .await
            .unwrap();
    let idle = previewd.memory().unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let uploads: Vec<Upload> = (0..UPLOADS).map(|n| start_upload(previewd.base.clone(), n, written.clone())).collect();

    // The body budget (128 MiB) and previewd itself, with room to spare under the chart's
    // 512 MiB limit; checked at every look while the uploads come in.
    let bound = 320 * MIB as u64;
    let within_bound = || {
        let memory = previewd.memory().unwrap();
        assert!(
            memory.peak_rss_bytes < bound,
            "previewd's peak resident memory reached {} MiB with {} uploads written",
            memory.peak_rss_bytes / MIB as u64,
            written.load(Ordering::SeqCst)
        );
    };
    // Settled: every upload has been refused or sent all it sends, and previewd holds the
    // bodies of exactly the ones it did not refuse (each grown to its declared 25 MiB).
    let base = previewd.base.clone();
    let (open, held) = eventually_within(Duration::from_secs(240), "the uploads settle", || async {
        within_bound();
        let refused = uploads.iter().filter(|u| u.refused.load(Ordering::SeqCst)).count();
        let open = UPLOADS - refused;
        let held = metric(&base, "previewd_webhook_body_bytes").await? as usize;
        (written.load(Ordering::SeqCst) == UPLOADS && held == open * MAX_BODY_BYTES).then_some((open, held))
    })
    .await;
    let budget = 128 * MIB;
    assert!(open >= 1 && open <= budget / MAX_BODY_BYTES, "{open} uploads are open, holding {held} bytes");
    let mut busy = 0;
    for upload in &uploads {
        let answer = upload.answer.lock().await.clone();
        if upload.refused.load(Ordering::SeqCst) && !answer.is_empty() {
            assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
            assert!(answer.to_ascii_lowercase().contains("retry-after: 600"), "{answer}");
            assert!(answer.contains("\"busy\""), "{answer}");
            busy += 1;
        }
    }
    assert!(busy >= 1, "at least one refused upload read its 503 before the connection closed");

    // A delivery from GitHub is still taken at once. (Generous bound for a loaded 2-core
    // machine; it takes milliseconds.)
    let payload = example("pull_request", "opened").unwrap();
    let body = serde_json::to_vec(&payload).unwrap();
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(format!("{}/webhooks/github", previewd.base))
        .header("X-GitHub-Event", "pull_request")
        .header("X-GitHub-Delivery", "d-during-attack")
        .header("X-Hub-Signature-256", sign(SECRET, &body))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let delivered_in = started.elapsed();
    assert_eq!(response.status(), 202);
    assert!(delivered_in < Duration::from_secs(5), "the delivery took {delivered_in:?}");

    let memory = previewd.memory().unwrap();
    println!(
        "previewd memory: idle {} MiB; with {open} of {UPLOADS} stalled uploads open ({} MiB of bodies held): \
         resident {} MiB, peak {} MiB; a delivery answered 202 in {delivered_in:?}",
        idle.rss_bytes / MIB as u64,
        held / MIB,
        memory.rss_bytes / MIB as u64,
        memory.peak_rss_bytes / MIB as u64,
    );
    within_bound();

    let started = Instant::now();
    let status = previewd.terminate(Duration::from_secs(120)).await.unwrap().unwrap();
    let took = started.elapsed();
    println!("SIGTERM to exit with {open} uploads open: {took:?}");
    assert!(status.success(), "{status}; log:\n{}", previewd.log_tail(30));
    assert!(took < Duration::from_secs(GRACE_SECONDS), "exit took {took:?}, the grace period is {GRACE_SECONDS} s");
    let log = previewd.log();
    assert!(log.contains("closing their connections"), "the stalled requests were cut off: {log}");
    drop(uploads);
}

/// A client that sends part of its headers and stops (slowloris), and a keep-alive connection
/// left idle, are both closed once the header timeout passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_header_and_an_idle_connection_are_closed_after_the_header_timeout() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let server = TestServer::start_with(config(&db, &[("PREVIEWD_HTTP__HEADER_TIMEOUT_SECONDS", "1")])).await;
    let (mut slow_read, mut slow_write) = connect(&server.base).await;
    let started = Instant::now();
    slow_write.write_all(b"POST /webhooks/github HTTP/1.1\r\nHost: previewd\r\nX-GitHub-Event: pull").await.unwrap();
    let (mut idle_read, mut idle_write) = connect(&server.base).await;
    idle_write.write_all(b"GET /healthz HTTP/1.1\r\nHost: previewd\r\n\r\n").await.unwrap();
    let mut first = [0u8; 128];
    let n = idle_read.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));

    // Both are closed; 5 s is generous for a 1 s timeout on a loaded machine.
    let slow = read_to_close(&mut slow_read, Duration::from_secs(5)).await.expect("the stalled header is closed");
    let closed_after = started.elapsed();
    assert_eq!(slow, "", "closed without an answer");
    assert!(closed_after >= Duration::from_millis(900), "closed by the timeout, not at once: {closed_after:?}");
    read_to_close(&mut idle_read, Duration::from_secs(5)).await.expect("the idle keep-alive connection is closed");
    // Both are counted (the test client's own pooled connection may be a third).
    eventually("both timeouts are counted", || async {
        metric(&server.base, "previewd_http_header_timeouts_total").await.filter(|n| *n >= 2.0)
    })
    .await;
    drop((slow_write, idle_write));
    server.stop().await;
}

/// A body that stops arriving is answered 408 once the body timeout passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_is_answered_408_after_the_body_timeout() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let server = TestServer::start_with(config(&db, &[("PREVIEWD_HTTP__BODY_TIMEOUT_SECONDS", "1")])).await;
    let (mut read, mut write) = connect(&server.base).await;
    write.write_all(&head("d-slow-body", Some(1000))).await.unwrap();
    write.write_all(b"{\"action\": ").await.unwrap();
    let started = Instant::now();
    let answer = read_answer(&mut read, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"body_timeout\""), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(900), "answered after the timeout: {:?}", started.elapsed());
    assert_eq!(server.store.count_deliveries().await.unwrap(), 0);
    drop(write);
    server.stop().await;
}

/// With the budget (here 25 MiB, the smallest allowed) taken by a stalled upload, a body that
/// does not fit is refused with 503 and `Retry-After`, declared or chunked, and a small
/// delivery still fits. The budget comes back when the upload's request ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_fit_the_budget_is_refused_with_503_and_retry_after() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let budget = MAX_BODY_BYTES.to_string();
    let server = TestServer::start_with(config(
        &db,
        &[("PREVIEWD_HTTP__MAX_INFLIGHT_BODY_BYTES", &budget), ("PREVIEWD_HTTP__BODY_TIMEOUT_SECONDS", "60")],
    ))
    .await;
    // 20 MiB announced, all but one byte sent, then a stall.
    let (mut holder_read, mut holder_write) = connect(&server.base).await;
    holder_write.write_all(&head("d-holder", Some(20 * MIB))).await.unwrap();
    holder_write.write_all(&vec![b' '; 20 * MIB - 1]).await.unwrap();
    eventually("the stalled upload's body is held", || async {
        metric(&server.base, "previewd_webhook_body_bytes").await.filter(|n| *n as usize == 20 * MIB)
    })
    .await;

    // Declared too big for what is left: refused before anything of it is sent.
    let (mut read, mut write) = connect(&server.base).await;
    write.write_all(&head("d-declared", Some(10 * MIB))).await.unwrap();
    let answer = read_answer(&mut read, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 60\r\n"), "{answer}");
    assert!(answer.contains("\"busy\""), "{answer}");

    // Chunked: refused once what arrived no longer fits.
    let (mut read, mut write) = connect(&server.base).await;
    let sender = tokio::spawn(async move {
        write.write_all(&head("d-chunked", None)).await.ok();
        let chunk = vec![b' '; MIB];
        for _ in 0..10 {
            let framed = [format!("{:x}\r\n", chunk.len()).into_bytes(), chunk.clone(), b"\r\n".to_vec()].concat();
            if write.write_all(&framed).await.is_err() {
                break;
            }
        }
        write
    });
    let answer = read_answer(&mut read, Duration::from_secs(20)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    sender.abort();

    // A delivery of ordinary size fits beside the stalled upload.
    let response = server.deliver("pull_request", "d-small", &example("pull_request", "opened").unwrap()).await;
    assert_eq!(response.status(), 202);

    // The stalled upload goes away: its share comes back, and a 10 MiB delivery is taken.
    drop(holder_write);
    read_to_close(&mut holder_read, Duration::from_secs(5)).await;
    eventually("the budget is free again", || async {
        metric(&server.base, "previewd_webhook_body_bytes").await.filter(|n| *n == 0.0)
    })
    .await;
    let mut body = b"{\"zen\":\"x\"}".to_vec();
    body.resize(10 * MIB, b' ');
    let signature = sign(SECRET, &body);
    let response = server.send("star", "d-ten-mib", "1", body, Some(signature), "application/json").await;
    assert_eq!(response.status(), 202);
    server.stop().await;
}

/// Over `http.max_connections`, a connection waits until one closes: with the one slot taken by
/// a client that sends nothing, the next client's request is answered only once the header
/// timeout (1 s) has closed the silent connection; without the cap it is answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_cap_waits_for_a_free_slot() {
    let db = fresh(Backend::Sqlite).await.unwrap();
    let server = TestServer::start_with(config(
        &db,
        &[("PREVIEWD_HTTP__MAX_CONNECTIONS", "1"), ("PREVIEWD_HTTP__HEADER_TIMEOUT_SECONDS", "1")],
    ))
    .await;
    let (mut silent_read, silent_write) = connect(&server.base).await;
    let started = Instant::now();
    let (mut read, mut write) = connect(&server.base).await;
    write.write_all(b"GET /healthz HTTP/1.1\r\nHost: previewd\r\nConnection: close\r\n\r\n").await.unwrap();
    let answer = read_to_close(&mut read, Duration::from_secs(10)).await.expect("an answer");
    let waited = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(waited >= Duration::from_millis(900), "answered after {waited:?}, before a slot was free");
    let silent = read_to_close(&mut silent_read, Duration::from_secs(10)).await;
    assert_eq!(silent.as_deref(), Some(""), "the silent connection was closed without an answer");
    drop(silent_write);
    server.stop().await;
}
