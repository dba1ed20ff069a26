//! Live throughput of the built-in broker next to Mosquitto at its default
//! configuration, in the same run; and the cross-connection ordering
//! rounds on both.
//!
//! ```text
//! cargo bench -p e2e --bench report -- live
//! cargo bench -p e2e --bench report -- live --rounds 5 --cases qos1,fanin
//! cargo bench -p e2e --bench report -- ordering
//! ```
//!
//! Each broker runs in a process of its own on 127.0.0.1: the built-in one
//! is this binary again (`serve_builtin_if_asked`) with the default
//! configuration, Mosquitto is `/usr/sbin/mosquitto` with nothing but a
//! listener, anonymous access and quiet logging (so `max_queued_messages
//! 1000`, `max_inflight_messages 20`, `set_tcp_nodelay false`: its
//! defaults). The clients are rumqttc 3.1.1 at their defaults (in-flight
//! window 100) in this process, 64-byte payloads:
//!
//! - `qos0`, `qos1`, `qos2`: one publisher to one subscriber.
//! - `fanout`: one publisher to 100 subscribers.
//! - `fanin`: 100 publishers to one subscriber.
//!
//! The figure is messages received per second by all subscribers together,
//! first publish to last message. Each case runs `--rounds` times, the two
//! brokers alternating which goes first; best and median are shown, and
//! the ratio of the medians.
//!
//! `ordering` runs the ordering rounds of `e2e::ordering` on both brokers:
//! B subscribes and A publishes at once on fresh raw connections, B waits
//! up to a second; idle, then with a background publisher loading the
//! broker. It prints how many rounds delivered.

use crate::figures::{median, Figure, Goal, Measure};
use crate::machine::load_average;
use anyhow::{bail, Context, Result};
use clap::builder::RangedU64ValueParser;
use e2e::*;
use mqtt_broker::BrokerConfig;
use std::time::Duration;

/// Live throughput: built-in broker vs Mosquitto (defaults).
#[derive(clap::Args, Clone)]
pub struct Options {
    /// Messages per case for qos0/1/2 and fan-in
    #[arg(long, default_value_t = 100_000)]
    count: usize,
    /// Messages the fan-out publisher sends
    #[arg(long, default_value_t = 2_000)]
    fan_count: usize,
    /// QoS of fan-out and fan-in
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    fan_qos: u8,
    /// Payload size in bytes
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Rounds per case; best and median shown
    #[arg(long, default_value_t = 3, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    rounds: usize,
    /// Cases to run
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "qos0,qos1,qos2,fanout,fanin"
    )]
    cases: Vec<String>,
}

/// The ordering rounds: built-in broker vs Mosquitto (defaults).
#[derive(clap::Args, Clone)]
pub struct OrderingOptions {
    /// Rounds per run, idle and under load
    #[arg(long, default_value_t = 500)]
    pub rounds: usize,
}

impl Options {
    fn traffic(&self, case: &str) -> Result<Traffic> {
        let one_to_one = |qos| Traffic {
            publishers: 1,
            subscribers: 1,
            messages: self.count,
            qos,
            payload: self.payload,
        };
        Ok(match case {
            "qos0" => one_to_one(0),
            "qos1" => one_to_one(1),
            "qos2" => one_to_one(2),
            "fanout" => Traffic {
                publishers: 1,
                subscribers: 100,
                messages: self.fan_count,
                qos: self.fan_qos,
                payload: self.payload,
            },
            "fanin" => Traffic {
                publishers: 100,
                subscribers: 1,
                messages: (self.count / 100).max(1),
                qos: self.fan_qos,
                payload: self.payload,
            },
            other => bail!("unknown case {other:?}; see --help"),
        })
    }
}

fn best(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}

/// Runs the live cases; prints their table and returns their figures.
pub async fn run(options: &Options) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let builtin = BrokerProcess::builtin(&BrokerConfig::default()).await?;
    let mosquitto = BrokerProcess::mosquitto(&[]).await?;
    println!("load average at start: {}", load_average());
    println!(
        "| case | built-in msg/s (best / median) | Mosquitto msg/s (best / median) | ratio of medians | delivered (built-in / Mosquitto, of expected) |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for case in &options.cases {
        let traffic = options.traffic(case)?;
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let (mut ours_delivered, mut theirs_delivered) = (0, 0);
        let mut expected = 0;
        for round in 0..options.rounds {
            // Alternate which goes first, so neither always meets a
            // warmer (or busier) machine.
            let order = if round % 2 == 0 {
                [(&builtin, true), (&mosquitto, false)]
            } else {
                [(&mosquitto, false), (&builtin, true)]
            };
            for (broker, is_builtin) in order {
                let got = measure_traffic(broker.addr(), traffic)
                    .await
                    .with_context(|| format!("{case} on {}", name(is_builtin)))?;
                expected = got.expected;
                if is_builtin {
                    ours.push(got.rate());
                    ours_delivered = got.delivered;
                } else {
                    theirs.push(got.rate());
                    theirs_delivered = got.delivered;
                }
            }
        }
        let (ours_best, theirs_best) = (best(&ours), best(&theirs));
        let (ours_median, theirs_median) = (median(&ours), median(&theirs));
        println!(
            "| {} | {:.0} / {:.0} | {:.0} / {:.0} | {:.2} | {ours_delivered} / {theirs_delivered} of {expected} |",
            describe(case, traffic),
            ours_best,
            ours_median,
            theirs_best,
            theirs_median,
            ours_median / theirs_median,
        );
        // The goals: 2x Mosquitto one to one, 1.5x fanned out or in.
        let goal = if traffic.publishers == 1 && traffic.subscribers == 1 {
            2.0
        } else {
            1.5
        };
        figures.push(
            Figure::versus(
                "live",
                describe(case, traffic),
                Measure::Rate(ours_median),
                "Mosquitto (defaults)",
                Measure::Rate(theirs_median),
            )
            .goal(Goal::AtLeast(goal)),
        );
    }
    println!("load average at end: {}", load_average());
    Ok(figures)
}

fn name(builtin: bool) -> &'static str {
    if builtin {
        "the built-in broker"
    } else {
        "Mosquitto"
    }
}

fn describe(case: &str, t: Traffic) -> String {
    match case {
        "fanout" => format!(
            "fan-out 1 -> {} QoS {}, {} msgs",
            t.subscribers, t.qos, t.messages
        ),
        "fanin" => format!(
            "fan-in {} -> 1 QoS {}, {} msgs each",
            t.publishers, t.qos, t.messages
        ),
        _ => format!("1 -> 1 QoS {}, {} msgs", t.qos, t.messages),
    }
}

/// Runs the ordering rounds on both brokers; prints their table and
/// returns their figures.
pub async fn ordering(options: &OrderingOptions) -> Result<Vec<Figure>> {
    let rounds = options.rounds;
    let mut delivered = Vec::new();
    println!("load average at start: {}", load_average());
    println!("| broker | idle: delivered of {rounds} | under load: delivered of {rounds} | background messages |");
    println!("| --- | --- | --- | --- |");
    for is_builtin in [true, false] {
        let broker = if is_builtin {
            BrokerProcess::builtin(&BrokerConfig::default()).await?
        } else {
            BrokerProcess::mosquitto(&[]).await?
        };
        let idle = subscribe_then_publish_rounds(broker.addr(), rounds, ROUND_WAIT).await?;
        let load = Load::start(broker.addr()).await?;
        // Let the load reach a steady state.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let loaded = subscribe_then_publish_rounds(broker.addr(), rounds, ROUND_WAIT).await?;
        let published = load.sent();
        drop(load);
        println!("| {} | {idle} | {loaded} | {published} |", name(is_builtin));
        delivered.push((idle, loaded));
    }
    println!("load average at end: {}", load_average());
    let count = |got| Measure::Count { got, of: rounds };
    let [(ours_idle, ours_loaded), (theirs_idle, theirs_loaded)] = delivered[..] else {
        bail!("both brokers ran the rounds");
    };
    Ok([
        (
            "B subscribes, A publishes at once: idle",
            ours_idle,
            theirs_idle,
        ),
        ("the same under load", ours_loaded, theirs_loaded),
    ]
    .into_iter()
    .map(|(case, ours, theirs)| {
        Figure::versus(
            "ordering",
            case,
            count(ours),
            "Mosquitto (defaults)",
            count(theirs),
        )
        .goal(Goal::All)
    })
    .collect())
}
