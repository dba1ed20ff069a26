//! [`MqttClient`]: the handle callers (and the WIT `client` resource) use.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use connector::model::{
    Capabilities, ConnectOptions, Error, ErrorCode, Granted, Incoming, MqttVersion, Outgoing,
    Subscription, TopicFilter,
};
use connector::url::BrokerUrl;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::batch::Batch;
use super::core::{closed, connection_lost, Core};
use super::driver::{self, Settings, Shared};
use super::link::Link;

/// The shortest reconnect delay used, whatever the options say, so that a
/// broker that accepts and drops connections is not hammered.
const MIN_RECONNECT: Duration = Duration::from_millis(10);

/// A connection to one MQTT broker, with its own event loop task.
///
/// Cheap to clone; all clones share the connection. The event loop task
/// stops when [`MqttClient::disconnect`] is called or the last clone is
/// dropped (then without a DISCONNECT, so the broker keeps the session and
/// publishes the will, as for a crash).
#[derive(Clone)]
pub struct MqttClient {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// How long `disconnect` waits for the DISCONNECT to be written.
    close_wait: Duration,
    /// How long an operation waits for a reconnect before it fails.
    reconnect_wait: Duration,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let task = self.task.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(task) = task.take() {
            task.abort();
        }
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::InvalidConfig, message)
}

/// Where to connect: the options' URL, parsed with the connector's parser.
fn broker_url(url: &str) -> Result<BrokerUrl, Error> {
    BrokerUrl::parse(url).map_err(|e| invalid(format!("invalid broker url '{url}': {e}")))
}

/// Checks what rumqttc would reject (or panic on) and what MQTT forbids
/// (topics were parsed where they entered).
fn check_options(options: &ConnectOptions) -> Result<(), Error> {
    if options.inflight_window == 0 {
        return Err(invalid("inflight_window must be at least 1"));
    }
    if options.protocol == MqttVersion::V5 && options.receive_maximum == 0 {
        return Err(invalid("receive_maximum must be at least 1"));
    }
    if options.keep_alive > Duration::from_secs(u64::from(u16::MAX)) {
        return Err(invalid("keep_alive must be at most 65535 seconds"));
    }
    if options.connect_timeout.is_zero() {
        return Err(invalid("connect_timeout must be more than zero"));
    }
    if options.password.is_some() && options.username.is_none() {
        return Err(invalid("a password needs a username"));
    }
    Ok(())
}

fn check_subscription(sub: &Subscription, protocol: MqttVersion) -> Result<(), Error> {
    if sub.retain_handling > 2 {
        return Err(invalid(format!(
            "retain_handling of '{}' must be 0, 1 or 2",
            sub.filter
        )));
    }
    if protocol == MqttVersion::V5 && sub.no_local && sub.filter.shared().is_some() {
        // MQTT-3.8.3-4
        return Err(invalid(format!(
            "no_local cannot be set on the shared subscription '{}'",
            sub.filter
        )));
    }
    Ok(())
}

async fn outcome<T>(rx: oneshot::Receiver<Result<T, Error>>) -> Result<T, Error> {
    // A dropped sender means the core gave up on the operation without an
    // answer; whether the broker got it is unknown.
    rx.await.unwrap_or_else(|_| Err(connection_lost()))
}

impl MqttClient {
    /// Connects and waits for the CONNACK (at most `connect_timeout`).
    ///
    /// Fails with `InvalidConfig` for bad options, `NotAuthorized` when the
    /// broker refuses the credentials (with its reason code),
    /// `ConnectionFailed` for any other refusal or network error, and
    /// `Timeout` when no CONNACK comes in time. There are no retries before
    /// the first connection; after it, the client reconnects by itself.
    pub async fn connect(options: ConnectOptions) -> Result<MqttClient, Error> {
        check_options(&options)?;
        let url = broker_url(&options.url)?;
        let link = Link::new(&options, &url)?;
        let core = Core::new(
            link.sender(),
            options.protocol,
            options.inflight_window,
            options.send_timeout,
        );
        let shared = Arc::new(Shared::new(core));
        let reconnect_min = options.reconnect_min.max(MIN_RECONNECT);
        let settings = Settings {
            url: options.url.clone(),
            connect_timeout: options.connect_timeout,
            reconnect_min,
            reconnect_max: options.reconnect_max.max(reconnect_min),
        };
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(driver::run(link, Arc::clone(&shared), settings, tx));
        // Built before waiting, so that a cancelled connect stops the task.
        let client = MqttClient {
            inner: Arc::new(Inner {
                shared,
                task: Mutex::new(Some(task)),
                close_wait: options.connect_timeout + Duration::from_secs(1),
                reconnect_wait: options.connect_timeout,
            }),
        };
        match rx.await {
            Ok(Ok(())) => Ok(client),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::new(
                ErrorCode::Internal,
                "the client's event loop ended before connecting",
            )),
        }
    }

    /// Waits (at most the connect timeout) while the client reconnects, so
    /// an operation asked during a brief reconnect runs on the new
    /// connection instead of failing; after the wait it fails as usual.
    async fn wait_connected(&self) {
        let shared = &self.inner.shared;
        let deadline = tokio::time::Instant::now() + self.inner.reconnect_wait;
        loop {
            // Registered before the phase is read, so a CONNACK in between
            // is not missed.
            let notified = shared.connected.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let phase = shared.core().phase();
            if !matches!(
                phase,
                super::core::Phase::Connecting | super::core::Phase::Down
            ) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// The broker's capabilities from its last CONNACK.
    pub fn capabilities(&self) -> Capabilities {
        self.inner.shared.core().capabilities()
    }

    /// QoS 0 messages dropped so far because `receive` did not keep up.
    pub fn dropped_messages(&self) -> u64 {
        self.inner.shared.core().dropped_qos0()
    }

    /// Publishes a batch, pipelined within the in-flight window, and returns
    /// one outcome per message in order, each after its PUBACK (QoS 1),
    /// PUBCOMP (QoS 2) or write (QoS 0).
    ///
    /// A message fails alone: `InvalidDocument` for one too large for the
    /// broker, `Unsupported` for a QoS or retain flag the 5.0
    /// broker does not offer, `BrokerRejected` with the reason code when the
    /// broker refuses it.
    ///
    /// A lost connection does not fail a message by itself: the messages
    /// not yet written go out on the next connection, those in flight are
    /// resent by the resumed session (DUP set), and each outcome still comes
    /// from its ack. They fail with `Timeout` when the connection stays lost
    /// longer than the send timeout (with `ConnectionFailed` at once for a
    /// zero timeout), and those in flight with `ConnectionFailed` when the
    /// broker answers the reconnect with a new session.
    pub async fn publish(&self, batch: Vec<Outgoing>) -> Vec<Result<(), Error>> {
        self.publish_each(batch.into_iter().map(Ok).collect()).await
    }

    /// [`MqttClient::publish`] for a batch parsed message by message where
    /// it entered (the WIT capability): a message that failed to parse keeps
    /// its error at its place among the outcomes, the others are published.
    pub async fn publish_each(
        &self,
        batch: Vec<Result<Outgoing, Error>>,
    ) -> Vec<Result<(), Error>> {
        let (pending, entries) = Batch::new(batch.len());
        {
            let mut core = self.inner.shared.core();
            for (message, entry) in batch.into_iter().zip(entries) {
                match message {
                    Ok(message) => core.submit_publish(message, entry),
                    Err(e) => entry.resolve(Err(e)),
                }
            }
            core.pump();
        }
        pending.outcomes().await
    }

    /// Subscribes and returns the broker's answer for each filter, in order.
    ///
    /// On 3.1.1 only the QoS of each subscription is sent. A filter the
    /// broker refuses comes back with `qos: None` and its reason code. The
    /// client restores granted subscriptions after a reconnect when the
    /// broker did not keep the session.
    pub async fn subscribe(&self, subs: Vec<Subscription>) -> Result<Vec<Granted>, Error> {
        let protocol = self.capabilities().protocol;
        for sub in &subs {
            check_subscription(sub, protocol)?;
        }
        if subs.is_empty() {
            return match self.inner.shared.core().phase() {
                super::core::Phase::Closed => Err(closed()),
                _ => Ok(Vec::new()),
            };
        }
        // Subscribing again is harmless, so a connection lost before the
        // SUBACK (a resumed session's first packets can end it) is retried
        // on the next connection rather than failing the operation.
        let mut attempts = 0;
        loop {
            self.wait_connected().await;
            let (tx, rx) = oneshot::channel();
            self.inner.shared.core().submit_subscribe(subs.clone(), tx);
            let result = outcome(rx).await;
            attempts += 1;
            match result {
                Err(e) if e.code == ErrorCode::ConnectionFailed && attempts < 3 => continue,
                other => return other,
            }
        }
    }

    /// Unsubscribes from each filter (one UNSUBSCRIBE each) and waits for the
    /// broker's answers; the first failure is returned.
    pub async fn unsubscribe(&self, filters: Vec<TopicFilter>) -> Result<(), Error> {
        let mut pending = Vec::with_capacity(filters.len());
        {
            let mut core = self.inner.shared.core();
            if core.phase() == super::core::Phase::Closed {
                return Err(closed());
            }
            for filter in filters {
                let (tx, rx) = oneshot::channel();
                core.submit_unsubscribe(filter, tx);
                pending.push(rx);
            }
        }
        let mut result = Ok(());
        for rx in pending {
            let r = outcome(rx).await;
            if result.is_ok() {
                result = r;
            }
        }
        result
    }

    /// Waits up to `timeout` for the first delivery and returns at most
    /// `max`, oldest first, without waiting for more once one is there.
    ///
    /// QoS 1 and 2 deliveries stay unacknowledged until [`MqttClient::ack`].
    /// While reconnecting this simply waits; it fails only once closed.
    pub async fn receive(&self, max: usize, timeout: Duration) -> Result<Vec<Incoming>, Error> {
        let shared = &self.inner.shared;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before looking, so a delivery in between wakes us.
            let notified = shared.incoming.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut core = shared.core();
                if core.phase() == super::core::Phase::Closed {
                    return Err(closed());
                }
                if max == 0 {
                    return Ok(Vec::new());
                }
                if core.has_ready() {
                    return Ok(core.take_ready(max));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    /// Acknowledges deliveries. PUBACK / PUBREC go out in arrival order: an
    /// ack waits until every earlier QoS 1 or 2 delivery is acked too.
    /// Unknown ids and QoS 0 ids are ignored. Returns once the broker has
    /// answered the PUBRECs sent with PUBREL, so a crash after it cannot
    /// make the broker send those QoS 2 messages again (a PUBACK is not
    /// waited for: QoS 1 allows the message again). A PUBREC the
    /// connection lost waits for the next connection (the broker's PUBREL,
    /// maybe after it sends the message again and gets the PUBREC again)
    /// up to the send timeout, then fails with `Timeout`.
    ///
    /// Ids of deliveries that came on a connection since lost cannot be
    /// acknowledged: the broker delivers those messages again. The others
    /// are acknowledged, and the call fails with `ConnectionFailed` saying
    /// how many, so a pipeline does not take them as done.
    pub async fn ack(&self, ids: &[u64]) -> Result<(), Error> {
        let (settled, acks_settled) = oneshot::channel();
        let voided = {
            let mut core = self.inner.shared.core();
            if core.phase() == super::core::Phase::Closed {
                return Err(closed());
            }
            let voided = core.ack(ids);
            core.when_acks_settled(settled);
            voided
        };
        let settled = outcome(acks_settled).await;
        match voided {
            0 => settled,
            voided => Err(Error::new(
                ErrorCode::ConnectionFailed,
                format!(
                    "{voided} of the {} deliveries acknowledged came on a connection since lost: \
                     they are not acknowledged, and the broker delivers them again",
                    ids.len()
                ),
            )),
        }
    }

    /// Disconnects with a normal DISCONNECT (so the broker discards the
    /// will) and stops the event loop. Every later call fails with `Closed`.
    pub async fn disconnect(&self) {
        let shared = &self.inner.shared;
        shared.core().close();
        shared.incoming.notify_waiters();
        shared.connected.notify_waiters();
        shared.stop.notify_one();
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut task) = task {
            if tokio::time::timeout(self.inner.close_wait, &mut task)
                .await
                .is_err()
            {
                tracing::warn!("the event loop did not stop in time; dropping the connection");
                task.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_are_parsed_by_the_connector_and_failures_are_config_errors() {
        let url = broker_url("ssl://[::1]:8884").unwrap();
        assert_eq!(
            (url.tls, url.authority_host().as_ref(), url.port),
            (true, "[::1]", 8884)
        );
        let e = broker_url("ws://h").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        assert_eq!(
            e.message,
            "invalid broker url 'ws://h': unsupported scheme \"ws\": use mqtt:// (plain) or mqtts:// (TLS)"
        );
    }
}
