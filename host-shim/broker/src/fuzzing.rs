//! Entry points for the fuzz targets (`host-shim/broker/fuzz`), built only
//! with the `fuzzing` feature: the codec over arbitrary bytes, and the core
//! driven by arbitrary byte streams from several connections. Neither may
//! panic, whatever the input.

use crate::codec::{self, Decoder, Frame};
use crate::config::BrokerConfig;
use crate::core::{Action, Broker};
use bytes::BytesMut;
use mqtt_topic::MqttVersion;
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

/// The largest packet the fuzzed broker takes: small, so inputs stay small.
const MAX_PACKET: u32 = 64 * 1024;

/// Decodes `data` as one connection's bytes, as the broker reads them, and
/// encodes every packet decoded back for that connection's version.
pub fn decode_stream(data: &[u8]) {
    let mut decoder = Decoder::new(MAX_PACKET);
    let mut buf = BytesMut::from(data);
    let mut out = BytesMut::new();
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        if let (Frame::Packet(packet), Some(version)) = (&frame, decoder.version()) {
            out.clear();
            let _ = codec::encode(version, packet, &mut out);
        }
    }
}

/// Drives a broker core with `data`, read as a script of steps:
///
/// - `0x00..=0x3F` len, bytes: `len` bytes arrive on connection
///   `step % 4` and are decoded and handled as the server would;
/// - `0x40..=0x7F`: a valid CONNECT arrives on connection `step % 4`
///   (5.0 when bit `0x20` is set, else 3.1.1; clean start when bit `0x10`
///   is), so scripts get past the handshake easily;
/// - `0x80..=0xBF` n: time moves on by `n` × 100 ms and timers run;
/// - `0xC0..=0xFF` conn: connection `conn % 4` closes.
///
/// Every action the core asks for is carried out on paper: its packets are
/// encoded for their connection's version, and written counts reported.
pub fn drive_core(data: &[u8]) {
    let config = BrokerConfig {
        max_packet_size: MAX_PACKET,
        max_inflight: 4,
        max_queued_messages: 16,
        receive_maximum: 4,
        ..BrokerConfig::ephemeral()
    };
    let start = Instant::now();
    let mut now = start;
    let mut core = Broker::new(config, Vec::new(), now, SystemTime::now());
    let mut conns: HashMap<u64, (Decoder, BytesMut)> = HashMap::new();
    let mut next_conn = 1u64;
    let mut ids = [0u64; 4];
    let mut bytes = data.iter().copied();
    while let Some(step) = bytes.next() {
        match step {
            0x00..=0x7F => {
                let slot = usize::from(step % 4);
                let chunk: Vec<u8> = if step < 0x40 {
                    let len = usize::from(bytes.next().unwrap_or(0));
                    bytes.by_ref().take(len).collect()
                } else {
                    canned_connect(step)
                };
                if ids[slot] == 0 {
                    ids[slot] = next_conn;
                    next_conn += 1;
                }
                let conn = ids[slot];
                let (decoder, buf) = conns
                    .entry(conn)
                    .or_insert_with(|| (Decoder::new(MAX_PACKET), BytesMut::new()));
                buf.extend_from_slice(&chunk);
                loop {
                    match decoder.decode(buf) {
                        Ok(Some(frame)) => core.handle_frame(now, conn, frame),
                        Ok(None) => break,
                        Err(codec::DecodeError::Invalid { reason, .. }) => {
                            core.handle_malformed(now, conn, reason);
                            conns.remove(&conn);
                            ids[slot] = 0;
                            break;
                        }
                        Err(_) => {
                            conns.remove(&conn);
                            ids[slot] = 0;
                            break;
                        }
                    }
                }
            }
            0x80..=0xBF => {
                let steps = u64::from(bytes.next().unwrap_or(1));
                now += Duration::from_millis(100 * steps);
                core.handle_timeout(now);
            }
            _ => {
                let slot = usize::from(bytes.next().unwrap_or(0) % 4);
                if ids[slot] != 0 {
                    core.handle_closed(now, ids[slot]);
                    conns.remove(&ids[slot]);
                    ids[slot] = 0;
                }
            }
        }
        carry_out(&mut core, &conns, now);
    }
    core.handle_shutdown(now);
    carry_out(&mut core, &conns, now);
}

/// A valid CONNECT with client identifier `c0`..`c3`, keep alive 10 s:
/// 5.0 when bit `0x20` of `step` is set, clean start when bit `0x10` is.
fn canned_connect(step: u8) -> Vec<u8> {
    let v5 = step & 0x20 != 0;
    let flags = if step & 0x10 != 0 { 0x02 } else { 0x00 };
    let mut body = vec![
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        if v5 { 5 } else { 4 },
        flags,
        0,
        10,
    ];
    if v5 {
        body.push(0);
    }
    body.extend([0, 2, b'c', b'0' + step % 4]);
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

/// Carries out the core's actions without I/O: encodes what it sends,
/// reports paced messages as written, forgets closed connections.
fn carry_out(core: &mut Broker, conns: &HashMap<u64, (Decoder, BytesMut)>, now: Instant) {
    let _ = core.poll_retained_writes();
    let mut out = BytesMut::new();
    let mut written = Vec::new();
    while let Some(action) = core.poll_action() {
        let (conn, packet, paced) = match action {
            Action::Send(conn, packet) => (conn, packet, false),
            Action::SendPaced(conn, packet) => (conn, packet, true),
            Action::Close(_) => continue,
        };
        let version = conns
            .get(&conn)
            .and_then(|(decoder, _)| decoder.version())
            .unwrap_or(MqttVersion::V5);
        out.clear();
        let _ = codec::encode(version, &packet, &mut out);
        if paced {
            written.push(conn);
        }
    }
    for conn in written {
        core.handle_written(now, conn, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_run_without_panics() {
        // A 3.1.1 CONNECT, a SUBSCRIBE to `#`, a QoS 1 PUBLISH, time, close.
        let connect = [
            0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'a',
        ];
        let subscribe = [0x82, 0x06, 0, 1, 0, 1, b'#', 1];
        let publish = [0x32, 0x06, 0, 1, b't', 0, 2, b'x'];
        let mut script = vec![0x00, connect.len() as u8];
        script.extend_from_slice(&connect);
        script.extend([0x00, subscribe.len() as u8]);
        script.extend_from_slice(&subscribe);
        script.extend([0x01, connect.len() as u8]);
        script.extend_from_slice(&connect);
        script.extend([0x01, publish.len() as u8]);
        script.extend_from_slice(&publish);
        script.extend([0x72, 0x80, 200, 0xC0, 0]);
        drive_core(&script);
        decode_stream(&connect);
        decode_stream(&[0x10, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
}
