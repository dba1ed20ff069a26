use super::expect::{self, Sent};
use super::run::{property_json, property_value, to_received};
use super::*;
use crate::host::{Document, Property, Value};
use serde_json::json;

const QUICKSTART: &str = include_str!("../../../examples/quickstart.flow.json");

fn pointers(flow: Json) -> Vec<String> {
    check(&flow)
        .into_iter()
        .map(|p| p.line().to_string())
        .collect()
}

fn send_step(config: Json) -> Json {
    json!({ "send": { "config": config, "documents": [{ "payload": "x" }] } })
}

fn valid_send() -> Json {
    json!({ "topic": "a/b", "qos": 1 })
}

fn valid_listen() -> Json {
    json!({ "subscriptions": [{ "filter": "a/+" }] })
}

#[test]
fn the_quickstart_parses_and_checks() {
    let flow = parse(QUICKSTART).unwrap();
    assert_eq!(flow.steps.len(), 2);
    assert!(matches!(&flow.steps[0], Step::Send(s) if s.documents.len() == 1));
    assert!(flow.broker.is_none() && flow.connection.is_none());
}

#[test]
fn every_step_kind_parses() {
    let flow: Flow = serde_json::from_value(json!({
        "steps": [
            { "subscribe": { "name": "early", "config": valid_listen() } },
            { "send": { "name": "device", "config": valid_send(),
                        "documents": [{ "payload_base64": "AAE=", "properties": { "mqtt.qos": 2 } }] } },
            { "sleep_ms": 10 },
            { "receive": { "name": "early", "count": 1, "expect": { "count": 1 } } },
            { "drop": "device" },
            { "close": "early" },
            { "listen": { "config": valid_listen(), "timeout_ms": 100 } }
        ]
    }))
    .unwrap();
    let kinds: Vec<&str> = flow.steps.iter().map(Step::kind).collect();
    assert_eq!(
        kinds,
        [
            "subscribe",
            "send",
            "sleep_ms",
            "receive",
            "drop",
            "close",
            "listen"
        ]
    );
}

#[test]
fn broker_steps_parse_and_need_the_builtin_broker() {
    let steps = json!([
        { "broker": "restart" },
        { "broker": "drop_connections" },
        { "broker": "reboot" }
    ]);
    let flow: Flow = serde_json::from_value(json!({
        "steps": [{ "broker": "restart" }, { "broker": "drop_connections" }]
    }))
    .unwrap();
    assert_eq!(
        flow.steps,
        [
            Step::Broker(BrokerStep::Restart),
            Step::Broker(BrokerStep::DropConnections)
        ]
    );
    assert_eq!(flow.steps[0].kind(), "broker");

    let problems = pointers(json!({ "steps": steps }));
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].starts_with("/steps/2/broker: ") && problems[0].contains("drop_connections"),
        "{problems:#?}"
    );

    // An external broker: the steps have nothing to act on.
    let external = json!({
        "connection": { "url": "mqtt://broker.example:1883" },
        "steps": [{ "sleep_ms": 1 }, { "broker": "restart" }]
    });
    assert_eq!(
        pointers(external),
        [
            "/steps/1/broker: `broker` steps act on the built-in broker, and the connection's \
          `url` names another; leave out `url` to run on the built-in broker"
        ]
    );
    let builtin = json!({
        "broker": {},
        "connection": { "url": "mqtt://ignored:1883" },
        "steps": [{ "broker": "drop_connections" }]
    });
    assert!(pointers(builtin).is_empty());

    let error = RunError::Step {
        index: 1,
        kind: "broker",
        source: StepError::ExternalBroker("mqtt://broker.example:1883".into()),
    };
    let chain = format!("{:#}", anyhow::Error::from(error));
    assert_eq!(
        chain,
        "step 1 (broker): `broker` steps act on the built-in broker, and this flow runs \
         against mqtt://broker.example:1883; leave out the connection's `url` (and --url) to \
         run on the built-in broker"
    );
}

#[test]
fn problems_point_at_the_step() {
    let problems = pointers(json!({
        "steps": [
            { "publish": {} },
            { "send": { "config": valid_send(), "colour": 1 } },
            { "receive": { "name": "nobody" } },
            { "close": "nobody" },
            {},
            { "send": { "config": valid_send(),
                        "documents": [{ "payload": "a", "payload_base64": "YQ==" },
                                      { "payload_base64": "not base64!" },
                                      { "properties": { "mqtt.qos": 1.5, "x": { "hex": "00" } } }] } }
        ],
        "extra": true
    }));
    let starts = |p: &str| problems.iter().any(|line| line.starts_with(p));
    assert!(starts("/extra: unknown key"), "{problems:#?}");
    assert!(
        starts("/steps/0/publish: unknown step `publish`"),
        "{problems:#?}"
    );
    assert!(
        starts("/steps/1/send: unknown field `colour`"),
        "{problems:#?}"
    );
    assert!(
        starts("/steps/2/receive/name: no listener `nobody`"),
        "{problems:#?}"
    );
    assert!(
        starts("/steps/3/close: no sender or listener `nobody`"),
        "{problems:#?}"
    );
    assert!(
        starts("/steps/4: a step is an object with one key"),
        "{problems:#?}"
    );
    assert!(
        starts("/steps/5/send/documents/0: give `payload` or `payload_base64`"),
        "{problems:#?}"
    );
    assert!(
        starts("/steps/5/send/documents/1/payload_base64: invalid base64"),
        "{problems:#?}"
    );
    assert!(
        starts("/steps/5/send/documents/2/properties/mqtt.qos: 1.5 is not a whole number"),
        "{problems:#?}"
    );
    assert!(
        starts("/steps/5/send/documents/2/properties/x: an object value"),
        "{problems:#?}"
    );
}

#[test]
fn a_flow_without_steps_or_object_is_reported() {
    assert_eq!(
        pointers(json!({})),
        ["(root): missing `steps`, the list of steps to run"]
    );
    assert_eq!(
        pointers(json!([])),
        ["(root): a flow is a JSON object with `steps`"]
    );
    assert_eq!(
        pointers(json!({ "steps": 3 })),
        ["/steps: must be a list of steps"]
    );
}

#[test]
fn the_connectors_problems_carry_the_step_pointer() {
    let problems = check(&json!({ "steps": [send_step(json!({ "topic": "a/#" }))] }));
    assert!(!problems.is_empty());
    for problem in &problems {
        assert!(
            problem.pointer.starts_with("/steps/0/send/config"),
            "{problem}"
        );
    }
}

#[test]
fn names_follow_the_flow() {
    let reuse = json!({ "steps": [
        { "send": { "name": "d", "config": valid_send() } },
        { "send": { "name": "d", "documents": [{ "payload": "again" }] } },
        { "close": "d" },
        { "send": { "name": "d" } }
    ]});
    assert_eq!(
        pointers(reuse),
        ["/steps/3/send: missing `config`, the Send configuration"]
    );

    let twice = json!({ "steps": [
        { "subscribe": { "name": "l", "config": valid_listen() } },
        { "subscribe": { "name": "l", "config": valid_listen() } }
    ]});
    assert_eq!(
        pointers(twice),
        ["/steps/1/subscribe/name: `l` is already open; close it first"]
    );
}

#[test]
fn broker_settings_go_over_a_loopback_test_broker() {
    let config = check::broker_config(&json!({ "retain": { "enabled": false } })).unwrap();
    assert_eq!((config.host.as_str(), config.port), ("127.0.0.1", 0));
    assert!(!config.retain.enabled);
    let tagoio = check::broker_config(&json!({ "profile": "tagoio", "port": 1999 })).unwrap();
    assert!(!tagoio.retain.enabled);
    assert_eq!(tagoio.port, 1999);
    let err = check::broker_config(&json!({ "retian": {} }))
        .unwrap_err()
        .to_string();
    assert!(err.contains("retian"), "{err}");
    let problems = pointers(json!({ "broker": { "port": "x" }, "steps": [] }));
    assert!(problems[0].starts_with("/broker/port: "), "{problems:?}");
}

#[test]
fn a_step_connection_overrides_the_flows() {
    let flow = json!({ "client_id": "a", "url": "mqtt://x:1" })
        .as_object()
        .cloned()
        .unwrap();
    let step = json!({ "client_id": "b" }).as_object().cloned().unwrap();
    let merged = check::merge_connection(&flow, Some(&step), "mqtt://y:2");
    assert_eq!(
        Json::Object(merged),
        json!({ "client_id": "b", "url": "mqtt://x:1" })
    );
    let merged = check::merge_connection(&Map::new(), None, "mqtt://y:2");
    assert_eq!(Json::Object(merged), json!({ "url": "mqtt://y:2" }));
}

#[test]
fn properties_map_both_ways() {
    for json in [
        json!("text"),
        json!(-3),
        json!(true),
        json!({ "base64": "AP8=" }),
        json!([["k", "v"], ["k", "w"]]),
    ] {
        let value = property_value(&json).unwrap();
        assert_eq!(property_json(&value), json);
    }
    assert!(
        matches!(property_value(&json!({ "base64": "AP8=" })), Ok(Value::Binary(b)) if b == [0, 255])
    );
    for bad in [
        json!(null),
        json!(0.5),
        json!({}),
        json!([["k"]]),
        json!({ "base64": "!" }),
    ] {
        assert!(property_value(&bad).is_err(), "{bad}");
    }
}

fn document(payload: &[u8], retained: bool) -> Document {
    Document {
        id: 7,
        payload: payload.to_vec(),
        properties: vec![
            Property {
                name: "mqtt.topic".into(),
                value: Value::Text("a/b".into()),
            },
            Property {
                name: "mqtt.qos".into(),
                value: Value::Integer(1),
            },
            Property {
                name: "mqtt.retained".into(),
                value: Value::Boolean(retained),
            },
            Property {
                name: "mqtt.duplicate".into(),
                value: Value::Boolean(false),
            },
            Property {
                name: "mqtt.correlation-data".into(),
                value: Value::Binary(vec![1, 2]),
            },
        ],
    }
}

#[test]
fn received_documents_print_as_one_json_line() {
    let line = document_line(&document(b"{\"a\":1}", true));
    assert_eq!(
        line,
        r#"{"topic":"a/b","qos":1,"retained":true,"payload":"{\"a\":1}","properties":{"mqtt.correlation-data":{"base64":"AQI="},"mqtt.duplicate":false}}"#
    );
    let binary: Json = serde_json::from_str(&document_line(&document(&[0xff, 0], false))).unwrap();
    assert_eq!(binary["payload_base64"], "/wA=");
    assert!(binary.get("payload").is_none());
}

#[test]
fn send_expectations() {
    let all_ok = Sent::Batch(vec![Ok(()), Ok(())]);
    let one_bad = Sent::Batch(vec![Ok(()), Err("document 1: topic is empty".into())]);
    assert!(expect::send(None, &all_ok).is_empty());
    assert_eq!(expect::send(None, &one_bad), ["1 of 2 documents failed"]);

    let want = SendExpect {
        ok: Some(1),
        failed: Some(1),
        errors: Some(vec!["empty".into()]),
        error: None,
    };
    assert!(expect::send(Some(&want), &one_bad).is_empty());
    assert_eq!(
        expect::send(Some(&want), &all_ok),
        [
            "expected 1 ok, got 2",
            "expected 1 failed, got 0",
            "expected 1 errors, got 0"
        ]
    );

    let refused = Sent::Failed("connection refused".into());
    let want = SendExpect {
        error: Some("refused".into()),
        ..SendExpect::default()
    };
    assert!(expect::send(Some(&want), &refused).is_empty());
    assert_eq!(
        expect::send(None, &refused),
        ["the send failed: connection refused"]
    );
    assert_eq!(
        expect::send(Some(&want), &all_ok),
        ["expected an error containing \"refused\", the send ran"]
    );
}

#[test]
fn listen_expectations() {
    let got = [
        to_received(&document(b"one", true)),
        to_received(&document(b"two", true)),
    ];
    assert!(expect::listen(None, &got, None).is_empty());

    let want = ListenExpect {
        count: Some(2),
        retained: Some(true),
        payloads: Some(vec!["one".into(), "two".into()]),
        ..ListenExpect::default()
    };
    assert!(expect::listen(Some(&want), &got, None).is_empty());

    let wrong = ListenExpect {
        count: Some(1),
        retained: Some(false),
        payloads: Some(vec!["two".into(), "one".into()]),
        ..ListenExpect::default()
    };
    let diffs = expect::listen(Some(&wrong), &got, None);
    assert_eq!(
        diffs,
        [
            "expected 1 documents, got 2",
            "document 0: expected retained false, got true",
            "document 1: expected retained false, got true",
            "expected payloads [\"two\", \"one\"], got [\"one\", \"two\"]",
        ]
    );
    let any_order = ListenExpect {
        count: None,
        retained: None,
        any_order: true,
        ..wrong
    };
    assert!(expect::listen(Some(&any_order), &got, None).is_empty());

    let failed = expect::listen(None, &[], Some("connection lost"));
    assert_eq!(failed, ["the listener failed: connection lost"]);
}

#[test]
fn document_matches_name_what_differs() {
    let got = to_received(&document(b"one", false));
    let want: DocumentMatch = serde_json::from_value(json!({
        "topic": "a/c", "qos": 1, "payload": "one",
        "properties": { "mqtt.duplicate": true, "mqtt.correlation-data": { "base64": "AQI=" }, "mqtt.content-type": null }
    }))
    .unwrap();
    assert_eq!(
        expect::document(&want, &got),
        [
            "expected topic \"a/c\", got \"a/b\"",
            "expected property mqtt.duplicate = true, got false"
        ]
    );

    let unordered = ListenExpect {
        documents: Some(vec![
            DocumentMatch {
                payload: Some("two".into()),
                ..DocumentMatch::default()
            },
            DocumentMatch {
                payload: Some("one".into()),
                ..DocumentMatch::default()
            },
        ]),
        any_order: true,
        ..ListenExpect::default()
    };
    let both = [got.clone(), to_received(&document(b"two", false))];
    assert!(expect::listen(Some(&unordered), &both, None).is_empty());
    let diffs = expect::listen(Some(&unordered), &[got.clone(), got], None);
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert!(
        diffs[0].starts_with("no document matches expected document 0"),
        "{diffs:?}"
    );
}

#[test]
fn the_schema_embeds_the_connector_configs() {
    let schema = schema();
    let text = schema.to_string();
    for word in [
        "steps",
        "sleep_ms",
        "subscribe",
        "payload_base64",
        "max_inflight",
    ] {
        assert!(text.contains(word), "{word} missing from the flow schema");
    }
    assert_eq!(schema["title"], "host-shim flow");
    // Stable: the same text every time, so the checked-in copy can be compared.
    assert_eq!(
        serde_json::to_string_pretty(&schema).ok(),
        serde_json::to_string_pretty(&super::schema()).ok()
    );
}

#[test]
fn errors_say_what_and_where() {
    assert!(parse("{")
        .unwrap_err()
        .to_string()
        .starts_with("invalid JSON: "));
    assert_eq!(
        parse("{}").unwrap_err().to_string(),
        "(root): missing `steps`, the list of steps to run"
    );
    let document = FlowDocument {
        payload: Some("x".into()),
        payload_base64: Some("eA==".into()),
        ..FlowDocument::default()
    };
    assert_eq!(
        to_document(&document).unwrap_err().to_string(),
        "give `payload` or `payload_base64`, not both"
    );
    let document = FlowDocument {
        properties: json!({ "x": { "a": 1 } }).as_object().cloned().unwrap(),
        ..FlowDocument::default()
    };
    let error = StepError::Document {
        index: 2,
        error: to_document(&document).unwrap_err(),
    };
    assert_eq!(
        error.to_string(),
        "document 2: property x: an object value must be {\"base64\": \"...\"}"
    );
    let error = RunError::Step {
        index: 3,
        kind: "close",
        source: StepError::NotOpen("a".into()),
    };
    let chain = format!("{:#}", anyhow::Error::from(error));
    assert_eq!(chain, "step 3 (close): no sender or listener `a` is open");
}
