//! The Listen operation's logic, without I/O: which received messages
//! become documents, which are acknowledged at once because they are
//! filtered out, batch sizes, and when a retained snapshot is finished.
//!
//! Time is passed in by the caller as the [`Duration`] since the operation
//! opened, so the state machine is deterministic and tested without clocks.
//!
//! Retained policy ([`RetainedPolicy`]):
//!
//! - `deliver`: every message becomes a document.
//! - `skip`: messages with RETAIN=1 are dropped. On MQTT 5.0 the
//!   subscription already asks for Retain Handling 2, so the broker sends
//!   none; they are still dropped here in case a broker does. On 3.1.1 only
//!   deliveries caused by a new subscription carry RETAIN=1 (MQTT-3.3.1-9),
//!   so dropping them drops exactly the retained messages.
//! - `only`: only RETAIN=1 messages become documents, and the operation is
//!   [`done`](ListenState::done) after `quiet_ms` without one (counted from
//!   the start, then from the last retained message).
//!
//! Filtered messages are returned in [`Received::ack_now`]: the caller
//! acknowledges them right away, or the broker would redeliver them forever
//! once the session resumes.

use std::collections::VecDeque;
use std::time::Duration;

use crate::config::{ListenConfig, RetainedPolicy};
use crate::document::Document;
use crate::model::{Incoming, MqttVersion};

/// What one received batch gives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Received {
    /// Documents for the pipeline, in arrival order; they are acknowledged
    /// when the pipeline commits them.
    pub documents: Vec<Document>,
    /// Delivery ids to acknowledge now: messages the policy filtered out.
    pub ack_now: Vec<u64>,
}

/// The state of one Listen operation.
#[derive(Debug, Clone)]
pub struct ListenState {
    policy: RetainedPolicy,
    protocol: MqttVersion,
    quiet: Duration,
    max_batch: usize,
    /// When the last retained message came (the start before any).
    last_retained: Duration,
    finished: bool,
    /// Documents accepted but not yet handed out, beyond a batch's size.
    pending: VecDeque<Document>,
}

impl ListenState {
    /// The state of a Listen operation with `config`, on a broker speaking
    /// `protocol`, opened at time zero.
    pub fn new(config: &ListenConfig, protocol: MqttVersion) -> Self {
        ListenState {
            policy: config.retained,
            protocol,
            quiet: config.quiet(),
            max_batch: usize::try_from(config.max_batch)
                .unwrap_or(usize::MAX)
                .max(1),
            last_retained: Duration::ZERO,
            finished: false,
            pending: VecDeque::new(),
        }
    }

    /// The protocol the state was made for.
    pub fn protocol(&self) -> MqttVersion {
        self.protocol
    }

    /// How many messages to ask the host for when the pipeline asks for
    /// `max` documents: at most `max_batch`, less what is already pending,
    /// and none once the operation is finished.
    pub fn receive_limit(&self, max: u32) -> u32 {
        if self.finished {
            return 0;
        }
        let want = self.batch_size(max);
        u32::try_from(want.saturating_sub(self.pending.len())).unwrap_or(u32::MAX)
    }

    /// How long to wait for messages at `now` when the pipeline allows
    /// `timeout`: with `retained: "only"`, no longer than until the snapshot
    /// goes quiet; zero once finished or when documents are pending.
    pub fn receive_timeout(&self, timeout: Duration, now: Duration) -> Duration {
        if self.finished || !self.pending.is_empty() {
            return Duration::ZERO;
        }
        match self.policy {
            RetainedPolicy::Only => timeout.min(self.quiet_deadline().saturating_sub(now)),
            RetainedPolicy::Deliver | RetainedPolicy::Skip => timeout,
        }
    }

    /// Takes a batch received at `now` and returns at most `max` documents
    /// (and at most `max_batch`), plus the ids to acknowledge now. Documents
    /// beyond the limit wait for the next call, in order.
    pub fn accept(&mut self, batch: Vec<Incoming>, max: u32, now: Duration) -> Received {
        let mut received = Received::default();
        for incoming in batch {
            let keep = !self.finished
                && match self.policy {
                    RetainedPolicy::Deliver => true,
                    RetainedPolicy::Skip => !incoming.retain,
                    RetainedPolicy::Only => incoming.retain,
                };
            if !keep {
                received.ack_now.push(incoming.id);
                continue;
            }
            if self.policy == RetainedPolicy::Only {
                self.last_retained = self.last_retained.max(now);
            }
            self.pending.push_back(Document::from(incoming));
        }
        let take = self.batch_size(max).min(self.pending.len());
        received.documents = self.pending.drain(..take).collect();
        received
    }

    /// Whether the operation has finished at `now`: a `retained: "only"`
    /// snapshot that went `quiet_ms` without a retained message and has
    /// handed out every document. Once true, it stays true, and later
    /// messages are filtered out. Always false for other policies.
    pub fn done(&mut self, now: Duration) -> bool {
        if self.would_finish(now) {
            self.finished = true;
        }
        self.finished
    }

    /// Whether [`ListenState::done`] would finish the operation at `now`:
    /// the caller should first take what the host may still hold, since
    /// messages filtered after finishing are lost to the snapshot.
    pub fn would_finish(&self, now: Duration) -> bool {
        !self.finished
            && self.policy == RetainedPolicy::Only
            && self.pending.is_empty()
            && now >= self.quiet_deadline()
    }

    /// Documents accepted and not yet handed out.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn quiet_deadline(&self) -> Duration {
        self.last_retained.saturating_add(self.quiet)
    }

    fn batch_size(&self, max: u32) -> usize {
        usize::try_from(max)
            .unwrap_or(usize::MAX)
            .min(self.max_batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::{names, Value};
    use crate::model::{MessageProperties, QoS};

    fn msg(id: u64, retain: bool) -> Incoming {
        Incoming {
            id,
            topic: format!("t/{id}"),
            payload: Vec::new(),
            qos: QoS::AtLeastOnce,
            retain,
            duplicate: false,
            properties: MessageProperties::default(),
            subscription_ids: Vec::new(),
        }
    }

    fn state(policy: RetainedPolicy, protocol: MqttVersion) -> ListenState {
        let mut config = ListenConfig::new(["t/#".parse().unwrap()]);
        config.retained = policy;
        ListenState::new(&config, protocol)
    }

    fn ids(docs: &[Document]) -> Vec<u64> {
        docs.iter().map(|d| d.id).collect()
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn deliver_hands_out_everything() {
        let mut s = state(RetainedPolicy::Deliver, MqttVersion::V5);
        let r = s.accept(vec![msg(1, true), msg(2, false)], 10, MS);
        assert_eq!(ids(&r.documents), [1, 2]);
        assert!(r.ack_now.is_empty());
        assert_eq!(
            r.documents[0].property(names::RETAINED),
            Some(&Value::Boolean(true))
        );
        assert!(!s.done(Duration::from_secs(3600)));
    }

    #[test]
    fn skip_drops_and_acks_retained_on_both_protocols() {
        for protocol in [MqttVersion::V311, MqttVersion::V5] {
            let mut s = state(RetainedPolicy::Skip, protocol);
            let r = s.accept(vec![msg(1, true), msg(2, false), msg(3, true)], 10, MS);
            assert_eq!(ids(&r.documents), [2]);
            assert_eq!(r.ack_now, [1, 3]);
        }
    }

    #[test]
    fn only_takes_retained_and_finishes_when_quiet() {
        let mut s = state(RetainedPolicy::Only, MqttVersion::V5);
        assert_eq!(
            s.receive_timeout(Duration::from_secs(5), Duration::ZERO),
            1000 * MS
        );
        let r = s.accept(vec![msg(1, true), msg(2, false)], 10, 400 * MS);
        assert_eq!(ids(&r.documents), [1]);
        assert_eq!(r.ack_now, [2]);
        // The quiet period restarts at the last retained message.
        assert!(!s.done(1000 * MS));
        assert_eq!(
            s.receive_timeout(Duration::from_secs(5), 1000 * MS),
            400 * MS
        );
        assert!(!s.done(1399 * MS));
        assert!(s.done(1400 * MS));
        assert!(s.done(1400 * MS));
        assert_eq!(s.receive_limit(10), 0);
        assert_eq!(
            s.receive_timeout(Duration::from_secs(5), 1500 * MS),
            Duration::ZERO
        );
        // After the end, stragglers are acknowledged and dropped.
        let r = s.accept(vec![msg(3, true)], 10, 1500 * MS);
        assert!(r.documents.is_empty());
        assert_eq!(r.ack_now, [3]);
    }

    #[test]
    fn only_finishes_after_quiet_without_any_message() {
        let mut s = state(RetainedPolicy::Only, MqttVersion::V311);
        assert!(!s.done(999 * MS));
        assert!(s.done(1000 * MS));
    }

    #[test]
    fn only_is_not_done_while_documents_are_pending() {
        let mut s = state(RetainedPolicy::Only, MqttVersion::V5);
        let r = s.accept(vec![msg(1, true), msg(2, true)], 1, 10 * MS);
        assert_eq!(ids(&r.documents), [1]);
        assert!(!s.done(Duration::from_secs(60)));
        let r = s.accept(Vec::new(), 1, Duration::from_secs(60));
        assert_eq!(ids(&r.documents), [2]);
        assert!(s.done(Duration::from_secs(60)));
    }

    #[test]
    fn batches_respect_max_and_max_batch() {
        let mut config = ListenConfig::new(["t/#".parse().unwrap()]);
        config.max_batch = 2;
        let mut s = ListenState::new(&config, MqttVersion::V5);
        assert_eq!(s.receive_limit(10), 2);
        assert_eq!(s.receive_limit(1), 1);
        let r = s.accept((1..=5).map(|i| msg(i, false)).collect(), 10, MS);
        assert_eq!(ids(&r.documents), [1, 2]);
        assert_eq!(s.pending(), 3);
        assert_eq!(s.receive_limit(10), 0);
        assert_eq!(
            s.receive_timeout(Duration::from_secs(1), MS),
            Duration::ZERO
        );
        let r = s.accept(vec![msg(6, false)], 1, MS);
        assert_eq!(ids(&r.documents), [3]);
        let r = s.accept(Vec::new(), 0, MS);
        assert!(r.documents.is_empty());
        let r = s.accept(Vec::new(), 10, MS);
        assert_eq!(ids(&r.documents), [4, 5]);
        let r = s.accept(Vec::new(), 10, MS);
        assert_eq!(ids(&r.documents), [6]);
        assert_eq!(s.pending(), 0);
        assert_eq!(s.protocol(), MqttVersion::V5);
    }
}
