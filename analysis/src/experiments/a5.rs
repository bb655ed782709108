//! the three balancing algorithms compared. Offline, with the `lb-balance` library: balance
//! (max/avg share of slots and of random request ids), disruption (slots that change owner when
//! one replica is removed or added, against the ideal 1/N), table build time and lookup cost, for
//! N over [`COUNTS`]. Live: the load balancer switched to each algorithm by editing its `lb.toml`
//! (as A-4 switches hashes), N = 3, each replica's share as the clients saw it against the
//! offline prediction for the same request ids; and a hot key (48 clients, one request id) with
//! and without `[ring] bounded_load`.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_balance::compare::{moved, owner_ids};
use lb_balance::ring::{Probing, RingParams};
use lb_balance::{Algorithm, Balancer};
use serde::Serialize;
use toml_edit::Value;

use super::Context;
use crate::config_file;
use crate::error::{Error, Result};
use crate::lb_api::eventually;
use crate::load::{self, Outcome};
use crate::progress;

/// The replica counts of the offline part unless `--a5-counts` gives others.
pub const COUNTS: [u64; 13] = [2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 75, 100];
/// `M` of every table A-5 builds: a prime (Maglev needs one), large enough for the ring's
/// `K · N ≤ M` at N = 100, and the table size docs/ALGORITHMS.md measures.
pub const SLOTS: u32 = 65_537;
/// Virtual nodes of the ring (the assignment's `K`).
pub const VIRTUAL_NODES: u32 = 9;
/// Random request ids the offline request shares are measured with.
pub const RANDOM_IDS: usize = 100_000;
/// Replicas in the live part and the hot-key experiment.
pub const LIVE_N: usize = 3;
/// Concurrent clients of the hot-key experiment.
pub const HOT_CLIENTS: usize = 48;
/// The one request id every hot-key client sends.
pub const HOT_ID: u32 = 424_242;
/// `[ring] bounded_load` tried in the hot-key experiment.
pub const BOUNDED_LOAD: f64 = 1.25;
/// How long a configuration change may take to show in `/_lb/status`.
const SWITCH_LIMIT: Duration = Duration::from_secs(20);

/// One algorithm with its hash, as compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Setup {
    /// `ring`, `maglev` or `rendezvous`.
    pub algorithm: &'static str,
    /// The hash (plugin) name.
    pub hash: &'static str,
}

impl Setup {
    /// `algorithm/hash`, as the tables and charts label it.
    pub fn label(&self) -> String {
        format!("{}/{}", self.algorithm, self.hash)
    }

    fn algorithm(&self) -> Algorithm {
        match self.algorithm {
            "maglev" => Algorithm::Maglev,
            "rendezvous" => Algorithm::Rendezvous,
            _ => Algorithm::Ring,
        }
    }

    /// The balancer with [`SLOTS`] (and the ring's `K`, linear probing).
    pub fn balancer(&self) -> Balancer {
        Balancer::new(
            self.algorithm(),
            RingParams {
                slots: SLOTS,
                virtual_nodes: VIRTUAL_NODES,
                probing: Probing::Linear,
            },
        )
    }
}

/// What is compared: the ring with three hashes; Maglev and rendezvous with murmur3 (their
/// tables depend on the hash only through the request → slot step, so one good hash suffices).
pub const SETUPS: [Setup; 5] = [
    Setup {
        algorithm: "ring",
        hash: "spec",
    },
    Setup {
        algorithm: "ring",
        hash: "murmur3",
    },
    Setup {
        algorithm: "ring",
        hash: "ketama",
    },
    Setup {
        algorithm: "maglev",
        hash: "murmur3",
    },
    Setup {
        algorithm: "rendezvous",
        hash: "murmur3",
    },
];

/// One algorithm at one N, offline.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// N (server ids 1..=N).
    pub n: u64,
    /// Largest share of slots over the average 1/N.
    pub slot_max_over_avg: f64,
    /// Largest share of [`RANDOM_IDS`] random request ids (routed `H(r) mod M` through the
    /// table) over the average.
    pub request_max_over_avg: f64,
    /// Removing one replica: share of slots that changed owner, mean over the replicas removed.
    pub removed_moved: f64,
    /// The same as a multiple of the ideal 1/N (mean).
    pub removed_over_ideal: f64,
    /// The worst removal, as a multiple of 1/N.
    pub removed_worst_over_ideal: f64,
    /// Largest share of slots that moved beyond the removed replica's own slots (ideal 0).
    pub removed_beyond: f64,
    /// Adding replica N + 1: share of slots that changed owner.
    pub added_moved: f64,
    /// The same as a multiple of the ideal 1/(N + 1).
    pub added_over_ideal: f64,
    /// Share of slots that moved between old replicas when adding (ideal 0).
    pub added_beyond: f64,
    /// Time to build the table for 1..=N, milliseconds.
    pub build_ms: f64,
    /// Mean time of one lookup (hash, modulo, table load), nanoseconds.
    pub lookup_ns: f64,
}

/// One algorithm over every N.
#[derive(Debug, Clone, Serialize)]
pub struct Curve {
    /// Algorithm and hash.
    pub setup: Setup,
    /// Per N.
    pub points: Vec<Point>,
}

/// Per replica: requests the clients saw it answer, and the share predicted offline.
#[derive(Debug, Clone, Serialize)]
pub struct LiveShare {
    /// Server id.
    pub id: u64,
    /// Hostname.
    pub hostname: String,
    /// Requests it answered.
    pub requests: u64,
    /// Its share of the requests answered.
    pub share: f64,
    /// Its share predicted by the table built offline for the same ids.
    pub predicted: f64,
}

/// One algorithm switched to live.
#[derive(Debug, Clone, Serialize)]
pub struct LiveRun {
    /// Algorithm and hash.
    pub setup: Setup,
    /// From writing lb.toml to `/_lb/status` showing it, milliseconds.
    pub switch_ms: f64,
    /// Requests sent.
    pub sent: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Per replica.
    pub replicas: Vec<LiveShare>,
    /// Requests answered by exactly the replica the offline table names for their id.
    pub as_predicted: u64,
    /// Largest |share − predicted| over the replicas.
    pub max_deviation: f64,
}

/// The hot-key experiment under one setting.
#[derive(Debug, Clone, Serialize)]
pub struct HotKey {
    /// `without bounded loads` or `bounded_load = 1.25`.
    pub label: String,
    /// Why it did not run, when it did not (e.g. "not available in this lb").
    pub unavailable: Option<String>,
    /// Requests sent.
    pub sent: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Requests per hostname.
    pub served: Vec<(String, u64)>,
    /// The busiest replica's share of the requests answered.
    pub busiest_share: f64,
}

/// Where the offline numbers were measured.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model (from /proc/cpuinfo, when readable).
    pub cpu: String,
    /// Threads available.
    pub threads: usize,
    /// Built with optimisations (`--release`); timings of a debug build are not representative.
    pub optimised: bool,
}

/// A-5's result.
#[derive(Debug, Clone, Serialize)]
pub struct A5 {
    /// `M` of every table.
    pub slots: u32,
    /// `K` of the ring.
    pub virtual_nodes: u32,
    /// Random request ids of the offline request shares.
    pub random_ids: usize,
    /// The offline curves.
    pub curves: Vec<Curve>,
    /// Setups left out (a plugin that could not be loaded), and why.
    pub skipped: Vec<(String, String)>,
    /// Where build and lookup times were measured.
    pub machine: Machine,
    /// Why the live part did not run, if it did not.
    pub live_skipped: Option<String>,
    /// Live runs, N = 3.
    pub live: Vec<LiveRun>,
    /// The hot key, without and with bounded loads.
    pub hot: Vec<HotKey>,
}

fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    Machine {
        cpu,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        optimised: !cfg!(debug_assertions),
    }
}

fn max_over_avg(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    let max = counts.iter().copied().max().unwrap_or(0);
    if total == 0 {
        return 0.0;
    }
    max as f64 * counts.len() as f64 / total as f64
}

/// The offline curve of one setup over `counts`.
pub fn curve(
    setup: Setup,
    hash: Arc<dyn lb_balance::hash::RingHash>,
    counts: &[u64],
    ids: &[u32],
) -> Result<Curve> {
    let balancer = setup.balancer();
    let place = |ids: &[u64]| balancer.place(Arc::clone(&hash), ids).map_err(Error::from);
    let mut points = Vec::new();
    for &n in counts {
        let members: Vec<u64> = (1..=n).collect();
        let started = Instant::now();
        let full = place(&members)?;
        let build_ms = started.elapsed().as_secs_f64() * 1000.0;
        let slot_counts: Vec<u64> = full.slot_counts().into_iter().map(u64::from).collect();
        let mut requests = vec![0u64; members.len()];
        let started = Instant::now();
        for &r in ids {
            if let Some(m) = full.lookup(u64::from(r)) {
                requests[m] += 1;
            }
        }
        let lookup_ns = started.elapsed().as_secs_f64() * 1e9 / ids.len().max(1) as f64;
        let before = owner_ids(&full);
        // Removing every replica in turn costs N builds; three (the first, a middle and the
        // last id) show the mean and the spread at a fraction of the time.
        let mut gone: Vec<u64> = vec![1, n.div_ceil(2), n];
        gone.dedup();
        let ideal = 1.0 / n as f64;
        let mut removals = Vec::new();
        for &g in &gone {
            let rest: Vec<u64> = members.iter().copied().filter(|&id| id != g).collect();
            if rest.is_empty() {
                continue;
            }
            removals.push(moved(&before, &owner_ids(&place(&rest)?), g));
        }
        let count = removals.len().max(1) as f64;
        let removed_moved = removals.iter().map(|r| r.all).sum::<f64>() / count;
        let worst = removals.iter().map(|r| r.all).fold(0.0, f64::max);
        let removed_beyond = removals.iter().map(|r| r.beyond).fold(0.0, f64::max);
        let grown: Vec<u64> = (1..=n + 1).collect();
        let added = moved(&before, &owner_ids(&place(&grown)?), n + 1);
        let (added_moved, added_beyond) = (added.all, added.beyond);
        points.push(Point {
            n,
            slot_max_over_avg: max_over_avg(&slot_counts),
            request_max_over_avg: max_over_avg(&requests),
            removed_moved,
            removed_over_ideal: removed_moved / ideal,
            removed_worst_over_ideal: worst / ideal,
            removed_beyond,
            added_moved,
            added_over_ideal: added_moved * (n + 1) as f64,
            added_beyond,
            build_ms,
            lookup_ns,
        });
    }
    Ok(Curve { setup, points })
}

/// Run A-5: the offline comparison over `counts`, then (when we own the lb.toml) the live part
/// and the hot key.
pub fn run(ctx: &Context, counts: &[u64]) -> Result<A5> {
    let status = ctx.client.status()?;
    let mut dirs = vec![ctx.plugin_dir.clone()];
    dirs.extend(status.config.plugin_dirs.iter().map(Into::into));
    let search = lb_balance::plugin::search_path(&dirs);
    let ids = load::request_ids(ctx.seed, "A-5 offline", RANDOM_IDS);

    let spinner = progress::spinner("A-5 offline (three algorithms)");
    let mut curves = Vec::new();
    let mut skipped = Vec::new();
    let mut hashes = Vec::new();
    for setup in SETUPS {
        match lb_balance::plugin::resolve_any(setup.hash, &search)
            .map_err(Error::from)
            .and_then(|hash| {
                let c = curve(setup, Arc::clone(&hash), counts, &ids)?;
                Ok((hash, c))
            }) {
            Ok((hash, c)) => {
                hashes.push((setup, hash));
                curves.push(c);
            }
            Err(e) => skipped.push((setup.label(), e.to_string())),
        }
    }
    spinner.finish_and_clear();
    for (name, why) in &skipped {
        progress::note(&format!("A-5: skipped {name}: {why}"));
    }
    for c in &curves {
        if let Some(p) = c.points.iter().find(|p| p.n == 10).or(c.points.last()) {
            progress::note(&format!(
                "A-5 {} N = {}: max/avg {:.3} slots, {:.3} requests; removal moves {:.2}× 1/N; build {:.1} ms, lookup {:.0} ns",
                c.setup.label(),
                p.n,
                p.slot_max_over_avg,
                p.request_max_over_avg,
                p.removed_over_ideal,
                p.build_ms,
                p.lookup_ns
            ));
        }
    }

    let mut a5 = A5 {
        slots: SLOTS,
        virtual_nodes: VIRTUAL_NODES,
        random_ids: RANDOM_IDS,
        curves,
        skipped,
        machine: machine(),
        live_skipped: None,
        live: Vec::new(),
        hot: Vec::new(),
    };
    match &ctx.owned_config {
        None => {
            let why = "the load balancer was given with --lb, so there is no lb.toml of ours to switch algorithms in; only the offline part ran";
            progress::note(&format!("A-5 live part skipped: {why}"));
            a5.live_skipped = Some(why.into());
        }
        Some(path) => {
            ctx.client.scale_to(LIVE_N)?;
            let original = config_file::ring_values(path, RING_KEYS)?;
            let outcome = live(ctx, path, &hashes, &original, &mut a5);
            // Put the file back whatever happened, then report the first error.
            let restored = restore(ctx, path, &original);
            outcome?;
            restored?;
        }
    }
    Ok(a5)
}

/// The `[ring]` keys A-5 changes (and restores).
const RING_KEYS: &[&str] = &["algorithm", "slots", "hash", "bounded_load"];

fn restore(ctx: &Context, path: &std::path::Path, original: &[Option<Value>]) -> Result<()> {
    let changes: Vec<(&str, Option<Value>)> = RING_KEYS
        .iter()
        .copied()
        .zip(original.iter().cloned())
        .collect();
    super::a4::settle(ctx, path)?;
    config_file::set_ring(path, &changes)?;
    let expect_hash = original[2]
        .as_ref()
        .and_then(Value::as_str)
        .unwrap_or("spec")
        .to_owned();
    let expect_algorithm = original[0]
        .as_ref()
        .and_then(Value::as_str)
        .unwrap_or("ring")
        .to_owned();
    eventually(SWITCH_LIMIT, "the original [ring] settings", || {
        let s = ctx.client.status()?;
        Ok(s.ring.hash == expect_hash && s.ring.algorithm == expect_algorithm)
    })
}

/// The configuration's (last applied, last error) markers in `/_lb/status`.
fn markers(ctx: &Context) -> Result<(Option<String>, Option<String>)> {
    let c = ctx.client.status()?.config;
    Ok((
        c.last_applied,
        c.last_error.map(|e| format!("{} {}", e.at, e.message)),
    ))
}

/// Write `changes` into `[ring]`, then wait until the lb applied the file (`done` holds) or
/// refused it (a new `config.last_error`, whose message is the error); the time it took. A-6
/// switches its live setup and slow start with it too.
pub(crate) fn apply(
    ctx: &Context,
    path: &std::path::Path,
    changes: &[(&str, Option<Value>)],
    mut done: impl FnMut(&crate::lb_api::Status) -> bool,
) -> Result<Duration> {
    super::a4::settle(ctx, path)?;
    let (_, error_before) = markers(ctx)?;
    let started = Instant::now();
    config_file::set_ring(path, changes)?;
    let mut refused = None;
    eventually(SWITCH_LIMIT, "the lb to apply or refuse lb.toml", || {
        let s = ctx.client.status()?;
        let error = s
            .config
            .last_error
            .as_ref()
            .map(|e| format!("{} {}", e.at, e.message));
        if error.is_some() && error != error_before {
            refused = s.config.last_error.map(|e| e.message);
            return Ok(true);
        }
        Ok(done(&s))
    })?;
    match refused {
        Some(reason) => Err(Error::Unexpected {
            request: format!("editing [ring] in {}", path.display()),
            reason: format!("the lb refused the file: {reason}"),
        }),
        None => Ok(started.elapsed()),
    }
}

fn live(
    ctx: &Context,
    path: &std::path::Path,
    hashes: &[(Setup, Arc<dyn lb_balance::hash::RingHash>)],
    original: &[Option<Value>],
    a5: &mut A5,
) -> Result<()> {
    let ids = Arc::new(load::request_ids(ctx.seed, "A-5 live", ctx.requests));
    for (setup, hash) in hashes {
        let changes = [
            ("algorithm", Some(Value::from(setup.algorithm))),
            ("slots", Some(Value::from(i64::from(SLOTS)))),
            ("hash", Some(Value::from(setup.hash))),
        ];
        let switched = apply(ctx, path, &changes, |s| {
            s.ring.algorithm == setup.algorithm
                && s.ring.hash == setup.hash
                && s.ring.slots == SLOTS
        });
        let switch_ms = match switched {
            Ok(d) => d.as_secs_f64() * 1000.0,
            Err(e) => {
                progress::note(&format!("A-5: cannot switch to {}: {e}", setup.label()));
                a5.skipped
                    .push((format!("{} live", setup.label()), e.to_string()));
                continue;
            }
        };
        let status = ctx.client.status()?;
        let members: Vec<u64> = (1..=LIVE_N as u64).collect();
        let params = RingParams {
            slots: SLOTS,
            virtual_nodes: status.ring.virtual_nodes.max(1),
            probing: if status.ring.probing == "quadratic" {
                Probing::Quadratic
            } else {
                Probing::Linear
            },
        };
        let table = Balancer::new(setup.algorithm(), params).place(Arc::clone(hash), &members)?;
        let label = format!("A-5 live {}", setup.label());
        let bar = progress::bar(ids.len() as u64, &label);
        let limits = ctx.limits(Arc::new(AtomicBool::new(false)), ctx.phase_timeout);
        let run = load::run(&ctx.client, Arc::clone(&ids), limits, Instant::now(), &bar);
        bar.finish_and_clear();
        let tally = run.tally();
        let predicted_id = |r: u32| table.lookup(u64::from(r)).map(|m| members[m]);
        let as_predicted = run
            .samples
            .iter()
            .filter(|s| match &s.outcome {
                Outcome::Served(host) => status.id_of(host) == predicted_id(s.id),
                Outcome::Failed(_) => false,
            })
            .count() as u64;
        let mut predicted = vec![0u64; members.len()];
        for &r in ids.iter() {
            if let Some(m) = table.lookup(u64::from(r)) {
                predicted[m] += 1;
            }
        }
        let served = tally.successes().max(1) as f64;
        let mut replicas: Vec<LiveShare> = status
            .replicas
            .iter()
            .map(|r| {
                let requests = tally.served.get(&r.hostname).copied().unwrap_or(0);
                let k = members.iter().position(|&m| m == r.id);
                LiveShare {
                    id: r.id,
                    hostname: r.hostname.clone(),
                    requests,
                    share: requests as f64 / served,
                    predicted: k.map_or(0.0, |k| predicted[k] as f64 / ids.len().max(1) as f64),
                }
            })
            .collect();
        replicas.sort_by_key(|r| r.id);
        let max_deviation = replicas
            .iter()
            .map(|r| (r.share - r.predicted).abs())
            .fold(0.0, f64::max);
        let shares: Vec<String> = replicas
            .iter()
            .map(|r| {
                format!(
                    "{} {:.1} % (predicted {:.1} %)",
                    r.hostname,
                    100.0 * r.share,
                    100.0 * r.predicted
                )
            })
            .collect();
        progress::note(&format!(
            "{label}: {} sent, {} failed; {}; {} of them where the offline table predicts",
            tally.sent,
            tally.failures(),
            shares.join(", "),
            as_predicted
        ));
        a5.live.push(LiveRun {
            setup: *setup,
            switch_ms,
            sent: tally.sent,
            failed: tally.failures(),
            replicas,
            as_predicted,
            max_deviation,
        });
    }

    // The hot key, under the lb's own algorithm and hash (restored first).
    restore(ctx, path, original)?;
    a5.hot.push(hot_key(ctx, "without bounded loads")?);
    let with = format!("bounded_load = {BOUNDED_LOAD}");
    let applied = apply(
        ctx,
        path,
        &[("bounded_load", Some(Value::from(BOUNDED_LOAD)))],
        |s| {
            s.ring
                .bounded_load
                .is_some_and(|b| (b - BOUNDED_LOAD).abs() < 1e-9)
        },
    );
    match applied {
        Ok(_) => a5.hot.push(hot_key(ctx, &with)?),
        Err(e) => {
            let reason = format!("not available in this lb ({e})");
            progress::note(&format!("A-5 hot key with {with}: {reason}"));
            a5.hot.push(HotKey {
                label: with,
                unavailable: Some(reason),
                sent: 0,
                failed: 0,
                served: Vec::new(),
                busiest_share: 0.0,
            });
        }
    }
    Ok(())
}

/// [`HOT_CLIENTS`] clients, every request with the id [`HOT_ID`].
fn hot_key(ctx: &Context, label: &str) -> Result<HotKey> {
    let ids = Arc::new(vec![HOT_ID; ctx.requests]);
    let title = format!("A-5 hot key, {label}");
    let bar = progress::bar(ids.len() as u64, &title);
    let mut limits = ctx.limits(Arc::new(AtomicBool::new(false)), ctx.phase_timeout);
    limits.concurrency = HOT_CLIENTS;
    let run = load::run(&ctx.client, ids, limits, Instant::now(), &bar);
    bar.finish_and_clear();
    let tally = run.tally();
    let served: Vec<(String, u64)> = tally.served.iter().map(|(h, &c)| (h.clone(), c)).collect();
    let busiest = served.iter().map(|s| s.1).max().unwrap_or(0);
    let busiest_share = busiest as f64 / tally.successes().max(1) as f64;
    progress::note(&format!(
        "{title}: {} sent, {} failed; busiest replica {:.1} %",
        tally.sent,
        tally.failures(),
        100.0 * busiest_share
    ));
    Ok(HotKey {
        label: label.to_owned(),
        unavailable: None,
        sent: tally.sent,
        failed: tally.failures(),
        served,
        busiest_share,
    })
}
