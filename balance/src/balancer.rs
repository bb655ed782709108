//! The choice of algorithm, as plain data: [`Algorithm`] (what `[ring] algorithm` names),
//! [`Balancer`] (an algorithm with its parameters) and the ring's parameters ([`RingParams`],
//! [`Probing`]).
//!
//! No algorithm's code lives here, only what a table records about how it was built: the table
//! ([`crate::table`]) and the errors ([`crate::error`]) name these types, and the algorithms
//! ([`crate::algorithm`]) import all three, so this file imports nothing of the crate. Building a
//! table from a [`Balancer`] (`place`, `place_from`, the capacity rules, the build costs) is the
//! dispatch in [`crate::algorithm`].

use std::fmt;

/// Default number of slots `M`.
const DEFAULT_SLOTS: u32 = 512;
/// Default number of virtual nodes per replica `K`.
const DEFAULT_VIRTUAL_NODES: u32 = 9;

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
    /// in which case building fails with [`crate::PlaceError::ProbeExhausted`].
    Quadratic,
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

/// A balancing algorithm with its parameters. Every algorithm is realised as the same kind of
/// [`crate::Placement`], so the per-request cost does not depend on which one is chosen.
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

    /// The ring's parameters, if this is the ring.
    pub fn ring_params(&self) -> Option<RingParams> {
        match self {
            Balancer::Ring(p) => Some(*p),
            Balancer::Maglev { .. } | Balancer::Rendezvous { .. } => None,
        }
    }
}

impl fmt::Display for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
