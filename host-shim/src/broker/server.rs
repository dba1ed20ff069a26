//! The tokio shell around the core. (Interface stub: being implemented.)
#![allow(dead_code, unused_variables)]

use super::config::BrokerConfig;
use std::net::SocketAddr;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error("invalid broker configuration: {0}")]
    Config(String),
}

/// A running broker. Dropping it shuts the broker down without waiting;
/// [`BrokerHandle::shutdown`] waits until every connection is closed.
#[derive(Debug)]
pub struct BrokerHandle {
    local_addr: SocketAddr,
}

impl BrokerHandle {
    /// The address the broker listens on (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Disconnects every client (5.0: reason 0x8B), stops listening, and
    /// waits until all connection tasks have ended.
    pub async fn shutdown(self) {
        todo!()
    }
}

/// Starts a broker on the current tokio runtime.
///
/// # Errors
///
/// [`StartError::Bind`] when the address cannot be bound,
/// [`StartError::Config`] when the configuration is invalid.
pub async fn start(config: BrokerConfig) -> Result<BrokerHandle, StartError> {
    todo!()
}
