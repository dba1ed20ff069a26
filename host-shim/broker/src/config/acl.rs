//! The `acl_file` format: Mosquitto's. One rule a line:
//!
//! ```text
//! # comment
//! topic [read|write|readwrite|deny] FILTER    (before any user: anonymous clients)
//! user NAME
//! topic [read|write|readwrite|deny] FILTER    (clients connected as NAME)
//! pattern [read|write|readwrite|deny] FILTER  (every client; %c, %u replaced)
//! ```
//!
//! The access word may be left out (then `readwrite`); the filter is the
//! rest of the line, so it may hold spaces when the access word is given.

use super::ConfigError;
use crate::auth::{Access, Acl, Rule};
use std::path::Path;

/// A line of an ACL file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclFileError {
    /// The line starts with a word that is not `topic`, `pattern` or `user`.
    #[error("line {line}: unknown keyword `{keyword}`; expected `topic`, `pattern` or `user`")]
    UnknownKeyword {
        /// The line number, from 1.
        line: usize,
        /// The word.
        keyword: String,
    },
    /// `user` without a name.
    #[error("line {line}: `user` needs a user name")]
    NoUser {
        /// The line number, from 1.
        line: usize,
    },
    /// `topic` or `pattern` without a filter.
    #[error("line {line}: `{keyword}` needs a topic filter, as in `{keyword} read sensors/#`")]
    NoFilter {
        /// The line number, from 1.
        line: usize,
        /// `topic` or `pattern`.
        keyword: &'static str,
    },
    /// The filter is not a valid MQTT topic filter.
    #[error("line {line}: `{filter}` is not a valid topic filter: {reason}")]
    BadFilter {
        /// The line number, from 1.
        line: usize,
        /// The filter.
        filter: String,
        /// Why.
        reason: String,
    },
}

/// Reads an ACL file.
///
/// # Errors
///
/// [`ConfigError::AclFileUnreadable`] when the file cannot be read,
/// [`ConfigError::AclFile`] for a line that cannot be used.
pub(crate) fn read_acl_file(path: &Path) -> Result<Acl, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::AclFileUnreadable {
        path: path.to_owned(),
        error,
    })?;
    parse_acl_file(&text).map_err(|error| ConfigError::AclFile {
        path: path.to_owned(),
        error,
    })
}

/// The parsing half of [`read_acl_file`].
fn parse_acl_file(text: &str) -> Result<Acl, AclFileError> {
    let mut acl = Acl::default();
    let mut user: Option<String> = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim_end();
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (keyword, rest) = line.split_once([' ', '\t']).unwrap_or((line, ""));
        let rest = rest.trim_start();
        match keyword {
            "user" => {
                if rest.is_empty() {
                    return Err(AclFileError::NoUser { line: number });
                }
                acl.users.entry(rest.to_owned()).or_default();
                user = Some(rest.to_owned());
            }
            "topic" | "pattern" => {
                let keyword = if keyword == "topic" {
                    "topic"
                } else {
                    "pattern"
                };
                let rule = parse_rule(rest, keyword, number)?;
                match (keyword, &user) {
                    ("pattern", _) => acl.patterns.push(rule),
                    (_, None) => acl.anonymous.push(rule),
                    (_, Some(name)) => acl.users.entry(name.clone()).or_default().push(rule),
                }
            }
            other => {
                return Err(AclFileError::UnknownKeyword {
                    line: number,
                    keyword: other.to_owned(),
                })
            }
        }
    }
    Ok(acl)
}

/// `[ACCESS] FILTER`, the rest of a `topic` or `pattern` line.
fn parse_rule(rest: &str, keyword: &'static str, line: usize) -> Result<Rule, AclFileError> {
    let (access, filter) = match rest.split_once([' ', '\t']) {
        Some((word, filter)) if Access::parse(word).is_some() => {
            (Access::parse(word), filter.trim_start())
        }
        _ if Access::parse(rest).is_some() => (None, ""),
        _ => (Some(Access::ReadWrite), rest),
    };
    let Some(access) = access.filter(|_| !filter.is_empty()) else {
        return Err(AclFileError::NoFilter { line, keyword });
    };
    mqtt_topic::validate_filter(filter).map_err(|e| AclFileError::BadFilter {
        line,
        filter: filter.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(Rule {
        access,
        filter: filter.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mosquitto_acl_lines() {
        let acl = parse_acl_file(
            "# anonymous\ntopic read $SYS/#\ntopic public/#\n\nuser roger\n\
             topic write roger/out\ntopic deny roger/secret\n  topic readwrite a b/c\n\
             pattern write devices/%c/state\nuser bob\n",
        )
        .unwrap();
        let rule = |access, filter: &str| Rule {
            access,
            filter: filter.to_owned(),
        };
        assert_eq!(
            acl.anonymous,
            [
                rule(Access::Read, "$SYS/#"),
                rule(Access::ReadWrite, "public/#")
            ]
        );
        assert_eq!(
            acl.users["roger"],
            [
                rule(Access::Write, "roger/out"),
                rule(Access::Deny, "roger/secret"),
                rule(Access::ReadWrite, "a b/c"),
            ]
        );
        assert!(acl.users["bob"].is_empty());
        assert_eq!(acl.patterns, [rule(Access::Write, "devices/%c/state")]);
    }

    #[test]
    fn errors_name_the_line() {
        let err = |text: &str| parse_acl_file(text).unwrap_err().to_string();
        let e = err("topic a\nallow a\n");
        assert!(e.starts_with("line 2: unknown keyword `allow`"), "{e}");
        let e = err("user\n");
        assert!(e.starts_with("line 1: `user` needs"), "{e}");
        let e = err("\ntopic read\n");
        assert!(e.starts_with("line 2: `topic` needs a topic filter"), "{e}");
        let e = err("pattern write a/#/b\n");
        assert!(
            e.starts_with("line 1: `a/#/b` is not a valid topic filter"),
            "{e}"
        );
    }
}
