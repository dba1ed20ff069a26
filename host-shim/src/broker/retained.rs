//! The retained message store. (Interface stub: being implemented.)
#![allow(dead_code, unused_variables)]

use rumqttc::v5::mqttbytes::v5::Publish;
use std::sync::Arc;
use std::time::Instant;

/// A retained message as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RetainedMessage {
    /// The PUBLISH as received (topic set, RETAIN set, no topic alias, no
    /// packet id); its payload `Bytes` are shared with every delivery.
    pub publish: Publish,
    /// When it was stored.
    pub stored_at: Instant,
    /// When it expires, from its Message Expiry Interval.
    pub expires_at: Option<Instant>,
}

/// Retained messages by topic name, with wildcard lookup.
#[derive(Debug, Default)]
pub struct RetainedStore {}

impl RetainedStore {
    /// An empty store.
    pub fn new() -> Self {
        RetainedStore::default()
    }

    /// Stores `message` for `topic`, replacing any earlier one.
    pub fn insert(&mut self, topic: &str, message: Arc<RetainedMessage>) {
        todo!()
    }

    /// Deletes the retained message of `topic`; true if there was one.
    pub fn remove(&mut self, topic: &str) -> bool {
        todo!()
    }

    /// The retained message of exactly `topic`, unless expired at `now`.
    pub fn get(&self, topic: &str, now: Instant) -> Option<Arc<RetainedMessage>> {
        todo!()
    }

    /// Appends every unexpired retained message whose topic matches `filter`
    /// (a valid filter without `$share/`), in topic order.
    pub fn matching(&self, filter: &str, now: Instant, out: &mut Vec<Arc<RetainedMessage>>) {
        todo!()
    }

    /// Deletes messages expired at `now`; returns how many.
    pub fn purge_expired(&mut self, now: Instant) -> usize {
        todo!()
    }

    /// Number of retained messages stored.
    pub fn len(&self) -> usize {
        todo!()
    }
}
