//! The report's A-1 section: one measurement at N = 3, its spread, and how far it is from the
//! offline prediction.

use std::fmt::Write as _;

use super::common::{deviation, image, pct, predicted};
use crate::experiments::a4::A4;
use crate::experiments::Measurement;
use crate::figures::Figures;

fn failures_text(m: &Measurement) -> String {
    if m.failures() == 0 {
        format!("All {} requests were answered with 200", m.sent)
    } else {
        let kinds: Vec<String> = m.failed.iter().map(|(k, n)| format!("{n} × {k}")).collect();
        format!(
            "{} of {} requests failed ({})",
            m.failures(),
            m.sent,
            kinds.join(", ")
        )
    }
}

fn unsent(m: &Measurement) -> String {
    if m.sent < m.planned {
        format!(
            " Only {} of {} planned requests were sent before the time limit.",
            m.sent, m.planned
        )
    } else {
        String::new()
    }
}

pub(super) fn a1_section(
    md: &mut String,
    m: &Measurement,
    figures: &Figures,
    a4: Option<&A4>,
    concurrency: usize,
) {
    let _ = writeln!(md, "## A-1: {} requests, N = {}\n", m.sent, m.n);
    let _ = writeln!(
        md,
        "`GET /home` with random 6-digit `X-Request-Id`s, {concurrency} in flight at a time, hash `{}`; each \
         answer's `Hello from Server: <ID>` counted.\n",
        m.hash
    );
    image(md, "A-1: requests per replica", &figures.a1);
    let served = m.served().max(1) as f64;
    let _ = writeln!(
        md,
        "| replica | server id | requests | share |\n|---|---|---|---|"
    );
    for r in &m.replicas {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            r.hostname,
            r.id.map_or("–".into(), |i| i.to_string()),
            r.requests,
            pct(r.requests as f64 / served)
        );
    }
    md.push('\n');
    let mut sorted = m.replicas.clone();
    sorted.sort_by_key(|r| std::cmp::Reverse(r.requests));
    if let (Some(top), Some(low), Some(s)) = (sorted.first(), sorted.last(), m.spread) {
        let _ = writeln!(
            md,
            "- **{}** served {} of {} answered requests ({}), {:.2}× its fair share of {:.0}; **{}** served the \
             fewest, {} ({}).",
            top.hostname,
            top.requests,
            m.served(),
            pct(top.requests as f64 / served),
            top.requests as f64 / s.avg,
            s.avg,
            low.hostname,
            low.requests,
            pct(low.requests as f64 / served)
        );
        let _ = writeln!(md, "- Spread: max/avg = {:.2}, coefficient of variation = {:.2} (0 would be a perfect split).", s.max_over_avg, s.cv);
    }
    let _ = writeln!(
        md,
        "- {}; {:.0} requests/s over {:.1} s.{}",
        failures_text(m),
        m.throughput(),
        m.elapsed_ms / 1000.0,
        unsent(m)
    );
    if let Some(p) = predicted(a4, &m.hash, m.n) {
        let shares: Vec<String> = p
            .iter()
            .map(|(id, s)| format!("id {id}: {}", pct(*s)))
            .collect();
        if let Some(d) = deviation(m, &p) {
            let _ = writeln!(
                md,
                "- The ring itself (offline, over all 900 000 six-digit ids) gives {}; the measured shares are within \
                 {:.1} percentage points of that.",
                shares.join(", "),
                d
            );
        }
    }
    md.push('\n');
}
