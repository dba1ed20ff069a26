//! Runs the MQTT connector locally.
//!
//! # Layout
//!
//! - [`broker`]: the built-in MQTT 3.1.1 + 5.0 broker the shim starts on
//!   loopback for tests and local flows. It has no dependency on the
//!   WebAssembly runtime.
//! - [`mqtt`]: the native MQTT client capability (rumqttc), without wasmtime.
//! - [`host`]: the WebAssembly host: the connector component, its MQTT
//!   capability, and its operations under sandbox limits.
//! - [`flow`]: flow files for `host-shim run`: the model and its JSON
//!   Schema, every problem with its JSON pointer, and the runner.
#![warn(missing_docs)]

pub mod broker;
pub mod flow;
pub mod host;
pub mod mqtt;
