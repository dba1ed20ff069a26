//! Protocol violations and malformed packets close the connection.

use anyhow::Result;
use e2e::*;
use mqtt_broker::BrokerConfig;

/// No CONNACK with return code 0 may be among `frames`.
fn assert_not_accepted(frames: &[Frame], what: &str) {
    for f in frames {
        assert!(
            f.kind() != kind::CONNACK || f.connack_code() != 0,
            "{what}: the broker accepted the connection: {f:?}"
        );
    }
}

/// 5.0: if the broker sends a DISCONNECT before closing, its reason code must
/// be an error (>= 0x80, MQTT-4.13.2-1) and, when given, the expected one.
fn assert_error_disconnect(frames: &[Frame], allowed: &[u8], what: &str) {
    for f in frames.iter().filter(|f| f.kind() == kind::DISCONNECT) {
        let reason = f.disconnect_reason();
        assert!(
            reason >= 0x80,
            "{what}: DISCONNECT reason {reason:#04x} is not an error"
        );
        assert!(
            allowed.is_empty() || allowed.contains(&reason),
            "{what}: DISCONNECT reason {reason:#04x}, expected one of {allowed:02x?}"
        );
    }
}

/// Bytes that are not an MQTT CONNECT as the first packet: closed without
/// accepting (v311 MQTT-3.1.0-1, MQTT-4.8.0-1; v5 MQTT-3.1.0-1,
/// MQTT-4.13.1-1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_or_non_connect_first_packet_closes_mqtt_3_1_0_1() -> Result<()> {
    let broker = Broker::start().await?;
    let inputs: [(&str, &[u8]); 3] = [
        ("HTTP request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("PINGREQ before CONNECT", &[0xC0, 0x00]),
        ("random bytes", &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x13]),
    ];
    for (what, bytes) in inputs {
        let mut raw = Raw::connect(&broker).await?;
        raw.send(bytes).await?;
        let frames = raw.closed().await?;
        assert_not_accepted(&frames, what);
    }
    broker.shutdown().await
}

/// A second CONNECT on a connection is a protocol violation: closed (v311
/// MQTT-3.1.0-2; v5 MQTT-3.1.0-2, DISCONNECT 0x82 Protocol Error allowed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connect_closes_mqtt_3_1_0_2() -> Result<()> {
    let broker = Broker::start().await?;
    for connect in [RawConnect::v4("twice-v4"), RawConnect::v5("twice-v5")] {
        let mut raw = Raw::connected(&broker, &connect).await?;
        raw.send(&connect.encode()).await?;
        let frames = raw.closed().await?;
        assert!(
            frames.iter().all(|f| f.kind() == kind::DISCONNECT),
            "level {}: nothing but a DISCONNECT may answer a second CONNECT: {frames:?}",
            connect.level
        );
        assert_error_disconnect(&frames, &[0x82], "second CONNECT");
    }
    broker.shutdown().await
}

/// A PUBLISH whose Topic Name contains a wildcard is closed (v311
/// MQTT-3.3.2-2 with MQTT-4.8.0-1; v5 MQTT-3.3.2-2, MQTT-4.13.1-1) and not
/// forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_with_wildcard_topic_closes_mqtt_3_3_2_2() -> Result<()> {
    let broker = Broker::start().await?;
    let mut watcher = V4::connect(v4_opts(&broker, "wild-watch")).await?;
    watcher.subscribe("wild/#", 1).await?;
    for (level, topic) in [(4u8, "wild/+"), (4, "wild/#"), (5, "wild/+"), (5, "wild/#")] {
        let connect = if level == 5 {
            RawConnect::v5("wild-pub")
        } else {
            RawConnect::v4("wild-pub")
        };
        let mut raw = Raw::connected(&broker, &connect).await?;
        raw.send(&raw_publish(level, topic, 1, 1, false, false, b"x"))
            .await?;
        let frames = raw.closed().await?;
        assert!(
            frames.iter().all(|f| f.kind() == kind::DISCONNECT),
            "level {level}, {topic}: no PUBACK for an invalid topic: {frames:?}"
        );
        // 0x90 Topic Name invalid, or the generic 0x81/0x82.
        assert_error_disconnect(&frames, &[0x81, 0x82, 0x90], topic);
    }
    watcher.no_publish().await?;
    broker.shutdown().await
}

/// A PUBLISH with both QoS bits set is malformed: closed (v311 and v5
/// MQTT-3.3.1-4; 5.0 reason 0x81 if a DISCONNECT is sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_qos_3_closes_mqtt_3_3_1_4() -> Result<()> {
    let broker = Broker::start().await?;
    for connect in [RawConnect::v4("qos3-v4"), RawConnect::v5("qos3-v5")] {
        let mut raw = Raw::connected(&broker, &connect).await?;
        let mut publish = raw_publish(connect.level, "q3/t", 2, 1, false, false, b"x");
        publish[0] |= 0x06;
        raw.send(&publish).await?;
        let frames = raw.closed().await?;
        assert!(
            frames.iter().all(|f| f.kind() == kind::DISCONNECT),
            "{frames:?}"
        );
        assert_error_disconnect(&frames, &[0x81, 0x82], "QoS 3");
    }
    broker.shutdown().await
}

/// SUBSCRIBE with fixed-header flags other than 0010 is malformed: closed
/// (v311 and v5 MQTT-3.8.1-1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_reserved_flags_closes_mqtt_3_8_1_1() -> Result<()> {
    let broker = Broker::start().await?;
    for connect in [RawConnect::v4("subflags-v4"), RawConnect::v5("subflags-v5")] {
        let mut raw = Raw::connected(&broker, &connect).await?;
        let mut subscribe = raw_subscribe(connect.level, 1, "sf/t", 0);
        subscribe[0] = 0x80;
        raw.send(&subscribe).await?;
        let frames = raw.closed().await?;
        assert!(
            frames.iter().all(|f| f.kind() == kind::DISCONNECT),
            "no SUBACK for a malformed SUBSCRIBE: {frames:?}"
        );
        assert_error_disconnect(&frames, &[0x81], "SUBSCRIBE flags");
    }
    broker.shutdown().await
}

/// CONNECT with the reserved flag set: closed without a successful CONNACK
/// (v311 MQTT-3.1.2-3, MQTT-3.1.4-1; v5 MQTT-3.1.2-3, a CONNACK 0x81 is
/// allowed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_reserved_flag_closes_mqtt_3_1_2_3() -> Result<()> {
    let broker = Broker::start().await?;
    for mut connect in [RawConnect::v4("reserved-v4"), RawConnect::v5("reserved-v5")] {
        connect.extra_flags = 0x01;
        let mut raw = Raw::connect(&broker).await?;
        raw.send(&connect.encode()).await?;
        let frames = raw.closed().await?;
        assert_not_accepted(&frames, "reserved CONNECT flag");
        if connect.level == 4 {
            assert!(
                frames.is_empty(),
                "3.1.1: close without CONNACK: {frames:?}"
            );
        }
    }
    broker.shutdown().await
}

/// An unsupported Protocol Level gets CONNACK 0x01 (3.1.1 form, v311
/// MQTT-3.1.2-2) or 0x84 (5.0 form, v5 MQTT-3.1.2-2) and the connection
/// is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_protocol_level_mqtt_3_1_2_2() -> Result<()> {
    let broker = Broker::start().await?;
    let connect = RawConnect {
        level: 6,
        ..RawConnect::v4("level-6")
    };
    let mut raw = Raw::connect(&broker).await?;
    raw.send(&connect.encode()).await?;
    let frames = raw.closed().await?;
    assert!(
        matches!(frames.as_slice(), [f] if f.kind() == kind::CONNACK && matches!(f.connack_code(), 0x01 | 0x84)),
        "expected exactly one CONNACK 0x01 or 0x84: {frames:?}"
    );
    broker.shutdown().await
}

/// A packet larger than `max_packet_size` closes the connection (5.0:
/// DISCONNECT 0x95, v5 MQTT-3.2.2-15) and is not forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_packet_closes_mqtt_3_2_2_15() -> Result<()> {
    let broker = Broker::with(BrokerConfig {
        max_packet_size: 1024,
        ..config()
    })
    .await?;
    let mut watcher = V4::connect(v4_opts(&broker, "big-watch")).await?;
    watcher.subscribe("big/#", 1).await?;
    for connect in [RawConnect::v4("big-v4"), RawConnect::v5("big-v5")] {
        let mut raw = Raw::connected(&broker, &connect).await?;
        raw.send(&raw_publish(
            connect.level,
            "big/t",
            1,
            1,
            false,
            false,
            &[7; 2000],
        ))
        .await?;
        let frames = raw.closed().await?;
        assert!(
            frames.iter().all(|f| f.kind() == kind::DISCONNECT),
            "{frames:?}"
        );
        assert_error_disconnect(&frames, &[0x95], "oversized PUBLISH");
    }
    watcher.no_publish().await?;
    // Just under the limit is fine.
    let mut ok = V4::connect(v4_opts(&broker, "big-ok")).await?;
    ok.publish("big/t", 1, false, &[7; 900]).await?;
    assert_eq!(watcher.next_publish().await?.payload.len(), 900);
    broker.shutdown().await
}

/// Invalid Topic Names close the connection and are not forwarded: empty
/// (v311 MQTT-4.7.3-1; v5 MQTT-4.7.3-1, without a Topic Alias), containing
/// U+0000 (MQTT-4.7.3-2), ill-formed UTF-8 and an encoded surrogate (v311
/// MQTT-1.5.3-1, v5 MQTT-1.5.4-1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_topic_names_close_mqtt_4_7_3_1_and_2_and_1_5_4_1() -> Result<()> {
    let broker = Broker::start().await?;
    let mut watcher = V4::connect(v4_opts(&broker, "badtopic-watch")).await?;
    watcher.subscribe("#", 1).await?;
    let topics: [(&str, &[u8]); 4] = [
        ("empty", b""),
        ("NUL", b"a\0b"),
        ("ill-formed UTF-8", &[b'a', 0xC3, 0x28]),
        ("surrogate", &[b'a', 0xED, 0xA0, 0x80]),
    ];
    for level in [4u8, 5] {
        for (what, topic) in topics {
            let connect = if level == 5 {
                RawConnect::v5("badtopic")
            } else {
                RawConnect::v4("badtopic")
            };
            let mut raw = Raw::connected(&broker, &connect).await?;
            // Built by hand: the topic bytes are deliberately not a &str.
            let mut body = (topic.len() as u16).to_be_bytes().to_vec();
            body.extend_from_slice(topic);
            body.extend_from_slice(&1u16.to_be_bytes());
            if level == 5 {
                body.push(0);
            }
            body.extend_from_slice(b"payload");
            let mut packet = vec![0x32, body.len() as u8];
            packet.extend(body);
            raw.send(&packet).await?;
            let frames = raw.closed().await?;
            let what = format!("level {level}, {what} topic");
            assert!(
                frames.iter().all(|f| f.kind() == kind::DISCONNECT),
                "{what}: no PUBACK expected: {frames:?}"
            );
            assert_error_disconnect(&frames, &[0x81, 0x82, 0x90], &what);
        }
    }
    watcher.no_publish().await?;
    broker.shutdown().await
}

/// A Remaining Length longer than four bytes is malformed: closed (v5
/// MQTT-1.5.5-1 and section 2.1.4; v311 section 2.2.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_remaining_length_closes() -> Result<()> {
    let broker = Broker::start().await?;
    for connect in [RawConnect::v4("varint-4"), RawConnect::v5("varint-5")] {
        let mut raw = Raw::connected(&broker, &connect).await?;
        raw.send(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]).await?;
        let frames = raw.closed().await?;
        assert!(
            frames.iter().all(|f| f.kind() == kind::DISCONNECT),
            "{frames:?}"
        );
        assert_error_disconnect(&frames, &[0x81, 0x95], "5-byte Remaining Length");
    }
    broker.shutdown().await
}

/// Reserved bits in the SUBSCRIBE options byte are malformed: closed (v311
/// MQTT-3-8.3-4, v5 MQTT-3.8.3-5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_reserved_option_bits_close_mqtt_3_8_3_5() -> Result<()> {
    let broker = Broker::start().await?;
    for (connect, options) in [
        (RawConnect::v4("subopts-4"), 0x41u8),
        (RawConnect::v5("subopts-5"), 0xC1),
    ] {
        let mut raw = Raw::connected(&broker, &connect).await?;
        raw.send(&raw_subscribe(connect.level, 1, "so/t", options))
            .await?;
        let frames = raw.closed().await?;
        assert!(
            frames.iter().all(|f| f.kind() == kind::DISCONNECT),
            "level {}: no SUBACK expected: {frames:?}",
            connect.level
        );
        assert_error_disconnect(&frames, &[0x81], "reserved subscription option bits");
    }
    broker.shutdown().await
}

/// 5.0: No Local on a Shared Subscription is a Protocol Error (MQTT-3.8.3-4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_no_local_on_shared_subscription_mqtt_3_8_3_4() -> Result<()> {
    let broker = Broker::start().await?;
    let mut raw = Raw::connected(&broker, &RawConnect::v5("share-nolocal")).await?;
    raw.send(&raw_subscribe(5, 1, "$share/g/nl/t", 0x05))
        .await?;
    let frames = raw.closed().await?;
    assert!(
        frames.iter().all(|f| f.kind() == kind::DISCONNECT),
        "{frames:?}"
    );
    assert_error_disconnect(&frames, &[0x82], "No Local on a shared subscription");
    broker.shutdown().await
}

/// One SUBSCRIBE with several filters is one SUBACK with a code per filter,
/// in order (v311 MQTT-3.8.4-4, MQTT-3.9.3-1; v5 MQTT-3.8.4-5,
/// MQTT-3.9.3-1); an invalid filter fails alone (0x80 / 0x8F).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_filter_subscribe_one_suback_in_order_mqtt_3_9_3_1() -> Result<()> {
    let broker = Broker::start().await?;
    for connect in [RawConnect::v4("multi-4"), RawConnect::v5("multi-5")] {
        let level = connect.level;
        let mut raw = Raw::connected(&broker, &connect).await?;
        let mut body = 0x1234u16.to_be_bytes().to_vec();
        if level == 5 {
            body.push(0);
        }
        for (filter, qos) in [
            ("m/two", 2u8),
            ("m/zero", 0),
            ("m/bad/#/x", 1),
            ("m/one", 1),
        ] {
            body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
            body.extend_from_slice(filter.as_bytes());
            body.push(qos);
        }
        let mut packet = vec![0x82, body.len() as u8];
        packet.extend(body);
        raw.send(&packet).await?;
        let suback = raw.recv().await?;
        assert_eq!((suback.kind(), suback.pkid()), (kind::SUBACK, 0x1234));
        let codes = &suback.body[suback.body.len() - 4..];
        let failure = if level == 5 { 0x8F } else { 0x80 };
        assert!(
            codes == [2, 0, failure, 1] || (level == 5 && codes == [2, 0, 0x80, 1]),
            "level {level}: SUBACK codes {codes:02x?}"
        );
    }
    broker.shutdown().await
}

/// A PUBREL for a Packet Identifier the broker does not know still gets a
/// PUBCOMP (v5 MQTT-4.3.3-11; v311 section 4.3.3), in 5.0 with 0x92 Packet
/// Identifier not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubrel_unknown_packet_id_gets_pubcomp_mqtt_4_3_3_11() -> Result<()> {
    let broker = Broker::start().await?;
    for connect in [RawConnect::v4("pubrel-4"), RawConnect::v5("pubrel-5")] {
        let mut raw = Raw::connected(&broker, &connect).await?;
        raw.send(&raw_ack(kind::PUBREL, 9)).await?;
        let f = raw.recv().await?;
        assert_eq!((f.kind(), f.pkid()), (kind::PUBCOMP, 9), "{f:?}");
        if connect.level == 5 {
            assert_eq!(f.body.get(2).copied(), Some(0x92), "reason code: {f:?}");
        }
    }
    broker.shutdown().await
}
