//! A-4's offline part: computed from the ring itself with the `lb` library, no traffic. For each
//! hash: each replica's share of the slots and of all 6-digit request ids for N = 2..6, and the
//! fraction of request ids that move to another replica when one is added or removed.

use std::path::PathBuf;
use std::sync::Arc;

use lb_balance::compare::{moved_weight, owner_ids};
use lb_balance::hash::RingHash;
use lb_balance::ring::{self, RingParams};
use lb_balance::Placement;
use serde::Serialize;

use crate::error::Result;
use crate::stats::Spread;

/// The request ids the shares and moves are computed over: every 6-digit number.
pub const IDS: std::ops::RangeInclusive<u64> = 100_000..=999_999;
/// The replica counts.
pub const COUNTS: std::ops::RangeInclusive<u64> = 2..=6;

/// One replica's share of a ring.
#[derive(Debug, Clone, Serialize)]
pub struct Share {
    /// Server id.
    pub id: u64,
    /// Slots it serves.
    pub slots: u32,
    /// Its fraction of the slots.
    pub slot_share: f64,
    /// Its fraction of the request ids in [`IDS`].
    pub id_share: f64,
}

/// The shares of the ring with server ids `1..=n`.
#[derive(Debug, Clone, Serialize)]
pub struct RingShares {
    /// N.
    pub n: u64,
    /// Per replica, by id.
    pub replicas: Vec<Share>,
    /// Spread of the slot shares.
    pub slot_spread: Option<Spread>,
    /// Spread of the request-id shares.
    pub id_spread: Option<Spread>,
}

/// Request ids moved by one change of the replica set.
#[derive(Debug, Clone, Serialize)]
pub struct Move {
    /// N before.
    pub from_n: u64,
    /// N after.
    pub to_n: u64,
    /// The server id added or removed.
    pub changed_id: u64,
    /// Fraction of the ids now served by another replica.
    pub moved: f64,
    /// The part that had to move: the share of the replica added (after) or removed (before).
    pub necessary: f64,
    /// A perfectly even ring: `1 / to_n` when adding, `1 / from_n` when removing.
    pub ideal: f64,
}

impl Move {
    /// Ids that moved although neither their old nor their new replica was the one changed.
    pub fn excess(&self) -> f64 {
        (self.moved - self.necessary).max(0.0)
    }
}

/// Everything computed for one hash.
#[derive(Debug, Clone, Serialize)]
pub struct HashOffline {
    /// The hash.
    pub name: String,
    /// Shares for N = 2..6.
    pub shares: Vec<RingShares>,
    /// Adding replica N+1 to 1..=N, for N = 2..5.
    pub adds: Vec<Move>,
    /// Removing each replica of 1..=N, for N = 3..6.
    pub removes: Vec<Move>,
}

impl HashOffline {
    /// The removal from `from_n` replicas that moves the most ids.
    pub fn worst_removal(&self, from_n: u64) -> Option<&Move> {
        self.removes
            .iter()
            .filter(|m| m.from_n == from_n)
            .max_by(|a, b| a.moved.total_cmp(&b.moved))
    }
}

/// A hash that could not be used, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// The hash.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// The offline part of A-4.
#[derive(Debug, Clone, Serialize)]
pub struct Offline {
    /// `M`.
    pub slots: u32,
    /// `K`.
    pub virtual_nodes: u32,
    /// Probing.
    pub probing: String,
    /// Per usable hash.
    pub hashes: Vec<HashOffline>,
    /// Hashes that could not be loaded.
    pub skipped: Vec<Skipped>,
}

/// Compute the shares and moves for every hash in `names`, loading plugins from `dirs` (and the
/// default search path).
pub fn compute(names: &[String], dirs: &[PathBuf], params: RingParams) -> Offline {
    let search = lb_balance::plugin::search_path(dirs);
    let mut hashes = Vec::new();
    let mut skipped = Vec::new();
    for name in names {
        match lb_balance::plugin::resolve_any(name, &search)
            .map_err(crate::Error::from)
            .and_then(|hash| for_hash(name, hash, params))
        {
            Ok(h) => hashes.push(h),
            Err(e) => skipped.push(Skipped {
                name: name.clone(),
                reason: e.to_string(),
            }),
        }
    }
    Offline {
        slots: params.slots,
        virtual_nodes: params.virtual_nodes,
        probing: params.probing.to_string(),
        hashes,
        skipped,
    }
}

/// Per slot, how many of the ids in [`IDS`] land on it.
fn ids_per_slot(hash: &dyn RingHash, slots: u32) -> Vec<u64> {
    let mut per_slot = vec![0u64; slots as usize];
    for id in IDS {
        per_slot[(hash.request(id) % u64::from(slots)) as usize] += 1;
    }
    per_slot
}

/// Fraction of the ids that are served by another server id in `after` than in `before`.
fn moved(before: &Placement, after: &Placement, per_slot: &[u64], total: f64) -> f64 {
    moved_weight(&owner_ids(before), &owner_ids(after), per_slot) as f64 / total
}

/// Fraction of the ids served by server id `id` in `ring`.
fn id_share(ring: &Placement, id: u64, per_slot: &[u64], total: f64) -> f64 {
    let owners = owner_ids(ring);
    let mine: u64 = (0..per_slot.len())
        .filter(|&s| owners[s] == id)
        .map(|s| per_slot[s])
        .sum();
    mine as f64 / total
}

fn for_hash(name: &str, hash: Arc<dyn RingHash>, params: RingParams) -> Result<HashOffline> {
    let per_slot = ids_per_slot(hash.as_ref(), params.slots);
    let total = per_slot.iter().sum::<u64>() as f64;
    let ring = |ids: &[u64]| ring::build(params, Arc::clone(&hash), ids);
    let ids_to = |n: u64| (1..=n).collect::<Vec<u64>>();

    let mut shares = Vec::new();
    for n in COUNTS {
        let r = ring(&ids_to(n))?;
        let counts = r.slot_counts();
        let replicas: Vec<Share> = r
            .server_ids()
            .iter()
            .zip(&counts)
            .map(|(&id, &slots)| Share {
                id,
                slots,
                slot_share: f64::from(slots) / f64::from(params.slots),
                id_share: id_share(&r, id, &per_slot, total),
            })
            .collect();
        shares.push(RingShares {
            n,
            slot_spread: Spread::of(&replicas.iter().map(|s| s.slot_share).collect::<Vec<_>>()),
            id_spread: Spread::of(&replicas.iter().map(|s| s.id_share).collect::<Vec<_>>()),
            replicas,
        });
    }

    let mut adds = Vec::new();
    for n in *COUNTS.start()..*COUNTS.end() {
        let (before, after) = (ring(&ids_to(n))?, ring(&ids_to(n + 1))?);
        adds.push(Move {
            from_n: n,
            to_n: n + 1,
            changed_id: n + 1,
            moved: moved(&before, &after, &per_slot, total),
            necessary: id_share(&after, n + 1, &per_slot, total),
            ideal: 1.0 / (n + 1) as f64,
        });
    }

    let mut removes = Vec::new();
    for n in (*COUNTS.start() + 1)..=*COUNTS.end() {
        let before = ring(&ids_to(n))?;
        for gone in 1..=n {
            let rest: Vec<u64> = (1..=n).filter(|&i| i != gone).collect();
            let after = ring(&rest)?;
            removes.push(Move {
                from_n: n,
                to_n: n - 1,
                changed_id: gone,
                moved: moved(&before, &after, &per_slot, total),
                necessary: id_share(&before, gone, &per_slot, total),
                ideal: 1.0 / n as f64,
            });
        }
    }

    Ok(HashOffline {
        name: name.to_owned(),
        shares,
        adds,
        removes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_hash_offline() {
        let off = compute(
            &["spec".into(), "no-such-hash".into()],
            &[],
            RingParams::default(),
        );
        assert_eq!(off.skipped.len(), 1);
        assert_eq!(off.skipped[0].name, "no-such-hash");
        let spec = &off.hashes[0];
        assert_eq!(spec.shares.len(), 5);
        for s in &spec.shares {
            let slots: u32 = s.replicas.iter().map(|r| r.slots).sum();
            assert_eq!(slots, 512);
            let ids: f64 = s.replicas.iter().map(|r| r.id_share).sum();
            assert!((ids - 1.0).abs() < 1e-9);
        }
        // SPEC §2: with N = 3 the spec functions give Server 1 about 84 % of random requests.
        let n3 = &spec.shares[1];
        assert!((0.80..0.88).contains(&n3.replicas[0].id_share), "{n3:?}");
        // Every id of the added replica had to move; nothing moves that was not necessary when
        // the added replica is placed last (highest id), so moved == necessary.
        for m in &spec.adds {
            assert!((m.moved - m.necessary).abs() < 1e-12, "{m:?}");
        }
        assert_eq!(spec.adds.len(), 4);
        assert_eq!(spec.removes.len(), 3 + 4 + 5 + 6);
        for m in &spec.removes {
            assert!(m.moved + 1e-12 >= m.necessary, "{m:?}");
        }
    }
}
