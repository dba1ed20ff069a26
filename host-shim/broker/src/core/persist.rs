//! Sessions on disk (`sessions.storage = {"disk": ...}`): the changes of
//! persistent sessions recorded as pending writes for the shell, and the
//! sessions the shell read back at start loaded, parked.
//!
//! Only disk storage has a [`Journal`]; without one every `journal_*` call
//! returns at once, so memory storage records nothing. A session is stored
//! while it is persistent (expiry interval above 0): made persistent at a
//! CONNECT, it is written whole; from then on each change writes only what
//! changed (see `crate::session::SessionWrites`); when it ends, or a CONNECT
//! makes it non-persistent, it is deleted.
//!
//! Every change to a stored session's queue, window, subscriptions and QoS 2
//! packet identifiers goes through the `journal_*` calls next to it in the
//! other files of the core.

use super::retained::wall_time;
use super::timers::Timer;
use super::{Broker, ConnId};
use crate::session::{
    Inflight, QueueLimits, Queued, Session, SessionMeta, SessionRecord, SessionWrites,
    StoredInflight, StoredQueued,
};
use crate::types::SessionId;
use mqtt_topic::{MqttVersion, TopicFilter};
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// When the message a PUBLISH in flight keeps for a shared subscription's
/// hand-over expires, on the wall clock.
fn shared_expires(clock: (Instant, SystemTime), inflight: &Inflight) -> Option<SystemTime> {
    match inflight {
        Inflight::Publish(_, Some(shared)) => {
            shared.message.expires_at.map(|at| wall_time(clock, at))
        }
        _ => None,
    }
}

/// What the core keeps to record the changes of stored sessions.
#[derive(Debug, Default)]
pub(super) struct Journal {
    /// The sessions on disk.
    stored: HashMap<SessionId, Stored>,
    /// Changes not handed out yet.
    writes: SessionWrites,
    /// Sessions whose own record changed; it is built when handed out.
    meta: HashSet<SessionId>,
    /// Bumped with every change recorded, so that a caller can tell whether
    /// handling a packet changed a stored session.
    changes: u64,
}

/// A stored session's place on disk.
#[derive(Debug)]
struct Stored {
    /// The place of the first queued message: the queue's messages are
    /// numbered on from it, in order.
    queue_head: u64,
    /// The next place in the order of messages in flight.
    next_order: u64,
    /// When its client disconnected; `None` while connected.
    disconnected_at: Option<SystemTime>,
    /// The user name of its last connection.
    username: Option<String>,
}

impl Journal {
    /// Records `session` whole: everything stored for it is deleted first.
    fn snapshot(&mut self, id: SessionId, session: &Session, clock: (Instant, SystemTime)) {
        let Some(stored) = self.stored.get_mut(&id) else {
            return;
        };
        let changes = self.writes.changes(id, &session.client_id);
        changes.clear();
        for (filter, options) in &session.subscriptions {
            changes
                .subscriptions
                .insert(filter.as_str().to_owned(), Some(options.clone()));
        }
        for &pkid in &session.incoming_qos2 {
            changes.incoming.insert(pkid, true);
        }
        stored.next_order = 0;
        for inflight in &session.inflight {
            let order = stored.next_order;
            stored.next_order += 1;
            let inflight = StoredInflight {
                order,
                inflight: inflight.clone(),
                shared_expires: shared_expires(clock, inflight),
            };
            changes
                .inflight
                .insert(inflight.inflight.pkid(), Some(inflight));
        }
        stored.queue_head = 0;
        for (seq, queued) in (0..).zip(&session.queue) {
            let stored = StoredQueued {
                queued: queued.clone(),
                expires: queued.message.expires_at.map(|at| wall_time(clock, at)),
            };
            changes.queue.insert(seq, Some(stored));
        }
        self.meta.insert(id);
        self.changes += 1;
    }
}

impl Broker {
    /// Whether `session_id`'s changes are recorded.
    pub(super) fn journaled(&self, session_id: SessionId) -> bool {
        self.journal
            .as_ref()
            .is_some_and(|j| j.stored.contains_key(&session_id))
    }

    /// Taken before `packet` is handled, for [`Broker::journal_waits`]:
    /// `None` without disk storage, or when the packet's acknowledgement
    /// promises nothing about the disk (only a QoS 1 or 2 PUBLISH, PUBREL,
    /// SUBSCRIBE and UNSUBSCRIBE are acknowledged for changes they make).
    pub(super) fn journal_mark(&self, packet: &Packet) -> Option<u64> {
        let journal = self.journal.as_ref()?;
        let promises = match packet {
            Packet::Publish(publish) => publish.qos != QoS::AtMostOnce,
            Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => true,
            _ => false,
        };
        promises.then_some(journal.changes)
    }

    /// `conn`'s acknowledgement waits for the changes made since `mark`, if
    /// any: should their write fail, the shell closes `conn` instead.
    pub(super) fn journal_waits(&mut self, conn: ConnId, mark: Option<u64>) {
        if let (Some(mark), Some(journal)) = (mark, self.journal.as_mut()) {
            if journal.changes != mark {
                journal.writes.waiting.push(conn);
            }
        }
    }

    /// The journal, `session_id`'s session and the clock pair; `None` with
    /// memory storage (before any lookup) or without that session.
    fn journal_parts(
        &mut self,
        session_id: SessionId,
    ) -> Option<(&mut Journal, &Session, (Instant, SystemTime))> {
        let journal = self.journal.as_mut()?;
        let session = self.sessions.get(&session_id)?;
        Some((journal, session, self.clock))
    }

    /// A client connected to `session_id` (new or resumed) as `username`:
    /// the session is stored, written whole, or deleted, as its expiry
    /// interval now says.
    pub(super) fn journal_connected(&mut self, session_id: SessionId, username: Option<&str>) {
        let Some((journal, session, clock)) = self.journal_parts(session_id) else {
            return;
        };
        let persistent = session.expiry_interval > 0;
        match (journal.stored.get_mut(&session_id), persistent) {
            (Some(stored), true) => {
                stored.disconnected_at = None;
                stored.username = username.map(str::to_owned);
                journal.meta.insert(session_id);
                journal.changes += 1;
            }
            (Some(_), false) => {
                journal.stored.remove(&session_id);
                journal.meta.remove(&session_id);
                journal
                    .writes
                    .changes(session_id, &session.client_id)
                    .clear();
                journal.changes += 1;
            }
            (None, true) => {
                let stored = Stored {
                    queue_head: 0,
                    next_order: 0,
                    disconnected_at: None,
                    username: username.map(str::to_owned),
                };
                journal.stored.insert(session_id, stored);
                journal.snapshot(session_id, session, clock);
            }
            (None, false) => {}
        }
    }

    /// `session_id`'s client disconnected at `now`: its expiry counts from
    /// then, after a restart too.
    pub(super) fn journal_parked(&mut self, now: Instant, session_id: SessionId) {
        let clock = self.clock;
        let Some(journal) = self.journal.as_mut() else {
            return;
        };
        if let Some(stored) = journal.stored.get_mut(&session_id) {
            stored.disconnected_at = Some(wall_time(clock, now));
            journal.meta.insert(session_id);
            journal.changes += 1;
        }
    }

    /// `session_id`, of `client_id`, ended: it is deleted.
    pub(super) fn journal_ended(&mut self, session_id: SessionId, client_id: &str) {
        let Some(journal) = self.journal.as_mut() else {
            return;
        };
        if journal.stored.remove(&session_id).is_some() {
            journal.meta.remove(&session_id);
            journal.writes.changes(session_id, client_id).clear();
            journal.changes += 1;
        }
    }

    /// `session_id`'s subscription to `filter` was made, changed or
    /// removed.
    pub(super) fn journal_subscription(&mut self, session_id: SessionId, filter: &TopicFilter) {
        let Some((journal, session, _)) = self.journal_parts(session_id) else {
            return;
        };
        if journal.stored.contains_key(&session_id) {
            let options = session.subscriptions.get(filter).cloned();
            journal
                .writes
                .changes(session_id, &session.client_id)
                .subscriptions
                .insert(filter.as_str().to_owned(), options);
            journal.changes += 1;
        }
    }

    /// `session_id` holds (PUBREC sent) or released (PUBREL received) the
    /// QoS 2 packet identifier `pkid` from its client.
    pub(super) fn journal_incoming(&mut self, session_id: SessionId, pkid: u16, held: bool) {
        let Some((journal, session, _)) = self.journal_parts(session_id) else {
            return;
        };
        if journal.stored.contains_key(&session_id) {
            journal
                .writes
                .changes(session_id, &session.client_id)
                .incoming
                .insert(pkid, held);
            journal.changes += 1;
        }
    }

    /// `session_id`'s message in flight with packet identifier `pkid` was
    /// sent, moved on to PUBREL, or completed.
    pub(super) fn journal_inflight(&mut self, session_id: SessionId, pkid: u16) {
        let Some((journal, session, clock)) = self.journal_parts(session_id) else {
            return;
        };
        let Some(stored) = journal.stored.get_mut(&session_id) else {
            return;
        };
        // A message just sent is the last in flight.
        let inflight = session.inflight.iter().rev().find(|i| i.pkid() == pkid);
        let entry = inflight.map(|inflight| {
            let order = stored.next_order;
            stored.next_order += 1;
            StoredInflight {
                order,
                inflight: inflight.clone(),
                shared_expires: shared_expires(clock, inflight),
            }
        });
        if matches!(
            entry,
            Some(StoredInflight {
                inflight: Inflight::Publish(..),
                ..
            })
        ) {
            // Sent: the last packet identifier handed out, in the session's
            // own record, changed.
            journal.meta.insert(session_id);
        }
        journal
            .writes
            .changes(session_id, &session.client_id)
            .inflight
            .insert(pkid, entry);
        journal.changes += 1;
    }

    /// `queued` was queued at the back of `session_id`'s queue.
    pub(super) fn journal_enqueued(&mut self, session_id: SessionId, queued: Queued) {
        let Some((journal, session, clock)) = self.journal_parts(session_id) else {
            return;
        };
        let Some(stored) = journal.stored.get(&session_id) else {
            return;
        };
        let seq = stored.queue_head + session.queue.len() as u64 - 1;
        let expires = queued.message.expires_at.map(|at| wall_time(clock, at));
        journal
            .writes
            .changes(session_id, &session.client_id)
            .queue
            .insert(seq, Some(StoredQueued { queued, expires }));
        journal.changes += 1;
    }

    /// `session_id` changed in a way the other calls do not describe
    /// (messages taken from the middle of its queue): it is written whole.
    pub(super) fn journal_rewrite(&mut self, session_id: SessionId) {
        let Some((journal, session, clock)) = self.journal_parts(session_id) else {
            return;
        };
        journal.snapshot(session_id, session, clock);
    }

    /// The message at the front of `session_id`'s queue was taken.
    pub(super) fn journal_dequeued(&mut self, session_id: SessionId) {
        let Some((journal, session, _)) = self.journal_parts(session_id) else {
            return;
        };
        let Some(stored) = journal.stored.get_mut(&session_id) else {
            return;
        };
        let seq = stored.queue_head;
        stored.queue_head += 1;
        journal
            .writes
            .changes(session_id, &session.client_id)
            .dequeue(seq);
        journal.changes += 1;
    }

    /// The session changes not handed out yet, with the stored sessions'
    /// own records built now; `None` when there are none.
    pub(super) fn take_session_writes(&mut self) -> Option<SessionWrites> {
        let journal = self.journal.as_mut()?;
        for id in journal.meta.drain() {
            let (Some(stored), Some(session)) = (journal.stored.get(&id), self.sessions.get(&id))
            else {
                continue;
            };
            let meta = SessionMeta {
                version: session.version,
                expiry_interval: session.expiry_interval,
                disconnected_at: stored.disconnected_at,
                last_pkid: session.next_pkid,
                username: stored.username.clone(),
            };
            journal.writes.changes(id, &session.client_id).meta = Some(meta);
        }
        if journal.writes.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut journal.writes))
    }

    /// Whether session changes wait to be handed out.
    pub(super) fn has_session_writes(&self) -> bool {
        self.journal
            .as_ref()
            .is_some_and(|j| !j.writes.is_empty() || !j.meta.is_empty())
    }

    /// Loads the sessions the shell read from disk (none with memory
    /// storage), parked: their subscriptions routed, their expiry counting
    /// from when their client disconnected (from now for those whose
    /// client was connected when the broker stopped). Sessions and queued
    /// messages that expired while the broker was down are dropped, and
    /// `max_parked_sessions` ends the sessions parked longest. `now` and
    /// `wall` are the same moment on both clocks. Call it after
    /// [`Broker::with_auth`] and [`Broker::with_gauge`].
    pub fn with_sessions(
        mut self,
        mut records: Vec<SessionRecord>,
        now: Instant,
        wall: SystemTime,
    ) -> Self {
        if self.journal.is_none() || records.is_empty() {
            return self;
        }
        // Parked longest first, as `max_parked_sessions` counts.
        records.sort_by_key(|r| r.meta.disconnected_at.unwrap_or(wall));
        let expired_messages = self.stats.dropped_expired;
        let (mut loaded, mut expired) = (0_usize, 0_usize);
        for record in records {
            if self.load_session(record, now, wall) {
                loaded += 1;
            } else {
                expired += 1;
            }
        }
        self.evict_parked(now);
        tracing::info!(
            loaded,
            expired,
            expired_messages = self.stats.dropped_expired - expired_messages,
            "sessions read from disk"
        );
        self
    }

    /// Loads one session; false when it expired while the broker was down
    /// (it is deleted).
    fn load_session(&mut self, record: SessionRecord, now: Instant, wall: SystemTime) -> bool {
        let SessionRecord {
            client_id,
            meta,
            subscriptions,
            incoming,
            inflight,
            queue,
            damaged,
        } = record;
        // The configuration may have changed since the session was stored.
        let expiry = match meta.version {
            MqttVersion::V5 => meta.expiry_interval.min(self.config.max_session_expiry),
            MqttVersion::V311 => self.persistent_expiry(),
        };
        let parked_at = meta.disconnected_at.unwrap_or(wall);
        let away = wall.duration_since(parked_at).unwrap_or_default();
        let left = (expiry != u32::MAX)
            .then(|| Duration::from_secs(u64::from(expiry)).saturating_sub(away));
        if left.is_some_and(|left| left.is_zero()) {
            // A number of its own, so the deletion is ordered before any
            // new session of the client.
            let id = self.next_session;
            self.next_session += 1;
            if let Some(journal) = self.journal.as_mut() {
                journal.writes.changes(id, &client_id).clear();
                journal.changes += 1;
            }
            return false;
        }

        let id = self.create_session(client_id.clone(), meta.version);
        let mut rewrite = damaged;
        for (filter, options) in subscriptions {
            match TopicFilter::try_from(filter) {
                Ok(filter) => {
                    self.route_subscription(id, &filter, options.clone());
                    self.session_mut(id).subscriptions.insert(filter, options);
                }
                Err(error) => {
                    tracing::error!(client_id, "stored subscription left out: {error}");
                    rewrite = true;
                }
            }
        }
        let next_order = inflight.last().map_or(0, |i| i.order.saturating_add(1));
        let limits = QueueLimits {
            messages: self.config.max_queued_messages,
            bytes: self.config.max_queued_bytes,
        };
        let grants = self.auth.grants(&client_id, meta.username.as_deref());
        let mut queue_head = None;
        let mut last_seq: Option<u64> = None;
        {
            let session = self.sessions.get_mut(&id).expect("session just made");
            session.expiry_interval = expiry;
            session.generation = 1;
            session.next_pkid = meta.last_pkid;
            session.grants = grants;
            session.incoming_qos2.extend(incoming);
            session.inflight.extend(inflight.into_iter().map(|stored| {
                let mut inflight = stored.inflight;
                if let (Inflight::Publish(_, Some(shared)), Some(at)) =
                    (&mut inflight, stored.shared_expires)
                {
                    // Due already: it expires when next looked at.
                    let left = at.duration_since(wall).unwrap_or_default();
                    if let Some(message) = Arc::get_mut(&mut shared.message) {
                        message.expires_at = Some(now.checked_add(left).unwrap_or(now));
                    }
                }
                inflight
            }));
            for (seq, stored) in queue {
                let StoredQueued {
                    mut queued,
                    expires,
                } = stored;
                let expires_at = match expires {
                    None => None,
                    Some(at) => match at.duration_since(wall) {
                        // Still to come: the same distance from `now`.
                        Ok(left) if !left.is_zero() => now.checked_add(left),
                        _ => {
                            self.stats.dropped_expired += 1;
                            rewrite = true;
                            continue;
                        }
                    },
                };
                if let Some(message) = Arc::get_mut(&mut queued.message) {
                    message.expires_at = expires_at;
                }
                if session.enqueue(queued, limits).is_err() {
                    self.stats.dropped_queue_full += 1;
                    rewrite = true;
                    continue;
                }
                // Stored queues have no gaps; a stored message that is not
                // the next one means entries went missing.
                if last_seq.is_some_and(|last| last.checked_add(1) != Some(seq)) {
                    rewrite = true;
                }
                last_seq = Some(seq);
                queue_head.get_or_insert(seq);
            }
        }

        if let Some((journal, session, clock)) = self.journal_parts(id) {
            let stored = Stored {
                queue_head: queue_head.unwrap_or(0),
                next_order,
                disconnected_at: Some(parked_at),
                username: meta.username.clone(),
            };
            journal.stored.insert(id, stored);
            if rewrite {
                journal.snapshot(id, session, clock);
            } else if meta.disconnected_at.is_none() || expiry != meta.expiry_interval {
                journal.meta.insert(id);
                journal.changes += 1;
            }
        }
        self.parked.push_back((id, 1));
        if let Some(left) = left {
            self.schedule(now + left, Timer::SessionExpiry(id, 1));
        }
        true
    }
}
