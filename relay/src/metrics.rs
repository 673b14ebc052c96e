//! Counters the relay keeps about itself, served as JSON at `/status` and in Prometheus'
//! text format at `/metrics`. Plain relaxed atomics: the forwarding path adds to them
//! without taking any lock.

use duet_proto::ErrorCode;
use serde::Serialize;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Why a datagram was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Its sender has no partner right now.
    NoPartner,
    /// Its match id is not its sender's current pairing (a frame from the last partner).
    StaleMatch,
    /// The header does not decode or its fields are inconsistent.
    Malformed,
    /// Over the protocol's datagram size.
    TooLarge,
    /// Over the session's media bitrate.
    RateLimited,
    /// The partner's connection would not take it (closed, or datagram too big for it).
    SendFailed,
    /// Sent before `Hello`.
    BeforeHello,
    /// The partner is away (its connection was lost; the pairing is held for a resume).
    PartnerAway,
    /// The partner is on the WebSocket fallback and its socket is backed up: dropped by
    /// the relay's short queue toward it (video until the next keyframe).
    SlowReceiver,
}

/// A Prometheus histogram with fixed bucket bounds in seconds: plain atomics, so the
/// places that record (session tasks) take no lock.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, plus the overflow (`+Inf`).
    counts: Vec<AtomicU64>,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn record(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Relaxed);
        }
        self.sum_us
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds.to_vec(),
            counts: self.counts.iter().map(|c| c.load(Relaxed)).collect(),
            sum_s: self.sum_us.load(Relaxed) as f64 / 1e6,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HistogramSnapshot {
    pub bounds: Vec<f64>,
    /// Per bucket (not cumulative), the last one past every bound.
    pub counts: Vec<u64>,
    pub sum_s: f64,
}

impl HistogramSnapshot {
    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP duet_{name} {help}");
        let _ = writeln!(out, "# TYPE duet_{name} histogram");
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c;
            match self.bounds.get(i) {
                Some(b) => {
                    let _ = writeln!(out, "duet_{name}_bucket{{le=\"{b}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "duet_{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let _ = writeln!(out, "duet_{name}_sum {}", self.sum_s);
        let _ = writeln!(out, "duet_{name}_count {cumulative}");
    }
}

/// Bounds for waits people notice (time to match, handshakes): 10 ms to 2 minutes.
const WAIT_BOUNDS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Bounds for call lengths: a second (an instant Next) to an hour.
const CALL_BOUNDS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];
/// Bounds for round-trip times: 1 ms to 1 s.
const RTT_BOUNDS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0];

#[derive(Debug)]
pub struct Histograms {
    pub time_to_match: Histogram,
    pub call_length: Histogram,
    pub handshake_time: Histogram,
    pub rtt: Histogram,
}

impl Default for Histograms {
    fn default() -> Self {
        Self {
            time_to_match: Histogram::new(WAIT_BOUNDS),
            call_length: Histogram::new(CALL_BOUNDS),
            handshake_time: Histogram::new(WAIT_BOUNDS),
            rtt: Histogram::new(RTT_BOUNDS),
        }
    }
}

/// The relay's state that outlives a session or is swept by time, by map: what a relay
/// with nobody connected still holds (the soak reads these to tell the relay's state from
/// the allocator's).
#[derive(Debug, Clone, Copy)]
pub enum Held {
    /// Sessions the matching engine knows.
    MatchMembers = 0,
    /// Skip and report memory entries across those sessions.
    AvoidEntries,
    /// Reputation: pairs kept apart, reported people, people cooling off.
    Reputation,
    /// Resume tokens issued and not yet used or forgotten.
    ResumeTokens,
    /// Handshake-rate buckets (one per address prefix seen recently).
    RateBuckets,
}

const HELD_NAMES: [&str; 5] = [
    "match_members",
    "avoid_entries",
    "reputation",
    "resume_tokens",
    "rate_buckets",
];

#[derive(Debug, Default)]
pub struct Metrics {
    /// Time from joining the queue (or the last pairing's end) to a pairing; call
    /// lengths; QUIC + WebTransport + Hello time; each session's RTT at every stats tick.
    pub hist: Histograms,
    pub sessions_opened: AtomicU64,
    pub sessions: AtomicU64,
    /// Connections between their first packet and `Hello` now.
    pub handshakes: AtomicU64,
    pub sessions_refused: AtomicU64,
    pub waiting: AtomicU64,
    pub pairs: AtomicU64,
    pub matches_made: AtomicU64,
    pub nexts: AtomicU64,
    pub reports: AtomicU64,
    pub datagrams_received: AtomicU64,
    /// Datagrams sent to clients, from quinn's own count of DATAGRAM frames sent on each
    /// connection (the relay sends no datagram of its own, so each is a forwarded one).
    /// Added at each stats interval and when a connection ends.
    pub datagrams_forwarded: AtomicU64,
    /// Datagrams handed to quinn for a partner's connection (some may still be dropped by
    /// quinn's send buffer, which drops the oldest when a receiver is slow).
    pub datagrams_queued: AtomicU64,
    /// What quinn's datagram buffers dropped, learned by comparing its counts with ours
    /// when a connection ends: queued toward a client but never sent (a slow receiver),
    /// and received but never read (the relay fell behind).
    pub send_buffer_drops: AtomicU64,
    pub receive_buffer_drops: AtomicU64,
    /// Sessions the engine dropped because their event queue was full.
    pub evictions: AtomicU64,
    /// Cooling-offs started (someone reported by several people).
    pub cooling_offs: AtomicU64,
    /// Sessions taken over with a resume token.
    pub resumes: AtomicU64,
    /// How sessions ended: the client left, it was lost past the grace, or the relay
    /// closed it with an error (by code in `errors`).
    pub ended_left: AtomicU64,
    pub ended_disconnected: AtomicU64,
    pub ended_error: AtomicU64,
    pub bytes_forwarded: AtomicU64,
    pub chat_lines_forwarded: AtomicU64,
    /// Chat lines toward a client lost because its chat queue was full (it withholds
    /// stream credit or reads slower than its partner writes), or because its session's
    /// event queue was full or its connection gone.
    pub chat_lines_dropped: AtomicU64,
    /// Gauges: chat writer tasks alive now (at most one per session), and lines waiting
    /// in their queues (at most `CHAT_OUTBOX` per writer).
    pub chat_writers: AtomicU64,
    pub chat_lines_queued: AtomicU64,
    pub certificate_rotations: AtomicU64,
    /// Real certificates reloaded from their PEM files.
    pub certificate_reloads: AtomicU64,
    /// Connection attempts answered with a QUIC Retry (address validation under load).
    pub retries_sent: AtomicU64,
    /// Connection attempts refused before any handshake (blocked, handshake cap or rate).
    pub connections_refused: AtomicU64,
    drops: [AtomicU64; DROP_NAMES.len()],
    errors: [AtomicU64; ErrorCode::ALL.len()],
    held: [AtomicU64; HELD_NAMES.len()],
}

const DROP_NAMES: [&str; 9] = [
    "no_partner",
    "stale_match",
    "malformed",
    "too_large",
    "rate_limited",
    "send_failed",
    "before_hello",
    "partner_away",
    "slow_receiver",
];

impl Metrics {
    pub fn dropped(&self, why: Drop) {
        self.drops[why as usize].fetch_add(1, Relaxed);
    }

    /// Sets the size of one of the relay's maps (see [`Held`]).
    pub fn held(&self, map: Held, entries: usize) {
        self.held[map as usize].store(entries as u64, Relaxed);
    }

    pub fn error_sent(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[i].fetch_add(1, Relaxed);
        }
    }

    pub fn datagrams_dropped(&self) -> u64 {
        self.drops.iter().map(|d| d.load(Relaxed)).sum()
    }

    pub fn snapshot(&self, started: Instant, limits: StatusLimits) -> Status {
        let drops = DROP_NAMES
            .iter()
            .zip(&self.drops)
            .map(|(n, v)| ((*n).to_string(), v.load(Relaxed)))
            .collect();
        let errors = ErrorCode::ALL
            .iter()
            .zip(&self.errors)
            .map(|(c, v)| (c.name().to_string(), v.load(Relaxed)))
            .collect();
        let held = HELD_NAMES
            .iter()
            .zip(&self.held)
            .map(|(n, v)| ((*n).to_string(), v.load(Relaxed)))
            .collect();
        Status {
            sessions: self.sessions.load(Relaxed),
            handshakes: self.handshakes.load(Relaxed),
            waiting: self.waiting.load(Relaxed),
            pairs: self.pairs.load(Relaxed),
            sessions_opened: self.sessions_opened.load(Relaxed),
            sessions_refused: self.sessions_refused.load(Relaxed),
            matches_made: self.matches_made.load(Relaxed),
            nexts: self.nexts.load(Relaxed),
            reports: self.reports.load(Relaxed),
            datagrams_received: self.datagrams_received.load(Relaxed),
            datagrams_forwarded: self.datagrams_forwarded.load(Relaxed),
            datagrams_queued: self.datagrams_queued.load(Relaxed),
            send_buffer_drops: self.send_buffer_drops.load(Relaxed),
            receive_buffer_drops: self.receive_buffer_drops.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
            resumes: self.resumes.load(Relaxed),
            cooling_offs: self.cooling_offs.load(Relaxed),
            ended_left: self.ended_left.load(Relaxed),
            ended_disconnected: self.ended_disconnected.load(Relaxed),
            ended_error: self.ended_error.load(Relaxed),
            bytes_forwarded: self.bytes_forwarded.load(Relaxed),
            datagrams_dropped: self.datagrams_dropped(),
            drops,
            chat_lines_forwarded: self.chat_lines_forwarded.load(Relaxed),
            chat_lines_dropped: self.chat_lines_dropped.load(Relaxed),
            chat_writers: self.chat_writers.load(Relaxed),
            chat_lines_queued: self.chat_lines_queued.load(Relaxed),
            held,
            errors_sent: errors,
            certificate_rotations: self.certificate_rotations.load(Relaxed),
            certificate_reloads: self.certificate_reloads.load(Relaxed),
            retries_sent: self.retries_sent.load(Relaxed),
            connections_refused: self.connections_refused.load(Relaxed),
            uptime_s: started.elapsed().as_secs(),
            heap_live_bytes: crate::memory::heap_live_bytes(),
            limits,
            time_to_match: self.hist.time_to_match.snapshot(),
            call_length: self.hist.call_length.snapshot(),
            handshake_time: self.hist.handshake_time.snapshot(),
            rtt: self.hist.rtt.snapshot(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct StatusLimits {
    pub max_sessions: usize,
    pub max_sessions_per_ip: usize,
    pub max_media_kbps: u32,
    pub max_chat_bytes: usize,
    pub max_frame_bytes: usize,
}

/// The body of `GET /status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub sessions: u64,
    pub handshakes: u64,
    pub waiting: u64,
    pub pairs: u64,
    pub sessions_opened: u64,
    pub sessions_refused: u64,
    pub matches_made: u64,
    pub nexts: u64,
    pub reports: u64,
    pub datagrams_received: u64,
    pub datagrams_forwarded: u64,
    pub datagrams_queued: u64,
    pub send_buffer_drops: u64,
    pub receive_buffer_drops: u64,
    pub evictions: u64,
    pub resumes: u64,
    pub cooling_offs: u64,
    pub ended_left: u64,
    pub ended_disconnected: u64,
    pub ended_error: u64,
    pub bytes_forwarded: u64,
    pub datagrams_dropped: u64,
    pub drops: std::collections::BTreeMap<String, u64>,
    pub chat_lines_forwarded: u64,
    pub chat_lines_dropped: u64,
    pub chat_writers: u64,
    pub chat_lines_queued: u64,
    /// Entries in the relay's longer-lived maps, by map (updated every second or two).
    pub held: std::collections::BTreeMap<String, u64>,
    pub errors_sent: std::collections::BTreeMap<String, u64>,
    pub certificate_rotations: u64,
    pub certificate_reloads: u64,
    pub retries_sent: u64,
    pub connections_refused: u64,
    pub uptime_s: u64,
    /// Heap allocated and not freed (see `memory::heap_live_bytes`).
    pub heap_live_bytes: u64,
    pub limits: StatusLimits,
    pub time_to_match: HistogramSnapshot,
    pub call_length: HistogramSnapshot,
    pub handshake_time: HistogramSnapshot,
    pub rtt: HistogramSnapshot,
}

impl Status {
    /// Prometheus text exposition format (version 0.0.4).
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP duet_{name} {help}");
            let _ = writeln!(out, "# TYPE duet_{name} {kind}");
            let _ = writeln!(out, "duet_{name} {value}");
        };
        metric("sessions", "gauge", "Sessions open now.", self.sessions);
        metric(
            "handshakes",
            "gauge",
            "Connections between their first packet and Hello now.",
            self.handshakes,
        );
        metric(
            "waiting",
            "gauge",
            "Sessions waiting for a partner.",
            self.waiting,
        );
        metric("pairs", "gauge", "Pairs in a call now.", self.pairs);
        metric(
            "sessions_opened_total",
            "counter",
            "Sessions accepted.",
            self.sessions_opened,
        );
        metric(
            "sessions_refused_total",
            "counter",
            "Sessions refused (full, per-address limit).",
            self.sessions_refused,
        );
        metric(
            "matches_made_total",
            "counter",
            "Pairings made.",
            self.matches_made,
        );
        metric("nexts_total", "counter", "Next presses.", self.nexts);
        metric("reports_total", "counter", "Abuse reports.", self.reports);
        metric(
            "datagrams_received_total",
            "counter",
            "Media datagrams received.",
            self.datagrams_received,
        );
        metric(
            "datagrams_forwarded_total",
            "counter",
            "Media datagrams sent to a partner (quinn's count of DATAGRAM frames sent).",
            self.datagrams_forwarded,
        );
        metric(
            "datagrams_queued_total",
            "counter",
            "Media datagrams handed to quinn for a partner.",
            self.datagrams_queued,
        );
        metric(
            "datagram_send_buffer_drops_total",
            "counter",
            "Datagrams quinn's send buffer dropped (queued for a slow receiver, never sent).",
            self.send_buffer_drops,
        );
        metric(
            "datagram_receive_buffer_drops_total",
            "counter",
            "Datagrams quinn received but the relay never read.",
            self.receive_buffer_drops,
        );
        metric(
            "evictions_total",
            "counter",
            "Sessions dropped because they could not keep up with their events.",
            self.evictions,
        );
        metric(
            "resumes_total",
            "counter",
            "Sessions resumed with a token.",
            self.resumes,
        );
        metric(
            "bytes_forwarded_total",
            "counter",
            "Media bytes forwarded to a partner.",
            self.bytes_forwarded,
        );
        metric(
            "datagrams_dropped_total",
            "counter",
            "Media datagrams not forwarded, all reasons.",
            self.datagrams_dropped,
        );
        metric(
            "chat_lines_forwarded_total",
            "counter",
            "Chat lines forwarded.",
            self.chat_lines_forwarded,
        );
        metric(
            "chat_lines_dropped_total",
            "counter",
            "Chat lines lost on the way to a receiver: its chat queue or event queue was full.",
            self.chat_lines_dropped,
        );
        metric(
            "chat_writers",
            "gauge",
            "Chat writer tasks alive (at most one per session).",
            self.chat_writers,
        );
        metric(
            "chat_lines_queued",
            "gauge",
            "Chat lines waiting in writer queues.",
            self.chat_lines_queued,
        );
        metric(
            "certificate_rotations_total",
            "counter",
            "Development certificate rotations.",
            self.certificate_rotations,
        );
        metric(
            "certificate_reloads_total",
            "counter",
            "Real certificates reloaded from their files.",
            self.certificate_reloads,
        );
        metric(
            "retries_sent_total",
            "counter",
            "Connection attempts asked to validate their address (QUIC Retry).",
            self.retries_sent,
        );
        metric(
            "connections_refused_total",
            "counter",
            "Connection attempts refused before the handshake (block list, handshake cap or rate).",
            self.connections_refused,
        );
        metric(
            "uptime_seconds",
            "gauge",
            "Seconds since the relay started.",
            self.uptime_s,
        );
        metric(
            "heap_live_bytes",
            "gauge",
            "Heap allocated and not yet freed (the allocator may hold more).",
            self.heap_live_bytes,
        );
        let _ = writeln!(
            out,
            "# HELP duet_sessions_ended_total Sessions ended, by how."
        );
        let _ = writeln!(out, "# TYPE duet_sessions_ended_total counter");
        for (how, v) in [
            ("left", self.ended_left),
            ("disconnected", self.ended_disconnected),
            ("error", self.ended_error),
        ] {
            let _ = writeln!(out, "duet_sessions_ended_total{{how=\"{how}\"}} {v}");
        }
        let _ = writeln!(out, "# HELP duet_datagrams_dropped_by_reason_total Media datagrams not forwarded, by reason.");
        let _ = writeln!(out, "# TYPE duet_datagrams_dropped_by_reason_total counter");
        for (reason, v) in &self.drops {
            let _ = writeln!(
                out,
                "duet_datagrams_dropped_by_reason_total{{reason=\"{reason}\"}} {v}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP duet_errors_sent_total Errors sent to clients, by code."
        );
        let _ = writeln!(out, "# TYPE duet_errors_sent_total counter");
        for (code, v) in &self.errors_sent {
            let _ = writeln!(out, "duet_errors_sent_total{{code=\"{code}\"}} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP duet_held_entries Entries in the relay's longer-lived maps, by map."
        );
        let _ = writeln!(out, "# TYPE duet_held_entries gauge");
        for (map, v) in &self.held {
            let _ = writeln!(out, "duet_held_entries{{map=\"{map}\"}} {v}");
        }
        self.time_to_match.write(
            &mut out,
            "time_to_match_seconds",
            "Time from joining the queue to a pairing.",
        );
        self.call_length.write(
            &mut out,
            "call_length_seconds",
            "Length of calls that ended.",
        );
        self.handshake_time.write(
            &mut out,
            "handshake_seconds",
            "Time from the first packet to Hello (QUIC, WebTransport, Hello).",
        );
        self.rtt.write(
            &mut out,
            "rtt_seconds",
            "Sessions' round-trip times, sampled each stats interval.",
        );
        out
    }
}
