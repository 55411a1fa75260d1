//! Authentication and permission checks of core: credentials from gRPC metadata
//! resolved against the subjects and roles in the store.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use nightjar_apiv3::{ApiError, Collection};
use nightjar_auth::{ApiSecret, Directory, FailDelay, JwtKeys, Principal, Role, Subject};
use nightjar_store::{AuthTable, Store};
use tonic::metadata::MetadataMap;
use tracing::{info, warn};

/// The CRUD actions of APIv3 permissions, with their letters in `Status`.
pub const ACTIONS: [(&str, char); 4] = [
    ("create", 'c'),
    ("read", 'r'),
    ("update", 'u'),
    ("delete", 'd'),
];

/// Credential resolver: the secret, JWT keys, subjects and roles that checks need.
pub struct Authenticator {
    /// The server's API_SECRET.
    pub secret: ApiSecret,
    /// Key for issuing and checking JWTs.
    pub jwt: JwtKeys,
    /// Subjects and roles as last loaded from the store.
    directory: RwLock<Arc<Directory>>,
    /// Subjects and roles as last read, to skip reloads that change nothing.
    loaded: std::sync::Mutex<Option<(Vec<serde_json::Value>, Vec<serde_json::Value>)>>,
    /// Bumped on every reload that changed something, so streams and subscriptions
    /// recheck their grants.
    generation: tokio::sync::watch::Sender<u64>,
    /// Roles whose permissions every authenticated subject gets.
    default_roles: Vec<String>,
    /// Per-IP delay after failed authentication.
    fail_delay: FailDelay,
    /// False turns every check off (development only).
    security_enabled: bool,
    /// Store of subjects and roles.
    store: Store,
}

impl Authenticator {
    /// Builds an authenticator and loads the directory from the store.
    pub async fn new(
        secret: ApiSecret,
        store: Store,
        default_roles: Vec<String>,
        fail_delay_ms: u64,
        security_enabled: bool,
    ) -> Result<Authenticator, String> {
        let authenticator = Authenticator {
            jwt: JwtKeys::new(&secret),
            secret,
            directory: RwLock::new(Arc::new(Directory::default())),
            loaded: std::sync::Mutex::new(None),
            generation: tokio::sync::watch::Sender::new(0),
            default_roles,
            fail_delay: FailDelay::new(Duration::from_millis(fail_delay_ms)),
            security_enabled,
            store,
        };
        authenticator
            .reload()
            .await
            .map_err(|err| format!("cannot load subjects and roles: {err}"))?;
        Ok(authenticator)
    }

    /// Rereads subjects and roles; later requests and subscriptions see the change.
    pub async fn reload(&self) -> Result<(), nightjar_store::StoreError> {
        // 1. Read both tables; nothing to do when they did not change.
        let raw = (
            self.store.list_auth(AuthTable::Subjects).await?,
            self.store.list_auth(AuthTable::Roles).await?,
        );
        {
            let mut loaded = self.loaded.lock().unwrap();
            if loaded.as_ref() == Some(&raw) {
                return Ok(());
            }
            *loaded = Some(raw.clone());
        }

        // 2. Build the directory and tell streams and subscriptions to recheck.
        let subjects: Vec<Subject> = raw
            .0
            .into_iter()
            .filter_map(|value| serde_json::from_value(value).ok())
            .collect();
        let roles: Vec<Role> = raw
            .1
            .into_iter()
            .filter_map(|value| serde_json::from_value(value).ok())
            .collect();
        info!(
            subjects = subjects.len(),
            roles = roles.len(),
            "authorization directory loaded"
        );
        *self.directory.write().unwrap() = Arc::new(Directory::new(subjects, roles));
        self.generation.send_modify(|generation| *generation += 1);
        Ok(())
    }

    /// Returns a receiver that changes whenever subjects or roles change.
    pub fn watch_generation(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Resolves the credential of a data call again, without delay or failure
    /// accounting: used to recheck open streams after subjects or roles changed.
    pub fn recheck(&self, metadata: &MetadataMap) -> Option<Principal> {
        if !self.security_enabled {
            return Some(Directory::admin_principal());
        }
        if let Some(credential) = text(metadata, SERVICE_KEY) {
            return self
                .secret
                .matches_service_credential(EDGE_SERVICE, credential)
                .then(edge_principal);
        }
        if let Some(header) = text(metadata, "api-secret") {
            return self
                .secret
                .matches_header(header)
                .then(Directory::admin_principal);
        }
        self.resolve_credential(bearer(metadata)?)
    }

    /// Returns the current directory.
    pub fn directory(&self) -> Arc<Directory> {
        self.directory.read().unwrap().clone()
    }

    /// Resolves the caller of a data call: `authorization: Bearer <JWT or access
    /// token>`, or `api-secret`. Failures are delayed per client IP.
    pub async fn authenticate(&self, metadata: &MetadataMap) -> Result<Principal, ApiError> {
        if !self.security_enabled {
            return Ok(Directory::admin_principal());
        }
        self.check_credentials(metadata).await
    }

    /// Resolves credentials regardless of API3_SECURITY_ENABLE.
    async fn check_credentials(&self, metadata: &MetadataMap) -> Result<Principal, ApiError> {
        let ip = client_ip(metadata);
        self.wait_after_failures(&ip).await;

        if let Some(credential) = text(metadata, SERVICE_KEY) {
            return if self
                .secret
                .matches_service_credential(EDGE_SERVICE, credential)
            {
                Ok(edge_principal())
            } else {
                self.fail(&ip, "service credential does not match");
                Err(ApiError::bad_credential())
            };
        }

        if let Some(header) = text(metadata, "api-secret") {
            return if self.secret.matches_header(header) {
                Ok(Directory::admin_principal())
            } else {
                self.fail(&ip, "api-secret header does not match");
                Err(ApiError::bad_credential())
            };
        }

        let Some(credential) = bearer(metadata) else {
            return Err(ApiError::missing_credential());
        };
        // REST clients must send a JWT (the edge marks their calls); other gRPC
        // callers may also send an access token.
        let jwt_only = text(metadata, JWT_ONLY_KEY).is_some();
        let resolved = if jwt_only && !looks_like_jwt(credential) {
            None
        } else {
            self.resolve_credential(credential)
        };
        match resolved {
            Some(principal) => {
                self.fail_delay.record_success(&ip);
                Ok(principal)
            }
            None => {
                self.fail(&ip, "unknown or expired access token or JWT");
                Err(ApiError::bad_credential())
            }
        }
    }

    /// Resolves a subject's access token only (the Socket.IO `subscribe`
    /// credential). Failures are delayed and counted per client IP, except in the
    /// edge's rechecks after grants changed.
    pub async fn authenticate_access_token(
        &self,
        token: &str,
        metadata: &MetadataMap,
    ) -> Option<Principal> {
        let directory = self.directory();
        if text(metadata, super::forwarded::RECHECK_KEY).is_some() {
            return directory.principal_for_access_token(&self.secret, token, &self.default_roles);
        }
        let ip = client_ip(metadata);
        self.wait_after_failures(&ip).await;
        let principal =
            directory.principal_for_access_token(&self.secret, token, &self.default_roles);
        if principal.is_none() {
            self.fail(&ip, "unknown access token");
        }
        principal
    }

    /// Checks the admin credential of admin calls: `api-secret`, or a bearer
    /// credential holding `permission`.
    pub async fn authenticate_admin(
        &self,
        metadata: &MetadataMap,
        permission: &str,
    ) -> Result<Principal, ApiError> {
        // API3_SECURITY_ENABLE covers the data API only: subjects and roles always
        // need a credential.
        let principal = self.check_credentials(metadata).await?;
        require(&principal, permission)?;
        Ok(principal)
    }

    fn resolve_credential(&self, credential: &str) -> Option<Principal> {
        let directory = self.directory();
        let access_token = if looks_like_jwt(credential) {
            self.jwt.verify(credential).ok()?.access_token
        } else {
            credential.to_string()
        };
        directory.principal_for_access_token(&self.secret, &access_token, &self.default_roles)
    }

    async fn wait_after_failures(&self, ip: &str) {
        let delay = self.fail_delay.delay_for(ip);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    fn fail(&self, ip: &str, reason: &str) {
        warn!(peer = ip, reason, "authentication failed");
        self.fail_delay.record_failure(ip);
    }
}

/// Metadata key of an internal service's credential
/// ([`ApiSecret::service_credential`]).
pub const SERVICE_KEY: &str = "x-nightjar-service";

/// Service name the edge's credential is derived for.
pub const EDGE_SERVICE: &str = "edge";

/// Permission that lets a caller watch every collection's changes and the grant
/// generation, and nothing else.
pub const WATCH_PERMISSION: &str = "nightjar:watch";

/// Returns the principal of the edge's service credential: it may only watch.
fn edge_principal() -> Principal {
    Principal {
        subject: Some("nightjar-edge".to_string()),
        permissions: vec![WATCH_PERMISSION.to_string()],
    }
}

/// Returns whether `principal` may watch `collection`'s changes.
pub fn can_watch(principal: &Principal, collection: Collection) -> bool {
    principal.can(WATCH_PERMISSION) || principal.can(&read_permission(collection))
}

/// Metadata key the edge sets on REST calls: their bearer credential must be a JWT,
/// as in Nightscout's APIv3.
pub const JWT_ONLY_KEY: &str = "nightjar-bearer-jwt-only";

/// Returns whether a bearer credential has the three dot-separated parts of a JWT.
fn looks_like_jwt(credential: &str) -> bool {
    credential.split('.').count() == 3
}

/// Permissions checked since start, for `/api/v2/authorization/permissions`.
static SEEN_PERMISSIONS: std::sync::LazyLock<std::sync::Mutex<std::collections::BTreeSet<String>>> =
    std::sync::LazyLock::new(Default::default);

/// Returns the permissions checked since start, sorted.
pub fn seen_permissions() -> Vec<String> {
    SEEN_PERMISSIONS.lock().unwrap().iter().cloned().collect()
}

/// Fails with 403 `Missing permission <permission>` unless the principal has it.
///
/// Only permissions that code requests pass through here, so the set of seen
/// permissions stays bounded.
pub fn require(principal: &Principal, permission: &str) -> Result<(), ApiError> {
    {
        let mut seen = SEEN_PERMISSIONS.lock().unwrap();
        if !seen.contains(permission) {
            seen.insert(permission.to_string());
        }
    }
    if principal.can(permission) {
        Ok(())
    } else {
        Err(ApiError::missing_permission(permission))
    }
}

/// Returns the permission that reading `collection` needs.
pub fn read_permission(collection: Collection) -> String {
    match collection {
        Collection::Settings => "api:settings:admin".to_string(),
        other => format!("api:{other}:read"),
    }
}

/// Returns the permission of `action` on `collection`.
pub fn permission(collection: Collection, action: &str) -> String {
    format!("api:{collection}:{action}")
}

fn text<'a>(metadata: &'a MetadataMap, key: &str) -> Option<&'a str> {
    metadata
        .get(key)
        .and_then(|value| value.to_str().ok())
        .filter(|v| !v.is_empty())
}

fn bearer(metadata: &MetadataMap) -> Option<&str> {
    let header = text(metadata, "authorization")?;
    let (scheme, credential) = header.split_once(' ')?;
    let credential = credential.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credential.is_empty()).then_some(credential)
}

/// Returns the end client's IP: the one the edge forwarded, or a direct caller's
/// TCP peer address (see [`super::forwarded`]), else `unknown`.
pub fn client_ip(metadata: &MetadataMap) -> String {
    text(metadata, super::forwarded::FORWARDED_FOR_KEY)
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}
