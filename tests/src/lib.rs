//! Test support shared by every suite of the workspace: bounded waits, the
//! built-in broker and Mosquitto started for one test on loopback (in
//! process, or as child processes whose memory can be read), rumqttc
//! clients with an inbox, a raw TCP client with MQTT packet builders, and
//! Mosquitto's own clients.
//!
//! The end-to-end suites across component, host and brokers live in
//! `tests/tests/`; the broker's own black-box suite lives in its crate and
//! uses this library too.
//!
//! Every wait here is bounded: a broken broker makes a test fail, never hang.

mod broker;
mod broker_process;
mod clients;
mod mosquitto;
mod raw;
mod wait;

pub use broker::*;
pub use broker_process::*;
pub use clients::*;
pub use mosquitto::*;
pub use raw::*;
pub use wait::*;
