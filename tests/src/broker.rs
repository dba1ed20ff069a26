//! The built-in broker started in-process for one test, on loopback.

use crate::*;
use anyhow::{Context, Result};
use mqtt_broker::{self as broker, BrokerConfig, BrokerHandle, TlsConfig};
use std::net::SocketAddr;

/// A broker started in-process for one test, on 127.0.0.1 and a free port.
pub struct Broker {
    handle: Option<BrokerHandle>,
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
}

impl Broker {
    /// Starts a broker with the default configuration.
    pub async fn start() -> Result<Broker> {
        Broker::with(BrokerConfig::ephemeral()).await
    }

    /// Starts a broker with `config`, forced onto loopback and port 0 (its
    /// TLS listener too) so that tests never touch anything but a private
    /// port.
    pub async fn with(config: BrokerConfig) -> Result<Broker> {
        let config = BrokerConfig {
            host: "127.0.0.1".to_owned(),
            port: 0,
            tls: config.tls.map(|tls| TlsConfig { port: 0, ..tls }),
            ..config
        };
        let handle = within("broker start", broker::start(config))
            .await?
            .context("starting the broker")?;
        let addr = handle.local_addr();
        assert!(addr.ip().is_loopback(), "broker must listen on loopback");
        let tls_addr = handle.tls_addr();
        Ok(Broker {
            handle: Some(handle),
            addr,
            tls_addr,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The port of the TLS listener; panics without one.
    pub fn tls_port(&self) -> u16 {
        self.tls_addr.expect("the broker has a TLS listener").port()
    }

    /// The handle, to restart the broker or drop its connections.
    pub fn handle(&self) -> &BrokerHandle {
        self.handle.as_ref().expect("broker handle present")
    }

    /// Graceful shutdown, bounded.
    pub async fn shutdown(mut self) -> Result<()> {
        let handle = self.handle.take().expect("broker handle present");
        within("broker shutdown", handle.shutdown()).await
    }
}

/// The default test configuration (loopback, port 0).
pub fn config() -> BrokerConfig {
    BrokerConfig::ephemeral()
}
