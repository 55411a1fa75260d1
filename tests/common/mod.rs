//! Test harness: starts a real `nightjar serve` process on free loopback ports with
//! a fresh data directory, and drives its CLI.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// API_SECRET used by every test server.
pub const API_SECRET: &str = "nightjar-test-secret-0001";

/// How long a server may take to print its listening lines.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Returns the path of the `nightjar` binary that Cargo built for these tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nightjar"))
}

/// A running `nightjar serve` process.
pub struct Nightjar {
    /// The child process.
    child: Option<Child>,
    /// Edge base URL, such as `http://127.0.0.1:40123`.
    pub http: String,
    /// Core gRPC URL, such as `http://127.0.0.1:40124`.
    pub grpc: String,
    /// Data directory; kept so a test can restart on the same data.
    pub data_dir: PathBuf,
    /// Owner of the temporary directory, removed when the last handle drops.
    _temp: Option<std::sync::Arc<tempfile::TempDir>>,
    /// Extra environment variables given at start.
    env: Vec<(String, String)>,
    /// Lines the server printed on stderr, collected by a reader thread.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Nightjar {
    /// Returns the edge's `host:port`, for tests that speak raw HTTP over TCP.
    pub fn http_address(&self) -> String {
        self.http
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    }

    /// Starts a server on a new temporary data directory.
    pub fn start() -> Nightjar {
        Self::start_with_env(&[])
    }

    /// Starts a server on a new temporary data directory with extra environment variables.
    pub fn start_with_env(env: &[(&str, &str)]) -> Nightjar {
        let temp = std::sync::Arc::new(tempfile::tempdir().expect("create temp dir"));
        let data_dir = temp.path().join("data");
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::spawn(data_dir, Some(temp), env)
    }

    /// Starts a server again on the same data directory and environment (after `stop` or `kill`).
    pub fn restart(&mut self) {
        self.stop();
        let next = Self::spawn(self.data_dir.clone(), self._temp.clone(), self.env.clone());
        *self = next;
    }

    /// Starts a server again on the same data directory with `env` added to (or
    /// replacing) the environment it was started with.
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        for (name, value) in env {
            self.env.retain(|(existing, _)| existing != name);
            self.env.push((name.to_string(), value.to_string()));
        }
        self.restart();
    }

    /// Returns the process id of the running server, or `None` after `stop` or `kill`.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(
        data_dir: PathBuf,
        temp: Option<std::sync::Arc<tempfile::TempDir>>,
        env: Vec<(String, String)>,
    ) -> Nightjar {
        let mut command = Command::new(binary());
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--hostname")
            .arg("127.0.0.1")
            .arg("--port")
            .arg("0")
            .arg("--grpc-addr")
            .arg("127.0.0.1:0")
            .env("API_SECRET", API_SECRET)
            .env("CI", "true")
            .env("AUTH_FAIL_DELAY", "0")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn nightjar serve");

        // Read stderr on a thread: collect every line, report the listening lines.
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (sender, receiver) = mpsc::channel();
        let lines = log.clone();
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

        let mut http = None;
        let mut grpc = None;
        while http.is_none() || grpc.is_none() {
            match receiver.recv_timeout(START_TIMEOUT) {
                Ok(address) if address.starts_with("grpc://") => {
                    grpc = Some(address.replacen("grpc://", "http://", 1))
                }
                Ok(address) if address.starts_with("grpcs://") => {
                    grpc = Some(address.replacen("grpcs://", "https://", 1))
                }
                Ok(address) => http = Some(address),
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "nightjar serve did not print both listening lines; log:\n{}",
                        log.lock().unwrap().join("\n")
                    );
                }
            }
        }

        Nightjar {
            child: Some(child),
            http: http.unwrap(),
            grpc: grpc.unwrap(),
            data_dir,
            _temp: temp,
            env,
            log,
        }
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs the CLI against this server's core and returns its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        run_cli(&self.grpc, &self.data_dir, args)
    }

    /// Creates a subject with `roles` and returns its access token.
    pub fn subject(&self, name: &str, roles: &[&str]) -> String {
        self.subject_with_env(name, roles, &[])
    }

    /// Creates a subject with `roles` through a CLI run with extra environment
    /// variables (such as `NIGHTJAR_CORE_CA`), and returns its access token.
    pub fn subject_with_env(&self, name: &str, roles: &[&str], env: &[(&str, &str)]) -> String {
        let roles = roles.join(",");
        let output = run_cli_with_env(
            &self.grpc,
            &self.data_dir,
            &["subject", "add", name, "--roles", &roles],
            env,
        );
        output
            .lines()
            .map(str::trim)
            .rfind(|line| !line.is_empty())
            .expect("subject add printed a token")
            .to_string()
    }

    /// Creates a role with `permissions`.
    pub fn role(&self, name: &str, permissions: &[&str]) {
        let permissions = permissions.join(",");
        self.cli(&["role", "add", name, "--permissions", &permissions]);
    }
}

impl Drop for Nightjar {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `nightjar` with `args` against the core at `core_url`, panicking on failure.
pub fn run_cli(core_url: &str, data_dir: &Path, args: &[&str]) -> String {
    run_cli_with_env(core_url, data_dir, args, &[])
}

/// Runs `nightjar` with `args` and extra environment variables, panicking on failure.
pub fn run_cli_with_env(
    core_url: &str,
    data_dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> String {
    let output = Command::new(binary())
        .args(args)
        .envs(env.iter().copied())
        .env("NIGHTJAR_CORE_URL", core_url)
        .env("NIGHTJAR_DATA_DIR", data_dir)
        .env("API_SECRET", API_SECRET)
        .env("NO_COLOR", "1")
        .output()
        .expect("run nightjar CLI");
    assert!(
        output.status.success(),
        "nightjar {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("CLI output is UTF-8")
}

/// HTTP helpers for the REST tests: an APIv3 client that carries a JWT, the
/// admin API secret header, and the date and identifier forms that APIv3 uses.
/// Expected values are computed here from the APIv3 contract, never by asking
/// the server under test.
pub mod rest {
    use super::{API_SECRET, Nightjar};
    use reqwest::header::HeaderMap;
    use reqwest::{Client, Method, RequestBuilder};
    use serde_json::Value;
    use sha1::{Digest, Sha1};

    /// Name of the subject that `Api::admin` creates with the `admin` role.
    pub const ADMIN_SUBJECT: &str = "rest-admin";

    /// The six APIv3 collections, in alphabetical order.
    pub const COLLECTIONS: [&str; 6] = [
        "devicestatus",
        "entries",
        "food",
        "profile",
        "settings",
        "treatments",
    ];

    /// 2018-05-03T21:40:10.088Z in epoch milliseconds, the base date of most fixtures.
    pub const BASE_DATE: i64 = 1_525_383_610_088;

    /// A response read to the end.
    #[derive(Debug)]
    pub struct Reply {
        /// HTTP status code.
        pub status: u16,
        /// Response headers.
        pub headers: HeaderMap,
        /// Response body as text.
        pub body: String,
    }

    impl Reply {
        /// Returns the header `name` as text, or `None` when it is absent.
        pub fn header(&self, name: &str) -> Option<String> {
            self.headers
                .get(name)
                .map(|value| value.to_str().expect("header is ASCII").to_string())
        }

        /// Parses the body as JSON, panicking with the body text when it is not JSON.
        pub fn json(&self) -> Value {
            serde_json::from_str(&self.body).unwrap_or_else(|error| {
                panic!(
                    "response {} is not JSON ({error}): {:?}",
                    self.status, self.body
                )
            })
        }
    }

    /// An HTTP client for one server, optionally authenticated with a JWT.
    #[derive(Clone)]
    pub struct Api {
        /// Edge base URL, such as `http://127.0.0.1:40123`.
        pub base: String,
        /// Shared connection pool.
        pub client: Client,
        /// JWT sent as `Authorization: Bearer`, or `None` for anonymous requests.
        pub jwt: Option<String>,
    }

    impl Api {
        /// Creates a client that sends no credential.
        pub fn anonymous(server: &Nightjar) -> Api {
            Api {
                base: server.http.clone(),
                client: Client::new(),
                jwt: None,
            }
        }

        /// Exchanges `access_token` for a JWT and returns a client that sends it.
        pub async fn with_token(server: &Nightjar, access_token: &str) -> Api {
            let anonymous = Api::anonymous(server);
            let reply = anonymous.request_jwt(access_token).await;
            assert_eq!(reply.status, 200, "JWT request failed: {}", reply.body);
            let jwt = reply.json()["token"]
                .as_str()
                .expect("JWT response has a `token` string")
                .to_string();
            Api {
                jwt: Some(jwt),
                ..anonymous
            }
        }

        /// Creates a subject named `name` with `roles` and returns a client authenticated as it.
        pub async fn subject(server: &Nightjar, name: &str, roles: &[&str]) -> Api {
            let access_token = server.subject(name, roles);
            Api::with_token(server, &access_token).await
        }

        /// Creates the `ADMIN_SUBJECT` subject with the `admin` role and returns a client for it.
        pub async fn admin(server: &Nightjar) -> Api {
            Api::subject(server, ADMIN_SUBJECT, &["admin"]).await
        }

        /// Returns a client with the same JWT for `server`, whose port changes on restart.
        pub fn rebase(&self, server: &Nightjar) -> Api {
            Api {
                base: server.http.clone(),
                client: Client::new(),
                jwt: self.jwt.clone(),
            }
        }

        /// Returns a client that sends `jwt` as its bearer credential.
        pub fn with_jwt(&self, jwt: &str) -> Api {
            Api {
                jwt: Some(jwt.to_string()),
                ..self.clone()
            }
        }

        /// Starts a request to `path` (which begins with `/`) with the bearer header when set.
        pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
            let builder = self
                .client
                .request(method, format!("{}{}", self.base, path));
            match &self.jwt {
                Some(jwt) => builder.bearer_auth(jwt),
                None => builder,
            }
        }

        /// Sends `builder` and reads the whole response.
        pub async fn send(&self, builder: RequestBuilder) -> Reply {
            let response = builder.send().await.expect("send request to nightjar");
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.text().await.expect("read response body");
            Reply {
                status,
                headers,
                body,
            }
        }

        pub async fn get(&self, path: &str) -> Reply {
            self.send(self.request(Method::GET, path)).await
        }

        /// Sends a GET with `query` encoded into the URL.
        pub async fn get_query(&self, path: &str, query: &[(&str, &str)]) -> Reply {
            self.send(self.request(Method::GET, path).query(query))
                .await
        }

        /// Sends a GET with extra request headers.
        pub async fn get_with_headers(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
            let mut builder = self.request(Method::GET, path);
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            self.send(builder).await
        }

        pub async fn post(&self, path: &str, body: &Value) -> Reply {
            self.send(self.request(Method::POST, path).json(body)).await
        }

        pub async fn put(&self, path: &str, body: &Value) -> Reply {
            self.send(self.request(Method::PUT, path).json(body)).await
        }

        pub async fn patch(&self, path: &str, body: &Value) -> Reply {
            self.send(self.request(Method::PATCH, path).json(body))
                .await
        }

        pub async fn delete(&self, path: &str) -> Reply {
            self.send(self.request(Method::DELETE, path)).await
        }

        /// Sends `body` verbatim with `Content-Type: application/json`.
        pub async fn send_raw(&self, method: Method, path: &str, body: Vec<u8>) -> Reply {
            let builder = self
                .request(method, path)
                .header("content-type", "application/json")
                .body(body);
            self.send(builder).await
        }

        /// Sends `GET /api/v2/authorization/request/{access_token}` without credentials.
        pub async fn request_jwt(&self, access_token: &str) -> Reply {
            let url = format!("{}/api/v2/authorization/request/{access_token}", self.base);
            self.send(self.client.get(url)).await
        }

        /// Sends an admin API request authorised by the `api-secret` header.
        pub async fn admin_request(
            &self,
            method: Method,
            path: &str,
            body: Option<&Value>,
        ) -> Reply {
            let mut builder = self
                .client
                .request(method, format!("{}{}", self.base, path))
                .header("api-secret", api_secret_hash());
            if let Some(body) = body {
                builder = builder.json(body);
            }
            self.send(builder).await
        }

        /// Creates a document in `collection`, asserts 201 and returns its identifier.
        pub async fn create(&self, collection: &str, document: &Value) -> String {
            let reply = self.post(&format!("/api/v3/{collection}"), document).await;
            let body = expect_status(&reply, 201);
            body["identifier"]
                .as_str()
                .expect("create response has an `identifier` string")
                .to_string()
        }

        /// Reads one document, asserts 200 and returns the `result` object.
        pub async fn read(&self, collection: &str, identifier: &str) -> Value {
            let reply = self
                .get(&format!("/api/v3/{collection}/{identifier}"))
                .await;
            let body = expect_status(&reply, 200);
            body["result"].clone()
        }

        /// Searches `collection` with `query`, asserts 200 and returns the `result` array.
        pub async fn search(&self, collection: &str, query: &[(&str, &str)]) -> Vec<Value> {
            let reply = self
                .get_query(&format!("/api/v3/{collection}"), query)
                .await;
            let body = expect_status(&reply, 200);
            body["result"]
                .as_array()
                .unwrap_or_else(|| panic!("search `result` is not an array: {}", reply.body))
                .clone()
        }
    }

    /// Asserts the HTTP status and that the JSON body's `status` field equals it; returns the body.
    #[track_caller]
    pub fn expect_status(reply: &Reply, expected: u16) -> Value {
        assert_eq!(
            reply.status, expected,
            "unexpected HTTP status; body: {}",
            reply.body
        );
        let body = reply.json();
        assert_eq!(
            body["status"], expected,
            "`status` field differs from the HTTP status; body: {}",
            reply.body
        );
        body
    }

    /// Asserts an APIv3 error: the HTTP status, the body's `status` and its exact `message`.
    #[track_caller]
    pub fn expect_error(reply: &Reply, expected_status: u16, expected_message: &str) {
        let body = expect_status(reply, expected_status);
        assert_eq!(
            body["message"], expected_message,
            "unexpected error message; body: {}",
            reply.body
        );
    }

    /// Returns the `api-secret` header value: the SHA-1 hex digest of `API_SECRET`.
    pub fn api_secret_hash() -> String {
        hex::encode(Sha1::digest(API_SECRET.as_bytes()))
    }

    /// Computes the access token of a subject from its name and 24-hex id: the
    /// lower-cased name without non-word characters cut to 10 characters, `-`,
    /// and the first 16 hex digits of SHA-1(hex SHA-1 of API_SECRET, then the id).
    pub fn expected_access_token(name: &str, subject_id: &str) -> String {
        let prefix: String = name
            .to_lowercase()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(10)
            .collect();
        let digest = hex::encode(Sha1::digest(format!("{}{subject_id}", api_secret_hash())));
        format!("{prefix}-{}", &digest[..16])
    }

    /// Computes the identifier that the server derives for a document without one:
    /// UUID v5 of `<device>_<date>[_<eventType>]` in the namespace made of the 16
    /// ASCII bytes `NightscoutRocks!`, with `undefined` standing for a missing device.
    pub fn expected_identifier(
        device: Option<&str>,
        date_ms: i64,
        event_type: Option<&str>,
    ) -> String {
        let namespace = uuid::Uuid::from_bytes(*b"NightscoutRocks!");
        let mut name = format!("{}_{date_ms}", device.unwrap_or("undefined"));
        if let Some(event_type) = event_type {
            name.push('_');
            name.push_str(event_type);
        }
        uuid::Uuid::new_v5(&namespace, name.as_bytes()).to_string()
    }

    /// Formats epoch milliseconds as an HTTP date (`Thu, 03 May 2018 21:40:10 GMT`),
    /// which drops the milliseconds.
    pub fn http_date(ms: i64) -> String {
        let instant = chrono::DateTime::from_timestamp_millis(ms).expect("timestamp in range");
        instant.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
    }

    /// Parses an HTTP date into epoch milliseconds, panicking on anything else.
    pub fn parse_http_date(text: &str) -> i64 {
        chrono::DateTime::parse_from_rfc2822(text)
            .unwrap_or_else(|error| panic!("{text:?} is not an HTTP date: {error}"))
            .timestamp_millis()
    }

    /// Formats epoch milliseconds as ISO 8601 UTC with milliseconds (`2018-05-03T21:40:10.088Z`).
    pub fn iso_utc(ms: i64) -> String {
        chrono::DateTime::from_timestamp_millis(ms)
            .expect("timestamp in range")
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    /// Truncates epoch milliseconds to whole seconds, as HTTP dates do.
    pub fn floor_to_seconds(ms: i64) -> i64 {
        ms - ms.rem_euclid(1000)
    }

    /// Returns the current time in epoch milliseconds.
    pub fn now_ms() -> i64 {
        chrono::Utc::now().timestamp_millis()
    }

    /// Returns `document[field]` as an i64, panicking with the document when it is not one.
    #[track_caller]
    pub fn int_field(document: &Value, field: &str) -> i64 {
        document[field]
            .as_i64()
            .unwrap_or_else(|| panic!("`{field}` is not an integer in {document}"))
    }

    /// Returns the `identifier` of each document, in order.
    pub fn identifiers(documents: &[Value]) -> Vec<String> {
        documents
            .iter()
            .map(|document| {
                document["identifier"]
                    .as_str()
                    .unwrap_or_else(|| panic!("document without identifier: {document}"))
                    .to_string()
            })
            .collect()
    }
}
