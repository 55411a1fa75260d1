//! The error type of every fallible operation in this crate.
//!
//! No variant carries a secret, an access token or a JWT, so an error can be
//! logged or returned to a client as it is.

use thiserror::Error;

/// Failure of a configuration check, a JWT operation or a credential lookup.
#[derive(Debug, Error)]
pub enum AuthError {
    /// The configured API_SECRET is shorter than the reference's minimum.
    #[error(
        "API_SECRET is too short: it has {length} characters and at least {minimum} are required; set a longer API_SECRET"
    )]
    SecretTooShort {
        /// Length of the rejected secret, in UTF-16 code units as JavaScript counts them.
        length: usize,
        /// Minimum length the reference accepts.
        minimum: usize,
    },

    /// The requested JWT lifetime does not fit the `exp` claim.
    #[error(
        "invalid JWT lifetime of {seconds} s: the expiry time overflows; use a shorter lifetime"
    )]
    InvalidLifetime {
        /// Requested lifetime in seconds.
        seconds: u64,
    },

    /// Signing a JWT failed.
    #[error("failed to sign JWT: {reason}")]
    JwtSigning {
        /// Description from the JWT library, which never includes key material.
        reason: String,
    },

    /// A JWT is malformed, has a bad signature, uses another algorithm or
    /// lacks a claim.
    #[error("invalid JWT: {reason}")]
    InvalidJwt {
        /// Description from the JWT library, which never includes the token.
        reason: String,
    },

    /// A JWT was valid but its `exp` time has passed.
    #[error("JWT expired at {exp} (Unix seconds); request a new one")]
    ExpiredJwt {
        /// The token's `exp` claim, in Unix seconds.
        exp: u64,
    },

    /// A credential was well formed but matches no stored subject, for
    /// example a JWT issued for a subject that has since been deleted.
    #[error("access token matches no subject")]
    UnknownAccessToken,
}
