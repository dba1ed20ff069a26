//! Retained fan-out of the built-in broker next to Mosquitto tuned to hold
//! and deliver them all, in the same run: many retained messages to a new
//! `a/#` subscription, with the time to the last message and the broker's
//! resident memory.
//!
//! ```text
//! cargo bench -p e2e --bench report -- retained
//! cargo bench -p e2e --bench report -- retained --counts 10000,100000 --rounds 3
//! cargo bench -p e2e --bench report -- retained --counts 1000000 --clients rumqttc
//! ```
//!
//! Each broker runs in a process of its own on 127.0.0.1: the built-in one
//! is this binary again (`serve_builtin_if_asked`) with the default
//! configuration; Mosquitto is `/usr/sbin/mosquitto` with
//! `max_queued_messages 0` (no limit, so it queues every retained message
//! for the new subscriber, a million included) and otherwise its defaults
//! (`max_inflight_messages 20`).
//!
//! For each of `--counts`: a fresh broker of each kind stores that many
//! retained QoS 1 messages of 64 bytes on `a/0000000`, `a/0000001`, ...
//! (one level, so `a/#` walks one level holding all of them); then a new
//! `a/#` subscription at QoS 1 fetches them, `--rounds` times with each
//! client, the brokers taking turns round by round:
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

use crate::figures::{median, Figure, Goal, Measure};
use anyhow::{bail, Context, Result};
use clap::builder::RangedU64ValueParser;
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

/// Broker memory growth allowed while a million retained messages are
/// delivered, in MiB.
const GROWTH_LIMIT_MIB: f64 = 64.0;

/// Retained fan-out: built-in broker vs Mosquitto (max_queued_messages 0).
#[derive(clap::Args, Clone)]
pub struct Options {
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
}

impl Options {
    /// Checks what the run needs.
    pub fn check(&self) -> Result<()> {
        if self.brokers.iter().any(|b| b == "mosquitto") && !BrokerProcess::mosquitto_installed() {
            bail!("{MOSQUITTO} is not installed (apt-get install -y mosquitto)");
        }
        Ok(())
    }
}

/// One client's fetches from one broker.
struct Fetches {
    broker: String,
    client: String,
    count: usize,
    median_secs: f64,
    growth_mib: f64,
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

/// One broker's fetches with one client: their times, the last fetch,
/// and its resident memory before them and while they ran.
struct Rounds {
    times: Vec<f64>,
    last: Option<Fetched>,
    before: u64,
    sampler: RssSampler,
}

impl Rounds {
    fn start(broker: &BrokerProcess) -> Rounds {
        Rounds {
            times: Vec::new(),
            last: None,
            before: broker.rss_kib().unwrap_or(0),
            sampler: RssSampler::start(broker.pid()),
        }
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

/// Runs the fetches; prints their table and returns their figures.
pub async fn run(options: &Options) -> Result<Vec<Figure>> {
    let mut results = Vec::new();
    let mut figures = Vec::new();
    println!(
        "| broker | client | retained | seconds (best / median of {}) | received (last run) | in order | broker RSS before -> peak (MiB), growth |",
        options.rounds
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for &count in &options.counts {
        let mut brokers = Vec::new();
        for name in &options.brokers {
            let broker = start(name).await?;
            store_retained(broker.addr(), "a", count, 64, 1).await?;
            brokers.push((name, broker));
        }
        for client in &options.clients {
            let mut rounds: Vec<Rounds> = brokers
                .iter()
                .map(|(_, broker)| Rounds::start(broker))
                .collect();
            for round in 0..options.rounds {
                // The brokers take turns, the first going last in the next
                // round, so a noisy machine's drift falls on both alike.
                for turn in 0..brokers.len() {
                    let i = if round % 2 == 0 {
                        turn
                    } else {
                        brokers.len() - 1 - turn
                    };
                    let (name, broker) = &brokers[i];
                    let got = fetch(client, broker, "a/#", 1, count)
                        .await
                        .with_context(|| format!("{client} on {}", display(name)))?;
                    rounds[i].times.push(got.elapsed.as_secs_f64());
                    rounds[i].last = Some(got);
                }
            }
            for ((name, _), rounds) in brokers.iter().zip(rounds) {
                let peak = rounds.sampler.stop().await.max(rounds.before);
                let last = rounds.last.context("at least one round")?;
                results.push(Fetches {
                    broker: name.to_string(),
                    client: client.clone(),
                    count,
                    median_secs: median(&rounds.times),
                    growth_mib: mib(peak - rounds.before),
                });
                println!(
                    "| {} | {client} QoS 1 | {count} | {} | {} | {} | {:.1} -> {:.1}, {:.1} |",
                    display(name),
                    secs(rounds.times),
                    last.received,
                    in_order(last),
                    mib(rounds.before),
                    mib(peak),
                    mib(peak - rounds.before),
                );
            }
        }
    }
    for broker_name in &options.brokers {
        if options.qos0 > 0 {
            let broker = start(broker_name).await?;
            store_retained(broker.addr(), "q", options.qos0, 64, 0).await?;
            let before = broker.rss_kib().unwrap_or(0);
            let sampler = RssSampler::start(broker.pid());
            let got = fetch_with_rumqttc(broker.addr(), "q/#", 0, options.qos0).await?;
            let peak = sampler.stop().await.max(before);
            if broker_name == "builtin" {
                figures.push(
                    Figure::alone(
                        "retained",
                        format!(
                            "{} retained QoS 0 to a new q/# (rumqttc 3.1.1 QoS 0)",
                            options.qos0
                        ),
                        Measure::Count {
                            got: got.received,
                            of: options.qos0,
                        },
                    )
                    .goal(Goal::All),
                );
            }
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
    figures.splice(0..0, compare(&results));
    Ok(figures)
}

/// The built-in broker's fetches next to Mosquitto's, with the goals: no
/// slower than Mosquitto at 100,000; a million within 12 times the time of
/// 100,000 and within a bounded memory growth.
fn compare(results: &[Fetches]) -> Vec<Figure> {
    let find = |broker: &str, client: &str, count: usize| {
        results
            .iter()
            .find(|r| r.broker == broker && r.client == client && r.count == count)
    };
    let mut figures = Vec::new();
    for ours in results.iter().filter(|r| r.broker == "builtin") {
        let client = client_label(&ours.client);
        let case = format!(
            "{} retained to a new a/#, {client}",
            crate::figures::thousands(ours.count as f64)
        );
        let mut time = match find("mosquitto", &ours.client, ours.count) {
            Some(theirs) => Figure::versus(
                "retained",
                format!("{case}: time"),
                Measure::Seconds(ours.median_secs),
                "Mosquitto (max_queued_messages 0)",
                Measure::Seconds(theirs.median_secs),
            ),
            None => Figure::alone(
                "retained",
                format!("{case}: time"),
                Measure::Seconds(ours.median_secs),
            ),
        };
        if ours.count == 100_000 {
            time = time.goal(Goal::AtLeast(1.0));
        }
        if ours.count >= 1_000_000 {
            if let Some(base) = find("builtin", &ours.client, 100_000) {
                let factor = 12.0 * ours.count as f64 / 1_000_000.0;
                time = time.goal(Goal::AtMost(factor * base.median_secs));
            }
        }
        figures.push(time);
        let memory = match find("mosquitto", &ours.client, ours.count) {
            Some(theirs) => Figure::versus(
                "retained",
                format!("{case}: broker memory growth"),
                Measure::MiB(ours.growth_mib),
                "Mosquitto (max_queued_messages 0)",
                Measure::MiB(theirs.growth_mib),
            ),
            None => Figure::alone(
                "retained",
                format!("{case}: broker memory growth"),
                Measure::MiB(ours.growth_mib),
            ),
        };
        figures.push(memory.goal(Goal::AtMost(GROWTH_LIMIT_MIB)));
    }
    figures
}

fn client_label(client: &str) -> &'static str {
    match client {
        "rumqttc" => "rumqttc 3.1.1 QoS 1",
        _ => "mosquitto_sub -V 5 QoS 1",
    }
}

fn in_order(fetched: Fetched) -> &'static str {
    match fetched.in_order {
        Some(true) => "yes",
        Some(false) => "no",
        None => "n/a",
    }
}
