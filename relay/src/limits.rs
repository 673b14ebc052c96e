//! Rate limits and the relay's internal bounds. Every queue and map that network input can
//! grow has its bound here, with the reason for its size.

use std::time::{Duration, Instant};

/// Control messages decoded but not yet handled, per session. A client that sends faster
/// than the relay handles them is slowed by QUIC flow control, not by memory.
pub const CONTROL_INBOX: usize = 32;

/// Messages queued for one session's control stream. Control traffic is a few messages a
/// second; a client that leaves 64 unread is not reading at all and is closed.
pub const CONTROL_OUTBOX: usize = 64;

/// Events (pairing changes, partner's messages, chat lines) queued for one session. Same
/// reasoning as the outbox: full means the session task is stuck, and it is closed.
pub const SESSION_EVENTS: usize = 128;

/// Chat lines queued toward one partner's chat stream. Chat is rate-limited at the sender
/// to a few lines a second; 32 is several seconds of burst.
pub const CHAT_OUTBOX: usize = 32;

/// Commands queued for the matching engine from all sessions together. Each is handled in
/// microseconds; the bound turns a flood into backpressure on session tasks.
pub const ENGINE_INBOX: usize = 4096;

/// How long a chat stream may take to name its pairing before it is dropped.
pub const CHAT_OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the relay waits for a refused client to receive its error before closing.
pub const ERROR_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Handshake-rate buckets kept at once (one per address prefix). 65 536 buckets are
/// ~3 MB; past it, full (idle) buckets are forgotten first.
pub const MAX_RATE_ENTRIES: usize = 65_536;

/// Abuse reports one session may make: a burst, then one a minute. Past it a report
/// counts as Next (the reporter still moves on).
pub const REPORT_BURST: u32 = 3;
pub const REPORTS_PER_MINUTE: u32 = 1;

/// A token bucket: `capacity` tokens, refilled continuously at `per_second`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(capacity: f64, per_second: f64, now: Instant) -> Self {
        Self {
            capacity,
            per_second,
            tokens: capacity,
            last: now,
        }
    }

    /// Whether the bucket has refilled completely (its owner has been quiet a while).
    pub fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.per_second >= self.capacity
    }

    /// Takes `n` tokens if there are enough; otherwise takes none.
    pub fn try_take(&mut self, n: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3.0, 1.0, t0);
        assert!((0..3).all(|_| b.try_take(1.0, t0)));
        assert!(!b.try_take(1.0, t0));
        assert!(!b.try_take(1.0, t0 + Duration::from_millis(500)));
        assert!(b.try_take(1.0, t0 + Duration::from_millis(1000)));
        // Refill never exceeds the capacity.
        let later = t0 + Duration::from_secs(100);
        assert!((0..3).all(|_| b.try_take(1.0, later)));
        assert!(!b.try_take(1.0, later));
    }
}
