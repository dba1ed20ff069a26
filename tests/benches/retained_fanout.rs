//! 100,000 retained topics delivered to one `#` subscriber at QoS 1 through
//! the built-in broker, in-process: every message must arrive exactly once,
//! and the broker must stream them from its store rather than copy them all
//! into the session's queue. Prints the times and the process's resident
//! memory: after storing, and the peak during the fan-out (VmHWM reset
//! through /proc/self/clear_refs on Linux).
//!
//! `cargo bench -p e2e --bench retained_fanout` (release build), or with a
//! count: `cargo bench -p e2e --bench retained_fanout -- 200000`.

use mqtt_broker::{self as broker, BrokerConfig};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::time::{Duration, Instant};

/// A `/proc/self/status` field in kB, where there is one.
fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(kb: Option<u64>) -> String {
    kb.map_or_else(
        || "n/a".to_owned(),
        |kb| format!("{:.1} MiB", kb as f64 / 1024.0),
    )
}

fn options(id: &str, port: u16) -> MqttOptions {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(60));
    options.set_inflight(1000);
    options
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let broker = broker::start(BrokerConfig::ephemeral()).await?;
    let port = broker.local_addr().port();
    let rss_start = status_kb("VmRSS:");

    // Store: n retained QoS 1 messages of 16 bytes, all acknowledged.
    let started = Instant::now();
    let (client, mut events) = AsyncClient::new(options("fanout-pub", port), 1000);
    let publisher = tokio::spawn(async move {
        for i in 0..n {
            let topic = format!("fan/{:03}/{i:07}", i % 1000);
            client
                .publish(topic, QoS::AtLeastOnce, true, format!("{i:016}"))
                .await?;
        }
        anyhow::Ok(client)
    });
    let mut acked = 0;
    while acked < n {
        if let Event::Incoming(Packet::PubAck(_)) = events.poll().await? {
            acked += 1;
        }
    }
    let publisher = publisher.await??;
    publisher.disconnect().await?;
    let store_time = started.elapsed();
    let rss_stored = status_kb("VmRSS:");

    // Fan-out: one `#` subscriber at QoS 1 (auto-acknowledged), broker
    // in-flight window 100 by default.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let started = Instant::now();
    let (client, mut events) = AsyncClient::new(options("fanout-sub", port), 1000);
    client.subscribe("#", QoS::AtLeastOnce).await?;
    let mut seen = vec![false; n];
    let mut got = 0;
    while got < n {
        if let Event::Incoming(Packet::Publish(p)) = events.poll().await? {
            anyhow::ensure!(p.retain, "RETAIN=1 expected");
            let i: usize = p.topic.rsplit('/').next().unwrap_or("").parse()?;
            anyhow::ensure!(
                !std::mem::replace(&mut seen[i], true),
                "delivered twice: {}",
                p.topic
            );
            got += 1;
        }
    }
    let fanout_time = started.elapsed();
    let peak_fanout = status_kb("VmHWM:");
    client.disconnect().await?;
    broker.shutdown().await;

    println!("retained messages        {n}");
    println!(
        "store (QoS 1, acked)     {:.2} s, {:.0} msg/s",
        store_time.as_secs_f64(),
        n as f64 / store_time.as_secs_f64()
    );
    println!(
        "fan-out to '#' (QoS 1)   {:.2} s, {:.0} msg/s, all {n} once",
        fanout_time.as_secs_f64(),
        n as f64 / fanout_time.as_secs_f64()
    );
    println!("RSS at start             {}", mib(rss_start));
    println!("RSS after storing        {}", mib(rss_stored));
    println!("peak RSS during fan-out  {}", mib(peak_fanout));
    Ok(())
}
