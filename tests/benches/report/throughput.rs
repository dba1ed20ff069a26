//! Throughput of the connector component next to a plain native rumqttc
//! client doing the same work against the same broker in the same run.
//!
//! ```text
//! cargo bench -p e2e --bench report -- throughput
//! cargo bench -p e2e --bench report -- throughput --count 50000 --payload 1024
//! cargo bench -p e2e --bench report -- throughput --broker mqtt://127.0.0.1:1883
//! cargo build --release -p host-shim &&
//!   cargo bench -p e2e --bench report -- throughput --broker mosquitto --ops send \
//!     --qos 1,2 --count 200000 --paths cli,pipelined
//! ```
//!
//! # What is measured
//!
//! Both paths speak MQTT 5.0 with the same in-flight window, the same
//! Receive Maximum and the same batches:
//!
//! - **Send**: the component gets `--batch` documents per `Sender::send`
//!   call, which returns once every message of the batch is acknowledged
//!   (PUBACK for QoS 1, PUBCOMP for QoS 2, written for QoS 0). The native
//!   client publishes the same `--batch` messages and waits for the same
//!   acknowledgements before the next batch. Time: first call to last ack.
//! - **Listen**: a separate native publisher feeds the messages. For QoS 1
//!   and 2 it publishes all of them before the clock starts (the broker
//!   queues them behind the in-flight window), so the figure is the
//!   consumer's alone. QoS 0 has no flow control, so it is fed live while
//!   the consumer runs; its figure is capped by the feeder, and messages
//!   the consumer did not keep up with are counted as lost. The component
//!   loops `Listener::next(max_batch)` + `commit(ids)`; the native client
//!   uses manual acks, acking each message as it arrives. Time: first
//!   message received to last message received and committed; the messages
//!   of the first batch are not counted (the clock starts with them).
//!
//! With `--paths component,native,host` a third column shows the host's
//! own MQTT client (`host_shim::mqtt::MqttClient`, the capability the
//! component imports) driven natively with the same batches: the gap
//! between it and `native` is the host client's cost, the gap between it
//! and `component` is the WebAssembly boundary and the guest's work.
//!
//! Two more paths measure what a user sees: `cli` runs the release
//! `host-shim send --file` (a file of `--count` lines; the time is the whole
//! process, start and connect included) with the same window, and
//! `pipelined` is a native rumqttc client that publishes every message
//! without waiting per batch, its in-flight window always full. The ratio
//! column divides the first path by the last.
//!
//! `--broker mosquitto` starts Mosquitto (`/usr/sbin/mosquitto`) on a free
//! loopback port with its default configuration, Nagle's algorithm on
//! included (`set_tcp_nodelay false`). Its default `max_queued_messages
//! 1000` would drop messages fed before the consumer runs, so there every
//! Listen case is fed live, as QoS 0 is, and what the consumer did not
//! keep up with is counted as lost.
//!
//! One warm-up round (a tenth of the messages) runs first and is discarded;
//! then each case runs `--rounds` times, component and native alternating
//! which goes first, and the median is reported.
//!
//! Against an external broker, raise its queue limits first: Mosquitto's
//! default `max_queued_messages 1000` drops the pre-fed Listen messages
//! (`max_queued_messages 0` lifts the limit).

use crate::figures::{self, thousands, Figure, Goal, Measure};
use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use connector::config::ConnectionConfig;
use connector::model;
use host_shim::host::{Document, Limits, Runtime};
use host_shim::mqtt::MqttClient;
use mqtt_broker::{self as broker, BrokerConfig};
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use rumqttc::Outgoing;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How long a consumer waits for the next message before it gives up
/// (QoS 1, 2) or considers a live QoS 0 feed finished.
const IDLE: Duration = Duration::from_secs(2);
/// Longest wait for any acknowledgement before a run is declared stuck.
const STUCK: Duration = Duration::from_secs(60);
/// In-flight window of the Listen feeder.
const FEEDER_WINDOW: u16 = 1000;

/// Send and Listen: the connector component vs a native rumqttc client.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Messages per case and run
    #[arg(long, default_value_t = 20_000, value_parser = at_least_one)]
    pub count: usize,
    /// Payload size in bytes
    #[arg(long, default_value_t = 256)]
    pub payload: usize,
    /// Documents per Send call / native batch
    #[arg(long, default_value_t = 1000, value_parser = at_least_one)]
    pub batch: usize,
    /// In-flight window of the sending client
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    pub window: u16,
    /// Receive Maximum of the listening client
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    pub receive_max: u16,
    /// Documents per Listener::next call
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_batch: u32,
    /// Measured rounds per case; the median is shown
    #[arg(long, default_value_t = 3, value_parser = at_least_one)]
    pub rounds: usize,
    /// QoS levels
    #[arg(long, value_delimiter = ',', default_value = "0,1,2",
          value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: Vec<u8>,
    /// Operations: send, listen
    #[arg(long, value_delimiter = ',', default_value = "send,listen")]
    pub ops: Vec<Op>,
    /// Who does the work: component, native, host (the host's MQTT client
    /// without wasm), cli (`host-shim send --file`, release build),
    /// pipelined (native, no wait per batch); the ratio is first / last
    #[arg(long, value_delimiter = ',', default_value = "component,native")]
    pub paths: Vec<Path>,
    /// `builtin` (in-process, port 0), `mosquitto` (started with its
    /// default configuration) or mqtt://HOST:PORT
    #[arg(long, default_value = "builtin")]
    pub broker: String,
}

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

impl Options {
    /// The same options with fewer messages, for the warm-up round.
    fn warm_up(&self) -> Options {
        Options {
            count: (self.count / 10).max(self.batch.min(self.count)),
            ..self.clone()
        }
    }
}

// ----- the broker -----

/// `mqtt://host[:port]` split for rumqttc.
fn host_port(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url
        .strip_prefix("mqtt://")
        .ok_or_else(|| anyhow!("the benchmark speaks plain mqtt:// only, not '{url}'"))?;
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || rest.starts_with('[') => {
            let port = port
                .parse()
                .with_context(|| format!("bad port in '{url}'"))?;
            Ok((host.trim_matches(['[', ']']).to_owned(), port))
        }
        _ => Ok((rest.trim_matches(['[', ']']).to_owned(), 1883)),
    }
}

/// Names unique within the process, so runs never see each other's
/// messages or sessions.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

fn qos_of(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// One measured run.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Messages counted.
    messages: usize,
    elapsed: Duration,
    /// CPU time of the whole process (broker included) over `elapsed`.
    cpu: Option<Duration>,
    /// Messages that never arrived (QoS 0 Listen only).
    lost: usize,
}

impl Sample {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// CPU microseconds per message.
    fn cpu_per_message(&self) -> Option<f64> {
        self.cpu
            .map(|cpu| cpu.as_secs_f64() * 1e6 / self.messages.max(1) as f64)
    }
}

/// CPU time of every thread of this process so far (Linux: the sum of
/// `/proc/self/task/*/schedstat`, in nanoseconds). CPU time per message
/// holds up far better than wall time on a machine busy with other work.
fn cpu_time() -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let mut path = task.ok()?.path();
        path.push("schedstat");
        let Ok(stat) = std::fs::read_to_string(&path) else {
            continue; // the thread ended meanwhile
        };
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

fn cpu_since(start: Option<Duration>) -> Option<Duration> {
    Some(cpu_time()?.saturating_sub(start?))
}

/// Everything a run needs.
struct Bench {
    options: Options,
    url: String,
    runtime: Runtime,
    payload: Bytes,
    /// Listen cases fed while the consumer runs, whatever the QoS (for a
    /// broker that drops what it queues beyond a limit).
    live_feed: bool,
}

impl Bench {
    fn connection_json(&self, client_id: &str, window: u16) -> String {
        format!(
            r#"{{"url": "{}", "mqtt_version": "5", "client_id": "{client_id}", "inflight_window": {window}, "receive_maximum": {}}}"#,
            self.url, self.options.receive_max
        )
    }

    /// A connected native v5 client with the same network settings as the
    /// host's: TCP_NODELAY, no packet size limit below MQTT's own.
    async fn native_client(
        &self,
        client_id: &str,
        configure: impl FnOnce(&mut MqttOptions),
    ) -> anyhow::Result<(AsyncClient, EventLoop)> {
        let (host, port) = host_port(&self.url)?;
        let mut mqtt = MqttOptions::new(client_id, host, port);
        let mut network = mqtt.network_options();
        network.set_tcp_nodelay(true);
        mqtt.set_network_options(network)
            .set_keep_alive(Duration::from_secs(60))
            .set_max_packet_size(Some(256 * 1024 * 1024));
        configure(&mut mqtt);
        let capacity = self.options.batch.max(self.options.count).max(1024) + 64;
        let (client, mut eventloop) = AsyncClient::new(mqtt, capacity);
        let connected = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(anyhow!("native client cannot connect: {e}")),
                }
            }
        })
        .await
        .map_err(|_| anyhow!("native client: no CONNACK"))?;
        connected?;
        Ok((client, eventloop))
    }

    // ----- Send -----

    async fn component_send(&self, qos: u8) -> anyhow::Result<Sample> {
        let o = &self.options;
        let topic = unique("bench/send/component");
        let connection = self.connection_json(&unique("bench-send-c"), o.window);
        let config = format!(r#"{{"topic": "{topic}", "qos": {qos}}}"#);
        let mut sender = self
            .runtime
            .open_sender(&connection, &config)
            .await
            .map_err(|e| anyhow!("open_sender: {e}"))?;
        let documents: Vec<Document> = (0..o.batch.min(o.count))
            .map(|i| Document {
                id: i as u64,
                payload: self.payload.to_vec(),
                properties: vec![],
            })
            .collect();
        let started = Instant::now();
        let cpu_started = cpu_time();
        let mut sent = 0;
        while sent < o.count {
            let n = (o.count - sent).min(o.batch);
            let outcomes = sender
                .send(&documents[..n])
                .await
                .map_err(|e| anyhow!("send: {e}"))?;
            if let Some((i, Err(e))) = outcomes.iter().enumerate().find(|(_, r)| r.is_err()) {
                bail!("component send: document {i} failed: {}", e.message);
            }
            sent += n;
        }
        let elapsed = started.elapsed();
        let cpu = cpu_since(cpu_started);
        sender.close().await;
        Ok(Sample {
            messages: sent,
            elapsed,
            cpu,
            lost: 0,
        })
    }

    /// A native publisher: waiting for each `batch`'s acknowledgements, or
    /// with `batch` the whole count, only for the last.
    async fn native_send(&self, qos: u8, batch: usize) -> anyhow::Result<Sample> {
        let o = &self.options;
        let topic = unique("bench/send/native");
        let publisher = NativePublisher::connect(self, o.window, qos).await?;
        let started = Instant::now();
        let cpu_started = cpu_time();
        publisher
            .publish(&topic, qos, o.count, batch, &self.payload)
            .await?;
        let elapsed = started.elapsed();
        let cpu = cpu_since(cpu_started);
        publisher.close().await;
        Ok(Sample {
            messages: o.count,
            elapsed,
            cpu,
            lost: 0,
        })
    }

    /// `host-shim send --file` of `count` lines, as a user runs it.
    async fn cli_send(&self, qos: u8) -> anyhow::Result<Sample> {
        let o = &self.options;
        let dir = std::env::temp_dir().join(format!("bench-throughput-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let lines = dir.join(format!("lines-{}x{}.txt", o.count, o.payload));
        if !lines.exists() {
            let mut text = Vec::with_capacity(o.count * (o.payload + 1));
            for _ in 0..o.count {
                text.extend_from_slice(&self.payload);
                text.push(b'\n');
            }
            std::fs::write(&lines, text)?;
        }
        let connection = dir.join("connection.json");
        std::fs::write(
            &connection,
            self.connection_json(&unique("bench-send-cli"), o.window),
        )?;
        let started = Instant::now();
        let status = tokio::process::Command::new(crate::host_shim_binary())
            .arg("send")
            .arg("--connection")
            .arg(&connection)
            .args([
                "--topic",
                &unique("bench/send/cli"),
                "--qos",
                &qos.to_string(),
            ])
            .arg("--file")
            .arg(&lines)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .status()
            .await
            .with_context(|| format!("running {}", crate::host_shim_binary().display()))?;
        let elapsed = started.elapsed();
        if !status.success() {
            bail!("host-shim send failed: {status}");
        }
        Ok(Sample {
            messages: o.count,
            elapsed,
            // Another process: not in this one's CPU time.
            cpu: None,
            lost: 0,
        })
    }

    // ----- Listen -----

    /// Feeds `count` messages to `topic`: to completion for QoS 1 and 2
    /// (returns `None`), in the background for QoS 0.
    async fn feed(
        &self,
        topic: &str,
        qos: u8,
    ) -> anyhow::Result<Option<JoinHandle<anyhow::Result<()>>>> {
        let o = &self.options;
        let feeder = NativePublisher::connect(self, FEEDER_WINDOW, qos).await?;
        let (topic, payload, count) = (topic.to_owned(), self.payload.clone(), o.count);
        if qos == 0 || self.live_feed {
            let batch = o.batch;
            Ok(Some(tokio::spawn(async move {
                feeder.publish(&topic, qos, count, batch, &payload).await?;
                feeder.close().await;
                Ok(())
            })))
        } else {
            feeder.publish(&topic, qos, count, count, &payload).await?;
            feeder.close().await;
            Ok(None)
        }
    }

    async fn component_listen(&self, qos: u8) -> anyhow::Result<Sample> {
        let o = &self.options;
        let topic = unique("bench/listen/component");
        let connection = self.connection_json(&unique("bench-listen-c"), o.window);
        let config = format!(
            r#"{{"subscriptions": [{{"filter": "{topic}", "qos": {qos}}}], "max_batch": {}}}"#,
            o.max_batch
        );
        let mut listener = self
            .runtime
            .open_listener(&connection, &config)
            .await
            .map_err(|e| anyhow!("open_listener: {e}"))?;
        let feeding = self.feed(&topic, qos).await?;

        let mut received = 0;
        let mut first: Option<(Instant, usize, Option<Duration>)> = None;
        let mut last = Instant::now();
        while received < o.count {
            let documents = listener
                .next(o.max_batch, IDLE)
                .await
                .map_err(|e| anyhow!("next: {e}"))?;
            if documents.is_empty() {
                if (qos == 0 || self.live_feed) && first.is_some() {
                    break; // the live feed is over; the rest was lost
                }
                bail!("component listen: no message for {IDLE:?} after {received}");
            }
            let now = Instant::now();
            let ids: Vec<u64> = documents.iter().map(|d| d.id).collect();
            listener
                .commit(&ids)
                .await
                .map_err(|e| anyhow!("commit: {e}"))?;
            last = Instant::now();
            if first.is_none() {
                first = Some((now, documents.len(), cpu_time()));
            }
            received += documents.len();
        }
        let cpu_end = cpu_time();
        listener.close().await;
        if let Some(feeding) = feeding {
            feeding.await??;
        }
        listen_sample(first, last, cpu_end, received, o.count)
    }

    async fn native_listen(&self, qos: u8) -> anyhow::Result<Sample> {
        let o = &self.options;
        let topic = unique("bench/listen/native");
        let receive_max = o.receive_max;
        let (client, mut eventloop) = self
            .native_client(&unique("bench-listen-n"), |m| {
                m.set_manual_acks(true)
                    .set_receive_maximum(Some(receive_max));
            })
            .await?;
        client.subscribe(topic.as_str(), qos_of(qos)).await?;
        loop {
            match eventloop.poll().await? {
                Event::Incoming(Packet::SubAck(_)) => break,
                _ => continue,
            }
        }
        let feeding = self.feed(&topic, qos).await?;

        let mut received = 0;
        let mut first: Option<(Instant, usize, Option<Duration>)> = None;
        let mut last = Instant::now();
        while received < o.count {
            let event = match tokio::time::timeout(IDLE, eventloop.poll()).await {
                Ok(event) => event?,
                Err(_) if (qos == 0 || self.live_feed) && first.is_some() => break,
                Err(_) => bail!("native listen: no message for {IDLE:?} after {received}"),
            };
            if let Event::Incoming(Packet::Publish(publish)) = event {
                let now = Instant::now();
                if publish.qos != QoS::AtMostOnce {
                    client.try_ack(&publish)?;
                }
                last = Instant::now();
                if first.is_none() {
                    first = Some((now, 1, cpu_time()));
                }
                received += 1;
            }
        }
        let cpu_end = cpu_time();
        // Let the last acks go out before disconnecting.
        client.disconnect().await?;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(event) = eventloop.poll().await {
                if matches!(event, Event::Outgoing(Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
        if let Some(feeding) = feeding {
            feeding.await??;
        }
        listen_sample(first, last, cpu_end, received, o.count)
    }
}

impl Bench {
    /// The host's MQTT client, connected with the options the component's
    /// connection JSON gives.
    async fn host_client(&self, client_id: &str, window: u16) -> anyhow::Result<MqttClient> {
        let config: ConnectionConfig =
            serde_json::from_str(&self.connection_json(client_id, window))?;
        MqttClient::connect(config.connect_options())
            .await
            .map_err(|e| anyhow!("host client cannot connect: {e}"))
    }

    async fn host_send(&self, qos: u8) -> anyhow::Result<Sample> {
        let o = &self.options;
        let topic: model::TopicName = unique("bench/send/host").parse()?;
        let client = self.host_client(&unique("bench-send-h"), o.window).await?;
        let level = model::QoS::from_level(qos).ok_or_else(|| anyhow!("bad QoS {qos}"))?;
        let started = Instant::now();
        let cpu_started = cpu_time();
        let mut sent = 0;
        while sent < o.count {
            let n = (o.count - sent).min(o.batch);
            let batch = (0..n)
                .map(|_| model::Outgoing {
                    topic: topic.clone(),
                    payload: self.payload.to_vec(),
                    qos: level,
                    retain: false,
                    properties: model::MessageProperties::default(),
                })
                .collect();
            let outcomes = client.publish(batch).await;
            if let Some((i, Err(e))) = outcomes.iter().enumerate().find(|(_, r)| r.is_err()) {
                bail!("host send: message {i} failed: {e}");
            }
            sent += n;
        }
        let elapsed = started.elapsed();
        let cpu = cpu_since(cpu_started);
        client.disconnect().await;
        Ok(Sample {
            messages: sent,
            elapsed,
            cpu,
            lost: 0,
        })
    }

    async fn host_listen(&self, qos: u8) -> anyhow::Result<Sample> {
        let o = &self.options;
        let topic = unique("bench/listen/host");
        let client = self
            .host_client(&unique("bench-listen-h"), o.window)
            .await?;
        let level = model::QoS::from_level(qos).ok_or_else(|| anyhow!("bad QoS {qos}"))?;
        let granted = client
            .subscribe(vec![model::Subscription {
                filter: topic.parse()?,
                qos: level,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
            }])
            .await
            .map_err(|e| anyhow!("host subscribe: {e}"))?;
        if granted.iter().any(|g| g.qos.is_none()) {
            bail!("host subscribe refused: {granted:?}");
        }
        let feeding = self.feed(&topic, qos).await?;

        let mut received = 0;
        let mut first: Option<(Instant, usize, Option<Duration>)> = None;
        let mut last = Instant::now();
        while received < o.count {
            let batch = client
                .receive(o.max_batch as usize, IDLE)
                .await
                .map_err(|e| anyhow!("receive: {e}"))?;
            if batch.is_empty() {
                if (qos == 0 || self.live_feed) && first.is_some() {
                    break;
                }
                bail!("host listen: no message for {IDLE:?} after {received}");
            }
            let now = Instant::now();
            let ids: Vec<u64> = batch.iter().map(|m| m.id).collect();
            client.ack(&ids).await.map_err(|e| anyhow!("ack: {e}"))?;
            last = Instant::now();
            if first.is_none() {
                first = Some((now, batch.len(), cpu_time()));
            }
            received += batch.len();
        }
        let cpu_end = cpu_time();
        client.disconnect().await;
        if let Some(feeding) = feeding {
            feeding.await??;
        }
        listen_sample(first, last, cpu_end, received, o.count)
    }
}

/// The Listen figure: messages after the first batch, over the time from
/// that batch to the last commit.
fn listen_sample(
    first: Option<(Instant, usize, Option<Duration>)>,
    last: Instant,
    cpu_end: Option<Duration>,
    received: usize,
    expected: usize,
) -> anyhow::Result<Sample> {
    let (start, first_batch, cpu_start) = first.ok_or_else(|| anyhow!("no message received"))?;
    Ok(Sample {
        messages: received.saturating_sub(first_batch),
        elapsed: last.duration_since(start),
        cpu: cpu_end
            .zip(cpu_start)
            .map(|(end, start)| end.saturating_sub(start)),
        lost: expected.saturating_sub(received),
    })
}

/// Counts acknowledgements from an event loop task.
#[derive(Default)]
struct Progress {
    done: AtomicU64,
    failed: AtomicBool,
    notify: Notify,
}

impl Progress {
    async fn wait_for(&self, target: u64) -> anyhow::Result<()> {
        loop {
            // notify_one keeps a permit, so a wake-up between the check and
            // the wait is not lost.
            let notified = self.notify.notified();
            if self.done.load(Ordering::Acquire) >= target {
                return Ok(());
            }
            if self.failed.load(Ordering::Acquire) {
                bail!("the native client's connection failed");
            }
            tokio::time::timeout(STUCK, notified)
                .await
                .map_err(|_| anyhow!("native client: no acknowledgement for {STUCK:?}"))?;
        }
    }
}

/// A native publisher: the client, and a task polling its event loop that
/// counts completions (written for QoS 0, PUBACK for 1, PUBCOMP for 2).
struct NativePublisher {
    client: AsyncClient,
    progress: Arc<Progress>,
    task: JoinHandle<()>,
}

impl NativePublisher {
    async fn connect(bench: &Bench, window: u16, qos: u8) -> anyhow::Result<Self> {
        let (client, mut eventloop) = bench
            .native_client(&unique("bench-pub-n"), |m| {
                m.set_outgoing_inflight_upper_limit(window);
            })
            .await?;
        let progress = Arc::new(Progress::default());
        let counter = Arc::clone(&progress);
        let task = tokio::spawn(async move {
            loop {
                let completed = match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Publish(_))) => qos == 0,
                    Ok(Event::Incoming(Packet::PubAck(_))) => qos == 1,
                    Ok(Event::Incoming(Packet::PubComp(_))) => qos == 2,
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                    Ok(_) => false,
                    Err(_) => {
                        counter.failed.store(true, Ordering::Release);
                        counter.notify.notify_one();
                        return;
                    }
                };
                if completed {
                    counter.done.fetch_add(1, Ordering::AcqRel);
                    counter.notify.notify_one();
                }
            }
        });
        Ok(NativePublisher {
            client,
            progress,
            task,
        })
    }

    /// Publishes `count` messages in batches of `batch`, waiting for every
    /// acknowledgement of a batch before the next.
    async fn publish(
        &self,
        topic: &str,
        qos: u8,
        count: usize,
        batch: usize,
        payload: &Bytes,
    ) -> anyhow::Result<()> {
        let base = self.progress.done.load(Ordering::Acquire);
        let mut sent = 0;
        while sent < count {
            let n = (count - sent).min(batch);
            for _ in 0..n {
                self.client
                    .publish(topic, qos_of(qos), false, payload.clone())
                    .await?;
            }
            sent += n;
            self.progress.wait_for(base + sent as u64).await?;
        }
        Ok(())
    }

    async fn close(self) {
        let _ = self.client.disconnect().await;
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(2), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

// ----- running and reporting -----

/// What the client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Op {
    Send,
    Listen,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    op: Op,
    qos: u8,
}

impl Case {
    fn name(&self) -> String {
        match self.op {
            Op::Send => format!("send qos{}", self.qos),
            Op::Listen if self.qos == 0 => "listen qos0 (live feed)".to_owned(),
            Op::Listen => format!("listen qos{}", self.qos),
        }
    }
}

/// Who does the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Path {
    /// The connector component in the wasmtime host.
    Component,
    /// A plain rumqttc v5 client.
    Native,
    /// The host's MQTT client, driven without WebAssembly.
    #[value(name = "host")]
    Host,
    /// `host-shim send --file` (Send only).
    Cli,
    /// A plain rumqttc v5 client with its window always full (Send only).
    Pipelined,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Component => "component",
            Path::Native => "native",
            Path::Host => "host client",
            Path::Cli => "cli",
            Path::Pipelined => "pipelined",
        }
    }

    /// What the path is, for a reader of the report.
    fn label(self) -> &'static str {
        match self {
            Path::Component => "the component in the host",
            Path::Native => "native rumqttc",
            Path::Host => "the host's MQTT client",
            Path::Cli => "`host-shim send --file`",
            Path::Pipelined => "native rumqttc, pipelined",
        }
    }
}

async fn run_once(bench: &Bench, case: Case, path: Path) -> anyhow::Result<Sample> {
    let result = match (case.op, path) {
        (Op::Send, Path::Component) => bench.component_send(case.qos).await,
        (Op::Send, Path::Native) => bench.native_send(case.qos, bench.options.batch).await,
        (Op::Send, Path::Pipelined) => bench.native_send(case.qos, bench.options.count).await,
        (Op::Send, Path::Cli) => bench.cli_send(case.qos).await,
        (Op::Listen, Path::Cli | Path::Pipelined) => {
            Err(anyhow!("the cli and pipelined paths measure Send only"))
        }
        (Op::Send, Path::Host) => bench.host_send(case.qos).await,
        (Op::Listen, Path::Component) => bench.component_listen(case.qos).await,
        (Op::Listen, Path::Native) => bench.native_listen(case.qos).await,
        (Op::Listen, Path::Host) => bench.host_listen(case.qos).await,
    };
    result.with_context(|| format!("{} ({})", case.name(), path.name()))
}

struct Row {
    case: Case,
    /// Samples per path, in the order of `Options::paths`.
    samples: Vec<(Path, Vec<Sample>)>,
}

fn median(samples: &[Sample]) -> f64 {
    let rates: Vec<f64> = samples.iter().map(Sample::rate).collect();
    figures::median(&rates)
}

/// Half the range of the rates, as a percentage of the median.
fn spread(samples: &[Sample]) -> f64 {
    let rates: Vec<f64> = samples.iter().map(Sample::rate).collect();
    let max = rates.iter().copied().fold(f64::MIN, f64::max);
    let min = rates.iter().copied().fold(f64::MAX, f64::min);
    (max - min) / 2.0 / median(samples) * 100.0
}

fn report(paths: &[Path], rows: &[Row]) -> String {
    let mut out = String::new();
    let ratio = paths.len() >= 2;
    let mut header = format!("{:<24}", "case");
    for path in paths {
        let _ = write!(header, " {:>18}", format!("{} msg/s", path.name()));
    }
    if ratio {
        let _ = write!(header, " {:>7}  goal (>= 0.90)", "ratio");
    }
    let _ = writeln!(out, "{header}");
    let _ = writeln!(out, "{}", "-".repeat(header.len()));
    for row in rows {
        let mut line = format!("{:<24}", row.case.name());
        let mut lost = Vec::new();
        for (path, samples) in &row.samples {
            let cell = format!("{} ±{:.0}%", thousands(median(samples)), spread(samples));
            let _ = write!(line, " {cell:>18}");
            let worst = samples.iter().map(|s| s.lost).max().unwrap_or(0);
            if worst > 0 {
                lost.push(format!("{} {worst}", path.name()));
            }
        }
        if let (Some((_, c)), Some((_, n)), true) = (row.samples.first(), row.samples.last(), ratio)
        {
            let r = median(c) / median(n);
            let verdict = if r >= 0.9 { "met" } else { "NOT met" };
            let _ = write!(line, " {r:>7.2}  {verdict}");
        }
        let _ = writeln!(out, "{line}");
        if !lost.is_empty() {
            let _ = writeln!(
                out,
                "{:<24} messages lost (worst run): {}",
                "",
                lost.join(", ")
            );
        }
    }

    // The same runs as CPU time per message.
    if rows.iter().all(|r| {
        r.samples
            .iter()
            .all(|(_, s)| s.iter().all(|s| s.cpu.is_some()))
    }) {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "CPU time per message (µs, whole process: client, host and built-in broker; median)"
        );
        let mut header = format!("{:<24}", "case");
        for path in paths {
            let _ = write!(header, " {:>18}", path.name());
        }
        if ratio {
            let _ = write!(header, " {:>7}", "ratio");
        }
        let _ = writeln!(out, "{header}");
        let _ = writeln!(out, "{}", "-".repeat(header.len()));
        for row in rows {
            let mut line = format!("{:<24}", row.case.name());
            for (_, samples) in &row.samples {
                let _ = write!(line, " {:>18.2}", median_cpu(samples));
            }
            if let (Some((_, c)), Some((_, n)), true) =
                (row.samples.first(), row.samples.last(), ratio)
            {
                let _ = write!(line, " {:>7.2}", median_cpu(c) / median_cpu(n));
            }
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

fn median_cpu(samples: &[Sample]) -> f64 {
    let values: Vec<f64> = samples.iter().filter_map(Sample::cpu_per_message).collect();
    figures::median(&values)
}

/// Runs the cases; prints their table and returns their figures.
pub async fn run(options: &Options) -> anyhow::Result<Vec<Figure>> {
    // Kept alive for the whole run.
    let mosquitto = match options.broker.as_str() {
        "mosquitto" => Some(
            e2e::BrokerProcess::mosquitto(&[])
                .await
                .context("starting Mosquitto with its default configuration")?,
        ),
        _ => None,
    };
    let builtin = match options.broker.as_str() {
        "builtin" => {
            // Room for every pre-fed Listen message: the default queue
            // limit (100,000) would drop the rest of a larger run.
            let defaults = BrokerConfig::ephemeral();
            let config = BrokerConfig {
                max_inflight: options.receive_max.max(100),
                max_queued_messages: defaults.max_queued_messages.max(options.count),
                ..defaults
            };
            Some(broker::start(config).await?)
        }
        _ => None,
    };
    let url = match (&builtin, &mosquitto) {
        (Some(b), _) => b.url(),
        (None, Some(m)) => format!("mqtt://{}", m.addr()),
        (None, None) => options.broker.clone(),
    };

    let (host, _) = host_port(&url)?;
    if host != "127.0.0.1" && host != "localhost" && host != "::1" {
        eprintln!("note: {host} is not loopback; network latency will dominate the figures");
    }
    // Room for the largest batch crossing into the guest, twice.
    let batch_bytes = options.batch.max(options.max_batch as usize) * (options.payload + 256);
    let limits = Limits {
        memory_bytes: (64 * 1024 * 1024).max(4 * batch_bytes),
        ..Limits::default()
    };
    let bench = Bench {
        runtime: Runtime::embedded(limits)?,
        payload: Bytes::from(vec![b'x'; options.payload]),
        url: url.clone(),
        options: options.clone(),
        live_feed: mosquitto.is_some(),
    };

    let mut cases = Vec::new();
    for op in [Op::Send, Op::Listen] {
        if options.ops.contains(&op) {
            cases.extend(options.qos.iter().map(|&qos| Case { op, qos }));
        }
    }

    println!("MQTT throughput: connector component (wasm) vs native rumqttc v5 client");
    println!(
        "broker: {} ({url}); {} messages per run, payload {} B, send batch {}, \
         in-flight window {}, receive maximum {}, listen max_batch {}; \
         median of {} round(s) after one warm-up",
        if builtin.is_some() {
            "built-in"
        } else if mosquitto.is_some() {
            "Mosquitto, default configuration"
        } else {
            "external"
        },
        options.count,
        options.payload,
        options.batch,
        options.window,
        options.receive_max,
        options.max_batch,
        options.rounds,
    );

    let warm = Bench {
        options: options.warm_up(),
        runtime: bench.runtime.clone(),
        payload: bench.payload.clone(),
        url: url.clone(),
        live_feed: bench.live_feed,
    };
    for &case in &cases {
        for &path in &options.paths {
            run_once(&warm, case, path).await?;
        }
    }

    let paths = &options.paths;
    let mut rows = Vec::new();
    for &case in &cases {
        let mut row = Row {
            case,
            samples: paths.iter().map(|&p| (p, Vec::new())).collect(),
        };
        for round in 0..options.rounds {
            // Rotate which path goes first, so none always runs on a
            // freshly idle machine.
            for i in 0..paths.len() {
                let slot = (i + round) % paths.len();
                let sample = run_once(&bench, case, paths[slot]).await?;
                row.samples[slot].1.push(sample);
            }
        }
        let mut progress = format!("  {:<24}", case.name());
        for (path, samples) in &row.samples {
            let _ = write!(
                progress,
                " {} {} msg/s;",
                path.name(),
                thousands(median(samples))
            );
        }
        eprintln!("{progress}");
        rows.push(row);
    }
    println!();
    print!("{}", report(paths, &rows));
    println!(
        "(ratio = {} / {}; a CPU ratio above 1 costs more; ± is half the spread \
         between rounds)",
        paths.first().map_or("-", |p| p.name()),
        paths.last().map_or("-", |p| p.name()),
    );

    if let Some(broker) = builtin {
        broker.shutdown().await;
    }
    let broker_name = if mosquitto.is_some() {
        "Mosquitto (defaults)"
    } else if options.broker == "builtin" {
        "built-in broker"
    } else {
        "external broker"
    };
    Ok(rows
        .iter()
        .filter_map(|row| figure(row, broker_name, mosquitto.is_some()))
        .collect())
}

/// A row as a report figure: its first path next to its last, held to
/// 0.9 of the last when that is the native client.
fn figure(row: &Row, broker: &str, live_feed: bool) -> Option<Figure> {
    let [(ours_path, ours), .., (their_path, theirs)] = &row.samples[..] else {
        return None;
    };
    let section = match row.case.op {
        Op::Send => "send",
        Op::Listen => "listen",
    };
    let lost = |samples: &[Sample]| samples.iter().map(|s| s.lost).max().unwrap_or(0);
    let feed = match row.case.op {
        Op::Listen if row.case.qos == 0 || live_feed => ", fed live",
        _ => "",
    };
    let mut case = format!(
        "QoS {} on {broker}{feed}: {}",
        row.case.qos,
        ours_path.label()
    );
    if lost(ours) + lost(theirs) > 0 {
        let _ = write!(
            case,
            " (lost, worst run: {} / {})",
            lost(ours),
            lost(theirs)
        );
    }
    let figure = Figure::versus(
        section,
        case,
        Measure::Rate(median(ours)),
        their_path.label(),
        Measure::Rate(median(theirs)),
    );
    Some(if matches!(their_path, Path::Native | Path::Pipelined) {
        figure.goal(Goal::AtLeast(0.9))
    } else {
        figure
    })
}
