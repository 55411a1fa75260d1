//! Runs the Node and Python clients under `tests/js` and `tests/python` as child
//! processes against a started server, with a time limit, and fails the test with
//! their output and the server's log when they do not exit 0.

#![allow(dead_code)]

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one client script may run before it is killed.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// How many of the server's last log lines a failure message shows.
const SERVER_LOG_LINES: usize = 80;

/// The command that installs every client the tests run.
pub const INSTALL_COMMAND: &str = "bash tests/run.sh";

/// Returns the repository root.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Returns the directory of the Node clients.
pub fn js_dir() -> PathBuf {
    repo_root().join("tests/js")
}

/// Panics with the install command when `dir/node_modules` is missing.
pub fn require_node_modules(dir: &Path) {
    let modules = dir.join("node_modules");
    assert!(
        modules.is_dir(),
        "{} is missing: run `{INSTALL_COMMAND}` from the repository root, which runs `npm ci` there and then the tests",
        modules.display()
    );
}

/// Panics with the install command when the Python gRPC packages cannot be imported.
pub fn require_python_grpc() {
    let output = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools, google.protobuf"])
        .output();
    match output {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "python3 cannot import grpc, grpc_tools and google.protobuf: run `{INSTALL_COMMAND}` from the repository root, \
             which installs tests/python/requirements.txt; python3 printed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => panic!(
            "python3 could not be started ({error}): install Python 3.11 with pip, then run `{INSTALL_COMMAND}`"
        ),
    }
}

/// What a finished (or killed) client script left behind.
pub struct ScriptRun {
    /// Human-readable command line, for messages.
    pub command: String,
    /// Exit code; `None` when the script was killed or ended by a signal.
    pub code: Option<i32>,
    /// True when the script ran past `SCRIPT_TIMEOUT` and was killed.
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

impl ScriptRun {
    /// Panics unless the script exited 0, showing its output and the tail of `server_log`.
    pub fn assert_success(&self, server_log: &[String]) {
        if self.code == Some(0) {
            return;
        }
        let outcome = if self.timed_out {
            format!("was killed after {} s", SCRIPT_TIMEOUT.as_secs())
        } else {
            format!("exited with {:?}", self.code)
        };
        let tail = &server_log[server_log.len().saturating_sub(SERVER_LOG_LINES)..];
        panic!(
            "`{}` {outcome}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- last {} lines of the server log ---\n{}",
            self.command,
            self.stdout,
            self.stderr,
            tail.len(),
            tail.join("\n")
        );
    }
}

/// Runs `program args` in `dir` with the extra environment `env`, killing it after `SCRIPT_TIMEOUT`.
pub fn run_script(program: &str, args: &[&str], dir: &Path, env: &[(&str, &str)]) -> ScriptRun {
    let command_line = format!("{program} {}", args.join(" "));
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        // A group of its own, so a timeout also ends what the script started (Chromium).
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap_or_else(|error| {
        panic!(
            "could not start `{command_line}` in {}: {error}",
            dir.display()
        )
    });

    // Drain both pipes on threads so a chatty script cannot block on a full pipe.
    let stdout = read_to_end_on_thread(child.stdout.take().expect("stdout is piped"));
    let stderr = read_to_end_on_thread(child.stderr.take().expect("stderr is piped"));

    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for client script") {
            break status;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            break child.wait().expect("wait for killed client script");
        }
        std::thread::sleep(Duration::from_millis(50));
    };

    ScriptRun {
        command: command_line,
        code: if timed_out { None } else { status.code() },
        timed_out,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

fn read_to_end_on_thread(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
