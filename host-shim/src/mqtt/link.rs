//! One rumqttc event loop of either protocol, behind one type.
//!
//! An enum rather than a trait: the driver's future stays `Send` without
//! boxed futures, and each adapter module keeps rumqttc's version-specific types to
//! itself.

use std::time::Duration;

use connector::model::{reason_code_name, ConnectOptions, Error, ErrorCode, MqttVersion, Outgoing};
use connector::url::BrokerUrl;
use rumqttc::{TlsConfiguration, Transport};

use super::core::{Ev, Outlet, OutletClosed, Req, Resend};
use super::{tls, v4, v5};

/// Requests rumqttc's channel holds at most (it allocates as it fills).
/// Acks can pile up (one per delivery the broker has in flight toward us, at
/// most 65,535), and so can packet-identifier requests (at most one per
/// identifier in rumqttc's cycle, also at most 65,535).
pub(crate) const REQUEST_CAPACITY: usize = 2 * u16::MAX as usize + 64;

/// Why a connection attempt or a connection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkError {
    /// The broker refused the CONNECT with this return or reason code.
    Refused {
        /// The code the broker sent.
        code: u8,
        /// Bad credentials or not authorized.
        not_authorized: bool,
        /// The code's name.
        name: &'static str,
    },
    /// No CONNACK in time.
    Timeout,
    /// Anything else: I/O, TLS, protocol.
    Other(String),
}

impl LinkError {
    /// The typed error a caller of `connect` sees.
    pub(crate) fn into_error(self, url: &str) -> Error {
        match self {
            LinkError::Refused {
                code,
                not_authorized,
                name,
            } => {
                let kind = if not_authorized {
                    ErrorCode::NotAuthorized
                } else {
                    ErrorCode::ConnectionFailed
                };
                Error::new(kind, format!("{url} refused the connection: {name}"))
                    .with_reason_code(code)
            }
            LinkError::Timeout => Error::new(
                ErrorCode::Timeout,
                format!("no answer from {url} within the connect timeout"),
            ),
            LinkError::Other(why) => Error::new(
                ErrorCode::ConnectionFailed,
                format!("cannot connect to {url}: {why}"),
            ),
        }
    }
}

/// A refusal on 5.0: its code names itself.
pub(crate) fn refused_v5(code: u8) -> LinkError {
    LinkError::Refused {
        code,
        not_authorized: matches!(code, 0x86 | 0x87),
        name: reason_code_name(code),
    }
}

/// A refusal on 3.1.1. Its return codes (1 to 5) are reported as their 5.0
/// equivalents, so one reason code names a refusal whatever the protocol.
pub(crate) fn refused_v311(code: u8) -> LinkError {
    let code = match code {
        1 => 0x84,
        2 => 0x85,
        3 => 0x88,
        4 => 0x86,
        5 => 0x87,
        _ => 0x80,
    };
    refused_v5(code)
}

/// The transport for `endpoint`, with TLS configured from `options`.
pub(crate) fn transport(
    options: &ConnectOptions,
    endpoint: &BrokerUrl,
) -> Result<Transport, Error> {
    if !endpoint.tls {
        if options.tls.is_some() {
            tracing::warn!(url = %options.url, "tls options ignored for a plain mqtt:// url");
        }
        return Ok(Transport::Tcp);
    }
    let tls_options = options.tls.clone().unwrap_or_default();
    let config = tls::client_config(&tls_options)?;
    Ok(Transport::tls_with_config(TlsConfiguration::Rustls(config)))
}

/// rumqttc's connect timeout is in whole seconds; the driver enforces the
/// exact one, this is only a backstop.
pub(crate) fn backstop_secs(timeout: Duration) -> u64 {
    timeout.as_secs().saturating_add(1)
}

/// A rumqttc client and its event loop.
pub(crate) enum Link {
    /// MQTT 3.1.1.
    V4(Box<v4::Link>),
    /// MQTT 5.0.
    V5(Box<v5::Link>),
}

/// The request side of a [`Link`], kept by the core.
pub(crate) enum Sender {
    /// MQTT 3.1.1.
    V4(rumqttc::AsyncClient),
    /// MQTT 5.0.
    V5(rumqttc::v5::AsyncClient),
}

/// The packet ids whose PUBREL a fresh rumqttc state must expect: those it
/// met as unsolicited, and those the core knows await release, once each.
pub(crate) fn to_release(unsolicited: &[u16], awaiting_release: &[u16]) -> Vec<u16> {
    let mut pkids = unsolicited.to_vec();
    pkids.extend(awaiting_release.iter().filter(|p| !unsolicited.contains(p)));
    pkids
}

impl Outlet for Sender {
    fn send(&mut self, req: Req) -> Result<(), OutletClosed> {
        match self {
            Sender::V4(client) => v4::send(client, req),
            Sender::V5(client) => v5::send(client, req),
        }
    }
}

impl Link {
    /// A link for `options`, not yet connected.
    pub(crate) fn new(options: &ConnectOptions, endpoint: &BrokerUrl) -> Result<Link, Error> {
        let transport = transport(options, endpoint)?;
        Ok(match options.protocol {
            MqttVersion::V311 => Link::V4(Box::new(v4::Link::new(options, endpoint, transport)?)),
            MqttVersion::V5 => Link::V5(Box::new(v5::Link::new(options, endpoint, transport)?)),
        })
    }

    /// The sender for the core.
    pub(crate) fn sender(&self) -> Sender {
        match self {
            Link::V4(l) => Sender::V4(l.client()),
            Link::V5(l) => Sender::V5(l.client()),
        }
    }

    /// Whether a connection is up (so `poll` will not connect first).
    pub(crate) fn is_connected(&self) -> bool {
        match self {
            Link::V4(l) => l.is_connected(),
            Link::V5(l) => l.is_connected(),
        }
    }

    /// The next event; connects first when not connected.
    pub(crate) async fn poll(&mut self) -> Result<Ev, LinkError> {
        match self {
            Link::V4(l) => l.poll().await,
            Link::V5(l) => l.poll().await,
        }
    }

    /// Whether rumqttc has events buffered, which the next `poll` returns
    /// without waiting (it reads and handles a burst of packets at once).
    pub(crate) fn has_buffered(&self) -> bool {
        match self {
            Link::V4(l) => l.has_buffered(),
            Link::V5(l) => l.has_buffered(),
        }
    }

    /// Events rumqttc buffered before the connection failed.
    pub(crate) fn drain_buffered(&mut self) -> Vec<Ev> {
        match self {
            Link::V4(l) => l.drain_buffered(),
            Link::V5(l) => l.drain_buffered(),
        }
    }

    /// After a failure: drops every request that must not reach the next
    /// connection (acks, subscribes, publishes not yet written), keeps the
    /// resends MQTT asks for when the session resumes, and gives the event
    /// loop a fresh protocol state. Returns the resends, and the messages of
    /// the publishes it dropped, in order (`None` for one whose topic does
    /// not parse back), for the core to hand again. `awaiting_release` are
    /// the QoS 2 deliveries acknowledged with PUBREC and not yet released:
    /// the fresh state takes a PUBREL for them as expected.
    pub(crate) fn scrub(
        &mut self,
        awaiting_release: &[u16],
    ) -> (Vec<Resend>, Vec<Option<Outgoing>>) {
        match self {
            Link::V4(l) => l.scrub(awaiting_release),
            Link::V5(l) => l.scrub(awaiting_release),
        }
    }

    /// Queues a PINGREQ so that the broker's held-back acknowledgements
    /// come without waiting for TCP's delayed ACK (see `nudge`), unless one
    /// could clash with rumqttc's keep-alive ping.
    pub(crate) fn nudge(&mut self) {
        match self {
            Link::V4(l) => l.nudge(),
            Link::V5(l) => l.nudge(),
        }
    }

    /// Ends the connection with a DISCONNECT that skips rumqttc's flow
    /// control (for a wedged in-flight window).
    pub(crate) fn force_disconnect(&mut self) {
        match self {
            Link::V4(l) => l.force_disconnect(),
            Link::V5(l) => l.force_disconnect(),
        }
    }
}
