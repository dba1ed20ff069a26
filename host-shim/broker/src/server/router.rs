//! The router task: it owns the core, the files of the retained and session
//! stores and the read side of every connection. It reads the connections
//! in the order their sockets became readable (see `reader`), decodes their
//! bytes and feeds the packets to the core, with the management requests,
//! the timers and what the connection tasks report; writes the retained and
//! session changes the core hands out; and carries out its actions, with the
//! faults of `faults` injected on the way (see `faults`).

use super::budget::{packet_cost, Budget, Episodes};
use super::faults::{AckFault, DropCause, Faults};
use super::handle::{AdminError, AdminRequest};
use super::reader::{Reader, Reads, Wake};
use super::restart::{Handback, Phase};
use crate::codec::{self, DecodeError, Frame};
use crate::core::{Action, Broker, ConnId};
use crate::log_limit::LogLimit;
use crate::retained::{DiskStore, RetainedStoreError};
use crate::session::{SessionStore, SessionStoreError};
use bytes::Bytes;
use futures_util::FutureExt;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::coop::{consume_budget, unconstrained};
use tokio::time::{sleep_until, Instant};
use tracing::{debug, error, info, warn};

/// Capacity of the event channel from connection tasks to the router.
pub(super) const EVENT_CAPACITY: usize = 1024;

/// Most packets (or events) the router handles before it carries out the
/// core's actions (and commits the retained changes they made).
const EVENT_BATCH: usize = 64;

/// After shutdown, how long the router keeps reading (and discarding) what
/// clients still send while their connections flush and close.
const SHUTDOWN_LINGER: Duration = Duration::from_secs(4);

/// What a connection task tells the router.
#[derive(Debug)]
pub(super) enum Event {
    /// A new connection: its read side, and how to reach its writer.
    Opened {
        // Boxed: a reader is large, the other events are small.
        reader: Box<Reader>,
        outbound: mpsc::UnboundedSender<Outbound>,
        /// QoS 0 PUBLISHes queued on `outbound` and not yet written.
        queued_qos0: Arc<AtomicUsize>,
        /// Bytes queued on `outbound` and not yet written.
        budget: Arc<Budget>,
        /// Ends the connection task at once, whatever it is writing.
        kill: Arc<tokio::sync::Notify>,
    },
    /// The writer wrote `count` more [`Outbound::Paced`] packets.
    Written { conn: ConnId, count: usize },
    /// The writer's queue, over its budget before, is back under half of it.
    Drained { conn: ConnId },
}

/// What the router tells a connection task.
// Nearly every message is a `Packet`: boxing it would only add an
// allocation per packet.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum Outbound {
    /// Encode and write this packet.
    Packet(Packet),
    /// The same for a packet the core paces ([`Action::SendPaced`]): never
    /// dropped here, and reported back once written ([`Event::Written`]).
    Paced(Packet),
    /// Write these bytes as they are.
    Raw(Bytes),
    /// The same as `Packet`, written no earlier than the instant given
    /// (`faults.delay_acks_ms`); what follows waits behind it.
    Late(Packet, Instant),
    /// Write what is queued before, then close.
    Close,
}

/// The router's view of one connection.
#[derive(Debug)]
struct ConnEntry {
    outbound: mpsc::UnboundedSender<Outbound>,
    queued_qos0: Arc<AtomicUsize>,
    budget: Arc<Budget>,
    kill: Arc<tokio::sync::Notify>,
    /// When the queue went over its budget, while it is, and the bytes
    /// written to the client by then.
    over_since: Option<Instant>,
    written_mark: u64,
    /// The reader, not read while the queue is over its budget.
    parked: Option<Reader>,
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
    /// connection with `max_queued` of them already waiting, or whose queue
    /// would go over `max_bytes` (unless it is empty). Counts what is
    /// admitted and what is not.
    fn admit(
        &mut self,
        conn: ConnId,
        packet: &Packet,
        max_queued: usize,
        max_bytes: usize,
    ) -> bool {
        let Packet::Publish(publish) = packet else {
            return true;
        };
        if publish.qos != QoS::AtMostOnce {
            return true;
        }
        let bytes = self.budget.queued();
        if self.queued_qos0.load(Ordering::Acquire) >= max_queued
            || (bytes > 0 && bytes + packet_cost(packet) > max_bytes)
        {
            if self.dropping == 0 {
                warn!(
                    conn,
                    "subscriber too slow: {} QoS 0 messages, {bytes} bytes queued; \
                     dropping more until it catches up",
                    self.queued_qos0.load(Ordering::Acquire)
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
    /// `max_outbound_bytes` and `slow_client_timeout`.
    max_outbound: usize,
    slow_grace: Duration,
    /// Connections over their outbound budget, oldest first.
    episodes: Episodes,
    /// Times a connection went over its outbound budget, and was closed for
    /// staying over it.
    slow_episodes: u64,
    slow_closed: u64,
    slow_log: LogLimit,
    conns: HashMap<ConnId, ConnEntry>,
    /// The read side of every connection.
    reads: Reads,
    /// The retained message store's file, with disk storage.
    disk: Option<DiskStore>,
    /// The session store's file, with disk storage.
    sessions: Option<SessionStore>,
    /// The last retained write failed: the next failure is not logged
    /// again, and a success is.
    store_failing: bool,
    /// The same for the last session write.
    sessions_failing: bool,
    /// Failed writes of retained messages or sessions to disk.
    write_errors: u64,
    /// Connections closed for a packet not finished in time.
    packet_timeouts: u64,
    packet_timeout_log: LogLimit,
    /// The faults injected (`faults`).
    faults: Faults,
}

/// What the router remembers of a batch of events until their actions are
/// carried out.
#[derive(Debug, Default)]
struct Batch {
    /// Connections that sent a retained QoS 1 or 2 PUBLISH in the batch:
    /// their acknowledgement promises that the message is stored.
    retained_publishers: Vec<ConnId>,
    /// Connections whose acknowledgements in the batch promise that a
    /// session's change is stored (the core says which).
    session_waiting: Vec<ConnId>,
}

impl Router {
    /// A router with no connections; QoS 0 messages beyond `max_queued`
    /// (or `max_outbound` bytes) waiting for one connection are dropped, and
    /// a connection over `max_outbound` bytes for `slow_grace` is closed. `disk` is the retained
    /// message store's file, and `sessions` the session store's, with disk
    /// storage; `faults` injects the configured faults from now on.
    pub(super) fn new(
        max_queued: usize,
        max_outbound: usize,
        slow_grace: Duration,
        disk: Option<DiskStore>,
        sessions: Option<SessionStore>,
        mut faults: Faults,
    ) -> Self {
        faults.started(Instant::now());
        Router {
            max_queued,
            max_outbound,
            slow_grace,
            episodes: Episodes::default(),
            slow_episodes: 0,
            slow_closed: 0,
            slow_log: LogLimit::default(),
            conns: HashMap::new(),
            reads: Reads::new(),
            disk,
            sessions,
            store_failing: false,
            sessions_failing: false,
            write_errors: 0,
            packet_timeouts: 0,
            packet_timeout_log: LogLimit::default(),
            faults,
        }
    }

    /// Feeds reads, events, management requests and timeouts to the core
    /// and carries out its actions, until shutdown or a restart; then hands
    /// what outlives it to `handback`.
    pub(super) async fn run(
        mut self,
        mut core: Broker,
        mut events: mpsc::Receiver<Event>,
        mut admin: mpsc::Receiver<AdminRequest>,
        mut shutdown: watch::Receiver<Phase>,
        _done: mpsc::Sender<()>,
        handback: oneshot::Sender<Handback>,
    ) {
        // Cleared when every `BrokerAdmin` is gone, so the closed channel
        // is not polled again and again.
        let mut admin_open = true;
        loop {
            let deadline = [
                core.poll_timeout(),
                self.slow_deadline(),
                self.faults.close_all_due(),
            ]
            .into_iter()
            .flatten()
            .min();
            let reading = !self.reads.is_empty();
            // Biased: shutdown first, then due timers, so a steady stream of
            // packets cannot hold back keep alive and expiry; then the rare
            // management requests, so they are answered under load too; then
            // new connections and write reports, then the sockets.
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                () = sleep_until_opt(deadline) => {
                    core.handle_timeout(Instant::now().into_std());
                    let mut batch = Batch::default();
                    self.close_slow(&mut core, &mut batch);
                    if self.faults.close_all_now(Instant::now()) {
                        self.drop_all(&mut core, DropCause::Every);
                    }
                    self.finish(&mut core, &mut batch);
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
                    self.event(&mut core, event);
                    // Take what else is waiting, so the actions of a burst
                    // are carried out together.
                    for _ in 1..EVENT_BATCH {
                        let Ok(event) = events.try_recv() else { break };
                        self.event(&mut core, event);
                    }
                    self.finish(&mut core, &mut batch);
                }
                // Outside the cooperative budget: see `reader`.
                Some((reader, wake)) = unconstrained(self.reads.next()), if reading => {
                    let mut batch = Batch::default();
                    let mut handled = self.ready(&mut core, reader, wake, &mut batch);
                    // Take the other sockets that are ready, in order, so
                    // the actions of a burst are carried out together and
                    // its retained changes are written in one transaction.
                    while handled < EVENT_BATCH {
                        let Some(Some((reader, wake))) =
                            unconstrained(self.reads.next()).now_or_never()
                        else {
                            break;
                        };
                        handled += self.ready(&mut core, reader, wake, &mut batch);
                    }
                    self.finish(&mut core, &mut batch);
                }
            }
            // The reads bypass the budget; this keeps the router a good
            // neighbour to the connection tasks on its thread.
            consume_budget().await;
        }

        // No more new connections or reports: the connection tasks that are
        // still sending them stop waiting.
        drop(events);
        // A restart is a crash to the clients: no DISCONNECT and no wills;
        // what storage keeps is all that comes back.
        if *shutdown.borrow() == Phase::Restarting {
            for &conn in self.conns.keys() {
                self.faults.dropped(conn, DropCause::Restart);
            }
        } else {
            core.handle_shutdown(Instant::now().into_std());
        }
        self.finish(&mut core, &mut Batch::default());
        // Connections the core never heard of (no CONNECT yet).
        for (_, entry) in self.conns.drain() {
            let _ = entry.outbound.send(Outbound::Close);
        }
        debug!(
            stats = ?core.stats(),
            disk_write_errors = self.write_errors,
            over_outbound_budget = self.slow_episodes,
            closed_over_outbound_budget = self.slow_closed,
            packet_timeouts = self.packet_timeouts,
            faults = ?self.faults.stats,
            "router stopped"
        );
        // Close the stores' files before `_done` goes, so once `shutdown`
        // returns a new broker can open them.
        drop(self.disk.take());
        drop(self.sessions.take());
        // The next instance of a restart takes over here.
        let _ = handback.send(Handback {
            admin,
            faults: self.faults,
            next_assigned_id: core.next_assigned_id(),
        });
        // Every connection is closing: read what the clients still send
        // while the writers flush, so the closes stay clean.
        let reads = &mut self.reads;
        let _ = tokio::time::timeout(SHUTDOWN_LINGER, async {
            while let Some((reader, wake)) = reads.next().await {
                if wake != Wake::Lingered {
                    reads.linger(reader);
                }
            }
        })
        .await;
        drop(_done);
    }

    /// Handles what a connection task reported. Its actions wait for
    /// [`Router::finish`].
    fn event(&mut self, core: &mut Broker, event: Event) {
        match event {
            Event::Opened {
                reader,
                outbound,
                queued_qos0,
                budget,
                kill,
            } => {
                self.conns.insert(
                    reader.conn,
                    ConnEntry {
                        outbound,
                        queued_qos0,
                        budget,
                        kill,
                        over_since: None,
                        written_mark: 0,
                        parked: None,
                        in_core: false,
                        closing: false,
                        dropping: 0,
                        dropped: 0,
                    },
                );
                self.reads.arm(*reader);
            }
            Event::Written { conn, count } => {
                if self.conns.get(&conn).is_some_and(|entry| entry.in_core) {
                    core.handle_written(Instant::now().into_std(), conn, count);
                }
            }
            Event::Drained { conn } => {
                if let Some(entry) = self.conns.get_mut(&conn) {
                    if entry.over_since.take().is_some() {
                        debug!(conn, "outbound queue back under its budget");
                    }
                    if let Some(reader) = entry.parked.take() {
                        self.reads.arm(reader);
                    }
                }
            }
        }
    }

    /// Handles a reader whose future ended: reads its socket, decodes and
    /// hands the packets to the core, and puts it back to wait; or ends the
    /// connection. Returns how many packets it handled (at least 1, for
    /// batching). Their actions wait for [`Router::finish`].
    fn ready(
        &mut self,
        core: &mut Broker,
        mut reader: Reader,
        wake: Wake,
        batch: &mut Batch,
    ) -> usize {
        let conn = reader.conn;
        match wake {
            Wake::Lingered => return 1,
            Wake::ConnectTimeout => {
                debug!(conn, "no CONNECT within the connect timeout");
                self.transport_ended(core, conn, batch);
                return 1;
            }
            Wake::PacketTimeout => {
                self.packet_timeouts += 1;
                let now = Instant::now().into_std();
                self.packet_timeout_log.log(now, |suppressed| {
                    warn!(
                        conn,
                        total = self.packet_timeouts,
                        suppressed,
                        "closed: a packet started and did not finish within packet_timeout"
                    )
                });
                self.transport_ended(core, conn, batch);
                self.reads.linger(reader);
                return 1;
            }
            Wake::WriterGone => {
                // The writer failed, was stopped, or closed the connection;
                // in the first two cases the core has not heard of it yet.
                self.transport_ended(core, conn, batch);
                self.reads.linger(reader);
                return 1;
            }
            Wake::Readable => {}
        }
        if !self.conns.contains_key(&conn) {
            // Closed by the broker: what the client still sends is not
            // acted upon.
            self.reads.linger(reader);
            return 1;
        }
        match reader.read() {
            Ok(0) => {
                if !reader.buf.is_empty() {
                    debug!(conn, "peer closed in the middle of a packet");
                }
                self.transport_ended(core, conn, batch);
                1
            }
            Ok(_) => {
                let handled = self.decode(core, &mut reader, batch);
                match handled {
                    Some(handled) if self.faults.packets_used_up(reader.packets) => {
                        self.faults.closed_after_packets(conn, reader.packets);
                        self.transport_ended(core, conn, batch);
                        self.reads.linger(reader);
                        handled.max(1)
                    }
                    Some(handled) => {
                        reader.decoded(handled);
                        match self.conns.get_mut(&conn) {
                            // Its replies are not read: read no more
                            // requests until they are.
                            Some(entry) if entry.over_since.is_some() => {
                                entry.parked = Some(reader);
                            }
                            _ => self.reads.arm(reader),
                        }
                        handled.max(1)
                    }
                    None => {
                        self.reads.linger(reader);
                        1
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.reads.arm(reader);
                1
            }
            Err(e) => {
                debug!(conn, "read failed: {e}");
                self.transport_ended(core, conn, batch);
                1
            }
        }
    }

    /// Decodes what `reader` has buffered and hands each packet to the core.
    /// Returns how many, or `None` when the bytes could not be decoded and
    /// the connection is being closed.
    fn decode(
        &mut self,
        core: &mut Broker,
        reader: &mut Reader,
        batch: &mut Batch,
    ) -> Option<usize> {
        let conn = reader.conn;
        let now = Instant::now().into_std();
        let mut handled = 0;
        loop {
            match reader.decoder.decode(&mut reader.buf) {
                Ok(Some(frame)) => {
                    handled += 1;
                    reader.packets += 1;
                    if let Frame::Connect { version, .. } = &frame {
                        let _ = reader.version.set(*version);
                        reader.connect_deadline = None;
                        if let Some(refusal) = self.faults.refuse_connect(conn) {
                            // The core is never involved.
                            if let Some(entry) = self.conns.remove(&conn) {
                                entry
                                    .budget
                                    .charge(packet_cost(&refusal), self.max_outbound);
                                let _ = entry.outbound.send(Outbound::Packet(refusal));
                                let _ = entry.outbound.send(Outbound::Close);
                            }
                            return None;
                        }
                    }
                    let Some(entry) = self.conns.get_mut(&conn) else {
                        return Some(handled);
                    };
                    entry.in_core = true;
                    if let Frame::Packet(Packet::Publish(publish)) = &frame {
                        if publish.retain && publish.qos != QoS::AtMostOnce {
                            batch.retained_publishers.push(conn);
                        }
                    }
                    if let (Frame::Connect { .. }, Some(user)) = (&frame, reader.identity.take()) {
                        core.handle_certified(conn, user);
                    }
                    core.handle_frame(now, conn, frame);
                    if self.faults.packets_used_up(reader.packets) {
                        // The rest is lost with the connection.
                        return Some(handled);
                    }
                }
                Ok(None) => return Some(handled),
                Err(DecodeError::UnsupportedProtocol { level }) => {
                    // MQTT-3.1.2-2: CONNACK 0x01 and close, the core is
                    // never involved.
                    debug!(conn, level, "unsupported protocol level");
                    if let Some(entry) = self.conns.remove(&conn) {
                        let connack =
                            Bytes::copy_from_slice(&codec::unsupported_protocol_connack());
                        let _ = entry.outbound.send(Outbound::Raw(connack));
                        let _ = entry.outbound.send(Outbound::Close);
                    }
                    return None;
                }
                Err(DecodeError::Invalid { reason, detail }) => {
                    debug!(conn, ?reason, "malformed packet: {detail}");
                    if let Some(v) = reader.decoder.version() {
                        let _ = reader.version.set(v);
                    }
                    if let Some(entry) = self.conns.get_mut(&conn) {
                        // The core closes the connection even if it never
                        // saw it.
                        entry.in_core = true;
                        core.handle_malformed(now, conn, reason);
                    }
                    return None;
                }
            }
        }
    }

    /// The connection's transport ended (end of stream, read error, no
    /// CONNECT in time, or its writer gone): the core forgets it, and
    /// dropping the outbound sender ends the writer once it has written
    /// what is queued. A connection already forgotten is left alone.
    fn transport_ended(&mut self, core: &mut Broker, conn: ConnId, batch: &mut Batch) {
        let Some(entry) = self.conns.get(&conn) else {
            return;
        };
        let in_core = entry.in_core;
        // What the batch owes this connection goes out while the writer can
        // still take it: end the batch here.
        self.finish(core, batch);
        if in_core {
            core.handle_closed(Instant::now().into_std(), conn);
        }
        self.finish(core, batch);
        if let Some(entry) = self.conns.remove(&conn) {
            if entry.dropped > 0 {
                debug!(conn, dropped = entry.dropped, "QoS 0 messages dropped");
            }
        }
    }

    /// Ends a batch: writes its retained and session changes to disk, then
    /// carries out its actions. When a write fails, the connections whose
    /// acknowledgements promise what it wrote (a retained QoS 1 or 2
    /// PUBLISH, a message queued for a persistent session, a QoS 2 packet
    /// identifier) are closed instead of acknowledged, so their clients
    /// send it again.
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
                self.close_waiting(&batch.retained_publishers, "its retained message");
            }
        }
        match self.commit_sessions(core, batch) {
            Ok(()) => {
                if self.sessions_failing {
                    self.sessions_failing = false;
                    info!("sessions are written to disk again");
                }
            }
            Err(error) => {
                if !self.sessions_failing {
                    self.sessions_failing = true;
                    error!(
                        %error,
                        "session changes not written to disk; closing the \
                         connections that wait for their acknowledgement"
                    );
                }
                self.close_waiting(&batch.session_waiting, "a session change");
            }
        }
        batch.retained_publishers.clear();
        batch.session_waiting.clear();
        self.dispatch(core);
        // Connections whose acknowledgement a fault dropped: cut now, and
        // what the core does about it (wills) carried out.
        let cuts = self.faults.take_cuts();
        if !cuts.is_empty() {
            for conn in cuts {
                self.cut(core, conn);
            }
            self.finish(core, batch);
        }
    }

    /// Closes `conns` without what the batch owes them: `what` they wait
    /// for is not on disk.
    fn close_waiting(&mut self, conns: &[ConnId], what: &str) {
        for conn in conns {
            if let Some(entry) = self.conns.get_mut(conn) {
                if !entry.closing {
                    warn!(conn, "closed: {what} is not on disk");
                    entry.closing = true;
                    // The entry stays: the connection's `Closed` event
                    // still tells the core.
                    let _ = entry.outbound.send(Outbound::Close);
                }
            }
        }
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
            AdminRequest::DropConnections { reply } => {
                let dropped = self.drop_all(core, DropCause::Request);
                self.finish(core, &mut Batch::default());
                let _ = reply.send(dropped);
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

    /// Writes the session changes the core has made since the last call,
    /// with any still pending from a failed write, in one transaction, and
    /// notes in `batch` the connections whose acknowledgements wait for
    /// them. A no-op with memory storage or nothing to write.
    ///
    /// # Errors
    ///
    /// When the write fails; the changes stay pending and are tried again
    /// at the next commit.
    fn commit_sessions(
        &mut self,
        core: &mut Broker,
        batch: &mut Batch,
    ) -> Result<(), SessionStoreError> {
        let writes = core.poll_session_writes();
        let Some(store) = self.sessions.as_mut() else {
            return Ok(());
        };
        if let Some(mut writes) = writes {
            batch.session_waiting.append(&mut writes.waiting);
            store.stage(writes);
        }
        store.commit().inspect_err(|_| self.write_errors += 1)
    }

    /// Carries out every action the core has queued. Callers write the
    /// retained and session changes first ([`Router::commit_retained`],
    /// [`Router::commit_sessions`]), since the actions may acknowledge
    /// them.
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
                    match self.faults.ack(conn, &packet) {
                        AckFault::Send => {}
                        AckFault::Drop => {
                            // Nothing more goes out: `finish` cuts it.
                            entry.closing = true;
                            continue;
                        }
                        AckFault::Delay(due) => {
                            let over = entry.budget.charge(packet_cost(&packet), self.max_outbound);
                            let _ = entry.outbound.send(Outbound::Late(packet, due));
                            if over {
                                self.went_over(conn);
                            }
                            continue;
                        }
                    }
                    if entry.admit(conn, &packet, self.max_queued, self.max_outbound) {
                        let over = entry.budget.charge(packet_cost(&packet), self.max_outbound);
                        // An error means the connection task has ended;
                        // its `Closed` event is on the way.
                        let _ = entry.outbound.send(Outbound::Packet(packet));
                        if over {
                            self.went_over(conn);
                        }
                    }
                }
                Action::SendPaced(conn, packet) => {
                    // Bounded by the core: no admission, no drop.
                    let Some(entry) = self.conns.get(&conn).filter(|e| !e.closing) else {
                        continue;
                    };
                    let over = entry.budget.charge(packet_cost(&packet), self.max_outbound);
                    let _ = entry.outbound.send(Outbound::Paced(packet));
                    if over {
                        self.went_over(conn);
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

impl Router {
    /// Closes every connection as a network failure would (see
    /// [`Router::cut`]), for a fault; returns how many. Their actions wait
    /// for [`Router::finish`].
    fn drop_all(&mut self, core: &mut Broker, cause: DropCause) -> usize {
        let mut conns: Vec<ConnId> = self.conns.keys().copied().collect();
        conns.sort_unstable();
        for &conn in &conns {
            self.faults.dropped(conn, cause);
            self.cut(core, conn);
        }
        conns.len()
    }

    /// Closes `conn` as a network failure would: what is queued for it is
    /// written, then the connection closes without DISCONNECT; nothing more
    /// it sends is read, and the core hears that its transport is gone.
    /// What the core does about it waits for [`Router::finish`].
    fn cut(&mut self, core: &mut Broker, conn: ConnId) {
        let Some(entry) = self.conns.remove(&conn) else {
            return;
        };
        let _ = entry.outbound.send(Outbound::Close);
        if entry.in_core {
            core.handle_closed(Instant::now().into_std(), conn);
        }
    }

    /// Connection `conn`'s outbound queue is over its budget: unless an
    /// episode is running, one starts, logged and counted; it ends when the
    /// writer drains the queue (`Drained`) or when [`Router::close_slow`]
    /// closes the connection.
    fn went_over(&mut self, conn: ConnId) {
        let Some(entry) = self.conns.get_mut(&conn) else {
            return;
        };
        if entry.over_since.is_some() {
            return;
        }
        let now = Instant::now();
        entry.over_since = Some(now);
        entry.written_mark = entry.budget.written_total();
        self.episodes.start(now.into_std(), conn);
        self.slow_episodes += 1;
        let (queued, total, grace) = (entry.budget.queued(), self.slow_episodes, self.slow_grace);
        self.slow_log.log(now.into_std(), |suppressed| {
            warn!(
                conn,
                queued,
                total,
                suppressed,
                "client reading too slowly: {queued} bytes queued for it, over \
                 max_outbound_bytes; its socket is not read until it catches up, and it \
                 is closed if it reads nothing for {grace:?}"
            )
        });
    }

    /// When the oldest episode over the outbound budget runs out of grace.
    fn slow_deadline(&self) -> Option<std::time::Instant> {
        self.episodes.oldest().map(|at| at + self.slow_grace)
    }

    /// Closes the connections still over their outbound budget after their
    /// grace with nothing written to them meanwhile (one that reads gets a
    /// new grace): the connection task is ended at once (its writer may be stuck
    /// on a full socket) and the core told the transport is gone.
    fn close_slow(&mut self, core: &mut Broker, batch: &mut Batch) {
        let now = Instant::now().into_std();
        let Some(cutoff) = now.checked_sub(self.slow_grace) else {
            return;
        };
        while let Some((started, conn)) = self.episodes.pop_started_by(cutoff) {
            let Some(entry) = self.conns.get_mut(&conn) else {
                continue;
            };
            // An episode that ended (and maybe another that began since) is
            // not this one.
            if entry.over_since.map(Instant::into_std) != Some(started) {
                continue;
            }
            let written = entry.budget.written_total();
            if written != entry.written_mark {
                // It reads, if slowly: a new grace from now.
                entry.written_mark = written;
                let renewed = Instant::from_std(now);
                entry.over_since = Some(renewed);
                self.episodes.start(now, conn);
                continue;
            }
            entry.kill.notify_one();
            entry.parked = None;
            self.slow_closed += 1;
            let (queued, total) = (entry.budget.queued(), self.slow_closed);
            self.slow_log.log(now, |suppressed| {
                warn!(
                    conn,
                    queued,
                    total,
                    suppressed,
                    "closed: over max_outbound_bytes and reading nothing for slow_client_timeout"
                )
            });
            self.transport_ended(core, conn, batch);
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
            budget: Arc::default(),
            kill: Arc::default(),
            over_since: None,
            written_mark: 0,
            parked: None,
            in_core: true,
            closing: false,
            dropping: 0,
            dropped: 0,
        };
        let qos0 = Packet::Publish(Publish::new("t", QoS::AtMostOnce, "x", None));
        let qos1 = Packet::Publish(Publish::new("t", QoS::AtLeastOnce, "x", None));
        assert!(entry.admit(1, &qos0, 2, usize::MAX));
        assert!(entry.admit(1, &qos0, 2, usize::MAX));
        assert!(!entry.admit(1, &qos0, 2, usize::MAX));
        assert!(!entry.admit(1, &qos0, 2, usize::MAX));
        assert!(entry.admit(1, &qos1, 2, usize::MAX));
        assert_eq!((entry.dropping, entry.dropped), (2, 2));

        // The writer wrote one: there is room again.
        entry.queued_qos0.fetch_sub(1, Ordering::AcqRel);
        assert!(entry.admit(1, &qos0, 2, usize::MAX));
        assert_eq!((entry.dropping, entry.dropped), (0, 2));
        assert_eq!(entry.queued_qos0.load(Ordering::Acquire), 2);
    }
}
