//! The `Admin` gRPC service: subjects, roles and JWT issuing.

use std::sync::Arc;

use nightjar_apiv3::{ApiError, ErrorKind};
use nightjar_auth::{Role as StoredRole, Subject as StoredSubject};
use nightjar_store::AuthTable;
use tonic::{Request, Response, Status};
use tracing::info;

use super::Core;
use super::documents::store_error;
use crate::proto::admin_server::Admin;
use crate::proto::{self, *};

/// Implements `nightjar.storage.v1.Admin`.
pub struct AdminService {
    core: Arc<Core>,
}

impl AdminService {
    /// Wraps the shared core state.
    pub fn new(core: Arc<Core>) -> AdminService {
        AdminService { core }
    }

    async fn check(
        &self,
        request_metadata: &tonic::metadata::MetadataMap,
        permission: &str,
    ) -> Result<(), Status> {
        self.core
            .auth
            .authenticate_admin(request_metadata, permission)
            .await
            .map(|_| ())
            .map_err(|err| proto::status_from_api_error(&err))
    }

    fn subject_message(&self, subject: &StoredSubject) -> Subject {
        Subject {
            id: subject.id.clone(),
            name: subject.name.clone(),
            roles: subject.roles.clone(),
            notes: subject.notes.clone(),
            created_at: subject.created_at.clone(),
            access_token: nightjar_auth::access_token(&self.core.auth.secret, subject),
        }
    }

    async fn reload(&self) -> Result<(), Status> {
        self.core
            .auth
            .reload()
            .await
            .map_err(|err| proto::status_from_api_error(&store_error(err)))
    }
}

fn bad_request(message: &str) -> Status {
    proto::status_from_api_error(&ApiError::bad_request(message))
}

fn internal(err: nightjar_store::StoreError) -> Status {
    proto::status_from_api_error(&store_error(err))
}

/// Returns `id` when it is a 24-hex-digit id, a new id when empty, else fails.
fn checked_id(id: &str) -> Result<String, Status> {
    if id.is_empty() {
        Ok(nightjar_auth::new_object_id())
    } else if id.len() == 24 && id.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(bad_request(
            "Bad or missing _id field: expected 24 hexadecimal digits",
        ))
    }
}

/// Drops empty and blank names, trimming the others.
fn non_empty(names: Vec<String>) -> Vec<String> {
    names
        .into_iter()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .collect()
}

fn now_iso() -> String {
    nightjar_apiv3::date::iso_utc(nightjar_store::sqlite::now_ms())
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_subjects(
        &self,
        request: Request<ListSubjectsRequest>,
    ) -> Result<Response<ListSubjectsResponse>, Status> {
        self.check(request.metadata(), "admin:api:subjects:read")
            .await?;
        let directory = self.core.auth.directory();
        let subjects = directory
            .subjects()
            .iter()
            .map(|s| self.subject_message(s))
            .collect();
        Ok(Response::new(ListSubjectsResponse { subjects }))
    }

    async fn save_subject(
        &self,
        request: Request<SaveSubjectRequest>,
    ) -> Result<Response<SubjectResponse>, Status> {
        let action = if request
            .get_ref()
            .subject
            .as_ref()
            .is_some_and(|s| !s.id.is_empty())
        {
            "update"
        } else {
            "create"
        };
        self.check(request.metadata(), &format!("admin:api:subjects:{action}"))
            .await?;
        let message = request.into_inner();
        let subject = message.subject.unwrap_or_default();
        if subject.name.trim().is_empty() {
            return Err(bad_request("Bad or missing name field"));
        }
        let id = checked_id(&subject.id)?;
        let created_at = match self
            .core
            .auth
            .directory()
            .subjects()
            .iter()
            .find(|s| s.id == id)
        {
            Some(_) if message.must_create => {
                return Err(bad_request(&format!(
                    "Subject with _id {id} already exists"
                )));
            }
            Some(existing) => existing.created_at.clone(),
            None if subject.created_at.is_empty() => now_iso(),
            None => subject.created_at.clone(),
        };
        let stored = StoredSubject {
            id,
            name: subject.name,
            roles: non_empty(subject.roles),
            notes: subject.notes,
            created_at,
        };
        let body =
            serde_json::to_value(&stored).map_err(|err| Status::internal(err.to_string()))?;
        self.core
            .store()
            .save_auth(AuthTable::Subjects, &stored.id, &body)
            .await
            .map_err(internal)?;
        self.reload().await?;
        info!(subject = stored.name, id = stored.id, roles = ?stored.roles, "subject saved");
        Ok(Response::new(SubjectResponse {
            subject: Some(self.subject_message(&stored)),
        }))
    }

    async fn delete_subject(
        &self,
        request: Request<DeleteByIdRequest>,
    ) -> Result<Response<DeleteByIdResponse>, Status> {
        self.check(request.metadata(), "admin:api:subjects:delete")
            .await?;
        let id = request.into_inner().id;
        let deleted = self
            .core
            .store()
            .delete_auth(AuthTable::Subjects, &id)
            .await
            .map_err(internal)?;
        self.reload().await?;
        info!(id, deleted, "subject deleted");
        Ok(Response::new(DeleteByIdResponse { deleted }))
    }

    async fn list_roles(
        &self,
        request: Request<ListRolesRequest>,
    ) -> Result<Response<ListRolesResponse>, Status> {
        self.check(request.metadata(), "admin:api:roles:list")
            .await?;
        let directory = self.core.auth.directory();
        let roles = directory
            .roles()
            .iter()
            .filter(|r| !r.id.is_empty())
            .map(|r| Role {
                id: r.id.clone(),
                name: r.name.clone(),
                permissions: r.permissions.clone(),
                notes: r.notes.clone(),
                created_at: r.created_at.clone(),
            })
            .collect();
        Ok(Response::new(ListRolesResponse { roles }))
    }

    async fn save_role(
        &self,
        request: Request<SaveRoleRequest>,
    ) -> Result<Response<RoleResponse>, Status> {
        let action = if request
            .get_ref()
            .role
            .as_ref()
            .is_some_and(|r| !r.id.is_empty())
        {
            "update"
        } else {
            "create"
        };
        self.check(request.metadata(), &format!("admin:api:roles:{action}"))
            .await?;
        let message = request.into_inner();
        let role = message.role.unwrap_or_default();
        if role.name.trim().is_empty() {
            return Err(bad_request("Bad or missing name field"));
        }
        let id = checked_id(&role.id)?;
        let exists = self
            .core
            .auth
            .directory()
            .roles()
            .iter()
            .any(|r| r.id == id);
        if message.must_create && exists {
            return Err(bad_request(&format!("Role with _id {id} already exists")));
        }
        let created_at = if role.created_at.is_empty() {
            now_iso()
        } else {
            role.created_at
        };
        let stored = StoredRole {
            id,
            name: role.name,
            permissions: non_empty(role.permissions),
            notes: role.notes,
            created_at,
        };
        let body =
            serde_json::to_value(&stored).map_err(|err| Status::internal(err.to_string()))?;
        self.core
            .store()
            .save_auth(AuthTable::Roles, &stored.id, &body)
            .await
            .map_err(internal)?;
        self.reload().await?;
        info!(role = stored.name, id = stored.id, "role saved");
        Ok(Response::new(RoleResponse {
            role: Some(Role {
                id: stored.id,
                name: stored.name,
                permissions: stored.permissions,
                notes: stored.notes,
                created_at: stored.created_at,
            }),
        }))
    }

    async fn delete_role(
        &self,
        request: Request<DeleteByIdRequest>,
    ) -> Result<Response<DeleteByIdResponse>, Status> {
        self.check(request.metadata(), "admin:api:roles:delete")
            .await?;
        let id = request.into_inner().id;
        let deleted = self
            .core
            .store()
            .delete_auth(AuthTable::Roles, &id)
            .await
            .map_err(internal)?;
        self.reload().await?;
        info!(id, deleted, "role deleted");
        Ok(Response::new(DeleteByIdResponse { deleted }))
    }

    async fn request_jwt(
        &self,
        request: Request<RequestJwtRequest>,
    ) -> Result<Response<RequestJwtResponse>, Status> {
        let (metadata, _, message) = request.into_parts();
        let unauthorized = || {
            proto::status_from_api_error(&ApiError::new(ErrorKind::Unauthorized, "Unauthorized"))
        };
        if self
            .core
            .auth
            .authenticate_access_token(&message.access_token, &metadata)
            .await
            .is_none()
        {
            return Err(unauthorized());
        }
        let directory = self.core.auth.directory();
        let subject = directory
            .subject_for_access_token(&self.core.auth.secret, &message.access_token)
            .ok_or_else(unauthorized)?;
        let issued = self
            .core
            .auth
            .jwt
            .issue(&message.access_token, self.core.jwt_lifetime)
            .map_err(|err| Status::internal(err.to_string()))?;
        let permission_groups = subject
            .roles
            .iter()
            .filter_map(|name| directory.role(name))
            .map(|role| PermissionGroup {
                permissions: role.permissions.clone(),
            })
            .collect();
        info!(subject = subject.name, "JWT issued");
        Ok(Response::new(RequestJwtResponse {
            token: issued.token,
            sub: subject.name.clone(),
            permission_groups,
            iat: issued.iat as i64,
            exp: issued.exp as i64,
        }))
    }

    async fn check_permission(
        &self,
        request: Request<CheckPermissionRequest>,
    ) -> Result<Response<CheckPermissionResponse>, Status> {
        let caller = self
            .core
            .auth
            .authenticate(request.metadata())
            .await
            .map_err(|err| proto::status_from_api_error(&err))?;
        let permission = &request.get_ref().permission;
        // Checked directly, not through `require`, so client-chosen text does not
        // grow the list of seen permissions.
        if !caller.can(permission) {
            return Err(proto::status_from_api_error(&ApiError::missing_permission(
                permission,
            )));
        }
        Ok(Response::new(CheckPermissionResponse { check: true }))
    }

    async fn list_seen_permissions(
        &self,
        request: Request<ListSeenPermissionsRequest>,
    ) -> Result<Response<ListSeenPermissionsResponse>, Status> {
        self.check(request.metadata(), "admin:api:permissions:read")
            .await?;
        Ok(Response::new(ListSeenPermissionsResponse {
            permissions: super::auth::seen_permissions(),
        }))
    }
}
