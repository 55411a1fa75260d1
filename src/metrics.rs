//! Prometheus metrics of core and edge, in one process-wide registry, rendered in
//! the text exposition format at `/metrics`.

use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Latency buckets in seconds, from 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// Every metric Nightjar exports.
pub struct Metrics {
    registry: Registry,
    /// gRPC calls handled by core, by method and status code.
    pub core_requests: IntCounterVec,
    /// gRPC call latency in core, by method.
    pub core_latency: HistogramVec,
    /// Durable write latency in the store (queueing and commit), by collection.
    pub store_write_latency: HistogramVec,
    /// Size of the embedded database files, in bytes.
    pub store_bytes: IntGauge,
    /// Change streams ended because their consumer lagged.
    pub lagged_streams: IntCounter,
    /// HTTP requests handled by the edge, by route and status.
    pub http_requests: IntCounterVec,
    /// HTTP request latency at the edge, by route.
    pub http_latency: HistogramVec,
    /// Socket.IO sockets connected to `/storage`.
    pub sockets_connected: IntGauge,
    /// Sockets subscribed per collection.
    pub subscriptions: IntGaugeVec,
    /// Events sent to sockets, by event name.
    pub events_delivered: IntCounterVec,
    /// Events a socket could not take (its buffer was full).
    pub events_dropped: IntCounter,
    /// Sockets disconnected for being too slow.
    pub slow_disconnects: IntCounter,
    /// Reconnections of the edge's upstream change stream.
    pub upstream_reconnects: IntCounter,
}

/// The embedded database file, set by core when it opens one.
pub static STORE_FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Returns the size of the database file and its WAL, in bytes.
fn store_size(path: &std::path::Path) -> u64 {
    let wal = path.with_extension("db-wal");
    [path, wal.as_path()]
        .iter()
        .filter_map(|file| std::fs::metadata(file).ok())
        .map(|metadata| metadata.len())
        .sum()
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new_custom(Some("nightjar".into()), None)
            .expect("the registry prefix is a valid metric name");
        let metrics = Metrics {
            core_requests: IntCounterVec::new(
                Opts::new("core_requests_total", "gRPC calls handled by core"),
                &["method", "code"],
            )
            .expect("valid metric"),
            core_latency: HistogramVec::new(
                HistogramOpts::new("core_request_seconds", "gRPC call latency in core")
                    .buckets(LATENCY_BUCKETS.to_vec()),
                &["method"],
            )
            .expect("valid metric"),
            store_write_latency: HistogramVec::new(
                HistogramOpts::new("store_write_seconds", "Durable write latency in the store")
                    .buckets(LATENCY_BUCKETS.to_vec()),
                &["collection"],
            )
            .expect("valid metric"),
            store_bytes: IntGauge::new("store_bytes", "Size of the embedded database files")
                .expect("valid metric"),
            lagged_streams: IntCounter::new(
                "lagged_streams_total",
                "Change streams ended because their consumer lagged",
            )
            .expect("valid metric"),
            http_requests: IntCounterVec::new(
                Opts::new("http_requests_total", "HTTP requests handled by the edge"),
                &["route", "status"],
            )
            .expect("valid metric"),
            http_latency: HistogramVec::new(
                HistogramOpts::new("http_request_seconds", "HTTP request latency at the edge")
                    .buckets(LATENCY_BUCKETS.to_vec()),
                &["route"],
            )
            .expect("valid metric"),
            sockets_connected: IntGauge::new("sockets_connected", "Sockets connected to /storage")
                .expect("valid metric"),
            subscriptions: IntGaugeVec::new(
                Opts::new("subscriptions", "Sockets subscribed per collection"),
                &["collection"],
            )
            .expect("valid metric"),
            events_delivered: IntCounterVec::new(
                Opts::new("events_delivered_total", "Events sent to sockets"),
                &["event"],
            )
            .expect("valid metric"),
            events_dropped: IntCounter::new(
                "events_dropped_total",
                "Events a socket could not take because its buffer was full",
            )
            .expect("valid metric"),
            slow_disconnects: IntCounter::new(
                "slow_consumer_disconnects_total",
                "Sockets disconnected for being too slow",
            )
            .expect("valid metric"),
            upstream_reconnects: IntCounter::new(
                "upstream_reconnects_total",
                "Reconnections of the edge's upstream change stream",
            )
            .expect("valid metric"),
            registry,
        };
        metrics.register_all();
        metrics
    }

    fn register_all(&self) {
        let collectors: [Box<dyn prometheus::core::Collector>; 13] = [
            Box::new(self.core_requests.clone()),
            Box::new(self.core_latency.clone()),
            Box::new(self.store_write_latency.clone()),
            Box::new(self.store_bytes.clone()),
            Box::new(self.lagged_streams.clone()),
            Box::new(self.http_requests.clone()),
            Box::new(self.http_latency.clone()),
            Box::new(self.sockets_connected.clone()),
            Box::new(self.subscriptions.clone()),
            Box::new(self.events_delivered.clone()),
            Box::new(self.events_dropped.clone()),
            Box::new(self.slow_disconnects.clone()),
            Box::new(self.upstream_reconnects.clone()),
        ];
        for collector in collectors {
            self.registry
                .register(collector)
                .expect("each metric name is registered once");
        }
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        if let Some(path) = STORE_FILE.get() {
            self.store_bytes.set(store_size(path) as i64);
        }
        let mut buffer = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(cause = %err, "rendering metrics failed");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}
