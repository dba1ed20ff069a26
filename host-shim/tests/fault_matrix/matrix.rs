//! The fault matrix: a stream of documents Send -> broker -> Listen, each
//! document committed by the listening pipeline, under one fault at a time,
//! counting what was lost and what was committed twice.
//!
//! Shared by the test suite (`host-shim/tests/fault_matrix.rs`, small
//! streams) and the benchmark (`cargo bench -p e2e --bench report -- faults`,
//! large ones). Everything goes through the connector component in the
//! host, as a pipeline runs it. A document counts as committed when the
//! listener's `commit` for its batch succeeded; a batch whose commit says
//! it came on a connection since lost is not counted (it comes again).
//!
//! The faults:
//! 1. the broker process killed (SIGKILL) mid-stream and started again on
//!    the same port, with sessions on disk;
//! 2. every connection dropped every 200 ms (`faults.close_every_ms`);
//! 3. 5% of the broker's acknowledgements lost (`faults.drop_acks`);
//! 4. the listening host killed before it commits a batch (its operation
//!    dropped: no DISCONNECT, no acknowledgement), then opened again with
//!    the same persistent session;
//! 5. a slow consumer (one commit every 100 ms) behind a fast producer,
//!    with a broker queue of 1,000 messages;
//! 6. three listeners in one shared subscription group, one killed
//!    mid-stream.
//!
//! Each runs against the built-in broker; the faults that need nothing of
//! the broker (1 with `persistence true`, 4, 5 and 6) also against
//! Mosquitto at its defaults, for comparison (4 without a queue limit).

use anyhow::{bail, Context, Result};
use host_shim::host::{Document, Listener, Runtime, Sender};
use mqtt_broker::{BrokerConfig, BrokerHandle};
use serde_json::json;
use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Documents per send batch.
const SEND_BATCH: usize = 200;
/// Documents asked for per `next`.
const RECEIVE_BATCH: u32 = 100;
/// How long the stream may go without a new commit before it is given up
/// (then what is missing counts as lost).
const STALL: Duration = Duration::from_secs(20);
/// How long a broker process may take to listen.
const STARTUP: Duration = Duration::from_secs(15);
/// Where the Debian package installs Mosquitto.
const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// The broker a stream runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The built-in broker.
    Builtin,
    /// Mosquitto at its defaults (with `persistence true` for a restart,
    /// and no queue limit for a listener's restart).
    Mosquitto,
}

impl Target {
    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Target::Builtin => "built-in",
            Target::Mosquitto => "Mosquitto",
        }
    }

    /// Whether `fault` can be run against it: Mosquitto injects no faults.
    pub fn runs(self, fault: Fault) -> bool {
        self == Target::Builtin || !matches!(fault, Fault::ConnectionsDropped | Fault::AcksLost)
    }
}

/// One fault of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The broker process killed with SIGKILL mid-stream and restarted,
    /// sessions on disk.
    BrokerKilled,
    /// Every connection dropped every 200 ms.
    ConnectionsDropped,
    /// 5% of the broker's acknowledgements lost.
    AcksLost,
    /// The listening host killed before a commit, then restarted.
    ListenerKilled,
    /// One commit every 100 ms behind a fast producer.
    SlowConsumer,
    /// One of three shared-subscription listeners killed.
    WorkerKilled,
}

impl Fault {
    /// Every fault, in the matrix's order.
    pub const ALL: [Fault; 6] = [
        Fault::BrokerKilled,
        Fault::ConnectionsDropped,
        Fault::AcksLost,
        Fault::ListenerKilled,
        Fault::SlowConsumer,
        Fault::WorkerKilled,
    ];

    /// A short name, for command lines and tables.
    pub fn key(self) -> &'static str {
        match self {
            Fault::BrokerKilled => "broker-killed",
            Fault::ConnectionsDropped => "connections-dropped",
            Fault::AcksLost => "acks-lost",
            Fault::ListenerKilled => "listener-killed",
            Fault::SlowConsumer => "slow-consumer",
            Fault::WorkerKilled => "worker-killed",
        }
    }

    /// What the fault does, for tables.
    pub fn describe(self) -> &'static str {
        match self {
            Fault::BrokerKilled => "broker kill -9 and restart mid-stream, sessions on disk",
            Fault::ConnectionsDropped => "every connection dropped every 200 ms",
            Fault::AcksLost => "5% of the broker's acknowledgements lost",
            Fault::ListenerKilled => "listening host killed before commit, then restarted",
            Fault::SlowConsumer => "slow consumer (a commit every 100 ms), fast producer",
            Fault::WorkerKilled => "3 listeners in a shared group, one killed mid-stream",
        }
    }

    /// The fault named `key`.
    pub fn from_key(key: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.key() == key)
    }
}

/// What one stream under one fault came to.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The broker.
    pub target: Target,
    /// The fault.
    pub fault: Fault,
    /// The QoS of the stream.
    pub qos: u8,
    /// Documents sent.
    pub count: usize,
    /// Documents whose send failed (reported to the sender).
    pub send_failed: usize,
    /// Documents reported sent and never committed by a listener.
    pub lost: usize,
    /// Commits beyond the first of a document.
    pub duplicated: usize,
    /// From the first send to the last commit.
    pub elapsed: Duration,
    /// How long the producer took to send every document.
    pub send_elapsed: Duration,
}

impl Outcome {
    /// Whether the stream met the goal: nothing lost or failed, and no
    /// duplicate at QoS 2.
    pub fn met(&self) -> bool {
        self.lost == 0 && self.send_failed == 0 && (self.qos < 2 || self.duplicated == 0)
    }
}

/// Runs the matrix's streams; `host_shim` is the binary that serves the
/// broker process of [`Fault::BrokerKilled`].
pub struct Matrix {
    runtime: Runtime,
    host_shim: PathBuf,
    dir: PathBuf,
}

impl Matrix {
    /// A matrix running the component on `runtime`, with its files in a
    /// fresh directory under the system's temporary directory.
    pub fn new(runtime: Runtime, host_shim: &Path) -> Result<Matrix> {
        static RUN: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "host-shim-fault-matrix-{}-{}",
            std::process::id(),
            RUN.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Matrix {
            runtime,
            host_shim: host_shim.to_owned(),
            dir,
        })
    }

    /// Streams `count` documents at `qos` under `fault` through `target`.
    pub async fn run_on(
        &self,
        target: Target,
        fault: Fault,
        qos: u8,
        count: usize,
    ) -> Result<Outcome> {
        if !target.runs(fault) {
            bail!("{} cannot inject {}", target.name(), fault.key());
        }
        let topic = format!("matrix/{}/{qos}", fault.key());
        let mut broker = match target {
            Target::Builtin => self.broker(fault, qos).await?,
            Target::Mosquitto => self.mosquitto(fault, qos).await?,
        };
        let tally = Tally::new(count);
        let listen_config = match fault {
            Fault::WorkerKilled => json!({
                "subscriptions": [{ "filter": format!("$share/workers/{topic}"), "qos": qos }]
            }),
            _ => json!({ "subscriptions": [{ "filter": topic, "qos": qos }] }),
        }
        .to_string();
        let url = broker.url();
        let consumers: Vec<Consumer> = match fault {
            // Sessions that end with the connection: a killed worker's
            // messages go to the others.
            Fault::WorkerKilled => (0..3)
                .map(|worker| Consumer {
                    connection: connection(&url, &format!("matrix-worker-{worker}"), false),
                    kill_at: (worker == 0).then_some(count / 3),
                    restart: false,
                    commit_every: None,
                })
                .collect(),
            _ => vec![Consumer {
                connection: connection(&url, "matrix-listener", true),
                kill_at: (fault == Fault::ListenerKilled).then_some(count / 2),
                restart: true,
                commit_every: (fault == Fault::SlowConsumer).then_some(Duration::from_millis(100)),
            }],
        };
        // Listeners first, so the stream starts after their subscription.
        let mut consuming = Vec::new();
        for consumer in consumers {
            let listener =
                open_listener(&self.runtime, &consumer.connection, &listen_config).await?;
            consuming.push(tokio::spawn(consume(
                self.runtime.clone(),
                listen_config.clone(),
                consumer,
                listener,
                tally.clone(),
            )));
        }

        let sender_connection = connection(&url, "matrix-sender", true);
        let sender = self
            .runtime
            .open_sender(
                &sender_connection,
                &json!({ "topic": topic, "qos": qos }).to_string(),
            )
            .await
            .context("opening the sender")?;
        let started = Instant::now();
        let producer = tokio::spawn(produce(sender, count));

        if fault == Fault::BrokerKilled {
            tally.wait_for(count / 2, STALL).await;
            broker.kill_and_restart().await?;
        }
        let (send_failed, send_elapsed) = producer.await.context("the producer panicked")??;
        let expected = count - send_failed.len();
        tally.wait_until_done(expected, STALL).await;
        let elapsed = started.elapsed();
        tally.stop();
        for consumer in consuming {
            consumer.await.context("a consumer panicked")??;
        }
        broker.stop().await;

        let commits = tally.commits();
        let lost = (0..count)
            .filter(|i| !send_failed.contains(i) && !commits.contains_key(&(*i as u32)))
            .count();
        let duplicated = commits.values().map(|n| (n - 1) as usize).sum();
        Ok(Outcome {
            target,
            fault,
            qos,
            count,
            send_failed: send_failed.len(),
            lost,
            duplicated,
            elapsed,
            send_elapsed,
        })
    }

    /// The broker a fault runs against.
    async fn broker(&self, fault: Fault, qos: u8) -> Result<Broker> {
        let faults = match fault {
            Fault::ConnectionsDropped => json!({ "faults": { "close_every_ms": 200 } }),
            Fault::AcksLost => json!({ "faults": { "drop_acks": 0.05, "seed": 7 } }),
            Fault::SlowConsumer => json!({ "max_queued_messages": 1000 }),
            _ => json!({}),
        };
        if fault != Fault::BrokerKilled {
            let mut config = faults;
            config["host"] = json!("127.0.0.1");
            config["port"] = json!(0);
            let config = BrokerConfig::from_json(&config.to_string())
                .map_err(|e| anyhow::anyhow!("broker configuration: {e}"))?;
            let handle = mqtt_broker::start(config)
                .await
                .context("starting the broker")?;
            return Ok(Broker::InProcess(Some(handle)));
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config_file = self.dir.join(format!("broker-{qos}.json"));
        let sessions = self.dir.join(format!("sessions-{qos}.redb"));
        let _ = std::fs::remove_file(&sessions);
        std::fs::write(
            &config_file,
            json!({
                "host": "127.0.0.1",
                "port": port,
                "sessions": { "storage": { "disk": sessions } }
            })
            .to_string(),
        )?;
        let command = (
            self.host_shim.clone(),
            vec!["broker".into(), "--config".into(), config_file.into()],
        );
        let child = spawn_broker(&command, port).await?;
        Ok(Broker::Process {
            child,
            command,
            port,
        })
    }

    /// Mosquitto at its defaults on a free port; with `persistence true`
    /// for a restart, and no queue limit for a listener's restart.
    async fn mosquitto(&self, fault: Fault, qos: u8) -> Result<Broker> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let data = self.dir.join(format!("mosquitto-{qos}"));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data)?;
        let mut conf = format!("listener {port} 127.0.0.1\nallow_anonymous true\n");
        if fault == Fault::BrokerKilled {
            conf.push_str(&format!(
                "persistence true\npersistence_location {}/\n",
                data.display()
            ));
        }
        if fault == Fault::ListenerKilled {
            // At its default of 1000, Mosquitto drops what a session queues
            // beyond that while its listener restarts (row 5 shows that
            // limit); this row is about what the connector commits.
            conf.push_str("max_queued_messages 0\n");
        }
        let conf_file = data.join("mosquitto.conf");
        std::fs::write(&conf_file, conf)?;
        let command = (
            PathBuf::from(MOSQUITTO),
            vec!["-c".into(), conf_file.into()],
        );
        let child = spawn_broker(&command, port).await?;
        Ok(Broker::Process {
            child,
            command,
            port,
        })
    }
}

impl Drop for Matrix {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The connection configuration of one client: a persistent session (kept
/// an hour) or one that ends with the connection.
fn connection(url: &str, client_id: &str, persistent: bool) -> String {
    json!({
        "url": url,
        "client_id": client_id,
        "clean_start": !persistent,
        "session_expiry_secs": if persistent { 3600 } else { 0 },
        "reconnect": { "min_delay_ms": 20, "max_delay_ms": 500 },
        "keep_alive_secs": 10,
    })
    .to_string()
}

/// The broker of one stream.
enum Broker {
    InProcess(Option<BrokerHandle>),
    Process {
        child: Child,
        /// The program and arguments that start it.
        command: (PathBuf, Vec<std::ffi::OsString>),
        /// Its port on 127.0.0.1.
        port: u16,
    },
}

impl Broker {
    fn url(&self) -> String {
        match self {
            Broker::InProcess(handle) => handle.as_ref().map(|h| h.url()).unwrap_or_default(),
            Broker::Process { port, .. } => format!("mqtt://127.0.0.1:{port}"),
        }
    }

    /// Kills the broker process with SIGKILL and starts it again on the
    /// same port and files.
    async fn kill_and_restart(&mut self) -> Result<()> {
        let Broker::Process {
            child,
            command,
            port,
        } = self
        else {
            bail!("only a broker process can be killed");
        };
        child.kill().context("killing the broker")?;
        child.wait()?;
        *child = spawn_broker(command, *port).await?;
        Ok(())
    }

    async fn stop(&mut self) {
        match self {
            Broker::InProcess(handle) => {
                if let Some(handle) = handle.take() {
                    handle.shutdown().await;
                }
            }
            Broker::Process { child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Broker::Process { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts a broker process with `command`, once it accepts on `port`.
async fn spawn_broker(command: &(PathBuf, Vec<std::ffi::OsString>), port: u16) -> Result<Child> {
    let (program, args) = command;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let deadline = Instant::now() + STARTUP;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("{} exited at start: {status}", program.display());
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            bail!("{} did not listen on {port} in time", program.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends documents `0..count` in batches; returns the indexes that failed
/// and how long it took.
async fn produce(mut sender: Sender, count: usize) -> Result<(Vec<usize>, Duration)> {
    let started = Instant::now();
    let mut failed = Vec::new();
    let indexes: Vec<usize> = (0..count).collect();
    for chunk in indexes.chunks(SEND_BATCH) {
        let docs: Vec<Document> = chunk
            .iter()
            .map(|i| Document {
                id: 0,
                payload: i.to_string().into_bytes(),
                properties: Vec::new(),
            })
            .collect();
        let results = sender.send(&docs).await.context("sending a batch")?;
        for (i, result) in chunk.iter().zip(results) {
            if let Err(e) = result {
                if failed.is_empty() {
                    eprintln!("document {i} failed: {e}");
                }
                failed.push(*i);
            }
        }
    }
    let elapsed = started.elapsed();
    sender.close().await;
    Ok((failed, elapsed))
}

/// How one listener consumes.
struct Consumer {
    /// Its connection configuration.
    connection: String,
    /// Once the stream has this many commits, the listener takes one more
    /// batch and is killed before committing it.
    kill_at: Option<usize>,
    /// Whether a killed listener is opened again.
    restart: bool,
    /// Waits this long before each commit.
    commit_every: Option<Duration>,
}

/// Opens a listener on `runtime`, bounded in time.
async fn open_listener(runtime: &Runtime, connection: &str, config: &str) -> Result<Listener> {
    tokio::time::timeout(STARTUP, runtime.open_listener(connection, config))
        .await
        .context("the listener did not open in time")?
        .context("opening a listener")
}

/// Takes batches, commits them, and records each committed document in
/// `tally`, until the tally stops; a killed listener is opened again on
/// `runtime` with `config`.
async fn consume(
    runtime: Runtime,
    config: String,
    consumer: Consumer,
    mut listener: Listener,
    tally: Tally,
) -> Result<()> {
    let mut kill_at = consumer.kill_at;
    while !tally.stopped() {
        let batch = listener
            .next(RECEIVE_BATCH, Duration::from_millis(100))
            .await
            .context("listener.next")?;
        if batch.is_empty() {
            continue;
        }
        if kill_at.is_some_and(|at| tally.committed() >= at) {
            kill_at = None;
            // Killed with the batch in hand: no commit, no DISCONNECT.
            drop(listener);
            if !consumer.restart {
                return Ok(());
            }
            listener = open_listener(&runtime, &consumer.connection, &config).await?;
            continue;
        }
        if let Some(pause) = consumer.commit_every {
            tokio::time::sleep(pause).await;
        }
        let ids: Vec<u64> = batch.iter().map(|d| d.id).collect();
        match listener.commit(&ids).await {
            Ok(()) => tally.record(&batch),
            // Came on a connection since lost: not committed, comes again.
            Err(e) if e.is_redelivery() => {}
            Err(e) => return Err(e).context("listener.commit"),
        }
    }
    listener.close().await;
    Ok(())
}

/// The documents committed so far, shared by the consumers.
#[derive(Clone)]
struct Tally {
    commits: Arc<Mutex<HashMap<u32, u32>>>,
    stopped: Arc<AtomicBool>,
}

impl Tally {
    fn new(count: usize) -> Tally {
        Tally {
            commits: Arc::new(Mutex::new(HashMap::with_capacity(count))),
            stopped: Arc::new(AtomicBool::new(false)),
        }
    }

    fn record(&self, batch: &[Document]) {
        let mut commits = self.commits.lock().unwrap_or_else(|p| p.into_inner());
        for doc in batch {
            let index = std::str::from_utf8(&doc.payload)
                .ok()
                .and_then(|p| p.parse::<u32>().ok())
                .unwrap_or(u32::MAX);
            *commits.entry(index).or_insert(0) += 1;
        }
    }

    /// Distinct documents committed.
    fn committed(&self) -> usize {
        self.commits.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn commits(&self) -> HashMap<u32, u32> {
        self.commits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until `n` distinct documents are committed, or no new one
    /// came for `stall`.
    async fn wait_for(&self, n: usize, stall: Duration) {
        let mut last = (self.committed(), Instant::now());
        loop {
            let now = self.committed();
            if now >= n {
                return;
            }
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > stall {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for every expected document, then a moment for duplicates.
    async fn wait_until_done(&self, expected: usize, stall: Duration) {
        self.wait_for(expected, stall).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }
}

/// The outcomes as a table: one row per fault and QoS.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| # | fault | broker | QoS | documents | send failed | lost | duplicated | time (s) | producer (s) | goal |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for o in outcomes {
        let row = Fault::ALL.iter().position(|f| *f == o.fault).unwrap_or(0) + 1;
        out.push_str(&format!(
            "| {row} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {} |\n",
            o.fault.describe(),
            o.target.name(),
            o.qos,
            o.count,
            o.send_failed,
            o.lost,
            o.duplicated,
            o.elapsed.as_secs_f64(),
            o.send_elapsed.as_secs_f64(),
            if o.met() { "met" } else { "MISSED" },
        ));
    }
    out
}
