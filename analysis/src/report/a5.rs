//! The report's A-5 section: the balancing algorithms offline and live, and the hot key.

use std::fmt::Write as _;

use super::common::{cell, image, pct};
use crate::experiments::a5::{self as a5mod, Point, A5};
use crate::figures::Figures;

/// One table: a row per N, a column per algorithm, `cell` of each point.
fn a5_table(md: &mut String, a5: &A5, what: &str, cell: impl Fn(&Point) -> String) {
    let Some(first) = a5.curves.first() else {
        return;
    };
    let heads: Vec<String> = a5
        .curves
        .iter()
        .map(|c| format!("`{}`", c.setup.label()))
        .collect();
    let _ = writeln!(md, "{what}:\n");
    let _ = writeln!(md, "| N | {} |", heads.join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(heads.len()));
    for (i, p) in first.points.iter().enumerate() {
        let cells: Vec<String> = a5
            .curves
            .iter()
            .map(|c| c.points.get(i).map(&cell).unwrap_or_default())
            .collect();
        let _ = writeln!(md, "| {} | {} |", p.n, cells.join(" | "));
    }
    let _ = writeln!(md);
}

fn a5_point<'a>(a5: &'a A5, algorithm: &str, n: u64) -> Option<&'a Point> {
    a5.curves
        .iter()
        .filter(|c| c.setup.algorithm == algorithm)
        .find_map(|c| c.points.iter().find(|p| p.n == n))
}

fn a5_live(md: &mut String, a5: &A5) {
    let _ = writeln!(md, "### Live: N = {}\n", a5mod::LIVE_N);
    if let Some(why) = &a5.live_skipped {
        let _ = writeln!(md, "Not run: {why}.\n");
        return;
    }
    let _ = writeln!(
        md,
        "The load balancer started by `analysis` was switched to each algorithm by rewriting `[ring] algorithm`, \
         `slots` and `hash` in its `lb.toml` (as A-4 switches hashes) and polling `/_lb/status` until they \
         showed; then the same random request ids were sent each time. *Predicted* is the share the table \
         built offline for ids 1..{} gives the same ids; *as predicted* counts the requests answered by exactly \
         the replica that table names for their id.\n",
        a5mod::LIVE_N
    );
    let _ = writeln!(
        md,
        "| algorithm | switch | sent | failed | shares seen (predicted) | as predicted | largest deviation |\n|---|---|---|---|---|---|---|"
    );
    for r in &a5.live {
        let shares: Vec<String> = r
            .replicas
            .iter()
            .map(|s| format!("{} {} ({})", s.hostname, pct(s.share), pct(s.predicted)))
            .collect();
        let _ = writeln!(
            md,
            "| `{}` | {:.0} ms | {} | {} | {} | {} of {} | {:.2} points |",
            r.setup.label(),
            r.switch_ms,
            r.sent,
            r.failed,
            shares.join(", "),
            r.as_predicted,
            r.sent,
            100.0 * r.max_deviation
        );
    }
    let _ = writeln!(md);
    let all_match = a5
        .live
        .iter()
        .all(|r| r.as_predicted == r.sent && r.failed == 0);
    let _ = writeln!(
        md,
        "{}\n",
        if all_match {
            "Every request was answered by the replica the offline table predicts: the live shares are the offline ones."
        } else {
            "Not every request was answered by the predicted replica (see the counts above)."
        }
    );
}

fn a5_hot(md: &mut String, a5: &A5, figures: &Figures) {
    if a5.hot.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "### Hot key\n\n{} concurrent clients all send `X-Request-Id: {}` to N = {} (the lb's own algorithm and \
         hash). Consistent hashing sends one key to one replica, so without bounded loads that replica gets \
         everything. Then `[ring] bounded_load = {}` is written into the `lb.toml`; if the lb refuses the file \
         or does not show the setting in `/_lb/status`, the row says so.\n",
        a5mod::HOT_CLIENTS,
        a5mod::HOT_ID,
        a5mod::LIVE_N,
        a5mod::BOUNDED_LOAD
    );
    let _ = writeln!(
        md,
        "| setting | sent | failed | busiest replica's share |\n|---|---|---|---|"
    );
    for h in &a5.hot {
        match &h.unavailable {
            Some(why) => {
                let _ = writeln!(md, "| {} | – | – | {} |", h.label, cell(why));
            }
            None => {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} |",
                    h.label,
                    h.sent,
                    h.failed,
                    pct(h.busiest_share)
                );
            }
        }
    }
    let _ = writeln!(
        md,
        "\nA replica takes a request only while it has fewer than ⌈c · (L + 1) / N⌉ in flight, L \
         being all requests in flight when it is placed: with replicas as fast as these, L is small, \
         and the rounding up lets the key's owner keep more than c/N = {:.1} % of the requests. With \
         replicas slow enough that the 48 requests stay in flight (100 ms each, \
         `core/tests/bounded.rs`), the busiest share is 41 %, at the bound.\n",
        100.0 * a5mod::BOUNDED_LOAD / a5mod::LIVE_N as f64
    );
    image(md, "A-5: hot key", &figures.a5_hot_key);
}

fn a5_advice(md: &mut String, a5: &A5) {
    let n = 10;
    let ring = a5
        .curves
        .iter()
        .find(|c| c.setup.label() == "ring/spec")
        .and_then(|c| c.points.iter().find(|p| p.n == n));
    let _ = writeln!(md, "### Which one to pick\n");
    let mut text = String::from(
        "- **ring** (`algorithm = \"ring\"`, the default): the assignment's scheme, bit-exact with SPEC §2 — pick \
         it when the assignment's behaviour is the point.",
    );
    if let Some(p) = ring {
        let _ = write!(
            text,
            " Its balance depends on the hash: with `spec` at N = {n} the busiest replica holds {:.2}× its fair share.",
            p.slot_max_over_avg
        );
    }
    text.push_str(
        "\n- **maglev**: the best balance (every replica ⌊M/N⌋ or ⌈M/N⌉ slots) with near-minimal disruption; \
         building costs about M·ln(M/N) steps (O(M), not M·N) — pick it for even load.",
    );
    if let Some(p) = a5_point(a5, "maglev", n) {
        let _ = write!(
            text,
            " Here at N = {n}: max/avg {:.4}, removal moves {:.2}× the ideal, build {:.1} ms.",
            p.slot_max_over_avg, p.removed_over_ideal, p.build_ms
        );
    }
    text.push_str(
        "\n- **rendezvous**: exactly minimal disruption — only the removed replica's slots move — with balance by \
         the law of large numbers and a build of M·N weights, the slowest at large M·N — pick it when keys must \
         stay put (caches).",
    );
    if let Some(p) = a5_point(a5, "rendezvous", n) {
        let _ = write!(
            text,
            " Here at N = {n}: max/avg {:.4}, removal moves {:.2}× the ideal, {} beyond the removed replica's slots, build {:.1} ms.",
            p.slot_max_over_avg,
            p.removed_over_ideal,
            pct(p.removed_beyond),
            p.build_ms
        );
    }
    text.push_str(
        "\n- **bounded loads** for hot keys: no table helps there — every algorithm sends one id to one replica \
         (the hot-key table above). Only bounded loads, which send a replica's excess on to the next one, spread it.\n",
    );
    let _ = writeln!(md, "{text}");
}

pub(super) fn a5_section(md: &mut String, a5: &A5, figures: &Figures) {
    let _ = writeln!(md, "## A-5: balancing algorithms\n");
    let m = &a5.machine;
    let _ = writeln!(
        md,
        "The assignment's ring, Maglev and rendezvous (docs/ALGORITHMS.md), compared **offline** with the \
         `lb-balance` library — the very code `lb` routes with — over one table size, M = {} slots (a prime, \
         because Maglev needs one, and large enough for the ring's K·N ≤ M at N = 100; the ring uses K = {} \
         virtual nodes and linear probing). The ring is shown with the `spec`, `murmur3` and `ketama` hashes; \
         Maglev and rendezvous with `murmur3` (for them the hash only maps a request to a slot). Server ids are \
         1..N. *Balance*: the busiest replica's share of the slots, and of {} random six-digit request ids \
         routed offline as `H(r) mod M` through the table, over the fair share 1/N. *Disruption*: the share of \
         slots (= of keys, spread evenly over the slots) whose replica changes when one replica is removed \
         (the mean over removing id 1, id ⌈N/2⌉ and id N) or when replica N+1 is added, as a multiple of the \
         ideal 1/N (1/(N+1) when adding). *Cost*: one build of the table for N replicas, and the mean time of \
         a lookup (hash, modulo, table load) over the random ids, measured once on this machine ({}, {} \
         threads, {} build{}).\n",
        a5.slots,
        a5.virtual_nodes,
        a5.random_ids,
        m.cpu,
        m.threads,
        if m.optimised { "optimised" } else { "debug" },
        if m.optimised {
            ""
        } else {
            ": the times are far above those of a release build"
        },
    );
    for (name, why) in &a5.skipped {
        let _ = writeln!(md, "- `{name}` left out: {}", cell(why));
    }
    if !a5.skipped.is_empty() {
        let _ = writeln!(md);
    }
    a5_table(
        md,
        a5,
        "Busiest replica's share of the slots over 1/N",
        |p| format!("{:.3}", p.slot_max_over_avg),
    );
    a5_table(
        md,
        a5,
        &format!(
            "Busiest replica's share of {} random request ids over 1/N",
            a5.random_ids
        ),
        |p| format!("{:.3}", p.request_max_over_avg),
    );
    image(md, "A-5: max/avg share against N", &figures.a5_balance);
    a5_table(
        md,
        a5,
        "Keys moved when one replica is removed, as a multiple of 1/N: mean (worst); and the share moved beyond the removed replica's own slots",
        |p| {
            format!(
                "{:.2}× ({:.2}×); {}",
                p.removed_over_ideal,
                p.removed_worst_over_ideal,
                pct(p.removed_beyond)
            )
        },
    );
    a5_table(
        md,
        a5,
        "Keys moved when replica N+1 is added, as a multiple of 1/(N+1); and the share moved between old replicas",
        |p| format!("{:.2}×; {}", p.added_over_ideal, pct(p.added_beyond)),
    );
    image(md, "A-5: keys moved against N", &figures.a5_moves);
    a5_table(md, a5, "Table build (ms) / lookup (ns)", |p| {
        format!("{:.2} / {:.0}", p.build_ms, p.lookup_ns)
    });
    a5_live(md, a5);
    a5_hot(md, a5, figures);
    a5_advice(md, a5);
}
