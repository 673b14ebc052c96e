//! Counters the relay keeps about itself, served as JSON at `/status` and in Prometheus'
//! text format at `/metrics`. Plain relaxed atomics: the forwarding path adds to them
//! without taking any lock.

use duet_proto::ErrorCode;
use serde::Serialize;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Why a datagram was not forwarded.
#[derive(Debug, Clone, Copy)]
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
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub sessions_opened: AtomicU64,
    pub sessions: AtomicU64,
    pub sessions_refused: AtomicU64,
    pub waiting: AtomicU64,
    pub pairs: AtomicU64,
    pub matches_made: AtomicU64,
    pub nexts: AtomicU64,
    pub reports: AtomicU64,
    pub datagrams_received: AtomicU64,
    pub datagrams_forwarded: AtomicU64,
    pub bytes_forwarded: AtomicU64,
    pub chat_lines_forwarded: AtomicU64,
    pub certificate_rotations: AtomicU64,
    drops: [AtomicU64; 7],
    errors: [AtomicU64; ErrorCode::ALL.len()],
}

const DROP_NAMES: [&str; 7] = [
    "no_partner",
    "stale_match",
    "malformed",
    "too_large",
    "rate_limited",
    "send_failed",
    "before_hello",
];

impl Metrics {
    pub fn dropped(&self, why: Drop) {
        self.drops[why as usize].fetch_add(1, Relaxed);
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
        Status {
            sessions: self.sessions.load(Relaxed),
            waiting: self.waiting.load(Relaxed),
            pairs: self.pairs.load(Relaxed),
            sessions_opened: self.sessions_opened.load(Relaxed),
            sessions_refused: self.sessions_refused.load(Relaxed),
            matches_made: self.matches_made.load(Relaxed),
            nexts: self.nexts.load(Relaxed),
            reports: self.reports.load(Relaxed),
            datagrams_received: self.datagrams_received.load(Relaxed),
            datagrams_forwarded: self.datagrams_forwarded.load(Relaxed),
            bytes_forwarded: self.bytes_forwarded.load(Relaxed),
            datagrams_dropped: self.datagrams_dropped(),
            drops,
            chat_lines_forwarded: self.chat_lines_forwarded.load(Relaxed),
            errors_sent: errors,
            certificate_rotations: self.certificate_rotations.load(Relaxed),
            uptime_s: started.elapsed().as_secs(),
            limits,
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
    pub waiting: u64,
    pub pairs: u64,
    pub sessions_opened: u64,
    pub sessions_refused: u64,
    pub matches_made: u64,
    pub nexts: u64,
    pub reports: u64,
    pub datagrams_received: u64,
    pub datagrams_forwarded: u64,
    pub bytes_forwarded: u64,
    pub datagrams_dropped: u64,
    pub drops: std::collections::BTreeMap<String, u64>,
    pub chat_lines_forwarded: u64,
    pub errors_sent: std::collections::BTreeMap<String, u64>,
    pub certificate_rotations: u64,
    pub uptime_s: u64,
    pub limits: StatusLimits,
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
            "Media datagrams forwarded to a partner.",
            self.datagrams_forwarded,
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
            "certificate_rotations_total",
            "counter",
            "Development certificate rotations.",
            self.certificate_rotations,
        );
        metric(
            "uptime_seconds",
            "gauge",
            "Seconds since the relay started.",
            self.uptime_s,
        );
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
        out
    }
}
