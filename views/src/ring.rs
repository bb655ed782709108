//! `GET /_lb/ring`: the ring's parameters, each replica's virtual-node slots and the owner of
//! every slot (or of one page of slots, `?from=F&count=C`).
//!
//! The parameters are [`RingInfo`](crate::RingInfo)'s fields, written inline: the table can hold
//! millions of owners, and a reader parses it in one pass (a flattened struct would be buffered
//! whole first).

use serde::{Deserialize, Serialize};

/// The whole view. `L` is a replica's list of slots (`lb` lends its table's).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RingTable<S = String, L = Vec<u32>> {
    /// `ring`, `maglev` or `rendezvous`.
    #[serde(default)]
    pub algorithm: S,
    /// `M`, the number of slots.
    pub slots: u32,
    /// `K`, the ring's virtual nodes per replica; 0 for the algorithms without.
    #[serde(default)]
    pub virtual_nodes: u32,
    /// The ring's probing; `none` for the algorithms that never probe.
    #[serde(default)]
    pub probing: S,
    /// The hash functions' name.
    pub hash: S,
    /// What requests are hashed by (`[ring] key`).
    #[serde(default)]
    pub key: S,
    /// What a request without it is hashed by (`[ring] key_fallback`).
    #[serde(default)]
    pub key_fallback: S,
    /// `[ring] bounded_load`'s factor; `null` when off.
    #[serde(default)]
    pub bounded_load: Option<f64>,
    /// The replicas in member order.
    #[serde(default)]
    pub replicas: Vec<Member<S, L>>,
    /// The first slot in `owners` (pages only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u32>,
    /// How many slots `owners` holds (pages only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Per slot (from `from`), the hostname of the replica that owns it.
    pub owners: Vec<S>,
}

/// One replica of the table.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Member<S = String, L = Vec<u32>> {
    /// Its hostname.
    pub hostname: S,
    /// Its server id.
    pub id: u64,
    /// The slots its virtual nodes hash to (empty for Maglev and rendezvous, which have none;
    /// `K·w` of them on the ring).
    pub slots: L,
    /// Its weight in this table (1 in the JSON of an `lb` older than weights).
    #[serde(default = "one")]
    pub weight: u32,
}

/// The weight a replica has when none is given.
fn one() -> u32 {
    1
}
