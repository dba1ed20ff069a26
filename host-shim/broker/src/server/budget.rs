//! The outbound byte budget of a connection: the bytes queued for its
//! writer and not written yet, shared by the router (which adds) and the
//! writer (which subtracts).
//!
//! A client that does not read makes its queue grow: with the replies to
//! what it sends (PINGRESP, PUBACK...), and with what it is sent. Above
//! `max_outbound_bytes` the router stops reading its socket (so its own
//! requests add no more replies) and drops live QoS 0 messages for it; if it
//! is still over after `slow_client_timeout` and nothing was written to it
//! meanwhile, the connection is closed. A client that reads, however slowly,
//! is not: its grace starts again. Each episode is logged (at most once every few seconds across connections)
//! and counted.

use crate::memory::MemoryGauge;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::Packet;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

/// One connection's queued bytes, and whether it is over its budget.
#[derive(Debug, Default)]
pub(super) struct Budget {
    /// The broker's gauge, which `queued` is part of.
    gauge: MemoryGauge,
    queued: AtomicUsize,
    /// Set by the router whenever it queues past the budget; taken by the
    /// writer when the queue is back under half of it, which then tells the
    /// router. The router alone decides when an episode starts and ends.
    over: AtomicBool,
    /// Bytes written since the connection opened: a client over its budget
    /// that still reads (slowly) is not closed.
    written: AtomicU64,
}

impl Drop for Budget {
    fn drop(&mut self) {
        // What was never written is freed with the connection.
        self.gauge.sub(self.queued.load(Ordering::Acquire));
    }
}

impl Budget {
    /// An empty budget whose bytes count in `gauge` too.
    pub(super) fn new(gauge: MemoryGauge) -> Budget {
        Budget {
            gauge,
            queued: AtomicUsize::new(0),
            over: AtomicBool::new(false),
            written: AtomicU64::new(0),
        }
    }

    /// Bytes written since the connection opened.
    pub(super) fn written_total(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Bytes queued and not written yet.
    pub(super) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// The router queued `cost` more bytes; returns whether the queue is
    /// over `limit`. When it is, the writer is asked to say when it is back
    /// under half (the flag is set before the bytes reach the writer, so the
    /// writer cannot miss it).
    pub(super) fn charge(&self, cost: usize, limit: usize) -> bool {
        self.gauge.add(cost);
        let total = self.queued.fetch_add(cost, Ordering::AcqRel) + cost;
        if total > limit {
            self.over.store(true, Ordering::Release);
            return true;
        }
        false
    }

    /// The writer wrote `cost` bytes; returns whether the queue just came
    /// back under half of `limit` after being over it.
    pub(super) fn written(&self, cost: usize, limit: usize) -> bool {
        self.written.fetch_add(cost as u64, Ordering::AcqRel);
        self.gauge.sub(cost);
        let left = self.queued.fetch_sub(cost, Ordering::AcqRel) - cost;
        left <= limit / 2 && self.over.swap(false, Ordering::AcqRel)
    }
}

/// What a packet costs in the queue: the memory it holds there, its
/// place in the queue included (a small packet is mostly that), so the
/// budget bounds memory rather than bytes on the wire.
pub(super) fn packet_cost(packet: &Packet) -> usize {
    std::mem::size_of::<Packet>() + heap_bytes(packet)
}

/// The bytes a packet holds outside its place in the queue: a PUBLISH's
/// topic, payload and properties.
fn heap_bytes(packet: &Packet) -> usize {
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
            p.topic.len() + p.payload.len() + props
        }
        _ => 0,
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
    fn over_and_back_under_half_once() {
        let budget = Budget::default();
        assert!(!budget.charge(60, 100));
        assert!(budget.charge(60, 100), "over");
        assert!(budget.charge(60, 100), "still over");
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
        assert_eq!(packet_cost(&big) - packet_cost(&small), 999);
        assert_eq!(
            packet_cost(&Packet::PingResp(PingResp)),
            std::mem::size_of::<Packet>()
        );
    }
}
