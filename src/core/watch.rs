//! `WatchChanges`: replays the change feed after a cursor, then follows it live.
//!
//! Each stream reads the durable change table in batches and waits on the store's
//! head cursor when it has caught up, so replay and live delivery are one loop with
//! no seam: nothing is skipped or sent twice between them. The outgoing queue is
//! bounded; a consumer that stops reading for `SLOW_CONSUMER_TIMEOUT` is ended with
//! RESOURCE_EXHAUSTED and the last cursor it was handed.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use nightjar_apiv3::{ApiError, Collection, ErrorKind};
use nightjar_auth::Principal;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tonic::Status;
use tonic::metadata::{MetadataMap, MetadataValue};
use tracing::{debug, info, warn};

use super::Core;
use super::auth::can_watch;
use crate::proto::{self, Change, Operation, WatchChangesRequest};

/// Changes read from the store per query.
const BATCH: u32 = 500;

/// Changes queued per stream before the reader waits for the consumer.
const QUEUE: usize = 1024;

/// How long a full queue may stay full before the consumer counts as lagging.
const SLOW_CONSUMER_TIMEOUT: Duration = Duration::from_secs(10);

/// Metadata key carrying the oldest available cursor with OUT_OF_RANGE.
pub const OLDEST_CURSOR_KEY: &str = "nightjar-oldest-cursor";

/// Metadata key carrying the last cursor handed to a consumer ended for lagging.
pub const LAST_CURSOR_KEY: &str = "nightjar-last-cursor";

/// Starts a watch for `caller`; fails when no requested collection is readable or
/// the cursor is malformed or older than retention.
pub async fn open(
    core: Arc<Core>,
    caller: &Principal,
    request: WatchChangesRequest,
    peer: String,
    credential: MetadataMap,
) -> Result<ChangeStream, Status> {
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
        .filter(|c| can_watch(caller, *c))
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
        parse_cursor(&request.cursor)?
    };
    let pruned_through = core
        .store()
        .pruned_through()
        .await
        .map_err(|err| proto::status_from_api_error(&super::documents::store_error(err)))?;
    let head = core.store().head();
    if cursor > head {
        let mut status = Status::out_of_range(format!(
            "cursor {cursor} is ahead of the newest change {head}: it comes from another store or a store restored from backup; resync through History, then watch from cursor {head}"
        ));
        if let Ok(value) = MetadataValue::try_from(pruned_through.to_string()) {
            status.metadata_mut().insert(OLDEST_CURSOR_KEY, value);
        }
        return Err(status);
    }
    if cursor < pruned_through {
        let mut status = Status::out_of_range(format!(
            "cursor {cursor} is older than the retained change history; resync through History, then watch from cursor {pruned_through}"
        ));
        if let Ok(value) = MetadataValue::try_from(pruned_through.to_string()) {
            status.metadata_mut().insert(OLDEST_CURSOR_KEY, value);
        }
        return Err(status);
    }

    // 3. The reader task and the stream handed to tonic.
    let (sender, receiver) = mpsc::channel(QUEUE);
    let (lagged, lag_signal) = oneshot::channel();
    let subject = caller
        .subject
        .clone()
        .unwrap_or_else(|| "api-secret".to_string());
    info!(subject, peer, cursor, collections = ?collections, "change stream opened");
    let watcher = Watcher {
        collections,
        sender,
        lagged: Some(lagged),
        subject,
        peer,
        credential,
    };
    tokio::spawn(follow(core, watcher, cursor));
    Ok(ChangeStream {
        receiver,
        lag_signal: Some(lag_signal),
        last_cursor: String::new(),
    })
}

/// Parses a cursor from a `Change`; anything else is INVALID_ARGUMENT.
pub fn parse_cursor(text: &str) -> Result<i64, Status> {
    match text.parse::<i64>() {
        Ok(cursor) if cursor >= 0 => Ok(cursor),
        _ => Err(Status::invalid_argument(format!(
            "invalid cursor {text:?}: expected a cursor from a Change"
        ))),
    }
}

/// One open watch, as its reader task sees it.
struct Watcher {
    /// Collections watched.
    collections: Vec<String>,
    /// Queue to the consumer.
    sender: mpsc::Sender<Result<Change, Status>>,
    /// Fired when the consumer lags; taken when fired.
    lagged: Option<oneshot::Sender<()>>,
    /// Subject name, for logs.
    subject: String,
    /// Client IP, for logs.
    peer: String,
    /// The request's credential metadata, rechecked when subjects or roles change.
    credential: MetadataMap,
}

/// Returns whether the watcher's credential still grants every watched collection.
fn still_allowed(core: &Core, watcher: &Watcher) -> bool {
    let Some(principal) = core.auth.recheck(&watcher.credential) else {
        return false;
    };
    watcher
        .collections
        .iter()
        .filter_map(|name| Collection::parse(name))
        .all(|collection| can_watch(&principal, collection))
}

/// Sends every change after `cursor` until the consumer goes away, lags, loses its
/// grant, or core stops.
async fn follow(core: Arc<Core>, mut watcher: Watcher, mut cursor: i64) {
    let sender = watcher.sender.clone();
    let collections = watcher.collections.clone();
    let (subject, peer) = (watcher.subject.clone(), watcher.peer.clone());
    let mut head = core.store().watch_head();
    let mut shutdown = core.shutdown.clone();
    let mut generation = core.auth.watch_generation();
    let mut checked_generation = *generation.borrow_and_update();
    loop {
        // 0. Subjects or roles changed: end the stream if its grant went away.
        // (`changed()` below only wakes the loop; the value decides.)
        let current_generation = *generation.borrow_and_update();
        if current_generation != checked_generation {
            checked_generation = current_generation;
            if !still_allowed(&core, &watcher) {
                warn!(
                    subject,
                    peer, cursor, "change stream grant revoked; ending it"
                );
                let _ = sender
                    .send(Err(Status::permission_denied(
                        "access to the watched collections was revoked",
                    )))
                    .await;
                return;
            }
        }

        // Everything up to this head was committed before the scan below starts.
        let seen_head = *head.borrow_and_update();
        let batch = match core
            .store()
            .changes_after(cursor, collections.clone(), BATCH)
            .await
        {
            Ok(batch) => batch,
            Err(err) => {
                warn!(subject, peer, cursor, cause = %err, "change stream cannot read the feed");
                let _ = sender
                    .send(Err(Status::unavailable("change feed unavailable")))
                    .await;
                return;
            }
        };

        if batch.is_empty() {
            // Caught up: nothing in these collections up to the head seen before the
            // scan, so move past other collections' changes, send the consumer a
            // checkpoint, and wait for a commit.
            if seen_head > cursor {
                cursor = seen_head;
                let checkpoint = Change {
                    cursor: cursor.to_string(),
                    operation: Operation::Checkpoint as i32,
                    ..Default::default()
                };
                if sender.send(Ok(checkpoint)).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                changed = head.changed() => if changed.is_err() { return },
                _ = shutdown.changed() => {
                    let _ = sender.send(Err(Status::unavailable("core is shutting down; resume from your last cursor"))).await;
                    info!(subject, peer, cursor, "change stream closed for shutdown");
                    return;
                }
                _ = sender.closed() => break,
                _ = generation.changed() => {}
            }
            continue;
        }

        for change in batch {
            let permit = match tokio::time::timeout(SLOW_CONSUMER_TIMEOUT, sender.reserve()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => {
                    debug!(subject, peer, cursor, "change stream consumer went away");
                    return;
                }
                Err(_) => {
                    crate::metrics::METRICS.lagged_streams.inc();
                    warn!(
                        subject,
                        peer, cursor, "change stream consumer lagged; ending its stream"
                    );
                    if let Some(lagged) = watcher.lagged.take() {
                        let _ = lagged.send(());
                    }
                    return;
                }
            };
            cursor = change.cursor;
            permit.send(Ok(to_message(change)));
        }
    }
    info!(subject, peer, cursor, "change stream closed");
}

/// The stream tonic sends: queued changes, ended early with RESOURCE_EXHAUSTED when
/// the reader found the consumer lagging.
pub struct ChangeStream {
    /// Changes from the reader task.
    receiver: mpsc::Receiver<Result<Change, Status>>,
    /// Fires when the consumer lagged; taken once fired.
    lag_signal: Option<oneshot::Receiver<()>>,
    /// Cursor of the last change yielded to tonic.
    last_cursor: String,
}

impl Stream for ChangeStream {
    type Item = Result<Change, Status>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(signal) = self.lag_signal.as_mut() {
            match Pin::new(signal).poll(context) {
                Poll::Ready(Ok(())) => {
                    self.lag_signal = None;
                    self.receiver.close();
                    let mut status = Status::resource_exhausted(
                        "consumer too slow; resume from the last cursor received",
                    );
                    if let Ok(value) = MetadataValue::try_from(self.last_cursor.clone()) {
                        status.metadata_mut().insert(LAST_CURSOR_KEY, value);
                    }
                    return Poll::Ready(Some(Err(status)));
                }
                Poll::Ready(Err(_)) => self.lag_signal = None,
                Poll::Pending => {}
            }
        }
        match self.receiver.poll_recv(context) {
            Poll::Ready(Some(Ok(change))) => {
                self.last_cursor = change.cursor.clone();
                Poll::Ready(Some(Ok(change)))
            }
            other => other,
        }
    }
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
