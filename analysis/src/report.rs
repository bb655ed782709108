//! `report.md`: the charts, the numbers, and observations computed from them.

use std::fmt::Write as _;

use crate::data::Results;
use crate::experiments::a3::control::{self as a3_control, Decision, HostileSave, SaveOutcome};
use crate::experiments::a3::faults as a3_faults;
use crate::experiments::a3::hang::Hang;
use crate::experiments::a3::kill::Kill;
use crate::experiments::a3::loop_attempt::{LoopAttempt, LoopMark};
use crate::experiments::a3::plane::Control;
use crate::experiments::a3::slowloris::{Slowloris, LORIS_HEAD};
use crate::experiments::a3::supervisors::{self as a3_supervisors, SupervisedKill, SupervisorRun};
use crate::experiments::a3::{PhaseOutcome, Verdict, A3, NOT_CHOSEN};
use crate::experiments::a4::A4;
use crate::experiments::a5::{self as a5mod, Point, A5};
use crate::experiments::offline::HashOffline;
use crate::experiments::Measurement;
use crate::figures::Figures;
use crate::stats;

fn pct(x: f64) -> String {
    format!("{:.1} %", x * 100.0)
}

fn image(md: &mut String, alt: &str, files: &Option<[String; 2]>) {
    if let Some([png, svg]) = files {
        let _ = writeln!(md, "![{alt}]({png})\n\n([SVG]({svg}))\n");
    }
}

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

/// The offline id shares for `hash` at `n` replicas, by server id.
fn predicted(a4: Option<&A4>, hash: &str, n: usize) -> Option<Vec<(u64, f64)>> {
    let h = a4?.offline.hashes.iter().find(|h| h.name == hash)?;
    let s = h.shares.iter().find(|s| s.n == n as u64)?;
    Some(s.replicas.iter().map(|r| (r.id, r.id_share)).collect())
}

/// Largest difference, in percentage points, between measured and predicted shares.
fn deviation(m: &Measurement, predicted: &[(u64, f64)]) -> Option<f64> {
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

fn a1_section(
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

fn a2_section(md: &mut String, a2: &crate::experiments::a2::A2, figures: &Figures) {
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

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn a3_section(md: &mut String, a3: &A3, figures: &Figures, concurrency: usize) {
    let _ = writeln!(
        md,
        "## A-3: endpoints, a replica killed and one hung under traffic, slow loris, hostile saves, loops\n"
    );
    if !a3.checks.is_empty() {
        checks_part(md, a3);
    }
    if !matches!(&a3.kill, PhaseOutcome::Skipped(why) if why == NOT_CHOSEN) {
        kill_part(md, &a3.kill, figures, concurrency);
    }
    match &a3.hang {
        PhaseOutcome::Skipped(why) if why == NOT_CHOSEN => {}
        PhaseOutcome::Skipped(why) => {
            let _ = writeln!(md, "### A replica hung\n\nThe hang was skipped: {why}.\n");
        }
        PhaseOutcome::Done(h) => hang_part(md, h, figures),
    }
    if let Some(slowloris) = &a3.slowloris {
        slowloris_part(md, slowloris, figures);
    }
    if !a3.supervisors.is_empty() {
        supervisors_part(md, &a3.supervisors, concurrency);
    }
    match &a3.control {
        None => {}
        Some(PhaseOutcome::Skipped(why)) => {
            let _ = writeln!(
                md,
                "### The control plane\n\nThe hostile saves and the loop attempt were skipped: {why}.\n"
            );
        }
        Some(PhaseOutcome::Done(c)) => {
            if !c.saves.is_empty() {
                stall_part(md, c);
            }
            if let Some(l) = &c.loop_attempt {
                loop_part(md, c, l);
            }
        }
    }
}

fn checks_part(md: &mut String, a3: &A3) {
    let (pass, fail, skip) = (
        a3.count(Verdict::Pass),
        a3.count(Verdict::Fail),
        a3.count(Verdict::Skip),
    );
    let _ = writeln!(
        md,
        "{pass} of {} checks passed, {fail} failed, {skip} skipped.\n",
        a3.checks.len()
    );
    let _ = writeln!(
        md,
        "| | check | request | expected | got |\n|---|---|---|---|---|"
    );
    for c in &a3.checks {
        let mark = match c.verdict {
            Verdict::Pass => "pass",
            Verdict::Fail => "**FAIL**",
            Verdict::Skip => "skip",
        };
        let _ = writeln!(
            md,
            "| {mark} | {} | `{}` | {} | `{}` |",
            cell(&c.name),
            cell(&c.request),
            cell(&c.expected),
            cell(&c.got)
        );
    }
    md.push('\n');
}

fn kill_part(md: &mut String, kill: &PhaseOutcome<Kill>, figures: &Figures, concurrency: usize) {
    let _ = writeln!(md, "### A replica killed\n");
    match kill {
        PhaseOutcome::Skipped(why) => {
            let _ = writeln!(md, "The kill was skipped: {why}.\n");
        }
        PhaseOutcome::Done(k) => {
            image(md, "A-3: timeline", &figures.a3_timeline);
            let _ = writeln!(
                md,
                "- Killed **{}** (server id {}, the replica serving the most slots: {}) with {} at t = {:.2} s, while \
                 {} clients kept sending `GET /home`.",
                k.victim,
                k.victim_id,
                k.victim_slots,
                k.how,
                k.killed_ms / 1000.0,
                concurrency
            );
            match (k.left_ring_after_ms, k.recovered_after_ms) {
                (_, None) => {
                    let _ = writeln!(
                        md,
                        "- `/rep` did **not** show N = {} without the victim within the limit.",
                        k.n
                    );
                }
                (left, Some(rec)) => {
                    let left = left.map_or(String::new(), |l| {
                        format!("It was out of the ring after {l:.0} ms, and ")
                    });
                    let replacement = k.replacement.as_ref().map_or(
                        "no replacement with the same server id was found".into(),
                        |(h, id)| format!("the replacement is **{h}** with server id {id}"),
                    );
                    let _ = writeln!(
                        md,
                        "- {left}`/rep` showed N = {} again without it after **{rec:.0} ms** ({} polls); {replacement}.",
                        k.n, k.polls
                    );
                }
            }
            let sent = k.traffic.sent.max(1);
            if k.failed == 0 {
                let _ = writeln!(
                    md,
                    "- None of the {} client requests failed.",
                    k.traffic.sent
                );
            } else {
                let kinds: Vec<String> = k
                    .traffic
                    .failed
                    .iter()
                    .map(|(kind, n)| format!("{n} × {kind}"))
                    .collect();
                let window = k.failure_window_ms.map_or(String::new(), |(a, b)| {
                    format!(", all between t = {:.3} s and t = {:.3} s ({:.0} ms after the kill at the latest)", a / 1000.0, b / 1000.0, b - k.killed_ms)
                });
                let _ = writeln!(
                    md,
                    "- {} of {} client requests failed ({:.2} %: {}){}.",
                    k.failed,
                    k.traffic.sent,
                    k.failed as f64 * 100.0 / sent as f64,
                    kinds.join(", "),
                    window
                );
            }
            if let Some(gone) = k.victim_gone {
                let _ = writeln!(
                    md,
                    "- The victim's process {} afterwards.",
                    if gone { "was gone" } else { "was still alive" }
                );
            }
            md.push('\n');
        }
    }
}

fn stall_part(md: &mut String, c: &Control) {
    let _ = writeln!(md, "### A save that would stall the controller\n");
    let h = c.heartbeats;
    let _ = writeln!(
        md,
        "A load balancer of its own runs {} replicas (process supervisor; rendezvous over {} slots, \
         `spec` hash; a heartbeat every {} ms, {} ms to answer, out of the ring after {} missed; \
         {} healthy {:.1} s after it was started) while {} clients send `GET /home` with random \
         ids. For each hostile file of the issue — (1) a rejected value of {} bytes (over 65 535 \
         once panicked the controller), (2) `algorithm = \"rendezvous\"` with `slots = {}` \
         (its table once took 0.7–2 s on the controller's thread and healthy replicas were \
         declared dead), (5) about 1 MiB of unknown keys (once checked in quadratic time) — the \
         file is made from the running configuration (the replicas `/_lb/status` lists, under \
         their current names, plus the hostile part), written beside `lb.toml` and renamed over \
         it, and at once a replica (another one each time) is killed with SIGKILL. **Serving \
         again**: the first poll (every {} ms from the kill) at which `/_lb/status` lists the \
         victim's server id healthy with a new pid *and* `GET /home` with a probe id — a request \
         id whose slot that server id owns under both the normal and the large table (computed \
         with `lb-balance`, checked live before the kill) — is answered by it. **Healthy \
         replicas replaced**: other server ids that showed another pid in any poll from the kill \
         to the end of the traffic (ids missing from a poll, out of the ring, are listed too). \
         **Restarts**: the increase of `lb_replica_restarts_total` (the victim's replacement is \
         one). **Panics**: `lb_control_panics_total` at the end. **Failed**: client requests \
         answered other than 200, with a transport error, or not within 5 s. **The file**: \
         refused when `config.last_error` shows a new error, applied when `/_lb/status` shows it \
         (for (2), the large table published). Between files the normal file is saved again and \
         the phase waits until it is applied with every replica healthy.\n",
        c.replicas,
        c.slots,
        h.interval_ms,
        h.timeout_ms,
        h.fall,
        c.replicas,
        c.ready_ms / 1000.0,
        c.clients,
        a3_control::HUGE_VALUE,
        a3_control::LARGE_SLOTS,
        crate::lb_api::POLL.as_millis()
    );
    let _ = writeln!(
        md,
        "| file | victim (server id) | serving again after the kill | healthy replicas replaced | \
         restarts | panics | requests | failed | the file | normal file again |\n\
         |---|---|---|---|---|---|---|---|---|---|"
    );
    for save in &c.saves {
        match save {
            SaveOutcome::Skipped(file, why) => {
                let _ = writeln!(
                    md,
                    "| ({}) {} | skipped: {} | – | – | – | – | – | – | – | – |",
                    file.number(),
                    file.describe(),
                    cell(why)
                );
            }
            SaveOutcome::Done(s) => stall_row(md, s),
        }
    }
    md.push('\n');
    let done: Vec<&HostileSave> = c
        .saves
        .iter()
        .filter_map(|s| match s {
            SaveOutcome::Done(s) => Some(&**s),
            SaveOutcome::Skipped(..) => None,
        })
        .collect();
    let within = a3_control::REPLACED_WITHIN.as_millis() as f64;
    let verdicts: Vec<String> = done
        .iter()
        .map(|s| match s.serving_again_ms {
            Some(t) if t <= within => format!("({}) yes", s.number),
            Some(t) => format!("({}) **no: {t:.0} ms**", s.number),
            None => format!("({}) **no: not within the limit**", s.number),
        })
        .collect();
    let replaced: usize = done.iter().map(|s| s.healthy_replaced).sum();
    let panics = done
        .iter()
        .filter_map(|s| s.panics.1)
        .fold(None, |m: Option<f64>, p| Some(m.map_or(p, |m| m.max(p))));
    let _ = writeln!(
        md,
        "- The victim serving again within {within:.0} ms of the kill (the issue's bound): {}. \
         Healthy replicas replaced: {replaced} in all. `lb_control_panics_total` at the end: {}.",
        verdicts.join(", "),
        panics.map_or("not counted by this lb".into(), |p| format!("{p:.0}"))
    );
    for s in done {
        stall_notes(md, s);
    }
    md.push('\n');
}

fn decision_text(d: &Decision) -> String {
    match d {
        Decision::Refused { after_ms, .. } => format!("refused after {after_ms:.0} ms"),
        Decision::Applied {
            algorithm,
            slots,
            after_ms,
        } => format!("applied ({algorithm}, {slots} slots) after {after_ms:.0} ms"),
        Decision::Undecided { waited_ms } => {
            format!("**neither refused nor applied** within {waited_ms:.0} ms")
        }
    }
}

fn stall_row(md: &mut String, s: &HostileSave) {
    let again = s
        .serving_again_ms
        .map_or("**not within the limit**".into(), |t| {
            format!("**{t:.0} ms**")
        });
    let restarts = s
        .restarts_delta()
        .map_or("?".into(), |d| format!("+{d:.0}"));
    let panics = s
        .panics
        .1
        .map_or("not counted".into(), |p| format!("{p:.0}"));
    let failed = if s.failed == 0 {
        "0".to_owned()
    } else {
        format!("{} ({})", s.failed, a3_faults::failure_kinds(&s.traffic))
    };
    let restored = match &s.restored {
        Ok(t) => format!("after {t:.0} ms"),
        Err(e) => format!("**no**: {e}"),
    };
    let _ = writeln!(
        md,
        "| ({}) {} ({} KiB) | {} ({}) | {again} | {} | {restarts} | {panics} | {} | {} | {} | {} |",
        s.number,
        cell(&s.what),
        s.bytes / 1024,
        cell(&s.victim),
        s.victim_id,
        s.healthy_replaced,
        s.traffic.sent,
        cell(&failed),
        cell(&decision_text(&s.decision)),
        cell(&restored)
    );
}

fn stall_notes(md: &mut String, s: &HostileSave) {
    let mut notes = Vec::new();
    match &s.decision {
        Decision::Refused {
            message,
            message_bytes,
            ..
        } => notes.push(format!(
            "`config.last_error` ({message_bytes} bytes): `{}`",
            message.replace('`', "'")
        )),
        Decision::Applied { .. } => {
            if let Some(t) = s.config_applied_ms {
                notes.push(format!(
                    "`config.last_applied` changed {t:.0} ms after the save"
                ));
            }
        }
        Decision::Undecided { .. } => {}
    }
    notes.push(format!(
        "{} (pid {}) killed {:.2} ms after the rename; its pid gone from `/_lb/status` after {}, \
         its id listed again (new pid, healthy) after {}",
        s.victim,
        s.victim_pid,
        s.save_to_kill_ms,
        opt_ms(s.out_ms),
        opt_ms(s.listed_again_ms)
    ));
    if let Some((host, pid)) = &s.replacement {
        notes.push(format!(
            "replaced by {host} (pid {pid}), which answered probe id {}",
            s.probe_id
        ));
    }
    if !s.table_builds_ms.is_empty() {
        let builds: Vec<String> = s
            .table_builds_ms
            .iter()
            .map(|t| format!("{t} ms"))
            .collect();
        notes.push(format!(
            "tables built off the controller meanwhile (lb's log): {}",
            builds.join(", ")
        ));
    }
    for d in &s.disturbed {
        notes.push(format!(
            "**server id {} ({}, pid {})**: {}{}",
            d.id,
            d.hostname,
            d.pid_before,
            d.replaced_by
                .as_ref()
                .map_or(String::new(), |by| format!("replaced by {by}")),
            if d.left_ring {
                if d.replaced_by.is_some() {
                    ", and out of the ring in some poll"
                } else {
                    "out of the ring in some poll"
                }
            } else {
                ""
            }
        ));
    }
    if let Some(e) = &s.poll_error {
        notes.push(format!("a poll failed: {e}"));
    }
    if let Some(note) = a3_faults::ran_out(&s.traffic) {
        notes.push(note);
    }
    let _ = writeln!(md, "- ({}): {}.", s.number, notes.join("; "));
}

/// An answer in a table cell: at most 120 characters, without backticks.
fn short_answer(answer: &str) -> String {
    let answer = answer.replace('`', "'");
    match answer.char_indices().nth(120) {
        Some((cut, _)) => format!("{}…", &answer[..cut]),
        None => answer,
    }
}

fn loop_part(md: &mut String, c: &Control, l: &LoopAttempt) {
    let _ = writeln!(md, "### A loop attempt\n");
    let _ = writeln!(
        md,
        "Against the same load balancer ({} replicas, traffic address `{}`), with no other \
         traffic: `POST /add {{\"n\": 1, \"addresses\": [X]}}` with X its own traffic address \
         spelt {} ways. Each should be refused with 400 and N stay as it was (an accepted one is \
         removed again at once, and said so). Then `GET /home` carrying the load balancer's own \
         loop mark — the `Via` value `/_lb/status` shows as `via` — should be answered 508 (Loop \
         Detected) instead of going round. **Requests that reached replicas**: the sum of the \
         replicas' `requests` in `/_lb/status` after the phase minus before, next to the {} \
         plain `GET /home` sent during it: a loop would multiply them.\n",
        c.replicas,
        l.listen,
        l.adds.len(),
        l.plain.0
    );
    let _ = writeln!(
        md,
        "| request | expected | got | N before → after | answer |\n|---|---|---|---|---|"
    );
    for a in &l.adds {
        let got = a.status.map_or("no answer".into(), |s| s.to_string());
        let got = if a.status == Some(400) {
            got
        } else {
            format!("**{got}**")
        };
        let undone = a
            .undone
            .as_ref()
            .map_or(String::new(), |u| format!(" ({u})"));
        let _ = writeln!(
            md,
            "| `/add` `{}` | 400 | {got} | {} → {}{} | `{}` |",
            a.address,
            a.n_before,
            a.n_after,
            cell(&undone),
            cell(&short_answer(&a.answer))
        );
    }
    match &l.mark {
        LoopMark::NotShown => {
            let _ = writeln!(
                md,
                "| `GET /home` with its own `Via` mark | 508 | lb shows no loop mark (no `via` in `/_lb/status`): not sent | – | – |"
            );
        }
        LoopMark::Forged {
            via,
            status,
            answer,
        } => {
            let got = status.map_or("no answer".into(), |s| s.to_string());
            let got = if *status == Some(508) {
                got
            } else {
                format!("**{got}**")
            };
            let _ = writeln!(
                md,
                "| `GET /home` with `Via: {}` | 508 | {got} | – | `{}` |",
                cell(via),
                cell(&short_answer(answer))
            );
        }
    }
    md.push('\n');
    let _ = writeln!(
        md,
        "- {} of {} `/add`s refused with 400; N {} → {} over the phase; {} of {} plain requests \
         answered 200; **{} requests reached replicas** during the phase.\n",
        l.refused(),
        l.adds.len(),
        l.n.0,
        l.n.1,
        l.plain.1,
        l.plain.0,
        l.reached_replicas
    );
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.0} ms"))
}

fn supervisors_part(md: &mut String, runs: &[SupervisorRun], concurrency: usize) {
    let _ = writeln!(md, "### A replica killed, per supervisor\n");
    let _ = writeln!(
        md,
        "The kill once more for each supervisor, each with a load balancer of its own (its own \
         `lb.toml` and port, {} replicas, 100 ms heartbeats), while {concurrency} clients send \
         `GET /home`. The victim is the replica serving the most slots (the same ring each time, \
         so the same server id). **Serving again** is the first poll (every {} ms after the \
         kill, once the victim was seen out of service) at which `/_lb/status` lists the \
         victim's *server id* healthy, `GET /home` with a request id the victim answered before \
         the kill (so routed to its slots) is answered by that replica, and `/rep` shows N \
         again. By server id and not hostname, since the process and Docker supervisors replace \
         the victim under a new hostname while Swarm restarts its task and `lb` keeps the \
         replica. The polls start as the kill is issued; times are **from the victim's death**: \
         the moment `kill(2)` returned for a process, the engine's `die` event for a container \
         (a `docker kill` command takes a while of its own, in brackets, and the container dies \
         somewhere within it).\n",
        a3_supervisors::N,
        crate::lb_api::POLL.as_millis()
    );
    let _ = writeln!(
        md,
        "| supervisor | victim (server id) | killed with | victim died | serving again after its death | \
         first client answer from that id | serving with the id now | requests sent | failed (by kind) | N before → after |\n\
         |---|---|---|---|---|---|---|---|---|---|"
    );
    for r in runs {
        match &r.outcome {
            PhaseOutcome::Skipped(why) => {
                let _ = writeln!(
                    md,
                    "| {} | skipped: {} | – | – | – | – | – | – | – | – |",
                    r.supervisor,
                    cell(why)
                );
            }
            PhaseOutcome::Done(k) => supervisor_row(md, r.supervisor, k),
        }
    }
    md.push('\n');
    let mut timed: Vec<(String, f64)> = runs
        .iter()
        .filter_map(|r| match &r.outcome {
            PhaseOutcome::Done(k) => k
                .serving_after_death_ms
                .map(|t| (r.supervisor.to_string(), t)),
            PhaseOutcome::Skipped(_) => None,
        })
        .collect();
    timed.sort_by(|a, b| a.1.total_cmp(&b.1));
    if let [(fastest, base), rest @ ..] = timed.as_slice() {
        if !rest.is_empty() {
            let others: Vec<String> = rest
                .iter()
                .map(|(name, t)| format!("{name} {t:.0} ms ({:.1} × as long)", t / base.max(1.0)))
                .collect();
            let _ = writeln!(
                md,
                "- Serving again soonest after the death: **{fastest}** ({base:.0} ms); then {}.",
                others.join(", ")
            );
        }
    }
    for r in runs {
        if let PhaseOutcome::Done(k) = &r.outcome {
            let window = k.failure_window_ms.map_or(String::new(), |(a, b)| {
                format!("; client failures from {a:.0} ms to {b:.0} ms after the death")
            });
            let cleanup = k
                .cleanup
                .as_ref()
                .map_or(String::new(), |c| format!("; clean-up: {c}"));
            let _ = writeln!(
                md,
                "- {}: `lb` had {} healthy replicas {:.0} ms after it was started; polled from the \
                 moment the kill was issued, the victim was seen out of service after {} and \
                 serving again after {} ({} polls){window}; `lb` stopped on SIGTERM ({}){cleanup}; \
                 {:.1} s in all.",
                r.supervisor,
                a3_supervisors::N,
                k.ready_ms,
                opt_ms(k.out_after_ms),
                opt_ms(k.serving_again_ms),
                k.polls,
                k.lb_exit,
                k.took_ms / 1000.0
            );
        }
    }
    md.push('\n');
}

fn supervisor_row(md: &mut String, kind: a3_supervisors::Kind, k: &SupervisedKill) {
    let failed = if k.failed == 0 {
        "0".to_owned()
    } else {
        let kinds: Vec<String> = k
            .traffic
            .failed
            .iter()
            .map(|(kind, n)| format!("{n} × {kind}"))
            .collect();
        format!("{} ({})", k.failed, kinds.join(", "))
    };
    let mut now = match &k.replacement {
        None => "nobody".to_owned(),
        Some(h) if *h == k.victim => format!("{h} (the same hostname)"),
        Some(h) => format!("{h} (new)"),
    };
    if !k.victim_id_back {
        now.push_str(", not healthy");
    }
    let process = k.how.starts_with("SIGKILL");
    let how = if process {
        format!("`{}`", k.how)
    } else {
        format!("`{}` ({:.0} ms)", k.how, k.kill_ms)
    };
    let died = match k.died_ms {
        _ if process => "as `kill(2)` returned".to_owned(),
        None => "? (no `die` event read: times from the command's return)".to_owned(),
        Some(t) => format!("{t:.0} ms into the command (its `die` event)"),
    };
    let again = k
        .serving_after_death_ms
        .map_or("not within the limit".into(), |t| format!("**{t:.0} ms**"));
    let _ = writeln!(
        md,
        "| {kind} | {} ({}) | {} | {} | {again} | {} | {} | {} | {} | {} → {} |",
        cell(&k.victim),
        k.victim_id,
        cell(&how),
        cell(&died),
        opt_ms(k.first_client_after_death_ms),
        cell(&now),
        k.traffic.sent,
        cell(&failed),
        k.n_before,
        k.n_after
    );
}

fn ms(summary: Option<stats::Summary>, f: impl Fn(&stats::Summary) -> f64) -> String {
    summary.map_or("–".into(), |s| format!("{:.0} ms", f(&s)))
}

fn hang_part(md: &mut String, h: &Hang, figures: &Figures) {
    let _ = writeln!(md, "### A replica hung\n");
    image(md, "A-3: hang timeline", &figures.a3_hang);
    let _ = writeln!(
        md,
        "- Stopped **{}** (server id {}, the replica serving the most slots: {}) with {} at t = {:.2} s for \
         {:.1} s, while {} clients sent `GET /home` with random request ids, each request with a {} s timeout; \
         then {}.",
        h.victim,
        h.victim_id,
        h.victim_slots,
        h.how,
        h.stopped_ms / 1000.0,
        h.stopped_for_ms / 1000.0,
        h.clients,
        h.request_timeout_ms as f64 / 1000.0,
        h.resumed
    );
    let replacement = h.replacement.as_ref().map_or(
        "no replacement with its server id was seen".into(),
        |(host, id)| format!("its replacement is **{host}** with server id {id}"),
    );
    match h.left_ring_after_ms {
        Some(t) => {
            let _ = writeln!(
                md,
                "- It was out of `/rep` **{t:.0} ms** after the stop ({} polls); {replacement}.",
                h.polls
            );
        }
        None => {
            let _ = writeln!(
                md,
                "- It did **not** leave `/rep` while it was stopped ({} polls); {replacement}.",
                h.polls
            );
        }
    }
    let sent = h.traffic.sent;
    let failed = if h.failed == 0 {
        "**none failed**".to_owned()
    } else {
        let window = h.failure_window_ms.map_or(String::new(), |(a, b)| {
            format!(
                ", between t = {:.3} s and t = {:.3} s",
                a / 1000.0,
                b / 1000.0
            )
        });
        format!(
            "**{} failed** ({:.2} %: {}{window})",
            h.failed,
            h.failed as f64 * 100.0 / sent.max(1) as f64,
            a3_faults::failure_kinds(&h.traffic)
        )
    };
    let _ = writeln!(
        md,
        "- {sent} requests were sent: {} answered 200, {failed}. A failure is any other status, a transport error \
         or no answer within the timeout.",
        h.answered
    );
    if let Some(note) = a3_faults::ran_out(&h.traffic) {
        let _ = writeln!(md, "- Note: {note}.");
    }
    let _ = writeln!(
        md,
        "- Latency over all of them: median {}, p99 **{}**, max **{}**.",
        ms(h.latency_ms, |s| s.median),
        ms(h.latency_ms, |s| s.p99),
        ms(h.latency_ms, |s| s.max)
    );
    if let Some(r) = h.retried_by_lb {
        let _ = writeln!(
            md,
            "- The load balancer sent {r} requests on to another replica meanwhile (`retries` in `/_lb/status`)."
        );
    }
    if let Some(gone) = h.victim_gone {
        let _ = writeln!(
            md,
            "- The stopped process {} afterwards.",
            if gone { "was gone" } else { "was still alive" }
        );
    }
    md.push('\n');
}

fn slowloris_part(md: &mut String, s: &Slowloris, figures: &Figures) {
    let _ = writeln!(md, "### Slow loris\n");
    image(md, "A-3: slow loris", &figures.a3_slowloris);
    let head = String::from_utf8_lossy(LORIS_HEAD).replace("\r\n", "\\r\\n");
    let not_opened = match &s.connect_failed {
        (0, _) => String::new(),
        (n, why) => format!(
            " ({n} could not be opened: {})",
            why.as_deref().unwrap_or("no reason")
        ),
    };
    let _ = writeln!(
        md,
        "- {} of {} connections{not_opened} each sent `{head}` and then one byte of a header line every {:.0} s, \
         never finishing the request head, while {} normal clients sent `GET /home`.",
        s.opened,
        s.planned,
        s.trickle_ms as f64 / 1000.0,
        s.clients
    );
    let setting = match s.header_timeout_ms {
        Some(t) => format!(
            "The load balancer's `[proxy] client_header_timeout_ms` was **{t} ms** (set by `analysis` in the \
             `lb.toml` it wrote; the default is 10 000 ms)"
        ),
        None => "The load balancer's `[proxy] client_header_timeout_ms` is not known here (it was given with \
                 `--lb`; the default is 10 000 ms)"
            .to_owned(),
    };
    let _ = writeln!(
        md,
        "- {setting}; the attack was bounded to {:.0} s and took {:.1} s.",
        s.bound_ms / 1000.0,
        s.attack_ms / 1000.0
    );
    let after = |summary: Option<stats::Summary>, what: &str| {
        summary.map_or(String::new(), |x| {
            format!(
                ", {what} {:.0} ms (min) / {:.0} ms (median) / {:.0} ms (max) after connecting",
                x.min, x.median, x.max
            )
        })
    };
    let _ = writeln!(
        md,
        "- **{} of {}** were answered `408 Request Timeout`{}; {} got another answer.",
        s.answered_408,
        s.opened,
        after(s.to_408_ms, "the answer came"),
        s.answered_other
    );
    let _ = writeln!(
        md,
        "- {} were closed by the load balancer ({} without an answer){}; **{} still open** at the end of the \
         bound.",
        s.closed,
        s.closed_without_answer,
        after(s.to_close_ms, "the close came"),
        s.still_open
    );
    let failed = if s.failed == 0 {
        "none failed".to_owned()
    } else {
        format!(
            "**{} failed** ({})",
            s.failed,
            a3_faults::failure_kinds(&s.traffic)
        )
    };
    let _ = writeln!(
        md,
        "- The normal clients sent {} requests meanwhile: {} answered 200, {failed}; latency median {}, p99 **{}**, \
         max {}.",
        s.traffic.sent,
        s.answered,
        ms(s.latency_ms, |x| x.median),
        ms(s.latency_ms, |x| x.p99),
        ms(s.latency_ms, |x| x.max)
    );
    if let Some(note) = a3_faults::ran_out(&s.traffic) {
        let _ = writeln!(md, "- Note: {note}.");
    }
    md.push('\n');
}

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

fn a4_section(md: &mut String, a4: &A4, figures: &Figures) {
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

/// The whole report.
pub fn render(results: &Results, figures: &Figures, data_files: &[String]) -> String {
    let s = &results.settings;
    let mut md = String::new();
    let _ = writeln!(md, "# Load balancer analysis\n");
    let _ = writeln!(
        md,
        "Made by `analysis` (see `analysis/README.md`). Every number below was measured or computed in this run; \
         rerun with `--seed {}` for the same request ids.\n",
        s.seed
    );
    let _ = writeln!(md, "| setting | value |\n|---|---|");
    let _ = writeln!(
        md,
        "| load balancer | {} ({}) |",
        s.lb_url,
        if s.own_lb {
            format!(
                "started by analysis, 3 replicas, 100 ms heartbeats, {} ms client header timeout",
                crate::config_file::HEADER_TIMEOUT_MS
            )
        } else {
            "given with --lb".to_owned()
        }
    );
    let _ = writeln!(md, "| requests per measurement | {} |", s.requests);
    let _ = writeln!(md, "| requests in flight | {} |", s.concurrency);
    let _ = writeln!(md, "| seed | {} |", s.seed);
    let _ = writeln!(md, "| plugin directory | `{}` |", s.plugin_dir);
    let _ = writeln!(md, "| run time | {:.1} s |\n", results.elapsed_s);
    let a4 = results.a4.as_ref();
    if let Some(m) = &results.a1 {
        a1_section(&mut md, m, figures, a4, s.concurrency);
    }
    if let Some(a2) = &results.a2 {
        a2_section(&mut md, a2, figures);
    }
    if let Some(a3) = &results.a3 {
        a3_section(&mut md, a3, figures, s.concurrency);
    }
    if let Some(a4) = a4 {
        a4_section(&mut md, a4, figures);
    }
    if let Some(a5) = &results.a5 {
        a5_section(&mut md, a5, figures);
    }
    let _ = writeln!(md, "## Raw data\n");
    for f in data_files {
        let _ = writeln!(md, "- [{f}]({f})");
    }
    md
}

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

fn a5_section(md: &mut String, a5: &A5, figures: &Figures) {
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
