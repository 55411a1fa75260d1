//! `WatchChanges`: replays the change feed after a cursor, then follows it live.
//!
//! Each stream reads the durable change table in batches and waits on the store's
//! head cursor when it has caught up, so replay and live delivery are one loop with
//! no seam: nothing is skipped or sent twice between them. The outgoing queue is
//! bounded; a consumer that stops reading holds back only its own reader task.

use std::sync::Arc;

use nightjar_apiv3::{ApiError, Collection, ErrorKind};
use nightjar_auth::Principal;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::{debug, info, warn};

use super::Core;
use super::auth::read_permission;
use crate::proto::{self, Change, Operation, WatchChangesRequest};

/// Changes read from the store per query.
const BATCH: u32 = 500;

/// Changes queued per stream before the reader waits for the consumer.
const QUEUE: usize = 1024;

/// Starts a watch for `caller`; fails when no requested collection is readable or
/// the cursor is malformed.
pub async fn open(
    core: Arc<Core>,
    caller: &Principal,
    request: WatchChangesRequest,
) -> Result<ReceiverStream<Result<Change, Status>>, Status> {
    // 1. Collections: the requested ones the caller may read, all readable when none requested.
    let requested: Vec<Collection> = if request.collections.is_empty() {
        Collection::ALL.to_vec()
    } else {
        request
            .collections
            .iter()
            .filter_map(|name| Collection::parse(name))
            .collect()
    };
    let collections: Vec<String> = requested
        .into_iter()
        .filter(|c| caller.can(&read_permission(*c)))
        .map(|c| c.name().to_string())
        .collect();
    if collections.is_empty() {
        let error = ApiError::new(
            ErrorKind::Forbidden,
            "Unauthorized to receive any collection",
        );
        return Err(proto::status_from_api_error(&error));
    }

    // 2. Start position: after the given cursor, or at the current head for live only.
    let cursor = if request.cursor.is_empty() {
        core.store().head()
    } else {
        request.cursor.parse::<i64>().map_err(|_| {
            Status::invalid_argument(format!(
                "invalid cursor {:?}: expected a cursor from a Change",
                request.cursor
            ))
        })?
    };

    let (sender, receiver) = mpsc::channel(QUEUE);
    let subject = caller
        .subject
        .as_deref()
        .unwrap_or("api-secret")
        .to_string();
    info!(subject, cursor, collections = ?collections, "change stream opened");
    tokio::spawn(follow(core, collections, cursor, sender, subject));
    Ok(ReceiverStream::new(receiver))
}

/// Sends every change after `cursor` until the consumer goes away or core stops.
async fn follow(
    core: Arc<Core>,
    collections: Vec<String>,
    mut cursor: i64,
    sender: mpsc::Sender<Result<Change, Status>>,
    subject: String,
) {
    let mut head = core.store().watch_head();
    let mut shutdown = core.shutdown.clone();
    loop {
        // Everything up to this head was committed before the scan below starts.
        let seen_head = *head.borrow_and_update();
        let batch = match core
            .store()
            .changes_after(cursor, collections.clone(), BATCH)
            .await
        {
            Ok(batch) => batch,
            Err(err) => {
                warn!(subject, cursor, cause = %err, "change stream cannot read the feed");
                let _ = sender
                    .send(Err(Status::unavailable("change feed unavailable")))
                    .await;
                return;
            }
        };

        if batch.is_empty() {
            // Caught up: the scan covered everything up to the head seen before it, so
            // move past changes in other collections and wait for the next commit.
            cursor = cursor.max(seen_head);
            tokio::select! {
                changed = head.changed() => if changed.is_err() { return },
                _ = shutdown.changed() => {
                    let _ = sender.send(Err(Status::unavailable("core is shutting down"))).await;
                    return;
                }
                _ = sender.closed() => break,
            }
            continue;
        }

        for change in batch {
            cursor = change.cursor;
            if sender.send(Ok(to_message(change))).await.is_err() {
                debug!(subject, cursor, "change stream consumer went away");
                return;
            }
        }
    }
    info!(subject, cursor, "change stream closed");
}

/// Converts a stored change into its wire form.
pub fn to_message(change: nightjar_store::Change) -> Change {
    let operation = match change.operation {
        nightjar_store::Operation::Create => Operation::Create,
        nightjar_store::Operation::Update => Operation::Update,
        nightjar_store::Operation::Delete => Operation::Delete,
    };
    Change {
        cursor: change.cursor.to_string(),
        collection: change.collection,
        operation: operation as i32,
        identifier: change.identifier,
        document: change
            .document
            .map(|d| serde_json::Value::Object(d).to_string().into_bytes())
            .unwrap_or_default(),
        server_modified: change.srv_modified,
    }
}
