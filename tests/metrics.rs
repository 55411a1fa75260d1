//! `/metrics` on the edge: Prometheus text whose counters move with traffic.

mod common;

use common::Nightjar;
use common::rest::{Api, expect_status};
use serde_json::json;

/// Returns the value of the sample whose line starts with `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

async fn scrape(server: &Nightjar) -> String {
    let response = reqwest::get(format!("{}/metrics", server.http))
        .await
        .expect("GET /metrics");
    assert_eq!(response.status().as_u16(), 200);
    response.text().await.expect("metrics body")
}

#[tokio::test]
async fn metrics_move_after_writes() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;

    let before = scrape(&server).await;
    assert!(
        before.contains("# TYPE nightjar_http_requests_total counter"),
        "{before}"
    );

    for minute in 0..3 {
        let entry = json!({ "date": 1_733_300_000_000_i64 + minute * 60_000, "sgv": 100, "type": "sgv", "device": "metrics", "app": "test" });
        expect_status(&api.post("/api/v3/entries", &entry).await, 201);
    }
    let after = scrape(&server).await;

    let creates = sample(
        &after,
        r#"nightjar_http_requests_total{route="/api/v3/{collection}",status="201"}"#,
    );
    assert_eq!(creates, Some(3.0), "{after}");
    let core_creates = sample(
        &after,
        r#"nightjar_core_requests_total{code="0",method="Create"}"#,
    );
    assert_eq!(core_creates, Some(3.0), "{after}");
    let writes = sample(
        &after,
        r#"nightjar_store_write_seconds_count{collection="entries"}"#,
    );
    assert_eq!(writes, Some(3.0), "{after}");
    let store_bytes = sample(&after, "nightjar_store_bytes").unwrap_or(0.0);
    assert!(store_bytes > 0.0, "store size not reported: {after}");
    let subscriptions = sample(&after, r#"nightjar_subscriptions{collection="entries"}"#);
    assert_eq!(subscriptions, Some(0.0), "{after}");
}
