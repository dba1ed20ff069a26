//! Framing and protocol mapping between a connection's bytes and the
//! broker's packets.
//!
//! # Layout
//!
//! - this file: framing ([`Frame`], [`Decoder`]: check, parse, advance),
//!   the fixed header, the checks every version shares, and the [`encode`]
//!   entry point;
//! - `connect`: the first packet, CONNECT, which fixes the version;
//! - `v5`: MQTT 5.0 packets, both ways;
//! - `properties`: the rules of 5.0 property blocks (allowed, at most once,
//!   values in range);
//! - `v311`: MQTT 3.1.1 packets, both ways, mapped to and from 5.0;
//! - `tests`: the codec's unit tests.
//!
//! # Framing
//!
//! [`Decoder::decode`] works in three steps, like rumqttc's own `check`:
//!
//! 1. **check**: rumqttc's `check` reads the fixed header. A remaining length
//!    above the configured maximum is rejected at once (0x95 Packet too
//!    large), before the body is buffered; an incomplete header or body
//!    returns `Ok(None)` without touching the buffer.
//! 2. **parse**: the whole frame is split off the buffer and parsed by the
//!    rumqttc codec for the connection's version (`mqttbytes::v4` for 3.1.1,
//!    `v5::mqttbytes::v5` for 5.0). rumqttc is written for clients, so this
//!    module adds the checks a server needs around it: reserved flag bits,
//!    CONNECT flags, QoS/DUP combinations, empty SUBSCRIBE/UNSUBSCRIBE,
//!    subscription option bits, U+0000 in names, property lengths that do not
//!    match the properties, and the 5.0 packets rumqttc reads wrongly (see
//!    the notes at each call).
//! 3. **advance**: the frame's bytes are consumed once it is complete, whether
//!    or not it parses; a parse error closes the connection anyway.
//!
//! The first packet must be CONNECT. Its protocol name and level fix the
//! version of the connection: "MQTT" level 4 is 3.1.1, level 5 is 5.0, and
//! anything else ("MQIsdp" 3.1 included) is [`DecodeError::UnsupportedProtocol`].
//!
//! # Mapping
//!
//! The broker core works only with the 5.0 packet types. 3.1.1 packets are
//! converted on the way in (no properties, reason codes Success, subscription
//! options with 3.1.1 semantics) and the 5.0 packets the server sends are
//! converted back in [`encode`]: properties are dropped, reason codes become
//! 3.1.1 return codes, packets 3.1.1 has no use for (DISCONNECT and AUTH
//! from a server) produce no bytes, and packets only clients send are an
//! [`EncodeError`].

use bytes::BytesMut;
use mqtt_topic::MqttVersion;
use rumqttc::mqttbytes as m4;
use rumqttc::v5::mqttbytes as mqtt5_bytes;
use rumqttc::v5::mqttbytes::v5 as mqtt5;
use rumqttc::v5::mqttbytes::v5::{Connect, DisconnectReasonCode, LastWill, Login, Packet};

mod connect;
mod properties;
mod v311;
mod v5;

#[cfg(test)]
mod tests;

/// One decoded unit from a connection's byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The CONNECT, which fixes the protocol version of the connection.
    Connect {
        /// The version the client speaks, from the CONNECT's protocol level.
        version: MqttVersion,
        /// The CONNECT (for 3.1.1: converted, with no properties).
        connect: Connect,
        /// The Will, if the Will Flag was set.
        will: Option<LastWill>,
        /// User name and password, if either flag was set. A flag that is not
        /// set reads as an empty string.
        login: Option<Login>,
    },
    /// Any later packet, as its 5.0 equivalent.
    Packet(Packet),
}

/// Why a byte stream could not be decoded; the connection closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// CONNECT with a protocol name or level we do not speak: answer with a
    /// 3.1.1 CONNACK 0x01 (see [`unsupported_protocol_connack`]) and close.
    #[error("unsupported protocol level {level}")]
    UnsupportedProtocol {
        /// The protocol level byte of the CONNECT.
        level: u8,
    },
    /// Malformed packet or protocol error; `reason` is the 5.0 reason code
    /// for the DISCONNECT (or CONNACK, before the session exists).
    #[error("{detail} ({reason:?})")]
    Invalid {
        /// 0x81 Malformed Packet, 0x82 Protocol Error or 0x95 Packet too large.
        reason: DisconnectReasonCode,
        /// What was wrong, citing the spec's statement id where there is one.
        detail: String,
    },
}

/// Why a packet could not be encoded. Messages say what is wrong; the
/// caller adds that a packet could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// rumqttc's 5.0 writer refused the packet.
    #[error(transparent)]
    V5(mqtt5_bytes::Error),
    /// rumqttc's 3.1.1 writer refused the packet.
    #[error(transparent)]
    V311(m4::Error),
    /// AUTH with properties: rumqttc would compute a wrong length.
    #[error("AUTH with properties (rumqttc computes a wrong length)")]
    AuthWithProperties,
    /// A topic does not fit an MQTT string.
    #[error("PUBLISH topic longer than 65535 bytes")]
    TopicTooLong,
    /// A 3.1.1 PUBLISH needs a UTF-8 topic.
    #[error("PUBLISH topic is not UTF-8")]
    TopicNotUtf8,
    /// A packet only clients send, which a 3.1.1 server never writes.
    #[error("packet type {0} is sent only by clients")]
    ClientPacket(u8),
}

/// Reads packets from a connection's buffer.
#[derive(Debug)]
pub struct Decoder {
    version: Option<MqttVersion>,
    max_packet_size: u32,
}

impl Decoder {
    /// A decoder for a new connection: the first packet must be CONNECT.
    /// Packets whose remaining length exceeds `max_packet_size` are refused.
    pub fn new(max_packet_size: u32) -> Self {
        Decoder {
            version: None,
            max_packet_size,
        }
    }

    /// The protocol version, once the CONNECT was read.
    pub fn version(&self) -> Option<MqttVersion> {
        self.version
    }

    /// Decodes the next packet from `buf`, consuming its bytes.
    /// `Ok(None)`: more bytes are needed (nothing was consumed).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let Some(&byte1) = buf.first() else {
            return Ok(None);
        };
        // Refuse a non-MQTT peer at its first byte instead of waiting for a
        // body whose "length" is arbitrary.
        if self.version.is_none() && byte1 >> 4 != CONNECT {
            return Err(protocol_error(
                "MQTT-3.1.0-1: the first packet must be CONNECT",
            ));
        }
        let frame_len = match mqtt5::check(buf.iter(), Some(self.max_packet_size)) {
            Ok(header) => header.frame_length(),
            Err(mqtt5_bytes::Error::InsufficientBytes(_)) => return Ok(None),
            Err(e) => return Err(v5::map_error("fixed header", e)),
        };
        // check() validated the remaining length: 1 to 4 bytes, the last one
        // without the continuation bit.
        let len_len = buf
            .iter()
            .skip(1)
            .take(4)
            .position(|b| b & 0x80 == 0)
            .map_or(4, |p| p + 1);
        let header = Header {
            byte1,
            len_len,
            remaining: frame_len.saturating_sub(1 + len_len),
        };
        let frame = buf.split_to(frame_len).freeze();
        match self.version {
            None => {
                let frame = connect::decode(&header, frame)?;
                if let Frame::Connect { version, .. } = &frame {
                    self.version = Some(*version);
                }
                Ok(Some(frame))
            }
            Some(MqttVersion::V5) => v5::decode(&header, frame).map(|p| Some(Frame::Packet(p))),
            Some(MqttVersion::V311) => v311::decode(&header, frame).map(|p| Some(Frame::Packet(p))),
        }
    }
}

/// Encodes `packet` for a connection speaking `version` and appends it to
/// `out`. Packets with no 3.1.1 equivalent (AUTH, a server DISCONNECT) append
/// nothing for 3.1.1. On error nothing is appended.
pub fn encode(
    version: MqttVersion,
    packet: &Packet,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let start = out.len();
    let result = match version {
        MqttVersion::V5 => v5::encode(packet, out),
        MqttVersion::V311 => v311::encode(packet, out),
    };
    if result.is_err() {
        // rumqttc's writers fail half way (e.g. PUBLISH with packet id 0).
        out.truncate(start);
    }
    result
}

/// The bytes of a 3.1.1 CONNACK refusing the protocol version (0x01).
pub fn unsupported_protocol_connack() -> [u8; 4] {
    [0x20, 0x02, 0x00, 0x01]
}

// ---------------------------------------------------------------------------
// Fixed header

const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const PUBREL: u8 = 6;
const PUBCOMP: u8 = 7;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const UNSUBSCRIBE: u8 = 10;
const UNSUBACK: u8 = 11;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;
const AUTH: u8 = 15;

/// The fixed header of a complete frame.
struct Header {
    byte1: u8,
    /// Number of Remaining Length bytes (1..=4).
    len_len: usize,
    remaining: usize,
}

impl Header {
    fn packet_type(&self) -> u8 {
        self.byte1 >> 4
    }

    fn flags(&self) -> u8 {
        self.byte1 & 0x0F
    }

    /// Offset of the variable header in the frame.
    fn body_start(&self) -> usize {
        1 + self.len_len
    }

    fn v4(&self) -> m4::FixedHeader {
        m4::FixedHeader::new(self.byte1, self.len_len, self.remaining)
    }

    fn v5(&self) -> mqtt5::FixedHeader {
        mqtt5::FixedHeader::new(self.byte1, self.len_len, self.remaining)
    }

    /// Reserved flag bits (MQTT-2.2.2-1/-2; 5.0: MQTT-2.1.3-1) and the
    /// PUBLISH flag combinations rumqttc accepts.
    fn check_flags(&self) -> Result<(), DecodeError> {
        let flags = self.flags();
        let expected = match self.packet_type() {
            PUBLISH => {
                let qos = (flags >> 1) & 0b11;
                if qos == 3 {
                    return Err(malformed("MQTT-3.3.1-4: PUBLISH with both QoS bits set"));
                }
                if qos == 0 && flags & 0b1000 != 0 {
                    return Err(malformed("MQTT-3.3.1-2: PUBLISH with DUP=1 and QoS 0"));
                }
                return Ok(());
            }
            PUBREL | SUBSCRIBE | UNSUBSCRIBE => 0b0010,
            _ => 0,
        };
        if flags != expected {
            return Err(malformed(format!(
                "MQTT-2.2.2-1 (5.0: MQTT-2.1.3-1): packet type {} with reserved flags {flags:#06b}",
                self.packet_type()
            )));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Checks every version shares

/// MQTT-2.3.1-1 (5.0: MQTT-2.2.1-3): SUBSCRIBE and UNSUBSCRIBE carry a
/// non-zero packet id. (rumqttc checks PUBLISH itself.)
fn check_pkid(pkid: u16, what: &str) -> Result<(), DecodeError> {
    if pkid == 0 {
        return Err(malformed(format!("MQTT-2.3.1-1: {what} with packet id 0")));
    }
    Ok(())
}

/// The frame must end where the fields rumqttc read end.
fn check_consumed(body: &[u8], end: usize, what: &str) -> Result<(), DecodeError> {
    if end != body.len() {
        return Err(malformed(format!(
            "{what}: fields take {end} bytes but the remaining length is {}",
            body.len()
        )));
    }
    Ok(())
}

/// A UTF-8 string kept as bytes by rumqttc (5.0 topic, will topic).
fn utf8_name(bytes: &[u8], what: &str) -> Result<(), DecodeError> {
    let s = std::str::from_utf8(bytes)
        .map_err(|_| malformed(format!("MQTT-1.5.3-1 / MQTT-1.5.4-1: {what} is not UTF-8")))?;
    no_nul(s, what)
}

/// MQTT-1.5.3-2 / MQTT-1.5.4-2: no U+0000 in a UTF-8 string.
fn no_nul(s: &str, what: &str) -> Result<(), DecodeError> {
    if s.contains('\0') {
        return Err(malformed(format!(
            "MQTT-1.5.3-2 / MQTT-1.5.4-2: {what} contains U+0000"
        )));
    }
    Ok(())
}

/// Encoded size of a UTF-8 string field.
fn string_len(s: &str) -> usize {
    2 + s.len()
}

fn malformed(detail: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        reason: DisconnectReasonCode::MalformedPacket,
        detail: detail.into(),
    }
}

fn protocol_error(detail: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        reason: DisconnectReasonCode::ProtocolError,
        detail: detail.into(),
    }
}
