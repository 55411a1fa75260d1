//! End-to-end tests of the Socket.IO `/storage` namespace with the real
//! JavaScript clients: socket.io-client 4.x and 2.2.0 (Engine.IO v3), run by the
//! Node scripts in `tests/js` against a started `nightjar serve`.
//!
//! Needs `npm ci` in `tests/js`; `bash tests/run.sh` does it and then runs the tests.

mod client_scripts;
mod common;

use client_scripts::{js_dir, require_node_modules, run_script};
use common::{API_SECRET, Nightjar};

/// Access tokens of the subjects that the scripts use.
struct Subjects {
    admin: String,
    denied: String,
    readable: String,
    treatments_reader: String,
    settings_admin: String,
}

/// Starts a server where subjects hold only their own roles' permissions.
fn start_without_default_roles() -> Nightjar {
    Nightjar::start_with_env(&[("AUTH_DEFAULT_ROLES", "denied")])
}

/// Creates one subject per permission profile that the scripts test.
fn create_subjects(server: &Nightjar) -> Subjects {
    server.role("treatments-reader", &["api:treatments:read"]);
    server.role("settings-admin", &["api:settings:admin"]);
    Subjects {
        admin: server.subject("e2e-admin", &["admin"]),
        denied: server.subject("e2e-denied", &["denied"]),
        readable: server.subject("e2e-readable", &["readable"]),
        treatments_reader: server.subject("e2e-treatments", &["treatments-reader"]),
        settings_admin: server.subject("e2e-settings", &["settings-admin"]),
    }
}

/// Runs `script` from `tests/js` with client generation `client` ("4" or "2") and asserts it passes.
fn run_node(server: &Nightjar, script: &str, client: &str, env: &[(&str, &str)]) {
    let dir = js_dir();
    require_node_modules(&dir);

    let mut env = env.to_vec();
    env.push(("NIGHTJAR_URL", &server.http));
    env.push(("SOCKET_IO_CLIENT", client));
    let run = run_script("node", &[script], &dir, &env);

    let log = server.log.lock().unwrap().clone();
    run.assert_success(&log);
}

fn check_subscribe_acks(client: &str) {
    let server = start_without_default_roles();
    let subjects = create_subjects(&server);
    run_node(
        &server,
        "subscribe_acks.mjs",
        client,
        &[
            ("ADMIN_TOKEN", &subjects.admin),
            ("DENIED_TOKEN", &subjects.denied),
            ("READABLE_TOKEN", &subjects.readable),
            ("TREATMENTS_READER_TOKEN", &subjects.treatments_reader),
            ("SETTINGS_ADMIN_TOKEN", &subjects.settings_admin),
            ("API_SECRET", API_SECRET),
        ],
    );
}

fn check_default_roles(client: &str) {
    // AUTH_DEFAULT_ROLES is left at its default, readable.
    let server = Nightjar::start();
    let denied = server.subject("e2e-denied", &["denied"]);
    run_node(
        &server,
        "subscribe_default_roles.mjs",
        client,
        &[("DENIED_TOKEN", &denied)],
    );
}

fn check_storage_events(client: &str) {
    let server = start_without_default_roles();
    let subjects = create_subjects(&server);
    run_node(
        &server,
        "storage_events.mjs",
        client,
        &[
            ("ADMIN_TOKEN", &subjects.admin),
            ("TREATMENTS_READER_TOKEN", &subjects.treatments_reader),
        ],
    );
}

#[test]
fn subscribe_acks_client_4() {
    check_subscribe_acks("4");
}

#[test]
fn subscribe_acks_client_2() {
    check_subscribe_acks("2");
}

#[test]
fn subscribe_default_roles_client_4() {
    check_default_roles("4");
}

#[test]
fn subscribe_default_roles_client_2() {
    check_default_roles("2");
}

#[test]
fn storage_events_client_4() {
    check_storage_events("4");
}

#[test]
fn storage_events_client_2() {
    check_storage_events("2");
}
