//! The MongoDB store: documents in the collections of an existing Nightscout database,
//! the change feed in `nightjar_changes`, and counters in `nightjar_meta`.
//!
//! On a replica set (Atlas included) or a sharded cluster, every write runs in a
//! multi-document transaction. The transaction takes the next change cursor from a
//! counter document, applies the plan's action and inserts the change record. So the
//! data and its change commit together, and cursors follow commit order across core
//! replicas.
//! A change stream wakes this replica's watchers when another replica commits and
//! records the writes of other programs (a Nightscout instance beside Nightjar). On a
//! standalone server, which has neither transactions nor change streams, writes run the
//! same steps without a transaction and watchers only hear of this replica's writes.

mod feed;
mod indexes;
mod listener;
pub mod mapping;
pub mod query;
mod settings;
mod write;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, Database};
use nightjar_apiv3::search::SearchQuery;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::sqlite::{AuthTable, CollectionTimes};
use crate::{StoreError, StoredDocument};
use mapping::{auth_entry_to_document, auth_entry_to_json, auth_id, found_document};

pub use settings::{CollectionNames, MongoSettings, URI_VARIABLES, redact_uri};

/// Collection of change records, one per committed write, `_id` = cursor.
pub const CHANGES_COLLECTION: &str = "nightjar_changes";

/// Collection of the store's counters and markers (change cursor, srvModified per
/// collection, pruned cursor, change stream resume token).
pub const META_COLLECTION: &str = "nightjar_meta";

/// Database used when the connection string names none, as Nightscout's driver does.
const DEFAULT_DATABASE: &str = "test";

/// Maximum time `close` waits for writes in progress.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The MongoDB store. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct MongoStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Connection pool.
    client: Client,
    /// The database holding every collection.
    database: Database,
    /// Name of `database`.
    database_name: String,
    /// Connection string (for the redacted location) and collection names.
    settings: MongoSettings,
    /// True on a replica set or sharded cluster: writes run in transactions and a
    /// change stream follows other replicas' commits.
    transactions: bool,
    /// Server version from `buildInfo`, such as `7.0.5`.
    server_version: String,
    /// Cursor of the newest committed change that this replica has seen.
    head: watch::Sender<i64>,
    /// Serializes this replica's writes; transactions would conflict on the cursor
    /// counter anyway, and waiting here is cheaper than retrying there.
    write_lock: tokio::sync::Mutex<()>,
    /// Set by `close`; writes are rejected from then on.
    closed: AtomicBool,
    /// Number of writes in progress, for `close` to wait on.
    writes_in_progress: Mutex<usize>,
    /// Signalled when `writes_in_progress` drops to zero.
    writes_done: Condvar,
    /// Background tasks (index creation, change stream), aborted by `close`.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Marks one write in progress until dropped.
struct WriteGuard<'a> {
    inner: &'a Inner,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        let mut count = self.inner.writes_in_progress.lock().unwrap();
        *count -= 1;
        if *count == 0 {
            self.inner.writes_done.notify_all();
        }
    }
}

impl Inner {
    /// Registers a write, or fails once the store is closed.
    fn begin_write(&self) -> Result<WriteGuard<'_>, StoreError> {
        let mut count = self.writes_in_progress.lock().unwrap();
        if self.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        *count += 1;
        Ok(WriteGuard { inner: self })
    }

    /// Moves the head forward to `cursor`, waking watchers; never moves it back.
    fn advance_head(&self, cursor: i64) {
        self.head.send_if_modified(|head| {
            let moved = cursor > *head;
            *head = cursor.max(*head);
            moved
        });
    }

    fn meta(&self) -> Collection<Document> {
        self.database.collection(META_COLLECTION)
    }

    fn changes(&self) -> Collection<Document> {
        self.database.collection(CHANGES_COLLECTION)
    }

    fn auth(&self, table: AuthTable) -> Collection<Document> {
        let suffix = match table {
            AuthTable::Subjects => "subjects",
            AuthTable::Roles => "roles",
        };
        self.database
            .collection(&format!("{}{suffix}", self.settings.auth_prefix))
    }
}

impl MongoStore {
    /// Connects, checks the server, prepares the store's own collections and starts
    /// the background tasks (index creation, and on replica sets the change stream).
    ///
    /// Fails when the connection string is invalid, no server responds within the
    /// driver's server selection timeout (30 s unless the string sets
    /// `serverSelectionTimeoutMS`), or the server has no logical sessions (MongoDB
    /// older than 3.6).
    pub async fn open(settings: MongoSettings) -> Result<MongoStore, StoreError> {
        // 1. Client and database.
        let mut options = ClientOptions::parse(&settings.uri).await?;
        options
            .app_name
            .get_or_insert_with(|| "nightjar".to_string());
        let database_name = match options.default_database.clone() {
            Some(name) => name,
            None => {
                warn!(
                    database = DEFAULT_DATABASE,
                    "the MongoDB connection string names no database; using the driver default"
                );
                DEFAULT_DATABASE.to_string()
            }
        };
        let client = Client::with_options(options)?;
        let database = client.database(&database_name);

        // 2. What the server offers.
        let hello = hello(&database).await?;
        if !hello.contains_key("logicalSessionTimeoutMinutes") {
            return Err(StoreError::Corrupt(
                "the MongoDB server has no logical sessions; MongoDB 3.6 or newer is required"
                    .into(),
            ));
        }
        let transactions =
            hello.contains_key("setName") || hello.get_str("msg").ok() == Some("isdbgrid");
        let build_info = database.run_command(doc! {"buildInfo": 1}).await?;
        let server_version = build_info
            .get_str("version")
            .unwrap_or("unknown")
            .to_string();

        // 3. The store's own collections, counters and indexes.
        prepare_collections(&database, &settings).await?;
        indexes::ensure(&database, indexes::own_indexes()).await;
        let (head, _) = watch::channel(0);
        let store = MongoStore {
            inner: Arc::new(Inner {
                client,
                database,
                database_name,
                settings,
                transactions,
                server_version,
                head,
                write_lock: tokio::sync::Mutex::new(()),
                closed: AtomicBool::new(false),
                writes_in_progress: Mutex::new(0),
                writes_done: Condvar::new(),
                tasks: Mutex::new(Vec::new()),
            }),
        };
        let head_cursor = store.latest_cursor().await?;
        store.inner.advance_head(head_cursor);

        // 4. Background work.
        let planned = indexes::planned_indexes(
            &store.inner.settings.collections,
            &store.inner.settings.auth_prefix,
        );
        let database = store.inner.database.clone();
        let mut tasks = vec![tokio::spawn(async move {
            indexes::ensure(&database, planned).await;
        })];
        if transactions {
            tasks.push(tokio::spawn(listener::follow(store.clone())));
        } else {
            warn!(
                "the MongoDB server is a standalone server without transactions or change streams: \
                 watchers see only this replica's own writes, and a write and its change record \
                 are not committed atomically; run a replica set for several core replicas"
            );
        }
        store.inner.tasks.lock().unwrap().extend(tasks);

        info!(
            location = %store.location(),
            database = %store.inner.database_name,
            uri_variable = %store.inner.settings.uri_variable,
            server_version = %store.inner.server_version,
            transactions,
            head_cursor,
            "MongoDB store opened"
        );
        Ok(store)
    }

    /// Returns the connection string with the password hidden.
    pub fn location(&self) -> String {
        self.inner.settings.redacted_uri()
    }

    /// Returns the server version.
    pub fn engine_version(&self) -> String {
        self.inner.server_version.clone()
    }

    /// Returns whether writes run in transactions (replica set or sharded cluster).
    pub fn has_transactions(&self) -> bool {
        self.inner.transactions
    }

    /// Stops taking writes, waits up to 10 s for writes in progress, and stops the
    /// background tasks. Blocks the calling thread.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let count = self.inner.writes_in_progress.lock().unwrap();
        let (count, timeout) = self
            .inner
            .writes_done
            .wait_timeout_while(count, CLOSE_TIMEOUT, |count| *count > 0)
            .unwrap();
        if timeout.timed_out() {
            warn!(
                writes = *count,
                "MongoDB store closed with writes still in progress"
            );
        }
        drop(count);
        for task in self.inner.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        info!("MongoDB store closed");
    }

    /// Returns the database collection of an API collection.
    fn data_collection(&self, collection: &str) -> Result<Collection<Document>, StoreError> {
        let name = self
            .inner
            .settings
            .collections
            .database_name(collection)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown collection {collection}")))?;
        Ok(self.inner.database.collection(name))
    }

    /// Finds a document by identifier, or by the `_id` of a document without one.
    pub async fn find(
        &self,
        collection: &str,
        identifier: &str,
    ) -> Result<Option<StoredDocument>, StoreError> {
        let found = self
            .data_collection(collection)?
            .find_one(query::identifier_filter(identifier))
            .sort(doc! {"identifier": -1})
            .await?;
        found
            .map(|raw| found_document(raw).map(|found| found.stored))
            .transpose()
    }

    /// Runs a search: valid documents only, filtered, sorted, paged and projected by
    /// the server.
    pub async fn search(
        &self,
        collection: &str,
        search: &SearchQuery,
    ) -> Result<Vec<StoredDocument>, StoreError> {
        let spec = query::search(search);
        let target = self.data_collection(collection)?;
        let mut find = target
            .find(spec.filter)
            .sort(spec.sort)
            .limit(spec.limit)
            .skip(spec.skip);
        if let Some(projection) = spec.projection {
            find = find.projection(projection);
        }
        let documents: Vec<Document> = find.await?.try_collect().await?;
        documents
            .into_iter()
            .map(|raw| found_document(raw).map(|found| found.stored))
            .collect()
    }

    /// Lists documents modified after `since` (or at it, when `inclusive`), soft-deleted
    /// ones included, by srvModified ascending.
    ///
    /// NOTE: documents written by Nightscout's older APIs carry no srvModified and are
    /// never listed, as in the reference; the embedded store behaves the same.
    pub async fn history(
        &self,
        collection: &str,
        since: i64,
        inclusive: bool,
        limit: u32,
    ) -> Result<Vec<StoredDocument>, StoreError> {
        let documents: Vec<Document> = self
            .data_collection(collection)?
            .find(query::history_filter(since, inclusive))
            .sort(query::history_sort())
            .limit(i64::from(limit))
            .await?
            .try_collect()
            .await?;
        documents
            .into_iter()
            .map(|raw| found_document(raw).map(|found| found.stored))
            .collect()
    }

    /// Returns the latest modification times of `collection`, or `None` when it is empty.
    ///
    /// Only the collection's fallback date field is read (`date` for entries,
    /// `created_at` for the others, none for settings), as the reference's
    /// `lastModified` does, so every read uses an index.
    pub async fn collection_times(
        &self,
        collection: &str,
    ) -> Result<Option<CollectionTimes>, StoreError> {
        let target = self.data_collection(collection)?;
        if target
            .find_one(doc! {})
            .projection(doc! {"_id": 1})
            .await?
            .is_none()
        {
            return Ok(None);
        }

        let srv_modified = largest(&target, "srvModified", "number")
            .await?
            .and_then(|value| bson_i64(&value));
        let fallback = nightjar_apiv3::Collection::parse(collection)
            .and_then(|known| known.fallback_date_field());
        let date = match fallback {
            Some("date") => largest(&target, "date", "number")
                .await?
                .and_then(|value| bson_i64(&value)),
            _ => None,
        };
        let created_at = match fallback {
            Some("created_at") => largest(&target, "created_at", "string")
                .await?
                .and_then(|value| value.as_str().map(str::to_string)),
            _ => None,
        };
        Ok(Some(CollectionTimes {
            srv_modified,
            date,
            created_at,
        }))
    }

    /// Returns the cursor of the newest committed change this replica has seen.
    pub fn head(&self) -> i64 {
        *self.inner.head.borrow()
    }

    /// Returns a receiver that changes whenever the head moves.
    pub fn watch_head(&self) -> watch::Receiver<i64> {
        self.inner.head.subscribe()
    }

    /// Lists the entries of an authorization collection (`auth_subjects` or
    /// `auth_roles`, with the configured prefix), `_id` as 24 hex digits.
    pub async fn list_auth(&self, table: AuthTable) -> Result<Vec<Value>, StoreError> {
        let documents: Vec<Document> = self
            .inner
            .auth(table)
            .find(doc! {})
            .sort(doc! {"_id": 1})
            .await?
            .try_collect()
            .await?;
        Ok(documents.iter().map(auth_entry_to_json).collect())
    }

    /// Inserts or replaces an authorization entry; an `id` of 24 hex digits is stored
    /// as an ObjectId, as Nightscout stores it.
    pub async fn save_auth(
        &self,
        table: AuthTable,
        id: &str,
        body: &Value,
    ) -> Result<(), StoreError> {
        let _write = self.inner.begin_write()?;
        let document = auth_entry_to_document(id, body);
        self.inner
            .auth(table)
            .replace_one(doc! {"_id": auth_id(id)}, document)
            .upsert(true)
            .await?;
        Ok(())
    }

    /// Deletes an authorization entry; returns whether it existed.
    pub async fn delete_auth(&self, table: AuthTable, id: &str) -> Result<bool, StoreError> {
        let _write = self.inner.begin_write()?;
        let result = self
            .inner
            .auth(table)
            .delete_one(doc! {"_id": auth_id(id)})
            .await?;
        Ok(result.deleted_count > 0)
    }
}

/// Runs `hello`, or `isMaster` on servers older than 4.4.2 that reject `hello`.
async fn hello(database: &Database) -> Result<Document, StoreError> {
    match database.run_command(doc! {"hello": 1}).await {
        Ok(reply) => Ok(reply),
        Err(err) if command_code(&err).is_some() => {
            Ok(database.run_command(doc! {"isMaster": 1}).await?)
        }
        Err(err) => Err(err.into()),
    }
}

/// Creates the collections that are missing, so transactions never have to create one,
/// and the change cursor counter.
async fn prepare_collections(
    database: &Database,
    settings: &MongoSettings,
) -> Result<(), StoreError> {
    let existing = database.list_collection_names().await?;
    let mut wanted: Vec<String> = settings
        .collections
        .pairs()
        .into_iter()
        .map(|(_, name)| name.to_string())
        .collect();
    wanted.push(format!("{}subjects", settings.auth_prefix));
    wanted.push(format!("{}roles", settings.auth_prefix));
    wanted.push(CHANGES_COLLECTION.to_string());
    wanted.push(META_COLLECTION.to_string());

    for name in wanted {
        if existing.contains(&name) {
            continue;
        }
        match database.create_collection(&name).await {
            Ok(()) => info!(collection = %name, "created MongoDB collection"),
            // Another replica created it meanwhile.
            Err(err) if command_code(&err) == Some(NAMESPACE_EXISTS) => {}
            Err(err) => return Err(err.into()),
        }
    }

    database
        .collection::<Document>(META_COLLECTION)
        .update_one(
            doc! {"_id": feed::CURSOR_COUNTER},
            doc! {"$setOnInsert": {"value": 0_i64}},
        )
        .upsert(true)
        .await?;
    Ok(())
}

/// Server error code: the collection already exists.
const NAMESPACE_EXISTS: i32 = 48;

/// Server error code: a unique index already contains the value.
const DUPLICATE_KEY: i32 = 11000;

/// Returns the server error code of a command or write error.
fn command_code(err: &mongodb::error::Error) -> Option<i32> {
    use mongodb::error::{ErrorKind, WriteFailure};
    match err.kind.as_ref() {
        ErrorKind::Command(command) => Some(command.code),
        ErrorKind::Write(WriteFailure::WriteError(write)) => Some(write.code),
        _ => None,
    }
}

/// Returns the largest value of `field` among values of BSON type `kind` (an indexed
/// descending read of one document).
async fn largest(
    target: &Collection<Document>,
    field: &str,
    kind: &str,
) -> Result<Option<Bson>, StoreError> {
    let found = target
        .find_one(doc! {field: {"$type": kind}})
        .sort(doc! {field: -1})
        .projection(doc! {field: 1})
        .await?;
    Ok(found.and_then(|document| document.get(field).cloned()))
}

/// Reads an integer stored as Int32, Int64 or a whole Double.
fn bson_i64(value: &Bson) -> Option<i64> {
    match value {
        Bson::Int32(integer) => Some(i64::from(*integer)),
        Bson::Int64(integer) => Some(*integer),
        Bson::Double(number) if number.is_finite() && number.fract() == 0.0 => Some(*number as i64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_read_from_any_numeric_type() {
        assert_eq!(bson_i64(&Bson::Int32(5)), Some(5));
        assert_eq!(
            bson_i64(&Bson::Int64(1_525_383_610_088)),
            Some(1_525_383_610_088)
        );
        assert_eq!(
            bson_i64(&Bson::Double(1_525_383_610_088.0)),
            Some(1_525_383_610_088)
        );
        assert_eq!(bson_i64(&Bson::Double(1.5)), None);
        assert_eq!(bson_i64(&Bson::String("5".into())), None);
    }
}
