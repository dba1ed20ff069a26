//! Flow control and volume: Receive Maximum in both directions, a burst of
//! QoS 2 publishes, 10,000 retained messages through a small in-flight
//! window, and a publisher slowed to its slow subscriber's pace.

use anyhow::{bail, ensure, Result};
use bytes::Bytes;
use e2e::*;
use mqtt_broker::BrokerConfig;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// 5.0: the broker announces its Receive Maximum in CONNACK, and a client
/// that has more unacknowledged QoS 2 PUBLISHes outstanding than that is
/// disconnected with 0x93 Receive Maximum exceeded (v5 MQTT-3.3.4-7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_receive_maximum_exceeded_0x93_mqtt_3_3_4_7() -> Result<()> {
    let broker = Broker::with(BrokerConfig {
        receive_maximum: 3,
        ..config()
    })
    .await?;
    let (mut raw, connack) = Raw::handshake(&broker, &RawConnect::v5("rm-over")).await?;
    let p5::Packet::ConnAck(connack) = connack.v5()? else {
        bail!("expected CONNACK");
    };
    let announced = connack.properties.and_then(|p| p.receive_max);
    assert_eq!(announced, Some(3), "CONNACK Receive Maximum");

    // QoS 2 PUBLISHes stay unacknowledged until PUBREL / PUBCOMP: never
    // sending PUBREL keeps all of them counted.
    let mut burst = Vec::new();
    for pkid in 1..=4u16 {
        burst.extend(raw_publish(5, "rm/t", 2, pkid, false, false, b"x"));
    }
    raw.send(&burst).await?;
    let frames = raw.closed().await?;
    let pubrecs: Vec<u16> = frames
        .iter()
        .filter(|f| f.kind() == kind::PUBREC)
        .map(Frame::pkid)
        .collect();
    assert_eq!(
        pubrecs,
        [1, 2, 3],
        "the first three are within the limit: {frames:?}"
    );
    let last = frames.last().expect("a DISCONNECT before closing");
    assert_eq!(
        (last.kind(), last.disconnect_reason()),
        (kind::DISCONNECT, 0x93),
        "{frames:?}"
    );
    broker.shutdown().await
}

/// 5.0: the broker never has more QoS > 0 PUBLISHes unacknowledged towards a
/// client than the client's Receive Maximum (v5 MQTT-3.3.4-9); each PUBACK
/// lets exactly one more through, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_client_receive_maximum_respected_mqtt_3_3_4_9() -> Result<()> {
    let broker = Broker::start().await?;
    let connect = RawConnect {
        receive_maximum: Some(2),
        ..RawConnect::v5("rm-client")
    };
    let mut raw = Raw::connected(&broker, &connect).await?;
    raw.send(&raw_subscribe(5, 1, "rmc/t", 1)).await?;
    ensure!(raw.recv().await?.kind() == kind::SUBACK);

    let mut publ = V5::connect(v5_opts(&broker, "rm-client-pub")).await?;
    for i in 0..5u8 {
        publ.publish("rmc/t", 1, false, &[b'0' + i]).await?;
    }

    let mut received = Vec::new();
    let mut window = Vec::new();
    while received.len() < 5 {
        // Take everything the broker is willing to send right now.
        while let Some(f) = raw.recv_for(QUIET).await? {
            let p = f.publish(true)?;
            window.push(p.pkid);
            received.push(p.payload);
        }
        assert!(
            !window.is_empty() && window.len() <= 2,
            "unacknowledged window must be 1..=2, got {window:?}"
        );
        raw.send(&raw_ack(kind::PUBACK, window.remove(0))).await?;
    }
    let expected: Vec<Bytes> = (0..5u8).map(|i| Bytes::from(vec![b'0' + i])).collect();
    assert_eq!(received, expected, "all messages, in order");
    broker.shutdown().await
}

/// 3.1.1 has no Receive Maximum: a client writing 1000 QoS 2 PUBLISHes back
/// to back, before any PUBREC, must have every one accepted (v311
/// MQTT-4.3.3-1/2: PUBREC for each) and delivered once, in order (v311
/// MQTT-4.6.0-6). Mosquitto, by contrast, drops beyond its inflight limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_burst_of_1000_qos2_none_dropped_mqtt_4_3_3_and_4_6_0_6() -> Result<()> {
    const N: u16 = 1000;
    let broker = Broker::start().await?;
    let mut sub = V4::connect(v4_opts(&broker, "burst-sub")).await?;
    sub.subscribe("burst/t", 2).await?;

    let mut raw = Raw::connected(&broker, &RawConnect::v4("burst-pub")).await?;
    let mut burst = Vec::new();
    for pkid in 1..=N {
        burst.extend(raw_publish(
            4,
            "burst/t",
            2,
            pkid,
            false,
            false,
            &pkid.to_be_bytes(),
        ));
    }
    raw.send(&burst).await?;

    // Complete every flow: PUBREC -> PUBREL -> PUBCOMP.
    let mut recs = BTreeSet::new();
    let mut comps = BTreeSet::new();
    within_for(Duration::from_secs(60), "1000 QoS 2 flows", async {
        while comps.len() < N as usize {
            let f = raw.recv().await?;
            match f.kind() {
                kind::PUBREC => {
                    ensure!(recs.insert(f.pkid()), "second PUBREC for {}", f.pkid());
                    raw.send(&raw_ack(kind::PUBREL, f.pkid())).await?;
                }
                kind::PUBCOMP => {
                    ensure!(comps.insert(f.pkid()), "second PUBCOMP for {}", f.pkid());
                }
                _ => bail!("unexpected {f:?}"),
            }
        }
        Ok(())
    })
    .await??;

    for expected in 1..=N {
        let got = sub.next_publish().await?;
        assert_eq!(got.qos as u8, 2);
        assert_eq!(
            got.payload,
            Bytes::copy_from_slice(&expected.to_be_bytes()),
            "message {expected}: none lost, duplicated or reordered"
        );
    }
    sub.no_publish().await?;
    broker.shutdown().await
}

/// 10,000 retained topics, then one `bulk/#` subscription at QoS 1 through a
/// broker whose `max_inflight` is 10: every retained message arrives exactly
/// once with RETAIN=1 (v311 MQTT-3.3.1-6, MQTT-3.3.1-8), none lost to the
/// small window or the queue behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_10000_retained_through_inflight_10_mqtt_3_3_1_6() -> Result<()> {
    const N: usize = 10_000;
    let broker = Broker::with(BrokerConfig {
        max_inflight: 10,
        ..config()
    })
    .await?;

    // Store them with raw QoS 1 publishes written in one go; every PUBACK
    // means the broker owns that message.
    let mut raw = Raw::connected(&broker, &RawConnect::v4("bulk-pub")).await?;
    let mut all = Vec::new();
    for i in 0..N {
        let topic = format!("bulk/{i}");
        all.extend(raw_publish(
            4,
            &topic,
            1,
            i as u16 + 1,
            true,
            false,
            topic.as_bytes(),
        ));
    }
    raw.send(&all).await?;
    let mut acked = BTreeSet::new();
    within_for(Duration::from_secs(60), "10,000 PUBACKs", async {
        while acked.len() < N {
            let f = raw.recv().await?;
            ensure!(f.kind() == kind::PUBACK, "unexpected {f:?}");
            acked.insert(f.pkid());
        }
        Ok(())
    })
    .await??;

    let mut sub = V4::connect(v4_opts(&broker, "bulk-sub")).await?;
    sub.subscribe("bulk/#", 1).await?;
    let mut seen = BTreeSet::new();
    within_for(
        Duration::from_secs(120),
        "10,000 retained messages",
        async {
            while seen.len() < N {
                let p = sub.next_publish().await?;
                ensure!(p.retain, "RETAIN=1 expected: {p:?}");
                ensure!(p.qos as u8 == 1, "stored and granted QoS 1: {p:?}");
                ensure!(
                    p.payload == p.topic.as_bytes(),
                    "payload/topic mismatch: {p:?}"
                );
                ensure!(seen.insert(p.topic.clone()), "delivered twice: {}", p.topic);
            }
            Ok(())
        },
    )
    .await??;
    sub.no_publish().await?;
    let expected: BTreeSet<String> = (0..N).map(|i| format!("bulk/{i}")).collect();
    assert_eq!(seen, expected);
    broker.shutdown().await
}

/// `queue_full = "slow_publisher"` (the default), `max_queued_messages` 100:
/// a rumqttc publisher with a window of 10 sends 2,000 QoS 1 messages to a
/// subscriber that stops acknowledging. Once the subscriber's window (100)
/// and queue (100) are full the broker holds back the PUBACKs, so the
/// publisher's window fills and it stops sending. When the subscriber
/// acknowledges again, one message at a time, it gets all 2,000, in order:
/// none was dropped for the full queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_slows_the_publisher_and_loses_nothing() -> Result<()> {
    const N: u32 = 2000;
    const WINDOW: u16 = 10;
    const SUBSCRIBER_WINDOW: u32 = 100;
    const QUEUE: u32 = 100;
    let broker = Broker::with(BrokerConfig {
        max_inflight: SUBSCRIBER_WINDOW as u16,
        max_queued_messages: QUEUE as usize,
        ..config()
    })
    .await?;
    let mut sub = Raw::connected(&broker, &RawConnect::v4("slow-sub")).await?;
    sub.send(&raw_subscribe(4, 1, "slow/t", 1)).await?;
    ensure!(sub.recv().await?.kind() == kind::SUBACK);

    // The publisher, counting the PUBLISHes it sent and the PUBACKs it got.
    let mut opts = v4_opts(&broker, "slow-pub");
    opts.set_inflight(WINDOW);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, usize::from(WINDOW));
    let sent = Arc::new(AtomicU32::new(0));
    let acked = Arc::new(AtomicU32::new(0));
    let (sent_in, acked_in) = (Arc::clone(&sent), Arc::clone(&acked));
    let driver = tokio::spawn(async move {
        while acked_in.load(Ordering::SeqCst) < N {
            match eventloop.poll().await? {
                rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(_)) => {
                    sent_in.fetch_add(1, Ordering::SeqCst);
                }
                rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) => {
                    acked_in.fetch_add(1, Ordering::SeqCst);
                }
                _ => {}
            }
        }
        Ok::<_, rumqttc::ConnectionError>(())
    });
    let producer = tokio::spawn(async move {
        for i in 0..N {
            client
                .publish("slow/t", qos4(1), false, i.to_be_bytes().to_vec())
                .await?;
        }
        // Kept until the end: its event loop stops once no client is left.
        Ok::<_, rumqttc::ClientError>(client)
    });

    // Paused: the subscriber takes its window's worth and acknowledges none.
    let mut received = Vec::new();
    let mut unacked = Vec::new();
    while let Some(f) = sub.recv_for(Duration::from_secs(1)).await? {
        let p = f.publish(false)?;
        unacked.push(p.pkid);
        received.push(p.payload);
    }
    assert_eq!(
        received.len() as u32,
        SUBSCRIBER_WINDOW,
        "its window, no more"
    );
    // The publisher has everything within the limits acknowledged, and then
    // a full window of PUBLISHes whose PUBACKs are held: it waits.
    let outstanding = || sent.load(Ordering::SeqCst) - acked.load(Ordering::SeqCst);
    within("the publisher's window to fill", async {
        while acked.load(Ordering::SeqCst) < SUBSCRIBER_WINDOW + QUEUE
            || outstanding() < u32::from(WINDOW)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await?;
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        (acked.load(Ordering::SeqCst), outstanding()),
        (SUBSCRIBER_WINDOW + QUEUE, u32::from(WINDOW)),
        "while the subscriber is paused, the publisher waits with a full window"
    );
    assert!(sent.load(Ordering::SeqCst) < N, "the publisher was slowed");

    // Resumed: one acknowledgement per message, as each arrives.
    for pkid in unacked {
        sub.send(&raw_ack(kind::PUBACK, pkid)).await?;
    }
    within_for(Duration::from_secs(60), "2,000 messages", async {
        while received.len() < N as usize {
            let p = sub.recv().await?.publish(false)?;
            ensure!(!p.dup, "sent once: {p:?}");
            received.push(p.payload);
            sub.send(&raw_ack(kind::PUBACK, p.pkid)).await?;
        }
        Ok(())
    })
    .await??;
    let expected: Vec<Bytes> = (0..N)
        .map(|i| Bytes::copy_from_slice(&i.to_be_bytes()))
        .collect();
    assert!(received == expected, "all 2,000 messages, in order");
    within("every PUBACK", driver).await???;
    let _client = within("every PUBLISH", producer).await???;
    assert!(sub.recv_for(QUIET).await?.is_none(), "nothing more");
    broker.shutdown().await
}
