//! The embedded store: SQLite in WAL mode on local disk.
//!
//! One writer thread owns the write connection and commits in batches; reads run
//! on a small pool of connections on tokio's blocking threads. Every write and its
//! change record commit in the same transaction, and callers hear back only after
//! that commit is durable.

mod query;
mod regexp;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, mpsc};

use nightjar_apiv3::search::SearchQuery;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Transaction, params, params_from_iter};
use serde_json::{Map, Value};
use tokio::sync::{oneshot, watch};
use tracing::info;

use crate::{Change, Lookup, Operation, StoreError, StoredDocument, WriteAction, WriteContext};

pub use query::json_path;
pub use writer::now_ms;

/// Number of read connections.
const READERS: usize = 4;

/// The embedded document store. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Database file.
    path: PathBuf,
    /// Queue of the writer thread; `None` once closed.
    jobs: Mutex<Option<mpsc::Sender<writer::Job>>>,
    /// Read connections, each used by one blocking task at a time.
    readers: Vec<Mutex<Connection>>,
    /// Round-robin start for picking a reader.
    next_reader: AtomicUsize,
    /// Cursor of the newest committed change.
    head: watch::Receiver<i64>,
    /// Writer thread, joined on close.
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Latest modification times of one collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionTimes {
    /// Largest srvModified, epoch milliseconds.
    pub srv_modified: Option<i64>,
    /// Largest numeric `date`, epoch milliseconds.
    pub date: Option<i64>,
    /// Largest `created_at` text (ISO 8601 sorts as text).
    pub created_at: Option<String>,
}

impl SqliteStore {
    /// Opens (creating when missing) the database `nightjar.db` in `dir`.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|err| {
            StoreError::Corrupt(format!("cannot create {}: {err}", dir.display()))
        })?;
        let path = dir.join("nightjar.db");

        // 1. The write connection creates the schema.
        let connection = Connection::open(&path)?;
        restrict_to_owner(&path);
        schema::configure(&connection)?;
        schema::create(&connection)?;
        let head_cursor = writer::last_cursor(&connection)?;

        // 2. Read connections.
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = Connection::open(&path)?;
            schema::configure(&reader)?;
            readers.push(Mutex::new(reader));
        }

        // 3. The writer thread.
        let (jobs, receiver) = mpsc::channel();
        let (head_sender, head) = watch::channel(head_cursor);
        let writer = std::thread::Builder::new()
            .name("nightjar-store-writer".into())
            .spawn(move || writer::run(connection, receiver, head_sender))
            .map_err(|err| StoreError::Corrupt(format!("cannot start writer thread: {err}")))?;

        info!(path = %path.display(), sqlite = rusqlite::version(), head_cursor, "embedded store opened");
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                jobs: Mutex::new(Some(jobs)),
                readers,
                next_reader: AtomicUsize::new(0),
                head,
                writer: Mutex::new(Some(writer)),
            }),
        })
    }

    /// Returns the database file path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Returns the SQLite library version.
    pub fn engine_version() -> &'static str {
        rusqlite::version()
    }

    /// Stops taking writes, lets queued ones commit, and waits for the writer to finish.
    pub fn close(&self) {
        self.inner.jobs.lock().unwrap().take();
        if let Some(handle) = self.inner.writer.lock().unwrap().take() {
            let _ = handle.join();
        }
    }

    /// Runs `plan` in a write transaction on the document that `lookup` finds in
    /// `collection`, applies the action it returns together with its change record,
    /// and returns the plan's value once the commit is durable.
    ///
    /// A plan that returns an error writes nothing.
    pub async fn write<T, F>(
        &self,
        collection: &str,
        lookup: Lookup,
        plan: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(WriteContext) -> Result<(WriteAction, T), nightjar_apiv3::ApiError>
            + Send
            + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<T, StoreError>>();
        let collection = collection.to_string();
        let job: writer::Job = Box::new(move |transaction, clock| {
            match run_plan(transaction, clock, &collection, &lookup, plan) {
                Ok(value) => Box::new(move |committed| {
                    let _ = reply.send(if committed {
                        Ok(value)
                    } else {
                        Err(StoreError::Closed)
                    });
                }),
                Err(err) => Box::new(move |_| {
                    let _ = reply.send(Err(err));
                }),
            }
        });

        let sender = self
            .inner
            .jobs
            .lock()
            .unwrap()
            .clone()
            .ok_or(StoreError::Closed)?;
        sender.send(job).map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `work` on a read connection on a blocking thread.
    async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let start = inner.next_reader.fetch_add(1, AtomicOrdering::Relaxed);
            let guard = (0..READERS)
                .find_map(|i| inner.readers[(start + i) % READERS].try_lock().ok())
                .unwrap_or_else(|| inner.readers[start % READERS].lock().unwrap());
            work(&guard)
        })
        .await
        .map_err(|err| StoreError::Corrupt(format!("read task failed: {err}")))?
    }

    /// Finds a document by identifier (or database id of a document without identifier).
    pub async fn find(
        &self,
        collection: &str,
        identifier: &str,
    ) -> Result<Option<StoredDocument>, StoreError> {
        let lookup = Lookup::by_identifier(identifier);
        let collection = collection.to_string();
        self.read(move |connection| find_document(connection, &collection, &lookup))
            .await
    }

    /// Runs a search: valid documents only, filtered, sorted and paged in SQL.
    pub async fn search(
        &self,
        collection: &str,
        query: &SearchQuery,
    ) -> Result<Vec<StoredDocument>, StoreError> {
        let sql = query::search(collection, query);
        self.read(move |connection| {
            let mut statement = connection.prepare_cached(&sql.text)?;
            let rows =
                statement.query_map(params_from_iter(sql.params.iter()), document_from_row)?;
            rows.map(|row| row?).collect()
        })
        .await
    }

    /// Lists documents modified after `since` (or at it, when `inclusive`), soft-deleted
    /// ones included, by srvModified ascending.
    pub async fn history(
        &self,
        collection: &str,
        since: i64,
        inclusive: bool,
        limit: u32,
    ) -> Result<Vec<StoredDocument>, StoreError> {
        let comparison = if inclusive { ">=" } else { ">" };
        let text = format!(
            "SELECT key, has_identifier, body FROM documents WHERE collection = ? AND srv_modified {comparison} ? \
             ORDER BY srv_modified ASC, key ASC LIMIT ?"
        );
        let collection = collection.to_string();
        self.read(move |connection| {
            let mut statement = connection.prepare_cached(&text)?;
            let rows = statement.query_map(params![collection, since, limit], document_from_row)?;
            rows.map(|row| row?).collect()
        })
        .await
    }

    /// Returns the latest modification times of `collection`, or `None` when it is empty.
    pub async fn collection_times(
        &self,
        collection: &str,
    ) -> Result<Option<CollectionTimes>, StoreError> {
        let collection = collection.to_string();
        self.read(move |connection| {
            let times = connection.query_row(
                "SELECT max(srv_modified), max(date), max(created_at), count(*) FROM documents WHERE collection = ?",
                [collection],
                |row| {
                    let count: i64 = row.get(3)?;
                    Ok((count > 0).then(|| CollectionTimes {
                        srv_modified: row.get(0).ok(),
                        date: row.get(1).ok().flatten(),
                        created_at: row.get(2).ok().flatten(),
                    }))
                },
            )?;
            Ok(times)
        })
        .await
    }

    /// Returns the cursor of the newest committed change (0 when none).
    pub fn head(&self) -> i64 {
        *self.inner.head.borrow()
    }

    /// Returns a receiver that changes whenever a commit adds changes.
    pub fn watch_head(&self) -> watch::Receiver<i64> {
        self.inner.head.clone()
    }

    /// Returns up to `limit` changes after `cursor` in `collections` (all when empty),
    /// in cursor order.
    pub async fn changes_after(
        &self,
        cursor: i64,
        collections: Vec<String>,
        limit: u32,
    ) -> Result<Vec<Change>, StoreError> {
        let mut text = String::from(
            "SELECT cursor, collection, operation, key, body, srv_modified FROM changes WHERE cursor > ?",
        );
        let mut values = vec![SqlValue::Integer(cursor)];
        if !collections.is_empty() {
            let marks = vec!["?"; collections.len()].join(", ");
            text.push_str(&format!(" AND collection IN ({marks})"));
            values.extend(collections.into_iter().map(SqlValue::Text));
        }
        text.push_str(" ORDER BY cursor ASC LIMIT ?");
        values.push(SqlValue::Integer(i64::from(limit)));

        self.read(move |connection| {
            let mut statement = connection.prepare_cached(&text)?;
            let mut rows = statement.query(params_from_iter(values.iter()))?;
            let mut changes = Vec::new();
            while let Some(row) = rows.next()? {
                let collection: String = row.get(1)?;
                changes.push(change_from_row(row, collection)?);
            }
            Ok(changes)
        })
        .await
    }

    /// Returns the newest cursor whose change was pruned (0 when none was): a watcher
    /// starting before it has lost history.
    pub async fn pruned_through(&self) -> Result<i64, StoreError> {
        self.read(|connection| Ok(pruned_through(connection)?))
            .await
    }

    /// Deletes change records recorded before `recorded_before` (epoch ms) and those
    /// beyond the newest `keep_count`; returns how many were deleted.
    pub async fn prune_changes(
        &self,
        recorded_before: i64,
        keep_count: u64,
    ) -> Result<usize, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job: writer::Job = Box::new(move |transaction, _clock| {
            let result = savepoint(transaction, |t| prune(t, recorded_before, keep_count));
            Box::new(move |committed| {
                let _ = reply.send(if committed {
                    result
                } else {
                    Err(StoreError::Closed)
                });
            })
        });
        self.submit(job)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    fn submit(&self, job: writer::Job) -> Result<(), StoreError> {
        let sender = self
            .inner
            .jobs
            .lock()
            .unwrap()
            .clone()
            .ok_or(StoreError::Closed)?;
        sender.send(job).map_err(|_| StoreError::Closed)
    }

    /// Lists the JSON bodies of an auth table (`auth_subjects` or `auth_roles`).
    pub async fn list_auth(&self, table: AuthTable) -> Result<Vec<Value>, StoreError> {
        self.read(move |connection| {
            let mut statement = connection
                .prepare_cached(&format!("SELECT body FROM {} ORDER BY id", table.name()))?;
            let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
            rows.map(|body| parse_json(&body?)).collect()
        })
        .await
    }

    /// Inserts or replaces an entry of an auth table.
    pub async fn save_auth(
        &self,
        table: AuthTable,
        id: &str,
        body: &Value,
    ) -> Result<(), StoreError> {
        let id = id.to_string();
        let body = body.to_string();
        self.auth_write(move |transaction| {
            transaction.execute(
                &format!(
                    "INSERT OR REPLACE INTO {} (id, body) VALUES (?, ?)",
                    table.name()
                ),
                params![id, body],
            )?;
            Ok(true)
        })
        .await
        .map(|_| ())
    }

    /// Deletes an entry of an auth table; returns whether it existed.
    pub async fn delete_auth(&self, table: AuthTable, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.auth_write(move |transaction| {
            Ok(
                transaction.execute(&format!("DELETE FROM {} WHERE id = ?", table.name()), [id])?
                    > 0,
            )
        })
        .await
    }

    async fn auth_write<F>(&self, work: F) -> Result<bool, StoreError>
    where
        F: FnOnce(&Transaction<'_>) -> Result<bool, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: writer::Job = Box::new(move |transaction, _clock| {
            let result = savepoint(transaction, |t| work(t));
            Box::new(move |committed| {
                let _ = reply.send(if committed {
                    result
                } else {
                    Err(StoreError::Closed)
                });
            })
        });
        let sender = self
            .inner
            .jobs
            .lock()
            .unwrap()
            .clone()
            .ok_or(StoreError::Closed)?;
        sender.send(job).map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// Makes the database file readable by its owner only: it contains health data and
/// subjects. SQLite gives the WAL and shared-memory files the same mode.
fn restrict_to_owner(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(err) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            tracing::warn!(path = %path.display(), cause = %err, "cannot restrict the database file to its owner");
        }
    }
}

/// The two authorization tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthTable {
    /// Subjects (`auth_subjects`).
    Subjects,
    /// Roles (`auth_roles`).
    Roles,
}

impl AuthTable {
    fn name(self) -> &'static str {
        match self {
            AuthTable::Subjects => "auth_subjects",
            AuthTable::Roles => "auth_roles",
        }
    }
}

fn pruned_through(connection: &Connection) -> rusqlite::Result<i64> {
    Ok(connection
        .query_row(
            "SELECT value FROM meta WHERE key = 'pruned_through'",
            [],
            |row| row.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

fn prune(
    transaction: &Transaction<'_>,
    recorded_before: i64,
    keep_count: u64,
) -> Result<usize, StoreError> {
    let head = writer::last_cursor(transaction)?;
    let keep_from = head.saturating_sub(i64::try_from(keep_count).unwrap_or(i64::MAX));
    let through: Option<i64> = transaction.query_row(
        "SELECT max(cursor) FROM changes WHERE recorded_at < ? OR cursor <= ?",
        params![recorded_before, keep_from],
        |row| row.get(0),
    )?;
    let Some(through) = through else { return Ok(0) };
    let deleted = transaction.execute("DELETE FROM changes WHERE cursor <= ?", [through])?;
    transaction.execute(
        "INSERT INTO meta (key, value) VALUES ('pruned_through', ?) \
         ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
        [through],
    )?;
    Ok(deleted)
}

/// Runs `work` inside a savepoint, rolling it back when `work` fails.
fn savepoint<T>(
    transaction: &Transaction<'_>,
    work: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    transaction.prepare_cached("SAVEPOINT job")?.execute([])?;
    match work(transaction) {
        Ok(value) => {
            transaction.prepare_cached("RELEASE job")?.execute([])?;
            Ok(value)
        }
        Err(err) => {
            transaction.execute_batch("ROLLBACK TO job; RELEASE job")?;
            Err(err)
        }
    }
}

/// Looks the document up, lets the plan decide, and applies the decision.
fn run_plan<T, F>(
    transaction: &Transaction<'_>,
    clock: &mut writer::Clock,
    collection: &str,
    lookup: &Lookup,
    plan: F,
) -> Result<T, StoreError>
where
    F: FnOnce(WriteContext) -> Result<(WriteAction, T), nightjar_apiv3::ApiError>,
{
    savepoint(transaction, |transaction| {
        let existing = find_document(transaction, collection, lookup)?;
        let old_key = existing.as_ref().map(|doc| doc.key.clone());
        let srv_modified = clock.next(transaction, collection)?;
        let (action, value) = plan(WriteContext {
            existing,
            srv_modified,
        })
        .map_err(StoreError::Rejected)?;
        apply(
            transaction,
            collection,
            old_key.as_deref(),
            action,
            srv_modified,
        )?;
        Ok(value)
    })
}

/// Writes the action and its change record.
fn apply(
    transaction: &Transaction<'_>,
    collection: &str,
    old_key: Option<&str>,
    action: WriteAction,
    srv_modified: i64,
) -> Result<(), StoreError> {
    const DELETE: &str = "DELETE FROM documents WHERE collection = ? AND key = ?";
    let (operation, key, body) = match action {
        WriteAction::Nothing => return Ok(()),
        WriteAction::Insert(body) => {
            let key = identifier_of(&body)?;
            let text = insert_row(transaction, collection, &key, body)?;
            (Operation::Create, key, Some(text))
        }
        WriteAction::Replace { body, operation } => {
            let key = identifier_of(&body)?;
            if let Some(old) = old_key {
                transaction
                    .prepare_cached(DELETE)?
                    .execute(params![collection, old])?;
            }
            let text = insert_row(transaction, collection, &key, body)?;
            let body = (operation != Operation::Delete).then_some(text);
            (operation, key, body)
        }
        WriteAction::Remove => {
            let key = old_key
                .ok_or_else(|| StoreError::Corrupt("remove without a found document".into()))?;
            transaction
                .prepare_cached(DELETE)?
                .execute(params![collection, key])?;
            (Operation::Delete, key.to_string(), None)
        }
    };

    transaction
        .prepare_cached(
            "INSERT INTO changes (collection, operation, key, body, srv_modified, recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
        )?
        .execute(params![collection, operation.code(), key, body, srv_modified, now_ms()])?;
    Ok(())
}

fn identifier_of(body: &Map<String, Value>) -> Result<String, StoreError> {
    match body.get("identifier") {
        Some(Value::String(identifier)) if !identifier.is_empty() => Ok(identifier.clone()),
        _ => Err(StoreError::Corrupt(
            "document to write has no identifier".into(),
        )),
    }
}

/// Inserts a document row and returns its body as stored JSON text.
fn insert_row(
    transaction: &Transaction<'_>,
    collection: &str,
    key: &str,
    body: Map<String, Value>,
) -> Result<String, StoreError> {
    let date = body.get("date").and_then(Value::as_i64);
    let srv_modified = body.get("srvModified").and_then(Value::as_i64).unwrap_or(0);
    let created_at = body.get("created_at").and_then(Value::as_str);
    let is_valid = body.get("isValid") != Some(&Value::Bool(false));
    let has_identifier = body.contains_key("identifier");
    let created_at = created_at.map(str::to_string);
    let text = Value::Object(body).to_string();
    transaction
        .prepare_cached(
            "INSERT INTO documents (collection, key, has_identifier, date, srv_modified, created_at, is_valid, body) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )?
        .execute(params![collection, key, has_identifier, date, srv_modified, created_at, is_valid, text])?;
    Ok(text)
}

/// Finds the document a lookup addresses: by key first, then by fallback fields
/// among documents without identifier.
fn find_document(
    connection: &Connection,
    collection: &str,
    lookup: &Lookup,
) -> Result<Option<StoredDocument>, StoreError> {
    let by_key = connection
        .prepare_cached(
            "SELECT key, has_identifier, body FROM documents WHERE collection = ? AND key = ?",
        )?
        .query_row(params![collection, lookup.identifier], document_from_row)
        .optional()?
        .transpose()?;
    if by_key.is_some() || lookup.fallback.is_empty() {
        return Ok(by_key);
    }

    let mut text = String::from(
        "SELECT key, has_identifier, body FROM documents WHERE collection = ? AND has_identifier = 0",
    );
    let mut values = vec![SqlValue::Text(collection.to_string())];
    for (field, value) in &lookup.fallback {
        text.push_str(" AND json_extract(body, ?) = json_extract(?, '$')");
        values.push(SqlValue::Text(json_path(field)));
        values.push(SqlValue::Text(value.to_string()));
    }
    text.push_str(" LIMIT 1");
    connection
        .prepare_cached(&text)?
        .query_row(params_from_iter(values.iter()), document_from_row)
        .optional()?
        .transpose()
}

fn document_from_row(
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<Result<StoredDocument, StoreError>> {
    let key: String = row.get(0)?;
    let has_identifier: bool = row.get(1)?;
    let body: String = row.get(2)?;
    Ok(parse_object(&body).map(|body| StoredDocument {
        key,
        has_identifier,
        body,
    }))
}

fn change_from_row(row: &rusqlite::Row<'_>, collection: String) -> Result<Change, StoreError> {
    let code: i64 = row.get(2)?;
    let body: Option<String> = row.get(4)?;
    Ok(Change {
        cursor: row.get(0)?,
        collection,
        operation: Operation::from_code(code)
            .ok_or_else(|| StoreError::Corrupt(format!("operation code {code}")))?,
        identifier: row.get(3)?,
        document: body.map(|b| parse_object(&b)).transpose()?,
        srv_modified: row.get(5)?,
    })
}

fn parse_json(text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(|err| StoreError::Corrupt(err.to_string()))
}

fn parse_object(text: &str) -> Result<Map<String, Value>, StoreError> {
    match parse_json(text)? {
        Value::Object(map) => Ok(map),
        _ => Err(StoreError::Corrupt("stored body is not an object".into())),
    }
}
