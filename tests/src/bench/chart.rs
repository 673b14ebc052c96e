//! Hand-written SVG line charts for `BENCHMARKS.md`: no plotting dependency, a stable
//! text output that diffs well when the figures are committed.
//!
//! Two charts use it: latency distribution per network profile (latency against
//! percentile, log scale for latency) and relay CPU per forwarded datagram against load.

use std::fmt::Write;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// One line on a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// How an axis maps values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    Linear,
    Log10,
    /// Percentiles on a "nines" scale: 50, 90, 99, 99.9 are evenly spaced.
    Nines,
}

impl Scale {
    fn map(self, v: f64) -> f64 {
        match self {
            Scale::Linear => v,
            Scale::Log10 => v.max(1e-6).log10(),
            Scale::Nines => -(1.0 - (v / 100.0).min(0.9999)).log10(),
        }
    }

    fn ticks(self, lo: f64, hi: f64) -> Vec<f64> {
        match self {
            Scale::Nines => [0.0, 50.0, 90.0, 99.0, 99.9]
                .into_iter()
                .filter(|t| *t >= lo - 1e-9 && *t <= hi + 1e-9)
                .collect(),
            Scale::Log10 => {
                let (a, b) = (
                    lo.max(1e-6).log10().floor() as i32,
                    hi.max(1e-6).log10().ceil() as i32,
                );
                (a..=b).map(|e| 10f64.powi(e)).collect()
            }
            Scale::Linear => {
                let span = (hi - lo).max(1e-9);
                let raw = span / 5.0;
                let mag = 10f64.powf(raw.log10().floor());
                let step = [1.0, 2.0, 5.0, 10.0]
                    .into_iter()
                    .map(|m| m * mag)
                    .find(|s| *s >= raw)
                    .unwrap_or(raw);
                let first = (lo / step).ceil() * step;
                (0..=20)
                    .map(|i| first + step * f64::from(i))
                    .take_while(|t| *t <= hi + step * 1e-6)
                    .collect()
            }
        }
    }
}

/// A chart's labels and scales.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_scale: Scale,
    pub y_scale: Scale,
    /// Force zero into a linear y axis (costs read better from zero).
    pub y_from_zero: bool,
}

fn label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 || (v.fract() == 0.0 && v.abs() >= 1.0) {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').to_string()
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Chart {
    /// The chart as a standalone SVG document.
    pub fn svg(&self, series: &[Series]) -> String {
        let all: Vec<(f64, f64)> = series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for (x, y) in &all {
            x0 = x0.min(*x);
            x1 = x1.max(*x);
            y0 = y0.min(*y);
            y1 = y1.max(*y);
        }
        if all.is_empty() {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if self.y_from_zero && self.y_scale == Scale::Linear {
            y0 = y0.min(0.0);
        }
        if self.y_scale == Scale::Log10 {
            y0 = 10f64.powf(y0.max(1e-6).log10().floor());
            y1 = 10f64.powf(y1.max(1e-6).log10().ceil());
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        if y1 <= y0 {
            y1 = y0 + 1.0;
        }
        let (mx0, mx1) = (self.x_scale.map(x0), self.x_scale.map(x1));
        let (my0, my1) = (self.y_scale.map(y0), self.y_scale.map(y1));
        let pw = WIDTH - LEFT - RIGHT;
        let ph = HEIGHT - TOP - BOTTOM;
        let px = |x: f64| LEFT + (self.x_scale.map(x) - mx0) / (mx1 - mx0).max(1e-12) * pw;
        let py = |y: f64| TOP + ph - (self.y_scale.map(y) - my0) / (my1 - my0).max(1e-12) * ph;

        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
            LEFT + pw / 2.0,
            escape(&self.title)
        );
        for t in self.y_scale.ticks(y0, y1) {
            let y = py(t);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                y + 4.0,
                label(t)
            );
        }
        for t in self.x_scale.ticks(x0, x1) {
            let x = px(t);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                TOP + ph,
                TOP + ph + 16.0,
                label(t)
            );
        }
        let _ = writeln!(
            s,
            r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            HEIGHT - 12.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"#,
            TOP + ph / 2.0,
            TOP + ph / 2.0,
            escape(&self.y_label)
        );
        for (i, series) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let pts: Vec<String> = series
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                pts.join(" ")
            );
            for p in &pts {
                if let Some((x, y)) = p.split_once(',') {
                    let _ = writeln!(s, r#"<circle cx="{x}" cy="{y}" r="2.5" fill="{color}"/>"#);
                }
            }
            let ly = TOP + 10.0 + 20.0 * i as f64;
            let lx = LEFT + pw + 12.0;
            let _ = writeln!(
                s,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
                lx + 18.0,
                lx + 24.0,
                ly + 4.0,
                escape(&series.name)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_series_and_escapes_labels() {
        let chart = Chart {
            title: "CPU <per> datagram".into(),
            x_label: "pairs".into(),
            y_label: "µs".into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            y_from_zero: true,
        };
        let svg = chart.svg(&[
            Series {
                name: "relay".into(),
                points: vec![(10.0, 12.0), (100.0, 15.0)],
            },
            Series {
                name: "floor".into(),
                points: vec![(10.0, 4.0), (100.0, f64::NAN)],
            },
        ]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("CPU &lt;per&gt; datagram"));
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn scales_and_ticks() {
        assert!((Scale::Nines.map(99.0) - 2.0).abs() < 1e-9);
        assert_eq!(
            Scale::Log10.ticks(0.5, 120.0),
            vec![0.1, 1.0, 10.0, 100.0, 1000.0]
        );
        assert_eq!(
            Scale::Linear.ticks(0.0, 10.0),
            vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
        );
        assert_eq!(
            Scale::Nines.ticks(0.0, 100.0),
            vec![0.0, 50.0, 90.0, 99.0, 99.9]
        );
        let empty = Chart {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            x_scale: Scale::Nines,
            y_scale: Scale::Log10,
            y_from_zero: false,
        };
        assert!(empty.svg(&[]).contains("</svg>"));
    }
}
