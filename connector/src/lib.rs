//! The MQTT connector: configuration types, topic rules, and the Send and
//! Listen operations of an integration pipeline.
//!
//! Topic names and filters, and the protocol version `MqttVersion`, come
//! from the crate `mqtt-topic` (`connector/topic/`), which the host and the
//! broker share.
//!
//! # Layout
//!
//! - [`model`]: the MQTT message model shared with the host: what is
//!   published, received, subscribed, and what the broker supports.
//! - [`config`]: the connection, Send and Listen configurations, and
//!   [`schema`]: their JSON Schemas; [`url`]: broker URLs, the one parser
//!   the host connects with too.
//! - [`validate`]: every problem of a configuration at once, each with a
//!   JSON pointer; and parsing of validated configurations.
//! - [`document`]: documents and the mapping of received messages to them.
//! - [`send`] and [`listen`]: the logic of the two operations, without I/O.
//! - [`operations`]: the Send and Listen operations over the host's MQTT
//!   capability, as traits so they run natively with a fake host in tests.
//! - [`wit`]: the conversions between [`model`] and the types generated
//!   from the WIT world, one definition ([`wit_conversions!`]) that the
//!   component and the host both expand.
//! - `component` (wasm32 only): the WIT world's exports, and its imports
//!   adapted to [`operations`].
#![warn(missing_docs)]

pub mod config;
pub mod document;
pub mod listen;
pub mod model;
pub mod operations;
pub mod schema;
pub mod send;
pub mod url;
pub mod validate;
pub mod wit;

#[cfg(target_arch = "wasm32")]
mod component;
