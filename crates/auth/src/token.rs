//! The API_SECRET and the access tokens derived from it.
//!
//! Clients never send the API_SECRET itself: the reference's `api-secret`
//! header carries its hex SHA-1 (the web pages and uploaders send this) or
//! its hex SHA-512. A subject's access token is derived from the SHA-1, so
//! the same secret and subject id give the same token as the reference.

use std::fmt;

use sha1::{Digest, Sha1};
use sha2::Sha512;
use subtle::ConstantTimeEq;

use crate::error::AuthError;
use crate::model::Subject;

/// Minimum API_SECRET length the reference accepts (`MIN_PASSPHRASE_LENGTH`).
pub const MIN_SECRET_LENGTH: usize = 12;

/// Number of characters of the subject name kept in an access token.
const NAME_PREFIX_LENGTH: usize = 10;

/// Number of hex digits of the subject digest in an access token.
pub(crate) const DIGEST_PREFIX_LENGTH: usize = 16;

/// The server's API_SECRET with its hex digests.
///
/// Built with [`ApiSecret::new`]. `Debug` prints no part of the secret or of
/// its digests.
#[derive(Clone)]
pub struct ApiSecret {
    /// Lower-case hex SHA-1 of the secret's UTF-8 bytes.
    sha1_hex: String,
    /// Lower-case hex SHA-512 of the secret's UTF-8 bytes.
    sha512_hex: String,
    /// HMAC-SHA256 of a fixed label keyed with the secret, the JWT signing key.
    jwt_key: [u8; 32],
}

impl ApiSecret {
    /// Validates the API_SECRET and computes its digests.
    ///
    /// # Errors
    ///
    /// Returns [`AuthError::SecretTooShort`] when the secret has fewer than
    /// 12 characters. Characters are counted in UTF-16 code units, as the
    /// reference's JavaScript `length` counts them.
    pub fn new(secret: &str) -> Result<Self, AuthError> {
        let length = secret.encode_utf16().count();
        if length < MIN_SECRET_LENGTH {
            return Err(AuthError::SecretTooShort {
                length,
                minimum: MIN_SECRET_LENGTH,
            });
        }

        Ok(Self {
            sha1_hex: sha1_hex(secret.as_bytes()),
            sha512_hex: hex::encode(Sha512::digest(secret.as_bytes())),
            jwt_key: crate::jwt::derive_signing_key(secret.as_bytes()),
        })
    }

    /// Returns the lower-case hex SHA-1 of the secret, the value clients send
    /// in the `api-secret` header.
    pub fn sha1_hex(&self) -> &str {
        &self.sha1_hex
    }

    /// Checks, in constant time, whether an `api-secret` header value proves
    /// knowledge of the secret.
    ///
    /// Like the reference, this accepts the hex SHA-1 in any letter case and
    /// the lower-case hex SHA-512, and rejects the plain secret.
    pub fn matches_header(&self, header: &str) -> bool {
        let lowered = header.to_ascii_lowercase();
        let sha1_matches = lowered.as_bytes().ct_eq(self.sha1_hex.as_bytes());
        let sha512_matches = header.as_bytes().ct_eq(self.sha512_hex.as_bytes());
        (sha1_matches | sha512_matches).into()
    }

    /// Returns the credential of an internal service such as the edge: hex
    /// HMAC-SHA256 of `service`, keyed with the JWT signing key. Every process
    /// that has API_SECRET derives the same value; it reveals nothing of the
    /// secret.
    pub fn service_credential(&self, service: &str) -> String {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.jwt_key)
            .expect("HMAC accepts keys of any length");
        mac.update(b"nightjar service credential: ");
        mac.update(service.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Checks a service credential in constant time.
    pub fn matches_service_credential(&self, service: &str, credential: &str) -> bool {
        self.service_credential(service)
            .as_bytes()
            .ct_eq(credential.as_bytes())
            .into()
    }

    /// Returns the key JWTs are signed with.
    pub(crate) fn jwt_key(&self) -> &[u8; 32] {
        &self.jwt_key
    }

    /// Computes the hex SHA-1 of the secret's hex SHA-1 followed by the
    /// subject id text, from which the subject's access token is cut.
    pub(crate) fn subject_digest(&self, subject_id: &str) -> String {
        let mut hasher = Sha1::new();
        hasher.update(self.sha1_hex.as_bytes());
        hasher.update(subject_id.as_bytes());
        hex::encode(hasher.finalize())
    }
}

impl fmt::Debug for ApiSecret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("ApiSecret(<redacted>)")
    }
}

/// Derives the access token of a subject, exactly as the reference does.
///
/// The token starts with the subject name, lower-cased, stripped of every
/// character other than ASCII letters, digits and `_`, and cut to 10
/// characters. Then come `-` and the first 16 hex digits of SHA-1(hex SHA-1
/// of API_SECRET followed by the subject id text).
pub fn access_token(secret: &ApiSecret, subject: &Subject) -> String {
    access_token_from_digest(&subject.name, &secret.subject_digest(&subject.id))
}

/// Builds an access token from the subject name and the subject digest
/// returned by [`ApiSecret::subject_digest`].
pub(crate) fn access_token_from_digest(name: &str, digest: &str) -> String {
    format!("{}-{}", name_prefix(name), &digest[..DIGEST_PREFIX_LENGTH])
}

/// Computes the lower-case hex SHA-1 of `bytes`.
pub(crate) fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(Sha1::digest(bytes))
}

/// Builds the name part of an access token.
///
/// The reference lower-cases with JavaScript's full Unicode mapping and then
/// removes what the regular expression `\W` matches (everything but ASCII
/// letters, digits and `_`). Rust's `to_lowercase` uses the same mapping, so
/// a name like `İK` (whose lower case starts with an ASCII `i`) gives the
/// same prefix in both.
fn name_prefix(name: &str) -> String {
    name.to_lowercase()
        .chars()
        .filter(|character| character.is_ascii_alphanumeric() || *character == '_')
        .take(NAME_PREFIX_LENGTH)
        .collect()
}

#[cfg(test)]
mod tests {

    #[test]
    fn service_credential_is_keyed() {
        let one = ApiSecret::new("first secret text").unwrap();
        let other = ApiSecret::new("second secret text").unwrap();
        let credential = one.service_credential("edge");
        assert_eq!(credential.len(), 64);
        assert!(one.matches_service_credential("edge", &credential));
        assert!(!one.matches_service_credential("core", &credential));
        assert!(!other.matches_service_credential("edge", &credential));
        assert!(!credential.contains(one.sha1_hex()));
    }

    use super::*;

    /// Secret whose expected digests below were computed with Node.js
    /// `crypto` (the reference's formula) and cross-checked with Python
    /// `hashlib`.
    const SECRET: &str = "correct horse battery staple";
    const SECRET_SHA1: &str = "abf7aad6438836dbe526aa231abde2d0eef74d42";
    const SECRET_SHA512: &str = "be5ef7679d88ab9a9045f6267e55f5e5784b4b8cd764b5cd855a5244f91c626953cd46c43d7668873fd6efbd3b221249315580031963472a078781fe046e62ae";

    fn secret() -> ApiSecret {
        ApiSecret::new(SECRET).unwrap()
    }

    fn subject(id: &str, name: &str) -> Subject {
        Subject {
            id: id.into(),
            name: name.into(),
            roles: vec![],
            notes: String::new(),
            created_at: String::new(),
        }
    }

    #[test]
    fn short_secret_rejected() {
        let error = ApiSecret::new("eleven char").unwrap_err();
        assert!(matches!(
            error,
            AuthError::SecretTooShort {
                length: 11,
                minimum: 12
            }
        ));
        let message = error.to_string();
        assert!(message.contains("at least 12"), "{message}");
        assert!(!message.contains("eleven"), "{message}");
    }

    #[test]
    fn twelve_character_secret_accepted() {
        assert!(ApiSecret::new("twelve chars").is_ok());
    }

    #[test]
    fn secret_length_counts_utf16_units() {
        // Six emoji are six characters but twelve UTF-16 code units.
        assert!(ApiSecret::new("😀😀😀😀😀😀").is_ok());
        assert!(ApiSecret::new("ééééééééééé").is_err());
    }

    #[test]
    fn sha1_hex_is_lowercase_digest() {
        assert_eq!(secret().sha1_hex(), SECRET_SHA1);
    }

    #[test]
    fn header_accepts_sha1_in_any_case() {
        let secret = secret();
        assert!(secret.matches_header(SECRET_SHA1));
        assert!(secret.matches_header(&SECRET_SHA1.to_ascii_uppercase()));
    }

    #[test]
    fn header_accepts_lowercase_sha512() {
        let secret = secret();
        assert!(secret.matches_header(SECRET_SHA512));
        assert!(!secret.matches_header(&SECRET_SHA512.to_ascii_uppercase()));
    }

    #[test]
    fn header_rejects_plain_secret_and_others() {
        let secret = secret();
        assert!(!secret.matches_header(SECRET));
        assert!(!secret.matches_header(""));
        assert!(!secret.matches_header(&SECRET_SHA1[..39]));
        assert!(!secret.matches_header(&format!("{SECRET_SHA1}0")));
        assert!(!secret.matches_header("0000000000000000000000000000000000000000"));
    }

    #[test]
    fn debug_hides_secret() {
        let printed = format!("{:?}", secret());
        assert_eq!(printed, "ApiSecret(<redacted>)");
    }

    #[test]
    fn access_token_matches_reference() {
        let secret = secret();
        let cases = [
            (
                "5e3b2a1c9d8f7e6a5b4c3d2e",
                "Test Admin",
                "testadmin-643173b3dee81fff",
            ),
            (
                "60d5ecb8b5c9a72f3c8e4b1a",
                "Ann's Phone (AAPS)",
                "annsphonea-29d7d82ba1d1ba4a",
            ),
            (
                "0123456789abcdef01234567",
                "Zoë Ünicode-İK",
                "zonicodeik-f71c0ee86c130db0",
            ),
            ("65f0a1b2c3d4e5f6a7b8c9d0", "", "-7e9b6fafde2a157a"),
        ];

        for (id, name, expected) in cases {
            assert_eq!(
                access_token(&secret, &subject(id, name)),
                expected,
                "subject {name:?}"
            );
        }
    }

    #[test]
    fn subject_digest_hashes_secret_digest_then_id() {
        assert_eq!(
            secret().subject_digest("5e3b2a1c9d8f7e6a5b4c3d2e"),
            "643173b3dee81fffce1d850707dfa10621a9ee4e"
        );
    }

    #[test]
    fn name_prefix_keeps_word_characters() {
        assert_eq!(name_prefix("Loop_Phone 2"), "loop_phone");
        assert_eq!(name_prefix("A-B.C"), "abc");
        assert_eq!(name_prefix("ÅÄÖ"), "");
        assert_eq!(name_prefix("\u{212A}elvin"), "kelvin");
    }
}
