//! The MQTT message model shared by the connector and the host.
//!
//! These types mirror the `mqtt` interface of the WIT world. The connector's
//! logic and the host's MQTT capability both work with them natively; both
//! sides convert to and from their generated WIT types with the one
//! definition in [`crate::wit`].
//!
//! What the connector sends carries parsed topics: an [`Outgoing`] message's
//! topic and a [`Will`]'s are [`TopicName`]s, a [`Subscription`]'s filter a
//! [`TopicFilter`]. Strings become those types once, where they enter
//! (configurations, documents, the WIT boundary: [`parse_topic_name`] and
//! friends), and are not checked again after. What a broker delivers
//! ([`Incoming`], [`Granted`]) keeps plain strings: it is reported, not
//! sent on.

use std::fmt;
use std::time::Duration;

pub use mqtt_topic::{MqttVersion, TopicFilter, TopicName};

/// Quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    /// QoS 0: at most once.
    #[default]
    AtMostOnce,
    /// QoS 1: at least once.
    AtLeastOnce,
    /// QoS 2: exactly once.
    ExactlyOnce,
}

impl QoS {
    /// The QoS of a level number, if it is 0, 1 or 2.
    pub fn from_level(level: u8) -> Option<QoS> {
        match level {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }

    /// The level number: 0, 1 or 2.
    pub fn level(self) -> u8 {
        match self {
            QoS::AtMostOnce => 0,
            QoS::AtLeastOnce => 1,
            QoS::ExactlyOnce => 2,
        }
    }
}

/// MQTT 5.0 message properties. Ignored on 3.1.1.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageProperties {
    /// Payload Format Indicator: 0 bytes, 1 UTF-8 text.
    pub payload_format: Option<u8>,
    /// Message Expiry Interval in seconds.
    pub message_expiry: Option<u32>,
    /// Content Type.
    pub content_type: Option<String>,
    /// Response Topic.
    pub response_topic: Option<String>,
    /// Correlation Data.
    pub correlation_data: Option<Vec<u8>>,
    /// User Properties, in order; names may repeat.
    pub user_properties: Vec<(String, String)>,
}

/// TLS settings for `mqtts://` URLs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsOptions {
    /// PEM file of the certificate authorities to trust; system roots if none.
    pub ca_file: Option<String>,
    /// PEM file of the client certificate.
    pub client_cert_file: Option<String>,
    /// PEM file of the client's private key.
    pub client_key_file: Option<String>,
    /// ALPN protocols to offer.
    pub alpn: Vec<String>,
}

/// The last will a broker publishes when the client drops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic of the will message.
    pub topic: TopicName,
    /// Payload.
    pub payload: Vec<u8>,
    /// QoS.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// 5.0 Will Delay Interval in seconds.
    pub delay_interval: Option<u32>,
    /// 5.0 properties of the will message.
    pub properties: MessageProperties,
}

/// How to connect to a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    /// Protocol version.
    pub protocol: MqttVersion,
    /// Client identifier; empty lets a 5.0 broker assign one.
    pub client_id: String,
    /// Username.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Keep alive.
    pub keep_alive: Duration,
    /// Start a new session (3.1.1: clean session).
    pub clean_start: bool,
    /// 5.0 Session Expiry Interval in seconds.
    pub session_expiry: u32,
    /// How long to wait for the CONNACK.
    pub connect_timeout: Duration,
    /// TLS settings, for `mqtts://`.
    pub tls: Option<TlsOptions>,
    /// First reconnect delay; doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// How long a publish waits for a lost connection to come back; zero
    /// fails it as soon as the connection is lost.
    pub send_timeout: Duration,
    /// The last will.
    pub will: Option<Will>,
    /// QoS 1 and 2 messages in flight to the broker at most.
    pub inflight_window: u16,
    /// Messages received and not yet acknowledged at most.
    pub receive_maximum: u16,
}

/// What the broker said it supports, from its CONNACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// The protocol in use.
    pub protocol: MqttVersion,
    /// Whether the broker resumed an earlier session.
    pub session_present: bool,
    /// Retain Available; true on 3.1.1, where a broker cannot say.
    pub retain_available: bool,
    /// Maximum QoS.
    pub maximum_qos: QoS,
    /// Wildcard Subscription Available.
    pub wildcard_subscription_available: bool,
    /// Shared Subscription Available.
    pub shared_subscription_available: bool,
    /// Subscription Identifiers Available.
    pub subscription_identifiers_available: bool,
    /// Maximum Packet Size, if the broker set one.
    pub maximum_packet_size: Option<u32>,
    /// Topic Alias Maximum.
    pub topic_alias_maximum: u16,
    /// The broker's Receive Maximum.
    pub receive_maximum: u16,
}

impl Capabilities {
    /// What a broker supports when it says nothing: everything, as MQTT 5.0
    /// defines for absent CONNACK properties, and as a 3.1.1 broker is
    /// assumed to.
    pub fn defaults(protocol: MqttVersion) -> Self {
        Capabilities {
            protocol,
            session_present: false,
            retain_available: true,
            maximum_qos: QoS::ExactlyOnce,
            wildcard_subscription_available: true,
            shared_subscription_available: true,
            subscription_identifiers_available: true,
            maximum_packet_size: None,
            topic_alias_maximum: 0,
            receive_maximum: u16::MAX,
        }
    }
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Topic name.
    pub topic: TopicName,
    /// Payload.
    pub payload: Vec<u8>,
    /// QoS.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// 5.0 properties.
    pub properties: MessageProperties,
}

/// One subscription to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Topic filter, possibly `$share/{group}/{filter}`.
    pub filter: TopicFilter,
    /// Maximum QoS asked for.
    pub qos: QoS,
    /// 5.0 No Local.
    pub no_local: bool,
    /// 5.0 Retain As Published.
    pub retain_as_published: bool,
    /// 5.0 Retain Handling: 0, 1 or 2.
    pub retain_handling: u8,
}

impl Outgoing {
    /// The size of this message's PUBLISH packet on `protocol`, as a broker
    /// counts it against its Maximum Packet Size (see
    /// [`publish_packet_size`]).
    pub fn packet_size(&self, protocol: MqttVersion) -> u64 {
        publish_packet_size(
            protocol,
            self.topic.as_str(),
            self.qos,
            &self.properties,
            self.payload.len(),
        )
    }
}

/// The size in bytes of a PUBLISH packet on the wire: fixed header,
/// topic, packet identifier (QoS 1 and 2), the MQTT 5.0 properties, and a
/// payload of `payload_len` bytes.
///
/// A broker disconnects a client whose packet exceeds its Maximum Packet
/// Size, which would fail every message in flight, so both the connector
/// (per document) and the host (per message) compare with it first.
pub fn publish_packet_size(
    protocol: MqttVersion,
    topic: &str,
    qos: QoS,
    properties: &MessageProperties,
    payload_len: usize,
) -> u64 {
    // An MQTT string or binary field: a 2-byte length, then the bytes.
    let field = |len: usize| 2 + len as u64;
    let mut variable = field(topic.len());
    if qos != QoS::AtMostOnce {
        variable += 2; // packet identifier
    }
    if protocol == MqttVersion::V5 {
        let p = properties;
        let mut props = 0u64;
        props += p.payload_format.map_or(0, |_| 2);
        props += p.message_expiry.map_or(0, |_| 5);
        props += p.content_type.as_ref().map_or(0, |t| 1 + field(t.len()));
        props += p.response_topic.as_ref().map_or(0, |t| 1 + field(t.len()));
        props += p
            .correlation_data
            .as_ref()
            .map_or(0, |d| 1 + field(d.len()));
        props += p
            .user_properties
            .iter()
            .map(|(n, v)| 1 + field(n.len()) + field(v.len()))
            .sum::<u64>();
        variable += varint_len(props) + props;
    }
    let remaining = variable + payload_len as u64;
    1 + varint_len(remaining) + remaining
}

/// Bytes of a Variable Byte Integer encoding `n`.
fn varint_len(n: u64) -> u64 {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// The broker's answer for one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    /// The filter it answers.
    pub filter: String,
    /// The QoS granted, or `None` when refused.
    pub qos: Option<QoS>,
    /// The SUBACK reason code.
    pub reason_code: u8,
}

/// One message received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// Delivery id, for acknowledging it.
    pub id: u64,
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// QoS it was delivered at.
    pub qos: QoS,
    /// RETAIN flag as delivered.
    pub retain: bool,
    /// DUP flag.
    pub duplicate: bool,
    /// 5.0 properties.
    pub properties: MessageProperties,
    /// 5.0 Subscription Identifiers.
    pub subscription_ids: Vec<u32>,
}

/// What kind of failure an [`Error`] is; mirrors the WIT `error-code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The configuration is invalid.
    InvalidConfig,
    /// One document is invalid.
    InvalidDocument,
    /// The broker could not be reached or the connection was lost.
    ConnectionFailed,
    /// The broker refused the credentials or the action.
    NotAuthorized,
    /// No answer in time.
    Timeout,
    /// The broker answered with a failure reason code.
    BrokerRejected,
    /// The broker does not support what was asked.
    Unsupported,
    /// Already closed.
    Closed,
    /// A fault of the connector or the host.
    Internal,
}

/// An error of an operation or of one document; mirrors the WIT `error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The kind of failure.
    pub code: ErrorCode,
    /// What went wrong and where, lowercase, without a final period.
    pub message: String,
    /// The MQTT reason code the broker sent, if any.
    pub reason_code: Option<u8>,
    /// The index of the document in its batch, for document errors.
    pub document_index: Option<u32>,
}

impl Error {
    /// An error of `code` with `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            reason_code: None,
            document_index: None,
        }
    }

    /// The same error, carrying the broker's reason code.
    pub fn with_reason_code(mut self, reason_code: u8) -> Self {
        self.reason_code = Some(reason_code);
        self
    }

    /// The same error, for the document at `index` of its batch.
    pub fn for_document(mut self, index: usize) -> Self {
        self.document_index = Some(u32::try_from(index).unwrap_or(u32::MAX));
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(index) = self.document_index {
            write!(f, "document {index}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(code) = self.reason_code {
            write!(f, " (reason code 0x{code:02X} {})", reason_code_name(code))?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// Parses the topic name of a message to publish that arrived as a string;
/// fails with `invalid-document`, so that only that message fails.
pub fn parse_topic_name(topic: &str) -> Result<TopicName, Error> {
    topic.parse().map_err(|e| {
        Error::new(
            ErrorCode::InvalidDocument,
            format!("invalid topic name '{topic}': {e}"),
        )
    })
}

/// Parses a will topic that arrived as a string; fails with
/// `invalid-config`.
pub fn parse_will_topic(topic: &str) -> Result<TopicName, Error> {
    topic.parse().map_err(|e| {
        Error::new(
            ErrorCode::InvalidConfig,
            format!("invalid will topic '{topic}': {e}"),
        )
    })
}

/// Parses a topic filter that arrived as a string (or was composed, as a
/// shared subscription); fails with `invalid-config`.
pub fn parse_topic_filter(filter: &str) -> Result<TopicFilter, Error> {
    filter.parse().map_err(|e| {
        Error::new(
            ErrorCode::InvalidConfig,
            format!("invalid topic filter '{filter}': {e}"),
        )
    })
}

/// The name the MQTT 5.0 specification gives a reason code (section 2.4).
pub fn reason_code_name(code: u8) -> &'static str {
    match code {
        0x00 => "Success",
        0x01 => "Granted QoS 1",
        0x02 => "Granted QoS 2",
        0x04 => "Disconnect with Will Message",
        0x10 => "No matching subscribers",
        0x11 => "No subscription existed",
        0x18 => "Continue authentication",
        0x19 => "Re-authenticate",
        0x80 => "Unspecified error",
        0x81 => "Malformed Packet",
        0x82 => "Protocol Error",
        0x83 => "Implementation specific error",
        0x84 => "Unsupported Protocol Version",
        0x85 => "Client Identifier not valid",
        0x86 => "Bad User Name or Password",
        0x87 => "Not authorized",
        0x88 => "Server unavailable",
        0x89 => "Server busy",
        0x8A => "Banned",
        0x8B => "Server shutting down",
        0x8C => "Bad authentication method",
        0x8D => "Keep Alive timeout",
        0x8E => "Session taken over",
        0x8F => "Topic Filter invalid",
        0x90 => "Topic Name invalid",
        0x91 => "Packet Identifier in use",
        0x92 => "Packet Identifier not found",
        0x93 => "Receive Maximum exceeded",
        0x94 => "Topic Alias invalid",
        0x95 => "Packet too large",
        0x96 => "Message rate too high",
        0x97 => "Quota exceeded",
        0x98 => "Administrative action",
        0x99 => "Payload format invalid",
        0x9A => "Retain not supported",
        0x9B => "QoS not supported",
        0x9C => "Use another server",
        0x9D => "Server moved",
        0x9E => "Shared Subscriptions not supported",
        0x9F => "Connection rate exceeded",
        0xA0 => "Maximum connect time",
        0xA1 => "Subscription Identifiers not supported",
        0xA2 => "Wildcard Subscriptions not supported",
        _ => "unknown reason code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_levels_round_trip() {
        for level in 0..=2 {
            assert_eq!(QoS::from_level(level).map(QoS::level), Some(level));
        }
        assert_eq!(QoS::from_level(3), None);
    }

    #[test]
    fn boundary_parsers_name_what_was_wrong() {
        assert_eq!(parse_topic_name("a/b").unwrap(), "a/b");
        let e = parse_topic_name("a/+").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidDocument);
        assert_eq!(
            e.message,
            "invalid topic name 'a/+': topic names cannot contain wildcards: '+' found in level 2 of \"a/+\""
        );
        let e = parse_will_topic("").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        assert!(e.message.starts_with("invalid will topic '': "), "{e}");
        assert_eq!(parse_topic_filter("$share/g/a/#").unwrap(), "$share/g/a/#");
        let e = parse_topic_filter("a/#/b").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        assert!(
            e.message.starts_with("invalid topic filter 'a/#/b': "),
            "{e}"
        );
    }

    #[test]
    fn packet_size_counts_v5_properties() {
        let props = MessageProperties {
            payload_format: Some(1),
            message_expiry: Some(1),
            content_type: Some("ab".into()),
            response_topic: None,
            correlation_data: Some(vec![1]),
            user_properties: vec![("k".into(), "v".into())],
        };
        // Topic 3 + properties (2 + 5 + 5 + 4 + 7 = 23, + 1 for their
        // length) = 27 remaining, + 2 fixed header.
        assert_eq!(
            publish_packet_size(MqttVersion::V5, "a", QoS::AtMostOnce, &props, 0),
            29
        );
        assert_eq!(
            publish_packet_size(MqttVersion::V311, "a", QoS::AtMostOnce, &props, 0),
            5
        );
        assert_eq!(
            publish_packet_size(MqttVersion::V311, "a", QoS::AtMostOnce, &props, 200),
            206
        );
    }

    #[test]
    fn error_display_names_document_and_reason() {
        let e = Error::new(ErrorCode::BrokerRejected, "publish refused")
            .with_reason_code(0x87)
            .for_document(3);
        assert_eq!(
            e.to_string(),
            "document 3: publish refused (reason code 0x87 Not authorized)"
        );
    }
}
