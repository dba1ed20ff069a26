//! One connection task: the write side of a connection. It hands the read
//! side to the router (see `reader`), then encodes and writes what the
//! router sends back, until the broker closes the connection or forgets it.

use super::budget::{packet_cost, Budget};
use super::reader::{ReadLimits, Reader};
use super::restart::Phase;
use super::router::{Event, Outbound};
use super::transport::{Transport, WriteHalf};
use crate::codec;
use crate::core::ConnId;
use crate::memory::MemoryGauge;
use bytes::BytesMut;
use mqtt_topic::MqttVersion;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::{sleep, sleep_until, Instant};
use tracing::{debug, warn};

/// How long connections may take to flush their last packets at shutdown
/// before they are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Flush the write buffer when it grows beyond this, even if more packets
/// are waiting.
const WRITE_BATCH: usize = 64 * 1024;

/// One connection task: it registers the connection with the router and
/// runs its writer.
pub(super) struct Connection {
    pub(super) conn: ConnId,
    pub(super) limits: ReadLimits,
    /// `max_outbound_bytes`: the writer tells the router when its queue is
    /// back under half of it.
    pub(super) outbound_limit: usize,
    /// The broker's gauge of memory held by queued messages.
    pub(super) gauge: MemoryGauge,
    pub(super) events: mpsc::Sender<Event>,
    pub(super) shutdown: watch::Receiver<Phase>,
    /// Held, never used: see [`BrokerHandle::shutdown`](super::BrokerHandle::shutdown).
    pub(super) _done: mpsc::Sender<()>,
    /// Held: frees a connection slot when the task ends.
    pub(super) _permit: tokio::sync::OwnedSemaphorePermit,
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
    /// Runs the connection over `stream`; `identity` is the user name its
    /// client certificate gives (`tls.use_identity_as_username`).
    pub(super) async fn run(self, stream: Transport, identity: Option<String>) {
        let conn = self.conn;
        if let Err(e) = stream.set_nodelay() {
            debug!(conn, "cannot set TCP_NODELAY: {e}");
        }
        let (rd, wr) = match stream.split() {
            Ok(halves) => halves,
            Err(e) => {
                warn!(
                    conn,
                    "cannot set up the connection's read side, closing it: {e}"
                );
                return;
            }
        };
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let queued_qos0 = Arc::new(AtomicUsize::new(0));
        let budget = Arc::new(Budget::new(self.gauge.clone()));
        let kill = Arc::new(Notify::new());
        // Set by the router when it decodes the CONNECT, before the core can
        // answer it.
        let version = Arc::new(OnceLock::new());
        // Dropped when this task ends, which tells the reader.
        let (_writing, writer_gone) = oneshot::channel::<()>();
        let mut reader = Reader::new(conn, rd, self.limits, version.clone(), writer_gone);
        reader.identity = identity;
        let opened = Event::Opened {
            reader: Box::new(reader),
            outbound: out_tx,
            queued_qos0: queued_qos0.clone(),
            budget: budget.clone(),
            kill: kill.clone(),
        };
        if self.events.send(opened).await.is_err() {
            return;
        }
        let mut shutdown = self.shutdown.clone();
        let queues = Queues {
            qos0: &queued_qos0,
            budget: &budget,
            limit: self.outbound_limit,
        };
        let writer = write_loop(conn, wr, out_rx, &version, queues, &self.events);
        tokio::select! {
            end = writer => debug!(conn, ?end, "connection ended"),
            () = kill.notified() => debug!(conn, "connection ended by the router"),
            () = async {
                let _ = shutdown.changed().await;
                sleep(SHUTDOWN_GRACE).await;
            } => debug!(conn, "connection dropped at shutdown before it was flushed"),
        }
    }
}

/// What the writer counts down as it writes.
struct Queues<'a> {
    /// QoS 0 PUBLISHes queued.
    qos0: &'a AtomicUsize,
    /// Bytes queued.
    budget: &'a Budget,
    /// `max_outbound_bytes`.
    limit: usize,
}

/// Encodes and writes what the router sends, batching what is already
/// queued into one write, until told to close or forgotten. A packet held
/// back until a later instant ([`Outbound::Late`]) ends the batch before
/// it, and what follows waits behind it.
async fn write_loop(
    conn: ConnId,
    mut wr: WriteHalf,
    mut outbound: mpsc::UnboundedReceiver<Outbound>,
    version: &OnceLock<MqttVersion>,
    queues: Queues<'_>,
    events: &mpsc::Sender<Event>,
) -> WriteEnd {
    let queued_qos0 = queues.qos0;
    let mut buf = BytesMut::with_capacity(4096);
    // A late packet taken off the queue before its time.
    let mut held = None;
    loop {
        let first = match held.take() {
            Some(late) => late,
            None => {
                let Some(first) = outbound.recv().await else {
                    let _ = wr.shutdown().await;
                    return WriteEnd::Forgotten;
                };
                first
            }
        };
        if let Outbound::Late(_, due) = &first {
            sleep_until(*due).await;
        }
        let mut close = false;
        let mut qos0 = 0;
        let mut paced = 0;
        let mut cost = 0;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Outbound::Packet(packet) => {
                    if matches!(&packet, Packet::Publish(p) if p.qos == QoS::AtMostOnce) {
                        qos0 += 1;
                    }
                    cost += packet_cost(&packet);
                    encode(conn, version, &packet, &mut buf);
                }
                Outbound::Paced(packet) => {
                    paced += 1;
                    cost += packet_cost(&packet);
                    encode(conn, version, &packet, &mut buf);
                }
                Outbound::Late(packet, _) => {
                    cost += packet_cost(&packet);
                    encode(conn, version, &packet, &mut buf);
                }
                Outbound::Raw(bytes) => buf.extend_from_slice(&bytes),
                Outbound::Close => {
                    close = true;
                    break;
                }
            }
            if buf.len() < WRITE_BATCH {
                next = outbound.try_recv().ok();
                if matches!(&next, Some(Outbound::Late(_, due)) if *due > Instant::now()) {
                    held = next.take();
                }
            }
        }
        if !buf.is_empty() {
            // A TLS stream may hold the last record until flushed.
            let written = match wr.write_all(&buf).await {
                Ok(()) => wr.flush().await,
                Err(e) => Err(e),
            };
            buf.clear();
            if let Err(e) = written {
                debug!(conn, "write failed: {e}");
                queued_qos0.fetch_sub(qos0, Ordering::AcqRel);
                queues.budget.written(cost, queues.limit);
                return WriteEnd::Failed;
            }
        }
        queued_qos0.fetch_sub(qos0, Ordering::AcqRel);
        if queues.budget.written(cost, queues.limit) {
            // The router gone is the shutdown.
            let _ = events.send(Event::Drained { conn }).await;
        }
        if paced > 0 {
            let written = Event::Written { conn, count: paced };
            // The router gone is the shutdown; the close follows.
            let _ = events.send(written).await;
        }
        if close {
            let _ = wr.shutdown().await;
            return WriteEnd::Closed;
        }
    }
}

/// Encodes `packet` for the connection's protocol version onto `buf`.
fn encode(conn: ConnId, version: &OnceLock<MqttVersion>, packet: &Packet, buf: &mut BytesMut) {
    match version.get() {
        Some(&v) => {
            if let Err(e) = codec::encode(v, packet, buf) {
                warn!(conn, "cannot encode a packet: {e}");
            }
        }
        None => debug!(conn, "packet before CONNECT not sent"),
    }
}
