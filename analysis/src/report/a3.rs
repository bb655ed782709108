//! The report's A-3 section: the endpoint checks, the kill, the kill per supervisor, the hang
//! and the slow-loris attack; the control-plane phases come from [`super::a3_control`].

use std::fmt::Write as _;

use super::a3_control::{loop_part, stall_part};
use super::common::{cell, image, ms, opt_ms};
use crate::experiments::a3::faults as a3_faults;
use crate::experiments::a3::hang::Hang;
use crate::experiments::a3::kill::Kill;
use crate::experiments::a3::slowloris::{Slowloris, LORIS_HEAD};
use crate::experiments::a3::supervisors::{self as a3_supervisors, SupervisedKill, SupervisorRun};
use crate::experiments::a3::{PhaseOutcome, Verdict, A3, NOT_CHOSEN};
use crate::figures::Figures;
use crate::stats;

pub(super) fn a3_section(md: &mut String, a3: &A3, figures: &Figures, concurrency: usize) {
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
