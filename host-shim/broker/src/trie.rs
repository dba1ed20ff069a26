//! The subscription trie: every subscription indexed by the levels of its
//! topic filter, so routing a PUBLISH walks only the branches its topic name
//! can match instead of testing every subscription.
//!
//! A filter such as `sport/+/score/#` is stored along the path
//! `sport` → `+` → `score`, with the subscriber recorded in the `#` slot of
//! the `score` node. Literal levels are children in a hash map; the `+`
//! child and the `#` slot sit beside it, so a lookup at one node costs one
//! hash probe plus two field reads, whatever the number of children.
//!
//! Each place a filter can end holds the non-shared subscribers of that
//! filter and its shared groups (`$share/{group}/{filter}`, MQTT 5.0 4.8.2):
//! a group gets one copy of each message, given to one member in turn.
//! Each match from a group is labelled with the group's full filter, so that
//! a message a member will not receive can be given to another one
//! ([`SubscriptionTrie::pick_member`]).
//!
//! Filters and topic names can be up to 65,535 bytes, so more than 30,000
//! levels deep. Every walk here is therefore a loop with an explicit stack,
//! and nodes are dismantled iteratively on drop, so that a hostile filter
//! cannot overflow the router task's stack.

use super::types::{SessionId, SubOptions};
use std::collections::HashMap;
use std::sync::Arc;

/// One delivery the router found for a topic: the session and the options
/// of the subscription that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// The subscriber.
    pub session: SessionId,
    /// The matching subscription's options.
    pub options: SubOptions,
    /// For a match from a shared subscription, its full filter
    /// (`$share/{group}/{filter}`); shared with the group, so a match costs
    /// no allocation.
    pub shared: Option<Arc<str>>,
}

/// Subscriptions indexed by topic level.
///
/// The router task owns it, so it is plain data: no locks.
#[derive(Debug, Default)]
pub struct SubscriptionTrie {
    /// The node for the empty path; its children are first levels.
    root: Node,
    /// Subscriptions stored (non-shared ones plus shared group members).
    len: usize,
}

/// One topic level of the trie.
#[derive(Debug, Default)]
struct Node {
    /// Children for literal levels (any string, the empty one included).
    children: HashMap<Box<str>, Node>,
    /// The child for a `+` level, kept apart so that matching never has to
    /// look for it among the literal children.
    plus: Option<Box<Node>>,
    /// Filters that end at this node.
    exact: Subscribers,
    /// Filters that end with a `#` level just below this node. `#` is always
    /// the last level, so it needs no node of its own.
    hash: Subscribers,
}

/// The subscribers of one filter.
#[derive(Debug, Default)]
struct Subscribers {
    /// Non-shared subscriptions; a session has at most one per filter
    /// (MQTT-3.8.4-3).
    direct: HashMap<SessionId, SubOptions>,
    /// Shared subscriptions by share name.
    groups: HashMap<Box<str>, SharedGroup>,
}

/// The members of one shared subscription group, in the order they joined.
#[derive(Debug)]
struct SharedGroup {
    /// The full filter, `$share/{group}/{filter}`: the label of its matches.
    filter: Arc<str>,
    /// Members and the options each was granted (MQTT-4.8.2-3: each keeps
    /// its own granted QoS).
    members: Vec<(SessionId, SubOptions)>,
    /// Index of the member to try first for the next message.
    next: usize,
}

/// Where a filter's subscribers live, as found by [`SubscriptionTrie::path`].
enum Slot {
    /// In `exact` of the node at the end of the path.
    Exact,
    /// In `hash` of the node at the end of the path.
    Hash,
}

/// One step down the trie.
#[derive(Clone, Copy)]
enum Edge<'a> {
    /// A literal level.
    Literal(&'a str),
    /// A `+` level.
    Plus,
}

impl SubscriptionTrie {
    /// An empty trie.
    pub fn new() -> Self {
        SubscriptionTrie::default()
    }

    /// Adds or replaces `session`'s subscription to `filter` (a valid filter
    /// without any `$share/` prefix) in shared group `group`, if any.
    /// Returns the options it replaced.
    pub fn insert(
        &mut self,
        filter: &str,
        group: Option<&str>,
        session: SessionId,
        options: SubOptions,
    ) -> Option<SubOptions> {
        let (edges, slot) = Self::path(filter);
        let mut node = &mut self.root;
        for edge in edges {
            node = match edge {
                Edge::Literal(level) => node.children.entry(level.into()).or_default(),
                Edge::Plus => node.plus.get_or_insert_with(Box::default),
            };
        }
        let subscribers = node.slot_mut(&slot);
        let previous = match group {
            None => subscribers.direct.insert(session, options),
            Some(name) => subscribers
                .groups
                .entry(name.into())
                .or_insert_with(|| SharedGroup::new(name, filter))
                .insert(session, options),
        };
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    /// Removes a subscription; returns its options if it existed.
    ///
    /// Nodes left with neither subscribers nor children are pruned, so the
    /// trie does not keep the shape of every filter ever used.
    pub fn remove(
        &mut self,
        filter: &str,
        group: Option<&str>,
        session: SessionId,
    ) -> Option<SubOptions> {
        let (edges, slot) = Self::path(filter);

        // First walk: take the subscription out, if the path exists.
        let mut node = &mut self.root;
        for edge in &edges {
            node = node.child_mut(*edge)?;
        }
        let subscribers = node.slot_mut(&slot);
        let removed = match group {
            None => subscribers.direct.remove(&session),
            Some(name) => {
                let members = subscribers.groups.get_mut(name)?;
                let removed = members.remove(session);
                if members.members.is_empty() {
                    subscribers.groups.remove(name);
                }
                removed
            }
        }?;
        self.len -= 1;

        // Second walk: find the highest node from which the rest of the
        // path holds nothing else, and cut the branch there.
        let mut cut = None;
        let mut node = &self.root;
        for (depth, edge) in edges.iter().enumerate() {
            let Some(child) = node.child(*edge) else {
                break;
            };
            let last = depth + 1 == edges.len();
            // Along the path a node may only keep the child that continues
            // the path; the last node may keep nothing.
            let allowed = usize::from(!last);
            if child.exact.is_empty() && child.hash.is_empty() && child.child_count() <= allowed {
                cut.get_or_insert(depth);
            } else {
                cut = None;
            }
            node = child;
        }
        // The edges down to the parent of the node to cut, and the edge to it.
        let cut = cut
            .and_then(|cut| edges.get(..=cut))
            .and_then(<[Edge<'_>]>::split_last);
        if let Some((edge, above)) = cut {
            let mut parent = &mut self.root;
            for step in above {
                match parent.child_mut(*step) {
                    Some(child) => parent = child,
                    None => return Some(removed),
                }
            }
            match edge {
                Edge::Literal(level) => drop(parent.children.remove(*level)),
                Edge::Plus => parent.plus = None,
            }
        }
        Some(removed)
    }

    /// Appends to `out` every subscription matching `topic`: all non-shared
    /// matches, and for each matching shared group exactly one member,
    /// chosen round-robin among those for which `available` is true (any
    /// member if none is).
    ///
    /// A session with several matching filters appears once per filter;
    /// merging them (MQTT 5.0 3.3.4) is the caller's business. Cost grows
    /// with the topic's depth times the number of matching branches.
    pub fn route(
        &mut self,
        topic: &str,
        available: &dyn Fn(SessionId) -> bool,
        out: &mut Vec<Match>,
    ) {
        let levels: Vec<&str> = topic.split('/').collect();
        // MQTT-4.7.2-1: filters starting with a wildcard do not match topic
        // names starting with '$' (such as `$SYS/...`).
        let dollar = topic.starts_with('$');

        let mut stack: Vec<(&mut Node, usize)> = vec![(&mut self.root, 0)];
        while let Some((node, depth)) = stack.pop() {
            // Borrow the fields apart so that both children can be pushed.
            let Node {
                children,
                plus,
                exact,
                hash,
            } = node;
            let wildcards_allowed = !(dollar && depth == 0);
            if wildcards_allowed {
                // '#' matches this level's parent and any number of levels
                // below it: `sport/#` matches `sport` too (MQTT-4.7.1-2).
                hash.route(available, out);
            }
            let Some(level) = levels.get(depth) else {
                exact.route(available, out);
                continue;
            };
            if let Some(child) = children.get_mut(*level) {
                stack.push((child, depth + 1));
            }
            if wildcards_allowed {
                if let Some(child) = plus.as_deref_mut() {
                    stack.push((child, depth + 1));
                }
            }
        }
    }

    /// A member of shared group `group` on `filter` (without the `$share/`
    /// prefix) to take a message another member will not receive: chosen
    /// as [`SubscriptionTrie::route`] chooses, in turn among those for which
    /// `available` is true. `None` when the group has no member left.
    pub fn pick_member(
        &mut self,
        filter: &str,
        group: &str,
        available: &dyn Fn(SessionId) -> bool,
    ) -> Option<(SessionId, SubOptions)> {
        let (edges, slot) = Self::path(filter);
        let mut node = &mut self.root;
        for edge in edges {
            node = node.child_mut(edge)?;
        }
        node.slot_mut(&slot).groups.get_mut(group)?.pick(available)
    }

    /// Number of subscriptions stored (shared group members included).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no subscription is stored.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Splits a filter into the edges to walk and the slot at the end.
    ///
    /// `+` is a wildcard at any level; `#` only as the last level. A `#`
    /// elsewhere makes the filter invalid, which the caller rejects before
    /// getting here; should one slip through it is kept as a literal level,
    /// which no valid topic name can match, rather than a panic.
    fn path(filter: &str) -> (Vec<Edge<'_>>, Slot) {
        let mut levels: Vec<&str> = filter.split('/').collect();
        let slot = if levels.last() == Some(&"#") {
            levels.pop();
            Slot::Hash
        } else {
            Slot::Exact
        };
        let edges = levels
            .into_iter()
            .map(|level| match level {
                "+" => Edge::Plus,
                _ => Edge::Literal(level),
            })
            .collect();
        (edges, slot)
    }
}

impl Node {
    /// The child reached through `edge`, if any.
    fn child(&self, edge: Edge<'_>) -> Option<&Node> {
        match edge {
            Edge::Literal(level) => self.children.get(level),
            Edge::Plus => self.plus.as_deref(),
        }
    }

    /// The child reached through `edge`, if any, mutably.
    fn child_mut(&mut self, edge: Edge<'_>) -> Option<&mut Node> {
        match edge {
            Edge::Literal(level) => self.children.get_mut(level),
            Edge::Plus => self.plus.as_deref_mut(),
        }
    }

    /// Number of children, the `+` one included.
    fn child_count(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some())
    }

    /// The subscribers in `slot`.
    fn slot_mut(&mut self, slot: &Slot) -> &mut Subscribers {
        match slot {
            Slot::Exact => &mut self.exact,
            Slot::Hash => &mut self.hash,
        }
    }
}

impl Drop for Node {
    /// Dismantles the subtree with a loop: the derived drop would recurse
    /// once per level, and a filter may be tens of thousands of levels deep.
    fn drop(&mut self) {
        fn detach(node: &mut Node, stack: &mut Vec<Node>) {
            stack.extend(node.children.drain().map(|(_, child)| child));
            if let Some(child) = node.plus.take() {
                stack.push(*child);
            }
        }
        let mut stack: Vec<Node> = Vec::new();
        detach(self, &mut stack);
        // Each popped node has had its children moved out, so dropping it
        // here does not recurse.
        while let Some(mut node) = stack.pop() {
            detach(&mut node, &mut stack);
        }
    }
}

impl Subscribers {
    /// Whether no subscription is left.
    fn is_empty(&self) -> bool {
        self.direct.is_empty() && self.groups.is_empty()
    }

    /// Appends every non-shared subscriber and one member of each group.
    fn route(&mut self, available: &dyn Fn(SessionId) -> bool, out: &mut Vec<Match>) {
        out.extend(self.direct.iter().map(|(session, options)| Match {
            session: *session,
            options: options.clone(),
            shared: None,
        }));
        out.extend(self.groups.values_mut().filter_map(|group| {
            let shared = Some(Arc::clone(&group.filter));
            group.pick(available).map(|(session, options)| Match {
                session,
                options,
                shared,
            })
        }));
    }
}

impl SharedGroup {
    /// A group without members yet: `name` on `filter`.
    fn new(name: &str, filter: &str) -> Self {
        SharedGroup {
            filter: format!("$share/{name}/{filter}").into(),
            members: Vec::new(),
            next: 0,
        }
    }

    /// Adds `session` at the end of the rotation, or replaces its options
    /// keeping its place. Returns the options replaced.
    fn insert(&mut self, session: SessionId, options: SubOptions) -> Option<SubOptions> {
        match self
            .members
            .iter_mut()
            .find(|(member, _)| *member == session)
        {
            Some((_, current)) => Some(std::mem::replace(current, options)),
            None => {
                self.members.push((session, options));
                None
            }
        }
    }

    /// Removes `session`, keeping the rotation's position on the member
    /// that was due next.
    fn remove(&mut self, session: SessionId) -> Option<SubOptions> {
        let index = self
            .members
            .iter()
            .position(|(member, _)| *member == session)?;
        let (_, options) = self.members.remove(index);
        if index < self.next {
            self.next -= 1;
        }
        if self.next >= self.members.len() {
            self.next = 0;
        }
        Some(options)
    }

    /// The member to receive the next message: the first available one from
    /// the cursor on, else the one at the cursor (it will get the message
    /// when it is back, rather than the message being lost).
    fn pick(&mut self, available: &dyn Fn(SessionId) -> bool) -> Option<(SessionId, SubOptions)> {
        let count = self.members.len();
        if count == 0 {
            return None;
        }
        let start = self.next % count;
        let chosen = (0..count)
            .map(|offset| (start + offset) % count)
            .find(|&index| self.members.get(index).is_some_and(|(s, _)| available(*s)))
            .unwrap_or(start);
        self.next = (chosen + 1) % count;
        self.members.get(chosen).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rumqttc::v5::mqttbytes::v5::RetainForwardRule;
    use rumqttc::v5::mqttbytes::QoS;
    use std::collections::{BTreeMap, BTreeSet};

    /// Options with `qos` and `id` as subscription identifier, so a test
    /// can tell which subscription a match came from.
    fn opts(qos: QoS, id: usize) -> SubOptions {
        SubOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainForwardRule::OnEverySubscribe,
            subscription_id: Some(id),
        }
    }

    /// Sessions that receive `topic`, sorted, with repeats.
    fn sessions(trie: &mut SubscriptionTrie, topic: &str) -> Vec<SessionId> {
        let mut out = Vec::new();
        trie.route(topic, &|_| true, &mut out);
        let mut ids: Vec<SessionId> = out.iter().map(|m| m.session).collect();
        ids.sort_unstable();
        ids
    }

    /// Whether `filter` (one subscription by session 1) matches `topic`.
    fn matches(filter: &str, topic: &str) -> bool {
        let mut trie = SubscriptionTrie::new();
        trie.insert(filter, None, 1, opts(QoS::AtMostOnce, 0));
        !sessions(&mut trie, topic).is_empty()
    }

    /// The plain matcher the trie must agree with, written straight from
    /// section 4.7 without any index.
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

    #[test]
    fn literal_levels_match_character_for_character() {
        // MQTT-4.7.3-4: no normalization; levels are compared exactly.
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "A/b"));
        assert!(!matches("a/b", "a/b/"));
        assert!(!matches("a/b", "a"));
        assert!(!matches("a/b", "a/b/c"));
        // Empty levels are levels like any other.
        assert!(matches("a//b", "a//b"));
        assert!(!matches("a//b", "a/b"));
        assert!(matches("/a", "/a"));
        assert!(!matches("/a", "a"));
    }

    #[test]
    fn plus_matches_exactly_one_level() {
        // MQTT-4.7.1-3 (3.1.1) / MQTT-4.7.1-2 (5.0): '+' occupies one whole
        // level, at any position, the empty level included.
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(matches("sport/+", "sport/"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("+", "finance"));
        assert!(matches("+/tennis/#", "sport/tennis/x"));
        assert!(matches("a/+/c", "a//c"));
    }

    #[test]
    fn hash_matches_parent_and_any_children() {
        // MQTT-4.7.1-2 (3.1.1) / MQTT-4.7.1-1 (5.0): '#' is the parent and
        // any number of child levels.
        assert!(matches("sport/#", "sport"));
        assert!(matches("sport/#", "sport/"));
        assert!(matches("sport/#", "sport/a/b"));
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon"
        ));
        assert!(!matches("sport/tennis/#", "sport"));
        assert!(!matches("sport/#", "sports"));
        assert!(matches("#", "a"));
        assert!(matches("#", "/"));
        assert!(matches("+/#", "a"));
    }

    #[test]
    fn wildcards_at_first_level_skip_dollar_topics() {
        // MQTT-4.7.2-1.
        assert!(!matches("#", "$SYS/monitor/Clients"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(!matches("+", "$SYS"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS"));
        // Only the first level counts.
        assert!(matches("a/+", "a/$x"));
        assert!(matches("a/#", "a/$x"));
        assert!(matches("#", "a$"));
    }

    #[test]
    fn insert_replaces_and_remove_is_exact() {
        let mut trie = SubscriptionTrie::new();
        assert_eq!(trie.insert("a/+", None, 1, opts(QoS::AtMostOnce, 1)), None);
        // MQTT-3.8.4-3: the same filter again replaces the subscription.
        assert_eq!(
            trie.insert("a/+", None, 1, opts(QoS::ExactlyOnce, 2)),
            Some(opts(QoS::AtMostOnce, 1))
        );
        assert_eq!(trie.len(), 1);
        trie.insert("a/b", None, 1, opts(QoS::AtLeastOnce, 3));
        trie.insert("a/+", None, 2, opts(QoS::AtLeastOnce, 4));
        assert_eq!(trie.len(), 3);
        assert_eq!(sessions(&mut trie, "a/b"), vec![1, 1, 2]);

        // MQTT-3.10.4-1: only the filter that is identical goes.
        assert_eq!(trie.remove("a/#", None, 1), None);
        assert_eq!(trie.remove("a/+", Some("g"), 1), None);
        assert_eq!(trie.remove("a/+", None, 3), None);
        assert_eq!(trie.remove("a/+", None, 1), Some(opts(QoS::ExactlyOnce, 2)));
        assert_eq!(sessions(&mut trie, "a/b"), vec![1, 2]);
        assert_eq!(sessions(&mut trie, "a/c"), vec![2]);
        assert_eq!(trie.len(), 2);
    }

    #[test]
    fn remove_prunes_empty_branches() {
        let mut trie = SubscriptionTrie::new();
        trie.insert("a/b/c/#", None, 1, opts(QoS::AtMostOnce, 1));
        trie.insert("a/+/c", Some("g"), 1, opts(QoS::AtMostOnce, 2));
        trie.insert("a", None, 2, opts(QoS::AtMostOnce, 3));
        trie.insert("#", None, 3, opts(QoS::AtMostOnce, 4));

        assert!(trie.remove("a/b/c/#", None, 1).is_some());
        let a = trie.root.children.get("a").expect("a is still used");
        assert!(a.children.is_empty(), "a/b/c pruned");
        assert!(a.plus.is_some(), "a/+/c kept");

        assert!(trie.remove("a/+/c", Some("g"), 1).is_some());
        let a = trie.root.children.get("a").expect("a is still used");
        assert!(a.plus.is_none());
        assert!(trie.remove("a", None, 2).is_some());
        assert!(trie.remove("#", None, 3).is_some());
        assert!(trie.root.children.is_empty());
        assert!(trie.root.hash.is_empty());
        assert!(trie.is_empty());
    }

    #[test]
    fn overlapping_filters_each_match() {
        // MQTT 5.0 3.3.4: overlapping subscriptions are reported one by one,
        // each with its own options, for the caller to merge.
        let mut trie = SubscriptionTrie::new();
        trie.insert("a/b", None, 1, opts(QoS::AtMostOnce, 1));
        trie.insert("a/+", None, 1, opts(QoS::AtLeastOnce, 2));
        trie.insert("#", None, 1, opts(QoS::ExactlyOnce, 3));
        let mut out = Vec::new();
        trie.route("a/b", &|_| true, &mut out);
        let mut ids: Vec<_> = out.iter().map(|m| m.options.subscription_id).collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![Some(1), Some(2), Some(3)]);
        assert!(out.iter().all(|m| m.session == 1 && m.shared.is_none()));
    }

    #[test]
    fn shared_group_delivers_to_one_member_in_turn() {
        let mut trie = SubscriptionTrie::new();
        // MQTT-4.8.2-3: each member keeps the QoS it was granted.
        trie.insert("t/+", Some("g"), 1, opts(QoS::AtMostOnce, 1));
        trie.insert("t/+", Some("g"), 2, opts(QoS::AtLeastOnce, 2));
        trie.insert("t/+", Some("g"), 3, opts(QoS::ExactlyOnce, 3));
        let mut chosen = Vec::new();
        for _ in 0..6 {
            let mut out = Vec::new();
            trie.route("t/x", &|_| true, &mut out);
            assert_eq!(out.len(), 1);
            let only = &out[0];
            assert_eq!(only.shared.as_deref(), Some("$share/g/t/+"));
            assert_eq!(only.options.subscription_id, Some(only.session as usize));
            chosen.push(only.session);
        }
        assert_eq!(chosen, vec![1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn shared_group_prefers_available_members() {
        let mut trie = SubscriptionTrie::new();
        for session in 1..=3 {
            trie.insert("t", Some("g"), session, opts(QoS::AtLeastOnce, 0));
        }
        let mut out = Vec::new();
        for _ in 0..3 {
            trie.route("t", &|s| s == 2, &mut out);
        }
        assert!(out.iter().all(|m| m.session == 2));

        // Nobody available: still one member, in turn, so the message is
        // queued rather than lost.
        out.clear();
        for _ in 0..3 {
            trie.route("t", &|_| false, &mut out);
        }
        let mut got: Vec<_> = out.iter().map(|m| m.session).collect();
        got.sort_unstable();
        assert_eq!(got, vec![1, 2, 3]);
    }

    #[test]
    fn shared_groups_and_plain_subscriptions_are_independent() {
        // A message goes once to each group and to every non-shared
        // subscriber (MQTT 5.0 4.8.2).
        let mut trie = SubscriptionTrie::new();
        trie.insert("t/#", Some("g1"), 1, opts(QoS::AtMostOnce, 0));
        trie.insert("t/#", Some("g1"), 2, opts(QoS::AtMostOnce, 0));
        trie.insert("t/#", Some("g2"), 1, opts(QoS::AtMostOnce, 0));
        trie.insert("t/+", Some("g1"), 3, opts(QoS::AtMostOnce, 0));
        trie.insert("t/#", None, 1, opts(QoS::AtMostOnce, 0));
        assert_eq!(trie.len(), 5);
        let mut out = Vec::new();
        trie.route("t/x", &|_| true, &mut out);
        assert_eq!(out.iter().filter(|m| m.shared.is_some()).count(), 3);
        assert_eq!(out.iter().filter(|m| m.shared.is_none()).count(), 1);
        // Replacing a member's options keeps one membership.
        assert!(trie
            .insert("t/#", Some("g1"), 2, opts(QoS::ExactlyOnce, 0))
            .is_some());
        assert_eq!(trie.len(), 5);
    }

    #[test]
    fn leaving_a_group_keeps_the_rotation() {
        let mut trie = SubscriptionTrie::new();
        for session in 1..=4 {
            trie.insert("t", Some("g"), session, opts(QoS::AtMostOnce, 0));
        }
        let next = |trie: &mut SubscriptionTrie| {
            let mut out = Vec::new();
            trie.route("t", &|_| true, &mut out);
            out.first().map(|m| m.session)
        };
        assert_eq!(next(&mut trie), Some(1));
        assert_eq!(next(&mut trie), Some(2));
        // Removing a member that already had its turn, then the one due.
        assert!(trie.remove("t", Some("g"), 1).is_some());
        assert_eq!(next(&mut trie), Some(3));
        assert!(trie.remove("t", Some("g"), 4).is_some());
        assert_eq!(next(&mut trie), Some(2));
        assert!(trie.remove("t", Some("g"), 2).is_some());
        assert!(trie.remove("t", Some("g"), 3).is_some());
        assert_eq!(next(&mut trie), None);
        assert!(trie.root.children.is_empty());
    }

    #[test]
    fn pick_member_takes_the_next_turn_of_the_group() {
        let mut trie = SubscriptionTrie::new();
        for session in 1..=3 {
            trie.insert(
                "t/#",
                Some("g"),
                session,
                opts(QoS::AtLeastOnce, session as usize),
            );
        }
        trie.insert("t/#", None, 9, opts(QoS::AtMostOnce, 0));
        let picked = |trie: &mut SubscriptionTrie, available: &dyn Fn(SessionId) -> bool| {
            trie.pick_member("t/#", "g", available).map(|(s, _)| s)
        };
        assert_eq!(picked(&mut trie, &|_| true), Some(1));
        // The same rotation as routing: 2 is next, and routing goes on after it.
        assert_eq!(picked(&mut trie, &|_| true), Some(2));
        let mut out = Vec::new();
        trie.route("t/x", &|_| true, &mut out);
        let member = out.iter().find(|m| m.shared.is_some()).map(|m| m.session);
        assert_eq!(member, Some(3));
        // Available members first; the options are the member's own.
        let (session, options) = trie.pick_member("t/#", "g", &|s| s == 2).expect("a member");
        assert_eq!((session, options.subscription_id), (2, Some(2)));
        assert_eq!(picked(&mut trie, &|_| true), Some(3));
        // Another group, another filter, or a group emptied: nobody.
        assert_eq!(trie.pick_member("t/#", "h", &|_| true), None);
        assert_eq!(trie.pick_member("t/+", "g", &|_| true), None);
        for session in 1..=3 {
            trie.remove("t/#", Some("g"), session);
        }
        assert_eq!(trie.pick_member("t/#", "g", &|_| true), None);
    }

    #[test]
    fn very_deep_filters_do_not_overflow_the_stack() {
        // A 65,535-byte filter can have over 30,000 levels.
        let filter = vec!["a"; 32_000].join("/");
        let mut trie = SubscriptionTrie::new();
        trie.insert(&filter, None, 1, opts(QoS::AtMostOnce, 0));
        trie.insert(&format!("{filter}/#"), None, 2, opts(QoS::AtMostOnce, 0));
        assert_eq!(sessions(&mut trie, &filter), vec![1, 2]);
        assert!(trie.remove(&filter, None, 1).is_some());
        assert_eq!(sessions(&mut trie, &filter), vec![2]);
        drop(trie);

        let mut trie = SubscriptionTrie::new();
        let plus = vec!["+"; 32_000].join("/");
        trie.insert(&plus, None, 1, opts(QoS::AtMostOnce, 0));
        assert_eq!(sessions(&mut trie, &filter), vec![1]);
        assert!(trie.remove(&plus, None, 1).is_some());
        assert!(trie.root.plus.is_none());
    }

    /// A filter over a small alphabet, so that random filters and topics
    /// often meet: levels from {a, b, "", $s, +}, maybe ending in '#'.
    fn filter_strategy() -> impl Strategy<Value = String> {
        let level = prop_oneof![Just("a"), Just("b"), Just(""), Just("$s"), Just("+")];
        (prop::collection::vec(level, 0..4), any::<bool>()).prop_map(|(mut levels, hash)| {
            if hash || levels.is_empty() {
                levels.push("#");
            }
            levels.join("/")
        })
    }

    /// A topic name over the same alphabet, without wildcards.
    fn topic_strategy() -> impl Strategy<Value = String> {
        let level = prop_oneof![Just("a"), Just("b"), Just(""), Just("$s")];
        prop::collection::vec(level, 1..5).prop_map(|levels| levels.join("/"))
    }

    proptest! {
        #[test]
        fn route_agrees_with_reference_matcher(
            subs in prop::collection::vec(
                (filter_strategy(), 0u64..4, prop::option::of(prop_oneof![Just("g1"), Just("g2")]), any::<bool>()),
                0..24,
            ),
            topics in prop::collection::vec(topic_strategy(), 1..8),
        ) {
            // Number each distinct (group, filter) so that a match's
            // subscription identifier tells where it came from.
            let mut keys: BTreeMap<(Option<&str>, &str), usize> = BTreeMap::new();
            // (group, filter) -> sessions kept
            let mut kept: BTreeMap<(Option<&str>, &str), BTreeSet<SessionId>> = BTreeMap::new();
            let mut trie = SubscriptionTrie::new();
            for (filter, session, group, _) in &subs {
                let next = keys.len();
                let id = *keys.entry((*group, filter.as_str())).or_insert(next);
                trie.insert(filter, *group, *session, opts(QoS::AtMostOnce, id));
                kept.entry((*group, filter.as_str())).or_default().insert(*session);
            }
            // Drop some again, to exercise removal and pruning.
            for (filter, session, group, drop) in &subs {
                if *drop {
                    let existed = kept
                        .get_mut(&(*group, filter.as_str()))
                        .is_some_and(|s| s.remove(session));
                    prop_assert_eq!(trie.remove(filter, *group, *session).is_some(), existed);
                }
            }
            prop_assert_eq!(trie.len(), kept.values().map(BTreeSet::len).sum::<usize>());

            for topic in &topics {
                let mut out = Vec::new();
                trie.route(topic, &|s| s % 2 == 0, &mut out);

                let mut got_plain: Vec<(SessionId, usize)> = out
                    .iter()
                    .filter(|m| m.shared.is_none())
                    .map(|m| (m.session, m.options.subscription_id.unwrap_or(usize::MAX)))
                    .collect();
                got_plain.sort_unstable();
                let mut want_plain = Vec::new();
                let mut got_shared: BTreeMap<usize, Vec<SessionId>> = BTreeMap::new();
                for m in out.iter().filter(|m| m.shared.is_some()) {
                    got_shared
                        .entry(m.options.subscription_id.unwrap_or(usize::MAX))
                        .or_default()
                        .push(m.session);
                }
                let mut want_groups = BTreeSet::new();
                for ((group, filter), members) in &kept {
                    if members.is_empty() || !reference(filter, topic) {
                        continue;
                    }
                    let id = keys[&(*group, *filter)];
                    match group {
                        None => want_plain.extend(members.iter().map(|s| (*s, id))),
                        Some(_) => {
                            want_groups.insert(id);
                            // Exactly one member, and a member of that group.
                            let chosen = got_shared.get(&id).cloned().unwrap_or_default();
                            prop_assert_eq!(chosen.len(), 1, "group {:?} {}", group, filter);
                            prop_assert!(members.contains(&chosen[0]));
                            // An available member is preferred when there is one.
                            if members.iter().any(|s| s % 2 == 0) {
                                prop_assert_eq!(chosen[0] % 2, 0);
                            }
                        }
                    }
                }
                want_plain.sort_unstable();
                prop_assert_eq!(got_plain, want_plain, "topic {:?}", topic);
                prop_assert_eq!(got_shared.keys().copied().collect::<BTreeSet<_>>(), want_groups);
            }

            // Removing everything leaves an empty root.
            for ((group, filter), members) in &kept {
                for session in members {
                    prop_assert!(trie.remove(filter, *group, *session).is_some());
                }
            }
            prop_assert!(trie.is_empty());
            prop_assert!(trie.root.children.is_empty() && trie.root.plus.is_none());
            prop_assert!(trie.root.exact.is_empty() && trie.root.hash.is_empty());
        }
    }
}
