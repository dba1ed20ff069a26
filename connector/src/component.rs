//! The component glue: the WIT world's exports implemented with the
//! connector's native logic, and its imports wrapped for that logic.
//!
//! Only built for `wasm32`; everything it calls is plain Rust that is tested
//! natively. The conversions between the generated types and the model are
//! the ones the host uses too ([`crate::wit_conversions!`]).

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

crate::wit_conversions!(types = types, mqtt = mqtt);

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
            .map(Into::into)
            .collect()
    }
}

impl GuestSender for crate::operations::SendOperation<Broker> {
    fn open(connection: String, config: String) -> Result<SenderHandle, types::Error> {
        crate::operations::SendOperation::open(Broker, &connection, &config)
            .map(SenderHandle::new)
            .map_err(Into::into)
    }

    fn send(&self, documents: Vec<types::Document>) -> Vec<Result<(), types::Error>> {
        let documents: Vec<_> = documents.into_iter().map(Into::into).collect();
        self.send(&documents)
            .into_iter()
            .map(|r| r.map_err(Into::into))
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
            .map_err(Into::into)
    }

    fn next(&self, max: u32, timeout_ms: u32) -> Result<Vec<types::Document>, types::Error> {
        self.next(max, timeout_ms)
            .map(|docs| docs.into_iter().map(Into::into).collect())
            .map_err(Into::into)
    }

    fn commit(&self, ids: Vec<u64>) -> Result<(), types::Error> {
        self.commit(&ids).map_err(Into::into)
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
        mqtt::Client::connect(&options.into()).map_err(Into::into)
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
        mqtt::Client::capabilities(self).into()
    }

    fn publish(&self, batch: Vec<model::Outgoing>) -> Vec<Result<(), model::Error>> {
        let batch: Vec<mqtt::Outgoing> = batch.into_iter().map(Into::into).collect();
        mqtt::Client::publish(self, &batch)
            .into_iter()
            .map(|r| r.map_err(Into::into))
            .collect()
    }

    fn subscribe(
        &self,
        subscriptions: Vec<model::Subscription>,
    ) -> Result<Vec<model::Granted>, model::Error> {
        let subscriptions: Vec<mqtt::Subscription> =
            subscriptions.into_iter().map(Into::into).collect();
        mqtt::Client::subscribe(self, &subscriptions)
            .map(|granted| granted.into_iter().map(Into::into).collect())
            .map_err(Into::into)
    }

    fn unsubscribe(&self, filters: Vec<model::TopicFilter>) -> Result<(), model::Error> {
        let filters: Vec<String> = filters
            .into_iter()
            .map(model::TopicFilter::into_string)
            .collect();
        mqtt::Client::unsubscribe(self, &filters).map_err(Into::into)
    }

    fn receive(&self, max: u32, timeout_ms: u32) -> Result<Vec<model::Incoming>, model::Error> {
        mqtt::Client::receive(self, max, timeout_ms)
            .map(|batch| batch.into_iter().map(Into::into).collect())
            .map_err(Into::into)
    }

    fn ack(&self, ids: &[u64]) -> Result<(), model::Error> {
        mqtt::Client::ack(self, ids).map_err(Into::into)
    }

    fn disconnect(&self) {
        mqtt::Client::disconnect(self);
    }
}
