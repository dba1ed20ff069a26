//! The `host-shim` command line.
//!
//! Each subcommand has its own argument struct (`broker` here, the others
//! in `cli/`); `main` parses, sets up logging on stderr (filtered by
//! `RUST_LOG` or `-d`, default `warn`), runs the command and turns an error
//! into `host-shim: {error chain}`, a hint when one fits, and exit code 2
//! (3 when the broker could not be reached). A closed stdout ends a
//! command quietly with exit code 0, as `host-shim listen ... | head` wants.

mod cli;

use anyhow::Context as _;
use clap::{ArgAction, Args, CommandFactory as _, Parser, Subcommand};
use host_shim::broker_settings::broker_config_from_text;
use mqtt_broker::{self as broker, BrokerConfig};
use std::io::{IsTerminal as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Runs the MQTT connector locally.
// `-h` is the host, as for mosquitto_pub and mosquitto_sub: help is
// `--help` only, on every subcommand.
#[derive(Debug, Parser)]
#[command(
    name = "host-shim",
    version,
    disable_help_flag = true,
    after_help = "Start here: host-shim run examples/quickstart.flow.json"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print help
    #[arg(long, global = true, action = ArgAction::Help, display_order = 1000)]
    help: Option<bool>,
    /// Debug log on stderr, as RUST_LOG=debug (mosquitto -d)
    #[arg(short = 'd', long, global = true, display_order = 999)]
    debug: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a flow file: steps that send and listen, checked as they go
    Run(cli::run::RunArgs),
    /// Send documents through the connector (mosquitto_pub)
    #[command(visible_alias = "pub")]
    Send(cli::send::SendArgs),
    /// Listen through the connector (mosquitto_sub)
    #[command(visible_alias = "sub")]
    Listen(cli::listen::ListenArgs),
    /// Run the built-in MQTT 3.1.1 + 5.0 broker until Ctrl-C or SIGTERM
    Broker(BrokerArgs),
    /// Print the JSON Schema of a configuration or flow file
    Schema(cli::schema::SchemaArgs),
    /// Check a configuration or flow file; print each problem and where
    Validate(cli::validate::ValidateArgs),
    /// List, get or delete retained messages; snapshot any broker's
    Retained(cli::retained::RetainedArgs),
    /// Print a shell completion script (bash, zsh, fish, ...)
    Completions(cli::docs::CompletionsArgs),
    /// Print a man page (roff), for `host-shim man | man -l -`
    Man(cli::docs::ManArgs),
}

/// `host-shim broker`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
The admin endpoint (HTTP, loopback only) serves
`host-shim retained list | get | delete | count`, which look for it on
port 18830; --admin-port 0 picks a free port. Both addresses print at start:
  listening on mqtt://127.0.0.1:1883
  admin on http://127.0.0.1:18830
It answers requests for localhost, 127.0.0.1 and [::1] only. Without a
token, any local user can read and delete retained messages through it;
with one, every request must carry it, and `host-shim retained` sends it
from the same flag or variable. Prefer the variable: `ps` shows flags.
  export HOST_SHIM_ADMIN_TOKEN=$(openssl rand -hex 16)
  host-shim broker --admin-port 18830 &
  host-shim retained count

Examples:
  host-shim broker
  host-shim broker --port 0 --admin-port 18830 --config broker.json")]
struct BrokerArgs {
    /// Address to listen on [default: 127.0.0.1]
    #[arg(long, value_name = "ADDR")]
    host: Option<String>,
    /// Port to listen on; 0 picks a free port [default: 1883]
    #[arg(long)]
    port: Option<u16>,
    /// JSON file of broker settings; the flags override it
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Port for the admin endpoint of `host-shim retained` [default: off]
    #[arg(long, value_name = "PORT")]
    admin_port: Option<u16>,
    /// Loopback address of the admin endpoint [default: 127.0.0.1]
    #[arg(long, value_name = "ADDR", requires = "admin_port")]
    admin_host: Option<IpAddr>,
    /// Token the admin endpoint requires, as `Authorization: Bearer TOKEN`
    #[arg(
        long,
        value_name = "TOKEN",
        env = "HOST_SHIM_ADMIN_TOKEN",
        hide_env_values = true
    )]
    admin_token: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(cli::logging::filter(
            std::env::var("RUST_LOG").ok().as_deref(),
            cli.debug,
        ))
        .init();

    match run(cli) {
        Ok(code) => code,
        Err(err) if cli::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("host-shim: {err:#}");
            if let Some(hint) = cli::exit::hint(&err) {
                eprintln!("hint: {hint}");
            }
            cli::exit::code(&err)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Completions(args) => cli::docs::completions(&args, Cli::command()),
        Command::Man(args) => cli::docs::man(&args, Cli::command()),
        Command::Run(args) => cli::run::run(args),
        Command::Send(args) => cli::send::run(args),
        Command::Listen(args) => cli::listen::run(args),
        Command::Broker(args) => run_broker(args).map(|()| ExitCode::SUCCESS),
        Command::Schema(args) => cli::schema::run(args),
        Command::Validate(args) => cli::validate::run(args),
        Command::Retained(args) => cli::retained::run(args),
    }
}

/// Settles the broker configuration: the file, then the flags over it.
fn broker_config(args: &BrokerArgs) -> anyhow::Result<BrokerConfig> {
    let mut config = match &args.config {
        Some(path) => load_config(path)?,
        None => BrokerConfig::default(),
    };
    if let Some(host) = &args.host {
        config.host.clone_from(host);
    }
    if let Some(port) = args.port {
        config.port = port;
    }
    Ok(config)
}

/// Reads a JSON broker configuration; errors list every problem of the
/// file with its JSON pointer.
fn load_config(path: &Path) -> anyhow::Result<BrokerConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    broker_config_from_text(&text).map_err(|e| {
        let lines: Vec<String> = e
            .problems
            .iter()
            .map(|p| format!("  {}", p.line()))
            .collect();
        anyhow::anyhow!(
            "invalid config file {}:\n{}\n(`host-shim schema broker` prints every key)",
            path.display(),
            lines.join("\n")
        )
    })
}

fn run_broker(args: BrokerArgs) -> anyhow::Result<()> {
    let config = broker_config(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let broker = broker::start(config).await?;
        let admin = match args.admin_port {
            Some(port) => {
                let host = args.admin_host.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
                let addr = SocketAddr::new(host, port);
                let token = args.admin_token.as_deref();
                Some(broker::admin::serve(broker.admin(), addr, token).await?)
            }
            None => None,
        };
        announce(&format!("listening on mqtt://{}", broker.local_addr()))?;
        if let Some(addr) = broker.tls_addr() {
            announce(&format!("listening on mqtts://{addr}"))?;
        }
        if let Some(admin) = &admin {
            announce(&format!("admin on {}", admin.url()))?;
        }
        wait_for_signal().await?;
        tracing::info!("shutting down");
        if let Some(admin) = admin {
            admin.shutdown().await;
        }
        broker.shutdown().await;
        Ok(())
    })
}

/// Prints one line on stdout, flushed, for whoever waits for it. A closed
/// stdout is not an error: nobody is listening, the broker still runs.
fn announce(line: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

/// Waits for Ctrl-C, or SIGTERM on Unix.
async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        tokio::select! {
            ctrl_c = tokio::signal::ctrl_c() => ctrl_c.context("cannot listen for Ctrl-C"),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .context("cannot listen for Ctrl-C")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("host-shim").chain(args.iter().copied())).unwrap()
    }

    fn broker_args(args: &[&str]) -> BrokerArgs {
        match parse(args).command {
            Command::Broker(args) => args,
            other => panic!("not a broker command: {other:?}"),
        }
    }

    #[test]
    fn admin_flags() {
        let args = broker_args(&["broker", "--admin-port", "0"]);
        assert_eq!((args.admin_port, args.admin_host), (Some(0), None));
        let args = broker_args(&["broker", "--admin-port", "9", "--admin-host", "::1"]);
        assert_eq!(args.admin_host, Some("::1".parse().unwrap()));
        // An address without a port would start nothing: refused.
        let parsed = Cli::try_parse_from(["host-shim", "broker", "--admin-host", "::1"]);
        assert!(parsed.is_err());
        let args = broker_args(&["broker", "--admin-port", "0", "--admin-token", "t0k"]);
        assert_eq!(args.admin_token.as_deref(), Some("t0k"));
    }

    #[test]
    fn broker_defaults() {
        let config = broker_config(&broker_args(&["broker"])).unwrap();
        assert_eq!(config, BrokerConfig::default());
    }

    #[test]
    fn flags_override_the_config_file() {
        let path = std::env::temp_dir().join(format!("host-shim-cli-{}.json", std::process::id()));
        std::fs::write(
            &path,
            r#"{"host": "0.0.0.0", "port": 1999, "max_inflight": 7}"#,
        )
        .unwrap();
        let file = path.to_str().unwrap();

        let config = broker_config(&broker_args(&["broker", "--config", file])).unwrap();
        assert_eq!((config.host.as_str(), config.port), ("0.0.0.0", 1999));

        let args = broker_args(&["broker", "--config", file, "--port", "0", "--host", "::1"]);
        let config = broker_config(&args).unwrap();
        assert_eq!((config.host.as_str(), config.port), ("::1", 0));
        assert_eq!(config.max_inflight, 7);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn config_errors_name_the_file_and_each_pointer() {
        let path =
            std::env::temp_dir().join(format!("host-shim-cli-bad-{}.json", std::process::id()));
        std::fs::write(&path, "{\n  \"port\": 1,\n  \"colour\": 2\n}").unwrap();
        let args = broker_args(&["broker", "--config", path.to_str().unwrap()]);
        let err = format!("{:#}", broker_config(&args).unwrap_err());
        std::fs::remove_file(&path).unwrap();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("/colour: unknown field"), "{err}");
    }

    #[test]
    fn help_lines_fit_in_80_columns() {
        let mut cmd = Cli::command();
        // Built, so that the subcommands get `-h` as the host from the root.
        cmd.build();
        for sub in [
            "run",
            "send",
            "listen",
            "broker",
            "schema",
            "validate",
            "retained",
            "completions",
            "man",
        ] {
            let help = cmd
                .find_subcommand_mut(sub)
                .unwrap()
                .render_long_help()
                .to_string();
            for line in help.lines() {
                assert!(line.len() < 80, "too long: {line:?}");
            }
        }
        let retained = cmd.find_subcommand_mut("retained").unwrap();
        for sub in ["list", "get", "delete", "count", "snapshot"] {
            let help = retained
                .find_subcommand_mut(sub)
                .unwrap()
                .render_long_help()
                .to_string();
            for line in help.lines() {
                assert!(line.len() < 80, "retained {sub}: too long: {line:?}");
            }
        }
    }
}
