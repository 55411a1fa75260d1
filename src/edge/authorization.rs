//! `/api/v2/authorization`: JWT requests and the Nightscout-compatible admin
//! endpoints for subjects and roles.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::routing::{delete, get};
use nightjar_apiv3::{ApiError, ErrorKind};
use serde_json::{Value, json};
use tonic::metadata::MetadataValue;

use super::Edge;
use super::reply::{ApiPath, error_reply, json_reply, status_reply, to_core};

/// Replies to a failed admin call: every refusal is 401, as Nightscout replies on
/// these endpoints; other failures keep their status.
fn admin_failure(status: &tonic::Status) -> Response {
    let error = crate::proto::api_error_from_status(status);
    match error.kind {
        ErrorKind::Unauthorized | ErrorKind::Forbidden => {
            error_reply(&ApiError::new(ErrorKind::Unauthorized, error.message))
        }
        _ => error_reply(&error),
    }
}
use crate::proto::*;

type Shared = State<Arc<Edge>>;
type Peer = ConnectInfo<SocketAddr>;

/// Returns the `/api/v2/authorization` routes.
pub fn routes() -> Router<Arc<Edge>> {
    Router::new()
        .route(
            "/api/v2/authorization/request/{access_token}",
            get(request_jwt),
        )
        .route(
            "/api/v2/authorization/subjects",
            get(list_subjects).post(save_subject).put(save_subject),
        )
        .route(
            "/api/v2/authorization/subjects/{id}",
            delete(delete_subject),
        )
        .route(
            "/api/v2/authorization/roles",
            get(list_roles).post(save_role).put(save_role),
        )
        .route("/api/v2/authorization/roles/{id}", delete(delete_role))
        .route(
            "/api/v2/authorization/permissions",
            get(list_seen_permissions),
        )
        .route(
            "/api/v2/authorization/debug/check/{permission}",
            get(check_permission),
        )
}

/// Wraps `message` for an admin call: the caller's credential plus `api-secret`.
fn admin_request<T>(message: T, headers: &HeaderMap, peer: SocketAddr) -> tonic::Request<T> {
    let mut request = to_core(message, headers, None, peer);
    let secret = headers.get("api-secret").and_then(|v| v.to_str().ok());
    let secret = secret.map(|s| {
        if s.len() <= 256 {
            s
        } else {
            "oversized-secret"
        }
    });
    if let Some(value) = secret.and_then(|s| MetadataValue::try_from(s).ok()) {
        request.metadata_mut().insert("api-secret", value);
    }
    request
}

async fn request_jwt(
    State(edge): Shared,
    ApiPath(access_token): ApiPath<String>,
    headers: HeaderMap,
    ConnectInfo(peer): Peer,
) -> Response {
    let request = to_core(RequestJwtRequest { access_token }, &headers, None, peer);
    match edge.admin.clone().request_jwt(request).await {
        Ok(reply) => {
            let reply = reply.into_inner();
            let groups: Vec<Value> = reply
                .permission_groups
                .into_iter()
                .map(|g| json!(g.permissions))
                .collect();
            let body = json!({ "token": reply.token, "sub": reply.sub, "permissionGroups": groups, "iat": reply.iat, "exp": reply.exp });
            plain_json(body)
        }
        Err(status) => status_reply(&status),
    }
}

/// Reads a JSON object body for the admin endpoints.
async fn object_body(edge: &Edge, body: Body) -> Result<serde_json::Map<String, Value>, Response> {
    let bytes = axum::body::to_bytes(body, edge.max_body_bytes.min(1024 * 1024))
        .await
        .map_err(|_| error_reply(&ApiError::bad_body()))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) if !map.is_empty() => Ok(map),
        _ => Err(error_reply(&ApiError::bad_body())),
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(text)) => text
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        _ => Vec::new(),
    }
}

fn text(value: Option<&Value>) -> String {
    value
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn subject_json(subject: &Subject) -> Value {
    json!({
        "_id": subject.id,
        "name": subject.name,
        "roles": subject.roles,
        "notes": subject.notes,
        "created_at": subject.created_at,
        "accessToken": subject.access_token,
    })
}

fn role_json(role: &Role) -> Value {
    json!({
        "_id": role.id,
        "name": role.name,
        "permissions": role.permissions,
        "notes": role.notes,
        "created_at": role.created_at,
    })
}

async fn list_subjects(
    State(edge): Shared,
    headers: HeaderMap,
    ConnectInfo(peer): Peer,
) -> Response {
    match edge
        .admin
        .clone()
        .list_subjects(admin_request(ListSubjectsRequest {}, &headers, peer))
        .await
    {
        Ok(reply) => plain_json(Value::Array(
            reply
                .into_inner()
                .subjects
                .iter()
                .map(subject_json)
                .collect(),
        )),
        Err(status) => admin_failure(&status),
    }
}

async fn save_subject(
    State(edge): Shared,
    method: Method,
    headers: HeaderMap,
    ConnectInfo(peer): Peer,
    body: Body,
) -> Response {
    let body = match object_body(&edge, body).await {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let subject = Subject {
        id: text(body.get("_id")),
        name: text(body.get("name")),
        roles: strings(body.get("roles")),
        notes: text(body.get("notes")),
        created_at: text(body.get("created_at")),
        access_token: String::new(),
    };
    let request = admin_request(
        SaveSubjectRequest {
            subject: Some(subject),
            must_create: method == Method::POST,
        },
        &headers,
        peer,
    );
    match edge.admin.clone().save_subject(request).await {
        Ok(reply) => plain_json(subject_json(
            &reply.into_inner().subject.unwrap_or_default(),
        )),
        Err(status) => admin_failure(&status),
    }
}

async fn delete_subject(
    State(edge): Shared,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ConnectInfo(peer): Peer,
) -> Response {
    match edge
        .admin
        .clone()
        .delete_subject(admin_request(DeleteByIdRequest { id }, &headers, peer))
        .await
    {
        Ok(reply) if reply.get_ref().deleted => json_reply(200, json!({})),
        Ok(_) => error_reply(&ApiError::not_found()),
        Err(status) => admin_failure(&status),
    }
}

async fn list_roles(State(edge): Shared, headers: HeaderMap, ConnectInfo(peer): Peer) -> Response {
    match edge
        .admin
        .clone()
        .list_roles(admin_request(ListRolesRequest {}, &headers, peer))
        .await
    {
        Ok(reply) => plain_json(Value::Array(
            reply.into_inner().roles.iter().map(role_json).collect(),
        )),
        Err(status) => admin_failure(&status),
    }
}

async fn save_role(
    State(edge): Shared,
    method: Method,
    headers: HeaderMap,
    ConnectInfo(peer): Peer,
    body: Body,
) -> Response {
    let body = match object_body(&edge, body).await {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let role = Role {
        id: text(body.get("_id")),
        name: text(body.get("name")),
        permissions: strings(body.get("permissions")),
        notes: text(body.get("notes")),
        created_at: text(body.get("created_at")),
    };
    let request = admin_request(
        SaveRoleRequest {
            role: Some(role),
            must_create: method == Method::POST,
        },
        &headers,
        peer,
    );
    match edge.admin.clone().save_role(request).await {
        Ok(reply) => plain_json(role_json(&reply.into_inner().role.unwrap_or_default())),
        Err(status) => admin_failure(&status),
    }
}

async fn delete_role(
    State(edge): Shared,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ConnectInfo(peer): Peer,
) -> Response {
    match edge
        .admin
        .clone()
        .delete_role(admin_request(DeleteByIdRequest { id }, &headers, peer))
        .await
    {
        Ok(reply) if reply.get_ref().deleted => json_reply(200, json!({})),
        Ok(_) => error_reply(&ApiError::not_found()),
        Err(status) => admin_failure(&status),
    }
}

/// Builds a 200 reply with a bare JSON value, as the v2 admin endpoints send.
fn plain_json(value: Value) -> Response {
    use axum::response::IntoResponse;
    axum::Json(value).into_response()
}

/// `GET /debug/check/{permission}`: `{check: true}` when the caller's credential
/// grants the permission, 401 otherwise.
async fn check_permission(
    State(edge): Shared,
    ApiPath(permission): ApiPath<String>,
    headers: HeaderMap,
    ConnectInfo(peer): Peer,
) -> Response {
    let request = admin_request(CheckPermissionRequest { permission }, &headers, peer);
    match edge.admin.clone().check_permission(request).await {
        Ok(_) => plain_json(json!({ "check": true })),
        Err(status) => admin_failure(&status),
    }
}

/// `GET /permissions`: the permissions checked since core started.
async fn list_seen_permissions(
    State(edge): Shared,
    headers: HeaderMap,
    ConnectInfo(peer): Peer,
) -> Response {
    let request = admin_request(ListSeenPermissionsRequest {}, &headers, peer);
    match edge.admin.clone().list_seen_permissions(request).await {
        Ok(reply) => plain_json(json!(reply.into_inner().permissions)),
        Err(status) => admin_failure(&status),
    }
}
