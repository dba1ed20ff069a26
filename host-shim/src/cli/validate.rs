//! `host-shim validate`: checks a configuration or flow file the way the
//! connector will, and prints every problem with its JSON pointer.

use super::read_text;
use super::schema::Kind;
use clap::Args;
use host_shim::flow::{self, config_problems, ConfigKind, Problem};
use mqtt_broker::BrokerConfig;
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
    let json = match serde_json::from_str(text) {
        Ok(json) => json,
        Err(e) => return vec![Problem::new("", format!("invalid JSON: {e}"))],
    };
    match kind {
        Kind::Connection => config_problems(ConfigKind::Connection, &json),
        Kind::Send => config_problems(ConfigKind::Send, &json),
        Kind::Listen => config_problems(ConfigKind::Listen, &json),
        Kind::Flow => flow::check(&json),
        // The broker reads its file with serde alone, so there is one
        // problem at most, with its line and column.
        Kind::Broker => match BrokerConfig::from_json(text) {
            Ok(_) => Vec::new(),
            Err(error) => vec![Problem::new("", error.to_string())],
        },
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
