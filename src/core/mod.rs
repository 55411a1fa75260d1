//! The core process: a tonic server that owns every APIv3 rule, authorization and
//! the change feed, on top of the embedded store or MongoDB.

mod admin;
pub mod auth;
pub mod documents;
pub mod forwarded;
mod grpc;
mod metrics_layer;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

use nightjar_auth::{ApiSecret, Subject};
use nightjar_store::{AuthTable, Store};
use tokio::net::TcpListener;
use tokio::sync::watch as signal;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

use crate::config::CoreConfig;
use crate::proto::admin_server::AdminServer;
use crate::proto::storage_server::StorageServer;
use auth::Authenticator;
use documents::{Documents, Rules};

/// Nightscout release whose API this reproduces; clients compare it with minimum versions.
pub const NIGHTSCOUT_VERSION: &str = "15.0.7";

/// APIv3 version reported by `version` and `status`.
pub const API_VERSION: &str = "3.0.3-alpha";

/// Shared state of every core service.
pub struct Core {
    /// APIv3 operations over the store.
    pub documents: Documents,
    /// Credential and permission checks.
    pub auth: Authenticator,
    /// Lifetime of issued JWTs.
    pub jwt_lifetime: std::time::Duration,
    /// Flips to true when the process starts shutting down; streams end on it.
    pub shutdown: signal::Receiver<bool>,
}

impl Core {
    /// Returns the store.
    pub fn store(&self) -> &Store {
        &self.documents.store
    }

    /// Creates the subject `admin` with the `admin` role and returns its access token.
    pub async fn create_first_admin(&self) -> Result<String, String> {
        let subject = Subject {
            id: nightjar_auth::new_object_id(),
            name: "admin".into(),
            roles: vec!["admin".into()],
            notes: "created on first start".into(),
            created_at: nightjar_apiv3::date::iso_utc(nightjar_store::sqlite::now_ms()),
        };
        let body = serde_json::to_value(&subject).map_err(|err| err.to_string())?;
        self.store()
            .save_auth(AuthTable::Subjects, &subject.id, &body)
            .await
            .map_err(|err| err.to_string())?;
        self.auth.reload().await.map_err(|err| err.to_string())?;
        Ok(nightjar_auth::access_token(&self.auth.secret, &subject))
    }
}

/// A started core.
pub struct Running {
    /// The address the gRPC listener is bound to.
    pub address: SocketAddr,
    /// Shared state, for in-process callers.
    pub core: Arc<Core>,
    /// The server task.
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    /// Sends the shutdown signal to streams and the server.
    stop: signal::Sender<bool>,
}

impl Running {
    /// Waits for SIGTERM or Ctrl-C, then stops the server, ends streams and closes the store.
    pub async fn wait_for_shutdown(self) -> Result<(), String> {
        wait_for_signal().await;
        info!("shutting down core");
        let _ = self.stop.send(true);
        match self.server.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => warn!(cause = %err, "gRPC server ended with an error"),
            Err(err) => warn!(cause = %err, "gRPC server task failed"),
        }
        let store = self.core.store().clone();
        tokio::task::spawn_blocking(move || store.close())
            .await
            .map_err(|err| err.to_string())?;
        info!("core stopped");
        Ok(())
    }
}

/// Opens the store and starts the gRPC server; returns once it accepts connections.
pub async fn start(config: CoreConfig, secret: ApiSecret) -> Result<Running, String> {
    // 1. Store and authorization.
    let store = open_store(&config).await?;
    let forwarding_proof = forwarded::proof(&secret);
    if !config.api3_security_enable {
        warn!(
            "API3_SECURITY_ENABLE=false: every request is treated as admin; never run like this in production"
        );
    }
    let auth = Authenticator::new(
        secret,
        store.clone(),
        config.auth_default_roles.clone(),
        config.auth_fail_delay,
        config.api3_security_enable,
    )
    .await?;

    let directory = auth.directory();
    for role in &config.auth_default_roles {
        if directory.role(role).is_none() {
            warn!(
                role,
                "AUTH_DEFAULT_ROLES names a role that does not exist (yet); it grants nothing until it is created"
            );
        }
    }

    // 2. Shared state.
    let (stop, shutdown) = signal::channel(false);
    let rules = Rules {
        max_limit: config.api3_max_limit,
        dedup_fallback: config.api3_dedup_fallback_enabled,
        created_at_fallback: config.api3_created_at_fallback_enabled,
    };
    let core = Arc::new(Core {
        documents: Documents {
            store,
            rules: Arc::new(rules),
        },
        auth,
        jwt_lifetime: std::time::Duration::from_secs(config.jwt_lifetime),
        shutdown: shutdown.clone(),
    });

    // 3. Listener and server.
    let listener = TcpListener::bind(config.grpc_addr).await.map_err(|err| {
        format!(
            "cannot listen on {} (NIGHTJAR_GRPC_ADDR): {err}",
            config.grpc_addr
        )
    })?;
    let address = listener.local_addr().map_err(|err| err.to_string())?;
    let mut until_stopped = shutdown.clone();
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<StorageServer<grpc::StorageService>>()
        .await;
    health_reporter
        .set_serving::<AdminServer<admin::AdminService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|err| format!("cannot build gRPC reflection: {err}"))?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|err| format!("cannot build gRPC reflection: {err}"))?;
    let mut builder = tonic::transport::Server::builder();
    let scheme = match (&config.grpc_tls_cert, &config.grpc_tls_key) {
        (Some(certificate), Some(key)) => {
            let identity = tonic::transport::Identity::from_pem(
                read_pem(certificate, "NIGHTJAR_GRPC_TLS_CERT")?,
                read_pem(key, "NIGHTJAR_GRPC_TLS_KEY")?,
            );
            builder = builder
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .map_err(|err| {
                    format!("invalid TLS certificate or key for the gRPC listener: {err}")
                })?;
            "grpcs"
        }
        _ => "grpc",
    };
    let server = builder
        .layer(metrics_layer::MetricsLayer)
        .layer(tower::util::MapRequestLayer::new(
            move |mut request: http::Request<tonic::body::Body>| {
                forwarded::settle_client_address(&forwarding_proof, &mut request);
                request
            },
        ))
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(
            StorageServer::new(grpc::StorageService::new(core.clone()))
                .max_decoding_message_size(64 * 1024 * 1024),
        )
        .add_service(AdminServer::new(admin::AdminService::new(core.clone())))
        // Nagle's algorithm would hold small responses and streamed changes for the
        // peer's delayed ACK (about 40 ms).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                let _ = until_stopped.wait_for(|stopped| *stopped).await;
            },
        );
    let server = tokio::spawn(server);
    if let Some(address) = config.metrics_addr {
        serve_metrics(address).await?;
    }
    tokio::spawn(reload_grants(core.clone(), shutdown.clone()));
    tokio::spawn(prune_changes(
        core.store().clone(),
        std::time::Duration::from_secs(config.change_retention),
        config.change_retention_count,
        shutdown.clone(),
    ));

    info!(
        version = env!("CARGO_PKG_VERSION"),
        store = core.store().engine_name(),
        location = core.store().location(),
        engine_version = core.store().engine_version(),
        "core started"
    );
    info!("listening on {scheme}://{address}");
    Ok(Running {
        address,
        core,
        server,
        stop,
    })
}

/// Opens MongoDB when a connection string is configured, else the embedded store.
async fn open_store(config: &CoreConfig) -> Result<Store, String> {
    match &config.mongo {
        Some(settings) => nightjar_store::MongoStore::open(settings.clone())
            .await
            .map(Store::Mongo)
            .map_err(|err| {
                format!(
                    "cannot open the MongoDB store at {} ({}): {err}",
                    settings.redacted_uri(),
                    settings.uri_variable
                )
            }),
        None => nightjar_store::SqliteStore::open(&config.data_dir)
            .inspect(|store| {
                let _ = crate::metrics::STORE_FILE.set(store.path().to_path_buf());
            })
            .map(Store::Embedded)
            .map_err(|err| {
                format!(
                    "cannot open the embedded store in {}: {err}",
                    config.data_dir.display()
                )
            }),
    }
}

/// Serves `/metrics` of a core that runs without an edge in its process.
async fn serve_metrics(address: SocketAddr) -> Result<(), String> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|err| format!("cannot listen on {address} (NIGHTJAR_METRICS_ADDR): {err}"))?;
    let local = listener.local_addr().map_err(|err| err.to_string())?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async { crate::metrics::METRICS.render() }),
    );
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            warn!(cause = %err, "metrics listener failed");
        }
    });
    info!("listening on http://{local} (metrics)");
    Ok(())
}

/// How often subjects and roles are reread, to see changes made by other core
/// replicas or by Nightscout itself on a shared database.
const GRANT_RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Rereads subjects and roles periodically until shutdown.
async fn reload_grants(core: Arc<Core>, mut shutdown: signal::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(GRANT_RELOAD_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(err) = core.auth.reload().await {
            warn!(cause = %err, "rereading subjects and roles failed");
        }
    }
}

/// How often old change records are pruned.
const PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Prunes change records older than `retention` or beyond the newest `keep_count`,
/// at start and then every minute, until shutdown.
async fn prune_changes(
    store: Store,
    retention: std::time::Duration,
    keep_count: u64,
    mut shutdown: signal::Receiver<bool>,
) {
    loop {
        let cutoff = nightjar_store::sqlite::now_ms()
            - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        match store.prune_changes(cutoff, keep_count).await {
            Ok(0) => {}
            Ok(deleted) => info!(deleted, "pruned old change records"),
            Err(err) => warn!(cause = %err, "pruning change records failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(PRUNE_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Reads a PEM file named by the setting `setting`.
pub fn read_pem(path: &std::path::Path, setting: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|err| format!("cannot read {} ({setting}): {err}", path.display()))
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(err) => {
                    warn!(cause = %err, "cannot listen for SIGTERM; only Ctrl-C stops the process");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
