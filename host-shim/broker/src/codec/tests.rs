//! The codec's unit tests: every rule of the decoder with the statement
//! it enforces, round trips with rumqttc's client codecs, and arbitrary
//! bytes that must never panic.

use super::*;
use bytes::Bytes;
use e2e::{raw_packet, raw_publish, raw_subscribe_many, raw_unsubscribe, RawConnect, RawWill};
use proptest::prelude::*;
use rumqttc::mqttbytes::{self as m4, v4};
use rumqttc::v5::mqttbytes::v5::{
    self, ConnAck, ConnAckProperties, ConnectProperties, ConnectReturnCode, Disconnect,
    DisconnectProperties, Filter, LastWillProperties, PubAck, PubAckProperties, PubAckReason,
    PubComp, PubCompReason, PubRec, PubRecReason, PubRel, PubRelReason, PublishProperties,
    RetainForwardRule, SubscribeProperties, SubscribeReasonCode, UnsubAck, UnsubAckReason,
};
use rumqttc::v5::mqttbytes::QoS;

const MAX: u32 = 1 << 20;
const MALFORMED: DisconnectReasonCode = DisconnectReasonCode::MalformedPacket;
const PROTOCOL: DisconnectReasonCode = DisconnectReasonCode::ProtocolError;
const V311: MqttVersion = MqttVersion::V311;
const V5: MqttVersion = MqttVersion::V5;

// --- raw byte helpers -------------------------------------------------

/// An MQTT string: length prefix and bytes.
fn s(x: &[u8]) -> Vec<u8> {
    let mut out = (x.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(x);
    out
}

/// A CONNECT with protocol "MQTT", `level`, `flags` and `payload`
/// (5.0: with an empty property list), for the payloads [`RawConnect`]
/// cannot make.
fn connect_raw(level: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = s(b"MQTT");
    body.extend_from_slice(&[level, flags, 0, 60]);
    if level == 5 {
        body.push(0);
    }
    body.extend_from_slice(payload);
    raw_packet(0x10, &body)
}

/// A CONNECT for `version`: client id `c`, clean start, keep alive 60.
fn connect_of(version: MqttVersion) -> RawConnect {
    RawConnect {
        level: version.level(),
        keep_alive: 60,
        ..RawConnect::v4("c")
    }
}

/// A minimal valid CONNECT for `version` (client id "c", clean start).
fn connect_min(version: MqttVersion) -> Vec<u8> {
    connect_of(version).encode()
}

fn decode_bytes(d: &mut Decoder, bytes: &[u8]) -> Result<Option<Frame>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    d.decode(&mut buf)
}

/// A decoder that has read a CONNECT of `version`.
fn connected(version: MqttVersion) -> Decoder {
    let mut d = Decoder::new(MAX);
    match decode_bytes(&mut d, &connect_min(version)) {
        Ok(Some(Frame::Connect { .. })) => {}
        other => panic!("CONNECT did not decode: {other:?}"),
    }
    assert_eq!(d.version(), Some(version));
    d
}

/// Decodes one packet after a CONNECT of `version`.
fn after_connect(version: MqttVersion, bytes: &[u8]) -> Result<Packet, DecodeError> {
    let mut d = connected(version);
    let mut buf = BytesMut::from(bytes);
    let frame = d.decode(&mut buf)?;
    assert!(buf.is_empty(), "the frame was not consumed whole");
    match frame {
        Some(Frame::Packet(p)) => Ok(p),
        other => panic!("expected a packet, got {other:?}"),
    }
}

fn assert_reason<T: std::fmt::Debug>(
    result: Result<T, DecodeError>,
    expected: DisconnectReasonCode,
) {
    match result {
        Err(DecodeError::Invalid { reason, .. }) => assert_eq!(reason, expected),
        other => panic!("expected Invalid({expected:?}), got {other:?}"),
    }
}

fn both() -> [MqttVersion; 2] {
    [V311, V5]
}

// --- CONNECT ----------------------------------------------------------

#[test]
fn first_packet_must_be_connect_mqtt_3_1_0_1() {
    let mut d = Decoder::new(MAX);
    assert_reason(decode_bytes(&mut d, &[0xC0, 0x00]), PROTOCOL);
    // Not even a complete header is needed to refuse a non-MQTT peer.
    let mut d = Decoder::new(MAX);
    assert_reason(decode_bytes(&mut d, b"G"), PROTOCOL);
}

#[test]
fn second_connect_is_a_protocol_error_mqtt_3_1_0_2() {
    for v in both() {
        assert_reason(after_connect(v, &connect_min(v)), PROTOCOL);
    }
}

#[test]
fn version_detected_from_connect() {
    for v in both() {
        let mut d = Decoder::new(MAX);
        match decode_bytes(&mut d, &connect_min(v)) {
            Ok(Some(Frame::Connect {
                version,
                connect,
                will,
                login,
            })) => {
                assert_eq!(version, v);
                assert_eq!(connect.client_id, "c");
                assert!(connect.clean_start);
                assert_eq!(connect.keep_alive, 60);
                assert!(will.is_none() && login.is_none());
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn unsupported_protocol_level_mqtt_3_1_2_2() {
    let mut mqisdp = s(b"MQIsdp");
    mqisdp.extend_from_slice(&[3, 0b10, 0, 60]);
    mqisdp.extend_from_slice(&s(b"c"));
    let level = |level| {
        RawConnect {
            level,
            keep_alive: 60,
            ..RawConnect::v4("c")
        }
        .encode()
    };
    let cases = [(raw_packet(0x10, &mqisdp), 3), (level(3), 3), (level(6), 6)];
    for (bytes, level) in cases {
        let mut d = Decoder::new(MAX);
        assert_eq!(
            decode_bytes(&mut d, &bytes),
            Err(DecodeError::UnsupportedProtocol { level })
        );
    }
}

#[test]
fn bad_protocol_name_is_invalid_mqtt_3_1_2_1() {
    let mut body = s(b"MQTX");
    body.extend_from_slice(&[4, 0b10, 0, 60]);
    body.extend_from_slice(&s(b"c"));
    let mut d = Decoder::new(MAX);
    assert_reason(decode_bytes(&mut d, &raw_packet(0x10, &body)), MALFORMED);
    // Truncated variable header.
    let mut d = Decoder::new(MAX);
    assert_reason(
        decode_bytes(&mut d, &raw_packet(0x10, &[0, 4, b'M'])),
        MALFORMED,
    );
}

#[test]
fn connect_fixed_header_flags_mqtt_2_2_2_1() {
    for v in both() {
        let mut bytes = connect_min(v);
        bytes[0] = 0x11;
        let mut d = Decoder::new(MAX);
        assert_reason(decode_bytes(&mut d, &bytes), MALFORMED);
    }
}

#[test]
fn connect_reserved_flag_mqtt_3_1_2_3() {
    for v in both() {
        let mut d = Decoder::new(MAX);
        let reserved = RawConnect {
            extra_flags: 0b01,
            ..connect_of(v)
        };
        assert_reason(decode_bytes(&mut d, &reserved.encode()), MALFORMED);
    }
}

#[test]
fn will_qos_and_retain_need_will_flag_mqtt_3_1_2_11_13_15() {
    for v in both() {
        // Will QoS 1 without Will Flag (3.1.1: -11/-13, 5.0: -11).
        let qos = RawConnect {
            extra_flags: 0b0000_1000,
            ..connect_of(v)
        };
        let mut d = Decoder::new(MAX);
        assert_reason(decode_bytes(&mut d, &qos.encode()), MALFORMED);
        // Will Retain without Will Flag (3.1.1: -15, 5.0: -13).
        let retain = RawConnect {
            extra_flags: 0b0010_0000,
            ..connect_of(v)
        };
        let mut d = Decoder::new(MAX);
        assert_reason(decode_bytes(&mut d, &retain.encode()), MALFORMED);
    }
}

#[test]
fn will_qos_3_mqtt_3_1_2_14_and_5_0_mqtt_3_1_2_12() {
    for v in both() {
        let will_qos_3 = RawConnect {
            will: Some(RawWill::new("w", b"bye", 3, false)),
            ..connect_of(v)
        };
        let mut d = Decoder::new(MAX);
        assert_reason(decode_bytes(&mut d, &will_qos_3.encode()), MALFORMED);
    }
}

#[test]
fn password_without_user_name_mqtt_3_1_2_22() {
    let password_only = |v| RawConnect {
        password: Some("secret".to_owned()),
        ..connect_of(v)
    };
    // 3.1.1: refused.
    let mut d = Decoder::new(MAX);
    assert_reason(
        decode_bytes(&mut d, &password_only(V311).encode()),
        MALFORMED,
    );
    // 5.0 allows a password without a user name (3.1.2.9).
    let mut d = Decoder::new(MAX);
    match decode_bytes(&mut d, &password_only(V5).encode()) {
        Ok(Some(Frame::Connect { login, .. })) => {
            assert_eq!(login, Some(Login::new("", "secret")));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn empty_user_name_is_kept() {
    // rumqttc returns no login when both strings are empty.
    for v in both() {
        let empty_user = RawConnect {
            username: Some(String::new()),
            ..connect_of(v)
        };
        let mut d = Decoder::new(MAX);
        match decode_bytes(&mut d, &empty_user.encode()) {
            Ok(Some(Frame::Connect { login, .. })) => {
                assert_eq!(login, Some(Login::new("", "")));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn connect_trailing_bytes_are_malformed() {
    for v in both() {
        let mut payload = s(b"c");
        payload.push(0xFF);
        let mut d = Decoder::new(MAX);
        assert_reason(
            decode_bytes(&mut d, &connect_raw(v.level(), 0b10, &payload)),
            MALFORMED,
        );
    }
}

#[test]
fn connect_property_length_must_match_mqtt_2_2_2_1() {
    // Property Length 1 but a 5-byte Session Expiry Interval follows.
    let mut body = s(b"MQTT");
    body.extend_from_slice(&[5, 0b10, 0, 60, 1, 0x11, 0, 0, 0, 10]);
    body.extend_from_slice(&s(b"c"));
    let mut d = Decoder::new(MAX);
    assert_reason(decode_bytes(&mut d, &raw_packet(0x10, &body)), MALFORMED);
}

#[test]
fn client_id_with_nul_mqtt_1_5_3_2_and_1_5_4_2() {
    for v in both() {
        let nul = RawConnect {
            client_id: "a\0b".to_owned(),
            ..connect_of(v)
        };
        let mut d = Decoder::new(MAX);
        assert_reason(decode_bytes(&mut d, &nul.encode()), MALFORMED);
    }
}

#[test]
fn client_id_not_utf8_mqtt_1_5_3_1_and_1_5_4_1() {
    for v in both() {
        let mut d = Decoder::new(MAX);
        assert_reason(
            decode_bytes(&mut d, &connect_raw(v.level(), 0b10, &s(&[0xC3, 0x28]))),
            MALFORMED,
        );
    }
}

#[test]
fn will_topic_checked_mqtt_1_5_4_1_and_1_5_4_2() {
    for (topic, v) in [
        (&[0xFF, 0xFE][..], V5),
        (&b"w\0"[..], V5),
        (&b"w\0"[..], V311),
    ] {
        let mut payload = s(b"c");
        if v == V5 {
            payload.push(0);
        }
        payload.extend_from_slice(&s(topic));
        payload.extend_from_slice(&s(b"bye"));
        let mut d = Decoder::new(MAX);
        assert_reason(
            decode_bytes(&mut d, &connect_raw(v.level(), 0b0000_0110, &payload)),
            MALFORMED,
        );
    }
}

// --- fixed header -----------------------------------------------------

#[test]
fn reserved_fixed_header_flags_mqtt_2_2_2_1_and_2_2_2_2() {
    let cases: [&[u8]; 8] = [
        &[0x60, 0x02, 0x00, 0x01], // PUBREL must be 0b0010
        &[0x62 | 0x01, 0x02, 0x00, 0x01],
        &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00], // SUBSCRIBE
        &[0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'],       // UNSUBSCRIBE
        &[0x41, 0x02, 0x00, 0x01],                         // PUBACK
        &[0x52, 0x02, 0x00, 0x01],                         // PUBREC
        &[0xC1, 0x00],                                     // PINGREQ
        &[0xE8, 0x00],                                     // DISCONNECT
    ];
    for v in both() {
        for bytes in cases {
            // 5.0 SUBSCRIBE/UNSUBSCRIBE bodies lack the property length,
            // but the flags are checked first.
            assert_reason(after_connect(v, bytes), MALFORMED);
        }
    }
}

#[test]
fn packet_too_large_is_refused_before_the_body_arrives() {
    let mut d = Decoder::new(16);
    let mut buf = BytesMut::from(&connect_min(V5)[..]);
    assert!(matches!(d.decode(&mut buf), Ok(Some(_))));
    // Only the fixed header of a 200-byte PUBLISH.
    let mut buf = BytesMut::from(&[0x30, 0xC8, 0x01][..]);
    assert_reason(d.decode(&mut buf), DisconnectReasonCode::PacketTooLarge);
    // Also for the CONNECT itself.
    let mut d = Decoder::new(4);
    assert_reason(
        decode_bytes(&mut d, &connect_min(V311)),
        DisconnectReasonCode::PacketTooLarge,
    );
}

#[test]
fn malformed_remaining_length() {
    for v in both() {
        let mut d = connected(v);
        assert_reason(
            decode_bytes(&mut d, &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            MALFORMED,
        );
    }
}

#[test]
fn reserved_packet_types() {
    // 0 is reserved in both; 15 is AUTH in 5.0 (we offer no enhanced
    // authentication: MQTT-4.12.0-7) and reserved in 3.1.1.
    assert_reason(after_connect(V311, &[0x00, 0x00]), MALFORMED);
    assert_reason(after_connect(V5, &[0x00, 0x00]), MALFORMED);
    assert_reason(after_connect(V311, &[0xF0, 0x00]), MALFORMED);
    assert_reason(after_connect(V5, &[0xF0, 0x02, 0x00, 0x00]), PROTOCOL);
    assert_reason(after_connect(V5, &[0xF0, 0x00]), PROTOCOL);
}

#[test]
fn server_packets_from_a_client_are_protocol_errors() {
    for v in both() {
        for bytes in [
            &[0x20, 0x02, 0x00, 0x00][..],
            &[0x90, 0x03, 0x00, 0x01, 0x00],
            &[0xB0, 0x02, 0x00, 0x01],
            &[0xD0, 0x00],
        ] {
            assert_reason(after_connect(v, bytes), PROTOCOL);
        }
    }
}

// --- PUBLISH ----------------------------------------------------------

#[test]
fn publish_qos_3_mqtt_3_3_1_4() {
    for v in both() {
        assert_reason(
            after_connect(
                v,
                &raw_publish(v.level(), "t", 3, 1, false, false, b"payload"),
            ),
            MALFORMED,
        );
    }
}

#[test]
fn publish_dup_with_qos_0_mqtt_3_3_1_2() {
    for v in both() {
        assert_reason(
            after_connect(
                v,
                &raw_publish(v.level(), "t", 0, 0, false, true, b"payload"),
            ),
            MALFORMED,
        );
    }
}

#[test]
fn publish_packet_id_0_mqtt_2_3_1_1() {
    for v in both() {
        assert_reason(
            after_connect(
                v,
                &raw_publish(v.level(), "t", 1, 0, false, false, b"payload"),
            ),
            MALFORMED,
        );
    }
}

#[test]
fn publish_topic_with_nul_mqtt_1_5_3_2_and_1_5_4_2() {
    for v in both() {
        assert_reason(
            after_connect(
                v,
                &raw_publish(v.level(), "a\0", 0, 0, false, false, b"payload"),
            ),
            MALFORMED,
        );
    }
}

#[test]
fn publish_topic_not_utf8_mqtt_1_5_3_1_and_1_5_4_1() {
    for v in both() {
        let mut body = s(&[b'a', 0xED, 0xA0, 0x80]); // a surrogate
        if v == V5 {
            body.push(0);
        }
        body.extend_from_slice(b"payload");
        let bytes = raw_packet(0x30, &body);
        assert_reason(after_connect(v, &bytes), MALFORMED);
    }
}

#[test]
fn v5_publish_empty_topic_with_topic_alias() {
    let mut body = s(b"");
    body.extend_from_slice(&[3, 0x23, 0x00, 0x07]);
    body.extend_from_slice(b"hi");
    match after_connect(V5, &raw_packet(0x30, &body)) {
        Ok(Packet::Publish(p)) => {
            assert!(p.topic.is_empty());
            assert_eq!(p.properties.and_then(|p| p.topic_alias), Some(7));
            assert_eq!(&p.payload[..], b"hi");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn v5_publish_with_subscription_identifier_mqtt_3_3_4_6() {
    let mut body = s(b"t");
    body.extend_from_slice(&[2, 0x0B, 0x05]);
    assert_reason(after_connect(V5, &raw_packet(0x30, &body)), PROTOCOL);
}

#[test]
fn v5_publish_property_length_must_match_mqtt_2_2_2_1() {
    // Property Length 1 but a 3-byte Topic Alias follows: rumqttc would
    // read it and take the rest as payload.
    let mut body = s(b"t");
    body.extend_from_slice(&[1, 0x23, 0x00, 0x07]);
    body.extend_from_slice(b"hi");
    assert_reason(after_connect(V5, &raw_packet(0x30, &body)), MALFORMED);
}

// --- acknowledgements -------------------------------------------------

#[test]
fn v5_acks_with_remaining_length_2_are_success() {
    let expected = [
        Packet::PubAck(PubAck::new(9, None)),
        Packet::PubRec(PubRec::new(9, None)),
        Packet::PubRel(PubRel::new(9, None)),
        Packet::PubComp(PubComp::new(9, None)),
    ];
    for (byte1, want) in [0x40, 0x50, 0x62, 0x70].into_iter().zip(expected) {
        assert_eq!(after_connect(V5, &[byte1, 2, 0, 9]), Ok(want));
    }
}

#[test]
fn v5_acks_with_reason_and_properties() {
    // Reason only (remaining length 3).
    assert_eq!(
        after_connect(V5, &[0x40, 3, 0, 9, 0x10]),
        Ok(Packet::PubAck(PubAck {
            pkid: 9,
            reason: PubAckReason::NoMatchingSubscribers,
            properties: None
        }))
    );
    // Reason and an empty property list.
    assert_eq!(
        after_connect(V5, &[0x62, 4, 0, 9, 0x92, 0]),
        Ok(Packet::PubRel(PubRel {
            pkid: 9,
            reason: PubRelReason::PacketIdentifierNotFound,
            properties: None
        }))
    );
    // Bytes after the properties.
    assert_reason(after_connect(V5, &[0x50, 5, 0, 9, 0, 0, 0xAA]), MALFORMED);
    // Unknown reason code.
    assert_reason(after_connect(V5, &[0x70, 3, 0, 9, 0x42]), MALFORMED);
    // Too short.
    assert_reason(after_connect(V5, &[0x40, 1, 0]), MALFORMED);
}

#[test]
fn v311_acks_are_exactly_a_packet_id() {
    assert_eq!(
        after_connect(V311, &[0x62, 2, 0, 9]),
        Ok(Packet::PubRel(PubRel::new(9, None)))
    );
    assert_reason(after_connect(V311, &[0x40, 3, 0, 9, 0]), MALFORMED);
    assert_reason(after_connect(V311, &[0x40, 0]), MALFORMED);
}

// --- SUBSCRIBE / UNSUBSCRIBE -----------------------------------------

#[test]
fn subscribe_without_filters_mqtt_3_8_3_3_and_5_0_mqtt_3_8_3_2() {
    for v in both() {
        assert_reason(
            after_connect(v, &raw_subscribe_many(v.level(), 1, &[])),
            PROTOCOL,
        );
    }
}

#[test]
fn unsubscribe_without_filters_mqtt_3_10_3_2() {
    for v in both() {
        assert_reason(
            after_connect(v, &raw_unsubscribe(v.level(), 1, &[])),
            PROTOCOL,
        );
    }
}

#[test]
fn subscribe_options_reserved_bits_mqtt_3_8_3_4_and_3_8_3_5() {
    // 3.1.1: the upper 6 bits are reserved (MQTT-3-8.3-4).
    assert_reason(
        after_connect(V311, &raw_subscribe_many(V311.level(), 1, &[("a", 0x04)])),
        MALFORMED,
    );
    assert_reason(
        after_connect(V311, &raw_subscribe_many(V311.level(), 1, &[("a", 0x03)])),
        MALFORMED,
    );
    // 5.0: bits 6 and 7 (MQTT-3.8.3-5); QoS 3 is malformed too.
    assert_reason(
        after_connect(
            V5,
            &raw_subscribe_many(V5.level(), 1, &[("a", 0x01), ("b", 0x40)]),
        ),
        MALFORMED,
    );
    assert_reason(
        after_connect(V5, &raw_subscribe_many(V5.level(), 1, &[("a", 0x03)])),
        MALFORMED,
    );
    // Retain Handling 3 is a Protocol Error (3.8.3.1).
    assert_reason(
        after_connect(V5, &raw_subscribe_many(V5.level(), 1, &[("a", 0x30)])),
        PROTOCOL,
    );
    // No Local on a Shared Subscription (MQTT-3.8.3-4).
    assert_reason(
        after_connect(
            V5,
            &raw_subscribe_many(V5.level(), 1, &[("$share/g/a", 0x04)]),
        ),
        PROTOCOL,
    );
}

#[test]
fn v5_subscribe_options_are_read() {
    match after_connect(
        V5,
        &raw_subscribe_many(V5.level(), 7, &[("a/#", 0b0010_1110)]),
    ) {
        Ok(Packet::Subscribe(s)) => {
            assert_eq!(s.pkid, 7);
            assert_eq!(
                s.filters,
                vec![Filter {
                    path: "a/#".into(),
                    qos: QoS::ExactlyOnce,
                    nolocal: true,
                    preserve_retain: true,
                    retain_forward_rule: RetainForwardRule::Never,
                }]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn v5_subscription_identifier_0_is_a_protocol_error() {
    let mut body = vec![0, 1, 2, 0x0B, 0x00];
    body.extend_from_slice(&s(b"a"));
    body.push(0);
    assert_reason(after_connect(V5, &raw_packet(0x82, &body)), PROTOCOL);
}

#[test]
fn v5_subscribe_property_length_must_match_mqtt_2_2_2_1() {
    // Property Length 0 followed by an orphan property byte is taken as
    // a filter by rumqttc; Property Length 5 swallowing the filter is
    // caught by the length check.
    let mut body = vec![0, 1, 5, 0x0B, 0x01];
    body.extend_from_slice(&s(b"a"));
    body.push(0);
    assert_reason(after_connect(V5, &raw_packet(0x82, &body)), MALFORMED);
}

#[test]
fn subscribe_and_unsubscribe_packet_id_0_mqtt_2_3_1_1() {
    for v in both() {
        assert_reason(
            after_connect(v, &raw_subscribe_many(v.level(), 0, &[("a", 0)])),
            MALFORMED,
        );
        assert_reason(
            after_connect(v, &raw_unsubscribe(v.level(), 0, &["a"])),
            MALFORMED,
        );
    }
}

#[test]
fn filters_with_nul_mqtt_1_5_3_2_and_1_5_4_2() {
    for v in both() {
        assert_reason(
            after_connect(v, &raw_subscribe_many(v.level(), 1, &[("a\0", 0)])),
            MALFORMED,
        );
        assert_reason(
            after_connect(v, &raw_unsubscribe(v.level(), 1, &["a\0"])),
            MALFORMED,
        );
    }
}

#[test]
fn filters_not_utf8_mqtt_1_5_3_1_and_1_5_4_1() {
    for v in both() {
        // Packet id 1, the property length (5.0), then the filter.
        let head: &[u8] = if v == V5 { &[0, 1, 0] } else { &[0, 1] };
        let mut subscribe = head.to_vec();
        subscribe.extend_from_slice(&s(&[0xFF]));
        subscribe.push(0);
        assert_reason(after_connect(v, &raw_packet(0x82, &subscribe)), MALFORMED);
        let mut unsubscribe = head.to_vec();
        unsubscribe.extend_from_slice(&s(&[0xC0, 0x80]));
        assert_reason(after_connect(v, &raw_packet(0xA2, &unsubscribe)), MALFORMED);
    }
}

// --- PINGREQ / DISCONNECT ---------------------------------------------

#[test]
fn v5_disconnect_remaining_length_0_and_1() {
    let normal = Packet::Disconnect(Disconnect::new(DisconnectReasonCode::NormalDisconnection));
    assert_eq!(after_connect(V5, &[0xE0, 0x00]), Ok(normal));
    assert_eq!(
        after_connect(V5, &[0xE0, 0x01, 0x04]),
        Ok(Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::DisconnectWithWillMessage
        )))
    );
    match after_connect(V5, &[0xE0, 0x07, 0x00, 0x05, 0x11, 0, 0, 0, 30]) {
        Ok(Packet::Disconnect(d)) => {
            assert_eq!(d.reason_code, DisconnectReasonCode::NormalDisconnection);
            assert_eq!(
                d.properties.and_then(|p| p.session_expiry_interval),
                Some(30)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_reason(after_connect(V5, &[0xE0, 0x01, 0x05]), MALFORMED);
    assert_reason(
        after_connect(V5, &[0xE0, 0x03, 0x00, 0x00, 0x01]),
        MALFORMED,
    );
}

#[test]
fn v311_disconnect_and_pingreq() {
    assert_eq!(
        after_connect(V311, &[0xE0, 0x00]),
        Ok(Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::NormalDisconnection
        )))
    );
    assert_eq!(
        after_connect(V311, &[0xC0, 0x00]),
        Ok(Packet::PingReq(v5::PingReq))
    );
    assert_reason(after_connect(V311, &[0xE0, 0x01, 0x00]), MALFORMED);
    assert_reason(after_connect(V311, &[0xC0, 0x01, 0x00]), MALFORMED);
    assert_reason(after_connect(V5, &[0xC0, 0x01, 0x00]), MALFORMED);
}

// --- round trips: rumqttc client encoders -> Decoder -----------------

/// Writes `packets` with rumqttc's 3.1.1 client codec.
fn v4_stream(packets: &[v4::Packet]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for p in packets {
        p.write(&mut out, usize::MAX).expect("v4 write");
    }
    out.to_vec()
}

/// Writes `packets` with rumqttc's 5.0 client codec.
fn v5_stream(packets: &[Packet]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for p in packets {
        p.write(&mut out, None).expect("v5 write");
    }
    out.to_vec()
}

/// Decodes every frame in `bytes`, failing on errors or leftovers.
fn decode_stream(bytes: &[u8]) -> Vec<Frame> {
    let mut d = Decoder::new(MAX);
    let mut buf = BytesMut::from(bytes);
    let mut frames = Vec::new();
    while let Some(f) = d.decode(&mut buf).expect("decode") {
        frames.push(f);
    }
    assert!(buf.is_empty(), "left over: {buf:?}");
    frames
}

fn v4_client_packets() -> Vec<v4::Packet> {
    let mut connect = v4::Connect::new("client-1");
    connect.keep_alive = 30;
    connect.clean_session = false;
    connect.last_will = Some(v4::LastWill::new(
        "will/t",
        "gone",
        m4::QoS::AtLeastOnce,
        true,
    ));
    connect.set_login("user", "pass");
    let mut p1 = v4::Publish::new("a/b", m4::QoS::AtLeastOnce, "one");
    p1.pkid = 1;
    p1.retain = true;
    let mut p2 = v4::Publish::new("a/c", m4::QoS::ExactlyOnce, "two");
    p2.pkid = 2;
    p2.dup = true;
    let mut sub = v4::Subscribe::new("x/+", m4::QoS::ExactlyOnce);
    sub.pkid = 3;
    sub.add("y/#".into(), m4::QoS::AtMostOnce);
    let mut unsub = v4::Unsubscribe::new("x/+");
    unsub.pkid = 4;
    unsub.topics.push("y/#".into());
    vec![
        v4::Packet::Connect(connect),
        v4::Packet::Publish(v4::Publish::new("a/b", m4::QoS::AtMostOnce, "zero")),
        v4::Packet::Publish(p1),
        v4::Packet::Publish(p2),
        v4::Packet::PubAck(v4::PubAck::new(5)),
        v4::Packet::PubRec(v4::PubRec::new(6)),
        v4::Packet::PubRel(v4::PubRel::new(7)),
        v4::Packet::PubComp(v4::PubComp::new(8)),
        v4::Packet::Subscribe(sub),
        v4::Packet::Unsubscribe(unsub),
        v4::Packet::PingReq,
        v4::Packet::Disconnect,
    ]
}

fn v4_expected_frames() -> Vec<Frame> {
    let publish = |topic: &str, qos, pkid, payload: &'static str| v5::Publish {
        dup: false,
        qos,
        retain: false,
        topic: Bytes::copy_from_slice(topic.as_bytes()),
        pkid,
        payload: Bytes::from_static(payload.as_bytes()),
        properties: None,
    };
    let filter = |path: &str, qos| Filter {
        path: path.into(),
        qos,
        nolocal: false,
        preserve_retain: false,
        retain_forward_rule: RetainForwardRule::OnEverySubscribe,
    };
    vec![
        Frame::Connect {
            version: V311,
            connect: Connect {
                keep_alive: 30,
                client_id: "client-1".into(),
                clean_start: false,
                properties: None,
            },
            will: Some(LastWill::new(
                "will/t",
                "gone",
                QoS::AtLeastOnce,
                true,
                None,
            )),
            login: Some(Login::new("user", "pass")),
        },
        Frame::Packet(Packet::Publish(publish("a/b", QoS::AtMostOnce, 0, "zero"))),
        Frame::Packet(Packet::Publish(v5::Publish {
            retain: true,
            ..publish("a/b", QoS::AtLeastOnce, 1, "one")
        })),
        Frame::Packet(Packet::Publish(v5::Publish {
            dup: true,
            ..publish("a/c", QoS::ExactlyOnce, 2, "two")
        })),
        Frame::Packet(Packet::PubAck(PubAck::new(5, None))),
        Frame::Packet(Packet::PubRec(PubRec::new(6, None))),
        Frame::Packet(Packet::PubRel(PubRel::new(7, None))),
        Frame::Packet(Packet::PubComp(PubComp::new(8, None))),
        Frame::Packet(Packet::Subscribe(v5::Subscribe {
            pkid: 3,
            filters: vec![
                filter("x/+", QoS::ExactlyOnce),
                filter("y/#", QoS::AtMostOnce),
            ],
            properties: None,
        })),
        Frame::Packet(Packet::Unsubscribe(v5::Unsubscribe {
            pkid: 4,
            filters: vec!["x/+".into(), "y/#".into()],
            properties: None,
        })),
        Frame::Packet(Packet::PingReq(v5::PingReq)),
        Frame::Packet(Packet::Disconnect(Disconnect::new(
            DisconnectReasonCode::NormalDisconnection,
        ))),
    ]
}

fn v5_client_packets() -> Vec<Packet> {
    let connect = Connect {
        keep_alive: 15,
        client_id: "client-5".into(),
        clean_start: true,
        properties: Some(ConnectProperties {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(10),
            max_packet_size: Some(4096),
            topic_alias_max: Some(5),
            request_response_info: Some(1),
            request_problem_info: Some(0),
            user_properties: vec![("k".into(), "v".into())],
            authentication_method: None,
            authentication_data: None,
        }),
    };
    let will = LastWill::new(
        "will/5",
        "bye",
        QoS::ExactlyOnce,
        false,
        Some(LastWillProperties {
            delay_interval: Some(5),
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            content_type: Some("text/plain".into()),
            response_topic: Some("resp".into()),
            correlation_data: Some(Bytes::from_static(b"cd")),
            user_properties: vec![("a".into(), "b".into())],
        }),
    );
    let mut publish = v5::Publish::new(
        "t/1",
        QoS::AtLeastOnce,
        "payload",
        Some(PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(9),
            topic_alias: Some(2),
            response_topic: Some("r".into()),
            correlation_data: Some(Bytes::from_static(b"x")),
            user_properties: vec![("u".into(), "p".into())],
            subscription_identifiers: vec![],
            content_type: Some("c".into()),
        }),
    );
    publish.pkid = 11;
    let mut subscribe = v5::Subscribe::new_many(
        [
            Filter {
                path: "a/+".into(),
                qos: QoS::AtLeastOnce,
                nolocal: true,
                preserve_retain: true,
                retain_forward_rule: RetainForwardRule::OnNewSubscribe,
            },
            Filter::new("b/#", QoS::AtMostOnce),
        ],
        Some(SubscribeProperties {
            id: Some(300),
            user_properties: vec![],
        }),
    );
    subscribe.pkid = 12;
    let mut unsubscribe = v5::Unsubscribe::new("a/+", None);
    unsubscribe.pkid = 13;
    vec![
        Packet::Connect(connect, Some(will), Some(Login::new("u", "p"))),
        Packet::Publish(publish),
        Packet::Publish(v5::Publish::new("t/0", QoS::AtMostOnce, "", None)),
        Packet::PubAck(PubAck::new(1, None)),
        Packet::PubAck(PubAck {
            pkid: 2,
            reason: PubAckReason::QuotaExceeded,
            properties: Some(PubAckProperties {
                reason_string: Some("full".into()),
                user_properties: vec![],
            }),
        }),
        Packet::PubRec(PubRec {
            pkid: 3,
            reason: PubRecReason::UnspecifiedError,
            properties: None,
        }),
        Packet::PubRel(PubRel::new(4, None)),
        Packet::PubComp(PubComp {
            pkid: 5,
            reason: PubCompReason::PacketIdentifierNotFound,
            properties: None,
        }),
        Packet::Subscribe(subscribe),
        Packet::Unsubscribe(unsubscribe),
        Packet::PingReq(v5::PingReq),
        Packet::Disconnect(Disconnect {
            reason_code: DisconnectReasonCode::DisconnectWithWillMessage,
            properties: Some(DisconnectProperties {
                session_expiry_interval: Some(0),
                reason_string: None,
                user_properties: vec![],
                server_reference: None,
            }),
        }),
    ]
}

fn v5_expected_frames() -> Vec<Frame> {
    v5_client_packets()
        .into_iter()
        .map(|p| match p {
            Packet::Connect(connect, will, login) => Frame::Connect {
                version: V5,
                connect,
                will,
                login,
            },
            p => Frame::Packet(p),
        })
        .collect()
}

#[test]
fn v311_round_trip_from_rumqttc_client() {
    let bytes = v4_stream(&v4_client_packets());
    assert_eq!(decode_stream(&bytes), v4_expected_frames());
}

#[test]
fn v5_round_trip_from_rumqttc_client() {
    let bytes = v5_stream(&v5_client_packets());
    assert_eq!(decode_stream(&bytes), v5_expected_frames());
}

#[test]
fn byte_at_a_time_completes_and_never_consumes_on_none() {
    for (bytes, expected) in [
        (v4_stream(&v4_client_packets()), v4_expected_frames()),
        (v5_stream(&v5_client_packets()), v5_expected_frames()),
    ] {
        let mut d = Decoder::new(MAX);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for &b in &bytes {
            buf.extend_from_slice(&[b]);
            loop {
                let before = buf.len();
                match d.decode(&mut buf).expect("decode") {
                    Some(f) => frames.push(f),
                    None => {
                        assert_eq!(buf.len(), before, "bytes consumed on Ok(None)");
                        break;
                    }
                }
            }
        }
        assert!(buf.is_empty());
        assert_eq!(frames, expected);
    }
}

// --- encode -----------------------------------------------------------

fn enc(version: MqttVersion, packet: &Packet) -> BytesMut {
    let mut out = BytesMut::new();
    encode(version, packet, &mut out).expect("encode");
    out
}

/// Reads `bytes` back with rumqttc's 3.1.1 client codec.
fn read_v4(mut bytes: BytesMut) -> v4::Packet {
    let p = v4::Packet::read(&mut bytes, usize::MAX).expect("v4 read");
    assert!(bytes.is_empty());
    p
}

/// Reads `bytes` back with rumqttc's 5.0 client codec.
fn read_v5(mut bytes: BytesMut) -> Packet {
    let p = Packet::read(&mut bytes, None).expect("v5 read");
    assert!(bytes.is_empty());
    p
}

fn connack(code: ConnectReturnCode, session_present: bool) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present,
        code,
        properties: None,
    })
}

#[test]
fn v311_connack_codes() {
    use v4::ConnectReturnCode as R;
    let cases = [
        (ConnectReturnCode::Success, R::Success),
        (
            ConnectReturnCode::UnsupportedProtocolVersion,
            R::RefusedProtocolVersion,
        ),
        (
            ConnectReturnCode::RefusedProtocolVersion,
            R::RefusedProtocolVersion,
        ),
        (ConnectReturnCode::ClientIdentifierNotValid, R::BadClientId),
        (ConnectReturnCode::BadClientId, R::BadClientId),
        (ConnectReturnCode::ServerUnavailable, R::ServiceUnavailable),
        (ConnectReturnCode::ServerBusy, R::ServiceUnavailable),
        (
            ConnectReturnCode::BadUserNamePassword,
            R::BadUserNamePassword,
        ),
        (ConnectReturnCode::NotAuthorized, R::NotAuthorized),
        (ConnectReturnCode::Banned, R::NotAuthorized),
        (
            ConnectReturnCode::ImplementationSpecificError,
            R::ServiceUnavailable,
        ),
    ];
    for (code, want) in cases {
        let success = want == R::Success;
        assert_eq!(
            read_v4(enc(V311, &connack(code, true))),
            // MQTT-3.2.2-4: no Session Present on a refusal.
            v4::Packet::ConnAck(v4::ConnAck::new(want, success))
        );
    }
}

#[test]
fn v5_connack_with_3_1_1_codes_does_not_panic_mqtt_3_2_2_6() {
    // rumqttc's 5.0 writer hits unreachable!() for these.
    for (code, want) in [
        (
            ConnectReturnCode::RefusedProtocolVersion,
            ConnectReturnCode::UnsupportedProtocolVersion,
        ),
        (
            ConnectReturnCode::BadClientId,
            ConnectReturnCode::ClientIdentifierNotValid,
        ),
        (
            ConnectReturnCode::ServiceUnavailable,
            ConnectReturnCode::ServerUnavailable,
        ),
    ] {
        assert_eq!(read_v5(enc(V5, &connack(code, true))), connack(want, false));
    }
    let ok = Packet::ConnAck(ConnAck {
        session_present: true,
        code: ConnectReturnCode::Success,
        properties: Some(ConnAckProperties {
            session_expiry_interval: None,
            receive_max: Some(20),
            max_qos: None,
            retain_available: Some(1),
            max_packet_size: Some(MAX),
            assigned_client_identifier: Some("auto-1".into()),
            topic_alias_max: Some(10),
            reason_string: None,
            user_properties: vec![],
            wildcard_subscription_available: None,
            subscription_identifiers_available: None,
            shared_subscription_available: Some(0),
            server_keep_alive: None,
            response_information: None,
            server_reference: None,
            authentication_method: None,
            authentication_data: None,
        }),
    });
    assert_eq!(read_v5(enc(V5, &ok)), ok);
}

#[test]
fn v311_publish_drops_properties() {
    let mut p = v5::Publish::new(
        "a/b",
        QoS::ExactlyOnce,
        "data",
        Some(PublishProperties {
            topic_alias: Some(3),
            subscription_identifiers: vec![1],
            ..Default::default()
        }),
    );
    p.pkid = 42;
    p.retain = true;
    p.dup = true;
    let mut want = v4::Publish::new("a/b", m4::QoS::ExactlyOnce, "data");
    want.pkid = 42;
    want.retain = true;
    want.dup = true;
    assert_eq!(
        read_v4(enc(V311, &Packet::Publish(p))),
        v4::Packet::Publish(want)
    );
}

#[test]
fn v311_acks_suback_unsuback_pingresp() {
    let cases = [
        (
            Packet::PubAck(PubAck::new(1, None)),
            v4::Packet::PubAck(v4::PubAck::new(1)),
        ),
        (
            Packet::PubRec(PubRec {
                pkid: 2,
                reason: PubRecReason::NotAuthorized,
                properties: None,
            }),
            v4::Packet::PubRec(v4::PubRec::new(2)),
        ),
        (
            Packet::PubRel(PubRel::new(3, None)),
            v4::Packet::PubRel(v4::PubRel::new(3)),
        ),
        (
            Packet::PubComp(PubComp::new(4, None)),
            v4::Packet::PubComp(v4::PubComp::new(4)),
        ),
        (
            Packet::SubAck(v5::SubAck {
                pkid: 5,
                return_codes: vec![
                    SubscribeReasonCode::Success(QoS::AtLeastOnce),
                    SubscribeReasonCode::TopicFilterInvalid,
                    SubscribeReasonCode::Success(QoS::ExactlyOnce),
                    SubscribeReasonCode::NotAuthorized,
                ],
                properties: None,
            }),
            v4::Packet::SubAck(v4::SubAck::new(
                5,
                vec![
                    v4::SubscribeReasonCode::Success(m4::QoS::AtLeastOnce),
                    v4::SubscribeReasonCode::Failure,
                    v4::SubscribeReasonCode::Success(m4::QoS::ExactlyOnce),
                    v4::SubscribeReasonCode::Failure,
                ],
            )),
        ),
        (
            Packet::UnsubAck(UnsubAck {
                pkid: 6,
                reasons: vec![UnsubAckReason::NoSubscriptionExisted],
                properties: None,
            }),
            v4::Packet::UnsubAck(v4::UnsubAck::new(6)),
        ),
        (Packet::PingResp(v5::PingResp), v4::Packet::PingResp),
    ];
    for (packet, want) in cases {
        assert_eq!(read_v4(enc(V311, &packet)), want);
    }
}

#[test]
fn v311_disconnect_and_auth_append_nothing() {
    let mut out = BytesMut::from(&b"xy"[..]);
    let d = Packet::Disconnect(Disconnect::new(DisconnectReasonCode::ServerShuttingDown));
    encode(V311, &d, &mut out).expect("encode");
    // (rumqttc does not export AuthReasonCode, so no test can build an
    // AUTH; encode_v311 maps it to nothing as well.)
    assert_eq!(&out[..], b"xy");
}

#[test]
fn v5_disconnect_encodings_mqtt_3_14_2_1() {
    let normal = Packet::Disconnect(Disconnect::new(DisconnectReasonCode::NormalDisconnection));
    assert_eq!(&enc(V5, &normal)[..], &[0xE0, 0x00]);
    // rumqttc alone writes E0 01 81 00 (remaining length 1, two bytes).
    let bad = Packet::Disconnect(Disconnect::new(DisconnectReasonCode::MalformedPacket));
    let bytes = enc(V5, &bad);
    assert_eq!(&bytes[..], &[0xE0, 0x02, 0x81, 0x00]);
    // rumqttc alone writes E0 00 for an empty property list.
    let empty = Packet::Disconnect(Disconnect {
        reason_code: DisconnectReasonCode::ServerShuttingDown,
        properties: Some(DisconnectProperties {
            session_expiry_interval: None,
            reason_string: None,
            user_properties: vec![],
            server_reference: None,
        }),
    });
    assert_eq!(&enc(V5, &empty)[..], &[0xE0, 0x02, 0x8B, 0x00]);
    match read_v5(bytes) {
        Packet::Disconnect(d) => {
            assert_eq!(d.reason_code, DisconnectReasonCode::MalformedPacket)
        }
        other => panic!("{other:?}"),
    }
    let with_props = Packet::Disconnect(Disconnect {
        reason_code: DisconnectReasonCode::SessionTakenOver,
        properties: Some(DisconnectProperties {
            session_expiry_interval: None,
            reason_string: Some("taken over".into()),
            user_properties: vec![],
            server_reference: None,
        }),
    });
    assert_eq!(read_v5(enc(V5, &with_props)), with_props);
}

#[test]
fn v5_server_packets_round_trip() {
    let mut p = v5::Publish::new(
        "t",
        QoS::AtLeastOnce,
        "x",
        Some(PublishProperties {
            subscription_identifiers: vec![1, 200_000],
            ..Default::default()
        }),
    );
    p.pkid = 9;
    for packet in [
        Packet::Publish(p),
        Packet::PubAck(PubAck::new(1, None)),
        Packet::PubRec(PubRec::new(2, None)),
        Packet::PubRel(PubRel::new(3, None)),
        Packet::PubComp(PubComp::new(4, None)),
        Packet::SubAck(v5::SubAck {
            pkid: 5,
            return_codes: vec![
                SubscribeReasonCode::Success(QoS::AtMostOnce),
                SubscribeReasonCode::QuotaExceeded,
            ],
            properties: None,
        }),
        Packet::UnsubAck(UnsubAck {
            pkid: 6,
            reasons: vec![UnsubAckReason::Success],
            properties: None,
        }),
        Packet::PingResp(v5::PingResp),
    ] {
        assert_eq!(read_v5(enc(V5, &packet)), packet);
    }
}

#[test]
fn encode_errors_append_nothing() {
    // QoS 1 with packet id 0: rumqttc fails after writing the topic.
    let p = Packet::Publish(v5::Publish::new("t", QoS::AtLeastOnce, "x", None));
    for v in both() {
        let mut out = BytesMut::from(&b"ab"[..]);
        assert!(encode(v, &p, &mut out).is_err());
        assert_eq!(&out[..], b"ab");
    }
}

// --- robustness -------------------------------------------------------

/// Feeds `bytes` to `d` until it needs more or fails; must not panic.
fn drain(d: &mut Decoder, bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    // Each Some consumes at least the two header bytes, so this ends.
    for _ in 0..=bytes.len() {
        match d.decode(&mut buf) {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
    panic!("decoder did not terminate");
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        drain(&mut Decoder::new(MAX), &bytes);
    }

    #[test]
    fn arbitrary_bytes_after_connect_never_panic(
        v5 in any::<bool>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let version = if v5 { V5 } else { V311 };
        let mut d = connected(version);
        drain(&mut d, &bytes);
    }

    #[test]
    fn arbitrary_packet_bodies_never_panic(
        v5 in any::<bool>(),
        byte1 in any::<u8>(),
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        // Well-framed packets of every type with random bodies reach the
        // rumqttc readers more often than raw random bytes do.
        let version = if v5 { V5 } else { V311 };
        let mut d = connected(version);
        drain(&mut d, &raw_packet(byte1, &body));
        let mut d = Decoder::new(MAX);
        let mut connect = s(b"MQTT");
        connect.extend_from_slice(&[if v5 { 5 } else { 4 }]);
        connect.extend_from_slice(&body);
        drain(&mut d, &raw_packet(0x10, &connect));
    }

    #[test]
    fn mutated_valid_streams_never_panic(
        v5 in any::<bool>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
    ) {
        // Valid packets with a few bytes changed reach deep into the
        // property and payload readers.
        let mut bytes = if v5 {
            v5_stream(&v5_client_packets())
        } else {
            v4_stream(&v4_client_packets())
        };
        for (at, byte) in edits {
            let at = at % bytes.len();
            bytes[at] = byte;
        }
        drain(&mut Decoder::new(MAX), &bytes);
    }
}
