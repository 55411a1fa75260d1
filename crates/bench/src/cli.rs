//! Command line: one subcommand per scenario, plus `plot`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::process::raise_open_file_limit;
use crate::report::Report;
use crate::scenario::catchup::{self, CatchupArgs};
use crate::scenario::fanout::{self, FanoutArgs};
use crate::scenario::idle::{self, IdleArgs};
use crate::scenario::query::{self, QueryArgs};
use crate::scenario::write::{self, WriteArgs};
use crate::scenario::{LOAD_ENV, TargetArgs, nightjar_only};
use crate::server::Kind;

/// Open-file limit the bench requests: 10,000 sockets on each side of loopback plus
/// files and pipes; servers started by the bench inherit the limit.
const OPEN_FILE_LIMIT: u64 = 65_536;

/// Load generator for Nightjar and the socket.io 4 reference server.
///
/// Every scenario starts the servers it measures on 127.0.0.1 (or attaches to a
/// running Nightjar on a loopback address), writes `<out>/<scenario>-<target>.json`
/// and prints a summary on standard error.
#[derive(Debug, Parser)]
#[command(name = "nightjar-bench", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Hold many subscribed sockets without writes: memory per connection.
    Idle {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        args: IdleArgs,
    },
    /// Writes at fixed rates to many subscribers: delivery rate, latency, losses, CPU per event.
    Fanout {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        args: FanoutArgs,
    },
    /// Closed-loop creates from concurrent clients over REST and gRPC.
    Write {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        args: WriteArgs,
    },
    /// Date-range searches and history pages in a large store (Nightjar only).
    ///
    /// The store is loaded through gRPC Create on a Nightjar started with
    /// API3_DEDUP_FALLBACK_ENABLED=false, then queried after a restart with the defaults.
    Query {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        args: QueryArgs,
    },
    /// A full resync of a collection through history pages (Nightjar only).
    ///
    /// Loaded and restarted like `query`.
    Catchup {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        args: CatchupArgs,
    },
    /// Draw the fan-out reports as an SVG chart of latency against write rate.
    Plot {
        /// Directory holding fanout-nightjar.json and fanout-reference.json.
        #[arg(long, default_value = "bench/results")]
        results: PathBuf,
        /// Plot the reports of runs made with this `--label`.
        #[arg(long)]
        label: Option<String>,
        /// SVG file to write.
        #[arg(long, default_value = "bench/fanout.svg")]
        output: PathBuf,
    },
    /// Print the reports as Markdown tables, Nightjar beside the reference.
    Summary {
        /// Directory holding the JSON reports.
        #[arg(long, default_value = "bench/results")]
        results: PathBuf,
    },
}

/// Parses the command line and runs it; returns the process exit code.
pub async fn main() -> i32 {
    let cli = Cli::parse();

    // A signal ends the scenario through the normal return path, so the servers
    // the bench started are stopped when their handles drop.
    let outcome = tokio::select! {
        outcome = run(cli.command) => outcome,
        signal = stop_signal() => Err(format!("stopped by {signal}")),
    };
    match outcome {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("nightjar-bench: {message}");
            1
        }
    }
}

/// Waits for SIGINT or SIGTERM and returns its name.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("install a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}

async fn run(command: Command) -> Result<(), String> {
    if let Command::Plot {
        results,
        label,
        output,
    } = &command
    {
        crate::plot::write_fanout_chart(results, label.as_deref(), output)?;
        eprintln!("wrote {}", output.display());
        return Ok(());
    }
    if let Command::Summary { results } = &command {
        print!("{}", crate::summary::markdown(results)?);
        return Ok(());
    }

    let limit = raise_open_file_limit(OPEN_FILE_LIMIT)
        .map_err(|err| format!("cannot read or raise the open-file limit: {err}"))?;
    if limit < OPEN_FILE_LIMIT {
        // Each socket takes one descriptor in the bench and one in the server.
        eprintln!(
            "open-file limit is {limit} (the hard limit), below the {OPEN_FILE_LIMIT} asked for: the bench and each server can hold about {} connections",
            limit.saturating_sub(500)
        );
    }

    match command {
        Command::Idle { target, args } => {
            for kind in target.target.kinds() {
                let mut server = target.start(kind, "idle", None).await?;
                let mut report = idle::run(&mut server, &args).await?;
                save(&mut report, &target)?;
            }
        }
        Command::Fanout { target, args } => {
            for kind in target.target.kinds() {
                let mut server = target.start(kind, "fanout", None).await?;
                let mut report = fanout::run(&mut server, &args).await?;
                save(&mut report, &target)?;
            }
        }
        Command::Write { target, args } => {
            for kind in target.target.kinds() {
                let mut report =
                    write::run(kind, &args, || target.start(kind, "write", None)).await?;
                save(&mut report, &target)?;
            }
        }
        Command::Query { target, args } => {
            nightjar_only(target.target, "query")?;
            let kept = query::prepare_data_dir(&args)?;
            let temporary = scratch_dir()?;
            let dir = args
                .data_dir
                .clone()
                .unwrap_or_else(|| temporary.path().to_path_buf());
            let data = query::nightjar_data(&dir);
            let manifest = match kept {
                Some(manifest) => manifest,
                None => {
                    let mut loader = target
                        .start_with(Kind::Nightjar, "query-load", Some(&data), &[LOAD_ENV])
                        .await?;
                    let manifest = query::load_store(&loader, &args, &dir).await?;
                    loader.stop();
                    manifest
                }
            };
            let mut server = target.start(Kind::Nightjar, "query", Some(&data)).await?;
            let mut report = query::run(&mut server, &args, manifest).await?;
            save(&mut report, &target)?;
        }
        Command::Catchup { target, args } => {
            nightjar_only(target.target, "catch-up")?;
            let temporary = scratch_dir()?;
            let data = temporary.path().join("nightjar-data");
            let mut loader = target
                .start_with(Kind::Nightjar, "catchup-load", Some(&data), &[LOAD_ENV])
                .await?;
            let loaded = catchup::load(&loader, &args).await?;
            loader.stop();
            let mut server = target.start(Kind::Nightjar, "catchup", Some(&data)).await?;
            let mut report = catchup::run(&mut server, &args, loaded).await?;
            save(&mut report, &target)?;
        }
        Command::Plot { .. } | Command::Summary { .. } => unreachable!("handled above"),
    }
    Ok(())
}

fn save(report: &mut Report, target: &TargetArgs) -> Result<(), String> {
    report.label = target.label.clone();
    let path = report.write(&target.out)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// Creates a temporary directory for a store that lives only for this run.
fn scratch_dir() -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix("nightjar-bench-")
        .tempdir()
        .map_err(|err| format!("cannot create a temporary directory: {err}"))
}
