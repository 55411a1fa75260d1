//! Apache Shiro wildcard permissions, evaluated exactly as the reference
//! evaluates them.
//!
//! Nightscout 15.x checks permissions with the npm package `shiro-trie`
//! (version 0.4.10 in its lock file). A permission is a list of parts
//! separated by `:`, and each part is a comma-separated list of alternatives,
//! where the alternative `*` matches anything. The package differs from Java
//! Shiro in a few edge cases, and this module reproduces the package:
//!
//! - A granted permission covers every required permission that matches its
//!   parts up to the shorter of the two lengths, so `api:entries` grants
//!   `api:entries:read`. One trailing `*` part of a granted permission is
//!   dropped before matching, so `a:*` and `a` grant the same.
//! - A required permission gets an implicit `*` part appended unless its last
//!   part already is `*`, and a `*` in a required permission matches only a
//!   `*` in the granted one. So `api:*:read` does not grant the required `api`
//!   under Java Shiro, but it does here, and `*:*:read` grants the required `*`.
//! - A required permission with comma lists is expanded into every
//!   combination of its alternatives, and all of them must be granted.
//! - Any text is a permission: the empty string is a permission with one
//!   empty part, and `*` inside a comma list (`api:*,entries`) is a wildcard.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

/// Separator between the parts of a permission.
const PART_SEPARATOR: char = ':';

/// Separator between the alternatives of one part.
const ALTERNATIVE_SEPARATOR: char = ',';

/// Wildcard alternative, which matches any value in its position.
const WILDCARD: &str = "*";

/// Maximum number of combinations a required permission with comma lists may
/// expand into. A required permission beyond it is reported as not granted,
/// so a crafted permission string cannot make a check take unbounded time.
const MAX_EXPANSIONS: usize = 1024;

/// Shiro wildcard permission such as `api:entries:read` or `*:*:read`.
///
/// Built with [`Permission::parse`], which accepts any text as `shiro-trie`
/// does. The same value can be a granted permission (the receiver of
/// [`Permission::implies`]) or a required one (its argument).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Permission {
    /// Original text, kept for display.
    text: String,
    /// Parts in order, each a non-empty list of alternatives.
    parts: Vec<Vec<String>>,
}

impl Permission {
    /// Parses a permission string. Every string is valid, because the
    /// reference accepts any text as a permission.
    pub fn parse(text: &str) -> Self {
        let parts = text
            .split(PART_SEPARATOR)
            .map(|part| {
                part.split(ALTERNATIVE_SEPARATOR)
                    .map(str::to_owned)
                    .collect()
            })
            .collect();

        Self {
            text: text.to_owned(),
            parts,
        }
    }

    /// Returns the permission as it was written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Checks whether this granted permission covers `required`.
    ///
    /// Returns `false` when `required` expands into more than 1024
    /// combinations of its comma lists.
    pub fn implies(&self, required: &Permission) -> bool {
        let Some(paths) = required.required_paths() else {
            return false;
        };

        paths.iter().all(|path| self.grants_path(path))
    }

    /// Parts of this permission as a granted one: one trailing part that is
    /// exactly `*` is dropped, as `shiro-trie` does when it adds a permission.
    fn granted_parts(&self) -> &[Vec<String>] {
        match self.parts.split_last() {
            Some((last, rest)) if last.len() == 1 && last[0] == WILDCARD => rest,
            _ => &self.parts,
        }
    }

    /// Expands this permission as a required one into comma-free paths,
    /// each ending in `*`. Returns `None` when there are more than
    /// [`MAX_EXPANSIONS`] of them.
    fn required_paths(&self) -> Option<Vec<Vec<&str>>> {
        let count = self
            .parts
            .iter()
            .try_fold(1usize, |count, part| count.checked_mul(part.len()))?;
        if count > MAX_EXPANSIONS {
            return None;
        }

        // 1. Build the cartesian product of the alternatives, part by part.
        let mut paths: Vec<Vec<&str>> = vec![Vec::with_capacity(self.parts.len() + 1)];
        for part in &self.parts {
            paths = paths
                .iter()
                .flat_map(|prefix| {
                    part.iter().map(move |alternative| {
                        let mut path = prefix.clone();
                        path.push(alternative.as_str());
                        path
                    })
                })
                .collect();
        }

        // 2. Append the implicit trailing wildcard.
        for path in &mut paths {
            if path.last() != Some(&WILDCARD) {
                path.push(WILDCARD);
            }
        }

        Some(paths)
    }

    /// Checks one comma-free required path against this granted permission.
    ///
    /// `shiro-trie` walks its trie through the child `*` and the child named
    /// like the required part, and succeeds when it reaches the end of the
    /// granted permission or of the required path. For one granted
    /// permission this means every position both have must match.
    fn grants_path(&self, path: &[&str]) -> bool {
        self.granted_parts()
            .iter()
            .zip(path)
            .all(|(alternatives, required)| {
                alternatives
                    .iter()
                    .any(|alternative| alternative == WILDCARD || alternative == required)
            })
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.text)
    }
}

impl FromStr for Permission {
    type Err = Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self::parse(text))
    }
}

/// Checks whether the granted permissions together cover `required`.
///
/// This is the check of one `shiro-trie` trie holding all of `granted`:
/// each combination of the comma lists in `required` must be covered by at
/// least one granted permission, not necessarily the same one.
pub fn permits(granted: &[String], required: &str) -> bool {
    let granted: Vec<Permission> = granted.iter().map(|text| Permission::parse(text)).collect();
    let required = Permission::parse(required);
    let Some(paths) = required.required_paths() else {
        return false;
    };

    paths.iter().all(|path| {
        granted
            .iter()
            .any(|permission| permission.grants_path(path))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| item.to_string()).collect()
    }

    fn implies(granted: &str, required: &str) -> bool {
        Permission::parse(granted).implies(&Permission::parse(required))
    }

    #[test]
    fn exact_permission_matches() {
        assert!(implies("api:entries:read", "api:entries:read"));
        assert!(!implies("api:entries:read", "api:entries:create"));
        assert!(!implies("api:entries:read", "api:treatments:read"));
    }

    #[test]
    fn shorter_grant_implies_longer_requirement() {
        assert!(implies("api:entries", "api:entries:read"));
        assert!(implies("api", "api:entries:read"));
        assert!(implies("api:entries:read", "api:entries:read:extra"));
        assert!(!implies("api:entries:read", "api:entries"));
    }

    #[test]
    fn star_grants_everything() {
        assert!(implies("*", "api:entries:read"));
        assert!(implies("*", "admin:api:subjects:read"));
        assert!(implies("*", "anything"));
        assert!(implies("*", ""));
        assert!(implies("*:*", "l1:l2:l3:l4:l5"));
    }

    #[test]
    fn readable_role_grants_reads_only() {
        assert!(implies("*:*:read", "api:entries:read"));
        assert!(implies("*:*:read", "api:status:read"));
        assert!(!implies("*:*:read", "api:entries:create"));
        assert!(!implies("*:*:read", "api:settings:admin"));
        // Four parts: the third part `subjects` is not `read`.
        assert!(!implies("*:*:read", "admin:api:subjects:read"));
    }

    #[test]
    fn trailing_star_grant_is_dropped() {
        assert!(implies("a:*", "a:b"));
        assert!(implies("a:*", "a"));
        assert!(implies("a:*", "a:*:c"));
        assert!(!implies("a:*", "*"));
        assert!(!implies("a:*", "b:*"));
    }

    #[test]
    fn required_star_matches_only_granted_star() {
        assert!(!implies("api:entries:read", "api:*:read"));
        assert!(implies("api:*:read", "api:*:read"));
        assert!(!implies("acc:perm:x:y:z", "acc:perm:x:*:z"));
    }

    #[test]
    fn shorter_requirement_quirks() {
        // `shiro-trie` accepts these, Java Shiro does not.
        assert!(implies("*:*:read", "*"));
        assert!(implies("*:*:read", "api"));
        assert!(implies("api:*:read", "api"));
        // A granted literal part still has to match.
        assert!(!implies("api:entries:read", "api"));
        assert!(!implies("l1:*:l3", "l1:l2"));
        assert!(!implies("l1:l2", "l1"));
    }

    #[test]
    fn granted_comma_list_matches_any_alternative() {
        assert!(implies("api:entries,treatments:read", "api:entries:read"));
        assert!(implies(
            "api:entries,treatments:read",
            "api:treatments:read"
        ));
        assert!(!implies("api:entries,treatments:read", "api:food:read"));
        assert!(!implies("l1:a,b,c:d,e,f", "l1:a:l3"));
        assert!(implies("l1:a,b,c:d,e,f", "l1:a:f"));
    }

    #[test]
    fn star_inside_comma_list_is_wildcard() {
        assert!(implies("api:*,entries:read", "api:food:read"));
        assert!(implies("a:b,c,*", "a:b:d:z"));
        // `*,*` is not exactly `*`, so it is not dropped as a trailing part.
        assert!(implies("a:*,*", "a:b"));
    }

    #[test]
    fn required_comma_list_needs_every_alternative() {
        assert!(implies("acc:perm:*", "acc:perm:x:y:z,1,2"));
        assert!(!implies("acc:perm:x:y:z", "acc:perm:x:y:z,1,2"));
        assert!(implies("acc:perm", "acc:perm:x,a:*:z,1,2"));
        assert!(!implies(
            "newsletter:view,create,edit,delete",
            "newsletter:view,create,any,edit,delete"
        ));
    }

    #[test]
    fn empty_string_edge_cases() {
        // An empty permission has one empty part.
        assert!(implies("", ""));
        assert!(implies("", ":anything"));
        assert!(!implies("", "api:entries:read"));
        assert!(!implies("api:entries:read", ""));
        // Empty parts are ordinary values.
        assert!(implies("api::read", "api::read"));
        assert!(!implies("api::read", "api:entries:read"));
    }

    #[test]
    fn parts_are_case_sensitive() {
        assert!(!implies("api:Entries:read", "api:entries:read"));
    }

    #[test]
    fn permits_combines_granted_permissions() {
        let granted = strings(&["api:entries:read", "api:treatments:read"]);
        assert!(permits(&granted, "api:entries:read"));
        assert!(permits(&granted, "api:treatments:read"));
        assert!(!permits(&granted, "api:devicestatus:read"));
        // Each alternative may be granted by a different permission.
        assert!(permits(&granted, "api:entries,treatments:read"));
        assert!(!permits(&granted, "api:entries,food:read"));
    }

    #[test]
    fn permits_with_nothing_granted() {
        assert!(!permits(&[], "api:entries:read"));
        assert!(!permits(&[], ""));
        assert!(!permits(&[], "*"));
    }

    #[test]
    fn permits_rejects_huge_expansion() {
        let part = ["x"; 11].join(",");
        let required = [part.as_str(); 3].join(":");
        assert!(!permits(&strings(&["*"]), &required));
        assert!(!Permission::parse("*").implies(&Permission::parse(&required)));
    }

    #[test]
    fn display_keeps_original_text() {
        let permission: Permission = "api:entries,treatments:read".parse().unwrap();
        assert_eq!(permission.to_string(), "api:entries,treatments:read");
        assert_eq!(permission.as_str(), "api:entries,treatments:read");
    }
}
