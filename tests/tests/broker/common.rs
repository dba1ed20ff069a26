//! Shared helpers for the broker suite: an in-process broker on loopback,
//! rumqttc clients (3.1.1 and 5.0) whose incoming packets are collected into
//! an inbox, a raw TCP client with packet builders for byte-level checks, and
//! wrappers around Mosquitto's `mosquitto_pub` / `mosquitto_sub`.
//!
//! Every wait here is bounded: a broken broker makes a test fail, never hang.

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use host_shim::broker::{self, BrokerConfig, BrokerHandle};
use std::collections::VecDeque;
use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// rumqttc's 5.0 packet types, plus its 5.0 `QoS`.
pub mod p5 {
    pub use rumqttc::v5::mqttbytes::v5::*;
    pub use rumqttc::v5::mqttbytes::QoS;
}

/// Upper bound for anything that should happen promptly. Generous: it is a
/// failure deadline, not a speed expectation.
pub const WAIT: Duration = Duration::from_secs(5);

/// How long we watch for something that must NOT happen.
pub const QUIET: Duration = Duration::from_millis(300);

/// Awaits `fut` for at most [`WAIT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> Result<T> {
    within_for(WAIT, what, fut).await
}

/// Awaits `fut` for at most `limit`.
pub async fn within_for<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| anyhow!("timed out after {limit:?} waiting for {what}"))
}

// ---------------------------------------------------------------------------
// Broker
// ---------------------------------------------------------------------------

/// A broker started in-process for one test, on 127.0.0.1 and a free port.
pub struct Broker {
    handle: Option<BrokerHandle>,
    addr: SocketAddr,
}

impl Broker {
    /// Starts a broker with the default configuration.
    pub async fn start() -> Result<Broker> {
        Broker::with(BrokerConfig::ephemeral()).await
    }

    /// Starts a broker with `config`, forced onto loopback and port 0 so that
    /// tests never touch anything but a private port.
    pub async fn with(config: BrokerConfig) -> Result<Broker> {
        let config = BrokerConfig {
            host: "127.0.0.1".to_owned(),
            port: 0,
            ..config
        };
        let handle = within("broker start", broker::start(config))
            .await?
            .context("starting the broker")?;
        let addr = handle.local_addr();
        assert!(addr.ip().is_loopback(), "broker must listen on loopback");
        Ok(Broker {
            handle: Some(handle),
            addr,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Graceful shutdown, bounded.
    pub async fn shutdown(mut self) -> Result<()> {
        let handle = self.handle.take().expect("broker handle present");
        within("broker shutdown", handle.shutdown()).await
    }
}

/// The default test configuration (loopback, port 0).
pub fn config() -> BrokerConfig {
    BrokerConfig::ephemeral()
}

// ---------------------------------------------------------------------------
// Inbox: incoming packets of an event loop, with lookahead
// ---------------------------------------------------------------------------

/// Collects what a client's event loop receives. Packets that a test is not
/// looking for right now are held back, not dropped, so that waiting for a
/// SUBACK never loses a PUBLISH that arrived first.
pub struct Inbox<P, E> {
    rx: mpsc::UnboundedReceiver<Result<P, E>>,
    held: VecDeque<P>,
    ended: Option<E>,
}

impl<P: Debug, E: Debug> Inbox<P, E> {
    fn new(rx: mpsc::UnboundedReceiver<Result<P, E>>) -> Self {
        Inbox {
            rx,
            held: VecDeque::new(),
            ended: None,
        }
    }

    fn take_held(&mut self, pred: &impl Fn(&P) -> bool) -> Option<P> {
        let pos = self.held.iter().position(pred)?;
        self.held.remove(pos)
    }

    /// The next packet satisfying `pred`, within [`WAIT`].
    pub async fn next_where(&mut self, what: &str, pred: impl Fn(&P) -> bool) -> Result<P> {
        self.next_where_for(WAIT, what, pred).await
    }

    /// The next packet satisfying `pred`, within `limit`.
    pub async fn next_where_for(
        &mut self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&P) -> bool,
    ) -> Result<P> {
        if let Some(p) = self.take_held(&pred) {
            return Ok(p);
        }
        if let Some(e) = &self.ended {
            bail!("connection already ended ({e:?}) while waiting for {what}");
        }
        let deadline = Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => bail!(
                    "timed out after {limit:?} waiting for {what}; unconsumed packets: {:?}",
                    self.held
                ),
                Ok(None) => bail!("event loop stopped while waiting for {what}"),
                Ok(Some(Err(e))) => {
                    let msg = format!("connection ended ({e:?}) while waiting for {what}");
                    self.ended = Some(e);
                    bail!(msg);
                }
                Ok(Some(Ok(p))) if pred(&p) => return Ok(p),
                Ok(Some(Ok(p))) => self.held.push_back(p),
            }
        }
    }

    /// Fails if a packet satisfying `pred` arrives within `period`.
    pub async fn none_where_for(
        &mut self,
        period: Duration,
        what: &str,
        pred: impl Fn(&P) -> bool,
    ) -> Result<()> {
        if let Some(p) = self.held.iter().find(|p| pred(p)) {
            bail!("unexpected {what}: {p:?}");
        }
        let deadline = Instant::now() + period;
        while self.ended.is_none() {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) | Ok(None) => break,
                Ok(Some(Err(e))) => self.ended = Some(e),
                Ok(Some(Ok(p))) if pred(&p) => bail!("unexpected {what}: {p:?}"),
                Ok(Some(Ok(p))) => self.held.push_back(p),
            }
        }
        Ok(())
    }

    /// Waits until the connection ends and returns why.
    pub async fn ended(&mut self) -> Result<&E> {
        let deadline = Instant::now() + WAIT;
        while self.ended.is_none() {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => bail!("timed out after {WAIT:?} waiting for the connection to end"),
                Ok(None) => bail!("event loop stopped without reporting an error"),
                Ok(Some(Err(e))) => self.ended = Some(e),
                Ok(Some(Ok(p))) => self.held.push_back(p),
            }
        }
        Ok(self.ended.as_ref().expect("set above"))
    }

    /// Everything received and not yet consumed, without waiting.
    pub fn drain_now(&mut self) -> Vec<P> {
        while let Ok(item) = self.rx.try_recv() {
            match item {
                Ok(p) => self.held.push_back(p),
                Err(e) => self.ended = Some(e),
            }
        }
        self.held.drain(..).collect()
    }
}

// ---------------------------------------------------------------------------
// rumqttc 3.1.1 client
// ---------------------------------------------------------------------------

pub fn qos4(n: u8) -> rumqttc::QoS {
    rumqttc::qos(n).expect("QoS 0..=2")
}

pub fn qos5(n: u8) -> p5::QoS {
    rumqttc::v5::mqttbytes::qos(n).expect("QoS 0..=2")
}

/// 3.1.1 options for `id` against `broker`.
pub fn v4_opts(broker: &Broker, id: &str) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", broker.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(1 << 20, 1 << 20);
    o
}

/// A connected rumqttc 3.1.1 client whose event loop runs in its own task.
/// Dropping it aborts the task, which drops the TCP connection without a
/// DISCONNECT.
pub struct V4 {
    pub client: rumqttc::AsyncClient,
    pub inbox: Inbox<rumqttc::Packet, rumqttc::ConnectionError>,
    pub connack: rumqttc::ConnAck,
    task: JoinHandle<()>,
}

impl Drop for V4 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type V4Start = (
    rumqttc::AsyncClient,
    Inbox<rumqttc::Packet, rumqttc::ConnectionError>,
    JoinHandle<()>,
);

fn spawn_v4(opts: rumqttc::MqttOptions) -> V4Start {
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 1000);
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(p)) => {
                    if tx.send(Ok(p)).is_err() {
                        break;
                    }
                }
                // The DISCONNECT has been written and flushed: stop here so
                // the event loop does not reconnect.
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                Ok(rumqttc::Event::Outgoing(_)) => {}
                Err(e) => {
                    let _ = tx.send(Err(e));
                    break;
                }
            }
        }
    });
    (client, Inbox::new(rx), task)
}

impl V4 {
    /// Connects and waits for a successful CONNACK.
    pub async fn connect(opts: rumqttc::MqttOptions) -> Result<V4> {
        let (client, mut inbox, task) = spawn_v4(opts);
        let connack = match inbox
            .next_where("CONNACK", |p| matches!(p, rumqttc::Packet::ConnAck(_)))
            .await?
        {
            rumqttc::Packet::ConnAck(c) => c,
            _ => unreachable!(),
        };
        Ok(V4 {
            client,
            inbox,
            connack,
            task,
        })
    }

    /// Connects expecting the broker to refuse; returns the refusal.
    pub async fn refused(opts: rumqttc::MqttOptions) -> Result<rumqttc::ConnectionError> {
        let (_client, mut inbox, task) = spawn_v4(opts);
        let outcome = inbox
            .next_where("CONNACK", |p| matches!(p, rumqttc::Packet::ConnAck(_)))
            .await;
        task.abort();
        match (outcome, inbox.ended) {
            (Ok(connack), _) => bail!("connection accepted, expected a refusal: {connack:?}"),
            (Err(_), Some(e)) => Ok(e),
            (Err(e), None) => Err(e),
        }
    }

    pub fn session_present(&self) -> bool {
        self.connack.session_present
    }

    /// Subscribes and waits for the SUBACK; returns the granted QoS, or an
    /// error if the subscription failed.
    pub async fn subscribe(&mut self, filter: &str, qos: u8) -> Result<u8> {
        self.client.subscribe(filter, qos4(qos)).await?;
        let suback = self.suback().await?;
        match suback.return_codes.as_slice() {
            [rumqttc::SubscribeReasonCode::Success(q)] => Ok(*q as u8),
            other => bail!("subscription to {filter} failed: {other:?}"),
        }
    }

    pub async fn suback(&mut self) -> Result<rumqttc::SubAck> {
        match self
            .inbox
            .next_where("SUBACK", |p| matches!(p, rumqttc::Packet::SubAck(_)))
            .await?
        {
            rumqttc::Packet::SubAck(s) => Ok(s),
            _ => unreachable!(),
        }
    }

    /// Publishes and, for QoS 1 and 2, waits for the flow to complete
    /// (PUBACK / PUBCOMP), so the broker owns the message when this returns.
    /// Use only with one publish outstanding at a time.
    pub async fn publish(
        &mut self,
        topic: &str,
        qos: u8,
        retain: bool,
        payload: &[u8],
    ) -> Result<()> {
        self.client
            .publish(topic, qos4(qos), retain, payload.to_vec())
            .await?;
        match qos {
            0 => Ok(()),
            1 => self
                .inbox
                .next_where("PUBACK", |p| matches!(p, rumqttc::Packet::PubAck(_)))
                .await
                .map(drop),
            _ => self
                .inbox
                .next_where("PUBCOMP", |p| matches!(p, rumqttc::Packet::PubComp(_)))
                .await
                .map(drop),
        }
    }

    /// A round trip through the broker: UNSUBSCRIBE of a filter never
    /// subscribed must still be acknowledged (3.1.1 MQTT-3.10.4-5). Once the
    /// UNSUBACK is in, everything this client sent before has been processed.
    pub async fn sync(&mut self) -> Result<()> {
        self.client.unsubscribe("e2e/never/subscribed").await?;
        self.inbox
            .next_where("UNSUBACK (sync)", |p| {
                matches!(p, rumqttc::Packet::UnsubAck(_))
            })
            .await
            .map(drop)
    }

    pub async fn next_publish(&mut self) -> Result<rumqttc::Publish> {
        match self
            .inbox
            .next_where("PUBLISH", |p| matches!(p, rumqttc::Packet::Publish(_)))
            .await?
        {
            rumqttc::Packet::Publish(p) => Ok(p),
            _ => unreachable!(),
        }
    }

    /// Fails if any PUBLISH arrives within [`QUIET`].
    pub async fn no_publish(&mut self) -> Result<()> {
        self.inbox
            .none_where_for(QUIET, "PUBLISH", |p| {
                matches!(p, rumqttc::Packet::Publish(_))
            })
            .await
    }

    /// Normal disconnect: sends DISCONNECT and waits until it is on the wire.
    pub async fn disconnect(mut self) -> Result<()> {
        self.client.disconnect().await?;
        within("DISCONNECT to be sent", &mut self.task).await??;
        Ok(())
    }

    /// Abrupt disconnect: the TCP connection is dropped without DISCONNECT.
    pub async fn kill(mut self) -> Result<()> {
        self.task.abort();
        let _ = within("event loop abort", &mut self.task).await?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// rumqttc 5.0 client
// ---------------------------------------------------------------------------

/// 5.0 options for `id` against `broker`.
pub fn v5_opts(broker: &Broker, id: &str) -> rumqttc::v5::MqttOptions {
    let mut o = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", broker.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(Some(1 << 20));
    o
}

/// A connected rumqttc 5.0 client; see [`V4`].
pub struct V5 {
    pub client: rumqttc::v5::AsyncClient,
    pub inbox: Inbox<p5::Packet, rumqttc::v5::ConnectionError>,
    pub connack: p5::ConnAck,
    task: JoinHandle<()>,
}

impl Drop for V5 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type V5Start = (
    rumqttc::v5::AsyncClient,
    Inbox<p5::Packet, rumqttc::v5::ConnectionError>,
    JoinHandle<()>,
);

fn spawn_v5(opts: rumqttc::v5::MqttOptions) -> V5Start {
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(opts, 1000);
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::v5::Event::Incoming(p)) => {
                    if tx.send(Ok(p)).is_err() {
                        break;
                    }
                }
                Ok(rumqttc::v5::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                Ok(rumqttc::v5::Event::Outgoing(_)) => {}
                Err(e) => {
                    let _ = tx.send(Err(e));
                    break;
                }
            }
        }
    });
    (client, Inbox::new(rx), task)
}

/// The reason code of a DISCONNECT the broker sent, if that is how a 5.0
/// connection ended.
pub fn server_disconnect_reason(
    e: &rumqttc::v5::ConnectionError,
) -> Option<p5::DisconnectReasonCode> {
    match e {
        rumqttc::v5::ConnectionError::MqttState(rumqttc::v5::StateError::ServerDisconnect {
            reason_code,
            ..
        }) => Some(*reason_code),
        _ => None,
    }
}

impl V5 {
    pub async fn connect(opts: rumqttc::v5::MqttOptions) -> Result<V5> {
        let (client, mut inbox, task) = spawn_v5(opts);
        let connack = match inbox
            .next_where("CONNACK", |p| matches!(p, p5::Packet::ConnAck(_)))
            .await?
        {
            p5::Packet::ConnAck(c) => c,
            _ => unreachable!(),
        };
        Ok(V5 {
            client,
            inbox,
            connack,
            task,
        })
    }

    pub async fn refused(opts: rumqttc::v5::MqttOptions) -> Result<rumqttc::v5::ConnectionError> {
        let (_client, mut inbox, task) = spawn_v5(opts);
        let outcome = inbox
            .next_where("CONNACK", |p| matches!(p, p5::Packet::ConnAck(_)))
            .await;
        task.abort();
        match (outcome, inbox.ended) {
            (Ok(connack), _) => bail!("connection accepted, expected a refusal: {connack:?}"),
            (Err(_), Some(e)) => Ok(e),
            (Err(e), None) => Err(e),
        }
    }

    pub fn session_present(&self) -> bool {
        self.connack.session_present
    }

    /// The CONNACK properties; an error if there were none.
    pub fn connack_props(&self) -> Result<p5::ConnAckProperties> {
        self.connack
            .properties
            .clone()
            .ok_or_else(|| anyhow!("CONNACK without properties: {:?}", self.connack))
    }

    /// Subscribes with plain options and waits for the SUBACK; returns the
    /// granted QoS.
    pub async fn subscribe(&mut self, filter: &str, qos: u8) -> Result<u8> {
        self.subscribe_with(p5::Filter::new(filter, qos5(qos)), None)
            .await
    }

    /// Subscribes with explicit options (No Local, Retain As Published,
    /// Retain Handling) and an optional Subscription Identifier.
    pub async fn subscribe_with(&mut self, filter: p5::Filter, id: Option<usize>) -> Result<u8> {
        let path = filter.path.clone();
        match id {
            None => self.client.subscribe_many(vec![filter]).await?,
            Some(id) => {
                let props = p5::SubscribeProperties {
                    id: Some(id),
                    user_properties: vec![],
                };
                self.client
                    .subscribe_many_with_properties(vec![filter], props)
                    .await?
            }
        }
        let suback = self.suback().await?;
        match suback.return_codes.as_slice() {
            [p5::SubscribeReasonCode::Success(q)] => Ok(*q as u8),
            other => bail!("subscription to {path} failed: {other:?}"),
        }
    }

    pub async fn suback(&mut self) -> Result<p5::SubAck> {
        match self
            .inbox
            .next_where("SUBACK", |p| matches!(p, p5::Packet::SubAck(_)))
            .await?
        {
            p5::Packet::SubAck(s) => Ok(s),
            _ => unreachable!(),
        }
    }

    /// Publishes and waits for the QoS flow to complete; see [`V4::publish`].
    pub async fn publish(
        &mut self,
        topic: &str,
        qos: u8,
        retain: bool,
        payload: &[u8],
    ) -> Result<()> {
        self.client
            .publish(topic, qos5(qos), retain, payload.to_vec())
            .await?;
        self.await_publish_flow(qos).await
    }

    pub async fn publish_with(
        &mut self,
        topic: &str,
        qos: u8,
        retain: bool,
        payload: &[u8],
        props: p5::PublishProperties,
    ) -> Result<()> {
        self.client
            .publish_with_properties(topic, qos5(qos), retain, payload.to_vec(), props)
            .await?;
        self.await_publish_flow(qos).await
    }

    async fn await_publish_flow(&mut self, qos: u8) -> Result<()> {
        match qos {
            0 => Ok(()),
            1 => self
                .inbox
                .next_where("PUBACK", |p| matches!(p, p5::Packet::PubAck(_)))
                .await
                .map(drop),
            _ => self
                .inbox
                .next_where("PUBCOMP", |p| matches!(p, p5::Packet::PubComp(_)))
                .await
                .map(drop),
        }
    }

    /// A round trip through the broker; see [`V4::sync`] (5.0 MQTT-3.10.4-5).
    pub async fn sync(&mut self) -> Result<()> {
        self.client.unsubscribe("e2e/never/subscribed").await?;
        self.inbox
            .next_where("UNSUBACK (sync)", |p| matches!(p, p5::Packet::UnsubAck(_)))
            .await
            .map(drop)
    }

    pub async fn next_publish(&mut self) -> Result<p5::Publish> {
        match self
            .inbox
            .next_where("PUBLISH", |p| matches!(p, p5::Packet::Publish(_)))
            .await?
        {
            p5::Packet::Publish(p) => Ok(p),
            _ => unreachable!(),
        }
    }

    pub async fn no_publish(&mut self) -> Result<()> {
        self.no_publish_for(QUIET).await
    }

    pub async fn no_publish_for(&mut self, period: Duration) -> Result<()> {
        self.inbox
            .none_where_for(period, "PUBLISH", |p| matches!(p, p5::Packet::Publish(_)))
            .await
    }

    pub async fn disconnect(mut self) -> Result<()> {
        self.client.disconnect().await?;
        within("DISCONNECT to be sent", &mut self.task).await??;
        Ok(())
    }

    pub async fn kill(mut self) -> Result<()> {
        self.task.abort();
        let _ = within("event loop abort", &mut self.task).await?;
        Ok(())
    }
}

/// The topic of a 5.0 PUBLISH as text.
pub fn topic5(p: &p5::Publish) -> String {
    String::from_utf8_lossy(&p.topic).into_owned()
}

// ---------------------------------------------------------------------------
// Raw TCP client and packet builders
// ---------------------------------------------------------------------------

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
        let stream = within("TCP connect", TcpStream::connect(broker.addr())).await??;
        stream.set_nodelay(true)?;
        Ok(Raw {
            stream,
            buf: BytesMut::new(),
            eof: false,
        })
    }

    /// Connects, sends `connect` and expects a CONNACK; returns it.
    pub async fn handshake(broker: &Broker, connect: &RawConnect) -> Result<(Raw, Frame)> {
        let mut raw = Raw::connect(broker).await?;
        raw.send(&connect.encode()).await?;
        let connack = raw.recv().await?;
        if connack.kind() != kind::CONNACK {
            bail!("expected CONNACK, got {connack:?}");
        }
        Ok((raw, connack))
    }

    /// Like [`Raw::handshake`] but insists on a successful CONNACK.
    pub async fn connected(broker: &Broker, connect: &RawConnect) -> Result<Raw> {
        let (raw, connack) = Raw::handshake(broker, connect).await?;
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
}

// ---------------------------------------------------------------------------
// Mosquitto clients
// ---------------------------------------------------------------------------

/// The protocol flag for Mosquitto's clients.
pub fn mosq_version(v5: bool) -> &'static str {
    if v5 {
        "mqttv5"
    } else {
        "mqttv311"
    }
}

/// A Mosquitto client command against `broker`. Its stdout is a pipe, which
/// makes it fully buffered; `line_buffered` runs it under coreutils' `stdbuf
/// -oL` (which execs it, keeping the PID) so lines arrive as printed.
fn mosquitto(
    bin: &str,
    broker: &Broker,
    v5: bool,
    args: &[&str],
    line_buffered: bool,
) -> tokio::process::Command {
    let mut cmd = if line_buffered {
        let mut cmd = tokio::process::Command::new("stdbuf");
        cmd.args(["-oL", bin]);
        cmd
    } else {
        tokio::process::Command::new(bin)
    };
    cmd.args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-V", mosq_version(v5)])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

fn spawn_failed(bin: &str, e: std::io::Error) -> anyhow::Error {
    anyhow!("cannot run {bin} ({e}); install the Debian package mosquitto-clients")
}

/// Runs `mosquitto_pub` to completion and insists it succeeds.
pub async fn mosquitto_pub(broker: &Broker, v5: bool, args: &[&str]) -> Result<()> {
    let child = mosquitto("mosquitto_pub", broker, v5, args, false)
        .spawn()
        .map_err(|e| spawn_failed("mosquitto_pub", e))?;
    let out = within("mosquitto_pub to exit", child.wait_with_output()).await??;
    if !out.status.success() {
        bail!(
            "mosquitto_pub {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A running `mosquitto_sub`, its stdout read line by line.
pub struct MosquittoSub {
    child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

/// Format for `-F`: a marker, then retain flag, QoS, topic and payload.
pub const MOSQ_FORMAT: &str = "MSG %r %q %t %p";

impl MosquittoSub {
    /// Starts `mosquitto_sub` with `-d` (so the SUBACK is visible) and
    /// `-F MOSQ_FORMAT`, plus `args`.
    pub fn start(broker: &Broker, v5: bool, args: &[&str]) -> Result<MosquittoSub> {
        let mut cmd = mosquitto("mosquitto_sub", broker, v5, args, true);
        cmd.args(["-d", "-F", MOSQ_FORMAT]);
        let mut child = cmd.spawn().map_err(|e| spawn_failed("mosquitto_sub", e))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(MosquittoSub {
            child,
            lines,
            seen: Vec::new(),
        })
    }

    /// Waits until the debug output shows the SUBACK.
    pub async fn subscribed(&mut self) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Err(_) => bail!(
                    "mosquitto_sub did not report a SUBACK; output: {:?}",
                    self.seen
                ),
                Ok(None) => bail!(
                    "mosquitto_sub exited before its SUBACK; output: {:?}",
                    self.seen
                ),
                Ok(Some(line)) => {
                    let suback = line.contains("received SUBACK");
                    self.seen.push(line);
                    if suback {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Kills the process (SIGKILL): its connection ends without DISCONNECT.
    pub async fn kill(mut self) -> Result<()> {
        within("mosquitto_sub to die", self.child.kill()).await??;
        Ok(())
    }

    /// Waits for the process to exit (it should: `-C N` or `-W`) and returns
    /// the message lines, each split into (retain, qos, topic, payload).
    pub async fn messages(mut self) -> Result<Vec<(String, String, String, String)>> {
        let status = within("mosquitto_sub to exit", self.child.wait()).await??;
        // Collect what the reader task still holds.
        while let Ok(Some(line)) = within("mosquitto_sub output", self.lines.recv()).await {
            self.seen.push(line);
        }
        if !status.success() {
            bail!("mosquitto_sub failed ({status}); output: {:?}", self.seen);
        }
        Ok(self
            .seen
            .iter()
            .filter_map(|l| l.strip_prefix("MSG "))
            .map(|l| {
                let mut it = l.splitn(4, ' ');
                let mut next = || it.next().unwrap_or_default().to_owned();
                (next(), next(), next(), next())
            })
            .collect())
    }
}
