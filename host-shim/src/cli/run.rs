//! `host-shim run`: runs a flow file and checks its expectations.

use super::read_text;
use clap::Args;
use host_shim::flow::{self, RunOptions};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// `host-shim run`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
A flow file names a broker and steps (send, subscribe, receive, listen,
close, drop, sleep_ms), each with what it must do. By default the flow runs
against the built-in broker on a free loopback port. `host-shim schema flow`
prints the format; examples/ has flows to start from.

Exit status: 0 when every step met its expectations, 1 when one did not,
2 on errors.

Examples:
  host-shim run examples/quickstart.flow.json
  host-shim run examples/quickstart.flow.json --url mqtt://127.0.0.1:1883")]
pub struct RunArgs {
    /// The flow file to run
    #[arg(value_name = "FLOW")]
    pub flow: PathBuf,
    /// Run against the broker at URL instead of the built-in one
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Connector component (.wasm) to run instead of the built-in one
    #[arg(long, value_name = "FILE")]
    pub component: Option<PathBuf>,
}

/// Runs `host-shim run`.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let text = read_text(&args.flow)?;
    let flow = flow::parse(&text).map_err(|e| {
        let problems = e.to_string().replace('\n', "\n  ");
        anyhow::anyhow!("invalid flow {}:\n  {problems}", args.flow.display())
    })?;
    let options = RunOptions {
        runtime: super::runtime(args.component.as_deref())?,
        url: args.url,
    };
    let outcome = super::tokio()?.block_on(async {
        let mut stdout = std::io::stdout().lock();
        let outcome = flow::run(&flow, &options, &mut stdout).await;
        stdout.flush()?;
        outcome
    })?;
    Ok(if outcome.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
