//! Time-varying link capacity: a [`CapacityTrace`] says what a bottleneck carries at each
//! moment, as a cellular link's rate swings from second to second.
//!
//! A trace is piecewise constant (one rate per `step`) and repeats after its last piece.
//! It is built from a seeded random walk ([`Walk`]: the same seed gives the same trace) or
//! read from a file in the mahimahi format (one line per 1500-byte delivery opportunity,
//! its time in milliseconds; [`CapacityTrace::to_mahimahi`] writes one, so a trace the
//! harness made can be replayed by other tools and read back here).
//!
//! Plain data and pure functions: no clock, no I/O. The [`Link`](super::Link) asks the
//! trace for the rate at the time a packet reaches the bottleneck.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NANOS: u128 = 1_000_000_000;

/// Bytes one mahimahi delivery opportunity carries.
pub const MAHIMAHI_PACKET_BYTES: u64 = 1500;

/// Longest trace read or made: an hour of pieces. Longer is a mistake, and the bound keeps
/// a hostile trace file from taking all memory.
pub const MAX_TRACE: Duration = Duration::from_secs(3600);

/// Shortest piece: finer than a millisecond means nothing to a link that sends whole packets.
pub const MIN_STEP: Duration = Duration::from_millis(1);

/// A link rate that changes over time: `rates[k]` bits per second from `k × step` to
/// `(k + 1) × step`, starting over after the last piece.
#[derive(Debug, Clone, PartialEq)]
pub struct CapacityTrace {
    pub step: Duration,
    pub rates: Arc<[u64]>,
}

/// A seeded random walk of the rate, in log space (so a swing from 1 to 2 Mbit/s is as
/// likely as one from 4 to 8), bounded by `min_bps` and `max_bps`, with occasional deep
/// fades (a tunnel, a lift, the edge of a cell) during which the rate drops to `fade_bps`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Walk {
    pub start_bps: u64,
    pub min_bps: u64,
    pub max_bps: u64,
    /// How long each rate holds.
    pub step: Duration,
    /// Standard deviation of the change in `ln(rate)` per step.
    pub volatility: f64,
    /// Length of the trace before it repeats.
    pub length: Duration,
    /// Mean number of fades per minute (a Poisson process, drawn once per step).
    pub fades_per_minute: f64,
    /// Each fade lasts between these two, uniformly.
    pub fade_min: Duration,
    pub fade_max: Duration,
    pub fade_bps: u64,
}

impl Walk {
    /// A phone on LTE while moving about: 0.3 to 10 Mbit/s, starting at 3, a new rate every
    /// 250 ms, and about two fades a minute of 0.5 to 2 s at 100 kbit/s.
    pub fn cellular() -> Self {
        Self {
            start_bps: 3_000_000,
            min_bps: 300_000,
            max_bps: 10_000_000,
            step: Duration::from_millis(250),
            volatility: 0.12,
            length: Duration::from_secs(600),
            fades_per_minute: 2.0,
            fade_min: Duration::from_millis(500),
            fade_max: Duration::from_secs(2),
            fade_bps: 100_000,
        }
    }

    /// A phone on a train: the same range, swinging harder, and about three long fades a
    /// minute of 2 to 6 s at 50 kbit/s (cuttings, tunnels, cells far apart).
    pub fn train() -> Self {
        Self {
            volatility: 0.2,
            fades_per_minute: 3.0,
            fade_min: Duration::from_secs(2),
            fade_max: Duration::from_secs(6),
            fade_bps: 50_000,
            ..Self::cellular()
        }
    }
}

/// A span of a trace below some rate (see [`CapacityTrace::spans_below`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Below {
    pub start: Duration,
    pub end: Duration,
    /// The rate once the span is over, bit/s (0 if the span reaches `until`).
    pub rate_after: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    #[error("line {line}: {text:?} is not a time in milliseconds")]
    NotANumber { line: usize, text: String },
    #[error("line {line}: {ms} ms comes before the line above it")]
    OutOfOrder { line: usize, ms: u64 },
    #[error("the trace is longer than {} s", MAX_TRACE.as_secs())]
    TooLong,
    #[error("the trace has no delivery opportunity")]
    Empty,
}

impl CapacityTrace {
    /// The same rate all the time.
    pub fn constant(bits_per_second: u64) -> Self {
        Self {
            step: Duration::from_secs(1),
            rates: Arc::from([bits_per_second]),
        }
    }

    /// How long the trace runs before it repeats.
    pub fn period(&self) -> Duration {
        self.step
            .saturating_mul(u32::try_from(self.rates.len()).unwrap_or(u32::MAX))
    }

    /// The spans of `[0, until)` in which the rate is below `bits_per_second` (neighbouring
    /// pieces merged), each with the rate of the piece that follows it.
    pub fn spans_below(&self, bits_per_second: u64, until: Duration) -> Vec<Below> {
        let step = self.step.max(MIN_STEP);
        let mut out: Vec<Below> = Vec::new();
        let mut at = Duration::ZERO;
        while at < until {
            let rate = self.rate_at(at);
            let next = at + step;
            if rate < bits_per_second {
                match out.last_mut() {
                    Some(b) if b.end == at => b.end = next,
                    _ => out.push(Below {
                        start: at,
                        end: next,
                        rate_after: 0,
                    }),
                }
            } else if let Some(b) = out.last_mut().filter(|b| b.end == at) {
                b.rate_after = rate;
            }
            at = next;
        }
        out
    }

    /// The rate `elapsed` after the trace started (it repeats after [`period`](Self::period)).
    pub fn rate_at(&self, elapsed: Duration) -> u64 {
        let step = self.step.max(MIN_STEP).as_nanos();
        let pieces = self.rates.len() as u128;
        if pieces == 0 {
            return 0;
        }
        let k = (elapsed.as_nanos() / step) % pieces;
        self.rates.get(k as usize).copied().unwrap_or(0)
    }

    /// The rate of the piece that holds `elapsed`, and when that piece ends; rates are
    /// taken as at least [`MIN_RATE_BITS_PER_SECOND`](super::model::MIN_RATE_BITS_PER_SECOND)
    /// so that every packet leaves in finite time.
    fn piece(&self, elapsed: Duration) -> (u64, Duration) {
        let step = self.step.max(MIN_STEP);
        let k = elapsed.as_nanos() / step.as_nanos();
        let end =
            Duration::from_nanos(u64::try_from((k + 1) * step.as_nanos()).unwrap_or(u64::MAX));
        let rate = self
            .rate_at(elapsed)
            .max(super::model::MIN_RATE_BITS_PER_SECOND);
        (rate, end)
    }

    /// Bits the link carries between `from` and `to` (both counted from the start).
    pub fn bits_between(&self, from: Duration, to: Duration) -> u128 {
        let mut t = from;
        let mut bits = 0u128;
        while t < to {
            let (rate, end) = self.piece(t);
            let until = end.min(to);
            bits += u128::from(rate) * (until - t).as_nanos() / NANOS;
            t = until;
        }
        bits
    }

    /// How long after `from` the link has carried `bits` more.
    pub fn time_to_carry(&self, from: Duration, bits: u128) -> Duration {
        let mut t = from;
        let mut left = bits;
        loop {
            let (rate, end) = self.piece(t);
            let room = u128::from(rate) * (end - t).as_nanos() / NANOS;
            if room >= left {
                let nanos = left * NANOS / u128::from(rate);
                let done = t + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
                return done.saturating_sub(from);
            }
            left -= room;
            t = end;
        }
    }

    /// The lowest and highest rates, and the time-weighted mean (bits per second).
    pub fn range(&self) -> (u64, u64, f64) {
        let min = self.rates.iter().copied().min().unwrap_or(0);
        let max = self.rates.iter().copied().max().unwrap_or(0);
        let mean =
            self.rates.iter().map(|&r| r as f64).sum::<f64>() / self.rates.len().max(1) as f64;
        (min, max, mean)
    }

    /// The walk `walk` with random draws from `seed`.
    pub fn random_walk(walk: &Walk, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let step = walk.step.max(MIN_STEP);
        let length = walk.length.min(MAX_TRACE);
        let pieces = usize::try_from((length.as_nanos() / step.as_nanos()).max(1)).unwrap_or(1);
        let lo = (walk.min_bps.max(1) as f64).ln();
        let hi = (walk.max_bps.max(walk.min_bps).max(1) as f64).ln();
        let mut x = (walk.start_bps.max(1) as f64).ln().clamp(lo, hi);
        let fade_chance = (walk.fades_per_minute.max(0.0) * step.as_secs_f64() / 60.0).min(1.0);
        let fade_steps = |d: Duration| (d.as_nanos() / step.as_nanos()).max(1) as usize;
        let (fade_lo, fade_hi) = (
            fade_steps(walk.fade_min),
            fade_steps(walk.fade_max.max(walk.fade_min)),
        );
        let mut fading = 0usize;
        let mut rates = Vec::with_capacity(pieces);
        for _ in 0..pieces {
            x += walk.volatility.max(0.0) * standard_normal(&mut rng);
            // Reflect at the bounds, so the walk does not stick to them.
            if x > hi {
                x = (2.0 * hi - x).max(lo);
            }
            if x < lo {
                x = (2.0 * lo - x).min(hi);
            }
            if fading == 0 && rng.random::<f64>() < fade_chance {
                fading = rng.random_range(fade_lo..=fade_hi);
            }
            if fading > 0 {
                fading -= 1;
                rates.push(walk.fade_bps);
            } else {
                rates.push(x.exp().round() as u64);
            }
        }
        Self {
            step,
            rates: Arc::from(rates),
        }
    }

    /// Writes the trace in the mahimahi format: one line per 1500-byte delivery
    /// opportunity, its time in whole milliseconds from the start, spread evenly over each
    /// piece (the fraction of a packet left at the end of a piece carries into the next).
    pub fn to_mahimahi(&self) -> String {
        let mut out = String::new();
        let step_ms = self.step.as_secs_f64() * 1000.0;
        let mut owed = 0.0f64;
        for (k, &rate) in self.rates.iter().enumerate() {
            let start = k as f64 * step_ms;
            let packets =
                rate as f64 * self.step.as_secs_f64() / (MAHIMAHI_PACKET_BYTES * 8) as f64;
            let total = owed + packets;
            let whole = total.floor();
            owed = total - whole;
            let n = whole as u64;
            for i in 0..n {
                let ms = start + step_ms * (i as f64 + 0.5) / n as f64;
                out.push_str(&(ms.floor() as u64).to_string());
                out.push('\n');
            }
        }
        out
    }

    /// Reads a mahimahi trace, turning each `step` of it into one piece whose rate carries
    /// its delivery opportunities. Blank lines are skipped; the trace's period is its last
    /// time rounded up to a whole step.
    pub fn from_mahimahi(text: &str, step: Duration) -> Result<Self, TraceError> {
        let step = step.max(MIN_STEP);
        let step_ms = step.as_secs_f64() * 1000.0;
        let max_ms = MAX_TRACE.as_millis() as u64;
        let mut counts: Vec<u64> = Vec::new();
        let mut last = 0u64;
        for (i, line) in text.lines().enumerate() {
            let text = line.trim();
            if text.is_empty() {
                continue;
            }
            let ms: u64 = text.parse().map_err(|_| TraceError::NotANumber {
                line: i + 1,
                text: text.chars().take(40).collect(),
            })?;
            if ms < last {
                return Err(TraceError::OutOfOrder { line: i + 1, ms });
            }
            if ms > max_ms {
                return Err(TraceError::TooLong);
            }
            last = ms;
            let k = (ms as f64 / step_ms) as usize;
            if counts.len() <= k {
                counts.resize(k + 1, 0);
            }
            if let Some(c) = counts.get_mut(k) {
                *c += 1;
            }
        }
        if counts.iter().all(|&c| c == 0) {
            return Err(TraceError::Empty);
        }
        let per_packet = (MAHIMAHI_PACKET_BYTES * 8) as f64 / step.as_secs_f64();
        let rates: Vec<u64> = counts
            .iter()
            .map(|&c| (c as f64 * per_packet).round() as u64)
            .collect();
        Ok(Self {
            step,
            rates: Arc::from(rates),
        })
    }
}

/// One draw of N(0, 1) by the Box–Muller transform (two uniform draws, one used).
fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    #[test]
    fn spans_below_a_rate_are_merged_and_say_what_follows() {
        let t = CapacityTrace {
            step: Duration::from_millis(250),
            rates: Arc::from([3_000_000, 100_000, 100_000, 2_000_000, 100_000]),
        };
        let ms = Duration::from_millis;
        assert_eq!(
            t.spans_below(200_000, ms(1500)),
            vec![
                Below {
                    start: ms(250),
                    end: ms(750),
                    rate_after: 2_000_000
                },
                // The last piece, then the trace starts over at 3 Mbit/s.
                Below {
                    start: ms(1000),
                    end: ms(1250),
                    rate_after: 3_000_000
                },
            ]
        );
        assert!(t.spans_below(50_000, ms(1500)).is_empty());
    }

    use super::*;

    #[test]
    fn a_walk_stays_within_its_bounds_fades_and_repeats_with_its_seed() {
        let walk = Walk::cellular();
        let trace = CapacityTrace::random_walk(&walk, 11);
        assert_eq!(trace.period(), walk.length);
        assert_eq!(
            trace,
            CapacityTrace::random_walk(&walk, 11),
            "same seed, same trace"
        );
        assert_ne!(trace, CapacityTrace::random_walk(&walk, 12));
        let fades = trace.rates.iter().filter(|&&r| r == walk.fade_bps).count();
        let walking: Vec<u64> = trace
            .rates
            .iter()
            .copied()
            .filter(|&r| r != walk.fade_bps)
            .collect();
        assert!(walking
            .iter()
            .all(|&r| (walk.min_bps..=walk.max_bps).contains(&r)));
        // Two fades a minute of 0.5–2 s over 10 minutes: about 25 s faded, 100 pieces.
        assert!((20..=400).contains(&fades), "{fades} faded pieces");
        // It moves: the walk reaches both below 1 and above 5 Mbit/s in ten minutes.
        let (lo, hi) = (walking.iter().min(), walking.iter().max());
        assert!(
            lo < Some(&1_000_000) && hi > Some(&5_000_000),
            "{lo:?}–{hi:?}"
        );
        let step = walk.step;
        assert_eq!(trace.rate_at(step * 3 + step / 2), trace.rates[3]);
        assert_eq!(
            trace.rate_at(trace.period() + step),
            trace.rates[1],
            "it repeats"
        );
    }

    #[test]
    fn carrying_bits_crosses_pieces_at_each_pieces_rate() {
        let trace = CapacityTrace {
            step: Duration::from_secs(1),
            rates: Arc::from([1_000_000u64, 250_000]),
        };
        let ms = Duration::from_millis;
        assert_eq!(trace.bits_between(ms(500), ms(1500)), 500_000 + 125_000);
        assert_eq!(trace.bits_between(ms(0), ms(2000)), 1_250_000);
        // From 0.5 s: 500 kbit fill the first piece, the next 125 kbit take half a second.
        assert_eq!(trace.time_to_carry(ms(500), 625_000), ms(1000));
        assert_eq!(trace.time_to_carry(ms(0), 0), Duration::ZERO);
        // It repeats: 2.5 s is the first piece again.
        assert_eq!(trace.time_to_carry(ms(2500), 100_000), ms(100));
    }

    #[test]
    fn a_train_fades_longer_and_deeper() {
        let (cell, train) = (Walk::cellular(), Walk::train());
        let faded = |w: &Walk| {
            CapacityTrace::random_walk(w, 5)
                .rates
                .iter()
                .filter(|&&r| r == w.fade_bps)
                .count()
        };
        assert!(faded(&train) > 2 * faded(&cell));
        assert!(train.fade_bps < cell.fade_bps);
    }

    #[test]
    fn mahimahi_round_trip_keeps_each_pieces_rate() {
        let trace = CapacityTrace::random_walk(
            &Walk {
                length: Duration::from_secs(30),
                ..Walk::cellular()
            },
            3,
        );
        let text = trace.to_mahimahi();
        let back = CapacityTrace::from_mahimahi(&text, trace.step).expect("parses");
        assert_eq!(back.rates.len(), trace.rates.len());
        // A piece carries whole packets: at 250 ms a packet is 48 kbit/s of rate.
        for (k, (&a, &b)) in trace.rates.iter().zip(back.rates.iter()).enumerate() {
            assert!(a.abs_diff(b) <= 48_000, "piece {k}: {a} became {b}");
        }
        assert_eq!(
            CapacityTrace::from_mahimahi("0\n5\n\n9\n", Duration::from_millis(10))
                .map(|t| t.rates.to_vec()),
            Ok(vec![3 * 1_200_000])
        );
    }

    #[test]
    fn bad_trace_files_are_refused_with_the_line() {
        let step = Duration::from_millis(100);
        assert_eq!(
            CapacityTrace::from_mahimahi("1\nfast\n", step),
            Err(TraceError::NotANumber {
                line: 2,
                text: "fast".into()
            })
        );
        assert_eq!(
            CapacityTrace::from_mahimahi("5\n3\n", step),
            Err(TraceError::OutOfOrder { line: 2, ms: 3 })
        );
        assert_eq!(
            CapacityTrace::from_mahimahi("\n", step),
            Err(TraceError::Empty)
        );
        assert_eq!(
            CapacityTrace::from_mahimahi("99999999999\n", step),
            Err(TraceError::TooLong)
        );
    }
}
