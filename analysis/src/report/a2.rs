//! The report's A-2 section: the load per replica for N = 2..6 and its spread.

use std::fmt::Write as _;

use super::common::{image, pct};
use crate::experiments::Measurement;
use crate::figures::Figures;
use crate::stats;

fn spread_table(md: &mut String, points: &[Measurement]) {
    let _ = writeln!(md, "| N | average | busiest | least busy | max/avg | CV | failed |\n|---|---|---|---|---|---|---|");
    for m in points {
        if let Some(s) = m.spread {
            let _ = writeln!(
                md,
                "| {} | {:.1} | {:.0} | {:.0} | {:.2} | {:.2} | {} |",
                m.n,
                s.avg,
                s.max,
                s.min,
                s.max_over_avg,
                s.cv,
                m.failures()
            );
        }
    }
    md.push('\n');
}

pub(super) fn a2_section(md: &mut String, a2: &crate::experiments::a2::A2, figures: &Figures) {
    let _ = writeln!(md, "## A-2: N = 2..6\n");
    let _ = writeln!(
        md,
        "N changed with `DELETE /rm` and `POST /add` (server ids always 1..N), then the same number of requests at \
         each N, hash `{}`.\n",
        a2.hash
    );
    image(md, "A-2: load per replica", &figures.a2_load);
    image(md, "A-2: spread", &figures.a2_spread);
    spread_table(md, &a2.points);
    let with: Vec<(&Measurement, stats::Spread)> = a2
        .points
        .iter()
        .filter_map(|m| Some((m, m.spread?)))
        .collect();
    if let (Some((first, fs)), Some((last, ls))) = (with.first(), with.last()) {
        let avgs: Vec<String> = with
            .iter()
            .map(|(m, s)| format!("{:.0} at N = {}", s.avg, m.n))
            .collect();
        let _ = writeln!(
            md,
            "- The average load per replica is the answered requests divided by N: {}.",
            avgs.join(", ")
        );
        let (worst_m, worst) = with
            .iter()
            .max_by(|a, b| a.1.max_over_avg.total_cmp(&b.1.max_over_avg))
            .map(|(m, s)| (*m, *s))
            .unwrap_or((first, *fs));
        let (best_m, best) = with
            .iter()
            .min_by(|a, b| a.1.max_over_avg.total_cmp(&b.1.max_over_avg))
            .map(|(m, s)| (*m, *s))
            .unwrap_or((first, *fs));
        let _ = writeln!(
            md,
            "- The spread {} from max/avg {:.2} (CV {:.2}) at N = {} to {:.2} (CV {:.2}) at N = {}; it is worst at N = {} \
             ({:.2}, out of a possible {}) and best at N = {} ({:.2}).",
            if ls.cv > fs.cv { "grows" } else if ls.cv < fs.cv { "shrinks" } else { "stays" },
            fs.max_over_avg,
            fs.cv,
            first.n,
            ls.max_over_avg,
            ls.cv,
            last.n,
            worst_m.n,
            worst.max_over_avg,
            worst_m.n,
            best_m.n,
            best.max_over_avg
        );
        if let Some(top) = last.replicas.iter().max_by_key(|r| r.requests) {
            let starved = last
                .replicas
                .iter()
                .filter(|r| (r.requests as f64) < ls.avg * 0.25)
                .count();
            let _ = writeln!(
                md,
                "- At N = {}, {} served {} of the requests; {} of the {} replicas got less than a quarter of their fair share.",
                last.n,
                top.hostname,
                pct(top.requests as f64 / last.served().max(1) as f64),
                starved,
                last.n
            );
        }
        let failed: u64 = a2.points.iter().map(Measurement::failures).sum();
        let sent: u64 = a2.points.iter().map(|m| m.sent).sum();
        let _ = writeln!(
            md,
            "- {failed} of {sent} requests failed across the five measurements."
        );
    }
    md.push('\n');
}
