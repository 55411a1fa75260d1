//! Malformed and oversized requests: each is rejected with its APIv3 status
//! and message, changes no data, and leaves the server running.

mod common;

use common::Nightjar;
use common::rest::{Api, BASE_DATE, expect_error, expect_status};
use reqwest::Method;
use serde_json::{Value, json};

/// The request-body limit given to servers in this file, in bytes.
const BODY_LIMIT: usize = 4096;

/// Request bodies that are not a non-empty JSON object, with a name for failure messages.
fn bad_bodies() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("empty", b"".to_vec()),
        ("truncated object", br#"{"type": "sgv", "sgv": 1"#.to_vec()),
        ("not JSON", b"not json at all".to_vec()),
        ("trailing text", br#"{"sgv": 1} and more"#.to_vec()),
        ("single quotes", b"{'sgv': 1}".to_vec()),
        ("invalid UTF-8", b"{\"sgv\": \"\xff\xfe\"}".to_vec()),
        ("empty array", b"[]".to_vec()),
        (
            "array of documents",
            format!(r#"[{{"type":"sgv","sgv":1,"date":{BASE_DATE},"app":"nightjar-tests"}}]"#)
                .into_bytes(),
        ),
        ("empty object", b"{}".to_vec()),
        ("string", br#""text""#.to_vec()),
        ("number", b"42".to_vec()),
        ("null", b"null".to_vec()),
        ("boolean", b"true".to_vec()),
    ]
}

/// Builds a valid entry named `identifier`.
fn entry(identifier: &str, sgv: i64) -> Value {
    json!({
        "identifier": identifier,
        "type": "sgv",
        "sgv": sgv,
        "date": BASE_DATE,
        "app": "nightjar-tests",
    })
}

/// Returns every entry, including soft-deleted ones, as history lists them.
async fn all_entries(api: &Api) -> Vec<Value> {
    let reply = api
        .get(&format!("/api/v3/entries/history/{BASE_DATE}"))
        .await;
    let body = expect_status(&reply, 200);
    body["result"].as_array().expect("result array").clone()
}

/// Asserts that the server still serves `/api/v3/version`.
async fn assert_server_up(api: &Api) {
    let reply = api.get("/api/v3/version").await;
    expect_status(&reply, 200);
}

#[tokio::test]
async fn bad_create_bodies_are_400() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    api.create("entries", &entry("seed", 100)).await;
    let before = all_entries(&api).await;

    for (name, body) in bad_bodies() {
        let reply = api.send_raw(Method::POST, "/api/v3/entries", body).await;
        assert_eq!(reply.status, 400, "POST with {name} body: {}", reply.body);
        expect_error(&reply, 400, "Bad or missing request body");
    }

    assert_eq!(
        all_entries(&api).await,
        before,
        "no bad body changed the data"
    );
    assert_server_up(&api).await;
}

#[tokio::test]
async fn bad_update_bodies_are_400() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    api.create("entries", &entry("seed", 100)).await;
    let before = all_entries(&api).await;

    for (name, body) in bad_bodies() {
        let reply = api
            .send_raw(Method::PUT, "/api/v3/entries/seed", body.clone())
            .await;
        assert_eq!(reply.status, 400, "PUT with {name} body: {}", reply.body);
        expect_error(&reply, 400, "Bad or missing request body");

        let reply = api
            .send_raw(Method::PUT, "/api/v3/entries/unknown", body.clone())
            .await;
        assert_eq!(
            reply.status, 400,
            "inserting PUT with {name} body: {}",
            reply.body
        );
        expect_error(&reply, 400, "Bad or missing request body");

        let reply = api
            .send_raw(Method::PATCH, "/api/v3/entries/seed", body)
            .await;
        assert_eq!(reply.status, 400, "PATCH with {name} body: {}", reply.body);
        expect_error(&reply, 400, "Bad or missing request body");
    }

    assert_eq!(
        all_entries(&api).await,
        before,
        "no bad body changed the data"
    );
    assert_server_up(&api).await;
}

#[tokio::test]
async fn oversized_body_is_413() {
    let limit = BODY_LIMIT.to_string();
    let server = Nightjar::start_with_env(&[("NIGHTJAR_MAX_BODY_BYTES", &limit)]);
    let api = Api::admin(&server).await;
    api.create("entries", &entry("seed", 100)).await;
    let before = all_entries(&api).await;
    let mut oversized = entry("big", 100);
    oversized["notes"] = json!("x".repeat(2 * BODY_LIMIT));

    let reply = api.post("/api/v3/entries", &oversized).await;
    expect_error(&reply, 413, "Request body too large");

    oversized["identifier"] = json!("seed");
    let reply = api.put("/api/v3/entries/seed", &oversized).await;
    expect_error(&reply, 413, "Request body too large");

    let patch = json!({ "notes": "x".repeat(2 * BODY_LIMIT) });
    let reply = api.patch("/api/v3/entries/seed", &patch).await;
    expect_error(&reply, 413, "Request body too large");

    assert_eq!(
        all_entries(&api).await,
        before,
        "no oversized body changed the data"
    );
    assert_server_up(&api).await;
}

#[tokio::test]
async fn body_under_limit_is_accepted() {
    let limit = BODY_LIMIT.to_string();
    let server = Nightjar::start_with_env(&[("NIGHTJAR_MAX_BODY_BYTES", &limit)]);
    let api = Api::admin(&server).await;
    let mut document = entry("near-limit", 100);
    document["notes"] = json!("x".repeat(BODY_LIMIT / 2));

    let identifier = api.create("entries", &document).await;

    let stored = api.read("entries", &identifier).await;
    assert_eq!(stored["notes"].as_str().map(str::len), Some(BODY_LIMIT / 2));
}

#[tokio::test]
async fn oversized_body_before_auth_is_413() {
    let limit = BODY_LIMIT.to_string();
    let server = Nightjar::start_with_env(&[("NIGHTJAR_MAX_BODY_BYTES", &limit)]);
    let admin = Api::admin(&server).await;
    let anonymous = Api::anonymous(&server);
    let body = vec![b' '; 64 * BODY_LIMIT];

    let reply = anonymous
        .send_raw(Method::POST, "/api/v3/entries", body)
        .await;

    // The body is rejected either for its size or for the missing token, never stored.
    assert!(
        reply.status == 413 || reply.status == 401,
        "status {}: {}",
        reply.status,
        reply.body
    );
    assert!(admin.search("entries", &[]).await.is_empty());
    assert_server_up(&admin).await;
}

#[tokio::test]
async fn unknown_collection_is_404() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let document = entry("x", 1);

    for collection in ["foods", "activity", "users"] {
        let base = format!("/api/v3/{collection}");
        let replies = [
            ("search", api.get(&base).await),
            ("create", api.post(&base, &document).await),
            ("read", api.get(&format!("{base}/x")).await),
            ("update", api.put(&format!("{base}/x"), &document).await),
            (
                "patch",
                api.patch(&format!("{base}/x"), &json!({ "sgv": 2 })).await,
            ),
            ("delete", api.delete(&format!("{base}/x")).await),
            (
                "history",
                api.get(&format!("{base}/history/{BASE_DATE}")).await,
            ),
        ];
        for (operation, reply) in replies {
            assert_eq!(
                reply.status, 404,
                "{operation} on {collection}: {}",
                reply.body
            );
            expect_error(&reply, 404, "Bad operation or collection");
        }
    }

    assert!(api.search("entries", &[]).await.is_empty());
    assert_server_up(&api).await;
}

#[tokio::test]
async fn deeply_nested_body_keeps_server_up() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let depth = 100_000;
    let body = format!(
        r#"{{"type":"sgv","date":{BASE_DATE},"app":"nightjar-tests","nested":{}{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );

    let reply = api
        .send_raw(Method::POST, "/api/v3/entries", body.into_bytes())
        .await;

    assert!(
        reply.status < 500,
        "status {}: {}",
        reply.status,
        reply.body
    );
    assert_server_up(&api).await;
}

#[tokio::test]
async fn wrong_field_types_are_400() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;

    let cases = [
        (
            "date",
            json!({ "ms": BASE_DATE }),
            "Bad or missing date field",
        ),
        (
            "utcOffset",
            json!({ "minutes": 60 }),
            "Bad or missing utcOffset field",
        ),
        ("app", json!(["nightjar"]), "Bad or missing app field"),
        ("identifier", json!(true), "Bad or missing identifier field"),
    ];
    for (field, value, message) in cases {
        let mut document = entry("typed", 100);
        document[field] = value;
        let reply = api.post("/api/v3/entries", &document).await;
        assert_eq!(reply.status, 400, "{field}: {}", reply.body);
        expect_error(&reply, 400, message);
    }

    assert!(api.search("entries", &[]).await.is_empty());
}

#[tokio::test]
async fn unsupported_method_is_json_405() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;

    let reply = api
        .send(api.request(Method::PATCH, "/api/v3/entries"))
        .await;

    expect_error(&reply, 405, "Method not allowed");
    let allow = reply
        .headers
        .get("allow")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    assert!(allow.contains("GET"), "Allow header: {allow:?}");
    assert!(allow.contains("POST"), "Allow header: {allow:?}");
}

#[tokio::test]
async fn invalid_utf8_path_is_json_400() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;

    let reply = api.get("/api/v3/entries/%FF").await;

    let body = expect_status(&reply, 400);
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("UTF-8"),
        "message should name the bad encoding: {}",
        reply.body
    );
}

#[tokio::test]
async fn broken_chunked_body_is_400() {
    use std::io::{Read, Write};

    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let jwt = api.jwt.clone().expect("admin client has a JWT");
    let address = server.http_address();

    // "zz" is not a hexadecimal chunk size.
    let request = format!(
        "POST /api/v3/entries HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {jwt}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         zz\r\n{{}}\r\n0\r\n\r\n"
    );
    let response = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&address).expect("connect to the edge");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("set read timeout");
        stream.write_all(request.as_bytes()).expect("send request");
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
    })
    .await
    .expect("raw request task");

    let status_line = response.lines().next().unwrap_or_default();
    assert!(
        status_line.starts_with("HTTP/1.1 400"),
        "status line {status_line:?}; response: {response}"
    );
    assert!(
        response.contains("Request body cannot be read"),
        "response: {response}"
    );
    assert!(api.search("entries", &[]).await.is_empty());
}

#[tokio::test]
async fn unqueryable_field_is_400() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;

    for (key, value) in [("a\\", "1"), ("a\u{0}", "1"), ("sort", "a\\")] {
        let reply = api.get_query("/api/v3/entries", &[(key, value)]).await;
        expect_error(
            &reply,
            400,
            &format!("Invalid field name in parameter {key}"),
        );
    }
}
