//! The broker as a state machine without I/O.
//!
//! [`Broker`] owns every session, the subscription trie and the retained
//! store. It never touches a socket, a file or a clock: the server shell
//! feeds it events and the current time, writes what it asks to be written
//! to disk, and carries out the actions it returns. That keeps every rule of
//! the protocol testable without a network or a disk, with time moved by
//! hand.
//!
//! # Calling it
//!
//! - Construction: [`Broker::new`], with the retained messages the shell
//!   read from disk, then `with_auth`, `with_gauge` and
//!   [`Broker::with_sessions`], with the sessions it read.
//! - Inputs: [`Broker::handle_frame`] for each decoded packet,
//!   [`Broker::handle_malformed`] when a connection's bytes cannot be decoded,
//!   [`Broker::handle_written`] when [`Action::SendPaced`] messages have
//!   been written, [`Broker::handle_closed`] when its transport ends,
//!   [`Broker::handle_timeout`] when [`Broker::poll_timeout`] is due, and
//!   [`Broker::handle_shutdown`] once at the end.
//! - Outputs, after an input or a batch of inputs, in this order:
//!   1. [`Broker::poll_retained_writes`]: with disk storage, the retained
//!      changes made since the last call. The shell writes them to disk, in
//!      one transaction, before anything else.
//!   2. [`Broker::poll_session_writes`]: the same for the changes of
//!      persistent sessions, with disk session storage.
//!   3. [`Broker::poll_action`] until it returns `None`: the actions, which
//!      the shell carries out in order.
//!
//!   The order is what keeps the rule that a PUBACK or PUBREC for a
//!   retained PUBLISH, or for one queued for a persistent session, goes
//!   out only once the message is on disk.
//! - [`Broker::poll_timeout`] may change after any input.
//! - Time passed in must never go backwards.
//!
//! All 3.1.1 packets arrive converted to their 5.0 form; a connection's
//! protocol version decides only what the rules say differs between the two.
//! Topic names and filters are parsed once, where a packet enters the core
//! (the Will Topic at CONNECT, a PUBLISH's topic once its alias is
//! resolved, each SUBSCRIBE and UNSUBSCRIBE filter), into
//! [`TopicName`] and
//! [`TopicFilter`](mqtt_topic::TopicFilter), and travel in those types from
//! then on.
//!
//! # Retained messages
//!
//! - Storing: limits (`retain.max_messages`, `retain.max_payload_bytes`)
//!   refuse to store, never to deliver; refusals are logged and counted in
//!   [`Stats`]. Expiry is the PUBLISH's own interval, else
//!   `retain.default_expiry`.
//! - Disk: with `retain.storage = {"disk": ...}` the shell opens the file
//!   and hands its messages to [`Broker::new`]; those that expired while
//!   the broker was down are dropped. From then on every change
//!   (stored, replaced, deleted, expired, and the drops at load) is also a
//!   pending write, the latest state of each changed topic, handed out by
//!   [`Broker::poll_retained_writes`]. The shell handles a batch of inputs,
//!   writes the batch's changes in one transaction (group commit), and only
//!   then carries out the batch's actions. Should the write fail, keeping the
//!   changes to try again, and holding back the acknowledgements that wait
//!   for them, is the shell's business; the messages stay retained in
//!   memory.
//! - Delivery to a new subscription: not a snapshot of messages but a cursor
//!   (the filter and the last topic sent) that walks the store in topic
//!   order, `retain.delivery_batch` messages a step, as the client's window
//!   frees up and, with `retain.delivery_rate`, on a timer. For QoS 1 and 2
//!   the window is the in-flight window; for QoS 0, which nothing
//!   acknowledges, it is the messages handed to the shell and not yet
//!   written to the socket ([`Action::SendPaced`], reported back through
//!   [`Broker::handle_written`]), so QoS 0 retained messages are never
//!   dropped for a full queue. A step fills whatever room the window has in
//!   one walk, as soon as one slot frees; a walk resumes by descending along
//!   the last topic sent, so a step costs the messages it sends plus the
//!   depth of the trie, never the messages still to come. So a `#`
//!   subscriber to a million retained topics costs the broker one cursor
//!   and a bounded window, not a million queued entries, and a client
//!   acknowledging one message at a time is served in linear time. A
//!   message deleted or expired before
//!   the cursor reaches it is skipped; one replaced after the SUBSCRIBE is
//!   skipped too, because the subscriber got the replacement as a live
//!   message (it matches the same filter), queued behind the cursor.
//! - Time: the core keeps `Instant`s for timers and expiry. For the
//!   wall-clock time a message was stored (listings, and expiry across
//!   restarts on disk) it maps `Instant`s onto the wall clock from one pair
//!   passed in at construction (so tests stay deterministic); a wall clock
//!   stepped later does not skew the core.
//!
//! # Shared subscriptions
//!
//! A group (`$share/{group}/{filter}`) gives each message to one member in
//! turn, a connected one when there is one. A QoS 1 or 2 delivery records
//! the groups it was made for (`Queued::shared`, kept with the PUBLISH
//! while in flight). When a member's session ends (expiry 0 or clean
//! session and the connection goes; session expiry, 3.1.1 ones by
//! `persistent_client_expiration`; a takeover with clean start; eviction by
//! `max_parked_sessions`), what the groups gave it and its client did not
//! receive goes to another member of each group, as a new delivery at that
//! member's QoS with its own subscription identifier: the PUBLISHes in
//! flight without PUBACK or PUBREC (one whose PUBREC came has been
//! received), then the queued ones. An UNSUBSCRIBE from the shared filter
//! hands on the queued ones; those in flight stay with the client, whose
//! delivery must complete (MQTT-3.10.4-3), unless its session ends first.
//! A session that is only parked keeps its messages until it resumes or
//! ends. With no member left they are dropped, counted in [`Stats`] and
//! logged.
//!
//! # Full queues
//!
//! A session's queue is bounded by `max_queued_messages` and
//! `max_queued_bytes`; a message for a full queue is dropped, counted in
//! [`Stats`] and logged. With `queue_full = "slow_publisher"` (the default)
//! a QoS 1 or 2 message for a connected session is not: it is queued over
//! the limits, and its publisher's PUBACK or PUBREC is held back until that
//! queue is within its limits again (its client has received and
//! acknowledged enough), or its client has gone. A connection's
//! acknowledgements leave in the order of its PUBLISHes, so those behind a
//! held one wait too. The publisher's window fills and it stops sending:
//! the slowness of a subscriber reaches its publishers instead of losing
//! messages. At most `receive_maximum` acknowledgements are held per
//! connection; beyond that, full queues drop again, so what is queued over
//! the limits stays bounded. Sessions whose client is away are not waited
//! for: their full queues drop.
//!
//! # Sessions on disk
//!
//! - Storing: with `sessions.storage = {"disk": ...}` every persistent
//!   session (5.0 Session Expiry Interval above 0, 3.1.1 Clean Session 0)
//!   is also kept on disk: its client identifier, protocol, expiry interval
//!   and the time its client disconnected; its subscriptions with their
//!   options; the QoS 1 and 2 messages in flight to it (the PUBLISH with
//!   its packet identifier, or the PUBREL awaiting PUBCOMP); its queued
//!   messages (with their QoS, RETAIN, subscription identifiers and expiry
//!   on the wall clock); the QoS 2 packet identifiers from its client that
//!   wait for a PUBREL; and its packet identifier counter. Sessions that
//!   end with their connection are never written. A will waiting for its
//!   delay is not kept, nor a retained delivery to a new subscription in
//!   progress (the retained messages stay in the retained store).
//! - Writes: each change is a pending write of the entry it changed (a
//!   queued message, a message in flight, a subscription, a packet
//!   identifier, the session's own small record), never the session
//!   whole, except when a CONNECT makes it persistent; handed out by
//!   [`Broker::poll_session_writes`] with the connections whose
//!   acknowledgements in the batch depend on them. As for retained
//!   messages, the shell writes a batch's changes in one transaction before
//!   it carries out the batch's actions, so a PUBACK or PUBREC to a
//!   publisher whose message was queued for a persistent session, a PUBREC
//!   for a QoS 2 PUBLISH from one (its packet identifier is kept, so a
//!   resend after a crash is recognised), a PUBCOMP, SUBACK or UNSUBACK
//!   leave once what they acknowledge is on disk. With memory storage
//!   nothing is recorded.
//! - Loading: [`Broker::with_sessions`] takes the sessions the shell read
//!   at start, parked. Expiry counts from when the client disconnected, on
//!   the wall clock; a session whose client was connected when the broker
//!   stopped without a shutdown (a crash, a kill) counts from the restart.
//!   Sessions, and queued messages, that expired while the broker was down
//!   are dropped (the messages counted in [`Stats::dropped_expired`]);
//!   `persistent_client_expiration`, `max_session_expiry`,
//!   `max_parked_sessions` and the queue limits apply as configured now. A
//!   resumed session sends its messages in flight again with DUP, as one
//!   resumed from memory does.
//!
//! # Layout
//!
//! Each file holds one `impl Broker` block with one job:
//!
//! - this file: the state, the inputs (`handle_*`), which hand each event
//!   to its job, and the outputs (`poll_*`);
//! - `connect`: CONNECT, authentication, CONNACK, sessions created or
//!   resumed;
//! - `publish`: inbound PUBLISH and the QoS 1 and 2 flows both ways,
//!   routing, and delivery: send now, queue, or transmit from the queue;
//! - `flow`: the publishers' acknowledgements held back for full queues;
//! - `subscribe`: SUBSCRIBE and UNSUBSCRIBE, with the filter checks;
//! - `retained`: storing retained messages, and the cursor that delivers
//!   them to a new subscription a step at a time;
//! - `disconnect`: DISCONNECT, closes for protocol violations and lost
//!   transports, and what happens to the session left behind;
//! - `shared`: a shared subscription member's undelivered messages handed
//!   to another member when its session ends or it unsubscribes;
//! - `timers`: keep alive, will delay, session expiry and the retained
//!   sweep;
//! - `admin`: retained messages listed, read, deleted and counted for the
//!   management API;
//! - `persist`: sessions on disk: their changes recorded, and the sessions
//!   read at start loaded.

mod admin;
mod connect;
mod disconnect;
mod flow;
mod persist;
mod publish;
mod retained;
mod shared;
mod subscribe;
mod timers;

#[cfg(test)]
mod tests;

use self::retained::RetainedCursor;
use self::timers::Timer;
use super::auth::Auth;
use super::codec::Frame;
use super::config::{BrokerConfig, RetainStorage};
use super::log_limit::LogLimit;
use super::memory::MemoryGauge;
use super::retained::{RetainedMessage, RetainedRecord, RetainedStore, RetainedWrites};
use super::session::{Session, SessionWrites, Will};
use super::trie::{Match, SubscriptionTrie};
use super::types::SessionId;
use mqtt_topic::{MqttVersion, TopicName};
use rumqttc::v5::mqttbytes::v5::{Disconnect, DisconnectReasonCode, Packet, PingResp};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// A transport connection, numbered by the server shell.
pub type ConnId = u64;

/// What the core asks the shell to do.
// Nearly every action is a Send; boxing its packet would cost an allocation
// per packet on the publish path to shrink the rare Close.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Encode `packet` and write it to the connection.
    Send(ConnId, Packet),
    /// The same for a QoS 0 retained message sent because of a new
    /// subscription. The core paces these itself (a bounded number not yet
    /// written per connection), so the shell must never drop one for a full
    /// queue; once written it reports them with [`Broker::handle_written`].
    SendPaced(ConnId, Packet),
    /// Write everything sent so far, then close the connection.
    Close(ConnId),
}

/// Counters the broker keeps; dropped messages are never silent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages dropped because a session queue was full.
    pub dropped_queue_full: u64,
    /// Messages dropped because they expired before delivery.
    pub dropped_expired: u64,
    /// Messages not sent because they exceeded the client's Maximum Packet Size.
    pub dropped_too_large: u64,
    /// Messages published to the broker.
    pub received: u64,
    /// Messages sent to subscribers.
    pub sent: u64,
    /// Retained messages not stored because `retain.max_messages` was
    /// reached (they were still delivered).
    pub retained_refused_full: u64,
    /// Retained messages not stored because their payload exceeded
    /// `retain.max_payload_bytes` (they were still delivered).
    pub retained_refused_too_large: u64,
    /// Parked sessions ended early because `max_parked_sessions` were
    /// parked.
    pub sessions_evicted: u64,
    /// PUBLISHes refused because `memory_limit` was reached.
    pub refused_memory_limit: u64,
    /// Messages a shared subscription gave a member whose session ended
    /// (or that unsubscribed) before its client received them, dropped
    /// because no other member of the group was left to take them (or the
    /// one chosen may not read the topic, as when routing).
    pub dropped_no_shared_member: u64,
    /// QoS 1 and 2 messages queued over a connected session's queue limits:
    /// with `queue_full = "slow_publisher"`, their publisher's
    /// acknowledgement held back; or handed over from a shared
    /// subscription's member that went away.
    pub queued_over_limit: u64,
    /// PUBACKs and PUBRECs held back: for a message queued over a limit,
    /// or behind such an acknowledgement on the same connection.
    pub acks_held: u64,
    /// Times a connection's acknowledgements started being held back.
    pub held_episodes: u64,
}

/// A transport connection the core knows about.
#[derive(Debug)]
struct Conn {
    version: MqttVersion,
    /// Set once the CONNECT was accepted.
    session: Option<SessionId>,
    /// Effective keep alive; zero means none.
    keep_alive: Duration,
    last_seen: Instant,
    will: Option<Will>,
    /// 5.0 topic aliases the client set (client to server only).
    aliases: HashMap<u16, TopicName>,
    /// [`Action::SendPaced`] messages not yet reported written.
    paced: usize,
}

/// The broker core. See the module documentation for how to drive it.
#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    auth: Auth,
    conns: HashMap<ConnId, Conn>,
    /// User names proven by client certificates, for the CONNECT that
    /// follows ([`Broker::handle_certified`]).
    certified: HashMap<ConnId, String>,
    sessions: HashMap<SessionId, Session>,
    by_client_id: HashMap<String, SessionId>,
    trie: SubscriptionTrie,
    retained: RetainedStore,
    timers: BTreeSet<(Instant, Timer)>,
    actions: VecDeque<Action>,
    next_session: SessionId,
    next_assigned_id: u64,
    sweep_scheduled: bool,
    stats: Stats,
    /// Reused for every routed message, so routing does not allocate.
    matches: Vec<Match>,
    /// Retained deliveries in progress, per session, oldest first.
    cursors: HashMap<SessionId, VecDeque<RetainedCursor>>,
    /// Reused by every retained delivery step.
    retained_scratch: Vec<Arc<RetainedMessage>>,
    /// One moment on both clocks, to turn `Instant`s into wall-clock time.
    clock: (Instant, SystemTime),
    /// The log lines of events clients cause at will, rate-limited.
    logs: Logs,
    /// Memory held by queued messages, here and in the connections'
    /// outbound queues, against `memory_limit`.
    gauge: MemoryGauge,
    /// Sessions parked (disconnected, not expired), oldest first, with the
    /// generation they were parked at; entries for sessions since resumed
    /// or ended are skipped and pruned.
    parked: VecDeque<(SessionId, u64)>,
    /// Publishers' acknowledgements held back for full queues.
    flow: flow::Flow,
    /// With `sessions.storage = {"disk": ...}`, the changes of persistent
    /// sessions recorded for the disk.
    journal: Option<persist::Journal>,
}

/// The rate-limited log lines of the core, one limit each.
#[derive(Debug, Default)]
struct Logs {
    queue_full: LogLimit,
    retained_too_large: LogLimit,
    retained_full: LogLimit,
    session_evicted: LogLimit,
    memory_full: LogLimit,
    shared_orphaned: LogLimit,
    publisher_held: LogLimit,
}

impl Broker {
    /// A broker with no sessions and the retained messages `loaded` from
    /// disk (none with memory storage; see the module documentation). `now`
    /// and `wall` are the same moment on the monotonic and the wall clock.
    pub fn new(
        config: BrokerConfig,
        loaded: Vec<RetainedRecord>,
        now: Instant,
        wall: SystemTime,
    ) -> Self {
        let mut retained = match config.retain.storage {
            RetainStorage::Memory => RetainedStore::new(),
            RetainStorage::Disk(_) => RetainedStore::persistent(),
        };
        retained.load(loaded, now, wall);
        let journal = match config.sessions.storage {
            RetainStorage::Memory => None,
            RetainStorage::Disk(_) => Some(persist::Journal::default()),
        };
        let mut broker = Broker {
            auth: Auth::inline(&config),
            config,
            conns: HashMap::new(),
            certified: HashMap::new(),
            sessions: HashMap::new(),
            by_client_id: HashMap::new(),
            trie: SubscriptionTrie::new(),
            retained,
            timers: BTreeSet::new(),
            actions: VecDeque::new(),
            next_session: 1,
            next_assigned_id: 1,
            sweep_scheduled: false,
            stats: Stats::default(),
            matches: Vec::new(),
            cursors: HashMap::new(),
            retained_scratch: Vec::new(),
            clock: (now, wall),
            logs: Logs::default(),
            parked: VecDeque::new(),
            gauge: MemoryGauge::default(),
            flow: flow::Flow::default(),
            journal,
        };
        broker.schedule_sweep(now);
        broker
    }

    /// Counts queued messages in `gauge`, which the shell shares with its
    /// outbound queues. Called before any session exists.
    pub(crate) fn with_gauge(mut self, gauge: MemoryGauge) -> Self {
        self.gauge = gauge;
        self
    }

    /// Assigned client identifiers go on from `auto-{next}`, so a broker
    /// restarted in the same process never assigns one that a client of the
    /// previous instance still uses.
    pub(crate) fn with_next_assigned_id(mut self, next: u64) -> Self {
        self.next_assigned_id = next;
        self
    }

    /// The number of the next assigned client identifier.
    pub(crate) fn next_assigned_id(&self) -> u64 {
        self.next_assigned_id
    }

    /// The accounts to check CONNECTs against, in place of the inline
    /// `users` of the configuration.
    pub(crate) fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// A packet (or the CONNECT) decoded from connection `conn`.
    pub fn handle_frame(&mut self, now: Instant, conn: ConnId, frame: Frame) {
        match frame {
            Frame::Connect {
                version,
                connect,
                will,
                login,
            } => self.handle_connect(now, conn, version, connect, will, login),
            Frame::Packet(packet) => {
                let Some(c) = self.conns.get_mut(&conn) else {
                    // Closed by the core already (takeover, error): the
                    // rest of what the client sent is not acted upon.
                    return;
                };
                c.last_seen = now;
                let Some(session) = c.session else {
                    return;
                };
                let mark = self.journal_mark(&packet);
                self.handle_packet(now, conn, session, packet);
                self.journal_waits(conn, mark);
            }
        }
    }

    /// `conn`'s client certificate proves the user name `username`
    /// (`tls.use_identity_as_username`): the CONNECT handed in next is
    /// authenticated as that user, whatever user name and password it
    /// carries. Call it right before that CONNECT's [`Broker::handle_frame`].
    pub fn handle_certified(&mut self, conn: ConnId, username: String) {
        self.certified.insert(conn, username);
    }

    /// The codec could not decode `conn`'s bytes: close it, with a
    /// DISCONNECT carrying `reason` first when the client speaks 5.0.
    pub fn handle_malformed(&mut self, now: Instant, conn: ConnId, reason: DisconnectReasonCode) {
        if self.conns.contains_key(&conn) {
            self.disconnect(now, conn, reason);
        } else {
            // Before or without a CONNECT the core has nothing to clean up.
            self.actions.push_back(Action::Close(conn));
        }
    }

    /// The transport of `conn` closed (EOF or error).
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        if self.conns.contains_key(&conn) {
            self.drop_connection(now, conn, true);
        }
    }

    /// The shell wrote `count` more of the [`Action::SendPaced`] messages
    /// of `conn` to its socket: that much room for the retained deliveries
    /// waiting on it.
    pub fn handle_written(&mut self, now: Instant, conn: ConnId, count: usize) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.paced = c.paced.saturating_sub(count);
        if let Some(session) = c.session {
            if self.cursors.contains_key(&session) {
                self.flush_queue(now, session);
            }
        }
    }

    /// Runs the timers due at `now`: keep alive, will delay, session expiry,
    /// retained sweep, retained delivery steps.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(due, timer)) = self.timers.first() {
            if due > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::KeepAlive(conn) => self.keep_alive_due(now, conn),
                Timer::Will(session, generation) => self.will_due(now, session, generation),
                Timer::SessionExpiry(session, generation) => {
                    self.session_expiry_due(now, session, generation)
                }
                Timer::RetainedSweep => self.sweep_due(now),
                Timer::RetainedDelivery(session) => self.retained_delivery_due(now, session),
            }
        }
    }

    /// Disconnects every client (5.0: reason 0x8B Server shutting down).
    pub fn handle_shutdown(&mut self, now: Instant) {
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            if let Some(c) = self.conns.remove(&conn) {
                if c.version == MqttVersion::V5 && c.session.is_some() {
                    self.send(
                        conn,
                        Packet::Disconnect(Disconnect::new(
                            DisconnectReasonCode::ServerShuttingDown,
                        )),
                    );
                }
                if let Some(s) = c.session.and_then(|s| self.sessions.get_mut(&s)) {
                    s.conn = None;
                }
                if let Some(session) = c.session {
                    self.journal_parked(now, session);
                }
            }
            self.actions.push_back(Action::Close(conn));
        }
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(due, _)| *due)
    }

    /// The retained changes not yet handed out, with disk storage: the
    /// shell writes them to disk before it carries out any action (see the
    /// module documentation). `None` when there are none, and always with
    /// memory storage.
    #[must_use]
    pub fn poll_retained_writes(&mut self) -> Option<RetainedWrites> {
        self.retained.take_writes()
    }

    /// The session changes not yet handed out, with disk session storage:
    /// the shell writes them to disk before it carries out any action, as
    /// the retained changes. `None` when there are none, and always with
    /// memory storage.
    #[must_use]
    pub fn poll_session_writes(&mut self) -> Option<SessionWrites> {
        self.take_session_writes()
    }

    /// The next action for the shell, in order. Call
    /// [`Broker::poll_retained_writes`] and [`Broker::poll_session_writes`]
    /// first.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        debug_assert!(
            self.actions.is_empty() || !self.retained.has_writes(),
            "actions polled before the retained writes they may acknowledge"
        );
        debug_assert!(
            self.actions.is_empty() || !self.has_session_writes(),
            "actions polled before the session writes they may acknowledge"
        );
        self.actions.pop_front()
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Hands a packet after the CONNECT to the part of the core whose job
    /// it is.
    fn handle_packet(&mut self, now: Instant, conn: ConnId, session: SessionId, packet: Packet) {
        match packet {
            Packet::Publish(publish) => self.handle_publish(now, conn, session, publish),
            Packet::PubAck(ack) => self.handle_puback(now, session, ack),
            Packet::PubRec(rec) => self.handle_pubrec(now, conn, session, rec),
            Packet::PubComp(comp) => self.handle_pubcomp(now, session, comp),
            Packet::PubRel(rel) => self.handle_pubrel(conn, session, rel),
            Packet::Subscribe(subscribe) => self.handle_subscribe(now, conn, session, subscribe),
            Packet::Unsubscribe(unsubscribe) => {
                self.handle_unsubscribe(now, conn, session, unsubscribe)
            }
            Packet::PingReq(_) => self.send(conn, Packet::PingResp(PingResp)),
            Packet::Disconnect(disconnect) => {
                self.handle_disconnect(now, conn, session, disconnect)
            }
            // Server-to-client packets, or AUTH without an auth method.
            _ => self.disconnect(now, conn, DisconnectReasonCode::ProtocolError),
        }
    }

    pub(super) fn send(&mut self, conn: ConnId, packet: Packet) {
        self.actions.push_back(Action::Send(conn, packet));
    }

    pub(super) fn session_mut(&mut self, id: SessionId) -> &mut Session {
        // Every caller got `id` from a live connection or the trie, both of
        // which are kept in step with the session map.
        self.sessions
            .get_mut(&id)
            .expect("session of a live connection")
    }
}
