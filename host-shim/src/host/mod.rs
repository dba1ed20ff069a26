//! The WebAssembly host: loads the connector component and runs its
//! operations.
//!
//! # Layout
//!
//! - `bindings`: types and traits generated from `connector/wit`.
//! - [`capability`]: the MQTT capability (`mqtt` and `logging` imports),
//!   added to any wasmtime [`Linker`](wasmtime::component::Linker) with one
//!   call; it parses what the guest hands it into the connector's model
//!   with the conversions the component uses too
//!   ([`connector::wit_conversions!`]).
//! - `runtime`: the component compiled once ([`Runtime`]), and the Send and
//!   Listen operations, each in its own store under memory and time limits.
//! - [`policy`]: what a guest may reach through the host ([`Policy`]):
//!   by default the broker and TLS files of the connection its operation
//!   was opened with, nothing else.
//! - [`cache`]: compiled components kept on disk ([`CodeCache`]), so a
//!   command compiles the connector once per machine rather than once per
//!   run.
//!
//! Documents cross as the generated [`Document`]; errors and configuration
//! problems come back as the connector's [`Error`] and [`Problem`], so they
//! print the way the connector words them.
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use host_shim::host::{Limits, Runtime};
//!
//! let runtime = Runtime::embedded(Limits::default())?;
//! let connection = r#"{"url": "mqtt://127.0.0.1:1883"}"#;
//! let mut sender = runtime
//!     .open_sender(connection, r#"{"topic": "users/settings/user01", "retained": true}"#)
//!     .await?;
//! let document = host_shim::host::Document {
//!     id: 0,
//!     payload: br#"{"account_type":"standard"}"#.to_vec(),
//!     properties: vec![],
//! };
//! for outcome in sender.send(&[document]).await? {
//!     outcome?;
//! }
//! sender.close().await;
//! # Ok(())
//! # }
//! ```

mod bindings;
pub mod cache;
pub mod capability;
pub mod policy;
mod runtime;

pub use bindings::exports::mqtt_connector::connector::operations::{
    Metadata, OperationInfo, OperationKind,
};
pub use bindings::mqtt_connector::connector::types::{Document, Property, Qos, Value};
pub use cache::{CodeCache, CodeOrigin};
pub use connector::model::{Error, ErrorCode};
pub use connector::validate::Problem;
pub use policy::Policy;
pub use runtime::{
    Limits, Listener, OperationError, Runtime, RuntimeError, Sender, EMBEDDED_COMPONENT,
};
