//! HS256 JWTs that carry a subject's access token, as
//! `/api/v2/authorization/request/{accessToken}` issues them.
//!
//! The payload is `{accessToken, iat, exp}` with times in Unix seconds, like
//! the reference's. The reference signs with a random key kept in a cache
//! file. Nightjar derives the key from the API_SECRET instead, so every core
//! replica and every restart accepts the same JWTs without sharing a file.
//! JWTs issued by a Nightscout server therefore do not verify here, and
//! clients get a new one from the request endpoint as they do when one expires.

use std::fmt;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::AuthError;
use crate::token::ApiSecret;

/// Lifetime the reference gives its JWTs (`expiresIn: '8h'`).
pub const DEFAULT_JWT_LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);

/// Label the signing key is derived with, so that the key is useless for
/// any other purpose the API_SECRET may be put to.
const SIGNING_KEY_LABEL: &[u8] = b"nightjar-auth JWT HS256 signing key v1";

/// Derives the 32-byte HS256 signing key as HMAC-SHA256 of a fixed label,
/// keyed with the API_SECRET.
pub(crate) fn derive_signing_key(secret: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(SIGNING_KEY_LABEL);
    mac.finalize().into_bytes().into()
}

/// HS256 signing and verification keys derived from the API_SECRET.
///
/// Built with [`JwtKeys::new`]. `Debug` prints no key material.
#[derive(Clone)]
pub struct JwtKeys {
    /// Key that signs issued JWTs.
    encoding: EncodingKey,
    /// Key that verifies presented JWTs.
    decoding: DecodingKey,
}

/// JWT issued for an access token, with the times it carries.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedJwt {
    /// Compact serialized JWT.
    pub token: String,
    /// Issue time in Unix seconds.
    pub iat: u64,
    /// Expiry time in Unix seconds; the JWT is valid strictly before it.
    pub exp: u64,
}

/// Claims of a verified JWT.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Access token of the subject the JWT was issued for.
    #[serde(rename = "accessToken")]
    pub access_token: String,
    /// Issue time in Unix seconds.
    pub iat: u64,
    /// Expiry time in Unix seconds.
    pub exp: u64,
}

impl JwtKeys {
    /// Builds the keys from the signing key derived in `secret`.
    pub fn new(secret: &ApiSecret) -> Self {
        let key = secret.jwt_key();
        Self {
            encoding: EncodingKey::from_secret(key).expect("a 32-byte key is a valid HMAC key"),
            decoding: DecodingKey::from_secret(key).expect("a 32-byte key is a valid HMAC key"),
        }
    }

    /// Issues a JWT for `access_token` that expires `lifetime` from now,
    /// rounded down to whole seconds.
    ///
    /// # Errors
    ///
    /// Returns [`AuthError::InvalidLifetime`] when the expiry time overflows,
    /// or [`AuthError::JwtSigning`] when signing fails.
    pub fn issue(&self, access_token: &str, lifetime: Duration) -> Result<IssuedJwt, AuthError> {
        self.issue_at(access_token, lifetime, unix_now())
    }

    /// Verifies a JWT's signature, algorithm and expiry and returns its claims.
    ///
    /// A JWT is valid while the current Unix second is below `exp`, with no
    /// leeway, as in the reference's `jsonwebtoken` package.
    ///
    /// # Errors
    ///
    /// Returns [`AuthError::ExpiredJwt`] for an expired JWT and
    /// [`AuthError::InvalidJwt`] for any other failure.
    pub fn verify(&self, jwt: &str) -> Result<Claims, AuthError> {
        self.verify_at(jwt, unix_now())
    }

    /// Issues a JWT as [`JwtKeys::issue`] does, at the Unix second `now`.
    pub(crate) fn issue_at(
        &self,
        access_token: &str,
        lifetime: Duration,
        now: u64,
    ) -> Result<IssuedJwt, AuthError> {
        let seconds = lifetime.as_secs();
        let exp = now
            .checked_add(seconds)
            .filter(|&exp| i64::try_from(exp).is_ok())
            .ok_or(AuthError::InvalidLifetime { seconds })?;

        let claims = Claims {
            access_token: access_token.to_owned(),
            iat: now,
            exp,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|error| AuthError::JwtSigning {
            reason: error.to_string(),
        })?;

        Ok(IssuedJwt {
            token,
            iat: now,
            exp,
        })
    }

    /// Verifies a JWT as [`JwtKeys::verify`] does, at the Unix second `now`.
    pub(crate) fn verify_at(&self, jwt: &str, now: u64) -> Result<Claims, AuthError> {
        // 1. Check the signature, the algorithm and the claim types. The
        //    library's expiry check reads the system clock and accepts a
        //    token in its `exp` second, so expiry is checked below instead.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.leeway = 0;

        let claims = jsonwebtoken::decode::<Claims>(jwt, &self.decoding, &validation)
            .map_err(|error| AuthError::InvalidJwt {
                reason: error.to_string(),
            })?
            .claims;

        // 2. Reject the token from its `exp` second on.
        if now >= claims.exp {
            return Err(AuthError::ExpiredJwt { exp: claims.exp });
        }

        Ok(claims)
    }
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("JwtKeys(<redacted>)")
    }
}

impl fmt::Debug for IssuedJwt {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("IssuedJwt")
            .field("token", &"<redacted>")
            .field("iat", &self.iat)
            .field("exp", &self.exp)
            .finish()
    }
}

impl fmt::Debug for Claims {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Claims")
            .field("access_token", &"<redacted>")
            .field("iat", &self.iat)
            .field("exp", &self.exp)
            .finish()
    }
}

/// Returns the current Unix time in whole seconds, or 0 for a clock set
/// before 1970.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    const NOW: u64 = 1_700_000_000;
    const TOKEN: &str = "testadmin-643173b3dee81fff";

    fn keys(secret: &str) -> JwtKeys {
        JwtKeys::new(&ApiSecret::new(secret).unwrap())
    }

    fn payload(jwt: &str) -> serde_json::Value {
        let encoded = jwt.split('.').nth(1).unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn issued_jwt_round_trips() {
        let keys = keys("correct horse battery staple");
        let issued = keys.issue_at(TOKEN, DEFAULT_JWT_LIFETIME, NOW).unwrap();
        assert_eq!(issued.iat, NOW);
        assert_eq!(issued.exp, NOW + 28_800);

        let claims = keys.verify_at(&issued.token, NOW + 1).unwrap();
        assert_eq!(claims.access_token, TOKEN);
        assert_eq!(claims.iat, NOW);
        assert_eq!(claims.exp, NOW + 28_800);
    }

    #[test]
    fn payload_has_reference_fields() {
        let issued = keys("correct horse battery staple")
            .issue_at(TOKEN, DEFAULT_JWT_LIFETIME, NOW)
            .unwrap();
        assert_eq!(
            serde_json::to_string(&payload(&issued.token)).unwrap(),
            format!(
                r#"{{"accessToken":"{TOKEN}","iat":{NOW},"exp":{}}}"#,
                NOW + 28_800
            )
        );
    }

    #[test]
    fn header_is_hs256() {
        let issued = keys("correct horse battery staple")
            .issue_at(TOKEN, DEFAULT_JWT_LIFETIME, NOW)
            .unwrap();
        let header = jsonwebtoken::decode_header(&issued.token).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
    }

    #[test]
    fn expiry_has_no_leeway() {
        let keys = keys("correct horse battery staple");
        let issued = keys.issue_at(TOKEN, Duration::from_secs(60), NOW).unwrap();

        assert!(keys.verify_at(&issued.token, NOW + 59).is_ok());
        let error = keys.verify_at(&issued.token, NOW + 60).unwrap_err();
        assert!(
            matches!(error, AuthError::ExpiredJwt { exp } if exp == NOW + 60),
            "{error:?}"
        );
        assert!(keys.verify_at(&issued.token, NOW + 3600).is_err());
    }

    #[test]
    fn verify_uses_system_clock() {
        let keys = keys("correct horse battery staple");
        let fresh = keys.issue(TOKEN, Duration::from_secs(60)).unwrap();
        assert!(keys.verify(&fresh.token).is_ok());

        let stale = keys.issue_at(TOKEN, Duration::from_secs(60), NOW).unwrap();
        assert!(matches!(
            keys.verify(&stale.token),
            Err(AuthError::ExpiredJwt { .. })
        ));
    }

    #[test]
    fn same_secret_gives_same_keys() {
        let issued = keys("correct horse battery staple")
            .issue_at(TOKEN, DEFAULT_JWT_LIFETIME, NOW)
            .unwrap();
        assert!(
            keys("correct horse battery staple")
                .verify_at(&issued.token, NOW)
                .is_ok()
        );
    }

    #[test]
    fn other_secret_rejects_jwt() {
        let issued = keys("correct horse battery staple")
            .issue_at(TOKEN, DEFAULT_JWT_LIFETIME, NOW)
            .unwrap();
        let error = keys("another secret of length")
            .verify_at(&issued.token, NOW)
            .unwrap_err();
        assert!(matches!(error, AuthError::InvalidJwt { .. }), "{error:?}");
    }

    #[test]
    fn key_is_not_raw_secret() {
        let secret = "correct horse battery staple";
        let raw = JwtKeys {
            encoding: EncodingKey::from_secret(secret.as_bytes()).unwrap(),
            decoding: DecodingKey::from_secret(secret.as_bytes()).unwrap(),
        };
        let issued = raw.issue_at(TOKEN, DEFAULT_JWT_LIFETIME, NOW).unwrap();
        assert!(keys(secret).verify_at(&issued.token, NOW).is_err());
    }

    #[test]
    fn tampered_payload_rejected() {
        let keys = keys("correct horse battery staple");
        let issued = keys.issue_at(TOKEN, DEFAULT_JWT_LIFETIME, NOW).unwrap();
        let mut parts: Vec<String> = issued.token.split('.').map(str::to_owned).collect();
        let forged = serde_json::json!({"accessToken": "other-0000000000000000", "iat": NOW, "exp": NOW + 28_800});
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged.to_string());
        assert!(matches!(
            keys.verify_at(&parts.join("."), NOW),
            Err(AuthError::InvalidJwt { .. })
        ));
    }

    #[test]
    fn malformed_jwt_rejected() {
        let keys = keys("correct horse battery staple");
        for jwt in ["", "abc", "a.b.c", TOKEN] {
            assert!(
                matches!(keys.verify_at(jwt, NOW), Err(AuthError::InvalidJwt { .. })),
                "{jwt:?}"
            );
        }
    }

    #[test]
    fn unsigned_jwt_rejected() {
        let keys = keys("correct horse battery staple");
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = engine.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let body = engine.encode(format!(
            r#"{{"accessToken":"{TOKEN}","iat":{NOW},"exp":{}}}"#,
            NOW + 60
        ));
        assert!(keys.verify_at(&format!("{header}.{body}."), NOW).is_err());
    }

    #[test]
    fn missing_exp_rejected() {
        let keys = keys("correct horse battery staple");
        #[derive(Serialize)]
        struct NoExpiry<'a> {
            #[serde(rename = "accessToken")]
            access_token: &'a str,
            iat: u64,
        }
        let jwt = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &NoExpiry {
                access_token: TOKEN,
                iat: NOW,
            },
            &keys.encoding,
        )
        .unwrap();
        assert!(matches!(
            keys.verify_at(&jwt, NOW),
            Err(AuthError::InvalidJwt { .. })
        ));
    }

    #[test]
    fn overflowing_lifetime_rejected() {
        let keys = keys("correct horse battery staple");
        let error = keys
            .issue_at(TOKEN, Duration::from_secs(u64::MAX), NOW)
            .unwrap_err();
        assert!(
            matches!(error, AuthError::InvalidLifetime { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn debug_hides_token() {
        let keys = keys("correct horse battery staple");
        let issued = keys.issue_at(TOKEN, DEFAULT_JWT_LIFETIME, NOW).unwrap();
        let claims = keys.verify_at(&issued.token, NOW).unwrap();

        let printed = format!("{keys:?} {issued:?} {claims:?}");
        assert!(!printed.contains(&issued.token), "{printed}");
        assert!(!printed.contains(TOKEN), "{printed}");
    }
}
