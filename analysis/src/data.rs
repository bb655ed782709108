//! The results of a run, and their raw data as CSV files and one JSON file.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::error::{io, Error, Result};
use crate::experiments::a2::A2;
use crate::experiments::a3::control::{Decision, SaveOutcome};
use crate::experiments::a3::loop_attempt::{LoopAttempt, LoopMark};
use crate::experiments::a3::supervisors::SupervisorRun;
use crate::experiments::a3::{PhaseOutcome, A3};
use crate::experiments::a4::A4;
use crate::experiments::a5::A5;
use crate::experiments::a6::A6;
use crate::experiments::Measurement;

/// How the run was made.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Requests per measurement.
    pub requests: usize,
    /// Requests in flight.
    pub concurrency: usize,
    /// Seed of the request ids.
    pub seed: u64,
    /// The load balancer's URL.
    pub lb_url: String,
    /// Whether `analysis` started it.
    pub own_lb: bool,
    /// Where the hash plugins were looked up.
    pub plugin_dir: String,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// How the run was made.
    pub settings: Settings,
    ///
    pub a1: Option<Measurement>,
    ///
    pub a2: Option<A2>,
    ///
    pub a3: Option<A3>,
    ///
    pub a4: Option<A4>,
    ///
    pub a5: Option<A5>,
    ///
    pub a6: Option<A6>,
    /// Wall time of the whole run, seconds.
    pub elapsed_s: f64,
}

/// A CSV field, quoted when needed.
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

struct Csv {
    text: String,
}

impl Csv {
    fn new(header: &[&str]) -> Csv {
        Csv {
            text: format!("{}\n", header.join(",")),
        }
    }

    fn row(&mut self, fields: &[String]) {
        let line: Vec<String> = fields.iter().map(|f| field(f)).collect();
        let _ = writeln!(self.text, "{}", line.join(","));
    }

    fn write(self, dir: &Path, name: &str, written: &mut Vec<String>) -> Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, self.text).map_err(io(&path))?;
        written.push(name.to_owned());
        Ok(())
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn f(v: f64) -> String {
    format!("{v:.6}")
}

fn load_rows(csv: &mut Csv, prefix: &[String], m: &Measurement) {
    let served = m.served().max(1) as f64;
    for r in &m.replicas {
        let mut row = prefix.to_vec();
        row.extend([
            r.hostname.clone(),
            opt(r.id),
            r.requests.to_string(),
            f(r.requests as f64 / served),
        ]);
        csv.row(&row);
    }
}

fn spread_row(csv: &mut Csv, prefix: &[String], m: &Measurement) {
    let mut row = prefix.to_vec();
    row.push(m.n.to_string());
    match &m.spread {
        Some(s) => row.extend([f(s.avg), f(s.max), f(s.min), f(s.max_over_avg), f(s.cv)]),
        None => row.extend(vec![String::new(); 5]),
    }
    row.extend([
        m.sent.to_string(),
        m.failures().to_string(),
        f(m.elapsed_ms),
    ]);
    csv.row(&row);
}

const SPREAD_HEADER: [&str; 9] = [
    "n",
    "avg",
    "max",
    "min",
    "max_over_avg",
    "cv",
    "sent",
    "failed",
    "elapsed_ms",
];

/// Write `results.json` and one CSV per table into `dir`; answers the file names.
pub fn write_all(dir: &Path, results: &Results) -> Result<Vec<String>> {
    let mut written = Vec::new();
    let json = serde_json::to_string_pretty(results).map_err(|source| Error::Json {
        what: "results".into(),
        source,
    })?;
    let path = dir.join("results.json");
    std::fs::write(&path, json + "\n").map_err(io(&path))?;
    written.push("results.json".into());

    if let Some(m) = &results.a1 {
        let mut csv = Csv::new(&["hostname", "id", "requests", "share"]);
        load_rows(&mut csv, &[], m);
        csv.write(dir, "a1.csv", &mut written)?;
    }
    if let Some(a2) = &results.a2 {
        let mut loads = Csv::new(&["n", "hostname", "id", "requests", "share"]);
        let mut spread = Csv::new(&SPREAD_HEADER);
        for m in &a2.points {
            load_rows(&mut loads, &[m.n.to_string()], m);
            spread_row(&mut spread, &[], m);
        }
        loads.write(dir, "a2.csv", &mut written)?;
        spread.write(dir, "a2_spread.csv", &mut written)?;
    }
    if let Some(a3) = &results.a3 {
        let mut checks = Csv::new(&["verdict", "name", "request", "expected", "got"]);
        for c in &a3.checks {
            let verdict = serde_json::to_value(c.verdict)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned));
            checks.row(&[
                verdict.unwrap_or_default(),
                c.name.clone(),
                c.request.clone(),
                c.expected.clone(),
                c.got.clone(),
            ]);
        }
        checks.write(dir, "a3_checks.csv", &mut written)?;
        if let PhaseOutcome::Done(k) = &a3.kill {
            let mut timeline = Csv::new(&["start_ms", "ok", "failed"]);
            for b in &k.timeline {
                timeline.row(&[
                    b.start_ms.to_string(),
                    b.ok.to_string(),
                    b.failed.to_string(),
                ]);
            }
            timeline.write(dir, "a3_timeline.csv", &mut written)?;
        }
        if let PhaseOutcome::Done(h) = &a3.hang {
            let mut timeline = Csv::new(&["start_ms", "ok", "failed"]);
            for b in &h.timeline {
                timeline.row(&[
                    b.start_ms.to_string(),
                    b.ok.to_string(),
                    b.failed.to_string(),
                ]);
            }
            timeline.write(dir, "a3_hang_timeline.csv", &mut written)?;
        }
        if let Some(slowloris) = &a3.slowloris {
            let mut loris = Csv::new(&[
                "connection",
                "opened_ms",
                "bytes_sent",
                "answer_status",
                "answer_after_ms",
                "closed_after_ms",
            ]);
            for (i, c) in slowloris.connections.iter().enumerate() {
                loris.row(&[
                    i.to_string(),
                    f(c.opened_ms),
                    c.bytes_sent.to_string(),
                    opt(c.answer.map(|a| a.0)),
                    opt(c.answer.map(|a| f(a.1))),
                    opt(c.closed_after_ms.map(f)),
                ]);
            }
            loris.write(dir, "a3_slowloris.csv", &mut written)?;
        }
        if !a3.supervisors.is_empty() {
            a3_supervisors_csv(dir, &a3.supervisors, &mut written)?;
        }
        if let Some(PhaseOutcome::Done(c)) = &a3.control {
            if !c.saves.is_empty() {
                a3_stall_csv(dir, &c.saves, &mut written)?;
            }
            if let Some(l) = &c.loop_attempt {
                a3_loop_csv(dir, l, &mut written)?;
            }
        }
    }
    if let Some(a4) = &results.a4 {
        if !a4.runs.is_empty() {
            let mut a1 = Csv::new(&["hash", "hostname", "id", "requests", "share"]);
            let mut spread = Csv::new(&[&["hash"][..], &SPREAD_HEADER].concat());
            for run in &a4.runs {
                load_rows(&mut a1, std::slice::from_ref(&run.name), &run.a1);
                for m in &run.a2.points {
                    spread_row(&mut spread, std::slice::from_ref(&run.name), m);
                }
            }
            a1.write(dir, "a4_a1.csv", &mut written)?;
            spread.write(dir, "a4_a2_spread.csv", &mut written)?;
        }
        let mut shares = Csv::new(&["hash", "n", "id", "slots", "slot_share", "id_share"]);
        let mut moves = Csv::new(&[
            "hash",
            "change",
            "from_n",
            "to_n",
            "changed_id",
            "moved",
            "necessary",
            "ideal",
        ]);
        for h in &a4.offline.hashes {
            for s in &h.shares {
                for r in &s.replicas {
                    shares.row(&[
                        h.name.clone(),
                        s.n.to_string(),
                        r.id.to_string(),
                        r.slots.to_string(),
                        f(r.slot_share),
                        f(r.id_share),
                    ]);
                }
            }
            for (change, list) in [("add", &h.adds), ("remove", &h.removes)] {
                for m in list {
                    moves.row(&[
                        h.name.clone(),
                        change.into(),
                        m.from_n.to_string(),
                        m.to_n.to_string(),
                        m.changed_id.to_string(),
                        f(m.moved),
                        f(m.necessary),
                        f(m.ideal),
                    ]);
                }
            }
        }
        shares.write(dir, "a4_offline_shares.csv", &mut written)?;
        moves.write(dir, "a4_offline_moves.csv", &mut written)?;
    }
    if let Some(a5) = &results.a5 {
        a5_csvs(dir, a5, &mut written)?;
    }
    if let Some(a6) = &results.a6 {
        a6_csvs(dir, a6, &mut written)?;
    }
    Ok(written)
}

/// Failures per kind as `kind=count; …`.
pub fn kinds(failed: &std::collections::BTreeMap<String, u64>) -> String {
    failed
        .iter()
        .map(|(kind, n)| format!("{kind}={n}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The columns of `a3_supervisors.csv`.
const SUPERVISORS_HEADER: [&str; 24] = [
    "supervisor",
    "ran",
    "skipped_because",
    "victim",
    "victim_id",
    "how",
    "kill_ms",
    "n_before",
    "n_after",
    "out_after_ms",
    "serving_again_ms",
    "died_ms",
    "serving_after_death_ms",
    "first_client_after_death_ms",
    "replacement",
    "same_hostname",
    "victim_id_back",
    "sent",
    "ok",
    "failed",
    "failed_by_kind",
    "ready_ms",
    "cleanup",
    "took_ms",
];

fn a3_supervisors_csv(dir: &Path, runs: &[SupervisorRun], written: &mut Vec<String>) -> Result<()> {
    let mut csv = Csv::new(&SUPERVISORS_HEADER);
    for r in runs {
        let mut row = vec![r.supervisor.name().to_owned()];
        match &r.outcome {
            PhaseOutcome::Skipped(why) => {
                row.extend(["false".into(), why.clone()]);
                row.resize(SUPERVISORS_HEADER.len(), String::new());
            }
            PhaseOutcome::Done(k) => row.extend([
                "true".into(),
                String::new(),
                k.victim.clone(),
                k.victim_id.to_string(),
                k.how.clone(),
                f(k.kill_ms),
                k.n_before.to_string(),
                k.n_after.to_string(),
                opt(k.out_after_ms.map(f)),
                opt(k.serving_again_ms.map(f)),
                opt(k.died_ms.map(f)),
                opt(k.serving_after_death_ms.map(f)),
                opt(k.first_client_after_death_ms.map(f)),
                opt(k.replacement.clone()),
                opt(k.replacement.as_ref().map(|h| *h == k.victim)),
                k.victim_id_back.to_string(),
                k.traffic.sent.to_string(),
                k.traffic.successes().to_string(),
                k.failed.to_string(),
                kinds(&k.traffic.failed),
                f(k.ready_ms),
                k.cleanup.clone().unwrap_or_default(),
                f(k.took_ms),
            ]),
        }
        csv.row(&row);
    }
    csv.write(dir, "a3_supervisors.csv", written)
}

/// The columns of `a3_stall.csv`, one row per hostile file (made or skipped).
pub const STALL_HEADER: [&str; 30] = [
    "file",
    "what",
    "made",
    "skipped_because",
    "bytes",
    "victim",
    "victim_id",
    "victim_pid",
    "probe_id",
    "save_to_kill_ms",
    "out_ms",
    "listed_again_ms",
    "serving_again_ms",
    "replacement",
    "replacement_pid",
    "healthy_replaced",
    "left_ring",
    "restarts_before",
    "restarts_after",
    "panics_before",
    "panics_after",
    "requests",
    "failed",
    "failed_by_kind",
    "decision",
    "decided_after_ms",
    "last_error",
    "config_applied_ms",
    "table_builds_ms",
    "restored_after_ms",
];

fn a3_stall_csv(dir: &Path, saves: &[SaveOutcome], written: &mut Vec<String>) -> Result<()> {
    let mut csv = Csv::new(&STALL_HEADER);
    for save in saves {
        let row = match save {
            SaveOutcome::Skipped(file, why) => {
                let mut row = vec![
                    file.number().to_string(),
                    file.describe(),
                    "false".into(),
                    why.clone(),
                ];
                row.resize(STALL_HEADER.len(), String::new());
                row
            }
            SaveOutcome::Done(s) => {
                let (decision, after, error) = match &s.decision {
                    Decision::Refused {
                        message, after_ms, ..
                    } => ("refused", Some(*after_ms), message.clone()),
                    Decision::Applied { after_ms, .. } => {
                        ("applied", Some(*after_ms), String::new())
                    }
                    Decision::Undecided { .. } => ("undecided", None, String::new()),
                };
                vec![
                    s.number.to_string(),
                    s.what.clone(),
                    "true".into(),
                    String::new(),
                    s.bytes.to_string(),
                    s.victim.clone(),
                    s.victim_id.to_string(),
                    s.victim_pid.to_string(),
                    s.probe_id.to_string(),
                    f(s.save_to_kill_ms),
                    opt(s.out_ms.map(f)),
                    opt(s.listed_again_ms.map(f)),
                    opt(s.serving_again_ms.map(f)),
                    opt(s.replacement.as_ref().map(|r| r.0.clone())),
                    opt(s.replacement.as_ref().map(|r| r.1)),
                    s.healthy_replaced.to_string(),
                    s.disturbed
                        .iter()
                        .filter(|d| d.left_ring)
                        .count()
                        .to_string(),
                    opt(s.restarts.0),
                    opt(s.restarts.1),
                    opt(s.panics.0),
                    opt(s.panics.1),
                    s.traffic.sent.to_string(),
                    s.failed.to_string(),
                    kinds(&s.traffic.failed),
                    decision.into(),
                    opt(after.map(f)),
                    error,
                    opt(s.config_applied_ms.map(f)),
                    s.table_builds_ms
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(" "),
                    s.restored.as_ref().map(|t| f(*t)).unwrap_or_default(),
                ]
            }
        };
        csv.row(&row);
    }
    csv.write(dir, "a3_stall.csv", written)
}

/// The columns of `a3_loop.csv`: one row per `/add`, one for the request with the mark, one
/// for the plain requests of the phase (with the requests that reached replicas).
pub const LOOP_HEADER: [&str; 9] = [
    "request",
    "sent",
    "expected_status",
    "status",
    "n_before",
    "n_after",
    "answer",
    "undone",
    "reached_replicas",
];

fn a3_loop_csv(dir: &Path, l: &LoopAttempt, written: &mut Vec<String>) -> Result<()> {
    let mut csv = Csv::new(&LOOP_HEADER);
    for a in &l.adds {
        csv.row(&[
            format!("POST /add {}", a.address),
            "true".into(),
            "400".into(),
            opt(a.status),
            a.n_before.to_string(),
            a.n_after.to_string(),
            a.answer.clone(),
            a.undone.clone().unwrap_or_default(),
            String::new(),
        ]);
    }
    let mark = match &l.mark {
        LoopMark::NotShown => [
            "GET /home with its own Via mark".to_owned(),
            "false".into(),
            "508".into(),
            String::new(),
            String::new(),
            String::new(),
            "lb shows no loop mark".into(),
            String::new(),
            String::new(),
        ],
        LoopMark::Forged {
            via,
            status,
            answer,
        } => [
            format!("GET /home with Via: {via}"),
            "true".into(),
            "508".into(),
            opt(*status),
            String::new(),
            String::new(),
            answer.clone(),
            String::new(),
            String::new(),
        ],
    };
    csv.row(&mark);
    csv.row(&[
        format!("{} plain GET /home", l.plain.0),
        "true".into(),
        "200".into(),
        String::new(),
        l.n.0.to_string(),
        l.n.1.to_string(),
        format!("{} answered 200", l.plain.1),
        String::new(),
        l.reached_replicas.to_string(),
    ]);
    csv.write(dir, "a3_loop.csv", written)
}

fn a5_csvs(dir: &Path, a5: &A5, written: &mut Vec<String>) -> Result<()> {
    let mut offline = Csv::new(&[
        "algorithm",
        "hash",
        "n",
        "slot_max_over_avg",
        "request_max_over_avg",
        "removed_moved",
        "removed_over_ideal",
        "removed_worst_over_ideal",
        "removed_beyond",
        "added_moved",
        "added_over_ideal",
        "added_beyond",
        "build_ms",
        "lookup_ns",
    ]);
    for c in &a5.curves {
        for p in &c.points {
            offline.row(&[
                c.setup.algorithm.to_owned(),
                c.setup.hash.to_owned(),
                p.n.to_string(),
                f(p.slot_max_over_avg),
                f(p.request_max_over_avg),
                f(p.removed_moved),
                f(p.removed_over_ideal),
                f(p.removed_worst_over_ideal),
                f(p.removed_beyond),
                f(p.added_moved),
                f(p.added_over_ideal),
                f(p.added_beyond),
                f(p.build_ms),
                f(p.lookup_ns),
            ]);
        }
    }
    offline.write(dir, "a5_offline.csv", written)?;
    if !a5.live.is_empty() {
        let mut live = Csv::new(&[
            "algorithm",
            "hash",
            "id",
            "hostname",
            "requests",
            "share",
            "predicted",
        ]);
        for r in &a5.live {
            for s in &r.replicas {
                live.row(&[
                    r.setup.algorithm.to_owned(),
                    r.setup.hash.to_owned(),
                    s.id.to_string(),
                    s.hostname.clone(),
                    s.requests.to_string(),
                    f(s.share),
                    f(s.predicted),
                ]);
            }
        }
        live.write(dir, "a5_live.csv", written)?;
    }
    if !a5.hot.is_empty() {
        let mut hot = Csv::new(&["setting", "available", "sent", "failed", "busiest_share"]);
        for h in &a5.hot {
            hot.row(&[
                h.label.clone(),
                h.unavailable.is_none().to_string(),
                h.sent.to_string(),
                h.failed.to_string(),
                f(h.busiest_share),
            ]);
        }
        hot.write(dir, "a5_hot_key.csv", written)?;
    }
    Ok(())
}

/// The columns of `a6_plan.csv`: one row, the plan against the `/add` made.
pub const PLAN_HEADER: [&str; 21] = [
    "slots",
    "added",
    "weight",
    "plan_ms",
    "unchanged_by_plan",
    "joined_ms",
    "plan_owners",
    "ring_owners",
    "owners_equal",
    "slots_moved",
    "requests_moved",
    "requests_minimum",
    "share_after",
    "total_weight_after",
    "sample",
    "sample_failed",
    "routed_as_ring",
    "moved_predicted",
    "moved_actual",
    "as_planned",
    "restored",
];

fn a6_csvs(dir: &Path, a6: &A6, written: &mut Vec<String>) -> Result<()> {
    let mut offline = Csv::new(&[
        "algorithm",
        "hash",
        "n",
        "total_weight",
        "slot_error_points",
        "request_error_points",
        "ring_marks_match",
    ]);
    let mut shares = Csv::new(&[
        "algorithm",
        "hash",
        "n",
        "id",
        "weight",
        "target",
        "slot_share",
        "request_share",
        "marks",
    ]);
    let mut change = Csv::new(&[
        "algorithm",
        "hash",
        "n",
        "id",
        "from",
        "to",
        "slots_moved",
        "slots_minimum",
        "slots_over_minimum",
        "requests_moved",
        "requests_minimum",
        "over_minimum",
        "only_to_changed",
        "moved_elsewhere",
    ]);
    for c in &a6.curves {
        let (algorithm, hash) = (c.setup.algorithm.to_owned(), c.setup.hash.to_owned());
        for p in &c.points {
            offline.row(&[
                algorithm.clone(),
                hash.clone(),
                p.n.to_string(),
                p.total_weight.to_string(),
                f(p.slot_error_points),
                f(p.request_error_points),
                opt(p.ring_marks_match),
            ]);
            for r in &p.replicas {
                shares.row(&[
                    algorithm.clone(),
                    hash.clone(),
                    p.n.to_string(),
                    r.id.to_string(),
                    r.weight.to_string(),
                    f(r.target),
                    f(r.slot_share),
                    f(r.request_share),
                    opt(r.marks),
                ]);
            }
            let w = &p.change;
            change.row(&[
                algorithm.clone(),
                hash.clone(),
                p.n.to_string(),
                w.id.to_string(),
                w.from.to_string(),
                w.to.to_string(),
                w.slots_moved.to_string(),
                w.slots_minimum.to_string(),
                f(w.slots_over_minimum),
                f(w.requests_moved),
                f(w.requests_minimum),
                f(w.over_minimum),
                w.only_to_changed.to_string(),
                f(w.moved_elsewhere),
            ]);
        }
    }
    offline.write(dir, "a6_offline.csv", written)?;
    shares.write(dir, "a6_offline_shares.csv", written)?;
    change.write(dir, "a6_weight_change.csv", written)?;
    if let Some(p) = a6.plan.as_ref().and_then(PhaseOutcome::done) {
        let mut csv = Csv::new(&PLAN_HEADER);
        csv.row(&[
            p.slots.to_string(),
            p.added.clone(),
            p.weight.to_string(),
            f(p.plan_ms),
            p.unchanged_by_plan.to_string(),
            f(p.joined_ms),
            p.plan_owners.to_string(),
            p.ring_owners.to_string(),
            p.owners_equal.to_string(),
            p.slots_moved.to_string(),
            f(p.requests_moved),
            f(p.requests_minimum),
            f(p.share_after),
            p.total_weight_after.to_string(),
            p.sample.to_string(),
            p.sample_failed.to_string(),
            p.routed_as_ring.to_string(),
            p.moved_predicted.to_string(),
            p.moved_actual.to_string(),
            p.as_planned.to_string(),
            p.restored.to_string(),
        ]);
        csv.write(dir, "a6_plan.csv", written)?;
    }
    if let Some(r) = a6.ramp.as_ref().and_then(PhaseOutcome::done) {
        let mut csv = Csv::new(&[
            "start_ms",
            "served",
            "failed",
            "to_new",
            "share",
            "rate_new",
            "rate_all",
            "expected_share",
        ]);
        for b in &r.buckets {
            csv.row(&[
                b.start_ms.to_string(),
                b.served.to_string(),
                b.failed.to_string(),
                b.to_new.to_string(),
                f(b.share),
                f(b.rate_new),
                f(b.rate_all),
                opt(b.expected_share.map(f)),
            ]);
        }
        csv.write(dir, "a6_ramp.csv", written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fields of one CSV line (quotes as [`field`] writes them).
    fn fields(line: &str) -> Vec<String> {
        let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    cur.push('"');
                    chars.next();
                }
                ('"', _) => quoted = !quoted,
                (',', false) => out.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            }
        }
        out.push(cur);
        out
    }

    #[test]
    fn supervisor_rows_have_every_column() {
        use crate::experiments::a3::supervisors::{Kind, SupervisedKill};
        let kill = SupervisedKill {
            instance: Some("a3sup-docker-1-2".into()),
            ready_ms: 1000.0,
            victim: "Server 1".into(),
            victim_id: 1,
            how: "docker kill 0123456789ab".into(),
            kill_ms: 50.0,
            probe_id: 123_456,
            n_before: 3,
            n_after: 3,
            out_after_ms: Some(1.0),
            serving_again_ms: Some(900.0),
            died_ms: Some(30.0),
            serving_after_death_ms: Some(870.0),
            first_client_after_death_ms: Some(860.0),
            polls: 80,
            replacement: Some("S123456".into()),
            replacement_handle: None,
            victim_id_back: true,
            traffic: crate::load::Tally {
                planned: 10,
                sent: 10,
                served: [("Server 2".to_owned(), 8)].into(),
                failed: [("HTTP 502".to_owned(), 2)].into(),
            },
            failed: 2,
            failure_window_ms: Some((0.0, 5.0)),
            lb_exit: "exit status: 0".into(),
            cleanup: Some("0 containers left by lb removed, network x removed".into()),
            took_ms: 4000.0,
        };
        let runs = [
            SupervisorRun {
                supervisor: Kind::Docker,
                outcome: PhaseOutcome::Done(Box::new(kill)),
            },
            SupervisorRun {
                supervisor: Kind::Swarm,
                outcome: PhaseOutcome::Skipped("the swarm is not active, \"x\"".into()),
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let mut written = Vec::new();
        a3_supervisors_csv(dir.path(), &runs, &mut written).unwrap();
        assert_eq!(written, ["a3_supervisors.csv"]);
        let text = std::fs::read_to_string(dir.path().join("a3_supervisors.csv")).unwrap();
        let lines: Vec<Vec<String>> = text.lines().map(fields).collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines.iter().all(|l| l.len() == SUPERVISORS_HEADER.len()),
            "{text}"
        );
        let column = |name: &str| SUPERVISORS_HEADER.iter().position(|h| *h == name).unwrap();
        assert_eq!(lines[1][column("serving_again_ms")], "900.000000");
        assert_eq!(lines[1][column("serving_after_death_ms")], "870.000000");
        assert_eq!(lines[1][column("failed_by_kind")], "HTTP 502=2");
        assert_eq!(lines[1][column("same_hostname")], "false");
        assert_eq!(lines[2][column("ran")], "false");
        assert_eq!(
            lines[2][column("skipped_because")],
            "the swarm is not active, \"x\""
        );
    }

    #[test]
    fn control_rows_have_every_column() {
        use crate::experiments::a3::control::{Disturbed, Hostile, HostileSave};
        use crate::experiments::a3::loop_attempt::LoopAdd;
        let save = HostileSave {
            file: Hostile::HugeValue,
            number: 1,
            what: Hostile::HugeValue.describe(),
            bytes: 72_000,
            victim: "Server 9".into(),
            victim_id: 9,
            victim_pid: 4242,
            probe_id: 123_456,
            save_to_kill_ms: 0.05,
            out_ms: Some(10.0),
            listed_again_ms: Some(100.0),
            serving_again_ms: Some(120.0),
            replacement: Some(("S1".into(), 4343)),
            polls: 12,
            poll_error: None,
            disturbed: vec![Disturbed {
                id: 3,
                hostname: "Server 3".into(),
                pid_before: 1,
                replaced_by: None,
                left_ring: true,
            }],
            healthy_replaced: 0,
            restarts: (Some(0.0), Some(1.0)),
            panics: (Some(0.0), Some(0.0)),
            decision: Decision::Refused {
                message: "lb.toml:70:11: invalid type, \"x\"".into(),
                message_bytes: 31,
                after_ms: 40.0,
            },
            config_applied_ms: None,
            table_builds_ms: vec![4003, 12],
            n_after: 64,
            traffic: crate::load::Tally::default(),
            failed: 0,
            restored: Err("timed out".into()),
        };
        let saves = [
            SaveOutcome::Done(Box::new(save)),
            SaveOutcome::Skipped(Hostile::UnknownKeys, "the lb broke, \"really\"".into()),
        ];
        let loops = LoopAttempt {
            listen: "127.0.0.1:1".into(),
            adds: vec![LoopAdd {
                address: "[::ffff:127.0.0.1]:1".into(),
                status: Some(200),
                answer: "{\"message\": {}}".into(),
                n_before: 64,
                n_after: 65,
                undone: Some("removed again with /rm".into()),
            }],
            mark: LoopMark::NotShown,
            plain: (100, 100),
            reached_replicas: 100,
            n: (64, 64),
        };
        let dir = tempfile::tempdir().unwrap();
        let mut written = Vec::new();
        a3_stall_csv(dir.path(), &saves, &mut written).unwrap();
        a3_loop_csv(dir.path(), &loops, &mut written).unwrap();
        assert_eq!(written, ["a3_stall.csv", "a3_loop.csv"]);
        for (name, width, rows) in [
            ("a3_stall.csv", STALL_HEADER.len(), 3),
            ("a3_loop.csv", LOOP_HEADER.len(), 4),
        ] {
            let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
            let lines: Vec<Vec<String>> = text.lines().map(fields).collect();
            assert_eq!(lines.len(), rows, "{text}");
            assert!(lines.iter().all(|l| l.len() == width), "{text}");
        }
        let text = std::fs::read_to_string(dir.path().join("a3_stall.csv")).unwrap();
        let lines: Vec<Vec<String>> = text.lines().map(fields).collect();
        let column = |name: &str| STALL_HEADER.iter().position(|h| *h == name).unwrap();
        assert_eq!(lines[1][column("decision")], "refused");
        assert_eq!(lines[1][column("left_ring")], "1");
        assert_eq!(lines[1][column("restored_after_ms")], "");
        assert_eq!(lines[1][column("table_builds_ms")], "4003 12");
        assert_eq!(lines[2][column("made")], "false");
        assert_eq!(
            lines[2][column("skipped_because")],
            "the lb broke, \"really\""
        );
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(field("Server 1"), "Server 1");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
