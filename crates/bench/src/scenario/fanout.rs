//! Fan-out: subscribers on one collection while REST writes arrive at fixed
//! rates; measures delivered events per second, delivery latency, lost and
//! duplicated events, and the server CPU each delivered event costs.
//!
//! Writes are offered open-loop: write `k` of a step is sent at `k / rate`
//! seconds whatever the server's speed, with at most `max_in_flight` requests
//! outstanding. A step counts as sustained when every acknowledged write
//! reached every subscriber within the drain timeout, nothing was lost or
//! duplicated, at least 95 % of the offered writes were acknowledged, and the
//! p99 delivery latency stayed under one second. Before the next step the
//! scenario waits until no event has arrived for two seconds (at most two
//! minutes), so a backlog left by an overloaded step does not spill into it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::delivery::{Deliveries, Ledger};
use crate::document::{clock_ns, marked_entry, now_ms};
use crate::fleet::Fleet;
use crate::latency::{Percentiles, ShardedHistogram};
use crate::report::{Report, Window, WindowUsage};
use crate::rest::RestClient;
use crate::server::Target;

/// Collection every fan-out write goes to.
pub const COLLECTION: &str = "entries";

/// Writes sent more than this after their scheduled time count as late.
const LATE_AFTER: Duration = Duration::from_millis(5);

/// Between steps, the silence that shows the server has flushed its queues.
const SETTLE_QUIET: Duration = Duration::from_secs(2);

/// Maximum wait for that silence.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Largest p99 delivery latency of a sustained step.
const SUSTAINED_P99_MS: f64 = 1000.0;

/// Options of the fan-out scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Subscribers on the `entries` collection.
    #[arg(long, default_value_t = 1_000)]
    pub subscribers: usize,

    /// Offered write rates, writes per second, one step each.
    #[arg(long, value_delimiter = ',', default_value = "50,200,1000")]
    pub rates: Vec<f64>,

    /// Seconds each step offers writes.
    #[arg(long, default_value_t = 10.0)]
    pub step_seconds: f64,

    /// Seconds to wait after a step's last write for its events.
    #[arg(long, default_value_t = 15.0)]
    pub drain_seconds: f64,

    /// Most write requests outstanding at once.
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,

    /// Handshakes in progress at once while connecting subscribers.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
}

/// The writes of one step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OfferedWrites {
    /// Writes sent.
    pub sent: u64,
    /// Writes acknowledged with 200 or 201.
    pub acknowledged: u64,
    /// Writes answered otherwise, or not answered.
    pub failed: u64,
    /// Writes sent more than 5 ms after their scheduled time.
    pub late: u64,
    /// Acknowledged writes per second of the step.
    pub acknowledged_per_second: f64,
    /// Request latency from send to response.
    pub latency: Percentiles,
    /// The first failure, for the report.
    pub first_failure: Option<String>,
}

/// Figures of one step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepResult {
    /// Offered writes per second.
    pub rate: f64,
    /// What the writes did.
    pub writes: OfferedWrites,
    /// What the subscribers received.
    pub deliveries: Deliveries,
    /// True when every owed event arrived before the drain timeout.
    pub drained: bool,
    /// Delivered events per second, from the step's start to its last delivery.
    pub delivered_per_second: f64,
    /// Server and bench resource use from the step's start to the end of its drain.
    pub usage: WindowUsage,
    /// Server CPU time per delivered event, in microseconds.
    pub server_cpu_us_per_event: f64,
    /// Bench CPU time per delivered event, in microseconds.
    pub bench_cpu_us_per_event: f64,
    /// Whether the step meets the sustained criteria in the module docs.
    pub sustained: bool,
}

/// Runs the fan-out scenario against `target`.
pub async fn run(target: &mut Target, args: &FanoutArgs) -> Result<Report, String> {
    let mut report = Report::new(
        "fanout",
        target.kind.name(),
        json!({
            "subscribers": args.subscribers,
            "rates": args.rates,
            "step_seconds": args.step_seconds,
            "drain_seconds": args.drain_seconds,
            "max_in_flight": args.max_in_flight,
            "collection": COLLECTION,
            "writes": "REST POST /api/v3/entries, open loop",
        }),
    );

    // 1. The plan: one step of rate x seconds writes per rate, numbered in order.
    let step_sizes: Vec<u64> = args
        .rates
        .iter()
        .map(|rate| (rate * args.step_seconds).round().max(1.0) as u64)
        .collect();
    let ledger = Arc::new(Ledger::new(args.subscribers, &step_sizes));

    // 2. Subscribers.
    let fleet = Fleet::connect(
        &target.http,
        &target.access_token,
        &[COLLECTION],
        args.subscribers,
        args.connect_concurrency,
        ledger.clone(),
    )
    .await;
    fleet.require_any()?;
    eprintln!(
        "fanout/{}: {} subscribers in {:.1} s",
        target.kind.name(),
        fleet.summary.subscribed,
        fleet.summary.seconds
    );

    // 3. The steps, one after the other.
    let rest = RestClient::new(&target.http, &target.bearer, args.max_in_flight);
    let device = super::run_device();
    let date_base = now_ms();
    let mut steps = Vec::new();
    for (index, rate) in args.rates.iter().enumerate() {
        let result = run_step(
            target, args, &ledger, &rest, &device, date_base, index, *rate,
        )
        .await;
        eprintln!(
            "fanout/{} {rate}/s: {:.0} events/s, p50 {:.2} ms p99 {:.2} ms max {:.2} ms, lost {}, duplicated {}, server {:.2} cores ({:.2} us/event), bench {:.2} cores{}",
            target.kind.name(),
            result.delivered_per_second,
            result.deliveries.latency.p50_ms,
            result.deliveries.latency.p99_ms,
            result.deliveries.latency.max_ms,
            result.deliveries.lost,
            result.deliveries.duplicated,
            result.usage.server_cores,
            result.server_cpu_us_per_event,
            result.usage.bench_cores,
            if result.sustained {
                ""
            } else {
                "; NOT sustained"
            },
        );
        steps.push(result);
        if !target.is_running() {
            return Err(format!(
                "{} exited during the fan-out scenario",
                target.kind.name()
            ));
        }
        if !ledger.settle(SETTLE_QUIET, SETTLE_TIMEOUT).await {
            eprintln!(
                "fanout/{}: events still arriving {} s after the {rate}/s step; the next step starts anyway",
                target.kind.name(),
                SETTLE_TIMEOUT.as_secs()
            );
        }
    }

    let highest_sustained = steps
        .iter()
        .filter(|step| step.sustained)
        .map(|step| step.rate)
        .fold(None, |best: Option<f64>, rate| {
            Some(best.map_or(rate, |b| b.max(rate)))
        });
    report.results = json!({
        "connect": fleet.summary,
        "steps": steps,
        "highest_sustained_rate": highest_sustained,
        "unexpected_events": ledger.unexpected(),
        "still_listening": fleet.listening(),
        "end_reasons": fleet.end_reasons(),
    });
    fleet.close();
    Ok(report)
}

/// Offers one step's writes, drains its events and measures it.
#[allow(clippy::too_many_arguments)]
async fn run_step(
    target: &Target,
    args: &FanoutArgs,
    ledger: &Arc<Ledger>,
    rest: &RestClient,
    device: &str,
    date_base: i64,
    step: usize,
    rate: f64,
) -> StepResult {
    let window = Window::start(target);
    let started_ns = clock_ns();
    let writes = offer_writes(
        rest,
        ledger,
        step,
        rate,
        device,
        date_base,
        args.max_in_flight,
    )
    .await;
    let drained = ledger
        .drain(step, Duration::from_secs_f64(args.drain_seconds))
        .await;
    let usage = window.finish(target);
    let deliveries = ledger.deliveries(step);

    let last_delivery_ns = ledger.last_delivery_ns(step);
    let delivering_seconds = last_delivery_ns.saturating_sub(started_ns) as f64 / 1e9;
    let delivered = deliveries.delivered.max(1) as f64;
    let sustained = drained
        && deliveries.lost == 0
        && deliveries.duplicated == 0
        && writes.acknowledged as f64 >= 0.95 * writes.sent as f64
        && writes.acknowledged_per_second >= 0.95 * rate
        && deliveries.latency.p99_ms < SUSTAINED_P99_MS;
    StepResult {
        rate,
        delivered_per_second: deliveries.delivered as f64 / delivering_seconds.max(1e-9),
        server_cpu_us_per_event: usage.server_cpu_seconds * 1e6 / delivered,
        bench_cpu_us_per_event: usage.bench_cpu_seconds * 1e6 / delivered,
        writes,
        deliveries,
        drained,
        usage,
        sustained,
    }
}

/// Sends the writes of `step` at `rate` per second and waits for every response.
async fn offer_writes(
    rest: &RestClient,
    ledger: &Arc<Ledger>,
    step: usize,
    rate: f64,
    device: &str,
    date_base: i64,
    max_in_flight: usize,
) -> OfferedWrites {
    let gate = Arc::new(Semaphore::new(max_in_flight));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_failure = Arc::new(std::sync::Mutex::new(None::<String>));
    let latency = Arc::new(ShardedHistogram::default());
    let mut late = 0;
    let range = ledger.range(step);
    let started = Instant::now();

    for (offset, seq) in range.clone().enumerate() {
        // 1. Wait for the scheduled time, then for a free request slot.
        let due = started + Duration::from_secs_f64(offset as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let permit = gate
            .clone()
            .acquire_owned()
            .await
            .expect("gate is never closed");
        if Instant::now() > due + LATE_AFTER {
            late += 1;
        }

        // 2. Send; the document carries the clock reading taken just before sending.
        let (rest, ledger, acknowledged, failed, first_failure, latency) = (
            rest.clone(),
            ledger.clone(),
            acknowledged.clone(),
            failed.clone(),
            first_failure.clone(),
            latency.clone(),
        );
        let device = device.to_string();
        tokio::spawn(async move {
            let sent_ns = clock_ns();
            let body = marked_entry(&device, date_base + seq as i64, seq, sent_ns);
            let outcome = rest.create(COLLECTION, body).await;
            latency.record(seq as usize, (clock_ns() - sent_ns) / 1000);
            match outcome {
                Ok(200 | 201) => {
                    ledger.acknowledge(seq);
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                }
                other => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    let failure = match other {
                        Ok(status) => format!("HTTP {status}"),
                        Err(err) => err,
                    };
                    first_failure
                        .lock()
                        .expect("lock is not poisoned")
                        .get_or_insert(failure);
                }
            }
            drop(permit);
        });
    }

    // 3. Every request has answered once all slots are free again.
    let _all = gate
        .acquire_many(max_in_flight as u32)
        .await
        .expect("gate is never closed");
    let seconds = started.elapsed().as_secs_f64();
    let acknowledged = acknowledged.load(Ordering::Relaxed);
    let first_failure = first_failure.lock().expect("lock is not poisoned").clone();
    OfferedWrites {
        sent: range.end - range.start,
        acknowledged,
        failed: failed.load(Ordering::Relaxed),
        late,
        acknowledged_per_second: acknowledged as f64 / seconds.max(1e-9),
        latency: Percentiles::of(&latency.merged()),
        first_failure,
    }
}
