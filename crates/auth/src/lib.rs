//! Nightscout-compatible authorization for Nightjar: subjects and roles,
//! Shiro wildcard permissions, access tokens derived from the API_SECRET,
//! JWTs, and the delay after failed authentications.
//!
//! The crate does not depend on HTTP, gRPC or storage. Callers load the
//! stored subjects and roles into a [`Directory`], resolve the credentials of
//! a request to a [`Principal`], and check permissions with
//! [`Principal::can`]. The behaviour follows Nightscout 15.x
//! (`lib/authorization/`, `lib/server/enclave.js`, `lib/api3/security.js`),
//! so an existing Nightscout database keeps its access tokens.

mod authority;
mod error;
mod fail_delay;
mod jwt;
mod model;
mod permission;
mod token;

pub use authority::{Directory, Principal, parse_default_roles};
pub use error::AuthError;
pub use fail_delay::{FailDelay, MAX_TRACKED_IPS};
pub use jwt::{Claims, DEFAULT_JWT_LIFETIME, IssuedJwt, JwtKeys};
pub use model::{Role, Subject, builtin_roles, is_object_id, new_object_id};
pub use permission::{Permission, permits};
pub use token::{ApiSecret, MIN_SECRET_LENGTH, access_token};
