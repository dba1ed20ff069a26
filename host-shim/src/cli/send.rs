//! `host-shim send`: publishes documents through the connector's Send
//! operation and prints one outcome per document.

use super::{ensure_valid, read_object, show_progress, ConnectionArgs};
use anyhow::Context as _;
use clap::Args;
use host_shim::flow::ConfigKind;
use host_shim::host::Document;
use serde_json::{Map, Value as Json};
use std::io::{BufRead, BufReader, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::sync::mpsc;

/// Documents go to the connector in batches of this many: one call across
/// the WebAssembly boundary each, and a bounded amount of memory.
const BATCH: usize = 500;

/// How long a batch that is not full waits for more lines once its first
/// line is in: long enough to gather a burst, short enough that a line from
/// a stream (`tail -f log | host-shim send --file -`) leaves promptly.
const LINGER: Duration = Duration::from_millis(20);

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

    /// Where the payloads come from: `--message`, or the lines of `--file`
    /// (opened now, so a missing file fails before connecting).
    fn input(&self) -> anyhow::Result<Input> {
        match (&self.message, &self.file) {
            (Some(message), _) => Ok(Input::Message(message.as_bytes().to_vec())),
            (None, Some(path)) if path.as_os_str() == "-" => {
                Ok(Input::Lines(Box::new(BufReader::new(std::io::stdin()))))
            }
            (None, Some(path)) => {
                let file = std::fs::File::open(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                Ok(Input::Lines(Box::new(BufReader::new(file))))
            }
            (None, None) => anyhow::bail!(
                "nothing to send: give --message TEXT, or --file FILE (- for standard input)"
            ),
        }
    }
}

/// The payloads to send.
enum Input {
    /// One document.
    Message(Vec<u8>),
    /// One document per line, read as they come.
    Lines(Box<dyn BufRead + Send>),
}

/// Reads lines as bytes: a payload need not be UTF-8. A final newline ends
/// the last line rather than starting an empty one, and `\r\n` counts as one
/// line end; an input that is one newline holds no line.
struct LineReader<R> {
    input: R,
    first: bool,
}

impl<R: BufRead> LineReader<R> {
    fn new(input: R) -> Self {
        LineReader { input, first: true }
    }

    /// The next line, or `None` at the end of the input.
    fn next_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut line = Vec::new();
        if self.input.read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        if std::mem::take(&mut self.first) && line == b"\n" && self.input.fill_buf()?.is_empty() {
            return Ok(None);
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        Ok(Some(line))
    }
}

/// A line, or the error that ended the input.
type Line = std::io::Result<Vec<u8>>;

/// Reads `input` on a thread of its own, so that a slow source (a pipe, a
/// terminal) never holds up the lines already read, and hands the lines
/// over a bounded channel; an error is the last item.
fn read_lines(input: Box<dyn BufRead + Send>) -> mpsc::Receiver<Line> {
    let (tx, rx) = mpsc::channel(2 * BATCH);
    std::thread::spawn(move || {
        let mut reader = LineReader::new(input);
        while let Some(line) = reader.next_line().transpose() {
            let failed = line.is_err();
            if tx.blocking_send(line).is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// The next batch: waits for a first line, then takes more until the batch
/// is full, [`LINGER`] has passed or the input ends. Empty at the end.
async fn next_batch(lines: &mut mpsc::Receiver<Line>) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut read = Vec::with_capacity(BATCH);
    if lines.recv_many(&mut read, BATCH).await == 0 {
        return Ok(Vec::new());
    }
    let deadline = tokio::time::Instant::now() + LINGER;
    while read.len() < BATCH {
        let room = BATCH - read.len();
        let more = lines.recv_many(&mut read, room);
        match tokio::time::timeout_at(deadline, more).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    read.into_iter()
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot read the input")
}

/// Runs `host-shim send`: exit 0 when every document was sent, 1 when some
/// failed.
pub fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let connection = args.connection.connection_config()?;
    let config = args.send_config()?;
    let input = args.input()?;
    let runtime = args.connection.runtime()?;

    super::tokio()?.block_on(async {
        let mut sender = runtime
            .open_sender(&connection.to_string(), &config.to_string())
            .await
            .context("cannot open the sender")?;
        let mut lines = match input {
            Input::Message(message) => {
                let (tx, rx) = mpsc::channel(1);
                let _ = tx.try_send(Ok(message));
                rx
            }
            Input::Lines(input) => read_lines(input),
        };
        let progress = show_progress();
        // Written out once per batch: stdout is line-buffered even into a
        // pipe, which would cost a write per document.
        let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
        let mut sent = 0usize;
        let mut failed = 0usize;
        let mut result = Ok(());
        loop {
            let payloads = match next_batch(&mut lines).await {
                Ok(payloads) if payloads.is_empty() => break,
                Ok(payloads) => payloads,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let first = sent;
            let count = payloads.len();
            let documents: Vec<Document> = payloads
                .into_iter()
                .map(|payload| Document {
                    id: 0,
                    payload,
                    properties: Vec::new(),
                })
                .collect();
            let outcomes = match sender.send(&documents).await {
                Ok(outcomes) => outcomes,
                Err(e) => {
                    let last = first + count - 1;
                    result = Err(e).with_context(|| format!("sending documents {first} to {last}"));
                    break;
                }
            };
            sent += count;
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
            // A batch's outcomes show as soon as they are known, for whoever
            // reads a stream's results as they come.
            if result.is_ok() {
                result = stdout.flush().map_err(Into::into);
            }
            if progress && sent > BATCH {
                eprint!("\rsent {sent}");
            }
            if result.is_err() {
                break;
            }
        }
        if progress && sent > BATCH {
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
    use super::LineReader;

    /// Every line of `bytes`, read as `send --file` reads them.
    fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut reader = LineReader::new(bytes);
        std::iter::from_fn(|| reader.next_line().expect("reading a slice")).collect()
    }

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
