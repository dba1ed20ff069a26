//! One client's session: what survives a reconnect when the session is
//! persistent (MQTT 5.0 section 4.1, 3.1.1 section 4.1).
//!
//! The session holds the client's subscriptions, the QoS 1 and 2 messages in
//! flight to it with their packet identifiers, the queue of messages waiting
//! for a free in-flight slot (or for the client to come back), and the QoS 2
//! packet identifiers received from it that still wait for a PUBREL. It does
//! no routing and no I/O; the core drives it.
//!
//! With `sessions.storage = {"disk": ...}` persistent sessions are also kept
//! on disk: `stored` has the shapes the core records their changes in and
//! reads them back as, `disk` the file, which the shell owns.

mod disk;
mod stored;

pub(crate) use disk::SessionStore;
pub use disk::SessionStoreError;
pub(crate) use stored::{SessionMeta, SessionRecord, SessionWrites, StoredInflight, StoredQueued};

use super::auth::Grants;
use super::memory::MemoryGauge;
use super::types::SubOptions;
use bytes::Bytes;
use mqtt_topic::{MqttVersion, TopicFilter, TopicName};
use rumqttc::v5::mqttbytes::v5::{LastWill, Publish};
use rumqttc::v5::mqttbytes::QoS;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// A message as the router hands it to sessions: shared by every subscriber,
/// so the payload is never copied per subscriber.
#[derive(Debug, PartialEq)]
pub struct Message {
    /// The PUBLISH as received, topic resolved, without topic alias,
    /// subscription identifiers or packet identifier.
    pub publish: Publish,
    /// When the message expires, from its Message Expiry Interval.
    pub expires_at: Option<Instant>,
}

/// A message waiting in a session's queue, with what this subscriber's
/// subscriptions made of it.
#[derive(Debug, Clone)]
pub struct Queued {
    /// The shared message.
    pub message: Arc<Message>,
    /// QoS of this delivery: the lower of the published and granted QoS.
    pub qos: QoS,
    /// RETAIN flag of this delivery.
    pub retain: bool,
    /// Subscription identifiers of the subscriptions that matched.
    pub subscription_ids: Vec<usize>,
    /// Retained messages sent because of a new subscription: never dropped
    /// for a full queue, so a wildcard subscriber gets all of them.
    pub from_retained: bool,
    /// The shared subscriptions (`$share/{group}/{filter}`) this delivery
    /// was made for, if the message is QoS 1 or 2; empty otherwise, which
    /// costs no allocation. Should the session end before the client has
    /// the message, another member of each of those groups gets it.
    pub shared: Vec<TopicFilter>,
}

impl Queued {
    /// What the message counts against `max_queued_bytes`: its topic and
    /// payload.
    pub fn bytes(&self) -> usize {
        self.message.publish.topic.len() + self.message.publish.payload.len()
    }
}

/// How much a session may queue: messages (`max_queued_messages`) and
/// bytes (`max_queued_bytes`, 0 for no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most live messages queued.
    pub messages: usize,
    /// Most bytes of live messages queued; 0 is no limit.
    pub bytes: usize,
}

/// A QoS 1 or 2 message sent to the client and not yet fully acknowledged.
// Most entries are PUBLISHes; boxing them would add an allocation per
// message in flight to shrink the release step.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Inflight {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2). Kept so it
    /// can be sent again with DUP set when the session resumes; with the
    /// shared delivery it belongs to, if it came through shared
    /// subscriptions.
    Publish(Publish, Option<Box<SharedDelivery>>),
    /// PUBREL sent, waiting for PUBCOMP.
    Release(u16),
}

impl Inflight {
    /// Its packet identifier.
    pub fn pkid(&self) -> u16 {
        match self {
            Inflight::Publish(publish, _) => publish.pkid,
            Inflight::Release(pkid) => *pkid,
        }
    }
}

/// A message given to this session by shared subscriptions and not yet
/// received by the client: what another member of each group needs, should
/// the session end first (MQTT 5.0 section 4.8.2).
#[derive(Debug, Clone, PartialEq)]
pub struct SharedDelivery {
    /// The message as published (a PUBLISH in flight to a 3.1.1 client has
    /// lost its properties).
    pub message: Arc<Message>,
    /// The shared subscriptions it was delivered for (see
    /// [`Queued::shared`]).
    pub filters: Vec<TopicFilter>,
}

/// A will as the CONNECT carried it, its topic parsed.
#[derive(Debug, Clone)]
pub struct Will {
    /// The Will Topic.
    pub topic: TopicName,
    /// The will; its `topic` holds the same name as bytes.
    pub will: LastWill,
}

/// What happened to a message offered to a full queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// One client's session.
#[derive(Debug)]
pub struct Session {
    /// The client identifier.
    pub client_id: String,
    /// The protocol of the current (or last) connection.
    pub version: MqttVersion,
    /// The connection the client is on, if it is connected.
    pub conn: Option<u64>,
    /// Session Expiry Interval in seconds; `u32::MAX` never expires.
    pub expiry_interval: u32,
    /// Bumped on every connect and disconnect, so timers set for an earlier
    /// connection of this session are recognised as stale.
    pub generation: u64,
    /// Subscriptions by their full filter (with any `$share/` prefix).
    pub subscriptions: HashMap<TopicFilter, SubOptions>,
    /// Most QoS 1 and 2 messages in flight to the client now.
    pub window: usize,
    /// The client's Maximum Packet Size (5.0), if it set one.
    pub max_packet_size: Option<u32>,
    /// Messages in flight to the client, in the order they were sent.
    pub inflight: VecDeque<Inflight>,
    /// Messages waiting for a slot in the window or for the client.
    pub queue: VecDeque<Queued>,
    /// How many queued messages count against the queue limit.
    pub queued_live: usize,
    /// Their bytes (topic and payload), against `max_queued_bytes`.
    pub queued_live_bytes: usize,
    /// QoS 2 packet identifiers received, PUBREC sent, PUBREL awaited.
    pub incoming_qos2: HashSet<u16>,
    /// A will whose delay runs; the core's timer knows when it is due.
    pub pending_will: Option<Will>,
    /// The client's Topic Alias Maximum (5.0) on this connection.
    pub topic_alias_max: u16,
    /// Topic aliases given to the client on this connection.
    pub out_aliases: HashMap<Bytes, u16>,
    /// What the ACL lets the client of the current (or last) connection do;
    /// `None` without an ACL: anything.
    pub grants: Option<Arc<Grants>>,
    /// The broker's gauge, which `queued_live_bytes` is part of.
    pub gauge: MemoryGauge,
    /// The last packet identifier handed out.
    pub next_pkid: u16,
}

impl Drop for Session {
    fn drop(&mut self) {
        // What is still queued is freed with the session.
        self.gauge.sub(self.queued_live_bytes);
    }
}

impl Session {
    /// A new, empty session.
    pub fn new(client_id: String, version: MqttVersion) -> Self {
        Session {
            client_id,
            version,
            conn: None,
            expiry_interval: 0,
            generation: 0,
            subscriptions: HashMap::new(),
            window: 1,
            max_packet_size: None,
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            queued_live: 0,
            queued_live_bytes: 0,
            incoming_qos2: HashSet::new(),
            pending_will: None,
            topic_alias_max: 0,
            out_aliases: HashMap::new(),
            grants: None,
            gauge: MemoryGauge::default(),
            next_pkid: 0,
        }
    }

    /// Whether the ACL lets the client receive a message on `topic`.
    pub fn may_read(&self, topic: &str) -> bool {
        self.grants.as_ref().is_none_or(|g| g.may_read(topic))
    }

    /// Whether the ACL lets the client publish to `topic`.
    pub fn may_write(&self, topic: &str) -> bool {
        self.grants.as_ref().is_none_or(|g| g.may_write(topic))
    }

    /// A packet identifier not used by any message in flight, or `None` when
    /// all 65,535 are (MQTT-2.2.1-3: an identifier is reused only after its
    /// acknowledgement).
    pub fn next_pkid(&mut self) -> Option<u16> {
        if self.inflight.len() >= usize::from(u16::MAX) {
            return None;
        }
        loop {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            let candidate = self.next_pkid;
            if !self.inflight.iter().any(|i| i.pkid() == candidate) {
                return Some(candidate);
            }
        }
    }

    /// Replaces the topic of a PUBLISH about to be sent with an alias when
    /// the client accepts aliases: the first PUBLISH to a topic carries the
    /// topic and a new alias, later ones only the alias (5.0 3.3.2.3.4).
    /// Aliases are handed out until the client's maximum, then topics go
    /// in full.
    pub fn apply_topic_alias(&mut self, publish: &mut Publish) {
        if self.topic_alias_max == 0 {
            return;
        }
        let alias = match self.out_aliases.get(&publish.topic) {
            Some(&alias) => {
                publish.topic = Bytes::new();
                alias
            }
            None if self.out_aliases.len() < usize::from(self.topic_alias_max) => {
                let alias = self.out_aliases.len() as u16 + 1;
                self.out_aliases.insert(publish.topic.clone(), alias);
                alias
            }
            None => return,
        };
        publish
            .properties
            .get_or_insert_with(Default::default)
            .topic_alias = Some(alias);
    }

    /// Whether another QoS 1 or 2 message may be sent now.
    pub fn has_free_slot(&self) -> bool {
        self.inflight.len() < self.window
    }

    /// Queues a message. Live messages beyond the limits are refused;
    /// retained messages for a new subscription never are (the core paces
    /// them).
    pub fn enqueue(&mut self, queued: Queued, limits: QueueLimits) -> Result<(), QueueFull> {
        if !self.has_room_for(&queued, limits) {
            return Err(QueueFull);
        }
        self.enqueue_over_limit(queued);
        Ok(())
    }

    /// Whether the queue takes `queued` within `limits`.
    pub fn has_room_for(&self, queued: &Queued, limits: QueueLimits) -> bool {
        if queued.from_retained {
            return true;
        }
        let over_bytes = limits.bytes > 0
            && self.queued_live_bytes.saturating_add(queued.bytes()) > limits.bytes;
        self.queued_live < limits.messages && !over_bytes
    }

    /// Queues a message whatever the limits: flow control does, and holds
    /// back the publisher's acknowledgement until the queue is within them
    /// again.
    pub fn enqueue_over_limit(&mut self, queued: Queued) {
        if !queued.from_retained {
            let bytes = queued.bytes();
            self.queued_live += 1;
            self.queued_live_bytes += bytes;
            self.gauge.add(bytes);
        }
        self.queue.push_back(queued);
    }

    /// Whether what is queued is within `limits` (a queue that went over
    /// them is back).
    pub fn within_limits(&self, limits: QueueLimits) -> bool {
        self.queued_live <= limits.messages
            && (limits.bytes == 0 || self.queued_live_bytes <= limits.bytes)
    }

    /// Takes the next queued message.
    pub fn dequeue(&mut self) -> Option<Queued> {
        let queued = self.queue.pop_front()?;
        if !queued.from_retained {
            self.queued_live -= 1;
            self.queued_live_bytes -= queued.bytes();
            self.gauge.sub(queued.bytes());
        }
        Some(queued)
    }

    /// Removes the queued message at `index`, as [`Session::dequeue`] does
    /// the first.
    pub fn remove_queued(&mut self, index: usize) -> Option<Queued> {
        let queued = self.queue.remove(index)?;
        if !queued.from_retained {
            self.queued_live -= 1;
            self.queued_live_bytes -= queued.bytes();
            self.gauge.sub(queued.bytes());
        }
        Some(queued)
    }

    /// Takes the messages shared subscriptions gave this session that the
    /// client has not received, oldest first: PUBLISHes in flight (a QoS 2
    /// message whose PUBREC came has been received), then queued ones. The
    /// queue keeps its entries, without their groups.
    pub fn take_shared_undelivered(&mut self) -> Vec<SharedDelivery> {
        let in_flight = self.inflight.iter_mut().filter_map(|i| match i {
            Inflight::Publish(_, shared) => shared.take().map(|s| *s),
            Inflight::Release(_) => None,
        });
        let queued = self
            .queue
            .iter_mut()
            .filter(|q| !q.shared.is_empty())
            .map(|q| SharedDelivery {
                message: Arc::clone(&q.message),
                filters: std::mem::take(&mut q.shared),
            });
        in_flight.chain(queued).collect()
    }

    /// PUBACK received: true when it completed a QoS 1 message in flight.
    pub fn handle_puback(&mut self, pkid: u16) -> bool {
        self.remove_inflight(
            pkid,
            |i| matches!(i, Inflight::Publish(p, _) if p.qos == QoS::AtLeastOnce),
        )
    }

    /// PUBREC received. `Some(true)`: a QoS 2 message moved to the release
    /// step and PUBREL must be sent; `Some(false)`: the client refused it
    /// (5.0 reason code of 0x80 or more) and it is done; `None`: unknown.
    pub fn handle_pubrec(&mut self, pkid: u16, accepted: bool) -> Option<bool> {
        let slot = self.inflight.iter_mut().find(|i| i.pkid() == pkid)?;
        match slot {
            Inflight::Publish(p, _) if p.qos == QoS::ExactlyOnce => {
                if accepted {
                    *slot = Inflight::Release(pkid);
                    Some(true)
                } else {
                    self.remove_inflight(pkid, |_| true);
                    Some(false)
                }
            }
            // A PUBREC repeated after the PUBREL was sent: send PUBREL again.
            Inflight::Release(_) => Some(true),
            Inflight::Publish(..) => None,
        }
    }

    /// PUBCOMP received: true when it completed a QoS 2 message.
    pub fn handle_pubcomp(&mut self, pkid: u16) -> bool {
        self.remove_inflight(pkid, |i| matches!(i, Inflight::Release(_)))
    }

    fn remove_inflight(&mut self, pkid: u16, expected: impl Fn(&Inflight) -> bool) -> bool {
        match self
            .inflight
            .iter()
            .position(|i| i.pkid() == pkid && expected(i))
        {
            Some(index) => {
                self.inflight.remove(index);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(pkid: u16, qos: QoS) -> Publish {
        let mut p = Publish::new("t", qos, Bytes::from_static(b"x"), None);
        p.pkid = pkid;
        p
    }

    fn queued(from_retained: bool) -> Queued {
        Queued {
            message: Arc::new(Message {
                publish: publish(0, QoS::AtLeastOnce),
                expires_at: None,
            }),
            qos: QoS::AtLeastOnce,
            retain: from_retained,
            subscription_ids: Vec::new(),
            from_retained,
            shared: Vec::new(),
        }
    }

    fn session() -> Session {
        Session::new("c".into(), MqttVersion::V5)
    }

    // MQTT-2.2.1-3 (3.1.1) / MQTT-2.2.1-3 (5.0): an identifier in use is not reused.
    #[test]
    fn packet_ids_skip_those_in_flight_and_wrap_past_zero() {
        let mut s = session();
        s.inflight
            .push_back(Inflight::Publish(publish(2, QoS::AtLeastOnce), None));
        assert_eq!(s.next_pkid(), Some(1));
        assert_eq!(s.next_pkid(), Some(3));
        s.next_pkid = u16::MAX;
        assert_eq!(s.next_pkid(), Some(1), "0 is never a packet identifier");
    }

    #[test]
    fn queue_limit_applies_to_live_messages_only() {
        let mut s = session();
        let one = QueueLimits {
            messages: 1,
            bytes: 0,
        };
        assert_eq!(s.enqueue(queued(false), one), Ok(()));
        assert_eq!(s.enqueue(queued(false), one), Err(QueueFull));
        assert_eq!(s.enqueue(queued(true), one), Ok(()));
        assert_eq!(s.queue.len(), 2);
        s.dequeue();
        assert_eq!(s.enqueue(queued(false), one), Ok(()));
    }

    #[test]
    fn byte_limit_applies_to_live_messages_only() {
        let mut s = session();
        let size = queued(false).bytes();
        let two = QueueLimits {
            messages: 100,
            bytes: 2 * size,
        };
        assert_eq!(s.enqueue(queued(false), two), Ok(()));
        assert_eq!(s.enqueue(queued(false), two), Ok(()));
        assert_eq!(s.enqueue(queued(false), two), Err(QueueFull));
        assert_eq!(s.enqueue(queued(true), two), Ok(()));
        assert_eq!(s.queued_live_bytes, 2 * size);
        s.dequeue();
        assert_eq!(s.queued_live_bytes, size);
        assert_eq!(s.enqueue(queued(false), two), Ok(()));
    }

    // MQTT-4.3.3-1 / 4.3.3-2 order: PUBLISH -> PUBREC -> PUBREL -> PUBCOMP.
    #[test]
    fn qos2_outbound_flow() {
        let mut s = session();
        s.inflight
            .push_back(Inflight::Publish(publish(7, QoS::ExactlyOnce), None));
        assert!(
            !s.handle_puback(7),
            "PUBACK does not complete a QoS 2 message"
        );
        assert!(!s.handle_pubcomp(7), "PUBCOMP before PUBREC is ignored");
        assert_eq!(s.handle_pubrec(7, true), Some(true));
        assert_eq!(
            s.handle_pubrec(7, true),
            Some(true),
            "repeated PUBREC resends PUBREL"
        );
        assert!(s.handle_pubcomp(7));
        assert!(s.inflight.is_empty());
        assert_eq!(s.handle_pubrec(7, true), None);
    }

    // 5.0 section 3.3.2.3.4: topic, then alias alone; never above the maximum.
    #[test]
    fn topic_aliases_up_to_the_client_maximum() {
        let mut s = session();
        let send = |s: &mut Session, topic: &str| {
            let mut p = Publish::new(topic, QoS::AtMostOnce, Bytes::new(), None);
            s.apply_topic_alias(&mut p);
            (p.topic, p.properties.and_then(|p| p.topic_alias))
        };
        assert_eq!(
            send(&mut s, "a"),
            (Bytes::from("a"), None),
            "client allows none"
        );
        s.topic_alias_max = 1;
        assert_eq!(send(&mut s, "a"), (Bytes::from("a"), Some(1)));
        assert_eq!(send(&mut s, "a"), (Bytes::new(), Some(1)));
        assert_eq!(
            send(&mut s, "b"),
            (Bytes::from("b"), None),
            "maximum reached"
        );
    }

    #[test]
    fn refused_pubrec_completes_the_message() {
        let mut s = session();
        s.inflight
            .push_back(Inflight::Publish(publish(3, QoS::ExactlyOnce), None));
        assert_eq!(s.handle_pubrec(3, false), Some(false));
        assert!(s.inflight.is_empty());
    }
}
