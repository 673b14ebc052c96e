//! Giving freed heap back to the system. glibc keeps what a thread freed in that thread's
//! arena, so a relay that once held a crowd stays resident at the crowd's size long after
//! the crowd left, and an operator reading RSS cannot tell that from a leak. The relay asks
//! glibc for the free pages back (`malloc_trim(0)`) when it goes idle (its last session
//! ended) and otherwise at most once a minute while busy.
//!
//! The decision is [`TrimSchedule`], a pure state machine with time passed in; [`trim`] is
//! the one call into the C library. `malloc_trim` locks each arena while it walks it, so it
//! runs on a [`Trimmer`] thread of its own, never on a thread that forwards media, and
//! rarely. (A thread of its own rather than tokio's blocking pool, whose threads come and go,
//! so the relay's thread count stays what it was.)

use std::sync::mpsc;
use std::time::{Duration, Instant};

/// While sessions are live, at most one trim this often.
pub const BUSY_TRIM_EVERY: Duration = Duration::from_secs(60);

/// When to trim, from the session count sampled about once a second.
#[derive(Debug, Default)]
pub struct TrimSchedule {
    /// The first sample with sessions live since the last trim: the heap has changed since.
    busy_since: Option<Instant>,
}

impl TrimSchedule {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether to trim now, given how many sessions the relay holds. Trims when the relay
    /// has just gone idle after holding sessions (the moment the most is free and nothing
    /// is waiting on the allocator), and while busy once per [`BUSY_TRIM_EVERY`] of being
    /// busy. An idle relay that has already trimmed does not trim again: there is nothing
    /// new to return.
    pub fn tick(&mut self, now: Instant, sessions: usize) -> bool {
        let due = match (sessions, self.busy_since) {
            (0, since) => since.is_some(),
            (_, None) => {
                self.busy_since = Some(now);
                false
            }
            (_, Some(since)) => now.saturating_duration_since(since) >= BUSY_TRIM_EVERY,
        };
        if due {
            self.busy_since = (sessions > 0).then_some(now);
        }
        due
    }
}

/// The thread that trims, on request. Requests made while a trim is under way or already
/// asked for are merged into it; dropping the last handle ends the thread.
#[derive(Debug, Clone)]
pub struct Trimmer {
    requests: mpsc::SyncSender<()>,
}

impl Trimmer {
    /// Starts the thread; `None` if the system would not start one (then nothing is trimmed).
    pub fn spawn() -> Option<Self> {
        let (requests, pending) = mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("duet-trim".into())
            .spawn(move || {
                while pending.recv().is_ok() {
                    let t = Instant::now();
                    let released = trim();
                    tracing::debug!(
                        released,
                        took_us = t.elapsed().as_micros() as u64,
                        "trimmed the heap"
                    );
                }
            })
            .ok()?;
        Some(Self { requests })
    }

    /// Asks for a trim without waiting for it.
    pub fn request(&self) {
        let _ = self.requests.try_send(());
    }
}

/// Asks the allocator to return its free pages to the system; true if it returned any.
/// Elsewhere than glibc (musl, macOS, Windows) it does nothing: those allocators give pages
/// back on their own or have no such call.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn trim() -> bool {
    // SAFETY: `malloc_trim` takes no pointers and touches only the allocator's own state,
    // which glibc locks against every other allocator call (the man page marks it MT-Safe).
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn an_idle_relay_that_never_held_a_session_never_trims() {
        let t = Instant::now();
        let mut s = TrimSchedule::new();
        assert!((1..200).all(|i| !s.tick(t + S * i, 0)));
    }

    #[test]
    fn going_idle_trims_once() {
        let t = Instant::now();
        let mut s = TrimSchedule::new();
        assert!(!s.tick(t + S, 3));
        assert!(!s.tick(t + S * 2, 1));
        assert!(s.tick(t + S * 3, 0), "the last session ended");
        assert!(!s.tick(t + S * 4, 0), "nothing new to return");
        assert!(!s.tick(t + S * 500, 0));
        assert!(!s.tick(t + S * 501, 2));
        assert!(s.tick(t + S * 502, 0), "idle again after a new session");
    }

    #[test]
    fn a_busy_relay_trims_once_a_minute() {
        let t = Instant::now();
        let mut s = TrimSchedule::new();
        let trims: Vec<u64> = (1..=185)
            .filter(|&i| s.tick(t + S * i as u32, 10))
            .collect();
        assert_eq!(
            trims,
            vec![61, 121, 181],
            "a minute after the first busy sample"
        );
    }

    #[test]
    fn a_busy_trim_then_idle_still_trims_what_the_crowd_left() {
        let t = Instant::now();
        let mut s = TrimSchedule::new();
        assert!(!s.tick(t, 10));
        assert!(s.tick(t + S * 60, 10));
        assert!(s.tick(t + S * 61, 0), "sessions ended after the busy trim");
        assert!(!s.tick(t + S * 62, 0));
    }

    #[test]
    fn requests_never_wait_for_the_trimming_thread() {
        let t = Trimmer::spawn().expect("a thread");
        // The channel holds one request; the rest merge into it instead of blocking.
        for _ in 0..1_000 {
            t.request();
        }
    }

    #[test]
    fn trimming_is_harmless_to_call() {
        // Whatever it returns, live allocations stay intact.
        let v: Vec<u64> = (0..10_000).collect();
        drop(vec![0u8; 1 << 20]);
        let _ = trim();
        assert_eq!(v.iter().sum::<u64>(), 10_000 * 9_999 / 2);
    }
}
