//! Write: closed-loop creates from many concurrent clients, through REST and
//! through gRPC, with and without subscribers; measures acknowledged creates per
//! second and request latency. Nightjar acknowledges a create only after its
//! transaction is durable (SQLite WAL, `synchronous=FULL`); the reference stores
//! nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::delivery::{Deliveries, Ledger};
use crate::document::{clock_ns, marked_entry, now_ms};
use crate::fleet::{ConnectSummary, Fleet};
use crate::grpc::GrpcClients;
use crate::latency::{Percentiles, ShardedHistogram};
use crate::report::{Report, Window, WindowUsage};
use crate::rest::RestClient;
use crate::server::{Kind, Target};

/// Collection every write goes to.
const COLLECTION: &str = "entries";

/// Options of the write scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct WriteArgs {
    /// Concurrent clients, each sending its next create when the previous one is answered.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,

    /// Seconds each variant writes.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,

    /// Most creates per variant; the variant ends at this count or after `--seconds`.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_writes: u64,

    /// Subscribers of the "with subscribers" variants.
    #[arg(long, default_value_t = 10)]
    pub subscribers: usize,

    /// Seconds to wait after the last write for the subscribers' events.
    #[arg(long, default_value_t = 30.0)]
    pub drain_seconds: f64,

    /// Skip the gRPC variants.
    #[arg(long)]
    pub no_grpc: bool,
}

/// The protocol a variant writes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Rest,
    Grpc,
}

/// Figures of one variant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VariantResult {
    /// REST or gRPC.
    pub transport: Transport,
    /// Subscribers listening during the writes.
    pub subscribers: usize,
    /// How connecting them went, when there were any.
    pub connect: Option<ConnectSummary>,
    /// Creates acknowledged (201 or 200 over REST, OK over gRPC).
    pub acknowledged: u64,
    /// Creates that failed.
    pub failed: u64,
    /// The first failure, for the report.
    pub first_failure: Option<String>,
    /// Wall time of the writes, in seconds.
    pub seconds: f64,
    /// Acknowledged creates per second.
    pub creates_per_second: f64,
    /// Request latency from send to response.
    pub latency: Percentiles,
    /// What the subscribers received, when there were any.
    pub deliveries: Option<Deliveries>,
    /// Server and bench resource use during the writes (the drain excluded).
    pub usage: WindowUsage,
    /// Server CPU time per acknowledged create, in microseconds.
    pub server_cpu_us_per_create: f64,
}

/// Runs the write variants against a fresh target each, started by `start`.
pub async fn run<F, Fut>(kind: Kind, args: &WriteArgs, mut start: F) -> Result<Report, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Target, String>>,
{
    let mut report = Report::new(
        "write",
        kind.name(),
        json!({
            "clients": args.clients,
            "seconds": args.seconds,
            "max_writes": args.max_writes,
            "subscribers": args.subscribers,
            "collection": COLLECTION,
            "writes": "closed loop; each variant on a fresh server",
        }),
    );
    let mut variants = vec![(Transport::Rest, 0), (Transport::Rest, args.subscribers)];
    if kind == Kind::Nightjar && !args.no_grpc {
        variants.push((Transport::Grpc, 0));
        variants.push((Transport::Grpc, args.subscribers));
    }

    let mut results = Vec::new();
    for (transport, subscribers) in variants {
        let mut target = start().await?;
        let result = run_variant(&target, args, transport, subscribers).await?;
        eprintln!(
            "write/{} {transport:?} with {subscribers} subscribers: {:.0} creates/s, p50 {:.2} ms p99 {:.2} ms, {} failed, server {:.2} cores ({:.0} us/create), bench {:.2} cores{}",
            kind.name(),
            result.creates_per_second,
            result.latency.p50_ms,
            result.latency.p99_ms,
            result.failed,
            result.usage.server_cores,
            result.server_cpu_us_per_create,
            result.usage.bench_cores,
            match &result.deliveries {
                Some(d) => format!(
                    "; events lost {} duplicated {}, delivery p99 {:.2} ms",
                    d.lost, d.duplicated, d.latency.p99_ms
                ),
                None => String::new(),
            }
        );
        results.push(result);
        target.stop();
    }
    report.results = json!({ "variants": results });
    Ok(report)
}

/// Runs one variant: optional subscribers, then `clients` closed-loop writers.
async fn run_variant(
    target: &Target,
    args: &WriteArgs,
    transport: Transport,
    subscribers: usize,
) -> Result<VariantResult, String> {
    // 1. Subscribers, with room in the ledger for every write the variant may send.
    let ledger = Arc::new(Ledger::new(subscribers, &[args.max_writes]));
    let fleet = if subscribers > 0 {
        let fleet = Fleet::connect(
            &target.http,
            &target.access_token,
            &[COLLECTION],
            subscribers,
            64,
            ledger.clone(),
        )
        .await;
        fleet.require_any()?;
        Some(fleet)
    } else {
        None
    };

    // 2. The writers.
    let writer = match transport {
        Transport::Rest => {
            Writer::Rest(RestClient::new(&target.http, &target.bearer, args.clients))
        }
        Transport::Grpc => {
            let url = target.grpc.as_deref().ok_or("this target has no gRPC")?;
            Writer::Grpc(GrpcClients::connect(url, &target.bearer, args.clients).await?)
        }
    };
    let next = Arc::new(AtomicU64::new(0));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_failure = Arc::new(std::sync::Mutex::new(None::<String>));
    let latency = Arc::new(ShardedHistogram::default());
    let device = super::run_device();
    let date_base = now_ms();
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let window = Window::start(target);
    let started = Instant::now();

    let mut tasks = Vec::with_capacity(args.clients);
    for client in 0..args.clients {
        let (writer, next, acknowledged, failed, first_failure, latency, ledger) = (
            writer.clone(),
            next.clone(),
            acknowledged.clone(),
            failed.clone(),
            first_failure.clone(),
            latency.clone(),
            ledger.clone(),
        );
        let device = device.clone();
        let max_writes = args.max_writes;
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= max_writes {
                    break;
                }
                let sent_ns = clock_ns();
                let body = marked_entry(&device, date_base + seq as i64, seq, sent_ns);
                let outcome = writer.create(client, body).await;
                latency.record(client, (clock_ns() - sent_ns) / 1000);
                match outcome {
                    Ok(()) => {
                        ledger.acknowledge(seq);
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(failure) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_failure
                            .lock()
                            .expect("lock is not poisoned")
                            .get_or_insert(failure);
                    }
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let usage = window.finish(target);

    // 3. Events, when anyone listened.
    let deliveries = match &fleet {
        Some(_) => {
            ledger
                .drain(0, Duration::from_secs_f64(args.drain_seconds))
                .await;
            Some(ledger.deliveries(0))
        }
        None => None,
    };
    let connect = fleet.as_ref().map(|fleet| fleet.summary.clone());
    if let Some(fleet) = fleet {
        fleet.close();
    }

    let acknowledged = acknowledged.load(Ordering::Relaxed);
    let first_failure = first_failure.lock().expect("lock is not poisoned").clone();
    Ok(VariantResult {
        transport,
        subscribers,
        connect,
        acknowledged,
        failed: failed.load(Ordering::Relaxed),
        first_failure,
        seconds,
        creates_per_second: acknowledged as f64 / seconds.max(1e-9),
        latency: Percentiles::of(&latency.merged()),
        deliveries,
        usage,
        server_cpu_us_per_create: usage.server_cpu_seconds * 1e6 / acknowledged.max(1) as f64,
    })
}

/// A create over one of the two protocols.
#[derive(Clone)]
enum Writer {
    Rest(RestClient),
    Grpc(GrpcClients),
}

impl Writer {
    /// Creates one document; any answer but a successful create is an error.
    async fn create(&self, client: usize, body: String) -> Result<(), String> {
        match self {
            Writer::Rest(rest) => match rest.create(COLLECTION, body).await? {
                200 | 201 => Ok(()),
                status => Err(format!("HTTP {status}")),
            },
            Writer::Grpc(grpc) => grpc
                .create(client, COLLECTION, body)
                .await
                .map(|_| ())
                .map_err(|status| status.to_string()),
        }
    }
}
