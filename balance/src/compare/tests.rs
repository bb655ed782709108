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
