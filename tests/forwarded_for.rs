//! Failed logins are charged to the client's address: the one the edge saw for
//! REST clients, the TCP peer for callers that reach core directly, whatever
//! `x-forwarded-for` those callers send.

mod common;
mod stream_support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::Nightjar;
use common::rest::{Api, Reply};
use stream_support::proto::SearchRequest;
use tonic::metadata::MetadataValue;

/// AUTH_FAIL_DELAY of the servers in this file, in milliseconds.
const STEP_MS: u64 = 800;

fn step() -> Duration {
    Duration::from_millis(STEP_MS)
}

/// Builds a REST client whose connections leave from `source` (any 127.0.0.0/8 address
/// reaches the loopback listener), sending a JWT that does not verify.
fn forger_from(server: &Nightjar, source: &str) -> Api {
    let source: IpAddr = source.parse().expect("valid source address");
    Api {
        base: server.http.clone(),
        client: reqwest::Client::builder()
            .local_address(source)
            .build()
            .expect("build HTTP client"),
        jwt: Some("not-a-jwt".to_string()),
    }
}

async fn timed_get(api: &Api) -> (Reply, Duration) {
    let started = Instant::now();
    let reply = api.get("/api/v3/entries").await;
    (reply, started.elapsed())
}

fn forged_search(forwarded_for: &str) -> tonic::Request<SearchRequest> {
    let mut request = tonic::Request::new(SearchRequest {
        collection: "entries".into(),
        ..Default::default()
    });
    let metadata = request.metadata_mut();
    metadata.insert(
        "authorization",
        MetadataValue::from_static("Bearer not-a-jwt"),
    );
    metadata.insert(
        "x-forwarded-for",
        MetadataValue::try_from(forwarded_for).expect("address is valid metadata"),
    );
    request
}

#[tokio::test]
async fn edge_forwards_each_client_address() {
    let server = Nightjar::start_with_env(&[("AUTH_FAIL_DELAY", &STEP_MS.to_string())]);
    let first = forger_from(&server, "127.0.0.2");
    let second = forger_from(&server, "127.0.0.3");

    let (reply, _) = timed_get(&first).await;
    assert_eq!(reply.status, 401, "{}", reply.body);

    // Another client address has no failure to pay for.
    let (reply, elapsed) = timed_get(&second).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert!(
        elapsed < step() / 2,
        "a client at another address waited {elapsed:?} after the first one failed"
    );

    // The failing address waits.
    let (reply, elapsed) = timed_get(&first).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert!(
        elapsed >= step() * 9 / 10,
        "the failing address waited {elapsed:?}, expected at least {:?}",
        step()
    );
}

#[tokio::test]
async fn direct_caller_cannot_pick_address() {
    let server = Nightjar::start_with_env(&[("AUTH_FAIL_DELAY", &STEP_MS.to_string())]);
    let mut client = stream_support::connect(&server.grpc).await;

    let rejected = client
        .search(forged_search("203.0.113.1"))
        .await
        .expect_err("a JWT that does not verify must be rejected");
    assert_eq!(
        rejected.code(),
        tonic::Code::Unauthenticated,
        "{rejected:?}"
    );

    // A new address in x-forwarded-for does not escape the delay: core charges
    // the TCP peer, which is the same.
    let started = Instant::now();
    let rejected = client
        .search(forged_search("203.0.113.2"))
        .await
        .expect_err("a JWT that does not verify must be rejected");
    let elapsed = started.elapsed();
    assert_eq!(
        rejected.code(),
        tonic::Code::Unauthenticated,
        "{rejected:?}"
    );
    assert!(
        elapsed >= step() * 9 / 10,
        "the second attempt waited {elapsed:?}, expected at least {:?}",
        step()
    );
}
