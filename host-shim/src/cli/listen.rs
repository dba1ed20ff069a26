//! `host-shim listen` (alias `sub`): subscribes through the connector's
//! Listen operation and prints each document: a JSON line, or as
//! `mosquitto_sub -v` / `-F` would.

use super::format::{render, Output};
use super::progress::Progress;
use super::{ensure_valid, exit, read_object, show_progress, ConnectionArgs};
use anyhow::Context as _;
use clap::Args;
use host_shim::flow::ConfigKind;
use serde_json::{Map, Value as Json};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest one `next` call waits, so Ctrl-C is noticed this quickly
/// without cancelling a call into the connector halfway.
const POLL: Duration = Duration::from_millis(250);

/// `host-shim listen` (alias `sub`).
#[derive(Debug, Args)]
#[command(after_long_help = concat!("\
Each document prints as one line of JSON:
  {\"topic\":\"a/b\",\"qos\":1,\"retained\":false,\"payload\":\"text\",\"properties\":{..}}
with \"payload_base64\" instead of \"payload\" when the payload is not UTF-8;
-v prints `topic payload` and -F a format instead, as mosquitto_sub does:
  %t topic, %p payload, %q QoS, %r retained (0 or 1), %l payload length,
  %x payload in hex, %j the JSON line, %% a %; escapes \\n \\t \\\\ \\e \\0.
-W without -C is a planned end (exit 0); with -C, too few is exit 27.
Each batch is committed (acknowledged to the broker) once it is printed.

Examples (mosquitto_sub's flags work the same):
  host-shim sub -h 127.0.0.1 -p 1883 -t 'users/settings/+' -C 1 -W 5 -v
  host-shim listen -t '#' -W 10 | jq .
  host-shim sub -t 'sensors/#' -F '%t %q %r %p'

", exit_status_help!()))]
pub struct ListenArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Topic filter (+ and # wildcards); repeat for more (mosquitto -t)
    #[arg(short = 't', long, value_name = "FILTER")]
    pub topic: Vec<String>,
    /// Highest QoS to receive: 0, 1 or 2 (mosquitto -q) [default: 1]
    #[arg(short = 'q', long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: Option<u8>,
    /// Stop after N documents (mosquitto -C)
    #[arg(short = 'C', long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after SECS seconds; exit 27 if -C was not reached (-W)
    #[arg(short = 'W', long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Print `topic payload` instead of JSON (mosquitto -v)
    #[arg(short = 'v', long, conflicts_with = "format")]
    pub verbose: bool,
    /// Print in FORMAT: %t %p %q %r %l %x %j (mosquitto -F)
    #[arg(short = 'F', long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Skip retained messages: live messages only (mosquitto -R)
    #[arg(short = 'R', long, conflicts_with = "retained_only")]
    pub no_retained: bool,
    /// Only retained messages; stop when none came for a second
    #[arg(long)]
    pub retained_only: bool,
    /// JSON file of a whole Listen configuration; the flags override it
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ListenArgs {
    /// The Listen configuration: the file, then the flags over it. Topics
    /// given as flags replace the file's subscriptions; `--qos` applies to
    /// every subscription.
    pub fn listen_config(&self) -> anyhow::Result<Json> {
        let mut config = match &self.config {
            Some(path) => read_object(path)?,
            None => Map::new(),
        };
        let mut filters: Vec<&str> = self.topic.iter().map(String::as_str).collect();
        if filters.is_empty() {
            filters.extend(self.connection.url_topic());
        }
        if !filters.is_empty() {
            let subscriptions = filters
                .iter()
                .map(|filter| serde_json::json!({ "filter": filter }))
                .collect();
            config.insert("subscriptions".to_owned(), Json::Array(subscriptions));
        }
        if let Some(qos) = self.qos {
            if let Some(Json::Array(subscriptions)) = config.get_mut("subscriptions") {
                for subscription in subscriptions.iter_mut().filter_map(Json::as_object_mut) {
                    subscription.insert("qos".to_owned(), Json::from(qos));
                }
            }
        }
        if self.no_retained {
            config.insert("retained".to_owned(), Json::from("skip"));
        }
        if self.retained_only {
            config.insert("retained".to_owned(), Json::from("only"));
        }
        if !config.contains_key("subscriptions") && self.config.is_none() {
            anyhow::bail!("nothing to listen to: give -t FILTER or --config FILE");
        }
        let config = Json::Object(config);
        // A file's problems (a misspelt key, say) name the file.
        let checked = ensure_valid(ConfigKind::Listen, "listen", &config);
        match &self.config {
            Some(path) => checked.with_context(|| format!("in {}", path.display()))?,
            None => checked?,
        }
        Ok(config)
    }

    fn timeout(&self) -> anyhow::Result<Option<Duration>> {
        self.timeout
            .map(|secs| {
                Duration::try_from_secs_f64(secs).map_err(|_| {
                    anyhow::anyhow!("-W / --timeout must be a number of seconds, not {secs}")
                })
            })
            .transpose()
    }

    /// How each document prints.
    fn output(&self) -> anyhow::Result<Output> {
        Ok(match &self.format {
            Some(format) => Output::Format(super::format::parse(format)?),
            None if self.verbose => Output::Verbose,
            None => Output::Json,
        })
    }
}

/// Why the listen loop ended.
enum End {
    /// `--count` documents came, or the operation is done, or Ctrl-C.
    Finished,
    /// `--timeout` passed first.
    TimedOut,
}

/// Runs `host-shim listen` until `--count`, `--timeout`, Ctrl-C, or the
/// operation says it is done; exits 27 when `--timeout` passed before
/// `--count` documents came.
pub fn run(args: ListenArgs) -> anyhow::Result<ExitCode> {
    let connection = args.connection.connection_config()?;
    let config = args.listen_config()?;
    let timeout = args.timeout()?;
    let output = args.output()?;
    let runtime = args.connection.runtime()?;
    let wanted = args.count.unwrap_or(u64::MAX);

    super::tokio()?.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_on_signal = Arc::clone(&stop);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop_on_signal.store(true, Ordering::Relaxed);
            }
        });

        let mut listener = runtime
            .open_listener(&connection.to_string(), &config.to_string())
            .await
            .context("cannot open the listener")?;
        // The time counts from the subscription, as mosquitto_sub's -W.
        let deadline = timeout.map(|t| Instant::now() + t);
        let progress = Progress::new(show_progress(), "received");
        let mut stdout = std::io::stdout().lock();
        let mut received = 0u64;
        let result: anyhow::Result<End> = async {
            while received < wanted && !stop.load(Ordering::Relaxed) {
                let left = match deadline {
                    Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                    None => POLL,
                };
                if left.is_zero() {
                    return Ok(End::TimedOut);
                }
                let max = u32::try_from((wanted - received).min(1000)).unwrap_or(1000);
                let batch = listener.next(max, left.min(POLL)).await?;
                if batch.is_empty() {
                    if listener.done().await? {
                        break;
                    }
                    continue;
                }
                for document in &batch {
                    stdout.write_all(&render(&output, document))?;
                }
                stdout.flush()?;
                // Printed, so now it is the reader's: acknowledge it.
                let ids: Vec<u64> = batch.iter().map(|d| d.id).collect();
                match listener.commit(&ids).await {
                    Err(e) if e.is_redelivery() => tracing::warn!("{e}"),
                    other => other?,
                }
                received += batch.len() as u64;
                progress.set(received);
            }
            Ok(End::Finished)
        }
        .await;
        progress.finish();
        listener.close().await;
        match result? {
            End::TimedOut if args.count.is_some() => {
                eprintln!(
                    "host-shim: timed out after {} s with {received} of {wanted} documents",
                    timeout.map_or(0.0, |t| t.as_secs_f64())
                );
                Ok(ExitCode::from(exit::TIMED_OUT))
            }
            End::TimedOut | End::Finished => Ok(ExitCode::SUCCESS),
        }
    })
}
