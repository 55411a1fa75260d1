//! Edge resilience across a core restart, with `nightjar core` and `nightjar
//! edge` as separate processes. A socket.io-client 4.x subscriber stays
//! connected to the edge while a writer posts entries through it at a steady
//! pace, and core is stopped and started again on the same address and data. The
//! subscriber must keep its socket and receive every acknowledged write exactly
//! once, in order. While core is down, REST answers 503 promptly and `subscribe`
//! is rejected as unavailable.
//!
//! Needs `npm ci` in `tests/js`; `bash tests/run.sh` does it and then runs the tests.

mod client_scripts;
mod common;
mod stream_support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client_scripts::run_script;
use common::rest::{Api, BASE_DATE, expect_error};
use common::run_cli;
use serde_json::{Value, json};
use stream_support::{
    NodeScript, Process, WriteOutcome, api_for, connect, get_cursor, js_dir, try_create,
};

/// Pause between two writes of the steady writer.
const WRITE_INTERVAL: Duration = Duration::from_millis(20);

/// Upper bound on the writer's attempts, so it cannot loop forever.
const MAX_WRITES: usize = 3_000;

/// Writes to see acknowledged after core is back before the writer stops.
const ACKS_AFTER_RESTART: usize = 30;

/// Maximum time for a 503 response while core is down.
const PROMPT: Duration = Duration::from_secs(3);

/// Identifier of the entry written after the writer stops; the subscriber ends on its event.
const END_IDENTIFIER: &str = "restart-end";

/// How core goes down.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// SIGTERM: core shuts down and ends its streams.
    Terminate,
    /// SIGKILL: core disappears as in a crash.
    Kill,
}

/// One write attempt and what came of it, in the order the writer made them.
#[derive(Debug, Clone)]
struct Attempt {
    identifier: String,
    outcome: WriteOutcome,
    /// Time of the response, measured from the writer's start.
    answered_at: Duration,
}

/// A sequential writer posting one entry per `WRITE_INTERVAL` until stopped.
struct Writer {
    log: Arc<Mutex<Vec<Attempt>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(api: Api) -> Writer {
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (attempts, stopped) = (log.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let started = Instant::now();
            for sequence in 0..MAX_WRITES {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let identifier = format!("restart-{sequence:05}");
                let document = json!({
                    "identifier": identifier,
                    "type": "sgv",
                    "sgv": 100 + (sequence % 200),
                    "date": BASE_DATE + sequence as i64 * 1000,
                    "device": "restart-writer",
                    "app": "nightjar-tests",
                });
                let outcome = try_create(&api, "entries", &document, Duration::from_secs(10)).await;
                attempts.lock().unwrap().push(Attempt {
                    identifier,
                    outcome,
                    answered_at: started.elapsed(),
                });
                tokio::time::sleep(WRITE_INTERVAL).await;
            }
        });
        Writer { log, stop, task }
    }

    fn acknowledged(&self) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|a| matches!(a.outcome, WriteOutcome::Acknowledged { .. }))
            .count()
    }

    /// Waits until `count` more writes than now are acknowledged, for at most `timeout`.
    async fn wait_for_more_acks(&self, count: usize, timeout: Duration) {
        let target = self.acknowledged() + count;
        let deadline = Instant::now() + timeout;
        while self.acknowledged() < target {
            let last = self.log.lock().unwrap().last().cloned();
            assert!(
                Instant::now() < deadline,
                "fewer than {count} writes acknowledged within {} s; last attempt: {last:?}",
                timeout.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn finish(self) -> Vec<Attempt> {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("writer stopped")
            .expect("writer task panicked");
        self.log.lock().unwrap().clone()
    }
}

/// Asserts that a search through the edge fails with 503 `Storage service unavailable` within `PROMPT`.
async fn assert_prompt_503(api: &Api) {
    let started = Instant::now();
    let reply = api.get("/api/v3/entries?limit=1").await;
    let elapsed = started.elapsed();
    expect_error(&reply, 503, "Storage service unavailable");
    assert!(
        elapsed <= PROMPT,
        "503 with core down took {elapsed:?}, more than {PROMPT:?}"
    );
}

async fn check_core_restart(stop: Stop) {
    // 1. Core, edge, a subject and the subscriber.
    let temp = tempfile::tempdir().expect("create temp dir");
    let data_dir = temp.path().join("data");
    let mut core = Process::core(&data_dir, "127.0.0.1:0", &[]);
    let grpc_addr = core.host_port();
    let core_url = core.url();
    let edge = Process::edge(&core_url);
    let token = run_cli(
        &core_url,
        &data_dir,
        &["subject", "add", "restart-admin", "--roles", "admin"],
    )
    .lines()
    .map(str::trim)
    .rfind(|line| !line.is_empty())
    .expect("subject add printed a token")
    .to_string();
    let api = api_for(&edge.url(), &token).await;
    let mut subscriber = NodeScript::start(
        "stream_core_restart.mjs",
        &[
            ("NIGHTJAR_URL", &edge.url()),
            ("SOCKET_IO_CLIENT", "4"),
            ("ADMIN_TOKEN", &token),
            ("END_IDENTIFIER", END_IDENTIFIER),
        ],
    );
    subscriber.wait_for_line("subscribed", Duration::from_secs(20));

    // 2. Steady writes, then core goes down in the middle of them.
    let writer = Writer::start(api.clone());
    writer.wait_for_more_acks(30, Duration::from_secs(20)).await;
    let mut client = connect(&core_url).await;
    let cursor = get_cursor(&mut client, &token).await.cursor;
    drop(client);
    match stop {
        Stop::Terminate => core.terminate(),
        Stop::Kill => core.kill(),
    }
    let core_log_before = core.log_lines();

    // 3. While core is down: REST fails fast with 503 and subscribe is rejected.
    let outage_started = Instant::now();
    assert_prompt_503(&api).await;
    let edge_url = edge.url();
    let edge_log = edge.log.clone();
    tokio::task::block_in_place(|| {
        let run = run_script(
            "node",
            &["stream_subscribe_unavailable.mjs"],
            &js_dir(),
            &[
                ("NIGHTJAR_URL", &edge_url),
                ("SOCKET_IO_CLIENT", "4"),
                ("ADMIN_TOKEN", &token),
                ("CURSOR", &cursor),
            ],
        );
        run.assert_success(&edge_log.lock().unwrap());
    });
    assert_prompt_503(&api).await;
    if let Some(rest) = Duration::from_secs(2).checked_sub(outage_started.elapsed()) {
        tokio::time::sleep(rest).await;
    }

    // 4. Core is back on the same address; writes resume once the edge reconnects.
    let _core = Process::core(&data_dir, &grpc_addr, &[]);
    writer
        .wait_for_more_acks(ACKS_AFTER_RESTART, Duration::from_secs(30))
        .await;
    let attempts = writer.finish().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let end = json!({ "identifier": END_IDENTIFIER, "type": "sgv", "sgv": 1, "date": BASE_DATE - 1000, "app": "nightjar-tests" });
        match try_create(&api, "entries", &end, Duration::from_secs(5)).await {
            WriteOutcome::Acknowledged { .. } => break,
            WriteOutcome::Failed { detail } => {
                assert!(
                    Instant::now() < deadline,
                    "the final write kept failing: {detail}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    // 5. The subscriber's record.
    let edge_log_lines = edge.log_lines();
    tokio::task::block_in_place(|| {
        subscriber.expect_success(Duration::from_secs(60), &edge_log_lines)
    });
    let result: Value = serde_json::from_str(
        &subscriber
            .last_line("result ")
            .expect("subscriber printed its result"),
    )
    .expect("subscriber result is JSON");
    let context = format!(
        "core stopped with {stop:?}; edge log tail:\n{}\ncore log before the stop, tail:\n{}",
        tail(&edge_log_lines, 40),
        tail(&core_log_before, 20)
    );
    check_attempts(&attempts, &context);
    check_subscriber(&result, &attempts, &context);
}

/// Checks that the writer saw acknowledged writes on both sides of the outage and
/// failures during it, so the run tested what it claims to.
fn check_attempts(attempts: &[Attempt], context: &str) {
    let first_failure = attempts
        .iter()
        .position(|a| matches!(a.outcome, WriteOutcome::Failed { .. }))
        .unwrap_or_else(|| panic!("no write failed while core was down; {context}"));
    let last_failure = attempts
        .iter()
        .rposition(|a| matches!(a.outcome, WriteOutcome::Failed { .. }))
        .expect("a failure exists");
    let acknowledged_after = attempts[last_failure..]
        .iter()
        .filter(|a| matches!(a.outcome, WriteOutcome::Acknowledged { .. }))
        .count();
    assert!(
        first_failure >= 30,
        "writes failed before core went down: {:?}",
        &attempts[..=first_failure]
    );
    assert!(
        acknowledged_after >= ACKS_AFTER_RESTART,
        "only {acknowledged_after} writes acknowledged after the last failure"
    );
    let outage = attempts[last_failure].answered_at - attempts[first_failure].answered_at;
    let failures: Vec<&Attempt> = attempts[first_failure..=last_failure]
        .iter()
        .filter(|a| matches!(a.outcome, WriteOutcome::Failed { .. }))
        .collect();
    eprintln!(
        "writer: {} attempts, {} failed over {outage:?} (first: {:?}), {acknowledged_after} acknowledged after the outage",
        attempts.len(),
        failures.len(),
        failures.first().map(|a| &a.outcome)
    );
}

/// Compares the subscriber's events with the writer's log.
fn check_subscriber(result: &Value, attempts: &[Attempt], context: &str) {
    assert_eq!(
        result["ended"], true,
        "the subscriber never received the final write; {context}"
    );
    assert_eq!(
        result["disconnects"],
        json!([]),
        "the subscriber's socket was disconnected; {context}"
    );
    assert_eq!(
        result["connected"], true,
        "the subscriber's socket is not connected; {context}"
    );

    let events = result["events"].as_array().expect("events array");
    let mut cursors = HashSet::new();
    for event in events {
        assert_eq!(
            event["event"], "create",
            "only creates were written; got {event}"
        );
        assert_eq!(
            event["colName"], "entries",
            "event of another collection: {event}"
        );
        let cursor = event["cursor"]
            .as_str()
            .unwrap_or_else(|| panic!("event without a string cursor: {event}"));
        assert!(
            cursors.insert(cursor.to_string()),
            "cursor {cursor} repeats; {context}"
        );
    }
    let received: Vec<&str> = events
        .iter()
        .map(|e| e["identifier"].as_str().expect("identifier"))
        .collect();
    assert_eq!(
        received.last().copied(),
        Some(END_IDENTIFIER),
        "the final write's event is not the last one"
    );
    let received = &received[..received.len() - 1];

    // Every acknowledged write exactly once; a failed write at most once (it may
    // have committed before core went down); nothing else.
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for identifier in received {
        *counts.entry(identifier).or_default() += 1;
    }
    let repeated: Vec<(&&str, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "events delivered more than once: {repeated:?}; {context}"
    );
    let attempted: HashMap<&str, &Attempt> = attempts
        .iter()
        .map(|a| (a.identifier.as_str(), a))
        .collect();
    let strangers: Vec<&&str> = received
        .iter()
        .filter(|id| !attempted.contains_key(**id))
        .collect();
    assert!(
        strangers.is_empty(),
        "events for writes never attempted: {strangers:?}"
    );
    let missing: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| matches!(a.outcome, WriteOutcome::Acknowledged { .. }))
        .filter(|a| !counts.contains_key(a.identifier.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged writes never reached the subscriber: {:?}; {context}",
        missing.len(),
        missing
            .iter()
            .map(|a| (&a.identifier, a.answered_at))
            .collect::<Vec<_>>()
    );

    // One sequential writer: commit order is attempt order.
    let expected_order: Vec<&str> = attempts
        .iter()
        .map(|a| a.identifier.as_str())
        .filter(|id| counts.contains_key(id))
        .collect();
    assert_eq!(
        received,
        expected_order.as_slice(),
        "events out of commit order; {context}"
    );
    let unacknowledged_delivered = received.len()
        - attempts
            .iter()
            .filter(|a| matches!(a.outcome, WriteOutcome::Acknowledged { .. }))
            .count();
    eprintln!(
        "subscriber: {} events, {unacknowledged_delivered} of them for writes that failed but committed",
        received.len()
    );
}

fn tail(lines: &[String], count: usize) -> String {
    lines[lines.len().saturating_sub(count)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_terminated_under_load() {
    check_core_restart(Stop::Terminate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_killed_under_load() {
    check_core_restart(Stop::Kill).await;
}
