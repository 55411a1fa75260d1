//! The change feed in MongoDB: change records in `nightjar_changes` with the cursor as
//! `_id`, the cursor counter and the pruned cursor in `nightjar_meta`.
//!
//! A record contains `collection` (API name), `operation` (`create`, `update` or
//! `delete`), `identifier`, `document` (absent for deletes), `srvModified` and
//! `recordedAt` (epoch milliseconds), and for a write made by another program the
//! change stream event it came from in `source`.

use futures_util::TryStreamExt;
use mongodb::ClientSession;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::{ReadConcern, ReadPreference, SelectionCriteria};

use super::mapping::document_to_object;
use super::{MongoStore, bson_i64};
use crate::{Change, Operation, StoreError};

/// `_id` of the counter document holding the last handed-out cursor.
pub const CURSOR_COUNTER: &str = "changeCursor";

/// `_id` of the document holding the newest pruned cursor.
const PRUNED_THROUGH: &str = "prunedThrough";

/// Builds a change record.
pub fn change_record(
    cursor: i64,
    collection: &str,
    operation: Operation,
    identifier: &str,
    document: Option<Document>,
    srv_modified: i64,
    recorded_at: i64,
) -> Document {
    let mut record = doc! {
        "_id": cursor,
        "collection": collection,
        "operation": operation.event_name(),
        "identifier": identifier,
    };
    if let Some(document) = document {
        record.insert("document", document);
    }
    record.insert("srvModified", srv_modified);
    record.insert("recordedAt", recorded_at);
    record
}

/// Reads a change record.
pub fn change_from_record(record: &Document) -> Result<Change, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("change record without {what}"));
    let cursor = record
        .get("_id")
        .and_then(bson_i64)
        .ok_or_else(|| corrupt("a numeric _id"))?;
    let operation = match record.get_str("operation") {
        Ok("create") => Operation::Create,
        Ok("update") => Operation::Update,
        Ok("delete") => Operation::Delete,
        _ => return Err(corrupt("a known operation")),
    };
    Ok(Change {
        cursor,
        collection: record
            .get_str("collection")
            .map_err(|_| corrupt("a collection"))?
            .to_string(),
        operation,
        identifier: record
            .get_str("identifier")
            .map_err(|_| corrupt("an identifier"))?
            .to_string(),
        document: record.get_document("document").ok().map(document_to_object),
        srv_modified: record.get("srvModified").and_then(bson_i64).unwrap_or(0),
    })
}

/// Builds the filter of the changes after `cursor`, up to `through` when given, in
/// `collections` (all when empty).
pub fn changes_filter(cursor: i64, through: Option<i64>, collections: &[String]) -> Document {
    let mut range = doc! {"$gt": cursor};
    if let Some(through) = through {
        range.insert("$lte", through);
    }
    let mut filter = doc! {"_id": range};
    if !collections.is_empty() {
        filter.insert("collection", doc! {"$in": collections});
    }
    filter
}

impl MongoStore {
    /// Returns up to `limit` changes after `cursor` in `collections` (all when empty),
    /// in cursor order.
    ///
    /// On a replica set only changes up to the head are returned. The head moves only
    /// to cursors committed with majority write concern, so no change that a failover
    /// could roll back is handed out. The read itself goes to the primary with local
    /// read concern, which sees every commit up to the head at once (a majority read
    /// might lag behind it, and the watcher would then move past unseen changes).
    pub async fn changes_after(
        &self,
        cursor: i64,
        collections: Vec<String>,
        limit: u32,
    ) -> Result<Vec<Change>, StoreError> {
        let through = self.inner.transactions.then(|| self.head());
        let changes = self.inner.changes();
        let records: Vec<Document> = changes
            .find(changes_filter(cursor, through, &collections))
            .sort(doc! {"_id": 1})
            .limit(i64::from(limit))
            .read_concern(ReadConcern::local())
            .selection_criteria(SelectionCriteria::ReadPreference(ReadPreference::Primary))
            .await?
            .try_collect()
            .await?;
        records.iter().map(change_from_record).collect()
    }

    /// Returns the newest cursor whose change was pruned (0 when none was).
    pub async fn pruned_through(&self) -> Result<i64, StoreError> {
        let marker = self
            .inner
            .meta()
            .find_one(doc! {"_id": PRUNED_THROUGH})
            .await?;
        Ok(marker
            .and_then(|marker| marker.get("value").and_then(bson_i64))
            .unwrap_or(0))
    }

    /// Deletes change records recorded before `recorded_before` (epoch ms) and those
    /// beyond the newest `keep_count`; returns how many were deleted.
    ///
    /// The pruned cursor is raised before the records go, so a watcher that reads in
    /// between gets the history-lost error instead of silently skipping records.
    pub async fn prune_changes(
        &self,
        recorded_before: i64,
        keep_count: u64,
    ) -> Result<usize, StoreError> {
        let _write = self.inner.begin_write()?;

        // 1. The newest record that is too old or beyond the count.
        let head = self.latest_cursor().await?;
        let keep_from = head.saturating_sub(i64::try_from(keep_count).unwrap_or(i64::MAX));
        let newest_pruned = self
            .inner
            .changes()
            .find_one(doc! {"$or": [
                {"recordedAt": {"$lt": recorded_before}},
                {"_id": {"$lte": keep_from}},
            ]})
            .sort(doc! {"_id": -1})
            .projection(doc! {"_id": 1})
            .await?;
        let Some(through) = newest_pruned.and_then(|record| record.get("_id").and_then(bson_i64))
        else {
            return Ok(0);
        };

        // 2. Raise the marker, then delete.
        self.inner
            .meta()
            .update_one(
                doc! {"_id": PRUNED_THROUGH},
                doc! {"$max": {"value": through}},
            )
            .upsert(true)
            .await?;
        let deleted = self
            .inner
            .changes()
            .delete_many(doc! {"_id": {"$lte": through}})
            .await?;
        Ok(usize::try_from(deleted.deleted_count).unwrap_or(usize::MAX))
    }

    /// Returns the newest committed cursor: the largest record `_id`, or the pruned
    /// cursor when every record was pruned. On a replica set it reads with majority
    /// read concern, because the head must never pass a change a failover could undo.
    pub(super) async fn latest_cursor(&self) -> Result<i64, StoreError> {
        let read_concern = if self.inner.transactions {
            ReadConcern::majority()
        } else {
            ReadConcern::local()
        };
        let newest = self
            .inner
            .changes()
            .find_one(doc! {})
            .sort(doc! {"_id": -1})
            .projection(doc! {"_id": 1})
            .read_concern(read_concern)
            .await?
            .and_then(|record| record.get("_id").and_then(bson_i64))
            .unwrap_or(0);
        Ok(newest.max(self.pruned_through().await?))
    }

    /// Takes the next cursor from the counter document. Inside a transaction this
    /// write also locks the counter until commit, which orders concurrent writers.
    pub(super) async fn next_cursor(&self, session: &mut ClientSession) -> Result<i64, StoreError> {
        let counter = self
            .inner
            .meta()
            .find_one_and_update(
                doc! {"_id": CURSOR_COUNTER},
                doc! {"$inc": {"value": 1_i64}},
            )
            .upsert(true)
            .return_document(mongodb::options::ReturnDocument::After)
            .session(&mut *session)
            .await?;
        counter
            .and_then(|counter| counter.get("value").and_then(bson_i64))
            .ok_or_else(|| StoreError::Corrupt("change cursor counter has no numeric value".into()))
    }

    /// Inserts a change record in the session's transaction.
    pub(super) async fn insert_change(
        &self,
        session: &mut ClientSession,
        record: Document,
    ) -> Result<(), mongodb::error::Error> {
        self.inner
            .changes()
            .insert_one(record)
            .session(&mut *session)
            .await
            .map(|_| ())
    }
}

/// Reads the `source` a foreign change record keeps: the event's resume token.
pub fn source_of(token: &Bson) -> Bson {
    match token {
        Bson::Document(document) => document
            .get("_data")
            .cloned()
            .unwrap_or_else(|| token.clone()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn change_record_round_trip() {
        let record = change_record(
            7,
            "entries",
            Operation::Create,
            "abc",
            Some(doc! {"identifier": "abc", "sgv": 120, "srvModified": 1_525_383_610_088_i64}),
            1_525_383_610_088,
            1_525_383_610_090,
        );
        assert_eq!(
            record,
            doc! {
                "_id": 7_i64,
                "collection": "entries",
                "operation": "create",
                "identifier": "abc",
                "document": {"identifier": "abc", "sgv": 120, "srvModified": 1_525_383_610_088_i64},
                "srvModified": 1_525_383_610_088_i64,
                "recordedAt": 1_525_383_610_090_i64,
            }
        );

        let change = change_from_record(&record).unwrap();
        assert_eq!(change.cursor, 7);
        assert_eq!(change.collection, "entries");
        assert_eq!(change.operation, Operation::Create);
        assert_eq!(change.identifier, "abc");
        assert_eq!(
            change.document.map(serde_json::Value::Object),
            Some(json!({"identifier": "abc", "sgv": 120, "srvModified": 1_525_383_610_088_i64}))
        );
        assert_eq!(change.srv_modified, 1_525_383_610_088);
    }

    #[test]
    fn delete_record_has_no_document() {
        let record = change_record(8, "treatments", Operation::Delete, "abc", None, 5, 6);
        assert!(!record.contains_key("document"));
        let change = change_from_record(&record).unwrap();
        assert_eq!(change.operation, Operation::Delete);
        assert_eq!(change.document, None);
    }

    #[test]
    fn corrupt_records_are_rejected() {
        let cases = [
            doc! {"collection": "entries", "operation": "create", "identifier": "a"},
            doc! {"_id": 1, "collection": "entries", "operation": "upsert", "identifier": "a"},
            doc! {"_id": 1, "operation": "create", "identifier": "a"},
            doc! {"_id": 1, "collection": "entries", "operation": "create"},
        ];
        for record in cases {
            assert!(
                matches!(change_from_record(&record), Err(StoreError::Corrupt(_))),
                "{record}"
            );
        }
    }

    #[test]
    fn changes_filter_by_cursor_and_collections() {
        assert_eq!(changes_filter(5, None, &[]), doc! {"_id": {"$gt": 5_i64}});
        assert_eq!(
            changes_filter(5, Some(9), &[]),
            doc! {"_id": {"$gt": 5_i64, "$lte": 9_i64}}
        );
        assert_eq!(
            changes_filter(5, None, &["entries".to_string(), "treatments".to_string()]),
            doc! {"_id": {"$gt": 5_i64}, "collection": {"$in": ["entries", "treatments"]}}
        );
    }

    #[test]
    fn source_is_token_data() {
        let token = Bson::Document(doc! {"_data": "8263A1"});
        assert_eq!(source_of(&token), Bson::String("8263A1".into()));
        let other = Bson::Document(doc! {"other": 1});
        assert_eq!(source_of(&other), other);
    }
}
