//! The embedded store's tables and connection settings.

use rusqlite::Connection;

/// Tables and indexes, created when missing.
///
/// `documents` keeps each JSON body with the fields that searches and history use
/// most copied into indexed columns. `changes` is the change feed: its rowid is the
/// cursor, written in the same transaction as the document.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS documents (
    collection     TEXT    NOT NULL,
    key            TEXT    NOT NULL,
    has_identifier INTEGER NOT NULL,
    date           INTEGER,
    srv_modified   INTEGER NOT NULL,
    created_at     TEXT,
    is_valid       INTEGER NOT NULL,
    body           TEXT    NOT NULL,
    PRIMARY KEY (collection, key)
);
DROP INDEX IF EXISTS documents_date;
DROP INDEX IF EXISTS documents_srv_modified;
DROP INDEX IF EXISTS documents_created_at;
CREATE INDEX IF NOT EXISTS documents_date_key ON documents (collection, date, key);
CREATE INDEX IF NOT EXISTS documents_srv_modified_key ON documents (collection, srv_modified, key);
CREATE INDEX IF NOT EXISTS documents_created_at_key ON documents (collection, created_at, key);
CREATE INDEX IF NOT EXISTS documents_without_identifier ON documents (collection) WHERE has_identifier = 0;

CREATE TABLE IF NOT EXISTS changes (
    cursor       INTEGER PRIMARY KEY AUTOINCREMENT,
    collection   TEXT    NOT NULL,
    operation    INTEGER NOT NULL,
    key          TEXT    NOT NULL,
    body         TEXT,
    srv_modified INTEGER NOT NULL,
    recorded_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_recorded_at ON changes (recorded_at);

CREATE TABLE IF NOT EXISTS auth_subjects (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS auth_roles (id TEXT PRIMARY KEY, body TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

/// Applies the settings every connection needs.
///
/// WAL with `synchronous=FULL` makes each commit durable (the WAL is synced before
/// the commit returns) while readers keep working during writes.
pub fn configure(connection: &Connection) -> rusqlite::Result<()> {
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    connection.busy_timeout(std::time::Duration::from_secs(10))?;
    super::regexp::register(connection)?;
    Ok(())
}

/// Creates the tables and indexes that are missing.
pub fn create(connection: &Connection) -> rusqlite::Result<()> {
    connection.execute_batch(SCHEMA)
}
