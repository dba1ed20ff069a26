//! 5.0 property blocks (section 2.2.2.2): a property the packet does not
//! define is a Malformed Packet (0x81); one included more than once, or with
//! a value it does not allow, is a Protocol Error (0x82), as each property's
//! section states ("It is a Protocol Error to include ... more than once").

use anyhow::{ensure, Result};
use bytes::{BufMut, BytesMut};
use e2e::*;

/// A 5.0 CONNECT (clean start, keep alive 60) with raw CONNECT properties
/// and, when given, a will with raw Will Properties.
fn connect_with(props: &[u8], will_props: Option<&[u8]>) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_slice(b"\x00\x04MQTT\x05");
    b.put_u8(if will_props.is_some() { 0x06 } else { 0x02 });
    b.put_u16(60);
    put_varint(&mut b, props.len());
    b.put_slice(props);
    b.put_slice(b"\x00\x05props");
    if let Some(will_props) = will_props {
        put_varint(&mut b, will_props.len());
        b.put_slice(will_props);
        b.put_slice(b"\x00\x04will\x00\x01w");
    }
    raw_packet(0x10, &b)
}

/// A 5.0 SUBSCRIBE of `filter` at QoS 0 with raw properties.
fn subscribe_with(props: &[u8], filter: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u16(1);
    put_varint(&mut b, props.len());
    b.put_slice(props);
    b.put_u16(filter.len() as u16);
    b.put_slice(filter.as_bytes());
    b.put_u8(0);
    raw_packet(0x82, &b)
}

/// The connection was refused: closed with no CONNACK (the server may
/// close without one, MQTT-4.13.1-1), or with a CONNACK carrying `code`.
fn refused(frames: &[Frame], code: u8, what: &str) {
    for f in frames {
        assert!(
            f.kind() == kind::CONNACK && f.connack_code() == code,
            "{what}: expected a close or CONNACK {code:#04x}, got {f:?}"
        );
    }
}

/// The connection was closed with DISCONNECT `code` and nothing else.
fn disconnected(frames: &[Frame], code: u8, what: &str) {
    assert!(
        frames.len() == 1
            && frames[0].kind() == kind::DISCONNECT
            && frames[0].disconnect_reason() == code,
        "{what}: expected DISCONNECT {code:#04x} alone, got {frames:?}"
    );
}

/// What is wrong, the CONNECT properties, the Will Properties, the code.
type ConnectCase = (&'static str, &'static [u8], Option<&'static [u8]>, u8);

/// CONNECT: two Session Expiry Intervals (3.1.2.11.2), two Receive Maximums
/// (3.1.2.11.3), Receive Maximum 0, Maximum Packet Size 0 (3.1.2.11.4),
/// Request Problem Information 2 (3.1.2.11.7), a Will Payload Format
/// Indicator 7 and two Will Delay Intervals (3.1.3.2) are Protocol Errors;
/// a Topic Alias in a CONNECT is Malformed (2.2.2.2). None gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_property_errors_mqtt_2_2_2_2() -> Result<()> {
    let broker = Broker::start().await?;
    let cases: [ConnectCase; 8] = [
        (
            "two Session Expiry Intervals",
            &[0x11, 0, 0, 0, 10, 0x11, 0, 0, 0, 20],
            None,
            0x82,
        ),
        (
            "two Receive Maximums",
            &[0x21, 0, 10, 0x21, 0, 20],
            None,
            0x82,
        ),
        ("Receive Maximum 0", &[0x21, 0, 0], None, 0x82),
        ("Maximum Packet Size 0", &[0x27, 0, 0, 0, 0], None, 0x82),
        ("Request Problem Information 2", &[0x17, 2], None, 0x82),
        (
            "Will Payload Format Indicator 7",
            &[],
            Some(&[0x01, 7]),
            0x82,
        ),
        (
            "two Will Delay Intervals",
            &[],
            Some(&[0x18, 0, 0, 0, 1, 0x18, 0, 0, 0, 2]),
            0x82,
        ),
        ("a Topic Alias in CONNECT", &[0x23, 0, 1], None, 0x81),
    ];
    for (what, props, will_props, code) in cases {
        let mut raw = Raw::connect(&broker).await?;
        raw.send(&connect_with(props, will_props)).await?;
        let frames = raw.closed().await?;
        refused(&frames, code, what);
    }
    // The same CONNECT without the error is accepted.
    let mut raw = Raw::connect(&broker).await?;
    raw.send(&connect_with(&[0x11, 0, 0, 0, 10], Some(&[0x01, 1])))
        .await?;
    let connack = raw.recv().await?;
    ensure!(connack.connack_code() == 0, "{connack:?}");
    broker.shutdown().await
}

/// PUBLISH: two Message Expiry Intervals (3.3.2.3.3), two Topic Aliases
/// (3.3.2.3.4), two Payload Format Indicators or one of 7 (3.3.2.3.2) and
/// two Content Types (3.3.2.3.9) are DISCONNECT 0x82; a Session Expiry
/// Interval in a PUBLISH is 0x81 (2.2.2.2). Nothing is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_property_errors_mqtt_2_2_2_2() -> Result<()> {
    let broker = Broker::start().await?;
    let mut watcher = Raw::connected(&broker, &RawConnect::v5("props-watch")).await?;
    watcher.send(&raw_subscribe(5, 1, "props/#", 1)).await?;
    ensure!(watcher.recv().await?.kind() == kind::SUBACK);
    let cases: [(&str, &[u8], u8); 6] = [
        (
            "two Message Expiry Intervals",
            &[0x02, 0, 0, 0, 9, 0x02, 0, 0, 0, 9],
            0x82,
        ),
        ("two Topic Aliases", &[0x23, 0, 1, 0x23, 0, 2], 0x82),
        ("two Payload Format Indicators", &[0x01, 0, 0x01, 1], 0x82),
        ("Payload Format Indicator 7", &[0x01, 7], 0x82),
        (
            "two Content Types",
            &[0x03, 0, 1, b'a', 0x03, 0, 1, b'b'],
            0x82,
        ),
        ("a Session Expiry Interval", &[0x11, 0, 0, 0, 1], 0x81),
    ];
    for (what, props, code) in cases {
        let mut raw = Raw::connected(&broker, &RawConnect::v5("props-pub")).await?;
        raw.send(&raw_publish_v5_props("props/x", 1, 1, props, b"m"))
            .await?;
        let frames = raw.closed().await?;
        disconnected(&frames, code, what);
    }
    ensure!(
        watcher
            .recv_for(std::time::Duration::from_millis(300))
            .await?
            .is_none(),
        "a refused PUBLISH was delivered"
    );
    broker.shutdown().await
}

/// A zero-length Topic Name without a Topic Alias is a Protocol Error
/// (5.0 section 3.3.2.3.4): DISCONNECT 0x82, not 0x90.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_topic_without_alias_is_a_protocol_error() -> Result<()> {
    let broker = Broker::start().await?;
    let mut raw = Raw::connected(&broker, &RawConnect::v5("empty-topic")).await?;
    raw.send(&raw_publish_v5_props("", 1, 1, &[], b"m")).await?;
    let frames = raw.closed().await?;
    disconnected(&frames, 0x82, "empty topic, no alias");
    broker.shutdown().await
}

/// SUBSCRIBE with two Subscription Identifiers is a Protocol Error
/// (3.8.2.1.2), and a Topic Alias in it is Malformed (2.2.2.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_property_errors_mqtt_2_2_2_2() -> Result<()> {
    let broker = Broker::start().await?;
    for (what, props, code) in [
        (
            "two Subscription Identifiers",
            &[0x0B, 1, 0x0B, 2][..],
            0x82,
        ),
        ("a Topic Alias", &[0x23, 0, 1][..], 0x81),
    ] {
        let mut raw = Raw::connected(&broker, &RawConnect::v5("props-sub")).await?;
        raw.send(&subscribe_with(props, "a/b")).await?;
        let frames = raw.closed().await?;
        disconnected(&frames, code, what);
    }
    broker.shutdown().await
}
