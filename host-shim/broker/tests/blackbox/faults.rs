//! Faults on demand (`faults`, [`BrokerHandle::restart`],
//! [`BrokerHandle::drop_connections`]) seen from clients: connections
//! closed without DISCONNECT, acknowledgements lost or late, CONNECTs
//! refused, restarts; and a compliant client that resends what was not
//! acknowledged on its next connection (v311 MQTT-4.4.0-1, v5 MQTT-4.4.0-1)
//! loses nothing and duplicates no QoS 2 message.
//!
//! [`BrokerHandle::restart`]: mqtt_broker::BrokerHandle::restart
//! [`BrokerHandle::drop_connections`]: mqtt_broker::BrokerHandle::drop_connections

use anyhow::{bail, ensure, Result};
use bytes::Bytes;
use e2e::*;
use mqtt_broker::{BrokerConfig, FaultsConfig, RetainStorage};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The most connections [`publish_across_cuts`] opens for one message.
const MAX_CONNECTIONS: usize = 40;

fn with_faults(faults: FaultsConfig) -> BrokerConfig {
    BrokerConfig { faults, ..config() }
}

fn pingreq() -> Vec<u8> {
    raw_packet(0xC0, &[])
}

fn raw_connect(level: u8, id: &str) -> RawConnect {
    if level == 5 {
        RawConnect::v5(id)
    } else {
        RawConnect::v4(id)
    }
}

/// A database path of its own for one test.
fn temp_db(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("e2e-faults-{name}-{}.redb", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// Publishes one message (Packet Identifier 1) as a client with a
/// persistent session does, on as many connections as it takes: each new
/// connection resends what was not acknowledged, the PUBLISH with DUP=1 or,
/// once the PUBREC came, the PUBREL. Returns how many connections it took.
async fn publish_across_cuts(
    broker: &Broker,
    level: u8,
    qos: u8,
    id: &str,
    topic: &str,
) -> Result<usize> {
    let mut connect = raw_connect(level, id);
    connect.clean = false;
    connect.session_expiry = (level == 5).then_some(300);
    let mut sent = false;
    let mut released = false;
    for connection in 1..=MAX_CONNECTIONS {
        let mut raw = Raw::connected(broker, &connect).await?;
        if !released {
            raw.send(&raw_publish(level, topic, qos, 1, false, sent, b"m"))
                .await?;
            sent = true;
            let Some(ack) = raw.recv_or_closed().await? else {
                continue;
            };
            let want = if qos == 1 { kind::PUBACK } else { kind::PUBREC };
            ensure!(ack.kind() == want && ack.pkid() == 1, "{ack:?}");
            if qos == 1 {
                return Ok(connection);
            }
            released = true;
        }
        raw.send(&raw_ack(kind::PUBREL, 1)).await?;
        let Some(comp) = raw.recv_or_closed().await? else {
            continue;
        };
        ensure!(comp.kind() == kind::PUBCOMP && comp.pkid() == 1, "{comp:?}");
        return Ok(connection);
    }
    bail!("{id}: not acknowledged on {MAX_CONNECTIONS} connections")
}

/// `close_after_packets`: the third packet (CONNECT included) is answered,
/// then the connection closes without DISCONNECT and the fourth is not
/// acted upon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_after_packets_closes_each_connection_after_its_last() -> Result<()> {
    let broker = Broker::with(with_faults(FaultsConfig {
        close_after_packets: Some(3),
        ..FaultsConfig::default()
    }))
    .await?;
    for level in [4, 5] {
        let mut raw = Raw::connected(&broker, &raw_connect(level, "after-n")).await?;
        raw.send(&raw_subscribe(level, 1, "after/n", 1)).await?;
        assert_eq!(raw.recv().await?.kind(), kind::SUBACK);
        let mut two = pingreq();
        two.extend(pingreq());
        raw.send(&two).await?;
        let kinds: Vec<u8> = raw.closed().await?.iter().map(Frame::kind).collect();
        assert_eq!(kinds, [kind::PINGRESP], "level {level}");
    }
    broker.shutdown().await
}

/// Messages each publisher sends in the `drop_acks` tests: enough that
/// some acknowledgement is dropped whatever the generator draws for the
/// seed (all 16 sent at 0.5 is a chance in 65,536).
const MESSAGES: usize = 8;

/// `drop_acks`: a PUBACK not sent closes the connection; the publisher
/// resends with DUP=1 on its next connection until a PUBACK comes, and the
/// subscriber has every message (at least once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_puback_is_resent_with_dup_and_the_message_delivered() -> Result<()> {
    let broker = Broker::with(with_faults(FaultsConfig {
        seed: 1,
        drop_acks: 0.5,
        ..FaultsConfig::default()
    }))
    .await?;
    let mut sub = V5::connect(v5_opts(&broker, "lost-puback-sub")).await?;
    sub.subscribe("lost/puback/#", 1).await?;
    let mut connections = 0;
    let mut topics = BTreeSet::new();
    for level in [4, 5] {
        for i in 0..MESSAGES {
            let topic = format!("lost/puback/{level}/{i}");
            let id = format!("lost-puback-{level}-{i}");
            connections += publish_across_cuts(&broker, level, 1, &id, &topic).await?;
            topics.insert(topic);
        }
    }
    assert!(connections > 2 * MESSAGES, "no PUBACK was dropped");
    // At least once: resends may add copies.
    let mut seen = BTreeSet::new();
    while seen != topics {
        let got = sub.next_publish().await?;
        assert_eq!(got.payload, Bytes::from_static(b"m"));
        seen.insert(topic5(&got));
    }
    broker.shutdown().await
}

/// `drop_acks` on QoS 2: lost PUBRECs and PUBCOMPs make the publisher
/// resend the PUBLISH (DUP=1) or the PUBREL on new connections, and the
/// subscriber gets each message exactly once (v5 MQTT-4.3.3-10, v311
/// MQTT-4.3.3-2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_qos2_acknowledgements_still_deliver_exactly_once() -> Result<()> {
    let broker = Broker::with(with_faults(FaultsConfig {
        seed: 2,
        drop_acks: 0.5,
        ..FaultsConfig::default()
    }))
    .await?;
    let mut sub = V4::connect(v4_opts(&broker, "lost-qos2-sub")).await?;
    sub.subscribe("lost/qos2/#", 2).await?;
    let mut connections = 0;
    for level in [4, 5] {
        for i in 0..MESSAGES {
            let topic = format!("lost/qos2/{level}/{i}");
            let id = format!("lost-qos2-{level}-{i}");
            connections += publish_across_cuts(&broker, level, 2, &id, &topic).await?;
            let got = sub.next_publish().await?;
            assert_eq!((got.topic, got.payload), (topic, Bytes::from_static(b"m")));
        }
    }
    assert!(connections > 2 * MESSAGES, "no acknowledgement was dropped");
    sub.no_publish().await?;
    broker.shutdown().await
}

/// The same seed drops the same acknowledgements of the same traffic;
/// another seed does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_gives_the_same_faults() -> Result<()> {
    async fn connections_per_message(seed: u64) -> Result<Vec<usize>> {
        let broker = Broker::with(with_faults(FaultsConfig {
            seed,
            drop_acks: 0.5,
            ..FaultsConfig::default()
        }))
        .await?;
        let mut counts = Vec::new();
        for i in 0..12 {
            let id = format!("seeded-{i}");
            counts.push(publish_across_cuts(&broker, 5, 1, &id, "seeded/t").await?);
        }
        broker.shutdown().await?;
        Ok(counts)
    }
    let first = connections_per_message(3).await?;
    assert!(first.iter().any(|&n| n > 1), "{first:?}");
    assert_eq!(connections_per_message(3).await?, first);
    assert_ne!(connections_per_message(4).await?, first);
    Ok(())
}

/// `refuse_connects`: the next CONNECTs are refused with Server unavailable
/// (5.0 0x88, 3.1.1 return code 3) and closed; then they are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connects_then_accepted() -> Result<()> {
    let broker = Broker::with(with_faults(FaultsConfig {
        refuse_connects: 2,
        ..FaultsConfig::default()
    }))
    .await?;
    for (level, code) in [(5, 0x88), (4, 3)] {
        let (mut raw, connack) = Raw::handshake(&broker, &raw_connect(level, "refused")).await?;
        assert_eq!(connack.connack_code(), code, "level {level}");
        assert!(!connack.session_present());
        assert!(raw.closed().await?.is_empty());
    }
    for level in [5, 4] {
        Raw::connected(&broker, &raw_connect(level, "accepted")).await?;
    }
    broker.shutdown().await
}

/// `delay_acks_ms`: PUBACK, PUBREC and PUBCOMP come at least that late, and
/// what follows them (a PINGRESP) waits behind, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_acknowledgements_arrive_late_and_in_order() -> Result<()> {
    let delay = Duration::from_millis(300);
    let broker = Broker::with(with_faults(FaultsConfig {
        delay_acks_ms: 300,
        ..FaultsConfig::default()
    }))
    .await?;
    let mut sub = V5::connect(v5_opts(&broker, "late-sub")).await?;
    sub.subscribe("late/t", 1).await?;
    let mut raw = Raw::connected(&broker, &RawConnect::v5("late-pub")).await?;
    let mut burst = raw_publish(5, "late/t", 1, 1, false, false, b"a");
    burst.extend(raw_publish(5, "late/t", 2, 2, false, false, b"b"));
    burst.extend(pingreq());
    let sent = Instant::now();
    raw.send(&burst).await?;
    let first = raw.recv().await?;
    assert!(sent.elapsed() >= delay, "PUBACK after {:?}", sent.elapsed());
    let frames = [first, raw.recv().await?, raw.recv().await?];
    let got: Vec<(u8, Option<u16>)> = frames
        .iter()
        .map(|f| (f.kind(), (f.kind() != kind::PINGRESP).then(|| f.pkid())))
        .collect();
    assert_eq!(
        got,
        [
            (kind::PUBACK, Some(1)),
            (kind::PUBREC, Some(2)),
            (kind::PINGRESP, None)
        ]
    );
    let released = Instant::now();
    raw.send(&raw_ack(kind::PUBREL, 2)).await?;
    let comp = raw.recv().await?;
    assert_eq!((comp.kind(), comp.pkid()), (kind::PUBCOMP, 2));
    assert!(
        released.elapsed() >= delay,
        "PUBCOMP after {:?}",
        released.elapsed()
    );
    // Only the acknowledgements wait: both messages were routed.
    for payload in [b"a", b"b"] {
        assert_eq!(
            sub.next_publish().await?.payload,
            Bytes::from_static(payload)
        );
    }
    broker.shutdown().await
}

/// `BrokerHandle::restart`: every connection is dropped without DISCONNECT,
/// the same address accepts again, sessions (in memory) are gone and
/// retained messages on disk are back; the handle's management API keeps
/// working, and no client identifier assigned before is assigned again
/// (a client reconnects with the one it was given).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_drops_connections_and_serves_again_on_the_same_address() -> Result<()> {
    let path = temp_db("restart");
    let mut config = config();
    config.retain.storage = RetainStorage::Disk(path.clone());
    let broker = Broker::with(config).await?;
    let addr = broker.handle().local_addr();

    let mut publisher = Raw::connected(&broker, &RawConnect::v5("restart-pub")).await?;
    publisher
        .send(&raw_publish(
            5,
            "restart/kept",
            1,
            1,
            true,
            false,
            b"on disk",
        ))
        .await?;
    assert_eq!(publisher.recv().await?.kind(), kind::PUBACK);
    let mut sub_connect = RawConnect::v4("restart-sub");
    sub_connect.clean = false;
    let mut sub = Raw::connected(&broker, &sub_connect).await?;
    sub.send(&raw_subscribe(4, 1, "restart/live", 1)).await?;
    assert_eq!(sub.recv().await?.kind(), kind::SUBACK);
    let (_anonymous, connack) = Raw::handshake(&broker, &RawConnect::v5("")).await?;
    let before = assigned_id(&connack)?;

    within("restart", broker.handle().restart()).await??;
    assert!(publisher.closed().await?.is_empty(), "no DISCONNECT");
    assert!(sub.closed().await?.is_empty(), "no DISCONNECT");
    assert_eq!(broker.handle().local_addr(), addr);

    let (mut sub, connack) = Raw::handshake(&broker, &sub_connect).await?;
    assert_eq!(connack.connack_code(), 0);
    assert!(!connack.session_present(), "sessions live in memory");
    sub.send(&raw_subscribe(4, 2, "restart/#", 1)).await?;
    assert_eq!(sub.recv().await?.kind(), kind::SUBACK);
    let kept = sub.recv().await?.publish(false)?;
    assert_eq!(
        (kept.topic.as_str(), kept.payload, kept.retain),
        ("restart/kept", Bytes::from_static(b"on disk"), true)
    );
    assert_eq!(broker.handle().retained_count().await?, 1);
    let (_anonymous, connack) = Raw::handshake(&broker, &RawConnect::v5("")).await?;
    assert_ne!(assigned_id(&connack)?, before);

    broker.shutdown().await?;
    std::fs::remove_file(&path)?;
    Ok(())
}

/// A restart that cannot open the retained store again says so, and the
/// broker is down: nothing listens, the handle's requests fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_cannot_reopen_its_store_reports_it() -> Result<()> {
    let path = temp_db("unopenable");
    let mut config = config();
    config.retain.storage = RetainStorage::Disk(path.clone());
    let broker = Broker::with(config).await?;
    // The file is replaced by a directory under the running broker.
    std::fs::remove_file(&path)?;
    std::fs::create_dir(&path)?;

    let error = within("restart", broker.handle().restart())
        .await?
        .unwrap_err();
    assert!(
        matches!(error, mqtt_broker::RestartError::Start(_)),
        "{error:?}"
    );
    assert!(broker.handle().retained_count().await.is_err());
    assert!(broker.handle().restart().await.is_err());
    assert!(tokio::net::TcpStream::connect(broker.addr()).await.is_err());
    broker.shutdown().await?;
    std::fs::remove_dir(&path)?;
    Ok(())
}

/// The Assigned Client Identifier of a 5.0 CONNACK.
fn assigned_id(connack: &Frame) -> Result<String> {
    match connack.v5()? {
        p5::Packet::ConnAck(ack) => {
            let assigned = ack.properties.as_ref();
            let assigned = assigned.and_then(|p| p.assigned_client_identifier.clone());
            assigned.ok_or_else(|| anyhow::anyhow!("no assigned client identifier: {ack:?}"))
        }
        other => bail!("expected CONNACK, got {other:?}"),
    }
}

/// `BrokerHandle::drop_connections`: every connection is closed without
/// DISCONNECT, so wills are sent; the broker itself goes on (retained
/// messages in memory stay), unlike after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_send_their_wills_and_the_broker_goes_on() -> Result<()> {
    let broker = Broker::start().await?;
    let mut with_will = RawConnect::v5("drop-will");
    with_will.will = Some(RawWill::new("drop/will", b"gone", 1, true));
    let mut a = Raw::connected(&broker, &with_will).await?;
    let mut b = Raw::connected(&broker, &RawConnect::v4("drop-other")).await?;

    assert_eq!(broker.handle().drop_connections().await?, 2);
    assert!(a.closed().await?.is_empty(), "no DISCONNECT");
    assert!(b.closed().await?.is_empty(), "no DISCONNECT");

    let mut late = V5::connect(v5_opts(&broker, "drop-late")).await?;
    late.subscribe("drop/will", 1).await?;
    let will = late.next_publish().await?;
    assert_eq!(
        (will.payload, will.retain),
        (Bytes::from_static(b"gone"), true)
    );
    late.kill().await?;

    // Memory storage: a restart forgets the retained will.
    within("restart", broker.handle().restart()).await??;
    assert_eq!(broker.handle().retained_count().await?, 0);
    assert_eq!(broker.handle().drop_connections().await?, 0);
    broker.shutdown().await
}

/// `close_every_ms` and `restart_every_ms`: every connection is closed
/// without DISCONNECT, again and again, and the same address accepts new
/// ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_closed_every_interval() -> Result<()> {
    for faults in [
        FaultsConfig {
            close_every_ms: Some(300),
            ..FaultsConfig::default()
        },
        FaultsConfig {
            restart_every_ms: Some(300),
            ..FaultsConfig::default()
        },
    ] {
        let broker = Broker::with(with_faults(faults.clone())).await?;
        for round in 0..2 {
            let mut raw = connect_between_faults(&broker).await?;
            let frames = raw.closed().await?;
            assert!(frames.is_empty(), "{faults:?}, round {round}: {frames:?}");
        }
        broker.shutdown().await?;
    }
    Ok(())
}

/// A connected client, trying again when the broker closes the connection
/// before its CONNACK (a fault that struck in between).
async fn connect_between_faults(broker: &Broker) -> Result<Raw> {
    for _ in 0..3 {
        if let Ok(raw) = Raw::connected(broker, &RawConnect::v4("every")).await {
            return Ok(raw);
        }
    }
    bail!("no CONNACK on three connections")
}
