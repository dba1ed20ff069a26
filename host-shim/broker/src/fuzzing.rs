//! Entry points for `cargo fuzz` (the `fuzzing` feature; the targets are in
//! `host-shim/broker/fuzz/`): arbitrary bytes into the codec, and into the
//! core as the traffic of several connections with the clock moving. They
//! return nothing; a panic, an endless loop or unbounded memory is the
//! finding.

use crate::codec::{self, DecodeError, Decoder, Frame};
use crate::config::BrokerConfig;
use crate::core::{Action, Broker, ConnId};
use bytes::BytesMut;
use std::time::{Duration, Instant, SystemTime};

/// Connections the core fuzzer drives at once.
const CONNECTIONS: usize = 4;

/// Decodes `data` as one connection's bytes, the first byte choosing the
/// largest packet accepted, and encodes every packet decoded back for the
/// connection's version.
pub fn codec(data: &[u8]) {
    let Some((&limit, stream)) = data.split_first() else {
        return;
    };
    let mut decoder = Decoder::new(16 << (limit % 16));
    let mut buf = BytesMut::from(stream);
    let mut out = BytesMut::new();
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        if let (Frame::Packet(packet), Some(version)) = (&frame, decoder.version()) {
            out.clear();
            let _ = codec::encode(version, packet, &mut out);
        }
    }
}

/// Drives a broker core with `data` read as a script: each step a byte
/// whose low two bits pick a connection and whose other bits pick what
/// happens: bytes arrive on it (the next byte says how many follow), the
/// clock moves, its transport ends, or its writer reports writes. Every
/// packet the core sends is encoded for its connection.
pub fn core(data: &[u8]) {
    let config = BrokerConfig {
        max_inflight: 3,
        receive_maximum: 4,
        ..BrokerConfig::default()
    };
    let start = Instant::now();
    let mut now = start;
    let mut broker = Broker::new(config, Vec::new(), now, SystemTime::now());
    let mut conns: Vec<Wire> = (1..=CONNECTIONS as ConnId).map(Wire::new).collect();
    let mut next_id = CONNECTIONS as ConnId + 1;
    let mut script = data.iter().copied();
    while let Some(step) = script.next() {
        let wire = &mut conns[usize::from(step) % CONNECTIONS];
        match (step >> 2) % 4 {
            0 => {
                let len = usize::from(script.next().unwrap_or(0));
                let bytes: Vec<u8> = script.by_ref().take(len).collect();
                wire.buf.extend_from_slice(&bytes);
                if !wire.read(&mut broker, now) {
                    *wire = Wire::new(next_id);
                    next_id += 1;
                }
            }
            1 => {
                let ms = u64::from(script.next().unwrap_or(0)) * 100;
                now += Duration::from_millis(ms);
                if broker.poll_timeout().is_some_and(|due| due <= now) {
                    broker.handle_timeout(now);
                }
            }
            2 => {
                broker.handle_closed(now, wire.id);
                *wire = Wire::new(next_id);
                next_id += 1;
            }
            _ => {
                let count = usize::from(script.next().unwrap_or(0) % 8);
                broker.handle_written(now, wire.id, count);
            }
        }
        drain(&mut broker, &conns);
    }
}

/// One connection's side of the fuzzed core: its id, decoder and unread
/// bytes.
struct Wire {
    id: ConnId,
    decoder: Decoder,
    buf: BytesMut,
}

impl Wire {
    fn new(id: ConnId) -> Wire {
        Wire {
            id,
            decoder: Decoder::new(1 << 16),
            buf: BytesMut::new(),
        }
    }

    /// Hands every whole packet to the core; `false` once the connection
    /// is done for (a malformed packet, an unsupported protocol).
    fn read(&mut self, broker: &mut Broker, now: Instant) -> bool {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(frame)) => broker.handle_frame(now, self.id, frame),
                Ok(None) => return true,
                Err(DecodeError::Invalid { reason, .. }) => {
                    broker.handle_malformed(now, self.id, reason);
                    return false;
                }
                Err(_) => return false,
            }
        }
    }
}

/// Takes every action and retained write out of the core, encoding what
/// it sends.
fn drain(broker: &mut Broker, conns: &[Wire]) {
    let mut out = BytesMut::new();
    while let Some(action) = broker.poll_action() {
        if let Action::Send(conn, packet) | Action::SendPaced(conn, packet) = action {
            let version = conns
                .iter()
                .find(|w| w.id == conn)
                .and_then(|w| w.decoder.version());
            if let Some(version) = version {
                out.clear();
                let _ = codec::encode(version, &packet, &mut out);
            }
        }
    }
    while broker.poll_retained_writes().is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CONNECT (3.1.1, client id "a"), a SUBSCRIBE to `a/#` and a
    /// PUBLISH to `a/b` at QoS 1, as a script for connection 0, then the
    /// clock moving: the fuzzers' own smoke test, so the targets are known
    /// to reach the core.
    #[test]
    fn a_script_reaches_the_core() {
        let connect = [
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'a',
        ];
        let subscribe = [0x82, 8, 0, 1, 0, 3, b'a', b'/', b'#', 1];
        let publish = [0x32, 8, 0, 3, b'a', b'/', b'b', 0, 2, b'x'];
        let mut script = Vec::new();
        for packet in [&connect[..], &subscribe[..], &publish[..]] {
            script.push(0);
            script.push(packet.len() as u8);
            script.extend_from_slice(packet);
        }
        script.extend_from_slice(&[4, 255, 8]);
        core(&script);
        codec(&[
            3, 0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'a',
        ]);

        // The same script through the core by hand: the PUBLISH comes back
        // to the subscriber.
        let mut broker = Broker::new(
            BrokerConfig::default(),
            Vec::new(),
            Instant::now(),
            SystemTime::now(),
        );
        let mut wire = Wire::new(1);
        for packet in [&connect[..], &subscribe[..], &publish[..]] {
            wire.buf.extend_from_slice(packet);
        }
        assert!(wire.read(&mut broker, Instant::now()));
        let mut sent = Vec::new();
        while let Some(action) = broker.poll_action() {
            if let Action::Send(_, packet) = action {
                sent.push(format!("{packet:?}"));
            }
        }
        assert!(
            sent.iter().any(|p| p.starts_with("Publish")),
            "no PUBLISH among {sent:?}"
        );
    }
}
