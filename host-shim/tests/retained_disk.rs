//! Retained messages on disk survive a `kill -9` of the broker process: every
//! retained QoS 1 message whose PUBACK the publisher received before the kill
//! is delivered after a restart on the same file. The broker acknowledges a
//! retained PUBLISH only once its disk transaction has committed, so a PUBACK
//! means the message is on disk.

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_host-shim");

/// Retained messages published before the kill.
const N: usize = 500;

/// `host-shim broker --config FILE --port 0`, and the port it announced.
fn start(config: &std::path::Path) -> (Child, u16) {
    let mut child = Command::new(BIN)
        .args(["broker", "--port", "0", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the broker starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) else {
        let _ = child.kill();
        panic!("the broker did not announce its address");
    };
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (child, port)
}

fn options(id: &str, port: u16) -> MqttOptions {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(100);
    options
}

#[test]
fn acknowledged_retained_messages_survive_kill_9() {
    let dir = std::env::temp_dir();
    let db = dir.join(format!("host-shim-kill9-{}.redb", std::process::id()));
    let config = dir.join(format!("host-shim-kill9-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&db);
    let json = serde_json::json!({"retain": {"storage": {"disk": db}}});
    std::fs::write(&config, json.to_string()).unwrap();

    let (mut broker, port) = start(&config);
    let (client, mut connection) = Client::new(options("kill9-pub", port), 1000);
    let publisher = std::thread::spawn(move || {
        for i in 0..N {
            let topic = format!("k9/{i:04}");
            client
                .publish(topic, QoS::AtLeastOnce, true, format!("v{i}"))
                .expect("queued");
        }
        client
    });
    // Count PUBACKs, then kill the broker the moment the last one arrives:
    // nothing is given time to settle.
    let mut acked = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    for event in connection.iter() {
        assert!(Instant::now() < deadline, "PUBACKs too slow");
        match event {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                acked += 1;
                if acked == N {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => panic!("publisher connection failed: {e}"),
        }
    }
    broker.kill().expect("SIGKILL sent");
    broker.wait().unwrap();
    drop(publisher.join());
    drop(connection);

    let (mut broker, port) = start(&config);
    let (client, mut connection) = Client::new(options("kill9-sub", port), 1000);
    client.subscribe("k9/#", QoS::AtLeastOnce).unwrap();
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for event in connection.iter() {
        assert!(Instant::now() < deadline, "retained messages too slow");
        if let Ok(Event::Incoming(Packet::Publish(p))) = event {
            assert!(p.retain);
            let i: usize = p.topic[3..].parse().unwrap();
            assert_eq!(&p.payload[..], format!("v{i}").as_bytes());
            assert!(seen.insert(p.topic), "delivered twice");
            if seen.len() == N {
                break;
            }
        }
    }
    assert_eq!(seen.len(), N);
    let _ = broker.kill();
    let _ = broker.wait();
    let _ = std::fs::remove_file(&db);
    let _ = std::fs::remove_file(&config);
}
