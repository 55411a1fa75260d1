//! gRPC health checking and server reflection on core, checked with the
//! standard Python clients of `grpcio-health-checking` and `grpcio-reflection`
//! (the script `tests/python/health_reflection.py`), which load no proto
//! file of Nightjar.
//!
//! Needs the packages of `tests/python/requirements.txt`; `bash tests/run.sh`
//! installs them and then runs the tests.

mod client_scripts;
mod common;

use std::process::Command;

use client_scripts::{INSTALL_COMMAND, repo_root, require_python_grpc, run_script};
use common::Nightjar;

/// Panics with the install command when the health and reflection clients cannot be imported.
fn require_python_health_reflection() {
    require_python_grpc();
    let output = Command::new("python3")
        .args([
            "-c",
            "import grpc_health.v1.health_pb2, grpc_reflection.v1alpha.reflection_pb2",
        ])
        .output()
        .expect("start python3");
    assert!(
        output.status.success(),
        "python3 cannot import grpc_health and grpc_reflection: run `{INSTALL_COMMAND}` from the repository root, \
         which installs tests/python/requirements.txt; python3 printed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn health_and_reflection_answer_standard_clients() {
    require_python_health_reflection();
    let server = Nightjar::start();

    let run = run_script(
        "python3",
        &["tests/python/health_reflection.py"],
        repo_root(),
        &[("NIGHTJAR_GRPC_URL", &server.grpc)],
    );

    let log = server.log.lock().unwrap().clone();
    run.assert_success(&log);
    for check in [
        "ok - Health/Check returns SERVING",
        "ok - reflection lists Storage, Admin and Health",
        "ok - reflection resolves nightjar.storage.v1.Storage",
    ] {
        assert!(
            run.stdout.contains(check),
            "health_reflection.py did not print {check:?}; stdout:\n{}",
            run.stdout
        );
    }
}
