//! The Socket.IO namespace `/storage`: `subscribe` authorizes a socket through core
//! and joins it to one room per granted collection; the upstream task emits
//! `create`, `update` and `delete` to those rooms.

use std::sync::Arc;

use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, SocketRef, State, TryData};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tracing::{debug, info, warn};

use super::Edge;
use crate::proto::AuthorizeRequest;

/// Namespace of the storage channel.
pub const NAMESPACE: &str = "/storage";

/// Ack message for a missing, malformed or unknown access token.
const BAD_TOKEN: &str = "Missing or bad accessToken";

/// Ack message when the subject may read none of the requested collections.
const NOTHING_GRANTED: &str = "Unauthorized to receive any collection";

/// Ack message when core cannot be reached.
const UNAVAILABLE: &str = "Storage service unavailable";

/// Registers the namespaces. Socket.IO 2.x clients always join `/` as well, so it
/// exists and does nothing.
pub fn register(io: &SocketIo) {
    io.ns("/", async |_socket: SocketRef| {});
    io.ns(NAMESPACE, async |socket: SocketRef| {
        debug!(socket = %socket.id, "storage socket connected");
        socket.on("subscribe", subscribe);
    });
}

/// Handles `subscribe {accessToken, collections?}` and answers through the ack.
async fn subscribe(
    socket: SocketRef,
    TryData(payload): TryData<Value>,
    ack: AckSender,
    State(edge): State<Arc<Edge>>,
) {
    let reply = authorize(&socket, payload.ok(), &edge).await;
    if let Err(err) = ack.send(&reply) {
        // A client that sent no ack callback gets no answer; nothing to do then.
        debug!(socket = %socket.id, cause = %err, "subscribe ack not sent");
    }
}

async fn authorize(socket: &SocketRef, payload: Option<Value>, edge: &Edge) -> Value {
    // 1. The payload must be an object with a non-empty string token.
    let payload = payload.unwrap_or(Value::Null);
    let Some(token) = payload
        .get("accessToken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    else {
        return failure(BAD_TOKEN);
    };
    let collections: Vec<String> = match payload.get("collections") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };

    // 2. Core decides which collections are granted.
    let mut request = tonic::Request::new(AuthorizeRequest {
        access_token: token.to_string(),
        collections,
    });
    if let Some(ip) = peer_ip(socket) {
        if let Ok(value) = MetadataValue::try_from(ip) {
            request.metadata_mut().insert("x-forwarded-for", value);
        }
    }
    let granted = match edge.storage.clone().authorize(request).await {
        Ok(reply) => reply.into_inner(),
        Err(status) if status.code() == Code::Unauthenticated => return failure(BAD_TOKEN),
        Err(status) => {
            warn!(socket = %socket.id, cause = %status, "subscribe cannot reach core");
            return failure(UNAVAILABLE);
        }
    };
    if granted.collections.is_empty() {
        return failure(NOTHING_GRANTED);
    }

    // 3. Join before acknowledging, so no event committed after the ack is missed.
    socket.join(granted.collections.clone());
    info!(socket = %socket.id, subject = granted.subject, collections = ?granted.collections, "socket subscribed");
    json!({ "success": true, "collections": granted.collections })
}

fn failure(message: &str) -> Value {
    json!({ "success": false, "message": message })
}

fn peer_ip(socket: &SocketRef) -> Option<String> {
    socket
        .req_parts()
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip().to_string())
}
