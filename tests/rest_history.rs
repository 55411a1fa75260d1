//! APIv3 history (`GET /api/v3/{collection}/history[/{lastModified}]`): the
//! URL and header timestamp forms, deletions, headers, and the strictly
//! increasing `srvModified` that paging by "greater than" depends on.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::Nightjar;
use common::rest::{
    Api, BASE_DATE, expect_error, expect_status, floor_to_seconds, http_date, identifiers,
    int_field, iso_utc, now_ms,
};
use serde_json::{Value, json};

/// Builds an entry named `identifier`, dated `minutes` after `BASE_DATE`.
fn entry(identifier: &str, minutes: i64) -> Value {
    json!({
        "identifier": identifier,
        "type": "sgv",
        "sgv": 100 + minutes,
        "date": BASE_DATE + minutes * 60_000,
        "app": "nightjar-tests",
    })
}

/// Creates `names` in order and returns their stored documents.
async fn create_all(api: &Api, names: &[&str]) -> Vec<Value> {
    let mut documents = Vec::new();
    for (minutes, name) in names.iter().enumerate() {
        api.create("entries", &entry(name, minutes as i64)).await;
        documents.push(api.read("entries", name).await);
    }
    documents
}

/// Sends a history request and returns its `result` array after asserting 200.
async fn history(api: &Api, path: &str) -> Vec<Value> {
    let reply = api.get(path).await;
    let body = expect_status(&reply, 200);
    body["result"]
        .as_array()
        .unwrap_or_else(|| panic!("history `result` is not an array: {}", reply.body))
        .clone()
}

#[tokio::test]
async fn url_timestamp_is_exclusive() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let created = create_all(&api, &["a", "b", "c"]).await;
    let first = int_field(&created[0], "srvModified");

    let found = history(&api, &format!("/api/v3/entries/history/{first}")).await;
    assert_eq!(identifiers(&found), ["b", "c"]);

    let found = history(&api, &format!("/api/v3/entries/history/{}", first - 1)).await;
    assert_eq!(identifiers(&found), ["a", "b", "c"]);

    let last = int_field(&created[2], "srvModified");
    let found = history(&api, &format!("/api/v3/entries/history/{last}")).await;
    assert!(found.is_empty(), "nothing after the last change: {found:?}");
}

#[tokio::test]
async fn url_timestamp_accepts_iso() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let created = create_all(&api, &["a", "b", "c"]).await;
    let first = int_field(&created[0], "srvModified");
    let last = int_field(&created[2], "srvModified");

    let found = history(
        &api,
        &format!("/api/v3/entries/history/{}", iso_utc(first - 1)),
    )
    .await;
    assert_eq!(identifiers(&found), ["a", "b", "c"]);

    let found = history(&api, &format!("/api/v3/entries/history/{}", iso_utc(last))).await;
    assert!(found.is_empty(), "nothing after the last change: {found:?}");
}

#[tokio::test]
async fn header_timestamp_is_inclusive_and_floored() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let mut created = create_all(&api, &["old"]).await;
    // The next documents fall in a later second than `old`.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    created.extend(create_all(&api, &["a", "b", "c"]).await);
    let a_modified = int_field(&created[1], "srvModified");
    let since = floor_to_seconds(a_modified);
    let expected: Vec<&str> = created
        .iter()
        .filter(|document| int_field(document, "srvModified") >= since)
        .map(|document| document["identifier"].as_str().unwrap())
        .collect();

    let reply = api
        .get_with_headers(
            "/api/v3/entries/history",
            &[("last-modified", &http_date(a_modified))],
        )
        .await;

    let body = expect_status(&reply, 200);
    let found = identifiers(body["result"].as_array().expect("result array"));
    assert_eq!(found, expected);
    assert!(
        found.iter().any(|name| name == "a"),
        "the header's own second is included"
    );
    assert!(
        !found.iter().any(|name| name == "old"),
        "earlier seconds are excluded"
    );
}

#[tokio::test]
async fn bad_timestamp_is_400() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    create_all(&api, &["a"]).await;

    let reply = api.get("/api/v3/entries/history").await;
    expect_error(&reply, 400, "Bad or missing Last-Modified header/parameter");

    let reply = api
        .get_with_headers(
            "/api/v3/entries/history",
            &[("last-modified", "not a date")],
        )
        .await;
    expect_error(&reply, 400, "Bad or missing Last-Modified header/parameter");

    let reply = api.get("/api/v3/entries/history/not-a-date").await;
    expect_error(&reply, 400, "Bad or missing Last-Modified header/parameter");
}

#[tokio::test]
async fn soft_deleted_are_included() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    create_all(&api, &["a", "b"]).await;
    expect_status(&api.delete("/api/v3/entries/a").await, 200);

    let found = history(&api, &format!("/api/v3/entries/history/{BASE_DATE}")).await;

    assert_eq!(
        identifiers(&found),
        ["b", "a"],
        "the deletion made `a` the latest change"
    );
    assert_eq!(found[1]["isValid"], false);
    assert_ne!(found[0]["isValid"], false);
}

#[tokio::test]
async fn sorted_by_srv_modified() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    create_all(&api, &["z", "m", "a", "q"]).await;
    let reply = api.patch("/api/v3/entries/m", &json!({ "sgv": 1 })).await;
    expect_status(&reply, 200);

    let found = history(&api, &format!("/api/v3/entries/history/{BASE_DATE}")).await;

    assert_eq!(identifiers(&found), ["z", "a", "q", "m"]);
    let modified: Vec<i64> = found
        .iter()
        .map(|document| int_field(document, "srvModified"))
        .collect();
    assert!(
        modified.windows(2).all(|pair| pair[0] < pair[1]),
        "srvModified ascending: {modified:?}"
    );
}

#[tokio::test]
async fn etag_and_last_modified_headers() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let created = create_all(&api, &["a", "b", "c"]).await;
    let max_modified = int_field(&created[2], "srvModified");

    let reply = api
        .get(&format!("/api/v3/entries/history/{BASE_DATE}"))
        .await;

    expect_status(&reply, 200);
    assert_eq!(reply.header("etag"), Some(format!("W/\"{max_modified}\"")));
    assert_eq!(reply.header("last-modified"), Some(http_date(max_modified)));

    let reply = api
        .get(&format!("/api/v3/entries/history/{max_modified}"))
        .await;
    let body = expect_status(&reply, 200);
    assert_eq!(body["result"], json!([]));
    assert_eq!(reply.header("etag"), None, "an empty result sets no ETag");
}

#[tokio::test]
async fn limit_applies() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let created = create_all(&api, &["a", "b", "c", "d"]).await;

    let path = format!("/api/v3/entries/history/{BASE_DATE}");
    let reply = api.get_query(&path, &[("limit", "2")]).await;

    let body = expect_status(&reply, 200);
    let found = identifiers(body["result"].as_array().expect("result array"));
    assert_eq!(found, ["a", "b"]);
    let second = int_field(&created[1], "srvModified");
    assert_eq!(reply.header("etag"), Some(format!("W/\"{second}\"")));
}

#[tokio::test]
async fn csv_by_accept() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    create_all(&api, &["a", "b"]).await;

    let path = format!("/api/v3/entries/history/{BASE_DATE}");
    let builder = api
        .request(reqwest::Method::GET, &path)
        .query(&[("fields", "identifier,sgv")])
        .header("accept", "text/csv");
    let reply = api.send(builder).await;

    assert_eq!(reply.status, 200, "{}", reply.body);
    let lines: Vec<&str> = reply
        .body
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 3, "header plus two rows:\n{}", reply.body);
    assert!(lines[0].contains("identifier"), "header row: {}", lines[0]);
}

#[tokio::test]
async fn other_collections_are_separate() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    create_all(&api, &["a"]).await;

    let found = history(&api, &format!("/api/v3/treatments/history/{BASE_DATE}")).await;

    assert!(
        found.is_empty(),
        "entries leaked into treatments history: {found:?}"
    );
}

#[tokio::test]
async fn srv_modified_increases_across_rapid_writes() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let start = now_ms();
    let mut previous = 0;

    for index in 0..60 {
        let reply = api
            .post(
                "/api/v3/entries",
                &entry(&format!("rapid-{index:02}"), index),
            )
            .await;
        let body = expect_status(&reply, 201);
        let modified = int_field(&body, "lastModified");
        assert!(
            modified > previous,
            "write {index}: srvModified {modified} after {previous}"
        );
        previous = modified;
    }

    let reply = api
        .get_query(
            &format!("/api/v3/entries/history/{}", start - 1000),
            &[("limit", "1000")],
        )
        .await;
    let body = expect_status(&reply, 200);
    let found = identifiers(body["result"].as_array().expect("result array"));
    let expected: Vec<String> = (0..60).map(|index| format!("rapid-{index:02}")).collect();
    assert_eq!(found, expected, "history lists the writes in write order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_modified_unique_under_concurrency() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let mut tasks = tokio::task::JoinSet::new();

    for task in 0..8 {
        let api = api.clone();
        tasks.spawn(async move {
            let mut modified = Vec::new();
            for index in 0..15 {
                let name = format!("task-{task}-{index}");
                let reply = api
                    .post("/api/v3/entries", &entry(&name, task * 100 + index))
                    .await;
                let body = expect_status(&reply, 201);
                modified.push(int_field(&body, "lastModified"));
            }
            modified
        });
    }
    let mut all = Vec::new();
    while let Some(result) = tasks.join_next().await {
        all.extend(result.expect("writer task panicked"));
    }

    let distinct: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), 120, "every write got its own srvModified");

    let found = history(&api, &format!("/api/v3/entries/history/{BASE_DATE}")).await;
    assert_eq!(found.len(), 120);
    let listed: Vec<i64> = found
        .iter()
        .map(|document| int_field(document, "srvModified"))
        .collect();
    assert!(
        listed.windows(2).all(|pair| pair[0] < pair[1]),
        "history srvModified strictly ascending"
    );
}

#[tokio::test]
async fn paging_by_last_srv_modified_misses_nothing() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let names: Vec<String> = (0..23).map(|index| format!("page-{index:02}")).collect();
    for (index, name) in names.iter().enumerate() {
        api.create("entries", &entry(name, index as i64)).await;
    }

    let mut seen = Vec::new();
    let mut cursor = BASE_DATE;
    for _ in 0..10 {
        let path = format!("/api/v3/entries/history/{cursor}");
        let reply = api.get_query(&path, &[("limit", "5")]).await;
        let body = expect_status(&reply, 200);
        let page = body["result"].as_array().expect("result array").clone();
        if page.is_empty() {
            break;
        }
        cursor = int_field(page.last().unwrap(), "srvModified");
        seen.extend(identifiers(&page));
    }

    assert_eq!(seen, names);
}
