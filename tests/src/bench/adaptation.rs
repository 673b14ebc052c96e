//! How an adaptive sender followed its link: from [`RateSample`]s taken every 100 ms on the
//! moving end of a `handover` pair, how long after each handover its video settled at
//! what the new path carries, and the longest time it sent more than the link's capacity.
//! Pure (samples in, figures out), so the unit tests drive it without a network.

use super::forward::{RateSample, RATE_SAMPLE_EVERY};
use super::report::{num, pct, Table, Target};
use super::stats::{exact_summary, Summary};
use serde::Serialize;
use std::time::Duration;

/// Settled: the video rate over [`SETTLE_WINDOW`] within this share of the goal.
pub const SETTLE_TOLERANCE: f64 = 0.2;
/// The video rate is judged over this long (a keyframe every 2 s makes shorter windows lumpy).
pub const SETTLE_WINDOW: Duration = Duration::from_secs(1);
/// Sending above capacity is judged over this long: the link's queue absorbs shorter bursts.
pub const ABOVE_WINDOW: Duration = Duration::from_millis(500);

/// An adaptive sender on a link whose rate falls should be under it within this long:
/// two of its partner's one-second reports, plus the send estimate's own lag.
pub const MAX_ABOVE_CAPACITY_S: f64 = 2.0;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Adaptation {
    /// Handovers onto a path with a capacity limit, and of those, the ones after which
    /// the video rate settled before the next handover (or the end of the window).
    pub handovers_to_limited_paths: usize,
    pub settled: usize,
    /// Seconds from each such handover until the video rate over the last second was
    /// within 20 % of what the sender could use there: the path's capacity, or the
    /// sender's ceiling if that is lower.
    pub settle_s: Summary,
    /// The longest time the sender's media (over 500 ms windows) exceeded its link's
    /// capacity, seconds, over every pair; and the share of the window that did.
    pub longest_above_capacity_s: f64,
    pub above_capacity_pct: Option<f64>,
    /// The same longest time, counting only windows whose link carried at least the sender's
    /// floor: above capacity when the sender could have been under it. (In a fade below the
    /// floor every sender is above capacity for as long as the fade lasts.)
    pub longest_above_capacity_outside_fades_s: f64,
    /// The video target the sender ran at, averaged over the samples, kbit/s.
    pub mean_target_kbps: Option<f64>,
    /// The share of the window in which the link carried less than the sender's floor
    /// (its lowest video rate and its audio): a fade no sender can ride out on time.
    pub below_floor_pct: Option<f64>,
}

/// The rate of `bytes` (bits per second) between samples `i - k` and `i`.
fn rate(samples: &[RateSample], i: usize, k: usize, bytes: fn(&RateSample) -> u64) -> f64 {
    let (a, b) = (&samples[i - k], &samples[i]);
    let secs = (b.at.saturating_sub(a.at)).as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    bytes(b).saturating_sub(bytes(a)) as f64 * 8.0 / secs
}

/// The mean capacity over samples `i - k + 1 ..= i` (`None` if any has no limit).
fn capacity(samples: &[RateSample], i: usize, k: usize) -> Option<f64> {
    let window = &samples[i + 1 - k..=i];
    let sum: Option<u64> = window.iter().map(|s| s.capacity_bps).sum();
    sum.map(|s| s as f64 / window.len() as f64)
}

fn samples_in(d: Duration) -> usize {
    (d.as_millis() / RATE_SAMPLE_EVERY.as_millis()).max(1) as usize
}

/// The figures over every pair's samples. `handovers` are the times (on the samples'
/// clock) the moving end changed networks; `floor_kbps` and `max_kbps` are the least and
/// the most the sender can send.
pub fn analyse(
    pairs: &[Vec<RateSample>],
    handovers: &[Duration],
    floor_kbps: u32,
    max_kbps: u32,
) -> Adaptation {
    let (settle_k, above_k) = (samples_in(SETTLE_WINDOW), samples_in(ABOVE_WINDOW));
    let ceiling = f64::from(max_kbps) * 1000.0;
    let mut a = Adaptation::default();
    let mut settle = Vec::new();
    let (mut above_n, mut judged_n) = (0usize, 0usize);
    let (mut target_sum, mut target_n) = (0.0, 0usize);
    let (mut below_n, mut limited_n) = (0usize, 0usize);
    let floor = u64::from(floor_kbps) * 1000;
    for samples in pairs {
        for s in samples {
            target_sum += f64::from(s.target_kbps);
            target_n += 1;
            if let Some(c) = s.capacity_bps {
                limited_n += 1;
                below_n += usize::from(c < floor);
            }
        }
        // Above capacity, by 500 ms windows, each sample the end of one.
        let (mut run, mut run_outside) = (0usize, 0usize);
        let secs = |n: usize| (n * RATE_SAMPLE_EVERY.as_millis() as usize) as f64 / 1000.0;
        for i in above_k..samples.len() {
            let Some(cap) = capacity(samples, i, above_k) else {
                (run, run_outside) = (0, 0);
                continue;
            };
            judged_n += 1;
            if rate(samples, i, above_k, |s| s.bytes) > cap {
                above_n += 1;
                run += 1;
                a.longest_above_capacity_s = a.longest_above_capacity_s.max(secs(run));
                if cap >= floor as f64 {
                    run_outside += 1;
                    a.longest_above_capacity_outside_fades_s = a
                        .longest_above_capacity_outside_fades_s
                        .max(secs(run_outside));
                } else {
                    run_outside = 0;
                }
            } else {
                (run, run_outside) = (0, 0);
            }
        }
        let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
            continue;
        };
        for (n, &h) in handovers.iter().enumerate() {
            if h < first.at || h + SETTLE_WINDOW > last.at {
                continue;
            }
            let until = handovers.get(n + 1).copied().unwrap_or(last.at);
            // The new path: its capacity just after the handover.
            let Some(after) = samples.iter().position(|s| s.at > h) else {
                continue;
            };
            if samples[after].capacity_bps.is_none() {
                continue;
            }
            a.handovers_to_limited_paths += 1;
            let settled_at = (settle_k..samples.len())
                .filter(|&i| samples[i - settle_k].at >= h && samples[i].at <= until)
                .find(|&i| {
                    let goal = capacity(samples, i, settle_k).map_or(ceiling, |c| c.min(ceiling));
                    let video = rate(samples, i, settle_k, |s| s.video_bytes);
                    (video - goal).abs() <= SETTLE_TOLERANCE * goal
                });
            if let Some(i) = settled_at {
                a.settled += 1;
                settle.push((samples[i].at - h).as_secs_f64());
            }
        }
    }
    a.settle_s = exact_summary(&settle);
    a.above_capacity_pct = (judged_n > 0).then(|| 100.0 * above_n as f64 / judged_n as f64);
    a.mean_target_kbps = (target_n > 0).then(|| target_sum / target_n as f64);
    a.below_floor_pct = (limited_n > 0).then(|| 100.0 * below_n as f64 / limited_n as f64);
    a
}

/// The target: never more than [`MAX_ABOVE_CAPACITY_S`] above the link's capacity.
pub fn above_capacity_target(a: &Adaptation) -> Target {
    Target::at_most(
        "longest time sending above the link's capacity, s",
        MAX_ABOVE_CAPACITY_S,
        Some(a.longest_above_capacity_s),
    )
}

/// One row per labelled run (a network, a profile): settling after handovers, time above
/// the link's capacity, and the mean target. `start` and `ceiling` are the senders' rates.
pub fn table(labelled: &[(String, &Adaptation)], start_kbps: u32, ceiling_kbps: u32) -> Table {
    let mut t = Table::new(
        format!(
            "Adaptation of the shaped end's video (from {start_kbps} kbit/s, ceiling {ceiling_kbps} kbit/s; settled: 1 s within {:.0} % of the new path's capacity)",
            SETTLE_TOLERANCE * 100.0
        ),
        &[
            "network",
            "handovers to limited paths",
            "settled",
            "settle p50 s",
            "settle p95 s",
            "settle max s",
            "longest above capacity s",
            "outside fades s",
            "time above capacity",
            "mean target kbit/s",
            "link below the sender's floor",
        ],
    );
    for (label, a) in labelled {
        t.row(vec![
            label.clone(),
            a.handovers_to_limited_paths.to_string(),
            a.settled.to_string(),
            num(a.settle_s.p50, 2),
            num(a.settle_s.p95, 2),
            num(a.settle_s.max, 2),
            format!("{:.1}", a.longest_above_capacity_s),
            format!("{:.1}", a.longest_above_capacity_outside_fades_s),
            pct(a.above_capacity_pct.map(|p| p / 100.0)),
            num(a.mean_target_kbps, 0),
            pct(a.below_floor_pct.map(|p| p / 100.0)),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples every 100 ms for `secs`, sending `kbps(t)` of video (plus 40 kbit/s of
    /// audio) on a link of `cap(t)` kbit/s.
    fn run(
        secs: f64,
        kbps: impl Fn(f64) -> f64,
        cap: impl Fn(f64) -> Option<f64>,
    ) -> Vec<RateSample> {
        let (mut bytes, mut video) = (0.0, 0.0);
        let mut out = Vec::new();
        for n in 0..=(secs * 10.0) as usize {
            let t = n as f64 / 10.0;
            out.push(RateSample {
                at: Duration::from_secs_f64(t),
                bytes: bytes as u64,
                video_bytes: video as u64,
                target_kbps: kbps(t) as u32,
                capacity_bps: cap(t).map(|c| (c * 1000.0) as u64),
            });
            video += kbps(t) * 1000.0 / 8.0 / 10.0;
            bytes += (kbps(t) + 40.0) * 1000.0 / 8.0 / 10.0;
        }
        out
    }

    #[test]
    fn a_sender_that_steps_down_after_a_handover_settles_when_it_reaches_the_new_capacity() {
        // Wi-Fi (no limit) at 2000 kbit/s until 10 s, then a 1000 kbit/s cell; the sender
        // stays at 2000 for 3 s, then sends 900 (within 20 % of 1000).
        let samples = run(
            20.0,
            |t| if t < 13.0 { 2000.0 } else { 900.0 },
            |t| (t >= 10.0).then_some(1000.0),
        );
        let a = analyse(&[samples], &[Duration::from_secs(10)], 150, 2500);
        assert_eq!((a.handovers_to_limited_paths, a.settled), (1, 1));
        // The first 1 s window within 20 % of 1000: 12.8–13.8 s, a fifth of it still at
        // 2000 (0.2 × 2000 + 0.8 × 900 = 1120).
        let settle = a.settle_s.p50.expect("one settle time");
        assert!((3.7..=3.9).contains(&settle), "{settle}");
        // Above capacity in every 500 ms window ending 10.4 s (the first wholly on the
        // cell) to 13.4 s (the last with some of the 2000 kbit/s in it): 31 samples.
        assert!(
            (3.0..=3.2).contains(&a.longest_above_capacity_s),
            "{}",
            a.longest_above_capacity_s
        );
        assert_eq!(
            a.longest_above_capacity_outside_fades_s, a.longest_above_capacity_s,
            "the cell carried the floor throughout"
        );
        assert!(a.above_capacity_pct.expect("judged") > 20.0);
    }

    #[test]
    fn a_sender_that_never_comes_down_never_settles_and_the_ceiling_caps_the_goal() {
        let samples = run(10.0, |_| 3000.0, |t| (t >= 2.0).then_some(1000.0));
        let a = analyse(
            std::slice::from_ref(&samples),
            &[Duration::from_secs(2)],
            150,
            2500,
        );
        assert_eq!((a.handovers_to_limited_paths, a.settled), (1, 0));
        assert!(a.settle_s.p50.is_none());
        assert!(a.longest_above_capacity_s > 7.0);
        // On a 10 Mbit/s cell, a sender at its 2500 kbit/s ceiling has settled.
        let samples = run(10.0, |_| 2400.0, |t| (t >= 2.0).then_some(10_000.0));
        let a = analyse(&[samples], &[Duration::from_secs(2)], 150, 2500);
        assert_eq!(a.settled, 1);
        assert_eq!(a.longest_above_capacity_s, 0.0);
        assert_eq!(a.above_capacity_pct, Some(0.0));
        // A handover to Wi-Fi (no limit) is not a settle case.
        let samples = run(10.0, |_| 2400.0, |_| None);
        let a = analyse(&[samples], &[Duration::from_secs(2)], 150, 2500);
        assert_eq!(
            (
                a.handovers_to_limited_paths,
                a.above_capacity_pct,
                a.below_floor_pct
            ),
            (0, None, None)
        );
    }

    #[test]
    fn a_fade_below_the_senders_floor_is_counted_as_such() {
        // 2 Mbit/s, with a fade to 100 kbit/s from 4 to 6 s: 20 of the 101 samples.
        let cap = |t: f64| {
            Some(if (4.0..6.0).contains(&t) {
                100.0
            } else {
                2000.0
            })
        };
        let a = analyse(&[run(10.0, |_| 150.0, cap)], &[], 182, 2500);
        let below = a.below_floor_pct.expect("a limited link");
        assert!((19.0..=21.0).contains(&below), "{below}");
        assert!(
            a.longest_above_capacity_s >= 1.5,
            "the floor is above the fade"
        );
        assert_eq!(
            a.longest_above_capacity_outside_fades_s, 0.0,
            "outside the fade the sender was under its link"
        );
    }
}
