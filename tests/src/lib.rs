//! Test support shared by every suite of the workspace: bounded waits, the
//! built-in broker and Mosquitto started for one test on loopback, test
//! certificates (a CA, server and client certificates), rumqttc clients
//! with an inbox, a raw TCP client with MQTT packet builders,
//! Mosquitto's own clients, the cross-connection ordering rounds with their
//! background load, and for benchmarks: brokers as child processes, live
//! throughput and retained fan-out measured against any broker.
//!
//! The end-to-end suites across component, host and brokers live in
//! `tests/tests/`; the broker's own black-box suite lives in its crate and
//! uses this library too.
//!
//! Every wait here is bounded: a broken broker makes a test fail, never hang.

mod broker;
mod broker_process;
mod certs;
mod clients;
mod mosquitto;
mod ordering;
mod raw;
mod retained_fetch;
mod throughput;
mod wait;

pub use broker::*;
pub use broker_process::*;
pub use certs::*;
pub use clients::*;
pub use mosquitto::*;
pub use ordering::*;
pub use raw::*;
pub use retained_fetch::*;
pub use throughput::*;
pub use wait::*;
