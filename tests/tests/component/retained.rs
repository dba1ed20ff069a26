//! Retained messages through the connector: set, deliver, clear, the
//! Listen policies `skip` and `only`, and brokers without retain.

use crate::common::*;
use host_shim::host::{ErrorCode, Value};
use serde_json::json;

/// Set, deliver, clear:
/// - a retained send reaches a later listener flagged `mqtt.retained`
///   (5.0 MQTT-3.3.1-5, 3.1.1 MQTT-3.3.1-5 / MQTT-3.3.1-6 / MQTT-3.3.1-8);
/// - a non-retained send is not stored and leaves the retained message in
///   place (5.0 MQTT-3.3.1-8, 3.1.1 MQTT-3.3.1-12);
/// - a retained send to an established subscription arrives with
///   `mqtt.retained` false (5.0 MQTT-3.3.1-12 without Retain As Published,
///   3.1.1 MQTT-3.3.1-9);
/// - the `clear` action and an empty retained payload both remove the
///   retained message, so a later listener gets nothing for them (5.0
///   MQTT-3.3.1-6 / MQTT-3.3.1-7, 3.1.1 MQTT-3.3.1-10 / MQTT-3.3.1-11).
async fn retained_set_deliver_clear(target: &Target) -> anyhow::Result<()> {
    let mut retain = target
        .sender(json!({"topic": "ret/a", "qos": 1, "retained": true}))
        .await?;
    send_ok(&mut retain, &[doc("a1")]).await?;
    send_ok(&mut retain, &[doc("b1").with("mqtt.topic", text("ret/b"))]).await?;
    let mut plain = target.sender(json!({"topic": "ret/a", "qos": 1})).await?;
    // Not retained: delivered to nobody (no subscriber yet), stored nowhere,
    // and ret/a keeps "a1".
    send_ok(&mut plain, &[doc("a-live")]).await?;

    // A later listener gets the stored messages, flagged retained.
    let mut first = target
        .listener(json!({"subscriptions": [{"filter": "ret/#"}]}))
        .await?;
    let mut docs = receive(&mut first, 2).await?;
    docs.sort_by_key(|d| topic(d).to_owned());
    let seen: Vec<(&str, String, bool)> = docs
        .iter()
        .map(|d| (topic(d), payload(d), retained(d)))
        .collect();
    assert_eq!(
        seen,
        [
            ("ret/a", "a1".to_owned(), true),
            ("ret/b", "b1".to_owned(), true)
        ]
    );
    commit(&mut first, &docs).await?;

    // Live retained message to an established subscription: not flagged.
    send_ok(&mut retain, &[doc("a2")]).await?;
    let live = receive(&mut first, 1).await?;
    assert_eq!((topic(&live[0]), payload(&live[0])), ("ret/a", "a2".into()));
    assert!(!retained(&live[0]), "{live:?}");
    commit(&mut first, &live).await?;

    // Clear ret/a with the "clear" action (the document's payload is
    // ignored) and ret/b with an empty retained payload.
    let mut clear = target
        .sender(json!({"topic": "ret/a", "action": "clear"}))
        .await?;
    send_ok(&mut clear, &[doc("ignored")]).await?;
    send_ok(&mut retain, &[doc("").with("mqtt.topic", text("ret/b"))]).await?;
    // Existing subscribers get the clearing messages as normal messages,
    // with an empty payload.
    let mut cleared = receive(&mut first, 2).await?;
    cleared.sort_by_key(|d| topic(d).to_owned());
    let seen: Vec<(&str, usize)> = cleared
        .iter()
        .map(|d| (topic(d), d.payload.len()))
        .collect();
    assert_eq!(seen, [("ret/a", 0), ("ret/b", 0)]);
    commit(&mut first, &cleared).await?;
    close_listener(first).await?;

    // A sentinel retained message proves the next listener did get the
    // retained messages the broker has: only the sentinel is left.
    send_ok(
        &mut retain,
        &[doc("s").with("mqtt.topic", text("ret/sentinel"))],
    )
    .await?;
    let mut later = target
        .listener(json!({"subscriptions": [{"filter": "ret/#"}]}))
        .await?;
    let docs = receive_through(&mut later, "ret/sentinel").await?;
    assert_eq!(
        docs.iter().map(topic).collect::<Vec<_>>(),
        ["ret/sentinel"],
        "cleared topics must not be delivered: {}",
        summary(&docs)
    );
    commit(&mut later, &docs).await?;
    close_listener(later).await?;
    for sender in [retain, plain, clear] {
        close_sender(sender).await?;
    }
    Ok(())
}
on_every_broker!(retained_set_deliver_clear);

/// `retained: "only"` with `quiet_ms`: the listener takes the retained
/// messages matching its filter (not the live ones sent meanwhile), then
/// `done()` turns true once no retained message came for `quiet_ms`.
async fn retained_only_snapshot_finishes_when_quiet(target: &Target) -> anyhow::Result<()> {
    let mut sender = target
        .sender(json!({"topic": "snap/0", "retained": true}))
        .await?;
    let docs: Vec<_> = (0..3)
        .map(|i| doc(format!("v{i}")).with("mqtt.topic", text(&format!("snap/{i}"))))
        .collect();
    send_ok(&mut sender, &docs).await?;

    let mut snapshot = target
        .listener(json!({
            "subscriptions": [{"filter": "snap/#"}],
            "retained": "only",
            "quiet_ms": 300,
        }))
        .await?;
    // A live message during the snapshot is not part of it.
    send_ok(
        &mut sender,
        &[doc("live")
            .with("mqtt.topic", text("snap/live"))
            .with("mqtt.retained", Value::Boolean(false))],
    )
    .await?;

    let deadline = tokio::time::Instant::now() + WAIT;
    let mut got = Vec::new();
    while !within("listener.done", snapshot.done()).await?? {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the snapshot did not finish within {WAIT:?}; got {}",
            summary(&got)
        );
        let batch = within(
            "listener.next",
            snapshot.next(100, std::time::Duration::from_secs(1)),
        )
        .await??;
        commit(&mut snapshot, &batch).await?;
        got.extend(batch);
    }
    got.sort_by_key(|d| topic(d).to_owned());
    let seen: Vec<(&str, String, bool)> = got
        .iter()
        .map(|d| (topic(d), payload(d), retained(d)))
        .collect();
    assert_eq!(
        seen,
        [
            ("snap/0", "v0".to_owned(), true),
            ("snap/1", "v1".to_owned(), true),
            ("snap/2", "v2".to_owned(), true),
        ]
    );
    // Once done, it stays done and hands out nothing more.
    let after = within(
        "listener.next",
        snapshot.next(100, std::time::Duration::from_millis(100)),
    )
    .await??;
    assert!(after.is_empty(), "after done: {}", summary(&after));
    assert!(within("listener.done", snapshot.done()).await??);
    close_listener(snapshot).await?;
    close_sender(sender).await
}
on_every_broker!(retained_only_snapshot_finishes_when_quiet);

/// `retained: "skip"`: the stored retained message is not delivered (5.0
/// through Retain Handling 2, MQTT-3.3.1-11; 3.1.1 by the connector dropping
/// RETAIN=1 deliveries, which only a new subscription causes, MQTT-3.3.1-8),
/// while live messages are, including a live message published retained.
async fn retained_skip_gets_only_live_messages(target: &Target) -> anyhow::Result<()> {
    let mut sender = target
        .sender(json!({"topic": "skip/old", "retained": true}))
        .await?;
    send_ok(&mut sender, &[doc("old")]).await?;

    let mut listener = target
        .listener(json!({"subscriptions": [{"filter": "skip/#"}], "retained": "skip"}))
        .await?;
    send_ok(
        &mut sender,
        &[
            doc("new")
                .with("mqtt.topic", text("skip/new"))
                .with("mqtt.retained", Value::Boolean(false)),
            doc("new-retained").with("mqtt.topic", text("skip/new-retained")),
            // Last, so that receiving it means the others had their chance.
            doc("end")
                .with("mqtt.topic", text("skip/sentinel"))
                .with("mqtt.retained", Value::Boolean(false)),
        ],
    )
    .await?;
    let docs = receive_through(&mut listener, "skip/sentinel").await?;
    let mut seen: Vec<(&str, bool)> = docs.iter().map(|d| (topic(d), retained(d))).collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("skip/new", false),
            ("skip/new-retained", false),
            ("skip/sentinel", false)
        ]
    );
    commit(&mut listener, &docs).await?;
    close_listener(listener).await?;
    close_sender(sender).await
}
on_every_broker!(retained_skip_gets_only_live_messages);

/// On a broker without retained messages, a retained send never loses its
/// flag silently (5.0 MQTT-3.2.2-14: the client must not send it): the
/// document fails with `unsupported` while the rest of its batch goes
/// through; with `retain_unsupported: "strip"` it is sent without the flag;
/// `clear` always fails. An MQTT 3.1.1 broker cannot say it lacks retain, so
/// there the connection declares `retain_supported: false`.
async fn retain_unsupported_fails_or_strips(target: &Target) -> anyhow::Result<()> {
    let connection = match target.version {
        Version::V5 => target.connection(),
        Version::V311 => target.connection_with(json!({"retain_supported": false})),
    };
    let rt = runtime();
    let mut listener = open_listener(
        &connection,
        json!({"subscriptions": [{"filter": "noret/#", "qos": 1}]}),
    )
    .await?;

    let mut strict = open_sender(&rt, &connection, json!({"topic": "noret/strict"})).await?;
    let results = send(
        &mut strict,
        &[
            doc("kept").with("mqtt.retained", Value::Boolean(true)),
            doc("plain"),
        ],
    )
    .await?;
    let error = results[0]
        .as_ref()
        .expect_err("a retained document fails where retain is unsupported");
    assert_eq!(error.code, ErrorCode::Unsupported, "{error:?}");
    assert_eq!(error.document_index, Some(0));
    assert!(
        error.message.contains("does not support retained messages"),
        "the message says why: {}",
        error.message
    );
    assert!(
        error.message.contains("retain_unsupported"),
        "the message says how to fix it: {}",
        error.message
    );
    assert!(results[1].is_ok(), "{:?}", results[1]);

    let mut strip = open_sender(
        &rt,
        &connection,
        json!({"topic": "noret/stripped", "retained": true, "retain_unsupported": "strip"}),
    )
    .await?;
    send_ok(&mut strip, &[doc("stripped")]).await?;

    let mut clear = open_sender(
        &rt,
        &connection,
        json!({"topic": "noret/stripped", "action": "clear", "retain_unsupported": "strip"}),
    )
    .await?;
    let results = send(&mut clear, &[doc("")]).await?;
    let error = results[0].as_ref().expect_err("clear needs retain");
    assert_eq!(error.code, ErrorCode::Unsupported, "{error:?}");

    // The plain and the stripped messages arrived; the failed ones did not.
    let docs = receive_through(&mut listener, "noret/stripped").await?;
    let mut seen: Vec<(&str, String, bool)> = docs
        .iter()
        .map(|d| (topic(d), payload(d), retained(d)))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("noret/strict", "plain".to_owned(), false),
            ("noret/stripped", "stripped".to_owned(), false)
        ]
    );
    commit(&mut listener, &docs).await?;
    close_listener(listener).await?;

    // And the broker kept nothing: a later listener gets no retained
    // message (a live sentinel marks the end of what it would have got).
    let mut later = open_listener(
        &connection,
        json!({"subscriptions": [{"filter": "noret/#", "qos": 1}]}),
    )
    .await?;
    send_ok(
        &mut strict,
        &[doc("end").with("mqtt.topic", text("noret/end"))],
    )
    .await?;
    let docs = receive_through(&mut later, "noret/end").await?;
    assert_eq!(docs.iter().map(topic).collect::<Vec<_>>(), ["noret/end"]);
    commit(&mut later, &docs).await?;
    close_listener(later).await?;
    for sender in [strict, strip, clear] {
        close_sender(sender).await?;
    }
    Ok(())
}
on_every_broker!(
    retain_unsupported_fails_or_strips,
    crate::common::BrokerOptions { retain: false }
);
