//! The task that owns the rumqttc event loop.
//!
//! It polls without pause, feeds each event to the core, and on a lost
//! connection tidies up (buffered events, stale requests, fresh protocol
//! state), waits out the backoff and polls again, which reconnects. The
//! first connection is the exception: its failure ends the task and goes to
//! the caller of `connect`, because retrying a bad URL or bad credentials
//! forever helps nobody. At the end of each burst of events it asks the core
//! whether to nudge the broker for acknowledgements it holds back (see
//! `nudge`).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use connector::model::{Error, ErrorCode};
use tokio::sync::{oneshot, Notify};

use super::core::{Core, Ev, Phase};
use super::link::{Link, LinkError, Sender};

/// What the client's handle and the driver share.
pub(crate) struct Shared {
    core: Mutex<Core<Sender>>,
    /// Wakes `receive` callers: deliveries arrived, or the client closed.
    pub incoming: Notify,
    /// Wakes the driver from its backoff when the client closes.
    pub stop: Notify,
    /// Wakes operations waiting for a reconnect: the connection is up
    /// again, or the client closed.
    pub connected: Notify,
}

impl Shared {
    /// Shares `core`.
    pub(crate) fn new(core: Core<Sender>) -> Self {
        Shared {
            core: Mutex::new(core),
            incoming: Notify::new(),
            stop: Notify::new(),
            connected: Notify::new(),
        }
    }

    /// The core, locked. A panic elsewhere while it was locked does not
    /// poison the client: the core's state stays consistent per call.
    pub(crate) fn core(&self) -> MutexGuard<'_, Core<Sender>> {
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// How the driver reconnects.
pub(crate) struct Settings {
    /// The broker URL, for messages.
    pub url: String,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// First reconnect delay.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
}

/// Runs the event loop until the client closes (or the first connection
/// fails, which is reported on `first`).
pub(crate) async fn run(
    mut link: Link,
    shared: Arc<Shared>,
    settings: Settings,
    first: oneshot::Sender<Result<(), Error>>,
) {
    let mut first = Some(first);
    let mut backoff = settings.reconnect_min;
    // Deliveries became ready since receivers were last woken. They are
    // woken once rumqttc's buffered events are all in, so that a burst of
    // deliveries read at once costs one wake-up, not one per message.
    let mut wake_pending = false;
    loop {
        let result = if link.is_connected() {
            link.poll().await
        } else {
            // Dropping the poll future while it connects is safe: rumqttc
            // only keeps the network once the CONNACK is in. A send
            // deadline that passes meanwhile is kept, then the attempt
            // starts over.
            let deadline = shared.core().send_deadline();
            tokio::select! {
                result = tokio::time::timeout(settings.connect_timeout, link.poll()) => {
                    result.unwrap_or(Err(LinkError::Timeout))
                }
                () = sleep_until_opt(deadline) => {
                    shared.core().on_send_deadline(std::time::Instant::now());
                    continue;
                }
            }
        };
        match result {
            Ok(ev) => {
                if let Ev::ConnAck(info) = &ev {
                    if info.receive_max == Some(0) {
                        let error = Error::new(
                            ErrorCode::ConnectionFailed,
                            format!("{} sent Receive Maximum 0, a protocol error", settings.url),
                        );
                        tracing::error!(url = %settings.url, "broker sent Receive Maximum 0");
                        shared.core().fail_all(error.clone());
                        shared.incoming.notify_waiters();
                        if let Some(tx) = first.take() {
                            let _ = tx.send(Err(error));
                        }
                        return;
                    }
                }
                let connack = matches!(ev, Ev::ConnAck(_));
                let disconnected = matches!(ev, Ev::OutDisconnect);
                let burst_over = !link.has_buffered();
                let (wake, phase, wedged, nudge) = {
                    let mut core = shared.core();
                    let wake = core.on_event(ev);
                    let nudge = burst_over && core.take_nudge();
                    (wake, core.phase(), core.wedged(), nudge)
                };
                if nudge {
                    link.nudge();
                }
                wake_pending |= wake;
                if wake_pending && burst_over {
                    wake_pending = false;
                    shared.incoming.notify_waiters();
                }
                if phase == Phase::Closed {
                    if disconnected {
                        return;
                    }
                    if connack {
                        // Closed while reconnecting: leave politely.
                        link.force_disconnect();
                    }
                    continue;
                }
                if connack {
                    backoff = settings.reconnect_min;
                    shared.connected.notify_waiters();
                    match first.take() {
                        Some(tx) => {
                            if tx.send(Ok(())).is_err() {
                                // The caller of `connect` went away.
                                return;
                            }
                        }
                        None => tracing::info!(url = %settings.url, "reconnected"),
                    }
                }
                if wedged {
                    tracing::warn!(
                        url = %settings.url,
                        "in-flight window used up by rejected QoS 2 messages; renewing the connection"
                    );
                    link.force_disconnect();
                }
            }
            Err(e) => {
                let buffered = link.drain_buffered();
                let closed = {
                    let mut core = shared.core();
                    for ev in buffered {
                        core.on_event(ev);
                    }
                    if let Some(tx) = first.take() {
                        let _ = tx.send(Err(e.into_error(&settings.url)));
                        return;
                    }
                    let closed = core.phase() == Phase::Closed;
                    if !closed {
                        let (resends, unsent) = link.scrub(&core.awaiting_release());
                        core.on_connection_lost(std::time::Instant::now(), &resends, unsent);
                    }
                    closed
                };
                wake_pending = false;
                shared.incoming.notify_waiters();
                if closed {
                    return;
                }
                tracing::warn!(
                    url = %settings.url,
                    error = ?e,
                    retry_in = ?backoff,
                    "connection to the broker lost"
                );
                let backoff_over = tokio::time::sleep(backoff);
                tokio::pin!(backoff_over);
                loop {
                    let deadline = shared.core().send_deadline();
                    tokio::select! {
                        _ = &mut backoff_over => break,
                        _ = shared.stop.notified() => break,
                        () = sleep_until_opt(deadline) => {
                            shared.core().on_send_deadline(std::time::Instant::now());
                        }
                    }
                }
                if shared.core().phase() == Phase::Closed {
                    return;
                }
                backoff = backoff.saturating_mul(2).min(settings.reconnect_max);
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_opt(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
