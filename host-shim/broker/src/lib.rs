//! The built-in MQTT 3.1.1 + 5.0 broker.
//!
//! It exists so that every flow can be tried, and every test run, on
//! loopback with nothing installed, so it is strict about the specification
//! rather than lenient. Packet encoding and decoding come from `rumqttc`'s
//! `mqttbytes` modules.
//!
//! # Layout
//!
//! - [`config`]: every configuration key with its default.
//! - `codec`: framing (check, parse, advance), protocol detection from the
//!   CONNECT, and the mapping between 3.1.1 packets and the 5.0 packets the
//!   core works with.
//! - `core`: the broker as a state machine without I/O: sessions, QoS flows,
//!   routing, retained messages, wills and timers. Events go in through
//!   `handle_*`, packets to send come out of `poll_*`, and time is passed in.
//! - `session`: one client's state: subscriptions, packet identifiers, the
//!   in-flight window and the queue behind it.
//! - `trie`: the subscription trie, shared subscriptions included.
//! - `retained`: the retained message store with wildcard lookup, expiry,
//!   resumable walks in topic order, and optional disk storage (`redb`).
//! - `server`: the thin tokio shell: accept loop, one task per connection,
//!   one router task that owns the core, group commit of retained writes,
//!   the management API ([`BrokerAdmin`]), and graceful shutdown.
//! - [`admin`]: the optional admin endpoint, a small HTTP JSON API on
//!   loopback over the management API, for `host-shim retained`.

pub mod admin;
mod codec;
pub mod config;
mod core;
mod retained;
mod server;
mod session;
mod trie;
mod types;

pub use self::core::Stats;
pub use config::{
    broker_schema, BrokerConfig, ConfigError, PasswordFileError, Profile, RetainConfig,
    RetainStorage, User,
};
pub use retained::{RetainedEntry, RetainedInfo, RetainedPage, RetainedStoreError};
pub use server::{start, AdminError, BrokerAdmin, BrokerHandle, StartError, MAX_PAGE_SIZE};
