//! One account's password as the broker keeps it: never the text itself,
//! always a digest compared in constant time.
//!
//! The hashed forms are those of Mosquitto's `mosquitto_passwd`, so a
//! password file made for Mosquitto works unchanged:
//!
//! - `$7$ITERATIONS$SALT$HASH`: PBKDF2-HMAC-SHA512 (what `mosquitto_passwd`
//!   writes since Mosquitto 2.0);
//! - `$6$SALT$HASH`: SHA-512 of the password followed by the salt (Mosquitto
//!   1.x, and `mosquitto_passwd -H sha512`);
//!
//! with the salt and the hash in standard base64.

use base64::Engine as _;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// The most PBKDF2 iterations accepted: each CONNECT for a hashed account
/// costs that many HMACs on the broker's event loop. `mosquitto_passwd`
/// writes 101 by default.
pub(crate) const MAX_ITERATIONS: u32 = 1_000_000;

/// A password as checked at CONNECT.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Secret {
    /// A password given in plain text (inline `users`, or a plain
    /// `password_file` line), kept as its SHA-512 so both sides of the
    /// comparison have the same length.
    Plain([u8; 64]),
    /// `$6$`: SHA-512 of password and salt.
    Sha512 {
        /// The salt.
        salt: Vec<u8>,
        /// The digest.
        hash: Vec<u8>,
    },
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2 {
        /// The iteration count.
        iterations: u32,
        /// The salt.
        salt: Vec<u8>,
        /// The derived key; its length is the one derived.
        hash: Vec<u8>,
    },
}

// Never print a digest, even in debug output.
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Secret::Plain(_) => "plain",
            Secret::Sha512 { .. } => "sha512",
            Secret::Pbkdf2 { .. } => "pbkdf2-sha512",
        };
        write!(f, "Secret({kind})")
    }
}

/// Why a hashed password field cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// Not `$6$SALT$HASH` or `$7$ITERATIONS$SALT$HASH`.
    #[error("expected `$7$iterations$salt$hash` or `$6$salt$hash` (as mosquitto_passwd writes)")]
    Shape,
    /// The salt or the hash is not standard base64, or is empty.
    #[error("the {0} is not base64")]
    Base64(&'static str),
    /// The iteration count is not a number from 1 to 1,000,000.
    #[error("the iteration count must be a number from 1 to {MAX_ITERATIONS}")]
    Iterations,
    /// A `$6$` hash that is not 64 bytes long.
    #[error("a `$6$` hash must be 64 bytes (SHA-512)")]
    Length,
}

impl Secret {
    /// A plain-text password.
    pub(crate) fn plain(password: &str) -> Secret {
        Secret::Plain(Sha512::digest(password.as_bytes()).into())
    }

    /// Whether `field` is in one of the hashed forms (`$6$...` or `$7$...`),
    /// valid or not.
    pub(crate) fn is_hashed(field: &str) -> bool {
        field.starts_with("$6$") || field.starts_with("$7$")
    }

    /// Parses a hashed password field of `mosquitto_passwd`.
    pub(crate) fn parse_hashed(field: &str) -> Result<Secret, HashError> {
        let decode = |what: &'static str, text: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .ok()
                .filter(|bytes| !bytes.is_empty())
                .ok_or(HashError::Base64(what))
        };
        if let Some(rest) = field.strip_prefix("$6$") {
            let (salt, hash) = rest.split_once('$').ok_or(HashError::Shape)?;
            let (salt, hash) = (decode("salt", salt)?, decode("hash", hash)?);
            if hash.len() != 64 {
                return Err(HashError::Length);
            }
            return Ok(Secret::Sha512 { salt, hash });
        }
        if let Some(rest) = field.strip_prefix("$7$") {
            let mut parts = rest.splitn(3, '$');
            let (Some(iterations), Some(salt), Some(hash)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(HashError::Shape);
            };
            let iterations = iterations
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_ITERATIONS).contains(n))
                .ok_or(HashError::Iterations)?;
            let (salt, hash) = (decode("salt", salt)?, decode("hash", hash)?);
            return Ok(Secret::Pbkdf2 {
                iterations,
                salt,
                hash,
            });
        }
        Err(HashError::Shape)
    }

    /// Whether `password` is this secret's password, compared in constant
    /// time.
    pub(crate) fn verify(&self, password: &[u8]) -> bool {
        match self {
            Secret::Plain(digest) => {
                let given: [u8; 64] = Sha512::digest(password).into();
                given.ct_eq(digest).into()
            }
            Secret::Sha512 { salt, hash } => {
                let given = Sha512::new()
                    .chain_update(password)
                    .chain_update(salt)
                    .finalize();
                given.as_slice().ct_eq(hash).into()
            }
            Secret::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => {
                let mut given = vec![0u8; hash.len()];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut given);
                given.ct_eq(hash).into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_secrets_compare_by_digest() {
        let secret = Secret::plain("hunter2");
        assert!(secret.verify(b"hunter2"));
        assert!(!secret.verify(b"hunter3"));
        assert!(!secret.verify(b""));
        assert_eq!(format!("{secret:?}"), "Secret(plain)");
    }

    #[test]
    fn hashed_forms_verify() {
        // Made here with the formulas of Mosquitto's password_mosq.c; the
        // black-box tests check files made by mosquitto_passwd itself.
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let salt = b"0123456789ab";
        let sha = Sha512::new()
            .chain_update(b"pw")
            .chain_update(salt)
            .finalize();
        let six = format!("$6${}${}", b64(salt), b64(&sha));
        let secret = Secret::parse_hashed(&six).unwrap();
        assert!(secret.verify(b"pw") && !secret.verify(b"pW"));

        let mut key = [0u8; 64];
        pbkdf2::pbkdf2_hmac::<Sha512>(b"pw", salt, 101, &mut key);
        let seven = format!("$7$101${}${}", b64(salt), b64(&key));
        let secret = Secret::parse_hashed(&seven).unwrap();
        assert!(secret.verify(b"pw") && !secret.verify(b"pw "));
    }

    #[test]
    fn bad_hashes_say_what_is_wrong() {
        assert_eq!(Secret::parse_hashed("$6$abc"), Err(HashError::Shape));
        assert_eq!(Secret::parse_hashed("$7$101$abc"), Err(HashError::Shape));
        assert_eq!(
            Secret::parse_hashed("$7$0$YWJj$YWJj"),
            Err(HashError::Iterations)
        );
        assert_eq!(
            Secret::parse_hashed("$7$x$YWJj$YWJj"),
            Err(HashError::Iterations)
        );
        assert_eq!(
            Secret::parse_hashed("$7$101$!!$YWJj"),
            Err(HashError::Base64("salt"))
        );
        assert_eq!(Secret::parse_hashed("$6$YWJj$YWJj"), Err(HashError::Length));
        assert!(Secret::is_hashed("$7$") && !Secret::is_hashed("$5$x"));
    }
}
