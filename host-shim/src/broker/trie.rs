//! The subscription trie. (Interface stub: being implemented.)
#![allow(dead_code, unused_variables)]

use super::types::{SessionId, SubOptions};

/// One delivery the router found for a topic: the session and the options
/// of the subscription that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// The subscriber.
    pub session: SessionId,
    /// The matching subscription's options.
    pub options: SubOptions,
    /// Whether it came from a shared subscription (`$share/...`).
    pub shared: bool,
}

/// Subscriptions indexed by topic level.
#[derive(Debug, Default)]
pub struct SubscriptionTrie {}

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
        todo!()
    }

    /// Removes a subscription; returns its options if it existed.
    pub fn remove(
        &mut self,
        filter: &str,
        group: Option<&str>,
        session: SessionId,
    ) -> Option<SubOptions> {
        todo!()
    }

    /// Appends to `out` every subscription matching `topic`: all non-shared
    /// matches, and for each matching shared group exactly one member,
    /// chosen round-robin among those for which `available` is true (any
    /// member if none is).
    pub fn route(
        &mut self,
        topic: &str,
        available: &dyn Fn(SessionId) -> bool,
        out: &mut Vec<Match>,
    ) {
        todo!()
    }

    /// Number of subscriptions stored.
    pub fn len(&self) -> usize {
        todo!()
    }
}
