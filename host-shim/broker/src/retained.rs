//! The retained message store: at most one message per topic name
//! (MQTT-3.3.1-5), kept in a trie keyed by topic level so that a new
//! subscription's filter walks only the branches it can match.
//!
//! Children are kept in a `BTreeMap`, so a walk visits topics in a stable
//! order: level by level, each level compared byte by byte, a parent before
//! its children (`a`, `a/b`, `a-b`). That order is what subscribers see, and
//! it is what makes a walk resumable: [`RetainedStore::walk`] starts after a
//! given topic, so a subscription's delivery cursor and a management listing
//! only need to remember the last topic they handed out.
//!
//! Expiry is checked on every read, so an expired message is never handed
//! out even if [`RetainedStore::purge_expired`] has not run yet; the purge
//! only gives the memory (and disk) back. Messages with an expiry are also
//! indexed by expiry time, so a purge touches only what expired.
//!
//! With disk storage the trie stays the index and the cache: reads never
//! touch the disk, and the store itself does no I/O. Every change is
//! recorded as a pending write ([`RetainedWrites`]), which the core hands
//! out for the shell to write; the `disk` submodule is that writer, the
//! shell's, and also reads the file back at start ([`RetainedRecord`]s,
//! which [`RetainedStore::load`] takes).
//!
//! Topic names can be more than 30,000 levels deep, so walks use loops with
//! an explicit stack and nodes are dismantled iteratively on drop: a hostile
//! topic must not overflow the router task's stack.

mod disk;

pub(crate) use disk::DiskStore;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::Publish;
use serde::{Serialize, Serializer};
use std::collections::{btree_map, BTreeMap, BTreeSet};
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The retained message store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum RetainedStoreError {
    /// The database file could not be opened or created (missing directory,
    /// no permission, held by another broker, not a database).
    #[error("cannot open the retained message store {}: {reason}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The file is not a database this broker can read: damaged, truncated
    /// or of another kind. The reason says what to do.
    #[error("the retained message store {} is damaged: {reason}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What went wrong, and what to do.
        reason: String,
    },
    /// An entry in the file could not be decoded (logged at start; the entry
    /// is left out).
    #[error("retained message store {}: entry {topic:?}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The entry's topic.
        topic: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Pending changes could not be written; they are kept and tried again
    /// at the next commit.
    #[error("cannot write to the retained message store {}: {reason}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// A retained message as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RetainedMessage {
    /// The PUBLISH as received (topic set, RETAIN set, no topic alias, no
    /// packet id); its payload `Bytes` are shared with every delivery.
    pub publish: Publish,
    /// Wall-clock time it was stored, for listings and for the disk, where
    /// an `Instant` means nothing after a restart.
    pub modified: SystemTime,
    /// When it expires: after its own Message Expiry Interval, or the
    /// broker's default expiry when it has none.
    pub expires_at: Option<Instant>,
    /// The interval, in seconds, `expires_at` was computed from.
    pub expiry_secs: Option<u32>,
    /// Store order, set by [`RetainedStore::insert`]: a message with a higher
    /// number was stored later.
    pub seq: u64,
}

impl RetainedMessage {
    /// A message stored at `now` (`wall` on the wall clock). It expires after
    /// the PUBLISH's Message Expiry Interval if it has one (MQTT 5.0
    /// 3.3.2.3.3), else after `default_expiry` seconds if that is not 0.
    pub fn new(publish: Publish, now: Instant, wall: SystemTime, default_expiry: u32) -> Self {
        let own = publish
            .properties
            .as_ref()
            .and_then(|p| p.message_expiry_interval);
        let expiry_secs = own.or((default_expiry > 0).then_some(default_expiry));
        RetainedMessage {
            publish,
            modified: wall,
            expires_at: expiry_secs.and_then(|secs| expiry_instant(now, secs)),
            expiry_secs,
            seq: 0,
        }
    }

    /// Whether the message has expired at `now`: it is gone at its expiry
    /// instant, not one tick later.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The expiry the subscriber is told about: only the publisher's own
    /// Message Expiry Interval. A broker default (`retain.default_expiry`)
    /// limits how long the message is kept, not what it says.
    pub fn own_expiry(&self) -> Option<Instant> {
        let own = self
            .publish
            .properties
            .as_ref()
            .and_then(|p| p.message_expiry_interval);
        own.and(self.expires_at)
    }

    /// The topic name.
    pub fn topic(&self) -> String {
        String::from_utf8_lossy(&self.publish.topic).into_owned()
    }

    /// What a listing shows of the message at `now`.
    pub fn info(&self, now: Instant) -> RetainedInfo {
        RetainedInfo {
            topic: self.topic(),
            qos: self.publish.qos as u8,
            payload_bytes: self.publish.payload.len(),
            last_modified: self
                .modified
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            expires_in: self
                .expires_at
                .map(|at| at.saturating_duration_since(now).as_secs()),
        }
    }
}

/// `now + secs`, or `None` when that is past what the clock can represent
/// (as good as never).
fn expiry_instant(now: Instant, secs: u32) -> Option<Instant> {
    now.checked_add(Duration::from_secs(secs.into()))
}

/// A retained message as read back from disk.
#[derive(Debug)]
pub struct RetainedRecord {
    /// The topic name.
    pub topic: String,
    /// The PUBLISH, packet identifier 0.
    pub publish: Publish,
    /// When it was stored.
    pub modified: SystemTime,
    /// Its expiry interval, from `modified`.
    pub expiry_secs: Option<u32>,
}

/// Retained changes not yet on disk: the latest state of each changed
/// topic, a message to write or nothing (deleted).
#[derive(Debug, Default)]
pub struct RetainedWrites {
    changes: BTreeMap<Box<str>, Option<Arc<RetainedMessage>>>,
}

impl RetainedWrites {
    /// Records that `topic` now holds `message`.
    pub fn put(&mut self, topic: &str, message: Arc<RetainedMessage>) {
        self.changes.insert(topic.into(), Some(message));
    }

    /// Records that `topic` holds nothing.
    pub fn delete(&mut self, topic: &str) {
        self.changes.insert(topic.into(), None);
    }

    /// Adds `later`'s changes; where both changed a topic, `later` wins.
    pub fn merge(&mut self, later: RetainedWrites) {
        self.changes.extend(later.changes);
    }

    /// Whether no change is recorded.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The changes in topic order: the message to write, or `None` to
    /// delete.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&RetainedMessage>)> {
        self.changes
            .iter()
            .map(|(topic, change)| (&**topic, change.as_deref()))
    }

    /// Forgets every change (they were written).
    pub fn clear(&mut self) {
        self.changes.clear();
    }
}

/// One retained message as the management API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetainedInfo {
    /// The topic name.
    pub topic: String,
    /// The QoS it was published with.
    pub qos: u8,
    /// Payload size in bytes.
    pub payload_bytes: usize,
    /// When it was stored, in seconds since the Unix epoch.
    pub last_modified: u64,
    /// Seconds until it expires; `None` never expires.
    pub expires_in: Option<u64>,
}

/// One retained message with its payload, as the management API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetainedEntry {
    /// What a listing shows.
    #[serde(flatten)]
    pub info: RetainedInfo,
    /// The payload. In JSON: a string when it is UTF-8, else an array of
    /// byte values.
    #[serde(serialize_with = "payload_json")]
    pub payload: Bytes,
}

fn payload_json<S: Serializer>(payload: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
    match std::str::from_utf8(payload) {
        Ok(text) => serializer.serialize_str(text),
        Err(_) => serializer.collect_seq(payload.iter()),
    }
}

/// One page of a retained message listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetainedPage {
    /// The entries, in topic order.
    pub entries: Vec<RetainedInfo>,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Retained messages by topic name, with wildcard lookup.
///
/// The router task owns it, so it is plain data: no locks. Messages are
/// behind `Arc` so that handing them to many subscribers copies nothing.
#[derive(Debug, Default)]
pub struct RetainedStore {
    /// The node for the empty path; its children are first levels.
    root: Node,
    /// Messages stored, expired ones not yet purged included.
    len: usize,
    /// Messages that expire, by expiry time.
    expiries: BTreeSet<(Instant, Box<str>)>,
    /// The next [`RetainedMessage::seq`].
    next_seq: u64,
    /// Changes not handed out yet, with disk storage.
    writes: Option<RetainedWrites>,
    /// Nodes visited by walks so far, for tests of what a step costs.
    #[cfg(test)]
    visits: std::cell::Cell<usize>,
}

/// One topic level.
#[derive(Debug, Default)]
struct Node {
    /// The next levels, in order.
    children: BTreeMap<Box<str>, Node>,
    /// The message retained for the topic ending here.
    message: Option<Arc<RetainedMessage>>,
}

/// A node a [`RetainedStore::walk`] is about to visit.
#[derive(Clone, Copy)]
struct Visit<'a> {
    node: &'a Node,
    /// Levels from the root.
    depth: usize,
    /// A `#` covers this whole subtree; otherwise the filter is matched
    /// from level `depth` on.
    all: bool,
    /// Whether the node's path equals the first `depth` levels of the topic
    /// the walk resumes after. Only such "spine" nodes have children on both
    /// sides of the resume point; everything off the spine is entirely after
    /// it (whatever was before was never reached).
    spine: bool,
}

/// The children of one node that a walk still has to visit, in order: a
/// range over the node's `BTreeMap`, never a copy of it, so a walk holds
/// one of these per level and no more, however many children a level has.
struct Children<'a> {
    range: btree_map::Range<'a, Box<str>, Node>,
    /// Depth of the children.
    depth: usize,
    all: bool,
    /// On the spine, the child that continues it; the range starts there.
    spine_key: Option<&'a str>,
    /// MQTT-4.7.2-1: a first-level wildcard skips `$` topics.
    hide_dollar: bool,
}

impl<'a> Children<'a> {
    /// The children of `node` at or after `from` (all of them without), to
    /// be visited at `depth`.
    fn of(node: &'a Node, depth: usize, all: bool, from: Option<&'a str>) -> Self {
        let range = match from {
            Some(from) => node
                .children
                .range::<str, _>((Bound::Included(from), Bound::Unbounded)),
            None => node.children.range::<str, _>(..),
        };
        Children {
            range,
            depth,
            all,
            spine_key: from,
            hide_dollar: depth == 1,
        }
    }

    fn next_visit(&mut self) -> Option<Visit<'a>> {
        for (key, node) in self.range.by_ref() {
            if self.hide_dollar && key.starts_with('$') {
                continue;
            }
            return Some(Visit {
                node,
                depth: self.depth,
                all: self.all,
                spine: self.spine_key == Some(&**key),
            });
        }
        None
    }
}

impl RetainedStore {
    /// An empty store in memory.
    pub fn new() -> Self {
        RetainedStore::default()
    }

    /// An empty store in memory that records every change as a pending
    /// write, for disk storage (see [`take_writes`](Self::take_writes)).
    pub fn persistent() -> Self {
        RetainedStore {
            writes: Some(RetainedWrites::default()),
            ..RetainedStore::default()
        }
    }

    /// Adds the messages read back from disk; messages that expired while
    /// the broker was down are dropped, and with a persistent store their
    /// deletion is a pending write. `now` and `wall` are the same moment on
    /// both clocks.
    pub fn load(&mut self, records: Vec<RetainedRecord>, now: Instant, wall: SystemTime) {
        for record in records {
            let topic = record.topic;
            let expires_at = match record.expiry_secs {
                None => None,
                Some(secs) => {
                    let end = record
                        .modified
                        .checked_add(Duration::from_secs(secs.into()));
                    match end.map(|end| end.duration_since(wall)) {
                        // Still to come: the same distance from `now`.
                        Some(Ok(left)) if !left.is_zero() => now.checked_add(left),
                        // Past (or unrepresentably far): past is dropped.
                        Some(_) => {
                            if let Some(writes) = self.writes.as_mut() {
                                writes.delete(&topic);
                            }
                            continue;
                        }
                        None => None,
                    }
                }
            };
            let message = RetainedMessage {
                publish: record.publish,
                modified: record.modified,
                expires_at,
                expiry_secs: record.expiry_secs,
                seq: 0,
            };
            self.insert_indexed(&topic, message);
        }
    }

    /// Stores `message` for `topic`, replacing any earlier one; returns it as
    /// stored. A persistent store records the change as a pending write.
    pub fn insert(&mut self, topic: &str, message: RetainedMessage) -> Arc<RetainedMessage> {
        let stored = self.insert_indexed(topic, message);
        if let Some(writes) = self.writes.as_mut() {
            writes.put(topic, Arc::clone(&stored));
        }
        stored
    }

    /// [`insert`](Self::insert) without the disk write.
    fn insert_indexed(
        &mut self,
        topic: &str,
        mut message: RetainedMessage,
    ) -> Arc<RetainedMessage> {
        self.next_seq += 1;
        message.seq = self.next_seq;
        if let Some(at) = message.expires_at {
            self.expiries.insert((at, topic.into()));
        }
        let stored = Arc::new(message);
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        match node.message.replace(Arc::clone(&stored)) {
            None => self.len += 1,
            Some(old) => {
                if let Some(at) = old.expires_at {
                    if Some(at) != stored.expires_at {
                        self.expiries.remove(&(at, topic.into()));
                    }
                }
            }
        }
        stored
    }

    /// Deletes the retained message of `topic`; true if there was one. A
    /// persistent store records the deletion as a pending write.
    ///
    /// Levels left with neither a message nor children are pruned, so the
    /// store does not keep the shape of every topic ever retained.
    pub fn remove(&mut self, topic: &str) -> bool {
        let levels: Vec<&str> = topic.split('/').collect();

        // First walk: take the message out.
        let mut node = &mut self.root;
        for level in &levels {
            match node.children.get_mut(*level) {
                Some(child) => node = child,
                None => return false,
            }
        }
        let Some(old) = node.message.take() else {
            return false;
        };
        self.len -= 1;
        if let Some(at) = old.expires_at {
            self.expiries.remove(&(at, topic.into()));
        }
        if let Some(writes) = self.writes.as_mut() {
            writes.delete(topic);
        }

        // Second walk: find the highest level from which the rest of the
        // path holds nothing else, and cut the branch there.
        let mut cut = None;
        let mut node = &self.root;
        for (depth, level) in levels.iter().enumerate() {
            let Some(child) = node.children.get(*level) else {
                break;
            };
            // Along the path a node may only keep the child that continues
            // the path; the last node may keep nothing.
            let allowed = usize::from(depth + 1 < levels.len());
            if child.message.is_none() && child.children.len() <= allowed {
                cut.get_or_insert(depth);
            } else {
                cut = None;
            }
            node = child;
        }
        // The levels down to the parent of the node to cut, and its level.
        let cut = cut
            .and_then(|cut| levels.get(..=cut))
            .and_then(<[&str]>::split_last);
        if let Some((level, above)) = cut {
            let mut parent = &mut self.root;
            for step in above {
                match parent.children.get_mut(*step) {
                    Some(child) => parent = child,
                    None => return true,
                }
            }
            parent.children.remove(*level);
        }
        true
    }

    /// The retained message of exactly `topic`, unless expired at `now`.
    pub fn get(&self, topic: &str, now: Instant) -> Option<Arc<RetainedMessage>> {
        self.find(topic)?.live(now).cloned()
    }

    /// Whether `topic` has a message, expired or not.
    pub fn contains(&self, topic: &str) -> bool {
        self.find(topic).is_some_and(|node| node.message.is_some())
    }

    fn find(&self, topic: &str) -> Option<&Node> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        Some(node)
    }

    /// Appends every unexpired retained message whose topic matches `filter`
    /// (a valid filter without `$share/`), in topic order.
    #[cfg(test)]
    pub fn matching(&self, filter: &str, now: Instant, out: &mut Vec<Arc<RetainedMessage>>) {
        self.walk(filter, None, now, usize::MAX, &mut |_| true, out);
    }

    /// Appends, in topic order, up to `limit` unexpired retained messages
    /// whose topic matches `filter` (a valid filter without `$share/`), comes
    /// after `after` in topic order, and passes `keep`.
    ///
    /// The wildcard rules are the subscription trie's: `+` is one level, the
    /// empty one included; `#` is the parent level and everything below it
    /// (`a/#` matches `a`); and a filter starting with a wildcard does not
    /// match topics starting with `$` (MQTT-4.7.2-1).
    ///
    /// A call costs what it visits, never what is left: resuming descends
    /// along `after`'s levels with one ordered range lookup per level, and
    /// the walk holds one range iterator per level below that, so a step of
    /// a delivery costs O(messages found + levels x log(children)) however
    /// many topics are still to come. Nodes it passes without appending
    /// (no message, expired, refused by `keep`) are the only extra cost, and
    /// each is passed once per walk.
    pub fn walk(
        &self,
        filter: &str,
        after: Option<&str>,
        now: Instant,
        limit: usize,
        keep: &mut dyn FnMut(&RetainedMessage) -> bool,
        out: &mut Vec<Arc<RetainedMessage>>,
    ) {
        if limit == 0 {
            return;
        }
        let levels: Vec<&str> = filter.split('/').collect();
        let last = levels.len().saturating_sub(1);
        let after: Vec<&str> = after.map_or_else(Vec::new, |a| a.split('/').collect());
        let mut found = 0;

        // Depth first, in order: a node, then its children one by one, each
        // child's subtree before the next child.
        let mut stack: Vec<Children<'_>> = Vec::new();
        let mut next = Some(Visit {
            node: &self.root,
            depth: 0,
            all: false,
            spine: !after.is_empty(),
        });
        loop {
            let visit = match next.take() {
                Some(visit) => visit,
                None => {
                    let Some(top) = stack.last_mut() else {
                        return;
                    };
                    match top.next_visit() {
                        Some(visit) => visit,
                        None => {
                            stack.pop();
                            continue;
                        }
                    }
                }
            };
            let Visit {
                node,
                depth,
                all,
                spine,
            } = visit;
            #[cfg(test)]
            self.visits.set(self.visits.get() + 1);
            // On the spine, the level of `after` at this depth: children
            // before it are skipped, and the one equal to it stays on the
            // spine. At the end of `after` (the node is `after` itself) every
            // child comes after it.
            let cut = if spine {
                after.get(depth).copied()
            } else {
                None
            };
            // Whether this node's own message matches, and how its children
            // are to be walked.
            let (emit, children) = if all {
                (true, Some(true))
            } else {
                match levels.get(depth).copied() {
                    None => (true, None),
                    // '#' only counts as a wildcard as the last level; an
                    // invalid filter with '#' elsewhere matches it literally,
                    // which no topic name can, instead of panicking.
                    Some("#") if depth == last => (true, Some(true)),
                    Some("+") => (false, Some(false)),
                    Some(literal) => {
                        let on = match cut {
                            Some(from) if literal < from => continue,
                            Some(from) => literal == from,
                            None => false,
                        };
                        if let Some(child) = node.children.get(literal) {
                            next = Some(Visit {
                                node: child,
                                depth: depth + 1,
                                all: false,
                                spine: on,
                            });
                        }
                        (false, None)
                    }
                }
            };
            // A spine node's own topic is `after` or a prefix of it: not
            // after it.
            if emit && !spine {
                if let Some(message) = node.live(now) {
                    if keep(message) {
                        out.push(Arc::clone(message));
                        found += 1;
                        if found >= limit {
                            return;
                        }
                    }
                }
            }
            if let Some(all) = children {
                if !node.children.is_empty() {
                    stack.push(Children::of(node, depth + 1, all, cut));
                }
            }
        }
    }

    /// Deletes messages expired at `now`; returns how many.
    pub fn purge_expired(&mut self, now: Instant) -> usize {
        let mut purged = 0;
        while let Some((at, _)) = self.expiries.first() {
            if *at > now {
                break;
            }
            let Some((_, topic)) = self.expiries.pop_first() else {
                break;
            };
            // The index only holds topics whose current message expires at
            // `at`, so this removes exactly that message.
            if self.remove(&topic) {
                purged += 1;
            }
        }
        purged
    }

    /// Number of retained messages stored, counting expired ones until
    /// [`purge_expired`](Self::purge_expired) removes them.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Number of messages expired at `now` but not purged yet.
    pub fn expired_count(&self, now: Instant) -> usize {
        self.expiries
            .iter()
            .take_while(|(at, _)| *at <= now)
            .count()
    }

    /// Whether no message is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The changes recorded since the last call, if any: a persistent
    /// store's pending writes.
    pub fn take_writes(&mut self) -> Option<RetainedWrites> {
        self.writes
            .as_mut()
            .filter(|writes| !writes.is_empty())
            .map(std::mem::take)
    }

    /// Whether changes wait for [`take_writes`](Self::take_writes).
    pub fn has_writes(&self) -> bool {
        self.writes
            .as_ref()
            .is_some_and(|writes| !writes.is_empty())
    }

    /// The [`RetainedMessage::seq`] of the message stored last.
    pub fn last_seq(&self) -> u64 {
        self.next_seq
    }
}

impl Node {
    /// This node's message, unless there is none or it expired at `now`.
    fn live(&self, now: Instant) -> Option<&Arc<RetainedMessage>> {
        self.message.as_ref().filter(|m| !m.is_expired(now))
    }
}

impl Drop for Node {
    /// Dismantles the subtree with a loop: the derived drop would recurse
    /// once per level, and a topic may be tens of thousands of levels deep.
    fn drop(&mut self) {
        let mut stack: Vec<Node> = Vec::new();
        stack.extend(std::mem::take(&mut self.children).into_values());
        // Each popped node has had its children moved out, so dropping it
        // here does not recurse.
        while let Some(mut node) = stack.pop() {
            stack.extend(std::mem::take(&mut node.children).into_values());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    use rumqttc::v5::mqttbytes::QoS;

    /// A retained message for `topic` stored at `now`, expiring after
    /// `expiry` seconds if given.
    fn message(topic: &str, now: Instant, expiry: Option<u32>) -> RetainedMessage {
        let properties = expiry.map(|secs| PublishProperties {
            message_expiry_interval: Some(secs),
            ..PublishProperties::default()
        });
        let mut publish = Publish::new(topic, QoS::AtLeastOnce, topic.to_owned(), properties);
        publish.retain = true;
        RetainedMessage::new(publish, now, UNIX_EPOCH, 0)
    }

    /// Topics of the messages `filter` finds, in the order found.
    fn topics(store: &RetainedStore, filter: &str, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        store.matching(filter, now, &mut out);
        out.iter()
            .map(|m| String::from_utf8_lossy(&m.publish.topic).into_owned())
            .collect()
    }

    /// A store holding one unexpiring message for each topic.
    fn store_of(list: &[&str], now: Instant) -> RetainedStore {
        let mut store = RetainedStore::new();
        for topic in list {
            store.insert(topic, message(topic, now, None));
        }
        store
    }

    #[test]
    fn store_replace_and_delete() {
        let now = Instant::now();
        let mut store = RetainedStore::new();
        assert!(store.is_empty());
        let first = store.insert("a/b", message("a/b", now, None));
        assert_eq!(store.len(), 1);
        assert_eq!(store.get("a/b", now), Some(first));
        assert_eq!(store.get("a", now), None);
        assert_eq!(store.get("a/b/c", now), None);

        // MQTT-3.3.1-5: a new retained message replaces the old one.
        let second = store.insert("a/b", message("a/b", now, Some(60)));
        assert_eq!(store.len(), 1);
        assert_eq!(store.get("a/b", now), Some(second));

        // MQTT-3.3.1-6 (5.0) / MQTT-3.3.1-10 (3.1.1): an empty retained
        // payload deletes; the core turns it into `remove`.
        assert!(store.remove("a/b"));
        assert!(!store.remove("a/b"));
        assert!(!store.remove("a"));
        assert_eq!(store.get("a/b", now), None);
        assert!(store.is_empty());
        assert!(store.root.children.is_empty(), "empty levels pruned");
    }

    #[test]
    fn remove_keeps_other_topics_and_prunes_the_rest() {
        let now = Instant::now();
        let mut store = store_of(&["a", "a/b/c", "a/b/d", "x/y/z"], now);
        assert!(store.remove("a/b/c"));
        assert!(store.root.children.contains_key("a"));
        assert!(store.remove("a/b/d"));
        let a = store.root.children.get("a").expect("a still has a message");
        assert!(a.children.is_empty());
        assert!(store.remove("x/y/z"));
        assert!(!store.root.children.contains_key("x"));
        assert_eq!(topics(&store, "#", now), vec!["a"]);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn wildcard_lookup() {
        let now = Instant::now();
        let store = store_of(
            &[
                "a", "a/b", "a/b/c", "a/c", "a/", "a//c", "b", "/a", "$SYS/x",
            ],
            now,
        );
        // MQTT-3.3.1-6 (3.1.1) / MQTT-3.3.1-9 (5.0): every retained message
        // matching the new subscription's filter.
        assert_eq!(topics(&store, "a/b", now), vec!["a/b"]);
        // '+' is exactly one level, the empty one included (MQTT-4.7.1-3 in
        // 3.1.1, MQTT-4.7.1-2 in 5.0).
        assert_eq!(topics(&store, "a/+", now), vec!["a/", "a/b", "a/c"]);
        assert_eq!(topics(&store, "a/+/c", now), vec!["a//c", "a/b/c"]);
        assert_eq!(topics(&store, "+/a", now), vec!["/a"]);
        // '#' includes the parent (MQTT-4.7.1-2 in 3.1.1, MQTT-4.7.1-1 in 5.0).
        assert_eq!(
            topics(&store, "a/#", now),
            vec!["a", "a/", "a//c", "a/b", "a/b/c", "a/c"]
        );
        assert_eq!(topics(&store, "a/b/#", now), vec!["a/b", "a/b/c"]);
        assert_eq!(topics(&store, "a/b/c/#", now), vec!["a/b/c"]);
        assert_eq!(topics(&store, "+/#", now).len(), 8);
        assert!(topics(&store, "c/#", now).is_empty());
        assert!(topics(&store, "a/b/c/d", now).is_empty());
    }

    #[test]
    fn first_level_wildcards_skip_dollar_topics() {
        // MQTT-4.7.2-1.
        let now = Instant::now();
        let store = store_of(&["$SYS/broker/uptime", "$x", "a/$y", "b"], now);
        assert_eq!(topics(&store, "#", now), vec!["a/$y", "b"]);
        assert_eq!(topics(&store, "+", now), vec!["b"]);
        assert!(topics(&store, "+/broker/uptime", now).is_empty());
        assert_eq!(topics(&store, "a/+", now), vec!["a/$y"]);
        assert_eq!(topics(&store, "$SYS/#", now), vec!["$SYS/broker/uptime"]);
        assert_eq!(
            topics(&store, "$SYS/+/uptime", now),
            vec!["$SYS/broker/uptime"]
        );
        assert_eq!(topics(&store, "$x", now), vec!["$x"]);
    }

    #[test]
    fn results_come_in_topic_order() {
        let now = Instant::now();
        let store = store_of(&["b/a", "a-b", "a/b", "a", "b", "a/a/z", "A"], now);
        // Level by level: a parent first, then its children, then the next
        // sibling, whatever order they were stored in.
        assert_eq!(
            topics(&store, "#", now),
            vec!["A", "a", "a/a/z", "a/b", "a-b", "b", "b/a"]
        );
    }

    #[test]
    fn expired_messages_are_never_returned() {
        // MQTT 5.0 3.3.2.3.3: once the Message Expiry Interval has passed,
        // the message is not delivered to new subscribers.
        let t0 = Instant::now();
        let mut store = RetainedStore::new();
        store.insert("a/short", message("a/short", t0, Some(10)));
        store.insert("a/long", message("a/long", t0, Some(100)));
        store.insert("a/never", message("a/never", t0, None));
        store.insert("a/zero", message("a/zero", t0, Some(0)));
        let t10 = t0 + Duration::from_secs(10);

        assert!(store.get("a/zero", t0).is_none());
        assert!(store.get("a/short", t0 + Duration::from_secs(9)).is_some());
        // Gone at its expiry instant, before any purge.
        assert!(store.get("a/short", t10).is_none());
        assert_eq!(topics(&store, "a/#", t10), vec!["a/long", "a/never"]);
        assert_eq!(topics(&store, "a/short", t10), Vec::<String>::new());
        assert_eq!(store.len(), 4);

        assert_eq!(store.purge_expired(t10), 2);
        assert_eq!(store.len(), 2);
        assert_eq!(store.purge_expired(t10), 0);
        let later = t0 + Duration::from_secs(1000);
        assert_eq!(store.purge_expired(later), 1);
        assert_eq!(topics(&store, "#", later), vec!["a/never"]);
        assert!(store.remove("a/never"));
        assert!(store.root.children.is_empty());
    }

    #[test]
    fn huge_expiry_interval_does_not_panic() {
        let now = Instant::now();
        let held = message("t", now, Some(u32::MAX));
        assert!(!held.is_expired(now + Duration::from_secs(1 << 20)));
    }

    #[test]
    fn very_deep_topics_do_not_overflow_the_stack() {
        let now = Instant::now();
        let topic = vec!["a"; 32_000].join("/");
        let mut store = RetainedStore::new();
        store.insert(&topic, message("deep", now, Some(1)));
        store.insert("a", message("a", now, None));
        assert!(store.get(&topic, now).is_some());
        assert_eq!(topics(&store, "#", now).len(), 2);
        assert_eq!(topics(&store, &format!("{topic}/#"), now).len(), 1);
        let later = now + Duration::from_secs(1);
        assert_eq!(store.purge_expired(later), 1);
        assert_eq!(store.len(), 1);
        store.insert(&topic, message("deep", now, None));
        drop(store);
    }

    /// Walks `filter` in steps of `step`, each resuming after the last
    /// topic the previous one found, as a delivery cursor does.
    fn stepped(store: &RetainedStore, filter: &str, now: Instant, step: usize) -> Vec<String> {
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut got = Vec::new();
            store.walk(filter, after.as_deref(), now, step, &mut |_| true, &mut got);
            let done = got.len() < step;
            if let Some(last) = got.last() {
                after = Some(last.topic());
            }
            seen.extend(got.iter().map(|m| m.topic()));
            if done {
                return seen;
            }
        }
    }

    #[test]
    fn a_step_visits_what_it_finds_not_what_is_left() {
        // 20,000 siblings under one level, the shape of `a/#` over `a/N`:
        // a resumed step of 10 visits the levels down to its resume point
        // and the 10 it finds, wherever the cursor stands.
        let now = Instant::now();
        let mut store = RetainedStore::new();
        for i in 0..20_000 {
            let topic = format!("a/{i:05}");
            store.insert(&topic, message(&topic, now, None));
        }
        for resume in ["a/00000", "a/10000", "a/19980"] {
            store.visits.set(0);
            let mut got = Vec::new();
            store.walk("a/#", Some(resume), now, 10, &mut |_| true, &mut got);
            assert_eq!(got.len(), 10);
            assert!(got[0].topic().as_str() > resume);
            assert!(
                store.visits.get() <= 10 + 3,
                "visited {} nodes after {resume}",
                store.visits.get()
            );
        }
        // One message at a time: four nodes a step (the root, `a`, the
        // resume point, the one found), not the rest of the level.
        store.visits.set(0);
        assert_eq!(stepped(&store, "a/#", now, 1).len(), 20_000);
        assert!(store.visits.get() <= 20_000 * 4 + 3);
    }

    #[test]
    fn resumed_walks_keep_wildcard_rules_and_order() {
        let now = Instant::now();
        let store = store_of(
            &[
                "a", "a/b", "a/b/c", "a/c", "a/", "a//c", "b", "/a", "$SYS/x", "$SYS/y", "b/a",
            ],
            now,
        );
        for filter in ["#", "a/#", "+/#", "+", "a/+", "+/+/c", "$SYS/#", "b/a"] {
            let all = topics(&store, filter, now);
            for step in 1..4 {
                assert_eq!(
                    stepped(&store, filter, now, step),
                    all,
                    "{filter} by {step}"
                );
            }
        }
        // Resuming after a topic the store no longer holds, or never held.
        let mut got = Vec::new();
        store.walk("#", Some("a/bb"), now, usize::MAX, &mut |_| true, &mut got);
        let got: Vec<String> = got.iter().map(|m| m.topic()).collect();
        assert_eq!(got, ["a/c", "b", "b/a"]);
    }

    /// Brute-force matching of one filter against one topic name, straight
    /// from section 4.7.
    fn reference(filter: &str, topic: &str) -> bool {
        if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
            return false;
        }
        let filter: Vec<&str> = filter.split('/').collect();
        let topic: Vec<&str> = topic.split('/').collect();
        let mut i = 0;
        loop {
            match (filter.get(i), topic.get(i)) {
                (Some(&"#"), _) if i + 1 == filter.len() => return true,
                (Some(&"+"), Some(_)) => {}
                (Some(f), Some(t)) if f == t => {}
                (None, None) => return true,
                _ => return false,
            }
            i += 1;
        }
    }

    /// A topic name over a small alphabet, so topics and filters often meet.
    fn topic_strategy() -> impl Strategy<Value = String> {
        let level = prop_oneof![Just("a"), Just("b"), Just(""), Just("$s")];
        prop::collection::vec(level, 1..5).prop_map(|levels| levels.join("/"))
    }

    /// A filter over the same alphabet plus '+', maybe ending in '#'.
    fn filter_strategy() -> impl Strategy<Value = String> {
        let level = prop_oneof![Just("a"), Just("b"), Just(""), Just("$s"), Just("+")];
        (prop::collection::vec(level, 0..5), any::<bool>()).prop_map(|(mut levels, hash)| {
            if hash || levels.is_empty() {
                levels.push("#");
            }
            levels.join("/")
        })
    }

    proptest! {
        #[test]
        fn matching_agrees_with_brute_force(
            stored in prop::collection::vec((topic_strategy(), prop::option::of(0u32..3)), 0..24),
            removed in prop::collection::vec(topic_strategy(), 0..6),
            filters in prop::collection::vec(filter_strategy(), 1..8),
            elapsed in 0u64..4,
            step in 1usize..4,
        ) {
            let t0 = Instant::now();
            let now = t0 + Duration::from_secs(elapsed);
            let mut store = RetainedStore::new();
            // What the store should hold: the last message per topic.
            let mut expected: BTreeMap<String, Arc<RetainedMessage>> = BTreeMap::new();
            for (topic, expiry) in &stored {
                let m = store.insert(topic, message(topic, t0, *expiry));
                expected.insert(topic.clone(), m);
            }
            for topic in &removed {
                prop_assert_eq!(store.remove(topic), expected.remove(topic).is_some());
            }
            prop_assert_eq!(store.len(), expected.len());

            for filter in &filters {
                let mut got = Vec::new();
                store.matching(filter, now, &mut got);
                let mut want: Vec<(Vec<&str>, &Arc<RetainedMessage>)> = expected
                    .iter()
                    .filter(|(topic, m)| reference(filter, topic) && !m.is_expired(now))
                    .map(|(topic, m)| (topic.split('/').collect(), m))
                    .collect();
                // Topic order is level by level.
                want.sort_by(|a, b| a.0.cmp(&b.0));
                let want: Vec<Arc<RetainedMessage>> =
                    want.into_iter().map(|(_, m)| m.clone()).collect();
                prop_assert_eq!(got, want, "filter {:?}", filter);
            }
            for topic in expected.keys() {
                let want = expected.get(topic).filter(|m| !m.is_expired(now)).cloned();
                prop_assert_eq!(store.get(topic, now), want);
            }

            // Resumed in steps, a walk finds the same, in the same order.
            for filter in &filters {
                let mut all = Vec::new();
                store.matching(filter, now, &mut all);
                let all: Vec<String> = all.iter().map(|m| m.topic()).collect();
                prop_assert_eq!(stepped(&store, filter, now, step), all, "filter {:?}", filter);
            }

            let live = expected.values().filter(|m| !m.is_expired(now)).count();
            prop_assert_eq!(store.purge_expired(now), expected.len() - live);
            prop_assert_eq!(store.len(), live);
            for topic in expected.keys() {
                store.remove(topic);
            }
            prop_assert!(store.is_empty() && store.root.children.is_empty());
        }
    }
}
