//! Retained messages in the core: storing them within the configured
//! limits, and delivering them to a new subscription through a cursor that
//! walks the store a step at a time.

use super::publish::min_qos;
use super::timers::Timer;
use super::Broker;
use crate::retained::RetainedMessage;
use crate::session::{Message, Queued};
use crate::types::{SessionId, SubOptions};
use mqtt_topic::{TopicFilter, TopicName};
use rumqttc::v5::mqttbytes::v5::Publish;
use rumqttc::v5::mqttbytes::QoS;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Most QoS 0 retained messages handed to a connection and not yet reported
/// written by the shell ([`Broker::handle_written`]). QoS 0 has no
/// acknowledgement to pace it, so the connection's outbound room does: the
/// delivery never gets further ahead of the socket than this, and never
/// loses a message to a full queue.
pub(super) const PACED_WINDOW: usize = 1024;

/// Where a new subscription's retained messages have got to.
#[derive(Debug)]
pub(super) struct RetainedCursor {
    /// The subscription's filter (never shared).
    pub(super) filter: TopicFilter,
    /// The subscription's options: granted QoS and identifier.
    pub(super) options: SubOptions,
    /// The last topic sent; the walk resumes after it.
    pub(super) after: Option<String>,
    /// Messages stored later than this (`RetainedMessage::seq`) reached the
    /// subscriber live, so they are skipped.
    pub(super) start_seq: u64,
    /// Messages of the session queue that were there before the SUBSCRIBE:
    /// they go first, as they would have with a snapshot queued behind them.
    pub(super) ahead: usize,
    /// Earliest time of the next step (delivery rate).
    pub(super) next_step: Instant,
    /// The step timer set, if any.
    pub(super) scheduled: Option<Instant>,
}

/// `at` on the wall clock, from `clock`, one moment on both clocks.
pub(super) fn wall_time(clock: (Instant, SystemTime), at: Instant) -> SystemTime {
    let (base, wall) = clock;
    match at.checked_duration_since(base) {
        Some(since) => wall.checked_add(since).unwrap_or(wall),
        None => wall,
    }
}

/// What one step of a retained cursor achieved.
pub(super) enum Step {
    /// The cursor is finished and gone.
    Done,
    /// Messages were sent; another step may follow at once.
    Progress,
    /// Nothing more now: the window is full, the rate says wait, or the
    /// client is offline.
    Blocked,
}

impl Broker {
    /// Stores, replaces or deletes the retained message of `topic` for a
    /// PUBLISH with RETAIN set, within the configured limits. A message the
    /// limits refuse is still routed by the caller.
    pub(super) fn store_retained(&mut self, now: Instant, topic: &TopicName, publish: &Publish) {
        let topic = topic.as_str();
        let limits = &self.config.retain;
        if publish.payload.is_empty() {
            // MQTT-3.3.1-10/-11 (3.1.1), MQTT-3.3.1-6/-7 (5.0).
            self.retained.remove(topic);
            return;
        }
        if limits.max_payload_bytes > 0 && publish.payload.len() > limits.max_payload_bytes {
            self.stats.retained_refused_too_large += 1;
            let total = self.stats.retained_refused_too_large;
            self.logs.retained_too_large.log(now, |suppressed| {
                tracing::warn!(
                    topic,
                    bytes = publish.payload.len(),
                    limit = limits.max_payload_bytes,
                    total,
                    suppressed,
                    "retained message not stored: payload over retain.max_payload_bytes"
                )
            });
            return;
        }
        let max = limits.max_messages;
        if max > 0 && !self.retained.contains(topic) && self.retained.len() >= max {
            // Expired messages still count until swept: sweep them now
            // before refusing.
            self.retained.purge_expired(now);
            if self.retained.len() >= max {
                self.stats.retained_refused_full += 1;
                let total = self.stats.retained_refused_full;
                self.logs.retained_full.log(now, |suppressed| {
                    tracing::warn!(
                        topic,
                        limit = max,
                        total,
                        suppressed,
                        "retained message not stored: retain.max_messages reached"
                    )
                });
                return;
            }
        }
        let stored = RetainedMessage::new(
            publish.clone(),
            now,
            self.wall_time(now),
            self.config.retain.default_expiry,
        );
        self.retained.insert(topic, stored);
        self.schedule_sweep(now);
    }

    /// `now` on the wall clock.
    fn wall_time(&self, now: Instant) -> SystemTime {
        wall_time(self.clock, now)
    }

    /// Starts the retained delivery of new subscriptions, `retained_for`
    /// holding each one's filter and options.
    pub(super) fn start_retained_delivery(
        &mut self,
        now: Instant,
        session_id: SessionId,
        retained_for: Vec<(TopicFilter, SubOptions)>,
    ) {
        // Retained messages follow the SUBACK, through a cursor per
        // subscription that reads them from the store a step at a time as
        // the window frees up: a wildcard subscriber to many topics gets all
        // of them without overrunning its Receive Maximum, and without the
        // broker holding them all in its queue.
        if retained_for.is_empty() {
            return;
        }
        let ahead = self.session_mut(session_id).queue.len();
        let start_seq = self.retained.last_seq();
        let wildcard_delivery = self.config.retain.wildcard_delivery;
        let cursors = self.cursors.entry(session_id).or_default();
        for (filter, options) in retained_for {
            if !wildcard_delivery && filter.has_wildcards() {
                // AWS IoT Core: no retained messages for wildcard filters.
                continue;
            }
            // Subscribing again restarts a delivery still in progress.
            cursors.retain(|c| c.filter != filter);
            cursors.push_back(RetainedCursor {
                filter,
                options,
                after: None,
                start_seq,
                ahead,
                next_step: now,
                scheduled: None,
            });
        }
        if cursors.is_empty() {
            self.cursors.remove(&session_id);
        }
        self.flush_queue(now, session_id);
    }

    /// One step of the session's oldest retained delivery: sends the next
    /// matching messages in topic order, as many as the step size, the
    /// windows and the delivery rate allow. The windows are the in-flight
    /// window for messages sent at QoS 1 and 2, and [`PACED_WINDOW`]
    /// messages not yet written to the socket for those sent at QoS 0. A
    /// step fills whatever room the windows have in one walk.
    pub(super) fn step_retained(&mut self, now: Instant, session_id: SessionId) -> Step {
        let batch = self.config.retain.delivery_batch;
        let rate = self.config.retain.delivery_rate;
        let Some(session) = self.sessions.get(&session_id) else {
            return Step::Blocked;
        };
        let inflight_free = session.window.saturating_sub(session.inflight.len());
        let paced_free = session
            .conn
            .and_then(|conn| self.conns.get(&conn))
            .map_or(0, |c| PACED_WINDOW.saturating_sub(c.paced));
        let Some(cursor) = self
            .cursors
            .get_mut(&session_id)
            .and_then(VecDeque::front_mut)
        else {
            return Step::Done;
        };
        if rate > 0 && now < cursor.next_step {
            if cursor.scheduled != Some(cursor.next_step) {
                cursor.scheduled = Some(cursor.next_step);
                let due = cursor.next_step;
                self.schedule(due, Timer::RetainedDelivery(session_id));
            }
            return Step::Blocked;
        }
        let mut budget = match (batch, rate) {
            (0, 0) => usize::MAX,
            // A rate without a step size: steps of a tenth of a second.
            (0, rate) => (rate as usize / 10).max(1),
            (batch, _) => batch,
        };
        // Never more than the windows: the rest waits in the store, not in
        // memory. A message goes out at the lower of its stored QoS and the
        // granted one, so a QoS 1 or 2 subscription may get QoS 0 messages,
        // which take room in the paced window instead of the in-flight one;
        // a step fits in both.
        let windows = [paced_free, inflight_free];
        let used = if cursor.options.qos == QoS::AtMostOnce {
            1
        } else {
            2
        };
        // A step goes as soon as one slot is free: it costs what it sends
        // plus the depth of the walk, so small steps are cheap, and waiting
        // for more room would leave the broker silent while a client whose
        // small acknowledgements Nagle holds back waits for our delayed TCP
        // ACK (tens of milliseconds a step).
        for &free in &windows[..used] {
            if free == 0 {
                return Step::Blocked;
            }
            budget = budget.min(free);
        }

        let mut found = std::mem::take(&mut self.retained_scratch);
        found.clear();
        let start_seq = cursor.start_seq;
        let grants = session.grants.clone();
        self.retained.walk(
            cursor.filter.as_str(),
            cursor.after.as_deref(),
            now,
            budget,
            // Messages the ACL does not let the client read are skipped
            // like ones stored after the SUBSCRIBE.
            &mut |m| {
                m.seq <= start_seq
                    && grants.as_ref().is_none_or(|g| {
                        std::str::from_utf8(&m.publish.topic).is_ok_and(|t| g.may_read(t))
                    })
            },
            &mut found,
        );
        let finished = found.len() < budget;
        if let Some(last) = found.last() {
            cursor.after = Some(last.topic());
        }
        if rate > 0 {
            let secs = found.len() as f64 / f64::from(rate);
            cursor.next_step = now + Duration::from_secs_f64(secs);
        }
        let options = cursor.options.clone();
        if finished {
            if let Some(cursors) = self.cursors.get_mut(&session_id) {
                cursors.pop_front();
                if cursors.is_empty() {
                    self.cursors.remove(&session_id);
                }
            }
        }
        for stored in found.drain(..) {
            let message = Arc::new(Message {
                publish: stored.publish.clone(),
                // Only the publisher's own expiry is told to the client.
                expires_at: stored.own_expiry(),
            });
            let queued = Queued {
                // Never upgraded: the lower of stored and granted QoS.
                qos: min_qos(stored.publish.qos, options.qos),
                // MQTT-3.3.1-8 (3.1.1) / MQTT-3.3.1-9 (5.0).
                retain: true,
                message,
                subscription_ids: options.subscription_id.into_iter().collect(),
                from_retained: true,
                // Shared subscriptions get no retained messages.
                shared: Vec::new(),
            };
            self.transmit(now, session_id, queued);
        }
        self.retained_scratch = found;
        if finished {
            Step::Done
        } else {
            Step::Progress
        }
    }

    /// A session's retained delivery may take its next step (delivery
    /// rate).
    pub(super) fn retained_delivery_due(&mut self, now: Instant, session: SessionId) {
        if let Some(cursor) = self.cursors.get_mut(&session).and_then(|c| c.front_mut()) {
            cursor.scheduled = None;
        }
        self.flush_queue(now, session);
    }
}
