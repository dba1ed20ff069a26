//! Retainer options (`retain.*` and `profile`) seen from clients: disk
//! storage across a restart, limits, and AWS IoT Core's exact-topic-only
//! delivery. The core's tests cover each option in detail with a virtual
//! clock; these check that the running broker honours them.

use anyhow::{ensure, Result};
use e2e::*;
use mqtt_broker::{BrokerConfig, RetainStorage};

/// A database path of its own for one test.
fn temp_db(name: &str) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("e2e-retainer-{name}-{}.redb", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// Retained messages acknowledged at QoS 1 are there after a restart on the
/// same file (MQTT-3.3.1-5 across restarts: the server stores the message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_storage_survives_a_restart() -> Result<()> {
    let path = temp_db("restart");
    let mut config = config();
    config.retain.storage = RetainStorage::Disk(path.clone());

    let broker = Broker::with(config.clone()).await?;
    let mut publisher = V5::connect(v5_opts(&broker, "disk-pub")).await?;
    for i in 0..20 {
        publisher
            .publish(&format!("disk/{i:02}"), 1, true, format!("v{i}").as_bytes())
            .await?;
    }
    // Cleared before the restart: must stay cleared.
    publisher.publish("disk/05", 1, true, b"").await?;
    publisher.disconnect().await?;
    broker.shutdown().await?;

    let broker = Broker::with(config).await?;
    let mut sub = V5::connect(v5_opts(&broker, "disk-sub")).await?;
    sub.subscribe("disk/#", 1).await?;
    let mut got = Vec::new();
    for _ in 0..19 {
        let p = sub.next_publish().await?;
        ensure!(p.retain, "RETAIN=1 expected: {p:?}");
        got.push((topic5(&p), String::from_utf8_lossy(&p.payload).into_owned()));
    }
    sub.no_publish().await?;
    let want: Vec<(String, String)> = (0..20)
        .filter(|i| *i != 5)
        .map(|i| (format!("disk/{i:02}"), format!("v{i}")))
        .collect();
    assert_eq!(got, want, "in topic order, the cleared one gone");
    sub.disconnect().await?;
    broker.shutdown().await?;
    std::fs::remove_file(&path)?;
    Ok(())
}

/// `{"profile": "emqx", "retain": {"max_messages": 1}}`: EMQX's defaults with
/// one retained message at most; the second topic is delivered live but not
/// stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_with_an_override_limits_retained_messages() -> Result<()> {
    let config =
        BrokerConfig::from_json(r#"{"profile": "emqx", "port": 0, "retain": {"max_messages": 1}}"#)
            .map_err(anyhow::Error::msg)?;
    assert_eq!(config.max_packet_size, 1024 * 1024, "EMQX's 1 MB");
    let broker = Broker::with(config).await?;
    let mut live = V5::connect(v5_opts(&broker, "live")).await?;
    live.subscribe("lim/#", 0).await?;
    let mut publisher = V5::connect(v5_opts(&broker, "lim-pub")).await?;
    publisher.publish("lim/a", 1, true, b"a").await?;
    publisher.publish("lim/b", 1, true, b"b").await?;
    assert_eq!(topic5(&live.next_publish().await?), "lim/a");
    assert_eq!(topic5(&live.next_publish().await?), "lim/b");

    let mut sub = V5::connect(v5_opts(&broker, "lim-sub")).await?;
    sub.subscribe("lim/#", 0).await?;
    assert_eq!(topic5(&sub.next_publish().await?), "lim/a");
    sub.no_publish().await?;
    broker.shutdown().await
}

/// The `aws-iot` profile: a wildcard subscription gets no retained message,
/// an exact one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_iot_profile_sends_retained_to_exact_filters_only() -> Result<()> {
    let config = BrokerConfig::profile(mqtt_broker::Profile::AwsIot);
    let broker = Broker::with(config).await?;
    let mut publisher = V5::connect(v5_opts(&broker, "aws-pub")).await?;
    publisher.publish("things/t1/config", 1, true, b"c").await?;
    let mut wild = V5::connect(v5_opts(&broker, "aws-wild")).await?;
    wild.subscribe("things/+/config", 1).await?;
    wild.no_publish().await?;
    let mut exact = V5::connect(v5_opts(&broker, "aws-exact")).await?;
    exact.subscribe("things/t1/config", 1).await?;
    let p = exact.next_publish().await?;
    ensure!(p.retain && &p.payload[..] == b"c", "{p:?}");
    broker.shutdown().await
}

/// Stores two retained messages on disk at QoS 1 (so they are on disk when
/// acknowledged) and stops the broker.
async fn store_two(config: &BrokerConfig) -> Result<()> {
    let broker = Broker::with(config.clone()).await?;
    let mut publisher = V5::connect(v5_opts(&broker, "damage-pub")).await?;
    publisher
        .publish("damage/a", 1, true, b"MARKER-AAAA-payload")
        .await?;
    publisher
        .publish("damage/b", 1, true, b"MARKER-BBBB-payload")
        .await?;
    publisher.disconnect().await?;
    broker.shutdown().await
}

/// One changed byte in a stored payload: the entry fails its checksum, is
/// reported and not served; the broker starts and serves the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_stored_byte_is_not_served() -> Result<()> {
    let path = temp_db("flip");
    let mut config = config();
    config.retain.storage = RetainStorage::Disk(path.clone());
    store_two(&config).await?;

    // Copy-on-write leaves older copies of the page behind: change them all.
    let mut bytes = std::fs::read(&path)?;
    let found: Vec<usize> = bytes
        .windows(11)
        .enumerate()
        .filter(|(_, w)| w == b"MARKER-AAAA")
        .map(|(at, _)| at)
        .collect();
    ensure!(!found.is_empty(), "payload not found in the file");
    for at in found {
        bytes[at + 7] = b'X';
    }
    std::fs::write(&path, &bytes)?;

    let broker = Broker::with(config).await?;
    let mut sub = V5::connect(v5_opts(&broker, "damage-sub")).await?;
    sub.subscribe("damage/#", 1).await?;
    let p = sub.next_publish().await?;
    ensure!(
        topic5(&p) == "damage/b" && &p.payload[..] == b"MARKER-BBBB-payload",
        "{p:?}"
    );
    sub.no_publish().await?;
    sub.disconnect().await?;
    broker.shutdown().await?;
    std::fs::remove_file(&path)?;
    Ok(())
}

/// A store file cut to half its length is a start error naming the file and
/// what to do, not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_store_is_a_start_error() -> Result<()> {
    let path = temp_db("truncated");
    let mut config = config();
    config.retain.storage = RetainStorage::Disk(path.clone());
    store_two(&config).await?;
    let len = std::fs::metadata(&path)?.len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)?
        .set_len(len / 2)?;

    let outcome = mqtt_broker::start(config).await;
    let _ = std::fs::remove_file(&path);
    match outcome {
        Ok(broker) => {
            broker.shutdown().await;
            anyhow::bail!("the broker started on a truncated store")
        }
        Err(e) => {
            let message = format!("{:#}", anyhow::Error::new(e));
            ensure!(
                message.contains(&path.display().to_string())
                    && message.contains("damaged")
                    && message.contains("move it away"),
                "{message}"
            );
            Ok(())
        }
    }
}
