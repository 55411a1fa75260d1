//! Durability of acknowledged writes across a clean stop and across SIGKILL
//! during a burst of concurrent writes.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Nightjar;
use common::rest::{Api, BASE_DATE, expect_status, int_field};
use serde_json::{Value, json};

/// Builds an entry named `identifier` with the reading `sgv`.
fn entry(identifier: &str, sgv: i64) -> Value {
    json!({
        "identifier": identifier,
        "type": "sgv",
        "sgv": sgv,
        "date": BASE_DATE + sgv * 1000,
        "app": "nightjar-tests",
    })
}

/// Returns every entry, soft-deleted ones included, in history order.
async fn all_entries(api: &Api) -> Vec<Value> {
    let path = format!("/api/v3/entries/history/{BASE_DATE}");
    let reply = api.get_query(&path, &[("limit", "1000")]).await;
    let body = expect_status(&reply, 200);
    body["result"].as_array().expect("result array").clone()
}

/// Runs a blocking server operation (start, stop, kill) off the async worker threads.
async fn blocking<T: Send + 'static>(operation: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(operation)
        .await
        .expect("blocking task panicked")
}

#[tokio::test]
async fn documents_survive_restart() {
    let mut server = Nightjar::start();
    let access_token = server.subject("keeper", &["admin"]);
    let api = Api::with_token(&server, &access_token).await;
    for index in 0..40 {
        api.create("entries", &entry(&format!("doc-{index:02}"), index))
            .await;
    }
    expect_status(
        &api.patch("/api/v3/entries/doc-05", &json!({ "sgv": 555 }))
            .await,
        200,
    );
    expect_status(&api.delete("/api/v3/entries/doc-06").await, 200);
    expect_status(
        &api.delete("/api/v3/entries/doc-07?permanent=true").await,
        200,
    );
    let before = all_entries(&api).await;
    let max_modified = before
        .iter()
        .map(|document| int_field(document, "srvModified"))
        .max()
        .unwrap();

    server = blocking(move || {
        server.stop();
        server.restart();
        server
    })
    .await;
    let api = api.rebase(&server);

    assert_eq!(
        all_entries(&api).await,
        before,
        "history is unchanged by the restart"
    );
    assert_eq!(api.read("entries", "doc-05").await["sgv"], 555);
    expect_status(&api.get("/api/v3/entries/doc-06").await, 410);
    expect_status(&api.get("/api/v3/entries/doc-07").await, 404);
    assert_eq!(api.search("entries", &[("limit", "1000")]).await.len(), 38);
    for index in [0, 1, 20, 39] {
        let identifier = format!("doc-{index:02}");
        assert_eq!(api.read("entries", &identifier).await["sgv"], index);
    }

    // The JWT issued before the restart is still accepted, and the access token still works.
    let fresh = Api::with_token(&server, &access_token).await;
    expect_status(&fresh.get("/api/v3/entries/doc-00").await, 200);

    let reply = api
        .post("/api/v3/entries", &entry("after-restart", 99))
        .await;
    let body = expect_status(&reply, 201);
    assert!(
        int_field(&body, "lastModified") > max_modified,
        "srvModified keeps increasing after a restart"
    );
}

#[tokio::test]
async fn acknowledged_writes_survive_kill() {
    let mut server = Nightjar::start();
    let access_token = server.subject("keeper", &["admin"]);
    let api = Api::with_token(&server, &access_token).await;
    api.create("entries", &entry("before-kill", 0)).await;
    expect_status(
        &api.patch("/api/v3/entries/before-kill", &json!({ "sgv": 7 }))
            .await,
        200,
    );

    server = blocking(move || {
        server.kill();
        server.restart();
        server
    })
    .await;
    let api = api.rebase(&server);

    let stored = api.read("entries", "before-kill").await;
    assert_eq!(stored["sgv"], 7, "the acknowledged patch survived SIGKILL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_concurrent_writes() {
    const WRITERS: i64 = 8;
    const ACKNOWLEDGED_BEFORE_KILL: usize = 60;

    let mut server = Nightjar::start();
    let access_token = server.subject("keeper", &["admin"]);
    let api = Api::with_token(&server, &access_token).await;
    let acknowledged_count = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let mut writers = tokio::task::JoinSet::new();

    // Each writer creates entries until a request fails, and returns the ones
    // acknowledged with 201.
    for writer in 0..WRITERS {
        let api = api.clone();
        let acknowledged_count = acknowledged_count.clone();
        let killed = killed.clone();
        writers.spawn(async move {
            let mut acknowledged = Vec::new();
            for index in 0..5000 {
                let identifier = format!("burst-{writer}-{index}");
                let builder = api
                    .request(reqwest::Method::POST, "/api/v3/entries")
                    .json(&entry(&identifier, writer * 10_000 + index));
                let Ok(response) = builder.send().await else {
                    break;
                };
                let status = response.status().as_u16();
                if status == 201 {
                    acknowledged.push((identifier, writer * 10_000 + index));
                    acknowledged_count.fetch_add(1, Ordering::SeqCst);
                } else if !killed.load(Ordering::SeqCst) {
                    panic!("write {identifier} before the kill got status {status}");
                }
            }
            acknowledged
        });
    }

    // Kill once enough writes were acknowledged, while the writers keep going.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged_count.load(Ordering::SeqCst) < ACKNOWLEDGED_BEFORE_KILL {
        assert!(Instant::now() < deadline, "writers made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    killed.store(true, Ordering::SeqCst);
    server = blocking(move || {
        server.kill();
        server
    })
    .await;

    let mut acknowledged = Vec::new();
    while let Some(result) = writers.join_next().await {
        acknowledged.extend(result.expect("writer task panicked"));
    }
    assert!(acknowledged.len() >= ACKNOWLEDGED_BEFORE_KILL);

    server = blocking(move || {
        server.restart();
        server
    })
    .await;
    let api = api.rebase(&server);

    for (identifier, sgv) in &acknowledged {
        let reply = api.get(&format!("/api/v3/entries/{identifier}")).await;
        assert_eq!(
            reply.status, 200,
            "acknowledged write {identifier} lost: {}",
            reply.body
        );
        assert_eq!(
            reply.json()["result"]["sgv"],
            *sgv,
            "content of {identifier}"
        );
    }
    let stored = all_entries(&api).await;
    assert!(
        stored.len() >= acknowledged.len(),
        "{} stored, {} acknowledged",
        stored.len(),
        acknowledged.len()
    );
}
