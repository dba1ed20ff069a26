//! Topic names and topic filters, following MQTT 3.1.1 and MQTT 5.0 section
//! 4.7 ("Topic Names and Topic Filters") and, for shared subscriptions,
//! MQTT 5.0 section 4.8.2.
//!
//! - A *topic name* is what a PUBLISH carries: no wildcards
//!   ([`validate_name`], [`TopicName`]).
//! - A *topic filter* is what a SUBSCRIBE carries: it may use `+` (one level)
//!   and `#` (this level and every level below), and may be a shared
//!   subscription `$share/{group}/{filter}` ([`validate_filter`],
//!   [`parse_shared`], [`TopicFilter`]).
//! - [`matches()`] decides whether a filter selects a name.
//!
//! Both kinds are UTF-8 strings of 1 to [`MAX_TOPIC_LEN`] bytes without
//! U+0000. Levels are separated by `/`; empty levels are legal (`a//b`, `/a`).
//! Matching compares levels character for character: no normalization, no
//! case folding, no trimming (MQTT-4.7.3-4).
//!
//! Every [`TopicError`] knows the normative statements it enforces
//! ([`TopicError::statement_ids`], [`TopicError::statements`]).

use std::fmt;
use std::str::FromStr;

/// Maximum length of a topic name or filter, in bytes of UTF-8
/// (MQTT-4.7.3-3): the length prefix of an MQTT string is 16 bits.
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Prefix of a shared subscription filter (MQTT 5.0, 4.8.2).
const SHARE_PREFIX: &str = "$share/";

/// Longest part of a topic quoted in an error message, in characters, so that
/// a 64 KiB topic does not produce a 64 KiB log line.
const QUOTE_LIMIT: usize = 60;

/// A version of the MQTT protocol: the one version type of the workspace.
///
/// It qualifies statement ids here (the same id can name different rules
/// in the two versions: MQTT-4.7.1-1 is "no wildcards in a topic name" in
/// 3.1.1 but "'#' must be last" in 5.0), and it is what configurations, the
/// command line, the host's client and the broker speak of.
///
/// In JSON (feature `serde`) it is `"3.1.1"` or `"5"`; [`FromStr`] also
/// takes the spellings of Mosquitto's `-V` flag (`311`, `mqttv311`, `5.0`,
/// `mqttv5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
// The schema speaks to whoever writes a configuration, not to programmers.
#[cfg_attr(
    feature = "schemars",
    schemars(description = "MQTT protocol version, as written in a configuration.")
)]
pub enum MqttVersion {
    /// MQTT 3.1.1.
    #[cfg_attr(feature = "serde", serde(rename = "3.1.1"))]
    V311,
    /// MQTT 5.0.
    #[default]
    #[cfg_attr(feature = "serde", serde(rename = "5"))]
    V5,
}

impl MqttVersion {
    /// The protocol level byte of a CONNECT: 4 for 3.1.1, 5 for 5.0.
    pub fn level(self) -> u8 {
        match self {
            MqttVersion::V311 => 4,
            MqttVersion::V5 => 5,
        }
    }

    /// The version of a CONNECT's protocol level, if it is one of the two.
    pub fn from_level(level: u8) -> Option<MqttVersion> {
        match level {
            4 => Some(MqttVersion::V311),
            5 => Some(MqttVersion::V5),
            _ => None,
        }
    }

    /// The short name used in configurations: `3.1.1` or `5`.
    pub fn as_str(self) -> &'static str {
        match self {
            MqttVersion::V311 => "3.1.1",
            MqttVersion::V5 => "5",
        }
    }
}

impl fmt::Display for MqttVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MqttVersion::V311 => "MQTT 3.1.1",
            MqttVersion::V5 => "MQTT 5.0",
        })
    }
}

/// A string that names no MQTT version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVersion(pub String);

impl fmt::Display for UnknownVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown MQTT version {:?}: use 3.1.1 (or 311, mqttv311) or 5 (or 5.0, mqttv5)",
            self.0
        )
    }
}

impl std::error::Error for UnknownVersion {}

impl FromStr for MqttVersion {
    type Err = UnknownVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "3.1.1" | "311" | "mqttv311" | "v311" | "4" => Ok(MqttVersion::V311),
            "5" | "5.0" | "mqttv5" | "v5" => Ok(MqttVersion::V5),
            _ => Err(UnknownVersion(s.to_owned())),
        }
    }
}

/// Why a string is not a valid topic name or topic filter.
///
/// There is one variant per rule. Levels are numbered from 1, counted over
/// the whole string (for a shared filter, `$share` is level 1 and the group
/// is level 2). `topic` fields hold the whole offending string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicError {
    /// The topic is the empty string (MQTT-4.7.3-1).
    Empty,
    /// The topic is longer than [`MAX_TOPIC_LEN`] bytes (MQTT-4.7.3-3).
    TooLong {
        /// Length of the topic in bytes of UTF-8.
        len: usize,
    },
    /// The bytes are not well-formed UTF-8 (MQTT-1.5.3-1, MQTT-1.5.4-1).
    /// Only [`validate_name_bytes`] and [`validate_filter_bytes`] return it:
    /// a `&str` is always well-formed.
    InvalidUtf8 {
        /// Number of leading bytes that are valid UTF-8.
        valid_up_to: usize,
    },
    /// The topic contains U+0000 (MQTT-4.7.3-2).
    NullChar {
        /// Level holding the first U+0000.
        level: usize,
        /// The offending topic.
        topic: String,
    },
    /// A topic name contains `+` or `#` (MQTT-3.3.2-2; 4.7.1-1 in 3.1.1,
    /// 4.7.0-1 in 5.0).
    WildcardInName {
        /// The first wildcard found, `'+'` or `'#'`.
        wildcard: char,
        /// Level holding it.
        level: usize,
        /// The offending topic name.
        topic: String,
    },
    /// A `#` level is followed by another level, as in `a/#/b`.
    MultiLevelNotLast {
        /// Level of the `#`.
        level: usize,
        /// The offending topic filter.
        topic: String,
    },
    /// `#` shares its level with other characters, as in `a/b#`.
    MultiLevelNotWholeLevel {
        /// Level holding the `#`.
        level: usize,
        /// The offending topic filter.
        topic: String,
    },
    /// `+` shares its level with other characters, as in `a/b+`.
    SingleLevelNotWholeLevel {
        /// Level holding the `+`.
        level: usize,
        /// The offending topic filter.
        topic: String,
    },
    /// A shared subscription has an empty share name, as in `$share//a`
    /// (MQTT-4.8.2-1).
    EmptyShareName {
        /// The offending topic filter.
        topic: String,
    },
    /// The share name contains `+` or `#`, as in `$share/gr+p/a`
    /// (MQTT-4.8.2-2). (`/` cannot occur: it ends the share name.)
    ShareNameWildcard {
        /// The first wildcard found in the share name.
        wildcard: char,
        /// The share name.
        group: String,
    },
    /// Nothing follows the share name, as in `$share/group` or
    /// `$share/group/` (MQTT-4.8.2-2).
    MissingSharedFilter {
        /// The offending topic filter.
        topic: String,
    },
}

use MqttVersion::{V311, V5};

impl TopicError {
    /// Ids of the normative statements this error enforces, MQTT 5.0 ids
    /// first, then MQTT 3.1.1 ids not already listed, e.g. `["MQTT-4.7.3-1"]`.
    ///
    /// An id can mean different rules in the two versions; use
    /// [`TopicError::statements`] when the version matters.
    pub fn statement_ids(&self) -> &'static [&'static str] {
        match self {
            TopicError::Empty => &["MQTT-4.7.3-1"],
            TopicError::TooLong { .. } => &["MQTT-4.7.3-3"],
            TopicError::InvalidUtf8 { .. } => &["MQTT-1.5.4-1", "MQTT-3.8.3-1", "MQTT-1.5.3-1"],
            TopicError::NullChar { .. } => &["MQTT-4.7.3-2", "MQTT-1.5.4-2", "MQTT-1.5.3-2"],
            TopicError::WildcardInName { .. } => &["MQTT-4.7.0-1", "MQTT-3.3.2-2", "MQTT-4.7.1-1"],
            TopicError::MultiLevelNotLast { .. } | TopicError::MultiLevelNotWholeLevel { .. } => {
                &["MQTT-4.7.1-1", "MQTT-4.7.1-2"]
            }
            TopicError::SingleLevelNotWholeLevel { .. } => &["MQTT-4.7.1-2", "MQTT-4.7.1-3"],
            TopicError::EmptyShareName { .. } => &["MQTT-4.8.2-1"],
            TopicError::ShareNameWildcard { .. } | TopicError::MissingSharedFilter { .. } => {
                &["MQTT-4.8.2-2"]
            }
        }
    }

    /// The normative statements this error enforces, each qualified by the
    /// specification version whose numbering it uses. Shared subscription
    /// errors cite MQTT 5.0 only: 3.1.1 has no shared subscriptions.
    pub fn statements(&self) -> &'static [(MqttVersion, &'static str)] {
        match self {
            TopicError::Empty => &[(V5, "MQTT-4.7.3-1"), (V311, "MQTT-4.7.3-1")],
            TopicError::TooLong { .. } => &[(V5, "MQTT-4.7.3-3"), (V311, "MQTT-4.7.3-3")],
            TopicError::InvalidUtf8 { .. } => &[
                (V5, "MQTT-1.5.4-1"),
                (V5, "MQTT-3.8.3-1"),
                (V311, "MQTT-1.5.3-1"),
                (V311, "MQTT-3.8.3-1"),
            ],
            TopicError::NullChar { .. } => &[
                (V5, "MQTT-4.7.3-2"),
                (V5, "MQTT-1.5.4-2"),
                (V311, "MQTT-4.7.3-2"),
                (V311, "MQTT-1.5.3-2"),
            ],
            TopicError::WildcardInName { .. } => &[
                (V5, "MQTT-4.7.0-1"),
                (V5, "MQTT-3.3.2-2"),
                (V311, "MQTT-4.7.1-1"),
                (V311, "MQTT-3.3.2-2"),
            ],
            TopicError::MultiLevelNotLast { .. } | TopicError::MultiLevelNotWholeLevel { .. } => {
                &[(V5, "MQTT-4.7.1-1"), (V311, "MQTT-4.7.1-2")]
            }
            TopicError::SingleLevelNotWholeLevel { .. } => {
                &[(V5, "MQTT-4.7.1-2"), (V311, "MQTT-4.7.1-3")]
            }
            TopicError::EmptyShareName { .. } => &[(V5, "MQTT-4.8.2-1")],
            TopicError::ShareNameWildcard { .. } | TopicError::MissingSharedFilter { .. } => {
                &[(V5, "MQTT-4.8.2-2")]
            }
        }
    }
}

/// Displays a topic in double quotes, escaped, shortened when very long.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(QUOTE_LIMIT) {
            None => write!(f, "\"{}\"", self.0.escape_debug()),
            Some((cut, _)) => write!(f, "\"{}\"...", self.0[..cut].escape_debug()),
        }
    }
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicError::Empty => f.write_str("a topic must be at least one character long"),
            TopicError::TooLong { len } => write!(
                f,
                "a topic must be at most {MAX_TOPIC_LEN} bytes of UTF-8, this one is {len} bytes"
            ),
            TopicError::InvalidUtf8 { valid_up_to } => write!(
                f,
                "a topic must be valid UTF-8: invalid byte sequence at byte {valid_up_to}"
            ),
            TopicError::NullChar { level, topic } => write!(
                f,
                "a topic cannot contain the null character U+0000 (level {level} of {})",
                Quoted(topic)
            ),
            TopicError::WildcardInName {
                wildcard,
                level,
                topic,
            } => write!(
                f,
                "topic names cannot contain wildcards: '{wildcard}' found in level {level} of {}",
                Quoted(topic)
            ),
            TopicError::MultiLevelNotLast { level, topic } => write!(
                f,
                "'#' must be the last level of a topic filter (level {level} of {})",
                Quoted(topic)
            ),
            TopicError::MultiLevelNotWholeLevel { level, topic } => write!(
                f,
                "'#' must be a whole level of a topic filter, alone or after '/' (level {level} of {})",
                Quoted(topic)
            ),
            TopicError::SingleLevelNotWholeLevel { level, topic } => write!(
                f,
                "'+' must be a whole level of a topic filter (level {level} of {})",
                Quoted(topic)
            ),
            TopicError::EmptyShareName { topic } => write!(
                f,
                "the share name of a shared subscription must be at least one character long ({})",
                Quoted(topic)
            ),
            TopicError::ShareNameWildcard { wildcard, group } => write!(
                f,
                "the share name of a shared subscription cannot contain wildcards: '{wildcard}' found in {}",
                Quoted(group)
            ),
            TopicError::MissingSharedFilter { topic } => write!(
                f,
                "a shared subscription needs a topic filter after the share name ({})",
                Quoted(topic)
            ),
        }
    }
}

impl std::error::Error for TopicError {}

/// 1-based level of the byte at `pos`.
fn level_at(topic: &str, pos: usize) -> usize {
    topic.as_bytes()[..pos]
        .iter()
        .filter(|&&b| b == b'/')
        .count()
        + 1
}

/// Rules shared by names and filters: length and U+0000 (MQTT-4.7.3-1..3).
fn check_string(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong { len: topic.len() });
    }
    if let Some(pos) = topic.find('\0') {
        return Err(TopicError::NullChar {
            level: level_at(topic, pos),
            topic: topic.to_owned(),
        });
    }
    Ok(())
}

/// Checks that a topic name is valid: 1 to [`MAX_TOPIC_LEN`] bytes, no
/// U+0000, and no wildcard `+` or `#` anywhere (MQTT-3.3.2-2).
///
/// Names starting with `$` are valid; see [`is_system_topic`].
///
/// ```
/// use mqtt_topic::validate_name;
/// assert!(validate_name("sensors/kitchen/temp").is_ok());
/// assert!(validate_name("sensors/+/temp").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    check_string(name)?;
    if let Some(pos) = name.find(['+', '#']) {
        return Err(TopicError::WildcardInName {
            wildcard: char::from(name.as_bytes()[pos]),
            level: level_at(name, pos),
            topic: name.to_owned(),
        });
    }
    Ok(())
}

/// Checks that a topic filter is valid: 1 to [`MAX_TOPIC_LEN`] bytes, no
/// U+0000, `+` and `#` each alone in their level, `#` only in the last
/// level; and, for `$share/{group}/{filter}`, a non-empty group without
/// wildcards followed by a valid filter (MQTT 5.0, 4.8.2).
///
/// ```
/// use mqtt_topic::validate_filter;
/// assert!(validate_filter("sensors/+/temp").is_ok());
/// assert!(validate_filter("$share/workers/jobs/#").is_ok());
/// assert!(validate_filter("sensors/#/temp").is_err());
/// ```
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    analyse_filter(filter).map(|_| ())
}

/// Checks raw bytes from the wire as a topic name: well-formed UTF-8
/// (MQTT-1.5.4-1) and then [`validate_name`]. Returns the name as `&str`.
pub fn validate_name_bytes(name: &[u8]) -> Result<&str, TopicError> {
    let name = utf8(name)?;
    validate_name(name)?;
    Ok(name)
}

/// Checks raw bytes from the wire as a topic filter: well-formed UTF-8
/// (MQTT-1.5.4-1, MQTT-3.8.3-1) and then [`validate_filter`]. Returns the
/// filter as `&str`.
pub fn validate_filter_bytes(filter: &[u8]) -> Result<&str, TopicError> {
    let filter = utf8(filter)?;
    validate_filter(filter)?;
    Ok(filter)
}

fn utf8(bytes: &[u8]) -> Result<&str, TopicError> {
    // Rust's decoder rejects overlongs and surrogates U+D800..U+DFFF, which is
    // exactly the well-formedness RFC 3629 asks for.
    std::str::from_utf8(bytes).map_err(|e| TopicError::InvalidUtf8 {
        valid_up_to: e.valid_up_to(),
    })
}

/// The parts of a shared subscription filter `$share/{group}/{filter}`
/// (MQTT 5.0, 4.8.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SharedFilter<'a> {
    /// The share name: the subscribers with the same group share messages.
    pub group: &'a str,
    /// The topic filter that selects the messages, e.g. `jobs/#`.
    pub filter: &'a str,
}

/// Validates a topic filter like [`validate_filter`] and splits it when it
/// is a shared subscription.
///
/// Returns `Ok(None)` for a valid filter that does not start with
/// `$share/` (a bare `$share` is an ordinary filter), `Ok(Some(_))` for a
/// valid shared filter, and an error otherwise: an invalid inner filter is
/// reported too, so `Ok(Some(_))` is always safe to use.
///
/// ```
/// use mqtt_topic::{parse_shared, SharedFilter};
/// assert_eq!(
///     parse_shared("$share/workers/jobs/#"),
///     Ok(Some(SharedFilter { group: "workers", filter: "jobs/#" }))
/// );
/// assert_eq!(parse_shared("jobs/#"), Ok(None));
/// assert!(parse_shared("$share/workers").is_err());
/// ```
pub fn parse_shared(filter: &str) -> Result<Option<SharedFilter<'_>>, TopicError> {
    analyse_filter(filter)
}

/// Whether `filter` asks for a shared subscription: it starts with
/// `$share/`, valid or not (MQTT 5.0, 4.8.2). Rules that apply to shared
/// subscriptions as such (no No Local, MQTT-3.8.3-4) can be checked before
/// the filter is; [`parse_shared`] validates it and splits it.
///
/// ```
/// use mqtt_topic::is_shared_filter;
/// assert!(is_shared_filter("$share/workers/jobs/#"));
/// assert!(is_shared_filter("$share//jobs"));
/// assert!(!is_shared_filter("$share"));
/// assert!(!is_shared_filter("jobs/#"));
/// ```
pub fn is_shared_filter(filter: &str) -> bool {
    filter.starts_with(SHARE_PREFIX)
}

/// Full filter validation; also returns the shared parts, if any.
fn analyse_filter(filter: &str) -> Result<Option<SharedFilter<'_>>, TopicError> {
    check_string(filter)?;
    let shared = split_shared(filter)?;
    match shared {
        // The inner filter starts at level 3: `$share` and the group come first.
        Some(s) => check_filter_levels(filter, s.filter, 3)?,
        None => check_filter_levels(filter, filter, 1)?,
    }
    Ok(shared)
}

/// The `$share/{group}/` syntax only (MQTT-4.8.2-1, MQTT-4.8.2-2).
fn split_shared(filter: &str) -> Result<Option<SharedFilter<'_>>, TopicError> {
    let Some(rest) = filter.strip_prefix(SHARE_PREFIX) else {
        return Ok(None);
    };
    let (group, inner) = match rest.split_once('/') {
        Some((group, inner)) => (group, inner),
        None => (rest, ""),
    };
    if group.is_empty() {
        return Err(TopicError::EmptyShareName {
            topic: filter.to_owned(),
        });
    }
    if let Some(wildcard) = group.chars().find(|c| matches!(c, '+' | '#')) {
        return Err(TopicError::ShareNameWildcard {
            wildcard,
            group: group.to_owned(),
        });
    }
    if inner.is_empty() {
        return Err(TopicError::MissingSharedFilter {
            topic: filter.to_owned(),
        });
    }
    Ok(Some(SharedFilter {
        group,
        filter: inner,
    }))
}

/// Wildcard placement (MQTT-4.7.1-1/-2 in 5.0). `levels` is the part of
/// `topic` to check, whose first level has number `first_level`; errors
/// quote the whole `topic` so the user sees what they wrote.
fn check_filter_levels(topic: &str, levels: &str, first_level: usize) -> Result<(), TopicError> {
    let mut iter = levels.split('/').peekable();
    let mut number = first_level;
    while let Some(level) = iter.next() {
        if level.contains('#') {
            if level != "#" {
                return Err(TopicError::MultiLevelNotWholeLevel {
                    level: number,
                    topic: topic.to_owned(),
                });
            }
            if iter.peek().is_some() {
                return Err(TopicError::MultiLevelNotLast {
                    level: number,
                    topic: topic.to_owned(),
                });
            }
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::SingleLevelNotWholeLevel {
                level: number,
                topic: topic.to_owned(),
            });
        }
        number += 1;
    }
    Ok(())
}

/// Whether the topic filter `filter` matches the topic name `name`.
///
/// Both must be valid, and `filter` must not be a shared filter (use the
/// `filter` part of [`parse_shared`], or [`TopicFilter::matches`]). On other
/// input the result is unspecified, but this never panics.
///
/// - Levels without wildcards match character for character (MQTT-4.7.3-4).
/// - `+` matches exactly one level, which may be empty.
/// - `#` matches its parent level and any number of levels below it:
///   `sport/#` matches `sport`, `sport/` and `sport/tennis/player1`.
/// - A filter whose first level is `+` or `#` does not match a name starting
///   with `$` (MQTT-4.7.2-1): `#` does not match `$SYS/uptime`.
///
/// ```
/// use mqtt_topic::matches;
/// assert!(matches("sport/+/player1", "sport/tennis/player1"));
/// assert!(matches("sport/#", "sport"));
/// assert!(!matches("#", "$SYS/uptime"));
/// assert!(matches("$SYS/#", "$SYS/uptime"));
/// ```
pub fn matches(filter: &str, name: &str) -> bool {
    if is_system_topic(name) && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut name_levels = name.split('/');
    loop {
        match (filter_levels.next(), name_levels.next()) {
            // In a valid filter '#' is last, so whatever remains matches,
            // including nothing at all (the parent level).
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(n)) if f == n => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether `name` starts with `$`, the prefix reserved for server topics
/// such as `$SYS/` (MQTT 4.7.2). Publishing there is allowed but unusual,
/// so callers warn rather than fail.
pub fn is_system_topic(name: &str) -> bool {
    name.starts_with('$')
}

/// The string plumbing both validated newtypes share: `as_str`,
/// `into_string`, parsing (which validates), `Display` and `AsRef<str>`.
macro_rules! validated_string {
    ($type:ident, $validate:ident, $what:literal) => {
        impl $type {
            #[doc = concat!("The ", $what, " as a string slice.")]
            pub fn as_str(&self) -> &str {
                &self.0
            }

            #[doc = concat!("The ", $what, " as an owned string.")]
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl FromStr for $type {
            type Err = TopicError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $validate(s)?;
                Ok($type(s.to_owned()))
            }
        }

        impl TryFrom<String> for $type {
            type Error = TopicError;

            /// Validates without copying the string.
            fn try_from(s: String) -> Result<Self, Self::Error> {
                $validate(&s)?;
                Ok($type(s))
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $type {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $type {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $type {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $type {
            fn eq(&self, other: &String) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<$type> for str {
            fn eq(&self, other: &$type) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$type> for &str {
            fn eq(&self, other: &$type) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$type> for String {
            fn eq(&self, other: &$type) -> bool {
                *self == other.0
            }
        }

        /// A JSON string, validated when read: an invalid one fails with
        /// the [`TopicError`] message.
        #[cfg(feature = "serde")]
        impl serde::Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        #[cfg(feature = "serde")]
        impl<'de> serde::Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                $type::try_from(text).map_err(serde::de::Error::custom)
            }
        }

        /// The schema of a plain string, so a configuration's schema is the
        /// same whether a field holds a `String` or this type.
        #[cfg(feature = "schemars")]
        impl schemars::JsonSchema for $type {
            fn inline_schema() -> bool {
                <String as schemars::JsonSchema>::inline_schema()
            }

            fn schema_name() -> std::borrow::Cow<'static, str> {
                <String as schemars::JsonSchema>::schema_name()
            }

            fn schema_id() -> std::borrow::Cow<'static, str> {
                <String as schemars::JsonSchema>::schema_id()
            }

            fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
                <String as schemars::JsonSchema>::json_schema(generator)
            }
        }
    };
}

/// A validated topic name, as carried by PUBLISH (see [`validate_name`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(String);

validated_string!(TopicName, validate_name, "name");

impl TopicName {
    /// Validates raw bytes from the wire as a topic name, like
    /// [`validate_name_bytes`], and keeps them.
    ///
    /// # Errors
    ///
    /// [`TopicError::InvalidUtf8`] for bytes that are not UTF-8, else what
    /// [`validate_name`] finds.
    pub fn from_bytes(name: &[u8]) -> Result<TopicName, TopicError> {
        validate_name_bytes(name).map(|name| TopicName(name.to_owned()))
    }

    /// Whether the name starts with `$` (see [`is_system_topic`]).
    pub fn is_system(&self) -> bool {
        is_system_topic(&self.0)
    }
}

/// A validated topic filter, as carried by SUBSCRIBE, possibly a shared
/// subscription (see [`validate_filter`]). Its string includes any
/// `$share/{group}/` prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(String);

validated_string!(TopicFilter, validate_filter, "filter");

impl TopicFilter {
    /// The group and inner filter when this is a shared subscription.
    pub fn shared(&self) -> Option<SharedFilter<'_>> {
        // Validated at construction, so the syntax check cannot fail here.
        split_shared(&self.0).ok().flatten()
    }

    /// The filter used for matching: the inner filter of a shared
    /// subscription, otherwise the whole filter.
    pub fn match_filter(&self) -> &str {
        self.shared().map_or(&self.0, |s| s.filter)
    }

    /// Whether this filter matches `name` (see [`matches()`]); a shared
    /// subscription matches with its inner filter.
    pub fn matches(&self, name: &TopicName) -> bool {
        matches(self.match_filter(), name.as_str())
    }

    /// Whether the filter used for matching has a `+` or `#` level, so that
    /// it can match more than one topic name.
    pub fn has_wildcards(&self) -> bool {
        // Validated: '+' and '#' only ever appear as whole levels.
        self.match_filter().contains(['+', '#'])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_quote_the_rule_and_the_level() {
        let msg = |r: Result<(), TopicError>| r.unwrap_err().to_string();
        assert_eq!(
            msg(validate_filter("a/#/b")),
            "'#' must be the last level of a topic filter (level 2 of \"a/#/b\")"
        );
        assert_eq!(
            msg(validate_name("+/a")),
            "topic names cannot contain wildcards: '+' found in level 1 of \"+/a\""
        );
        assert_eq!(
            msg(validate_name("")),
            "a topic must be at least one character long"
        );
        assert_eq!(
            msg(validate_name(&"a".repeat(70_000))),
            "a topic must be at most 65535 bytes of UTF-8, this one is 70000 bytes"
        );
        assert_eq!(
            msg(validate_filter("a/b\0")),
            "a topic cannot contain the null character U+0000 (level 2 of \"a/b\\0\")"
        );
        assert_eq!(
            msg(validate_filter("a/b#")),
            "'#' must be a whole level of a topic filter, alone or after '/' (level 2 of \"a/b#\")"
        );
        assert_eq!(
            msg(validate_filter("$share/g/a+")),
            "'+' must be a whole level of a topic filter (level 3 of \"$share/g/a+\")"
        );
        assert_eq!(
            msg(validate_filter("$share//a")),
            "the share name of a shared subscription must be at least one character long (\"$share//a\")"
        );
        assert_eq!(
            msg(validate_filter("$share/gr+p/a")),
            "the share name of a shared subscription cannot contain wildcards: '+' found in \"gr+p\""
        );
        assert_eq!(
            msg(validate_filter("$share/g/")),
            "a shared subscription needs a topic filter after the share name (\"$share/g/\")"
        );
        assert_eq!(
            validate_name_bytes(b"a/\xff").unwrap_err().to_string(),
            "a topic must be valid UTF-8: invalid byte sequence at byte 2"
        );
    }

    #[test]
    fn messages_are_lowercase_without_final_period() {
        let errors = [
            TopicError::Empty,
            TopicError::TooLong { len: 70_000 },
            TopicError::InvalidUtf8 { valid_up_to: 0 },
            validate_name("a\0").unwrap_err(),
            validate_name("#").unwrap_err(),
            validate_filter("#/a").unwrap_err(),
            validate_filter("a#").unwrap_err(),
            validate_filter("a+").unwrap_err(),
            validate_filter("$share//a").unwrap_err(),
            validate_filter("$share/#/a").unwrap_err(),
            validate_filter("$share/g").unwrap_err(),
        ];
        for e in errors {
            let m = e.to_string();
            assert!(!m.ends_with('.'), "{m}");
            assert!(!m.starts_with(char::is_uppercase), "{m}");
            assert!(!e.statement_ids().is_empty());
        }
    }

    #[test]
    fn long_topics_are_shortened_in_messages() {
        let topic = format!("{}/+x", "a".repeat(10_000));
        let m = validate_filter(&topic).unwrap_err().to_string();
        assert!(m.len() < 200, "{m}");
        assert!(m.contains("level 2"), "{m}");
    }

    #[test]
    fn statement_ids_agree_with_statements() {
        let errors = [
            TopicError::Empty,
            TopicError::TooLong { len: 0 },
            TopicError::InvalidUtf8 { valid_up_to: 0 },
            validate_name("\0").unwrap_err(),
            validate_name("+").unwrap_err(),
            validate_filter("#/a").unwrap_err(),
            validate_filter("a#").unwrap_err(),
            validate_filter("a+").unwrap_err(),
            validate_filter("$share//a").unwrap_err(),
            validate_filter("$share/#/a").unwrap_err(),
            validate_filter("$share/g").unwrap_err(),
        ];
        for e in errors {
            let mut from_statements: Vec<&str> = Vec::new();
            for (_, id) in e.statements() {
                if !from_statements.contains(id) {
                    from_statements.push(id);
                }
            }
            assert_eq!(e.statement_ids(), from_statements.as_slice(), "{e:?}");
        }
    }

    #[test]
    fn newtypes_compare_with_strings() {
        let name: TopicName = "a/b".parse().unwrap();
        assert_eq!(name, "a/b");
        assert!(name == *"a/b");
        assert_ne!(name, "a/c");
        assert_eq!(name, String::from("a/b"));
        assert_eq!("a/b", name);
        assert_eq!(String::from("a/b"), name);
        assert!(*"a/b" == name);
        let filter: TopicFilter = "a/+".parse().unwrap();
        assert_eq!(filter, "a/+");
        assert!(filter == *"a/+");
        assert_eq!(String::from("a/+"), filter);
    }

    #[test]
    fn newtypes_round_trip() {
        let name: TopicName = "$SYS/uptime".parse().unwrap();
        assert_eq!(name.as_str(), "$SYS/uptime");
        assert_eq!(name.to_string(), "$SYS/uptime");
        assert_eq!(name.as_ref(), "$SYS/uptime");
        assert!(name.is_system());
        assert_eq!(
            "a/+".parse::<TopicName>().unwrap_err(),
            TopicError::WildcardInName {
                wildcard: '+',
                level: 2,
                topic: "a/+".into()
            }
        );
        assert_eq!(
            TopicName::try_from(String::from("a/b"))
                .unwrap()
                .into_string(),
            "a/b"
        );

        let filter: TopicFilter = "$share/g/jobs/#".parse().unwrap();
        assert_eq!(filter.as_str(), "$share/g/jobs/#");
        assert_eq!(filter.to_string(), "$share/g/jobs/#");
        assert_eq!(filter.as_ref(), "$share/g/jobs/#");
        assert_eq!(
            filter.shared(),
            Some(SharedFilter {
                group: "g",
                filter: "jobs/#"
            })
        );
        assert_eq!(filter.match_filter(), "jobs/#");
        assert!(filter.matches(&"jobs/1".parse().unwrap()));
        assert!(!filter.matches(&"$share/g/jobs/1".parse().unwrap()));
        assert!("a/#/b".parse::<TopicFilter>().is_err());
        assert!(TopicFilter::try_from(String::from("a/#/b")).is_err());

        let plain: TopicFilter = "+/b".parse().unwrap();
        assert_eq!(plain.shared(), None);
        assert!(plain.matches(&"a/b".parse().unwrap()));
        assert!(!plain.matches(&"$a/b".parse().unwrap()));
    }

    #[test]
    fn names_from_wire_bytes() {
        assert_eq!(TopicName::from_bytes(b"a/b").unwrap().as_str(), "a/b");
        assert_eq!(
            TopicName::from_bytes(b"a/\xff").unwrap_err(),
            TopicError::InvalidUtf8 { valid_up_to: 2 }
        );
        assert_eq!(TopicName::from_bytes(b"").unwrap_err(), TopicError::Empty);
        assert!(matches!(
            TopicName::from_bytes(b"a/#"),
            Err(TopicError::WildcardInName { wildcard: '#', .. })
        ));
    }

    #[test]
    fn wildcards_and_shared_prefixes() {
        let filter = |f: &str| f.parse::<TopicFilter>().unwrap();
        assert!(filter("a/+/c").has_wildcards());
        assert!(filter("#").has_wildcards());
        assert!(!filter("a/b").has_wildcards());
        // The share name never has wildcards; the inner filter decides.
        assert!(filter("$share/g/a/#").has_wildcards());
        assert!(!filter("$share/g/a/b").has_wildcards());

        assert!(is_shared_filter("$share/g/a"));
        assert!(is_shared_filter("$share/"));
        assert!(!is_shared_filter("$share"));
        assert!(!is_shared_filter("$SHARE/g/a"));
    }
}
