//! The memory the broker holds for messages on their way: what session
//! queues hold and what connections have queued for their sockets, in one
//! shared gauge, against `memory_limit`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Bytes held by queued messages across the broker; shared by the core
/// (session queues) and the connection tasks (outbound queues).
#[derive(Debug, Clone, Default)]
pub(crate) struct MemoryGauge(Arc<AtomicUsize>);

impl MemoryGauge {
    /// `bytes` more are held.
    pub(crate) fn add(&self, bytes: usize) {
        self.0.fetch_add(bytes, Ordering::AcqRel);
    }

    /// `bytes` fewer are held.
    pub(crate) fn sub(&self, bytes: usize) {
        self.0.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes held now.
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_count() {
        let gauge = MemoryGauge::default();
        let other = gauge.clone();
        gauge.add(10);
        other.sub(3);
        assert_eq!(gauge.get(), 7);
    }
}
