//! Catch-up: a client that resyncs a whole collection (100,000 treatments by
//! default) through history pages, as AndroidAPS does after being offline;
//! measures documents per second and page latency over REST and over gRPC.
//!
//! The treatments are loaded like the query scenario's entries (see `LOAD_ENV`)
//! and read after a restart with the defaults. Each REST page is parsed
//! completely, as a client has to, and the next page starts after the largest
//! `srvModified` it holds. A pass checks that it saw every document exactly once.

use std::collections::HashSet;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::document::loaded_treatment;
use crate::grpc::{GrpcClients, LoadOutcome, proto};
use crate::latency::{Percentiles, new_histogram};
use crate::report::{Report, Window, WindowUsage};
use crate::rest::RestClient;
use crate::server::Target;

/// Collection the scenario loads and resyncs.
const COLLECTION: &str = "treatments";

/// Start of every resync: 2000-01-01T00:00:00Z in epoch milliseconds, the
/// earliest instant APIv3 accepts as a history timestamp (it rejects 0).
const RESYNC_START: i64 = 946_684_800_000;

/// Options of the catch-up scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct CatchupArgs {
    /// Treatments in the store.
    #[arg(long, default_value_t = 100_000)]
    pub treatments: u64,

    /// Documents per history page (Nightjar's default API3_MAX_LIMIT is 1000).
    #[arg(long, default_value_t = 1000)]
    pub page: i64,

    /// Complete resyncs per transport.
    #[arg(long, default_value_t = 3)]
    pub passes: usize,

    /// Create requests in flight while loading.
    #[arg(long, default_value_t = 128)]
    pub load_concurrency: usize,

    /// gRPC connections used for loading.
    #[arg(long, default_value_t = 4)]
    pub load_connections: usize,
}

/// Figures of one complete resync.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PassResult {
    /// `rest` or `grpc`.
    pub transport: String,
    /// Documents received, duplicates included.
    pub documents: u64,
    /// Distinct identifiers received.
    pub distinct: u64,
    /// Pages requested, the final empty one included.
    pub pages: u64,
    /// Wall time of the pass, in seconds.
    pub seconds: f64,
    /// Documents per second.
    pub documents_per_second: f64,
    /// Latency of each page request, parsing included.
    pub page_latency: Percentiles,
    /// Server and bench resource use.
    pub usage: WindowUsage,
}

/// Loads the treatments through gRPC Create on `target`.
pub async fn load(target: &Target, args: &CatchupArgs) -> Result<LoadOutcome, String> {
    let url = target.grpc.clone().ok_or("this target has no gRPC")?;
    let clients = GrpcClients::connect(&url, &target.bearer, args.load_connections).await?;
    let device = super::run_device();
    eprintln!(
        "catchup: loading {} treatments through gRPC Create",
        args.treatments
    );
    let loaded = crate::grpc::load(
        &clients,
        COLLECTION,
        args.treatments,
        args.load_concurrency,
        move |index| loaded_treatment(&device, index),
    )
    .await;
    eprintln!(
        "catchup: loaded {} in {:.1} s ({:.0}/s), {} failed",
        loaded.created, loaded.seconds, loaded.rate, loaded.failed
    );
    if loaded.failed > 0 {
        return Err(format!(
            "{} creates failed while loading; first: {:?}",
            loaded.failed, loaded.first_error
        ));
    }
    Ok(loaded)
}

/// Runs the resync passes against `target`, which contains the `loaded` treatments.
pub async fn run(
    target: &mut Target,
    args: &CatchupArgs,
    loaded: LoadOutcome,
) -> Result<Report, String> {
    let mut report = Report::new(
        "catchup",
        target.kind.name(),
        json!({
            "treatments": args.treatments,
            "page": args.page,
            "passes": args.passes,
            "load_concurrency": args.load_concurrency,
            "loaded_with": format!("{}={}", super::LOAD_ENV.0, super::LOAD_ENV.1),
        }),
    );
    let url = target.grpc.clone().ok_or("this target has no gRPC")?;
    let clients = GrpcClients::connect(&url, &target.bearer, 1).await?;

    // 2. Resync passes, alternating transports.
    let rest = RestClient::new(&target.http, &target.bearer, 1);
    let mut passes = Vec::new();
    for _ in 0..args.passes {
        for transport in ["rest", "grpc"] {
            let pass = resync(target, &rest, &clients, transport, args.page).await?;
            eprintln!(
                "catchup/{transport}: {} documents ({} distinct) in {} pages, {:.2} s, {:.0} documents/s, page p50 {:.1} ms p99 {:.1} ms",
                pass.documents,
                pass.distinct,
                pass.pages,
                pass.seconds,
                pass.documents_per_second,
                pass.page_latency.p50_ms,
                pass.page_latency.p99_ms
            );
            if pass.distinct != loaded.created || pass.documents != pass.distinct {
                return Err(format!(
                    "{transport} resync received {} documents ({} distinct), expected each of {} once",
                    pass.documents, pass.distinct, loaded.created
                ));
            }
            passes.push(pass);
        }
    }
    report.results = json!({ "load": loaded, "passes": passes });
    Ok(report)
}

/// Reads the whole collection page by page from `RESYNC_START`.
async fn resync(
    target: &Target,
    rest: &RestClient,
    grpc: &GrpcClients,
    transport: &str,
    page: i64,
) -> Result<PassResult, String> {
    let window = Window::start(target);
    let started = Instant::now();
    let mut latency = new_histogram();
    let mut identifiers: HashSet<String> = HashSet::new();
    let (mut documents, mut pages, mut after) = (0u64, 0u64, RESYNC_START);

    loop {
        let begun = Instant::now();
        let batch = match transport {
            "rest" => rest_page(rest, after, page).await?,
            _ => grpc_page(grpc, after, page).await?,
        };
        latency.saturating_record(begun.elapsed().as_micros().max(1) as u64);
        pages += 1;
        if batch.is_empty() {
            break;
        }

        // The next page starts after the newest srvModified of this one.
        for document in &batch {
            let modified = document["srvModified"]
                .as_i64()
                .ok_or_else(|| format!("history document without srvModified: {document}"))?;
            after = after.max(modified);
            if let Some(identifier) = document["identifier"].as_str() {
                identifiers.insert(identifier.to_string());
            }
        }
        documents += batch.len() as u64;
    }

    let seconds = started.elapsed().as_secs_f64();
    Ok(PassResult {
        transport: transport.to_string(),
        documents,
        distinct: identifiers.len() as u64,
        pages,
        seconds,
        documents_per_second: documents as f64 / seconds.max(1e-9),
        page_latency: Percentiles::of(&latency),
        usage: window.finish(target),
    })
}

async fn rest_page(rest: &RestClient, after: i64, page: i64) -> Result<Vec<Value>, String> {
    let path = format!("/api/v3/{COLLECTION}/history/{after}?limit={page}");
    let reply = rest.get(&path).await?;
    if reply.status != 200 {
        return Err(format!(
            "HTTP {} for {path}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        ));
    }
    let mut body: Value = serde_json::from_slice(&reply.body)
        .map_err(|err| format!("history page is not JSON: {err}"))?;
    match body["result"].take() {
        Value::Array(documents) => Ok(documents),
        other => Err(format!("history `result` is not an array: {other}")),
    }
}

async fn grpc_page(grpc: &GrpcClients, after: i64, page: i64) -> Result<Vec<Value>, String> {
    let request = grpc.request(proto::HistoryRequest {
        collection: COLLECTION.to_string(),
        last_modified: after,
        inclusive: false,
        limit: Some(page),
        fields: Vec::new(),
    });
    let reply = grpc
        .client(0)
        .history(request)
        .await
        .map_err(|status| format!("gRPC History failed: {status}"))?
        .into_inner();
    serde_json::from_slice(&reply.documents)
        .map_err(|err| format!("gRPC History documents are not a JSON array: {err}"))
}
