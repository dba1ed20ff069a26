//! The broker's memory under floods from hostile or careless clients, in a
//! broker process of its own so its resident memory can be read: a client
//! that sends PINGREQs or small QoS 1 PUBLISHes and never reads the replies,
//! and a QoS 0 subscriber that never reads while others publish to it. Each flood
//! prints the broker's peak resident memory and must keep it within a bound
//! set by the configured limits (`max_outbound_bytes` and the queues), not
//! by the size of the flood.
//!
//! A test binary without the default harness: it is also the broker process
//! (`serve_builtin_if_asked`).

use anyhow::{ensure, Context, Result};
use e2e::*;
use mqtt_broker::BrokerConfig;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The most a flood may add to the broker's resident memory: the limits
/// below allow a few MiB; the rest is allocator and runtime slack.
const BOUND_MIB: u64 = 48;

/// Bytes each flood sends at most (less when the broker closes the client
/// first): far beyond the bound, so an unbounded queue would show.
const FLOOD: usize = 256 * 1024 * 1024;

fn config() -> BrokerConfig {
    BrokerConfig {
        max_outbound_bytes: 1024 * 1024,
        slow_client_timeout: 2,
        ..BrokerConfig::default()
    }
}

/// Writes `chunk` again and again to a new connection that sent `connect`
/// and never reads, until `FLOOD` bytes, the broker closes it, or the
/// broker's resident memory is over the bound (so a broker that fails the
/// test does not take the machine's memory with it); returns the bytes
/// written.
async fn flood(broker: &BrokerProcess, connect: &RawConnect, chunk: &[u8]) -> Result<usize> {
    let stop_kib = broker.rss_kib().unwrap_or(0) + 2 * BOUND_MIB * 1024;
    let mut stream = TcpStream::connect(broker.addr()).await?;
    stream.write_all(&connect.encode()).await?;
    let mut sent = 0;
    let writing = async {
        while sent < FLOOD && broker.rss_kib().is_some_and(|kib| kib < stop_kib) {
            if stream.write_all(chunk).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
    };
    // Bounded: a broker that neither reads nor closes stops the flood here.
    let _ = tokio::time::timeout(Duration::from_secs(120), writing).await;
    Ok(sent)
}

/// Runs `flood` against a fresh broker process and checks its peak
/// resident memory.
async fn measure<F>(name: &str, run: impl FnOnce(BrokerProcess) -> F) -> Result<()>
where
    F: std::future::Future<Output = Result<(BrokerProcess, String)>>,
{
    let broker = BrokerProcess::builtin(&config()).await?;
    let before = broker
        .rss_kib()
        .context("no /proc: resident memory unknown")?;
    broker.reset_peak();
    let (broker, what) = run(broker).await?;
    let peak = broker.peak_kib().context("peak resident memory")?;
    let grown = peak.saturating_sub(before) / 1024;
    println!(
        "{name}: {what}; broker RSS {} MiB before, peak {} MiB (+{grown} MiB, bound {BOUND_MIB})",
        before / 1024,
        peak / 1024
    );
    ensure!(
        grown <= BOUND_MIB,
        "{name}: the broker grew by {grown} MiB, over {BOUND_MIB} MiB"
    );
    // Still serving.
    let mut raw = Raw::connected_at(broker.addr(), &RawConnect::v4("after")).await?;
    raw.send(&[0xC0, 0x00]).await?;
    ensure!(raw.recv().await?.kind() == kind::PINGRESP);
    Ok(())
}

fn idle(id: &str) -> RawConnect {
    RawConnect {
        keep_alive: 60,
        ..RawConnect::v4(id)
    }
}

fn main() -> Result<()> {
    serve_builtin_if_asked();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        measure("PINGREQ, replies never read", |broker| async move {
            let pings = [0xC0u8, 0x00].repeat(512 * 1024);
            let sent = flood(&broker, &idle("pinger"), &pings).await?;
            Ok((broker, format!("{} MiB of PINGREQ sent", sent >> 20)))
        })
        .await?;

        measure("QoS 1 PUBLISH, PUBACKs never read", |broker| async move {
            let mut chunk = Vec::new();
            for pkid in 1..=50_000u16 {
                chunk.extend(raw_publish(4, "flood/q1", 1, pkid, false, false, b"x"));
            }
            let sent = flood(&broker, &idle("q1-flooder"), &chunk).await?;
            Ok((broker, format!("{} MiB of QoS 1 PUBLISH sent", sent >> 20)))
        })
        .await?;

        measure("QoS 0 subscriber that never reads", |broker| async move {
            let mut sub = Raw::connected_at(broker.addr(), &idle("slow-sub")).await?;
            sub.send(&raw_subscribe(4, 1, "flood/#", 0)).await?;
            ensure!(sub.recv().await?.kind() == kind::SUBACK);
            // The subscriber never reads again; the publisher reads nothing
            // either (QoS 0 has no reply).
            let mut chunk = Vec::new();
            for _ in 0..64 {
                chunk.extend(raw_publish(
                    4,
                    "flood/q0",
                    0,
                    0,
                    false,
                    false,
                    &[b'y'; 8192],
                ));
            }
            let sent = flood(&broker, &idle("q0-publisher"), &chunk).await?;
            drop(sub);
            Ok((
                broker,
                format!("{} MiB of 8 KiB QoS 0 messages published", sent >> 20),
            ))
        })
        .await?;
        anyhow::Ok(())
    })
}
