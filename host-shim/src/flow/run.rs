//! The flow runner: starts the built-in broker when the flow uses it, runs
//! each step through the connector component, prints what happened and
//! checks the step's expectations.

use super::check::{broker_config, merge_connection};
use super::expect::{self, Sent};
use super::{
    BrokerStep, Flow, FlowDocument, ListenExpect, PayloadError, Received, SendStep, Step,
    DEFAULT_TIMEOUT,
};
use crate::broker_settings::BrokerSettingsError;
use crate::host::{Document, Listener, Property, Runtime, Sender, Value};
use mqtt_broker as broker;
use serde_json::{Map, Value as Json};
use std::collections::HashMap;
use std::io::{self, Write};
use std::time::{Duration, Instant};

/// Why a flow could not run to its end (a step that does not meet its
/// expectations is an [`Outcome`], not an error).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The flow's `broker` settings are not the built-in broker's.
    #[error("invalid broker settings: {0}")]
    BrokerSettings(BrokerSettingsError),
    /// The built-in broker did not start.
    #[error("cannot start the built-in broker")]
    BrokerStart(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Neither the flow nor the options name a broker.
    #[error("the flow's connection has no `url`")]
    NoUrl,
    /// A step failed in a way its expectations do not allow for.
    #[error("step {index} ({kind})")]
    Step {
        /// The step's index.
        index: usize,
        /// The step's key: `send`, `listen`, ...
        kind: &'static str,
        /// What went wrong.
        #[source]
        source: StepError,
    },
    /// The output could not be written.
    #[error("cannot write the output")]
    Output(#[from] io::Error),
}

/// Why one step failed outside its expectations.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// `receive` names no open listener.
    #[error("no listener `{0}` is open")]
    NoListener(String),
    /// `close` or `drop` names nothing open.
    #[error("no sender or listener `{0}` is open")]
    NotOpen(String),
    /// A document to send is not usable.
    #[error("document {index}: {error}")]
    Document {
        /// The document's index in the step.
        index: usize,
        /// What is wrong with it.
        error: DocumentError,
    },
    /// A sender step without a configuration or an open sender.
    #[error("missing `config`")]
    MissingConfig,
    /// A `broker` step in a flow that runs against another broker; its URL.
    #[error(
        "`broker` steps act on the built-in broker, and this flow runs against {0}; \
         leave out the connection's `url` (and --url) to run on the built-in broker"
    )]
    ExternalBroker(String),
    /// The built-in broker did not restart.
    #[error("the built-in broker did not restart")]
    Restart(#[source] broker::RestartError),
    /// The built-in broker has stopped.
    #[error("the built-in broker has stopped")]
    BrokerStopped,
    /// The output could not be written.
    #[error("cannot write the output")]
    Output(#[from] io::Error),
}

/// Why a flow document is not a connector `document`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// The payload cannot be read.
    #[error("{0}")]
    Payload(PayloadError),
    /// A property's value cannot be read.
    #[error("property {name}: {error}")]
    Property {
        /// The property's name.
        name: String,
        /// What is wrong with its value.
        error: ValueError,
    },
}

/// Why a JSON value is not a property value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A number with a fraction or out of range.
    #[error("{0} is not a whole number")]
    NotWholeNumber(String),
    /// `{"base64": ...}` with an invalid base64 text; says where.
    #[error("invalid base64: {0}")]
    Base64(String),
    /// An object other than `{"base64": "..."}`.
    #[error("an object value must be {{\"base64\": \"...\"}}")]
    Object,
    /// A list that is not of `[name, value]` pairs.
    #[error("pairs are written [[\"name\", \"value\"], ...]")]
    Pairs,
    /// `null` outside an expectation.
    #[error("null is only for expectations (a property that must be absent)")]
    Null,
}

/// How a flow runs.
#[derive(Clone)]
pub struct RunOptions {
    /// The connector to run the steps with.
    pub runtime: Runtime,
    /// Run against this broker instead of the built-in one, whatever the
    /// flow says.
    pub url: Option<String>,
}

/// How a flow ended, when it could run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Steps that ran.
    pub steps_run: usize,
    /// The step whose expectation was not met, with every difference; the
    /// flow stops there.
    pub failed: Option<(usize, Vec<String>)>,
}

impl Outcome {
    /// Whether every step met its expectations.
    pub fn passed(&self) -> bool {
        self.failed.is_none()
    }
}

/// Where a flow's run writes: the received documents apart from the rest,
/// so that a reader of the documents gets nothing else.
pub struct RunOutput<'a> {
    /// Each received document, as a JSON line.
    pub documents: &'a mut dyn Write,
    /// The broker's address, each step's outcome, and the verdict.
    pub log: &'a mut dyn Write,
}

/// Runs `flow`, printing each received document (as a JSON line) to
/// `out.documents` and each step's outcome to `out.log`.
///
/// # Errors
///
/// When the broker cannot start, the output cannot be written, or a step
/// fails in a way its expectations do not allow for and that is not a
/// difference to report (a named listener that is not open, for example).
pub async fn run(
    flow: &Flow,
    options: &RunOptions,
    out: RunOutput<'_>,
) -> Result<Outcome, RunError> {
    let RunOutput {
        documents,
        log: out,
    } = out;
    let builtin = options.url.is_none()
        && (flow.broker.is_some()
            || !flow
                .connection
                .as_ref()
                .is_some_and(|c| c.contains_key("url")));
    // Kept until the run ends, then removed with the stores in it.
    let mut _run_dir = None;
    let (broker, url) = if builtin {
        let settings = Json::Object(flow.broker.clone().unwrap_or_default());
        let mut config = broker_config(&settings).map_err(RunError::BrokerSettings)?;
        _run_dir = relative_stores_in_run_dir(&mut config)
            .map_err(|e| RunError::BrokerStart(Box::new(e)))?;
        let handle = broker::start(config)
            .await
            .map_err(|e| RunError::BrokerStart(Box::new(e)))?;
        let url = handle.url();
        writeln!(out, "built-in broker on {url}")?;
        (Some(handle), url)
    } else {
        let url = options.url.clone().or_else(|| {
            let connection = flow.connection.as_ref()?;
            connection.get("url")?.as_str().map(str::to_owned)
        });
        let url = url.ok_or(RunError::NoUrl)?;
        if flow.broker.is_some() {
            tracing::warn!("the flow's broker settings do not apply to {url}");
        }
        (None, url)
    };

    let mut connection = flow.connection.clone().unwrap_or_default();
    connection.insert("url".to_owned(), Json::from(url));
    let mut runner = Runner {
        runtime: options.runtime.clone(),
        broker,
        connection,
        senders: HashMap::new(),
        listeners: HashMap::new(),
        out,
        documents,
    };
    let mut outcome = Outcome {
        steps_run: 0,
        failed: None,
    };
    let mut result = Ok(());
    for (i, step) in flow.steps.iter().enumerate() {
        outcome.steps_run += 1;
        match runner.step(i, step).await {
            Ok(diffs) if diffs.is_empty() => {}
            Ok(diffs) => {
                outcome.failed = Some((i, diffs));
                break;
            }
            Err(source) => {
                result = Err(RunError::Step {
                    index: i,
                    kind: step.kind(),
                    source,
                });
                break;
            }
        }
    }
    runner.close_all().await;
    if let Some(handle) = runner.broker.take() {
        handle.shutdown().await;
    }
    result?;
    let Runner { out, .. } = runner;
    match &outcome.failed {
        None => writeln!(out, "passed: {} steps", outcome.steps_run)?,
        Some((i, diffs)) => {
            writeln!(out, "FAILED: step {i} ({})", flow.steps[*i].kind())?;
            for diff in diffs {
                writeln!(out, "  {diff}")?;
            }
        }
    }
    Ok(outcome)
}

/// Moves the store paths of `config` named relative into a directory of
/// the run, removed when it is dropped, so every run of a flow starts from
/// empty stores (an absolute path is kept as it is); `None` when there are
/// none.
fn relative_stores_in_run_dir(
    config: &mut broker::BrokerConfig,
) -> io::Result<Option<tempfile::TempDir>> {
    let mut dir: Option<tempfile::TempDir> = None;
    for storage in [&mut config.retain.storage, &mut config.sessions.storage] {
        let broker::RetainStorage::Disk(path) = storage else {
            continue;
        };
        if path.is_absolute() {
            continue;
        }
        let dir = match &mut dir {
            Some(dir) => dir,
            None => dir.insert(
                tempfile::Builder::new()
                    .prefix("host-shim-flow-")
                    .tempdir()?,
            ),
        };
        *path = dir.path().join(&*path);
    }
    Ok(dir)
}

struct Runner<'a> {
    runtime: Runtime,
    /// The built-in broker, when the flow runs on it.
    broker: Option<broker::BrokerHandle>,
    /// The flow's connection settings with the broker's URL.
    connection: Map<String, Json>,
    senders: HashMap<String, Sender>,
    listeners: HashMap<String, Listener>,
    /// The log: step outcomes.
    out: &'a mut dyn Write,
    /// The received documents.
    documents: &'a mut dyn Write,
}

impl Runner<'_> {
    /// Runs one step: the differences from its expectations, none when met.
    async fn step(&mut self, i: usize, step: &Step) -> Result<Vec<String>, StepError> {
        if let Some(description) = step.description() {
            writeln!(self.out, "# {description}")?;
        }
        match step {
            Step::Send(send) => self.send(i, send).await,
            Step::Subscribe(subscribe) => {
                let connection = self.connection_json(subscribe.connection.as_ref());
                let opened = self
                    .runtime
                    .open_listener(&connection, &subscribe.config.to_string())
                    .await;
                let want = subscribe.expect_error.as_deref();
                let diffs = match (opened, want) {
                    (Ok(listener), None) => {
                        writeln!(
                            self.out,
                            "step {i} subscribe {}: subscribed",
                            subscribe.name
                        )?;
                        self.listeners.insert(subscribe.name.clone(), listener);
                        Vec::new()
                    }
                    (Ok(listener), Some(want)) => {
                        listener.close().await;
                        vec![format!(
                            "expected an error containing {want:?}, it subscribed"
                        )]
                    }
                    (Err(e), want) => {
                        let err = e.to_string();
                        writeln!(
                            self.out,
                            "step {i} subscribe {}: failed: {err}",
                            subscribe.name
                        )?;
                        match want {
                            Some(want) if err.contains(want) => Vec::new(),
                            Some(want) => vec![format!(
                                "expected an error containing {want:?}, got {err:?}"
                            )],
                            None => vec![format!("the subscription failed: {err}")],
                        }
                    }
                };
                Ok(diffs)
            }
            Step::Receive(receive) => {
                let listener = self
                    .listeners
                    .get_mut(&receive.name)
                    .ok_or_else(|| StepError::NoListener(receive.name.clone()))?;
                let timeout = receive
                    .timeout_ms
                    .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
                let (received, error) =
                    collect(listener, receive.count, timeout, self.documents).await?;
                let label = format!("receive {}", receive.name);
                self.report_listen(
                    i,
                    &label,
                    &received,
                    error.as_deref(),
                    receive.expect.as_ref(),
                )
            }
            Step::Listen(listen) => {
                let connection = self.connection_json(listen.connection.as_ref());
                let timeout = listen
                    .timeout_ms
                    .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
                let opened = self
                    .runtime
                    .open_listener(&connection, &listen.config.to_string())
                    .await;
                let (received, error) = match opened {
                    Ok(mut listener) => {
                        let collected =
                            collect(&mut listener, listen.count, timeout, self.documents).await;
                        listener.close().await;
                        collected?
                    }
                    Err(e) => (Vec::new(), Some(e.to_string())),
                };
                self.report_listen(
                    i,
                    "listen",
                    &received,
                    error.as_deref(),
                    listen.expect.as_ref(),
                )
            }
            Step::Close(name) => {
                if let Some(sender) = self.senders.remove(name) {
                    sender.close().await;
                } else if let Some(listener) = self.listeners.remove(name) {
                    listener.close().await;
                } else {
                    return Err(StepError::NotOpen(name.clone()));
                }
                writeln!(self.out, "step {i} close {name}: closed")?;
                Ok(Vec::new())
            }
            Step::Drop(name) => {
                // Dropping without close ends the client's event loop with
                // no DISCONNECT, so the broker sees a lost connection.
                let dropped = self.senders.remove(name).map(drop).is_some()
                    || self.listeners.remove(name).map(drop).is_some();
                if !dropped {
                    return Err(StepError::NotOpen(name.clone()));
                }
                writeln!(self.out, "step {i} drop {name}: connection dropped")?;
                Ok(Vec::new())
            }
            Step::SleepMs(ms) => {
                tokio::time::sleep(Duration::from_millis(*ms)).await;
                writeln!(self.out, "step {i} sleep: {ms} ms")?;
                Ok(Vec::new())
            }
            Step::Broker(action) => {
                self.broker_step(i, *action).await?;
                Ok(Vec::new())
            }
        }
    }

    /// Restarts the built-in broker or drops its connections.
    async fn broker_step(&mut self, i: usize, action: BrokerStep) -> Result<(), StepError> {
        let Some(handle) = &self.broker else {
            let url = self.connection.get("url").and_then(Json::as_str);
            return Err(StepError::ExternalBroker(
                url.unwrap_or_default().to_owned(),
            ));
        };
        match action {
            BrokerStep::Restart => {
                handle.restart().await.map_err(StepError::Restart)?;
                writeln!(self.out, "step {i} broker: restarted")?;
            }
            BrokerStep::DropConnections => {
                let dropped = handle
                    .drop_connections()
                    .await
                    .map_err(|_| StepError::BrokerStopped)?;
                let noun = if dropped == 1 {
                    "connection"
                } else {
                    "connections"
                };
                writeln!(self.out, "step {i} broker: {dropped} {noun} dropped")?;
            }
        }
        Ok(())
    }

    async fn send(&mut self, i: usize, step: &SendStep) -> Result<Vec<String>, StepError> {
        let documents = step
            .documents
            .iter()
            .enumerate()
            .map(|(index, d)| to_document(d).map_err(|error| StepError::Document { index, error }))
            .collect::<Result<Vec<_>, _>>()?;
        let label = match &step.name {
            Some(name) => format!("send {name}"),
            None => "send".to_owned(),
        };

        let existing = step
            .name
            .as_ref()
            .and_then(|name| self.senders.remove(name));
        let opened = match existing {
            Some(sender) => Ok(sender),
            None => {
                let config = step.config.as_ref().ok_or(StepError::MissingConfig)?;
                let connection = self.connection_json(step.connection.as_ref());
                self.runtime
                    .open_sender(&connection, &config.to_string())
                    .await
            }
        };
        let sent = match opened {
            Ok(mut sender) => {
                let sent = match sender.send(&documents).await {
                    Ok(outcomes) => Sent::Batch(
                        outcomes
                            .into_iter()
                            .map(|o| o.map_err(|e| e.to_string()))
                            .collect(),
                    ),
                    Err(e) => Sent::Failed(e.to_string()),
                };
                match &step.name {
                    Some(name) => {
                        self.senders.insert(name.clone(), sender);
                    }
                    None => sender.close().await,
                }
                sent
            }
            Err(e) => Sent::Failed(e.to_string()),
        };

        match &sent {
            Sent::Batch(outcomes) => {
                let failed: Vec<&String> =
                    outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
                let ok = outcomes.len() - failed.len();
                if failed.is_empty() {
                    writeln!(self.out, "step {i} {label}: {ok} ok")?;
                } else {
                    writeln!(
                        self.out,
                        "step {i} {label}: {ok} ok, {} failed",
                        failed.len()
                    )?;
                    for err in failed {
                        writeln!(self.out, "  {err}")?;
                    }
                }
            }
            Sent::Failed(err) => writeln!(self.out, "step {i} {label}: failed: {err}")?,
        }
        Ok(expect::send(step.expect.as_ref(), &sent))
    }

    fn report_listen(
        &mut self,
        i: usize,
        label: &str,
        received: &[Received],
        error: Option<&str>,
        expect: Option<&ListenExpect>,
    ) -> Result<Vec<String>, StepError> {
        let n = received.len();
        let noun = if n == 1 { "document" } else { "documents" };
        match error {
            Some(err) => writeln!(self.out, "step {i} {label}: {n} {noun}, then failed: {err}")?,
            None => writeln!(self.out, "step {i} {label}: {n} {noun}")?,
        }
        Ok(expect::listen(expect, received, error))
    }

    /// The connection configuration of a step, as JSON text.
    fn connection_json(&self, step: Option<&Map<String, Json>>) -> String {
        let url = self
            .connection
            .get("url")
            .and_then(Json::as_str)
            .unwrap_or_default();
        Json::Object(merge_connection(&self.connection, step, url)).to_string()
    }

    async fn close_all(&mut self) {
        for (_, sender) in self.senders.drain() {
            sender.close().await;
        }
        for (_, listener) in self.listeners.drain() {
            listener.close().await;
        }
    }
}

/// Collects documents until `count` came, `timeout` passed or the listener
/// is done; prints each as a JSON line and commits each batch once printed.
/// A failure of the listener ends the collection and is returned with what
/// came before it.
async fn collect(
    listener: &mut Listener,
    count: Option<usize>,
    timeout: Duration,
    out: &mut dyn Write,
) -> io::Result<(Vec<Received>, Option<String>)> {
    let deadline = Instant::now() + timeout;
    let mut received = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let wanted = count.map_or(usize::MAX, |c| c.saturating_sub(received.len()));
        if left.is_zero() || wanted == 0 {
            break;
        }
        let max = u32::try_from(wanted.min(1000)).unwrap_or(1000);
        let batch = match listener.next(max, left).await {
            Ok(batch) => batch,
            Err(e) => return Ok((received, Some(e.to_string()))),
        };
        if batch.is_empty() {
            match listener.done().await {
                Ok(true) => break,
                Ok(false) => continue,
                Err(e) => return Ok((received, Some(e.to_string()))),
            }
        }
        for document in &batch {
            let doc = to_received(document);
            writeln!(out, "{}", doc.to_json_line())?;
            received.push(doc);
        }
        out.flush()?;
        let ids: Vec<u64> = batch.iter().map(|d| d.id).collect();
        match listener.commit(&ids).await {
            Err(e) if e.is_redelivery() => tracing::warn!("{e}"),
            Err(e) => return Ok((received, Some(e.to_string()))),
            Ok(()) => {}
        }
    }
    Ok((received, None))
}

/// A flow document as the connector's `document`.
///
/// # Errors
///
/// Which payload or property is invalid, and why.
pub fn to_document(document: &FlowDocument) -> Result<Document, DocumentError> {
    let payload = document.payload_bytes().map_err(DocumentError::Payload)?;
    let properties = document
        .properties
        .iter()
        .map(|(name, value)| {
            property_value(value)
                .map(|value| Property {
                    name: name.clone(),
                    value,
                })
                .map_err(|error| DocumentError::Property {
                    name: name.clone(),
                    error,
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(Document {
        id: 0,
        payload,
        properties,
    })
}

/// A JSON property value as a connector `value`: text, a whole number, a
/// flag, `{"base64": "..."}` for bytes, `[["name", "value"], ...]` for pairs.
pub(crate) fn property_value(json: &Json) -> Result<Value, ValueError> {
    match json {
        Json::String(text) => Ok(Value::Text(text.clone())),
        Json::Bool(flag) => Ok(Value::Boolean(*flag)),
        Json::Number(n) => n
            .as_i64()
            .map(Value::Integer)
            .ok_or_else(|| ValueError::NotWholeNumber(n.to_string())),
        Json::Object(object) => match object.get("base64").and_then(Json::as_str) {
            Some(b64) if object.len() == 1 => connector::config::decode_base64(b64)
                .map(Value::Binary)
                .map_err(ValueError::Base64),
            _ => Err(ValueError::Object),
        },
        Json::Array(items) => items
            .iter()
            .map(|item| match item.as_array().map(Vec::as_slice) {
                Some([Json::String(name), Json::String(value)]) => {
                    Ok((name.clone(), value.clone()))
                }
                _ => Err(ValueError::Pairs),
            })
            .collect::<Result<_, _>>()
            .map(Value::Pairs),
        Json::Null => Err(ValueError::Null),
    }
}

/// A connector `value` as JSON, the inverse of [`property_value`].
pub(crate) fn property_json(value: &Value) -> Json {
    match value {
        Value::Text(text) => Json::from(text.as_str()),
        Value::Integer(n) => Json::from(*n),
        Value::Boolean(flag) => Json::from(*flag),
        Value::Binary(bytes) => serde_json::json!({ "base64": super::base64_encode(bytes) }),
        Value::Pairs(pairs) => Json::Array(
            pairs
                .iter()
                .map(|(name, value)| serde_json::json!([name, value]))
                .collect(),
        ),
    }
}

/// A received document in the form the shim prints and expectations check.
pub fn to_received(document: &Document) -> Received {
    let mut received = Received {
        payload: document.payload.clone(),
        ..Received::default()
    };
    for Property { name, value } in &document.properties {
        match (name.as_str(), value) {
            ("mqtt.topic", Value::Text(topic)) => received.topic = Some(topic.clone()),
            ("mqtt.qos", Value::Integer(qos)) => received.qos = Some(*qos),
            ("mqtt.retained", Value::Boolean(retained)) => received.retained = Some(*retained),
            _ => {
                received
                    .properties
                    .insert(name.clone(), property_json(value));
            }
        }
    }
    received
}

/// The JSON line `host-shim listen` and flows print for a document.
pub fn document_line(document: &Document) -> String {
    to_received(document).to_json_line()
}
