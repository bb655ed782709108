//! The algorithms that fill a [`Placement`], and the dispatch from a [`Balancer`] (the choice,
//! `balancer.rs`) to them: [`Balancer::place`], [`Balancer::place_from`], the capacity
//! rules ([`Balancer::check_capacity`]) and what a build costs ([`Balancer::build_cost`],
//! [`Balancer::rebuild_cost`]).
//!
//! Three algorithms build that table (docs/ALGORITHMS.md explains them): the assignment's
//! [`ring`], [`maglev`] and [`rendezvous`]. Each checks its own parameters, fills the owners
//! (and, for the ring, the marks) and chooses the table's fallback order; the table type
//! (`table.rs`) knows none of them. Every one is a pure function of (algorithm, slots,
//! server ids) — plus, for the ring, `K`, probing and `Φ` — so a restart, or another process,
//! builds the same table.
//!
//! Dependencies point one way: this module and the algorithms import the table, the errors, the
//! hash and the choice; none of those imports an algorithm, and no algorithm imports this
//! module.

pub mod maglev;
pub mod rendezvous;
pub mod ring;

use std::sync::Arc;

use crate::balancer::Balancer;
use crate::error::{PlaceError, MAX_WEIGHT};
use crate::hash::RingHash;
use crate::table::Placement;

/// The finest units [`Balancer::place_scaled`] takes weights in.
pub const MAX_SCALE: u32 = 1000;

impl Balancer {
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

    /// Whether [`Balancer::place_from`] can update `previous` instead of building anew (an
    /// unweighted rendezvous table of the same parameters and hash).
    fn can_rebuild(&self, previous: &Placement, hash: &Arc<dyn RingHash>) -> bool {
        matches!(self, Balancer::Rendezvous { .. })
            && previous.balancer() == *self
            && Arc::ptr_eq(previous.hash(), hash)
            && !previous.server_ids().is_empty()
            && previous.weights().iter().all(|&w| w == 1)
    }

    /// [`Balancer::rebuild_cost`] for members with `weights` (a table with weights is always
    /// built anew: [`Balancer::build_cost`]).
    pub fn rebuild_cost_weighted(
        &self,
        previous: &Placement,
        hash: &Arc<dyn RingHash>,
        server_ids: &[u64],
        weights: &[u32],
    ) -> u64 {
        if weights.iter().all(|&w| w == 1) {
            self.rebuild_cost(previous, hash, server_ids)
        } else {
            self.build_cost(server_ids.len())
        }
    }

    /// [`Balancer::place`], reusing `previous` where the algorithm allows (rendezvous with the
    /// same size and hash: only the slots that must move are computed). The result is the same
    /// table as a full build.
    pub fn place_from(
        &self,
        previous: &Placement,
        hash: Arc<dyn RingHash>,
        server_ids: &[u64],
    ) -> Result<Placement, PlaceError> {
        self.place_from_weighted(previous, hash, server_ids, &[])
    }

    /// [`Balancer::place_from`] with weights ([`Balancer::place_weighted`]); a table with
    /// weights is always built anew.
    pub fn place_from_weighted(
        &self,
        previous: &Placement,
        hash: Arc<dyn RingHash>,
        server_ids: &[u64],
        weights: &[u32],
    ) -> Result<Placement, PlaceError> {
        let unweighted = weights.iter().all(|&w| w == 1);
        match *self {
            Balancer::Rendezvous { slots } if unweighted && self.can_rebuild(previous, &hash) => {
                rendezvous::rebuild(slots, previous, server_ids)
            }
            _ => self.place_weighted(hash, server_ids, weights),
        }
    }

    /// Whether members of these weights fit: [`Balancer::check_capacity`], except that for the
    /// ring each member places `K·w` virtual nodes (`K·Σw ≤ M`). Weights themselves are
    /// checked by [`Balancer::place_weighted`].
    pub fn check_weighted_capacity(&self, weights: &[u32]) -> Result<(), PlaceError> {
        match *self {
            Balancer::Ring(params) => ring::check_weighted_capacity(params, weights),
            _ => self.check_capacity(weights.len()),
        }
    }

    /// Whether `replicas` members fit: for the ring `K·N ≤ M`, for Maglev and rendezvous
    /// `N ≤ M` (every replica can own a slot; member indices fit the table) — after the
    /// parameters themselves: `M ≥ 1` always, `K ≥ 1` for the ring, `M` prime for Maglev. The
    /// one place capacity rules live: [`Balancer::place`] checks them too, so a table that
    /// breaks them is never built.
    pub fn check_capacity(&self, replicas: usize) -> Result<(), PlaceError> {
        match *self {
            Balancer::Ring(params) => ring::check_capacity(params, replicas),
            Balancer::Maglev { slots } => maglev::check_capacity(slots, replicas),
            Balancer::Rendezvous { slots } => rendezvous::check_capacity(slots, replicas),
        }
    }

    /// Build the table for `server_ids` (member `k` is `server_ids[k]`; the layout does not
    /// depend on their order) with `hash`. Pure: the same inputs give the same table.
    ///
    /// Checks, in this order: valid parameters, no id is 0, no id repeats, capacity
    /// ([`Balancer::check_capacity`]).
    pub fn place(
        &self,
        hash: Arc<dyn RingHash>,
        server_ids: &[u64],
    ) -> Result<Placement, PlaceError> {
        self.place_weighted(hash, server_ids, &[])
    }

    /// [`Balancer::place_weighted`] with weights in units of `1/scale` (`scale` from 1 to
    /// [`MAX_SCALE`]; each weight from 1 to `MAX_WEIGHT·scale`): fractional weights, for a
    /// replica ramping in (slow start). The ring places `round(K·w/scale)` virtual nodes (at
    /// least one; the first of its `K·w`), Maglev and rendezvous use the weights' proportions
    /// (every weight `scale` times larger gives [`Balancer::place_weighted`]'s table).
    /// [`Placement::scale`] tells the units.
    pub fn place_scaled(
        &self,
        hash: Arc<dyn RingHash>,
        server_ids: &[u64],
        weights: &[u32],
        scale: u32,
    ) -> Result<Placement, PlaceError> {
        if scale <= 1 {
            return self.place_weighted(hash, server_ids, weights);
        }
        let scale = scale.min(MAX_SCALE);
        // Maglev and rendezvous count only the weights' proportions: their own build, with
        // weights up to MAX_WEIGHT·scale, read in units of 1/scale.
        let limit = MAX_WEIGHT.saturating_mul(scale);
        let placement = match *self {
            Balancer::Ring(params) => {
                return ring::build_scaled(params, hash, server_ids, weights, scale)
            }
            Balancer::Maglev { slots } => {
                maglev::build_up_to(slots, hash, server_ids, weights, limit)?
            }
            Balancer::Rendezvous { slots } => {
                rendezvous::build_up_to(slots, hash, server_ids, weights, limit)?
            }
        };
        Ok(placement.with_scale(scale))
    }

    /// [`Balancer::place`] with a weight per member (`weights[k]` for `server_ids[k]`, each in
    /// `1..=MAX_WEIGHT`; none: 1 each): a member of weight `w` serves about `w/Σw` of the
    /// slots — the ring places `K·w` virtual nodes for it, Maglev gives it `w` turns per round
    /// of its fill, rendezvous scores it `−w / ln u`. With every weight 1 the tables are those
    /// of [`Balancer::place`].
    pub fn place_weighted(
        &self,
        hash: Arc<dyn RingHash>,
        server_ids: &[u64],
        weights: &[u32],
    ) -> Result<Placement, PlaceError> {
        match *self {
            Balancer::Ring(params) => ring::build_weighted(params, hash, server_ids, weights),
            Balancer::Maglev { slots } => maglev::build_weighted(slots, hash, server_ids, weights),
            Balancer::Rendezvous { slots } => {
                rendezvous::build_weighted(slots, hash, server_ids, weights)
            }
        }
    }
}
