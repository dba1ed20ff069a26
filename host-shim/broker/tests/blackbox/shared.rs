//! 5.0 shared subscriptions (`$share/{group}/{filter}`).

use anyhow::Result;
use bytes::Bytes;
use e2e::*;
use std::collections::BTreeMap;
use tokio::time::Instant;

/// Counts the PUBLISHes among `packets` as received by member `who`.
fn tally(
    who: usize,
    packets: Vec<p5::Packet>,
    copies: &mut BTreeMap<Bytes, usize>,
    per_member: &mut [usize; 2],
) {
    for p in packets {
        if let p5::Packet::Publish(p) = p {
            assert_eq!(topic5(&p), "sh/t", "the topic, not the share filter");
            *copies.entry(p.payload).or_default() += 1;
            per_member[who] += 1;
        }
    }
}

/// Two members of `$share/g/...`: each message goes to exactly one of them
/// (v5 section 4.8.2, MQTT-4.8.2-1 for the filter form), and both get a
/// share of the load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_shared_subscription_splits_messages_mqtt_4_8_2() -> Result<()> {
    const N: usize = 40;
    let broker = Broker::start().await?;
    let mut a = V5::connect(v5_opts(&broker, "share-a")).await?;
    let mut b = V5::connect(v5_opts(&broker, "share-b")).await?;
    assert_ne!(
        a.connack_props()?.shared_subscription_available,
        Some(0),
        "CONNACK must not deny shared subscriptions"
    );
    a.subscribe("$share/g/sh/t", 1).await?;
    b.subscribe("$share/g/sh/t", 1).await?;

    let mut publ = V5::connect(v5_opts(&broker, "share-pub")).await?;
    for i in 0..N {
        publ.publish("sh/t", 1, false, format!("{i}").as_bytes())
            .await?;
    }

    // Count deliveries per payload and per member until all N are in.
    let mut copies: BTreeMap<Bytes, usize> = BTreeMap::new();
    let mut per_member = [0usize; 2];
    let deadline = Instant::now() + WAIT;
    while per_member.iter().sum::<usize>() < N && Instant::now() < deadline {
        tally(0, a.inbox.drain_now(), &mut copies, &mut per_member);
        tally(1, b.inbox.drain_now(), &mut copies, &mut per_member);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Then a quiet period: no late duplicates.
    tokio::time::sleep(QUIET).await;
    tally(0, a.inbox.drain_now(), &mut copies, &mut per_member);
    tally(1, b.inbox.drain_now(), &mut copies, &mut per_member);

    assert_eq!(copies.len(), N, "every message delivered: {copies:?}");
    assert!(
        copies.values().all(|&c| c == 1),
        "each message to exactly one member: {copies:?}"
    );
    assert!(
        per_member.iter().all(|&n| n > 0),
        "both members should share the load: {per_member:?}"
    );
    broker.shutdown().await
}

/// Retained messages are sent only for new non-shared subscriptions (v5
/// section 3.3.1.3, 4.8.2): a shared subscription gets none, a plain one on
/// the same filter does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_no_retained_messages_to_shared_subscriptions() -> Result<()> {
    let broker = Broker::start().await?;
    let mut publ = V5::connect(v5_opts(&broker, "share-ret-pub")).await?;
    publ.publish("shr/t", 1, true, b"retained").await?;

    let mut member = V5::connect(v5_opts(&broker, "share-ret-member")).await?;
    member.subscribe("$share/g/shr/t", 1).await?;
    member.no_publish().await?;

    let mut plain = V5::connect(v5_opts(&broker, "share-ret-plain")).await?;
    plain.subscribe("shr/t", 1).await?;
    assert_eq!(
        plain.next_publish().await?.payload,
        Bytes::from_static(b"retained")
    );

    // Live messages still reach the shared subscription.
    publ.publish("shr/t", 1, false, b"live").await?;
    assert_eq!(
        member.next_publish().await?.payload,
        Bytes::from_static(b"live")
    );
    broker.shutdown().await
}
