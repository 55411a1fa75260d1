//! Idle: many subscribed sockets and no writes; measures the server's memory per
//! connection and the CPU that keeping them alive (pings) costs.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::delivery::Ledger;
use crate::fleet::Fleet;
use crate::process::own_usage;
use crate::report::{Report, Window, mib};
use crate::server::Target;

/// Options of the idle scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    /// Subscribed sockets to hold open.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,

    /// Seconds to hold them after all subscribed; over 45 s covers one Engine.IO
    /// ping interval (25 s) plus its timeout (20 s).
    #[arg(long, default_value_t = 60)]
    pub hold_seconds: u64,

    /// Handshakes in progress at once.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
}

/// Seconds to let a fresh server settle before the baseline reading.
const SETTLE: Duration = Duration::from_secs(2);

/// Runs the idle scenario against `target`.
pub async fn run(target: &mut Target, args: &IdleArgs) -> Result<Report, String> {
    let mut report = Report::new(
        "idle",
        target.kind.name(),
        json!({
            "connections": args.connections,
            "hold_seconds": args.hold_seconds,
            "connect_concurrency": args.connect_concurrency,
            "collections": "all six",
        }),
    );

    // 1. Baselines before any socket.
    tokio::time::sleep(SETTLE).await;
    let server_before = target.usage();
    let bench_before = own_usage().unwrap_or_default();

    // 2. Connect and subscribe every socket to all collections.
    let ledger = Arc::new(Ledger::new(args.connections, &[]));
    let fleet = Fleet::connect(
        &target.http,
        &target.access_token,
        &[],
        args.connections,
        args.connect_concurrency,
        ledger,
    )
    .await;
    let subscribed = target.usage();
    let bench_subscribed = own_usage().unwrap_or_default();
    eprintln!(
        "idle/{}: {} of {} subscribed in {:.1} s; server RSS {}",
        target.kind.name(),
        fleet.summary.subscribed,
        args.connections,
        fleet.summary.seconds,
        mib(subscribed.rss_bytes)
    );

    // 3. Hold, sampling memory every second.
    let window = Window::start(target);
    let mut peak_rss = subscribed.rss_bytes;
    for _ in 0..args.hold_seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak_rss = peak_rss.max(target.usage().rss_bytes);
    }
    let hold = window.finish(target);
    let still_listening = fleet.listening();
    let end_reasons = fleet.end_reasons();
    let connect = fleet.summary.clone();
    fleet.close();

    // 4. Memory per connection: growth over the baseline, divided by the sockets held.
    let held = connect.subscribed.max(1) as f64;
    let server_growth = hold
        .server_rss_bytes
        .saturating_sub(server_before.rss_bytes);
    let bench_growth = hold.bench_rss_bytes.saturating_sub(bench_before.rss_bytes);
    report.results = json!({
        "connect": connect,
        "still_listening_after_hold": still_listening,
        "end_reasons": end_reasons,
        "server_rss_before_bytes": server_before.rss_bytes,
        "server_rss_subscribed_bytes": subscribed.rss_bytes,
        "server_rss_after_hold_bytes": hold.server_rss_bytes,
        "server_rss_peak_bytes": peak_rss,
        "server_bytes_per_connection": server_growth as f64 / held,
        "server_connect_cpu_seconds": subscribed.cpu_seconds - server_before.cpu_seconds,
        "bench_rss_before_bytes": bench_before.rss_bytes,
        "bench_rss_subscribed_bytes": bench_subscribed.rss_bytes,
        "bench_bytes_per_connection": bench_growth as f64 / held,
        "hold": hold,
    });
    eprintln!(
        "idle/{}: {:.0} bytes per connection on the server; {still_listening} still listening after {} s; server {:.3} cores, bench {:.3} cores while holding",
        target.kind.name(),
        server_growth as f64 / held,
        args.hold_seconds,
        hold.server_cores,
        hold.bench_cores,
    );
    Ok(report)
}
