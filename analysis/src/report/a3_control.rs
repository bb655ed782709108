//! The report's part of A-3 on the control plane: the hostile saves and the loop attempt.

use std::fmt::Write as _;

use super::common::{cell, opt_ms};
use crate::experiments::a3::control::{self as a3_control, Decision, HostileSave, SaveOutcome};
use crate::experiments::a3::faults as a3_faults;
use crate::experiments::a3::loop_attempt::{LoopAttempt, LoopMark};
use crate::experiments::a3::plane::Control;

pub(super) fn stall_part(md: &mut String, c: &Control) {
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

pub(super) fn loop_part(md: &mut String, c: &Control, l: &LoopAttempt) {
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
