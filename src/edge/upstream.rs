//! The edge's one upstream `WatchChanges` stream, fanned out to Socket.IO rooms.
//!
//! It reconnects with backoff when core restarts or the connection drops and
//! resumes after the last cursor it delivered, so sockets miss nothing.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use socketioxide::SocketIo;
use tonic::metadata::MetadataValue;
use tracing::{debug, info, warn};

use super::Edge;
use super::socket::NAMESPACE;
use crate::proto::{Change, Operation, WatchChangesRequest};

/// First wait before reconnecting; doubles up to `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Follows core's change feed forever, emitting every change to its collection's room.
pub async fn run(edge: Arc<Edge>, io: SocketIo) {
    let mut cursor = String::new();
    let mut backoff = MIN_BACKOFF;
    loop {
        match follow(&edge, &io, &mut cursor, &mut backoff).await {
            Ok(()) => info!(cursor, "upstream change stream ended; reconnecting"),
            Err(status) => {
                warn!(cursor, code = ?status.code(), cause = status.message(), "upstream change stream failed; reconnecting")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn follow(
    edge: &Edge,
    io: &SocketIo,
    cursor: &mut String,
    backoff: &mut Duration,
) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(WatchChangesRequest {
        collections: Vec::new(),
        cursor: cursor.clone(),
    });
    if let Ok(value) = MetadataValue::try_from(edge.secret.sha1_hex()) {
        request.metadata_mut().insert("api-secret", value);
    }
    let mut stream = edge
        .storage
        .clone()
        .watch_changes(request)
        .await?
        .into_inner();
    info!(cursor, "upstream change stream connected");
    *backoff = MIN_BACKOFF;

    while let Some(change) = stream.message().await? {
        emit(io, &change).await;
        *cursor = change.cursor;
    }
    Ok(())
}

/// Emits one change to the sockets subscribed to its collection.
async fn emit(io: &SocketIo, change: &Change) {
    let Some(namespace) = io.of(NAMESPACE) else {
        return;
    };
    let (event, payload) = match change.operation() {
        Operation::Create | Operation::Update => {
            let document: Value = serde_json::from_slice(&change.document).unwrap_or(Value::Null);
            let event = if change.operation() == Operation::Create {
                "create"
            } else {
                "update"
            };
            (
                event,
                json!({ "colName": change.collection, "doc": document }),
            )
        }
        Operation::Delete => (
            "delete",
            json!({ "colName": change.collection, "identifier": change.identifier }),
        ),
        Operation::Unspecified => return,
    };
    if let Err(err) = namespace
        .to(change.collection.clone())
        .emit(event, &payload)
        .await
    {
        warn!(collection = change.collection, cursor = change.cursor, cause = %err, "event broadcast failed");
    } else {
        debug!(
            collection = change.collection,
            identifier = change.identifier,
            event,
            "event broadcast"
        );
    }
}
