//! The tokio shell around the core: sockets, tasks, channels and shutdown.
//!
//! # Tasks and channels
//!
//! - The **accept loop** holds a [`Semaphore`] permit per connection (at most
//!   `max_connections`), and spawns one **connection task** per socket.
//! - Each connection task reads and decodes packets and sends them as
//!   [`Event`]s to the **router task**, which owns the [`Broker`] core. All
//!   connections share one *bounded* event channel: when the router falls
//!   behind, connection tasks wait to send and so stop reading their
//!   sockets, and TCP pushes back on the publishers. That is the only flow
//!   control a 3.1.1 client gets.
//! - The router carries out the core's actions by writing to each
//!   connection's *unbounded* outbound channel, so the router never waits on
//!   a slow subscriber. QoS 1 and 2 traffic is bounded there by the core's
//!   in-flight window; QoS 0 is bounded by counting what is queued and
//!   dropping (counted, logged) beyond `max_queued_messages`.
//! - Shutdown is a [`watch`] channel whose sender the [`BrokerHandle`] owns:
//!   dropping it, by [`BrokerHandle::shutdown`] or by dropping the handle,
//!   stops the accept loop and makes the router disconnect everyone. Every
//!   task holds a clone of a `done` sender it never uses; `shutdown` waits
//!   until the last one is dropped, that is until every task has ended.
//! - **Group commit.** The router handles a batch of events (up to
//!   [`EVENT_BATCH`]), then asks the core to write that batch's retained
//!   changes to disk in one transaction, and only then carries out the
//!   batch's actions. So a PUBACK or PUBREC for a retained PUBLISH leaves
//!   only once the message is durable, and one fsync serves many
//!   publishers. When the write fails, the connections that sent a retained
//!   QoS 1 or 2 PUBLISH in the batch are closed without their
//!   acknowledgement: the clients resend, and the write is tried again.
//! - **Management.** [`BrokerAdmin`] (from [`BrokerHandle::admin`]) sends
//!   requests to the router on their own small channel, each with a oneshot
//!   reply, so listing or deleting retained messages takes no lock on the
//!   publish path and sees the store exactly as subscribers do.

use super::codec::{self, DecodeError, Decoder, Frame};
use super::config::{self, BrokerConfig, ConfigError};
use super::core::{Action, Broker, ConnId};
use super::retained::{RetainedEntry, RetainedPage, RetainedStoreError};
use bytes::{Bytes, BytesMut};
use mqtt_topic::MqttVersion;
use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Packet};
use rumqttc::v5::mqttbytes::QoS;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::time::{sleep, sleep_until, timeout, timeout_at, Instant};
use tracing::{debug, error, info, warn};

/// Capacity of the event channel from connections to the router. Small
/// enough that a router that falls behind soon stops the readers.
const EVENT_CAPACITY: usize = 1024;

/// Most events the router handles before it carries out the core's actions
/// (and commits the retained changes they made).
const EVENT_BATCH: usize = 64;

/// Capacity of the management request channel: requests are rare, and a
/// caller beyond this waits its turn.
const ADMIN_CAPACITY: usize = 16;

/// The largest page [`BrokerAdmin::retained_list`] returns: the router
/// builds a page while every connection waits, so a page stays small.
pub const MAX_PAGE_SIZE: usize = 1000;

/// How long a new connection may take to send its CONNECT. Short in unit
/// tests so the timeout can be tested in real time (tokio's `test-util`
/// clock is not available).
const CONNECT_TIMEOUT: Duration = if cfg!(test) {
    Duration::from_millis(500)
} else {
    Duration::from_secs(10)
};

/// How long a connection waits for the core's close after it reported a
/// malformed packet, should the core not answer.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// After the broker closed a connection, it keeps reading (and discarding)
/// for at most this long, so that unread bytes do not turn the close into a
/// reset, which could destroy the last packets written before the client
/// reads them.
const LINGER: Duration = Duration::from_secs(1);

/// The lingering read also ends when nothing arrives for this long, so a
/// quiet client that does not close does not hold up shutdown.
const LINGER_QUIET: Duration = Duration::from_millis(50);

/// How long connections may take to flush their last packets at shutdown
/// before they are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Flush the write buffer when it grows beyond this, even if more packets
/// are waiting.
const WRITE_BATCH: usize = 64 * 1024;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listening socket could not be bound. The I/O error is the
    /// [`source`](std::error::Error::source), not part of the message.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error("invalid broker configuration: {0}")]
    Config(String),
    /// The retained message store (`retain.storage`) cannot be opened.
    #[error("cannot open the retained message store")]
    RetainedStore(#[source] super::RetainedStoreError),
}

impl From<ConfigError> for StartError {
    fn from(error: ConfigError) -> Self {
        StartError::Config(error.to_string())
    }
}

/// A running broker. Dropping it shuts the broker down without waiting;
/// [`BrokerHandle::shutdown`] waits until every connection is closed.
#[derive(Debug)]
pub struct BrokerHandle {
    local_addr: SocketAddr,
    /// Never sent on: dropping it is the shutdown signal.
    shutdown: watch::Sender<()>,
    /// Returns `None` once every task has dropped its `done` sender.
    done: mpsc::Receiver<()>,
    /// Management requests to the router.
    admin: BrokerAdmin,
}

impl BrokerHandle {
    /// The address the broker listens on (the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL clients connect to, such as `mqtt://127.0.0.1:1883`. A broker
    /// listening on every address (`0.0.0.0`, `::`) gives the loopback one.
    pub fn url(&self) -> String {
        let mut addr = self.local_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        format!("mqtt://{addr}")
    }

    /// A cloneable handle to the management API, for tasks that outlive a
    /// borrow of this handle (such as the [admin endpoint](super::admin)).
    /// It stops working, with [`AdminError::Closed`], when the broker shuts
    /// down.
    pub fn admin(&self) -> BrokerAdmin {
        self.admin.clone()
    }

    /// A page of the retained messages whose topic matches `filter`; see
    /// [`BrokerAdmin::retained_list`].
    ///
    /// # Errors
    ///
    /// See [`BrokerAdmin::retained_list`].
    pub async fn retained_list(
        &self,
        filter: &str,
        page_size: usize,
        cursor: Option<String>,
    ) -> Result<RetainedPage, AdminError> {
        self.admin.retained_list(filter, page_size, cursor).await
    }

    /// The retained message of `topic`; see [`BrokerAdmin::retained_get`].
    ///
    /// # Errors
    ///
    /// [`AdminError::Closed`] when the broker has shut down.
    pub async fn retained_get(&self, topic: &str) -> Result<Option<RetainedEntry>, AdminError> {
        self.admin.retained_get(topic).await
    }

    /// Deletes the retained message of `topic`; see
    /// [`BrokerAdmin::retained_delete`].
    ///
    /// # Errors
    ///
    /// See [`BrokerAdmin::retained_delete`].
    pub async fn retained_delete(&self, topic: &str) -> Result<bool, AdminError> {
        self.admin.retained_delete(topic).await
    }

    /// The number of retained messages; see [`BrokerAdmin::retained_count`].
    ///
    /// # Errors
    ///
    /// [`AdminError::Closed`] when the broker has shut down.
    pub async fn retained_count(&self) -> Result<usize, AdminError> {
        self.admin.retained_count().await
    }

    /// Disconnects every client (5.0: reason 0x8B), stops listening, and
    /// waits until all connection tasks have ended.
    pub async fn shutdown(self) {
        let BrokerHandle {
            shutdown, mut done, ..
        } = self;
        drop(shutdown);
        // Nothing is ever sent: this returns `None` when the last task ends.
        let _ = done.recv().await;
    }
}

/// Why a management request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The broker has shut down.
    #[error("the broker has shut down")]
    Closed,
    /// The topic filter is not valid (or is a shared subscription's).
    #[error("{0}")]
    InvalidFilter(String),
    /// The change is made in memory, but could not be written to disk; the
    /// write is tried again at the next commit.
    #[error("done in memory but not yet on disk")]
    Store(#[source] RetainedStoreError),
}

/// The management API of a running broker: list, get, delete and count
/// retained messages. Cheap to clone; every call is one request to the
/// router task, answered between two batches of client traffic.
#[derive(Debug, Clone)]
pub struct BrokerAdmin {
    requests: mpsc::Sender<AdminRequest>,
}

impl BrokerAdmin {
    /// A page of the retained messages whose topic matches `filter` (`#`
    /// for all), in topic order, without payloads: at most `page_size`
    /// entries (at least 1, at most [`MAX_PAGE_SIZE`]), starting after the
    /// topic `cursor`, the previous page's
    /// [`next_cursor`](RetainedPage::next_cursor). Expired messages are
    /// never listed.
    ///
    /// # Errors
    ///
    /// [`AdminError::InvalidFilter`] for a filter that is not a valid topic
    /// filter, [`AdminError::Closed`] when the broker has shut down.
    pub async fn retained_list(
        &self,
        filter: &str,
        page_size: usize,
        cursor: Option<String>,
    ) -> Result<RetainedPage, AdminError> {
        let filter = filter.to_owned();
        let page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        self.ask(|reply| AdminRequest::List {
            filter,
            page_size,
            cursor,
            reply,
        })
        .await?
    }

    /// The retained message of `topic` with its payload, or `None` when
    /// there is none (or it has expired).
    ///
    /// # Errors
    ///
    /// [`AdminError::Closed`] when the broker has shut down.
    pub async fn retained_get(&self, topic: &str) -> Result<Option<RetainedEntry>, AdminError> {
        let topic = topic.to_owned();
        self.ask(|reply| AdminRequest::Get { topic, reply }).await
    }

    /// Deletes the retained message of `topic`, as an empty retained
    /// PUBLISH would; true if there was one. With disk storage the delete
    /// is written before the answer. Subscribers whose retained delivery
    /// has not reached the topic yet will not get it.
    ///
    /// # Errors
    ///
    /// [`AdminError::Store`] when the delete could not be written to disk
    /// (the message is gone from memory and the write is tried again),
    /// [`AdminError::Closed`] when the broker has shut down.
    pub async fn retained_delete(&self, topic: &str) -> Result<bool, AdminError> {
        let topic = topic.to_owned();
        self.ask(|reply| AdminRequest::Delete { topic, reply })
            .await?
    }

    /// The number of retained messages stored and not expired.
    ///
    /// # Errors
    ///
    /// [`AdminError::Closed`] when the broker has shut down.
    pub async fn retained_count(&self) -> Result<usize, AdminError> {
        self.ask(|reply| AdminRequest::Count { reply }).await
    }

    /// Resolves when the broker has shut down: no request can succeed any
    /// more.
    pub async fn closed(&self) {
        self.requests.closed().await;
    }

    /// Sends the request `make` builds around a reply channel, and waits
    /// for the answer.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> AdminRequest,
    ) -> Result<T, AdminError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(make(reply))
            .await
            .map_err(|_| AdminError::Closed)?;
        // A dropped reply means the router stopped before it answered.
        answer.await.map_err(|_| AdminError::Closed)
    }
}

/// A management request, with the channel for its answer.
#[derive(Debug)]
enum AdminRequest {
    List {
        filter: String,
        page_size: usize,
        cursor: Option<String>,
        reply: oneshot::Sender<Result<RetainedPage, AdminError>>,
    },
    Get {
        topic: String,
        reply: oneshot::Sender<Option<RetainedEntry>>,
    },
    Delete {
        topic: String,
        reply: oneshot::Sender<Result<bool, AdminError>>,
    },
    Count {
        reply: oneshot::Sender<usize>,
    },
}

/// Starts a broker on the current tokio runtime.
///
/// The accounts of `password_file` are added to `users` before the broker
/// starts.
///
/// # Errors
///
/// [`StartError::Bind`] when the address cannot be bound,
/// [`StartError::Config`] when the configuration is invalid or the password
/// file cannot be read.
///
/// # Example
///
/// ```no_run
/// # async fn example() -> Result<(), mqtt_broker::StartError> {
/// use mqtt_broker::{start, BrokerConfig};
///
/// let broker = start(BrokerConfig::ephemeral()).await?;
/// println!("connect to {}", broker.url());
/// broker.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub async fn start(mut config: BrokerConfig) -> Result<BrokerHandle, StartError> {
    config::check(&config)?;
    if let Some(path) = &config.password_file {
        let accounts = config::read_password_file(path, &config.users)?;
        config.users.extend(accounts);
    }

    let listener = TcpListener::bind((config.host.as_str(), config.port))
        .await
        .map_err(|source| StartError::Bind {
            addr: display_addr(&config.host, config.port),
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: display_addr(&config.host, config.port),
        source,
    })?;

    let (shutdown_tx, shutdown_rx) = watch::channel(());
    let (done_tx, done_rx) = mpsc::channel(1);
    let (events_tx, events_rx) = mpsc::channel(EVENT_CAPACITY);
    let (admin_tx, admin_rx) = mpsc::channel(ADMIN_CAPACITY);

    let router = Router {
        max_queued: config.max_queued_messages,
        conns: HashMap::new(),
        store_failing: false,
    };
    let accept = Acceptor {
        listener,
        limit: Arc::new(Semaphore::new(config.max_connections)),
        max_packet_size: config.max_packet_size,
        events: events_tx,
        shutdown: shutdown_rx.clone(),
        done: done_tx.clone(),
        next_conn: 1,
    };
    // A retained store that cannot be opened is a start error, never a
    // silent fall back to memory that would lose what the user stored.
    let core = Broker::open(config).map_err(StartError::RetainedStore)?;
    tokio::spawn(router.run(core, events_rx, admin_rx, shutdown_rx, done_tx));
    tokio::spawn(accept.run());

    Ok(BrokerHandle {
        local_addr,
        shutdown: shutdown_tx,
        done: done_rx,
        admin: BrokerAdmin { requests: admin_tx },
    })
}

/// `host:port`, with brackets around an IPv6 host.
fn display_addr(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

// ----- Accept loop -----

/// The accept loop and what it hands to each connection.
struct Acceptor {
    listener: TcpListener,
    limit: Arc<Semaphore>,
    max_packet_size: u32,
    events: mpsc::Sender<Event>,
    shutdown: watch::Receiver<()>,
    done: mpsc::Sender<()>,
    /// Connection numbers are never reused, so a late event about a closed
    /// connection cannot be mistaken for a newer one.
    next_conn: ConnId,
}

impl Acceptor {
    /// Accepts until shutdown; dropping `self` at the end closes the
    /// listening socket.
    async fn run(mut self) {
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
                accepted = self.listener.accept() => accepted,
                _ = self.shutdown.changed() => return,
                () = self.events.closed() => return self.router_died(),
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(10);
                    let conn = self.next_conn;
                    self.next_conn += 1;
                    debug!(conn, %peer, "connection accepted");
                    let task = Connection {
                        conn,
                        max_packet_size: self.max_packet_size,
                        events: self.events.clone(),
                        shutdown: self.shutdown.clone(),
                        _done: self.done.clone(),
                        _permit: permit,
                    };
                    tokio::spawn(task.run(stream));
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
        // An error means the handle is gone: this is the shutdown.
        if self.shutdown.has_changed().is_ok() {
            error!("the broker's router task ended unexpectedly; no longer accepting connections");
        }
    }
}

// ----- Router -----

/// What a connection task tells the router.
// Nearly every event is a `Frame`: boxing it would only add an allocation
// per packet.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Event {
    /// A new connection, and how to reach it.
    Opened {
        conn: ConnId,
        outbound: mpsc::UnboundedSender<Outbound>,
        /// QoS 0 PUBLISHes queued on `outbound` and not yet written.
        queued_qos0: Arc<AtomicUsize>,
    },
    /// A decoded packet.
    Frame { conn: ConnId, frame: Frame },
    /// Undecodable bytes; the connection has stopped reading.
    Malformed {
        conn: ConnId,
        reason: DisconnectReasonCode,
    },
    /// The transport ended (EOF, error, timeout). Sent at most once.
    Closed { conn: ConnId },
}

/// What the router tells a connection task.
// Nearly every message is a `Packet`: boxing it would only add an
// allocation per packet.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Outbound {
    /// Encode and write this packet.
    Packet(Packet),
    /// Write these bytes as they are.
    Raw(Bytes),
    /// Write what is queued before, then close.
    Close,
}

/// The router's view of one connection.
#[derive(Debug)]
struct ConnEntry {
    outbound: mpsc::UnboundedSender<Outbound>,
    queued_qos0: Arc<AtomicUsize>,
    /// The core has been told about this connection.
    in_core: bool,
    /// The router closed it without the core (a failed retained write):
    /// nothing more is sent to it.
    closing: bool,
    /// QoS 0 messages dropped since the queue last had room.
    dropping: u64,
    /// QoS 0 messages dropped in all.
    dropped: u64,
}

impl ConnEntry {
    /// Whether `packet` may be queued: everything but a QoS 0 PUBLISH to a
    /// connection with `max_queued` of them already waiting. Counts what is
    /// admitted and what is not.
    fn admit(&mut self, conn: ConnId, packet: &Packet, max_queued: usize) -> bool {
        let Packet::Publish(publish) = packet else {
            return true;
        };
        if publish.qos != QoS::AtMostOnce {
            return true;
        }
        if self.queued_qos0.load(Ordering::Acquire) >= max_queued {
            if self.dropping == 0 {
                warn!(
                    conn,
                    "subscriber too slow: {max_queued} QoS 0 messages queued; \
                     dropping more until it catches up"
                );
            }
            self.dropping += 1;
            self.dropped += 1;
            return false;
        }
        if self.dropping > 0 {
            info!(
                conn,
                "subscriber caught up after {} QoS 0 messages were dropped", self.dropping
            );
            self.dropping = 0;
        }
        self.queued_qos0.fetch_add(1, Ordering::AcqRel);
        true
    }
}

/// The router task's state.
struct Router {
    max_queued: usize,
    conns: HashMap<ConnId, ConnEntry>,
    /// The last retained write failed: the next failure is not logged
    /// again, and a success is.
    store_failing: bool,
}

/// What the router remembers of a batch of events until their actions are
/// carried out.
#[derive(Debug, Default)]
struct Batch {
    /// Connections that sent a retained QoS 1 or 2 PUBLISH in the batch:
    /// their acknowledgement promises that the message is stored.
    retained_publishers: Vec<ConnId>,
}

impl Router {
    /// Feeds events, management requests and timeouts to the core and
    /// carries out its actions, until shutdown.
    async fn run(
        mut self,
        mut core: Broker,
        mut events: mpsc::Receiver<Event>,
        mut admin: mpsc::Receiver<AdminRequest>,
        mut shutdown: watch::Receiver<()>,
        _done: mpsc::Sender<()>,
    ) {
        // Cleared when every `BrokerAdmin` is gone, so the closed channel
        // is not polled again and again.
        let mut admin_open = true;
        loop {
            let deadline = core.poll_timeout();
            // Biased: shutdown first, then due timers, so a steady stream of
            // events cannot hold back keep alive and expiry; then the rare
            // management requests, so they are answered under load too.
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                () = sleep_until_opt(deadline) => {
                    core.handle_timeout(Instant::now().into_std());
                    self.finish(&mut core, &mut Batch::default());
                }
                request = admin.recv(), if admin_open => match request {
                    Some(request) => self.admin(&mut core, request),
                    None => admin_open = false,
                },
                event = events.recv() => {
                    // `None` cannot happen before shutdown: the accept loop
                    // holds a sender until then.
                    let Some(event) = event else { break };
                    let mut batch = Batch::default();
                    self.handle(&mut core, event, &mut batch);
                    // Take what else is waiting, so the actions of a burst
                    // are carried out together and its retained changes
                    // are written in one transaction.
                    for _ in 1..EVENT_BATCH {
                        let Ok(event) = events.try_recv() else { break };
                        self.handle(&mut core, event, &mut batch);
                    }
                    self.finish(&mut core, &mut batch);
                }
            }
        }

        core.handle_shutdown(Instant::now().into_std());
        self.finish(&mut core, &mut Batch::default());
        // Connections the core never heard of (no CONNECT yet).
        for (_, entry) in self.conns.drain() {
            let _ = entry.outbound.send(Outbound::Close);
        }
        debug!(stats = ?core.stats(), "router stopped");
        // The core holds the retained store's file: close it before `_done`
        // goes, so once `shutdown` returns a new broker can open the file.
        drop(core);
        drop(_done);
        // Dropping `events` makes connections that are still sending stop;
        // dropping the outbound senders (above) ends their writers.
    }

    /// Hands one event to the core. Its actions wait for [`Router::finish`].
    fn handle(&mut self, core: &mut Broker, event: Event, batch: &mut Batch) {
        let now = Instant::now().into_std();
        match event {
            Event::Opened {
                conn,
                outbound,
                queued_qos0,
            } => {
                self.conns.insert(
                    conn,
                    ConnEntry {
                        outbound,
                        queued_qos0,
                        in_core: false,
                        closing: false,
                        dropping: 0,
                        dropped: 0,
                    },
                );
            }
            Event::Frame { conn, frame } => {
                let Some(entry) = self.conns.get_mut(&conn) else {
                    return;
                };
                entry.in_core = true;
                if let Frame::Packet(Packet::Publish(publish)) = &frame {
                    if publish.retain && publish.qos != QoS::AtMostOnce {
                        batch.retained_publishers.push(conn);
                    }
                }
                core.handle_frame(now, conn, frame);
            }
            Event::Malformed { conn, reason } => {
                let Some(entry) = self.conns.get_mut(&conn) else {
                    return;
                };
                // The core closes the connection even if it never saw it.
                entry.in_core = true;
                core.handle_malformed(now, conn, reason);
            }
            Event::Closed { conn } => {
                // Unknown: the core closed it first, nothing to tell.
                let Some(entry) = self.conns.get(&conn) else {
                    return;
                };
                let in_core = entry.in_core;
                // What the batch owes this connection goes out while the
                // writer can still take it: end the batch here.
                self.finish(core, batch);
                if in_core {
                    core.handle_closed(now, conn);
                }
                self.finish(core, batch);
                // Dropping the sender ends the writer once it has written
                // what is queued.
                if let Some(entry) = self.conns.remove(&conn) {
                    if entry.dropped > 0 {
                        debug!(conn, dropped = entry.dropped, "QoS 0 messages dropped");
                    }
                }
            }
        }
    }

    /// Ends a batch: writes its retained changes to disk, then carries out
    /// its actions. When the write fails, the connections that sent a
    /// retained QoS 1 or 2 PUBLISH in the batch are closed instead of
    /// acknowledged, so their clients send it again.
    fn finish(&mut self, core: &mut Broker, batch: &mut Batch) {
        match core.commit_retained() {
            Ok(()) => {
                if self.store_failing {
                    self.store_failing = false;
                    info!("retained messages are written to disk again");
                }
            }
            Err(error) => {
                if !self.store_failing {
                    self.store_failing = true;
                    error!(
                        %error,
                        "retained messages not written to disk; closing the \
                         connections that wait for their acknowledgement"
                    );
                }
                for conn in batch.retained_publishers.drain(..) {
                    if let Some(entry) = self.conns.get_mut(&conn) {
                        if !entry.closing {
                            warn!(conn, "closed: its retained message is not on disk");
                            entry.closing = true;
                            // The entry stays: the connection's `Closed`
                            // event still tells the core.
                            let _ = entry.outbound.send(Outbound::Close);
                        }
                    }
                }
            }
        }
        batch.retained_publishers.clear();
        self.dispatch(core);
    }

    /// Answers a management request. A delete is written to disk before
    /// the answer.
    fn admin(&mut self, core: &mut Broker, request: AdminRequest) {
        let now = Instant::now().into_std();
        match request {
            AdminRequest::List {
                filter,
                page_size,
                cursor,
                reply,
            } => {
                let page = core
                    .retained_list(now, &filter, page_size, cursor.as_deref())
                    .map_err(AdminError::InvalidFilter);
                let _ = reply.send(page);
            }
            AdminRequest::Get { topic, reply } => {
                let _ = reply.send(core.retained_get(now, &topic));
            }
            AdminRequest::Count { reply } => {
                let _ = reply.send(core.retained_count(now));
            }
            AdminRequest::Delete { topic, reply } => {
                let deleted = core.retained_delete(&topic);
                let result = match core.commit_retained() {
                    Ok(()) => Ok(deleted),
                    Err(error) => {
                        error!(%error, topic, "retained message deleted in memory only");
                        Err(AdminError::Store(error))
                    }
                };
                self.dispatch(core);
                let _ = reply.send(result);
            }
        }
    }

    /// Carries out every action the core has queued.
    fn dispatch(&mut self, core: &mut Broker) {
        while let Some(action) = core.poll_action() {
            match action {
                Action::Send(conn, packet) => {
                    let Some(entry) = self.conns.get_mut(&conn) else {
                        continue;
                    };
                    if entry.closing {
                        continue;
                    }
                    if entry.admit(conn, &packet, self.max_queued) {
                        // An error means the connection task has ended;
                        // its `Closed` event is on the way.
                        let _ = entry.outbound.send(Outbound::Packet(packet));
                    }
                }
                Action::Close(conn) => {
                    if let Some(entry) = self.conns.remove(&conn) {
                        let _ = entry.outbound.send(Outbound::Close);
                    }
                }
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_opt(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(deadline) => sleep_until(Instant::from_std(deadline)).await,
        None => std::future::pending().await,
    }
}

// ----- Connections -----

/// One connection task: a reader and a writer over one socket.
struct Connection {
    conn: ConnId,
    max_packet_size: u32,
    events: mpsc::Sender<Event>,
    shutdown: watch::Receiver<()>,
    /// Held, never used: see [`BrokerHandle::shutdown`].
    _done: mpsc::Sender<()>,
    /// Held: frees a connection slot when the task ends.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Why a reader stopped.
#[derive(Debug)]
enum ReadEnd {
    /// The peer closed, the read failed or no CONNECT came in time.
    Gone,
    /// The bytes could not be decoded; the writer will close.
    Stopped,
    /// The router is gone (shutdown).
    RouterGone,
}

/// Why a writer stopped.
#[derive(Debug, PartialEq, Eq)]
enum WriteEnd {
    /// The broker closed the connection.
    Closed,
    /// The router forgot the connection.
    Forgotten,
    /// Writing failed.
    Failed,
}

impl Connection {
    async fn run(mut self, stream: TcpStream) {
        let conn = self.conn;
        if let Err(e) = stream.set_nodelay(true) {
            debug!(conn, "cannot set TCP_NODELAY: {e}");
        }
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            () = self.serve(stream) => {}
            () = async {
                let _ = shutdown.changed().await;
                sleep(SHUTDOWN_GRACE).await;
            } => debug!(conn, "connection dropped at shutdown before it was flushed"),
        }
    }

    async fn serve(&mut self, stream: TcpStream) {
        let conn = self.conn;
        let (mut rd, wr) = stream.into_split();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let queued_qos0 = Arc::new(AtomicUsize::new(0));
        // Set by the reader before it passes the CONNECT on, so it is known
        // before the core can answer.
        let version = OnceLock::new();
        let opened = Event::Opened {
            conn,
            outbound: out_tx.clone(),
            queued_qos0: queued_qos0.clone(),
        };
        if self.events.send(opened).await.is_err() {
            return;
        }

        let mut closed_sent = false;
        let (read_end, write_end) = {
            let reader = read_loop(
                conn,
                &mut rd,
                self.max_packet_size,
                &self.events,
                out_tx,
                &version,
            );
            let writer = write_loop(conn, wr, out_rx, &version, &queued_qos0);
            tokio::pin!(reader, writer);
            tokio::select! {
                read_end = &mut reader => {
                    let write_end = match read_end {
                        ReadEnd::Gone => {
                            // The router drops our outbound sender on
                            // `Closed`, which ends the writer.
                            closed_sent = true;
                            if self.events.send(Event::Closed { conn }).await.is_err() {
                                return;
                            }
                            writer.await
                        }
                        ReadEnd::Stopped => match timeout(CLOSE_WAIT, &mut writer).await {
                            Ok(end) => end,
                            Err(_) => {
                                debug!(conn, "no close from the broker after a malformed packet");
                                WriteEnd::Failed
                            }
                        },
                        ReadEnd::RouterGone => writer.await,
                    };
                    (Some(read_end), write_end)
                }
                write_end = &mut writer => (None, write_end),
            }
        };
        if !closed_sent {
            let _ = self.events.send(Event::Closed { conn }).await;
        }
        // We closed first: drain what the client still sends, so unread
        // input cannot turn our FIN into a reset.
        if write_end == WriteEnd::Closed && !matches!(read_end, Some(ReadEnd::Gone)) {
            let mut scratch = [0u8; 4096];
            let _ = timeout(LINGER, async {
                while let Ok(Ok(n)) = timeout(LINGER_QUIET, rd.read(&mut scratch)).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        }
        debug!(conn, "connection ended");
    }
}

/// Reads and decodes until the peer closes or the bytes cannot be decoded,
/// and sends each packet to the router.
async fn read_loop(
    conn: ConnId,
    rd: &mut OwnedReadHalf,
    max_packet_size: u32,
    events: &mpsc::Sender<Event>,
    outbound: mpsc::UnboundedSender<Outbound>,
    version: &OnceLock<MqttVersion>,
) -> ReadEnd {
    let mut decoder = Decoder::new(max_packet_size);
    let mut buf = BytesMut::with_capacity(4096);
    let connect_deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    if let Frame::Connect { version: v, .. } = &frame {
                        let _ = version.set(*v);
                    }
                    // Waits while the router is behind: backpressure.
                    if events.send(Event::Frame { conn, frame }).await.is_err() {
                        return ReadEnd::RouterGone;
                    }
                }
                Ok(None) => break,
                Err(DecodeError::UnsupportedProtocol { level }) => {
                    // MQTT-3.1.2-2: CONNACK 0x01 and close, the core is
                    // never involved.
                    debug!(conn, level, "unsupported protocol level");
                    let connack = Bytes::copy_from_slice(&codec::unsupported_protocol_connack());
                    let _ = outbound.send(Outbound::Raw(connack));
                    let _ = outbound.send(Outbound::Close);
                    return ReadEnd::Stopped;
                }
                Err(DecodeError::Invalid { reason, detail }) => {
                    debug!(conn, ?reason, "malformed packet: {detail}");
                    if let Some(v) = decoder.version() {
                        let _ = version.set(v);
                    }
                    if events
                        .send(Event::Malformed { conn, reason })
                        .await
                        .is_err()
                    {
                        return ReadEnd::RouterGone;
                    }
                    return ReadEnd::Stopped;
                }
            }
        }

        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        let read = if version.get().is_none() {
            match timeout_at(connect_deadline, rd.read_buf(&mut buf)).await {
                Ok(read) => read,
                Err(_) => {
                    debug!(conn, "no CONNECT within {CONNECT_TIMEOUT:?}");
                    return ReadEnd::Gone;
                }
            }
        } else {
            rd.read_buf(&mut buf).await
        };
        match read {
            Ok(0) => {
                if !buf.is_empty() {
                    debug!(conn, "peer closed in the middle of a packet");
                }
                return ReadEnd::Gone;
            }
            Ok(_) => {}
            Err(e) => {
                debug!(conn, "read failed: {e}");
                return ReadEnd::Gone;
            }
        }
    }
}

/// Encodes and writes what the router sends, batching what is already
/// queued into one write, until told to close or forgotten.
async fn write_loop(
    conn: ConnId,
    mut wr: OwnedWriteHalf,
    mut outbound: mpsc::UnboundedReceiver<Outbound>,
    version: &OnceLock<MqttVersion>,
    queued_qos0: &AtomicUsize,
) -> WriteEnd {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let Some(first) = outbound.recv().await else {
            let _ = wr.shutdown().await;
            return WriteEnd::Forgotten;
        };
        let mut close = false;
        let mut qos0 = 0;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Outbound::Packet(packet) => {
                    if matches!(&packet, Packet::Publish(p) if p.qos == QoS::AtMostOnce) {
                        qos0 += 1;
                    }
                    match version.get() {
                        Some(&v) => {
                            if let Err(e) = codec::encode(v, &packet, &mut buf) {
                                warn!(conn, "cannot encode a packet: {e}");
                            }
                        }
                        None => debug!(conn, "packet before CONNECT not sent"),
                    }
                }
                Outbound::Raw(bytes) => buf.extend_from_slice(&bytes),
                Outbound::Close => {
                    close = true;
                    break;
                }
            }
            if buf.len() < WRITE_BATCH {
                next = outbound.try_recv().ok();
            }
        }
        if !buf.is_empty() {
            let written = wr.write_all(&buf).await;
            buf.clear();
            if let Err(e) = written {
                debug!(conn, "write failed: {e}");
                queued_qos0.fetch_sub(qos0, Ordering::AcqRel);
                return WriteEnd::Failed;
            }
        }
        queued_qos0.fetch_sub(qos0, Ordering::AcqRel);
        if close {
            let _ = wr.shutdown().await;
            return WriteEnd::Closed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::v5::mqttbytes::v5::Publish;

    /// A 3.1.1 CONNECT, clean session, keep alive 60, client id `test`, with
    /// the protocol level given.
    fn connect_v311(level: u8) -> Vec<u8> {
        let mut bytes = vec![0x10, 16, 0, 4, b'M', b'Q', b'T', b'T', level, 0x02, 0, 60];
        bytes.extend_from_slice(&[0, 4, b't', b'e', b's', b't']);
        bytes
    }

    /// A 5.0 CONNECT, clean start, keep alive 60, no properties, client id
    /// `test5`.
    fn connect_v5() -> Vec<u8> {
        let mut bytes = vec![0x10, 18, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0];
        bytes.extend_from_slice(&[0, 5, b't', b'e', b's', b't', b'5']);
        bytes
    }

    /// Everything the server sends until it closes, or fails after 5 s.
    async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
            .await
            .expect("the server did not close")
            .expect("read failed");
        out
    }

    async fn read_exact(stream: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut out = vec![0; n];
        timeout(Duration::from_secs(5), stream.read_exact(&mut out))
            .await
            .expect("nothing received")
            .expect("read failed");
        out
    }

    #[tokio::test]
    async fn connect_gets_connack() {
        let broker = start(BrokerConfig::ephemeral()).await.unwrap();
        assert_eq!(broker.url(), format!("mqtt://{}", broker.local_addr()));
        let mut client = TcpStream::connect(broker.local_addr()).await.unwrap();
        client.write_all(&connect_v311(4)).await.unwrap();
        assert_eq!(read_exact(&mut client, 4).await, [0x20, 0x02, 0x00, 0x00]);

        // PINGREQ, PINGRESP.
        client.write_all(&[0xC0, 0x00]).await.unwrap();
        assert_eq!(read_exact(&mut client, 2).await, [0xD0, 0x00]);

        timeout(Duration::from_secs(5), broker.shutdown())
            .await
            .expect("shutdown hangs");
        // 3.1.1 has no server DISCONNECT: just the close.
        assert_eq!(read_to_end(&mut client).await, b"");
    }

    #[tokio::test]
    async fn unsupported_protocol_level_gets_connack_1_then_eof() {
        let broker = start(BrokerConfig::ephemeral()).await.unwrap();
        let mut client = TcpStream::connect(broker.local_addr()).await.unwrap();
        client.write_all(&connect_v311(6)).await.unwrap();
        // MQTT-3.1.2-2.
        assert_eq!(read_to_end(&mut client).await, [0x20, 0x02, 0x00, 0x01]);
        broker.shutdown().await;
    }

    #[tokio::test]
    async fn malformed_first_packet_closes() {
        let broker = start(BrokerConfig::ephemeral()).await.unwrap();
        let mut client = TcpStream::connect(broker.local_addr()).await.unwrap();
        // A SUBSCRIBE before CONNECT.
        client
            .write_all(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00])
            .await
            .unwrap();
        read_to_end(&mut client).await;
        broker.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_disconnects_v5_clients_with_0x8b() {
        let broker = start(BrokerConfig::ephemeral()).await.unwrap();
        let mut client = TcpStream::connect(broker.local_addr()).await.unwrap();
        client.write_all(&connect_v5()).await.unwrap();
        let connack = read_exact(&mut client, 2).await;
        assert_eq!(connack[0], 0x20);
        read_exact(&mut client, usize::from(connack[1])).await;

        timeout(Duration::from_secs(5), broker.shutdown())
            .await
            .expect("shutdown hangs");
        let rest = read_to_end(&mut client).await;
        assert_eq!(rest.first(), Some(&0xE0), "{rest:02x?}");
        assert_eq!(rest.get(2), Some(&0x8B), "{rest:02x?}");
    }

    #[tokio::test]
    async fn shutdown_closes_connections_without_connect() {
        let broker = start(BrokerConfig::ephemeral()).await.unwrap();
        let mut client = TcpStream::connect(broker.local_addr()).await.unwrap();
        // Let the connection task start.
        sleep(Duration::from_millis(50)).await;
        timeout(Duration::from_secs(5), broker.shutdown())
            .await
            .expect("shutdown hangs");
        assert_eq!(read_to_end(&mut client).await, b"");
    }

    #[tokio::test]
    async fn silent_connection_is_closed_after_the_connect_timeout() {
        let broker = start(BrokerConfig::ephemeral()).await.unwrap();
        let mut client = TcpStream::connect(broker.local_addr()).await.unwrap();
        let started = Instant::now();
        assert_eq!(read_to_end(&mut client).await, b"");
        assert!(started.elapsed() >= CONNECT_TIMEOUT);
        broker.shutdown().await;
    }

    #[tokio::test]
    async fn dropping_the_handle_stops_listening() {
        let broker = start(BrokerConfig::ephemeral()).await.unwrap();
        let addr = broker.local_addr();
        drop(broker);
        timeout(Duration::from_secs(5), async {
            while TcpStream::connect(addr).await.is_ok() {
                sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("still listening");
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_wait() {
        let config = BrokerConfig {
            max_connections: 1,
            ..BrokerConfig::ephemeral()
        };
        let broker = start(config).await.unwrap();
        let mut first = TcpStream::connect(broker.local_addr()).await.unwrap();
        first.write_all(&connect_v311(4)).await.unwrap();
        read_exact(&mut first, 4).await;

        let mut second = TcpStream::connect(broker.local_addr()).await.unwrap();
        second.write_all(&connect_v311(4)).await.unwrap();
        let mut byte = [0u8; 1];
        let waited = timeout(Duration::from_millis(200), second.read(&mut byte)).await;
        assert!(waited.is_err(), "second connection served while first open");

        drop(first);
        assert_eq!(read_exact(&mut second, 4).await, [0x20, 0x02, 0x00, 0x00]);
        broker.shutdown().await;
    }

    #[tokio::test]
    async fn invalid_config_is_refused() {
        for (config, key) in [
            (
                BrokerConfig {
                    maximum_qos: 3,
                    ..BrokerConfig::ephemeral()
                },
                "maximum_qos",
            ),
            (
                BrokerConfig {
                    receive_maximum: 0,
                    ..BrokerConfig::ephemeral()
                },
                "receive_maximum",
            ),
            (
                BrokerConfig {
                    max_inflight: 0,
                    ..BrokerConfig::ephemeral()
                },
                "max_inflight",
            ),
            (
                BrokerConfig {
                    max_connections: 0,
                    ..BrokerConfig::ephemeral()
                },
                "max_connections",
            ),
            (
                BrokerConfig {
                    password_file: Some("/nonexistent/host-shim/passwords".into()),
                    ..BrokerConfig::ephemeral()
                },
                "password_file",
            ),
        ] {
            match start(config).await {
                Err(StartError::Config(msg)) => assert!(msg.contains(key), "{msg}"),
                other => panic!("{key}: expected a config error, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn bind_errors_name_the_address() {
        let config = BrokerConfig {
            host: "203.0.113.1".to_owned(),
            ..BrokerConfig::ephemeral()
        };
        match start(config).await {
            Err(err @ StartError::Bind { .. }) => {
                assert!(err.to_string().contains("203.0.113.1:0"), "{err}")
            }
            other => panic!("expected a bind error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn password_file_accounts_reach_the_core() {
        let path = std::env::temp_dir().join(format!("host-shim-passwords-{}", std::process::id()));
        std::fs::write(&path, "alice:secret\n").unwrap();
        let config = BrokerConfig {
            allow_anonymous: false,
            password_file: Some(path.clone()),
            ..BrokerConfig::ephemeral()
        };
        let broker = start(config).await;
        std::fs::remove_file(&path).unwrap();
        let broker = broker.unwrap();

        let login = |password: &[u8]| {
            // 3.1.1 CONNECT with username `alice` and the password given.
            let mut payload = vec![0, 1, b'c', 0, 5];
            payload.extend_from_slice(b"alice");
            payload.extend_from_slice(&[0, password.len() as u8]);
            payload.extend_from_slice(password);
            let mut bytes = vec![0x10, (10 + payload.len()) as u8];
            bytes.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 60]);
            bytes.extend_from_slice(&payload);
            bytes
        };
        let mut good = TcpStream::connect(broker.local_addr()).await.unwrap();
        good.write_all(&login(b"secret")).await.unwrap();
        assert_eq!(read_exact(&mut good, 4).await, [0x20, 0x02, 0x00, 0x00]);

        let mut bad = TcpStream::connect(broker.local_addr()).await.unwrap();
        bad.write_all(&login(b"wrong")).await.unwrap();
        let refused = read_exact(&mut bad, 4).await;
        assert_eq!(&refused[..3], [0x20, 0x02, 0x00]);
        assert_ne!(refused[3], 0x00, "wrong password accepted");
        broker.shutdown().await;
    }

    /// Reads one packet: its first byte and its body.
    async fn read_packet(stream: &mut TcpStream) -> (u8, Vec<u8>) {
        let first = read_exact(stream, 1).await[0];
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let byte = read_exact(stream, 1).await[0];
            len |= usize::from(byte & 0x7F) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        (first, read_exact(stream, len).await)
    }

    /// A 3.1.1 PUBLISH on a one-letter topic.
    fn publish(first: u8, topic: u8, pkid: Option<u16>, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![0, 1, topic];
        if let Some(pkid) = pkid {
            body.extend_from_slice(&pkid.to_be_bytes());
        }
        body.extend_from_slice(payload);
        let mut bytes = vec![first];
        let mut len = body.len();
        loop {
            let byte = (len % 128) as u8;
            len /= 128;
            bytes.push(if len > 0 { byte | 0x80 } else { byte });
            if len == 0 {
                break;
            }
        }
        bytes.extend_from_slice(&body);
        bytes
    }

    #[tokio::test]
    async fn slow_subscriber_loses_qos0_but_not_qos1() {
        const COUNT: usize = 2000;
        let config = BrokerConfig {
            max_queued_messages: 10,
            ..BrokerConfig::ephemeral()
        };
        let broker = start(config).await.unwrap();

        let mut sub = TcpStream::connect(broker.local_addr()).await.unwrap();
        sub.write_all(&connect_v311(4)).await.unwrap();
        read_exact(&mut sub, 4).await;
        // SUBSCRIBE t at QoS 0 and m at QoS 1.
        sub.write_all(&[0x82, 10, 0, 1, 0, 1, b't', 0, 0, 1, b'm', 1])
            .await
            .unwrap();
        assert_eq!(read_packet(&mut sub).await, (0x90, vec![0, 1, 0, 1]));

        let mut publisher = TcpStream::connect(broker.local_addr()).await.unwrap();
        let mut connect = connect_v311(4);
        *connect.last_mut().unwrap() = b'p';
        publisher.write_all(&connect).await.unwrap();
        read_exact(&mut publisher, 4).await;
        let message = publish(0x30, b't', None, &[7; 16 * 1024]);
        for _ in 0..COUNT {
            publisher.write_all(&message).await.unwrap();
        }
        publisher
            .write_all(&publish(0x32, b'm', Some(9), b"end"))
            .await
            .unwrap();
        // The PUBACK: the router has handled every message before it.
        assert_eq!(read_packet(&mut publisher).await, (0x40, vec![0, 9]));

        let mut received = 0;
        loop {
            let (first, body) = read_packet(&mut sub).await;
            assert_eq!(first & 0xF0, 0x30, "not a PUBLISH");
            if body[2] == b'm' {
                assert_eq!(first, 0x32, "the QoS 1 message keeps its QoS");
                break;
            }
            received += 1;
        }
        assert!(received < COUNT, "nothing dropped");
        broker.shutdown().await;
    }

    #[test]
    fn slow_subscribers_lose_qos0_only() {
        let (outbound, _rx) = mpsc::unbounded_channel();
        let mut entry = ConnEntry {
            outbound,
            queued_qos0: Arc::new(AtomicUsize::new(0)),
            in_core: true,
            closing: false,
            dropping: 0,
            dropped: 0,
        };
        let qos0 = Packet::Publish(Publish::new("t", QoS::AtMostOnce, "x", None));
        let qos1 = Packet::Publish(Publish::new("t", QoS::AtLeastOnce, "x", None));
        assert!(entry.admit(1, &qos0, 2));
        assert!(entry.admit(1, &qos0, 2));
        assert!(!entry.admit(1, &qos0, 2));
        assert!(!entry.admit(1, &qos0, 2));
        assert!(entry.admit(1, &qos1, 2));
        assert_eq!((entry.dropping, entry.dropped), (2, 2));

        // The writer wrote one: there is room again.
        entry.queued_qos0.fetch_sub(1, Ordering::AcqRel);
        assert!(entry.admit(1, &qos0, 2));
        assert_eq!((entry.dropping, entry.dropped), (0, 2));
        assert_eq!(entry.queued_qos0.load(Ordering::Acquire), 2);
    }
}
