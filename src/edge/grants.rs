//! Rechecks Socket.IO subscriptions when subjects or roles change: a socket loses
//! the rooms its subject may no longer read, and is disconnected when none is left
//! or its access token is gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tracing::{info, warn};

use super::Edge;
use crate::proto::{AuthorizeRequest, WatchGrantsRequest};

/// Wait before reconnecting to core's grant stream.
const RETRY: Duration = Duration::from_secs(1);

/// The access token each subscribed socket used, by socket id.
#[derive(Default)]
pub struct Subscriptions {
    sockets: Mutex<HashMap<Sid, (SocketRef, String)>>,
}

impl Subscriptions {
    /// Records that `socket` subscribed with `token`.
    pub fn insert(&self, socket: &SocketRef, token: &str) {
        self.sockets
            .lock()
            .unwrap()
            .insert(socket.id, (socket.clone(), token.to_string()));
    }

    /// Forgets a socket that disconnected.
    pub fn remove(&self, id: Sid) {
        self.sockets.lock().unwrap().remove(&id);
    }

    fn snapshot(&self) -> Vec<(SocketRef, String)> {
        self.sockets.lock().unwrap().values().cloned().collect()
    }
}

/// Follows core's grant changes until the process ends.
pub async fn run(edge: Arc<Edge>) {
    loop {
        if let Err(status) = follow(&edge).await {
            warn!(code = ?status.code(), cause = status.message(), "grant stream failed; reconnecting");
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn follow(edge: &Edge) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(WatchGrantsRequest {});
    if let Ok(value) = MetadataValue::try_from(
        edge.secret
            .service_credential(crate::core::auth::EDGE_SERVICE),
    ) {
        request
            .metadata_mut()
            .insert(crate::core::auth::SERVICE_KEY, value);
    }
    let mut stream = edge
        .storage
        .clone()
        .watch_grants(request)
        .await?
        .into_inner();
    // The first message arrives at once: rechecking then covers changes made
    // while the stream was down.
    while let Some(change) = stream.message().await? {
        recheck_all(edge, change.generation).await;
    }
    Ok(())
}

async fn recheck_all(edge: &Edge, generation: u64) {
    for (socket, token) in edge.subscriptions.snapshot() {
        let rooms: Vec<String> = socket
            .rooms()
            .into_iter()
            .map(|room| room.to_string())
            .collect();
        if rooms.is_empty() {
            continue;
        }
        let mut request = super::socket::with_peer(
            &socket,
            AuthorizeRequest {
                access_token: token,
                collections: rooms.clone(),
            },
        );
        // Not a login attempt: core must neither delay it nor count a failure
        // against the client.
        request.metadata_mut().insert(
            crate::core::forwarded::RECHECK_KEY,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        let granted = match edge.storage.clone().authorize(request).await {
            Ok(reply) => reply.into_inner().collections,
            Err(status) if status.code() == Code::Unauthenticated => Vec::new(),
            Err(status) => {
                warn!(socket = %socket.id, cause = %status, "cannot recheck a subscription; keeping it");
                continue;
            }
        };

        let revoked: Vec<String> = rooms
            .into_iter()
            .filter(|room| !granted.contains(room))
            .collect();
        if revoked.is_empty() {
            continue;
        }
        if granted.is_empty() {
            info!(socket = %socket.id, generation, "subscription revoked; disconnecting the socket");
            edge.subscriptions.remove(socket.id);
            let _ = socket.disconnect();
        } else {
            info!(socket = %socket.id, generation, collections = ?revoked, "collections revoked; leaving their rooms");
            socket.leave(revoked);
        }
    }
}
