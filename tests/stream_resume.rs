//! Resuming the Socket.IO storage channel from a cursor, with socket.io-client
//! 4.x and 2.2.0. The script `tests/js/stream_resume.mjs` writes while no socket
//! listens and then resumes from the last cursor it received. It checks that
//! exactly the missed events arrive in commit order, followed by the live ones.
//!
//! Needs `npm ci` in `tests/js`; `bash tests/run.sh` does it and then runs the tests.

mod client_scripts;
mod common;

use client_scripts::{js_dir, require_node_modules, run_script};
use common::Nightjar;

fn check_resume(client: &str) {
    let dir = js_dir();
    require_node_modules(&dir);
    let server = Nightjar::start();
    let admin = server.subject("resume-admin", &["admin"]);

    let run = run_script(
        "node",
        &["stream_resume.mjs"],
        &dir,
        &[
            ("NIGHTJAR_URL", &server.http),
            ("SOCKET_IO_CLIENT", client),
            ("ADMIN_TOKEN", &admin),
        ],
    );

    let log = server.log.lock().unwrap().clone();
    run.assert_success(&log);
}

#[test]
fn resume_from_cursor_client_4() {
    check_resume("4");
}

#[test]
fn resume_from_cursor_client_2() {
    check_resume("2");
}
