//! CONNECT: the checks that refuse it, authentication, the CONNACK and its
//! properties, and the session created, taken over or resumed.

use super::timers::Timer;
use super::{Action, Broker, Conn, ConnId};
use crate::session::{Inflight, Session, Will};
use crate::types::SessionId;
use mqtt_topic::{MqttVersion, TopicName};
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnAckProperties, Connect, ConnectProperties, ConnectReturnCode,
    DisconnectReasonCode, LastWill, Login, Packet, PubRel,
};
use std::collections::HashMap;
use std::time::{Duration, Instant};

impl Broker {
    pub(super) fn handle_connect(
        &mut self,
        now: Instant,
        conn: ConnId,
        version: MqttVersion,
        connect: Connect,
        will: Option<LastWill>,
        login: Option<Login>,
    ) {
        // A certificate's user name replaces the CONNECT's login, and no
        // password is checked (as Mosquitto's `use_identity_as_username`).
        let certified = self.certified.remove(&conn);
        let login = match &certified {
            Some(username) => Some(Login {
                username: username.clone(),
                password: String::new(),
            }),
            None => login,
        };
        if self.conns.contains_key(&conn) {
            // MQTT-3.1.0-2: a second CONNECT is a protocol violation.
            self.disconnect(now, conn, DisconnectReasonCode::ProtocolError);
            return;
        }
        let v5 = version == MqttVersion::V5;
        let props = connect.properties.clone().unwrap_or_default();

        let checked = self.check_connect(
            version,
            &connect,
            &props,
            will,
            login.as_ref(),
            certified.is_some(),
        );
        let will = match checked {
            Ok(will) => will,
            Err(code) => {
                self.refuse_connect(conn, code);
                return;
            }
        };

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

        let username = login.as_ref().map(|l| l.username.as_str());
        let grants = self.auth.grants(&client_id, username);
        if let (Some(grants), Some(will)) = (&grants, &will) {
            if !grants.may_write(will.topic.as_str()) {
                // The ACL is checked when the will is set, as Mosquitto
                // does: a client cannot leave a message where it may not
                // publish.
                tracing::debug!(
                    client_id,
                    topic = will.topic.as_str(),
                    "will refused by the ACL"
                );
                self.refuse_connect(conn, ConnectReturnCode::NotAuthorized);
                return;
            }
        }

        let expiry_interval = if v5 {
            props
                .session_expiry_interval
                .unwrap_or(0)
                .min(self.config.max_session_expiry)
        } else if connect.clean_start {
            0
        } else {
            self.persistent_expiry()
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
            // Within `max_keep_alive`: checked above.
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
            session.grants = grants;
        }
        self.journal_connected(session_id, username);
        self.conns.insert(
            conn,
            Conn {
                version,
                session: Some(session_id),
                keep_alive,
                last_seen: now,
                will,
                aliases: HashMap::new(),
                paced: 0,
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

    /// Checks a CONNECT: the will it carries, its topic parsed, or the
    /// CONNACK code refusing it.
    fn check_connect(
        &self,
        version: MqttVersion,
        connect: &Connect,
        props: &ConnectProperties,
        will: Option<LastWill>,
        login: Option<&Login>,
        certified: bool,
    ) -> Result<Option<Will>, ConnectReturnCode> {
        let v5 = version == MqttVersion::V5;
        // MQTT-3.1.3-8 (3.1.1): an empty id needs a clean session.
        if !v5 && connect.client_id.is_empty() && !connect.clean_start {
            return Err(ConnectReturnCode::ClientIdentifierNotValid);
        }
        let max_keep_alive = self.config.max_keep_alive;
        if !v5 && exceeds(connect.keep_alive, max_keep_alive) {
            // 3.1.1 cannot be told a Server Keep Alive: as Mosquitto does,
            // a longer keep alive (0, none, is the longest) is refused with
            // 0x02 Identifier rejected.
            return Err(ConnectReturnCode::ClientIdentifierNotValid);
        }
        if v5 && props.authentication_method.is_some() {
            // No enhanced authentication method is offered (MQTT-4.12.0-1).
            return Err(ConnectReturnCode::BadAuthenticationMethod);
        }
        if v5 && props.receive_maximum == Some(0) {
            return Err(ConnectReturnCode::ProtocolError);
        }
        if v5 && props.max_packet_size == Some(0) {
            return Err(ConnectReturnCode::ProtocolError);
        }
        if !certified {
            if let Some(code) = self.auth.authenticate(login) {
                return Err(code);
            }
        }
        let Some(will) = will else {
            return Ok(None);
        };
        let Ok(topic) = TopicName::from_bytes(&will.topic) else {
            return Err(ConnectReturnCode::TopicNameInvalid);
        };
        if self.too_many_levels(topic.as_str()) {
            return Err(ConnectReturnCode::TopicNameInvalid);
        }
        if will.qos as u8 > self.config.maximum_qos {
            // MQTT-3.2.2-12 (5.0).
            return Err(ConnectReturnCode::QoSNotSupported);
        }
        if will.retain && !self.config.retain.enabled {
            // MQTT-3.2.2-13 (5.0).
            return Err(ConnectReturnCode::RetainNotSupported);
        }
        Ok(Some(Will { topic, will }))
    }

    /// Refuses a CONNECT with `code`, and closes the connection.
    fn refuse_connect(&mut self, conn: ConnId, code: ConnectReturnCode) {
        self.send(
            conn,
            Packet::ConnAck(ConnAck {
                session_present: false,
                code,
                properties: None,
            }),
        );
        self.actions.push_back(Action::Close(conn));
    }

    /// The keep alive a 5.0 client must use: its own, unless above the
    /// broker's maximum (0, no keep alive, is above any maximum, as in
    /// Mosquitto: an idle client that never pings cannot hold a connection
    /// for ever).
    fn effective_keep_alive(&self, asked: u16) -> Duration {
        let max = self.config.max_keep_alive;
        let secs = if exceeds(asked, max) { max } else { asked };
        Duration::from_secs(u64::from(secs))
    }

    fn connack_properties(
        &self,
        props: &ConnectProperties,
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

    /// The expiry interval of a 3.1.1 persistent session, which has none of
    /// its own: `persistent_client_expiration` gives it one.
    pub(super) fn persistent_expiry(&self) -> u32 {
        match self.config.persistent_client_expiration {
            0 => self.config.max_session_expiry,
            secs => secs.min(self.config.max_session_expiry),
        }
    }

    pub(super) fn create_session(&mut self, client_id: String, version: MqttVersion) -> SessionId {
        let id = self.next_session;
        self.next_session += 1;
        self.by_client_id.insert(client_id.clone(), id);
        let mut session = Session::new(client_id, version);
        session.gauge = self.gauge.clone();
        self.sessions.insert(id, session);
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
                Inflight::Publish(publish, _) => {
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
}

/// Whether a client's keep alive `asked` is longer than the broker's
/// `max`: 0 means none, the longest of all; a `max` of 0 allows any.
fn exceeds(asked: u16, max: u16) -> bool {
    max > 0 && (asked == 0 || asked > max)
}
