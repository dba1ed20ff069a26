//! The host's MQTT client capability: one [`MqttClient`] per connector
//! operation, over rumqttc's 3.1.1 (v4) or 5.0 (v5) client.
//!
//! # Tasks and channels
//!
//! ```text
//!  MqttClient (any task)            driver task (one per client)
//!  ─────────────────────            ─────────────────────────────
//!  publish / subscribe ──┐
//!  ack / receive         ├─► Mutex<Core> ◄── events ── rumqttc EventLoop::poll
//!                        │      │                           ▲
//!                        └──────┴── requests (try_send) ────┘
//! ```
//!
//! - The **driver** owns the rumqttc `EventLoop` and does nothing but poll it,
//!   so the event loop keeps pinging whatever the pipeline does: no call of
//!   the handle ever waits on the driver, and the driver never waits on a
//!   caller (a full incoming queue drops QoS 0 and relies on the broker's
//!   in-flight limit for QoS 1 and 2).
//! - The **core** (`core`) is a sans-I/O state machine behind one mutex: it
//!   takes caller operations and rumqttc events and decides which requests go
//!   to the event loop. Both sides only lock it briefly and never across an
//!   `.await`, and every request is handed to rumqttc while the lock is held,
//!   so the order in which the core decides is the order on the wire.
//! - Each message of a publish batch resolves its own outcome slot at its
//!   own acknowledgement, so a batch is pipelined; the caller wakes once,
//!   when the last one resolves (`batch`). Other operations answer on a
//!   oneshot channel each.
//!
//! # Why the core assigns the pace of packet identifiers
//!
//! rumqttc numbers outgoing packets itself, cycling through
//! `1..=inflight`, and only detects a collision with a QoS 1 PUBLISH still
//! waiting for its PUBACK. A QoS 2 flow that is past PUBREC, or a SUBSCRIBE,
//! would silently share its identifier with a new PUBLISH when acks come back
//! out of order (mixed QoS in one batch is enough). The core therefore
//! mirrors rumqttc's counter and hands over an identifier-consuming request
//! only when the identifier it will get is free and stays free until rumqttc
//! assigns it (see `core::Core::pump`); a run of such requests may wait in
//! rumqttc's channel together. This also gives each `Outgoing::Publish(pkid)`
//! event an unambiguous batch entry.
//!
//! # Types at the boundary
//!
//! Every type here is the connector's model ([`connector::model`]): topics
//! arrive parsed ([`TopicName`](connector::model::TopicName),
//! [`TopicFilter`](connector::model::TopicFilter)) and are not checked
//! again; the broker URL is parsed with the connector's
//! [`BrokerUrl`](connector::url::BrokerUrl), and a message's size with
//! [`Outgoing::packet_size`](connector::model::Outgoing::packet_size), so
//! the host and the connector agree on both.
//!
//! # Layout
//!
//! - `client`: [`MqttClient`], the handle.
//! - `core`: the sans-I/O state machine; `batch`: a publish batch's
//!   outcomes.
//! - `driver`: the task that polls the event loop and reconnects; `nudge`:
//!   when a PINGREQ makes the broker send acknowledgements it holds back.
//! - `link`: the rumqttc client of either version; the protocol adapters
//!   `v4` and `v5` translate between rumqttc's types and the core's
//!   protocol-neutral requests and events; `tls` builds the rustls
//!   configuration.

mod batch;
mod client;
pub(crate) mod core;
mod driver;
mod link;
mod nudge;
pub(crate) mod tls;
pub(crate) mod v4;
pub(crate) mod v5;

#[cfg(test)]
mod tests;

pub use client::MqttClient;
