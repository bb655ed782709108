//! Formatting the report's sections share: percentages, images, table cells, milliseconds,
//! and the offline prediction of A-1's and A-4's shares. A leaf: it imports no section.

use std::fmt::Write as _;

use crate::experiments::a4::A4;
use crate::experiments::Measurement;
use crate::stats;

pub(super) fn pct(x: f64) -> String {
    format!("{:.1} %", x * 100.0)
}

pub(super) fn image(md: &mut String, alt: &str, files: &Option<[String; 2]>) {
    if let Some([png, svg]) = files {
        let _ = writeln!(md, "![{alt}]({png})\n\n([SVG]({svg}))\n");
    }
}

/// The offline id shares for `hash` at `n` replicas, by server id.
pub(super) fn predicted(a4: Option<&A4>, hash: &str, n: usize) -> Option<Vec<(u64, f64)>> {
    let h = a4?.offline.hashes.iter().find(|h| h.name == hash)?;
    let s = h.shares.iter().find(|s| s.n == n as u64)?;
    Some(s.replicas.iter().map(|r| (r.id, r.id_share)).collect())
}

/// Largest difference, in percentage points, between measured and predicted shares.
pub(super) fn deviation(m: &Measurement, predicted: &[(u64, f64)]) -> Option<f64> {
    let served = m.served();
    if served == 0 {
        return None;
    }
    predicted
        .iter()
        .map(|&(id, share)| {
            let got = m
                .replicas
                .iter()
                .find(|r| r.id == Some(id))
                .map_or(0, |r| r.requests);
            (got as f64 / served as f64 - share).abs() * 100.0
        })
        .reduce(f64::max)
}

pub(super) fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

pub(super) fn opt_ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.0} ms"))
}

pub(super) fn ms(summary: Option<stats::Summary>, f: impl Fn(&stats::Summary) -> f64) -> String {
    summary.map_or("–".into(), |s| format!("{:.0} ms", f(&s)))
}
