//! Flow control for a slow subscriber (`queue_full`): a subscriber with a
//! window of one and a queue of two, publishers at QoS 1 and 2.

use super::*;
use crate::config::QueueFullPolicy;
use rumqttc::v5::mqttbytes::v5::{PubAckReason, PubRecReason};

const SUB: ConnId = 1;
const PUB: ConnId = 2;

/// Window 1 to every client, queues of two messages.
fn config() -> BrokerConfig {
    BrokerConfig {
        max_inflight: 1,
        max_queued_messages: 2,
        ..BrokerConfig::default()
    }
}

/// A broker with a subscriber to `t` at QoS 2 (`expiry` as its Session
/// Expiry Interval) and a publisher of version `publisher`.
fn slow_subscriber(config: BrokerConfig, expiry: Option<u32>, publisher: MqttVersion) -> Harness {
    let mut h = Harness::new(config);
    h.connect(SUB, V5, "sub", true, expiry);
    h.subscribe(SUB, filter("t", QoS::ExactlyOnce), None);
    h.connect(PUB, publisher, "pub", true, None);
    h
}

/// The payloads of the PUBLISHes `conn` was sent.
fn payloads(h: &mut Harness, conn: ConnId) -> Vec<Vec<u8>> {
    publishes(&h.take(conn))
        .iter()
        .map(|p| p.payload.to_vec())
        .collect()
}

/// The packet identifiers of the PUBACKs and PUBRECs `conn` was sent, in
/// order.
fn acks(h: &mut Harness, conn: ConnId) -> Vec<u16> {
    h.take(conn)
        .iter()
        .filter_map(|p| match p {
            Packet::PubAck(a) => Some(a.pkid),
            Packet::PubRec(r) => Some(r.pkid),
            _ => None,
        })
        .collect()
}

/// The subscriber receives its next message and acknowledges it (QoS 1,
/// or the whole QoS 2 flow); returns its payload.
fn consume(h: &mut Harness) -> Vec<u8> {
    let out = h.take(SUB);
    let got = publishes(&out);
    assert_eq!(got.len(), 1, "one message at a time: {out:?}");
    let (pkid, qos, payload) = (got[0].pkid, got[0].qos, got[0].payload.to_vec());
    if qos == QoS::ExactlyOnce {
        h.packet(SUB, Packet::PubRec(PubRec::new(pkid, None)));
        assert!(
            matches!(h.take(SUB).as_slice(), [Packet::PubRel(r)] if r.pkid == pkid),
            "PUBREL"
        );
        h.packet(SUB, Packet::PubComp(PubComp::new(pkid, None)));
    } else {
        h.packet(SUB, Packet::PubAck(PubAck::new(pkid, None)));
    }
    payload
}

/// The publisher's side of a QoS 2 flow after its PUBREC.
fn release(h: &mut Harness, pkids: &[u16]) {
    for &pkid in pkids {
        h.packet(PUB, Packet::PubRel(PubRel::new(pkid, None)));
        assert!(matches!(h.take(PUB).as_slice(), [Packet::PubComp(c)] if c.pkid == pkid));
    }
}

#[test]
fn a_slow_subscriber_holds_back_acks_in_order_and_loses_no_qos1_or_2() {
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let mut h = slow_subscriber(config(), None, V5);
        // 1 in flight, 2 and 3 queued: acknowledged at once.
        for (pkid, payload) in [(1, b"1"), (2, b"2"), (3, b"3")] {
            h.publish(PUB, "t", qos, false, payload, pkid);
        }
        assert_eq!(acks(&mut h, PUB), [1, 2, 3], "{qos:?}");
        // 4 and 5 go over the limit: held, and 6 behind them, though it is
        // for nobody (5.0: no matching subscribers).
        h.publish(PUB, "t", qos, false, b"4", 4);
        h.publish(PUB, "t", qos, false, b"5", 5);
        h.publish(PUB, "nobody", qos, false, b"6", 6);
        assert_eq!(acks(&mut h, PUB), [0u16; 0], "{qos:?}: held");
        if qos == QoS::ExactlyOnce {
            // A resend while held is answered by the held PUBREC only.
            let mut resent = Publish::new("t", qos, Bytes::from_static(b"4"), None);
            (resent.pkid, resent.dup) = (4, true);
            h.packet(PUB, Packet::Publish(resent));
            assert_eq!(acks(&mut h, PUB), [0u16; 0], "resend");
        }
        // QoS 0 holds nothing back: dropped for the full queue, as ever.
        h.publish(PUB, "t", QoS::AtMostOnce, false, b"q0", 0);
        assert_eq!(h.broker.stats().dropped_queue_full, 1);

        assert_eq!(consume(&mut h), b"1");
        assert_eq!(acks(&mut h, PUB), [0u16; 0], "{qos:?}: 3 still queued");
        assert_eq!(consume(&mut h), b"2");
        // The queue is back within its limit (4, 5): released in order.
        let out = h.take(PUB);
        let released: Vec<(u16, u8)> = out
            .iter()
            .filter_map(|p| match p {
                Packet::PubAck(a) => Some((a.pkid, a.reason as u8)),
                Packet::PubRec(r) => Some((r.pkid, r.reason as u8)),
                _ => None,
            })
            .collect();
        assert_eq!(
            released,
            [
                (4, 0),
                (5, 0),
                (6, PubAckReason::NoMatchingSubscribers as u8)
            ],
            "{qos:?}: {out:?}"
        );
        if qos == QoS::ExactlyOnce {
            release(&mut h, &[1, 2, 3, 4, 5, 6]);
        }
        assert_eq!(consume(&mut h), b"3");
        assert_eq!(consume(&mut h), b"4");
        assert_eq!(consume(&mut h), b"5");
        assert!(h.take(SUB).is_empty());
        let stats = h.broker.stats();
        assert_eq!(stats.dropped_queue_full, 1, "{qos:?}: the QoS 0 one only");
        assert_eq!(stats.queued_over_limit, 2, "{qos:?}");
        assert_eq!(stats.acks_held, 3, "{qos:?}");
        assert_eq!(stats.held_episodes, 1, "{qos:?}");
    }
}

#[test]
fn a_steady_publisher_keeps_pace_with_the_subscriber() {
    let mut h = slow_subscriber(config(), None, V3);
    let mut got = Vec::new();
    let mut acked = Vec::new();
    let payloads: Vec<&'static [u8]> = vec![b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"7"];
    for (i, payload) in payloads.iter().enumerate() {
        h.publish(PUB, "t", QoS::AtLeastOnce, false, payload, i as u16 + 1);
        acked.extend(acks(&mut h, PUB));
        if i >= 4 {
            got.push(consume(&mut h));
            acked.extend(acks(&mut h, PUB));
        }
    }
    while acked.len() < payloads.len() {
        got.push(consume(&mut h));
        acked.extend(acks(&mut h, PUB));
    }
    while got.len() < payloads.len() {
        got.push(consume(&mut h));
    }
    assert_eq!(acked, (1..=8).collect::<Vec<u16>>(), "in order");
    assert_eq!(got, payloads, "all, in order");
    assert_eq!(h.broker.stats().dropped_queue_full, 0);
    assert!(h.broker.stats().held_episodes > 0);
}

#[test]
fn held_acks_are_released_when_the_subscriber_goes_and_a_parked_session_drops() {
    let mut h = slow_subscriber(config(), Some(600), V5);
    for pkid in 1..=5 {
        h.publish(PUB, "t", QoS::AtLeastOnce, false, b"m", pkid);
    }
    assert_eq!(acks(&mut h, PUB), [1, 2, 3]);
    h.broker.handle_closed(h.now, SUB);
    h.drain();
    assert_eq!(acks(&mut h, PUB), [4, 5], "not waiting for a client away");
    // Parked, and over its limit: further messages are dropped, as ever.
    h.publish(PUB, "t", QoS::AtLeastOnce, false, b"m", 6);
    assert_eq!(acks(&mut h, PUB), [6]);
    assert_eq!(h.broker.stats().dropped_queue_full, 1);
    // Nothing queued over the limit was lost: in flight, then 2..5.
    h.take(SUB);
    let ack = h.connect(3, V5, "sub", false, Some(600));
    assert!(ack.session_present);
    let mut got = 0;
    while let Some(Packet::Publish(p)) = h.take(3).first().cloned() {
        got += 1;
        h.packet(3, Packet::PubAck(PubAck::new(p.pkid, None)));
    }
    assert_eq!(got, 5);
}

#[test]
fn held_acks_are_released_when_the_subscriber_ends() {
    let mut h = slow_subscriber(config(), None, V3);
    for pkid in 1..=4 {
        h.publish(PUB, "t", QoS::ExactlyOnce, false, b"m", pkid);
    }
    assert_eq!(acks(&mut h, PUB), [1, 2, 3]);
    h.packet(
        SUB,
        Packet::Disconnect(Disconnect::new(DisconnectReasonCode::NormalDisconnection)),
    );
    assert_eq!(acks(&mut h, PUB), [4]);
    assert!(h.broker.flow.is_idle());
}

#[test]
fn a_publisher_that_goes_leaves_nothing_held() {
    let mut h = slow_subscriber(config(), None, V5);
    for pkid in 1..=4 {
        h.publish(PUB, "t", QoS::AtLeastOnce, false, b"m", pkid);
    }
    assert_eq!(acks(&mut h, PUB), [1, 2, 3]);
    h.broker.handle_closed(h.now, PUB);
    h.drain();
    assert!(h.broker.flow.is_idle());
    consume(&mut h);
    consume(&mut h);
    assert!(
        h.take(PUB).is_empty(),
        "nothing sent to a closed connection"
    );
}

#[test]
fn at_most_receive_maximum_acks_are_held_per_connection() {
    let config = BrokerConfig {
        receive_maximum: 3,
        max_queued_messages: 1,
        ..config()
    };
    let mut h = slow_subscriber(config, None, V3);
    // 1 in flight, 2 queued, 3..5 over the limit and held: the cap.
    for pkid in 1..=5 {
        h.publish(PUB, "t", QoS::AtLeastOnce, false, b"m", pkid);
    }
    assert_eq!(acks(&mut h, PUB), [1, 2]);
    // 6 may not go over: dropped for the full queue, acknowledged at once.
    h.publish(PUB, "t", QoS::AtLeastOnce, false, b"6", 6);
    assert_eq!(acks(&mut h, PUB), [6]);
    assert_eq!(h.broker.stats().dropped_queue_full, 1);
    assert_eq!(h.broker.stats().queued_over_limit, 3);
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(consume(&mut h));
    }
    assert_eq!(acks(&mut h, PUB), [3, 4, 5]);
    assert!(!got.contains(&b"6".to_vec()));
    assert!(h.take(SUB).is_empty());
}

#[test]
fn memory_limit_refusals_wait_their_turn() {
    // "t" and one byte of payload: two bytes a message.
    let config = BrokerConfig {
        memory_limit: 5,
        ..config()
    };
    let mut h = slow_subscriber(config, None, V5);
    for pkid in 1..=4 {
        h.publish(PUB, "t", QoS::AtLeastOnce, false, b"m", pkid);
    }
    // 2, 3 and 4 queued: six bytes, over the limit.
    h.publish(PUB, "t", QoS::AtLeastOnce, false, b"m", 5);
    assert_eq!(h.broker.stats().refused_memory_limit, 1);
    assert_eq!(acks(&mut h, PUB), [1, 2, 3]);
    consume(&mut h);
    let out = h.take(PUB);
    assert!(
        matches!(out.as_slice(), [Packet::PubAck(a), Packet::PubAck(b)]
            if a.pkid == 4 && a.reason == PubAckReason::Success
            && b.pkid == 5 && b.reason == PubAckReason::QuotaExceeded),
        "{out:?}"
    );
}

#[test]
fn max_queued_bytes_is_a_limit_to_go_over_too() {
    let config = BrokerConfig {
        max_queued_messages: 100,
        // Two messages of "t" and one byte.
        max_queued_bytes: 4,
        ..config()
    };
    let mut h = slow_subscriber(config, None, V5);
    for pkid in 1..=5 {
        h.publish(PUB, "t", QoS::ExactlyOnce, false, b"m", pkid);
    }
    assert_eq!(acks(&mut h, PUB), [1, 2, 3]);
    consume(&mut h);
    assert!(acks(&mut h, PUB).is_empty(), "six bytes queued");
    consume(&mut h);
    assert_eq!(acks(&mut h, PUB), [4, 5]);
    assert_eq!(h.broker.stats().dropped_queue_full, 0);
}

#[test]
fn queue_full_drop_drops_as_mosquitto_does() {
    let config = BrokerConfig {
        queue_full: QueueFullPolicy::Drop,
        ..config()
    };
    let mut h = slow_subscriber(config, None, V5);
    for pkid in 1..=5 {
        h.publish(PUB, "t", QoS::AtLeastOnce, false, b"m", pkid);
    }
    assert_eq!(acks(&mut h, PUB), [1, 2, 3, 4, 5], "never held");
    let stats = h.broker.stats();
    assert_eq!(stats.dropped_queue_full, 2);
    assert_eq!((stats.acks_held, stats.queued_over_limit), (0, 0));
    for _ in 0..3 {
        consume(&mut h);
    }
    assert!(payloads(&mut h, SUB).is_empty(), "4 and 5 dropped");
}

#[test]
fn qos2_publisher_refused_by_the_acl_waits_behind_a_held_pubrec() {
    // A refusal is an acknowledgement like any other: it keeps its place.
    let mut h = slow_subscriber(config(), None, V5);
    for pkid in 1..=4 {
        h.publish(PUB, "t", QoS::ExactlyOnce, false, b"m", pkid);
    }
    assert_eq!(acks(&mut h, PUB), [1, 2, 3]);
    h.broker
        .session_mut(h.broker.conns[&PUB].session.unwrap())
        .grants = Some(Arc::new(crate::auth::Grants::default()));
    h.publish(PUB, "t", QoS::ExactlyOnce, false, b"m", 5);
    assert!(acks(&mut h, PUB).is_empty());
    consume(&mut h);
    consume(&mut h);
    let out = h.take(PUB);
    assert!(
        matches!(out.as_slice(), [Packet::PubRec(a), Packet::PubRec(b)]
            if a.pkid == 4 && b.pkid == 5 && b.reason == PubRecReason::NotAuthorized),
        "{out:?}"
    );
}

mod properties {
    //! Well-behaved publishers (a window of `receive_maximum` each) and a
    //! slow subscriber, in any interleaving: acknowledgements come in the
    //! order of the PUBLISHes, the queue stays bounded, and once the
    //! subscriber has caught up every message was delivered once, in each
    //! publisher's order, and every acknowledgement sent.
    use super::*;
    use proptest::prelude::*;

    const PUBLISHERS: [ConnId; 2] = [2, 3];
    const WINDOW: usize = 4;

    #[derive(Debug, Clone)]
    enum Step {
        Publish { publisher: usize, qos2: bool },
        Consume,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..PUBLISHERS.len(), any::<bool>())
                .prop_map(|(publisher, qos2)| Step::Publish { publisher, qos2 }),
            Just(Step::Consume),
        ]
    }

    /// The clients' side of the conversation.
    #[derive(Default)]
    struct Clients {
        /// Per publisher, the packet identifiers awaiting PUBACK or PUBREC.
        outstanding: [VecDeque<u16>; 2],
        /// Per publisher, messages published so far.
        published: [u32; 2],
        next_pkid: [u16; 2],
        /// The subscriber's messages in flight, oldest first.
        inflight: VecDeque<(u16, QoS)>,
        /// What the subscriber received, per publisher.
        received: [Vec<u32>; 2],
    }

    impl Clients {
        /// Takes what the broker sent and answers as the clients would.
        fn pump(&mut self, h: &mut Harness) -> Result<(), TestCaseError> {
            loop {
                let mut quiet = true;
                for packet in h.take(SUB) {
                    quiet = false;
                    match packet {
                        Packet::Publish(p) => {
                            let text = String::from_utf8_lossy(&p.payload).into_owned();
                            let (who, n) = text.split_once(':').expect("who:n");
                            self.received[who.parse::<usize>().unwrap()].push(n.parse().unwrap());
                            self.inflight.push_back((p.pkid, p.qos));
                        }
                        Packet::PubRel(r) => {
                            h.broker.handle_frame(
                                h.now,
                                SUB,
                                Frame::Packet(Packet::PubComp(PubComp::new(r.pkid, None))),
                            );
                        }
                        other => prop_assert!(false, "subscriber got {other:?}"),
                    }
                }
                for (i, &conn) in PUBLISHERS.iter().enumerate() {
                    for packet in h.take(conn) {
                        quiet = false;
                        let pkid = match packet {
                            Packet::PubAck(a) => a.pkid,
                            Packet::PubRec(r) => {
                                h.broker.handle_frame(
                                    h.now,
                                    conn,
                                    Frame::Packet(Packet::PubRel(PubRel::new(r.pkid, None))),
                                );
                                r.pkid
                            }
                            Packet::PubComp(_) => continue,
                            other => return Err(TestCaseError::fail(format!("{other:?}"))),
                        };
                        // MQTT-4.6.0-2/-3: in the order of the PUBLISHes.
                        prop_assert_eq!(self.outstanding[i].pop_front(), Some(pkid));
                    }
                }
                h.drain();
                if quiet {
                    return Ok(());
                }
            }
        }

        fn publish(&mut self, h: &mut Harness, i: usize, qos2: bool) {
            if self.outstanding[i].len() >= WINDOW {
                return;
            }
            self.next_pkid[i] = self.next_pkid[i] % 1000 + 1;
            let pkid = self.next_pkid[i];
            let payload = format!("{i}:{}", self.published[i]);
            self.published[i] += 1;
            let qos = if qos2 {
                QoS::ExactlyOnce
            } else {
                QoS::AtLeastOnce
            };
            let mut p = Publish::new("t", qos, payload.into_bytes(), None);
            p.pkid = pkid;
            self.outstanding[i].push_back(pkid);
            h.packet(PUBLISHERS[i], Packet::Publish(p));
        }

        fn consume(&mut self, h: &mut Harness) -> bool {
            let Some((pkid, qos)) = self.inflight.pop_front() else {
                return false;
            };
            let ack = match qos {
                QoS::ExactlyOnce => Packet::PubRec(PubRec::new(pkid, None)),
                _ => Packet::PubAck(PubAck::new(pkid, None)),
            };
            h.packet(SUB, ack);
            true
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn publishers_are_slowed_in_order_and_nothing_is_lost(
            steps in proptest::collection::vec(step(), 1..150),
            v5 in any::<bool>(),
        ) {
            let config = BrokerConfig {
                max_inflight: 2,
                max_queued_messages: 3,
                receive_maximum: WINDOW as u16,
                ..BrokerConfig::default()
            };
            let mut h = Harness::new(config);
            h.connect(SUB, V5, "sub", true, None);
            h.subscribe(SUB, filter("t", QoS::ExactlyOnce), None);
            for (i, &conn) in PUBLISHERS.iter().enumerate() {
                h.connect(conn, if v5 { V5 } else { V3 }, &format!("pub{i}"), true, None);
            }
            let mut clients = Clients::default();
            let sub = h.broker.conns[&SUB].session.unwrap();
            for step in steps {
                match step {
                    Step::Publish { publisher, qos2 } => clients.publish(&mut h, publisher, qos2),
                    Step::Consume => {
                        clients.consume(&mut h);
                    }
                }
                clients.pump(&mut h)?;
                let queued = h.broker.sessions[&sub].queued_live;
                prop_assert!(queued <= 3 + PUBLISHERS.len() * WINDOW, "{queued} queued");
            }
            while clients.consume(&mut h) {
                clients.pump(&mut h)?;
            }
            for i in 0..PUBLISHERS.len() {
                prop_assert!(clients.outstanding[i].is_empty(), "all acknowledged");
                let all: Vec<u32> = (0..clients.published[i]).collect();
                prop_assert_eq!(&clients.received[i], &all);
            }
            prop_assert_eq!(h.broker.stats().dropped_queue_full, 0);
            prop_assert!(h.broker.flow.is_idle());
        }
    }
}
