//! The fault matrix at scale: each fault of the matrix on a stream of
//! documents Send -> built-in broker -> Listen through the component, at
//! QoS 1 and 2, with what was lost, what was committed twice, and how long
//! it took.
//!
//! ```text
//! cargo bench -p e2e --bench report -- faults                      # 100,000 documents a stream
//! cargo bench -p e2e --bench report -- faults --count 10000 --faults acks-lost,slow-consumer
//! cargo bench -p e2e --bench report -- faults --brokers builtin,mosquitto   # Mosquitto too, where it applies
//! cargo bench -p e2e --bench report -- --update-docs faults        # also into BENCHMARKS.md
//! ```
//!
//! The streams are the ones `cargo test -p host-shim --test
//! fault_matrix` runs at 10,000 documents; see that suite's `matrix`
//! module for each fault.

#[path = "../../../host-shim/tests/fault_matrix/matrix.rs"]
mod matrix;

use anyhow::{bail, Result};
use host_shim::host::{Limits, Runtime};
use matrix::{Fault, Matrix, Outcome, Target};

/// The fault matrix's streams.
#[derive(clap::Args, Clone)]
pub struct Options {
    /// Documents per stream
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(10..))]
    pub count: u32,
    /// QoS levels, comma-separated
    #[arg(long, value_delimiter = ',', default_value = "1,2", value_parser = clap::value_parser!(u8).range(1..=2))]
    pub qos: Vec<u8>,
    /// Faults to run, comma-separated: broker-killed, connections-dropped,
    /// acks-lost, listener-killed, slow-consumer, worker-killed [default: all]
    #[arg(long, value_delimiter = ',')]
    pub faults: Vec<String>,
    /// Brokers, comma-separated: builtin, mosquitto (at its defaults; only
    /// the faults that need nothing of the broker)
    #[arg(long, value_delimiter = ',', default_value = "builtin")]
    pub brokers: Vec<String>,
}

/// Runs the streams one after the other; prints each outcome as it comes
/// and returns the table.
pub async fn run(options: &Options) -> Result<String> {
    let faults = if options.faults.is_empty() {
        Fault::ALL.to_vec()
    } else {
        let mut faults = Vec::new();
        for key in &options.faults {
            match Fault::from_key(key) {
                Some(fault) => faults.push(fault),
                None => bail!(
                    "unknown fault {key:?}: use one of {}",
                    Fault::ALL.map(Fault::key).join(", ")
                ),
            }
        }
        faults
    };
    let runtime = Runtime::embedded(Limits::default())?;
    let matrix = Matrix::new(runtime, &crate::host_shim_binary())?;
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut targets = Vec::new();
    for name in &options.brokers {
        targets.push(match name.as_str() {
            "builtin" => Target::Builtin,
            "mosquitto" => Target::Mosquitto,
            other => bail!("unknown broker {other:?}: use builtin or mosquitto"),
        });
    }
    for fault in faults {
        for &target in targets.iter().filter(|t| t.runs(fault)) {
            for &qos in &options.qos {
                eprintln!(
                    "== {} on {} at QoS {qos}, {} documents",
                    fault.key(),
                    target.name(),
                    options.count
                );
                let outcome = matrix
                    .run_on(target, fault, qos, options.count as usize)
                    .await?;
                eprintln!(
                    "   lost {}, duplicated {}, send failed {}, {:.1} s",
                    outcome.lost,
                    outcome.duplicated,
                    outcome.send_failed,
                    outcome.elapsed.as_secs_f64()
                );
                outcomes.push(outcome);
            }
        }
    }
    Ok(matrix::table(&outcomes))
}
