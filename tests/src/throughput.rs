//! Live broker throughput with rumqttc 3.1.1 clients on loopback, against
//! any broker: publishers and subscribers on one topic, in any numbers (one
//! to one, fan-out, fan-in), each client with rumqttc's defaults (in-flight
//! window 100, automatic acknowledgements). For benchmarks that compare
//! brokers in the same run; nothing here asserts a speed.

use crate::qos4;
use anyhow::{bail, Context, Result};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

/// How long a subscriber waits for the next message before it stops
/// counting (QoS 0 messages may be dropped by a broker).
const IDLE: Duration = Duration::from_secs(2);

/// Longest wait for a connection, a SUBACK or a publisher's last
/// acknowledgement.
const STUCK: Duration = Duration::from_secs(60);

/// What to measure: `publishers` clients each publish `messages` messages
/// of `payload` bytes at `qos` to one topic, which `subscribers` clients
/// subscribe to at the same QoS.
#[derive(Debug, Clone, Copy)]
pub struct Traffic {
    pub publishers: usize,
    pub subscribers: usize,
    pub messages: usize,
    pub qos: u8,
    pub payload: usize,
}

/// What the subscribers got.
#[derive(Debug, Clone, Copy)]
pub struct Delivered {
    /// Messages all subscribers should get together.
    pub expected: usize,
    /// Messages they got.
    pub delivered: usize,
    /// From the first publish to the last message received.
    pub elapsed: Duration,
}

impl Delivered {
    /// Messages received per second, all subscribers together.
    pub fn rate(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A client id no other client of this process uses.
fn client_id(role: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "bench-{role}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn options(addr: SocketAddr, role: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id(role), addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(60));
    options
}

/// Polls `eventloop` until `done` says so; errors end it.
async fn drive(
    eventloop: &mut EventLoop,
    mut done: impl FnMut(&Event) -> bool,
    what: &str,
) -> Result<()> {
    timeout(STUCK, async {
        loop {
            let event = eventloop.poll().await?;
            if done(&event) {
                return anyhow::Ok(());
            }
        }
    })
    .await
    .with_context(|| format!("timed out waiting for {what}"))?
}

/// Runs `traffic` against the broker at `addr` once.
pub async fn measure_traffic(addr: SocketAddr, traffic: Traffic) -> Result<Delivered> {
    let topic = format!("{}/t", client_id("topic"));
    let qos = qos4(traffic.qos);
    let per_subscriber = traffic.publishers * traffic.messages;

    // Subscribers first, each with its SUBACK.
    let mut subscribers = Vec::new();
    for _ in 0..traffic.subscribers {
        let (client, mut eventloop) = AsyncClient::new(options(addr, "sub"), 100);
        client.subscribe(&topic, qos).await?;
        drive(
            &mut eventloop,
            |e| matches!(e, Event::Incoming(Packet::SubAck(_))),
            "a SUBACK",
        )
        .await?;
        subscribers.push((client, eventloop));
    }
    // Publishers connected before the clock starts.
    let mut publishers = Vec::new();
    for _ in 0..traffic.publishers {
        let (client, mut eventloop) = AsyncClient::new(options(addr, "pub"), 100);
        drive(
            &mut eventloop,
            |e| matches!(e, Event::Incoming(Packet::ConnAck(_))),
            "a CONNACK",
        )
        .await?;
        publishers.push((client, eventloop));
    }

    let started = Instant::now();
    let mut receiving = JoinSet::new();
    for (client, mut eventloop) in subscribers {
        receiving.spawn(async move {
            let mut got = 0;
            let mut last = Instant::now();
            while got < per_subscriber {
                match timeout(IDLE, eventloop.poll()).await {
                    Err(_) => break,
                    Ok(Err(e)) => return Err(anyhow::Error::from(e)),
                    Ok(Ok(Event::Incoming(Packet::Publish(_)))) => {
                        got += 1;
                        last = Instant::now();
                    }
                    Ok(Ok(_)) => {}
                }
            }
            let _ = client.try_disconnect();
            Ok((got, last))
        });
    }
    let mut sending = JoinSet::new();
    let payload = vec![b'x'; traffic.payload];
    for (client, mut eventloop) in publishers {
        let topic = topic.clone();
        let payload = payload.clone();
        let messages = traffic.messages;
        sending.spawn(async move {
            let publish = async {
                for _ in 0..messages {
                    client.publish(&topic, qos, false, payload.clone()).await?;
                }
                anyhow::Ok(client)
            };
            let mut done = 0;
            let flow = drive(
                &mut eventloop,
                |e| {
                    let last_step = match qos {
                        rumqttc::QoS::AtMostOnce => {
                            matches!(e, Event::Outgoing(Outgoing::Publish(_)))
                        }
                        rumqttc::QoS::AtLeastOnce => {
                            matches!(e, Event::Incoming(Packet::PubAck(_)))
                        }
                        rumqttc::QoS::ExactlyOnce => {
                            matches!(e, Event::Incoming(Packet::PubComp(_)))
                        }
                    };
                    done += usize::from(last_step);
                    done == messages
                },
                "the publisher's acknowledgements",
            );
            let (client, flow) = tokio::join!(publish, flow);
            flow?;
            let client = client?;
            client.disconnect().await?;
            // Flush the DISCONNECT.
            let _ = timeout(Duration::from_secs(1), eventloop.poll()).await;
            anyhow::Ok(())
        });
    }
    while let Some(sent) = sending.join_next().await {
        sent??;
    }
    let mut delivered = 0;
    let mut last = started;
    while let Some(received) = receiving.join_next().await {
        let (got, at) = received??;
        delivered += got;
        last = last.max(at);
    }
    if delivered == 0 {
        bail!("no message delivered");
    }
    Ok(Delivered {
        expected: per_subscriber * traffic.subscribers,
        delivered,
        elapsed: last - started,
    })
}
