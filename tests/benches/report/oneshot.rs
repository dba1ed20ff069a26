//! One message, one process: `host-shim send --message x --qos 1` next to
//! `mosquitto_pub -m x -q 1`, whole process wall time, against the
//! built-in broker in a process of its own.
//!
//! ```text
//! cargo bench -p e2e --bench report -- oneshot --runs 20
//! ```
//!
//! `host-shim` keeps the compiled component in a cache (here a directory
//! of its own, emptied first): its first run compiles and is shown apart;
//! the others read the cache, as every run after a user's first does.
//! The two programs alternate, and the medians are compared.

use crate::figures::{median, Figure, Goal, Measure};
use anyhow::{bail, Context, Result};
use e2e::BrokerProcess;
use mqtt_broker::BrokerConfig;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Where the Debian package installs `mosquitto_pub`.
const MOSQUITTO_PUB: &str = "/usr/bin/mosquitto_pub";

/// One-shot CLI send vs mosquitto_pub.
#[derive(clap::Args, Clone)]
pub struct Options {
    /// Runs of each program after host-shim's first (compiling) run
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
}

/// Runs both programs; prints their times and returns the figures.
pub async fn run(options: &Options) -> Result<Vec<Figure>> {
    if !Path::new(MOSQUITTO_PUB).exists() {
        bail!("{MOSQUITTO_PUB} is not installed (apt-get install -y mosquitto-clients)");
    }
    let broker = BrokerProcess::builtin(&BrokerConfig::default()).await?;
    let port = broker.port().to_string();
    let cache = std::env::temp_dir().join(format!("bench-oneshot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);

    let host_shim = || {
        let mut command = Command::new(crate::host_shim_binary());
        command
            .env("XDG_CACHE_HOME", &cache)
            .arg("send")
            .args(["--url", &format!("mqtt://127.0.0.1:{port}")])
            .args(["--topic", "bench/oneshot", "--message", "x", "--qos", "1"]);
        command
    };
    let mosquitto_pub = || {
        let mut command = Command::new(MOSQUITTO_PUB);
        command.args(["-h", "127.0.0.1", "-p", &port]).args([
            "-t",
            "bench/oneshot",
            "-m",
            "x",
            "-q",
            "1",
        ]);
        command
    };

    let first = time(host_shim()).context("host-shim's first run")?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..options.runs {
        // Alternate which goes first in a round.
        if round % 2 == 0 {
            ours.push(time(host_shim())?);
            theirs.push(time(mosquitto_pub())?);
        } else {
            theirs.push(time(mosquitto_pub())?);
            ours.push(time(host_shim())?);
        }
    }
    let _ = std::fs::remove_dir_all(&cache);
    let ms = |values: &[Duration]| {
        median(
            &values
                .iter()
                .map(|d| d.as_secs_f64() * 1e3)
                .collect::<Vec<_>>(),
        )
    };
    let (ours, theirs) = (ms(&ours), ms(&theirs));
    let first = first.as_secs_f64() * 1e3;
    println!(
        "one-shot send, QoS 1, median of {}: host-shim {ours:.1} ms (first run, compiling: {first:.0} ms), mosquitto_pub {theirs:.1} ms",
        options.runs
    );
    Ok(vec![
        Figure::versus(
            "one-shot",
            "one message at QoS 1, whole process, compiled code cached",
            Measure::Millis(ours),
            "mosquitto_pub",
            Measure::Millis(theirs),
        )
        // At most five times mosquitto_pub's wall time.
        .goal(Goal::AtLeast(0.2)),
        Figure::alone(
            "one-shot",
            "the same, first run (compiles the component)",
            Measure::Millis(first),
        ),
    ])
}

/// The wall time of `command`, which must succeed.
fn time(mut command: Command) -> Result<Duration> {
    let started = Instant::now();
    let output = command
        .output()
        .with_context(|| format!("running {:?}", command.get_program()))?;
    let elapsed = started.elapsed();
    if !output.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            command.get_program(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(elapsed)
}
