//! The router task: it owns the core and the retained store's file, feeds
//! the core the connections' events, the management requests and the
//! timers, writes the retained changes it hands out, and carries out its
//! actions.

use super::handle::{AdminError, AdminRequest};
use crate::codec::Frame;
use crate::core::{Action, Broker, ConnId};
use crate::retained::{DiskStore, RetainedStoreError};
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Packet};
use rumqttc::v5::mqttbytes::QoS;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};
use tracing::{debug, error, info, warn};

/// Capacity of the event channel from connections to the router. Small
/// enough that a router that falls behind soon stops the readers.
pub(super) const EVENT_CAPACITY: usize = 1024;

/// Most events the router handles before it carries out the core's actions
/// (and commits the retained changes they made).
const EVENT_BATCH: usize = 64;

/// What a connection task tells the router.
// Nearly every event is a `Frame`: boxing it would only add an allocation
// per packet.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum Event {
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
pub(super) enum Outbound {
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
pub(super) struct Router {
    max_queued: usize,
    conns: HashMap<ConnId, ConnEntry>,
    /// The retained message store's file, with disk storage.
    disk: Option<DiskStore>,
    /// The last retained write failed: the next failure is not logged
    /// again, and a success is.
    store_failing: bool,
    /// Failed writes of retained messages to disk.
    write_errors: u64,
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
    /// A router with no connections; QoS 0 messages beyond `max_queued`
    /// waiting for one connection are dropped. `disk` is the retained
    /// message store's file, with disk storage.
    pub(super) fn new(max_queued: usize, disk: Option<DiskStore>) -> Self {
        Router {
            max_queued,
            conns: HashMap::new(),
            disk,
            store_failing: false,
            write_errors: 0,
        }
    }

    /// Feeds events, management requests and timeouts to the core and
    /// carries out its actions, until shutdown.
    pub(super) async fn run(
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
        debug!(
            stats = ?core.stats(),
            retained_write_errors = self.write_errors,
            "router stopped"
        );
        // Close the retained store's file before `_done` goes, so once
        // `shutdown` returns a new broker can open the file.
        drop(self.disk.take());
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
        match self.commit_retained(core) {
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
                    .map_err(|invalid| AdminError::InvalidFilter(invalid.to_string()));
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
                let result = match self.commit_retained(core) {
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

    /// Writes the retained changes the core has made since the last call,
    /// with any still pending from a failed write, in one transaction. A
    /// no-op with memory storage or nothing to write.
    ///
    /// # Errors
    ///
    /// When the write fails; the changes stay pending and are tried again
    /// at the next commit, and the messages stay retained in memory.
    fn commit_retained(&mut self, core: &mut Broker) -> Result<(), RetainedStoreError> {
        let writes = core.poll_retained_writes();
        let Some(disk) = self.disk.as_mut() else {
            return Ok(());
        };
        if let Some(writes) = writes {
            disk.stage(writes);
        }
        disk.commit().inspect_err(|_| self.write_errors += 1)
    }

    /// Carries out every action the core has queued. Callers write the
    /// retained changes first ([`Router::commit_retained`]), since the
    /// actions may acknowledge them.
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

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::v5::mqttbytes::v5::Publish;

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
