//! The edge's service credential lets it watch every collection and the grant
//! generation, and nothing else.

mod common;
mod stream_support;

use common::{API_SECRET, Nightjar};
use stream_support::proto::{SearchRequest, WatchChangesRequest, WatchGrantsRequest};
use tonic::metadata::MetadataValue;

fn with_service<T>(message: T, credential: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = MetadataValue::try_from(credential).expect("credential is valid metadata");
    request.metadata_mut().insert("x-nightjar-service", value);
    request
}

#[tokio::test]
async fn service_credential_only_watches() {
    let server = Nightjar::start();
    let secret = nightjar_auth::ApiSecret::new(API_SECRET).expect("valid secret");
    let credential = secret.service_credential("edge");
    let mut client = stream_support::connect(&server.grpc).await;

    // Watching every collection, settings included, is allowed.
    let watch = WatchChangesRequest {
        collections: vec!["settings".into(), "entries".into()],
        cursor: String::new(),
    };
    let watched = client.watch_changes(with_service(watch, &credential)).await;
    assert!(
        watched.is_ok(),
        "watch with the service credential failed: {:?}",
        watched.err()
    );
    let grants = client
        .watch_grants(with_service(WatchGrantsRequest {}, &credential))
        .await;
    assert!(
        grants.is_ok(),
        "grant stream with the service credential failed: {:?}",
        grants.err()
    );

    // Reading data is not.
    let search = SearchRequest {
        collection: "entries".into(),
        ..Default::default()
    };
    let refused = client
        .search(with_service(search, &credential))
        .await
        .expect_err("search must be refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    // A wrong credential is rejected.
    let last = if credential.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &credential[..63]);
    let watch = WatchChangesRequest {
        collections: vec!["entries".into()],
        cursor: String::new(),
    };
    let rejected = client
        .watch_changes(with_service(watch, &wrong))
        .await
        .expect_err("wrong credential must fail");
    assert_eq!(
        rejected.code(),
        tonic::Code::Unauthenticated,
        "{rejected:?}"
    );
}
