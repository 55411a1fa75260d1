//! Logs never contain API_SECRET, its SHA-1, access tokens or JWTs, even at debug
//! level and after failed authentications.

mod common;

use common::rest::{Api, expect_status};
use common::{API_SECRET, Nightjar};
use serde_json::json;
use sha1::{Digest, Sha1};

#[tokio::test]
async fn logs_hold_no_secrets() {
    let server = Nightjar::start_with_env(&[("RUST_LOG", "debug")]);
    let token = server.subject("log-check", &["admin"]);
    let api = Api::with_token(&server, &token).await;
    let jwt_reply = reqwest::get(format!(
        "{}/api/v2/authorization/request/{token}",
        server.http
    ))
    .await
    .expect("request a JWT");
    let jwt = jwt_reply
        .json::<serde_json::Value>()
        .await
        .expect("JWT body")["token"]
        .as_str()
        .expect("token field")
        .to_string();
    let secret_hash = hex::encode(Sha1::digest(API_SECRET.as_bytes()));

    // Successful and failing calls with every kind of credential.
    let entry = json!({ "date": 1_733_300_000_000_i64, "sgv": 99, "type": "sgv", "device": "log", "app": "test" });
    expect_status(&api.post("/api/v3/entries", &entry).await, 201);
    let client = reqwest::Client::new();
    let wrong_jwt = format!("{jwt}x");
    for credential in [wrong_jwt.as_str(), token.as_str(), API_SECRET] {
        let reply = client
            .get(format!("{}/api/v3/entries", server.http))
            .bearer_auth(credential)
            .send()
            .await
            .expect("search");
        assert_eq!(
            reply.status().as_u16(),
            401,
            "credential accepted as a bearer JWT"
        );
    }
    let admin = client
        .get(format!("{}/api/v2/authorization/subjects", server.http))
        .header("api-secret", &secret_hash)
        .send()
        .await
        .expect("list subjects");
    assert_eq!(admin.status().as_u16(), 200);
    let wrong_secret = client
        .get(format!("{}/api/v2/authorization/subjects", server.http))
        .header("api-secret", format!("{secret_hash}0"))
        .send()
        .await
        .expect("list subjects with a wrong secret");
    assert_eq!(wrong_secret.status().as_u16(), 401);
    server.cli(&["subject", "list"]);

    // Read the log: it must exist and mention the traffic, but no secret.
    let log = server.log.lock().unwrap().join("\n");
    assert!(
        log.contains("authentication failed"),
        "failed logins are not logged:\n{log}"
    );
    for (name, secret) in [
        ("API_SECRET", API_SECRET),
        ("SHA-1 of API_SECRET", secret_hash.as_str()),
        ("access token", token.as_str()),
        ("JWT", jwt.as_str()),
    ] {
        let leaks: Vec<&str> = log.lines().filter(|line| line.contains(secret)).collect();
        assert!(leaks.is_empty(), "the log contains the {name}: {leaks:#?}");
    }
}
