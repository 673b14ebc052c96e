//! Latency and count aggregation for the benchmark: a fixed-size histogram per measurement
//! and the summaries (percentiles, ratios) the tables and the JSON report carry.
//!
//! Everything here is pure and allocation-free once built, so the receive path can record
//! a sample per frame without touching the allocator.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest value a histogram records, in microseconds: ten minutes. Anything longer is an
/// outage, not a latency, and is clamped so that it still shows in `max`.
const MAX_RECORDABLE_US: u64 = 600_000_000;

/// Percentiles the latency distribution chart plots, as quantiles.
pub const CDF_QUANTILES: [f64; 12] = [
    0.0, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.98, 0.99, 0.995, 0.999, 1.0,
];

/// A latency histogram in microseconds: 1 µs to ten minutes at three significant figures,
/// about 40 KB whatever is recorded.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    hist: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> Self {
        // `new_with_bounds` only fails for low < 1, high < 2 × low or sigfig > 5, and these
        // are constants that are none of those.
        let hist = Histogram::new_with_bounds(1, MAX_RECORDABLE_US, 3)
            .expect("constant histogram bounds are valid");
        Self { hist }
    }

    /// Records one sample, clamped into the histogram's range.
    pub fn record_us(&mut self, us: u64) {
        let _ = self.hist.record(us.clamp(1, MAX_RECORDABLE_US));
    }

    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        let _ = self.hist.add(&other.hist);
    }

    /// The value at quantile `q` (0 to 1) in milliseconds, `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.hist.is_empty() {
            return None;
        }
        let us = if q >= 1.0 {
            self.hist.max()
        } else if q <= 0.0 {
            self.hist.min()
        } else {
            self.hist.value_at_quantile(q)
        };
        Some(round3(us as f64 / 1000.0))
    }

    pub fn summary(&self) -> Summary {
        Summary {
            p50: self.quantile_ms(0.50),
            p95: self.quantile_ms(0.95),
            p99: self.quantile_ms(0.99),
            max: self.quantile_ms(1.0),
            count: self.len(),
        }
    }

    /// `(percentile, milliseconds)` at each of [`CDF_QUANTILES`]: what the charts plot.
    pub fn cdf(&self) -> Vec<(f64, f64)> {
        CDF_QUANTILES
            .iter()
            .filter_map(|q| self.quantile_ms(*q).map(|ms| (round3(q * 100.0), ms)))
            .collect()
    }
}

/// Percentiles of one distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub count: u64,
}

/// `num / den`, `None` when there is nothing to divide by.
pub fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0 && num.is_finite() && den.is_finite()).then(|| num / den)
}

/// Rounds to three decimals: the JSON and the tables show no more, and repeated runs diff
/// cleanly.
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Rounds to `digits` significant digits (for per-datagram costs spanning decades).
pub fn round_sig(v: f64, digits: i32) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let scale = 10f64.powi(digits - 1 - v.abs().log10().floor() as i32);
    (v * scale).round() / scale
}

/// Percentiles of a small set of values (per-handover gaps, per-client times), exact:
/// nearest-rank on the sorted values, in the values' own unit.
pub fn exact_summary(values: &[f64]) -> Summary {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| -> Option<f64> {
        if v.is_empty() {
            return None;
        }
        // Nearest rank: the smallest value with at least q of the samples at or below it.
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v.get(rank - 1).copied().map(round3)
    };
    Summary {
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
        max: v.last().copied().map(round3),
        count: v.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_are_in_milliseconds() {
        let mut h = LatencyHistogram::new();
        assert_eq!(h.summary().p50, None);
        for us in 1..=1000u64 {
            h.record_us(us * 10); // 10 µs .. 10 ms, uniform
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        let p50 = s.p50.expect("p50");
        assert!((p50 - 5.0).abs() < 0.01, "{p50}");
        let p99 = s.p99.expect("p99");
        assert!((p99 - 9.9).abs() < 0.02, "{p99}");
        assert!((s.max.expect("max") - 10.0).abs() < 0.01);
    }

    #[test]
    fn out_of_range_samples_are_clamped_not_lost() {
        let mut h = LatencyHistogram::new();
        h.record_us(0);
        h.record_us(u64::MAX);
        assert_eq!(h.len(), 2);
        assert!(h.quantile_ms(1.0).expect("max") >= 599_000.0);
    }

    #[test]
    fn merging_adds_samples_and_cdf_is_monotonic() {
        let (mut a, mut b) = (LatencyHistogram::new(), LatencyHistogram::new());
        (1..=100).for_each(|i| a.record_us(i * 100));
        (1..=100).for_each(|i| b.record_us(i * 1000));
        a.merge(&b);
        assert_eq!(a.len(), 200);
        let cdf = a.cdf();
        assert_eq!(cdf.len(), CDF_QUANTILES.len());
        assert!(cdf.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(cdf.last().map(|p| p.0), Some(100.0));
    }

    #[test]
    fn exact_summary_uses_nearest_rank() {
        let s = exact_summary(&[5.0, 1.0, 3.0, 2.0, 4.0, f64::NAN]);
        assert_eq!(s.count, 5);
        assert_eq!(s.p50, Some(3.0));
        assert_eq!(s.p95, Some(5.0));
        assert_eq!(s.max, Some(5.0));
        assert_eq!(exact_summary(&[]).p50, None);
    }

    #[test]
    fn ratios_and_rounding() {
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
        assert_eq!(round3(1.23456), 1.235);
        assert_eq!(round_sig(0.000123456, 3), 0.000123);
        assert_eq!(round_sig(123456.0, 2), 120000.0);
    }
}
