//! PUBLISH: inbound messages and their QoS 1 and 2 flows, the flows of
//! messages to clients, routing to subscriptions, and delivery: sent now,
//! queued, or transmitted from the queue as the in-flight window frees up.

use super::retained::Step;
use super::{Action, Broker, ConnId};
use crate::session::{Inflight, Message, QueueLimits, Queued, SharedDelivery};
use crate::types::SessionId;
use bytes::Bytes;
use mqtt_topic::{MqttVersion, TopicFilter, TopicName};
use rumqttc::v5::mqttbytes::v5::{
    DisconnectReasonCode, Packet, PubAck, PubAckReason, PubComp, PubCompReason, PubRec,
    PubRecReason, PubRel, Publish, PublishProperties,
};
use rumqttc::v5::mqttbytes::QoS;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Broker {
    pub(super) fn handle_publish(
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
        let alias = publish
            .properties
            .as_mut()
            .and_then(|p| p.topic_alias.take());
        if alias.is_some_and(|alias| alias == 0 || alias > self.config.topic_alias_maximum) {
            // MQTT-3.3.2-8 / -9.
            self.disconnect(now, conn, DisconnectReasonCode::TopicAliasInvalid);
            return;
        }
        let topic = match alias {
            Some(alias) if publish.topic.is_empty() => match c.aliases.get(&alias) {
                Some(topic) => {
                    publish.topic = Bytes::copy_from_slice(topic.as_str().as_bytes());
                    topic.clone()
                }
                None => {
                    self.disconnect(now, conn, DisconnectReasonCode::ProtocolError);
                    return;
                }
            },
            // 5.0 section 3.3.2.3.4: a zero-length Topic Name without a
            // Topic Alias is a Protocol Error (3.1.1: an invalid topic).
            None if publish.topic.is_empty() && version == MqttVersion::V5 => {
                self.disconnect(now, conn, DisconnectReasonCode::ProtocolError);
                return;
            }
            _ => match TopicName::from_bytes(&publish.topic) {
                Ok(topic) => {
                    if let Some(alias) = alias {
                        c.aliases.insert(alias, topic.clone());
                    }
                    topic
                }
                // MQTT-3.3.2-2: no wildcards in a topic name; MQTT-4.7.3-1:
                // not empty.
                Err(_) => {
                    self.disconnect(now, conn, DisconnectReasonCode::TopicNameInvalid);
                    return;
                }
            },
        };
        if self.too_many_levels(topic.as_str()) {
            // Beyond `max_topic_levels`: a topic this broker does not take.
            self.disconnect(now, conn, DisconnectReasonCode::TopicNameInvalid);
            return;
        }
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
        if self.config.memory_limit > 0 && self.gauge.get() > self.config.memory_limit {
            self.refuse_for_memory(now, conn, version, &publish);
            return;
        }
        let allowed = self.session_mut(session).may_write(topic.as_str());
        if !allowed && version == MqttVersion::V5 {
            // Refused, and the QoS flow ends here (MQTT-3.3.4-8).
            match publish.qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => {
                    let mut ack = PubAck::new(pkid, None);
                    ack.reason = PubAckReason::NotAuthorized;
                    self.acknowledge(now, conn, Packet::PubAck(ack), Vec::new());
                }
                QoS::ExactlyOnce => {
                    let mut rec = PubRec::new(pkid, None);
                    rec.reason = PubRecReason::NotAuthorized;
                    self.acknowledge(now, conn, Packet::PubRec(rec), Vec::new());
                }
            }
            return;
        }
        match publish.qos {
            QoS::ExactlyOnce => {
                let receive_maximum = usize::from(self.config.receive_maximum);
                let s = self.session_mut(session);
                if s.incoming_qos2.contains(&pkid) {
                    // A resent PUBLISH whose PUBREL has not come: it was
                    // already routed, only acknowledge (MQTT-4.3.3-9/-10).
                    let rec = Packet::PubRec(PubRec::new(pkid, None));
                    self.acknowledge(now, conn, rec, Vec::new());
                    return;
                }
                if version == MqttVersion::V5 && s.incoming_qos2.len() >= receive_maximum {
                    // MQTT-3.3.4-9 (5.0): more than Receive Maximum unacknowledged.
                    self.disconnect(now, conn, DisconnectReasonCode::ReceiveMaximumExceeded);
                    return;
                }
                s.incoming_qos2.insert(pkid);
                self.journal_incoming(session, pkid, true);
            }
            QoS::AtLeastOnce | QoS::AtMostOnce => {}
        }

        let qos = publish.qos;
        // 3.1.1 cannot say no: a refused message is acknowledged as usual
        // and dropped, as Mosquitto does.
        self.begin_routing(conn, qos, pkid);
        let delivered = if allowed {
            self.publish_message(now, session, &topic, publish)
        } else {
            0
        };
        let waits_for = self.end_routing();

        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                let mut ack = PubAck::new(pkid, None);
                if version == MqttVersion::V5 && delivered == 0 {
                    ack.reason = PubAckReason::NoMatchingSubscribers;
                }
                self.acknowledge(now, conn, Packet::PubAck(ack), waits_for);
            }
            QoS::ExactlyOnce => {
                let mut rec = PubRec::new(pkid, None);
                if version == MqttVersion::V5 && delivered == 0 {
                    rec.reason = PubRecReason::NoMatchingSubscribers;
                }
                self.acknowledge(now, conn, Packet::PubRec(rec), waits_for);
            }
        }
    }

    /// A PUBLISH refused because `memory_limit` is reached: 5.0 gets PUBACK
    /// or PUBREC 0x97 Quota exceeded (QoS 0 is dropped); 3.1.1, which
    /// cannot be told, is acknowledged as usual and dropped.
    fn refuse_for_memory(
        &mut self,
        now: Instant,
        conn: ConnId,
        version: MqttVersion,
        publish: &Publish,
    ) {
        self.stats.refused_memory_limit += 1;
        let (total, held, limit) = (
            self.stats.refused_memory_limit,
            self.gauge.get(),
            self.config.memory_limit,
        );
        self.logs.memory_full.log(now, |suppressed| {
            tracing::warn!(
                held,
                limit,
                total,
                suppressed,
                "PUBLISH refused: memory_limit reached"
            )
        });
        let v5 = version == MqttVersion::V5;
        let pkid = publish.pkid;
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                let mut ack = PubAck::new(pkid, None);
                if v5 {
                    ack.reason = PubAckReason::QuotaExceeded;
                }
                self.acknowledge(now, conn, Packet::PubAck(ack), Vec::new());
            }
            QoS::ExactlyOnce => {
                let mut rec = PubRec::new(pkid, None);
                // 3.1.1 goes on with PUBREL, answered with PUBCOMP as for
                // any identifier.
                if v5 {
                    rec.reason = PubRecReason::QuotaExceeded;
                }
                self.acknowledge(now, conn, Packet::PubRec(rec), Vec::new());
            }
        }
    }

    /// PUBACK: a QoS 1 message to the client is done and its window slot
    /// free.
    pub(super) fn handle_puback(&mut self, now: Instant, session: SessionId, ack: PubAck) {
        if self.session_mut(session).handle_puback(ack.pkid) {
            self.journal_inflight(session, ack.pkid);
            self.flush_queue(now, session);
        }
    }

    /// PUBREC: a QoS 2 message to the client moves on to PUBREL, or is done
    /// when the client refused it.
    pub(super) fn handle_pubrec(
        &mut self,
        now: Instant,
        conn: ConnId,
        session: SessionId,
        rec: PubRec,
    ) {
        // The two reason codes below 0x80; the enum's discriminants are not
        // the codes.
        let accepted = matches!(
            rec.reason,
            PubRecReason::Success | PubRecReason::NoMatchingSubscribers
        );
        let step = self.session_mut(session).handle_pubrec(rec.pkid, accepted);
        if step.is_some() {
            self.journal_inflight(session, rec.pkid);
        }
        match step {
            Some(true) => self.send(conn, Packet::PubRel(PubRel::new(rec.pkid, None))),
            Some(false) => self.flush_queue(now, session),
            None => {}
        }
    }

    /// PUBCOMP: a QoS 2 message to the client is done and its window slot
    /// free.
    pub(super) fn handle_pubcomp(&mut self, now: Instant, session: SessionId, comp: PubComp) {
        if self.session_mut(session).handle_pubcomp(comp.pkid) {
            self.journal_inflight(session, comp.pkid);
            self.flush_queue(now, session);
        }
    }

    /// PUBREL: a QoS 2 message from the client is done; PUBCOMP answers.
    pub(super) fn handle_pubrel(&mut self, conn: ConnId, session: SessionId, rel: PubRel) {
        let known = self.session_mut(session).incoming_qos2.remove(&rel.pkid);
        let mut comp = PubComp::new(rel.pkid, None);
        if known {
            self.journal_incoming(session, rel.pkid, false);
        } else {
            // MQTT-4.3.3-? : answer anyway so the client's flow ends.
            comp.reason = PubCompReason::PacketIdentifierNotFound;
        }
        self.send(conn, Packet::PubComp(comp));
    }

    /// Stores (if retained) and routes a message from `publisher`; returns
    /// how many sessions it was delivered or queued to.
    pub(super) fn publish_message(
        &mut self,
        now: Instant,
        publisher: SessionId,
        topic: &TopicName,
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
            self.store_retained(now, topic, &publish);
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
                topic.as_str(),
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
            let mut shared = Vec::new();
            while i < matches.len() && matches[i].session == session {
                let o = &matches[i].options;
                granted = max_qos(granted, o.qos);
                retain |= o.retain_as_published;
                ids.extend(o.subscription_id);
                // Kept for QoS 1 and 2 only: a QoS 0 message is never
                // handed to another member. The trie's labels are the
                // filters subscribed with, so they parse.
                if message.publish.qos != QoS::AtMostOnce {
                    let label = matches[i].shared.as_deref();
                    shared.extend(label.and_then(|l| TopicFilter::try_from(l.to_owned()).ok()));
                }
                i += 1;
            }
            if !self
                .sessions
                .get(&session)
                .is_some_and(|s| s.may_read(topic.as_str()))
            {
                continue;
            }
            let queued = Queued {
                qos: min_qos(message.publish.qos, granted),
                // MQTT-3.3.1-9 (3.1.1), MQTT-3.3.1-12/-13 (5.0).
                retain: retain && message.publish.retain,
                message: Arc::clone(&message),
                subscription_ids: ids,
                from_retained: false,
                shared,
            };
            self.deliver(now, session, queued);
            delivered += 1;
        }
        self.matches = matches;
        delivered
    }

    /// Sends a message to a session now if it can, else queues it.
    pub(super) fn deliver(&mut self, now: Instant, session_id: SessionId, queued: Queued) {
        let limits = self.queue_limits();
        // Behind a retained delivery in progress, live messages wait their
        // turn, so that a topic's retained message comes before what was
        // published on it later (MQTT-4.6.0-5 in 5.0, 4.6.0-6 in 3.1.1).
        let behind_cursor = self.cursors.contains_key(&session_id);
        let journaled = self.journaled(session_id);
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
        if online && self.flow.may_go_over(&queued) && !session.has_room_for(&queued, limits) {
            let copy = journaled.then(|| queued.clone());
            session.enqueue_over_limit(queued);
            self.flow.went_over(session_id);
            self.stats.queued_over_limit += 1;
            if let Some(queued) = copy {
                self.journal_enqueued(session_id, queued);
            }
            return;
        }
        let copy = journaled.then(|| queued.clone());
        if session.enqueue(queued, limits).is_err() {
            self.stats.dropped_queue_full += 1;
            let total = self.stats.dropped_queue_full;
            self.logs.queue_full.log(now, |suppressed| {
                tracing::warn!(
                    client_id = %session.client_id,
                    max_messages = limits.messages,
                    max_bytes = limits.bytes,
                    total,
                    suppressed,
                    "session queue full: message dropped"
                )
            });
        } else if let Some(queued) = copy {
            self.journal_enqueued(session_id, queued);
        }
    }

    /// How much one session may queue.
    pub(super) fn queue_limits(&self) -> QueueLimits {
        QueueLimits {
            messages: self.config.max_queued_messages,
            bytes: self.config.max_queued_bytes,
        }
    }

    /// Sends queued messages and steps retained deliveries, in order, while
    /// the client's window has room.
    pub(super) fn flush_queue(&mut self, now: Instant, session_id: SessionId) {
        let limits = self.queue_limits();
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
            let drained = session.within_limits(limits);
            self.journal_dequeued(session_id);
            if let Some(cursors) = self.cursors.get_mut(&session_id) {
                for cursor in cursors {
                    cursor.ahead = cursor.ahead.saturating_sub(1);
                }
            }
            self.transmit(now, session_id, queued);
            if drained {
                self.release_held(session_id);
            }
        }
    }

    /// Writes one message to the session's connection, taking a packet
    /// identifier and a window slot for QoS 1 and 2.
    pub(super) fn transmit(&mut self, now: Instant, session_id: SessionId, queued: Queued) {
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
        let mut sent = None;
        if publish.qos != QoS::AtMostOnce {
            let Some(pkid) = session.next_pkid() else {
                return;
            };
            publish.pkid = pkid;
            let shared = (!queued.shared.is_empty()).then(|| {
                Box::new(SharedDelivery {
                    message: Arc::clone(&queued.message),
                    filters: queued.shared,
                })
            });
            session
                .inflight
                .push_back(Inflight::Publish(publish.clone(), shared));
            sent = Some(pkid);
        }
        session.apply_topic_alias(&mut publish);
        self.stats.sent += 1;
        if queued.from_retained && publish.qos == QoS::AtMostOnce {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.paced += 1;
            }
            self.actions
                .push_back(Action::SendPaced(conn, Packet::Publish(publish)));
        } else {
            self.send(conn, Packet::Publish(publish));
        }
        if let Some(pkid) = sent {
            self.journal_inflight(session_id, pkid);
        }
    }
}

pub(super) fn qos_from(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

pub(super) fn min_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) {
        a
    } else {
        b
    }
}

pub(super) fn max_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) >= (b as u8) {
        a
    } else {
        b
    }
}
