//! Retained delivery at scale: a new wildcard subscription gets every
//! matching retained message, each once, in topic order, whatever its
//! window and QoS (3.1.1 MQTT-3.3.1-6, 5.0 MQTT-3.3.1-9: "all matching
//! retained messages"), and the broker never drops one for a full queue.

use anyhow::{ensure, Result};
use e2e::*;
use mqtt_broker::BrokerConfig;
use std::time::Duration;

/// Retained messages stored per window of acknowledged QoS 1 PUBLISHes.
const STORE_WINDOW: usize = 50;

/// Stores `count` retained messages `r/00000`, `r/00001`, ... at `qos` (0
/// or 1) through one raw connection. QoS 1 goes in windows of
/// [`STORE_WINDOW`], each acknowledged before the next; QoS 0 is followed
/// by a QoS 1 message whose PUBACK says all are stored (the broker handles
/// a connection's packets in order).
async fn store_retained(broker: &Broker, count: usize, qos: u8) -> Result<()> {
    let mut publisher = Raw::connected(broker, &RawConnect::v4("retained-publisher")).await?;
    let mut burst = Vec::new();
    let mut unacked = 0;
    for i in 0..count {
        let topic = format!("r/{i:05}");
        let pkid = if qos == 0 { 0 } else { (unacked + 1) as u16 };
        burst.extend(raw_publish(
            4,
            &topic,
            qos,
            pkid,
            true,
            false,
            topic.as_bytes(),
        ));
        if qos == 0 {
            if burst.len() > 64 * 1024 {
                publisher.send(&burst).await?;
                burst.clear();
            }
            continue;
        }
        unacked += 1;
        if unacked == STORE_WINDOW || i + 1 == count {
            publisher.send(&burst).await?;
            burst.clear();
            for _ in 0..unacked {
                let ack = publisher.recv().await?;
                ensure!(ack.kind() == kind::PUBACK, "expected a PUBACK, got {ack:?}");
            }
            unacked = 0;
        }
    }
    if qos == 0 {
        burst.extend(raw_publish(4, "stored", 1, 1, false, false, b"sync"));
        publisher.send(&burst).await?;
        let ack = publisher.recv().await?;
        ensure!(
            ack.kind() == kind::PUBACK,
            "expected the PUBACK, got {ack:?}"
        );
    }
    publisher.send(&raw_disconnect_v4()).await?;
    Ok(())
}

fn expected_topics(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("r/{i:05}")).collect()
}

/// A QoS 1 `#` subscriber with Receive Maximum 1 that acknowledges each message
/// before it reads the next gets all 20,000 retained messages, each once,
/// in topic order (5.0 MQTT-3.3.4-9: never more than Receive Maximum
/// unacknowledged). The messages are stored at QoS 1, so they go out at
/// QoS 1 and each waits for the acknowledgement of the one before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_receive_maximum_1_acking_one_at_a_time_gets_20000_retained_in_order() -> Result<()> {
    const COUNT: usize = 20_000;
    let broker = Broker::start().await?;
    store_retained(&broker, COUNT, 1).await?;

    let connect = RawConnect {
        receive_maximum: Some(1),
        ..RawConnect::v5("one-at-a-time")
    };
    let mut sub = Raw::connected(&broker, &connect).await?;
    sub.send(&raw_subscribe(5, 1, "#", 1)).await?;
    let suback = sub.recv().await?;
    assert_eq!(suback.kind(), kind::SUBACK);
    let mut got = Vec::with_capacity(COUNT);
    for i in 0..COUNT {
        let publish = sub.recv().await?.publish(true)?;
        assert!(publish.retain, "RETAIN=1 on {}", publish.topic);
        assert_eq!(publish.qos, 1);
        // Receive Maximum 1: nothing else may come before this is acked
        // (checked now and then, as a short quiet period).
        if i % 2_000 == 0 {
            let early = sub.recv_for(Duration::from_millis(20)).await?;
            assert!(early.is_none(), "sent before the PUBACK: {early:?}");
        }
        sub.send(&raw_ack(kind::PUBACK, publish.pkid)).await?;
        got.push(publish.topic);
    }
    assert_eq!(got, expected_topics(COUNT), "each once, in topic order");
    assert!(sub.recv_for(QUIET).await?.is_none(), "nothing more");
    broker.shutdown().await
}

/// A QoS 0 `#` subscriber gets all of more retained messages than
/// `max_queued_messages` (and than the broker keeps ahead of a socket):
/// retained delivery is paced by the connection, not cut at the queue
/// limit that protects live QoS 0 traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_subscriber_gets_more_retained_than_max_queued_messages() -> Result<()> {
    const COUNT: usize = 5_000;
    let broker = Broker::with(BrokerConfig {
        max_queued_messages: 100,
        ..config()
    })
    .await?;
    store_retained(&broker, COUNT, 0).await?;

    let mut sub = Raw::connected(&broker, &RawConnect::v4("qos0-wildcard")).await?;
    sub.send(&raw_subscribe(4, 1, "#", 0)).await?;
    let suback = sub.recv().await?;
    assert_eq!(suback.kind(), kind::SUBACK);
    let mut got = Vec::with_capacity(COUNT);
    for _ in 0..COUNT {
        let publish = sub.recv().await?.publish(false)?;
        assert!(publish.retain && publish.qos == 0, "{publish:?}");
        got.push(publish.topic);
    }
    assert_eq!(got, expected_topics(COUNT), "each once, in topic order");
    assert!(sub.recv_for(QUIET).await?.is_none(), "nothing more");
    broker.shutdown().await
}
