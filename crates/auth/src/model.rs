//! Subjects and roles as the reference stores them, the built-in roles and
//! MongoDB ObjectId-style identifiers.
//!
//! The serde field names are those of the reference's `auth_subjects` and
//! `auth_roles` documents and of its `/api/v2/authorization/` JSON.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use serde::{Deserialize, Serialize};

/// Identity that is granted roles and owns an access token, such as an
/// uploader phone or a follower's web page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// Identifier as 24 lower-case hex digits; the access token is derived
    /// from this exact text.
    #[serde(rename = "_id")]
    pub id: String,
    /// Display name; its first letters prefix the access token.
    #[serde(default)]
    pub name: String,
    /// Names of the roles granted to the subject.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Free text from the administrator.
    #[serde(default)]
    pub notes: String,
    /// Creation time as an ISO 8601 string.
    #[serde(default)]
    pub created_at: String,
}

/// Named set of permissions that subjects are granted through.
///
/// Built-in roles have no `_id`, `notes` or `created_at` in the reference's
/// JSON, so empty values of those fields are left out when serializing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Identifier as 24 lower-case hex digits, empty for a built-in role.
    #[serde(rename = "_id", default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Name that subjects refer to in their `roles`.
    #[serde(default)]
    pub name: String,
    /// Shiro wildcard permissions granted by the role.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Free text from the administrator.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
    /// Creation time as an ISO 8601 string, empty for a built-in role.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub created_at: String,
}

/// Returns the roles the reference provides when the database has no role of
/// the same name: `admin`, `denied`, `status-only`, `readable`, `careportal`,
/// `devicestatus-upload` and `activity`.
pub fn builtin_roles() -> Vec<Role> {
    let builtin = |name: &str, permissions: &[&str]| Role {
        id: String::new(),
        name: name.to_owned(),
        permissions: permissions
            .iter()
            .map(|&permission| permission.to_owned())
            .collect(),
        notes: String::new(),
        created_at: String::new(),
    };

    vec![
        builtin("admin", &["*"]),
        builtin("denied", &[]),
        builtin("status-only", &["api:status:read"]),
        builtin("readable", &["*:*:read"]),
        builtin("careportal", &["api:treatments:create"]),
        builtin("devicestatus-upload", &["api:devicestatus:create"]),
        builtin("activity", &["api:activity:create"]),
    ]
}

/// Creates an identifier in MongoDB ObjectId form: 24 lower-case hex digits
/// encoding 4 bytes of Unix seconds, 5 random bytes chosen once per process
/// and a 3-byte counter that starts at a random value.
///
/// Identifiers created by one process in the same second differ by their
/// counter, and the counter wraps after 2^24 identifiers.
pub fn new_object_id() -> String {
    static PROCESS_BYTES: OnceLock<[u8; 5]> = OnceLock::new();
    static COUNTER: OnceLock<AtomicU32> = OnceLock::new();

    let process_bytes = PROCESS_BYTES.get_or_init(rand::random);
    let counter = COUNTER
        .get_or_init(|| AtomicU32::new(rand::random::<u32>()))
        .fetch_add(1, Ordering::Relaxed);

    // ObjectId stores the time as a 32-bit unsigned number of seconds, which
    // wraps in 2106; the truncating cast wraps the same way.
    let seconds = chrono::Utc::now().timestamp() as u32;

    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&seconds.to_be_bytes());
    bytes[4..9].copy_from_slice(process_bytes);
    bytes[9..].copy_from_slice(&counter.to_be_bytes()[1..]);
    hex::encode(bytes)
}

/// Checks whether `text` is 24 hex digits, the text form of a MongoDB
/// ObjectId. Upper-case digits are accepted, as the MongoDB driver accepts them.
pub fn is_object_id(text: &str) -> bool {
    text.len() == 24 && text.bytes().all(|byte| byte.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use serde_json::json;

    use super::*;

    #[test]
    fn builtin_roles_match_reference() {
        let roles = builtin_roles();
        let pairs: Vec<(&str, Vec<&str>)> = roles
            .iter()
            .map(|role| {
                let permissions = role.permissions.iter().map(String::as_str).collect();
                (role.name.as_str(), permissions)
            })
            .collect();

        assert_eq!(
            pairs,
            vec![
                ("admin", vec!["*"]),
                ("denied", vec![]),
                ("status-only", vec!["api:status:read"]),
                ("readable", vec!["*:*:read"]),
                ("careportal", vec!["api:treatments:create"]),
                ("devicestatus-upload", vec!["api:devicestatus:create"]),
                ("activity", vec!["api:activity:create"]),
            ]
        );
    }

    #[test]
    fn builtin_role_serializes_without_id() {
        let readable = builtin_roles()
            .into_iter()
            .find(|role| role.name == "readable")
            .unwrap();
        assert_eq!(
            serde_json::to_value(&readable).unwrap(),
            json!({"name": "readable", "permissions": ["*:*:read"]})
        );
    }

    #[test]
    fn subject_uses_reference_field_names() {
        let subject = Subject {
            id: "5e3b2a1c9d8f7e6a5b4c3d2e".into(),
            name: "Phone".into(),
            roles: vec!["careportal".into()],
            notes: "AAPS".into(),
            created_at: "2024-01-02T03:04:05.678Z".into(),
        };
        let value = serde_json::to_value(&subject).unwrap();
        assert_eq!(
            value,
            json!({
                "_id": "5e3b2a1c9d8f7e6a5b4c3d2e",
                "name": "Phone",
                "roles": ["careportal"],
                "notes": "AAPS",
                "created_at": "2024-01-02T03:04:05.678Z"
            })
        );
        assert_eq!(serde_json::from_value::<Subject>(value).unwrap(), subject);
    }

    #[test]
    fn subject_missing_fields_default() {
        let subject: Subject =
            serde_json::from_value(json!({"_id": "5e3b2a1c9d8f7e6a5b4c3d2e"})).unwrap();
        assert_eq!(subject.name, "");
        assert!(subject.roles.is_empty());
        assert_eq!(subject.notes, "");
        assert_eq!(subject.created_at, "");
    }

    #[test]
    fn role_round_trips() {
        let value = json!({
            "_id": "60d5ecb8b5c9a72f3c8e4b1a",
            "name": "uploader",
            "permissions": ["api:entries:create", "api:treatments:*"],
            "notes": "phones",
            "created_at": "2024-01-02T03:04:05.678Z"
        });
        let role: Role = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(role.id, "60d5ecb8b5c9a72f3c8e4b1a");
        assert_eq!(
            role.permissions,
            vec!["api:entries:create", "api:treatments:*"]
        );
        assert_eq!(serde_json::to_value(&role).unwrap(), value);
    }

    #[test]
    fn object_id_has_mongodb_form() {
        let before = chrono::Utc::now().timestamp();
        let id = new_object_id();
        let after = chrono::Utc::now().timestamp();

        assert_eq!(id.len(), 24);
        assert!(
            id.bytes()
                .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')),
            "{id}"
        );
        let seconds = i64::from(u32::from_str_radix(&id[..8], 16).unwrap());
        assert!(
            (before..=after).contains(&seconds),
            "{seconds} not in {before}..={after}"
        );
    }

    #[test]
    fn object_ids_are_unique() {
        let ids: HashSet<String> = (0..10_000).map(|_| new_object_id()).collect();
        assert_eq!(ids.len(), 10_000);
    }

    #[test]
    fn object_ids_share_process_bytes() {
        let first = new_object_id();
        let second = new_object_id();
        assert_eq!(first[8..18], second[8..18]);
    }

    #[test]
    fn is_object_id_checks_form() {
        assert!(is_object_id("5e3b2a1c9d8f7e6a5b4c3d2e"));
        assert!(is_object_id("5E3B2A1C9D8F7E6A5B4C3D2E"));
        assert!(!is_object_id("5e3b2a1c9d8f7e6a5b4c3d2"));
        assert!(!is_object_id("5e3b2a1c9d8f7e6a5b4c3d2eb"));
        assert!(!is_object_id("5e3b2a1c9d8f7e6a5b4c3d2g"));
        assert!(!is_object_id(""));
    }
}
