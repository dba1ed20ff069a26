//! `host-shim listen`: subscribes through the connector's Listen operation
//! and prints one JSON object per document.

use super::{ensure_valid, read_object, show_progress, ConnectionArgs};
use anyhow::Context as _;
use clap::Args;
use host_shim::flow::{document_line, ConfigKind};
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

/// `host-shim listen`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Each document prints as one line of JSON:
  {\"topic\":\"a/b\",\"qos\":1,\"retained\":false,\"payload\":\"text\",\"properties\":{..}}
with \"payload_base64\" instead of \"payload\" when the payload is not UTF-8.
Each batch is committed (acknowledged to the broker) once it is printed.

Examples:
  host-shim listen --url mqtt://localhost:1883 --topic 'users/settings/+' \\
      --count 1
  host-shim listen --url mqtt://localhost:1883 --topic '#' --timeout 10 | jq .")]
pub struct ListenArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Topic filter to subscribe to (+ and # wildcards); repeat for more
    #[arg(long, value_name = "FILTER")]
    pub topic: Vec<String>,
    /// Highest QoS to receive at: 0, 1 or 2 [default: 0]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: Option<u8>,
    /// Stop after N documents
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after SECS seconds in all [default: run until Ctrl-C]
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
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
        if !self.topic.is_empty() {
            let subscriptions = self
                .topic
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
        if !config.contains_key("subscriptions") {
            anyhow::bail!("nothing to listen to: give --topic FILTER or --config FILE");
        }
        let config = Json::Object(config);
        ensure_valid(ConfigKind::Listen, "listen", &config)?;
        Ok(config)
    }

    fn timeout(&self) -> anyhow::Result<Option<Duration>> {
        self.timeout
            .map(|secs| {
                Duration::try_from_secs_f64(secs).map_err(|_| {
                    anyhow::anyhow!("--timeout must be a number of seconds, not {secs}")
                })
            })
            .transpose()
    }
}

/// Runs `host-shim listen` until `--count`, `--timeout`, Ctrl-C, or the
/// operation says it is done.
pub fn run(args: ListenArgs) -> anyhow::Result<ExitCode> {
    let connection = args.connection.connection_config()?;
    let config = args.listen_config()?;
    let timeout = args.timeout()?;
    let runtime = args.connection.runtime()?;
    let deadline = timeout.map(|t| Instant::now() + t);
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
        let progress = show_progress();
        let mut stdout = std::io::stdout().lock();
        let mut received = 0u64;
        let result: anyhow::Result<()> = async {
            while received < wanted && !stop.load(Ordering::Relaxed) {
                let left = match deadline {
                    Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                    None => POLL,
                };
                if left.is_zero() {
                    break;
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
                    writeln!(stdout, "{}", document_line(document))?;
                }
                stdout.flush()?;
                // Printed, so now it is the reader's: acknowledge it.
                let ids: Vec<u64> = batch.iter().map(|d| d.id).collect();
                listener.commit(&ids).await?;
                received += batch.len() as u64;
                if progress {
                    eprint!("\rreceived {received}");
                }
            }
            Ok(())
        }
        .await;
        if progress && received > 0 {
            eprintln!();
        }
        listener.close().await;
        result?;
        Ok(ExitCode::SUCCESS)
    })
}
