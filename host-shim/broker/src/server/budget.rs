//! The outbound byte budget of a connection: the bytes queued for its
//! writer and not written yet, shared by the router (which adds) and the
//! writer (which subtracts).
//!
//! A client that does not read makes its queue grow: with the replies to
//! what it sends (PINGRESP, PUBACK...), and with what it is sent. Above
//! `max_outbound_bytes` the router stops reading its socket (so its own
//! requests add no more replies) and drops live QoS 0 messages for it; if it
//! is still over after `slow_client_timeout`, the connection is closed. Each
//! episode is logged (at most once every few seconds across connections)
//! and counted.

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::Packet;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

/// One connection's queued bytes, and whether it is over its budget.
#[derive(Debug, Default)]
pub(super) struct Budget {
    queued: AtomicUsize,
    /// Set by the router when the queue went over the budget; taken by the
    /// writer when it is back under half of it, which then tells the router.
    over: AtomicBool,
}

impl Budget {
    /// Bytes queued and not written yet.
    pub(super) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// The router queued `cost` more bytes; returns whether that took the
    /// queue over `limit` (the flag is set before the bytes reach the
    /// writer, so the writer cannot miss it).
    pub(super) fn charge(&self, cost: usize, limit: usize) -> bool {
        let total = self.queued.fetch_add(cost, Ordering::AcqRel) + cost;
        if total > limit && !self.over.load(Ordering::Acquire) {
            self.over.store(true, Ordering::Release);
            return true;
        }
        false
    }

    /// The writer wrote `cost` bytes; returns whether the queue just came
    /// back under half of `limit` after being over it.
    pub(super) fn written(&self, cost: usize, limit: usize) -> bool {
        let left = self.queued.fetch_sub(cost, Ordering::AcqRel) - cost;
        left <= limit / 2 && self.over.swap(false, Ordering::AcqRel)
    }
}

/// What a packet costs in the queue: about its encoded size. Packets other
/// than PUBLISH are small and counted as such.
pub(super) fn packet_cost(packet: &Packet) -> usize {
    match packet {
        Packet::Publish(p) => {
            let props = p.properties.as_ref().map_or(0, |props| {
                props
                    .user_properties
                    .iter()
                    .map(|(k, v)| 4 + k.len() + v.len())
                    .sum::<usize>()
                    + props.correlation_data.as_ref().map_or(0, Bytes::len)
                    + props.response_topic.as_ref().map_or(0, String::len)
                    + props.content_type.as_ref().map_or(0, String::len)
            });
            16 + p.topic.len() + p.payload.len() + props
        }
        _ => 16,
    }
}

/// Connections over their budget, oldest episode first, with the time each
/// episode started; the grace is the same for all, so this is also the
/// order their grace ends.
#[derive(Debug, Default)]
pub(super) struct Episodes {
    started: VecDeque<(Instant, u64)>,
}

impl Episodes {
    /// Connection `conn` went over its budget at `now`.
    pub(super) fn start(&mut self, now: Instant, conn: u64) {
        self.started.push_back((now, conn));
    }

    /// When the oldest episode started.
    pub(super) fn oldest(&self) -> Option<Instant> {
        self.started.front().map(|&(at, _)| at)
    }

    /// The oldest episode, if it started at or before `cutoff`.
    pub(super) fn pop_started_by(&mut self, cutoff: Instant) -> Option<(Instant, u64)> {
        if self.oldest()? <= cutoff {
            self.started.pop_front()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::v5::mqttbytes::v5::{PingResp, Publish};
    use rumqttc::v5::mqttbytes::QoS;

    #[test]
    fn over_once_and_back_under_half() {
        let budget = Budget::default();
        assert!(!budget.charge(60, 100));
        assert!(budget.charge(60, 100), "over");
        assert!(!budget.charge(60, 100), "already over: said once");
        assert_eq!(budget.queued(), 180);
        assert!(!budget.written(100, 100), "80 left: not under half");
        assert!(budget.written(40, 100), "40 left");
        assert!(!budget.written(40, 100), "said once");
        assert_eq!(budget.queued(), 0);
    }

    #[test]
    fn costs_follow_the_payload() {
        let small = Packet::Publish(Publish::new("t", QoS::AtMostOnce, "x", None));
        let big = Packet::Publish(Publish::new("t", QoS::AtMostOnce, vec![0; 1000], None));
        assert!(packet_cost(&big) >= 1000 && packet_cost(&small) < 32);
        assert_eq!(packet_cost(&Packet::PingResp(PingResp)), 16);
    }
}
