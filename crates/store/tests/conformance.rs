//! Storage conformance: the same operations and guarantees on every backend.
//!
//! Each scenario runs against the embedded store always, and against MongoDB when
//! `MONGODB_URI` is set (a replica set exercises transactions and change streams, a
//! standalone server the fallback path). Every MongoDB test uses its own database,
//! named `nightjar_test_<test>_<process>_<time>`, and drops it at the end. Without
//! `MONGODB_URI` the MongoDB tests print why they were skipped and pass.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mongodb::bson::{Bson, Document, doc, oid::ObjectId};
use nightjar_apiv3::ApiError;
use nightjar_apiv3::search::{SearchQuery, parse_search};
use nightjar_store::mongo::{CollectionNames, MongoSettings};
use nightjar_store::{
    AuthTable, Lookup, MongoStore, Operation, SqliteStore, Store, StoreError, StoredDocument,
    WriteAction, WriteContext,
};
use serde_json::{Map, Value, json};

/// A store under test and what seeding documents behind its back needs.
struct Harness {
    store: Store,
    backend: Backend,
}

enum Backend {
    Embedded {
        /// Kept so the directory lives as long as the store.
        _directory: tempfile::TempDir,
        database: PathBuf,
    },
    Mongo {
        client: mongodb::Client,
        database: String,
        settings: MongoSettings,
    },
}

/// First `date` of the documents the scenarios write, 2023-11-14T22:13:20Z.
const BASE_DATE: i64 = 1_700_000_000_000;

impl Harness {
    fn embedded() -> Harness {
        let directory = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(directory.path()).unwrap();
        let database = store.path().to_path_buf();
        Harness {
            store: Store::Embedded(store),
            backend: Backend::Embedded {
                _directory: directory,
                database,
            },
        }
    }

    /// Opens a MongoDB store on a fresh database, or returns `None` (after printing why)
    /// when `MONGODB_URI` is not set.
    async fn mongo(test: &str) -> Option<Harness> {
        let Ok(uri) = std::env::var("MONGODB_URI") else {
            eprintln!(
                "skipped {test} on MongoDB: MONGODB_URI is not set (set it to a replica set \
                 such as mongodb://localhost:27017/?replicaSet=rs0 to run it)"
            );
            return None;
        };
        let database = test_database_name(test);
        let settings = MongoSettings {
            uri: with_database(&uri, &database),
            uri_variable: "MONGODB_URI".into(),
            collections: CollectionNames::default(),
            auth_prefix: "auth_".into(),
        };
        let client = mongodb::Client::with_uri_str(&settings.uri).await.unwrap();
        let store = MongoStore::open(settings.clone()).await.unwrap();
        Some(Harness {
            store: Store::Mongo(store),
            backend: Backend::Mongo {
                client,
                database,
                settings,
            },
        })
    }

    /// Stores a document the way Nightscout's older APIs did: no `identifier`, no
    /// `srvModified`. Returns its key (24 hex digits).
    async fn insert_legacy(&self, collection: &str, body: Value) -> String {
        match &self.backend {
            Backend::Embedded { database, .. } => {
                let connection = rusqlite::Connection::open(database).unwrap();
                let key = ObjectId::new().to_hex();
                let date = body.get("date").and_then(Value::as_i64);
                let created_at = body.get("created_at").and_then(Value::as_str);
                connection
                    .execute(
                        "INSERT INTO documents (collection, key, has_identifier, date, srv_modified, created_at, is_valid, body) \
                         VALUES (?, ?, 0, ?, 0, ?, 1, ?)",
                        rusqlite::params![collection, key, date, created_at, body.to_string()],
                    )
                    .unwrap();
                key
            }
            Backend::Mongo {
                client, database, ..
            } => {
                let id = ObjectId::new();
                let mut document = doc! {"_id": id};
                let Value::Object(fields) = body else {
                    panic!("legacy body must be an object")
                };
                for (name, value) in fields {
                    // Nightscout's Node.js driver stores large whole numbers as doubles.
                    let converted = match value.as_i64() {
                        Some(number) if i32::try_from(number).is_err() => {
                            Bson::Double(number as f64)
                        }
                        _ => mongodb::bson::to_bson(&value).unwrap(),
                    };
                    document.insert(name, converted);
                }
                client
                    .database(database)
                    .collection::<Document>(collection)
                    .insert_one(document)
                    .await
                    .unwrap();
                id.to_hex()
            }
        }
    }

    async fn finish(self) {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.close())
            .await
            .unwrap();
        if let Backend::Mongo {
            client, database, ..
        } = self.backend
        {
            client.database(&database).drop().await.unwrap();
        }
    }
}

fn test_database_name(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let mut name = format!("nightjar_test_{test}_{}_{nanos}", std::process::id());
    name.truncate(63);
    name
}

/// Replaces the database of a connection string, keeping hosts, credentials and options.
fn with_database(uri: &str, database: &str) -> String {
    let (scheme, rest) = uri.split_once("://").expect("MONGODB_URI has a scheme");
    let hosts_start = rest.rfind('@').map_or(0, |at| at + 1);
    let hosts_end = rest[hosts_start..]
        .find(['/', '?'])
        .map_or(rest.len(), |offset| hosts_start + offset);
    let options = rest[hosts_end..]
        .find('?')
        .map_or("", |offset| &rest[hosts_end + offset..]);
    format!("{scheme}://{}/{database}{options}", &rest[..hosts_end])
}

/// Generates one test per backend for a scenario `async fn(&Harness)`.
macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let harness = super::Harness::embedded();
                    super::$scenario(&harness).await;
                    harness.finish().await;
                }
            )*
        }

        mod mongodb_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let Some(harness) = super::Harness::mongo(stringify!($scenario)).await else {
                        return;
                    };
                    super::$scenario(&harness).await;
                    harness.finish().await;
                }
            )*
        }
    };
}

conformance!(
    insert_find_and_change,
    replace_remove_and_soft_delete,
    rejected_plan_writes_nothing,
    srv_modified_increases_strictly,
    legacy_documents_by_id_and_fallback,
    search_filters_sort_and_paging,
    history_by_srv_modified,
    change_feed_order_and_filters,
    prune_keeps_newest_changes,
    auth_entries_round_trip,
    collection_times_of_fallback_fields,
);

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// Inserts `fields` under `identifier`; returns the srvModified it got.
async fn insert(store: &Store, collection: &str, identifier: &str, fields: Value) -> i64 {
    let identifier = identifier.to_string();
    store
        .write(
            collection,
            Lookup::by_identifier(identifier.clone()),
            move |context: WriteContext| {
                assert!(context.existing.is_none(), "{identifier} already stored");
                let mut body = object(fields);
                body.insert("identifier".into(), identifier.into());
                body.insert("srvModified".into(), context.srv_modified.into());
                Ok((WriteAction::Insert(body), context.srv_modified))
            },
        )
        .await
        .unwrap()
}

/// Replaces the document `identifier` addresses with its body merged with `fields`;
/// returns the srvModified it got.
async fn update(
    store: &Store,
    collection: &str,
    identifier: &str,
    fields: Value,
    operation: Operation,
) -> i64 {
    let identifier = identifier.to_string();
    store
        .write(
            collection,
            Lookup::by_identifier(identifier.clone()),
            move |context: WriteContext| {
                let existing = context.existing.expect("document to update is stored");
                let mut body = existing.body.clone();
                body.extend(object(fields));
                body.entry("identifier").or_insert(existing.key.into());
                body.insert("srvModified".into(), context.srv_modified.into());
                let action = WriteAction::Replace { body, operation };
                Ok((action, context.srv_modified))
            },
        )
        .await
        .unwrap()
}

async fn find(store: &Store, collection: &str, identifier: &str) -> Option<StoredDocument> {
    store.find(collection, identifier).await.unwrap()
}

/// Waits until the head reaches `cursor`, because a store may return from a write
/// just before it moves its head.
async fn wait_for_head(store: &Store, cursor: i64) {
    let mut head = store.watch_head();
    tokio::time::timeout(
        Duration::from_secs(5),
        head.wait_for(|head| *head >= cursor),
    )
    .await
    .expect("the head reaches the newest cursor within 5 s")
    .unwrap();
}

fn query(pairs: &[(&str, &str)]) -> SearchQuery {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    parse_search(&pairs, 1000).unwrap()
}

async fn search_keys(store: &Store, collection: &str, pairs: &[(&str, &str)]) -> Vec<String> {
    store
        .search(collection, &query(pairs))
        .await
        .unwrap()
        .into_iter()
        .map(|document| document.key)
        .collect()
}

async fn insert_find_and_change(harness: &Harness) {
    let store = &harness.store;
    let head_before = store.head();
    let mut head = store.watch_head();
    head.borrow_and_update();

    let srv_modified = insert(
        store,
        "entries",
        "a",
        json!({"date": BASE_DATE, "type": "sgv", "sgv": 120}),
    )
    .await;

    let found = find(store, "entries", "a")
        .await
        .expect("inserted document");
    assert_eq!(found.key, "a");
    assert!(found.has_identifier);
    assert_eq!(found.body["sgv"], json!(120));
    assert_eq!(found.body["date"], json!(BASE_DATE));
    assert_eq!(found.body["srvModified"], json!(srv_modified));
    assert!(!found.body.contains_key("_id"));
    assert!(find(store, "entries", "b").await.is_none());
    assert!(find(store, "treatments", "a").await.is_none());

    tokio::time::timeout(
        Duration::from_secs(5),
        head.wait_for(|cursor| *cursor > head_before),
    )
    .await
    .expect("watchers are woken within 5 s")
    .unwrap();
    let changes = store
        .changes_after(head_before, Vec::new(), 10)
        .await
        .unwrap();
    assert_eq!(changes.len(), 1);
    let change = &changes[0];
    assert!(change.cursor > head_before);
    wait_for_head(store, change.cursor).await;
    assert_eq!(change.cursor, store.head());
    assert_eq!(change.collection, "entries");
    assert_eq!(change.operation, Operation::Create);
    assert_eq!(change.identifier, "a");
    assert_eq!(change.srv_modified, srv_modified);
    let document = change.document.as_ref().expect("created document");
    assert_eq!(document["sgv"], json!(120));
    assert!(!document.contains_key("_id"));
}

async fn replace_remove_and_soft_delete(harness: &Harness) {
    let store = &harness.store;
    let head_before = store.head();

    insert(
        store,
        "entries",
        "b",
        json!({"date": BASE_DATE, "sgv": 100}),
    )
    .await;
    update(
        store,
        "entries",
        "b",
        json!({"sgv": 130}),
        Operation::Update,
    )
    .await;
    assert_eq!(
        find(store, "entries", "b").await.unwrap().body["sgv"],
        json!(130)
    );

    store
        .write("entries", Lookup::by_identifier("b"), |context| {
            assert!(context.existing.is_some());
            Ok((WriteAction::Remove, ()))
        })
        .await
        .unwrap();
    assert!(find(store, "entries", "b").await.is_none());

    insert(store, "entries", "c", json!({"date": BASE_DATE + 1})).await;
    update(
        store,
        "entries",
        "c",
        json!({"isValid": false}),
        Operation::Delete,
    )
    .await;
    let soft_deleted = find(store, "entries", "c")
        .await
        .expect("soft-deleted document");
    assert!(!soft_deleted.is_valid());

    let changes = store
        .changes_after(head_before, Vec::new(), 10)
        .await
        .unwrap();
    let summary: Vec<(Operation, &str, bool)> = changes
        .iter()
        .map(|change| {
            (
                change.operation,
                change.identifier.as_str(),
                change.document.is_some(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (Operation::Create, "b", true),
            (Operation::Update, "b", true),
            (Operation::Delete, "b", false),
            (Operation::Create, "c", true),
            (Operation::Delete, "c", false),
        ]
    );
    assert_eq!(changes[1].document.as_ref().unwrap()["sgv"], json!(130));
}

async fn rejected_plan_writes_nothing(harness: &Harness) {
    let store = &harness.store;
    let head_before = store.head();

    let rejected = store
        .write("entries", Lookup::by_identifier("r"), |_context| {
            Err::<(WriteAction, ()), _>(ApiError::bad_request("rejected by the plan"))
        })
        .await;
    assert!(matches!(rejected, Err(StoreError::Rejected(_))));

    let nothing = store
        .write("entries", Lookup::by_identifier("r"), |_context| {
            Ok((WriteAction::Nothing, 7))
        })
        .await
        .unwrap();
    assert_eq!(nothing, 7);

    assert!(find(store, "entries", "r").await.is_none());
    assert_eq!(store.head(), head_before);
    assert!(
        store
            .changes_after(head_before, Vec::new(), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn srv_modified_increases_strictly(harness: &Harness) {
    let store = &harness.store;

    // 1. One writer: every value exceeds the previous one, also within a millisecond.
    let mut previous = 0;
    for i in 0..20 {
        let identifier = format!("s{i}");
        let srv_modified = insert(store, "entries", &identifier, json!({"n": i})).await;
        assert!(srv_modified > previous, "{srv_modified} after {previous}");
        previous = srv_modified;
    }

    // 2. Concurrent writers: distinct values, increasing in commit (cursor) order.
    let head_before = store.head();
    let mut writers = Vec::new();
    for i in 0..10 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            insert(&store, "treatments", &format!("t{i}"), json!({"n": i})).await
        }));
    }
    let mut values = Vec::new();
    for writer in writers {
        values.push(writer.await.unwrap());
    }
    let changes = store
        .changes_after(head_before, vec!["treatments".into()], 100)
        .await
        .unwrap();
    assert_eq!(changes.len(), 10);
    for pair in changes.windows(2) {
        assert!(pair[1].cursor > pair[0].cursor);
        assert!(
            pair[1].srv_modified > pair[0].srv_modified,
            "srvModified {} committed after {}",
            pair[1].srv_modified,
            pair[0].srv_modified
        );
    }
    values.sort_unstable();
    values.dedup();
    assert_eq!(values.len(), 10);
}

async fn legacy_documents_by_id_and_fallback(harness: &Harness) {
    let store = &harness.store;

    // 1. A legacy document is addressed by its database id and shows no `_id`.
    let legacy = harness
        .insert_legacy(
            "entries",
            json!({"date": BASE_DATE, "type": "sgv", "sgv": 99, "dateString": "2023-11-14T22:13:20.000Z"}),
        )
        .await;
    let found = find(store, "entries", &legacy)
        .await
        .expect("legacy document");
    assert_eq!(found.key, legacy);
    assert!(!found.has_identifier);
    assert!(!found.body.contains_key("_id"));
    assert!(!found.body.contains_key("identifier"));
    assert_eq!(found.body["date"], json!(BASE_DATE));
    assert_eq!(
        search_keys(store, "entries", &[("sgv", "99")]).await,
        vec![legacy.clone()]
    );

    // 2. A write by that id finds it; after the rewrite it carries the identifier.
    update(
        store,
        "entries",
        &legacy,
        json!({"sgv": 98}),
        Operation::Update,
    )
    .await;
    let rewritten = find(store, "entries", &legacy)
        .await
        .expect("rewritten legacy document");
    assert!(rewritten.has_identifier);
    assert_eq!(rewritten.body["identifier"], json!(legacy));
    assert_eq!(rewritten.body["sgv"], json!(98));

    // 3. The fallback finds a legacy document by its fields...
    let fallback_legacy = harness
        .insert_legacy(
            "entries",
            json!({"date": BASE_DATE + 5000, "type": "mbg", "mbg": 110}),
        )
        .await;
    let fallback = vec![
        ("date".to_string(), json!(BASE_DATE + 5000)),
        ("type".to_string(), json!("mbg")),
    ];
    let seen = store
        .write(
            "entries",
            Lookup {
                identifier: "uuid-1".into(),
                fallback,
            },
            |context| {
                let Some(stored) = context.existing else {
                    return Ok((WriteAction::Nothing, None));
                };
                let mut body = stored.body;
                body.insert("identifier".into(), "uuid-1".into());
                body.insert("srvModified".into(), context.srv_modified.into());
                let action = WriteAction::Replace {
                    body,
                    operation: Operation::Update,
                };
                Ok((action, Some(stored.key)))
            },
        )
        .await
        .unwrap();
    assert_eq!(seen, Some(fallback_legacy.clone()));
    assert!(find(store, "entries", "uuid-1").await.is_some());
    assert!(find(store, "entries", &fallback_legacy).await.is_none());

    // 4. ...but never a document that has an identifier.
    insert(
        store,
        "entries",
        "with-identifier",
        json!({"date": BASE_DATE + 9000, "type": "sgv"}),
    )
    .await;
    let seen = store
        .write(
            "entries",
            Lookup {
                identifier: "uuid-2".into(),
                fallback: vec![
                    ("date".to_string(), json!(BASE_DATE + 9000)),
                    ("type".to_string(), json!("sgv")),
                ],
            },
            |context| {
                Ok((
                    WriteAction::Nothing,
                    context.existing.map(|document| document.key),
                ))
            },
        )
        .await
        .unwrap();
    assert_eq!(seen, None);
}

async fn search_filters_sort_and_paging(harness: &Harness) {
    let store = &harness.store;
    let documents = [
        (
            "e1",
            json!({"date": BASE_DATE, "type": "sgv", "sgv": 100, "device": "xDrip-G6"}),
        ),
        (
            "e2",
            json!({"date": BASE_DATE + 1000, "type": "sgv", "sgv": 120, "device": "AAPS"}),
        ),
        (
            "e3",
            json!({"date": BASE_DATE + 2000, "type": "sgv", "sgv": 140, "device": "AAPS", "meta": {"delta": 3}}),
        ),
        (
            "e4",
            json!({"date": BASE_DATE + 3000, "type": "mbg", "sgv": "120"}),
        ),
        (
            "e5",
            json!({"date": BASE_DATE + 4000, "type": "sgv", "sgv": 120}),
        ),
    ];
    for (identifier, fields) in documents {
        insert(store, "entries", identifier, fields).await;
    }
    update(
        store,
        "entries",
        "e5",
        json!({"isValid": false}),
        Operation::Delete,
    )
    .await;

    type Case = (
        &'static str,
        Vec<(&'static str, &'static str)>,
        Vec<&'static str>,
    );
    let cases: Vec<Case> = vec![
        ("all valid", vec![], vec!["e1", "e2", "e3", "e4"]),
        (
            "number equality ignores text",
            vec![("sgv", "120")],
            vec!["e2"],
        ),
        ("quoted text", vec![("sgv", "'120'")], vec!["e4"]),
        (
            "range, descending",
            vec![("sgv$gte", "120"), ("sort$desc", "sgv")],
            vec!["e3", "e2"],
        ),
        (
            "two bounds on one field",
            vec![("sgv$gt", "100"), ("sgv$lt", "140")],
            vec!["e2"],
        ),
        ("in", vec![("sgv$in", "100|140")], vec!["e1", "e3"]),
        (
            "nin matches missing and text",
            vec![("sgv$nin", "100|140")],
            vec!["e2", "e4"],
        ),
        ("ne", vec![("type$ne", "sgv")], vec!["e4"]),
        (
            "regular expression",
            vec![("device$re", "^xDrip")],
            vec!["e1"],
        ),
        ("dotted path", vec![("meta.delta$gt", "1")], vec!["e3"]),
        (
            "date in ISO form",
            vec![("date$gte", "2023-11-14T22:13:22.000Z")],
            vec!["e3", "e4"],
        ),
        (
            "sort by date descending",
            vec![("sort$desc", "date")],
            vec!["e4", "e3", "e2", "e1"],
        ),
        (
            "limit and skip",
            vec![("sort", "date"), ("limit", "2"), ("skip", "1")],
            vec!["e2", "e3"],
        ),
        ("operator-like field", vec![("$where$eq", "1")], vec![]),
    ];
    for (name, pairs, expected) in cases {
        assert_eq!(
            search_keys(store, "entries", &pairs).await,
            expected,
            "{name}"
        );
    }

    let projected = store
        .search("entries", &query(&[("fields", "sgv"), ("sgv", "140")]))
        .await
        .unwrap();
    assert_eq!(projected.len(), 1);
    assert_eq!(projected[0].key, "e3");
    assert_eq!(projected[0].body["sgv"], json!(140));
}

async fn history_by_srv_modified(harness: &Harness) {
    let store = &harness.store;
    let first = insert(
        store,
        "treatments",
        "h1",
        json!({"created_at": "2023-11-14T22:13:20.000Z"}),
    )
    .await;
    let second = insert(
        store,
        "treatments",
        "h2",
        json!({"created_at": "2023-11-14T22:13:21.000Z"}),
    )
    .await;
    let deleted = update(
        store,
        "treatments",
        "h1",
        json!({"isValid": false}),
        Operation::Delete,
    )
    .await;
    assert!(first < second);
    assert!(second < deleted);

    let keys = |documents: Vec<StoredDocument>| -> Vec<String> {
        documents.into_iter().map(|document| document.key).collect()
    };
    assert_eq!(
        keys(store.history("treatments", 0, false, 10).await.unwrap()),
        vec!["h2", "h1"],
        "soft-deleted documents are listed, by srvModified"
    );
    assert_eq!(
        keys(
            store
                .history("treatments", second, false, 10)
                .await
                .unwrap()
        ),
        vec!["h1"]
    );
    assert_eq!(
        keys(store.history("treatments", second, true, 10).await.unwrap()),
        vec!["h2", "h1"]
    );
    assert_eq!(
        keys(store.history("treatments", 0, false, 1).await.unwrap()),
        vec!["h2"]
    );
    assert!(
        store
            .history("treatments", deleted, false, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .history("entries", 0, false, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn change_feed_order_and_filters(harness: &Harness) {
    let store = &harness.store;
    let head_before = store.head();
    for i in 0..6 {
        let collection = if i % 2 == 0 { "entries" } else { "treatments" };
        insert(store, collection, &format!("f{i}"), json!({"n": i})).await;
    }

    let all = store
        .changes_after(head_before, Vec::new(), 100)
        .await
        .unwrap();
    let identifiers: Vec<&str> = all
        .iter()
        .map(|change| change.identifier.as_str())
        .collect();
    assert_eq!(identifiers, ["f0", "f1", "f2", "f3", "f4", "f5"]);
    for pair in all.windows(2) {
        assert!(pair[1].cursor > pair[0].cursor);
    }
    wait_for_head(store, all[5].cursor).await;
    assert_eq!(all[5].cursor, store.head());

    let treatments = store
        .changes_after(head_before, vec!["treatments".into()], 100)
        .await
        .unwrap();
    let identifiers: Vec<&str> = treatments
        .iter()
        .map(|change| change.identifier.as_str())
        .collect();
    assert_eq!(identifiers, ["f1", "f3", "f5"]);

    let first_two = store
        .changes_after(head_before, Vec::new(), 2)
        .await
        .unwrap();
    assert_eq!(first_two, all[..2].to_vec());
    let rest = store
        .changes_after(all[2].cursor, Vec::new(), 100)
        .await
        .unwrap();
    assert_eq!(rest, all[3..].to_vec());
    assert!(
        store
            .changes_after(store.head(), Vec::new(), 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn prune_keeps_newest_changes(harness: &Harness) {
    let store = &harness.store;
    let head_before = store.head();
    for i in 0..5 {
        insert(store, "entries", &format!("p{i}"), json!({"n": i})).await;
    }
    let all = store
        .changes_after(head_before, Vec::new(), 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(store.pruned_through().await.unwrap(), 0);

    // 1. By count: the newest two stay.
    let deleted = store.prune_changes(0, 2).await.unwrap();
    assert_eq!(deleted, 3);
    assert_eq!(store.pruned_through().await.unwrap(), all[2].cursor);
    let kept = store.changes_after(0, Vec::new(), 100).await.unwrap();
    assert_eq!(kept, all[3..].to_vec());

    // 2. By age: everything recorded before the future goes; the head stays.
    let future = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 60_000;
    assert_eq!(store.prune_changes(future, 1000).await.unwrap(), 2);
    assert_eq!(store.pruned_through().await.unwrap(), all[4].cursor);
    wait_for_head(store, all[4].cursor).await;
    assert_eq!(store.head(), all[4].cursor);
    assert_eq!(store.prune_changes(future, 1000).await.unwrap(), 0);
}

async fn auth_entries_round_trip(harness: &Harness) {
    let store = &harness.store;
    let id = "5ae9ab3a4d6f2b1a2c3d4e5f";
    assert!(
        store
            .list_auth(AuthTable::Subjects)
            .await
            .unwrap()
            .is_empty()
    );

    let subject = json!({"_id": id, "name": "phone", "roles": ["readable"], "notes": "", "created_at": "2023-11-14T22:13:20.000Z"});
    store
        .save_auth(AuthTable::Subjects, id, &subject)
        .await
        .unwrap();
    assert_eq!(
        store.list_auth(AuthTable::Subjects).await.unwrap(),
        vec![subject]
    );
    assert!(store.list_auth(AuthTable::Roles).await.unwrap().is_empty());

    let renamed = json!({"_id": id, "name": "watch", "roles": ["readable"], "notes": "", "created_at": "2023-11-14T22:13:20.000Z"});
    store
        .save_auth(AuthTable::Subjects, id, &renamed)
        .await
        .unwrap();
    assert_eq!(
        store.list_auth(AuthTable::Subjects).await.unwrap(),
        vec![renamed]
    );

    assert!(store.delete_auth(AuthTable::Subjects, id).await.unwrap());
    assert!(!store.delete_auth(AuthTable::Subjects, id).await.unwrap());
    assert!(
        store
            .list_auth(AuthTable::Subjects)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn collection_times_of_fallback_fields(harness: &Harness) {
    let store = &harness.store;
    assert_eq!(store.collection_times("entries").await.unwrap(), None);

    let entry = insert(store, "entries", "t1", json!({"date": BASE_DATE})).await;
    let times = store.collection_times("entries").await.unwrap().unwrap();
    assert_eq!(times.srv_modified, Some(entry));
    assert_eq!(times.date, Some(BASE_DATE));

    let treatment = insert(
        store,
        "treatments",
        "t2",
        json!({"created_at": "2023-11-14T22:13:20.000Z"}),
    )
    .await;
    let times = store.collection_times("treatments").await.unwrap().unwrap();
    assert_eq!(times.srv_modified, Some(treatment));
    assert_eq!(
        times.created_at.as_deref(),
        Some("2023-11-14T22:13:20.000Z")
    );
}

/// MongoDB only: a rewrite keeps the legacy `_id` and the stored types of untouched
/// fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_rewrite_keeps_id_and_types() {
    let Some(harness) = Harness::mongo("rewrite_types").await else {
        return;
    };
    let Backend::Mongo {
        client, database, ..
    } = &harness.backend
    else {
        unreachable!()
    };
    let legacy = harness
        .insert_legacy("entries", json!({"date": BASE_DATE, "sgv": 99}))
        .await;
    update(
        &harness.store,
        "entries",
        &legacy,
        json!({"sgv": 98}),
        Operation::Update,
    )
    .await;

    let raw = client
        .database(database)
        .collection::<Document>("entries")
        .find_one(doc! {"identifier": &legacy})
        .await
        .unwrap()
        .expect("rewritten document");
    assert_eq!(raw.get_object_id("_id").unwrap().to_hex(), legacy);
    assert_eq!(raw.get("date"), Some(&Bson::Double(BASE_DATE as f64)));
    assert_eq!(raw.get("sgv"), Some(&Bson::Int32(98)));
    harness.finish().await;
}

/// MongoDB replica sets only: a second store on the same database (another core
/// replica) hears of the first one's writes, writes by another program are announced,
/// and cursors stay ordered when both replicas write at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_replicas_share_the_change_feed() {
    let Some(harness) = Harness::mongo("replicas").await else {
        return;
    };
    let Store::Mongo(first) = &harness.store else {
        unreachable!()
    };
    if !first.has_transactions() {
        eprintln!("skipped replica checks: the MongoDB server is standalone (no change streams)");
        harness.finish().await;
        return;
    }
    let Backend::Mongo {
        client,
        database,
        settings,
    } = &harness.backend
    else {
        unreachable!()
    };
    let second = Store::Mongo(MongoStore::open(settings.clone()).await.unwrap());

    // 1. A write on the first replica wakes the second.
    let mut head = second.watch_head();
    let start = second.head();
    insert(&harness.store, "entries", "r1", json!({"date": BASE_DATE})).await;
    tokio::time::timeout(
        Duration::from_secs(10),
        head.wait_for(|cursor| *cursor > start),
    )
    .await
    .expect("the second replica hears of the write within 10 s")
    .unwrap();
    let changes = second.changes_after(start, Vec::new(), 10).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].identifier, "r1");

    // 2. Another program's insert is recorded once and announced.
    let id = ObjectId::new();
    client
        .database(database)
        .collection::<Document>("entries")
        .insert_one(doc! {"_id": id, "sgv": 111, "date": BASE_DATE as f64 + 1000.0, "type": "sgv"})
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let foreign = loop {
        let changes = harness
            .store
            .changes_after(start, Vec::new(), 100)
            .await
            .unwrap();
        let found: Vec<_> = changes
            .into_iter()
            .filter(|change| change.identifier == id.to_hex())
            .collect();
        if !found.is_empty() || tokio::time::Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        foreign.len(),
        1,
        "recorded once although two replicas follow the stream"
    );
    assert_eq!(foreign[0].operation, Operation::Create);
    assert_eq!(foreign[0].document.as_ref().unwrap()["sgv"], json!(111));

    // 3. Concurrent writes on both replicas: unique, ordered cursors and srvModified.
    let before = harness.store.head();
    let mut writers = Vec::new();
    for i in 0..10 {
        let store = if i % 2 == 0 {
            harness.store.clone()
        } else {
            second.clone()
        };
        writers.push(tokio::spawn(async move {
            insert(&store, "treatments", &format!("c{i}"), json!({"n": i})).await
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let changes = harness
        .store
        .changes_after(before, vec!["treatments".into()], 100)
        .await
        .unwrap();
    assert_eq!(changes.len(), 10);
    for pair in changes.windows(2) {
        assert!(pair[1].cursor > pair[0].cursor);
        assert!(pair[1].srv_modified > pair[0].srv_modified);
    }

    let closing = second.clone();
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .unwrap();
    harness.finish().await;
}

/// Runs always: an unreachable server fails the open within the selection timeout, and
/// the error does not contain the password.
#[tokio::test]
async fn mongodb_unreachable_server_fails_without_password() {
    let settings = MongoSettings {
        uri: "mongodb://nightjar:secret-password@127.0.0.1:9/db?serverSelectionTimeoutMS=300"
            .into(),
        uri_variable: "MONGODB_URI".into(),
        collections: CollectionNames::default(),
        auth_prefix: "auth_".into(),
    };
    let opened = tokio::time::timeout(Duration::from_secs(10), MongoStore::open(settings))
        .await
        .expect("open gives up within the server selection timeout");
    let Err(err) = opened else {
        panic!("opened a store on a closed port");
    };
    let message = err.to_string();
    assert!(matches!(err, StoreError::Mongo(_)), "{message}");
    assert!(!message.contains("secret-password"), "{message}");
}

#[test]
fn with_database_replaces_only_the_path() {
    let cases = [
        ("mongodb://localhost:27017", "mongodb://localhost:27017/t"),
        ("mongodb://localhost:27017/", "mongodb://localhost:27017/t"),
        (
            "mongodb://localhost/ns?replicaSet=rs0",
            "mongodb://localhost/t?replicaSet=rs0",
        ),
        (
            "mongodb://u:p@a,b/ns?w=majority",
            "mongodb://u:p@a,b/t?w=majority",
        ),
        (
            "mongodb+srv://u:p%40ss@c.example.net/?retryWrites=true",
            "mongodb+srv://u:p%40ss@c.example.net/t?retryWrites=true",
        ),
    ];
    for (uri, expected) in cases {
        assert_eq!(with_database(uri, "t"), expected, "{uri}");
    }
}
