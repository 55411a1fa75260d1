//! The change stream that follows the database on replica sets: it wakes this
//! replica's watchers when another replica records a change, and records the writes
//! that other programs (a Nightscout instance beside Nightjar, a script) make to the
//! data collections.
//!
//! Nightjar's own writes always run in transactions, so a data event without a
//! transaction number is another program's. Every replica records such a write, and
//! the unique `source` index (the event's resume token) keeps one record. The resume
//! token of the last handled event is stored with each such record and once a minute.
//! The stream resumes from it after a restart, so other programs' writes made while no
//! core was running are recorded too, as long as the oplog still contains them.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken};
use mongodb::options::{
    FullDocumentBeforeChangeType, FullDocumentType, ReadConcern, ReadPreference, SelectionCriteria,
    WriteConcern,
};
use serde_json::Value;
use tracing::{debug, info, warn};

use super::mapping::{id_key, object_to_document, stored_document};
use super::write::{abort, backoff, commit, is_transient, now_ms};
use super::{CHANGES_COLLECTION, DUPLICATE_KEY, MongoStore, bson_i64, command_code, feed};
use crate::{Operation, StoreError};

/// `_id` of the document in `nightjar_meta` holding the stream's resume token.
const RESUME_TOKEN: &str = "changeStreamResumeToken";

/// How often the resume token is stored when no foreign write stored it.
const TOKEN_SAVE_INTERVAL: Duration = Duration::from_secs(60);

/// First wait before reopening a failed stream; it doubles with each failure in a row.
const REOPEN_DELAY: Duration = Duration::from_secs(2);

/// Maximum wait before reopening a failed stream.
const MAX_REOPEN_DELAY: Duration = Duration::from_secs(60);

/// Server error codes meaning the resume token is no longer usable: the oplog no
/// longer contains it (286, 280) or it is malformed (260).
const HISTORY_LOST: [i32; 3] = [286, 280, 260];

/// How long recording one foreign write retries transient errors.
const RECORD_RETRY_FOR: Duration = Duration::from_secs(10);

/// A write by another program, ready to record.
#[derive(Debug, Clone, PartialEq)]
pub struct ForeignChange {
    /// API collection name.
    pub collection: String,
    /// What happened.
    pub operation: Operation,
    /// Identifier of the document (its `_id` for a document without one).
    pub identifier: String,
    /// The document as a read returns it; `None` for deletes.
    pub document: Option<Document>,
    /// srvModified of the change, epoch milliseconds.
    pub srv_modified: i64,
}

/// Follows the database until the task is aborted.
pub async fn follow(store: MongoStore) {
    let mut resume = match load_token(&store).await {
        Ok(token) => token,
        Err(err) => {
            warn!(cause = %err, "cannot read the stored change stream resume token; starting from now");
            None
        }
    };
    let mut failures = 0;
    loop {
        // 1. Open, from the last handled event when there is one.
        if failures > 0 {
            tokio::time::sleep(reopen_delay(failures)).await;
        }
        let mut stream = match open(&store, resume.clone()).await {
            Ok(stream) => stream,
            Err(err)
                if resume.is_some()
                    && command_code(&err).is_some_and(|code| HISTORY_LOST.contains(&code)) =>
            {
                warn!(cause = %err, "the change stream cannot resume from its stored token; writes by other programs since then are not announced");
                resume = None;
                continue;
            }
            Err(err) => {
                failures += 1;
                warn!(failures, cause = %err, "cannot open the MongoDB change stream; retrying");
                continue;
            }
        };
        failures = failures.max(1);
        info!(resumed = resume.is_some(), "following MongoDB changes");

        // Commits this replica missed while the stream was down, including those older
        // than a lost resume token, become visible to watchers now.
        match store.latest_cursor().await {
            Ok(cursor) => store.inner.advance_head(cursor),
            Err(err) => warn!(cause = %err, "cannot read the newest change cursor"),
        }

        // 2. Handle events; store the token now and then.
        let mut last_saved = Instant::now();
        loop {
            let next = tokio::time::timeout(TOKEN_SAVE_INTERVAL, stream.next()).await;
            match next {
                Ok(Some(Ok(event))) => {
                    let token = event.id.clone();
                    if let Err(err) = handle(&store, event).await {
                        failures += 1;
                        warn!(failures, cause = %err, "cannot record a change from the MongoDB change stream; reopening the stream to retry it");
                        break;
                    }
                    resume = Some(token);
                    failures = 1;
                }
                Ok(Some(Err(err))) => {
                    failures += 1;
                    warn!(failures, cause = %err, "the MongoDB change stream failed; reopening");
                    break;
                }
                Ok(None) => {
                    failures += 1;
                    warn!(failures, "the MongoDB change stream ended; reopening");
                    break;
                }
                Err(_) => {}
            }
            if let Some(token) = stream.resume_token() {
                resume = Some(token);
            }
            if last_saved.elapsed() >= TOKEN_SAVE_INTERVAL {
                if let Some(token) = &resume
                    && let Err(err) = save_token(&store, token).await
                {
                    warn!(cause = %err, "cannot store the change stream resume token");
                }
                last_saved = Instant::now();
            }
        }
    }
}

/// Returns the wait before reopening after `failures` failures in a row.
fn reopen_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    REOPEN_DELAY
        .saturating_mul(1 << doublings)
        .min(MAX_REOPEN_DELAY)
}

/// Opens the stream over the change feed and the data collections.
async fn open(
    store: &MongoStore,
    resume: Option<ResumeToken>,
) -> Result<ChangeStream<ChangeStreamEvent<Document>>, mongodb::error::Error> {
    let data: Vec<String> = store
        .inner
        .settings
        .collections
        .pairs()
        .into_iter()
        .map(|(_, name)| name.to_string())
        .collect();
    // Change records only matter when inserted; pruning deletes many at once.
    let pipeline = [doc! {"$match": {"$or": [
        {"ns.coll": CHANGES_COLLECTION, "operationType": "insert"},
        {
            "ns.coll": {"$in": data},
            "operationType": {"$in": ["insert", "update", "replace", "delete"]},
        },
    ]}}];

    let mut watch = store
        .inner
        .database
        .watch()
        .pipeline(pipeline)
        .full_document(FullDocumentType::UpdateLookup);
    if server_major(&store.inner.server_version) >= 6 {
        // Pre-images (6.0+, when enabled on the collection) give a deleted document's
        // identifier.
        watch = watch.full_document_before_change(FullDocumentBeforeChangeType::WhenAvailable);
    }
    if let Some(token) = resume {
        watch = watch.start_after(token);
    }
    watch.await
}

/// Handles one event: wakes watchers for a new change record, records a foreign write.
async fn handle(store: &MongoStore, event: ChangeStreamEvent<Document>) -> Result<(), StoreError> {
    let Some(collection) = event.ns.as_ref().and_then(|ns| ns.coll.as_deref()) else {
        return Ok(());
    };

    if collection == CHANGES_COLLECTION {
        let cursor = event
            .full_document
            .as_ref()
            .and_then(|record| record.get("_id").and_then(bson_i64));
        if let Some(cursor) = cursor {
            store.inner.advance_head(cursor);
        }
        return Ok(());
    }

    if event.txn_number.is_some() {
        // NOTE: a transactional write by another program is taken for Nightjar's own
        // and not announced.
        return Ok(());
    }
    let Some(api) = store.inner.settings.collections.api_name(collection) else {
        return Ok(());
    };
    let Some(change) = foreign_change(api, &event, now_ms()) else {
        debug!(
            collection = api,
            "skipping a change event whose document is gone"
        );
        return Ok(());
    };
    let token = bson::to_bson(&event.id)
        .map_err(|err| StoreError::Corrupt(format!("cannot encode a resume token: {err}")))?;
    if let Some(cursor) = record_foreign(store, change, token).await? {
        store.inner.advance_head(cursor);
    }
    Ok(())
}

/// Builds the change record of another program's write, or `None` when the event
/// carries no document to announce (updated, then deleted before the lookup).
pub fn foreign_change(
    api: &str,
    event: &ChangeStreamEvent<Document>,
    now: i64,
) -> Option<ForeignChange> {
    let event_time = event
        .wall_time
        .map(|instant| instant.timestamp_millis())
        .unwrap_or(now);

    if event.operation_type == OperationType::Delete {
        let id = event.document_key.as_ref()?.get("_id")?.clone();
        let identifier = match &event.full_document_before_change {
            Some(before) => stored_document(before, &id).key,
            None => id_key(&id),
        };
        return Some(ForeignChange {
            collection: api.to_string(),
            operation: Operation::Delete,
            identifier,
            document: None,
            srv_modified: event_time,
        });
    }

    let raw = event.full_document.as_ref()?;
    let id = raw.get("_id")?.clone();
    let stored = stored_document(raw, &id);
    let mut body = stored.body.clone();
    body.entry("identifier")
        .or_insert_with(|| Value::String(stored.key.clone()));
    if let Some(known) = nightjar_apiv3::Collection::parse(api) {
        nightjar_apiv3::server_fields::fill_server_dates(known, &mut body);
    }
    let srv_modified = body
        .get("srvModified")
        .and_then(Value::as_i64)
        .unwrap_or(event_time);

    let (operation, document) = match (event.operation_type.clone(), stored.is_valid()) {
        (OperationType::Insert, _) => (Operation::Create, Some(object_to_document(&body))),
        (_, true) => (Operation::Update, Some(object_to_document(&body))),
        (_, false) => (Operation::Delete, None),
    };
    Some(ForeignChange {
        collection: api.to_string(),
        operation,
        identifier: stored.key,
        document,
        srv_modified,
    })
}

/// Records a foreign write with the event's token as its unique source; returns its
/// cursor, or `None` when another replica recorded it first.
async fn record_foreign(
    store: &MongoStore,
    change: ForeignChange,
    token: Bson,
) -> Result<Option<i64>, StoreError> {
    let _write = store.inner.begin_write()?;
    let _serial = store.inner.write_lock.lock().await;
    let started = Instant::now();
    let mut retries = 0;
    loop {
        match record_once(store, &change, &token).await {
            Err(err) if is_transient(&err) && started.elapsed() < RECORD_RETRY_FOR => {
                retries += 1;
                tokio::time::sleep(backoff(retries)).await;
            }
            outcome => return outcome,
        }
    }
}

async fn record_once(
    store: &MongoStore,
    change: &ForeignChange,
    token: &Bson,
) -> Result<Option<i64>, StoreError> {
    let mut session = store.inner.client.start_session().await?;
    session
        .start_transaction()
        .read_concern(ReadConcern::snapshot())
        .write_concern(WriteConcern::majority())
        .selection_criteria(SelectionCriteria::ReadPreference(ReadPreference::Primary))
        .await?;

    let steps = async {
        let cursor = store.next_cursor(&mut session).await?;
        let mut record = feed::change_record(
            cursor,
            &change.collection,
            change.operation,
            &change.identifier,
            change.document.clone(),
            change.srv_modified,
            now_ms(),
        );
        record.insert("source", feed::source_of(token));
        if let Err(err) = store.insert_change(&mut session, record).await {
            return if command_code(&err) == Some(DUPLICATE_KEY) {
                Ok(None)
            } else {
                Err(StoreError::from(err))
            };
        }
        store
            .inner
            .meta()
            .update_one(
                doc! {"_id": RESUME_TOKEN},
                doc! {"$set": {"token": token.clone()}},
            )
            .upsert(true)
            .session(&mut session)
            .await?;
        Ok(Some(cursor))
    };
    let outcome = steps.await;

    match outcome {
        Ok(Some(cursor)) => {
            commit(&mut session).await?;
            Ok(Some(cursor))
        }
        other => {
            abort(&mut session).await;
            other
        }
    }
}

async fn load_token(store: &MongoStore) -> Result<Option<ResumeToken>, StoreError> {
    let stored = store
        .inner
        .meta()
        .find_one(doc! {"_id": RESUME_TOKEN})
        .await?;
    let Some(token) = stored.and_then(|stored| stored.get("token").cloned()) else {
        return Ok(None);
    };
    bson::from_bson(token)
        .map(Some)
        .map_err(|err| StoreError::Corrupt(format!("stored resume token: {err}")))
}

async fn save_token(store: &MongoStore, token: &ResumeToken) -> Result<(), StoreError> {
    let token = bson::to_bson(token)
        .map_err(|err| StoreError::Corrupt(format!("cannot encode a resume token: {err}")))?;
    store
        .inner
        .meta()
        .update_one(doc! {"_id": RESUME_TOKEN}, doc! {"$set": {"token": token}})
        .upsert(true)
        .await?;
    Ok(())
}

/// Returns the major version of a server version such as `7.0.5`, 0 when unreadable.
fn server_major(version: &str) -> u32 {
    version
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use mongodb::bson::oid::ObjectId;
    use mongodb::bson::{DateTime, from_document};
    use serde_json::json;

    use super::*;

    const OID: &str = "5ae9ab3a4d6f2b1a2c3d4e5f";

    fn event(fields: Document) -> ChangeStreamEvent<Document> {
        let mut event = doc! {
            "_id": {"_data": "8263A1"},
            "ns": {"db": "nightscout", "coll": "entries"},
        };
        event.extend(fields);
        from_document(event).unwrap()
    }

    #[test]
    fn foreign_insert_of_legacy_entry() {
        let oid = ObjectId::parse_str(OID).unwrap();
        let event = event(doc! {
            "operationType": "insert",
            "documentKey": {"_id": oid},
            "fullDocument": {"_id": oid, "sgv": 120, "date": 1_525_383_610_088.0, "type": "sgv"},
        });
        let change = foreign_change("entries", &event, 1).unwrap();
        assert_eq!(change.operation, Operation::Create);
        assert_eq!(change.identifier, OID);
        assert_eq!(change.srv_modified, 1_525_383_610_088);
        let document = crate::mongo::mapping::document_to_object(&change.document.unwrap());
        assert_eq!(
            Value::Object(document),
            json!({
                "sgv": 120,
                "date": 1_525_383_610_088_i64,
                "type": "sgv",
                "identifier": OID,
                "srvModified": 1_525_383_610_088_i64,
                "srvCreated": 1_525_383_610_088_i64,
            })
        );
    }

    #[test]
    fn foreign_soft_delete_is_delete() {
        let oid = ObjectId::parse_str(OID).unwrap();
        let event = event(doc! {
            "operationType": "update",
            "documentKey": {"_id": oid},
            "fullDocument": {"_id": oid, "identifier": "abc", "isValid": false, "srvModified": 5_i64},
        });
        let change = foreign_change("treatments", &event, 1).unwrap();
        assert_eq!(change.operation, Operation::Delete);
        assert_eq!(change.identifier, "abc");
        assert_eq!(change.document, None);
        assert_eq!(change.srv_modified, 5);
    }

    #[test]
    fn foreign_update_without_document_is_skipped() {
        let event = event(doc! {"operationType": "update", "documentKey": {"_id": 1}});
        assert_eq!(foreign_change("entries", &event, 1), None);
    }

    #[test]
    fn foreign_delete_uses_pre_image_identifier() {
        let oid = ObjectId::parse_str(OID).unwrap();
        let with_image = event(doc! {
            "operationType": "delete",
            "documentKey": {"_id": oid},
            "fullDocumentBeforeChange": {"_id": oid, "identifier": "abc"},
            "wallTime": DateTime::from_millis(1_525_383_610_088),
        });
        let change = foreign_change("entries", &with_image, 1).unwrap();
        assert_eq!(change.operation, Operation::Delete);
        assert_eq!(change.identifier, "abc");
        assert_eq!(change.srv_modified, 1_525_383_610_088);

        let without_image = event(doc! {"operationType": "delete", "documentKey": {"_id": oid}});
        let change = foreign_change("entries", &without_image, 7).unwrap();
        assert_eq!(change.identifier, OID);
        assert_eq!(change.srv_modified, 7);
    }

    #[test]
    fn resume_token_round_trips_through_bson() {
        let token: ResumeToken = bson::from_bson(Bson::Document(doc! {"_data": "8263A1"})).unwrap();
        let stored = bson::to_bson(&token).unwrap();
        assert_eq!(stored, Bson::Document(doc! {"_data": "8263A1"}));
        let back: ResumeToken = bson::from_bson(stored).unwrap();
        assert_eq!(back, token);
    }

    #[test]
    fn reopen_delay_doubles_to_a_minute() {
        assert_eq!(reopen_delay(1), Duration::from_secs(2));
        assert_eq!(reopen_delay(2), Duration::from_secs(4));
        assert_eq!(reopen_delay(5), Duration::from_secs(32));
        assert_eq!(reopen_delay(6), Duration::from_secs(60));
        assert_eq!(reopen_delay(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn server_major_versions() {
        assert_eq!(server_major("7.0.5"), 7);
        assert_eq!(server_major("4.4.29"), 4);
        assert_eq!(server_major("unknown"), 0);
    }
}
