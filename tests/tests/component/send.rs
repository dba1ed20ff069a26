//! The Send operation's per-document behaviour: overrides from document
//! properties, MQTT 5.0 properties end to end, and bad documents failing
//! alone.

use crate::common::*;
use host_shim::host::{Document, ErrorCode, Value};
use serde_json::json;

/// One batch mixing good and bad documents: each bad one fails alone with
/// its index and an `invalid-document` error that names the problem, and
/// every other one is delivered with its overrides applied (`mqtt.topic`,
/// `mqtt.qos`, `mqtt.retained`). A wildcard in a topic name is refused
/// before it reaches the broker (5.0 MQTT-3.3.2-2, 3.1.1 MQTT-4.7.1-1).
async fn overrides_apply_and_bad_documents_fail_alone(target: &Target) -> anyhow::Result<()> {
    let mut listener = target
        .listener(json!({"subscriptions": [{"filter": "ovr/#", "qos": 2}]}))
        .await?;
    let mut sender = target
        .sender(json!({"topic": "ovr/default", "qos": 0}))
        .await?;
    let batch = [
        // 0: the configuration as it is.
        doc("plain"),
        // 1: another topic at another QoS.
        doc("moved")
            .with("mqtt.topic", text("ovr/moved"))
            .with("mqtt.qos", Value::Integer(2)),
        // 2: a wildcard in the topic name.
        doc("bad-topic").with("mqtt.topic", text("ovr/+/x")),
        // 3: no such QoS.
        doc("bad-qos").with("mqtt.qos", Value::Integer(3)),
        // 4: retained on its own topic.
        doc("kept")
            .with("mqtt.topic", text("ovr/kept"))
            .with("mqtt.qos", Value::Integer(1))
            .with("mqtt.retained", Value::Boolean(true)),
        // 5: a multi-level wildcard.
        doc("bad-hash").with("mqtt.topic", text("ovr/#")),
        // 6: the QoS as text, not a number.
        doc("bad-type").with("mqtt.qos", text("1")),
        // 7: the last good one, after the bad ones.
        doc("last").with("mqtt.topic", text("ovr/last")),
    ];
    let results = send(&mut sender, &batch).await?;

    let failed: Vec<(usize, ErrorCode, Option<u32>)> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e.code, e.document_index)))
        .collect();
    assert_eq!(
        failed,
        [
            (2, ErrorCode::InvalidDocument, Some(2)),
            (3, ErrorCode::InvalidDocument, Some(3)),
            (5, ErrorCode::InvalidDocument, Some(5)),
            (6, ErrorCode::InvalidDocument, Some(6)),
        ],
        "{results:?}"
    );
    let message = |i: usize| results[i].as_ref().unwrap_err().message.clone();
    for (i, words) in [
        (2, ["mqtt.topic", "wildcard"]),
        (3, ["mqtt.qos", "3"]),
        (5, ["mqtt.topic", "wildcard"]),
        (6, ["mqtt.qos", "integer"]),
    ] {
        let m = message(i);
        assert!(
            words.iter().all(|w| m.contains(w)),
            "document {i}: the message should mention {words:?}: {m}"
        );
    }

    let mut docs = receive(&mut listener, 4).await?;
    docs.sort_by_key(|d| topic(d).to_owned());
    let seen: Vec<(&str, String, i64)> = docs
        .iter()
        .map(|d| (topic(d), payload(d), qos(d)))
        .collect();
    assert_eq!(
        seen,
        [
            ("ovr/default", "plain".to_owned(), 0),
            ("ovr/kept", "kept".to_owned(), 1),
            ("ovr/last", "last".to_owned(), 0),
            ("ovr/moved", "moved".to_owned(), 2),
        ]
    );
    commit(&mut listener, &docs).await?;
    // The bad documents never reached the broker.
    let extra = receive_for(&mut listener, QUIET).await?;
    assert!(extra.is_empty(), "unexpected {}", summary(&extra));
    close_listener(listener).await?;

    // Only the document that asked for it was retained.
    let mut later = target
        .listener(
            json!({"subscriptions": [{"filter": "ovr/#"}], "retained": "only", "quiet_ms": 300}),
        )
        .await?;
    let kept = receive(&mut later, 1).await?;
    assert_eq!((topic(&kept[0]), retained(&kept[0])), ("ovr/kept", true));
    commit(&mut later, &kept).await?;
    let extra = receive_for(&mut later, QUIET).await?;
    assert!(extra.is_empty(), "unexpected {}", summary(&extra));
    close_listener(later).await?;
    close_sender(sender).await
}
on_every_broker!(overrides_apply_and_bad_documents_fail_alone);

/// MQTT 5.0 properties set per document and in the configuration arrive on
/// the listener side unaltered: content type (MQTT-3.3.2-20), payload format
/// (MQTT-3.3.2-4), response topic (MQTT-3.3.2-15), correlation data
/// (MQTT-3.3.2-16), user properties in order, configured ones first
/// (MQTT-3.3.2-17, MQTT-3.3.2-18), and the message expiry interval, which the
/// broker may only lower by the time the message waited (MQTT-3.3.2-6). On
/// 3.1.1 they have no wire form: the message still goes, without them.
async fn v5_properties_reach_the_listener(target: &Target) -> anyhow::Result<()> {
    let mut listener = target
        .listener(json!({"subscriptions": [{"filter": "props/#", "qos": 1}]}))
        .await?;
    let mut sender = target
        .sender(json!({
            "topic": "props/a",
            "properties": {
                "content_type": "text/plain",
                "user_properties": [{"name": "origin", "value": "config"}],
            },
        }))
        .await?;
    let batch = [
        // Document properties override and extend the configured ones.
        doc(r#"{"t":21.5}"#)
            .with("mqtt.content-type", text("application/json"))
            .with("mqtt.payload-format", Value::Integer(1))
            .with("mqtt.response-topic", text("props/replies"))
            .with("mqtt.correlation-data", Value::Binary(vec![0, 159, 255]))
            .with("mqtt.message-expiry", Value::Integer(3600))
            .with(
                "mqtt.user-properties",
                Value::Pairs(vec![("k".into(), "v1".into()), ("k".into(), "v2".into())]),
            ),
        // Only the configured properties.
        doc("second").with("mqtt.topic", text("props/b")),
    ];
    send_ok(&mut sender, &batch).await?;
    let mut docs = receive(&mut listener, 2).await?;
    docs.sort_by_key(|d| topic(d).to_owned());
    let (first, second) = (&docs[0], &docs[1]);
    assert_eq!(topic(first), "props/a");
    assert_eq!(first.payload, batch[0].payload);

    let v5_only = [
        "mqtt.content-type",
        "mqtt.payload-format",
        "mqtt.response-topic",
        "mqtt.correlation-data",
        "mqtt.user-properties",
        "mqtt.message-expiry",
    ];
    match target.version {
        Version::V5 => {
            assert_eq!(
                property(first, "mqtt.content-type"),
                Some(&text("application/json"))
            );
            assert_eq!(
                property(first, "mqtt.payload-format"),
                Some(&Value::Integer(1))
            );
            assert_eq!(
                property(first, "mqtt.response-topic"),
                Some(&text("props/replies"))
            );
            assert_eq!(
                property(first, "mqtt.correlation-data"),
                Some(&Value::Binary(vec![0, 159, 255]))
            );
            assert_eq!(
                property(first, "mqtt.user-properties"),
                Some(&Value::Pairs(vec![
                    ("origin".into(), "config".into()),
                    ("k".into(), "v1".into()),
                    ("k".into(), "v2".into()),
                ]))
            );
            match property(first, "mqtt.message-expiry") {
                Some(Value::Integer(secs)) => assert!(
                    (3590..=3600).contains(secs),
                    "expiry lowered by more than the wait: {secs}"
                ),
                other => panic!("mqtt.message-expiry: {other:?}"),
            }
            assert_eq!(
                property(second, "mqtt.content-type"),
                Some(&text("text/plain"))
            );
            assert_eq!(
                property(second, "mqtt.user-properties"),
                Some(&Value::Pairs(vec![("origin".into(), "config".into())]))
            );
            assert_eq!(property(second, "mqtt.correlation-data"), None);
        }
        Version::V311 => {
            for d in [first, second] {
                let present: Vec<&str> = v5_only
                    .iter()
                    .copied()
                    .filter(|name| property(d, name).is_some())
                    .collect();
                assert!(
                    present.is_empty(),
                    "3.1.1 has no such properties: {present:?}"
                );
            }
        }
    }
    commit(&mut listener, &docs).await?;
    close_listener(listener).await?;
    close_sender(sender).await
}
on_every_broker!(v5_properties_reach_the_listener);

/// A received document can be sent on as it is (a Listen -> Send bridge):
/// the properties Listen sets (`mqtt.duplicate`, `mqtt.retained`, ...) are
/// accepted by Send, and the 5.0 properties travel along.
async fn received_documents_can_be_sent_on(target: &Target) -> anyhow::Result<()> {
    let mut source = target
        .listener(json!({"subscriptions": [{"filter": "in/#", "qos": 1}]}))
        .await?;
    let mut sink = target
        .listener(json!({"subscriptions": [{"filter": "out/#", "qos": 1}]}))
        .await?;
    let mut producer = target.sender(json!({"topic": "in/1"})).await?;
    send_ok(
        &mut producer,
        &[doc("hop").with("mqtt.content-type", text("text/plain"))],
    )
    .await?;
    let received = receive(&mut source, 1).await?;

    // Forward to out/...: only the topic changes.
    let mut bridge = target
        .sender(json!({"topic": "out/1", "overrides": {"topic": false}}))
        .await?;
    let forwarded: Vec<Document> = received
        .iter()
        .map(|d| Document { id: 0, ..d.clone() })
        .collect();
    send_ok(&mut bridge, &forwarded).await?;
    commit(&mut source, &received).await?;

    let out = receive(&mut sink, 1).await?;
    assert_eq!((topic(&out[0]), payload(&out[0])), ("out/1", "hop".into()));
    assert_eq!(qos(&out[0]), 1);
    if target.version == Version::V5 {
        assert_eq!(
            property(&out[0], "mqtt.content-type"),
            Some(&text("text/plain"))
        );
    }
    commit(&mut sink, &out).await?;
    for listener in [source, sink] {
        close_listener(listener).await?;
    }
    for sender in [producer, bridge] {
        close_sender(sender).await?;
    }
    Ok(())
}
on_every_broker!(received_documents_can_be_sent_on);
