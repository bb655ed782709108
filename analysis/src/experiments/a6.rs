//! weights, slow start and plans. Offline, with the `lb-balance` library: for each of A-5's
//! setups and N over [`COUNTS`], replicas of weights cycling 1, 2, 3 (N = 3 is exactly 1:2:3) —
//! how far each replica's share of the slots (and of random request ids) is from `w/Σw`, whether
//! the ring placed `K·w` virtual nodes for each, and what a weight change (replica 1, weight
//! 1 → 2) moves against the least any change to those shares must move ([`compare::plan`]).
//! Live, against the load balancer `analysis` started (switched to [`LIVE_SETUP`] by editing its
//! `lb.toml`): a plan (`POST /_lb/plan`) for an `/add` of a replica of weight 2 against the ring
//! that `/add` actually makes, slot for slot and request for request; then slow start — `[ring]
//! slow_start_ms` on, client traffic while a replica joins, that replica's share of the answers
//! per [`BUCKET`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_balance::compare;
use lb_balance::hash::RingHash;
use lb_views::status::Health;
use serde::Serialize;
use serde_json::json;
use toml_edit::Value;

use super::a3::PhaseOutcome;
use super::a5::{self, Setup, RANDOM_IDS, SETUPS, SLOTS, VIRTUAL_NODES};
use super::Context;
use crate::config_file;
use crate::error::{Error, Result};
use crate::lb_api::{eventually, Status};
use crate::load::{self, Outcome, Sample, Tally};
use crate::progress;

/// The replica counts of the offline part unless `--a6-counts` gives others.
pub const COUNTS: [u64; 5] = [3, 5, 10, 20, 50];
/// The weights of server ids 1, 2, 3, 4, … cycle through these: N = 3 is exactly 1:2:3.
pub const WEIGHT_CYCLE: [u32; 3] = [1, 2, 3];
/// The replica whose weight changes offline (its weight is `WEIGHT_CYCLE[0]` = 1).
pub const CHANGED_ID: u64 = 1;
/// Its weight after the change.
pub const CHANGED_TO: u32 = 2;
/// The setup of the live part: rendezvous (a weight change or a ramp moves keys only to the
/// replica concerned) over A-5's M with a hash that spreads request ids evenly.
pub const LIVE_SETUP: Setup = Setup {
    algorithm: "rendezvous",
    hash: "murmur3",
};
/// Replicas (weight 1 each) before a replica is added live.
pub const LIVE_N: usize = 3;
/// The hostname of the replica planned and then added (and removed again).
pub const PLAN_HOST: &str = "A6 planned";
/// The hostname of the replica added while slow start is on.
pub const RAMP_HOST: &str = "A6 ramp";
/// The weight of both added replicas.
pub const NEW_WEIGHT: u32 = 2;
/// `[ring] slow_start_ms` of the ramp.
pub const SLOW_START_MS: u64 = 10_000;
/// Width of a bucket of the ramp's timeline (one step of a 10 s ramp).
pub const BUCKET: Duration = Duration::from_millis(500);
/// A replica has reached its full share once a bucket's share is at least this part of it.
pub const REACHED: f64 = 0.9;
/// Traffic before the ramping replica is added, for a baseline.
const BASELINE: Duration = Duration::from_secs(1);
/// Traffic after `/_lb/status` shows the ramp over.
const TAIL: Duration = Duration::from_secs(2);
/// How long an added replica may take to join the ring (or a removed one to leave it).
const JOIN_LIMIT: Duration = Duration::from_secs(20);
/// How often `/_lb/status` is read while the replica ramps.
pub const RAMP_POLL: Duration = Duration::from_millis(50);
/// Request ids of the ramp's traffic: more than its clients send in its time.
const RAMP_IDS: usize = 1_000_000;
/// The `[ring]` keys A-6 changes (and restores).
const RING_KEYS: &[&str] = &["algorithm", "slots", "hash", "slow_start_ms"];

/// The weights of server ids `1..=n`: [`WEIGHT_CYCLE`] over and over.
pub fn weights(n: usize) -> Vec<u32> {
    (0..n)
        .map(|k| WEIGHT_CYCLE[k % WEIGHT_CYCLE.len()])
        .collect()
}

/// One replica of a weighted table, offline.
#[derive(Debug, Clone, Serialize)]
pub struct WeightedShare {
    /// Server id.
    pub id: u64,
    /// Its weight.
    pub weight: u32,
    /// Its fair share, `w/Σw`.
    pub target: f64,
    /// Its share of the slots.
    pub slot_share: f64,
    /// Its share of the random request ids (routed `H(r) mod M` through the table).
    pub request_share: f64,
    /// The ring's virtual nodes it placed (`None` for Maglev and rendezvous).
    pub marks: Option<usize>,
}

/// Replica [`CHANGED_ID`]'s weight changed from 1 to [`CHANGED_TO`], offline.
#[derive(Debug, Clone, Serialize)]
pub struct WeightChange {
    /// The replica.
    pub id: u64,
    /// Its weight before.
    pub from: u32,
    /// Its weight after.
    pub to: u32,
    /// Slots whose owner changes.
    pub slots_moved: u64,
    /// The least number of slots any change to these slot counts moves: what the replicas
    /// that grow gain.
    pub slots_minimum: u64,
    /// `slots_moved / slots_minimum`: the overhead counted in slots, exactly (no sample).
    pub slots_over_minimum: f64,
    /// The share of the random request ids whose replica changes.
    pub requests_moved: f64,
    /// The least share any change to these request shares moves (`Transfer::requests_minimum`).
    pub requests_minimum: f64,
    /// `requests_moved / requests_minimum` (1: nothing moves beyond what must).
    pub over_minimum: f64,
    /// Whether every move goes to the reweighted replica.
    pub only_to_changed: bool,
    /// The share of request ids that move to another replica than the reweighted one.
    pub moved_elsewhere: f64,
}

/// One setup at one N, offline.
#[derive(Debug, Clone, Serialize)]
pub struct WeightPoint {
    /// N (server ids 1..=N, weights [`weights`]).
    pub n: u64,
    /// `Σw`.
    pub total_weight: u64,
    /// Largest |slot share − w/Σw| over the replicas, in percentage points.
    pub slot_error_points: f64,
    /// Largest |request share − w/Σw| over the replicas, in percentage points.
    pub request_error_points: f64,
    /// The ring: whether every replica placed exactly `K·w` virtual nodes (`None` otherwise).
    pub ring_marks_match: Option<bool>,
    /// Per replica.
    pub replicas: Vec<WeightedShare>,
    /// What the weight change moves.
    pub change: WeightChange,
}

/// One setup over every N.
#[derive(Debug, Clone, Serialize)]
pub struct WeightCurve {
    /// Algorithm and hash.
    pub setup: Setup,
    /// Per N.
    pub points: Vec<WeightPoint>,
}

/// A plan against the change actually made.
#[derive(Debug, Clone, Serialize)]
pub struct PlanCheck {
    /// `M` of the table.
    pub slots: u32,
    /// The body posted to `/_lb/plan`.
    pub body: String,
    /// The replica planned and added.
    pub added: String,
    /// Its weight.
    pub weight: u32,
    /// How long `POST /_lb/plan` took, milliseconds.
    pub plan_ms: f64,
    /// Whether `/_lb/ring` showed the same owners before and after the plan (a plan changes
    /// nothing).
    pub unchanged_by_plan: bool,
    /// From the `/add` to `/_lb/ring` listing the new replica, milliseconds.
    pub joined_ms: f64,
    /// Owners in the plan.
    pub plan_owners: u64,
    /// Owners `/_lb/ring` showed after the `/add`.
    pub ring_owners: u64,
    /// Slots where the plan's owner is the ring's.
    pub owners_equal: u64,
    /// The plan's slots that change owner.
    pub slots_moved: u64,
    /// The plan's share of requests (over every 6-digit id) whose replica changes.
    pub requests_moved: f64,
    /// The plan's least share any change to these shares moves.
    pub requests_minimum: f64,
    /// The new replica's share after, as the plan says.
    pub share_after: f64,
    /// `Σw` after, as the plan says.
    pub total_weight_after: u64,
    /// Distinct random request ids sent before and again after the `/add`.
    pub sample: u64,
    /// Of those, requests that failed (before or after).
    pub sample_failed: u64,
    /// Ids answered before the `/add` by the replica `/_lb/ring` named for their slot.
    pub routed_as_ring: u64,
    /// Ids whose replica the plan says changes (the ring's owner before against the plan's).
    pub moved_predicted: u64,
    /// Ids answered by another replica after the `/add` than before.
    pub moved_actual: u64,
    /// Ids answered after the `/add` by exactly the replica the plan names for their slot.
    pub as_planned: u64,
    /// Whether `/_lb/ring` showed the owners of before the `/add` again once the replica was
    /// removed.
    pub restored: bool,
}

/// What `/_lb/status` showed of the ramping replica, when it changed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StatusPoint {
    /// Milliseconds since the `/add`.
    pub t_ms: f64,
    /// Listed and in the ring.
    pub up: bool,
    /// Its `effective_weight` (`None`: its whole weight, or not listed).
    pub effective_weight: Option<f64>,
}

/// Requests of one [`BUCKET`] of the ramp.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RampBucket {
    /// Start, milliseconds since the `/add` (negative: before it).
    pub start_ms: i64,
    /// Requests sent in it and answered with 200.
    pub served: u64,
    /// Requests sent in it that failed.
    pub failed: u64,
    /// Of those answered, by the new replica.
    pub to_new: u64,
    /// The new replica's share of those answered.
    pub share: f64,
    /// Requests per second the new replica answered.
    pub rate_new: f64,
    /// Requests per second answered in all.
    pub rate_all: f64,
    /// The share its effective weight gives it at the middle of the bucket
    /// (`e / (e + Σ others' weights)`; `None` before `/_lb/status` was first read).
    pub expected_share: Option<f64>,
}

/// Slow start, live.
#[derive(Debug, Clone, Serialize)]
pub struct Ramp {
    /// `[ring] slow_start_ms`.
    pub slow_start_ms: u64,
    /// From writing it into `lb.toml` to `/_lb/status` showing the file applied, milliseconds.
    pub switch_ms: f64,
    /// The replica added.
    pub added: String,
    /// Its weight.
    pub weight: u32,
    /// The other replicas' weights, summed.
    pub others_weight: u32,
    /// Clients sending requests.
    pub clients: usize,
    /// Width of a bucket, milliseconds.
    pub bucket_ms: u64,
    /// When the `/add` was sent, milliseconds since the traffic started.
    pub add_at_ms: f64,
    /// First `/_lb/status` listing the replica in the ring, milliseconds since the `/add`.
    pub joined_ms: Option<f64>,
    /// First `/_lb/status` after that showing it at its whole weight, milliseconds since the
    /// `/add`.
    pub ramp_done_ms: Option<f64>,
    /// What `/_lb/status` showed of it, at each change.
    pub steps: Vec<StatusPoint>,
    /// Distinct effective weights seen.
    pub steps_seen: usize,
    /// Its share at its whole weight, `w / (w + Σ others)`.
    pub target_share: f64,
    /// Its share of the requests sent after the ramp was over.
    pub full_share: Option<f64>,
    /// Its share in the first bucket that starts after it joined.
    pub first_share: Option<f64>,
    /// End of the first bucket after it joined whose share is at least [`REACHED`] of the full
    /// share, milliseconds since the `/add`.
    pub reached_ms: Option<f64>,
    /// The client traffic.
    pub traffic: Tally,
    /// Failed client requests.
    pub failed: u64,
    /// Whether the clients used every request id before the end (the traffic stopped early).
    pub ran_out: bool,
    /// The timeline.
    pub buckets: Vec<RampBucket>,
}

/// A-6's result.
#[derive(Debug, Clone, Serialize)]
pub struct A6 {
    /// `M` of every table.
    pub slots: u32,
    /// `K` of the ring.
    pub virtual_nodes: u32,
    /// Random request ids of the offline request shares and moves.
    pub random_ids: usize,
    /// The weights cycle through these.
    pub weight_cycle: Vec<u32>,
    /// The offline curves.
    pub curves: Vec<WeightCurve>,
    /// Setups left out (a plugin that could not be loaded), and why.
    pub skipped: Vec<(String, String)>,
    /// The setup of the live part.
    pub live_setup: Setup,
    /// Why the live part did not run, if it did not.
    pub live_skipped: Option<String>,
    /// A plan against the `/add` made.
    pub plan: Option<PhaseOutcome<PlanCheck>>,
    /// Slow start.
    pub ramp: Option<PhaseOutcome<Ramp>>,
}

/// The shares of `counts`, each over their sum.
fn shares(counts: &[u64]) -> Vec<f64> {
    let total = counts.iter().sum::<u64>().max(1) as f64;
    counts.iter().map(|&c| c as f64 / total).collect()
}

/// One setup at `n` replicas of weights [`weights`], with `ids` as random request ids.
pub fn point(setup: Setup, hash: &Arc<dyn RingHash>, n: u64, ids: &[u64]) -> Result<WeightPoint> {
    let balancer = setup.balancer();
    let members: Vec<u64> = (1..=n).collect();
    let w = weights(members.len());
    let total_weight: u64 = w.iter().map(|&w| u64::from(w)).sum();
    let before = balancer.place_weighted(Arc::clone(hash), &members, &w)?;
    let slots: Vec<u64> = before.slot_counts().into_iter().map(u64::from).collect();
    let mut requests = vec![0u64; members.len()];
    for &r in ids {
        if let Some(m) = before.lookup(r) {
            requests[m] += 1;
        }
    }
    let (slot_shares, request_shares) = (shares(&slots), shares(&requests));
    let ring = setup.algorithm == "ring";
    let replicas: Vec<WeightedShare> = members
        .iter()
        .enumerate()
        .map(|(k, &id)| WeightedShare {
            id,
            weight: w[k],
            target: f64::from(w[k]) / total_weight as f64,
            slot_share: slot_shares[k],
            request_share: request_shares[k],
            marks: ring.then(|| before.virtual_slots(k).len()),
        })
        .collect();
    let error = |share: fn(&WeightedShare) -> f64| {
        replicas
            .iter()
            .map(|r| (share(r) - r.target).abs() * 100.0)
            .fold(0.0, f64::max)
    };
    let ring_marks_match = ring.then(|| {
        replicas.iter().all(|r| {
            r.marks.map(|m| m as u64) == Some(u64::from(VIRTUAL_NODES) * u64::from(r.weight))
        })
    });

    let changed_at = members.iter().position(|&id| id == CHANGED_ID).unwrap_or(0);
    let mut changed = w.clone();
    changed[changed_at] = CHANGED_TO;
    let after = balancer.place_weighted(Arc::clone(hash), &members, &changed)?;
    let t = compare::plan(&before, &after, ids);
    let slots_minimum: u64 = t
        .parts
        .iter()
        .map(|p| p.slots_after.saturating_sub(p.slots_before))
        .sum();
    let change = WeightChange {
        id: CHANGED_ID,
        from: w[changed_at],
        to: CHANGED_TO,
        slots_moved: t.slots_moved,
        slots_minimum,
        slots_over_minimum: if slots_minimum > 0 {
            t.slots_moved as f64 / slots_minimum as f64
        } else {
            0.0
        },
        requests_moved: t.requests_moved,
        requests_minimum: t.requests_minimum,
        over_minimum: if t.requests_minimum > 0.0 {
            t.requests_moved / t.requests_minimum
        } else {
            0.0
        },
        only_to_changed: t.moves.iter().all(|m| m.to == CHANGED_ID),
        // A fold from +0: an empty `sum` of floats is −0.
        moved_elsewhere: t
            .moves
            .iter()
            .filter(|m| m.to != CHANGED_ID)
            .fold(0.0, |sum, m| sum + m.requests),
    };
    Ok(WeightPoint {
        n,
        total_weight,
        slot_error_points: error(|r| r.slot_share),
        request_error_points: error(|r| r.request_share),
        ring_marks_match,
        replicas,
        change,
    })
}

/// Run A-6: the offline part over `counts`, then (when we own the lb.toml) the plan and the
/// ramp, live.
pub fn run(ctx: &Context, counts: &[u64]) -> Result<A6> {
    let status = ctx.client.status()?;
    let mut dirs = vec![ctx.plugin_dir.clone()];
    dirs.extend(status.config.plugin_dirs.iter().map(Into::into));
    let search = lb_balance::plugin::search_path(&dirs);
    let ids: Vec<u64> = load::request_ids(ctx.seed, "A-6 offline", RANDOM_IDS)
        .into_iter()
        .map(u64::from)
        .collect();

    let spinner = progress::spinner("A-6 offline (weights)");
    let mut curves = Vec::new();
    let mut skipped = Vec::new();
    let mut hashes: Vec<(&str, Arc<dyn RingHash>)> = Vec::new();
    for setup in SETUPS {
        let computed = lb_balance::plugin::resolve_any(setup.hash, &search)
            .map_err(Error::from)
            .and_then(|hash| {
                let points = counts
                    .iter()
                    .map(|&n| point(setup, &hash, n, &ids))
                    .collect::<Result<Vec<_>>>()?;
                Ok((hash, points))
            });
        match computed {
            Ok((hash, points)) => {
                if !hashes.iter().any(|(name, _)| *name == setup.hash) {
                    hashes.push((setup.hash, hash));
                }
                curves.push(WeightCurve { setup, points });
            }
            Err(e) => skipped.push((setup.label(), e.to_string())),
        }
    }
    spinner.finish_and_clear();
    for (name, why) in &skipped {
        progress::note(&format!("A-6: skipped {name}: {why}"));
    }
    for c in &curves {
        if let Some(p) = c.points.iter().find(|p| p.n == 3).or(c.points.first()) {
            progress::note(&format!(
                "A-6 {} N = {}: shares off w/Σw by at most {:.3} points (slots), {:.3} (requests); weight 1 → 2 moves {:.2}× the minimum{}",
                c.setup.label(),
                p.n,
                p.slot_error_points,
                p.request_error_points,
                p.change.over_minimum,
                if p.change.only_to_changed { ", all to the reweighted replica" } else { "" }
            ));
        }
    }

    let mut a6 = A6 {
        slots: SLOTS,
        virtual_nodes: VIRTUAL_NODES,
        random_ids: RANDOM_IDS,
        weight_cycle: WEIGHT_CYCLE.to_vec(),
        curves,
        skipped,
        live_setup: LIVE_SETUP,
        live_skipped: None,
        plan: None,
        ramp: None,
    };
    let hash = hashes
        .iter()
        .find(|(name, _)| *name == LIVE_SETUP.hash)
        .map(|(_, h)| Arc::clone(h));
    match (&ctx.owned_config, hash) {
        (None, _) => {
            a6.live_skipped = Some(
                "the load balancer was given with --lb, so there is no lb.toml of ours to switch the algorithm and slow start in; only the offline part ran"
                    .into(),
            );
        }
        (Some(_), None) => {
            a6.live_skipped = Some(format!(
                "the hash {} could not be loaded here, so the live part cannot predict the lb's routing",
                LIVE_SETUP.hash
            ));
        }
        (Some(path), Some(hash)) => {
            ctx.client.scale_to(LIVE_N)?;
            let original = config_file::ring_values(path, RING_KEYS)?;
            let outcome = live(ctx, path, &hash, &mut a6);
            // Remove what was added and put the file back whatever happened, then report the
            // first error.
            let restored = restore(ctx, path, &original);
            outcome?;
            restored?;
        }
    }
    if let Some(why) = &a6.live_skipped {
        progress::note(&format!("A-6 live part skipped: {why}"));
    }
    Ok(a6)
}

fn live(ctx: &Context, path: &Path, hash: &Arc<dyn RingHash>, a6: &mut A6) -> Result<()> {
    let switched = a5::apply(
        ctx,
        path,
        &[
            ("algorithm", Some(Value::from(LIVE_SETUP.algorithm))),
            ("slots", Some(Value::from(i64::from(SLOTS)))),
            ("hash", Some(Value::from(LIVE_SETUP.hash))),
            ("slow_start_ms", None),
        ],
        |s| {
            s.ring.algorithm == LIVE_SETUP.algorithm
                && s.ring.hash == LIVE_SETUP.hash
                && s.ring.slots == SLOTS
        },
    );
    if let Err(e) = switched {
        a6.live_skipped = Some(format!("cannot switch to {}: {e}", LIVE_SETUP.label()));
        return Ok(());
    }
    let plan = plan_check(ctx, hash)?;
    if let PhaseOutcome::Done(p) = &plan {
        progress::note(&format!(
            "A-6 plan: {} of {} slots as planned; {:.2} % of requests planned to move, {} of {} sampled ids moved ({} predicted), {} answered as planned",
            p.owners_equal,
            p.plan_owners,
            100.0 * p.requests_moved,
            p.moved_actual,
            p.sample,
            p.moved_predicted,
            p.as_planned
        ));
    }
    a6.plan = Some(plan);
    let ramp = ramp(ctx, path)?;
    if let PhaseOutcome::Done(r) = &ramp {
        progress::note(&format!(
            "A-6 slow start: joined after {}, whole weight after {}; first share {}, full share {} (target {:.1} %), {} failed of {}",
            opt_ms(r.joined_ms),
            opt_ms(r.ramp_done_ms),
            opt_pct(r.first_share),
            opt_pct(r.full_share),
            100.0 * r.target_share,
            r.failed,
            r.traffic.sent
        ));
    }
    a6.ramp = Some(ramp);
    Ok(())
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.0} ms"))
}

fn opt_pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{:.1} %", 100.0 * v))
}

/// Remove the replicas A-6 added, then put the `[ring]` keys back as they were.
fn restore(ctx: &Context, path: &Path, original: &[Option<Value>]) -> Result<()> {
    let ours: Vec<String> = ctx
        .client
        .rep()?
        .replicas
        .into_iter()
        .filter(|h| h == PLAN_HOST || h == RAMP_HOST)
        .collect();
    if !ours.is_empty() {
        ctx.client.rm(ours.len(), &ours)?;
        let hosts = ours.clone();
        eventually(JOIN_LIMIT, "A-6's replicas out of the ring", || {
            let s = ctx.client.status()?;
            Ok(s.replicas.iter().all(|r| !hosts.contains(&r.hostname)))
        })?;
    }
    let changes: Vec<(&str, Option<Value>)> = RING_KEYS
        .iter()
        .copied()
        .zip(original.iter().cloned())
        .collect();
    let text = |v: &Option<Value>, default: &str| {
        v.as_ref()
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_owned()
    };
    let (algorithm, hash) = (text(&original[0], "ring"), text(&original[2], "spec"));
    a5::apply(ctx, path, &changes, |s| {
        s.ring.algorithm == algorithm && s.ring.hash == hash
    })?;
    Ok(())
}

/// Wait until `/_lb/status` and then `/_lb/ring` list `hostname` in the ring; the time from
/// `since`.
fn joined(ctx: &Context, hostname: &str, since: Instant) -> Result<Duration> {
    eventually(JOIN_LIMIT, &format!("{hostname} in /_lb/status"), || {
        let s = ctx.client.status()?;
        Ok(s.replicas
            .iter()
            .any(|r| r.hostname == hostname && r.health == Health::Up))
    })?;
    let at = since.elapsed();
    eventually(JOIN_LIMIT, &format!("{hostname} in /_lb/ring"), || {
        Ok(ctx
            .client
            .ring()?
            .replicas
            .iter()
            .any(|m| m.hostname == hostname))
    })?;
    Ok(at)
}

/// Send each of `ids` once; the outcome per id.
fn sample(ctx: &Context, ids: &Arc<Vec<u32>>, label: &str) -> HashMap<u32, Outcome> {
    let bar = progress::bar(ids.len() as u64, label);
    let limits = ctx.limits(Arc::new(AtomicBool::new(false)), ctx.phase_timeout);
    let run = load::run(&ctx.client, Arc::clone(ids), limits, Instant::now(), &bar);
    bar.finish_and_clear();
    run.samples.into_iter().map(|s| (s.id, s.outcome)).collect()
}

/// The plan for an `/add` of [`PLAN_HOST`] of weight [`NEW_WEIGHT`], against the ring after
/// that `/add`; the replica is removed again afterwards.
fn plan_check(ctx: &Context, hash: &Arc<dyn RingHash>) -> Result<PhaseOutcome<PlanCheck>> {
    let before_ring = ctx.client.ring()?;
    let m = u64::from(before_ring.slots.max(1));
    let slot = |id: u32| (hash.request(u64::from(id)) % m) as usize;
    let mut ids = load::request_ids(ctx.seed, "A-6 plan", ctx.requests);
    ids.sort_unstable();
    ids.dedup();
    let ids = Arc::new(ids);
    let before = sample(ctx, &ids, "A-6 plan, before");

    let add = json!({ "n": 1, "hostnames": [PLAN_HOST], "weights": [NEW_WEIGHT] });
    let body = json!({ "add": add });
    let started = Instant::now();
    let plan = match ctx.client.plan(&body) {
        Ok(plan) => plan,
        Err(e @ Error::Unexpected { .. }) => {
            return Ok(PhaseOutcome::Skipped(format!(
                "not available in this lb ({e})"
            )))
        }
        Err(e) => return Err(e),
    };
    let plan_ms = started.elapsed().as_secs_f64() * 1000.0;
    let unchanged_by_plan = ctx.client.ring()?.owners == before_ring.owners;

    let added = Instant::now();
    ctx.client
        .add_weighted(&[PLAN_HOST.to_owned()], &[NEW_WEIGHT])?;
    let joined_ms = joined(ctx, PLAN_HOST, added)?.as_secs_f64() * 1000.0;
    let after_ring = ctx.client.ring()?;
    let after = sample(ctx, &ids, "A-6 plan, after");
    ctx.client.rm(1, &[PLAN_HOST.to_owned()])?;
    eventually(JOIN_LIMIT, &format!("{PLAN_HOST} out of the ring"), || {
        Ok(ctx.client.status()?.id_of(PLAN_HOST).is_none())
    })?;
    let restored = ctx.client.ring()?.owners == before_ring.owners;

    let owners_equal = plan
        .owners
        .iter()
        .zip(&after_ring.owners)
        .filter(|(a, b)| a == b)
        .count() as u64;
    let served = |o: Option<&Outcome>| match o {
        Some(Outcome::Served(h)) => Some(h.clone()),
        _ => None,
    };
    let (mut failed, mut routed, mut predicted, mut actual, mut as_planned) = (0, 0, 0, 0, 0);
    for &id in ids.iter() {
        let s = slot(id);
        let (ring_before, planned) = (before_ring.owners.get(s), plan.owners.get(s));
        if ring_before != planned {
            predicted += 1;
        }
        match (served(before.get(&id)), served(after.get(&id))) {
            (Some(b), Some(a)) => {
                routed += u64::from(Some(&b) == ring_before);
                as_planned += u64::from(Some(&a) == planned);
                actual += u64::from(a != b);
            }
            _ => failed += 1,
        }
    }
    let share_after = plan
        .replicas
        .iter()
        .find(|r| r.hostname == PLAN_HOST)
        .map_or(0.0, |r| r.share_after);
    let total_weight_after = plan
        .replicas
        .iter()
        .map(|r| u64::from(r.weight_after))
        .sum();
    Ok(PhaseOutcome::Done(Box::new(PlanCheck {
        slots: plan.slots,
        body: body.to_string(),
        added: PLAN_HOST.into(),
        weight: NEW_WEIGHT,
        plan_ms,
        unchanged_by_plan,
        joined_ms,
        plan_owners: plan.owners.len() as u64,
        ring_owners: after_ring.owners.len() as u64,
        owners_equal,
        slots_moved: plan.slots_moved,
        requests_moved: plan.requests_moved,
        requests_minimum: plan.requests_minimum,
        share_after,
        total_weight_after,
        sample: ids.len() as u64,
        sample_failed: failed,
        routed_as_ring: routed,
        moved_predicted: predicted,
        moved_actual: actual,
        as_planned,
        restored,
    })))
}

/// What the main thread saw of the ramp while the traffic ran.
struct Watch {
    add_at: Duration,
    points: Vec<StatusPoint>,
    joined_ms: Option<f64>,
    done_ms: Option<f64>,
}

/// Slow start on, traffic, [`RAMP_HOST`] added; what its clients saw.
fn ramp(ctx: &Context, path: &Path) -> Result<PhaseOutcome<Ramp>> {
    let status = ctx.client.status()?;
    let others_weight: u32 = status.replicas.iter().map(|r| r.weight).sum();
    let applied_before = status.config.last_applied.clone();
    let switched = a5::apply(
        ctx,
        path,
        &[("slow_start_ms", Some(Value::from(SLOW_START_MS as i64)))],
        |s| s.config.last_applied != applied_before,
    );
    let switch_ms = match switched {
        Ok(took) => took.as_secs_f64() * 1000.0,
        Err(e) => {
            return Ok(PhaseOutcome::Skipped(format!(
                "not available in this lb ({e})"
            )))
        }
    };

    let ids = Arc::new(load::request_ids(ctx.seed, "A-6 ramp", RAMP_IDS));
    let stop = Arc::new(AtomicBool::new(false));
    let slow = Duration::from_millis(SLOW_START_MS);
    // The traffic's own bound, past the watcher's (which stops it).
    let limit = BASELINE + JOIN_LIMIT * 2 + slow + TAIL;
    let limits = ctx.limits(Arc::clone(&stop), limit);
    let bar = progress::spinner("A-6 slow start");
    let origin = Instant::now();
    let client = ctx.client.clone();
    let (run, watch) = std::thread::scope(|scope| {
        let traffic = {
            let (ids, bar) = (Arc::clone(&ids), bar.clone());
            scope.spawn(move || load::run(&client, ids, limits, origin, &bar))
        };
        let watch = watch_ramp(ctx, origin, &bar);
        stop.store(true, Ordering::Relaxed);
        (traffic.join(), watch)
    });
    bar.finish_and_clear();
    let run = run.map_err(|_| Error::Unexpected {
        request: "A-6 traffic".into(),
        reason: "the load thread panicked".into(),
    })?;
    let watch = watch?;

    let add_at_ms = watch.add_at.as_secs_f64() * 1000.0;
    let buckets = buckets(
        &run.samples,
        add_at_ms,
        RAMP_HOST,
        &watch.points,
        NEW_WEIGHT,
        others_weight,
    );
    let target_share = f64::from(NEW_WEIGHT) / f64::from(NEW_WEIGHT + others_weight);
    let full_share = watch.done_ms.and_then(|done| share_from(&buckets, done));
    let first_share = watch
        .joined_ms
        .and_then(|j| buckets.iter().find(|b| b.start_ms as f64 >= j))
        .map(|b| b.share);
    let reference = full_share.unwrap_or(target_share);
    let reached_ms = watch.joined_ms.and_then(|j| {
        buckets
            .iter()
            .find(|b| b.start_ms as f64 >= j && b.share >= REACHED * reference)
            .map(|b| (b.start_ms + BUCKET.as_millis() as i64) as f64)
    });
    let mut seen: Vec<f64> = watch
        .points
        .iter()
        .filter_map(|p| p.effective_weight)
        .collect();
    seen.sort_by(f64::total_cmp);
    seen.dedup();
    let traffic = run.tally();
    Ok(PhaseOutcome::Done(Box::new(Ramp {
        slow_start_ms: SLOW_START_MS,
        switch_ms,
        added: RAMP_HOST.into(),
        weight: NEW_WEIGHT,
        others_weight,
        clients: ctx.concurrency,
        bucket_ms: BUCKET.as_millis() as u64,
        add_at_ms,
        joined_ms: watch.joined_ms,
        ramp_done_ms: watch.done_ms,
        steps: watch.points,
        steps_seen: seen.len(),
        target_share,
        full_share,
        first_share,
        reached_ms,
        failed: traffic.failures(),
        ran_out: traffic.sent >= traffic.planned,
        traffic,
        buckets,
    })))
}

/// The main thread's part of the ramp: a baseline of traffic, the `/add`, then `/_lb/status`
/// every [`RAMP_POLL`] until the ramp has been over for [`TAIL`] (or the bound passes).
fn watch_ramp(ctx: &Context, origin: Instant, bar: &indicatif::ProgressBar) -> Result<Watch> {
    eventually(JOIN_LIMIT, "answers to A-6's traffic", || {
        Ok(bar.position() > 0 && origin.elapsed() >= BASELINE)
    })?;
    let add_at = origin.elapsed();
    ctx.client
        .add_weighted(&[RAMP_HOST.to_owned()], &[NEW_WEIGHT])?;
    let bound = Instant::now() + JOIN_LIMIT + Duration::from_millis(SLOW_START_MS) + TAIL;
    let since_add = || (origin.elapsed().saturating_sub(add_at)).as_secs_f64() * 1000.0;
    let mut points: Vec<StatusPoint> = Vec::new();
    let (mut joined_ms, mut done_ms) = (None, None);
    loop {
        let s: Status = ctx.client.status()?;
        let t_ms = since_add();
        let replica = s.replicas.iter().find(|r| r.hostname == RAMP_HOST);
        let up = replica.is_some_and(|r| r.health == Health::Up);
        let effective_weight = replica.and_then(|r| r.effective_weight);
        let point = StatusPoint {
            t_ms,
            up,
            effective_weight,
        };
        if !matches!(points.last(), Some(p) if (p.up, p.effective_weight) == (up, effective_weight))
        {
            points.push(point);
        }
        if up && joined_ms.is_none() {
            joined_ms = Some(t_ms);
        }
        if up && effective_weight.is_none() && done_ms.is_none() {
            done_ms = Some(t_ms);
        }
        let tail_over = done_ms.is_some_and(|d| t_ms >= d + TAIL.as_secs_f64() * 1000.0);
        if tail_over || Instant::now() >= bound {
            break;
        }
        std::thread::sleep(RAMP_POLL);
    }
    Ok(Watch {
        add_at,
        points,
        joined_ms,
        done_ms,
    })
}

/// The requests of `samples` per [`BUCKET`] of their sending time, from the `/add` at
/// `add_at_ms` (milliseconds since the traffic started): how many `host` answered, and the
/// share the effective weights `points` give it (`weight` in whole, `others` for the rest).
pub fn buckets(
    samples: &[Sample],
    add_at_ms: f64,
    host: &str,
    points: &[StatusPoint],
    weight: u32,
    others: u32,
) -> Vec<RampBucket> {
    let width = BUCKET.as_millis() as i64;
    let mut counts: BTreeMap<i64, (u64, u64, u64)> = BTreeMap::new();
    for s in samples {
        let t = s.sent.as_secs_f64() * 1000.0 - add_at_ms;
        let index = (t / width as f64).floor() as i64;
        let c = counts.entry(index).or_default();
        match &s.outcome {
            Outcome::Served(h) => {
                c.0 += 1;
                c.2 += u64::from(h == host);
            }
            Outcome::Failed(_) => c.1 += 1,
        }
    }
    let (Some(&first), Some(&last)) = (counts.keys().next(), counts.keys().next_back()) else {
        return Vec::new();
    };
    let seconds = width as f64 / 1000.0;
    let expected = |mid: f64| -> Option<f64> {
        if mid < 0.0 {
            return Some(0.0);
        }
        let p = points.iter().rev().find(|p| p.t_ms <= mid)?;
        let e = match (p.up, p.effective_weight) {
            (false, _) => 0.0,
            (true, Some(e)) => e,
            (true, None) => f64::from(weight),
        };
        Some(e / (e + f64::from(others)))
    };
    (first..=last)
        .map(|i| {
            let (served, failed, to_new) = counts.get(&i).copied().unwrap_or_default();
            let start_ms = i * width;
            RampBucket {
                start_ms,
                served,
                failed,
                to_new,
                share: to_new as f64 / served.max(1) as f64,
                rate_new: to_new as f64 / seconds,
                rate_all: served as f64 / seconds,
                expected_share: expected(start_ms as f64 + width as f64 / 2.0),
            }
        })
        .collect()
}

/// The new replica's share of the requests answered in the buckets that start at `from_ms` or
/// later (`None`: none was answered then).
fn share_from(buckets: &[RampBucket], from_ms: f64) -> Option<f64> {
    let (served, to_new) = buckets
        .iter()
        .filter(|b| b.start_ms as f64 >= from_ms)
        .fold((0, 0), |(s, n), b| (s + b.served, n + b.to_new));
    (served > 0).then(|| to_new as f64 / served as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_cycle_one_two_three() {
        assert_eq!(weights(3), [1, 2, 3]);
        assert_eq!(weights(5), [1, 2, 3, 1, 2]);
        assert!(weights(0).is_empty());
    }

    #[test]
    fn maglev_and_rendezvous_follow_the_weights_and_the_ring_places_k_w_marks() {
        let hash = lb_balance::hash::builtin("spec").unwrap();
        let ids: Vec<u64> = load::request_ids(1, "t", 2000)
            .into_iter()
            .map(u64::from)
            .collect();
        for setup in [SETUPS[0], SETUPS[3], SETUPS[4]] {
            let p = point(setup, &hash, 3, &ids).unwrap();
            assert_eq!(p.total_weight, 6);
            let slots: f64 = p.replicas.iter().map(|r| r.slot_share).sum();
            assert!((slots - 1.0).abs() < 1e-9, "{p:?}");
            assert_eq!(p.change.from, 1);
            assert!(p.change.requests_minimum > 0.0, "{p:?}");
            assert!(p.change.over_minimum >= 1.0 - 1e-9, "{p:?}");
            assert!(p.change.slots_over_minimum >= 1.0, "{p:?}");
            assert!(p.change.moved_elsewhere.is_sign_positive(), "{p:?}");
            match setup.algorithm {
                "maglev" => assert!(p.slot_error_points < 0.1, "{p:?}"),
                "rendezvous" => {
                    assert!(p.slot_error_points < 1.0, "{p:?}");
                    assert!(p.change.only_to_changed, "{p:?}");
                    assert_eq!(p.change.moved_elsewhere, 0.0);
                }
                _ => {
                    assert_eq!(p.ring_marks_match, Some(true), "{p:?}");
                    let marks: Vec<Option<usize>> = p.replicas.iter().map(|r| r.marks).collect();
                    assert_eq!(marks, [Some(9), Some(18), Some(27)]);
                    // Adding marks moves slots only to their owner.
                    assert!(p.change.only_to_changed, "{p:?}");
                }
            }
        }
    }

    fn served(ms: u64, host: &str) -> Sample {
        Sample {
            id: 1,
            sent: Duration::from_millis(ms),
            done: Duration::from_millis(ms + 1),
            outcome: Outcome::Served(host.into()),
        }
    }

    #[test]
    fn buckets_count_the_new_replica_from_the_add() {
        let mut samples = vec![served(100, "a"), served(900, "a")];
        samples.push(Sample {
            outcome: Outcome::Failed("timeout".into()),
            ..served(1200, "a")
        });
        samples.extend([served(1300, "new"), served(1400, "a"), served(2100, "new")]);
        let points = [
            StatusPoint {
                t_ms: 100.0,
                up: true,
                effective_weight: Some(0.5),
            },
            StatusPoint {
                t_ms: 900.0,
                up: true,
                effective_weight: None,
            },
        ];
        // The /add at 1000 ms: buckets from -1000 ms (the first sample at -900 ms).
        let b = buckets(&samples, 1000.0, "new", &points, 2, 3);
        let starts: Vec<i64> = b.iter().map(|b| b.start_ms).collect();
        assert_eq!(starts, [-1000, -500, 0, 500, 1000]);
        assert_eq!((b[0].served, b[1].served), (1, 1));
        assert_eq!((b[2].served, b[2].failed, b[2].to_new), (2, 1, 1));
        assert_eq!(b[2].share, 0.5);
        assert_eq!(b[2].rate_new, 2.0);
        assert_eq!(b[3].served, 0);
        assert_eq!(b[4].to_new, 1);
        assert_eq!(b[0].expected_share, Some(0.0));
        // At 250 ms the replica has 0.5 of 2: 0.5 / 3.5; at 1250 ms all of it: 2 / 5.
        assert!((b[2].expected_share.unwrap() - 0.5 / 3.5).abs() < 1e-12);
        assert_eq!(b[4].expected_share, Some(0.4));
        assert_eq!(share_from(&b, 0.0), Some(2.0 / 3.0));
        assert_eq!(share_from(&b, 5000.0), None);
        assert!(buckets(&[], 0.0, "new", &points, 1, 1).is_empty());
    }
}
