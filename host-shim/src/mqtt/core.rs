//! The client's bookkeeping as a sans-I/O state machine.
//!
//! [`Core`] takes what callers ask (publish, subscribe, ack, ...) and what
//! the rumqttc event loop reports ([`Ev`]), and sends protocol-neutral
//! requests ([`Req`]) through an [`Outlet`]. It never blocks and owns no
//! socket, so every flow here is unit-tested without a broker.
//!
//! Outgoing: operations wait in `outbox` until they may be handed to rumqttc
//! (see [`Core::pump`]), then in `handed` until rumqttc reports the packet
//! identifier it used (`Outgoing::Publish(pkid)` and friends, in request
//! order), then in `in_use` under that identifier until the broker's ack.
//! A message moves into its request when handed; from then on the core keeps
//! only what the ack needs (its QoS and where its outcome goes).
//!
//! Incoming: each PUBLISH gets the next delivery id and waits in `ready` for
//! [`Core::take_ready`]; QoS 1 and 2 deliveries also wait in `unacked`,
//! ordered by id, until acked. Acks leave only from the front of `unacked`,
//! so the broker sees them in arrival order (MQTT-4.6.0-2).
//!
//! A lost connection: publishes keep waiting, up to the send timeout
//! counted from the loss. Those rumqttc had not written yet go back to the
//! front of `outbox`, to be handed again on the next connection; those in
//! flight stay in `in_use`, because rumqttc sends them again (DUP set) when
//! the broker resumes the session, and their ack still ends their flow.
//! When the broker starts a new session instead, or the timeout runs out,
//! they fail: nothing is reported sent that the broker did not acknowledge,
//! and nothing is published twice as a new message.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use connector::model::{
    reason_code_name, Capabilities, Error, ErrorCode, Granted, Incoming, MqttVersion, Outgoing,
    QoS, Subscription, TopicFilter,
};
use tokio::sync::oneshot;

use super::batch::Entry;

/// Where a caller waits for the outcome of one operation.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// QoS 0 deliveries kept for a slow pipeline before new ones are dropped.
///
/// QoS 1 and 2 need no such bound: the broker stops at its in-flight limit
/// toward us (our Receive Maximum on 5.0) until we ack.
pub(crate) const QOS0_QUEUE_LIMIT: usize = 10_000;

/// The largest packet MQTT can encode: 1 byte of header, 4 bytes of
/// Remaining Length and at most 268,435,455 bytes after them.
pub(crate) const MQTT_MAX_PACKET: usize = 1 + 4 + 268_435_455;

/// Delivery ids of lost connections remembered, so that acknowledging one
/// says it was not acknowledged; the oldest are forgotten beyond this.
const VOIDED_LIMIT: usize = 65_536;

/// A request for the rumqttc event loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Req {
    /// PUBLISH; rumqttc assigns the packet identifier.
    Publish(Outgoing),
    /// One SUBSCRIBE for all these filters.
    Subscribe(Vec<Subscription>),
    /// One UNSUBSCRIBE for one filter (rumqttc's client sends one per packet).
    Unsubscribe(TopicFilter),
    /// PUBACK (QoS 1) or PUBREC (QoS 2) for a delivery.
    Ack {
        /// The delivery's packet identifier on the current connection.
        pkid: u16,
        /// The delivery's QoS.
        qos: QoS,
    },
    /// A normal DISCONNECT.
    Disconnect,
}

/// The event loop is gone; nothing can be sent any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutletClosed;

/// Hands requests to the event loop without blocking.
pub(crate) trait Outlet {
    /// Queues `req` for the event loop.
    fn send(&mut self, req: Req) -> Result<(), OutletClosed>;
}

/// What the event loop reported, without rumqttc's types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ev {
    /// The broker accepted the connection.
    ConnAck(ConnAckInfo),
    /// A PUBLISH was written with this identifier (0 for QoS 0).
    OutPublish(u16),
    /// A SUBSCRIBE was written with this identifier.
    OutSubscribe(u16),
    /// An UNSUBSCRIBE was written with this identifier.
    OutUnsubscribe(u16),
    /// Our DISCONNECT was written.
    OutDisconnect,
    /// PUBACK with its reason code (0 on 3.1.1).
    PubAck { pkid: u16, reason: u8 },
    /// PUBREC with its reason code.
    PubRec { pkid: u16, reason: u8 },
    /// PUBCOMP with its reason code.
    PubComp { pkid: u16, reason: u8 },
    /// PUBREL for a QoS 2 delivery (rumqttc answers it with PUBCOMP).
    PubRel { pkid: u16 },
    /// SUBACK with one return code per filter.
    SubAck { pkid: u16, codes: Vec<u8> },
    /// UNSUBACK with its reason codes (none on 3.1.1).
    UnsubAck { pkid: u16, codes: Vec<u8> },
    /// A delivery; `message.id` is assigned by the core.
    Publish { pkid: u16, message: Incoming },
    /// Nothing the core needs (pings, our own acks, ...).
    Other,
}

/// What a CONNACK said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnAckInfo {
    /// The broker's capabilities, `session_present` included.
    pub caps: Capabilities,
    /// The 5.0 Receive Maximum property, when the broker sent it.
    pub receive_max: Option<u16>,
}

/// A request rumqttc kept from a lost connection to send again when the
/// session resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resend {
    /// A QoS 1 or 2 PUBLISH not yet acknowledged.
    Publish(u16),
    /// A PUBREL not yet completed.
    Release(u16),
}

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Before the first CONNACK.
    Connecting,
    /// Connected.
    Up,
    /// Lost; the driver is reconnecting.
    Down,
    /// Disconnected for good.
    Closed,
}

/// The error of an operation whose connection dropped before its ack.
pub(crate) fn connection_lost() -> Error {
    Error::new(
        ErrorCode::ConnectionFailed,
        "the connection to the broker was lost before the broker acknowledged it",
    )
}

/// The error of an operation asked while reconnecting.
pub(crate) fn not_connected() -> Error {
    Error::new(
        ErrorCode::ConnectionFailed,
        "not connected to the broker (reconnecting)",
    )
}

/// The error of a publish the broker did not acknowledge within the send
/// timeout of an outage; `written` when it went out before the connection
/// was lost (the broker may have it). A zero timeout is the plain
/// [`connection_lost`].
pub(crate) fn send_timed_out(timeout: Duration, written: bool) -> Error {
    if timeout.is_zero() {
        return connection_lost();
    }
    let what = if written {
        "sent but not acknowledged (the broker may have it)"
    } else {
        "not sent"
    };
    Error::new(
        ErrorCode::Timeout,
        format!(
            "{what}: the connection to the broker was lost and did not come back within send_timeout_ms ({} ms)",
            timeout.as_millis()
        ),
    )
}

/// The error of a publish in flight when the connection was lost, once the
/// broker answered the reconnect with a new session (it dropped the old
/// one, so nothing will be acknowledged).
pub(crate) fn session_lost() -> Error {
    Error::new(
        ErrorCode::ConnectionFailed,
        "the broker started a new session after the reconnect; it may or may not have the message",
    )
}

/// The error of a commit whose QoS 2 acknowledgements (PUBREC) the
/// connection lost before it wrote them, when the connection did not come
/// back within the send timeout (at once for a zero timeout).
pub(crate) fn acks_unconfirmed(timeout: Duration) -> Error {
    let code = if timeout.is_zero() {
        ErrorCode::ConnectionFailed
    } else {
        ErrorCode::Timeout
    };
    Error::new(
        code,
        format!(
            "committed, but the connection to the broker was lost before it had the \
             acknowledgements (PUBREC) and did not come back within send_timeout_ms ({} ms): \
             they are sent on the next connection; if this process stops first, the broker \
             delivers those messages again",
            timeout.as_millis()
        ),
    )
}

/// The error of any call after `disconnect`.
pub(crate) fn closed() -> Error {
    Error::new(ErrorCode::Closed, "the client is disconnected")
}

fn rejected(what: &str, code: u8) -> Error {
    Error::new(
        ErrorCode::BrokerRejected,
        format!("the broker rejected the {what}: {}", reason_code_name(code)),
    )
    .with_reason_code(code)
}

/// An operation waiting to be handed to rumqttc.
#[derive(Debug)]
enum Op {
    Publish {
        message: Outgoing,
        reply: Entry,
    },
    /// `reply` is `None` for the core's own re-subscribe after a new session.
    Subscribe {
        subs: Vec<Subscription>,
        reply: Option<Reply<Vec<Granted>>>,
    },
    Unsubscribe {
        filter: TopicFilter,
        reply: Reply<()>,
    },
}

impl Op {
    fn needs_pkid(&self) -> bool {
        match self {
            Op::Publish { message, .. } => message.qos != QoS::AtMostOnce,
            Op::Subscribe { .. } | Op::Unsubscribe { .. } => true,
        }
    }

    fn fail(self, error: Error) {
        self.into_request().1.fail(error);
    }

    /// The request for rumqttc, and what the core keeps of the operation
    /// until its `Outgoing` event. The message moves into the request.
    fn into_request(self) -> (Req, Sent) {
        match self {
            Op::Publish { message, reply } => {
                let qos = message.qos;
                (Req::Publish(message), Sent::Publish { qos, reply })
            }
            Op::Subscribe { subs, reply } => {
                // The SUBACK is matched against the filters.
                (
                    Req::Subscribe(subs.clone()),
                    Sent::Subscribe { subs, reply },
                )
            }
            Op::Unsubscribe { filter, reply } => {
                (Req::Unsubscribe(filter), Sent::Unsubscribe { reply })
            }
        }
    }
}

/// What the core keeps of an operation handed to rumqttc.
#[derive(Debug)]
enum Sent {
    Publish {
        qos: QoS,
        reply: Entry,
    },
    Subscribe {
        subs: Vec<Subscription>,
        reply: Option<Reply<Vec<Granted>>>,
    },
    Unsubscribe {
        reply: Reply<()>,
    },
}

impl Sent {
    fn needs_pkid(&self) -> bool {
        match self {
            Sent::Publish { qos, .. } => *qos != QoS::AtMostOnce,
            Sent::Subscribe { .. } | Sent::Unsubscribe { .. } => true,
        }
    }

    fn fail(self, error: Error) {
        // A caller that stopped waiting is no error.
        match self {
            Sent::Publish { reply, .. } => reply.resolve(Err(error)),
            Sent::Unsubscribe { reply } => {
                let _ = reply.send(Err(error));
            }
            Sent::Subscribe { reply, .. } => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(error));
                }
            }
        }
    }
}

/// An operation handed to rumqttc, waiting for its `Outgoing` event.
#[derive(Debug)]
struct Handed {
    sent: Sent,
    /// The identifier the core expects rumqttc to assign, if any.
    pkid: Option<u16>,
}

/// What holds an outgoing packet identifier.
#[derive(Debug)]
enum Slot {
    /// A QoS 1 or 2 PUBLISH; `released` once a QoS 2 PUBREC came.
    Publish {
        qos: QoS,
        reply: Entry,
        released: bool,
    },
    Subscribe {
        subs: Vec<Subscription>,
        reply: Option<Reply<Vec<Granted>>>,
    },
    Unsubscribe {
        reply: Reply<()>,
    },
    /// A PUBLISH or PUBREL rumqttc resends from a lost connection; its
    /// caller was already told the connection failed.
    Orphan,
}

impl Slot {
    fn counts_as_publish(&self) -> bool {
        matches!(self, Slot::Publish { .. } | Slot::Orphan)
    }

    fn fail(self, error: Error) {
        match self {
            Slot::Publish { reply, .. } => reply.resolve(Err(error)),
            Slot::Unsubscribe { reply } => {
                let _ = reply.send(Err(error));
            }
            Slot::Subscribe { reply, .. } => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(error));
                }
            }
            Slot::Orphan => {}
        }
    }
}

/// A QoS 1 or 2 delivery not yet acknowledged to the broker.
#[derive(Debug, Clone, Copy)]
struct PendingAck {
    pkid: u16,
    qos: QoS,
    acked: bool,
}

/// The client's state; see the module docs.
pub(crate) struct Core<O> {
    outlet: O,
    protocol: MqttVersion,
    phase: Phase,
    caps: Capabilities,
    /// The configured in-flight window; also rumqttc's upper limit.
    window: u16,
    /// Where rumqttc's identifier counter wraps: its current in-flight limit.
    pkid_space: u16,
    /// Mirror of rumqttc's last assigned identifier.
    last_pkid: u16,
    /// In-flight slots rumqttc 0.25's v5 state never frees (a PUBREC or
    /// PUBCOMP with a failure reason code); they count against its limit
    /// until the connection is replaced.
    leaked: u16,
    outbox: VecDeque<Op>,
    handed: VecDeque<Handed>,
    /// Identifier-consuming requests in `handed`: they hold the identifiers
    /// up to `last_pkid`, consecutive in rumqttc's cycle.
    handed_pkids: u16,
    /// QoS 1 and 2 PUBLISHes in `handed`.
    handed_publishes: u16,
    in_use: HashMap<u16, Slot>,
    /// `in_use` slots that count against the broker's Receive Maximum.
    publishes_in_flight: u16,
    /// Resent PUBLISHes whose `Outgoing::Publish` event belongs to no caller.
    expected_resends: HashSet<u16>,
    /// PUBRELs sent again on a resumed session. The broker may have
    /// completed the flow before the connection was lost (its PUBCOMP lost
    /// with it): then it answers 0x92 Packet Identifier not found, which
    /// here means done.
    resent_releases: HashSet<u16>,
    /// Subscriptions to restore when the broker starts a new session.
    subscriptions: Vec<Subscription>,
    next_id: u64,
    ready: VecDeque<Incoming>,
    qos0_ready: usize,
    unacked: BTreeMap<u64, PendingAck>,
    unacked_pkids: HashMap<u16, u64>,
    /// QoS 2 deliveries acknowledged with PUBREC and not yet released by
    /// the broker's PUBREL. Kept across a resumed session: the broker
    /// sends such a PUBLISH again (DUP) when our PUBREC was lost, and it
    /// must not reach the pipeline twice (MQTT-4.3.3-10).
    awaiting_release: HashSet<u16>,
    /// QoS 1 and 2 deliveries of lost connections, not acknowledged: the
    /// broker delivers them again, under new ids.
    voided: BTreeSet<u64>,
    /// PUBRECs handed to rumqttc that the broker has not yet released with
    /// its PUBREL (on this connection or, after a loss, on the next one,
    /// maybe after resending the PUBLISH), and that no new session has
    /// made moot. Written is not enough: a connection closed with unread
    /// data ends in a reset, which can discard PUBRECs the broker had not
    /// read yet. PUBACKs are not waited for: a crash before the broker has
    /// one brings the message again, which QoS 1 allows, and waiting would
    /// cost a listener the overlap of its next batch with the writes.
    /// Not `awaiting_release`: a send timeout or close forgets these (their
    /// waiters were answered) but keeps that for recognising resends, so a
    /// later commit does not wait for ids an earlier one gave up on.
    unreleased_pubrecs: HashSet<u16>,
    /// Callers waiting until the PUBRECs unreleased when they asked are
    /// released (see [`Core::when_acks_settled`]), each with the ids it
    /// still waits for, sorted: a waiter whose list is empty is done.
    ack_waiters: Vec<(Vec<u16>, Reply<()>)>,
    dropped_qos0: u64,
    /// A PUBACK or PUBCOMP came since [`Core::take_nudge`] last asked.
    acked: bool,
    /// How long publishes wait for a lost connection to come back.
    send_timeout: Duration,
    /// When the connection was lost, while it is.
    down_since: Option<Instant>,
    /// The outage outlasted `send_timeout`: publishes fail at once until
    /// the connection is back.
    expired: bool,
}

impl<O: Outlet> Core<O> {
    /// A core for a client that is connecting; publishes wait up to
    /// `send_timeout` for a lost connection to come back.
    pub(crate) fn new(
        outlet: O,
        protocol: MqttVersion,
        window: u16,
        send_timeout: Duration,
    ) -> Self {
        let window = window.max(1);
        Core {
            outlet,
            protocol,
            phase: Phase::Connecting,
            caps: Capabilities::defaults(protocol),
            window,
            pkid_space: window,
            last_pkid: 0,
            leaked: 0,
            outbox: VecDeque::new(),
            handed: VecDeque::new(),
            handed_pkids: 0,
            handed_publishes: 0,
            in_use: HashMap::new(),
            publishes_in_flight: 0,
            expected_resends: HashSet::new(),
            resent_releases: HashSet::new(),
            subscriptions: Vec::new(),
            next_id: 1,
            ready: VecDeque::new(),
            qos0_ready: 0,
            unacked: BTreeMap::new(),
            unacked_pkids: HashMap::new(),
            awaiting_release: HashSet::new(),
            voided: BTreeSet::new(),
            unreleased_pubrecs: HashSet::new(),
            ack_waiters: Vec::new(),
            dropped_qos0: 0,
            acked: false,
            send_timeout,
            down_since: None,
            expired: false,
        }
    }

    /// Where the connection stands.
    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// The broker's capabilities from the last CONNACK.
    pub(crate) fn capabilities(&self) -> Capabilities {
        self.caps.clone()
    }

    /// QoS 0 deliveries dropped because the pipeline did not keep up.
    pub(crate) fn dropped_qos0(&self) -> u64 {
        self.dropped_qos0
    }

    /// Whether rumqttc's in-flight limit is used up by slots it will never
    /// free, so that nothing more can pass until the connection is replaced.
    pub(crate) fn wedged(&self) -> bool {
        self.phase == Phase::Up && self.leaked > 0 && self.leaked >= self.pkid_space
    }

    /// Whether the client should nudge the broker (see the `nudge` module):
    /// acknowledgements came in, more are awaited, and nothing of ours waits
    /// to be written (a PUBLISH written next would carry TCP's ACK anyway).
    /// Call at the end of each burst of events; it starts a new burst.
    pub(crate) fn take_nudge(&mut self) -> bool {
        std::mem::take(&mut self.acked)
            && self.phase == Phase::Up
            && self.publishes_in_flight > 0
            && self.handed.is_empty()
    }

    /// The error for a new operation, if the client cannot take one now.
    fn refuse(&self) -> Option<Error> {
        match self.phase {
            Phase::Up => None,
            Phase::Closed => Some(closed()),
            Phase::Connecting | Phase::Down => Some(not_connected()),
        }
    }

    /// Checks a message against the broker's capabilities (its topic was
    /// parsed where it entered).
    fn check_message(&self, message: &Outgoing) -> Result<(), Error> {
        if self.protocol == MqttVersion::V5 {
            if message.qos > self.caps.maximum_qos {
                return Err(Error::new(
                    ErrorCode::Unsupported,
                    format!(
                        "QoS {} is above the broker's maximum QoS {}",
                        message.qos.level(),
                        self.caps.maximum_qos.level()
                    ),
                )
                .with_reason_code(0x9B));
            }
            if message.retain && !self.caps.retain_available {
                return Err(Error::new(
                    ErrorCode::Unsupported,
                    "the broker does not support retained messages",
                )
                .with_reason_code(0x9A));
            }
        }
        let size = message.packet_size(self.protocol);
        let limit = match (self.protocol, self.caps.maximum_packet_size) {
            (MqttVersion::V5, Some(max)) => u64::from(max).min(MQTT_MAX_PACKET as u64),
            _ => MQTT_MAX_PACKET as u64,
        };
        if size > limit {
            // Sending it would make rumqttc fail the whole connection.
            return Err(Error::new(
                ErrorCode::InvalidDocument,
                format!("the message is {size} bytes, more than the maximum packet size {limit}"),
            )
            .with_reason_code(0x95));
        }
        Ok(())
    }

    /// Queues one message of a publish batch. Call [`Core::pump`] after the
    /// batch. While the connection is lost it waits for the next one, unless
    /// the outage has already outlasted the send timeout.
    pub(crate) fn submit_publish(&mut self, message: Outgoing, reply: Entry) {
        let refused = match self.phase {
            Phase::Down if self.expired => Some(send_timed_out(self.send_timeout, false)),
            Phase::Down => None,
            _ => self.refuse(),
        };
        if let Some(e) = refused {
            reply.resolve(Err(e));
            return;
        }
        if let Err(e) = self.check_message(&message) {
            reply.resolve(Err(e));
            return;
        }
        self.outbox.push_back(Op::Publish { message, reply });
    }

    /// Queues a SUBSCRIBE and hands it over if possible.
    pub(crate) fn submit_subscribe(&mut self, subs: Vec<Subscription>, reply: Reply<Vec<Granted>>) {
        if let Some(e) = self.refuse() {
            let _ = reply.send(Err(e));
            return;
        }
        self.outbox.push_back(Op::Subscribe {
            subs,
            reply: Some(reply),
        });
        self.pump();
    }

    /// Queues an UNSUBSCRIBE for one filter and hands it over if possible.
    pub(crate) fn submit_unsubscribe(&mut self, filter: TopicFilter, reply: Reply<()>) {
        if let Some(e) = self.refuse() {
            let _ = reply.send(Err(e));
            return;
        }
        // Forget it now, so that a reconnect in between does not restore it.
        self.subscriptions.retain(|s| s.filter != filter);
        self.outbox.push_back(Op::Unsubscribe { filter, reply });
        self.pump();
    }

    /// Hands queued operations to rumqttc in order, as far as packet
    /// identifiers and the in-flight window allow.
    ///
    /// Several identifier-consuming requests may wait in rumqttc's channel
    /// at once. Each gets the identifier that follows the previous one in
    /// rumqttc's cycle, and is handed over only when that identifier is free
    /// now: not in `in_use` (which covers everything rumqttc still holds,
    /// since the core frees a slot only after rumqttc's event), not awaited
    /// by a resend, and not held by an earlier handed request (they hold the
    /// `handed_pkids` identifiers before it, fewer than the cycle's length).
    /// A free identifier stays free until rumqttc assigns it: only rumqttc's
    /// counter, driven by these same requests, hands identifiers out, and a
    /// reconnect (the only source of resends) voids every handed request.
    pub(crate) fn pump(&mut self) {
        while self.phase == Phase::Up {
            let Some(op) = self.outbox.front() else { break };
            let mut pkid = None;
            let mut is_publish = false;
            if op.needs_pkid() {
                if self.handed_pkids >= self.pkid_space {
                    // The next identifier is a handed request's.
                    break;
                }
                is_publish = matches!(op, Op::Publish { .. });
                // Keeps rumqttc below its in-flight limit whenever one of
                // our requests waits in its channel, so that it never stops
                // reading the channel (and the acks behind them).
                let in_flight = u32::from(self.publishes_in_flight)
                    + u32::from(self.handed_publishes)
                    + u32::from(self.leaked);
                if is_publish && in_flight >= u32::from(self.pkid_space) {
                    break;
                }
                let (next, counter) = next_pkid(self.last_pkid, self.pkid_space);
                if self.in_use.contains_key(&next) || self.expected_resends.contains(&next) {
                    // Head-of-line wait: the identifier rumqttc will use next
                    // is still taken.
                    break;
                }
                pkid = Some((next, counter));
            }
            let Some(op) = self.outbox.pop_front() else {
                break;
            };
            let (req, sent) = op.into_request();
            if self.outlet.send(req).is_err() {
                sent.fail(closed());
                continue;
            }
            match pkid {
                Some((next, counter)) => {
                    self.last_pkid = counter;
                    self.handed_pkids += 1;
                    if is_publish {
                        self.handed_publishes += 1;
                    }
                    self.handed.push_back(Handed {
                        sent,
                        pkid: Some(next),
                    });
                }
                None => self.handed.push_back(Handed { sent, pkid: None }),
            }
        }
    }

    /// Empties `handed`, failing every request in it.
    fn fail_handed(&mut self, error: impl Fn() -> Error) {
        for handed in self.handed.drain(..) {
            handed.sent.fail(error());
        }
        self.handed_pkids = 0;
        self.handed_publishes = 0;
    }

    /// Takes in one event of the event loop. Returns whether deliveries
    /// became ready (so receivers should wake).
    pub(crate) fn on_event(&mut self, ev: Ev) -> bool {
        match ev {
            Ev::ConnAck(info) => {
                self.on_connack(info);
                false
            }
            Ev::OutPublish(pkid) => {
                self.on_written(pkid, Kind::Publish);
                false
            }
            Ev::OutSubscribe(pkid) => {
                self.on_written(pkid, Kind::Subscribe);
                false
            }
            Ev::OutUnsubscribe(pkid) => {
                self.on_written(pkid, Kind::Unsubscribe);
                false
            }
            Ev::PubAck { pkid, reason } => {
                self.on_puback(pkid, reason);
                false
            }
            Ev::PubRec { pkid, reason } => {
                self.on_pubrec(pkid, reason);
                false
            }
            Ev::PubComp { pkid, reason } => {
                self.on_pubcomp(pkid, reason);
                false
            }
            Ev::SubAck { pkid, codes } => {
                self.on_suback(pkid, &codes);
                false
            }
            Ev::UnsubAck { pkid, codes } => {
                self.on_unsuback(pkid, &codes);
                false
            }
            Ev::PubRel { pkid } => {
                self.awaiting_release.remove(&pkid);
                // The broker has our PUBREC, whichever connection wrote it.
                self.settle_release(pkid);
                false
            }
            Ev::Publish { pkid, message } => self.on_delivery(pkid, message),
            Ev::OutDisconnect | Ev::Other => false,
        }
    }

    fn on_connack(&mut self, info: ConnAckInfo) {
        if self.phase == Phase::Closed {
            return;
        }
        let session_present = info.caps.session_present;
        self.caps = info.caps;
        if let Some(max) = info.receive_max {
            // rumqttc's v5 state narrows its limit (and so its identifier
            // cycle) the same way.
            self.pkid_space = max.min(self.window).max(1);
        }
        self.phase = Phase::Up;
        self.down_since = None;
        self.expired = false;
        if !session_present {
            // rumqttc dropped its resends with the old session, and the
            // broker will acknowledge none of them.
            for (_, slot) in self.in_use.drain() {
                slot.fail(session_lost());
            }
            self.publishes_in_flight = 0;
            self.expected_resends.clear();
            self.resent_releases.clear();
            self.awaiting_release.clear();
            // The broker forgot those deliveries: it sends none again.
            self.end_ack_waiters(|| Ok(()));
            if !self.subscriptions.is_empty() {
                tracing::info!(
                    count = self.subscriptions.len(),
                    "new session: restoring subscriptions"
                );
                self.outbox.push_front(Op::Subscribe {
                    subs: self.subscriptions.clone(),
                    reply: None,
                });
            }
        }
        self.pump();
    }

    fn on_written(&mut self, pkid: u16, kind: Kind) {
        if kind == Kind::Publish && pkid != 0 && self.expected_resends.remove(&pkid) {
            return;
        }
        let Some(handed) = self.handed.pop_front() else {
            tracing::warn!(
                pkid,
                ?kind,
                "rumqttc wrote a packet the client did not ask for"
            );
            return;
        };
        let Handed {
            sent,
            pkid: expected,
        } = handed;
        if sent.needs_pkid() {
            self.handed_pkids -= 1;
            if matches!(sent, Sent::Publish { .. }) {
                self.handed_publishes -= 1;
            }
            if expected != Some(pkid) {
                tracing::warn!(
                    pkid,
                    ?expected,
                    "rumqttc assigned an unexpected packet identifier"
                );
                if pkid != 0 {
                    // Follow rumqttc's counter from here: the requests still
                    // handed get the identifiers after this one.
                    let mut last = if pkid >= self.pkid_space { 0 } else { pkid };
                    for later in self.handed.iter_mut().filter(|h| h.pkid.is_some()) {
                        let (next, counter) = next_pkid(last, self.pkid_space);
                        later.pkid = Some(next);
                        last = counter;
                    }
                    self.last_pkid = last;
                }
            }
        }
        let slot = match (sent, kind) {
            (Sent::Publish { qos, reply }, Kind::Publish) => {
                if qos == QoS::AtMostOnce {
                    // Written and flushed: all QoS 0 promises.
                    reply.resolve(Ok(()));
                    None
                } else {
                    Some(Slot::Publish {
                        qos,
                        reply,
                        released: false,
                    })
                }
            }
            (Sent::Subscribe { subs, reply }, Kind::Subscribe) => {
                Some(Slot::Subscribe { subs, reply })
            }
            (Sent::Unsubscribe { reply }, Kind::Unsubscribe) => Some(Slot::Unsubscribe { reply }),
            (sent, kind) => {
                tracing::error!(?kind, "rumqttc's events are out of step with the requests");
                sent.fail(Error::new(
                    ErrorCode::Internal,
                    "the client lost track of a request; its outcome is unknown",
                ));
                None
            }
        };
        if let Some(slot) = slot {
            if slot.counts_as_publish() {
                self.publishes_in_flight += 1;
            }
            if let Some(old) = self.in_use.insert(pkid, slot) {
                tracing::error!(pkid, "packet identifier reused while in use");
                if old.counts_as_publish() {
                    self.publishes_in_flight = self.publishes_in_flight.saturating_sub(1);
                }
                old.fail(Error::new(
                    ErrorCode::Internal,
                    "packet identifier reused while in use; outcome unknown",
                ));
            }
        }
        self.pump();
    }

    fn free(&mut self, pkid: u16) -> Option<Slot> {
        let slot = self.in_use.remove(&pkid)?;
        if slot.counts_as_publish() {
            self.publishes_in_flight = self.publishes_in_flight.saturating_sub(1);
        }
        Some(slot)
    }

    fn on_puback(&mut self, pkid: u16, reason: u8) {
        self.acked = true;
        match self.free(pkid) {
            Some(Slot::Publish {
                qos: QoS::AtLeastOnce,
                reply,
                ..
            }) => {
                let outcome = if reason >= 0x80 {
                    Err(rejected("message", reason))
                } else {
                    Ok(())
                };
                reply.resolve(outcome);
            }
            Some(Slot::Orphan) | None => {}
            Some(other) => {
                // rumqttc ends the flow on any PUBACK; so does the core.
                other.fail(Error::new(
                    ErrorCode::BrokerRejected,
                    "the broker answered with a PUBACK that does not fit the flow",
                ));
            }
        }
        self.pump();
    }

    fn on_pubrec(&mut self, pkid: u16, reason: u8) {
        let failed = reason >= 0x80;
        match self.in_use.get_mut(&pkid) {
            Some(Slot::Publish { released, .. }) if !failed => *released = true,
            Some(Slot::Orphan) if !failed => {}
            Some(Slot::Publish { .. } | Slot::Orphan) => {
                // A failure code ends a QoS 2 flow at PUBREC; rumqttc 0.25
                // then keeps the slot counted as in flight.
                if self.protocol == MqttVersion::V5 {
                    self.leaked += 1;
                }
                if let Some(slot) = self.free(pkid) {
                    slot.fail(rejected("message", reason));
                }
            }
            _ => {}
        }
        self.pump();
    }

    fn on_pubcomp(&mut self, pkid: u16, reason: u8) {
        self.acked = true;
        let resent = self.resent_releases.remove(&pkid);
        // rumqttc keeps the slot of any failure code counted.
        let leaks = reason >= 0x80;
        let failed = leaks && !(resent && reason == 0x92);
        match self.free(pkid) {
            Some(Slot::Publish { reply, .. }) => {
                let outcome = if failed {
                    Err(rejected("message", reason))
                } else {
                    Ok(())
                };
                reply.resolve(outcome);
            }
            Some(Slot::Orphan) => {}
            Some(other) => {
                // Not ours to end; put it back.
                self.in_use.insert(pkid, other);
                return;
            }
            None => return,
        }
        if leaks && self.protocol == MqttVersion::V5 {
            self.leaked += 1;
        }
        self.pump();
    }

    fn on_suback(&mut self, pkid: u16, codes: &[u8]) {
        let Some(slot) = self.in_use.remove(&pkid) else {
            return;
        };
        let Slot::Subscribe { subs, reply } = slot else {
            self.in_use.insert(pkid, slot);
            return;
        };
        let mut granted = Vec::with_capacity(subs.len());
        for (i, sub) in subs.into_iter().enumerate() {
            // A SUBACK without a code for a filter refused it, as far as we know.
            let code = codes.get(i).copied().unwrap_or(0x80);
            let qos = if code < 0x80 {
                QoS::from_level(code)
            } else {
                None
            };
            if qos.is_some() {
                self.remember(sub.clone());
            } else {
                if reply.is_none() {
                    tracing::warn!(
                        filter = %sub.filter,
                        reason = reason_code_name(code),
                        "the broker refused to restore a subscription"
                    );
                }
                self.subscriptions.retain(|s| s.filter != sub.filter);
            }
            granted.push(Granted {
                filter: sub.filter.into_string(),
                qos,
                reason_code: code,
            });
        }
        if let Some(reply) = reply {
            let _ = reply.send(Ok(granted));
        }
        self.pump();
    }

    fn remember(&mut self, sub: Subscription) {
        match self
            .subscriptions
            .iter_mut()
            .find(|s| s.filter == sub.filter)
        {
            Some(existing) => *existing = sub,
            None => self.subscriptions.push(sub),
        }
    }

    fn on_unsuback(&mut self, pkid: u16, codes: &[u8]) {
        let Some(slot) = self.in_use.remove(&pkid) else {
            return;
        };
        let Slot::Unsubscribe { reply } = slot else {
            self.in_use.insert(pkid, slot);
            return;
        };
        let outcome = match codes.iter().find(|&&c| c >= 0x80) {
            Some(&code) => Err(rejected("unsubscribe", code)),
            None => Ok(()),
        };
        let _ = reply.send(outcome);
        self.pump();
    }

    fn on_delivery(&mut self, pkid: u16, mut message: Incoming) -> bool {
        if self.phase == Phase::Closed {
            return false;
        }
        match message.qos {
            QoS::AtMostOnce => {
                if self.qos0_ready >= QOS0_QUEUE_LIMIT {
                    self.dropped_qos0 += 1;
                    tracing::warn!(
                        topic = %message.topic,
                        dropped = self.dropped_qos0,
                        "incoming queue full: QoS 0 message dropped"
                    );
                    return false;
                }
                self.qos0_ready += 1;
            }
            qos => {
                if qos == QoS::ExactlyOnce && self.awaiting_release.contains(&pkid) {
                    // Delivered and acknowledged already; our PUBREC was
                    // lost with a connection: acknowledge it again.
                    tracing::debug!(pkid, "QoS 2 delivery already taken; PUBREC sent again");
                    let _ = self.outlet.send(Req::Ack { pkid, qos });
                    return false;
                }
                if let Some(id) = self.unacked_pkids.get(&pkid) {
                    // The broker cannot reuse an identifier we have not
                    // acked: this is a retransmission of delivery `id`.
                    tracing::debug!(pkid, id, "duplicate delivery ignored");
                    return false;
                }
                let id = self.next_id;
                self.unacked.insert(
                    id,
                    PendingAck {
                        pkid,
                        qos,
                        acked: false,
                    },
                );
                self.unacked_pkids.insert(pkid, id);
            }
        }
        message.id = self.next_id;
        self.next_id += 1;
        self.ready.push_back(message);
        true
    }

    /// Takes up to `max` ready deliveries, oldest first.
    pub(crate) fn take_ready(&mut self, max: usize) -> Vec<Incoming> {
        let n = max.min(self.ready.len());
        let batch: Vec<Incoming> = self.ready.drain(..n).collect();
        let qos0 = batch.iter().filter(|m| m.qos == QoS::AtMostOnce).count();
        self.qos0_ready -= qos0;
        batch
    }

    /// Whether deliveries are ready.
    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Marks deliveries as processed and sends the acks that are now due,
    /// in arrival order. Returns how many of `ids` came on a connection
    /// since lost: those cannot be acknowledged, and the broker delivers
    /// them again. Other unknown ids (QoS 0, already acked) are ignored.
    pub(crate) fn ack(&mut self, ids: &[u64]) -> usize {
        let mut voided = 0;
        for id in ids {
            if let Some(pending) = self.unacked.get_mut(id) {
                pending.acked = true;
            } else if self.voided.remove(id) {
                voided += 1;
            }
        }
        while let Some(entry) = self.unacked.first_entry() {
            if !entry.get().acked {
                break;
            }
            let pending = entry.remove();
            self.unacked_pkids.remove(&pending.pkid);
            if pending.qos == QoS::ExactlyOnce {
                self.awaiting_release.insert(pending.pkid);
            }
            let req = Req::Ack {
                pkid: pending.pkid,
                qos: pending.qos,
            };
            if self.outlet.send(req).is_err() {
                // The event loop is gone: the broker redelivers.
                break;
            }
            if pending.qos == QoS::ExactlyOnce {
                self.unreleased_pubrecs.insert(pending.pkid);
            }
        }
        voided
    }

    /// Resolves `reply` once the broker has released every PUBREC handed to
    /// rumqttc so far with its PUBREL (at once when none waits), or a new
    /// session made them moot. A pipeline's commit returns then, when
    /// nothing this process does, crash included, can make the broker
    /// deliver those QoS 2 messages again.
    pub(crate) fn when_acks_settled(&mut self, reply: Reply<()>) {
        if self.unreleased_pubrecs.is_empty() {
            let _ = reply.send(Ok(()));
        } else {
            let mut waiting: Vec<u16> = self.unreleased_pubrecs.iter().copied().collect();
            waiting.sort_unstable();
            self.ack_waiters.push((waiting, reply));
        }
    }

    fn settle_release(&mut self, pkid: u16) {
        if !self.unreleased_pubrecs.remove(&pkid) {
            return;
        }
        // Called for every PUBREL: a lookup per waiter, so a commit of n
        // costs n lookups, not n squared. An id released here and then
        // reused by a later delivery is not waited for again.
        let mut i = 0;
        while i < self.ack_waiters.len() {
            let pkids = &mut self.ack_waiters[i].0;
            if let Ok(at) = pkids.binary_search(&pkid) {
                pkids.remove(at);
            }
            if pkids.is_empty() {
                let (_, reply) = self.ack_waiters.swap_remove(i);
                let _ = reply.send(Ok(()));
            } else {
                i += 1;
            }
        }
    }

    /// Forgets every unreleased PUBREC and answers every caller waiting for
    /// one with `outcome`.
    fn end_ack_waiters(&mut self, outcome: impl Fn() -> Result<(), Error>) {
        self.unreleased_pubrecs.clear();
        for (_, reply) in self.ack_waiters.drain(..) {
            let _ = reply.send(outcome());
        }
    }

    /// The connection dropped at `now` (or an attempt to reconnect failed).
    /// `resends` are what rumqttc kept to send again if the broker resumes
    /// the session; `unsent` are the messages of the publishes handed to
    /// rumqttc and not yet written, in the order they were handed (`None`
    /// for one that could not be taken back). The event loop's identifier
    /// counter starts over.
    pub(crate) fn on_connection_lost(
        &mut self,
        now: Instant,
        resends: &[Resend],
        unsent: Vec<Option<Outgoing>>,
    ) {
        // Publishes not yet written go back to the front of the outbox, in
        // order; other operations fail (their callers retry).
        let mut unsent = unsent.into_iter();
        let mut requeued = VecDeque::new();
        for handed in self.handed.drain(..) {
            match handed.sent {
                Sent::Publish { reply, .. } => match unsent.next().flatten() {
                    Some(message) => requeued.push_back(Op::Publish { message, reply }),
                    None => reply.resolve(Err(connection_lost())),
                },
                sent => sent.fail(connection_lost()),
            }
        }
        self.handed_pkids = 0;
        self.handed_publishes = 0;
        for op in std::mem::take(&mut self.outbox) {
            match op {
                Op::Publish { .. } => requeued.push_back(op),
                op => op.fail(connection_lost()),
            }
        }
        self.outbox = requeued;
        // Publishes in flight wait for their resend's ack.
        let mut old = std::mem::take(&mut self.in_use);
        self.expected_resends.clear();
        self.resent_releases.clear();
        for resend in resends {
            let pkid = match *resend {
                Resend::Publish(pkid) => {
                    self.expected_resends.insert(pkid);
                    pkid
                }
                Resend::Release(pkid) => {
                    self.resent_releases.insert(pkid);
                    pkid
                }
            };
            let slot = match old.remove(&pkid) {
                Some(slot @ Slot::Publish { .. }) => slot,
                Some(other) => {
                    other.fail(connection_lost());
                    Slot::Orphan
                }
                None => Slot::Orphan,
            };
            self.in_use.insert(pkid, slot);
        }
        for (_, slot) in old {
            slot.fail(connection_lost());
        }
        self.publishes_in_flight = self.in_use.len() as u16;
        self.last_pkid = 0;
        self.leaked = 0;
        self.pkid_space = self.window;
        // Deliveries of the lost connection are void: their identifiers may
        // name other messages on the next one, and the broker redelivers.
        self.ready.retain(|m| m.qos == QoS::AtMostOnce);
        self.voided.extend(self.unacked.keys());
        while self.voided.len() > VOIDED_LIMIT {
            self.voided.pop_first();
        }
        self.unacked.clear();
        self.unacked_pkids.clear();
        if self.phase == Phase::Up {
            self.phase = Phase::Down;
            self.down_since = Some(now);
            self.on_send_deadline(now);
        }
    }

    /// The QoS 2 deliveries acknowledged with PUBREC and not yet released.
    pub(crate) fn awaiting_release(&self) -> Vec<u16> {
        self.awaiting_release.iter().copied().collect()
    }

    /// When the publishes waiting through an outage time out, if they can.
    pub(crate) fn send_deadline(&self) -> Option<Instant> {
        if self.phase != Phase::Down || self.expired {
            return None;
        }
        self.down_since.map(|since| since + self.send_timeout)
    }

    /// Fails every publish still waiting when the outage has outlasted the
    /// send timeout at `now`: those not written as not sent, those in
    /// flight as not acknowledged (rumqttc may still resend them; their
    /// ack is then ignored). Later publishes fail at once until the
    /// connection is back.
    pub(crate) fn on_send_deadline(&mut self, now: Instant) {
        if self.send_deadline().is_none_or(|due| due > now) {
            return;
        }
        self.expired = true;
        let timeout = self.send_timeout;
        self.end_ack_waiters(|| Err(acks_unconfirmed(timeout)));
        for op in self.outbox.drain(..) {
            op.fail(send_timed_out(timeout, false));
        }
        for slot in self.in_use.values_mut() {
            if matches!(slot, Slot::Publish { .. }) {
                std::mem::replace(slot, Slot::Orphan).fail(send_timed_out(timeout, true));
            }
        }
    }

    /// Disconnects for good: every waiting caller gets `Closed`. Sends a
    /// DISCONNECT when connected; returns whether it did.
    pub(crate) fn close(&mut self) -> bool {
        if self.phase == Phase::Closed {
            return false;
        }
        let was_up = self.phase == Phase::Up;
        self.phase = Phase::Closed;
        self.fail_handed(closed);
        for op in self.outbox.drain(..) {
            op.fail(closed());
        }
        for (_, slot) in self.in_use.drain() {
            slot.fail(closed());
        }
        self.ready.clear();
        self.qos0_ready = 0;
        self.unacked.clear();
        self.unacked_pkids.clear();
        self.voided.clear();
        self.end_ack_waiters(|| Err(closed()));
        was_up && self.outlet.send(Req::Disconnect).is_ok()
    }

    /// Fails everything because the event loop ended without a DISCONNECT.
    pub(crate) fn fail_all(&mut self, error: Error) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        self.fail_handed(|| error.clone());
        for op in self.outbox.drain(..) {
            op.fail(error.clone());
        }
        for (_, slot) in self.in_use.drain() {
            slot.fail(error.clone());
        }
        self.ready.clear();
        self.qos0_ready = 0;
        self.unacked.clear();
        self.unacked_pkids.clear();
        self.end_ack_waiters(|| Err(error.clone()));
    }
}

/// rumqttc's identifier after `last` in a cycle of `space`, and its counter
/// after handing it out (it resets to 0 when it hands out the limit).
fn next_pkid(last: u16, space: u16) -> (u16, u16) {
    let next = last.wrapping_add(1);
    if next == space {
        (next, 0)
    } else {
        (next, next)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Publish,
    Subscribe,
    Unsubscribe,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::batch::Batch;
    use connector::model::MessageProperties;

    /// Records what the core sends.
    #[derive(Default)]
    struct Recorder(Vec<Req>);

    impl Outlet for Recorder {
        fn send(&mut self, req: Req) -> Result<(), OutletClosed> {
            self.0.push(req);
            Ok(())
        }
    }

    fn up(window: u16) -> Core<Recorder> {
        let mut core = Core::new(
            Recorder::default(),
            MqttVersion::V5,
            window,
            Duration::from_secs(30),
        );
        core.on_event(Ev::ConnAck(ConnAckInfo {
            caps: Capabilities::defaults(MqttVersion::V5),
            receive_max: None,
        }));
        core
    }

    fn message(qos: QoS) -> Outgoing {
        Outgoing {
            topic: "t".parse().unwrap(),
            payload: b"x".to_vec(),
            qos,
            retain: false,
            properties: MessageProperties::default(),
        }
    }

    fn delivery(qos: QoS) -> Incoming {
        Incoming {
            id: 0,
            topic: "t".into(),
            payload: vec![],
            qos,
            retain: false,
            duplicate: false,
            properties: MessageProperties::default(),
            subscription_ids: vec![],
        }
    }

    /// A delivery with `pkid` at `qos`; whether it became ready.
    fn deliver(core: &mut Core<Recorder>, pkid: u16, qos: QoS) -> bool {
        core.on_event(Ev::Publish {
            pkid,
            message: delivery(qos),
        })
    }

    fn publish(core: &mut Core<Recorder>, qos: QoS) -> Batch {
        let (batch, entries) = Batch::new(1);
        for entry in entries {
            core.submit_publish(message(qos), entry);
        }
        core.pump();
        batch
    }

    /// The outcome of a one-message batch, which must be resolved.
    fn outcome(batch: &Batch) -> Result<(), Error> {
        batch.peek(0).expect("the outcome is not resolved yet")
    }

    fn pkids_handed(core: &Core<Recorder>) -> Vec<Option<u16>> {
        core.handed.iter().map(|h| h.pkid).collect()
    }

    #[test]
    fn nudges_only_when_acks_came_and_only_acks_are_awaited() {
        let mut core = up(2);
        let a = publish(&mut core, QoS::AtLeastOnce);
        let _b = publish(&mut core, QoS::AtLeastOnce);
        let c = publish(&mut core, QoS::AtLeastOnce);
        core.on_event(Ev::OutPublish(1));
        core.on_event(Ev::OutPublish(2));
        assert!(!core.take_nudge(), "no acknowledgement came yet");
        core.on_event(Ev::PubAck { pkid: 1, reason: 0 });
        assert_eq!(outcome(&a), Ok(()));
        assert!(
            !core.take_nudge(),
            "the window's free slot went to the next message, whose PUBLISH carries the ACK"
        );
        core.on_event(Ev::OutPublish(1));
        core.on_event(Ev::PubAck { pkid: 2, reason: 0 });
        assert!(
            core.take_nudge(),
            "only the last acknowledgement is awaited"
        );
        assert!(!core.take_nudge(), "once per burst of events");
        core.on_event(Ev::PubAck { pkid: 1, reason: 0 });
        assert_eq!(outcome(&c), Ok(()));
        assert!(!core.take_nudge(), "nothing is awaited");
    }

    #[test]
    fn identifier_requests_queue_while_their_identifiers_are_free() {
        let mut core = up(3);
        let a = publish(&mut core, QoS::AtLeastOnce);
        let _b = publish(&mut core, QoS::ExactlyOnce);
        let _c = publish(&mut core, QoS::AtMostOnce);
        let _d = publish(&mut core, QoS::AtLeastOnce);
        assert_eq!(core.outlet.0.len(), 4, "pkids 1, 2, none and 3 are free");
        assert_eq!(pkids_handed(&core), vec![Some(1), Some(2), None, Some(3)]);
        // The window is full: the next one waits for an ack, and then for
        // the identifier rumqttc wraps around to (1).
        let _e = publish(&mut core, QoS::AtLeastOnce);
        assert_eq!(core.outlet.0.len(), 4);
        core.on_event(Ev::OutPublish(1));
        core.on_event(Ev::OutPublish(2));
        core.on_event(Ev::OutPublish(0));
        core.on_event(Ev::PubRec { pkid: 2, reason: 0 });
        assert_eq!(core.outlet.0.len(), 4, "2 is in its QoS 2 flow");
        core.on_event(Ev::PubAck { pkid: 1, reason: 0 });
        assert_eq!(outcome(&a), Ok(()));
        assert_eq!(core.outlet.0.len(), 5, "1 is free, 3 is not yet written");
        assert_eq!(pkids_handed(&core), vec![Some(3), Some(1)]);
        core.on_event(Ev::OutPublish(3));
        core.on_event(Ev::OutPublish(1));
        assert_eq!(core.in_use.len(), 3);
        assert_eq!(core.handed_pkids, 0);
        assert_eq!(core.handed_publishes, 0);
    }

    #[test]
    fn a_handed_identifier_is_not_handed_again() {
        // Window 2, rumqttc assigns 1 then 2: a third subscribe must not get
        // 1 while the first has not even been written.
        let mut core = up(2);
        for _ in 0..3 {
            let (tx, _rx) = oneshot::channel();
            core.submit_subscribe(vec![], tx);
        }
        assert_eq!(pkids_handed(&core), vec![Some(1), Some(2)]);
        core.on_event(Ev::OutSubscribe(1));
        assert_eq!(pkids_handed(&core), vec![Some(2)], "1 waits for its SUBACK");
        core.on_event(Ev::SubAck {
            pkid: 1,
            codes: vec![],
        });
        assert_eq!(pkids_handed(&core), vec![Some(2), Some(1)]);
    }

    #[test]
    fn an_unexpected_identifier_moves_the_later_expectations() {
        let mut core = up(10);
        let _a = publish(&mut core, QoS::AtLeastOnce);
        let _b = publish(&mut core, QoS::AtLeastOnce);
        let _c = publish(&mut core, QoS::AtLeastOnce);
        core.on_event(Ev::OutPublish(5));
        assert_eq!(pkids_handed(&core), vec![Some(6), Some(7)]);
        core.on_event(Ev::OutPublish(6));
        core.on_event(Ev::OutPublish(7));
        let _d = publish(&mut core, QoS::AtLeastOnce);
        assert_eq!(pkids_handed(&core), vec![Some(8)]);
    }

    #[test]
    fn mixed_qos_outcomes_resolve_in_one_batch() {
        let mut core = up(10);
        let (batch, entries) = Batch::new(3);
        let qos = [QoS::AtLeastOnce, QoS::AtMostOnce, QoS::ExactlyOnce];
        for (entry, qos) in entries.into_iter().zip(qos) {
            core.submit_publish(message(qos), entry);
        }
        core.pump();
        core.on_event(Ev::OutPublish(1));
        core.on_event(Ev::OutPublish(0));
        core.on_event(Ev::OutPublish(2));
        assert_eq!(batch.peek(1), Some(Ok(())), "QoS 0 is done when written");
        core.on_event(Ev::PubRec { pkid: 2, reason: 0 });
        core.on_event(Ev::PubAck { pkid: 1, reason: 0 });
        assert_eq!(batch.peek(0), Some(Ok(())));
        assert_eq!(batch.peek(2), None, "QoS 2 waits for its PUBCOMP");
        core.on_event(Ev::PubComp { pkid: 2, reason: 0 });
        assert_eq!(batch.peek(2), Some(Ok(())));
    }

    #[test]
    fn moved_messages_reach_the_outlet_whole() {
        let mut core = up(10);
        let _a = publish(&mut core, QoS::AtLeastOnce);
        assert_eq!(core.outlet.0, vec![Req::Publish(message(QoS::AtLeastOnce))]);
    }

    #[test]
    fn waits_while_the_next_identifier_is_taken() {
        // Window 2: pkids cycle 1, 2, 1, ... A QoS 2 flow on 1 that is past
        // PUBREC must hold back the next publish even when 2 is done.
        let mut core = up(2);
        let a = publish(&mut core, QoS::ExactlyOnce);
        let b = publish(&mut core, QoS::AtLeastOnce);
        core.on_event(Ev::OutPublish(1));
        core.on_event(Ev::OutPublish(2));
        let c = publish(&mut core, QoS::AtLeastOnce);
        core.on_event(Ev::PubRec { pkid: 1, reason: 0 });
        core.on_event(Ev::PubAck { pkid: 2, reason: 0 });
        assert_eq!(outcome(&b), Ok(()));
        assert_eq!(core.outlet.0.len(), 2, "pkid 1 is still in its QoS 2 flow");
        core.on_event(Ev::PubComp { pkid: 1, reason: 0 });
        assert_eq!(outcome(&a), Ok(()));
        assert_eq!(core.outlet.0.len(), 3);
        core.on_event(Ev::OutPublish(1));
        core.on_event(Ev::PubAck {
            pkid: 1,
            reason: 0x10,
        });
        assert_eq!(outcome(&c), Ok(()));
    }

    #[test]
    fn failure_reason_fails_only_that_message() {
        let mut core = up(10);
        let a = publish(&mut core, QoS::AtLeastOnce);
        core.on_event(Ev::OutPublish(1));
        let b = publish(&mut core, QoS::AtLeastOnce);
        core.on_event(Ev::OutPublish(2));
        core.on_event(Ev::PubAck {
            pkid: 1,
            reason: 0x87,
        });
        core.on_event(Ev::PubAck { pkid: 2, reason: 0 });
        let err = outcome(&a).unwrap_err();
        assert_eq!(err.code, ErrorCode::BrokerRejected);
        assert_eq!(err.reason_code, Some(0x87));
        assert_eq!(outcome(&b), Ok(()));
    }

    #[test]
    fn acks_leave_in_arrival_order() {
        let mut core = up(10);
        for pkid in [7, 8, 9] {
            deliver(&mut core, pkid, QoS::AtLeastOnce);
        }
        let ids: Vec<u64> = core.take_ready(10).iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        core.ack(&[3]);
        assert!(core.outlet.0.is_empty(), "3 waits for 1 and 2");
        core.ack(&[1]);
        assert_eq!(
            core.outlet.0,
            vec![Req::Ack {
                pkid: 7,
                qos: QoS::AtLeastOnce
            }]
        );
        core.ack(&[2, 2, 99]);
        let pkids: Vec<u16> = core
            .outlet
            .0
            .iter()
            .map(|r| match r {
                Req::Ack { pkid, .. } => *pkid,
                _ => 0,
            })
            .collect();
        assert_eq!(pkids, vec![7, 8, 9]);
    }

    #[test]
    fn lost_connection_voids_deliveries_and_publishes_wait_for_their_resend() {
        let mut core = up(10);
        deliver(&mut core, 1, QoS::AtLeastOnce);
        deliver(&mut core, 0, QoS::AtMostOnce);
        let a = publish(&mut core, QoS::AtLeastOnce);
        core.on_event(Ev::OutPublish(1));
        core.on_connection_lost(Instant::now(), &[Resend::Publish(1)], Vec::new());
        assert!(
            a.peek(0).is_none(),
            "an in-flight publish waits for its resend"
        );
        // Only the QoS 0 delivery survives; acking id 1 sends nothing.
        let ready = core.take_ready(10);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].qos, QoS::AtMostOnce);
        core.ack(&[1]);
        // The same pkid on the new connection is another message.
        reconnect(&mut core, true);
        deliver(&mut core, 1, QoS::AtLeastOnce);
        let before = core.outlet.0.len();
        core.ack(&[1]);
        assert_eq!(
            core.outlet.0.len(),
            before,
            "stale id 1 must not ack pkid 1"
        );
        // The resend's pkid stays taken until its ack, which ends the
        // waiting publish's flow.
        let b = publish(&mut core, QoS::AtLeastOnce);
        assert_eq!(core.handed.len(), 0, "pkid 1 is the resend's until acked");
        core.on_event(Ev::OutPublish(1));
        assert!(a.peek(0).is_none());
        core.on_event(Ev::PubAck { pkid: 1, reason: 0 });
        assert_eq!(outcome(&a), Ok(()));
        assert_eq!(core.handed.len(), 1);
        core.on_event(Ev::OutPublish(1));
        core.on_event(Ev::PubAck { pkid: 1, reason: 0 });
        assert_eq!(outcome(&b), Ok(()));
    }

    fn reconnect(core: &mut Core<Recorder>, session_present: bool) {
        let mut info = ConnAckInfo {
            caps: Capabilities::defaults(MqttVersion::V5),
            receive_max: None,
        };
        info.caps.session_present = session_present;
        core.on_event(Ev::ConnAck(info));
    }

    fn published(core: &Core<Recorder>) -> usize {
        core.outlet
            .0
            .iter()
            .filter(|r| matches!(r, Req::Publish(_)))
            .count()
    }

    #[test]
    fn unwritten_publishes_are_handed_again_in_order_after_a_reconnect() {
        let mut core = up(10);
        let (batch, entries) = Batch::new(3);
        for (entry, qos) in
            entries
                .into_iter()
                .zip([QoS::AtLeastOnce, QoS::AtMostOnce, QoS::ExactlyOnce])
        {
            core.submit_publish(message(qos), entry);
        }
        core.pump();
        assert_eq!(published(&core), 3);
        // None was written; rumqttc gives back the second only (the others
        // could not be taken back).
        core.on_connection_lost(
            Instant::now(),
            &[],
            vec![None, Some(message(QoS::AtMostOnce)), None],
        );
        assert_eq!(
            batch.peek(0).unwrap().unwrap_err().code,
            ErrorCode::ConnectionFailed
        );
        assert!(batch.peek(1).is_none());
        // A publish asked during the outage waits behind it.
        let later = publish(&mut core, QoS::AtLeastOnce);
        assert_eq!(published(&core), 3, "nothing is handed while down");
        reconnect(&mut core, false);
        assert_eq!(published(&core), 5);
        core.on_event(Ev::OutPublish(0));
        assert_eq!(batch.peek(1), Some(Ok(())));
        core.on_event(Ev::OutPublish(1));
        core.on_event(Ev::PubAck { pkid: 1, reason: 0 });
        assert_eq!(outcome(&later), Ok(()));
    }

    #[test]
    fn a_new_session_fails_the_publishes_in_flight() {
        let mut core = up(10);
        let a = publish(&mut core, QoS::ExactlyOnce);
        core.on_event(Ev::OutPublish(1));
        core.on_event(Ev::PubRec { pkid: 1, reason: 0 });
        core.on_connection_lost(Instant::now(), &[Resend::Release(1)], Vec::new());
        assert!(a.peek(0).is_none());
        reconnect(&mut core, false);
        let e = outcome(&a).unwrap_err();
        assert_eq!(e.code, ErrorCode::ConnectionFailed);
        assert!(e.message.contains("new session"), "{}", e.message);
        // The identifier is free again.
        let b = publish(&mut core, QoS::AtLeastOnce);
        core.on_event(Ev::OutPublish(1));
        core.on_event(Ev::PubAck { pkid: 1, reason: 0 });
        assert_eq!(outcome(&b), Ok(()));
    }

    #[test]
    fn a_qos2_release_resumes_after_a_reconnect() {
        let mut core = up(10);
        let a = publish(&mut core, QoS::ExactlyOnce);
        core.on_event(Ev::OutPublish(1));
        core.on_event(Ev::PubRec { pkid: 1, reason: 0 });
        core.on_connection_lost(Instant::now(), &[Resend::Release(1)], Vec::new());
        reconnect(&mut core, true);
        assert!(a.peek(0).is_none());
        core.on_event(Ev::PubComp { pkid: 1, reason: 0 });
        assert_eq!(outcome(&a), Ok(()));
    }

    #[test]
    fn an_outage_longer_than_the_send_timeout_fails_what_waits() {
        let mut core = up(10);
        let written = publish(&mut core, QoS::AtLeastOnce);
        core.on_event(Ev::OutPublish(1));
        let unwritten = publish(&mut core, QoS::AtLeastOnce);
        let lost_at = Instant::now();
        core.on_connection_lost(
            lost_at,
            &[Resend::Publish(1)],
            vec![Some(message(QoS::AtLeastOnce))],
        );
        let due = core.send_deadline().unwrap();
        assert_eq!(due, lost_at + Duration::from_secs(30));
        // A failed reconnect attempt does not restart the clock.
        core.on_connection_lost(
            lost_at + Duration::from_secs(5),
            &[Resend::Publish(1)],
            Vec::new(),
        );
        assert_eq!(core.send_deadline(), Some(due));
        core.on_send_deadline(due - Duration::from_millis(1));
        assert!(written.peek(0).is_none() && unwritten.peek(0).is_none());
        core.on_send_deadline(due);
        let e = outcome(&written).unwrap_err();
        assert_eq!(e.code, ErrorCode::Timeout);
        assert!(
            e.message.starts_with("sent but not acknowledged"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("send_timeout_ms (30000 ms)"),
            "{}",
            e.message
        );
        let e = outcome(&unwritten).unwrap_err();
        assert_eq!(e.code, ErrorCode::Timeout);
        assert!(e.message.starts_with("not sent"), "{}", e.message);
        // Until the connection is back, a publish fails at once.
        let refused = publish(&mut core, QoS::AtLeastOnce);
        assert_eq!(outcome(&refused).unwrap_err().code, ErrorCode::Timeout);
        assert_eq!(core.send_deadline(), None);
        // The resend's late ack belongs to nobody.
        reconnect(&mut core, true);
        core.on_event(Ev::OutPublish(1));
        core.on_event(Ev::PubAck { pkid: 1, reason: 0 });
        let after = publish(&mut core, QoS::AtLeastOnce);
        core.on_event(Ev::OutPublish(1));
        core.on_event(Ev::PubAck { pkid: 1, reason: 0 });
        assert_eq!(outcome(&after), Ok(()));
    }

    #[test]
    fn a_qos2_delivery_sent_again_after_a_lost_pubrec_is_not_delivered_twice() {
        let mut core = up(10);
        deliver(&mut core, 7, QoS::ExactlyOnce);
        let id = core.take_ready(1)[0].id;
        assert_eq!(core.ack(&[id]), 0);
        assert_eq!(core.awaiting_release(), vec![7]);
        // The PUBREC is lost with the connection; the session resumes and
        // the broker sends the PUBLISH again.
        core.on_connection_lost(Instant::now(), &[], Vec::new());
        reconnect(&mut core, true);
        let before = core.outlet.0.len();
        assert!(!deliver(&mut core, 7, QoS::ExactlyOnce));
        assert!(!core.has_ready(), "not delivered twice");
        assert_eq!(
            core.outlet.0[before..],
            [Req::Ack {
                pkid: 7,
                qos: QoS::ExactlyOnce
            }]
        );
        // Released: the identifier names a new message from now on.
        core.on_event(Ev::PubRel { pkid: 7 });
        assert!(deliver(&mut core, 7, QoS::ExactlyOnce));
        // A new session forgets what waited for release.
        let id = core.take_ready(1)[0].id;
        core.ack(&[id]);
        core.on_connection_lost(Instant::now(), &[], Vec::new());
        reconnect(&mut core, false);
        assert!(core.awaiting_release().is_empty());
    }

    #[test]
    fn acking_a_delivery_of_a_lost_connection_says_it_was_not_acked() {
        let mut core = up(10);
        for pkid in [1, 2] {
            deliver(&mut core, pkid, QoS::AtLeastOnce);
        }
        let ids: Vec<u64> = core.take_ready(2).iter().map(|m| m.id).collect();
        core.on_connection_lost(Instant::now(), &[], Vec::new());
        reconnect(&mut core, true);
        deliver(&mut core, 1, QoS::AtLeastOnce);
        let again = core.take_ready(1)[0].id;
        let before = core.outlet.0.len();
        assert_eq!(core.ack(&[ids[0], ids[1], again]), 2);
        assert_eq!(
            core.outlet.0[before..],
            [Req::Ack {
                pkid: 1,
                qos: QoS::AtLeastOnce
            }]
        );
        // Said once: the same ids again are simply unknown.
        assert_eq!(core.ack(&ids), 0);
    }

    #[test]
    fn a_resent_pubrel_the_broker_had_completed_is_done() {
        let mut core = up(10);
        let a = publish(&mut core, QoS::ExactlyOnce);
        core.on_event(Ev::OutPublish(1));
        core.on_event(Ev::PubRec { pkid: 1, reason: 0 });
        // The broker completed the flow; its PUBCOMP was lost with the
        // connection, so it does not know the identifier any more.
        core.on_connection_lost(Instant::now(), &[Resend::Release(1)], Vec::new());
        reconnect(&mut core, true);
        core.on_event(Ev::PubComp {
            pkid: 1,
            reason: 0x92,
        });
        assert_eq!(outcome(&a), Ok(()));
        // On the same connection 0x92 is a failure.
        let b = publish(&mut core, QoS::ExactlyOnce);
        core.on_event(Ev::OutPublish(1));
        core.on_event(Ev::PubRec { pkid: 1, reason: 0 });
        core.on_event(Ev::PubComp {
            pkid: 1,
            reason: 0x92,
        });
        assert_eq!(outcome(&b).unwrap_err().code, ErrorCode::BrokerRejected);
    }

    /// Acks `pkid` (a fresh delivery) and waits for it to settle.
    fn commit(
        core: &mut Core<Recorder>,
        pkid: u16,
        qos: QoS,
    ) -> oneshot::Receiver<Result<(), Error>> {
        commit_all(core, &[(pkid, qos)])
    }

    /// Acks fresh deliveries, in one commit, and waits for them to settle.
    fn commit_all(
        core: &mut Core<Recorder>,
        deliveries: &[(u16, QoS)],
    ) -> oneshot::Receiver<Result<(), Error>> {
        for &(pkid, qos) in deliveries {
            deliver(core, pkid, qos);
        }
        let ids: Vec<u64> = core
            .take_ready(deliveries.len())
            .iter()
            .map(|m| m.id)
            .collect();
        core.ack(&ids);
        let (tx, rx) = oneshot::channel();
        core.when_acks_settled(tx);
        rx
    }

    #[test]
    fn a_commit_waits_until_the_broker_releases_its_pubrecs() {
        let mut core = up(10);
        let mut rx = commit_all(&mut core, &[(1, QoS::AtLeastOnce), (2, QoS::ExactlyOnce)]);
        assert!(rx.try_recv().is_err(), "the broker may not have the PUBREC");
        core.on_event(Ev::PubRel { pkid: 2 });
        assert_eq!(rx.try_recv().unwrap(), Ok(()));
    }

    #[test]
    fn a_commit_does_not_wait_for_a_later_delivery_that_reuses_a_released_id() {
        let mut core = up(10);
        let mut first = commit_all(&mut core, &[(5, QoS::ExactlyOnce), (6, QoS::ExactlyOnce)]);
        core.on_event(Ev::PubRel { pkid: 5 });
        // The broker reuses the released id for the next delivery.
        let mut second = commit(&mut core, 5, QoS::ExactlyOnce);
        core.on_event(Ev::PubRel { pkid: 6 });
        assert_eq!(
            first.try_recv().unwrap(),
            Ok(()),
            "its own PUBRECs are released"
        );
        assert!(second.try_recv().is_err(), "the reused id's PUBREC is not");
        core.on_event(Ev::PubRel { pkid: 5 });
        assert_eq!(second.try_recv().unwrap(), Ok(()));
    }

    #[test]
    fn a_commit_ahead_of_an_earlier_delivery_is_settled_with_that_ones_commit() {
        let mut core = up(10);
        deliver(&mut core, 1, QoS::ExactlyOnce);
        deliver(&mut core, 2, QoS::ExactlyOnce);
        let ids: Vec<u64> = core.take_ready(2).iter().map(|m| m.id).collect();
        core.ack(&ids[1..]);
        let (tx, mut ahead) = oneshot::channel();
        core.when_acks_settled(tx);
        // Waiting here would hang a pipeline that commits the earlier one
        // after this call returns.
        assert_eq!(ahead.try_recv().unwrap(), Ok(()), "nothing was sent");
        assert!(core.outlet.0.is_empty(), "its PUBREC waits for the first");
        core.ack(&ids[..1]);
        let (tx, mut both) = oneshot::channel();
        core.when_acks_settled(tx);
        core.on_event(Ev::PubRel { pkid: 1 });
        assert!(both.try_recv().is_err(), "the later PUBREC is not released");
        core.on_event(Ev::PubRel { pkid: 2 });
        assert_eq!(both.try_recv().unwrap(), Ok(()));
    }

    #[test]
    fn a_commit_of_qos1_deliveries_returns_at_once() {
        let mut core = up(10);
        let mut rx = commit(&mut core, 3, QoS::AtLeastOnce);
        // A crash before the PUBACK is written brings it again: QoS 1.
        assert_eq!(rx.try_recv().unwrap(), Ok(()));
    }

    #[test]
    fn a_pubrec_lost_with_its_connection_waits_for_the_next_one() {
        // Released: the broker had the PUBREC.
        let mut core = up(10);
        let mut rx = commit(&mut core, 4, QoS::ExactlyOnce);
        core.on_connection_lost(Instant::now(), &[], Vec::new());
        assert!(rx.try_recv().is_err(), "reporting it failed would lose it");
        reconnect(&mut core, true);
        core.on_event(Ev::PubRel { pkid: 4 });
        assert_eq!(rx.try_recv().unwrap(), Ok(()));
        // Sent again: the PUBREC goes out again, and the PUBREL it brings
        // settles it.
        let mut rx = commit(&mut core, 5, QoS::ExactlyOnce);
        core.on_connection_lost(Instant::now(), &[], Vec::new());
        reconnect(&mut core, true);
        assert!(
            !deliver(&mut core, 5, QoS::ExactlyOnce),
            "not delivered twice"
        );
        assert!(rx.try_recv().is_err());
        core.on_event(Ev::PubRel { pkid: 5 });
        assert_eq!(rx.try_recv().unwrap(), Ok(()));
        // A new session: the broker forgot it and sends it no more.
        let mut rx = commit(&mut core, 6, QoS::ExactlyOnce);
        core.on_connection_lost(Instant::now(), &[], Vec::new());
        reconnect(&mut core, false);
        assert_eq!(rx.try_recv().unwrap(), Ok(()));
    }

    #[test]
    fn a_pubrec_lost_with_its_connection_fails_at_the_send_timeout() {
        let mut core = up(10);
        let mut rx = commit(&mut core, 7, QoS::ExactlyOnce);
        let lost = Instant::now();
        core.on_connection_lost(lost, &[], Vec::new());
        core.on_send_deadline(lost + Duration::from_secs(31));
        let error = rx.try_recv().unwrap().unwrap_err();
        assert_eq!(error.code, ErrorCode::Timeout);
        assert!(
            error.message.contains("send_timeout_ms"),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_zero_send_timeout_fails_at_the_loss() {
        let mut core = Core::new(Recorder::default(), MqttVersion::V5, 10, Duration::ZERO);
        reconnect(&mut core, false);
        let a = publish(&mut core, QoS::AtLeastOnce);
        core.on_event(Ev::OutPublish(1));
        core.on_connection_lost(Instant::now(), &[Resend::Publish(1)], Vec::new());
        assert_eq!(outcome(&a).unwrap_err().code, ErrorCode::ConnectionFailed);
    }

    #[test]
    fn new_session_restores_subscriptions_first() {
        let mut core = up(10);
        let (tx, mut rx) = oneshot::channel();
        let sub = Subscription {
            filter: "a/#".parse().unwrap(),
            qos: QoS::AtLeastOnce,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        };
        core.submit_subscribe(vec![sub.clone()], tx);
        core.on_event(Ev::OutSubscribe(1));
        core.on_event(Ev::SubAck {
            pkid: 1,
            codes: vec![1],
        });
        let granted = rx.try_recv().unwrap().unwrap();
        assert_eq!(granted[0].qos, Some(QoS::AtLeastOnce));
        core.on_connection_lost(Instant::now(), &[], Vec::new());
        core.on_event(Ev::ConnAck(ConnAckInfo {
            caps: Capabilities::defaults(MqttVersion::V5),
            receive_max: Some(5),
        }));
        assert_eq!(core.outlet.0.last(), Some(&Req::Subscribe(vec![sub])));
    }

    #[test]
    fn qos0_overflow_is_dropped_and_counted() {
        let mut core = up(10);
        for _ in 0..QOS0_QUEUE_LIMIT + 3 {
            deliver(&mut core, 0, QoS::AtMostOnce);
        }
        assert_eq!(core.dropped_qos0(), 3);
        assert_eq!(core.take_ready(usize::MAX).len(), QOS0_QUEUE_LIMIT);
    }

    #[test]
    fn packet_size_counts_header_and_properties() {
        let mut m = message(QoS::AtLeastOnce);
        // 1 + 1 + (2 + 1 + 2 + 1) on 3.1.1
        assert_eq!(m.packet_size(MqttVersion::V311), 8);
        m.properties.content_type = Some("ab".into());
        // + property length (1) + 3 + 2
        assert_eq!(m.packet_size(MqttVersion::V5), 8 + 1 + 5);
    }
}
