//! Token lifecycle: JWTs expire on REST, and deleting a subject ends its gRPC
//! change streams within a second.

mod common;
mod stream_support;

use std::time::{Duration, Instant};

use common::Nightjar;
use common::rest::api_secret_hash;
use serde_json::Value;

#[tokio::test]
async fn expired_jwt_is_rejected() {
    let server = Nightjar::start_with_env(&[("NIGHTJAR_JWT_LIFETIME", "1")]);
    let token = server.subject("short-lived", &["readable"]);
    let body: Value = reqwest::get(format!(
        "{}/api/v2/authorization/request/{token}",
        server.http
    ))
    .await
    .expect("request a JWT")
    .json()
    .await
    .expect("JWT body");
    let jwt = body["token"].as_str().expect("token").to_string();
    assert_eq!(
        body["exp"].as_i64().unwrap() - body["iat"].as_i64().unwrap(),
        1,
        "{body}"
    );

    let client = reqwest::Client::new();
    let fresh = client
        .get(format!("{}/api/v3/entries", server.http))
        .bearer_auth(&jwt)
        .send()
        .await
        .expect("search");
    assert_eq!(fresh.status().as_u16(), 200);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = client
        .get(format!("{}/api/v3/entries", server.http))
        .bearer_auth(&jwt)
        .send()
        .await
        .expect("search");
    assert_eq!(expired.status().as_u16(), 401);
    let reply: Value = expired.json().await.expect("error body");
    assert_eq!(reply["message"], "Bad access token or JWT");
}

#[tokio::test]
async fn deleted_subject_stream_ends() {
    let server = Nightjar::start();
    let token = server.subject("stream-victim", &["readable"]);
    let mut client = stream_support::connect(&server.grpc).await;
    let mut stream = stream_support::watch(&mut client, &token, &["entries"], "")
        .await
        .expect("open the watch");

    // Find the subject's id through the admin API, then delete it.
    let http = reqwest::Client::new();
    let subjects: Value = http
        .get(format!("{}/api/v2/authorization/subjects", server.http))
        .header("api-secret", api_secret_hash())
        .send()
        .await
        .expect("list subjects")
        .json()
        .await
        .expect("subjects body");
    let id = subjects
        .as_array()
        .expect("an array")
        .iter()
        .find(|s| s["accessToken"] == token.as_str())
        .and_then(|s| s["_id"].as_str())
        .expect("the victim's id")
        .to_string();
    let deleted = http
        .delete(format!(
            "{}/api/v2/authorization/subjects/{id}",
            server.http
        ))
        .header("api-secret", api_secret_hash())
        .send()
        .await
        .expect("delete the subject");
    assert_eq!(deleted.status().as_u16(), 200);
    let revoked_at = Instant::now();

    // The stream ends with PERMISSION_DENIED within a second.
    let outcome = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match stream.message().await {
                Ok(Some(change)) if stream_support::is_checkpoint(&change) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream was still open a second after the subject was deleted");
    let status = outcome.expect_err("the stream ended without an error");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(revoked_at.elapsed() < Duration::from_secs(1));
}
