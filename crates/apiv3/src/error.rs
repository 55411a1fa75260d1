//! The error every APIv3 rule returns: a machine-readable kind and the exact client message.

use thiserror::Error;

/// The class of an APIv3 failure; each maps to one HTTP status and one gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 400: the request is malformed or fails validation.
    BadRequest,
    /// 401: the credential is missing, unknown or expired.
    Unauthorized,
    /// 403: the subject lacks a permission.
    Forbidden,
    /// 404: unknown collection, operation or document.
    NotFound,
    /// 406: the requested output format is not supported.
    NotAcceptable,
    /// 410: the document was soft-deleted.
    Gone,
    /// 412: `If-Unmodified-Since` is older than the stored document.
    PreconditionFailed,
    /// 413: the request body is larger than the configured limit.
    PayloadTooLarge,
    /// 422: the document is read-only.
    Unprocessable,
    /// 500: an unexpected failure inside the service.
    Internal,
    /// 503: the storage service cannot be reached.
    Unavailable,
}

impl ErrorKind {
    /// Returns the HTTP status code that APIv3 answers for this kind.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::NotAcceptable => 406,
            ErrorKind::Gone => 410,
            ErrorKind::PreconditionFailed => 412,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::Unprocessable => 422,
            ErrorKind::Internal => 500,
            ErrorKind::Unavailable => 503,
        }
    }
}

/// An APIv3 failure with the message that clients see verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct ApiError {
    /// Class of the failure.
    pub kind: ErrorKind,
    /// Client-facing message, exactly as APIv3 words it.
    pub message: String,
}

impl ApiError {
    /// Builds an error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
        }
    }

    /// 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    /// 400 `Bad or missing request body`.
    pub fn bad_body() -> Self {
        Self::bad_request("Bad or missing request body")
    }

    /// 400 `Bad or missing <field> field` for a document field that fails validation.
    pub fn bad_field(field: &str) -> Self {
        Self::bad_request(format!("Bad or missing {field} field"))
    }

    /// 400 `Field <field> cannot be modified by the client`.
    pub fn immutable_field(field: &str) -> Self {
        Self::bad_request(format!("Field {field} cannot be modified by the client"))
    }

    /// 400 `Unsupported filter operator <operator>` for a search parameter `field$operator`.
    pub fn unsupported_operator(operator: &str) -> Self {
        Self::bad_request(format!("Unsupported filter operator {operator}"))
    }

    /// 400 `Invalid regular expression in parameter <parameter>` for a `field$re` value that
    /// does not compile.
    pub fn invalid_pattern(parameter: &str) -> Self {
        Self::bad_request(format!(
            "Invalid regular expression in parameter {parameter}"
        ))
    }

    /// 400 `Invalid field name in parameter <name>`.
    pub fn invalid_field(parameter: &str) -> Self {
        Self::bad_request(format!("Invalid field name in parameter {parameter}"))
    }

    /// 400 `Parameters sort and sort_desc cannot be combined`.
    pub fn sort_conflict() -> Self {
        Self::bad_request("Parameters sort and sort_desc cannot be combined")
    }

    /// 400 `Parameter limit out of tolerance`.
    pub fn bad_limit() -> Self {
        Self::bad_request("Parameter limit out of tolerance")
    }

    /// 400 `Parameter skip out of tolerance`.
    pub fn bad_skip() -> Self {
        Self::bad_request("Parameter skip out of tolerance")
    }

    /// 400 `Bad or missing Last-Modified header/parameter` for a history request.
    pub fn bad_last_modified() -> Self {
        Self::bad_request("Bad or missing Last-Modified header/parameter")
    }

    /// 401 `Missing or bad access token or JWT`: no credential at all.
    pub fn missing_credential() -> Self {
        Self::new(
            ErrorKind::Unauthorized,
            "Missing or bad access token or JWT",
        )
    }

    /// 401 `Bad access token or JWT`: a credential that is unknown, invalid or expired.
    pub fn bad_credential() -> Self {
        Self::new(ErrorKind::Unauthorized, "Bad access token or JWT")
    }

    /// 403 `Missing permission <permission>`.
    pub fn missing_permission(permission: &str) -> Self {
        Self::new(
            ErrorKind::Forbidden,
            format!("Missing permission {permission}"),
        )
    }

    /// 404 `Bad operation or collection`.
    pub fn bad_collection() -> Self {
        Self::new(ErrorKind::NotFound, "Bad operation or collection")
    }

    /// 404 for a document that does not exist (APIv3 sends no message).
    pub fn not_found() -> Self {
        Self::new(ErrorKind::NotFound, "")
    }

    /// 406 `Unsupported output format requested`.
    pub fn unsupported_format() -> Self {
        Self::new(
            ErrorKind::NotAcceptable,
            "Unsupported output format requested",
        )
    }

    /// 410 for a soft-deleted document (APIv3 sends no message).
    pub fn gone() -> Self {
        Self::new(ErrorKind::Gone, "")
    }

    /// 412 for a failed `If-Unmodified-Since` check (APIv3 sends no message).
    pub fn precondition_failed() -> Self {
        Self::new(ErrorKind::PreconditionFailed, "")
    }

    /// 422 `Trying to modify read-only document`.
    pub fn read_only() -> Self {
        Self::new(
            ErrorKind::Unprocessable,
            "Trying to modify read-only document",
        )
    }

    /// 500 with a generic message; the cause is logged where it happened.
    pub fn internal() -> Self {
        Self::new(ErrorKind::Internal, "Internal Server Error")
    }
}
