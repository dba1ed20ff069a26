//! QoS round trips, property forwarding, overlapping subscriptions and topic
//! matching.

use anyhow::Result;
use bytes::Bytes;
use e2e::*;
use std::time::Duration;

/// A payload that is not valid UTF-8 and contains a NUL, so that any
/// text-based mangling shows.
fn payload(pub_qos: u8, sub_qos: u8) -> Vec<u8> {
    let mut p = format!("pub{pub_qos}-sub{sub_qos}-").into_bytes();
    p.extend_from_slice(&[0x00, 0xFF, 0xFE, 0x80]);
    p
}

/// 3.1.1: every (publish QoS, subscription QoS) pair. The SUBACK grants what
/// was asked (the broker supports QoS 2, v311 MQTT-3.8.4-5, MQTT-3.9.3-1), the
/// delivered QoS is min(publish, granted) (v311 MQTT-3.8.4-6), topic and
/// payload arrive unchanged, and a first delivery has DUP=0 (v311
/// MQTT-3.3.1-2, MQTT-4.3.2-1/2) and RETAIN=0 (v311 MQTT-3.3.1-9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_qos_matrix_delivered_qos_is_min_mqtt_3_8_4_6() -> Result<()> {
    let broker = Broker::start().await?;
    let mut sub = V4::connect(v4_opts(&broker, "v4-matrix-sub")).await?;
    let mut publ = V4::connect(v4_opts(&broker, "v4-matrix-pub")).await?;

    for sub_qos in 0..=2u8 {
        let granted = sub
            .subscribe(&format!("matrix/s{sub_qos}"), sub_qos)
            .await?;
        assert_eq!(granted, sub_qos, "granted QoS for a QoS {sub_qos} request");
    }
    for sub_qos in 0..=2u8 {
        for pub_qos in 0..=2u8 {
            let topic = format!("matrix/s{sub_qos}");
            publ.publish(&topic, pub_qos, false, &payload(pub_qos, sub_qos))
                .await?;
            let got = sub.next_publish().await?;
            assert_eq!(got.topic, topic);
            assert_eq!(got.payload, Bytes::from(payload(pub_qos, sub_qos)));
            assert_eq!(
                got.qos as u8,
                pub_qos.min(sub_qos),
                "publish QoS {pub_qos} to a QoS {sub_qos} subscription"
            );
            assert!(!got.dup, "first delivery must have DUP=0: {got:?}");
            assert!(!got.retain, "live delivery must have RETAIN=0: {got:?}");
        }
    }
    sub.no_publish().await?;
    broker.shutdown().await
}

/// 5.0: the same matrix (v5 MQTT-3.8.4-7/8, MQTT-3.3.1-2, MQTT-4.3.2-2,
/// MQTT-4.3.3-2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_qos_matrix_delivered_qos_is_min_mqtt_3_8_4_8() -> Result<()> {
    let broker = Broker::start().await?;
    let mut sub = V5::connect(v5_opts(&broker, "v5-matrix-sub")).await?;
    let mut publ = V5::connect(v5_opts(&broker, "v5-matrix-pub")).await?;

    for sub_qos in 0..=2u8 {
        let granted = sub
            .subscribe(&format!("matrix/s{sub_qos}"), sub_qos)
            .await?;
        assert_eq!(granted, sub_qos, "granted QoS for a QoS {sub_qos} request");
    }
    for sub_qos in 0..=2u8 {
        for pub_qos in 0..=2u8 {
            let topic = format!("matrix/s{sub_qos}");
            publ.publish(&topic, pub_qos, false, &payload(pub_qos, sub_qos))
                .await?;
            let got = sub.next_publish().await?;
            assert_eq!(topic5(&got), topic);
            assert_eq!(got.payload, Bytes::from(payload(pub_qos, sub_qos)));
            assert_eq!(
                got.qos as u8,
                pub_qos.min(sub_qos),
                "publish QoS {pub_qos} to a QoS {sub_qos} subscription"
            );
            assert!(!got.dup, "first delivery must have DUP=0: {got:?}");
            assert!(!got.retain, "live delivery must have RETAIN=0: {got:?}");
        }
    }
    sub.no_publish().await?;
    broker.shutdown().await
}

/// 5.0: Payload Format Indicator (MQTT-3.3.2-4), Response Topic
/// (MQTT-3.3.2-15), Correlation Data (MQTT-3.3.2-16), User Properties in
/// order, duplicates kept (MQTT-3.3.2-17/18) and Content Type (MQTT-3.3.2-20)
/// are forwarded unaltered; the Message Expiry Interval is forwarded, never
/// increased (MQTT-3.3.2-6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_publish_properties_forwarded_mqtt_3_3_2_4_15_16_17_20() -> Result<()> {
    let broker = Broker::start().await?;
    let mut sub = V5::connect(v5_opts(&broker, "v5-props-sub")).await?;
    let mut publ = V5::connect(v5_opts(&broker, "v5-props-pub")).await?;
    sub.subscribe("props/t", 2).await?;

    let user_properties = vec![
        ("k".to_owned(), "first".to_owned()),
        ("other".to_owned(), "x".to_owned()),
        ("k".to_owned(), "second".to_owned()),
    ];
    for qos in 0..=2u8 {
        let props = p5::PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(300),
            response_topic: Some("props/reply".to_owned()),
            correlation_data: Some(Bytes::from_static(&[0, 1, 2, 0xFF])),
            user_properties: user_properties.clone(),
            content_type: Some("application/json".to_owned()),
            ..Default::default()
        };
        publ.publish_with("props/t", qos, false, br#"{"n":1}"#, props)
            .await?;
        let got = sub.next_publish().await?;
        assert_eq!(got.qos as u8, qos);
        let p = got.properties.clone().unwrap_or_default();
        assert_eq!(p.payload_format_indicator, Some(1), "{got:?}");
        assert_eq!(p.response_topic.as_deref(), Some("props/reply"), "{got:?}");
        assert_eq!(
            p.correlation_data.as_deref(),
            Some(&[0u8, 1, 2, 0xFF][..]),
            "{got:?}"
        );
        assert_eq!(p.user_properties, user_properties, "{got:?}");
        assert_eq!(
            p.content_type.as_deref(),
            Some("application/json"),
            "{got:?}"
        );
        let expiry = p
            .message_expiry_interval
            .expect("Message Expiry Interval must be forwarded");
        assert!(
            (290..=300).contains(&expiry),
            "expiry {expiry} must be the sent 300 minus time waited"
        );
        assert!(p.subscription_identifiers.is_empty(), "{got:?}");
    }
    broker.shutdown().await
}

/// 5.0: messages queued for an offline session have their Message Expiry
/// Interval reduced by the time they waited (MQTT-3.3.2-6), and a message
/// whose interval passed before delivery is not delivered (MQTT-3.3.2-5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_message_expiry_while_queued_mqtt_3_3_2_5_and_6() -> Result<()> {
    let broker = Broker::start().await?;
    let mut opts = v5_opts(&broker, "v5-expiry-sub");
    opts.set_clean_start(true)
        .set_session_expiry_interval(Some(60));
    let mut sub = V5::connect(opts.clone()).await?;
    sub.subscribe("expiry/t", 1).await?;
    sub.disconnect().await?;

    let mut publ = V5::connect(v5_opts(&broker, "v5-expiry-pub")).await?;
    for (payload, expiry) in [(&b"short"[..], 1u32), (&b"long"[..], 60)] {
        let props = p5::PublishProperties {
            message_expiry_interval: Some(expiry),
            ..Default::default()
        };
        publ.publish_with("expiry/t", 1, false, payload, props)
            .await?;
    }
    // Long enough for the 1 s message to expire and for the 60 s one to
    // have visibly aged.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    opts.set_clean_start(false);
    let mut sub = V5::connect(opts).await?;
    assert!(sub.session_present(), "session with expiry 60 must survive");
    let got = sub.next_publish().await?;
    assert_eq!(
        got.payload,
        Bytes::from_static(b"long"),
        "the expired message must be dropped"
    );
    let left = got
        .properties
        .as_ref()
        .and_then(|p| p.message_expiry_interval)
        .expect("Message Expiry Interval must be forwarded");
    assert!(
        (30..=59).contains(&left),
        "after waiting 1.5 s the remaining interval must be below 60, got {left}"
    );
    sub.no_publish().await?;
    broker.shutdown().await
}

/// 3.1.1: one client with overlapping subscriptions `ov/+` (QoS 1) and
/// `ov/#` (QoS 2) gets a QoS 2 publish at the maximum QoS of the matching
/// subscriptions (v311 MQTT-3.3.5-1), and this broker sends one copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_overlapping_subscriptions_one_copy_max_qos_mqtt_3_3_5_1() -> Result<()> {
    let broker = Broker::start().await?;
    let mut sub = V4::connect(v4_opts(&broker, "v4-overlap-sub")).await?;
    let mut publ = V4::connect(v4_opts(&broker, "v4-overlap-pub")).await?;
    assert_eq!(sub.subscribe("ov/+", 1).await?, 1);
    assert_eq!(sub.subscribe("ov/#", 2).await?, 2);

    publ.publish("ov/b", 2, false, b"once").await?;
    let got = sub.next_publish().await?;
    assert_eq!(
        got.qos as u8, 2,
        "QoS must be the max of the matching subscriptions"
    );
    assert_eq!(got.payload, Bytes::from_static(b"once"));
    sub.no_publish().await?;
    broker.shutdown().await
}

/// 5.0: overlapping subscriptions with Subscription Identifiers 1 and 2: one
/// copy at the maximum QoS (MQTT-3.3.4-2) carrying both identifiers
/// (MQTT-3.3.4-3/4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_overlapping_subscriptions_all_ids_mqtt_3_3_4_2_to_4() -> Result<()> {
    let broker = Broker::start().await?;
    let mut sub = V5::connect(v5_opts(&broker, "v5-overlap-sub")).await?;
    let mut publ = V5::connect(v5_opts(&broker, "v5-overlap-pub")).await?;
    sub.subscribe_with(p5::Filter::new("ov/+", qos5(1)), Some(1))
        .await?;
    sub.subscribe_with(p5::Filter::new("ov/#", qos5(2)), Some(2))
        .await?;

    publ.publish("ov/b", 2, false, b"once").await?;
    let got = sub.next_publish().await?;
    assert_eq!(
        got.qos as u8, 2,
        "QoS must be the max of the matching subscriptions"
    );
    let mut ids = got
        .properties
        .as_ref()
        .map(|p| p.subscription_identifiers.clone())
        .unwrap_or_default();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2], "both Subscription Identifiers: {got:?}");
    sub.no_publish().await?;

    // A publish matching only `ov/#` carries only its identifier
    // (MQTT-3.3.4-3).
    publ.publish("ov/b/c", 1, false, b"deep").await?;
    let got = sub.next_publish().await?;
    let ids = got
        .properties
        .as_ref()
        .map(|p| p.subscription_identifiers.clone())
        .unwrap_or_default();
    assert_eq!(ids, vec![2], "{got:?}");
    broker.shutdown().await
}

/// 5.0 No Local: a client's own publications are not forwarded to its
/// No Local subscription (MQTT-3.8.3-3), other clients' are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_no_local_mqtt_3_8_3_3() -> Result<()> {
    let broker = Broker::start().await?;
    let mut me = V5::connect(v5_opts(&broker, "v5-nolocal-me")).await?;
    let mut other = V5::connect(v5_opts(&broker, "v5-nolocal-other")).await?;
    let mut filter = p5::Filter::new("nl/t", qos5(1));
    filter.nolocal = true;
    me.subscribe_with(filter, None).await?;

    me.publish("nl/t", 1, false, b"mine").await?;
    me.no_publish().await?;
    other.publish("nl/t", 1, false, b"theirs").await?;
    let got = me.next_publish().await?;
    assert_eq!(got.payload, Bytes::from_static(b"theirs"));
    broker.shutdown().await
}

/// Topic matching: `+` matches exactly one level (v311 MQTT-4.7.1-3, v5
/// MQTT-4.7.1-2), `#` matches the parent and any number of levels (v311
/// MQTT-4.7.1-2, v5 MQTT-4.7.1-1), and levels are compared without
/// normalisation (MQTT-4.7.3-4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_wildcard_matching_mqtt_4_7_1_2_and_3() -> Result<()> {
    let broker = Broker::start().await?;
    let mut plus = V4::connect(v4_opts(&broker, "v4-wild-plus")).await?;
    let mut hash = V4::connect(v4_opts(&broker, "v4-wild-hash")).await?;
    let mut publ = V4::connect(v4_opts(&broker, "v4-wild-pub")).await?;
    plus.subscribe("sport/+/player", 1).await?;
    hash.subscribe("sport/#", 1).await?;

    let topics = [
        "sport",                       // # only (parent level)
        "sport/tennis/player",         // both
        "sport/tennis/player/ranking", // # only
        "sport//player",               // both: an empty level is a level
        "Sport/tennis/player",         // neither: case sensitive
        "sports/x/player",             // neither
    ];
    for t in topics {
        publ.publish(t, 1, false, t.as_bytes()).await?;
    }
    let mut got_plus = Vec::new();
    for _ in 0..2 {
        got_plus.push(plus.next_publish().await?.topic);
    }
    plus.no_publish().await?;
    let mut got_hash = Vec::new();
    for _ in 0..4 {
        got_hash.push(hash.next_publish().await?.topic);
    }
    hash.no_publish().await?;
    assert_eq!(got_plus, ["sport/tennis/player", "sport//player"]);
    assert_eq!(
        got_hash,
        [
            "sport",
            "sport/tennis/player",
            "sport/tennis/player/ranking",
            "sport//player"
        ]
    );
    broker.shutdown().await
}

/// Topics starting with `$` are not matched by filters starting with a
/// wildcard (MQTT-4.7.2-1, both versions), but are by an explicit filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_dollar_topics_not_matched_by_wildcards_mqtt_4_7_2_1() -> Result<()> {
    let broker = Broker::start().await?;
    let mut wild = V5::connect(v5_opts(&broker, "v5-dollar-wild")).await?;
    let mut exact = V5::connect(v5_opts(&broker, "v5-dollar-exact")).await?;
    let mut publ = V5::connect(v5_opts(&broker, "v5-dollar-pub")).await?;
    wild.subscribe("#", 1).await?;
    wild.subscribe("+/x", 1).await?;
    exact.subscribe("$e2e/#", 1).await?;

    publ.publish("$e2e/x", 1, false, b"dollar").await?;
    let got = exact.next_publish().await?;
    assert_eq!(topic5(&got), "$e2e/x");
    wild.no_publish().await?;

    // Control: the wildcard subscriber does see ordinary topics.
    publ.publish("plain/x", 1, false, b"plain").await?;
    let got = wild.next_publish().await?;
    assert_eq!(topic5(&got), "plain/x");
    broker.shutdown().await
}
