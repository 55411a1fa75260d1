//! The `nightjar` binary: runs core, edge or both, and manages subjects and roles.

mod cli;
mod config;
mod core;
mod edge;
mod logging;
mod metrics;
mod proto;
mod secret;

use clap::Parser;

/// jemalloc rather than the system allocator. With glibc's malloc, allocation and
/// `malloc_consolidate` took about 17 % of the server's CPU time during REST
/// creates (perf, 2 cores). jemalloc raised the durable creates per second by
/// about 15 % (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => exit_with_setting(err),
    };
    logging::init(&cli.log_format);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Prints a command-line error and exits; when the rejected value came from an
/// environment variable, names that variable too, since the error names the flag.
fn exit_with_setting(err: clap::Error) -> ! {
    let rendered = err.render().to_string();
    let from_environment: Vec<&str> = config::ENVIRONMENT_SETTINGS
        .iter()
        .filter(|(variable, flag)| {
            std::env::var_os(variable).is_some() && rendered.contains(&format!("'{flag}"))
        })
        .map(|(variable, _)| *variable)
        .collect();
    if err.use_stderr() && !from_environment.is_empty() {
        eprint!("{rendered}");
        eprintln!(
            "note: the value comes from the environment variable {}",
            from_environment.join(", ")
        );
        std::process::exit(2);
    }
    err.exit()
}
