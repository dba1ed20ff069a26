//! rumqttc clients (3.1.1 and 5.0) whose incoming packets are collected
//! into an inbox, so a test can wait for one packet without losing others.

use crate::*;
use anyhow::{anyhow, bail, Result};
use std::collections::VecDeque;
use std::fmt::Debug;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// rumqttc's 5.0 packet types, plus its 5.0 `QoS`.
pub mod p5 {
    pub use rumqttc::v5::mqttbytes::v5::*;
    pub use rumqttc::v5::mqttbytes::QoS;
}

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
