//! The seam between balancing algorithms and the proxy: a [`Balancer`] (an algorithm and its
//! parameters) turns replica ids and a hash into one immutable [`Placement`], the slot → member
//! table every request is looked up in.
//!
//! Three algorithms build that table (docs/ALGORITHMS.md explains them): the assignment's
//! [`ring`](crate::ring), [`maglev`](crate::maglev) and [`rendezvous`](crate::rendezvous). Every
//! one is a pure function of (algorithm, slots, server ids) — plus, for the ring, `K`, probing
//! and `Φ` — so a restart, or another process, builds the same table.

use std::fmt;
use std::sync::Arc;

use crate::hash::RingHash;
use crate::ring::{RingError, RingParams};

/// Marker for "no member here" while a table is being filled. Member indices are always
/// smaller: `N ≤ M ≤ u32::MAX`, so the largest index is `u32::MAX − 1`.
pub(crate) const NO_MEMBER: u32 = u32::MAX;

/// Which algorithm fills the slot → replica table (`[ring] algorithm` in `lb.toml`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// The assignment's ring: virtual nodes at `Φ(i, j) mod M`, probing, clockwise owner.
    #[default]
    Ring,
    /// Maglev hashing (Eisenbud et al., NSDI 2016): permutation preference lists, round-robin
    /// fill; `M` must be a prime.
    Maglev,
    /// Rendezvous (highest random weight) hashing: each slot goes to the replica with the
    /// highest weight for it.
    Rendezvous,
}

impl Algorithm {
    /// Every algorithm, in the order the documentation lists them.
    pub const ALL: [Algorithm; 3] = [Algorithm::Ring, Algorithm::Maglev, Algorithm::Rendezvous];

    /// The name `lb.toml` and `/_lb/ring` use.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Ring => "ring",
            Algorithm::Maglev => "maglev",
            Algorithm::Rendezvous => "rendezvous",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A balancing algorithm with its parameters. Every algorithm is realised as the same kind of
/// [`Placement`], so the per-request cost does not depend on which one is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balancer {
    /// The assignment's ring: `K` virtual nodes per replica at `Φ(i, j) mod M`, probing on
    /// collisions; a slot is served by the first virtual node at or after it, clockwise.
    Ring(RingParams),
    /// Maglev: every replica fills the table along its own permutation of the slots, in turns
    /// ([`crate::maglev`]). Balance within one slot; near-minimal disruption.
    Maglev {
        /// Number of slots `M`: a prime, at least the number of replicas.
        slots: u32,
    },
    /// Rendezvous: slot `s` goes to the replica with the highest weight `w(s, i)`
    /// ([`crate::rendezvous`]). Minimal disruption; balance by the law of large numbers.
    Rendezvous {
        /// Number of slots `M`: at least the number of replicas.
        slots: u32,
    },
}

impl Balancer {
    /// `algorithm` with the parameters of `params` it uses: all of them for the ring, only
    /// `slots` for Maglev and rendezvous (which have no virtual nodes and never probe).
    pub fn new(algorithm: Algorithm, params: RingParams) -> Balancer {
        match algorithm {
            Algorithm::Ring => Balancer::Ring(params),
            Algorithm::Maglev => Balancer::Maglev {
                slots: params.slots,
            },
            Algorithm::Rendezvous => Balancer::Rendezvous {
                slots: params.slots,
            },
        }
    }

    /// The algorithm, without its parameters.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Balancer::Ring(_) => Algorithm::Ring,
            Balancer::Maglev { .. } => Algorithm::Maglev,
            Balancer::Rendezvous { .. } => Algorithm::Rendezvous,
        }
    }

    /// The algorithm's name, as `lb.toml` and `/_lb/ring` spell it.
    pub fn name(&self) -> &'static str {
        self.algorithm().name()
    }

    /// Number of slots `M` of the tables it builds.
    pub fn slots(&self) -> u32 {
        match *self {
            Balancer::Ring(p) => p.slots,
            Balancer::Maglev { slots } | Balancer::Rendezvous { slots } => slots,
        }
    }

    /// A rough count of the steps [`Balancer::place`] takes for `replicas` members (one step is
    /// a hash evaluation or a table write), to decide whether a table is cheap enough to build
    /// where it is needed or must be built in the background. The ring and Maglev fill the
    /// table about once (Maglev: a few passes); rendezvous scores every member for every slot.
    pub fn build_cost(&self, replicas: usize) -> u64 {
        let slots = u64::from(self.slots());
        let replicas = replicas as u64;
        match *self {
            Balancer::Ring(p) => slots + u64::from(p.virtual_nodes).saturating_mul(replicas) * 4,
            Balancer::Maglev { .. } => slots.saturating_mul(4),
            Balancer::Rendezvous { .. } => slots.saturating_mul(replicas),
        }
    }

    /// The steps [`Balancer::place_from`] takes to go from `previous` to `server_ids`: for
    /// rendezvous with a table of the same size, `M` per replica added or removed plus one pass;
    /// otherwise a full build ([`Balancer::build_cost`]).
    pub fn rebuild_cost(
        &self,
        previous: &Placement,
        hash: &Arc<dyn RingHash>,
        server_ids: &[u64],
    ) -> u64 {
        if !self.can_rebuild(previous, hash) {
            return self.build_cost(server_ids.len());
        }
        let before = previous.server_ids();
        let changed = server_ids.iter().filter(|id| !before.contains(id)).count()
            + before.iter().filter(|id| !server_ids.contains(id)).count();
        u64::from(self.slots()).saturating_mul(1 + changed as u64)
    }

    /// Whether [`Balancer::place_from`] can update `previous` instead of building anew.
    fn can_rebuild(&self, previous: &Placement, hash: &Arc<dyn RingHash>) -> bool {
        matches!(self, Balancer::Rendezvous { .. })
            && previous.balancer() == *self
            && Arc::ptr_eq(previous.hash(), hash)
            && !previous.server_ids().is_empty()
    }

    /// [`Balancer::place`], reusing `previous` where the algorithm allows (rendezvous with the
    /// same size and hash: only the slots that must move are computed). The result is the same
    /// table as a full build.
    pub fn place_from(
        &self,
        previous: &Placement,
        hash: Arc<dyn RingHash>,
        server_ids: &[u64],
    ) -> Result<Placement, RingError> {
        if self.can_rebuild(previous, &hash) {
            crate::rendezvous::rebuild(previous, server_ids)
        } else {
            self.place(hash, server_ids)
        }
    }

    /// The ring's parameters, if this is the ring.
    pub fn ring_params(&self) -> Option<RingParams> {
        match self {
            Balancer::Ring(p) => Some(*p),
            Balancer::Maglev { .. } | Balancer::Rendezvous { .. } => None,
        }
    }

    /// Whether the parameters themselves are usable: `M ≥ 1` always, `K ≥ 1` for the ring,
    /// `M` prime for Maglev.
    fn validate(&self) -> Result<(), RingError> {
        if self.slots() == 0 {
            return Err(RingError::ZeroSlots);
        }
        match *self {
            Balancer::Ring(p) => {
                if p.virtual_nodes == 0 {
                    return Err(RingError::ZeroVirtualNodes);
                }
            }
            Balancer::Maglev { slots } => {
                if !crate::maglev::is_prime(slots) {
                    return Err(RingError::SlotsNotPrime { slots });
                }
            }
            Balancer::Rendezvous { .. } => {}
        }
        Ok(())
    }

    /// Whether `replicas` members fit: for the ring `K·N ≤ M`, for Maglev and rendezvous
    /// `N ≤ M` (every replica can own a slot; member indices fit the table). The one place
    /// capacity rules live: [`Balancer::place`] checks them too, so a table that breaks them is
    /// never built.
    pub fn check_capacity(&self, replicas: usize) -> Result<(), RingError> {
        self.validate()?;
        match *self {
            Balancer::Ring(p) => {
                if crate::ring::vnode_total(replicas, p.virtual_nodes) > u128::from(p.slots) {
                    return Err(RingError::TooManyVirtualNodes {
                        replicas,
                        virtual_nodes: p.virtual_nodes,
                        slots: p.slots,
                    });
                }
                Ok(())
            }
            Balancer::Maglev { slots } | Balancer::Rendezvous { slots } => {
                // usize is at most 64 bits on every supported target: lossless.
                if replicas as u64 > u64::from(slots) {
                    return Err(RingError::FewerSlotsThanReplicas {
                        algorithm: self.algorithm(),
                        replicas,
                        slots,
                    });
                }
                Ok(())
            }
        }
    }

    /// Build the table for `server_ids` (member `k` is `server_ids[k]`; the layout does not
    /// depend on their order) with `hash`. Pure: the same inputs give the same table.
    pub fn place(
        &self,
        hash: Arc<dyn RingHash>,
        server_ids: &[u64],
    ) -> Result<Placement, RingError> {
        match *self {
            Balancer::Ring(params) => crate::ring::build(params, hash, server_ids),
            Balancer::Maglev { slots } => crate::maglev::build(slots, hash, server_ids),
            Balancer::Rendezvous { slots } => crate::rendezvous::build(slots, hash, server_ids),
        }
    }
}

impl fmt::Display for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Checks shared by every algorithm, in this order: valid parameters, no id is 0, no id
/// repeats, capacity. Returns the member indices in ascending id order (the placement order).
pub(crate) fn checked_order(
    balancer: Balancer,
    server_ids: &[u64],
) -> Result<Vec<usize>, RingError> {
    balancer.validate()?;
    if server_ids.contains(&0) {
        return Err(RingError::InvalidServerId);
    }
    // Ids are distinct once checked, so this order is total.
    let mut order: Vec<usize> = (0..server_ids.len()).collect();
    order.sort_unstable_by_key(|&member| server_ids[member]);
    if let Some(pair) = order
        .windows(2)
        .find(|pair| server_ids[pair[0]] == server_ids[pair[1]])
    {
        return Err(RingError::DuplicateServerId(server_ids[pair[0]]));
    }
    balancer.check_capacity(server_ids.len())?;
    Ok(order)
}

/// Where each member has its marks on the circle (the ring's virtual nodes), for display.
/// Maglev and rendezvous place no marks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Marks {
    /// Marks per member (`K` for the ring).
    pub(crate) per_member: usize,
    /// Member `k`'s marks at `[k·per_member, (k+1)·per_member)`.
    pub(crate) slots: Vec<u32>,
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
    marks: Marks,
    /// Per slot, the member index serving it; empty when there are no members.
    owners: Vec<u32>,
    /// `M` as a `u64`, for the modulo.
    modulus: u64,
}

impl Placement {
    pub(crate) fn new(
        balancer: Balancer,
        hash: Arc<dyn RingHash>,
        ids: Vec<u64>,
        marks: Marks,
        owners: Vec<u32>,
    ) -> Placement {
        Placement {
            modulus: u64::from(balancer.slots()),
            balancer,
            hash,
            ids,
            marks,
            owners,
        }
    }

    /// A table with no members: every lookup returns `None`.
    pub(crate) fn empty(balancer: Balancer, hash: Arc<dyn RingHash>) -> Placement {
        Placement::new(balancer, hash, Vec::new(), Marks::default(), Vec::new())
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

    /// The slots of `member`'s marks (the ring's virtual nodes, in `j` order); empty if
    /// `member >= len()` or the algorithm has none (Maglev and rendezvous: which slots a member
    /// serves is in [`Placement::owners`]).
    pub fn virtual_slots(&self, member: usize) -> &[u32] {
        let k = self.marks.per_member;
        member
            .checked_mul(k)
            .and_then(|start| self.marks.slots.get(start..start.checked_add(k)?))
            .unwrap_or(&[])
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
    /// ruled out); then
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
        if let Balancer::Rendezvous { .. } = self.balancer {
            return crate::rendezvous::preferred((slot as usize % m) as u32, &self.ids, skip);
        }
        let start = slot as usize % m;
        (0..m)
            .map(|k| self.owners[(start + k) % m] as usize)
            .find(|&member| !skip(member))
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
