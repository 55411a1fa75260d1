//! Generated gRPC types of `nightjar.storage.v1`, and the one mapping between
//! APIv3 errors and gRPC statuses used by both core and edge.

#![allow(clippy::all)]

tonic::include_proto!("nightjar.storage.v1");

/// Encoded descriptor set of the contract, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("nightjar_descriptor");

use nightjar_apiv3::{ApiError, ErrorKind as ApiErrorKind};
use prost::Message;
use tonic::{Code, Status};

/// Converts an APIv3 error into a gRPC status whose details carry the kind and message.
pub fn status_from_api_error(error: &ApiError) -> Status {
    let (code, kind) = match error.kind {
        ApiErrorKind::BadRequest => (Code::InvalidArgument, ErrorKind::BadRequest),
        ApiErrorKind::Unauthorized => (Code::Unauthenticated, ErrorKind::Unauthorized),
        ApiErrorKind::Forbidden => (Code::PermissionDenied, ErrorKind::Forbidden),
        ApiErrorKind::NotFound => (Code::NotFound, ErrorKind::NotFound),
        ApiErrorKind::NotAcceptable => (Code::InvalidArgument, ErrorKind::NotAcceptable),
        ApiErrorKind::Gone => (Code::NotFound, ErrorKind::Gone),
        ApiErrorKind::PreconditionFailed => {
            (Code::FailedPrecondition, ErrorKind::PreconditionFailed)
        }
        ApiErrorKind::PayloadTooLarge => (Code::ResourceExhausted, ErrorKind::PayloadTooLarge),
        ApiErrorKind::Unprocessable => (Code::FailedPrecondition, ErrorKind::Unprocessable),
        ApiErrorKind::Internal => (Code::Internal, ErrorKind::Internal),
        ApiErrorKind::Unavailable => (Code::Unavailable, ErrorKind::Unavailable),
    };
    let details = Error {
        kind: kind as i32,
        message: error.message.clone(),
    }
    .encode_to_vec();
    let text = if error.message.is_empty() {
        format!("{:?}", error.kind)
    } else {
        error.message.clone()
    };
    Status::with_details(code, text, details.into())
}

/// Recovers the APIv3 error from a status returned by core. A status without
/// details (core unreachable, transport failure) becomes 503 or 500.
pub fn api_error_from_status(status: &Status) -> ApiError {
    if let Ok(error) = Error::decode(status.details()) {
        if let Some(kind) = api_kind(error.kind()) {
            return ApiError::new(kind, error.message);
        }
    }
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            ApiError::new(ApiErrorKind::Unavailable, "Storage service unavailable")
        }
        _ => ApiError::internal(),
    }
}

fn api_kind(kind: ErrorKind) -> Option<ApiErrorKind> {
    Some(match kind {
        ErrorKind::Unspecified => return None,
        ErrorKind::BadRequest => ApiErrorKind::BadRequest,
        ErrorKind::Unauthorized => ApiErrorKind::Unauthorized,
        ErrorKind::Forbidden => ApiErrorKind::Forbidden,
        ErrorKind::NotFound => ApiErrorKind::NotFound,
        ErrorKind::NotAcceptable => ApiErrorKind::NotAcceptable,
        ErrorKind::Gone => ApiErrorKind::Gone,
        ErrorKind::PreconditionFailed => ApiErrorKind::PreconditionFailed,
        ErrorKind::PayloadTooLarge => ApiErrorKind::PayloadTooLarge,
        ErrorKind::Unprocessable => ApiErrorKind::Unprocessable,
        ErrorKind::Internal => ApiErrorKind::Internal,
        ErrorKind::Unavailable => ApiErrorKind::Unavailable,
    })
}
