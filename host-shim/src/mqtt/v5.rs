//! The MQTT 5.0 adapter over rumqttc's v5 client.
//!
//! rumqttc decodes reason codes into enums; the functions at the end turn
//! them back into the numbers the specification (and our errors) use.

use std::time::{Duration, Instant};

use bytes::Bytes;
use connector::model::{
    Capabilities, ConnectOptions, Error, Incoming, MessageProperties, MqttVersion, Subscription,
};
use connector::url::BrokerUrl;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnectReturnCode, Filter, LastWill, LastWillProperties, Packet, PubAckReason,
    PubCompReason, PubRecReason, Publish, PublishProperties, RetainForwardRule,
    SubscribeReasonCode, UnsubAckReason,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, MqttState, Request,
};
use rumqttc::{Outgoing, Transport};

use super::core::{ConnAckInfo, Ev, OutletClosed, Req, Resend};
use super::link::{backstop_secs, refused_v5, LinkError, REQUEST_CAPACITY};
use super::nudge::Nudger;

/// rumqttc's v5 options refuse keep alives under five seconds.
const MIN_KEEP_ALIVE: Duration = Duration::from_secs(5);

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

fn is_empty(p: &MessageProperties) -> bool {
    *p == MessageProperties::default()
}

fn publish_properties(p: &MessageProperties) -> PublishProperties {
    PublishProperties {
        payload_format_indicator: p.payload_format,
        message_expiry_interval: p.message_expiry,
        topic_alias: None,
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.clone().map(Bytes::from),
        user_properties: p.user_properties.clone(),
        subscription_identifiers: Vec::new(),
        content_type: p.content_type.clone(),
    }
}

/// A v5 client and its event loop.
pub(crate) struct Link {
    client: AsyncClient,
    eventloop: EventLoop,
    window: u16,
    /// Packet ids of PUBRELs the broker sent for QoS 2 deliveries this
    /// client no longer remembers; see [`Link::arm_released`].
    released: Vec<u16>,
    /// rumqttc's v5 event loop keeps its network private: a CONNACK means
    /// connected, an error means not.
    connected: bool,
    nudger: Nudger,
}

impl Link {
    pub(crate) fn new(
        options: &ConnectOptions,
        endpoint: &BrokerUrl,
        transport: Transport,
    ) -> Result<Link, Error> {
        let window = options.inflight_window.max(1);
        let mut mqtt = MqttOptions::new(
            options.client_id.clone(),
            endpoint.authority_host().into_owned(),
            endpoint.port,
        );
        if options.keep_alive < MIN_KEEP_ALIVE {
            tracing::debug!(
                asked = ?options.keep_alive,
                "keep alive raised to rumqttc's minimum of 5 s"
            );
        }
        let keep_alive = options.keep_alive.max(MIN_KEEP_ALIVE);
        let mut network = mqtt.network_options();
        network.set_tcp_nodelay(true);
        mqtt.set_keep_alive(keep_alive)
            .set_clean_start(options.clean_start)
            .set_session_expiry_interval(
                (options.session_expiry > 0).then_some(options.session_expiry),
            )
            .set_receive_maximum(Some(options.receive_maximum))
            // Advertising MQTT's own limit: rumqttc's default would refuse
            // anything above 10 KiB.
            .set_max_packet_size(Some(super::core::MQTT_MAX_PACKET as u32 - 5))
            .set_outgoing_inflight_upper_limit(window)
            .set_manual_acks(true)
            .set_request_channel_capacity(REQUEST_CAPACITY)
            .set_connection_timeout(backstop_secs(options.connect_timeout))
            .set_network_options(network)
            .set_transport(transport);
        if let Some(user) = &options.username {
            mqtt.set_credentials(user.clone(), options.password.clone().unwrap_or_default());
        }
        if let Some(will) = &options.will {
            let p = &will.properties;
            let properties =
                (will.delay_interval.is_some() || !is_empty(p)).then(|| LastWillProperties {
                    delay_interval: will.delay_interval,
                    payload_format_indicator: p.payload_format,
                    message_expiry_interval: p.message_expiry,
                    content_type: p.content_type.clone(),
                    response_topic: p.response_topic.clone(),
                    correlation_data: p.correlation_data.clone().map(Bytes::from),
                    user_properties: p.user_properties.clone(),
                });
            mqtt.set_last_will(LastWill::new(
                will.topic.as_str(),
                will.payload.clone(),
                qos(will.qos),
                will.retain,
                properties,
            ));
        }
        let (client, eventloop) = AsyncClient::new(mqtt, REQUEST_CAPACITY);
        let mut link = Link {
            client,
            eventloop,
            window,
            released: Vec::new(),
            connected: false,
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
        self.connected
    }

    pub(crate) async fn poll(&mut self) -> Result<Ev, LinkError> {
        match self.eventloop.poll().await {
            Ok(event) => {
                match &event {
                    Event::Incoming(Packet::ConnAck(ack)) => {
                        self.connected = true;
                        self.nudger.on_connack(Instant::now());
                        self.adopt_assigned_id(ack);
                    }
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
                self.connected = false;
                self.nudger.on_connection_lost();
                self.remember_unsolicited(&e);
                Err(link_error(e))
            }
        }
    }

    fn remember_unsolicited(&mut self, e: &ConnectionError) {
        if let ConnectionError::MqttState(rumqttc::v5::StateError::Unsolicited(pkid)) = e {
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
            let mut marker = Publish::new("", QoS::ExactlyOnce, Bytes::new(), None);
            marker.pkid = pkid;
            if self
                .eventloop
                .state
                .handle_incoming_packet(Packet::Publish(marker))
                .is_ok()
            {
                // The marker is not a delivery: take back the event it made.
                self.eventloop.state.events.pop_back();
            }
        }
    }

    /// A broker-assigned client id is reused on reconnect, so that the
    /// session can resume.
    fn adopt_assigned_id(&mut self, ack: &ConnAck) {
        let assigned = ack
            .properties
            .as_ref()
            .and_then(|p| p.assigned_client_identifier.clone());
        if let Some(id) = assigned {
            tracing::debug!(client_id = %id, "the broker assigned a client id");
            self.eventloop.options.set_client_id(id);
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
        // A fresh state restarts the identifier counter the core mirrors,
        // forgets the in-flight slots rumqttc leaked, and drops topic aliases
        // that were only valid on the old connection.
        self.eventloop.state = MqttState::new(self.window, true);
        self.arm_released(awaiting_release);
        (resends, unsent)
    }

    pub(crate) fn force_disconnect(&mut self) {
        self.eventloop.pending.push_front(Request::Disconnect);
    }

    pub(crate) fn nudge(&mut self) {
        if self
            .nudger
            .may_nudge(Instant::now(), self.eventloop.state.await_pingresp)
        {
            self.eventloop.pending.push_back(Request::PingReq);
            self.nudger.queued();
        }
    }
}

/// Hands `req` to the event loop.
pub(crate) fn send(client: &AsyncClient, req: Req) -> Result<(), OutletClosed> {
    let result = match req {
        Req::Publish(m) => {
            if is_empty(&m.properties) {
                client.try_publish(m.topic.into_string(), qos(m.qos), m.retain, m.payload)
            } else {
                let properties = publish_properties(&m.properties);
                client.try_publish_with_properties(
                    m.topic.into_string(),
                    qos(m.qos),
                    m.retain,
                    m.payload,
                    properties,
                )
            }
        }
        Req::Subscribe(subs) => client.try_subscribe_many(subs.iter().map(filter)),
        Req::Unsubscribe(filter) => client.try_unsubscribe(filter.into_string()),
        Req::Ack { pkid, qos: q } => {
            let mut publish = Publish::new("", qos(q), Bytes::new(), None);
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

fn filter(s: &Subscription) -> Filter {
    let mut f = Filter::new(s.filter.as_str(), qos(s.qos));
    f.nolocal = s.no_local;
    f.preserve_retain = s.retain_as_published;
    f.retain_forward_rule = match s.retain_handling {
        0 => RetainForwardRule::OnEverySubscribe,
        1 => RetainForwardRule::OnNewSubscribe,
        _ => RetainForwardRule::Never,
    };
    f
}

fn connack_info(ack: &ConnAck) -> ConnAckInfo {
    let mut caps = Capabilities::defaults(MqttVersion::V5);
    caps.session_present = ack.session_present;
    let mut receive_max = None;
    if let Some(p) = &ack.properties {
        let flag = |v: Option<u8>| v.is_none_or(|v| v != 0);
        caps.retain_available = flag(p.retain_available);
        caps.maximum_qos = p
            .max_qos
            .and_then(connector::model::QoS::from_level)
            .unwrap_or(connector::model::QoS::ExactlyOnce);
        caps.wildcard_subscription_available = flag(p.wildcard_subscription_available);
        caps.shared_subscription_available = flag(p.shared_subscription_available);
        caps.subscription_identifiers_available = flag(p.subscription_identifiers_available);
        caps.maximum_packet_size = p.max_packet_size;
        caps.topic_alias_maximum = p.topic_alias_max.unwrap_or(0);
        caps.receive_maximum = p.receive_max.unwrap_or(u16::MAX);
        receive_max = p.receive_max;
    }
    ConnAckInfo { caps, receive_max }
}

/// A PUBLISH's properties as the core's, and its Subscription Identifiers.
fn message_properties(properties: Option<PublishProperties>) -> (MessageProperties, Vec<u32>) {
    match properties {
        None => (MessageProperties::default(), Vec::new()),
        Some(props) => (
            MessageProperties {
                payload_format: props.payload_format_indicator,
                message_expiry: props.message_expiry_interval,
                content_type: props.content_type,
                response_topic: props.response_topic,
                correlation_data: props.correlation_data.map(|b| b.to_vec()),
                user_properties: props.user_properties,
            },
            props
                .subscription_identifiers
                .into_iter()
                .filter_map(|id| u32::try_from(id).ok())
                .collect(),
        ),
    }
}

/// A publish rumqttc had not written, back as the message it came from;
/// `None` if its topic does not parse back.
fn outgoing(p: Publish) -> Option<connector::model::Outgoing> {
    Some(connector::model::Outgoing {
        topic: connector::model::TopicName::from_bytes(&p.topic).ok()?,
        payload: p.payload.to_vec(),
        qos: model_qos(p.qos),
        retain: p.retain,
        properties: message_properties(p.properties).0,
    })
}

fn incoming(p: Publish) -> Ev {
    let topic = match String::from_utf8(p.topic.to_vec()) {
        Ok(topic) => topic,
        Err(e) => {
            tracing::warn!("topic name is not UTF-8; delivered with replacement characters");
            String::from_utf8_lossy(e.as_bytes()).into_owned()
        }
    };
    let (properties, subscription_ids) = message_properties(p.properties);
    Ev::Publish {
        pkid: p.pkid,
        message: Incoming {
            id: 0,
            topic,
            payload: p.payload.to_vec(),
            qos: model_qos(p.qos),
            retain: p.retain,
            duplicate: p.dup,
            properties,
            subscription_ids,
        },
    }
}

fn convert(event: Event) -> Ev {
    match event {
        Event::Incoming(packet) => match packet {
            Packet::ConnAck(ack) => Ev::ConnAck(connack_info(&ack)),
            Packet::Publish(p) => incoming(p),
            Packet::PubAck(a) => Ev::PubAck {
                pkid: a.pkid,
                reason: puback_code(a.reason),
            },
            Packet::PubRec(r) => Ev::PubRec {
                pkid: r.pkid,
                reason: pubrec_code(r.reason),
            },
            Packet::PubComp(c) => Ev::PubComp {
                pkid: c.pkid,
                reason: match c.reason {
                    PubCompReason::Success => 0x00,
                    PubCompReason::PacketIdentifierNotFound => 0x92,
                },
            },
            Packet::SubAck(s) => Ev::SubAck {
                pkid: s.pkid,
                codes: s.return_codes.iter().map(|c| suback_code(*c)).collect(),
            },
            Packet::UnsubAck(u) => Ev::UnsubAck {
                pkid: u.pkid,
                codes: u.reasons.iter().map(|r| unsuback_code(*r)).collect(),
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
        ConnectionError::ConnectionRefused(code) => refused_v5(connect_code(code)),
        ConnectionError::Timeout(_) => LinkError::Timeout,
        ConnectionError::Io(io) => LinkError::Other(io.to_string()),
        other => LinkError::Other(other.to_string()),
    }
}

/// A TLS failure said for the user, wherever rumqttc reports it: the
/// handshake, or the first read of the CONNACK (with TLS 1.3, a refused
/// client certificate shows there).
fn tls_failure(e: &ConnectionError) -> Option<String> {
    use rumqttc::v5::mqttbytes::Error as Codec;
    use rumqttc::v5::StateError as State;
    match e {
        ConnectionError::Tls(tls) => super::tls::explain_handshake(tls),
        ConnectionError::Io(io)
        | ConnectionError::MqttState(State::Io(io) | State::Deserialization(Codec::Io(io))) => {
            super::tls::explain_io(io)
        }
        _ => None,
    }
}

fn connect_code(code: ConnectReturnCode) -> u8 {
    use ConnectReturnCode as C;
    match code {
        C::Success => 0x00,
        // 3.1.1 codes rumqttc shares with 5.0; mapped to their 5.0 meaning.
        C::RefusedProtocolVersion => 0x84,
        C::BadClientId => 0x85,
        C::ServiceUnavailable => 0x88,
        C::UnspecifiedError => 0x80,
        C::MalformedPacket => 0x81,
        C::ProtocolError => 0x82,
        C::ImplementationSpecificError => 0x83,
        C::UnsupportedProtocolVersion => 0x84,
        C::ClientIdentifierNotValid => 0x85,
        C::BadUserNamePassword => 0x86,
        C::NotAuthorized => 0x87,
        C::ServerUnavailable => 0x88,
        C::ServerBusy => 0x89,
        C::Banned => 0x8A,
        C::BadAuthenticationMethod => 0x8C,
        C::TopicNameInvalid => 0x90,
        C::PacketTooLarge => 0x95,
        C::QuotaExceeded => 0x97,
        C::PayloadFormatInvalid => 0x99,
        C::RetainNotSupported => 0x9A,
        C::QoSNotSupported => 0x9B,
        C::UseAnotherServer => 0x9C,
        C::ServerMoved => 0x9D,
        C::ConnectionRateExceeded => 0x9F,
    }
}

fn puback_code(reason: PubAckReason) -> u8 {
    use PubAckReason as R;
    match reason {
        R::Success => 0x00,
        R::NoMatchingSubscribers => 0x10,
        R::UnspecifiedError => 0x80,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::TopicNameInvalid => 0x90,
        R::PacketIdentifierInUse => 0x91,
        R::QuotaExceeded => 0x97,
        R::PayloadFormatInvalid => 0x99,
    }
}

fn pubrec_code(reason: PubRecReason) -> u8 {
    use PubRecReason as R;
    match reason {
        R::Success => 0x00,
        R::NoMatchingSubscribers => 0x10,
        R::UnspecifiedError => 0x80,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::TopicNameInvalid => 0x90,
        R::PacketIdentifierInUse => 0x91,
        R::QuotaExceeded => 0x97,
        R::PayloadFormatInvalid => 0x99,
    }
}

fn suback_code(code: SubscribeReasonCode) -> u8 {
    use SubscribeReasonCode as S;
    match code {
        S::Success(q) => q as u8,
        S::Failure | S::Unspecified => 0x80,
        S::ImplementationSpecific => 0x83,
        S::NotAuthorized => 0x87,
        S::TopicFilterInvalid => 0x8F,
        S::PkidInUse => 0x91,
        S::QuotaExceeded => 0x97,
        S::SharedSubscriptionsNotSupported => 0x9E,
        S::SubscriptionIdNotSupported => 0xA1,
        S::WildcardSubscriptionsNotSupported => 0xA2,
    }
}

fn unsuback_code(reason: UnsubAckReason) -> u8 {
    use UnsubAckReason as U;
    match reason {
        U::Success => 0x00,
        U::NoSubscriptionExisted => 0x11,
        U::UnspecifiedError => 0x80,
        U::ImplementationSpecificError => 0x83,
        U::NotAuthorized => 0x87,
        U::TopicFilterInvalid => 0x8F,
        U::PacketIdentifierInUse => 0x91,
    }
}
