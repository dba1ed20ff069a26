//! 5.0 shared subscriptions (`$share/{group}/{filter}`).

use anyhow::Result;
use bytes::Bytes;
use e2e::*;
use std::collections::BTreeMap;
use std::time::Duration;
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

/// Three members of one group; one never acknowledges and its connection
/// is killed halfway through 1,000 QoS 1 messages (clean start, no session
/// expiry, so its session ends). What the group gave it and it never
/// acknowledged goes to the two others (v5 section 4.8.2): every message
/// reaches them at least once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_shared_member_killed_mid_stream_loses_nothing_mqtt_4_8_2() -> Result<()> {
    const N: usize = 1000;
    const FILTER: &str = "$share/g/sh/t";
    let broker = Broker::start().await?;
    let mut members = [
        V5::connect(v5_opts(&broker, "share-kill-1")).await?,
        V5::connect(v5_opts(&broker, "share-kill-2")).await?,
    ];
    for member in &mut members {
        member.subscribe(FILTER, 1).await?;
    }
    // The third member takes ten messages in flight and queues the rest.
    let connect = RawConnect {
        receive_maximum: Some(10),
        ..RawConnect::v5("share-kill-victim")
    };
    let mut victim = Raw::connected(&broker, &connect).await?;
    victim.send(&raw_subscribe(5, 1, FILTER, 1)).await?;
    assert_eq!(victim.recv().await?.kind(), kind::SUBACK);
    let mut victim = Some(victim);

    let mut publ = V5::connect(v5_opts(&broker, "share-kill-pub")).await?;
    let mut copies: BTreeMap<Bytes, usize> = BTreeMap::new();
    let mut per_member = [0usize; 2];
    let mut tally_all = |copies: &mut BTreeMap<Bytes, usize>, per_member: &mut [usize; 2]| {
        for (who, member) in members.iter_mut().enumerate() {
            tally(who, member.inbox.drain_now(), copies, per_member);
        }
    };
    for i in 0..N {
        if let Some(mut gone) = victim.take_if(|_| i == N / 2) {
            // The victim has its ten, never acknowledged, and more queued;
            // then its connection drops while the stream goes on.
            let mut received = 0;
            while let Some(frame) = gone.recv_for(QUIET).await? {
                if frame.kind() == kind::PUBLISH {
                    received += 1;
                }
            }
            assert_eq!(received, 10, "the victim's window is full");
        }
        publ.publish("sh/t", 1, false, format!("{i}").as_bytes())
            .await?;
        tally_all(&mut copies, &mut per_member);
    }
    let deadline = Instant::now() + 4 * WAIT;
    while copies.len() < N && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        tally_all(&mut copies, &mut per_member);
    }
    let missing: Vec<usize> = (0..N)
        .filter(|i| !copies.contains_key(format!("{i}").as_bytes()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} never delivered: {missing:?}",
        missing.len()
    );
    assert_eq!(copies.len(), N, "nothing but the messages published");
    assert!(
        per_member.iter().sum::<usize>() >= N && per_member.iter().all(|&n| n > 0),
        "both remaining members take their share: {per_member:?}"
    );
    broker.shutdown().await
}
