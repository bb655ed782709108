//! The report's A-6 section: weighted shares and a weight change offline, a plan against the
//! change made and slow start's ramp live.

use std::fmt::Write as _;

use super::common::{cell, image, opt_ms, pct};
use crate::experiments::a3::PhaseOutcome;
use crate::experiments::a6::{self as a6mod, PlanCheck, Ramp, WeightPoint, A6};
use crate::figures::Figures;

/// One table: a row per N, a column per setup, `cell` of each point.
fn table(md: &mut String, a6: &A6, what: &str, cell: impl Fn(&WeightPoint) -> String) {
    let Some(first) = a6.curves.first() else {
        return;
    };
    let heads: Vec<String> = a6
        .curves
        .iter()
        .map(|c| format!("`{}`", c.setup.label()))
        .collect();
    let _ = writeln!(md, "{what}:\n");
    let _ = writeln!(md, "| N (Σw) | {} |", heads.join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(heads.len()));
    for (i, p) in first.points.iter().enumerate() {
        let cells: Vec<String> = a6
            .curves
            .iter()
            .map(|c| c.points.get(i).map(&cell).unwrap_or_default())
            .collect();
        let _ = writeln!(
            md,
            "| {} ({}) | {} |",
            p.n,
            p.total_weight,
            cells.join(" | ")
        );
    }
    let _ = writeln!(md);
}

/// The points of every curve of `algorithm`.
fn points<'a>(a6: &'a A6, algorithm: &'a str) -> impl Iterator<Item = &'a WeightPoint> + 'a {
    a6.curves
        .iter()
        .filter(move |c| c.setup.algorithm == algorithm)
        .flat_map(|c| c.points.iter())
}

/// The largest `value` over the points of `algorithm`, with its N (`None`: no such point).
fn worst(a6: &A6, algorithm: &str, value: fn(&WeightPoint) -> f64) -> Option<(f64, u64)> {
    points(a6, algorithm)
        .map(|p| (value(p), p.n))
        .reduce(|a, b| if b.0 > a.0 { b } else { a })
}

fn within(value: f64, target: f64) -> &'static str {
    if value <= target {
        "within"
    } else {
        "**not** within"
    }
}

fn shares(md: &mut String, a6: &A6, figures: &Figures) {
    let _ = writeln!(md, "### Shares against the weights\n");
    let three: Vec<(String, &WeightPoint)> = a6
        .curves
        .iter()
        .filter_map(|c| Some((c.setup.label(), c.points.iter().find(|p| p.n == 3)?)))
        .collect();
    if !three.is_empty() {
        let _ = writeln!(
            md,
            "N = 3 with weights 1 : 2 : 3 (fair shares 16.7 %, 33.3 %, 50.0 %):\n\n\
             | setup | slot shares | request shares | largest error, slots | largest error, requests | ring marks (K·w = {}, {}, {}) |\n\
             |---|---|---|---|---|---|",
            a6.virtual_nodes,
            2 * a6.virtual_nodes,
            3 * a6.virtual_nodes
        );
        for (label, p) in &three {
            let list = |f: fn(&a6mod::WeightedShare) -> f64| {
                p.replicas
                    .iter()
                    .map(|r| format!("{:.2} %", 100.0 * f(r)))
                    .collect::<Vec<_>>()
                    .join(" / ")
            };
            let marks = p
                .replicas
                .iter()
                .map(|r| r.marks.map_or("–".into(), |m| m.to_string()))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                md,
                "| `{label}` | {} | {} | {:.3} points | {:.3} points | {marks} |",
                list(|r| r.slot_share),
                list(|r| r.request_share),
                p.slot_error_points,
                p.request_error_points
            );
        }
        let _ = writeln!(md);
    }
    table(
        md,
        a6,
        "Largest |share − w/Σw| in percentage points, slots / request ids",
        |p| format!("{:.3} / {:.3}", p.slot_error_points, p.request_error_points),
    );
    let mut notes = Vec::new();
    if let Some((e, n)) = worst(a6, "maglev", |p| p.slot_error_points) {
        notes.push(format!(
            "Maglev's slot shares are at most {e:.4} points from w/Σw (at N = {n}; {:.1} slots of M): {} the issue's 0.1 point. Its weighted fill gives replica k w_k turns in each round, so every count stays close to M·w_k/Σw.",
            e / 100.0 * f64::from(a6.slots),
            within(e, 0.1)
        ));
    }
    if let Some((e, n)) = worst(a6, "rendezvous", |p| p.slot_error_points) {
        notes.push(format!(
            "Rendezvous is at most {e:.3} points off (at N = {n}): {} the issue's 1 point. Its score −w/ln u (u uniform in (0, 1) per slot and replica) makes replica k win a slot with probability exactly w_k/Σw, so the error is only the sampling noise of M slots.",
            within(e, 1.0)
        ));
    }
    let ring: Vec<bool> = points(a6, "ring")
        .filter_map(|p| p.ring_marks_match)
        .collect();
    if !ring.is_empty() {
        let all = ring.iter().all(|&m| m);
        let ranges: Vec<String> = a6
            .curves
            .iter()
            .filter(|c| c.setup.algorithm == "ring")
            .filter_map(|c| {
                let errors = c.points.iter().map(|p| p.slot_error_points);
                let low = errors.clone().reduce(f64::min)?;
                let high = errors.reduce(f64::max)?;
                Some(format!("`{}` {low:.2} to {high:.2}", c.setup.label()))
            })
            .collect();
        notes.push(format!(
            "The ring placed exactly K·w virtual nodes for every replica in {} of its {} tables{}. Its shares follow the weights only as well as its hash spreads the marks: the slot error is {} points over these N.",
            ring.iter().filter(|&&m| m).count(),
            ring.len(),
            if all { "" } else { " — **not in all**" },
            ranges.join(", ")
        ));
    }
    notes.push(format!(
        "The request shares add the noise of the random ids to that of the slots: a share p of {} ids varies by √(p(1−p)/ids), up to {:.2} points.",
        a6.random_ids,
        100.0 * (0.25 / a6.random_ids.max(1) as f64).sqrt()
    ));
    for note in notes {
        let _ = writeln!(md, "- {note}");
    }
    let _ = writeln!(md);
    image(md, "A-6: weighted shares against N", &figures.a6_shares);
}

fn weight_change(md: &mut String, a6: &A6, figures: &Figures) {
    let _ = writeln!(
        md,
        "### A weight change\n\n\
         Replica {}'s weight goes from {} to {} in each table above; `compare::plan` (what `lb plan` shows) compares \
         the two tables over the same {} random request ids. *Moved* is the share of ids whose replica changes; the \
         *minimum* is what any change to these shares must move, what the replicas that grow gain, \
         Σ_k max(0, after_k − before_k) — here replica {}'s gain. The ratio is the algorithm's overhead.\n",
        a6mod::CHANGED_ID,
        a6mod::WEIGHT_CYCLE[0],
        a6mod::CHANGED_TO,
        a6.random_ids,
        a6mod::CHANGED_ID
    );
    table(
        md,
        a6,
        "Requests moved / minimum (moved; minimum), and whether every move goes to the reweighted replica",
        |p| {
            let c = &p.change;
            format!(
                "{:.3}× ({}; {}){}",
                c.over_minimum,
                pct(c.requests_moved),
                pct(c.requests_minimum),
                if c.only_to_changed { ", all to it" } else { "" }
            )
        },
    );
    let mut notes = Vec::new();
    let rendezvous: Vec<&WeightPoint> = points(a6, "rendezvous").collect();
    if !rendezvous.is_empty() {
        let all = rendezvous.iter().all(|p| p.change.only_to_changed);
        notes.push(format!(
            "Rendezvous: every move goes to the reweighted replica {} (a larger w raises only that replica's scores, so a slot can only change to it).",
            if all {
                "at every N".to_owned()
            } else {
                format!(
                    "**only at {} of {} N**",
                    rendezvous
                        .iter()
                        .filter(|p| p.change.only_to_changed)
                        .count(),
                    rendezvous.len()
                )
            }
        ));
    }
    if let Some((r, n)) = worst(a6, "maglev", |p| p.change.over_minimum) {
        let maglev: Vec<&WeightPoint> = points(a6, "maglev").collect();
        let over: Vec<String> = maglev
            .iter()
            .filter(|p| p.change.over_minimum > 1.25)
            .map(|p| format!("N = {}", p.n))
            .collect();
        let slots = maglev
            .iter()
            .find(|p| p.n == n)
            .map_or(0.0, |p| p.change.slots_over_minimum);
        let extra = maglev
            .iter()
            .map(|p| p.change.slots_moved.saturating_sub(p.change.slots_minimum))
            .collect::<Vec<_>>();
        let (low, high) = (
            extra.iter().min().copied().unwrap_or(0),
            extra.iter().max().copied().unwrap_or(0),
        );
        notes.push(format!(
            "Maglev moves at most {r:.3}× the minimum (at N = {n}; {slots:.3}× counted in slots, exactly): {}. Changing one weight changes the order of the turns, so some slots change hands among the other replicas too — {low} to {high} slots beyond the minimum over these N — while the minimum itself shrinks as the replica's share does, about 1/Σw.",
            if over.is_empty() {
                "within the issue's 1.25× at every N".to_owned()
            } else {
                format!("**over the issue's 1.25× at {}**", over.join(", "))
            }
        ));
    }
    for c in a6.curves.iter().filter(|c| c.setup.algorithm == "ring") {
        let Some(w) = c.points.iter().reduce(|a, b| {
            if b.change.over_minimum > a.change.over_minimum {
                b
            } else {
                a
            }
        }) else {
            continue;
        };
        let label = c.setup.label();
        if c.points.iter().all(|p| p.change.only_to_changed) {
            notes.push(format!(
                "`{label}`: at most {:.3}× the minimum, every move to the reweighted replica: its K more virtual nodes only take slots from the marks after them.",
                w.change.over_minimum
            ));
        } else {
            notes.push(format!(
                "`{label}`: up to {:.3}× the minimum (at N = {}: {} slots moved for a minimum of {}, {:.3} % of the requests between other replicas): where marks collide, a new mark takes a slot another replica's mark had probed to, and that mark probes on to the next free slot.",
                w.change.over_minimum,
                w.n,
                w.change.slots_moved,
                w.change.slots_minimum,
                100.0 * w.change.moved_elsewhere
            ));
        }
    }
    for note in notes {
        let _ = writeln!(md, "- {note}");
    }
    let _ = writeln!(md);
    image(
        md,
        "A-6: keys moved by a weight change",
        &figures.a6_weight_change,
    );
}

fn plan(md: &mut String, a6: &A6, outcome: &PhaseOutcome<PlanCheck>) {
    let _ = writeln!(md, "### Live: a plan against the change made\n");
    let p = match outcome {
        PhaseOutcome::Skipped(why) => {
            let _ = writeln!(md, "Not run: {}.\n", cell(why));
            return;
        }
        PhaseOutcome::Done(p) => p,
    };
    let moved_share = p.moved_actual as f64 / p.sample.max(1) as f64;
    let _ = writeln!(
        md,
        "N = {} replicas of weight 1, `{}` over M = {} slots. `POST /_lb/plan` with `{}` answered in {:.0} ms \
         and changed nothing: `/_lb/ring` showed {} owners before and after it. Then the same `/add`; `/_lb/ring` \
         listed `{}` {:.0} ms later, and {} of its {} owners were the plan's {} (`owners`). The plan says {} \
         slots and {} of the requests (over every 6-digit id) move, and that any change to these shares moves at \
         least {}: `{}`, of weight {} in Σw = {}, takes {} of the requests. {} distinct random request ids were sent before and after the `/add` \
         ({} failed): {} were answered before by the owner `/_lb/ring` names for their slot (`H(r) mod M` computed \
         here with the same hash); {} ({}) were answered by another replica after, where the plan's owners say {}; \
         {} were answered after by exactly the replica the plan names. `/rm` of `{}` gave back {} table.\n",
        a6mod::LIVE_N,
        a6.live_setup.label(),
        p.slots,
        p.body,
        p.plan_ms,
        if p.unchanged_by_plan { "the same" } else { "**different**" },
        p.added,
        p.joined_ms,
        p.owners_equal,
        p.ring_owners,
        p.plan_owners,
        p.slots_moved,
        pct(p.requests_moved),
        pct(p.requests_minimum),
        p.added,
        p.weight,
        p.total_weight_after,
        pct(p.share_after),
        p.sample,
        p.sample_failed,
        p.routed_as_ring,
        p.moved_actual,
        pct(moved_share),
        p.moved_predicted,
        p.as_planned,
        p.added,
        if p.restored { "exactly the old" } else { "**not** the old" },
    );
    let exact = p.owners_equal == p.plan_owners
        && p.plan_owners == p.ring_owners
        && p.as_planned + p.sample_failed == p.sample
        && p.moved_actual == p.moved_predicted;
    let _ = writeln!(
        md,
        "{}\n",
        if exact {
            format!(
                "The plan was the change: every slot's owner as planned, and every sampled request where the plan said. The sample's {} moved against the plan's {} over all ids is only the sample's noise.",
                pct(moved_share),
                pct(p.requests_moved)
            )
        } else {
            "The plan and the change differ (see the counts above).".to_owned()
        }
    );
}

fn ramp(md: &mut String, outcome: &PhaseOutcome<Ramp>, figures: &Figures) {
    let _ = writeln!(md, "### Live: slow start\n");
    let r = match outcome {
        PhaseOutcome::Skipped(why) => {
            let _ = writeln!(md, "Not run: {}.\n", cell(why));
            return;
        }
        PhaseOutcome::Done(r) => r,
    };
    let _ = writeln!(
        md,
        "`[ring] slow_start_ms = {}` was written into the `lb.toml` (applied after {:.0} ms). {} clients sent \
         `GET /home` with random ids; after {:.1} s of it, `{}` of weight {} was added to replicas of weights \
         summing to {}. A replica joining a ring others serve takes 1/20 of its weight at once and one more \
         twentieth every slow_start_ms/20; its share is then e/(e + {}) for an effective weight e, \
         {} at its whole weight. `/_lb/status` was read every {} ms: it listed `{}` in the ring {} after the `/add`, \
         showed {} distinct effective weights, and its whole weight {} after the `/add`. Requests are counted per \
         {} ms of their sending time.\n",
        r.slow_start_ms,
        r.switch_ms,
        r.clients,
        r.add_at_ms / 1000.0,
        r.added,
        r.weight,
        r.others_weight,
        r.others_weight,
        pct(r.target_share),
        a6mod::RAMP_POLL.as_millis(),
        r.added,
        opt_ms(r.joined_ms),
        r.steps_seen,
        opt_ms(r.ramp_done_ms),
        r.bucket_ms
    );
    let opt_pct = |v: Option<f64>| v.map_or("–".into(), pct);
    let _ = writeln!(
        md,
        "| | |\n|---|---|\n\
         | its share in the first {} ms that start after it joined | {} |\n\
         | its share once the ramp was over | {} (w/Σw = {}) |\n\
         | first {} ms with at least {:.0} % of that share | ended {} after the `/add` |\n\
         | client requests sent / failed | {} / {} |\n",
        r.bucket_ms,
        opt_pct(r.first_share),
        opt_pct(r.full_share),
        pct(r.target_share),
        r.bucket_ms,
        100.0 * a6mod::REACHED,
        opt_ms(r.reached_ms),
        r.traffic.sent,
        r.failed
    );
    if r.ran_out {
        let _ = writeln!(
            md,
            "The clients used every request id before the end; the traffic stopped early.\n"
        );
    }
    let mut observations = Vec::new();
    if let (Some(first), Some(full)) = (r.first_share, r.full_share) {
        observations.push(format!(
            "It started at {} of its final {}, {:.0} % of it{}",
            pct(first),
            pct(full),
            100.0 * first / full.max(f64::MIN_POSITIVE),
            match (r.joined_ms, r.reached_ms) {
                (Some(j), Some(t)) => format!(
                    ", and reached {:.0} % of it {:.1} s after joining (the ramp lasts {:.1} s).",
                    100.0 * a6mod::REACHED,
                    (t - j) / 1000.0,
                    r.slow_start_ms as f64 / 1000.0
                ),
                _ => ".".to_owned(),
            }
        ));
    }
    observations.push(if r.failed == 0 {
        "No client request failed while the table changed step by step.".to_owned()
    } else {
        format!("**{} client requests failed** during the ramp.", r.failed)
    });
    let _ = writeln!(md, "{}\n", observations.join(" "));
    image(md, "A-6: slow start's ramp", &figures.a6_ramp);
    let _ = writeln!(
        md,
        "<details><summary>Per {} ms: the new replica's share, the share of its effective weight, requests per second</summary>\n\n\
         | from (ms after the /add) | answered | failed | by {} | share | effective weight's share | its req/s |\n\
         |---|---|---|---|---|---|---|",
        r.bucket_ms, r.added
    );
    for b in &r.buckets {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {:.0} |",
            b.start_ms,
            b.served,
            b.failed,
            b.to_new,
            pct(b.share),
            b.expected_share.map_or("–".into(), pct),
            b.rate_new
        );
    }
    let _ = writeln!(md, "\n</details>\n");
}

pub(super) fn a6_section(md: &mut String, a6: &A6, figures: &Figures) {
    let _ = writeln!(md, "## A-6: weights, slow start and plans\n");
    let _ = writeln!(
        md,
        "Replicas of different weights, compared **offline** with the `lb-balance` library over A-5's setups and \
         M = {} slots (the ring with K = {}): server ids 1..N with weights cycling {:?} (so N = 3 is exactly \
         1 : 2 : 3), each table built with `Balancer::place_weighted` — the ring places K·w virtual nodes per \
         replica, Maglev gives it w turns in each round of its fill, rendezvous scores it −w / ln u. A replica's \
         fair share is w/Σw; the *error* is the largest |share − w/Σw| over the replicas, in percentage points, of \
         the slots and of {} random six-digit request ids routed `H(r) mod M` through the table. **Live**, against \
         the load balancer `analysis` started (switched to `{}` over the same M), a plan against the change made \
         and slow start's ramp.\n",
        a6.slots,
        a6.virtual_nodes,
        a6.weight_cycle,
        a6.random_ids,
        a6.live_setup.label()
    );
    for (name, why) in &a6.skipped {
        let _ = writeln!(md, "- `{name}` left out: {}", cell(why));
    }
    if !a6.skipped.is_empty() {
        let _ = writeln!(md);
    }
    shares(md, a6, figures);
    weight_change(md, a6, figures);
    if let Some(why) = &a6.live_skipped {
        let _ = writeln!(md, "### Live\n\nNot run: {}.\n", cell(why));
        return;
    }
    if let Some(p) = &a6.plan {
        plan(md, a6, p);
    }
    if let Some(r) = &a6.ramp {
        ramp(md, r, figures);
    }
}
