//! The MQTT 3.1.1 adapter over rumqttc's v4 client.

use std::time::{Duration, Instant};

use connector::model::{
    Capabilities, ConnectOptions, Error, ErrorCode, Incoming, MessageProperties, MqttVersion,
};
use connector::url::BrokerUrl;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, MqttState,
    NetworkOptions, Outgoing, Packet, PingReq, Publish, QoS, Request, SubscribeFilter,
    SubscribeReasonCode, Transport,
};

use super::core::{ConnAckInfo, Ev, OutletClosed, Req, Resend};
use super::link::{backstop_secs, refused_v311, LinkError, REQUEST_CAPACITY};
use super::nudge::Nudger;

fn qos(q: connector::model::QoS) -> QoS {
    match q {
        connector::model::QoS::AtMostOnce => QoS::AtMostOnce,
        connector::model::QoS::AtLeastOnce => QoS::AtLeastOnce,
        connector::model::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn model_qos(q: QoS) -> connector::model::QoS {
    match q {
        QoS::AtMostOnce => connector::model::QoS::AtMostOnce,
        QoS::AtLeastOnce => connector::model::QoS::AtLeastOnce,
        QoS::ExactlyOnce => connector::model::QoS::ExactlyOnce,
    }
}

/// A publish rumqttc had not written, back as the message it came from;
/// `None` if its topic does not parse back.
fn outgoing(p: Publish) -> Option<connector::model::Outgoing> {
    Some(connector::model::Outgoing {
        topic: connector::model::TopicName::from_bytes(p.topic.as_bytes()).ok()?,
        payload: p.payload.to_vec(),
        qos: model_qos(p.qos),
        retain: p.retain,
        properties: MessageProperties::default(),
    })
}

/// A v4 client and its event loop.
pub(crate) struct Link {
    client: AsyncClient,
    eventloop: EventLoop,
    window: u16,
    /// Packet ids of PUBRELs the broker sent for QoS 2 deliveries this
    /// client no longer remembers; see [`Link::arm_released`].
    released: Vec<u16>,
    nudger: Nudger,
}

impl Link {
    pub(crate) fn new(
        options: &ConnectOptions,
        endpoint: &BrokerUrl,
        transport: Transport,
    ) -> Result<Link, Error> {
        if options.client_id.is_empty() && !options.clean_start {
            // MQTT-3.1.3-7; rumqttc would also panic on it.
            return Err(Error::new(
                ErrorCode::InvalidConfig,
                "MQTT 3.1.1 needs a client id to keep a session (clean_start false)",
            ));
        }
        let window = options.inflight_window.max(1);
        let mut mqtt = MqttOptions::new(
            options.client_id.clone(),
            endpoint.authority_host().into_owned(),
            endpoint.port,
        );
        // rumqttc refuses keep alives below one second other than zero.
        let keep_alive = match options.keep_alive.as_secs() {
            0 if options.keep_alive.is_zero() => Duration::ZERO,
            secs => Duration::from_secs(secs.max(1)),
        };
        mqtt.set_keep_alive(keep_alive)
            .set_clean_session(options.clean_start)
            .set_inflight(window)
            .set_manual_acks(true)
            .set_request_channel_capacity(REQUEST_CAPACITY)
            .set_max_packet_size(super::core::MQTT_MAX_PACKET, super::core::MQTT_MAX_PACKET)
            .set_transport(transport);
        if let Some(user) = &options.username {
            mqtt.set_credentials(user.clone(), options.password.clone().unwrap_or_default());
        }
        if let Some(will) = &options.will {
            mqtt.set_last_will(LastWill::new(
                will.topic.as_str(),
                will.payload.clone(),
                qos(will.qos),
                will.retain,
            ));
        }
        let (client, mut eventloop) = AsyncClient::new(mqtt, REQUEST_CAPACITY);
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        network.set_connection_timeout(backstop_secs(options.connect_timeout));
        eventloop.set_network_options(network);
        let mut link = Link {
            client,
            eventloop,
            window,
            released: Vec::new(),
            nudger: Nudger::new(keep_alive),
        };
        if !options.clean_start {
            // The session this process resumes may hold PUBRELs for QoS 2
            // deliveries an earlier process acknowledged, under ids it
            // cannot know: one unsolicited PUBREL would drop the first
            // connection (and the subscribe on it).
            link.arm(1..=u16::MAX);
        }
        Ok(link)
    }

    pub(crate) fn client(&self) -> AsyncClient {
        self.client.clone()
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.eventloop.network.is_some()
    }

    pub(crate) async fn poll(&mut self) -> Result<Ev, LinkError> {
        match self.eventloop.poll().await {
            Ok(event) => {
                match &event {
                    Event::Incoming(Packet::ConnAck(_)) => self.nudger.on_connack(Instant::now()),
                    Event::Outgoing(Outgoing::PingReq)
                        if self.nudger.on_ping_written(Instant::now()) =>
                    {
                        // A nudge: its PINGRESP is no keep-alive matter.
                        self.eventloop.state.await_pingresp = false;
                    }
                    _ => {}
                }
                Ok(convert(event))
            }
            Err(e) => {
                self.nudger.on_connection_lost();
                self.remember_unsolicited(&e);
                Err(link_error(e))
            }
        }
    }

    pub(crate) fn nudge(&mut self) {
        if self
            .nudger
            .may_nudge(Instant::now(), self.eventloop.state.await_pingresp)
        {
            self.eventloop.pending.push_back(Request::PingReq(PingReq));
            self.nudger.queued();
        }
    }

    fn remember_unsolicited(&mut self, e: &ConnectionError) {
        if let ConnectionError::MqttState(rumqttc::StateError::Unsolicited(pkid)) = e {
            if !self.released.contains(pkid) {
                self.released.push(*pkid);
            }
        }
    }

    /// rumqttc forgets the QoS 2 deliveries it sent PUBREC for when a
    /// connection ends, so the PUBREL a resumed session must resend
    /// (MQTT-4.4.0-1) looks unsolicited and drops the connection, again and
    /// again. Marking those ids as received QoS 2 publishes lets rumqttc
    /// answer the PUBREL with PUBCOMP (MQTT-4.3.3-11) instead.
    fn arm_released(&mut self, awaiting_release: &[u16]) {
        let pkids = super::link::to_release(&self.released, awaiting_release);
        self.arm(pkids.into_iter());
    }

    /// Marks `pkids` as QoS 2 publishes received, so that rumqttc answers
    /// their PUBREL with PUBCOMP.
    fn arm(&mut self, pkids: impl Iterator<Item = u16>) {
        for pkid in pkids {
            let mut marker = Publish::new("", QoS::ExactlyOnce, Vec::new());
            marker.pkid = pkid;
            if self
                .eventloop
                .state
                .handle_incoming_packet(rumqttc::Incoming::Publish(marker))
                .is_ok()
            {
                // The marker is not a delivery: take back the event it made.
                self.eventloop.state.events.pop_back();
            }
        }
    }

    pub(crate) fn has_buffered(&self) -> bool {
        !self.eventloop.state.events.is_empty()
    }

    pub(crate) fn drain_buffered(&mut self) -> Vec<Ev> {
        self.eventloop.state.events.drain(..).map(convert).collect()
    }

    pub(crate) fn scrub(
        &mut self,
        awaiting_release: &[u16],
    ) -> (Vec<Resend>, Vec<Option<connector::model::Outgoing>>) {
        // Pull in whatever reached the channel after rumqttc's own clean-up.
        self.eventloop.clean();
        let mut resends = Vec::new();
        let mut unsent = Vec::new();
        let pending = std::mem::take(&mut self.eventloop.pending);
        for request in pending {
            match request {
                // Not written yet: the core hands it again.
                Request::Publish(publish) if publish.pkid == 0 => unsent.push(outgoing(publish)),
                Request::Publish(mut publish) if publish.pkid != 0 => {
                    publish.dup = true;
                    resends.push(Resend::Publish(publish.pkid));
                    self.eventloop.pending.push_back(Request::Publish(publish));
                }
                Request::PubRel(rel) => {
                    resends.push(Resend::Release(rel.pkid));
                    self.eventloop.pending.push_back(Request::PubRel(rel));
                }
                _ => {}
            }
        }
        // A fresh state restarts the identifier counter the core mirrors.
        self.eventloop.state = MqttState::new(self.window, true);
        self.arm_released(awaiting_release);
        (resends, unsent)
    }

    pub(crate) fn force_disconnect(&mut self) {
        self.eventloop
            .pending
            .push_front(Request::Disconnect(rumqttc::Disconnect));
    }
}

/// Hands `req` to the event loop.
pub(crate) fn send(client: &AsyncClient, req: Req) -> Result<(), OutletClosed> {
    let result = match req {
        Req::Publish(m) => {
            client.try_publish(m.topic.into_string(), qos(m.qos), m.retain, m.payload)
        }
        Req::Subscribe(subs) => client.try_subscribe_many(
            subs.into_iter()
                .map(|s| SubscribeFilter::new(s.filter.into_string(), qos(s.qos))),
        ),
        Req::Unsubscribe(filter) => client.try_unsubscribe(filter.into_string()),
        Req::Ack { pkid, qos: q } => {
            let mut publish = Publish::new("", qos(q), Vec::new());
            publish.pkid = pkid;
            client.try_ack(&publish)
        }
        Req::Disconnect => client.try_disconnect(),
    };
    result.map_err(|e| {
        tracing::debug!(error = %e, "the event loop did not take a request");
        OutletClosed
    })
}

fn convert(event: Event) -> Ev {
    match event {
        Event::Incoming(packet) => match packet {
            Packet::ConnAck(ack) => {
                let mut caps = Capabilities::defaults(MqttVersion::V311);
                caps.session_present = ack.session_present;
                Ev::ConnAck(ConnAckInfo {
                    caps,
                    receive_max: None,
                })
            }
            Packet::Publish(p) => Ev::Publish {
                pkid: p.pkid,
                message: Incoming {
                    id: 0,
                    topic: p.topic,
                    payload: p.payload.to_vec(),
                    qos: model_qos(p.qos),
                    retain: p.retain,
                    duplicate: p.dup,
                    properties: MessageProperties::default(),
                    subscription_ids: Vec::new(),
                },
            },
            Packet::PubAck(a) => Ev::PubAck {
                pkid: a.pkid,
                reason: 0,
            },
            Packet::PubRec(r) => Ev::PubRec {
                pkid: r.pkid,
                reason: 0,
            },
            Packet::PubComp(c) => Ev::PubComp {
                pkid: c.pkid,
                reason: 0,
            },
            Packet::SubAck(s) => Ev::SubAck {
                pkid: s.pkid,
                codes: s
                    .return_codes
                    .iter()
                    .map(|c| match c {
                        SubscribeReasonCode::Success(q) => *q as u8,
                        SubscribeReasonCode::Failure => 0x80,
                    })
                    .collect(),
            },
            Packet::UnsubAck(u) => Ev::UnsubAck {
                pkid: u.pkid,
                codes: Vec::new(),
            },
            Packet::PubRel(r) => Ev::PubRel { pkid: r.pkid },
            _ => Ev::Other,
        },
        Event::Outgoing(out) => match out {
            Outgoing::Publish(pkid) => Ev::OutPublish(pkid),
            Outgoing::Subscribe(pkid) => Ev::OutSubscribe(pkid),
            Outgoing::Unsubscribe(pkid) => Ev::OutUnsubscribe(pkid),
            Outgoing::Disconnect => Ev::OutDisconnect,
            Outgoing::AwaitAck(pkid) => {
                tracing::warn!(pkid, "rumqttc is waiting for a packet identifier");
                Ev::Other
            }
            _ => Ev::Other,
        },
    }
}

fn link_error(e: ConnectionError) -> LinkError {
    if let Some(why) = tls_failure(&e) {
        return LinkError::Other(why);
    }
    match e {
        ConnectionError::ConnectionRefused(code) => refused_v311(code as u8),
        ConnectionError::NetworkTimeout => LinkError::Timeout,
        ConnectionError::Io(io) => LinkError::Other(io.to_string()),
        other => LinkError::Other(other.to_string()),
    }
}

/// A TLS failure said for the user, wherever rumqttc reports it: the
/// handshake, or the first read of the CONNACK (with TLS 1.3, a refused
/// client certificate shows there).
fn tls_failure(e: &ConnectionError) -> Option<String> {
    use rumqttc::mqttbytes::Error as Codec;
    use rumqttc::StateError as State;
    match e {
        ConnectionError::Tls(tls) => super::tls::explain_handshake(tls),
        ConnectionError::Io(io)
        | ConnectionError::MqttState(State::Io(io) | State::Deserialization(Codec::Io(io))) => {
            super::tls::explain_io(io)
        }
        _ => None,
    }
}
