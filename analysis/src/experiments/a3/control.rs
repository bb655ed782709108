//! A-3's hostile saves ([`A3Phase::Stall`](crate::experiments::A3Phase::Stall)), against the
//! control-plane phases' own load balancer ([`super::plane`]): [`REPLICAS`] replicas run by the
//! process supervisor, rendezvous over [`CONTROL_SLOTS`] slots with the `spec` hash.
//!
//! **A save that would stall the controller**: for each [`Hostile`] file — (1) a rejected value
//! longer than 65 535 bytes, (2) rendezvous over 4 194 304 slots, (5) about 1 MiB of unknown
//! keys, numbered as in the issue that found them — while [`CLIENTS`] clients send `GET /home`
//! with random ids: the file is made from the running configuration (the replicas
//! `/_lb/status` lists, under their current names, plus the hostile part), written beside
//! `lb.toml` and renamed over it, and at once a replica is killed with SIGKILL. Measured: from
//! the kill to the victim's server id **serving again** — the first poll (every [`POLL`]) at
//! which `/_lb/status` lists that id healthy with a new pid *and* `GET /home` with a *probe id*
//! is answered by it. The probe id is a request id whose slot the victim owns under both the
//! normal table and the large one of (2) (rendezvous owners are computed here with
//! `lb-balance`, and the probe is checked against the live `lb` before the kill), so it is a
//! request routed to the victim's slots whichever table is published. Also: other replicas
//! replaced (a pid changed) or out of the ring at any poll — healthy replicas, which must keep
//! their process; `lb_replica_restarts_total` before and after; `lb_control_panics_total`; the
//! clients' requests and failures; and what became of the file: refused (`config.last_error`,
//! with its message) or applied (for (2), when `/_lb/status` shows the large table published).
//! After each file the normal one is saved again and the phase waits until it is applied.
//!
//! Every wait is bounded ([`RECOVERY_LIMIT`], [`DECISION_LIMIT`], [`RESTORE_LIMIT`], a deadline
//! on each request); a bad outcome is recorded, not an error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use lb_balance::hash::RingHash;
use lb_balance::rendezvous;
use rustix::process::Signal;
use serde::Serialize;

use super::faults::{ms, probe, shorten, signal, Traffic, PHASE_IDS, POLL_TIMEOUT};
use crate::client::{Connection, LbClient, Method};
use crate::config_file::{self, CONTROL_LIMITS_LINE, CONTROL_SLOTS};
use crate::error::{io, Error, Result};
use crate::experiments::Context;
use crate::lb_api::{eventually, Issue, Status, POLL};
use crate::lb_process::{Log, OwnedLb};
use crate::load::{self, Tally};
use crate::progress;

/// Replicas of the phases' load balancer (server ids 1..=64; `[limits] max_replicas`'s default).
pub const REPLICAS: usize = 64;
/// Clients sending `GET /home` with random ids during each hostile save.
pub const CLIENTS: usize = 32;
/// The `[ring] slots` of hostile file (2).
pub const LARGE_SLOTS: u32 = 4_194_304;
/// The length of hostile file (1)'s value, beyond the 65 535 bytes that once panicked the
/// controller.
pub const HUGE_VALUE: usize = 70_000;
/// Hostile file (5) grows by `kN = 1` lines until it has this many bytes (files over 1 MiB are
/// refused unread).
pub const UNKNOWN_KEYS_BYTES: usize = 1_000_000;
/// How long the victim may take to serve again (long: a debug build of `lb` may hold a
/// replacement back for two builds of the large table, some 20 s each).
pub const RECOVERY_LIMIT: Duration = Duration::from_secs(120);
/// How long a hostile file may take to be refused or applied, from its save.
pub const DECISION_LIMIT: Duration = Duration::from_secs(120);
/// The issue's bound on a replacement: the victim serving again within this of the kill.
pub const REPLACED_WITHIN: Duration = Duration::from_secs(1);
/// How long the normal file may take to be applied again, all replicas healthy.
pub const RESTORE_LIMIT: Duration = Duration::from_secs(60);
/// Client traffic before the save.
const BEFORE_SAVE: Duration = Duration::from_millis(300);
/// Client traffic after the victim serves again and the file is decided: at least this long…
const AFTER: Duration = Duration::from_millis(300);
/// …and at least this many more requests…
const AFTER_REQUESTS: u64 = 100;
/// …within this deadline.
const AFTER_LIMIT: Duration = Duration::from_secs(10);
/// The clients stop sending after this long whatever happens.
const TRAFFIC_LIMIT: Duration = Duration::from_secs(300);

/// A hostile `lb.toml`, numbered as in the issue ("Hard to break, round 2").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hostile {
    /// (1) `[proxy] workers = "xxx…"`, a rejected value of [`HUGE_VALUE`] bytes: it panicked
    /// the controller once.
    HugeValue,
    /// (2) `[ring] algorithm = "rendezvous"` with `slots = 4194304` over 64 replicas: its table
    /// was built on the controller's thread for 0.7–2 s, and healthy replicas were declared dead.
    LargeTable,
    /// (5) about 1 MiB of unknown keys (`kN = 1` lines under `[limits]`, after its
    /// `max_replicas`): checking them was quadratic and blocked the controller for many seconds.
    UnknownKeys,
}

impl Hostile {
    /// Every hostile file, in the order they are saved.
    pub const ALL: [Hostile; 3] = [
        Hostile::HugeValue,
        Hostile::LargeTable,
        Hostile::UnknownKeys,
    ];

    /// Its number in the issue.
    pub fn number(self) -> u8 {
        match self {
            Hostile::HugeValue => 1,
            Hostile::LargeTable => 2,
            Hostile::UnknownKeys => 5,
        }
    }

    /// What it is, in a few words.
    pub fn describe(self) -> String {
        match self {
            Hostile::HugeValue => format!("a rejected value of {HUGE_VALUE} bytes"),
            Hostile::LargeTable => {
                format!("rendezvous over {LARGE_SLOTS} slots and {REPLICAS} replicas")
            }
            Hostile::UnknownKeys => "about 1 MiB of unknown keys".into(),
        }
    }

    /// Whether a load balancer that handles it well refuses it (else it applies it).
    pub fn refused(self) -> bool {
        self != Hostile::LargeTable
    }

    /// The file: the normal configuration with `replicas`, and the hostile part.
    pub fn text(self, replicas: &[(String, u64)]) -> String {
        match self {
            Hostile::HugeValue => format!(
                "{}\n[proxy]\nworkers = \"{}\"\n",
                config_file::control_plane(replicas, CONTROL_SLOTS),
                "x".repeat(HUGE_VALUE)
            ),
            Hostile::LargeTable => config_file::control_plane(replicas, LARGE_SLOTS),
            Hostile::UnknownKeys => {
                // Under `[limits]`, after its one known key.
                let base = config_file::control_plane(replicas, CONTROL_SLOTS);
                let (head, tail) = base
                    .split_once(CONTROL_LIMITS_LINE)
                    .unwrap_or((base.as_str(), ""));
                let mut text = format!("{head}{CONTROL_LIMITS_LINE}");
                let mut i = 0u64;
                while text.len() + tail.len() < UNKNOWN_KEYS_BYTES {
                    text.push_str(&format!("k{i} = 1\n"));
                    i += 1;
                }
                text.push_str(tail);
                text
            }
        }
    }
}

/// What the load balancer did with a saved file.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// `config.last_error` showed it refused.
    Refused {
        /// The start of the message.
        message: String,
        /// The message's whole length, bytes.
        message_bytes: usize,
        /// When it showed, ms after the save.
        after_ms: f64,
    },
    /// It was applied: for (2) when `/_lb/status` showed the large table, otherwise when
    /// `config.last_applied` changed.
    Applied {
        /// The table's algorithm then.
        algorithm: String,
        /// Its slots.
        slots: u32,
        /// When, ms after the save.
        after_ms: f64,
    },
    /// Neither within [`DECISION_LIMIT`].
    Undecided {
        /// How long it was waited for, ms.
        waited_ms: f64,
    },
}

/// A replica other than the victim that lost its process or its place in the ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disturbed {
    /// Its server id.
    pub id: u64,
    /// Its hostname before the save.
    pub hostname: String,
    /// Its pid before the save.
    pub pid_before: u32,
    /// The other pid (or hostname) `/_lb/status` showed for the id, if it did.
    pub replaced_by: Option<String>,
    /// Whether some poll did not list it at all (out of the ring).
    pub left_ring: bool,
}

/// One hostile save with a kill at the same moment.
#[derive(Debug, Clone, Serialize)]
pub struct HostileSave {
    /// The file.
    pub file: Hostile,
    /// Its number in the issue.
    pub number: u8,
    /// What it is.
    pub what: String,
    /// Its size, bytes.
    pub bytes: usize,
    /// The replica killed: hostname.
    pub victim: String,
    /// Its server id.
    pub victim_id: u64,
    /// Its pid (SIGKILL).
    pub victim_pid: u32,
    /// A request id whose slot the victim owns under both tables.
    pub probe_id: u32,
    /// From the rename to the kill's return, ms.
    pub save_to_kill_ms: f64,
    /// From the kill to the first poll at which `/_lb/status` no longer listed the victim's
    /// pid (its id gone, or listed with another pid), ms.
    pub out_ms: Option<f64>,
    /// From the kill to the first poll at which `/_lb/status` listed the victim's id healthy
    /// with a new pid, ms.
    pub listed_again_ms: Option<f64>,
    /// From the kill to the victim's server id serving again (see the module docs), ms.
    pub serving_again_ms: Option<f64>,
    /// The replica with the victim's id then: hostname and pid.
    pub replacement: Option<(String, u32)>,
    /// Polls made.
    pub polls: u64,
    /// The last poll error, if any poll failed.
    pub poll_error: Option<String>,
    /// Other replicas replaced or out of the ring at some poll or at the end.
    pub disturbed: Vec<Disturbed>,
    /// How many of them got a new process: healthy replicas replaced.
    pub healthy_replaced: usize,
    /// `lb_replica_restarts_total` before the save and at the end.
    pub restarts: (Option<f64>, Option<f64>),
    /// `lb_control_panics_total` before the save and at the end.
    pub panics: (Option<f64>, Option<f64>),
    /// What became of the file.
    pub decision: Decision,
    /// When `config.last_applied` changed, ms after the save (for (2) before its table shows).
    pub config_applied_ms: Option<f64>,
    /// Large tables the load balancer built off its controller during the case, as its log
    /// reports them (`large table built took_ms=…`), ms each.
    pub table_builds_ms: Vec<u64>,
    /// Replicas in `/_lb/status` at the end.
    pub n_after: usize,
    /// The clients' requests.
    pub traffic: Tally,
    /// Their failed requests (any non-200, transport error, or no answer within 5 s).
    pub failed: u64,
    /// From the save of the normal file until it was applied again, ms; or why not.
    pub restored: std::result::Result<f64, String>,
}

impl HostileSave {
    /// `lb_replica_restarts_total` at the end minus before the save.
    pub fn restarts_delta(&self) -> Option<f64> {
        Some(self.restarts.1? - self.restarts.0?)
    }
}

/// One hostile save, or why it could not be made.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SaveOutcome {
    /// Made.
    Done(Box<HostileSave>),
    /// Not made, with the file and the reason.
    Skipped(Hostile, String),
}

/// Whether `status` lists [`REPLICAS`] replicas, all healthy.
pub(super) fn all_healthy(status: &Status) -> bool {
    status.replicas.len() == REPLICAS && status.replicas.iter().all(|r| r.healthy)
}

/// `count` distinct server ids of 1..=[`REPLICAS`], drawn from `seed`.
fn victims(seed: u64, count: usize) -> Vec<u64> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0xa3c0_4e7a);
    let mut ids: Vec<u64> = (1..=REPLICAS as u64).collect();
    rng.shuffle(&mut ids);
    ids.truncate(count);
    ids
}

/// The owner of `slot` under rendezvous among `ids`: the highest `(weight, id)`.
fn rendezvous_owner(slot: u32, ids: &[u64]) -> Option<u64> {
    ids.iter()
        .copied()
        .max_by_key(|&id| (rendezvous::weight(slot, id), id))
}

/// A request id (from `seed`) whose slot `victim` owns among `ids` under rendezvous with every
/// slot count of `tables`.
fn probe_id(
    hash: &dyn RingHash,
    seed: u64,
    victim: u64,
    ids: &[u64],
    tables: &[u32],
) -> Option<u32> {
    // Each table gives the victim about 1/N of the ids: 1 in N^2 fits both; 10^6 candidates is
    // plenty for N = 64 (about 244 fit).
    load::request_ids(seed, "a3-control-probe", 1_000_000)
        .into_iter()
        .find(|&r| {
            let h = hash.request(u64::from(r));
            tables.iter().all(|&m| {
                let slot = (h % u64::from(m)) as u32;
                rendezvous_owner(slot, ids) == Some(victim)
            })
        })
}

/// The `(hostname, server id)` entries of the replicas in `status`.
fn entries(status: &Status) -> Vec<(String, u64)> {
    status
        .replicas
        .iter()
        .map(|r| (r.hostname.clone(), r.id))
        .collect()
}

/// Save like an editor: write `text` beside `path` and rename it over.
fn save(path: &Path, text: &str) -> Result<()> {
    let tmp = staged(path, text)?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Write `text` beside `path` (to be renamed over it); its path.
fn staged(path: &Path, text: &str) -> Result<std::path::PathBuf> {
    let tmp = path.with_file_name(".lb.toml.a3-control");
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    Ok(tmp)
}

/// `GET /_lb/status` within [`POLL_TIMEOUT`] on a connection of the poller's own.
fn status_within(conn: &mut Connection) -> std::result::Result<Status, String> {
    let answer = conn
        .send_within(Method::GET, "/_lb/status", None, None, POLL_TIMEOUT)
        .map_err(|e| e.to_string())?;
    if answer.status != 200 {
        return Err(format!(
            "GET /_lb/status: {} {}",
            answer.status,
            shorten(&answer.body)
        ));
    }
    serde_json::from_str(&answer.body).map_err(|e| format!("GET /_lb/status: {e}"))
}

/// Other replicas than the victim that changed since `before` (id → hostname, pid).
#[derive(Default)]
struct Watch {
    disturbed: BTreeMap<u64, Disturbed>,
}

impl Watch {
    fn look(&mut self, before: &BTreeMap<u64, (String, u32)>, victim: u64, status: &Status) {
        for (&id, (hostname, pid)) in before {
            if id == victim {
                continue;
            }
            let now = status.replicas.iter().find(|r| r.id == id);
            let replaced_by = match now {
                None => None,
                Some(r) if r.handle.pid != Some(*pid) || r.hostname != *hostname => Some(format!(
                    "{} (pid {})",
                    r.hostname,
                    r.handle.pid.map_or("?".into(), |p| p.to_string())
                )),
                Some(_) => continue,
            };
            let entry = self.disturbed.entry(id).or_insert_with(|| Disturbed {
                id,
                hostname: hostname.clone(),
                pid_before: *pid,
                replaced_by: None,
                left_ring: false,
            });
            match replaced_by {
                None => entry.left_ring = true,
                Some(by) => entry.replaced_by = Some(by),
            }
        }
    }
}

/// What `status` says about the saved file, if it is decided; `applied` notes when
/// `config.last_applied` changed.
fn decide(
    file: Hostile,
    status: &Status,
    error_before: &Option<Issue>,
    applied_before: &Option<String>,
    since_save: Duration,
    applied: &mut Option<f64>,
) -> Option<Decision> {
    if status.config.last_applied != *applied_before && applied.is_none() {
        *applied = Some(ms(since_save));
    }
    if let Some(error) = &status.config.last_error {
        if Some(error) != error_before.as_ref() {
            return Some(Decision::Refused {
                message: shorten(&error.message),
                message_bytes: error.message.len(),
                after_ms: ms(since_save),
            });
        }
    }
    let table_shown = status.ring.slots == LARGE_SLOTS && status.ring.algorithm == "rendezvous";
    let applied_now = match file {
        Hostile::LargeTable => table_shown,
        Hostile::HugeValue | Hostile::UnknownKeys => applied.is_some(),
    };
    applied_now.then(|| Decision::Applied {
        algorithm: status.ring.algorithm.clone(),
        slots: status.ring.slots,
        after_ms: ms(since_save),
    })
}

/// The `took_ms` of every `large table built` line in `log`, in order.
fn table_builds(log: &Log) -> Vec<u64> {
    log.text()
        .lines()
        .filter(|l| l.contains("large table built"))
        .filter_map(|l| {
            let rest = &l[l.find("took_ms=")? + "took_ms=".len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

fn hostile_save(
    own: &Context,
    lb: &OwnedLb,
    file: Hostile,
    victim_id: u64,
    hash: &dyn RingHash,
) -> Result<SaveOutcome> {
    let path = lb.config_path();
    let builds_before = table_builds(lb.log()).len();
    let client = &own.client;
    let status = client.status()?;
    let Some(victim) = status.replicas.iter().find(|r| r.id == victim_id).cloned() else {
        return Ok(SaveOutcome::Skipped(
            file,
            format!("/_lb/status lists no server id {victim_id}"),
        ));
    };
    let Some(victim_pid) = victim.handle.pid else {
        return Ok(SaveOutcome::Skipped(
            file,
            format!("/_lb/status shows no pid for {}", victim.hostname),
        ));
    };
    let before: BTreeMap<u64, (String, u32)> = status
        .replicas
        .iter()
        .filter_map(|r| Some((r.id, (r.hostname.clone(), r.handle.pid?))))
        .collect();
    let ids: Vec<u64> = status.replicas.iter().map(|r| r.id).collect();
    let probe_id = probe_id(
        hash,
        own.seed,
        victim_id,
        &ids,
        &[CONTROL_SLOTS, LARGE_SLOTS],
    )
    .ok_or_else(|| Error::Unexpected {
        request: "choosing a probe id".into(),
        reason: format!("no request id has its slot owned by server id {victim_id}"),
    })?;
    let mut conn = client.connection();
    let answered = probe(&mut conn, probe_id);
    if answered.as_deref() != Some(victim.hostname.as_str()) {
        return Err(Error::Unexpected {
            request: format!("GET /home with X-Request-Id: {probe_id}"),
            reason: format!(
                "rendezvous gives its slot to server id {victim_id} ({}), but {answered:?} answered",
                victim.hostname
            ),
        });
    }
    let text = file.text(&entries(&status));
    let tmp = staged(path, &text)?;
    let restarts_before = client.metric("lb_replica_restarts_total")?;
    let panics_before = client.metric("lb_control_panics_total")?;
    let (error_before, applied_before) = (
        status.config.last_error.clone(),
        status.config.last_applied.clone(),
    );

    let traffic = Traffic::start(
        own,
        &format!("a3-control-{}", file.number()),
        PHASE_IDS,
        CLIENTS,
        TRAFFIC_LIMIT,
    );
    traffic.warmed_up(BEFORE_SAVE)?;
    // The save and the kill, back to back.
    std::fs::rename(&tmp, path).map_err(io(path))?;
    let saved = Instant::now();
    signal(victim_pid, Signal::KILL).map_err(|e| Error::Unexpected {
        request: format!("SIGKILL to pid {victim_pid}"),
        reason: e.to_string(),
    })?;
    let killed = Instant::now();

    let mut watch = Watch::default();
    let (mut out, mut listed_again) = (None, None);
    let (mut serving_again, mut replacement) = (None, None);
    let (mut decision, mut config_applied) = (None, None);
    let (mut polls, mut poll_error) = (0u64, None);
    loop {
        polls += 1;
        match status_within(&mut conn) {
            Ok(st) => {
                watch.look(&before, victim_id, &st);
                let listed = st.replicas.iter().find(|r| r.id == victim_id);
                if out.is_none() && listed.is_none_or(|r| r.handle.pid != Some(victim_pid)) {
                    out = Some(killed.elapsed());
                }
                if serving_again.is_none() {
                    let back = listed
                        .filter(|r| r.healthy && r.handle.pid.is_some_and(|p| p != victim_pid));
                    if back.is_some() && listed_again.is_none() {
                        listed_again = Some(killed.elapsed());
                    }
                    if let Some(back) = back {
                        if probe(&mut conn, probe_id).as_deref() == Some(back.hostname.as_str()) {
                            serving_again = Some(killed.elapsed());
                            replacement = back.handle.pid.map(|p| (back.hostname.clone(), p));
                        }
                    }
                }
                if decision.is_none() {
                    decision = decide(
                        file,
                        &st,
                        &error_before,
                        &applied_before,
                        saved.elapsed(),
                        &mut config_applied,
                    );
                }
            }
            Err(e) => poll_error = Some(e),
        }
        let serving_done = serving_again.is_some() || killed.elapsed() > RECOVERY_LIMIT;
        let decided = decision.is_some() || saved.elapsed() > DECISION_LIMIT;
        if serving_done && decided {
            break;
        }
        std::thread::sleep(POLL);
    }
    if serving_again.is_some() {
        let (at, since) = (traffic.completed(), Instant::now());
        // A shortfall here shows in the counts; it is not an error of the measurement.
        let _ = eventually(AFTER_LIMIT, "client requests after the recovery", || {
            Ok(traffic.completed() >= at + AFTER_REQUESTS && since.elapsed() >= AFTER)
        });
    }
    let run = traffic.finish()?;
    let after = client.status()?;
    watch.look(&before, victim_id, &after);
    let restarts_after = client.metric("lb_replica_restarts_total")?;
    let panics_after = client.metric("lb_control_panics_total")?;
    let restored = restore(client, path, &before);

    let disturbed: Vec<Disturbed> = watch.disturbed.into_values().collect();
    let tally = run.tally();
    Ok(SaveOutcome::Done(Box::new(HostileSave {
        file,
        number: file.number(),
        what: file.describe(),
        bytes: text.len(),
        victim: victim.hostname,
        victim_id,
        victim_pid,
        probe_id,
        save_to_kill_ms: ms(killed - saved),
        out_ms: out.map(ms),
        listed_again_ms: listed_again.map(ms),
        serving_again_ms: serving_again.map(ms),
        replacement,
        polls,
        poll_error,
        healthy_replaced: disturbed.iter().filter(|d| d.replaced_by.is_some()).count(),
        disturbed,
        restarts: (restarts_before, restarts_after),
        panics: (panics_before, panics_after),
        decision: decision.unwrap_or(Decision::Undecided {
            waited_ms: ms(saved.elapsed()),
        }),
        config_applied_ms: config_applied,
        table_builds_ms: table_builds(lb.log())
            .into_iter()
            .skip(builds_before)
            .collect(),
        n_after: after.replicas.len(),
        failed: tally.failures(),
        traffic: tally,
        restored,
    })))
}

/// Save the normal file with the replicas that run now (ids not listed keep the entry they had
/// `before`) and wait until it is applied: no `last_error`, the normal table, every replica
/// healthy, and `lb.toml` naming the replicas `/_lb/status` lists. How long that took, or why
/// it did not happen.
fn restore(
    client: &LbClient,
    path: &Path,
    before: &BTreeMap<u64, (String, u32)>,
) -> std::result::Result<f64, String> {
    let started = Instant::now();
    let result = (|| {
        let status = client.status()?;
        let mut replicas: BTreeMap<u64, String> =
            before.iter().map(|(id, (h, _))| (*id, h.clone())).collect();
        replicas.extend(status.replicas.iter().map(|r| (r.id, r.hostname.clone())));
        let replicas: Vec<(String, u64)> = replicas.into_iter().map(|(id, h)| (h, id)).collect();
        save(path, &config_file::control_plane(&replicas, CONTROL_SLOTS))?;
        eventually(RESTORE_LIMIT, "the normal lb.toml applied again", || {
            let st = client.status()?;
            let normal = st.config.last_error.is_none()
                && st.ring.slots == CONTROL_SLOTS
                && st.ring.algorithm == "rendezvous"
                && all_healthy(&st);
            if !normal {
                return Ok(false);
            }
            let listed: BTreeSet<String> = st.replicas.iter().map(|r| r.hostname.clone()).collect();
            let written: BTreeSet<String> =
                config_file::replica_hostnames(path)?.into_iter().collect();
            Ok(listed == written)
        })
    })();
    result
        .map(|()| ms(started.elapsed()))
        .map_err(|e: Error| e.to_string())
}

/// Save each [`Hostile`] file in turn with a replica killed at the same moment (the normal file
/// restored after each; when that fails, the files left are skipped with the reason).
pub(super) fn run(own: &Context, lb: &OwnedLb, spinner: &ProgressBar) -> Result<Vec<SaveOutcome>> {
    let mut saves = Vec::new();
    let hash = lb_balance::plugin::resolve_any("spec", &[])?;
    let victims = victims(own.seed, Hostile::ALL.len());
    let mut broken: Option<String> = None;
    for (file, victim) in Hostile::ALL.into_iter().zip(victims) {
        if let Some(why) = &broken {
            saves.push(SaveOutcome::Skipped(file, why.clone()));
            continue;
        }
        spinner.set_message(format!("hostile file ({})", file.number()));
        let outcome = hostile_save(own, lb, file, victim, &*hash)?;
        if let SaveOutcome::Done(save) = &outcome {
            progress::note(&save_note(save));
            if let Err(why) = &save.restored {
                broken = Some(format!(
                    "the normal file was not applied again after ({}): {why}",
                    file.number()
                ));
            }
        }
        saves.push(outcome);
    }
    Ok(saves)
}

fn save_note(s: &HostileSave) -> String {
    let decision = match &s.decision {
        Decision::Refused {
            message, after_ms, ..
        } => format!("refused after {after_ms:.0} ms ({message})"),
        Decision::Applied {
            algorithm,
            slots,
            after_ms,
        } => format!("applied after {after_ms:.0} ms ({algorithm}, {slots} slots)"),
        Decision::Undecided { waited_ms } => {
            format!("neither refused nor applied in {waited_ms:.0} ms")
        }
    };
    format!(
        "A-3 hostile save ({}) {}: {} (id {}) serving again {} after the kill; {} healthy replicas replaced; \
         restarts +{}; panics {}; {} of {} requests failed; the file {}",
        s.number,
        s.what,
        s.victim,
        s.victim_id,
        s.serving_again_ms
            .map_or("not within the limit".into(), |t| format!("{t:.0} ms")),
        s.healthy_replaced,
        s.restarts_delta().map_or("?".into(), |d| format!("{d:.0}")),
        s.panics.1.map_or("?".into(), |p| format!("{p:.0}")),
        s.failed,
        s.traffic.sent,
        shorten(&decision),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    #[test]
    fn hostile_files_are_what_the_issue_describes() {
        let replicas: Vec<(String, u64)> = (1..=64).map(|i| (format!("S{i}"), i)).collect();
        let huge = Hostile::HugeValue.text(&replicas);
        let doc: toml_edit::DocumentMut = huge.parse().unwrap();
        assert_eq!(
            doc["proxy"]["workers"].as_str().map(str::len),
            Some(HUGE_VALUE)
        );
        assert_eq!(doc["replicas"].as_array_of_tables().unwrap().len(), 64);
        let large: toml_edit::DocumentMut = Hostile::LargeTable.text(&replicas).parse().unwrap();
        assert_eq!(large["ring"]["slots"].as_integer(), Some(4_194_304));
        assert_eq!(large["ring"]["algorithm"].as_str(), Some("rendezvous"));
        let keys = Hostile::UnknownKeys.text(&replicas);
        assert!(keys.contains(&format!("{CONTROL_LIMITS_LINE}k0 = 1\n")));
        assert!(
            (UNKNOWN_KEYS_BYTES..1 << 20).contains(&keys.len()),
            "{} bytes: under lb's 1 MiB limit, so it is read and checked",
            keys.len()
        );
        let doc: toml_edit::DocumentMut = keys.parse().unwrap();
        let unknown = doc["limits"].as_table().unwrap().len();
        assert!(unknown > 90_000, "{unknown}");
        assert_eq!(doc["replicas"].as_array_of_tables().unwrap().len(), 64);
        assert!(Hostile::HugeValue.refused() && !Hostile::LargeTable.refused());
        assert_eq!(Hostile::ALL.map(Hostile::number), [1, 2, 5]);
    }

    #[test]
    fn the_probe_is_owned_by_the_victim_under_both_tables() {
        let hash = lb_balance::plugin::resolve_any("spec", &[]).unwrap();
        let ids: Vec<u64> = (1..=64).collect();
        for victim in [1, 17, 64] {
            let p = probe_id(&*hash, 7, victim, &ids, &[CONTROL_SLOTS, LARGE_SLOTS]).unwrap();
            let h = hash.request(u64::from(p));
            for m in [CONTROL_SLOTS, LARGE_SLOTS] {
                // The owner by brute force, against the one the table builder gives.
                let placement =
                    lb_balance::rendezvous::build(m.min(1 << 16), Arc::clone(&hash), &ids).unwrap();
                if m <= 1 << 16 {
                    let slot = (h % u64::from(m)) as u32;
                    let member = placement.owner_of_slot(slot).unwrap();
                    assert_eq!(ids[member], victim);
                }
                assert_eq!(
                    rendezvous_owner((h % u64::from(m)) as u32, &ids),
                    Some(victim)
                );
            }
        }
        let v = victims(7, 3);
        assert_eq!(v.len(), 3);
        assert!(v.iter().all(|id| (1..=64).contains(id)));
        assert_eq!(v.iter().collect::<BTreeSet<_>>().len(), 3);
        assert_eq!(v, victims(7, 3));
    }

    #[test]
    fn table_builds_are_read_from_the_log() {
        let log = Log::default();
        for line in [
            "2026-12-02T20:00:00Z  INFO lb::control::controller: building a large table off the controller",
            "2026-12-02T20:00:04Z  INFO lb::control::controller: large table built took_ms=4003",
            "2026-12-02T20:00:09Z  INFO lb::control::controller: large table built took_ms=12",
            "large table built took_ms=oops",
        ] {
            log.push(line.to_owned());
        }
        assert_eq!(table_builds(&log), [4003, 12]);
    }

    #[test]
    fn a_new_error_refuses_and_the_large_table_applies() {
        let status = |error: Option<&str>, slots: u32, applied: &str| -> Status {
            serde_json::from_value(json!({
                "replicas": [],
                "ring": {"slots": slots, "virtual_nodes": 0, "probing": "none", "hash": "spec",
                         "algorithm": "rendezvous"},
                "config": {"last_applied": applied,
                           "last_error": error.map(|m| json!({"message": m, "at": "t2"}))},
            }))
            .unwrap()
        };
        let d = Duration::from_millis(5);
        let before = (None, Some("t0".to_owned()));
        let mut applied = None;
        let refused = decide(
            Hostile::HugeValue,
            &status(Some("lb.toml:3:11: invalid type"), CONTROL_SLOTS, "t0"),
            &before.0,
            &before.1,
            d,
            &mut applied,
        );
        assert!(matches!(
            refused,
            Some(Decision::Refused {
                message_bytes: 26,
                ..
            })
        ));
        assert!(applied.is_none());
        // Accepted, the large table not yet built: not decided, but noted.
        let pending = decide(
            Hostile::LargeTable,
            &status(None, CONTROL_SLOTS, "t1"),
            &before.0,
            &before.1,
            d,
            &mut applied,
        );
        assert!(pending.is_none() && applied == Some(5.0));
        let done = decide(
            Hostile::LargeTable,
            &status(None, LARGE_SLOTS, "t1"),
            &before.0,
            &before.1,
            d,
            &mut applied,
        );
        assert!(matches!(
            done,
            Some(Decision::Applied {
                slots: LARGE_SLOTS,
                ..
            })
        ));
        // An error that was there before the save is not this file's.
        let old = Some(Issue {
            message: "old".into(),
            at: "t2".into(),
        });
        let mut applied = None;
        let same = decide(
            Hostile::UnknownKeys,
            &status(Some("old"), CONTROL_SLOTS, "t0"),
            &old,
            &before.1,
            d,
            &mut applied,
        );
        assert!(same.is_none());
    }
}
