//! Broker configuration: every key, with its default, in one serde struct so
//! it can come from a JSON file (`host-shim broker --config FILE`).
//!
//! # Layout
//!
//! - this file: the keys, their defaults, the profiles, reading JSON, and
//!   [`ConfigError`];
//! - `check`: the value ranges the broker relies on, checked at start;
//! - `faults`: the `faults` section, failures injected on purpose;
//! - `password`: the `password_file` format;
//! - `acl`: the `acl_file` format.
//!
//! # Profiles
//!
//! `"profile"` makes the broker behave, as far as retained messages, packet
//! size and QoS go, like a given production broker does by default, so a
//! flow can be tried on a laptop against each. Keys written next to it
//! override the profile: `{"profile": "emqx", "retain": {"max_messages": 10}}`
//! is EMQX's defaults with at most ten retained messages. Without a profile
//! the defaults are the ones documented on each key (Mosquitto-like).
//!
//! | Setting | `mosquitto` | `emqx` | `aws-iot` | `tagoio` |
//! |---|---|---|---|---|
//! | `retain.enabled` | true \[M1\] | true \[E1\] | true \[A1\] | **false** \[T1\] |
//! | `retain.max_messages` | 0 (unlimited) \[M2\] | 0 (unlimited) \[E1\] | 0 \[A3\] | - |
//! | `retain.max_payload_bytes` | 0 (unlimited) \[M2\] | 1 MiB \[E1\] | 128 KiB \[A2\] | - |
//! | `retain.default_expiry` | 0 (never) | 0 (never) \[E1\] | 3 years (94,608,000 s) \[A1\] | - |
//! | `retain.clean_interval` | 60 s | 0 (no sweep) \[E1\] | 60 s | 60 s |
//! | `retain.wildcard_delivery` | true | true \[E2\] | **false** \[A4\] | - |
//! | `retain.delivery_batch` / `delivery_rate` | 0 / 0 | 0 / 0 \[E1\] | 0 / 0 | - |
//! | `retain.storage` | memory \[M3\] | memory (`ram`) \[E1\] | memory | memory |
//! | `max_packet_size` | 16 MiB (ours) | 1 MiB \[E3\] | 128 KiB \[A2\] | 16 MiB |
//! | `maximum_qos` | 2 | 2 \[E3\] | 1 \[A5\] | 1 \[T2\] |
//!
//! Sources (vendor documentation, as consulted for this table):
//!
//! - \[M1\] mosquitto.conf(5), `retain_available` (default true),
//!   <https://mosquitto.org/man/mosquitto-conf-5.html>.
//! - \[M2\] mosquitto.conf(5), `message_size_limit` and `max_queued_messages`:
//!   no limit on retained messages by default.
//! - \[M3\] mosquitto.conf(5), `persistence` (default false: retained messages
//!   live in memory).
//! - \[E1\] EMQX retainer configuration, `emqx_retainer_schema.erl` in
//!   emqx/emqx and "Retained Messages" / "Retainer" in the EMQX docs
//!   (<https://docs.emqx.com/en/emqx/latest/messaging/mqtt-retained-message.html>):
//!   `enable = true`, `max_retained_messages = 0`, `max_payload_size = 1MB`,
//!   `msg_expiry_interval = 0s`, `msg_clear_interval = 0s`,
//!   `storage_type = ram`, `flow_control.batch_deliver_number = 0`, no
//!   `deliver_rate` unless set.
//! - \[E2\] EMQX docs, "Retained Messages": retained messages are sent to
//!   subscriptions matching the topic, wildcards included.
//! - \[E3\] EMQX docs, "MQTT" configuration: `mqtt.max_packet_size = 1MB`,
//!   `max_qos_allowed = 2`.
//! - \[A1\] AWS IoT blog "Getting started with MQTT retained messages for AWS
//!   IoT Core": retained messages are stored "for up to three years after the
//!   last time they were updated or accessed". We count from the last update
//!   only.
//! - \[A2\] AWS IoT Core endpoints and quotas, message broker: payload at most
//!   128 KB (<https://docs.aws.amazon.com/general/latest/gr/iot-core.html>).
//! - \[A3\] AWS IoT Core quotas: retained messages are capped per account (an
//!   adjustable account quota), which one broker cannot model; no cap here.
//! - \[A4\] AWS IoT Core Developer Guide, "MQTT retained messages"
//!   (<https://docs.aws.amazon.com/iot/latest/developerguide/mqtt.html#mqtt-retain>):
//!   retained messages are delivered to subscriptions to the exact topic, not
//!   to wildcard topic filters.
//! - \[A5\] AWS IoT Core Developer Guide, "MQTT Quality of Service (QoS)
//!   options": QoS 0 and 1 only; `RetainedMessageSummary.qos` is 0..1.
//! - \[T1\] The issue this profile was written for states that TagoIO's broker
//!   has no retained messages. Note that TagoIO's help center ("MQTT
//!   Publishing and Subscribing", help.tago.io) says "TagoIO also supports
//!   retained messages": check before relying on this row.
//! - \[T2\] TagoIO help center, "MQTT QoS and message retention": "TagoIO
//!   officially supports QoS 0 and 1".

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

mod acl;
mod check;
mod faults;
mod password;

pub(crate) use acl::read_acl_file;
pub use acl::AclFileError;
pub(crate) use check::check;
pub use faults::FaultsConfig;
pub(crate) use password::read_password_file;
pub use password::PasswordFileError;

/// Why a configuration is refused. Messages name the key (or the file and
/// line) and what is expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The text is not JSON, has an unknown key or a value of the wrong
    /// type; the message gives the line and column.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A value is outside the range the broker accepts.
    #[error("{key} must be {expected}")]
    OutOfRange {
        /// The key, after its section's name and a dot inside one
        /// (`tls.port`).
        key: &'static str,
        /// What it must be, and what it is when that helps.
        expected: String,
    },
    /// The password file cannot be read.
    #[error("cannot read password_file {}: {error}", path.display())]
    PasswordFileUnreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A line of the password file is wrong.
    #[error("password_file {}: {error}", path.display())]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// The line and what is wrong with it.
        error: PasswordFileError,
    },
    /// The ACL file cannot be read.
    #[error("cannot read acl_file {}: {error}", path.display())]
    AclFileUnreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A line of the ACL file is wrong.
    #[error("acl_file {}: {error}", path.display())]
    AclFile {
        /// The file.
        path: PathBuf,
        /// The line and what is wrong with it.
        error: AclFileError,
    },
}

/// Configuration of the built-in broker. Every field has a default; a JSON
/// file only names what it changes. Unknown keys are an error.
///
/// Deserializing applies `profile` first and the other keys over it; see
/// [`BrokerConfig::from_json`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
// Deserialized through `ConfigFile`, whose every key is optional, so that a
// key left out takes the profile's value rather than the plain default. The
// schema describes this struct itself, with its defaults.
#[serde(from = "ConfigFile")]
#[schemars(!from, default, deny_unknown_fields)]
#[schemars(title = "Built-in MQTT broker configuration")]
pub struct BrokerConfig {
    /// Start from the defaults of a production broker (see the module
    /// documentation for what each sets and the sources); keys given next to
    /// it override it. Default none: the defaults documented on each key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
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
    /// window). Messages over the limit are dropped, counted and logged,
    /// unless `queue_full` slows their publisher instead. Default 100000.
    pub max_queued_messages: usize,
    /// Most bytes (topic and payload) of the messages queued for one
    /// session, beside `max_queued_messages`: whichever is reached first
    /// drops further messages (counted, logged at most once every 10 s),
    /// unless `queue_full` slows their publisher instead. 0 is no limit.
    /// Default 128 MiB.
    pub max_queued_bytes: usize,
    /// What happens to a QoS 1 or 2 message for a connected client whose
    /// session queue is full (`max_queued_messages`, `max_queued_bytes`).
    /// `"slow_publisher"`: it is queued anyway, and the publisher's PUBACK
    /// or PUBREC (and those of its later PUBLISHes) is held back until that
    /// queue is within its limits again, or the client has gone; the
    /// publisher's window fills and it stops sending, so nothing is lost.
    /// At most `receive_maximum` acknowledgements are held per connection,
    /// beyond which full queues drop. `"drop"`: it is dropped, counted and
    /// logged, as Mosquitto does. QoS 0 messages, and messages for clients
    /// that are away, are dropped either way. Default `"slow_publisher"`.
    pub queue_full: QueueFullPolicy,
    /// Most bytes of memory held by what is queued for one connection and
    /// not yet written to its socket (replies and messages, each counted
    /// with its place in the queue). Above it the broker stops reading the
    /// client's socket until the queue is back under half, drops live QoS 0
    /// messages for it, and closes the connection if it stays above for
    /// `slow_client_timeout` without reading anything; each episode is counted and logged (at most
    /// once every 10 s). A single larger packet is still sent. Default
    /// 16 MiB.
    pub max_outbound_bytes: usize,
    /// Most bytes held by queued messages across the broker (session
    /// queues and connections' outbound queues): beyond it new PUBLISHes
    /// are refused, 5.0 with PUBACK/PUBREC 0x97 Quota exceeded, 3.1.1
    /// acknowledged and dropped (it cannot be told), counted and logged at
    /// most once every 10 s. Retained messages are bounded by `retain.*`
    /// instead. 0 is no limit. Default 0.
    pub memory_limit: usize,
    /// Seconds a connection may stay above `max_outbound_bytes`, reading
    /// nothing, before it is closed (one that reads, however slowly, is
    /// not). Default 10.
    pub slow_client_timeout: u32,
    /// Highest keep alive accepted, in seconds; a 5.0 client asking for more
    /// is told this value as Server Keep Alive; a 3.1.1 client, which cannot
    /// be told, is refused with CONNACK 0x02 (Identifier rejected), as
    /// Mosquitto does. A keep alive of 0 (none) is accepted. 0 means no
    /// limit. Default 60.
    pub max_keep_alive: u16,
    /// Seconds a packet may take to arrive once its first bytes have: a
    /// connection that starts a packet and does not finish it in time is
    /// closed (counted, and logged at most once every 10 s), so unfinished
    /// packets cannot hold memory and connection slots. While packets keep
    /// completing the time counts from the last one. 0 is no limit. Default
    /// 60.
    pub packet_timeout: u32,
    /// Seconds a 3.1.1 persistent session (Clean Session 0) is kept after
    /// its client disconnects, as Mosquitto's option of the same name; 5.0
    /// clients say their own Session Expiry Interval. 0 is until
    /// `max_session_expiry` (by default, forever). Default 0.
    pub persistent_client_expiration: u32,
    /// Most sessions kept for disconnected clients; beyond it the session
    /// parked longest is ended (counted, logged at most once every 10 s).
    /// 0 is no limit. Default 100000.
    pub max_parked_sessions: usize,
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
    /// Most subscriptions one session may hold; a SUBSCRIBE adding one more
    /// gets 0x97 Quota exceeded (5.0) or 0x80 (3.1.1) for that filter
    /// (replacing an existing subscription is always allowed). 0 is no
    /// limit. Default 10000.
    pub max_subscriptions: usize,
    /// Most levels (`/`-separated parts) in a topic name or filter: a
    /// PUBLISH or will to a deeper topic is refused as an invalid topic
    /// (5.0: 0x90), a deeper filter gets SUBACK 0x8F (5.0) or 0x80 (3.1.1).
    /// 0 is no limit. Default 128.
    pub max_topic_levels: usize,
    /// Topic filters whose subscription is refused (SUBACK 0x80). Default
    /// `["test/nosubscribe"]`, the filter interoperability suites use to
    /// check that a refused subscription is reported.
    pub deny_subscribe: Vec<String>,
    /// Let clients connect without a username. Default true. When false and
    /// no account is configured (`users`, `password_file`) nobody can
    /// connect, and the broker says so at start. When true and no account
    /// is configured, user names and passwords are not checked (as in
    /// Mosquitto).
    pub allow_anonymous: bool,
    /// Accounts accepted, inline, with plain-text passwords. Default none.
    pub users: Vec<User>,
    /// A password file in Mosquitto's format, one `username:password` line
    /// an account, the password hashed by `mosquitto_passwd` (`$7$`
    /// PBKDF2-SHA512 or `$6$` SHA-512), so Mosquitto's files work as they
    /// are. A password without such a prefix is taken as plain text, with a
    /// warning at start. Default none.
    pub password_file: Option<PathBuf>,
    /// An access control file in Mosquitto's format (`user NAME`, `topic
    /// [read|write|readwrite|deny] FILTER`, `pattern ...` with `%c` and
    /// `%u`): with one, a client may publish, subscribe and receive only
    /// where a rule allows it. Refused subscriptions get SUBACK 0x87 (5.0) or
    /// 0x80 (3.1.1); refused PUBLISHes PUBACK/PUBREC 0x87 (5.0) or are
    /// dropped (3.1.1); a will to a topic the client may not write refuses
    /// the CONNECT (Not authorized). Default none: everything is allowed.
    pub acl_file: Option<PathBuf>,
    /// Retained message options.
    pub retain: RetainConfig,
    /// Session options.
    pub sessions: SessionsConfig,
    /// A TLS listener beside the plain TCP one, on the same `host`. Default
    /// none: plain TCP only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Failures injected on purpose (connections closed, acknowledgements
    /// lost or late, CONNECTs refused, restarts), to try a flow against what
    /// real networks and brokers do. Default: none injected.
    pub faults: FaultsConfig,
}

/// The TLS listener, in Mosquitto's terms (`listener 8883`, `certfile`,
/// `keyfile`, `cafile`, `require_certificate`, `use_identity_as_username`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
// Named apart from the connection's `tls` options, which flow schemas hold
// too.
#[schemars(rename = "TlsListenerConfig")]
pub struct TlsConfig {
    /// Port of the TLS listener; 0 picks a free port. Default 8883.
    #[serde(default = "default_tls_port")]
    pub port: u16,
    /// PEM file with the broker's certificate, then the intermediate
    /// certificates of its chain, if any.
    pub cert_file: PathBuf,
    /// PEM file with the private key of `cert_file` (PKCS#8, PKCS#1 or
    /// SEC1).
    pub key_file: PathBuf,
    /// PEM file with the CA certificates client certificates are checked
    /// against. A client that presents a certificate must present a valid
    /// one; whether it must present one is `require_certificate`. Default
    /// none: clients are not asked for a certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Refuse the TLS handshake of a client without a valid certificate
    /// (mutual TLS); needs `ca_file`. Default false.
    #[serde(default)]
    pub require_certificate: bool,
    /// Authenticate each client as the Common Name of its certificate: it
    /// becomes the user name, whatever user name and password the CONNECT
    /// carries, and no password is checked. Needs `require_certificate`.
    /// Default false.
    #[serde(default)]
    pub use_identity_as_username: bool,
}

/// The default port of the TLS listener, MQTT over TLS's registered port.
fn default_tls_port() -> u16 {
    8883
}

/// One account the broker accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The CONNECT username.
    pub username: String,
    /// The CONNECT password.
    pub password: String,
}

/// A production broker whose defaults a configuration starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Eclipse Mosquitto 2: retained messages without limits, delivered to
    /// wildcard subscriptions too. The same as no profile.
    Mosquitto,
    /// EMQX 5: 1 MiB payloads and packets, no expiry, no sweep.
    Emqx,
    /// AWS IoT Core: QoS 0 and 1, 128 KiB payloads, retained messages kept
    /// three years and sent only to subscriptions without wildcards.
    AwsIot,
    /// TagoIO: no retained messages, QoS 0 and 1.
    Tagoio,
}

/// Retained message options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RetainConfig {
    /// Store retained messages. Off: CONNACK Retain Available = 0 on 5.0,
    /// a retained PUBLISH is DISCONNECT 0x9A (5.0) or a closed connection
    /// (3.1.1), and a CONNECT with a retained will is refused with 0x9A
    /// (MQTT-3.2.2-13/-14 in 5.0). Default true.
    pub enabled: bool,
    /// Where retained messages are kept: `"memory"`, or `{"disk": "PATH"}`
    /// for a database file that survives restarts and crashes (a retained
    /// QoS 1 or 2 PUBLISH is acknowledged only once it is on disk). Memory
    /// stays the index either way: reads never touch the disk. Default
    /// `"memory"`.
    pub storage: RetainStorage,
    /// Most retained messages kept; 0 is no limit. When full, a topic that has
    /// one can still replace or clear it, but a new topic's message is not
    /// stored (it is still delivered to current subscribers); the refusal is
    /// logged and counted. Default 0.
    pub max_messages: usize,
    /// Largest payload, in bytes, of a message that is retained; 0 is no
    /// limit. A larger retained PUBLISH is delivered as usual but not stored
    /// (logged and counted). Default 0.
    pub max_payload_bytes: usize,
    /// Seconds a retained message is kept when its PUBLISH has no Message
    /// Expiry Interval of its own (which takes precedence); 0 is forever.
    /// Default 0.
    pub default_expiry: u32,
    /// Seconds between sweeps that free expired retained messages; 0 never
    /// sweeps. Expired messages are never delivered, swept or not. Default 60.
    pub clean_interval: u32,
    /// Send retained messages to new subscriptions whose filter has a
    /// wildcard. False behaves like AWS IoT Core: only a filter naming a topic
    /// exactly gets that topic's retained message. Default true.
    pub wildcard_delivery: bool,
    /// Most retained messages a new subscription is sent per step: they are
    /// read from the store a step at a time as the client's in-flight window
    /// frees up, never all at once; 0 is as many as the window (QoS 1 and 2)
    /// allows, or all of them (QoS 0). Default 0.
    pub delivery_batch: usize,
    /// Most retained messages per second sent to one new subscription; 0 is
    /// no limit. With a limit, steps of `delivery_batch` messages (1 if 0)
    /// are spaced out to keep the rate. Default 0.
    pub delivery_rate: u32,
}

/// What the broker does with a QoS 1 or 2 message for a connected client
/// whose session queue is full (`queue_full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueueFullPolicy {
    /// Queue it over the limits and hold back the publisher's
    /// acknowledgements until the queue is within them again: the publisher
    /// is slowed, nothing is lost.
    #[default]
    SlowPublisher,
    /// Drop it (counted, logged), as Mosquitto does.
    Drop,
}

/// Where the broker keeps what it stores: retained messages
/// (`retain.storage`) or sessions (`sessions.storage`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RetainStorage {
    /// In memory only: gone when the broker stops.
    #[default]
    Memory,
    /// In memory and in a database file at this path (created if missing),
    /// loaded back at start.
    Disk(PathBuf),
}

/// Session options.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// Where persistent sessions (5.0 Session Expiry Interval above 0,
    /// 3.1.1 Clean Session 0) are kept: `"memory"`, or `{"disk": "PATH"}`
    /// for a database file that survives restarts and crashes: the
    /// subscriptions, the messages in flight and queued, the QoS 2 packet
    /// identifiers awaiting PUBREL. An acknowledgement that depends on a
    /// session's change (a PUBACK or PUBREC for a message queued for a
    /// persistent session, for one) goes out only once the change is on
    /// disk. It may name the `retain.storage` file: one file then holds
    /// both. Default `"memory"`.
    pub storage: RetainStorage,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            profile: None,
            host: "127.0.0.1".to_owned(),
            port: 1883,
            max_connections: 10_000,
            max_packet_size: 16 * 1024 * 1024,
            receive_maximum: 1024,
            max_inflight: 100,
            max_queued_messages: 100_000,
            max_queued_bytes: 128 * 1024 * 1024,
            queue_full: QueueFullPolicy::SlowPublisher,
            max_outbound_bytes: 16 * 1024 * 1024,
            slow_client_timeout: 10,
            memory_limit: 0,
            max_keep_alive: 60,
            packet_timeout: 60,
            persistent_client_expiration: 0,
            max_parked_sessions: 100_000,
            max_session_expiry: u32::MAX,
            topic_alias_maximum: 64,
            maximum_qos: 2,
            wildcard_subscriptions: true,
            shared_subscriptions: true,
            subscription_identifiers: true,
            max_subscriptions: 10_000,
            max_topic_levels: 128,
            deny_subscribe: vec!["test/nosubscribe".to_owned()],
            allow_anonymous: true,
            users: Vec::new(),
            password_file: None,
            acl_file: None,
            retain: RetainConfig::default(),
            sessions: SessionsConfig::default(),
            tls: None,
            faults: FaultsConfig::default(),
        }
    }
}

impl Default for RetainConfig {
    fn default() -> Self {
        RetainConfig {
            enabled: true,
            storage: RetainStorage::Memory,
            max_messages: 0,
            max_payload_bytes: 0,
            default_expiry: 0,
            clean_interval: 60,
            wildcard_delivery: true,
            delivery_batch: 0,
            delivery_rate: 0,
        }
    }
}

/// Three years of 365 days, in seconds: how long AWS IoT Core keeps a
/// retained message.
const THREE_YEARS: u32 = 3 * 365 * 24 * 60 * 60;

impl BrokerConfig {
    /// The defaults of `profile` (see the module documentation).
    pub fn profile(profile: Profile) -> Self {
        let mut config = BrokerConfig {
            profile: Some(profile),
            ..BrokerConfig::default()
        };
        let retain = &mut config.retain;
        match profile {
            Profile::Mosquitto => {}
            Profile::Emqx => {
                retain.max_payload_bytes = 1024 * 1024;
                retain.clean_interval = 0;
                config.max_packet_size = 1024 * 1024;
            }
            Profile::AwsIot => {
                retain.max_payload_bytes = 128 * 1024;
                retain.default_expiry = THREE_YEARS;
                retain.wildcard_delivery = false;
                config.max_packet_size = 128 * 1024;
                config.maximum_qos = 1;
            }
            Profile::Tagoio => {
                retain.enabled = false;
                config.maximum_qos = 1;
            }
        }
        config
    }

    /// Reads a JSON configuration: `profile` first, the other keys over it.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Json`] (with line and column) when the text is not
    /// JSON, has an unknown key or a value of the wrong type.
    pub fn from_json(text: &str) -> Result<BrokerConfig, ConfigError> {
        Ok(serde_json::from_str(text)?)
    }

    /// Checks the value ranges [`start`](crate::start) checks first, so a
    /// configuration can be refused before the broker is started.
    ///
    /// # Errors
    ///
    /// [`ConfigError::OutOfRange`] naming the first key out of range.
    pub fn check(&self) -> Result<(), ConfigError> {
        check(self)
    }

    /// A configuration for tests: loopback, a free port, defaults otherwise.
    pub fn ephemeral() -> Self {
        BrokerConfig {
            port: 0,
            ..BrokerConfig::default()
        }
    }
}

/// The JSON Schema of the broker configuration file, generated from
/// [`BrokerConfig`]: every key with its description and default.
pub fn broker_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(BrokerConfig);
    schema.to_value()
}

/// A configuration file as written: every key optional, so that
/// [`BrokerConfig`] can tell a key left out (the profile's value holds) from a
/// key given (it overrides the profile). Serde reads it straight from the
/// text, so errors keep their line and column.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    profile: Option<Profile>,
    host: Option<String>,
    port: Option<u16>,
    max_connections: Option<usize>,
    max_packet_size: Option<u32>,
    receive_maximum: Option<u16>,
    max_inflight: Option<u16>,
    max_queued_messages: Option<usize>,
    max_queued_bytes: Option<usize>,
    queue_full: Option<QueueFullPolicy>,
    max_outbound_bytes: Option<usize>,
    slow_client_timeout: Option<u32>,
    memory_limit: Option<usize>,
    max_keep_alive: Option<u16>,
    packet_timeout: Option<u32>,
    persistent_client_expiration: Option<u32>,
    max_parked_sessions: Option<usize>,
    max_session_expiry: Option<u32>,
    topic_alias_maximum: Option<u16>,
    maximum_qos: Option<u8>,
    wildcard_subscriptions: Option<bool>,
    shared_subscriptions: Option<bool>,
    subscription_identifiers: Option<bool>,
    max_subscriptions: Option<usize>,
    max_topic_levels: Option<usize>,
    deny_subscribe: Option<Vec<String>>,
    allow_anonymous: Option<bool>,
    users: Option<Vec<User>>,
    password_file: Option<PathBuf>,
    acl_file: Option<PathBuf>,
    #[serde(default)]
    retain: RetainFile,
    sessions: Option<SessionsConfig>,
    tls: Option<TlsConfig>,
    faults: Option<FaultsConfig>,
}

/// The `retain` object as written; see [`ConfigFile`].
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RetainFile {
    enabled: Option<bool>,
    storage: Option<RetainStorage>,
    max_messages: Option<usize>,
    max_payload_bytes: Option<usize>,
    default_expiry: Option<u32>,
    clean_interval: Option<u32>,
    wildcard_delivery: Option<bool>,
    delivery_batch: Option<usize>,
    delivery_rate: Option<u32>,
}

/// Moves each `Some` field of `$from` into the same field of `$to`.
macro_rules! overlay {
    ($to:expr, $from:expr, $($field:ident),+ $(,)?) => {
        $(if let Some(value) = $from.$field {
            $to.$field = value;
        })+
    };
}

impl From<ConfigFile> for BrokerConfig {
    fn from(file: ConfigFile) -> Self {
        let mut config = file
            .profile
            .map_or_else(BrokerConfig::default, BrokerConfig::profile);
        overlay!(
            config,
            file,
            host,
            port,
            max_connections,
            max_packet_size,
            receive_maximum,
            max_inflight,
            max_queued_messages,
            max_queued_bytes,
            queue_full,
            max_outbound_bytes,
            slow_client_timeout,
            memory_limit,
            max_keep_alive,
            packet_timeout,
            persistent_client_expiration,
            max_parked_sessions,
            max_session_expiry,
            topic_alias_maximum,
            maximum_qos,
            wildcard_subscriptions,
            shared_subscriptions,
            subscription_identifiers,
            max_subscriptions,
            max_topic_levels,
            deny_subscribe,
            allow_anonymous,
            users,
        );
        if file.password_file.is_some() {
            config.password_file = file.password_file;
        }
        if file.acl_file.is_some() {
            config.acl_file = file.acl_file;
        }
        if file.tls.is_some() {
            config.tls = file.tls;
        }
        if let Some(sessions) = file.sessions {
            config.sessions = sessions;
        }
        if let Some(faults) = file.faults {
            config.faults = faults;
        }
        let retain = file.retain;
        overlay!(
            config.retain,
            retain,
            enabled,
            storage,
            max_messages,
            max_payload_bytes,
            default_expiry,
            clean_interval,
            wildcard_delivery,
            delivery_batch,
            delivery_rate,
        );
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_override_the_profile() {
        let config =
            BrokerConfig::from_json(r#"{"profile": "emqx", "retain": {"max_messages": 10}}"#)
                .unwrap();
        let mut want = BrokerConfig::profile(Profile::Emqx);
        want.retain.max_messages = 10;
        assert_eq!(config, want);
        assert_eq!(config.retain.max_payload_bytes, 1024 * 1024);

        let aws = BrokerConfig::from_json(
            r#"{"profile": "aws-iot", "max_packet_size": 1000,
                "retain": {"wildcard_delivery": true}}"#,
        )
        .unwrap();
        assert_eq!(aws.max_packet_size, 1000);
        assert!(aws.retain.wildcard_delivery);
        assert_eq!(aws.retain.default_expiry, THREE_YEARS);
        assert_eq!(aws.maximum_qos, 1);

        let tago = BrokerConfig::from_json(r#"{"profile": "tagoio"}"#).unwrap();
        assert!(!tago.retain.enabled);
        assert_eq!(
            BrokerConfig::from_json(r#"{"profile": "mosquitto"}"#).unwrap(),
            BrokerConfig {
                profile: Some(Profile::Mosquitto),
                ..BrokerConfig::default()
            }
        );
        assert_eq!(
            BrokerConfig::from_json("{}").unwrap(),
            BrokerConfig::default()
        );
    }

    #[test]
    fn storage_shapes_and_errors() {
        let config =
            BrokerConfig::from_json(r#"{"retain": {"storage": {"disk": "/tmp/r.redb"}}}"#).unwrap();
        assert_eq!(
            config.retain.storage,
            RetainStorage::Disk(PathBuf::from("/tmp/r.redb"))
        );
        let config = BrokerConfig::from_json(r#"{"retain": {"storage": "memory"}}"#).unwrap();
        assert_eq!(config.retain.storage, RetainStorage::Memory);
        let config =
            BrokerConfig::from_json(r#"{"sessions": {"storage": {"disk": "/tmp/s.redb"}}}"#)
                .unwrap();
        assert_eq!(
            config.sessions.storage,
            RetainStorage::Disk(PathBuf::from("/tmp/s.redb"))
        );
        assert_eq!(config.retain.storage, RetainStorage::Memory);
        let err = BrokerConfig::from_json(r#"{"sessions": {"store": "memory"}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("store"), "{err}");

        let err = BrokerConfig::from_json("{\n \"retain\": {\"colour\": 1}}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour") && err.contains("line 2"), "{err}");
        let err = BrokerConfig::from_json(r#"{"profile": "hivemq"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("hivemq"), "{err}");
    }

    #[test]
    fn serialized_config_reads_back_the_same() {
        for profile in [
            Profile::Mosquitto,
            Profile::Emqx,
            Profile::AwsIot,
            Profile::Tagoio,
        ] {
            let mut config = BrokerConfig::profile(profile);
            config.retain.delivery_rate = 7;
            let text = serde_json::to_string(&config).unwrap();
            assert_eq!(BrokerConfig::from_json(&text).unwrap(), config, "{text}");
        }
    }

    #[test]
    fn queue_full_reads_both_policies() {
        assert_eq!(
            BrokerConfig::default().queue_full,
            QueueFullPolicy::SlowPublisher
        );
        let config = BrokerConfig::from_json(r#"{"queue_full": "drop"}"#).unwrap();
        assert_eq!(config.queue_full, QueueFullPolicy::Drop);
        let err = BrokerConfig::from_json(r#"{"queue_full": "block"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("block") && err.contains("slow_publisher") && err.contains("drop"),
            "{err}"
        );
    }

    #[test]
    fn tls_reads_with_its_defaults() {
        let config = BrokerConfig::from_json(
            r#"{"tls": {"cert_file": "server.pem", "key_file": "server.key"}}"#,
        )
        .unwrap();
        let tls = config.tls.unwrap();
        assert_eq!(tls.port, 8883);
        assert_eq!(tls.cert_file, PathBuf::from("server.pem"));
        assert_eq!(tls.ca_file, None);
        assert!(!tls.require_certificate && !tls.use_identity_as_username);

        let err = BrokerConfig::from_json(r#"{"tls": {"cert_file": "server.pem"}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("key_file"), "{err}");
        let err = BrokerConfig::from_json(
            r#"{"tls": {"cert_file": "c", "key_file": "k", "certfile": "c"}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("certfile"), "{err}");
    }

    #[test]
    fn schema_documents_keys_and_defaults() {
        let schema = broker_schema();
        let props = &schema["properties"];
        assert_eq!(props["port"]["default"], 1883);
        let retain = &schema["$defs"]["RetainConfig"]["properties"];
        assert_eq!(retain["clean_interval"]["default"], 60);
        assert!(retain["wildcard_delivery"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("AWS IoT")));
        assert!(props["profile"]["description"].is_string());
        assert_eq!(schema["additionalProperties"], false);
    }
}
