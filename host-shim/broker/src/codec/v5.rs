//! MQTT 5.0 packets: decoding with the checks rumqttc leaves to a server,
//! and encoding with fixes for the packets rumqttc writes wrongly.

use super::properties::{check_block, Block};
use super::{
    check_pkid, malformed, no_nul, protocol_error, string_len, utf8_name, DecodeError, EncodeError,
    Header,
};
use super::{
    AUTH, CONNACK, CONNECT, DISCONNECT, PINGREQ, PINGRESP, PUBACK, PUBCOMP, PUBLISH, PUBREC,
    PUBREL, SUBACK, SUBSCRIBE, UNSUBACK, UNSUBSCRIBE,
};
use bytes::{Bytes, BytesMut};
use rumqttc::v5::mqttbytes::v5::{
    self, ConnAck, ConnectReturnCode, Disconnect, DisconnectProperties, DisconnectReasonCode,
    Packet, PubAck, PubComp, PubRec, PubRel,
};
use rumqttc::v5::mqttbytes::{self as m5, QoS};

/// Decodes a packet after the CONNECT of a 5.0 connection.
pub(super) fn decode(header: &Header, frame: Bytes) -> Result<Packet, DecodeError> {
    let packet_type = header.packet_type();
    if packet_type == CONNECT {
        return Err(protocol_error("MQTT-3.1.0-2: second CONNECT"));
    }
    header.check_flags()?;
    let fh = header.v5();
    let body = &frame[header.body_start()..];
    let packet = match packet_type {
        PUBLISH => {
            let p = v5::Publish::read(fh, frame.clone()).map_err(|e| map_error("PUBLISH", e))?;
            let pkid_len = if p.qos == QoS::AtMostOnce { 0 } else { 2 };
            check_properties(
                body,
                2 + p.topic.len() + pkid_len,
                p.payload.len(),
                Block::Publish,
                "PUBLISH",
            )?;
            // An empty topic is legal here when a Topic Alias names it; the
            // core resolves aliases and rejects an empty topic without one.
            utf8_name(&p.topic, "Topic Name")?;
            if p.properties
                .as_ref()
                .is_some_and(|props| !props.subscription_identifiers.is_empty())
            {
                return Err(protocol_error(
                    "MQTT-3.3.4-6: PUBLISH from a client with a Subscription Identifier",
                ));
            }
            Packet::Publish(p)
        }
        // rumqttc reads remaining length 2 as Success without properties and
        // 3 as a bare reason code; it ignores bytes after the properties.
        PUBACK => {
            let a = PubAck::read(fh, frame.clone()).map_err(|e| map_error("PUBACK", e))?;
            check_ack_properties(header, body, "PUBACK")?;
            Packet::PubAck(a)
        }
        PUBREC => {
            let a = PubRec::read(fh, frame.clone()).map_err(|e| map_error("PUBREC", e))?;
            check_ack_properties(header, body, "PUBREC")?;
            Packet::PubRec(a)
        }
        PUBREL => {
            let a = PubRel::read(fh, frame.clone()).map_err(|e| map_error("PUBREL", e))?;
            check_ack_properties(header, body, "PUBREL")?;
            Packet::PubRel(a)
        }
        PUBCOMP => {
            let a = PubComp::read(fh, frame.clone()).map_err(|e| map_error("PUBCOMP", e))?;
            check_ack_properties(header, body, "PUBCOMP")?;
            Packet::PubComp(a)
        }
        SUBSCRIBE => {
            let s =
                v5::Subscribe::read(fh, frame.clone()).map_err(|e| map_error("SUBSCRIBE", e))?;
            let filters_len: usize = s.filters.iter().map(|f| 3 + f.path.len()).sum();
            check_properties(body, 2, filters_len, Block::Subscribe, "SUBSCRIBE")?;
            check_pkid(s.pkid, "SUBSCRIBE")?;
            if s.properties.as_ref().and_then(|p| p.id) == Some(0) {
                return Err(protocol_error("SUBSCRIBE with Subscription Identifier 0"));
            }
            // The options bytes, located from the end of the frame.
            let mut pos = body.len() - filters_len;
            for f in &s.filters {
                no_nul(&f.path, "Topic Filter")?;
                pos += 2 + f.path.len();
                let options = body.get(pos).copied().unwrap_or(0);
                pos += 1;
                if options & 0b1100_0000 != 0 {
                    return Err(malformed(
                        "MQTT-3.8.3-5: SUBSCRIBE options reserved bits are set",
                    ));
                }
                if f.nolocal && mqtt_topic::is_shared_filter(&f.path) {
                    return Err(protocol_error(
                        "MQTT-3.8.3-4: No Local on a Shared Subscription",
                    ));
                }
            }
            Packet::Subscribe(s)
        }
        UNSUBSCRIBE => {
            let u = v5::Unsubscribe::read(fh, frame.clone())
                .map_err(|e| map_error("UNSUBSCRIBE", e))?;
            let filters_len: usize = u.filters.iter().map(|f| string_len(f)).sum();
            check_properties(body, 2, filters_len, Block::Unsubscribe, "UNSUBSCRIBE")?;
            check_pkid(u.pkid, "UNSUBSCRIBE")?;
            if u.filters.is_empty() {
                return Err(protocol_error("MQTT-3.10.3-2: UNSUBSCRIBE with no filters"));
            }
            for f in &u.filters {
                no_nul(f, "Topic Filter")?;
            }
            Packet::Unsubscribe(u)
        }
        PINGREQ => {
            if header.remaining != 0 {
                return Err(malformed("PINGREQ with a non-zero remaining length"));
            }
            Packet::PingReq(v5::PingReq)
        }
        DISCONNECT => match header.remaining {
            // rumqttc's Packet::read refuses remaining length 0 (PayloadRequired)
            // and its Disconnect::read fails on 1 (no property length): both
            // are legal (3.14.2.1).
            0 => Packet::Disconnect(Disconnect::new(DisconnectReasonCode::NormalDisconnection)),
            1 => {
                let code = body.first().copied().unwrap_or(0);
                let reason_code =
                    DisconnectReasonCode::try_from(code).map_err(|e| map_error("DISCONNECT", e))?;
                Packet::Disconnect(Disconnect {
                    reason_code,
                    properties: None,
                })
            }
            _ => {
                let d =
                    Disconnect::read(fh, frame.clone()).map_err(|e| map_error("DISCONNECT", e))?;
                check_properties(body, 1, 0, Block::Disconnect, "DISCONNECT")?;
                Packet::Disconnect(d)
            }
        },
        // rumqttc has no AUTH reader; we offer no enhanced authentication.
        AUTH => {
            return Err(protocol_error(
                "MQTT-4.12.0-7: AUTH without an Authentication Method",
            ))
        }
        CONNACK | SUBACK | UNSUBACK | PINGRESP => {
            return Err(protocol_error(format!(
                "packet type {packet_type} is sent only by servers"
            )))
        }
        _ => return Err(malformed("reserved packet type 0")),
    };
    Ok(packet)
}

/// PUBACK/PUBREC/PUBREL/PUBCOMP: with a remaining length of 4 or more the
/// properties must fill the rest of the packet.
fn check_ack_properties(header: &Header, body: &[u8], what: &str) -> Result<(), DecodeError> {
    if header.remaining >= 4 {
        check_properties(body, 3, 0, Block::Ack, what)?;
    }
    Ok(())
}

/// The Property Length at `offset` must cover exactly the bytes between it
/// and the `tail` that follows the properties (MQTT-2.2.2-1). rumqttc reads
/// properties until a cursor passes the declared length, so it accepts a
/// length that cuts a property or leaves bytes over. Then the properties
/// themselves are checked (see `properties`).
fn check_properties(
    body: &[u8],
    offset: usize,
    tail: usize,
    block: Block,
    what: &str,
) -> Result<(), DecodeError> {
    let (vl, len) = varint_at(body, offset)?;
    if offset + vl + len + tail != body.len() {
        return Err(malformed(format!(
            "MQTT-2.2.2-1: {what} Property Length does not match its properties"
        )));
    }
    let start = offset + vl;
    check_block(&body[start..start + len], block, what)
}

/// Reads a Variable Byte Integer at `offset`: (bytes used, value).
pub(super) fn varint_at(body: &[u8], offset: usize) -> Result<(usize, usize), DecodeError> {
    let mut value = 0usize;
    for i in 0..4 {
        let byte = *body
            .get(offset + i)
            .ok_or_else(|| malformed("truncated Property Length"))?;
        value |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((i + 1, value));
        }
    }
    Err(malformed(
        "MQTT-1.5.5-1: Variable Byte Integer longer than 4 bytes",
    ))
}

/// Maps a rumqttc 5.0 parse error to the reason code of the DISCONNECT.
pub(super) fn map_error(what: &str, e: m5::Error) -> DecodeError {
    let reason = match e {
        m5::Error::PayloadSizeLimitExceeded { .. } => DisconnectReasonCode::PacketTooLarge,
        // 3.8.3: no filters or Retain Handling 3 are Protocol Errors.
        m5::Error::EmptySubscription
        | m5::Error::InvalidRetainForwardRule(_)
        | m5::Error::SubscriptionIdZero => DisconnectReasonCode::ProtocolError,
        _ => DisconnectReasonCode::MalformedPacket,
    };
    DecodeError::Invalid {
        reason,
        detail: format!("{what}: {e}"),
    }
}

/// 5.0: rumqttc's writers, with fixes for the packets it writes wrongly.
pub(super) fn encode(packet: &Packet, out: &mut BytesMut) -> Result<(), EncodeError> {
    match packet {
        Packet::ConnAck(ack) => {
            // rumqttc's 5.0 writer panics (unreachable!) on the 3.1.1-only
            // codes; MQTT-3.2.2-6: Session Present is 0 on a refusal.
            let code = connack_code_v5(ack.code);
            let ack = ConnAck {
                session_present: ack.session_present && code == ConnectReturnCode::Success,
                code,
                properties: ack.properties.clone(),
            };
            ack.write(out).map_err(EncodeError::V5)?;
        }
        Packet::Disconnect(d)
            if d.reason_code != DisconnectReasonCode::NormalDisconnection
                && d.properties
                    .as_ref()
                    .is_none_or(disconnect_properties_empty) =>
        {
            // rumqttc gets this case wrong both ways: without properties it
            // writes remaining length 1 followed by two bytes (reason and a
            // property length); with an empty property list its length is 2,
            // which its writer mistakes for "normal" and writes E0 00,
            // dropping the reason. So write the four bytes here (3.14.2).
            out.extend_from_slice(&[0xE0, 0x02, d.reason_code as u8, 0x00]);
        }
        Packet::Auth(a) if a.properties.is_some() => {
            // rumqttc's AUTH property length omits the string length prefixes.
            return Err(EncodeError::AuthWithProperties);
        }
        Packet::Publish(p) if p.topic.len() > usize::from(u16::MAX) => {
            return Err(EncodeError::TopicTooLong);
        }
        other => {
            other.write(out, None).map_err(EncodeError::V5)?;
        }
    }
    Ok(())
}

fn disconnect_properties_empty(p: &DisconnectProperties) -> bool {
    p.session_expiry_interval.is_none()
        && p.reason_string.is_none()
        && p.user_properties.is_empty()
        && p.server_reference.is_none()
}

/// The 5.0 code for the 3.1.1-only variants of rumqttc's ConnectReturnCode.
fn connack_code_v5(code: ConnectReturnCode) -> ConnectReturnCode {
    match code {
        ConnectReturnCode::RefusedProtocolVersion => ConnectReturnCode::UnsupportedProtocolVersion,
        ConnectReturnCode::BadClientId => ConnectReturnCode::ClientIdentifierNotValid,
        ConnectReturnCode::ServiceUnavailable => ConnectReturnCode::ServerUnavailable,
        other => other,
    }
}
