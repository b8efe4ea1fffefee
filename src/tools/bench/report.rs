//! The bench's figures and how they are printed: a table for people, one
//! JSON object per line for scripts. Every rate measured against the echo
//! carries the echo's rate from the same run and the ratio of the two.

use std::fmt::Write as _;

/// One measured figure.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Figure {
    /// A stable name for scripts, e.g. `send.c16.rate`.
    pub key: String,
    /// What a person reads in the table.
    pub label: String,
    pub value: f64,
    pub unit: &'static str,
    /// The echo's rate this figure is compared with, measured in the same run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
}

/// What a run measured, in the order it was measured, and what the reader
/// must know about it (reduced counts, phases that could not run).
#[derive(Debug, Default)]
pub struct Report {
    pub figures: Vec<Figure>,
    pub notes: Vec<String>,
}

impl Report {
    /// A figure not compared with the echo.
    pub fn add(
        &mut self,
        key: impl Into<String>,
        label: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) {
        self.figures.push(Figure {
            key: key.into(),
            label: label.into(),
            value,
            unit,
            echo: None,
            ratio: None,
        });
    }

    /// A rate, with the echo's rate it is compared with.
    pub fn rate(
        &mut self,
        key: impl Into<String>,
        label: impl Into<String>,
        value: f64,
        echo: f64,
    ) {
        let ratio = (echo > 0.0).then(|| value / echo);
        self.figures.push(Figure {
            key: key.into(),
            label: label.into(),
            value,
            unit: "per s",
            echo: Some(echo),
            ratio,
        });
    }

    /// The p50 and p99 of `samples` as `<key>.p50` and `<key>.p99`, each
    /// converted by `value` into `unit`; nothing when there are none.
    pub fn percentiles(
        &mut self,
        key: &str,
        label: &str,
        samples: &[std::time::Duration],
        unit: &'static str,
        value: impl Fn(std::time::Duration) -> f64,
    ) {
        for (p, name) in [(50.0, "p50"), (99.0, "p99")] {
            if let Some(d) = percentile(samples, p) {
                self.add(
                    format!("{key}.{name}"),
                    format!("{label} {name}"),
                    value(d),
                    unit,
                );
            }
        }
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn get(&self, key: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.key == key)
    }

    /// The table, with the notes under it.
    pub fn table(&self) -> String {
        let width = self
            .figures
            .iter()
            .map(|f| f.label.chars().count())
            .max()
            .unwrap_or(0)
            .max(4);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<width$}  {:>12}  {:<6}  {:>12}  {:>7}",
            "what", "value", "unit", "echo", "ratio"
        );
        let _ = writeln!(out, "{}", "-".repeat(width + 45));
        for f in &self.figures {
            let echo = f.echo.map(number).unwrap_or_default();
            let ratio = f.ratio.map(|r| format!("{r:.3}")).unwrap_or_default();
            let _ = writeln!(
                out,
                "{:<width$}  {:>12}  {:<6}  {:>12}  {:>7}",
                f.label,
                number(f.value),
                f.unit,
                echo,
                ratio
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }

    /// One JSON object per figure, then one per note.
    pub fn json_lines(&self) -> String {
        let mut out = String::new();
        for f in &self.figures {
            if let Ok(line) = serde_json::to_string(f) {
                let _ = writeln!(out, "{line}");
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "{}", serde_json::json!({ "note": n }));
        }
        out
    }
}

/// A number with as many decimals as its size deserves.
fn number(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// Percentile `p` (0–100) of `samples`, nearest rank; None when empty.
pub fn percentile(samples: &[std::time::Duration], p: f64) -> Option<std::time::Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_unstable();
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s.get(rank.saturating_sub(1).min(s.len() - 1)).copied()
}

/// Milliseconds, as a float.
pub fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
