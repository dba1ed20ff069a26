//! Broker configuration: every key, with its default, in one serde struct so
//! it can come from a JSON file (`host-shim broker --config FILE`).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Configuration of the built-in broker. Every field has a default; a JSON
/// file only names what it changes. Unknown keys are an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Address to listen on. Default `127.0.0.1`.
    pub host: String,
    /// Port to listen on; 0 picks a free port. Default 1883.
    pub port: u16,
    /// Most simultaneous connections; more wait to be accepted. Default 10000.
    pub max_connections: usize,
    /// Largest packet accepted or sent, in bytes. Larger incoming packets
    /// close the connection (5.0: DISCONNECT 0x95). Default 16 MiB.
    pub max_packet_size: u32,
    /// 5.0 Receive Maximum the broker announces: QoS 1 and 2 PUBLISHes a
    /// client may have unacknowledged; more is DISCONNECT 0x93. Default 1024.
    pub receive_maximum: u16,
    /// Most QoS 1 and 2 messages in flight to one client. A 5.0 client's own
    /// Receive Maximum lowers it further. Default 100.
    pub max_inflight: u16,
    /// Most messages queued for one session (offline, or beyond the in-flight
    /// window). Messages over the limit are dropped, counted and logged.
    /// Default 100000.
    pub max_queued_messages: usize,
    /// Highest keep alive accepted, in seconds; a 5.0 client asking for more
    /// is told this value as Server Keep Alive (a 3.1.1 client cannot be
    /// told, so its own value holds). 0 means no limit. Default 60.
    pub max_keep_alive: u16,
    /// Highest session expiry interval honoured, in seconds. Default
    /// 4294967295 (the 5.0 "never expires" value).
    pub max_session_expiry: u32,
    /// 5.0 Topic Alias Maximum the broker accepts from clients. Default 64.
    pub topic_alias_maximum: u16,
    /// Highest QoS the broker supports (0, 1 or 2). Default 2.
    pub maximum_qos: u8,
    /// Accept wildcard subscriptions. Default true.
    pub wildcard_subscriptions: bool,
    /// Accept `$share/{group}/{filter}` subscriptions. Default true.
    pub shared_subscriptions: bool,
    /// Accept 5.0 subscription identifiers. Default true.
    pub subscription_identifiers: bool,
    /// Topic filters whose subscription is refused (SUBACK 0x80). Default
    /// `["test/nosubscribe"]`, the filter interoperability suites use to
    /// check that a refused subscription is reported.
    pub deny_subscribe: Vec<String>,
    /// Let clients connect without a username. Default true.
    pub allow_anonymous: bool,
    /// Accounts accepted, inline. Default none.
    pub users: Vec<User>,
    /// A file of `username:password` lines, one account each. Default none.
    pub password_file: Option<PathBuf>,
    /// Retained message options.
    pub retain: RetainConfig,
}

/// One account the broker accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The CONNECT username.
    pub username: String,
    /// The CONNECT password.
    pub password: String,
}

/// Retained message options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetainConfig {
    /// Store retained messages. Off: CONNACK Retain Available = 0 on 5.0, and
    /// a retained PUBLISH is DISCONNECT 0x9A (5.0) or a closed connection
    /// (3.1.1). Default true.
    pub enabled: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            host: "127.0.0.1".to_owned(),
            port: 1883,
            max_connections: 10_000,
            max_packet_size: 16 * 1024 * 1024,
            receive_maximum: 1024,
            max_inflight: 100,
            max_queued_messages: 100_000,
            max_keep_alive: 60,
            max_session_expiry: u32::MAX,
            topic_alias_maximum: 64,
            maximum_qos: 2,
            wildcard_subscriptions: true,
            shared_subscriptions: true,
            subscription_identifiers: true,
            deny_subscribe: vec!["test/nosubscribe".to_owned()],
            allow_anonymous: true,
            users: Vec::new(),
            password_file: None,
            retain: RetainConfig::default(),
        }
    }
}

impl Default for RetainConfig {
    fn default() -> Self {
        RetainConfig { enabled: true }
    }
}

impl BrokerConfig {
    /// A configuration for tests: loopback, a free port, defaults otherwise.
    pub fn ephemeral() -> Self {
        BrokerConfig {
            port: 0,
            ..BrokerConfig::default()
        }
    }
}
