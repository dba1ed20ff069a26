//! Runs the MQTT connector locally.
//!
//! The built-in broker the shim starts for flows and tests is its own crate,
//! `mqtt-broker` (in `host-shim/broker/`), with no dependency on the
//! WebAssembly runtime; the topic rules are the crate `mqtt-topic`.
//!
//! # Layout
//!
//! - [`mqtt`]: the native MQTT client capability (rumqttc), without wasmtime.
//! - [`host`]: the WebAssembly host: the connector component, its MQTT
//!   capability, and its operations under sandbox limits.
//! - [`broker_settings`]: the built-in broker's configuration as users
//!   write it, every problem with its JSON pointer.
//! - [`flow`]: flow files for `host-shim run`: the model and its JSON
//!   Schema, every problem with its JSON pointer, and the runner.
//!
//! The shim shares the connector's facts rather than restating them: its
//! model types ([`connector::model`]), broker URL parser
//! ([`connector::url`]), configuration problems ([`connector::validate`]),
//! the conversions to and from the WIT types ([`connector::wit`]), and the
//! protocol version [`mqtt_topic::MqttVersion`]. Each library function
//! fails with its own error type; `anyhow` is the command line's alone.
#![warn(missing_docs)]

pub mod broker_settings;
pub mod flow;
pub mod host;
pub mod mqtt;
