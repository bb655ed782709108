//! The table every algorithm fills: [`Placement`], an immutable slot → member table looked up
//! by every request (one hash, one modulo, one load), with the marks a member placed ([`Marks`],
//! the ring's virtual nodes) and the order a slot falls back through when its owner cannot
//! serve ([`Fallback`], chosen by the algorithm at build time and kept as data), plus the rules
//! on server ids and slots that every table obeys ([`member_order`], [`check_slots`],
//! [`check_slot_each`]).
//!
//! The algorithms ([`crate::algorithm`]) build it; this file imports none of them.

use std::sync::Arc;

use crate::balancer::{Algorithm, Balancer};
use crate::error::{PlaceError, MAX_WEIGHT};
use crate::hash::RingHash;

/// Marker for "no member here" while a table is being filled. Member indices are always
/// smaller: `N ≤ M ≤ u32::MAX`, so the largest index is `u32::MAX − 1`.
pub(crate) const NO_MEMBER: u32 = u32::MAX;

/// `M ≥ 1`: the rule on slots every table obeys (the modulo needs it).
pub(crate) fn check_slots(slots: u32) -> Result<(), PlaceError> {
    if slots == 0 {
        return Err(PlaceError::ZeroSlots);
    }
    Ok(())
}

/// `N ≤ M`, for the algorithms that give every replica a slot of its own (Maglev, rendezvous):
/// every replica can own a slot, and member indices fit the table.
pub(crate) fn check_slot_each(
    algorithm: Algorithm,
    replicas: usize,
    slots: u32,
) -> Result<(), PlaceError> {
    // usize is at most 64 bits on every supported target: lossless.
    if replicas as u64 > u64::from(slots) {
        return Err(PlaceError::FewerSlotsThanReplicas {
            algorithm,
            replicas,
            slots,
        });
    }
    Ok(())
}

/// The rules on server ids every table obeys, in this order: no id is 0, no id repeats. Returns
/// the member indices in ascending id order (the order algorithms place members in, so a table
/// never depends on the order ids are given).
pub(crate) fn member_order(server_ids: &[u64]) -> Result<Vec<usize>, PlaceError> {
    if server_ids.contains(&0) {
        return Err(PlaceError::InvalidServerId);
    }
    // Ids are distinct once checked, so this order is total.
    let mut order: Vec<usize> = (0..server_ids.len()).collect();
    order.sort_unstable_by_key(|&member| server_ids[member]);
    if let Some(pair) = order
        .windows(2)
        .find(|pair| server_ids[pair[0]] == server_ids[pair[1]])
    {
        return Err(PlaceError::DuplicateServerId(server_ids[pair[0]]));
    }
    Ok(order)
}

/// The rules on weights every table obeys: none given means 1 each; otherwise one per server
/// id, each in `1..=MAX_WEIGHT`. The weights, one per member.
pub(crate) fn member_weights(server_ids: &[u64], weights: &[u32]) -> Result<Vec<u32>, PlaceError> {
    member_weights_up_to(server_ids, weights, MAX_WEIGHT)
}

/// [`member_weights`] with weights up to `limit` (weights in finer units: [`Balancer::place_scaled`]).
pub(crate) fn member_weights_up_to(
    server_ids: &[u64],
    weights: &[u32],
    limit: u32,
) -> Result<Vec<u32>, PlaceError> {
    if weights.is_empty() {
        return Ok(vec![1; server_ids.len()]);
    }
    if weights.len() != server_ids.len() {
        return Err(PlaceError::WeightCount {
            replicas: server_ids.len(),
            weights: weights.len(),
        });
    }
    for (&server_id, &weight) in server_ids.iter().zip(weights) {
        if !(1..=limit).contains(&weight) {
            return Err(PlaceError::InvalidWeight { server_id, weight });
        }
    }
    Ok(weights.to_vec())
}

/// Where each member has its marks on the circle (the ring's virtual nodes), for display.
/// Maglev and rendezvous place no marks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Marks {
    /// Member `k`'s marks are `slots[starts[k]..starts[k + 1]]` (`K·w` for the ring); empty:
    /// no marks.
    pub(crate) starts: Vec<usize>,
    /// Every member's marks, member after member.
    pub(crate) slots: Vec<u32>,
}

/// Where a request goes when its slot's owner cannot serve it: the order of the members after
/// the owner, chosen by the algorithm that filled the table ([`Placement::next_member`]).
#[derive(Debug, Clone)]
pub(crate) enum Fallback {
    /// The owners of the following slots, clockwise (wrapping at `M`): for the ring, the next
    /// replica in ring order; a Maglev table's neighbouring slots belong to effectively random
    /// replicas, so a failed replica's retries spread over the others.
    Clockwise,
    /// The members by descending `score(seeds[k], weights[k], slot)` (then server id): for
    /// rendezvous, the member with the next highest score for the slot — exactly the replica
    /// the slot would move to if the ones ruled out left.
    HighestWeight {
        /// Per member (in member order), the seed of its scores.
        seeds: Vec<u64>,
        /// Per member, its weight.
        weights: Vec<u32>,
        /// A member's score for a slot, from its seed and weight (a total order).
        score: fn(u64, u32, u32) -> (u64, u64),
    },
}

/// An immutable slot → member table: built once per change of the replica set, looked up by
/// every request in one hash, one modulo and one load.
#[derive(Debug, Clone)]
pub struct Placement {
    balancer: Balancer,
    /// `H` (and, for the ring, `Φ`).
    hash: Arc<dyn RingHash>,
    /// Server ids in the order given to [`Balancer::place`]; member `k` is `ids[k]`.
    ids: Vec<u64>,
    /// Member `k`'s weight (1 unless weights were given), in units of `1/scale`.
    weights: Vec<u32>,
    /// The units of `weights` ([`Balancer::place_scaled`]; 1 otherwise).
    scale: u32,
    /// `Σ weights`, summed once here rather than per request (bounded loads' caps).
    weight_sum: u64,
    marks: Marks,
    /// Per slot, the member index serving it; empty when there are no members.
    owners: Vec<u32>,
    /// `M` as a `u64`, for the modulo.
    modulus: u64,
    /// The order after a slot's owner, as the algorithm chose it.
    fallback: Fallback,
}

impl Placement {
    /// The table an algorithm filled: `owners[s]` is the member (an index into `ids`) serving
    /// slot `s` (`M` of them, or none when there are no members), `marks` where members placed
    /// marks, `fallback` the order after a slot's owner.
    pub(crate) fn new(
        balancer: Balancer,
        hash: Arc<dyn RingHash>,
        (ids, weights): (Vec<u64>, Vec<u32>),
        owners: Vec<u32>,
        marks: Marks,
        fallback: Fallback,
    ) -> Placement {
        Placement {
            modulus: u64::from(balancer.slots()),
            balancer,
            hash,
            ids,
            weight_sum: weights.iter().map(|&w| u64::from(w)).sum(),
            weights,
            scale: 1,
            marks,
            owners,
            fallback,
        }
    }

    /// The table with its weights read in units of `1/scale`.
    pub(crate) fn with_scale(mut self, scale: u32) -> Placement {
        self.scale = scale.max(1);
        self
    }

    /// The units of [`Placement::weights`]: a member of weight `w` in the table counts as
    /// `w / scale` ([`Balancer::place_scaled`]; 1 for every other table).
    pub fn scale(&self) -> u32 {
        self.scale
    }

    /// A table with no members: every lookup returns `None`.
    pub(crate) fn empty(balancer: Balancer, hash: Arc<dyn RingHash>) -> Placement {
        Placement::new(
            balancer,
            hash,
            (Vec::new(), Vec::new()),
            Vec::new(),
            Marks::default(),
            Fallback::Clockwise,
        )
    }

    /// The algorithm and parameters the table was built with.
    pub fn balancer(&self) -> Balancer {
        self.balancer
    }

    /// Number of slots `M`.
    pub fn slots(&self) -> u32 {
        self.balancer.slots()
    }

    /// The hash functions the table was built with.
    pub fn hash(&self) -> &Arc<dyn RingHash> {
        &self.hash
    }

    /// Number of members `N`.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// `true` when there are no members (every lookup returns `None`).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Server ids in the order given to [`Balancer::place`]; member index `k` is
    /// `server_ids()[k]`.
    pub fn server_ids(&self) -> &[u64] {
        &self.ids
    }

    /// Per member, its weight (1 each unless weights were given to
    /// [`Balancer::place_weighted`]).
    pub fn weights(&self) -> &[u32] {
        &self.weights
    }

    /// The sum of [`Placement::weights`] (0 for an empty table).
    pub fn weight_sum(&self) -> u64 {
        self.weight_sum
    }

    /// The slots of `member`'s marks (the ring's virtual nodes, in `j` order: `K·w` of them);
    /// empty if `member >= len()` or the algorithm has none (Maglev and rendezvous: which
    /// slots a member serves is in [`Placement::owners`]).
    pub fn virtual_slots(&self, member: usize) -> &[u32] {
        let starts = &self.marks.starts;
        match (starts.get(member), starts.get(member.wrapping_add(1))) {
            (Some(&start), Some(&end)) => self.marks.slots.get(start..end).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// The slot request `request_id` lands on: `H(r) mod M`.
    #[inline]
    pub fn slot_of(&self, request_id: u64) -> u32 {
        // `M ≥ 1` is checked before a placement exists, and the result is `< M ≤ u32::MAX`.
        (self.hash.request(request_id) % self.modulus) as u32
    }

    /// Member serving `slot`; `None` for an empty table or `slot >= M`.
    #[inline]
    pub fn owner_of_slot(&self, slot: u32) -> Option<usize> {
        self.owners
            .get(slot as usize)
            .map(|&member| member as usize)
    }

    /// Member serving request `request_id`: `owner_of_slot(slot_of(r))`. `None` only for an
    /// empty table. No allocation; the bounds check on the owner table is the empty check.
    #[inline]
    pub fn lookup(&self, request_id: u64) -> Option<usize> {
        self.owner_of_slot(self.slot_of(request_id))
    }

    /// The first member that `skip` does not rule out, in `slot`'s order of preference: where a
    /// request goes when its owner cannot serve it. `owner_of_slot(slot)` comes first (unless
    /// ruled out); then the order the algorithm chose when it filled the table:
    ///
    /// - ring and Maglev: the owners of the following slots, clockwise (wrapping at `M`) — for
    ///   the ring, the next replica in ring order; a Maglev table's neighbouring slots belong
    ///   to effectively random replicas, so a failed replica's retries spread over the others;
    /// - rendezvous: the member with the next highest weight for `slot` — exactly the replica
    ///   the slot would move to if the ruled-out ones left.
    ///
    /// `None` when every member is ruled out (or there are none). O(M) at worst for the ring
    /// and Maglev, O(N) for rendezvous; for retries, not lookups.
    pub fn next_member(&self, slot: u32, mut skip: impl FnMut(usize) -> bool) -> Option<usize> {
        let m = self.owners.len();
        if m == 0 {
            return None;
        }
        let start = slot as usize % m;
        match &self.fallback {
            Fallback::Clockwise => (0..m)
                .map(|k| self.owners[(start + k) % m] as usize)
                .find(|&member| !skip(member)),
            Fallback::HighestWeight {
                seeds,
                weights,
                score,
            } => {
                // `start < M ≤ u32::MAX`.
                let slot = start as u32;
                seeds
                    .iter()
                    .zip(weights)
                    .zip(&self.ids)
                    .enumerate()
                    .filter(|&(member, _)| !skip(member))
                    .max_by_key(|&(_, ((&seed, &weight), &id))| (score(seed, weight, slot), id))
                    .map(|(member, _)| member)
            }
        }
    }

    /// Per slot, the index of the member serving it (length `M`; empty when there are no
    /// members).
    pub fn owners(&self) -> &[u32] {
        &self.owners
    }

    /// Per member, how many slots it serves (sums to `M` unless the table is empty).
    pub fn slot_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.len()];
        for &member in &self.owners {
            counts[member as usize] += 1;
        }
        counts
    }
}
