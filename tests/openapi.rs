//! The OpenAPI document at `/api/v3/swagger.json` matches the routes the edge
//! serves: every documented operation exists and replies with a documented status.

mod common;

use common::Nightjar;
use common::rest::{Api, expect_status};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn documented_operations_exist() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;

    // A document for the routes that address one.
    let entry = json!({ "date": 1_733_300_000_000_i64, "sgv": 101, "type": "sgv", "device": "openapi", "app": "test" });
    let created = expect_status(&api.post("/api/v3/entries", &entry).await, 201);
    let identifier = created["identifier"]
        .as_str()
        .expect("identifier")
        .to_string();

    let spec: Value = reqwest::get(format!("{}/api/v3/swagger.json", server.http))
        .await
        .expect("GET swagger.json")
        .json()
        .await
        .expect("swagger.json is JSON");
    assert_eq!(
        spec["openapi"].as_str().map(|v| v.starts_with("3.")),
        Some(true)
    );
    let paths = spec["paths"].as_object().expect("paths object");
    assert!(paths.len() >= 8, "too few documented paths: {paths:?}");

    let mut checked = 0;
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().expect("path item") {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            let method: Method = method.to_uppercase().parse().expect("an HTTP method");
            let url = format!("/api/v3{path}")
                .replace("{collection}", "entries")
                .replace("{identifier}", &identifier)
                .replace("{lastModified}", "1700000000000");
            let body = match method.as_str() {
                "POST" | "PUT" => entry.to_string(),
                "PATCH" => json!({ "sgv": 102 }).to_string(),
                _ => String::new(),
            };
            let reply = api
                .send(
                    api.request(method.clone(), &url)
                        .header("Last-Modified", "Thu, 01 Jan 2015 00:00:00 GMT")
                        .header("Content-Type", "application/json")
                        .body(body),
                )
                .await;

            let documented: Vec<&String> = operation["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .collect();
            assert!(
                documented
                    .iter()
                    .any(|code| code.as_str() == reply.status.to_string()),
                "{method} {url} answered {} ({}), not one of the documented {documented:?}",
                reply.status,
                reply.body
            );
            assert_ne!(
                reply.status, 405,
                "{method} {url} is documented but not routed"
            );
            checked += 1;
        }
    }
    assert!(checked >= 11, "only {checked} operations checked");
}
