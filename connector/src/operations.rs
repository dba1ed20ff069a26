//! The Send and Listen operations, written against the host's MQTT
//! capability as traits, so they run natively in tests with a fake host and
//! in the component with the real one.

use crate::config::{ConnectionConfig, SendConfig};
use crate::document::Document;
use crate::listen::ListenState;
use crate::model::{
    Capabilities, ConnectOptions, Error, ErrorCode, Granted, Incoming, Outgoing, Subscription,
    TopicFilter,
};
use crate::validate::Kind;
use std::cell::RefCell;
use std::time::{Duration, Instant};

/// Severity of a log line sent to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Detail for debugging.
    Debug,
    /// Normal progress.
    Info,
    /// Something the user should know.
    Warn,
    /// A failure.
    Error,
}

/// A connection to a broker, as the host provides it.
pub trait Client {
    /// The broker's capabilities from its CONNACK.
    fn capabilities(&self) -> Capabilities;
    /// Publishes a batch; one outcome per message, after its acknowledgement.
    fn publish(&self, batch: Vec<Outgoing>) -> Vec<Result<(), Error>>;
    /// Subscribes.
    fn subscribe(&self, subscriptions: Vec<Subscription>) -> Result<Vec<Granted>, Error>;
    /// Unsubscribes.
    fn unsubscribe(&self, filters: Vec<TopicFilter>) -> Result<(), Error>;
    /// Waits up to `timeout_ms` for at most `max` messages.
    fn receive(&self, max: u32, timeout_ms: u32) -> Result<Vec<Incoming>, Error>;
    /// Acknowledges deliveries.
    fn ack(&self, ids: &[u64]) -> Result<(), Error>;
    /// Disconnects normally.
    fn disconnect(&self);
}

/// The host: connects clients and takes log lines.
pub trait Host {
    /// The client type.
    type Client: Client;
    /// Connects and waits for the CONNACK.
    fn connect(&self, options: ConnectOptions) -> Result<Self::Client, Error>;
    /// Writes a log line.
    fn log(&self, level: LogLevel, message: &str);
}

/// What `describe` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// Connector name.
    pub name: String,
    /// Connector version.
    pub version: String,
    /// What Send does.
    pub send_description: String,
    /// What Listen does.
    pub listen_description: String,
    /// JSON Schema of the connection configuration.
    pub connection_schema: String,
    /// JSON Schema of the Send configuration.
    pub send_schema: String,
    /// JSON Schema of the Listen configuration.
    pub listen_schema: String,
}

/// The connector's metadata and schemas.
pub fn describe() -> Description {
    Description {
        name: "mqtt".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        send_description: "publish documents to an MQTT broker, one message each, acknowledged at their QoS"
            .to_owned(),
        listen_description: "subscribe to topic filters and produce one document per message, acknowledged on commit"
            .to_owned(),
        connection_schema: crate::config::connection_schema().to_string(),
        send_schema: crate::config::send_schema().to_string(),
        listen_schema: crate::config::listen_schema().to_string(),
    }
}

fn connect<H: Host>(host: &H, connection: &str) -> Result<(H::Client, ConnectionConfig), Error> {
    let config = crate::validate::parse_connection(connection)
        .map_err(|p| crate::validate::config_error(Kind::Connection, &p))?;
    let client = host.connect(config.connect_options())?;
    Ok((client, config))
}

/// A Send operation: a connection and its Send configuration.
pub struct SendOperation<H: Host> {
    host: H,
    client: H::Client,
    connection: ConnectionConfig,
    config: SendConfig,
    closed: RefCell<bool>,
}

impl<H: Host> SendOperation<H> {
    /// Checks both configurations, then connects.
    ///
    /// # Errors
    ///
    /// Every configuration problem in one error, or the connection's error.
    pub fn open(host: H, connection: &str, config: &str) -> Result<Self, Error> {
        let config = crate::validate::parse_send(config)
            .map_err(|p| crate::validate::config_error(Kind::Send, &p))?;
        let (client, connection) = connect(&host, connection)?;
        Ok(SendOperation {
            host,
            client,
            connection,
            config,
            closed: RefCell::new(false),
        })
    }

    /// Sends a batch: every document is checked first, the valid ones go to
    /// the broker in one call, and each gets its own result.
    pub fn send(&self, documents: &[Document]) -> Vec<Result<(), Error>> {
        if *self.closed.borrow() {
            let closed = Error::new(ErrorCode::Closed, "the send operation is closed");
            return (0..documents.len())
                .map(|i| Err(closed.clone().for_document(i)))
                .collect();
        }
        let caps = self
            .connection
            .effective_capabilities(self.client.capabilities());
        let mut plan = crate::send::plan(&self.config, &caps, documents);
        for warning in &plan.warnings {
            self.host.log(LogLevel::Warn, warning);
        }
        let batch: Vec<Outgoing> = std::mem::take(&mut plan.batch);
        let outcomes = if batch.is_empty() {
            Vec::new()
        } else {
            self.client.publish(batch)
        };
        crate::send::merge(plan, outcomes)
    }

    /// Disconnects; later sends fail with `closed`.
    pub fn close(&self) {
        if !self.closed.replace(true) {
            self.client.disconnect();
        }
    }
}

/// A Listen operation: subscribed, handing out documents in batches and
/// acknowledging them on commit.
pub struct ListenOperation<H: Host> {
    host: H,
    client: H::Client,
    state: RefCell<ListenState>,
    opened: Instant,
    closed: RefCell<bool>,
}

impl<H: Host> ListenOperation<H> {
    /// Checks both configurations, connects and subscribes.
    ///
    /// # Errors
    ///
    /// Every configuration problem in one error, the connection's error, or
    /// a refused subscription naming its filter and the broker's reason.
    pub fn open(host: H, connection: &str, config: &str) -> Result<Self, Error> {
        let config = crate::validate::parse_listen(config)
            .map_err(|p| crate::validate::config_error(Kind::Listen, &p))?;
        let (client, _connection) = connect(&host, connection)?;
        let caps = client.capabilities();
        let subscriptions = config.subscriptions(caps.protocol)?;
        let granted = client.subscribe(subscriptions)?;
        for g in &granted {
            if g.qos.is_none() {
                client.disconnect();
                return Err(Error::new(
                    ErrorCode::BrokerRejected,
                    format!("the broker refused the subscription to {:?}", g.filter),
                )
                .with_reason_code(g.reason_code));
            }
        }
        let state = ListenState::new(&config, caps.protocol);
        host.log(
            LogLevel::Debug,
            &format!("subscribed to {} filter(s)", granted.len()),
        );
        Ok(ListenOperation {
            host,
            client,
            state: RefCell::new(state),
            opened: Instant::now(),
            closed: RefCell::new(false),
        })
    }

    /// Waits up to `timeout_ms` and returns at most `max` documents.
    ///
    /// # Errors
    ///
    /// When the connection is gone for good or the operation was closed.
    pub fn next(&self, max: u32, timeout_ms: u32) -> Result<Vec<Document>, Error> {
        if *self.closed.borrow() {
            return Err(Error::new(
                ErrorCode::Closed,
                "the listen operation is closed",
            ));
        }
        let mut state = self.state.borrow_mut();
        let limit = state.receive_limit(max);
        let batch = if limit > 0 {
            let now = self.opened.elapsed();
            let timeout = state.receive_timeout(Duration::from_millis(u64::from(timeout_ms)), now);
            let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
            self.client.receive(limit, timeout_ms)?
        } else {
            // Documents from an earlier receive are still waiting.
            Vec::new()
        };
        let received = state.accept(batch, max, self.opened.elapsed());
        if !received.ack_now.is_empty() {
            // Filtered out by the retained policy: acknowledged at once so
            // the broker does not send them again. Those of a connection
            // lost meanwhile come again and are filtered again.
            if let Err(e) = self.client.ack(&received.ack_now) {
                if e.code == ErrorCode::Closed {
                    return Err(e);
                }
            }
        }
        Ok(received.documents)
    }

    /// Acknowledges documents the pipeline has taken.
    ///
    /// # Errors
    ///
    /// `Closed` when the operation is closed; `ConnectionFailed`, saying
    /// how many, when some of the documents came on a connection since
    /// lost: those are not acknowledged and come again (the others are).
    pub fn commit(&self, ids: &[u64]) -> Result<(), Error> {
        self.client.ack(ids)
    }

    /// Whether the operation has finished (a retained snapshot went quiet).
    pub fn done(&self) -> bool {
        let mut state = self.state.borrow_mut();
        let now = self.opened.elapsed();
        if state.would_finish(now) {
            // Retained messages may still wait in the host, unseen by the
            // guest: take them (without waiting) before declaring the
            // snapshot complete, or they would be filtered out and lost.
            let limit = state.receive_limit(u32::MAX);
            if let Ok(batch) = self.client.receive(limit, 0) {
                let received = state.accept(batch, 0, now);
                if !received.ack_now.is_empty() {
                    // Best effort: a failed ack means redelivery, not loss.
                    let _ = self.client.ack(&received.ack_now);
                }
            }
        }
        state.done(now)
    }

    /// Disconnects; later calls fail with `closed`.
    pub fn close(&self) {
        if !self.closed.replace(true) {
            self.host.log(LogLevel::Debug, "listen operation closed");
            self.client.disconnect();
        }
    }
}
