//! The edge's one upstream `WatchChanges` stream, fanned out to Socket.IO rooms.
//!
//! It starts from the cursor core reports at startup, reconnects with backoff when
//! core restarts or the connection drops, and resumes after the last cursor it
//! handled, so sockets miss nothing during a core blip.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use socketioxide::extract::SocketRef;
use socketioxide::{SendError, SocketError, SocketIo};
use tokio::sync::Mutex;
use tonic::metadata::MetadataValue;
use tracing::{debug, error, info, warn};

use super::Edge;
use super::socket::NAMESPACE;
use crate::metrics::METRICS;
use crate::proto::{Change, GetCursorRequest, Operation, WatchChangesRequest};

/// First wait before reconnecting; doubles up to `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Position of the fan-out, shared with sockets that resume from a cursor.
///
/// The upstream task holds the lock while it broadcasts one change, so a resuming
/// socket can hand over from its own replay to the rooms without a gap or a
/// duplicate: it registers a [`PendingJoin`] once its replay has reached `last`,
/// and the upstream joins it to the rooms before broadcasting the first change
/// after the replay's position.
#[derive(Default)]
pub struct Feed {
    state: Mutex<FeedState>,
}

#[derive(Default)]
struct FeedState {
    /// Cursor of the last change or checkpoint the upstream handled; 0 before the first.
    last: i64,
    /// Sockets waiting to join their rooms.
    pending: Vec<PendingJoin>,
}

/// A socket whose replay delivered everything up to `after`.
pub struct PendingJoin {
    /// The socket.
    pub socket: SocketRef,
    /// Rooms (collection names) to join.
    pub rooms: Vec<String>,
    /// The replay's position: changes up to it were sent to the socket directly.
    pub after: i64,
}

impl Feed {
    /// Registers `join` when its replay has caught up with the upstream; otherwise
    /// hands it back so the replay goes on.
    pub async fn try_hand_over(&self, join: PendingJoin) -> Result<(), PendingJoin> {
        let mut state = self.state.lock().await;
        if join.after >= state.last {
            state.pending.push(join);
            Ok(())
        } else {
            Err(join)
        }
    }
}

/// Follows core's change feed until the process ends, emitting every change to
/// its collection's room.
pub async fn run(edge: Arc<Edge>, io: SocketIo) {
    let mut cursor: Option<i64> = None;
    let mut backoff = MIN_BACKOFF;
    loop {
        match follow(&edge, &io, &mut cursor, &mut backoff).await {
            Ok(()) => info!(cursor, "upstream change stream ended; reconnecting"),
            Err(status) if status.code() == tonic::Code::OutOfRange => {
                // Core no longer has our position (pruned, or a restored store):
                // sockets may have missed changes and must resync through history.
                error!(
                    cursor,
                    cause = status.message(),
                    "upstream cursor is no longer valid; restarting from core's newest change and disconnecting sockets so they resume"
                );
                cursor = None;
                if let Err(err) = io.disconnect().await {
                    warn!(cause = %err, "disconnecting sockets failed");
                }
            }
            Err(status) => {
                warn!(cursor, code = ?status.code(), cause = status.message(), "upstream change stream failed; reconnecting")
            }
        }
        METRICS.upstream_reconnects.inc();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn with_secret<T>(edge: &Edge, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = MetadataValue::try_from(
        edge.secret
            .service_credential(crate::core::auth::EDGE_SERVICE),
    ) {
        request
            .metadata_mut()
            .insert(crate::core::auth::SERVICE_KEY, value);
    }
    request
}

async fn follow(
    edge: &Edge,
    io: &SocketIo,
    cursor: &mut Option<i64>,
    backoff: &mut Duration,
) -> Result<(), tonic::Status> {
    // 1. The first connection starts at core's current head, later ones after the last cursor.
    let start = match *cursor {
        Some(position) => position,
        None => {
            let head = edge
                .storage
                .clone()
                .get_cursor(with_secret(edge, GetCursorRequest {}))
                .await?
                .into_inner();
            let head = head.cursor.parse::<i64>().unwrap_or(0);
            edge.feed.state.lock().await.last = head;
            *cursor = Some(head);
            head
        }
    };

    // 2. Stream and fan out.
    let request = with_secret(
        edge,
        WatchChangesRequest {
            collections: Vec::new(),
            cursor: start.to_string(),
        },
    );
    let mut stream = edge
        .storage
        .clone()
        .watch_changes(request)
        .await?
        .into_inner();
    info!(cursor = start, "upstream change stream connected");
    *backoff = MIN_BACKOFF;

    while let Some(change) = stream.message().await? {
        let Ok(position) = change.cursor.parse::<i64>() else {
            warn!(
                cursor = change.cursor,
                "upstream sent a malformed cursor; ignoring the change"
            );
            continue;
        };
        let mut state = edge.feed.state.lock().await;
        let ready: Vec<PendingJoin> = extract_ready(&mut state.pending, position);
        for join in ready {
            join.socket.join(join.rooms);
        }
        emit(io, &change).await;
        state.last = position;
        drop(state);
        *cursor = Some(position);
    }
    Ok(())
}

fn extract_ready(pending: &mut Vec<PendingJoin>, position: i64) -> Vec<PendingJoin> {
    let (ready, waiting): (Vec<_>, Vec<_>) =
        pending.drain(..).partition(|join| position > join.after);
    *pending = waiting;
    ready
}

/// Payload of `create` and `update`: the document is copied from core's JSON
/// bytes as they are, never parsed.
#[derive(serde::Serialize)]
struct DocumentEvent<'a> {
    #[serde(rename = "colName")]
    collection: &'a str,
    doc: &'a RawValue,
    cursor: &'a str,
}

/// Payload of `delete`.
#[derive(serde::Serialize)]
struct DeleteEvent<'a> {
    #[serde(rename = "colName")]
    collection: &'a str,
    identifier: &'a str,
    cursor: &'a str,
}

/// Returns the Socket.IO event name and serialized payload for a change; `None`
/// for checkpoints and for a document that is not valid JSON (logged).
pub fn event_of(change: &Change) -> Option<(&'static str, Box<RawValue>)> {
    let serialized = match change.operation() {
        Operation::Create | Operation::Update => {
            let event = if change.operation() == Operation::Create {
                "create"
            } else {
                "update"
            };
            let document: &RawValue = match serde_json::from_slice(&change.document) {
                Ok(document) => document,
                Err(err) => {
                    warn!(collection = change.collection, cursor = change.cursor, cause = %err, "change carries a malformed document; not sent");
                    return None;
                }
            };
            let payload = DocumentEvent {
                collection: &change.collection,
                doc: document,
                cursor: &change.cursor,
            };
            (event, serde_json::value::to_raw_value(&payload))
        }
        Operation::Delete => {
            let payload = DeleteEvent {
                collection: &change.collection,
                identifier: &change.identifier,
                cursor: &change.cursor,
            };
            ("delete", serde_json::value::to_raw_value(&payload))
        }
        Operation::Checkpoint | Operation::Unspecified => return None,
    };
    match serialized {
        (event, Ok(payload)) => Some((event, payload)),
        (_, Err(err)) => {
            warn!(collection = change.collection, cursor = change.cursor, cause = %err, "event cannot be serialized");
            None
        }
    }
}

/// Removes a socket whose buffer is full from every room at once, so nothing after
/// the event it missed is queued, then disconnects it. Disconnecting sends a
/// packet, which fails while the buffer is still full, so it is retried until the
/// client reads again or its transport closes; the client then resumes from the
/// last cursor it received.
fn disconnect_slow(socket: SocketRef) {
    socket.leave_all();
    tokio::spawn(async move {
        while let Err(SocketError::InternalChannelFull) = socket.clone().disconnect() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        debug!(socket = %socket.id, "slow socket disconnected");
    });
}

/// Emits one change to each socket subscribed to its collection.
///
/// The payload is serialized once. Sockets are sent to one by one rather than by
/// a room broadcast, so that a socket whose buffer is full is known. Such a socket
/// is disconnected (and counted) instead of silently missing the event, and its
/// client resumes from its last cursor.
async fn emit(io: &SocketIo, change: &Change) {
    let Some((event, payload)) = event_of(change) else {
        return;
    };
    let Some(namespace) = io.of(NAMESPACE) else {
        return;
    };
    for socket in namespace.to(change.collection.clone()).sockets() {
        match socket.emit(event, &payload) {
            Ok(()) => METRICS.events_delivered.with_label_values(&[event]).inc(),
            Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                METRICS.events_dropped.inc();
                METRICS.slow_disconnects.inc();
                warn!(socket = %socket.id, collection = change.collection, cursor = change.cursor, "socket too slow to take events; disconnecting it");
                disconnect_slow(socket);
            }
            Err(err) => {
                debug!(socket = %socket.id, cause = %err, "event not sent to a closing socket")
            }
        }
    }
    debug!(
        collection = change.collection,
        identifier = change.identifier,
        event,
        "event sent"
    );
}
