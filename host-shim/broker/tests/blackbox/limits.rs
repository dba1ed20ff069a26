//! Configured limits and capabilities as seen on the wire: Server Keep
//! Alive, Maximum QoS, retain availability, queue size, the client's Maximum
//! Packet Size, topic aliases, invalid filters, unsubscribe and shutdown.

use anyhow::{bail, Result};
use bytes::Bytes;
use e2e::*;
use mqtt_broker::{BrokerConfig, RetainConfig};

/// 5.0: a keep alive above `max_keep_alive` is answered with Server Keep
/// Alive (MQTT-3.2.2-21), and that value is what the broker enforces
/// (MQTT-3.1.2-22 with 1.5 × 1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_server_keep_alive_mqtt_3_2_2_21() -> Result<()> {
    let broker = Broker::with(BrokerConfig {
        max_keep_alive: 1,
        ..config()
    })
    .await?;
    let connect = RawConnect {
        keep_alive: 30,
        ..RawConnect::v5("ska")
    };
    let (mut raw, connack) = Raw::handshake(&broker, &connect).await?;
    let p5::Packet::ConnAck(connack) = connack.v5()? else {
        bail!("expected CONNACK");
    };
    let server_keep_alive = connack.properties.and_then(|p| p.server_keep_alive);
    assert_eq!(server_keep_alive, Some(1), "Server Keep Alive in CONNACK");
    // Silent: closed after 1.5 s, not the 45 s the client asked for.
    raw.closed().await?;
    broker.shutdown().await
}

/// `maximum_qos = 1`: 5.0 CONNACK says Maximum QoS 1 (MQTT-3.2.2-9);
/// subscriptions are granted at most QoS 1 (v311 MQTT-3.8.4-5, v5
/// MQTT-3.8.4-7); a 5.0 QoS 2 PUBLISH is DISCONNECT 0x9B (MQTT-3.2.2-11); a
/// Will QoS 2 is refused with CONNACK 0x9B (MQTT-3.2.2-12).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maximum_qos_1_mqtt_3_2_2_9_to_12() -> Result<()> {
    let broker = Broker::with(BrokerConfig {
        maximum_qos: 1,
        ..config()
    })
    .await?;
    let mut c5 = V5::connect(v5_opts(&broker, "mq1-v5")).await?;
    assert_eq!(c5.connack_props()?.max_qos, Some(1), "CONNACK Maximum QoS");
    assert_eq!(c5.subscribe("mq1/t", 2).await?, 1, "5.0 grant capped");
    let mut c4 = V4::connect(v4_opts(&broker, "mq1-v4")).await?;
    assert_eq!(c4.subscribe("mq1/t", 2).await?, 1, "3.1.1 grant capped");

    let mut raw = Raw::connected(&broker, &RawConnect::v5("mq1-raw")).await?;
    raw.send(&raw_publish(5, "mq1/t", 2, 1, false, false, b"x"))
        .await?;
    let frames = raw.closed().await?;
    assert!(
        matches!(frames.as_slice(), [f] if f.kind() == kind::DISCONNECT && f.disconnect_reason() == 0x9B),
        "expected DISCONNECT 0x9B: {frames:?}"
    );

    let will = RawConnect {
        will: Some(RawWill::new("mq1/will", b"w", 2, false)),
        ..RawConnect::v5("mq1-will")
    };
    let (mut raw, connack) = Raw::handshake(&broker, &will).await?;
    assert_eq!(connack.connack_code(), 0x9B, "{connack:?}");
    raw.closed().await?;
    c5.no_publish().await?;
    broker.shutdown().await
}

/// `retain.enabled = false`: 5.0 CONNACK Retain Available 0; a retained
/// PUBLISH is DISCONNECT 0x9A (MQTT-3.2.2-14) or, in 3.1.1, a closed
/// connection; a Will with Will Retain 1 is refused with 0x9A
/// (MQTT-3.2.2-13).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_unavailable_mqtt_3_2_2_13_and_14() -> Result<()> {
    let broker = Broker::with(BrokerConfig {
        retain: RetainConfig {
            enabled: false,
            ..RetainConfig::default()
        },
        ..config()
    })
    .await?;
    let c5 = V5::connect(v5_opts(&broker, "noret-v5")).await?;
    assert_eq!(c5.connack_props()?.retain_available, Some(0));

    let mut raw = Raw::connected(&broker, &RawConnect::v5("noret-raw5")).await?;
    raw.send(&raw_publish(5, "noret/t", 1, 1, true, false, b"x"))
        .await?;
    let frames = raw.closed().await?;
    assert!(
        matches!(frames.as_slice(), [f] if f.kind() == kind::DISCONNECT && f.disconnect_reason() == 0x9A),
        "expected DISCONNECT 0x9A: {frames:?}"
    );

    let mut raw = Raw::connected(&broker, &RawConnect::v4("noret-raw4")).await?;
    raw.send(&raw_publish(4, "noret/t", 1, 1, true, false, b"x"))
        .await?;
    let frames = raw.closed().await?;
    assert!(
        frames.is_empty(),
        "3.1.1: closed without a PUBACK: {frames:?}"
    );

    let will = RawConnect {
        will: Some(RawWill::new("noret/will", b"w", 0, true)),
        ..RawConnect::v5("noret-will")
    };
    let (mut raw, connack) = Raw::handshake(&broker, &will).await?;
    assert_eq!(connack.connack_code(), 0x9A, "{connack:?}");
    raw.closed().await?;
    broker.shutdown().await
}

/// `max_queued_messages = 5`: an offline session queues five messages; the
/// ones over the limit are dropped, the queued ones delivered in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_queued_messages_bounds_offline_queue() -> Result<()> {
    let broker = Broker::with(BrokerConfig {
        max_queued_messages: 5,
        ..config()
    })
    .await?;
    let mut opts = v4_opts(&broker, "queue-sub");
    opts.set_clean_session(false);
    let mut sub = V4::connect(opts.clone()).await?;
    sub.subscribe("queue/t", 1).await?;
    sub.disconnect().await?;

    let mut publ = V4::connect(v4_opts(&broker, "queue-pub")).await?;
    for i in 0..10u8 {
        publ.publish("queue/t", 1, false, &[b'0' + i]).await?;
    }
    let mut sub = V4::connect(opts).await?;
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(sub.next_publish().await?.payload);
    }
    sub.no_publish().await?;
    let expected: Vec<Bytes> = (0..5u8).map(|i| Bytes::from(vec![b'0' + i])).collect();
    assert_eq!(got, expected, "the first five, in order; the rest dropped");
    broker.shutdown().await
}

/// `max_queued_bytes = 1000`: an offline session queues messages up to
/// 1000 bytes of topic and payload, whatever their number; the rest are
/// dropped, the queued ones delivered in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_queued_bytes_bounds_offline_queue() -> Result<()> {
    let broker = Broker::with(BrokerConfig {
        max_queued_bytes: 1000,
        ..config()
    })
    .await?;
    let mut opts = v4_opts(&broker, "qbytes-sub");
    opts.set_clean_session(false);
    let mut sub = V4::connect(opts.clone()).await?;
    sub.subscribe("qbytes/t", 1).await?;
    sub.disconnect().await?;

    // 8 + 292 = 300 bytes each: three fit in 1000, the fourth does not.
    let mut publ = V4::connect(v4_opts(&broker, "qbytes-pub")).await?;
    for i in 0..6u8 {
        publ.publish("qbytes/t", 1, false, &[b'0' + i; 292]).await?;
    }
    let mut sub = V4::connect(opts).await?;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(sub.next_publish().await?.payload[0]);
    }
    sub.no_publish().await?;
    assert_eq!(got, b"012", "the first three, in order; the rest dropped");
    broker.shutdown().await
}

/// 5.0: a message larger than the client's Maximum Packet Size is not sent
/// to it (MQTT-3.1.2-24) but discarded as if delivered (MQTT-3.1.2-25): the
/// connection stays up and later messages arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_client_maximum_packet_size_mqtt_3_1_2_24_and_25() -> Result<()> {
    let broker = Broker::start().await?;
    let mut opts = v5_opts(&broker, "cmps-sub");
    opts.set_max_packet_size(Some(200));
    let mut sub = V5::connect(opts).await?;
    sub.subscribe("cmps/t", 1).await?;
    let mut publ = V5::connect(v5_opts(&broker, "cmps-pub")).await?;
    publ.publish("cmps/t", 1, false, b"small").await?;
    publ.publish("cmps/t", 1, false, &[b'x'; 500]).await?;
    publ.publish("cmps/t", 1, false, b"after").await?;
    assert_eq!(
        sub.next_publish().await?.payload,
        Bytes::from_static(b"small")
    );
    assert_eq!(
        sub.next_publish().await?.payload,
        Bytes::from_static(b"after"),
        "the oversized message is skipped, not the connection"
    );
    broker.shutdown().await
}

/// 5.0 topic aliases from the client: an alias set with a topic is used by a
/// later PUBLISH with an empty topic (MQTT-3.3.2-12); an alias above the
/// Topic Alias Maximum is DISCONNECT 0x94 Topic Alias invalid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_topic_alias_mqtt_3_3_2_12() -> Result<()> {
    let broker = Broker::start().await?;
    let mut sub = V5::connect(v5_opts(&broker, "alias-sub")).await?;
    sub.subscribe("alias/#", 1).await?;
    let mut raw = Raw::connected(&broker, &RawConnect::v5("alias-pub")).await?;
    let alias = |n: u16| {
        let [hi, lo] = n.to_be_bytes();
        [0x23, hi, lo]
    };
    raw.send(&raw_publish_v5_props("alias/t", 1, 1, &alias(1), b"first"))
        .await?;
    assert_eq!(raw.recv().await?.kind(), kind::PUBACK);
    raw.send(&raw_publish_v5_props("", 1, 2, &alias(1), b"second"))
        .await?;
    assert_eq!(raw.recv().await?.kind(), kind::PUBACK);
    for payload in ["first", "second"] {
        let got = sub.next_publish().await?;
        assert_eq!(topic5(&got), "alias/t", "{got:?}");
        assert_eq!(got.payload, Bytes::from(payload));
    }

    let max = broker_topic_alias_maximum();
    raw.send(&raw_publish_v5_props(
        "alias/u",
        1,
        3,
        &alias(max + 1),
        b"x",
    ))
    .await?;
    let frames = raw.closed().await?;
    assert!(
        matches!(frames.as_slice(), [f] if f.kind() == kind::DISCONNECT && f.disconnect_reason() == 0x94),
        "expected DISCONNECT 0x94: {frames:?}"
    );
    sub.no_publish().await?;
    broker.shutdown().await
}

fn broker_topic_alias_maximum() -> u16 {
    config().topic_alias_maximum
}

/// A syntactically invalid Topic Filter (`#` not last, v311 MQTT-4.7.1-2, v5
/// MQTT-4.7.1-1) is never granted: SUBACK failure (0x80 / 0x8F) or a closed
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_topic_filter_not_granted_mqtt_4_7_1() -> Result<()> {
    let broker = Broker::start().await?;
    for connect in [RawConnect::v4("badfilter-4"), RawConnect::v5("badfilter-5")] {
        let level = connect.level;
        for filter in ["a/#/b", "a/b+", "$share/g"] {
            if level == 4 && filter.starts_with("$share") {
                continue;
            }
            let mut raw = Raw::connected(&broker, &connect).await?;
            raw.send(&raw_subscribe(level, 1, filter, 0)).await?;
            match raw.recv_for(WAIT).await {
                Ok(Some(f)) if f.kind() == kind::SUBACK => {
                    let code = *f.body.last().expect("a reason code");
                    assert!(code >= 0x80, "level {level}, {filter}: granted {code:#04x}");
                }
                Ok(Some(f)) if f.kind() == kind::DISCONNECT => {
                    assert!(f.disconnect_reason() >= 0x80, "{f:?}");
                }
                Ok(other) => panic!("level {level}, {filter}: unexpected {other:?}"),
                // Closed without a SUBACK: also a refusal.
                Err(_) => {}
            }
        }
    }
    broker.shutdown().await
}

/// UNSUBSCRIBE stops delivery (v311 MQTT-3.10.4-2, v5 MQTT-3.10.4-2); the
/// 5.0 UNSUBACK says 0x00 for a removed subscription and 0x11 for one that
/// did not exist (MQTT-3.11.3-2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery_mqtt_3_10_4_2() -> Result<()> {
    let broker = Broker::start().await?;
    let mut sub = V5::connect(v5_opts(&broker, "unsub-sub")).await?;
    sub.subscribe("unsub/t", 1).await?;
    let mut publ = V5::connect(v5_opts(&broker, "unsub-pub")).await?;
    publ.publish("unsub/t", 1, false, b"before").await?;
    assert_eq!(
        sub.next_publish().await?.payload,
        Bytes::from_static(b"before")
    );

    for (filter, expected) in [
        ("unsub/t", p5::UnsubAckReason::Success),
        ("unsub/none", p5::UnsubAckReason::NoSubscriptionExisted),
    ] {
        sub.client.unsubscribe(filter).await?;
        let ack = sub
            .inbox
            .next_where("UNSUBACK", |p| matches!(p, p5::Packet::UnsubAck(_)))
            .await?;
        let p5::Packet::UnsubAck(ack) = ack else {
            unreachable!()
        };
        assert_eq!(ack.reasons, [expected], "{filter}");
    }
    publ.publish("unsub/t", 1, false, b"after").await?;
    sub.no_publish().await?;
    broker.shutdown().await
}

/// Shutdown completes, disconnecting 5.0 clients with 0x8B Server shutting
/// down and closing 3.1.1 connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_disconnects_clients_0x8b() -> Result<()> {
    let broker = Broker::start().await?;
    let mut c5 = V5::connect(v5_opts(&broker, "bye-v5")).await?;
    let mut c4 = V4::connect(v4_opts(&broker, "bye-v4")).await?;
    broker.shutdown().await?;
    let why = c5.inbox.ended().await?;
    assert_eq!(
        server_disconnect_reason(why),
        Some(p5::DisconnectReasonCode::ServerShuttingDown),
        "{why:?}"
    );
    c4.inbox.ended().await?;
    Ok(())
}

/// 3.1.1 cannot be told a Server Keep Alive, so a keep alive above
/// `max_keep_alive` is refused with return code 0x02 (Identifier rejected),
/// as Mosquitto does; 0 (no keep alive) is above any limit, so idle
/// clients cannot hold every connection for ever; at most the limit is
/// accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_keep_alive_above_the_maximum_is_refused() -> Result<()> {
    let broker = Broker::with(BrokerConfig {
        max_keep_alive: 30,
        ..config()
    })
    .await?;
    for (keep_alive, want) in [(31, 2), (u16::MAX, 2), (0, 2), (30, 0), (1, 0)] {
        let connect = RawConnect {
            keep_alive,
            ..RawConnect::v4("ka-max")
        };
        let (mut raw, connack) = Raw::handshake(&broker, &connect).await?;
        assert_eq!(connack.connack_code(), want, "keep alive {keep_alive}");
        if want != 0 {
            raw.closed().await?;
        }
    }
    broker.shutdown().await
}

/// Keep alive 0 asks for no keep alive at all: a 5.0 client is told the
/// broker's `max_keep_alive` as Server Keep Alive (MQTT-3.2.2-21), and with
/// `max_keep_alive: 0` both versions may have none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_0_gets_the_maximum_unless_there_is_none() -> Result<()> {
    let limited = Broker::with(BrokerConfig {
        max_keep_alive: 20,
        ..config()
    })
    .await?;
    let none = RawConnect {
        keep_alive: 0,
        ..RawConnect::v5("ka-zero")
    };
    let (_raw, connack) = Raw::handshake(&limited, &none).await?;
    let p5::Packet::ConnAck(connack) = connack.v5()? else {
        bail!("expected CONNACK");
    };
    let server_keep_alive = connack.properties.and_then(|p| p.server_keep_alive);
    assert_eq!(server_keep_alive, Some(20), "Server Keep Alive in CONNACK");
    limited.shutdown().await?;

    let unlimited = Broker::with(BrokerConfig {
        max_keep_alive: 0,
        ..config()
    })
    .await?;
    let v4 = RawConnect {
        keep_alive: 0,
        ..RawConnect::v4("ka-zero-4")
    };
    let (_raw4, connack) = Raw::handshake(&unlimited, &v4).await?;
    assert_eq!(
        connack.connack_code(),
        0,
        "3.1.1 keep alive 0 without a limit"
    );
    let (_raw5, connack) = Raw::handshake(&unlimited, &none).await?;
    let p5::Packet::ConnAck(connack) = connack.v5()? else {
        bail!("expected CONNACK");
    };
    assert_eq!(connack.code, p5::ConnectReturnCode::Success);
    assert_eq!(
        connack.properties.and_then(|p| p.server_keep_alive),
        None,
        "no Server Keep Alive without a limit"
    );
    unlimited.shutdown().await
}

/// A packet whose first bytes came but whose rest does not is not waited
/// for forever: after `packet_timeout` the connection is closed, while a
/// connection whose packets complete stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_packet_closes_after_packet_timeout() -> Result<()> {
    let broker = Broker::with(BrokerConfig {
        packet_timeout: 1,
        ..config()
    })
    .await?;
    let idle = RawConnect {
        keep_alive: 60,
        ..RawConnect::v4("pt-stuck")
    };
    let mut stuck = Raw::connected(&broker, &idle).await?;
    let mut steady = Raw::connected(
        &broker,
        &RawConnect {
            client_id: "pt-steady".to_owned(),
            ..idle.clone()
        },
    )
    .await?;
    // A QoS 0 PUBLISH announcing 100 bytes, of which 20 are sent.
    let mut partial = vec![0x30, 100, 0, 4];
    partial.extend_from_slice(b"pt/x");
    partial.extend_from_slice(&[b'p'; 14]);
    stuck.send(&partial).await?;
    let frames = stuck
        .closed_within(std::time::Duration::from_secs(10))
        .await?;
    assert!(frames.is_empty(), "{frames:?}");

    // Complete packets, more than the timeout apart, keep a connection.
    for _ in 0..2 {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        steady.send(&[0xC0, 0x00]).await?;
        assert_eq!(steady.recv().await?.kind(), kind::PINGRESP);
    }
    broker.shutdown().await
}

/// A client that sends PINGREQs and never reads the PINGRESPs cannot make
/// the broker queue replies without bound: over `max_outbound_bytes` the
/// broker stops reading it, and after `slow_client_timeout` closes it, while
/// other clients are served all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed() -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let broker = Broker::with(BrokerConfig {
        max_outbound_bytes: 64 * 1024,
        slow_client_timeout: 1,
        ..config()
    })
    .await?;
    let idle = RawConnect {
        keep_alive: 60,
        ..RawConnect::v4("never-reads")
    };
    let mut stream = tokio::net::TcpStream::connect(broker.addr()).await?;
    stream.write_all(&idle.encode()).await?;
    // PINGREQs, 1 MiB at a time, until the broker closes the connection;
    // the kernel's buffers take a few MiB before the broker's queue grows.
    let flood = async {
        let pings = [0xC0u8, 0x00].repeat(512 * 1024);
        let mut sent = 0usize;
        loop {
            if stream.write_all(&pings).await.is_err() {
                return sent;
            }
            sent += pings.len();
        }
    };
    let sent = tokio::time::timeout(std::time::Duration::from_secs(60), flood)
        .await
        .map_err(|_| anyhow::anyhow!("the broker never closed a client that does not read"))?;
    println!("closed after {} MiB of PINGREQs", sent / (1024 * 1024));

    // The broker still serves everyone else.
    let mut other = Raw::connected(&broker, &RawConnect::v4("reads")).await?;
    other.send(&[0xC0, 0x00]).await?;
    assert_eq!(other.recv().await?.kind(), kind::PINGRESP);
    broker.shutdown().await
}

/// `max_subscriptions = 3`: a fourth subscription gets 0x97 Quota exceeded
/// (5.0) or 0x80 (3.1.1); replacing an existing one is allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_subscriptions_caps_each_session() -> Result<()> {
    let broker = Broker::with(BrokerConfig {
        max_subscriptions: 3,
        ..config()
    })
    .await?;
    for (level, refused) in [(5u8, 0x97u8), (4, 0x80)] {
        let connect = if level == 5 {
            RawConnect::v5("subcap")
        } else {
            RawConnect::v4("subcap")
        };
        let mut raw = Raw::connected(&broker, &connect).await?;
        let filters = [
            ("s/1", 1),
            ("s/2", 1),
            ("s/3", 1),
            ("s/1", 1),
            ("s/4", refused),
        ];
        for (pkid, (filter, want)) in (1u16..).zip(filters) {
            raw.send(&raw_subscribe(level, pkid, filter, 1)).await?;
            let suback = raw.recv().await?;
            assert_eq!(suback.kind(), kind::SUBACK);
            assert_eq!(suback.body.last(), Some(&want), "level {level}, {filter}");
        }
    }
    broker.shutdown().await
}

/// `max_topic_levels = 3`: a deeper filter gets SUBACK 0x8F (5.0) or 0x80
/// (3.1.1); a PUBLISH to a deeper topic closes the connection (5.0:
/// DISCONNECT 0x90 Topic Name invalid).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_topic_levels_caps_names_and_filters() -> Result<()> {
    let broker = Broker::with(BrokerConfig {
        max_topic_levels: 3,
        ..config()
    })
    .await?;
    for (level, refused) in [(5u8, 0x8Fu8), (4, 0x80)] {
        let connect = if level == 5 {
            RawConnect::v5("levels")
        } else {
            RawConnect::v4("levels")
        };
        let mut raw = Raw::connected(&broker, &connect).await?;
        for (pkid, (filter, want)) in
            (1u16..).zip([("a/b/c", 1), ("a/+/#", 1), ("a/b/c/d", refused)])
        {
            raw.send(&raw_subscribe(level, pkid, filter, 1)).await?;
            let suback = raw.recv().await?;
            assert_eq!(suback.body.last(), Some(&want), "level {level}, {filter}");
        }
        raw.send(&raw_publish(level, "a/b/c/d", 1, 9, false, false, b"x"))
            .await?;
        let frames = raw.closed().await?;
        if level == 5 {
            assert!(
                matches!(frames.as_slice(), [f] if f.kind() == kind::DISCONNECT && f.disconnect_reason() == 0x90),
                "{frames:?}"
            );
        } else {
            assert!(frames.is_empty(), "{frames:?}");
        }
    }
    broker.shutdown().await
}

/// A subscriber that reads, if more slowly than messages come, stays
/// connected over `max_outbound_bytes`: it loses QoS 0 messages instead,
/// and is closed only if it reads nothing for `slow_client_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_not_closed() -> Result<()> {
    use std::time::{Duration, Instant};
    let broker = Broker::with(BrokerConfig {
        max_outbound_bytes: 64 * 1024,
        slow_client_timeout: 1,
        ..config()
    })
    .await?;
    let idle = |id: &str| RawConnect {
        keep_alive: 60,
        ..RawConnect::v4(id)
    };
    let mut sub = Raw::connected(&broker, &idle("slow-reader")).await?;
    sub.send(&raw_subscribe(4, 1, "slow/#", 0)).await?;
    assert_eq!(sub.recv().await?.kind(), kind::SUBACK);

    let mut publisher = Raw::connected(&broker, &idle("fast-writer")).await?;
    let message = raw_publish(4, "slow/t", 0, 0, false, false, &[b'z'; 8192]);
    let flood = tokio::spawn(async move {
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            for _ in 0..64 {
                publisher.send(&message).await?;
            }
            tokio::task::yield_now().await;
        }
        anyhow::Ok(publisher)
    });
    // About 400 KB/s, far below what is published: over the budget all
    // along, for four times the grace.
    let until = Instant::now() + Duration::from_secs(4);
    let mut received = 0;
    while Instant::now() < until {
        let frame = sub.recv().await?;
        assert_eq!(frame.kind(), kind::PUBLISH);
        received += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _publisher = flood.await??;
    // Still connected: a PINGREQ is answered once the queue is read out.
    sub.send(&[0xC0, 0x00]).await?;
    while sub.recv().await?.kind() != kind::PINGRESP {}
    assert!(received > 10, "{received}");
    broker.shutdown().await
}

/// `memory_limit`: once the messages queued across the broker hold more
/// than the limit, a 5.0 PUBLISH gets PUBACK 0x97 Quota exceeded instead of
/// growing the process; when the queue is read out, PUBLISHes are taken
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_refuses_publishes_with_quota_exceeded() -> Result<()> {
    let broker = Broker::with(BrokerConfig {
        memory_limit: 2000,
        ..config()
    })
    .await?;
    let parked = RawConnect {
        clean: false,
        session_expiry: Some(300),
        ..RawConnect::v5("mem-sub")
    };
    let mut sub = Raw::connected(&broker, &parked).await?;
    sub.send(&raw_subscribe(5, 1, "mem/#", 1)).await?;
    assert_eq!(sub.recv().await?.kind(), kind::SUBACK);
    sub.send(&raw_disconnect_v5(0)).await?;
    sub.closed().await?;

    let mut publisher = Raw::connected(&broker, &RawConnect::v5("mem-pub")).await?;
    let mut codes = Vec::new();
    for pkid in 1..=10u16 {
        publisher
            .send(&raw_publish(
                5,
                "mem/t",
                1,
                pkid,
                false,
                false,
                &[b'm'; 500],
            ))
            .await?;
        let ack = publisher.recv().await?;
        assert_eq!(ack.kind(), kind::PUBACK);
        codes.push(ack.body.get(2).copied().unwrap_or(0));
    }
    // 2000 bytes hold four 505-byte messages; the fifth goes over.
    assert_eq!(&codes[..4], [0, 0, 0, 0], "{codes:?}");
    assert!(codes[4..].iter().all(|&c| c == 0x97), "{codes:?}");

    // The subscriber takes its queue: memory is freed, PUBLISHes are taken.
    let mut sub = Raw::connected(&broker, &parked).await?;
    for _ in 0..4 {
        let p = sub.recv().await?;
        assert_eq!(p.kind(), kind::PUBLISH);
        sub.send(&raw_ack(kind::PUBACK, p.pkid())).await?;
    }
    publisher
        .send(&raw_publish(5, "mem/t", 1, 11, false, false, b"again"))
        .await?;
    let ack = publisher.recv().await?;
    assert_eq!(ack.body.get(2).copied().unwrap_or(0), 0, "{ack:?}");
    broker.shutdown().await
}
