//! Cursors older than the change retention: WatchChanges fails with OUT_OF_RANGE
//! and the trailing metadata `nightjar-oldest-cursor`, a client resyncs through
//! REST history and watches on from that oldest cursor, and a Socket.IO
//! `subscribe` with such a cursor is acknowledged with `historyLost: true`.
//!
//! Pruning runs when core starts, so each test writes changes, restarts the
//! server with a short retention and then resumes from an old cursor.

mod client_scripts;
mod common;
mod stream_support;

use std::time::{Duration, Instant};

use client_scripts::{js_dir, require_node_modules, run_script};
use common::Nightjar;
use common::rest::{Api, BASE_DATE, expect_status, identifiers, int_field};
use serde_json::json;
use stream_support::proto::GetCursorResponse;
use stream_support::proto::storage_client::StorageClient;
use stream_support::{
    OLDEST_CURSOR_KEY, connect, get_cursor, metadata_text, operation_name, read_until, watch,
};
use tonic::Code;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(10);

/// An entry written by a test, with what the server acknowledged and the cursor of its change.
struct Written {
    identifier: String,
    last_modified: i64,
    cursor: String,
}

/// Creates `count` entries one after another and returns them with the cursors of their changes.
async fn write_entries(
    api: &Api,
    client: &mut StorageClient<Channel>,
    token: &str,
    first_sgv: i64,
    count: usize,
) -> Vec<Written> {
    let start = get_cursor(client, token).await.cursor;
    let mut stream = watch(client, token, &["entries"], &start)
        .await
        .expect("WatchChanges from the head cursor");

    let mut acknowledged = Vec::new();
    for i in 0..count as i64 {
        let document = json!({
            "type": "sgv",
            "sgv": first_sgv + i,
            "date": BASE_DATE + (first_sgv + i) * 60_000,
            "device": "retention-test",
            "app": "nightjar-tests",
        });
        let reply = api.post("/api/v3/entries", &document).await;
        let body = expect_status(&reply, 201);
        acknowledged.push((
            body["identifier"].as_str().expect("identifier").to_string(),
            int_field(&body, "lastModified"),
        ));
    }

    let read = read_until(&mut stream, WAIT, |read| read.changes.len() >= count).await;
    assert_eq!(
        read.identifiers(),
        acknowledged
            .iter()
            .map(|(id, _)| id.clone())
            .collect::<Vec<_>>(),
        "changes of the writes, in write order (error: {:?})",
        read.error
    );
    read.changes
        .into_iter()
        .zip(acknowledged)
        .map(|(change, (identifier, last_modified))| Written {
            identifier,
            last_modified,
            cursor: change.cursor,
        })
        .collect()
}

/// Polls GetCursor until `oldest_cursor` differs from `before`, because pruning at
/// start may finish after core prints its listening line.
async fn wait_for_pruning(
    client: &mut StorageClient<Channel>,
    token: &str,
    before: &str,
) -> GetCursorResponse {
    let deadline = Instant::now() + WAIT;
    loop {
        let cursors = get_cursor(client, token).await;
        if cursors.oldest_cursor != before || Instant::now() > deadline {
            return cursors;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that watching from `cursor` fails with OUT_OF_RANGE carrying `oldest`.
async fn assert_out_of_range(
    client: &mut StorageClient<Channel>,
    token: &str,
    cursor: &str,
    oldest: &str,
    context: &str,
) {
    let status = match watch(client, token, &["entries"], cursor).await {
        Ok(mut stream) => {
            // Some servers report the failure as the first stream item.
            match stream.message().await {
                Err(status) => status,
                Ok(message) => panic!(
                    "{context}: WatchChanges from pruned cursor {cursor} delivered {message:?} instead of OUT_OF_RANGE"
                ),
            }
        }
        Err(status) => status,
    };
    assert_eq!(
        status.code(),
        Code::OutOfRange,
        "{context}: WatchChanges from pruned cursor {cursor}: {status:?}"
    );
    assert_eq!(
        metadata_text(&status, OLDEST_CURSOR_KEY).as_deref(),
        Some(oldest),
        "{context}: `{OLDEST_CURSOR_KEY}` of OUT_OF_RANGE (metadata {:?})",
        status.metadata()
    );
}

fn run_history_lost_script(server: &Nightjar, token: &str, pruned_cursor: &str, client: &str) {
    let dir = js_dir();
    require_node_modules(&dir);
    let run = run_script(
        "node",
        &["stream_history_lost.mjs"],
        &dir,
        &[
            ("NIGHTJAR_URL", &server.http),
            ("SOCKET_IO_CLIENT", client),
            ("ADMIN_TOKEN", token),
            ("PRUNED_CURSOR", pruned_cursor),
        ],
    );
    let log = server.log.lock().unwrap().clone();
    run.assert_success(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_retention_out_of_range_then_resync() {
    // 1. Ten changes with their cursors, all retained under the default retention.
    let mut server = Nightjar::start();
    let token = server.subject("retention-admin", &["admin"]);
    let api = Api::with_token(&server, &token).await;
    let mut client = connect(&server.grpc).await;
    let oldest_before = get_cursor(&mut client, &token).await.oldest_cursor;
    let written = write_entries(&api, &mut client, &token, 100, 10).await;
    let head_before = get_cursor(&mut client, &token).await.cursor;
    assert_eq!(
        head_before, written[9].cursor,
        "GetCursor head after the writes"
    );

    // 2. Restart keeping two change records.
    server.restart_with_env(&[("NIGHTJAR_CHANGE_RETENTION_COUNT", "2")]);
    let api = api.rebase(&server);
    let mut client = connect(&server.grpc).await;
    let cursors = wait_for_pruning(&mut client, &token, &oldest_before).await;
    assert_ne!(
        cursors.oldest_cursor, oldest_before,
        "GetCursor oldest_cursor did not move after a restart with NIGHTJAR_CHANGE_RETENTION_COUNT=2"
    );
    assert_eq!(
        cursors.cursor, head_before,
        "GetCursor head after the restart"
    );

    // 3. Cursors whose next change was pruned are out of range; the metadata names the oldest.
    let oldest = cursors.oldest_cursor.clone();
    for (index, entry) in written.iter().enumerate().take(7) {
        let context = format!("cursor of write {}", index + 1);
        assert_out_of_range(&mut client, &token, &entry.cursor, &oldest, &context).await;
    }

    // 4. Watching from the oldest cursor replays the two retained changes, then live ones.
    let mut stream = watch(&mut client, &token, &["entries"], &oldest)
        .await
        .unwrap_or_else(|status| {
            panic!("WatchChanges from the oldest cursor {oldest}: {status:?}")
        });
    let retained = read_until(&mut stream, WAIT, |read| read.changes.len() >= 2).await;
    let expected_retained: Vec<String> =
        written[8..].iter().map(|w| w.identifier.clone()).collect();
    assert_eq!(
        retained.identifiers(),
        expected_retained,
        "changes retained with count 2"
    );
    assert_eq!(
        retained
            .changes
            .iter()
            .map(operation_name)
            .collect::<Vec<_>>(),
        ["create", "create"],
        "operations of the retained changes"
    );

    // 5. Resync: history after the last change the client saw before losing its place.
    let last_seen = &written[0];
    let reply = api
        .get(&format!(
            "/api/v3/entries/history/{}",
            last_seen.last_modified
        ))
        .await;
    let body = expect_status(&reply, 200);
    let history = body["result"]
        .as_array()
        .expect("history result is an array")
        .clone();
    let expected_history: Vec<String> = written[1..].iter().map(|w| w.identifier.clone()).collect();
    assert_eq!(
        identifiers(&history),
        expected_history,
        "history after the last change seen"
    );

    // 6. The stream from the oldest cursor goes on with live changes.
    let live = api
        .create(
            "entries",
            &json!({ "type": "sgv", "sgv": 200, "date": BASE_DATE + 200 * 60_000, "app": "nightjar-tests" }),
        )
        .await;
    let next = read_until(&mut stream, WAIT, |read| !read.changes.is_empty()).await;
    assert_eq!(
        next.identifiers(),
        std::slice::from_ref(&live),
        "live change after the retained ones"
    );

    // 7. Socket.IO clients with a pruned cursor learn that their history is lost.
    let pruned = written[0].cursor.clone();
    let server_for_script = &server;
    tokio::task::block_in_place(|| {
        run_history_lost_script(server_for_script, &token, &pruned, "4");
        run_history_lost_script(server_for_script, &token, &pruned, "2");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_retention_prunes_old_changes() {
    let mut server = Nightjar::start();
    let token = server.subject("retention-admin", &["admin"]);
    let api = Api::with_token(&server, &token).await;
    let mut client = connect(&server.grpc).await;
    let oldest_before = get_cursor(&mut client, &token).await.oldest_cursor;
    let written = write_entries(&api, &mut client, &token, 300, 3).await;

    // Every change is more than a second old when core starts again with a one-second retention.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.restart_with_env(&[("NIGHTJAR_CHANGE_RETENTION", "1")]);
    let api = api.rebase(&server);
    let mut client = connect(&server.grpc).await;
    let cursors = wait_for_pruning(&mut client, &token, &oldest_before).await;
    assert_eq!(
        cursors.cursor, written[2].cursor,
        "GetCursor head after pruning every change"
    );
    assert_eq!(
        cursors.oldest_cursor, cursors.cursor,
        "with every change pruned, the oldest cursor a watch may start from is the head"
    );

    for (index, entry) in written.iter().enumerate().take(2) {
        let context = format!("cursor of write {} with a one-second retention", index + 1);
        assert_out_of_range(
            &mut client,
            &token,
            &entry.cursor,
            &cursors.oldest_cursor,
            &context,
        )
        .await;
    }

    let mut stream = watch(&mut client, &token, &["entries"], &cursors.oldest_cursor)
        .await
        .unwrap_or_else(|status| panic!("WatchChanges from the oldest cursor: {status:?}"));
    let live = api
        .create(
            "entries",
            &json!({ "type": "sgv", "sgv": 400, "date": BASE_DATE + 400 * 60_000, "app": "nightjar-tests" }),
        )
        .await;
    let read = read_until(&mut stream, WAIT, |read| !read.changes.is_empty()).await;
    assert_eq!(
        read.identifiers(),
        [live],
        "first change after the oldest cursor"
    );
}
