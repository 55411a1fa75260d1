//! Helpers shared by the change-stream tests: a gRPC client built from
//! `proto/`, separate `nightjar core` and `nightjar edge` processes, Node
//! clients that run beside the test, REST writes that report failures instead
//! of panicking, and readings of a process's resident memory.

#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::common::rest::Api;
use crate::common::{API_SECRET, binary};

/// Types and client generated from `proto/nightjar/storage/v1/storage.proto` by the
/// package's build script.
pub mod proto {
    #![allow(clippy::all)]
    tonic::include_proto!("nightjar.storage.v1");
}

use proto::storage_client::StorageClient;
use proto::{Change, GetCursorRequest, GetCursorResponse, Operation, WatchChangesRequest};

/// Trailing metadata key of OUT_OF_RANGE: the oldest cursor a watch may start from.
pub const OLDEST_CURSOR_KEY: &str = "nightjar-oldest-cursor";

/// Trailing metadata key of RESOURCE_EXHAUSTED: the last cursor the consumer was sent.
pub const LAST_CURSOR_KEY: &str = "nightjar-last-cursor";

/// How long a process may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// gRPC

/// Connects a Storage client to `url`, retrying for up to 10 seconds. Each call
/// gets its own HTTP/2 connection, so a stalled stream on one client cannot hold
/// back another's flow-control window.
pub async fn connect(url: &str) -> StorageClient<Channel> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .expect("valid core URL")
        .connect_timeout(Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match endpoint.connect().await {
            Ok(channel) => {
                return StorageClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
            }
            Err(error) if Instant::now() < deadline => {
                eprintln!("gRPC connect to {url} failed ({error}); retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("cannot connect to core at {url}: {error}"),
        }
    }
}

/// Wraps `message` in a request that carries `access_token` as its bearer credential.
pub fn authorized<T>(message: T, access_token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = MetadataValue::try_from(format!("Bearer {access_token}"))
        .expect("access token is valid metadata");
    request.metadata_mut().insert("authorization", value);
    request
}

/// Calls GetCursor and returns both cursors.
pub async fn get_cursor(
    client: &mut StorageClient<Channel>,
    access_token: &str,
) -> GetCursorResponse {
    client
        .get_cursor(authorized(GetCursorRequest {}, access_token))
        .await
        .unwrap_or_else(|status| panic!("GetCursor failed: {status:?}"))
        .into_inner()
}

/// Opens WatchChanges for `collections` (all readable when empty) after `cursor`.
pub async fn watch(
    client: &mut StorageClient<Channel>,
    access_token: &str,
    collections: &[&str],
    cursor: &str,
) -> Result<tonic::Streaming<Change>, tonic::Status> {
    let request = WatchChangesRequest {
        collections: collections.iter().map(|c| c.to_string()).collect(),
        cursor: cursor.to_string(),
    };
    client
        .watch_changes(authorized(request, access_token))
        .await
        .map(tonic::Response::into_inner)
}

/// True for a CHECKPOINT message, which carries only a cursor and is skipped by consumers.
pub fn is_checkpoint(change: &Change) -> bool {
    change.operation == Operation::Checkpoint as i32
}

/// Returns the operation name of a change, for messages and comparisons.
pub fn operation_name(change: &Change) -> &'static str {
    match Operation::try_from(change.operation) {
        Ok(Operation::Create) => "create",
        Ok(Operation::Update) => "update",
        Ok(Operation::Delete) => "delete",
        Ok(Operation::Checkpoint) => "checkpoint",
        _ => "unspecified",
    }
}

/// Returns `status`'s metadata value for `key` as text, or `None` when absent.
pub fn metadata_text(status: &tonic::Status, key: &str) -> Option<String> {
    status
        .metadata()
        .get(key)
        .map(|value| value.to_str().expect("metadata value is ASCII").to_string())
}

/// What one pass over a change stream read.
#[derive(Debug, Default)]
pub struct Read {
    /// Changes other than checkpoints, in arrival order.
    pub changes: Vec<Change>,
    /// Cursor of the last message of any kind, checkpoints included.
    pub last_cursor: Option<String>,
    /// The status that ended the stream, if it failed.
    pub error: Option<tonic::Status>,
    /// True when the stream ended without an error.
    pub ended: bool,
}

impl Read {
    /// Returns the identifiers of the changes, in order.
    pub fn identifiers(&self) -> Vec<String> {
        self.changes.iter().map(|c| c.identifier.clone()).collect()
    }
}

/// Reads `stream` until `done` holds for what was read, the stream ends or fails,
/// or `timeout` passes. Checkpoints are checked and skipped.
pub async fn read_until(
    stream: &mut tonic::Streaming<Change>,
    timeout: Duration,
    mut done: impl FnMut(&Read) -> bool,
) -> Read {
    let mut read = Read::default();
    let deadline = tokio::time::Instant::now() + timeout;
    while !done(&read) {
        let message = match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => break,
            Ok(Ok(Some(message))) => message,
            Ok(Ok(None)) => {
                read.ended = true;
                break;
            }
            Ok(Err(status)) => {
                read.error = Some(status);
                break;
            }
        };
        assert!(
            !message.cursor.is_empty(),
            "change without a cursor: {message:?}"
        );
        read.last_cursor = Some(message.cursor.clone());
        if is_checkpoint(&message) {
            assert!(
                message.collection.is_empty()
                    && message.identifier.is_empty()
                    && message.document.is_empty(),
                "a checkpoint carries only a cursor, got {message:?}"
            );
            continue;
        }
        read.changes.push(message);
    }
    read
}

/// Reads `stream` until a message with cursor `head` (a change or a checkpoint) arrives.
pub async fn read_through(
    stream: &mut tonic::Streaming<Change>,
    head: &str,
    timeout: Duration,
) -> Read {
    read_until(stream, timeout, |read| {
        read.last_cursor.as_deref() == Some(head)
    })
    .await
}

/// Panics unless every identifier occurs once in `identifiers`.
#[track_caller]
pub fn assert_no_duplicates(identifiers: &[String], context: &str) {
    let mut seen = HashSet::new();
    let duplicates: Vec<&String> = identifiers.iter().filter(|id| !seen.insert(*id)).collect();
    assert!(
        duplicates.is_empty(),
        "{context}: identifiers delivered more than once: {duplicates:?}"
    );
}

// ---------------------------------------------------------------------------
// REST writes

/// The outcome of one REST write.
#[derive(Debug, Clone)]
pub enum WriteOutcome {
    /// The edge responded 201 with this `lastModified`.
    Acknowledged { last_modified: i64 },
    /// Any other response (an HTTP status with its body), or a transport error.
    Failed { detail: String },
}

/// Posts `document` to `/api/v3/{collection}` with a time limit and returns the
/// outcome without panicking, because servers in these tests go down on purpose.
pub async fn try_create(
    api: &Api,
    collection: &str,
    document: &Value,
    timeout: Duration,
) -> WriteOutcome {
    let request = api
        .request(reqwest::Method::POST, &format!("/api/v3/{collection}"))
        .json(document)
        .timeout(timeout);
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => {
            return WriteOutcome::Failed {
                detail: format!("transport error: {error}"),
            };
        }
    };
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    if status != 201 {
        return WriteOutcome::Failed {
            detail: format!("HTTP {status}: {body}"),
        };
    }
    let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    match parsed["lastModified"].as_i64() {
        Some(last_modified) => WriteOutcome::Acknowledged { last_modified },
        None => WriteOutcome::Failed {
            detail: format!("201 without lastModified: {body}"),
        },
    }
}

// ---------------------------------------------------------------------------
// Separate core and edge processes

/// A `nightjar` child process, killed on drop, whose log lines are collected.
pub struct Process {
    child: Option<Child>,
    /// Address from the `listening on` line, with its scheme (`grpc://` or `http://`).
    pub address: String,
    /// Lines the process printed on stderr.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Spawns `nightjar <args>` with `env` and waits for its first `listening on` line.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Process {
        let mut command = Command::new(binary());
        command
            .args(args)
            .env("API_SECRET", API_SECRET)
            .env("CI", "true")
            .env("AUTH_FAIL_DELAY", "0")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawn nightjar");

        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
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
                lines.lock().unwrap().push(line);
            }
        });
        let Ok(address) = receiver.recv_timeout(START_TIMEOUT) else {
            let _ = child.kill();
            panic!(
                "nightjar {args:?} printed no listening line; log:\n{}",
                log.lock().unwrap().join("\n")
            );
        };
        Process {
            child: Some(child),
            address,
            log,
        }
    }

    /// Starts `nightjar core` on `grpc_addr` (port 0 picks one) over `data_dir`.
    pub fn core(data_dir: &Path, grpc_addr: &str, env: &[(&str, &str)]) -> Process {
        let data_dir = data_dir.to_str().expect("UTF-8 path");
        Process::spawn(
            &["core", "--data-dir", data_dir, "--grpc-addr", grpc_addr],
            env,
        )
    }

    /// Starts `nightjar edge` on a free port, talking to the core at `core_url`.
    pub fn edge(core_url: &str) -> Process {
        Process::spawn(&["edge", "--port", "0", "--core-url", core_url], &[])
    }

    /// Returns the address without its scheme, such as `127.0.0.1:40123`.
    pub fn host_port(&self) -> String {
        self.address
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(&self.address)
            .to_string()
    }

    /// Returns the address as an `http://` URL, the form tonic and reqwest take.
    pub fn url(&self) -> String {
        format!("http://{}", self.host_port())
    }

    /// Returns the process id, or `None` once stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Returns a copy of the log lines printed so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Kills the process with SIGKILL, as a crash would, and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process with SIGTERM and waits up to 15 seconds, then kills it.
    pub fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Exchanges `access_token` for a JWT at the edge `base` and returns a REST client.
pub async fn api_for(base: &str, access_token: &str) -> Api {
    let anonymous = Api {
        base: base.to_string(),
        client: reqwest::Client::new(),
        jwt: None,
    };
    let reply = anonymous.request_jwt(access_token).await;
    assert_eq!(
        reply.status, 200,
        "JWT request at {base} failed: {}",
        reply.body
    );
    let jwt = reply.json()["token"]
        .as_str()
        .expect("JWT response has a token")
        .to_string();
    Api {
        jwt: Some(jwt),
        ..anonymous
    }
}

// ---------------------------------------------------------------------------
// Node clients running beside the test

/// A Node script from `tests/js` running in its own process group, with its
/// standard output readable line by line while it runs. Killed on drop.
pub struct NodeScript {
    child: Option<Child>,
    /// Name of the script, for messages.
    pub name: String,
    lines: mpsc::Receiver<String>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl NodeScript {
    /// Starts `node <script>` in `tests/js` with `env`.
    pub fn start(script: &str, env: &[(&str, &str)]) -> NodeScript {
        let dir = js_dir();
        assert!(
            dir.join("node_modules").is_dir(),
            "{} is missing: run `bash tests/run.sh` from the repository root, which runs `npm ci` there",
            dir.join("node_modules").display()
        );
        let mut command = Command::new("node");
        command
            .arg(script)
            .current_dir(&dir)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("could not start node {script}: {error}"));

        let (sender, lines) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stdout_lines = stdout.clone();
        let pipe = child.stdout.take().expect("stdout is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                stdout_lines.lock().unwrap().push(line.clone());
                let _ = sender.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_lines = stderr.clone();
        let pipe = child.stderr.take().expect("stderr is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                stderr_lines.lock().unwrap().push(line);
            }
        });

        NodeScript {
            child: Some(child),
            name: script.to_string(),
            lines,
            stdout,
            stderr,
        }
    }

    /// Waits for a standard output line that starts with `prefix` and returns the rest of it.
    pub fn wait_for_line(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(remaining) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                }
                Err(_) => panic!(
                    "node {} printed no line starting with {prefix:?} within {} s\n{}",
                    self.name,
                    timeout.as_secs(),
                    self.output()
                ),
            }
        }
    }

    /// Waits for the script to exit, killing it after `timeout`; returns its exit code.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait for node") {
                // Let the reader threads take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return status.code();
            }
            if Instant::now() >= deadline {
                kill_group(&mut child);
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the script and panics with its output unless it exits 0 within `timeout`.
    pub fn expect_success(&mut self, timeout: Duration, server_log: &[String]) {
        let code = self.wait(timeout);
        if code == Some(0) {
            return;
        }
        let tail = &server_log[server_log.len().saturating_sub(60)..];
        panic!(
            "node {} {}\n{}\n--- last {} lines of the server log ---\n{}",
            self.name,
            match code {
                Some(code) => format!("exited with {code}"),
                None => format!("did not exit within {} s and was killed", timeout.as_secs()),
            },
            self.output(),
            tail.len(),
            tail.join("\n")
        );
    }

    /// Returns the last standard output line that starts with `prefix`, without it.
    pub fn last_line(&self, prefix: &str) -> Option<String> {
        self.stdout.lock().unwrap().iter().rev().find_map(|line| {
            line.strip_prefix(prefix)
                .map(|rest| rest.trim().to_string())
        })
    }

    /// Returns both outputs, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout.lock().unwrap().join("\n"),
            self.stderr.lock().unwrap().join("\n")
        )
    }
}

impl Drop for NodeScript {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
    }
}

fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Returns the directory of the Node clients.
pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

// ---------------------------------------------------------------------------
// Memory

/// Reads the resident set size of process `pid` from `/proc/<pid>/status`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Samples a process's resident set size every `interval` on a thread until stopped.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(Duration, u64)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32, interval: Duration) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (stopped, recorded) = (stop.clone(), samples.clone());
        let started = Instant::now();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match rss_kib(pid) {
                    Some(kib) => recorded.lock().unwrap().push((started.elapsed(), kib)),
                    None => break,
                }
                std::thread::sleep(interval);
            }
        });
        RssSampler {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    /// Returns the samples taken so far, as (time since start, KiB).
    pub fn samples(&self) -> Vec<(Duration, u64)> {
        self.samples.lock().unwrap().clone()
    }

    /// Stops sampling and returns every sample.
    pub fn finish(mut self) -> Vec<(Duration, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.samples()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
