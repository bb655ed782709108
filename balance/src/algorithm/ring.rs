//! The consistent-hashing ring.
//!
//! A ring has `M` slots. Every member (a replica with server id `i ≥ 1`) places `K` virtual
//! nodes: virtual node `j` wants slot `Φ(i, j) mod M` and, if that slot is taken, probes
//! `s + 1, s + 2, …` ([`Probing::Linear`]) or `s + 1², s + 2², …` ([`Probing::Quadratic`]), all
//! mod `M`. Members are placed in ascending server id, and within one member in `j` order, so
//! the layout never depends on the order the ids are passed in.
//!
//! A request `r` lands on slot `H(r) mod M` and is served by the first virtual node at that slot
//! or after it, going clockwise (increasing index, wrapping at `M`). [`build`] precomputes
//! that answer for every slot, so [`Placement::lookup`] is one hash, one modulo and one table read.
//!
//! `H` and `Φ` come from a [`RingHash`] (see [`crate::hash`]).

use std::sync::Arc;

use crate::balancer::Balancer;
pub use crate::balancer::{Probing, RingParams};
pub use crate::error::RingError;
use crate::error::{vnode_total, PlaceError, MAX_WEIGHT};
use crate::hash::RingHash;
use crate::table::{
    check_slots, member_order, member_weights, member_weights_up_to, Fallback, Marks, Placement,
    NO_MEMBER,
};

/// Offset of the `k`-th probe, already reduced mod `m` (`k < m ≤ 2³²`, so `k²` fits in `u64`).
#[inline]
fn probe_offset(probing: Probing, k: u64, m: u64) -> u64 {
    match probing {
        Probing::Linear => k,
        Probing::Quadratic => (k * k) % m,
    }
}

/// The ring's parameters themselves: `M ≥ 1`, `K ≥ 1`.
fn validate(params: RingParams) -> Result<(), PlaceError> {
    check_slots(params.slots)?;
    if params.virtual_nodes == 0 {
        return Err(PlaceError::ZeroVirtualNodes);
    }
    Ok(())
}

/// `K·N ≤ M`, once the parameters are valid: every virtual node gets a slot of its own.
pub(crate) fn check_capacity(params: RingParams, replicas: usize) -> Result<(), PlaceError> {
    validate(params)?;
    if vnode_total(replicas, params.virtual_nodes) > u128::from(params.slots) {
        return Err(PlaceError::TooManyVirtualNodes {
            replicas,
            virtual_nodes: params.virtual_nodes,
            slots: params.slots,
        });
    }
    Ok(())
}

/// `K·Σw ≤ M` for members of weights `weights` (each places `K·w` virtual nodes), once the
/// parameters are valid. All weights 1: the same rule and error as [`check_capacity`].
pub(crate) fn check_weighted_capacity(
    params: RingParams,
    weights: &[u32],
) -> Result<(), PlaceError> {
    if weights.iter().all(|&w| w == 1) {
        return check_capacity(params, weights.len());
    }
    validate(params)?;
    let total_weight: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if u128::from(total_weight) * u128::from(params.virtual_nodes) > u128::from(params.slots) {
        return Err(PlaceError::TooMuchWeight {
            total_weight,
            virtual_nodes: params.virtual_nodes,
            slots: params.slots,
        });
    }
    Ok(())
}

/// Build the assignment's ring from parameters, hash functions and server ids. Member index `k`
/// in the returned [`Placement`] refers to `server_ids[k]`. A request that its slot's owner
/// cannot serve falls back clockwise: to the next replica in ring order.
///
/// Checks, in this order: `slots ≥ 1`, `virtual_nodes ≥ 1`, no id is 0, no id repeats,
/// `N·K ≤ M`. Then places virtual nodes in ascending id order (`j = 0..K` within an id),
/// probing as configured. Each virtual node makes at most `M` probes (`k = 0..M`); for
/// quadratic probing `k² mod M` repeats with period `M`, so if none of those is free no
/// free slot is reachable at all and [`PlaceError::ProbeExhausted`] is returned. Linear
/// probing cannot fail once `N·K ≤ M`.
///
/// Cost: O(N log N + M + N·K·probes) time, O(M + N·K) memory (nothing of size `M` is
/// allocated for an empty ring).
pub fn build(
    params: RingParams,
    hash: Arc<dyn RingHash>,
    server_ids: &[u64],
) -> Result<Placement, PlaceError> {
    build_weighted(params, hash, server_ids, &[])
}

/// [`build`] with weights: member `k` (weight `weights[k]`; none given: 1 each) places `K·w`
/// virtual nodes, `j = 0..K·w` at `Φ(i, j) mod M`, so it serves about `w/Σw` of the slots.
/// With every weight 1 this is exactly [`build`]'s ring.
///
/// Checks, in this order: `slots ≥ 1`, `virtual_nodes ≥ 1`, no id is 0, no id repeats, the
/// weights (one per id, each in `1..=MAX_WEIGHT`), `K·Σw ≤ M`.
pub fn build_weighted(
    params: RingParams,
    hash: Arc<dyn RingHash>,
    server_ids: &[u64],
    weights: &[u32],
) -> Result<Placement, PlaceError> {
    validate(params)?;
    let order = member_order(server_ids)?;
    let weights = member_weights(server_ids, weights)?;
    check_weighted_capacity(params, &weights)?;
    let counts = weights.iter().map(|&w| params.virtual_nodes * w).collect();
    build_marks(params, hash, server_ids, (order, weights, counts))
}

/// [`build_weighted`] with weights in units of `1/scale` (each in `1..=MAX_WEIGHT·scale`):
/// member `k` places `round(K·w/scale)` virtual nodes (at least one), the first of the `K·w`
/// it has at full weight, so a weight that grows only adds marks.
pub(crate) fn build_scaled(
    params: RingParams,
    hash: Arc<dyn RingHash>,
    server_ids: &[u64],
    weights: &[u32],
    scale: u32,
) -> Result<Placement, PlaceError> {
    validate(params)?;
    let order = member_order(server_ids)?;
    let weights = member_weights_up_to(server_ids, weights, MAX_WEIGHT.saturating_mul(scale))?;
    let counts: Vec<u32> = weights
        .iter()
        .map(|&w| {
            let marks = (u64::from(params.virtual_nodes) * u64::from(w) + u64::from(scale / 2))
                / u64::from(scale);
            u32::try_from(marks.max(1)).unwrap_or(u32::MAX)
        })
        .collect();
    let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    if total > u64::from(params.slots) {
        return Err(PlaceError::TooMuchWeight {
            total_weight: weights.iter().map(|&w| u64::from(w)).sum::<u64>() / u64::from(scale),
            virtual_nodes: params.virtual_nodes,
            slots: params.slots,
        });
    }
    Ok(build_marks(params, hash, server_ids, (order, weights, counts))?.with_scale(scale))
}

/// Place `counts[k]` marks for member `k` (members in `order`), checked to fit.
fn build_marks(
    params: RingParams,
    hash: Arc<dyn RingHash>,
    server_ids: &[u64],
    (order, weights, counts): (Vec<usize>, Vec<u32>, Vec<u32>),
) -> Result<Placement, PlaceError> {
    let balancer = Balancer::Ring(params);
    let n = server_ids.len();
    if n == 0 {
        return Ok(Placement::empty(balancer, hash));
    }

    // From here Σcounts ≤ M ≤ u32::MAX, so the counts below cannot overflow and member
    // indices fit in u32.
    let m = u64::from(params.slots);
    let mut table = vec![NO_MEMBER; params.slots as usize];
    // Member k's marks start at starts[k] (members in index order), counts[k] of them.
    let mut starts = Vec::with_capacity(n + 1);
    let mut total = 0usize;
    for &count in &counts {
        starts.push(total);
        total += count as usize;
    }
    starts.push(total);
    let mut vnode_slots = vec![0u32; total];
    for &member in &order {
        let server_id = server_ids[member];
        for j in 0..counts[member] {
            let home = hash.virtual_node(server_id, u64::from(j))? % m;
            let slot = place(&mut table, home, params.probing, member as u32).ok_or(
                PlaceError::ProbeExhausted {
                    server_id,
                    replica: j,
                },
            )?;
            vnode_slots[starts[member] + j as usize] = slot;
        }
    }
    fill_owners(&mut table);
    Ok(Placement::new(
        balancer,
        hash,
        (server_ids.to_vec(), weights),
        table,
        Marks {
            starts,
            slots: vnode_slots,
        },
        Fallback::Clockwise,
    ))
}

/// Place one virtual node wanting slot `home` (< M): probe `home + offset(k)` for `k = 0..M` and
/// claim the first free slot for `member`. `None` if no probe hit a free slot.
fn place(table: &mut [u32], home: u64, probing: Probing, member: u32) -> Option<u32> {
    let m = table.len() as u64;
    for k in 0..m {
        // home < m and offset < m, so the sum is < 2m ≤ 2³³.
        let slot = ((home + probe_offset(probing, k, m)) % m) as usize;
        if let Some(cell) = table.get_mut(slot) {
            if *cell == NO_MEMBER {
                *cell = member;
                return Some(slot as u32);
            }
        }
    }
    None
}

/// Turn a placement table (member at virtual-node slots, [`NO_MEMBER`] elsewhere) into the owner
/// table in O(M): walking backwards, each empty slot takes the owner of the next virtual node
/// clockwise. The walk starts with the first virtual node from slot 0, which serves the slots
/// after the last virtual node (the wrap-around). A table with no virtual node is left as is.
fn fill_owners(table: &mut [u32]) {
    let Some(mut next) = table.iter().copied().find(|&cell| cell != NO_MEMBER) else {
        return;
    };
    for cell in table.iter_mut().rev() {
        if *cell == NO_MEMBER {
            *cell = next;
        } else {
            next = *cell;
        }
    }
}

#[cfg(test)]
mod tests;
