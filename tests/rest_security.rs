//! Authentication and authorization of the REST API: JWT exchange, bearer
//! checks, permissions with Shiro wildcards, access-token derivation, and the
//! admin API for subjects and roles.

mod common;

use common::Nightjar;
use common::rest::{
    ADMIN_SUBJECT, Api, BASE_DATE, expect_error, expect_status, expected_access_token,
};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Builds an entry with every field that create requires, named `identifier`.
fn entry(identifier: &str) -> Value {
    json!({
        "identifier": identifier,
        "type": "sgv",
        "sgv": 100,
        "date": BASE_DATE,
        "app": "nightjar-tests",
    })
}

/// Builds a treatment with every field that create requires, named `identifier`.
fn treatment(identifier: &str) -> Value {
    json!({
        "identifier": identifier,
        "eventType": "Note",
        "created_at": "2018-05-03T21:40:10.088Z",
        "app": "nightjar-tests",
    })
}

/// Base64url alphabet of JWT segments (RFC 4648 section 5, no padding).
const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Encodes `bytes` as unpadded base64url.
fn base64url_encode(bytes: &[u8]) -> String {
    let mut text = String::new();
    for chunk in bytes.chunks(3) {
        let block = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for index in 0..=chunk.len() {
            text.push(BASE64URL[(block >> (18 - 6 * index) & 63) as usize] as char);
        }
    }
    text
}

/// Decodes unpadded base64url, panicking on characters outside the alphabet.
fn base64url_decode(text: &str) -> Vec<u8> {
    let mut bits = 0u32;
    let mut count = 0;
    let mut bytes = Vec::new();
    for character in text.bytes() {
        let value = BASE64URL
            .iter()
            .position(|&symbol| symbol == character)
            .unwrap_or_else(|| panic!("{character} is not base64url")) as u32;
        bits = bits << 6 | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            bytes.push((bits >> count & 0xff) as u8);
        }
    }
    bytes
}

/// Splits a JWT into its header, payload and signature segments.
fn jwt_segments(jwt: &str) -> (String, String, String) {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three segments: {jwt}");
    (
        parts[0].to_string(),
        parts[1].to_string(),
        parts[2].to_string(),
    )
}

/// Decodes the JSON payload of a JWT.
fn jwt_payload(jwt: &str) -> Value {
    let (_, payload, _) = jwt_segments(jwt);
    serde_json::from_slice(&base64url_decode(&payload)).expect("JWT payload is JSON")
}

/// Returns the subjects listed by the admin API.
async fn admin_subjects(api: &Api) -> Vec<Value> {
    let reply = api
        .admin_request(Method::GET, "/api/v2/authorization/subjects", None)
        .await;
    assert_eq!(reply.status, 200, "list subjects: {}", reply.body);
    reply
        .json()
        .as_array()
        .expect("subjects are a JSON array")
        .clone()
}

/// Returns the roles listed by the admin API.
async fn admin_roles(api: &Api) -> Vec<Value> {
    let reply = api
        .admin_request(Method::GET, "/api/v2/authorization/roles", None)
        .await;
    assert_eq!(reply.status, 200, "list roles: {}", reply.body);
    reply
        .json()
        .as_array()
        .expect("roles are a JSON array")
        .clone()
}

/// Returns the listed item whose `name` is `name`, if any.
fn find_named(items: &[Value], name: &str) -> Option<Value> {
    items.iter().find(|item| item["name"] == name).cloned()
}

#[tokio::test]
async fn missing_authorization_is_401() {
    let server = Nightjar::start();
    let admin = Api::admin(&server).await;
    admin.create("entries", &entry("kept")).await;
    let api = Api::anonymous(&server);

    let replies = [
        ("search", api.get("/api/v3/entries").await),
        ("read", api.get("/api/v3/entries/kept").await),
        (
            "history",
            api.get(&format!("/api/v3/entries/history/{BASE_DATE}"))
                .await,
        ),
        ("create", api.post("/api/v3/entries", &entry("new")).await),
        (
            "update",
            api.put("/api/v3/entries/kept", &entry("kept")).await,
        ),
        (
            "patch",
            api.patch("/api/v3/entries/kept", &json!({ "sgv": 1 }))
                .await,
        ),
        ("delete", api.delete("/api/v3/entries/kept").await),
        ("test", api.get("/api/v3/test").await),
    ];

    for (operation, reply) in replies {
        assert_eq!(reply.status, 401, "{operation}: {}", reply.body);
        expect_error(&reply, 401, "Missing or bad access token or JWT");
    }
    let stored = admin.read("entries", "kept").await;
    assert_eq!(stored["sgv"], 100, "no anonymous write was applied");
    assert_eq!(admin.search("entries", &[]).await.len(), 1);
}

#[tokio::test]
async fn bad_jwt_is_401() {
    let server = Nightjar::start();
    let admin = Api::admin(&server).await;
    let reader = Api::subject(&server, "reader", &["readable"]).await;
    let admin_jwt = admin.jwt.clone().unwrap();
    let reader_jwt = reader.jwt.clone().unwrap();
    let (header, payload, signature) = jwt_segments(&reader_jwt);

    // The first signature character carries six significant bits, unlike the last.
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    let bad_signature = format!("{header}.{payload}.{flipped}{}", &signature[1..]);
    // The reader's signature over the admin's payload.
    let (_, admin_payload, _) = jwt_segments(&admin_jwt);
    let swapped_payload = format!("{header}.{admin_payload}.{signature}");
    let unsigned_header = base64url_encode(br#"{"alg":"none","typ":"JWT"}"#);
    let unsigned = format!("{unsigned_header}.{admin_payload}.");

    let cases = [
        ("not a JWT", "not-a-jwt".to_string()),
        ("altered signature", bad_signature),
        ("payload of another token", swapped_payload),
        ("alg none", unsigned),
    ];
    for (name, jwt) in cases {
        let reply = reader
            .with_jwt(&jwt)
            .post("/api/v3/entries", &entry(name))
            .await;
        assert_eq!(reply.status, 401, "{name}: {}", reply.body);
        expect_error(&reply, 401, "Bad access token or JWT");
    }
    assert!(
        admin.search("entries", &[]).await.is_empty(),
        "no forged write was applied"
    );
}

#[tokio::test]
async fn jwt_request_returns_token() {
    let server = Nightjar::start();
    let access_token = server.subject("phone", &["careportal"]);
    let api = Api::anonymous(&server);

    let reply = api.request_jwt(&access_token).await;

    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    let jwt = body["token"].as_str().expect("token string");
    assert_eq!(body["sub"], "phone");
    assert!(
        body["permissionGroups"].is_array(),
        "permissionGroups in {body}"
    );
    let issued = body["iat"].as_i64().expect("iat number");
    let expires = body["exp"].as_i64().expect("exp number");
    assert_eq!(expires - issued, 8 * 3600, "valid for 8 hours");
    let payload = jwt_payload(jwt);
    assert_eq!(payload["accessToken"], access_token.as_str());
    let (header, _, _) = jwt_segments(jwt);
    let header: Value =
        serde_json::from_slice(&base64url_decode(&header)).expect("JWT header is JSON");
    assert_eq!(header["alg"], "HS256");
}

#[tokio::test]
async fn jwt_request_unknown_token_is_401() {
    let server = Nightjar::start();
    let access_token = server.subject("phone", &["careportal"]);
    let api = Api::anonymous(&server);

    // Same name prefix, wrong digest.
    let (prefix, _) = access_token.split_once('-').expect("token has a dash");
    let reply = api.request_jwt(&format!("{prefix}-0000000000000000")).await;
    assert_eq!(reply.status, 401, "{}", reply.body);

    let reply = api.request_jwt("nobody-0123456789abcdef").await;
    assert_eq!(reply.status, 401, "{}", reply.body);
}

#[tokio::test]
async fn missing_permission_is_403() {
    let server = Nightjar::start();
    let admin = Api::admin(&server).await;
    admin.create("entries", &entry("kept")).await;
    // Only the default role `readable` applies to this subject.
    let watcher = Api::subject(&server, "watcher", &["status-only"]).await;

    let reply = watcher.post("/api/v3/entries", &entry("new")).await;
    expect_error(&reply, 403, "Missing permission api:entries:create");

    let reply = watcher.put("/api/v3/entries/kept", &entry("kept")).await;
    expect_error(&reply, 403, "Missing permission api:entries:update");

    let reply = watcher
        .patch("/api/v3/entries/kept", &json!({ "sgv": 1 }))
        .await;
    expect_error(&reply, 403, "Missing permission api:entries:update");

    let reply = watcher.delete("/api/v3/entries/kept").await;
    expect_error(&reply, 403, "Missing permission api:entries:delete");

    let reply = watcher.delete("/api/v3/entries/kept?permanent=true").await;
    expect_error(&reply, 403, "Missing permission api:entries:delete");

    assert_eq!(
        watcher.read("entries", "kept").await["sgv"],
        100,
        "reading is allowed"
    );
}

#[tokio::test]
async fn careportal_creates_treatments_only() {
    let server = Nightjar::start();
    let nurse = Api::subject(&server, "nurse", &["careportal"]).await;

    let identifier = nurse.create("treatments", &treatment("note-1")).await;
    assert_eq!(
        nurse.read("treatments", &identifier).await["subject"],
        "nurse"
    );

    let reply = nurse.post("/api/v3/entries", &entry("e")).await;
    expect_error(&reply, 403, "Missing permission api:entries:create");

    let reply = nurse
        .patch("/api/v3/treatments/note-1", &json!({ "notes": "x" }))
        .await;
    expect_error(&reply, 403, "Missing permission api:treatments:update");
}

#[tokio::test]
async fn read_permission_needed_without_default_roles() {
    let server = Nightjar::start_with_env(&[("AUTH_DEFAULT_ROLES", "denied")]);
    let admin = Api::admin(&server).await;
    admin.create("entries", &entry("kept")).await;
    let watcher = Api::subject(&server, "watcher", &["status-only"]).await;

    let replies = [
        ("search", watcher.get("/api/v3/entries").await),
        ("read", watcher.get("/api/v3/entries/kept").await),
        (
            "history",
            watcher
                .get(&format!("/api/v3/entries/history/{BASE_DATE}"))
                .await,
        ),
        ("test", watcher.get("/api/v3/test").await),
    ];

    for (operation, reply) in replies {
        assert_eq!(reply.status, 403, "{operation}: {}", reply.body);
        expect_error(&reply, 403, "Missing permission api:entries:read");
    }
}

#[tokio::test]
async fn settings_search_needs_admin_permission() {
    let server = Nightjar::start();
    let admin = Api::admin(&server).await;
    let settings = json!({
        "units": "mmol",
        "created_at": "2018-05-03T21:40:10.088Z",
        "app": "nightjar-tests",
    });
    admin.create("settings", &settings).await;
    let reader = Api::subject(&server, "reader", &["readable"]).await;

    let reply = reader.get("/api/v3/settings").await;
    expect_error(&reply, 403, "Missing permission api:settings:admin");

    let reply = reader
        .get(&format!("/api/v3/settings/history/{BASE_DATE}"))
        .await;
    expect_error(&reply, 403, "Missing permission api:settings:admin");

    assert_eq!(admin.search("settings", &[]).await.len(), 1);
}

#[tokio::test]
async fn deduplication_needs_update_permission() {
    let server = Nightjar::start();
    server.role("entries-uploader", &["api:entries:create"]);
    let uploader = Api::subject(&server, "uploader", &["entries-uploader"]).await;

    uploader.create("entries", &entry("same")).await;
    let mut again = entry("same");
    again["sgv"] = json!(200);
    let reply = uploader.post("/api/v3/entries", &again).await;

    expect_error(&reply, 403, "Missing permission api:entries:update");
    assert_eq!(uploader.read("entries", "same").await["sgv"], 100);
}

#[tokio::test]
async fn put_insert_needs_create_permission() {
    let server = Nightjar::start();
    let admin = Api::admin(&server).await;
    admin.create("entries", &entry("kept")).await;
    server.role("entries-editor", &["api:entries:update"]);
    let editor = Api::subject(&server, "editor", &["entries-editor"]).await;

    let reply = editor.put("/api/v3/entries/fresh", &entry("fresh")).await;
    expect_error(&reply, 403, "Missing permission api:entries:create");
    expect_status(&admin.get("/api/v3/entries/fresh").await, 404);

    let mut changed = entry("kept");
    changed["sgv"] = json!(150);
    let reply = editor.put("/api/v3/entries/kept", &changed).await;
    expect_status(&reply, 200);
    assert_eq!(admin.read("entries", "kept").await["sgv"], 150);
}

#[tokio::test]
async fn shiro_wildcard_permissions() {
    let server = Nightjar::start_with_env(&[("AUTH_DEFAULT_ROLES", "denied")]);
    server.role("any-create", &["api:*:create"]);
    server.role("entries-all", &["api:entries"]);
    // The CLI splits `--permissions` on commas, so this role goes through the admin API.
    let comma_role =
        json!({ "name": "two-collections", "permissions": ["api:entries,treatments:create"] });
    let reply = Api::anonymous(&server)
        .admin_request(
            Method::POST,
            "/api/v2/authorization/roles",
            Some(&comma_role),
        )
        .await;
    assert_eq!(reply.status, 200, "create role: {}", reply.body);
    let any_create = Api::subject(&server, "anycreate", &["any-create"]).await;
    let entries_all = Api::subject(&server, "entriesall", &["entries-all"]).await;
    let two = Api::subject(&server, "twocols", &["two-collections"]).await;

    // `*` as a part matches every collection.
    any_create.create("entries", &entry("any-1")).await;
    any_create.create("treatments", &treatment("any-2")).await;
    let reply = any_create.get("/api/v3/entries").await;
    expect_error(&reply, 403, "Missing permission api:entries:read");

    // A permission with fewer parts implies every action below it.
    entries_all.create("entries", &entry("all-1")).await;
    assert_eq!(entries_all.read("entries", "all-1").await["sgv"], 100);
    expect_status(
        &entries_all
            .patch("/api/v3/entries/all-1", &json!({ "sgv": 5 }))
            .await,
        200,
    );
    expect_status(&entries_all.delete("/api/v3/entries/all-1").await, 200);
    let reply = entries_all
        .post("/api/v3/treatments", &treatment("all-2"))
        .await;
    expect_error(&reply, 403, "Missing permission api:treatments:create");

    // A comma list in a part matches each listed collection.
    two.create("entries", &entry("two-1")).await;
    two.create("treatments", &treatment("two-2")).await;
    let food = json!({
        "name": "apple",
        "created_at": "2018-05-03T21:40:10.088Z",
        "app": "nightjar-tests",
    });
    let reply = two.post("/api/v3/food", &food).await;
    expect_error(&reply, 403, "Missing permission api:food:create");
}

#[tokio::test]
async fn test_endpoint_with_ci() {
    let server = Nightjar::start();
    let admin = Api::admin(&server).await;

    let reply = admin.get("/api/v3/test").await;

    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.is_empty(), "empty body: {:?}", reply.body);
}

#[tokio::test]
async fn access_token_derivation() {
    let server = Nightjar::start();
    let name = "Rest Token-Check.Name";
    let cli_token = server.subject(name, &["readable"]);
    let api = Api::anonymous(&server);

    let subject = find_named(&admin_subjects(&api).await, name).expect("subject is listed");

    let id = subject["_id"].as_str().expect("_id string");
    assert_eq!(id.len(), 24, "_id has 24 hex digits: {id}");
    assert!(
        id.chars().all(|c| c.is_ascii_hexdigit()),
        "_id is hex: {id}"
    );
    let expected = expected_access_token(name, id);
    assert!(expected.starts_with("resttokenc-"), "prefix of {expected}");
    assert_eq!(cli_token, expected);
    assert_eq!(subject["accessToken"], expected.as_str());
    assert_eq!(subject["roles"], json!(["readable"]));
}

#[tokio::test]
async fn admin_api_needs_secret() {
    let server = Nightjar::start();
    let api = Api::anonymous(&server);

    for path in [
        "/api/v2/authorization/subjects",
        "/api/v2/authorization/roles",
    ] {
        let reply = api.get(path).await;
        assert_eq!(
            reply.status, 401,
            "{path} without credential: {}",
            reply.body
        );

        let builder = api
            .request(Method::GET, path)
            .header("api-secret", "0000000000000000000000000000000000000000");
        let reply = api.send(builder).await;
        assert_eq!(
            reply.status, 401,
            "{path} with a wrong secret: {}",
            reply.body
        );
    }

    let reply = api
        .send(
            api.client
                .post(format!("{}/api/v2/authorization/subjects", api.base))
                .json(&json!({ "name": "intruder", "roles": ["admin"] })),
        )
        .await;
    assert_eq!(
        reply.status, 401,
        "create without credential: {}",
        reply.body
    );
    assert!(find_named(&admin_subjects(&api).await, "intruder").is_none());
}

#[tokio::test]
async fn admin_api_accepts_admin_jwt() {
    let server = Nightjar::start();
    let admin = Api::admin(&server).await;

    let reply = admin.get("/api/v2/authorization/subjects").await;

    assert_eq!(reply.status, 200, "{}", reply.body);
    let subjects = reply.json();
    let listed = subjects.as_array().expect("subjects array");
    assert!(
        find_named(listed, ADMIN_SUBJECT).is_some(),
        "admin subject listed: {subjects}"
    );
}

#[tokio::test]
async fn admin_api_subject_lifecycle() {
    let server = Nightjar::start();
    let api = Api::anonymous(&server);
    let admin = Api::admin(&server).await;

    // Create.
    let body = json!({ "name": "Kitchen Phone", "roles": ["careportal"], "notes": "by REST" });
    let reply = api
        .admin_request(Method::POST, "/api/v2/authorization/subjects", Some(&body))
        .await;
    assert_eq!(reply.status, 200, "create subject: {}", reply.body);
    let subject = find_named(&admin_subjects(&api).await, "Kitchen Phone")
        .expect("created subject is listed");
    let id = subject["_id"].as_str().expect("_id").to_string();
    let access_token = subject["accessToken"]
        .as_str()
        .expect("accessToken")
        .to_string();
    assert_eq!(access_token, expected_access_token("Kitchen Phone", &id));
    assert_eq!(subject["roles"], json!(["careportal"]));
    let phone = Api::with_token(&server, &access_token).await;
    phone.create("treatments", &treatment("from-phone")).await;

    // Update the roles.
    let body = json!({
        "_id": id,
        "name": "Kitchen Phone",
        "roles": ["readable"],
        "notes": "read only now",
    });
    let reply = api
        .admin_request(Method::PUT, "/api/v2/authorization/subjects", Some(&body))
        .await;
    assert_eq!(reply.status, 200, "update subject: {}", reply.body);
    let subject = find_named(&admin_subjects(&api).await, "Kitchen Phone")
        .expect("updated subject is listed");
    assert_eq!(subject["roles"], json!(["readable"]));
    assert_eq!(
        subject["accessToken"],
        access_token.as_str(),
        "the token depends on the id only"
    );
    let phone = Api::with_token(&server, &access_token).await;
    let reply = phone
        .post("/api/v3/treatments", &treatment("after-update"))
        .await;
    expect_error(&reply, 403, "Missing permission api:treatments:create");

    // Delete.
    let path = format!("/api/v2/authorization/subjects/{id}");
    let reply = api.admin_request(Method::DELETE, &path, None).await;
    assert_eq!(reply.status, 200, "delete subject: {}", reply.body);
    assert!(find_named(&admin_subjects(&api).await, "Kitchen Phone").is_none());
    let reply = api.request_jwt(&access_token).await;
    assert_eq!(
        reply.status, 401,
        "JWT for a deleted subject: {}",
        reply.body
    );
    let reply = phone.get("/api/v3/treatments").await;
    expect_error(&reply, 401, "Bad access token or JWT");

    assert_eq!(admin.search("treatments", &[]).await.len(), 1);
}

#[tokio::test]
async fn admin_api_role_lifecycle() {
    let server = Nightjar::start_with_env(&[("AUTH_DEFAULT_ROLES", "denied")]);
    let api = Api::anonymous(&server);

    // Create a role and a subject that has it.
    let body =
        json!({ "name": "uploader", "permissions": ["api:entries:create"], "notes": "by REST" });
    let reply = api
        .admin_request(Method::POST, "/api/v2/authorization/roles", Some(&body))
        .await;
    assert_eq!(reply.status, 200, "create role: {}", reply.body);
    let role = find_named(&admin_roles(&api).await, "uploader").expect("created role is listed");
    let id = role["_id"].as_str().expect("_id").to_string();
    assert_eq!(id.len(), 24, "_id has 24 hex digits: {id}");
    assert_eq!(role["permissions"], json!(["api:entries:create"]));
    let access_token = server.subject("sensor", &["uploader"]);
    let sensor = Api::with_token(&server, &access_token).await;
    sensor.create("entries", &entry("from-sensor")).await;

    // Change its permissions.
    let body = json!({
        "_id": id,
        "name": "uploader",
        "permissions": ["api:treatments:create"],
        "notes": "moved",
    });
    let reply = api
        .admin_request(Method::PUT, "/api/v2/authorization/roles", Some(&body))
        .await;
    assert_eq!(reply.status, 200, "update role: {}", reply.body);
    let role = find_named(&admin_roles(&api).await, "uploader").expect("updated role is listed");
    assert_eq!(role["permissions"], json!(["api:treatments:create"]));
    let sensor = Api::with_token(&server, &access_token).await;
    let reply = sensor.post("/api/v3/entries", &entry("after-update")).await;
    expect_error(&reply, 403, "Missing permission api:entries:create");
    sensor
        .create("treatments", &treatment("after-update"))
        .await;

    // Delete it.
    let path = format!("/api/v2/authorization/roles/{id}");
    let reply = api.admin_request(Method::DELETE, &path, None).await;
    assert_eq!(reply.status, 200, "delete role: {}", reply.body);
    assert!(find_named(&admin_roles(&api).await, "uploader").is_none());
    let sensor = Api::with_token(&server, &access_token).await;
    let reply = sensor
        .post("/api/v3/treatments", &treatment("after-delete"))
        .await;
    expect_error(&reply, 403, "Missing permission api:treatments:create");
}

/// Nightscout's `lib/authorization` responds with 401 to every refused admin API
/// request, also for a valid token that lacks the `admin:api:*` permission.
#[tokio::test]
async fn admin_api_rejects_readable_subject() {
    let server = Nightjar::start();
    let reader = Api::subject(&server, "reader", &["readable"]).await;

    for path in [
        "/api/v2/authorization/subjects",
        "/api/v2/authorization/roles",
    ] {
        let reply = reader.get(path).await;
        assert_eq!(
            reply.status, 401,
            "{path} as a readable subject: {}",
            reply.body
        );
    }
}

#[tokio::test]
async fn failed_auth_delays_next_attempt() {
    let step = Duration::from_millis(800);
    let server = Nightjar::start_with_env(&[("AUTH_FAIL_DELAY", "800")]);
    let admin = Api::admin(&server).await;
    let forged = admin.with_jwt("not-a-jwt");

    let reply = forged.get("/api/v3/entries").await;
    expect_error(&reply, 401, "Bad access token or JWT");

    let started = Instant::now();
    let reply = forged.get("/api/v3/entries").await;
    let elapsed = started.elapsed();
    expect_error(&reply, 401, "Bad access token or JWT");
    assert!(
        elapsed >= step * 9 / 10,
        "the attempt after one failure took {elapsed:?}, expected at least {step:?}"
    );
}

#[tokio::test]
async fn security_disabled_allows_anonymous() {
    let server = Nightjar::start_with_env(&[("API3_SECURITY_ENABLE", "false")]);
    let anonymous = Api::anonymous(&server);

    let identifier = anonymous.create("entries", &entry("open")).await;

    assert_eq!(anonymous.read("entries", &identifier).await["sgv"], 100);
    assert_eq!(anonymous.search("entries", &[]).await.len(), 1);
}
