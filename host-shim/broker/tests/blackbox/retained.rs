//! Retained messages: store, replace, delete, RETAIN flag on delivery,
//! Retain As Published, Retain Handling, QoS, expiry and topic matching.

use anyhow::Result;
use bytes::Bytes;
use e2e::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static FRESH: AtomicUsize = AtomicUsize::new(0);

fn fresh_id(prefix: &str) -> String {
    format!("{prefix}-{}", FRESH.fetch_add(1, Ordering::Relaxed))
}

/// What a brand-new 3.1.1 subscription to `filter` receives: exactly
/// `expect` messages, then silence.
async fn new_v4_subscription(
    broker: &Broker,
    filter: &str,
    qos: u8,
    expect: usize,
) -> Result<Vec<rumqttc::Publish>> {
    let mut c = V4::connect(v4_opts(broker, &fresh_id("v4-fresh"))).await?;
    c.subscribe(filter, qos).await?;
    let mut got = Vec::new();
    for _ in 0..expect {
        got.push(c.next_publish().await?);
    }
    c.no_publish().await?;
    c.disconnect().await?;
    Ok(got)
}

/// The same for 5.0, with default subscription options.
async fn new_v5_subscription(
    broker: &Broker,
    filter: &str,
    qos: u8,
    expect: usize,
) -> Result<Vec<p5::Publish>> {
    let mut c = V5::connect(v5_opts(broker, &fresh_id("v5-fresh"))).await?;
    c.subscribe(filter, qos).await?;
    let mut got = Vec::new();
    for _ in 0..expect {
        got.push(c.next_publish().await?);
    }
    c.no_publish().await?;
    c.disconnect().await?;
    Ok(got)
}

/// 3.1.1 lifecycle of a retained message:
/// - stored and sent to a new subscription with RETAIN=1 (v311 MQTT-3.3.1-5,
///   MQTT-3.3.1-6, MQTT-3.3.1-8);
/// - replaced by the next retained publish (MQTT-3.3.1-7);
/// - a non-retained publish, even with an empty payload, neither stores nor
///   removes anything (MQTT-3.3.1-12);
/// - a retained publish with an empty payload goes to current subscribers as
///   a normal message (RETAIN=0) and removes the retained message
///   (MQTT-3.3.1-10, MQTT-3.3.1-11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_retained_set_replace_delete_mqtt_3_3_1_5_to_12() -> Result<()> {
    let broker = Broker::start().await?;
    let mut publ = V4::connect(v4_opts(&broker, "v4-ret-pub")).await?;

    publ.publish("ret/a", 1, true, b"one").await?;
    let got = new_v4_subscription(&broker, "ret/a", 1, 1).await?;
    assert_eq!(got[0].payload, Bytes::from_static(b"one"));
    assert!(
        got[0].retain,
        "sent because of a new subscription: RETAIN=1"
    );

    publ.publish("ret/a", 1, true, b"two").await?;
    let got = new_v4_subscription(&broker, "ret/a", 1, 1).await?;
    assert_eq!(got[0].payload, Bytes::from_static(b"two"), "replaced");

    publ.publish("ret/a", 1, false, b"").await?;
    publ.publish("ret/a", 1, false, b"live").await?;
    let got = new_v4_subscription(&broker, "ret/a", 1, 1).await?;
    assert_eq!(
        got[0].payload,
        Bytes::from_static(b"two"),
        "non-retained publishes must not remove or replace the retained message"
    );

    let mut current = V4::connect(v4_opts(&broker, "v4-ret-current")).await?;
    current.subscribe("ret/a", 1).await?;
    assert_eq!(
        current.next_publish().await?.payload,
        Bytes::from_static(b"two")
    );
    publ.publish("ret/a", 1, true, b"").await?;
    let delete = current.next_publish().await?;
    assert!(delete.payload.is_empty());
    assert!(!delete.retain, "forwarded as normal: RETAIN=0 ({delete:?})");
    new_v4_subscription(&broker, "ret/a", 1, 0).await?;
    broker.shutdown().await
}

/// 5.0 lifecycle: store / replace (MQTT-3.3.1-5), empty retained payload
/// removes and is not stored (MQTT-3.3.1-6/7), RETAIN=0 publishes leave the
/// retained message alone (MQTT-3.3.1-8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_retained_set_replace_delete_mqtt_3_3_1_5_to_8() -> Result<()> {
    let broker = Broker::start().await?;
    let mut publ = V5::connect(v5_opts(&broker, "v5-ret-pub")).await?;

    publ.publish("ret/a", 1, true, b"one").await?;
    let got = new_v5_subscription(&broker, "ret/a", 1, 1).await?;
    assert_eq!(got[0].payload, Bytes::from_static(b"one"));
    assert!(
        got[0].retain,
        "sent because of a new subscription: RETAIN=1"
    );

    publ.publish("ret/a", 0, true, b"two").await?;
    publ.sync().await?;
    let got = new_v5_subscription(&broker, "ret/a", 1, 1).await?;
    assert_eq!(got[0].payload, Bytes::from_static(b"two"), "replaced");
    assert_eq!(got[0].qos as u8, 0, "stored with its own QoS");

    publ.publish("ret/a", 1, false, b"").await?;
    let got = new_v5_subscription(&broker, "ret/a", 1, 1).await?;
    assert_eq!(
        got[0].payload,
        Bytes::from_static(b"two"),
        "an empty non-retained publish must not remove the retained message"
    );

    publ.publish("ret/a", 1, true, b"").await?;
    new_v5_subscription(&broker, "ret/a", 1, 0).await?;
    broker.shutdown().await
}

/// 3.1.1: RETAIN=1 when sent because of a new subscription (v311
/// MQTT-3.3.1-8), RETAIN=0 to an established subscription whatever the
/// publisher set (MQTT-3.3.1-9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_retain_flag_on_delivery_mqtt_3_3_1_8_and_9() -> Result<()> {
    let broker = Broker::start().await?;
    let mut existing = V4::connect(v4_opts(&broker, "v4-rflag-sub")).await?;
    existing.subscribe("rflag/t", 2).await?;
    let mut publ = V4::connect(v4_opts(&broker, "v4-rflag-pub")).await?;

    for qos in 0..=2u8 {
        publ.publish("rflag/t", qos, true, b"r").await?;
        let live = existing.next_publish().await?;
        assert!(
            !live.retain,
            "established subscription, QoS {qos}: RETAIN=0"
        );
    }
    let got = new_v4_subscription(&broker, "rflag/t", 2, 1).await?;
    assert!(got[0].retain, "new subscription: RETAIN=1");
    broker.shutdown().await
}

/// 5.0 Retain As Published: 0 clears the RETAIN flag on forwarded messages
/// (MQTT-3.3.1-12), 1 keeps the publisher's flag (MQTT-3.3.1-13). Messages
/// sent because of a new subscription carry RETAIN=1 either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_retain_as_published_mqtt_3_3_1_12_and_13() -> Result<()> {
    let broker = Broker::start().await?;
    let mut plain = V5::connect(v5_opts(&broker, "v5-rap-0")).await?;
    let mut rap = V5::connect(v5_opts(&broker, "v5-rap-1")).await?;
    plain.subscribe("rap/t", 1).await?;
    let mut f = p5::Filter::new("rap/t", qos5(1));
    f.preserve_retain = true;
    rap.subscribe_with(f, None).await?;
    let mut publ = V5::connect(v5_opts(&broker, "v5-rap-pub")).await?;

    publ.publish("rap/t", 1, true, b"retained").await?;
    assert!(!plain.next_publish().await?.retain, "RAP=0: RETAIN cleared");
    assert!(
        rap.next_publish().await?.retain,
        "RAP=1: RETAIN as published"
    );

    publ.publish("rap/t", 1, false, b"plain").await?;
    assert!(!plain.next_publish().await?.retain);
    assert!(
        !rap.next_publish().await?.retain,
        "RAP=1: RETAIN=0 as published"
    );

    let got = new_v5_subscription(&broker, "rap/t", 1, 1).await?;
    assert!(got[0].retain, "new subscription: RETAIN=1");
    broker.shutdown().await
}

/// 5.0 Retain Handling: 0 sends retained messages on every subscribe,
/// including an identical re-subscribe (MQTT-3.3.1-9, MQTT-3.8.4-4); 1 only
/// when the subscription is new (MQTT-3.3.1-10); 2 never (MQTT-3.3.1-11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_retain_handling_mqtt_3_3_1_9_to_11() -> Result<()> {
    let broker = Broker::start().await?;
    let mut publ = V5::connect(v5_opts(&broker, "v5-rh-pub")).await?;
    publ.publish("rh/t", 1, true, b"kept").await?;

    // One client per rule, run concurrently.
    let case = |rule: p5::RetainForwardRule, first: usize, second: usize| {
        let broker = &broker;
        async move {
            let mut c = V5::connect(v5_opts(broker, &fresh_id("v5-rh"))).await?;
            let mut f = p5::Filter::new("rh/t", qos5(1));
            f.retain_forward_rule = rule.clone();
            for (round, expected) in [
                ("first subscribe", first),
                ("identical re-subscribe", second),
            ] {
                c.subscribe_with(f.clone(), None).await?;
                for _ in 0..expected {
                    let got = c.next_publish().await?;
                    assert_eq!(got.payload, Bytes::from_static(b"kept"));
                    assert!(got.retain, "{rule:?}, {round}: RETAIN=1");
                }
                c.no_publish()
                    .await
                    .map_err(|e| e.context(format!("{rule:?}, {round}")))?;
            }
            anyhow::Ok(())
        }
    };
    let (every, new, never) = tokio::join!(
        case(p5::RetainForwardRule::OnEverySubscribe, 1, 1),
        case(p5::RetainForwardRule::OnNewSubscribe, 1, 0),
        case(p5::RetainForwardRule::Never, 0, 0)
    );
    every?;
    new?;
    never?;
    broker.shutdown().await
}

/// A retained message is delivered at min(stored QoS, granted QoS): never
/// upgraded (v311 MQTT-3.8.4-6, v5 MQTT-3.8.4-8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_qos_is_min_of_stored_and_granted_mqtt_3_8_4_6_and_8() -> Result<()> {
    let broker = Broker::start().await?;
    let mut publ = V4::connect(v4_opts(&broker, "rq-pub")).await?;
    for stored in 0..=2u8 {
        publ.publish(&format!("rq/{stored}"), stored, true, b"r")
            .await?;
    }
    publ.sync().await?;
    // Each granted QoS in each protocol version, as six concurrent new
    // subscriptions: sorted (topic, delivered QoS) pairs.
    let check = |granted: u8| {
        let broker = &broker;
        async move {
            let (v4, v5) = tokio::join!(
                new_v4_subscription(broker, "rq/+", granted, 3),
                new_v5_subscription(broker, "rq/+", granted, 3)
            );
            let mut got4: Vec<(String, u8)> =
                v4?.into_iter().map(|p| (p.topic, p.qos as u8)).collect();
            let mut got5: Vec<(String, u8)> =
                v5?.iter().map(|p| (topic5(p), p.qos as u8)).collect();
            got4.sort();
            got5.sort();
            anyhow::Ok((granted, got4, got5))
        }
    };
    let results = tokio::join!(check(0), check(1), check(2));
    for result in [results.0, results.1, results.2] {
        let (granted, got4, got5) = result?;
        let expected: Vec<(String, u8)> = (0..=2u8)
            .map(|stored| (format!("rq/{stored}"), stored.min(granted)))
            .collect();
        assert_eq!(got4, expected, "3.1.1, granted QoS {granted}");
        assert_eq!(got5, expected, "5.0, granted QoS {granted}");
    }
    broker.shutdown().await
}

/// 5.0: a retained message whose Message Expiry Interval has passed is not
/// delivered (MQTT-3.3.2-5); one still alive is delivered with the remaining
/// interval (MQTT-3.3.2-6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_retained_message_expiry_mqtt_3_3_2_5_and_6() -> Result<()> {
    let broker = Broker::start().await?;
    let mut publ = V5::connect(v5_opts(&broker, "v5-rexp-pub")).await?;
    for (topic, expiry) in [("rexp/short", 1u32), ("rexp/long", 60)] {
        let props = p5::PublishProperties {
            message_expiry_interval: Some(expiry),
            ..Default::default()
        };
        publ.publish_with(topic, 1, true, b"r", props).await?;
    }
    // The 1 s message has clearly expired; the 60 s one has visibly aged.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let got = new_v5_subscription(&broker, "rexp/#", 1, 1).await?;
    assert_eq!(topic5(&got[0]), "rexp/long", "the expired one must be gone");
    let left = got[0]
        .properties
        .as_ref()
        .and_then(|p| p.message_expiry_interval)
        .expect("remaining Message Expiry Interval");
    assert!(
        (30..=59).contains(&left),
        "1.5 s have passed since publishing with 60, got {left}"
    );
    broker.shutdown().await
}

/// Retained lookup honours wildcards (`+` one level, `#` any number, v5
/// MQTT-4.7.1-1/2) and never matches `$` topics with a leading wildcard
/// (MQTT-4.7.2-1); an explicit `$` filter does get them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_wildcards_and_dollar_topics_mqtt_4_7_1_and_4_7_2_1() -> Result<()> {
    let broker = Broker::start().await?;
    let mut publ = V5::connect(v5_opts(&broker, "rw-pub")).await?;
    for t in ["rw/a", "rw/b/c", "$rw/x"] {
        publ.publish(t, 1, true, t.as_bytes()).await?;
    }
    let topics = |filter: &'static str, expect: usize| {
        let broker = &broker;
        async move {
            let got = new_v5_subscription(broker, filter, 1, expect).await?;
            let mut t: Vec<String> = got.iter().map(topic5).collect();
            t.sort();
            anyhow::Ok(t)
        }
    };
    // Independent new subscriptions, run concurrently.
    let (plus, hash_rw, hash, plus_x, dollar, v4_hash) = tokio::join!(
        topics("rw/+", 1),
        topics("rw/#", 2),
        topics("#", 2),
        topics("+/x", 0),
        topics("$rw/#", 1),
        new_v4_subscription(&broker, "#", 1, 2)
    );
    assert_eq!(plus?, ["rw/a"]);
    assert_eq!(hash_rw?, ["rw/a", "rw/b/c"]);
    assert_eq!(hash?, ["rw/a", "rw/b/c"], "`#` must not match `$rw/x`");
    assert!(plus_x?.is_empty(), "`+/x` must not match `$rw/x`");
    assert_eq!(dollar?, ["$rw/x"]);
    // Same lookup from a 3.1.1 subscriber.
    let v4_hash = v4_hash?;
    assert!(
        v4_hash.iter().all(|p| !p.topic.starts_with('$')),
        "{v4_hash:?}"
    );
    broker.shutdown().await
}

/// Retained messages are not session state: they outlive the publisher's
/// session (v311 MQTT-3.1.2.7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_retained_outlives_publisher_session_mqtt_3_1_2_7() -> Result<()> {
    let broker = Broker::start().await?;
    let mut publ = V4::connect(v4_opts(&broker, "v4-outlive-pub")).await?;
    publ.publish("outlive/t", 1, true, b"still here").await?;
    publ.disconnect().await?;
    let got = new_v4_subscription(&broker, "outlive/t", 1, 1).await?;
    assert_eq!(got[0].payload, Bytes::from_static(b"still here"));
    broker.shutdown().await
}

/// 5.0: retained messages sent because of a subscription carry that
/// subscription's Subscription Identifier (MQTT-3.3.4-3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_retained_carries_subscription_identifier_mqtt_3_3_4_3() -> Result<()> {
    let broker = Broker::start().await?;
    let mut publ = V5::connect(v5_opts(&broker, "rsid-pub")).await?;
    publ.publish("rsid/t", 1, true, b"r").await?;
    let mut sub = V5::connect(v5_opts(&broker, "rsid-sub")).await?;
    sub.subscribe_with(p5::Filter::new("rsid/#", qos5(1)), Some(7))
        .await?;
    let got = sub.next_publish().await?;
    assert!(got.retain);
    let ids = got
        .properties
        .as_ref()
        .map(|p| p.subscription_identifiers.clone())
        .unwrap_or_default();
    assert_eq!(ids, [7], "{got:?}");
    broker.shutdown().await
}
