//! `host-shim send` (alias `pub`): publishes documents through the
//! connector's Send operation; prints a summary and each failure on stderr,
//! or one JSON line per document with `--results`.

use super::progress::Progress;
use super::{ensure_valid_with_hint, exit, read_object, show_progress, ConnectionArgs};
use anyhow::Context as _;
use clap::{ArgGroup, Args};
use connector::model::Error as ConnectorError;
use host_shim::flow::ConfigKind;
use host_shim::host::Document;
use mqtt_topic::MqttVersion;
use serde_json::{Map, Value as Json};
use std::io::{BufRead, BufReader, Read as _, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Documents go to the connector in batches of at most this many, one
/// call across the WebAssembly boundary each. The in-flight window empties
/// at the end of every call (its last acknowledgements are awaited), so a
/// batch is large enough for that to cost a few per cent at most.
const BATCH_DOCUMENTS: usize = 5000;

/// A batch is also full at this many bytes of payload (a batch holds at
/// least one document whatever its size): what a call copies into the
/// guest's memory stays well inside its limit.
const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Lines read ahead of the batch being sent.
const READ_AHEAD: usize = 1024;

/// How long a batch that is not full waits for more lines once its first
/// line is in: long enough to gather a burst, short enough that a line from
/// a stream (`tail -f log | host-shim send --file -`) leaves promptly.
const LINGER: Duration = Duration::from_millis(20);

/// `host-shim send` (alias `pub`).
#[derive(Debug, Args)]
#[command(after_long_help = concat!("\
Prints a summary on stderr (sent, failed, rate) after one line per failed
document, `document N: reason`, N counting from 0; --results also prints
one JSON line per document on stdout:
  {\"document\":0,\"ok\":true}
  {\"document\":1,\"ok\":false,\"error\":\"...\"}

Examples (mosquitto_pub's flags work the same):
  host-shim pub -h 127.0.0.1 -p 1883 -t users/settings/user01 -q 1 -r \\
      -m '{\"account_type\":\"standard\"}'
  host-shim send -t sensors/t1 --file a.txt     (one document per line)
  tail -f log | host-shim send -t logs -l       (each line as it comes)
  host-shim send -t sensors/t1 -r -n            (clears the retained message)

", exit_status_help!()))]
#[command(group = ArgGroup::new("source").args(
    ["message", "message_file", "file", "stdin_line", "stdin_file", "null_message"]
))]
pub struct SendArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Topic to publish to (mosquitto -t)
    #[arg(short = 't', long, value_name = "TOPIC")]
    pub topic: Option<String>,
    /// QoS to publish at: 0, 1 or 2 (mosquitto -q) [default: 1]
    #[arg(short = 'q', long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: Option<u8>,
    /// Retain: the broker keeps it for new subscribers (mosquitto -r)
    #[arg(short = 'r', long)]
    pub retain: bool,
    /// Send one document with this payload (mosquitto -m)
    #[arg(short = 'm', long, value_name = "TEXT")]
    pub message: Option<String>,
    /// Send the whole of FILE as one document (mosquitto -f)
    #[arg(short = 'f', long, value_name = "FILE")]
    pub message_file: Option<PathBuf>,
    /// Send each line of FILE as a document; - for standard input
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Send each line of standard input as it comes (mosquitto -l)
    #[arg(short = 'l', long)]
    pub stdin_line: bool,
    /// Send all of standard input as one document (mosquitto -s)
    #[arg(short = 's', long)]
    pub stdin_file: bool,
    /// Send one document with an empty payload (mosquitto -n)
    #[arg(short = 'n', long)]
    pub null_message: bool,
    /// Print one JSON line per document: its index and outcome
    #[arg(long)]
    pub results: bool,
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
        if let Some(topic) = self.topic.as_deref().or(self.connection.url_topic()) {
            config.insert("topic".to_owned(), Json::from(topic));
        }
        if let Some(qos) = self.qos {
            config.insert("qos".to_owned(), Json::from(qos));
        }
        if self.retain {
            config.insert("retained".to_owned(), Json::from(true));
        }
        let config = Json::Object(config);
        ensure_valid_with_hint(ConfigKind::Send, "send", &config, |problem| {
            (problem.pointer == "/topic").then_some("on the command line: -t TOPIC")
        })?;
        Ok(config)
    }

    /// Where the payloads come from (a file is opened now, so a missing
    /// file fails before connecting).
    fn input(&self) -> anyhow::Result<Input> {
        let lines = |path: &Path| -> anyhow::Result<Input> {
            if path.as_os_str() == "-" {
                return Ok(Input::Lines(Box::new(BufReader::new(std::io::stdin()))));
            }
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Ok(Input::Lines(Box::new(BufReader::new(file))))
        };
        if let Some(message) = &self.message {
            Ok(Input::Message(message.as_bytes().to_vec()))
        } else if let Some(path) = &self.message_file {
            let bytes = if path.as_os_str() == "-" {
                read_stdin()?
            } else {
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
            };
            Ok(Input::Message(bytes))
        } else if let Some(path) = &self.file {
            lines(path)
        } else if self.stdin_line {
            lines(Path::new("-"))
        } else if self.stdin_file {
            Ok(Input::Message(read_stdin()?))
        } else if self.null_message {
            Ok(Input::Message(Vec::new()))
        } else {
            anyhow::bail!(
                "nothing to send: give -m TEXT, -f FILE, --file FILE (a document \
                 per line), -l (a document per line of standard input), -s \
                 (standard input as one document) or -n (an empty document)"
            )
        }
    }
}

/// All of standard input, as bytes.
fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .context("cannot read standard input")?;
    Ok(bytes)
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
    let (tx, rx) = mpsc::channel(READ_AHEAD);
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

/// Cuts the lines into batches.
struct Batches {
    lines: mpsc::Receiver<Line>,
    /// A line that did not fit in the last batch, or the error that ended
    /// the input after it: the next batch starts with it.
    carried: Option<Line>,
}

impl Batches {
    fn new(lines: mpsc::Receiver<Line>) -> Self {
        Batches {
            lines,
            carried: None,
        }
    }

    /// The next batch: waits for a first line, then takes more until the
    /// batch is full ([`BATCH_DOCUMENTS`], [`BATCH_BYTES`]), [`LINGER`] has
    /// passed or the input ends. Empty at the end. A read error comes after
    /// the lines read before it have been handed out.
    async fn next(&mut self) -> anyhow::Result<Vec<Vec<u8>>> {
        let first = match self.carried.take() {
            Some(line) => line,
            None => match self.lines.recv().await {
                Some(line) => line,
                None => return Ok(Vec::new()),
            },
        };
        let first = first.context("cannot read the input")?;
        let mut bytes = first.len();
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH_DOCUMENTS {
            // Lines already read are taken without arming a timer.
            let line = match self.lines.try_recv() {
                Ok(line) => line,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                        Ok(Some(line)) => line,
                        Ok(None) | Err(_) => break,
                    }
                }
            };
            match line {
                Ok(line) if bytes + line.len() <= BATCH_BYTES => {
                    bytes += line.len();
                    batch.push(line);
                }
                line => {
                    self.carried = Some(line);
                    break;
                }
            }
        }
        Ok(batch)
    }
}

/// What a send did, for its summary.
#[derive(Debug, Default)]
struct Tally {
    sent: usize,
    failed: usize,
}

/// Writes the outcome of each document: a JSON line on `results` for
/// `--results`, and a line on stderr for each failure.
struct Report<W: Write> {
    results: Option<W>,
    progress: Progress,
    retained: bool,
    v311: bool,
    hinted: bool,
    tally: Tally,
}

impl<W: Write> Report<W> {
    fn outcome(
        &mut self,
        index: usize,
        outcome: &Result<(), ConnectorError>,
    ) -> std::io::Result<()> {
        match outcome {
            Ok(()) => self.tally.sent += 1,
            Err(e) => {
                self.tally.failed += 1;
                // The connector counts within the batch; the user counts
                // within the whole input.
                let error = e.clone().for_document(index);
                self.progress.eprintln(&error.to_string());
                if !self.hinted {
                    if let Some(hint) = exit::retained_send_hint(e, self.retained, self.v311) {
                        self.progress.eprintln(&format!("hint: {hint}"));
                        self.hinted = true;
                    }
                }
            }
        }
        if let Some(results) = &mut self.results {
            let line = match outcome {
                Ok(()) => serde_json::json!({ "document": index, "ok": true }),
                Err(e) => {
                    let mut line = serde_json::json!({
                        "document": index, "ok": false, "error": e.message,
                    });
                    if let Some(code) = e.reason_code {
                        line["reason_code"] = Json::from(code);
                    }
                    line
                }
            };
            writeln!(results, "{line}")?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.results {
            Some(results) => results.flush(),
            None => Ok(()),
        }
    }
}

/// The one-line summary: how many were sent and failed, and the rate.
fn summary(tally: &Tally, elapsed: Duration) -> String {
    let total = tally.sent + tally.failed;
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { total as f64 / secs } else { 0.0 };
    let noun = if total == 1 { "document" } else { "documents" };
    format!(
        "sent {}, failed {} ({total} {noun} in {secs:.2} s, {rate:.0}/s)",
        tally.sent, tally.failed
    )
}

/// Runs `host-shim send`: exit 0 when every document was sent, 1 when some
/// failed, 3 when the broker could not be reached.
pub fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let connection = args.connection.connection_config()?;
    let config = args.send_config()?;
    let input = args.input()?;
    let runtime = args.connection.runtime()?;
    let retained = config["retained"] == Json::Bool(true);

    super::tokio()?.block_on(async {
        let mut sender = runtime
            .open_sender(&connection.to_string(), &config.to_string())
            .await
            .context("cannot open the sender")?;
        let started = Instant::now();
        let lines = match input {
            Input::Message(message) => {
                let (tx, rx) = mpsc::channel(1);
                let _ = tx.try_send(Ok(message));
                rx
            }
            Input::Lines(input) => read_lines(input),
        };
        let mut batches = Batches::new(lines);
        // Written out once per batch: stdout is line-buffered even into a
        // pipe, which would cost a write per document.
        let mut report = Report {
            results: args
                .results
                .then(|| std::io::BufWriter::new(std::io::stdout().lock())),
            progress: Progress::new(show_progress(), "sent"),
            retained,
            v311: connection["mqtt_version"] == MqttVersion::V311.as_str(),
            hinted: false,
            tally: Tally::default(),
        };
        let mut read = 0usize;
        let mut result = Ok(());
        loop {
            let payloads = match batches.next().await {
                Ok(payloads) if payloads.is_empty() => break,
                Ok(payloads) => payloads,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let first = read;
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
            read += count;
            for (i, outcome) in outcomes.iter().enumerate() {
                if let Err(e) = report.outcome(first + i, outcome) {
                    result = Err(e.into());
                    break;
                }
            }
            // A batch's outcomes show as soon as they are known, for whoever
            // reads a stream's results as they come.
            if result.is_ok() {
                result = report.flush().map_err(Into::into);
            }
            report.progress.set(read as u64);
            if result.is_err() {
                break;
            }
        }
        report.progress.finish();
        let flushed = report.flush();
        sender.close().await;
        result?;
        flushed?;
        eprintln!("{}", summary(&report.tally, started.elapsed()));
        Ok(if report.tally.failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(exit::SOME_FAILED)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::{summary, Batches, LineReader, Tally, BATCH_BYTES, BATCH_DOCUMENTS};
    use std::time::Duration;
    use tokio::sync::mpsc;

    #[test]
    fn the_summary_counts_and_gives_the_rate() {
        let tally = Tally { sent: 3, failed: 1 };
        assert_eq!(
            summary(&tally, Duration::from_secs(2)),
            "sent 3, failed 1 (4 documents in 2.00 s, 2/s)"
        );
        let one = Tally { sent: 1, failed: 0 };
        assert!(summary(&one, Duration::ZERO).starts_with("sent 1, failed 0 (1 document in"));
    }

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

    /// Batches of `lines` followed by `end` (an error, or nothing).
    async fn batches(
        lines: Vec<Vec<u8>>,
        end: Option<std::io::Error>,
    ) -> Vec<Result<Vec<Vec<u8>>, String>> {
        let (tx, rx) = mpsc::channel(lines.len() + 1);
        for line in lines {
            tx.try_send(Ok(line)).expect("room for every line");
        }
        if let Some(error) = end {
            tx.try_send(Err(error)).expect("room for the error");
        }
        drop(tx);
        let mut batches = Batches::new(rx);
        let mut out = Vec::new();
        loop {
            match batches.next().await {
                Ok(batch) if batch.is_empty() => return out,
                Ok(batch) => out.push(Ok(batch)),
                Err(e) => {
                    out.push(Err(format!("{e:#}")));
                    return out;
                }
            }
        }
    }

    #[tokio::test]
    async fn a_batch_is_full_at_its_document_count() {
        let lines: Vec<Vec<u8>> = (0..BATCH_DOCUMENTS + 3)
            .map(|i| i.to_string().into_bytes())
            .collect();
        let out = batches(lines.clone(), None).await;
        let sizes: Vec<usize> = out.iter().map(|b| b.as_ref().map_or(0, Vec::len)).collect();
        assert_eq!(sizes, [BATCH_DOCUMENTS, 3]);
        let joined: Vec<Vec<u8>> = out.into_iter().flat_map(Result::unwrap).collect();
        assert_eq!(joined, lines, "every line once, in order");
    }

    #[tokio::test]
    async fn a_batch_is_full_at_its_byte_count_and_a_larger_line_goes_alone() {
        let quarter = vec![b'q'; BATCH_BYTES / 4];
        let huge = vec![b'h'; BATCH_BYTES + 1];
        let mut lines = vec![quarter.clone(); 5];
        lines.push(huge.clone());
        lines.push(b"last".to_vec());
        let out = batches(lines, None).await;
        let sizes: Vec<usize> = out.iter().map(|b| b.as_ref().map_or(0, Vec::len)).collect();
        assert_eq!(sizes, [4, 1, 1, 1]);
        assert_eq!(out[2].as_ref().unwrap()[0], huge);
        assert_eq!(out[3].as_ref().unwrap()[0], b"last");
    }

    #[tokio::test]
    async fn a_read_error_comes_after_the_lines_read_before_it() {
        let error = std::io::Error::new(std::io::ErrorKind::InvalidData, "bad sector");
        let out = batches(vec![b"a".to_vec(), b"b".to_vec()], Some(error)).await;
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].as_ref().unwrap(), &[b"a".to_vec(), b"b".to_vec()]);
        let message = out[1].as_ref().unwrap_err();
        assert!(
            message.contains("cannot read the input") && message.contains("bad sector"),
            "{message}"
        );
    }
}
