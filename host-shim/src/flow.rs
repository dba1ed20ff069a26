//! Flow files: a broker, a connection and steps that send and listen,
//! with expectations that make a flow check itself.
//!
//! A flow is what `host-shim run FLOW.json` runs. It uses the built-in
//! broker by default (started on loopback on a free port, stopped at the
//! end), so a flow tried on a laptop needs nothing installed; the same file
//! then runs against a real broker by naming its URL. With the built-in
//! broker, `broker` steps restart it or drop every connection, and its
//! `faults` settings inject failures of their own, to see how clients
//! recover.
//!
//! ```json
//! {
//!   "description": "retained configuration reaches a late subscriber",
//!   "steps": [
//!     { "send": { "config": { "topic": "users/settings/user01", "qos": 1, "retained": true },
//!                 "documents": [ { "payload": "{\"account_type\":\"standard\"}" } ] } },
//!     { "listen": { "config": { "subscriptions": [ { "filter": "users/settings/+" } ] },
//!                   "count": 1,
//!                   "expect": { "count": 1, "retained": true } } }
//!   ]
//! }
//! ```
//!
//! # Layout
//!
//! - this file: the flow model (serde + schemars), documents as JSON, and
//!   the JSON line a received document prints as.
//! - `expect`: checking what a step did against its `expect` block.
//! - `check`: every problem of a flow file at once, each with its JSON
//!   pointer, the embedded configurations checked by the connector. A
//!   problem is the connector's [`Problem`], listed with
//!   [`Problem::line`].
//! - `run`: the runner, on the WebAssembly host.
//!
//! Each fallible function has its own error type ([`ParseError`],
//! [`PayloadError`], [`ValueError`], [`DocumentError`],
//! [`BrokerSettingsError`](crate::broker_settings::BrokerSettingsError),
//! [`RunError`] and [`StepError`]); the messages
//! are the ones the command line prints.

mod check;
mod expect;
mod run;

pub use check::{check, config_problems, ConfigKind};
pub use connector::validate::Problem;
pub use run::{
    document_line, run, to_document, to_received, DocumentError, Outcome, RunError, RunOptions,
    RunOutput, StepError, ValueError,
};

use base64::Engine as _;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use std::time::Duration;

/// How long a listen or receive step collects when it names no timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(3000);

/// A flow file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "host-shim flow")]
pub struct Flow {
    /// What the flow shows, for whoever reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Settings of the built-in broker, as in `host-shim broker --config`:
    /// a `profile` (`mosquitto`, `emqx`, `aws-iot`, `tagoio`) and keys over
    /// it. It listens on 127.0.0.1 and a free port unless they say
    /// otherwise. The built-in broker runs unless `connection` names a `url`
    /// and this is absent. A store on disk named by a relative path
    /// (`retain.storage`, `sessions.storage`) lives in a directory of the
    /// run, removed at its end, so each run starts from empty stores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "broker_schema")]
    pub broker: Option<Map<String, Json>>,
    /// The connection configuration every step uses; its `url` is filled in
    /// when the built-in broker runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "connection_schema")]
    pub connection: Option<Map<String, Json>>,
    /// The steps, run in order; the flow stops at the first that fails.
    pub steps: Vec<Step>,
}

/// One step of a flow: an object with exactly one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Sends documents; a named sender stays connected for later steps.
    Send(SendStep),
    /// Opens a named listener now (so it is subscribed from this point on);
    /// a later `receive` step collects from it.
    Subscribe(SubscribeStep),
    /// Collects documents from a listener opened by `subscribe`.
    Receive(ReceiveStep),
    /// Subscribes, collects and disconnects, in one step.
    Listen(ListenStep),
    /// Closes a named sender or listener normally (MQTT DISCONNECT).
    Close(String),
    /// Drops a named sender or listener's connection without DISCONNECT, as
    /// a device that loses power does, so the broker publishes its will.
    Drop(String),
    /// Waits this many milliseconds.
    SleepMs(u64),
    /// Acts on the flow's built-in broker, to see how clients recover:
    /// `"restart"` or `"drop_connections"`. Not for an external broker.
    Broker(BrokerStep),
}

/// What a `broker` step does to the flow's built-in broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BrokerStep {
    /// Restarts it: every connection is dropped without DISCONNECT, its
    /// state is rebuilt from what its storage keeps (retained messages with
    /// `retain.storage` on disk; nothing in memory), and it listens again on
    /// the same address.
    Restart,
    /// Closes every connection without DISCONNECT, as a network failure
    /// would: wills are sent, sessions are kept as for any lost connection.
    DropConnections,
}

impl Step {
    /// The step's key in the file: `send`, `listen`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Send(_) => "send",
            Step::Subscribe(_) => "subscribe",
            Step::Receive(_) => "receive",
            Step::Listen(_) => "listen",
            Step::Close(_) => "close",
            Step::Drop(_) => "drop",
            Step::SleepMs(_) => "sleep_ms",
            Step::Broker(_) => "broker",
        }
    }

    /// The step's `description`, if it has one.
    pub fn description(&self) -> Option<&str> {
        match self {
            Step::Send(s) => s.description.as_deref(),
            Step::Subscribe(s) => s.description.as_deref(),
            Step::Receive(s) => s.description.as_deref(),
            Step::Listen(s) => s.description.as_deref(),
            Step::Close(_) | Step::Drop(_) | Step::SleepMs(_) | Step::Broker(_) => None,
        }
    }
}

/// A `send` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendStep {
    /// What the step does, printed with its outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Keeps the sender connected under this name: a later step with the
    /// same name sends on the same connection, `close` or `drop` ends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Connection settings of this step, over the flow's `connection`
    /// (a client id or a will of its own, for example).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "connection_schema")]
    pub connection: Option<Map<String, Json>>,
    /// The Send configuration; required unless `name` is already open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "send_schema")]
    pub config: Option<Json>,
    /// The documents, sent as one batch.
    #[serde(default)]
    pub documents: Vec<FlowDocument>,
    /// What must happen; without it every document must succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<SendExpect>,
}

/// A document to send.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowDocument {
    /// The payload as UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The payload as base64, for bytes that are not text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
    /// Document properties: `"mqtt.topic": "a/b"`, `"mqtt.qos": 1`,
    /// `"mqtt.retained": true`; bytes as `{"base64": "..."}`, name and value
    /// pairs as `[["name", "value"], ...]`.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schemars(schema_with = "properties_schema")]
    pub properties: Map<String, Json>,
}

impl FlowDocument {
    /// The payload bytes.
    ///
    /// # Errors
    ///
    /// When both payload forms are given, or the base64 is invalid.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, PayloadError> {
        match (&self.payload, &self.payload_base64) {
            (Some(_), Some(_)) => Err(PayloadError::Both),
            (Some(text), None) => Ok(text.as_bytes().to_vec()),
            (None, Some(b64)) => {
                connector::config::decode_base64(b64).map_err(PayloadError::Base64)
            }
            (None, None) => Ok(Vec::new()),
        }
    }
}

/// Why a flow document's payload cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// `payload` and `payload_base64` are both given.
    #[error("give `payload` or `payload_base64`, not both")]
    Both,
    /// `payload_base64` is not base64; says where.
    #[error("invalid base64: {0}")]
    Base64(String),
}

/// What a `send` step must do.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendExpect {
    /// How many documents succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<usize>,
    /// How many documents fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<usize>,
    /// Text each failed document's error contains, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<String>>,
    /// The operation itself fails (connecting, or its configuration) with an
    /// error that contains this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A `subscribe` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeStep {
    /// What the step does, printed with its outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The listener's name, for `receive`, `close` and `drop`.
    pub name: String,
    /// Connection settings of this step, over the flow's `connection`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "connection_schema")]
    pub connection: Option<Map<String, Json>>,
    /// The Listen configuration.
    #[schemars(schema_with = "listen_schema")]
    pub config: Json,
    /// The subscription itself fails with an error that contains this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_error: Option<String>,
}

/// A `receive` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiveStep {
    /// What the step does, printed with its outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The listener opened by `subscribe`.
    pub name: String,
    /// Stop after this many documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// Stop after this many milliseconds. Default 3000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// What must have been received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<ListenExpect>,
}

/// A `listen` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenStep {
    /// What the step does, printed with its outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Connection settings of this step, over the flow's `connection`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "connection_schema")]
    pub connection: Option<Map<String, Json>>,
    /// The Listen configuration.
    #[schemars(schema_with = "listen_schema")]
    pub config: Json,
    /// Stop after this many documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// Stop after this many milliseconds. Default 3000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// What must have been received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<ListenExpect>,
}

/// What a `listen` or `receive` step must have received. Every key is
/// optional; each one given is checked.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenExpect {
    /// Exactly this many documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// Every document has this retained flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained: Option<bool>,
    /// The payloads as text, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payloads: Option<Vec<String>>,
    /// The documents, in order; each names only what it checks (`topic`,
    /// `qos`, `retained`, `payload`, `payload_base64`, some `properties`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents: Option<Vec<DocumentMatch>>,
    /// `payloads` and `documents` may arrive in any order (retained
    /// messages of several topics, for example).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub any_order: bool,
    /// The operation fails with an error that contains this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A partial description of a received document: what is given must match.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentMatch {
    /// The topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The QoS it was delivered at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<i64>,
    /// The retained flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained: Option<bool>,
    /// The payload as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The payload as base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
    /// Properties that must be present with these values (others may be
    /// too); `null` requires a property to be absent.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schemars(schema_with = "properties_schema")]
    pub properties: Map<String, Json>,
}

/// A received document as the shim prints it: one JSON object per line.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Received {
    /// `mqtt.topic`.
    pub topic: Option<String>,
    /// `mqtt.qos`.
    pub qos: Option<i64>,
    /// `mqtt.retained`.
    pub retained: Option<bool>,
    /// The payload.
    pub payload: Vec<u8>,
    /// Every other property, as JSON: bytes as `{"base64": "..."}`, pairs
    /// as `[["name", "value"], ...]`.
    pub properties: Map<String, Json>,
}

impl Received {
    /// The payload as text, if it is UTF-8.
    pub fn payload_text(&self) -> Option<&str> {
        std::str::from_utf8(&self.payload).ok()
    }

    /// The JSON object: `topic`, `qos`, `retained`, then `payload` as text or
    /// `payload_base64` when it is not UTF-8, then `properties`.
    pub fn to_json_line(&self) -> String {
        /// A struct rather than a map so the keys keep this order.
        #[derive(Serialize)]
        struct Line<'a> {
            topic: &'a Option<String>,
            qos: &'a Option<i64>,
            retained: &'a Option<bool>,
            #[serde(skip_serializing_if = "Option::is_none")]
            payload: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            payload_base64: Option<String>,
            properties: &'a Map<String, Json>,
        }
        let text = self.payload_text();
        let line = Line {
            topic: &self.topic,
            qos: &self.qos,
            retained: &self.retained,
            payload: text,
            payload_base64: text.is_none().then(|| base64_encode(&self.payload)),
            properties: &self.properties,
        };
        // Serializing strings, numbers and maps of JSON values cannot fail.
        serde_json::to_string(&line).unwrap_or_default()
    }
}

/// Standard base64 with padding, the form flow files and output use.
pub fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The JSON Schema of flow files, with the connector's configuration
/// schemas embedded.
pub fn schema() -> Json {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<Flow>();
    schema.to_value()
}

/// Why a flow file's text is not a flow.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The text is not JSON.
    #[error("invalid JSON: {0}")]
    Json(serde_json::Error),
    /// Every problem [`check`] found.
    #[error("{}", problem_lines(.0))]
    Problems(Vec<Problem>),
    /// Checked, yet not read as a flow.
    #[error("invalid flow: {0}")]
    Flow(serde_json::Error),
}

/// Problems one per line, as `POINTER: message`.
fn problem_lines(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| p.line().to_string()).collect();
    lines.join("\n")
}

/// Parses a flow file's text.
///
/// # Errors
///
/// The JSON syntax error, or every problem [`check`] finds, one per line as
/// `POINTER: message`.
pub fn parse(text: &str) -> Result<Flow, ParseError> {
    let json: Json = serde_json::from_str(text).map_err(ParseError::Json)?;
    let problems = check(&json);
    if !problems.is_empty() {
        return Err(ParseError::Problems(problems));
    }
    serde_json::from_value(json).map_err(ParseError::Flow)
}

fn broker_schema(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<mqtt_broker::BrokerConfig>()
}

fn properties_schema(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "type": "object",
        "additionalProperties": {
            "anyOf": [
                { "type": ["string", "integer", "boolean", "null"] },
                {
                    "type": "object",
                    "properties": { "base64": { "type": "string" } },
                    "required": ["base64"],
                    "additionalProperties": false
                },
                {
                    "type": "array",
                    "items": {
                        "type": "array",
                        "items": { "type": "string" },
                        "minItems": 2,
                        "maxItems": 2
                    }
                }
            ]
        }
    })
}

fn connection_schema(generator: &mut SchemaGenerator) -> Schema {
    // In a flow nothing is required: the built-in broker fills in `url`,
    // and a step names only the keys it changes.
    use connector::config::ConnectionConfig;
    let mut schema = generator.subschema_for::<ConnectionConfig>();
    schema.remove("required");
    let name = <ConnectionConfig as JsonSchema>::schema_name();
    if let Some(Json::Object(definition)) = generator.definitions_mut().get_mut(name.as_ref()) {
        definition.remove("required");
    }
    schema
}

fn send_schema(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<connector::config::SendConfig>()
}

fn listen_schema(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<connector::config::ListenConfig>()
}

#[cfg(test)]
mod tests;
