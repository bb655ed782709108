//! How two tables differ: who owns each slot by server id ([`owner_ids`]), how many slots
//! changed owner between two of them ([`moved_fraction`], [`moved`], [`moved_weight`]), and the
//! whole transfer a change makes, pair by pair ([`plan`]: what `lb plan` shows). The
//! measures docs/ALGORITHMS.md, the `algorithms` example, the tests and the analysis
//! compare algorithms by.
//!
//! Owners are compared by server id, not member index: member indices follow the order ids were
//! given in, server ids are what stays when a replica joins or leaves. Not for the request path
//! (each call allocates or walks `M` slots).

use std::collections::BTreeMap;

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

/// Slots (and requests) moving from one replica to another in a [`Transfer`].
#[derive(Clone, Debug, PartialEq)]
pub struct Move {
    /// The server id that served them (0: nobody, an empty table).
    pub from: u64,
    /// The server id that serves them after.
    pub to: u64,
    /// Slots that move (tables of the same size; 0 otherwise).
    pub slots: u64,
    /// The share of requests that move, of all requests.
    pub requests: f64,
}

/// One replica's part before and after, in a [`Transfer`].
#[derive(Clone, Debug, PartialEq)]
pub struct Part {
    /// Its server id.
    pub id: u64,
    /// Slots it served before (0: not a member).
    pub slots_before: u64,
    /// Slots it serves after.
    pub slots_after: u64,
    /// Its share of the requests before.
    pub requests_before: f64,
    /// Its share of the requests after.
    pub requests_after: f64,
}

/// What going from one table to another moves ([`plan`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Transfer {
    /// Per (from, to) pair of server ids, what moves, in ascending (from, to).
    pub moves: Vec<Move>,
    /// Per server id in either table, its part before and after, in ascending id.
    pub parts: Vec<Part>,
    /// Slots whose owner changes (tables of the same size; 0 otherwise).
    pub slots_moved: u64,
    /// The share of requests whose replica changes.
    pub requests_moved: f64,
    /// The least share of requests any change to these parts must move: what the replicas
    /// that grow gain, `Σ max(0, after − before)`.
    pub requests_minimum: f64,
}

/// What going from `before` to `after` moves, by server id: slot by slot when both tables have
/// the same number of slots, and request by request over `keys` (a sample of request ids, e.g.
/// every 6-digit id; each key's slot is its table's `H(r) mod M`, so the shares weigh slots by
/// how often `H` hits them). With no keys, requests are spread evenly over the slots (tables of
/// the same size). A pure function: nothing is built or changed.
pub fn plan(before: &Placement, after: &Placement, keys: &[u64]) -> Transfer {
    let id_of =
        |table: &Placement, member: Option<usize>| member.map_or(0, |m| table.server_ids()[m]);
    // (slots, requests) per pair; per id: slots before/after, requests before/after.
    let mut pairs: BTreeMap<(u64, u64), (u64, f64)> = BTreeMap::new();
    let mut parts: BTreeMap<u64, (u64, u64, f64, f64)> = BTreeMap::new();
    for (table, after_side) in [(before, false), (after, true)] {
        for (member, &count) in table.slot_counts().iter().enumerate() {
            let part = parts.entry(table.server_ids()[member]).or_default();
            if after_side {
                part.1 += u64::from(count);
            } else {
                part.0 += u64::from(count);
            }
        }
    }
    let same_size = before.slots() == after.slots();
    if same_size {
        let m = f64::from(before.slots());
        for slot in 0..before.slots() {
            let from = id_of(before, before.owner_of_slot(slot));
            let to = id_of(after, after.owner_of_slot(slot));
            if keys.is_empty() {
                parts.entry(from).or_default().2 += 1.0 / m;
                parts.entry(to).or_default().3 += 1.0 / m;
            }
            if from != to {
                let pair = pairs.entry((from, to)).or_default();
                pair.0 += 1;
                if keys.is_empty() {
                    pair.1 += 1.0 / m;
                }
            }
        }
    }
    let share = 1.0 / keys.len().max(1) as f64;
    for &key in keys {
        let from = id_of(before, before.lookup(key));
        let to = id_of(after, after.lookup(key));
        parts.entry(from).or_default().2 += share;
        parts.entry(to).or_default().3 += share;
        if from != to {
            pairs.entry((from, to)).or_default().1 += share;
        }
    }
    // "Nobody" (an empty table) is no replica's part.
    parts.remove(&0);
    let moves: Vec<Move> = pairs
        .into_iter()
        .map(|((from, to), (slots, requests))| Move {
            from,
            to,
            slots,
            requests,
        })
        .collect();
    let parts: Vec<Part> = parts
        .into_iter()
        .map(
            |(id, (slots_before, slots_after, requests_before, requests_after))| Part {
                id,
                slots_before,
                slots_after,
                requests_before,
                requests_after,
            },
        )
        .collect();
    Transfer {
        slots_moved: moves.iter().map(|m| m.slots).sum(),
        requests_moved: moves.iter().map(|m| m.requests).sum(),
        requests_minimum: parts
            .iter()
            .map(|p| (p.requests_after - p.requests_before).max(0.0))
            .sum(),
        moves,
        parts,
    }
}

#[cfg(test)]
mod tests;
