//! The MQTT capability: the host side of the world's `mqtt` and `logging`
//! imports, added to a [`Linker`] in one call the way `wasmtime-wasi` adds
//! WASI.
//!
//! An embedder keeps an [`MqttCtx`] and a [`ResourceTable`] in its store
//! data, implements [`MqttView`] to lend both, and calls [`add_to_linker`].
//! Each guest `client` is a [`MqttClient`] in the table; dropping the guest's
//! handle drops the client and ends its connection.
//!
//! This is where a guest's strings become typed: the WIT records convert
//! to the connector's model with the conversions the component uses too
//! ([`connector::wit_conversions!`]), parsing each topic and filter once.
//! A message whose topic does not parse fails alone; a subscription or a
//! will topic that does not fails the call, as an `invalid-config` error.

use super::bindings::mqtt_connector::connector::{logging, mqtt, types};
use super::policy::Policy;
use crate::mqtt::MqttClient;
use connector::model;
use std::time::{Duration, Instant};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

connector::wit_conversions!(types = types, mqtt = mqtt);

/// Per-store state of the MQTT capability.
///
/// Deny by default: [`MqttCtx::new`] lets the guest connect to no broker
/// and name no file; [`MqttCtx::policy`] says what it may.
pub struct MqttCtx {
    policy: Policy,
    /// Clients the guest holds now, against the policy's limit.
    clients: usize,
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
    /// A context that denies every broker and file. Guest log lines are
    /// named `connector`.
    pub fn new() -> Self {
        MqttCtx {
            policy: Policy::closed(),
            clients: 0,
            log_name: "connector".to_owned(),
            host_time: Duration::ZERO,
        }
    }

    /// Lets the guest reach what `policy` allows.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
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
        let options = match model::ConnectOptions::try_from(options) {
            Ok(options) => options,
            Err(e) => return Ok(Err(e.into())),
        };
        let refusal = self.ctx.policy.refusal(&options).or_else(|| {
            let limit = self.ctx.policy.clients_limit();
            (self.ctx.clients >= limit)
                .then(|| format!("the host allows at most {limit} clients at once"))
        });
        if let Some(why) = refusal {
            tracing::warn!(operation = %self.ctx.log_name, "refused to the connector: {why}");
            return Ok(Err(
                model::Error::new(model::ErrorCode::NotAuthorized, why).into()
            ));
        }
        let result = MqttClient::connect(options).await;
        self.count_host_time(started);
        match result {
            Ok(client) => {
                let handle = self.table.push(client)?;
                self.ctx.clients += 1;
                Ok(Ok(handle))
            }
            Err(e) => Ok(Err(e.into())),
        }
    }

    async fn capabilities(
        &mut self,
        handle: Resource<MqttClient>,
    ) -> wasmtime::Result<mqtt::Capabilities> {
        Ok(self.table.get(&handle)?.capabilities().into())
    }

    async fn publish(
        &mut self,
        handle: Resource<MqttClient>,
        batch: Vec<mqtt::Outgoing>,
    ) -> wasmtime::Result<Vec<Result<(), types::Error>>> {
        let started = Instant::now();
        let client = self.client(&handle)?;
        let batch = batch.into_iter().map(model::Outgoing::try_from).collect();
        let outcomes = client.publish_each(batch).await;
        self.count_host_time(started);
        Ok(outcomes
            .into_iter()
            .map(|r| r.map_err(Into::into))
            .collect())
    }

    async fn subscribe(
        &mut self,
        handle: Resource<MqttClient>,
        subscriptions: Vec<mqtt::Subscription>,
    ) -> wasmtime::Result<Result<Vec<mqtt::Granted>, types::Error>> {
        let started = Instant::now();
        let client = self.client(&handle)?;
        let parsed: Result<Vec<_>, _> = subscriptions
            .into_iter()
            .map(model::Subscription::try_from)
            .collect();
        let result = match parsed {
            Ok(subscriptions) => client.subscribe(subscriptions).await,
            Err(e) => Err(e),
        };
        self.count_host_time(started);
        Ok(result
            .map(|granted| granted.into_iter().map(Into::into).collect())
            .map_err(Into::into))
    }

    async fn unsubscribe(
        &mut self,
        handle: Resource<MqttClient>,
        filters: Vec<String>,
    ) -> wasmtime::Result<Result<(), types::Error>> {
        let started = Instant::now();
        let client = self.client(&handle)?;
        let parsed: Result<Vec<_>, _> = filters
            .iter()
            .map(|f| model::parse_topic_filter(f))
            .collect();
        let result = match parsed {
            Ok(filters) => client.unsubscribe(filters).await,
            Err(e) => Err(e),
        };
        self.count_host_time(started);
        Ok(result.map_err(Into::into))
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
            .map(|batch| batch.into_iter().map(Into::into).collect())
            .map_err(Into::into))
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
        Ok(result.map_err(Into::into))
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
        self.ctx.clients = self.ctx.clients.saturating_sub(1);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn wit_options() -> mqtt::ConnectOptions {
        mqtt::ConnectOptions {
            url: "mqtt://127.0.0.1:1883".into(),
            protocol: mqtt::Protocol::V311,
            client_id: "c".into(),
            username: None,
            password: None,
            keep_alive_secs: 30,
            clean_start: true,
            session_expiry_secs: 0,
            connect_timeout_ms: 1500,
            tls: None,
            reconnect_min_ms: 100,
            reconnect_max_ms: 1000,
            send_timeout_ms: 2500,
            will: Some(mqtt::Will {
                topic: "status/c".into(),
                payload: b"gone".to_vec(),
                qos: types::Qos::AtLeastOnce,
                retain: true,
                delay_interval: Some(5),
                properties: mqtt::MessageProperties {
                    payload_format: None,
                    message_expiry: None,
                    content_type: Some("text/plain".into()),
                    response_topic: None,
                    correlation_data: None,
                    user_properties: vec![("k".into(), "v".into())],
                },
            }),
            inflight_window: 20,
            receive_maximum: 100,
        }
    }

    #[test]
    fn options_round_trip_through_the_model() {
        let options = model::ConnectOptions::try_from(wit_options()).unwrap();
        assert_eq!(options.protocol, model::MqttVersion::V311);
        assert_eq!(options.keep_alive, Duration::from_secs(30));
        assert_eq!(options.connect_timeout, Duration::from_millis(1500));
        assert_eq!(options.send_timeout, Duration::from_millis(2500));
        let will = options.will.as_ref().unwrap();
        assert_eq!(will.topic, "status/c");
        assert_eq!(will.qos, model::QoS::AtLeastOnce);
        assert_eq!(mqtt::ConnectOptions::from(options), wit_options());
    }

    #[test]
    fn topics_from_the_guest_are_parsed_once_with_the_host_s_messages() {
        let mut options = wit_options();
        if let Some(will) = options.will.as_mut() {
            will.topic = "status/#".into();
        }
        let e = model::ConnectOptions::try_from(options).unwrap_err();
        assert_eq!(e.code, model::ErrorCode::InvalidConfig);
        assert!(
            e.message.starts_with("invalid will topic 'status/#': "),
            "{e}"
        );

        let outgoing = |topic: &str| mqtt::Outgoing {
            topic: topic.into(),
            payload: Vec::new(),
            qos: types::Qos::AtMostOnce,
            retain: false,
            properties: model::MessageProperties::default().into(),
        };
        let message = model::Outgoing::try_from(outgoing("a/b")).unwrap();
        assert_eq!(message.topic, "a/b");
        let e = model::Outgoing::try_from(outgoing("a/+")).unwrap_err();
        assert_eq!(e.code, model::ErrorCode::InvalidDocument);
        assert!(e.message.starts_with("invalid topic name 'a/+': "), "{e}");

        let subscription = mqtt::Subscription {
            filter: "$share/g/a/#".into(),
            qos: types::Qos::ExactlyOnce,
            no_local: false,
            retain_as_published: true,
            retain_handling: 1,
        };
        let parsed = model::Subscription::try_from(subscription.clone()).unwrap();
        assert_eq!(parsed.filter.shared().unwrap().filter, "a/#");
        assert_eq!(mqtt::Subscription::from(parsed), subscription);
        let e = model::Subscription::try_from(mqtt::Subscription {
            filter: "a/#/b".into(),
            ..subscription
        })
        .unwrap_err();
        assert_eq!(e.code, model::ErrorCode::InvalidConfig);
        assert!(
            e.message.starts_with("invalid topic filter 'a/#/b': "),
            "{e}"
        );
    }

    #[test]
    fn errors_and_documents_convert_both_ways() {
        let error = model::Error::new(model::ErrorCode::BrokerRejected, "refused")
            .with_reason_code(0x87)
            .for_document(2);
        let wit = types::Error::from(error.clone());
        assert_eq!(wit.code, types::ErrorCode::BrokerRejected);
        assert_eq!(model::Error::from(wit), error);

        let document = connector::document::Document::new("x")
            .with("mqtt.qos", connector::document::Value::Integer(1))
            .with(
                "mqtt.user-properties",
                connector::document::Value::Pairs(vec![("a".into(), "b".into())]),
            );
        let wit = types::Document::from(document.clone());
        assert_eq!(wit.properties[0].value, types::Value::Integer(1));
        assert_eq!(connector::document::Document::from(wit), document);
    }

    /// A guest's connect call, as any guest may make it, under `policy`.
    async fn connect_under(
        policy: Policy,
        options: mqtt::ConnectOptions,
    ) -> Result<(), types::Error> {
        let mut ctx = MqttCtx::new().policy(policy);
        let mut table = ResourceTable::new();
        let mut view = MqttCtxView {
            ctx: &mut ctx,
            table: &mut table,
        };
        mqtt::HostClient::connect(&mut view, options)
            .await
            .expect("no trap")
            .map(|_| ())
    }

    #[tokio::test]
    async fn a_guest_reaches_only_what_the_policy_allows() {
        // Another broker: refused before any connection is tried.
        let e = connect_under(
            Policy::closed().allow_broker("mqtt://allowed.example:1883"),
            wit_options(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, types::ErrorCode::NotAuthorized);
        assert!(e.message.contains("mqtt://127.0.0.1:1883"), "{}", e.message);

        // The allowed broker, but a file the host was not told about.
        let mut options = wit_options();
        options.url = "mqtts://127.0.0.1:8883".into();
        options.tls = Some(mqtt::TlsOptions {
            ca_file: Some("/etc/passwd".into()),
            client_cert_file: None,
            client_key_file: None,
            alpn: Vec::new(),
        });
        let e = connect_under(
            Policy::closed().allow_broker("mqtts://127.0.0.1:8883"),
            options,
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, types::ErrorCode::NotAuthorized);
        assert!(e.message.contains("/etc/passwd"), "{}", e.message);

        // No client at all allowed.
        let e = connect_under(
            Policy::closed().allow_any_broker().max_clients(0),
            wit_options(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, types::ErrorCode::NotAuthorized);
        assert!(e.message.contains("at most 0 clients"), "{}", e.message);
    }
}
