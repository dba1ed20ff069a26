//! Shared subscriptions when a member goes away (MQTT 5.0 section 4.8.2):
//! the QoS 1 and 2 messages a group gave a member that the member's client
//! has not received go to another member of the group, as new deliveries.

use super::publish::min_qos;
use super::Broker;
use crate::session::{Message, Queued, Session, SharedDelivery};
use crate::types::SessionId;
use bytes::Bytes;
use mqtt_topic::TopicFilter;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

impl Broker {
    /// A session ends: what shared subscriptions gave it and its client has
    /// not received (in flight, PUBREC not come, and queued) goes to other
    /// members. Called once the session's subscriptions left the trie, so
    /// that it is not a member any more.
    pub(super) fn hand_over_session(&mut self, now: Instant, session: &mut Session) {
        let undelivered = session.take_shared_undelivered();
        if undelivered.is_empty() {
            return;
        }
        let mut dropped = 0;
        for SharedDelivery { message, filters } in undelivered {
            for filter in &filters {
                if !self.hand_over(now, filter, &message) {
                    dropped += 1;
                }
            }
        }
        self.count_orphans(now, &session.client_id, dropped);
    }

    /// An UNSUBSCRIBE from shared subscription `filter`: the messages it
    /// queued for the session go to another member. A queued message that
    /// another of the session's subscriptions brought too (a non-shared one
    /// matching it, or another group) stays queued as well, as it would
    /// without the shared subscription. Messages in flight stay with the
    /// client, whose delivery must complete (MQTT-3.10.4-3); they go to
    /// another member only if the session ends before that.
    pub(super) fn hand_over_queued(
        &mut self,
        now: Instant,
        session_id: SessionId,
        filter: &TopicFilter,
    ) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        let plain: Vec<&TopicFilter> = session
            .subscriptions
            .keys()
            .filter(|f| f.shared().is_none())
            .collect();
        // Whether a non-shared subscription matches, once per topic: a
        // queue holds many messages, often on few topics.
        let mut plain_match: HashMap<Bytes, bool> = HashMap::new();
        let mut handed = Vec::new();
        let mut removed = Vec::new();
        for (index, queued) in session.queue.iter_mut().enumerate() {
            let Some(at) = queued.shared.iter().position(|f| f == filter) else {
                continue;
            };
            queued.shared.swap_remove(at);
            handed.push(Arc::clone(&queued.message));
            let topic = &queued.message.publish.topic;
            let still_owed = !queued.shared.is_empty()
                || *plain_match.entry(topic.clone()).or_insert_with(|| {
                    let topic = topic_of(&queued.message);
                    plain.iter().any(|f| mqtt_topic::matches(f.as_str(), topic))
                });
            if !still_owed {
                removed.push(index);
            }
        }
        // From the back, so that the indices still hold.
        for &index in removed.iter().rev() {
            session.remove_queued(index);
            // Retained deliveries wait for the queued messages before them.
            if let Some(cursors) = self.cursors.get_mut(&session_id) {
                for cursor in cursors.iter_mut().filter(|c| c.ahead > index) {
                    cursor.ahead -= 1;
                }
            }
        }
        if handed.is_empty() {
            return;
        }
        let client_id = session.client_id.clone();
        self.journal_rewrite(session_id);
        let mut dropped = 0;
        for message in &handed {
            if !self.hand_over(now, filter, message) {
                dropped += 1;
            }
        }
        self.count_orphans(now, &client_id, dropped);
        // A retained delivery may have moved to the head of the queue.
        self.flush_queue(now, session_id);
    }

    /// Gives `message` to a member of shared subscription `filter`, as a new
    /// delivery at the lower of its QoS and the member's granted QoS, with
    /// the member's own subscription identifier. False when no member is
    /// left to take it.
    fn hand_over(&mut self, now: Instant, filter: &TopicFilter, message: &Arc<Message>) -> bool {
        let Some(shared) = filter.shared() else {
            return false;
        };
        let picked = {
            let sessions = &self.sessions;
            self.trie.pick_member(shared.filter, shared.group, &|s| {
                sessions.get(&s).is_some_and(|s| s.conn.is_some())
            })
        };
        let Some((member, options)) = picked else {
            return false;
        };
        if !self
            .sessions
            .get(&member)
            .is_some_and(|s| s.may_read(topic_of(message)))
        {
            // As when routing: the member chosen may not read the topic.
            return false;
        }
        let queued = Queued {
            qos: min_qos(message.publish.qos, options.qos),
            // As for any delivery to an existing subscription
            // (MQTT-3.3.1-12/-13, 5.0).
            retain: options.retain_as_published && message.publish.retain,
            message: Arc::clone(message),
            subscription_ids: options.subscription_id.into_iter().collect(),
            from_retained: false,
            // Should this member go away too, the next one gets it.
            shared: vec![filter.clone()],
        };
        // A message handed over is not lost to a full queue: it goes over
        // the limits, bounded by what the departed member held.
        let limits = self.queue_limits();
        let journaled = self.journaled(member);
        if let Some(session) = self.sessions.get_mut(&member) {
            if !session.queue.is_empty() && !session.has_room_for(&queued, limits) {
                let copy = journaled.then(|| queued.clone());
                session.enqueue_over_limit(queued);
                self.stats.queued_over_limit += 1;
                if let Some(queued) = copy {
                    self.journal_enqueued(member, queued);
                }
                return true;
            }
        }
        self.deliver(now, member, queued);
        true
    }

    /// Counts and logs the messages of `client_id` that no member was left
    /// to take.
    fn count_orphans(&mut self, now: Instant, client_id: &str, dropped: u64) {
        if dropped == 0 {
            return;
        }
        self.stats.dropped_no_shared_member += dropped;
        let total = self.stats.dropped_no_shared_member;
        self.logs.shared_orphaned.log(now, |suppressed| {
            tracing::warn!(
                client_id,
                dropped,
                total,
                suppressed,
                "shared subscription messages dropped: no other member of the group"
            )
        });
    }
}

/// The topic of a routed message, which was checked on the way in.
fn topic_of(message: &Message) -> &str {
    std::str::from_utf8(&message.publish.topic).unwrap_or_default()
}
