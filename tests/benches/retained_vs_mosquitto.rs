//! Retained fan-out of the built-in broker next to Mosquitto tuned to hold
//! and deliver them all, in the same run: many retained messages to a new
//! `a/#` subscription, with the time to the last message and the broker's
//! resident memory.
//!
//! ```text
//! cargo bench -p e2e --bench retained_vs_mosquitto
//! cargo bench -p e2e --bench retained_vs_mosquitto -- --counts 10000,100000 --rounds 3
//! cargo bench -p e2e --bench retained_vs_mosquitto -- --counts 1000000 --clients rumqttc
//! cargo bench -p e2e --bench retained_vs_mosquitto -- --help
//! ```
//!
//! Each broker runs in a process of its own on 127.0.0.1: the built-in one
//! is this binary again (`serve_builtin_if_asked`) with the default
//! configuration; Mosquitto is `/usr/sbin/mosquitto` with
//! `max_queued_messages 0` (no limit, so it queues every retained message
//! for the new subscriber, a million included) and otherwise its defaults
//! (`max_inflight_messages 20`).
//!
//! For each broker and each of `--counts`: a fresh broker stores that many
//! retained QoS 1 messages of 64 bytes on `a/0000000`, `a/0000001`, ...
//! (one level, so `a/#` walks one level holding all of them); then a new
//! `a/#` subscription at QoS 1 fetches them, `--rounds` times with each
//! client:
//!
//! - `rumqttc`: a rumqttc 3.1.1 client at its defaults, acknowledging
//!   each message as it arrives; also checks topic order and duplicates.
//! - `mosquitto_sub`: `mosquitto_sub -V mqttv5 -q 1 -t 'a/#' -C COUNT`
//!   with its defaults, output thrown away.
//!
//! The broker's resident memory is sampled every 10 ms during the fetches:
//! the table shows it just before the first SUBSCRIBE and its peak, and the
//! growth between them.
//!
//! Then, with `--qos0 N` (0 skips), a QoS 0 `q/#` subscription to N
//! retained QoS 0 messages (by default more than the built-in broker's
//! `max_queued_messages`, 100,000) counts what arrives.

use anyhow::{bail, Context, Result};
use clap::builder::RangedU64ValueParser;
use clap::Parser;
use e2e::*;
use mqtt_broker::BrokerConfig;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Longest `mosquitto_sub` may take before it is killed.
const MOSQUITTO_SUB_LIMIT: Duration = Duration::from_secs(600);

/// Mosquitto's configuration: no queue limit, so it can hand the new
/// subscriber every retained message.
const TUNED: &[&str] = &["max_queued_messages 0"];

/// Retained fan-out: built-in broker vs Mosquitto (max_queued_messages 0).
#[derive(Parser)]
#[command(bin_name = "cargo bench -p e2e --bench retained_vs_mosquitto --")]
struct Options {
    /// Retained QoS 1 messages for the a/# fetches
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    counts: Vec<usize>,
    /// Retained QoS 0 messages for the q/# QoS 0 fetch; 0 skips
    #[arg(long, default_value_t = 150_000)]
    qos0: usize,
    /// Fetches per client and count; best and median shown
    #[arg(long, default_value_t = 3, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    rounds: usize,
    /// Clients: rumqttc, mosquitto_sub
    #[arg(long, value_delimiter = ',', default_value = "rumqttc,mosquitto_sub")]
    clients: Vec<String>,
    /// Brokers: builtin, mosquitto
    #[arg(long, value_delimiter = ',', default_value = "builtin,mosquitto")]
    brokers: Vec<String>,
    /// Passed by `cargo bench` to every bench target
    #[arg(long, hide = true)]
    bench: bool,
}

async fn start(broker: &str) -> Result<BrokerProcess> {
    match broker {
        "builtin" => BrokerProcess::builtin(&BrokerConfig::default()).await,
        "mosquitto" => BrokerProcess::mosquitto(TUNED).await,
        other => bail!("unknown broker {other:?}; see --help"),
    }
}

fn display(broker: &str) -> &'static str {
    if broker == "builtin" {
        "built-in"
    } else {
        "Mosquitto (max_queued_messages 0)"
    }
}

/// Samples a process's resident memory every 10 ms until stopped; keeps
/// the highest figure.
struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if let Some(kib) = process_status_kib(pid, "VmRSS:") {
                    p.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        RssSampler { peak, stop, task }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn secs(mut values: Vec<f64>) -> String {
    values.sort_by(f64::total_cmp);
    format!(
        "{:.3} / {:.3}",
        values.first().copied().unwrap_or(f64::NAN),
        values[values.len() / 2]
    )
}

async fn fetch(
    client: &str,
    broker: &BrokerProcess,
    filter: &str,
    qos: u8,
    count: usize,
) -> Result<Fetched> {
    match client {
        "rumqttc" => fetch_with_rumqttc(broker.addr(), filter, qos, count).await,
        "mosquitto_sub" => {
            fetch_with_mosquitto_sub(
                broker.addr(),
                "mqttv5",
                filter,
                qos,
                count,
                MOSQUITTO_SUB_LIMIT,
            )
            .await
        }
        other => bail!("unknown client {other:?}; see --help"),
    }
}

async fn run(options: &Options) -> Result<()> {
    println!(
        "| broker | client | retained | seconds (best / median of {}) | received (last run) | in order | broker RSS before -> peak (MiB), growth |",
        options.rounds
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for broker_name in &options.brokers {
        for &count in &options.counts {
            let broker = start(broker_name).await?;
            store_retained(broker.addr(), "a", count, 64, 1).await?;
            for client in &options.clients {
                let mut times = Vec::new();
                let mut last = None;
                let before = broker.rss_kib().unwrap_or(0);
                let sampler = RssSampler::start(broker.pid());
                for _ in 0..options.rounds {
                    let got = fetch(client, &broker, "a/#", 1, count)
                        .await
                        .with_context(|| format!("{client} on {}", display(broker_name)))?;
                    times.push(got.elapsed.as_secs_f64());
                    last = Some(got);
                }
                let peak = sampler.stop().await.max(before);
                let last = last.context("at least one round")?;
                println!(
                    "| {} | {client} QoS 1 | {count} | {} | {} | {} | {:.1} -> {:.1}, {:.1} |",
                    display(broker_name),
                    secs(times),
                    last.received,
                    in_order(last),
                    mib(before),
                    mib(peak),
                    mib(peak - before),
                );
            }
        }
        if options.qos0 > 0 {
            let broker = start(broker_name).await?;
            store_retained(broker.addr(), "q", options.qos0, 64, 0).await?;
            let before = broker.rss_kib().unwrap_or(0);
            let sampler = RssSampler::start(broker.pid());
            let got = fetch_with_rumqttc(broker.addr(), "q/#", 0, options.qos0).await?;
            let peak = sampler.stop().await.max(before);
            println!(
                "| {} | rumqttc QoS 0 | {} | {:.3} | {} | {} | {:.1} -> {:.1}, {:.1} |",
                display(broker_name),
                options.qos0,
                got.elapsed.as_secs_f64(),
                got.received,
                in_order(got),
                mib(before),
                mib(peak),
                mib(peak - before),
            );
        }
    }
    Ok(())
}

fn in_order(fetched: Fetched) -> &'static str {
    match fetched.in_order {
        Some(true) => "yes",
        Some(false) => "no",
        None => "n/a",
    }
}

fn main() -> Result<()> {
    serve_builtin_if_asked();
    let options = Options::parse();
    if options.brokers.iter().any(|b| b == "mosquitto") && !BrokerProcess::mosquitto_installed() {
        bail!("{MOSQUITTO} is not installed (apt-get install -y mosquitto)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(&options))
}
