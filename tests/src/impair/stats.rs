//! Counters the shaper keeps per direction, and the snapshot [`ShaperStats`] a handle or the
//! `duet-impair` binary reports. Every packet that enters a direction is accounted for:
//! `received + duplicated = forwarded + dropped.total() + queued_packets`.

use serde::Serialize;

/// Why a packet was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Inside a blackout window, on the way in or when it was due out.
    Blackout,
    /// Independent random loss.
    Loss,
    /// Gilbert–Elliott bursty loss.
    BurstLoss,
    /// The rate limiter's queue (or the shaper's own bound on queued packets) was full.
    QueueFull,
}

/// Packets dropped, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DropCounts {
    pub blackout: u64,
    pub loss: u64,
    pub burst_loss: u64,
    pub queue_full: u64,
    /// No flow to send on: the client's flow expired while the packet waited, or the flow
    /// table was full when a new client appeared.
    pub no_flow: u64,
    /// The operating system refused the send.
    pub send_error: u64,
}

impl DropCounts {
    pub fn total(&self) -> u64 {
        self.blackout
            + self.loss
            + self.burst_loss
            + self.queue_full
            + self.no_flow
            + self.send_error
    }

    pub(crate) fn count(&mut self, reason: DropReason) {
        match reason {
            DropReason::Blackout => self.blackout += 1,
            DropReason::Loss => self.loss += 1,
            DropReason::BurstLoss => self.burst_loss += 1,
            DropReason::QueueFull => self.queue_full += 1,
        }
    }
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DirectionStats {
    pub received_packets: u64,
    pub received_bytes: u64,
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
    pub dropped: DropCounts,
    /// Extra copies made by duplication (each is then forwarded or dropped on its own).
    pub duplicated: u64,
    /// Packets held back by the reordering impairment.
    pub held_back: u64,
    /// Packets waiting in the rate limiter or the delay line right now.
    pub queued_packets: u64,
    pub queued_bytes: u64,
}

/// A snapshot of the whole shaper.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ShaperStats {
    /// Time since the shaper started, in milliseconds.
    pub elapsed_ms: u64,
    /// Client → upstream.
    pub up: DirectionStats,
    /// Upstream → client.
    pub down: DirectionStats,
    /// Client flows currently open.
    pub flows: u64,
    /// Rebindings performed (each moves every flow to a new source port).
    pub rebinds: u64,
    /// Handovers completed.
    pub handovers: u64,
    /// Rebindings that moved to a new local address ([`AddressChange::Ip`](super::AddressChange)).
    pub address_changes: u64,
    /// The local address flows are bound to now: the address the upstream sees.
    pub source_ip: Option<std::net::IpAddr>,
}
