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
use crate::scenario::{TargetArgs, nightjar_only};
use crate::server::Kind;

/// Open files the bench asks for: 10,000 sockets on each side of loopback plus
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
    Query {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        args: QueryArgs,
    },
    /// A full resync of a collection through history pages (Nightjar only).
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
        /// SVG file to write.
        #[arg(long, default_value = "bench/fanout.svg")]
        output: PathBuf,
    },
}

/// Parses the command line and runs it; returns the process exit code.
pub async fn main() -> i32 {
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("nightjar-bench: {message}");
            1
        }
    }
}

async fn run(command: Command) -> Result<(), String> {
    if let Command::Plot { results, output } = &command {
        crate::plot::write_fanout_chart(results, output)?;
        eprintln!("wrote {}", output.display());
        return Ok(());
    }

    let limit = raise_open_file_limit(OPEN_FILE_LIMIT)
        .map_err(|err| format!("cannot read or raise the open-file limit: {err}"))?;
    if limit < OPEN_FILE_LIMIT {
        eprintln!(
            "open-file limit is {limit}, below {OPEN_FILE_LIMIT}: 10,000 connections need `ulimit -n {OPEN_FILE_LIMIT}` (or a higher hard limit)"
        );
    }

    match command {
        Command::Idle { target, args } => {
            for kind in target.target.kinds() {
                let mut server = target.start(kind, "idle", None).await?;
                let report = idle::run(&mut server, &args).await?;
                save(&report, &target)?;
            }
        }
        Command::Fanout { target, args } => {
            for kind in target.target.kinds() {
                let mut server = target.start(kind, "fanout", None).await?;
                let report = fanout::run(&mut server, &args).await?;
                save(&report, &target)?;
            }
        }
        Command::Write { target, args } => {
            for kind in target.target.kinds() {
                let report = write::run(kind, &args, || target.start(kind, "write", None)).await?;
                save(&report, &target)?;
            }
        }
        Command::Query { target, args } => {
            nightjar_only(target.target, "query")?;
            let manifest = query::prepare_data_dir(&args)?;
            let data_dir = args.data_dir.as_deref().map(query::nightjar_data);
            let mut server = target
                .start(Kind::Nightjar, "query", data_dir.as_deref())
                .await?;
            let report = query::run(&mut server, &args, manifest).await?;
            save(&report, &target)?;
        }
        Command::Catchup { target, args } => {
            nightjar_only(target.target, "catch-up")?;
            let mut server = target.start(Kind::Nightjar, "catchup", None).await?;
            let report = catchup::run(&mut server, &args).await?;
            save(&report, &target)?;
        }
        Command::Plot { .. } => unreachable!("handled above"),
    }
    Ok(())
}

fn save(report: &Report, target: &TargetArgs) -> Result<(), String> {
    let path = report.write(&target.out)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
