//! A few MQTT packets written by hand, to put a broker's session into a
//! state no well-behaved client leaves it in on purpose (for example a QoS 2
//! delivery stopped between PUBREL and PUBCOMP). Only what the scenarios
//! need; every read is bounded.

use crate::common::{within, Version};
use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw MQTT connection.
pub struct RawClient {
    stream: TcpStream,
    version: Version,
}

/// One packet: the first byte of its fixed header and its body.
pub struct Packet {
    pub header: u8,
    pub body: Vec<u8>,
}

impl Packet {
    /// The packet type, the high nibble of the first byte.
    pub fn kind(&self) -> u8 {
        self.header >> 4
    }

    /// The packet identifier of a PUBLISH at QoS 1 or 2: after the topic.
    pub fn publish_id(&self) -> Result<u16> {
        let topic_len = usize::from(u16::from_be_bytes([self.body[0], self.body[1]]));
        let at = 2 + topic_len;
        let id = self.body.get(at..at + 2).context("PUBLISH too short")?;
        Ok(u16::from_be_bytes([id[0], id[1]]))
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&u16::try_from(s.len()).expect("short string").to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn frame(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![header];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

impl RawClient {
    /// Connects with `client_id` and Clean Start / Clean Session 0 (on 5.0
    /// with a Session Expiry Interval of 60 s) and waits for the CONNACK.
    pub async fn connect_persistent(url: &str, version: Version, client_id: &str) -> Result<Self> {
        let addr = url.strip_prefix("mqtt://").context("an mqtt:// URL")?;
        let stream = within("a raw TCP connection", TcpStream::connect(addr)).await??;
        let mut client = RawClient { stream, version };
        let mut body = Vec::new();
        string(&mut body, "MQTT");
        body.push(match version {
            Version::V311 => 4,
            Version::V5 => 5,
        });
        body.push(0x00); // no clean start, no will, no credentials
        body.extend_from_slice(&60u16.to_be_bytes()); // keep alive
        if version == Version::V5 {
            // Properties: Session Expiry Interval (0x11) = 60.
            body.extend_from_slice(&[5, 0x11, 0, 0, 0, 60]);
        }
        string(&mut body, client_id);
        client.write(&frame(0x10, &body)).await?;
        let connack = client.read().await?;
        if connack.kind() != 2 || connack.body.get(1) != Some(&0) {
            bail!("CONNACK refused: {:?}", connack.body);
        }
        Ok(client)
    }

    /// Subscribes to `filter` at QoS 2 and waits for the SUBACK.
    pub async fn subscribe_qos2(&mut self, filter: &str) -> Result<()> {
        let mut body = 1u16.to_be_bytes().to_vec();
        if self.version == Version::V5 {
            body.push(0); // no properties
        }
        string(&mut body, filter);
        body.push(2);
        self.write(&frame(0x82, &body)).await?;
        let suback = self.read().await?;
        anyhow::ensure!(
            suback.kind() == 9,
            "expected SUBACK, got type {}",
            suback.kind()
        );
        Ok(())
    }

    /// Sends PUBREC for packet `id`.
    pub async fn pubrec(&mut self, id: u16) -> Result<()> {
        self.write(&frame(0x50, &id.to_be_bytes())).await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        within("a raw write", self.stream.write_all(bytes)).await??;
        Ok(())
    }

    /// The next packet, skipping PINGRESP.
    pub async fn read(&mut self) -> Result<Packet> {
        loop {
            let header = within("a packet", self.stream.read_u8()).await??;
            let mut len = 0usize;
            let mut shift = 0;
            loop {
                let byte = within("a packet length", self.stream.read_u8()).await??;
                len |= usize::from(byte & 0x7f) << shift;
                shift += 7;
                if byte & 0x80 == 0 {
                    break;
                }
                anyhow::ensure!(shift < 28, "malformed remaining length");
            }
            let mut body = vec![0; len];
            within("a packet body", self.stream.read_exact(&mut body)).await??;
            if header >> 4 != 13 {
                return Ok(Packet { header, body });
            }
        }
    }
}
