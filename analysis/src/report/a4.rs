//! The report's A-4 section: again per hash, and the offline shares and moves.

use std::fmt::Write as _;

use super::common::{deviation, image, pct, predicted};
use crate::experiments::a4::A4;
use crate::experiments::offline::HashOffline;
use crate::experiments::Measurement;
use crate::figures::Figures;
use crate::stats;

fn mean_spread(points: &[Measurement], f: fn(&stats::Spread) -> f64) -> f64 {
    stats::mean(
        &points
            .iter()
            .filter_map(|m| m.spread.as_ref().map(f))
            .collect::<Vec<_>>(),
    )
}

fn offline_table(md: &mut String, hashes: &[HashOffline]) {
    let _ = writeln!(
        md,
        "| hash | slot share busiest/fair, N = 2..6 | id share busiest/fair, N = 2..6 | ids moved adding N → N+1 (ideal 1/(N+1)) | ids moved removing one of N, worst choice (ideal 1/N) | extra moves on removal, max |\n|---|---|---|---|---|---|"
    );
    for h in hashes {
        let slot: Vec<String> = h
            .shares
            .iter()
            .filter_map(|s| Some(format!("{:.2}", s.slot_spread?.max_over_avg)))
            .collect();
        let ids: Vec<String> = h
            .shares
            .iter()
            .filter_map(|s| Some(format!("{:.2}", s.id_spread?.max_over_avg)))
            .collect();
        let adds: Vec<String> = h
            .adds
            .iter()
            .map(|m| format!("{:.3} ({:.3})", m.moved, m.ideal))
            .collect();
        let rms: Vec<String> = crate::experiments::offline::COUNTS
            .filter_map(|n| {
                Some(format!(
                    "{:.3} ({:.3})",
                    h.worst_removal(n)?.moved,
                    1.0 / n as f64
                ))
            })
            .collect();
        let excess = h.removes.iter().map(|m| m.excess()).fold(0.0, f64::max);
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | {} | {} |",
            h.name,
            slot.join(" / "),
            ids.join(" / "),
            adds.join(" / "),
            rms.join(" / "),
            pct(excess)
        );
    }
    md.push('\n');
}

pub(super) fn a4_section(md: &mut String, a4: &A4, figures: &Figures) {
    let _ = writeln!(md, "## A-4: other hash functions\n");
    if let Some(why) = &a4.live_skipped {
        let _ = writeln!(md, "The live part was skipped: {why}.\n");
    }
    if !a4.skipped.is_empty() {
        let list: Vec<String> = a4
            .skipped
            .iter()
            .map(|s| format!("`{}` ({})", s.name, s.reason))
            .collect();
        let _ = writeln!(md, "Skipped: {}.\n", list.join("; "));
    }
    if !a4.runs.is_empty() {
        let names: Vec<String> = a4.runs.iter().map(|r| format!("`{}`", r.name)).collect();
        let _ = writeln!(
            md,
            "Each hash was switched live by rewriting `[ring] hash` in the load balancer's `lb.toml` and waiting until \
             `/_lb/ring` showed it, then A-1 and A-2 were repeated with the same request ids: {}.\n",
            names.join(", ")
        );
        image(md, "A-4: A-1 per hash", &figures.a4_a1);
        image(md, "A-4: A-2 spread per hash", &figures.a4_a2);
        let _ = writeln!(
            md,
            "| hash | switch (ms) | A-1: server ids 1 / 2 / 3 | A-1 max/avg | A-1 CV | A-2 max/avg, N = 2..6 | A-2 CV, N = 2..6 | failed |\n|---|---|---|---|---|---|---|---|"
        );
        for r in &a4.runs {
            let counts: Vec<String> =
                r.a1.replicas
                    .iter()
                    .map(|x| x.requests.to_string())
                    .collect();
            let (mo, cv) = r.a1.spread.map_or((0.0, 0.0), |s| (s.max_over_avg, s.cv));
            let a2mo: Vec<String> =
                r.a2.points
                    .iter()
                    .filter_map(|m| Some(format!("{:.2}", m.spread?.max_over_avg)))
                    .collect();
            let a2cv: Vec<String> =
                r.a2.points
                    .iter()
                    .filter_map(|m| Some(format!("{:.2}", m.spread?.cv)))
                    .collect();
            let failed: u64 =
                r.a1.failures() + r.a2.points.iter().map(Measurement::failures).sum::<u64>();
            let _ = writeln!(
                md,
                "| `{}` | {:.0} | {} | {:.2} | {:.2} | {} | {} | {} |",
                r.name,
                r.switch_ms,
                counts.join(" / "),
                mo,
                cv,
                a2mo.join(" / "),
                a2cv.join(" / "),
                failed
            );
        }
        md.push('\n');
        let mut ranked: Vec<(&str, f64, f64)> = a4
            .runs
            .iter()
            .map(|r| {
                let mut all = vec![r.a1.clone()];
                all.extend(r.a2.points.iter().cloned());
                (
                    r.name.as_str(),
                    mean_spread(&all, |s| s.cv),
                    mean_spread(&all, |s| s.max_over_avg),
                )
            })
            .collect();
        ranked.sort_by(|a, b| a.1.total_cmp(&b.1));
        let order: Vec<String> = ranked
            .iter()
            .map(|(n, cv, mo)| format!("`{n}` (CV {cv:.2}, max/avg {mo:.2})"))
            .collect();
        let _ = writeln!(md, "- Ranked by mean coefficient of variation over A-1 and the five A-2 measurements, best first: {}.", order.join(", "));
        if let (Some(best), Some(worst)) = (ranked.first(), ranked.last()) {
            let _ = writeln!(
                md,
                "- **`{}` balances best**: its busiest replica gets on average {:.2}× the fair share, against {:.2}× for `{}`.",
                best.0, best.2, worst.2, worst.0
            );
        }
        if let Some(spec) = ranked.iter().find(|r| r.0 == "spec") {
            let better = ranked.iter().filter(|r| r.1 < spec.1).count();
            let _ = writeln!(md, "- {better} of the other {} hashes spread the load more evenly than the assignment's `spec` functions.", ranked.len() - 1);
        }
        let worst_dev = a4
            .runs
            .iter()
            .filter_map(|r| {
                Some((
                    r.name.as_str(),
                    deviation(&r.a1, &predicted(Some(a4), &r.name, r.a1.n)?)?,
                ))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((name, d)) = worst_dev {
            let sent = a4.runs[0].a1.sent.max(1) as f64;
            let noise = 200.0 * ((1.0 / 3.0) * (2.0 / 3.0) / sent).sqrt();
            let _ = writeln!(
                md,
                "- The measured A-1 shares differ from the ring's offline prediction by at most {d:.1} percentage points \
                 (largest for `{name}`); with {sent:.0} requests, two standard errors of a one-third share are \
                 {noise:.1} points."
            );
        }
        md.push('\n');
    }
    let off = &a4.offline;
    if !off.hashes.is_empty() {
        let _ = writeln!(md, "### Offline: the ring itself\n");
        let _ = writeln!(
            md,
            "Computed with the `lb-balance` library (`ring::build`, M = {}, K = {}, {} probing, server ids 1..N), over every \
             6-digit request id 100000..=999999. *Moved* is the fraction of those ids served by a different replica \
             after the change; *extra* is the part of it that did not have to move (ids whose old and new replica both \
             stayed).\n",
            off.slots, off.virtual_nodes, off.probing
        );
        image(md, "A-4 offline: shares and moves", &figures.a4_offline);
        offline_table(md, &off.hashes);
        let add_gap = |h: &HashOffline| {
            stats::mean(
                &h.adds
                    .iter()
                    .map(|m| (m.moved - m.ideal).abs())
                    .collect::<Vec<_>>(),
            )
        };
        let mut by_gap: Vec<(&str, f64)> = off
            .hashes
            .iter()
            .map(|h| (h.name.as_str(), add_gap(h)))
            .collect();
        by_gap.sort_by(|a, b| a.1.total_cmp(&b.1));
        if let (Some(best), Some(worst)) = (by_gap.first(), by_gap.last()) {
            let _ = writeln!(
                md,
                "- Adding a replica: `{}` moves closest to the ideal 1/(N+1) (mean gap {:.3}), `{}` farthest ({:.3}).",
                best.0, best.1, worst.0, worst.1
            );
        }
        let add_extra = off
            .hashes
            .iter()
            .flat_map(|h| h.adds.iter())
            .map(|m| m.excess())
            .fold(0.0, f64::max);
        let _ = writeln!(
            md,
            "- The largest extra move when adding a replica is {} of the ids{}.",
            pct(add_extra),
            if add_extra < 1e-9 {
                ": only the new replica's ids move"
            } else {
                ""
            }
        );
        let with_extra: Vec<String> = off
            .hashes
            .iter()
            .filter_map(|h| {
                let worst = h
                    .removes
                    .iter()
                    .max_by(|a, b| a.excess().total_cmp(&b.excess()))?;
                (worst.excess() > 1e-9).then(|| {
                    format!(
                        "`{}` up to {} (removing id {} of {})",
                        h.name,
                        pct(worst.excess()),
                        worst.changed_id,
                        worst.from_n
                    )
                })
            })
            .collect();
        if with_extra.is_empty() {
            let _ = writeln!(
                md,
                "- Removing a replica moves only the removed replica's ids, for every hash."
            );
        } else {
            let _ = writeln!(
                md,
                "- Removing a replica moves some other ids too for {} of {} hashes: {}.",
                with_extra.len(),
                off.hashes.len(),
                with_extra.join(", ")
            );
        }
        let best_share = off
            .hashes
            .iter()
            .map(|h| {
                let v: Vec<f64> = h
                    .shares
                    .iter()
                    .filter_map(|s| s.id_spread.map(|x| x.max_over_avg))
                    .collect();
                (h.name.as_str(), stats::mean(&v))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((name, v)) = best_share {
            let _ = writeln!(md, "- Over N = 2..6, `{name}` gives the busiest replica the smallest share of request ids: {v:.2}× the fair share on average.");
        }
        md.push('\n');
    }
    if !off.skipped.is_empty() {
        let list: Vec<String> = off
            .skipped
            .iter()
            .map(|s| format!("`{}` ({})", s.name, s.reason))
            .collect();
        let _ = writeln!(md, "Offline, skipped: {}.\n", list.join("; "));
    }
}
