//! Results: the machine, resource use over a measured window, and the JSON
//! report each scenario writes as `<scenario>-<target>.json`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::process::{Usage, own_usage};
use crate::server::Target;

/// The machine a run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// CPUs this process may run on.
    pub cores: usize,
    /// `MemTotal` from /proc/meminfo, in bytes.
    pub memory_bytes: u64,
    /// Kernel release.
    pub kernel: String,
}

/// Reads the 1, 5 and 15 minute load averages from /proc/loadavg.
///
/// Other work on the machine shows up here and skews latency, so every report
/// records it at its start and end.
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut values = text
        .split_whitespace()
        .map(|value| value.parse::<f64>().unwrap_or(0.0));
    [
        values.next().unwrap_or(0.0),
        values.next().unwrap_or(0.0),
        values.next().unwrap_or(0.0),
    ]
}

/// Describes this machine from /proc.
pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, model)| model.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_bytes = meminfo
        .lines()
        .find(|line| line.starts_with("MemTotal:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0);
    Machine {
        cpu_model,
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        memory_bytes,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|text| text.trim().to_string())
            .unwrap_or_default(),
    }
}

/// Resource use of the server and of the bench over a measured window.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct WindowUsage {
    /// Length of the window, in seconds.
    pub seconds: f64,
    /// CPU time the server processes used in the window, in seconds.
    pub server_cpu_seconds: f64,
    /// Server CPU time divided by the window: 1.0 is one core busy all the time.
    pub server_cores: f64,
    /// Server resident memory at the end of the window, in bytes.
    pub server_rss_bytes: u64,
    /// CPU time the bench used in the window, in seconds.
    pub bench_cpu_seconds: f64,
    /// Bench CPU time divided by the window.
    pub bench_cores: f64,
    /// Bench resident memory at the end of the window, in bytes.
    pub bench_rss_bytes: u64,
}

/// The start of a measured window.
pub struct Window {
    started: Instant,
    server: Usage,
    bench: Usage,
}

impl Window {
    /// Reads the server's and the bench's usage now.
    pub fn start(target: &Target) -> Window {
        Window {
            started: Instant::now(),
            server: target.usage(),
            bench: own_usage().unwrap_or_default(),
        }
    }

    /// Reads usage again and returns what the window used.
    pub fn finish(&self, target: &Target) -> WindowUsage {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-9);
        let server = target.usage();
        let bench = own_usage().unwrap_or_default();
        let server_cpu_seconds = server.cpu_seconds - self.server.cpu_seconds;
        let bench_cpu_seconds = bench.cpu_seconds - self.bench.cpu_seconds;
        WindowUsage {
            seconds,
            server_cpu_seconds,
            server_cores: server_cpu_seconds / seconds,
            server_rss_bytes: server.rss_bytes,
            bench_cpu_seconds,
            bench_cores: bench_cpu_seconds / seconds,
            bench_rss_bytes: bench.rss_bytes,
        }
    }
}

/// One scenario's results against one target, as written to disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Scenario name: idle, fanout, write, query or catchup.
    pub scenario: String,
    /// `nightjar` or `reference`.
    pub target: String,
    /// Suffix of the report name, telling runs with other settings apart.
    #[serde(default)]
    pub label: Option<String>,
    /// When the run started, RFC 3339 UTC.
    pub date: String,
    /// The machine.
    pub machine: Machine,
    /// Load averages (1, 5, 15 minutes) when the run started.
    pub load_average_start: [f64; 3],
    /// Load averages when the report was written.
    pub load_average_end: [f64; 3],
    /// The options the scenario ran with.
    pub parameters: Value,
    /// Scenario-specific figures.
    pub results: Value,
}

impl Report {
    /// Starts a report for `scenario` against `target` with `parameters`.
    pub fn new(scenario: &str, target: &str, parameters: Value) -> Report {
        Report {
            scenario: scenario.to_string(),
            target: target.to_string(),
            label: None,
            date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            machine: machine(),
            load_average_start: load_average(),
            load_average_end: [0.0; 3],
            parameters,
            results: Value::Null,
        }
    }

    /// Writes the report as pretty JSON to `<directory>/<scenario>-<target>[-<label>].json`.
    pub fn write(&mut self, directory: &Path) -> Result<PathBuf, String> {
        self.load_average_end = load_average();
        std::fs::create_dir_all(directory)
            .map_err(|err| format!("cannot create {}: {err}", directory.display()))?;
        let name = match &self.label {
            Some(label) => format!("{}-{}-{label}.json", self.scenario, self.target),
            None => format!("{}-{}.json", self.scenario, self.target),
        };
        let path = directory.join(name);
        let text = serde_json::to_string_pretty(self).expect("reports serialize");
        std::fs::write(&path, text + "\n")
            .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
        Ok(path)
    }

    /// Reads a report written by `write`.
    pub fn read(path: &Path) -> Result<Report, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|err| format!("{} is not a report: {err}", path.display()))
    }
}

/// Formats bytes as mebibytes with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
