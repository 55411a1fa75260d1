//! Document storage for Nightjar: the storage model, the change feed, the embedded
//! SQLite store and the MongoDB store. Knows nothing about gRPC, HTTP or Socket.IO.

pub mod backend;
pub mod change;
pub mod document;
pub mod error;
pub mod mongo;
pub mod sqlite;

pub use backend::Store;
pub use change::{Change, Operation};
pub use document::{Lookup, StoredDocument, WriteAction, WriteContext};
pub use error::StoreError;
pub use mongo::{MongoSettings, MongoStore};
pub use sqlite::{AuthTable, CollectionTimes, SqliteStore};
