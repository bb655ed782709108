use std::sync::Arc;

use super::*;
use crate::hash::SpecHash;
use crate::{maglev, ring, Balancer, RingParams};

#[test]
fn owner_ids_map_members_to_server_ids() {
    // Maglev at M = 7 over ids 1, 2, 3 (filled by hand in maglev/tests.rs and
    // docs/ALGORITHMS.md): slots 0..7 are served by ids 2, 1, 1, 3, 2, 1, 3. Given in the order
    // 3, 1, 2 the member indices are 2, 1, 1, 0, 2, 1, 0; the ids are the same.
    let table = maglev::build(7, Arc::new(SpecHash), &[3, 1, 2]).unwrap();
    assert_eq!(table.owners(), [2, 1, 1, 0, 2, 1, 0]);
    assert_eq!(owner_ids(&table), [2, 1, 1, 3, 2, 1, 3]);
    // No members: no owners.
    let empty = Balancer::Ring(RingParams::default())
        .place(Arc::new(SpecHash), &[])
        .unwrap();
    assert_eq!(owner_ids(&empty), [] as [u64; 0]);
    // The ring of the assignment's example: slot 26 is id 1's first virtual node, slot 30
    // id 2's, slot 35 id 3's (ring/tests.rs).
    let ring = ring::build(RingParams::default(), Arc::new(SpecHash), &[1, 2, 3]).unwrap();
    let ids = owner_ids(&ring);
    assert_eq!((ids[26], ids[30], ids[35]), (1, 2, 3));
}

#[test]
fn removing_id_3_from_the_hand_filled_maglev_table() {
    // Without id 3 (preference lists id 1: 2 4 6 1 3 5 0, id 2: 4 0 3 6 2 5 1):
    // turn 1: id 1 takes 2, id 2 takes 4; turn 2: id 1 wants 4 → 6, id 2 takes 0;
    // turn 3: id 1 takes 1, id 2 takes 3; turn 4: id 1 wants 3 → 5.
    // Slots 0..7: 2, 1, 1, 2, 2, 1, 1 — only id 3's slots 3 and 6 moved.
    let before = [2, 1, 1, 3, 2, 1, 3];
    let table = maglev::build(7, Arc::new(SpecHash), &[1, 2]).unwrap();
    let after = owner_ids(&table);
    assert_eq!(after, [2, 1, 1, 2, 2, 1, 1]);
    assert_eq!(moved_fraction(&before, &after), 2.0 / 7.0);
    assert_eq!(
        moved(&before, &after, 3),
        Moved {
            all: 2.0 / 7.0,
            beyond: 0.0
        }
    );
    // Counted against id 1: slot 6 moved to it (3 → 1), only slot 3 (3 → 2) is beyond it.
    assert_eq!(moved(&before, &after, 1).beyond, 1.0 / 7.0);
    assert_eq!(
        moved_weight(&before, &after, &[1, 2, 4, 8, 16, 32, 64]),
        8 + 64
    );
}

#[test]
fn moves_between_the_others_count_as_beyond() {
    // Slot 0: 1 → 2 (beyond 3); slot 1: unchanged; slot 2: unchanged; slot 3: 1 → 3 (not).
    let (before, after) = ([1, 2, 3, 1], [2, 2, 3, 3]);
    assert_eq!(moved_fraction(&before, &after), 0.5);
    assert_eq!(
        moved(&before, &after, 3),
        Moved {
            all: 0.5,
            beyond: 0.25
        }
    );
    assert_eq!(moved_weight(&before, &after, &[10, 20, 30, 40]), 50);
    // Nothing moved.
    assert_eq!(moved_fraction(&before, &before), 0.0);
    assert_eq!(moved_weight(&before, &before, &[10, 20, 30, 40]), 0);
}

#[test]
fn empty_lists_moved_nothing() {
    assert_eq!(moved_fraction(&[], &[]), 0.0);
    assert_eq!(
        moved(&[], &[], 1),
        Moved {
            all: 0.0,
            beyond: 0.0
        }
    );
    assert_eq!(moved_weight(&[], &[], &[]), 0);
}

#[test]
#[should_panic(expected = "different sizes")]
fn lists_of_different_lengths_are_a_mistake() {
    moved_fraction(&[1, 2], &[1]);
}

/// `a` and `b` within rounding.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn a_plan_names_every_move_and_each_replicas_part() {
    // Maglev at M = 7: over ids 1, 2, 3 the slots are served by 2, 1, 1, 3, 2, 1, 3; without 2,
    // by 3, 1, 1, 3, 1, 1, 3. Slot 0 moves 2 → 3 and slot 4 moves 2 → 1.
    let before = maglev::build(7, Arc::new(SpecHash), &[1, 2, 3]).unwrap();
    let after = maglev::build(7, Arc::new(SpecHash), &[1, 3]).unwrap();
    assert_eq!(owner_ids(&after), [3, 1, 1, 3, 1, 1, 3]);
    let plan = plan(&before, &after, &[]);
    let pairs: Vec<(u64, u64, u64)> = plan.moves.iter().map(|m| (m.from, m.to, m.slots)).collect();
    assert_eq!(pairs, [(2, 1, 1), (2, 3, 1)]);
    assert_eq!(plan.slots_moved, 2);
    let counts: Vec<(u64, u64, u64)> = plan
        .parts
        .iter()
        .map(|p| (p.id, p.slots_before, p.slots_after))
        .collect();
    assert_eq!(counts, [(1, 3, 4), (2, 2, 0), (3, 2, 3)]);
    // Without keys each slot is 1/7 of the requests; here the move is the least possible.
    assert!(close(plan.requests_moved, 2.0 / 7.0));
    assert!(close(plan.requests_minimum, 2.0 / 7.0));

    // A fourth replica: 2, 1, 1, 3, 2, 1, 3 → 4, 1, 1, 2, 2, 3, 3. Slot 0 goes 2 → 4, but slot 3
    // also goes 3 → 2 and slot 5 goes 1 → 3: Maglev moves 3/7 where 1/7 had to move.
    let grown = maglev::build(7, Arc::new(SpecHash), &[1, 2, 3, 4]).unwrap();
    assert_eq!(owner_ids(&grown), [4, 1, 1, 2, 2, 3, 3]);
    let plan = super::plan(&before, &grown, &[]);
    let pairs: Vec<(u64, u64, u64)> = plan.moves.iter().map(|m| (m.from, m.to, m.slots)).collect();
    assert_eq!(pairs, [(1, 3, 1), (2, 4, 1), (3, 2, 1)]);
    assert!(close(plan.requests_moved, 3.0 / 7.0));
    assert!(close(plan.requests_minimum, 1.0 / 7.0));
}

#[test]
fn requests_weigh_slots_by_how_often_h_hits_them() {
    // Keys 0..7 land on H(k) = k² + 2k + 17 mod 7 = 3, 6, 4, 4, 6, 3, 2: slot 4 (2 → 1 when 2
    // leaves) holds two of the seven keys, slot 0 (2 → 3) none.
    let before = maglev::build(7, Arc::new(SpecHash), &[1, 2, 3]).unwrap();
    let after = maglev::build(7, Arc::new(SpecHash), &[1, 3]).unwrap();
    let keys: Vec<u64> = (0..7).collect();
    let plan = plan(&before, &after, &keys);
    let moves: Vec<(u64, u64, u64, f64)> = plan
        .moves
        .iter()
        .map(|m| (m.from, m.to, m.slots, m.requests))
        .collect();
    assert_eq!(moves.len(), 2);
    assert_eq!((moves[0].0, moves[0].1, moves[0].2), (2, 1, 1));
    assert!(close(moves[0].3, 2.0 / 7.0));
    assert_eq!((moves[1].0, moves[1].1, moves[1].2), (2, 3, 1));
    assert!(close(moves[1].3, 0.0));
    let parts: Vec<(u64, f64, f64)> = plan
        .parts
        .iter()
        .map(|p| (p.id, p.requests_before, p.requests_after))
        .collect();
    for ((id, before, after), want) in parts.iter().zip([
        (1, 1.0 / 7.0, 3.0 / 7.0),
        (2, 2.0 / 7.0, 0.0),
        (3, 4.0 / 7.0, 4.0 / 7.0),
    ]) {
        assert_eq!(*id, want.0);
        assert!(close(*before, want.1) && close(*after, want.2), "{parts:?}");
    }
    assert!(close(plan.requests_moved, 2.0 / 7.0));
    assert!(close(plan.requests_minimum, 2.0 / 7.0));
}

#[test]
fn a_plan_across_table_sizes_counts_requests_only() {
    let before = Balancer::Ring(RingParams::default())
        .place(Arc::new(SpecHash), &[1, 2, 3])
        .unwrap();
    let after = Balancer::Ring(RingParams {
        slots: 1024,
        ..RingParams::default()
    })
    .place(Arc::new(SpecHash), &[1, 2, 3])
    .unwrap();
    let keys: Vec<u64> = (100_000..110_000).collect();
    let plan = plan(&before, &after, &keys);
    assert_eq!(plan.slots_moved, 0);
    let moved = keys
        .iter()
        .filter(|&&k| {
            before.server_ids()[before.lookup(k).unwrap()]
                != after.server_ids()[after.lookup(k).unwrap()]
        })
        .count();
    assert!(close(plan.requests_moved, moved as f64 / keys.len() as f64));
    let sum_before: f64 = plan.parts.iter().map(|p| p.requests_before).sum();
    assert!(close(sum_before, 1.0));
}
