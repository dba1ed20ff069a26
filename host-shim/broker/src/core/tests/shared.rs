//! Shared subscriptions when a member goes away (MQTT 5.0 section 4.8.2):
//! its undelivered QoS 1 and 2 messages go to another member of the group,
//! for each way a session ends.

use super::*;
use rumqttc::v5::mqttbytes::v5::{PubAckReason, PubRecReason};

const GROUP: &str = "$share/g/jobs/+";

/// A broker whose clients get at most two messages in flight, so that a
/// few messages fill the window and queue behind it.
fn harness() -> Harness {
    Harness::new(BrokerConfig {
        max_inflight: 2,
        ..BrokerConfig::default()
    })
}

/// Connects `client_id` on `conn` with a clean start and the given session
/// expiry (5.0) or clean session flag (3.1.1: `expiry` 0 is a clean session).
fn join(h: &mut Harness, conn: ConnId, version: MqttVersion, client_id: &str, expiry: u32) {
    let persistent = expiry > 0;
    let clean = version == V5 || !persistent;
    h.connect(conn, version, client_id, clean, Some(expiry));
}

/// Publishes `count` messages `m0`, `m1`, ... to `jobs/x` from `conn`.
fn publish_many(h: &mut Harness, conn: ConnId, qos: QoS, count: usize) {
    for i in 0..count {
        let pkid = u16::try_from(i + 1).expect("few messages");
        let mut p = Publish::new("jobs/x", qos, Bytes::from(format!("m{i}")), None);
        p.pkid = pkid;
        h.packet(conn, Packet::Publish(p));
        if qos == QoS::ExactlyOnce {
            // The publisher's own QoS 2 flow.
            h.packet(conn, Packet::PubRel(PubRel::new(pkid, None)));
        }
    }
    h.take(conn);
}

/// The payloads of the PUBLISHes among `packets`, in order.
fn payloads(packets: &[Packet]) -> Vec<String> {
    publishes(packets)
        .iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect()
}

/// `m{i}` for each `i` of `range`.
fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("m{i}")).collect()
}

/// Member `a` (conn 1) gets five messages: two in flight, three queued.
/// Member `b` (conn 2, subscription identifier 7) joins afterwards, so the
/// group gave all five to `a`. Conn 3 publishes.
fn five_to_a(h: &mut Harness, a: (MqttVersion, u32), qos: QoS) {
    join(h, 1, a.0, "a", a.1);
    h.subscribe(1, filter(GROUP, QoS::ExactlyOnce), None);
    join(h, 3, V5, "pub", 0);
    publish_many(h, 3, qos, 5);
    assert_eq!(payloads(&h.take(1)), names(0..2), "two in flight");
    join(h, 2, V5, "b", 0);
    h.subscribe(2, filter(GROUP, QoS::ExactlyOnce), Some(7));
}

/// Acknowledges every QoS 1 or 2 PUBLISH among `packets` from `conn`, so
/// that more flow.
fn ack_all(h: &mut Harness, conn: ConnId, packets: &[Packet]) {
    for p in publishes(packets) {
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => h.packet(conn, Packet::PubAck(PubAck::new(p.pkid, None))),
            QoS::ExactlyOnce => {
                h.packet(conn, Packet::PubRec(PubRec::new(p.pkid, None)));
                h.packet(conn, Packet::PubComp(PubComp::new(p.pkid, None)));
            }
        }
    }
}

/// Takes everything `conn` gets, acknowledging as it comes, until nothing
/// more comes; each must be a new delivery (not DUP) carrying subscription
/// identifier `id`, if given.
fn receive_all(h: &mut Harness, conn: ConnId, id: Option<usize>) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let out = h.take(conn);
        if publishes(&out).is_empty() {
            return got;
        }
        for p in publishes(&out) {
            assert!(!p.dup, "a new delivery, not a retry: {p:?}");
            if let Some(id) = id {
                let ids = p
                    .properties
                    .as_ref()
                    .map(|p| p.subscription_identifiers.clone());
                assert_eq!(ids, Some(vec![id]), "the member's own identifier: {p:?}");
            }
        }
        got.extend(payloads(&out));
        ack_all(h, conn, &out);
    }
}

/// What `b` (conn 2) receives.
fn b_receives(h: &mut Harness) -> Vec<String> {
    receive_all(h, 2, Some(7))
}

/// Sends UNSUBSCRIBE from the group on `conn`.
fn leave_group(h: &mut Harness, conn: ConnId) {
    h.packet(
        conn,
        Packet::Unsubscribe(Unsubscribe::new(GROUP.to_string(), None)),
    );
    assert!(matches!(h.take(conn).as_slice(), [Packet::UnsubAck(_)]));
}

#[test]
fn clean_disconnect_hands_qos1_in_flight_and_queued_to_another_member() {
    let mut h = harness();
    five_to_a(&mut h, (V5, 0), QoS::AtLeastOnce);
    h.packet(
        1,
        Packet::Disconnect(Disconnect::new(DisconnectReasonCode::NormalDisconnection)),
    );
    assert_eq!(b_receives(&mut h), names(0..5), "every message, in order");
    assert_eq!(h.broker.stats().dropped_no_shared_member, 0);
}

#[test]
fn lost_clean_session_hands_qos2_but_not_what_the_client_has() {
    // 3.1.1 clean session, QoS 2: the first message's PUBREC came (PUBREL
    // sent), so the client has it; the second is in flight without PUBREC.
    let mut h = harness();
    five_to_a(&mut h, (V3, 0), QoS::ExactlyOnce);
    h.packet(1, Packet::PubRec(PubRec::new(1, None)));
    assert!(matches!(h.take(1).as_slice(), [Packet::PubRel(_)]));
    h.broker.handle_closed(h.now, 1);
    h.drain();
    let handed = h.take(2);
    assert!(publishes(&handed).iter().all(|p| p.qos == QoS::ExactlyOnce));
    h.out.insert(2, handed);
    assert_eq!(b_receives(&mut h), names(1..5));
}

#[test]
fn a_parked_session_hands_over_only_when_it_expires() {
    let mut h = harness();
    five_to_a(&mut h, (V5, 60), QoS::AtLeastOnce);
    h.broker.handle_closed(h.now, 1);
    h.drain();
    // Parked: its messages wait for it.
    assert!(payloads(&h.take(2)).is_empty());
    h.advance(Duration::from_secs(59));
    assert!(payloads(&h.take(2)).is_empty());
    h.advance(Duration::from_secs(1));
    assert_eq!(b_receives(&mut h), names(0..5));
}

#[test]
fn a_parked_session_that_resumes_keeps_its_messages() {
    let mut h = harness();
    five_to_a(&mut h, (V5, 60), QoS::AtLeastOnce);
    h.broker.handle_closed(h.now, 1);
    h.drain();
    h.connect(4, V5, "a", false, Some(60));
    let out = h.take(4);
    assert_eq!(payloads(&out), names(0..2));
    assert!(
        publishes(&out).iter().all(|p| p.dup),
        "in flight: sent again"
    );
    ack_all(&mut h, 4, &out);
    assert_eq!(receive_all(&mut h, 4, None), names(2..5));
    assert!(payloads(&h.take(2)).is_empty(), "nothing handed over");
}

#[test]
fn takeover_with_clean_start_hands_over() {
    let mut h = harness();
    five_to_a(&mut h, (V5, 60), QoS::AtLeastOnce);
    // A new connection for "a" starting clean ends the old session.
    h.connect(4, V5, "a", true, Some(60));
    assert!(payloads(&h.take(4)).is_empty());
    assert_eq!(b_receives(&mut h), names(0..5));
}

#[test]
fn eviction_by_max_parked_sessions_hands_over() {
    let mut h = Harness::new(BrokerConfig {
        max_inflight: 2,
        max_parked_sessions: 1,
        ..BrokerConfig::default()
    });
    five_to_a(&mut h, (V5, 600), QoS::AtLeastOnce);
    h.broker.handle_closed(h.now, 1);
    h.drain();
    assert!(payloads(&h.take(2)).is_empty(), "a parked, not ended");
    // A second parked session pushes out the oldest, a's.
    h.connect(5, V5, "other", true, Some(600));
    h.broker.handle_closed(h.now, 5);
    h.drain();
    assert_eq!(h.broker.stats().sessions_evicted, 1);
    assert_eq!(b_receives(&mut h), names(0..5));
}

#[test]
fn persistent_client_expiration_hands_over_a_v311_session() {
    let mut h = Harness::new(BrokerConfig {
        max_inflight: 2,
        persistent_client_expiration: 30,
        ..BrokerConfig::default()
    });
    five_to_a(&mut h, (V3, 1), QoS::AtLeastOnce);
    h.broker.handle_closed(h.now, 1);
    h.drain();
    assert!(payloads(&h.take(2)).is_empty());
    h.advance(Duration::from_secs(30));
    assert_eq!(b_receives(&mut h), names(0..5));
}

#[test]
fn unsubscribe_hands_on_the_queued_and_keeps_the_in_flight() {
    let mut h = harness();
    five_to_a(&mut h, (V5, 0), QoS::AtLeastOnce);
    leave_group(&mut h, 1);
    // The three queued go to b; the two in flight stay with a
    // (MQTT-3.10.4-3).
    assert_eq!(b_receives(&mut h), names(2..5));
    // a acknowledges one of the two; then its session ends: the other goes
    // to b.
    h.packet(1, Packet::PubAck(PubAck::new(1, None)));
    assert!(payloads(&h.take(1)).is_empty(), "nothing more for a");
    h.broker.handle_closed(h.now, 1);
    h.drain();
    assert_eq!(b_receives(&mut h), names(1..2));
}

#[test]
fn unsubscribe_keeps_what_a_plain_subscription_also_brought() {
    let mut h = harness();
    join(&mut h, 1, V5, "a", 0);
    h.subscribe(1, filter(GROUP, QoS::AtLeastOnce), None);
    h.subscribe(1, filter("jobs/#", QoS::AtLeastOnce), None);
    join(&mut h, 3, V5, "pub", 0);
    publish_many(&mut h, 3, QoS::AtLeastOnce, 3);
    let in_flight = h.take(1);
    assert_eq!(payloads(&in_flight), names(0..2));
    join(&mut h, 2, V5, "b", 0);
    h.subscribe(2, filter(GROUP, QoS::AtLeastOnce), Some(7));
    leave_group(&mut h, 1);
    // The group's copy of the queued message goes to b; a keeps its own
    // (5.0 section 4.8.2: one copy by the plain subscription, one by the
    // group).
    assert_eq!(b_receives(&mut h), names(2..3));
    ack_all(&mut h, 1, &in_flight);
    assert_eq!(receive_all(&mut h, 1, None), names(2..3));
}

#[test]
fn new_member_gets_its_own_qos_and_retain_as_published() {
    let mut h = harness();
    join(&mut h, 1, V5, "a", 0);
    h.subscribe(1, filter(GROUP, QoS::ExactlyOnce), None);
    join(&mut h, 3, V5, "pub", 0);
    let mut p = Publish::new("jobs/x", QoS::ExactlyOnce, Bytes::from("kept"), None);
    p.retain = true;
    p.pkid = 1;
    h.packet(3, Packet::Publish(p));
    let first = h.take(1);
    assert_eq!(payloads(&first), ["kept"]);
    assert!(
        !publishes(&first)[0].retain,
        "RETAIN 0 to a live subscription"
    );
    join(&mut h, 2, V5, "b", 0);
    let mut f = filter(GROUP, QoS::AtLeastOnce);
    f.preserve_retain = true;
    h.subscribe(2, f, Some(9));
    h.broker.handle_closed(h.now, 1);
    h.drain();
    let out = h.take(2);
    let got = publishes(&out);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::AtLeastOnce, "b's granted QoS");
    assert!(got[0].retain, "b asked for Retain As Published");
    assert!(!got[0].dup);
    let ids = got[0]
        .properties
        .as_ref()
        .map(|p| p.subscription_identifiers.clone());
    assert_eq!(ids, Some(vec![9]));
}

#[test]
fn a_v311_member_hands_a_v5_member_the_whole_message() {
    // A 3.1.1 client never sees properties; the member after it does.
    let mut h = harness();
    join(&mut h, 1, V3, "a", 0);
    h.subscribe(1, filter(GROUP, QoS::AtLeastOnce), None);
    join(&mut h, 3, V5, "pub", 0);
    let props = PublishProperties {
        content_type: Some("text/plain".into()),
        ..PublishProperties::default()
    };
    let mut p = Publish::new("jobs/x", QoS::AtLeastOnce, Bytes::from("m"), Some(props));
    p.pkid = 1;
    h.packet(3, Packet::Publish(p));
    assert!(publishes(&h.take(1))[0].properties.is_none());
    join(&mut h, 2, V5, "b", 0);
    h.subscribe(2, filter(GROUP, QoS::AtLeastOnce), None);
    h.broker.handle_closed(h.now, 1);
    h.drain();
    let out = h.take(2);
    let content_type = publishes(&out)
        .first()
        .and_then(|p| p.properties.as_ref())
        .and_then(|p| p.content_type.clone());
    assert_eq!(content_type.as_deref(), Some("text/plain"));
}

#[test]
fn a_message_moves_on_again_when_the_next_member_goes_too() {
    let mut h = harness();
    five_to_a(&mut h, (V5, 0), QoS::AtLeastOnce);
    join(&mut h, 4, V5, "c", 0);
    h.subscribe(4, filter(GROUP, QoS::AtLeastOnce), None);
    h.broker.handle_closed(h.now, 1);
    h.drain();
    // Connected members take turns: b and c share a's five.
    let b = payloads(&h.take(2));
    assert!(!b.is_empty());
    // b leaves without acknowledging anything: c ends up with all five.
    h.broker.handle_closed(h.now, 2);
    h.drain();
    let mut got = receive_all(&mut h, 4, None);
    got.sort();
    assert_eq!(got, names(0..5));
    assert_eq!(h.broker.stats().dropped_no_shared_member, 0);
}

#[test]
fn with_no_member_left_the_messages_are_dropped_and_counted() {
    let mut h = harness();
    join(&mut h, 1, V5, "a", 0);
    h.subscribe(1, filter(GROUP, QoS::AtLeastOnce), None);
    join(&mut h, 3, V5, "pub", 0);
    publish_many(&mut h, 3, QoS::AtLeastOnce, 5);
    // A QoS 0 message queued behind them promised nothing: not counted.
    publish_many(&mut h, 3, QoS::AtMostOnce, 1);
    assert_eq!(
        h.broker
            .sessions
            .values()
            .map(|s| s.queue.len())
            .sum::<usize>(),
        4
    );
    h.broker.handle_closed(h.now, 1);
    h.drain();
    assert_eq!(h.broker.stats().dropped_no_shared_member, 5);
}

#[test]
fn unsubscribe_with_no_member_left_drops_and_counts() {
    let mut h = harness();
    join(&mut h, 1, V5, "a", 0);
    h.subscribe(1, filter(GROUP, QoS::AtLeastOnce), None);
    join(&mut h, 3, V5, "pub", 0);
    publish_many(&mut h, 3, QoS::AtLeastOnce, 5);
    assert_eq!(payloads(&h.take(1)), names(0..2));
    leave_group(&mut h, 1);
    assert_eq!(h.broker.stats().dropped_no_shared_member, 3);
    // The queued ones are gone from a's session; the two in flight stay.
    let a = h.broker.sessions.values().find(|s| s.client_id == "a");
    assert!(a.is_some_and(|s| s.queue.is_empty() && s.inflight.len() == 2));
}

#[test]
fn unsubscribe_keeps_a_retained_delivery_in_its_place() {
    // MQTT-4.6.0-5 (5.0): a topic's retained message comes before what was
    // published on it later, also when queued messages before it leave.
    let mut h = harness();
    join(&mut h, 3, V5, "pub", 0);
    let mut old = Publish::new("r/x", QoS::AtLeastOnce, Bytes::from("old"), None);
    old.retain = true;
    old.pkid = 100;
    h.packet(3, Packet::Publish(old));
    join(&mut h, 1, V5, "a", 0);
    h.subscribe(1, filter(GROUP, QoS::AtLeastOnce), None);
    publish_many(&mut h, 3, QoS::AtLeastOnce, 5);
    let in_flight = h.take(1);
    assert_eq!(payloads(&in_flight), names(0..2));
    // The window is full: the retained message waits behind m2..m4, and
    // a later live one behind it.
    h.subscribe(1, filter("r/#", QoS::AtLeastOnce), None);
    let mut new = Publish::new("r/x", QoS::AtLeastOnce, Bytes::from("new"), None);
    new.pkid = 101;
    h.packet(3, Packet::Publish(new));
    join(&mut h, 2, V5, "b", 0);
    h.subscribe(2, filter(GROUP, QoS::AtLeastOnce), Some(7));
    leave_group(&mut h, 1);
    assert_eq!(b_receives(&mut h), names(2..5));
    ack_all(&mut h, 1, &in_flight);
    assert_eq!(receive_all(&mut h, 1, None), ["old", "new"]);
}

#[test]
fn a_message_the_client_refused_is_not_handed_over_mqtt_4_8_2_6() {
    // MQTT-4.8.2-6: PUBACK or PUBREC with a reason of 0x80 or more: the
    // message is discarded, not sent to any other subscriber.
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let mut h = harness();
        five_to_a(&mut h, (V5, 0), qos);
        let refusal = if qos == QoS::AtLeastOnce {
            let mut ack = PubAck::new(1, None);
            ack.reason = PubAckReason::UnspecifiedError;
            Packet::PubAck(ack)
        } else {
            let mut rec = PubRec::new(1, None);
            rec.reason = PubRecReason::UnspecifiedError;
            Packet::PubRec(rec)
        };
        h.packet(1, refusal);
        // m0 is done, no PUBREL (5.0 section 4.3.3); m2 takes its slot.
        let out = h.take(1);
        assert!(!out.iter().any(|p| matches!(p, Packet::PubRel(_))));
        assert_eq!(payloads(&out), names(2..3), "{qos:?}");
        h.broker.handle_closed(h.now, 1);
        h.drain();
        assert_eq!(b_receives(&mut h), names(1..5), "{qos:?}");
    }
}
