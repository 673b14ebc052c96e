//! How results are shown: aligned text tables for the terminal, the same tables as
//! Markdown for `BENCHMARKS.md`, and the target checks ("met" / "MISSED") each scenario
//! prints under its table.

use serde::Serialize;
use std::fmt;

/// A table of already formatted cells. Columns whose cells are all numbers (or `-`) are
/// right-aligned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub title: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: impl Into<String>, headers: &[&str]) -> Self {
        Self {
            title: title.into(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn widths(&self) -> Vec<usize> {
        let mut w: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if i >= w.len() {
                    w.push(0);
                }
                w[i] = w[i].max(cell.chars().count());
            }
        }
        w
    }

    fn numeric(&self, col: usize) -> bool {
        self.rows.iter().all(|r| {
            r.get(col).is_none_or(|c| {
                c == "-"
                    || c.trim_end_matches('%')
                        .trim_end_matches('×')
                        .parse::<f64>()
                        .is_ok()
            })
        })
    }

    /// The table as GitHub Markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let cols = self.widths().len();
        let cell = |r: &Vec<String>, i: usize| r.get(i).cloned().unwrap_or_default();
        out.push_str(&format!(
            "| {} |\n",
            (0..cols)
                .map(|i| cell(&self.headers, i))
                .collect::<Vec<_>>()
                .join(" | ")
        ));
        out.push_str(&format!(
            "|{}|\n",
            (0..cols)
                .map(|i| if self.numeric(i) { "---:" } else { "---" })
                .collect::<Vec<_>>()
                .join("|")
        ));
        for r in &self.rows {
            out.push_str(&format!(
                "| {} |\n",
                (0..cols)
                    .map(|i| cell(r, i))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ));
        }
        out
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.widths();
        if !self.title.is_empty() {
            writeln!(f, "{}", self.title)?;
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: &[String]| -> fmt::Result {
            let mut parts = Vec::new();
            for (i, width) in w.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                parts.push(if self.numeric(i) {
                    format!("{c:>width$}")
                } else {
                    format!("{c:<width$}")
                });
            }
            writeln!(f, "  {}", parts.join("  ").trim_end())
        };
        line(f, &self.headers)?;
        let rule: Vec<String> = w.iter().map(|n| "-".repeat(*n)).collect();
        writeln!(f, "  {}", rule.join("  "))?;
        for r in &self.rows {
            line(f, r)?;
        }
        Ok(())
    }
}

/// A number for a table cell: `-` when absent, else with `decimals` decimals.
pub fn num(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "-".into(),
    }
}

/// A ratio (0 to 1) as a percentage cell.
pub fn pct(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{:.2}%", v * 100.0),
        _ => "-".into(),
    }
}

/// Whether a bound is an upper or a lower one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    AtMost,
    AtLeast,
}

/// One target of the issue, checked against one measured figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    pub name: String,
    pub bound: Bound,
    pub limit: f64,
    pub measured: Option<f64>,
    /// `None` when the figure could not be measured.
    pub met: Option<bool>,
}

impl Target {
    pub fn at_most(name: impl Into<String>, limit: f64, measured: Option<f64>) -> Self {
        Self::new(name, Bound::AtMost, limit, measured)
    }

    pub fn at_least(name: impl Into<String>, limit: f64, measured: Option<f64>) -> Self {
        Self::new(name, Bound::AtLeast, limit, measured)
    }

    fn new(name: impl Into<String>, bound: Bound, limit: f64, measured: Option<f64>) -> Self {
        let met = measured.filter(|m| m.is_finite()).map(|m| match bound {
            Bound::AtMost => m <= limit,
            Bound::AtLeast => m >= limit,
        });
        Self {
            name: name.into(),
            bound,
            limit,
            measured,
            met,
        }
    }
}

/// The targets as a table.
pub fn targets_table(targets: &[Target]) -> Table {
    let mut t = Table::new("Targets", &["target", "limit", "measured", "result"]);
    for x in targets {
        let op = match x.bound {
            Bound::AtMost => "≤",
            Bound::AtLeast => "≥",
        };
        t.row(vec![
            x.name.clone(),
            format!("{op} {}", x.limit),
            num(x.measured, 3),
            match x.met {
                Some(true) => "met".into(),
                Some(false) => "MISSED".into(),
                None => "not measured".into(),
            },
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new("T", &["name", "p50 ms"]);
        t.row(vec!["relay".into(), "1.25".into()]);
        t.row(vec!["floor".into(), "-".into()]);
        t
    }

    #[test]
    fn text_table_aligns_numbers_right() {
        let text = sample().to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "T");
        assert_eq!(lines[1], "  name   p50 ms");
        assert_eq!(lines[2], "  -----  ------");
        assert_eq!(lines[3], "  relay    1.25");
        assert_eq!(lines[4], "  floor       -");
    }

    #[test]
    fn markdown_table_marks_numeric_columns() {
        let md = sample().markdown();
        assert_eq!(
            md,
            "| name | p50 ms |\n|---|---:|\n| relay | 1.25 |\n| floor | - |\n"
        );
    }

    #[test]
    fn targets_are_judged_by_their_bound() {
        assert_eq!(Target::at_most("p99", 2.0, Some(1.5)).met, Some(true));
        assert_eq!(Target::at_most("p99", 2.0, Some(2.5)).met, Some(false));
        assert_eq!(
            Target::at_least("delivered", 0.999, Some(0.9995)).met,
            Some(true)
        );
        assert_eq!(Target::at_least("delivered", 0.999, None).met, None);
        let t = targets_table(&[Target::at_most("p99", 2.0, Some(2.5))]).to_string();
        assert!(t.contains("MISSED"), "{t}");
    }

    #[test]
    fn cells_format() {
        assert_eq!(num(Some(1.23456), 2), "1.23");
        assert_eq!(num(None, 2), "-");
        assert_eq!(pct(Some(0.99912)), "99.91%");
    }
}
