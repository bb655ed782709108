//! Maglev hashing (Eisenbud et al., *Maglev: A Fast and Reliable Software Network Load
//! Balancer*, NSDI 2016, §3.4), realised as the same slot → member table as the ring.
//!
//! The table has `M` slots, `M` a prime. Every replica with server id `i` has a preference list,
//! a permutation of the slots:
//!
//! ```text
//! h1(i) = splitmix64(i, 1)          h2(i) = splitmix64(i, 2)        (crate::hash::splitmix64)
//! offset(i) = h1(i) mod M           skip(i) = h2(i) mod (M − 1) + 1
//! permutation(i)[j] = (offset(i) + j · skip(i)) mod M                for j = 0, 1, …, M − 1
//! ```
//!
//! Since `1 ≤ skip < M` and `M` is prime, every list visits every slot exactly once. The table is
//! filled in turns: replicas in ascending server id each take the next slot of their list that
//! is still free, one slot per turn, until all `M` are taken (the paper's Pseudocode 1). So every
//! replica owns `⌊M/N⌋` or `⌈M/N⌉` slots, and when a replica leaves, most slots keep their
//! owner: the others' lists are unchanged, only the turns shift.
//!
//! A request still costs `H(r) mod M` and one table load ([`Placement::lookup`]). The hash
//! plugin gives `H`; `Φ` is not used: a replica's list depends only on its id.

use std::sync::Arc;

use crate::balancer::{Algorithm, Balancer};
pub use crate::error::is_prime;
use crate::error::{PlaceError, MAX_WEIGHT};
use crate::hash::{splitmix64, RingHash};
use crate::table::{
    check_slot_each, check_slots, member_order, member_weights_up_to, Fallback, Marks, Placement,
    NO_MEMBER,
};

/// Maglev's parameters themselves: `M ≥ 1`, `M` prime.
fn validate(slots: u32) -> Result<(), PlaceError> {
    check_slots(slots)?;
    if !is_prime(slots) {
        return Err(PlaceError::SlotsNotPrime { slots });
    }
    Ok(())
}

/// `N ≤ M`, once the parameters are valid: every replica can own a slot.
pub(crate) fn check_capacity(slots: u32, replicas: usize) -> Result<(), PlaceError> {
    validate(slots)?;
    check_slot_each(Algorithm::Maglev, replicas, slots)
}

/// Replica `server_id`'s preference list in a table of `slots` slots (a prime ≥ 2), as
/// `(offset, skip)`: its `j`-th preferred slot is `(offset + j·skip) mod slots`.
pub fn preferences(server_id: u64, slots: u32) -> (u32, u32) {
    let m = u64::from(slots);
    // Both results are < slots, so they fit in u32.
    let offset = splitmix64(server_id, 1) % m;
    let skip = splitmix64(server_id, 2) % (m - 1).max(1) + 1;
    (offset as u32, skip as u32)
}

/// Fill a table of `m` slots from preference lists `(offset, skip)`, given in turn order, each
/// taking `turns[k]` slots per round (its weight); the result holds indices into `lists`. Every
/// `skip` must be coprime with `m` (then each list visits every slot and the loop ends), and
/// there must be at least one list.
///
/// Each round gives every list, in order, its next `turns` slots on it that are still free.
/// Cost: `M` placements plus the skipped taken slots, about `M·ln(M/N)` at worst in total.
fn fill(m: u32, lists: &[(u32, u32)], turns: &[u32]) -> Vec<u32> {
    let mut table = vec![NO_MEMBER; m as usize];
    // Where each list is: its next candidate slot.
    let mut next: Vec<u64> = lists.iter().map(|&(offset, _)| u64::from(offset)).collect();
    let m64 = u64::from(m);
    let mut filled = 0usize;
    loop {
        for (list, &(_, skip)) in lists.iter().enumerate() {
            let skip = u64::from(skip);
            for _ in 0..turns[list] {
                let mut slot = next[list];
                // A free slot exists (filled < M) and the list reaches every slot.
                while table[slot as usize] != NO_MEMBER {
                    slot = (slot + skip) % m64;
                }
                // N ≤ M ≤ u32::MAX, so list indices fit.
                table[slot as usize] = list as u32;
                next[list] = (slot + skip) % m64;
                filled += 1;
                if filled == table.len() {
                    return table;
                }
            }
        }
    }
}

/// The greatest common divisor of `a` and `b` (`gcd(0, b) = b`).
fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Build the Maglev table of `slots` slots for `server_ids` (member `k` is `server_ids[k]`; the
/// table does not depend on their order: turns go by ascending id). `hash` gives `H` for
/// lookups. A request that its slot's owner cannot serve falls back clockwise, to the owners of
/// the following slots (effectively random replicas).
///
/// Checks, in this order: `slots ≥ 1`, `slots` prime, no id is 0, no id repeats, `N ≤ M`.
///
/// Cost: O(N log N + M·log(M/N)) time, O(M + N) memory (nothing of size `M` for no members).
pub fn build(
    slots: u32,
    hash: Arc<dyn RingHash>,
    server_ids: &[u64],
) -> Result<Placement, PlaceError> {
    build_weighted(slots, hash, server_ids, &[])
}

/// [`build`] with weights: in each round of the fill, member `k` takes `weights[k]` turns (none
/// given: 1 each; the weights in smallest terms, so 2:4 fills as 1:2), so it owns `w/Σw` of the
/// slots to within a round's worth. With every weight equal this is exactly [`build`]'s table.
///
/// Checks, in this order: `slots ≥ 1`, `slots` prime, no id is 0, no id repeats, the weights
/// (one per id, each in `1..=MAX_WEIGHT`), `N ≤ M`.
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
    let balancer = Balancer::Maglev { slots };
    validate(slots)?;
    let order = member_order(server_ids)?;
    let weights = member_weights_up_to(server_ids, weights, limit)?;
    check_capacity(slots, server_ids.len())?;
    if order.is_empty() {
        return Ok(Placement::empty(balancer, hash));
    }
    let lists: Vec<(u32, u32)> = order
        .iter()
        .map(|&member| preferences(server_ids[member], slots))
        .collect();
    // Turns in the weights' proportions, smallest terms: equal weights fill as weights of 1.
    let gcd = weights.iter().fold(0, |a, &w| gcd(a, w)).max(1);
    let turns: Vec<u32> = order.iter().map(|&member| weights[member] / gcd).collect();
    let mut table = fill(slots, &lists, &turns);
    // Turn positions back into member indices.
    for cell in &mut table {
        *cell = order[*cell as usize] as u32;
    }
    Ok(Placement::new(
        balancer,
        hash,
        (server_ids.to_vec(), weights),
        table,
        Marks::default(),
        Fallback::Clockwise,
    ))
}

#[cfg(test)]
mod tests;
