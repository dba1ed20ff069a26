//! The broker as a state machine without I/O. (Interface stub: being implemented.)
#![allow(dead_code, unused_variables)]

use super::codec::Frame;
use super::config::BrokerConfig;
use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Packet};
use std::time::Instant;

/// A transport connection, numbered by the server shell.
pub type ConnId = u64;

/// What the core asks the shell to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Encode `packet` and write it to the connection.
    Send(ConnId, Packet),
    /// Write everything sent so far, then close the connection.
    Close(ConnId),
}

/// Counters the broker keeps; dropped messages are never silent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages dropped because a session queue was full.
    pub dropped_queue_full: u64,
    /// Messages dropped because they expired before delivery.
    pub dropped_expired: u64,
    /// Messages not sent because they exceeded the client's Maximum Packet Size.
    pub dropped_too_large: u64,
}

/// The broker core.
#[derive(Debug)]
pub struct Broker {}

impl Broker {
    /// A broker with no sessions.
    pub fn new(config: BrokerConfig) -> Self {
        todo!()
    }

    /// A packet (or the CONNECT) decoded from connection `conn`.
    pub fn handle_frame(&mut self, now: Instant, conn: ConnId, frame: Frame) {
        todo!()
    }

    /// The codec could not decode `conn`'s bytes: close it, with a
    /// DISCONNECT carrying `reason` first when the client speaks 5.0.
    pub fn handle_malformed(&mut self, now: Instant, conn: ConnId, reason: DisconnectReasonCode) {
        todo!()
    }

    /// The transport of `conn` closed (EOF or error).
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        todo!()
    }

    /// Runs the timers due at `now`: keep alive, will delay, session expiry,
    /// message expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        todo!()
    }

    /// Disconnects every client (5.0: reason 0x8B Server shutting down).
    pub fn handle_shutdown(&mut self, now: Instant) {
        todo!()
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }

    /// The next action for the shell, in order.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        todo!()
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        todo!()
    }
}
