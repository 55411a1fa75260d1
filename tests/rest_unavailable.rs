//! REST through a separate edge process while its core is down: every
//! storage request gets 503 `Storage service unavailable`, and the edge
//! serves again once core is back on the same address and data.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::rest::{Api, BASE_DATE, expect_error, expect_status};
use common::{API_SECRET, binary, run_cli};
use serde_json::json;

/// A `nightjar core` or `nightjar edge` child process, killed on drop.
struct Role {
    child: Child,
    /// Address from the `listening on` line, with its scheme (`grpc://` or `http://`).
    address: String,
}

impl Role {
    /// Spawns `nightjar <args>` and waits for its first `listening on` line.
    fn spawn(args: &[&str]) -> Role {
        let mut child = Command::new(binary())
            .args(args)
            .env("API_SECRET", API_SECRET)
            .env("CI", "true")
            .env("AUTH_FAIL_DELAY", "0")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nightjar");

        let stderr = child.stderr.take().expect("stderr is piped");
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
            }
        });
        let Ok(address) = receiver.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!("nightjar {args:?} printed no listening line");
        };
        Role { child, address }
    }

    /// Starts core on `grpc_addr` (port 0 picks one) over `data_dir`.
    fn core(data_dir: &Path, grpc_addr: &str) -> Role {
        let data_dir = data_dir.to_str().expect("UTF-8 path");
        Role::spawn(&["core", "--data-dir", data_dir, "--grpc-addr", grpc_addr])
    }

    /// Starts an edge on a free port that talks to the core at `core_url`.
    fn edge(core_url: &str) -> Role {
        Role::spawn(&["edge", "--port", "0", "--core-url", core_url])
    }

    /// Kills the process with SIGKILL and waits for it.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Creates an `Api` for the edge at `base` that sends `jwt`.
fn api_at(base: &str, jwt: &str) -> Api {
    Api {
        base: base.to_string(),
        client: reqwest::Client::new(),
        jwt: Some(jwt.to_string()),
    }
}

#[tokio::test]
async fn core_down_gives_503_then_recovers() {
    let temp = tempfile::tempdir().expect("create temp dir");
    let data_dir = temp.path().join("data");
    let mut core = Role::core(&data_dir, "127.0.0.1:0");
    let grpc_addr = core.address.trim_start_matches("grpc://").to_string();
    let core_url = format!("http://{grpc_addr}");
    let edge = Role::edge(&core_url);
    let access_token = run_cli(
        &core_url,
        &data_dir,
        &["subject", "add", "edge-admin", "--roles", "admin"],
    )
    .lines()
    .map(str::trim)
    .rfind(|line| !line.is_empty())
    .expect("subject add printed a token")
    .to_string();
    let anonymous = Api {
        base: edge.address.clone(),
        client: reqwest::Client::new(),
        jwt: None,
    };
    let reply = anonymous.request_jwt(&access_token).await;
    assert_eq!(reply.status, 200, "JWT through the edge: {}", reply.body);
    let jwt = reply.json()["token"].as_str().expect("token").to_string();
    let api = api_at(&edge.address, &jwt);
    let document = json!({
        "identifier": "kept",
        "type": "sgv",
        "sgv": 100,
        "date": BASE_DATE,
        "app": "nightjar-tests",
    });
    api.create("entries", &document).await;

    core.kill();

    let replies = [
        ("search", api.get("/api/v3/entries").await),
        ("read", api.get("/api/v3/entries/kept").await),
        (
            "history",
            api.get(&format!("/api/v3/entries/history/{BASE_DATE}"))
                .await,
        ),
        ("create", api.post("/api/v3/entries", &document).await),
        (
            "patch",
            api.patch("/api/v3/entries/kept", &json!({ "sgv": 1 }))
                .await,
        ),
        ("delete", api.delete("/api/v3/entries/kept").await),
        ("status", api.get("/api/v3/status").await),
    ];
    for (operation, reply) in replies {
        assert_eq!(
            reply.status, 503,
            "{operation} with core down: {}",
            reply.body
        );
        expect_error(&reply, 503, "Storage service unavailable");
    }

    // Core comes back on the same address; the edge reconnects on its own.
    let _core = Role::core(&data_dir, &grpc_addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    let reply = loop {
        let reply = api.get("/api/v3/entries/kept").await;
        if reply.status != 503 || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let body = expect_status(&reply, 200);
    assert_eq!(
        body["result"]["sgv"], 100,
        "no write went through while core was down"
    );
}
