//! The `password_file` format: Mosquitto's, one `username:password` account
//! a line, the password hashed as `mosquitto_passwd` writes it (`$7$...` or
//! `$6$...`, see [`Secret`]) or, for older files of this broker, in plain
//! text.

use super::{ConfigError, User};
use crate::auth::{HashError, Secret};
use std::path::Path;

/// A line of a password file that cannot be used. Messages name the line
/// but never show its content, which may hold a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordFileError {
    /// The line has no `:` between username and password.
    #[error("line {line}: expected `username:password`, found no `:`")]
    NoColon {
        /// The line number, from 1.
        line: usize,
    },
    /// The line starts with `:`.
    #[error("line {line}: the username is empty")]
    EmptyUsername {
        /// The line number, from 1.
        line: usize,
    },
    /// The password field starts like a hash (`$6$` or `$7$`) but is not a
    /// valid one.
    #[error("line {line}: user `{username}`: {error}")]
    Hash {
        /// The line number, from 1.
        line: usize,
        /// The username.
        username: String,
        /// What is wrong with the hash.
        error: HashError,
    },
    /// The username is already defined, inline or on an earlier line.
    #[error("line {line}: user `{username}` is already defined")]
    Duplicate {
        /// The line number, from 1.
        line: usize,
        /// The username.
        username: String,
    },
}

/// One account of a password file.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    /// The CONNECT username.
    pub username: String,
    /// Its password.
    pub secret: Secret,
}

/// Reads a password file: one `username:password` account a line; the
/// password is everything after the first `:`, hashed when it starts with
/// `$6$` or `$7$`, plain text otherwise. Blank lines and lines starting with
/// `#` are skipped. A username may appear only once, counting the accounts
/// already in `existing`.
///
/// # Errors
///
/// [`ConfigError::PasswordFileUnreadable`] when the file cannot be read,
/// [`ConfigError::PasswordFile`] for a line that cannot be used.
pub(crate) fn read_password_file(
    path: &Path,
    existing: &[User],
) -> Result<Vec<Account>, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|error| ConfigError::PasswordFileUnreadable {
            path: path.to_owned(),
            error,
        })?;
    parse_password_file(&text, existing).map_err(|error| ConfigError::PasswordFile {
        path: path.to_owned(),
        error,
    })
}

/// The parsing half of [`read_password_file`].
fn parse_password_file(text: &str, existing: &[User]) -> Result<Vec<Account>, PasswordFileError> {
    let mut users: Vec<Account> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((username, password)) = line.split_once(':') else {
            return Err(PasswordFileError::NoColon { line: number });
        };
        if username.is_empty() {
            return Err(PasswordFileError::EmptyUsername { line: number });
        }
        if existing.iter().any(|u| u.username == username)
            || users.iter().any(|u| u.username == username)
        {
            return Err(PasswordFileError::Duplicate {
                line: number,
                username: username.to_owned(),
            });
        }
        let secret = if Secret::is_hashed(password) {
            Secret::parse_hashed(password).map_err(|error| PasswordFileError::Hash {
                line: number,
                username: username.to_owned(),
                error,
            })?
        } else {
            Secret::plain(password)
        };
        users.push(Account {
            username: username.to_owned(),
            secret,
        });
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_file_lines() {
        let existing = [User {
            username: "inline".to_owned(),
            password: "x".to_owned(),
        }];
        let users = parse_password_file(
            "# accounts\nalice:secret\r\n\nbob:a:b:c\ncarol:\n",
            &existing,
        )
        .unwrap();
        let pairs = [("alice", "secret"), ("bob", "a:b:c"), ("carol", "")];
        assert_eq!(users.len(), pairs.len());
        for (user, (name, password)) in users.iter().zip(pairs) {
            assert_eq!(user.username, name);
            assert!(user.secret.verify(password.as_bytes()), "{name}");
            assert!(!user.secret.verify(b"other"), "{name}");
        }

        let err = parse_password_file("alice:1\nhunter2\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(!err.contains("hunter2"), "the line may hold a password");
        let err = parse_password_file(":pw\n", &[]).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("empty"), "{err}");
        let err = parse_password_file("a:1\na:2\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("already"), "{err}");
        let err = parse_password_file("inline:1\n", &existing)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1") && err.contains("already"), "{err}");
        let err = parse_password_file("a:$7$101$c2FsdA==\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 1") && err.contains("user `a`") && err.contains("$7$iterations"),
            "{err}"
        );
    }
}
