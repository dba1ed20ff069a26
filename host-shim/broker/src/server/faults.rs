//! The faults the router injects (`faults` in the configuration): which
//! acknowledgement is lost or held back, which CONNECT is refused, when a
//! connection has sent its last packet, when every connection is closed.
//! Each one is logged (info) and counted. The core knows nothing of them:
//! to it a fault is a connection whose transport ended.
//!
//! Random choices come from one generator seeded with `faults.seed` and
//! drawn in the order the router sends acknowledgements, so the same seed,
//! configuration and traffic give the same faults. The state lives as long
//! as the broker, across restarts.

use crate::config::FaultsConfig;
use crate::core::ConnId;
use rumqttc::v5::mqttbytes::v5::{ConnAck, ConnectReturnCode, Packet};
use std::time::Duration;
use tokio::time::Instant;
use tracing::info;

/// How many faults of each kind were injected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct FaultStats {
    /// Connections closed by `close_after_packets`.
    pub(super) closed_after_packets: u64,
    /// Connections closed by `close_every_ms`.
    pub(super) closed_every: u64,
    /// Connections closed by [`BrokerHandle::drop_connections`](super::BrokerHandle::drop_connections).
    pub(super) dropped_on_request: u64,
    /// Connections dropped by restarts.
    pub(super) dropped_by_restart: u64,
    /// Acknowledgements not sent (`drop_acks`).
    pub(super) acks_dropped: u64,
    /// Acknowledgements held back (`delay_acks_ms`).
    pub(super) acks_delayed: u64,
    /// CONNECTs refused (`refuse_connects`).
    pub(super) connects_refused: u64,
    /// Restarts, by `restart_every_ms` or on request.
    pub(super) restarts: u64,
}

/// What becomes of a packet the core sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AckFault {
    /// It goes out as usual.
    Send,
    /// It is lost, and its connection is to be cut (see
    /// [`Faults::take_cuts`]).
    Drop,
    /// It is written no earlier than this.
    Delay(Instant),
}

/// Why every connection is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DropCause {
    /// `close_every_ms`.
    Every,
    /// [`BrokerHandle::drop_connections`](super::BrokerHandle::drop_connections).
    Request,
    /// A restart.
    Restart,
}

/// The router's fault injector.
#[derive(Debug)]
pub(super) struct Faults {
    config: FaultsConfig,
    rng: fastrand::Rng,
    /// CONNECTs still to refuse.
    refuse_left: u64,
    /// When every connection is closed next (`close_every_ms`).
    next_close_all: Option<Instant>,
    /// Connections whose acknowledgement was dropped, to be closed once the
    /// actions before it are out.
    cuts: Vec<ConnId>,
    pub(super) stats: FaultStats,
}

impl Faults {
    /// The faults of `config`, none injected yet.
    pub(super) fn new(config: &FaultsConfig) -> Faults {
        Faults {
            config: config.clone(),
            rng: fastrand::Rng::with_seed(config.seed),
            refuse_left: config.refuse_connects,
            next_close_all: None,
            cuts: Vec::new(),
            stats: FaultStats::default(),
        }
    }

    /// A broker instance starts serving at `now`: `close_every_ms` counts
    /// from here.
    pub(super) fn started(&mut self, now: Instant) {
        self.next_close_all = self
            .config
            .close_every_ms
            .map(|every| now + Duration::from_millis(every));
    }

    /// What becomes of `packet`, about to be sent to `conn`: a PUBACK,
    /// PUBREC or PUBCOMP may be dropped (`drop_acks`) or delayed
    /// (`delay_acks_ms`); anything else is sent.
    pub(super) fn ack(&mut self, conn: ConnId, packet: &Packet) -> AckFault {
        let Some((kind, pkid)) = ack_id(packet) else {
            return AckFault::Send;
        };
        if self.config.drop_acks > 0.0 && self.rng.f64() < self.config.drop_acks {
            self.stats.acks_dropped += 1;
            self.cuts.push(conn);
            info!(
                conn,
                pkid, "fault: {kind} not sent (drop_acks); closing the connection after what was sent before it"
            );
            return AckFault::Drop;
        }
        if self.config.delay_acks_ms > 0 {
            self.stats.acks_delayed += 1;
            let delay = self.config.delay_acks_ms;
            info!(
                conn,
                pkid, "fault: {kind} held back {delay} ms (delay_acks_ms)"
            );
            return AckFault::Delay(Instant::now() + Duration::from_millis(delay));
        }
        AckFault::Send
    }

    /// The connections whose acknowledgement [`Faults::ack`] dropped since
    /// the last call.
    pub(super) fn take_cuts(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.cuts)
    }

    /// The CONNACK refusing the CONNECT just read from `conn`, while
    /// `refuse_connects` has refusals left.
    pub(super) fn refuse_connect(&mut self, conn: ConnId) -> Option<Packet> {
        if self.refuse_left == 0 {
            return None;
        }
        self.refuse_left -= 1;
        self.stats.connects_refused += 1;
        info!(
            conn,
            left = self.refuse_left,
            "fault: CONNECT refused with Server unavailable (refuse_connects)"
        );
        Some(Packet::ConnAck(ConnAck {
            session_present: false,
            code: ConnectReturnCode::ServerUnavailable,
            properties: None,
        }))
    }

    /// Whether a connection that has sent `packets` packets has sent its
    /// last (`close_after_packets`).
    pub(super) fn packets_used_up(&self, packets: u64) -> bool {
        self.config
            .close_after_packets
            .is_some_and(|limit| packets >= limit)
    }

    /// Logs and counts that `conn` is closed after its `packets` packets.
    pub(super) fn closed_after_packets(&mut self, conn: ConnId, packets: u64) {
        self.stats.closed_after_packets += 1;
        info!(
            conn,
            packets, "fault: connection closed without DISCONNECT (close_after_packets)"
        );
    }

    /// When every connection is closed next (`close_every_ms`).
    pub(super) fn close_all_due(&self) -> Option<std::time::Instant> {
        self.next_close_all.map(Instant::into_std)
    }

    /// Whether every connection is to be closed at `now`; if so the next
    /// time is set.
    pub(super) fn close_all_now(&mut self, now: Instant) -> bool {
        match (self.next_close_all, self.config.close_every_ms) {
            (Some(due), Some(every)) if due <= now => {
                self.next_close_all = Some(now + Duration::from_millis(every));
                true
            }
            _ => false,
        }
    }

    /// Logs and counts that `conn` is dropped with every other connection.
    pub(super) fn dropped(&mut self, conn: ConnId, cause: DropCause) {
        let (counter, why) = match cause {
            DropCause::Every => (&mut self.stats.closed_every, "close_every_ms"),
            DropCause::Request => (&mut self.stats.dropped_on_request, "drop_connections"),
            DropCause::Restart => (&mut self.stats.dropped_by_restart, "restart"),
        };
        *counter += 1;
        info!(conn, "fault: connection closed without DISCONNECT ({why})");
    }
}

/// The kind and packet identifier of a PUBACK, PUBREC or PUBCOMP.
fn ack_id(packet: &Packet) -> Option<(&'static str, u16)> {
    match packet {
        Packet::PubAck(ack) => Some(("PUBACK", ack.pkid)),
        Packet::PubRec(rec) => Some(("PUBREC", rec.pkid)),
        Packet::PubComp(comp) => Some(("PUBCOMP", comp.pkid)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::v5::mqttbytes::v5::{PubAck, PubComp, PubRec, PubRel};

    fn config(seed: u64, drop_acks: f64) -> FaultsConfig {
        FaultsConfig {
            seed,
            drop_acks,
            ..FaultsConfig::default()
        }
    }

    /// Which of 64 PUBACKs the faults drop.
    fn dropped(faults: &mut Faults) -> Vec<u16> {
        (1..=64)
            .filter(|&pkid| {
                let ack = Packet::PubAck(PubAck::new(pkid, None));
                faults.ack(1, &ack) == AckFault::Drop
            })
            .collect()
    }

    #[test]
    fn the_same_seed_drops_the_same_acknowledgements() {
        let first = dropped(&mut Faults::new(&config(7, 0.5)));
        assert_eq!(first, dropped(&mut Faults::new(&config(7, 0.5))));
        assert_ne!(first, dropped(&mut Faults::new(&config(8, 0.5))));
        assert!(!first.is_empty() && first.len() < 64, "{first:?}");

        assert!(dropped(&mut Faults::new(&config(7, 0.0))).is_empty());
        let mut all = Faults::new(&config(7, 1.0));
        assert_eq!(dropped(&mut all).len(), 64);
        assert_eq!(all.take_cuts().len(), 64);
        assert!(all.take_cuts().is_empty());
        assert_eq!(all.stats.acks_dropped, 64);
    }

    #[test]
    fn only_acknowledgements_are_dropped_or_delayed() {
        let mut faults = Faults::new(&FaultsConfig {
            drop_acks: 1.0,
            ..FaultsConfig::default()
        });
        let rel = Packet::PubRel(PubRel::new(1, None));
        assert_eq!(faults.ack(1, &rel), AckFault::Send);
        for ack in [
            Packet::PubRec(PubRec::new(1, None)),
            Packet::PubComp(PubComp::new(1, None)),
        ] {
            assert_eq!(faults.ack(1, &ack), AckFault::Drop);
        }

        let mut faults = Faults::new(&FaultsConfig {
            delay_acks_ms: 50,
            ..FaultsConfig::default()
        });
        assert_eq!(faults.ack(1, &rel), AckFault::Send);
        let before = Instant::now();
        let AckFault::Delay(due) = faults.ack(1, &Packet::PubAck(PubAck::new(1, None))) else {
            panic!("not delayed");
        };
        assert!(due >= before + Duration::from_millis(50));
        assert_eq!(faults.stats.acks_delayed, 1);
    }

    #[test]
    fn refusals_run_out_and_packets_are_counted() {
        let mut faults = Faults::new(&FaultsConfig {
            refuse_connects: 2,
            close_after_packets: Some(3),
            ..FaultsConfig::default()
        });
        assert!(faults.refuse_connect(1).is_some());
        assert!(faults.refuse_connect(2).is_some());
        assert!(faults.refuse_connect(3).is_none());
        assert_eq!(faults.stats.connects_refused, 2);
        assert!(!faults.packets_used_up(2));
        assert!(faults.packets_used_up(3));
        assert!(!Faults::new(&FaultsConfig::default()).packets_used_up(u64::MAX));
    }

    #[test]
    fn close_every_comes_round_again() {
        let mut faults = Faults::new(&FaultsConfig {
            close_every_ms: Some(100),
            ..FaultsConfig::default()
        });
        assert_eq!(faults.close_all_due(), None);
        let start = Instant::now();
        faults.started(start);
        assert!(!faults.close_all_now(start));
        let later = start + Duration::from_millis(100);
        assert!(faults.close_all_now(later));
        assert!(!faults.close_all_now(later));
        assert_eq!(
            faults.close_all_due(),
            Some((later + Duration::from_millis(100)).into_std())
        );
    }
}
