//! 5.0 property blocks (section 2.2.2): the rules rumqttc leaves to a
//! server. rumqttc keeps the last of repeated properties and takes any
//! value of the right type; these checks run on the block's bytes once
//! rumqttc has parsed the packet and its Property Length is known to match.
//!
//! - A property not defined for the packet is a Malformed Packet (0x81,
//!   section 2.2.2.2).
//! - A property included more than once is a Protocol Error (0x82), except
//!   User Property, and Subscription Identifier in PUBLISH (which the core
//!   refuses from clients anyway, MQTT-3.3.4-6): each property's section
//!   says "It is a Protocol Error to include ... more than once".
//! - A value the property does not allow is a Protocol Error (0x82): Payload
//!   Format Indicator, Request Problem Information and Request Response
//!   Information other than 0 or 1 (3.3.2.3.2, 3.1.2.11.7, 3.1.2.11.6),
//!   Receive Maximum or Maximum Packet Size 0 (3.1.2.11.3, 3.1.2.11.4).

use super::{malformed, protocol_error, DecodeError};

/// Which property block: the properties allowed differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Block {
    Connect,
    Will,
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    Ack,
    Subscribe,
    Unsubscribe,
    Disconnect,
}

const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
const RECEIVE_MAXIMUM: u8 = 0x21;
const USER_PROPERTY: u8 = 0x26;
const MAXIMUM_PACKET_SIZE: u8 = 0x27;

/// How a property's value is encoded (section 2.2.2.2).
#[derive(Clone, Copy)]
enum Kind {
    Byte,
    TwoBytes,
    FourBytes,
    VarInt,
    /// UTF-8 string or binary data: a two-byte length and the bytes.
    Bytes,
    /// UTF-8 string pair.
    Pair,
}

/// The name and encoding of the properties a client may send.
fn describe(id: u8) -> Option<(&'static str, Kind)> {
    Some(match id {
        0x01 => ("Payload Format Indicator", Kind::Byte),
        0x02 => ("Message Expiry Interval", Kind::FourBytes),
        0x03 => ("Content Type", Kind::Bytes),
        0x08 => ("Response Topic", Kind::Bytes),
        0x09 => ("Correlation Data", Kind::Bytes),
        0x0B => ("Subscription Identifier", Kind::VarInt),
        0x11 => ("Session Expiry Interval", Kind::FourBytes),
        0x15 => ("Authentication Method", Kind::Bytes),
        0x16 => ("Authentication Data", Kind::Bytes),
        0x17 => ("Request Problem Information", Kind::Byte),
        0x18 => ("Will Delay Interval", Kind::FourBytes),
        0x19 => ("Request Response Information", Kind::Byte),
        0x1C => ("Server Reference", Kind::Bytes),
        0x1F => ("Reason String", Kind::Bytes),
        0x21 => ("Receive Maximum", Kind::TwoBytes),
        0x22 => ("Topic Alias Maximum", Kind::TwoBytes),
        0x23 => ("Topic Alias", Kind::TwoBytes),
        0x26 => ("User Property", Kind::Pair),
        0x27 => ("Maximum Packet Size", Kind::FourBytes),
        _ => return None,
    })
}

/// The properties a client may put in `block` (section 2.2.2.2's table).
fn allowed(block: Block) -> &'static [u8] {
    match block {
        Block::Connect => &[0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x26, 0x27],
        Block::Will => &[0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26],
        Block::Publish => &[0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26],
        Block::Ack => &[0x1F, 0x26],
        Block::Subscribe => &[0x0B, 0x26],
        Block::Unsubscribe => &[0x26],
        Block::Disconnect => &[0x11, 0x1C, 0x1F, 0x26],
    }
}

/// Checks the properties of `block`, the bytes after its Property Length.
pub(super) fn check_block(props: &[u8], block: Block, what: &str) -> Result<(), DecodeError> {
    let truncated = || malformed(format!("{what}: a property is cut short"));
    let mut seen = 0u64;
    let mut pos = 0;
    while pos < props.len() {
        let id = props[pos];
        pos += 1;
        let Some((name, kind)) = describe(id).filter(|_| allowed(block).contains(&id)) else {
            return Err(malformed(format!(
                "MQTT 2.2.2.2: property {id:#04x} is not allowed in {what}"
            )));
        };
        let repeatable =
            id == USER_PROPERTY || (id == SUBSCRIPTION_IDENTIFIER && block == Block::Publish);
        if !repeatable && seen & (1 << id) != 0 {
            return Err(protocol_error(format!(
                "{what}: {name} included more than once"
            )));
        }
        seen |= 1 << id;
        let value = props.get(pos..).ok_or_else(truncated)?;
        let len = match kind {
            Kind::Byte => 1,
            Kind::TwoBytes => 2,
            Kind::FourBytes => 4,
            Kind::VarInt => value
                .iter()
                .take(4)
                .position(|b| b & 0x80 == 0)
                .map(|last| last + 1)
                .ok_or_else(truncated)?,
            Kind::Bytes => 2 + string_len_at(value, 0).ok_or_else(truncated)?,
            Kind::Pair => {
                let first = 2 + string_len_at(value, 0).ok_or_else(truncated)?;
                first + 2 + string_len_at(value, first).ok_or_else(truncated)?
            }
        };
        let value = value.get(..len).ok_or_else(truncated)?;
        check_value(id, name, value, what)?;
        pos += len;
    }
    Ok(())
}

/// The two-byte length prefix at `at`.
fn string_len_at(bytes: &[u8], at: usize) -> Option<usize> {
    let prefix = bytes.get(at..at + 2)?;
    Some(usize::from(u16::from_be_bytes([prefix[0], prefix[1]])))
}

/// The value rules of section 3 that rumqttc does not check.
fn check_value(id: u8, name: &str, value: &[u8], what: &str) -> Result<(), DecodeError> {
    let bad = |rule: &str| Err(protocol_error(format!("{what}: {name} {rule}")));
    match id {
        PAYLOAD_FORMAT_INDICATOR | REQUEST_PROBLEM_INFORMATION | REQUEST_RESPONSE_INFORMATION
            if value[0] > 1 =>
        {
            bad(&format!("must be 0 or 1, not {}", value[0]))
        }
        RECEIVE_MAXIMUM | MAXIMUM_PACKET_SIZE if value.iter().all(|&b| b == 0) => {
            bad("must not be 0")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode as R;

    fn reason(result: Result<(), DecodeError>) -> Option<R> {
        match result {
            Ok(()) => None,
            Err(DecodeError::Invalid { reason, .. }) => Some(reason),
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn blocks_follow_the_rules() {
        let ok = [
            0x01, 1, 0x02, 0, 0, 0, 9, 0x26, 0, 1, b'k', 0, 0, 0x26, 0, 0, 0, 0,
        ];
        assert_eq!(reason(check_block(&ok, Block::Publish, "PUBLISH")), None);
        // Two Session Expiry Intervals.
        let dup = [0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2];
        assert_eq!(
            reason(check_block(&dup, Block::Connect, "CONNECT")),
            Some(R::ProtocolError)
        );
        assert_eq!(
            reason(check_block(&[0x01, 7], Block::Will, "will")),
            Some(R::ProtocolError)
        );
        assert_eq!(
            reason(check_block(&[0x21, 0, 0], Block::Connect, "CONNECT")),
            Some(R::ProtocolError)
        );
        // Topic Alias in a SUBSCRIBE; a cut property.
        assert_eq!(
            reason(check_block(&[0x23, 0, 1], Block::Subscribe, "SUBSCRIBE")),
            Some(R::MalformedPacket)
        );
        assert_eq!(
            reason(check_block(&[0x26, 0, 5, b'a'], Block::Ack, "PUBACK")),
            Some(R::MalformedPacket)
        );
        assert_eq!(
            reason(check_block(&[0x0B, 0x80], Block::Subscribe, "SUBSCRIBE")),
            Some(R::MalformedPacket)
        );
        // Two Subscription Identifiers in a SUBSCRIBE (3.8.2.1.2).
        assert_eq!(
            reason(check_block(
                &[0x0B, 1, 0x0B, 2],
                Block::Subscribe,
                "SUBSCRIBE"
            )),
            Some(R::ProtocolError)
        );
    }
}
