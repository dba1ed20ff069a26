//! Restarts: the supervisor task runs one instance of the broker at a time
//! on the same listening sockets. When asked ([`BrokerHandle::restart`]) or
//! every `faults.restart_every_ms`, it stops the running instance, which
//! drops every connection without DISCONNECT and hands back what outlives
//! it, and starts the next through start-up's own path
//! ([`Base::launch`]), so the state is rebuilt from what storage keeps. At
//! shutdown it stops the running instance and ends.
//!
//! [`BrokerHandle::restart`]: super::BrokerHandle::restart

use super::accept::Listeners;
use super::faults::Faults;
use super::handle::{AdminRequest, RestartError};
use super::start::Base;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};
use tracing::{error, info};

/// What the tasks of an instance watch: a change ends the instance. The
/// sender dropped is the shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Serving.
    Running,
    /// Stopping for a restart: connections are dropped as in a crash.
    Restarting,
}

/// What passes from one instance of the broker to the next: a stopped
/// router hands it back (start-up makes the first).
pub(super) struct Handback {
    /// The management requests, which [`BrokerAdmin`](super::BrokerAdmin)s
    /// keep sending across restarts.
    pub(super) admin: mpsc::Receiver<AdminRequest>,
    /// The fault injector, whose random sequence and counters go on.
    pub(super) faults: Faults,
    /// The number of the next assigned client identifier: clients keep
    /// theirs across a restart.
    pub(super) next_assigned_id: u64,
}

/// A running instance of the broker.
pub(super) struct Instance {
    /// Dropped at shutdown; set to [`Phase::Restarting`] for a restart.
    pub(super) phase: watch::Sender<Phase>,
    /// What the router hands back once stopped.
    pub(super) handback: oneshot::Receiver<Handback>,
    /// The accept loop, which returns the listening sockets.
    pub(super) accept: JoinHandle<Listeners>,
}

/// A restart asked for by the handle, with the channel for its outcome.
pub(super) type RestartRequest = oneshot::Sender<Result<(), RestartError>>;

/// Most restart requests waiting; a caller beyond this waits its turn.
pub(super) const RESTART_CAPACITY: usize = 4;

/// The supervisor task's state.
pub(super) struct Supervisor {
    pub(super) base: Base,
    pub(super) instance: Instance,
    /// The handle's shutdown signal: its sender dropped.
    pub(super) shutdown: watch::Receiver<()>,
    pub(super) requests: mpsc::Receiver<RestartRequest>,
}

impl Supervisor {
    /// Restarts the instance on request and on `faults.restart_every_ms`,
    /// until shutdown or a restart that fails; then stops it.
    pub(super) async fn run(mut self) {
        let every = self
            .base
            .config
            .faults
            .restart_every_ms
            .map(Duration::from_millis);
        loop {
            let due = every.map(|every| Instant::now() + every);
            let request = tokio::select! {
                biased;
                _ = self.shutdown.changed() => break,
                request = self.requests.recv() => match request {
                    Some(reply) => Some(reply),
                    // The handle is gone: that is the shutdown.
                    None => break,
                },
                () = sleep_opt(due) => None,
            };
            let why = if request.is_some() {
                "requested"
            } else {
                "restart_every_ms"
            };
            let outcome = self.restart(why).await;
            let failed = outcome.is_err();
            match (request, outcome) {
                (Some(reply), outcome) => {
                    let _ = reply.send(outcome);
                }
                (None, Err(e)) => error!("{}; the broker is down", chain(&e)),
                (None, Ok(())) => {}
            }
            if failed {
                // Nothing is listening any more: the broker is down.
                return;
            }
        }
        // Dropping the instance's phase sender stops it, as a shutdown.
    }

    /// Stops the running instance and starts the next on its listening
    /// sockets.
    ///
    /// # Errors
    ///
    /// [`RestartError::Closed`] when the instance had already ended on its
    /// own, [`RestartError::Start`] when the next cannot start.
    async fn restart(&mut self, why: &str) -> Result<(), RestartError> {
        info!("fault: restarting the broker ({why}); every connection is dropped");
        self.instance.phase.send_replace(Phase::Restarting);
        let mut handback = (&mut self.instance.handback)
            .await
            .map_err(|_| RestartError::Closed)?;
        let listeners = (&mut self.instance.accept)
            .await
            .map_err(|_| RestartError::Closed)?;
        handback.faults.stats.restarts += 1;
        let restarts = handback.faults.stats.restarts;
        self.instance = self
            .base
            .launch(listeners, handback)
            .map_err(RestartError::Start)?;
        info!(restarts, "fault: the broker restarted ({why})");
        Ok(())
    }
}

/// `error` and its sources, each after a colon.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Sleeps until `due`, or forever without one.
async fn sleep_opt(due: Option<Instant>) {
    match due {
        Some(due) => sleep_until(due).await,
        None => std::future::pending().await,
    }
}
