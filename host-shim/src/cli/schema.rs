//! `host-shim schema`: prints the JSON Schema of a configuration kind, the
//! same schemas a pipeline's UI renders its forms from.

use clap::{Args, ValueEnum};
use serde_json::Value as Json;
use std::io::Write as _;
use std::process::ExitCode;

/// `host-shim schema`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Examples:
  host-shim schema send > send.schema.json
  host-shim schema flow")]
pub struct SchemaArgs {
    /// Which schema to print; without it, lists the kinds
    #[arg(value_name = "KIND")]
    pub kind: Option<Kind>,
}

/// A kind of configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Broker URL, protocol, credentials, TLS, will
    Connection,
    /// The Send operation: topic, QoS, retain, properties
    Send,
    /// The Listen operation: subscriptions, retained policy
    Listen,
    /// A flow file for `host-shim run`
    Flow,
    /// The built-in broker's settings: port, limits, retainer
    Broker,
}

impl Kind {
    /// Every kind, in the order they are listed.
    pub const ALL: [Kind; 5] = [
        Kind::Connection,
        Kind::Send,
        Kind::Listen,
        Kind::Flow,
        Kind::Broker,
    ];

    /// The kind's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Connection => "connection",
            Kind::Send => "send",
            Kind::Listen => "listen",
            Kind::Flow => "flow",
            Kind::Broker => "broker",
        }
    }

    /// What a file of this kind holds, in a few words.
    fn summary(self) -> &'static str {
        match self {
            Kind::Connection => "how to reach a broker: URL, protocol, credentials, TLS, will",
            Kind::Send => "the Send operation: topic, QoS, retain, properties",
            Kind::Listen => "the Listen operation: subscriptions and delivery",
            Kind::Flow => "a flow file for `host-shim run`",
            Kind::Broker => "the built-in broker's settings: `host-shim broker --config`",
        }
    }
}

/// The JSON Schema of `kind`, generated from the Rust types.
pub fn schema(kind: Kind) -> Json {
    match kind {
        Kind::Connection => connector::schema::connection_schema(),
        Kind::Send => connector::schema::send_schema(),
        Kind::Listen => connector::schema::listen_schema(),
        Kind::Flow => host_shim::flow::schema(),
        Kind::Broker => mqtt_broker::broker_schema(),
    }
}

/// Runs `host-shim schema`.
pub fn run(args: SchemaArgs) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match args.kind {
        Some(kind) => {
            let text = serde_json::to_string_pretty(&schema(kind))?;
            writeln!(stdout, "{text}")?;
        }
        None => {
            for kind in Kind::ALL {
                writeln!(stdout, "{:<12}{}", kind.name(), kind.summary())?;
            }
        }
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}
