//! The accept loop: one connection task per socket, on the plain and the
//! TLS listener, at most `max_connections` at a time (TLS handshakes in
//! progress included), with a backoff when accepting fails. The listening
//! sockets outlive it when the broker restarts.

use super::connection::Connection;
use super::reader::ReadLimits;
use super::restart::Phase;
use super::router::Event;
use super::tls::TlsListener;
use super::transport::Transport;
use crate::core::ConnId;
use crate::memory::MemoryGauge;
use std::future::pending;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::sleep;
use tracing::{debug, error, warn};

/// The accept loop and what it hands to each connection.
pub(super) struct Acceptor {
    pub(super) listener: TcpListener,
    /// The TLS listener and its handshake, when `tls` is configured.
    pub(super) tls: Option<(TcpListener, TlsListener)>,
    pub(super) limit: Arc<Semaphore>,
    pub(super) limits: ReadLimits,
    pub(super) outbound_limit: usize,
    pub(super) gauge: MemoryGauge,
    pub(super) events: mpsc::Sender<Event>,
    pub(super) shutdown: watch::Receiver<Phase>,
    pub(super) done: mpsc::Sender<()>,
    /// Connection numbers are never reused, so a late event about a closed
    /// connection cannot be mistaken for a newer one.
    pub(super) next_conn: ConnId,
}

/// The listening sockets and the next connection number: what the accept
/// loop hands over to the next one when the broker restarts. Dropping them
/// closes the sockets.
pub(super) struct Listeners {
    pub(super) plain: TcpListener,
    pub(super) tls: Option<(TcpListener, TlsListener)>,
    pub(super) next_conn: ConnId,
}

impl Acceptor {
    /// Accepts until the broker stops or restarts; returns the listening
    /// sockets.
    pub(super) async fn run(mut self) -> Listeners {
        self.accept_loop().await;
        Listeners {
            plain: self.listener,
            tls: self.tls,
            next_conn: self.next_conn,
        }
    }

    async fn accept_loop(&mut self) {
        let mut backoff = Duration::from_millis(10);
        loop {
            // Wait for a free slot before accepting, so connections beyond
            // the limit wait in the kernel's backlog.
            let permit = tokio::select! {
                permit = self.limit.clone().acquire_owned() => permit,
                _ = self.shutdown.changed() => return,
                () = self.events.closed() => return self.router_died(),
            };
            let Ok(permit) = permit else { return };
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted.map(|(s, p)| (s, p, false)),
                accepted = accept_tls(&self.tls) => accepted.map(|(s, p)| (s, p, true)),
                _ = self.shutdown.changed() => return,
                () = self.events.closed() => return self.router_died(),
            };
            match accepted {
                Ok((stream, peer, tls)) => {
                    backoff = Duration::from_millis(10);
                    let conn = self.next_conn;
                    self.next_conn += 1;
                    debug!(conn, %peer, tls, "connection accepted");
                    let task = Connection {
                        conn,
                        limits: self.limits,
                        outbound_limit: self.outbound_limit,
                        gauge: self.gauge.clone(),
                        events: self.events.clone(),
                        shutdown: self.shutdown.clone(),
                        _done: self.done.clone(),
                        _permit: permit,
                    };
                    match &self.tls {
                        Some((_, listener)) if tls => {
                            let listener = listener.clone();
                            tokio::spawn(async move {
                                match listener.handshake(stream).await {
                                    Ok((stream, identity)) => {
                                        let stream = Transport::Tls(Box::new(stream));
                                        task.run(stream, identity).await;
                                    }
                                    Err(e) => debug!(conn, "{e}"),
                                }
                            });
                        }
                        _ => {
                            tokio::spawn(task.run(Transport::Tcp(stream), None));
                        }
                    }
                }
                Err(e) => {
                    // Usually out of file descriptors: wait for some to be
                    // released rather than spin. Never give up.
                    warn!("accepting a connection failed: {e}; retrying in {backoff:?}");
                    tokio::select! {
                        () = sleep(backoff) => {}
                        _ = self.shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// The router has ended. Unless that is the shutdown, it is a bug in the
    /// core: stop accepting too, so clients are refused rather than served
    /// by a broker that never answers.
    fn router_died(&self) {
        // An error means the handle is gone: this is the shutdown; a value
        // other than `Running` is the restart.
        if self.shutdown.has_changed().is_ok() && *self.shutdown.borrow() == Phase::Running {
            error!("the broker's router task ended unexpectedly; no longer accepting connections");
        }
    }
}

/// The next connection on the TLS listener; never, without one.
async fn accept_tls(
    tls: &Option<(TcpListener, TlsListener)>,
) -> io::Result<(TcpStream, SocketAddr)> {
    match tls {
        Some((listener, _)) => listener.accept().await,
        None => pending().await,
    }
}
