//! The systems under test: a `nightjar serve` or reference server that the bench
//! starts on loopback ports, or a running Nightjar that it attaches to.
//!
//! A started server runs with a fresh temporary data directory unless the caller
//! gives one; its standard error goes to a log file beside the results.

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::Serialize;

use crate::process::{self, Usage};

/// API_SECRET of every Nightjar the bench starts.
pub const API_SECRET: &str = "nightjar-bench-secret-0001";

/// Name of the admin subject the bench creates on Nightjar.
pub const SUBJECT: &str = "bench";

/// Access token the reference server accepts (it has no subjects).
pub const REFERENCE_TOKEN: &str = "bench-0123456789abcdef";

/// How long a server may take to print its listening lines.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Which implementation a target runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Nightjar (`nightjar serve`, or a running instance).
    Nightjar,
    /// The socket.io 4 reference server in `bench/reference`.
    Reference,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Nightjar => "nightjar",
            Kind::Reference => "reference",
        }
    }
}

/// How to start Nightjar.
#[derive(Debug, Clone)]
pub struct NightjarLaunch {
    /// The `nightjar` executable.
    pub binary: PathBuf,
    /// Data directory to use and keep; `None` uses a temporary one removed at the end.
    pub data_dir: Option<PathBuf>,
    /// Extra environment variables, such as `RUST_LOG`.
    pub env: Vec<(String, String)>,
}

/// How to reach a Nightjar that someone else started.
#[derive(Debug, Clone)]
pub struct Attach {
    /// Edge base URL, such as `http://127.0.0.1:1337`; must be a loopback address.
    pub http: String,
    /// Core gRPC URL, such as `http://127.0.0.1:50051`; must be a loopback address.
    pub grpc: String,
    /// Access token of a subject with the `admin` role.
    pub access_token: String,
    /// Process ids whose memory and CPU are measured.
    pub pids: Vec<u32>,
}

/// A running system under test.
pub struct Target {
    /// The implementation.
    pub kind: Kind,
    /// Edge base URL (REST and Socket.IO).
    pub http: String,
    /// Core gRPC URL; `None` for the reference, which has no gRPC.
    pub grpc: Option<String>,
    /// Access token for Socket.IO `subscribe`.
    pub access_token: String,
    /// Bearer credential for REST and gRPC: a JWT on Nightjar, the token on the reference.
    pub bearer: String,
    /// Processes whose usage is measured.
    pub pids: Vec<u32>,
    /// The server process, when the bench started it.
    child: Option<Child>,
    /// Temporary data directory, removed on drop.
    _data: Option<tempfile::TempDir>,
}

impl Target {
    /// Starts `nightjar serve` on free loopback ports, creates the admin subject
    /// `bench` and exchanges its access token for a JWT.
    pub async fn start_nightjar(launch: &NightjarLaunch, log: &Path) -> Result<Target, String> {
        // 1. Data directory and the process.
        let (data_dir, temp) = match &launch.data_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("nightjar-bench-")
                    .tempdir()
                    .map_err(|err| format!("cannot create a temporary data directory: {err}"))?;
                (temp.path().join("data"), Some(temp))
            }
        };
        let mut command = Command::new(&launch.binary);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--hostname", "127.0.0.1", "--port", "0"])
            .args(["--grpc-addr", "127.0.0.1:0"])
            .env("API_SECRET", API_SECRET)
            .env("NO_COLOR", "1");
        for (name, value) in &launch.env {
            command.env(name, value);
        }
        let (child, addresses) = spawn_until_listening(command, log, 2)?;
        let mut target = Target {
            kind: Kind::Nightjar,
            http: String::new(),
            grpc: None,
            access_token: String::new(),
            bearer: String::new(),
            pids: vec![child.id()],
            child: Some(child),
            _data: temp,
        };
        for address in addresses {
            match address.strip_prefix("grpc://") {
                Some(grpc) => target.grpc = Some(format!("http://{grpc}")),
                None => target.http = address,
            }
        }
        let grpc = target
            .grpc
            .clone()
            .ok_or("nightjar printed no grpc:// listening line")?;

        // 2. The admin subject and its credentials.
        let output = Command::new(&launch.binary)
            .args(["subject", "add", SUBJECT, "--roles", "admin"])
            .env("NIGHTJAR_CORE_URL", &grpc)
            .env("NIGHTJAR_DATA_DIR", &data_dir)
            .env("API_SECRET", API_SECRET)
            .env("NO_COLOR", "1")
            .output()
            .map_err(|err| format!("cannot run `nightjar subject add`: {err}"))?;
        if !output.status.success() {
            return Err(format!(
                "`nightjar subject add {SUBJECT} --roles admin` failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        target.access_token = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::trim)
            .rfind(|line| !line.is_empty())
            .ok_or("`nightjar subject add` printed no access token")?
            .to_string();
        target.bearer = request_jwt(&target.http, &target.access_token).await?;
        Ok(target)
    }

    /// Starts the reference server (`node server.js` in `directory`) on a free loopback port.
    pub fn start_reference(directory: &Path, log: &Path) -> Result<Target, String> {
        if !directory.join("node_modules").is_dir() {
            return Err(format!(
                "{} has no node_modules: run `bash bench/setup.sh` first",
                directory.display()
            ));
        }
        let mut command = Command::new("node");
        command
            .arg("server.js")
            .current_dir(directory)
            .env("PORT", "0")
            .env("HOSTNAME", "127.0.0.1")
            .env("REFERENCE_ACCESS_TOKEN", REFERENCE_TOKEN);
        let (child, addresses) = spawn_until_listening(command, log, 1)?;
        Ok(Target {
            kind: Kind::Reference,
            http: addresses[0].clone(),
            grpc: None,
            access_token: REFERENCE_TOKEN.to_string(),
            bearer: REFERENCE_TOKEN.to_string(),
            pids: vec![child.id()],
            child: Some(child),
            _data: None,
        })
    }

    /// Attaches to a running Nightjar on loopback addresses.
    pub async fn attach(attach: &Attach) -> Result<Target, String> {
        require_loopback(&attach.http)?;
        require_loopback(&attach.grpc)?;
        let bearer = request_jwt(&attach.http, &attach.access_token).await?;
        Ok(Target {
            kind: Kind::Nightjar,
            http: attach.http.trim_end_matches('/').to_string(),
            grpc: Some(attach.grpc.trim_end_matches('/').to_string()),
            access_token: attach.access_token.clone(),
            bearer,
            pids: attach.pids.clone(),
            child: None,
            _data: None,
        })
    }

    /// Reads the summed memory and CPU time of the target's processes.
    pub fn usage(&self) -> Usage {
        self.pids
            .iter()
            .filter_map(|pid| process::usage(*pid).ok())
            .fold(Usage::default(), Usage::plus)
    }

    /// Returns whether the started server process is still running (true when attached).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// Stops a started server with SIGTERM, killing it when it does not exit in time.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill only sends a signal to the process the bench started.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + STOP_TIMEOUT;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "{} did not exit {} s after SIGTERM; killing it",
            self.kind.name(),
            STOP_TIMEOUT.as_secs()
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Spawns `command` with standard error copied to `log`, and waits for `count`
/// lines `listening on <address>`; returns the child and the addresses.
fn spawn_until_listening(
    mut command: Command,
    log: &Path,
    count: usize,
) -> Result<(Child, Vec<String>), String> {
    let program = format!("{:?}", command.get_program());
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot start {program}: {err}"))?;
    let mut log_file = std::fs::File::create(log)
        .map_err(|err| format!("cannot create {}: {err}", log.display()))?;
    let stderr = child.stderr.take().expect("stderr is piped");

    // The thread copies every line to the log for the server's whole life, so
    // the pipe never fills and blocks the server.
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("listening on ") {
                let address = line[at + "listening on ".len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let _ = sender.send(address);
            }
            let _ = writeln!(log_file, "{line}");
        }
    });

    let mut addresses = Vec::new();
    while addresses.len() < count {
        match receiver.recv_timeout(START_TIMEOUT) {
            Ok(address) => addresses.push(address),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{program} printed {} of {count} `listening on` lines within {} s; see {}",
                    addresses.len(),
                    START_TIMEOUT.as_secs(),
                    log.display()
                ));
            }
        }
    }
    Ok((child, addresses))
}

/// Exchanges an access token for a JWT at `GET /api/v2/authorization/request/<token>`.
async fn request_jwt(http: &str, access_token: &str) -> Result<String, String> {
    let url = format!(
        "{}/api/v2/authorization/request/{access_token}",
        http.trim_end_matches('/')
    );
    let response = reqwest::get(&url)
        .await
        .map_err(|err| format!("JWT request to {http} failed: {err}"))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|err| format!("JWT response from {http} unreadable: {err}"))?;
    if !status.is_success() {
        return Err(format!("JWT request answered {status}: {body}"));
    }
    let value: serde_json::Value =
        serde_json::from_str(&body).map_err(|err| format!("JWT response is not JSON: {err}"))?;
    value["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("JWT response has no `token`: {body}"))
}

/// Rejects URLs whose host is not a loopback address: the bench loads only
/// servers on this machine.
pub fn require_loopback(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.rsplit_once(':') {
        Some((host, _port)) => host,
        None => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(format!(
            "{url:?} is not a loopback address: nightjar-bench only loads servers on 127.0.0.1"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_accepted() {
        for url in [
            "http://127.0.0.1:1337",
            "http://localhost:50051/",
            "http://[::1]:8080",
        ] {
            assert!(require_loopback(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn other_hosts_rejected() {
        for url in [
            "http://10.0.0.5:1337",
            "http://169.254.169.254/",
            "https://127.0.0.1:1",
            "http://example.org",
        ] {
            assert!(require_loopback(url).is_err(), "{url}");
        }
    }
}
