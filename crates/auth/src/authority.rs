//! Resolution of credentials to a [`Principal`]: the subject's name and
//! the permissions it holds.
//!
//! A [`Directory`] is a snapshot of the stored subjects and roles. The
//! reference (Nightscout 15.x `lib/authorization/`) resolves credentials in
//! this order, and callers combine the methods below to follow it:
//!
//! 1. An `api-secret` header that matches the API_SECRET digest gives the
//!    admin principal, which holds only `*` and has no subject name, so
//!    documents written with it carry no `subject`
//!    ([`Directory::admin_principal`]).
//! 2. Otherwise a JWT from `Authorization: Bearer` gives the subject whose
//!    access token it carries ([`Directory::principal_for_jwt`]).
//! 3. Otherwise an `api-secret` header that contains an access token, or the
//!    SHA-1 of one, gives that subject
//!    ([`Directory::principal_for_api_secret_header`]).
//! 4. No credential at all gives the default roles' permissions
//!    ([`Directory::anonymous_principal`]). A credential that resolves to
//!    nothing is a failed authentication, which the caller counts in
//!    [`FailDelay`](crate::FailDelay).
//!
//! APIv3 narrows this: its REST operations read only `Authorization: Bearer`
//! and accept only a JWT there. An access token or the API_SECRET digest sent
//! as a bearer token fails with 401 in the reference. The Socket.IO
//! `subscribe` accepts only an access token ([`Directory::principal_for_access_token`]).
//! Every authenticated subject also receives the permissions of the roles in
//! `AUTH_DEFAULT_ROLES`, but the admin principal does not.

use subtle::{Choice, ConstantTimeEq};

use crate::error::AuthError;
use crate::jwt::JwtKeys;
use crate::model::{Role, Subject, builtin_roles};
use crate::permission::permits;
use crate::token::{ApiSecret, DIGEST_PREFIX_LENGTH, access_token_from_digest, sha1_hex};

/// Caller after authentication: who it is and what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Name of the authenticated subject, written to documents as `subject`
    /// and `modifiedBy`. `None` for the admin and anonymous principals, for
    /// which the reference writes neither field.
    pub subject: Option<String>,
    /// Shiro permissions of all the principal's roles, without duplicates.
    pub permissions: Vec<String>,
}

impl Principal {
    /// Checks whether the principal's permissions cover `permission`.
    ///
    /// NOTE: The reference checks each role separately, so a required
    /// permission with a comma list (`api:entries,treatments:read`) must be
    /// covered by one role there, but may be covered by several here. Nightjar
    /// requires no such permission.
    pub fn can(&self, permission: &str) -> bool {
        permits(&self.permissions, permission)
    }
}

/// Splits the `AUTH_DEFAULT_ROLES` setting into role names at commas,
/// spaces and colons, as the reference does. Empty names are dropped.
pub fn parse_default_roles(setting: &str) -> Vec<String> {
    setting
        .split([',', ' ', ':'])
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Snapshot of the stored subjects and roles, with the built-in roles that
/// no stored role overrides.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    /// Stored subjects, sorted by name.
    subjects: Vec<Subject>,
    /// Stored roles plus the built-in roles whose name no stored role has,
    /// sorted by name.
    roles: Vec<Role>,
}

impl Directory {
    /// Builds a directory from the stored subjects and roles.
    ///
    /// A built-in role is added unless a stored role has its name. Subjects
    /// and roles are sorted by name, keeping the given order among equal
    /// names, because the reference looks both up in that order and takes
    /// the first match.
    pub fn new(mut subjects: Vec<Subject>, mut roles: Vec<Role>) -> Self {
        for builtin in builtin_roles() {
            if !roles.iter().any(|role| role.name == builtin.name) {
                roles.push(builtin);
            }
        }

        roles.sort_by(|left, right| left.name.cmp(&right.name));
        subjects.sort_by(|left, right| left.name.cmp(&right.name));
        Self { subjects, roles }
    }

    /// Returns the subjects, sorted by name.
    pub fn subjects(&self) -> &[Subject] {
        &self.subjects
    }

    /// Returns the stored and built-in roles, sorted by name.
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    /// Finds the first role named `name`.
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.iter().find(|role| role.name == name)
    }

    /// Finds the subject an access token belongs to, comparing in constant
    /// time.
    ///
    /// Matching follows the reference. The text after the last `-` must be
    /// at least 16 characters and a prefix of the subject's 40-digit digest,
    /// so the name part is ignored and tokens keep working after a subject
    /// is renamed. Alternatively the whole token may be a prefix (at least
    /// 16 characters) of the hex SHA-1 of the subject's access token, which
    /// is what Nightscout's web pages send when a user enters a token as the
    /// API secret. Hex digits must be lower case.
    pub fn subject_for_access_token(&self, secret: &ApiSecret, token: &str) -> Option<&Subject> {
        // 1. Reject tokens whose digest part is too short to compare.
        let digest_part = token.rsplit('-').next().unwrap_or(token);
        if digest_part.len() < DIGEST_PREFIX_LENGTH {
            return None;
        }

        // 2. Compare with every subject, so the time taken does not depend
        //    on which subject matches. The first match wins.
        let mut found = None;
        for subject in &self.subjects {
            let digest = secret.subject_digest(&subject.id);
            let token_digest =
                sha1_hex(access_token_from_digest(&subject.name, &digest).as_bytes());
            let matches = is_prefix_of(digest_part, &digest) | is_prefix_of(token, &token_digest);
            if bool::from(matches) && found.is_none() {
                found = Some(subject);
            }
        }

        found
    }

    /// Builds the principal of `subject`: the permissions of its roles and
    /// of the default roles. Unknown role names grant nothing.
    pub fn principal_for_subject(&self, subject: &Subject, default_roles: &[String]) -> Principal {
        let role_names = subject.roles.iter().chain(default_roles);
        Principal {
            subject: Some(subject.name.clone()),
            permissions: self.permissions_of(role_names),
        }
    }

    /// Resolves an access token to the principal of its subject, or `None`
    /// when it matches no subject (see
    /// [`Directory::subject_for_access_token`]).
    pub fn principal_for_access_token(
        &self,
        secret: &ApiSecret,
        token: &str,
        default_roles: &[String],
    ) -> Option<Principal> {
        let subject = self.subject_for_access_token(secret, token)?;
        Some(self.principal_for_subject(subject, default_roles))
    }

    /// Verifies a JWT and resolves the access token it carries.
    ///
    /// # Errors
    ///
    /// Returns [`AuthError::InvalidJwt`] or [`AuthError::ExpiredJwt`] when
    /// verification fails, and [`AuthError::UnknownAccessToken`] when the
    /// subject no longer exists or the API_SECRET changed.
    pub fn principal_for_jwt(
        &self,
        secret: &ApiSecret,
        keys: &JwtKeys,
        jwt: &str,
        default_roles: &[String],
    ) -> Result<Principal, AuthError> {
        let claims = keys.verify(jwt)?;
        self.principal_for_access_token(secret, &claims.access_token, default_roles)
            .ok_or(AuthError::UnknownAccessToken)
    }

    /// Resolves an `api-secret` header: the admin principal when it carries
    /// the API_SECRET digest, else the subject whose access token it carries.
    ///
    /// The reference treats the literal header value `null` as no header;
    /// callers that follow it check for that before calling.
    pub fn principal_for_api_secret_header(
        &self,
        secret: &ApiSecret,
        header: &str,
        default_roles: &[String],
    ) -> Option<Principal> {
        if secret.matches_header(header) {
            return Some(Self::admin_principal());
        }

        self.principal_for_access_token(secret, header, default_roles)
    }

    /// Returns the principal of a caller that proved knowledge of the
    /// API_SECRET: permission `*` and no subject name.
    pub fn admin_principal() -> Principal {
        Principal {
            subject: None,
            permissions: vec!["*".to_owned()],
        }
    }

    /// Returns the principal of a caller that sent no credential: the
    /// permissions of the default roles and no subject name.
    ///
    /// APIv3 REST never uses it, because it rejects requests without a
    /// bearer token (`/version` does not authenticate at all). The
    /// reference's older APIs grant these permissions to anonymous callers.
    pub fn anonymous_principal(&self, default_roles: &[String]) -> Principal {
        Principal {
            subject: None,
            permissions: self.permissions_of(default_roles),
        }
    }

    /// Returns the permission lists of the subject's roles followed by the
    /// default roles, one list per distinct role name, as the
    /// `permissionGroups` of `/api/v2/authorization/request` lists them.
    /// An unknown role gives an empty list.
    pub fn permission_groups(
        &self,
        subject: &Subject,
        default_roles: &[String],
    ) -> Vec<Vec<String>> {
        let mut names: Vec<&String> = Vec::new();
        for name in subject.roles.iter().chain(default_roles) {
            if !names.contains(&name) {
                names.push(name);
            }
        }

        names
            .into_iter()
            .map(|name| {
                self.role(name)
                    .map(|role| role.permissions.clone())
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Collects the permissions of the named roles, in order and without
    /// duplicates.
    fn permissions_of<'a>(&self, role_names: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        let mut permissions: Vec<String> = Vec::new();
        for role in role_names.into_iter().filter_map(|name| self.role(name)) {
            for permission in &role.permissions {
                if !permissions.contains(permission) {
                    permissions.push(permission.clone());
                }
            }
        }
        permissions
    }
}

/// Checks in constant time whether `candidate` is a prefix of `digest`.
/// Only the lengths, which are not secret, affect the time taken.
fn is_prefix_of(candidate: &str, digest: &str) -> Choice {
    match digest.as_bytes().get(..candidate.len()) {
        Some(prefix) => prefix.ct_eq(candidate.as_bytes()),
        None => Choice::from(0),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Tokens and digests below were computed with Node.js `crypto`
    /// following the reference's formula, for this API_SECRET.
    const SECRET: &str = "correct horse battery staple";
    const SECRET_SHA1: &str = "abf7aad6438836dbe526aa231abde2d0eef74d42";
    const ADMIN_ID: &str = "5e3b2a1c9d8f7e6a5b4c3d2e";
    const ADMIN_TOKEN: &str = "testadmin-643173b3dee81fff";
    const ADMIN_DIGEST: &str = "643173b3dee81fffce1d850707dfa10621a9ee4e";
    const ADMIN_TOKEN_SHA1: &str = "69c4c07a14ed96e98cd0c109b7365c6405f5c1aa";
    const PHONE_ID: &str = "60d5ecb8b5c9a72f3c8e4b1a";
    const PHONE_TOKEN: &str = "annsphonea-29d7d82ba1d1ba4a";

    fn secret() -> ApiSecret {
        ApiSecret::new(SECRET).unwrap()
    }

    fn subject(id: &str, name: &str, roles: &[&str]) -> Subject {
        Subject {
            id: id.into(),
            name: name.into(),
            roles: roles.iter().map(|&role| role.into()).collect(),
            notes: String::new(),
            created_at: String::new(),
        }
    }

    fn role(name: &str, permissions: &[&str]) -> Role {
        Role {
            id: "65f0a1b2c3d4e5f6a7b8c9d0".into(),
            name: name.into(),
            permissions: permissions
                .iter()
                .map(|&permission| permission.into())
                .collect(),
            notes: String::new(),
            created_at: String::new(),
        }
    }

    fn directory() -> Directory {
        Directory::new(
            vec![
                subject(
                    PHONE_ID,
                    "Ann's Phone (AAPS)",
                    &["careportal", "devicestatus-upload"],
                ),
                subject(ADMIN_ID, "Test Admin", &["admin"]),
            ],
            vec![],
        )
    }

    fn readable() -> Vec<String> {
        vec!["readable".to_owned()]
    }

    fn subject_name(directory: &Directory, token: &str) -> Option<String> {
        directory
            .subject_for_access_token(&secret(), token)
            .map(|subject| subject.name.clone())
    }

    #[test]
    fn builtin_roles_fill_gaps() {
        let directory = Directory::new(vec![], vec![role("readable", &["api:entries:read"])]);
        assert_eq!(directory.roles().len(), 7);
        assert_eq!(
            directory.role("readable").unwrap().permissions,
            vec!["api:entries:read"]
        );
        assert_eq!(directory.role("admin").unwrap().permissions, vec!["*"]);
        assert!(directory.role("nonexistent").is_none());
    }

    #[test]
    fn roles_and_subjects_sorted_by_name() {
        let directory = directory();
        let role_names: Vec<&str> = directory
            .roles()
            .iter()
            .map(|role| role.name.as_str())
            .collect();
        let mut sorted = role_names.clone();
        sorted.sort();
        assert_eq!(role_names, sorted);
        assert_eq!(directory.subjects()[0].name, "Ann's Phone (AAPS)");
        assert_eq!(directory.subjects()[1].name, "Test Admin");
    }

    #[test]
    fn access_token_finds_subject() {
        let directory = directory();
        assert_eq!(
            subject_name(&directory, ADMIN_TOKEN).as_deref(),
            Some("Test Admin")
        );
        assert_eq!(
            subject_name(&directory, PHONE_TOKEN).as_deref(),
            Some("Ann's Phone (AAPS)")
        );
    }

    #[test]
    fn access_token_name_part_ignored() {
        let directory = directory();
        for token in [
            "whatever-643173b3dee81fff",
            "643173b3dee81fff",
            "a-b-643173b3dee81fff",
        ] {
            assert_eq!(
                subject_name(&directory, token).as_deref(),
                Some("Test Admin"),
                "{token}"
            );
        }
    }

    #[test]
    fn access_token_longer_digest_prefix_accepted() {
        let directory = directory();
        let full = format!("testadmin-{ADMIN_DIGEST}");
        assert_eq!(
            subject_name(&directory, &full).as_deref(),
            Some("Test Admin")
        );
        assert_eq!(
            subject_name(&directory, &full[..30]).as_deref(),
            Some("Test Admin")
        );
        assert_eq!(subject_name(&directory, &format!("{full}0")), None);
    }

    #[test]
    fn access_token_sha1_accepted() {
        let directory = directory();
        assert_eq!(
            subject_name(&directory, ADMIN_TOKEN_SHA1).as_deref(),
            Some("Test Admin")
        );
        assert_eq!(
            subject_name(&directory, &ADMIN_TOKEN_SHA1[..16]).as_deref(),
            Some("Test Admin")
        );
        assert_eq!(subject_name(&directory, &ADMIN_TOKEN_SHA1[..15]), None);
    }

    #[test]
    fn bad_access_tokens_rejected() {
        let directory = directory();
        let bad = [
            "",
            "testadmin",
            "testadmin-643173b3dee81ff",
            "TESTADMIN-643173B3DEE81FFF",
            "testadmin-643173b3dee81fff-",
            "annsphonea-0000000000000000",
            SECRET_SHA1,
            SECRET,
        ];
        for token in bad {
            assert_eq!(subject_name(&directory, token), None, "{token:?}");
        }
    }

    #[test]
    fn access_token_depends_on_secret() {
        let other = ApiSecret::new("another secret of length").unwrap();
        assert!(
            directory()
                .subject_for_access_token(&other, ADMIN_TOKEN)
                .is_none()
        );
    }

    #[test]
    fn principal_adds_default_roles() {
        let principal = directory()
            .principal_for_access_token(&secret(), PHONE_TOKEN, &readable())
            .unwrap();
        assert_eq!(principal.subject.as_deref(), Some("Ann's Phone (AAPS)"));
        assert_eq!(
            principal.permissions,
            vec![
                "api:treatments:create",
                "api:devicestatus:create",
                "*:*:read"
            ]
        );
        assert!(principal.can("api:treatments:create"));
        assert!(principal.can("api:entries:read"));
        assert!(!principal.can("api:entries:create"));
        assert!(!principal.can("api:settings:admin"));
    }

    #[test]
    fn principal_without_default_roles() {
        let principal = directory()
            .principal_for_access_token(&secret(), PHONE_TOKEN, &[])
            .unwrap();
        assert!(!principal.can("api:entries:read"));
        assert!(principal.can("api:devicestatus:create"));
    }

    #[test]
    fn principal_deduplicates_permissions() {
        let directory = Directory::new(
            vec![subject(ADMIN_ID, "Reader", &["readable", "readable"])],
            vec![],
        );
        let principal = directory
            .principal_for_access_token(&secret(), ADMIN_TOKEN, &readable())
            .unwrap();
        assert_eq!(principal.permissions, vec!["*:*:read"]);
    }

    #[test]
    fn unknown_roles_grant_nothing() {
        let directory = Directory::new(vec![subject(ADMIN_ID, "Ghost", &["no-such-role"])], vec![]);
        let principal = directory
            .principal_for_access_token(&secret(), ADMIN_TOKEN, &[])
            .unwrap();
        assert!(principal.permissions.is_empty());
        assert!(!principal.can("api:entries:read"));
    }

    #[test]
    fn stored_role_overrides_builtin() {
        let directory = Directory::new(
            vec![subject(ADMIN_ID, "Test Admin", &["admin"])],
            vec![role("admin", &["api:status:read"])],
        );
        let principal = directory
            .principal_for_access_token(&secret(), ADMIN_TOKEN, &[])
            .unwrap();
        assert_eq!(principal.permissions, vec!["api:status:read"]);
        assert!(!principal.can("api:entries:read"));
    }

    #[test]
    fn jwt_resolves_to_subject() {
        let secret = secret();
        let keys = JwtKeys::new(&secret);
        let jwt = keys
            .issue(ADMIN_TOKEN, Duration::from_secs(60))
            .unwrap()
            .token;

        let principal = directory()
            .principal_for_jwt(&secret, &keys, &jwt, &readable())
            .unwrap();
        assert_eq!(principal.subject.as_deref(), Some("Test Admin"));
        assert!(principal.can("api:entries:create"));
    }

    #[test]
    fn jwt_for_deleted_subject_rejected() {
        let secret = secret();
        let keys = JwtKeys::new(&secret);
        let jwt = keys
            .issue(ADMIN_TOKEN, Duration::from_secs(60))
            .unwrap()
            .token;

        let empty = Directory::new(vec![], vec![]);
        let error = empty
            .principal_for_jwt(&secret, &keys, &jwt, &readable())
            .unwrap_err();
        assert!(matches!(error, AuthError::UnknownAccessToken), "{error:?}");
    }

    #[test]
    fn access_token_is_not_a_jwt() {
        let secret = secret();
        let keys = JwtKeys::new(&secret);
        let error = directory()
            .principal_for_jwt(&secret, &keys, ADMIN_TOKEN, &readable())
            .unwrap_err();
        assert!(matches!(error, AuthError::InvalidJwt { .. }), "{error:?}");
    }

    #[test]
    fn api_secret_header_gives_admin() {
        let principal = directory()
            .principal_for_api_secret_header(&secret(), SECRET_SHA1, &readable())
            .unwrap();
        assert_eq!(principal, Directory::admin_principal());
        assert_eq!(principal.subject, None);
        assert!(principal.can("admin:api:subjects:create"));
        assert!(principal.can("api:settings:admin"));
    }

    #[test]
    fn api_secret_header_accepts_access_token() {
        let directory = directory();
        for header in [PHONE_TOKEN, "4e3ad8ce4574c16f4717a8b9893735742b5397a2"] {
            let principal = directory
                .principal_for_api_secret_header(&secret(), header, &readable())
                .unwrap();
            assert_eq!(
                principal.subject.as_deref(),
                Some("Ann's Phone (AAPS)"),
                "{header}"
            );
        }
    }

    #[test]
    fn api_secret_header_rejects_plain_secret() {
        assert!(
            directory()
                .principal_for_api_secret_header(&secret(), SECRET, &readable())
                .is_none()
        );
        assert!(
            directory()
                .principal_for_api_secret_header(&secret(), "null", &readable())
                .is_none()
        );
    }

    #[test]
    fn anonymous_gets_default_roles() {
        let directory = directory();
        let anonymous = directory.anonymous_principal(&readable());
        assert_eq!(anonymous.subject, None);
        assert!(anonymous.can("api:entries:read"));
        assert!(!anonymous.can("api:entries:create"));
        assert!(directory.anonymous_principal(&[]).permissions.is_empty());
    }

    #[test]
    fn permission_groups_follow_roles() {
        let directory = directory();
        let phone = &directory.subjects()[0];
        let defaults = vec![
            "readable".to_owned(),
            "careportal".to_owned(),
            "missing".to_owned(),
        ];
        assert_eq!(
            directory.permission_groups(phone, &defaults),
            vec![
                vec!["api:treatments:create".to_owned()],
                vec!["api:devicestatus:create".to_owned()],
                vec!["*:*:read".to_owned()],
                vec![],
            ]
        );
    }

    #[test]
    fn default_roles_setting_parsed() {
        assert_eq!(parse_default_roles("readable"), vec!["readable"]);
        assert_eq!(
            parse_default_roles("readable careportal,status-only:denied"),
            vec!["readable", "careportal", "status-only", "denied"]
        );
        assert_eq!(parse_default_roles(" readable,,"), vec!["readable"]);
        assert!(parse_default_roles("").is_empty());
    }
}
