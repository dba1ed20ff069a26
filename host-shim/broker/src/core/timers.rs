//! Timers: keep alive, will delay, session expiry and the sweep of expired
//! retained messages; and what each does when it fires.

use super::{Broker, ConnId};
use crate::session::Will;
use crate::types::SessionId;
use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Publish, PublishProperties};
use std::time::{Duration, Instant};

/// Timers, ordered by due time. Each carries what it needs to tell whether
/// it is still current when it fires; stale ones are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    KeepAlive(ConnId),
    Will(SessionId, u64),
    SessionExpiry(SessionId, u64),
    RetainedSweep,
    /// A session's retained delivery may take its next step (delivery rate).
    RetainedDelivery(SessionId),
}

impl Broker {
    pub(super) fn schedule(&mut self, due: Instant, timer: Timer) {
        self.timers.insert((due, timer));
    }

    /// Sets the sweep timer of expired retained messages unless it is set,
    /// there is nothing to sweep, or `retain.clean_interval` is 0.
    pub(super) fn schedule_sweep(&mut self, now: Instant) {
        let interval = self.config.retain.clean_interval;
        if !self.sweep_scheduled && interval > 0 && !self.retained.is_empty() {
            self.sweep_scheduled = true;
            let due = now + Duration::from_secs(u64::from(interval));
            self.schedule(due, Timer::RetainedSweep);
        }
    }

    pub(super) fn keep_alive_due(&mut self, now: Instant, conn: ConnId) {
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

    pub(super) fn will_due(&mut self, now: Instant, session_id: SessionId, generation: u64) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        if session.generation != generation {
            return;
        }
        if let Some(will) = session.pending_will.take() {
            self.publish_will(now, session_id, will);
        }
    }

    /// A detached session's expiry is due: it ends, unless a connection
    /// took it up again since.
    pub(super) fn session_expiry_due(&mut self, now: Instant, session: SessionId, generation: u64) {
        if self
            .sessions
            .get(&session)
            .is_some_and(|s| s.generation == generation && s.conn.is_none())
        {
            self.end_session(now, session);
        }
    }

    /// Frees the expired retained messages, and sets the next sweep.
    pub(super) fn sweep_due(&mut self, now: Instant) {
        let purged = self.retained.purge_expired(now);
        if purged > 0 {
            tracing::debug!(purged, "expired retained messages swept");
        }
        self.sweep_scheduled = false;
        self.schedule_sweep(now);
    }

    /// Publishes a will as a message from `session_id`.
    pub(super) fn publish_will(&mut self, now: Instant, session_id: SessionId, will: Will) {
        let Will { topic, will } = will;
        let properties = will.properties.map(|p| PublishProperties {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            content_type: p.content_type,
            response_topic: p.response_topic,
            correlation_data: p.correlation_data,
            user_properties: p.user_properties,
            ..PublishProperties::default()
        });
        let mut publish = Publish::new(topic.as_str(), will.qos, will.message, properties);
        publish.retain = will.retain;
        self.publish_message(now, session_id, &topic, publish);
    }

    /// Ends a session: its subscriptions go, what shared subscriptions gave
    /// it and its client did not receive goes to other members, a will
    /// still waiting is sent now, other queued messages are dropped.
    pub(super) fn end_session(&mut self, now: Instant, session_id: SessionId) {
        let Some(mut session) = self.sessions.remove(&session_id) else {
            return;
        };
        self.journal_ended(session_id, &session.client_id);
        self.cursors.remove(&session_id);
        self.release_held(session_id);
        if self.by_client_id.get(&session.client_id) == Some(&session_id) {
            self.by_client_id.remove(&session.client_id);
        }
        for filter in session.subscriptions.keys() {
            self.unroute(session_id, filter);
        }
        self.hand_over_session(now, &mut session);
        if let Some(will) = session.pending_will.take() {
            // The will is published on behalf of a session that is gone,
            // so its publisher cannot match No Local subscriptions.
            self.publish_will(now, 0, will);
        }
        if !session.queue.is_empty() {
            tracing::debug!(
                client_id = %session.client_id,
                queued = session.queue.len(),
                "session expired with queued messages"
            );
        }
    }
}
