//! Rendezvous hashing (highest random weight, Thaler and Ravishankar 1996), realised as the same
//! slot → member table as the ring.
//!
//! Every replica with server id `i` has a weight for every slot `s`:
//!
//! ```text
//! seed(i) = splitmix64(i, 1)                 (crate::hash::splitmix64)
//! w(s, i) = splitmix64(seed(i), s + 1)       = mix64(seed(i) + (s + 1)·γ)
//! ```
//!
//! and slot `s` belongs to the replica with the highest `w(s, i)`, ties broken by the higher id
//! (the pair `(w, i)` is compared). Ties cannot actually happen: `mix64` is a bijection, so two
//! ids never get the same weight for one slot.
//!
//! Because a slot's owner is the maximum over the replicas present, removing a replica moves
//! exactly the slots it owned (each to its runner-up) and adding one moves only slots to it —
//! the least disruption possible. Balance is that of `M` independent draws: each replica owns
//! about `M/N` slots, with a standard deviation of about `√(M/N)`.
//!
//! A request still costs `H(r) mod M` and one table load ([`Placement::lookup`]). The hash
//! plugin gives `H`; `Φ` is not used: a replica's weights depend only on its id.

use std::sync::Arc;

use crate::balancer::{Algorithm, Balancer};
use crate::error::{PlaceError, MAX_WEIGHT};
use crate::hash::{splitmix64, RingHash};
use crate::table::{
    check_slot_each, check_slots, member_order, member_weights_up_to, Fallback, Marks, Placement,
};

/// The seed of replica `server_id`'s weights: `splitmix64(server_id, 1)`.
#[inline]
fn seed(server_id: u64) -> u64 {
    splitmix64(server_id, 1)
}

/// A replica's weight for `slot` from its seed: `splitmix64(seed, slot + 1)`.
#[inline]
fn seeded_weight(seed: u64, slot: u32) -> u64 {
    splitmix64(seed, u64::from(slot) + 1)
}

/// `w(s, i)`: the weight of replica `server_id` for slot `slot`.
#[inline]
pub fn weight(slot: u32, server_id: u64) -> u64 {
    seeded_weight(seed(server_id), slot)
}

/// A member's score for a slot in a weighted table, from its hash `h = w(s, i)` and its weight,
/// as a total order: `(−weight / ln u, h)` with `u = (⌊h / 2¹¹⌋ + ½) / 2⁵³` in (0, 1) — the
/// logarithmic method of weighted rendezvous hashing: a replica of weight `w` wins `w/Σw` of
/// the slots, and a weight change moves slots only to or from that replica. The score is
/// positive, so its bits order as the number does; equal scores fall back to `h`. For equal
/// weights this orders members exactly as `h` does (the score never decreases as `h` grows).
#[inline]
fn logarithmic(h: u64, weight: u32) -> (u64, u64) {
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let score = -f64::from(weight) / u.ln();
    (score.to_bits(), h)
}

/// A member's score for a slot in a table whose weights are all equal: `h` alone (the same
/// order as [`logarithmic`], without a logarithm per slot and member).
fn by_hash(seed: u64, _weight: u32, slot: u32) -> (u64, u64) {
    (0, seeded_weight(seed, slot))
}

/// A member's score for a slot in a weighted table ([`logarithmic`]).
fn by_weight(seed: u64, weight: u32, slot: u32) -> (u64, u64) {
    logarithmic(seeded_weight(seed, slot), weight)
}

/// How a table with these weights scores members: by hash when they are all equal.
fn scorer(weights: &[u32]) -> fn(u64, u32, u32) -> (u64, u64) {
    if weights.windows(2).all(|pair| pair[0] == pair[1]) {
        by_hash
    } else {
        by_weight
    }
}

/// `N ≤ M`, once `M ≥ 1`: every replica can own a slot.
pub(crate) fn check_capacity(slots: u32, replicas: usize) -> Result<(), PlaceError> {
    check_slots(slots)?;
    check_slot_each(Algorithm::Rendezvous, replicas, slots)
}

/// Rendezvous's fallback: after a slot's owner, the member with the next highest score for it.
fn fallback(server_ids: &[u64], weights: &[u32]) -> Fallback {
    Fallback::HighestWeight {
        seeds: server_ids.iter().map(|&id| seed(id)).collect(),
        weights: weights.to_vec(),
        score: scorer(weights),
    }
}

/// Build the rendezvous table of `slots` slots for `server_ids` (member `k` is
/// `server_ids[k]`; the table does not depend on their order). `hash` gives `H` for lookups. A
/// request that its slot's owner cannot serve goes to the member with the next highest weight
/// for the slot.
///
/// Checks, in this order: `slots ≥ 1`, no id is 0, no id repeats, `N ≤ M`.
///
/// Cost: O(M·N) weight computations (one multiply-xorshift mix each), O(M + N) memory.
pub fn build(
    slots: u32,
    hash: Arc<dyn RingHash>,
    server_ids: &[u64],
) -> Result<Placement, PlaceError> {
    build_weighted(slots, hash, server_ids, &[])
}

/// [`build`] with weights (none given: 1 each): slot `s` goes to the member with the highest
/// score `−w / ln u(s, i)` ([`logarithmic`]), so a member of weight `w` owns about `w/Σw` of
/// the slots and a weight change moves slots only to or from that member. With every weight
/// equal this is exactly [`build`]'s table.
///
/// Checks, in this order: `slots ≥ 1`, no id is 0, no id repeats, the weights (one per id, each
/// in `1..=MAX_WEIGHT`), `N ≤ M`.
pub fn build_weighted(
    slots: u32,
    hash: Arc<dyn RingHash>,
    server_ids: &[u64],
    weights: &[u32],
) -> Result<Placement, PlaceError> {
    build_up_to(slots, hash, server_ids, weights, MAX_WEIGHT)
}

/// [`build_weighted`] with weights up to `limit` (weights in finer units: only their
/// proportions count, so every weight `scale` times larger gives the same table).
pub(crate) fn build_up_to(
    slots: u32,
    hash: Arc<dyn RingHash>,
    server_ids: &[u64],
    weights: &[u32],
    limit: u32,
) -> Result<Placement, PlaceError> {
    let balancer = Balancer::Rendezvous { slots };
    check_slots(slots)?;
    let order = member_order(server_ids)?;
    let weights = member_weights_up_to(server_ids, weights, limit)?;
    check_capacity(slots, server_ids.len())?;
    if order.is_empty() {
        return Ok(Placement::empty(balancer, hash));
    }
    let score = scorer(&weights);
    let seeds: Vec<(u64, u32, u64)> = order
        .iter()
        .map(|&member| {
            (
                seed(server_ids[member]),
                weights[member],
                server_ids[member],
            )
        })
        .collect();
    let table = (0..slots)
        .map(|slot| {
            let mut best = ((0u64, 0u64), 0u64, 0usize);
            for (k, &(seed, weight, id)) in seeds.iter().enumerate() {
                let s = score(seed, weight, slot);
                if k == 0 || (s, id) > (best.0, best.1) {
                    best = (s, id, k);
                }
            }
            // N ≤ M ≤ u32::MAX (checked), so member indices fit.
            order[best.2] as u32
        })
        .collect();
    let fallback = fallback(server_ids, &weights);
    Ok(Placement::new(
        balancer,
        hash,
        (server_ids.to_vec(), weights),
        table,
        Marks::default(),
        fallback,
    ))
}

/// The table of `slots` slots for `server_ids` made from `previous`, a rendezvous table of the
/// same size and hash (the dispatch, [`Balancer::place_from`], checks that), by moving only
/// what must move: a slot of a removed replica goes to the best of the rest (scoring every
/// remaining replica for it), and every slot is scored once for each added replica. Equal to
/// [`build`] (a slot's owner is a maximum over the replicas present), in
/// O(M·(1 + added) + removed·M) instead of O(M·N): a replica leaving or joining a table of
/// millions of slots costs tens of milliseconds, not seconds.
///
/// For tables without weights (every weight 1); falls back to [`build`] when `previous` has
/// no members, not `slots` slots, or weights.
pub(crate) fn rebuild(
    slots: u32,
    previous: &Placement,
    server_ids: &[u64],
) -> Result<Placement, PlaceError> {
    let balancer = Balancer::Rendezvous { slots };
    let hash = Arc::clone(previous.hash());
    check_slots(slots)?;
    let order = member_order(server_ids)?;
    check_capacity(slots, server_ids.len())?;
    let before = previous.server_ids();
    let uniform = |weights: &[u32]| weights.iter().all(|&w| w == 1);
    if order.is_empty()
        || before.is_empty()
        || previous.owners().len() != slots as usize
        || !uniform(previous.weights())
    {
        return build(slots, hash, server_ids);
    }
    // Member index of each kept id in the new table; which ids were added.
    let index: std::collections::HashMap<u64, u32> = server_ids
        .iter()
        .enumerate()
        .map(|(k, &id)| (id, k as u32))
        .collect();
    let old_to_new: Vec<Option<u32>> = before.iter().map(|id| index.get(id).copied()).collect();
    let added: Vec<(u64, u64, u32)> = server_ids
        .iter()
        .enumerate()
        .filter(|(_, id)| !before.contains(id))
        .map(|(k, &id)| (seed(id), id, k as u32))
        .collect();
    let all: Vec<(u64, u64, u32)> = order
        .iter()
        .map(|&k| (seed(server_ids[k]), server_ids[k], k as u32))
        .collect();
    let best_of = |candidates: &[(u64, u64, u32)], step: u64| {
        let mut best = (0u64, 0u64, 0u32);
        for (n, &(seed, id, k)) in candidates.iter().enumerate() {
            let w = splitmix64(seed, step);
            if n == 0 || (w, id) > (best.0, best.1) {
                best = (w, id, k);
            }
        }
        best
    };
    let table = previous
        .owners()
        .iter()
        .enumerate()
        .map(|(slot, &owner)| {
            let step = slot as u64 + 1;
            let kept = old_to_new.get(owner as usize).copied().flatten();
            let Some(member) = kept else {
                // Its owner left: the best of everyone present now (added ones included).
                return best_of(&all, step).2;
            };
            if added.is_empty() {
                return member;
            }
            let id = server_ids[member as usize];
            let current = (splitmix64(seed(id), step), id, member);
            let challenger = best_of(&added, step);
            if (challenger.0, challenger.1) > (current.0, current.1) {
                challenger.2
            } else {
                current.2
            }
        })
        .collect();
    Ok(Placement::new(
        balancer,
        hash,
        (server_ids.to_vec(), vec![1; server_ids.len()]),
        table,
        Marks::default(),
        fallback(server_ids, &vec![1; server_ids.len()]),
    ))
}

#[cfg(test)]
mod tests;
