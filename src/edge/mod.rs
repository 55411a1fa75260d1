//! The edge process: REST `/api/v3`, the authorization endpoints and the Socket.IO
//! namespace `/storage`, all backed by core over gRPC. The edge keeps no data.

mod authorization;
mod grants;
mod reply;
mod rest;
mod socket;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::header;
use nightjar_auth::ApiSecret;
use socketioxide::SocketIo;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tower_http::cors::CorsLayer;
use tracing::{debug, info, warn};

use crate::config::EdgeConfig;
use crate::metrics::METRICS;
use crate::proto::admin_client::AdminClient;
use crate::proto::storage_client::StorageClient;

/// Packets buffered per socket; a socket whose buffer fills is too slow and is
/// disconnected rather than left to miss events.
const SOCKET_BUFFER_PACKETS: usize = 1024;

/// Initial read buffer of each WebSocket. Clients send small frames (pings and
/// `subscribe`). A larger frame grows the buffer to the frame's size, and the
/// socket keeps that capacity until it closes.
const WS_READ_BUFFER_BYTES: usize = 256;

/// Largest WebSocket message and frame a client may send, in bytes: the
/// default `maxHttpBufferSize` of the Socket.IO JavaScript server. Clients of
/// `/storage` send only small `subscribe` events.
const WS_MAX_MESSAGE_BYTES: usize = 1_000_000;

/// State shared by every edge handler.
pub struct Edge {
    /// Client of core's Storage service.
    pub storage: StorageClient<InterceptedService<Channel, Forwarding>>,
    /// Client of core's Admin service.
    pub admin: AdminClient<InterceptedService<Channel, Forwarding>>,
    /// API_SECRET, for the edge's own upstream stream.
    pub secret: ApiSecret,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// The Socket.IO server, set once built; read for metrics.
    pub io: std::sync::OnceLock<SocketIo>,
    /// Access tokens of subscribed sockets, rechecked when grants change.
    pub subscriptions: grants::Subscriptions,
    /// Position of the fan-out, shared with resuming sockets.
    pub feed: upstream::Feed,
    /// Whether `GET /api/v3/test` exists (the `CI` environment variable is set).
    pub test_route: bool,
}

/// Adds the edge's forwarding proof to every call to core, so that core trusts
/// the client address the edge puts in `x-forwarded-for`.
#[derive(Clone)]
pub struct Forwarding {
    proof: MetadataValue<Ascii>,
}

impl Forwarding {
    fn new(secret: &ApiSecret) -> Result<Self, String> {
        let proof = MetadataValue::try_from(crate::core::forwarded::proof(secret))
            .map_err(|err| format!("cannot build the forwarding proof: {err}"))?;
        Ok(Self { proof })
    }
}

impl tonic::service::Interceptor for Forwarding {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert(crate::core::forwarded::FORWARDER_KEY, self.proof.clone());
        Ok(request)
    }
}

/// CORS for browsers on other origins, file:// pages (origin `null`) included.
///
/// The origin is echoed rather than `*` because socket.io-client 2.x sends its
/// long-polling requests with credentials, which browsers refuse with `*`.
fn cors() -> CorsLayer {
    use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin};
    CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods(AllowMethods::mirror_request())
        .allow_headers(AllowHeaders::mirror_request())
        .allow_credentials(true)
        .expose_headers([header::LOCATION, header::LAST_MODIFIED, header::ETAG])
}

/// Serves `/metrics`: the process-wide metrics plus current subscriptions.
async fn metrics(axum::extract::State(edge): axum::extract::State<Arc<Edge>>) -> String {
    if let Some(namespace) = edge.io.get().and_then(|io| io.of(socket::NAMESPACE)) {
        for collection in nightjar_apiv3::Collection::ALL {
            let subscribed = namespace.clone().to(collection.name()).sockets().len();
            METRICS
                .subscriptions
                .with_label_values(&[collection.name()])
                .set(subscribed as i64);
        }
    }
    METRICS.render()
}

/// Counts each HTTP request and times it, by matched route and status, inside a
/// span carrying its request id (the client's `x-request-id`, or a new one), which
/// is also forwarded to core.
async fn count_request(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let request_id = reply::ensure_request_id(request.headers_mut());
    // The route pattern, not the path: paths can carry access tokens.
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let span = tracing::info_span!("request", request_id, method = %request.method(), route);
    tracing::Instrument::instrument(count_and_run(request, next), span).await
}

async fn count_and_run(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    METRICS
        .http_requests
        .with_label_values(&[&route, &status])
        .inc();
    METRICS
        .http_latency
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Copies the URI and header values of Socket.IO requests out of hyper's read
/// buffer.
///
/// hyper parses the URI and header values as views into the connection's read
/// buffer (16 KiB after the first request). A Socket.IO session keeps its
/// handshake request for its whole life, and with it that buffer, which would
/// double the memory of an idle connection. Other requests end with their
/// response, so they keep their views.
async fn detach_from_read_buffer(request: axum::extract::Request) -> axum::extract::Request {
    // socketioxide's default request path.
    if !request.uri().path().starts_with("/socket.io") {
        return request;
    }
    let (mut parts, body) = request.into_parts();
    parts.headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let copy = match header::HeaderValue::from_bytes(value.as_bytes()) {
                Ok(mut copy) => {
                    copy.set_sensitive(value.is_sensitive());
                    copy
                }
                Err(_) => value.clone(),
            };
            (name.clone(), copy)
        })
        .collect();
    if let Ok(uri) = axum::http::Uri::try_from(parts.uri.to_string()) {
        // The router has already kept a copy of the URI as it arrived.
        parts
            .extensions
            .insert(axum::extract::OriginalUri(uri.clone()));
        parts.uri = uri;
    }
    axum::extract::Request::from_parts(parts, body)
}

/// Builds the gRPC endpoint of core at `core_url`, verifying an https:// core
/// against the CA certificate in `core_ca`.
pub fn core_endpoint(
    core_url: &str,
    core_ca: Option<&std::path::Path>,
) -> Result<Endpoint, String> {
    let mut endpoint = Endpoint::from_shared(core_url.to_string())
        .map_err(|err| format!("invalid NIGHTJAR_CORE_URL {core_url:?}: {err}"))?
        .connect_timeout(std::time::Duration::from_secs(2))
        .tcp_nodelay(true);
    if core_url.starts_with("https://") {
        let Some(ca) = core_ca else {
            return Err(format!(
                "NIGHTJAR_CORE_URL {core_url:?} uses https, so NIGHTJAR_CORE_CA must name the CA certificate that core's certificate chains to"
            ));
        };
        let certificate =
            tonic::transport::Certificate::from_pem(crate::core::read_pem(ca, "NIGHTJAR_CORE_CA")?);
        endpoint = endpoint
            .tls_config(tonic::transport::ClientTlsConfig::new().ca_certificate(certificate))
            .map_err(|err| format!("invalid TLS settings for core: {err}"))?;
    }
    Ok(endpoint)
}

/// Runs the edge until SIGTERM or Ctrl-C.
pub async fn run(
    config: EdgeConfig,
    core_url: String,
    core_ca: Option<std::path::PathBuf>,
    secret: ApiSecret,
) -> Result<(), String> {
    // 1. A lazily connected channel to core: the edge starts even while core is down.
    let channel = core_endpoint(&core_url, core_ca.as_deref())?.connect_lazy();
    let forwarding = Forwarding::new(&secret)?;
    let edge = Arc::new(Edge {
        storage: StorageClient::with_interceptor(channel.clone(), forwarding.clone())
            .max_decoding_message_size(256 * 1024 * 1024),
        admin: AdminClient::with_interceptor(channel, forwarding),
        secret,
        max_body_bytes: config.max_body_bytes,
        feed: upstream::Feed::default(),
        subscriptions: grants::Subscriptions::default(),
        io: std::sync::OnceLock::new(),
        test_route: std::env::var_os("CI").is_some(),
    });

    // 2. Socket.IO and the upstream change stream that feeds it.
    let (socket_layer, io) = SocketIo::builder()
        .max_buffer_size(SOCKET_BUFFER_PACKETS)
        .ws_read_buffer_size(WS_READ_BUFFER_BYTES)
        .ws_max_message_size(WS_MAX_MESSAGE_BYTES)
        .ws_max_frame_size(WS_MAX_MESSAGE_BYTES)
        .with_state(edge.clone())
        .build_layer();
    let _ = edge.io.set(io.clone());
    socket::register(&io);
    let upstream = tokio::spawn(upstream::run(edge.clone(), io.clone()));
    let grants = tokio::spawn(grants::run(edge.clone()));

    // 3. HTTP routes.
    let app = Router::new()
        .merge(rest::routes())
        .merge(authorization::routes())
        .route("/metrics", axum::routing::get(metrics))
        .fallback(rest::unknown)
        .method_not_allowed_fallback(rest::wrong_method)
        .layer(axum::middleware::from_fn(count_request))
        .with_state(edge.clone())
        .layer(socket_layer)
        .layer(axum::middleware::map_request(detach_from_read_buffer))
        .layer(cors());

    // 4. Listen.
    let address = format!("{}:{}", config.hostname, config.port);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|err| format!("cannot listen on {address} (HOSTNAME and PORT): {err}"))?;
    let local = listener.local_addr().map_err(|err| err.to_string())?;
    info!(
        core = core_url,
        version = env!("CARGO_PKG_VERSION"),
        "edge started"
    );
    let shutdown = async move {
        crate::core::wait_for_signal().await;
        // Tell Socket.IO clients to reconnect (to another edge, or after a restart)
        // instead of waiting for a timeout.
        info!("shutting down edge; disconnecting sockets");
        if let Err(err) = io.disconnect().await {
            warn!(cause = %err, "disconnecting sockets at shutdown failed");
        }
    };
    if let (Some(certificate), Some(key)) = (&config.tls_cert, &config.tls_key) {
        // NOTE: axum-server sets no header read timeout, so
        // NIGHTJAR_HEADER_READ_TIMEOUT applies to plain HTTP only.
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
            crate::core::read_pem(certificate, "NIGHTJAR_TLS_CERT")?,
            crate::core::read_pem(key, "NIGHTJAR_TLS_KEY")?,
        )
        .await
        .map_err(|err| format!("invalid TLS certificate or key for the edge listener: {err}"))?;
        let listener = listener.into_std().map_err(|err| err.to_string())?;
        let handle = axum_server::Handle::new();
        let stopper = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            stopper.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
        });
        info!("listening on https://{local}");
        let served = axum_server::from_tcp_rustls(listener, tls)
            .map_err(|err| err.to_string())?
            .handle(handle)
            .serve(service)
            .await;
        upstream.abort();
        grants.abort();
        info!("edge stopped");
        return served.map_err(|err| format!("HTTPS server failed: {err}"));
    }
    info!("listening on http://{local}");

    let header_read_timeout = std::time::Duration::from_secs(config.header_read_timeout);
    serve_http(listener, app, header_read_timeout, shutdown).await;
    upstream.abort();
    grants.abort();
    info!("edge stopped");
    Ok(())
}

/// Serves plain HTTP (with upgrades to WebSocket) until `shutdown` completes,
/// then gives open requests up to 10 seconds to finish.
///
/// A client that does not finish sending a request's headers within
/// `header_read_timeout` is disconnected, so connections that stall before
/// their headers are complete cannot pile up.
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: Router,
    header_read_timeout: std::time::Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Usually out of file descriptors: wait instead of spinning.
                    warn!(cause = %err, "cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Nagle's algorithm would hold small replies and events for the peer's
        // delayed ACK (about 40 ms).
        if let Err(err) = stream.set_nodelay(true) {
            debug!(cause = %err, "cannot disable Nagle's algorithm on a connection");
        }
        let service = app.clone().map_request(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request.map(axum::body::Body::new)
            },
        );
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(%peer, cause = %err, "HTTP connection ended with an error");
            }
        });
    }

    drop(listener);
    if tokio::time::timeout(std::time::Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        debug!("open HTTP requests did not finish within 10 s of shutdown");
    }
}
