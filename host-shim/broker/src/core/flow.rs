//! Flow control for slow subscribers (`queue_full = "slow_publisher"`):
//! instead of dropping a QoS 1 or 2 message for a connected session whose
//! queue is full, the core queues it over the limit and holds back the
//! publisher's PUBACK or PUBREC until that queue is back within its limits,
//! or its client has gone. The publisher's window fills and it stops
//! sending, so the slowness reaches it and nothing is lost.
//!
//! - A connection's acknowledgements leave in the order its PUBLISHes came
//!   (MQTT-4.6.0-2/-3): once one is held, the ones after it wait behind it,
//!   whatever they answer (refusals too).
//! - At most `receive_maximum` are held per connection, the number a 5.0
//!   client may have unacknowledged anyway. Beyond that a PUBLISH may not go
//!   over any limit (a full queue drops it, as with `"drop"`) and its
//!   acknowledgement is sent at once, so what a queue holds over its limits
//!   is bounded by connections × `receive_maximum` messages.
//! - Sessions whose client is away are not waited for: a full queue drops
//!   as with `"drop"`.
//! - A PUBLISH resent while its acknowledgement is held is answered by that
//!   one acknowledgement, and never goes over a limit.

use super::{Action, Broker, ConnId};
use crate::config::QueueFullPolicy;
use crate::session::Queued;
use crate::types::SessionId;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Instant;

/// The held acknowledgements and what they wait for.
#[derive(Debug, Default)]
pub(super) struct Flow {
    /// Per publishing connection, its acknowledgements held back, in the
    /// order of their PUBLISHes. No entry when none is held.
    held: HashMap<ConnId, VecDeque<HeldAck>>,
    /// Per session over its queue limits, the connections with a held
    /// acknowledgement waiting for it. Ordered, so that releases come out
    /// in the same order on every run.
    waiters: HashMap<SessionId, BTreeSet<ConnId>>,
    /// While a QoS 1 or 2 PUBLISH whose acknowledgement may be held is
    /// routed: the sessions it was queued over the limits of.
    routing: Option<Vec<SessionId>>,
}

/// A PUBACK or PUBREC held back.
#[derive(Debug)]
struct HeldAck {
    packet: Packet,
    /// Sessions still over their limits that it waits for; it leaves once
    /// this is empty and every acknowledgement before it has left.
    waits_for: Vec<SessionId>,
}

impl Flow {
    /// Whether nothing is held or waited for.
    #[cfg(test)]
    pub(super) fn is_idle(&self) -> bool {
        self.held.is_empty() && self.waiters.is_empty()
    }

    /// Whether routing may queue `queued` over a full queue's limits.
    pub(super) fn may_go_over(&self, queued: &Queued) -> bool {
        self.routing.is_some() && queued.qos != QoS::AtMostOnce
    }

    /// The message being routed was queued over the limits of `session`.
    pub(super) fn went_over(&mut self, session: SessionId) {
        if let Some(over) = self.routing.as_mut() {
            over.push(session);
        }
    }
}

/// The packet identifier of a PUBACK or PUBREC, with which of the two it is.
fn ack_id(packet: &Packet) -> Option<(bool, u16)> {
    match packet {
        Packet::PubAck(ack) => Some((false, ack.pkid)),
        Packet::PubRec(rec) => Some((true, rec.pkid)),
        _ => None,
    }
}

impl Broker {
    /// Starts routing a PUBLISH with packet identifier `pkid` from `conn`:
    /// with `"slow_publisher"`, a QoS 1 or 2 one may go over full queues
    /// unless `conn` holds as many acknowledgements as it may, or already
    /// holds this one's (a resend). End with [`Broker::end_routing`].
    pub(super) fn begin_routing(&mut self, conn: ConnId, qos: QoS, pkid: u16) {
        let cap = usize::from(self.config.receive_maximum);
        let held = self.flow.held.get(&conn);
        let may = self.config.queue_full == QueueFullPolicy::SlowPublisher
            && qos != QoS::AtMostOnce
            && held.is_none_or(|held| {
                let id = Some((qos == QoS::ExactlyOnce, pkid));
                held.len() < cap && !held.iter().any(|h| ack_id(&h.packet) == id)
            });
        self.flow.routing = may.then(Vec::new);
    }

    /// The sessions the PUBLISH routed since [`Broker::begin_routing`] went
    /// over the limits of: its acknowledgement waits for them.
    pub(super) fn end_routing(&mut self) -> Vec<SessionId> {
        self.flow.routing.take().unwrap_or_default()
    }

    /// Sends `ack` (a PUBACK or PUBREC) to `conn`, or holds it back while it
    /// waits for the sessions in `waits_for` or behind another held one.
    pub(super) fn acknowledge(
        &mut self,
        now: Instant,
        conn: ConnId,
        ack: Packet,
        waits_for: Vec<SessionId>,
    ) {
        let held = self.flow.held.get(&conn);
        if waits_for.is_empty() && held.is_none() {
            self.send(conn, ack);
            return;
        }
        if let Some(held) = held {
            let id = ack_id(&ack);
            if held.iter().any(|h| ack_id(&h.packet) == id) {
                // A resend of a PUBLISH whose acknowledgement is held: that
                // one answers both.
                return;
            }
            if held.len() >= usize::from(self.config.receive_maximum) {
                // More unacknowledged than the client may have: bounded
                // memory before order (see the module documentation).
                self.send(conn, ack);
                return;
            }
        }
        for &session in &waits_for {
            self.flow.waiters.entry(session).or_default().insert(conn);
        }
        self.stats.acks_held += 1;
        let held = self.flow.held.entry(conn).or_default();
        let first = held.is_empty();
        held.push_back(HeldAck {
            packet: ack,
            waits_for,
        });
        if first {
            self.held_episode(now, conn);
        }
    }

    /// Counts and logs (rate-limited) the start of a connection's
    /// acknowledgements being held.
    fn held_episode(&mut self, now: Instant, conn: ConnId) {
        self.stats.held_episodes += 1;
        let total = self.stats.held_episodes;
        let name = |session: Option<&SessionId>| {
            session
                .and_then(|s| self.sessions.get(s))
                .map_or("", |s| s.client_id.as_str())
        };
        let publisher = name(self.conns.get(&conn).and_then(|c| c.session.as_ref()));
        let subscriber = name(
            self.flow
                .held
                .get(&conn)
                .and_then(|held| held.front())
                .and_then(|h| h.waits_for.first()),
        );
        let (max_messages, max_bytes) = (
            self.config.max_queued_messages,
            self.config.max_queued_bytes,
        );
        self.logs.publisher_held.log(now, |suppressed| {
            tracing::info!(
                publisher,
                subscriber,
                max_messages,
                max_bytes,
                total,
                suppressed,
                "subscriber queue full: publisher's acknowledgements held until it drains"
            )
        });
    }

    /// `session` no longer holds anything back: its queue is within its
    /// limits again, its client disconnected, or it ended. Sends, in order,
    /// the acknowledgements left waiting for nothing.
    pub(super) fn release_held(&mut self, session: SessionId) {
        if self.flow.waiters.is_empty() {
            return;
        }
        let Some(conns) = self.flow.waiters.remove(&session) else {
            return;
        };
        for conn in conns {
            let Some(held) = self.flow.held.get_mut(&conn) else {
                continue;
            };
            for h in held.iter_mut() {
                h.waits_for.retain(|&s| s != session);
            }
            while held.front().is_some_and(|h| h.waits_for.is_empty()) {
                if let Some(h) = held.pop_front() {
                    self.actions.push_back(Action::Send(conn, h.packet));
                }
            }
            if held.is_empty() {
                self.flow.held.remove(&conn);
            }
        }
    }

    /// Forgets what `conn`, now gone, had held: nothing is sent to it.
    pub(super) fn forget_held(&mut self, conn: ConnId) {
        let Some(held) = self.flow.held.remove(&conn) else {
            return;
        };
        for h in held {
            for session in h.waits_for {
                if let Some(conns) = self.flow.waiters.get_mut(&session) {
                    conns.remove(&conn);
                    if conns.is_empty() {
                        self.flow.waiters.remove(&session);
                    }
                }
            }
        }
    }
}
