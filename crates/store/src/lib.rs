//! Document storage for Nightjar: the storage model, the change feed and the
//! embedded SQLite store. Knows nothing about gRPC, HTTP or Socket.IO.

pub mod backend;
pub mod change;
pub mod document;
pub mod error;
pub mod sqlite;

pub use backend::Store;
pub use change::{Change, Operation};
pub use document::{Lookup, StoredDocument, WriteAction, WriteContext};
pub use error::StoreError;
pub use sqlite::{AuthTable, CollectionTimes, SqliteStore};
