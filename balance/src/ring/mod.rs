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

use std::fmt;
use std::sync::Arc;

use crate::hash::{HashError, RingHash};
use crate::placement::{checked_order, Marks, NO_MEMBER};
use crate::{Balancer, Placement};

/// Default number of slots `M`.
const DEFAULT_SLOTS: u32 = 512;
/// Default number of virtual nodes per replica `K`.
const DEFAULT_VIRTUAL_NODES: u32 = 9;

/// How a virtual node looks for another slot when the one it wants is taken.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Probing {
    /// Try `s + 1, s + 2, s + 3, …` (mod `M`). Always finds a free slot when one exists.
    #[default]
    Linear,
    /// Try `s + 1, s + 4, s + 9, …` i.e. `s + k²` (mod `M`). May be unable to reach any free slot,
    /// in which case building fails with [`RingError::ProbeExhausted`].
    Quadratic,
}

impl Probing {
    /// Offset of the `k`-th probe, already reduced mod `m` (`k < m ≤ 2³²`, so `k²` fits in `u64`).
    #[inline]
    fn offset(self, k: u64, m: u64) -> u64 {
        match self {
            Probing::Linear => k,
            Probing::Quadratic => (k * k) % m,
        }
    }
}

impl fmt::Display for Probing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Probing::Linear => "linear",
            Probing::Quadratic => "quadratic",
        })
    }
}

/// Shape of a ring: `M`, `K` and the probing scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingParams {
    /// Number of slots `M` (must be at least 1).
    pub slots: u32,
    /// Virtual nodes per replica `K` (must be at least 1).
    pub virtual_nodes: u32,
    /// Collision resolution when a virtual node's slot is taken.
    pub probing: Probing,
}

impl Default for RingParams {
    /// `M = 512`, `K = 9`, linear probing.
    fn default() -> Self {
        RingParams {
            slots: DEFAULT_SLOTS,
            virtual_nodes: DEFAULT_VIRTUAL_NODES,
            probing: Probing::Linear,
        }
    }
}

/// Why a table (a ring, or a Maglev or rendezvous table) could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// `slots` (`M`) was 0.
    #[error("slots must be at least 1")]
    ZeroSlots,
    /// `virtual_nodes` (`K`) was 0.
    #[error("virtual_nodes must be at least 1")]
    ZeroVirtualNodes,
    /// A server id was 0.
    #[error("server ids start at 1")]
    InvalidServerId,
    /// The same server id was listed more than once.
    #[error("server id {0} is listed more than once")]
    DuplicateServerId(u64),
    /// `K·N > M`: the virtual nodes cannot all get a slot of their own.
    #[error(
        "K·N > M: {replicas} replicas × {virtual_nodes} virtual nodes = {total} exceeds {slots} slots",
        total = vnode_total(*.replicas, *.virtual_nodes)
    )]
    TooManyVirtualNodes {
        /// Number of replicas `N`.
        replicas: usize,
        /// Virtual nodes per replica `K`.
        virtual_nodes: u32,
        /// Number of slots `M`.
        slots: u32,
    },
    /// Quadratic probing visited every slot it can reach from the wanted slot and all were taken.
    #[error(
        "quadratic probing found no free slot for virtual node {replica} of server {server_id} \
         (every slot reachable as s + k² mod M is taken); use linear probing or more slots"
    )]
    ProbeExhausted {
        /// Server id whose virtual node could not be placed.
        server_id: u64,
        /// Index `j` of that virtual node.
        replica: u32,
    },
    /// Maglev with a number of slots that is not a prime (its skips must be coprime with `M`
    /// for every preference list to visit every slot).
    #[error(
        "algorithm \"maglev\" needs a prime number of slots, not {slots} ({hint}; 65537 is the usual choice)",
        hint = crate::maglev::nearest_primes(*.slots)
    )]
    SlotsNotPrime {
        /// Number of slots `M`.
        slots: u32,
    },
    /// Maglev or rendezvous with more replicas than slots (some replica would get none).
    #[error("algorithm \"{algorithm}\" needs at least as many slots as replicas: {replicas} replicas > {slots} slots")]
    FewerSlotsThanReplicas {
        /// The algorithm.
        algorithm: crate::Algorithm,
        /// Number of replicas `N`.
        replicas: usize,
        /// Number of slots `M`.
        slots: u32,
    },
    /// Φ failed (a plugin panicked).
    #[error(transparent)]
    Hash(#[from] HashError),
}

/// `N·K` without overflow, for error messages.
pub(crate) fn vnode_total(replicas: usize, virtual_nodes: u32) -> u128 {
    // usize is at most 64 bits on every supported target, so this widening is lossless.
    replicas as u128 * u128::from(virtual_nodes)
}

/// Build the assignment's ring from parameters, hash functions and server ids. Member index `k`
/// in the returned [`Placement`] refers to `server_ids[k]`.
///
/// Checks, in this order: `slots ≥ 1`, `virtual_nodes ≥ 1`, no id is 0, no id repeats,
/// `N·K ≤ M`. Then places virtual nodes in ascending id order (`j = 0..K` within an id),
/// probing as configured. Each virtual node makes at most `M` probes (`k = 0..M`); for
/// quadratic probing `k² mod M` repeats with period `M`, so if none of those is free no
/// free slot is reachable at all and [`RingError::ProbeExhausted`] is returned. Linear
/// probing cannot fail once `N·K ≤ M`.
///
/// Cost: O(N log N + M + N·K·probes) time, O(M + N·K) memory (nothing of size `M` is
/// allocated for an empty ring).
pub fn build(
    params: RingParams,
    hash: Arc<dyn RingHash>,
    server_ids: &[u64],
) -> Result<Placement, RingError> {
    let balancer = Balancer::Ring(params);
    let order = checked_order(balancer, server_ids)?;
    let n = server_ids.len();
    if n == 0 {
        return Ok(Placement::empty(balancer, hash));
    }

    // From here N·K ≤ M ≤ u32::MAX, so `n * k` cannot overflow and member indices fit in u32.
    let k = params.virtual_nodes as usize;
    let m = u64::from(params.slots);
    let mut table = vec![NO_MEMBER; params.slots as usize];
    let mut vnode_slots = vec![0u32; n * k];
    for &member in &order {
        let server_id = server_ids[member];
        for j in 0..params.virtual_nodes {
            let home = hash.virtual_node(server_id, u64::from(j))? % m;
            let slot = place(&mut table, home, params.probing, member as u32).ok_or(
                RingError::ProbeExhausted {
                    server_id,
                    replica: j,
                },
            )?;
            vnode_slots[member * k + j as usize] = slot;
        }
    }
    fill_owners(&mut table);
    Ok(Placement::new(
        balancer,
        hash,
        server_ids.to_vec(),
        Marks {
            per_member: k,
            slots: vnode_slots,
        },
        table,
    ))
}

/// Place one virtual node wanting slot `home` (< M): probe `home + offset(k)` for `k = 0..M` and
/// claim the first free slot for `member`. `None` if no probe hit a free slot.
fn place(table: &mut [u32], home: u64, probing: Probing, member: u32) -> Option<u32> {
    let m = table.len() as u64;
    for k in 0..m {
        // home < m and offset < m, so the sum is < 2m ≤ 2³³.
        let slot = ((home + probing.offset(k, m)) % m) as usize;
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
