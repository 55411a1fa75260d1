//! End-to-end test of the gRPC core with a client in another language: the
//! Python script `tests/python/watch_changes.py`, using grpcio and stubs it
//! generates from `proto/` when it starts.
//!
//! Needs the packages of `tests/python/requirements.txt`; `bash tests/run.sh`
//! installs them and then runs the tests.

mod client_scripts;
mod common;

use client_scripts::{repo_root, require_python_grpc, run_script};
use common::Nightjar;

#[test]
fn python_client_watches_created_entry() {
    require_python_grpc();
    let server = Nightjar::start();
    let token = server.subject("e2e-python", &["admin"]);

    let run = run_script(
        "python3",
        &["tests/python/watch_changes.py"],
        repo_root(),
        &[
            ("NIGHTJAR_GRPC_URL", &server.grpc),
            ("NIGHTJAR_ACCESS_TOKEN", &token),
        ],
    );

    let log = server.log.lock().unwrap().clone();
    run.assert_success(&log);
}
