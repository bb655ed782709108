//! How two tables differ: who owns each slot by server id ([`owner_ids`]) and how many slots
//! changed owner between two of them ([`moved_fraction`], [`moved`], [`moved_weight`]). The
//! measures docs/ALGORITHMS.md, the `algorithms` example, the tests and the analysis
//! compare algorithms by.
//!
//! Owners are compared by server id, not member index: member indices follow the order ids were
//! given in, server ids are what stays when a replica joins or leaves. Not for the request path
//! (each call allocates or walks `M` slots).

use crate::table::Placement;

/// Per slot, the server id of the member serving it (length `M`; empty when the table has no
/// members).
pub fn owner_ids(table: &Placement) -> Vec<u64> {
    let ids = table.server_ids();
    table
        .owners()
        .iter()
        .map(|&member| ids[member as usize])
        .collect()
}

/// The slots whose owner differs between `before` and `after` (owner lists as [`owner_ids`]
/// gives them, of the same length).
fn changed<'a>(before: &'a [u64], after: &'a [u64]) -> impl Iterator<Item = usize> + 'a {
    assert_eq!(
        before.len(),
        after.len(),
        "owner lists of tables of different sizes"
    );
    (0..before.len()).filter(move |&s| before[s] != after[s])
}

/// The share of slots whose owner differs between `before` and `after` (owner lists as
/// [`owner_ids`] gives them). 0 for empty lists.
///
/// # Panics
/// When the lists differ in length (tables of different sizes).
pub fn moved_fraction(before: &[u64], after: &[u64]) -> f64 {
    changed(before, after).count() as f64 / before.len().max(1) as f64
}

/// What moved when one replica left or joined, as shares of all slots ([`moved`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Moved {
    /// The share of slots whose owner differs.
    pub all: f64,
    /// The share of slots whose owner differs though neither the old nor the new owner is the
    /// replica that left or joined: moves between the others, which a minimal-disruption
    /// algorithm never makes.
    pub beyond: f64,
}

/// What moved between `before` and `after` (owner lists as [`owner_ids`] gives them) when the
/// replica with server id `except` left or joined: all the slots whose owner differs, and those
/// whose owner differs though it is `except` neither before nor after. Both 0 for empty lists.
///
/// # Panics
/// When the lists differ in length (tables of different sizes).
pub fn moved(before: &[u64], after: &[u64], except: u64) -> Moved {
    let m = before.len().max(1) as f64;
    let (mut all, mut beyond) = (0usize, 0usize);
    for s in changed(before, after) {
        all += 1;
        if before[s] != except && after[s] != except {
            beyond += 1;
        }
    }
    Moved {
        all: all as f64 / m,
        beyond: beyond as f64 / m,
    }
}

/// The sum of `weights[s]` over the slots `s` whose owner differs between `before` and `after`
/// (owner lists as [`owner_ids`] gives them): with `weights[s]` the number of keys landing on
/// slot `s`, the number of keys that moved.
///
/// # Panics
/// When the three lists differ in length.
pub fn moved_weight(before: &[u64], after: &[u64], weights: &[u64]) -> u64 {
    assert_eq!(before.len(), weights.len(), "one weight per slot");
    changed(before, after).map(|s| weights[s]).sum()
}

#[cfg(test)]
mod tests;
