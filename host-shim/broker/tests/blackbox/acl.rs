//! Authorization: an `acl_file` in Mosquitto's format, enforced on
//! SUBSCRIBE, PUBLISH, deliveries (retained ones included) and wills.

use anyhow::{bail, ensure, Result};
use e2e::*;
use mqtt_broker::BrokerConfig;
use std::path::PathBuf;
use std::time::Duration;

const ACL: &str = "\
# anonymous clients
topic read public/#

user alice
topic readwrite data/#
topic deny data/secret/#

user bob
topic read data/#
topic write data/secret/in

# every client
pattern readwrite devices/%c/#
pattern read inbox/%u
";

/// A broker with the ACL above, the file removed when the broker is gone.
struct AclBroker {
    broker: Broker,
    path: PathBuf,
}

impl AclBroker {
    async fn start(name: &str, acl: &str) -> Result<AclBroker> {
        let path =
            std::env::temp_dir().join(format!("e2e-broker-acl-{name}-{}", std::process::id()));
        std::fs::write(&path, acl)?;
        let broker = Broker::with(BrokerConfig {
            acl_file: Some(path.clone()),
            ..config()
        })
        .await;
        if broker.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        Ok(AclBroker {
            broker: broker?,
            path,
        })
    }

    async fn shutdown(self) -> Result<()> {
        let _ = std::fs::remove_file(&self.path);
        self.broker.shutdown().await
    }
}

/// A raw connection as `user` (no password: the ACL alone is tested).
async fn client(broker: &Broker, level: u8, id: &str, user: Option<&str>) -> Result<Raw> {
    let base = if level == 5 {
        RawConnect::v5(id)
    } else {
        RawConnect::v4(id)
    };
    let connect = RawConnect {
        username: user.map(str::to_owned),
        password: user.map(|_| "pw".to_owned()),
        ..base
    };
    Raw::connected(broker, &connect).await
}

/// Subscribes to one filter at QoS 1; returns the SUBACK's code.
async fn subscribe(raw: &mut Raw, level: u8, filter: &str) -> Result<u8> {
    raw.send(&raw_subscribe(level, 1, filter, 1)).await?;
    let f = raw.recv().await?;
    ensure!(f.kind() == kind::SUBACK, "expected SUBACK, got {f:?}");
    Ok(*f.body.last().unwrap_or(&0xFF))
}

/// Publishes at `qos` and returns the acknowledgement (PUBACK or PUBREC)
/// for QoS 1 and 2.
async fn publish(
    raw: &mut Raw,
    level: u8,
    topic: &str,
    qos: u8,
    retain: bool,
) -> Result<Option<Frame>> {
    raw.send(&raw_publish(level, topic, qos, 7, retain, false, b"m"))
        .await?;
    if qos == 0 {
        return Ok(None);
    }
    let f = raw.recv().await?;
    ensure!(
        f.kind() == if qos == 1 { kind::PUBACK } else { kind::PUBREC },
        "expected an acknowledgement, got {f:?}"
    );
    Ok(Some(f))
}

/// The reason code of a 5.0 PUBACK or PUBREC (0 when left out).
fn ack_reason(f: &Frame) -> u8 {
    f.body.get(2).copied().unwrap_or(0)
}

/// The topics of the PUBLISHes that arrive within a short while.
async fn received_topics(raw: &mut Raw, v5: bool) -> Result<Vec<String>> {
    let mut topics = Vec::new();
    while let Some(f) = raw.recv_for(Duration::from_millis(300)).await? {
        if f.kind() == kind::PUBLISH {
            let p = f.publish(v5)?;
            if p.qos > 0 {
                raw.send(&raw_ack(kind::PUBACK, p.pkid)).await?;
            }
            topics.push(p.topic);
        }
    }
    Ok(topics)
}

/// SUBSCRIBE to a filter no rule lets the client read gets 0x87 Not
/// authorized on 5.0 (MQTT-3.9.3-1 reason codes) and 0x80 Failure on 3.1.1
/// (MQTT-3.9.3-2 return codes); allowed filters are granted, patterns
/// resolved per client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_refused_by_the_acl() -> Result<()> {
    let acl = AclBroker::start("sub", ACL).await?;
    for (level, refused) in [(5, 0x87), (4, 0x80)] {
        let id = format!("sub-{level}");
        let mut bob = client(&acl.broker, level, &id, Some("bob")).await?;
        for (filter, want) in [
            ("data/#", 1),
            ("data/+/x", 1),
            ("#", refused),
            ("public/#", refused),
            ("other", refused),
            ("inbox/bob", 1),
            ("inbox/alice", refused),
            (&format!("devices/{id}/#"), 1),
            ("devices/someone-else/x", refused),
        ] {
            let code = subscribe(&mut bob, level, filter).await?;
            ensure!(code == want, "level {level} {filter}: got {code:#04x}");
        }
        let mut anon = client(&acl.broker, level, &format!("anon-{level}"), None).await?;
        ensure!(subscribe(&mut anon, level, "public/#").await? == 1);
        ensure!(subscribe(&mut anon, level, "data/#").await? == refused);
        ensure!(subscribe(&mut anon, level, "inbox/+").await? == refused);
    }
    acl.shutdown().await
}

/// A PUBLISH the ACL does not allow: on 5.0 PUBACK and PUBREC carry 0x87
/// Not authorized (MQTT-3.4.2.1 / 3.5.2.1 reason codes) and QoS 0 is
/// dropped; on 3.1.1 the message is acknowledged as usual and dropped, as
/// Mosquitto does. Either way no subscriber gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_refused_by_the_acl() -> Result<()> {
    let acl = AclBroker::start("pub", ACL).await?;
    let mut reader = client(&acl.broker, 5, "pub-reader", Some("bob")).await?;
    ensure!(subscribe(&mut reader, 5, "data/#").await? == 1);

    // bob may only read: his own publish is refused.
    let f = publish(&mut reader, 5, "data/by-bob", 1, false)
        .await?
        .unwrap();
    ensure!(ack_reason(&f) == 0x87, "{f:?}");

    let mut alice5 = client(&acl.broker, 5, "pub-alice5", Some("alice")).await?;
    let f = publish(&mut alice5, 5, "data/ok5", 1, false)
        .await?
        .unwrap();
    ensure!(ack_reason(&f) < 0x80, "allowed publish refused: {f:?}");
    for (topic, qos) in [("other/x", 1), ("data/secret/x", 2), ("public/x", 1)] {
        let f = publish(&mut alice5, 5, topic, qos, false).await?.unwrap();
        ensure!(ack_reason(&f) == 0x87, "{topic} QoS {qos}: {f:?}");
    }
    publish(&mut alice5, 5, "other/qos0", 0, false).await?;
    let mut alice4 = client(&acl.broker, 4, "pub-alice4", Some("alice")).await?;
    let f = publish(&mut alice4, 4, "data/ok4", 1, false)
        .await?
        .unwrap();
    ensure!(f.body.len() == 2, "3.1.1 PUBACK: {f:?}");
    let f = publish(&mut alice4, 4, "nowhere/x", 1, false)
        .await?
        .unwrap();
    ensure!(f.body.len() == 2, "3.1.1 has no refusal code: {f:?}");
    let f = publish(&mut alice4, 4, "nowhere/x", 2, false)
        .await?
        .unwrap();
    alice4.send(&raw_ack(kind::PUBREL, f.pkid())).await?;
    ensure!(alice4.recv().await?.kind() == kind::PUBCOMP);

    let topics = received_topics(&mut reader, true).await?;
    ensure!(
        topics == ["data/ok5", "data/ok4"],
        "only allowed messages are routed: {topics:?}"
    );
    acl.shutdown().await
}

/// Deliveries are checked against the receiver's read rules: a deny rule
/// holds back live and retained messages that its subscription matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_and_retained_messages_follow_read_rules() -> Result<()> {
    let acl = AclBroker::start("read", ACL).await?;
    let mut alice = client(&acl.broker, 5, "read-alice", Some("alice")).await?;
    let mut bob = client(&acl.broker, 4, "read-bob", Some("bob")).await?;
    // bob may write data/secret/in, which alice may not read.
    let f = publish(&mut alice, 5, "data/open", 1, true).await?.unwrap();
    ensure!(ack_reason(&f) < 0x80, "{f:?}");
    let f = publish(&mut bob, 4, "data/secret/in", 1, true)
        .await?
        .unwrap();
    ensure!(f.body.len() == 2, "{f:?}");

    ensure!(subscribe(&mut alice, 5, "data/#").await? == 1);
    let retained = received_topics(&mut alice, true).await?;
    ensure!(retained == ["data/open"], "alice, retained: {retained:?}");
    ensure!(subscribe(&mut bob, 4, "data/#").await? == 1);
    let retained = received_topics(&mut bob, false).await?;
    ensure!(
        retained == ["data/open", "data/secret/in"],
        "bob has no deny rule: {retained:?}"
    );

    publish(&mut bob, 4, "data/secret/in", 0, false).await?;
    publish(&mut alice, 5, "data/live", 0, false).await?;
    let live = received_topics(&mut alice, true).await?;
    ensure!(live == ["data/live"], "alice, live: {live:?}");
    let live = received_topics(&mut bob, false).await?;
    ensure!(
        live == ["data/secret/in", "data/live"],
        "bob, live: {live:?}"
    );
    acl.shutdown().await
}

/// A will to a topic the client may not write refuses the CONNECT with Not
/// authorized (5.0 0x87, 3.1.1 return code 5), so it can never be sent; a
/// will it may write is accepted and sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wills_follow_write_rules() -> Result<()> {
    let acl = AclBroker::start("will", ACL).await?;
    for (level, refused) in [(5, 0x87), (4, 5)] {
        let base = if level == 5 {
            RawConnect::v5("will-alice")
        } else {
            RawConnect::v4("will-alice")
        };
        let connect = RawConnect {
            username: Some("alice".to_owned()),
            password: Some("pw".to_owned()),
            will: Some(RawWill::new("public/will", b"gone", 0, false)),
            ..base.clone()
        };
        let (mut raw, connack) = Raw::handshake(&acl.broker, &connect).await?;
        ensure!(
            connack.connack_code() == refused,
            "level {level}: {connack:?}"
        );
        raw.closed().await?;

        let mut watcher = client(&acl.broker, level, "will-watch", Some("bob")).await?;
        ensure!(subscribe(&mut watcher, level, "data/#").await? == 1);
        let connect = RawConnect {
            will: Some(RawWill::new("data/will", b"gone", 0, false)),
            ..connect
        };
        let raw = Raw::connected(&acl.broker, &connect).await?;
        drop(raw);
        let topics = received_topics(&mut watcher, level == 5).await?;
        ensure!(topics == ["data/will"], "level {level}: {topics:?}");
    }
    acl.shutdown().await
}

/// An ACL file with a bad line is a start error naming the file and the
/// line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_file_errors_name_the_file_and_line() -> Result<()> {
    let path = std::env::temp_dir().join(format!("e2e-broker-acl-bad-{}", std::process::id()));
    std::fs::write(&path, "user alice\ntopic read ok/#\ntopic read bad/#/x\n")?;
    let outcome = mqtt_broker::start(BrokerConfig {
        acl_file: Some(path.clone()),
        ..config()
    })
    .await;
    let _ = std::fs::remove_file(&path);
    match outcome {
        Ok(broker) => {
            broker.shutdown().await;
            bail!("the broker started")
        }
        Err(e) => {
            let e = e.to_string();
            ensure!(
                e.contains(&path.display().to_string()) && e.contains("line 3"),
                "{e}"
            );
            Ok(())
        }
    }
}
