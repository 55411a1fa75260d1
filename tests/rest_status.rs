//! APIv3 service endpoints: `/version`, `/status` with the caller's
//! permission letters, and `/lastModified`.

mod common;

use common::Nightjar;
use common::rest::{
    Api, BASE_DATE, COLLECTIONS, expect_error, expect_status, int_field, iso_utc, now_ms,
};
use serde_json::{Map, Value, json};

/// Asserts that `srvDate` in `result` is within a minute of the test's clock.
#[track_caller]
fn assert_srv_date_is_now(result: &Value) {
    let srv_date = int_field(result, "srvDate");
    let now = now_ms();
    assert!(
        (srv_date - now).abs() < 60_000,
        "srvDate {srv_date} is more than a minute from {now}"
    );
}

/// Returns the `apiPermissions` map every collection has with `letters`.
fn same_letters(letters: &str) -> Value {
    let map: Map<String, Value> = COLLECTIONS
        .iter()
        .map(|collection| (collection.to_string(), json!(letters)))
        .collect();
    Value::Object(map)
}

#[tokio::test]
async fn version_needs_no_token() {
    let server = Nightjar::start();
    let api = Api::anonymous(&server);

    let reply = api.get("/api/v3/version").await;

    let body = expect_status(&reply, 200);
    let result = &body["result"];
    assert_eq!(result["version"], "15.0.7");
    assert_eq!(result["apiVersion"], "3.0.3-alpha");
    assert_srv_date_is_now(result);
    assert!(result["storage"].is_object(), "storage in {result}");
}

#[tokio::test]
async fn status_of_admin() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;

    let reply = api.get("/api/v3/status").await;

    let body = expect_status(&reply, 200);
    let result = &body["result"];
    assert_eq!(result["version"], "15.0.7");
    assert_eq!(result["apiVersion"], "3.0.3-alpha");
    assert_srv_date_is_now(result);
    assert!(
        result["storage"]["storage"].is_string(),
        "storage.storage in {result}"
    );
    assert!(
        !result["storage"]["version"].is_null(),
        "storage.version in {result}"
    );
    assert_eq!(result["apiPermissions"], same_letters("crud"));
}

#[tokio::test]
async fn status_of_readable() {
    let server = Nightjar::start();
    let api = Api::subject(&server, "reader", &["readable"]).await;

    let reply = api.get("/api/v3/status").await;

    let body = expect_status(&reply, 200);
    assert_eq!(body["result"]["apiPermissions"], same_letters("r"));
}

#[tokio::test]
async fn status_of_careportal() {
    let server = Nightjar::start();
    let api = Api::subject(&server, "nurse", &["careportal"]).await;

    let reply = api.get("/api/v3/status").await;

    // The default role `readable` adds read permission on every collection.
    let mut expected = same_letters("r");
    expected["treatments"] = json!("cr");
    let body = expect_status(&reply, 200);
    assert_eq!(body["result"]["apiPermissions"], expected);
}

/// Nightscout's APIv3 leaves collections without any letter out of `apiPermissions`.
#[tokio::test]
async fn status_without_default_roles() {
    let server = Nightjar::start_with_env(&[("AUTH_DEFAULT_ROLES", "denied")]);
    let nurse = Api::subject(&server, "nurse", &["careportal"]).await;
    let watcher = Api::subject(&server, "watcher", &["status-only"]).await;

    let reply = nurse.get("/api/v3/status").await;
    let body = expect_status(&reply, 200);
    assert_eq!(
        body["result"]["apiPermissions"],
        json!({ "treatments": "c" })
    );

    let reply = watcher.get("/api/v3/status").await;
    let body = expect_status(&reply, 200);
    assert_eq!(
        body["result"]["apiPermissions"],
        json!({}),
        "collections without letters are left out"
    );
}

#[tokio::test]
async fn status_and_last_modified_need_token() {
    let server = Nightjar::start();
    let api = Api::anonymous(&server);

    for path in ["/api/v3/status", "/api/v3/lastModified"] {
        let reply = api.get(path).await;
        assert_eq!(reply.status, 401, "{path}: {}", reply.body);
        expect_error(&reply, 401, "Missing or bad access token or JWT");
    }
}

#[tokio::test]
async fn last_modified_per_collection() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let entry = json!({ "type": "sgv", "sgv": 100, "date": BASE_DATE, "app": "nightjar-tests" });
    let entry_identifier = api.create("entries", &entry).await;
    let entry_modified = int_field(&api.read("entries", &entry_identifier).await, "srvModified");
    // A treatment dated tomorrow: its fallback date is later than its srvModified.
    let tomorrow = now_ms() + 86_400_000;
    let treatment =
        json!({ "eventType": "Note", "created_at": iso_utc(tomorrow), "app": "nightjar-tests" });
    api.create("treatments", &treatment).await;

    let reply = api.get("/api/v3/lastModified").await;

    let body = expect_status(&reply, 200);
    let result = &body["result"];
    assert_srv_date_is_now(result);
    let collections = &result["collections"];
    assert_eq!(
        collections["entries"], entry_modified,
        "max srvModified of entries"
    );
    assert_eq!(
        collections["treatments"], tomorrow,
        "max created_at of treatments"
    );
    for empty in ["devicestatus", "food", "profile", "settings"] {
        assert_eq!(
            collections.get(empty),
            None,
            "{empty} has no data: {collections}"
        );
    }
}

#[tokio::test]
async fn last_modified_only_readable_collections() {
    let server = Nightjar::start_with_env(&[("AUTH_DEFAULT_ROLES", "denied")]);
    let admin = Api::admin(&server).await;
    server.role("treatments-reader", &["api:treatments:read"]);
    let reader = Api::subject(&server, "reader", &["treatments-reader"]).await;
    let entry = json!({ "type": "sgv", "sgv": 100, "date": BASE_DATE, "app": "nightjar-tests" });
    admin.create("entries", &entry).await;
    let treatment = json!({
        "eventType": "Note",
        "created_at": "2018-05-03T21:40:10.088Z",
        "app": "nightjar-tests",
    });
    let identifier = admin.create("treatments", &treatment).await;
    let treatment_modified = int_field(&admin.read("treatments", &identifier).await, "srvModified");

    let reply = reader.get("/api/v3/lastModified").await;

    let body = expect_status(&reply, 200);
    assert_eq!(
        body["result"]["collections"],
        json!({ "treatments": treatment_modified })
    );
}
