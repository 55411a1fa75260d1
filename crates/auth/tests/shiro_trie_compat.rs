//! Compares [`nightjar_auth::permits`] with the results of the npm package
//! `shiro-trie` 0.4.10, the permission engine of Nightscout 15.x.
//!
//! `fixtures/shiro_trie_cases.json` was written by
//! `fixtures/generate_shiro_trie_cases.js`, which runs the package itself.

use nightjar_auth::permits;
use serde::Deserialize;

/// One permission check and the package's result.
#[derive(Deserialize)]
struct Case {
    /// Permissions added to one trie.
    granted: Vec<String>,
    /// Permission passed to the trie's `check`.
    required: String,
    /// Result of `check`.
    expected: bool,
}

#[test]
fn permits_matches_shiro_trie() {
    let cases: Vec<Case> =
        serde_json::from_str(include_str!("fixtures/shiro_trie_cases.json")).unwrap();
    assert!(cases.len() > 600, "fixture has only {} cases", cases.len());

    let mismatches: Vec<String> = cases
        .iter()
        .filter(|case| permits(&case.granted, &case.required) != case.expected)
        .map(|case| {
            format!(
                "granted {:?}, required {:?}: shiro-trie returns {}",
                case.granted, case.required, case.expected
            )
        })
        .collect();

    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
