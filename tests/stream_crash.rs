//! Durability of acknowledged writes and their changes across a crash. Concurrent
//! REST writers run against `nightjar serve`, and the process is killed with
//! SIGKILL in the middle of the burst. After a restart on the same data, every
//! write that got its 201 must be readable and appear once in WatchChanges
//! replayed from the oldest cursor, as must every change a watcher received
//! before the crash.

mod common;
mod stream_support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Nightjar;
use common::rest::{Api, BASE_DATE};
use futures::StreamExt;
use serde_json::json;
use stream_support::{
    WriteOutcome, assert_no_duplicates, connect, get_cursor, operation_name, read_through,
    read_until, try_create, watch,
};

/// Concurrent writers.
const WRITERS: usize = 16;

/// Acknowledged writes to wait for before the kill, so the burst is well under way.
const ACKS_BEFORE_KILL: usize = 300;

/// Upper bound on the writes of one writer, so a writer cannot loop forever.
const MAX_WRITES_PER_WRITER: usize = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_mid_burst_keeps_acknowledged_writes() {
    let mut server = Nightjar::start();
    let token = server.subject("crash-admin", &["admin"]);
    let api = Api::with_token(&server, &token).await;

    // 1. A watcher from the head records every change it receives before the crash.
    let mut client = connect(&server.grpc).await;
    let head = get_cursor(&mut client, &token).await.cursor;
    let mut live_stream = watch(&mut client, &token, &[], &head)
        .await
        .expect("WatchChanges from the head");
    let seen_live = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = seen_live.clone();
    let watcher = tokio::spawn(async move {
        let read = read_until(&mut live_stream, Duration::from_secs(120), |_| false).await;
        seen.lock().unwrap().extend(read.identifiers());
        read
    });

    // 2. Writers with client-chosen identifiers, each stopping at its first failure.
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let attempted = Arc::new(Mutex::new(HashSet::<String>::new()));
    let ack_count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (api, acknowledged, attempted, ack_count, stop) = (
            api.clone(),
            acknowledged.clone(),
            attempted.clone(),
            ack_count.clone(),
            stop.clone(),
        );
        writers.push(tokio::spawn(async move {
            for sequence in 0..MAX_WRITES_PER_WRITER {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let identifier = format!("crash-{writer:02}-{sequence:05}");
                let document = json!({
                    "identifier": identifier,
                    "type": "sgv",
                    "sgv": 100,
                    "date": BASE_DATE + (writer * MAX_WRITES_PER_WRITER + sequence) as i64 * 1000,
                    "device": format!("crash-writer-{writer}"),
                    "app": "nightjar-tests",
                });
                attempted.lock().unwrap().insert(identifier.clone());
                match try_create(&api, "entries", &document, Duration::from_secs(10)).await {
                    WriteOutcome::Acknowledged { .. } => {
                        acknowledged.lock().unwrap().push(identifier);
                        ack_count.fetch_add(1, Ordering::Relaxed);
                    }
                    WriteOutcome::Failed { .. } => return,
                }
            }
        }));
    }

    // 3. Kill the server while every writer has a request in flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    while ack_count.load(Ordering::Relaxed) < ACKS_BEFORE_KILL {
        assert!(
            Instant::now() < deadline,
            "only {} writes acknowledged within 60 s",
            ack_count.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill();
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        tokio::time::timeout(Duration::from_secs(20), writer)
            .await
            .expect("writer stopped after the kill")
            .expect("writer task panicked");
    }
    let watcher_read = tokio::time::timeout(Duration::from_secs(20), watcher)
        .await
        .expect("watcher stopped after the kill")
        .expect("watcher task panicked");
    assert!(
        watcher_read.error.is_some() || watcher_read.ended,
        "the watch did not end when the server was killed"
    );
    let acknowledged = acknowledged.lock().unwrap().clone();
    let attempted = attempted.lock().unwrap().clone();
    let seen_live = seen_live.lock().unwrap().clone();

    // 4. Restart on the same data and replay the whole retained feed.
    server.restart();
    let api = api.rebase(&server);
    let mut client = connect(&server.grpc).await;
    let cursors = get_cursor(&mut client, &token).await;
    let mut stream = watch(&mut client, &token, &[], &cursors.oldest_cursor)
        .await
        .unwrap_or_else(|status| {
            panic!(
                "WatchChanges from the oldest cursor {}: {status:?}",
                cursors.oldest_cursor
            )
        });
    let replay = read_through(&mut stream, &cursors.cursor, Duration::from_secs(30)).await;
    assert_eq!(
        replay.last_cursor.as_deref(),
        Some(cursors.cursor.as_str()),
        "replay from the oldest cursor did not reach the head (error {:?}, {} changes read)",
        replay.error,
        replay.changes.len()
    );
    let replayed = replay.identifiers();
    let operations: HashMap<&str, usize> =
        replay
            .changes
            .iter()
            .fold(HashMap::new(), |mut counts, change| {
                *counts.entry(operation_name(change)).or_default() += 1;
                counts
            });
    eprintln!(
        "attempted {}, acknowledged {}, seen live {}, replayed {} ({operations:?})",
        attempted.len(),
        acknowledged.len(),
        seen_live.len(),
        replayed.len()
    );

    // 5. Every change in the feed is a create of one of our writes, each once.
    assert_eq!(
        operations.get("create").copied().unwrap_or(0),
        replayed.len(),
        "only creates were written"
    );
    assert_no_duplicates(&replayed, "replay from the oldest cursor");
    let replayed_set: HashSet<&String> = replayed.iter().collect();
    let strangers: Vec<&&String> = replayed_set
        .iter()
        .filter(|id| !attempted.contains(**id))
        .collect();
    assert!(
        strangers.is_empty(),
        "the feed holds writes nobody attempted: {strangers:?}"
    );

    // 6. Every acknowledged write and every change seen before the crash is in the feed.
    let missing_acknowledged: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !replayed_set.contains(id))
        .collect();
    assert!(
        missing_acknowledged.is_empty(),
        "{} of {} acknowledged writes have no change after the restart: {:?}",
        missing_acknowledged.len(),
        acknowledged.len(),
        missing_acknowledged
    );
    let missing_seen: Vec<&String> = seen_live
        .iter()
        .filter(|id| !replayed_set.contains(id))
        .collect();
    assert!(
        missing_seen.is_empty(),
        "changes published before the crash are gone after it: {missing_seen:?}"
    );

    // 7. Every write in the feed (acknowledged or not) is readable.
    let unreadable: Vec<String> = futures::stream::iter(replayed.clone())
        .map(|identifier| {
            let api = api.clone();
            async move {
                let reply = api.get(&format!("/api/v3/entries/{identifier}")).await;
                (identifier, reply.status)
            }
        })
        .buffer_unordered(16)
        .filter_map(|(identifier, status)| async move {
            (status != 200).then(|| format!("{identifier}: HTTP {status}"))
        })
        .collect()
        .await;
    assert!(
        unreadable.is_empty(),
        "writes in the change feed that cannot be read: {unreadable:?}"
    );
}
