//! The MQTT capability: the host side of the world's `mqtt` and `logging`
//! imports, added to a [`Linker`] in one call the way `wasmtime-wasi` adds
//! WASI.
//!
//! An embedder keeps an [`MqttCtx`] and a [`ResourceTable`] in its store
//! data, implements [`MqttView`] to lend both, and calls [`add_to_linker`].
//! Each guest `client` is a [`MqttClient`] in the table; dropping the guest's
//! handle drops the client and ends its connection.

use super::bindings::mqtt_connector::connector::{logging, mqtt, types};
use crate::mqtt::MqttClient;
use connector::model;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

/// Decides whether a guest may connect to a broker URL.
pub type BrokerPolicy = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Per-store state of the MQTT capability.
///
/// Deny by default: [`MqttCtx::new`] lets the guest connect to no broker at
/// all; [`MqttCtx::allow_broker`] or [`MqttCtx::allow_any_broker`] open it.
pub struct MqttCtx {
    policy: Option<BrokerPolicy>,
    /// Name used in the guest's log lines.
    log_name: String,
    /// Time spent in host calls since [`MqttCtx::reset_host_time`], so a
    /// guest time limit counts only the guest's own work, never the time it
    /// waited on a broker.
    host_time: Duration,
}

impl Default for MqttCtx {
    fn default() -> Self {
        Self::new()
    }
}

impl MqttCtx {
    /// A context that denies every broker. Guest log lines are named
    /// `connector`.
    pub fn new() -> Self {
        MqttCtx {
            policy: None,
            log_name: "connector".to_owned(),
            host_time: Duration::ZERO,
        }
    }

    /// Lets the guest connect to the brokers for whose URL `allowed` is true.
    pub fn allow_broker(mut self, allowed: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.policy = Some(Arc::new(allowed));
        self
    }

    /// Lets the guest connect to any broker.
    pub fn allow_any_broker(self) -> Self {
        self.allow_broker(|_| true)
    }

    /// Names the guest's log lines (for example after the operation).
    pub fn log_name(mut self, name: impl Into<String>) -> Self {
        self.log_name = name.into();
        self
    }

    /// Time spent in host calls since the last reset.
    pub fn host_time(&self) -> Duration {
        self.host_time
    }

    /// Starts counting host time afresh, at the start of a guest call.
    pub fn reset_host_time(&mut self) {
        self.host_time = Duration::ZERO;
    }
}

/// A borrowed view of the capability's state and the store's table.
pub struct MqttCtxView<'a> {
    /// The capability's state.
    pub ctx: &'a mut MqttCtx,
    /// The table that holds the guest's `client` resources.
    pub table: &'a mut ResourceTable,
}

/// Implemented by store data that carries the MQTT capability.
pub trait MqttView: Send {
    /// Lends the capability's state and the resource table.
    fn mqtt(&mut self) -> MqttCtxView<'_>;
}

struct HasMqtt;

impl HasData for HasMqtt {
    type Data<'a> = MqttCtxView<'a>;
}

/// Adds the `mqtt` and `logging` imports to `linker`.
///
/// # Errors
///
/// When the linker already defines them.
pub fn add_to_linker<T: MqttView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    fn view<T: MqttView>(t: &mut T) -> MqttCtxView<'_> {
        t.mqtt()
    }
    mqtt::add_to_linker::<T, HasMqtt>(linker, view::<T>)?;
    logging::add_to_linker::<T, HasMqtt>(linker, view::<T>)?;
    types::add_to_linker::<T, HasMqtt>(linker, view::<T>)?;
    Ok(())
}

impl MqttCtxView<'_> {
    fn client(&self, handle: &Resource<MqttClient>) -> wasmtime::Result<MqttClient> {
        Ok(self.table.get(handle)?.clone())
    }

    fn count_host_time(&mut self, since: Instant) {
        self.ctx.host_time += since.elapsed();
    }
}

impl types::Host for MqttCtxView<'_> {}

impl mqtt::Host for MqttCtxView<'_> {}

impl mqtt::HostClient for MqttCtxView<'_> {
    async fn connect(
        &mut self,
        options: mqtt::ConnectOptions,
    ) -> wasmtime::Result<Result<Resource<MqttClient>, types::Error>> {
        let started = Instant::now();
        let allowed = self
            .ctx
            .policy
            .as_ref()
            .is_some_and(|allow| allow(&options.url));
        if !allowed {
            return Ok(Err(to_wit_error(model::Error::new(
                model::ErrorCode::NotAuthorized,
                format!("the host does not allow connecting to {}", options.url),
            ))));
        }
        let result = MqttClient::connect(from_wit_options(options)).await;
        self.count_host_time(started);
        match result {
            Ok(client) => Ok(Ok(self.table.push(client)?)),
            Err(e) => Ok(Err(to_wit_error(e))),
        }
    }

    async fn capabilities(
        &mut self,
        handle: Resource<MqttClient>,
    ) -> wasmtime::Result<mqtt::Capabilities> {
        let caps = self.table.get(&handle)?.capabilities();
        Ok(to_wit_capabilities(caps))
    }

    async fn publish(
        &mut self,
        handle: Resource<MqttClient>,
        batch: Vec<mqtt::Outgoing>,
    ) -> wasmtime::Result<Vec<Result<(), types::Error>>> {
        let started = Instant::now();
        let client = self.client(&handle)?;
        let batch = batch.into_iter().map(from_wit_outgoing).collect();
        let outcomes = client.publish(batch).await;
        self.count_host_time(started);
        Ok(outcomes
            .into_iter()
            .map(|r| r.map_err(to_wit_error))
            .collect())
    }

    async fn subscribe(
        &mut self,
        handle: Resource<MqttClient>,
        subscriptions: Vec<mqtt::Subscription>,
    ) -> wasmtime::Result<Result<Vec<mqtt::Granted>, types::Error>> {
        let started = Instant::now();
        let client = self.client(&handle)?;
        let subscriptions = subscriptions
            .into_iter()
            .map(from_wit_subscription)
            .collect();
        let result = client.subscribe(subscriptions).await;
        self.count_host_time(started);
        Ok(result
            .map(|granted| granted.into_iter().map(to_wit_granted).collect())
            .map_err(to_wit_error))
    }

    async fn unsubscribe(
        &mut self,
        handle: Resource<MqttClient>,
        filters: Vec<String>,
    ) -> wasmtime::Result<Result<(), types::Error>> {
        let started = Instant::now();
        let client = self.client(&handle)?;
        let result = client.unsubscribe(filters).await;
        self.count_host_time(started);
        Ok(result.map_err(to_wit_error))
    }

    async fn receive(
        &mut self,
        handle: Resource<MqttClient>,
        max: u32,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Vec<mqtt::Incoming>, types::Error>> {
        let started = Instant::now();
        let client = self.client(&handle)?;
        let result = client
            .receive(max as usize, Duration::from_millis(u64::from(timeout_ms)))
            .await;
        self.count_host_time(started);
        Ok(result
            .map(|batch| batch.into_iter().map(to_wit_incoming).collect())
            .map_err(to_wit_error))
    }

    async fn ack(
        &mut self,
        handle: Resource<MqttClient>,
        ids: Vec<u64>,
    ) -> wasmtime::Result<Result<(), types::Error>> {
        let started = Instant::now();
        let client = self.client(&handle)?;
        let result = client.ack(&ids).await;
        self.count_host_time(started);
        Ok(result.map_err(to_wit_error))
    }

    async fn disconnect(&mut self, handle: Resource<MqttClient>) -> wasmtime::Result<()> {
        let started = Instant::now();
        let client = self.client(&handle)?;
        client.disconnect().await;
        self.count_host_time(started);
        Ok(())
    }

    async fn drop(&mut self, handle: Resource<MqttClient>) -> wasmtime::Result<()> {
        // The client's event loop ends when its last handle goes.
        self.table.delete(handle)?;
        Ok(())
    }
}

impl logging::Host for MqttCtxView<'_> {
    async fn log(&mut self, level: logging::Level, message: String) -> wasmtime::Result<()> {
        let name = &self.ctx.log_name;
        match level {
            logging::Level::Debug => {
                tracing::debug!(target: "connector", operation = %name, "{message}")
            }
            logging::Level::Info => {
                tracing::info!(target: "connector", operation = %name, "{message}")
            }
            logging::Level::Warn => {
                tracing::warn!(target: "connector", operation = %name, "{message}")
            }
            logging::Level::Error => {
                tracing::error!(target: "connector", operation = %name, "{message}")
            }
        }
        Ok(())
    }
}

// ----- conversions between the WIT types and the shared model -----

fn from_wit_qos(qos: types::Qos) -> model::QoS {
    match qos {
        types::Qos::AtMostOnce => model::QoS::AtMostOnce,
        types::Qos::AtLeastOnce => model::QoS::AtLeastOnce,
        types::Qos::ExactlyOnce => model::QoS::ExactlyOnce,
    }
}

fn to_wit_qos(qos: model::QoS) -> types::Qos {
    match qos {
        model::QoS::AtMostOnce => types::Qos::AtMostOnce,
        model::QoS::AtLeastOnce => types::Qos::AtLeastOnce,
        model::QoS::ExactlyOnce => types::Qos::ExactlyOnce,
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

fn from_wit_options(o: mqtt::ConnectOptions) -> model::ConnectOptions {
    model::ConnectOptions {
        url: o.url,
        protocol: match o.protocol {
            mqtt::Protocol::V311 => model::Protocol::V311,
            mqtt::Protocol::V5 => model::Protocol::V5,
        },
        client_id: o.client_id,
        username: o.username,
        password: o.password,
        keep_alive: Duration::from_secs(u64::from(o.keep_alive_secs)),
        clean_start: o.clean_start,
        session_expiry: o.session_expiry_secs,
        connect_timeout: Duration::from_millis(u64::from(o.connect_timeout_ms)),
        tls: o.tls.map(|t| model::TlsOptions {
            ca_file: t.ca_file,
            client_cert_file: t.client_cert_file,
            client_key_file: t.client_key_file,
            alpn: t.alpn,
        }),
        reconnect_min: Duration::from_millis(u64::from(o.reconnect_min_ms)),
        reconnect_max: Duration::from_millis(u64::from(o.reconnect_max_ms)),
        will: o.will.map(|w| model::Will {
            topic: w.topic,
            payload: w.payload,
            qos: from_wit_qos(w.qos),
            retain: w.retain,
            delay_interval: w.delay_interval,
            properties: from_wit_properties(w.properties),
        }),
        inflight_window: o.inflight_window,
        receive_maximum: o.receive_maximum,
    }
}

fn to_wit_capabilities(c: model::Capabilities) -> mqtt::Capabilities {
    mqtt::Capabilities {
        protocol: match c.protocol {
            model::Protocol::V311 => mqtt::Protocol::V311,
            model::Protocol::V5 => mqtt::Protocol::V5,
        },
        session_present: c.session_present,
        retain_available: c.retain_available,
        maximum_qos: to_wit_qos(c.maximum_qos),
        wildcard_subscription_available: c.wildcard_subscription_available,
        shared_subscription_available: c.shared_subscription_available,
        subscription_identifiers_available: c.subscription_identifiers_available,
        maximum_packet_size: c.maximum_packet_size,
        topic_alias_maximum: c.topic_alias_maximum,
        receive_maximum: c.receive_maximum,
    }
}

fn from_wit_outgoing(o: mqtt::Outgoing) -> model::Outgoing {
    model::Outgoing {
        topic: o.topic,
        payload: o.payload,
        qos: from_wit_qos(o.qos),
        retain: o.retain,
        properties: from_wit_properties(o.properties),
    }
}

fn from_wit_subscription(s: mqtt::Subscription) -> model::Subscription {
    model::Subscription {
        filter: s.filter,
        qos: from_wit_qos(s.qos),
        no_local: s.no_local,
        retain_as_published: s.retain_as_published,
        retain_handling: s.retain_handling,
    }
}

fn to_wit_granted(g: model::Granted) -> mqtt::Granted {
    mqtt::Granted {
        filter: g.filter,
        qos: g.qos.map(to_wit_qos),
        reason_code: g.reason_code,
    }
}

fn to_wit_incoming(m: model::Incoming) -> mqtt::Incoming {
    mqtt::Incoming {
        id: m.id,
        topic: m.topic,
        payload: m.payload,
        qos: to_wit_qos(m.qos),
        retain: m.retain,
        duplicate: m.duplicate,
        properties: to_wit_properties(m.properties),
        subscription_ids: m.subscription_ids,
    }
}

/// The WIT form of a model error.
pub(crate) fn to_wit_error(e: model::Error) -> types::Error {
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
