//! Query: a store of many entries (1,000,000 by default, one every five minutes
//! from 2016) searched by date range with limit 100, and paged through history;
//! measures request latency over REST (edge and core) and over gRPC (core only).
//!
//! The store is loaded through gRPC `Create` with many requests in flight, on a
//! Nightjar started with `API3_DEDUP_FALLBACK_ENABLED=false` (see `LOAD_ENV`),
//! and queried after a restart with the defaults. With `--data-dir` the loaded
//! store is kept and reused by later runs: a file `bench-store.json` beside the
//! data records what was loaded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::document::{ENTRY_SPACING_MS, entry_date, loaded_entry};
use crate::grpc::{GrpcClients, LoadOutcome, load, proto};
use crate::latency::{Percentiles, ShardedHistogram};
use crate::report::{Report, Window, WindowUsage};
use crate::rest::{RestClient, count_documents, etag_millis};
use crate::server::Target;

/// Collection the scenario loads and queries.
const COLLECTION: &str = "entries";

/// Documents per search or history page.
const PAGE: i64 = 100;

/// Consecutive history pages read from each random starting point.
const PAGES_PER_WALK: usize = 10;

/// Options of the query scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    /// Entries in the store.
    #[arg(long, default_value_t = 1_000_000)]
    pub entries: u64,

    /// Keep the store in this directory and reuse it when it already contains `--entries`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,

    /// Create requests in flight while loading.
    #[arg(long, default_value_t = 128)]
    pub load_concurrency: usize,

    /// gRPC connections used for loading.
    #[arg(long, default_value_t = 4)]
    pub load_connections: usize,

    /// Concurrent clients issuing queries (1 measures latency without queueing).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,

    /// Seconds each kind of query runs.
    #[arg(long, default_value_t = 15.0)]
    pub seconds: f64,

    /// Most queries of each kind.
    #[arg(long, default_value_t = 200_000)]
    pub max_queries: u64,
}

/// Contents of `bench-store.json`, the record of a kept store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreManifest {
    /// Entries loaded.
    pub entries: u64,
    /// srvModified of the first and the last loaded entry.
    pub first_modified: i64,
    pub last_modified: i64,
    /// Outcome of the load.
    pub load: LoadOutcome,
}

/// Latency of one kind of query.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryResult {
    /// Kind of query, such as `rest date range`.
    pub kind: String,
    /// Requests that returned the expected documents.
    pub ok: u64,
    /// Requests that failed or returned an unexpected number of documents.
    pub failed: u64,
    /// The first failure, for the report.
    pub first_failure: Option<String>,
    /// Requests per second.
    pub per_second: f64,
    /// Request latency.
    pub latency: Percentiles,
    /// Server and bench resource use.
    pub usage: WindowUsage,
}

/// Returns the data directory Nightjar uses inside a kept store directory.
pub fn nightjar_data(dir: &Path) -> PathBuf {
    dir.join("nightjar-data")
}

/// Reads the manifest of a kept store, when it contains `entries` entries.
pub fn kept_store(dir: Option<&Path>, entries: u64) -> Option<StoreManifest> {
    let text = std::fs::read_to_string(dir?.join("bench-store.json")).ok()?;
    let manifest: StoreManifest = serde_json::from_str(&text).ok()?;
    (manifest.entries == entries && manifest.load.failed == 0).then_some(manifest)
}

/// Loads the entries through `target` and records them in `dir/bench-store.json`.
pub async fn load_store(
    target: &Target,
    args: &QueryArgs,
    dir: &Path,
) -> Result<StoreManifest, String> {
    let url = target.grpc.as_deref().ok_or("this target has no gRPC")?;
    let clients = GrpcClients::connect(url, &target.bearer, args.load_connections).await?;
    let device = super::run_device();
    eprintln!(
        "query: loading {} entries through gRPC Create",
        args.entries
    );
    let outcome = load(
        &clients,
        COLLECTION,
        args.entries,
        args.load_concurrency,
        move |index| loaded_entry(&device, index),
    )
    .await;
    eprintln!(
        "query: loaded {} entries in {:.1} s ({:.0}/s), {} failed",
        outcome.created, outcome.seconds, outcome.rate, outcome.failed
    );
    if outcome.failed > 0 {
        return Err(format!(
            "{} creates failed while loading; first: {:?}",
            outcome.failed, outcome.first_error
        ));
    }
    let manifest = StoreManifest {
        entries: args.entries,
        first_modified: outcome.first_modified,
        last_modified: outcome.last_modified,
        load: outcome,
    };
    let text = serde_json::to_string_pretty(&manifest).expect("manifest serializes");
    std::fs::write(dir.join("bench-store.json"), text)
        .map_err(|err| format!("cannot write the store manifest: {err}"))?;
    Ok(manifest)
}

/// Runs the query scenario against `target`, whose store `manifest` describes.
pub async fn run(
    target: &mut Target,
    args: &QueryArgs,
    manifest: StoreManifest,
) -> Result<Report, String> {
    let mut report = Report::new(
        "query",
        target.kind.name(),
        json!({
            "entries": args.entries,
            "entry_spacing_minutes": ENTRY_SPACING_MS / 60_000,
            "load_concurrency": args.load_concurrency,
            "concurrency": args.concurrency,
            "seconds": args.seconds,
            "max_queries": args.max_queries,
            "page": PAGE,
            "history_pages_per_walk": PAGES_PER_WALK,
            "loaded_with": format!("{}={}", super::LOAD_ENV.0, super::LOAD_ENV.1),
        }),
    );
    let url = target.grpc.as_deref().ok_or("this target has no gRPC")?;
    let rest = RestClient::new(&target.http, &target.bearer, args.concurrency);
    let grpc = GrpcClients::connect(url, &target.bearer, 1).await?;

    let mut results = Vec::new();
    for kind in [
        QueryKind::RestDateRange,
        QueryKind::GrpcDateRange,
        QueryKind::RestHistory,
        QueryKind::GrpcHistory,
    ] {
        let result = measure(target, args, &manifest, &rest, &grpc, kind).await;
        eprintln!(
            "query/{}: {:.0}/s, p50 {:.2} ms p90 {:.2} ms p99 {:.2} ms max {:.2} ms, {} failed",
            result.kind,
            result.per_second,
            result.latency.p50_ms,
            result.latency.p90_ms,
            result.latency.p99_ms,
            result.latency.max_ms,
            result.failed
        );
        results.push(result);
    }
    report.results = json!({ "store": manifest, "queries": results });
    Ok(report)
}

/// The kinds of query measured.
#[derive(Debug, Clone, Copy)]
enum QueryKind {
    /// `GET /api/v3/entries?date$gte=..&date$lt=..&sort$desc=date&limit=100`.
    RestDateRange,
    /// gRPC Search with the same filters.
    GrpcDateRange,
    /// `GET /api/v3/entries/history/{ms}?limit=100`, ten pages from a random point.
    RestHistory,
    /// gRPC History, likewise.
    GrpcHistory,
}

impl QueryKind {
    fn name(self) -> &'static str {
        match self {
            QueryKind::RestDateRange => "rest date range",
            QueryKind::GrpcDateRange => "grpc date range",
            QueryKind::RestHistory => "rest history page",
            QueryKind::GrpcHistory => "grpc history page",
        }
    }
}

/// Runs `kind` from `args.concurrency` clients until the time or count bound.
async fn measure(
    target: &Target,
    args: &QueryArgs,
    manifest: &StoreManifest,
    rest: &RestClient,
    grpc: &GrpcClients,
    kind: QueryKind,
) -> QueryResult {
    let issued = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_failure = Arc::new(std::sync::Mutex::new(None::<String>));
    let latency = Arc::new(ShardedHistogram::default());
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let window = Window::start(target);
    let started = Instant::now();

    let mut tasks = Vec::new();
    for client in 0..args.concurrency {
        let (issued, ok, failed, first_failure, latency) = (
            issued.clone(),
            ok.clone(),
            failed.clone(),
            first_failure.clone(),
            latency.clone(),
        );
        let (rest, grpc, manifest) = (rest.clone(), grpc.clone(), manifest.clone());
        let max_queries = args.max_queries;
        tasks.push(tokio::spawn(async move {
            let mut client_state = ClientState::default();
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max_queries
            {
                let begun = Instant::now();
                let outcome = client_state.query(kind, &manifest, &rest, &grpc).await;
                latency.record(client, begun.elapsed().as_micros() as u64);
                match outcome {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(failure) => {
                        first_failure
                            .lock()
                            .expect("lock is not poisoned")
                            .get_or_insert(failure);
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let usage = window.finish(target);
    let ok = ok.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    let first_failure = first_failure.lock().expect("lock is not poisoned").clone();
    QueryResult {
        kind: kind.name().to_string(),
        ok,
        failed,
        first_failure,
        per_second: (ok + failed) as f64 / seconds.max(1e-9),
        latency: Percentiles::of(&latency.merged()),
        usage,
    }
}

/// Per-client position of a history walk.
#[derive(Default)]
struct ClientState {
    /// srvModified to continue the current walk from.
    cursor: i64,
    /// Pages left in the current walk.
    pages_left: usize,
}

impl ClientState {
    /// Issues one query of `kind` and checks the number of documents returned.
    async fn query(
        &mut self,
        kind: QueryKind,
        manifest: &StoreManifest,
        rest: &RestClient,
        grpc: &GrpcClients,
    ) -> Result<(), String> {
        match kind {
            QueryKind::RestDateRange | QueryKind::GrpcDateRange => {
                // A one-day window contains 288 entries, so a search of 100 is always full.
                let last_start = manifest.entries.saturating_sub(300).max(1);
                let first = rand::rng().random_range(0..last_start);
                let from = entry_date(first);
                let to = from + 86_400_000;
                let found = if matches!(kind, QueryKind::RestDateRange) {
                    let path = format!(
                        "/api/v3/{COLLECTION}?date$gte={from}&date$lt={to}&sort$desc=date&limit={PAGE}"
                    );
                    let reply = rest.get(&path).await?;
                    if reply.status != 200 {
                        return Err(format!("HTTP {} for {path}", reply.status));
                    }
                    count_documents(&reply.body)
                } else {
                    let filters = vec![filter("date", "gte", from), filter("date", "lt", to)];
                    let request = grpc.request(proto::SearchRequest {
                        collection: COLLECTION.to_string(),
                        filters,
                        sort: "date".to_string(),
                        sort_descending: true,
                        limit: Some(PAGE),
                        skip: None,
                        fields: Vec::new(),
                    });
                    let reply = grpc
                        .client(0)
                        .search(request)
                        .await
                        .map_err(|status| format!("gRPC Search failed: {status}"))?;
                    count_documents(&reply.into_inner().documents)
                };
                expect_count(found, PAGE as usize, kind)
            }
            QueryKind::RestHistory | QueryKind::GrpcHistory => {
                // A walk starts at a random srvModified with room for its pages.
                if self.pages_left == 0 {
                    let span = (manifest.last_modified - manifest.first_modified).max(1);
                    let room = (span * 9 / 10).max(1);
                    self.cursor = manifest.first_modified - 1 + rand::rng().random_range(0..room);
                    self.pages_left = PAGES_PER_WALK;
                }
                self.pages_left -= 1;
                let (found, next) = if matches!(kind, QueryKind::RestHistory) {
                    let path = format!("/api/v3/{COLLECTION}/history/{}?limit={PAGE}", self.cursor);
                    let reply = rest.get(&path).await?;
                    if reply.status != 200 {
                        return Err(format!("HTTP {} for {path}", reply.status));
                    }
                    let next = reply.etag.as_deref().and_then(etag_millis);
                    (count_documents(&reply.body), next)
                } else {
                    let request = grpc.request(proto::HistoryRequest {
                        collection: COLLECTION.to_string(),
                        last_modified: self.cursor,
                        inclusive: false,
                        limit: Some(PAGE),
                        fields: Vec::new(),
                    });
                    let reply = grpc
                        .client(0)
                        .history(request)
                        .await
                        .map_err(|status| format!("gRPC History failed: {status}"))?
                        .into_inner();
                    (
                        count_documents(&reply.documents),
                        Some(reply.max_last_modified),
                    )
                };
                self.check_page(found, next, manifest, kind)
            }
        }
    }

    /// Accepts a full history page, or a short one that ends at the newest
    /// document; a short page ends the walk.
    fn check_page(
        &mut self,
        found: usize,
        next: Option<i64>,
        manifest: &StoreManifest,
        kind: QueryKind,
    ) -> Result<(), String> {
        let at_end = match next {
            Some(next) if found > 0 => next >= manifest.last_modified,
            _ => self.cursor >= manifest.last_modified,
        };
        if found == PAGE as usize && !at_end {
            self.cursor = next.unwrap_or(self.cursor);
            return Ok(());
        }
        self.pages_left = 0;
        if at_end {
            Ok(())
        } else {
            expect_count(found, PAGE as usize, kind)
        }
    }
}

fn filter(field: &str, operator: &str, value: i64) -> proto::Filter {
    proto::Filter {
        field: field.to_string(),
        operator: operator.to_string(),
        value: value.to_string(),
    }
}

fn expect_count(found: usize, expected: usize, kind: QueryKind) -> Result<(), String> {
    if found == expected {
        Ok(())
    } else {
        Err(format!(
            "{} returned {found} documents, expected {expected}",
            kind.name()
        ))
    }
}

/// Prepares a kept store directory and returns its manifest when already loaded.
pub fn prepare_data_dir(args: &QueryArgs) -> Result<Option<StoreManifest>, String> {
    let Some(dir) = &args.data_dir else {
        return Ok(None);
    };
    std::fs::create_dir_all(dir)
        .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    let manifest = kept_store(Some(dir), args.entries);
    if manifest.is_none() && nightjar_data(dir).exists() {
        return Err(format!(
            "{} holds a store without a matching bench-store.json; remove it or pick another --data-dir",
            nightjar_data(dir).display()
        ));
    }
    Ok(manifest)
}
