//! The gRPC side of the bench: clients of Nightjar's Storage service, and the
//! parallel loader that fills a store through `Create`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Channel, Endpoint};

/// Generated types and client of `nightjar.storage.v1`.
#[allow(clippy::all)]
pub mod proto {
    tonic::include_proto!("nightjar.storage.v1");
}

use proto::storage_client::StorageClient;

/// Largest gRPC response the bench accepts: a history page of 1,000 documents fits easily.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Storage clients over several HTTP/2 connections, with the bearer credential.
#[derive(Clone)]
pub struct GrpcClients {
    /// One client per connection.
    clients: Vec<StorageClient<Channel>>,
    /// `authorization` metadata value.
    authorization: AsciiMetadataValue,
}

impl GrpcClients {
    /// Opens `connections` connections to the core at `url`.
    pub async fn connect(url: &str, bearer: &str, connections: usize) -> Result<Self, String> {
        let mut clients = Vec::with_capacity(connections);
        for _ in 0..connections.max(1) {
            let channel = Endpoint::from_shared(url.to_string())
                .map_err(|err| format!("invalid gRPC URL {url:?}: {err}"))?
                .tcp_nodelay(true)
                .connect()
                .await
                .map_err(|err| format!("cannot connect to core at {url}: {err}"))?;
            clients.push(StorageClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES));
        }
        let authorization = MetadataValue::try_from(format!("Bearer {bearer}"))
            .map_err(|err| format!("bearer credential is not valid metadata: {err}"))?;
        Ok(GrpcClients {
            clients,
            authorization,
        })
    }

    /// Returns the client for connection `index` (taken modulo the number of connections).
    pub fn client(&self, index: usize) -> StorageClient<Channel> {
        self.clients[index % self.clients.len()].clone()
    }

    /// Wraps `message` in a request that carries the bearer credential.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        request
    }

    /// Creates one document and returns its srvModified.
    pub async fn create(
        &self,
        index: usize,
        collection: &str,
        document: String,
    ) -> Result<i64, tonic::Status> {
        let request = self.request(proto::CreateRequest {
            collection: collection.to_string(),
            document: document.into_bytes(),
        });
        let reply = self.client(index).create(request).await?;
        Ok(reply.into_inner().last_modified)
    }
}

/// What a load through `Create` did.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct LoadOutcome {
    /// Documents created.
    pub created: u64,
    /// Creates that failed.
    pub failed: u64,
    /// Wall time of the load, in seconds.
    pub seconds: f64,
    /// Creates per second.
    pub rate: f64,
    /// Smallest srvModified of a created document, epoch milliseconds.
    pub first_modified: i64,
    /// Largest srvModified of a created document, epoch milliseconds.
    pub last_modified: i64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
}

/// Creates documents `0..count` in `collection` with `concurrency` requests in
/// flight, spread over the clients' connections; `document(index)` gives each body.
pub async fn load(
    clients: &GrpcClients,
    collection: &str,
    count: u64,
    concurrency: usize,
    document: impl Fn(u64) -> String + Send + Sync + 'static,
) -> LoadOutcome {
    let next = Arc::new(AtomicU64::new(0));
    let created = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let first_modified = Arc::new(AtomicI64::new(i64::MAX));
    let last_modified = Arc::new(AtomicI64::new(0));
    let document = Arc::new(document);
    let started = Instant::now();

    // 1. Workers take the next index until `count` is reached.
    let mut workers = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let (clients, next, created, failed, first_error, document) = (
            clients.clone(),
            next.clone(),
            created.clone(),
            failed.clone(),
            first_error.clone(),
            document.clone(),
        );
        let (first_modified, last_modified) = (first_modified.clone(), last_modified.clone());
        let collection = collection.to_string();
        workers.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    break;
                }
                match clients.create(worker, &collection, document(index)).await {
                    Ok(modified) => {
                        first_modified.fetch_min(modified, Ordering::Relaxed);
                        last_modified.fetch_max(modified, Ordering::Relaxed);
                        created.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(status) => {
                        first_error
                            .lock()
                            .expect("lock is not poisoned")
                            .get_or_insert_with(|| status.to_string());
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }

    // 2. Progress every ten seconds while the workers run.
    let progress = {
        let created = created.clone();
        let collection = collection.to_string();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                eprintln!(
                    "loaded {} of {count} {collection}",
                    created.load(Ordering::Relaxed)
                );
            }
        })
    };
    for worker in workers {
        let _ = worker.await;
    }
    progress.abort();

    let seconds = started.elapsed().as_secs_f64();
    let created = created.load(Ordering::Relaxed);
    let first_error = first_error.lock().expect("lock is not poisoned").clone();
    LoadOutcome {
        created,
        failed: failed.load(Ordering::Relaxed),
        seconds,
        rate: created as f64 / seconds.max(1e-9),
        first_modified: first_modified.load(Ordering::Relaxed),
        last_modified: last_modified.load(Ordering::Relaxed),
        first_error,
    }
}
