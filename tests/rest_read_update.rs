//! APIv3 read, PUT, PATCH and DELETE of one document: conditional requests,
//! soft and permanent deletion, immutable fields and read-only documents.

mod common;

use common::Nightjar;
use common::rest::{
    ADMIN_SUBJECT, Api, BASE_DATE, expect_error, expect_status, floor_to_seconds, http_date,
    int_field, parse_http_date,
};
use serde_json::{Value, json};

/// Builds an entry with every field that create and PUT require, dated `BASE_DATE`.
fn entry(identifier: &str, sgv: i64) -> Value {
    json!({
        "identifier": identifier,
        "type": "sgv",
        "sgv": sgv,
        "direction": "Flat",
        "date": BASE_DATE,
        "device": "dexcom",
        "app": "nightjar-tests",
    })
}

/// Starts a server with one entry `doc-1`. Returns the server, an admin client and
/// the stored entry.
async fn server_with_entry() -> (Nightjar, Api, Value) {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    api.create("entries", &entry("doc-1", 120)).await;
    let stored = api.read("entries", "doc-1").await;
    (server, api, stored)
}

#[tokio::test]
async fn read_returns_document() {
    let (_server, api, _) = server_with_entry().await;

    let reply = api.get("/api/v3/entries/doc-1").await;

    let body = expect_status(&reply, 200);
    let document = &body["result"];
    assert_eq!(document["identifier"], "doc-1");
    assert_eq!(document["sgv"], 120);
    assert_eq!(document.get("_id"), None);
    let srv_modified = int_field(document, "srvModified");
    let header = reply.header("last-modified").expect("Last-Modified header");
    assert_eq!(parse_http_date(&header), floor_to_seconds(srv_modified));
    assert_eq!(reply.header("etag"), None, "only history sets an ETag");
}

#[tokio::test]
async fn read_unknown_is_404() {
    let (_server, api, _) = server_with_entry().await;

    let reply = api.get("/api/v3/entries/no-such-document").await;

    expect_status(&reply, 404);
}

#[tokio::test]
async fn read_fields_projection() {
    let (_server, api, _) = server_with_entry().await;

    let reply = api
        .get_query("/api/v3/entries/doc-1", &[("fields", "sgv,date")])
        .await;

    let document = expect_status(&reply, 200)["result"].clone();
    assert_eq!(document["sgv"], 120);
    assert_eq!(document["date"], BASE_DATE);
    assert_eq!(document.get("direction"), None);
    assert_eq!(document.get("device"), None);
    assert_eq!(document.get("type"), None);

    let reply = api
        .get_query("/api/v3/entries/doc-1", &[("fields", "_all")])
        .await;
    let document = expect_status(&reply, 200)["result"].clone();
    assert_eq!(document["direction"], "Flat");
    assert_eq!(document["device"], "dexcom");
}

#[tokio::test]
async fn if_modified_since_gives_304() {
    let (_server, api, stored) = server_with_entry().await;
    let srv_modified = int_field(&stored, "srvModified");

    let same = http_date(srv_modified);
    let reply = api
        .get_with_headers("/api/v3/entries/doc-1", &[("if-modified-since", &same)])
        .await;
    assert_eq!(
        reply.status, 304,
        "not modified since its own second: {}",
        reply.body
    );
    assert!(reply.body.is_empty(), "a 304 has no body");

    let later = http_date(srv_modified + 3_600_000);
    let reply = api
        .get_with_headers("/api/v3/entries/doc-1", &[("if-modified-since", &later)])
        .await;
    assert_eq!(
        reply.status, 304,
        "not modified since a later time: {}",
        reply.body
    );

    let earlier = http_date(srv_modified - 3_600_000);
    let reply = api
        .get_with_headers("/api/v3/entries/doc-1", &[("if-modified-since", &earlier)])
        .await;
    let body = expect_status(&reply, 200);
    assert_eq!(body["result"]["identifier"], "doc-1");
}

#[tokio::test]
async fn soft_delete_then_read_is_410() {
    let (_server, api, stored) = server_with_entry().await;

    let reply = api.delete("/api/v3/entries/doc-1").await;
    expect_status(&reply, 200);

    let reply = api.get("/api/v3/entries/doc-1").await;
    expect_status(&reply, 410);

    let history = api
        .get(&format!("/api/v3/entries/history/{BASE_DATE}"))
        .await;
    let deleted = expect_status(&history, 200)["result"][0].clone();
    assert_eq!(deleted["identifier"], "doc-1");
    assert_eq!(deleted["isValid"], false);
    assert_eq!(deleted["modifiedBy"], ADMIN_SUBJECT);
    assert!(int_field(&deleted, "srvModified") > int_field(&stored, "srvModified"));
}

#[tokio::test]
async fn permanent_delete_removes_document() {
    let (_server, api, _) = server_with_entry().await;

    let reply = api.delete("/api/v3/entries/doc-1?permanent=true").await;
    expect_status(&reply, 200);

    let reply = api.get("/api/v3/entries/doc-1").await;
    expect_status(&reply, 404);
    let history = api
        .get(&format!("/api/v3/entries/history/{BASE_DATE}"))
        .await;
    assert_eq!(expect_status(&history, 200)["result"], json!([]));
}

#[tokio::test]
async fn delete_unknown_is_404() {
    let (_server, api, _) = server_with_entry().await;

    let reply = api.delete("/api/v3/entries/no-such-document").await;
    expect_status(&reply, 404);

    let reply = api
        .delete("/api/v3/entries/no-such-document?permanent=true")
        .await;
    expect_status(&reply, 404);
}

#[tokio::test]
async fn put_replaces_document() {
    let (_server, api, stored) = server_with_entry().await;
    let mut replacement = entry("doc-1", 150);
    replacement.as_object_mut().unwrap().remove("direction");
    replacement["noise"] = json!(1);

    let reply = api.put("/api/v3/entries/doc-1", &replacement).await;

    let body = expect_status(&reply, 200);
    let last_modified = int_field(&body, "lastModified");
    assert!(last_modified > int_field(&stored, "srvModified"));
    let document = api.read("entries", "doc-1").await;
    assert_eq!(document["sgv"], 150);
    assert_eq!(document["noise"], 1);
    assert_eq!(
        document.get("direction"),
        None,
        "PUT replaces the whole document"
    );
    assert_eq!(document["srvModified"], last_modified);
    assert_eq!(document["srvCreated"], stored["srvCreated"]);
    assert_eq!(document["date"], BASE_DATE);
}

#[tokio::test]
async fn put_normalises_equal_date() {
    let (_server, api, _) = server_with_entry().await;
    let mut replacement = entry("doc-1", 130);
    replacement["date"] = json!("2018-05-03T21:40:10.088Z");

    let reply = api.put("/api/v3/entries/doc-1", &replacement).await;

    expect_status(&reply, 200);
    let document = api.read("entries", "doc-1").await;
    assert_eq!(document["date"], BASE_DATE);
    assert_eq!(document["created_at"], "2018-05-03T21:40:10.088Z");
}

/// PUT takes the identifier from the URL and ignores the body's, so a different
/// body identifier is not an immutable-field change.
#[tokio::test]
async fn put_url_identifier_wins() {
    let (_server, api, _) = server_with_entry().await;

    let reply = api
        .put("/api/v3/entries/doc-1", &entry("other-identifier", 140))
        .await;

    expect_status(&reply, 200);
    let document = api.read("entries", "doc-1").await;
    assert_eq!(document["identifier"], "doc-1");
    assert_eq!(document["sgv"], 140);
    let reply = api.get("/api/v3/entries/other-identifier").await;
    expect_status(&reply, 404);
}

#[tokio::test]
async fn put_unknown_inserts() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;

    let reply = api
        .put("/api/v3/entries/fresh", &entry("ignored", 99))
        .await;

    expect_status(&reply, 201);
    let document = api.read("entries", "fresh").await;
    assert_eq!(document["identifier"], "fresh");
    assert_eq!(document["sgv"], 99);
    assert_eq!(document["subject"], ADMIN_SUBJECT);
    assert!(document["srvCreated"].is_i64());
    assert!(document["srvModified"].is_i64());
}

#[tokio::test]
async fn put_validates_like_create() {
    let (_server, api, _) = server_with_entry().await;

    let mut no_app = entry("doc-1", 120);
    no_app.as_object_mut().unwrap().remove("app");
    let reply = api.put("/api/v3/entries/doc-1", &no_app).await;
    expect_error(&reply, 400, "Bad or missing app field");

    // On an existing document this would be an immutable-field change, so insert.
    let mut bad_offset = entry("new-doc", 120);
    bad_offset["utcOffset"] = json!(5000);
    let reply = api.put("/api/v3/entries/new-doc", &bad_offset).await;
    expect_error(&reply, 400, "Bad or missing utcOffset field");

    let mut old_date = entry("new-doc", 120);
    old_date["date"] = json!("1999-06-01T00:00:00Z");
    let reply = api.put("/api/v3/entries/new-doc", &old_date).await;
    expect_error(&reply, 400, "Bad or missing date field");
    expect_status(&api.get("/api/v3/entries/new-doc").await, 404);

    for body in [json!({}), json!([]), json!("text")] {
        let reply = api.put("/api/v3/entries/doc-1", &body).await;
        assert_eq!(reply.status, 400, "body {body}: {}", reply.body);
        expect_error(&reply, 400, "Bad or missing request body");
    }
    assert_eq!(api.read("entries", "doc-1").await["sgv"], 120);
}

#[tokio::test]
async fn put_soft_deleted_is_410() {
    let (_server, api, _) = server_with_entry().await;
    expect_status(&api.delete("/api/v3/entries/doc-1").await, 200);

    let reply = api.put("/api/v3/entries/doc-1", &entry("doc-1", 160)).await;

    expect_status(&reply, 410);
}

#[tokio::test]
async fn put_if_unmodified_since() {
    let (_server, api, stored) = server_with_entry().await;
    let srv_modified = int_field(&stored, "srvModified");

    let earlier = http_date(srv_modified - 3_600_000);
    let builder = api
        .request(reqwest::Method::PUT, "/api/v3/entries/doc-1")
        .header("if-unmodified-since", earlier)
        .json(&entry("doc-1", 170));
    let reply = api.send(builder).await;
    expect_status(&reply, 412);
    assert_eq!(api.read("entries", "doc-1").await["sgv"], 120);

    let same = http_date(srv_modified);
    let builder = api
        .request(reqwest::Method::PUT, "/api/v3/entries/doc-1")
        .header("if-unmodified-since", same)
        .json(&entry("doc-1", 171));
    let reply = api.send(builder).await;
    expect_status(&reply, 200);
    assert_eq!(api.read("entries", "doc-1").await["sgv"], 171);
}

/// Immutable fields with a value that differs from the stored entry's.
fn changed_immutable_fields() -> Vec<(&'static str, Value)> {
    vec![
        ("date", json!(BASE_DATE + 60_000)),
        ("utcOffset", json!(60)),
        ("eventType", json!("Note")),
        ("device", json!("other-device")),
        ("app", json!("other-app")),
        ("srvCreated", json!(BASE_DATE)),
        ("subject", json!("someone-else")),
        ("srvModified", json!(BASE_DATE)),
        ("modifiedBy", json!("someone-else")),
        ("isValid", json!(false)),
    ]
}

#[tokio::test]
async fn put_rejects_immutable_changes() {
    let (_server, api, _) = server_with_entry().await;

    for (field, value) in changed_immutable_fields() {
        let mut replacement = entry("doc-1", 180);
        replacement[field] = value;
        let reply = api.put("/api/v3/entries/doc-1", &replacement).await;
        assert_eq!(reply.status, 400, "PUT changing {field}: {}", reply.body);
        expect_error(
            &reply,
            400,
            &format!("Field {field} cannot be modified by the client"),
        );
    }

    let document = api.read("entries", "doc-1").await;
    assert_eq!(document["sgv"], 120, "no rejected PUT was applied");
}

#[tokio::test]
async fn patch_rejects_immutable_changes() {
    let (_server, api, _) = server_with_entry().await;

    for (field, value) in changed_immutable_fields() {
        let mut patch = json!({ "sgv": 180 });
        patch[field] = value;
        let reply = api.patch("/api/v3/entries/doc-1", &patch).await;
        assert_eq!(reply.status, 400, "PATCH changing {field}: {}", reply.body);
        expect_error(
            &reply,
            400,
            &format!("Field {field} cannot be modified by the client"),
        );
    }

    let document = api.read("entries", "doc-1").await;
    assert_eq!(document["sgv"], 120, "no rejected PATCH was applied");
}

#[tokio::test]
async fn unchanged_immutable_fields_accepted() {
    let (_server, api, stored) = server_with_entry().await;

    let mut replacement = entry("doc-1", 121);
    for field in ["utcOffset", "srvCreated", "subject"] {
        replacement[field] = stored[field].clone();
    }
    let reply = api.put("/api/v3/entries/doc-1", &replacement).await;
    expect_status(&reply, 200);

    let patch = json!({
        "sgv": 122,
        "date": BASE_DATE,
        "device": "dexcom",
        "app": "nightjar-tests",
        "utcOffset": stored["utcOffset"],
    });
    let reply = api.patch("/api/v3/entries/doc-1", &patch).await;
    expect_status(&reply, 200);
    assert_eq!(api.read("entries", "doc-1").await["sgv"], 122);
}

#[tokio::test]
async fn patch_merges_fields() {
    let (_server, api, stored) = server_with_entry().await;

    let reply = api
        .patch(
            "/api/v3/entries/doc-1",
            &json!({ "sgv": 133, "noise": 2, "meta": { "source": "patch" } }),
        )
        .await;

    expect_status(&reply, 200);
    let document = api.read("entries", "doc-1").await;
    assert_eq!(document["sgv"], 133);
    assert_eq!(document["noise"], 2);
    assert_eq!(document["meta"]["source"], "patch");
    assert_eq!(
        document["direction"], "Flat",
        "fields absent from the patch are kept"
    );
    assert_eq!(document["device"], "dexcom");
    assert_eq!(document["modifiedBy"], ADMIN_SUBJECT);
    assert_eq!(document["srvCreated"], stored["srvCreated"]);
    assert!(int_field(&document, "srvModified") > int_field(&stored, "srvModified"));
}

#[tokio::test]
async fn patch_empty_body_is_400() {
    let (_server, api, _) = server_with_entry().await;

    let reply = api.patch("/api/v3/entries/doc-1", &json!({})).await;
    expect_error(&reply, 400, "Bad or missing request body");

    let reply = api
        .send_raw(reqwest::Method::PATCH, "/api/v3/entries/doc-1", Vec::new())
        .await;
    expect_error(&reply, 400, "Bad or missing request body");
}

#[tokio::test]
async fn patch_unknown_is_404() {
    let (_server, api, _) = server_with_entry().await;

    let reply = api
        .patch("/api/v3/entries/no-such-document", &json!({ "sgv": 1 }))
        .await;

    expect_status(&reply, 404);
    let reply = api.get("/api/v3/entries/no-such-document").await;
    expect_status(&reply, 404);
}

#[tokio::test]
async fn patch_soft_deleted_is_410() {
    let (_server, api, _) = server_with_entry().await;
    expect_status(&api.delete("/api/v3/entries/doc-1").await, 200);

    let reply = api
        .patch("/api/v3/entries/doc-1", &json!({ "sgv": 1 }))
        .await;

    expect_status(&reply, 410);
}

#[tokio::test]
async fn patch_if_unmodified_since() {
    let (_server, api, stored) = server_with_entry().await;
    let earlier = http_date(int_field(&stored, "srvModified") - 3_600_000);

    let builder = api
        .request(reqwest::Method::PATCH, "/api/v3/entries/doc-1")
        .header("if-unmodified-since", earlier)
        .json(&json!({ "sgv": 1 }));
    let reply = api.send(builder).await;

    expect_status(&reply, 412);
    assert_eq!(api.read("entries", "doc-1").await["sgv"], 120);
}

/// Nightscout's APIv3 checks immutable fields before it validates values, so an
/// invalid value for an immutable field is reported as a change of that field.
#[tokio::test]
async fn patch_invalid_immutable_value() {
    let (_server, api, _) = server_with_entry().await;

    let reply = api
        .patch("/api/v3/entries/doc-1", &json!({ "app": "" }))
        .await;
    expect_error(&reply, 400, "Field app cannot be modified by the client");

    let reply = api
        .patch("/api/v3/entries/doc-1", &json!({ "utcOffset": 2000 }))
        .await;
    expect_error(
        &reply,
        400,
        "Field utcOffset cannot be modified by the client",
    );

    // PATCH does not normalise dates, so an ISO string for the same instant is a change.
    let reply = api
        .patch(
            "/api/v3/entries/doc-1",
            &json!({ "date": "2018-05-03T21:40:10.088Z" }),
        )
        .await;
    expect_error(&reply, 400, "Field date cannot be modified by the client");

    assert_eq!(api.read("entries", "doc-1").await["sgv"], 120);
}

#[tokio::test]
async fn read_only_documents_are_422() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;

    for flag in ["isReadOnly", "readOnly", "readonly"] {
        let identifier = format!("locked-{flag}");
        let mut document = entry(&identifier, 100);
        document[flag] = json!(true);
        api.create("entries", &document).await;
        let path = format!("/api/v3/entries/{identifier}");

        let reply = api.put(&path, &document).await;
        assert_eq!(reply.status, 422, "PUT with {flag}: {}", reply.body);
        expect_error(&reply, 422, "Trying to modify read-only document");

        let reply = api.patch(&path, &json!({ "sgv": 1 })).await;
        assert_eq!(reply.status, 422, "PATCH with {flag}: {}", reply.body);
        expect_error(&reply, 422, "Trying to modify read-only document");

        let reply = api.delete(&path).await;
        assert_eq!(reply.status, 422, "DELETE with {flag}: {}", reply.body);
        expect_error(&reply, 422, "Trying to modify read-only document");

        let reply = api.delete(&format!("{path}?permanent=true")).await;
        assert_eq!(
            reply.status, 422,
            "permanent DELETE with {flag}: {}",
            reply.body
        );
        expect_error(&reply, 422, "Trying to modify read-only document");

        assert_eq!(api.read("entries", &identifier).await["sgv"], 100);
    }
}

#[tokio::test]
async fn read_only_false_is_writable() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let mut document = entry("unlocked", 100);
    document["isReadOnly"] = json!(false);
    api.create("entries", &document).await;

    let reply = api
        .patch("/api/v3/entries/unlocked", &json!({ "sgv": 101 }))
        .await;

    expect_status(&reply, 200);
    assert_eq!(api.read("entries", "unlocked").await["sgv"], 101);
}

#[tokio::test]
async fn patch_duration_updates_endmills() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let treatment = json!({
        "identifier": "basal",
        "eventType": "Temp Basal",
        "duration": 30,
        "absolute": 0.5,
        "created_at": "2018-05-03T21:40:10.088Z",
        "app": "nightjar-tests",
    });
    api.create("treatments", &treatment).await;

    let reply = api
        .patch("/api/v3/treatments/basal", &json!({ "duration": 60 }))
        .await;

    expect_status(&reply, 200);
    let stored = api.read("treatments", "basal").await;
    assert_eq!(stored["duration"], 60);
    assert_eq!(stored["endmills"], BASE_DATE + 60 * 60_000);
}
