//! End-to-end test of `examples/storage-sample.html` in headless Chromium,
//! driven by `tests/js/sample_page.mjs` with playwright-core: the page, opened
//! from a file:// URL, subscribes with socket.io-client 2.2.0 and shows an entry
//! created through REST.
//!
//! Needs Debian's chromium at /usr/bin/chromium and `npm ci` in `tests/js` and
//! `examples`; `bash tests/run.sh` installs all three and then runs the tests.

mod client_scripts;
mod common;

use std::path::Path;

use client_scripts::{INSTALL_COMMAND, js_dir, repo_root, require_node_modules, run_script};
use common::Nightjar;

const CHROMIUM: &str = "/usr/bin/chromium";

#[test]
fn sample_page_shows_created_entry() {
    require_node_modules(&js_dir());
    require_node_modules(&repo_root().join("examples"));
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run `{INSTALL_COMMAND}` from the repository root, which installs Debian's chromium"
    );

    let server = Nightjar::start();
    let token = server.subject("e2e-page", &["admin"]);

    // Kept after the test, for looking at what the page showed.
    let screenshot = std::env::temp_dir().join("nightjar-sample-page.png");
    let screenshot = screenshot.to_string_lossy();
    let run = run_script(
        "node",
        &["sample_page.mjs"],
        &js_dir(),
        &[
            ("NIGHTJAR_URL", &server.http),
            ("ADMIN_TOKEN", &token),
            ("SCREENSHOT_PATH", &screenshot),
            ("CHROMIUM_PATH", CHROMIUM),
        ],
    );

    let log = server.log.lock().unwrap().clone();
    run.assert_success(&log);
}
