//! The configuration surface: defaults, valid examples, and every kind of
//! validation problem with its exact pointer and message; then property
//! tests that validation never panics.

use connector::config::{RetainHandling, RetainedPolicy, SendAction};
use connector::model::{MqttVersion, QoS};
use connector::validate::{
    config_error, parse_connection, parse_listen, parse_send, validate, validate_value, Kind,
    Problem,
};
use proptest::prelude::*;
use serde_json::json;

fn problems(kind: Kind, json: &str) -> Vec<(String, String)> {
    validate(kind, json)
        .into_iter()
        .map(|p| (p.pointer, p.message))
        .collect()
}

fn p(pointer: &str, message: &str) -> (String, String) {
    (pointer.to_owned(), message.to_owned())
}

/// The one problem of `json`.
fn one(kind: Kind, json: &str) -> (String, String) {
    let all = problems(kind, json);
    assert_eq!(all.len(), 1, "{json}: {all:#?}");
    all.into_iter().next().unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Defaults and valid examples

#[test]
fn connection_defaults() {
    let c = parse_connection(r#"{"url": "mqtt://localhost"}"#).unwrap();
    assert_eq!(c.mqtt_version, MqttVersion::V5);
    assert_eq!(c.client_id, None);
    assert_eq!(c.keep_alive_secs, 60);
    assert!(c.clean_start);
    assert_eq!(c.session_expiry_secs, 0);
    assert_eq!(c.connect_timeout_ms, 10_000);
    assert_eq!(c.send_timeout_ms, 30_000);
    assert_eq!(
        c.connect_options().send_timeout,
        std::time::Duration::from_secs(30)
    );
    assert_eq!(c.tls, None);
    assert_eq!(
        (c.reconnect.min_delay_ms, c.reconnect.max_delay_ms),
        (100, 30_000)
    );
    assert_eq!(c.will, None);
    assert_eq!(c.inflight_window, 20);
    assert_eq!(c.receive_maximum, 100);
    assert_eq!(c.retain_supported, None);
    assert_eq!(
        c,
        connector::config::ConnectionConfig::new("mqtt://localhost")
    );
}

#[test]
fn send_defaults() {
    let s = parse_send(r#"{"topic": "a/b"}"#).unwrap();
    assert_eq!(s.qos, QoS::AtLeastOnce);
    assert!(!s.retained);
    assert_eq!(s.action, SendAction::Publish);
    assert!(s.overrides.topic && s.overrides.qos && s.overrides.retained && s.overrides.properties);
    assert_eq!(s.properties, Default::default());
    assert_eq!(
        s,
        connector::config::SendConfig::new("a/b".parse().unwrap())
    );
}

#[test]
fn listen_defaults() {
    let l = parse_listen(r#"{"subscriptions": [{"filter": "a/#"}]}"#).unwrap();
    assert_eq!(l.retained, RetainedPolicy::Deliver);
    assert_eq!((l.quiet_ms, l.max_batch), (1000, 100));
    assert_eq!(l.shared_group, None);
    let s = &l.subscriptions[0];
    assert_eq!(s.qos, QoS::AtLeastOnce);
    assert!(!s.no_local && !s.retain_as_published);
    assert_eq!(s.retain_handling, RetainHandling::OnSubscribe);
    assert_eq!(
        l,
        connector::config::ListenConfig::new(["a/#".parse().unwrap()])
    );
}

#[test]
fn full_connection_example_is_valid() {
    let json = r#"{
        "url": "mqtts://broker.example.com:8884",
        "mqtt_version": "3.1.1",
        "client_id": "plant-7",
        "username": "u",
        "password": "p",
        "keep_alive_secs": 30,
        "clean_start": false,
        "session_expiry_secs": 3600,
        "connect_timeout_ms": 5000,
        "tls": {"ca_file": "ca.pem", "client_cert_file": "c.pem", "client_key_file": "k.pem", "alpn": ["x-amzn-mqtt-ca"]},
        "reconnect": {"min_delay_ms": 50, "max_delay_ms": 1000},
        "will": {"topic": "status/plant-7", "payload_base64": "b2ZmbGluZQ==", "qos": 1, "retain": true,
                 "delay_interval_secs": 5, "message_expiry_secs": 60, "content_type": "text/plain"},
        "inflight_window": 10,
        "receive_maximum": 50,
        "retain_supported": false
    }"#;
    let c = parse_connection(json).unwrap();
    let o = c.connect_options();
    assert_eq!(o.url, "mqtts://broker.example.com:8884");
    assert_eq!(o.protocol, MqttVersion::V311);
    assert_eq!(o.client_id, "plant-7");
    let will = o.will.unwrap();
    assert_eq!(will.payload, b"offline");
    assert_eq!(will.qos, QoS::AtLeastOnce);
    assert_eq!(o.tls.unwrap().alpn, ["x-amzn-mqtt-ca"]);
}

#[test]
fn full_send_and_listen_examples_are_valid() {
    let send = r#"{
        "topic": "sensors/kitchen", "qos": 2, "retained": true, "action": "clear",
        "retain_unsupported": "strip",
        "properties": {"content_type": "application/json", "payload_format": "utf8",
            "message_expiry_secs": 60, "response_topic": "replies/kitchen",
            "correlation_data": "req-1", "user_properties": [{"name": "k", "value": "v"}]},
        "overrides": {"topic": false, "qos": true, "retained": false, "properties": true}
    }"#;
    let s = parse_send(send).unwrap();
    assert_eq!(s.action, SendAction::Clear);
    assert_eq!(s.properties.to_message_properties().payload_format, Some(1));
    let listen = r#"{
        "subscriptions": [
            {"filter": "sensors/+/temp", "qos": 2, "retain_as_published": true, "retain_handling": 1},
            {"filter": "alarms/#", "qos": 0, "no_local": true}
        ],
        "retained": "skip", "quiet_ms": 500, "max_batch": 10
    }"#;
    let l = parse_listen(listen).unwrap();
    let subs = l.subscriptions(MqttVersion::V5).unwrap();
    assert_eq!(subs.len(), 2);
    assert!(subs.iter().all(|s| s.retain_handling == 2));
    let shared =
        parse_listen(r#"{"subscriptions": [{"filter": "jobs/#"}], "shared_group": "workers"}"#)
            .unwrap();
    assert_eq!(
        shared.subscriptions(MqttVersion::V5).unwrap()[0].filter,
        "$share/workers/jobs/#"
    );
}

// ---------------------------------------------------------------------------
// Syntax

#[test]
fn invalid_json_names_line_and_column() {
    assert_eq!(
        one(Kind::Connection, "{\n  \"url\": \"mqtt://h\",\n}"),
        p("", "invalid JSON at line 3, column 1: trailing comma")
    );
    assert_eq!(
        one(Kind::Send, "{\"topic\": "),
        p(
            "",
            "invalid JSON at line 1, column 10: the text ends inside a value"
        )
    );
    assert_eq!(
        one(Kind::Listen, ""),
        p(
            "",
            "invalid JSON at line 1, column 0: the text ends inside a value"
        )
    );
}

// ---------------------------------------------------------------------------
// Structure

#[test]
fn the_whole_document_must_be_an_object() {
    assert_eq!(
        one(Kind::Connection, "[1]"),
        p("", "expected an object, found a list")
    );
}

#[test]
fn missing_required_fields() {
    assert_eq!(
        one(Kind::Connection, "{}"),
        p("/url", "missing required field \"url\"")
    );
    assert_eq!(
        one(Kind::Listen, r#"{"subscriptions": [{"qos": 1}]}"#),
        p(
            "/subscriptions/0/filter",
            "missing required field \"filter\""
        )
    );
    assert_eq!(
        one(Kind::Connection, r#"{"url": "mqtt://h", "will": {}}"#),
        p("/will/topic", "missing required field \"topic\"")
    );
}

#[test]
fn unknown_fields_suggest_the_closest_known_one() {
    assert_eq!(
        one(
            Kind::Connection,
            r#"{"url": "mqtt://h", "kep_alive_secs": 5}"#
        ),
        p(
            "/kep_alive_secs",
            "unknown field \"kep_alive_secs\"; did you mean \"keep_alive_secs\""
        )
    );
    assert_eq!(
        one(Kind::Send, r#"{"topic": "a", "retain": true}"#),
        p(
            "/retain",
            "unknown field \"retain\"; did you mean \"retained\""
        )
    );
    assert_eq!(
        one(
            Kind::Connection,
            r#"{"url": "mqtt://h", "clean_session": true}"#
        ),
        p(
            "/clean_session",
            "unknown field \"clean_session\"; did you mean \"clean_start\""
        )
    );
    assert_eq!(
        one(Kind::Send, r#"{"topic": "a", "overrides": {"QOS": false}}"#),
        p(
            "/overrides/QOS",
            "unknown field \"QOS\"; did you mean \"qos\""
        )
    );
    assert_eq!(
        one(Kind::Send, r#"{"topic": "a", "colour": "red"}"#),
        p(
            "/colour",
            "unknown field \"colour\"; the fields here are action, overrides, properties, qos, retain_unsupported, retained, topic"
        )
    );
    // Pointer escaping per RFC 6901.
    assert_eq!(one(Kind::Send, r#"{"topic": "a", "a/b~": 1}"#).0, "/a~1b~0");
}

#[test]
fn wrong_types_say_what_was_expected_and_found() {
    assert_eq!(
        problems(
            Kind::Connection,
            r#"{"url": 5, "keep_alive_secs": "60", "clean_start": "yes", "tls": [], "reconnect": {"min_delay_ms": 1.5}}"#
        ),
        [
            p("/clean_start", "expected true or false, found text \"yes\""),
            p(
                "/keep_alive_secs",
                "expected a whole number, found text \"60\""
            ),
            p(
                "/reconnect/min_delay_ms",
                "expected a whole number, found the number 1.5"
            ),
            p("/tls", "expected an object, found a list"),
            p("/url", "expected text, found the number 5"),
        ]
    );
    assert_eq!(
        one(Kind::Listen, r#"{"subscriptions": {"filter": "a"}}"#),
        p("/subscriptions", "expected a list, found an object")
    );
    assert_eq!(
        one(Kind::Connection, r#"{"url": null}"#),
        p("/url", "expected text, found null")
    );
    // Optional fields accept null, meaning absent.
    assert!(problems(
        Kind::Connection,
        r#"{"url": "mqtt://h", "client_id": null, "tls": null}"#
    )
    .is_empty());
}

#[test]
fn numbers_out_of_range() {
    assert_eq!(
        problems(
            Kind::Connection,
            r#"{"url": "mqtt://h", "keep_alive_secs": 70000, "inflight_window": 0, "session_expiry_secs": -1, "connect_timeout_ms": 4294967296}"#
        ),
        [
            p(
                "/connect_timeout_ms",
                "must be at most 4294967295, got 4294967296"
            ),
            p("/inflight_window", "must be at least 1, got 0"),
            p("/keep_alive_secs", "must be at most 65535, got 70000"),
            p("/session_expiry_secs", "must be at least 0, got -1"),
        ]
    );
    assert_eq!(
        one(
            Kind::Listen,
            r#"{"subscriptions": [{"filter": "a"}], "max_batch": 0}"#
        ),
        p("/max_batch", "must be at least 1, got 0")
    );
}

#[test]
fn wrong_enum_values_list_the_allowed_ones() {
    assert_eq!(
        one(
            Kind::Connection,
            r#"{"url": "mqtt://h", "mqtt_version": "5.0"}"#
        ),
        p(
            "/mqtt_version",
            "expected one of \"3.1.1\", \"5\", found text \"5.0\"; did you mean \"5\""
        )
    );
    assert_eq!(
        one(
            Kind::Connection,
            r#"{"url": "mqtt://h", "mqtt_version": 5}"#
        ),
        p(
            "/mqtt_version",
            "expected one of \"3.1.1\", \"5\", found the number 5"
        )
    );
    assert_eq!(
        one(Kind::Send, r#"{"topic": "a", "qos": 3}"#),
        p("/qos", "expected one of 0, 1, 2, found the number 3")
    );
    assert_eq!(
        one(Kind::Send, r#"{"topic": "a", "action": "publsh"}"#),
        p("/action", "expected one of \"publish\", \"clear\", found text \"publsh\"; did you mean \"publish\"")
    );
    assert_eq!(
        one(
            Kind::Send,
            r#"{"topic": "a", "properties": {"payload_format": "text"}}"#
        ),
        p(
            "/properties/payload_format",
            "expected one of \"bytes\", \"utf8\", found text \"text\""
        )
    );
    assert_eq!(
        one(
            Kind::Listen,
            r#"{"subscriptions": [{"filter": "a", "retain_handling": 3}]}"#
        ),
        p(
            "/subscriptions/0/retain_handling",
            "expected one of 0, 1, 2, found the number 3"
        )
    );
    assert_eq!(
        one(
            Kind::Listen,
            r#"{"subscriptions": [{"filter": "a"}], "retained": "none"}"#
        ),
        p(
            "/retained",
            "expected one of \"deliver\", \"skip\", \"only\", found text \"none\""
        )
    );
}

#[test]
fn empty_lists_and_strings() {
    assert_eq!(
        one(Kind::Listen, r#"{"subscriptions": []}"#),
        p("/subscriptions", "must have at least 1 item")
    );
    assert_eq!(
        one(
            Kind::Connection,
            r#"{"url": "mqtts://h", "tls": {"ca_file": ""}}"#
        ),
        p("/tls/ca_file", "must not be empty")
    );
}

// ---------------------------------------------------------------------------
// Meaning

#[test]
fn topics_follow_the_mqtt_rules() {
    assert_eq!(
        one(Kind::Send, r#"{"topic": "a/+/b"}"#),
        p(
            "/topic",
            "topic names cannot contain wildcards: '+' found in level 2 of \"a/+/b\""
        )
    );
    assert_eq!(
        one(Kind::Send, r#"{"topic": ""}"#),
        p("/topic", "a topic must be at least one character long")
    );
    assert_eq!(
        one(
            Kind::Send,
            r#"{"topic": "a", "properties": {"response_topic": "r/#"}}"#
        ),
        p(
            "/properties/response_topic",
            "topic names cannot contain wildcards: '#' found in level 2 of \"r/#\""
        )
    );
    assert_eq!(
        problems(
            Kind::Listen,
            r#"{"subscriptions": [{"filter": "a/#/b"}, {"filter": "ok/+"}, {"filter": "a+"}]}"#
        ),
        [
            p(
                "/subscriptions/0/filter",
                "'#' must be the last level of a topic filter (level 2 of \"a/#/b\")"
            ),
            p(
                "/subscriptions/2/filter",
                "'+' must be a whole level of a topic filter (level 1 of \"a+\")"
            ),
        ]
    );
    assert_eq!(
        one(
            Kind::Connection,
            r#"{"url": "mqtt://h", "will": {"topic": "w/#"}}"#
        ),
        p(
            "/will/topic",
            "topic names cannot contain wildcards: '#' found in level 2 of \"w/#\""
        )
    );
    // '$' topics are valid in a configuration; Send warns per document.
    assert!(problems(Kind::Send, r#"{"topic": "$SYS/x"}"#).is_empty());
}

#[test]
fn shared_subscriptions() {
    assert_eq!(
        one(Kind::Listen, r#"{"subscriptions": [{"filter": "$share//a"}]}"#),
        p(
            "/subscriptions/0/filter",
            "the share name of a shared subscription must be at least one character long (\"$share//a\")"
        )
    );
    assert_eq!(
        one(
            Kind::Listen,
            r#"{"subscriptions": [{"filter": "$share/g"}]}"#
        ),
        p(
            "/subscriptions/0/filter",
            "a shared subscription needs a topic filter after the share name (\"$share/g\")"
        )
    );
    assert_eq!(
        one(
            Kind::Listen,
            r#"{"subscriptions": [{"filter": "a"}], "shared_group": "g/h"}"#
        ),
        p("/shared_group", "the share name cannot contain '/'")
    );
    assert_eq!(
        one(
            Kind::Listen,
            r#"{"subscriptions": [{"filter": "a"}], "shared_group": ""}"#
        ),
        p(
            "/shared_group",
            "the share name must be at least one character long"
        )
    );
    assert_eq!(
        one(Kind::Listen, r#"{"subscriptions": [{"filter": "$share/g/a"}], "shared_group": "h"}"#),
        p(
            "/subscriptions/0/filter",
            "this filter is already a shared subscription: remove its $share/ prefix or shared_group"
        )
    );
    assert_eq!(
        one(
            Kind::Listen,
            r#"{"subscriptions": [{"filter": "a", "no_local": true}], "shared_group": "g"}"#
        ),
        p(
            "/subscriptions/0/no_local",
            "no_local cannot be used with a shared subscription (MQTT-3.8.3-4)"
        )
    );
}

#[test]
fn retained_only_conflicts() {
    assert_eq!(
        problems(
            Kind::Listen,
            r#"{"subscriptions": [{"filter": "a", "retain_handling": 2, "retain_as_published": true}],
                "retained": "only", "shared_group": "g"}"#
        ),
        [
            p("/shared_group", "shared subscriptions receive no retained messages, so retained \"only\" would never receive anything"),
            p("/subscriptions/0/retain_as_published", "with retained \"only\", retain_as_published would make live messages look retained"),
            p("/subscriptions/0/retain_handling", "retain_handling 2 tells the broker never to send retained messages, so retained \"only\" would never receive anything"),
        ]
    );
    assert_eq!(
        one(Kind::Listen, r#"{"subscriptions": [{"filter": "$share/g/a"}], "retained": "only"}"#),
        p("/subscriptions/0/filter", "shared subscriptions receive no retained messages, so retained \"only\" would never receive anything")
    );
}

#[test]
fn duplicate_filters() {
    assert_eq!(
        one(Kind::Listen, r#"{"subscriptions": [{"filter": "a/#"}, {"filter": "b"}, {"filter": "a/#", "qos": 2}]}"#),
        p(
            "/subscriptions/2/filter",
            "the filter \"a/#\" is already at /subscriptions/0/filter; the broker would keep only one of them"
        )
    );
}

#[test]
fn broker_urls() {
    let url = |u: &str| one(Kind::Connection, &json!({ "url": u }).to_string());
    assert_eq!(
        url("localhost:1883"),
        p("/url", "a broker URL starts with mqtt:// or mqtts://, for example mqtt://localhost:1883 or mqtts://broker.example.com")
    );
    assert_eq!(
        url("ws://h"),
        p(
            "/url",
            "unsupported scheme \"ws\": use mqtt:// (plain) or mqtts:// (TLS)"
        )
    );
    assert_eq!(
        url("mqtt://h:99999"),
        p(
            "/url",
            "the port must be a number from 1 to 65535, got \"99999\""
        )
    );
    assert_eq!(
        url("mqtt://").1,
        "the URL has no host, for example mqtt://localhost:1883 or mqtts://broker.example.com"
    );
}

#[test]
fn tcp_and_ssl_urls_are_mqtt_and_mqtts() {
    let c = parse_connection(r#"{"url": "tcp://h"}"#).unwrap();
    assert_eq!(c.connect_options().url, "mqtt://h:1883");
    let c = parse_connection(r#"{"url": "ssl://h", "tls": {"ca_file": "ca.pem"}}"#).unwrap();
    let o = c.connect_options();
    assert_eq!(o.url, "mqtts://h:8883");
    assert_eq!(o.tls.unwrap().ca_file.as_deref(), Some("ca.pem"));
}

#[test]
fn share_names_cannot_hold_the_null_character() {
    assert_eq!(
        one(
            Kind::Listen,
            r#"{"subscriptions": [{"filter": "a"}], "shared_group": "g\u0000"}"#
        ),
        p("/shared_group", "the share name cannot contain '\\0'")
    );
}

#[test]
fn validated_configurations_carry_parsed_topics() {
    let s = parse_send(r#"{"topic": "a/b", "properties": {"response_topic": "r"}}"#).unwrap();
    assert_eq!(s.topic.as_str(), "a/b");
    assert_eq!(s.properties.response_topic.unwrap().as_str(), "r");
    let l = parse_listen(r#"{"subscriptions": [{"filter": "$share/g/a/+"}]}"#).unwrap();
    assert_eq!(l.subscriptions[0].filter.shared().unwrap().group, "g");
    let c = parse_connection(r#"{"url": "mqtt://h", "will": {"topic": "w"}}"#).unwrap();
    assert!(!c.will.unwrap().topic.is_system());
    // Deserializing without validation still refuses a bad topic, with the
    // topic rule's message.
    let e = serde_json::from_str::<connector::config::SendConfig>(r#"{"topic": "a/+"}"#)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("topic names cannot contain wildcards"), "{e}");
}

#[test]
fn tls_needs_mqtts_and_both_halves_of_a_client_certificate() {
    assert_eq!(
        one(Kind::Connection, r#"{"url": "mqtt://h", "tls": {}}"#),
        p(
            "/tls",
            "tls settings need an mqtts:// URL; with mqtt:// the connection does not use TLS"
        )
    );
    assert_eq!(
        one(Kind::Connection, r#"{"url": "mqtts://h", "tls": {"client_cert_file": "c.pem"}}"#),
        p("/tls/client_key_file", "client_cert_file needs client_key_file: a client certificate is used with its private key")
    );
    assert_eq!(
        one(Kind::Connection, r#"{"url": "mqtts://h", "tls": {"client_key_file": "k.pem"}}"#),
        p("/tls/client_cert_file", "client_key_file needs client_cert_file: a private key is used with its client certificate")
    );
}

#[test]
fn session_rules() {
    let msg = "on MQTT 3.1.1 a session can only be resumed with a client_id: set client_id, or set clean_start to true";
    assert_eq!(
        one(
            Kind::Connection,
            r#"{"url": "mqtt://h", "mqtt_version": "3.1.1", "clean_start": false}"#
        ),
        p("/clean_start", msg)
    );
    assert_eq!(
        one(
            Kind::Connection,
            r#"{"url": "mqtt://h", "mqtt_version": "3.1.1", "clean_start": false, "client_id": ""}"#
        ),
        p("/clean_start", msg)
    );
    // 5.0 brokers assign an id; with an id, 3.1.1 is fine.
    assert!(problems(
        Kind::Connection,
        r#"{"url": "mqtt://h", "clean_start": false}"#
    )
    .is_empty());
    assert!(problems(
        Kind::Connection,
        r#"{"url": "mqtt://h", "mqtt_version": "3.1.1", "clean_start": false, "client_id": "c"}"#
    )
    .is_empty());
    assert_eq!(
        one(
            Kind::Connection,
            r#"{"url": "mqtt://h", "reconnect": {"min_delay_ms": 5000, "max_delay_ms": 1000}}"#
        ),
        p(
            "/reconnect/min_delay_ms",
            "min_delay_ms (5000) must not be greater than max_delay_ms (1000)"
        )
    );
}

#[test]
fn will_payloads() {
    assert_eq!(
        one(
            Kind::Connection,
            r#"{"url": "mqtt://h", "will": {"topic": "w", "payload": "a", "payload_base64": "YQ=="}}"#
        ),
        p(
            "/will/payload_base64",
            "set payload or payload_base64, not both"
        )
    );
    assert_eq!(
        one(
            Kind::Connection,
            r#"{"url": "mqtt://h", "will": {"topic": "w", "payload_base64": "a*=="}}"#
        ),
        p(
            "/will/payload_base64",
            "not valid base64: invalid character '*' at position 1"
        )
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let all = problems(
        Kind::Connection,
        r#"{"url": "http://h", "mqtt_version": "4", "keep_alive_secs": -5, "tls": {"alpn": "h2"},
            "will": {"topic": "+"}, "user": "bob"}"#,
    );
    let pointers: Vec<&str> = all.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        pointers,
        [
            "/keep_alive_secs",
            "/mqtt_version",
            "/tls/alpn",
            "/url",
            "/user",
            "/will/topic"
        ]
    );
    assert_eq!(
        all[4].1,
        "unknown field \"user\"; did you mean \"username\""
    );
}

#[test]
fn messages_are_lowercase_without_final_period() {
    let inputs = [
        (Kind::Connection, "{"),
        (
            Kind::Connection,
            r#"{"url": "x", "mqtt_version": 1, "tls": {"a": 1}, "reconnect": {"min_delay_ms": 9, "max_delay_ms": 1}}"#,
        ),
        (
            Kind::Send,
            r##"{"topic": "#", "qos": "x", "properties": {"user_properties": [{}]}}"##,
        ),
        (
            Kind::Listen,
            r#"{"subscriptions": [{"filter": "a#", "no_local": true}], "shared_group": "+", "retained": "only"}"#,
        ),
    ];
    for (kind, json) in inputs {
        let found = validate(kind, json);
        assert!(!found.is_empty());
        for problem in found {
            let m = &problem.message;
            assert!(!m.ends_with('.'), "{m}");
            assert!(!m.starts_with(char::is_uppercase), "{m}");
        }
    }
}

#[test]
fn parse_returns_problems_and_config_error_lists_them() {
    let problems = parse_send(r#"{"topic": "a/+", "qos": 5}"#).unwrap_err();
    assert_eq!(
        problems,
        [
            Problem::new("/qos", "expected one of 0, 1, 2, found the number 5"),
            Problem::new(
                "/topic",
                "topic names cannot contain wildcards: '+' found in level 2 of \"a/+\""
            ),
        ]
    );
    let e = config_error(Kind::Send, &problems);
    assert_eq!(
        e.message,
        "invalid send configuration: /qos: expected one of 0, 1, 2, found the number 5; /topic: topic names cannot contain wildcards: '+' found in level 2 of \"a/+\""
    );
    // A key written twice is invisible to the structural pass but still
    // reported.
    let twice = parse_send(r#"{"topic": "a", "topic": "b"}"#).unwrap_err();
    assert_eq!(twice.len(), 1);
    assert!(
        twice[0].message.starts_with("duplicate field `topic`"),
        "{:?}",
        twice
    );
}

// ---------------------------------------------------------------------------
// Never a panic, and what validates deserializes

fn arbitrary_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "[a-z#+/$ ]{0,12}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("mqtt://h"),
            Just("mqtts://h:1"),
            Just("3.1.1"),
            Just("5"),
            Just("only"),
            Just("skip"),
            Just("clear"),
            Just("utf8"),
            Just("$share/g/a"),
        ]
        .prop_map(serde_json::Value::from),
    ];
    let keys = prop_oneof![
        "[a-z_]{0,16}",
        prop_oneof![
            Just("url"),
            Just("topic"),
            Just("qos"),
            Just("tls"),
            Just("will"),
            Just("filter"),
            Just("subscriptions"),
            Just("retained"),
            Just("shared_group"),
            Just("mqtt_version"),
            Just("clean_start"),
            Just("client_id"),
            Just("payload_base64"),
            Just("payload"),
            Just("no_local"),
            Just("retain_handling"),
            Just("reconnect"),
            Just("min_delay_ms"),
            Just("properties"),
            Just("response_topic"),
            Just("client_cert_file"),
        ]
        .prop_map(String::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(keys.clone(), inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn validate_never_panics_on_strings(text in "\\PC{0,64}") {
        for kind in [Kind::Connection, Kind::Send, Kind::Listen] {
            let _ = validate(kind, &text);
        }
    }

    #[test]
    fn validate_never_panics_on_values(value in arbitrary_json()) {
        for kind in [Kind::Connection, Kind::Send, Kind::Listen] {
            let found = validate_value(kind, &value);
            for problem in &found {
                prop_assert!(problem.pointer.is_empty() || problem.pointer.starts_with('/'));
                prop_assert!(!problem.message.is_empty());
            }
            // No problems means the typed configuration reads it, and its
            // helpers work on it.
            if found.is_empty() {
                let text = value.to_string();
                match kind {
                    Kind::Connection => { parse_connection(&text).unwrap().connect_options(); }
                    Kind::Send => { parse_send(&text).unwrap(); }
                    Kind::Listen => { parse_listen(&text).unwrap().subscriptions(MqttVersion::V311).unwrap(); }
                }
            }
        }
    }
}
