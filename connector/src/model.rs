//! The MQTT message model shared by the connector and the host.
//!
//! These types mirror the `mqtt` interface of the WIT world. The connector's
//! logic and the host's MQTT capability both work with them natively, so
//! each side converts to and from the generated WIT types in one place.

use std::fmt;
use std::time::Duration;

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

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// MQTT 3.1.1.
    V311,
    /// MQTT 5.0.
    #[default]
    V5,
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
    pub topic: String,
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
    pub protocol: Protocol,
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
    pub protocol: Protocol,
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
    pub fn defaults(protocol: Protocol) -> Self {
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
    pub topic: String,
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
    pub filter: String,
    /// Maximum QoS asked for.
    pub qos: QoS,
    /// 5.0 No Local.
    pub no_local: bool,
    /// 5.0 Retain As Published.
    pub retain_as_published: bool,
    /// 5.0 Retain Handling: 0, 1 or 2.
    pub retain_handling: u8,
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
