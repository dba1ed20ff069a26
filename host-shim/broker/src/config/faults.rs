//! The `faults` section: failures injected on purpose, so a flow can be
//! tried against what real networks and brokers do. Off by default.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Faults the broker injects on purpose: connections closed as by a network
/// failure, acknowledgements lost or late, CONNECTs refused, restarts.
/// Every key is optional; the defaults inject nothing. Each fault is logged
/// (info) and counted. Random choices come from `seed`, so the same seed,
/// configuration and traffic give the same faults.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FaultsConfig {
    /// Seed of the random choices (which acknowledgements `drop_acks`
    /// drops). Default 0.
    pub seed: u64,
    /// Close each connection, without DISCONNECT, as a network failure
    /// would, once it has sent this many packets (its CONNECT included);
    /// the replies to them are written first. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub close_after_packets: Option<u64>,
    /// Close every connection, without DISCONNECT, every this many
    /// milliseconds. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub close_every_ms: Option<u64>,
    /// The fraction (0 to 1) of the broker's PUBACK, PUBREC and PUBCOMP that
    /// are not sent. Clients resend only on a new connection, so the
    /// connection is closed right after what was written before the lost
    /// acknowledgement, as when the network fails between the broker acting
    /// on a packet and the acknowledgement arriving: the client resends with
    /// DUP on its next connection. Default 0.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub drop_acks: f64,
    /// Milliseconds every PUBACK, PUBREC and PUBCOMP is held back before it
    /// is written; what the connection is sent after one waits behind it,
    /// so the order of packets is kept. Default 0.
    pub delay_acks_ms: u64,
    /// The next this many CONNECTs are refused: 5.0 CONNACK 0x88 Server
    /// unavailable, 3.1.1 return code 3 Server unavailable. Default 0.
    pub refuse_connects: u64,
    /// Restart the broker every this many milliseconds: every connection
    /// dropped without DISCONNECT, the state rebuilt from what storage keeps
    /// (retained messages with `retain.storage` on disk), listening on the
    /// same addresses. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub restart_every_ms: Option<u64>,
}
