//! Retained message management, for the management API: list, get, delete
//! and count. Every call takes the current time, like the inputs, so expiry
//! is judged the same way.

use super::Broker;
use crate::retained::{RetainedEntry, RetainedPage};
use mqtt_topic::TopicFilter;
use std::time::Instant;

/// A listing's topic filter is not a valid filter, or is a shared
/// subscription's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid topic filter {0:?}")]
pub struct InvalidFilter(pub String);

impl Broker {
    /// Number of retained messages stored and not expired at `now`.
    pub fn retained_count(&self, now: Instant) -> usize {
        self.retained.len() - self.retained.expired_count(now)
    }

    /// A page of the retained messages whose topic matches `filter` (`#` for
    /// all), in topic order, unexpired at `now`: at most `page_size` (at
    /// least 1), starting after the topic `cursor` (the previous page's
    /// `next_cursor`).
    ///
    /// # Errors
    ///
    /// When `filter` is not a valid topic filter, or is a shared one.
    pub fn retained_list(
        &self,
        now: Instant,
        filter: &str,
        page_size: usize,
        cursor: Option<&str>,
    ) -> Result<RetainedPage, InvalidFilter> {
        let parsed = filter
            .parse::<TopicFilter>()
            .ok()
            .filter(|parsed| parsed.shared().is_none())
            .ok_or_else(|| InvalidFilter(filter.to_owned()))?;
        let page_size = page_size.max(1);
        let mut found = Vec::new();
        // One more than a page tells whether another page follows.
        self.retained.walk(
            parsed.as_str(),
            cursor,
            now,
            page_size.saturating_add(1),
            &mut |_| true,
            &mut found,
        );
        let more = found.len() > page_size;
        found.truncate(page_size);
        let entries: Vec<_> = found.iter().map(|m| m.info(now)).collect();
        let next_cursor = if more {
            entries.last().map(|e| e.topic.clone())
        } else {
            None
        };
        Ok(RetainedPage {
            entries,
            next_cursor,
        })
    }

    /// The retained message of `topic` with its payload, unless there is
    /// none or it expired at `now`.
    pub fn retained_get(&self, now: Instant, topic: &str) -> Option<RetainedEntry> {
        let message = self.retained.get(topic, now)?;
        Some(RetainedEntry {
            info: message.info(now),
            payload: message.publish.payload.clone(),
        })
    }

    /// Deletes the retained message of `topic`; true if there was one. With
    /// disk storage the deletion is a pending write, for
    /// [`Broker::poll_retained_writes`]. Subscriptions whose delivery has
    /// not reached the topic yet will not get it.
    pub fn retained_delete(&mut self, topic: &str) -> bool {
        self.retained.remove(topic)
    }
}
