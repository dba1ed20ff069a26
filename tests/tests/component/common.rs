//! Shared helpers of the component suite: the runtime, the brokers a
//! scenario runs against (built-in or Mosquitto, MQTT 5.0 or 3.1.1),
//! document builders and bounded waits on listeners.
//!
//! Every wait here has a deadline: a broken connector or broker makes a test
//! fail with a message, never hang.

use anyhow::{bail, Context, Result};
use host_shim::host::{Document, Error, Limits, Listener, Property, Runtime, Sender, Value};
use mqtt_broker::{self as broker, BrokerConfig, BrokerHandle, RetainConfig};
use serde_json::json;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::time::Instant;

pub use e2e::within_for;
use e2e::BrokerProcess;

/// Upper bound for anything that should happen promptly. Generous: it is a
/// failure deadline, not a speed expectation.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long we watch for something that must NOT happen. Short, because
/// both brokers deliver what they have right away; the sentinel messages the
/// scenarios use make sure "nothing" is not just "not yet".
pub const QUIET: Duration = Duration::from_millis(300);

/// The runtime with default limits, shared by every test of the process so
/// that the component is compiled once (the `OnceLock` also keeps tests that
/// start together from compiling it in parallel).
pub fn runtime() -> Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| Runtime::embedded(Limits::default()).expect("the embedded component loads"))
        .clone()
}

/// A runtime with other limits; reuses the component compiled by
/// [`runtime`].
pub fn runtime_with(limits: Limits) -> Runtime {
    let _compiled = runtime();
    Runtime::embedded(limits).expect("the embedded component loads")
}

/// Awaits `fut` for at most this suite's [`WAIT`], longer than the shared
/// support's because a scenario includes component calls.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> Result<T> {
    within_for(WAIT, what, fut).await
}

// ---------------------------------------------------------------------------
// Targets: a broker and a protocol version
// ---------------------------------------------------------------------------

/// Which broker a scenario runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// The built-in broker, in-process.
    Builtin,
    /// `/usr/sbin/mosquitto`, one process per test.
    Mosquitto,
}

/// The MQTT version the connector speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V5,
    V311,
}

impl Version {
    /// The value of `mqtt_version` in the connection configuration.
    pub fn config_value(self) -> &'static str {
        match self {
            Version::V5 => "5",
            Version::V311 => "3.1.1",
        }
    }
}

/// How the broker of a target is configured, where a scenario needs more
/// than the defaults.
#[derive(Debug, Clone, Copy)]
pub struct BrokerOptions {
    /// Whether the broker stores retained messages.
    pub retain: bool,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions { retain: true }
    }
}

enum Running {
    // Dropping the handle shuts the broker down.
    Builtin(#[allow(dead_code)] BrokerHandle),
    // Dropping the guard kills the process.
    Mosquitto(#[allow(dead_code)] BrokerProcess),
}

/// A broker started for one test, and the protocol version to speak to it.
/// Dropping it stops the broker.
pub struct Target {
    pub version: Version,
    url: String,
    _running: Running,
}

impl Target {
    /// Starts a broker of `kind` with default options.
    pub async fn start(kind: BrokerKind, version: Version) -> Result<Target> {
        Target::start_with(kind, version, BrokerOptions::default()).await
    }

    /// Starts a broker of `kind` configured by `options`, on 127.0.0.1 and a
    /// free port.
    pub async fn start_with(
        kind: BrokerKind,
        version: Version,
        options: BrokerOptions,
    ) -> Result<Target> {
        let (url, running) = match kind {
            BrokerKind::Builtin => {
                let config = BrokerConfig {
                    retain: RetainConfig {
                        enabled: options.retain,
                        ..RetainConfig::default()
                    },
                    ..BrokerConfig::ephemeral()
                };
                let handle = within("the built-in broker to start", broker::start(config))
                    .await?
                    .context("starting the built-in broker")?;
                anyhow::ensure!(handle.local_addr().ip().is_loopback());
                (handle.url(), Running::Builtin(handle))
            }
            BrokerKind::Mosquitto => {
                let mut extra = Vec::new();
                if !options.retain {
                    extra.push("retain_available false");
                }
                let mosquitto = BrokerProcess::mosquitto(&extra).await?;
                let url = format!("mqtt://{}", mosquitto.addr());
                (url, Running::Mosquitto(mosquitto))
            }
        };
        Ok(Target {
            version,
            url,
            _running: running,
        })
    }

    /// The broker's URL, `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The connection configuration for this target.
    pub fn connection(&self) -> String {
        self.connection_with(json!({}))
    }

    /// The connection configuration for this target with the fields of
    /// `extra` added (or replaced).
    pub fn connection_with(&self, extra: serde_json::Value) -> String {
        let mut config = json!({
            "url": self.url,
            "mqtt_version": self.version.config_value(),
            "connect_timeout_ms": 5000,
        });
        let (Some(config_fields), Some(extra_fields)) = (config.as_object_mut(), extra.as_object())
        else {
            panic!("connection configurations are JSON objects");
        };
        for (name, value) in extra_fields {
            config_fields.insert(name.clone(), value.clone());
        }
        config.to_string()
    }

    /// Opens a Send operation with the default runtime.
    pub async fn sender(&self, config: serde_json::Value) -> Result<Sender> {
        open_sender(&runtime(), &self.connection(), config).await
    }

    /// Opens a Listen operation with the default runtime.
    pub async fn listener(&self, config: serde_json::Value) -> Result<Listener> {
        open_listener(&self.connection(), config).await
    }
}

/// Opens a Send operation on `rt`, bounded in time.
pub async fn open_sender(
    rt: &Runtime,
    connection: &str,
    config: serde_json::Value,
) -> Result<Sender> {
    within(
        "the sender to open",
        rt.open_sender(connection, &config.to_string()),
    )
    .await?
    .with_context(|| format!("opening a sender with {config}"))
}

/// Opens a Listen operation with the default runtime, bounded in time. It
/// returns after the SUBACK, so messages sent from then on reach it.
pub async fn open_listener(connection: &str, config: serde_json::Value) -> Result<Listener> {
    within(
        "the listener to open",
        runtime().open_listener(connection, &config.to_string()),
    )
    .await?
    .with_context(|| format!("opening a listener with {config}"))
}

/// Generates one test per broker and version for a scenario
/// `async fn NAME(target: &Target) -> Result<()>`: a module `NAME` with the
/// tests `builtin_v5`, `builtin_v311`, `mosquitto_v5` and `mosquitto_v311`.
/// A second argument gives the [`BrokerOptions`].
macro_rules! on_every_broker {
    ($scenario:ident) => {
        on_every_broker!($scenario, $crate::common::BrokerOptions::default());
    };
    ($scenario:ident, $options:expr) => {
        mod $scenario {
            use $crate::common::{BrokerKind, Target, Version};

            async fn run(kind: BrokerKind, version: Version) -> anyhow::Result<()> {
                let target = Target::start_with(kind, version, $options).await?;
                super::$scenario(&target).await
            }

            // Several worker threads: the in-process broker and the host's
            // MQTT event loops keep running while the guest computes.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn builtin_v5() -> anyhow::Result<()> {
                run(BrokerKind::Builtin, Version::V5).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn builtin_v311() -> anyhow::Result<()> {
                run(BrokerKind::Builtin, Version::V311).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mosquitto_v5() -> anyhow::Result<()> {
                run(BrokerKind::Mosquitto, Version::V5).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mosquitto_v311() -> anyhow::Result<()> {
                run(BrokerKind::Mosquitto, Version::V311).await
            }
        }
    };
}
pub(crate) use on_every_broker;

// ---------------------------------------------------------------------------
// Documents
// ---------------------------------------------------------------------------

/// A document with `payload` and no properties, to send.
pub fn doc(payload: impl Into<Vec<u8>>) -> Document {
    Document {
        id: 0,
        payload: payload.into(),
        properties: Vec::new(),
    }
}

/// Adds properties to a document under construction.
pub trait With {
    /// The document with the property `name` = `value` added.
    fn with(self, name: &str, value: Value) -> Self;
}

impl With for Document {
    fn with(mut self, name: &str, value: Value) -> Self {
        self.properties.push(Property {
            name: name.to_owned(),
            value,
        });
        self
    }
}

pub fn text(value: &str) -> Value {
    Value::Text(value.to_owned())
}

/// The value of the first property called `name`.
pub fn property<'a>(doc: &'a Document, name: &str) -> Option<&'a Value> {
    doc.properties
        .iter()
        .find(|p| p.name == name)
        .map(|p| &p.value)
}

/// `mqtt.topic` of a received document.
pub fn topic(doc: &Document) -> &str {
    match property(doc, "mqtt.topic") {
        Some(Value::Text(topic)) => topic,
        other => panic!("a received document has a text mqtt.topic, got {other:?}"),
    }
}

/// `mqtt.qos` of a received document.
pub fn qos(doc: &Document) -> i64 {
    match property(doc, "mqtt.qos") {
        Some(Value::Integer(qos)) => *qos,
        other => panic!("a received document has an integer mqtt.qos, got {other:?}"),
    }
}

/// `mqtt.retained` of a received document.
pub fn retained(doc: &Document) -> bool {
    flag(doc, "mqtt.retained")
}

/// A boolean property every received document has.
pub fn flag(doc: &Document, name: &str) -> bool {
    match property(doc, name) {
        Some(Value::Boolean(b)) => *b,
        other => panic!("a received document has a boolean {name}, got {other:?}"),
    }
}

/// The payload as text, for messages and comparisons.
pub fn payload(doc: &Document) -> String {
    String::from_utf8_lossy(&doc.payload).into_owned()
}

/// A one-line summary of documents, for failure messages.
pub fn summary(docs: &[Document]) -> String {
    let items: Vec<String> = docs
        .iter()
        .map(|d| match property(d, "mqtt.topic") {
            Some(Value::Text(t)) => format!("{t}={:?}", payload(d)),
            _ => format!("{:?}", payload(d)),
        })
        .collect();
    format!("[{}]", items.join(", "))
}

// ---------------------------------------------------------------------------
// Sending and receiving
// ---------------------------------------------------------------------------

/// Sends `docs` and returns one result per document.
pub async fn send(sender: &mut Sender, docs: &[Document]) -> Result<Vec<Result<(), Error>>> {
    let results = within("the send batch to complete", sender.send(docs))
        .await?
        .context("sending a batch")?;
    anyhow::ensure!(
        results.len() == docs.len(),
        "one result per document: {} documents, {} results",
        docs.len(),
        results.len()
    );
    Ok(results)
}

/// Sends `docs` and fails unless every document succeeded.
pub async fn send_ok(sender: &mut Sender, docs: &[Document]) -> Result<()> {
    for (index, result) in send(sender, docs).await?.into_iter().enumerate() {
        if let Err(e) = result {
            bail!("document {index} failed: {e:?}");
        }
    }
    Ok(())
}

/// Receives until `n` documents came, within [`WAIT`]; commits none.
pub async fn receive(listener: &mut Listener, n: usize) -> Result<Vec<Document>> {
    let deadline = Instant::now() + WAIT;
    let mut docs = Vec::new();
    while docs.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "expected {n} documents within {WAIT:?}, got {}: {}",
                docs.len(),
                summary(&docs)
            );
        }
        let want = u32::try_from(n - docs.len()).unwrap_or(u32::MAX);
        // The host honours the timeout; the outer bound is for a host that
        // does not.
        let batch = within("listener.next", listener.next(want, left))
            .await?
            .context("listener.next")?;
        docs.extend(batch);
    }
    anyhow::ensure!(
        docs.len() == n,
        "asked for {n} documents, got {}: {}",
        docs.len(),
        summary(&docs)
    );
    Ok(docs)
}

/// Receives until a document on `topic` came, within [`WAIT`], then watches
/// for [`QUIET`] more; returns everything received, in order, uncommitted.
pub async fn receive_through(listener: &mut Listener, topic_name: &str) -> Result<Vec<Document>> {
    let deadline = Instant::now() + WAIT;
    let mut docs: Vec<Document> = Vec::new();
    while !docs.iter().any(|d| topic(d) == topic_name) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "no document on {topic_name} within {WAIT:?}; got {}",
                summary(&docs)
            );
        }
        let batch = within("listener.next", listener.next(100, left))
            .await?
            .context("listener.next")?;
        docs.extend(batch);
    }
    docs.extend(receive_for(listener, QUIET).await?);
    Ok(docs)
}

/// Everything that arrives within `period`, uncommitted.
pub async fn receive_for(listener: &mut Listener, period: Duration) -> Result<Vec<Document>> {
    let deadline = Instant::now() + period;
    let mut docs = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(docs);
        }
        let batch = within("listener.next", listener.next(100, left))
            .await?
            .context("listener.next")?;
        docs.extend(batch);
    }
}

/// Commits `docs`.
pub async fn commit(listener: &mut Listener, docs: &[Document]) -> Result<()> {
    let ids: Vec<u64> = docs.iter().map(|d| d.id).collect();
    within("listener.commit", listener.commit(&ids))
        .await?
        .context("listener.commit")
}

/// Closes a listener, bounded in time.
pub async fn close_listener(listener: Listener) -> Result<()> {
    within("the listener to close", listener.close()).await
}

/// Closes a sender, bounded in time.
pub async fn close_sender(sender: Sender) -> Result<()> {
    within("the sender to close", sender.close()).await
}
