//! Stored documents and the write plan that core hands to the store.

use serde_json::{Map, Value};

use crate::change::Operation;

/// A document as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDocument {
    /// Address of the document: its `identifier`, or for documents written by older
    /// APIs without one, the 24-hex-digit database id.
    pub key: String,
    /// True when the body carries an `identifier` field.
    pub has_identifier: bool,
    /// The JSON object as stored.
    pub body: Map<String, Value>,
}

impl StoredDocument {
    /// Returns true unless the document was soft-deleted (`isValid: false`).
    pub fn is_valid(&self) -> bool {
        self.body.get("isValid") != Some(&Value::Bool(false))
    }
}

/// Keys by which a write finds the stored document it may replace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lookup {
    /// The identifier to match; also matches the database id of a document without
    /// identifier when it is 24 hex digits.
    pub identifier: String,
    /// Fields that must all be equal on a stored document without identifier
    /// (deduplication fallback); empty disables the fallback.
    pub fallback: Vec<(String, Value)>,
}

impl Lookup {
    /// Builds a lookup by identifier only.
    pub fn by_identifier(identifier: impl Into<String>) -> Lookup {
        Lookup {
            identifier: identifier.into(),
            fallback: Vec::new(),
        }
    }
}

/// Input of a write plan inside the transaction.
#[derive(Debug, Clone)]
pub struct WriteContext {
    /// The stored document the lookup found, if any.
    pub existing: Option<StoredDocument>,
    /// The srvModified this write must carry: strictly greater than every earlier
    /// write's in the collection.
    pub srv_modified: i64,
}

/// Decision of a write plan, applied in the same transaction as its change record.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteAction {
    /// Insert a new document; its `identifier` field becomes the key.
    Insert(Map<String, Value>),
    /// Replace the found document; the key follows the new body's `identifier`.
    Replace {
        /// The new body.
        body: Map<String, Value>,
        /// Recorded as `Update`, or `Delete` for a soft delete.
        operation: Operation,
    },
    /// Remove the found document permanently.
    Remove,
    /// Write nothing and record no change.
    Nothing,
}
