//! The single writer thread: runs write plans in batches, one transaction and one
//! durable commit per batch (group commit), then replies to every caller in the batch.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tokio::sync::watch;
use tracing::{error, info};

use crate::StoreError;

/// Most jobs committed together; bounds the latency one batch adds to its first job.
const MAX_BATCH: usize = 512;

/// Work for the writer: runs inside the batch's transaction and returns the
/// function that reports the outcome once the batch's commit is known.
pub type Job = Box<dyn FnOnce(&Transaction<'_>, &mut Clock) -> Completion + Send>;

/// Reports a job's outcome: called with `true` after the commit succeeded.
pub type Completion = Box<dyn FnOnce(bool) + Send>;

/// Source of srvModified values, strictly increasing per collection.
#[derive(Default)]
pub struct Clock {
    /// Last value handed out per collection.
    last: HashMap<String, i64>,
}

impl Clock {
    /// Returns the next srvModified for `collection`: the wall clock, or the previous
    /// value plus one when the clock has not moved past it.
    pub fn next(
        &mut self,
        transaction: &Transaction<'_>,
        collection: &str,
    ) -> Result<i64, StoreError> {
        let previous = match self.last.get(collection) {
            Some(value) => *value,
            None => transaction
                .query_row(
                    "SELECT max(srv_modified) FROM documents WHERE collection = ?",
                    [collection],
                    |row| row.get::<_, Option<i64>>(0),
                )
                .optional()?
                .flatten()
                .unwrap_or(0),
        };
        let value = now_ms().max(previous + 1);
        self.last.insert(collection.to_string(), value);
        Ok(value)
    }
}

/// Returns the wall clock in epoch milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs the writer loop until every sender is dropped.
pub fn run(mut connection: Connection, jobs: mpsc::Receiver<Job>, head: watch::Sender<i64>) {
    let mut clock = Clock::default();
    while let Ok(first) = jobs.recv() {
        // 1. Take what is already waiting, up to the batch limit.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }

        // 2. Run every job in one transaction; each job isolates itself in a savepoint.
        let outcome = run_batch(&mut connection, &mut clock, batch);

        // 3. Report after the commit, then wake the watchers.
        match outcome {
            Ok(completions) => {
                // Move the head first, so a caller that watches right after its
                // acknowledged write starts after that write.
                if let Ok(cursor) = last_cursor(&connection) {
                    head.send_if_modified(|current| {
                        let moved = cursor > *current;
                        *current = cursor.max(*current);
                        moved
                    });
                }
                for completion in completions {
                    completion(true);
                }
            }
            Err((err, completions)) => {
                error!(cause = %err, jobs = completions.len(), "write batch failed to commit");
                // The srvModified values handed out may be reused only if they stay
                // increasing; forgetting them makes the clock reread the table.
                clock = Clock::default();
                for completion in completions {
                    completion(false);
                }
            }
        }
    }
    info!("store writer stopped");
}

type BatchError = (rusqlite::Error, Vec<Completion>);

fn run_batch(
    connection: &mut Connection,
    clock: &mut Clock,
    batch: Vec<Job>,
) -> Result<Vec<Completion>, BatchError> {
    let transaction = match connection.transaction() {
        Ok(transaction) => transaction,
        Err(err) => {
            let completions = batch.into_iter().map(|_| noop()).collect();
            return Err((err, completions));
        }
    };
    let completions: Vec<Completion> = batch
        .into_iter()
        .map(|job| job(&transaction, clock))
        .collect();
    match transaction.commit() {
        Ok(()) => Ok(completions),
        Err(err) => Err((err, completions)),
    }
}

fn noop() -> Completion {
    Box::new(|_| {})
}

/// Returns the cursor of the newest change ever recorded, 0 when there is none.
///
/// AUTOINCREMENT keeps the largest cursor ever handed out in `sqlite_sequence`, so
/// the head stays put even after every change record was pruned.
pub fn last_cursor(connection: &Connection) -> rusqlite::Result<i64> {
    connection.query_row(
        "SELECT max(COALESCE((SELECT max(cursor) FROM changes), 0), \
                COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0))",
        params![],
        |row| row.get(0),
    )
}
