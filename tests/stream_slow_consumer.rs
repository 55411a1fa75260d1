//! Slow consumers of the change feed while 10,000 events flow through
//! `nightjar serve`: a gRPC watcher and a Socket.IO subscriber that stop reading,
//! next to a healthy watcher and a healthy subscriber that read everything.
//!
//! The stalled gRPC watcher must be ended with RESOURCE_EXHAUSTED carrying
//! `nightjar-last-cursor` (the cursor of the last message it received) and must
//! get the rest by watching again from that cursor. The stalled Socket.IO client
//! must be disconnected after a gap-free prefix of the events (checked by
//! `tests/js/stream_slow_consumer.mjs`). The healthy ones must receive all
//! events in commit order, and while the consumers stall, the server's resident
//! memory must grow by less than the data one stalled consumer failed to read.
//!
//! Needs `npm ci` in `tests/js`; `bash tests/run.sh` does it and then runs the tests.

mod common;
mod stream_support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Nightjar;
use common::rest::BASE_DATE;
use serde_json::json;
use stream_support::proto::CreateRequest;
use stream_support::proto::storage_client::StorageClient;
use stream_support::{
    LAST_CURSOR_KEY, NodeScript, RssSampler, authorized, connect, get_cursor, metadata_text,
    read_until, rss_kib, watch,
};
use tonic::Code;
use tonic::transport::Channel;

/// Entries written while the consumers stall.
const EVENT_COUNT: usize = 10_000;

/// Filler per entry, in bytes, so the events (about 2.2 kB each) outgrow the
/// HTTP/2 windows and TCP buffers between the server and a stalled client.
const PADDING_BYTES: usize = 2_000;

/// Entries written during the brief stall: with `BRIEF_PADDING_BYTES` each, about
/// 48 MB, more than the TCP buffers and the server's per-socket queue hold.
const BRIEF_EVENT_COUNT: usize = 3_000;

/// Filler per entry during the brief stall, in bytes.
const BRIEF_PADDING_BYTES: usize = 16_000;

/// Makes the tests of this file run one at a time: each writes tens of megabytes,
/// and the brief stall must end before the Engine.IO heartbeat fires.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Concurrent gRPC writers; concurrent commits share one transaction.
const WRITERS: usize = 32;

/// How long the stalled Socket.IO client keeps not reading after the writes end.
/// It exceeds the 10 s a gRPC consumer may stall before it counts as lagging.
const STALL_MS: u64 = 12_000;

/// Largest accepted growth of the server's resident memory while the consumers
/// stall, in KiB: 20 MiB, the size of the events one stalled consumer does not
/// read (about 9,000 × 2.2 kB). A server that queued the events of both stalled
/// consumers would grow by at least twice that.
const RSS_GROWTH_LIMIT_KIB: u64 = 20 * 1024;

/// Creates `count` entries through gRPC with `WRITERS` concurrent calls and
/// returns their identifiers in commit order.
///
/// The entries have no `type`, so create skips the fallback deduplication lookup
/// (its keys are `date` and `type`). NOTE: that lookup scans the whole collection
/// in the embedded store, which would slow 10,000 creates to minutes in a debug build.
async fn write_entries(
    client: &StorageClient<Channel>,
    token: &str,
    count: usize,
    padding_bytes: usize,
) -> Vec<String> {
    let next = Arc::new(AtomicUsize::new(0));
    let padding = "x".repeat(padding_bytes);
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let (mut client, next, padding, token) = (
            client.clone(),
            next.clone(),
            padding.clone(),
            token.to_string(),
        );
        writers.push(tokio::spawn(async move {
            let mut written = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    return written;
                }
                let document = json!({
                    "sgv": 40 + index % 300,
                    "date": BASE_DATE + index as i64 * 1000,
                    "device": "slow-consumer-writer",
                    "app": "nightjar-tests",
                    "padding": padding,
                });
                let request = CreateRequest {
                    collection: "entries".into(),
                    document: document.to_string().into_bytes(),
                };
                let reply = client
                    .create(authorized(request, &token))
                    .await
                    .unwrap_or_else(|status| panic!("Create of entry {index} failed: {status:?}"))
                    .into_inner();
                written.push((reply.last_modified, reply.identifier));
            }
        }));
    }
    let mut written = Vec::new();
    for writer in writers {
        written.extend(writer.await.expect("writer task"));
    }

    // srvModified is strictly increasing within a collection, so it gives the commit order.
    written.sort();
    let mut stamps: Vec<i64> = written.iter().map(|(stamp, _)| *stamp).collect();
    stamps.dedup();
    assert_eq!(
        stamps.len(),
        written.len(),
        "two creates were acknowledged with the same last_modified"
    );
    written
        .into_iter()
        .map(|(_, identifier)| identifier)
        .collect()
}

/// Starts `tests/js/stream_slow_consumer.mjs` and waits until its healthy and
/// stalled sockets are subscribed and the stalled one has stopped reading.
fn start_socket_clients(
    server: &Nightjar,
    token: &str,
    event_count: usize,
    stall_ms: u64,
    expect_cut_off: bool,
    commit_order_file: &Path,
) -> NodeScript {
    let script = NodeScript::start(
        "stream_slow_consumer.mjs",
        &[
            ("NIGHTJAR_URL", &server.http),
            ("ADMIN_TOKEN", token),
            ("EVENT_COUNT", &event_count.to_string()),
            ("STALL_MS", &stall_ms.to_string()),
            ("EXPECT_CUT_OFF", if expect_cut_off { "1" } else { "0" }),
            (
                "COMMIT_ORDER_FILE",
                commit_order_file.to_str().expect("UTF-8 path"),
            ),
        ],
    );
    tokio::task::block_in_place(|| script.wait_for_line("stalled", Duration::from_secs(30)));
    script
}

/// Writes the identifiers in commit order to `path` for the Node client, through a
/// rename so that it never reads a partial file.
fn publish_commit_order(path: &Path, identifiers: &[String]) {
    let partial = path.with_extension("partial");
    std::fs::write(
        &partial,
        serde_json::to_vec(identifiers).expect("serialize identifiers"),
    )
    .expect("write the commit order");
    std::fs::rename(&partial, path).expect("move the commit order into place");
}

/// Panics with the script's output and the server log unless the script exited 0.
fn assert_script_passed(script: &NodeScript, code: Option<i32>, server: &Nightjar) {
    if code == Some(0) {
        return;
    }
    let log = server.log.lock().unwrap().clone();
    panic!(
        "node {} exited with {code:?}\n{}\n--- server log tail ---\n{}",
        script.name,
        script.output(),
        log[log.len().saturating_sub(60)..].join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_consumers_are_cut_off() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let server = Nightjar::start();
    let token = server.subject("slow-admin", &["admin"]);
    let pid = server.pid().expect("server is running");

    // 1. gRPC watchers from the head, each on its own HTTP/2 connection.
    let mut healthy_client = connect(&server.grpc).await;
    let start = get_cursor(&mut healthy_client, &token).await.cursor;
    let mut healthy_stream = watch(&mut healthy_client, &token, &["entries"], &start)
        .await
        .expect("healthy WatchChanges");
    let healthy = tokio::spawn(async move {
        read_until(&mut healthy_stream, Duration::from_secs(90), |read| {
            read.changes.len() > EVENT_COUNT
        })
        .await
    });
    let mut stalled_client = connect(&server.grpc).await;
    let mut stalled_stream = watch(&mut stalled_client, &token, &["entries"], &start)
        .await
        .expect("stalled WatchChanges");

    // 2. The Node client subscribes a healthy and a stalled socket.
    let temp = tempfile::tempdir().expect("create temp dir");
    let commit_order_file = temp.path().join("commit-order.json");
    let mut script = start_socket_clients(
        &server,
        &token,
        EVENT_COUNT,
        STALL_MS,
        true,
        &commit_order_file,
    );

    // 3. Memory before the events flow, then the writes.
    let baseline_kib = rss_kib(pid).expect("read the server's VmRSS");
    let sampler = RssSampler::start(pid, Duration::from_millis(100));
    let writes_started = Instant::now();
    let writer_client = connect(&server.grpc).await;
    let commit_order = write_entries(&writer_client, &token, EVENT_COUNT, PADDING_BYTES).await;
    let write_time = writes_started.elapsed();
    publish_commit_order(&commit_order_file, &commit_order);

    // 4. Memory while both stalled consumers are behind: from the first write until the
    //    stalled socket reads again. Replays to the resuming clients come after.
    tokio::task::block_in_place(|| script.wait_for_line("resuming", Duration::from_secs(120)));
    let stall_samples = sampler.samples();
    let node_code = tokio::task::block_in_place(|| script.wait(Duration::from_secs(120)));
    let samples = sampler.finish();
    let stall_peak_kib = stall_samples
        .iter()
        .map(|(_, kib)| *kib)
        .max()
        .unwrap_or(baseline_kib);
    let peak_kib = samples
        .iter()
        .map(|(_, kib)| *kib)
        .max()
        .unwrap_or(baseline_kib);
    let timeline: Vec<String> = samples
        .iter()
        .step_by(10)
        .map(|(at, kib)| format!("{:.0}s:{}", at.as_secs_f64(), kib / 1024))
        .collect();
    eprintln!(
        "{EVENT_COUNT} creates took {write_time:?}; server VmRSS {baseline_kib} KiB before the writes, \
         peak {stall_peak_kib} KiB while stalled ({:?} after the writes began), peak {peak_kib} KiB including the replays\n\
         VmRSS in MiB by seconds since the writes began: {}\nSocket.IO summary: {}",
        stall_samples.last().map(|(at, _)| *at).unwrap_or_default(),
        timeline.join(" "),
        script
            .last_line("summary ")
            .unwrap_or_else(|| "none".into())
    );

    // 5. The stalled gRPC watcher reads again: what was in flight, then RESOURCE_EXHAUSTED.
    let stalled = read_until(&mut stalled_stream, Duration::from_secs(30), |_| false).await;
    let healthy = healthy.await.expect("healthy watcher task");

    // 6. The healthy gRPC watcher saw the warm-up entry, then every write in order.
    let healthy_ids = healthy.identifiers();
    assert_eq!(
        healthy_ids.len(),
        EVENT_COUNT + 1,
        "healthy watcher changes (error {:?})",
        healthy.error
    );
    assert_eq!(healthy_ids[1..], commit_order[..], "healthy watcher order");
    let expected: Vec<String> = healthy_ids.clone();

    // 7. The stalled gRPC watcher: a gap-free prefix, then RESOURCE_EXHAUSTED with its last cursor.
    let stalled_ids = stalled.identifiers();
    eprintln!(
        "stalled gRPC watcher: {} changes before its stream ended with {:?}",
        stalled_ids.len(),
        stalled
            .error
            .as_ref()
            .map(|s| (s.code(), s.message().to_string(), s.metadata().clone()))
    );
    assert_eq!(
        stalled_ids[..],
        expected[..stalled_ids.len().min(expected.len())],
        "stalled watcher changes are not a prefix of the commit order"
    );
    let status = stalled.error.unwrap_or_else(|| {
        panic!(
            "the stalled watcher's stream did not fail (ended: {}, {} of {} changes)",
            stalled.ended,
            stalled_ids.len(),
            expected.len()
        )
    });
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "stalled watcher status: {status:?}"
    );
    let last_cursor = metadata_text(&status, LAST_CURSOR_KEY);
    assert_eq!(
        last_cursor, stalled.last_cursor,
        "`{LAST_CURSOR_KEY}` is not the cursor of the last message received"
    );
    assert!(
        stalled_ids.len() < expected.len(),
        "the stalled watcher was ended although it had everything"
    );

    // 8. Watching again from that cursor delivers exactly the rest.
    let resume_from = last_cursor.expect("RESOURCE_EXHAUSTED carries a last cursor");
    let mut resumed_client = connect(&server.grpc).await;
    let mut resumed_stream = watch(&mut resumed_client, &token, &["entries"], &resume_from)
        .await
        .expect("WatchChanges from the last cursor");
    let rest = expected.len() - stalled_ids.len();
    let resumed = read_until(&mut resumed_stream, Duration::from_secs(30), |read| {
        read.changes.len() >= rest
    })
    .await;
    let combined: Vec<String> = stalled_ids
        .iter()
        .cloned()
        .chain(resumed.identifiers())
        .collect();
    assert_eq!(
        combined, expected,
        "stalled then resumed watcher (error {:?})",
        resumed.error
    );

    // 9. The Socket.IO checks passed, and memory stayed bounded while consumers stalled.
    assert_script_passed(&script, node_code, &server);
    let growth = stall_peak_kib.saturating_sub(baseline_kib);
    assert!(
        growth < RSS_GROWTH_LIMIT_KIB,
        "server VmRSS grew by {growth} KiB while consumers stalled (from {baseline_kib} to {stall_peak_kib}), \
         more than {RSS_GROWTH_LIMIT_KIB} KiB"
    );
}

/// A socket that stops reading only while one burst of events is written must
/// still never miss an event silently: it receives them all, or a gap-free prefix
/// and a disconnect. It reads again before the Engine.IO heartbeat (a ping every
/// 25 s by default in socketioxide 0.18) could close its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn briefly_stalled_socket_misses_nothing() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let server = Nightjar::start();
    let token = server.subject("slow-admin", &["admin"]);
    let temp = tempfile::tempdir().expect("create temp dir");
    let commit_order_file = temp.path().join("commit-order.json");
    let mut script = start_socket_clients(
        &server,
        &token,
        BRIEF_EVENT_COUNT,
        0,
        false,
        &commit_order_file,
    );

    let writer_client = connect(&server.grpc).await;
    let commit_order = write_entries(
        &writer_client,
        &token,
        BRIEF_EVENT_COUNT,
        BRIEF_PADDING_BYTES,
    )
    .await;
    publish_commit_order(&commit_order_file, &commit_order);

    let code = tokio::task::block_in_place(|| script.wait(Duration::from_secs(120)));
    eprintln!(
        "Socket.IO summary: {}",
        script
            .last_line("summary ")
            .unwrap_or_else(|| "none".into())
    );
    assert_script_passed(&script, code, &server);
}
