//! The first packet of a connection, CONNECT: its protocol name and level
//! fix the version, and both versions' CONNECTs decode to the 5.0 form.

use super::properties::{check_block, Block};
use super::v311::{self, qos_4to5};
use super::v5::{self, varint_at};
use super::{
    check_consumed, malformed, no_nul, protocol_error, string_len, utf8_name, DecodeError, Frame,
    Header, CONNECT,
};
use bytes::Bytes;
use mqtt_topic::MqttVersion;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5 as mqtt5;
use rumqttc::v5::mqttbytes::v5::{Connect, LastWill, Login};

/// Decodes the first packet of a connection, which must be a CONNECT.
pub(super) fn decode(header: &Header, frame: Bytes) -> Result<Frame, DecodeError> {
    if header.packet_type() != CONNECT {
        return Err(protocol_error(
            "MQTT-3.1.0-1: the first packet must be CONNECT",
        ));
    }
    header.check_flags()?;
    let body = &frame[header.body_start()..];
    let version = sniff_version(body)?;
    // Variable header: name "MQTT" (2 + 4), level (1), flags (1), keep alive (2).
    let flags = *body
        .get(7)
        .ok_or_else(|| malformed("CONNECT variable header is truncated"))?;
    check_connect_flags(version, flags)?;
    let (connect, will, login) = match version {
        MqttVersion::V311 => {
            let c = v4::Connect::read(header.v4(), frame.clone())
                .map_err(|e| v311::map_error("CONNECT", e))?;
            let end = 10
                + string_len(&c.client_id)
                + c.last_will
                    .as_ref()
                    .map_or(0, |w| string_len(&w.topic) + 2 + w.message.len())
                + login_len(flags, c.login.as_ref().map(|l| (&l.username, &l.password)));
            check_consumed(body, end, "CONNECT")?;
            let connect = Connect {
                keep_alive: c.keep_alive,
                client_id: c.client_id,
                clean_start: c.clean_session,
                properties: None,
            };
            let will = c.last_will.map(|w| LastWill {
                topic: Bytes::from(w.topic),
                message: w.message,
                qos: qos_4to5(w.qos),
                retain: w.retain,
                properties: None,
            });
            let login = fix_login(flags, c.login.map(|l| (l.username, l.password)));
            (connect, will, login)
        }
        MqttVersion::V5 => {
            let (connect, will, login) = mqtt5::Connect::read(header.v5(), frame.clone())
                .map_err(|e| v5::map_error("CONNECT", e))?;
            // rumqttc reads properties until its cursor passes the declared
            // length, so a wrong Property Length is only caught here.
            let (vl, props) = varint_at(body, 10)?;
            let connect_props = 10 + vl..10 + vl + props;
            let mut end = connect_props.end + string_len(&connect.client_id);
            let mut will_props = 0..0;
            if let Some(w) = &will {
                let (wvl, wprops) = varint_at(body, end)?;
                will_props = end + wvl..end + wvl + wprops;
                end = will_props.end + 2 + w.topic.len() + 2 + w.message.len();
            }
            end += login_len(flags, login.as_ref().map(|l| (&l.username, &l.password)));
            check_consumed(body, end, "CONNECT")?;
            // In range: check_consumed found the blocks inside the body.
            check_block(&body[connect_props], Block::Connect, "CONNECT")?;
            check_block(&body[will_props], Block::Will, "Will Properties")?;
            if let Some(w) = &will {
                // rumqttc keeps the 5.0 Will Topic as raw bytes.
                utf8_name(&w.topic, "Will Topic")?;
            }
            let login = fix_login(flags, login.map(|l| (l.username, l.password)));
            (connect, will, login)
        }
    };
    no_nul(&connect.client_id, "Client Identifier")?;
    if let Some(l) = &login {
        no_nul(&l.username, "User Name")?;
    }
    if version == MqttVersion::V311 {
        if let Some(w) = &will {
            utf8_name(&w.topic, "Will Topic")?;
        }
    }
    Ok(Frame::Connect {
        version,
        connect,
        will,
        login,
    })
}

/// The protocol version from the CONNECT variable header (name + level).
fn sniff_version(body: &[u8]) -> Result<MqttVersion, DecodeError> {
    let truncated = || malformed("CONNECT variable header is truncated");
    let name_len = usize::from(u16::from_be_bytes([
        *body.first().ok_or_else(truncated)?,
        *body.get(1).ok_or_else(truncated)?,
    ]));
    let name = body.get(2..2 + name_len).ok_or_else(truncated)?;
    let level = *body.get(2 + name_len).ok_or_else(truncated)?;
    // MQTT-3.1.2-2: a known protocol at a level we do not speak (3.1's
    // "MQIsdp" included) gets CONNACK 0x01.
    let unsupported = DecodeError::UnsupportedProtocol { level };
    match name {
        b"MQTT" => MqttVersion::from_level(level).ok_or(unsupported),
        b"MQIsdp" => Err(unsupported),
        _ => Err(malformed("MQTT-3.1.2-1: protocol name is not \"MQTT\"")),
    }
}

/// CONNECT flag rules rumqttc does not check (or reports vaguely).
fn check_connect_flags(version: MqttVersion, flags: u8) -> Result<(), DecodeError> {
    let v311 = version == MqttVersion::V311;
    if flags & 0b0000_0001 != 0 {
        return Err(malformed("MQTT-3.1.2-3: CONNECT reserved flag is set"));
    }
    let will = flags & 0b0000_0100 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0b0010_0000 != 0;
    if !will && will_qos != 0 {
        let id = if v311 {
            "MQTT-3.1.2-11/-13"
        } else {
            "MQTT-3.1.2-11"
        };
        return Err(malformed(format!("{id}: Will QoS set without Will Flag")));
    }
    if !will && will_retain {
        let id = if v311 {
            "MQTT-3.1.2-15"
        } else {
            "MQTT-3.1.2-13"
        };
        return Err(malformed(format!(
            "{id}: Will Retain set without Will Flag"
        )));
    }
    if will_qos == 3 {
        let id = if v311 {
            "MQTT-3.1.2-14"
        } else {
            "MQTT-3.1.2-12"
        };
        return Err(malformed(format!("{id}: Will QoS 3")));
    }
    if v311 && flags & 0b0100_0000 != 0 && flags & 0b1000_0000 == 0 {
        return Err(malformed(
            "MQTT-3.1.2-22: Password Flag set without User Name Flag",
        ));
    }
    Ok(())
}

/// Bytes taken by the user name and password the flags announce.
fn login_len(flags: u8, login: Option<(&String, &String)>) -> usize {
    let (user, pass) = login.map_or((0, 0), |(u, p)| (u.len(), p.len()));
    let mut len = 0;
    if flags & 0b1000_0000 != 0 {
        len += 2 + user;
    }
    if flags & 0b0100_0000 != 0 {
        len += 2 + pass;
    }
    len
}

/// rumqttc drops a login whose strings are both empty even when the flags
/// announce them; keep it, since "empty user name" differs from "none".
fn fix_login(flags: u8, login: Option<(String, String)>) -> Option<Login> {
    if flags & 0b1100_0000 == 0 {
        return None;
    }
    let (username, password) = login.unwrap_or_default();
    Some(Login { username, password })
}
