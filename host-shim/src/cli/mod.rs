//! The subcommands that run the connector: `run`, `send`, `listen`,
//! `schema`, `validate` and `retained`, one file each, and what they share:
//! loading JSON files, the connection and component flags, and stdout
//! handling.
//!
//! Each command takes its low-level arguments (what clap parsed), settles
//! them into the configuration JSON the connector takes, checks it with the
//! connector's own validation, and only then connects.

pub mod listen;
pub mod retained;
pub mod run;
pub mod schema;
pub mod send;
pub mod validate;

use anyhow::Context as _;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser as _};
use clap::Args;
use host_shim::flow::{config_problems, ConfigKind};
use host_shim::host::{CodeCache, Limits, Runtime};
use mqtt_topic::MqttVersion;
use serde_json::{Map, Value as Json};
use std::io::{IsTerminal as _, Read as _};
use std::path::{Path, PathBuf};

/// The flags that say which broker to reach and how.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Broker URL, mqtt://HOST:PORT or mqtts://HOST:PORT
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// JSON file of connection settings; the flags override it
    #[arg(long, value_name = "FILE")]
    pub connection: Option<PathBuf>,
    /// MQTT protocol version to speak [default: 5]
    #[arg(long, value_name = "VERSION", value_parser = mqtt_version_parser())]
    pub mqtt_version: Option<MqttVersion>,
    /// Connector component (.wasm) to run instead of the built-in one
    #[arg(long, value_name = "FILE")]
    pub component: Option<PathBuf>,
}

/// `--mqtt-version`: the names configurations use (`3.1.1`, `5`), listed in
/// the help, and the aliases `311` and `5.0`, read by
/// [`MqttVersion`]'s own parser.
fn mqtt_version_parser() -> impl clap::builder::TypedValueParser<Value = MqttVersion> {
    PossibleValuesParser::new([
        PossibleValue::new(MqttVersion::V311.as_str()).alias("311"),
        PossibleValue::new(MqttVersion::V5.as_str()).alias("5.0"),
    ])
    .try_map(|name| name.parse::<MqttVersion>())
}

impl ConnectionArgs {
    /// The connection configuration: the file, then the flags over it,
    /// checked by the connector.
    pub fn connection_config(&self) -> anyhow::Result<Json> {
        let mut config = match &self.connection {
            Some(path) => read_object(path)?,
            None => Map::new(),
        };
        if let Some(url) = &self.url {
            config.insert("url".to_owned(), Json::from(url.as_str()));
        }
        if !config.contains_key("url") {
            anyhow::bail!("no broker to connect to: give --url URL or --connection FILE");
        }
        if let Some(version) = self.mqtt_version {
            config.insert(PROTOCOL_KEY.to_owned(), Json::from(version.as_str()));
        }
        let config = Json::Object(config);
        ensure_valid(ConfigKind::Connection, "connection", &config)?;
        Ok(config)
    }

    /// The connector to run: the built-in one, or `--component FILE`.
    pub fn runtime(&self) -> anyhow::Result<Runtime> {
        runtime(self.component.as_deref())
    }
}

/// The connection configuration key of the protocol version.
const PROTOCOL_KEY: &str = "mqtt_version";

/// The connector: the component built into the shim, or one from a file,
/// compiled once and then read from the user's code cache.
pub fn runtime(component: Option<&Path>) -> anyhow::Result<Runtime> {
    let cache = CodeCache::user_default();
    match component {
        Some(path) => Ok(Runtime::from_file_cached(
            path,
            Limits::default(),
            cache.as_ref(),
        )?),
        None => Runtime::embedded_cached(Limits::default(), cache.as_ref())
            .context("cannot load the built-in connector"),
    }
}

/// Fails with every problem, one per line, when the connector finds the
/// configuration invalid.
pub fn ensure_valid(kind: ConfigKind, what: &str, config: &Json) -> anyhow::Result<()> {
    let problems = config_problems(kind, config);
    if problems.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("\n  {}", p.line()))
        .collect();
    anyhow::bail!("invalid {what} configuration:{}", lines.concat())
}

/// Reads a file, or standard input for `-`.
pub fn read_text(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        return Ok(text);
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Reads a JSON file; errors name the file, the line and the column.
pub fn read_json(path: &Path) -> anyhow::Result<Json> {
    let text = read_text(path)?;
    serde_json::from_str(&text).with_context(|| format!("invalid JSON in {}", path.display()))
}

/// Reads a JSON file that must hold an object.
pub fn read_object(path: &Path) -> anyhow::Result<Map<String, Json>> {
    match read_json(path)? {
        Json::Object(object) => Ok(object),
        _ => anyhow::bail!("{} must hold a JSON object", path.display()),
    }
}

/// A tokio runtime for one command.
pub fn tokio() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

/// Whether to draw progress: only for a person watching stderr, and only
/// when stdout is not the same screen the results scroll on.
pub fn show_progress() -> bool {
    std::io::stderr().is_terminal() && !std::io::stdout().is_terminal()
}

/// Whether an error is a closed stdout (`host-shim listen | head -1`), which
/// ends the command quietly and successfully.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
