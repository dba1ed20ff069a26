//! The outcomes of one publish batch, collected with one wake-up.
//!
//! Each message of a batch gets an [`Entry`], which the core resolves when
//! the message's flow ends (PUBACK, PUBCOMP, write for QoS 0, or failure).
//! The outcomes go into slots shared with the caller's [`Batch`], and only
//! the entry that resolves last wakes the caller, so a batch of a thousand
//! messages costs the caller's task one wake-up instead of one per message.
//!
//! An entry dropped without an outcome resolves as a lost connection: the
//! core gave up on the message, and whether the broker got it is unknown.

use std::sync::{Arc, Mutex, MutexGuard};

use connector::model::Error;
use tokio::sync::oneshot;

use super::core::connection_lost;

/// One message's outcome.
pub(crate) type Outcome = Result<(), Error>;

struct State {
    outcomes: Vec<Option<Outcome>>,
    /// Entries not yet resolved.
    remaining: usize,
    /// Taken and fired by the entry that resolves last.
    done: Option<oneshot::Sender<()>>,
}

struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every update is a single store; a panic elsewhere leaves it whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn resolve(&self, index: usize, outcome: Outcome) {
        let done = {
            let mut state = self.state();
            let slot = &mut state.outcomes[index];
            if slot.is_some() {
                return;
            }
            *slot = Some(outcome);
            state.remaining -= 1;
            if state.remaining > 0 {
                return;
            }
            state.done.take()
        };
        if let Some(done) = done {
            // A caller that stopped waiting is no error.
            let _ = done.send(());
        }
    }
}

/// The caller's side of a publish batch.
pub(crate) struct Batch {
    shared: Arc<Shared>,
    done: oneshot::Receiver<()>,
}

impl Batch {
    /// A batch of `len` messages, with one entry each.
    pub(crate) fn new(len: usize) -> (Batch, Vec<Entry>) {
        let (tx, rx) = oneshot::channel();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                outcomes: (0..len).map(|_| None).collect(),
                remaining: len,
                done: Some(tx),
            }),
        });
        let entries = (0..len)
            .map(|index| Entry {
                shared: Some(Arc::clone(&shared)),
                index,
            })
            .collect();
        (Batch { shared, done: rx }, entries)
    }

    /// Waits until every entry is resolved and returns the outcomes, in the
    /// order of the entries.
    pub(crate) async fn outcomes(self) -> Vec<Outcome> {
        let pending = self.shared.state().remaining > 0;
        if pending {
            // The sender lives in `shared`, which this batch keeps alive, so
            // the only way this ends is the last entry resolving.
            let _ = self.done.await;
        }
        let outcomes = std::mem::take(&mut self.shared.state().outcomes);
        outcomes
            .into_iter()
            .map(|outcome| outcome.unwrap_or_else(|| Err(connection_lost())))
            .collect()
    }

    /// The outcome of entry `index`, if it is resolved.
    #[cfg(test)]
    pub(crate) fn peek(&self, index: usize) -> Option<Outcome> {
        self.shared.state().outcomes[index].clone()
    }
}

/// Where one message of a batch reports its outcome.
pub(crate) struct Entry {
    /// `None` once resolved.
    shared: Option<Arc<Shared>>,
    index: usize,
}

impl Entry {
    /// Reports the message's outcome; the caller wakes when it is the last
    /// of its batch.
    pub(crate) fn resolve(mut self, outcome: Outcome) {
        if let Some(shared) = self.shared.take() {
            shared.resolve(self.index, outcome);
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.resolve(self.index, Err(connection_lost()));
        }
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry").field("index", &self.index).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connector::model::ErrorCode;

    #[tokio::test]
    async fn resolves_in_entry_order_whatever_the_resolution_order() {
        let (batch, mut entries) = Batch::new(3);
        let last = entries.pop().unwrap();
        let middle = entries.pop().unwrap();
        let first = entries.pop().unwrap();
        last.resolve(Ok(()));
        first.resolve(Err(Error::new(ErrorCode::BrokerRejected, "no")));
        assert!(batch.peek(1).is_none());
        drop(middle);
        let outcomes = batch.outcomes().await;
        assert_eq!(
            outcomes[0].as_ref().unwrap_err().code,
            ErrorCode::BrokerRejected
        );
        assert_eq!(
            outcomes[1].as_ref().unwrap_err().code,
            ErrorCode::ConnectionFailed
        );
        assert_eq!(outcomes[2], Ok(()));
    }

    #[tokio::test]
    async fn an_empty_batch_is_done_at_once() {
        let (batch, entries) = Batch::new(0);
        assert!(entries.is_empty());
        assert!(batch.outcomes().await.is_empty());
    }

    #[tokio::test]
    async fn wakes_a_waiting_caller_once_the_last_entry_resolves() {
        let (batch, entries) = Batch::new(2);
        let waiter = tokio::spawn(batch.outcomes());
        let mut entries = entries.into_iter();
        entries.next().unwrap().resolve(Ok(()));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        entries.next().unwrap().resolve(Ok(()));
        assert_eq!(waiter.await.unwrap(), vec![Ok(()), Ok(())]);
    }
}
