//! Persistent sessions on disk (`sessions.storage = {"disk": ...}`): a
//! broker stopped and started again on the same file resumes them. The
//! core's tests cover what is stored with a virtual clock, and
//! `host-shim/tests/sessions_kill9.rs` a kill -9 of the broker's process;
//! these check the running broker across a graceful restart.

use anyhow::{ensure, Result};
use e2e::*;
use mqtt_broker::{BrokerConfig, RetainStorage};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A database path of its own for one test.
fn temp_db(name: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("e2e-sessions-{name}-{}.redb", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

fn on_disk(path: &Path) -> BrokerConfig {
    let mut config = config();
    config.sessions.storage = RetainStorage::Disk(path.to_owned());
    config
}

/// A persistent session's queued messages are delivered after a restart
/// on the same file, with Session Present 1 (v5 MQTT-3.2.2-3, v311
/// MQTT-3.2.2-2), for both protocols.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_survive_a_restart_mqtt_3_2_2_3() -> Result<()> {
    let path = temp_db("queued");
    let broker = Broker::with(on_disk(&path)).await?;
    let mut v5 = v5_opts(&broker, "store-v5");
    v5.set_clean_start(false)
        .set_session_expiry_interval(Some(600));
    let mut sub5 = V5::connect(v5).await?;
    sub5.subscribe("st/#", 1).await?;
    sub5.disconnect().await?;
    let mut v4 = v4_opts(&broker, "store-v4");
    v4.set_clean_session(false);
    let mut sub4 = V4::connect(v4).await?;
    sub4.subscribe("st/#", 2).await?;
    sub4.disconnect().await?;
    let mut publ = V5::connect(v5_opts(&broker, "store-pub")).await?;
    publ.publish("st/a", 1, false, b"one").await?;
    publ.publish("st/b", 2, false, b"two").await?;
    publ.disconnect().await?;
    broker.shutdown().await?;

    let broker = Broker::with(on_disk(&path)).await?;
    let mut v5 = v5_opts(&broker, "store-v5");
    v5.set_clean_start(false)
        .set_session_expiry_interval(Some(600));
    let mut sub5 = V5::connect(v5).await?;
    ensure!(sub5.session_present(), "5.0 session not resumed");
    let mut v4 = v4_opts(&broker, "store-v4");
    v4.set_clean_session(false);
    let mut sub4 = V4::connect(v4).await?;
    ensure!(sub4.session_present(), "3.1.1 session not resumed");
    for (want, qos) in [(&b"one"[..], 1), (b"two", 1)] {
        let got = sub5.next_publish().await?;
        ensure!(got.payload == want && got.qos as u8 == qos, "{got:?}");
    }
    for (want, qos) in [(&b"one"[..], 1), (b"two", 2)] {
        let got = sub4.next_publish().await?;
        ensure!(got.payload == want && got.qos as u8 == qos, "{got:?}");
    }
    sub5.no_publish().await?;
    sub4.no_publish().await?;
    broker.shutdown().await?;
    std::fs::remove_file(&path)?;
    Ok(())
}

/// A QoS 2 publisher whose PUBREC came before the restart: its PUBLISH sent
/// again with DUP is acknowledged and not delivered twice, and its PUBREL
/// after the restart gets PUBCOMP Success (v5 MQTT-4.3.3-10, v311
/// MQTT-4.3.3-2: the packet identifier is kept until the PUBREL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos2_flow_from_a_publisher_completes_across_a_restart_mqtt_4_3_3_10() -> Result<()> {
    let path = temp_db("qos2");
    let broker = Broker::with(on_disk(&path)).await?;
    let mut sub_connect = RawConnect::v5("store-q2-sub");
    sub_connect.clean = false;
    sub_connect.session_expiry = Some(600);
    let mut sub = Raw::connected(&broker, &sub_connect).await?;
    sub.send(&raw_subscribe(5, 1, "q2/t", 2)).await?;
    ensure!(sub.recv().await?.kind() == kind::SUBACK);
    sub.send(&raw_disconnect_v5(0)).await?;
    sub.closed().await?;

    let mut pub_connect = RawConnect::v5("store-q2-pub");
    pub_connect.clean = false;
    pub_connect.session_expiry = Some(600);
    let mut publ = Raw::connected(&broker, &pub_connect).await?;
    publ.send(&raw_publish(5, "q2/t", 2, 7, false, false, b"once"))
        .await?;
    let rec = publ.recv().await?;
    ensure!(rec.kind() == kind::PUBREC && rec.pkid() == 7, "{rec:?}");
    broker.shutdown().await?;
    publ.closed().await?;

    let broker = Broker::with(on_disk(&path)).await?;
    let (mut publ, connack) = Raw::handshake(&broker, &pub_connect).await?;
    ensure!(connack.session_present(), "{connack:?}");
    publ.send(&raw_publish(5, "q2/t", 2, 7, false, true, b"once"))
        .await?;
    let rec = publ.recv().await?;
    ensure!(rec.kind() == kind::PUBREC && rec.pkid() == 7, "{rec:?}");
    publ.send(&raw_ack(kind::PUBREL, 7)).await?;
    let comp = publ.recv().await?;
    ensure!(comp.kind() == kind::PUBCOMP && comp.pkid() == 7, "{comp:?}");
    ensure!(
        comp.body.get(2).copied().unwrap_or(0) == 0,
        "PUBCOMP Success, the identifier was known: {comp:?}"
    );

    let (mut sub, connack) = Raw::handshake(&broker, &sub_connect).await?;
    ensure!(connack.session_present(), "{connack:?}");
    let first = sub.recv().await?.publish(true)?;
    ensure!(&first.payload[..] == b"once" && first.qos == 2, "{first:?}");
    sub.send(&raw_ack(kind::PUBREC, first.pkid)).await?;
    let rel = sub.recv().await?;
    ensure!(rel.kind() == kind::PUBREL, "{rel:?}");
    sub.send(&raw_ack(kind::PUBCOMP, first.pkid)).await?;
    ensure!(
        sub.recv_for(QUIET).await?.is_none(),
        "delivered once, not again for the resent PUBLISH"
    );
    broker.shutdown().await?;
    std::fs::remove_file(&path)?;
    Ok(())
}

/// Session expiry counts from the disconnect on the wall clock, across a
/// restart: a session that expired while the broker was down is gone
/// (v5 MQTT-3.1.2-23 and Session Present 0), one that has not is resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_counts_across_a_restart_mqtt_3_1_2_23() -> Result<()> {
    let path = temp_db("expiry");
    let broker = Broker::with(on_disk(&path)).await?;
    for (id, expiry) in [("store-short", 1), ("store-long", 600)] {
        let mut opts = v5_opts(&broker, id);
        opts.set_clean_start(false)
            .set_session_expiry_interval(Some(expiry));
        let mut sub = V5::connect(opts).await?;
        sub.subscribe("ex/t", 1).await?;
        sub.disconnect().await?;
    }
    broker.shutdown().await?;
    // Longer than the short session's expiry.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let broker = Broker::with(on_disk(&path)).await?;
    for (id, expiry, present) in [("store-short", 1, false), ("store-long", 600, true)] {
        let mut opts = v5_opts(&broker, id);
        opts.set_clean_start(false)
            .set_session_expiry_interval(Some(expiry));
        let sub = V5::connect(opts).await?;
        ensure!(sub.session_present() == present, "{id}");
        sub.disconnect().await?;
    }
    broker.shutdown().await?;
    std::fs::remove_file(&path)?;
    Ok(())
}

/// `retain.storage` and `sessions.storage` naming the same file share it:
/// both survive the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_file_holds_retained_messages_and_sessions() -> Result<()> {
    let path = temp_db("shared-file");
    let mut config = on_disk(&path);
    config.retain.storage = RetainStorage::Disk(path.clone());
    let broker = Broker::with(config.clone()).await?;
    let mut opts = v5_opts(&broker, "store-both");
    opts.set_clean_start(false)
        .set_session_expiry_interval(Some(600));
    let mut sub = V5::connect(opts.clone()).await?;
    sub.subscribe("both/live", 1).await?;
    sub.disconnect().await?;
    let mut publ = V5::connect(v5_opts(&broker, "store-both-pub")).await?;
    publ.publish("both/kept", 1, true, b"retained").await?;
    publ.publish("both/live", 1, false, b"queued").await?;
    publ.disconnect().await?;
    broker.shutdown().await?;

    let broker = Broker::with(config).await?;
    let mut opts = v5_opts(&broker, "store-both");
    opts.set_clean_start(false)
        .set_session_expiry_interval(Some(600));
    let mut sub = V5::connect(opts).await?;
    ensure!(sub.session_present());
    ensure!(sub.next_publish().await?.payload == b"queued"[..]);
    sub.subscribe("both/kept", 1).await?;
    let retained = sub.next_publish().await?;
    ensure!(retained.retain && retained.payload == b"retained"[..]);
    broker.shutdown().await?;
    std::fs::remove_file(&path)?;
    Ok(())
}

/// A session store that is not a database, or is cut short, is a start
/// error naming the file and what to do, not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_session_store_is_a_start_error() -> Result<()> {
    let path = temp_db("damaged");
    let broker = Broker::with(on_disk(&path)).await?;
    let mut opts = v5_opts(&broker, "store-damaged");
    opts.set_clean_start(false)
        .set_session_expiry_interval(Some(600));
    let mut sub = V5::connect(opts).await?;
    sub.subscribe("dm/t", 1).await?;
    sub.disconnect().await?;
    broker.shutdown().await?;
    let len = std::fs::metadata(&path)?.len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)?
        .set_len(len / 2)?;
    let truncated = mqtt_broker::start(on_disk(&path)).await;
    std::fs::write(&path, b"not a database, not at all")?;
    let garbage = mqtt_broker::start(on_disk(&path)).await;
    let _ = std::fs::remove_file(&path);
    for outcome in [truncated, garbage] {
        match outcome {
            Ok(broker) => {
                broker.shutdown().await;
                anyhow::bail!("the broker started on a damaged session store")
            }
            Err(e) => {
                let message = format!("{:#}", anyhow::Error::new(e));
                ensure!(
                    message.contains("session store")
                        && message.contains(&path.display().to_string())
                        && message.contains("damaged")
                        && message.contains("move it away"),
                    "{message}"
                );
            }
        }
    }
    Ok(())
}
