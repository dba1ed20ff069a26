//! `host-shim validate`: checks a configuration or flow file the way the
//! connector will, and prints every problem with its JSON pointer.

use super::read_text;
use super::schema::Kind;
use clap::Args;
use connector::validate::parse_json;
use host_shim::broker_settings::broker_problems;
use host_shim::flow::{self, config_problems, ConfigKind, Problem};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// `host-shim validate`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Prints nothing and exits 0 when the file is valid. Otherwise prints each
problem as `POINTER: message`, the pointer saying where in the file it is,
and exits 2.

Examples:
  host-shim validate send send.json
  host-shim validate flow examples/quickstart.flow.json")]
pub struct ValidateArgs {
    /// What the file holds
    #[arg(value_name = "KIND")]
    pub kind: Kind,
    /// The JSON file to check; - reads standard input
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Every problem of `text` as a file of `kind`.
pub fn problems(kind: Kind, text: &str) -> Vec<Problem> {
    let json = match parse_json(text) {
        Ok(json) => json,
        Err(problem) => return vec![problem],
    };
    match kind {
        Kind::Connection => config_problems(ConfigKind::Connection, &json),
        Kind::Send => config_problems(ConfigKind::Send, &json),
        Kind::Listen => config_problems(ConfigKind::Listen, &json),
        Kind::Flow => flow::check(&json),
        Kind::Broker => broker_problems(&json),
    }
}

/// Runs `host-shim validate`: exit 0 when valid, 2 with the problems.
pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let text = read_text(&args.file)?;
    let problems = problems(args.kind, &text);
    let mut stdout = std::io::stdout().lock();
    for problem in &problems {
        writeln!(stdout, "{}", problem.line())?;
    }
    stdout.flush()?;
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
