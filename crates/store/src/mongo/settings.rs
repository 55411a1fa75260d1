//! Connection settings of the MongoDB store and the Nightscout environment variables
//! they are read from, so an existing Nightscout deployment's variables select the
//! same database and collections.

use std::fmt;

/// Connection string and collection names of the MongoDB store.
#[derive(Clone)]
pub struct MongoSettings {
    /// The connection string; contains the password, so it is never logged (see
    /// [`MongoSettings::redacted_uri`]).
    pub uri: String,
    /// Name of the environment variable the URI came from, for the startup log.
    pub uri_variable: String,
    /// Database collection of each API collection.
    pub collections: CollectionNames,
    /// Prefix of the authorization collections: `<prefix>subjects`, `<prefix>roles`.
    pub auth_prefix: String,
}

impl fmt::Debug for MongoSettings {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("MongoSettings")
            .field("uri", &self.redacted_uri())
            .field("uri_variable", &self.uri_variable)
            .field("collections", &self.collections)
            .field("auth_prefix", &self.auth_prefix)
            .finish()
    }
}

/// Database collection names of the six API collections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionNames {
    /// `entries`.
    pub entries: String,
    /// `treatments`.
    pub treatments: String,
    /// `devicestatus`.
    pub devicestatus: String,
    /// `profile`.
    pub profile: String,
    /// `food`.
    pub food: String,
    /// `settings`.
    pub settings: String,
}

impl Default for CollectionNames {
    fn default() -> CollectionNames {
        CollectionNames {
            entries: "entries".into(),
            treatments: "treatments".into(),
            devicestatus: "devicestatus".into(),
            profile: "profile".into(),
            food: "food".into(),
            settings: "settings".into(),
        }
    }
}

impl CollectionNames {
    /// Returns the database collection of an API collection, `None` for an unknown name.
    pub fn database_name(&self, api_name: &str) -> Option<&str> {
        let name = match api_name {
            "entries" => &self.entries,
            "treatments" => &self.treatments,
            "devicestatus" => &self.devicestatus,
            "profile" => &self.profile,
            "food" => &self.food,
            "settings" => &self.settings,
            _ => return None,
        };
        Some(name)
    }

    /// Returns the API collection stored in a database collection, `None` when no API
    /// collection is stored there.
    pub fn api_name(&self, database_name: &str) -> Option<&'static str> {
        API_COLLECTIONS
            .iter()
            .copied()
            .find(|api| self.database_name(api) == Some(database_name))
    }

    /// Lists `(API name, database name)` of all six collections.
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        API_COLLECTIONS
            .iter()
            .map(|api| (*api, self.database_name(api).unwrap_or(api)))
            .collect()
    }
}

/// The API collection names, in the order the settings list them.
const API_COLLECTIONS: [&str; 6] = [
    "entries",
    "treatments",
    "devicestatus",
    "profile",
    "food",
    "settings",
];

/// Variables that may hold the connection string, in the order Nightscout 15.0.7
/// (`lib/server/env.js`) prefers them.
pub const URI_VARIABLES: [&str; 5] = [
    "STORAGE_URI",
    "MONGO_CONNECTION",
    "MONGO",
    "MONGOLAB_URI",
    "MONGODB_URI",
];

impl MongoSettings {
    /// Reads the settings through `lookup` (normally `std::env::var`), returning `None`
    /// when no connection string is set, which selects the embedded store.
    ///
    /// Each variable is read as Nightscout reads it: `CUSTOMCONNSTR_<NAME>` (Azure's
    /// prefix), `CUSTOMCONNSTR_<name>`, `<NAME>`, `<name>`, and an empty value counts
    /// as unset. Collection names: `ENTRIES_COLLECTION` (or `MONGO_COLLECTION`),
    /// `MONGO_TREATMENTS_COLLECTION`, `MONGO_DEVICESTATUS_COLLECTION`,
    /// `MONGO_PROFILE_COLLECTION`, `MONGO_FOOD_COLLECTION`, `MONGO_SETTINGS_COLLECTION`,
    /// and the authorization prefix `MONGO_AUTHENTICATION_COLLECTIONS_PREFIX`
    /// (default `auth_`).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Option<MongoSettings> {
        let read = |name: &str| read_variable(&lookup, name);

        let (uri_variable, uri) = URI_VARIABLES.iter().find_map(|name| read(name))?;
        let named = |names: &[&str], default: &str| {
            names
                .iter()
                .find_map(|name| read(name).map(|(_, value)| value))
                .unwrap_or_else(|| default.to_string())
        };

        Some(MongoSettings {
            uri,
            uri_variable,
            collections: CollectionNames {
                entries: named(&["ENTRIES_COLLECTION", "MONGO_COLLECTION"], "entries"),
                treatments: named(&["MONGO_TREATMENTS_COLLECTION"], "treatments"),
                devicestatus: named(&["MONGO_DEVICESTATUS_COLLECTION"], "devicestatus"),
                profile: named(&["MONGO_PROFILE_COLLECTION"], "profile"),
                food: named(&["MONGO_FOOD_COLLECTION"], "food"),
                settings: named(&["MONGO_SETTINGS_COLLECTION"], "settings"),
            },
            auth_prefix: named(&["MONGO_AUTHENTICATION_COLLECTIONS_PREFIX"], "auth_"),
        })
    }

    /// Returns the connection string with any password replaced by `****`.
    pub fn redacted_uri(&self) -> String {
        redact_uri(&self.uri)
    }
}

/// Reads one variable with Nightscout's spellings; returns the spelling found and its value.
fn read_variable(lookup: &impl Fn(&str) -> Option<String>, name: &str) -> Option<(String, String)> {
    let lower = name.to_ascii_lowercase();
    let spellings = [
        format!("CUSTOMCONNSTR_{name}"),
        format!("CUSTOMCONNSTR_{lower}"),
        name.to_string(),
        lower,
    ];
    spellings.into_iter().find_map(|spelling| {
        lookup(&spelling)
            .filter(|value| !value.is_empty())
            .map(|value| (spelling, value))
    })
}

/// Replaces the password of a `mongodb://` or `mongodb+srv://` connection string with
/// `****`.
///
/// The user information ends at the last `@` of the string, because host lists never
/// contain `@` while hand-written passwords sometimes do (unescaped).
pub fn redact_uri(uri: &str) -> String {
    let Some(scheme_end) = uri.find("://") else {
        return if uri.contains('@') {
            "****".to_string()
        } else {
            uri.to_string()
        };
    };
    let (scheme, rest) = uri.split_at(scheme_end + 3);
    let Some(at) = rest.rfind('@') else {
        return uri.to_string();
    };
    let (user_info, hosts) = rest.split_at(at);
    match user_info.split_once(':') {
        Some((user, _password)) => format!("{scheme}{user}:****{hosts}"),
        None => uri.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Option<MongoSettings> {
        let environment: HashMap<String, String> = pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        MongoSettings::from_lookup(|name| environment.get(name).cloned())
    }

    #[test]
    fn no_uri_selects_embedded_store() {
        assert!(settings(&[]).is_none());
        assert!(settings(&[("MONGODB_URI", "")]).is_none());
        assert!(settings(&[("ENTRIES_COLLECTION", "sgv")]).is_none());
    }

    #[test]
    fn uri_variables_in_reference_order() {
        let found = settings(&[("MONGODB_URI", "mongodb://a/db")]).unwrap();
        assert_eq!(found.uri, "mongodb://a/db");
        assert_eq!(found.uri_variable, "MONGODB_URI");

        let found = settings(&[
            ("MONGODB_URI", "mongodb://a/db"),
            ("MONGO_CONNECTION", "mongodb://b/db"),
        ])
        .unwrap();
        assert_eq!(found.uri, "mongodb://b/db");
        assert_eq!(found.uri_variable, "MONGO_CONNECTION");

        let found = settings(&[("CUSTOMCONNSTR_mongo", "mongodb://c/db")]).unwrap();
        assert_eq!(found.uri, "mongodb://c/db");
        assert_eq!(found.uri_variable, "CUSTOMCONNSTR_mongo");

        let found = settings(&[
            ("MONGODB_URI", "mongodb://plain/db"),
            ("CUSTOMCONNSTR_MONGODB_URI", "mongodb://azure/db"),
        ])
        .unwrap();
        assert_eq!(found.uri, "mongodb://azure/db");

        let found = settings(&[("mongodb_uri", "mongodb://lower/db")]).unwrap();
        assert_eq!(found.uri, "mongodb://lower/db");
    }

    #[test]
    fn collection_names_default_to_api_names() {
        let found = settings(&[("MONGODB_URI", "mongodb://a/db")]).unwrap();
        assert_eq!(found.collections, CollectionNames::default());
        assert_eq!(found.auth_prefix, "auth_");
    }

    #[test]
    fn collection_names_from_environment() {
        let found = settings(&[
            ("MONGODB_URI", "mongodb://a/db"),
            ("MONGO_COLLECTION", "cgm"),
            ("MONGO_TREATMENTS_COLLECTION", "care"),
            ("MONGO_DEVICESTATUS_COLLECTION", "status"),
            ("MONGO_PROFILE_COLLECTION", "profiles"),
            ("MONGO_FOOD_COLLECTION", "meals"),
            ("MONGO_SETTINGS_COLLECTION", "prefs"),
            ("MONGO_AUTHENTICATION_COLLECTIONS_PREFIX", "ns_auth_"),
        ])
        .unwrap();
        assert_eq!(found.collections.entries, "cgm");
        assert_eq!(found.collections.treatments, "care");
        assert_eq!(found.collections.devicestatus, "status");
        assert_eq!(found.collections.profile, "profiles");
        assert_eq!(found.collections.food, "meals");
        assert_eq!(found.collections.settings, "prefs");
        assert_eq!(found.auth_prefix, "ns_auth_");

        let found = settings(&[
            ("MONGODB_URI", "mongodb://a/db"),
            ("MONGO_COLLECTION", "cgm"),
            ("ENTRIES_COLLECTION", "sgv"),
        ])
        .unwrap();
        assert_eq!(found.collections.entries, "sgv");
    }

    #[test]
    fn collection_names_map_both_ways() {
        let names = CollectionNames {
            entries: "cgm".into(),
            ..CollectionNames::default()
        };
        assert_eq!(names.database_name("entries"), Some("cgm"));
        assert_eq!(names.database_name("foods"), None);
        assert_eq!(names.api_name("cgm"), Some("entries"));
        assert_eq!(names.api_name("entries"), None);
        assert_eq!(names.api_name("treatments"), Some("treatments"));
    }

    #[test]
    fn redact_uri_hides_password() {
        let cases = [
            (
                "mongodb://user:secret@host:27017/db",
                "mongodb://user:****@host:27017/db",
            ),
            (
                "mongodb+srv://user:p@ss:w/rd@cluster0.example.net/ns?retryWrites=true",
                "mongodb+srv://user:****@cluster0.example.net/ns?retryWrites=true",
            ),
            ("mongodb://user@host/db", "mongodb://user@host/db"),
            (
                "mongodb://host1,host2/db?replicaSet=rs0",
                "mongodb://host1,host2/db?replicaSet=rs0",
            ),
            ("user:secret@host", "****"),
        ];
        for (uri, expected) in cases {
            assert_eq!(redact_uri(uri), expected, "redacting {expected}");
        }
    }

    #[test]
    fn debug_output_hides_password() {
        let found = settings(&[("MONGODB_URI", "mongodb://user:secret@host/db")]).unwrap();
        let printed = format!("{found:?}");
        assert!(!printed.contains("secret"), "{printed}");
        assert!(printed.contains("user:****@host"), "{printed}");
    }
}
