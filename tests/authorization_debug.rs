//! `/api/v2/authorization/debug/check/{permission}` and `/permissions`, as
//! Nightscout serves them (bare JSON, no `status` field on success).

mod common;

use common::Nightjar;
use common::rest::{Api, api_secret_hash, expect_status};
use serde_json::Value;

/// Sends a GET with optional bearer JWT and api-secret; returns status and JSON body.
async fn get(
    server: &Nightjar,
    path: &str,
    jwt: Option<&str>,
    secret: Option<&str>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(format!("{}{path}", server.http));
    if let Some(jwt) = jwt {
        request = request.bearer_auth(jwt);
    }
    if let Some(secret) = secret {
        request = request.header("api-secret", secret);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn jwt_of(server: &Nightjar, token: &str) -> String {
    let (status, body) = get(
        server,
        &format!("/api/v2/authorization/request/{token}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().expect("token").to_string()
}

#[tokio::test]
async fn debug_check_follows_grants() {
    let server = Nightjar::start_with_env(&[("AUTH_DEFAULT_ROLES", "denied")]);
    let jwt = jwt_of(&server, &server.subject("debug-reader", &["readable"])).await;

    let (status, body) = get(
        &server,
        "/api/v2/authorization/debug/check/api:entries:read",
        Some(&jwt),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["check"], true, "{body}");

    let (status, body) = get(
        &server,
        "/api/v2/authorization/debug/check/api:entries:create",
        Some(&jwt),
        None,
    )
    .await;
    assert_eq!(status, 401, "{body}");

    let (status, body) = get(
        &server,
        "/api/v2/authorization/debug/check/api:entries:read",
        None,
        None,
    )
    .await;
    assert_eq!(status, 401, "{body}");

    let secret = api_secret_hash();
    let (status, body) = get(
        &server,
        "/api/v2/authorization/debug/check/admin:api:subjects:delete",
        None,
        Some(&secret),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn permissions_lists_checked_ones() {
    let server = Nightjar::start();
    let reader = Api::subject(&server, "permissions-reader", &["readable"]).await;
    expect_status(&reader.get("/api/v3/treatments").await, 200);

    let (status, body) = get(
        &server,
        "/api/v2/authorization/permissions",
        None,
        Some(&api_secret_hash()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(names.contains(&"api:treatments:read"), "{names:?}");

    let (status, body) = get(&server, "/api/v2/authorization/permissions", None, None).await;
    assert_eq!(status, 401, "{body}");
}
