//! Retained fan-out measured against any broker on loopback: store many
//! retained messages, then time a new wildcard subscription until it has
//! them all, with a rumqttc 3.1.1 client at its defaults or with
//! `mosquitto_sub`. For benchmarks that compare brokers in the same run;
//! nothing here asserts a speed.

use crate::qos4;
use anyhow::{bail, Context, Result};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use tokio::time::{timeout, Instant};

/// How long a subscriber waits for the next message before it gives up.
const IDLE: Duration = Duration::from_secs(10);

/// The topic of retained message `i` of a run: one level under `prefix`, so
/// that a `prefix/#` subscription walks one level with all of them.
pub fn retained_topic(prefix: &str, i: usize) -> String {
    format!("{prefix}/{i:07}")
}

/// Stores `count` retained messages of `payload` bytes at `qos` (0 or 1),
/// topics [`retained_topic`]`(prefix, i)`, through one rumqttc 3.1.1
/// client; then publishes a QoS 1 message (not retained) and waits for its
/// PUBACK (and, at QoS 1, every other). A broker handles a connection's
/// packets in order, so by then all are stored. Returns the time it took.
///
/// A message goes to a subscriber at the lower of the QoS it was published
/// with and the one granted: retained messages that are to be delivered at
/// QoS 1 must be stored at QoS 1.
pub async fn store_retained(
    addr: SocketAddr,
    prefix: &str,
    count: usize,
    payload: usize,
    qos: u8,
) -> Result<Duration> {
    if qos > 1 {
        bail!("retained messages are stored at QoS 0 or 1, not {qos}");
    }
    let mut options = MqttOptions::new(
        format!("store-{prefix}-{}", std::process::id()),
        addr.ip().to_string(),
        addr.port(),
    );
    options.set_keep_alive(Duration::from_secs(60));
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let started = Instant::now();
    let body = vec![b'r'; payload];
    let sync_topic = format!("{prefix}-stored");
    let publish = async {
        for i in 0..count {
            client
                .publish(retained_topic(prefix, i), qos4(qos), true, body.clone())
                .await?;
        }
        client.publish(&sync_topic, qos4(1), false, "sync").await?;
        anyhow::Ok(())
    };
    let acked = async {
        timeout(Duration::from_secs(600), async {
            // The sync message's, and at QoS 1 one for each stored.
            let mut acks_left = if qos == 1 { count + 1 } else { 1 };
            loop {
                if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await? {
                    acks_left -= 1;
                    if acks_left == 0 {
                        return anyhow::Ok(());
                    }
                }
            }
        })
        .await
        .context("storing the retained messages timed out")?
    };
    let (published, acked) = tokio::join!(publish, acked);
    published?;
    acked?;
    let elapsed = started.elapsed();
    client.disconnect().await?;
    let _ = timeout(Duration::from_secs(1), eventloop.poll()).await;
    Ok(elapsed)
}

/// What a new subscription got.
#[derive(Debug, Clone, Copy)]
pub struct Fetched {
    /// Messages received with RETAIN set.
    pub received: usize,
    /// Whether they came in topic order, none twice (rumqttc only; `None`
    /// for `mosquitto_sub`, which is only counted).
    pub in_order: Option<bool>,
    /// From the SUBSCRIBE (or the start of `mosquitto_sub`) to the last
    /// message.
    pub elapsed: Duration,
}

/// Subscribes to `filter` at `qos` with a new rumqttc 3.1.1 client at its
/// defaults (acknowledging each message as it arrives) and receives until
/// `count` retained messages came, or none for a while.
pub async fn fetch_with_rumqttc(
    addr: SocketAddr,
    filter: &str,
    qos: u8,
    count: usize,
) -> Result<Fetched> {
    let options = MqttOptions::new(
        format!("fetch-{}-{}", std::process::id(), filter.len()),
        addr.ip().to_string(),
        addr.port(),
    );
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let started = Instant::now();
    client.subscribe(filter, qos4(qos)).await?;
    let mut received = 0;
    let mut in_order = true;
    let mut previous: Option<String> = None;
    let mut last = started;
    while received < count {
        match timeout(IDLE, eventloop.poll()).await {
            Err(_) => break,
            Ok(event) => {
                if let Event::Incoming(Packet::Publish(publish)) = event? {
                    if publish.retain {
                        received += 1;
                        last = Instant::now();
                        if previous.as_deref() >= Some(publish.topic.as_str()) {
                            in_order = false;
                        }
                        previous = Some(publish.topic);
                    }
                }
            }
        }
    }
    let _ = client.try_disconnect();
    Ok(Fetched {
        received,
        in_order: Some(in_order),
        elapsed: last - started,
    })
}

/// Runs `mosquitto_sub -V {version} -q {qos} -t {filter} -C {count}` (its
/// output thrown away) and times it from start to exit. It exits once it
/// has `count` messages; if it has not after `limit`, it is killed and the
/// fetch is an error.
pub async fn fetch_with_mosquitto_sub(
    addr: SocketAddr,
    version: &str,
    filter: &str,
    qos: u8,
    count: usize,
    limit: Duration,
) -> Result<Fetched> {
    let started = Instant::now();
    let mut child = tokio::process::Command::new("mosquitto_sub")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(["-V", version, "-q", &qos.to_string(), "-t", filter])
        .args(["-C", &count.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot run mosquitto_sub (apt-get install -y mosquitto-clients)")?;
    let status = match timeout(limit, child.wait()).await {
        Ok(status) => status?,
        Err(_) => {
            let _ = child.kill().await;
            bail!("mosquitto_sub did not get {count} messages within {limit:?}");
        }
    };
    let elapsed = started.elapsed();
    if !status.success() {
        bail!("mosquitto_sub failed: {status}");
    }
    Ok(Fetched {
        received: count,
        in_order: None,
        elapsed,
    })
}
