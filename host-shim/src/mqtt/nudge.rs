//! When to nudge the broker with a PINGREQ so that the last
//! acknowledgements of a batch are not held back by TCP timing.
//!
//! A broker that leaves Nagle's algorithm on (Mosquitto's default
//! `set_tcp_nodelay false`) holds a small packet, such as a PUBACK, while
//! earlier data it sent is not yet acknowledged by TCP. While a batch
//! streams, every PUBLISH the client writes carries that TCP ACK. At the end
//! of a batch the client has nothing more to write, so its kernel delays
//! the ACK (about 40 ms on Linux) and the batch's last PUBACKs or PUBCOMPs
//! wait for it, batch after batch. A PINGREQ written when acknowledgements
//! come in and more are awaited carries the ACK at once; it is the one MQTT
//! packet a client may send at any time with no effect on its session.
//!
//! rumqttc sends its own keep-alive PINGREQs and drops the connection if
//! one finds an earlier PINGREQ unanswered. A nudge therefore goes out only
//! when no PINGREQ is awaited and the next keep-alive ping is not due within
//! [`KEEP_ALIVE_MARGIN`], and once it is written the link tells rumqttc's
//! state that no answer is awaited (the broker's PINGRESP is harmless
//! either way). rumqttc re-arms its keep-alive timer at the CONNACK and at
//! each of its own pings, which is how [`Nudger`] knows when the next one
//! is due.

use std::time::{Duration, Instant};

/// No nudge this close to rumqttc's next keep-alive ping, so the two never
/// meet in its request queue.
pub(crate) const KEEP_ALIVE_MARGIN: Duration = Duration::from_millis(100);

/// Tracks the keep-alive schedule and the nudges of one link; no I/O, the
/// time is passed in.
#[derive(Debug)]
pub(crate) struct Nudger {
    keep_alive: Duration,
    /// When rumqttc's next keep-alive ping is due, while connected.
    next_keep_alive: Option<Instant>,
    /// Nudges queued for rumqttc and not yet written.
    queued: u32,
}

impl Nudger {
    /// A nudger for a link with this keep-alive (zero: rumqttc never pings).
    pub(crate) fn new(keep_alive: Duration) -> Self {
        Nudger {
            keep_alive,
            next_keep_alive: None,
            queued: 0,
        }
    }

    /// The CONNACK came: rumqttc's keep-alive timer starts now.
    pub(crate) fn on_connack(&mut self, now: Instant) {
        self.queued = 0;
        self.next_keep_alive = Some(now + self.keep_alive);
    }

    /// The connection is gone, and with it whatever was queued.
    pub(crate) fn on_connection_lost(&mut self) {
        self.queued = 0;
        self.next_keep_alive = None;
    }

    /// Whether a nudge may be queued now; `ping_awaited` is rumqttc's own
    /// record of an unanswered PINGREQ.
    pub(crate) fn may_nudge(&self, now: Instant, ping_awaited: bool) -> bool {
        let Some(next) = self.next_keep_alive else {
            return false;
        };
        if ping_awaited || self.queued > 0 {
            return false;
        }
        self.keep_alive.is_zero() || now + KEEP_ALIVE_MARGIN < next
    }

    /// A nudge was queued.
    pub(crate) fn queued(&mut self) {
        self.queued += 1;
    }

    /// A PINGREQ was written. Returns whether it was a nudge (and so no
    /// answer should be awaited); otherwise it was rumqttc's keep-alive ping,
    /// and the next one is due a keep-alive from now.
    pub(crate) fn on_ping_written(&mut self, now: Instant) -> bool {
        if self.queued > 0 {
            self.queued -= 1;
            return true;
        }
        if self.next_keep_alive.is_some() {
            self.next_keep_alive = Some(now + self.keep_alive);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_nudge_before_the_connack_or_after_a_loss() {
        let now = Instant::now();
        let mut n = Nudger::new(Duration::from_secs(60));
        assert!(!n.may_nudge(now, false));
        n.on_connack(now);
        assert!(n.may_nudge(now, false));
        n.on_connection_lost();
        assert!(!n.may_nudge(now, false));
    }

    #[test]
    fn one_nudge_at_a_time_and_never_while_a_ping_is_awaited() {
        let now = Instant::now();
        let mut n = Nudger::new(Duration::from_secs(60));
        n.on_connack(now);
        assert!(!n.may_nudge(now, true));
        n.queued();
        assert!(!n.may_nudge(now, false));
        assert!(n.on_ping_written(now), "the queued nudge");
        assert!(n.may_nudge(now, false));
    }

    #[test]
    fn no_nudge_just_before_a_keep_alive_ping() {
        let start = Instant::now();
        let keep_alive = Duration::from_secs(5);
        let mut n = Nudger::new(keep_alive);
        n.on_connack(start);
        let due = start + keep_alive;
        assert!(n.may_nudge(due - KEEP_ALIVE_MARGIN * 2, false));
        assert!(!n.may_nudge(due - KEEP_ALIVE_MARGIN / 2, false));
        // The keep-alive ping goes out: the next one is a keep-alive later.
        assert!(!n.on_ping_written(due));
        assert!(n.may_nudge(due + Duration::from_millis(1), false));
        assert!(!n.may_nudge(due + keep_alive, false));
    }

    #[test]
    fn without_keep_alive_only_the_awaited_ping_matters() {
        let now = Instant::now();
        let mut n = Nudger::new(Duration::ZERO);
        n.on_connack(now);
        assert!(n.may_nudge(now + Duration::from_secs(3600), false));
        assert!(!n.may_nudge(now, true));
    }
}
