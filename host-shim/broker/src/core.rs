//! The broker as a state machine without I/O.
//!
//! [`Broker`] owns every session, the subscription trie and the retained
//! store. It never touches a socket or a clock: the server shell feeds it
//! events and the current time, and carries out the actions it returns. That
//! keeps every rule of the protocol testable without a network, with time
//! moved by hand.
//!
//! # Calling it
//!
//! - Inputs: [`Broker::handle_frame`] for each decoded packet,
//!   [`Broker::handle_malformed`] when a connection's bytes cannot be decoded,
//!   [`Broker::handle_closed`] when its transport ends,
//!   [`Broker::handle_timeout`] when [`Broker::poll_timeout`] is due, and
//!   [`Broker::handle_shutdown`] once at the end.
//! - Outputs: after any input, call [`Broker::poll_action`] until it returns
//!   `None`, and carry out the actions in order. [`Broker::poll_timeout`] may
//!   change after any input.
//! - Time passed in must never go backwards.
//!
//! All 3.1.1 packets arrive converted to their 5.0 form; a connection's
//! protocol version decides only what the rules say differs between the two.
//!
//! # Retained messages
//!
//! - Storing: limits (`retain.max_messages`, `retain.max_payload_bytes`)
//!   refuse to store, never to deliver; refusals are logged and counted in
//!   [`Stats`]. Expiry is the PUBLISH's own interval, else
//!   `retain.default_expiry`.
//! - Disk: with `retain.storage = {"disk": ...}` every change is also a
//!   pending write. The shell calls [`Broker::commit_retained`] after a
//!   batch of inputs and before carrying out the batch's actions, so a
//!   PUBACK or PUBREC for a retained PUBLISH goes out only once the message
//!   is on disk, and one disk transaction covers the whole batch. Should the
//!   shell not call it, [`Broker::poll_action`] commits before handing out
//!   the first action, which keeps the same guarantee per input.
//! - Delivery to a new subscription: not a snapshot of messages but a cursor
//!   (the filter and the last topic sent) that walks the store in topic
//!   order, `retain.delivery_batch` messages a step, as the client's
//!   in-flight window frees up and, with `retain.delivery_rate`, on a timer.
//!   So a `#` subscriber to 100,000 retained topics costs the broker one
//!   cursor, not 100,000 queued entries. A message deleted or expired before
//!   the cursor reaches it is skipped; one replaced after the SUBSCRIBE is
//!   skipped too, because the subscriber got the replacement as a live
//!   message (it matches the same filter), queued behind the cursor.
//! - Time: the core keeps `Instant`s for timers and expiry. For the
//!   wall-clock time a message was stored (listings, and expiry across
//!   restarts on disk) it maps `Instant`s onto the wall clock from one pair
//!   read at construction ([`Broker::open_at`] takes the pair, so tests stay
//!   deterministic); a wall clock stepped later does not skew the core.

use super::codec::Frame;
use super::config::BrokerConfig;
use super::config::RetainStorage;
use super::retained::{
    RetainedEntry, RetainedMessage, RetainedPage, RetainedStore, RetainedStoreError,
};
use super::session::{Inflight, Message, PendingWill, Queued, Session};
use super::trie::{Match, SubscriptionTrie};
use super::types::{SessionId, SubOptions};
use bytes::Bytes;
use mqtt_topic as topic;
use mqtt_topic::MqttVersion;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnAckProperties, Connect, ConnectReturnCode, Disconnect, DisconnectReasonCode,
    LastWill, Login, Packet, PingResp, PubAck, PubAckReason, PubComp, PubCompReason, PubRec,
    PubRel, Publish, PublishProperties, RetainForwardRule, SubAck, Subscribe, SubscribeReasonCode,
    UnsubAck, UnsubAckReason, Unsubscribe,
};
use rumqttc::v5::mqttbytes::QoS;
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
    /// Failed commits of retained messages to disk.
    pub retained_write_errors: u64,
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
    will: Option<LastWill>,
    /// 5.0 topic aliases the client set (client to server only).
    aliases: HashMap<u16, Bytes>,
}

/// Timers, ordered by due time. Each carries what it needs to tell whether
/// it is still current when it fires; stale ones are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    KeepAlive(ConnId),
    Will(SessionId, u64),
    SessionExpiry(SessionId, u64),
    RetainedSweep,
    /// A session's retained delivery may take its next step (delivery rate).
    RetainedDelivery(SessionId),
}

/// Where a new subscription's retained messages have got to.
#[derive(Debug)]
struct RetainedCursor {
    /// The subscription's filter (never shared).
    filter: String,
    /// The subscription's options: granted QoS and identifier.
    options: SubOptions,
    /// The last topic sent; the walk resumes after it.
    after: Option<String>,
    /// Messages stored later than this (`RetainedMessage::seq`) reached the
    /// subscriber live, so they are skipped.
    start_seq: u64,
    /// Messages of the session queue that were there before the SUBSCRIBE:
    /// they go first, as they would have with a snapshot queued behind them.
    ahead: usize,
    /// Earliest time of the next step (delivery rate).
    next_step: Instant,
    /// The step timer set, if any.
    scheduled: Option<Instant>,
}

/// What one step of a retained cursor achieved.
enum Step {
    /// The cursor is finished and gone.
    Done,
    /// Messages were sent; another step may follow at once.
    Progress,
    /// Nothing more now: the window is full, the rate says wait, or the
    /// client is offline.
    Blocked,
}

/// The broker core. See the module documentation for how to drive it.
#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    conns: HashMap<ConnId, Conn>,
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
}

impl Broker {
    /// A broker with no sessions; with disk storage, its retained messages
    /// loaded from the file.
    ///
    /// # Errors
    ///
    /// When the retained message store cannot be opened or read.
    #[allow(
        dead_code,
        reason = "for the shell, to fail start-up with a clear error"
    )]
    pub fn open(config: BrokerConfig) -> Result<Self, RetainedStoreError> {
        Broker::open_at(config, Instant::now(), SystemTime::now())
    }

    /// [`Broker::open`] with the current time given on both clocks.
    ///
    /// # Errors
    ///
    /// When the retained message store cannot be opened or read.
    pub fn open_at(
        config: BrokerConfig,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Self, RetainedStoreError> {
        let store = match &config.retain.storage {
            RetainStorage::Memory => RetainedStore::new(),
            RetainStorage::Disk(path) => RetainedStore::open(path, now, wall)?,
        };
        Ok(Broker::with_store(config, store, now, wall))
    }

    fn with_store(
        config: BrokerConfig,
        retained: RetainedStore,
        now: Instant,
        wall: SystemTime,
    ) -> Self {
        let mut broker = Broker {
            config,
            conns: HashMap::new(),
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
        };
        broker.schedule_sweep(now);
        broker
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
                self.handle_packet(now, conn, session, packet);
            }
        }
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

    /// Runs the timers due at `now`: keep alive, will delay, session expiry,
    /// retained sweep.
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
                    if self
                        .sessions
                        .get(&session)
                        .is_some_and(|s| s.generation == generation && s.conn.is_none())
                    {
                        self.end_session(now, session);
                    }
                }
                Timer::RetainedSweep => {
                    let purged = self.retained.purge_expired(now);
                    if purged > 0 {
                        tracing::debug!(purged, "expired retained messages swept");
                    }
                    self.sweep_scheduled = false;
                    self.schedule_sweep(now);
                }
                Timer::RetainedDelivery(session) => {
                    if let Some(cursor) = self.cursors.get_mut(&session).and_then(|c| c.front_mut())
                    {
                        cursor.scheduled = None;
                    }
                    self.flush_queue(now, session);
                }
            }
        }
    }

    /// Disconnects every client (5.0: reason 0x8B Server shutting down).
    pub fn handle_shutdown(&mut self, _now: Instant) {
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
            }
            self.actions.push_back(Action::Close(conn));
        }
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(due, _)| *due)
    }

    /// The next action for the shell, in order.
    ///
    /// Retained changes not yet on disk are committed first (see
    /// [`Broker::commit_retained`]), so no acknowledgement ever leaves before
    /// the write it acknowledges. A failed commit is logged and counted here;
    /// it is tried again after the next change.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        if self.retained.needs_commit() {
            if let Err(error) = self.commit_retained() {
                tracing::error!(%error, "retained messages not written to disk");
            }
        }
        self.actions.pop_front()
    }

    /// Writes the retained messages stored, replaced, deleted or expired
    /// since the last commit to disk, in one transaction. A no-op with memory
    /// storage or nothing to write.
    ///
    /// The shell calls it after handling a batch of inputs and before
    /// carrying out that batch's actions (group commit).
    ///
    /// # Errors
    ///
    /// When the write fails. The changes stay pending and are tried again at
    /// the next commit; the messages are retained in memory meanwhile, and
    /// the batch's acknowledgements are sent anyway (the error is the shell's
    /// to report).
    pub fn commit_retained(&mut self) -> Result<(), RetainedStoreError> {
        self.retained.commit().inspect_err(|_| {
            self.stats.retained_write_errors += 1;
        })
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    // ----- CONNECT -----

    fn handle_connect(
        &mut self,
        now: Instant,
        conn: ConnId,
        version: MqttVersion,
        connect: Connect,
        will: Option<LastWill>,
        login: Option<Login>,
    ) {
        if self.conns.contains_key(&conn) {
            // MQTT-3.1.0-2: a second CONNECT is a protocol violation.
            self.disconnect(now, conn, DisconnectReasonCode::ProtocolError);
            return;
        }
        let v5 = version == MqttVersion::V5;
        let props = connect.properties.clone().unwrap_or_default();

        if let Some(code) =
            self.refuse_connect(version, &connect, &props, will.as_ref(), login.as_ref())
        {
            self.send(
                conn,
                Packet::ConnAck(ConnAck {
                    session_present: false,
                    code,
                    properties: None,
                }),
            );
            self.actions.push_back(Action::Close(conn));
            return;
        }

        // Client identifier: 5.0 assigns one to an empty id (MQTT-3.1.3-6),
        // and so does 3.1.1 for a clean session (MQTT-3.1.3-6/-7).
        let mut assigned = None;
        let client_id = if connect.client_id.is_empty() {
            let id = format!("auto-{}", self.next_assigned_id);
            self.next_assigned_id += 1;
            if v5 {
                assigned = Some(id.clone());
            }
            id
        } else {
            connect.client_id.clone()
        };

        let expiry_interval = if v5 {
            props
                .session_expiry_interval
                .unwrap_or(0)
                .min(self.config.max_session_expiry)
        } else if connect.clean_start {
            0
        } else {
            // 3.1.1 persistent sessions have no expiry of their own.
            self.config.max_session_expiry
        };

        // Session takeover (MQTT-3.1.4-2, 5.0 MQTT-3.1.4-3).
        let existing = self.by_client_id.get(&client_id).copied();
        if let Some(old_conn) = existing
            .and_then(|s| self.sessions.get(&s))
            .and_then(|s| s.conn)
        {
            // 5.0 section 3.1.2.5: the will waits for its delay or the end
            // of the session, and a new connection that carries the session
            // on cancels it. 3.1.1 has no such exception (MQTT-3.1.2-8).
            if v5 && !connect.clean_start {
                if let Some(old) = self.conns.get_mut(&old_conn) {
                    old.will = None;
                }
            }
            self.disconnect(now, old_conn, DisconnectReasonCode::SessionTakenOver);
        }
        let existing = self.by_client_id.get(&client_id).copied();

        let (session_id, session_present) = match existing {
            Some(id) if !connect.clean_start => (id, true),
            Some(id) => {
                self.end_session(now, id);
                (self.create_session(client_id.clone(), version), false)
            }
            None => (self.create_session(client_id.clone(), version), false),
        };

        let keep_alive = match version {
            MqttVersion::V5 => self.effective_keep_alive(connect.keep_alive),
            // A 3.1.1 client cannot be told another value, so its own holds.
            MqttVersion::V311 => Duration::from_secs(u64::from(connect.keep_alive)),
        };
        let window = usize::from(
            props
                .receive_maximum
                .unwrap_or(u16::MAX)
                .min(self.config.max_inflight)
                .max(1),
        );
        {
            let session = self
                .sessions
                .get_mut(&session_id)
                .expect("session just found or made");
            session.version = version;
            session.conn = Some(conn);
            session.expiry_interval = expiry_interval;
            session.generation += 1;
            session.window = window;
            session.max_packet_size = props.max_packet_size;
            // Aliases live as long as the connection (MQTT-3.3.2-7).
            session.topic_alias_max = props.topic_alias_max.unwrap_or(0);
            session.out_aliases.clear();
            // MQTT-3.1.3-9 (5.0): a new connection before the will delay
            // passed means the will is not sent.
            session.pending_will = None;
        }
        self.conns.insert(
            conn,
            Conn {
                version,
                session: Some(session_id),
                keep_alive,
                last_seen: now,
                will,
                aliases: HashMap::new(),
            },
        );

        let properties = v5.then(|| {
            self.connack_properties(&props, assigned, connect.keep_alive, expiry_interval)
        });
        self.send(
            conn,
            Packet::ConnAck(ConnAck {
                session_present,
                code: ConnectReturnCode::Success,
                properties,
            }),
        );
        if !keep_alive.is_zero() {
            self.schedule(now + keep_alive.mul_f32(1.5), Timer::KeepAlive(conn));
        }
        if session_present {
            self.resume(now, session_id);
        }
    }

    /// The CONNACK code refusing a CONNECT, if it must be refused.
    fn refuse_connect(
        &self,
        version: MqttVersion,
        connect: &Connect,
        props: &rumqttc::v5::mqttbytes::v5::ConnectProperties,
        will: Option<&LastWill>,
        login: Option<&Login>,
    ) -> Option<ConnectReturnCode> {
        let v5 = version == MqttVersion::V5;
        // MQTT-3.1.3-8 (3.1.1): an empty id needs a clean session.
        if !v5 && connect.client_id.is_empty() && !connect.clean_start {
            return Some(ConnectReturnCode::ClientIdentifierNotValid);
        }
        if v5 && props.authentication_method.is_some() {
            // No enhanced authentication method is offered (MQTT-4.12.0-1).
            return Some(ConnectReturnCode::BadAuthenticationMethod);
        }
        if v5 && props.receive_maximum == Some(0) {
            return Some(ConnectReturnCode::ProtocolError);
        }
        if v5 && props.max_packet_size == Some(0) {
            return Some(ConnectReturnCode::ProtocolError);
        }
        if let Some(code) = self.authenticate(login) {
            return Some(code);
        }
        if let Some(will) = will {
            let valid_topic = std::str::from_utf8(&will.topic)
                .ok()
                .is_some_and(|t| topic::validate_name(t).is_ok());
            if !valid_topic {
                return Some(ConnectReturnCode::TopicNameInvalid);
            }
            if will.qos as u8 > self.config.maximum_qos {
                // MQTT-3.2.2-12 (5.0).
                return Some(ConnectReturnCode::QoSNotSupported);
            }
            if will.retain && !self.config.retain.enabled {
                // MQTT-3.2.2-13 (5.0).
                return Some(ConnectReturnCode::RetainNotSupported);
            }
        }
        None
    }

    fn authenticate(&self, login: Option<&Login>) -> Option<ConnectReturnCode> {
        match login {
            None if !self.config.allow_anonymous => Some(ConnectReturnCode::NotAuthorized),
            None => None,
            Some(_) if self.config.users.is_empty() => None,
            Some(login) => {
                let known = self
                    .config
                    .users
                    .iter()
                    .any(|u| u.username == login.username && u.password == login.password);
                (!known).then_some(ConnectReturnCode::BadUserNamePassword)
            }
        }
    }

    /// The keep alive a 5.0 client must use: its own, unless above the
    /// broker's maximum. Zero (no keep alive) is left alone, as clients that
    /// never ping rely on it.
    fn effective_keep_alive(&self, asked: u16) -> Duration {
        let max = self.config.max_keep_alive;
        let secs = if max > 0 && asked > max { max } else { asked };
        Duration::from_secs(u64::from(secs))
    }

    fn connack_properties(
        &self,
        props: &rumqttc::v5::mqttbytes::v5::ConnectProperties,
        assigned: Option<String>,
        asked_keep_alive: u16,
        expiry_interval: u32,
    ) -> ConnAckProperties {
        let c = &self.config;
        let mut p = ConnAckProperties {
            session_expiry_interval: None,
            receive_max: Some(c.receive_maximum),
            max_qos: None,
            retain_available: None,
            max_packet_size: Some(c.max_packet_size),
            assigned_client_identifier: assigned,
            topic_alias_max: Some(c.topic_alias_maximum),
            reason_string: None,
            user_properties: Vec::new(),
            wildcard_subscription_available: None,
            subscription_identifiers_available: None,
            shared_subscription_available: None,
            server_keep_alive: None,
            response_information: None,
            server_reference: None,
            authentication_method: None,
            authentication_data: None,
        };
        // Only what differs from the 5.0 defaults is announced.
        if c.maximum_qos < 2 {
            p.max_qos = Some(c.maximum_qos);
        }
        if !c.retain.enabled {
            p.retain_available = Some(0);
        }
        if !c.wildcard_subscriptions {
            p.wildcard_subscription_available = Some(0);
        }
        if !c.subscription_identifiers {
            p.subscription_identifiers_available = Some(0);
        }
        if !c.shared_subscriptions {
            p.shared_subscription_available = Some(0);
        }
        let effective = self.effective_keep_alive(asked_keep_alive).as_secs() as u16;
        if effective != asked_keep_alive {
            // MQTT-3.2.2-21: the client must use the server's value.
            p.server_keep_alive = Some(effective);
        }
        if props.session_expiry_interval.unwrap_or(0) != expiry_interval {
            p.session_expiry_interval = Some(expiry_interval);
        }
        p
    }

    fn create_session(&mut self, client_id: String, version: MqttVersion) -> SessionId {
        let id = self.next_session;
        self.next_session += 1;
        self.by_client_id.insert(client_id.clone(), id);
        self.sessions.insert(id, Session::new(client_id, version));
        id
    }

    /// A persistent session got its client back: send again what was in
    /// flight (MQTT-4.4.0-1, DUP set on PUBLISH per MQTT-3.3.1-1), then what
    /// was queued.
    fn resume(&mut self, now: Instant, session_id: SessionId) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        let Some(conn) = session.conn else {
            return;
        };
        let mut resend = Vec::with_capacity(session.inflight.len());
        for inflight in &mut session.inflight {
            match inflight {
                Inflight::Publish(publish) => {
                    publish.dup = true;
                    resend.push(Packet::Publish(publish.clone()));
                }
                Inflight::Release(pkid) => resend.push(Packet::PubRel(PubRel::new(*pkid, None))),
            }
        }
        for packet in resend {
            self.send(conn, packet);
        }
        self.flush_queue(now, session_id);
    }

    // ----- packets after CONNECT -----

    fn handle_packet(&mut self, now: Instant, conn: ConnId, session: SessionId, packet: Packet) {
        match packet {
            Packet::Publish(publish) => self.handle_publish(now, conn, session, publish),
            Packet::PubAck(ack) => {
                if self.session_mut(session).handle_puback(ack.pkid) {
                    self.flush_queue(now, session);
                }
            }
            Packet::PubRec(rec) => {
                let accepted = (rec.reason as u8) < 0x80;
                match self.session_mut(session).handle_pubrec(rec.pkid, accepted) {
                    Some(true) => self.send(conn, Packet::PubRel(PubRel::new(rec.pkid, None))),
                    Some(false) => self.flush_queue(now, session),
                    None => {}
                }
            }
            Packet::PubComp(comp) => {
                if self.session_mut(session).handle_pubcomp(comp.pkid) {
                    self.flush_queue(now, session);
                }
            }
            Packet::PubRel(rel) => {
                let known = self.session_mut(session).incoming_qos2.remove(&rel.pkid);
                let mut comp = PubComp::new(rel.pkid, None);
                if !known {
                    // MQTT-4.3.3-? : answer anyway so the client's flow ends.
                    comp.reason = PubCompReason::PacketIdentifierNotFound;
                }
                self.send(conn, Packet::PubComp(comp));
            }
            Packet::Subscribe(subscribe) => self.handle_subscribe(now, conn, session, subscribe),
            Packet::Unsubscribe(unsubscribe) => self.handle_unsubscribe(conn, session, unsubscribe),
            Packet::PingReq(_) => self.send(conn, Packet::PingResp(PingResp)),
            Packet::Disconnect(disconnect) => {
                self.handle_disconnect(now, conn, session, disconnect)
            }
            // Server-to-client packets, or AUTH without an auth method.
            _ => self.disconnect(now, conn, DisconnectReasonCode::ProtocolError),
        }
    }

    fn handle_publish(
        &mut self,
        now: Instant,
        conn: ConnId,
        session: SessionId,
        mut publish: Publish,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let version = c.version;

        // Topic aliases (5.0 section 3.3.2.3.4).
        if let Some(alias) = publish
            .properties
            .as_mut()
            .and_then(|p| p.topic_alias.take())
        {
            if alias == 0 || alias > self.config.topic_alias_maximum {
                // MQTT-3.3.2-8 / -9.
                self.disconnect(now, conn, DisconnectReasonCode::TopicAliasInvalid);
                return;
            }
            if publish.topic.is_empty() {
                match c.aliases.get(&alias) {
                    Some(topic) => publish.topic = topic.clone(),
                    None => {
                        self.disconnect(now, conn, DisconnectReasonCode::ProtocolError);
                        return;
                    }
                }
            } else {
                c.aliases.insert(alias, publish.topic.clone());
            }
        }

        let topic = match std::str::from_utf8(&publish.topic) {
            Ok(t) if topic::validate_name(t).is_ok() => t.to_owned(),
            // MQTT-3.3.2-2: no wildcards in a topic name; MQTT-4.7.3-1: not empty.
            _ => {
                self.disconnect(now, conn, DisconnectReasonCode::TopicNameInvalid);
                return;
            }
        };
        if publish.qos as u8 > self.config.maximum_qos {
            // MQTT-3.2.2-11 (5.0).
            self.disconnect(now, conn, DisconnectReasonCode::QoSNotSupported);
            return;
        }
        if publish.retain && !self.config.retain.enabled {
            // MQTT-3.3.1-... (5.0 3.2.2.3.5): RETAIN set when not available.
            self.disconnect(now, conn, DisconnectReasonCode::RetainNotSupported);
            return;
        }

        let pkid = publish.pkid;
        match publish.qos {
            QoS::ExactlyOnce => {
                let receive_maximum = usize::from(self.config.receive_maximum);
                let s = self.session_mut(session);
                if s.incoming_qos2.contains(&pkid) {
                    // A resent PUBLISH whose PUBREL has not come: it was
                    // already routed, only acknowledge (MQTT-4.3.3-9/-10).
                    self.send(conn, Packet::PubRec(PubRec::new(pkid, None)));
                    return;
                }
                if version == MqttVersion::V5 && s.incoming_qos2.len() >= receive_maximum {
                    // MQTT-3.3.4-9 (5.0): more than Receive Maximum unacknowledged.
                    self.disconnect(now, conn, DisconnectReasonCode::ReceiveMaximumExceeded);
                    return;
                }
                s.incoming_qos2.insert(pkid);
            }
            QoS::AtLeastOnce | QoS::AtMostOnce => {}
        }

        let qos = publish.qos;
        let delivered = self.publish_message(now, session, topic, publish);

        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                let mut ack = PubAck::new(pkid, None);
                if version == MqttVersion::V5 && delivered == 0 {
                    ack.reason = PubAckReason::NoMatchingSubscribers;
                }
                self.send(conn, Packet::PubAck(ack));
            }
            QoS::ExactlyOnce => {
                let mut rec = PubRec::new(pkid, None);
                if version == MqttVersion::V5 && delivered == 0 {
                    rec.reason = rumqttc::v5::mqttbytes::v5::PubRecReason::NoMatchingSubscribers;
                }
                self.send(conn, Packet::PubRec(rec));
            }
        }
    }

    /// Stores (if retained) and routes a message from `publisher`; returns
    /// how many sessions it was delivered or queued to.
    fn publish_message(
        &mut self,
        now: Instant,
        publisher: SessionId,
        topic: String,
        mut publish: Publish,
    ) -> usize {
        self.stats.received += 1;
        publish.pkid = 0;
        publish.dup = false;
        let expires_at = publish
            .properties
            .as_ref()
            .and_then(|p| p.message_expiry_interval)
            .map(|secs| now + Duration::from_secs(u64::from(secs)));
        if let Some(p) = publish.properties.as_mut() {
            // Subscription identifiers are per delivery, never forwarded
            // from a publisher (MQTT-3.3.4-6).
            p.subscription_identifiers.clear();
        }

        if publish.retain {
            self.store_retained(now, &topic, &publish);
        }

        let message = Arc::new(Message {
            publish,
            expires_at,
        });
        let mut matches = std::mem::take(&mut self.matches);
        matches.clear();
        {
            let sessions = &self.sessions;
            self.trie.route(
                &topic,
                &|s| sessions.get(&s).is_some_and(|s| s.conn.is_some()),
                &mut matches,
            );
        }
        // One delivery per session, at the highest QoS of its matching
        // subscriptions, carrying all their identifiers (MQTT-3.3.4-2,
        // 5.0 MQTT-3.3.4-3..5).
        matches.retain(|m| !(m.options.no_local && m.session == publisher));
        matches.sort_unstable_by_key(|m| m.session);
        let mut delivered = 0;
        let mut i = 0;
        while i < matches.len() {
            let session = matches[i].session;
            let mut granted = QoS::AtMostOnce;
            let mut retain = false;
            let mut ids = Vec::new();
            while i < matches.len() && matches[i].session == session {
                let o = &matches[i].options;
                granted = max_qos(granted, o.qos);
                retain |= o.retain_as_published;
                ids.extend(o.subscription_id);
                i += 1;
            }
            let queued = Queued {
                qos: min_qos(message.publish.qos, granted),
                // MQTT-3.3.1-9 (3.1.1), MQTT-3.3.1-12/-13 (5.0).
                retain: retain && message.publish.retain,
                message: Arc::clone(&message),
                subscription_ids: ids,
                from_retained: false,
            };
            self.deliver(now, session, queued);
            delivered += 1;
        }
        self.matches = matches;
        delivered
    }

    /// Stores, replaces or deletes the retained message of `topic` for a
    /// PUBLISH with RETAIN set, within the configured limits. A message the
    /// limits refuse is still routed by the caller.
    fn store_retained(&mut self, now: Instant, topic: &str, publish: &Publish) {
        let limits = &self.config.retain;
        if publish.payload.is_empty() {
            // MQTT-3.3.1-10/-11 (3.1.1), MQTT-3.3.1-6/-7 (5.0).
            self.retained.remove(topic);
            return;
        }
        if limits.max_payload_bytes > 0 && publish.payload.len() > limits.max_payload_bytes {
            self.stats.retained_refused_too_large += 1;
            tracing::warn!(
                topic,
                bytes = publish.payload.len(),
                limit = limits.max_payload_bytes,
                "retained message not stored: payload over retain.max_payload_bytes"
            );
            return;
        }
        let max = limits.max_messages;
        if max > 0 && !self.retained.contains(topic) && self.retained.len() >= max {
            // Expired messages still count until swept: sweep them now
            // before refusing.
            self.retained.purge_expired(now);
            if self.retained.len() >= max {
                self.stats.retained_refused_full += 1;
                tracing::warn!(
                    topic,
                    limit = max,
                    "retained message not stored: retain.max_messages reached"
                );
                return;
            }
        }
        let stored = RetainedMessage::new(
            publish.clone(),
            now,
            self.wall_time(now),
            self.config.retain.default_expiry,
        );
        self.retained.insert(topic, stored);
        self.schedule_sweep(now);
    }

    /// `now` on the wall clock.
    fn wall_time(&self, now: Instant) -> SystemTime {
        let (base, wall) = self.clock;
        match now.checked_duration_since(base) {
            Some(since) => wall.checked_add(since).unwrap_or(wall),
            None => wall,
        }
    }

    /// Sends a message to a session now if it can, else queues it.
    fn deliver(&mut self, now: Instant, session_id: SessionId, queued: Queued) {
        let limit = self.config.max_queued_messages;
        // Behind a retained delivery in progress, live messages wait their
        // turn, so that a topic's retained message comes before what was
        // published on it later (MQTT-4.6.0-5 in 5.0, 4.6.0-6 in 3.1.1).
        let behind_cursor = self.cursors.contains_key(&session_id);
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        let online = session.conn.is_some();
        if queued.qos == QoS::AtMostOnce && !online {
            // QoS 0 messages are not kept for offline clients (5.0 MQTT-3.1.2-?:
            // optional); nothing was promised for them.
            return;
        }
        let can_send_now = online
            && !behind_cursor
            && session.queue.is_empty()
            && (queued.qos == QoS::AtMostOnce || session.has_free_slot());
        if can_send_now {
            self.transmit(now, session_id, queued);
            return;
        }
        if session.enqueue(queued, limit).is_err() {
            self.stats.dropped_queue_full += 1;
            tracing::warn!(
                client_id = %session.client_id,
                limit,
                "session queue full: message dropped"
            );
        }
    }

    /// Sends queued messages and steps retained deliveries, in order, while
    /// the client's window has room.
    fn flush_queue(&mut self, now: Instant, session_id: SessionId) {
        loop {
            let cursor_ahead = self
                .cursors
                .get(&session_id)
                .and_then(VecDeque::front)
                .map(|c| c.ahead);
            let Some(session) = self.sessions.get_mut(&session_id) else {
                return;
            };
            if session.conn.is_none() {
                return;
            }
            if cursor_ahead == Some(0) || (cursor_ahead.is_some() && session.queue.is_empty()) {
                match self.step_retained(now, session_id) {
                    Step::Done | Step::Progress => continue,
                    Step::Blocked => return,
                }
            }
            let Some(next) = session.queue.front() else {
                return;
            };
            if next.qos != QoS::AtMostOnce && !session.has_free_slot() {
                return;
            }
            let Some(queued) = session.dequeue() else {
                return;
            };
            if let Some(cursors) = self.cursors.get_mut(&session_id) {
                for cursor in cursors {
                    cursor.ahead = cursor.ahead.saturating_sub(1);
                }
            }
            self.transmit(now, session_id, queued);
        }
    }

    /// One step of the session's oldest retained delivery: sends the next
    /// matching messages in topic order, as many as the step size, the
    /// window (QoS 1 and 2) and the delivery rate allow.
    fn step_retained(&mut self, now: Instant, session_id: SessionId) -> Step {
        let batch = self.config.retain.delivery_batch;
        let rate = self.config.retain.delivery_rate;
        let Some(session) = self.sessions.get(&session_id) else {
            return Step::Blocked;
        };
        let free = session.window.saturating_sub(session.inflight.len());
        let Some(cursor) = self
            .cursors
            .get_mut(&session_id)
            .and_then(VecDeque::front_mut)
        else {
            return Step::Done;
        };
        if rate > 0 && now < cursor.next_step {
            if cursor.scheduled != Some(cursor.next_step) {
                cursor.scheduled = Some(cursor.next_step);
                let due = cursor.next_step;
                self.schedule(due, Timer::RetainedDelivery(session_id));
            }
            return Step::Blocked;
        }
        let mut budget = match (batch, rate) {
            (0, 0) => usize::MAX,
            // A rate without a step size: steps of a tenth of a second.
            (0, rate) => (rate as usize / 10).max(1),
            (batch, _) => batch,
        };
        if cursor.options.qos != QoS::AtMostOnce {
            // Never more than the window: the rest waits in the store, not
            // in memory.
            budget = budget.min(free);
            if budget == 0 {
                return Step::Blocked;
            }
        }

        let mut found = std::mem::take(&mut self.retained_scratch);
        found.clear();
        let start_seq = cursor.start_seq;
        self.retained.walk(
            &cursor.filter,
            cursor.after.as_deref(),
            now,
            budget,
            &mut |m| m.seq <= start_seq,
            &mut found,
        );
        let finished = found.len() < budget;
        if let Some(last) = found.last() {
            cursor.after = Some(last.topic());
        }
        if rate > 0 {
            let secs = found.len() as f64 / f64::from(rate);
            cursor.next_step = now + Duration::from_secs_f64(secs);
        }
        let options = cursor.options.clone();
        if finished {
            if let Some(cursors) = self.cursors.get_mut(&session_id) {
                cursors.pop_front();
                if cursors.is_empty() {
                    self.cursors.remove(&session_id);
                }
            }
        }
        for stored in found.drain(..) {
            let message = Arc::new(Message {
                publish: stored.publish.clone(),
                // Only the publisher's own expiry is told to the client.
                expires_at: stored.own_expiry(),
            });
            let queued = Queued {
                // Never upgraded: the lower of stored and granted QoS.
                qos: min_qos(stored.publish.qos, options.qos),
                // MQTT-3.3.1-8 (3.1.1) / MQTT-3.3.1-9 (5.0).
                retain: true,
                message,
                subscription_ids: options.subscription_id.into_iter().collect(),
                from_retained: true,
            };
            self.transmit(now, session_id, queued);
        }
        self.retained_scratch = found;
        if finished {
            Step::Done
        } else {
            Step::Progress
        }
    }

    /// Writes one message to the session's connection, taking a packet
    /// identifier and a window slot for QoS 1 and 2.
    fn transmit(&mut self, now: Instant, session_id: SessionId, queued: Queued) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        let Some(conn) = session.conn else {
            return;
        };
        let message = &queued.message;
        let mut publish = message.publish.clone();
        publish.qos = queued.qos;
        publish.retain = queued.retain;
        publish.dup = false;
        if let Some(expires_at) = message.expires_at {
            let Some(left) = expires_at
                .checked_duration_since(now)
                .filter(|d| !d.is_zero())
            else {
                // MQTT-3.3.2-5 (5.0): an expired message is not delivered.
                self.stats.dropped_expired += 1;
                return;
            };
            // MQTT-3.3.2-6: the interval sent is what is left of it.
            let props = publish
                .properties
                .get_or_insert_with(PublishProperties::default);
            props.message_expiry_interval = Some(left.as_secs_f64().ceil() as u32);
        }
        if !queued.subscription_ids.is_empty() {
            let props = publish
                .properties
                .get_or_insert_with(PublishProperties::default);
            props.subscription_identifiers = queued.subscription_ids;
        }
        if session.version == MqttVersion::V311 {
            publish.properties = None;
        }
        if let Some(max) = session.max_packet_size {
            if publish.size() > max as usize {
                // MQTT-3.1.2-25 (5.0): discard as if it had been delivered.
                self.stats.dropped_too_large += 1;
                return;
            }
        }
        if publish.qos != QoS::AtMostOnce {
            let Some(pkid) = session.next_pkid() else {
                return;
            };
            publish.pkid = pkid;
            session
                .inflight
                .push_back(Inflight::Publish(publish.clone()));
        }
        session.apply_topic_alias(&mut publish);
        self.stats.sent += 1;
        self.send(conn, Packet::Publish(publish));
    }

    // ----- SUBSCRIBE / UNSUBSCRIBE -----

    fn handle_subscribe(
        &mut self,
        now: Instant,
        conn: ConnId,
        session_id: SessionId,
        subscribe: Subscribe,
    ) {
        let v5 = self.session_mut(session_id).version == MqttVersion::V5;
        let subscription_id = subscribe.properties.as_ref().and_then(|p| p.id);
        if subscription_id == Some(0) {
            // MQTT-3.8.2-? : 0 is not a valid Subscription Identifier.
            self.disconnect(now, conn, DisconnectReasonCode::ProtocolError);
            return;
        }
        if subscription_id.is_some() && !self.config.subscription_identifiers {
            self.disconnect(
                now,
                conn,
                DisconnectReasonCode::SubscriptionIdentifiersNotSupported,
            );
            return;
        }
        if subscribe
            .filters
            .iter()
            .any(|f| f.nolocal && f.path.starts_with("$share/"))
        {
            // MQTT-3.8.3-4 (5.0): No Local on a shared subscription.
            self.disconnect(now, conn, DisconnectReasonCode::ProtocolError);
            return;
        }

        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut retained_for = Vec::new();
        for filter in &subscribe.filters {
            let denied = self.config.deny_subscribe.iter().any(|d| d == &filter.path);
            let checked = if denied {
                Err(SubscribeReasonCode::Unspecified)
            } else {
                self.check_filter(&filter.path)
            };
            let code = match checked {
                Err(code) => code,
                Ok(shared) => {
                    let granted = min_qos(filter.qos, qos_from(self.config.maximum_qos));
                    let options = SubOptions {
                        qos: granted,
                        no_local: filter.nolocal,
                        retain_as_published: filter.preserve_retain,
                        retain_handling: filter.retain_forward_rule.clone(),
                        subscription_id,
                    };
                    let (group, inner) = match &shared {
                        Some((group, inner)) => (Some(group.as_str()), inner.as_str()),
                        None => (None, filter.path.as_str()),
                    };
                    let existed = self
                        .trie
                        .insert(inner, group, session_id, options.clone())
                        .is_some();
                    self.session_mut(session_id)
                        .subscriptions
                        .insert(filter.path.clone(), options.clone());
                    // MQTT-3.3.1-9..11 (5.0) and MQTT-3.8.4-3 (3.1.1):
                    // retained messages for the new subscription, never
                    // for shared subscriptions (MQTT-4.8.2-? / 3.8.3.1).
                    let send_retained = shared.is_none()
                        && match options.retain_handling {
                            RetainForwardRule::OnEverySubscribe => true,
                            RetainForwardRule::OnNewSubscribe => !existed,
                            RetainForwardRule::Never => false,
                        };
                    if send_retained {
                        retained_for.push((inner.to_owned(), options));
                    }
                    SubscribeReasonCode::Success(granted)
                }
            };
            codes.push(if v5 { code } else { v3_suback_code(code) });
        }
        self.send(
            conn,
            Packet::SubAck(SubAck {
                pkid: subscribe.pkid,
                return_codes: codes,
                properties: None,
            }),
        );

        // Retained messages follow the SUBACK, through a cursor per
        // subscription that reads them from the store a step at a time as
        // the window frees up: a wildcard subscriber to many topics gets all
        // of them without overrunning its Receive Maximum, and without the
        // broker holding them all in its queue.
        if retained_for.is_empty() {
            return;
        }
        let ahead = self.session_mut(session_id).queue.len();
        let start_seq = self.retained.last_seq();
        let wildcard_delivery = self.config.retain.wildcard_delivery;
        let cursors = self.cursors.entry(session_id).or_default();
        for (filter, options) in retained_for {
            if !wildcard_delivery && (filter.contains('+') || filter.contains('#')) {
                // AWS IoT Core: no retained messages for wildcard filters.
                continue;
            }
            // Subscribing again restarts a delivery still in progress.
            cursors.retain(|c| c.filter != filter);
            cursors.push_back(RetainedCursor {
                filter,
                options,
                after: None,
                start_seq,
                ahead,
                next_step: now,
                scheduled: None,
            });
        }
        if cursors.is_empty() {
            self.cursors.remove(&session_id);
        }
        self.flush_queue(now, session_id);
    }

    /// Validates a subscription filter; `Ok(Some((group, filter)))` for a
    /// shared subscription.
    fn check_filter(&self, path: &str) -> Result<Option<(String, String)>, SubscribeReasonCode> {
        if topic::validate_filter(path).is_err() {
            return Err(SubscribeReasonCode::TopicFilterInvalid);
        }
        let shared = match topic::parse_shared(path) {
            Ok(Some(s)) => Some((s.group.to_owned(), s.filter.to_owned())),
            Ok(None) => None,
            Err(_) => return Err(SubscribeReasonCode::TopicFilterInvalid),
        };
        if shared.is_some() && !self.config.shared_subscriptions {
            return Err(SubscribeReasonCode::SharedSubscriptionsNotSupported);
        }
        let inner = shared.as_ref().map_or(path, |(_, f)| f.as_str());
        if !self.config.wildcard_subscriptions && (inner.contains('+') || inner.contains('#')) {
            return Err(SubscribeReasonCode::WildcardSubscriptionsNotSupported);
        }
        Ok(shared)
    }

    fn handle_unsubscribe(
        &mut self,
        conn: ConnId,
        session_id: SessionId,
        unsubscribe: Unsubscribe,
    ) {
        let mut reasons = Vec::with_capacity(unsubscribe.filters.len());
        for path in &unsubscribe.filters {
            let reason = if topic::validate_filter(path).is_err() {
                UnsubAckReason::TopicFilterInvalid
            } else if self.remove_subscription(session_id, path) {
                UnsubAckReason::Success
            } else {
                UnsubAckReason::NoSubscriptionExisted
            };
            reasons.push(reason);
        }
        self.send(
            conn,
            Packet::UnsubAck(UnsubAck {
                pkid: unsubscribe.pkid,
                reasons,
                properties: None,
            }),
        );
    }

    fn remove_subscription(&mut self, session_id: SessionId, path: &str) -> bool {
        if self
            .session_mut(session_id)
            .subscriptions
            .remove(path)
            .is_none()
        {
            return false;
        }
        if let Some(cursors) = self.cursors.get_mut(&session_id) {
            // Its retained messages not sent yet are no longer wanted.
            cursors.retain(|c| c.filter != path);
            if cursors.is_empty() {
                self.cursors.remove(&session_id);
            }
        }
        match topic::parse_shared(path) {
            Ok(Some(shared)) => self
                .trie
                .remove(shared.filter, Some(shared.group), session_id),
            _ => self.trie.remove(path, None, session_id),
        };
        true
    }

    // ----- DISCONNECT, close, wills, expiry -----

    fn handle_disconnect(
        &mut self,
        now: Instant,
        conn: ConnId,
        session_id: SessionId,
        disconnect: Disconnect,
    ) {
        let v5 = self.session_mut(session_id).version == MqttVersion::V5;
        if v5 {
            let asked = disconnect
                .properties
                .as_ref()
                .and_then(|p| p.session_expiry_interval);
            if let Some(asked) = asked {
                if self.session_mut(session_id).expiry_interval == 0 && asked != 0 {
                    // MQTT-3.14.2-2: cannot go from 0 to non-zero.
                    self.disconnect(now, conn, DisconnectReasonCode::ProtocolError);
                    return;
                }
                let capped = asked.min(self.config.max_session_expiry);
                self.session_mut(session_id).expiry_interval = capped;
            }
        }
        let keep_will =
            v5 && disconnect.reason_code == DisconnectReasonCode::DisconnectWithWillMessage;
        if !keep_will {
            // MQTT-3.1.2-10 (3.1.1), MQTT-3.14.4-3 (5.0).
            if let Some(c) = self.conns.get_mut(&conn) {
                c.will = None;
            }
        }
        self.actions.push_back(Action::Close(conn));
        self.drop_connection(now, conn, keep_will);
    }

    /// Closes a connection for a protocol violation or takeover: 5.0 clients
    /// get a DISCONNECT with `reason` first (MQTT-4.13.1-1), and the will is
    /// published (MQTT-3.1.2-8).
    fn disconnect(&mut self, now: Instant, conn: ConnId, reason: DisconnectReasonCode) {
        if let Some(c) = self.conns.get(&conn) {
            if c.version == MqttVersion::V5 && c.session.is_some() {
                self.send(conn, Packet::Disconnect(Disconnect::new(reason)));
            }
        }
        self.actions.push_back(Action::Close(conn));
        self.drop_connection(now, conn, true);
    }

    /// Forgets a connection; detaches its session, which then either ends
    /// or waits for its expiry; publishes or schedules the will.
    fn drop_connection(&mut self, now: Instant, conn: ConnId, publish_will: bool) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        let Some(session_id) = c.session else {
            return;
        };
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        if session.conn != Some(conn) {
            return;
        }
        session.conn = None;
        session.generation += 1;
        let generation = session.generation;
        let expiry = session.expiry_interval;
        let will = c.will.filter(|_| publish_will);

        if let Some(will) = will {
            let delay = will
                .properties
                .as_ref()
                .and_then(|p| p.delay_interval)
                .unwrap_or(0)
                .min(expiry);
            if delay == 0 {
                self.publish_will(now, session_id, will);
            } else {
                // MQTT-3.1.3-9 (5.0): sent when the delay passes or the
                // session ends, whichever is first.
                let due = now + Duration::from_secs(u64::from(delay));
                self.session_mut(session_id).pending_will = Some(PendingWill { will });
                self.schedule(due, Timer::Will(session_id, generation));
            }
        }

        if expiry == 0 {
            self.end_session(now, session_id);
        } else if expiry != u32::MAX {
            self.schedule(
                now + Duration::from_secs(u64::from(expiry)),
                Timer::SessionExpiry(session_id, generation),
            );
        }
    }

    fn publish_will(&mut self, now: Instant, session_id: SessionId, will: LastWill) {
        let Ok(topic) = String::from_utf8(will.topic.to_vec()) else {
            return;
        };
        let properties = will.properties.map(|p| PublishProperties {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            content_type: p.content_type,
            response_topic: p.response_topic,
            correlation_data: p.correlation_data,
            user_properties: p.user_properties,
            ..PublishProperties::default()
        });
        let mut publish = Publish::new(topic.clone(), will.qos, will.message, properties);
        publish.retain = will.retain;
        self.publish_message(now, session_id, topic, publish);
    }

    fn will_due(&mut self, now: Instant, session_id: SessionId, generation: u64) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        if session.generation != generation {
            return;
        }
        if let Some(pending) = session.pending_will.take() {
            self.publish_will(now, session_id, pending.will);
        }
    }

    /// Ends a session: its subscriptions go, a will still waiting is sent
    /// now, queued messages are dropped.
    fn end_session(&mut self, now: Instant, session_id: SessionId) {
        let Some(mut session) = self.sessions.remove(&session_id) else {
            return;
        };
        self.cursors.remove(&session_id);
        if self.by_client_id.get(&session.client_id) == Some(&session_id) {
            self.by_client_id.remove(&session.client_id);
        }
        for path in session.subscriptions.keys() {
            match topic::parse_shared(path) {
                Ok(Some(shared)) => self
                    .trie
                    .remove(shared.filter, Some(shared.group), session_id),
                _ => self.trie.remove(path, None, session_id),
            };
        }
        if let Some(pending) = session.pending_will.take() {
            // The will is published on behalf of a session that is gone,
            // so its publisher cannot match No Local subscriptions.
            self.publish_will(now, 0, pending.will);
        }
        if !session.queue.is_empty() {
            tracing::debug!(
                client_id = %session.client_id,
                queued = session.queue.len(),
                "session expired with queued messages"
            );
        }
    }

    fn keep_alive_due(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let due = c.last_seen + c.keep_alive.mul_f32(1.5);
        if due <= now {
            // MQTT-3.1.2-24 (3.1.1), MQTT-3.1.2-22 (5.0).
            self.disconnect(now, conn, DisconnectReasonCode::KeepAliveTimeout);
        } else {
            self.schedule(due, Timer::KeepAlive(conn));
        }
    }

    // ----- helpers -----

    fn schedule(&mut self, due: Instant, timer: Timer) {
        self.timers.insert((due, timer));
    }

    /// Sets the sweep timer of expired retained messages unless it is set,
    /// there is nothing to sweep, or `retain.clean_interval` is 0.
    fn schedule_sweep(&mut self, now: Instant) {
        let interval = self.config.retain.clean_interval;
        if !self.sweep_scheduled && interval > 0 && !self.retained.is_empty() {
            self.sweep_scheduled = true;
            let due = now + Duration::from_secs(u64::from(interval));
            self.schedule(due, Timer::RetainedSweep);
        }
    }

    fn send(&mut self, conn: ConnId, packet: Packet) {
        self.actions.push_back(Action::Send(conn, packet));
    }

    fn session_mut(&mut self, id: SessionId) -> &mut Session {
        // Every caller got `id` from a live connection or the trie, both of
        // which are kept in step with the session map.
        self.sessions
            .get_mut(&id)
            .expect("session of a live connection")
    }
}

/// Retained message management, for the admin endpoint. Every call takes
/// the current time, like the inputs, so expiry is judged the same way.
#[allow(
    dead_code,
    reason = "called through the router task by the admin endpoint"
)]
impl Broker {
    /// Number of retained messages stored and not expired at `now`.
    pub fn retained_count(&self, now: Instant) -> usize {
        self.retained.len() - self.retained.expired_count(now)
    }

    /// A page of the retained messages whose topic matches `filter` (`#` for
    /// all), in topic order, unexpired at `now`: at most `page_size` (at
    /// least 1), starting after the topic `cursor` (the previous page's
    /// `next_cursor`).
    ///
    /// # Errors
    ///
    /// When `filter` is not a valid topic filter, or is a shared one.
    pub fn retained_list(
        &self,
        now: Instant,
        filter: &str,
        page_size: usize,
        cursor: Option<&str>,
    ) -> Result<RetainedPage, String> {
        if topic::validate_filter(filter).is_err() || filter.starts_with("$share/") {
            return Err(format!("invalid topic filter {filter:?}"));
        }
        let page_size = page_size.max(1);
        let mut found = Vec::new();
        // One more than a page tells whether another page follows.
        self.retained.walk(
            filter,
            cursor,
            now,
            page_size.saturating_add(1),
            &mut |_| true,
            &mut found,
        );
        let more = found.len() > page_size;
        found.truncate(page_size);
        let entries: Vec<_> = found.iter().map(|m| m.info(now)).collect();
        let next_cursor = if more {
            entries.last().map(|e| e.topic.clone())
        } else {
            None
        };
        Ok(RetainedPage {
            entries,
            next_cursor,
        })
    }

    /// The retained message of `topic` with its payload, unless there is
    /// none or it expired at `now`.
    pub fn retained_get(&self, now: Instant, topic: &str) -> Option<RetainedEntry> {
        let message = self.retained.get(topic, now)?;
        Some(RetainedEntry {
            info: message.info(now),
            payload: message.publish.payload.clone(),
        })
    }

    /// Deletes the retained message of `topic`, from disk too at the next
    /// commit; true if there was one. Subscriptions whose delivery has not
    /// reached the topic yet will not get it.
    pub fn retained_delete(&mut self, topic: &str) -> bool {
        self.retained.remove(topic)
    }
}

fn qos_from(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn min_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) {
        a
    } else {
        b
    }
}

fn max_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) >= (b as u8) {
        a
    } else {
        b
    }
}

/// 3.1.1 SUBACK has one failure code, 0x80 (MQTT-3.9.3-2).
fn v3_suback_code(code: SubscribeReasonCode) -> SubscribeReasonCode {
    match code {
        SubscribeReasonCode::Success(q) => SubscribeReasonCode::Success(q),
        _ => SubscribeReasonCode::Failure,
    }
}

#[cfg(test)]
mod tests;
