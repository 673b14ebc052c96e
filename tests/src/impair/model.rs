//! The stateful pieces a [`Link`](super::Link) is made of: the Gilbert–Elliott loss chain,
//! the rate limiter and the jitter process. Each takes the time as an argument and the
//! random source as a parameter, so a test can drive it packet by packet with no clock and
//! no sockets.

use std::time::{Duration, Instant};

use rand::Rng;

use super::capacity::CapacityTrace;
use super::profile::{clamp_probability, GilbertElliott, RateLimit};

/// Slowest rate a [`RateLimit`] is taken to mean. Below 1 kB/s one full-size datagram takes
/// over a minute to send, which is an outage rather than a link; the floor also keeps every
/// transmission time finite (a rate of 0 would divide by zero).
pub const MIN_RATE_BITS_PER_SECOND: u64 = 8_000;

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Where a Gilbert–Elliott chain is: the state carries over from packet to packet, which is
/// what makes its losses come in runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GilbertElliottState {
    bad: bool,
}

impl GilbertElliottState {
    /// Moves the chain one packet on, then says whether that packet is lost in the state
    /// it landed in. Moving first means a packet that enters the bad state can be lost,
    /// and the long-run loss is exactly [`GilbertElliott::average_loss`].
    pub fn lose(&mut self, model: &GilbertElliott, rng: &mut impl Rng) -> bool {
        let leave = if self.bad {
            model.bad_to_good
        } else {
            model.good_to_bad
        };
        if rng.random::<f64>() < clamp_probability(leave) {
            self.bad = !self.bad;
        }
        let loss = if self.bad {
            model.loss_in_bad
        } else {
            model.loss_in_good
        };
        rng.random::<f64>() < clamp_probability(loss)
    }

    pub fn is_bad(&self) -> bool {
        self.bad
    }
}

/// A bottleneck that sends one packet at a time at the configured rate, in arrival order:
/// a token bucket one packet deep. It stores no packets; it only remembers when the link
/// will be free again, which is enough to know both when a new packet will have left and
/// how many bytes are waiting ahead of it (the backlog drains at exactly the link rate).
#[derive(Debug, Clone, Copy, Default)]
pub struct Pacer {
    /// When the last admitted packet finishes leaving the bottleneck.
    free_at: Option<Instant>,
}

impl Pacer {
    /// Admits a packet of `wire_bytes` arriving at `now` and returns when its last bit has
    /// left the bottleneck, or `None` if the queue has no room for it (tail drop).
    pub fn admit(&mut self, now: Instant, wire_bytes: u64, limit: &RateLimit) -> Option<Instant> {
        let rate = limit.bits_per_second.max(MIN_RATE_BITS_PER_SECOND);
        let start = match self.free_at {
            Some(free_at) if free_at > now => free_at,
            _ => now,
        };
        let backlog = backlog_bytes(start.saturating_duration_since(now), rate);
        // An idle link always takes a packet, even one larger than the whole queue:
        // otherwise a small queue would silently black-hole large datagrams.
        if backlog > 0 && backlog.saturating_add(wire_bytes) > limit.queue_bytes {
            return None;
        }
        let sending = u128::from(wire_bytes) * 8 * NANOS_PER_SECOND / u128::from(rate);
        let sending = Duration::from_nanos(u64::try_from(sending).ok()?);
        let done = start.checked_add(sending)?;
        self.free_at = Some(done);
        Some(done)
    }

    /// [`admit`](Self::admit) on a link whose rate follows `trace`, started at `origin`:
    /// the backlog and the packet's sending time are worked out over the trace's pieces,
    /// so what is queued when the rate falls drains at the new rate.
    pub fn admit_traced(
        &mut self,
        now: Instant,
        wire_bytes: u64,
        queue_bytes: u64,
        trace: &CapacityTrace,
        origin: Instant,
    ) -> Option<Instant> {
        let start = match self.free_at {
            Some(free_at) if free_at > now => free_at,
            _ => now,
        };
        let since = |t: Instant| t.saturating_duration_since(origin);
        let backlog = trace.bits_between(since(now), since(start)) / 8;
        if backlog > 0 && backlog.saturating_add(u128::from(wire_bytes)) > u128::from(queue_bytes) {
            return None;
        }
        let sending = trace.time_to_carry(since(start), u128::from(wire_bytes) * 8);
        let done = start.checked_add(sending)?;
        self.free_at = Some(done);
        Some(done)
    }

    /// Bytes still waiting (or being sent) at `now`.
    pub fn backlog(&self, now: Instant, limit: &RateLimit) -> u64 {
        let rate = limit.bits_per_second.max(MIN_RATE_BITS_PER_SECOND);
        match self.free_at {
            Some(free_at) => backlog_bytes(free_at.saturating_duration_since(now), rate),
            None => 0,
        }
    }
}

fn backlog_bytes(wait: Duration, rate: u64) -> u64 {
    let bytes = wait.as_nanos() * u128::from(rate) / (8 * NANOS_PER_SECOND);
    u64::try_from(bytes).unwrap_or(u64::MAX)
}

/// Shortest stretch over which the jitter drifts from one target to the next.
const MIN_JITTER_SEGMENT: Duration = Duration::from_millis(1);

/// Jitter as a slowly drifting extra delay instead of an independent draw per packet.
///
/// Independent draws reorder packets whenever two are sent closer together than the jitter
/// range, and keeping them in order by clamping each release to the previous one pushes
/// the delay of dense traffic up to its maximum. A drifting delay has neither problem: the
/// offset moves in straight lines between random targets in `[-amplitude, +amplitude]`,
/// each line lasting `4 × amplitude`, so it changes at most half a second per second and
/// `send time + offset` only ever grows. Real queues behave like this too: the packets of
/// one burst see nearly the same delay.
#[derive(Debug, Clone, Copy, Default)]
pub struct JitterProcess {
    segment: Option<Segment>,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    start: Instant,
    end: Instant,
    from_nanos: i64,
    to_nanos: i64,
}

impl JitterProcess {
    /// The jitter offset in nanoseconds (negative means earlier) for a packet leaving at
    /// `now`, within `±amplitude`.
    pub fn offset(&mut self, now: Instant, amplitude: Duration, rng: &mut impl Rng) -> i64 {
        let amp = i64::try_from(amplitude.as_nanos())
            .unwrap_or(i64::MAX / 4)
            .min(i64::MAX / 4);
        if amp == 0 {
            // Starting afresh when jitter comes back keeps an old, larger target from
            // leaking into a new, smaller amplitude.
            self.segment = None;
            return 0;
        }
        let length = amplitude.saturating_mul(4).max(MIN_JITTER_SEGMENT);
        let mut draw = || ((rng.random::<f64>() * 2.0 - 1.0) * amp as f64) as i64;
        let segment = match self.segment {
            Some(segment) if now < segment.end => segment,
            // After a segment ends the offset stays at its target until the next packet,
            // which starts the next segment from there: the offset never jumps.
            Some(segment) => Segment {
                start: now,
                end: now.checked_add(length).unwrap_or(now),
                from_nanos: segment.to_nanos,
                to_nanos: draw(),
            },
            None => {
                let from_nanos = draw();
                Segment {
                    start: now,
                    end: now.checked_add(length).unwrap_or(now),
                    from_nanos,
                    to_nanos: draw(),
                }
            }
        };
        self.segment = Some(segment);
        segment.at(now).clamp(-amp, amp)
    }
}

impl Segment {
    fn at(&self, now: Instant) -> i64 {
        let span = self.end.saturating_duration_since(self.start).as_nanos();
        if span == 0 {
            return self.to_nanos;
        }
        // A packet that departs before the segment began (possible right after a rate
        // limit is removed) takes the segment's first value.
        let into = now
            .saturating_duration_since(self.start)
            .as_nanos()
            .min(span);
        let into = i128::try_from(into).unwrap_or(i128::MAX);
        let span = i128::try_from(span).unwrap_or(i128::MAX);
        let from = i128::from(self.from_nanos);
        let to = i128::from(self.to_nanos);
        let value = from + (to - from) * into / span;
        i64::try_from(value).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn gilbert_elliott_with_average_solves_for_the_requested_loss() {
        let model = GilbertElliott::with_average(0.01, 3.0);
        assert!((model.average_loss() - 0.01).abs() < 1e-12);
        assert!((model.bad_to_good - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn pacer_admits_into_an_idle_link_even_above_the_queue_size() {
        let limit = RateLimit {
            bits_per_second: 1_000_000,
            queue_bytes: 100,
        };
        let mut pacer = Pacer::default();
        let now = Instant::now();
        let done = pacer.admit(now, 1_000, &limit);
        assert_eq!(done, Some(now + Duration::from_millis(8)));
        assert_eq!(
            pacer.admit(now, 1_000, &limit),
            None,
            "the queue is full now"
        );
        assert_eq!(pacer.backlog(now, &limit), 1_000);
        assert_eq!(pacer.backlog(now + Duration::from_millis(4), &limit), 500);
    }

    #[test]
    fn jitter_offset_stays_within_its_amplitude_and_never_outruns_time() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut jitter = JitterProcess::default();
        let amplitude = Duration::from_millis(20);
        let start = Instant::now();
        let mut last_release = start;
        for i in 0..100_000u64 {
            let now = start + Duration::from_micros(i * 37);
            let offset = jitter.offset(now, amplitude, &mut rng);
            assert!(offset.unsigned_abs() <= 20_000_000);
            let delay = u64::try_from(20_000_000 + offset).expect("the offset is within ±20 ms");
            let release = now + Duration::from_nanos(delay);
            assert!(
                release >= last_release,
                "offset moved faster than time at packet {i}"
            );
            last_release = release;
        }
    }
}
