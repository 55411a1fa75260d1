//! `Store`: the storage interface core uses, dispatching to one backend.
//!
//! Every backend offers the same operations with the same guarantees: a write plan
//! runs against the document its lookup finds and commits atomically with its
//! change record; srvModified is strictly increasing per collection; change cursors
//! totally order committed changes.

use nightjar_apiv3::ApiError;
use nightjar_apiv3::search::SearchQuery;
use serde_json::Value;
use tokio::sync::watch;

use crate::mongo::MongoStore;
use crate::sqlite::{AuthTable, CollectionTimes, SqliteStore};
use crate::{Change, Lookup, StoreError, StoredDocument, WriteAction, WriteContext};

/// The configured storage backend. Cheap to clone.
#[derive(Clone)]
pub enum Store {
    /// SQLite on local disk (the default).
    Embedded(SqliteStore),
    /// A MongoDB database, such as an existing Nightscout one.
    Mongo(MongoStore),
}

impl Store {
    /// Returns the engine name reported by `version` and `status`, such as `sqlite`.
    pub fn engine_name(&self) -> &'static str {
        match self {
            Store::Embedded(_) => "sqlite",
            Store::Mongo(_) => "mongodb",
        }
    }

    /// Returns the engine version.
    pub fn engine_version(&self) -> String {
        match self {
            Store::Embedded(_) => SqliteStore::engine_version().to_string(),
            Store::Mongo(store) => store.engine_version(),
        }
    }

    /// Returns where the data lives, for the startup log (never a password).
    pub fn location(&self) -> String {
        match self {
            Store::Embedded(store) => store.path().display().to_string(),
            Store::Mongo(store) => store.location(),
        }
    }

    /// Stops taking writes and waits for queued ones to commit.
    pub fn close(&self) {
        match self {
            Store::Embedded(store) => store.close(),
            Store::Mongo(store) => store.close(),
        }
    }

    /// Runs `plan` on the document `lookup` finds and commits its action with the
    /// change record; see [`SqliteStore::write`] and [`MongoStore::write`].
    pub async fn write<T, F>(
        &self,
        collection: &str,
        lookup: Lookup,
        plan: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(WriteContext) -> Result<(WriteAction, T), ApiError> + Send + 'static,
    {
        match self {
            Store::Embedded(store) => store.write(collection, lookup, plan).await,
            Store::Mongo(store) => store.write(collection, lookup, plan).await,
        }
    }

    /// Finds a document by identifier (or database id of a document without one).
    pub async fn find(
        &self,
        collection: &str,
        identifier: &str,
    ) -> Result<Option<StoredDocument>, StoreError> {
        match self {
            Store::Embedded(store) => store.find(collection, identifier).await,
            Store::Mongo(store) => store.find(collection, identifier).await,
        }
    }

    /// Runs a search over valid documents.
    pub async fn search(
        &self,
        collection: &str,
        query: &SearchQuery,
    ) -> Result<Vec<StoredDocument>, StoreError> {
        match self {
            Store::Embedded(store) => store.search(collection, query).await,
            Store::Mongo(store) => store.search(collection, query).await,
        }
    }

    /// Lists documents modified after `since` (or at it when `inclusive`) by srvModified.
    pub async fn history(
        &self,
        collection: &str,
        since: i64,
        inclusive: bool,
        limit: u32,
    ) -> Result<Vec<StoredDocument>, StoreError> {
        match self {
            Store::Embedded(store) => store.history(collection, since, inclusive, limit).await,
            Store::Mongo(store) => store.history(collection, since, inclusive, limit).await,
        }
    }

    /// Returns the latest modification times of a collection, `None` when empty.
    pub async fn collection_times(
        &self,
        collection: &str,
    ) -> Result<Option<CollectionTimes>, StoreError> {
        match self {
            Store::Embedded(store) => store.collection_times(collection).await,
            Store::Mongo(store) => store.collection_times(collection).await,
        }
    }

    /// Returns the cursor of the newest committed change.
    pub fn head(&self) -> i64 {
        match self {
            Store::Embedded(store) => store.head(),
            Store::Mongo(store) => store.head(),
        }
    }

    /// Returns a receiver that changes whenever new changes are committed.
    pub fn watch_head(&self) -> watch::Receiver<i64> {
        match self {
            Store::Embedded(store) => store.watch_head(),
            Store::Mongo(store) => store.watch_head(),
        }
    }

    /// Returns up to `limit` changes after `cursor` in `collections` (all when empty).
    pub async fn changes_after(
        &self,
        cursor: i64,
        collections: Vec<String>,
        limit: u32,
    ) -> Result<Vec<Change>, StoreError> {
        match self {
            Store::Embedded(store) => store.changes_after(cursor, collections, limit).await,
            Store::Mongo(store) => store.changes_after(cursor, collections, limit).await,
        }
    }

    /// Returns the newest pruned cursor; watching from before it has lost history.
    pub async fn pruned_through(&self) -> Result<i64, StoreError> {
        match self {
            Store::Embedded(store) => store.pruned_through().await,
            Store::Mongo(store) => store.pruned_through().await,
        }
    }

    /// Prunes change records older than `recorded_before` or beyond the newest `keep_count`.
    pub async fn prune_changes(
        &self,
        recorded_before: i64,
        keep_count: u64,
    ) -> Result<usize, StoreError> {
        match self {
            Store::Embedded(store) => store.prune_changes(recorded_before, keep_count).await,
            Store::Mongo(store) => store.prune_changes(recorded_before, keep_count).await,
        }
    }

    /// Lists the entries of an authorization table.
    pub async fn list_auth(&self, table: AuthTable) -> Result<Vec<Value>, StoreError> {
        match self {
            Store::Embedded(store) => store.list_auth(table).await,
            Store::Mongo(store) => store.list_auth(table).await,
        }
    }

    /// Inserts or replaces an authorization entry.
    pub async fn save_auth(
        &self,
        table: AuthTable,
        id: &str,
        body: &Value,
    ) -> Result<(), StoreError> {
        match self {
            Store::Embedded(store) => store.save_auth(table, id, body).await,
            Store::Mongo(store) => store.save_auth(table, id, body).await,
        }
    }

    /// Deletes an authorization entry; returns whether it existed.
    pub async fn delete_auth(&self, table: AuthTable, id: &str) -> Result<bool, StoreError> {
        match self {
            Store::Embedded(store) => store.delete_auth(table, id).await,
            Store::Mongo(store) => store.delete_auth(table, id).await,
        }
    }
}
