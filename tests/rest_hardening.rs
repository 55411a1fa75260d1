//! Hostile and careless input at the edges of the service. The cases are
//! deeply nested documents, oversized credentials, client-sent `_id`, the
//! admin API without security, starts without API_SECRET, too many filter
//! values, existing ids on the admin API, identifiers that need
//! percent-encoding, and CLI flags placed after the subcommand. Each is
//! rejected or handled without losing data or stopping the server.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::rest::{Api, BASE_DATE, Reply, expect_error, expect_status};
use common::{API_SECRET, Nightjar, binary};
use reqwest::Method;
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

/// Deepest nesting of objects and arrays a document may have, counting the
/// document object as the first level.
const MAX_DEPTH: usize = 100;

/// How long a `nightjar serve` started by these tests may take to print its
/// listening lines or to exit.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds a valid entry named `identifier`.
fn entry(identifier: &str, sgv: i64) -> Value {
    json!({
        "identifier": identifier,
        "type": "sgv",
        "sgv": sgv,
        "date": BASE_DATE,
        "app": "nightjar-tests",
    })
}

/// How the levels below the document object are built.
#[derive(Clone, Copy, Debug)]
enum Nesting {
    Arrays,
    Objects,
    Mixed,
}

/// Builds a value that, placed as a field of a document, makes the document
/// `levels` deep: `levels - 1` arrays or objects around a number.
fn nested_value(levels: usize, nesting: Nesting) -> Value {
    let mut value = json!(1);
    for level in 1..levels {
        let as_array = match nesting {
            Nesting::Arrays => true,
            Nesting::Objects => false,
            Nesting::Mixed => level % 2 == 0,
        };
        value = if as_array {
            json!([value])
        } else {
            json!({ "n": value })
        };
    }
    value
}

/// Builds an entry named `identifier` that is `levels` deep.
fn nested_entry(identifier: &str, levels: usize, nesting: Nesting) -> Value {
    let mut document = entry(identifier, 100);
    document["nested"] = nested_value(levels, nesting);
    document
}

/// Returns every entry, including soft-deleted ones, as history lists them.
async fn all_entries(api: &Api) -> Vec<Value> {
    let reply = api
        .get(&format!("/api/v3/entries/history/{BASE_DATE}"))
        .await;
    let body = expect_status(&reply, 200);
    body["result"].as_array().expect("result array").clone()
}

/// Asserts that the server still serves `/api/v3/version`.
async fn assert_server_up(api: &Api) {
    let reply = api.get("/api/v3/version").await;
    expect_status(&reply, 200);
}

#[tokio::test]
async fn nesting_over_limit_is_400() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    api.create("entries", &entry("seed", 100)).await;
    let before = all_entries(&api).await;

    for levels in [MAX_DEPTH + 1, 126] {
        for nesting in [Nesting::Arrays, Nesting::Objects, Nesting::Mixed] {
            let case = format!("{levels} levels of {nesting:?}");

            let reply = api
                .post("/api/v3/entries", &nested_entry("deep", levels, nesting))
                .await;
            assert_eq!(reply.status, 400, "POST {case}: {}", reply.body);
            expect_error(&reply, 400, "Bad or missing request body");

            let reply = api
                .put(
                    "/api/v3/entries/seed",
                    &nested_entry("seed", levels, nesting),
                )
                .await;
            assert_eq!(reply.status, 400, "PUT {case}: {}", reply.body);
            expect_error(&reply, 400, "Bad or missing request body");

            let reply = api
                .put(
                    "/api/v3/entries/deep",
                    &nested_entry("deep", levels, nesting),
                )
                .await;
            assert_eq!(reply.status, 400, "inserting PUT {case}: {}", reply.body);
            expect_error(&reply, 400, "Bad or missing request body");

            // A patch object is the first level, as the document object is.
            let patch = json!({ "nested": nested_value(levels, nesting) });
            let reply = api.patch("/api/v3/entries/seed", &patch).await;
            assert_eq!(reply.status, 400, "PATCH {case}: {}", reply.body);
            expect_error(&reply, 400, "Bad or missing request body");
        }
    }

    assert_eq!(
        all_entries(&api).await,
        before,
        "no over-deep body changed the data"
    );
    let listed = api.search("entries", &[]).await;
    assert_eq!(listed.len(), 1, "search still lists the seed: {listed:?}");
    assert_server_up(&api).await;
}

#[tokio::test]
async fn over_deep_post_keeps_search_working() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    api.create("entries", &entry("seed", 100)).await;

    // serde_json stops at 128 levels by default, and the search envelope
    // around documents of these depths reaches 128 or more.
    let mut replies = Vec::new();
    for levels in [126, 127] {
        let identifier = format!("deep-{levels}");
        let document = nested_entry(&identifier, levels, Nesting::Mixed);
        replies.push((levels, api.post("/api/v3/entries", &document).await));
    }

    let listed = api.search("entries", &[]).await;
    let identifiers: Vec<&Value> = listed
        .iter()
        .map(|document| &document["identifier"])
        .collect();
    assert_eq!(
        identifiers,
        [&json!("seed")],
        "search after over-deep POSTs"
    );
    let history = all_entries(&api).await;
    let identifiers: Vec<&Value> = history
        .iter()
        .map(|document| &document["identifier"])
        .collect();
    assert_eq!(
        identifiers,
        [&json!("seed")],
        "history after over-deep POSTs"
    );
    for (levels, reply) in replies {
        assert_eq!(reply.status, 400, "POST of {levels} levels: {}", reply.body);
        expect_error(&reply, 400, "Bad or missing request body");
    }
}

#[tokio::test]
async fn nesting_at_limit_is_stored_and_listed() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    api.create("entries", &entry("seed", 100)).await;
    let deep = nested_entry("deep", MAX_DEPTH, Nesting::Mixed);

    let identifier = api.create("entries", &deep).await;

    assert_eq!(identifier, "deep");
    let stored = api.read("entries", "deep").await;
    assert_eq!(
        stored["nested"], deep["nested"],
        "read returns the nesting sent"
    );
    let listed = api.search("entries", &[]).await;
    let deep_listed: Vec<&Value> = listed
        .iter()
        .filter(|document| document["identifier"] == "deep")
        .collect();
    assert_eq!(listed.len(), 2, "search lists the seed and the deep entry");
    assert_eq!(deep_listed.len(), 1, "search lists the deep entry once");
    assert_eq!(deep_listed[0]["nested"], deep["nested"]);
    let history = all_entries(&api).await;
    assert_eq!(
        history.len(),
        2,
        "history lists the seed and the deep entry"
    );
    assert!(
        history
            .iter()
            .any(|document| document["nested"] == deep["nested"]),
        "history returns the deep entry with its nesting"
    );
}

#[tokio::test]
async fn put_and_patch_at_depth_limit() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    api.create("entries", &entry("seed", 100)).await;

    let replacement = nested_entry("seed", MAX_DEPTH, Nesting::Objects);
    let reply = api.put("/api/v3/entries/seed", &replacement).await;
    expect_status(&reply, 200);
    let inserted = nested_entry("put-new", MAX_DEPTH, Nesting::Arrays);
    let reply = api.put("/api/v3/entries/put-new", &inserted).await;
    expect_status(&reply, 201);
    let patch = json!({ "patched": nested_value(MAX_DEPTH, Nesting::Mixed) });
    let reply = api.patch("/api/v3/entries/seed", &patch).await;
    expect_status(&reply, 200);

    let stored = api.read("entries", "seed").await;
    assert_eq!(stored["nested"], replacement["nested"]);
    assert_eq!(stored["patched"], patch["patched"]);
    let listed = api.search("entries", &[("sort", "identifier")]).await;
    let identifiers: Vec<&Value> = listed
        .iter()
        .map(|document| &document["identifier"])
        .collect();
    assert_eq!(identifiers, [&json!("put-new"), &json!("seed")]);
    assert_eq!(
        all_entries(&api).await.len(),
        2,
        "history lists both entries"
    );
}

/// Sends `GET path` with `Authorization: Bearer <bearer>`.
async fn get_with_bearer(api: &Api, path: &str, bearer: &str) -> Reply {
    let builder = api
        .client
        .get(format!("{}{path}", api.base))
        .bearer_auth(bearer);
    api.send(builder).await
}

/// Sends `GET path` with the `api-secret` header set to `secret`.
async fn get_with_api_secret(api: &Api, path: &str, secret: &str) -> Reply {
    let builder = api
        .client
        .get(format!("{}{path}", api.base))
        .header("api-secret", secret);
    api.send(builder).await
}

#[tokio::test]
async fn oversized_credentials_beside_valid_requests() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    api.create("entries", &entry("seed", 100)).await;
    let oversized = "a".repeat(100_000);

    // All requests start together, so the oversized ones share the edge's
    // connection to core with the legitimate ones.
    let mut hostile = Vec::new();
    for _ in 0..6 {
        let (client, credential) = (api.clone(), oversized.clone());
        hostile.push(tokio::spawn(async move {
            get_with_bearer(&client, "/api/v3/entries", &credential).await
        }));
        let (client, credential) = (api.clone(), oversized.clone());
        hostile.push(tokio::spawn(async move {
            get_with_api_secret(&client, "/api/v2/authorization/subjects", &credential).await
        }));
    }
    let mut legitimate = Vec::new();
    for index in 0..24 {
        let api = api.clone();
        legitimate.push(tokio::spawn(async move {
            if index % 3 == 0 {
                let identifier = format!("concurrent-{index}");
                let reply = api
                    .post("/api/v3/entries", &entry(&identifier, index))
                    .await;
                (format!("create {identifier}"), 201, reply)
            } else if index % 3 == 1 {
                let reply = api.get("/api/v3/entries").await;
                ("search".to_string(), 200, reply)
            } else {
                let reply = api
                    .admin_request(Method::GET, "/api/v2/authorization/subjects", None)
                    .await;
                ("list subjects".to_string(), 200, reply)
            }
        }));
    }

    for task in hostile {
        let reply = task.await.expect("request task");
        assert_eq!(reply.status, 401, "oversized credential: {}", reply.body);
    }
    for task in legitimate {
        let (operation, expected, reply) = task.await.expect("request task");
        assert_eq!(
            reply.status, expected,
            "{operation} beside oversized credentials: {}",
            reply.body
        );
    }
    assert_server_up(&api).await;
    assert_eq!(
        api.search("entries", &[]).await.len(),
        9,
        "seed and 8 concurrent creates"
    );
}

#[tokio::test]
async fn oversized_bearer_alone_is_401() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let oversized = "a".repeat(100_000);

    let reply = get_with_bearer(&api, "/api/v3/entries", &oversized).await;
    expect_error(&reply, 401, "Bad access token or JWT");
    let reply = get_with_api_secret(&api, "/api/v2/authorization/subjects", &oversized).await;
    assert_eq!(reply.status, 401, "oversized api-secret: {}", reply.body);

    let reply = api.get("/api/v3/entries").await;
    expect_status(&reply, 200);
}

#[tokio::test]
async fn client_id_is_never_stored() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let object_id = "5f2b6c1e9d3a4b0012345678";

    let mut posted = entry("posted", 100);
    posted["_id"] = json!(object_id);
    let reply = api.post("/api/v3/entries", &posted).await;
    expect_status(&reply, 201);
    let mut replaced = entry("replaced", 100);
    replaced["date"] = json!(BASE_DATE + 1000);
    api.create("entries", &replaced).await;
    replaced["_id"] = json!("client-id");
    let reply = api.put("/api/v3/entries/replaced", &replaced).await;
    expect_status(&reply, 200);
    let mut put_new = entry("put-new", 100);
    put_new["date"] = json!(BASE_DATE + 2000);
    put_new["_id"] = json!({ "$oid": object_id });
    let reply = api.put("/api/v3/entries/put-new", &put_new).await;
    expect_status(&reply, 201);
    let mut patched = entry("patched", 100);
    patched["date"] = json!(BASE_DATE + 3000);
    api.create("entries", &patched).await;
    let reply = api
        .patch(
            "/api/v3/entries/patched",
            &json!({ "_id": object_id, "sgv": 140 }),
        )
        .await;
    expect_status(&reply, 200);

    for identifier in ["posted", "replaced", "put-new", "patched"] {
        let document = api.read("entries", identifier).await;
        assert!(
            document.get("_id").is_none(),
            "read {identifier}: {document}"
        );
    }
    assert_eq!(
        api.read("entries", "patched").await["sgv"],
        140,
        "PATCH kept its other field"
    );

    let outputs = [
        ("search JSON", "/api/v3/entries".to_string()),
        (
            "search with fields=_all",
            "/api/v3/entries?fields=_all".to_string(),
        ),
        ("search CSV", "/api/v3/entries.csv".to_string()),
        ("search XML", "/api/v3/entries.xml".to_string()),
        ("read CSV", "/api/v3/entries/posted.csv".to_string()),
        ("read XML", "/api/v3/entries/posted.xml".to_string()),
        (
            "history JSON",
            format!("/api/v3/entries/history/{BASE_DATE}"),
        ),
        (
            "history CSV",
            format!("/api/v3/entries/history/{BASE_DATE}.csv"),
        ),
    ];
    for (name, path) in outputs {
        let reply = api.get(&path).await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.body);
        assert!(
            reply.body.contains("posted"),
            "{name} lists the entries: {}",
            reply.body
        );
        assert!(
            !reply.body.contains("_id"),
            "{name} contains `_id`: {}",
            reply.body
        );
        assert!(
            !reply.body.contains(object_id),
            "{name} contains the client id: {}",
            reply.body
        );
    }
}

#[tokio::test]
async fn body_of_only_id_is_400() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    api.create("entries", &entry("seed", 100)).await;
    let before = all_entries(&api).await;

    for body in [
        json!({ "_id": "x" }),
        json!({ "_id": "5f2b6c1e9d3a4b0012345678" }),
    ] {
        let replies = [
            ("POST", api.post("/api/v3/entries", &body).await),
            ("PUT", api.put("/api/v3/entries/seed", &body).await),
            (
                "inserting PUT",
                api.put("/api/v3/entries/unknown", &body).await,
            ),
            ("PATCH", api.patch("/api/v3/entries/seed", &body).await),
        ];
        for (operation, reply) in replies {
            assert_eq!(reply.status, 400, "{operation} {body}: {}", reply.body);
            expect_error(&reply, 400, "Bad or missing request body");
        }
    }

    assert_eq!(
        all_entries(&api).await,
        before,
        "no `_id`-only body changed the data"
    );
}

#[tokio::test]
async fn security_disabled_admin_api_needs_credential() {
    let server = Nightjar::start_with_env(&[("API3_SECURITY_ENABLE", "false")]);
    let anonymous = Api::anonymous(&server);

    let reply = anonymous.post("/api/v3/entries", &entry("open", 100)).await;
    expect_status(&reply, 201);
    let reply = anonymous.get("/api/v3/entries").await;
    let listed = expect_status(&reply, 200);
    assert_eq!(listed["result"][0]["identifier"], "open");

    let subject = json!({ "name": "intruder", "roles": ["admin"] });
    let role = json!({ "name": "intruders", "permissions": ["*"] });
    let replies = [
        (
            "GET subjects",
            anonymous.get("/api/v2/authorization/subjects").await,
        ),
        (
            "POST subject",
            anonymous
                .post("/api/v2/authorization/subjects", &subject)
                .await,
        ),
        (
            "PUT subject",
            anonymous
                .put("/api/v2/authorization/subjects", &subject)
                .await,
        ),
        (
            "GET roles",
            anonymous.get("/api/v2/authorization/roles").await,
        ),
        (
            "POST role",
            anonymous.post("/api/v2/authorization/roles", &role).await,
        ),
        (
            "PUT role",
            anonymous.put("/api/v2/authorization/roles", &role).await,
        ),
    ];
    for (operation, reply) in replies {
        assert_eq!(
            reply.status, 401,
            "{operation} without credential: {}",
            reply.body
        );
    }

    let reply = anonymous
        .admin_request(Method::GET, "/api/v2/authorization/subjects", None)
        .await;
    assert_eq!(
        reply.status, 200,
        "GET subjects with api-secret: {}",
        reply.body
    );
    assert_eq!(
        reply.json(),
        json!([]),
        "no subject was created without credential"
    );
    let reply = anonymous
        .admin_request(Method::GET, "/api/v2/authorization/roles", None)
        .await;
    assert_eq!(
        reply.status, 200,
        "GET roles with api-secret: {}",
        reply.body
    );
    let roles = reply.json();
    let names: Vec<&Value> = roles
        .as_array()
        .expect("roles array")
        .iter()
        .map(|role| &role["name"])
        .collect();
    assert!(
        !names.contains(&&json!("intruders")),
        "no role was created without credential: {roles}"
    );
}

/// A `nightjar serve` process started by a test with API_SECRET removed from its
/// environment, with its standard output and standard error collected line by line.
struct ServeWithoutSecret {
    /// The child process.
    child: Child,
    /// Lines printed on standard output.
    stdout: Arc<Mutex<Vec<String>>>,
    /// Lines printed on standard error.
    stderr: Arc<Mutex<Vec<String>>>,
}

impl ServeWithoutSecret {
    /// Starts `nightjar serve` on `data_dir` with free loopback ports and no API_SECRET.
    fn start(data_dir: &Path) -> ServeWithoutSecret {
        let mut child = Command::new(binary())
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--hostname",
                "127.0.0.1",
                "--port",
                "0",
                "--grpc-addr",
                "127.0.0.1:0",
            ])
            .env_remove("API_SECRET")
            .env_remove("NIGHTJAR_DATA_DIR")
            .env("AUTH_FAIL_DELAY", "0")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nightjar serve");
        let stdout = collect_lines(child.stdout.take().expect("stdout is piped"));
        let stderr = collect_lines(child.stderr.take().expect("stderr is piped"));
        ServeWithoutSecret {
            child,
            stdout,
            stderr,
        }
    }

    /// Waits until the process exits and returns its status, or `None` after `PROCESS_TIMEOUT`.
    fn wait_for_exit(&mut self) -> Option<ExitStatus> {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait for nightjar serve") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Waits until a line of standard output (`stdout` true) or standard error
    /// contains `needle` and returns it; panics with both outputs after `PROCESS_TIMEOUT`.
    fn wait_for_line(&mut self, stdout: bool, needle: &str) -> String {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        while Instant::now() < deadline {
            let lines = if stdout { &self.stdout } else { &self.stderr };
            let found = lines
                .lock()
                .unwrap()
                .iter()
                .find(|line| line.contains(needle))
                .cloned();
            if let Some(line) = found {
                return line;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "nightjar serve exited with {status} before printing {needle:?}\n{}",
                    self.outputs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "nightjar serve did not print {needle:?} within {PROCESS_TIMEOUT:?}\n{}",
            self.outputs()
        );
    }

    /// Returns the edge's base URL from its listening line.
    fn wait_for_http(&mut self) -> String {
        let line = self.wait_for_line(false, "listening on http://");
        let at = line.find("http://").expect("line contains the URL");
        line[at..]
            .split_whitespace()
            .next()
            .expect("URL")
            .to_string()
    }

    /// Returns both outputs, for failure messages.
    fn outputs(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout.lock().unwrap().join("\n"),
            self.stderr.lock().unwrap().join("\n")
        )
    }
}

impl Drop for ServeWithoutSecret {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `pipe` line by line on a thread into the returned list.
fn collect_lines(pipe: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// Returns the permission bits of `path`.
fn mode(path: &Path) -> u32 {
    let metadata = std::fs::metadata(path)
        .unwrap_or_else(|error| panic!("cannot stat {}: {error}", path.display()));
    metadata.permissions().mode() & 0o777
}

#[test]
fn start_without_secret_on_existing_store_fails() {
    let mut server = Nightjar::start();
    server.stop();
    let data_dir = server.data_dir.clone();
    assert!(
        data_dir.join("nightjar.db").exists(),
        "the first start created nightjar.db"
    );

    let mut process = ServeWithoutSecret::start(&data_dir);
    let status = process.wait_for_exit();

    let outputs = process.outputs();
    let status = status.unwrap_or_else(|| {
        panic!("nightjar serve without API_SECRET kept running on a store made with one\n{outputs}")
    });
    assert!(
        !status.success(),
        "nightjar serve exited with {status}\n{outputs}"
    );
    assert!(
        process
            .stderr
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains("API_SECRET")),
        "the error names API_SECRET\n{outputs}"
    );
    assert!(
        !data_dir.join("api_secret").exists(),
        "nightjar serve created a new api_secret file beside the existing store"
    );
}

#[tokio::test]
async fn first_start_generates_private_secret() {
    let temp = tempfile::tempdir().expect("create temp dir");
    let data_dir = temp.path().join("data");
    let mut process = ServeWithoutSecret::start(&data_dir);
    let http = process.wait_for_http();

    let line = process.wait_for_line(true, "access token");
    let access_token = line
        .split_whitespace()
        .last()
        .expect("token line ends with the token")
        .to_string();

    let outputs = process.outputs();
    assert!(
        !process
            .stderr
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(&access_token)),
        "the access token appears on stderr\n{outputs}"
    );
    let secret_file = data_dir.join("api_secret");
    assert_eq!(
        mode(&secret_file),
        0o600,
        "mode of {}",
        secret_file.display()
    );
    let database_file = data_dir.join("nightjar.db");
    assert_eq!(
        mode(&database_file),
        0o600,
        "mode of {}",
        database_file.display()
    );
    // SQLite gives its WAL and shared-memory files the mode of the database file.
    for companion in ["nightjar.db-wal", "nightjar.db-shm"] {
        let path = data_dir.join(companion);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "mode of {}", path.display());
        }
    }

    let client = reqwest::Client::new();
    let reply = client
        .get(format!(
            "{http}/api/v2/authorization/request/{access_token}"
        ))
        .send()
        .await
        .expect("request JWT");
    assert_eq!(reply.status(), 200, "JWT request for the printed token");
    let jwt: Value = reply.json().await.expect("JWT response is JSON");
    let jwt = jwt["token"]
        .as_str()
        .expect("JWT response has a token")
        .to_string();
    let reply = client
        .get(format!("{http}/api/v3/entries"))
        .bearer_auth(&jwt)
        .send()
        .await
        .expect("search entries");
    assert_eq!(reply.status(), 200, "search with the printed token's JWT");

    // The printed token belongs to a subject of the generated secret.
    let secret = std::fs::read_to_string(&secret_file).expect("read api_secret");
    let secret_hash = hex::encode(Sha1::digest(secret.trim().as_bytes()));
    let reply = client
        .get(format!("{http}/api/v2/authorization/subjects"))
        .header("api-secret", secret_hash)
        .send()
        .await
        .expect("list subjects");
    assert_eq!(
        reply.status(),
        200,
        "list subjects with the generated secret"
    );
    let subjects: Value = reply.json().await.expect("subjects are JSON");
    let tokens: Vec<&Value> = subjects
        .as_array()
        .expect("subjects array")
        .iter()
        .map(|subject| &subject["accessToken"])
        .collect();
    assert_eq!(
        tokens,
        [&json!(access_token)],
        "the one subject is the printed token's"
    );
}

/// Returns `count` identifiers that no document has, with `known` placed first.
fn filter_values(count: usize, known: &[&str]) -> String {
    let mut values: Vec<String> = known.iter().map(|value| value.to_string()).collect();
    values.extend((values.len()..count).map(|index| format!("missing-{index}")));
    values.join("|")
}

#[tokio::test]
async fn too_many_filter_values_are_400() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    for (index, identifier) in ["first", "second", "third"].into_iter().enumerate() {
        let mut document = entry(identifier, 100);
        document["date"] = json!(BASE_DATE + 1000 * index as i64);
        api.create("entries", &document).await;
    }
    let known = ["first", "third"];

    for operator in ["identifier$in", "identifier$nin"] {
        let values = filter_values(300, &known);
        let reply = api
            .get_query("/api/v3/entries", &[(operator, &values)])
            .await;
        let body = expect_status(&reply, 400);
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("Too many filter values"),
            "{operator} with 300 values: {}",
            reply.body
        );
    }

    let values = filter_values(200, &known);
    let found = api.search("entries", &[("identifier$in", &values)]).await;
    let mut identifiers: Vec<&str> = found
        .iter()
        .filter_map(|d| d["identifier"].as_str())
        .collect();
    identifiers.sort();
    assert_eq!(identifiers, ["first", "third"], "in with 200 values");
    let others = api.search("entries", &[("identifier$nin", &values)]).await;
    let identifiers: Vec<&str> = others
        .iter()
        .filter_map(|d| d["identifier"].as_str())
        .collect();
    assert_eq!(identifiers, ["second"], "nin with 200 values");
}

#[tokio::test]
async fn empty_filter_operator_is_400() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    api.create("entries", &entry("seed", 100)).await;

    let reply = api.get("/api/v3/entries?date$=1").await;
    expect_error(&reply, 400, "Unsupported filter operator ");
    let reply = api.get_query("/api/v3/entries", &[("sgv$", "100")]).await;
    expect_error(&reply, 400, "Unsupported filter operator ");
    let reply = api.get("/api/v3/entries.csv?date$=1").await;
    expect_error(&reply, 400, "Unsupported filter operator ");

    let listed = api.search("entries", &[("date$eq", "1")]).await;
    assert!(listed.is_empty(), "date$eq=1 matches nothing: {listed:?}");
}

/// Returns the admin API listing of `kind` (`subjects` or `roles`), read with the `api-secret` header.
async fn admin_list(api: &Api, kind: &str) -> Vec<Value> {
    let reply = api
        .admin_request(Method::GET, &format!("/api/v2/authorization/{kind}"), None)
        .await;
    assert_eq!(reply.status, 200, "GET {kind}: {}", reply.body);
    reply
        .json()
        .as_array()
        .expect("admin listing is an array")
        .clone()
}

/// Returns the item of `items` whose `_id` is `id`.
#[track_caller]
fn find_by_id<'a>(items: &'a [Value], id: &str) -> &'a Value {
    items
        .iter()
        .find(|item| item["_id"] == id)
        .unwrap_or_else(|| panic!("no item with _id {id} in {items:?}"))
}

#[tokio::test]
async fn admin_post_of_existing_subject_is_400() {
    let server = Nightjar::start();
    let api = Api::anonymous(&server);
    let path = "/api/v2/authorization/subjects";
    let original = json!({ "name": "follower", "roles": ["readable"], "notes": "first" });
    let reply = api.admin_request(Method::POST, path, Some(&original)).await;
    assert_eq!(reply.status, 200, "POST subject: {}", reply.body);
    let id = reply.json()["_id"]
        .as_str()
        .expect("subject _id")
        .to_string();
    let before = admin_list(&api, "subjects").await;

    let overwrite = json!({ "_id": id, "name": "follower", "roles": ["admin"], "notes": "second" });
    let reply = api
        .admin_request(Method::POST, path, Some(&overwrite))
        .await;

    assert_eq!(
        reply.status, 400,
        "POST with an existing _id: {}",
        reply.body
    );
    let after = admin_list(&api, "subjects").await;
    assert_eq!(after, before, "the rejected POST changed no subject");

    let reply = api.admin_request(Method::PUT, path, Some(&overwrite)).await;
    assert_eq!(
        reply.status, 200,
        "PUT with the existing _id: {}",
        reply.body
    );
    let updated = admin_list(&api, "subjects").await;
    assert_eq!(updated.len(), before.len(), "PUT added no subject");
    let subject = find_by_id(&updated, &id);
    assert_eq!(subject["roles"], json!(["admin"]));
    assert_eq!(subject["notes"], "second");
    assert_eq!(
        subject["accessToken"],
        find_by_id(&before, &id)["accessToken"],
        "the access token is kept"
    );
}

#[tokio::test]
async fn admin_post_of_existing_role_is_400() {
    let server = Nightjar::start();
    let api = Api::anonymous(&server);
    let path = "/api/v2/authorization/roles";
    let original =
        json!({ "name": "uploader", "permissions": ["api:entries:create"], "notes": "first" });
    let reply = api.admin_request(Method::POST, path, Some(&original)).await;
    assert_eq!(reply.status, 200, "POST role: {}", reply.body);
    let id = reply.json()["_id"].as_str().expect("role _id").to_string();
    let before = admin_list(&api, "roles").await;

    let overwrite =
        json!({ "_id": id, "name": "uploader", "permissions": ["*"], "notes": "second" });
    let reply = api
        .admin_request(Method::POST, path, Some(&overwrite))
        .await;

    assert_eq!(
        reply.status, 400,
        "POST with an existing _id: {}",
        reply.body
    );
    let after = admin_list(&api, "roles").await;
    assert_eq!(after, before, "the rejected POST changed no role");

    let reply = api.admin_request(Method::PUT, path, Some(&overwrite)).await;
    assert_eq!(
        reply.status, 200,
        "PUT with the existing _id: {}",
        reply.body
    );
    let updated = admin_list(&api, "roles").await;
    assert_eq!(updated.len(), before.len(), "PUT added no role");
    let role = find_by_id(&updated, &id);
    assert_eq!(role["permissions"], json!(["*"]));
    assert_eq!(role["notes"], "second");
}

#[tokio::test]
async fn location_is_percent_encoded() {
    let server = Nightjar::start();
    let api = Api::admin(&server).await;
    let identifier = "a b/c?d#e";
    let expected = "/api/v3/entries/a%20b%2Fc%3Fd%23e";

    let reply = api.post("/api/v3/entries", &entry(identifier, 100)).await;
    let body = expect_status(&reply, 201);
    assert_eq!(body["identifier"], identifier);
    assert_eq!(
        reply.header("location").as_deref(),
        Some(expected),
        "Location on insert"
    );

    let reply = api.post("/api/v3/entries", &entry(identifier, 120)).await;
    let body = expect_status(&reply, 200);
    assert_eq!(body["isDeduplication"], true);
    assert_eq!(
        reply.header("location").as_deref(),
        Some(expected),
        "Location on deduplication"
    );

    let reply = api.get(expected).await;
    let body = expect_status(&reply, 200);
    assert_eq!(
        body["result"]["identifier"], identifier,
        "the Location reads the document"
    );
    assert_eq!(body["result"]["sgv"], 120);
}

/// Runs `nightjar args` in `dir` with no data directory or API_SECRET in the
/// environment, and with `NIGHTJAR_CORE_URL` set to `core_url_env` or removed,
/// so that the flags choose the rest.
fn run_cli_in(dir: &Path, core_url_env: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(binary());
    command
        .args(args)
        .current_dir(dir)
        .env_remove("NIGHTJAR_CORE_URL")
        .env_remove("NIGHTJAR_DATA_DIR")
        .env_remove("API_SECRET")
        .env("NO_COLOR", "1");
    if let Some(core_url) = core_url_env {
        command.env("NIGHTJAR_CORE_URL", core_url);
    }
    command.output().expect("run nightjar CLI")
}

/// Asserts that a CLI run succeeded and returns its standard output.
#[track_caller]
fn cli_stdout(args: &[&str], output: &Output) -> String {
    assert!(
        output.status.success(),
        "nightjar {args:?} exited with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("CLI output is UTF-8")
}

/// Writes `API_SECRET` to `dir/api_secret`, as `serve` stores a generated secret,
/// and returns `dir` as text.
fn secret_directory(dir: &Path) -> String {
    std::fs::create_dir_all(dir).expect("create secret directory");
    std::fs::write(dir.join("api_secret"), API_SECRET).expect("write api_secret");
    dir.to_str().expect("UTF-8 path").to_string()
}

/// Asserts that `access_token` can be exchanged for a JWT on `server`.
async fn assert_token_works(server: &Nightjar, access_token: &str) {
    let reply = Api::anonymous(server).request_jwt(access_token).await;
    assert_eq!(
        reply.status, 200,
        "JWT for {access_token:?}: {}",
        reply.body
    );
}

#[tokio::test]
async fn cli_api_secret_after_subcommand() {
    let server = Nightjar::start();
    let workdir = tempfile::tempdir().expect("create temp dir");

    let args = [
        "subject",
        "add",
        "late-secret",
        "--roles",
        "readable",
        "--api-secret",
        API_SECRET,
    ];
    let output = run_cli_in(workdir.path(), Some(&server.grpc), &args);

    let access_token = cli_stdout(&args, &output).trim().to_string();
    assert_token_works(&server, &access_token).await;
}

#[tokio::test]
async fn cli_core_url_after_subcommand() {
    let server = Nightjar::start();
    let workdir = tempfile::tempdir().expect("create temp dir");
    let core = server.grpc.as_str();

    let args = [
        "subject",
        "add",
        "late-url",
        "--roles",
        "readable",
        "--core-url",
        core,
        "--api-secret",
        API_SECRET,
    ];
    let output = run_cli_in(workdir.path(), None, &args);
    let access_token = cli_stdout(&args, &output).trim().to_string();
    assert_token_works(&server, &access_token).await;

    let args = [
        "role",
        "add",
        "late-role",
        "--permissions",
        "api:entries:read",
        "--core-url",
        core,
        "--api-secret",
        API_SECRET,
    ];
    let output = run_cli_in(workdir.path(), None, &args);
    cli_stdout(&args, &output);
    let args = [
        "role",
        "list",
        "--api-secret",
        API_SECRET,
        "--core-url",
        core,
    ];
    let output = run_cli_in(workdir.path(), None, &args);
    let listing = cli_stdout(&args, &output);
    assert!(listing.contains("late-role"), "role list: {listing}");
}

#[tokio::test]
async fn cli_data_dir_after_subcommand() {
    let server = Nightjar::start();
    let workdir = tempfile::tempdir().expect("create temp dir");
    let secret_dir = secret_directory(&workdir.path().join("secret"));
    let core = Some(server.grpc.as_str());

    let args = [
        "subject",
        "add",
        "late-dir",
        "--data-dir",
        &secret_dir,
        "--roles",
        "readable",
    ];
    let output = run_cli_in(workdir.path(), core, &args);
    let access_token = cli_stdout(&args, &output).trim().to_string();
    assert_token_works(&server, &access_token).await;

    let args = ["subject", "list", "--data-dir", &secret_dir];
    let output = run_cli_in(workdir.path(), core, &args);
    let listing = cli_stdout(&args, &output);
    assert!(listing.contains("\tlate-dir\t"), "subject list: {listing}");
}

#[tokio::test]
async fn cli_drops_empty_role_names() {
    let server = Nightjar::start();
    let api = Api::anonymous(&server);

    server.cli(&["subject", "add", "sparse", "--roles", ",,readable,,"]);
    server.cli(&[
        "role",
        "add",
        "sparse-role",
        "--permissions",
        ",api:entries:read,,",
    ]);

    let subjects = admin_list(&api, "subjects").await;
    let subject = subjects
        .iter()
        .find(|subject| subject["name"] == "sparse")
        .unwrap_or_else(|| panic!("no subject `sparse` in {subjects:?}"));
    assert_eq!(subject["roles"], json!(["readable"]));
    let roles = admin_list(&api, "roles").await;
    let role = roles
        .iter()
        .find(|role| role["name"] == "sparse-role")
        .unwrap_or_else(|| panic!("no role `sparse-role` in {roles:?}"));
    assert_eq!(role["permissions"], json!(["api:entries:read"]));
    let listing = server.cli(&["subject", "list"]);
    let line = listing
        .lines()
        .find(|line| line.contains("\tsparse\t"))
        .unwrap_or_else(|| panic!("no `sparse` line in subject list: {listing}"));
    let columns: Vec<&str> = line.split('\t').collect();
    assert_eq!(
        columns.get(2),
        Some(&"readable"),
        "roles column of {line:?}"
    );
}

#[tokio::test]
async fn unfinished_headers_are_cut_off() {
    let server = Nightjar::start_with_env(&[("NIGHTJAR_HEADER_READ_TIMEOUT", "2")]);
    let address = server.http_address();

    let (elapsed, received) = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(&address).expect("connect to the edge");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("set read timeout");
        // The blank line that ends the headers never comes.
        stream
            .write_all(b"GET /api/v3/version HTTP/1.1\r\nHost: nightjar\r\n")
            .expect("send partial request");
        let started = Instant::now();
        let mut received = Vec::new();
        let _ = stream.read_to_end(&mut received);
        (started.elapsed(), received)
    })
    .await
    .expect("raw connection task");

    assert!(
        elapsed < Duration::from_secs(10),
        "the connection stayed open {elapsed:?} with unfinished headers"
    );
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "unexpected reply to unfinished headers: {text}"
    );
    let api = Api::admin(&server).await;
    assert_server_up(&api).await;
}
