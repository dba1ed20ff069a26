//! MQTT 3.1.1 packets, mapped to the 5.0 packets the core works with on the
//! way in (no properties, reason codes Success, subscription options with
//! 3.1.1 semantics) and back on the way out (properties dropped, reason
//! codes turned into 3.1.1 return codes).

use super::{check_pkid, malformed, no_nul, protocol_error, DecodeError, EncodeError, Header};
use super::{
    CONNACK, CONNECT, DISCONNECT, PINGREQ, PINGRESP, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL,
    SUBACK, SUBSCRIBE, UNSUBACK, UNSUBSCRIBE,
};
use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::{self as m4, v4};
use rumqttc::v5::mqttbytes::v5::{
    self, ConnectReturnCode, Disconnect, DisconnectReasonCode, Filter, Packet, PubAck, PubComp,
    PubRec, PubRel, RetainForwardRule, SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::QoS;

/// Decodes a packet after the CONNECT of a 3.1.1 connection, as its 5.0
/// equivalent.
pub(super) fn decode(header: &Header, frame: Bytes) -> Result<Packet, DecodeError> {
    let packet_type = header.packet_type();
    if packet_type == CONNECT {
        return Err(protocol_error("MQTT-3.1.0-2: second CONNECT"));
    }
    header.check_flags()?;
    let fh = header.v4();
    let body = &frame[header.body_start()..];
    let packet = match packet_type {
        PUBLISH => {
            let p = v4::Publish::read(fh, frame.clone()).map_err(|e| map_error("PUBLISH", e))?;
            no_nul(&p.topic, "Topic Name")?;
            Packet::Publish(v5::Publish {
                dup: p.dup,
                qos: qos_4to5(p.qos),
                retain: p.retain,
                topic: Bytes::from(p.topic),
                pkid: p.pkid,
                payload: p.payload,
                properties: None,
            })
        }
        PUBACK | PUBREC | PUBREL | PUBCOMP => {
            // 3.1.1 acks are exactly a packet id; rumqttc ignores extra bytes.
            if header.remaining != 2 {
                return Err(malformed(format!(
                    "packet type {packet_type} with remaining length {} (must be 2)",
                    header.remaining
                )));
            }
            let pkid = v4::PubAck::read(fh, frame.clone())
                .map_err(|e| map_error("acknowledgement", e))?
                .pkid;
            match packet_type {
                PUBACK => Packet::PubAck(PubAck::new(pkid, None)),
                PUBREC => Packet::PubRec(PubRec::new(pkid, None)),
                PUBREL => Packet::PubRel(PubRel::new(pkid, None)),
                _ => Packet::PubComp(PubComp::new(pkid, None)),
            }
        }
        SUBSCRIBE => {
            let s =
                v4::Subscribe::read(fh, frame.clone()).map_err(|e| map_error("SUBSCRIBE", e))?;
            check_pkid(s.pkid, "SUBSCRIBE")?;
            let mut pos = 2;
            let mut filters = Vec::with_capacity(s.filters.len());
            for f in s.filters {
                no_nul(&f.path, "Topic Filter")?;
                pos += 2 + f.path.len();
                let options = body.get(pos).copied().unwrap_or(0);
                pos += 1;
                if options & 0b1111_1100 != 0 {
                    return Err(malformed(
                        "MQTT-3-8.3-4: SUBSCRIBE requested QoS reserved bits are set",
                    ));
                }
                filters.push(Filter {
                    path: f.path,
                    qos: qos_4to5(f.qos),
                    nolocal: false,
                    preserve_retain: false,
                    retain_forward_rule: RetainForwardRule::OnEverySubscribe,
                });
            }
            Packet::Subscribe(v5::Subscribe {
                pkid: s.pkid,
                filters,
                properties: None,
            })
        }
        UNSUBSCRIBE => {
            let u = v4::Unsubscribe::read(fh, frame.clone())
                .map_err(|e| map_error("UNSUBSCRIBE", e))?;
            check_pkid(u.pkid, "UNSUBSCRIBE")?;
            if u.topics.is_empty() {
                return Err(protocol_error("MQTT-3.10.3-2: UNSUBSCRIBE with no filters"));
            }
            for f in &u.topics {
                no_nul(f, "Topic Filter")?;
            }
            Packet::Unsubscribe(v5::Unsubscribe {
                pkid: u.pkid,
                filters: u.topics,
                properties: None,
            })
        }
        PINGREQ | DISCONNECT => {
            if header.remaining != 0 {
                return Err(malformed(format!(
                    "packet type {packet_type} with a non-zero remaining length"
                )));
            }
            if packet_type == PINGREQ {
                Packet::PingReq(v5::PingReq)
            } else {
                Packet::Disconnect(Disconnect::new(DisconnectReasonCode::NormalDisconnection))
            }
        }
        CONNACK | SUBACK | UNSUBACK | PINGRESP => {
            return Err(protocol_error(format!(
                "packet type {packet_type} is sent only by servers"
            )))
        }
        _ => {
            return Err(malformed(format!(
                "reserved packet type {packet_type} in MQTT 3.1.1"
            )))
        }
    };
    Ok(packet)
}

/// Maps a rumqttc 3.1.1 parse error to a 5.0 reason code (for the log; 3.1.1
/// just closes the connection).
pub(super) fn map_error(what: &str, e: m4::Error) -> DecodeError {
    let reason = match e {
        m4::Error::PayloadSizeLimitExceeded(_) => DisconnectReasonCode::PacketTooLarge,
        m4::Error::EmptySubscription => DisconnectReasonCode::ProtocolError,
        _ => DisconnectReasonCode::MalformedPacket,
    };
    DecodeError::Invalid {
        reason,
        detail: format!("{what}: {e}"),
    }
}

pub(super) fn qos_4to5(qos: m4::QoS) -> QoS {
    match qos {
        m4::QoS::AtMostOnce => QoS::AtMostOnce,
        m4::QoS::AtLeastOnce => QoS::AtLeastOnce,
        m4::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

pub(super) fn qos_5to4(qos: QoS) -> m4::QoS {
    match qos {
        QoS::AtMostOnce => m4::QoS::AtMostOnce,
        QoS::AtLeastOnce => m4::QoS::AtLeastOnce,
        QoS::ExactlyOnce => m4::QoS::ExactlyOnce,
    }
}

/// The 3.1.1 CONNACK return code for a 5.0 reason: faults of the server's
/// state or capacity become 0x03 Server unavailable, all other refusals
/// 0x05 Not authorized.
fn connack_code_v4(code: ConnectReturnCode) -> v4::ConnectReturnCode {
    use ConnectReturnCode as C;
    match code {
        C::Success => v4::ConnectReturnCode::Success,
        C::RefusedProtocolVersion | C::UnsupportedProtocolVersion => {
            v4::ConnectReturnCode::RefusedProtocolVersion
        }
        C::BadClientId | C::ClientIdentifierNotValid => v4::ConnectReturnCode::BadClientId,
        C::BadUserNamePassword => v4::ConnectReturnCode::BadUserNamePassword,
        C::ServiceUnavailable
        | C::ServerUnavailable
        | C::ServerBusy
        | C::UseAnotherServer
        | C::ServerMoved
        | C::ConnectionRateExceeded
        | C::QuotaExceeded
        | C::UnspecifiedError
        | C::ImplementationSpecificError => v4::ConnectReturnCode::ServiceUnavailable,
        C::NotAuthorized
        | C::Banned
        | C::BadAuthenticationMethod
        | C::MalformedPacket
        | C::ProtocolError
        | C::TopicNameInvalid
        | C::PacketTooLarge
        | C::PayloadFormatInvalid
        | C::RetainNotSupported
        | C::QoSNotSupported => v4::ConnectReturnCode::NotAuthorized,
    }
}

/// 3.1.1: converts to rumqttc's v4 packets.
pub(super) fn encode(packet: &Packet, out: &mut BytesMut) -> Result<(), EncodeError> {
    let written = match packet {
        Packet::ConnAck(ack) => {
            let code = connack_code_v4(ack.code);
            v4::ConnAck {
                // MQTT-3.2.2-4: Session Present is 0 on a refusal.
                session_present: ack.session_present && code == v4::ConnectReturnCode::Success,
                code,
            }
            .write(out)
        }
        Packet::Publish(p) => {
            let topic = std::str::from_utf8(&p.topic).map_err(|_| EncodeError::TopicNotUtf8)?;
            if topic.len() > usize::from(u16::MAX) {
                return Err(EncodeError::TopicTooLong);
            }
            v4::Publish {
                dup: p.dup,
                qos: qos_5to4(p.qos),
                retain: p.retain,
                topic: topic.to_owned(),
                pkid: p.pkid,
                payload: p.payload.clone(),
            }
            .write(out)
        }
        Packet::PubAck(a) => v4::PubAck::new(a.pkid).write(out),
        Packet::PubRec(a) => v4::PubRec::new(a.pkid).write(out),
        Packet::PubRel(a) => v4::PubRel::new(a.pkid).write(out),
        Packet::PubComp(a) => v4::PubComp::new(a.pkid).write(out),
        Packet::SubAck(s) => {
            let codes = s
                .return_codes
                .iter()
                .map(|c| match c {
                    SubscribeReasonCode::Success(qos) => {
                        v4::SubscribeReasonCode::Success(qos_5to4(*qos))
                    }
                    _ => v4::SubscribeReasonCode::Failure,
                })
                .collect();
            v4::SubAck::new(s.pkid, codes).write(out)
        }
        Packet::UnsubAck(u) => v4::UnsubAck::new(u.pkid).write(out),
        Packet::PingResp(_) => v4::PingResp.write(out),
        // A 3.1.1 server never sends DISCONNECT, and AUTH does not exist.
        Packet::Disconnect(_) | Packet::Auth(_) => Ok(0),
        // A server never sends these.
        Packet::Connect(..) => return Err(EncodeError::ClientPacket(CONNECT)),
        Packet::Subscribe(_) => return Err(EncodeError::ClientPacket(SUBSCRIBE)),
        Packet::Unsubscribe(_) => return Err(EncodeError::ClientPacket(UNSUBSCRIBE)),
        Packet::PingReq(_) => return Err(EncodeError::ClientPacket(PINGREQ)),
    };
    written.map(|_| ()).map_err(EncodeError::V311)
}
