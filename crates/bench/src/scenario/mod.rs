//! The scenarios, each runnable alone, and what they share: choosing, starting
//! and attaching to the system under test.

pub mod catchup;
pub mod fanout;
pub mod idle;
pub mod query;
pub mod write;

use std::path::{Path, PathBuf};

use crate::server::{Attach, Kind, NightjarLaunch, Target};

/// Systems a scenario measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetChoice {
    /// Nightjar only.
    Nightjar,
    /// The socket.io 4 reference server only.
    Reference,
    /// Nightjar, then the reference server (never at the same time).
    Both,
}

impl TargetChoice {
    /// Returns the kinds to run, in order.
    pub fn kinds(self) -> Vec<Kind> {
        match self {
            TargetChoice::Nightjar => vec![Kind::Nightjar],
            TargetChoice::Reference => vec![Kind::Reference],
            TargetChoice::Both => vec![Kind::Nightjar, Kind::Reference],
        }
    }
}

/// Options every scenario takes: the system under test and where results go.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// System to measure.
    #[arg(long, value_enum, default_value = "nightjar")]
    pub target: TargetChoice,

    /// The `nightjar` executable to start; defaults to `nightjar` beside this executable.
    #[arg(long)]
    pub nightjar_bin: Option<PathBuf>,

    /// Directory of the reference server (`server.js` and its `node_modules`).
    #[arg(long, default_value = "bench/reference")]
    pub reference_dir: PathBuf,

    /// Edge URL of a running Nightjar to measure instead of starting one (loopback only).
    #[arg(long, requires_all = ["grpc_url", "access_token"])]
    pub url: Option<String>,

    /// Core gRPC URL of the running Nightjar given by `--url`.
    #[arg(long)]
    pub grpc_url: Option<String>,

    /// Access token of an admin subject on the running Nightjar.
    #[arg(long, env = "NIGHTJAR_BENCH_ACCESS_TOKEN", hide_env_values = true)]
    pub access_token: Option<String>,

    /// Process ids of the running Nightjar, whose memory and CPU time are read from /proc.
    #[arg(long, value_delimiter = ',')]
    pub pid: Vec<u32>,

    /// Directory for the JSON reports and the started servers' logs.
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,

    /// Environment variable for the Nightjar the bench starts, as NAME=VALUE; repeatable.
    #[arg(long = "server-env", value_name = "NAME=VALUE")]
    pub server_env: Vec<String>,

    /// Suffix for the report name, `<scenario>-<target>-<label>.json`, to keep
    /// runs with other settings apart.
    #[arg(long)]
    pub label: Option<String>,
}

/// Setting under which stores are loaded: documents the bench creates always
/// get a server-computed identifier, so the lookup by fallback fields among
/// documents without identifier can only miss, and skipping it keeps loading
/// fast. The scenarios restart Nightjar with the defaults before measuring.
pub const LOAD_ENV: (&str, &str) = ("API3_DEDUP_FALLBACK_ENABLED", "false");

impl TargetArgs {
    /// Returns the `nightjar` executable to start.
    pub fn nightjar_binary(&self) -> Result<PathBuf, String> {
        let binary = match &self.nightjar_bin {
            Some(path) => path.clone(),
            None => std::env::current_exe()
                .map_err(|err| format!("cannot locate this executable: {err}"))?
                .with_file_name("nightjar"),
        };
        if binary.is_file() {
            Ok(binary)
        } else {
            Err(format!(
                "{} does not exist: build it with `cargo build --release --bin nightjar` or pass --nightjar-bin",
                binary.display()
            ))
        }
    }

    /// Starts (or attaches to) the system `kind`; `data_dir` keeps Nightjar's store
    /// in a directory of the caller's choice. The server log goes to
    /// `<out>/<log_name>-<kind>.log`.
    pub async fn start(
        &self,
        kind: Kind,
        log_name: &str,
        data_dir: Option<&Path>,
    ) -> Result<Target, String> {
        self.start_with(kind, log_name, data_dir, &[]).await
    }

    /// Like `start`, with extra environment variables for a started Nightjar.
    pub async fn start_with(
        &self,
        kind: Kind,
        log_name: &str,
        data_dir: Option<&Path>,
        extra_env: &[(&str, &str)],
    ) -> Result<Target, String> {
        std::fs::create_dir_all(&self.out)
            .map_err(|err| format!("cannot create {}: {err}", self.out.display()))?;
        let log = self.out.join(format!("{log_name}-{}.log", kind.name()));
        match (kind, &self.url) {
            (Kind::Nightjar, Some(url)) => {
                let attach = Attach {
                    http: url.clone(),
                    grpc: self.grpc_url.clone().unwrap_or_default(),
                    access_token: self.access_token.clone().unwrap_or_default(),
                    pids: self.pid.clone(),
                };
                Target::attach(&attach).await
            }
            (Kind::Nightjar, None) => {
                let mut env = Vec::new();
                for pair in &self.server_env {
                    let (name, value) = pair
                        .split_once('=')
                        .ok_or_else(|| format!("--server-env {pair:?} is not NAME=VALUE"))?;
                    env.push((name.to_string(), value.to_string()));
                }
                env.extend(
                    extra_env
                        .iter()
                        .map(|(name, value)| (name.to_string(), value.to_string())),
                );
                let launch = NightjarLaunch {
                    binary: self.nightjar_binary()?,
                    data_dir: data_dir.map(Path::to_path_buf),
                    env,
                };
                Target::start_nightjar(&launch, &log).await
            }
            (Kind::Reference, _) => Target::start_reference(&self.reference_dir, &log),
        }
    }

    /// Returns whether the bench measures a running Nightjar it cannot restart.
    pub fn attached(&self) -> bool {
        self.url.is_some()
    }
}

/// Returns a `device` name unique to this run, so that server-derived identifiers
/// never collide with an earlier run's documents.
pub fn run_device() -> String {
    format!("nightjar-bench-{}", crate::document::now_ms())
}

/// Rejects the reference for scenarios that need storage.
pub fn nightjar_only(choice: TargetChoice, scenario: &str) -> Result<(), String> {
    if choice == TargetChoice::Nightjar {
        Ok(())
    } else {
        Err(format!(
            "the reference server stores nothing, so the {scenario} scenario runs against nightjar only"
        ))
    }
}
