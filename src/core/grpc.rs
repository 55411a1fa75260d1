//! The `Storage` gRPC service: translates messages to the APIv3 operations and
//! their outcomes back, nothing more.

use std::collections::HashMap;
use std::sync::Arc;

use nightjar_apiv3::{ApiError, Collection};
use serde_json::Value;
use tonic::{Request, Response, Status};
use tracing::debug;

use super::Core;
use super::auth::{ACTIONS, permission, read_permission};
use super::documents::{ReadOutcome, WriteOutcome};
use crate::proto::storage_server::Storage;
use crate::proto::{self, *};

/// Implements `nightjar.storage.v1.Storage`.
pub struct StorageService {
    core: Arc<Core>,
}

impl StorageService {
    /// Wraps the shared core state.
    pub fn new(core: Arc<Core>) -> StorageService {
        StorageService { core }
    }
}

type GrpcResult<T> = Result<Response<T>, Status>;

fn status(error: ApiError) -> Status {
    proto::status_from_api_error(&error)
}

/// Parses a collection name; unknown names are 404 `Bad operation or collection`.
fn collection(name: &str) -> Result<Collection, Status> {
    Collection::parse(name).ok_or_else(|| status(ApiError::bad_collection()))
}

/// Parses JSON document bytes; anything unparsable is 400 `Bad or missing request body`.
fn json(bytes: &[u8]) -> Result<Value, Status> {
    serde_json::from_slice(bytes).map_err(|_| status(ApiError::bad_body()))
}

fn fields(fields: &[String]) -> Option<&[String]> {
    (!fields.is_empty()).then_some(fields)
}

fn write_response(outcome: WriteOutcome) -> WriteResponse {
    WriteResponse {
        inserted: outcome.inserted,
        identifier: outcome.identifier,
        last_modified: outcome.last_modified,
        deduplicated: outcome.deduplicated,
        deduplicated_identifier: outcome.deduplicated_identifier,
    }
}

fn documents_response(documents: Vec<serde_json::Map<String, Value>>) -> DocumentsResponse {
    let max_last_modified = documents
        .iter()
        .filter_map(|d| d.get("srvModified").and_then(Value::as_i64))
        .max()
        .unwrap_or(0);
    let array = Value::Array(documents.into_iter().map(Value::Object).collect());
    DocumentsResponse {
        documents: array.to_string().into_bytes(),
        max_last_modified,
    }
}

impl StorageService {
    fn version(&self) -> VersionResponse {
        VersionResponse {
            version: super::NIGHTSCOUT_VERSION.into(),
            api_version: super::API_VERSION.into(),
            server_time: nightjar_store::sqlite::now_ms(),
            storage: self.core.store().engine_name().into(),
            storage_version: self.core.store().engine_version(),
            nightjar_version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

#[tonic::async_trait]
impl Storage for StorageService {
    async fn create(&self, request: Request<CreateRequest>) -> GrpcResult<WriteResponse> {
        let caller = self
            .core
            .auth
            .authenticate(request.metadata())
            .await
            .map_err(status)?;
        let message = request.into_inner();
        let collection = collection(&message.collection)?;
        let body = json(&message.document)?;
        let outcome = self
            .core
            .documents
            .create(&caller, collection, body)
            .await
            .map_err(status)?;
        debug!(%collection, identifier = outcome.identifier, inserted = outcome.inserted, "create");
        Ok(Response::new(write_response(outcome)))
    }

    async fn read(&self, request: Request<ReadRequest>) -> GrpcResult<ReadResponse> {
        let caller = self
            .core
            .auth
            .authenticate(request.metadata())
            .await
            .map_err(status)?;
        let message = request.into_inner();
        let collection = collection(&message.collection)?;
        let outcome = self
            .core
            .documents
            .read(
                &caller,
                collection,
                &message.identifier,
                fields(&message.fields),
                message.if_modified_since,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(match outcome {
            ReadOutcome::Found(document, last_modified) => ReadResponse {
                document: Value::Object(document).to_string().into_bytes(),
                last_modified,
                not_modified: false,
            },
            ReadOutcome::NotModified(last_modified) => ReadResponse {
                document: Vec::new(),
                last_modified,
                not_modified: true,
            },
        }))
    }

    async fn update(&self, request: Request<UpdateRequest>) -> GrpcResult<WriteResponse> {
        let caller = self
            .core
            .auth
            .authenticate(request.metadata())
            .await
            .map_err(status)?;
        let message = request.into_inner();
        let collection = collection(&message.collection)?;
        let body = json(&message.document)?;
        let outcome = self
            .core
            .documents
            .update(
                &caller,
                collection,
                &message.identifier,
                body,
                message.if_unmodified_since,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(write_response(outcome)))
    }

    async fn patch(&self, request: Request<PatchRequest>) -> GrpcResult<WriteResponse> {
        let caller = self
            .core
            .auth
            .authenticate(request.metadata())
            .await
            .map_err(status)?;
        let message = request.into_inner();
        let collection = collection(&message.collection)?;
        let body = json(&message.patch)?;
        let outcome = self
            .core
            .documents
            .patch(
                &caller,
                collection,
                &message.identifier,
                body,
                message.if_unmodified_since,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(write_response(outcome)))
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> GrpcResult<WriteResponse> {
        let caller = self
            .core
            .auth
            .authenticate(request.metadata())
            .await
            .map_err(status)?;
        let message = request.into_inner();
        let collection = collection(&message.collection)?;
        let outcome = self
            .core
            .documents
            .delete(&caller, collection, &message.identifier, message.permanent)
            .await
            .map_err(status)?;
        Ok(Response::new(write_response(outcome)))
    }

    async fn search(&self, request: Request<SearchRequest>) -> GrpcResult<DocumentsResponse> {
        let caller = self
            .core
            .auth
            .authenticate(request.metadata())
            .await
            .map_err(status)?;
        let message = request.into_inner();
        let collection = collection(&message.collection)?;
        let params = search_params(&message);
        let documents = self
            .core
            .documents
            .search(&caller, collection, &params)
            .await
            .map_err(status)?;
        Ok(Response::new(documents_response(documents)))
    }

    async fn history(&self, request: Request<HistoryRequest>) -> GrpcResult<DocumentsResponse> {
        let caller = self
            .core
            .auth
            .authenticate(request.metadata())
            .await
            .map_err(status)?;
        let message = request.into_inner();
        let collection = collection(&message.collection)?;
        let documents = self
            .core
            .documents
            .history(
                &caller,
                collection,
                message.last_modified,
                message.inclusive,
                message.limit,
                fields(&message.fields),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(documents_response(documents)))
    }

    async fn last_modified(
        &self,
        request: Request<LastModifiedRequest>,
    ) -> GrpcResult<LastModifiedResponse> {
        let caller = self
            .core
            .auth
            .authenticate(request.metadata())
            .await
            .map_err(status)?;
        let mut collections = HashMap::new();
        for collection in Collection::ALL {
            if !caller.can(&read_permission(collection)) {
                continue;
            }
            let times = self
                .core
                .store()
                .collection_times(collection.name())
                .await
                .map_err(|err| status(super::documents::store_error(err)))?;
            let Some(times) = times else { continue };
            let created_at = times
                .created_at
                .as_deref()
                .and_then(nightjar_apiv3::date::parse_timestamp_text);
            let latest = [times.srv_modified, times.date, created_at]
                .into_iter()
                .flatten()
                .max();
            if let Some(latest) = latest {
                collections.insert(collection.name().to_string(), latest);
            }
        }
        Ok(Response::new(LastModifiedResponse {
            server_time: nightjar_store::sqlite::now_ms(),
            collections,
        }))
    }

    async fn status(&self, request: Request<StatusRequest>) -> GrpcResult<StatusResponse> {
        let caller = self
            .core
            .auth
            .authenticate(request.metadata())
            .await
            .map_err(status)?;
        let api_permissions = Collection::ALL
            .into_iter()
            .map(|collection| {
                let letters: String = ACTIONS
                    .iter()
                    .filter(|(action, _)| caller.can(&permission(collection, action)))
                    .map(|(_, letter)| *letter)
                    .collect();
                (collection.name().to_string(), letters)
            })
            .filter(|(_, letters)| !letters.is_empty())
            .collect();
        Ok(Response::new(StatusResponse {
            version: Some(self.version()),
            api_permissions,
        }))
    }

    async fn version(&self, _request: Request<VersionRequest>) -> GrpcResult<VersionResponse> {
        Ok(Response::new(self.version()))
    }

    async fn authorize(&self, request: Request<AuthorizeRequest>) -> GrpcResult<AuthorizeResponse> {
        let (metadata, _, message) = request.into_parts();
        let Some(principal) = self
            .core
            .auth
            .authenticate_access_token(&message.access_token, &metadata)
            .await
        else {
            return Err(status(ApiError::new(
                nightjar_apiv3::ErrorKind::Unauthorized,
                "Missing or bad accessToken",
            )));
        };
        let requested: Vec<Collection> = if message.collections.is_empty() {
            Collection::ALL.to_vec()
        } else {
            message
                .collections
                .iter()
                .filter_map(|name| Collection::parse(name))
                .collect()
        };
        let mut collections: Vec<String> = Vec::new();
        for collection in requested {
            let name = collection.name().to_string();
            if principal.can(&read_permission(collection)) && !collections.contains(&name) {
                collections.push(name);
            }
        }
        Ok(Response::new(AuthorizeResponse {
            subject: principal.subject.as_deref().unwrap_or_default().to_string(),
            collections,
        }))
    }

    type WatchChangesStream = super::watch::ChangeStream;

    async fn watch_changes(
        &self,
        request: Request<WatchChangesRequest>,
    ) -> GrpcResult<Self::WatchChangesStream> {
        let caller = self
            .core
            .auth
            .authenticate(request.metadata())
            .await
            .map_err(status)?;
        let peer = super::auth::client_ip(request.metadata());
        let (credential, _, message) = request.into_parts();
        let stream =
            super::watch::open(self.core.clone(), &caller, message, peer, credential).await?;
        Ok(Response::new(stream))
    }

    type WatchGrantsStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<GrantsChanged, Status>> + Send + 'static>,
    >;

    async fn watch_grants(
        &self,
        request: Request<WatchGrantsRequest>,
    ) -> GrpcResult<Self::WatchGrantsStream> {
        let caller = self
            .core
            .auth
            .authenticate(request.metadata())
            .await
            .map_err(status)?;
        if !caller.can(super::auth::WATCH_PERMISSION) && !caller.can("admin:api:subjects:read") {
            return Err(status(ApiError::missing_permission(
                "admin:api:subjects:read",
            )));
        }
        let generation = self.core.auth.watch_generation();
        let shutdown = self.core.shutdown.clone();
        let stream = futures::stream::unfold((generation, true), move |(mut generation, first)| {
            let mut shutdown = shutdown.clone();
            async move {
                if !first {
                    tokio::select! {
                        changed = generation.changed() => changed.ok()?,
                        _ = shutdown.changed() => return None,
                    }
                }
                let value = *generation.borrow_and_update();
                Some((Ok(GrantsChanged { generation: value }), (generation, false)))
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_cursor(
        &self,
        request: Request<GetCursorRequest>,
    ) -> GrpcResult<GetCursorResponse> {
        self.core
            .auth
            .authenticate(request.metadata())
            .await
            .map_err(status)?;
        let oldest = self
            .core
            .store()
            .pruned_through()
            .await
            .map_err(|err| status(super::documents::store_error(err)))?;
        Ok(Response::new(GetCursorResponse {
            cursor: self.core.store().head().to_string(),
            oldest_cursor: oldest.to_string(),
        }))
    }
}

/// Rebuilds the URL query pairs of a search so core parses them with the APIv3 rules.
fn search_params(message: &SearchRequest) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = message
        .filters
        .iter()
        .map(|f| {
            let key = if f.operator.is_empty() || f.operator == "eq" {
                f.field.clone()
            } else {
                format!("{}${}", f.field, f.operator)
            };
            (key, f.value.clone())
        })
        .collect();
    if !message.sort.is_empty() {
        let key = if message.sort_descending {
            "sort$desc"
        } else {
            "sort"
        };
        params.push((key.into(), message.sort.clone()));
    }
    if let Some(limit) = message.limit {
        params.push(("limit".into(), limit.to_string()));
    }
    if let Some(skip) = message.skip {
        params.push(("skip".into(), skip.to_string()));
    }
    if !message.fields.is_empty() {
        params.push(("fields".into(), message.fields.join(",")));
    }
    params
}
