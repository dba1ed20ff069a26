//! Will messages. The clients that leave wills are raw TCP clients, so that
//! "ungraceful" really is a socket closed without DISCONNECT.

use anyhow::Result;
use bytes::Bytes;
use e2e::*;
use std::time::Duration;

fn v4_with_will(id: &str, will: RawWill) -> RawConnect {
    RawConnect {
        will: Some(will),
        ..RawConnect::v4(id)
    }
}

fn v5_with_will(id: &str, will: RawWill) -> RawConnect {
    RawConnect {
        will: Some(will),
        ..RawConnect::v5(id)
    }
}

/// 3.1.1: the Will Message is published when the connection closes without
/// DISCONNECT (v311 MQTT-3.1.2-8), as a non-retained message when Will
/// Retain is 0 (MQTT-3.1.2-16), at the Will QoS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_will_on_abrupt_close_mqtt_3_1_2_8_and_16() -> Result<()> {
    let broker = Broker::start().await?;
    let mut watcher = V4::connect(v4_opts(&broker, "v4-will-watch")).await?;
    watcher.subscribe("will/#", 2).await?;

    let connect = v4_with_will("v4-will", RawWill::new("will/v4", b"gone", 1, false));
    let raw = Raw::connected(&broker, &connect).await?;
    watcher.no_publish().await?;
    drop(raw);

    let will = watcher.next_publish().await?;
    assert_eq!(will.topic, "will/v4");
    assert_eq!(will.payload, Bytes::from_static(b"gone"));
    assert_eq!(will.qos as u8, 1, "Will QoS");
    assert!(!will.retain);
    watcher.no_publish().await?;

    // Will Retain 0: nothing was stored.
    let mut later = V4::connect(v4_opts(&broker, "v4-will-later")).await?;
    later.subscribe("will/#", 2).await?;
    later.no_publish().await?;
    broker.shutdown().await
}

/// 3.1.1: Will Retain 1 publishes the will as a retained message (v311
/// MQTT-3.1.2-17): a later subscriber gets it with RETAIN=1. Will QoS 2 is
/// delivered at min(Will QoS, granted QoS) (MQTT-3.8.4-6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_will_retain_and_qos_mqtt_3_1_2_17() -> Result<()> {
    let broker = Broker::start().await?;
    let mut w1 = V4::connect(v4_opts(&broker, "v4-willr-q1")).await?;
    w1.subscribe("willr/t", 1).await?;
    let mut w2 = V4::connect(v4_opts(&broker, "v4-willr-q2")).await?;
    w2.subscribe("willr/t", 2).await?;

    let connect = v4_with_will("v4-willr", RawWill::new("willr/t", b"bye", 2, true));
    drop(Raw::connected(&broker, &connect).await?);

    assert_eq!(w1.next_publish().await?.qos as u8, 1, "granted QoS 1");
    assert_eq!(w2.next_publish().await?.qos as u8, 2, "Will QoS 2");

    let mut later = V4::connect(v4_opts(&broker, "v4-willr-later")).await?;
    later.subscribe("willr/t", 2).await?;
    let got = later.next_publish().await?;
    assert_eq!(got.payload, Bytes::from_static(b"bye"));
    assert!(got.retain, "the will was retained");
    assert_eq!(got.qos as u8, 2);
    broker.shutdown().await
}

/// A DISCONNECT removes the will: nothing is published when the connection
/// then closes (v311 MQTT-3.1.2-10, MQTT-3.14.4-3; v5 MQTT-3.1.2-10 with
/// reason 0x00, MQTT-3.14.4-3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_not_sent_after_normal_disconnect_mqtt_3_1_2_10_and_3_14_4_3() -> Result<()> {
    let broker = Broker::start().await?;
    let mut watcher = V5::connect(v5_opts(&broker, "willnd-watch")).await?;
    watcher.subscribe("willnd/#", 1).await?;

    let mut v4 = Raw::connected(
        &broker,
        &v4_with_will("willnd-v4", RawWill::new("willnd/v4", b"x", 1, false)),
    )
    .await?;
    v4.send(&raw_disconnect_v4()).await?;
    v4.closed().await?;

    let mut v5 = Raw::connected(
        &broker,
        &v5_with_will("willnd-v5", RawWill::new("willnd/v5", b"x", 1, false)),
    )
    .await?;
    v5.send(&raw_disconnect_v5(0x00)).await?;
    v5.closed().await?;

    watcher.no_publish().await?;
    broker.shutdown().await
}

/// 5.0: DISCONNECT with reason 0x04 (Disconnect with Will Message) keeps the
/// will, so it is published (v5 MQTT-3.1.2-10 only removes it on 0x00).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_disconnect_with_will_message_0x04_mqtt_3_1_2_10() -> Result<()> {
    let broker = Broker::start().await?;
    let mut watcher = V5::connect(v5_opts(&broker, "will04-watch")).await?;
    watcher.subscribe("will04/#", 1).await?;

    let mut raw = Raw::connected(
        &broker,
        &v5_with_will("will04", RawWill::new("will04/t", b"asked for", 1, false)),
    )
    .await?;
    raw.send(&raw_disconnect_v5(0x04)).await?;
    raw.closed().await?;

    let got = watcher.next_publish().await?;
    assert_eq!(got.payload, Bytes::from_static(b"asked for"));
    broker.shutdown().await
}

/// 5.0 Will Delay Interval: the will is held for the delay (MQTT-3.1.3-9) and
/// then published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_will_delay_interval_mqtt_3_1_3_9() -> Result<()> {
    let broker = Broker::start().await?;
    let mut watcher = V5::connect(v5_opts(&broker, "willdelay-watch")).await?;
    watcher.subscribe("willdelay/#", 1).await?;

    let mut will = RawWill::new("willdelay/t", b"late", 1, false);
    will.delay = Some(2);
    let connect = RawConnect {
        session_expiry: Some(60),
        ..v5_with_will("willdelay", will)
    };
    drop(Raw::connected(&broker, &connect).await?);

    // Half the delay: nothing yet.
    watcher.no_publish_for(Duration::from_secs(1)).await?;
    let got = watcher.next_publish().await?;
    assert_eq!(got.payload, Bytes::from_static(b"late"));
    broker.shutdown().await
}

/// 5.0: a new connection to the session before the Will Delay Interval has
/// passed cancels the will (MQTT-3.1.3-9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_will_delay_cancelled_by_reconnect_mqtt_3_1_3_9() -> Result<()> {
    let broker = Broker::start().await?;
    let mut watcher = V5::connect(v5_opts(&broker, "willcancel-watch")).await?;
    watcher.subscribe("willcancel/#", 1).await?;

    let mut will = RawWill::new("willcancel/t", b"never", 1, false);
    will.delay = Some(1);
    let connect = RawConnect {
        session_expiry: Some(60),
        ..v5_with_will("willcancel", will)
    };
    drop(Raw::connected(&broker, &connect).await?);

    let mut opts = v5_opts(&broker, "willcancel");
    opts.set_clean_start(false)
        .set_session_expiry_interval(Some(60));
    let back = V5::connect(opts).await?;
    assert!(back.session_present());
    // Well past the 1 s delay.
    watcher.no_publish_for(Duration::from_secs(2)).await?;
    drop(back);
    broker.shutdown().await
}

/// 5.0: the will is published when the Will Delay Interval passes or the
/// session ends, whichever is first (MQTT-3.1.3-9): with Session Expiry 0 the
/// session ends with the connection, so a 30 s delay does not hold it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_will_sent_when_session_ends_before_delay_mqtt_3_1_3_9() -> Result<()> {
    let broker = Broker::start().await?;
    let mut watcher = V5::connect(v5_opts(&broker, "willend-watch")).await?;
    watcher.subscribe("willend/#", 1).await?;

    let mut will = RawWill::new("willend/t", b"session over", 1, false);
    will.delay = Some(30);
    drop(Raw::connected(&broker, &v5_with_will("willend", will)).await?);

    let got = watcher.next_publish().await?;
    assert_eq!(got.payload, Bytes::from_static(b"session over"));
    broker.shutdown().await
}

/// A client that goes silent past 1.5 × its keep alive is disconnected as if
/// the network failed (v311 MQTT-3.1.2-24, v5 MQTT-3.1.2-22), so its will is
/// published (v311 MQTT-3.1.2-8, v5 MQTT-3.1.2-7/8).
async fn will_on_keep_alive_timeout(level: u8) -> Result<()> {
    let broker = Broker::start().await?;
    let mut watcher = V4::connect(v4_opts(&broker, "willka-watch")).await?;
    watcher.subscribe("willka/#", 1).await?;

    let will = RawWill::new("willka/t", b"timed out", 1, false);
    let mut connect = if level == 5 {
        v5_with_will("willka", will)
    } else {
        v4_with_will("willka", will)
    };
    connect.keep_alive = 1;
    let mut raw = Raw::connected(&broker, &connect).await?;
    // Silence: the socket stays open but nothing is sent.
    let frames = raw.closed().await?;
    if level == 5 {
        for f in &frames {
            assert!(
                f.kind() == kind::DISCONNECT && f.disconnect_reason() == 0x8D,
                "only DISCONNECT 0x8D (Keep Alive timeout) may precede the close: {f:?}"
            );
        }
    }
    let got = watcher.next_publish().await?;
    assert_eq!(got.payload, Bytes::from_static(b"timed out"));
    broker.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_will_on_keep_alive_timeout_mqtt_3_1_2_24() -> Result<()> {
    will_on_keep_alive_timeout(4).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_will_on_keep_alive_timeout_mqtt_3_1_2_22() -> Result<()> {
    will_on_keep_alive_timeout(5).await
}

/// 5.0: the Will Properties travel with the will: Content Type, Response
/// Topic, Correlation Data and User Properties in order (MQTT-3.1.3-10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_will_properties_forwarded_mqtt_3_1_3_10() -> Result<()> {
    let broker = Broker::start().await?;
    let mut watcher = V5::connect(v5_opts(&broker, "willprops-watch")).await?;
    watcher.subscribe("willprops/#", 1).await?;

    let user_properties = vec![
        ("z".to_owned(), "1".to_owned()),
        ("a".to_owned(), "2".to_owned()),
        ("z".to_owned(), "3".to_owned()),
    ];
    let props = p5::LastWillProperties {
        delay_interval: None,
        payload_format_indicator: Some(1),
        message_expiry_interval: None,
        content_type: Some("text/plain".to_owned()),
        response_topic: Some("willprops/reply".to_owned()),
        correlation_data: Some(Bytes::from_static(b"cid")),
        user_properties: user_properties.clone(),
    };
    let mut opts = v5_opts(&broker, "willprops");
    opts.set_last_will(p5::LastWill::new(
        "willprops/t",
        "with properties",
        qos5(1),
        false,
        Some(props),
    ));
    let client = V5::connect(opts).await?;
    client.kill().await?;

    let got = watcher.next_publish().await?;
    assert_eq!(got.payload, Bytes::from_static(b"with properties"));
    let p = got.properties.clone().unwrap_or_default();
    assert_eq!(p.content_type.as_deref(), Some("text/plain"), "{got:?}");
    assert_eq!(p.payload_format_indicator, Some(1), "{got:?}");
    assert_eq!(
        p.response_topic.as_deref(),
        Some("willprops/reply"),
        "{got:?}"
    );
    assert_eq!(p.correlation_data.as_deref(), Some(&b"cid"[..]), "{got:?}");
    assert_eq!(p.user_properties, user_properties, "{got:?}");
    broker.shutdown().await
}

/// 3.1.1: a session takeover closes the first connection without a
/// DISCONNECT from its client, so that connection's will is published
/// (v311 MQTT-3.1.4-2 with MQTT-3.1.2-8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_will_published_on_takeover_mqtt_3_1_4_2_and_3_1_2_8() -> Result<()> {
    let broker = Broker::start().await?;
    let mut watcher = V4::connect(v4_opts(&broker, "willtake-watch")).await?;
    watcher.subscribe("willtake/#", 1).await?;

    let first = v4_with_will(
        "willtake",
        RawWill::new("willtake/t", b"replaced", 1, false),
    );
    let mut old = Raw::connected(&broker, &first).await?;
    let _new = Raw::connected(&broker, &RawConnect::v4("willtake")).await?;
    old.closed().await?;
    let got = watcher.next_publish().await?;
    assert_eq!(got.payload, Bytes::from_static(b"replaced"));
    broker.shutdown().await
}

/// 5.0 takeover: the existing client's will "is published as described in
/// section 3.1.2.5" (MQTT-3.1.4-3). With no Will Delay and a new connection
/// that starts clean (the old session ends) it must be published; with a
/// Will Delay and a new connection resuming the session it must not
/// (MQTT-3.1.3-9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_will_on_takeover_mqtt_3_1_4_3_and_3_1_3_9() -> Result<()> {
    let broker = Broker::start().await?;
    let mut watcher = V5::connect(v5_opts(&broker, "willtake5-watch")).await?;
    watcher.subscribe("willtake5/#", 1).await?;

    // Resumed within the delay: no will.
    let mut will = RawWill::new("willtake5/resumed", b"resumed", 1, false);
    will.delay = Some(5);
    let first = RawConnect {
        session_expiry: Some(60),
        ..v5_with_will("willtake5-a", will)
    };
    let mut old = Raw::connected(&broker, &first).await?;
    let resume = RawConnect {
        clean: false,
        session_expiry: Some(60),
        ..RawConnect::v5("willtake5-a")
    };
    let _resumed = Raw::connected(&broker, &resume).await?;
    old.closed().await?;
    watcher.no_publish().await?;

    // Clean start, no delay: the old session ends, the will goes out.
    let first = v5_with_will(
        "willtake5-b",
        RawWill::new("willtake5/clean", b"clean", 1, false),
    );
    let mut old = Raw::connected(&broker, &first).await?;
    let _clean = Raw::connected(&broker, &RawConnect::v5("willtake5-b")).await?;
    old.closed().await?;
    let got = watcher.next_publish().await?;
    assert_eq!(got.payload, Bytes::from_static(b"clean"));
    broker.shutdown().await
}
