//! The APIv3 document operations: every rule of create, read, update, patch,
//! delete, search and history, applied on top of the store.

use std::sync::Arc;

use nightjar_apiv3::search::{self, SearchQuery};
use nightjar_apiv3::{ApiError, Collection, date, identifier, server_fields, validation};
use nightjar_auth::Principal;
use nightjar_store::{
    Lookup, Operation, Store, StoreError, StoredDocument, WriteAction, WriteContext,
};
use serde_json::{Map, Value};
use tracing::{error, warn};

use super::auth::{permission, read_permission, require};

/// Rule switches that come from configuration.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Largest `limit` of search and history.
    pub max_limit: u32,
    /// Deduplicate by fallback fields for documents without identifier.
    pub dedup_fallback: bool,
    /// Take the date from `created_at` when `date` is missing.
    pub created_at_fallback: bool,
}

/// The outcome of a write, as REST and gRPC report it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteOutcome {
    /// True when a new document was inserted.
    pub inserted: bool,
    /// Identifier of the written document.
    pub identifier: String,
    /// srvModified of the written document.
    pub last_modified: i64,
    /// True when create replaced a duplicate.
    pub deduplicated: bool,
    /// The duplicate's identifier when it differed.
    pub deduplicated_identifier: Option<String>,
}

/// A document read by identifier.
#[derive(Debug, Clone)]
pub enum ReadOutcome {
    /// The document (projected) and its srvModified.
    Found(Map<String, Value>, i64),
    /// The document is not newer than If-Modified-Since.
    NotModified(i64),
}

/// The APIv3 operations over one store.
#[derive(Clone)]
pub struct Documents {
    /// The store.
    pub store: Store,
    /// Configured rule switches.
    pub rules: Arc<Rules>,
}

impl Documents {
    /// Creates a document, or replaces its duplicate.
    pub async fn create(
        &self,
        caller: &Principal,
        collection: Collection,
        body: Value,
    ) -> Result<WriteOutcome, ApiError> {
        // 1. Shape the document as the client meant it.
        let mut document = client_document(&body)?;
        if let Err(date_error) =
            date::normalize_dates(&mut document, self.rules.created_at_fallback)
        {
            // APIv3 reports a malformed identifier before a bad date.
            identifier::resolve_identifier(&mut document)?;
            return Err(date_error);
        }
        let identifier = identifier::resolve_identifier(&mut document)?;
        validation::validate_document(&document)?;
        if collection == Collection::Treatments {
            server_fields::set_treatment_end(&mut document, None);
        }

        // 2. Decide between insert and replace inside the write transaction.
        let lookup = Lookup {
            identifier: identifier.clone(),
            fallback: self.fallback_keys(collection, &document),
        };
        let caller = caller.clone();
        self.write(collection, lookup, move |context: WriteContext| {
            let srv_modified = context.srv_modified;
            match context.existing {
                None => {
                    require(&caller, &permission(collection, "create"))?;
                    document.insert("srvCreated".into(), srv_modified.into());
                    stamp(&mut document, &caller, srv_modified);
                    let outcome = WriteOutcome { inserted: true, identifier, last_modified: srv_modified, ..Default::default() };
                    Ok((WriteAction::Insert(document), outcome))
                }
                Some(existing) => {
                    require(&caller, &permission(collection, "update"))?;
                    check_writable(&existing)?;
                    if existing.is_valid() {
                        validation::check_immutable(&existing.body, &document, true)?;
                    }
                    let (srv_created, _) = shown_times(collection, &existing);
                    document.insert("srvCreated".into(), srv_created.into());
                    stamp(&mut document, &caller, srv_modified);
                    let deduplicated_identifier = (existing.key != identifier).then(|| existing.key.clone());
                    if let Some(previous) = &deduplicated_identifier {
                        warn!(%collection, identifier, previous, "create replaced a duplicate stored under another identifier");
                    }
                    let outcome = WriteOutcome {
                        inserted: false,
                        identifier,
                        last_modified: srv_modified,
                        deduplicated: true,
                        deduplicated_identifier,
                    };
                    Ok((WriteAction::Replace { body: document, operation: Operation::Update }, outcome))
                }
            }
        })
        .await
    }

    /// Reads one document; 404 when unknown, 410 when soft-deleted.
    pub async fn read(
        &self,
        caller: &Principal,
        collection: Collection,
        identifier: &str,
        fields: Option<&[String]>,
        if_modified_since: Option<i64>,
    ) -> Result<ReadOutcome, ApiError> {
        require(caller, &permission(collection, "read"))?;
        let stored = self
            .store
            .find(collection.name(), identifier)
            .await
            .map_err(store_error)?;
        let Some(stored) = stored else {
            return Err(ApiError::not_found());
        };
        if !stored.is_valid() {
            return Err(ApiError::gone());
        }

        let document = readable(collection, stored);
        let last_modified = document
            .get("srvModified")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if let Some(since) = if_modified_since
            && last_modified / 1000 <= since / 1000
        {
            return Ok(ReadOutcome::NotModified(last_modified));
        }
        Ok(ReadOutcome::Found(
            search::project(&document, fields),
            last_modified,
        ))
    }

    /// Replaces a whole document (PUT), inserting it when the identifier is unknown.
    pub async fn update(
        &self,
        caller: &Principal,
        collection: Collection,
        identifier: &str,
        body: Value,
        if_unmodified_since: Option<i64>,
    ) -> Result<WriteOutcome, ApiError> {
        // 1. The URL's identifier wins over the body's.
        let mut document = client_document(&body)?;
        document.insert("identifier".into(), identifier.into());
        date::normalize_dates(&mut document, self.rules.created_at_fallback)?;
        validation::validate_document(&document)?;
        if collection == Collection::Treatments {
            server_fields::set_treatment_end(&mut document, None);
        }

        // 2. Insert or replace.
        let identifier = identifier.to_string();
        let caller = caller.clone();
        self.write(
            collection,
            Lookup::by_identifier(identifier.clone()),
            move |context: WriteContext| {
                let srv_modified = context.srv_modified;
                let Some(existing) = context.existing else {
                    require(&caller, &permission(collection, "create"))?;
                    document.insert("srvCreated".into(), srv_modified.into());
                    stamp(&mut document, &caller, srv_modified);
                    let outcome = WriteOutcome {
                        inserted: true,
                        identifier,
                        last_modified: srv_modified,
                        ..Default::default()
                    };
                    return Ok((WriteAction::Insert(document), outcome));
                };
                require(&caller, &permission(collection, "update"))?;
                let (srv_created, stored_modified) = shown_times(collection, &existing);
                check_modifiable(&existing, stored_modified, if_unmodified_since)?;
                validation::check_immutable(&existing.body, &document, false)?;
                document.insert("srvCreated".into(), srv_created.into());
                stamp(&mut document, &caller, srv_modified);
                let outcome = WriteOutcome {
                    identifier,
                    last_modified: srv_modified,
                    ..Default::default()
                };
                Ok((
                    WriteAction::Replace {
                        body: document,
                        operation: Operation::Update,
                    },
                    outcome,
                ))
            },
        )
        .await
    }

    /// Merges fields into a stored document (PATCH).
    pub async fn patch(
        &self,
        caller: &Principal,
        collection: Collection,
        identifier: &str,
        body: Value,
        if_unmodified_since: Option<i64>,
    ) -> Result<WriteOutcome, ApiError> {
        require(caller, &permission(collection, "update"))?;
        let patch = client_document(&body)?;

        let identifier = identifier.to_string();
        let caller = caller.clone();
        self.write(
            collection,
            Lookup::by_identifier(identifier.clone()),
            move |context: WriteContext| {
                let Some(existing) = context.existing else {
                    return Err(ApiError::not_found());
                };
                let (_, stored_modified) = shown_times(collection, &existing);
                check_modifiable(&existing, stored_modified, if_unmodified_since)?;
                // APIv3 checks immutable fields before the values of the others.
                validation::check_immutable(&existing.body, &patch, false)?;
                validation::validate_patch(&patch)?;

                let mut patch = patch;
                if collection == Collection::Treatments {
                    server_fields::set_treatment_end(&mut patch, Some(&existing.body));
                }
                let mut merged = existing.body.clone();
                for (field, value) in patch {
                    merged.insert(field, value);
                }
                merged.insert("srvModified".into(), context.srv_modified.into());
                if let Some(name) = caller.subject.as_deref() {
                    merged.insert("modifiedBy".into(), name.into());
                }
                merged
                    .entry("identifier")
                    .or_insert_with(|| existing.key.clone().into());
                let outcome = WriteOutcome {
                    identifier,
                    last_modified: context.srv_modified,
                    ..Default::default()
                };
                Ok((
                    WriteAction::Replace {
                        body: merged,
                        operation: Operation::Update,
                    },
                    outcome,
                ))
            },
        )
        .await
    }

    /// Deletes a document: soft (isValid false) unless `permanent`.
    pub async fn delete(
        &self,
        caller: &Principal,
        collection: Collection,
        identifier: &str,
        permanent: bool,
    ) -> Result<WriteOutcome, ApiError> {
        require(caller, &permission(collection, "delete"))?;
        let identifier = identifier.to_string();
        let caller = caller.clone();
        self.write(
            collection,
            Lookup::by_identifier(identifier.clone()),
            move |context: WriteContext| {
                let Some(existing) = context.existing else {
                    return Err(ApiError::not_found());
                };
                check_writable(&existing)?;
                let outcome = WriteOutcome {
                    identifier,
                    last_modified: context.srv_modified,
                    ..Default::default()
                };
                if permanent {
                    return Ok((WriteAction::Remove, outcome));
                }
                let mut body = existing.body.clone();
                body.insert("isValid".into(), false.into());
                body.insert("srvModified".into(), context.srv_modified.into());
                if let Some(name) = caller.subject.as_deref() {
                    body.insert("modifiedBy".into(), name.into());
                }
                body.entry("identifier")
                    .or_insert_with(|| existing.key.clone().into());
                Ok((
                    WriteAction::Replace {
                        body,
                        operation: Operation::Delete,
                    },
                    outcome,
                ))
            },
        )
        .await
    }

    /// Searches valid documents; `params` are the query pairs as a URL carries them.
    pub async fn search(
        &self,
        caller: &Principal,
        collection: Collection,
        params: &[(String, String)],
    ) -> Result<Vec<Map<String, Value>>, ApiError> {
        require(caller, &read_permission(collection))?;
        check_filter_size(params)?;
        let query: SearchQuery = search::parse_search(params, self.rules.max_limit)?;
        let stored = self
            .store
            .search(collection.name(), &query)
            .await
            .map_err(store_error)?;
        Ok(stored
            .into_iter()
            .map(|doc| search::project(&readable(collection, doc), query.fields.as_deref()))
            .collect())
    }

    /// Lists documents modified after `since` (or at it when `inclusive`), soft-deleted
    /// ones included, by srvModified ascending.
    pub async fn history(
        &self,
        caller: &Principal,
        collection: Collection,
        since: i64,
        inclusive: bool,
        limit: Option<i64>,
        fields: Option<&[String]>,
    ) -> Result<Vec<Map<String, Value>>, ApiError> {
        require(caller, &read_permission(collection))?;
        let limit = match limit {
            None => self.rules.max_limit,
            Some(n) if n >= 1 && n <= i64::from(self.rules.max_limit) => n as u32,
            Some(_) => return Err(ApiError::bad_request("Parameter limit out of tolerance")),
        };
        let stored = self
            .store
            .history(collection.name(), since, inclusive, limit)
            .await
            .map_err(store_error)?;
        Ok(stored
            .into_iter()
            .map(|doc| search::project(&readable(collection, doc), fields))
            .collect())
    }

    fn fallback_keys(
        &self,
        collection: Collection,
        document: &Map<String, Value>,
    ) -> Vec<(String, Value)> {
        if !self.rules.dedup_fallback {
            return Vec::new();
        }
        let fields = collection.dedup_fallback_fields();
        let values: Vec<(String, Value)> = fields
            .iter()
            .filter_map(|field| {
                document
                    .get(*field)
                    .map(|value| (field.to_string(), value.clone()))
            })
            .collect();
        if values.is_empty() || values.len() < fields.len() {
            Vec::new()
        } else {
            values
        }
    }

    async fn write<T, F>(
        &self,
        collection: Collection,
        lookup: Lookup,
        plan: F,
    ) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(WriteContext) -> Result<(WriteAction, T), ApiError> + Send + 'static,
    {
        let started = std::time::Instant::now();
        let result = self.store.write(collection.name(), lookup, plan).await;
        crate::metrics::METRICS
            .store_write_latency
            .with_label_values(&[collection.name()])
            .observe(started.elapsed().as_secs_f64());
        result.map_err(store_error)
    }
}

/// Checks a request body and drops `_id`: the database id is never the client's
/// to set, and documents never expose it.
fn client_document(body: &Value) -> Result<Map<String, Value>, ApiError> {
    let mut document = validation::check_body(body)?.clone();
    document.remove("_id");
    if document.is_empty() {
        return Err(ApiError::bad_body());
    }
    Ok(document)
}

/// Most filter values one search may carry (`in` and `nin` items count one each);
/// bounds the size of the statement the store builds.
pub const MAX_FILTER_VALUES: usize = 256;

fn check_filter_size(params: &[(String, String)]) -> Result<(), ApiError> {
    let values: usize = params
        .iter()
        .map(|(_, value)| value.split('|').count())
        .sum();
    if values > MAX_FILTER_VALUES {
        return Err(ApiError::bad_request(format!(
            "Too many filter values: {values}, at most {MAX_FILTER_VALUES}"
        )));
    }
    Ok(())
}

/// Returns the document as reads show it: server dates filled in, identifier present.
pub fn readable(collection: Collection, stored: StoredDocument) -> Map<String, Value> {
    let mut document = stored.body;
    document
        .entry("identifier")
        .or_insert(Value::String(stored.key));
    server_fields::fill_server_dates(collection, &mut document);
    document
}

/// Sets srvModified and the writing subject.
fn stamp(document: &mut Map<String, Value>, caller: &Principal, srv_modified: i64) {
    document.insert("srvModified".into(), srv_modified.into());
    if let Some(name) = caller.subject.as_deref() {
        document.insert("subject".into(), name.into());
    }
}

/// Returns (srvCreated, srvModified) of a stored document as reads show them,
/// with the fallbacks applied when the stored body lacks them.
fn shown_times(collection: Collection, existing: &StoredDocument) -> (i64, i64) {
    let shown = readable(collection, existing.clone());
    let time = |field: &str| shown.get(field).and_then(Value::as_i64).unwrap_or(0);
    (time("srvCreated"), time("srvModified"))
}

fn check_writable(existing: &StoredDocument) -> Result<(), ApiError> {
    if validation::is_read_only(&existing.body) {
        Err(ApiError::read_only())
    } else {
        Ok(())
    }
}

/// Runs the checks PUT and PATCH share: 410, 422, then 412.
fn check_modifiable(
    existing: &StoredDocument,
    stored_modified: i64,
    if_unmodified_since: Option<i64>,
) -> Result<(), ApiError> {
    if !existing.is_valid() {
        return Err(ApiError::gone());
    }
    check_writable(existing)?;
    if let Some(since) = if_unmodified_since
        && stored_modified / 1000 > since / 1000
    {
        return Err(ApiError::precondition_failed());
    }
    Ok(())
}

/// Maps a storage failure to its APIv3 error, logging unexpected ones once here.
pub fn store_error(err: StoreError) -> ApiError {
    match err {
        StoreError::Rejected(api) => api,
        StoreError::Closed => ApiError::new(
            nightjar_apiv3::ErrorKind::Unavailable,
            "Storage service unavailable",
        ),
        StoreError::Conflict(reason) => {
            warn!(cause = %reason, "write conflicted with a concurrent write");
            ApiError::new(
                nightjar_apiv3::ErrorKind::Unavailable,
                "Storage service unavailable",
            )
        }
        other => {
            error!(cause = %other, "storage operation failed");
            ApiError::internal()
        }
    }
}
