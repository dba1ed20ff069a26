//! Persistent sessions on disk survive a `kill -9` of the broker process:
//! every QoS 1 message whose PUBACK the publisher received before the kill
//! is delivered after a restart on the same file, once, to a persistent
//! subscriber that was offline (its queue) and to one that was connected
//! and had acknowledged nothing (its in-flight window, then its queue).
//! The broker acknowledges a message queued for a persistent session only
//! once it is on disk, so a PUBACK means the message is there.

use rumqttc::{Client, Connection, Event, MqttOptions, Outgoing, Packet, QoS};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

mod support;

use support::{temp_file, Broker};

/// Messages published; the broker is killed once half are acknowledged.
const N: usize = 2_000;

/// The longest any phase may take.
const PHASE: Duration = Duration::from_secs(60);

fn options(id: &str, port: &str, clean: bool) -> MqttOptions {
    let port = port.parse().expect("a port");
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(clean);
    options.set_inflight(100);
    options
}

/// The next event within what is left of `deadline`.
fn next(connection: &mut Connection, deadline: Instant, what: &str) -> Event {
    let left = deadline.saturating_duration_since(Instant::now());
    match connection.recv_timeout(left) {
        Ok(Ok(event)) => event,
        Ok(Err(e)) => panic!("{what}: connection failed: {e}"),
        Err(_) => panic!("{what}: nothing within {PHASE:?}"),
    }
}

/// Connects a persistent subscriber to `k9/#` and waits for its SUBACK.
fn subscriber(id: &str, port: &str, manual_acks: bool) -> (Client, Connection) {
    let mut options = options(id, port, false);
    options.set_manual_acks(manual_acks);
    let (client, mut connection) = Client::new(options, 100);
    client.subscribe("k9/#", QoS::AtLeastOnce).unwrap();
    let deadline = Instant::now() + PHASE;
    while !matches!(
        next(&mut connection, deadline, "SUBACK"),
        Event::Incoming(Packet::SubAck(_))
    ) {}
    (client, connection)
}

/// Resumes `id`'s session and takes messages until every one of `want`
/// came; returns them in the order received.
fn resume(id: &str, port: &str, want: &BTreeSet<usize>) -> Vec<usize> {
    let (_client, mut connection) = Client::new(options(id, port, false), 100);
    let deadline = Instant::now() + PHASE;
    let mut got = Vec::new();
    loop {
        match next(&mut connection, deadline, id) {
            Event::Incoming(Packet::ConnAck(ack)) => {
                assert!(ack.session_present, "{id}: the session survived the kill");
            }
            Event::Incoming(Packet::Publish(p)) => {
                let text = std::str::from_utf8(&p.payload).unwrap();
                got.push(text.parse().unwrap());
                let seen: BTreeSet<usize> = got.iter().copied().collect();
                if want.is_subset(&seen) {
                    return got;
                }
            }
            _ => {}
        }
    }
}

#[test]
fn acknowledged_messages_for_persistent_sessions_survive_kill_9() {
    let db = temp_file("sessions-kill9.redb", b"");
    std::fs::remove_file(&db).unwrap();
    let json = serde_json::json!({"sessions": {"storage": {"disk": db}}});
    let config = temp_file("sessions-kill9.json", json.to_string().as_bytes());
    let config = config.to_str().unwrap();

    let broker = Broker::start_with(&["--config", config]);
    let port = broker.port();
    let (offline, mut connection) = subscriber("k9-offline", &port, false);
    offline.disconnect().unwrap();
    let deadline = Instant::now() + PHASE;
    while !matches!(
        next(&mut connection, deadline, "offline DISCONNECT"),
        Event::Outgoing(Outgoing::Disconnect)
    ) {}
    drop(connection);
    // Connected, and acknowledging nothing: its window fills, the rest
    // queues behind it.
    let (_online, mut online_connection) = subscriber("k9-online", &port, true);
    let online = std::thread::spawn(move || while let Ok(Ok(_)) = online_connection.recv() {});

    let (client, mut connection) = Client::new(options("k9-pub", &port, true), N);
    let publisher = std::thread::spawn(move || {
        for i in 0..N {
            if client
                .publish(
                    format!("k9/{}", i % 7),
                    QoS::AtLeastOnce,
                    false,
                    i.to_string(),
                )
                .is_err()
            {
                break;
            }
        }
        client
    });
    // PUBLISHes go out in the order they were queued: the n-th carries
    // message n. Kill the broker mid-stream, when half are acknowledged.
    let mut sent: HashMap<u16, usize> = HashMap::new();
    let mut acked = BTreeSet::new();
    let deadline = Instant::now() + PHASE;
    let mut published = 0;
    while acked.len() < N / 2 {
        match next(&mut connection, deadline, "PUBACKs") {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                sent.insert(pkid, published);
                published += 1;
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                acked.insert(sent[&ack.pkid]);
            }
            _ => {}
        }
    }
    drop(broker);
    drop(connection);
    drop(publisher.join());
    let _ = online.join();

    let broker = Broker::start_with(&["--config", config]);
    let port = broker.port();
    for id in ["k9-offline", "k9-online"] {
        let got = resume(id, &port, &acked);
        let unique: BTreeSet<usize> = got.iter().copied().collect();
        assert_eq!(unique.len(), got.len(), "{id}: a message came twice");
        // What was stored and not acknowledged yet may come too, after.
        assert!(acked.is_subset(&unique), "{id}");
    }
    drop(broker);
    let _ = std::fs::remove_file(&db);
}
