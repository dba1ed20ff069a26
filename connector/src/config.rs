//! Configuration of the connector: the connection to a broker and the Send
//! and Listen operations.
//!
//! These types are the product's configuration surface. Users write them as
//! JSON, and their UI renders forms from the JSON Schemas generated from
//! them ([`crate::schema`]), so every field's doc comment is written for a
//! user: it becomes the field's description, and it states the default.
//!
//! Deserialize through [`crate::validate::parse_connection`] and friends:
//! they report every problem at once before deserializing. Topics are
//! parsed as they are read: a validated configuration carries
//! [`TopicName`]s and [`TopicFilter`]s, and the protocol version is
//! [`MqttVersion`]. The conversion helpers here
//! ([`ConnectionConfig::connect_options`], [`ListenConfig::subscriptions`])
//! assume a validated configuration but never panic on an unvalidated one.

use std::borrow::Cow;
use std::time::Duration;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::schema::{connection_schema, listen_schema, send_schema};

use crate::model::{
    parse_topic_filter, Capabilities, ConnectOptions, Error, MessageProperties, MqttVersion, QoS,
    Subscription, TlsOptions, TopicFilter, TopicName, Will,
};
use crate::url::BrokerUrl;

// ---------------------------------------------------------------------------
// QoS and Retain Handling as JSON numbers

/// QoS appears in configurations as the number 0, 1 or 2, which is how MQTT
/// users know it.
impl Serialize for QoS {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.level())
    }
}

impl<'de> Deserialize<'de> for QoS {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let level = u8::deserialize(deserializer)?;
        QoS::from_level(level)
            .ok_or_else(|| serde::de::Error::custom(format!("QoS must be 0, 1 or 2, got {level}")))
    }
}

impl JsonSchema for QoS {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "QoS".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "integer", "enum": [0, 1, 2] })
    }
}

/// MQTT 5.0 Retain Handling subscription option: when the broker sends
/// retained messages for a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// 0: send retained messages on every subscribe.
    #[default]
    OnSubscribe,
    /// 1: send retained messages only if the subscription is new.
    OnNewSubscription,
    /// 2: never send retained messages on subscribe.
    Never,
}

impl RetainHandling {
    /// The value on the wire: 0, 1 or 2.
    pub fn value(self) -> u8 {
        match self {
            RetainHandling::OnSubscribe => 0,
            RetainHandling::OnNewSubscription => 1,
            RetainHandling::Never => 2,
        }
    }

    /// The option of a wire value, if it is 0, 1 or 2.
    pub fn from_value(value: u8) -> Option<RetainHandling> {
        match value {
            0 => Some(RetainHandling::OnSubscribe),
            1 => Some(RetainHandling::OnNewSubscription),
            2 => Some(RetainHandling::Never),
            _ => None,
        }
    }
}

impl Serialize for RetainHandling {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.value())
    }
}

impl<'de> Deserialize<'de> for RetainHandling {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = u8::deserialize(deserializer)?;
        RetainHandling::from_value(value).ok_or_else(|| {
            serde::de::Error::custom(format!("retain_handling must be 0, 1 or 2, got {value}"))
        })
    }
}

impl JsonSchema for RetainHandling {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "RetainHandling".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "integer", "enum": [0, 1, 2] })
    }
}

// ---------------------------------------------------------------------------
// Connection

/// How to connect to an MQTT broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
#[schemars(title = "MQTT connection")]
pub struct ConnectionConfig {
    /// Broker address: `mqtt://host[:port]` (plain TCP, port 1883 by
    /// default) or `mqtts://host[:port]` (TLS, port 8883 by default). IPv6
    /// addresses go in brackets: `mqtt://[::1]:1883`.
    pub url: String,
    /// MQTT protocol version: "3.1.1" or "5". Default "5".
    #[serde(default)]
    pub mqtt_version: MqttVersion,
    /// Client identifier. When absent, an MQTT 5.0 broker assigns one; on
    /// MQTT 3.1.1 a missing client identifier requires `clean_start: true`.
    /// Two clients with the same identifier disconnect each other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// User name to authenticate with. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password to authenticate with. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Keep alive in seconds: the longest time without traffic before the
    /// client pings the broker; 0 turns keep alive off. Default 60.
    #[serde(default = "default_keep_alive_secs")]
    pub keep_alive_secs: u16,
    /// Start a new session, discarding any earlier one of this client
    /// identifier (MQTT 3.1.1: clean session). Set to false to resume
    /// subscriptions and unacknowledged messages after a reconnect. Default
    /// true.
    #[serde(default = "default_true")]
    pub clean_start: bool,
    /// MQTT 5.0: how long, in seconds, the broker keeps the session after
    /// the connection closes; 0 ends it with the connection. Ignored on
    /// 3.1.1. Default 0.
    #[serde(default)]
    pub session_expiry_secs: u32,
    /// How long to wait for the broker to accept the connection, in
    /// milliseconds. Default 10000.
    #[serde(default = "default_connect_timeout_ms")]
    #[schemars(range(min = 1))]
    pub connect_timeout_ms: u32,
    /// TLS settings, for `mqtts://` URLs only. Default: trust the system's
    /// certificate authorities, no client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// How long to wait before reconnecting after the connection is lost.
    /// Default: 100 ms, doubling up to 30000 ms.
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    /// How long a send waits, in milliseconds, when the connection to the
    /// broker is lost, for the client to reconnect. Documents the broker
    /// has not acknowledged when it runs out fail with `timeout`; until
    /// then they are sent again on the new connection (QoS 1 and 2 in
    /// flight are resent by the session with DUP set, so a QoS 2 document
    /// is never delivered twice). 0 fails them as soon as the connection
    /// is lost. Default 30000.
    #[serde(default = "default_send_timeout_ms")]
    pub send_timeout_ms: u32,
    /// The last will: a message the broker publishes when this client
    /// disconnects without saying goodbye. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub will: Option<WillConfig>,
    /// How many QoS 1 and 2 messages may be in flight to the broker at once,
    /// waiting for their acknowledgement. Default 20, because Mosquitto by
    /// default accepts only 20 QoS 2 messages in flight from an MQTT 3.1.1
    /// client and silently drops the rest. On MQTT 5.0 the broker's Receive
    /// Maximum lowers it.
    #[serde(default = "default_inflight_window")]
    #[schemars(range(min = 1))]
    pub inflight_window: u16,
    /// How many received messages may wait for the pipeline at once, not
    /// yet acknowledged; the broker holds back further QoS 1 and 2 messages
    /// until some are committed. Default 100.
    #[serde(default = "default_receive_maximum")]
    #[schemars(range(min = 1))]
    pub receive_maximum: u16,
    /// Whether the broker supports retained messages. MQTT 5.0 brokers say
    /// it when the client connects; set it to false for an MQTT 3.1.1 broker
    /// that has no retained messages (TagoIO, for example), so that retained
    /// sends follow `retain_unsupported` of the Send operation instead of
    /// being dropped by the broker. Default: as the broker says (3.1.1:
    /// supported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_supported: Option<bool>,
}

/// TLS settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct TlsConfig {
    /// PEM file of the certificate authorities to trust. Default: the
    /// system's trusted roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub ca_file: Option<String>,
    /// PEM file of the client certificate, for brokers that authenticate
    /// clients by certificate (mutual TLS); needs `client_key_file`.
    /// Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub client_cert_file: Option<String>,
    /// PEM file of the client's private key; needs `client_cert_file`.
    /// Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub client_key_file: Option<String>,
    /// ALPN protocols to offer, for example `x-amzn-mqtt-ca` for AWS IoT
    /// Core on port 443. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alpn: Vec<String>,
}

/// Reconnect delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ReconnectConfig {
    /// First delay before reconnecting, in milliseconds; it doubles after
    /// each failed attempt. Default 100.
    #[serde(default = "default_reconnect_min_ms")]
    #[schemars(range(min = 1))]
    pub min_delay_ms: u32,
    /// Longest delay between reconnect attempts, in milliseconds. Default
    /// 30000.
    #[serde(default = "default_reconnect_max_ms")]
    #[schemars(range(min = 1))]
    pub max_delay_ms: u32,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            min_delay_ms: default_reconnect_min_ms(),
            max_delay_ms: default_reconnect_max_ms(),
        }
    }
}

/// The last will message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct WillConfig {
    /// Topic the will is published to. No wildcards.
    pub topic: TopicName,
    /// Payload as text (UTF-8). Use `payload_base64` for binary payloads.
    /// Default: empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// Payload as base64, for binary payloads; not together with `payload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
    /// QoS of the will message: 0, 1 or 2. Default 0.
    #[serde(default)]
    pub qos: QoS,
    /// Whether the will message is retained. Default false.
    #[serde(default)]
    pub retain: bool,
    /// MQTT 5.0: seconds the broker waits after the connection drops before
    /// publishing the will. Ignored on 3.1.1. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_interval_secs: Option<u32>,
    /// MQTT 5.0: lifetime of the will message in seconds. Ignored on 3.1.1.
    /// Default: no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_expiry_secs: Option<u32>,
    /// MQTT 5.0: content type of the will payload, for example
    /// `application/json`. Ignored on 3.1.1. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

fn default_true() -> bool {
    true
}
fn default_keep_alive_secs() -> u16 {
    60
}
fn default_connect_timeout_ms() -> u32 {
    10_000
}
fn default_reconnect_min_ms() -> u32 {
    100
}
fn default_reconnect_max_ms() -> u32 {
    30_000
}
fn default_send_timeout_ms() -> u32 {
    30_000
}
fn default_inflight_window() -> u16 {
    20
}
fn default_receive_maximum() -> u16 {
    100
}

impl ConnectionConfig {
    /// A configuration with `url` and every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        ConnectionConfig {
            url: url.into(),
            mqtt_version: MqttVersion::default(),
            client_id: None,
            username: None,
            password: None,
            keep_alive_secs: default_keep_alive_secs(),
            clean_start: true,
            session_expiry_secs: 0,
            connect_timeout_ms: default_connect_timeout_ms(),
            tls: None,
            reconnect: ReconnectConfig::default(),
            send_timeout_ms: default_send_timeout_ms(),
            will: None,
            inflight_window: default_inflight_window(),
            receive_maximum: default_receive_maximum(),
            retain_supported: None,
        }
    }

    /// The options the host's MQTT client connects with.
    ///
    /// The URL is normalized to `scheme://host:port` (the default port made
    /// explicit); an `mqtts://` URL without `tls` gets default TLS options.
    /// On an unvalidated configuration, an unparsable URL is passed through
    /// as it is and an invalid base64 will payload becomes empty.
    pub fn connect_options(&self) -> ConnectOptions {
        let parsed = BrokerUrl::parse(&self.url).ok();
        let url = parsed
            .as_ref()
            .map_or_else(|| self.url.clone(), ToString::to_string);
        let is_tls = parsed.as_ref().is_some_and(|u| u.tls);
        let tls = match (&self.tls, is_tls) {
            (Some(tls), _) => Some(TlsOptions {
                ca_file: tls.ca_file.clone(),
                client_cert_file: tls.client_cert_file.clone(),
                client_key_file: tls.client_key_file.clone(),
                alpn: tls.alpn.clone(),
            }),
            (None, true) => Some(TlsOptions::default()),
            (None, false) => None,
        };
        ConnectOptions {
            url,
            protocol: self.mqtt_version,
            client_id: self.client_id.clone().unwrap_or_default(),
            username: self.username.clone(),
            password: self.password.clone(),
            keep_alive: Duration::from_secs(u64::from(self.keep_alive_secs)),
            clean_start: self.clean_start,
            session_expiry: self.session_expiry_secs,
            connect_timeout: Duration::from_millis(u64::from(self.connect_timeout_ms)),
            tls,
            reconnect_min: Duration::from_millis(u64::from(self.reconnect.min_delay_ms)),
            reconnect_max: Duration::from_millis(u64::from(
                self.reconnect.max_delay_ms.max(self.reconnect.min_delay_ms),
            )),
            send_timeout: Duration::from_millis(u64::from(self.send_timeout_ms)),
            will: self.will.as_ref().map(WillConfig::to_will),
            inflight_window: self.inflight_window.max(1),
            receive_maximum: self.receive_maximum.max(1),
        }
    }

    /// The broker's capabilities with what this configuration declares
    /// applied: `retain_supported: false` clears Retain Available.
    ///
    /// Send planning ([`crate::send::plan`]) takes the result, so a 3.1.1
    /// broker known to lack retain is treated like a 5.0 broker that says so.
    pub fn effective_capabilities(&self, mut caps: Capabilities) -> Capabilities {
        if self.retain_supported == Some(false) {
            caps.retain_available = false;
        }
        caps
    }
}

impl WillConfig {
    /// The will payload: `payload` as UTF-8, else `payload_base64` decoded
    /// (empty if it is not valid base64), else empty.
    pub fn payload_bytes(&self) -> Vec<u8> {
        match (&self.payload, &self.payload_base64) {
            (Some(text), _) => text.as_bytes().to_vec(),
            (None, Some(b64)) => decode_base64(b64).unwrap_or_default(),
            (None, None) => Vec::new(),
        }
    }

    fn to_will(&self) -> Will {
        Will {
            topic: self.topic.clone(),
            payload: self.payload_bytes(),
            qos: self.qos,
            retain: self.retain,
            delay_interval: self.delay_interval_secs,
            properties: MessageProperties {
                message_expiry: self.message_expiry_secs,
                content_type: self.content_type.clone(),
                ..MessageProperties::default()
            },
        }
    }
}

/// Decodes standard base64 (RFC 4648, alphabet `A-Z a-z 0-9 + /`), with or
/// without `=` padding. The error names the first offending character.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    let trimmed = text.trim_end_matches('=');
    if text.len() - trimmed.len() > 2 {
        return Err("too much '=' padding at the end".to_owned());
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for (position, c) in trimmed.chars().enumerate() {
        let value = match c {
            'A'..='Z' => c as u32 - 'A' as u32,
            'a'..='z' => c as u32 - 'a' as u32 + 26,
            '0'..='9' => c as u32 - '0' as u32 + 52,
            '+' => 62,
            '/' => 63,
            _ => return Err(format!("invalid character {c:?} at position {position}")),
        };
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    // 6 leftover bits mean one character too many: no byte ends there.
    if bits >= 6 {
        return Err("the length is not a valid base64 length".to_owned());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Send

/// What the Send operation does with each document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SendAction {
    /// Publish the document's payload.
    #[default]
    Publish,
    /// Clear the topic's retained message: publish an empty retained
    /// payload; the document's payload is ignored.
    Clear,
}

/// What to do with a retained send when the broker does not support
/// retained messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetainUnsupported {
    /// Fail the document with an error that says so.
    #[default]
    Error,
    /// Send the message without the retain flag and log a warning.
    Strip,
}

/// MQTT 5.0 Payload Format Indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// Unspecified bytes (indicator 0).
    Bytes,
    /// UTF-8 text (indicator 1); payloads that are not valid UTF-8 fail.
    Utf8,
}

impl PayloadFormat {
    /// The indicator value: 0 bytes, 1 UTF-8.
    pub fn indicator(self) -> u8 {
        match self {
            PayloadFormat::Bytes => 0,
            PayloadFormat::Utf8 => 1,
        }
    }
}

/// The Send operation: publishes each document as one MQTT message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
#[schemars(title = "MQTT Send operation")]
pub struct SendConfig {
    /// Topic to publish to, for example `sensors/kitchen/temperature`. No
    /// wildcards (`+`, `#`). A document's `mqtt.topic` property overrides it
    /// when `overrides.topic` is true.
    pub topic: TopicName,
    /// QoS: 0 at most once, 1 at least once, 2 exactly once. Default 1. A
    /// document's `mqtt.qos` property overrides it when `overrides.qos` is
    /// true.
    #[serde(default = "default_send_qos")]
    pub qos: QoS,
    /// Publish as retained messages: the broker keeps the last one of each
    /// topic and hands it to future subscribers. Default false. A document's
    /// `mqtt.retained` property overrides it when `overrides.retained` is
    /// true.
    #[serde(default)]
    pub retained: bool,
    /// "publish" sends each document's payload; "clear" publishes an empty
    /// retained payload, which deletes the topic's retained message. Default
    /// "publish".
    #[serde(default)]
    pub action: SendAction,
    /// What to do with a retained send when the broker does not support
    /// retained messages: "error" fails the document with a clear error,
    /// "strip" sends it without the retain flag and logs a warning. A
    /// "clear" action always fails there. Default "error".
    #[serde(default)]
    pub retain_unsupported: RetainUnsupported,
    /// MQTT 5.0 message properties. Ignored on 3.1.1. Default none.
    #[serde(default)]
    pub properties: SendProperties,
    /// Which document properties may override this configuration, per
    /// document. A document that sets a property whose override is off
    /// fails. Default: all allowed.
    #[serde(default)]
    pub overrides: Overrides,
}

fn default_send_qos() -> QoS {
    QoS::AtLeastOnce
}

/// MQTT 5.0 properties of sent messages.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct SendProperties {
    /// Content type of the payload, for example `application/json`. Default
    /// none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Payload format: "bytes" or "utf8" (the payload is UTF-8 text; a
    /// document whose payload is not fails). Default: not sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_format: Option<PayloadFormat>,
    /// Lifetime of the message in seconds: the broker drops it when it could
    /// not be delivered in time. Default: no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_expiry_secs: Option<u32>,
    /// Topic the receiver should reply to (request / response). No
    /// wildcards. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_topic: Option<TopicName>,
    /// Correlation data, as text, that the receiver echoes in its reply.
    /// Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_data: Option<String>,
    /// User properties: name and value pairs sent with every message, in
    /// order; names may repeat. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_properties: Vec<UserProperty>,
}

impl SendProperties {
    /// The model's message properties for these settings.
    pub fn to_message_properties(&self) -> MessageProperties {
        MessageProperties {
            payload_format: self.payload_format.map(PayloadFormat::indicator),
            message_expiry: self.message_expiry_secs,
            content_type: self.content_type.clone(),
            response_topic: self.response_topic.as_ref().map(ToString::to_string),
            correlation_data: self
                .correlation_data
                .as_ref()
                .map(|text| text.as_bytes().to_vec()),
            user_properties: self
                .user_properties
                .iter()
                .map(|p| (p.name.clone(), p.value.clone()))
                .collect(),
        }
    }
}

/// One MQTT 5.0 user property.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct UserProperty {
    /// Property name.
    pub name: String,
    /// Property value.
    pub value: String,
}

/// Which document properties may override the Send configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Overrides {
    /// A document's `mqtt.topic` may replace `topic`. Default true.
    #[serde(default = "default_true")]
    pub topic: bool,
    /// A document's `mqtt.qos` may replace `qos`. Default true.
    #[serde(default = "default_true")]
    pub qos: bool,
    /// A document's `mqtt.retained` may replace `retained`. Default true.
    #[serde(default = "default_true")]
    pub retained: bool,
    /// A document's MQTT 5.0 properties (`mqtt.message-expiry`,
    /// `mqtt.content-type`, `mqtt.payload-format`, `mqtt.response-topic`,
    /// `mqtt.correlation-data`, `mqtt.user-properties`) may replace those of
    /// `properties`; its user properties are added after the configured
    /// ones. Default true.
    #[serde(default = "default_true")]
    pub properties: bool,
}

impl Default for Overrides {
    fn default() -> Self {
        Overrides {
            topic: true,
            qos: true,
            retained: true,
            properties: true,
        }
    }
}

impl SendConfig {
    /// A configuration publishing to `topic` with every other field at its
    /// default.
    pub fn new(topic: TopicName) -> Self {
        SendConfig {
            topic,
            qos: default_send_qos(),
            retained: false,
            action: SendAction::default(),
            retain_unsupported: RetainUnsupported::default(),
            properties: SendProperties::default(),
            overrides: Overrides::default(),
        }
    }
}

// ---------------------------------------------------------------------------
// Listen

/// What the Listen operation does with retained messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetainedPolicy {
    /// Deliver retained messages like any other, marked `mqtt.retained`.
    #[default]
    Deliver,
    /// Skip retained messages sent on subscribe: only live messages.
    Skip,
    /// Take only retained messages (a snapshot of the topics' last values)
    /// and finish after `quiet_ms` without a new one.
    Only,
}

/// The Listen operation: subscribes and turns each message into a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
#[schemars(title = "MQTT Listen operation")]
pub struct ListenConfig {
    /// Topic filters to subscribe to, at least one.
    #[schemars(length(min = 1))]
    pub subscriptions: Vec<SubscriptionConfig>,
    /// Share the messages with the other subscribers of this group, each
    /// message going to one of them: subscribes as
    /// `$share/{shared_group}/{filter}`. No `/`, `+` or `#`. Shared
    /// subscriptions never receive retained messages on subscribe. Default
    /// none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_group: Option<String>,
    /// Retained messages: "deliver" them like any other, "skip" them (only
    /// live messages), or take "only" them and finish after `quiet_ms`
    /// without a new one. Default "deliver".
    #[serde(default)]
    pub retained: RetainedPolicy,
    /// With `retained: "only"`: the operation finishes after this many
    /// milliseconds without a retained message. Default 1000.
    #[serde(default = "default_quiet_ms")]
    pub quiet_ms: u32,
    /// Most documents handed to the pipeline at once. Default 100.
    #[serde(default = "default_max_batch")]
    #[schemars(range(min = 1))]
    pub max_batch: u32,
}

/// One subscription of the Listen operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct SubscriptionConfig {
    /// Topic filter: `+` matches one level, `#` (last) matches every level
    /// below, for example `sensors/+/temperature` or `sensors/#`.
    pub filter: TopicFilter,
    /// Highest QoS to receive at: 0, 1 or 2. Default 1.
    #[serde(default = "default_send_qos")]
    pub qos: QoS,
    /// MQTT 5.0: do not receive the messages this client publishes itself.
    /// Not allowed on shared subscriptions. Default false.
    #[serde(default)]
    pub no_local: bool,
    /// MQTT 5.0: keep the retain flag of forwarded messages as the publisher
    /// set it (otherwise only messages sent on subscribe are marked
    /// retained). Default false.
    #[serde(default)]
    pub retain_as_published: bool,
    /// MQTT 5.0 Retain Handling: 0 send retained messages on subscribe, 1
    /// only for a new subscription, 2 never. `retained: "skip"` sets 2.
    /// Default 0.
    #[serde(default)]
    pub retain_handling: RetainHandling,
}

fn default_quiet_ms() -> u32 {
    1000
}
fn default_max_batch() -> u32 {
    100
}

impl SubscriptionConfig {
    /// A subscription to `filter` with every other field at its default.
    pub fn new(filter: TopicFilter) -> Self {
        SubscriptionConfig {
            filter,
            qos: default_send_qos(),
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::default(),
        }
    }
}

impl ListenConfig {
    /// A configuration subscribing to `filters` with every other field at
    /// its default.
    pub fn new(filters: impl IntoIterator<Item = TopicFilter>) -> Self {
        ListenConfig {
            subscriptions: filters.into_iter().map(SubscriptionConfig::new).collect(),
            shared_group: None,
            retained: RetainedPolicy::default(),
            quiet_ms: default_quiet_ms(),
            max_batch: default_max_batch(),
        }
    }

    /// The subscriptions to make on a broker speaking `protocol`.
    ///
    /// - `shared_group` prefixes each filter with `$share/{group}/`.
    /// - On 5.0, `retained: "skip"` asks for Retain Handling 2, so the broker
    ///   sends no retained messages; on 3.1.1 the Listen state filters them
    ///   out instead ([`crate::listen::ListenState`]).
    /// - On 3.1.1 the 5.0-only options are left at their neutral values.
    ///
    /// # Errors
    ///
    /// `invalid-config` when a shared filter made with `shared_group` is not
    /// a valid filter, which validation rules out (a group with U+0000, or
    /// a filter too long with the prefix).
    pub fn subscriptions(&self, protocol: MqttVersion) -> Result<Vec<Subscription>, Error> {
        self.subscriptions
            .iter()
            .map(|s| {
                let filter = match &self.shared_group {
                    Some(group) => parse_topic_filter(&format!("$share/{group}/{}", s.filter))?,
                    None => s.filter.clone(),
                };
                Ok(match protocol {
                    MqttVersion::V5 => Subscription {
                        filter,
                        qos: s.qos,
                        no_local: s.no_local,
                        retain_as_published: s.retain_as_published,
                        retain_handling: if self.retained == RetainedPolicy::Skip {
                            RetainHandling::Never.value()
                        } else {
                            s.retain_handling.value()
                        },
                    },
                    MqttVersion::V311 => Subscription {
                        filter,
                        qos: s.qos,
                        no_local: false,
                        retain_as_published: false,
                        retain_handling: 0,
                    },
                })
            })
            .collect()
    }

    /// How long the retained snapshot waits without a retained message.
    pub fn quiet(&self) -> Duration {
        Duration::from_millis(u64::from(self.quiet_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVsbG8").unwrap(), b"hello");
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(decode_base64("AP8=").unwrap(), [0, 255]);
        assert_eq!(
            decode_base64("aGV!").unwrap_err(),
            "invalid character '!' at position 3"
        );
        assert!(decode_base64("a").is_err());
        assert!(decode_base64("aa===").is_err());
    }

    #[test]
    fn connect_options_apply_defaults() {
        let o = ConnectionConfig::new("mqtts://h").connect_options();
        assert_eq!(o.url, "mqtts://h:8883");
        assert_eq!(o.protocol, MqttVersion::V5);
        assert_eq!(o.client_id, "");
        assert_eq!(o.keep_alive, Duration::from_secs(60));
        assert!(o.clean_start);
        assert_eq!(o.connect_timeout, Duration::from_secs(10));
        assert_eq!(o.tls, Some(TlsOptions::default()));
        assert_eq!(o.reconnect_min, Duration::from_millis(100));
        assert_eq!(o.reconnect_max, Duration::from_secs(30));
        assert_eq!((o.inflight_window, o.receive_maximum), (20, 100));
        assert_eq!(o.will, None);
        assert_eq!(
            ConnectionConfig::new("mqtt://h").connect_options().tls,
            None
        );
    }

    #[test]
    fn will_payload_from_text_or_base64() {
        let mut will = WillConfig {
            topic: "t".parse().unwrap(),
            payload: None,
            payload_base64: Some("AP8=".into()),
            qos: QoS::ExactlyOnce,
            retain: true,
            delay_interval_secs: Some(5),
            message_expiry_secs: Some(60),
            content_type: Some("text/plain".into()),
        };
        assert_eq!(will.payload_bytes(), [0, 255]);
        let w = will.to_will();
        assert_eq!(w.delay_interval, Some(5));
        assert_eq!(w.properties.message_expiry, Some(60));
        assert_eq!(w.properties.content_type.as_deref(), Some("text/plain"));
        will.payload = Some("bye".into());
        assert_eq!(will.payload_bytes(), b"bye");
    }

    #[test]
    fn retain_supported_false_clears_retain_available() {
        let caps = Capabilities::defaults(MqttVersion::V311);
        let mut config = ConnectionConfig::new("mqtt://h");
        assert!(config.effective_capabilities(caps.clone()).retain_available);
        config.retain_supported = Some(false);
        assert!(!config.effective_capabilities(caps).retain_available);
    }

    #[test]
    fn subscriptions_apply_share_and_skip() {
        let mut config = ListenConfig::new(["a/#".parse().unwrap()]);
        config.shared_group = Some("g".into());
        config.retained = RetainedPolicy::Skip;
        config.subscriptions[0].no_local = true;
        let v5 = config.subscriptions(MqttVersion::V5).unwrap();
        assert_eq!(v5[0].filter, "$share/g/a/#");
        assert_eq!(v5[0].retain_handling, 2);
        assert_eq!(v5[0].qos, QoS::AtLeastOnce);
        assert!(v5[0].no_local);
        let v3 = config.subscriptions(MqttVersion::V311).unwrap();
        assert_eq!(v3[0].filter, "$share/g/a/#");
        assert_eq!(v3[0].retain_handling, 0);
        assert!(!v3[0].no_local);
    }

    #[test]
    fn a_shared_filter_that_is_not_valid_fails() {
        let mut config = ListenConfig::new(["a/#".parse().unwrap()]);
        config.shared_group = Some("g\0".into());
        let e = config.subscriptions(MqttVersion::V5).unwrap_err();
        assert_eq!(e.code, crate::model::ErrorCode::InvalidConfig);
        assert!(
            e.message.starts_with("invalid topic filter '$share/g"),
            "{e}"
        );
    }
}
