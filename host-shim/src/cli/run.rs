//! `host-shim run`: runs a flow file and checks its expectations; the
//! received documents on stdout, the rest on stderr, or one JSON report.

use super::read_text;
use clap::Args;
use host_shim::flow::{self, Flow, Outcome, RunOptions, RunOutput};
use serde_json::Value as Json;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// `host-shim run`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
A flow file names a broker and steps (send, subscribe, receive, listen,
close, drop, sleep_ms, broker), each with what it must do. By default the
flow runs against the built-in broker on a free loopback port. `host-shim
schema flow` prints the format; examples/ has flows to start from.

Received documents print on stdout as JSON lines, as `host-shim listen`
prints them; each step's outcome and the verdict go to stderr. --json prints
one JSON report on stdout instead:
  {\"passed\":false,\"steps_run\":2,\"failed\":{\"step\":1,\"kind\":\"listen\",
   \"differences\":[\"...\"]},\"documents\":[{\"topic\":..},..]}

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
    /// Print one JSON report on stdout: verdict, differences, documents
    #[arg(long)]
    pub json: bool,
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
    let mut documents = Vec::new();
    let outcome = super::tokio()?.block_on(async {
        let mut stdout = std::io::stdout().lock();
        // Not locked: the log of other threads (warnings) goes there too.
        let mut stderr = std::io::stderr();
        let out = RunOutput {
            documents: if args.json {
                &mut documents
            } else {
                &mut stdout
            },
            log: &mut stderr,
        };
        let outcome = flow::run(&flow, &options, out).await;
        stdout.flush()?;
        outcome
    })?;
    if args.json {
        let report = report(&flow, &outcome, &documents)?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{report}")?;
        stdout.flush()?;
    }
    Ok(if outcome.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::exit::SOME_FAILED)
    })
}

/// The `--json` report: the verdict, the failed step with each difference,
/// and the documents received, as the JSON lines in `documents` hold them.
fn report(flow: &Flow, outcome: &Outcome, documents: &[u8]) -> anyhow::Result<Json> {
    let documents = documents
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(serde_json::from_slice)
        .collect::<Result<Vec<Json>, _>>()?;
    let failed = outcome.failed.as_ref().map(|(step, differences)| {
        serde_json::json!({
            "step": step,
            "kind": flow.steps.get(*step).map(|s| s.kind()),
            "differences": differences,
        })
    });
    Ok(serde_json::json!({
        "passed": outcome.passed(),
        "steps_run": outcome.steps_run,
        "failed": failed,
        "documents": documents,
    }))
}
