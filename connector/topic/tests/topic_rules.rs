//! The topic rules of MQTT 3.1.1 and MQTT 5.0 (section 4.7, the UTF-8 rules
//! of 1.5.3 / 1.5.4, PUBLISH 3.3.2-2, SUBSCRIBE 3.8.3, shared subscriptions
//! 4.8.2), one table row per case, each naming its normative statement; then
//! property tests of `matches` against a plain reference model.

use mqtt_topic::{
    is_system_topic, matches, parse_shared, validate_filter, validate_filter_bytes, validate_name,
    validate_name_bytes, MqttVersion, SharedFilter, TopicError, TopicFilter, TopicName,
    MAX_TOPIC_LEN,
};
use proptest::prelude::*;
use MqttVersion::{V311, V5};

// ---------------------------------------------------------------------------
// The statements of the spec index that concern topics, and what covers them.
// ---------------------------------------------------------------------------

/// Every statement id in the spec index from the sections this module
/// implements (grep of MQTT-4.7.*, 1.5.3/1.5.4, 3.3.2-2, 3.8.3, 4.8.2).
const SPEC_INDEX: &[(MqttVersion, &str)] = &[
    (V311, "MQTT-1.5.3-1"),
    (V311, "MQTT-1.5.3-2"),
    (V311, "MQTT-1.5.3-3"),
    (V311, "MQTT-3.3.2-2"),
    (V311, "MQTT-3.8.3-1"),
    (V311, "MQTT-3.8.3-2"),
    (V311, "MQTT-3.8.3-3"),
    (V311, "MQTT-4.7.1-1"),
    (V311, "MQTT-4.7.1-2"),
    (V311, "MQTT-4.7.1-3"),
    (V311, "MQTT-4.7.2-1"),
    (V311, "MQTT-4.7.3-1"),
    (V311, "MQTT-4.7.3-2"),
    (V311, "MQTT-4.7.3-3"),
    (V311, "MQTT-4.7.3-4"),
    (V5, "MQTT-1.5.4-1"),
    (V5, "MQTT-1.5.4-2"),
    (V5, "MQTT-1.5.4-3"),
    (V5, "MQTT-3.3.2-2"),
    (V5, "MQTT-3.8.3-1"),
    (V5, "MQTT-3.8.3-2"),
    (V5, "MQTT-3.8.3-3"),
    (V5, "MQTT-3.8.3-4"),
    (V5, "MQTT-3.8.3-5"),
    (V5, "MQTT-4.7.0-1"),
    (V5, "MQTT-4.7.1-1"),
    (V5, "MQTT-4.7.1-2"),
    (V5, "MQTT-4.7.2-1"),
    (V5, "MQTT-4.7.3-1"),
    (V5, "MQTT-4.7.3-2"),
    (V5, "MQTT-4.7.3-3"),
    (V5, "MQTT-4.7.3-4"),
    (V5, "MQTT-4.8.2-1"),
    (V5, "MQTT-4.8.2-2"),
    (V5, "MQTT-4.8.2-3"),
    (V5, "MQTT-4.8.2-4"),
    (V5, "MQTT-4.8.2-5"),
    (V5, "MQTT-4.8.2-6"),
];

/// Statements of those sections that are not about topic strings, and where
/// they belong instead.
const NOT_TOPIC_RULES: &[(MqttVersion, &str, &str)] = &[
    (
        V311,
        "MQTT-3.8.3-3",
        "SUBSCRIBE has at least one filter: packet decoder",
    ),
    (
        V5,
        "MQTT-3.8.3-2",
        "SUBSCRIBE has at least one filter: packet decoder",
    ),
    (V5, "MQTT-3.8.3-3", "No Local option: broker delivery"),
    (
        V5,
        "MQTT-3.8.3-4",
        "No Local on a shared subscription: broker subscribe",
    ),
    (
        V5,
        "MQTT-3.8.3-5",
        "reserved subscription option bits: packet decoder",
    ),
    (
        V5,
        "MQTT-4.8.2-3",
        "granted QoS of shared subscribers: broker delivery",
    ),
    (
        V5,
        "MQTT-4.8.2-4",
        "QoS 2 redelivery to a shared subscriber: broker session",
    ),
    (
        V5,
        "MQTT-4.8.2-5",
        "no QoS 2 handover to another subscriber: broker session",
    ),
    (
        V5,
        "MQTT-4.8.2-6",
        "negative PUBACK/PUBREC discards: broker delivery",
    ),
];

// ---------------------------------------------------------------------------
// Validation table.
// ---------------------------------------------------------------------------

/// Which function a row exercises.
#[derive(Debug, Clone, Copy)]
enum Check {
    Name,
    Filter,
    NameBytes,
    FilterBytes,
}

/// The error variant a row expects, without its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Empty,
    TooLong,
    InvalidUtf8,
    NullChar,
    WildcardInName,
    MultiLevelNotLast,
    MultiLevelNotWholeLevel,
    SingleLevelNotWholeLevel,
    EmptyShareName,
    ShareNameWildcard,
    MissingSharedFilter,
}

fn kind(e: &TopicError) -> Kind {
    match e {
        TopicError::Empty => Kind::Empty,
        TopicError::TooLong { .. } => Kind::TooLong,
        TopicError::InvalidUtf8 { .. } => Kind::InvalidUtf8,
        TopicError::NullChar { .. } => Kind::NullChar,
        TopicError::WildcardInName { .. } => Kind::WildcardInName,
        TopicError::MultiLevelNotLast { .. } => Kind::MultiLevelNotLast,
        TopicError::MultiLevelNotWholeLevel { .. } => Kind::MultiLevelNotWholeLevel,
        TopicError::SingleLevelNotWholeLevel { .. } => Kind::SingleLevelNotWholeLevel,
        TopicError::EmptyShareName { .. } => Kind::EmptyShareName,
        TopicError::ShareNameWildcard { .. } => Kind::ShareNameWildcard,
        TopicError::MissingSharedFilter { .. } => Kind::MissingSharedFilter,
    }
}

/// One case: the statement(s) it illustrates, the function, the input bytes
/// and the expected outcome (`None` = valid).
struct Row {
    ids: &'static [(MqttVersion, &'static str)],
    check: Check,
    input: Vec<u8>,
    expect: Option<Kind>,
}

fn row(
    ids: &'static [(MqttVersion, &'static str)],
    check: Check,
    input: impl Into<Vec<u8>>,
    expect: Option<Kind>,
) -> Row {
    Row {
        ids,
        check,
        input: input.into(),
        expect,
    }
}

// Statement groups: the same rule under each version's numbering.
const EMPTY: &[(MqttVersion, &str)] = &[(V5, "MQTT-4.7.3-1"), (V311, "MQTT-4.7.3-1")];
const NUL: &[(MqttVersion, &str)] = &[
    (V5, "MQTT-4.7.3-2"),
    (V5, "MQTT-1.5.4-2"),
    (V311, "MQTT-4.7.3-2"),
    (V311, "MQTT-1.5.3-2"),
];
const LEN: &[(MqttVersion, &str)] = &[(V5, "MQTT-4.7.3-3"), (V311, "MQTT-4.7.3-3")];
const UTF8: &[(MqttVersion, &str)] = &[(V5, "MQTT-1.5.4-1"), (V311, "MQTT-1.5.3-1")];
const FILTER_UTF8: &[(MqttVersion, &str)] = &[(V5, "MQTT-3.8.3-1"), (V311, "MQTT-3.8.3-1")];
const BOM_AND_CONTROLS: &[(MqttVersion, &str)] = &[(V5, "MQTT-1.5.4-3"), (V311, "MQTT-1.5.3-3")];
const NO_WILDCARD_IN_NAME: &[(MqttVersion, &str)] = &[
    (V5, "MQTT-4.7.0-1"),
    (V5, "MQTT-3.3.2-2"),
    (V311, "MQTT-4.7.1-1"),
    (V311, "MQTT-3.3.2-2"),
];
const HASH: &[(MqttVersion, &str)] = &[(V5, "MQTT-4.7.1-1"), (V311, "MQTT-4.7.1-2")];
const PLUS: &[(MqttVersion, &str)] = &[(V5, "MQTT-4.7.1-2"), (V311, "MQTT-4.7.1-3")];
const WILDCARDS_SUPPORTED: &[(MqttVersion, &str)] = &[(V311, "MQTT-3.8.3-2")];
const SHARE_NAME: &[(MqttVersion, &str)] = &[(V5, "MQTT-4.8.2-1")];
const SHARE_SYNTAX: &[(MqttVersion, &str)] = &[(V5, "MQTT-4.8.2-2")];
/// "followed by a Topic Filter as described in section 4.7": the error cites 4.7.
const SHARE_INNER: &[(MqttVersion, &str)] = &[(V5, "MQTT-4.8.2-2"), (V5, "MQTT-4.7.1-2")];

fn rules() -> Vec<Row> {
    use Check::*;
    use Kind::*;
    vec![
        // MQTT-4.7.3-1: at least one character long.
        row(EMPTY, Name, "", Some(Empty)),
        row(EMPTY, Filter, "", Some(Empty)),
        row(EMPTY, Name, "a", None),
        row(EMPTY, Name, "/", None),
        row(EMPTY, Filter, "+", None),
        row(EMPTY, Filter, "#", None),
        // MQTT-4.7.3-2, MQTT-1.5.4-2 / 1.5.3-2: no U+0000.
        row(NUL, Name, "a\0b", Some(NullChar)),
        row(NUL, Name, "\0", Some(NullChar)),
        row(NUL, Filter, "a/\0/#", Some(NullChar)),
        row(NUL, Filter, "$share/g\0/a", Some(NullChar)),
        row(NUL, NameBytes, &b"a/\0"[..], Some(NullChar)),
        // MQTT-4.7.3-3: at most 65535 bytes (bytes, not characters).
        row(LEN, Name, "a".repeat(MAX_TOPIC_LEN), None),
        row(LEN, Name, "a".repeat(MAX_TOPIC_LEN + 1), Some(TooLong)),
        row(LEN, Name, "é".repeat(32_768), Some(TooLong)), // 32768 chars, 65536 bytes
        row(LEN, Filter, format!("{}/#", "a".repeat(65_533)), None),
        row(
            LEN,
            Filter,
            format!("{}/#", "a".repeat(65_534)),
            Some(TooLong),
        ),
        row(
            LEN,
            Filter,
            format!("$share/g/{}", "a".repeat(65_526)),
            None,
        ),
        row(
            LEN,
            Filter,
            format!("$share/g/{}", "a".repeat(65_527)),
            Some(TooLong),
        ),
        // MQTT-1.5.4-1 / 1.5.3-1: well-formed UTF-8, no surrogates.
        row(UTF8, NameBytes, &b"a/\xff"[..], Some(InvalidUtf8)),
        row(UTF8, NameBytes, &b"\xed\xa0\x80"[..], Some(InvalidUtf8)), // U+D800
        row(UTF8, NameBytes, &b"\xc0\xaf"[..], Some(InvalidUtf8)),     // overlong '/'
        row(UTF8, NameBytes, "caf\u{e9}/\u{1F600}", None),
        // MQTT-3.8.3-1: topic filters are UTF-8 encoded strings.
        row(
            FILTER_UTF8,
            FilterBytes,
            &b"a/+/\xed\xbf\xbf"[..],
            Some(InvalidUtf8),
        ),
        row(FILTER_UTF8, FilterBytes, &b"a/\xe9"[..], Some(InvalidUtf8)), // Latin-1
        row(FILTER_UTF8, FilterBytes, "caf\u{e9}/+/#", None),
        // MQTT-1.5.4-3 / 1.5.3-3: a BOM is an ordinary character (see also the
        // matching table); control characters SHOULD NOT appear but MAY be
        // accepted, and we accept them.
        row(BOM_AND_CONTROLS, Name, "\u{FEFF}a", None),
        row(BOM_AND_CONTROLS, Filter, "\u{FEFF}a/+", None),
        row(BOM_AND_CONTROLS, Name, "a\u{1}b\u{7f}\u{9f}", None),
        // MQTT-4.7.0-1 (5.0) / 4.7.1-1 (3.1.1), MQTT-3.3.2-2: no wildcard in a
        // topic name, not even inside a level.
        row(NO_WILDCARD_IN_NAME, Name, "+", Some(WildcardInName)),
        row(NO_WILDCARD_IN_NAME, Name, "#", Some(WildcardInName)),
        row(
            NO_WILDCARD_IN_NAME,
            Name,
            "sport/+/player1",
            Some(WildcardInName),
        ),
        row(
            NO_WILDCARD_IN_NAME,
            Name,
            "sport/tennis/#",
            Some(WildcardInName),
        ),
        row(NO_WILDCARD_IN_NAME, Name, "sport/c#", Some(WildcardInName)),
        row(NO_WILDCARD_IN_NAME, Name, "a+b", Some(WildcardInName)),
        row(NO_WILDCARD_IN_NAME, NameBytes, "a/+", Some(WildcardInName)),
        row(NO_WILDCARD_IN_NAME, Name, "$SYS/broker/uptime", None),
        row(NO_WILDCARD_IN_NAME, Name, "$share/g/a", None),
        row(NO_WILDCARD_IN_NAME, Filter, "sport/+/player1", None),
        // MQTT-4.7.1-1 (5.0) / 4.7.1-2 (3.1.1): '#' alone or after '/', last.
        row(HASH, Filter, "#", None),
        row(HASH, Filter, "sport/#", None),
        row(HASH, Filter, "sport/tennis/#", None),
        row(HASH, Filter, "/#", None),
        row(HASH, Filter, "+/#", None),
        row(HASH, Filter, "sport/tennis#", Some(MultiLevelNotWholeLevel)),
        row(HASH, Filter, "#sport", Some(MultiLevelNotWholeLevel)),
        row(HASH, Filter, "##", Some(MultiLevelNotWholeLevel)),
        row(HASH, Filter, "+#", Some(MultiLevelNotWholeLevel)),
        row(
            HASH,
            Filter,
            "sport/tennis/#/ranking",
            Some(MultiLevelNotLast),
        ),
        row(HASH, Filter, "#/", Some(MultiLevelNotLast)),
        row(HASH, Filter, "#/#", Some(MultiLevelNotLast)),
        row(HASH, Filter, "$share/g/#", None),
        row(HASH, Filter, "$share/g/a/#/b", Some(MultiLevelNotLast)),
        // MQTT-4.7.1-2 (5.0) / 4.7.1-3 (3.1.1): '+' occupies a whole level.
        row(PLUS, Filter, "+", None),
        row(PLUS, Filter, "+/tennis/#", None),
        row(PLUS, Filter, "sport/+/player1", None),
        row(PLUS, Filter, "+/+", None),
        row(PLUS, Filter, "/+", None),
        row(PLUS, Filter, "sport+", Some(SingleLevelNotWholeLevel)),
        row(
            PLUS,
            Filter,
            "sport/+tennis",
            Some(SingleLevelNotWholeLevel),
        ),
        row(PLUS, Filter, "a/++", Some(SingleLevelNotWholeLevel)),
        row(PLUS, Filter, "$share/g/a+", Some(SingleLevelNotWholeLevel)),
        // MQTT-3.8.3-2 (3.1.1): a server that does not support wildcards must
        // reject them; we support them, so they are accepted.
        row(WILDCARDS_SUPPORTED, Filter, "a/+/#", None),
        // MQTT-4.8.2-1: $share/ then a share name at least one character long.
        row(SHARE_NAME, Filter, "$share/consumer1/sport/tennis/+", None),
        row(SHARE_NAME, Filter, "$share//sport", Some(EmptyShareName)),
        row(SHARE_NAME, Filter, "$share/", Some(EmptyShareName)),
        row(SHARE_NAME, Filter, "$share", None), // no '/': an ordinary filter
        row(SHARE_NAME, Filter, "$sharex/g/a", None), // not a shared filter
        row(SHARE_NAME, Filter, "$SHARE/g/a", None), // case matters: not shared
        // MQTT-4.8.2-2: the share name has no '/', '+', '#', and is followed by
        // '/' and a topic filter.
        row(
            SHARE_SYNTAX,
            Filter,
            "$share/gr+p/x",
            Some(ShareNameWildcard),
        ),
        row(SHARE_SYNTAX, Filter, "$share/#/x", Some(ShareNameWildcard)),
        row(SHARE_SYNTAX, Filter, "$share/+/x", Some(ShareNameWildcard)),
        row(
            SHARE_SYNTAX,
            Filter,
            "$share/group",
            Some(MissingSharedFilter),
        ),
        row(
            SHARE_SYNTAX,
            Filter,
            "$share/group/",
            Some(MissingSharedFilter),
        ),
        row(SHARE_SYNTAX, Filter, "$share/group/#", None),
        row(SHARE_SYNTAX, Filter, "$share/group//", None), // inner filter "/"
        row(
            SHARE_INNER,
            Filter,
            "$share/g/sport/tennis+",
            Some(SingleLevelNotWholeLevel),
        ),
    ]
}

#[test]
fn validation_rules() {
    let mut failures = Vec::new();
    for r in rules() {
        let result = match r.check {
            Check::Name => validate_name(std::str::from_utf8(&r.input).unwrap()),
            Check::Filter => validate_filter(std::str::from_utf8(&r.input).unwrap()),
            Check::NameBytes => validate_name_bytes(&r.input).map(|_| ()),
            Check::FilterBytes => validate_filter_bytes(&r.input).map(|_| ()),
        };
        let shown = String::from_utf8_lossy(&r.input);
        let shown: String = shown.chars().take(40).collect();
        let got = result.as_ref().err().map(kind);
        if got != r.expect {
            failures.push(format!(
                "{:?}: {:?}({shown:?}) expected {:?}, got {result:?}",
                r.ids, r.check, r.expect
            ));
            continue;
        }
        // An error must cite the statement of the row, under its version.
        if let Err(e) = &result {
            let cited = e.statements();
            if !r.ids.iter().any(|id| cited.contains(id)) {
                failures.push(format!(
                    "{:?}: {:?}({shown:?}) gives {e:?}, which cites {cited:?}",
                    r.ids, r.check
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// Matching table.
// ---------------------------------------------------------------------------

/// (statement, filter, name, expected match). `EXAMPLE` rows come from the
/// non-normative examples of 4.7.1 and 4.7.2.
const EXAMPLE: &[(MqttVersion, &str)] = &[];
const DOLLAR: &[(MqttVersion, &str)] = &[(V5, "MQTT-4.7.2-1"), (V311, "MQTT-4.7.2-1")];
const NO_NORMALIZATION: &[(MqttVersion, &str)] = &[(V5, "MQTT-4.7.3-4"), (V311, "MQTT-4.7.3-4")];

type MatchRow = (
    &'static [(MqttVersion, &'static str)],
    &'static str,
    &'static str,
    bool,
);

const MATCHING: &[MatchRow] = &[
    // MQTT-4.7.2-1: wildcards in the first level never match names with '$'.
    (DOLLAR, "#", "$SYS/broker/uptime", false),
    (DOLLAR, "#", "$SYS", false),
    (DOLLAR, "+/monitor/Clients", "$SYS/monitor/Clients", false),
    (DOLLAR, "+", "$x", false),
    (DOLLAR, "+/#", "$x/a", false),
    (DOLLAR, "$SYS/#", "$SYS/broker/uptime", true),
    (DOLLAR, "$SYS/#", "$SYS", true),
    (DOLLAR, "$SYS/monitor/+", "$SYS/monitor/Clients", true),
    (DOLLAR, "a/+", "a/$x", true), // '$' only matters in the first level
    (DOLLAR, "a/#", "a/$x/b", true),
    (DOLLAR, "#", "a/$x", true),
    // MQTT-4.7.3-4: no normalization, character for character.
    (NO_NORMALIZATION, "ACCOUNTS", "Accounts", false),
    (NO_NORMALIZATION, "/finance", "finance", false),
    (NO_NORMALIZATION, "a//b", "a/b", false),
    (NO_NORMALIZATION, "a ", "a", false),
    (NO_NORMALIZATION, "caf\u{e9}", "cafe\u{301}", false), // NFC vs NFD
    (NO_NORMALIZATION, "caf\u{e9}", "caf\u{e9}", true),
    (NO_NORMALIZATION, "\u{FEFF}a", "\u{FEFF}a", true),
    // MQTT-1.5.4-3 / 1.5.3-3: a BOM is not stripped.
    (BOM_AND_CONTROLS, "a", "\u{FEFF}a", false),
    (BOM_AND_CONTROLS, "\u{FEFF}a/+", "\u{FEFF}a/b", true),
    // 4.7.1.2 examples: '#'.
    (
        EXAMPLE,
        "sport/tennis/player1/#",
        "sport/tennis/player1",
        true,
    ),
    (
        EXAMPLE,
        "sport/tennis/player1/#",
        "sport/tennis/player1/ranking",
        true,
    ),
    (
        EXAMPLE,
        "sport/tennis/player1/#",
        "sport/tennis/player1/score/wimbledon",
        true,
    ),
    (EXAMPLE, "sport/#", "sport", true),
    (EXAMPLE, "sport/#", "sport/", true),
    (EXAMPLE, "sport/#", "sports", false),
    (EXAMPLE, "#", "sport/tennis", true),
    (EXAMPLE, "#", "/", true),
    // 4.7.1.3 examples: '+'.
    (EXAMPLE, "sport/tennis/+", "sport/tennis/player1", true),
    (EXAMPLE, "sport/tennis/+", "sport/tennis/player2", true),
    (
        EXAMPLE,
        "sport/tennis/+",
        "sport/tennis/player1/ranking",
        false,
    ),
    (EXAMPLE, "sport/+", "sport", false),
    (EXAMPLE, "sport/+", "sport/", true), // '+' matches an empty level
    (EXAMPLE, "+/+", "/finance", true),
    (EXAMPLE, "/+", "/finance", true),
    (EXAMPLE, "+", "/finance", false),
    (EXAMPLE, "+/tennis/#", "sport/tennis/player1", true),
    (EXAMPLE, "+/tennis/#", "sport/tennis", true),
    (EXAMPLE, "+/tennis/#", "sport/golf", false),
];

#[test]
fn matching_rules() {
    let mut failures = Vec::new();
    for &(ids, filter, name, expected) in MATCHING {
        // Rows must use valid inputs, otherwise `matches` is unspecified.
        validate_filter(filter).unwrap();
        validate_name(name).unwrap();
        if matches(filter, name) != expected {
            failures.push(format!(
                "{ids:?}: matches({filter:?}, {name:?}) should be {expected}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn shared_filters_split_into_group_and_filter() {
    // MQTT-4.8.2-1 / -2: the example of 4.8.2.
    assert_eq!(
        parse_shared("$share/consumer1/sport/tennis/+"),
        Ok(Some(SharedFilter {
            group: "consumer1",
            filter: "sport/tennis/+"
        }))
    );
    assert_eq!(
        parse_shared("$share/g//"),
        Ok(Some(SharedFilter {
            group: "g",
            filter: "/"
        }))
    );
    // A nested prefix is just the inner filter's first level.
    assert_eq!(
        parse_shared("$share/g/$share/h/a"),
        Ok(Some(SharedFilter {
            group: "g",
            filter: "$share/h/a"
        }))
    );
    assert_eq!(parse_shared("sport/#"), Ok(None));
    assert_eq!(parse_shared("$share"), Ok(None));
    assert_eq!(
        parse_shared("$share/gr+p/x"),
        Err(TopicError::ShareNameWildcard {
            wildcard: '+',
            group: "gr+p".into()
        })
    );
    assert!(matches!(
        parse_shared("$share/group"),
        Err(TopicError::MissingSharedFilter { .. })
    ));
    // The inner filter is validated too, with levels counted over the whole
    // string so the message points where the user looks.
    assert_eq!(
        parse_shared("$share/g/a/#/b"),
        Err(TopicError::MultiLevelNotLast {
            level: 4,
            topic: "$share/g/a/#/b".into()
        })
    );
}

#[test]
fn errors_report_the_offending_level() {
    assert_eq!(
        validate_filter("a/#/b"),
        Err(TopicError::MultiLevelNotLast {
            level: 2,
            topic: "a/#/b".into()
        })
    );
    assert_eq!(
        validate_name("a/b/c#"),
        Err(TopicError::WildcardInName {
            wildcard: '#',
            level: 3,
            topic: "a/b/c#".into()
        })
    );
    assert_eq!(
        validate_name("//\0"),
        Err(TopicError::NullChar {
            level: 3,
            topic: "//\0".into()
        })
    );
    assert_eq!(
        validate_name_bytes(b"ab\xff"),
        Err(TopicError::InvalidUtf8 { valid_up_to: 2 })
    );
}

#[test]
fn system_topics() {
    assert!(is_system_topic("$SYS/broker"));
    assert!(is_system_topic("$"));
    assert!(!is_system_topic("a/$SYS"));
    assert!(!is_system_topic("SYS"));
}

#[test]
fn every_topic_statement_is_covered_or_explained() {
    let mut covered: Vec<(MqttVersion, &str)> = Vec::new();
    covered.extend(rules().iter().flat_map(|r| r.ids.iter().copied()));
    covered.extend(MATCHING.iter().flat_map(|r| r.0.iter().copied()));
    for id in &covered {
        assert!(SPEC_INDEX.contains(id), "{id:?} is not in the spec index");
    }
    for &(version, id, why) in NOT_TOPIC_RULES {
        assert!(SPEC_INDEX.contains(&(version, id)), "{id} ({why})");
        assert!(
            !covered.contains(&(version, id)),
            "{id} is both covered and excluded"
        );
    }
    for &(version, id) in SPEC_INDEX {
        let excluded = NOT_TOPIC_RULES
            .iter()
            .any(|&(v, i, _)| (v, i) == (version, id));
        assert!(
            excluded || covered.contains(&(version, id)),
            "{version} {id} has no test row"
        );
    }
}

#[test]
fn every_cited_statement_exists() {
    let errors = [
        validate_name("").unwrap_err(),
        validate_name(&"a".repeat(MAX_TOPIC_LEN + 1)).unwrap_err(),
        validate_name_bytes(b"\xff").unwrap_err(),
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
        for id in e.statements() {
            assert!(SPEC_INDEX.contains(id), "{e:?} cites unknown {id:?}");
        }
        for (_, id) in e.statements() {
            assert!(e.statement_ids().contains(id), "{e:?}: {id}");
        }
    }
}

// ---------------------------------------------------------------------------
// Properties.
// ---------------------------------------------------------------------------

/// Reference matcher, written from the definitions of 4.7.1 and 4.7.2 rather
/// than level by level: without '#', same number of levels and each level
/// equal or '+'; with a trailing '#', the levels before it must match a
/// prefix of the name (the name may have exactly those levels: '#' includes
/// the parent).
fn reference_matches(filter: &str, name: &str) -> bool {
    let f: Vec<&str> = filter.split('/').collect();
    let n: Vec<&str> = name.split('/').collect();
    if name.starts_with('$') && (f[0] == "+" || f[0] == "#") {
        return false;
    }
    let level_matches = |(fl, nl): (&&str, &&str)| *fl == "+" || fl == nl;
    match f.split_last() {
        Some((&"#", before)) => n.len() >= before.len() && before.iter().zip(&n).all(level_matches),
        _ => f.len() == n.len() && f.iter().zip(&n).all(level_matches),
    }
}

/// Reference validity of a non-shared filter: each level is free of
/// wildcards, or exactly '+', or exactly '#' as the last level.
fn reference_valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(i, l)| {
        !(l.contains('+') || l.contains('#')) || *l == "+" || (*l == "#" && i == levels.len() - 1)
    })
}

/// Names over a tiny alphabet so that filters and names often coincide.
fn name_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(&["a", "b", "", "$x"][..]), 1..6)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("names are non-empty", |s| !s.is_empty())
}

/// Valid non-shared filters over the same alphabet plus wildcards.
fn filter_strategy() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(&["a", "b", "", "$x", "+"][..]), 0..6),
        any::<bool>(),
    )
        .prop_map(|(mut levels, hash)| {
            if hash {
                levels.push("#");
            }
            levels.join("/")
        })
        .prop_filter("filters are non-empty", |s| !s.is_empty())
}

/// Filters that may be invalid: levels with misplaced wildcards and U+0000.
fn rough_filter_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(&["a", "", "+", "#", "a+", "#b", "++", "$x", "\0"][..]),
        0..6,
    )
    .prop_map(|levels| levels.join("/"))
}

proptest! {
    #[test]
    fn matches_agrees_with_reference(filter in filter_strategy(), name in name_strategy()) {
        prop_assert!(validate_filter(&filter).is_ok());
        prop_assert!(validate_name(&name).is_ok());
        prop_assert_eq!(matches(&filter, &name), reference_matches(&filter, &name));
    }

    #[test]
    fn a_name_used_as_filter_matches_only_itself(a in name_strategy(), b in name_strategy()) {
        // MQTT-4.7.3-4: without wildcards, matching is string equality.
        prop_assert!(validate_filter(&a).is_ok());
        prop_assert_eq!(matches(&a, &b), a == b);
    }

    #[test]
    fn hash_alone_matches_every_name_not_starting_with_dollar(name in name_strategy()) {
        prop_assert_eq!(matches("#", &name), !is_system_topic(&name));
    }

    #[test]
    fn parent_is_matched_by_its_hash_filter(filter in filter_strategy(), name in name_strategy()) {
        // If F matches N then F/# matches N and every child of N.
        prop_assume!(!filter.ends_with('#'));
        if matches(&filter, &name) {
            let multi = format!("{filter}/#");
            prop_assert!(matches(&multi, &name));
            let child = format!("{name}/a");
            prop_assert!(matches(&multi, &child));
        }
    }

    #[test]
    fn filter_validity_agrees_with_reference(filter in rough_filter_strategy()) {
        prop_assert_eq!(validate_filter(&filter).is_ok(), reference_valid_filter(&filter));
        prop_assert_eq!(parse_shared(&filter).is_ok(), reference_valid_filter(&filter));
    }

    #[test]
    fn shared_filters_agree_with_reference(
        group in prop::sample::select(&["g", "", "g+", "#", "a$b"][..]),
        inner in rough_filter_strategy(),
    ) {
        let filter = format!("$share/{group}/{inner}");
        let valid = !group.is_empty() && !group.contains(['+', '#']) && reference_valid_filter(&inner);
        prop_assert_eq!(validate_filter(&filter).is_ok(), valid);
        if valid {
            prop_assert_eq!(
                parse_shared(&filter),
                Ok(Some(SharedFilter { group, filter: &inner }))
            );
        }
    }

    #[test]
    fn shared_topic_filter_matches_like_its_inner_filter(
        inner in filter_strategy(),
        name in name_strategy(),
    ) {
        let shared: TopicFilter = format!("$share/grp/{inner}").parse().unwrap();
        let name: TopicName = name.parse().unwrap();
        prop_assert_eq!(shared.matches(&name), matches(&inner, name.as_str()));
    }

    #[test]
    fn name_validity_over_small_alphabet(s in "[ab/+#$\u{0}]{0,12}") {
        let expected = !s.is_empty() && !s.contains(['+', '#', '\0']);
        prop_assert_eq!(validate_name(&s).is_ok(), expected);
        // Every valid name is also a valid filter.
        if expected {
            prop_assert!(validate_filter(&s).is_ok());
        }
    }

    #[test]
    fn validation_never_panics(s in any::<String>()) {
        let _ = validate_name(&s);
        let _ = validate_filter(&s);
        let _ = parse_shared(&s);
        let _ = s.parse::<TopicName>();
        let _ = s.parse::<TopicFilter>();
        let _ = matches(&s, &s);
        if let Err(e) = validate_filter(&s) {
            let _ = e.to_string();
        }
    }

    #[test]
    fn byte_validation_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let utf8_ok = std::str::from_utf8(&bytes).is_ok();
        let r = validate_name_bytes(&bytes);
        if !utf8_ok {
            let is_utf8_error = matches!(r, Err(TopicError::InvalidUtf8 { .. }));
            prop_assert!(is_utf8_error, "{:?}", r);
        }
        let _ = validate_filter_bytes(&bytes);
    }

    #[test]
    fn matches_never_panics(filter in "[ab/+#$]{0,10}", name in "[ab/+#$]{0,10}") {
        let _ = matches(&filter, &name);
    }
}
