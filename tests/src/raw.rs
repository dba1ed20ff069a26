//! A raw TCP client and MQTT packet builders for byte-level checks.

use crate::*;
use anyhow::{anyhow, bail, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fmt::Debug;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Control packet types (high nibble of the first byte).
pub mod kind {
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBACK: u8 = 9;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
}

/// One control packet as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: u8,
    pub body: Bytes,
}

/// A PUBLISH decoded from a [`Frame`] (properties skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPublish {
    pub topic: String,
    pub qos: u8,
    pub retain: bool,
    pub dup: bool,
    pub pkid: u16,
    pub payload: Bytes,
}

impl Frame {
    pub fn kind(&self) -> u8 {
        self.header >> 4
    }

    /// CONNACK: Session Present flag.
    pub fn session_present(&self) -> bool {
        self.body.first().is_some_and(|b| b & 1 == 1)
    }

    /// CONNACK: return code (3.1.1) / reason code (5.0).
    pub fn connack_code(&self) -> u8 {
        self.body.get(1).copied().unwrap_or(0xFF)
    }

    /// PUBACK/PUBREC/PUBREL/PUBCOMP/SUBACK/UNSUBACK: packet identifier.
    pub fn pkid(&self) -> u16 {
        u16::from_be_bytes([self.body[0], self.body[1]])
    }

    /// 5.0 DISCONNECT: reason code (0x00 when omitted).
    pub fn disconnect_reason(&self) -> u8 {
        self.body.first().copied().unwrap_or(0)
    }

    /// Re-encodes the frame, e.g. to hand it to rumqttc's decoder.
    pub fn to_bytes(&self) -> BytesMut {
        let mut out = BytesMut::new();
        out.put_u8(self.header);
        put_varint(&mut out, self.body.len());
        out.extend_from_slice(&self.body);
        out
    }

    /// Decodes the frame with rumqttc's 5.0 codec (properties included).
    pub fn v5(&self) -> Result<p5::Packet> {
        p5::Packet::read(&mut self.to_bytes(), None)
            .map_err(|e| anyhow!("decoding {self:?}: {e:?}"))
    }

    /// Decodes a PUBLISH; `v5` tells whether a property block is present.
    pub fn publish(&self, v5: bool) -> Result<RawPublish> {
        if self.kind() != kind::PUBLISH {
            bail!("expected PUBLISH, got {self:?}");
        }
        let mut b = self.body.clone();
        let qos = (self.header >> 1) & 3;
        let topic_len = b.get_u16() as usize;
        let topic = String::from_utf8(b.split_to(topic_len).to_vec())?;
        let pkid = if qos > 0 { b.get_u16() } else { 0 };
        if v5 {
            let props = get_varint(&mut b)?;
            b.advance(props);
        }
        Ok(RawPublish {
            topic,
            qos,
            retain: self.header & 1 == 1,
            dup: self.header & 8 == 8,
            pkid,
            payload: b,
        })
    }
}

pub fn put_varint(out: &mut BytesMut, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if n == 0 {
            break;
        }
    }
}

fn get_varint(b: &mut Bytes) -> Result<usize> {
    let mut n = 0usize;
    for shift in 0..4 {
        if !b.has_remaining() {
            bail!("truncated variable byte integer");
        }
        let byte = b.get_u8();
        n |= ((byte & 0x7F) as usize) << (7 * shift);
        if byte & 0x80 == 0 {
            return Ok(n);
        }
    }
    bail!("variable byte integer longer than 4 bytes")
}

fn put_str(out: &mut BytesMut, s: &[u8]) {
    out.put_u16(s.len() as u16);
    out.extend_from_slice(s);
}

fn frame(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u8(header);
    put_varint(&mut out, body.len());
    out.extend_from_slice(body);
    out.to_vec()
}

/// A Will Message for [`RawConnect`].
#[derive(Debug, Clone)]
pub struct RawWill {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    /// 5.0 Will Delay Interval.
    pub delay: Option<u32>,
}

impl RawWill {
    pub fn new(topic: &str, payload: &[u8], qos: u8, retain: bool) -> RawWill {
        RawWill {
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            qos,
            retain,
            delay: None,
        }
    }
}

/// A CONNECT packet built byte by byte (3.1.1 or 5.0).
#[derive(Debug, Clone)]
pub struct RawConnect {
    /// 4 (3.1.1) or 5 (5.0).
    pub level: u8,
    pub client_id: String,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean: bool,
    pub keep_alive: u16,
    pub will: Option<RawWill>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// 5.0 Session Expiry Interval.
    pub session_expiry: Option<u32>,
    /// 5.0 Receive Maximum.
    pub receive_maximum: Option<u16>,
    /// Raw connect flags OR-ed in (to set the reserved bit).
    pub extra_flags: u8,
}

impl RawConnect {
    pub fn v4(id: &str) -> RawConnect {
        RawConnect {
            level: 4,
            client_id: id.to_owned(),
            clean: true,
            keep_alive: 30,
            will: None,
            username: None,
            password: None,
            session_expiry: None,
            receive_maximum: None,
            extra_flags: 0,
        }
    }

    pub fn v5(id: &str) -> RawConnect {
        RawConnect {
            level: 5,
            ..RawConnect::v4(id)
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let v5 = self.level == 5;
        let mut b = BytesMut::new();
        put_str(&mut b, b"MQTT");
        b.put_u8(self.level);
        let mut flags = self.extra_flags;
        if self.clean {
            flags |= 0x02;
        }
        if let Some(w) = &self.will {
            flags |= 0x04 | (w.qos << 3);
            if w.retain {
                flags |= 0x20;
            }
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        b.put_u8(flags);
        b.put_u16(self.keep_alive);
        if v5 {
            let mut props = BytesMut::new();
            if let Some(s) = self.session_expiry {
                props.put_u8(0x11);
                props.put_u32(s);
            }
            if let Some(r) = self.receive_maximum {
                props.put_u8(0x21);
                props.put_u16(r);
            }
            put_varint(&mut b, props.len());
            b.extend_from_slice(&props);
        }
        put_str(&mut b, self.client_id.as_bytes());
        if let Some(w) = &self.will {
            if v5 {
                let mut props = BytesMut::new();
                if let Some(d) = w.delay {
                    props.put_u8(0x18);
                    props.put_u32(d);
                }
                put_varint(&mut b, props.len());
                b.extend_from_slice(&props);
            }
            put_str(&mut b, w.topic.as_bytes());
            put_str(&mut b, &w.payload);
        }
        if let Some(u) = &self.username {
            put_str(&mut b, u.as_bytes());
        }
        if let Some(p) = &self.password {
            put_str(&mut b, p.as_bytes());
        }
        frame(0x10, &b)
    }
}

/// A PUBLISH packet. `level` 5 adds an empty property block.
pub fn raw_publish(
    level: u8,
    topic: &str,
    qos: u8,
    pkid: u16,
    retain: bool,
    dup: bool,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = BytesMut::new();
    put_str(&mut b, topic.as_bytes());
    if qos > 0 {
        b.put_u16(pkid);
    }
    if level == 5 {
        b.put_u8(0);
    }
    b.extend_from_slice(payload);
    let header = 0x30 | (u8::from(dup) << 3) | (qos << 1) | u8::from(retain);
    frame(header, &b)
}

/// A 5.0 PUBLISH with a raw property block (`props`, without its length).
pub fn raw_publish_v5_props(
    topic: &str,
    qos: u8,
    pkid: u16,
    props: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut b = BytesMut::new();
    put_str(&mut b, topic.as_bytes());
    if qos > 0 {
        b.put_u16(pkid);
    }
    put_varint(&mut b, props.len());
    b.extend_from_slice(props);
    b.extend_from_slice(payload);
    frame(0x30 | (qos << 1), &b)
}

/// A SUBSCRIBE with one filter; `options` is the QoS byte (3.1.1) or the
/// Subscription Options byte (5.0).
pub fn raw_subscribe(level: u8, pkid: u16, filter: &str, options: u8) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u16(pkid);
    if level == 5 {
        b.put_u8(0);
    }
    put_str(&mut b, filter.as_bytes());
    b.put_u8(options);
    frame(0x82, &b)
}

/// A SUBSCRIBE with any number of filters (none too, which is malformed),
/// each with its QoS byte (3.1.1) or Subscription Options byte (5.0).
pub fn raw_subscribe_many(level: u8, pkid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u16(pkid);
    if level == 5 {
        b.put_u8(0);
    }
    for (filter, options) in filters {
        put_str(&mut b, filter.as_bytes());
        b.put_u8(*options);
    }
    frame(0x82, &b)
}

/// An UNSUBSCRIBE with any number of filters (none too, which is
/// malformed).
pub fn raw_unsubscribe(level: u8, pkid: u16, filters: &[&str]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u16(pkid);
    if level == 5 {
        b.put_u8(0);
    }
    for filter in filters {
        put_str(&mut b, filter.as_bytes());
    }
    frame(0xA2, &b)
}

/// A packet from its first byte and its body, with the Remaining Length
/// written in between: for the malformed packets no builder makes.
pub fn raw_packet(header: u8, body: &[u8]) -> Vec<u8> {
    frame(header, body)
}

/// PUBACK / PUBREC / PUBREL / PUBCOMP without reason code (valid in both
/// versions: an omitted 5.0 reason code means Success).
pub fn raw_ack(kind: u8, pkid: u16) -> Vec<u8> {
    let header = (kind << 4) | if kind == kind::PUBREL { 0x02 } else { 0 };
    frame(header, &pkid.to_be_bytes())
}

pub fn raw_disconnect_v4() -> Vec<u8> {
    vec![0xE0, 0x00]
}

pub fn raw_disconnect_v5(reason: u8) -> Vec<u8> {
    vec![0xE0, 0x01, reason]
}

/// A bare TCP connection speaking bytes.
pub struct Raw {
    stream: TcpStream,
    buf: BytesMut,
    eof: bool,
}

impl Raw {
    pub async fn connect(broker: &Broker) -> Result<Raw> {
        Raw::connect_to(broker.addr()).await
    }

    /// Connects to any broker at `addr` (Mosquitto too), with TCP_NODELAY.
    pub async fn connect_to(addr: SocketAddr) -> Result<Raw> {
        let stream = within("TCP connect", TcpStream::connect(addr)).await??;
        stream.set_nodelay(true)?;
        Ok(Raw {
            stream,
            buf: BytesMut::new(),
            eof: false,
        })
    }

    /// Connects, sends `connect` and expects a CONNACK; returns it.
    pub async fn handshake(broker: &Broker, connect: &RawConnect) -> Result<(Raw, Frame)> {
        Raw::handshake_at(broker.addr(), connect).await
    }

    /// [`Raw::handshake`] with any broker at `addr`.
    pub async fn handshake_at(addr: SocketAddr, connect: &RawConnect) -> Result<(Raw, Frame)> {
        let mut raw = Raw::connect_to(addr).await?;
        raw.send(&connect.encode()).await?;
        let connack = raw.recv().await?;
        if connack.kind() != kind::CONNACK {
            bail!("expected CONNACK, got {connack:?}");
        }
        Ok((raw, connack))
    }

    /// Like [`Raw::handshake`] but insists on a successful CONNACK.
    pub async fn connected(broker: &Broker, connect: &RawConnect) -> Result<Raw> {
        Raw::connected_at(broker.addr(), connect).await
    }

    /// [`Raw::connected`] with any broker at `addr`.
    pub async fn connected_at(addr: SocketAddr, connect: &RawConnect) -> Result<Raw> {
        let (raw, connack) = Raw::handshake_at(addr, connect).await?;
        if connack.connack_code() != 0 {
            bail!("CONNECT refused: {connack:?}");
        }
        Ok(raw)
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        within("socket write", self.stream.write_all(bytes)).await??;
        Ok(())
    }

    /// Reads one frame; `Ok(None)` when the broker closed the connection.
    async fn read_frame(&mut self) -> Result<Option<Frame>> {
        loop {
            if let Some(f) = self.parse_buffered()? {
                return Ok(Some(f));
            }
            if self.eof {
                return Ok(None);
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                // A reset is the broker closing on us too.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    self.eof = true
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn parse_buffered(&mut self) -> Result<Option<Frame>> {
        let mut len = 0usize;
        let mut i = 1;
        loop {
            let Some(&byte) = self.buf.get(i) else {
                return Ok(None);
            };
            len |= ((byte & 0x7F) as usize) << (7 * (i - 1));
            i += 1;
            if byte & 0x80 == 0 {
                break;
            }
            if i > 4 {
                bail!("malformed remaining length from broker");
            }
        }
        if self.buf.len() < i + len {
            return Ok(None);
        }
        let mut f = self.buf.split_to(i + len);
        let header = f[0];
        f.advance(i);
        Ok(Some(Frame {
            header,
            body: f.freeze(),
        }))
    }

    /// The next frame within [`WAIT`]; an error if the connection closes.
    pub async fn recv(&mut self) -> Result<Frame> {
        within("a packet from the broker", self.read_frame())
            .await??
            .ok_or_else(|| anyhow!("broker closed the connection"))
    }

    /// The next frame within [`WAIT`], or `None` when the broker closes the
    /// connection first.
    pub async fn recv_or_closed(&mut self) -> Result<Option<Frame>> {
        within("a packet or the close from the broker", self.read_frame()).await?
    }

    /// The next frame if one arrives within `period`.
    pub async fn recv_for(&mut self, period: Duration) -> Result<Option<Frame>> {
        match tokio::time::timeout(period, self.read_frame()).await {
            Err(_) => Ok(None),
            Ok(Ok(Some(f))) => Ok(Some(f)),
            Ok(Ok(None)) => bail!("broker closed the connection"),
            Ok(Err(e)) => Err(e),
        }
    }

    /// Waits (up to `limit`) for the broker to close the connection; returns
    /// every frame it sent before closing.
    pub async fn closed_within(&mut self, limit: Duration) -> Result<Vec<Frame>> {
        let mut frames = Vec::new();
        let deadline = Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.read_frame()).await {
                Err(_) => bail!(
                    "broker did not close the connection within {limit:?}; it sent {frames:?}"
                ),
                Ok(r) => match r? {
                    Some(f) => frames.push(f),
                    None => return Ok(frames),
                },
            }
        }
    }

    pub async fn closed(&mut self) -> Result<Vec<Frame>> {
        self.closed_within(WAIT).await
    }

    /// Reads and throws away whatever the broker sends until it closes the
    /// connection or reading fails; returns how many bytes that was. For
    /// load generators, whose subscribers must keep up without parsing.
    pub async fn discard(mut self) -> u64 {
        let mut total = self.buf.len() as u64;
        let mut scratch = vec![0u8; 64 * 1024];
        while let Ok(n) = self.stream.read(&mut scratch).await {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    }
}
