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
    /// A stored value could not be decoded.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// The store is shutting down and takes no more work.
    #[error("store is closed")]
    Closed,
}
