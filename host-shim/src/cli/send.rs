//! `host-shim send`: publishes documents through the connector's Send
//! operation and prints one outcome per document.

use super::{ensure_valid, read_bytes, read_object, show_progress, ConnectionArgs};
use anyhow::Context as _;
use clap::Args;
use host_shim::flow::ConfigKind;
use host_shim::host::Document;
use serde_json::{Map, Value as Json};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Documents go to the connector in batches of this many: one call across
/// the WebAssembly boundary each, and a bounded amount of memory.
const BATCH: usize = 500;

/// `host-shim send`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Prints `ok` or the error, naming the document, for each document in order;
exits 1 when any failed.

Examples:
  host-shim send --url mqtt://localhost:1883 --topic users/settings/user01 \\
      --qos 1 --retain --message '{\"account_type\":\"standard\"}'
  host-shim send --url mqtt://localhost:1883 --topic sensors/t1 --file a.txt
  host-shim send --url mqtt://localhost:1883 --topic sensors/t1 --retain \\
      --message ''     (an empty retained message clears the topic)")]
pub struct SendArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Topic to publish to
    #[arg(long, value_name = "TOPIC")]
    pub topic: Option<String>,
    /// QoS to publish at: 0, 1 or 2 [default: 0]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: Option<u8>,
    /// Set the RETAIN flag: the broker keeps the message for new subscribers
    #[arg(long)]
    pub retain: bool,
    /// Send one document with this text as its payload
    #[arg(long, value_name = "TEXT", conflicts_with = "file")]
    pub message: Option<String>,
    /// Send one document per line of FILE; - reads standard input
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// JSON file of a whole Send configuration; the flags override it
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl SendArgs {
    /// The Send configuration: the file, then the flags over it.
    pub fn send_config(&self) -> anyhow::Result<Json> {
        let mut config = match &self.config {
            Some(path) => read_object(path)?,
            None => Map::new(),
        };
        if let Some(topic) = &self.topic {
            config.insert("topic".to_owned(), Json::from(topic.as_str()));
        }
        if let Some(qos) = self.qos {
            config.insert("qos".to_owned(), Json::from(qos));
        }
        if self.retain {
            config.insert("retained".to_owned(), Json::from(true));
        }
        let config = Json::Object(config);
        ensure_valid(ConfigKind::Send, "send", &config)?;
        Ok(config)
    }

    /// The payloads: `--message`, or each line of `--file`.
    pub fn payloads(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        match (&self.message, &self.file) {
            (Some(message), _) => Ok(vec![message.as_bytes().to_vec()]),
            (None, Some(path)) => Ok(lines(&read_bytes(path)?)),
            (None, None) => anyhow::bail!(
                "nothing to send: give --message TEXT, or --file FILE (- for standard input)"
            ),
        }
    }
}

/// Splits a file into lines, as bytes: a payload need not be UTF-8. A final
/// newline ends the last line rather than starting an empty one, and `\r\n`
/// counts as one line end.
fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line).to_vec())
        .collect()
}

/// Runs `host-shim send`: exit 0 when every document was sent, 1 when some
/// failed.
pub fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let connection = args.connection.connection_config()?;
    let config = args.send_config()?;
    let payloads = args.payloads()?;
    let runtime = args.connection.runtime()?;

    super::tokio()?.block_on(async {
        let mut sender = runtime
            .open_sender(&connection.to_string(), &config.to_string())
            .await
            .context("cannot open the sender")?;
        let progress = show_progress() && payloads.len() > BATCH;
        let mut stdout = std::io::stdout().lock();
        let mut failed = 0usize;
        let mut result = Ok(());
        for (n, chunk) in payloads.chunks(BATCH).enumerate() {
            let first = n * BATCH;
            let documents: Vec<Document> = chunk
                .iter()
                .map(|payload| Document {
                    id: 0,
                    payload: payload.clone(),
                    properties: Vec::new(),
                })
                .collect();
            let outcomes = match sender.send(&documents).await {
                Ok(outcomes) => outcomes,
                Err(e) => {
                    let last = first + chunk.len() - 1;
                    result = Err(e).with_context(|| format!("sending documents {first} to {last}"));
                    break;
                }
            };
            for (i, outcome) in outcomes.iter().enumerate() {
                let written = match outcome {
                    Ok(()) => writeln!(stdout, "ok"),
                    Err(e) => {
                        failed += 1;
                        // The connector counts within the batch; the user
                        // counts within the whole input.
                        writeln!(stdout, "{}", e.clone().for_document(first + i))
                    }
                };
                if let Err(e) = written {
                    result = Err(e.into());
                    break;
                }
            }
            if progress {
                eprint!("\rsent {} of {}", first + chunk.len(), payloads.len());
            }
            if result.is_err() {
                break;
            }
        }
        if progress {
            eprintln!();
        }
        let flushed = stdout.flush();
        sender.close().await;
        result?;
        flushed?;
        Ok(if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::lines;

    #[test]
    fn lines_are_bytes_split_on_newlines() {
        assert_eq!(
            lines(b"a\nb\r\n\xff\n"),
            [b"a".to_vec(), b"b".to_vec(), vec![0xff]]
        );
        assert_eq!(lines(b"a\n\nb"), [b"a".to_vec(), Vec::new(), b"b".to_vec()]);
        assert!(lines(b"").is_empty());
        assert_eq!(lines(b"\n"), Vec::<Vec<u8>>::new());
    }
}
