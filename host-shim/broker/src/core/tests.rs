//! The core driven without sockets: packets in, actions out, time moved by
//! hand. Each test names the statements of the specification it checks.

use super::publish::qos_from;
use super::retained::PACED_WINDOW;
use super::*;
use crate::retained::{DiskStore, RetainedPage, RetainedStoreError};
use crate::session::SessionStore;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, Connect, ConnectProperties, ConnectReturnCode, Filter, LastWill, LastWillProperties,
    PubAck, PubComp, PubRec, PubRel, Publish, PublishProperties, RetainForwardRule, Subscribe,
    SubscribeProperties, SubscribeReasonCode, Unsubscribe,
};
use rumqttc::v5::mqttbytes::QoS;

mod shared;

/// A broker with a virtual clock and the actions it produced, per
/// connection; with disk storage, the store's file, written the way the
/// shell writes it.
struct Harness {
    broker: Broker,
    now: Instant,
    out: HashMap<ConnId, Vec<Packet>>,
    closed: Vec<ConnId>,
    disk: Option<DiskStore>,
    /// With disk session storage, the session store's file.
    sessions: Option<SessionStore>,
    /// Paced messages are not reported written until [`Harness::write_held`].
    hold_paced: bool,
    /// Paced messages sent and not reported written, per connection.
    unwritten: HashMap<ConnId, usize>,
}

impl Harness {
    fn new(config: BrokerConfig) -> Self {
        let now = Instant::now();
        // The harness's clients ask for no keep alive while the clock jumps
        // by hours; `max_keep_alive` is tested from outside, in real time.
        let config = BrokerConfig {
            max_keep_alive: 0,
            ..config
        };
        Harness {
            broker: Broker::new(config, Vec::new(), now, SystemTime::now()),
            now,
            out: HashMap::new(),
            closed: Vec::new(),
            disk: None,
            sessions: None,
            hold_paced: false,
            unwritten: HashMap::new(),
        }
    }

    /// Writes the retained and session changes to disk, as the shell does
    /// before it carries out any action.
    fn commit(&mut self) -> Result<(), RetainedStoreError> {
        let sessions = self.broker.poll_session_writes();
        if let Some(store) = self.sessions.as_mut() {
            if let Some(writes) = sessions {
                store.stage(writes);
            }
            store.commit().expect("session changes written to disk");
        }
        let writes = self.broker.poll_retained_writes();
        let Some(disk) = self.disk.as_mut() else {
            return Ok(());
        };
        if let Some(writes) = writes {
            disk.stage(writes);
        }
        disk.commit()
    }

    /// Carries out the actions, writing paced messages at once (and
    /// reporting them written, which may send more) unless `hold_paced`.
    fn drain(&mut self) {
        loop {
            self.commit().expect("retained changes written to disk");
            let mut written: HashMap<ConnId, usize> = HashMap::new();
            while let Some(action) = self.broker.poll_action() {
                match action {
                    Action::Send(conn, packet) => self.out.entry(conn).or_default().push(packet),
                    Action::SendPaced(conn, packet) => {
                        self.out.entry(conn).or_default().push(packet);
                        *written.entry(conn).or_default() += 1;
                    }
                    Action::Close(conn) => self.closed.push(conn),
                }
            }
            if self.hold_paced {
                for (conn, count) in written {
                    *self.unwritten.entry(conn).or_default() += count;
                }
                return;
            }
            if written.is_empty() {
                return;
            }
            for (conn, count) in written {
                self.broker.handle_written(self.now, conn, count);
            }
        }
    }

    /// Reports the paced messages held back for `conn` as written.
    fn write_held(&mut self, conn: ConnId) {
        let count = self.unwritten.remove(&conn).unwrap_or(0);
        self.broker.handle_written(self.now, conn, count);
        self.drain();
    }

    /// Takes what was sent to `conn` so far.
    fn take(&mut self, conn: ConnId) -> Vec<Packet> {
        self.out.remove(&conn).unwrap_or_default()
    }

    fn connect_with(
        &mut self,
        conn: ConnId,
        version: MqttVersion,
        connect: Connect,
        will: Option<LastWill>,
    ) -> ConnAck {
        self.broker.handle_frame(
            self.now,
            conn,
            Frame::Connect {
                version,
                connect,
                will,
                login: None,
            },
        );
        self.drain();
        let out = self.take(conn);
        let ack = match out.first() {
            Some(Packet::ConnAck(ack)) => ack.clone(),
            other => panic!("expected CONNACK, got {other:?}"),
        };
        // Put back what followed the CONNACK (a resumed session's messages).
        if out.len() > 1 {
            self.out.insert(conn, out[1..].to_vec());
        }
        ack
    }

    fn connect(
        &mut self,
        conn: ConnId,
        version: MqttVersion,
        client_id: &str,
        clean: bool,
        expiry: Option<u32>,
    ) -> ConnAck {
        let mut props = ConnectProperties::new();
        props.session_expiry_interval = expiry;
        let connect = Connect {
            keep_alive: 0,
            client_id: client_id.into(),
            clean_start: clean,
            properties: (version == MqttVersion::V5).then_some(props),
        };
        self.connect_with(conn, version, connect, None)
    }

    fn packet(&mut self, conn: ConnId, packet: Packet) {
        self.broker
            .handle_frame(self.now, conn, Frame::Packet(packet));
        self.drain();
    }

    fn subscribe(
        &mut self,
        conn: ConnId,
        filter: Filter,
        id: Option<usize>,
    ) -> Vec<SubscribeReasonCode> {
        let properties = id.map(|id| SubscribeProperties {
            id: Some(id),
            user_properties: vec![],
        });
        self.packet(
            conn,
            Packet::Subscribe(Subscribe {
                pkid: 1,
                filters: vec![filter],
                properties,
            }),
        );
        let out = self.take(conn);
        let codes = match out.first() {
            Some(Packet::SubAck(ack)) => ack.return_codes.clone(),
            other => panic!("expected SUBACK, got {other:?}"),
        };
        // Put back what followed the SUBACK (retained messages).
        if out.len() > 1 {
            self.out.insert(conn, out[1..].to_vec());
        }
        codes
    }

    fn publish(
        &mut self,
        conn: ConnId,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: &'static [u8],
        pkid: u16,
    ) {
        let mut p = Publish::new(topic, qos, Bytes::from_static(payload), None);
        p.retain = retain;
        p.pkid = pkid;
        self.packet(conn, Packet::Publish(p));
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        while let Some(due) = self.broker.poll_timeout() {
            if due > self.now {
                break;
            }
            self.broker.handle_timeout(self.now);
        }
        self.drain();
    }
}

fn filter(path: &str, qos: QoS) -> Filter {
    Filter::new(path, qos)
}

fn publishes(packets: &[Packet]) -> Vec<&Publish> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .collect()
}

const V5: MqttVersion = MqttVersion::V5;
const V3: MqttVersion = MqttVersion::V311;

#[test]
fn connack_announces_capabilities_and_assigns_an_id() {
    // MQTT-3.1.3-6 (5.0): an empty client id gets an assigned identifier.
    let mut h = Harness::new(BrokerConfig::default());
    let ack = h.connect(1, V5, "", true, None);
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let props = ack.properties.expect("5.0 CONNACK carries properties");
    assert!(props.assigned_client_identifier.is_some());
    assert_eq!(props.receive_max, Some(1024));
}

#[test]
fn v311_empty_client_id_needs_clean_session() {
    // MQTT-3.1.3-8: empty id with CleanSession=0 is refused with 0x02.
    let mut h = Harness::new(BrokerConfig::default());
    let ack = h.connect(1, V3, "", false, None);
    assert_eq!(ack.code, ConnectReturnCode::ClientIdentifierNotValid);
    assert_eq!(h.closed, vec![1]);
    // MQTT-3.1.3-7: with CleanSession=1 it is accepted.
    let ack = h.connect(2, V3, "", true, None);
    assert_eq!(ack.code, ConnectReturnCode::Success);
}

#[test]
fn delivered_qos_is_the_minimum_of_published_and_granted() {
    // MQTT-3.8.4-6 (3.1.1) / MQTT-3.8.4-8 (5.0).
    let mut h = Harness::new(BrokerConfig::default());
    h.connect(1, V5, "sub", true, None);
    h.connect(2, V5, "pub", true, None);
    h.subscribe(1, filter("a/b", QoS::AtLeastOnce), None);
    h.publish(2, "a/b", QoS::ExactlyOnce, false, b"x", 9);
    let out = h.take(1);
    let got = publishes(&out);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
    assert!(!got[0].retain);
    assert!(matches!(h.take(2).as_slice(), [Packet::PubRec(r)] if r.pkid == 9));
}

#[test]
fn qos2_inbound_is_routed_once_even_when_resent() {
    // MQTT-4.3.3-10 (5.0) / MQTT-4.3.3-2 (3.1.1): method A, no duplicate
    // delivery before PUBREL.
    let mut h = Harness::new(BrokerConfig::default());
    h.connect(1, V3, "sub", true, None);
    h.connect(2, V3, "pub", true, None);
    h.subscribe(1, filter("t", QoS::ExactlyOnce), None);
    h.publish(2, "t", QoS::ExactlyOnce, false, b"once", 5);
    h.publish(2, "t", QoS::ExactlyOnce, false, b"once", 5);
    assert_eq!(publishes(&h.take(1)).len(), 1);
    h.packet(2, Packet::PubRel(PubRel::new(5, None)));
    let acks = h.take(2);
    assert!(matches!(acks.last(), Some(Packet::PubComp(c)) if c.pkid == 5));
    // After PUBREL the identifier is free again and a new message routes.
    h.publish(2, "t", QoS::ExactlyOnce, false, b"again", 5);
    assert_eq!(publishes(&h.take(1)).len(), 1);
}

#[test]
fn overlapping_subscriptions_get_one_copy_at_the_highest_qos() {
    // MQTT-3.3.5-1 (3.1.1); MQTT-3.3.4-3 (5.0): all subscription ids.
    let mut h = Harness::new(BrokerConfig::default());
    h.connect(1, V5, "sub", true, None);
    h.connect(2, V5, "pub", true, None);
    h.subscribe(1, filter("a/+", QoS::AtLeastOnce), Some(1));
    h.subscribe(1, filter("a/#", QoS::ExactlyOnce), Some(2));
    h.publish(2, "a/b", QoS::ExactlyOnce, false, b"x", 1);
    let out = h.take(1);
    let got = publishes(&out);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::ExactlyOnce);
    let mut ids = got[0]
        .properties
        .as_ref()
        .unwrap()
        .subscription_identifiers
        .clone();
    ids.sort();
    assert_eq!(ids, vec![1, 2]);
}

#[test]
fn retained_flags_on_new_and_existing_subscriptions() {
    let mut h = Harness::new(BrokerConfig::default());
    h.connect(1, V5, "pub", true, None);
    h.connect(2, V5, "old", true, None);
    h.connect(3, V5, "rap", true, None);
    h.subscribe(2, filter("r", QoS::AtLeastOnce), None);
    let mut rap = filter("r", QoS::AtLeastOnce);
    rap.preserve_retain = true;
    h.subscribe(3, rap, None);
    h.publish(1, "r", QoS::AtLeastOnce, true, b"v1", 1);
    // MQTT-3.3.1-12: Retain As Published 0 clears RETAIN on live delivery.
    assert!(!publishes(&h.take(2))[0].retain);
    // MQTT-3.3.1-13: Retain As Published 1 keeps it.
    assert!(publishes(&h.take(3))[0].retain);
    // MQTT-3.3.1-9 (5.0) / MQTT-3.3.1-8 (3.1.1): RETAIN 1 for a new subscription.
    h.connect(4, V3, "new", true, None);
    h.subscribe(4, filter("#", QoS::ExactlyOnce), None);
    let out = h.take(4);
    let got = publishes(&out);
    assert_eq!(got.len(), 1);
    assert!(got[0].retain);
    // Never upgraded: stored at QoS 1, granted 2, delivered at 1.
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
}

#[test]
fn empty_payload_deletes_retained_only_when_retain_is_set() {
    // MQTT-3.3.1-10/-11 (3.1.1), MQTT-3.3.1-6/-7 (5.0).
    let mut h = Harness::new(BrokerConfig::default());
    h.connect(1, V3, "pub", true, None);
    h.publish(1, "k", QoS::AtMostOnce, true, b"v", 0);
    h.publish(1, "k", QoS::AtMostOnce, false, b"", 0);
    assert_eq!(
        h.broker.retained_count(h.now),
        1,
        "RETAIN=0 with empty payload keeps it"
    );
    h.publish(1, "k", QoS::AtMostOnce, true, b"", 0);
    assert_eq!(h.broker.retained_count(h.now), 0);
}

#[test]
fn retain_handling_options() {
    // MQTT-3.3.1-9/-10/-11 (5.0).
    let mut h = Harness::new(BrokerConfig::default());
    h.connect(1, V5, "pub", true, None);
    h.publish(1, "x", QoS::AtMostOnce, true, b"v", 0);
    h.connect(2, V5, "sub", true, None);
    let mut f = filter("x", QoS::AtMostOnce);
    f.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
    h.subscribe(2, f.clone(), None);
    assert_eq!(
        publishes(&h.take(2)).len(),
        1,
        "handling 1, new subscription"
    );
    h.subscribe(2, f, None);
    assert_eq!(
        publishes(&h.take(2)).len(),
        0,
        "handling 1, existing subscription"
    );
    h.subscribe(2, filter("x", QoS::AtMostOnce), None);
    assert_eq!(
        publishes(&h.take(2)).len(),
        1,
        "handling 0 re-sends on re-subscribe"
    );
    let mut never = filter("x", QoS::AtMostOnce);
    never.retain_forward_rule = RetainForwardRule::Never;
    h.subscribe(2, never, None);
    assert_eq!(publishes(&h.take(2)).len(), 0, "handling 2");
}

#[test]
fn retained_delivery_respects_the_window_and_never_truncates() {
    // 25 retained messages, a window of 10: all arrive as slots free.
    let config = BrokerConfig {
        max_inflight: 10,
        ..BrokerConfig::default()
    };
    let mut h = Harness::new(config);
    h.connect(1, V3, "pub", true, None);
    for i in 0..25u16 {
        let topic: &'static str = Box::leak(format!("bulk/{i}").into_boxed_str());
        h.publish(1, topic, QoS::AtLeastOnce, true, b"v", i + 1);
    }
    h.connect(2, V3, "sub", true, None);
    h.subscribe(2, filter("bulk/#", QoS::AtLeastOnce), None);
    let mut seen = std::collections::HashSet::new();
    loop {
        let out = h.take(2);
        let got: Vec<(u16, String)> = publishes(&out)
            .iter()
            .map(|p| (p.pkid, String::from_utf8(p.topic.to_vec()).unwrap()))
            .collect();
        if got.is_empty() {
            break;
        }
        assert!(got.len() <= 10, "window exceeded: {}", got.len());
        for (pkid, topic) in got {
            assert!(seen.insert(topic), "delivered twice");
            h.packet(2, Packet::PubAck(PubAck::new(pkid, None)));
        }
    }
    assert_eq!(seen.len(), 25);
}

#[test]
fn no_retained_messages_for_shared_subscriptions() {
    // 5.0 section 4.8.2: retained messages are not sent to shared subscriptions.
    let mut h = Harness::new(BrokerConfig::default());
    h.connect(1, V5, "pub", true, None);
    h.publish(1, "s", QoS::AtMostOnce, true, b"v", 0);
    h.connect(2, V5, "sub", true, None);
    h.subscribe(2, filter("$share/g/s", QoS::AtMostOnce), None);
    assert!(publishes(&h.take(2)).is_empty());
}

#[test]
fn persistent_session_resends_in_flight_with_dup_and_queues_while_offline() {
    // MQTT-4.4.0-1, MQTT-3.3.1-1; MQTT-3.1.2-4/-5 (3.1.1 session present).
    let mut h = Harness::new(BrokerConfig::default());
    h.connect(1, V3, "sub", false, None);
    h.subscribe(1, filter("q", QoS::AtLeastOnce), None);
    h.connect(2, V3, "pub", true, None);
    h.publish(2, "q", QoS::AtLeastOnce, false, b"first", 1);
    let first = publishes(&h.take(1))[0].clone();
    assert!(!first.dup);
    h.broker.handle_closed(h.now, 1);
    h.publish(2, "q", QoS::AtLeastOnce, false, b"second", 2);
    let ack = h.connect(3, V3, "sub", false, None);
    assert!(ack.session_present);
    h.drain();
    let out = h.take(3);
    let got = publishes(&out);
    assert_eq!(got.len(), 2);
    assert!(got[0].dup && got[0].pkid == first.pkid && &got[0].payload[..] == b"first");
    assert!(!got[1].dup && &got[1].payload[..] == b"second");
}

#[test]
fn keep_alive_timeout_closes_and_publishes_the_will() {
    // MQTT-3.1.2-24 (3.1.1) / MQTT-3.1.2-22 (5.0): 1.5 x keep alive.
    let mut h = Harness::new(BrokerConfig::default());
    h.connect(1, V5, "watch", true, None);
    h.subscribe(1, filter("will", QoS::AtMostOnce), None);
    let connect = Connect {
        keep_alive: 2,
        client_id: "dev".into(),
        clean_start: true,
        properties: None,
    };
    let will = LastWill::new("will", "gone", QoS::AtMostOnce, false, None);
    h.connect_with(2, V5, connect, Some(will));
    h.advance(Duration::from_millis(2900));
    assert!(h.closed.is_empty());
    h.advance(Duration::from_millis(200));
    assert_eq!(h.closed, vec![2]);
    assert!(
        matches!(h.take(2).as_slice(), [Packet::Disconnect(d)] if d.reason_code == DisconnectReasonCode::KeepAliveTimeout)
    );
    assert_eq!(publishes(&h.take(1)).len(), 1);
}

#[test]
fn will_delay_is_cancelled_by_a_reconnect_in_time() {
    // MQTT-3.1.3-9 (5.0).
    let mut h = Harness::new(BrokerConfig::default());
    h.connect(1, V5, "watch", true, None);
    h.subscribe(1, filter("will", QoS::AtMostOnce), None);
    let mut props = ConnectProperties::new();
    props.session_expiry_interval = Some(60);
    let connect = Connect {
        keep_alive: 0,
        client_id: "dev".into(),
        clean_start: true,
        properties: Some(props),
    };
    let will_props = LastWillProperties {
        delay_interval: Some(5),
        ..will_properties()
    };
    let will = LastWill::new("will", "gone", QoS::AtMostOnce, false, Some(will_props));
    h.connect_with(2, V5, connect.clone(), Some(will.clone()));
    h.broker.handle_closed(h.now, 2);
    h.advance(Duration::from_secs(3));
    assert!(publishes(&h.take(1)).is_empty());
    h.connect(3, V5, "dev", false, Some(60));
    h.advance(Duration::from_secs(10));
    assert!(
        publishes(&h.take(1)).is_empty(),
        "reconnect cancelled the will"
    );
    // Without a reconnect it is sent once the delay passed.
    h.broker.handle_closed(h.now, 3);
    let connect = Connect {
        clean_start: false,
        ..connect
    };
    h.connect_with(4, V5, connect, Some(will));
    h.broker.handle_closed(h.now, 4);
    h.advance(Duration::from_secs(4));
    assert!(publishes(&h.take(1)).is_empty());
    h.advance(Duration::from_secs(2));
    assert_eq!(publishes(&h.take(1)).len(), 1);
}

fn will_properties() -> LastWillProperties {
    LastWillProperties {
        delay_interval: None,
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: vec![],
    }
}

#[test]
fn normal_disconnect_discards_the_will_but_0x04_sends_it() {
    // MQTT-3.1.2-10 (3.1.1), MQTT-3.14.4-3 (5.0).
    let mut h = Harness::new(BrokerConfig::default());
    h.connect(1, V5, "watch", true, None);
    h.subscribe(1, filter("will", QoS::AtMostOnce), None);
    for (conn, reason, expected) in [
        (2, DisconnectReasonCode::NormalDisconnection, 0),
        (3, DisconnectReasonCode::DisconnectWithWillMessage, 1),
    ] {
        let connect = Connect {
            keep_alive: 0,
            client_id: "dev".into(),
            clean_start: true,
            properties: None,
        };
        let will = LastWill::new("will", "gone", QoS::AtMostOnce, false, None);
        h.connect_with(conn, V5, connect, Some(will));
        h.packet(conn, Packet::Disconnect(Disconnect::new(reason)));
        assert_eq!(publishes(&h.take(1)).len(), expected, "{reason:?}");
    }
}

#[test]
fn receive_maximum_exceeded_disconnects_with_0x93() {
    // MQTT-3.3.4-9 (5.0).
    let config = BrokerConfig {
        receive_maximum: 2,
        ..BrokerConfig::default()
    };
    let mut h = Harness::new(config);
    h.connect(1, V5, "pub", true, None);
    h.publish(1, "t", QoS::ExactlyOnce, false, b"1", 1);
    h.publish(1, "t", QoS::ExactlyOnce, false, b"2", 2);
    assert!(h.closed.is_empty());
    h.publish(1, "t", QoS::ExactlyOnce, false, b"3", 3);
    assert_eq!(h.closed, vec![1]);
    let out = h.take(1);
    assert!(
        matches!(out.last(), Some(Packet::Disconnect(d)) if d.reason_code == DisconnectReasonCode::ReceiveMaximumExceeded)
    );
}

#[test]
fn session_takeover_disconnects_the_first_connection() {
    // MQTT-3.1.4-2 (3.1.1), MQTT-3.1.4-3 (5.0): reason 0x8E.
    let mut h = Harness::new(BrokerConfig::default());
    h.connect(1, V5, "same", true, None);
    h.connect(2, V5, "same", true, None);
    assert_eq!(h.closed, vec![1]);
    assert!(
        matches!(h.take(1).as_slice(), [Packet::Disconnect(d)] if d.reason_code == DisconnectReasonCode::SessionTakenOver)
    );
}

#[test]
fn expired_messages_are_not_delivered_and_the_interval_counts_down() {
    // MQTT-3.3.2-5 / MQTT-3.3.2-6 (5.0).
    let mut h = Harness::new(BrokerConfig::default());
    h.connect(1, V5, "pub", true, None);
    let props = PublishProperties {
        message_expiry_interval: Some(10),
        ..PublishProperties::default()
    };
    let mut p = Publish::new("e", QoS::AtMostOnce, Bytes::from_static(b"v"), Some(props));
    p.retain = true;
    h.packet(1, Packet::Publish(p));
    h.advance(Duration::from_secs(4));
    h.connect(2, V5, "sub", true, None);
    h.subscribe(2, filter("e", QoS::AtMostOnce), None);
    let out = h.take(2);
    let got = publishes(&out);
    assert_eq!(
        got[0].properties.as_ref().unwrap().message_expiry_interval,
        Some(6)
    );
    h.advance(Duration::from_secs(7));
    h.subscribe(2, filter("e", QoS::AtMostOnce), None);
    assert!(publishes(&h.take(2)).is_empty());
}

#[test]
fn invalid_topic_and_filter() {
    let mut h = Harness::new(BrokerConfig::default());
    h.connect(1, V5, "c", true, None);
    // MQTT-3.8.3-? / 4.7.1: invalid filter gets 0x8F in the SUBACK.
    let codes = h.subscribe(1, filter("a/#/b", QoS::AtMostOnce), None);
    assert_eq!(codes, vec![SubscribeReasonCode::TopicFilterInvalid]);
    // MQTT-3.3.2-2: wildcards in a topic name close the connection (0x90).
    h.publish(1, "a/+", QoS::AtMostOnce, false, b"x", 0);
    assert_eq!(h.closed, vec![1]);
    assert!(
        matches!(h.take(1).last(), Some(Packet::Disconnect(d)) if d.reason_code == DisconnectReasonCode::TopicNameInvalid)
    );
}

mod properties {
    //! Arbitrary input for the state machine: it never panics, never sends
    //! to a connection it closed, and never exceeds a client's window.
    use super::*;
    use crate::codec::{DecodeError, Decoder};
    use bytes::BytesMut;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// One step a client or the clock can take.
    #[derive(Debug, Clone)]
    enum Step {
        Connect {
            conn: u8,
            client: u8,
            v5: bool,
            clean: bool,
            expiry: u32,
            receive_max: u16,
        },
        Publish {
            conn: u8,
            topic: u8,
            qos: u8,
            retain: bool,
            pkid: u16,
            empty: bool,
        },
        Subscribe {
            conn: u8,
            filter: u8,
            qos: u8,
            handling: u8,
        },
        Unsubscribe {
            conn: u8,
            filter: u8,
        },
        Ack {
            conn: u8,
            pkid: u16,
            kind: u8,
        },
        Disconnect {
            conn: u8,
            with_will: bool,
        },
        Close {
            conn: u8,
        },
        Garbage {
            conn: u8,
            bytes: Vec<u8>,
        },
        Advance {
            secs: u8,
        },
    }

    const TOPICS: [&str; 5] = ["a", "a/b", "a/b/c", "$sys/x", "b"];
    const FILTERS: [&str; 7] = ["a", "a/+", "#", "a/#", "+/b/#", "$share/g/a/b", "$sys/#"];

    fn step() -> impl Strategy<Value = Step> {
        let conn = 0u8..4;
        prop_oneof![
            (
                conn.clone(),
                0u8..3,
                any::<bool>(),
                any::<bool>(),
                0u32..5,
                1u16..4
            )
                .prop_map(|(conn, client, v5, clean, expiry, receive_max)| {
                    Step::Connect {
                        conn,
                        client,
                        v5,
                        clean,
                        expiry,
                        receive_max,
                    }
                }),
            (
                conn.clone(),
                0u8..5,
                0u8..3,
                any::<bool>(),
                1u16..6,
                any::<bool>()
            )
                .prop_map(|(conn, topic, qos, retain, pkid, empty)| Step::Publish {
                    conn,
                    topic,
                    qos,
                    retain,
                    pkid,
                    empty
                }),
            (conn.clone(), 0u8..7, 0u8..3, 0u8..3).prop_map(|(conn, filter, qos, handling)| {
                Step::Subscribe {
                    conn,
                    filter,
                    qos,
                    handling,
                }
            }),
            (conn.clone(), 0u8..7).prop_map(|(conn, filter)| Step::Unsubscribe { conn, filter }),
            (conn.clone(), 1u16..8, 0u8..4).prop_map(|(conn, pkid, kind)| Step::Ack {
                conn,
                pkid,
                kind
            }),
            (conn.clone(), any::<bool>())
                .prop_map(|(conn, with_will)| Step::Disconnect { conn, with_will }),
            conn.clone().prop_map(|conn| Step::Close { conn }),
            (conn, proptest::collection::vec(any::<u8>(), 0..40))
                .prop_map(|(conn, bytes)| Step::Garbage { conn, bytes }),
            (0u8..4).prop_map(|secs| Step::Advance { secs }),
        ]
    }

    fn qos(n: u8) -> QoS {
        qos_from(n)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_steps_keep_the_invariants(steps in proptest::collection::vec(step(), 1..60)) {
            let config = BrokerConfig { max_inflight: 3, receive_maximum: 4, ..BrokerConfig::default() };
            let mut broker = Broker::new(config, Vec::new(), Instant::now(), SystemTime::now());
            let mut now = Instant::now();
            // Connections the core still considers open, by ConnId.
            let mut open: HashSet<ConnId> = HashSet::new();
            let mut closed: HashSet<ConnId> = HashSet::new();
            // Each numbered slot gets a fresh ConnId when it reconnects.
            let mut slot_conn: [ConnId; 4] = [1, 2, 3, 4];
            let mut next_conn: ConnId = 5;
            // Per connection: packet id -> awaiting PUBACK (1), PUBREC (2)
            // or PUBCOMP (3), as the client sees it.
            let mut in_flight: HashMap<ConnId, HashMap<u16, u8>> = HashMap::new();
            let mut windows: HashMap<ConnId, usize> = HashMap::new();

            for step in steps {
                match step {
                    Step::Connect { conn, client, v5, clean, expiry, receive_max } => {
                        let id = next_conn;
                        next_conn += 1;
                        slot_conn[conn as usize] = id;
                        let version = if v5 { MqttVersion::V5 } else { MqttVersion::V311 };
                        let mut props = ConnectProperties::new();
                        props.session_expiry_interval = Some(expiry);
                        props.receive_maximum = Some(receive_max);
                        let connect = Connect {
                            keep_alive: 1,
                            client_id: format!("c{client}"),
                            clean_start: clean,
                            properties: v5.then_some(props),
                        };
                        let will = LastWill::new("a/b", "gone", QoS::AtLeastOnce, true, None);
                        broker.handle_frame(now, id, Frame::Connect { version, connect, will: Some(will), login: None });
                        open.insert(id);
                        windows.insert(id, if v5 { usize::from(receive_max).min(3) } else { 3 });
                    }
                    Step::Publish { conn, topic, qos: q, retain, pkid, empty } => {
                        let mut p = Publish::new(TOPICS[topic as usize], qos(q), if empty { Bytes::new() } else { Bytes::from_static(b"x") }, None);
                        p.retain = retain;
                        p.pkid = if q == 0 { 0 } else { pkid };
                        broker.handle_frame(now, slot_conn[conn as usize], Frame::Packet(Packet::Publish(p)));
                    }
                    Step::Subscribe { conn, filter, qos: q, handling } => {
                        let mut f = Filter::new(FILTERS[filter as usize], qos(q));
                        f.retain_forward_rule = match handling {
                            0 => RetainForwardRule::OnEverySubscribe,
                            1 => RetainForwardRule::OnNewSubscribe,
                            _ => RetainForwardRule::Never,
                        };
                        let s = Subscribe { pkid: 9, filters: vec![f], properties: None };
                        broker.handle_frame(now, slot_conn[conn as usize], Frame::Packet(Packet::Subscribe(s)));
                    }
                    Step::Unsubscribe { conn, filter } => {
                        let u = Unsubscribe { pkid: 9, filters: vec![FILTERS[filter as usize].to_owned()], properties: None };
                        broker.handle_frame(now, slot_conn[conn as usize], Frame::Packet(Packet::Unsubscribe(u)));
                    }
                    Step::Ack { conn, pkid, kind } => {
                        let flights = in_flight.entry(slot_conn[conn as usize]).or_default();
                        match (kind, flights.get(&pkid).copied()) {
                            (0, Some(1)) | (2, Some(3)) => {
                                flights.remove(&pkid);
                            }
                            (1, Some(2)) => {
                                flights.insert(pkid, 3);
                            }
                            _ => {}
                        }
                        let packet = match kind {
                            0 => Packet::PubAck(PubAck::new(pkid, None)),
                            1 => Packet::PubRec(PubRec::new(pkid, None)),
                            2 => Packet::PubComp(PubComp::new(pkid, None)),
                            _ => Packet::PubRel(PubRel::new(pkid, None)),
                        };
                        broker.handle_frame(now, slot_conn[conn as usize], Frame::Packet(packet));
                    }
                    Step::Disconnect { conn, with_will } => {
                        let reason = if with_will { DisconnectReasonCode::DisconnectWithWillMessage } else { DisconnectReasonCode::NormalDisconnection };
                        broker.handle_frame(now, slot_conn[conn as usize], Frame::Packet(Packet::Disconnect(Disconnect::new(reason))));
                    }
                    Step::Close { conn } => broker.handle_closed(now, slot_conn[conn as usize]),
                    Step::Garbage { conn, bytes } => {
                        // Bytes after a CONNECT go through the real decoder.
                        let id = slot_conn[conn as usize];
                        let mut decoder = Decoder::new(1024);
                        let mut buf = BytesMut::from(&[0x10u8, 0x0c, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 0][..]);
                        let _ = decoder.decode(&mut buf);
                        buf.extend_from_slice(&bytes);
                        loop {
                            match decoder.decode(&mut buf) {
                                Ok(Some(Frame::Packet(p))) => broker.handle_frame(now, id, Frame::Packet(p)),
                                Ok(Some(frame)) => broker.handle_frame(now, id, frame),
                                Ok(None) => break,
                                Err(DecodeError::Invalid { reason, .. }) => {
                                    broker.handle_malformed(now, id, reason);
                                    break;
                                }
                                Err(DecodeError::UnsupportedProtocol { .. }) => break,
                            }
                        }
                    }
                    Step::Advance { secs } => {
                        now += Duration::from_secs(u64::from(secs));
                        broker.handle_timeout(now);
                    }
                }
                while let Some(action) = broker.poll_action() {
                    match action {
                        Action::Send(conn, packet) => {
                            prop_assert!(!closed.contains(&conn), "sent {packet:?} to closed connection {conn}");
                            match packet {
                                Packet::Publish(p) if p.qos != QoS::AtMostOnce => {
                                    let flights = in_flight.entry(conn).or_default();
                                    let awaiting = if p.qos == QoS::AtLeastOnce { 1 } else { 2 };
                                    flights.insert(p.pkid, awaiting);
                                    if !p.dup {
                                        // MQTT-4.9.0-1 (5.0): never more than the
                                        // client's Receive Maximum in flight.
                                        let window = windows.get(&conn).copied().unwrap_or(3);
                                        prop_assert!(flights.len() <= window, "{} in flight, window {window}", flights.len());
                                    }
                                }
                                Packet::PubRel(r) => {
                                    in_flight.entry(conn).or_default().insert(r.pkid, 3);
                                }
                                _ => {}
                            }
                        }
                        Action::SendPaced(conn, packet) => {
                            prop_assert!(!closed.contains(&conn), "sent {packet:?} to closed connection {conn}");
                            prop_assert!(
                                matches!(&packet, Packet::Publish(p) if p.qos == QoS::AtMostOnce && p.retain),
                                "only QoS 0 retained messages are paced: {packet:?}"
                            );
                            // Written at once, as a socket with room would.
                            broker.handle_written(now, conn, 1);
                        }
                        Action::Close(conn) => {
                            open.remove(&conn);
                            closed.insert(conn);
                        }
                    }
                }
            }
        }
    }
}

mod sessions_on_disk;

/// Retainer options (`retain.*`), profiles, disk storage and management.
mod retainer {
    use super::*;
    use crate::config::{Profile, RetainStorage};
    use std::time::UNIX_EPOCH;

    /// A fixed wall-clock start, so `last_modified` is deterministic.
    const WALL: u64 = 1_700_000_000;

    fn harness(config: BrokerConfig) -> Harness {
        harness_at(
            config,
            Instant::now(),
            UNIX_EPOCH + Duration::from_secs(WALL),
        )
    }

    /// A harness at `now` (`wall` on the wall clock); with disk storage,
    /// with the store's file opened and its messages loaded, as the shell
    /// does at start.
    fn harness_at(config: BrokerConfig, now: Instant, wall: SystemTime) -> Harness {
        // As in `Harness::new`: clients without keep alive, a jumping clock.
        let config = BrokerConfig {
            max_keep_alive: 0,
            ..config
        };
        let (disk, loaded) = match &config.retain.storage {
            RetainStorage::Memory => (None, Vec::new()),
            RetainStorage::Disk(path) => {
                let (disk, loaded) = DiskStore::open(path).expect("store opens");
                (Some(disk), loaded)
            }
        };
        Harness {
            broker: Broker::new(config, loaded, now, wall),
            now,
            out: HashMap::new(),
            closed: Vec::new(),
            disk,
            sessions: None,
            hold_paced: false,
            unwritten: HashMap::new(),
        }
    }

    fn retain(edit: impl FnOnce(&mut crate::RetainConfig)) -> BrokerConfig {
        let mut config = BrokerConfig::default();
        edit(&mut config.retain);
        config
    }

    fn topic_of(p: &Publish) -> String {
        String::from_utf8(p.topic.to_vec()).unwrap()
    }

    /// Publishes a retained QoS 0 message with a static topic built at run time.
    fn put(h: &mut Harness, conn: ConnId, topic: &str, payload: &'static [u8]) {
        let mut p = Publish::new(topic, QoS::AtMostOnce, Bytes::from_static(payload), None);
        p.retain = true;
        h.packet(conn, Packet::Publish(p));
    }

    /// Topics of the retained messages `sub` gets for `filter`.
    fn retained_for(h: &mut Harness, conn: ConnId, filter_path: &str) -> Vec<String> {
        h.subscribe(conn, filter(filter_path, QoS::AtMostOnce), None);
        let out = h.take(conn);
        publishes(&out).iter().map(|p| topic_of(p)).collect()
    }

    /// Acknowledges every QoS 1 PUBLISH in `packets`; returns their topics.
    fn ack_all(h: &mut Harness, conn: ConnId, packets: &[Packet]) -> Vec<String> {
        let mut topics = Vec::new();
        for p in publishes(packets) {
            topics.push(topic_of(p));
            if p.qos == QoS::AtLeastOnce {
                h.packet(conn, Packet::PubAck(PubAck::new(p.pkid, None)));
            }
        }
        topics
    }

    #[test]
    fn disabled_retain_is_announced_and_refused_three_ways() {
        let mut h = harness(retain(|r| r.enabled = false));
        // 5.0 CONNACK Retain Available = 0 (MQTT-3.2.2-14 lets the client know).
        let ack = h.connect(1, V5, "v5", true, None);
        assert_eq!(ack.properties.unwrap().retain_available, Some(0));
        // 5.0 retained PUBLISH: DISCONNECT 0x9A (MQTT-3.2.2-14).
        h.publish(1, "t", QoS::AtMostOnce, true, b"x", 0);
        assert!(matches!(
            h.take(1).as_slice(),
            [Packet::Disconnect(d)] if d.reason_code == DisconnectReasonCode::RetainNotSupported
        ));
        assert_eq!(h.closed, vec![1]);
        // 3.1.1: no DISCONNECT to send, the connection is closed.
        h.connect(2, V3, "v3", true, None);
        h.publish(2, "t", QoS::AtMostOnce, true, b"x", 0);
        assert!(h.take(2).is_empty());
        assert_eq!(h.closed, vec![1, 2]);
        // A will with RETAIN: CONNACK 0x9A (MQTT-3.2.2-13).
        let connect = Connect {
            keep_alive: 0,
            client_id: "w".into(),
            clean_start: true,
            properties: Some(ConnectProperties::new()),
        };
        let will = LastWill::new("w", "gone", QoS::AtMostOnce, true, None);
        let ack = h.connect_with(3, V5, connect, Some(will));
        assert_eq!(ack.code, ConnectReturnCode::RetainNotSupported);
        assert_eq!(h.broker.retained_count(h.now), 0);
    }

    #[test]
    fn max_messages_refuses_new_topics_only() {
        let mut h = harness(retain(|r| r.max_messages = 2));
        h.connect(1, V5, "pub", true, None);
        h.connect(2, V5, "live", true, None);
        h.subscribe(2, filter("#", QoS::AtMostOnce), None);
        put(&mut h, 1, "a", b"1");
        put(&mut h, 1, "b", b"1");
        put(&mut h, 1, "c", b"1");
        // Refused, but still delivered to the live subscriber.
        assert_eq!(publishes(&h.take(2)).len(), 3);
        assert_eq!(h.broker.stats().retained_refused_full, 1);
        assert_eq!(h.broker.retained_count(h.now), 2);
        // A topic that has one can still replace or clear it.
        put(&mut h, 1, "a", b"2");
        assert_eq!(
            &h.broker.retained_get(h.now, "a").unwrap().payload[..],
            b"2"
        );
        put(&mut h, 1, "b", b"");
        put(&mut h, 1, "c", b"1");
        assert_eq!(h.broker.stats().retained_refused_full, 1);
        h.connect(3, V5, "new", true, None);
        assert_eq!(retained_for(&mut h, 3, "#"), ["a", "c"]);
    }

    #[test]
    fn max_messages_counts_expired_ones_only_until_they_go() {
        let mut h = harness(retain(|r| {
            r.max_messages = 1;
            r.default_expiry = 5;
            r.clean_interval = 0;
        }));
        h.connect(1, V5, "pub", true, None);
        put(&mut h, 1, "a", b"1");
        put(&mut h, 1, "b", b"1");
        assert_eq!(h.broker.stats().retained_refused_full, 1);
        h.advance(Duration::from_secs(5));
        put(&mut h, 1, "b", b"1");
        assert_eq!(
            h.broker.stats().retained_refused_full,
            1,
            "expired a made room"
        );
        assert!(h.broker.retained_get(h.now, "b").is_some());
    }

    #[test]
    fn max_payload_bytes_delivers_but_does_not_store() {
        let mut h = harness(retain(|r| r.max_payload_bytes = 3));
        h.connect(1, V5, "pub", true, None);
        h.connect(2, V5, "live", true, None);
        h.subscribe(2, filter("t/#", QoS::AtMostOnce), None);
        put(&mut h, 1, "t/big", b"four");
        put(&mut h, 1, "t/ok", b"abc");
        assert_eq!(publishes(&h.take(2)).len(), 2);
        assert_eq!(h.broker.stats().retained_refused_too_large, 1);
        h.connect(3, V5, "new", true, None);
        assert_eq!(retained_for(&mut h, 3, "t/#"), ["t/ok"]);
    }

    #[test]
    fn default_expiry_own_interval_precedence_and_sweep() {
        let mut h = harness(retain(|r| {
            r.default_expiry = 10;
            r.clean_interval = 30;
        }));
        h.connect(1, V5, "pub", true, None);
        put(&mut h, 1, "default", b"d");
        let mut p = Publish::new(
            "own-long",
            QoS::AtMostOnce,
            Bytes::from_static(b"o"),
            Some(PublishProperties {
                message_expiry_interval: Some(100),
                ..PublishProperties::default()
            }),
        );
        p.retain = true;
        h.packet(1, Packet::Publish(p.clone()));
        p.topic = Bytes::from_static(b"own-short");
        p.properties.as_mut().unwrap().message_expiry_interval = Some(3);
        h.packet(1, Packet::Publish(p));

        h.connect(2, V5, "s1", true, None);
        h.subscribe(2, filter("#", QoS::AtMostOnce), None);
        let out = h.take(2);
        let got = publishes(&out);
        assert_eq!(got.len(), 3);
        // The broker's default limits how long it keeps the message; it is
        // not announced as the message's own expiry.
        let default = got.iter().find(|p| &p.topic[..] == b"default").unwrap();
        assert_eq!(
            default
                .properties
                .as_ref()
                .and_then(|p| p.message_expiry_interval),
            None
        );
        let info = h.broker.retained_get(h.now, "default").unwrap().info;
        assert_eq!((info.expires_in, info.last_modified), (Some(10), WALL));

        // Expired ones are never delivered, even before a sweep.
        h.advance(Duration::from_secs(3));
        h.connect(3, V5, "s2", true, None);
        assert_eq!(retained_for(&mut h, 3, "#"), ["default", "own-long"]);
        h.advance(Duration::from_secs(7));
        h.connect(4, V5, "s3", true, None);
        assert_eq!(retained_for(&mut h, 4, "#"), ["own-long"]);
        assert_eq!(h.broker.retained_count(h.now), 1);
        assert_eq!(h.broker.retained.len(), 3, "not swept yet");
        // The sweep runs every clean_interval seconds.
        h.advance(Duration::from_secs(20));
        assert_eq!(h.broker.retained.len(), 1);
    }

    #[test]
    fn wildcard_delivery_off_behaves_like_aws_iot() {
        for mut h in [
            harness(retain(|r| r.wildcard_delivery = false)),
            harness(BrokerConfig::profile(Profile::AwsIot)),
        ] {
            h.connect(1, V5, "pub", true, None);
            put(&mut h, 1, "dev/1/cfg", b"x");
            h.connect(2, V5, "sub", true, None);
            assert!(retained_for(&mut h, 2, "dev/+/cfg").is_empty());
            assert!(retained_for(&mut h, 2, "#").is_empty());
            assert_eq!(retained_for(&mut h, 2, "dev/1/cfg"), ["dev/1/cfg"]);
        }
    }

    #[test]
    fn tagoio_profile_refuses_retained_publishes() {
        let mut h = harness(BrokerConfig::profile(Profile::Tagoio));
        h.connect(1, V5, "pub", true, None);
        put(&mut h, 1, "t", b"x");
        assert_eq!(h.closed, vec![1]);
    }

    /// A broker with `n` retained QoS 1 messages `r/00000`.. and a window of
    /// `window` for the subscriber on connection 2.
    fn loaded(config: BrokerConfig, n: usize) -> Harness {
        let mut h = harness(config);
        h.connect(1, V5, "pub", true, None);
        for i in 0..n {
            let mut p = Publish::new(
                format!("r/{i:05}"),
                QoS::AtLeastOnce,
                Bytes::from_static(b"v"),
                None,
            );
            p.retain = true;
            p.pkid = 1;
            h.broker
                .handle_frame(h.now, 1, Frame::Packet(Packet::Publish(p)));
            h.drain();
        }
        h.take(1);
        h
    }

    #[test]
    fn a_wildcard_subscriber_streams_many_retained_with_bounded_memory() {
        // 10,000 retained messages, window 10: the session never queues them,
        // each step sends what the window allows, none twice, in topic order.
        let config = BrokerConfig {
            max_inflight: 10,
            ..BrokerConfig::default()
        };
        let mut h = loaded(config, 10_000);
        h.connect(2, V5, "sub", true, None);
        h.subscribe(2, filter("r/#", QoS::AtLeastOnce), None);
        let mut seen = Vec::new();
        loop {
            let session = h.broker.by_client_id["sub"];
            assert!(
                h.broker.sessions[&session].queue.is_empty(),
                "nothing queued"
            );
            let out = h.take(2);
            if out.is_empty() {
                break;
            }
            assert!(publishes(&out).len() <= 10, "window exceeded");
            assert!(publishes(&out).iter().all(|p| p.retain));
            seen.extend(ack_all(&mut h, 2, &out));
        }
        let want: Vec<String> = (0..10_000).map(|i| format!("r/{i:05}")).collect();
        assert_eq!(seen, want);
        assert!(h.broker.cursors.is_empty());
    }

    #[test]
    fn a_window_is_refilled_as_each_slot_frees_in_topic_order() {
        // Window 8, one acknowledgement at a time: after the first 8 each
        // acknowledgement is answered at once with the next message, so the
        // broker never waits on the client's TCP timing.
        let config = BrokerConfig {
            max_inflight: 8,
            ..BrokerConfig::default()
        };
        let mut h = loaded(config, 100);
        h.connect(2, V3, "sub", true, None);
        h.subscribe(2, filter("r/#", QoS::AtLeastOnce), None);
        let mut in_flight: VecDeque<Publish> = publishes(&h.take(2)).into_iter().cloned().collect();
        assert_eq!(in_flight.len(), 8);
        let mut seen = Vec::new();
        let mut refills = Vec::new();
        while let Some(p) = in_flight.pop_front() {
            seen.push(topic_of(&p));
            h.packet(2, Packet::PubAck(PubAck::new(p.pkid, None)));
            let more = h.take(2);
            let more = publishes(&more);
            if !more.is_empty() {
                refills.push(more.len());
            }
            in_flight.extend(more.into_iter().cloned());
        }
        let want: Vec<String> = (0..100).map(|i| format!("r/{i:05}")).collect();
        assert_eq!(seen, want, "each once, in topic order");
        assert!(refills.iter().all(|&n| n == 1), "refills {refills:?}");
        assert!(h.broker.cursors.is_empty());
    }

    #[test]
    fn qos0_retained_delivery_is_paced_by_writes_and_never_dropped() {
        // More retained messages than the session queue limit and than the
        // paced window: the delivery stops at the window until the shell
        // reports writes, and every message arrives, once, in order.
        let n = PACED_WINDOW * 3 + 10;
        let config = BrokerConfig {
            max_queued_messages: 10,
            ..BrokerConfig::default()
        };
        let mut h = loaded(config, n);
        h.hold_paced = true;
        h.connect(2, V5, "sub", true, None);
        h.subscribe(2, filter("#", QoS::AtMostOnce), None);
        let mut seen = Vec::new();
        loop {
            let out = h.take(2);
            let got = publishes(&out);
            assert!(
                got.len() <= PACED_WINDOW,
                "{} ahead of the socket",
                got.len()
            );
            assert!(got.iter().all(|p| p.qos == QoS::AtMostOnce && p.retain));
            seen.extend(got.iter().map(|p| topic_of(p)));
            if h.unwritten.get(&2).copied().unwrap_or(0) == 0 {
                break;
            }
            // One written: room for one more, and no more than that.
            h.broker.handle_written(h.now, 2, 1);
            h.unwritten.entry(2).and_modify(|n| *n -= 1);
            h.drain();
            let one = h.take(2);
            let one = publishes(&one);
            assert!(one.len() <= 1, "{} for one free slot", one.len());
            seen.extend(one.iter().map(|p| topic_of(p)));
            h.write_held(2);
        }
        let want: Vec<String> = (0..n).map(|i| format!("r/{i:05}")).collect();
        assert_eq!(seen, want);
        assert_eq!(h.broker.stats().dropped_queue_full, 0);
        assert!(h.broker.cursors.is_empty());
    }

    #[test]
    fn qos0_messages_to_a_qos1_subscription_are_paced_too() {
        // Stored at QoS 0, they go out at QoS 0 whatever was granted, so the
        // in-flight window does not hold them back: the paced window does.
        let mut h = harness(BrokerConfig::default());
        h.connect(1, V5, "pub", true, None);
        let n = PACED_WINDOW + 100;
        for i in 0..n {
            put(&mut h, 1, &format!("r/{i:05}"), b"v");
        }
        h.hold_paced = true;
        h.connect(2, V5, "sub", true, None);
        h.subscribe(2, filter("r/#", QoS::AtLeastOnce), None);
        let first = h.take(2);
        let first = publishes(&first);
        // More than the in-flight window (100), no more than the paced one.
        assert!(
            first.len() > 100 && first.len() <= PACED_WINDOW,
            "{} before any was written",
            first.len()
        );
        assert!(first.iter().all(|p| p.qos == QoS::AtMostOnce));
        let mut total = first.len();
        while h.unwritten.get(&2).copied().unwrap_or(0) > 0 {
            h.write_held(2);
            let more = h.take(2);
            let more = publishes(&more);
            assert!(more.len() <= PACED_WINDOW);
            total += more.len();
        }
        assert_eq!(total, n);
    }

    #[test]
    fn delivery_batch_and_rate_pace_the_steps() {
        // 20 messages, 5 a step, 10 a second: a step every half second.
        let mut h = loaded(
            retain(|r| {
                r.delivery_batch = 5;
                r.delivery_rate = 10;
            }),
            20,
        );
        h.connect(2, V5, "sub", true, None);
        h.subscribe(2, filter("#", QoS::AtLeastOnce), None);
        let mut counts = Vec::new();
        for _ in 0..5 {
            let out = h.take(2);
            counts.push(ack_all(&mut h, 2, &out).len());
            h.advance(Duration::from_millis(250));
            let early = h.take(2);
            assert!(publishes(&early).is_empty(), "a step before its time");
            h.advance(Duration::from_millis(250));
        }
        assert_eq!(counts, [5, 5, 5, 5, 0]);

        // Without a rate, the batch only sizes the steps: the window decides.
        let mut h = loaded(retain(|r| r.delivery_batch = 3), 20);
        h.connect(2, V5, "sub", true, None);
        h.subscribe(2, filter("#", QoS::AtMostOnce), None);
        assert_eq!(publishes(&h.take(2)).len(), 20, "QoS 0: all, in steps of 3");
    }

    #[test]
    fn changes_during_delivery_skip_deleted_and_keep_order() {
        // Window 1: the cursor is at "a" when "b" is cleared and "c" replaced.
        let config = BrokerConfig {
            max_inflight: 1,
            ..BrokerConfig::default()
        };
        let mut h = harness(config);
        h.connect(1, V5, "pub", true, None);
        for topic in ["a", "b", "c", "d"] {
            let mut p = Publish::new(topic, QoS::AtLeastOnce, Bytes::from_static(b"old"), None);
            p.retain = true;
            p.pkid = 1;
            h.packet(1, Packet::Publish(p));
        }
        h.connect(2, V5, "sub", true, None);
        h.subscribe(2, filter("#", QoS::AtLeastOnce), None);
        let first = h.take(2);
        put(&mut h, 1, "b", b"");
        put(&mut h, 1, "c", b"new");
        assert!(h.take(2).is_empty(), "live messages wait behind the cursor");
        let mut got: Vec<(String, Vec<u8>, bool)> = Vec::new();
        let mut out = first;
        while !out.is_empty() {
            for p in publishes(&out) {
                got.push((topic_of(p), p.payload.to_vec(), p.retain));
            }
            ack_all(&mut h, 2, &out);
            out = h.take(2);
        }
        let want = [
            ("a", &b"old"[..], true),
            ("d", b"old", true),
            // The live messages, after the retained ones: the clearing of b
            // and the new c (which the cursor skipped, as it came live).
            ("b", b"", false),
            ("c", b"new", false),
        ];
        let want: Vec<(String, Vec<u8>, bool)> = want
            .iter()
            .map(|(t, p, r)| (t.to_string(), p.to_vec(), *r))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn unsubscribing_or_resubscribing_ends_a_delivery_in_progress() {
        let config = BrokerConfig {
            max_inflight: 2,
            ..BrokerConfig::default()
        };
        let mut h = loaded(config, 10);
        h.connect(2, V5, "sub", true, None);
        h.subscribe(2, filter("#", QoS::AtLeastOnce), None);
        let out = h.take(2);
        assert_eq!(publishes(&out).len(), 2);
        h.packet(
            2,
            Packet::Unsubscribe(Unsubscribe {
                pkid: 2,
                filters: vec!["#".into()],
                properties: None,
            }),
        );
        h.take(2);
        ack_all(&mut h, 2, &out);
        assert!(publishes(&h.take(2)).is_empty());
        assert!(h.broker.cursors.is_empty());
    }

    #[test]
    fn persistent_session_resumes_its_retained_delivery() {
        let config = BrokerConfig {
            max_inflight: 3,
            ..BrokerConfig::default()
        };
        let mut h = loaded(config, 7);
        h.connect(2, V3, "sub", false, None);
        h.subscribe(2, filter("#", QoS::AtLeastOnce), None);
        let first: Vec<String> = publishes(&h.take(2)).iter().map(|p| topic_of(p)).collect();
        h.broker.handle_closed(h.now, 2);
        h.connect(3, V3, "sub", false, None);
        h.drain();
        // The three in flight again (DUP), then the rest as slots free.
        let mut out = h.take(3);
        let mut seen = Vec::new();
        while !out.is_empty() {
            seen.extend(ack_all(&mut h, 3, &out));
            out = h.take(3);
        }
        assert_eq!(&seen[..3], &first[..]);
        assert_eq!(seen.len(), 7);
    }

    #[test]
    fn management_lists_pages_gets_and_deletes() {
        let mut h = loaded(BrokerConfig::default(), 5);
        put(&mut h, 1, "other/x", b"{\"on\":true}");
        assert_eq!(h.broker.retained_count(h.now), 6);
        let page = h.broker.retained_list(h.now, "r/#", 2, None).unwrap();
        let topics = |p: &RetainedPage| {
            p.entries
                .iter()
                .map(|e| e.topic.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(topics(&page), ["r/00000", "r/00001"]);
        assert_eq!(page.next_cursor.as_deref(), Some("r/00001"));
        let page = h
            .broker
            .retained_list(h.now, "r/#", 2, page.next_cursor.as_deref())
            .unwrap();
        assert_eq!(topics(&page), ["r/00002", "r/00003"]);
        let page = h
            .broker
            .retained_list(h.now, "r/#", 2, page.next_cursor.as_deref())
            .unwrap();
        assert_eq!(
            (topics(&page), page.next_cursor),
            (vec!["r/00004".to_owned()], None)
        );
        let all = h.broker.retained_list(h.now, "#", 100, None).unwrap();
        assert_eq!(all.entries.len(), 6);
        let first = &all.entries[0];
        assert_eq!(
            (
                first.qos,
                first.payload_bytes,
                first.last_modified,
                first.expires_in
            ),
            (0, 11, WALL, None)
        );
        assert!(h.broker.retained_list(h.now, "a/#/b", 1, None).is_err());

        let entry = h.broker.retained_get(h.now, "other/x").unwrap();
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(json["payload"], "{\"on\":true}");
        assert_eq!(json["topic"], "other/x");
        assert!(h.broker.retained_delete("other/x"));
        assert!(!h.broker.retained_delete("other/x"));
        assert!(h.broker.retained_get(h.now, "other/x").is_none());
        assert_eq!(h.broker.retained_count(h.now), 5);
    }

    fn temp_db(name: &str) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("host-shim-core-{name}-{}.redb", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn disk_storage_survives_a_restart_and_drops_what_expired() {
        let path = temp_db("restart");
        let config = retain(|r| r.storage = RetainStorage::Disk(path.clone()));
        {
            let mut h = harness(config.clone());
            h.connect(1, V5, "pub", true, None);
            h.publish(1, "keep", QoS::AtLeastOnce, true, b"k", 1);
            // PUBACK came out of poll_action, after the commit.
            assert!(matches!(h.take(1).as_slice(), [Packet::PubAck(_)]));
            assert!(!h.broker.retained.has_writes());
            assert!(!h.disk.as_ref().is_some_and(DiskStore::has_pending));
            h.publish(1, "gone", QoS::AtLeastOnce, true, b"g", 2);
            h.publish(1, "gone", QoS::AtLeastOnce, true, b"", 3);
            let mut p = Publish::new(
                "short",
                QoS::ExactlyOnce,
                Bytes::from_static(b"s"),
                Some(PublishProperties {
                    message_expiry_interval: Some(10),
                    ..PublishProperties::default()
                }),
            );
            p.retain = true;
            p.pkid = 4;
            h.packet(1, Packet::Publish(p));
            h.commit().unwrap();
            assert!(h.broker.retained_delete("keep") && h.commit().is_ok());
            h.publish(1, "keep", QoS::AtLeastOnce, true, b"k2", 5);
        }
        // Five seconds later: "short" has five left.
        let wall = UNIX_EPOCH + Duration::from_secs(WALL + 5);
        let mut h = harness_at(config.clone(), Instant::now(), wall);
        h.connect(1, V5, "sub", true, None);
        h.subscribe(1, filter("#", QoS::ExactlyOnce), None);
        let out = h.take(1);
        let got: Vec<(String, Vec<u8>, QoS)> = publishes(&out)
            .iter()
            .map(|p| (topic_of(p), p.payload.to_vec(), p.qos))
            .collect();
        assert_eq!(
            got,
            [
                ("keep".to_owned(), b"k2".to_vec(), QoS::AtLeastOnce),
                ("short".to_owned(), b"s".to_vec(), QoS::ExactlyOnce)
            ]
        );
        let short = publishes(&out)[1].properties.clone().unwrap();
        assert_eq!(short.message_expiry_interval, Some(5));
        drop(h);

        // Twenty seconds later "short" has expired and is dropped on load.
        let wall = UNIX_EPOCH + Duration::from_secs(WALL + 20);
        let h = harness_at(config.clone(), Instant::now(), wall);
        let page = h
            .broker
            .retained_list(Instant::now(), "#", 10, None)
            .unwrap();
        assert_eq!(page.entries.len(), 1);
        drop(h);
        std::fs::remove_file(&path).unwrap();
    }
}

/// Flow control for slow subscribers (`queue_full`).
mod flow;
