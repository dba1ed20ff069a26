//! Persistent sessions: redelivery after reconnect, offline queueing,
//! exactly-once QoS 2 across connections, session expiry and clean start.

use anyhow::{ensure, Result};
use bytes::Bytes;
use e2e::*;
use std::time::Duration;

/// 3.1.1: a persistent session (Clean Session 0) is resumed with Session
/// Present 1 (v311 MQTT-3.1.2-4, MQTT-3.2.2-2); an unacknowledged QoS 1
/// message is re-sent with DUP=1 and its original Packet Identifier (v311
/// MQTT-4.4.0-1, MQTT-3.3.1-1); a message published while the client was away
/// is queued and delivered after it, in order (v311 MQTT-4.6.0-6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_persistent_session_redelivery_mqtt_4_4_0_1() -> Result<()> {
    let broker = Broker::start().await?;
    let mut opts = v4_opts(&broker, "v4-redeliver");
    opts.set_clean_session(false).set_manual_acks(true);
    let mut sub = V4::connect(opts.clone()).await?;
    assert!(
        !sub.session_present(),
        "no session existed yet (v311 MQTT-3.2.2-3)"
    );
    sub.subscribe("rd/t", 1).await?;

    let mut publ = V4::connect(v4_opts(&broker, "v4-redeliver-pub")).await?;
    publ.publish("rd/t", 1, false, b"m1").await?;
    let first = sub.next_publish().await?;
    assert_eq!(first.payload, Bytes::from_static(b"m1"));
    assert!(!first.dup);
    // Not acknowledged; the connection drops without DISCONNECT.
    sub.kill().await?;

    publ.publish("rd/t", 1, false, b"m2").await?;

    opts.set_manual_acks(false);
    let mut sub = V4::connect(opts).await?;
    assert!(sub.session_present(), "session must be resumed");
    let again = sub.next_publish().await?;
    assert_eq!(
        again.payload,
        Bytes::from_static(b"m1"),
        "unacked message first"
    );
    assert!(again.dup, "a re-delivery must have DUP=1: {again:?}");
    assert_eq!(again.pkid, first.pkid, "original Packet Identifier");
    let queued = sub.next_publish().await?;
    assert_eq!(
        queued.payload,
        Bytes::from_static(b"m2"),
        "offline message queued"
    );
    assert_eq!(queued.qos as u8, 1);
    sub.no_publish().await?;
    broker.shutdown().await
}

/// 5.0: the same with Clean Start 0 and a Session Expiry Interval > 0 (v5
/// MQTT-3.1.2-5, MQTT-3.1.2-23, MQTT-3.2.2-3, MQTT-4.4.0-1, MQTT-3.3.1-1,
/// MQTT-4.6.0-6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_persistent_session_redelivery_mqtt_4_4_0_1() -> Result<()> {
    let broker = Broker::start().await?;
    let mut opts = v5_opts(&broker, "v5-redeliver");
    opts.set_clean_start(false)
        .set_session_expiry_interval(Some(60))
        .set_manual_acks(true);
    let mut sub = V5::connect(opts.clone()).await?;
    assert!(!sub.session_present(), "no session existed yet");
    sub.subscribe("rd/t", 1).await?;

    let mut publ = V5::connect(v5_opts(&broker, "v5-redeliver-pub")).await?;
    publ.publish("rd/t", 1, false, b"m1").await?;
    let first = sub.next_publish().await?;
    assert_eq!(first.payload, Bytes::from_static(b"m1"));
    assert!(!first.dup);
    sub.kill().await?;

    publ.publish("rd/t", 1, false, b"m2").await?;

    opts.set_manual_acks(false);
    let mut sub = V5::connect(opts).await?;
    assert!(sub.session_present(), "session must be resumed");
    let again = sub.next_publish().await?;
    assert_eq!(
        again.payload,
        Bytes::from_static(b"m1"),
        "unacked message first"
    );
    assert!(again.dup, "a re-delivery must have DUP=1: {again:?}");
    assert_eq!(again.pkid, first.pkid, "original Packet Identifier");
    let queued = sub.next_publish().await?;
    assert_eq!(
        queued.payload,
        Bytes::from_static(b"m2"),
        "offline message queued"
    );
    sub.no_publish().await?;
    broker.shutdown().await
}

/// QoS 2 towards a subscriber that drops the connection at each step of the
/// flow, driven with raw packets so every step is visible:
/// 1. PUBLISH received, no PUBREC, drop: the PUBLISH is re-sent with DUP=1
///    and the same Packet Identifier (MQTT-4.4.0-1, MQTT-3.3.1-1);
/// 2. PUBREC sent, PUBREL received, no PUBCOMP, drop: the PUBREL is re-sent
///    (MQTT-4.4.0-1) and the PUBLISH is not (v5 MQTT-4.3.3-6);
/// 3. after PUBCOMP nothing more arrives: delivered exactly once.
async fn qos2_exactly_once_across_reconnects(level: u8) -> Result<()> {
    let v5 = level == 5;
    let broker = Broker::start().await?;
    let id = format!("q2-raw-{level}");
    let mut connect = if v5 {
        RawConnect::v5(&id)
    } else {
        RawConnect::v4(&id)
    };
    connect.clean = false;
    connect.session_expiry = v5.then_some(60);

    let mut raw = Raw::connected(&broker, &connect).await?;
    raw.send(&raw_subscribe(level, 1, "q2/t", 2)).await?;
    let suback = raw.recv().await?;
    ensure!(
        suback.kind() == kind::SUBACK,
        "expected SUBACK, got {suback:?}"
    );

    let mut publ = V4::connect(v4_opts(&broker, &format!("q2-pub-{level}"))).await?;
    publ.publish("q2/t", 2, false, b"exactly-once").await?;

    // Step 1.
    let first = raw.recv().await?.publish(v5)?;
    assert_eq!((first.qos, first.dup), (2, false), "{first:?}");
    assert_eq!(first.payload, Bytes::from_static(b"exactly-once"));
    drop(raw);

    let (mut raw, connack) = Raw::handshake(&broker, &connect).await?;
    assert_eq!(connack.connack_code(), 0);
    assert!(connack.session_present(), "session must be resumed");
    let again = raw.recv().await?.publish(v5)?;
    assert!(again.dup, "re-sent PUBLISH must have DUP=1: {again:?}");
    assert_eq!(again.pkid, first.pkid, "original Packet Identifier");
    assert_eq!(again.payload, first.payload);

    // Step 2.
    raw.send(&raw_ack(kind::PUBREC, again.pkid)).await?;
    let pubrel = raw.recv().await?;
    assert_eq!((pubrel.kind(), pubrel.pkid()), (kind::PUBREL, first.pkid));
    drop(raw);

    let (mut raw, connack) = Raw::handshake(&broker, &connect).await?;
    assert!(connack.session_present(), "session must be resumed");
    let resent = raw.recv().await?;
    assert_eq!(
        (resent.kind(), resent.pkid()),
        (kind::PUBREL, first.pkid),
        "the PUBREL, not the PUBLISH, must be re-sent: {resent:?}"
    );

    // Step 3.
    raw.send(&raw_ack(kind::PUBCOMP, first.pkid)).await?;
    let extra = raw.recv_for(QUIET).await?;
    assert_eq!(extra, None, "nothing may follow the completed flow");
    broker.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_qos2_exactly_once_across_reconnects_mqtt_4_4_0_1() -> Result<()> {
    qos2_exactly_once_across_reconnects(4).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_qos2_exactly_once_across_reconnects_mqtt_4_4_0_1_and_4_3_3_6() -> Result<()> {
    qos2_exactly_once_across_reconnects(5).await
}

/// A publisher re-sending a QoS 2 PUBLISH (DUP=1, same Packet Identifier)
/// before PUBREL gets another PUBREC, and the message reaches subscribers
/// once (v311 MQTT-4.3.3-2, v5 MQTT-4.3.3-10).
async fn qos2_duplicate_from_publisher_delivered_once(level: u8) -> Result<()> {
    let broker = Broker::start().await?;
    let mut sub = V4::connect(v4_opts(&broker, &format!("dupin-sub-{level}"))).await?;
    sub.subscribe("dupin/t", 2).await?;

    let connect = if level == 5 {
        RawConnect::v5("dupin-pub")
    } else {
        RawConnect::v4("dupin-pub")
    };
    let mut raw = Raw::connected(&broker, &connect).await?;
    raw.send(&raw_publish(level, "dupin/t", 2, 7, false, false, b"one"))
        .await?;
    let pubrec = raw.recv().await?;
    assert_eq!((pubrec.kind(), pubrec.pkid()), (kind::PUBREC, 7));
    raw.send(&raw_publish(level, "dupin/t", 2, 7, false, true, b"one"))
        .await?;
    let pubrec = raw.recv().await?;
    assert_eq!(
        (pubrec.kind(), pubrec.pkid()),
        (kind::PUBREC, 7),
        "PUBREC again"
    );
    raw.send(&raw_ack(kind::PUBREL, 7)).await?;
    let pubcomp = raw.recv().await?;
    assert_eq!((pubcomp.kind(), pubcomp.pkid()), (kind::PUBCOMP, 7));

    let got = sub.next_publish().await?;
    assert_eq!(got.payload, Bytes::from_static(b"one"));
    sub.no_publish().await?;
    broker.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_qos2_duplicate_publish_delivered_once_mqtt_4_3_3_2() -> Result<()> {
    qos2_duplicate_from_publisher_delivered_once(4).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_qos2_duplicate_publish_delivered_once_mqtt_4_3_3_10() -> Result<()> {
    qos2_duplicate_from_publisher_delivered_once(5).await
}

/// 5.0: a session with Session Expiry Interval 1 is gone 2 s after the
/// disconnect (MQTT-4.1.0-2): Session Present 0 (MQTT-3.2.2-3) and its
/// subscription no longer delivers. A session with a longer interval
/// survives the same wait (MQTT-3.1.2-23).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_session_expiry_interval_mqtt_3_1_2_23_and_4_1_0_2() -> Result<()> {
    let broker = Broker::start().await?;
    let mut short = v5_opts(&broker, "v5-expiry-short");
    short.set_session_expiry_interval(Some(1));
    let mut long = v5_opts(&broker, "v5-expiry-long");
    long.set_session_expiry_interval(Some(60));
    for opts in [&short, &long] {
        let mut c = V5::connect(opts.clone()).await?;
        c.subscribe("sx/t", 1).await?;
        c.disconnect().await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    short.set_clean_start(false);
    long.set_clean_start(false);
    let mut s = V5::connect(short).await?;
    assert!(!s.session_present(), "expired session must not be resumed");
    let mut l = V5::connect(long).await?;
    assert!(l.session_present(), "unexpired session must be resumed");

    let mut publ = V5::connect(v5_opts(&broker, "v5-expiry-pub")).await?;
    publ.publish("sx/t", 1, false, b"after").await?;
    assert_eq!(
        l.next_publish().await?.payload,
        Bytes::from_static(b"after")
    );
    s.no_publish().await?;
    broker.shutdown().await
}

/// 5.0: with no Session Expiry Interval (0) the session ends when the
/// connection closes, gracefully or not (MQTT-3.1.2-23 a contrario,
/// MQTT-4.1.0-2): Clean Start 0 then finds no session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_zero_session_expiry_ends_at_disconnect_mqtt_4_1_0_2() -> Result<()> {
    let broker = Broker::start().await?;
    let mut opts = v5_opts(&broker, "v5-expiry-zero");
    opts.set_clean_start(false);

    let mut c = V5::connect(opts.clone()).await?;
    c.subscribe("sz/t", 1).await?;
    c.disconnect().await?;
    let c = V5::connect(opts.clone()).await?;
    assert!(!c.session_present(), "after DISCONNECT: no session");

    c.kill().await?;
    // The broker may notice the closed socket a moment later; a session
    // still attached to a live connection would legitimately be present,
    // so give it that moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = V5::connect(opts).await?;
    assert!(
        !c.session_present(),
        "after a dropped connection: no session"
    );
    broker.shutdown().await
}

/// 3.1.1: Clean Session 1 discards any previous session and its session is
/// not kept (v311 MQTT-3.1.2-6, Session Present 0: MQTT-3.2.2-1); a Clean
/// Session 0 session is kept (MQTT-3.1.2-4, MQTT-3.2.2-2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_clean_session_discards_state_mqtt_3_1_2_6() -> Result<()> {
    let broker = Broker::start().await?;
    let mut persistent = v4_opts(&broker, "v4-clean");
    persistent.set_clean_session(false);
    let mut clean = v4_opts(&broker, "v4-clean");
    clean.set_clean_session(true);

    let mut c = V4::connect(persistent.clone()).await?;
    c.subscribe("cs/t", 1).await?;
    c.disconnect().await?;
    let c = V4::connect(persistent.clone()).await?;
    assert!(c.session_present(), "Clean Session 0 session must be kept");
    c.disconnect().await?;

    let c = V4::connect(clean).await?;
    assert!(
        !c.session_present(),
        "Clean Session 1 always gets Session Present 0"
    );
    c.disconnect().await?;

    let mut c = V4::connect(persistent).await?;
    assert!(
        !c.session_present(),
        "the clean session must have discarded the old one"
    );
    let mut publ = V4::connect(v4_opts(&broker, "v4-clean-pub")).await?;
    publ.publish("cs/t", 1, false, b"x").await?;
    c.no_publish().await?;
    broker.shutdown().await
}

/// 5.0: Clean Start 1 discards an existing session (MQTT-3.1.2-4, Session
/// Present 0: MQTT-3.2.2-2), including its subscriptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_clean_start_discards_session_mqtt_3_1_2_4() -> Result<()> {
    let broker = Broker::start().await?;
    let mut opts = v5_opts(&broker, "v5-clean");
    opts.set_session_expiry_interval(Some(60));
    let mut c = V5::connect(opts.clone()).await?;
    c.subscribe("cs5/t", 1).await?;
    c.disconnect().await?;

    opts.set_clean_start(true);
    let mut c = V5::connect(opts).await?;
    assert!(!c.session_present());
    let mut publ = V5::connect(v5_opts(&broker, "v5-clean-pub")).await?;
    publ.publish("cs5/t", 1, false, b"x").await?;
    c.no_publish().await?;
    broker.shutdown().await
}

/// A 3.1.1 persistent session for `id` (Clean Session 0) is present when
/// the client connects again.
async fn v4_session_present(broker: &Broker, id: &str) -> Result<bool> {
    let mut opts = v4_opts(broker, id);
    opts.set_clean_session(false);
    let client = V4::connect(opts).await?;
    let present = client.session_present();
    client.disconnect().await?;
    Ok(present)
}

/// `persistent_client_expiration = 1`: a 3.1.1 persistent session is kept
/// for a second after its client disconnects, then ends (as Mosquitto's
/// option); before, 3.1.1 sessions were never freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_persistent_sessions_expire() -> Result<()> {
    let broker = Broker::with(mqtt_broker::BrokerConfig {
        persistent_client_expiration: 1,
        ..config()
    })
    .await?;
    assert!(!v4_session_present(&broker, "pce").await?, "new session");
    assert!(v4_session_present(&broker, "pce").await?, "kept at once");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(
        !v4_session_present(&broker, "pce").await?,
        "expired after a second"
    );
    broker.shutdown().await
}

/// `max_parked_sessions = 2`: with a third session parked, the one parked
/// longest ends; the others stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_sessions_are_capped() -> Result<()> {
    let broker = Broker::with(mqtt_broker::BrokerConfig {
        max_parked_sessions: 2,
        ..config()
    })
    .await?;
    for id in ["park-1", "park-2", "park-3"] {
        assert!(!v4_session_present(&broker, id).await?, "{id}: new");
    }
    assert!(v4_session_present(&broker, "park-3").await?, "newest kept");
    assert!(v4_session_present(&broker, "park-2").await?, "kept");
    assert!(
        !v4_session_present(&broker, "park-1").await?,
        "oldest ended"
    );
    broker.shutdown().await
}
