//! The end of a connection: DISCONNECT from the client, a close for a
//! protocol violation or a takeover, a transport lost; the session left
//! behind ends or waits for its expiry, and the will is sent or scheduled.

use super::timers::Timer;
use super::{Action, Broker, ConnId};
use crate::session::Session;
use crate::types::SessionId;
use mqtt_topic::MqttVersion;
use rumqttc::v5::mqttbytes::v5::{Disconnect, DisconnectReasonCode, Packet};
use std::collections::HashMap;
use std::time::{Duration, Instant};

impl Broker {
    pub(super) fn handle_disconnect(
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
    pub(super) fn disconnect(&mut self, now: Instant, conn: ConnId, reason: DisconnectReasonCode) {
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
    pub(super) fn drop_connection(&mut self, now: Instant, conn: ConnId, publish_will: bool) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.forget_held(conn);
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
        // Publishers do not wait for a client that is away.
        self.release_held(session_id);
        self.journal_parked(now, session_id);

        if let Some(will) = will {
            let delay = will
                .will
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
                self.session_mut(session_id).pending_will = Some(will);
                self.schedule(due, Timer::Will(session_id, generation));
            }
        }

        if expiry == 0 {
            self.end_session(now, session_id);
            return;
        }
        if expiry != u32::MAX {
            self.schedule(
                now + Duration::from_secs(u64::from(expiry)),
                Timer::SessionExpiry(session_id, generation),
            );
        }
        self.parked.push_back((session_id, generation));
        self.evict_parked(now);
    }

    /// Ends the sessions parked longest while more than
    /// `max_parked_sessions` are parked.
    pub(super) fn evict_parked(&mut self, now: Instant) {
        let max = self.config.max_parked_sessions;
        let is_parked = |sessions: &HashMap<SessionId, Session>,
                         (id, generation): (SessionId, u64)| {
            sessions
                .get(&id)
                .is_some_and(|s| s.conn.is_none() && s.generation == generation)
        };
        // Every connected session has a connection; the rest are parked.
        let parked = self.sessions.len().saturating_sub(self.conns.len());
        if max > 0 {
            let mut over = parked.saturating_sub(max);
            while over > 0 {
                let Some(entry) = self.parked.pop_front() else {
                    break;
                };
                if !is_parked(&self.sessions, entry) {
                    continue;
                }
                over -= 1;
                self.stats.sessions_evicted += 1;
                let total = self.stats.sessions_evicted;
                if let Some(session) = self.sessions.get(&entry.0) {
                    let client_id = &session.client_id;
                    self.logs.session_evicted.log(now, |suppressed| {
                        tracing::warn!(
                            client_id,
                            max,
                            total,
                            suppressed,
                            "parked session ended: max_parked_sessions reached"
                        )
                    });
                }
                self.end_session(now, entry.0);
            }
        }
        // Sessions resumed or ended leave stale entries: drop them once
        // they outnumber the live ones, so the list stays in proportion.
        if self.parked.len() > 2 * parked + 64 {
            let sessions = &self.sessions;
            self.parked.retain(|&entry| is_parked(sessions, entry));
        }
    }
}
