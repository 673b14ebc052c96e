//! Giving freed heap back to the system. glibc keeps freed memory for reuse, so a relay that
//! once held a crowd stays resident at the crowd's size long after the crowd left, and an
//! operator reading RSS cannot tell that from a leak (`malloc_tunables.rs` turns off the
//! per-thread caches and arenas that `malloc_trim` cannot reach). The relay asks
//! glibc for the free pages back (`malloc_trim(0)`) when it goes idle (its last session
//! ended) and a few times more over the next 16 s, and otherwise at most once a minute
//! while busy.
//!
//! [`heap_live_bytes`] is what the relay's allocations add up to, for telling a leak from
//! the allocator's retention. The decision is [`TrimSchedule`], a pure state machine with time passed in; [`trim`] is
//! the one call into the C library. `malloc_trim` locks each arena while it walks it, so it
//! runs on a [`Trimmer`] thread of its own, never on a thread that forwards media, and
//! rarely. (A thread of its own rather than tokio's blocking pool, whose threads come and go,
//! so the relay's thread count stays what it was.)

use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The process's allocator, counted: what is allocated and not yet freed is the heap the
/// relay really holds, apart from what the allocator keeps around it (fragmentation, free
/// pages). `/status` and `/metrics` publish it, so a growing RSS can be told apart from a
/// leak. (`stats_alloc` over the system allocator: two atomic adds per call.)
#[global_allocator]
static ALLOCATOR: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

/// Bytes allocated and not yet freed, process-wide.
pub fn heap_live_bytes() -> u64 {
    // A realloc's growth counts as allocated and its shrinking as freed already.
    let s = ALLOCATOR.stats();
    (s.bytes_allocated as u64).saturating_sub(s.bytes_deallocated as u64)
}

/// While sessions are live, at most one trim this often.
pub const BUSY_TRIM_EVERY: Duration = Duration::from_secs(60);

/// Idle seconds (after sessions ended) at which the relay trims: at once, and again as
/// connections finish closing and free what they held (QUIC keeps a closed connection's
/// state for its drain period), then no more until sessions come back.
pub const IDLE_TRIMS_AT_S: [u64; 5] = [1, 2, 4, 8, 16];

/// When to trim, from the session count sampled about once a second.
#[derive(Debug, Default)]
pub struct TrimSchedule {
    /// The first sample with sessions live since the last trim while busy.
    busy_since: Option<Instant>,
    /// When the relay went idle after being busy, and how many idle trims are done.
    idle_since: Option<(Instant, usize)>,
}

impl TrimSchedule {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether to trim now, given how many sessions the relay holds. Trims when the relay
    /// has gone idle after holding sessions (the moment the most is free and nothing is
    /// waiting on the allocator) at the idle seconds of [`IDLE_TRIMS_AT_S`], and while busy
    /// once per [`BUSY_TRIM_EVERY`] of being busy. An idle relay that has done its idle
    /// trims does not trim again: there is nothing new to return.
    pub fn tick(&mut self, now: Instant, sessions: usize) -> bool {
        if sessions > 0 {
            self.idle_since = None;
            let since = *self.busy_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= BUSY_TRIM_EVERY {
                self.busy_since = Some(now);
                return true;
            }
            return false;
        }
        if self.busy_since.take().is_some() {
            self.idle_since = Some((now, 0));
        }
        let Some((since, done)) = self.idle_since else {
            return false;
        };
        let Some(&at) = IDLE_TRIMS_AT_S.get(done) else {
            return false;
        };
        // The first idle sample counts as one second idle: the sessions ended since the last.
        let idle_s = now.saturating_duration_since(since).as_secs() + 1;
        if idle_s >= at {
            self.idle_since = Some((since, done + 1));
            return true;
        }
        false
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
    fn going_idle_trims_a_few_times_as_connections_finish_closing_then_stops() {
        let t = Instant::now();
        let mut s = TrimSchedule::new();
        assert!(!s.tick(t, 3));
        assert!(!s.tick(t + S, 1));
        let trims: Vec<u32> = (2..100).filter(|&i| s.tick(t + S * i, 0)).collect();
        assert_eq!(trims, vec![2, 3, 5, 9, 17], "1, 2, 4, 8 and 16 s idle");
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
        assert!(s.tick(t + S * 62, 0), "and again a second later");
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
    fn the_live_heap_counts_what_is_allocated_and_not_freed() {
        // The counter is process-wide, and the tests running beside this one allocate and
        // free meanwhile (a few MiB at most), so the sizes here are 256 MiB and each check
        // leaves half of that as room. (Reserved, never written: no page is touched.)
        const BIG: usize = 256 << 20;
        const ROOM: u64 = 128 << 20;
        let before = heap_live_bytes();
        let big: Vec<u8> = Vec::with_capacity(BIG);
        let during = heap_live_bytes();
        drop(big);
        let after = heap_live_bytes();
        assert!(during >= before + ROOM, "{before} → {during}");
        assert!(after + ROOM <= during, "{during} → {after} after the free");
        // Growing and shrinking by realloc counts once.
        let mut v: Vec<u8> = Vec::with_capacity(1 << 20);
        let small = heap_live_bytes();
        v.reserve_exact(BIG);
        let grown = heap_live_bytes();
        v.shrink_to(0);
        let shrunk = heap_live_bytes();
        assert!(grown >= small + ROOM, "{small} → {grown} after growing");
        assert!(
            shrunk + ROOM <= grown,
            "{grown} → {shrunk}: a shrunk realloc is freed"
        );
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
