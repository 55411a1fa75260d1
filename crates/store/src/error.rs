//! Errors of the storage layer.

use nightjar_apiv3::ApiError;
use thiserror::Error;

/// A failed storage operation.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A rule rejected the write inside its transaction; nothing was written.
    #[error("{0}")]
    Rejected(ApiError),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// MongoDB failed or could not be reached.
    #[error("MongoDB error: {0}")]
    Mongo(#[from] mongodb::error::Error),
    /// A concurrent write changed the document after the write plan had decided, so the
    /// decision was not applied. Nothing was written, and the request may be retried.
    #[error("write conflict: {0}")]
    Conflict(String),
    /// A stored value could not be decoded.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// The store is shutting down and takes no more work.
    #[error("store is closed")]
    Closed,
}
