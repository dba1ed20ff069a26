//! Arrival order across connections, the way users' tests meet it: client
//! B subscribes and client A publishes at once, nobody waiting for the
//! SUBACK, on fresh raw connections with TCP_NODELAY. A broker that handles
//! what reached its sockets first, first, delivers every round; one that
//! lets the PUBLISH overtake the SUBSCRIBE loses it. Runs against any broker
//! on loopback, so the built-in one and Mosquitto can be compared.

use crate::*;
use anyhow::Result;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long B waits for the message in each round.
pub const ROUND_WAIT: Duration = Duration::from_secs(1);

/// A prefix no other run on the same broker uses: this process, and a
/// counter within it.
fn unique_tag(what: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{what}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// One round on fresh 3.1.1 connections: B connects, A connects, then B
/// sends SUBSCRIBE (QoS 0) and A sends a QoS 0 PUBLISH to the same topic
/// right after, without waiting for the SUBACK. True when B receives the
/// message within `wait`.
pub async fn subscribe_then_publish_round(
    addr: SocketAddr,
    topic: &str,
    wait: Duration,
) -> Result<bool> {
    let mut b = Raw::connected_at(addr, &RawConnect::v4(&format!("{topic}-b"))).await?;
    let mut a = Raw::connected_at(addr, &RawConnect::v4(&format!("{topic}-a"))).await?;
    b.send(&raw_subscribe(4, 1, topic, 0)).await?;
    a.send(&raw_publish(4, topic, 0, 0, false, false, b"x"))
        .await?;
    let deadline = Instant::now() + wait;
    let delivered = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match b.recv_for(left).await? {
            None => break false,
            Some(frame) if frame.kind() == kind::PUBLISH => break true,
            // The SUBACK.
            Some(_) => {}
        }
    };
    a.send(&raw_disconnect_v4()).await?;
    b.send(&raw_disconnect_v4()).await?;
    Ok(delivered)
}

/// `rounds` rounds of [`subscribe_then_publish_round`], each on its own
/// topic; returns how many delivered.
pub async fn subscribe_then_publish_rounds(
    addr: SocketAddr,
    rounds: usize,
    wait: Duration,
) -> Result<usize> {
    let tag = unique_tag("order");
    let mut delivered = 0;
    for round in 0..rounds {
        let topic = format!("{tag}/{round}");
        if subscribe_then_publish_round(addr, &topic, wait).await? {
            delivered += 1;
        }
    }
    Ok(delivered)
}
/// A background publisher loading a broker: QoS 0 PUBLISHes of 64 bytes,
/// as fast as TCP takes them, to a subscriber that reads and discards them
/// (so the broker routes and writes every one). Stops when dropped.
pub struct Load {
    tasks: Vec<JoinHandle<()>>,
    sent: Arc<AtomicU64>,
}

impl Load {
    /// Connects the subscriber, waits for its SUBACK, and starts the
    /// publisher.
    pub async fn start(addr: SocketAddr) -> Result<Load> {
        let tag = unique_tag("load");
        let topic = format!("{tag}/t");
        let mut sub = Raw::connected_at(addr, &RawConnect::v4(&format!("{tag}-sub"))).await?;
        sub.send(&raw_subscribe(4, 1, &topic, 0)).await?;
        sub.recv().await?;
        let mut publisher = Raw::connected_at(addr, &RawConnect::v4(&format!("{tag}-pub"))).await?;
        let one = raw_publish(4, &topic, 0, 0, false, false, &[b'x'; 64]);
        let burst: Vec<u8> = one.iter().copied().cycle().take(one.len() * 64).collect();
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let publish = tokio::spawn(async move {
            while publisher.send(&burst).await.is_ok() {
                counter.fetch_add(64, Ordering::Relaxed);
            }
        });
        let drain = tokio::spawn(async move {
            sub.discard().await;
        });
        Ok(Load {
            tasks: vec![publish, drain],
            sent,
        })
    }

    /// Messages published so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
