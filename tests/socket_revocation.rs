//! Revoking a subject or a role's permission ends the matching Socket.IO
//! subscriptions within a second, checked with the real JavaScript clients.

mod client_scripts;
mod common;

use client_scripts::{js_dir, require_node_modules, run_script};
use common::Nightjar;
use sha1::{Digest, Sha1};

fn check_revocation(client: &str) {
    // Rechecks after a revocation are not login attempts: with the delay on, they
    // must still reach every socket of one address at once.
    let server = Nightjar::start_with_env(&[
        ("AUTH_DEFAULT_ROLES", "denied"),
        ("AUTH_FAIL_DELAY", "3000"),
    ]);
    server.role(
        "two-collections",
        &["api:entries:read", "api:treatments:read"],
    );
    let admin = server.subject("revocation-admin", &["admin"]);
    let victim = server.subject("revocation-victim", &["readable"]);
    let partial = server.subject("revocation-partial", &["two-collections"]);
    let secret_hash = hex::encode(Sha1::digest(common::API_SECRET.as_bytes()));

    let dir = js_dir();
    require_node_modules(&dir);
    let env = [
        ("NIGHTJAR_URL", server.http.as_str()),
        ("SOCKET_IO_CLIENT", client),
        ("ADMIN_TOKEN", admin.as_str()),
        ("API_SECRET_HASH", secret_hash.as_str()),
        ("VICTIM_TOKEN", victim.as_str()),
        ("PARTIAL_TOKEN", partial.as_str()),
    ];
    let run = run_script("node", &["revocation.mjs"], &dir, &env);
    let log = server.log.lock().unwrap().clone();
    run.assert_success(&log);
}

#[test]
fn revocation_client_4() {
    check_revocation("4");
}

#[test]
fn revocation_client_2() {
    check_revocation("2");
}
