//! Why a table could not be built: [`PlaceError`], the one error of placement (every algorithm,
//! the capacity rules, the checks on server ids), and the arithmetic its messages need
//! ([`is_prime`], the nearest primes, `N·K`), so that this file imports no algorithm.

use crate::balancer::Algorithm;
use crate::hash::HashError;

/// Why a table (a ring, or a Maglev or rendezvous table) could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
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
        hint = nearest_primes(*.slots)
    )]
    SlotsNotPrime {
        /// Number of slots `M`.
        slots: u32,
    },
    /// Maglev or rendezvous with more replicas than slots (some replica would get none).
    #[error("algorithm \"{algorithm}\" needs at least as many slots as replicas: {replicas} replicas > {slots} slots")]
    FewerSlotsThanReplicas {
        /// The algorithm.
        algorithm: Algorithm,
        /// Number of replicas `N`.
        replicas: usize,
        /// Number of slots `M`.
        slots: u32,
    },
    /// A replica's weight is outside `1..=MAX_WEIGHT`.
    #[error("the weight of server {server_id} must be an integer from 1 to {max}, not {weight}", max = MAX_WEIGHT)]
    InvalidWeight {
        /// The server id.
        server_id: u64,
        /// The weight given.
        weight: u32,
    },
    /// Weights were given, but not one per server id.
    #[error("{weights} weights for {replicas} replicas: give one per replica, or none")]
    WeightCount {
        /// Number of replicas.
        replicas: usize,
        /// Number of weights.
        weights: usize,
    },
    /// The ring with weights: `K·Σw > M`.
    #[error(
        "K·Σw > M: total weight {total_weight} × {virtual_nodes} virtual nodes = {total} exceeds {slots} slots",
        total = u128::from(*.total_weight) * u128::from(*.virtual_nodes)
    )]
    TooMuchWeight {
        /// `Σw` over the replicas.
        total_weight: u64,
        /// Virtual nodes per unit of weight `K`.
        virtual_nodes: u32,
        /// Number of slots `M`.
        slots: u32,
    },
    /// Φ failed (a plugin panicked).
    #[error(transparent)]
    Hash(#[from] HashError),
}

/// The largest weight a replica may have.
pub const MAX_WEIGHT: u32 = 1000;

/// [`PlaceError`] by the name it had when only the ring existed; the same type.
pub type RingError = PlaceError;

/// `N·K` without overflow, for error messages and the ring's capacity rule.
pub(crate) fn vnode_total(replicas: usize, virtual_nodes: u32) -> u128 {
    // usize is at most 64 bits on every supported target, so this widening is lossless.
    replicas as u128 * u128::from(virtual_nodes)
}

/// Whether `n` is a prime (trial division: at most ~32 768 steps for any `u32`).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n < 4 {
        return true;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let n = u64::from(n);
    let mut d = 3u64;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// The primes next to `n`, in words, for error messages: "the nearest primes are 509 and 521".
pub(crate) fn nearest_primes(n: u32) -> String {
    let below = (2..n).rev().find(|&p| is_prime(p));
    let above = (u64::from(n) + 1..)
        .find(|&p| u32::try_from(p).map_or(true, is_prime))
        .filter(|&p| p <= u64::from(u32::MAX));
    match (below, above) {
        (Some(b), Some(a)) => format!("the nearest primes are {b} and {a}"),
        (None, Some(a)) => format!("the nearest prime is {a}"),
        (Some(b), None) => format!("the nearest prime is {b}"),
        (None, None) => "no prime fits".to_owned(),
    }
}
