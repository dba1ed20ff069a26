//! Framing and protocol mapping. (Interface stub: being implemented.)
#![allow(dead_code, unused_variables)]

use super::types::ProtocolVersion;
use bytes::BytesMut;
use rumqttc::v5::mqttbytes::v5::{Connect, DisconnectReasonCode, LastWill, Login, Packet};

/// One decoded unit from a connection's byte stream.
#[derive(Debug)]
pub enum Frame {
    /// The CONNECT, which fixes the protocol version of the connection.
    Connect {
        version: ProtocolVersion,
        connect: Connect,
        will: Option<LastWill>,
        login: Option<Login>,
    },
    /// Any later packet, as its 5.0 equivalent.
    Packet(Packet),
}

/// Why a byte stream could not be decoded; the connection closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// CONNECT with a protocol name or level we do not speak: answer with a
    /// 3.1.1 CONNACK 0x01 (see [`unsupported_protocol_connack`]) and close.
    UnsupportedProtocol { level: u8 },
    /// Malformed packet or protocol error; `reason` is the 5.0 reason code
    /// for the DISCONNECT (or CONNACK, before the session exists).
    Invalid {
        reason: DisconnectReasonCode,
        detail: String,
    },
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError(pub String);

/// Reads packets from a connection's buffer.
#[derive(Debug)]
pub struct Decoder {
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
}

impl Decoder {
    /// A decoder for a new connection: the first packet must be CONNECT.
    pub fn new(max_packet_size: u32) -> Self {
        Decoder {
            version: None,
            max_packet_size,
        }
    }

    /// The protocol version, once the CONNECT was read.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// Decodes the next packet from `buf`, consuming its bytes.
    /// `Ok(None)`: more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        todo!()
    }
}

/// Encodes `packet` for a connection speaking `version` and appends it to
/// `out`. Packets with no 3.1.1 equivalent (AUTH, a server DISCONNECT) append
/// nothing for 3.1.1.
pub fn encode(
    version: ProtocolVersion,
    packet: &Packet,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    todo!()
}

/// The bytes of a 3.1.1 CONNACK refusing the protocol version (0x01).
pub fn unsupported_protocol_connack() -> [u8; 4] {
    [0x20, 0x02, 0x00, 0x01]
}
