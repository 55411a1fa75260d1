//! Writes: find the document a lookup addresses, let the plan decide, apply the action
//! and record the change, in one transaction where the server has them.
//!
//! The first step of every write increments the change cursor counter. In a
//! transaction that write locks the counter until commit. A concurrent writer on
//! another replica therefore fails at that step with a transient write conflict,
//! before its plan has run, and retries after this commit. So cursors are handed out
//! in commit order, and srvModified (the larger of the clock and the previous value
//! plus one, read inside the same transaction) increases strictly per collection.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mongodb::ClientSession;
use mongodb::Collection;
use mongodb::bson::{Document, doc};
use mongodb::error::{TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT};
use mongodb::options::{ReadConcern, ReadPreference, SelectionCriteria, WriteConcern};
use serde_json::{Map, Value};
use tracing::{debug, warn};

use super::mapping::{FoundDocument, body_to_document, found_document};
use super::{MongoStore, bson_i64, feed, query};
use crate::{Lookup, Operation, StoreError, WriteAction, WriteContext};

/// How long a write keeps retrying transient transaction errors.
const RETRY_FOR: Duration = Duration::from_secs(10);

/// How often a commit whose outcome is unknown is retried.
const COMMIT_ATTEMPTS: u32 = 5;

/// A plan's decision, kept so a retried transaction applies it again without running
/// the plan twice.
struct Decision<T> {
    /// The stored document the plan saw, as stored; a retry applies the decision only
    /// when it finds the same.
    seen: Option<Document>,
    /// The srvModified handed to the plan.
    srv_modified: i64,
    /// Action to apply.
    action: WriteAction,
    /// Value the plan returns to the caller.
    value: T,
}

/// The state a write carries across transaction attempts.
struct Attempt<F, T> {
    /// The plan, until it has run.
    plan: Option<F>,
    /// Its decision, once it has run.
    decision: Option<Decision<T>>,
}

/// Operation, identifier and document of an applied write, for its change record.
struct Applied {
    operation: Operation,
    identifier: String,
    document: Option<Document>,
}

/// `_id` prefix of the per-collection srvModified counters in `nightjar_meta`.
const SRV_MODIFIED_COUNTER: &str = "srvModified.";

impl MongoStore {
    /// Runs `plan` on the document that `lookup` finds in `collection`, applies the
    /// action it returns together with its change record, and returns the plan's value
    /// once the write is committed (with majority write concern on replica sets).
    ///
    /// A plan that returns an error writes nothing. The plan runs once; when a
    /// transient error forces another attempt and the document or the srvModified
    /// floor changed meanwhile, the write fails with [`StoreError::Conflict`].
    pub async fn write<T, F>(
        &self,
        collection: &str,
        lookup: Lookup,
        plan: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(WriteContext) -> Result<(WriteAction, T), nightjar_apiv3::ApiError>
            + Send
            + 'static,
    {
        let _write = self.inner.begin_write()?;
        let target = self.data_collection(collection)?;
        let _serial = self.inner.write_lock.lock().await;

        let mut attempt = Attempt {
            plan: Some(plan),
            decision: None,
        };
        let started = Instant::now();
        let mut retries = 0_u32;
        loop {
            match self
                .write_once(collection, &target, &lookup, &mut attempt)
                .await
            {
                Ok(cursor) => {
                    if let Some(cursor) = cursor {
                        self.inner.advance_head(cursor);
                    }
                    let decision = attempt.decision.ok_or_else(|| {
                        StoreError::Corrupt("write finished without a decision".into())
                    })?;
                    return Ok(decision.value);
                }
                Err(err) if is_transient(&err) && started.elapsed() < RETRY_FOR => {
                    retries += 1;
                    debug!(collection, retries, cause = %err, "retrying write transaction");
                    tokio::time::sleep(backoff(retries)).await;
                }
                Err(err) => {
                    if retries > 0 {
                        warn!(collection, retries, cause = %err, "write failed after retries");
                    }
                    return Err(err);
                }
            }
        }
    }

    /// Runs one attempt; returns the change cursor, or `None` when the plan wrote nothing.
    async fn write_once<F, T>(
        &self,
        collection: &str,
        target: &Collection<Document>,
        lookup: &Lookup,
        attempt: &mut Attempt<F, T>,
    ) -> Result<Option<i64>, StoreError>
    where
        F: FnOnce(WriteContext) -> Result<(WriteAction, T), nightjar_apiv3::ApiError>,
    {
        let mut session = self.inner.client.start_session().await?;
        if self.inner.transactions {
            session
                .start_transaction()
                .read_concern(ReadConcern::snapshot())
                .write_concern(WriteConcern::majority())
                .selection_criteria(SelectionCriteria::ReadPreference(ReadPreference::Primary))
                .await?;
        }

        let outcome = self
            .write_steps(&mut session, collection, target, lookup, attempt)
            .await;
        if !self.inner.transactions {
            return outcome;
        }
        match outcome {
            Ok(Some(cursor)) => {
                commit(&mut session).await?;
                Ok(Some(cursor))
            }
            Ok(None) => {
                abort(&mut session).await;
                Ok(None)
            }
            Err(err) => {
                abort(&mut session).await;
                Err(err)
            }
        }
    }

    /// Runs the steps of one attempt, inside its transaction when there is one.
    async fn write_steps<F, T>(
        &self,
        session: &mut ClientSession,
        collection: &str,
        target: &Collection<Document>,
        lookup: &Lookup,
        attempt: &mut Attempt<F, T>,
    ) -> Result<Option<i64>, StoreError>
    where
        F: FnOnce(WriteContext) -> Result<(WriteAction, T), nightjar_apiv3::ApiError>,
    {
        // 1. The cursor first: a concurrent writer conflicts here, before any plan runs.
        let cursor = self.next_cursor(session).await?;

        // 2. The stored document and the srvModified floor.
        let found = find_for_write(session, target, lookup).await?;
        let floor = self.srv_modified_floor(session, collection, target).await?;

        // 3. Let the plan decide, or check that an earlier decision still holds.
        match &attempt.decision {
            None => {
                let plan = attempt
                    .plan
                    .take()
                    .ok_or_else(|| StoreError::Corrupt("write plan already consumed".into()))?;
                let srv_modified = now_ms().max(floor + 1);
                let (action, value) = plan(WriteContext {
                    existing: found.as_ref().map(|found| found.stored.clone()),
                    srv_modified,
                })
                .map_err(StoreError::Rejected)?;
                attempt.decision = Some(Decision {
                    seen: found.as_ref().map(|found| found.raw.clone()),
                    srv_modified,
                    action,
                    value,
                });
            }
            Some(decision) => {
                if decision.seen.as_ref() != found.as_ref().map(|found| &found.raw) {
                    return Err(StoreError::Conflict(
                        "the document changed while the write was retried".into(),
                    ));
                }
                if decision.srv_modified <= floor {
                    return Err(StoreError::Conflict(
                        "another write took a later srvModified while the write was retried".into(),
                    ));
                }
            }
        }
        let Some(decision) = attempt.decision.as_ref() else {
            return Err(StoreError::Corrupt("write has no decision".into()));
        };

        // 4. Apply the action, then advance the srvModified counter and record the change.
        let Some(applied) = apply(session, target, found.as_ref(), &decision.action).await? else {
            return Ok(None);
        };
        self.raise_srv_modified(session, collection, decision.srv_modified)
            .await?;
        let record = feed::change_record(
            cursor,
            collection,
            applied.operation,
            &applied.identifier,
            applied.document,
            decision.srv_modified,
            now_ms(),
        );
        self.insert_change(session, record).await?;
        Ok(Some(cursor))
    }

    /// Returns the largest srvModified handed out in `collection`: the counter, or a
    /// larger value written by another program.
    async fn srv_modified_floor(
        &self,
        session: &mut ClientSession,
        collection: &str,
        target: &Collection<Document>,
    ) -> Result<i64, StoreError> {
        let counter = self
            .inner
            .meta()
            .find_one(doc! {"_id": format!("{SRV_MODIFIED_COUNTER}{collection}")})
            .session(&mut *session)
            .await?
            .and_then(|counter| counter.get("value").and_then(bson_i64))
            .unwrap_or(0);
        let stored = target
            .find_one(doc! {"srvModified": {"$type": "number"}})
            .sort(doc! {"srvModified": -1})
            .projection(doc! {"srvModified": 1})
            .session(&mut *session)
            .await?
            .and_then(|document| document.get("srvModified").and_then(bson_i64))
            .unwrap_or(0);
        Ok(counter.max(stored))
    }

    async fn raise_srv_modified(
        &self,
        session: &mut ClientSession,
        collection: &str,
        srv_modified: i64,
    ) -> Result<(), StoreError> {
        self.inner
            .meta()
            .update_one(
                doc! {"_id": format!("{SRV_MODIFIED_COUNTER}{collection}")},
                doc! {"$max": {"value": srv_modified}},
            )
            .upsert(true)
            .session(&mut *session)
            .await?;
        Ok(())
    }
}

/// Finds the document a lookup addresses: by identifier (or legacy `_id`) first, then
/// by the fallback fields among documents without identifier.
async fn find_for_write(
    session: &mut ClientSession,
    target: &Collection<Document>,
    lookup: &Lookup,
) -> Result<Option<FoundDocument>, StoreError> {
    let by_identifier = target
        .find_one(query::identifier_filter(&lookup.identifier))
        .sort(doc! {"identifier": -1})
        .session(&mut *session)
        .await?;
    let raw = match (by_identifier, query::fallback_filter(&lookup.fallback)) {
        (Some(raw), _) => Some(raw),
        (None, Some(fallback)) => {
            target
                .find_one(fallback)
                .sort(doc! {"_id": 1})
                .session(&mut *session)
                .await?
        }
        (None, None) => None,
    };
    raw.map(found_document).transpose()
}

/// Writes the action; returns what its change record holds, `None` for `Nothing`.
async fn apply(
    session: &mut ClientSession,
    target: &Collection<Document>,
    found: Option<&FoundDocument>,
    action: &WriteAction,
) -> Result<Option<Applied>, StoreError> {
    let applied = match action {
        WriteAction::Nothing => return Ok(None),
        WriteAction::Insert(body) => {
            let identifier = identifier_of(body)?;
            let document = body_to_document(body, None);
            target.insert_one(&document).session(&mut *session).await?;
            Applied {
                operation: Operation::Create,
                identifier,
                document: Some(document),
            }
        }
        WriteAction::Replace { body, operation } => {
            let identifier = identifier_of(body)?;
            let document = body_to_document(body, found.map(|found| &found.raw));
            match found {
                // Replacing by `_id` keeps the database id of a legacy document.
                Some(found) => {
                    target
                        .replace_one(doc! {"_id": found.id.clone()}, &document)
                        .session(&mut *session)
                        .await?;
                }
                None => {
                    target.insert_one(&document).session(&mut *session).await?;
                }
            }
            Applied {
                operation: *operation,
                identifier,
                document: (*operation != Operation::Delete).then_some(document),
            }
        }
        WriteAction::Remove => {
            let found = found
                .ok_or_else(|| StoreError::Corrupt("remove without a found document".into()))?;
            target
                .delete_one(doc! {"_id": found.id.clone()})
                .session(&mut *session)
                .await?;
            Applied {
                operation: Operation::Delete,
                identifier: found.stored.key.clone(),
                document: None,
            }
        }
    };
    Ok(Some(applied))
}

fn identifier_of(body: &Map<String, Value>) -> Result<String, StoreError> {
    match body.get("identifier") {
        Some(Value::String(identifier)) if !identifier.is_empty() => Ok(identifier.clone()),
        _ => Err(StoreError::Corrupt(
            "document to write has no identifier".into(),
        )),
    }
}

/// Commits, retrying while the outcome is unknown (a commit is safe to repeat).
pub(super) async fn commit(session: &mut ClientSession) -> Result<(), StoreError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match session.commit_transaction().await {
            Ok(()) => return Ok(()),
            Err(err)
                if err.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
                    && attempts < COMMIT_ATTEMPTS =>
            {
                debug!(attempts, cause = %err, "retrying commit with unknown outcome");
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// Aborts the transaction; a failure only means the server already dropped it.
pub(super) async fn abort(session: &mut ClientSession) {
    if let Err(err) = session.abort_transaction().await {
        debug!(cause = %err, "aborting transaction failed; the server discards it on its own");
    }
}

/// Returns whether the whole transaction may be retried.
pub(super) fn is_transient(err: &StoreError) -> bool {
    matches!(err, StoreError::Mongo(err) if err.contains_label(TRANSIENT_TRANSACTION_ERROR))
}

/// Returns the wait before retry `retries`: growing from 5 ms to 200 ms, with jitter
/// so that writers on different replicas do not retry in step.
pub(super) fn backoff(retries: u32) -> Duration {
    let base = 5_u64.saturating_mul(u64::from(retries)).min(200);
    let jitter = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::from(elapsed.subsec_nanos()) % (base + 1))
        .unwrap_or(0);
    Duration::from_millis(base + jitter)
}

/// Returns the wall clock in epoch milliseconds.
pub(super) fn now_ms() -> i64 {
    crate::sqlite::now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert!(backoff(1) <= Duration::from_millis(10));
        assert!(backoff(100) >= Duration::from_millis(200));
        assert!(backoff(100) <= Duration::from_millis(400));
        assert!(backoff(u32::MAX) <= Duration::from_millis(400));
    }

    #[test]
    fn identifier_required_to_write() {
        let mut body = Map::new();
        assert!(identifier_of(&body).is_err());
        body.insert("identifier".into(), Value::String(String::new()));
        assert!(identifier_of(&body).is_err());
        body.insert("identifier".into(), Value::String("abc".into()));
        assert_eq!(identifier_of(&body).unwrap(), "abc");
    }

    #[test]
    fn only_transaction_labels_are_transient() {
        assert!(!is_transient(&StoreError::Conflict("x".into())));
        assert!(!is_transient(&StoreError::Closed));
    }
}
