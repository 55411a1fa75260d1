//! The Socket.IO namespace `/storage`: `subscribe` authorizes a socket through core
//! and joins it to one room per granted collection; the upstream task emits
//! `create`, `update` and `delete` to those rooms.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use socketioxide::extract::{AckSender, SocketRef, State, TryData};
use socketioxide::{SendError, SocketError, SocketIo};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tracing::{debug, info, warn};

use super::Edge;
use super::upstream::PendingJoin;
use crate::metrics::METRICS;
use crate::proto::{AuthorizeRequest, WatchChangesRequest};

/// Namespace of the storage channel.
pub const NAMESPACE: &str = "/storage";

/// Ack message for a missing, malformed or unknown access token.
const BAD_TOKEN: &str = "Missing or bad accessToken";

/// Ack message when the subject may read none of the requested collections.
const NOTHING_GRANTED: &str = "Unauthorized to receive any collection";

/// Ack message for a `cursor` that is not one the server sent.
const BAD_CURSOR: &str = "Bad cursor";

/// Ack message when core cannot be reached.
const UNAVAILABLE: &str = "Storage service unavailable";

/// Registers the namespaces. Socket.IO 2.x clients always join `/` as well, so it
/// exists and does nothing.
pub fn register(io: &SocketIo) {
    io.ns("/", async |_socket: SocketRef| {});
    // The handlers are registered in the closure's synchronous body. socketioxide
    // calls it right after sending CONNECT but only spawns the future it returns,
    // so handlers registered inside an async block race a client that emits
    // `subscribe` as soon as it is connected.
    io.ns(NAMESPACE, |socket: SocketRef| {
        debug!(socket = %socket.id, "storage socket connected");
        METRICS.sockets_connected.inc();
        socket.on("subscribe", subscribe);
        socket.on_disconnect(async |socket: SocketRef, State(edge): State<Arc<Edge>>| {
            METRICS.sockets_connected.dec();
            edge.subscriptions.remove(socket.id);
        });
        async {}
    });
}

/// Handles `subscribe {accessToken, collections?, cursor?}` and replies through the ack.
async fn subscribe(
    socket: SocketRef,
    TryData(payload): TryData<Value>,
    ack: AckSender,
    State(edge): State<Arc<Edge>>,
) {
    let (reply, replay) = authorize(&socket, payload.ok(), &edge).await;
    if let Err(err) = ack.send(&reply) {
        // A client that sent no ack callback gets no reply, which is not an error.
        debug!(socket = %socket.id, cause = %err, "subscribe ack not sent");
    }
    if let Some(replay) = replay {
        tokio::spawn(run_replay(socket, edge, replay));
    }
}

/// A resuming socket's catch-up: its own change stream from the client's cursor.
struct Replay {
    /// Stream of the changes after the cursor in the granted collections.
    stream: tonic::Streaming<crate::proto::Change>,
    /// Granted collections, joined as rooms once the replay has caught up.
    rooms: Vec<String>,
    /// The client's cursor.
    cursor: i64,
}

async fn authorize(
    socket: &SocketRef,
    payload: Option<Value>,
    edge: &Edge,
) -> (Value, Option<Replay>) {
    // 1. The payload must be an object with a non-empty string token. Tokens over
    //    MAX_CREDENTIAL_BYTES are rejected here, before any call to core, so they
    //    cannot wait in core's failed-login delay.
    let payload = payload.unwrap_or(Value::Null);
    let Some(token) = payload
        .get("accessToken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.len() <= super::reply::MAX_CREDENTIAL_BYTES)
    else {
        return (failure(BAD_TOKEN), None);
    };
    let collections: Vec<String> = match payload.get("collections") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let cursor = match payload.get("cursor") {
        None | Some(Value::Null) => None,
        Some(value) => match parse_cursor(value) {
            Some(cursor) => Some(cursor),
            None => return (failure(BAD_CURSOR), None),
        },
    };

    // 2. Core decides which collections are granted.
    let request = with_peer(
        socket,
        AuthorizeRequest {
            access_token: token.to_string(),
            collections,
        },
    );
    let granted = match edge.storage.clone().authorize(request).await {
        Ok(reply) => reply.into_inner(),
        Err(status) if status.code() == Code::Unauthenticated => return (failure(BAD_TOKEN), None),
        Err(status) => {
            warn!(socket = %socket.id, cause = %status, "subscribe cannot reach core");
            return (failure(UNAVAILABLE), None);
        }
    };
    if granted.collections.is_empty() {
        return (failure(NOTHING_GRANTED), None);
    }
    let rooms = granted.collections;
    edge.subscriptions.insert(socket, token);
    let success = json!({ "success": true, "collections": rooms });

    // 3. Without a cursor: join before acknowledging, so no event committed after the
    //    ack is missed.
    let Some(cursor) = cursor else {
        socket.join(rooms.clone());
        info!(socket = %socket.id, subject = granted.subject, collections = ?rooms, "socket subscribed");
        return (success, None);
    };

    // 4. With a cursor: replay what the client missed first, or report the history lost.
    let mut request = with_peer(
        socket,
        WatchChangesRequest {
            collections: rooms.clone(),
            cursor: cursor.to_string(),
        },
    );
    if let Ok(value) = MetadataValue::try_from(format!("Bearer {token}")) {
        request.metadata_mut().insert("authorization", value);
    }
    match edge.storage.clone().watch_changes(request).await {
        Ok(stream) => {
            info!(socket = %socket.id, subject = granted.subject, collections = ?rooms, cursor, "socket subscribed with resume");
            (
                success,
                Some(Replay {
                    stream: stream.into_inner(),
                    rooms,
                    cursor,
                }),
            )
        }
        Err(status) if status.code() == Code::OutOfRange => {
            socket.join(rooms.clone());
            info!(socket = %socket.id, subject = granted.subject, cursor, "socket resumed after its history was pruned");
            (
                json!({ "success": true, "collections": rooms, "historyLost": true }),
                None,
            )
        }
        Err(status) => {
            warn!(socket = %socket.id, cause = %status, "resume cannot reach core");
            (failure(UNAVAILABLE), None)
        }
    }
}

/// Sends the missed changes to the socket, then hands it over to the rooms.
async fn run_replay(socket: SocketRef, edge: Arc<Edge>, mut replay: Replay) {
    let mut position = replay.cursor;
    loop {
        let join = PendingJoin {
            socket: socket.clone(),
            rooms: replay.rooms.clone(),
            after: position,
        };
        if edge.feed.try_hand_over(join).await.is_ok() {
            debug!(socket = %socket.id, cursor = position, "replay caught up; socket joins its rooms");
            return;
        }

        let change = match replay.stream.message().await {
            Ok(Some(change)) => change,
            Ok(None) | Err(_) => {
                // Without its replay the socket would miss events: make the client
                // reconnect and resume instead.
                warn!(socket = %socket.id, cursor = position, "replay stream ended early; disconnecting the socket");
                let _ = socket.disconnect();
                return;
            }
        };
        if let Some((event, payload)) = super::upstream::event_of(&change)
            && let Err(err) = send_with_patience(&socket, event, &payload).await
        {
            warn!(socket = %socket.id, cursor = position, cause = %err, "socket cannot take its replay; disconnecting it");
            let _ = socket.disconnect();
            return;
        }
        position = change.cursor.parse().unwrap_or(position);
    }
}

/// How long a replay waits for a socket's full send buffer to drain.
const REPLAY_PATIENCE: Duration = Duration::from_secs(10);

/// Emits to one socket, waiting while its send buffer is full (a replay sends far
/// more than the buffer holds), for at most `REPLAY_PATIENCE`.
async fn send_with_patience(
    socket: &SocketRef,
    event: &str,
    payload: &serde_json::value::RawValue,
) -> Result<(), SendError> {
    let deadline = tokio::time::Instant::now() + REPLAY_PATIENCE;
    loop {
        match socket.emit(event, payload) {
            Err(SendError::Socket(SocketError::InternalChannelFull))
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            other => return other,
        }
    }
}

/// Reads a client cursor: a string of digits or a non-negative integer.
fn parse_cursor(value: &Value) -> Option<i64> {
    match value {
        Value::String(text) => text.parse::<i64>().ok().filter(|c| *c >= 0),
        Value::Number(number) => number.as_i64().filter(|c| *c >= 0),
        _ => None,
    }
}

/// Wraps a message for core with the socket's client IP.
pub fn with_peer<T>(socket: &SocketRef, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(ip) = peer_ip(socket) {
        crate::core::forwarded::forward_client_address(request.metadata_mut(), ip);
    }
    request
}

fn failure(message: &str) -> Value {
    json!({ "success": false, "message": message })
}

fn peer_ip(socket: &SocketRef) -> Option<std::net::IpAddr> {
    socket
        .req_parts()
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip())
}
