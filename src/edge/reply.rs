//! APIv3 HTTP replies: the `{status, ...}` envelope, errors with their exact
//! messages, and the metadata every call to core carries.

use std::net::SocketAddr;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use nightjar_apiv3::ApiError;
use serde_json::{Map, Value, json};
use tonic::metadata::MetadataValue;
use tracing::{debug, warn};

/// Path parameters, like axum's `Path`, whose rejection (a segment that is not
/// valid percent-encoded UTF-8, say) is an APIv3 JSON error instead of plain text.
pub struct ApiPath<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Response> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(error_reply(&ApiError::new(
                nightjar_apiv3::ErrorKind::BadRequest,
                rejection.body_text(),
            ))),
        }
    }
}

/// Builds a JSON reply with `status` set to the HTTP status and `fields` added.
pub fn json_reply(status: u16, fields: Value) -> Response {
    let mut body = Map::new();
    body.insert("status".into(), status.into());
    if let Value::Object(extra) = fields {
        body.extend(extra);
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        Value::Object(body).to_string(),
    )
        .into_response()
}

/// Builds the reply for an APIv3 error; an empty message is left out.
pub fn error_reply(error: &ApiError) -> Response {
    let status = error.kind.http_status();
    if status >= 500 {
        warn!(status, message = error.message, "request failed");
    } else {
        debug!(status, message = error.message, "request rejected");
    }
    if error.message.is_empty() {
        json_reply(status, json!({}))
    } else {
        json_reply(status, json!({ "message": error.message }))
    }
}

/// Converts a status returned by core into the APIv3 error reply.
pub fn status_reply(status: &tonic::Status) -> Response {
    error_reply(&crate::proto::api_error_from_status(status))
}

/// Wraps `message` in a gRPC request carrying the caller's credential, IP and a request id.
pub fn to_core<T>(
    message: T,
    headers: &HeaderMap,
    query_token: Option<&str>,
    peer: SocketAddr,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();

    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| query_token.map(|token| format!("Bearer {token}")));
    if let Some(value) = authorization
        .map(bounded_credential)
        .and_then(|a| MetadataValue::try_from(a).ok())
    {
        metadata.insert("authorization", value);
    }
    metadata.insert(
        crate::core::auth::JWT_ONLY_KEY,
        MetadataValue::from_static("1"),
    );
    crate::core::forwarded::forward_client_address(metadata, peer.ip());
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(new_request_id);
    if let Ok(value) = MetadataValue::try_from(request_id) {
        metadata.insert("x-request-id", value);
    }
    request
}

/// Maximum credential length forwarded to core, in bytes; JWTs and access tokens are far
/// shorter. Longer ones are replaced by a placeholder that core rejects as a bad
/// credential, so an oversized header never reaches the shared gRPC connection.
pub const MAX_CREDENTIAL_BYTES: usize = 4096;

/// Returns `credential`, or an invalid placeholder when it is too long.
pub fn bounded_credential(credential: String) -> String {
    if credential.len() <= MAX_CREDENTIAL_BYTES {
        credential
    } else {
        "Bearer oversized-credential".to_string()
    }
}

/// Returns the request's `x-request-id`, setting a new one when it is missing or
/// longer than 128 bytes.
pub fn ensure_request_id(headers: &mut HeaderMap) -> String {
    let given = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128);
    if let Some(id) = given {
        return id.to_string();
    }
    let id = new_request_id();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert("x-request-id", value);
    }
    id
}

fn new_request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Formats epoch milliseconds as an HTTP date (`Last-Modified`).
pub fn http_date(epoch_ms: i64) -> HeaderValue {
    let text = chrono::DateTime::from_timestamp_millis(epoch_ms)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    HeaderValue::from_str(&text)
        .unwrap_or(HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

/// Parses a date header (HTTP date, ISO 8601 or epoch) into epoch milliseconds.
pub fn header_date(headers: &HeaderMap, name: header::HeaderName) -> Option<i64> {
    let text = headers.get(name)?.to_str().ok()?.trim();
    chrono::DateTime::parse_from_rfc2822(text)
        .map(|d| d.timestamp_millis())
        .ok()
        .or_else(|| nightjar_apiv3::date::parse_timestamp_text(text))
}
