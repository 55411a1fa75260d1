//! Change records: one per committed write, ordered by cursor.

use serde_json::{Map, Value};

/// Kind of change a committed write made to a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A new document was inserted.
    Create,
    /// A stored document was replaced or patched.
    Update,
    /// A document was soft-deleted or removed.
    Delete,
}

impl Operation {
    /// Returns the code stored in the change table.
    pub fn code(self) -> i64 {
        match self {
            Operation::Create => 1,
            Operation::Update => 2,
            Operation::Delete => 3,
        }
    }

    /// Parses a code from the change table.
    pub fn from_code(code: i64) -> Option<Operation> {
        match code {
            1 => Some(Operation::Create),
            2 => Some(Operation::Update),
            3 => Some(Operation::Delete),
            _ => None,
        }
    }

    /// Returns the Socket.IO event name for this operation.
    pub fn event_name(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }
}

/// One committed change, as watchers receive it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Position in the store's total order of changes; strictly increasing.
    pub cursor: i64,
    /// Collection name as the API spells it.
    pub collection: String,
    /// What happened.
    pub operation: Operation,
    /// Identifier of the document.
    pub identifier: String,
    /// The document as a read returns it; `None` for deletes.
    pub document: Option<Map<String, Value>>,
    /// srvModified of the write, epoch milliseconds.
    pub srv_modified: i64,
}
