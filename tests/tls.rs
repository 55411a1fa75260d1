//! TLS on the edge's HTTPS listener and on core's gRPC listener, with a
//! certificate generated for the test; the edge verifies core's certificate.

mod common;

use std::path::Path;

use common::Nightjar;
use serde_json::{Value, json};

/// Writes a self-signed certificate for localhost and 127.0.0.1; returns (cert, key) paths.
fn write_certificate(dir: &Path, name: &str) -> (String, String) {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("generate a certificate");
    let certificate = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    std::fs::write(&certificate, generated.cert.pem()).expect("write the certificate");
    std::fs::write(&key, generated.signing_key.serialize_pem()).expect("write the key");
    (certificate.display().to_string(), key.display().to_string())
}

fn client_trusting(certificate: &str) -> reqwest::Client {
    let pem = std::fs::read(certificate).expect("read the certificate");
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("a PEM certificate"))
        .build()
        .expect("an HTTPS client")
}

#[tokio::test]
async fn https_edge_and_tls_core() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (edge_cert, edge_key) = write_certificate(dir.path(), "edge");
    let (core_cert, core_key) = write_certificate(dir.path(), "core");
    let server = Nightjar::start_with_env(&[
        ("NIGHTJAR_TLS_CERT", &edge_cert),
        ("NIGHTJAR_TLS_KEY", &edge_key),
        ("NIGHTJAR_GRPC_TLS_CERT", &core_cert),
        ("NIGHTJAR_GRPC_TLS_KEY", &core_key),
    ]);
    assert!(
        server.http.starts_with("https://"),
        "edge is not HTTPS: {}",
        server.http
    );
    assert!(
        server.grpc.starts_with("https://"),
        "core is not TLS: {}",
        server.grpc
    );

    // The CLI reaches core over TLS once it is given the CA to trust.
    let client = client_trusting(&edge_cert);
    let token =
        server.subject_with_env("tls-admin", &["admin"], &[("NIGHTJAR_CORE_CA", &core_cert)]);

    // A write goes through the edge over HTTPS and on to core over TLS.
    let jwt: Value = client
        .get(format!(
            "{}/api/v2/authorization/request/{token}",
            server.http
        ))
        .send()
        .await
        .expect("JWT over HTTPS")
        .json()
        .await
        .expect("JWT body");
    let entry = json!({ "date": 1_733_300_000_000_i64, "sgv": 120, "type": "sgv", "device": "tls", "app": "test" });
    let created = client
        .post(format!("{}/api/v3/entries", server.http))
        .bearer_auth(jwt["token"].as_str().expect("token"))
        .json(&entry)
        .send()
        .await
        .expect("create over HTTPS");
    assert_eq!(created.status().as_u16(), 201, "{:?}", created.text().await);

    // Plain HTTP on the HTTPS port gets no APIv3 reply.
    let plain = server.http.replacen("https://", "http://", 1);
    let refused = reqwest::get(format!("{plain}/api/v3/version")).await;
    assert!(refused.is_err() || refused.unwrap().status().as_u16() != 200);

    // A client that does not trust the certificate is refused.
    let stranger = reqwest::Client::new()
        .get(format!("{}/api/v3/version", server.http))
        .send()
        .await;
    assert!(stranger.is_err(), "an untrusted certificate was accepted");
}
