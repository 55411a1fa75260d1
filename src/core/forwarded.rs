//! Which client address core charges a failed login to.
//!
//! Failed logins delay the next attempts from the same client address. Only the
//! edge sees the client behind its connections, so core trusts the
//! `x-forwarded-for` metadata of a call only when the call also carries the
//! edge's forwarding proof. Any other caller could otherwise name a new address
//! for every attempt and never wait.

use std::net::IpAddr;

use nightjar_auth::ApiSecret;
use subtle::ConstantTimeEq;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// Metadata key of the edge's forwarding proof.
pub const FORWARDER_KEY: &str = "x-nightjar-forwarder";

/// Service name the forwarding proof is derived for. It differs from the edge's
/// watch credential, so the proof grants no access to data.
pub const FORWARDER_SERVICE: &str = "edge-forwarder";

/// Metadata key of the end client's address.
pub const FORWARDED_FOR_KEY: &str = "x-forwarded-for";

/// Metadata key that marks the edge's recheck of a subscribed socket's token
/// after grants changed. A recheck is not a login attempt, so core neither
/// delays it nor counts its failure. Core drops the key from calls without the
/// forwarding proof.
pub const RECHECK_KEY: &str = "x-nightjar-recheck";

/// Formats a client's IP as `x-forwarded-for` carries it. IPv4-mapped IPv6
/// addresses take their IPv4 form, so the edge and core name one client alike.
pub fn address_text(ip: IpAddr) -> String {
    ip.to_canonical().to_string()
}

/// Sets the `x-forwarded-for` of a call to core to the client's IP.
pub fn forward_client_address(metadata: &mut MetadataMap, ip: IpAddr) {
    if let Ok(value) = MetadataValue::try_from(address_text(ip)) {
        metadata.insert(FORWARDED_FOR_KEY, value);
    }
}

/// Returns the forwarding proof the edge sends with every call.
pub fn proof(secret: &ApiSecret) -> String {
    secret.service_credential(FORWARDER_SERVICE)
}

/// Keeps a call's `x-forwarded-for` and recheck mark when it carries
/// `expected_proof`. Otherwise drops the mark and replaces `x-forwarded-for`
/// with the TCP peer's address, written by [`address_text`] (or removes it when
/// the peer is unknown).
pub fn settle_client_address<B>(expected_proof: &str, request: &mut http::Request<B>) {
    let proven = request
        .headers()
        .get(FORWARDER_KEY)
        .is_some_and(|value| bool::from(value.as_bytes().ct_eq(expected_proof.as_bytes())));
    if proven {
        return;
    }

    let peer = request
        .extensions()
        .get::<TcpConnectInfo>()
        .or_else(|| {
            request
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .map(TlsConnectInfo::get_ref)
        })
        .and_then(TcpConnectInfo::remote_addr);
    let headers = request.headers_mut();
    headers.remove(RECHECK_KEY);
    headers.remove(FORWARDED_FOR_KEY);
    if let Some(value) =
        peer.and_then(|peer| http::HeaderValue::try_from(address_text(peer.ip())).ok())
    {
        headers.insert(FORWARDED_FOR_KEY, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&'static str, &str)], peer: Option<&str>) -> http::Request<()> {
        let mut request = http::Request::new(());
        for (name, value) in headers {
            request
                .headers_mut()
                .insert(*name, http::HeaderValue::from_str(value).unwrap());
        }
        if let Some(peer) = peer {
            request.extensions_mut().insert(TcpConnectInfo {
                local_addr: None,
                remote_addr: Some(peer.parse().unwrap()),
            });
        }
        request
    }

    fn secret() -> ApiSecret {
        ApiSecret::new("a secret of twelve or more").unwrap()
    }

    fn forwarded_for(request: &http::Request<()>) -> Option<&str> {
        request
            .headers()
            .get(FORWARDED_FOR_KEY)
            .map(|value| value.to_str().unwrap())
    }

    #[test]
    fn proven_call_keeps_forwarded_address() {
        let secret = secret();
        let proof = proof(&secret);
        let mut call = request(
            &[(FORWARDER_KEY, &proof), (FORWARDED_FOR_KEY, "203.0.113.7")],
            Some("127.0.0.1:40000"),
        );

        settle_client_address(&proof, &mut call);

        assert_eq!(forwarded_for(&call), Some("203.0.113.7"));
    }

    #[test]
    fn unproven_call_gets_peer_address() {
        let secret = secret();
        let mut call = request(
            &[(FORWARDED_FOR_KEY, "203.0.113.7")],
            Some("192.0.2.10:40000"),
        );

        settle_client_address(&proof(&secret), &mut call);

        assert_eq!(forwarded_for(&call), Some("192.0.2.10"));
    }

    #[test]
    fn unproven_call_loses_recheck_mark() {
        let secret = secret();
        let mut call = request(&[(RECHECK_KEY, "1")], Some("192.0.2.10:40000"));

        settle_client_address(&proof(&secret), &mut call);

        assert!(call.headers().get(RECHECK_KEY).is_none());
    }

    #[test]
    fn proven_call_keeps_recheck_mark() {
        let secret = secret();
        let proof = proof(&secret);
        let mut call = request(
            &[(FORWARDER_KEY, &proof), (RECHECK_KEY, "1")],
            Some("127.0.0.1:40000"),
        );

        settle_client_address(&proof, &mut call);

        assert!(call.headers().get(RECHECK_KEY).is_some());
    }

    #[test]
    fn wrong_proof_gets_peer_address() {
        let secret = secret();
        let other = ApiSecret::new("another secret, also long").unwrap();
        let mut call = request(
            &[
                (FORWARDER_KEY, &proof(&other)),
                (FORWARDED_FOR_KEY, "203.0.113.7"),
            ],
            Some("192.0.2.10:40000"),
        );

        settle_client_address(&proof(&secret), &mut call);

        assert_eq!(forwarded_for(&call), Some("192.0.2.10"));
    }

    #[test]
    fn mapped_peer_gets_ipv4_form() {
        let secret = secret();
        let mut call = request(&[], Some("[::ffff:192.0.2.10]:40000"));

        settle_client_address(&proof(&secret), &mut call);

        assert_eq!(forwarded_for(&call), Some("192.0.2.10"));
    }

    #[test]
    fn unknown_peer_drops_forwarded_address() {
        let secret = secret();
        let mut call = request(&[(FORWARDED_FOR_KEY, "203.0.113.7")], None);

        settle_client_address(&proof(&secret), &mut call);

        assert_eq!(forwarded_for(&call), None);
    }

    #[test]
    fn proof_differs_from_watch_credential() {
        let secret = secret();

        assert_ne!(
            proof(&secret),
            secret.service_credential(super::super::auth::EDGE_SERVICE)
        );
    }
}
