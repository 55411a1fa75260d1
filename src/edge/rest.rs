//! REST `/api/v3`: thin handlers that translate HTTP to the core's gRPC calls and
//! their results back to APIv3 replies.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nightjar_apiv3::format::{self, OutputFormat};
use nightjar_apiv3::{ApiError, ErrorKind};
use serde_json::{Map, Value, json};

use super::Edge;
use super::reply::{
    ApiPath, error_reply, header_date, http_date, json_reply, status_reply, to_core,
};
use crate::proto::*;

type Shared = State<Arc<Edge>>;
type Peer = ConnectInfo<SocketAddr>;

/// Returns the `/api/v3` routes.
pub fn routes() -> Router<Arc<Edge>> {
    Router::new()
        .route("/api/v3/swagger.json", get(openapi))
        .route("/api/v3/version", get(version))
        .route("/api/v3/status", get(status))
        .route("/api/v3/lastModified", get(last_modified))
        .route("/api/v3/test", get(test))
        .route("/api/v3/{collection}", get(search).post(create))
        .route("/api/v3/{collection}/history", get(history))
        .route("/api/v3/{collection}/history/{since}", get(history_since))
        .route(
            "/api/v3/{collection}/{identifier}",
            get(read).put(update).patch(patch).delete(delete),
        )
}

/// Splits the query string into ordered, percent-decoded pairs.
fn query_pairs(raw: &Option<String>) -> Vec<(String, String)> {
    raw.as_deref().map(form_pairs).unwrap_or_default()
}

fn form_pairs(query: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query).unwrap_or_default()
}

fn query_value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Splits a known format extension off a path segment: `entries.csv` → (`entries`, Csv).
fn split_extension(segment: &str) -> (&str, Option<OutputFormat>) {
    if let Some((name, extension)) = segment.rsplit_once('.')
        && let Some(format) = OutputFormat::from_extension(extension)
    {
        return (name, Some(format));
    }
    (segment, None)
}

/// Picks the output format: the extension wins, then the Accept header.
fn output_format(
    extension: Option<OutputFormat>,
    headers: &HeaderMap,
) -> Result<OutputFormat, ApiError> {
    match extension {
        Some(format) => Ok(format),
        None => {
            OutputFormat::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()))
        }
    }
}

/// Reads the body up to the configured limit. Larger bodies get 413. Bodies that
/// cannot be read, such as a broken chunked encoding or fewer bytes than
/// `Content-Length`, get 400.
async fn body_bytes(edge: &Edge, headers: &HeaderMap, body: Body) -> Result<Vec<u8>, Response> {
    let too_large = || {
        error_reply(&ApiError::new(
            ErrorKind::PayloadTooLarge,
            "Request body too large",
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > edge.max_body_bytes) {
        return Err(too_large());
    }
    match axum::body::to_bytes(body, edge.max_body_bytes).await {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(err) => {
            let cause = err.into_inner();
            if cause.is::<http_body_util::LengthLimitError>() {
                Err(too_large())
            } else {
                tracing::debug!(cause = %cause, "request body cannot be read");
                Err(error_reply(&ApiError::new(
                    ErrorKind::BadRequest,
                    "Request body cannot be read",
                )))
            }
        }
    }
}

fn document_reply(format: OutputFormat, status: u16, result: Value) -> Response {
    match (format, &result) {
        (OutputFormat::Json, _) => json_reply(status, json!({ "result": result })),
        (OutputFormat::Csv, Value::Array(items)) => text_reply(
            "text/csv; charset=utf-8",
            format::render_csv(&objects(items)),
        ),
        (OutputFormat::Csv, Value::Object(item)) => text_reply(
            "text/csv; charset=utf-8",
            format::render_csv(std::slice::from_ref(item)),
        ),
        (OutputFormat::Xml, Value::Array(items)) => text_reply(
            "application/xml; charset=utf-8",
            format::render_xml_items(&objects(items)),
        ),
        (OutputFormat::Xml, Value::Object(item)) => text_reply(
            "application/xml; charset=utf-8",
            format::render_xml_item(item),
        ),
        _ => json_reply(status, json!({ "result": result })),
    }
}

fn objects(items: &[Value]) -> Vec<Map<String, Value>> {
    items
        .iter()
        .filter_map(|v| v.as_object().cloned())
        .collect()
}

fn text_reply(content_type: &'static str, text: String) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], text).into_response()
}

fn with_header(mut response: Response, name: header::HeaderName, value: HeaderValue) -> Response {
    response.headers_mut().insert(name, value);
    response
}

// A ready reply as the error keeps the handlers short; its size does not matter here.
#[allow(clippy::result_large_err)]
fn collection_or_404(name: &str) -> Result<(), Response> {
    match nightjar_apiv3::Collection::parse(name) {
        Some(_) => Ok(()),
        None => Err(error_reply(&ApiError::bad_collection())),
    }
}

/// Builds a 200 reply from core's JSON (a document or an array of them): JSON
/// replies wrap the bytes as they are, CSV and XML parse them to render.
fn raw_or_rendered(format: OutputFormat, json: Vec<u8>) -> Response {
    if format != OutputFormat::Json {
        return match parse_json_array(&json) {
            Ok(result) => document_reply(format, 200, result),
            Err(response) => response,
        };
    }
    let mut body = Vec::with_capacity(json.len() + 24);
    body.extend_from_slice(b"{\"status\":200,\"result\":");
    body.extend_from_slice(&json);
    body.push(b'}');
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Parses the JSON array core returned; a failure is a 500, never an empty result.
#[allow(clippy::result_large_err)]
fn parse_json_array(bytes: &[u8]) -> Result<Value, Response> {
    serde_json::from_slice(bytes).map_err(|err| {
        tracing::error!(cause = %err, bytes = bytes.len(), "core returned documents that cannot be parsed");
        error_reply(&ApiError::internal())
    })
}

fn fields_param(pairs: &[(String, String)]) -> Vec<String> {
    match query_value(pairs, "fields") {
        None | Some("_all") | Some("") => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|f| f.trim().to_string())
            .filter(|f| !f.is_empty())
            .collect(),
    }
}

/// OpenAPI 3 description of these routes; `tests/openapi.rs` checks it against them.
const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Replies to paths no route matches: APIv3's 404 under `/api/v3`, a plain 404 elsewhere.
pub async fn unknown(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/v3") {
        error_reply(&ApiError::bad_collection())
    } else {
        error_reply(&ApiError::new(ErrorKind::NotFound, "Not found"))
    }
}

/// Replies to a known path requested with a method it does not support; the
/// router adds the `Allow` header.
pub async fn wrong_method() -> Response {
    json_reply(405, json!({ "message": "Method not allowed" }))
}

async fn version(State(edge): Shared, headers: HeaderMap, ConnectInfo(peer): Peer) -> Response {
    let request = to_core(VersionRequest {}, &headers, None, peer);
    match edge.storage.clone().version(request).await {
        Ok(reply) => json_reply(200, json!({ "result": version_json(&reply.into_inner()) })),
        Err(status) => status_reply(&status),
    }
}

fn version_json(version: &VersionResponse) -> Value {
    json!({
        "version": version.version,
        "apiVersion": version.api_version,
        "srvDate": version.server_time,
        "storage": { "storage": version.storage, "version": version.storage_version },
        "nightjarVersion": version.nightjar_version,
    })
}

async fn status(
    State(edge): Shared,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ConnectInfo(peer): Peer,
) -> Response {
    let pairs = query_pairs(&raw);
    let request = to_core(
        StatusRequest {},
        &headers,
        query_value(&pairs, "token"),
        peer,
    );
    match edge.storage.clone().status(request).await {
        Ok(reply) => {
            let reply = reply.into_inner();
            let version = reply.version.unwrap_or_default();
            let mut result = version_json(&version);
            let permissions: Map<String, Value> = reply
                .api_permissions
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            result["apiPermissions"] = Value::Object(permissions);
            json_reply(200, json!({ "result": result }))
        }
        Err(status) => status_reply(&status),
    }
}

async fn last_modified(
    State(edge): Shared,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ConnectInfo(peer): Peer,
) -> Response {
    let pairs = query_pairs(&raw);
    let request = to_core(
        LastModifiedRequest {},
        &headers,
        query_value(&pairs, "token"),
        peer,
    );
    match edge.storage.clone().last_modified(request).await {
        Ok(reply) => {
            let reply = reply.into_inner();
            let collections: Map<String, Value> = reply
                .collections
                .into_iter()
                .map(|(k, v)| (k, v.into()))
                .collect();
            json_reply(
                200,
                json!({ "result": { "srvDate": reply.server_time, "collections": collections } }),
            )
        }
        Err(status) => status_reply(&status),
    }
}

/// `GET /api/v3/test`: a development aid that exists only when `CI` is set; it
/// authenticates and demands `api:entries:read`.
async fn test(
    State(edge): Shared,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ConnectInfo(peer): Peer,
) -> Response {
    if !edge.test_route {
        return error_reply(&ApiError::bad_collection());
    }
    let pairs = query_pairs(&raw);
    let filter = Filter {
        field: "identifier".into(),
        operator: "eq".into(),
        value: "'-'".into(),
    };
    let message = SearchRequest {
        collection: "entries".into(),
        filters: vec![filter],
        limit: Some(1),
        ..Default::default()
    };
    let request = to_core(message, &headers, query_value(&pairs, "token"), peer);
    match edge.storage.clone().search(request).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(status) => status_reply(&status),
    }
}

async fn create(
    State(edge): Shared,
    ApiPath(collection): ApiPath<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ConnectInfo(peer): Peer,
    body: Body,
) -> Response {
    if let Err(reply) = collection_or_404(&collection) {
        return reply;
    }
    let document = match body_bytes(&edge, &headers, body).await {
        Ok(bytes) => bytes,
        Err(reply) => return reply,
    };
    let pairs = query_pairs(&raw);
    let request = to_core(
        CreateRequest {
            collection: collection.clone(),
            document,
        },
        &headers,
        query_value(&pairs, "token"),
        peer,
    );
    match edge.storage.clone().create(request).await {
        Ok(reply) => write_reply(&collection, reply.into_inner()),
        Err(status) => status_reply(&status),
    }
}

/// Builds the reply of create and of a PUT that inserted a document.
fn write_reply(collection: &str, outcome: WriteResponse) -> Response {
    let mut fields =
        json!({ "identifier": outcome.identifier, "lastModified": outcome.last_modified });
    let status = if outcome.inserted { 201 } else { 200 };
    if outcome.deduplicated {
        fields["isDeduplication"] = true.into();
        if let Some(previous) = &outcome.deduplicated_identifier {
            fields["deduplicatedIdentifier"] = previous.clone().into();
        }
    }
    let response = json_reply(status, fields);
    let identifier = percent_encoding::utf8_percent_encode(&outcome.identifier, PATH_SEGMENT);
    let location = format!("/api/v3/{collection}/{identifier}");
    let response = match HeaderValue::from_str(&location) {
        Ok(value) => with_header(response, header::LOCATION, value),
        Err(_) => response,
    };
    with_header(
        response,
        header::LAST_MODIFIED,
        http_date(outcome.last_modified),
    )
}

async fn read(
    State(edge): Shared,
    ApiPath((collection, identifier)): ApiPath<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ConnectInfo(peer): Peer,
) -> Response {
    if let Err(reply) = collection_or_404(&collection) {
        return reply;
    }
    let (identifier, extension) = split_extension(&identifier);
    let format = match output_format(extension, &headers) {
        Ok(format) => format,
        Err(error) => return error_reply(&error),
    };
    let pairs = query_pairs(&raw);
    let message = ReadRequest {
        collection,
        identifier: identifier.to_string(),
        fields: fields_param(&pairs),
        if_modified_since: header_date(&headers, header::IF_MODIFIED_SINCE),
    };
    let request = to_core(message, &headers, query_value(&pairs, "token"), peer);
    match edge.storage.clone().read(request).await {
        Ok(reply) => {
            let reply = reply.into_inner();
            if reply.not_modified {
                return with_header(
                    StatusCode::NOT_MODIFIED.into_response(),
                    header::LAST_MODIFIED,
                    http_date(reply.last_modified),
                );
            }
            with_header(
                raw_or_rendered(format, reply.document),
                header::LAST_MODIFIED,
                http_date(reply.last_modified),
            )
        }
        Err(status) => status_reply(&status),
    }
}

async fn update(
    State(edge): Shared,
    ApiPath((collection, identifier)): ApiPath<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ConnectInfo(peer): Peer,
    body: Body,
) -> Response {
    if let Err(reply) = collection_or_404(&collection) {
        return reply;
    }
    let document = match body_bytes(&edge, &headers, body).await {
        Ok(bytes) => bytes,
        Err(reply) => return reply,
    };
    let pairs = query_pairs(&raw);
    let message = UpdateRequest {
        collection: collection.clone(),
        identifier,
        document,
        if_unmodified_since: header_date(&headers, header::IF_UNMODIFIED_SINCE),
    };
    let request = to_core(message, &headers, query_value(&pairs, "token"), peer);
    match edge.storage.clone().update(request).await {
        Ok(reply) => {
            let reply = reply.into_inner();
            if reply.inserted {
                write_reply(&collection, reply)
            } else {
                let response = json_reply(200, json!({ "lastModified": reply.last_modified }));
                with_header(
                    response,
                    header::LAST_MODIFIED,
                    http_date(reply.last_modified),
                )
            }
        }
        Err(status) => status_reply(&status),
    }
}

async fn patch(
    State(edge): Shared,
    ApiPath((collection, identifier)): ApiPath<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ConnectInfo(peer): Peer,
    body: Body,
) -> Response {
    if let Err(reply) = collection_or_404(&collection) {
        return reply;
    }
    let patch = match body_bytes(&edge, &headers, body).await {
        Ok(bytes) => bytes,
        Err(reply) => return reply,
    };
    let pairs = query_pairs(&raw);
    let message = PatchRequest {
        collection,
        identifier,
        patch,
        if_unmodified_since: header_date(&headers, header::IF_UNMODIFIED_SINCE),
    };
    let request = to_core(message, &headers, query_value(&pairs, "token"), peer);
    match edge.storage.clone().patch(request).await {
        Ok(reply) => with_header(
            json_reply(200, json!({})),
            header::LAST_MODIFIED,
            http_date(reply.into_inner().last_modified),
        ),
        Err(status) => status_reply(&status),
    }
}

async fn delete(
    State(edge): Shared,
    ApiPath((collection, identifier)): ApiPath<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ConnectInfo(peer): Peer,
) -> Response {
    if let Err(reply) = collection_or_404(&collection) {
        return reply;
    }
    let pairs = query_pairs(&raw);
    let permanent = query_value(&pairs, "permanent") == Some("true");
    let message = DeleteRequest {
        collection,
        identifier,
        permanent,
    };
    let request = to_core(message, &headers, query_value(&pairs, "token"), peer);
    match edge.storage.clone().delete(request).await {
        Ok(_) => json_reply(200, json!({})),
        Err(status) => status_reply(&status),
    }
}

/// Characters escaped in a path segment: controls, space, and the URL delimiters.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Query names that are not filters.
const RESERVED: [&str; 7] = [
    "token",
    "sort",
    "sort$desc",
    "limit",
    "skip",
    "fields",
    "now",
];

async fn search(
    State(edge): Shared,
    ApiPath(collection): ApiPath<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ConnectInfo(peer): Peer,
) -> Response {
    let (collection, extension) = split_extension(&collection);
    if let Err(reply) = collection_or_404(collection) {
        return reply;
    }
    let format = match output_format(extension, &headers) {
        Ok(format) => format,
        Err(error) => return error_reply(&error),
    };
    let pairs = query_pairs(&raw);
    let message = match search_request(collection, &pairs) {
        Ok(message) => message,
        Err(error) => return error_reply(&error),
    };
    let request = to_core(message, &headers, query_value(&pairs, "token"), peer);
    match edge.storage.clone().search(request).await {
        Ok(reply) => raw_or_rendered(format, reply.into_inner().documents),
        Err(status) => status_reply(&status),
    }
}

/// Splits the query into filters and the reserved parameters; limit and skip must be integers.
fn search_request(collection: &str, pairs: &[(String, String)]) -> Result<SearchRequest, ApiError> {
    let sort = query_value(pairs, "sort");
    let sort_desc = query_value(pairs, "sort$desc");
    if sort.is_some() && sort_desc.is_some() {
        return Err(ApiError::bad_request(
            "Parameters sort and sort_desc cannot be combined",
        ));
    }
    let limit = integer_param(pairs, "limit", "Parameter limit out of tolerance")?;
    let skip = integer_param(pairs, "skip", "Parameter skip out of tolerance")?;
    let mut filters = Vec::new();
    for (key, value) in pairs
        .iter()
        .filter(|(key, _)| !RESERVED.contains(&key.as_str()))
    {
        let (field, operator) = key.split_once('$').unwrap_or((key.as_str(), "eq"));
        // `date$=1` names an empty operator; core would read an empty one as eq.
        if operator.is_empty() {
            return Err(ApiError::unsupported_operator(operator));
        }
        filters.push(Filter {
            field: field.to_string(),
            operator: operator.to_string(),
            value: value.clone(),
        });
    }
    Ok(SearchRequest {
        collection: collection.to_string(),
        filters,
        sort: sort.or(sort_desc).unwrap_or_default().to_string(),
        sort_descending: sort_desc.is_some(),
        limit,
        skip,
        fields: fields_param(pairs),
    })
}

fn integer_param(
    pairs: &[(String, String)],
    name: &str,
    message: &str,
) -> Result<Option<i64>, ApiError> {
    match query_value(pairs, name) {
        None => Ok(None),
        Some(text) => text
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ApiError::bad_request(message)),
    }
}

async fn history(
    state: Shared,
    ApiPath(collection): ApiPath<String>,
    headers: HeaderMap,
    raw: RawQuery,
    peer: Peer,
) -> Response {
    // The header form is inclusive and floored to whole seconds.
    let since = header_date(&headers, header::LAST_MODIFIED).map(|ms| ms - ms.rem_euclid(1000));
    history_reply(state, collection, None, since, true, headers, raw, peer).await
}

async fn history_since(
    state: Shared,
    ApiPath((collection, since)): ApiPath<(String, String)>,
    headers: HeaderMap,
    raw: RawQuery,
    peer: Peer,
) -> Response {
    let (since, extension) = split_extension(&since);
    let since = nightjar_apiv3::date::parse_timestamp_text(since);
    history_reply(
        state, collection, extension, since, false, headers, raw, peer,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn history_reply(
    State(edge): Shared,
    collection: String,
    extension: Option<OutputFormat>,
    since: Option<i64>,
    inclusive: bool,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ConnectInfo(peer): Peer,
) -> Response {
    if let Err(reply) = collection_or_404(&collection) {
        return reply;
    }
    let format = match output_format(extension, &headers) {
        Ok(format) => format,
        Err(error) => return error_reply(&error),
    };
    let Some(since) = since else {
        return error_reply(&ApiError::bad_request(
            "Bad or missing Last-Modified header/parameter",
        ));
    };
    let pairs = query_pairs(&raw);
    let limit = match integer_param(&pairs, "limit", "Parameter limit out of tolerance") {
        Ok(limit) => limit,
        Err(error) => return error_reply(&error),
    };
    let message = HistoryRequest {
        collection,
        last_modified: since,
        inclusive,
        limit,
        fields: fields_param(&pairs),
    };
    let request = to_core(message, &headers, query_value(&pairs, "token"), peer);
    match edge.storage.clone().history(request).await {
        Ok(reply) => {
            let reply = reply.into_inner();
            let mut response = raw_or_rendered(format, reply.documents);
            if reply.max_last_modified > 0 {
                response = with_header(
                    response,
                    header::LAST_MODIFIED,
                    http_date(reply.max_last_modified),
                );
                if let Ok(etag) =
                    HeaderValue::from_str(&format!("W/\"{}\"", reply.max_last_modified))
                {
                    response = with_header(response, header::ETAG, etag);
                }
            }
            response
        }
        Err(status) => status_reply(&status),
    }
}
