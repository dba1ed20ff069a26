//! What of a session is kept on disk, in the shapes the core and the disk
//! store exchange: the changes the core records ([`SessionWrites`]), which
//! the shell writes, and the sessions read back at start
//! ([`SessionRecord`]), which the core loads.
//!
//! Entries are keyed so that a change writes only itself: a queued message
//! by its place in the session's queue (a number that grows with every
//! message queued, so never reused), a message in flight by its packet
//! identifier, a subscription by its filter, a QoS 2 packet identifier
//! from the client by itself. The rest of the session is one small record
//! ([`SessionMeta`]).

use super::{Inflight, Queued};
use crate::types::{SessionId, SubOptions};
use mqtt_topic::MqttVersion;
use std::collections::BTreeMap;
use std::time::SystemTime;

/// A session's own state, beside its subscriptions and messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionMeta {
    /// The protocol of its last connection.
    pub version: MqttVersion,
    /// Session Expiry Interval in seconds; `u32::MAX` never expires.
    pub expiry_interval: u32,
    /// When its client disconnected, on the wall clock; `None` while it
    /// was connected, so that after a crash its expiry counts from the
    /// restart.
    pub disconnected_at: Option<SystemTime>,
    /// The last packet identifier handed out.
    pub last_pkid: u16,
    /// The user name of its last connection, so the ACL applies to it
    /// while it waits for its client after a restart.
    pub username: Option<String>,
}

/// A message in flight to the client, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredInflight {
    /// Its place in the order PUBLISHes were sent, and PUBRELs after their
    /// PUBREC: a resumed session sends them again in this order.
    pub order: u64,
    /// The PUBLISH (with its packet identifier), or the PUBREL's packet
    /// identifier.
    pub inflight: Inflight,
    /// When the message kept for a shared subscription's hand-over
    /// expires, on the wall clock (its `expires_at` is read back as
    /// `None`).
    pub shared_expires: Option<SystemTime>,
}

/// A queued message, as stored.
#[derive(Debug, Clone)]
pub struct StoredQueued {
    /// The message and what the subscriptions made of it. The message's
    /// `expires_at`, an `Instant`, means nothing after a restart: `expires`
    /// is kept instead (and read back as `None`).
    pub queued: Queued,
    /// When it expires, on the wall clock.
    pub expires: Option<SystemTime>,
}

/// One session's changes not yet on disk: the latest state of each changed
/// entry, to write (`Some`) or delete (`None`).
#[derive(Debug, Clone)]
pub struct SessionChanges {
    /// The client identifier, which keys everything on disk.
    pub client_id: String,
    /// Delete everything stored for the client first: the session is new,
    /// ended, or written again whole.
    pub clear: bool,
    /// The session's own state.
    pub meta: Option<SessionMeta>,
    /// Subscriptions by their full filter.
    pub subscriptions: BTreeMap<String, Option<SubOptions>>,
    /// QoS 2 packet identifiers from the client: held (PUBREC sent) or
    /// released.
    pub incoming: BTreeMap<u16, bool>,
    /// Messages in flight to the client, by packet identifier.
    pub inflight: BTreeMap<u16, Option<StoredInflight>>,
    /// Queued messages, by their place in the queue.
    pub queue: BTreeMap<u64, Option<StoredQueued>>,
}

impl SessionChanges {
    /// No change yet to `client_id`'s session.
    pub fn new(client_id: String) -> Self {
        SessionChanges {
            client_id,
            clear: false,
            meta: None,
            subscriptions: BTreeMap::new(),
            incoming: BTreeMap::new(),
            inflight: BTreeMap::new(),
            queue: BTreeMap::new(),
        }
    }

    /// Forgets the changes and deletes everything stored instead.
    pub fn clear(&mut self) {
        let client_id = std::mem::take(&mut self.client_id);
        *self = SessionChanges::new(client_id);
        self.clear = true;
    }

    /// Records that the queued message at `seq` is gone. One queued since
    /// the last write never reaches the disk at all.
    pub fn dequeue(&mut self, seq: u64) {
        match self.queue.get(&seq) {
            Some(Some(_)) => {
                self.queue.remove(&seq);
            }
            _ => {
                self.queue.insert(seq, None);
            }
        }
    }

    /// Adds `later`'s changes; where both changed an entry, `later` wins.
    fn merge(&mut self, later: SessionChanges) {
        if later.clear {
            *self = later;
            return;
        }
        if later.meta.is_some() {
            self.meta = later.meta;
        }
        self.subscriptions.extend(later.subscriptions);
        self.incoming.extend(later.incoming);
        self.inflight.extend(later.inflight);
        for (seq, change) in later.queue {
            match change {
                Some(queued) => {
                    self.queue.insert(seq, Some(queued));
                }
                None => self.dequeue(seq),
            }
        }
    }
}

/// Session changes not yet on disk, by session. Sessions are numbered in
/// the order they were made, so a client's ended session comes before the
/// session that replaced it.
#[derive(Debug, Default)]
pub struct SessionWrites {
    sessions: BTreeMap<SessionId, SessionChanges>,
    /// The connections sent acknowledgements (PUBACK, PUBREC, PUBCOMP,
    /// SUBACK, UNSUBACK) in this batch that promise these changes are on
    /// disk: should the write fail, they are closed instead.
    pub waiting: Vec<u64>,
}

impl SessionWrites {
    /// The changes to session `id`, of client `client_id`, made from none
    /// if there are none yet.
    pub fn changes(&mut self, id: SessionId, client_id: &str) -> &mut SessionChanges {
        self.sessions
            .entry(id)
            .or_insert_with(|| SessionChanges::new(client_id.to_owned()))
    }

    /// Adds `later`'s changes; where both changed an entry, `later` wins.
    pub fn merge(&mut self, later: SessionWrites) {
        for (id, changes) in later.sessions {
            match self.sessions.entry(id) {
                std::collections::btree_map::Entry::Vacant(entry) => {
                    entry.insert(changes);
                }
                std::collections::btree_map::Entry::Occupied(mut entry) => {
                    entry.get_mut().merge(changes);
                }
            }
        }
        self.waiting.extend(later.waiting);
    }

    /// Whether no change is recorded.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The changes, oldest session first.
    pub fn iter(&self) -> impl Iterator<Item = &SessionChanges> {
        self.sessions.values()
    }

    /// Forgets every change (they were written).
    pub fn clear(&mut self) {
        self.sessions.clear();
        self.waiting.clear();
    }
}

/// A session as read back from disk.
#[derive(Debug)]
pub struct SessionRecord {
    /// The client identifier.
    pub client_id: String,
    /// Its own state.
    pub meta: SessionMeta,
    /// Its subscriptions: full filter and options.
    pub subscriptions: Vec<(String, SubOptions)>,
    /// QoS 2 packet identifiers from the client awaiting PUBREL.
    pub incoming: Vec<u16>,
    /// Messages in flight, in order.
    pub inflight: Vec<StoredInflight>,
    /// Queued messages by their place in the queue, in order.
    pub queue: Vec<(u64, StoredQueued)>,
    /// Some of its entries could not be read (they were logged): it is
    /// written again whole.
    pub damaged: bool,
}
