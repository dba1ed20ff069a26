//! The component glue: the WIT world's exports implemented with the
//! connector's native logic, and its imports wrapped for that logic.
//!
//! Only built for `wasm32`; everything it calls is plain Rust that is tested
//! natively.

use crate::model;

wit_bindgen::generate!({
    world: "connector",
    path: "wit",
});

use exports::mqtt_connector::connector::operations::{
    Guest, GuestListener, GuestSender, Listener as ListenerHandle, Metadata, OperationInfo,
    OperationKind, Sender as SenderHandle,
};
use mqtt_connector::connector::logging::{self, Level};
use mqtt_connector::connector::mqtt;
use mqtt_connector::connector::types;

struct Component;

export!(Component);

impl Guest for Component {
    type Sender = crate::operations::SendOperation<Broker>;
    type Listener = crate::operations::ListenOperation<Broker>;

    fn describe() -> Metadata {
        let d = crate::operations::describe();
        Metadata {
            name: d.name,
            version: d.version,
            operations: vec![
                OperationInfo {
                    kind: OperationKind::Send,
                    description: d.send_description,
                },
                OperationInfo {
                    kind: OperationKind::Listen,
                    description: d.listen_description,
                },
            ],
            connection_schema: d.connection_schema,
            send_schema: d.send_schema,
            listen_schema: d.listen_schema,
        }
    }

    fn validate(kind: Option<OperationKind>, config: String) -> Vec<types::Problem> {
        let kind = match kind {
            None => crate::validate::Kind::Connection,
            Some(OperationKind::Send) => crate::validate::Kind::Send,
            Some(OperationKind::Listen) => crate::validate::Kind::Listen,
        };
        crate::validate::validate(kind, &config)
            .into_iter()
            .map(|p| types::Problem {
                pointer: p.pointer,
                message: p.message,
            })
            .collect()
    }
}

impl GuestSender for crate::operations::SendOperation<Broker> {
    fn open(connection: String, config: String) -> Result<SenderHandle, types::Error> {
        crate::operations::SendOperation::open(Broker, &connection, &config)
            .map(SenderHandle::new)
            .map_err(to_wit_error)
    }

    fn send(&self, documents: Vec<types::Document>) -> Vec<Result<(), types::Error>> {
        let documents: Vec<_> = documents.into_iter().map(from_wit_document).collect();
        self.send(&documents)
            .into_iter()
            .map(|r| r.map_err(to_wit_error))
            .collect()
    }

    fn close(&self) {
        self.close();
    }
}

impl GuestListener for crate::operations::ListenOperation<Broker> {
    fn open(connection: String, config: String) -> Result<ListenerHandle, types::Error> {
        crate::operations::ListenOperation::open(Broker, &connection, &config)
            .map(ListenerHandle::new)
            .map_err(to_wit_error)
    }

    fn next(&self, max: u32, timeout_ms: u32) -> Result<Vec<types::Document>, types::Error> {
        self.next(max, timeout_ms)
            .map(|docs| docs.into_iter().map(to_wit_document).collect())
            .map_err(to_wit_error)
    }

    fn commit(&self, ids: Vec<u64>) -> Result<(), types::Error> {
        self.commit(&ids).map_err(to_wit_error)
    }

    fn done(&self) -> bool {
        self.done()
    }

    fn close(&self) {
        self.close();
    }
}

/// The host's MQTT capability, as the operations see it.
struct Broker;

impl crate::operations::Host for Broker {
    type Client = mqtt::Client;

    fn connect(&self, options: model::ConnectOptions) -> Result<mqtt::Client, model::Error> {
        mqtt::Client::connect(&to_wit_options(options)).map_err(from_wit_error)
    }

    fn log(&self, level: crate::operations::LogLevel, message: &str) {
        let level = match level {
            crate::operations::LogLevel::Debug => Level::Debug,
            crate::operations::LogLevel::Info => Level::Info,
            crate::operations::LogLevel::Warn => Level::Warn,
            crate::operations::LogLevel::Error => Level::Error,
        };
        logging::log(level, message);
    }
}

impl crate::operations::Client for mqtt::Client {
    fn capabilities(&self) -> model::Capabilities {
        from_wit_capabilities(mqtt::Client::capabilities(self))
    }

    fn publish(&self, batch: Vec<model::Outgoing>) -> Vec<Result<(), model::Error>> {
        let batch: Vec<_> = batch.into_iter().map(to_wit_outgoing).collect();
        mqtt::Client::publish(self, &batch)
            .into_iter()
            .map(|r| r.map_err(from_wit_error))
            .collect()
    }

    fn subscribe(
        &self,
        subscriptions: Vec<model::Subscription>,
    ) -> Result<Vec<model::Granted>, model::Error> {
        let subscriptions: Vec<_> = subscriptions.into_iter().map(to_wit_subscription).collect();
        mqtt::Client::subscribe(self, &subscriptions)
            .map(|granted| granted.into_iter().map(from_wit_granted).collect())
            .map_err(from_wit_error)
    }

    fn unsubscribe(&self, filters: Vec<String>) -> Result<(), model::Error> {
        mqtt::Client::unsubscribe(self, &filters).map_err(from_wit_error)
    }

    fn receive(&self, max: u32, timeout_ms: u32) -> Result<Vec<model::Incoming>, model::Error> {
        mqtt::Client::receive(self, max, timeout_ms)
            .map(|batch| batch.into_iter().map(from_wit_incoming).collect())
            .map_err(from_wit_error)
    }

    fn ack(&self, ids: &[u64]) -> Result<(), model::Error> {
        mqtt::Client::ack(self, ids).map_err(from_wit_error)
    }

    fn disconnect(&self) {
        mqtt::Client::disconnect(self);
    }
}

// ----- conversions between the WIT types and the native model -----

fn to_wit_qos(q: model::QoS) -> types::Qos {
    match q {
        model::QoS::AtMostOnce => types::Qos::AtMostOnce,
        model::QoS::AtLeastOnce => types::Qos::AtLeastOnce,
        model::QoS::ExactlyOnce => types::Qos::ExactlyOnce,
    }
}

fn from_wit_qos(q: types::Qos) -> model::QoS {
    match q {
        types::Qos::AtMostOnce => model::QoS::AtMostOnce,
        types::Qos::AtLeastOnce => model::QoS::AtLeastOnce,
        types::Qos::ExactlyOnce => model::QoS::ExactlyOnce,
    }
}

fn to_wit_properties(p: model::MessageProperties) -> mqtt::MessageProperties {
    mqtt::MessageProperties {
        payload_format: p.payload_format,
        message_expiry: p.message_expiry,
        content_type: p.content_type,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data,
        user_properties: p.user_properties,
    }
}

fn from_wit_properties(p: mqtt::MessageProperties) -> model::MessageProperties {
    model::MessageProperties {
        payload_format: p.payload_format,
        message_expiry: p.message_expiry,
        content_type: p.content_type,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data,
        user_properties: p.user_properties,
    }
}

fn millis(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

fn to_wit_options(o: model::ConnectOptions) -> mqtt::ConnectOptions {
    mqtt::ConnectOptions {
        url: o.url,
        protocol: match o.protocol {
            model::Protocol::V311 => mqtt::Protocol::V311,
            model::Protocol::V5 => mqtt::Protocol::V5,
        },
        client_id: o.client_id,
        username: o.username,
        password: o.password,
        keep_alive_secs: u16::try_from(o.keep_alive.as_secs()).unwrap_or(u16::MAX),
        clean_start: o.clean_start,
        session_expiry_secs: o.session_expiry,
        connect_timeout_ms: millis(o.connect_timeout),
        tls: o.tls.map(|t| mqtt::TlsOptions {
            ca_file: t.ca_file,
            client_cert_file: t.client_cert_file,
            client_key_file: t.client_key_file,
            alpn: t.alpn,
        }),
        reconnect_min_ms: millis(o.reconnect_min),
        reconnect_max_ms: millis(o.reconnect_max),
        will: o.will.map(|w| mqtt::Will {
            topic: w.topic,
            payload: w.payload,
            qos: to_wit_qos(w.qos),
            retain: w.retain,
            delay_interval: w.delay_interval,
            properties: to_wit_properties(w.properties),
        }),
        inflight_window: o.inflight_window,
        receive_maximum: o.receive_maximum,
    }
}

fn from_wit_capabilities(c: mqtt::Capabilities) -> model::Capabilities {
    model::Capabilities {
        protocol: match c.protocol {
            mqtt::Protocol::V311 => model::Protocol::V311,
            mqtt::Protocol::V5 => model::Protocol::V5,
        },
        session_present: c.session_present,
        retain_available: c.retain_available,
        maximum_qos: from_wit_qos(c.maximum_qos),
        wildcard_subscription_available: c.wildcard_subscription_available,
        shared_subscription_available: c.shared_subscription_available,
        subscription_identifiers_available: c.subscription_identifiers_available,
        maximum_packet_size: c.maximum_packet_size,
        topic_alias_maximum: c.topic_alias_maximum,
        receive_maximum: c.receive_maximum,
    }
}

fn to_wit_outgoing(o: model::Outgoing) -> mqtt::Outgoing {
    mqtt::Outgoing {
        topic: o.topic,
        payload: o.payload,
        qos: to_wit_qos(o.qos),
        retain: o.retain,
        properties: to_wit_properties(o.properties),
    }
}

fn to_wit_subscription(s: model::Subscription) -> mqtt::Subscription {
    mqtt::Subscription {
        filter: s.filter,
        qos: to_wit_qos(s.qos),
        no_local: s.no_local,
        retain_as_published: s.retain_as_published,
        retain_handling: s.retain_handling,
    }
}

fn from_wit_granted(g: mqtt::Granted) -> model::Granted {
    model::Granted {
        filter: g.filter,
        qos: g.qos.map(from_wit_qos),
        reason_code: g.reason_code,
    }
}

fn from_wit_incoming(m: mqtt::Incoming) -> model::Incoming {
    model::Incoming {
        id: m.id,
        topic: m.topic,
        payload: m.payload,
        qos: from_wit_qos(m.qos),
        retain: m.retain,
        duplicate: m.duplicate,
        properties: from_wit_properties(m.properties),
        subscription_ids: m.subscription_ids,
    }
}

fn to_wit_error(e: model::Error) -> types::Error {
    use model::ErrorCode as M;
    use types::ErrorCode as W;
    types::Error {
        code: match e.code {
            M::InvalidConfig => W::InvalidConfig,
            M::InvalidDocument => W::InvalidDocument,
            M::ConnectionFailed => W::ConnectionFailed,
            M::NotAuthorized => W::NotAuthorized,
            M::Timeout => W::Timeout,
            M::BrokerRejected => W::BrokerRejected,
            M::Unsupported => W::Unsupported,
            M::Closed => W::Closed,
            M::Internal => W::Internal,
        },
        message: e.message,
        reason_code: e.reason_code,
        document_index: e.document_index,
    }
}

fn from_wit_error(e: types::Error) -> model::Error {
    use model::ErrorCode as M;
    use types::ErrorCode as W;
    model::Error {
        code: match e.code {
            W::InvalidConfig => M::InvalidConfig,
            W::InvalidDocument => M::InvalidDocument,
            W::ConnectionFailed => M::ConnectionFailed,
            W::NotAuthorized => M::NotAuthorized,
            W::Timeout => M::Timeout,
            W::BrokerRejected => M::BrokerRejected,
            W::Unsupported => M::Unsupported,
            W::Closed => M::Closed,
            W::Internal => M::Internal,
        },
        message: e.message,
        reason_code: e.reason_code,
        document_index: e.document_index,
    }
}

fn from_wit_document(d: types::Document) -> crate::document::Document {
    crate::document::Document {
        id: d.id,
        payload: d.payload,
        properties: d
            .properties
            .into_iter()
            .map(|p| crate::document::Property {
                name: p.name,
                value: match p.value {
                    types::Value::Text(v) => crate::document::Value::Text(v),
                    types::Value::Integer(v) => crate::document::Value::Integer(v),
                    types::Value::Boolean(v) => crate::document::Value::Boolean(v),
                    types::Value::Binary(v) => crate::document::Value::Binary(v),
                    types::Value::Pairs(v) => crate::document::Value::Pairs(v),
                },
            })
            .collect(),
    }
}

fn to_wit_document(d: crate::document::Document) -> types::Document {
    types::Document {
        id: d.id,
        payload: d.payload,
        properties: d
            .properties
            .into_iter()
            .map(|p| types::Property {
                name: p.name,
                value: match p.value {
                    crate::document::Value::Text(v) => types::Value::Text(v),
                    crate::document::Value::Integer(v) => types::Value::Integer(v),
                    crate::document::Value::Boolean(v) => types::Value::Boolean(v),
                    crate::document::Value::Binary(v) => types::Value::Binary(v),
                    crate::document::Value::Pairs(v) => types::Value::Pairs(v),
                },
            })
            .collect(),
    }
}
