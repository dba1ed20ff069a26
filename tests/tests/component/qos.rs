//! Every QoS both ways: senders at QoS 0, 1 and 2 to listeners subscribed at
//! QoS 0, 1 and 2.

use crate::common::*;
use serde_json::json;

/// Each message reaches every listener at the minimum of the QoS it was
/// published with and the QoS its subscription was granted (5.0
/// MQTT-3.8.4-8, 3.1.1 MQTT-3.8.4-6), and the Send operation reports success
/// for each QoS (PUBACK / PUBCOMP received).
async fn every_qos_pair_delivers_at_the_minimum(target: &Target) -> anyhow::Result<()> {
    let mut listeners = Vec::new();
    for sub_qos in 0..=2 {
        let listener = target
            .listener(json!({"subscriptions": [{"filter": "qos/#", "qos": sub_qos}]}))
            .await?;
        listeners.push((sub_qos, listener));
    }

    for pub_qos in 0..=2 {
        let mut sender = target
            .sender(json!({"topic": format!("qos/sent-at-{pub_qos}"), "qos": pub_qos}))
            .await?;
        send_ok(&mut sender, &[doc(format!("q{pub_qos}"))]).await?;
        close_sender(sender).await?;
    }

    for (sub_qos, mut listener) in listeners {
        let mut docs = receive(&mut listener, 3).await?;
        docs.sort_by_key(|d| topic(d).to_owned());
        let seen: Vec<(String, i64)> = docs.iter().map(|d| (topic(d).to_owned(), qos(d))).collect();
        let expected: Vec<(String, i64)> = (0..=2)
            .map(|pub_qos| (format!("qos/sent-at-{pub_qos}"), pub_qos.min(sub_qos)))
            .collect();
        assert_eq!(seen, expected, "subscription at QoS {sub_qos}");
        for d in &docs {
            assert_eq!(
                payload(d),
                format!("q{}", &topic(d)["qos/sent-at-".len()..])
            );
            assert!(!retained(d), "a live message is not retained: {d:?}");
        }
        commit(&mut listener, &docs).await?;
        // Nothing more: each message came exactly once to each listener.
        let extra = receive_for(&mut listener, QUIET).await?;
        assert!(
            extra.is_empty(),
            "subscription at QoS {sub_qos}: unexpected {}",
            summary(&extra)
        );
        close_listener(listener).await?;
    }
    Ok(())
}
on_every_broker!(every_qos_pair_delivers_at_the_minimum);

/// A per-document `mqtt.qos` overrides the configured QoS, in both
/// directions, within one batch: a QoS 2 subscriber sees each message at
/// the QoS its document asked for.
async fn per_document_qos_overrides_the_configured_qos(target: &Target) -> anyhow::Result<()> {
    let mut listener = target
        .listener(json!({"subscriptions": [{"filter": "mixed/+", "qos": 2}]}))
        .await?;
    let mut sender = target.sender(json!({"topic": "mixed/x", "qos": 1})).await?;
    let docs: Vec<_> = [2i64, 0, 1, 2, 0]
        .iter()
        .enumerate()
        .map(|(i, q)| {
            doc(format!("{i}"))
                .with("mqtt.topic", text(&format!("mixed/{i}")))
                .with("mqtt.qos", host_shim::host::Value::Integer(*q))
        })
        .collect();
    send_ok(&mut sender, &docs).await?;

    let mut got = receive(&mut listener, docs.len()).await?;
    got.sort_by_key(payload);
    let seen: Vec<(String, i64)> = got.iter().map(|d| (topic(d).to_owned(), qos(d))).collect();
    assert_eq!(
        seen,
        [
            ("mixed/0".to_owned(), 2),
            ("mixed/1".to_owned(), 0),
            ("mixed/2".to_owned(), 1),
            ("mixed/3".to_owned(), 2),
            ("mixed/4".to_owned(), 0),
        ]
    );
    commit(&mut listener, &got).await?;
    close_sender(sender).await?;
    close_listener(listener).await
}
on_every_broker!(per_document_qos_overrides_the_configured_qos);
