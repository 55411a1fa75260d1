//! Indexes: the ones Nightscout 15.0.7 creates on its collections (so a database that
//! only Nightjar has used gets them too) and the change feed's own.
//!
//! Creating an index that already exists with the same keys and options does nothing,
//! so creation is safe on every start. Names follow the driver's default
//! (`field_1`), which is also the Node.js driver's, so existing indexes match.

use mongodb::bson::{Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Database, IndexModel};
use tracing::{debug, info, warn};

use super::settings::CollectionNames;
use super::{CHANGES_COLLECTION, command_code};

/// One index to create.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedIndex {
    /// Database collection name.
    pub collection: String,
    /// Key pattern.
    pub keys: Document,
    /// Unique and sparse: documents without the key are not indexed, and no two indexed
    /// documents share a key.
    pub unique_sparse: bool,
}

impl PlannedIndex {
    fn ascending(collection: &str, field: &str) -> PlannedIndex {
        PlannedIndex {
            collection: collection.to_string(),
            keys: doc! {field: 1},
            unique_sparse: false,
        }
    }
}

/// Fields that APIv3 indexes on each of its collections
/// (`lib/api3/storage/mongoCollection/index.js`).
const API_FIELDS: [&str; 3] = ["identifier", "srvModified", "isValid"];

/// Single-field indexes of Nightscout's older APIs (`indexedFields` in
/// `lib/server/{entries,treatments,devicestatus,profile,food}.js`).
fn legacy_fields(api_collection: &str) -> &'static [&'static str] {
    match api_collection {
        "entries" => &["date", "type", "sgv", "mbg", "sysTime", "dateString"],
        "treatments" => &[
            "created_at",
            "eventType",
            "insulin",
            "carbs",
            "glucose",
            "enteredBy",
            "boluscalc.foods._id",
            "notes",
            "NSCLIENT_ID",
            "percent",
            "absolute",
            "duration",
        ],
        "devicestatus" => &["created_at", "NSCLIENT_ID"],
        "profile" => &["startDate"],
        "food" => &["type", "position", "hidden"],
        _ => &[],
    }
}

/// Compound indexes of Nightscout's older APIs.
fn legacy_compound(api_collection: &str) -> Option<Document> {
    match api_collection {
        "entries" => Some(doc! {"type": 1, "date": -1, "dateString": 1}),
        "treatments" => Some(doc! {"eventType": 1, "duration": 1, "created_at": 1}),
        _ => None,
    }
}

/// Lists the indexes of the data and authorization collections.
pub fn planned_indexes(names: &CollectionNames, auth_prefix: &str) -> Vec<PlannedIndex> {
    let mut planned = Vec::new();
    for (api, database) in names.pairs() {
        for field in API_FIELDS.iter().chain(legacy_fields(api)) {
            planned.push(PlannedIndex::ascending(database, field));
        }
        if let Some(keys) = legacy_compound(api) {
            planned.push(PlannedIndex {
                collection: database.to_string(),
                keys,
                unique_sparse: false,
            });
        }
    }
    for suffix in ["roles", "subjects"] {
        planned.push(PlannedIndex::ascending(
            &format!("{auth_prefix}{suffix}"),
            "name",
        ));
    }
    planned
}

/// Lists the change feed's indexes: by collection for filtered reads, by record time
/// for pruning, and the unique event source that keeps several replicas from recording
/// one foreign write twice.
pub fn own_indexes() -> Vec<PlannedIndex> {
    vec![
        PlannedIndex {
            collection: CHANGES_COLLECTION.to_string(),
            keys: doc! {"collection": 1, "_id": 1},
            unique_sparse: false,
        },
        PlannedIndex::ascending(CHANGES_COLLECTION, "recordedAt"),
        PlannedIndex {
            collection: CHANGES_COLLECTION.to_string(),
            keys: doc! {"source": 1},
            unique_sparse: true,
        },
    ]
}

/// Server error codes: an index with these keys exists under another name or options.
const INDEX_CONFLICTS: [i32; 2] = [85, 86];

/// Creates each planned index, logging failures and going on with the rest.
pub async fn ensure(database: &Database, planned: Vec<PlannedIndex>) {
    let total = planned.len();
    let mut failed = 0;
    for index in planned {
        let options = IndexOptions::builder()
            .unique(index.unique_sparse.then_some(true))
            .sparse(index.unique_sparse.then_some(true))
            .build();
        let model = IndexModel::builder()
            .keys(index.keys.clone())
            .options(options)
            .build();
        let result = database
            .collection::<Document>(&index.collection)
            .create_index(model)
            .await;
        match result {
            Ok(created) => {
                debug!(collection = %index.collection, index = %created.index_name, "index ensured");
            }
            Err(err) if command_code(&err).is_some_and(|code| INDEX_CONFLICTS.contains(&code)) => {
                debug!(collection = %index.collection, keys = %index.keys, cause = %err, "an equivalent index exists under another name");
            }
            Err(err) => {
                failed += 1;
                warn!(collection = %index.collection, keys = %index.keys, cause = %err, "cannot create index");
            }
        }
    }
    info!(indexes = total, failed, "MongoDB indexes ensured");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_of(planned: &[PlannedIndex], collection: &str) -> Vec<Document> {
        planned
            .iter()
            .filter(|index| index.collection == collection)
            .map(|index| index.keys.clone())
            .collect()
    }

    #[test]
    fn entries_get_api_and_legacy_indexes() {
        let planned = planned_indexes(&CollectionNames::default(), "auth_");
        assert_eq!(
            keys_of(&planned, "entries"),
            vec![
                doc! {"identifier": 1},
                doc! {"srvModified": 1},
                doc! {"isValid": 1},
                doc! {"date": 1},
                doc! {"type": 1},
                doc! {"sgv": 1},
                doc! {"mbg": 1},
                doc! {"sysTime": 1},
                doc! {"dateString": 1},
                doc! {"type": 1, "date": -1, "dateString": 1},
            ]
        );
    }

    #[test]
    fn every_collection_gets_api_indexes() {
        let planned = planned_indexes(&CollectionNames::default(), "auth_");
        for collection in ["treatments", "devicestatus", "profile", "food", "settings"] {
            let keys = keys_of(&planned, collection);
            for field in API_FIELDS {
                assert!(keys.contains(&doc! {field: 1}), "{collection} {field}");
            }
        }
        assert_eq!(keys_of(&planned, "settings").len(), 3);
        assert!(keys_of(&planned, "treatments").contains(&doc! {"boluscalc.foods._id": 1}));
        assert!(keys_of(&planned, "devicestatus").contains(&doc! {"created_at": 1}));
    }

    #[test]
    fn configured_names_are_used() {
        let names = CollectionNames {
            entries: "cgm".into(),
            ..CollectionNames::default()
        };
        let planned = planned_indexes(&names, "ns_auth_");
        assert!(keys_of(&planned, "entries").is_empty());
        assert!(keys_of(&planned, "cgm").contains(&doc! {"sgv": 1}));
        assert_eq!(
            keys_of(&planned, "ns_auth_subjects"),
            vec![doc! {"name": 1}]
        );
        assert_eq!(keys_of(&planned, "ns_auth_roles"), vec![doc! {"name": 1}]);
    }

    #[test]
    fn change_feed_source_is_unique() {
        let own = own_indexes();
        let source = own
            .iter()
            .find(|index| index.keys == doc! {"source": 1})
            .unwrap();
        assert!(source.unique_sparse);
        assert!(
            own.iter()
                .all(|index| index.collection == CHANGES_COLLECTION)
        );
    }
}
