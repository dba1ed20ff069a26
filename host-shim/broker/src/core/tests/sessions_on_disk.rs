//! Sessions on disk (`sessions.storage`): what the core records for the
//! disk, and what it loads back. A restart is the store's file opened again
//! by a new core, at a later wall-clock time; dropping the harness without
//! `handle_shutdown` is a kill, since the harness writes every batch before
//! it carries out its actions, as the shell does.

use super::*;
use crate::config::RetainStorage;
use crate::session::SessionWrites;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// The wall-clock time of the first start, in seconds since the epoch.
const WALL: u64 = 1_700_000_000;

/// A fresh database path under the system temporary directory.
fn temp_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "host-shim-core-sessions-{name}-{}-{:?}.redb",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_file(&path);
    path
}

fn on_disk(path: &Path) -> BrokerConfig {
    let mut config = BrokerConfig::default();
    config.sessions.storage = RetainStorage::Disk(path.to_owned());
    config
}

/// A core started at `wall` seconds on `config`'s session store, with the
/// sessions read from it loaded, as the shell does at start.
fn start(config: BrokerConfig, wall: u64) -> Harness {
    let config = BrokerConfig {
        max_keep_alive: 0,
        ..config
    };
    let RetainStorage::Disk(path) = &config.sessions.storage else {
        panic!("disk session storage expected");
    };
    let (store, records) = SessionStore::open(path).expect("store opens");
    let now = Instant::now();
    let wall = UNIX_EPOCH + Duration::from_secs(wall);
    let broker = Broker::new(config, Vec::new(), now, wall).with_sessions(records, now, wall);
    let mut h = Harness {
        broker,
        now,
        out: HashMap::new(),
        closed: Vec::new(),
        disk: None,
        sessions: Some(store),
        hold_paced: false,
        unwritten: HashMap::new(),
    };
    h.drain();
    h
}

/// Whether the core holds a session for `client_id`.
fn has_session(h: &Harness, client_id: &str) -> bool {
    h.broker.by_client_id.contains_key(client_id)
}

/// Entries changed in `writes`, all sessions together.
fn entries(writes: &SessionWrites) -> usize {
    writes
        .iter()
        .map(|c| {
            usize::from(c.meta.is_some())
                + c.subscriptions.len()
                + c.incoming.len()
                + c.inflight.len()
                + c.queue.len()
        })
        .sum()
}

fn payloads(packets: &[Packet]) -> Vec<&[u8]> {
    publishes(packets).iter().map(|p| &p.payload[..]).collect()
}

fn ids(p: &Publish) -> Vec<usize> {
    p.properties
        .as_ref()
        .map(|p| p.subscription_identifiers.clone())
        .unwrap_or_default()
}

// MQTT-3.1.2-5 (5.0), MQTT-3.1.2-4 (3.1.1): the session, and the messages
// queued for it, outlast the broker's process.
#[test]
fn a_parked_session_keeps_its_subscriptions_and_queue_across_a_restart() {
    let path = temp_path("parked");
    let mut h = start(on_disk(&path), WALL);
    h.connect(1, V5, "sub", false, Some(600));
    let mut keep_retain = filter("t/#", QoS::ExactlyOnce);
    keep_retain.preserve_retain = true;
    h.subscribe(1, keep_retain, Some(7));
    h.subscribe(1, filter("$share/g/s", QoS::AtLeastOnce), None);
    h.broker.handle_closed(h.now, 1);
    h.drain();
    h.connect(2, V5, "pub", true, None);
    h.publish(2, "t/a", QoS::AtLeastOnce, true, b"one", 1);
    h.publish(2, "t/b", QoS::ExactlyOnce, false, b"two", 2);
    h.publish(2, "t/c", QoS::AtMostOnce, false, b"not kept offline", 0);
    drop(h);

    let mut h = start(on_disk(&path), WALL + 30);
    // Routed before its client is back: a message published now is queued.
    h.connect(3, V5, "pub", true, None);
    h.publish(3, "t/d", QoS::AtLeastOnce, false, b"three", 1);
    h.publish(3, "s", QoS::AtLeastOnce, false, b"shared", 2);
    let ack = h.connect(1, V5, "sub", false, Some(600));
    assert!(ack.session_present);
    let out = h.take(1);
    assert_eq!(
        payloads(&out),
        [&b"one"[..], b"two", b"three", b"shared"],
        "in the order queued"
    );
    let got = publishes(&out);
    assert_eq!(
        got.iter().map(|p| p.qos).collect::<Vec<_>>(),
        [
            QoS::AtLeastOnce,
            QoS::ExactlyOnce,
            QoS::AtLeastOnce,
            QoS::AtLeastOnce
        ]
    );
    assert!(got[0].retain, "Retain As Published kept the flag");
    assert_eq!(ids(got[0]), [7]);
    assert_eq!(ids(got[3]), Vec::<usize>::new());
    std::fs::remove_file(&path).unwrap();
}

// MQTT-4.4.0-1 and MQTT-3.3.1-1: in-flight messages are sent again with
// DUP after a crash; MQTT-4.3.3-10 (5.0) / MQTT-4.3.3-2 (3.1.1): a QoS 2
// PUBLISH whose PUBREC was sent is not routed again when it comes back.
#[test]
fn messages_in_flight_and_qos2_identifiers_survive_a_kill() {
    let path = temp_path("inflight");
    let mut h = start(on_disk(&path), WALL);
    h.connect(1, V5, "sub", false, Some(600));
    h.subscribe(1, filter("t", QoS::ExactlyOnce), None);
    h.connect(2, V3, "pub", false, None);
    h.publish(2, "t", QoS::AtLeastOnce, false, b"q1", 10);
    h.publish(2, "t", QoS::ExactlyOnce, false, b"q2", 11);
    assert!(matches!(h.take(2).last(), Some(Packet::PubRec(r)) if r.pkid == 11));
    let sent = h.take(1);
    let sent = publishes(&sent);
    let (p1, p2) = (sent[0].pkid, sent[1].pkid);
    h.packet(1, Packet::PubRec(PubRec::new(p2, None)));
    assert!(matches!(h.take(1).as_slice(), [Packet::PubRel(r)] if r.pkid == p2));
    drop(h);

    let mut h = start(on_disk(&path), WALL + 5);
    assert!(h.connect(2, V3, "pub", false, None).session_present);
    let mut again = Publish::new("t", QoS::ExactlyOnce, Bytes::from_static(b"q2"), None);
    again.pkid = 11;
    again.dup = true;
    h.packet(2, Packet::Publish(again));
    assert!(matches!(h.take(2).as_slice(), [Packet::PubRec(r)] if r.pkid == 11));
    h.packet(2, Packet::PubRel(PubRel::new(11, None)));
    assert!(matches!(
        h.take(2).as_slice(),
        [Packet::PubComp(c)] if c.pkid == 11 && c.reason == rumqttc::v5::mqttbytes::v5::PubCompReason::Success
    ));

    assert!(h.connect(1, V5, "sub", false, Some(600)).session_present);
    let out = h.take(1);
    match out.as_slice() {
        [Packet::Publish(p), Packet::PubRel(r)] => {
            assert_eq!((&p.payload[..], p.pkid, p.dup), (&b"q1"[..], p1, true));
            assert_eq!(r.pkid, p2);
        }
        other => panic!("expected the PUBLISH again and the PUBREL, got {other:?}"),
    }
    h.packet(1, Packet::PubAck(PubAck::new(p1, None)));
    h.packet(1, Packet::PubComp(PubComp::new(p2, None)));
    // The packet identifier counter went on from where it was.
    h.publish(2, "t", QoS::AtLeastOnce, false, b"q3", 12);
    assert_eq!(publishes(&h.take(1))[0].pkid, p2 + 1);
    h.packet(1, Packet::PubAck(PubAck::new(p2 + 1, None)));
    drop(h);

    let mut h = start(on_disk(&path), WALL + 10);
    assert!(h.connect(1, V5, "sub", false, Some(600)).session_present);
    assert!(h.take(1).is_empty(), "completed flows are not stored");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn expiry_counts_from_the_disconnect_or_from_the_restart_after_a_kill() {
    let path = temp_path("expiry");
    let mut h = start(on_disk(&path), WALL);
    h.connect(1, V5, "parked", false, Some(100));
    h.broker.handle_closed(h.now, 1);
    h.connect(2, V5, "alive", false, Some(100));
    h.connect(3, V5, "short", false, Some(10));
    h.broker.handle_closed(h.now, 3);
    h.connect(4, V5, "clean", true, None);
    h.drain();
    drop(h);

    // 60 s later: `short` expired while the broker was down.
    let h = start(on_disk(&path), WALL + 60);
    assert!(has_session(&h, "parked") && has_session(&h, "alive"));
    assert!(!has_session(&h, "short") && !has_session(&h, "clean"));
    drop(h);

    // `parked` left at WALL; `alive`, connected at the kill, counts from
    // the restart at WALL + 60.
    let mut h = start(on_disk(&path), WALL + 150);
    assert!(!has_session(&h, "parked"));
    assert!(has_session(&h, "alive"));
    h.advance(Duration::from_secs(9));
    assert!(has_session(&h, "alive"));
    h.advance(Duration::from_secs(2));
    assert!(!has_session(&h, "alive"));
    drop(h);
    let (_, records) = SessionStore::open(&path).unwrap();
    assert!(records.is_empty(), "expired sessions are deleted");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_graceful_stop_parks_connected_sessions_at_the_stop() {
    let path = temp_path("stop");
    let mut h = start(on_disk(&path), WALL);
    h.connect(1, V5, "s", false, Some(100));
    h.broker.handle_shutdown(h.now);
    h.drain();
    drop(h);
    let h = start(on_disk(&path), WALL + 101);
    assert!(!has_session(&h, "s"), "counted from the stop at WALL");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn limits_apply_to_loaded_sessions() {
    let path = temp_path("limits");
    let mut h = start(on_disk(&path), WALL);
    for (conn, id) in [(1, "a"), (2, "b"), (3, "c")] {
        h.connect(conn, V5, id, false, Some(1000));
        h.advance(Duration::from_secs(1));
        h.broker.handle_closed(h.now, conn);
        h.drain();
    }
    h.connect(4, V3, "v3", false, None);
    h.broker.handle_closed(h.now, 4);
    h.drain();
    drop(h);

    // The parked longest ends first.
    let mut config = on_disk(&path);
    config.max_parked_sessions = 3;
    config.persistent_client_expiration = 30;
    let mut h = start(config, WALL + 10);
    assert!(!has_session(&h, "a"));
    assert!(has_session(&h, "b") && has_session(&h, "c"));
    assert_eq!(h.broker.stats().sessions_evicted, 1);
    // `persistent_client_expiration` gives the 3.1.1 session 30 s from its
    // disconnect, about 7 s before the restart.
    h.advance(Duration::from_secs(22));
    assert!(has_session(&h, "v3"));
    h.advance(Duration::from_secs(2));
    assert!(!has_session(&h, "v3"));
    std::fs::remove_file(&path).unwrap();
}

// MQTT-3.3.2-5 (5.0): a message whose expiry passed while the broker was
// down is not delivered.
#[test]
fn queued_messages_that_expired_while_down_are_dropped_and_counted() {
    let path = temp_path("message-expiry");
    let mut h = start(on_disk(&path), WALL);
    h.connect(1, V5, "sub", false, Some(600));
    h.subscribe(1, filter("t", QoS::AtLeastOnce), None);
    h.broker.handle_closed(h.now, 1);
    h.connect(2, V5, "pub", true, None);
    for (payload, expiry) in [(&b"short"[..], 5), (b"long", 100)] {
        let props = PublishProperties {
            message_expiry_interval: Some(expiry),
            ..PublishProperties::default()
        };
        let p = Publish::new(
            "t",
            QoS::AtLeastOnce,
            Bytes::copy_from_slice(payload),
            Some(props),
        );
        let mut p = p;
        p.pkid = 1;
        h.packet(2, Packet::Publish(p));
    }
    h.publish(2, "t", QoS::AtLeastOnce, false, b"never", 1);
    drop(h);

    let mut h = start(on_disk(&path), WALL + 10);
    assert_eq!(h.broker.stats().dropped_expired, 1);
    assert!(h.connect(1, V5, "sub", false, Some(600)).session_present);
    let out = h.take(1);
    assert_eq!(payloads(&out), [&b"long"[..], b"never"]);
    let left = publishes(&out)[0]
        .properties
        .as_ref()
        .and_then(|p| p.message_expiry_interval);
    assert_eq!(left, Some(90), "what is left of it, on the wall clock");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_connect_that_ends_persistence_deletes_the_stored_session() {
    let path = temp_path("ends");
    let mut h = start(on_disk(&path), WALL);
    h.connect(1, V5, "s", false, Some(600));
    h.subscribe(1, filter("t", QoS::AtLeastOnce), None);
    h.broker.handle_closed(h.now, 1);
    // Resumed with a Session Expiry Interval of 0: it ends with this
    // connection, so it is not kept for a restart.
    assert!(h.connect(2, V5, "s", false, Some(0)).session_present);
    h.connect(3, V5, "t", false, Some(600));
    h.subscribe(3, filter("old", QoS::AtLeastOnce), None);
    h.broker.handle_closed(h.now, 3);
    // Clean start replaces the stored session.
    assert!(!h.connect(4, V5, "t", true, Some(600)).session_present);
    drop(h);
    let (_, records) = SessionStore::open(&path).unwrap();
    let clients: Vec<(&str, usize)> = records
        .iter()
        .map(|r| (r.client_id.as_str(), r.subscriptions.len()))
        .collect();
    assert_eq!(clients, [("t", 0)]);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_stream_through_a_persistent_session_writes_each_change_once() {
    let path = temp_path("stream");
    let mut h = start(on_disk(&path), WALL);
    h.connect(1, V5, "sub", false, Some(600));
    h.subscribe(1, filter("t", QoS::AtLeastOnce), None);
    h.broker.handle_closed(h.now, 1);
    h.connect(2, V5, "pub", true, None);
    h.drain();
    // Each PUBLISH, queued for the parked session, writes one entry, not the
    // queue so far.
    for i in 0..2_000_u16 {
        let mut p = Publish::new("t", QoS::AtLeastOnce, Bytes::from_static(b"m"), None);
        p.pkid = i % 1000 + 1;
        h.broker
            .handle_frame(h.now, 2, Frame::Packet(Packet::Publish(p)));
        let writes = h.broker.poll_session_writes().expect("a change to write");
        assert_eq!(entries(&writes), 1, "message {i}");
        assert_eq!(writes.waiting, [2], "the PUBACK waits for the write");
        h.sessions.as_mut().unwrap().stage(writes);
        h.drain();
    }
    h.take(2);
    // Each PUBACK frees a slot: the message leaves the queue, the next
    // goes in flight, the acknowledged one leaves the window, and the
    // last packet identifier changes.
    h.connect(1, V5, "sub", false, Some(600));
    for _ in 0..2_000 {
        let out = h.take(1);
        let Some(first) = publishes(&out).first().map(|p| p.pkid) else {
            break;
        };
        h.broker.handle_frame(
            h.now,
            1,
            Frame::Packet(Packet::PubAck(PubAck::new(first, None))),
        );
        let writes = h.broker.poll_session_writes().expect("a change to write");
        assert!(entries(&writes) <= 4, "{}", entries(&writes));
        assert!(writes.waiting.is_empty(), "a PUBACK promises nothing");
        h.sessions.as_mut().unwrap().stage(writes);
        h.drain();
        // What was not acknowledged yet comes again below.
        let rest: Vec<Packet> = out.into_iter().skip(1).collect();
        h.out.entry(1).or_default().splice(0..0, rest);
    }
    drop(h);
    let h = start(on_disk(&path), WALL + 1);
    let session = h.broker.by_client_id["sub"];
    let session = &h.broker.sessions[&session];
    assert!(session.queue.is_empty() && session.inflight.is_empty());
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn memory_storage_records_nothing() {
    let mut h = Harness::new(BrokerConfig::default());
    h.connect(1, V5, "sub", false, Some(600));
    h.subscribe(1, filter("t", QoS::AtLeastOnce), None);
    h.broker.handle_closed(h.now, 1);
    h.connect(2, V5, "pub", true, None);
    h.broker.handle_frame(
        h.now,
        2,
        Frame::Packet(Packet::Publish(Publish::new(
            "t",
            QoS::AtLeastOnce,
            Bytes::from_static(b"m"),
            None,
        ))),
    );
    assert!(h.broker.journal.is_none());
    assert!(h.broker.poll_session_writes().is_none());
}

/// What of a session must read back the same from disk.
#[derive(Debug, PartialEq)]
struct Summary {
    version: MqttVersion,
    expiry: u32,
    last_pkid: u16,
    subscriptions: Vec<(String, crate::types::SubOptions)>,
    incoming: std::collections::BTreeSet<u16>,
    /// PUBLISHes in flight, in the order sent: packet identifier, payload.
    publishes: Vec<(u16, Bytes)>,
    /// PUBRELs awaiting PUBCOMP.
    releases: std::collections::BTreeSet<u16>,
    /// Queued: payload, QoS, RETAIN, subscription identifiers.
    queue: Vec<(Bytes, QoS, bool, Vec<usize>)>,
}

/// Every persistent session of `h`'s core, by client identifier.
fn persistent(h: &Harness) -> std::collections::BTreeMap<String, Summary> {
    use crate::session::Inflight;
    h.broker
        .sessions
        .values()
        .filter(|s| s.expiry_interval > 0)
        .map(|s| {
            let mut subscriptions: Vec<_> = s
                .subscriptions
                .iter()
                .map(|(f, o)| (f.as_str().to_owned(), o.clone()))
                .collect();
            subscriptions.sort_by(|a, b| a.0.cmp(&b.0));
            let summary = Summary {
                version: s.version,
                expiry: s.expiry_interval,
                last_pkid: s.next_pkid,
                subscriptions,
                incoming: s.incoming_qos2.iter().copied().collect(),
                publishes: s
                    .inflight
                    .iter()
                    .filter_map(|i| match i {
                        Inflight::Publish(p, _) => Some((p.pkid, p.payload.clone())),
                        Inflight::Release(_) => None,
                    })
                    .collect(),
                releases: s
                    .inflight
                    .iter()
                    .filter_map(|i| match i {
                        Inflight::Release(pkid) => Some(*pkid),
                        Inflight::Publish(..) => None,
                    })
                    .collect(),
                queue: s
                    .queue
                    .iter()
                    .map(|q| {
                        let payload = q.message.publish.payload.clone();
                        (payload, q.qos, q.retain, q.subscription_ids.clone())
                    })
                    .collect(),
            };
            (s.client_id.clone(), summary)
        })
        .collect()
}

/// One step of a client of [`what_is_stored_reads_back_as_it_was`].
#[derive(Debug, Clone)]
enum Step {
    Connect {
        client: usize,
        v5: bool,
        clean: bool,
        expiry: Option<u32>,
    },
    Subscribe {
        client: usize,
        filter: &'static str,
        qos: u8,
        id: Option<usize>,
    },
    Unsubscribe {
        client: usize,
        filter: &'static str,
    },
    Publish {
        client: usize,
        topic: &'static str,
        qos: u8,
        pkid: u16,
    },
    PubRel {
        client: usize,
        pkid: u16,
    },
    /// Acknowledge everything sent to the client so far.
    Ack {
        client: usize,
    },
    Close {
        client: usize,
    },
    Advance {
        secs: u64,
    },
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    let client = 0..3_usize;
    let filter = prop_oneof![Just("t/a"), Just("t/#"), Just("$share/g/t/a"), Just("u")];
    let topic = prop_oneof![Just("t/a"), Just("t/b"), Just("u")];
    // Mostly persistent sessions, resumed: the interesting ones here.
    let clean = prop_oneof![3 => Just(false), 1 => Just(true)];
    let expiry = prop_oneof![3 => Just(Some(600)), 1 => Just(None), 1 => Just(Some(0))];
    prop_oneof![
        3 => (client.clone(), any::<bool>(), clean, expiry).prop_map(
            |(client, v5, clean, expiry)| Step::Connect {
                client,
                v5,
                clean,
                expiry
            }
        ),
        3 => (
            client.clone(),
            filter.clone(),
            0..3_u8,
            prop::option::of(1..4_usize)
        )
            .prop_map(|(client, filter, qos, id)| Step::Subscribe {
                client,
                filter,
                qos,
                id
            }),
        1 => (client.clone(), filter)
            .prop_map(|(client, filter)| Step::Unsubscribe { client, filter }),
        8 => (client.clone(), topic, 0..3_u8, 1..4_u16).prop_map(|(client, topic, qos, pkid)| {
            Step::Publish {
                client,
                topic,
                qos,
                pkid,
            }
        }),
        1 => (client.clone(), 1..4_u16).prop_map(|(client, pkid)| Step::PubRel { client, pkid }),
        2 => client.clone().prop_map(|client| Step::Ack { client }),
        2 => client.prop_map(|client| Step::Close { client }),
        1 => prop_oneof![3 => Just(1_u64), 1 => Just(300), 1 => Just(700)]
            .prop_map(|secs| Step::Advance { secs }),
    ]
}

/// Runs `steps` on a core storing sessions in a new file; returns the
/// persistent sessions it holds at the end, and those a core started on the
/// file after a kill (at the same wall-clock time) holds.
fn run_and_reload(
    name: &str,
    steps: &[Step],
) -> (
    std::collections::BTreeMap<String, Summary>,
    std::collections::BTreeMap<String, Summary>,
) {
    let path = temp_path(name);
    // A small window, so that messages queue behind it while online too.
    let config = BrokerConfig {
        max_inflight: 2,
        ..on_disk(&path)
    };
    let mut h = start(config.clone(), WALL);
    let started = h.now;
    let mut conns: [Option<ConnId>; 3] = [None; 3];
    let mut next_conn = 1;
    let mut message = 0_u32;
    for step in steps {
        match *step {
            Step::Connect {
                client,
                v5,
                clean,
                expiry,
            } => {
                let conn = next_conn;
                next_conn += 1;
                let version = if v5 { V5 } else { V3 };
                h.connect(conn, version, &format!("c{client}"), clean, expiry);
                h.take(conn);
                conns[client] = Some(conn);
            }
            Step::Subscribe {
                client,
                filter: path,
                qos,
                id,
            } => {
                if let Some(conn) = conns[client] {
                    let v5 = h.broker.conns.get(&conn).map(|c| c.version) == Some(V5);
                    // What came before the SUBACK waits for `Ack` too.
                    let mut before = h.take(conn);
                    h.subscribe(conn, filter(path, qos_from(qos)), id.filter(|_| v5));
                    before.extend(h.take(conn));
                    h.out.insert(conn, before);
                }
            }
            Step::Unsubscribe { client, filter } => {
                if let Some(conn) = conns[client] {
                    let unsubscribe = Unsubscribe {
                        pkid: 1,
                        filters: vec![filter.to_owned()],
                        properties: None,
                    };
                    h.packet(conn, Packet::Unsubscribe(unsubscribe));
                }
            }
            Step::Publish {
                client,
                topic,
                qos,
                pkid,
            } => {
                if let Some(conn) = conns[client] {
                    message += 1;
                    let qos = qos_from(qos);
                    let payload = Bytes::from(message.to_string());
                    let mut p = Publish::new(topic, qos, payload, None);
                    p.pkid = if qos == QoS::AtMostOnce { 0 } else { pkid };
                    h.packet(conn, Packet::Publish(p));
                }
            }
            Step::PubRel { client, pkid } => {
                if let Some(conn) = conns[client] {
                    h.packet(conn, Packet::PubRel(PubRel::new(pkid, None)));
                }
            }
            Step::Ack { client } => {
                if let Some(conn) = conns[client] {
                    for packet in h.take(conn) {
                        let ack = match packet {
                            Packet::Publish(p) if p.qos == QoS::AtLeastOnce => {
                                Packet::PubAck(PubAck::new(p.pkid, None))
                            }
                            Packet::Publish(p) if p.qos == QoS::ExactlyOnce => {
                                Packet::PubRec(PubRec::new(p.pkid, None))
                            }
                            Packet::PubRel(r) => Packet::PubComp(PubComp::new(r.pkid, None)),
                            _ => continue,
                        };
                        h.packet(conn, ack);
                    }
                }
            }
            Step::Close { client } => {
                if let Some(conn) = conns[client].take() {
                    h.broker.handle_closed(h.now, conn);
                    h.drain();
                }
            }
            Step::Advance { secs } => h.advance(Duration::from_secs(secs)),
        }
    }
    let live = persistent(&h);
    let elapsed = (h.now - started).as_secs();
    drop(h);
    let h = start(config, WALL + elapsed);
    let loaded = persistent(&h);
    drop(h);
    let _ = std::fs::remove_file(&path);
    (live, loaded)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Whatever clients do, the sessions a core reads back after a kill are
    /// the persistent sessions the killed core held: every change reached
    /// the disk, and nothing else did.
    #[test]
    fn what_is_stored_reads_back_as_it_was(
        steps in proptest::collection::vec(step(), 1..100),
    ) {
        let (live, loaded) = run_and_reload("property", &steps);
        proptest::prop_assert_eq!(live, loaded);
    }
}
